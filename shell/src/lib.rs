//! The console's line editor, apart from any device so that it can be tested on the host,
//! and its input queue ([`queue`]: a byte ring that counts and reports what it drops).
//!
//! [`Editor`] is a state machine fed one input byte at a time ([`Editor::feed`]). It keeps the
//! line being typed, the cursor, a bounded history and the state of an escape sequence in
//! progress; what the terminal must show in answer (the echo, and the bytes that redraw the
//! line after an edit in the middle) is appended to an output buffer the caller prints. A
//! finished line comes back as [`Feed::Line`].
//!
//! Design notes:
//!
//! - Escape sequences (ECMA-48 / VT100) are parsed whole, so no byte of a sequence leaks
//!   into the line and no byte after one is swallowed: `ESC [` with parameter bytes
//!   (`0x30..=0x3f`) and intermediate bytes (`0x20..=0x2f`) up to its final byte
//!   (`0x40..=0x7e`); `ESC O x` (SS3, what terminals in application cursor mode send for the
//!   arrows, Home and End); `ESC` followed by anything else is a lone ESC, ignored, and the
//!   byte after it is handled as if no ESC had come. A control byte inside a sequence is
//!   acted on (as a VT100 does) without ending the sequence, except CAN and SUB, which cancel
//!   it, and Enter and Ctrl-C, whose line ends it too (so a pasted next line keeps its
//!   first letter). A lone ESC and a sequence cut short cannot be told apart from a sequence still
//!   arriving; the caller ends one that stays incomplete for a while with
//!   [`Editor::abandon_escape`] (the kernel does after 250 ms without input).
//! - Keys: printable ASCII is inserted at the cursor; Left/Right (also Ctrl-B/Ctrl-F),
//!   Home/End (also Ctrl-A/Ctrl-E), Delete (`ESC [ 3 ~`, also Ctrl-D),
//!   Backspace (DEL or BS), Ctrl-U (erase the line), Ctrl-C (cancel the line), Up/Down
//!   (history). CR, LF and CR LF each end one line: an LF right after a CR is not a second,
//!   empty line.
//! - The output uses only what every terminal (and the kernel's framebuffer console) knows:
//!   printable ASCII, BS (`0x08`) to move left, reprinting a character to move right, spaces
//!   to erase, and `\n` for a new line (the kernel's serial writer sends it as CR LF).
//!   The editor does not know the terminal's width. On the framebuffer console a line longer
//!   than a row edits correctly, because its BS goes back up into the row the text wrapped
//!   from (`fbcon::grid`, tested with this editor in `fbcon/tests/line_editor.rs`); a serial
//!   terminal's BS stops at the left margin, so there such a line is edited correctly only in
//!   its last row.
//! - Bounds: a line holds at most [`Editor::max_line`] bytes (more typing is ignored, and
//!   Enter on a line that lost bytes gives [`Feed::Overlong`] instead of the line), the
//!   history at most [`Editor::history_limit`] lines, and a sequence's parameter bytes are
//!   not stored, so no input can grow the editor without bound.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod hid;
pub mod keys;
pub mod queue;

pub use queue::{Dropped, InputQueue};

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

/// Backspace: moves the terminal's cursor one column left.
const BS: u8 = 0x08;
/// Escape.
const ESC: u8 = 0x1b;
/// Cancel (ECMA-48): aborts an escape sequence.
const CAN: u8 = 0x18;
/// Substitute (ECMA-48): aborts an escape sequence.
const SUB: u8 = 0x1a;
/// Delete, what most terminals send for the Backspace key.
const DEL: u8 = 0x7f;

/// What a byte fed to the editor completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feed {
    /// Nothing yet: the line is still being typed.
    Pending,
    /// Enter: the finished line (also added to the history unless it is empty or repeats
    /// the newest entry).
    Line(String),
    /// Ctrl-C: the line was dropped.
    Cancelled,
    /// Enter on a line that lost bytes because it was full (a paste longer than
    /// [`Editor::max_line`]): what is left is not the command that was sent, so it is
    /// dropped, not run, and not remembered.
    Overlong,
}

/// A key the editor acts on, decoded from one byte or one escape sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Insert(u8),
    Enter,
    Backspace,
    Delete,
    Left,
    Right,
    Home,
    End,
    Up,
    Down,
    EraseLine,
    Cancel,
}

/// Where the escape-sequence parser is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    /// Not in a sequence.
    Ground,
    /// After ESC.
    Esc,
    /// After `ESC [`: the first numeric parameter so far (saturating; the only one any key
    /// needs) and whether a `;` or an intermediate byte ended it.
    Csi { first: u16, first_done: bool },
    /// After `ESC O`.
    Ss3,
}

/// The line editor (see the crate documentation).
#[derive(Clone, Debug)]
pub struct Editor {
    line: Vec<u8>,
    cursor: usize,
    max_line: usize,
    /// The history, newest first: `history_limit` slots, each with room for a whole line,
    /// allocated by [`Editor::new`]. Remembering a line copies it into a slot, so the heap
    /// the editor holds does not change with what is typed (the kernel's resource counters
    /// compare heap use byte for byte across commands).
    history: VecDeque<Vec<u8>>,
    /// Slots not in use, with their room kept.
    spare: Vec<Vec<u8>>,
    history_limit: usize,
    /// Which history entry is shown (0 = newest), while browsing.
    browsing: Option<usize>,
    /// The line being typed before browsing started, restored by Down past the newest entry.
    draft: Vec<u8>,
    escape: Escape,
    after_cr: bool,
    /// Bytes were dropped because the line was full, and the line has not been edited since.
    overflowed: bool,
}

impl Editor {
    /// An editor for lines of at most `max_line` bytes, remembering the last `history_limit`
    /// lines.
    pub fn new(max_line: usize, history_limit: usize) -> Self {
        Editor {
            line: Vec::with_capacity(max_line),
            cursor: 0,
            max_line,
            history: VecDeque::with_capacity(history_limit),
            spare: (0..history_limit)
                .map(|_| Vec::with_capacity(max_line))
                .collect(),
            history_limit,
            browsing: None,
            draft: Vec::with_capacity(max_line),
            escape: Escape::Ground,
            after_cr: false,
            overflowed: false,
        }
    }

    /// The longest line accepted, in bytes.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// How many lines the history keeps.
    pub fn history_limit(&self) -> usize {
        self.history_limit
    }

    /// The line as typed so far (printable ASCII only).
    pub fn line(&self) -> &str {
        // Only bytes 0x20..=0x7e are ever inserted.
        core::str::from_utf8(&self.line).unwrap_or("")
    }

    /// The cursor, as a byte index into [`Editor::line`].
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The history, newest first.
    pub fn history(&self) -> impl Iterator<Item = &str> {
        self.history
            .iter()
            .map(|l| core::str::from_utf8(l).unwrap_or(""))
    }

    /// Whether an escape sequence has begun and not ended (see [`Editor::abandon_escape`]).
    pub fn escape_pending(&self) -> bool {
        self.escape != Escape::Ground
    }

    /// Ends an escape sequence that stopped arriving: what came of it is dropped, and the
    /// next byte is handled afresh. A lone ESC key press ends this way.
    pub fn abandon_escape(&mut self) {
        self.escape = Escape::Ground;
    }

    /// Feeds one input byte; appends what the terminal must show to `out`.
    pub fn feed(&mut self, byte: u8, out: &mut Vec<u8>) -> Feed {
        let after_cr = core::mem::replace(&mut self.after_cr, byte == b'\r');
        if byte == b'\n' && after_cr {
            return Feed::Pending;
        }
        match self.decode(byte) {
            Some(key) => self.act(key, out),
            None => Feed::Pending,
        }
    }

    /// Runs `byte` through the escape-sequence parser; the key it completes, if any.
    fn decode(&mut self, byte: u8) -> Option<Key> {
        match self.escape {
            Escape::Ground => {}
            Escape::Esc => match byte {
                b'[' => {
                    self.escape = Escape::Csi {
                        first: 0,
                        first_done: false,
                    };
                    return None;
                }
                b'O' => {
                    self.escape = Escape::Ss3;
                    return None;
                }
                // A lone ESC: the byte is handled as if it came alone (another ESC starts
                // a new sequence below).
                _ => self.escape = Escape::Ground,
            },
            Escape::Csi { first, first_done } => match byte {
                b'0'..=b'9' if !first_done => {
                    let first = first
                        .saturating_mul(10)
                        .saturating_add(u16::from(byte - b'0'));
                    self.escape = Escape::Csi { first, first_done };
                    return None;
                }
                // Further parameters (`;`, `:`, digits after them, private markers) and
                // intermediate bytes: part of the sequence, not needed for any key.
                0x20..=0x3f => {
                    self.escape = Escape::Csi {
                        first,
                        first_done: true,
                    };
                    return None;
                }
                0x40..=0x7e => {
                    self.escape = Escape::Ground;
                    return csi_key(first, byte);
                }
                CAN | SUB => {
                    self.escape = Escape::Ground;
                    return None;
                }
                ESC => {
                    self.escape = Escape::Esc;
                    return None;
                }
                // Other control bytes act inside a sequence; DEL and bytes above 0x7f are
                // ignored there.
                0x00..=0x1f => return control_key(byte),
                _ => return None,
            },
            Escape::Ss3 => {
                self.escape = Escape::Ground;
                return match byte {
                    0x40..=0x7e => ss3_key(byte),
                    CAN | SUB => None,
                    ESC => {
                        self.escape = Escape::Esc;
                        None
                    }
                    0x00..=0x1f => control_key(byte),
                    _ => None,
                };
            }
        }
        match byte {
            ESC => {
                self.escape = Escape::Esc;
                None
            }
            0x20..=0x7e => Some(Key::Insert(byte)),
            DEL => Some(Key::Backspace),
            0x00..=0x1f => control_key(byte),
            _ => None,
        }
    }

    /// Acts on `key`.
    fn act(&mut self, key: Key, out: &mut Vec<u8>) -> Feed {
        if !matches!(key, Key::Up | Key::Down) {
            self.browsing = None;
        }
        match key {
            Key::Insert(byte) => {
                if self.line.len() >= self.max_line {
                    self.overflowed = true;
                } else {
                    self.line.insert(self.cursor, byte);
                    self.cursor += 1;
                    if self.cursor == self.line.len() {
                        out.push(byte);
                    } else {
                        self.redraw_from(self.cursor - 1, self.line.len() - 1, out);
                    }
                }
            }
            Key::Enter => {
                // A sequence Enter cut short ends with the line (else the next line's first
                // letter would be taken as its final byte).
                self.escape = Escape::Ground;
                out.push(b'\n');
                if core::mem::take(&mut self.overflowed) {
                    self.line.clear();
                    self.cursor = 0;
                    return Feed::Overlong;
                }
                // The line's buffer stays (with its room); the caller gets a copy.
                let line: String = self.line.iter().copied().map(char::from).collect();
                self.remember_current();
                self.line.clear();
                self.cursor = 0;
                return Feed::Line(line);
            }
            Key::Cancel => {
                self.escape = Escape::Ground;
                self.overflowed = false;
                out.extend_from_slice(b"^C\n");
                self.line.clear();
                self.cursor = 0;
                return Feed::Cancelled;
            }
            // An edit that removes bytes, or a line replaced, shows the user the line that
            // will run: what was dropped no longer matters. A key that changes nothing
            // leaves an overlong line refused.
            Key::Backspace => {
                if self.cursor > 0 {
                    self.overflowed = false;
                    let old_len = self.line.len();
                    self.line.remove(self.cursor - 1);
                    self.cursor -= 1;
                    out.push(BS);
                    self.redraw_from(self.cursor, old_len, out);
                }
            }
            Key::Delete => {
                if self.cursor < self.line.len() {
                    self.overflowed = false;
                    let old_len = self.line.len();
                    self.line.remove(self.cursor);
                    self.redraw_from(self.cursor, old_len, out);
                }
            }
            Key::Left => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    out.push(BS);
                }
            }
            Key::Right => {
                if let Some(&byte) = self.line.get(self.cursor) {
                    self.cursor += 1;
                    out.push(byte);
                }
            }
            Key::Home => {
                out.extend(core::iter::repeat_n(BS, self.cursor));
                self.cursor = 0;
            }
            Key::End => {
                out.extend_from_slice(&self.line[self.cursor..]);
                self.cursor = self.line.len();
            }
            Key::EraseLine => {
                self.overflowed = false;
                self.replace(Vec::new(), out);
            }
            Key::Up => {
                let next = self.browsing.map_or(0, |i| i + 1);
                if let Some(entry) = self.history.get(next) {
                    let entry = entry.clone();
                    if self.browsing.is_none() {
                        self.draft.clear();
                        self.draft.extend_from_slice(&self.line);
                    }
                    self.browsing = Some(next);
                    self.overflowed = false;
                    self.replace(entry, out);
                }
            }
            Key::Down => match self.browsing {
                None => {}
                Some(0) => {
                    self.browsing = None;
                    self.overflowed = false;
                    let draft = self.draft.clone();
                    self.draft.clear();
                    self.replace(draft, out);
                }
                Some(i) => {
                    self.overflowed = false;
                    let entry = self.history[i - 1].clone();
                    self.browsing = Some(i - 1);
                    self.replace(entry, out);
                }
            },
        }
        Feed::Pending
    }

    /// Adds the finished line to the history (not an empty one, nor a repeat of the newest).
    fn remember_current(&mut self) {
        let line = core::mem::take(&mut self.line);
        self.remember(&line);
        self.line = line;
    }

    /// Adds `line` to the history (not an empty one, nor a repeat of the newest).
    fn remember(&mut self, line: &[u8]) {
        if self.history_limit == 0
            || line.is_empty()
            || self.history.front().is_some_and(|newest| newest == line)
        {
            return;
        }
        let mut slot = if self.history.len() == self.history_limit {
            self.history.pop_back()
        } else {
            self.spare.pop()
        }
        .unwrap_or_default();
        slot.clear();
        slot.extend_from_slice(&line[..line.len().min(self.max_line)]);
        self.history.push_front(slot);
    }

    /// Replaces the whole line with `new` (cut to the bound), cursor at its end.
    fn replace(&mut self, new: Vec<u8>, out: &mut Vec<u8>) {
        let new = &new[..new.len().min(self.max_line)];
        out.extend(core::iter::repeat_n(BS, self.cursor));
        let old_len = self.line.len();
        self.line.clear();
        self.line.extend_from_slice(new);
        self.cursor = self.line.len();
        self.redraw_from(0, old_len, out);
    }

    /// Redraws the line from `from` (where the terminal's cursor is) to its end, blanks what
    /// is left of a longer old line (`old_len`), and moves back to the cursor.
    fn redraw_from(&self, from: usize, old_len: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.line[from..]);
        let blanks = old_len.saturating_sub(self.line.len());
        out.extend(core::iter::repeat_n(b' ', blanks));
        let end = self.line.len() + blanks;
        out.extend(core::iter::repeat_n(BS, end - self.cursor));
    }
}

/// The key of a control byte outside (or inside) a sequence.
fn control_key(byte: u8) -> Option<Key> {
    Some(match byte {
        b'\r' | b'\n' => Key::Enter,
        BS => Key::Backspace,
        0x01 => Key::Home,      // Ctrl-A
        0x02 => Key::Left,      // Ctrl-B
        0x03 => Key::Cancel,    // Ctrl-C
        0x04 => Key::Delete,    // Ctrl-D
        0x05 => Key::End,       // Ctrl-E
        0x06 => Key::Right,     // Ctrl-F
        0x0e => Key::Down,      // Ctrl-N
        0x10 => Key::Up,        // Ctrl-P
        0x15 => Key::EraseLine, // Ctrl-U
        _ => return None,
    })
}

/// The key of `ESC [ <first> ... <final>` (xterm and VT220 encodings).
fn csi_key(first: u16, final_byte: u8) -> Option<Key> {
    Some(match (final_byte, first) {
        (b'A', _) => Key::Up,
        (b'B', _) => Key::Down,
        (b'C', _) => Key::Right,
        (b'D', _) => Key::Left,
        (b'H', _) => Key::Home,
        (b'F', _) => Key::End,
        (b'~', 1 | 7) => Key::Home,
        (b'~', 4 | 8) => Key::End,
        (b'~', 3) => Key::Delete,
        _ => return None,
    })
}

/// The key of `ESC O <final>`.
fn ss3_key(final_byte: u8) -> Option<Key> {
    Some(match final_byte {
        b'A' => Key::Up,
        b'B' => Key::Down,
        b'C' => Key::Right,
        b'D' => Key::Left,
        b'H' => Key::Home,
        b'F' => Key::End,
        b'M' => Key::Enter, // keypad Enter in application keypad mode
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
