//! Where input devices' bytes go. Drivers cannot call the kernel, so the kernel gives them a
//! sink at start-up ([`set_sink`]: its console input queue) and an input driver (the xHCI
//! keyboard) hands its bytes to [`push`], from its interrupt handler. The sink must take
//! bytes from interrupt context without waiting on anything the interrupted code may hold
//! (the kernel's queue is taken with interrupts off).
//!
//! Bytes pushed before a sink is set are dropped and counted ([`dropped`]).

use core::sync::atomic::{AtomicU64, Ordering};

static SINK: spin::Once<fn(&[u8])> = spin::Once::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

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
