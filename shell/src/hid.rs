//! USB keyboards in the boot protocol: 8-byte reports in, the bytes a terminal would send out.
//!
//! A boot keyboard (Device Class Definition for HID 1.11, Appendix B.1) reports the state of
//! its keys, not key events: byte 0 holds the eight modifier keys as bits (Left Ctrl, Shift,
//! Alt, GUI, then the right ones), byte 1 is reserved, bytes 2 to 7 name up to six keys held
//! down by their usage ID on the Keyboard/Keypad page (HID Usage Tables 1.5, §10, page
//! 0x07). A report comes when the state changes (after `SET_IDLE(0)`), so presses and
//! releases are the difference between two consecutive reports ([`diff`]). Usage IDs 0x01 to
//! 0x03 are error codes, not keys: a keyboard that sees more keys than it can report
//! (ErrorRollOver, 0x01 in every key slot) says so instead of naming keys, and such a report
//! changes nothing.
//!
//! The key events then go through the same decoder as the PS/2 keyboard's
//! (`pc_keyboard::EventDecoder`, US layout, Ctrl+letter as the control character) and the
//! same mapping to bytes ([`crate::keys::bytes`]), so Enter, Backspace, the arrows,
//! Home/End, Delete, Ctrl-C and Ctrl-U reach the line editor as they do from PS/2.
//!
//! USB keyboards do not repeat a held key by themselves (a PS/2 keyboard does), and this
//! module does not either: a held key is typed once.

use pc_keyboard::layouts::Us104Key;
use pc_keyboard::{EventDecoder, HandleControl, KeyCode, KeyEvent, KeyState};

/// Bytes of a boot keyboard report.
pub const REPORT_LEN: usize = 8;

/// The highest error usage ID (0x01 ErrorRollOver, 0x02 POSTFail, 0x03 ErrorUndefined).
const LAST_ERROR_USAGE: u8 = 0x03;

/// One boot keyboard report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootReport {
    /// Modifier bits: bit `i` is usage `0xE0 + i` (Left Ctrl ... Right GUI).
    pub modifiers: u8,
    /// Usage IDs of the keys held, 0 for an empty slot.
    pub keys: [u8; 6],
}

/// Why a report was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportError {
    /// Fewer bytes than a boot report has.
    Short(usize),
    /// A key slot holds an error code (ErrorRollOver and the like): the keyboard cannot say
    /// which keys are down.
    Error(u8),
}

impl BootReport {
    /// Parses the first [`REPORT_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<BootReport, ReportError> {
        if bytes.len() < REPORT_LEN {
            return Err(ReportError::Short(bytes.len()));
        }
        let mut keys = [0u8; 6];
        keys.copy_from_slice(&bytes[2..8]);
        if let Some(&e) = keys.iter().find(|&&k| k != 0 && k <= LAST_ERROR_USAGE) {
            return Err(ReportError::Error(e));
        }
        Ok(BootReport {
            modifiers: bytes[0],
            keys,
        })
    }

    fn holds(&self, usage: u8) -> bool {
        usage != 0 && self.keys.contains(&usage)
    }
}

/// The key events that lead from report `old` to report `new`, in order: releases first
/// (modifiers, then keys), then presses (modifiers, so that Shift applies to a key pressed
/// in the same report, then keys in slot order). A usage named twice in one report counts
/// once; usages without a [`KeyCode`] are skipped.
pub fn diff(old: &BootReport, new: &BootReport, mut out: impl FnMut(KeyEvent)) {
    let mut emit = |usage: u8, state: KeyState| {
        if let Some(code) = key_code(usage) {
            out(KeyEvent { code, state });
        }
    };
    for bit in 0..8 {
        if old.modifiers & (1 << bit) != 0 && new.modifiers & (1 << bit) == 0 {
            emit(0xE0 + bit, KeyState::Up);
        }
    }
    for (i, &k) in old.keys.iter().enumerate() {
        if k != 0 && !new.holds(k) && !old.keys[..i].contains(&k) {
            emit(k, KeyState::Up);
        }
    }
    for bit in 0..8 {
        if old.modifiers & (1 << bit) == 0 && new.modifiers & (1 << bit) != 0 {
            emit(0xE0 + bit, KeyState::Down);
        }
    }
    for (i, &k) in new.keys.iter().enumerate() {
        if k != 0 && !old.holds(k) && !new.keys[..i].contains(&k) {
            emit(k, KeyState::Down);
        }
    }
}

/// The key of a usage ID on the Keyboard/Keypad page (HID Usage Tables 1.5, §10), as
/// `pc-keyboard` names keys (by their place on a US keyboard); `None` for usages without
/// one (error codes, F13 and up, the international and language keys).
pub fn key_code(usage: u8) -> Option<KeyCode> {
    use KeyCode::*;
    const LETTERS: [KeyCode; 26] = [
        A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P, Q, R, S, T, U, V, W, X, Y, Z,
    ];
    const DIGITS: [KeyCode; 10] = [Key1, Key2, Key3, Key4, Key5, Key6, Key7, Key8, Key9, Key0];
    const FUNCTION: [KeyCode; 12] = [F1, F2, F3, F4, F5, F6, F7, F8, F9, F10, F11, F12];
    const PAD: [KeyCode; 10] = [
        Numpad1, Numpad2, Numpad3, Numpad4, Numpad5, Numpad6, Numpad7, Numpad8, Numpad9, Numpad0,
    ];
    const MODIFIERS: [KeyCode; 8] = [LControl, LShift, LAlt, LWin, RControl, RShift, RAltGr, RWin];
    Some(match usage {
        0x04..=0x1D => LETTERS[usize::from(usage - 0x04)],
        0x1E..=0x27 => DIGITS[usize::from(usage - 0x1E)],
        0x28 => Return,
        0x29 => Escape,
        0x2A => Backspace,
        0x2B => Tab,
        0x2C => Spacebar,
        0x2D => OemMinus,
        0x2E => OemPlus,
        0x2F => Oem4,
        0x30 => Oem6,
        // Backslash, and Non-US # (the same place on a US keyboard).
        0x31 | 0x32 => Oem7,
        0x33 => Oem1,
        0x34 => Oem3,
        0x35 => Oem8,
        0x36 => OemComma,
        0x37 => OemPeriod,
        0x38 => Oem2,
        0x39 => CapsLock,
        0x3A..=0x45 => FUNCTION[usize::from(usage - 0x3A)],
        0x46 => PrintScreen,
        0x47 => ScrollLock,
        0x48 => PauseBreak,
        0x49 => Insert,
        0x4A => Home,
        0x4B => PageUp,
        0x4C => Delete,
        0x4D => End,
        0x4E => PageDown,
        0x4F => ArrowRight,
        0x50 => ArrowLeft,
        0x51 => ArrowDown,
        0x52 => ArrowUp,
        0x53 => NumpadLock,
        0x54 => NumpadDivide,
        0x55 => NumpadMultiply,
        0x56 => NumpadSubtract,
        0x57 => NumpadAdd,
        0x58 => NumpadEnter,
        0x59..=0x62 => PAD[usize::from(usage - 0x59)],
        0x63 => NumpadPeriod,
        // Non-US \ and | (the 102nd key).
        0x64 => Oem5,
        0x65 => Apps,
        0xE0..=0xE7 => MODIFIERS[usize::from(usage - 0xE0)],
        _ => return None,
    })
}

/// A boot keyboard's state: the last report taken and the decoder (modifiers, Num Lock).
pub struct Keyboard {
    last: BootReport,
    decoder: EventDecoder<Us104Key>,
}

impl Default for Keyboard {
    fn default() -> Self {
        Keyboard::new()
    }
}

impl Keyboard {
    /// No key down; the decoder the PS/2 path uses (US layout, Ctrl+letter as the control
    /// character).
    pub const fn new() -> Keyboard {
        Keyboard {
            last: BootReport {
                modifiers: 0,
                keys: [0; 6],
            },
            decoder: EventDecoder::new(Us104Key, HandleControl::MapLettersToUnicode),
        }
    }

    /// Takes one report and hands `out` the bytes of every key it presses
    /// ([`crate::keys::bytes`]). A report that is short or carries an error code changes
    /// nothing and comes back as the error.
    pub fn report(&mut self, bytes: &[u8], mut out: impl FnMut(&[u8])) -> Result<(), ReportError> {
        let new = BootReport::parse(bytes)?;
        let decoder = &mut self.decoder;
        diff(&self.last, &new, |event| {
            if let Some(key) = decoder.process_keyevent(event) {
                let mut buf = [0u8; 4];
                if let Some(b) = crate::keys::bytes(key, &mut buf) {
                    out(b);
                }
            }
        });
        self.last = new;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const SHIFT: u8 = 0x02;
    const CTRL: u8 = 0x01;

    fn report(modifiers: u8, keys: &[u8]) -> [u8; 8] {
        let mut r = [0u8; 8];
        r[0] = modifiers;
        r[2..2 + keys.len()].copy_from_slice(keys);
        r
    }

    /// Feeds reports, collecting the bytes.
    fn typed(reports: &[[u8; 8]]) -> Vec<u8> {
        let mut kb = Keyboard::new();
        let mut out = Vec::new();
        for r in reports {
            // A report with an error code is refused, and changes nothing.
            let _ = kb.report(r, |b| out.extend_from_slice(b));
        }
        out
    }

    #[test]
    fn letters_enter_and_backspace() {
        // m, e, x, Backspace, m, Enter: each pressed and released.
        let mut reports = Vec::new();
        for k in [0x10, 0x08, 0x1B, 0x2A, 0x10, 0x28] {
            reports.push(report(0, &[k]));
            reports.push(report(0, &[]));
        }
        assert_eq!(typed(&reports), b"mex\x08m\n");
    }

    #[test]
    fn shift_ctrl_and_navigation_keys() {
        let out = typed(&[
            report(SHIFT, &[]),
            report(SHIFT, &[0x1E]), // Shift+1
            report(0, &[]),
            report(SHIFT, &[0x04]), // Shift and A in one report: Shift applies
            report(0, &[]),
            report(CTRL, &[0x06]), // Ctrl-C
            report(CTRL, &[]),
            report(CTRL, &[0x18]), // Ctrl-U
            report(0, &[]),
            report(0, &[0x52]),       // Up
            report(0, &[0x50]),       // Left (Up released)
            report(0, &[0x4A, 0x4D]), // Home, End
            report(0, &[0x4C]),       // Delete
            report(0, &[]),
        ]);
        assert_eq!(out, b"!A\x03\x15\x1b[A\x1b[D\x1b[H\x1b[F\x1b[3~");
    }

    #[test]
    fn a_held_key_is_typed_once_and_rollover_changes_nothing() {
        let out = typed(&[
            report(0, &[0x04]),
            report(0, &[0x04]),
            report(0, &[1, 1, 1, 1, 1, 1]),
            report(0, &[0x04, 0x05]),
            report(0, &[]),
        ]);
        assert_eq!(out, b"ab");
        let mut kb = Keyboard::new();
        assert_eq!(
            kb.report(&report(0, &[1, 1, 1, 1, 1, 1]), |_| {}),
            Err(ReportError::Error(1))
        );
        assert_eq!(kb.report(&[0; 5], |_| {}), Err(ReportError::Short(5)));
    }

    #[test]
    fn diff_orders_releases_before_presses_and_counts_duplicates_once() {
        let old = BootReport::parse(&report(SHIFT, &[0x04, 0x05])).unwrap();
        let new = BootReport::parse(&report(CTRL, &[0x05, 0x06, 0x06])).unwrap();
        let mut events = Vec::new();
        diff(&old, &new, |e| events.push((e.code, e.state)));
        assert_eq!(
            events,
            [
                (KeyCode::LShift, KeyState::Up),
                (KeyCode::A, KeyState::Up),
                (KeyCode::LControl, KeyState::Down),
                (KeyCode::C, KeyState::Down),
            ]
        );
    }

    #[test]
    fn usage_table_spot_checks() {
        assert_eq!(key_code(0x04), Some(KeyCode::A));
        assert_eq!(key_code(0x1D), Some(KeyCode::Z));
        assert_eq!(key_code(0x1E), Some(KeyCode::Key1));
        assert_eq!(key_code(0x27), Some(KeyCode::Key0));
        assert_eq!(key_code(0x3A), Some(KeyCode::F1));
        assert_eq!(key_code(0x45), Some(KeyCode::F12));
        assert_eq!(key_code(0x59), Some(KeyCode::Numpad1));
        assert_eq!(key_code(0x62), Some(KeyCode::Numpad0));
        assert_eq!(key_code(0xE6), Some(KeyCode::RAltGr));
        assert_eq!(key_code(0x01), None);
        assert_eq!(key_code(0x68), None);
        // Every symbol key types its US character.
        let symbols: Vec<u8> = (0x2D..=0x38).filter(|&u| u != 0x32).collect();
        let mut reports = Vec::new();
        for u in symbols {
            reports.push(report(0, &[u]));
            reports.push(report(0, &[]));
        }
        assert_eq!(typed(&reports), b"-=[]\\;'`,./");
    }
}
