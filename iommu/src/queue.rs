//! Queued invalidation (VT-d §6.5.2): the descriptors and one unit's queue.
//!
//! Design note. Register-based invalidation (the CCMD and IOTLB registers) reaches the
//! context cache and the IOTLB, but not the interrupt entry cache: a changed interrupt
//! remapping entry is forgotten only through an *interrupt entry cache invalidation
//! descriptor* in the invalidation queue (§6.5.2.7). So a unit that remaps interrupts runs
//! every invalidation through its queue (register-based invalidation must not be used
//! while the queue is on, §6.5.2).
//!
//! The queue here is one 4 KiB page of 256 128-bit descriptors. Each [`Queue::submit`] writes
//! its descriptors at the tail, then an *invalidation wait descriptor* (§6.5.2.8) that makes
//! the unit write a status value (a new one for each submission) into memory once
//! everything before it is done, moves the
//! tail (IQT) and waits, bounded, for that status. Every submission waits for its own
//! completion, so the queue is empty between submissions and never wraps onto descriptors
//! the unit has not fetched.

use crate::memory::TableMemory;
use crate::regs::*;
use crate::unit::{POLLS, Registers, UnitError};

/// Descriptors one page holds (16 bytes each).
pub const SLOTS: u64 = 256;

/// Descriptor types (bits 3:0 of the low qword).
const TYPE_CONTEXT: u64 = 0x1;
const TYPE_IOTLB: u64 = 0x2;
const TYPE_IEC: u64 = 0x4;
const TYPE_WAIT: u64 = 0x5;

/// Context-cache invalidation, global (§6.5.2.1: G = 01b).
pub fn context_global() -> [u64; 2] {
    [TYPE_CONTEXT | 1 << 4, 0]
}

/// IOTLB invalidation (§6.5.2.3): of one domain (G = 10b, DID in 31:16) or global
/// (G = 01b); `drain_reads` / `drain_writes` set DR (7) / DW (6).
pub fn iotlb(domain: Option<u16>, drain_reads: bool, drain_writes: bool) -> [u64; 2] {
    let mut low = TYPE_IOTLB;
    low |= match domain {
        Some(did) => 2 << 4 | u64::from(did) << 16,
        None => 1 << 4,
    };
    if drain_reads {
        low |= 1 << 7;
    }
    if drain_writes {
        low |= 1 << 6;
    }
    [low, 0]
}

/// Interrupt entry cache invalidation (§6.5.2.7): of entry `index` (G = 1, IIDX in 47:32,
/// IM = 0: one entry) or of every entry (G = 0).
pub fn interrupt_entries(index: Option<u16>) -> [u64; 2] {
    match index {
        Some(i) => [TYPE_IEC | 1 << 4 | u64::from(i) << 32, 0],
        None => [TYPE_IEC, 0],
    }
}

/// Invalidation wait (§6.5.2.8): SW (5) makes the unit write `data` (63:32) to `status`
/// (high qword, 63:2); FN (6) fences it behind every earlier descriptor.
pub fn wait(status: u64, data: u32) -> [u64; 2] {
    [
        TYPE_WAIT | 1 << 5 | 1 << 6 | u64::from(data) << 32,
        status & !0x3,
    ]
}

/// One unit's invalidation queue: its page, the qword its wait descriptors write, and the
/// next slot to fill.
///
/// # Invariants
/// `page` and `status` are pages of the remapper's [`TableMemory`], alive while the unit's
/// queue is on; `tail` is the slot after the last descriptor submitted (IQT / 16);
/// `sequence` is the status value of the last submission (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    pub page: u64,
    pub status: u64,
    pub tail: u64,
    pub sequence: u32,
}

impl Queue {
    /// Programs the queue's address (IQA, one page, 128-bit descriptors) with its tail at 0
    /// (the head is reset by the unit when the queue goes on). The unit's queue must be off.
    pub fn program<R: Registers>(&self, regs: &R) {
        regs.write64(IQT, 0);
        regs.write64(IQA, self.page & !0xfff);
    }

    /// Queues `descriptors` then a wait descriptor, moves the tail and waits until the unit
    /// has processed them all. A unit that reports a queue error or never writes the status
    /// is an error (the error is cleared so that the queue can go on).
    pub fn submit<R: Registers, M: TableMemory>(
        &mut self,
        regs: &R,
        memory: &M,
        coherent: bool,
        descriptors: &[[u64; 2]],
    ) -> Result<(), UnitError> {
        // Each submission waits for its own value, so that a wait descriptor left behind by
        // an earlier submission that timed out cannot complete this one when it finally runs.
        self.sequence = self.sequence.wrapping_add(1).max(1);
        let done = self.sequence;
        memory.write(self.status, 0);
        let mut slot = self.tail;
        let mut put = |d: [u64; 2]| {
            let at = self.page + 16 * slot;
            memory.write(at, d[0]);
            memory.write(at + 8, d[1]);
            if !coherent {
                memory.flush(at, 16);
            }
            slot = (slot + 1) % SLOTS;
        };
        for &d in descriptors {
            put(d);
        }
        put(wait(self.status, done));
        self.tail = slot;
        regs.write64(IQT, self.tail << 4);
        for _ in 0..POLLS {
            if memory.read(self.status) as u32 == done {
                return Ok(());
            }
            if regs.read32(FSTS) & FSTS_IQE != 0 {
                // The unit stopped at the bad descriptor (IQH): the tail goes back there
                // first, then the error is cleared, so the unit finds nothing to fetch.
                self.tail = (regs.read64(IQH) >> 4) % SLOTS;
                regs.write64(IQT, self.tail << 4);
                regs.write32(FSTS, FSTS_IQE);
                return Err(UnitError::Timeout(
                    "an invalidation (the queue reported an error)",
                ));
            }
            core::hint::spin_loop();
        }
        Err(UnitError::Timeout("an invalidation through the queue"))
    }
}
