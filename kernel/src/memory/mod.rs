//! Physical and virtual memory: where the kernel's memory comes from and who owns it.
//!
//! - [`frames`]: the physical frame allocator, built from the loader's memory map minus
//!   everything that must never be handed out (low memory, the kernel image, the boot
//!   information, the ACPI tables).
//! - [`paging`]: the kernel's own page tables (the `x86_64` crate's mapper), replacing the
//!   boot tables: RAM identity-mapped with W^X, nothing else.
//! - [`mmio`]: uncached mappings of device registers as owning values that unmap on `Drop`.
//! - [`heap`]: the kernel heap (`linked_list_allocator`), sized from the memory available.
//! - [`firmware`]: where the ACPI tables are, so they are kept out of the allocator.

pub mod dma;
pub mod firmware;
pub mod frames;
pub mod heap;
pub mod mmio;
pub mod paging;

use boot::BootInfo;

/// Size of a small page and of a frame.
pub const PAGE_SIZE: u64 = 4096;

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
}

/// Physical (= virtual) address ranges of the kernel image, from the linker script.
#[derive(Clone, Copy, Debug)]
pub struct KernelImage {
    /// The whole image, `.bss` included.
    pub all: (u64, u64),
    /// Executable code.
    pub text: (u64, u64),
    /// Read-only data.
    pub rodata: (u64, u64),
}

/// Where the linker put the kernel.
pub fn kernel_image() -> KernelImage {
    KernelImage {
        all: (
            (&raw const __kernel_start) as u64,
            (&raw const __kernel_end) as u64,
        ),
        text: (
            (&raw const __text_start) as u64,
            (&raw const __text_end) as u64,
        ),
        rodata: (
            (&raw const __rodata_start) as u64,
            (&raw const __rodata_end) as u64,
        ),
    }
}

/// The CPU's physical address width in bits: CPUID 8000_0008h EAX bits 7:0 (Intel SDM vol. 2A,
/// CPUID), or 36 on a processor without that leaf (SDM vol. 3A §4.1.4), kept within 32 to 52
/// (the architectural maximum, §4.5).
pub fn phys_bits() -> u32 {
    let max_extended = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    let bits = if max_extended >= 0x8000_0008 {
        core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff
    } else {
        36
    };
    bits.clamp(32, 52)
}

/// One past the highest physical address the CPU can reach: no device or RAM mapping goes
/// at or above it (a page-table entry naming a frame there has reserved bits set).
pub fn phys_limit() -> u64 {
    1 << phys_bits()
}

/// One past the highest address RAM may have here: what the CPU reaches, and below the
/// canonical limit 2^47, because RAM is identity-mapped in the lower half (SDM vol. 3A
/// §4.5). The memory map loses what lies above ([`boot::BootInfo::keep_addressable_ram`]).
pub fn ram_limit() -> u64 {
    phys_limit().min(1 << 47)
}

/// Memory below 1 MiB: real-mode IVT, BIOS data, EBDA, option ROMs and the loaders' own
/// structures. Never handed out.
pub const LOW_MEMORY_END: u64 = 0x10_0000;

/// Brings up frames, page tables and the heap, in that order.
pub fn init(boot: &'static BootInfo) {
    let image = kernel_image();
    let acpi = firmware::acpi_table_ranges(boot, &firmware::EarlyPhys);
    frames::init(boot, image, acpi);
    paging::init(boot, image);
    mmio::init(boot);
    heap::init(boot);
}
