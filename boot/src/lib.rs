//! Boot information, independent of the loader that started the kernel.
//!
//! The kernel can be started two ways (one ELF carries both): by the Xen PVH protocol
//! (`qemu -kernel`) and by multiboot2 (GRUB on BIOS and UEFI). Each hands over a structure
//! in low physical memory that the kernel will soon reuse; this crate turns either into the
//! same owned [`BootInfo`] before that happens.
//!
//! - [`info`]: [`BootInfo`] and its parts ([`MemoryRegion`], [`MemoryKind`], [`Rsdp`],
//!   [`Framebuffer`], [`Loader`]), plus the memory-map normalisation both parsers share
//!   ([`BootInfo::set_memory_map`]: empty entries dropped, overlaps resolved towards the
//!   more restrictive kind, sorted, merged, capped at [`MAX_MEMORY_REGIONS`]).
//! - [`phys`]: the [`PhysMemory`] trait through which parsers read physical memory (the
//!   kernel implements it over its identity map; tests use [`Snapshot`]) and
//!   [`write_fixture`], the boot dump that host tests read back.
//! - [`pvh`] and [`multiboot2`]: the two parsers. They check every length and offset, so a
//!   corrupt structure gives a [`PvhError`] / [`Multiboot2Error`], never a panic.
//! - [`ranges`]: heap-free range arithmetic ([`RangeSet`]) and [`usable_frames`], which
//!   turns the memory map into the 4 KiB frames the kernel's frame allocator may hand out.
//! - [`cmdline`]: `key=value` / `flag` words of the kernel command line.
//!
//! The 32-bit entry path (PVH note, multiboot2 header, switch to long mode) lives in
//! [`entry`], whose assembly is compiled only for `target_os = "none"`; everything else is plain
//! `no_std` code without `unsafe` (each of those modules forbids it), tested on the host with
//! `cargo test -p boot`.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod cmdline;
pub mod info;
pub mod multiboot2;
pub mod phys;
pub mod pvh;
pub mod ranges;

#[cfg(test)]
mod testutil;

pub mod entry;

pub use info::{
    BootInfo, Framebuffer, Loader, MAX_CMDLINE, MAX_LOADER_NAME, MAX_MEMORY_REGIONS,
    MAX_RAW_MEMORY_ENTRIES, MemoryKind, MemoryMapTooLarge, MemoryRegion, Rsdp, RsdpError,
};
pub use multiboot2::Multiboot2Error;
pub use phys::{PhysMemory, Snapshot, write_fixture};
pub use pvh::PvhError;
pub use ranges::{CapacityError, FRAME_SIZE, FrameRanges, RangeSet, usable_frames};
