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
//! | 8 | framebuffer: `u64 addr, u32 pitch, u32 width, u32 height, u8 bpp, u8 type, u16 reserved`, then for type 1 `u8` position and size of red, green, blue | [`BootInfo::framebuffer`] (direct RGB, type 1, only) |
//! | 14 | ACPI old RSDP (copy of the first 20 bytes) | [`BootInfo::rsdp`] unless tag 15 exists and is valid |
//! | 15 | ACPI new RSDP (copy of the whole structure) | [`BootInfo::rsdp`] |
//! | 17 | EFI memory map: `u32 descriptor_size, u32 descriptor_version`, then `EFI_MEMORY_DESCRIPTOR`s `{u32 type, u32 pad, u64 phys_start, u64 virt_start, u64 num_pages, u64 attribute}` | [`BootInfo::memory_map`] when there is no tag 6 |
//!
//! Other tags are skipped. The EFI memory types are mapped per UEFI 2.10 section 7.2
//! ([`MemoryKind::from_uefi`]); GRUB has exited boot services before it jumps to the kernel,
//! so boot-services memory is free. RSDP copies are checked per ACPI 6.5 section 5.2.5.3; an
//! invalid one is not a reason to refuse the whole structure (the kernel runs without ACPI):
//! it is reported in [`BootInfo::rsdp_error`] and the other copy, if any, is used.
//! Every offset is computed with checked arithmetic against `total_size`, and `total_size`
//! against what [`PhysMemory::read`] will give, so malformed input ends in a
//! [`Multiboot2Error`], never in a panic or an out-of-bounds read.

#![forbid(unsafe_code)]
use core::fmt;

use crate::info::{
    BootInfo, Framebuffer, Loader, MemoryKind, MemoryMapTooLarge, MemoryRegion, Rsdp, read_u32,
    read_u64,
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
    /// The memory map tag holds no whole entry (its `entry_size` is larger than its body, or
    /// the body is empty).
    EmptyMemoryMap {
        /// The tag type (6 or 17).
        tag_type: u32,
    },
    /// The memory map has more than [`crate::MAX_RAW_MEMORY_ENTRIES`] entries.
    MemoryMapTooLarge {
        /// Entries in the tag.
        entries: usize,
    },
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
            E::EmptyMemoryMap { tag_type } => {
                write!(f, "multiboot2 memory map tag {tag_type} holds no entry")
            }
            E::MemoryMapTooLarge { entries } => write!(
                f,
                "multiboot2 memory map has {entries} entries, more than the {} supported",
                crate::MAX_RAW_MEMORY_ENTRIES
            ),
        }
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
/// comes from tag 6, else tag 17; the RSDP from tag 15, else tag 14, else there is none (an
/// invalid copy is skipped and reported in [`BootInfo::rsdp_error`]).
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
                // Direct RGB colour info follows a 16-bit reserved field (GRUB's
                // `multiboot_tag_framebuffer_common`): red, green, blue as (position, size).
                let field = |at: usize, default: u8| body.get(at).copied().unwrap_or(default);
                let channels = [field(24, 16), field(26, 8), field(28, 0)];
                let channel_sizes = [field(25, 8), field(27, 8), field(29, 8)];
                // 0 = indexed colour, 2 = EGA text: not a linear RGB framebuffer.
                info.framebuffer = (fb_type == 1).then_some(Framebuffer {
                    address,
                    pitch,
                    width,
                    height,
                    bpp,
                    channels,
                    channel_sizes,
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
        if entries.len() < entry_size {
            return Err(Multiboot2Error::EmptyMemoryMap {
                tag_type: tag::MMAP,
            });
        }
        info.set_memory_map(entries.chunks_exact(entry_size).map(|e| MemoryRegion {
            start: read_u64(e, 0).unwrap_or(0),
            len: read_u64(e, 8).unwrap_or(0),
            kind: MemoryKind::from_e820(read_u32(e, 16).unwrap_or(0)),
        }))?;
    } else if let Some(body) = efi_mmap {
        let (entry_size, entries) = table(body, tag::EFI_MMAP, MIN_EFI_DESCRIPTOR_SIZE)?;
        if entries.len() < entry_size {
            return Err(Multiboot2Error::EmptyMemoryMap {
                tag_type: tag::EFI_MMAP,
            });
        }
        info.set_memory_map(entries.chunks_exact(entry_size).map(|d| MemoryRegion {
            start: read_u64(d, 8).unwrap_or(0),
            // Pages past 2^64 bytes clamp; the normaliser clamps the end to u64::MAX anyway.
            len: read_u64(d, 24).unwrap_or(0).saturating_mul(EFI_PAGE_SIZE),
            kind: MemoryKind::from_uefi(read_u32(d, 0).unwrap_or(0)),
        }))?;
    } else {
        return Err(Multiboot2Error::NoMemoryMap);
    }

    // RSDP: tag 15 (whole structure), else tag 14 (first 20 bytes only). The kernel runs
    // without ACPI, and GRUB on UEFI copies the firmware's structure without checking it: an
    // invalid copy is kept in `rsdp_error` (the first one found) and the next is tried, so a
    // firmware's bad checksum costs ACPI 2.0 or ACPI, never the boot.
    let body_address = |body_offset: usize| mbi.saturating_add(body_offset as u64);
    let new = rsdp_new.map(|(at, body)| Rsdp::from_bytes(body_address(at), body));
    let old = rsdp_old.map(|(at, body)| Rsdp::from_v1_bytes(body_address(at), body));
    for copy in [new, old].into_iter().flatten() {
        match copy {
            Ok(rsdp) => {
                info.rsdp = Some(rsdp);
                break;
            }
            Err(e) => {
                info.rsdp_error.get_or_insert(e);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::RsdpError;
    use crate::phys::Snapshot;
    use crate::testutil::{Mbi, put32, rsdp, set32};
    use MemoryKind::*;

    const MBI: u64 = 0x1_0000;

    fn parse_at(bytes: &[u8], at: u64) -> Result<BootInfo, Multiboot2Error> {
        parse(&Snapshot::new(&[(at, bytes)]), at)
    }

    fn parse_blob(bytes: &[u8]) -> Result<BootInfo, Multiboot2Error> {
        parse_at(bytes, MBI)
    }

    fn r(start: u64, len: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { start, len, kind }
    }

    /// SeaBIOS e820 for q35 with 128 MiB.
    const BIOS_E820: [(u64, u64, u32); 9] = [
        (0, 0x9fc00, 1),
        (0x9fc00, 0x400, 2),
        (0xf0000, 0x10000, 2),
        (0x10_0000, 0x7ee_0000, 1),
        (0x7fe_0000, 0x2_0000, 2),
        (0xb000_0000, 0x1000_0000, 2),
        (0xfed1_c000, 0x4000, 2),
        (0xfeff_c000, 0x4000, 2),
        (0xfffc_0000, 0x4_0000, 2),
    ];

    /// GRUB 2.06 on SeaBIOS: the tags it really gives, several unknown to the parser.
    fn bios_mbi() -> Vec<u8> {
        let mut basic = Vec::new();
        put32(&mut basic, 639);
        put32(&mut basic, 0x1_f780);
        Mbi::new()
            .string(1, "log=debug dumpboot")
            .string(2, "GRUB 2.06-13+deb12u1")
            .tag(10, &[0; 20]) // APM
            .tag(4, &basic) // basic memory info
            .tag(
                5,
                &[
                    0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
            ) // bootdev
            .mmap(&BIOS_E820, 24)
            .tag(9, &[0; 84]) // ELF sections, shortened
            .framebuffer(0xb8000, 160, 80, 25, 16, 2) // EGA text
            .tag(14, &rsdp(0, 0x7fe_2345, 0))
            .finish()
    }

    #[test]
    fn parses_grub_on_bios() {
        let blob = bios_mbi();
        let info = parse_blob(&blob).unwrap();
        assert_eq!(info.loader, Loader::Multiboot2);
        assert_eq!((info.raw_address, info.raw_size), (MBI, blob.len() as u64));
        assert_eq!(info.sources(), &[(MBI, blob.len() as u64)]);
        assert_eq!(info.cmdline(), "log=debug dumpboot");
        assert_eq!(info.loader_name(), "GRUB 2.06-13+deb12u1");
        let map: Vec<MemoryRegion> = BIOS_E820
            .iter()
            .map(|&(s, l, t)| r(s, l, MemoryKind::from_e820(t)))
            .collect();
        assert_eq!(info.memory_map(), &map[..]);
        assert_eq!(info.usable_bytes(), 0x9fc00 + 0x7ee_0000);
        assert_eq!(
            info.framebuffer, None,
            "EGA text is not a linear framebuffer"
        );
        let p = info.rsdp.unwrap();
        assert_eq!((p.revision, p.len, p.rsdt_address()), (0, 20, 0x7fe_2345));
        // The copy's address inside the MBI: the 14 tag's body.
        let tag14 = blob.len() - 8 - 32;
        assert_eq!(p.loader_address, MBI + tag14 as u64 + 8);
    }

    /// OVMF with 128 MiB, as GRUB's tag 17 shows it (simplified, partly out of order).
    const EFI_MAP: [(u32, u64, u64); 22] = [
        (7, 0x0, 0xa0),
        (7, 0x10_0000, 0x700),
        (10, 0x80_0000, 0x8),
        (7, 0x80_8000, 0x3),
        (10, 0x80_b000, 0x1),
        (7, 0x80_c000, 0x5),
        (10, 0x81_1000, 0xef),
        (4, 0x90_0000, 0x1000),
        (7, 0x190_0000, 0x5000),
        (2, 0x692_0000, 0x100), // loader data before loader code
        (1, 0x690_0000, 0x20),
        (3, 0x6a2_0000, 0x200),
        (7, 0x6c2_0000, 0xf5e),
        (9, 0x7b7_e000, 0x10),
        (10, 0x7b8_e000, 0x20),
        (5, 0x7ba_e000, 0x100),
        (6, 0x7ca_e000, 0x100),
        (0, 0x7da_e000, 0x4),
        (4, 0x7db_2000, 0x24e),
        (8, 0x2000_0000, 0x10),
        (11, 0xb000_0000, 0x1_0000),
        (14, 0x1_0000_0000, 0x100),
    ];

    fn efi_expected() -> Vec<MemoryRegion> {
        vec![
            r(0, 0xa0000, Usable),
            r(0x10_0000, 0x70_0000, Usable),
            r(0x80_0000, 0x8000, AcpiNvs),
            r(0x80_8000, 0x3000, Usable),
            r(0x80_b000, 0x1000, AcpiNvs),
            r(0x80_c000, 0x5000, Usable),
            r(0x81_1000, 0xe_f000, AcpiNvs),
            r(0x90_0000, 0x727_e000, Usable),
            r(0x7b7_e000, 0x1_0000, AcpiReclaimable),
            r(0x7b8_e000, 0x2_0000, AcpiNvs),
            r(0x7ba_e000, 0x20_4000, Reserved),
            r(0x7db_2000, 0x24_e000, Usable),
            r(0x2000_0000, 0x1_0000, Defective),
            r(0xb000_0000, 0x1000_0000, Reserved),
            r(0x1_0000_0000, 0x10_0000, Reserved),
        ]
    }

    /// GRUB 2.06 on OVMF: framebuffer, both RSDP tags, the EFI memory map, EFI pointers.
    fn uefi_mbi() -> Mbi {
        let v2 = rsdp(2, 0x7b7_e014, 0x7b7_e0e8);
        Mbi::new()
            .string(1, "console=ttyS0")
            .string(2, "GRUB 2.06-13+deb12u1")
            .framebuffer(0xc000_0000, 3200, 800, 600, 32, 1)
            .tag(12, &0x7f9e_e018u64.to_le_bytes()) // EFI64 system table
            .tag(14, &v2[..20]) // v1 copy of a revision 2 RSDP
            .tag(15, &v2)
            .efi_mmap(&EFI_MAP, 48)
            .tag(20, &0x7e1c_e718u64.to_le_bytes()) // EFI64 image handle
    }

    #[test]
    fn parses_grub_on_uefi() {
        let info = parse_blob(&uefi_mbi().finish()).unwrap();
        assert_eq!(info.cmdline(), "console=ttyS0");
        assert_eq!(info.loader_name(), "GRUB 2.06-13+deb12u1");
        assert_eq!(
            info.framebuffer,
            Some(Framebuffer {
                address: 0xc000_0000,
                pitch: 3200,
                width: 800,
                height: 600,
                bpp: 32,
                channels: [16, 8, 0],
                channel_sizes: [8, 8, 8],
            })
        );
        let p = info.rsdp.unwrap();
        assert_eq!((p.revision, p.len), (2, 36), "tag 15 preferred");
        assert_eq!(p.xsdt_address(), Some(0x7b7_e0e8));
        assert_eq!(info.memory_map(), &efi_expected()[..]);
        assert_eq!(info.dropped_regions, 0);
        assert_eq!(
            info.usable_bytes(),
            0xa0000 + 0x70_0000 + 0x3000 + 0x5000 + 0x727_e000 + 0x24_e000
        );
    }

    #[test]
    fn efi_descriptor_size_is_honoured() {
        for size in [40, 48, 64, 200] {
            let blob = Mbi::new().efi_mmap(&EFI_MAP, size).finish();
            assert_eq!(parse_blob(&blob).unwrap().memory_map(), &efi_expected()[..]);
        }
        for size in [0, 1, 24, 39] {
            let blob = Mbi::new().efi_mmap(&EFI_MAP[..1], 40).finish();
            let mut blob = blob;
            set32(&mut blob, 16, size); // descriptor_size of the first tag
            assert_eq!(
                parse_blob(&blob).unwrap_err(),
                Multiboot2Error::BadEntrySize {
                    tag_type: 17,
                    entry_size: size
                }
            );
        }
        // num_pages so large the byte length overflows: clamped, not wrapped.
        let blob = Mbi::new()
            .efi_mmap(&[(7, 0x1000, u64::MAX / 2)], 40)
            .finish();
        assert_eq!(
            parse_blob(&blob).unwrap().memory_map(),
            &[r(0x1000, u64::MAX - 0x1000, Usable)]
        );
    }

    #[test]
    fn tag_6_beats_tag_17_and_15_beats_14() {
        let v0 = rsdp(0, 0x1111, 0);
        let v2 = rsdp(2, 0x2222, 0x3333);
        let blob = Mbi::new()
            .tag(15, &v2)
            .efi_mmap(&EFI_MAP, 48)
            .mmap(&BIOS_E820, 24)
            .tag(14, &v0)
            .finish();
        let info = parse_blob(&blob).unwrap();
        assert_eq!(info.memory_map().len(), BIOS_E820.len());
        assert_eq!(info.rsdp.unwrap().rsdt_address(), 0x2222);
        // With tag 6 present a broken tag 17 is not looked at.
        let mut blob = Mbi::new()
            .efi_mmap(&EFI_MAP[..1], 48)
            .mmap(&BIOS_E820, 24)
            .finish();
        set32(&mut blob, 16, 3);
        assert!(parse_blob(&blob).is_ok());
    }

    #[test]
    fn mmap_entry_size_is_honoured() {
        for size in [24, 32, 40] {
            let blob = Mbi::new().mmap(&BIOS_E820, size).finish();
            assert_eq!(
                parse_blob(&blob).unwrap().memory_map().len(),
                BIOS_E820.len()
            );
        }
        for size in [0, 8, 20, 23] {
            let mut blob = Mbi::new().mmap(&BIOS_E820, 24).finish();
            set32(&mut blob, 16, size);
            assert_eq!(
                parse_blob(&blob).unwrap_err(),
                Multiboot2Error::BadEntrySize {
                    tag_type: 6,
                    entry_size: size
                }
            );
        }
        // A trailing partial entry is ignored.
        let mut body = Vec::new();
        put32(&mut body, 24);
        put32(&mut body, 0);
        body.extend(crate::testutil::e820(&[(0x1000, 0x1000, 1)], 24));
        body.extend_from_slice(&[0xff; 20]);
        let info = parse_blob(&Mbi::new().tag(6, &body).finish()).unwrap();
        assert_eq!(info.memory_map(), &[r(0x1000, 0x1000, Usable)]);
    }

    #[test]
    fn zero_size_overlapping_unknown_types() {
        let blob = Mbi::new()
            .mmap(
                &[
                    (0x10_0000, 0x7ee_0000, 1),
                    (0, 0x9fc00, 1),
                    (0x9fc00, 0, 2),           // zero-size
                    (0x9fc00, 0x400, 0xf00d),  // unknown type: reserved
                    (0x20_0000, 0x1000, 12),   // unknown (PRAM) inside usable
                    (0x7fd_8000, 0x1_0000, 3), // ACPI straddling usable's end
                    (0x7fd_8000, 0x4000, 4),   // NVS over the ACPI's start
                    (0x800_0000, 0, 1),        // zero-size
                ],
                24,
            )
            .finish();
        let info = parse_blob(&blob).unwrap();
        assert_eq!(
            info.memory_map(),
            &[
                r(0, 0x9fc00, Usable),
                r(0x9fc00, 0x400, Reserved),
                r(0x10_0000, 0x10_0000, Usable),
                r(0x20_0000, 0x1000, Reserved),
                r(0x20_1000, 0x7dd_7000, Usable),
                r(0x7fd_8000, 0x4000, AcpiNvs),
                r(0x7fd_c000, 0xc000, AcpiReclaimable),
            ]
        );
        assert_eq!(info.dropped_regions, 2);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "hundreds of entries through a quadratic sweep: minutes under Miri"
    )]
    fn entries_beyond_limits() {
        let many: Vec<(u64, u64, u32)> = (0..150u64).map(|i| (i * 0x2000, 0x1000, 1)).collect();
        let info = parse_blob(&Mbi::new().mmap(&many, 24).finish()).unwrap();
        assert_eq!(info.memory_map().len(), MAX_MEMORY_REGIONS);
        assert_eq!(info.dropped_regions, 150 - MAX_MEMORY_REGIONS);
        let too_many: Vec<(u64, u64, u32)> = (0..crate::MAX_RAW_MEMORY_ENTRIES as u64 + 1)
            .map(|i| (i * 0x2000, 0x1000, 1))
            .collect();
        assert_eq!(
            parse_blob(&Mbi::new().mmap(&too_many, 24).finish()).unwrap_err(),
            Multiboot2Error::MemoryMapTooLarge {
                entries: crate::MAX_RAW_MEMORY_ENTRIES + 1
            }
        );
    }

    use crate::MAX_MEMORY_REGIONS;

    #[test]
    fn total_size_limits() {
        let mut blob = bios_mbi();
        for (total, err) in [
            (0, Multiboot2Error::TooSmall { total_size: 0 }),
            (15, Multiboot2Error::TooSmall { total_size: 15 }),
            (
                MAX_TOTAL_SIZE + 1,
                Multiboot2Error::TooLarge {
                    total_size: MAX_TOTAL_SIZE + 1,
                },
            ),
            (
                u32::MAX,
                Multiboot2Error::TooLarge {
                    total_size: u32::MAX,
                },
            ),
        ] {
            set32(&mut blob, 0, total);
            assert_eq!(parse_blob(&blob).unwrap_err(), err);
        }
        // Larger than the readable blob.
        let mut blob = bios_mbi();
        let len = blob.len() as u32;
        set32(&mut blob, 0, len + 8);
        assert_eq!(
            parse_blob(&blob).unwrap_err(),
            Multiboot2Error::Unreadable {
                address: MBI,
                len: u64::from(len) + 8
            }
        );
        // Fixed part itself unreadable.
        assert_eq!(
            parse_blob(&blob[..7]).unwrap_err(),
            Multiboot2Error::Unreadable {
                address: MBI,
                len: 8
            }
        );
        // Smallest valid structure: no memory map.
        let empty = Mbi::new().finish();
        assert_eq!(empty.len(), 16);
        assert_eq!(
            parse_blob(&empty).unwrap_err(),
            Multiboot2Error::NoMemoryMap
        );
    }

    #[test]
    fn a_memory_map_tag_without_one_whole_entry_is_an_error() {
        // Tag 6 with entry_size 24 and 16 bytes of entries; an empty tag 17.
        let mut e820 = Vec::new();
        put32(&mut e820, 24);
        put32(&mut e820, 0);
        e820.extend_from_slice(&[0; 16]);
        let blob = Mbi::new().tag(tag::MMAP, &e820).finish();
        assert_eq!(
            parse_blob(&blob).unwrap_err(),
            Multiboot2Error::EmptyMemoryMap { tag_type: 6 }
        );
        let mut efi = Vec::new();
        put32(&mut efi, 48);
        put32(&mut efi, 1);
        let blob = Mbi::new().tag(tag::EFI_MMAP, &efi).finish();
        assert_eq!(
            parse_blob(&blob).unwrap_err(),
            Multiboot2Error::EmptyMemoryMap { tag_type: 17 }
        );
    }

    #[test]
    fn blob_cut_mid_tag() {
        let blob = bios_mbi();
        for cut in [9, 20, 100, blob.len() / 2, blob.len() - 1] {
            assert_eq!(
                parse_blob(&blob[..cut]).unwrap_err(),
                Multiboot2Error::Unreadable {
                    address: MBI,
                    len: blob.len() as u64
                },
                "cut at {cut}"
            );
        }
        // total_size itself cut mid-tag: the tag overruns.
        let mut blob = bios_mbi();
        set32(&mut blob, 0, 20);
        let err = parse_blob(&blob).unwrap_err();
        assert_eq!(
            err,
            Multiboot2Error::TagOverrun {
                offset: 8,
                tag_type: 1,
                size: 8 + 19
            }
        );
        assert_eq!(
            err.to_string(),
            "multiboot2 tag type 1 at offset 0x8 (size 27) runs past total_size"
        );
    }

    #[test]
    fn tag_size_past_end() {
        let mmap_at = 8;
        let mut blob = Mbi::new().mmap(&BIOS_E820, 24).finish();
        set32(&mut blob, mmap_at + 4, 0x1000);
        assert_eq!(
            parse_blob(&blob).unwrap_err(),
            Multiboot2Error::TagOverrun {
                offset: 8,
                tag_type: 6,
                size: 0x1000
            }
        );
        set32(&mut blob, mmap_at + 4, u32::MAX); // offset + size must not wrap
        assert!(matches!(
            parse_blob(&blob).unwrap_err(),
            Multiboot2Error::TagOverrun { size: u32::MAX, .. }
        ));
        // The end tag itself claiming more than is left.
        let mut blob = bios_mbi();
        let end = blob.len() - 8;
        set32(&mut blob, end + 4, 16);
        assert!(matches!(
            parse_blob(&blob).unwrap_err(),
            Multiboot2Error::TagOverrun { tag_type: 0, .. }
        ));
    }

    #[test]
    fn tag_size_below_header() {
        for size in [0, 1, 7] {
            let mut blob = bios_mbi();
            set32(&mut blob, 12, size);
            assert_eq!(
                parse_blob(&blob).unwrap_err(),
                Multiboot2Error::TagTooSmall {
                    offset: 8,
                    tag_type: 1,
                    size
                }
            );
        }
    }

    #[test]
    fn missing_end_tag() {
        let blob = Mbi::new().mmap(&BIOS_E820, 24).finish_without_end();
        assert_eq!(
            parse_blob(&blob).unwrap_err(),
            Multiboot2Error::MissingEndTag
        );
        // A last tag whose padding would run past total_size.
        let blob = Mbi::new()
            .mmap(&BIOS_E820, 24)
            .raw_tag(2, 9, b"x")
            .finish_without_end();
        let mut blob = blob;
        let total = blob.len() as u32 - 7; // ends right after the 9-byte tag
        set32(&mut blob, 0, total);
        assert_eq!(
            parse_blob(&blob).unwrap_err(),
            Multiboot2Error::MissingEndTag
        );
        // A few stray bytes, not enough for a tag header.
        let mut blob = Mbi::new().mmap(&BIOS_E820, 24).finish_without_end();
        blob.extend_from_slice(&[0; 4]);
        let total = blob.len() as u32;
        set32(&mut blob, 0, total);
        assert_eq!(
            parse_blob(&blob).unwrap_err(),
            Multiboot2Error::MissingEndTag
        );
    }

    #[test]
    fn bytes_after_end_tag_are_ignored() {
        let mut blob = Mbi::new().mmap(&BIOS_E820, 24).finish();
        blob.extend_from_slice(&[0xff; 24]);
        let total = blob.len() as u32;
        set32(&mut blob, 0, total);
        assert!(parse_blob(&blob).is_ok());
    }

    #[test]
    fn short_known_tags() {
        let blob = Mbi::new().mmap(&BIOS_E820, 24).tag(8, &[0; 21]).finish();
        assert_eq!(
            parse_blob(&blob).unwrap_err(),
            Multiboot2Error::TagBodyTooShort {
                tag_type: 8,
                size: 29
            }
        );
        let blob = Mbi::new().tag(6, &[24, 0, 0, 0]).finish();
        assert_eq!(
            parse_blob(&blob).unwrap_err(),
            Multiboot2Error::TagBodyTooShort {
                tag_type: 6,
                size: 12
            }
        );
        // RSDP copies that are too short: no RSDP, and the reason.
        let blob = Mbi::new()
            .mmap(&BIOS_E820, 24)
            .tag(14, &rsdp(0, 1, 0)[..19])
            .finish();
        let info = parse_blob(&blob).unwrap();
        assert_eq!(
            (info.rsdp, info.rsdp_error),
            (None, Some(RsdpError::TooShort { len: 19 }))
        );
        let blob = Mbi::new()
            .mmap(&BIOS_E820, 24)
            .tag(15, &rsdp(2, 1, 2)[..20])
            .finish();
        let info = parse_blob(&blob).unwrap();
        assert_eq!(
            (info.rsdp, info.rsdp_error),
            (None, Some(RsdpError::TooShort { len: 20 }))
        );
        // Empty string tags are fine.
        let info = parse_blob(
            &Mbi::new()
                .mmap(&BIOS_E820, 24)
                .tag(1, &[])
                .tag(2, &[])
                .finish(),
        );
        assert_eq!(info.unwrap().cmdline(), "");
    }

    #[test]
    fn bad_rsdp_checksum() {
        let mut bad = rsdp(0, 0x7fe_2345, 0);
        bad[16] ^= 0x10;
        let blob = Mbi::new().mmap(&BIOS_E820, 24).tag(14, &bad).finish();
        let info = parse_blob(&blob).unwrap();
        assert_eq!(
            (info.rsdp, info.rsdp_error),
            (None, Some(RsdpError::BadChecksum))
        );
        // A bad tag 15 is reported, and tag 14 is used instead.
        let mut bad = rsdp(2, 1, 2);
        bad[30] ^= 1;
        let blob = Mbi::new()
            .mmap(&BIOS_E820, 24)
            .tag(14, &rsdp(2, 1, 2)[..20])
            .tag(15, &bad)
            .finish();
        let info = parse_blob(&blob).unwrap();
        assert_eq!(info.rsdp_error, Some(RsdpError::BadExtendedChecksum));
        let p = info.rsdp.unwrap();
        assert_eq!((p.len, p.rsdt_address(), p.xsdt_address()), (20, 1, None));
        // Tag 14 alone on UEFI: revision 2 but no XSDT in the copy.
        let v2 = rsdp(2, 0x1234, 0x5678);
        let blob = Mbi::new().mmap(&BIOS_E820, 24).tag(14, &v2[..20]).finish();
        let p = parse_blob(&blob).unwrap().rsdp.unwrap();
        assert_eq!((p.revision, p.len, p.xsdt_address()), (2, 20, None));
    }

    #[test]
    fn misaligned_and_top_of_memory() {
        let blob = bios_mbi();
        assert_eq!(
            parse_at(&blob, MBI + 4).unwrap_err(),
            Multiboot2Error::Misaligned { address: MBI + 4 }
        );
        // A structure whose end would pass 2^64.
        let at = u64::MAX - 7; // aligned
        assert!(matches!(
            parse_at(&blob[..7], at & !7),
            Err(Multiboot2Error::Unreadable { .. })
        ));
        assert!(parse(&Snapshot::new(&[]), at & !7).is_err());
    }

    #[test]
    fn unknown_framebuffer_types_and_duplicates() {
        let blob = Mbi::new()
            .mmap(&BIOS_E820, 24)
            .framebuffer(0xfd00_0000, 4096, 1024, 768, 32, 1)
            .framebuffer(0xa_0000, 320, 320, 200, 8, 0) // indexed: dropped, last wins
            .string(1, "first")
            .string(1, "second")
            .tag(0xdead_beef, &[1, 2, 3])
            .finish();
        let info = parse_blob(&blob).unwrap();
        assert_eq!(info.framebuffer, None);
        assert_eq!(info.cmdline(), "second");
    }

    #[test]
    fn framebuffer_colour_positions() {
        // A framebuffer tag body: addr, pitch, width, height, bpp, type 1, reserved (u16),
        // then red, green, blue as (position, size).
        let body = |colours: &[u8]| {
            let mut b = Vec::new();
            b.extend_from_slice(&0xe000_0000u64.to_le_bytes());
            b.extend_from_slice(&2400u32.to_le_bytes());
            b.extend_from_slice(&800u32.to_le_bytes());
            b.extend_from_slice(&600u32.to_le_bytes());
            b.extend_from_slice(&[24, 1, 0, 0]);
            b.extend_from_slice(colours);
            b
        };
        let parsed = |colours: &[u8]| {
            let blob = Mbi::new()
                .mmap(&BIOS_E820, 24)
                .tag(8, &body(colours))
                .finish();
            parse_blob(&blob).unwrap().framebuffer.unwrap()
        };
        assert_eq!(
            parsed(&[0, 8, 8, 8, 16, 8]).channels,
            [0, 8, 16],
            "RGB order"
        );
        assert_eq!(
            parsed(&[16, 8, 8, 8, 0, 8]).channels,
            [16, 8, 0],
            "BGR order"
        );
        // Without colour information (a short tag) the usual positions are assumed.
        let fb = parsed(&[]);
        assert_eq!((fb.channels, fb.bpp, fb.pitch), ([16, 8, 0], 24, 2400));
    }

    #[test]
    fn display_all_errors() {
        use Multiboot2Error as E;
        let all = [
            E::Misaligned { address: 4 },
            E::Unreadable {
                address: 8,
                len: 16,
            },
            E::TooSmall { total_size: 1 },
            E::TooLarge {
                total_size: u32::MAX,
            },
            E::TagTooSmall {
                offset: 8,
                tag_type: 1,
                size: 2,
            },
            E::TagOverrun {
                offset: 8,
                tag_type: 1,
                size: 2,
            },
            E::TagBodyTooShort {
                tag_type: 8,
                size: 9,
            },
            E::MissingEndTag,
            E::BadEntrySize {
                tag_type: 6,
                entry_size: 3,
            },
            E::NoMemoryMap,
            E::EmptyMemoryMap { tag_type: 6 },
            E::MemoryMapTooLarge { entries: 9999 },
        ];
        for e in all {
            let s = e.to_string();
            assert!(s.starts_with("multiboot2 "), "{s}");
        }
    }
}
