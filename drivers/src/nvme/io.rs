//! The NVMe I/O path: staging memory, PRPs, many commands in flight on one queue, and the
//! read/write API over it.
//!
//! A request is split into commands of at most [`Nvme::command_bytes`] (MDTS, capped at
//! [`crate::block::MAX_REQUEST_BYTES`]). Each command in flight has a staging slot: a DMA
//! buffer of that many bytes followed by its PRP list page(s) (§4.3), so PRP Entry 1 is the
//! slot's first page, PRP Entry 2 the second page or the list, and the list names every
//! page after the first. The slot's index is the command identifier the queue's
//! [`Tracker`](crate::block::Tracker) handed out (the lowest free one, so the slots in use are
//! always the first `depth`). Slots are allocated on first use (the first at bind) and kept
//! until unbind; dropping them is safe in any order (a buffer dropped while bus mastering is
//! on waits in the function's quarantine).
//!
//! The submitting loop fills the queue up to `depth` commands, rings the tail doorbell once,
//! waits for the queue's interrupt, consumes every completion that carries the current phase
//! tag, copies each completed read out of its slot into the caller's bytes (one bulk copy),
//! frees the slot, and refills. A completion naming an identifier not in flight is a protocol
//! error; a timeout, a vanished controller or a protocol error marks the controller broken.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use pci::window::{DmaBuffer, DmaSlice};

use super::commands::{
    Command, NVM_READ, NVM_WRITE, Target, list_pages, list_pages_unaligned, prps, split_prps,
};
use super::controller::Controller;
use super::queues::{Queue, breaks, wait};
use super::{IO_TIMEOUT_US, Nvme, NvmeError, PAGE};
use crate::block::{self, BlockDevices, DiskInfo, DiskKind, DmaRequest, Request};

/// An active namespace: what Identify Namespace said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// Namespace identifier.
    pub nsid: u32,
    /// Size in logical blocks (NSZE).
    pub lbas: u64,
    /// Logical block size in bytes (the LBA format FLBAS picks).
    pub lba_size: u32,
}

/// Where one command's data comes from or goes.
enum Buffer<'a> {
    /// A read into the caller's bytes.
    Read(&'a mut [u8]),
    /// A write of the caller's bytes.
    Write(&'a [u8]),
    /// A read left in the staging slot (benchmarks: the device and driver without the copy).
    Uncopied(usize),
    /// A read straight into the caller's DMA memory (no staging, no copy).
    Dma(DmaSlice<'a>),
}

/// One command's work: blocks from `lba`, as long as its buffer.
struct Job<'a> {
    lba: u64,
    buffer: Buffer<'a>,
}

impl Job<'_> {
    fn len(&self) -> u64 {
        match &self.buffer {
            Buffer::Read(b) => b.len() as u64,
            Buffer::Write(b) => b.len() as u64,
            Buffer::Uncopied(n) => *n as u64,
            Buffer::Dma(d) => d.len(),
        }
    }
}

/// Bytes of one staging slot for commands of `chunk` bytes: the data, then the PRP list.
pub(super) fn slot_bytes(chunk: u64) -> u64 {
    chunk + list_pages(chunk) * PAGE
}

/// Bytes of one PRP list buffer for commands of at most `chunk` bytes into the caller's DMA
/// memory, which may start anywhere in a page (at least a page, the smallest buffer).
pub(super) fn list_bytes(chunk: u64) -> u64 {
    list_pages_unaligned(chunk).max(1) * PAGE
}

impl Nvme {
    /// The active namespaces, in NSID order (the disks of [`BlockDevices`]).
    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }

    /// Staging slots allocated so far.
    pub fn staging_slots(&self) -> usize {
        self.staging.len()
    }

    /// Commands one I/O queue can have in flight.
    pub fn max_depth(&self) -> usize {
        self.io.first().map_or(1, Queue::depth)
    }

    /// Makes sure `n` staging slots exist.
    pub(super) fn grow_staging(&mut self, n: usize) -> Result<(), NvmeError> {
        while self.staging.len() < n {
            let bytes = slot_bytes(self.chunk);
            let slot =
                self.controller.master().dma_buffer(bytes).map_err(|e| {
                    NvmeError::Request(format!("staging slot of {bytes} bytes: {e}"))
                })?;
            self.staging.push(slot);
        }
        Ok(())
    }

    /// Makes sure `n` PRP list buffers exist (for reads into the caller's DMA memory).
    fn grow_lists(&mut self, n: usize) -> Result<(), NvmeError> {
        while self.lists.len() < n {
            let bytes = list_bytes(self.chunk);
            let list = self
                .controller
                .master()
                .dma_buffer(bytes)
                .map_err(|e| NvmeError::Request(format!("PRP list of {bytes} bytes: {e}")))?;
            self.lists.push(list);
        }
        Ok(())
    }

    /// Checks the queue and the requests for namespace index `ns`.
    fn check(&self, queue: usize, ns: usize, requests: &[Request<'_>]) -> Result<(), NvmeError> {
        self.check_queue(queue)?;
        let info = self
            .disk_info(ns)
            .ok_or_else(|| NvmeError::Request(format!("no namespace index {ns}")))?;
        block::check(&info, requests).map_err(NvmeError::Request)
    }

    /// [`Nvme::check`] for reads into the caller's DMA memory: also that every slice's buffer
    /// is this controller's and starts on a dword (PRP Entry 1's bits 1:0 are reserved, §4.3).
    fn check_dma(
        &self,
        queue: usize,
        ns: usize,
        requests: &[DmaRequest<'_>],
    ) -> Result<(), NvmeError> {
        self.check_queue(queue)?;
        let info = self
            .disk_info(ns)
            .ok_or_else(|| NvmeError::Request(format!("no namespace index {ns}")))?;
        block::check_dma(&info, self.controller.master(), requests).map_err(NvmeError::Request)?;
        if let Some(r) = requests
            .iter()
            .find(|r| !r.data.bus_address_at(0).is_aligned(4))
        {
            return Err(NvmeError::Request(format!(
                "the DMA memory for block {} does not start on a dword",
                r.lba
            )));
        }
        Ok(())
    }

    /// Whether the controller works and `queue` exists.
    fn check_queue(&self, queue: usize) -> Result<(), NvmeError> {
        if let Some(why) = &self.broken {
            return Err(NvmeError::Broken(why.clone()));
        }
        if queue >= self.io.len() {
            return Err(NvmeError::Request(format!(
                "no I/O queue {} ({} in use)",
                queue + 1,
                self.io.len()
            )));
        }
        Ok(())
    }

    fn disk_info(&self, ns: usize) -> Option<DiskInfo> {
        let n = self.namespaces.get(ns)?;
        Some(DiskInfo {
            kind: DiskKind::Nvme { namespace: n.nsid },
            block_size: n.lba_size,
            blocks: n.lbas,
            max_command: self.chunk,
            max_depth: self.max_depth(),
        })
    }

    /// Runs `jobs` (each at most one command) on `queue` for namespace index `ns`, up to
    /// `depth` in flight.
    fn run(
        &mut self,
        queue: usize,
        ns: usize,
        opcode: u8,
        jobs: &mut [Job<'_>],
        depth: usize,
    ) -> Result<(), NvmeError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let depth = depth.clamp(1, self.io[queue].depth()).min(jobs.len());
        if jobs.iter().any(|j| matches!(j.buffer, Buffer::Dma(_))) {
            self.grow_lists(depth)?;
        }
        if jobs.iter().any(|j| !matches!(j.buffer, Buffer::Dma(_))) {
            self.grow_staging(depth)?;
        }
        let into_callers_memory = jobs.iter().any(|j| matches!(j.buffer, Buffer::Dma(_)));
        let namespace = self.namespaces[ns];
        let chunk = self.chunk;
        let Nvme {
            controller,
            io,
            staging,
            lists,
            broken,
            ..
        } = self;
        let result = pump(
            controller,
            &mut io[queue],
            Memory { staging, lists },
            chunk,
            namespace,
            opcode,
            jobs,
            depth,
        );
        if let Err(e) = &result
            && breaks(e)
        {
            *broken = Some(format!("{e}"));
            // Commands still in flight may name the caller's DMA memory, which is the
            // caller's again when this returns: the controller stops before it does, so no
            // late completion writes into memory the caller has reused.
            if into_callers_memory && io[queue].tracker.in_flight() > 0 {
                let how = if controller.stop() {
                    "the controller was reset, so nothing more lands in the caller's memory"
                } else {
                    "the controller did not confirm its reset: it may still write the caller's memory"
                };
                *broken = Some(format!("{e}; {how}"));
            }
        }
        result
    }

    /// Reads every request from namespace index `ns` through I/O queue `queue` (0-based),
    /// with up to `depth` requests in flight (a request's commands together, up to the
    /// queue's size); each request lands in its own bytes.
    pub fn read_ns(
        &mut self,
        ns: usize,
        queue: usize,
        requests: &mut [Request<'_>],
        depth: usize,
    ) -> Result<(), NvmeError> {
        self.check(queue, ns, requests)?;
        let size = self.namespaces[ns].lba_size;
        let chunk = self.chunk;
        let lengths = requests.iter().map(|r| r.data.len() as u64);
        let depth = block::commands_in_flight(depth, lengths, size, chunk);
        let mut jobs: Vec<Job<'_>> = block::pieces(requests, size, chunk)
            .into_iter()
            .map(|p| Job {
                lba: p.lba,
                buffer: Buffer::Read(p.data),
            })
            .collect();
        self.run(queue, ns, NVM_READ, &mut jobs, depth)
    }

    /// Reads every request from namespace index `ns` through I/O queue `queue` (0-based)
    /// straight into the caller's DMA memory, with up to `depth` requests in flight (a
    /// request's commands together, up to the queue's size).
    pub fn read_ns_dma(
        &mut self,
        ns: usize,
        queue: usize,
        requests: &mut [DmaRequest<'_>],
        depth: usize,
    ) -> Result<(), NvmeError> {
        self.check_dma(queue, ns, requests)?;
        let size = self.namespaces[ns].lba_size;
        let chunk = self.chunk;
        let lengths = requests.iter().map(|r| r.data.len());
        let depth = block::commands_in_flight(depth, lengths, size, chunk);
        let mut jobs: Vec<Job<'_>> = block::dma_pieces(requests, size, chunk)
            .into_iter()
            .map(|p| Job {
                lba: p.lba,
                buffer: Buffer::Dma(p.data),
            })
            .collect();
        self.run(queue, ns, NVM_READ, &mut jobs, depth)
    }

    /// Reads `out.len()` bytes (whole blocks) of the first namespace from `lba` through I/O
    /// queue `queue` (0-based), its commands in flight together.
    pub fn read_on(&mut self, queue: usize, lba: u64, out: &mut [u8]) -> Result<(), NvmeError> {
        let depth = self.max_depth();
        self.read_ns(0, queue, &mut [Request { lba, data: out }], depth)
    }

    /// Writes `data` (whole blocks) of the first namespace at `lba` through I/O queue `queue`
    /// (0-based). Refused with [`NvmeError::WritesDisabled`], before anything reaches the
    /// device, unless [`crate::storage::writes_allowed`].
    pub fn write_on(&mut self, queue: usize, lba: u64, data: &[u8]) -> Result<(), NvmeError> {
        crate::storage::check_write().map_err(|_| NvmeError::WritesDisabled)?;
        let size = self.namespaces.first().map_or(512, |n| n.lba_size);
        self.check_len(queue, lba, data.len())?;
        let step = (self.chunk / u64::from(size)).max(1) as usize * size as usize;
        let mut jobs: Vec<Job<'_>> = data
            .chunks(step)
            .enumerate()
            .map(|(i, d)| Job {
                lba: lba + (i * step) as u64 / u64::from(size),
                buffer: Buffer::Write(d),
            })
            .collect();
        let depth = self.max_depth();
        self.run(queue, 0, NVM_WRITE, &mut jobs, depth)
    }

    /// The checks of [`Nvme::check`] for a request of `bytes` bytes at `lba` of the first
    /// namespace, without a buffer.
    fn check_len(&self, queue: usize, lba: u64, bytes: usize) -> Result<(), NvmeError> {
        self.check_queue(queue)?;
        let info = self
            .disk_info(0)
            .ok_or_else(|| NvmeError::Request("no namespace".into()))?;
        let size = u64::from(info.block_size);
        let b = bytes as u64;
        if b == 0 || !b.is_multiple_of(size) {
            return Err(NvmeError::Request(format!(
                "{bytes} bytes is not a whole number of {size}-byte blocks"
            )));
        }
        if lba
            .checked_add(b / size)
            .is_none_or(|end| end > info.blocks)
        {
            return Err(NvmeError::Request(format!(
                "blocks {lba}..{} outside the namespace ({} blocks)",
                lba.saturating_add(b / size),
                info.blocks
            )));
        }
        Ok(())
    }

    /// Picks the next I/O queue, round robin.
    pub(super) fn pick_queue(&mut self) -> usize {
        let q = self.next_queue % self.io.len().max(1);
        self.next_queue = q + 1;
        q
    }

    /// Reads `out.len()` bytes (whole blocks) of the first namespace from `lba`, on the I/O
    /// queues in turn.
    pub fn read(&mut self, lba: u64, out: &mut [u8]) -> Result<(), NvmeError> {
        let q = self.pick_queue();
        self.read_on(q, lba, out)
    }

    /// Writes `data` (whole blocks) of the first namespace at `lba`, on the I/O queues in
    /// turn.
    pub fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), NvmeError> {
        let q = self.pick_queue();
        self.write_on(q, lba, data)
    }

    /// Reads `blocks` blocks of the first namespace at `lba` into staging memory only,
    /// `depth` commands in flight: the device and driver without the copy to the caller (for
    /// benchmarks).
    pub fn read_uncopied(
        &mut self,
        queue: usize,
        lba: u64,
        blocks: u64,
        depth: usize,
    ) -> Result<(), NvmeError> {
        let size = u64::from(self.namespaces.first().map_or(512, |n| n.lba_size));
        let bytes = blocks.saturating_mul(size);
        self.check_len(queue, lba, bytes as usize)?;
        let step = (self.chunk / size).max(1) * size;
        let mut jobs = Vec::new();
        let mut done = 0;
        while done < bytes {
            let len = (bytes - done).min(step);
            jobs.push(Job {
                lba: lba + done / size,
                buffer: Buffer::Uncopied(len as usize),
            });
            done += len;
        }
        self.run(queue, 0, NVM_READ, &mut jobs, depth)
    }
}

/// The driver's DMA memory for commands in flight, each indexed by command identifier.
struct Memory<'a> {
    /// Staging slots (data, then PRP list), for reads that are copied and for writes.
    staging: &'a [DmaBuffer],
    /// PRP list pages, for reads into the caller's DMA memory.
    lists: &'a [DmaBuffer],
}

/// Fills the queue up to `depth`, waits by interrupt, consumes completions, copies reads
/// out, refills, until every job is done (module documentation).
#[allow(clippy::too_many_arguments)]
fn pump(
    c: &Controller,
    q: &mut Queue,
    memory: Memory<'_>,
    chunk: u64,
    namespace: Namespace,
    opcode: u8,
    jobs: &mut [Job<'_>],
    depth: usize,
) -> Result<(), NvmeError> {
    let size = u64::from(namespace.lba_size);
    let mut next = 0;
    let mut failure = None;
    let mut seen = q.interrupts.load(Ordering::Acquire);
    let mut start = c.function().now_us();
    loop {
        let mut submitted = false;
        while failure.is_none() && next < jobs.len() && q.tracker.in_flight() < depth {
            let cid = q
                .tracker
                .start(next)
                .expect("fewer than depth in flight, and depth fits the queue");
            // The lowest free identifier is below `depth`: slot `cid` exists.
            let job = &jobs[next];
            let bytes = job.len();
            assert!(
                bytes <= chunk,
                "a job of {bytes} bytes for {chunk}-byte slots"
            );
            let command = Command::io(opcode, namespace.nsid, job.lba, (bytes / size) as u32);
            if let Buffer::Dma(data) = &job.buffer {
                // The caller's memory: PRP Entry 1 at its first byte, wherever in a page that
                // is, the rest at page boundaries, the list in this identifier's list pages.
                let list = &memory.lists[usize::from(cid)];
                let first = data.bus_address_at(0);
                let p = split_prps(first.offset_in(PAGE), bytes, 0);
                let at = q.push(&command, cid);
                q.sq.write_bus_address(at + 24, first);
                let target = |t: Target| match t {
                    Target::Data(o) => data.bus_address_at(o),
                    Target::List(o) => list.bus_address_at(o),
                };
                if let Some(second) = p.second {
                    q.sq.write_bus_address(at + 32, target(second));
                }
                for (entry, to) in p.list {
                    list.write_bus_address(entry, target(to));
                }
            } else {
                let slot = &memory.staging[usize::from(cid)];
                if let Buffer::Write(data) = &job.buffer {
                    slot.write_bytes(0, data);
                }
                let at = q.push(&command, cid);
                q.sq.write_bus_address(at + 24, slot.bus_address());
                let p = prps(bytes, chunk);
                if let Some(second) = p.second {
                    q.sq.write_bus_address(at + 32, slot.bus_address_at(second));
                }
                for (entry, to) in p.list {
                    slot.write_bus_address(entry, slot.bus_address_at(to));
                }
            }
            next += 1;
            submitted = true;
        }
        if submitted {
            c.unmask();
            c.regs.write32(c.sq_doorbell(q.id), u32::from(q.sq_tail));
        }
        if q.tracker.in_flight() == 0 {
            break;
        }
        wait(c, q, seen, start, IO_TIMEOUT_US, opcode)?;
        // Snapshot before consuming: a completion posted after the pass below raises an
        // interrupt that moves the counter past this value.
        seen = q.interrupts.load(Ordering::Acquire);
        let mut consumed = false;
        let mut progressed = false;
        while let Some(entry) = q.pop() {
            consumed = true;
            let index = match q.tracker.finish(entry.cid) {
                Ok(i) => {
                    progressed = true;
                    i
                }
                Err(e) => {
                    failure.get_or_insert(NvmeError::Protocol(format!("queue {}: {e}", q.id)));
                    continue;
                }
            };
            if let Some((sct, sc, dnr)) = entry.error() {
                failure.get_or_insert(NvmeError::Status {
                    queue: q.id,
                    opcode,
                    sct,
                    sc,
                    dnr,
                });
            } else if let Buffer::Read(out) = &mut jobs[index].buffer {
                memory.staging[usize::from(entry.cid)].read_bytes(0, out);
            }
        }
        if consumed {
            c.regs.write32(c.cq_doorbell(q.id), u32::from(q.cq_head));
        }
        // Only a command that really completed restarts the timeout: bogus completions
        // (unknown identifiers) must not keep the wait alive.
        if progressed {
            start = c.function().now_us();
        }
        c.unmask();
    }
    failure.map_or(Ok(()), Err)
}

impl BlockDevices for Nvme {
    fn disks(&self) -> Vec<DiskInfo> {
        (0..self.namespaces.len())
            .filter_map(|i| self.disk_info(i))
            .collect()
    }

    fn read_blocks(
        &mut self,
        disk: usize,
        requests: &mut [Request<'_>],
        depth: usize,
    ) -> Result<(), String> {
        let q = self.pick_queue();
        self.read_ns(disk, q, requests, depth)
            .map_err(|e| format!("{e}"))
    }

    fn dma_buffer(&self, disk: usize, bytes: u64) -> Result<DmaBuffer, String> {
        if disk >= self.namespaces.len() {
            return Err(format!("no namespace index {disk}"));
        }
        self.controller
            .master()
            .dma_buffer(bytes)
            .map_err(|e| format!("DMA buffer of {bytes} bytes: {e}"))
    }

    fn read_dma(
        &mut self,
        disk: usize,
        requests: &mut [DmaRequest<'_>],
        depth: usize,
    ) -> Result<(), String> {
        let q = self.pick_queue();
        self.read_ns_dma(disk, q, requests, depth)
            .map_err(|e| format!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_holds_its_data_and_list() {
        assert_eq!(slot_bytes(8192), 8192);
        assert_eq!(slot_bytes(512 * 1024), 512 * 1024 + 4096);
        assert_eq!(slot_bytes(1 << 20), (1 << 20) + 4096);
        // The list starts right after the data, page aligned, where `prps` is told it is.
        let p = prps(1 << 20, 1 << 20);
        assert!(p.list.iter().all(|(at, _)| *at + 8 <= slot_bytes(1 << 20)));
    }
}
