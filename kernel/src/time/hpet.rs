//! The HPET main counter as a reference counter (IA-PC HPET Specification 1.0a §2.3:
//! General Capabilities and ID register §2.3.4, General Configuration §2.3.5, Main Counter
//! Value §2.3.7).
//!
//! Design: the block is mapped uncached for the calibration only (the mapping is dropped
//! with the [`Hpet`]). Its rate comes from the capabilities register's counter period
//! (femtoseconds, nonzero and at most 100 ns), its width from `COUNT_SIZE_CAP`. The main
//! counter is enabled if the firmware left it stopped (`ENABLE_CNF`); the legacy-replacement
//! bit is left alone. A block that reads all ones, states an impossible period or does not
//! count is reported and not used.

use timekeeping::counter::Counter;

use super::measure::Reference;
use crate::memory::mmio::Mmio;

/// General Capabilities and ID register.
const CAPABILITIES: u64 = 0x000;
/// General Configuration register; bit 0 is `ENABLE_CNF`.
const CONFIGURATION: u64 = 0x010;
/// Main Counter Value register.
const MAIN_COUNTER: u64 = 0x0f0;
/// Size of the register block.
const BLOCK_LEN: u64 = 0x400;

/// A mapped HPET with a valid counter period.
pub struct Hpet {
    mmio: Mmio,
    counter: Counter,
}

impl Hpet {
    /// Maps the HPET at `base`, checks its capabilities and starts its main counter.
    pub fn new(base: u64) -> Result<Self, alloc::string::String> {
        crate::memory::mmio::reserve_for_kernel(base, BLOCK_LEN);
        let mmio =
            Mmio::map(base, BLOCK_LEN).map_err(|e| alloc::format!("cannot map {base:#x}: {e}"))?;
        let caps = mmio.read64(CAPABILITIES);
        let counter = Counter::hpet(caps).ok_or_else(|| {
            alloc::format!(
                "capabilities {caps:#018x} state no valid counter period ({} fs)",
                caps >> 32
            )
        })?;
        let config = mmio.read64(CONFIGURATION);
        if config & 1 == 0 {
            mmio.write64(CONFIGURATION, config | 1);
        }
        Ok(Self { mmio, counter })
    }
}

impl Reference for Hpet {
    fn counter(&self) -> Counter {
        self.counter
    }

    fn read(&self) -> u64 {
        self.mmio.read64(MAIN_COUNTER)
    }
}
