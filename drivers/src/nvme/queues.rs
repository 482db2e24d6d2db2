//! NVMe queue pairs: submission and completion rings, the tail and head doorbells, the phase
//! tag, the command identifiers in flight; waiting for completions by interrupt; admin
//! commands.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use pci::dma::BusAddr;
use pci::function::BusMaster;
use pci::window::DmaBuffer;

use super::commands::{Command, Completion, Data};
use super::controller::Controller;
use super::registers::CSTS;
use super::{ADMIN_TIMEOUT_US, NvmeError, PAGE};
use crate::block::Tracker;

/// A submission/completion queue pair.
///
/// Owns two DMA buffers (three for the admin queue, whose one-page buffer receives Identify
/// answers); they must outlive the controller's use of them, which [`super::Nvme`]'s field
/// order guarantees (see the module documentation).
pub(super) struct Queue {
    /// Queue identifier (0: admin).
    pub(super) id: u16,
    pub(super) entries: u16,
    /// Submission ring: `entries` 64-byte entries.
    pub(super) sq: DmaBuffer,
    /// Completion ring: `entries` 16-byte entries.
    pub(super) cq: DmaBuffer,
    /// The admin queue's data page.
    pub(super) data: Option<DmaBuffer>,
    pub(super) sq_tail: u16,
    pub(super) cq_head: u16,
    /// The phase tag of entries not consumed yet (starts at 1: the ring is zeroed).
    pub(super) phase: bool,
    /// Command identifiers in flight (at most `entries - 1`: a full ring has one empty slot).
    pub(super) tracker: Tracker,
    /// MSI-X entry (and Interrupt Vector) of the completion queue.
    pub(super) vector: usize,
    /// Bumped by the vector's handler.
    pub(super) interrupts: Arc<AtomicU64>,
    /// Commands completed.
    pub(super) completed: u64,
}

impl Queue {
    pub(super) fn new(
        master: &BusMaster,
        id: u16,
        entries: u16,
        vector: usize,
        interrupts: Arc<AtomicU64>,
    ) -> Result<Queue, String> {
        let buffer = |what: &str, bytes: u64| {
            master
                .dma_buffer(bytes)
                .map_err(|e| format!("queue {id} {what}: {e}"))
        };
        Ok(Queue {
            id,
            entries,
            sq: buffer("submission ring", 64 * u64::from(entries))?,
            cq: buffer("completion ring", 16 * u64::from(entries))?,
            data: if id == 0 {
                Some(buffer("data page", PAGE)?)
            } else {
                None
            },
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            tracker: Tracker::new(usize::from(entries) - 1),
            vector,
            interrupts,
            completed: 0,
        })
    }

    /// Commands this queue can have in flight.
    pub(super) fn depth(&self) -> usize {
        usize::from(self.entries) - 1
    }

    /// Writes `command` with identifier `cid` at the tail (the doorbell is rung separately);
    /// returns the entry's offset in the ring, where PRP Entry 1 is at +24 and 2 at +32.
    pub(super) fn push(&mut self, command: &Command, cid: u16) -> u64 {
        let at = u64::from(self.sq_tail) * 64;
        for (i, d) in command.dwords(cid).iter().enumerate() {
            self.sq.write32(at + 4 * i as u64, *d);
        }
        self.sq_tail = (self.sq_tail + 1) % self.entries;
        at
    }

    /// Whether the entry at the head carries the current phase tag (a new completion).
    pub(super) fn posted(&self) -> bool {
        let dw3 = self.cq.read32(u64::from(self.cq_head) * 16 + 12);
        (dw3 & (1 << 16) != 0) == self.phase
    }

    /// Consumes the completion at the head, if one is new.
    pub(super) fn pop(&mut self) -> Option<Completion> {
        if !self.posted() {
            return None;
        }
        let at = u64::from(self.cq_head) * 16;
        let entry = Completion::from_dwords(self.cq.read32(at), self.cq.read32(at + 12));
        self.cq_head += 1;
        if self.cq_head == self.entries {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        self.completed += 1;
        Some(entry)
    }
}

/// Waits until `q`'s interrupt counter moves past `seen` (the snapshot taken before the
/// doorbell or the last pass over the ring), at most `timeout_us` from `start`: once that
/// has passed it is an error even if the counter moved. The error says whether the
/// controller vanished or simply did not answer.
pub(super) fn wait(
    c: &Controller,
    q: &Queue,
    seen: u64,
    start: u64,
    timeout_us: u64,
    opcode: u8,
) -> Result<(), NvmeError> {
    let function = c.function();
    let waited = function.now_us().saturating_sub(start);
    let counter = &q.interrupts;
    // Past the deadline the wait ends whatever the counter says: a device interrupting
    // without completing anything (a storm, completions for identifiers not in flight)
    // would otherwise keep its caller waiting forever.
    if waited < timeout_us
        && function.wait_until(timeout_us - waited, || {
            counter.load(Ordering::Acquire) != seen
        })
    {
        return Ok(());
    }
    if function.vanished() {
        return Err(NvmeError::Gone {
            queue: q.id,
            waited_us: function.now_us().saturating_sub(start),
        });
    }
    Err(NvmeError::Timeout {
        queue: q.id,
        opcode,
        pending: q.tracker.in_flight(),
        waited_us: function.now_us().saturating_sub(start),
        interrupts: q.interrupts.load(Ordering::Relaxed),
        posted: q.posted(),
        csts: c.regs.read32(CSTS),
    })
}

/// Whether an error leaves the queues in an unknown state (the device needs rebinding).
pub(super) fn breaks(e: &NvmeError) -> bool {
    matches!(
        e,
        NvmeError::Timeout { .. } | NvmeError::Gone { .. } | NvmeError::Protocol(_)
    )
}

/// Runs one admin command on `admin` and waits for it by interrupt; its completion dword 0.
/// `ring` is the address of a queue being created ([`Data::Ring`]). A timeout or protocol
/// error marks the queues broken.
pub(super) fn admin_command(
    c: &Controller,
    admin: &mut Queue,
    broken: &mut Option<String>,
    command: Command,
    ring: Option<BusAddr<'_>>,
) -> Result<u32, NvmeError> {
    run_admin(c, admin, command, ring).inspect_err(|e| {
        if breaks(e) {
            *broken = Some(format!("{e}"));
        }
    })
}

fn run_admin(
    c: &Controller,
    q: &mut Queue,
    command: Command,
    ring: Option<BusAddr<'_>>,
) -> Result<u32, NvmeError> {
    let cid = q
        .tracker
        .start(0)
        .ok_or_else(|| NvmeError::Protocol("admin queue: a command is still in flight".into()))?;
    let at = q.push(&command, cid);
    match command.data {
        Data::None => {}
        Data::AdminPage => {
            let page = q.data.as_ref().expect("the admin queue has its page");
            q.sq.write_bus_address(at + 24, page.bus_address());
        }
        Data::Ring => {
            let ring = ring.expect("a queue-creation command comes with its ring");
            q.sq.write_bus_address(at + 24, ring);
        }
    }
    let start = c.function().now_us();
    // The snapshot comes before the doorbell: the interrupt for this command moves the
    // counter past it.
    let mut seen = q.interrupts.load(Ordering::Acquire);
    c.unmask();
    c.regs.write32(c.sq_doorbell(q.id), u32::from(q.sq_tail));
    loop {
        wait(c, q, seen, start, ADMIN_TIMEOUT_US, command.opcode)?;
        seen = q.interrupts.load(Ordering::Acquire);
        let mut answer = None;
        let mut consumed = false;
        while let Some(entry) = q.pop() {
            consumed = true;
            q.tracker
                .finish(entry.cid)
                .map_err(|e| NvmeError::Protocol(format!("queue {}: {e}", q.id)))?;
            answer = Some(entry);
        }
        if consumed {
            c.regs.write32(c.cq_doorbell(q.id), u32::from(q.cq_head));
        }
        c.unmask();
        if let Some(entry) = answer {
            if let Some((sct, sc, dnr)) = entry.error() {
                return Err(NvmeError::Status {
                    queue: q.id,
                    opcode: command.opcode,
                    sct,
                    sc,
                    dnr,
                });
            }
            return Ok(entry.dw0);
        }
    }
}
