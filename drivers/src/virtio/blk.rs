//! virtio-blk (virtio 1.1 §5.2): a block device on one request queue, many requests in
//! flight.
//!
//! - §5.2.2: one virtqueue, `requestq` (index 0).
//! - §5.2.3: features. Accepted besides VIRTIO_F_VERSION_1: VIRTIO_BLK_F_SIZE_MAX (bit 1) and
//!   VIRTIO_BLK_F_SEG_MAX (bit 2), the largest data descriptor and the most data descriptors
//!   per request, which the driver honours when it builds chains; VIRTIO_BLK_F_RO (bit 5),
//!   honoured by refusing writes; VIRTIO_BLK_F_BLK_SIZE (bit 6), the logical block size:
//!   every request is a whole number of blocks at a block boundary (a device with 4 KiB
//!   blocks fails anything else). VIRTIO_BLK_F_FLUSH is not negotiated, so the device
//!   commits every write before completing it (QEMU switches the disk to write-through) and
//!   no flush request is ever needed.
//! - §5.2.4: device configuration. `capacity` (64 bits at offset 0, in 512-byte sectors
//!   whatever the block size) is read as two 32-bit halves inside a `config_generation`
//!   check (§2.4.1), again after every configuration-change interrupt (a resized disk);
//!   `size_max` (8), `seg_max` (12) and `blk_size` (20) once, at probe ([`Limits`]).
//! - §5.2.6: a request is a chain: a 16-byte header the device reads (`type`: 0 IN = read,
//!   1 OUT = write; `reserved`; `sector`, in 512-byte units), the data in one or more
//!   descriptors (written by the device for IN, read for OUT; each at most `size_max` bytes,
//!   at most `seg_max` of them), and one status byte the device writes (0 OK, 1 IOERR,
//!   2 UNSUPP).
//!
//! Requests in flight: each has an identifier from a [`Tracker`] (the lowest free one), which
//! names its header and status bytes in the queue's own buffer (32 bytes per identifier) and
//! its staging slot, a DMA buffer of [`Limits::request`] bytes that its data descriptors point
//! into. The driver fills the queue up to the depth asked (and what the free descriptors
//! allow), notifies once, waits for the queue's interrupt, takes every used chain the device
//! returned, copies each completed read out of its slot into the caller's bytes (one bulk
//! copy), and refills.
//!
//! Ownership: [`VirtioBlk`] is a [`VirtioPci`], its staging slots, and bookkeeping. The slots
//! are declared after the device: unbinding drops the `VirtioPci` first, which resets the
//! device (and turns bus mastering off) before the rings, the queue's buffer and then the
//! slots are freed (see [`super`]). The first slot is taken at probe, more on first use of a
//! deeper batch, all kept until unbind. A request that times out leaves its descriptors and
//! slot with the device, so the driver refuses further requests until it is rebound (the
//! reset on unbind takes them back).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use pci::irq::{IrqKinds, PciFunction};
use pci::window::DmaBuffer;

use super::{QueueSpec, Segment, Spec, TYPE_BLOCK, Used, VENDOR, VirtioPci, fnv1a};
use crate::block::{self, BlockDevices, DiskInfo, DiskKind, Request, Tracker};
use crate::{Bound, Driver, Match, ProbeError};

/// Bytes per sector (§5.2.6: always 512, whatever the block size).
pub const SECTOR: usize = 512;
/// VIRTIO_BLK_F_SIZE_MAX: `size_max` bounds one data descriptor.
const F_SIZE_MAX: u64 = 1 << 1;
/// VIRTIO_BLK_F_SEG_MAX: `seg_max` bounds the data descriptors of a request.
const F_SEG_MAX: u64 = 1 << 2;
/// VIRTIO_BLK_F_RO: the device is read-only.
const F_RO: u64 = 1 << 5;
/// VIRTIO_BLK_F_BLK_SIZE: `blk_size` is the logical block size.
const F_BLK_SIZE: u64 = 1 << 6;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
/// Bytes of the queue's buffer per request identifier: header at +0, status at +16.
const PER_REQUEST: u64 = 32;
/// Requests in flight at most (and identifiers).
pub const MAX_DEPTH: usize = 64;
/// Entries of the request queue at most.
const QUEUE_SIZE: u16 = 256;
/// How long the device may take to complete something once requests are in flight.
const TIMEOUT_US: u64 = 5_000_000;

const QUEUES: &[QueueSpec] = &[QueueSpec {
    name: "requestq",
    max_size: QUEUE_SIZE,
    buffer_bytes: MAX_DEPTH as u64 * PER_REQUEST,
}];

/// What the transport sets up for a block device.
pub const SPEC: Spec = Spec {
    device_type: TYPE_BLOCK,
    name: "virtio-blk",
    features: F_SIZE_MAX | F_SEG_MAX | F_RO | F_BLK_SIZE,
    queues: QUEUES,
};

/// The virtio-blk driver.
pub struct VirtioBlkDriver;

/// How requests are shaped for one device (§5.2.3, §5.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Bytes of one data descriptor at most.
    pub segment: u64,
    /// Data descriptors of one request at most.
    pub segments: u64,
    /// Data bytes of one request at most (a whole number of blocks).
    pub request: u64,
    /// Requests in flight at most (descriptors and identifiers allowing).
    pub depth: usize,
}

impl Limits {
    /// The limits for the negotiated `features` and the configuration fields, on a queue of
    /// `queue_size` descriptors. A block size that is not a power of two from 512 bytes to
    /// 64 KiB, or limits that leave no room for one block, are device errors.
    pub fn new(
        features: u64,
        size_max: u32,
        seg_max: u32,
        blk_size: u32,
        queue_size: u16,
    ) -> Result<Limits, String> {
        let block_size = if features & F_BLK_SIZE != 0 {
            blk_size
        } else {
            SECTOR as u32
        };
        if !block_size.is_power_of_two() || !(512..=65536).contains(&block_size) {
            return Err(format!("block size {block_size} (blk_size) is not usable"));
        }
        let segment = if features & F_SIZE_MAX != 0 && size_max != 0 {
            u64::from(size_max).min(block::MAX_REQUEST_BYTES)
        } else {
            block::MAX_REQUEST_BYTES
        };
        // A request is the header, the data and the status: two descriptors besides the data.
        let room = u64::from(queue_size).saturating_sub(2);
        let segments = if features & F_SEG_MAX != 0 && seg_max != 0 {
            u64::from(seg_max).min(room)
        } else {
            room
        };
        let size = u64::from(block_size);
        let request = (segment
            .saturating_mul(segments)
            .min(block::MAX_REQUEST_BYTES)
            / size)
            * size;
        if request == 0 {
            return Err(format!(
                "size_max {size_max} and seg_max {seg_max} leave no room for one {block_size}-byte block"
            ));
        }
        let per_request = 2 + request.div_ceil(segment);
        let depth = ((u64::from(queue_size) / per_request) as usize).clamp(1, MAX_DEPTH);
        Ok(Limits {
            block_size,
            segment,
            segments,
            request,
            depth,
        })
    }

    /// Sectors (512 bytes) per block.
    pub fn sectors_per_block(&self) -> u64 {
        u64::from(self.block_size) / SECTOR as u64
    }

    /// The data descriptors of a request of `bytes` bytes from the start of its slot:
    /// (offset, length), each at most [`Limits::segment`].
    pub fn data_segments(&self, bytes: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes {
            let len = (bytes - at).min(self.segment);
            out.push((at, len as u32));
            at += len;
        }
        out
    }
}

/// A bound virtio-blk device.
#[derive(Debug)]
pub struct VirtioBlk {
    /// The disk's name in the block registry, removed first when the state drops.
    registration: Option<block::Registration>,
    dev: VirtioPci,
    /// Staging slots, by request identifier; declared after `dev` (freed after the reset).
    staging: Vec<DmaBuffer>,
    tracker: Tracker,
    /// (head descriptor, identifier) of the requests the device holds.
    heads: Vec<(u16, u16)>,
    limits: Limits,
    /// Capacity in 512-byte sectors.
    capacity: u64,
    read_only: bool,
    requests: u64,
    /// Configuration-change interrupts already acted on.
    config_seen: u64,
    /// Why requests are refused (a request timed out), if they are.
    broken: Option<String>,
}

impl Driver for VirtioBlkDriver {
    fn name(&self) -> &'static str {
        "virtio-blk"
    }

    fn matches(&self) -> &'static [Match] {
        // Modern 0x1040 + 2, transitional 0x1001 (whose Subsystem ID probe checks is 2).
        &[
            Match::Id {
                vendor: VENDOR,
                device: 0x1042,
            },
            Match::Id {
                vendor: VENDOR,
                device: 0x1001,
            },
        ]
    }

    fn probe(&self, function: PciFunction) -> Result<Box<dyn Bound>, (PciFunction, ProbeError)> {
        super::boxed(VirtioBlk::probe(function))
    }
}

fn read_capacity(dev: &VirtioPci) -> Option<u64> {
    let t = dev.transport();
    let (low, high) = t.read_config(dev.function(), |t| (t.device_read32(0), t.device_read32(4)));
    Some(u64::from(low?) | u64::from(high?) << 32)
}

/// `size_max`, `seg_max`, `blk_size` (§5.2.4), zero where the structure is too short.
fn read_shape(dev: &VirtioPci) -> (u32, u32, u32) {
    let t = dev.transport();
    t.read_config(dev.function(), |t| {
        (
            t.device_read32(8).unwrap_or(0),
            t.device_read32(12).unwrap_or(0),
            t.device_read32(20).unwrap_or(0),
        )
    })
}

/// Where one request's data comes from or goes.
enum Buffer<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Buffer<'_> {
    fn len(&self) -> usize {
        match self {
            Buffer::Read(b) => b.len(),
            Buffer::Write(b) => b.len(),
        }
    }
}

/// One request's work: blocks from `lba`, as long as its buffer (at most one request).
struct Job<'a> {
    lba: u64,
    buffer: Buffer<'a>,
}

impl VirtioBlk {
    /// Binds with MSI-X (INTx if there is none).
    pub fn probe(function: PciFunction) -> Result<VirtioBlk, (PciFunction, ProbeError)> {
        VirtioBlk::probe_with(function, IrqKinds::MSIX | IrqKinds::INTX)
    }

    /// Binds with the interrupt kinds `kinds` allows.
    pub fn probe_with(
        function: PciFunction,
        kinds: IrqKinds,
    ) -> Result<VirtioBlk, (PciFunction, ProbeError)> {
        let dev = VirtioPci::probe(function, &SPEC, kinds)?;
        let fail = |dev: VirtioPci, why: String| Err((dev.into_function(), ProbeError(why)));
        let Some(capacity) = read_capacity(&dev) else {
            return fail(dev, "no device configuration (capacity)".into());
        };
        let (size_max, seg_max, blk_size) = read_shape(&dev);
        let limits = match Limits::new(
            dev.features(),
            size_max,
            seg_max,
            blk_size,
            dev.queue(0).size(),
        ) {
            Ok(l) => l,
            Err(why) => return fail(dev, why),
        };
        let slot = match dev.dma_buffer(limits.request) {
            Ok(s) => s,
            Err(why) => return fail(dev, why),
        };
        let address = dev.function().address();
        let mut blk = VirtioBlk {
            registration: None,
            read_only: dev.features() & F_RO != 0,
            config_seen: dev.config_changes(),
            dev,
            staging: vec![slot],
            tracker: Tracker::new(limits.depth),
            heads: Vec::new(),
            limits,
            capacity,
            requests: 0,
            broken: None,
        };
        blk.registration = Some(block::DISKS.register("virtio-blk", address, &blk.disks()));
        Ok(blk)
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.limits.block_size
    }

    /// Capacity in logical blocks.
    pub fn blocks(&self) -> u64 {
        self.capacity / self.limits.sectors_per_block()
    }

    /// How requests are shaped.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Staging slots allocated so far.
    pub fn staging_slots(&self) -> usize {
        self.staging.len()
    }

    /// Whether the device is read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Requests completed.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The transport (vectors, queues).
    pub fn device(&self) -> &VirtioPci {
        &self.dev
    }

    /// The block at 512-byte sector `sector`, which must be a block boundary.
    fn block_of(&self, sector: u64) -> Result<u64, String> {
        let spb = self.limits.sectors_per_block();
        if !sector.is_multiple_of(spb) {
            return Err(format!(
                "sector {sector} is not at a {}-byte block boundary",
                self.limits.block_size
            ));
        }
        Ok(sector / spb)
    }

    /// Reads `out.len()` bytes (whole blocks) from 512-byte sector `sector` on (a block
    /// boundary).
    pub fn read(&mut self, sector: u64, out: &mut [u8]) -> Result<(), String> {
        let lba = self.block_of(sector)?;
        let depth = self.limits.depth;
        self.read_blocks(0, &mut [Request { lba, data: out }], depth)
    }

    /// Writes `data` (whole blocks) from 512-byte sector `sector` on (a block boundary).
    /// Refused, before anything reaches the device, unless
    /// [`crate::storage::writes_allowed`].
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), String> {
        crate::storage::check_write()?;
        if self.read_only {
            return Err("the device is read-only".into());
        }
        let lba = self.block_of(sector)?;
        self.check(lba, data.len())?;
        let step = self.limits.request as usize;
        let per = self.limits.block_size as usize;
        let mut jobs: Vec<Job<'_>> = data
            .chunks(step)
            .enumerate()
            .map(|(i, d)| Job {
                lba: lba + (i * step / per) as u64,
                buffer: Buffer::Write(d),
            })
            .collect();
        let depth = self.limits.depth;
        self.run(T_OUT, &mut jobs, depth)
    }

    fn usable(&mut self) -> Result<(), String> {
        if let Some(why) = &self.broken {
            return Err(format!("device unusable until rebound: {why}"));
        }
        if self.dev.config_changes() != self.config_seen {
            self.config_seen = self.dev.config_changes();
            if let Some(c) = read_capacity(&self.dev) {
                self.capacity = c;
            }
        }
        Ok(())
    }

    fn info(&self) -> DiskInfo {
        DiskInfo {
            kind: DiskKind::Virtio,
            block_size: self.limits.block_size,
            blocks: self.blocks(),
            max_command: self.limits.request,
            max_depth: self.limits.depth,
        }
    }

    fn check(&mut self, lba: u64, bytes: usize) -> Result<(), String> {
        self.usable()?;
        let size = u64::from(self.limits.block_size);
        let b = bytes as u64;
        if b == 0 || !b.is_multiple_of(size) {
            return Err(format!(
                "{bytes} bytes is not a whole number of {size}-byte blocks"
            ));
        }
        if lba
            .checked_add(b / size)
            .is_none_or(|end| end > self.blocks())
        {
            return Err(format!(
                "blocks {lba}+{} beyond the capacity of {} blocks",
                b / size,
                self.blocks()
            ));
        }
        Ok(())
    }

    /// Runs `jobs` with up to `depth` requests in flight.
    fn run(&mut self, kind: u32, jobs: &mut [Job<'_>], depth: usize) -> Result<(), String> {
        if jobs.is_empty() {
            return Ok(());
        }
        let depth = depth.clamp(1, self.limits.depth).min(jobs.len());
        while self.staging.len() < depth {
            let slot = self.dev.dma_buffer(self.limits.request)?;
            self.staging.push(slot);
        }
        let result = self.pump(kind, jobs, depth);
        if let Err(why) = &result
            && self.tracker.in_flight() > 0
        {
            // Requests the device still holds: their slots and descriptors stay its own
            // until the reset at unbind.
            self.broken = Some(why.clone());
        }
        result
    }

    fn pump(&mut self, kind: u32, jobs: &mut [Job<'_>], depth: usize) -> Result<(), String> {
        let what = if kind == T_IN { "read" } else { "write" };
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
                let (slot, buffers) = (&self.staging[usize::from(id)], self.dev.queue(0).buffers());
                let at = u64::from(id) * PER_REQUEST;
                buffers.write32(at, kind);
                buffers.write32(at + 4, 0);
                buffers.write64(at + 8, jobs[next].lba * spb);
                buffers.write8(at + 16, 0xff);
                if let Buffer::Write(data) = &jobs[next].buffer {
                    slot.write_bytes(0, data);
                }
                let mut chain = Vec::with_capacity(segments.len() + 2);
                chain.push(Segment::reads(at, 16));
                for (offset, len) in segments {
                    chain.push(Segment::of(slot, offset, len, kind == T_IN));
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
            self.complete(used, jobs, what, &mut failure)?;
            while let Some(used) = self.dev.poll_used(0)? {
                self.complete(used, jobs, what, &mut failure)?;
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
        what: &str,
        failure: &mut Option<String>,
    ) -> Result<(), String> {
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
        match status {
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

impl BlockDevices for VirtioBlk {
    fn disks(&self) -> Vec<DiskInfo> {
        vec![self.info()]
    }

    fn read_blocks(
        &mut self,
        disk: usize,
        requests: &mut [Request<'_>],
        depth: usize,
    ) -> Result<(), String> {
        if disk != 0 {
            return Err(format!("no disk {disk}"));
        }
        self.usable()?;
        block::check(&self.info(), requests)?;
        let (size, max) = (self.limits.block_size, self.limits.request);
        let mut jobs: Vec<Job<'_>> = block::pieces(requests, size, max)
            .into_iter()
            .map(|p| Job {
                lba: p.lba,
                buffer: Buffer::Read(p.data),
            })
            .collect();
        self.run(T_IN, &mut jobs, depth)
    }
}

impl Bound for VirtioBlk {
    fn driver(&self) -> &'static str {
        "virtio-blk"
    }

    fn address(&self) -> pci::Address {
        self.dev.function().address()
    }

    fn status(&self) -> String {
        format!(
            "{} blocks of {} bytes ({} KiB){}, {} KiB per request in {} data descriptor(s) at most, depth {}, requestq {} entries, {}, {} request(s)",
            self.blocks(),
            self.limits.block_size,
            self.capacity / 2,
            if self.read_only { ", read-only" } else { "" },
            self.limits.request / 1024,
            self.limits.request.div_ceil(self.limits.segment),
            self.limits.depth,
            self.dev.queue(0).size(),
            self.dev.describe_vectors(),
            self.requests
        )
    }

    fn block(&mut self) -> Option<&mut dyn BlockDevices> {
        Some(self)
    }

    /// Reads the first and the last block; then, only when writes to storage are allowed
    /// (`crate::storage`) and the device is writable, writes a pattern over the last block,
    /// reads it back, and restores what was there.
    fn self_test(&mut self) -> Result<String, String> {
        crate::fault::point(self.address(), crate::fault::Point::SelfTest);
        let size = self.limits.block_size as usize;
        let mut first = vec![0u8; size];
        self.read_blocks(
            0,
            &mut [Request {
                lba: 0,
                data: &mut first,
            }],
            1,
        )?;
        let sum = fnv1a(&first);
        if self.read_only {
            return Ok(format!(
                "block 0 fnv1a={sum:016x}; read-only, no write test"
            ));
        }
        // At least one block here: block 0 was just read.
        let last = self.blocks().saturating_sub(1);
        let spb = self.limits.sectors_per_block();
        let mut saved = vec![0u8; size];
        self.read(last * spb, &mut saved)?;
        if !crate::storage::writes_allowed() {
            return Ok(format!(
                "block 0 fnv1a={sum:016x}; block {last} read (fnv1a={:016x}); read only, no write test (boot with storage=write for one)",
                fnv1a(&saved)
            ));
        }
        let salt = self.requests as u8;
        let pattern: Vec<u8> = (0..size)
            .map(|i| (i as u8).wrapping_mul(31) ^ salt)
            .collect();
        self.write(last * spb, &pattern)?;
        let mut back = vec![0u8; size];
        self.read(last * spb, &mut back)?;
        if back != pattern {
            return Err(format!(
                "block {last} read back differs from what was written"
            ));
        }
        self.write(last * spb, &saved)?;
        self.read(last * spb, &mut back)?;
        if back != saved {
            return Err(format!("block {last} not restored"));
        }
        Ok(format!(
            "block 0 fnv1a={sum:016x}; block {last} written, read back and restored, by {}",
            self.dev.irq_kind()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_negotiated_features() {
        // QEMU: SEG_MAX (queue size - 2), BLK_SIZE 512, no SIZE_MAX.
        let l = Limits::new(F_SEG_MAX | F_BLK_SIZE, 0, 254, 512, 256).unwrap();
        assert_eq!(l.block_size, 512);
        assert_eq!(l.request, block::MAX_REQUEST_BYTES);
        assert_eq!(l.data_segments(l.request), [(0, 1 << 20)]);
        assert_eq!(l.depth, MAX_DEPTH, "3 descriptors per request: 85 fit");
        // 4 KiB logical blocks.
        let l = Limits::new(F_BLK_SIZE, 0, 0, 4096, 128).unwrap();
        assert_eq!((l.block_size, l.sectors_per_block()), (4096, 8));
        // Without BLK_SIZE the field means nothing: 512.
        let l = Limits::new(0, 0, 0, 4096, 128).unwrap();
        assert_eq!(l.block_size, 512);
        // Impossible block sizes are refused.
        assert!(Limits::new(F_BLK_SIZE, 0, 0, 1000, 128).is_err());
        assert!(Limits::new(F_BLK_SIZE, 0, 0, 256, 128).is_err());
    }

    #[test]
    fn size_max_makes_a_chain_of_data_descriptors() {
        // 64 KiB per descriptor, 8 descriptors: 512 KiB per request, 10 descriptors each.
        let l = Limits::new(F_SIZE_MAX | F_SEG_MAX, 65536, 8, 0, 128).unwrap();
        assert_eq!(l.request, 512 * 1024);
        assert_eq!(l.depth, 12);
        let s = l.data_segments(200 * 1024);
        assert_eq!(
            s,
            [(0, 65536), (65536, 65536), (131072, 65536), (196608, 8192)]
        );
        // seg_max above what the queue can chain is capped by the queue.
        let l = Limits::new(F_SIZE_MAX | F_SEG_MAX, 4096, 1000, 0, 16).unwrap();
        assert_eq!((l.segments, l.request), (14, 14 * 4096));
        // A block that fits in no request.
        let e = Limits::new(F_SIZE_MAX | F_SEG_MAX | F_BLK_SIZE, 512, 1, 4096, 16).unwrap_err();
        assert!(e.contains("no room"), "{e}");
    }
}
