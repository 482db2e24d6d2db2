//! Reading what the loader handed over, once, into kernel-owned memory.
//!
//! The boot path passes `(loader, address)`; the matching parser in `boot` reads the loader's
//! structures through [`EarlyPhys`] (the boot identity map) and returns a self-contained
//! [`BootInfo`], which is stored in a `static` inside the kernel image. After that, nothing
//! refers to the loader's memory, so low memory and the multiboot2 area can be reused.

use boot::BootInfo;
use spin::Once;

use crate::memory::firmware::EarlyPhys;

static BOOT_INFO: Once<BootInfo> = Once::new();

/// Why the boot information could not be read.
pub enum Error {
    /// The boot path passed a loader code it does not know.
    UnknownLoader(u32),
    /// The PVH structure is malformed.
    Pvh(boot::pvh::PvhError),
    /// The multiboot2 structure is malformed.
    Multiboot2(boot::multiboot2::Multiboot2Error),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::UnknownLoader(code) => write!(f, "unknown loader code {code}"),
            Error::Pvh(e) => write!(f, "PVH start info: {e}"),
            Error::Multiboot2(e) => write!(f, "multiboot2 information: {e}"),
        }
    }
}

/// Parses the loader's information and keeps the result for the kernel's life.
pub fn init(loader: u32, address: u32) -> Result<&'static BootInfo, Error> {
    let address = u64::from(address);
    let mut info = match loader {
        boot::entry::LOADER_PVH => boot::pvh::parse(&EarlyPhys, address).map_err(Error::Pvh)?,
        boot::entry::LOADER_MULTIBOOT2 => {
            boot::multiboot2::parse(&EarlyPhys, address).map_err(Error::Multiboot2)?
        }
        other => return Err(Error::UnknownLoader(other)),
    };
    // An invalid RSDP copy costs ACPI (or its 2.0 part), not the boot.
    if let Some(e) = info.rsdp_error {
        match info.rsdp {
            Some(_) => log::warn!(
                "acpi: the loader's ACPI 2.0 RSDP copy is invalid ({e}); using its ACPI 1.0 copy (RSDT only)"
            ),
            None => log::warn!("acpi: the loader's RSDP copy is invalid ({e}); no ACPI"),
        }
    }
    // RAM the CPU cannot address, or that the map places over the PC's fixed device space,
    // is not RAM to the kernel: it would be identity-mapped and handed out.
    let limit = crate::memory::ram_limit();
    let removed = info.keep_addressable_ram(limit);
    if removed > 0 {
        log::warn!(
            "memory map: {removed:#x} bytes of RAM at or above {limit:#x} (what this CPU addresses) or in {:#x}-{:#x} (the fixed device space) are not used",
            boot::info::FIXED_DEVICE_SPACE.0,
            boot::info::FIXED_DEVICE_SPACE.1
        );
    }
    Ok(BOOT_INFO.call_once(|| info))
}

/// The boot information (after [`init`]).
pub fn get() -> &'static BootInfo {
    BOOT_INFO
        .get()
        .expect("boot information read before bootinfo::init")
}

/// Prints the loader's raw structures in the fixture format (`dumpboot` option), so a real
/// boot can become a host test of the parsers.
pub fn dump(info: &BootInfo) {
    crate::serial_println!("BOOTDUMP BEGIN");
    let _ = boot::phys::write_fixture(&mut crate::serial::SerialWriter, info, &EarlyPhys);
    crate::serial_println!("BOOTDUMP END");
}
