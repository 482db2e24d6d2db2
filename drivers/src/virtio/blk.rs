//! virtio-blk (virtio 1.1 §5.2): a block device on one request queue.
//!
//! - §5.2.2: one virtqueue, `requestq` (index 0).
//! - §5.2.3: features. Only VIRTIO_BLK_F_RO (bit 5) is accepted besides VIRTIO_F_VERSION_1:
//!   the driver honours it by refusing writes. VIRTIO_BLK_F_FLUSH is not negotiated, so the
//!   device commits every write before completing it (QEMU switches the disk to
//!   write-through) and no flush request is ever needed.
//! - §5.2.4: device configuration. `capacity` (64 bits at offset 0, in 512-byte sectors) is
//!   read as two 32-bit halves inside a `config_generation` check (§2.4.1), again after every
//!   configuration-change interrupt (a resized disk).
//! - §5.2.6: a request is three descriptors: a 16-byte header the device reads (`type`:
//!   0 IN = read, 1 OUT = write; `reserved`; `sector`), the data (written by the device for
//!   IN, read for OUT), and one status byte the device writes (0 OK, 1 IOERR, 2 UNSUPP).
//!
//! Ownership: [`VirtioBlk`] is a [`VirtioPci`] and three numbers. The queue's DMA buffer
//! holds the header (offset 0), the status byte (16) and a [`DATA_BYTES`] data area (512);
//! requests larger than that are split. Unbinding drops the `VirtioPci`, which resets the
//! device before the rings and that buffer are freed (see [`super`]). One request is in
//! flight at a time; a request that times out leaves its descriptors and buffer with the
//! device, so the driver refuses further requests until it is rebound (the reset on unbind
//! takes them back).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;

use pci::irq::{IrqKinds, PciFunction};

use super::{QueueSpec, Segment, Spec, TYPE_BLOCK, VENDOR, VirtioPci, fnv1a};
use crate::{Bound, Driver, Match, ProbeError};

/// Bytes per sector (§5.2.6: always 512, whatever the block size).
pub const SECTOR: usize = 512;
/// Data bytes per request (larger transfers are split).
pub const DATA_BYTES: u64 = 32 * 1024;
/// VIRTIO_BLK_F_RO: the device is read-only.
const F_RO: u64 = 1 << 5;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const HEADER: u64 = 0;
const STATUS: u64 = 16;
const DATA: u64 = 512;
/// How long one request may take.
const TIMEOUT_US: u64 = 2_000_000;

const QUEUES: &[QueueSpec] = &[QueueSpec {
    name: "requestq",
    max_size: 128,
    buffer_bytes: DATA + DATA_BYTES,
}];

/// What the transport sets up for a block device.
pub const SPEC: Spec = Spec {
    device_type: TYPE_BLOCK,
    name: "virtio-blk",
    features: F_RO,
    queues: QUEUES,
};

/// The virtio-blk driver.
pub struct VirtioBlkDriver;

/// A bound virtio-blk device.
#[derive(Debug)]
pub struct VirtioBlk {
    dev: VirtioPci,
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
        let Some(capacity) = read_capacity(&dev) else {
            return Err((
                dev.into_function(),
                ProbeError("no device configuration (capacity)".into()),
            ));
        };
        Ok(VirtioBlk {
            read_only: dev.features() & F_RO != 0,
            config_seen: dev.config_changes(),
            dev,
            capacity,
            requests: 0,
            broken: None,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
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

    /// Reads `out.len()` bytes (whole sectors) from sector `sector` on.
    pub fn read(&mut self, sector: u64, out: &mut [u8]) -> Result<(), String> {
        self.check(sector, out.len())?;
        for (i, chunk) in out.chunks_mut(DATA_BYTES as usize).enumerate() {
            let at = sector + (i as u64) * (DATA_BYTES / SECTOR as u64);
            self.request(T_IN, at, chunk.len() as u32)?;
            super::copy_from(self.dev.queue(0).buffers(), DATA, chunk);
        }
        Ok(())
    }

    /// Writes `data` (whole sectors) from sector `sector` on. Refused, before anything
    /// reaches the device, unless [`crate::storage::writes_allowed`].
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), String> {
        crate::storage::check_write()?;
        if self.read_only {
            return Err("the device is read-only".into());
        }
        self.check(sector, data.len())?;
        for (i, chunk) in data.chunks(DATA_BYTES as usize).enumerate() {
            let at = sector + (i as u64) * (DATA_BYTES / SECTOR as u64);
            super::copy_to(self.dev.queue(0).buffers(), DATA, chunk);
            self.request(T_OUT, at, chunk.len() as u32)?;
        }
        Ok(())
    }

    fn check(&mut self, sector: u64, bytes: usize) -> Result<(), String> {
        if let Some(why) = &self.broken {
            return Err(format!("device unusable until rebound: {why}"));
        }
        if self.dev.config_changes() != self.config_seen {
            self.config_seen = self.dev.config_changes();
            if let Some(c) = read_capacity(&self.dev) {
                self.capacity = c;
            }
        }
        let sectors = (bytes / SECTOR) as u64;
        if bytes == 0 || !bytes.is_multiple_of(SECTOR) {
            return Err(format!("{bytes} bytes is not a whole number of sectors"));
        }
        if sector
            .checked_add(sectors)
            .is_none_or(|end| end > self.capacity)
        {
            return Err(format!(
                "sectors {sector}+{sectors} beyond the capacity of {}",
                self.capacity
            ));
        }
        Ok(())
    }

    /// One request of `bytes` data bytes at the data area, completed by interrupt.
    fn request(&mut self, kind: u32, sector: u64, bytes: u32) -> Result<(), String> {
        let buffers = self.dev.queue(0).buffers();
        buffers.write32(HEADER, kind);
        buffers.write32(HEADER + 4, 0);
        buffers.write64(HEADER + 8, sector);
        buffers.write8(STATUS, 0xff);
        let data = if kind == T_IN {
            Segment::writes(DATA, bytes)
        } else {
            Segment::reads(DATA, bytes)
        };
        let chain = [Segment::reads(HEADER, 16), data, Segment::writes(STATUS, 1)];
        let head = self.dev.submit(0, &chain)?;
        let used = match self.dev.next_used(0, TIMEOUT_US) {
            Ok(u) => u,
            Err(why) => {
                let why = String::from(why);
                self.broken = Some(why.clone());
                return Err(why);
            }
        };
        if used.head != head {
            let why = format!(
                "completion of chain {} while {head} was in flight",
                used.head
            );
            self.broken = Some(why.clone());
            return Err(why);
        }
        let what = if kind == T_IN { "read" } else { "write" };
        match self.dev.queue(0).buffers().read8(STATUS) {
            0 => {
                self.requests += 1;
                Ok(())
            }
            1 => Err(format!("{what} of sector {sector}: I/O error")),
            2 => Err(format!("{what} of sector {sector}: unsupported")),
            s => Err(format!("{what} of sector {sector}: status {s:#x}")),
        }
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
            "{} sectors ({} KiB){}, requestq {} entries, {}, {} request(s)",
            self.capacity,
            self.capacity / 2,
            if self.read_only { ", read-only" } else { "" },
            self.dev.queue(0).size(),
            self.dev.describe_vectors(),
            self.requests
        )
    }

    /// Reads sector 0 and the last sector; then, only when writes to storage are allowed
    /// (`crate::storage`) and the device is writable, writes a pattern over the last sector,
    /// reads it back, and restores what was there.
    fn self_test(&mut self) -> Result<String, String> {
        crate::fault::point(self.address(), crate::fault::Point::SelfTest);
        let mut first = [0u8; SECTOR];
        self.read(0, &mut first)?;
        let sum = fnv1a(&first);
        if self.read_only {
            return Ok(format!(
                "sector 0 fnv1a={sum:016x}; read-only, no write test"
            ));
        }
        // Capacity is at least 1 here: sector 0 was just read.
        let last = self.capacity.saturating_sub(1);
        let mut saved = [0u8; SECTOR];
        self.read(last, &mut saved)?;
        if !crate::storage::writes_allowed() {
            return Ok(format!(
                "sector 0 fnv1a={sum:016x}; sector {last} read (fnv1a={:016x}); read only, no write test (boot with storage=write for one)",
                fnv1a(&saved)
            ));
        }
        let salt = self.requests as u8;
        let pattern: [u8; SECTOR] = core::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ salt);
        self.write(last, &pattern)?;
        let mut back = [0u8; SECTOR];
        self.read(last, &mut back)?;
        if back != pattern {
            return Err(format!(
                "sector {last} read back differs from what was written"
            ));
        }
        self.write(last, &saved)?;
        self.read(last, &mut back)?;
        if back != saved {
            return Err(format!("sector {last} not restored"));
        }
        Ok(format!(
            "sector 0 fnv1a={sum:016x}; sector {last} written, read back and restored, by {}",
            self.dev.irq_kind()
        ))
    }
}
