//! The Xen PVH boot protocol, as QEMU's `-kernel` uses it.
//!
//! Reference: Xen `xen/include/public/arch-x86/hvm/start_info.h` (`struct hvm_start_info`,
//! `struct hvm_memmap_table_entry`) and `docs/misc/pvh.pandoc`. The kernel is entered in
//! 32-bit protected mode with paging off and `%ebx` = physical address of:
//!
//! ```text
//! offset size  hvm_start_info
//!      0    4  magic = 0x336ec578
//!      4    4  version (0 or 1; QEMU gives 1)
//!      8    4  flags (SIF_*; ignored)
//!     12    4  nr_modules (ignored)
//!     16    8  modlist_paddr (ignored)
//!     24    8  cmdline_paddr: NUL-terminated string, 0 = none
//!     32    8  rsdp_paddr: the ACPI RSDP, 0 = none
//!     40    8  memmap_paddr     } version >= 1 only
//!     48    4  memmap_entries   }
//!     52    4  reserved         }
//! ```
//!
//! Each memory-map entry is `{ u64 addr; u64 size; u32 type; u32 reserved; }` (24 bytes) with
//! E820 type codes ([`MemoryKind::from_e820`]). Version 0 has no memory map, and the kernel
//! has no other way to learn one (no BIOS calls in protected mode), so it is refused.
//!
//! The command line, memory map and RSDP are separate allocations; [`BootInfo::sources`]
//! lists all of them. The RSDP is checked per ACPI 6.5 section 5.2.5.3 ([`Rsdp::from_bytes`]);
//! QEMU's q35 gives revision 0.

#![forbid(unsafe_code)]
use core::fmt;

use crate::info::{
    BootInfo, Loader, MAX_CMDLINE, MAX_RAW_MEMORY_ENTRIES, MemoryKind, MemoryRegion, Rsdp,
    RsdpError, read_u32, read_u64,
};
use crate::phys::PhysMemory;

/// `hvm_start_info.magic`.
pub const MAGIC: u32 = 0x336e_c578;
/// Size of `hvm_start_info` version 0.
pub const START_INFO_V0_SIZE: usize = 40;
/// Size of `hvm_start_info` version 1 (the fields this parser reads).
pub const START_INFO_V1_SIZE: usize = 56;
/// Size of `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: usize = 24;
/// Largest RSDP `length` accepted (the ACPI 6.5 structure is 36 bytes).
pub const MAX_RSDP_LENGTH: u32 = 4096;

/// Which PVH structure an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `hvm_start_info` itself.
    StartInfo,
    /// The `hvm_memmap_table_entry` array.
    MemoryMap,
    /// The command-line string.
    Cmdline,
    /// The RSDP.
    Rsdp,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::StartInfo => "hvm_start_info",
            Part::MemoryMap => "memory map",
            Part::Cmdline => "command line",
            Part::Rsdp => "RSDP",
        })
    }
}

/// Why a PVH start info was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhError {
    /// A structure (or part of it) is not in readable memory, or its size overflows.
    Unreadable {
        /// Which structure.
        part: Part,
        /// Its physical address.
        address: u64,
    },
    /// `magic` is not [`MAGIC`]: `%ebx` does not point at a PVH start info.
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// There is no memory map: version 0 (which has no memmap fields), or `memmap_paddr` or
    /// `memmap_entries` is zero.
    MissingMemoryMap {
        /// `hvm_start_info.version`.
        version: u32,
    },
    /// `memmap_entries` is over [`MAX_RAW_MEMORY_ENTRIES`].
    MemoryMapTooLarge {
        /// `hvm_start_info.memmap_entries`.
        entries: u32,
    },
    /// The RSDP at `rsdp_paddr` is invalid (signature, checksum or length).
    Rsdp(RsdpError),
}

impl fmt::Display for PvhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PvhError::Unreadable { part, address } => {
                write!(f, "PVH {part} at {address:#x} is not readable")
            }
            PvhError::BadMagic { found } => {
                write!(
                    f,
                    "PVH start info magic is {found:#010x}, expected {MAGIC:#010x}"
                )
            }
            PvhError::MissingMemoryMap { version } => write!(
                f,
                "PVH start info (version {version}) has no memory map (version 1 needed)"
            ),
            PvhError::MemoryMapTooLarge { entries } => write!(
                f,
                "PVH memory map has {entries} entries, more than the {MAX_RAW_MEMORY_ENTRIES} \
                 supported"
            ),
            PvhError::Rsdp(e) => write!(f, "PVH {e}"),
        }
    }
}

impl From<RsdpError> for PvhError {
    fn from(e: RsdpError) -> PvhError {
        PvhError::Rsdp(e)
    }
}

/// Parses the `hvm_start_info` at physical address `start_info` (the kernel's `%ebx`).
///
/// The result owns copies of everything; `raw_address`/`raw_size` describe the start info
/// and [`BootInfo::sources`] also lists the memory map, command line and RSDP. Modules are
/// ignored. A command line longer than [`MAX_CMDLINE`] is cut there.
pub fn parse(mem: &impl PhysMemory, start_info: u64) -> Result<BootInfo, PvhError> {
    let unreadable = |part| PvhError::Unreadable {
        part,
        address: start_info,
    };
    let head = mem.read(start_info, 8).ok_or(unreadable(Part::StartInfo))?;
    let magic = read_u32(head, 0).ok_or(unreadable(Part::StartInfo))?;
    if magic != MAGIC {
        return Err(PvhError::BadMagic { found: magic });
    }
    let version = read_u32(head, 4).ok_or(unreadable(Part::StartInfo))?;
    if version == 0 {
        return Err(PvhError::MissingMemoryMap { version });
    }
    let si = mem
        .read(start_info, START_INFO_V1_SIZE)
        .ok_or(unreadable(Part::StartInfo))?;
    let field = |offset| read_u64(si, offset).ok_or(unreadable(Part::StartInfo));
    let cmdline_paddr = field(24)?;
    let rsdp_paddr = field(32)?;
    let memmap_paddr = field(40)?;
    let memmap_entries = read_u32(si, 48).ok_or(unreadable(Part::StartInfo))?;

    let mut info = BootInfo::empty(Loader::Pvh);
    info.raw_address = start_info;
    info.raw_size = START_INFO_V1_SIZE as u64;
    info.add_source(start_info, START_INFO_V1_SIZE as u64);

    // Memory map.
    if memmap_paddr == 0 || memmap_entries == 0 {
        return Err(PvhError::MissingMemoryMap { version });
    }
    let too_large = PvhError::MemoryMapTooLarge {
        entries: memmap_entries,
    };
    let entries = usize::try_from(memmap_entries).map_err(|_| too_large)?;
    if entries > MAX_RAW_MEMORY_ENTRIES {
        return Err(too_large);
    }
    let table_len = entries.checked_mul(MEMMAP_ENTRY_SIZE).ok_or(too_large)?;
    let table = mem
        .read(memmap_paddr, table_len)
        .ok_or(PvhError::Unreadable {
            part: Part::MemoryMap,
            address: memmap_paddr,
        })?;
    let (entries, _) = table.as_chunks::<MEMMAP_ENTRY_SIZE>();
    info.set_memory_map(entries.iter().map(|e| MemoryRegion {
        start: read_u64(e, 0).unwrap_or(0),
        len: read_u64(e, 8).unwrap_or(0),
        kind: MemoryKind::from_e820(read_u32(e, 16).unwrap_or(0)),
    }))
    .map_err(|_| too_large)?;
    info.add_source(memmap_paddr, table_len as u64);

    // Command line.
    if cmdline_paddr != 0 {
        let source_len = read_cmdline(mem, cmdline_paddr, &mut info)?;
        info.add_source(cmdline_paddr, source_len);
    }

    // RSDP.
    if rsdp_paddr != 0 {
        let rsdp_unreadable = PvhError::Unreadable {
            part: Part::Rsdp,
            address: rsdp_paddr,
        };
        let v1 = mem.read(rsdp_paddr, Rsdp::V1_LEN).ok_or(rsdp_unreadable)?;
        let mut rsdp = Rsdp::from_v1_bytes(rsdp_paddr, v1)?;
        let mut used = Rsdp::V1_LEN;
        if rsdp.revision >= 2 {
            let v2 = mem.read(rsdp_paddr, Rsdp::V2_LEN).ok_or(rsdp_unreadable)?;
            let length = read_u32(v2, 20).ok_or(rsdp_unreadable)?;
            if !(Rsdp::V2_LEN as u32..=MAX_RSDP_LENGTH).contains(&length) {
                return Err(PvhError::Rsdp(RsdpError::BadLength { length }));
            }
            used = length as usize;
            let whole = mem.read(rsdp_paddr, used).ok_or(rsdp_unreadable)?;
            rsdp = Rsdp::from_bytes(rsdp_paddr, whole)?;
        }
        info.rsdp = Some(rsdp);
        info.add_source(rsdp_paddr, used as u64);
    }
    Ok(info)
}

/// Copies the NUL-terminated command line at `paddr` into `info`; returns the bytes it
/// occupies in memory (including the NUL, or [`MAX_CMDLINE`] when it was cut).
fn read_cmdline(mem: &impl PhysMemory, paddr: u64, info: &mut BootInfo) -> Result<u64, PvhError> {
    let unreadable = PvhError::Unreadable {
        part: Part::Cmdline,
        address: paddr,
    };
    // Byte by byte: the string's length is unknown and readable memory may end right after
    // its NUL. Never reads more than MAX_CMDLINE bytes.
    let mut len = 0usize;
    let mut terminated = false;
    while len < MAX_CMDLINE {
        let addr = paddr.checked_add(len as u64).ok_or(unreadable)?;
        let byte = mem.read(addr, 1).and_then(|b| b.first().copied());
        match byte {
            Some(0) => {
                terminated = true;
                break;
            }
            Some(_) => len += 1,
            None => return Err(unreadable),
        }
    }
    let bytes = mem.read(paddr, len).ok_or(unreadable)?;
    info.set_cmdline(bytes);
    Ok(if terminated {
        len as u64 + 1
    } else {
        len as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::Snapshot;
    use crate::testutil::{e820, rsdp, set32, set64, start_info};
    use MemoryKind::*;

    const SI: u64 = 0x5a8;
    const CMDLINE: u64 = 0x5e0; // right after the start info (blobs are not joined)
    const MEMMAP: u64 = 0x3000; // leaves room for long command lines
    const RSDP: u64 = 0xf_5270;

    /// QEMU q35 with 128 MiB (`-m 128`), as its PVH option ROM reports it.
    fn qemu_map() -> Vec<(u64, u64, u32)> {
        vec![
            (0, 0x9fc00, 1),
            (0x9fc00, 0x400, 2),
            (0xf0000, 0x10000, 2),
            (0x10_0000, 0x7f0_0000 - 0x10_0000 + 0xe0000, 1),
            (0x7fe_0000, 0x2_0000, 2),
            (0xb000_0000, 0x1000_0000, 2),
            (0xfed1_c000, 0x4000, 2),
            (0xfeff_c000, 0x4000, 2),
            (0xfffc_0000, 0x4_0000, 2),
        ]
    }

    struct Blobs {
        si: Vec<u8>,
        memmap: Vec<u8>,
        cmdline: Vec<u8>,
        rsdp: Vec<u8>,
    }

    impl Blobs {
        fn qemu(cmdline: &str) -> Blobs {
            let map = qemu_map();
            let mut c = cmdline.as_bytes().to_vec();
            c.push(0);
            Blobs {
                si: start_info(1, CMDLINE, RSDP, MEMMAP, map.len() as u32),
                memmap: e820(&map, 24),
                cmdline: c,
                rsdp: rsdp(0, 0x7fe_2000, 0),
            }
        }

        fn parse(&self) -> Result<BootInfo, PvhError> {
            let regions = [
                (SI, &self.si[..]),
                (MEMMAP, &self.memmap[..]),
                (CMDLINE, &self.cmdline[..]),
                (RSDP, &self.rsdp[..]),
            ];
            parse(&Snapshot::new(&regions), SI)
        }
    }

    fn r(start: u64, len: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { start, len, kind }
    }

    #[test]
    fn parses_qemu_q35() {
        let info = Blobs::qemu("console=ttyS0 log=debug").parse().unwrap();
        assert_eq!(info.loader, Loader::Pvh);
        assert_eq!((info.raw_address, info.raw_size), (SI, 56));
        assert_eq!(info.cmdline(), "console=ttyS0 log=debug");
        assert_eq!(info.loader_name(), "");
        assert_eq!(info.framebuffer, None);
        let map: Vec<MemoryRegion> = qemu_map()
            .iter()
            .map(|&(s, l, t)| r(s, l, MemoryKind::from_e820(t)))
            .collect();
        assert_eq!(info.memory_map(), &map[..]);
        assert_eq!(info.dropped_regions, 0);
        assert_eq!(info.usable_bytes(), 0x9fc00 + 0x7ee_0000);
        let rsdp = info.rsdp.unwrap();
        assert_eq!((rsdp.revision, rsdp.rsdt_address()), (0, 0x7fe_2000));
        assert_eq!(rsdp.loader_address, RSDP);
        assert_eq!(
            info.sources(),
            &[(SI, 56), (MEMMAP, 9 * 24), (CMDLINE, 24), (RSDP, 20)]
        );
    }

    #[test]
    fn optional_parts_absent() {
        let mut b = Blobs::qemu("");
        set64(&mut b.si, 24, 0); // no cmdline
        set64(&mut b.si, 32, 0); // no RSDP
        let info = b.parse().unwrap();
        assert_eq!(info.cmdline(), "");
        assert_eq!(info.rsdp, None);
        assert_eq!(info.sources(), &[(SI, 56), (MEMMAP, 9 * 24)]);
        // An empty string is not "absent".
        let info = Blobs::qemu("").parse().unwrap();
        assert_eq!(info.sources()[2], (CMDLINE, 1));
    }

    #[test]
    fn bad_magic() {
        let mut b = Blobs::qemu("");
        set32(&mut b.si, 0, 0x2bad_b002); // multiboot1's magic
        assert_eq!(
            b.parse().unwrap_err(),
            PvhError::BadMagic { found: 0x2bad_b002 }
        );
    }

    #[test]
    fn version_0_has_no_memory_map() {
        let mut b = Blobs::qemu("");
        set32(&mut b.si, 4, 0);
        b.si.truncate(START_INFO_V0_SIZE); // and only 40 bytes are readable
        let err = b.parse().unwrap_err();
        assert_eq!(err, PvhError::MissingMemoryMap { version: 0 });
        assert!(err.to_string().contains("no memory map"), "{err}");
    }

    #[test]
    fn empty_memory_map_fields() {
        let mut b = Blobs::qemu("");
        set32(&mut b.si, 48, 0);
        assert_eq!(
            b.parse().unwrap_err(),
            PvhError::MissingMemoryMap { version: 1 }
        );
        let mut b = Blobs::qemu("");
        set64(&mut b.si, 40, 0);
        assert_eq!(
            b.parse().unwrap_err(),
            PvhError::MissingMemoryMap { version: 1 }
        );
    }

    #[test]
    fn huge_memmap_entries() {
        for entries in [u32::MAX, 0x0aaa_aaab, MAX_RAW_MEMORY_ENTRIES as u32 + 1] {
            let mut b = Blobs::qemu("");
            set32(&mut b.si, 48, entries);
            assert_eq!(
                b.parse().unwrap_err(),
                PvhError::MemoryMapTooLarge { entries }
            );
        }
        // Within the limit but past the readable table.
        let mut b = Blobs::qemu("");
        set32(&mut b.si, 48, 10);
        let err = b.parse().unwrap_err();
        assert_eq!(
            err,
            PvhError::Unreadable {
                part: Part::MemoryMap,
                address: MEMMAP
            }
        );
        assert_eq!(err.to_string(), "PVH memory map at 0x3000 is not readable");
        // A table that would wrap around the address space.
        let mut b = Blobs::qemu("");
        set64(&mut b.si, 40, u64::MAX - 10);
        assert!(matches!(
            b.parse().unwrap_err(),
            PvhError::Unreadable {
                part: Part::MemoryMap,
                ..
            }
        ));
    }

    #[test]
    fn truncated_start_info() {
        for len in [0, 4, 7, 8, 40, 55] {
            let mut b = Blobs::qemu("");
            b.si.truncate(len);
            assert_eq!(
                b.parse().unwrap_err(),
                PvhError::Unreadable {
                    part: Part::StartInfo,
                    address: SI
                },
                "{len} bytes"
            );
        }
        // At the very top of the address space.
        let si = start_info(1, 0, 0, 0x1000, 1);
        let regions = [(u64::MAX - 40, &si[..40])];
        assert!(matches!(
            parse(&Snapshot::new(&regions), u64::MAX - 40),
            Err(PvhError::Unreadable { .. })
        ));
        assert!(parse(&Snapshot::new(&[]), u64::MAX).is_err());
    }

    #[test]
    fn zero_size_overlapping_and_unknown_entries() {
        let mut b = Blobs::qemu("");
        let raw = [
            (0x10_0000, 0x100_0000, 1), // 1 MiB .. 17 MiB usable
            (0, 0x9fc00, 1),
            (0x50_0000, 0, 2),         // zero-size
            (0x80_0000, 0x1000, 4),    // NVS inside usable
            (0x80_0800, 0x1000, 7),    // PMEM (unknown here: reserved), straddling
            (0xa0_0000, 0x10_0000, 3), // ACPI inside usable
            (0xa0_0000, 0x10_0000, 1), // same range again, usable: loses
            (0x9fc00, 0x400, 0x1234),  // unknown type: reserved
            (0x110_0000, 0, 1),        // zero-size at the end
        ];
        b.memmap = e820(&raw, 24);
        set32(&mut b.si, 48, raw.len() as u32);
        let info = b.parse().unwrap();
        assert_eq!(
            info.memory_map(),
            &[
                r(0, 0x9fc00, Usable),
                r(0x9fc00, 0x400, Reserved),
                r(0x10_0000, 0x70_0000, Usable),
                r(0x80_0000, 0x800, AcpiNvs),
                r(0x80_0800, 0x1000, Reserved),
                r(0x80_1800, 0x1f_e800, Usable),
                r(0xa0_0000, 0x10_0000, AcpiReclaimable),
                r(0xb0_0000, 0x60_0000, Usable),
            ]
        );
        assert_eq!(info.dropped_regions, 2);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "hundreds of entries through a quadratic sweep: minutes under Miri"
    )]
    fn entries_beyond_max_regions() {
        let mut b = Blobs::qemu("");
        let raw: Vec<(u64, u64, u32)> = (0..300u64)
            .map(|i| (i * 0x2000, 0x1000, if i % 3 == 0 { 1 } else { 3 }))
            .collect();
        b.memmap = e820(&raw, 24);
        set32(&mut b.si, 48, raw.len() as u32);
        let info = b.parse().unwrap();
        assert_eq!(info.memory_map().len(), crate::MAX_MEMORY_REGIONS);
        assert_eq!(info.dropped_regions, 300 - crate::MAX_MEMORY_REGIONS);
        // The lowest addresses are kept.
        assert_eq!(info.memory_map()[0], r(0, 0x1000, Usable));
        assert_eq!(
            info.memory_map()[127],
            r(127 * 0x2000, 0x1000, AcpiReclaimable)
        );
    }

    #[test]
    fn cmdline_limits() {
        // Unterminated at the end of readable memory.
        let mut b = Blobs::qemu("quiet");
        b.cmdline.pop();
        assert_eq!(
            b.parse().unwrap_err(),
            PvhError::Unreadable {
                part: Part::Cmdline,
                address: CMDLINE
            }
        );
        // Longer than MAX_CMDLINE: cut, and exactly MAX_CMDLINE bytes read.
        let long = "a".repeat(MAX_CMDLINE + 100);
        let b = Blobs::qemu(&long);
        let info = b.parse().unwrap();
        assert_eq!(info.cmdline(), &long[..MAX_CMDLINE]);
        assert_eq!(info.sources()[2], (CMDLINE, MAX_CMDLINE as u64));
        let mut b = Blobs::qemu("");
        b.cmdline = vec![b'a'; MAX_CMDLINE];
        assert_eq!(b.parse().unwrap().cmdline().len(), MAX_CMDLINE);
        // Pointer near the top of the address space.
        let mut b = Blobs::qemu("");
        set64(&mut b.si, 24, u64::MAX);
        assert!(matches!(
            b.parse().unwrap_err(),
            PvhError::Unreadable {
                part: Part::Cmdline,
                ..
            }
        ));
    }

    #[test]
    fn rsdp_checks() {
        let mut b = Blobs::qemu("");
        b.rsdp[8] = b.rsdp[8].wrapping_add(1);
        assert_eq!(
            b.parse().unwrap_err(),
            PvhError::Rsdp(RsdpError::BadChecksum)
        );
        let mut b = Blobs::qemu("");
        b.rsdp[0] = b'r';
        assert_eq!(
            b.parse().unwrap_err(),
            PvhError::Rsdp(RsdpError::BadSignature)
        );
        let mut b = Blobs::qemu("");
        b.rsdp.truncate(19);
        assert_eq!(
            b.parse().unwrap_err(),
            PvhError::Unreadable {
                part: Part::Rsdp,
                address: RSDP
            }
        );
        // Revision 2: the whole 36 bytes are read and checked.
        let mut b = Blobs::qemu("");
        b.rsdp = rsdp(2, 0x7fe_2000, 0x7fe_2100);
        let info = b.parse().unwrap();
        let p = info.rsdp.unwrap();
        assert_eq!(
            (p.revision, p.len, p.xsdt_address()),
            (2, 36, Some(0x7fe_2100))
        );
        assert_eq!(info.sources()[3], (RSDP, 36));
        b.rsdp[28] ^= 0x40;
        assert_eq!(
            b.parse().unwrap_err(),
            PvhError::Rsdp(RsdpError::BadExtendedChecksum)
        );
        // Revision 2 but only the v1 part readable.
        b.rsdp.truncate(20);
        assert!(matches!(
            b.parse().unwrap_err(),
            PvhError::Unreadable {
                part: Part::Rsdp,
                ..
            }
        ));
        // Absurd length.
        let mut b = Blobs::qemu("");
        b.rsdp = rsdp(2, 1, 2);
        set32(&mut b.rsdp, 20, 0xffff_ff00);
        assert_eq!(
            b.parse().unwrap_err(),
            PvhError::Rsdp(RsdpError::BadLength {
                length: 0xffff_ff00
            })
        );
    }
}
