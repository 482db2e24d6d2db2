//! A small virtio-blk device model running on the fake PCI platform, for host tests (the
//! modern function of `transport.rs`'s tests: vendor 0x1AF4, device 0x1042, common
//! configuration at BAR0+0, notifications at +0x1000, ISR at +0x1800, device configuration
//! at +0x1900, MSI-X table at +0x2000, the PCI configuration access capability at 0x98).
//!
//! The model is an interrupt handler on a spare vector that re-arms itself every millisecond
//! of fake time (`FakePlatform::halt_when_idle` + `interrupt_at`): once the driver has set
//! DRIVER_OK and enabled queue 0 it walks the available ring, reads each descriptor chain
//! (header, data, status) and the request header through `FakePlatform::dma_read`, writes
//! a read's data (byte `(sector * 512 + i) % 251` of the disk) and the status byte with
//! `FakePlatform::dma_write`, pushes the used element (data bytes + 1) and raises the
//! queue's MSI-X entry by decoding the table in the fake BAR.
//!
//! The registers live in the fake BAR (`platform.peek`/`poke`). The driver reaches the
//! 32-bit ones (feature words, queue addresses) through its BAR mapping, and the 8- and
//! 16-bit ones (`device_status`, `queue_select`, `queue_size`, the MSI-X vectors,
//! `queue_enable`, the notification) through the PCI configuration access capability
//! (§4.1.4.9): [`Window`] is that capability's device side, a port in front of the fake
//! configuration space that forwards `pci_cfg_data` to the BAR range `cap.bar`,
//! `cap.offset`, `cap.length` aim it at, and gives the model the register side effects a
//! device has at once (a reset on `device_status` 0, FEATURES_OK refused for features it
//! did not offer, queue 0 taken on `queue_enable`).
//!
//! The fake BAR has no access hooks, so select-indexed dword registers cannot follow their
//! selector: `device_feature` reads 1 under both selects (bit 0, the legacy-only
//! VIRTIO_BLK_F_BARRIER, which the driver must not accept; bit 32, VIRTIO_F_VERSION_1), and
//! only the last `driver_feature` word written (select 1 by this driver) is checked.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use pci::Address;
use pci::fake::irq::{BAR0, FakePlatform, handle_with};
use pci::fake::{FakeBar, FakeConfigSpace, FakeFunction};
use pci::irq::{ConfigPort, PciFunction};
use pci::platform::{Interrupts, Platform};
use spin::Mutex;

use crate::virtio::blk::VirtioBlk;

pub(super) const TICK_US: u64 = 1000;
/// The driver's I/O timeout (`blk.rs`, `TIMEOUT_US`).
pub(super) const DRIVER_TIMEOUT_US: u64 = 5_000_000;

// Where the structures are in BAR 0.
const NOTIFY: u64 = 0x1000;
const NOTIFY_MULTIPLIER: u32 = 4;
const DEVICE_CONFIG: u64 = 0x1900;
const MSIX_TABLE: u64 = 0x2000;
const MSIX_ENTRIES: u16 = 4;
/// `pci_cfg_data` of the PCI configuration access capability at 0x98 (and its `bar`,
/// `offset`, `length` before it).
const CFG_BAR: u16 = 0x9c;
const CFG_OFFSET: u16 = 0xa0;
const CFG_LENGTH: u16 = 0xa4;
const CFG_DATA: u16 = 0xa8;

// Common configuration (§4.1.4.3).
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const MSIX_CONFIG: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
pub(super) const DEVICE_STATUS: u64 = 0x14;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
const COMMON_LEN: u64 = 0x38;
const NO_VECTOR: u16 = 0xffff;

// Device status (§2.1).
const FEATURES_OK: u8 = 8;
pub(super) const DRIVER_OK: u8 = 4;

// Split virtqueue descriptor flags (§2.7.5).
const DESC_NEXT: u16 = 1;
const DESC_WRITE: u16 = 2;

/// Entries the device offers on queue 0.
const QUEUE_MAX: u16 = 128;
/// Disk size in 512-byte sectors (32 MiB).
pub(super) const CAPACITY: u64 = 1 << 16;

/// Byte `i` of a read from 512-byte sector `sector` on.
pub(super) fn pattern(sector: u64, bytes: usize) -> Vec<u8> {
    (0..bytes as u64)
        .map(|i| ((sector * 512 + i) % 251) as u8)
        .collect()
}

/// What the model misbehaves with.
#[derive(Default)]
pub(super) struct Faults {
    /// Every used element says 1 byte was written (the status byte), though the data and a
    /// status of 0 were written.
    pub used_len_short: bool,
    /// Requests are taken from the available ring and held, never put in the used ring
    /// (while this is set: held requests complete once it is cleared, unless the device was
    /// reset in between).
    pub never_complete: bool,
}

/// Queue 0 as the driver set it up, and the device's positions in it.
#[derive(Clone, Copy)]
struct Queue {
    size: u16,
    desc: u64,
    driver: u64,
    device: u64,
    vector: u16,
    last_avail: u16,
    used_idx: u16,
}

pub(super) struct Model {
    platform: &'static FakePlatform,
    pub faults: Faults,
    /// Queue 0, once enabled.
    queue: Option<Queue>,
    /// Heads taken under [`Faults::never_complete`].
    held: Vec<u16>,
    /// Resets (`device_status` 0 written) so far.
    pub resets: u32,
    /// Notifications of queue 0.
    pub notifies: u32,
    /// Requests completed (put in the used ring).
    pub completed: u32,
    /// What the driver did that a device may not accept.
    pub violations: Vec<String>,
}

impl Model {
    fn reg(&self, off: u64) -> u32 {
        self.platform.peek(BAR0 + off)
    }
    fn set(&self, off: u64, v: u32) {
        self.platform.poke(BAR0 + off, v);
    }
    fn reg64(&self, off: u64) -> u64 {
        u64::from(self.reg(off)) | u64::from(self.reg(off + 4)) << 32
    }

    /// `width` bytes at BAR offset `off` (naturally aligned), in the low bits.
    fn narrow(&self, off: u64, width: u8) -> u32 {
        let v = self.reg(off & !3) >> (8 * (off & 3));
        match width {
            1 => v & 0xff,
            2 => v & 0xffff,
            _ => v,
        }
    }

    fn set_narrow(&self, off: u64, width: u8, value: u32) {
        let shift = 8 * (off & 3);
        let mask: u32 = match width {
            1 => 0xff,
            2 => 0xffff,
            _ => !0,
        };
        let old = self.reg(off & !3);
        self.set(off & !3, old & !(mask << shift) | (value & mask) << shift);
    }

    fn status(&self) -> u8 {
        self.narrow(DEVICE_STATUS, 1) as u8
    }

    /// Registers as after a reset (§4.1.4.3: and at power-on); read-only fields too.
    fn reset(&mut self) {
        self.queue = None;
        self.held.clear();
        for off in (0..COMMON_LEN).step_by(4) {
            self.set(off, 0);
        }
        self.set(DEVICE_FEATURE, 1);
        self.set_narrow(MSIX_CONFIG, 2, u32::from(NO_VECTOR));
        self.set_narrow(NUM_QUEUES, 2, 1);
        self.set_narrow(QUEUE_SIZE, 2, u32::from(QUEUE_MAX));
        self.set_narrow(QUEUE_MSIX_VECTOR, 2, u32::from(NO_VECTOR));
        // capacity (64 bits at 0); size_max, seg_max, blk_size are not offered.
        self.set(DEVICE_CONFIG, CAPACITY as u32);
        self.set(DEVICE_CONFIG + 4, (CAPACITY >> 32) as u32);
    }

    /// A read of `pci_cfg_data` aimed at BAR offset `off`.
    fn window_read(&self, off: u64, width: u8) -> u32 {
        self.narrow(off, width)
    }

    /// A write of `pci_cfg_data` aimed at BAR offset `off`: the register's side effects.
    fn window_write(&mut self, off: u64, width: u8, value: u32) {
        if off >= COMMON_LEN {
            if off == NOTIFY {
                if width != 2 || value != 0 {
                    self.violations
                        .push(format!("notification {value:#x} of width {width}"));
                }
                self.notifies += 1;
            } else {
                self.violations
                    .push(format!("write of {value:#x} to BAR0+{off:#x}"));
            }
            return;
        }
        // (offset, width, writable) of the fields the window reaches (§4.1.4.3).
        let field = match off {
            0x00 | 0x08 | 0x0c | 0x20..0x38 => Some((4, true)),
            0x04 => Some((4, false)),
            MSIX_CONFIG | QUEUE_SELECT | QUEUE_SIZE | QUEUE_MSIX_VECTOR | QUEUE_ENABLE => {
                Some((2, true))
            }
            NUM_QUEUES | 0x1e => Some((2, false)),
            DEVICE_STATUS => Some((1, true)),
            0x15 => Some((1, false)),
            _ => None,
        };
        match field {
            Some((w, _)) if w != width => {
                self.violations
                    .push(format!("{width}-byte write at common {off:#x}"));
                return;
            }
            Some((_, true)) => {}
            _ => {
                self.violations
                    .push(format!("write to read-only common {off:#x}"));
                return;
            }
        }
        match off {
            DEVICE_STATUS => {
                let status = value as u8;
                if status == 0 {
                    self.set_narrow(DEVICE_STATUS, 1, 0);
                    self.resets += 1;
                    self.reset();
                    return;
                }
                let mut status = status;
                if status & FEATURES_OK != 0 && self.status() & FEATURES_OK == 0 {
                    // Only the last word written is visible: this driver writes word 1 last.
                    let (select, word) =
                        (self.reg(DRIVER_FEATURE_SELECT), self.reg(DRIVER_FEATURE));
                    let offered = match select {
                        0 => word == 0,
                        1 => word == 1,
                        _ => false,
                    };
                    if !offered {
                        self.violations
                            .push(format!("driver features word {select} = {word:#x}"));
                        status &= !FEATURES_OK;
                    }
                }
                if status & DRIVER_OK != 0 && status & FEATURES_OK == 0 {
                    self.violations.push("DRIVER_OK without FEATURES_OK".into());
                }
                self.set_narrow(DEVICE_STATUS, 1, u32::from(status));
            }
            QUEUE_SELECT => {
                if value != 0 {
                    self.violations
                        .push(format!("queue {value} selected; the device has one"));
                }
                self.set_narrow(off, 2, value);
            }
            MSIX_CONFIG | QUEUE_MSIX_VECTOR => {
                // An entry the function does not have reads back NO_VECTOR (§4.1.5.1.2).
                let v = if value < u32::from(MSIX_ENTRIES) {
                    value
                } else {
                    u32::from(NO_VECTOR)
                };
                self.set_narrow(off, 2, v);
            }
            QUEUE_ENABLE => {
                if value != 1 {
                    self.violations.push(format!("queue_enable {value}"));
                    return;
                }
                let size = self.narrow(QUEUE_SIZE, 2) as u16;
                if !size.is_power_of_two() || size > QUEUE_MAX {
                    self.violations.push(format!("queue size {size}"));
                    return;
                }
                self.queue = Some(Queue {
                    size,
                    desc: self.reg64(QUEUE_DESC),
                    driver: self.reg64(QUEUE_DRIVER),
                    device: self.reg64(QUEUE_DEVICE),
                    vector: self.narrow(QUEUE_MSIX_VECTOR, 2) as u16,
                    last_avail: 0,
                    used_idx: 0,
                });
                self.set_narrow(off, 2, 1);
            }
            _ => self.set_narrow(off, width, value),
        }
    }

    /// A DMA read; an address outside the driver's DMA memory is a violation.
    fn read(&mut self, bus: u64, out: &mut [u8]) -> bool {
        let ok = self.platform.dma_read(bus, out);
        if !ok {
            self.violations
                .push(format!("DMA read of {} bytes at {bus:#x}", out.len()));
        }
        ok
    }

    fn write(&mut self, bus: u64, data: &[u8]) -> bool {
        let ok = self.platform.dma_write(bus, data);
        if !ok {
            self.violations
                .push(format!("DMA write of {} bytes at {bus:#x}", data.len()));
        }
        ok
    }

    fn read16(&mut self, bus: u64) -> Option<u16> {
        let mut b = [0u8; 2];
        self.read(bus, &mut b).then(|| u16::from_le_bytes(b))
    }

    /// Raises MSI-X entry `entry`: the message its table entry holds.
    fn interrupt(&self, entry: u16) {
        if entry == NO_VECTOR {
            return;
        }
        let at = BAR0 + MSIX_TABLE + 16 * u64::from(entry);
        let (addr, data) = (self.platform.peek(at), self.platform.peek(at + 8));
        self.platform.deliver((addr >> 12) & 0xff, data as u8);
    }

    /// Serves the chain at `head`: (head, bytes written) for the used ring, or `None` if the
    /// chain is malformed (left unanswered, as a device that stopped would).
    fn serve(&mut self, q: &Queue, head: u16) -> Option<(u16, u32)> {
        let mut chain: Vec<(u64, u32, u16)> = Vec::new();
        let mut d = head;
        loop {
            if d >= q.size || chain.len() >= usize::from(q.size) {
                self.violations
                    .push(format!("chain from {head}: descriptor {d}, or a loop"));
                return None;
            }
            let mut raw = [0u8; 16];
            if !self.read(q.desc + 16 * u64::from(d), &mut raw) {
                return None;
            }
            let addr = u64::from_le_bytes(raw[0..8].try_into().unwrap());
            let len = u32::from_le_bytes(raw[8..12].try_into().unwrap());
            let flags = u16::from_le_bytes(raw[12..14].try_into().unwrap());
            chain.push((addr, len, flags));
            if flags & DESC_NEXT == 0 {
                break;
            }
            d = u16::from_le_bytes(raw[14..16].try_into().unwrap());
        }
        // §5.2.6: header (device-readable), data, status (device-writable, last byte).
        let (&(header, header_len, header_flags), rest) = chain.split_first()?;
        let Some((&(status_at, status_len, status_flags), data)) = rest.split_last() else {
            self.violations
                .push(format!("chain from {head}: one descriptor"));
            return None;
        };
        if header_len < 16 || header_flags & DESC_WRITE != 0 || status_flags & DESC_WRITE == 0 {
            self.violations
                .push(format!("chain from {head}: header or status descriptor"));
            return None;
        }
        let mut h = [0u8; 16];
        if !self.read(header, &mut h) {
            return None;
        }
        let kind = u32::from_le_bytes(h[0..4].try_into().unwrap());
        let sector = u64::from_le_bytes(h[8..16].try_into().unwrap());
        let data_bytes: u64 = data.iter().map(|&(_, len, _)| u64::from(len)).sum();
        let mut written = 0u32;
        let status: u8 = if kind != 0 {
            2 // UNSUPP: only reads are modelled.
        } else if data.iter().any(|&(_, _, f)| f & DESC_WRITE == 0) {
            self.violations
                .push(format!("read from {head}: device-readable data"));
            1
        } else if sector
            .checked_mul(512)
            .and_then(|b| b.checked_add(data_bytes))
            .is_none_or(|end| end > CAPACITY * 512)
        {
            1 // IOERR: beyond the capacity.
        } else {
            let mut pos = sector * 512;
            for &(addr, len, _) in data {
                let bytes: Vec<u8> = (pos..pos + u64::from(len))
                    .map(|p| (p % 251) as u8)
                    .collect();
                if !self.write(addr, &bytes) {
                    return None;
                }
                pos += u64::from(len);
                written += len;
            }
            0
        };
        // The status byte is the last of the status descriptor.
        if !self.write(status_at + u64::from(status_len) - 1, &[status]) {
            return None;
        }
        written += 1;
        if self.faults.used_len_short {
            written = 1;
        }
        Some((head, written))
    }

    fn tick(&mut self) {
        let Some(mut q) = self.queue else {
            return;
        };
        if self.status() & DRIVER_OK == 0 {
            return;
        }
        let mut heads: Vec<u16> = Vec::new();
        if !self.faults.never_complete {
            heads.append(&mut self.held);
        }
        let Some(avail) = self.read16(q.driver + 2) else {
            return;
        };
        while q.last_avail != avail {
            let slot = q.driver + 4 + 2 * u64::from(q.last_avail % q.size);
            let Some(head) = self.read16(slot) else {
                return;
            };
            q.last_avail = q.last_avail.wrapping_add(1);
            if self.faults.never_complete {
                self.held.push(head);
            } else {
                heads.push(head);
            }
        }
        let mut done = 0;
        for head in heads {
            let Some((id, len)) = self.serve(&q, head) else {
                continue;
            };
            let at = q.device + 4 + 8 * u64::from(q.used_idx % q.size);
            let mut e = [0u8; 8];
            e[0..4].copy_from_slice(&u32::from(id).to_le_bytes());
            e[4..8].copy_from_slice(&len.to_le_bytes());
            if !self.write(at, &e) {
                break;
            }
            q.used_idx = q.used_idx.wrapping_add(1);
            // The element before the index that publishes it (§2.7.8).
            if !self.write(q.device + 2, &q.used_idx.to_le_bytes()) {
                break;
            }
            done += 1;
        }
        self.completed += done;
        self.queue = Some(q);
        if done > 0 {
            self.interrupt(q.vector);
        }
    }
}

/// The device side of the PCI configuration access capability (§4.1.4.9): configuration
/// accesses go to the fake configuration space, except `pci_cfg_data`, which reaches the
/// BAR range the capability is aimed at (through the model, for the register's effects).
struct Window {
    space: &'static Mutex<FakeConfigSpace>,
    model: Arc<Mutex<Model>>,
}

impl Window {
    /// (BAR offset, width) the capability is aimed at, if a device would honour it: BAR 0,
    /// a length of 1, 2 or 4, an offset aligned to it (§4.1.4.9.1).
    fn aim(&self, address: Address) -> Option<(u64, u8)> {
        let space = self.space.lock();
        let bar = space.peek(address, usize::from(CFG_BAR))? & 0xff;
        let offset = space.peek(address, usize::from(CFG_OFFSET))?;
        let length = space.peek(address, usize::from(CFG_LENGTH))?;
        (bar == 0 && matches!(length, 1 | 2 | 4) && offset.is_multiple_of(length))
            .then_some((u64::from(offset), length as u8))
    }
}

impl ConfigPort for Window {
    fn read32(&self, address: Address, offset: u16) -> u32 {
        if offset == CFG_DATA
            && let Some((off, width)) = self.aim(address)
        {
            return self.model.lock().window_read(off, width);
        }
        self.space.read32(address, offset)
    }

    fn write32(&self, address: Address, offset: u16, value: u32) {
        self.space.write32(address, offset, value);
        if offset == CFG_DATA
            && let Some((off, width)) = self.aim(address)
        {
            self.model.lock().window_write(off, width, value);
        }
    }
}

/// The modern virtio-blk function of `transport.rs`'s tests (see the module documentation).
fn virtio_blk() -> FakeFunction {
    let cap = |cap_len: u8, cfg_type: u8, offset: u32, length: u32, extra: &[u8]| {
        let mut b = vec![cap_len, cfg_type, 0, 0, 0, 0];
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&length.to_le_bytes());
        b.extend_from_slice(extra);
        b
    };
    FakeFunction::endpoint(0x1af4, 0x1042, 0x01, 0x00, 0, 1)
        .with_bar(
            0,
            FakeBar::Mem32 {
                address: BAR0 as u32,
                size: 0x4000,
                prefetchable: false,
            },
        )
        .with_msix(0x40, MSIX_ENTRIES, (0, MSIX_TABLE as u32), (0, 0x3000))
        .with_writable(0x40, 0xc000_0000)
        .with_capability(0x50, 0x09, &cap(16, 1, 0, COMMON_LEN as u32, &[]))
        .with_capability(
            0x60,
            0x09,
            &cap(
                20,
                2,
                NOTIFY as u32,
                0x1000,
                &NOTIFY_MULTIPLIER.to_le_bytes(),
            ),
        )
        .with_capability(0x78, 0x09, &cap(16, 3, 0x1800, 4, &[]))
        .with_capability(0x88, 0x09, &cap(16, 4, DEVICE_CONFIG as u32, 0x100, &[]))
        .with_capability(0x98, 0x09, &cap(20, 5, 0, 0, &[0; 4]))
        .with_writable(usize::from(CFG_BAR), 0xff)
        .with_writable(usize::from(CFG_OFFSET), 0xffff_ffff)
        .with_writable(usize::from(CFG_LENGTH), 0xffff_ffff)
        .with_writable(usize::from(CFG_DATA), 0xffff_ffff)
}

/// A fake virtio-blk function and its model, ticking.
pub(super) fn device(faults: Faults) -> (PciFunction, Arc<Mutex<Model>>, &'static FakePlatform) {
    let platform = FakePlatform::leaked(1);
    platform.halt_when_idle();
    let model = Arc::new(Mutex::new(Model {
        platform,
        faults,
        queue: None,
        held: Vec::new(),
        resets: 0,
        notifies: 0,
        completed: 0,
        violations: Vec::new(),
    }));
    model.lock().reset();
    let m = model.clone();
    let (function, _space) = handle_with(virtio_blk(), platform, move |space| {
        Box::new(Window { space, model: m })
    });
    let block = Interrupts::allocate(&platform, 1).expect("a spare vector");
    let (cpu, vector) = (block.cpu(), block.first());
    let m = model.clone();
    Interrupts::install(
        &platform,
        cpu,
        vector,
        "virtio-blk model",
        "test",
        Box::new(move || {
            m.lock().tick();
            let now = Platform::now_us(&platform);
            platform.interrupt_at(now + TICK_US, cpu, vector);
        }),
    )
    .expect("install the model");
    platform.interrupt_at(TICK_US, cpu, vector);
    (function, model, platform)
}

pub(super) fn probe(function: PciFunction) -> VirtioBlk {
    VirtioBlk::probe(function)
        .map_err(|(_, e)| e)
        .expect("probe")
}

/// Lets `us` of fake time pass (the model ticking).
pub(super) fn run_for(platform: &'static FakePlatform, us: u64) {
    let end = Platform::now_us(&platform) + us;
    while Platform::now_us(&platform) < end {
        Platform::idle_until(&platform, end, &mut || false);
    }
}

pub(super) fn device_status(platform: &FakePlatform) -> u8 {
    platform.peek(BAR0 + DEVICE_STATUS) as u8
}
