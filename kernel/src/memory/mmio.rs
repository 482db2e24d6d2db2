//! Device registers mapped uncached, as owned values.
//!
//! [`Mmio::map`] takes a physical range of device memory, reserves virtual space in the
//! window [`super::paging::MMIO_BASE`], and maps it with caching disabled (PCD | PWT). The
//! returned [`Mmio`] is the only handle to that mapping:
//!
//! - Owner: whoever called `map` (a driver, the PCI layer for an ECAM window, the APIC code).
//! - `Drop`: unmaps every page, flushes the TLB and returns the virtual range to the window;
//!   after that the registers are unreachable through this mapping.
//! - Leak (`mem::forget`): the virtual range and the page-table entries stay in use; no other
//!   mapping can take them, so a leak costs address space, never correctness.
//!
//! Virtual space comes from `pci::mmio_space::MmioSpace` (host-tested bookkeeping: 4 KiB
//! mappings in the window's lower half, 2 MiB ones in its upper half); this file writes the
//! page tables.
//!
//! Accesses are volatile and bounds-checked against the mapped length (`pci::range`, which
//! cannot wrap). RAM the kernel identity-maps is refused: mapping it uncached beside its
//! cached identity mapping would create conflicting memory types (SDM vol. 3A §11.12.4).
//! The partial first or last page of a RAM region is not identity-mapped, so it can be.

use boot::BootInfo;
use boot::ranges::RangeSet;
use pci::mmio_space::MmioSpace;
use spin::Mutex;
use x86_64::structures::paging::{Size2MiB, Size4KiB};

use super::PAGE_SIZE;
use super::paging::{self, MMIO_BASE, MMIO_SIZE};

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Zero length, the range wraps around the address space, or it lies past what the
    /// CPU can address.
    BadRange {
        /// Requested physical start.
        phys: u64,
        /// Requested length.
        len: u64,
    },
    /// The range overlaps RAM in the memory map.
    OverlapsRam {
        /// Requested physical start.
        phys: u64,
    },
    /// No virtual space left in the window.
    WindowFull {
        /// Bytes asked for.
        len: u64,
    },
    /// The page tables refused the mapping.
    PageTable(&'static str),
    /// A device window over registers the kernel owns (see [`reserve_for_kernel`]).
    KernelOwned {
        /// Requested physical start.
        phys: u64,
    },
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::BadRange { phys, len } => write!(f, "bad MMIO range {phys:#x}+{len:#x}"),
            MapError::OverlapsRam { phys } => write!(f, "MMIO range at {phys:#x} overlaps RAM"),
            MapError::WindowFull { len } => {
                write!(f, "no virtual space for {len:#x} bytes of MMIO")
            }
            MapError::PageTable(why) => write!(f, "page tables refused the mapping: {why}"),
            MapError::KernelOwned { phys } => write!(
                f,
                "MMIO range at {phys:#x} overlaps registers the kernel owns (APIC, HPET, ECAM)"
            ),
        }
    }
}

/// Free virtual space in the MMIO window, the RAM ranges that may not be mapped, and the
/// device registers only the kernel may map.
struct Window {
    space: MmioSpace<256>,
    /// The whole pages of the RAM regions, which paging identity-maps with caching on
    /// (`boot::info::whole_pages`): never mapped again uncached. A region's partial first or
    /// last page is not among them, so it can be mapped here (an ACPI table there, say).
    mapped: RangeSet<{ boot::info::MAX_MEMORY_REGIONS }>,
    kernel: RangeSet<{ boot::info::MAX_MEMORY_REGIONS }>,
}

/// The interrupt message range (Intel SDM vol. 3A §11.11.1: MSI addresses are `0xFEEx_xxxx`;
/// the xAPIC's registers sit at its base): never a device's.
const INTERRUPT_RANGE: (u64, u64) = (0xfee0_0000, 0xfef0_0000);

static WINDOW: Mutex<Option<Window>> = Mutex::new(None);

/// Sets up the window. Called by `memory::init` after paging.
pub fn init(boot: &BootInfo) {
    let space = MmioSpace::window(MMIO_BASE, MMIO_SIZE).expect("MMIO window 2 MiB-aligned");
    let mut mapped = RangeSet::new();
    // The image is identity-mapped even where a loader's map described it oddly.
    let image = super::kernel_image().all;
    let _ = mapped.insert(
        image.0 & !(PAGE_SIZE - 1),
        image.1.next_multiple_of(PAGE_SIZE),
    );
    for r in boot.memory_map().iter().filter(|r| paging::is_ram(r.kind)) {
        if let Some((start, end)) = boot::info::whole_pages(r.start, r.end()) {
            let _ = mapped.insert(start, end);
        }
    }
    let mut kernel = RangeSet::new();
    let _ = kernel.insert(INTERRUPT_RANGE.0, INTERRUPT_RANGE.1);
    *WINDOW.lock() = Some(Window {
        space,
        mapped,
        kernel,
    });
}

/// Marks `[phys, phys + len)` as registers the kernel owns (an IOAPIC, the HPET, an ECAM
/// window): [`Mmio::map_device`] refuses it from then on, so a device window (whose BAR
/// firmware may have left unassigned at 0, or placed over them) cannot reach them. Kept for
/// the rest of the boot; a full set keeps what it has and logs the rest.
pub fn reserve_for_kernel(phys: u64, len: u64) {
    let Some(end) = phys.checked_add(len) else {
        return;
    };
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(window) = WINDOW.lock().as_mut()
            && window.kernel.insert(phys, end).is_err()
        {
            log::warn!("mmio: no room to reserve the kernel's registers at {phys:#x}");
        }
    });
}

/// An uncached mapping of device registers.
///
/// # Invariants
/// - `[virt, virt + pages * 4 KiB)` is mapped to `[phys & !0xfff, ...)` uncached, owned by
///   this value alone, until `Drop`.
/// - `virt + offset` is the byte at `phys`; `len` bytes from there are accessible.
pub struct Mmio {
    phys: u64,
    len: u64,
    virt: u64,
    offset: u64,
    pages: u64,
    /// Mapped with 2 MiB pages (`pages` counts 4 KiB units either way).
    huge: bool,
}

/// 2 MiB: large device windows (ECAM: 1 MiB per bus) aligned to this use large pages.
const HUGE: u64 = 2 << 20;

impl Mmio {
    /// Maps `len` bytes of a device's registers for its driver: as [`Mmio::map`], but never
    /// over registers the kernel owns ([`reserve_for_kernel`]) or the interrupt message
    /// range. What the PCI layer maps BAR windows and MSI-X tables with.
    pub fn map_device(phys: u64, len: u64) -> Result<Mmio, MapError> {
        let end = phys
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(MapError::BadRange { phys, len })?;
        let owned = x86_64::instructions::interrupts::without_interrupts(|| {
            let guard = WINDOW.lock();
            let window = guard.as_ref().expect("mmio used before memory::init");
            super::frames::overlaps(&window.kernel, phys, end)
        });
        if owned {
            return Err(MapError::KernelOwned { phys });
        }
        Mmio::map(phys, len)
    }

    /// Maps `len` bytes of device memory at physical address `phys`.
    pub fn map(phys: u64, len: u64) -> Result<Mmio, MapError> {
        let end = phys
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(MapError::BadRange { phys, len })?;
        let first = phys & !(PAGE_SIZE - 1);
        let last = end
            .checked_add(PAGE_SIZE - 1)
            .ok_or(MapError::BadRange { phys, len })?
            & !(PAGE_SIZE - 1);
        if last > super::phys_limit() {
            // Past the CPU's physical address width: the page-table entry would have
            // reserved bits set (SDM vol. 3A §4.5), or not be an address at all.
            return Err(MapError::BadRange { phys, len });
        }
        let pages = (last - first) / PAGE_SIZE;
        let size = pages * PAGE_SIZE;
        let huge = first.is_multiple_of(HUGE) && size.is_multiple_of(HUGE);

        let virt = x86_64::instructions::interrupts::without_interrupts(|| {
            let mut guard = WINDOW.lock();
            let window = guard.as_mut().expect("mmio used before memory::init");
            if super::frames::overlaps(&window.mapped, first, last) {
                return Err(MapError::OverlapsRam { phys });
            }
            window
                .space
                .allocate(size, huge)
                .map_err(|_| MapError::WindowFull { len: size })
        })?;

        let mapped = paging::with(|space| {
            let step = if huge { HUGE } else { PAGE_SIZE };
            let mut at = 0;
            while at < size {
                let result = if huge {
                    space
                        .map_device::<Size2MiB>(virt + at, first + at)
                        .map_err(describe)
                } else {
                    space
                        .map_device::<Size4KiB>(virt + at, first + at)
                        .map_err(describe)
                };
                if let Err(why) = result {
                    unmap(space, virt, at, huge);
                    return Err(MapError::PageTable(why));
                }
                at += step;
            }
            Ok(())
        });
        if let Err(e) = mapped {
            release_virtual(virt, size, huge);
            return Err(e);
        }
        // INVARIANT: all `pages` pages are mapped to the device range and owned by this value.
        Ok(Mmio {
            phys,
            len,
            virt,
            offset: phys - first,
            pages,
            huge,
        })
    }

    /// Physical address of the first byte.
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Virtual address of the first byte.
    pub fn virt(&self) -> u64 {
        self.virt + self.offset
    }

    /// Mapped length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the mapping is empty (never: `map` refuses zero length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pointer to a naturally aligned access of `size` bytes at `offset`; panics outside.
    fn check(&self, offset: u64, size: u64) -> *mut u8 {
        match pci::range::checked_access(offset, size, self.len) {
            // Cannot wrap: the mapping lies inside the MMIO window.
            Ok(r) => (self.virt() + r.start) as *mut u8,
            Err(e) => panic!(
                "MMIO access of {size} bytes at {offset:#x} outside {:#x} bytes at {:#x}: {e}",
                self.len, self.phys
            ),
        }
    }

    /// Reads a 32-bit register. Panics if `offset` is misaligned or outside the mapping.
    pub fn read32(&self, offset: u64) -> u32 {
        let p = self.check(offset, 4) as *const u32;
        // SAFETY: `check` proved the aligned 4 bytes lie inside the live mapping (invariant).
        unsafe { p.read_volatile() }
    }

    /// Reads an 8-bit register. Panics if `offset` is outside the mapping.
    pub fn read8(&self, offset: u64) -> u8 {
        let p = self.check(offset, 1);
        // SAFETY: `check` proved the byte lies inside the live mapping (invariant).
        unsafe { p.read_volatile() }
    }

    /// Writes an 8-bit register. Panics if `offset` is outside the mapping.
    pub fn write8(&self, offset: u64, value: u8) {
        let p = self.check(offset, 1);
        // SAFETY: as in `read8`.
        unsafe { p.write_volatile(value) }
    }

    /// Reads a 16-bit register. Panics if `offset` is misaligned or outside the mapping.
    pub fn read16(&self, offset: u64) -> u16 {
        let p = self.check(offset, 2) as *const u16;
        // SAFETY: `check` proved the aligned 2 bytes lie inside the live mapping (invariant).
        unsafe { p.read_volatile() }
    }

    /// Writes a 16-bit register. Panics if `offset` is misaligned or outside the mapping.
    pub fn write16(&self, offset: u64, value: u16) {
        let p = self.check(offset, 2) as *mut u16;
        // SAFETY: as in `read16`.
        unsafe { p.write_volatile(value) }
    }

    /// Reads a 64-bit register. Panics if `offset` is misaligned or outside the mapping.
    pub fn read64(&self, offset: u64) -> u64 {
        let p = self.check(offset, 8) as *const u64;
        // SAFETY: `check` proved the aligned 8 bytes lie inside the live mapping (invariant).
        unsafe { p.read_volatile() }
    }

    /// Writes a 64-bit register. Panics if `offset` is misaligned or outside the mapping.
    pub fn write64(&self, offset: u64, value: u64) {
        let p = self.check(offset, 8) as *mut u64;
        // SAFETY: as in `read64`.
        unsafe { p.write_volatile(value) }
    }

    /// Writes a 32-bit register. Panics if `offset` is misaligned or outside the mapping.
    pub fn write32(&self, offset: u64, value: u32) {
        let p = self.check(offset, 4) as *mut u32;
        // SAFETY: as in `read32`.
        unsafe { p.write_volatile(value) }
    }
}

/// The parts of a mapping handed out by [`Mmio::into_raw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawMmio {
    /// Physical address of the first byte.
    pub phys: u64,
    /// Length in bytes.
    pub len: u64,
    /// Virtual address of the first byte.
    pub virt: u64,
}

impl Mmio {
    /// Gives up ownership without unmapping, for APIs (such as the `acpi` crate's
    /// `PhysicalMapping`) that keep a raw address and call back to unmap.
    pub fn into_raw(self) -> RawMmio {
        let raw = RawMmio {
            phys: self.phys,
            len: self.len,
            virt: self.virt(),
        };
        core::mem::forget(self);
        raw
    }

    /// Takes ownership back from [`Mmio::into_raw`].
    ///
    /// # Safety
    /// `raw` must come from `into_raw` and be given back at most once.
    pub unsafe fn from_raw(raw: RawMmio) -> Mmio {
        let first = raw.phys & !(PAGE_SIZE - 1);
        let last = (raw.phys + raw.len).next_multiple_of(PAGE_SIZE);
        let size = last - first;
        // INVARIANT: the caller guarantees this is the mapping `into_raw` gave up, and `map`
        // chose large pages by the same rule.
        Mmio {
            phys: raw.phys,
            len: raw.len,
            virt: raw.virt - (raw.phys - first),
            offset: raw.phys - first,
            pages: size / PAGE_SIZE,
            huge: first.is_multiple_of(HUGE) && size.is_multiple_of(HUGE),
        }
    }
}

/// Whether `[phys, phys + len)` lies inside RAM that the kernel identity-maps: the whole
/// pages of the RAM regions, not a region's partial first or last page.
pub fn is_identity_mapped_ram(phys: u64, len: u64) -> bool {
    let end = phys.saturating_add(len);
    x86_64::instructions::interrupts::without_interrupts(|| {
        WINDOW
            .lock()
            .as_ref()
            .is_some_and(|w| w.mapped.iter().any(|(s, e)| s <= phys && end <= e))
    })
}

fn release_virtual(virt: u64, size: u64, huge: bool) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(window) = WINDOW.lock().as_mut()
            && let Err(e) = window.space.free(virt, size, huge)
        {
            log::warn!("mmio: {size:#x} bytes at {virt:#x} not returned ({e}); leaked");
        }
    });
}

fn describe<S: x86_64::structures::paging::PageSize>(
    e: x86_64::structures::paging::mapper::MapToError<S>,
) -> &'static str {
    use x86_64::structures::paging::mapper::MapToError;
    match e {
        MapToError::FrameAllocationFailed => "out of frames for page tables",
        MapToError::ParentEntryHugePage => "a large page already covers the range",
        MapToError::PageAlreadyMapped(_) => "page already mapped",
    }
}

/// Unmaps `size` bytes from `virt` (4 KiB or 2 MiB pages).
fn unmap(space: &mut paging::AddressSpace, virt: u64, size: u64, huge: bool) {
    let step = if huge { HUGE } else { PAGE_SIZE };
    let mut at = 0;
    while at < size {
        let result = if huge {
            space.unmap_huge(virt + at)
        } else {
            space.unmap_page(virt + at)
        };
        if let Err(e) = result {
            log::error!("mmio: unmapping {:#x} failed: {e:?}", virt + at);
        }
        at += step;
    }
}

impl Drop for Mmio {
    fn drop(&mut self) {
        paging::with(|space| unmap(space, self.virt, self.pages * PAGE_SIZE, self.huge));
        release_virtual(self.virt, self.pages * PAGE_SIZE, self.huge);
    }
}

/// Free bytes of virtual space in the MMIO window (for tests).
pub fn window_free_bytes() -> u64 {
    x86_64::instructions::interrupts::without_interrupts(|| {
        WINDOW.lock().as_ref().map_or(0, |w| w.space.free_bytes())
    })
}
