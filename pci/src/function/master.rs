//! [`BusMaster`]: bus mastering as a guard, and the DMA quarantine behind it.
//!
//! Design note. A device with Bus Master Enable set (PCI 3.0 §6.2.2, Command bit 2) can write
//! any memory it was given the address of, at any time. Without an IOMMU nothing stops it, so
//! the one thing software can guarantee is the order of events: memory a device was pointed at
//! is not reused while the device can still master the bus. Here:
//!
//! - the bit is on exactly while a guard lives (MSI/MSI-X vectors hold one: their messages are
//!   memory writes);
//! - a [`DmaBuffer`] dropped during the claim is not freed but *quarantined* on its function.
//!   Not freed when the bit goes off: a new guard would turn it on again, and the device
//!   still holds every address it was given. Not when the claim ends either: the next claim
//!   may turn the bit on again too. When the function's last handle goes (after the last
//!   guard turned the bit off and read it back), the claim's DMA memory is *parked* for the
//!   function's next claim, which makes its buffers from it first
//!   ([`crate::parking`]); it is freed when nothing answers at the function's address any
//!   more. Within the claim, a new buffer reuses a dropped one's memory first;
//! - the function is released to the PCI layer only after that (every guard and buffer holds
//!   the function's core);
//! - the Command register is read, modified and written only under the function's lock,
//!   the same one the guards count under, so no write can put back a Bus Master Enable bit
//!   read before the last guard cleared it.

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
/// `Drop` turns bus mastering off when it was the last guard. The DMA buffers dropped during
/// the claim stay quarantined until the function's last handle is gone too, and are then
/// parked for its next claim. A leaked guard keeps the device able to master the bus, its
/// quarantined buffers allocated and its function claimed, forever.
///
/// No buffer's memory goes to anyone else while the device could write to it, even after bus
/// mastering was off for a while: the device keeps the addresses it was given, and a new
/// guard, in this claim or the next, would let it use them again.
///
/// ```
/// # use pci::fake::irq::{ADDRESS, FakePlatform, device, handle};
/// let platform = FakePlatform::leaked(1);
/// let (function, _space) = handle(device(4), platform);
/// let master = function.bus_master();
/// assert!(function.is_bus_master());
/// let buffer = master.dma_buffer(4096).unwrap();
/// drop(buffer); // the device may still write there: kept
/// assert_eq!(platform.dma_live(), 1);
/// drop(master); // bus mastering off ...
/// assert!(!function.is_bus_master());
/// let again = function.bus_master(); // ... but it can come back on:
/// assert_eq!(platform.dma_live(), 1); // still kept
/// drop(again);
/// drop(function); // the claim ends: parked for the next claim of the function
/// assert_eq!(platform.parked(ADDRESS), (1, 4096));
/// platform.remove(ADDRESS); // the function leaves the bus: now it is freed
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
        core.locked(|master| {
            master.holders += 1;
            if master.holders == 1 {
                core.command_locked(config_guard::BUS_MASTER, 0);
            }
        });
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
        let core = &self.core;
        core.locked(|master| {
            master.holders -= 1;
            if master.holders == 0 {
                core.command_locked(0, config_guard::BUS_MASTER);
                // Reading back makes sure the write reached the device before the claim
                // can end and its memory be reused.
                let _ = core.read16(config_guard::COMMAND);
            }
        });
    }
}

impl Core {
    /// A DMA region whose buffer was dropped: kept until the claim ends (see the module
    /// documentation). Every buffer was made from a guard, so the device may hold its
    /// address.
    pub(crate) fn retire(&self, region: alloc::boxed::Box<dyn crate::platform::DmaRegion>) {
        self.locked(|master| master.quarantine.push(region));
    }
}
