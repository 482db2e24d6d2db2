//! The loader-independent [`BootInfo`] and its parts.
//!
//! Everything here is plain data with fixed capacity: it is filled before the kernel has a
//! heap, copied into the kernel image (so it survives the reuse of low memory) and then only
//! read. Ownership: the kernel holds exactly one `BootInfo` for its whole life; nothing in it
//! points back into the loader's memory.
//!
//! The memory-map normalisation shared by both parsers lives here
//! ([`BootInfo::set_memory_map`]): skip empty entries, resolve overlaps in favour of the more
//! restrictive kind, sort, merge, cap at [`MAX_MEMORY_REGIONS`]. It needs no heap.
//!
//! The RSDP checks follow ACPI 6.5 section 5.2.5.3 (RSDP structure): signature
//! `"RSD PTR "`, checksum over the first 20 bytes, and for revision 2+ `length` and the
//! extended checksum over `length` bytes.

#![forbid(unsafe_code)]
use core::fmt;

mod carve;
pub use carve::{FIXED_DEVICE_SPACE, whole_pages};

/// Most memory-map entries kept. Real firmware reports tens; QEMU reports fewer than ten.
pub const MAX_MEMORY_REGIONS: usize = 128;
/// Longest kernel command line kept, in bytes.
pub const MAX_CMDLINE: usize = 1024;
/// Longest boot-loader name kept, in bytes.
pub const MAX_LOADER_NAME: usize = 64;
/// Most raw entries a loader's memory map may have. Normalisation is quadratic in this (it
/// needs no storage but the result), so the parsers reject longer maps instead of silently
/// ignoring entries (an ignored reserved entry could leave overlapping RAM marked usable).
/// Real firmware reports a few hundred at most.
pub const MAX_RAW_MEMORY_ENTRIES: usize = 4096;
/// Most physical ranges a parser records in [`BootInfo::sources`].
pub const MAX_SOURCES: usize = 4;

/// Which loader started the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    /// Xen PVH boot protocol (`qemu -kernel`), `hvm_start_info` in `%ebx`.
    Pvh,
    /// Multiboot2 (GRUB on BIOS or UEFI), information structure in `%ebx`.
    Multiboot2,
}

impl fmt::Display for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Loader::Pvh => "PVH",
            Loader::Multiboot2 => "multiboot2",
        })
    }
}

/// What a physical memory range may be used for (E820 / multiboot2 / PVH type codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemoryKind {
    /// Free RAM (type 1).
    Usable,
    /// ACPI tables; reusable once they are read (type 3).
    AcpiReclaimable,
    /// ACPI non-volatile storage (type 4).
    AcpiNvs,
    /// Bad RAM (type 5).
    Defective,
    /// Reserved (type 2) and every type the kernel does not know, which it treats as reserved.
    Reserved,
}

impl MemoryKind {
    /// Maps an E820-style type code (PVH `hvm_memmap_table_entry.type`, multiboot2 tag 6).
    /// Unknown codes are reserved: firmware uses vendor types, and guessing "free" corrupts.
    pub const fn from_e820(code: u32) -> MemoryKind {
        match code {
            1 => MemoryKind::Usable,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Defective,
            _ => MemoryKind::Reserved,
        }
    }

    /// Maps a UEFI memory type (UEFI 2.10 section 7.2, `EFI_MEMORY_TYPE`) as seen after
    /// `ExitBootServices` (GRUB has exited them before it jumps to a multiboot2 kernel):
    /// loader code/data (1, 2), boot-services code/data (3, 4) and conventional memory (7)
    /// are free; 8 is unusable (defective); 9 is ACPI reclaim; 10 is ACPI NVS; everything
    /// else (runtime services, MMIO, persistent, unaccepted, OEM types) is reserved.
    pub const fn from_uefi(code: u32) -> MemoryKind {
        match code {
            1 | 2 | 3 | 4 | 7 => MemoryKind::Usable,
            8 => MemoryKind::Defective,
            9 => MemoryKind::AcpiReclaimable,
            10 => MemoryKind::AcpiNvs,
            _ => MemoryKind::Reserved,
        }
    }

    /// How strongly this kind wins where map entries overlap: 0 for `Usable` up to 4 for
    /// `Reserved`. A range is only as usable as the most restrictive claim on it.
    pub const fn restrictiveness(self) -> u8 {
        match self {
            MemoryKind::Usable => 0,
            MemoryKind::AcpiReclaimable => 1,
            MemoryKind::AcpiNvs => 2,
            MemoryKind::Defective => 3,
            MemoryKind::Reserved => 4,
        }
    }
}

impl fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryKind::Usable => "usable",
            MemoryKind::AcpiReclaimable => "ACPI reclaimable",
            MemoryKind::AcpiNvs => "ACPI NVS",
            MemoryKind::Defective => "defective",
            MemoryKind::Reserved => "reserved",
        })
    }
}

/// One range of the physical memory map: `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub start: u64,
    /// Length in bytes, never zero in a parsed map.
    pub len: u64,
    /// What the range may be used for.
    pub kind: MemoryKind,
}

impl MemoryRegion {
    /// One past the last byte (saturating at `u64::MAX`).
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// The Root System Description Pointer as the loader gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    /// Physical address the loader reported. For PVH this is where the firmware put it; for
    /// multiboot2 it is the copy inside the (since reused) information structure, so use
    /// [`Rsdp::bytes`] rather than this address once low memory is reused.
    pub loader_address: u64,
    /// ACPI revision field: 0 means ACPI 1.0 (RSDT only), 2 or more has an XSDT.
    pub revision: u8,
    /// The structure itself: 20 bytes for revision 0, 36 bytes (`length`) otherwise.
    pub bytes: [u8; 36],
    /// Valid bytes in [`Rsdp::bytes`].
    pub len: usize,
}

impl Rsdp {
    /// Size of the ACPI 1.0 part (signature .. `rsdt_address`).
    pub const V1_LEN: usize = 20;
    /// Size of the ACPI 2.0+ structure (up to and including the reserved bytes).
    pub const V2_LEN: usize = 36;

    /// Validates the ACPI 1.0 part of an RSDP (ACPI 6.5 section 5.2.5.3): `bytes` must hold at
    /// least 20 bytes, start with `"RSD PTR "` and the first 20 bytes must sum to zero. Only
    /// those 20 bytes are kept, whatever the revision says (multiboot2 tag 14 is such a copy,
    /// and on UEFI it carries revision 2), so [`Rsdp::xsdt_address`] is `None` for it.
    pub fn from_v1_bytes(loader_address: u64, bytes: &[u8]) -> Result<Rsdp, RsdpError> {
        let head = bytes
            .get(..Self::V1_LEN)
            .ok_or(RsdpError::TooShort { len: bytes.len() })?;
        if head.get(..8) != Some(b"RSD PTR ".as_slice()) {
            return Err(RsdpError::BadSignature);
        }
        if checksum(head) != 0 {
            return Err(RsdpError::BadChecksum);
        }
        let mut copy = [0u8; Self::V2_LEN];
        copy[..Self::V1_LEN].copy_from_slice(head);
        Ok(Rsdp {
            loader_address,
            revision: head.get(15).copied().unwrap_or(0),
            bytes: copy,
            len: Self::V1_LEN,
        })
    }

    /// Validates a whole RSDP (ACPI 6.5 section 5.2.5.3). Revision 0 (and the undefined 1) is
    /// checked as in [`Rsdp::from_v1_bytes`]. Revision 2 or more also needs `length` (offset
    /// 20) to be at least 36 and at most `bytes.len()`, and the extended checksum over
    /// `length` bytes to be zero; the first 36 bytes are kept.
    pub fn from_bytes(loader_address: u64, bytes: &[u8]) -> Result<Rsdp, RsdpError> {
        let mut rsdp = Rsdp::from_v1_bytes(loader_address, bytes)?;
        if rsdp.revision < 2 {
            return Ok(rsdp);
        }
        let too_short = RsdpError::TooShort { len: bytes.len() };
        if bytes.len() < Self::V2_LEN {
            return Err(too_short);
        }
        let length = read_u32(bytes, 20).ok_or(too_short)?;
        let whole = usize::try_from(length)
            .ok()
            .filter(|&l| l >= Self::V2_LEN)
            .and_then(|l| bytes.get(..l))
            .ok_or(RsdpError::BadLength { length })?;
        if checksum(whole) != 0 {
            return Err(RsdpError::BadExtendedChecksum);
        }
        rsdp.bytes
            .copy_from_slice(whole.get(..Self::V2_LEN).unwrap_or(&[0; Self::V2_LEN]));
        rsdp.len = Self::V2_LEN;
        Ok(rsdp)
    }

    /// The valid bytes of the structure.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&self.bytes)
    }

    /// Physical address of the RSDT (offset 16).
    pub fn rsdt_address(&self) -> u32 {
        read_u32(&self.bytes, 16).unwrap_or(0)
    }

    /// Physical address of the XSDT (offset 24), when the revision is 2 or more and the
    /// extended part was available.
    pub fn xsdt_address(&self) -> Option<u64> {
        if self.revision >= 2 && self.len >= Self::V2_LEN {
            read_u64(&self.bytes, 24)
        } else {
            None
        }
    }

    /// The six-byte OEM id (offset 9).
    pub fn oem_id(&self) -> &[u8] {
        self.bytes.get(9..15).unwrap_or(&[])
    }
}

/// Why an RSDP was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsdpError {
    /// Fewer bytes than the revision requires (20, or 36 for revision 2+).
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The first eight bytes are not `"RSD PTR "`.
    BadSignature,
    /// The first 20 bytes do not sum to zero.
    BadChecksum,
    /// `length` is below 36 or larger than the bytes available.
    BadLength {
        /// The `length` field.
        length: u32,
    },
    /// The `length` bytes do not sum to zero.
    BadExtendedChecksum,
}

impl fmt::Display for RsdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RsdpError::TooShort { len } => write!(f, "RSDP too short ({len} bytes)"),
            RsdpError::BadSignature => f.write_str("RSDP signature is not \"RSD PTR \""),
            RsdpError::BadChecksum => f.write_str("RSDP checksum (first 20 bytes) is not zero"),
            RsdpError::BadLength { length } => write!(f, "RSDP length {length} is invalid"),
            RsdpError::BadExtendedChecksum => f.write_str("RSDP extended checksum is not zero"),
        }
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

pub(crate) fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    Some(u32::from_le_bytes(bytes.get(offset..end)?.try_into().ok()?))
}

pub(crate) fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let end = offset.checked_add(8)?;
    Some(u64::from_le_bytes(bytes.get(offset..end)?.try_into().ok()?))
}

/// A linear framebuffer set up by the loader (multiboot2 tag 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framebuffer {
    /// Physical address of the first pixel.
    pub address: u64,
    /// Bytes per scan line.
    pub pitch: u32,
    /// Pixels per line.
    pub width: u32,
    /// Lines.
    pub height: u32,
    /// Bits per pixel.
    pub bpp: u8,
    /// Bit position of the red, green and blue channels in a pixel (multiboot2 colour info;
    /// 16, 8, 0 when the loader gave none).
    pub channels: [u8; 3],
    /// Width in bits of the red, green and blue channels (multiboot2 colour info; 8 each
    /// when the loader gave none). A deep-colour mode has 10.
    pub channel_sizes: [u8; 3],
}

impl Framebuffer {
    /// The physical range `[address, address + pitch * height)` the framebuffer spans, or
    /// `None` when its end would pass 2^64.
    pub fn span(&self) -> Option<(u64, u64)> {
        let len = u64::from(self.pitch).checked_mul(u64::from(self.height))?;
        Some((self.address, self.address.checked_add(len)?))
    }

    /// Where an 8-bit colour value of red, green and blue goes in a pixel: the bit position
    /// of each channel's top 8 bits (`position + size - 8`), so that a channel wider than 8
    /// bits (10 in a deep-colour mode) is written at full brightness rather than into its
    /// low bits at a quarter of it. `None` when a channel is narrower than 8 bits (8-bit
    /// values would spill into the next channel) or its top bit is past bit 255.
    pub fn shifts(&self) -> Option<[u8; 3]> {
        let mut shifts = [0u8; 3];
        for ((shift, &position), &size) in shifts
            .iter_mut()
            .zip(&self.channels)
            .zip(&self.channel_sizes)
        {
            *shift = position.checked_add(size.checked_sub(8)?)?;
        }
        Some(shifts)
    }

    /// Whether the framebuffer's span reaches into [`FIXED_DEVICE_SPACE`] (the IOAPICs, the
    /// HPET, the local APIC and the MSI range, the firmware flash) or cannot be computed. No
    /// screen lives there: a tag that says so is broken, and drawing on it would write the
    /// interrupt controllers' registers.
    pub fn reaches_device_space(&self) -> bool {
        let (start, end) = FIXED_DEVICE_SPACE;
        self.span().is_none_or(|(s, e)| s < end && start < e)
    }
}

/// Everything the kernel needs from its loader, in kernel-owned memory.
///
/// # Invariants
/// - `regions[..region_count]` are non-empty, sorted by `start` and do not overlap (where the
///   loader reported overlaps, the more restrictive kind won).
/// - `cmdline[..cmdline_len]` and `loader_name[..loader_name_len]` are the loader's bytes
///   (not necessarily UTF-8; use the accessors).
#[derive(Clone, Debug)]
pub struct BootInfo {
    /// Which protocol started the kernel.
    pub loader: Loader,
    /// Physical address and size of the loader's original information structure.
    pub raw_address: u64,
    /// Size of the loader's structure in bytes (the part the parser read).
    pub raw_size: u64,
    pub(crate) loader_name: [u8; MAX_LOADER_NAME],
    pub(crate) loader_name_len: usize,
    pub(crate) regions: [MemoryRegion; MAX_MEMORY_REGIONS],
    pub(crate) region_count: usize,
    pub(crate) cmdline: [u8; MAX_CMDLINE],
    pub(crate) cmdline_len: usize,
    /// The RSDP, if the loader gave one.
    pub rsdp: Option<Rsdp>,
    /// Why a copy of the RSDP the loader gave was not used (multiboot2: the first invalid
    /// copy, tag 15 before tag 14), for the log. `rsdp` may still hold the other copy.
    pub rsdp_error: Option<RsdpError>,
    /// The framebuffer, if the loader set one up.
    pub framebuffer: Option<Framebuffer>,
    /// Entries the parser dropped (zero-sized, or over [`MAX_MEMORY_REGIONS`]), for the log.
    pub dropped_regions: usize,
    pub(crate) sources: [(u64, u64); MAX_SOURCES],
    pub(crate) source_count: usize,
}

/// A loader's memory map had more than [`MAX_RAW_MEMORY_ENTRIES`] entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMapTooLarge {
    /// Entries the loader reported.
    pub entries: usize,
}

impl fmt::Display for MemoryMapTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory map has {} entries, more than the {} supported",
            self.entries, MAX_RAW_MEMORY_ENTRIES
        )
    }
}

impl BootInfo {
    /// An empty record for `loader`; parsers fill it in.
    pub const fn empty(loader: Loader) -> BootInfo {
        BootInfo {
            loader,
            raw_address: 0,
            raw_size: 0,
            loader_name: [0; MAX_LOADER_NAME],
            loader_name_len: 0,
            regions: [MemoryRegion {
                start: 0,
                len: 0,
                kind: MemoryKind::Reserved,
            }; MAX_MEMORY_REGIONS],
            region_count: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            rsdp: None,
            rsdp_error: None,
            framebuffer: None,
            dropped_regions: 0,
            sources: [(0, 0); MAX_SOURCES],
            source_count: 0,
        }
    }

    /// The memory map: sorted, non-overlapping, no empty entries.
    pub fn memory_map(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// The kernel command line (lossy: invalid UTF-8 yields the valid prefix).
    pub fn cmdline(&self) -> &str {
        utf8_prefix(&self.cmdline[..self.cmdline_len])
    }

    /// The loader's name, where it gave one (multiboot2 tag 2); "" otherwise.
    pub fn loader_name(&self) -> &str {
        utf8_prefix(&self.loader_name[..self.loader_name_len])
    }

    /// Total bytes of [`MemoryKind::Usable`] memory.
    pub fn usable_bytes(&self) -> u64 {
        self.memory_map()
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
            .map(|r| r.len)
            .sum()
    }

    /// The physical ranges `(start, len)` the parser read: the `hvm_start_info` or multiboot2
    /// information structure first, then (PVH) the memory map, command line and RSDP. These
    /// are what a boot dump must capture, and what must not be reused before the kernel has
    /// copied what it needs (it has, once it holds this `BootInfo`).
    pub fn sources(&self) -> &[(u64, u64)] {
        self.sources.get(..self.source_count).unwrap_or(&[])
    }

    /// Replaces the command line with `bytes`, cut at the first NUL and at [`MAX_CMDLINE`].
    pub fn set_cmdline(&mut self, bytes: &[u8]) {
        self.cmdline_len = copy_cstr(&mut self.cmdline, bytes);
    }

    /// Replaces the loader name with `bytes`, cut at the first NUL and at [`MAX_LOADER_NAME`].
    pub fn set_loader_name(&mut self, bytes: &[u8]) {
        self.loader_name_len = copy_cstr(&mut self.loader_name, bytes);
    }

    /// Records a physical range the parser read (see [`BootInfo::sources`]); ranges past
    /// [`MAX_SOURCES`] are not recorded.
    pub(crate) fn add_source(&mut self, start: u64, len: u64) {
        if let Some(slot) = self.sources.get_mut(self.source_count) {
            *slot = (start, len);
            self.source_count += 1;
        }
    }

    /// Replaces the memory map with the normalised form of `entries` (the loader's raw map, in
    /// any order, possibly overlapping).
    ///
    /// - Empty entries (zero length, or starting at `u64::MAX`) are skipped and counted in
    ///   [`BootInfo::dropped_regions`]. Ends past `u64::MAX` are clamped to it.
    /// - Where entries overlap, the more restrictive kind wins: `Reserved` > `Defective` >
    ///   `AcpiNvs` > `AcpiReclaimable` > `Usable` (see [`MemoryKind::restrictiveness`]).
    /// - Touching ranges of the same kind are merged; the result is sorted.
    /// - Result ranges past [`MAX_MEMORY_REGIONS`] (the highest addresses) are dropped and
    ///   counted. Dropping is safe: a range absent from the map is never used.
    ///
    /// No heap and no scratch arrays: a sweep over the distinct boundaries, each step walking
    /// `entries` again (hence `Clone`), so the cost is O(n^2) for n entries; more than
    /// [`MAX_RAW_MEMORY_ENTRIES`] entries are refused and leave `self` unchanged.
    pub fn set_memory_map<I>(&mut self, entries: I) -> Result<(), MemoryMapTooLarge>
    where
        I: Iterator<Item = MemoryRegion> + Clone,
    {
        let mut count = 0usize;
        let mut empty = 0usize;
        for r in entries.clone() {
            count = count.saturating_add(1);
            if r.end() == r.start {
                empty += 1;
            }
            if count > MAX_RAW_MEMORY_ENTRIES {
                return Err(MemoryMapTooLarge {
                    entries: entries.count(),
                });
            }
        }
        self.region_count = 0;
        self.dropped_regions = empty;
        let mut pending: Option<MemoryRegion> = None;
        let mut pos = 0u64;
        loop {
            // The kind covering `pos`, and the next boundary after it.
            let mut covering: Option<MemoryKind> = None;
            let mut next: Option<u64> = None;
            for r in entries.clone() {
                let end = r.end();
                if end == r.start {
                    continue;
                }
                let boundary = if r.start <= pos && pos < end {
                    covering = Some(match covering {
                        Some(k) if k.restrictiveness() >= r.kind.restrictiveness() => k,
                        _ => r.kind,
                    });
                    end
                } else if r.start > pos {
                    r.start
                } else {
                    continue;
                };
                next = Some(next.map_or(boundary, |n| n.min(boundary)));
            }
            let Some(next) = next else { break };
            if let Some(kind) = covering {
                match pending.as_mut() {
                    Some(p) if p.kind == kind && p.end() == pos => p.len = next - p.start,
                    _ => {
                        if let Some(p) = pending.take() {
                            self.push_region(p);
                        }
                        pending = Some(MemoryRegion {
                            start: pos,
                            len: next - pos,
                            kind,
                        });
                    }
                }
            }
            pos = next;
        }
        if let Some(p) = pending {
            self.push_region(p);
        }
        Ok(())
    }

    fn push_region(&mut self, region: MemoryRegion) {
        match self.regions.get_mut(self.region_count) {
            Some(slot) => {
                *slot = region;
                self.region_count += 1;
            }
            None => self.dropped_regions = self.dropped_regions.saturating_add(1),
        }
    }
}

/// Copies `src` up to its first NUL into `dst`, truncating; returns the bytes copied.
fn copy_cstr(dst: &mut [u8], src: &[u8]) -> usize {
    let len = src.iter().position(|&b| b == 0).unwrap_or(src.len());
    let len = len.min(dst.len());
    if let (Some(d), Some(s)) = (dst.get_mut(..len), src.get(..len)) {
        d.copy_from_slice(s);
    }
    len
}

fn utf8_prefix(bytes: &[u8]) -> &str {
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        // `valid_up_to` is a char boundary, so this cannot fail.
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, rsdp};
    use MemoryKind::*;

    fn r(start: u64, len: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { start, len, kind }
    }

    fn normalise(raw: &[MemoryRegion]) -> BootInfo {
        let mut info = BootInfo::empty(Loader::Pvh);
        info.set_memory_map(raw.iter().copied()).unwrap();
        info
    }

    fn assert_invariants(info: &BootInfo) {
        let map = info.memory_map();
        assert!(map.iter().all(|r| r.len > 0), "{map:?}");
        for w in map.windows(2) {
            assert!(w[0].end() <= w[1].start, "overlap or unsorted: {map:?}");
            assert!(
                w[0].end() < w[1].start || w[0].kind != w[1].kind,
                "unmerged: {map:?}"
            );
        }
    }

    #[test]
    fn from_e820_and_uefi() {
        assert_eq!(MemoryKind::from_e820(1), Usable);
        assert_eq!(MemoryKind::from_e820(2), Reserved);
        assert_eq!(MemoryKind::from_e820(3), AcpiReclaimable);
        assert_eq!(MemoryKind::from_e820(4), AcpiNvs);
        assert_eq!(MemoryKind::from_e820(5), Defective);
        assert_eq!(MemoryKind::from_e820(0), Reserved);
        assert_eq!(MemoryKind::from_e820(12), Reserved); // PRAM
        assert_eq!(MemoryKind::from_e820(0xf000_0001), Reserved);
        let uefi: Vec<MemoryKind> = (0..16).map(MemoryKind::from_uefi).collect();
        #[rustfmt::skip]
        assert_eq!(uefi, [
            Reserved, Usable, Usable, Usable, Usable, Reserved, Reserved, Usable,
            Defective, AcpiReclaimable, AcpiNvs, Reserved, Reserved, Reserved, Reserved, Reserved,
        ]);
        assert_eq!(MemoryKind::from_uefi(0x8000_0000), Reserved); // OEM
    }

    #[test]
    fn normalise_sorts_merges_and_drops_empty() {
        let info = normalise(&[
            r(0x10_0000, 0x10_0000, Usable),
            r(0, 0x9fc00, Usable),
            r(0x5000, 0, Reserved),          // empty
            r(0x20_0000, 0x10_0000, Usable), // touches the first: merged
            r(0x9fc00, 0x400, Reserved),
            r(0xa0000, 0, Usable),    // empty
            r(u64::MAX, 5, Reserved), // empty once clamped
        ]);
        assert_eq!(
            info.memory_map(),
            &[
                r(0, 0x9fc00, Usable),
                r(0x9fc00, 0x400, Reserved),
                r(0x10_0000, 0x20_0000, Usable),
            ]
        );
        assert_eq!(info.dropped_regions, 3);
        assert_eq!(info.usable_bytes(), 0x9fc00 + 0x20_0000);
    }

    #[test]
    fn normalise_overlaps_restrictive_wins() {
        let info = normalise(&[
            r(0, 0x10_0000, Usable),
            r(0x1000, 0x1000, AcpiReclaimable), // inside usable
            r(0x1800, 0x1000, AcpiNvs),         // straddles the reclaimable end
            r(0x8000, 0x1000, Reserved),
            r(0x8000, 0x1000, Usable), // identical range, weaker kind
            r(0x9000, 0x1000, Defective),
            r(0x9800, 0x1000, Reserved),          // over defective's tail
            r(0xf_f000, 0x2000, AcpiReclaimable), // runs past usable's end
        ]);
        assert_eq!(
            info.memory_map(),
            &[
                r(0, 0x1000, Usable),
                r(0x1000, 0x800, AcpiReclaimable),
                r(0x1800, 0x1000, AcpiNvs),
                r(0x2800, 0x5800, Usable),
                r(0x8000, 0x1000, Reserved),
                r(0x9000, 0x800, Defective),
                r(0x9800, 0x1000, Reserved),
                r(0xa800, 0xf_4800, Usable),
                r(0xf_f000, 0x2000, AcpiReclaimable),
            ]
        );
        assert_eq!(info.dropped_regions, 0);
        assert_invariants(&info);
    }

    #[test]
    fn normalise_clamps_at_top_and_keeps_gaps() {
        let info = normalise(&[
            r(u64::MAX - 0x1000, 0x5000, Usable),
            r(0x1000, 0x1000, Usable),
            r(0x3000, 0x1000, Usable), // gap at 0x2000 stays a gap
        ]);
        assert_eq!(
            info.memory_map(),
            &[
                r(0x1000, 0x1000, Usable),
                r(0x3000, 0x1000, Usable),
                r(u64::MAX - 0x1000, 0x1000, Usable),
            ]
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "hundreds of entries through a quadratic sweep: minutes under Miri"
    )]
    fn normalise_caps_output_and_counts() {
        // 200 alternating kinds: 200 output regions, 72 over the cap.
        let raw: Vec<MemoryRegion> = (0..200u64)
            .map(|i| {
                r(
                    i * 0x1000,
                    0x1000,
                    if i % 2 == 0 { Usable } else { Reserved },
                )
            })
            .collect();
        let info = normalise(&raw);
        assert_eq!(info.memory_map().len(), MAX_MEMORY_REGIONS);
        assert_eq!(info.dropped_regions, 200 - MAX_MEMORY_REGIONS);
        assert_eq!(info.memory_map(), &raw[..MAX_MEMORY_REGIONS]);
        // Same count of entries, all usable and touching: one region.
        let raw: Vec<MemoryRegion> = (0..200u64).map(|i| r(i * 0x1000, 0x1000, Usable)).collect();
        let info = normalise(&raw);
        assert_eq!(info.memory_map(), &[r(0, 200 * 0x1000, Usable)]);
        assert_eq!(info.dropped_regions, 0);
    }

    #[test]
    fn normalise_refuses_too_many_raw_entries() {
        let mut info = normalise(&[r(0, 0x1000, Usable)]);
        let raw = (0..MAX_RAW_MEMORY_ENTRIES as u64 + 1).map(|i| r(i * 0x2000, 0x1000, Usable));
        assert_eq!(
            info.set_memory_map(raw),
            Err(MemoryMapTooLarge {
                entries: MAX_RAW_MEMORY_ENTRIES + 1
            })
        );
        assert_eq!(info.memory_map(), &[r(0, 0x1000, Usable)], "unchanged");
    }

    /// Against a model: each unit address 0..48 gets the most restrictive kind covering it.
    #[test]
    fn normalise_matches_model() {
        let kinds = [Usable, AcpiReclaimable, AcpiNvs, Defective, Reserved];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Miri interprets every step: a few rounds there, many natively.
        for round in 0..if cfg!(miri) { 10 } else { 3000 } {
            let n = rng.below(12) as usize;
            let raw: Vec<MemoryRegion> = (0..n)
                .map(|_| r(rng.below(48), rng.below(12), kinds[rng.below(5) as usize]))
                .collect();
            let info = normalise(&raw);
            assert_invariants(&info);
            let mut model: [Option<MemoryKind>; 64] = [None; 64];
            for e in &raw {
                for slot in &mut model[e.start as usize..e.end() as usize] {
                    if slot.is_none_or(|k| k.restrictiveness() < e.kind.restrictiveness()) {
                        *slot = Some(e.kind);
                    }
                }
            }
            for (addr, want) in model.iter().enumerate() {
                let got = info
                    .memory_map()
                    .iter()
                    .find(|m| m.start <= addr as u64 && (addr as u64) < m.end())
                    .map(|m| m.kind);
                assert_eq!(got, *want, "round {round}, address {addr}, raw {raw:?}");
            }
            let empty = raw.iter().filter(|e| e.len == 0).count();
            assert_eq!(info.dropped_regions, empty);
        }
    }

    #[test]
    fn cmdline_and_name_are_cut() {
        let mut info = BootInfo::empty(Loader::Multiboot2);
        info.set_cmdline(b"log=debug\0garbage");
        assert_eq!(info.cmdline(), "log=debug");
        let long = vec![b'x'; MAX_CMDLINE + 10];
        info.set_cmdline(&long);
        assert_eq!(info.cmdline().len(), MAX_CMDLINE);
        info.set_loader_name(&[b'g'; 100]);
        assert_eq!(info.loader_name().len(), MAX_LOADER_NAME);
        // Invalid UTF-8 yields the valid prefix.
        info.set_cmdline(b"ok \xff\xfe rest");
        assert_eq!(info.cmdline(), "ok ");
        info.set_loader_name(b"");
        assert_eq!(info.loader_name(), "");
    }

    #[test]
    fn rsdp_v0_and_v2() {
        let v0 = rsdp(0, 0x7fe_2345, 0);
        let p = Rsdp::from_bytes(0xf5270, &v0).unwrap();
        assert_eq!((p.revision, p.len, p.rsdt_address()), (0, 20, 0x7fe_2345));
        assert_eq!(p.xsdt_address(), None);
        assert_eq!(p.oem_id(), b"BOCHS ");
        assert_eq!(p.as_bytes(), &v0[..]);
        assert_eq!(p.loader_address, 0xf5270);

        let v2 = rsdp(2, 0x7fe_2345, 0x7fe_3000);
        let p = Rsdp::from_bytes(0x1000, &v2).unwrap();
        assert_eq!((p.revision, p.len), (2, 36));
        assert_eq!(p.xsdt_address(), Some(0x7fe_3000));
        assert_eq!(p.as_bytes(), &v2[..]);
        // The v1 view of a v2 RSDP (multiboot2 tag 14 on UEFI): no XSDT.
        let p = Rsdp::from_v1_bytes(0x1000, &v2[..20]).unwrap();
        assert_eq!((p.revision, p.len, p.xsdt_address()), (2, 20, None));
        assert_eq!(p.rsdt_address(), 0x7fe_2345);
    }

    #[test]
    fn rsdp_errors() {
        let good = rsdp(2, 0x1234, 0x5678);
        assert_eq!(
            Rsdp::from_bytes(0, &good[..19]),
            Err(RsdpError::TooShort { len: 19 })
        );
        assert_eq!(
            Rsdp::from_bytes(0, &good[..30]),
            Err(RsdpError::TooShort { len: 30 })
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Rsdp::from_bytes(0, &bad), Err(RsdpError::BadSignature));
        let mut bad = good.clone();
        bad[16] ^= 1; // RSDT address: both checksums break, the first is reported
        assert_eq!(Rsdp::from_bytes(0, &bad), Err(RsdpError::BadChecksum));
        let mut bad = good.clone();
        bad[24] ^= 1; // XSDT address: only the extended checksum covers it
        assert_eq!(
            Rsdp::from_bytes(0, &bad),
            Err(RsdpError::BadExtendedChecksum)
        );
        assert!(Rsdp::from_v1_bytes(0, &bad).is_ok());
        let mut bad = good.clone();
        bad[20] = 20; // length below 36 (checksums no longer matter)
        assert_eq!(
            Rsdp::from_bytes(0, &bad),
            Err(RsdpError::BadLength { length: 20 })
        );
        assert_eq!(
            Rsdp::from_bytes(0, &[]),
            Err(RsdpError::TooShort { len: 0 })
        );
    }

    #[test]
    fn display_is_informative() {
        assert_eq!(
            RsdpError::BadChecksum.to_string(),
            "RSDP checksum (first 20 bytes) is not zero"
        );
        assert!(
            MemoryMapTooLarge { entries: 5000 }
                .to_string()
                .contains("5000")
        );
        assert_eq!(Loader::Pvh.to_string(), "PVH");
        assert_eq!(AcpiNvs.to_string(), "ACPI NVS");
    }
}
