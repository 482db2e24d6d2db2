//! The owned handle of one PCI function.

use core::fmt;

use super::{IrqError, IrqKind, IrqKinds, IrqPlatform, IrqVectors};
use crate::config::ConfigSpace;
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

/// One PCI function, owned.
///
/// # Invariants
/// At most one `PciFunction` exists per function at a time: the kernel's PCI layer hands one
/// out per claim and takes the function back when the handle drops
/// ([`IrqPlatform::release_function`]).
///
/// Who owns it: the driver that claimed the function (or its [`IrqVectors`], which owns the
/// handle while vectors are allocated). `Drop` gives the function back to the PCI layer, so
/// it can be claimed again. A leaked handle keeps the function claimed forever.
pub struct PciFunction {
    info: alloc::boxed::Box<Function>,
    config: &'static dyn ConfigPort,
    platform: &'static dyn IrqPlatform,
}

impl fmt::Debug for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PciFunction")
            .field("address", &self.info.address)
            .finish_non_exhaustive()
    }
}

impl PciFunction {
    /// Makes the handle of a function found by enumeration.
    ///
    /// # Safety
    /// No other `PciFunction` for `info.address` may exist while this one does (the PCI
    /// layer's claim bookkeeping guarantees it), and `config` must reach that function.
    pub unsafe fn new(
        info: Function,
        config: &'static dyn ConfigPort,
        platform: &'static dyn IrqPlatform,
    ) -> PciFunction {
        // INVARIANT: the caller guarantees this is the only handle.
        PciFunction {
            info: alloc::boxed::Box::new(info),
            config,
            platform,
        }
    }

    /// What enumeration found.
    pub fn info(&self) -> &Function {
        &self.info
    }

    /// The function's address.
    pub fn address(&self) -> Address {
        self.info.address
    }

    /// Reads a configuration dword.
    pub fn config_read32(&self, offset: u16) -> u32 {
        self.config.read32(self.info.address, offset)
    }

    /// Reads a configuration word.
    pub fn config_read16(&self, offset: u16) -> u16 {
        (self.config_read32(offset & !3) >> ((offset & 2) * 8)) as u16
    }

    /// Writes a configuration word (read-modify-write of its dword; the other half is written
    /// back as read, except Status, whose write-one-to-clear bits are written as zero).
    pub fn config_write16(&self, offset: u16, value: u16) {
        let dword = self.config_read32(offset & !3);
        let shift = (offset & 2) * 8;
        let mut keep = dword & !(0xffff << shift);
        if offset & !3 == 0x04 {
            keep &= 0x0000_ffff; // never write back Status (RW1C)
        }
        self.config.write32(
            self.info.address,
            offset & !3,
            keep | (u32::from(value) << shift),
        );
    }

    /// Writes a configuration dword.
    pub fn config_write32(&self, offset: u16, value: u32) {
        self.config.write32(self.info.address, offset, value);
    }

    /// Microseconds since boot, for timeouts.
    pub fn now_us(&self) -> u64 {
        self.platform.now_us()
    }

    /// Waits until `done` holds or `timeout_us` passed; whether it held. Spins (interrupts
    /// stay enabled, so handlers run meanwhile).
    pub fn wait_until(&self, timeout_us: u64, mut done: impl FnMut() -> bool) -> bool {
        let deadline = self.now_us().saturating_add(timeout_us);
        while !done() {
            if self.now_us() > deadline {
                return false;
            }
            core::hint::spin_loop();
        }
        true
    }

    pub(crate) fn platform(&self) -> &'static dyn IrqPlatform {
        self.platform
    }

    /// Allocates between `min` and `max` interrupt vectors, trying MSI-X, then MSI, then INTx,
    /// as `kinds` allows — the owned counterpart of Linux's
    /// `pci_alloc_irq_vectors(dev, min, max, flags)`.
    ///
    /// The handle moves into the returned [`IrqVectors`]; on failure it comes back with the
    /// error. The vectors are released when the `IrqVectors` is dropped, and only then.
    ///
    /// Allocating twice for one function does not compile, because the first call took the
    /// handle:
    ///
    /// ```compile_fail,E0382
    /// # use pci::irq::IrqKinds;
    /// # let function = pci::fake::irq::function_with_msix(4);
    /// let first = function.alloc_irq_vectors(1, 4, IrqKinds::ALL);
    /// let second = function.alloc_irq_vectors(1, 4, IrqKinds::ALL); // error[E0382]: use of moved value
    /// ```
    pub fn alloc_irq_vectors(
        self,
        min: usize,
        max: usize,
        kinds: IrqKinds,
    ) -> Result<IrqVectors, (PciFunction, IrqError)> {
        if min == 0 || min > max {
            return Err((self, IrqError::BadRange { min, max }));
        }
        if self.config_read32(0) == u32::MAX {
            return Err((self, IrqError::Vanished));
        }
        let mut tried: [Option<alloc::boxed::Box<IrqError>>; 3] = [None, None, None];
        let mut function = self;
        for (i, kind) in [IrqKind::Msix, IrqKind::Msi, IrqKind::Intx]
            .into_iter()
            .enumerate()
        {
            let allowed = match kind {
                IrqKind::Msix => kinds.contains(IrqKinds::MSIX),
                IrqKind::Msi => kinds.contains(IrqKinds::MSI),
                IrqKind::Intx => kinds.contains(IrqKinds::INTX),
            };
            if !allowed {
                continue;
            }
            match IrqVectors::setup(function, kind, min, max) {
                Ok(vectors) => return Ok(vectors),
                Err((f, e)) => {
                    function = f;
                    tried[i] = Some(alloc::boxed::Box::new(e));
                }
            }
        }
        let [msix, msi, intx] = tried;
        Err((
            function,
            IrqError::Unavailable {
                min,
                msix,
                msi,
                intx,
            },
        ))
    }
}

impl Drop for PciFunction {
    fn drop(&mut self) {
        self.platform.release_function(self.info.address);
    }
}
