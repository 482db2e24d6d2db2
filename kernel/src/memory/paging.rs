//! The kernel's page tables (Intel SDM vol. 3A §4.5, 4-level paging).
//!
//! The boot path identity-maps the first 4 GiB with 2 MiB pages, device holes included, with
//! the default write-back type. [`init`] replaces that with tables of the kernel's own:
//!
//! - RAM (usable, ACPI and NVS ranges of the memory map, except page 0 so that null
//!   pointers fault) identity-mapped, 2 MiB pages where a range allows and 4 KiB pages at its
//!   edges; no device memory at all.
//! - The kernel image with W^X: `.text` read-only and executable, `.rodata` read-only, the
//!   rest writable and non-executable (NX where the CPU has it, EFER.NXE set at boot).
//! - A window at [`MMIO_BASE`] where [`super::mmio`] maps device registers uncached.
//!
//! Page-table frames come from the frame allocator and are never freed: the tables live as
//! long as the kernel.

use boot::{BootInfo, MemoryKind};
use spin::Mutex;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::mapper::{MapToError, Translate, UnmapError};
use x86_64::structures::paging::{
    FrameAllocator as _, Mapper, OffsetPageTable, Page, PageSize, PageTable,
    PageTableFlags as Flags, PhysFrame, Size2MiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use super::frames::GlobalFrames;
use super::{KernelImage, PAGE_SIZE};

/// Start of the virtual window for MMIO mappings (PML4 slot 288).
pub const MMIO_BASE: u64 = 0xffff_9000_0000_0000;
/// Size of the MMIO window: 1 TiB.
pub const MMIO_SIZE: u64 = 1 << 40;

const HUGE: u64 = 2 << 20;

/// The active address space.
pub struct AddressSpace {
    mapper: OffsetPageTable<'static>,
    nx: bool,
}

static SPACE: Mutex<Option<AddressSpace>> = Mutex::new(None);

/// Runs `f` on the address space. Panics before [`init`] (a kernel bug).
pub fn with<R>(f: impl FnOnce(&mut AddressSpace) -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut guard = SPACE.lock();
        f(guard.as_mut().expect("paging used before memory::init"))
    })
}

/// The memory-map kinds the kernel identity-maps as RAM.
pub fn is_ram(kind: MemoryKind) -> bool {
    kind.is_ram()
}

impl AddressSpace {
    fn data_flags(&self) -> Flags {
        let f = Flags::PRESENT | Flags::WRITABLE | Flags::GLOBAL;
        if self.nx { f | Flags::NO_EXECUTE } else { f }
    }

    fn map_4k(&mut self, addr: u64, flags: Flags) -> Result<(), MapToError<Size4KiB>> {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(addr));
        let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(addr));
        // SAFETY: identity-mapping RAM: the virtual page and the frame are the same memory,
        // so no other mapping of the frame with different contents can be created.
        let flush = unsafe {
            self.mapper.map_to_with_table_flags(
                page,
                frame,
                flags,
                Flags::PRESENT | Flags::WRITABLE,
                &mut GlobalFrames,
            )
        }?;
        flush.ignore();
        Ok(())
    }

    fn map_2m(&mut self, addr: u64, flags: Flags) -> Result<(), MapToError<Size2MiB>> {
        let page = Page::<Size2MiB>::containing_address(VirtAddr::new(addr));
        let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(addr));
        // SAFETY: as in `map_4k`: an identity mapping of RAM.
        let flush = unsafe {
            self.mapper.map_to_with_table_flags(
                page,
                frame,
                flags | Flags::HUGE_PAGE,
                Flags::PRESENT | Flags::WRITABLE,
                &mut GlobalFrames,
            )
        }?;
        flush.ignore();
        Ok(())
    }

    /// Identity-maps `[start, end)` (page-aligned) as data.
    fn map_ram(&mut self, start: u64, end: u64, image: &KernelImage) {
        let mut at = start;
        while at < end {
            let in_image = at < image.all.1 && at + HUGE > image.all.0;
            if at.is_multiple_of(HUGE) && at + HUGE <= end && !in_image {
                let flags = self.data_flags();
                self.map_2m(at, flags)
                    .expect("out of frames while mapping RAM");
                at += HUGE;
            } else {
                let flags = self.image_flags(at, image);
                self.map_4k(at, flags)
                    .expect("out of frames while mapping RAM");
                at += PAGE_SIZE;
            }
        }
    }

    fn image_flags(&self, addr: u64, image: &KernelImage) -> Flags {
        let inside = |r: (u64, u64)| addr >= r.0 && addr < r.1;
        if inside(image.text) {
            Flags::PRESENT | Flags::GLOBAL
        } else if inside(image.rodata) {
            let f = Flags::PRESENT | Flags::GLOBAL;
            if self.nx { f | Flags::NO_EXECUTE } else { f }
        } else {
            self.data_flags()
        }
    }

    /// Maps one page of size `S` of device memory uncached (PCD | PWT: UC with the default
    /// PAT, SDM vol. 3A §11.12.3), never executable. Both addresses must be `S`-aligned.
    pub fn map_device<S: PageSize>(&mut self, virt: u64, phys: u64) -> Result<(), MapToError<S>>
    where
        OffsetPageTable<'static>: Mapper<S>,
    {
        let mut flags = Flags::PRESENT | Flags::WRITABLE | Flags::NO_CACHE | Flags::WRITE_THROUGH;
        if S::SIZE != Size4KiB::SIZE {
            flags |= Flags::HUGE_PAGE;
        }
        if self.nx {
            flags |= Flags::NO_EXECUTE;
        }
        let virt = VirtAddr::try_new(virt).map_err(|_| MapToError::FrameAllocationFailed)?;
        let phys = PhysAddr::try_new(phys).map_err(|_| MapToError::FrameAllocationFailed)?;
        let page =
            Page::<S>::from_start_address(virt).map_err(|_| MapToError::FrameAllocationFailed)?;
        let frame = PhysFrame::<S>::from_start_address(phys)
            .map_err(|_| MapToError::FrameAllocationFailed)?;
        // SAFETY: `virt` lies in the MMIO window, which only `mmio` uses and which hands each
        // page out once; device memory is not RAM, so no Rust object aliases it.
        let flush = unsafe {
            self.mapper.map_to_with_table_flags(
                page,
                frame,
                flags,
                Flags::PRESENT | Flags::WRITABLE,
                &mut GlobalFrames,
            )
        }?;
        flush.flush();
        Ok(())
    }

    /// Removes one 2 MiB mapping and flushes it from the TLB.
    pub fn unmap_huge(&mut self, virt: u64) -> Result<(), UnmapError> {
        let page = Page::<Size2MiB>::containing_address(VirtAddr::new(virt));
        let (_, flush) = self.mapper.unmap(page)?;
        flush.flush();
        Ok(())
    }

    /// Removes one 4 KiB mapping and flushes it from the TLB.
    pub fn unmap_page(&mut self, virt: u64) -> Result<(), UnmapError> {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
        let (_, flush) = self.mapper.unmap(page)?;
        flush.flush();
        Ok(())
    }

    /// The physical address `virt` maps to, if mapped.
    pub fn translate(&self, virt: u64) -> Option<u64> {
        self.mapper
            .translate_addr(VirtAddr::new(virt))
            .map(|p| p.as_u64())
    }
}

/// Builds the kernel's tables and switches to them.
pub fn init(boot: &BootInfo, image: KernelImage) {
    let nx = Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE);
    let l4_frame = GlobalFrames
        .allocate_frame()
        .expect("no frame for the top-level page table");
    let l4_ptr = l4_frame.start_address().as_u64() as *mut PageTable;
    // SAFETY: the frame was just allocated for this purpose and is identity-mapped by the
    // boot tables; nothing else refers to it.
    unsafe { l4_ptr.write(PageTable::new()) };
    // SAFETY: initialised just above; it becomes the kernel's PML4 for the rest of its life
    // ('static) and is only reached through the mapper built from this one reference.
    let l4: &'static mut PageTable = unsafe { &mut *l4_ptr };
    // SAFETY: all RAM is and stays identity-mapped (offset 0) in both the boot tables and
    // the new ones, so the mapper can reach every table frame at its physical address.
    let mapper = unsafe { OffsetPageTable::new(l4, VirtAddr::new(0)) };
    let mut space = AddressSpace { mapper, nx };

    for region in boot.memory_map().iter().filter(|r| is_ram(r.kind)) {
        if let Some((start, end)) = boot::info::whole_pages(region.start, region.end()) {
            space.map_ram(start, end, &image);
        }
    }
    // The image must be mapped even if a loader's map described it oddly.
    let mut at = image.all.0;
    while at < image.all.1 {
        if space.translate(at).is_none() {
            let flags = space.image_flags(at, &image);
            space
                .map_4k(at, flags)
                .expect("out of frames while mapping the kernel");
        }
        at += PAGE_SIZE;
    }

    // SAFETY: the new tables map the kernel image (code, data, stacks, statics) and all RAM
    // at the same addresses as the boot tables, so execution continues unchanged.
    unsafe { Cr3::write(l4_frame, Cr3Flags::empty()) };
    *SPACE.lock() = Some(space);
    log::debug!(
        "paging: kernel tables active (NX {})",
        if nx { "on" } else { "off" }
    );
}
