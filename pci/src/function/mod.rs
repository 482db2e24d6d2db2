//! The owned handle of one PCI function, and everything a driver reaches the device through.
//!
//! Design note: a [`PciFunction`] is a set of capabilities, not a raw port.
//!
//! - **Reads are free**: any configuration register, any time.
//! - **Writes are typed or filtered**: [`PciFunction::config_write32`] and friends refuse the
//!   registers another part of the stack owns (BARs, the Command register's decode, bus master
//!   and INTx-disable bits, the MSI and MSI-X capabilities, bridge routing) with a
//!   [`ConfigWriteError`] that names the owner; see [`config_guard`].
//! - **Bus mastering is a guard**: [`PciFunction::bus_master`] returns a [`BusMaster`]; the
//!   bit is on while at least one guard (or MSI/MSI-X vectors, whose messages are memory
//!   writes) lives. DMA buffers come from the guard.
//! - **Vendor-specific capabilities** are written through a [`VendorWindow`] bounded to the
//!   capability.
//!
//! Every handle a driver gets from a function — [`BarWindow`](crate::window::BarWindow),
//! [`DmaBuffer`](crate::dma::DmaBuffer), [`BusMaster`], [`VendorWindow`] — shares ownership
//! of the function's core (an `Arc`). The function is released to the PCI layer (and can be
//! claimed by another driver) only when the *last* of them is gone, so no window, buffer or
//! guard can reach a function someone else owns. This is shared ownership that the release
//! waits for, rather than a borrow: a driver keeps its function, windows and buffers side by
//! side in one state struct, which a lifetime would forbid (a struct cannot borrow its own
//! field).

pub mod config_guard;
mod master;
mod vendor;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;

pub use config_guard::{ConfigWriteError, Protected, Register};
pub use master::BusMaster;
pub use vendor::VendorWindow;

use crate::config::ConfigSpace;
use crate::platform::{DmaRegion, Platform};
use crate::{Address, Function};

/// Configuration-space access for a claimed function: dword reads and writes that cannot fail
/// (what cannot be reached reads as all ones, as absent hardware does).
pub trait ConfigPort: Send + Sync {
    /// Reads the dword at `offset` of `address`.
    fn read32(&self, address: Address, offset: u16) -> u32;
    /// Writes the dword at `offset` of `address`.
    fn write32(&self, address: Address, offset: u16, value: u32);
}

impl<A> ConfigPort for ConfigSpace<'static, A>
where
    A: pci_types::ConfigRegionAccess + Send + Sync,
{
    fn read32(&self, address: Address, offset: u16) -> u32 {
        ConfigSpace::read32(self, address, offset).unwrap_or(u32::MAX)
    }

    fn write32(&self, address: Address, offset: u16, value: u32) {
        let _ = ConfigSpace::write32(self, address, offset, value);
    }
}

/// How often [`PciFunction::wait_until`] checks that the function still answers, µs.
pub const PRESENCE_CHECK_US: u64 = 10_000;

/// Bus mastering bookkeeping of one function. Its lock ([`Core::locked`]) is also the one
/// every read-modify-write of the Command register and every driver's configuration write is
/// made under, so that no write can put back a Bus Master Enable bit it read before the last
/// guard turned it off, and no check can be overtaken between itself and its write.
pub(crate) struct Master {
    /// Live [`BusMaster`] guards (MSI/MSI-X vectors hold one too).
    holders: usize,
    /// DMA memory dropped during this claim: parked for the function's next claim when this
    /// one ends (see [`crate::parking`]), never freed while the function exists. (Turning bus
    /// mastering off is not enough: a new guard turns it back on, and the device still holds
    /// every address it was given.)
    quarantine: Vec<alloc::boxed::Box<dyn DmaRegion>>,
    /// DMA memory of earlier claims of this function, taken back from the parking: new
    /// buffers are made from it first.
    pool: Vec<alloc::boxed::Box<dyn DmaRegion>>,
}

/// What every handle of one function shares.
///
/// # Invariants
/// Exactly one `Core` exists per claimed function; dropping it (after the last handle) gives
/// the function back to the PCI layer with bus mastering off and no DMA memory outstanding.
pub(crate) struct Core {
    info: Function,
    config: &'static dyn ConfigPort,
    pub(crate) platform: &'static dyn Platform,
    protected: Protected,
    master: Mutex<Master>,
    /// A presence check found the function gone (see [`PciFunction::is_present`]).
    gone: AtomicBool,
}

impl Core {
    /// The function's address.
    pub(crate) fn address(&self) -> crate::Address {
        self.info.address
    }

    pub(crate) fn read32(&self, offset: u16) -> u32 {
        self.config.read32(self.info.address, offset)
    }

    pub(crate) fn read16(&self, offset: u16) -> u16 {
        (self.read32(offset & !3) >> ((offset & 2) * 8)) as u16
    }

    /// Writes a word, unfiltered (read-modify-write of its dword; Status, whose bits are
    /// write-one-to-clear, is written back as zero).
    pub(crate) fn write16(&self, offset: u16, value: u16) {
        let dword = self.read32(offset & !3);
        let shift = (offset & 2) * 8;
        let mut keep = dword & !(0xffff << shift);
        if offset & !3 == config_guard::COMMAND {
            keep &= 0x0000_ffff; // never write back Status (RW1C)
        }
        self.write32(offset & !3, keep | (u32::from(value) << shift));
    }

    /// Writes a dword, unfiltered, if the function is still there: every configuration write
    /// is preceded by a presence check (one read of dword 0), and nothing is written to a
    /// function found gone (a surprise-removed device; its slot may hold another card by the
    /// time its driver's teardown runs).
    pub(crate) fn write32(&self, offset: u16, value: u32) {
        if self.answers() {
            self.config.write32(self.info.address, offset, value);
        }
    }

    /// Whether dword 0 still reads the IDs enumeration found; once not, never again.
    pub(crate) fn answers(&self) -> bool {
        if self.gone.load(Ordering::Relaxed) {
            return false;
        }
        let expected = u32::from(self.info.vendor_id) | (u32::from(self.info.device_id) << 16);
        if self.read32(0) != expected {
            self.gone.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A region of at least `bytes` bytes of this function's DMA memory, zeroed, if one
    /// fits: from earlier claims (the pool), else from buffers dropped during this one (the
    /// quarantine). Either may still be written by the device, which held their addresses;
    /// a new buffer of the *same* function is where such a write may land
    /// ([`crate::parking`]), so a driver that makes and drops buffers over and over does not
    /// take more memory for each.
    pub(crate) fn reuse_dma(&self, bytes: u64) -> Option<alloc::boxed::Box<dyn DmaRegion>> {
        let region = self.locked(|master| {
            crate::parking::take_fitting(&mut master.pool, bytes)
                .or_else(|| crate::parking::take_fitting(&mut master.quarantine, bytes))
        })?;
        region.zero();
        Some(region)
    }

    /// Runs `f` on the bus mastering bookkeeping with the function's lock held and
    /// interrupts off ([`Platform::without_interrupts`]): an interrupt handler may drop a
    /// guard or a buffer of this function, which takes the same lock.
    pub(crate) fn locked<R>(&self, f: impl FnOnce(&mut Master) -> R) -> R {
        let mut f = Some(f);
        let mut out = None;
        self.platform.without_interrupts(&mut || {
            if let Some(f) = f.take() {
                out = Some(f(&mut self.master.lock()));
            }
        });
        match (out, f) {
            (Some(out), _) => out,
            // A platform that did not run the closure broke `without_interrupts`' contract:
            // run it here rather than skip a write.
            (None, Some(f)) => f(&mut self.master.lock()),
            (None, None) => unreachable!("the closure ran, so it returned"),
        }
    }

    /// Sets or clears Command bits, unfiltered, under the function's lock.
    pub(crate) fn command(&self, set: u16, clear: u16) {
        self.locked(|_| self.command_locked(set, clear));
    }

    /// Sets or clears Command bits; the caller holds the function's lock.
    pub(crate) fn command_locked(&self, set: u16, clear: u16) {
        let command = self.read16(config_guard::COMMAND);
        self.write16(config_guard::COMMAND, (command | set) & !clear);
    }

    /// A driver's write of `width` bytes: checked, then made, under the function's lock.
    fn checked_write(
        &self,
        offset: u16,
        width: u8,
        value: u32,
        vendor: Option<u16>,
    ) -> Result<(), ConfigWriteError> {
        self.locked(|_| self.checked_write_locked(offset, width, value, vendor))
    }

    /// [`Core::checked_write`] with the function's lock held by the caller.
    pub(crate) fn checked_write_locked(
        &self,
        offset: u16,
        width: u8,
        value: u32,
        vendor: Option<u16>,
    ) -> Result<(), ConfigWriteError> {
        let command = self.read16(config_guard::COMMAND);
        self.protected
            .check_write(offset, width, value, command, vendor)?;
        match width {
            4 => self.write32(offset, value),
            2 => self.write16(offset, value as u16),
            _ => {
                let dword = self.read32(offset & !3);
                let shift = (offset & 3) * 8;
                let mut keep = dword & !(0xff << shift);
                if offset & !3 == config_guard::COMMAND {
                    keep &= 0x0000_ffff;
                }
                self.write32(offset & !3, keep | ((value & 0xff) << shift));
            }
        }
        Ok(())
    }
}

/// Vendor ID | Device ID << 16: which device a function's parked memory was given to.
fn device_ids(info: &Function) -> u32 {
    u32::from(info.vendor_id) | u32::from(info.device_id) << 16
}

impl Drop for Core {
    fn drop(&mut self) {
        // Every guard is gone (each holds this core), so bus mastering is off (the last
        // guard read its write back). The device still holds the addresses it was given,
        // and the next claim may turn bus mastering on again: the claim's DMA memory is
        // parked for that claim, before the function is released to be claimed.
        let master = self.master.get_mut();
        // Exactly as long as needed: what is parked stays on the heap until the next claim.
        let mut regions = Vec::with_capacity(master.quarantine.len() + master.pool.len());
        regions.append(&mut master.quarantine);
        regions.append(&mut master.pool);
        let parking = self.platform.parking();
        let address = self.info.address;
        let ids = device_ids(&self.info);
        let mut regions = Some(regions);
        self.platform.without_interrupts(&mut || {
            if let Some(regions) = regions.take() {
                parking.park(address, ids, regions);
            }
        });
        self.platform.release_function(self.info.address);
    }
}

/// One PCI function, owned.
///
/// # Invariants
/// At most one `PciFunction` exists per function at a time: the kernel's PCI layer hands one
/// out per claim. The function goes back to the PCI layer when this handle *and* every
/// window, DMA buffer and guard made from it are gone
/// ([`Platform::release_function`]).
///
/// Who owns it: the driver that claimed the function (or its
/// [`IrqVectors`](crate::irq::IrqVectors), which owns the handle while vectors are allocated).
/// `Drop` gives the function back (once its windows and buffers are gone too), so it can be
/// claimed again. A leaked handle keeps the function claimed forever.
///
/// A window made from a function keeps it claimed after the handle is dropped, so it can
/// never reach a function another driver owns:
///
/// ```
/// # use pci::fake::irq::{FakePlatform, device, handle};
/// let platform = FakePlatform::leaked(1);
/// let (function, _space) = handle(device(4), platform);
/// let registers = function.map_bar(0, 0, 0x1000).unwrap();
/// drop(function);
/// assert!(platform.released().is_empty()); // still ours: the window lives
/// let _ = registers.read32(0);
/// drop(registers);
/// assert_eq!(platform.released().len(), 1); // now it can be claimed again
/// ```
///
/// A driver has no unfiltered write. The registers other owners hold answer with an error at
/// run time, and the stack's own raw path is not reachable:
///
/// ```
/// # use pci::fake::irq::function_with_msix;
/// # use pci::function::ConfigWriteError;
/// let function = function_with_msix(4);
/// let command = function.config_read16(0x04);
/// assert_eq!(
///     function.config_write16(0x04, command | 0x4), // Bus Master Enable
///     Err(ConfigWriteError::Command { bits: 0x4 })
/// );
/// assert!(function.config_write32(0x10, 0).is_err()); // BAR0
/// ```
///
/// ```compile_fail,E0624
/// # let function = pci::fake::irq::function_with_msix(4);
/// function.core().write16(0x04, 0x0006); // error[E0624]: method `core` is private
/// ```
///
/// Nothing is made from a function once its handle is gone:
///
/// ```compile_fail,E0382
/// # let function = pci::fake::irq::function_with_msix(4);
/// drop(function);
/// let registers = function.map_bar(0, 0, 0x1000); // error[E0382]: use of moved value
/// ```
///
/// DMA memory comes only from a [`BusMaster`] guard:
///
/// ```compile_fail,E0599
/// # let function = pci::fake::irq::function_with_msix(4);
/// let buffer = function.dma_buffer(4096); // error[E0599]: no method named `dma_buffer`
/// ```
pub struct PciFunction {
    core: Arc<Core>,
}

impl fmt::Debug for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PciFunction")
            .field("address", &self.core.info.address)
            .finish_non_exhaustive()
    }
}

impl PciFunction {
    /// Makes the handle of a function found by enumeration. Bus mastering is turned off: it
    /// is on only while a [`BusMaster`] guard (or MSI/MSI-X vectors) says so.
    ///
    /// # Safety
    /// No other `PciFunction` for `info.address` may exist while this one (or anything made
    /// from it) does (the PCI layer's claim bookkeeping guarantees it), and `config` must
    /// reach that function.
    pub unsafe fn new(
        info: Function,
        config: &'static dyn ConfigPort,
        platform: &'static dyn Platform,
    ) -> PciFunction {
        let protected = Protected::of(&info, |at| config.read32(info.address, at));
        let parking = platform.parking();
        let mut pool = Vec::new();
        let ids = device_ids(&info);
        platform.without_interrupts(&mut || pool = parking.take(info.address, ids));
        // INVARIANT: the caller guarantees this is the only handle.
        let core = Core {
            info,
            config,
            platform,
            protected,
            master: Mutex::new(Master {
                holders: 0,
                quarantine: Vec::new(),
                pool,
            }),
            gone: AtomicBool::new(false),
        };
        core.command(0, config_guard::BUS_MASTER);
        PciFunction {
            core: Arc::new(core),
        }
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// What enumeration found.
    pub fn info(&self) -> &Function {
        &self.core.info
    }

    /// The function's address.
    pub fn address(&self) -> Address {
        self.core.info.address
    }

    /// Reads a configuration dword (any offset; what cannot be reached reads as all ones).
    pub fn config_read32(&self, offset: u16) -> u32 {
        self.core.read32(offset)
    }

    /// Reads a configuration word.
    pub fn config_read16(&self, offset: u16) -> u16 {
        self.core.read16(offset)
    }

    /// Reads a configuration byte.
    pub fn config_read8(&self, offset: u16) -> u8 {
        (self.core.read32(offset & !3) >> ((offset & 3) * 8)) as u8
    }

    /// Writes a configuration dword, unless it touches a register another owner holds (see
    /// [`config_guard`]); the error says which and why.
    pub fn config_write32(&self, offset: u16, value: u32) -> Result<(), ConfigWriteError> {
        self.core.checked_write(offset, 4, value, None)
    }

    /// Writes a configuration word, as [`PciFunction::config_write32`] does. The other half of
    /// its dword is written back as read, except Status, whose write-one-to-clear bits are
    /// written as zero.
    pub fn config_write16(&self, offset: u16, value: u16) -> Result<(), ConfigWriteError> {
        self.core.checked_write(offset, 2, u32::from(value), None)
    }

    /// Writes a configuration byte, as [`PciFunction::config_write32`] does.
    pub fn config_write8(&self, offset: u16, value: u8) -> Result<(), ConfigWriteError> {
        self.core.checked_write(offset, 1, u32::from(value), None)
    }

    /// Turns bus mastering on for as long as the returned guard lives (PCI 3.0 §6.2.2,
    /// Command bit 2). DMA buffers are made from the guard.
    pub fn bus_master(&self) -> BusMaster {
        BusMaster::new(self.core.clone())
    }

    /// Whether the Command register's Bus Master Enable is set now.
    pub fn is_bus_master(&self) -> bool {
        self.core.read16(config_guard::COMMAND) & config_guard::BUS_MASTER != 0
    }

    /// Offsets of the function's vendor-specific capabilities (ID 09h), in list order.
    pub fn vendor_capabilities(&self) -> impl Iterator<Item = u16> + '_ {
        self.core
            .info
            .capabilities
            .iter()
            .filter(|c| c.id == crate::capability::id::VENDOR)
            .map(|c| u16::from(c.offset))
    }

    /// A window on the vendor-specific capability at `offset`, bounded to its length.
    pub fn vendor_window(&self, offset: u16) -> Option<VendorWindow> {
        VendorWindow::new(self.core.clone(), offset)
    }

    /// Microseconds since boot, for timeouts.
    pub fn now_us(&self) -> u64 {
        self.core.platform.now_us()
    }

    /// Waits until `done` holds or `timeout_us` passed; whether it held.
    ///
    /// `done` is typically "the handler's interrupt counter moved" (a completion, the device
    /// raised its MSI) and sometimes a status register to poll. Between looks the wait hands
    /// the CPU to the platform ([`Platform::idle_until`]) until the deadline or the next
    /// presence check, whichever is first. The kernel halts the CPU there until the next
    /// interrupt, as an idle loop does, instead of spinning: the device's own interrupt
    /// wakes it, and the local APIC timer, armed for that bound, wakes it when nothing else
    /// does. A halted CPU leaves its time to whatever else runs on the machine: under QEMU's
    /// TCG the vCPU thread sleeps, and QEMU's I/O threads, which do the device's work, get
    /// the host's cores. It halts only when called with interrupts enabled: a CPU halted with
    /// them off would never wake, so from interrupt context, under a lock held with
    /// interrupts off, or early in the boot (before the timer is calibrated) it spins as
    /// before. A register that changes without an interrupt is looked at again whenever the
    /// CPU wakes, at the latest every [`PRESENCE_CHECK_US`] (as Linux drivers poll such
    /// registers between `msleep`s).
    ///
    /// Every [`PRESENCE_CHECK_US`], and once more before giving up, it also checks that the
    /// function still answers ([`PciFunction::is_present`]): a device that was removed (or
    /// died) ends the wait early with `false` instead of waiting out the whole timeout, and
    /// [`PciFunction::vanished`] then says why.
    pub fn wait_until(&self, timeout_us: u64, mut done: impl FnMut() -> bool) -> bool {
        let platform = self.core.platform;
        let start = platform.now_us();
        let deadline = start.saturating_add(timeout_us);
        let mut next_check = start.saturating_add(PRESENCE_CHECK_US);
        loop {
            // Looks at `done` (with interrupts off, in the kernel) and sleeps or spins a
            // little; `true` once it held.
            if platform.idle_until(deadline.min(next_check), &mut done) {
                return true;
            }
            let now = platform.now_us();
            if now > deadline {
                // The sleep may have ended with the interrupt that made `done` true: one
                // last look, then the presence check that tells a timeout from a removal.
                if done() {
                    return true;
                }
                let _ = self.is_present();
                return false;
            }
            if now >= next_check {
                if !self.is_present() {
                    return false;
                }
                next_check = now.saturating_add(PRESENCE_CHECK_US);
            }
        }
    }

    /// Whether the function still answers configuration reads with the IDs enumeration found
    /// (PCIe Base 6.0 §2.3.2: a request to a function that is gone completes as Unsupported
    /// Request, read as all ones). Once it did not, it stays gone for this handle: a function
    /// that reappears is a new device and needs a new claim.
    ///
    /// Configuration writes through this handle (and everything made from it) check the same
    /// way first, and are dropped once the function is gone.
    pub fn is_present(&self) -> bool {
        self.core.answers()
    }

    /// Whether a presence check ([`PciFunction::is_present`], or a wait that gave up early)
    /// found the function gone. Reads nothing.
    pub fn vanished(&self) -> bool {
        self.core.gone.load(Ordering::Relaxed)
    }

    pub(crate) fn platform(&self) -> &'static dyn Platform {
        self.core.platform
    }
}
