//! The virtio-blk request path: many requests in flight on the request queue, each a chain
//! of the header, its data descriptors in its staging slot, and the status byte (see the
//! module documentation of [`super`]).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use pci::window::DmaSlice;

use super::{PER_REQUEST, T_IN, TIMEOUT_US, VirtioBlk};
use crate::virtio::{Segment, Used};

/// Where one request's data comes from or goes.
pub(super) enum Buffer<'a> {
    /// A read into the caller's bytes, through the staging slot.
    Read(&'a mut [u8]),
    /// A write of the caller's bytes, through the staging slot.
    Write(&'a [u8]),
    /// A read straight into the caller's DMA memory (no staging, no copy).
    Dma(DmaSlice<'a>),
}

impl Buffer<'_> {
    fn len(&self) -> usize {
        match self {
            Buffer::Read(b) => b.len(),
            Buffer::Write(b) => b.len(),
            Buffer::Dma(b) => b.len() as usize,
        }
    }
}

/// One request's work: blocks from `lba`, as long as its buffer (at most one request).
pub(super) struct Job<'a> {
    pub(super) lba: u64,
    pub(super) buffer: Buffer<'a>,
}

impl VirtioBlk {
    /// Runs `jobs` (each one chain) with up to `depth` of them in flight.
    pub(super) fn run(
        &mut self,
        kind: u32,
        jobs: &mut [Job<'_>],
        depth: usize,
    ) -> Result<(), String> {
        if jobs.is_empty() {
            return Ok(());
        }
        let depth = depth.clamp(1, self.limits.depth).min(jobs.len());
        let staged = jobs.iter().any(|j| !matches!(j.buffer, Buffer::Dma(_)));
        while staged && self.staging.len() < depth {
            let slot = self.dev.dma_buffer(self.limits.request)?;
            self.staging.push(slot);
        }
        let into_callers_memory = jobs.iter().any(|j| matches!(j.buffer, Buffer::Dma(_)));
        let result = self.pump(kind, jobs, depth);
        if let Err(why) = &result
            && self.tracker.in_flight() > 0
        {
            // Requests the device still holds: their slots and descriptors stay its own
            // until the reset at unbind.
            self.broken = Some(why.clone());
            // Unless some name the caller's DMA memory, which is the caller's again when this
            // returns: the device is reset first (§2.1.2: after a reset it uses no queue).
            if into_callers_memory {
                let how = if self.dev.stop() {
                    "the device was reset, so nothing more lands in the caller's memory"
                } else {
                    "the device did not confirm its reset: it may still write the caller's memory"
                };
                self.broken = Some(format!("{why}; {how}"));
            }
        }
        result
    }

    fn pump(&mut self, kind: u32, jobs: &mut [Job<'_>], depth: usize) -> Result<(), String> {
        let spb = self.limits.sectors_per_block();
        let mut next = 0;
        let mut failure: Option<String> = None;
        loop {
            let mut submitted = false;
            while failure.is_none() && next < jobs.len() && self.tracker.in_flight() < depth {
                let bytes = jobs[next].buffer.len() as u64;
                let segments = self.limits.data_segments(bytes);
                let free = self.dev.queue(0).free_descriptors();
                if usize::from(free) < segments.len() + 2 {
                    break;
                }
                let id = self
                    .tracker
                    .start(next)
                    .expect("fewer than depth in flight");
                let buffers = self.dev.queue(0).buffers();
                let at = u64::from(id) * PER_REQUEST;
                buffers.write32(at, kind);
                buffers.write32(at + 4, 0);
                buffers.write64(at + 8, jobs[next].lba * spb);
                buffers.write8(at + 16, 0xff);
                let mut chain = Vec::with_capacity(segments.len() + 2);
                chain.push(Segment::reads(at, 16));
                match &jobs[next].buffer {
                    // The caller's DMA memory: the data descriptors point straight at it.
                    Buffer::Dma(data) => {
                        for (offset, len) in segments {
                            chain.push(Segment::in_slice(data, offset, len, true));
                        }
                    }
                    buffer => {
                        let slot = &self.staging[usize::from(id)];
                        if let Buffer::Write(data) = buffer {
                            slot.write_bytes(0, data);
                        }
                        for (offset, len) in segments {
                            chain.push(Segment::of(slot, offset, len, kind == T_IN));
                        }
                    }
                }
                chain.push(Segment::writes(at + 16, 1));
                let head = match self.dev.add(0, &chain) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = self.tracker.finish(id);
                        failure = Some(e);
                        break;
                    }
                };
                self.heads.push((head, id));
                next += 1;
                submitted = true;
            }
            if submitted {
                self.dev.notify(0);
            }
            if self.tracker.in_flight() == 0 {
                break;
            }
            let used = self.dev.next_used(0, TIMEOUT_US)?;
            self.complete(used, jobs, kind, &mut failure)?;
            while let Some(used) = self.dev.poll_used(0)? {
                self.complete(used, jobs, kind, &mut failure)?;
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// One used chain: its request's status, and a read's data copied to the caller. A chain
    /// the driver did not hand out is a device error (returned at once: the queue is no
    /// longer trusted).
    fn complete(
        &mut self,
        used: Used,
        jobs: &mut [Job<'_>],
        kind: u32,
        failure: &mut Option<String>,
    ) -> Result<(), String> {
        let what = if kind == T_IN { "read" } else { "write" };
        let Some(at) = self.heads.iter().position(|(h, _)| *h == used.head) else {
            return Err(format!(
                "completion of chain {} which is not in flight",
                used.head
            ));
        };
        let (_, id) = self.heads.swap_remove(at);
        let index = self.tracker.finish(id)?;
        let status = self
            .dev
            .queue(0)
            .buffers()
            .read8(u64::from(id) * PER_REQUEST + 16);
        let lba = jobs[index].lba;
        // A read's chain is its data and the status byte, all device-writable: a device that
        // says it wrote less did not deliver the data (§2.7.8.2), whatever the status says.
        let wanted = jobs[index].buffer.len() as u64 + 1;
        match status {
            0 if kind == T_IN && u64::from(used.len) < wanted => {
                failure.get_or_insert(format!(
                    "{what} of block {lba}: the device wrote {} of {wanted} bytes (data and status)",
                    used.len
                ));
            }
            0 => {
                self.requests += 1;
                if let Buffer::Read(out) = &mut jobs[index].buffer {
                    self.staging[usize::from(id)].read_bytes(0, out);
                }
            }
            s => {
                let why = match s {
                    1 => String::from("I/O error"),
                    2 => String::from("unsupported"),
                    s => format!("status {s:#x}"),
                };
                failure.get_or_insert(format!("{what} of block {lba}: {why}"));
            }
        }
        Ok(())
    }
}
