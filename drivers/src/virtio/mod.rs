//! Modern virtio over PCI (virtio 1.1, OASIS csd01): the transport the block and network
//! drivers share.
//!
//! # What the spec asks, and where it is done here
//!
//! - §4.1.2 device IDs: vendor 0x1AF4; a modern device has ID 0x1040 + device type, a
//!   transitional one an ID in 0x1000..=0x103F and the device type in its Subsystem ID
//!   ([`device_type`]). Only the modern interface is driven (no legacy I/O BAR), so a
//!   transitional device works exactly like a modern one.
//! - §4.1.4 vendor-specific capabilities locate the structures ([`Caps`]): common
//!   configuration (§4.1.4.3), notifications (§4.1.4.4), ISR status (§4.1.4.5),
//!   device-specific configuration (§4.1.4.6) and the PCI configuration access window
//!   (§4.1.4.7). The first usable instance of each type is taken.
//! - §3.1.1 / §4.1.5 initialisation ([`VirtioPci::probe`]): reset, ACKNOWLEDGE, DRIVER,
//!   feature negotiation (VIRTIO_F_VERSION_1 required, nothing accepted that the driver does
//!   not handle), FEATURES_OK and its read-back, interrupt vectors, the virtqueues, DRIVER_OK.
//! - §2.6 split virtqueues ([`Virtqueue`]): descriptor table, available ring, used ring, a
//!   free list of descriptors, completions consumed after the queue's interrupt.
//! - §4.1.5.1.2 MSI-X: entry 0 is the configuration-change vector, queue `i` gets entry
//!   `1 + i`; with fewer entries than `1 + queues` the queues share what there is (config 0,
//!   queues round-robin over the rest, or everything on entry 0), and without MSI-X the
//!   function's INTx pin with the ISR read in the handler (§4.1.4.5: the read clears the ISR
//!   and deasserts the line).
//!
//! # Register access widths
//!
//! The spec wants every field accessed at its natural width (§4.1.3.1). [`BarWindow`] only
//! does dword accesses, so:
//!
//! - 32-bit fields (feature words) and 64-bit fields (queue addresses, as two 32-bit halves,
//!   which §4.1.3.1 allows) go through the mapped BAR windows;
//! - 8- and 16-bit fields (`device_status`, `queue_select`, `queue_size`, the MSI-X vector
//!   fields, `queue_notify_off`, `config_generation`, the notification itself, byte-wide
//!   device configuration such as a MAC address) go through the PCI configuration access
//!   capability, a window in configuration space that forwards 1-, 2- or 4-byte accesses to
//!   any BAR offset (§4.1.4.7; every modern device must have one). The window's setup is
//!   cached, so a notification after the first is one configuration write.
//! - The one exception is the ISR read in the INTx handler: an interrupt can arrive in the
//!   middle of a window access, so the handler reads the mapped ISR structure as a dword
//!   (INTx is only used when that structure is at least 4 bytes long, as QEMU's is).
//!
//! (A `read16`/`write16` on [`BarWindow`] would let everything go through the BAR mappings.)
//!
//! # Ownership
//!
//! A bound device is one [`VirtioPci`]. It owns, in field order:
//!
//! - the [`Transport`]: BAR windows on the common, ISR and device structures (unmapped on
//!   drop; a leak costs MMIO window space) and the configuration window's cached setup;
//! - the [`Virtqueue`]s, each owning its rings (one DMA buffer: descriptor table, available
//!   ring, used ring) and the DMA buffer its requests point into (drivers name buffers by
//!   offset in it, never by bus address, so the device can only be pointed at memory the
//!   queue owns); a leak costs their frames;
//! - the interrupt vectors with their handlers and the function handle ([`IrqVectors`]).
//!
//! `Drop` resets the device first (device_status 0, then waits until it reads back 0, §2.1.2
//! and §4.1.4.3.2): after that the device neither reads nor writes guest memory nor raises
//! interrupts. Only then do the fields drop in order: windows unmapped, rings and buffers
//! freed, handlers uninstalled, MSI-X entries masked and disabled, vectors freed, the
//! function handed back to the PCI layer. Freeing the rings first would let a running device
//! write into frames that already belong to someone else. If the device does not confirm the
//! reset within [`RESET_TIMEOUT_US`], the queues are leaked on purpose (their frames stay
//! allocated forever): a leak costs memory, a free under a live device costs correctness.
//! Leaking a whole `VirtioPci` (`mem::forget`) likewise leaves the device running on memory
//! that stays allocated, its vectors and handlers installed and the function claimed: it
//! costs frames, vectors, window space and the device, never someone else's memory.

pub mod blk;
pub mod net;

pub use crate::fnv1a;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicU64, Ordering, fence};

use pci::function::{BusMaster, ConfigWriteError, VendorWindow};
use pci::irq::{IrqKind, IrqKinds, IrqVectors, PciFunction};
use pci::window::{BarWindow, DmaBuffer};

use crate::ProbeError;

/// The virtio vendor ID (§4.1.2).
pub const VENDOR: u16 = 0x1AF4;
/// Device type of a network card (§5.1).
pub const TYPE_NET: u16 = 1;
/// Device type of a block device (§5.2).
pub const TYPE_BLOCK: u16 = 2;

/// VIRTIO_F_VERSION_1 (§6): the device is modern; required.
pub const F_VERSION_1: u64 = 1 << 32;

/// How long the device may take to confirm a reset.
pub const RESET_TIMEOUT_US: u64 = 1_000_000;

// Device status bits (§2.1).
const ACKNOWLEDGE: u8 = 1;
const DRIVER: u8 = 2;
const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;
const DEVICE_NEEDS_RESET: u8 = 0x40;
const FAILED: u8 = 0x80;

// Capability types (§4.1.4).
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_PCI_CFG: u8 = 5;
/// PCI capability ID of vendor-specific capabilities.
const CAP_ID_VENDOR: u8 = 0x09;

// Common configuration (§4.1.4.3): offset of each field.
const DEVICE_FEATURE_SELECT: u32 = 0x00;
const DEVICE_FEATURE: u32 = 0x04;
const DRIVER_FEATURE_SELECT: u32 = 0x08;
const DRIVER_FEATURE: u32 = 0x0C;
const MSIX_CONFIG: u32 = 0x10;
const NUM_QUEUES: u32 = 0x12;
const DEVICE_STATUS: u32 = 0x14;
const CONFIG_GENERATION: u32 = 0x15;
const QUEUE_SELECT: u32 = 0x16;
const QUEUE_SIZE: u32 = 0x18;
const QUEUE_MSIX_VECTOR: u32 = 0x1A;
const QUEUE_ENABLE: u32 = 0x1C;
const QUEUE_NOTIFY_OFF: u32 = 0x1E;
const QUEUE_DESC: u32 = 0x20;
const QUEUE_DRIVER: u32 = 0x28;
const QUEUE_DEVICE: u32 = 0x30;
/// Length of the common configuration structure this driver uses.
const COMMON_LEN: u32 = 0x38;
/// "No MSI-X vector" (§4.1.4.3).
const NO_VECTOR: u16 = 0xFFFF;

// Descriptor flags (§2.6.5).
const DESC_F_NEXT: u32 = 1;
const DESC_F_WRITE: u32 = 2;

/// The virtio device type of a PCI function, if it is a virtio device (§4.1.2.1): modern ID
/// 0x1040 + type, or transitional ID 0x1000..=0x103F with the type in the Subsystem ID.
pub fn device_type(info: &pci::Function) -> Option<u16> {
    if info.vendor_id != VENDOR {
        return None;
    }
    match info.device_id {
        0x1000..=0x103F => info.subsystem_id,
        id @ 0x1041..=0x107F => Some(id - 0x1040),
        _ => None,
    }
}

/// Where a structure lies: a BAR and a byte range in it (§4.1.4, `struct virtio_pci_cap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Structure {
    /// BAR index.
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Length in bytes.
    pub length: u32,
}

/// The virtio capabilities of a function (§4.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Common configuration.
    pub common: Structure,
    /// Notification area.
    pub notify: Structure,
    /// `notify_off_multiplier`.
    pub notify_multiplier: u32,
    /// ISR status.
    pub isr: Structure,
    /// Device-specific configuration, if the device has any.
    pub device: Option<Structure>,
    /// Configuration-space offset of the PCI configuration access capability.
    pub pci_cfg: u16,
}

impl Caps {
    /// Reads the vendor-specific capabilities of `function`: the first instance of each type
    /// that lies inside a memory BAR (§4.1.4.1: the driver uses the first it can).
    pub fn find(function: &PciFunction) -> Result<Caps, String> {
        let info = function.info();
        let mut found: [Option<(Structure, u16)>; 6] = [None; 6];
        for cap in info.capabilities.iter().filter(|c| c.id == CAP_ID_VENDOR) {
            let at = u16::from(cap.offset);
            let head = function.config_read32(at);
            let (cap_len, cfg_type) = ((head >> 16) as u8, (head >> 24) as u8);
            if !(CAP_COMMON..=CAP_PCI_CFG).contains(&cfg_type) || cap_len < 16 {
                continue;
            }
            let structure = Structure {
                bar: function.config_read32(at + 4) as u8,
                offset: function.config_read32(at + 8),
                length: function.config_read32(at + 12),
            };
            let slot = &mut found[usize::from(cfg_type)];
            if slot.is_some() {
                continue;
            }
            if cfg_type == CAP_PCI_CFG {
                // Its BAR fields select what the window reaches; nothing to locate.
                if cap_len >= 20 {
                    *slot = Some((structure, at));
                }
                continue;
            }
            if cfg_type == CAP_NOTIFY && cap_len < 20 {
                continue;
            }
            let fits = info
                .bars
                .get(usize::from(structure.bar))
                .copied()
                .flatten()
                .filter(|b| b.kind != pci::BarKind::Io)
                .is_some_and(|b| {
                    structure.length > 0
                        && u64::from(structure.offset) + u64::from(structure.length) <= b.size
                });
            if fits {
                *slot = Some((structure, at));
            }
        }
        let need = |t: u8, what: &str| {
            found[usize::from(t)].ok_or_else(|| {
                format!("no usable virtio {what} capability (a legacy-only device?)")
            })
        };
        let common = need(CAP_COMMON, "common configuration")?.0;
        let (notify, notify_at) = need(CAP_NOTIFY, "notification")?;
        let isr = need(CAP_ISR, "ISR status")?.0;
        let pci_cfg = need(CAP_PCI_CFG, "PCI configuration access")?.1;
        if common.length < COMMON_LEN {
            return Err(format!("common configuration of {} bytes", common.length));
        }
        Ok(Caps {
            common,
            notify,
            notify_multiplier: function.config_read32(notify_at + 16),
            isr,
            device: found[usize::from(CAP_DEVICE)].map(|(s, _)| s),
            pci_cfg,
        })
    }
}

/// The PCI configuration access capability (§4.1.4.7): `cap.bar`, `cap.offset` and
/// `cap.length` (1, 2 or 4) aim it at a BAR range; reading or writing `pci_cfg_data` then
/// reads or writes that range with an access of that width.
///
/// Only used outside interrupt context (the aim-then-access sequence must not be interleaved
/// with another use), which the `Cell` (no `Sync`) and `&self` callers in one thread ensure.
/// It is never left aimed at a register whose read has side effects (the ISR), so a
/// configuration-space dump (`lspci -v`) cannot disturb the device.
#[derive(Debug)]
struct CfgWindow {
    /// The capability, through the PCI layer's window bounded to it.
    cap: VendorWindow,
    /// (bar, offset, width) it is aimed at, if known.
    aimed: Cell<Option<(u8, u32, u8)>>,
}

impl CfgWindow {
    /// Aims the window (`cap.bar`, `cap.offset`, `cap.length`, §4.1.4.9).
    fn aim(&self, bar: u8, offset: u32, width: u8) -> Result<(), ConfigWriteError> {
        debug_assert!(matches!(width, 1 | 2 | 4) && offset.is_multiple_of(u32::from(width)));
        if self.aimed.get() == Some((bar, offset, width)) {
            return Ok(());
        }
        self.aimed.set(None);
        let head = self.cap.read32(4)?;
        self.cap.write32(4, (head & !0xff) | u32::from(bar))?;
        self.cap.write32(8, offset)?;
        self.cap.write32(12, u32::from(width))?;
        self.aimed.set(Some((bar, offset, width)));
        Ok(())
    }

    /// Reads through the window; all ones if the PCI layer refused to aim it (as a register
    /// that cannot be reached reads).
    fn read(&self, _f: &PciFunction, bar: u8, offset: u32, width: u8) -> u32 {
        let value = self
            .aim(bar, offset, width)
            .and_then(|()| self.cap.read32(16))
            .unwrap_or(u32::MAX);
        match width {
            1 => value & 0xff,
            2 => value & 0xffff,
            _ => value,
        }
    }

    /// Writes through the window. [`Transport::map`] checked that the window reaches the
    /// common configuration, so a refusal here cannot happen for the registers it is used for.
    fn write(&self, _f: &PciFunction, bar: u8, offset: u32, width: u8, value: u32) {
        if self.aim(bar, offset, width).is_ok() {
            let _ = self.cap.write32(16, value);
        }
    }
}

/// The mapped structures of one device, and how to reach its narrow registers.
///
/// Owns the BAR windows (unmapped on drop). The ISR window is shared (`Arc`) with the INTx
/// handler, which may outlive the `Transport` by the time it takes the vectors to drop.
#[derive(Debug)]
pub struct Transport {
    caps: Caps,
    common: BarWindow,
    device: Option<BarWindow>,
    /// Present when the ISR structure holds a dword (the handler reads it as one).
    isr: Option<Arc<BarWindow>>,
    window: CfgWindow,
}

impl Transport {
    /// Maps the structures `caps` names.
    pub fn map(function: &PciFunction, caps: Caps) -> Result<Transport, String> {
        let map = |s: Structure, len: u32| {
            function
                .map_bar(usize::from(s.bar), u64::from(s.offset), u64::from(len))
                .map_err(|e| format!("BAR{}+{:#x}: {e}", s.bar, s.offset))
        };
        let common = map(caps.common, COMMON_LEN)?;
        let device = match caps.device {
            Some(s) => Some(map(s, s.length.min(0x1000))?),
            None => None,
        };
        let isr = if caps.isr.length >= 4 {
            Some(Arc::new(map(caps.isr, 4)?))
        } else {
            None
        };
        let window = CfgWindow {
            cap: function
                .vendor_window(caps.pci_cfg)
                .ok_or("the PCI configuration access capability is not vendor-specific")?,
            aimed: Cell::new(None),
        };
        let c = caps.common;
        window
            .aim(c.bar, c.offset, 1)
            .map_err(|e| format!("PCI configuration access window: {e}"))?;
        Ok(Transport {
            caps,
            common,
            device,
            isr,
            window,
        })
    }

    /// The capabilities found.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    fn common_read(&self, f: &PciFunction, field: u32, width: u8) -> u32 {
        let c = self.caps.common;
        self.window.read(f, c.bar, c.offset + field, width)
    }

    fn common_write(&self, f: &PciFunction, field: u32, width: u8, value: u32) {
        let c = self.caps.common;
        self.window.write(f, c.bar, c.offset + field, width, value)
    }

    /// `device_status`.
    pub fn status(&self, f: &PciFunction) -> u8 {
        self.common_read(f, DEVICE_STATUS, 1) as u8
    }

    fn set_status(&self, f: &PciFunction, status: u8) {
        self.common_write(f, DEVICE_STATUS, 1, u32::from(status));
    }

    /// `config_generation` (§2.4.1: changes when the device configuration changed).
    pub fn generation(&self, f: &PciFunction) -> u8 {
        self.common_read(f, CONFIG_GENERATION, 1) as u8
    }

    /// Resets the device (§4.1.4.3.2): writes 0 to `device_status` and waits until it reads
    /// 0. Whether the device confirmed within [`RESET_TIMEOUT_US`].
    pub fn reset(&self, f: &PciFunction) -> bool {
        self.set_status(f, 0);
        let done = f.wait_until(RESET_TIMEOUT_US, || self.status(f) == 0);
        // A reset is the one event after which nothing about the window is assumed.
        self.window.aimed.set(None);
        done
    }

    /// Sets FAILED (§3.1.1: the driver gave up), then resets.
    fn fail(&self, f: &PciFunction) {
        let status = self.status(f);
        self.set_status(f, status | FAILED);
        self.reset(f);
    }

    /// The 64-bit feature words (§4.1.4.3: two 32-bit halves through the select register).
    fn device_features(&self) -> u64 {
        let mut features = 0;
        for half in 0..2u32 {
            self.common.write32(u64::from(DEVICE_FEATURE_SELECT), half);
            features |= u64::from(self.common.read32(u64::from(DEVICE_FEATURE))) << (32 * half);
        }
        features
    }

    fn set_driver_features(&self, features: u64) {
        for half in 0..2u32 {
            self.common.write32(u64::from(DRIVER_FEATURE_SELECT), half);
            self.common
                .write32(u64::from(DRIVER_FEATURE), (features >> (32 * half)) as u32);
        }
    }

    /// Reads a dword of the device-specific configuration at `offset`.
    pub fn device_read32(&self, offset: u32) -> Option<u32> {
        let d = self.device.as_ref()?;
        let inside = pci::range::checked_range(u64::from(offset), 4, d.len()).is_ok();
        inside.then(|| d.read32(u64::from(offset)))
    }

    /// Reads a byte of the device-specific configuration at `offset` (through the window).
    pub fn device_read8(&self, f: &PciFunction, offset: u32) -> Option<u8> {
        let s = self.caps.device?;
        (offset < s.length).then(|| self.window.read(f, s.bar, s.offset + offset, 1) as u8)
    }

    /// Reads device configuration consistently: retries `read` until `config_generation` is
    /// the same before and after it (§2.4.1).
    pub fn read_config<T>(&self, f: &PciFunction, mut read: impl FnMut(&Self) -> T) -> T {
        loop {
            let before = self.generation(f);
            let value = read(self);
            if self.generation(f) == before {
                return value;
            }
        }
    }

    /// Notifies the device that queue `queue` has new buffers (§4.1.4.4: the queue index,
    /// 16 bits, written at the queue's notification address).
    fn notify(&self, f: &PciFunction, queue: &Virtqueue) {
        // Descriptors and the available index must be visible before the device looks.
        fence(Ordering::SeqCst);
        self.window.write(
            f,
            self.caps.notify.bar,
            queue.notify_at,
            2,
            u32::from(queue.index),
        );
    }
}

/// Why waiting for a completion failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// Nothing arrived in time (the text says whether the device completed without
    /// interrupting).
    Timeout(String),
    /// The device broke the queue's rules.
    Device(String),
}

impl core::fmt::Display for WaitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WaitError::Timeout(why) | WaitError::Device(why) => f.write_str(why),
        }
    }
}

impl From<WaitError> for String {
    fn from(e: WaitError) -> String {
        alloc::string::ToString::to_string(&e)
    }
}

/// A part of a request: a byte range of the queue's buffer and who writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Offset in the queue's DMA buffer.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes it (VIRTQ_DESC_F_WRITE), else it reads it.
    pub device_writes: bool,
}

impl Segment {
    /// A range the device reads.
    pub const fn reads(offset: u64, len: u32) -> Segment {
        Segment {
            offset,
            len,
            device_writes: false,
        }
    }

    /// A range the device writes.
    pub const fn writes(offset: u64, len: u32) -> Segment {
        Segment {
            offset,
            len,
            device_writes: true,
        }
    }
}

/// A completed request, taken from the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// Head descriptor of the chain (what [`Virtqueue::add`] returned).
    pub head: u16,
    /// Bytes the device wrote into the chain's device-writable segments.
    pub len: u32,
    /// Offset of the chain's first segment in the queue's buffer.
    pub offset: u64,
}

/// One split virtqueue (§2.6) and the DMA buffer its requests use.
///
/// Owns two DMA buffers: `ring` (descriptor table at 0, available ring after it, used ring
/// after that at 4-byte alignment, §2.6: alignments 16, 2 and 4) and `buffers`, which every
/// [`Segment`] points into. Both are freed when the queue drops, so it may only drop after
/// its device was reset: [`VirtioPci`] guarantees that, and the type cannot be built outside
/// this module.
///
/// The driver-side bookkeeping mirrors the descriptor table: `next[d]` is descriptor `d`'s
/// successor (in a chain in flight, or in the free list starting at `free_head`), and
/// `chain[h]` is the length of the chain headed by `h` while the device holds it (0
/// otherwise), so descriptors return to the free list exactly once and a used element naming
/// anything else is caught as a device error.
#[derive(Debug)]
pub struct Virtqueue {
    index: u16,
    size: u16,
    ring: DmaBuffer,
    buffers: DmaBuffer,
    avail: u64,
    used: u64,
    free_head: u16,
    free: u16,
    next: Vec<u16>,
    chain: Vec<u16>,
    first_offset: Vec<u64>,
    avail_idx: u16,
    last_used: u16,
    /// Bumped by the interrupt handler of the queue's vector.
    interrupts: Arc<AtomicU64>,
    /// Interrupt count after which the used ring was last found empty.
    seen: u64,
    /// Offset of the notification address in the notify structure's BAR.
    notify_at: u32,
    /// MSI-X table entry, or [`NO_VECTOR`].
    vector: u16,
}

/// Byte offsets of the available ring, the used ring, and the total ring size for `size`
/// entries (§2.6.2).
const fn ring_layout(size: u16) -> (u64, u64, u64) {
    let n = size as u64;
    let avail = 16 * n;
    let used = (avail + 6 + 2 * n).next_multiple_of(4);
    (avail, used, used + 6 + 8 * n)
}

impl Virtqueue {
    /// A queue of `size` entries (a power of two) with a `buffer_bytes` DMA buffer.
    fn new(
        master: &BusMaster,
        index: u16,
        size: u16,
        buffer_bytes: u64,
        interrupts: Arc<AtomicU64>,
    ) -> Result<Virtqueue, String> {
        assert!(
            size.is_power_of_two(),
            "split queue sizes are powers of two"
        );
        let (avail, used, total) = ring_layout(size);
        let ring = master
            .dma_buffer(total)
            .map_err(|e| format!("queue {index} rings: {e}"))?;
        let buffers = master
            .dma_buffer(buffer_bytes.max(1))
            .map_err(|e| format!("queue {index} buffers: {e}"))?;
        Ok(Virtqueue {
            index,
            size,
            ring,
            buffers,
            avail,
            used,
            free_head: 0,
            free: size,
            next: (1..=size).map(|i| i % size).collect(),
            chain: alloc::vec![0; usize::from(size)],
            first_offset: alloc::vec![0; usize::from(size)],
            avail_idx: 0,
            last_used: 0,
            interrupts,
            seen: 0,
            notify_at: 0,
            vector: NO_VECTOR,
        })
    }

    /// Queue index on the device.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Descriptors not in flight.
    pub fn free_descriptors(&self) -> u16 {
        self.free
    }

    /// The DMA buffer requests point into.
    pub fn buffers(&self) -> &DmaBuffer {
        &self.buffers
    }

    /// Interrupts counted for this queue.
    pub fn interrupts(&self) -> u64 {
        self.interrupts.load(Ordering::Acquire)
    }

    /// Makes `chain` available to the device (§2.6.13): descriptors from the free list, the
    /// head in the next available-ring slot, then the available index. Returns the head. The
    /// device is not told: see [`VirtioPci::notify`].
    pub fn add(&mut self, chain: &[Segment]) -> Result<u16, String> {
        let n = chain.len();
        if n == 0 || n > usize::from(self.free) {
            return Err(format!(
                "queue {}: {n} descriptor(s) asked, {} free",
                self.index, self.free
            ));
        }
        for s in chain {
            let inside = pci::range::checked_range(s.offset, u64::from(s.len), self.buffers.len());
            if s.len == 0 || inside.is_err() {
                return Err(format!(
                    "queue {}: segment {:#x}+{:#x} outside its {:#x}-byte buffer",
                    self.index,
                    s.offset,
                    s.len,
                    self.buffers.len()
                ));
            }
        }
        let head = self.free_head;
        let mut d = head;
        for (i, s) in chain.iter().enumerate() {
            let last = i + 1 == n;
            let at = 16 * u64::from(d);
            self.ring
                .write_bus_address(at, self.buffers.bus_address_at(s.offset));
            self.ring.write32(at + 8, s.len);
            let mut flags = if s.device_writes { DESC_F_WRITE } else { 0 };
            let next = if last {
                0
            } else {
                flags |= DESC_F_NEXT;
                u32::from(self.next[usize::from(d)])
            };
            self.ring.write32(at + 12, flags | next << 16);
            if !last {
                d = self.next[usize::from(d)];
            }
        }
        // The free list continues after the chain's last descriptor.
        self.free_head = self.next[usize::from(d)];
        self.free -= n as u16;
        self.chain[usize::from(head)] = n as u16;
        self.first_offset[usize::from(head)] = chain[0].offset;
        // The ring entry (only the device's past reads could see this slot: bytes are fine),
        // then, once it is visible, the index that publishes it (one dword with the flags,
        // which stay 0: interrupts wanted).
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.ring.write8(slot, head as u8);
        self.ring.write8(slot + 1, (head >> 8) as u8);
        fence(Ordering::Release);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.ring
            .write32(self.avail, u32::from(self.avail_idx) << 16);
        Ok(head)
    }

    /// The device's used index.
    fn used_idx(&self) -> u16 {
        (self.ring.read32(self.used) >> 16) as u16
    }

    /// Takes the next used element, if any (§2.6.8), and returns its descriptors to the free
    /// list. An element naming a descriptor that is not the head of a chain in flight is a
    /// device error.
    pub fn pop_used(&mut self) -> Result<Option<Used>, String> {
        let idx = self.used_idx();
        if idx == self.last_used {
            return Ok(None);
        }
        if idx.wrapping_sub(self.last_used) > self.size {
            return Err(format!(
                "queue {}: used index {idx} is more than {} ahead of {}",
                self.index, self.size, self.last_used
            ));
        }
        // The element is read only after the index that announced it.
        fence(Ordering::Acquire);
        let at = self.used + 4 + 8 * u64::from(self.last_used % self.size);
        let (id, len) = (self.ring.read32(at), self.ring.read32(at + 4));
        self.last_used = self.last_used.wrapping_add(1);
        let count = usize::try_from(id)
            .ok()
            .and_then(|i| self.chain.get(i).copied())
            .filter(|&c| c != 0)
            .ok_or_else(|| {
                format!(
                    "queue {}: device returned descriptor {id}, not a chain in flight",
                    self.index
                )
            })?;
        let head = id as u16;
        let mut tail = head;
        for _ in 1..count {
            tail = self.next[usize::from(tail)];
        }
        self.next[usize::from(tail)] = self.free_head;
        self.free_head = head;
        self.free += count;
        self.chain[usize::from(head)] = 0;
        Ok(Some(Used {
            head,
            len,
            offset: self.first_offset[usize::from(head)],
        }))
    }
}

/// What a device driver asks of the transport.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Device type (§5).
    pub device_type: u16,
    /// Owner name for the interrupt handlers.
    pub name: &'static str,
    /// Features the driver handles besides VIRTIO_F_VERSION_1; only those the device offers
    /// are accepted.
    pub features: u64,
    /// The queues to set up, in index order from 0: name, largest size wanted, and the size
    /// of the DMA buffer their requests use.
    pub queues: &'static [QueueSpec],
}

/// One queue a driver wants.
#[derive(Clone, Copy, Debug)]
pub struct QueueSpec {
    /// The spec's name for it (e.g. `requestq`).
    pub name: &'static str,
    /// At most this many entries (the device may offer fewer).
    pub max_size: u16,
    /// Bytes of DMA buffer for its requests.
    pub buffer_bytes: u64,
}

/// How interrupts reach the queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// MSI-X with this many entries: config on entry 0, queue `i` on [`queue_vector`].
    Msix(u16),
    /// The INTx pin; the handler reads the ISR.
    Intx,
}

/// The MSI-X entry of queue `queue` when `vectors` entries were granted: `1 + queue` with
/// enough of them, round-robin over entries 1.. when there are fewer, entry 0 (shared with
/// configuration changes) when there is only one.
pub const fn queue_vector(queue: u16, vectors: u16) -> u16 {
    if vectors >= 2 {
        1 + queue % (vectors - 1)
    } else {
        0
    }
}

/// A bound modern virtio-pci device: transport, queues, vectors. See the module
/// documentation for what it owns and the order `Drop` releases it in.
#[derive(Debug)]
pub struct VirtioPci {
    transport: Transport,
    queues: Vec<Virtqueue>,
    features: u64,
    routing: Routing,
    names: &'static [QueueSpec],
    config_changes: Arc<AtomicU64>,
    /// The device was reset (by [`VirtioPci::stop`]); nothing of it runs.
    stopped: bool,
    /// `Some` until [`VirtioPci::into_function`] takes it; owns the function handle.
    irq: Option<IrqVectors>,
    /// Bus mastering for the queues' DMA (declared last: it goes off after everything else;
    /// queue memory dropped before then waits in the function's quarantine).
    master: Option<BusMaster>,
}

impl VirtioPci {
    /// Takes `function` through initialisation (§3.1.1) as `spec` says, with interrupts of
    /// the kinds `kinds` allows (MSI-X preferred, then INTx). On failure the device is reset
    /// and the function comes back with the reason.
    pub fn probe(
        function: PciFunction,
        spec: &Spec,
        kinds: IrqKinds,
    ) -> Result<VirtioPci, (PciFunction, ProbeError)> {
        // The bus prefixes the driver's name.
        let e = ProbeError;
        if device_type(function.info()) != Some(spec.device_type) {
            return Err((function, e("not this virtio device type".into())));
        }
        let transport = match Caps::find(&function).and_then(|c| Transport::map(&function, c)) {
            Ok(t) => t,
            Err(why) => return Err((function, e(why))),
        };
        // 1-6: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK (and its read-back).
        let features = match negotiate(&transport, &function, spec) {
            Ok(f) => f,
            Err(why) => {
                transport.fail(&function);
                return Err((function, e(why)));
            }
        };
        let queues = spec.queues.len() as u16;
        let available = transport.common_read(&function, NUM_QUEUES, 2) as u16;
        if available < queues {
            transport.fail(&function);
            return Err((
                function,
                e(format!("{available} queue(s), {queues} needed")),
            ));
        }
        let irq = match allocate_vectors(function, queues, kinds, transport.isr.is_some()) {
            Ok(irq) => irq,
            Err((function, why)) => {
                transport.fail(&function);
                return Err((function, e(why)));
            }
        };
        let routing = match irq.kind() {
            IrqKind::Intx => Routing::Intx,
            _ => Routing::Msix(irq.len() as u16),
        };
        // From here the device state lives in `dev`: a failure drops back through
        // `into_function`, which resets before freeing anything.
        let mut dev = VirtioPci {
            transport,
            queues: Vec::new(),
            features,
            routing,
            names: spec.queues,
            config_changes: Arc::new(AtomicU64::new(0)),
            stopped: false,
            irq: Some(irq),
            master: None,
        };
        match dev.bring_up(spec) {
            Ok(()) => Ok(dev),
            Err(why) => {
                dev.transport.fail(dev.function());
                Err((dev.into_function(), e(why)))
            }
        }
    }

    fn irq(&self) -> &IrqVectors {
        self.irq
            .as_ref()
            .expect("VirtioPci used after into_function")
    }

    /// The function (for its clock, address and DMA buffers).
    pub fn function(&self) -> &PciFunction {
        self.irq().function()
    }

    /// Handlers, vectors, queues, DRIVER_OK (§3.1.1 steps 7-8).
    fn bring_up(&mut self, spec: &Spec) -> Result<(), String> {
        let counters: Vec<Arc<AtomicU64>> = spec
            .queues
            .iter()
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        self.install_handlers(spec.name, &counters)?;
        // Bus mastering for the queues, whichever interrupt kind was granted; off again when
        // the guard drops, after the vectors.
        self.master = Some(self.irq().function().bus_master());
        let f = self.irq().function();
        if let Routing::Msix(_) = self.routing {
            let t = &self.transport;
            t.common_write(f, MSIX_CONFIG, 2, 0);
            let got = t.common_read(f, MSIX_CONFIG, 2) as u16;
            if got != 0 {
                return Err(format!("config vector 0 refused (reads {got:#x})"));
            }
        }
        for (i, (q, counter)) in spec.queues.iter().zip(counters).enumerate() {
            let queue = self.setup_queue(i as u16, q, counter)?;
            self.queues.push(queue);
        }
        let f = self.irq().function();
        let status = self.transport.status(f);
        self.transport.set_status(f, status | DRIVER_OK);
        let status = self.transport.status(f);
        if status & (DEVICE_NEEDS_RESET | FAILED) != 0 || status & DRIVER_OK == 0 {
            return Err(format!("device status {status:#x} after DRIVER_OK"));
        }
        Ok(())
    }

    /// One handler per granted vector, living exactly as long as the vectors. MSI-X: each
    /// bumps the counters of the queues routed to its entry (and the config counter on entry
    /// 0). INTx: reads the ISR (which deasserts the line); bit 0 means a queue, bit 1 a
    /// configuration change; 0 means another function on a shared line.
    fn install_handlers(
        &mut self,
        name: &'static str,
        counters: &[Arc<AtomicU64>],
    ) -> Result<(), String> {
        let config = self.config_changes.clone();
        let routing = self.routing;
        let isr = self.transport.isr.clone();
        let irq = self.irq.as_mut().expect("vectors present in bring_up");
        match routing {
            Routing::Msix(n) => {
                for v in 0..n {
                    let mine: Vec<Arc<AtomicU64>> = (0..counters.len() as u16)
                        .filter(|&q| queue_vector(q, n) == v)
                        .map(|q| counters[usize::from(q)].clone())
                        .collect();
                    let config = (v == 0).then(|| config.clone());
                    irq.install(usize::from(v), name, move || {
                        for c in &mine {
                            c.fetch_add(1, Ordering::Release);
                        }
                        if let Some(c) = &config {
                            c.fetch_add(1, Ordering::Release);
                        }
                    })
                    .map_err(|e| format!("handler on MSI-X entry {v}: {e}"))?;
                }
            }
            Routing::Intx => {
                let isr = isr.ok_or("no dword-sized ISR structure for INTx")?;
                let all: Vec<Arc<AtomicU64>> = counters.to_vec();
                irq.install(0, name, move || {
                    let status = isr.read32(0) & 0xff;
                    if status & 1 != 0 {
                        for c in &all {
                            c.fetch_add(1, Ordering::Release);
                        }
                    }
                    if status & 2 != 0 {
                        config.fetch_add(1, Ordering::Release);
                    }
                })
                .map_err(|e| format!("INTx handler: {e}"))?;
            }
        }
        Ok(())
    }

    /// Queue `index`: select, size, rings, vector, notification offset, enable (§4.1.5.1.3).
    fn setup_queue(
        &self,
        index: u16,
        spec: &QueueSpec,
        counter: Arc<AtomicU64>,
    ) -> Result<Virtqueue, String> {
        let f = self.irq().function();
        let t = &self.transport;
        t.common_write(f, QUEUE_SELECT, 2, u32::from(index));
        let offered = t.common_read(f, QUEUE_SIZE, 2) as u16;
        if offered == 0 {
            return Err(format!("queue {index} ({}) is not available", spec.name));
        }
        if t.common_read(f, QUEUE_ENABLE, 2) != 0 {
            return Err(format!("queue {index} is enabled before setup"));
        }
        // Split queues have power-of-two sizes; the driver may ask for fewer entries.
        let wanted = offered.min(spec.max_size).max(1);
        let size = 1u16 << (15 - wanted.leading_zeros());
        let master = self.master.as_ref().ok_or("bus mastering not set up")?;
        let mut queue = Virtqueue::new(master, index, size, spec.buffer_bytes, counter)?;
        t.common_write(f, QUEUE_SIZE, 2, u32::from(size));
        let ring = &queue.ring;
        t.common
            .write_bus_address(u64::from(QUEUE_DESC), ring.bus_address());
        t.common
            .write_bus_address(u64::from(QUEUE_DRIVER), ring.bus_address_at(queue.avail));
        t.common
            .write_bus_address(u64::from(QUEUE_DEVICE), ring.bus_address_at(queue.used));
        if let Routing::Msix(n) = self.routing {
            let vector = queue_vector(index, n);
            t.common_write(f, QUEUE_MSIX_VECTOR, 2, u32::from(vector));
            let got = t.common_read(f, QUEUE_MSIX_VECTOR, 2) as u16;
            if got != vector {
                return Err(format!(
                    "queue {index}: MSI-X entry {vector} refused (reads {got:#x})"
                ));
            }
            queue.vector = vector;
        }
        let notify_off = t.common_read(f, QUEUE_NOTIFY_OFF, 2);
        let n = t.caps.notify;
        let at = u64::from(notify_off) * u64::from(t.caps.notify_multiplier);
        // A 16-bit write: inside the structure and 2-aligned (the multiplier is even, §4.1.4.4).
        if at + 2 > u64::from(n.length) || !(u64::from(n.offset) + at).is_multiple_of(2) {
            return Err(format!(
                "queue {index}: notification offset {at:#x} outside the {:#x}-byte structure",
                n.length
            ));
        }
        queue.notify_at = n.offset + at as u32;
        t.common_write(f, QUEUE_ENABLE, 2, 1);
        Ok(queue)
    }

    /// Resets the device now (idempotent). Whether it confirmed; if it did not, the queues
    /// are leaked when `self` drops rather than freed under a device that may still use them.
    pub fn stop(&mut self) -> bool {
        if self.stopped {
            return true;
        }
        let Some(irq) = self.irq.as_ref() else {
            return true;
        };
        if self.transport.reset(irq.function()) {
            self.stopped = true;
        }
        self.stopped
    }

    /// Resets the device, frees the queues, releases the vectors and gives the function back
    /// (for a probe that fails after this value exists).
    pub fn into_function(mut self) -> PciFunction {
        if !self.stop() {
            core::mem::forget(core::mem::take(&mut self.queues));
        }
        self.queues.clear();
        let irq = self.irq.take().expect("into_function runs once");
        let function = irq.into_function();
        drop(self.master.take());
        function
    }

    /// The features both sides agreed on.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// How interrupts are routed.
    pub fn routing(&self) -> Routing {
        self.routing
    }

    /// The interrupt kind granted.
    pub fn irq_kind(&self) -> IrqKind {
        self.irq().kind()
    }

    /// Queue `index`.
    pub fn queue(&self, index: usize) -> &Virtqueue {
        &self.queues[index]
    }

    /// Configuration-change interrupts so far.
    pub fn config_changes(&self) -> u64 {
        self.config_changes.load(Ordering::Acquire)
    }

    /// The transport (device configuration reads).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Makes `chain` available on queue `queue` (see [`Virtqueue::add`]) without notifying.
    pub fn add(&mut self, queue: usize, chain: &[Segment]) -> Result<u16, String> {
        self.queues[queue].add(chain)
    }

    /// Tells the device queue `queue` has new buffers.
    pub fn notify(&self, queue: usize) {
        self.transport
            .notify(self.irq().function(), &self.queues[queue]);
    }

    /// Adds `chain` to queue `queue` and notifies the device.
    pub fn submit(&mut self, queue: usize, chain: &[Segment]) -> Result<u16, String> {
        let head = self.add(queue, chain)?;
        self.notify(queue);
        Ok(head)
    }

    /// The next used element of queue `queue`, consumed only after the queue's interrupt
    /// said there is one: the handler bumps the queue's counter, this side drains the used
    /// ring once per observed change. Waits up to `timeout_us`.
    pub fn next_used(&mut self, queue: usize, timeout_us: u64) -> Result<Used, WaitError> {
        let f = self
            .irq
            .as_ref()
            .expect("VirtioPci used after into_function")
            .function();
        let q = &mut self.queues[queue];
        let deadline = f.now_us().saturating_add(timeout_us);
        loop {
            // Loaded before looking at the ring: an interrupt after the look is not missed.
            let count = q.interrupts.load(Ordering::Acquire);
            if count != q.seen {
                if let Some(used) = q.pop_used().map_err(WaitError::Device)? {
                    return Ok(used);
                }
                q.seen = count;
            }
            let (seen, counter) = (q.seen, &q.interrupts);
            let left = deadline.saturating_sub(f.now_us());
            if left == 0 || !f.wait_until(left, || counter.load(Ordering::Acquire) != seen) {
                let idx = q.used_idx();
                return Err(WaitError::Timeout(format!(
                    "queue {} ({}): no completion interrupt within {} ms (used index {idx}, consumed {}, {} interrupt(s){})",
                    q.index,
                    self.names[queue].name,
                    timeout_us / 1000,
                    q.last_used,
                    q.interrupts.load(Ordering::Acquire),
                    if idx != q.last_used {
                        ": the device completed, the interrupt did not arrive"
                    } else {
                        ""
                    }
                )));
            }
        }
    }

    /// One line about vectors: kind, count and where each queue's interrupts arrive.
    pub fn describe_vectors(&self) -> String {
        let mut s = String::new();
        match self.routing {
            Routing::Msix(n) => {
                let _ = write!(s, "MSI-X {n} vector(s): config 0");
                for (q, spec) in self.queues.iter().zip(self.names) {
                    let _ = write!(s, ", {} {}", spec.name, q.vector);
                }
            }
            Routing::Intx => s.push_str("INTx (ISR read in the handler)"),
        }
        s
    }
}

impl Drop for VirtioPci {
    /// Resets the device before anything it could use is freed; the fields then drop in
    /// order (windows, queues, vectors with their handlers and the function). A device that
    /// does not confirm the reset keeps its queues: they are leaked, not freed.
    fn drop(&mut self) {
        if !self.stop() {
            core::mem::forget(core::mem::take(&mut self.queues));
        }
    }
}

/// Steps 1-6 of §3.1.1; returns the accepted features.
fn negotiate(t: &Transport, f: &PciFunction, spec: &Spec) -> Result<u64, String> {
    if !t.reset(f) {
        return Err("the device did not reset".into());
    }
    t.set_status(f, ACKNOWLEDGE);
    t.set_status(f, ACKNOWLEDGE | DRIVER);
    let offered = t.device_features();
    if offered & F_VERSION_1 == 0 {
        return Err(format!(
            "device features {offered:#x} lack VIRTIO_F_VERSION_1"
        ));
    }
    let accepted = offered & (F_VERSION_1 | spec.features);
    t.set_driver_features(accepted);
    t.set_status(f, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    if t.status(f) & FEATURES_OK == 0 {
        return Err(format!("device refused features {accepted:#x}"));
    }
    Ok(accepted)
}

/// MSI-X with `1 + queues` vectors, else as many MSI-X vectors as there are (at least one),
/// else INTx (if `intx_ok`: the handler needs a dword-readable ISR).
fn allocate_vectors(
    function: PciFunction,
    queues: u16,
    kinds: IrqKinds,
    intx_ok: bool,
) -> Result<IrqVectors, (PciFunction, String)> {
    let full = 1 + usize::from(queues);
    let mut function = function;
    let mut why: Vec<String> = Vec::new();
    if kinds.contains(IrqKinds::MSIX) {
        for (min, max) in [(full, full), (1, full)] {
            match function.alloc_irq_vectors(min, max, IrqKinds::MSIX) {
                Ok(v) => return Ok(v),
                Err((f, e)) => {
                    function = f;
                    why.push(format!("{min}..={max} MSI-X: {e}"));
                }
            }
        }
    }
    if kinds.contains(IrqKinds::INTX) {
        if !intx_ok {
            why.push("INTx: the ISR structure is shorter than a dword".into());
        } else {
            match function.alloc_irq_vectors(1, 1, IrqKinds::INTX) {
                Ok(v) => return Ok(v),
                Err((f, e)) => {
                    function = f;
                    why.push(format!("INTx: {e}"));
                }
            }
        }
    }
    Err((function, format!("no interrupts ({})", why.join("; "))))
}

/// Copies `out.len()` bytes from `buffer` at `offset` (dword reads where aligned).
pub(crate) fn copy_from(buffer: &DmaBuffer, offset: u64, out: &mut [u8]) {
    let mut i = 0;
    while i < out.len() {
        let at = offset + i as u64;
        if at.is_multiple_of(4) && i + 4 <= out.len() {
            out[i..i + 4].copy_from_slice(&buffer.read32(at).to_le_bytes());
            i += 4;
        } else {
            out[i] = buffer.read8(at);
            i += 1;
        }
    }
}

/// Copies `data` into `buffer` at `offset` (dword writes where aligned).
pub(crate) fn copy_to(buffer: &DmaBuffer, offset: u64, data: &[u8]) {
    let mut i = 0;
    while i < data.len() {
        let at = offset + i as u64;
        if at.is_multiple_of(4) && i + 4 <= data.len() {
            let word = [data[i], data[i + 1], data[i + 2], data[i + 3]];
            buffer.write32(at, u32::from_le_bytes(word));
            i += 4;
        } else {
            buffer.write8(at, data[i]);
            i += 1;
        }
    }
}

/// Boxes a concrete bound driver as the trait object the bus keeps.
pub(crate) fn boxed<T: crate::Bound + 'static>(
    result: Result<T, (PciFunction, ProbeError)>,
) -> Result<Box<dyn crate::Bound>, (PciFunction, ProbeError)> {
    result.map(|b| Box::new(b) as Box<dyn crate::Bound>)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(size: u16) -> (BusMaster, Virtqueue) {
        let function = pci::fake::irq::function_with_msix(4);
        let master = function.bus_master();
        let q =
            Virtqueue::new(&master, 0, size, 4096, Arc::new(AtomicU64::new(0))).expect("fake DMA");
        (master, q)
    }

    /// The device's side: takes the next available head, returns it as used with `len`.
    fn device_completes(q: &Virtqueue, device_avail: &mut u16, device_used: &mut u16, len: u32) {
        let avail_idx = (q.ring.read32(q.avail) >> 16) as u16;
        assert_ne!(avail_idx, *device_avail, "nothing available");
        let slot = q.avail + 4 + 2 * u64::from(*device_avail % q.size);
        let head = u16::from(q.ring.read8(slot)) | u16::from(q.ring.read8(slot + 1)) << 8;
        *device_avail = device_avail.wrapping_add(1);
        let at = q.used + 4 + 8 * u64::from(*device_used % q.size);
        q.ring.write32(at, u32::from(head));
        q.ring.write32(at + 4, len);
        *device_used = device_used.wrapping_add(1);
        q.ring.write32(q.used, u32::from(*device_used) << 16);
    }

    #[test]
    fn layout_follows_the_alignment_rules() {
        assert_eq!(ring_layout(8), (128, 128 + 24, 152 + 6 + 64));
        let (avail, used, total) = ring_layout(256);
        assert_eq!(avail, 4096);
        assert!(used.is_multiple_of(4) && used >= avail + 6 + 512);
        assert_eq!(total, used + 6 + 2048);
    }

    #[test]
    fn queue_vectors_share_when_short() {
        assert_eq!([queue_vector(0, 3), queue_vector(1, 3)], [1, 2]);
        assert_eq!([queue_vector(0, 2), queue_vector(1, 2)], [1, 1]);
        assert_eq!([queue_vector(0, 1), queue_vector(1, 1)], [0, 0]);
        assert_eq!([queue_vector(0, 3), queue_vector(2, 3)], [1, 1]);
    }

    #[test]
    fn descriptors_chain_and_come_back() {
        let (_f, mut q) = queue(8);
        let chain = [
            Segment::reads(0, 16),
            Segment::writes(512, 512),
            Segment::writes(16, 1),
        ];
        let head = q.add(&chain).unwrap();
        assert_eq!(q.free_descriptors(), 5);
        // Descriptor table: addresses, lengths, flags and next links as the spec lays out.
        let mut d = head;
        for (i, s) in chain.iter().enumerate() {
            let at = 16 * u64::from(d);
            let addr = u64::from(q.ring.read32(at)) | u64::from(q.ring.read32(at + 4)) << 32;
            assert_eq!(
                format!("{addr:x}"),
                format!("{:x}", q.buffers.bus_address_at(s.offset))
            );
            assert_eq!(q.ring.read32(at + 8), s.len);
            let flags_next = q.ring.read32(at + 12);
            let flags = flags_next & 0xffff;
            assert_eq!(flags & DESC_F_WRITE != 0, s.device_writes);
            assert_eq!(flags & DESC_F_NEXT != 0, i + 1 < chain.len());
            d = (flags_next >> 16) as u16;
        }
        let (mut da, mut du) = (0, 0);
        assert_eq!(q.pop_used().unwrap(), None);
        device_completes(&q, &mut da, &mut du, 513);
        let used = q.pop_used().unwrap().unwrap();
        assert_eq!((used.head, used.len, used.offset), (head, 513, 0));
        assert_eq!(q.free_descriptors(), 8);
        assert_eq!(q.pop_used().unwrap(), None);
    }

    #[test]
    fn indices_wrap_past_u16() {
        let (_f, mut q) = queue(4);
        let (mut da, mut du) = (0u16, 0u16);
        for i in 0..70_000u32 {
            let n = 1 + (i % 3) as usize;
            let chain: Vec<Segment> = (0..n).map(|k| Segment::writes(64 * k as u64, 8)).collect();
            let head = q.add(&chain).unwrap();
            device_completes(&q, &mut da, &mut du, i);
            let used = q.pop_used().unwrap().unwrap();
            assert_eq!((used.head, used.len), (head, i));
            assert_eq!(q.free_descriptors(), 4);
        }
    }

    #[test]
    fn full_queue_and_bad_segments_are_refused() {
        let (_f, mut q) = queue(4);
        assert!(
            q.add(&[Segment::reads(4090, 8)]).is_err(),
            "outside the buffer"
        );
        assert!(q.add(&[Segment::reads(0, 0)]).is_err(), "empty segment");
        assert!(q.add(&[]).is_err());
        q.add(&[
            Segment::reads(0, 8),
            Segment::reads(8, 8),
            Segment::reads(16, 8),
        ])
        .unwrap();
        assert!(
            q.add(&[Segment::reads(0, 8), Segment::reads(8, 8)])
                .is_err()
        );
        q.add(&[Segment::reads(0, 8)]).unwrap();
        assert!(q.add(&[Segment::reads(0, 8)]).is_err());
    }

    #[test]
    fn a_used_element_naming_no_chain_is_a_device_error() {
        let (_f, mut q) = queue(4);
        let head = q
            .add(&[Segment::reads(0, 8), Segment::reads(8, 8)])
            .unwrap();
        // The device names the chain's second descriptor instead of its head.
        let second = q.next[usize::from(head)];
        q.ring.write32(q.used + 4, u32::from(second));
        q.ring.write32(q.used, 1 << 16);
        assert!(q.pop_used().is_err());
        // And an index far ahead of what was made available.
        q.ring.write32(q.used, 100 << 16);
        assert!(q.pop_used().is_err());
    }

    #[test]
    fn device_types_from_ids() {
        let f = pci::fake::irq::function_with_msix(1);
        let mut info = f.info().clone();
        info.vendor_id = VENDOR;
        info.device_id = 0x1042;
        assert_eq!(device_type(&info), Some(TYPE_BLOCK));
        info.device_id = 0x1001;
        info.subsystem_id = Some(2);
        assert_eq!(device_type(&info), Some(TYPE_BLOCK));
        info.device_id = 0x1000;
        info.subsystem_id = Some(1);
        assert_eq!(device_type(&info), Some(TYPE_NET));
        info.device_id = 0x1040;
        assert_eq!(device_type(&info), None);
        info.vendor_id = 0x8086;
        info.device_id = 0x1041;
        assert_eq!(device_type(&info), None);
    }

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
