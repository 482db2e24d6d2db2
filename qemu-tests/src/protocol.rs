//! Parser for the kernel's serial test protocol.
//!
//! The kernel writes these lines to COM1 (one per line, `\n` or `\r\n`):
//!
//! ```text
//! BOOTINFO loader=<pvh|multiboot2> usable=<bytes> regions=<n> rsdp=<hex|none> cmdline="<text>"
//! TEST START <suite>
//! TEST <name> ... ok
//! TEST <name> ... FAILED: <reason>
//! TEST DONE <suite>: <N> passed, <M> failed
//! kernel ready
//! PANIC at <file>:<line>:<col>: <message>
//! EXCEPTION <name> (vector <n>) ... CR2=0x<hex> ...
//! ```
//!
//! Everything else (firmware and GRUB output, kernel log lines) is ignored. Because firmware
//! and GRUB also write to the serial port, sometimes with ANSI escape sequences and without a
//! final newline, each line is cleaned of escape sequences and a protocol line may start in the
//! middle of a physical line: parsing starts at the first protocol keyword found in the line.

use std::fmt;
use std::iter::Peekable;
use std::str::Chars;

/// Which boot path the kernel reports in its `BOOTINFO` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loader {
    /// `loader=pvh`: QEMU's `-kernel` PVH entry.
    Pvh,
    /// `loader=multiboot2`: GRUB's `multiboot2` command.
    Multiboot2,
    /// Any other value, kept verbatim.
    Other(String),
}

impl Loader {
    fn parse(s: &str) -> Self {
        match s {
            "pvh" => Self::Pvh,
            "multiboot2" => Self::Multiboot2,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pvh => f.write_str("pvh"),
            Self::Multiboot2 => f.write_str("multiboot2"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// The `BOOTINFO` line: what the kernel learned from its loader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// `loader=`.
    pub loader: Loader,
    /// `usable=`: bytes of usable RAM in the memory map.
    pub usable: u64,
    /// `regions=`: number of memory map entries.
    pub regions: u64,
    /// `rsdp=`: physical address of the ACPI RSDP, `None` for `rsdp=none`.
    pub rsdp: Option<u64>,
    /// `cmdline="..."`: the kernel command line, verbatim (everything between `cmdline="` and
    /// the last `"` on the line; no escaping).
    pub cmdline: String,
}

/// Result of one `TEST <name> ...` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `... ok`.
    Ok,
    /// `... FAILED: <reason>`.
    Failed(String),
    /// The line was started (`TEST <name> ...`) but never finished, e.g. the test panicked or
    /// faulted. Holds whatever followed the dots, if anything.
    Unfinished(String),
}

/// One test case inside a suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCase {
    /// Test name as printed.
    pub name: String,
    /// Outcome.
    pub verdict: Verdict,
}

/// Counts from a `TEST DONE <suite>: N passed, M failed` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    /// `N passed`.
    pub passed: u64,
    /// `M failed`.
    pub failed: u64,
}

/// A `TEST START` ... `TEST DONE` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suite {
    /// Suite name from `TEST START <suite>`.
    pub name: String,
    /// Test lines in order.
    pub tests: Vec<TestCase>,
    /// The `TEST DONE` counts, `None` if the suite never finished.
    pub done: Option<Done>,
}

/// A `PANIC at <file>:<line>:<col>: <message>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panic {
    /// Source file.
    pub file: String,
    /// Line number.
    pub line: u32,
    /// Column number.
    pub column: u32,
    /// Message (the rest of the line).
    pub message: String,
}

/// An `EXCEPTION <name> (vector <n>)` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exception {
    /// Exception name as printed.
    pub name: String,
    /// Interrupt vector (14 = page fault).
    pub vector: u8,
    /// `CR2=0x...` (on the exception line or one of the next few lines), if printed.
    pub cr2: Option<u64>,
    /// The whole cleaned line.
    pub line: String,
}

impl Exception {
    /// Vector 14.
    pub fn is_page_fault(&self) -> bool {
        self.vector == 14
    }
}

/// Everything the parser found in a serial log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Test suites in order.
    pub suites: Vec<Suite>,
    /// The first `BOOTINFO` line.
    pub bootinfo: Option<BootInfo>,
    /// Whether `kernel ready` appeared.
    pub ready: bool,
    /// The first `PANIC at` line.
    pub panic: Option<Panic>,
    /// All `EXCEPTION` lines.
    pub exceptions: Vec<Exception>,
    /// Protocol violations: malformed lines, tests outside a suite, mismatched `DONE` lines.
    pub problems: Vec<String>,
}

/// Keywords that start a protocol line; used to find a protocol line that does not start at
/// the beginning of a physical line.
const KEYWORDS: [&str; 5] = [
    "TEST ",
    "BOOTINFO ",
    "PANIC at ",
    "EXCEPTION ",
    "kernel ready",
];

/// How many lines after an `EXCEPTION` line may still carry its `CR2=`.
const CR2_LOOKAHEAD: usize = 8;

/// Consumes the rest of an escape sequence after its `ESC`: a CSI sequence (`[`, parameters,
/// one final byte in `@..=~`), a charset selection (`(` or `)` plus one character) or a
/// two-character escape.
fn skip_escape(chars: &mut Peekable<Chars<'_>>) {
    match chars.next() {
        Some('[') => {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        Some('(' | ')') => {
            chars.next();
        }
        _ => {}
    }
}

/// Removes ANSI escape sequences, carriage returns and other control characters (except tab).
pub fn clean_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Makes a serial log printable: escape sequences and carriage returns removed, other control
/// characters (except newline and tab) shown as `\xNN` so that odd bytes are still noticed.
pub fn printable_log(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            '\r' => {}
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(hex, 16).ok()
}

/// Finds `CR2=<hex>` in `text`.
fn find_cr2(text: &str) -> Option<u64> {
    let start = text.find("CR2=")? + 4;
    let rest = &text[start..];
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_hexdigit() || (i == 1 && (c == 'x' || c == 'X'))))
        .map_or(rest.len(), |(i, _)| i);
    parse_hex(&rest[..end])
}

fn parse_bootinfo(rest: &str) -> Result<BootInfo, String> {
    let (fields, cmdline) = match rest.find("cmdline=\"") {
        Some(pos) => {
            let value = &rest[pos + "cmdline=\"".len()..];
            let end = value
                .rfind('"')
                .ok_or_else(|| "cmdline value has no closing quote".to_owned())?;
            (&rest[..pos], value[..end].to_owned())
        }
        None => return Err("no cmdline=\"...\" field".to_owned()),
    };
    let (mut loader, mut usable, mut regions, mut rsdp) = (None, None, None, None);
    for field in fields.split_whitespace() {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "loader" => loader = Some(Loader::parse(value)),
            "usable" => usable = Some(parse_u64(value).ok_or(format!("bad usable={value}"))?),
            "regions" => regions = Some(parse_u64(value).ok_or(format!("bad regions={value}"))?),
            "rsdp" => {
                rsdp = Some(if value == "none" {
                    None
                } else {
                    Some(parse_hex(value).ok_or(format!("bad rsdp={value}"))?)
                });
            }
            // Unknown fields are allowed so that the kernel can add more.
            _ => {}
        }
    }
    Ok(BootInfo {
        loader: loader.ok_or("no loader= field")?,
        usable: usable.ok_or("no usable= field")?,
        regions: regions.ok_or("no regions= field")?,
        rsdp: rsdp.ok_or("no rsdp= field")?,
        cmdline,
    })
}

fn parse_done(rest: &str) -> Option<(String, Done)> {
    // "<suite>: N passed, M failed"
    let (suite, counts) = rest.rsplit_once(':')?;
    let (passed, failed) = counts.split_once(',')?;
    let passed = passed.trim().strip_suffix("passed")?.trim().parse().ok()?;
    let failed = failed.trim().strip_suffix("failed")?.trim().parse().ok()?;
    Some((suite.trim().to_owned(), Done { passed, failed }))
}

fn parse_panic(rest: &str) -> Option<Panic> {
    // "<file>:<line>:<col>: <message>"
    let (location, message) = rest.split_once(": ").unwrap_or((rest, ""));
    let mut parts = location.rsplitn(3, ':');
    let column = parts.next()?.trim().parse().ok()?;
    let line = parts.next()?.trim().parse().ok()?;
    let file = parts.next()?.to_owned();
    Some(Panic {
        file,
        line,
        column,
        message: message.to_owned(),
    })
}

fn parse_exception(rest: &str) -> Option<(String, u8)> {
    // "<name> (vector <n>)..."
    let (name, after) = rest.split_once(" (vector ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    Some((name.trim().to_owned(), digits.parse().ok()?))
}

impl Report {
    /// Parses a whole serial log.
    pub fn parse(serial: &str) -> Self {
        let lines: Vec<String> = serial.lines().map(clean_line).collect();
        let mut report = Self::default();
        // Index of the suite whose START was seen and whose DONE was not.
        let mut open: Option<usize> = None;
        // A test line whose verdict is still expected on a following line.
        let mut pending: Option<(usize, usize)> = None;
        for (index, line) in lines.iter().enumerate() {
            let mut text = line.as_str();
            // A "TEST <name> ..." with nothing after the dots may be finished by a later
            // line that is only the verdict (the test logged something in between).
            if let Some((s, t)) = pending {
                let trimmed = text.trim();
                let verdict = if trimmed == "ok" {
                    Some(Verdict::Ok)
                } else {
                    trimmed
                        .strip_prefix("FAILED:")
                        .map(|reason| Verdict::Failed(reason.trim().to_owned()))
                };
                if let Some(verdict) = verdict {
                    report.suites[s].tests[t].verdict = verdict;
                    pending = None;
                    continue;
                }
            }
            // One physical line can hold several protocol lines when a test dies mid-line
            // ("TEST x ... PANIC at ..."): loop over what is left.
            while let Some(pos) = KEYWORDS.iter().filter_map(|k| text.find(k)).min() {
                text = &text[pos..];
                if any_keyword_line(text) {
                    pending = None;
                }
                text = report.parse_one(text, &lines, index, &mut open, &mut pending);
            }
        }
        if let Some(s) = open {
            let name = &report.suites[s].name;
            report
                .problems
                .push(format!("suite `{name}` has no TEST DONE line"));
        }
        report
    }

    /// Parses one protocol line starting at a keyword; returns the unparsed remainder (empty
    /// when the whole line was consumed).
    fn parse_one<'a>(
        &mut self,
        text: &'a str,
        lines: &[String],
        index: usize,
        open: &mut Option<usize>,
        pending: &mut Option<(usize, usize)>,
    ) -> &'a str {
        if let Some(rest) = text.strip_prefix("BOOTINFO ") {
            match parse_bootinfo(rest) {
                Ok(info) => {
                    if self.bootinfo.is_none() {
                        self.bootinfo = Some(info);
                    } else {
                        self.problems.push(format!("second BOOTINFO line: {text}"));
                    }
                }
                Err(e) => self
                    .problems
                    .push(format!("bad BOOTINFO line ({e}): {text}")),
            }
            return "";
        }
        if let Some(rest) = text.strip_prefix("kernel ready") {
            self.ready = true;
            return rest;
        }
        if let Some(rest) = text.strip_prefix("PANIC at ") {
            match parse_panic(rest) {
                Some(panic) => {
                    if self.panic.is_none() {
                        self.panic = Some(panic);
                    }
                }
                None => self.problems.push(format!("bad PANIC line: {text}")),
            }
            return "";
        }
        if let Some(rest) = text.strip_prefix("EXCEPTION ") {
            match parse_exception(rest) {
                Some((name, vector)) => {
                    let cr2 = find_cr2(text).or_else(|| {
                        lines
                            .iter()
                            .skip(index + 1)
                            .take(CR2_LOOKAHEAD)
                            .take_while(|l| !any_keyword_line(l))
                            .find_map(|l| find_cr2(l))
                    });
                    self.exceptions.push(Exception {
                        name,
                        vector,
                        cr2,
                        line: text.to_owned(),
                    });
                }
                None => self.problems.push(format!("bad EXCEPTION line: {text}")),
            }
            return "";
        }
        let Some(rest) = text.strip_prefix("TEST ") else {
            // Unreachable for text starting with a keyword; skip one byte to make progress.
            return text.get(1..).unwrap_or("");
        };
        if let Some(name) = rest.strip_prefix("START ") {
            if let Some(s) = *open {
                let prev = &self.suites[s].name;
                self.problems
                    .push(format!("suite `{prev}` has no TEST DONE line"));
            }
            self.suites.push(Suite {
                name: name.trim().to_owned(),
                tests: Vec::new(),
                done: None,
            });
            *open = Some(self.suites.len() - 1);
            return "";
        }
        if let Some(done) = rest.strip_prefix("DONE ") {
            match (parse_done(done), *open) {
                (Some((name, counts)), Some(s)) => {
                    if name != self.suites[s].name {
                        self.problems.push(format!(
                            "TEST DONE `{name}` closes suite `{}`",
                            self.suites[s].name
                        ));
                    }
                    self.suites[s].done = Some(counts);
                    *open = None;
                }
                (Some(_), None) => self
                    .problems
                    .push(format!("TEST DONE without TEST START: {text}")),
                (None, _) => self.problems.push(format!("bad TEST DONE line: {text}")),
            }
            return "";
        }
        // "TEST <name> ... <verdict>"
        let Some((name, after)) = rest.split_once(" ...") else {
            self.problems.push(format!("bad TEST line: {text}"));
            return "";
        };
        let after = after.trim_start();
        let (verdict, remainder) = if after == "ok" {
            (Verdict::Ok, "")
        } else if let Some(reason) = after.strip_prefix("FAILED:") {
            (Verdict::Failed(reason.trim().to_owned()), "")
        } else if after.is_empty() {
            (Verdict::Unfinished(String::new()), "")
        } else {
            // Something else followed the dots: the test died mid-line. Re-scan it.
            (Verdict::Unfinished(after.to_owned()), after)
        };
        let Some(s) = *open else {
            self.problems
                .push(format!("TEST line outside TEST START/DONE: {text}"));
            return remainder;
        };
        let unfinished_empty = verdict == Verdict::Unfinished(String::new());
        self.suites[s].tests.push(TestCase {
            name: name.trim().to_owned(),
            verdict,
        });
        if unfinished_empty {
            *pending = Some((s, self.suites[s].tests.len() - 1));
        }
        remainder
    }

    /// All test cases of all suites.
    pub fn tests(&self) -> impl Iterator<Item = &TestCase> {
        self.suites.iter().flat_map(|s| s.tests.iter())
    }

    /// The suite with the given name.
    pub fn suite(&self, name: &str) -> Option<&Suite> {
        self.suites.iter().find(|s| s.name == name)
    }

    /// The first page-fault exception, if any.
    pub fn page_fault(&self) -> Option<&Exception> {
        self.exceptions.iter().find(|e| e.is_page_fault())
    }

    /// Checks that the kernel's self tests all passed: at least one suite, every suite
    /// finished with `0 failed`, every test line `ok`, `DONE` counts agree with the test
    /// lines, at least `min_passed` tests passed in total, no panic, no exception and no
    /// protocol problems.
    pub fn check_tests_passed(&self, min_passed: u64) -> Result<(), String> {
        let mut errors = Vec::new();
        if self.suites.is_empty() {
            errors.push("no TEST START line".to_owned());
        }
        for suite in &self.suites {
            let ok = suite
                .tests
                .iter()
                .filter(|t| t.verdict == Verdict::Ok)
                .count() as u64;
            for test in &suite.tests {
                match &test.verdict {
                    Verdict::Ok => {}
                    Verdict::Failed(reason) => {
                        errors.push(format!("test `{}` FAILED: {reason}", test.name));
                    }
                    Verdict::Unfinished(rest) => {
                        errors.push(format!("test `{}` never finished {rest}", test.name));
                    }
                }
            }
            match suite.done {
                None => errors.push(format!("suite `{}` has no TEST DONE line", suite.name)),
                Some(done) => {
                    if done.failed != 0 {
                        errors.push(format!(
                            "suite `{}` reports {} failed",
                            suite.name, done.failed
                        ));
                    }
                    if done.passed != ok {
                        errors.push(format!(
                            "suite `{}` reports {} passed but {ok} test lines say ok",
                            suite.name, done.passed
                        ));
                    }
                }
            }
        }
        let passed: u64 = self
            .suites
            .iter()
            .filter_map(|s| s.done)
            .map(|d| d.passed)
            .sum();
        if passed < min_passed {
            errors.push(format!(
                "only {passed} tests passed, expected at least {min_passed}"
            ));
        }
        if let Some(p) = &self.panic {
            errors.push(format!(
                "kernel panicked at {}:{}:{}: {}",
                p.file, p.line, p.column, p.message
            ));
        }
        for e in &self.exceptions {
            errors.push(format!("CPU exception: {}", e.line));
        }
        errors.extend(self.problems.iter().map(|p| format!("protocol: {p}")));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }
}

/// Whether `text` (already cleaned) starts with a protocol keyword other than the verdict of
/// a pending test.
fn any_keyword_line(text: &str) -> bool {
    KEYWORDS.iter().any(|k| text.trim_start().starts_with(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PVH_OK: &str = "\
BOOTINFO loader=pvh usable=535691264 regions=5 rsdp=0xf52e0 cmdline=\"test=boot token=00ff\"\r
[INFO] pci: 6 functions\r
TEST START boot\r
TEST heap::alloc ... ok\r
TEST idt::breakpoint ... ok\r
TEST pci::enumerate ... ok\r
TEST acpi::mcfg ... ok\r
TEST apic::timer ... ok\r
TEST DONE boot: 5 passed, 0 failed\r
kernel ready\r
";

    #[test]
    fn clean_pvh_run() {
        let r = Report::parse(PVH_OK);
        assert_eq!(r.problems, Vec::<String>::new());
        assert_eq!(
            r.bootinfo,
            Some(BootInfo {
                loader: Loader::Pvh,
                usable: 535_691_264,
                regions: 5,
                rsdp: Some(0xf52e0),
                cmdline: "test=boot token=00ff".into(),
            })
        );
        assert!(r.ready);
        assert_eq!(r.suites.len(), 1);
        let suite = r.suite("boot").unwrap();
        assert_eq!(suite.tests.len(), 5);
        assert_eq!(suite.tests[2].name, "pci::enumerate");
        assert_eq!(
            suite.done,
            Some(Done {
                passed: 5,
                failed: 0
            })
        );
        assert_eq!(r.check_tests_passed(5), Ok(()));
        assert!(r.check_tests_passed(6).is_err());
    }

    #[test]
    fn firmware_noise_and_escape_sequences() {
        let log = "\u{1b}[2J\u{1b}[01;01H\u{1b}[=3h\u{1b}[2J\u{1b}[01;01HBdsDxe: loading Boot0001 \
\"UEFI QEMU DVD-ROM\"\r\n\u{1b}[0m\u{1b}[37m\u{1b}[40m  Booting `kernel'\r\n\r\n\
\u{1b}[0m\u{1b}[30m\u{1b}[40mBOOTINFO loader=multiboot2 usable=0x1e000000 regions=9 rsdp=none cmdline=\"\"\n\
TEST START boot\nTEST a ... ok\nTEST DONE boot: 1 passed, 0 failed\n";
        let r = Report::parse(log);
        assert_eq!(r.problems, Vec::<String>::new());
        let info = r.bootinfo.unwrap();
        assert_eq!(info.loader, Loader::Multiboot2);
        assert_eq!(info.usable, 0x1e00_0000);
        assert_eq!(info.rsdp, None);
        assert_eq!(info.cmdline, "");
        assert!(!r.ready);
        assert_eq!(
            r.suites[0].done,
            Some(Done {
                passed: 1,
                failed: 0
            })
        );
    }

    #[test]
    fn cmdline_runs_to_last_quote() {
        let r = Report::parse(
            "BOOTINFO loader=pvh usable=1 regions=1 rsdp=f0000 extra=7 cmdline=\"a=\"b\" c\"\n",
        );
        let info = r.bootinfo.unwrap();
        assert_eq!(info.cmdline, "a=\"b\" c");
        assert_eq!(info.rsdp, Some(0xf0000));
    }

    #[test]
    fn failed_test_and_counts() {
        let log = "TEST START boot\nTEST a ... ok\nTEST b ... FAILED: expected 3, got 4\n\
TEST DONE boot: 1 passed, 1 failed\n";
        let r = Report::parse(log);
        assert_eq!(
            r.suites[0].tests[1].verdict,
            Verdict::Failed("expected 3, got 4".into())
        );
        let err = r.check_tests_passed(1).unwrap_err();
        assert!(err.contains("test `b` FAILED: expected 3, got 4"), "{err}");
        assert!(err.contains("reports 1 failed"), "{err}");
    }

    #[test]
    fn done_count_mismatch_is_reported() {
        let r = Report::parse("TEST START s\nTEST a ... ok\nTEST DONE s: 2 passed, 0 failed\n");
        let err = r.check_tests_passed(1).unwrap_err();
        assert!(err.contains("reports 2 passed but 1"), "{err}");
    }

    #[test]
    fn panic_in_the_middle_of_a_test_line() {
        let log = "TEST START boot\nTEST a ... ok\n\
TEST b ... PANIC at kernel/src/tests.rs:42:9: deliberate panic\n";
        let r = Report::parse(log);
        let panic = r.panic.clone().unwrap();
        assert_eq!(panic.file, "kernel/src/tests.rs");
        assert_eq!((panic.line, panic.column), (42, 9));
        assert_eq!(panic.message, "deliberate panic");
        assert!(matches!(
            r.suites[0].tests[1].verdict,
            Verdict::Unfinished(ref s) if s.starts_with("PANIC at")
        ));
        let err = r.check_tests_passed(0).unwrap_err();
        assert!(err.contains("no TEST DONE"), "{err}");
        assert!(err.contains("never finished"), "{err}");
        assert!(err.contains("kernel panicked"), "{err}");
    }

    #[test]
    fn verdict_on_a_later_line() {
        let log = "TEST START boot\nTEST slow ...\n[INFO] something\nok\nTEST DONE boot: 1 passed, 0 failed\n";
        let r = Report::parse(log);
        assert_eq!(r.suites[0].tests[0].verdict, Verdict::Ok);
        assert_eq!(r.check_tests_passed(1), Ok(()));
    }

    #[test]
    fn page_fault_with_cr2() {
        let log = "TEST START pagefault\nTEST fault ... \n\
EXCEPTION page fault (vector 14) error=0x2 RIP=0xffff800000012345 CR2=0xdeadb000\n";
        let r = Report::parse(log);
        let pf = r.page_fault().unwrap();
        assert_eq!(pf.name, "page fault");
        assert_eq!(pf.cr2, Some(0xdead_b000));
        assert!(matches!(
            r.suites[0].tests[0].verdict,
            Verdict::Unfinished(_)
        ));
    }

    #[test]
    fn cr2_on_a_following_line() {
        let log = "EXCEPTION PageFault (vector 14)\n  error code: 0x0\n  CR2=0xDEADB000 RIP=0x1\n";
        let r = Report::parse(log);
        assert_eq!(r.exceptions[0].name, "PageFault");
        assert_eq!(r.exceptions[0].cr2, Some(0xdead_b000));
        // A CR2 after the next protocol line belongs to something else.
        let log = "EXCEPTION GP (vector 13)\nkernel ready\nCR2=0x5\n";
        assert_eq!(Report::parse(log).exceptions[0].cr2, None);
    }

    #[test]
    fn malformed_lines_become_problems() {
        let log = "BOOTINFO loader=pvh cmdline=\"x\"\nTEST stray ... ok\nTEST DONE x: many\n\
PANIC at nowhere\nTEST START a\n";
        let r = Report::parse(log);
        assert!(r.bootinfo.is_none());
        assert_eq!(r.problems.len(), 5, "{:#?}", r.problems);
    }

    #[test]
    fn printable_log_strips_escapes_and_marks_controls() {
        assert_eq!(
            printable_log("\u{1b}[2Jhello\r\nbell\u{7}\n"),
            "hello\nbell\\x07\n"
        );
    }
}
