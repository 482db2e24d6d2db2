//! The rings (xHCI 1.2 §4.9): the command ring and the transfer rings, which the driver
//! fills and the controller consumes, and the event ring, which the controller fills and the
//! driver consumes.
//!
//! Ownership of a TRB goes with its cycle bit (§4.9.2): the producer writes TRBs with its
//! Producer Cycle State and the consumer takes those whose cycle bit equals its Consumer
//! Cycle State. Every ring here is one 4 KiB page of 256 TRBs.
//!
//! - A producer ring (command, transfer) ends in a Link TRB back to its start with Toggle
//!   Cycle set (§4.11.5.1): passing it flips the producer's cycle, so TRBs of the previous
//!   lap read as not yet written. The link's own cycle bit is written, like any TRB's, when
//!   the producer reaches it. At most 254 TRBs may be outstanding; the driver keeps one
//!   command, one control transfer (three TRBs) and one keyboard report in flight.
//! - The event ring is one segment described by a one-entry Event Ring Segment Table
//!   (§6.5). It has no link TRB: the consumer wraps at the segment's end and flips its
//!   cycle; the controller learns how far the driver got from ERDP (§5.5.2.3.3).
//!
//! The cursor logic ([`Producer`], [`Consumer`]) is plain arithmetic, host-tested; the rings
//! write and read [`DmaBuffer`]s.
//!
//! Who owns them: [`Ring`]s belong to the driver state (the command ring, the control
//! endpoints' rings) or to the interrupt handler (the keyboard's transfer ring); the
//! [`EventRing`] belongs to the handler. Dropping one frees its page, or quarantines it
//! while the function may still master the bus ([`DmaBuffer`]); the driver halts the
//! controller before any ring drops (`controller`). A leak costs the page.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use pci::dma::BusAddr;
use pci::function::BusMaster;
use pci::window::DmaBuffer;

use super::trb::{self, CYCLE, Trb};

/// TRBs per ring (one page).
pub(super) const RING_TRBS: u16 = 256;
/// Bytes of a ring.
const RING_BYTES: u64 = RING_TRBS as u64 * 16;

/// The first bus address a controller without 64-bit addressing cannot reach.
const LIMIT_32: u64 = 1 << 32;

/// A zeroed DMA buffer of `bytes` bytes for the controller (`what` names it in errors). A
/// controller without 64-bit addressing (HCCPARAMS1.AC64 = 0, §5.3.6) ignores the upper dword
/// of every pointer it is given, so it would read and write a buffer above 4 GiB at its
/// address modulo 4 GiB, memory that is not its own: such a buffer is refused.
pub(super) fn dma(
    master: &BusMaster,
    ac64: bool,
    bytes: u64,
    what: &str,
) -> Result<DmaBuffer, String> {
    let buf = master
        .dma_buffer(bytes)
        .map_err(|e| format!("{what}: {e}"))?;
    reachable(&buf, ac64, LIMIT_32).map_err(|e| format!("{what}: {e}"))?;
    Ok(buf)
}

/// Whether the controller reaches every byte of `buf`: with AC64 it does, without it the
/// buffer must end below `limit`.
fn reachable(buf: &DmaBuffer, ac64: bool, limit: u64) -> Result<(), String> {
    let last = buf.bus_address_at(buf.len().saturating_sub(1));
    if ac64 || last.is_below(limit) {
        Ok(())
    } else {
        Err(format!(
            "DMA memory at {:#x} lies above {limit:#x}, which a controller without 64-bit addressing (AC64) cannot reach",
            buf.bus_address()
        ))
    }
}

/// A producer's place in a ring whose last entry is a Link TRB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Producer {
    index: u16,
    cycle: bool,
    len: u16,
}

/// Where one TRB goes: its index, the cycle bit to write, and, when the next index is the
/// Link TRB, the cycle bit to give the link (the producer then continues at 0 with the other
/// cycle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Step {
    pub at: u16,
    pub cycle: bool,
    pub link: Option<bool>,
}

impl Producer {
    /// A fresh ring of `len` entries (the last one the link): start at 0 with cycle 1.
    pub fn new(len: u16) -> Producer {
        assert!(len >= 2, "a ring needs a TRB and its link");
        Producer {
            index: 0,
            cycle: true,
            len,
        }
    }

    /// Takes the next entry.
    pub fn advance(&mut self) -> Step {
        let step = Step {
            at: self.index,
            cycle: self.cycle,
            link: None,
        };
        self.index += 1;
        if self.index == self.len - 1 {
            self.index = 0;
            self.cycle = !self.cycle;
            return Step {
                link: Some(step.cycle),
                ..step
            };
        }
        step
    }

    /// The next entry's index and the cycle it will carry (a dequeue pointer's DCS).
    pub fn position(&self) -> (u16, bool) {
        (self.index, self.cycle)
    }
}

/// A consumer's place in the event ring (no link TRB: it wraps at `len`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Consumer {
    index: u16,
    cycle: bool,
    len: u16,
}

impl Consumer {
    pub fn new(len: u16) -> Consumer {
        Consumer {
            index: 0,
            cycle: true,
            len,
        }
    }

    /// Whether the entry at the cursor, whose dword 3 is `dw3`, was written for this lap.
    pub fn owns(&self, dw3: u32) -> bool {
        (dw3 & CYCLE != 0) == self.cycle
    }

    pub fn index(&self) -> u16 {
        self.index
    }

    pub fn advance(&mut self) {
        self.index += 1;
        if self.index == self.len {
            self.index = 0;
            self.cycle = !self.cycle;
        }
    }
}

/// A command or transfer ring: one page of TRBs ending in a Link TRB to its start.
pub(super) struct Ring {
    buf: DmaBuffer,
    producer: Producer,
}

impl Ring {
    pub fn new(master: &BusMaster, ac64: bool, what: &str) -> Result<Ring, String> {
        let buf = dma(master, ac64, RING_BYTES, &format!("{what} ring"))?;
        // §6.5: ring segments are 64-byte aligned (and must not cross 64 KiB; a page does not).
        if !buf.bus_address().is_aligned(64) {
            return Err(format!("{what} ring: DMA memory not 64-byte aligned"));
        }
        let last = u64::from(RING_TRBS - 1) * 16;
        let link = trb::link();
        buf.write_bus_address(last, buf.bus_address());
        buf.write32(last + 8, link[2]);
        // Cycle 0: not the controller's until the producer reaches it on the first lap.
        buf.write32(last + 12, link[3]);
        Ok(Ring {
            buf,
            producer: Producer::new(RING_TRBS),
        })
    }

    /// The ring's start (CRCR, an endpoint's first TR Dequeue Pointer).
    pub fn start(&self) -> BusAddr<'_> {
        self.buf.bus_address()
    }

    /// The next TRB's address and cycle: where the controller continues after a Set TR
    /// Dequeue Pointer command.
    pub fn enqueue(&self) -> (BusAddr<'_>, bool) {
        let (index, cycle) = self.producer.position();
        (self.buf.bus_address_at(u64::from(index) * 16), cycle)
    }

    /// Writes `t` (with `pointer` as its dwords 0-1 when given, `t[0]`'s bits ORed into
    /// the low dword: a dequeue pointer's DCS) at the enqueue position, the cycle bit last;
    /// returns the low dword of its bus address, which events name.
    pub fn push(&mut self, t: Trb, pointer: Option<BusAddr<'_>>) -> u32 {
        let step = self.producer.advance();
        let at = u64::from(step.at) * 16;
        match pointer {
            Some(p) => {
                self.buf.write_bus_address(at, p);
                if t[0] != 0 {
                    self.buf.write32(at, low(p) | t[0]);
                }
            }
            None => {
                self.buf.write32(at, t[0]);
                self.buf.write32(at + 4, t[1]);
            }
        }
        self.buf.write32(at + 8, t[2]);
        self.buf
            .write32(at + 12, t[3] & !CYCLE | u32::from(step.cycle));
        if let Some(cycle) = step.link {
            let last = u64::from(RING_TRBS - 1) * 16;
            self.buf
                .write32(last + 12, trb::link()[3] | u32::from(cycle));
        }
        low(self.buf.bus_address_at(at))
    }
}

/// The low dword of a bus address: what registers whose low bits carry flags (CRCR.RCS,
/// ERDP.EHB, a dequeue pointer's DCS) are rewritten with, and what events name a TRB by.
pub(super) fn low(address: BusAddr<'_>) -> u32 {
    address.offset_in(1 << 32) as u32
}

/// The event ring and its one-entry segment table.
pub(super) struct EventRing {
    segment: DmaBuffer,
    table: DmaBuffer,
    consumer: Consumer,
}

impl EventRing {
    pub fn new(master: &BusMaster, ac64: bool) -> Result<EventRing, String> {
        let segment = dma(master, ac64, RING_BYTES, "event ring")?;
        let table = dma(master, ac64, 64, "event ring segment table")?;
        if !segment.bus_address().is_aligned(64) || !table.bus_address().is_aligned(64) {
            return Err("event ring: DMA memory not 64-byte aligned".into());
        }
        // ERST entry (§6.5): base address, then the segment's size in TRBs.
        table.write_bus_address(0, segment.bus_address());
        table.write32(8, u32::from(RING_TRBS));
        table.write32(12, 0);
        Ok(EventRing {
            segment,
            table,
            consumer: Consumer::new(RING_TRBS),
        })
    }

    pub fn table(&self) -> BusAddr<'_> {
        self.table.bus_address()
    }

    /// Where the driver is: ERDP's value.
    pub fn dequeue(&self) -> BusAddr<'_> {
        self.segment
            .bus_address_at(u64::from(self.consumer.index()) * 16)
    }

    /// The next event, if the controller wrote one.
    pub fn pop(&mut self) -> Option<Trb> {
        let at = u64::from(self.consumer.index()) * 16;
        let dw3 = self.segment.read32(at + 12);
        if !self.consumer.owns(dw3) {
            return None;
        }
        let t = [
            self.segment.read32(at),
            self.segment.read32(at + 4),
            self.segment.read32(at + 8),
            dw3,
        ];
        self.consumer.advance();
        Some(t)
    }
}

/// Events the interrupt handler passes to the code waiting for them (command completions,
/// control transfers): a single-producer, single-consumer queue of TRBs in atomics, so the
/// handler never waits for a lock the interrupted code may hold. When it is full an event is
/// dropped and counted; the waiting code then times out and says so.
pub(super) struct Mailbox {
    entries: [[AtomicU32; 4]; MAILBOX_LEN],
    /// Events taken (consumer).
    head: AtomicUsize,
    /// Events put (producer).
    tail: AtomicUsize,
    /// Events dropped because the mailbox was full.
    pub lost: AtomicU64,
}

const MAILBOX_LEN: usize = 32;

impl Mailbox {
    pub fn new() -> Mailbox {
        Mailbox {
            entries: core::array::from_fn(|_| core::array::from_fn(|_| AtomicU32::new(0))),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
        }
    }

    /// Producer side (the handler).
    pub fn put(&self, t: Trb) {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        if tail.wrapping_sub(head) >= MAILBOX_LEN {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for (slot, value) in self.entries[tail % MAILBOX_LEN].iter().zip(t) {
            slot.store(value, Ordering::Relaxed);
        }
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
    }

    /// Consumer side (the waiting code).
    pub fn take(&self) -> Option<Trb> {
        let head = self.head.load(Ordering::Relaxed);
        if head == self.tail.load(Ordering::Acquire) {
            return None;
        }
        let e = &self.entries[head % MAILBOX_LEN];
        let t = [0, 1, 2, 3].map(|i| e[i].load(Ordering::Relaxed));
        self.head.store(head.wrapping_add(1), Ordering::Release);
        Some(t)
    }

    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed) == self.tail.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_passes_the_link_and_toggles() {
        let mut p = Producer::new(4);
        // Entries 0, 1, 2; 3 is the link.
        assert_eq!(
            p.advance(),
            Step {
                at: 0,
                cycle: true,
                link: None
            }
        );
        assert_eq!(p.advance().at, 1);
        // After entry 2 comes the link: it gets this lap's cycle, and the next lap starts at 0
        // with the cycle flipped.
        assert_eq!(
            p.advance(),
            Step {
                at: 2,
                cycle: true,
                link: Some(true)
            }
        );
        assert_eq!(p.position(), (0, false));
        let second: Vec<Step> = (0..3).map(|_| p.advance()).collect();
        assert!(second.iter().all(|s| !s.cycle));
        assert_eq!(second[2].link, Some(false));
        assert_eq!(p.position(), (0, true));
    }

    #[test]
    fn consumer_wraps_and_flips() {
        let mut c = Consumer::new(3);
        assert!(c.owns(1) && !c.owns(0));
        for _ in 0..3 {
            c.advance();
        }
        assert_eq!(c.index(), 0);
        // Second lap: entries with cycle 0 are new, the stale ones with cycle 1 are not.
        assert!(c.owns(0x8000) && !c.owns(0x8001));
    }

    #[test]
    fn buffers_a_32_bit_controller_cannot_reach_are_refused() {
        let function = pci::fake::irq::function_with_msix(1);
        let master = function.bus_master();
        let buf = master.dma_buffer(4096).unwrap();
        // The fake's bus addresses start at 256 MiB, below 4 GiB: a limit at 256 MiB plays
        // the part of 4 GiB for a buffer above it.
        assert!(reachable(&buf, false, LIMIT_32).is_ok());
        assert!(reachable(&buf, true, 0x1000_0000).is_ok());
        assert!(
            reachable(&buf, false, 0x1000_0000)
                .unwrap_err()
                .contains("AC64")
        );
        assert!(dma(&master, false, 64, "report").is_ok());
    }

    #[test]
    fn mailbox_is_fifo_and_counts_what_it_drops() {
        let m = Mailbox::new();
        assert!(m.take().is_none());
        for i in 0..MAILBOX_LEN as u32 + 3 {
            m.put([i, 0, 0, 0]);
        }
        assert_eq!(m.lost.load(Ordering::Relaxed), 3);
        for i in 0..MAILBOX_LEN as u32 {
            assert_eq!(m.take(), Some([i, 0, 0, 0]));
        }
        assert!(m.is_empty());
        m.put([7, 7, 7, 7]);
        assert_eq!(m.take(), Some([7; 4]));
    }
}
