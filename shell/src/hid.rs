//! USB keyboards in the boot protocol: 8-byte reports in, the bytes a terminal would send out.
//!
//! A boot keyboard (Device Class Definition for HID 1.11, Appendix B.1) reports the state of
//! its keys, not key events: byte 0 holds the eight modifier keys as bits (Left Ctrl, Shift,
//! Alt, GUI, then the right ones), byte 1 is reserved, bytes 2 to 7 name up to six keys held
//! down by their usage ID on the Keyboard/Keypad page (HID Usage Tables 1.5, §10, page
//! 0x07). A report comes when the state changes (and, with an idle rate set, again every
//! idle period), so presses and releases are the difference between two consecutive
//! reports ([`diff`]). Usage IDs 0x01 to
//! 0x03 are error codes, not keys: a keyboard that sees more keys than it can report
//! (ErrorRollOver, 0x01 in every key slot) says so instead of naming keys, and such a report
//! changes nothing.
//!
//! The key events then go through the same decoder as the PS/2 keyboard's
//! (`pc_keyboard::EventDecoder`, US layout, Ctrl+letter as the control character) and the
//! same mapping to bytes ([`crate::keys::bytes`]), so Enter, Backspace, the arrows,
//! Home/End, Delete, Ctrl-C and Ctrl-U reach the line editor as they do from PS/2.
//!
//! USB keyboards do not repeat a held key by themselves (a PS/2 keyboard does); the host
//! does. Without a timer of its own, [`Keyboard::with_repeat`] counts on the keyboard's
//! idle rate (HID 1.11 §7.2.4): after `SET_IDLE` with a duration, the keyboard sends its
//! report again every idle period while nothing changes, so a run of identical reports that
//! holds a key says it is still held, and the time between them (measured by the driver,
//! [`Keyboard::report_after`], not assumed: a keyboard may resend far more often than it
//! was asked) adds up how long. The last key pressed (not a modifier or
//! a lock key) repeats once [`REPEAT_DELAY_MS`] has passed that way, then at about
//! [`REPEAT_RATE_HZ`], as a PS/2 keyboard's default typematic rate does. [`Keyboard::new`]
//! does not repeat (a keyboard that refused `SET_IDLE` sends a report only on a change, or
//! at its own default rate, which would make repeats come at the wrong pace).

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

/// How long a key is held before it repeats.
pub const REPEAT_DELAY_MS: u32 = 500;
/// Repeats a second, about, once a key repeats.
pub const REPEAT_RATE_HZ: u32 = 30;

/// Usages that never repeat: Caps Lock, Scroll Lock, Num Lock (a repeat would toggle them),
/// and the modifiers (0xE0 to 0xE7, which are not in the key slots anyway).
const NO_REPEAT: [u8; 3] = [0x39, 0x47, 0x53];

/// Typematic repeat timed by the reports' arrival: the reports that hold `key` unchanged
/// add up how long it has been held, and it repeats once that reaches `delay` periods, then
/// every `every` periods more.
///
/// The time is what the driver measured between reports when it can
/// ([`Keyboard::report_after`]), not a count of reports: a keyboard that accepts `SET_IDLE`
/// and then resends its report far more often (at each poll of its endpoint, every
/// millisecond) would otherwise repeat after 16 ms at a thousand a second, so that a short
/// press typed a burst of letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Repeat {
    /// The idle period, in microseconds.
    period_us: u64,
    delay: u32,
    every: u32,
    /// The key that would repeat (the last pressed, still held), how long it has been held
    /// since the last change, and the repeats typed since.
    key: Option<u8>,
    held_us: u64,
    repeats: u64,
}

impl Repeat {
    /// For reports every `period_ms` (the idle period): the delay and the rate in reports,
    /// at least one each.
    const fn new(period_ms: u32) -> Repeat {
        let period = if period_ms == 0 { 1 } else { period_ms };
        let delay = REPEAT_DELAY_MS.div_ceil(period);
        // Rounded to the nearest count of periods.
        let every = (1000 + period * REPEAT_RATE_HZ / 2) / (period * REPEAT_RATE_HZ);
        Repeat {
            period_us: period as u64 * 1000,
            delay: if delay == 0 { 1 } else { delay },
            every: if every == 0 { 1 } else { every },
            key: None,
            held_us: 0,
            repeats: 0,
        }
    }

    /// Takes a report that changed something: the newest key pressed in it (the last new
    /// usage in slot order) becomes the one to repeat, or, if none was pressed, the one
    /// repeating so far if still held. The time held starts again.
    fn changed(&mut self, old: &BootReport, new: &BootReport) {
        let pressed = new
            .keys
            .iter()
            .rev()
            .find(|&&k| k != 0 && !old.holds(k) && !NO_REPEAT.contains(&k))
            .copied();
        self.key = pressed.or(self.key.filter(|&k| new.holds(k)));
        self.held_us = 0;
        self.repeats = 0;
    }

    /// Takes a report identical to the last one, `elapsed_us` after it: the key to type
    /// again, if a repeat is due. One repeat a report at most, and none owed: after a gap,
    /// the repeats it would have held are skipped, not typed in a burst.
    fn same(&mut self, elapsed_us: u64) -> Option<u8> {
        let key = self.key?;
        self.held_us = self.held_us.saturating_add(elapsed_us);
        let at = |repeats: u64| {
            let periods = u64::from(self.delay) + repeats * u64::from(self.every);
            periods.saturating_mul(self.period_us)
        };
        // Half a period of slack: a report measured a little early is still on time.
        let held = self.held_us.saturating_add(self.period_us / 2);
        if held < at(self.repeats) {
            return None;
        }
        self.repeats += 1;
        while held >= at(self.repeats) && self.repeats < u64::from(u32::MAX) {
            self.repeats += 1;
        }
        Some(key)
    }
}

/// A boot keyboard's state: the last report taken, the decoder (modifiers, Num Lock) and,
/// if it repeats keys, the repeat's count.
pub struct Keyboard {
    last: BootReport,
    decoder: EventDecoder<Us104Key>,
    repeat: Option<Repeat>,
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
            repeat: None,
        }
    }

    /// As [`Keyboard::new`], and a held key repeats, for a keyboard that sends its report
    /// every `idle_ms` while nothing changes (`SET_IDLE` accepted with that period).
    pub const fn with_repeat(idle_ms: u32) -> Keyboard {
        let mut k = Keyboard::new();
        k.repeat = Some(Repeat::new(idle_ms));
        k
    }

    /// Takes one report and hands `out` the bytes of every key it presses
    /// ([`crate::keys::bytes`]). A report that is short or carries an error code changes
    /// nothing and comes back as the error. A report identical to the last is taken as
    /// coming one idle period after it (see [`Keyboard::report_after`]).
    pub fn report(&mut self, bytes: &[u8], out: impl FnMut(&[u8])) -> Result<(), ReportError> {
        self.report_after(bytes, None, out)
    }

    /// As [`Keyboard::report`], for a report that came `elapsed_us` after the previous one
    /// (`None`: one idle period, as the keyboard was asked): a held key repeats by the time
    /// it has been held, however often the keyboard actually resends its report.
    pub fn report_after(
        &mut self,
        bytes: &[u8],
        elapsed_us: Option<u64>,
        mut out: impl FnMut(&[u8]),
    ) -> Result<(), ReportError> {
        let new = BootReport::parse(bytes)?;
        let decoder = &mut self.decoder;
        let mut type_key = |event: KeyEvent, out: &mut dyn FnMut(&[u8])| {
            if let Some(key) = decoder.process_keyevent(event) {
                let mut buf = [0u8; 4];
                if let Some(b) = crate::keys::bytes(key, &mut buf) {
                    out(b);
                }
            }
        };
        if new == self.last {
            // Resent at the idle rate: a repeat, when one is due.
            let due = self
                .repeat
                .as_mut()
                .and_then(|r| r.same(elapsed_us.unwrap_or(r.period_us)));
            if let Some(code) = due.and_then(key_code) {
                type_key(
                    KeyEvent {
                        code,
                        state: KeyState::Down,
                    },
                    &mut out,
                );
            }
            return Ok(());
        }
        if let Some(r) = self.repeat.as_mut() {
            r.changed(&self.last, &new);
        }
        diff(&self.last, &new, |event| type_key(event, &mut out));
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

    /// Feeds `report` `n` times to `kb`; the bytes typed.
    fn feed(kb: &mut Keyboard, report: [u8; 8], n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            kb.report(&report, |b| out.extend_from_slice(b)).unwrap();
        }
        out
    }

    #[test]
    fn a_held_key_repeats_after_the_delay_at_the_idle_rate() {
        // Reports every 32 ms while nothing changes: 16 of them (512 ms) before the first
        // repeat, then one repeat a report (31 a second).
        let mut kb = Keyboard::with_repeat(32);
        assert_eq!(feed(&mut kb, report(0, &[0x04]), 1), b"a");
        assert_eq!(feed(&mut kb, report(0, &[0x04]), 15), b"");
        assert_eq!(feed(&mut kb, report(0, &[0x04]), 1), b"a");
        assert_eq!(feed(&mut kb, report(0, &[0x04]), 3), b"aaa");
        // Released: nothing repeats, however long the idle reports go on.
        assert_eq!(feed(&mut kb, report(0, &[]), 40), b"");
        // Shift held with the key: the repeats are shifted too.
        assert_eq!(feed(&mut kb, report(SHIFT, &[0x04]), 18), b"AAA");
        // A rollover report is refused and changes nothing, the count included.
        let mut kb = Keyboard::with_repeat(32);
        assert_eq!(feed(&mut kb, report(0, &[0x05]), 10), b"b");
        assert!(kb.report(&report(0, &[1, 1, 1, 1, 1, 1]), |_| {}).is_err());
        assert_eq!(feed(&mut kb, report(0, &[0x05]), 7), b"b");
    }

    #[test]
    fn the_last_key_pressed_repeats_and_lock_keys_do_not() {
        let mut kb = Keyboard::with_repeat(32);
        // a held, then b pressed too: b repeats, a does not.
        assert_eq!(feed(&mut kb, report(0, &[0x04]), 5), b"a");
        assert_eq!(feed(&mut kb, report(0, &[0x04, 0x05]), 17), b"bb");
        // b released with a still held: the repeat stops (as on a PC keyboard).
        assert_eq!(feed(&mut kb, report(0, &[0x04]), 40), b"");
        // Caps Lock held does not toggle over and over; a key pressed with it repeats.
        let mut kb = Keyboard::with_repeat(32);
        assert_eq!(feed(&mut kb, report(0, &[0x39]), 40), b"");
        assert_eq!(feed(&mut kb, report(0, &[0x39, 0x04]), 17), b"AA");
        // Without repeat (SET_IDLE refused), identical reports type nothing.
        let mut kb = Keyboard::new();
        assert_eq!(feed(&mut kb, report(0, &[0x04]), 100), b"a");
    }

    /// Feeds `report` `n` times to `kb`, each `us` after the last; the bytes typed.
    fn feed_every(kb: &mut Keyboard, report: [u8; 8], n: usize, us: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            kb.report_after(&report, Some(us), |b| out.extend_from_slice(b))
                .unwrap();
        }
        out
    }

    #[test]
    fn a_keyboard_resending_faster_than_its_idle_rate_repeats_by_time() {
        // It accepted SET_IDLE(32 ms) but resends its report every millisecond: a key held
        // for 100 ms is typed once, not 85 times.
        let mut kb = Keyboard::with_repeat(32);
        assert_eq!(feed_every(&mut kb, report(0, &[0x04]), 1, 1000), b"a");
        assert_eq!(feed_every(&mut kb, report(0, &[0x04]), 100, 1000), b"");
        // Held for a second in all: repeats from half a second on, at about 31 a second.
        let typed = feed_every(&mut kb, report(0, &[0x04]), 900, 1000);
        assert!((14..=17).contains(&typed.len()), "{} repeats", typed.len());
        // Reports on time, measured with some jitter (MFINDEX, interrupt moderation): as
        // with the nominal period.
        let mut kb = Keyboard::with_repeat(32);
        assert_eq!(feed_every(&mut kb, report(0, &[0x05]), 1, 31_500), b"b");
        assert_eq!(feed_every(&mut kb, report(0, &[0x05]), 15, 31_500), b"");
        assert_eq!(feed_every(&mut kb, report(0, &[0x05]), 3, 31_500), b"bbb");
        // A report after a long gap types one repeat, not the gap's worth.
        assert_eq!(feed_every(&mut kb, report(0, &[0x05]), 1, 2_000_000), b"b");
        assert_eq!(feed_every(&mut kb, report(0, &[0x05]), 1, 1000), b"");
        // Reports that measure no time (a clock standing still) never repeat.
        let mut kb = Keyboard::with_repeat(32);
        assert_eq!(feed_every(&mut kb, report(0, &[0x06]), 1000, 0), b"c");
    }

    #[test]
    fn repeat_counts_follow_the_idle_period() {
        let r = Repeat::new(32);
        assert_eq!((r.delay, r.every), (16, 1));
        // 8 ms: 63 reports of delay, a repeat every 4 reports (31 a second).
        let r = Repeat::new(8);
        assert_eq!((r.delay, r.every), (63, 4));
        // A period longer than the delay: the first identical report repeats.
        let r = Repeat::new(1020);
        assert_eq!((r.delay, r.every), (1, 1));
        // 0 (no idle rate): no division by zero.
        let r = Repeat::new(0);
        assert_eq!((r.delay, r.every), (500, 33));
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
