//! What a key from a PC keyboard sends to the line editor: the bytes a serial terminal would
//! send for it, so the editor reads one stream whatever the input device.
//!
//! The kernel's PS/2 interrupt handler decodes scancodes with [`decoder`] and pushes what
//! [`bytes`] gives; the host tests run the same decoder and mapping on scancode sequences.

use pc_keyboard::layouts::Us104Key;
use pc_keyboard::{DecodedKey, HandleControl, KeyCode, PS2Keyboard, ScancodeSet1};

/// The kernel's decoder: scancode set 1 (the i8042 translates set 2 into it), US layout,
/// Ctrl+letter as the control character (Ctrl-C is 0x03).
pub const fn decoder() -> PS2Keyboard<Us104Key, ScancodeSet1> {
    PS2Keyboard::new(
        ScancodeSet1::new(),
        Us104Key,
        HandleControl::MapLettersToUnicode,
    )
}

/// The bytes `key` sends, written into `buf` for a character; `None` for keys the editor
/// has no use for.
///
/// - A character is its UTF-8, except Esc, which would open an escape sequence and swallow
///   the next key, and U+007F: `pc-keyboard` decodes the Delete key (and keypad `.` with
///   Num Lock off) to it, while terminals send DEL for Backspace; Delete sends `ESC [ 3 ~`
///   as a terminal's does.
/// - Keys without a character: the VT100/xterm sequences for the arrows, Home, End and
///   Delete.
pub fn bytes(key: DecodedKey, buf: &mut [u8; 4]) -> Option<&[u8]> {
    match key {
        DecodedKey::Unicode('\u{1b}') => None,
        DecodedKey::Unicode('\u{7f}') => Some(b"\x1b[3~"),
        DecodedKey::Unicode(c) => Some(c.encode_utf8(buf).as_bytes()),
        DecodedKey::RawKey(code) => Some(match code {
            KeyCode::ArrowUp => b"\x1b[A",
            KeyCode::ArrowDown => b"\x1b[B",
            KeyCode::ArrowRight => b"\x1b[C",
            KeyCode::ArrowLeft => b"\x1b[D",
            KeyCode::Home => b"\x1b[H",
            KeyCode::End => b"\x1b[F",
            KeyCode::Delete => b"\x1b[3~",
            _ => return None,
        }),
    }
}
