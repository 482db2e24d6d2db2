//! Where input devices' bytes go. Drivers cannot call the kernel, so the kernel gives them a
//! sink at start-up ([`set_sink`]: its console input queue) and an input driver (the xHCI
//! keyboard) hands its bytes to [`push`], from its interrupt handler. The sink must take
//! bytes from interrupt context without waiting on anything the interrupted code may hold
//! (the kernel's queue is taken with interrupts off).
//!
//! Bytes pushed before a sink is set are dropped and counted ([`dropped`]).
//!
//! A driver that can type also holds a [`Presence`] while its keyboard is usable, so that
//! the kernel knows someone can type at its console ([`keyboards`]) on a board without COM1
//! or a PS/2 controller, where the USB keyboard is the only way in.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

static SINK: spin::Once<fn(&[u8])> = spin::Once::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);
static KEYBOARDS: AtomicUsize = AtomicUsize::new(0);

/// One keyboard that can type into [`push`], counted in [`keyboards`] while it lives.
///
/// Owned by the driver's state for as long as its keyboard works (the xHCI driver's, from
/// the keyboard's configuration to unbinding). `Drop` takes it out of the count. A leaked
/// one (`mem::forget`) leaves the count one too high: the console then waits for a keyboard
/// that is gone instead of saying nobody can type, and nothing else depends on it.
#[derive(Debug)]
pub struct Presence {
    _private: (),
}

impl Presence {
    /// Counts one more keyboard.
    pub fn new() -> Presence {
        KEYBOARDS.fetch_add(1, Ordering::AcqRel);
        Presence { _private: () }
    }
}

impl Default for Presence {
    fn default() -> Self {
        Presence::new()
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        KEYBOARDS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keyboards bound by drivers now (their [`Presence`] tokens).
pub fn keyboards() -> usize {
    KEYBOARDS.load(Ordering::Acquire)
}

/// Sets where input goes; the first call wins (the kernel calls it once, at start-up).
pub fn set_sink(sink: fn(&[u8])) {
    SINK.call_once(|| sink);
}

/// Hands `bytes` to the sink; without one they are dropped and counted.
pub fn push(bytes: &[u8]) {
    match SINK.get() {
        Some(sink) => sink(bytes),
        None => {
            DROPPED.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Bytes dropped because no sink was set.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_counts_while_it_lives() {
        let before = keyboards();
        let a = Presence::new();
        let b = Presence::default();
        assert_eq!(keyboards(), before + 2);
        drop(a);
        assert_eq!(keyboards(), before + 1);
        drop(b);
        assert_eq!(keyboards(), before);
    }
}
