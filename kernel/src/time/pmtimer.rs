//! The ACPI power-management timer as a reference counter (ACPI 6.5 §4.8.3.3, "Power
//! Management Timer"; the FADT's `PM_TMR_BLK`/`X_PM_TMR_BLK`, §5.2.9, and `TMR_VAL_EXT`
//! flag, Table 5.10).
//!
//! Design: a 24- or 32-bit up counter at 3.579545 MHz, read as one 32-bit port. It is
//! used only when the FADT names it in system I/O space with at least 24 bits (hardware-
//! reduced platforms, such as QEMU's `microvm`, have none: their FADT leaves the block 0).
//! Reads above the counter's width are masked by `timekeeping::counter`.

use firmware::tables::fadt::{Fadt, space};
use timekeeping::counter::Counter;
use x86_64::instructions::port::Port;

use super::measure::Reference;

/// The PM timer at an I/O port.
pub struct PmTimer {
    port: u16,
    extended_32bit: bool,
}

impl PmTimer {
    /// The PM timer the FADT describes, or why there is none usable.
    pub fn from_fadt(fadt: &Fadt) -> Result<Self, &'static str> {
        let t = fadt.pm_timer.ok_or("the FADT names no PM timer block")?;
        if t.block.space_id != space::SYSTEM_IO {
            return Err("the PM timer block is not in I/O space");
        }
        if t.block.bit_width != 0 && t.block.bit_width < 24 {
            return Err("the PM timer block is narrower than 24 bits");
        }
        let port = u16::try_from(t.block.address)
            .ok()
            .filter(|p| *p != 0 && *p <= 0xfffc)
            .ok_or("the PM timer block address is not a port")?;
        Ok(Self {
            port,
            extended_32bit: t.extended_32bit,
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Reference for PmTimer {
    fn counter(&self) -> Counter {
        Counter::pm_timer(self.extended_32bit)
    }

    fn read(&self) -> u64 {
        // SAFETY: the FADT's PM timer port (checked to be an I/O address); reading the
        // timer has no side effects (ACPI 6.5 §4.8.3.3).
        u64::from(unsafe { Port::<u32>::new(self.port).read() })
    }
}
