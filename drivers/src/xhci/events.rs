//! The interrupt handler's side: interrupter 0's event ring, and the keyboard whose reports
//! it turns into console input.
//!
//! The handler owns the [`EventRing`] (moved into it at bind) and, once the keyboard is
//! configured, its [`KeyboardPipe`] (handed over through a lock the handler only tries, so
//! it never waits on code it interrupted). On each interrupt it acknowledges (USBSTS.EINT,
//! then IMAN.IP, §4.17.5), takes at most one ring's worth of events (a flood cannot keep
//! it), and writes ERDP with EHB cleared (§4.17.2): if events remain the controller
//! interrupts again, after the moderation interval (IMOD, 1 ms), so a controller that
//! floods the ring costs at most a thousand short handler runs a second.
//!
//! - A transfer event for the keyboard's endpoint carries a report: it is decoded
//!   (`shell::hid`), the bytes go to [`crate::input`], and the next report is queued and
//!   the endpoint's doorbell rung. An error completion (stall, transaction error) stops the
//!   keyboard, and `drivers` says why; rebinding starts it again.
//! - Command completions and other transfer events go to the [`Mailbox`] for the code that
//!   waits for them (bring-up, enumeration, the self test).
//! - Port status changes and host controller events (event ring full) are counted.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use pci::window::DmaBuffer;

use super::controller::Registers;
use super::registers::{
    ERDP, ERDP_EHB, IMAN, IMAN_IE, IMAN_IP, MFINDEX, MFINDEX_MASK, STS_EINT, USBSTS,
};
use super::rings::{EventRing, Mailbox, RING_TRBS, Ring, low};
use super::trb::{self, Event, Trb, kind};

/// Counters and the mailbox, shared by the handler and the driver state.
pub(super) struct Shared {
    pub mailbox: Mailbox,
    pub interrupts: AtomicU64,
    pub events: AtomicU64,
    pub port_changes: AtomicU64,
    /// Host Controller events (§6.4.2.6), such as Event Ring Full.
    pub host_events: AtomicU64,
    pub reports: AtomicU64,
    /// Reports refused: short, or an error code such as ErrorRollOver.
    pub refused: AtomicU64,
    /// Bytes delivered to the console.
    pub bytes: AtomicU64,
    /// The completion code that stopped the keyboard (0: running).
    pub stopped: AtomicU8,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            mailbox: Mailbox::new(),
            interrupts: AtomicU64::new(0),
            events: AtomicU64::new(0),
            port_changes: AtomicU64::new(0),
            host_events: AtomicU64::new(0),
            reports: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            stopped: AtomicU8::new(0),
        }
    }
}

/// The keyboard's interrupt IN endpoint: its transfer ring, the buffer a report lands in,
/// and the decoder. Owned by the handler once configured; dropped with it (after the
/// controller halted, see `controller`), which frees the ring and the buffer.
pub(super) struct KeyboardPipe {
    pub slot: u8,
    pub dci: u8,
    pub ring: Ring,
    pub report: DmaBuffer,
    /// Bytes asked for per transfer (the endpoint's max packet size, at most 64).
    pub length: u16,
    pub decoder: shell::hid::Keyboard,
    /// The low dword of the queued report transfer's TRB address, which its event names.
    pub pending: Option<u32>,
    /// MFINDEX when the last report was taken: the time between reports, by which a held
    /// key repeats (`shell::hid::Keyboard::report_after`), whatever pace the keyboard
    /// keeps.
    pub last_mfindex: Option<u32>,
}

impl KeyboardPipe {
    /// Queues one report transfer (the doorbell is rung by the caller).
    pub fn queue(&mut self) {
        let at = self.ring.push(
            trb::normal(u32::from(self.length)),
            Some(self.report.bus_address()),
        );
        self.pending = Some(at);
    }

    /// Whether `e` completes the report transfer queued. Only that event queues the next
    /// one: an event for this endpoint naming another TRB (stale, or made up by a controller
    /// that misbehaves) would otherwise queue a transfer each time, until the producer laps
    /// TRBs the controller still owns.
    pub fn takes(&self, e: &Event) -> bool {
        e.slot == self.slot && e.endpoint == self.dci && self.pending == Some(e.pointer_low())
    }

    fn complete(&mut self, e: &Event, regs: &Registers, shared: &Shared) {
        self.pending = None;
        if !e.ok() {
            // The endpoint halted (§4.10.2): nothing is queued again until a rebind.
            shared.stopped.store(e.code.max(1), Ordering::Relaxed);
            return;
        }
        let got = u32::from(self.length).saturating_sub(e.residual).min(64) as usize;
        let mut bytes = [0u8; 64];
        self.report.read_bytes(0, &mut bytes[..got]);
        shared.reports.fetch_add(1, Ordering::Relaxed);
        let now = regs.runtime.read32(MFINDEX) & MFINDEX_MASK;
        let elapsed = self.last_mfindex.map(|then| mfindex_us(then, now));
        self.last_mfindex = Some(now);
        let result = self.decoder.report_after(&bytes[..got], elapsed, |b| {
            shared.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
            crate::input::push(b);
        });
        if result.is_err() {
            shared.refused.fetch_add(1, Ordering::Relaxed);
        }
        self.queue();
        regs.ring(self.slot, self.dci);
    }
}

/// Microseconds from MFINDEX `then` to `now` (125 µs a count, modulo its 2.048 s wrap: a
/// longer gap reads short, which only delays a repeat).
fn mfindex_us(then: u32, now: u32) -> u64 {
    u64::from(now.wrapping_sub(then) & MFINDEX_MASK) * 125
}

/// What the interrupt handler owns (moved into its closure).
pub(super) struct Interrupter {
    pub regs: Arc<Registers>,
    pub ring: EventRing,
    pub shared: Arc<Shared>,
    pub handoff: Arc<spin::Mutex<Option<KeyboardPipe>>>,
    pub keyboard: Option<KeyboardPipe>,
    /// INTx: the line may be shared, so an interrupt without IMAN.IP is someone else's.
    pub intx: bool,
}

impl Interrupter {
    pub fn on_interrupt(&mut self) {
        let iman = self.regs.runtime.read32(IMAN);
        if self.intx && iman & IMAN_IP == 0 {
            return;
        }
        self.shared.interrupts.fetch_add(1, Ordering::Relaxed);
        self.regs.write_op(USBSTS, STS_EINT);
        self.regs.runtime.write32(IMAN, IMAN_IE | IMAN_IP);
        let mut taken = 0;
        while taken < RING_TRBS {
            let Some(t) = self.ring.pop() else { break };
            taken += 1;
            self.dispatch(t);
        }
        self.shared
            .events
            .fetch_add(u64::from(taken), Ordering::Relaxed);
        let dequeue = self.ring.dequeue();
        self.regs.runtime.write_bus_address(ERDP, dequeue);
        self.regs.runtime.write32(ERDP, low(dequeue) | ERDP_EHB);
    }

    fn dispatch(&mut self, t: Trb) {
        let e = Event::decode(t);
        match e.kind {
            kind::TRANSFER_EVENT => {
                if self.keyboard.is_none()
                    && let Some(mut handed) = self.handoff.try_lock()
                {
                    self.keyboard = handed.take();
                }
                match &mut self.keyboard {
                    Some(k) if k.takes(&e) => k.complete(&e, &self.regs, &self.shared),
                    _ => self.shared.mailbox.put(t),
                }
            }
            kind::COMMAND_COMPLETION => self.shared.mailbox.put(t),
            kind::PORT_STATUS_CHANGE => {
                self.shared.port_changes.fetch_add(1, Ordering::Relaxed);
            }
            kind::HOST_CONTROLLER => {
                self.shared.host_events.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_between_reports_by_mfindex() {
        assert_eq!(mfindex_us(100, 356), 256 * 125);
        // Across the wrap at 0x3fff: 32 ms is 256 counts.
        assert_eq!(mfindex_us(0x3f80, 0x80), 32_000);
        // Bits above 13 (reserved) do not count.
        assert_eq!(mfindex_us(0, 0x4000 | 8), 1000);
    }

    fn transfer(slot: u8, dci: u8, pointer: u32) -> Event {
        Event::decode([
            pointer,
            0,
            u32::from(trb::code::SUCCESS) << 24,
            u32::from(slot) << 24 | u32::from(dci) << 16 | kind::TRANSFER_EVENT << 10 | 1,
        ])
    }

    #[test]
    fn only_the_queued_report_transfer_completes_the_keyboard_pipe() {
        let function = pci::fake::irq::function_with_msix(1);
        let master = function.bus_master();
        let mut pipe = KeyboardPipe {
            slot: 2,
            dci: 3,
            ring: Ring::new(&master, true, "keyboard").unwrap(),
            report: master.dma_buffer(64).unwrap(),
            length: 8,
            decoder: shell::hid::Keyboard::new(),
            pending: None,
            last_mfindex: None,
        };
        // Nothing queued: no event is the keyboard's.
        assert!(!pipe.takes(&transfer(2, 3, 0)));
        pipe.queue();
        let at = pipe.pending.unwrap();
        assert!(pipe.takes(&transfer(2, 3, at)));
        // Another TRB of the ring (the previous report's, or one never queued), another
        // endpoint or slot: not the report, so no transfer is queued for it.
        assert!(!pipe.takes(&transfer(2, 3, at.wrapping_add(16))));
        assert!(!pipe.takes(&transfer(2, 3, at.wrapping_sub(16))));
        assert!(!pipe.takes(&transfer(2, 5, at)));
        assert!(!pipe.takes(&transfer(1, 3, at)));
    }
}
