//! Reading the loader's structures out of physical memory.
//!
//! The parsers never dereference an address themselves: every access goes through
//! [`PhysMemory::read`], which either hands back the whole requested range or `None`. The
//! kernel implements it over its identity-mapped low memory (and refuses anything outside the
//! RAM it can see); tests and captured fixtures use [`Snapshot`], a set of
//! `(physical address, bytes)` blobs. Either way a malformed length or address turns into a
//! `None`, and from there into a parser error, never into an out-of-bounds read.
//!
//! [`write_fixture`] prints the text form of a boot (the `loader` / `root` / `blob` /
//! `expect` lines read back by `boot/tests/fixtures.rs`), so the kernel can dump what its
//! loader gave it (the `dumpboot` command-line flag) and the dump becomes a host test.

#![forbid(unsafe_code)]
use core::fmt;

use crate::info::{BootInfo, Loader};

/// Read-only access to physical memory.
pub trait PhysMemory {
    /// The `len` bytes at physical address `paddr`, or `None` when any of them is not
    /// readable (outside the RAM the kernel can see, or `paddr + len` overflows).
    fn read(&self, paddr: u64, len: usize) -> Option<&[u8]>;
}

impl<T: PhysMemory + ?Sized> PhysMemory for &T {
    fn read(&self, paddr: u64, len: usize) -> Option<&[u8]> {
        (**self).read(paddr, len)
    }
}

/// Physical memory made of captured blobs: `(physical address, bytes)` pairs.
///
/// A read succeeds only when it lies entirely within one blob (blobs that happen to be
/// adjacent are not joined). An empty read succeeds at any address inside a blob or at its
/// end.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot<'a> {
    regions: &'a [(u64, &'a [u8])],
}

impl<'a> Snapshot<'a> {
    /// A snapshot of `regions`; they may be in any order and may overlap (the first blob that
    /// contains a whole read answers it).
    pub const fn new(regions: &'a [(u64, &'a [u8])]) -> Snapshot<'a> {
        Snapshot { regions }
    }

    /// The blobs.
    pub const fn regions(&self) -> &'a [(u64, &'a [u8])] {
        self.regions
    }
}

impl PhysMemory for Snapshot<'_> {
    fn read(&self, paddr: u64, len: usize) -> Option<&[u8]> {
        let len64 = u64::try_from(len).ok()?;
        let end = paddr.checked_add(len64)?;
        self.regions.iter().find_map(|&(base, bytes)| {
            let blob_end = base.checked_add(u64::try_from(bytes.len()).ok()?)?;
            if paddr < base || end > blob_end {
                return None;
            }
            let offset = usize::try_from(paddr - base).ok()?;
            bytes.get(offset..offset.checked_add(len)?)
        })
    }
}

/// Writes `info` and the memory it was parsed from in the fixture text format:
///
/// ```text
/// loader pvh                      (or: loader multiboot2)
/// root 0x<start_info or mbi address>
/// blob 0x<address> <hex bytes, no spaces>      (one per BootInfo::sources range)
/// expect cmdline=<rest of line>
/// expect usable_min_mib=<n>
/// expect usable_max_mib=<n>
/// expect rsdp_revision=<n>        (only when there is an RSDP)
/// expect regions_min=<n>
/// ```
///
/// A source range that `mem` cannot read is written as a `# unreadable` comment. A command
/// line containing a line break cannot be expressed; its `expect cmdline` line is left out.
pub fn write_fixture<W: fmt::Write>(
    out: &mut W,
    info: &BootInfo,
    mem: &impl PhysMemory,
) -> fmt::Result {
    let loader = match info.loader {
        Loader::Pvh => "pvh",
        Loader::Multiboot2 => "multiboot2",
    };
    writeln!(out, "loader {loader}")?;
    writeln!(out, "root {:#x}", info.raw_address)?;
    for &(start, len) in info.sources() {
        match usize::try_from(len).ok().and_then(|l| mem.read(start, l)) {
            Some(bytes) => {
                write!(out, "blob {start:#x} ")?;
                for b in bytes {
                    write!(out, "{b:02x}")?;
                }
                writeln!(out)?;
            }
            None => writeln!(out, "# unreadable {start:#x} {len:#x}")?,
        }
    }
    let cmdline = info.cmdline();
    if !cmdline.contains(['\n', '\r']) {
        writeln!(out, "expect cmdline={cmdline}")?;
    }
    const MIB: u64 = 1 << 20;
    let usable = info.usable_bytes();
    writeln!(out, "expect usable_min_mib={}", usable / MIB)?;
    writeln!(out, "expect usable_max_mib={}", usable.div_ceil(MIB))?;
    if let Some(rsdp) = &info.rsdp {
        writeln!(out, "expect rsdp_revision={}", rsdp.revision)?;
    }
    writeln!(out, "expect regions_min={}", info.memory_map().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_within_one_blob() {
        let a = [1u8, 2, 3, 4];
        let b = [5u8, 6];
        let regions = [(0x1000, &a[..]), (0x1004, &b[..])];
        let mem = Snapshot::new(&regions);
        assert_eq!(mem.read(0x1000, 4), Some(&a[..]));
        assert_eq!(mem.read(0x1001, 2), Some(&a[1..3]));
        assert_eq!(mem.read(0x1004, 2), Some(&b[..]));
        // Adjacent blobs are not joined.
        assert_eq!(mem.read(0x1003, 2), None);
        assert_eq!(mem.read(0x0fff, 1), None);
        assert_eq!(mem.read(0x1006, 1), None);
        assert_eq!(mem.read(0x1004, 0), Some(&[][..]));
        assert_eq!(mem.read(0x1006, 0), Some(&[][..]));
        assert_eq!(mem.read(0x2000, 0), None);
    }

    #[test]
    fn snapshot_survives_overflow() {
        // A blob ending at u64::MAX (exclusive); its end cannot go further.
        let a = [0u8; 15];
        let regions = [(u64::MAX - 15, &a[..])];
        let mem = Snapshot::new(&regions);
        assert_eq!(mem.read(u64::MAX - 15, 16), None, "end would be 2^64");
        assert_eq!(mem.read(u64::MAX - 14, 15), None, "end would be 2^64");
        assert_eq!(mem.read(u64::MAX - 15, 15).map(<[u8]>::len), Some(15));
        assert_eq!(mem.read(u64::MAX, usize::MAX), None);
        assert_eq!(Snapshot::new(&[]).read(0, 0), None);
    }
}
