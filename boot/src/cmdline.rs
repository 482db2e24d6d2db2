//! The kernel command line: words separated by ASCII whitespace, each a bare `flag` or a
//! `key=value`, without allocation.
//!
//! Quoting follows the Linux convention (`Documentation/admin-guide/kernel-parameters.rst`)
//! in its simple form: double quotes group whitespace into one word, either around the
//! value (`key="a b"`) or around the whole word (`"key=a b"`); the quotes are not part of
//! the key or value. There are no escapes. An unterminated quote runs to the end of the line.
//!
//! ```
//! let line = "console=ttyS0 quiet pci.skip=\"00:02.0 00:03.0\" console=vga";
//! assert_eq!(boot::cmdline::get(line, "console"), Some("vga")); // last one wins
//! assert_eq!(boot::cmdline::get(line, "quiet"), Some(""));
//! assert_eq!(boot::cmdline::get(line, "pci.skip"), Some("00:02.0 00:03.0"));
//! assert_eq!(boot::cmdline::get(line, "loud"), None);
//! ```

#![forbid(unsafe_code)]
/// One word of the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word<'a> {
    /// The part before the first `=`, or the whole word.
    pub key: &'a str,
    /// The part after the first `=`, unquoted; `None` for a bare word.
    pub value: Option<&'a str>,
}

/// Iterator over the [`Word`]s of a command line; see [`words`].
#[derive(Clone, Debug)]
pub struct Words<'a> {
    rest: &'a str,
}

/// The words of `cmdline`, in order.
pub fn words(cmdline: &str) -> Words<'_> {
    Words { rest: cmdline }
}

/// The value of the last `key=value` or bare `key` word: `Some("")` for a bare word (and for
/// `key=`), `None` when `key` does not occur.
pub fn get<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    words(cmdline)
        .filter(|w| w.key == key)
        .last()
        .map(|w| w.value.unwrap_or(""))
}

impl<'a> Iterator for Words<'a> {
    type Item = Word<'a>;

    fn next(&mut self) -> Option<Word<'a>> {
        let s = self
            .rest
            .trim_start_matches(|c: char| c.is_ascii_whitespace());
        if s.is_empty() {
            self.rest = s;
            return None;
        }
        let mut quoted = false;
        let mut end = s.len();
        for (i, c) in s.char_indices() {
            if c == '"' {
                quoted = !quoted;
            } else if !quoted && c.is_ascii_whitespace() {
                end = i;
                break;
            }
        }
        let (raw, rest) = s.split_at(end);
        self.rest = rest;
        Some(split_word(raw))
    }
}

/// Strips one leading quote and, if present, one trailing quote.
fn unquote(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('"')?;
    Some(inner.strip_suffix('"').unwrap_or(inner))
}

fn split_word(raw: &str) -> Word<'_> {
    let raw = unquote(raw).unwrap_or(raw);
    match raw.split_once('=') {
        Some((key, value)) => Word {
            key,
            value: Some(unquote(value).unwrap_or(value)),
        },
        None => Word {
            key: raw,
            value: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(line: &str) -> Vec<(&str, Option<&str>)> {
        words(line).map(|w| (w.key, w.value)).collect()
    }

    #[test]
    fn splits_words() {
        assert_eq!(
            all("  log=debug\tquiet  pci=noacpi \n"),
            [
                ("log", Some("debug")),
                ("quiet", None),
                ("pci", Some("noacpi"))
            ]
        );
        assert_eq!(all(""), []);
        assert_eq!(all("   "), []);
        assert_eq!(all("a==b ="), [("a", Some("=b")), ("", Some(""))]);
    }

    #[test]
    fn quotes() {
        assert_eq!(
            all(r#"k="a b" "x=y z" q="" u="open end"#),
            [
                ("k", Some("a b")),
                ("x", Some("y z")),
                ("q", Some("")),
                ("u", Some("open end")),
            ]
        );
        assert_eq!(all(r#"mid"dle word"=v"#), [(r#"mid"dle word""#, Some("v"))]);
        assert_eq!(all("\""), [("", None)]);
    }

    #[test]
    fn get_last_wins() {
        let line = "log=info dumpboot log=trace empty= flag";
        assert_eq!(get(line, "log"), Some("trace"));
        assert_eq!(get(line, "dumpboot"), Some(""));
        assert_eq!(get(line, "empty"), Some(""));
        assert_eq!(get(line, "flag"), Some(""));
        assert_eq!(get(line, "lo"), None);
        assert_eq!(get(line, ""), None);
        assert_eq!(get("", "log"), None);
    }

    #[test]
    fn non_ascii_is_fine() {
        assert_eq!(get("name=grüße ü=1", "name"), Some("grüße"));
        assert_eq!(get("name=grüße ü=1", "ü"), Some("1"));
    }
}
