//! The 8254 PIT as a reference counter (Intel 8254 data sheet; IBM PC/AT port map).
//!
//! Design: channel 0 is put in mode 2 (rate generator) with a reload value of 0, i.e.
//! 65536, so it counts down at 1.193182 MHz and wraps every 54.9 ms, the same period the
//! firmware leaves it at; it is read with the counter-latch command, which freezes the count
//! for a consistent low/high byte pair. Channel 0 needs no gate, unlike channel 2, whose gate
//! is port 0x61 bit 0: machines without that port (QEMU's `microvm`) leave channel 2 stopped
//! while a read of port 0x61 returns all ones, which made the old channel 2 method end its
//! wait at once. Interrupts are off when this runs and IRQ 0 is not routed to a handler.

use timekeeping::counter::Counter;
use x86_64::instructions::port::Port;

use super::measure::Reference;

/// Channel 0 data port.
const CHANNEL0: u16 = 0x40;
/// Mode/command port.
const COMMAND: u16 = 0x43;
/// Channel 0, low then high byte, mode 2, binary.
const CH0_LOHI_MODE2: u8 = 0b0011_0100;
/// Channel 0 counter latch.
const CH0_LATCH: u8 = 0b0000_0000;

/// PIT channel 0, free-running.
pub struct Pit(());

impl Pit {
    /// Programs channel 0 as a free-running down counter.
    pub fn start() -> Self {
        // SAFETY: the PIT's command and channel 0 ports; channel 0 only feeds IRQ 0, which
        // is masked during boot, and mode 2 with reload 65536 keeps its usual 18.2 Hz rate.
        unsafe { Port::<u8>::new(COMMAND).write(CH0_LOHI_MODE2) };
        for _ in 0..2 {
            // SAFETY: as above; the low then high byte of the reload value 0 (65536).
            unsafe { Port::<u8>::new(CHANNEL0).write(0) };
        }
        Pit(())
    }

    /// Channel 0 as [`Pit::start`] left it (no reprogramming).
    pub fn running() -> Self {
        Pit(())
    }
}

impl Reference for Pit {
    fn counter(&self) -> Counter {
        Counter::pit()
    }

    fn read(&self) -> u64 {
        // SAFETY: the counter-latch command for channel 0; it only freezes the read-back.
        unsafe { Port::<u8>::new(COMMAND).write(CH0_LATCH) };
        // SAFETY: reads the latched low byte of channel 0; no other effect.
        let lo = unsafe { Port::<u8>::new(CHANNEL0).read() };
        // SAFETY: reads the latched high byte, which releases the latch.
        let hi = unsafe { Port::<u8>::new(CHANNEL0).read() };
        u64::from(u16::from_le_bytes([lo, hi]))
    }
}
