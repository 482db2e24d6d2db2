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
//! reset on unbind takes them back). The disk's name in the block registry
//! ([`block::Registration`], the first field) goes before all of that. A leak keeps the
//! device running with its queue, its slots (up to [`MAX_DEPTH`] of [`Limits::request`]
//! bytes) and a name that leads nowhere.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use pci::irq::{IrqKinds, PciFunction};
use pci::window::DmaBuffer;

mod io;
mod limits;

pub use limits::Limits;

use super::{QueueSpec, Spec, TYPE_BLOCK, VENDOR, VirtioPci, fnv1a};
use crate::block::{self, BlockDevices, DiskInfo, DiskKind, DmaRequest, Request, Tracker};
use crate::{Bound, Driver, Match, ProbeError};
use io::{Buffer, Job};

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
    let (low, high) = t
        .read_config(dev.function(), |t| (t.device_read32(0), t.device_read32(4)))
        .ok()?;
    Some(u64::from(low?) | u64::from(high?) << 32)
}

/// `size_max`, `seg_max`, `blk_size` (§5.2.4), zero where the structure is too short.
fn read_shape(dev: &VirtioPci) -> Result<(u32, u32, u32), String> {
    let t = dev.transport();
    t.read_config(dev.function(), |t| {
        (
            t.device_read32(8).unwrap_or(0),
            t.device_read32(12).unwrap_or(0),
            t.device_read32(20).unwrap_or(0),
        )
    })
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
        let (size_max, seg_max, blk_size) = match read_shape(&dev) {
            Ok(s) => s,
            Err(why) => return fail(dev, why),
        };
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
            // Room for every request in flight: the heap does not grow after probe.
            heads: Vec::with_capacity(limits.depth),
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
        let changes = self.dev.config_changes();
        if changes != self.config_seen {
            // Seen only once read: a capacity whose generation did not settle is read again
            // at the next request rather than missed.
            if let Some(c) = read_capacity(&self.dev) {
                self.capacity = c;
                self.config_seen = changes;
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
        let lengths = requests.iter().map(|r| r.data.len() as u64);
        let depth = block::commands_in_flight(depth, lengths, size, max);
        let mut jobs: Vec<Job<'_>> = block::pieces(requests, size, max)
            .into_iter()
            .map(|p| Job {
                lba: p.lba,
                buffer: Buffer::Read(p.data),
            })
            .collect();
        self.run(T_IN, &mut jobs, depth)
    }

    fn dma_buffer(&self, disk: usize, bytes: u64) -> Result<DmaBuffer, String> {
        if disk != 0 {
            return Err(format!("no disk {disk}"));
        }
        self.dev.dma_buffer(bytes)
    }

    fn read_dma(
        &mut self,
        disk: usize,
        requests: &mut [DmaRequest<'_>],
        depth: usize,
    ) -> Result<(), String> {
        if disk != 0 {
            return Err(format!("no disk {disk}"));
        }
        self.usable()?;
        let master = self.dev.bus_master().ok_or("bus mastering not set up")?;
        block::check_dma(&self.info(), master, requests)?;
        let (size, max) = (self.limits.block_size, self.limits.request);
        let lengths = requests.iter().map(|r| r.data.len());
        let depth = block::commands_in_flight(depth, lengths, size, max);
        let mut jobs: Vec<Job<'_>> = block::dma_pieces(requests, size, max)
            .into_iter()
            .map(|p| Job {
                lba: p.lba,
                buffer: Buffer::Dma(p.data),
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
            "{} sectors ({} KiB) in {} blocks of {} bytes{}, {} KiB per request in {} data descriptor(s) at most, depth {}, requestq {} entries, {}, {} request(s)",
            self.capacity,
            self.capacity / 2,
            self.blocks(),
            self.limits.block_size,
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
