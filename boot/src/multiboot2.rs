//! The multiboot2 boot information structure (GRUB on BIOS and UEFI).
//!
//! Reference: The Multiboot2 Specification version 1.0, section 3.6 (Boot information
//! format). `%eax` holds [`BOOTLOADER_MAGIC`] and `%ebx` the physical address of the
//! information structure (MBI), which starts 8-byte aligned with `u32 total_size, u32
//! reserved` and continues with tags, each `{u32 type, u32 size, ...}` (`size` counts the
//! 8-byte header but not the padding to the next 8-byte boundary), ending with a type 0 tag of
//! size 8. Tags read here:
//!
//! | type | tag | kept as |
//! | --- | --- | --- |
//! | 1 | command line (NUL-terminated) | [`BootInfo::cmdline`] |
//! | 2 | boot loader name | [`BootInfo::loader_name`] |
//! | 6 | memory map: `u32 entry_size, u32 entry_version`, entries `{u64 base, u64 len, u32 type, u32 reserved}` with E820 types | [`BootInfo::memory_map`] |
//! | 8 | framebuffer: `u64 addr, u32 pitch, u32 width, u32 height, u8 bpp, u8 type, ...` | [`BootInfo::framebuffer`] (direct RGB, type 1, only) |
//! | 14 | ACPI old RSDP (copy of the first 20 bytes) | [`BootInfo::rsdp`] unless tag 15 exists |
//! | 15 | ACPI new RSDP (copy of the whole structure) | [`BootInfo::rsdp`] |
//! | 17 | EFI memory map: `u32 descriptor_size, u32 descriptor_version`, then `EFI_MEMORY_DESCRIPTOR`s `{u32 type, u32 pad, u64 phys_start, u64 virt_start, u64 num_pages, u64 attribute}` | [`BootInfo::memory_map`] when there is no tag 6 |
//!
//! Other tags are skipped. The EFI memory types are mapped per UEFI 2.10 section 7.2
//! ([`MemoryKind::from_uefi`]); GRUB has exited boot services before it jumps to the kernel,
//! so boot-services memory is free. RSDP copies are checked per ACPI 6.5 section 5.2.5.3.
//! Every offset is computed with checked arithmetic against `total_size`, and `total_size`
//! against what [`PhysMemory::read`] will give, so malformed input ends in a
//! [`Multiboot2Error`], never in a panic or an out-of-bounds read.

#![forbid(unsafe_code)]
use core::fmt;

use crate::info::{
    BootInfo, Framebuffer, Loader, MemoryKind, MemoryMapTooLarge, MemoryRegion, Rsdp, RsdpError,
    read_u32, read_u64,
};
use crate::phys::PhysMemory;

/// The value a multiboot2 loader leaves in `%eax`.
pub const BOOTLOADER_MAGIC: u32 = 0x36d7_6289;
/// Largest `total_size` accepted. GRUB's structure on UEFI is a few KiB (the EFI memory map
/// dominates); anything near this is corrupt.
pub const MAX_TOTAL_SIZE: u32 = 1 << 20;
/// Smallest `total_size`: the 8-byte fixed part plus the 8-byte end tag.
pub const MIN_TOTAL_SIZE: u32 = 16;
/// Smallest memory-map (tag 6) entry: `u64 base, u64 len, u32 type, u32 reserved`.
pub const MIN_MMAP_ENTRY_SIZE: u32 = 24;
/// Smallest `EFI_MEMORY_DESCRIPTOR` (tag 17); firmware may use larger ones.
pub const MIN_EFI_DESCRIPTOR_SIZE: u32 = 40;
/// UEFI page size, the unit of `EFI_MEMORY_DESCRIPTOR.NumberOfPages`.
pub const EFI_PAGE_SIZE: u64 = 4096;

/// Tag type numbers (Multiboot2 spec 1.0, section 3.6).
pub mod tag {
    /// End of the tag list.
    pub const END: u32 = 0;
    /// Boot command line.
    pub const CMDLINE: u32 = 1;
    /// Boot loader name.
    pub const LOADER_NAME: u32 = 2;
    /// Memory map (E820 style).
    pub const MMAP: u32 = 6;
    /// Framebuffer info.
    pub const FRAMEBUFFER: u32 = 8;
    /// ACPI 1.0 RSDP copy.
    pub const ACPI_OLD: u32 = 14;
    /// ACPI 2.0+ RSDP copy.
    pub const ACPI_NEW: u32 = 15;
    /// EFI memory map.
    pub const EFI_MMAP: u32 = 17;
}

/// Why a multiboot2 information structure was rejected. Offsets are from the start of the
/// structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multiboot2Error {
    /// The structure's address is not 8-byte aligned (spec 3.6: it always is).
    Misaligned {
        /// The address given.
        address: u64,
    },
    /// The bytes at `address..address + len` are not readable.
    Unreadable {
        /// Start of the range.
        address: u64,
        /// Its length.
        len: u64,
    },
    /// `total_size` is below [`MIN_TOTAL_SIZE`].
    TooSmall {
        /// The `total_size` field.
        total_size: u32,
    },
    /// `total_size` is above [`MAX_TOTAL_SIZE`].
    TooLarge {
        /// The `total_size` field.
        total_size: u32,
    },
    /// A tag's `size` is below the 8-byte header.
    TagTooSmall {
        /// Where the tag starts.
        offset: u32,
        /// Its type.
        tag_type: u32,
        /// Its `size` field.
        size: u32,
    },
    /// A tag runs past `total_size`.
    TagOverrun {
        /// Where the tag starts.
        offset: u32,
        /// Its type.
        tag_type: u32,
        /// Its `size` field.
        size: u32,
    },
    /// A known tag is too short for its fixed fields.
    TagBodyTooShort {
        /// Its type.
        tag_type: u32,
        /// Its `size` field.
        size: u32,
    },
    /// The tags reach `total_size` without an end tag (type 0).
    MissingEndTag,
    /// A memory map's entry size is too small (below [`MIN_MMAP_ENTRY_SIZE`] for tag 6,
    /// [`MIN_EFI_DESCRIPTOR_SIZE`] for tag 17).
    BadEntrySize {
        /// The tag type (6 or 17).
        tag_type: u32,
        /// Its `entry_size` / `descriptor_size` field.
        entry_size: u32,
    },
    /// Neither tag 6 nor tag 17 is present.
    NoMemoryMap,
    /// The memory map has more than [`crate::MAX_RAW_MEMORY_ENTRIES`] entries.
    MemoryMapTooLarge {
        /// Entries in the tag.
        entries: usize,
    },
    /// The RSDP copy (tag 15, else 14) is invalid.
    Rsdp(RsdpError),
}

impl fmt::Display for Multiboot2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Multiboot2Error as E;
        match self {
            E::Misaligned { address } => {
                write!(
                    f,
                    "multiboot2 information at {address:#x} is not 8-byte aligned"
                )
            }
            E::Unreadable { address, len } => write!(
                f,
                "multiboot2 information at {address:#x} ({len} bytes) is not readable"
            ),
            E::TooSmall { total_size } => write!(
                f,
                "multiboot2 total_size {total_size} is below the minimum {MIN_TOTAL_SIZE}"
            ),
            E::TooLarge { total_size } => write!(
                f,
                "multiboot2 total_size {total_size} is above the maximum {MAX_TOTAL_SIZE}"
            ),
            E::TagTooSmall {
                offset,
                tag_type,
                size,
            } => write!(
                f,
                "multiboot2 tag type {tag_type} at offset {offset:#x} has size {size} (< 8)"
            ),
            E::TagOverrun {
                offset,
                tag_type,
                size,
            } => write!(
                f,
                "multiboot2 tag type {tag_type} at offset {offset:#x} (size {size}) runs past \
                 total_size"
            ),
            E::TagBodyTooShort { tag_type, size } => write!(
                f,
                "multiboot2 tag type {tag_type} has size {size}, too short for its fields"
            ),
            E::MissingEndTag => f.write_str("multiboot2 tags end without an end tag"),
            E::BadEntrySize {
                tag_type,
                entry_size,
            } => write!(
                f,
                "multiboot2 memory map tag {tag_type} has entry size {entry_size}, too small"
            ),
            E::NoMemoryMap => f.write_str("multiboot2 information has no memory map (tag 6/17)"),
            E::MemoryMapTooLarge { entries } => write!(
                f,
                "multiboot2 memory map has {entries} entries, more than the {} supported",
                crate::MAX_RAW_MEMORY_ENTRIES
            ),
            E::Rsdp(e) => write!(f, "multiboot2 {e}"),
        }
    }
}

impl From<RsdpError> for Multiboot2Error {
    fn from(e: RsdpError) -> Multiboot2Error {
        Multiboot2Error::Rsdp(e)
    }
}

impl From<MemoryMapTooLarge> for Multiboot2Error {
    fn from(e: MemoryMapTooLarge) -> Multiboot2Error {
        Multiboot2Error::MemoryMapTooLarge { entries: e.entries }
    }
}

/// Parses the multiboot2 information structure at physical address `mbi` (the kernel's
/// `%ebx`; check `%eax` == [`BOOTLOADER_MAGIC`] first).
///
/// The whole structure is validated (every tag inside `total_size`, an end tag) before
/// anything is taken from it. Where a tag appears twice the last one wins. The memory map
/// comes from tag 6, else tag 17; the RSDP from tag 15, else tag 14.
pub fn parse(mem: &impl PhysMemory, mbi: u64) -> Result<BootInfo, Multiboot2Error> {
    if !mbi.is_multiple_of(8) {
        return Err(Multiboot2Error::Misaligned { address: mbi });
    }
    let head = mem.read(mbi, 8).ok_or(Multiboot2Error::Unreadable {
        address: mbi,
        len: 8,
    })?;
    let total_size = read_u32(head, 0).unwrap_or(0);
    if total_size < MIN_TOTAL_SIZE {
        return Err(Multiboot2Error::TooSmall { total_size });
    }
    if total_size > MAX_TOTAL_SIZE {
        return Err(Multiboot2Error::TooLarge { total_size });
    }
    let total = total_size as usize;
    let bytes = mem.read(mbi, total).ok_or(Multiboot2Error::Unreadable {
        address: mbi,
        len: u64::from(total_size),
    })?;

    let mut info = BootInfo::empty(Loader::Multiboot2);
    info.raw_address = mbi;
    info.raw_size = u64::from(total_size);
    info.add_source(mbi, u64::from(total_size));

    let mut mmap: Option<&[u8]> = None;
    let mut efi_mmap: Option<&[u8]> = None;
    let mut rsdp_old: Option<(usize, &[u8])> = None;
    let mut rsdp_new: Option<(usize, &[u8])> = None;

    let mut offset = 8usize;
    loop {
        // Fewer than 8 bytes left: the list ended without an end tag.
        let header = offset
            .checked_add(8)
            .and_then(|end| bytes.get(offset..end))
            .ok_or(Multiboot2Error::MissingEndTag)?;
        let tag_type = read_u32(header, 0).unwrap_or(0);
        let size = read_u32(header, 4).unwrap_or(0);
        let at = offset as u32; // offset < total_size <= 1 MiB
        if size < 8 {
            return Err(Multiboot2Error::TagTooSmall {
                offset: at,
                tag_type,
                size,
            });
        }
        let end = offset.checked_add(size as usize);
        let tag =
            end.and_then(|end| bytes.get(offset..end))
                .ok_or(Multiboot2Error::TagOverrun {
                    offset: at,
                    tag_type,
                    size,
                })?;
        let body = tag.get(8..).unwrap_or(&[]);
        let body_offset = offset + 8;
        match tag_type {
            tag::END => break,
            tag::CMDLINE => info.set_cmdline(body),
            tag::LOADER_NAME => info.set_loader_name(body),
            tag::MMAP => mmap = Some(body),
            tag::EFI_MMAP => efi_mmap = Some(body),
            tag::FRAMEBUFFER => {
                let short = Multiboot2Error::TagBodyTooShort { tag_type, size };
                let address = read_u64(body, 0).ok_or(short)?;
                let pitch = read_u32(body, 8).ok_or(short)?;
                let width = read_u32(body, 12).ok_or(short)?;
                let height = read_u32(body, 16).ok_or(short)?;
                let bpp = body.get(20).copied().ok_or(short)?;
                let fb_type = body.get(21).copied().ok_or(short)?;
                // 0 = indexed colour, 2 = EGA text: not a linear RGB framebuffer.
                info.framebuffer = (fb_type == 1).then_some(Framebuffer {
                    address,
                    pitch,
                    width,
                    height,
                    bpp,
                });
            }
            tag::ACPI_OLD => rsdp_old = Some((body_offset, body)),
            tag::ACPI_NEW => rsdp_new = Some((body_offset, body)),
            _ => {}
        }
        // Next tag at the following 8-byte boundary.
        offset = end
            .and_then(|e| e.checked_next_multiple_of(8))
            .ok_or(Multiboot2Error::MissingEndTag)?;
    }

    // Memory map: tag 6, else tag 17.
    if let Some(body) = mmap {
        let (entry_size, entries) = table(body, tag::MMAP, MIN_MMAP_ENTRY_SIZE)?;
        info.set_memory_map(entries.chunks_exact(entry_size).map(|e| MemoryRegion {
            start: read_u64(e, 0).unwrap_or(0),
            len: read_u64(e, 8).unwrap_or(0),
            kind: MemoryKind::from_e820(read_u32(e, 16).unwrap_or(0)),
        }))?;
    } else if let Some(body) = efi_mmap {
        let (entry_size, entries) = table(body, tag::EFI_MMAP, MIN_EFI_DESCRIPTOR_SIZE)?;
        info.set_memory_map(entries.chunks_exact(entry_size).map(|d| MemoryRegion {
            start: read_u64(d, 8).unwrap_or(0),
            // Pages past 2^64 bytes clamp; the normaliser clamps the end to u64::MAX anyway.
            len: read_u64(d, 24).unwrap_or(0).saturating_mul(EFI_PAGE_SIZE),
            kind: MemoryKind::from_uefi(read_u32(d, 0).unwrap_or(0)),
        }))?;
    } else {
        return Err(Multiboot2Error::NoMemoryMap);
    }

    // RSDP: tag 15 (whole structure), else tag 14 (first 20 bytes only).
    let body_address = |body_offset: usize| mbi.saturating_add(body_offset as u64);
    if let Some((at, body)) = rsdp_new {
        info.rsdp = Some(Rsdp::from_bytes(body_address(at), body)?);
    } else if let Some((at, body)) = rsdp_old {
        info.rsdp = Some(Rsdp::from_v1_bytes(body_address(at), body)?);
    }
    Ok(info)
}

/// Splits a memory-map tag body into its entry size and its entry bytes.
fn table(body: &[u8], tag_type: u32, min_entry: u32) -> Result<(usize, &[u8]), Multiboot2Error> {
    let short = Multiboot2Error::TagBodyTooShort {
        tag_type,
        size: (body.len() as u32).saturating_add(8),
    };
    let entry_size = read_u32(body, 0).ok_or(short)?;
    read_u32(body, 4).ok_or(short)?; // entry_version / descriptor_version: not checked
    if entry_size < min_entry {
        return Err(Multiboot2Error::BadEntrySize {
            tag_type,
            entry_size,
        });
    }
    Ok((entry_size as usize, body.get(8..).unwrap_or(&[])))
}
