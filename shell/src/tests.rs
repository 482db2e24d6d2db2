//! The editor against a model terminal: what it prints, applied to one screen line, must
//! always show the editor's line with the cursor where the editor has it.

use super::*;
use proptest::prelude::*;

/// One terminal line as the editor's output leaves it.
#[derive(Default)]
struct Screen {
    cells: Vec<u8>,
    col: usize,
    /// Lines finished with `\n`.
    done: Vec<String>,
}

impl Screen {
    fn apply(&mut self, out: &[u8]) {
        for &b in out {
            match b {
                BS => self.col = self.col.saturating_sub(1),
                b'\n' => {
                    let text = String::from_utf8(self.cells.clone()).unwrap();
                    self.done.push(text.trim_end().to_string());
                    self.cells.clear();
                    self.col = 0;
                }
                0x20..=0x7e => {
                    if self.col == self.cells.len() {
                        self.cells.push(b);
                    } else {
                        self.cells[self.col] = b;
                    }
                    self.col += 1;
                }
                other => panic!("the editor printed {other:#04x}"),
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8(self.cells.clone())
            .unwrap()
            .trim_end()
            .to_string()
    }
}

/// Feeds `input`; returns the results that were not `Pending`.
fn type_in(e: &mut Editor, screen: &mut Screen, input: &[u8]) -> Vec<Feed> {
    let mut results = Vec::new();
    for &b in input {
        let mut out = Vec::new();
        let r = e.feed(b, &mut out);
        screen.apply(&out);
        if r != Feed::Pending {
            results.push(r);
        }
    }
    results
}

fn lines(input: &[u8]) -> Vec<String> {
    let mut e = Editor::new(256, 32);
    let mut s = Screen::default();
    type_in(&mut e, &mut s, input)
        .into_iter()
        .filter_map(|r| match r {
            Feed::Line(l) => Some(l),
            _ => None,
        })
        .collect()
}

#[test]
fn printable_bytes_echo_and_enter_finishes() {
    let mut e = Editor::new(256, 32);
    let mut out = Vec::new();
    for &b in b"help" {
        assert_eq!(e.feed(b, &mut out), Feed::Pending);
    }
    assert_eq!(out, b"help");
    out.clear();
    assert_eq!(e.feed(b'\r', &mut out), Feed::Line("help".into()));
    assert_eq!(out, b"\n");
    assert_eq!(e.line(), "");
}

#[test]
fn cr_lf_and_crlf_each_end_one_line() {
    assert_eq!(lines(b"a\rb\nc\r\nd\r\r"), ["a", "b", "c", "d", ""]);
    // LF LF is two lines; LF CR too.
    assert_eq!(lines(b"x\n\n"), ["x", ""]);
    assert_eq!(lines(b"x\n\r"), ["x", ""]);
}

#[test]
fn a_csi_sequence_swallows_nothing_after_it() {
    // Arrow keys with and without parameters, then a command.
    assert_eq!(lines(b"\x1b[Ahelp\r"), ["help"]);
    assert_eq!(lines(b"\x1b[1;5Chelp\r"), ["help"]);
    // Intermediate bytes and private parameters (`ESC [ ? 2 5 h`, `ESC [ 0 SP q`).
    assert_eq!(lines(b"\x1b[?25hmem\r"), ["mem"]);
    assert_eq!(lines(b"\x1b[0 qmem\r"), ["mem"]);
    // A long parameter run is consumed without storing it.
    let mut long = b"\x1b[".to_vec();
    long.extend(core::iter::repeat_n(b'9', 10_000));
    long.extend_from_slice(b";1Dok\r");
    assert_eq!(lines(&long), ["ok"]);
}

#[test]
fn ss3_keys_and_a_lone_esc() {
    // `ESC O D` is Left: the `x` goes before the `b`.
    assert_eq!(lines(b"ab\x1bODx\r"), ["axb"]);
    // `ESC O H` / `ESC O F`: Home and End.
    assert_eq!(lines(b"bc\x1bOHa\x1bOFd\r"), ["abcd"]);
    // A lone ESC before a letter: the letter is typed.
    assert_eq!(lines(b"\x1bhelp\r"), ["help"]);
    // ESC ESC [ A: the first ESC is lone, the rest is Up (nothing in the history).
    assert_eq!(lines(b"\x1b\x1b[Amem\r"), ["mem"]);
}

#[test]
fn an_abandoned_sequence_leaves_the_following_letters_alone() {
    // `ESC [` then a pause (the caller abandons it), then `help`.
    let mut e = Editor::new(256, 32);
    let mut s = Screen::default();
    type_in(&mut e, &mut s, b"\x1b[");
    assert!(e.escape_pending());
    e.abandon_escape();
    let r = type_in(&mut e, &mut s, b"help\r");
    assert_eq!(r, [Feed::Line("help".into())]);
}

#[test]
fn can_and_sub_cancel_a_sequence_and_controls_act_inside_one() {
    assert_eq!(lines(b"\x1b[12\x18hi\r"), ["hi"]);
    assert_eq!(lines(b"\x1b[12\x1ahi\r"), ["hi"]);
    // CR inside an unfinished sequence still ends the line.
    assert_eq!(lines(b"go\x1b[1\r"), ["go"]);
}

#[test]
fn editing_in_the_middle_redraws_the_line() {
    let mut e = Editor::new(256, 32);
    let mut s = Screen::default();
    // "lpci", Left x3, insert "s" -> "lspci".
    type_in(&mut e, &mut s, b"lpci\x1b[D\x1b[D\x1b[Ds");
    assert_eq!((e.line(), e.cursor()), ("lspci", 2));
    assert_eq!((s.text(), s.col), ("lspci".to_string(), 2));
    // Delete under the cursor (ESC [ 3 ~) removes "p"; Backspace removes "s".
    type_in(&mut e, &mut s, b"\x1b[3~");
    assert_eq!((e.line(), s.text().as_str()), ("lsci", "lsci"));
    type_in(&mut e, &mut s, b"\x7f");
    assert_eq!((e.line(), s.text().as_str(), s.col), ("lci", "lci", 1));
    // Home, End (VT220 forms), Right at the end does nothing.
    type_in(&mut e, &mut s, b"\x1b[1~");
    assert_eq!((e.cursor(), s.col), (0, 0));
    type_in(&mut e, &mut s, b"\x1b[4~\x1b[C");
    assert_eq!((e.cursor(), s.col), (3, 3));
    let r = type_in(&mut e, &mut s, b"\r");
    assert_eq!(r, [Feed::Line("lci".into())]);
    assert_eq!(s.done, ["lci"]);
}

#[test]
fn ctrl_u_erases_and_ctrl_c_cancels() {
    let mut e = Editor::new(256, 32);
    let mut s = Screen::default();
    type_in(&mut e, &mut s, b"nonsense\x1b[D\x15");
    assert_eq!((e.line(), s.text().as_str(), s.col), ("", "", 0));
    let r = type_in(&mut e, &mut s, b"abc\x03");
    assert_eq!(r, [Feed::Cancelled]);
    assert_eq!(s.done, ["abc^C"]);
    assert_eq!(e.line(), "");
    // A cancelled line is not remembered.
    assert_eq!(e.history().count(), 0);
}

#[test]
fn the_line_is_bounded() {
    let mut e = Editor::new(8, 4);
    let mut s = Screen::default();
    let r = type_in(&mut e, &mut s, b"0123456789abc\r");
    // What is left of a line that lost bytes is not the command that was sent: not run.
    assert_eq!(r, [Feed::Overlong]);
    assert_eq!(s.done, ["01234567"]);
    assert_eq!(e.history().count(), 0);
    // `pciehp cut 12` cut to `pciehp cut 1` would name another slot.
    let mut e = Editor::new(12, 4);
    let r = type_in(&mut e, &mut Screen::default(), b"pciehp cut 12\r");
    assert_eq!(r, [Feed::Overlong]);
    // The next line is whole again.
    let r = type_in(&mut e, &mut Screen::default(), b"help\r");
    assert_eq!(r, [Feed::Line("help".into())]);
    // Bytes dropped, then an edit: the user sees the line that runs.
    let r = type_in(&mut e, &mut Screen::default(), b"0123456789abcd\x7f\r");
    assert_eq!(r, [Feed::Line("0123456789a".into())]);
    // A line that exactly fills the room is whole.
    let r = type_in(&mut e, &mut Screen::default(), b"0123456789ab\r");
    assert_eq!(r, [Feed::Line("0123456789ab".into())]);
}

/// A key that changes nothing (Down while not browsing, Up with no history, Delete at the
/// end, Backspace at column 0) leaves an overlong line refused.
#[test]
fn a_key_that_changes_nothing_keeps_an_overlong_line_refused() {
    for key in [&b"\x1b[B"[..], b"\x1b[A", b"\x1b[3~", b"\x1b[H\x7f"] {
        let mut e = Editor::new(8, 4);
        let mut input = b"0123456789".to_vec();
        input.extend_from_slice(key);
        input.push(b'\r');
        let r = type_in(&mut e, &mut Screen::default(), &input);
        assert_eq!(r, [Feed::Overlong], "after the no-op key {key:02x?}");
    }
}

#[test]
fn history_up_down_restores_the_draft() {
    let mut e = Editor::new(256, 32);
    let mut s = Screen::default();
    type_in(&mut e, &mut s, b"lspci -v\rmem\rmem\rirqs\r");
    // No repeat of the newest entry.
    assert_eq!(e.history().collect::<Vec<_>>(), ["irqs", "mem", "lspci -v"]);
    type_in(&mut e, &mut s, b"dr");
    type_in(&mut e, &mut s, b"\x1b[A");
    assert_eq!((e.line(), s.text().as_str()), ("irqs", "irqs"));
    type_in(&mut e, &mut s, b"\x1b[A\x1b[A");
    assert_eq!(
        (e.line(), s.text().as_str(), s.col),
        ("lspci -v", "lspci -v", 8)
    );
    // Up past the oldest stays there.
    type_in(&mut e, &mut s, b"\x1bOA");
    assert_eq!(e.line(), "lspci -v");
    type_in(&mut e, &mut s, b"\x1b[B");
    assert_eq!((e.line(), s.text().as_str()), ("mem", "mem"));
    type_in(&mut e, &mut s, b"\x1b[B\x1b[B");
    assert_eq!((e.line(), s.text().as_str(), s.col), ("dr", "dr", 2));
    // Down with no browsing does nothing.
    type_in(&mut e, &mut s, b"\x1b[B");
    assert_eq!(e.line(), "dr");
    // A recalled line can be edited and entered.
    let r = type_in(&mut e, &mut s, b"\x15\x1b[A\x7fx\r");
    assert_eq!(r, [Feed::Line("irqx".into())]);
}

#[test]
fn history_keeps_the_newest_lines() {
    let mut e = Editor::new(256, 32);
    let mut s = Screen::default();
    for i in 0..40 {
        type_in(&mut e, &mut s, format!("cmd{i}\r").as_bytes());
    }
    let h: Vec<_> = e.history().collect();
    assert_eq!(h.len(), 32);
    assert_eq!((h[0], h[31]), ("cmd39", "cmd8"));
}

proptest! {
    /// Whatever arrives, the editor does not panic, keeps its bounds, and the screen it
    /// draws shows its line with the cursor in place.
    #[test]
    fn arbitrary_input_keeps_the_bounds(
        input in proptest::collection::vec(
            prop_oneof![
                any::<u8>(),
                Just(ESC), Just(b'['), Just(b'O'), Just(b'A'), Just(b'B'), Just(b'C'),
                Just(b'D'), Just(b'~'), Just(b'3'), Just(DEL), Just(b'\r'),
            ],
            0..600,
        ),
        max_line in 0usize..20,
    ) {
        let mut e = Editor::new(max_line, 4);
        let mut s = Screen::default();
        for b in input {
            let mut out = Vec::new();
            let r = e.feed(b, &mut out);
            s.apply(&out);
            prop_assert!(e.line().len() <= max_line);
            prop_assert!(e.cursor() <= e.line().len());
            prop_assert!(e.history().count() <= 4);
            if let Feed::Line(l) = &r {
                prop_assert!(l.len() <= max_line);
                prop_assert_eq!(s.done.last().map(String::as_str), Some(l.trim_end()));
            }
            if r == Feed::Pending {
                prop_assert_eq!(s.text(), e.line().trim_end());
                prop_assert_eq!(s.col, e.cursor());
            }
        }
    }
}

/// The editor's heap does not grow with what is typed: every buffer it keeps is allocated
/// by `Editor::new` with room for a whole line (the kernel compares heap use across
/// commands byte for byte).
#[test]
fn buffers_keep_their_room() {
    let mut e = Editor::new(16, 3);
    let rooms = |e: &Editor| {
        let mut v = vec![e.line.capacity(), e.draft.capacity()];
        v.extend(e.history.iter().map(Vec::capacity));
        v.extend(e.spare.iter().map(Vec::capacity));
        v
    };
    let before = rooms(&e);
    let mut out = Vec::new();
    for line in [
        "a",
        "bb",
        "a much longer line than sixteen",
        "cc",
        "dd",
        "ee",
    ] {
        for b in line.bytes().chain(*b"\r") {
            e.feed(b, &mut out);
        }
        for b in b"\x1b[A\x1b[A\x1b[B\x15" {
            e.feed(*b, &mut out);
        }
    }
    let mut after = rooms(&e);
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after);
    assert_eq!(e.history().count(), 3);
}

/// The kernel's PS/2 path (`kernel/src/keyboard.rs`, `on_interrupt`): its decoder and its
/// key-to-bytes mapping, both from [`crate::keys`].
fn ps2_bytes(scancodes: &[u8]) -> Vec<u8> {
    let mut kb = crate::keys::decoder();
    let mut out = Vec::new();
    for &b in scancodes {
        let Ok(Some(ev)) = kb.add_byte(b) else {
            continue;
        };
        if let Some(key) = kb.process_keyevent(ev) {
            let mut buf = [0u8; 4];
            if let Some(bytes) = crate::keys::bytes(key, &mut buf) {
                out.extend_from_slice(bytes);
            }
        }
    }
    out
}

/// The Delete key on a PS/2 keyboard (E0 53) deletes the character under the cursor:
/// pc-keyboard 0.9's `Us104Key` decodes it to `Unicode('\u{7f}')`, not `RawKey(Delete)`,
/// and the editor takes a DEL byte as Backspace, so the mapping sends `ESC [ 3 ~` for it.
#[test]
fn the_ps2_delete_key_deletes_under_the_cursor() {
    // "abc", Left (E0 4B / E0 CB), Delete (E0 53 / E0 D3).
    let keys = [
        0x1e, 0x9e, 0x30, 0xb0, 0x2e, 0xae, // a b c
        0xe0, 0x4b, 0xe0, 0xcb, // Left
        0xe0, 0x53, 0xe0, 0xd3, // Delete
    ];
    let bytes = ps2_bytes(&keys);
    let mut e = Editor::new(256, 32);
    let mut s = Screen::default();
    type_in(&mut e, &mut s, &bytes);
    assert_eq!(
        (e.line(), e.cursor()),
        ("ab", 2),
        "Delete removed the character left of the cursor (bytes {bytes:02x?})"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// PS/2 garbage (cut-short E0/E1 prefixes, releases without presses, controller replies)
    /// through the kernel's decoding into the editor: no panic, bounds kept.
    #[test]
    fn scancode_garbage_keeps_the_editor_in_bounds(codes in proptest::collection::vec(
        prop_oneof![any::<u8>(), Just(0xe0u8), Just(0xe1), Just(0x1d), Just(0x9d), Just(0x45),
                    Just(0xc5), Just(0x53), Just(0xd3), Just(0xfa), Just(0xaa), Just(0x00)],
        0..400))
    {
        let bytes = ps2_bytes(&codes);
        let mut e = Editor::new(16, 4);
        let mut s = Screen::default();
        for b in bytes {
            let mut out = Vec::new();
            let r = e.feed(b, &mut out);
            s.apply(&out);
            prop_assert!(e.line().len() <= 16);
            if r == Feed::Pending {
                prop_assert_eq!(s.col, e.cursor());
            }
        }
    }
}

/// Enter (or Ctrl-C) ends a sequence cut short: otherwise the first byte of the next line
/// in 0x40..=0x7e would be taken as its final byte, and in a paste (no 250 ms pause for the
/// kernel's `abandon_escape`) the next command would lose its first letter (`help` run as
/// `elp`) or that letter would become a key (after `mem`, the line `Ax` run as `memx`: `A`
/// is Up, which recalls the history).
#[test]
fn enter_ends_an_unfinished_sequence() {
    assert_eq!(lines(b"\x1b[\rhelp\r"), ["", "help"]);
    assert_eq!(lines(b"mem\r\x1b[1\rAx\r"), ["mem", "", "Ax"]);
    let mut e = Editor::new(256, 32);
    let mut s = Screen::default();
    let r = type_in(&mut e, &mut s, b"\x1b[\x03help\r");
    assert_eq!(r, [Feed::Cancelled, Feed::Line("help".into())]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Long escape-heavy garbage: output, line and history stay bounded, and the screen
    /// shows the line.
    #[test]
    fn long_garbage_keeps_every_bound(
        input in proptest::collection::vec(
            prop_oneof![any::<u8>(), Just(ESC), Just(b'['), Just(b'O'), Just(b'A'), Just(b'B'),
                        Just(b'\r'), Just(b'\n'), Just(0x10), Just(0x0e), Just(0x03), Just(0x15),
                        Just(b'3'), Just(b'~'), Just(b';'), Just(0x18)],
            0..3000),
        max_line in 0usize..300,
        hist in 0usize..4,
    ) {
        let mut e = Editor::new(max_line, hist);
        let mut s = Screen::default();
        for b in input {
            let mut out = Vec::new();
            let r = e.feed(b, &mut out);
            prop_assert!(out.len() <= 3 * max_line + 4);
            s.apply(&out);
            prop_assert!(e.line().len() <= max_line);
            prop_assert!(e.history().count() <= hist);
            if r == Feed::Pending {
                prop_assert_eq!(s.text(), e.line().trim_end());
                prop_assert_eq!(s.col, e.cursor());
            }
        }
    }
}
