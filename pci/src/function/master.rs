//! [`BusMaster`]: bus mastering as a guard, and the DMA quarantine behind it.
//!
//! Design note. A device with Bus Master Enable set (PCI 3.0 §6.2.2, Command bit 2) can write
//! any memory it was given the address of, at any time. Without an IOMMU nothing stops it, so
//! the one thing software can guarantee is the order of events: memory a device was pointed at
//! is not reused while the device can still master the bus. Here:
//!
//! - the bit is on exactly while a guard lives (MSI/MSI-X vectors hold one: their messages are
//!   memory writes);
//! - a [`DmaBuffer`] dropped while the bit is on is not freed but *quarantined* on its
//!   function, and freed when the last guard goes and the bit is off (read back, so the
//!   write has reached the device);
//! - the function is released to the PCI layer only after that (every guard and buffer holds
//!   the function's core).

use alloc::sync::Arc;
use core::fmt;

use super::{Core, config_guard};

/// Bus mastering on for one function, for as long as this guard lives.
///
/// # Invariants
/// While a `BusMaster` for a function exists, that function's Bus Master Enable is set, and
/// the function's holder count includes this guard.
///
/// Who owns it: the driver (or its [`IrqVectors`](crate::irq::IrqVectors) for MSI/MSI-X).
/// `Drop` turns bus mastering off when it was the last guard, then frees the DMA buffers that
/// were dropped while it was on. A leaked guard keeps the device able to master the bus, its
/// quarantined buffers allocated and its function claimed, forever.
///
/// A driver that drops its buffers first and its guard last (the natural field order: the
/// guard declared after the buffers) frees them at once; in the other order they wait in the
/// quarantine until the guard is gone. Either way no buffer is reused while the device can
/// write to it:
///
/// ```
/// # use pci::fake::irq::{FakePlatform, device, handle};
/// let platform = FakePlatform::leaked(1);
/// let (function, _space) = handle(device(4), platform);
/// let master = function.bus_master();
/// assert!(function.is_bus_master());
/// let buffer = master.dma_buffer(4096).unwrap();
/// drop(buffer); // the device may still write there: kept
/// assert_eq!(platform.dma_live(), 1);
/// drop(master); // bus mastering off, then the buffer is freed
/// assert!(!function.is_bus_master());
/// assert_eq!(platform.dma_live(), 0);
/// ```
pub struct BusMaster {
    core: Arc<Core>,
}

impl fmt::Debug for BusMaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusMaster")
            .field("function", &self.core.info.address)
            .finish()
    }
}

impl BusMaster {
    pub(crate) fn new(core: Arc<Core>) -> BusMaster {
        let mut master = core.master.lock();
        master.holders += 1;
        if master.holders == 1 {
            core.command(config_guard::BUS_MASTER, 0);
        }
        drop(master);
        // INVARIANT: counted above, and the bit is set.
        BusMaster { core }
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }
}

impl Clone for BusMaster {
    fn clone(&self) -> BusMaster {
        BusMaster::new(self.core.clone())
    }
}

impl Drop for BusMaster {
    fn drop(&mut self) {
        let quarantine = {
            let mut master = self.core.master.lock();
            master.holders -= 1;
            if master.holders > 0 {
                return;
            }
            self.core.command(0, config_guard::BUS_MASTER);
            // Reading back makes sure the write reached the device before memory is reused.
            let _ = self.core.read16(config_guard::COMMAND);
            core::mem::take(&mut master.quarantine)
        };
        drop(quarantine);
    }
}

impl Core {
    /// A DMA region whose buffer was dropped: freed now if the device cannot master the bus,
    /// else kept until it cannot.
    pub(crate) fn retire(&self, region: alloc::boxed::Box<dyn crate::platform::DmaRegion>) {
        let mut master = self.master.lock();
        if master.holders > 0 {
            master.quarantine.push(region);
        } else {
            drop(master);
            drop(region);
        }
    }
}
