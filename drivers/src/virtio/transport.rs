//! The virtio-pci transport (§4.1.4, §4.1.5): the common configuration, notifications, the
//! ISR, the device-specific configuration, device status and reset, feature negotiation, and
//! the PCI configuration access window for the narrow registers.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::cell::Cell;
use core::sync::atomic::{Ordering, fence};

use pci::function::{ConfigWriteError, VendorWindow};
use pci::irq::PciFunction;
use pci::window::BarWindow;

use super::capabilities::{Caps, Structure};
use super::virtqueue::Virtqueue;
use super::{F_VERSION_1, RESET_TIMEOUT_US, Spec, TRANSPORT_FEATURES};

/// Reads of the device configuration tried before its generation is declared unstable.
const CONFIG_READ_TRIES: u32 = 64;

// Device status bits (§2.1).
const ACKNOWLEDGE: u8 = 1;
const DRIVER: u8 = 2;
pub(super) const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;
pub(super) const DEVICE_NEEDS_RESET: u8 = 0x40;
pub(super) const FAILED: u8 = 0x80;

// Common configuration (§4.1.4.3): offset of each field.
const DEVICE_FEATURE_SELECT: u32 = 0x00;
const DEVICE_FEATURE: u32 = 0x04;
const DRIVER_FEATURE_SELECT: u32 = 0x08;
const DRIVER_FEATURE: u32 = 0x0C;
pub(super) const MSIX_CONFIG: u32 = 0x10;
pub(super) const NUM_QUEUES: u32 = 0x12;
const DEVICE_STATUS: u32 = 0x14;
const CONFIG_GENERATION: u32 = 0x15;
pub(super) const QUEUE_SELECT: u32 = 0x16;
pub(super) const QUEUE_SIZE: u32 = 0x18;
pub(super) const QUEUE_MSIX_VECTOR: u32 = 0x1A;
pub(super) const QUEUE_ENABLE: u32 = 0x1C;
pub(super) const QUEUE_NOTIFY_OFF: u32 = 0x1E;
pub(super) const QUEUE_DESC: u32 = 0x20;
pub(super) const QUEUE_DRIVER: u32 = 0x28;
pub(super) const QUEUE_DEVICE: u32 = 0x30;
/// Length of the common configuration structure this driver uses.
pub(super) const COMMON_LEN: u32 = 0x38;
/// "No MSI-X vector" (§4.1.4.3).
pub(super) const NO_VECTOR: u16 = 0xFFFF;

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
    pub(super) caps: Caps,
    pub(super) common: BarWindow,
    device: Option<BarWindow>,
    /// Present when the ISR structure holds a dword (the handler reads it as one).
    pub(super) isr: Option<Arc<BarWindow>>,
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

    pub(super) fn common_read(&self, f: &PciFunction, field: u32, width: u8) -> u32 {
        let c = self.caps.common;
        self.window.read(f, c.bar, c.offset + field, width)
    }

    pub(super) fn common_write(&self, f: &PciFunction, field: u32, width: u8, value: u32) {
        let c = self.caps.common;
        self.window.write(f, c.bar, c.offset + field, width, value)
    }

    /// `device_status`.
    pub fn status(&self, f: &PciFunction) -> u8 {
        self.common_read(f, DEVICE_STATUS, 1) as u8
    }

    pub(super) fn set_status(&self, f: &PciFunction, status: u8) {
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
    pub(super) fn fail(&self, f: &PciFunction) {
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
    pub fn read_config<T>(
        &self,
        f: &PciFunction,
        mut read: impl FnMut(&Self) -> T,
    ) -> Result<T, String> {
        for _ in 0..CONFIG_READ_TRIES {
            let before = self.generation(f);
            let value = read(self);
            if self.generation(f) == before {
                return Ok(value);
            }
        }
        Err(format!(
            "config_generation changed during each of {CONFIG_READ_TRIES} reads of the device configuration"
        ))
    }

    /// Notifies the device that queue `queue` has new buffers (§4.1.4.4: the queue index,
    /// 16 bits, written at the queue's notification address).
    pub(super) fn notify(&self, f: &PciFunction, queue: &Virtqueue) {
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

/// Steps 1-6 of §3.1.1; returns the accepted features.
pub(super) fn negotiate(t: &Transport, f: &PciFunction, spec: &Spec) -> Result<u64, String> {
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
    let accepted = offered & (TRANSPORT_FEATURES | spec.features);
    t.set_driver_features(accepted);
    t.set_status(f, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    if t.status(f) & FEATURES_OK == 0 {
        return Err(format!("device refused features {accepted:#x}"));
    }
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pci::fake::irq::{ADDRESS, FakePlatform, handle};
    use pci::fake::{FakeBar, FakeFunction};
    use pci::irq::ConfigPort;

    /// A virtio-blk function: common configuration at BAR0+0, notifications at +0x1000, ISR at
    /// +0x1800, device configuration at +0x1900, the PCI configuration access capability at
    /// 0x98 (its `pci_cfg_data` at 0xA8).
    fn virtio_blk() -> FakeFunction {
        let cap = |cap_len: u8, cfg_type: u8, offset: u32, length: u32, extra: &[u8]| {
            let mut b = alloc::vec![cap_len, cfg_type, 0, 0, 0, 0];
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(&length.to_le_bytes());
            b.extend_from_slice(extra);
            b
        };
        FakeFunction::endpoint(0x1af4, 0x1042, 0x01, 0x00, 0, 1)
            .with_bar(
                0,
                FakeBar::Mem32 {
                    address: pci::fake::irq::BAR0 as u32,
                    size: 0x4000,
                    prefetchable: false,
                },
            )
            .with_msix(0x40, 4, (0, 0x2000), (0, 0x3000))
            .with_writable(0x40, 0xc000_0000)
            .with_capability(0x50, 0x09, &cap(16, 1, 0, 0x38, &[]))
            .with_capability(0x60, 0x09, &cap(20, 2, 0x1000, 0x1000, &4u32.to_le_bytes()))
            .with_capability(0x78, 0x09, &cap(16, 3, 0x1800, 4, &[]))
            .with_capability(0x88, 0x09, &cap(16, 4, 0x1900, 0x100, &[]))
            .with_capability(0x98, 0x09, &cap(20, 5, 0, 0, &[0; 4]))
            .with_writable(0x9c, 0xff)
            .with_writable(0xa0, 0xffff_ffff)
            .with_writable(0xa4, 0xffff_ffff)
            .with_writable(0xa8, 0xffff_ffff)
    }

    /// A device whose `config_generation` differs every time it is read (here: it moves
    /// while the configuration is being read, every time) keeps `read_config` retrying with
    /// no bound: `VirtioBlk::probe` (capacity, shape), `usable()` after a config interrupt,
    /// and `VirtioNet::probe` (MAC) hang.
    #[test]
    fn read_config_gives_up_on_a_generation_that_never_settles() {
        let (function, space) = handle(virtio_blk(), FakePlatform::leaked(1));
        let caps = Caps::find(&function).expect("caps");
        let t = Transport::map(&function, caps).expect("transport");
        let mut calls = 0u32;
        let _ = t.read_config(&function, |_| {
            calls += 1;
            // The device moves its generation during the read, for the first 10 000 reads
            // (so that this test ends); a hostile device never stops.
            if calls <= 10_000 {
                space.write32(ADDRESS, 0xa8, calls);
            }
        });
        assert!(
            calls <= 100,
            "read_config retried {calls} times: it has no bound"
        );
    }
}
