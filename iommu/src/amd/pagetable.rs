//! [`IoPageTable`]: one domain's host I/O page table in the AMD-Vi v1 format (§2.2.3),
//! 4 KiB identity mappings only.
//!
//! Design note. As for VT-d ([`crate::pagetable`]): a domain maps exactly its function's
//! DMA pages at their physical address; intermediate tables are made on the first mapping
//! below them and kept until the domain is destroyed. Each entry is one qword store, the
//! leaf last, so a unit walking concurrently sees the old entry or the new one. The unit ANDs
//! the IR/IW bits of every level, so directory entries carry both and only the leaf decides.
//! AMD-Vi units snoop the processor's caches on table reads, so nothing is flushed.

use alloc::vec::Vec;

use crate::memory::{PAGE, TableMemory};
use crate::pagetable::MapError;

/// PTE/PDE.PR (0): present.
pub const PR: u64 = 1 << 0;
/// PDE.NextLevel (11:9): the level of the table the entry points to; 0 in a leaf PTE
/// (7 would mean a large page, which this code never writes).
pub const NEXT_LEVEL_SHIFT: u64 = 9;
pub const NEXT_LEVEL_MASK: u64 = 7 << NEXT_LEVEL_SHIFT;
/// Address (51:12).
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// IR (61), IW (62): read and write permission.
pub const IR: u64 = 1 << 61;
pub const IW: u64 = 1 << 62;

/// A directory entry pointing at the table `next` of level `next_level`.
pub fn directory_entry(next: u64, next_level: u8) -> u64 {
    PR | u64::from(next_level) << NEXT_LEVEL_SHIFT | (next & ADDRESS_MASK) | IR | IW
}

/// A leaf entry mapping the 4 KiB page at `page`, readable and writable.
pub fn leaf_entry(page: u64) -> u64 {
    PR | (page & ADDRESS_MASK) | IR | IW
}

/// An I/O page table of `levels` levels (3: 39-bit, 4: 48-bit addresses).
///
/// # Invariants
/// `root` and every page in `tables` came from the memory given to [`IoPageTable::new`] and
/// are owned by this table alone; [`IoPageTable::destroy`] gives them back, which only the
/// owner of the domain may call, after no device table entry leads here and the unit
/// confirmed it forgot every translation made through it. Dropping the table without
/// `destroy` leaks its pages (they are never reused), which is what a unit that did not
/// confirm calls for.
pub struct IoPageTable {
    root: u64,
    levels: u8,
    tables: Vec<u64>,
}

impl IoPageTable {
    /// An empty table: no page reachable.
    pub fn new(memory: &dyn TableMemory, levels: u8) -> Result<IoPageTable, MapError> {
        let root = memory.alloc_page().ok_or(MapError::OutOfMemory)?;
        Ok(IoPageTable {
            root,
            levels,
            tables: Vec::new(),
        })
    }

    /// Physical address of the top table (the device table entry's root pointer).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Levels (the device table entry's Mode).
    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// Table pages in use besides the root.
    pub fn table_pages(&self) -> usize {
        self.tables.len()
    }

    fn index(address: u64, level: u8) -> u64 {
        (address >> (12 + 9 * u64::from(level - 1))) & 0x1ff
    }

    fn check(&self, address: u64) -> Result<(), MapError> {
        let bits = 12 + 9 * u32::from(self.levels);
        if bits < 64 && address >> bits != 0 {
            return Err(MapError::TooHigh(address));
        }
        Ok(())
    }

    /// The level-1 table on the way to `address`, made if `make`.
    fn leaf_table(
        &mut self,
        memory: &dyn TableMemory,
        address: u64,
        make: bool,
    ) -> Result<Option<u64>, MapError> {
        let mut table = self.root;
        for level in (2..=self.levels).rev() {
            let slot = table + 8 * Self::index(address, level);
            let entry = memory.read(slot);
            table = if entry & PR != 0 {
                if (entry & NEXT_LEVEL_MASK) >> NEXT_LEVEL_SHIFT != u64::from(level - 1) {
                    return Err(MapError::Corrupt(address));
                }
                entry & ADDRESS_MASK
            } else if make {
                let next = memory.alloc_page().ok_or(MapError::OutOfMemory)?;
                self.tables.push(next);
                // Zeroed: reaches nothing until this entry points at it.
                memory.write(slot, directory_entry(next, level - 1));
                next
            } else {
                return Ok(None);
            };
        }
        Ok(Some(table))
    }

    /// Maps the 4 KiB page at `address` to itself, readable and writable.
    pub fn map(&mut self, memory: &dyn TableMemory, address: u64) -> Result<(), MapError> {
        let address = address & !(PAGE - 1);
        self.check(address)?;
        let table = self
            .leaf_table(memory, address, true)?
            .ok_or(MapError::OutOfMemory)?;
        let slot = table + 8 * Self::index(address, 1);
        if memory.read(slot) & PR != 0 {
            return Err(MapError::AlreadyMapped(address));
        }
        memory.write(slot, leaf_entry(address));
        Ok(())
    }

    /// Removes the mapping of the page at `address`; whether there was one. The unit may
    /// still hold the translation: the caller invalidates before the page is reused.
    pub fn unmap(&mut self, memory: &dyn TableMemory, address: u64) -> bool {
        let address = address & !(PAGE - 1);
        if self.check(address).is_err() {
            return false;
        }
        let Ok(Some(table)) = self.leaf_table(memory, address, false) else {
            return false;
        };
        let slot = table + 8 * Self::index(address, 1);
        if memory.read(slot) & PR == 0 {
            return false;
        }
        memory.write(slot, 0);
        true
    }

    /// Where the device's access to `address` goes, as the unit would walk this table.
    pub fn translate(&self, memory: &dyn TableMemory, address: u64) -> Option<u64> {
        self.check(address).ok()?;
        let mut table = self.root;
        for level in (2..=self.levels).rev() {
            let entry = memory.read(table + 8 * Self::index(address, level));
            if entry & PR == 0 {
                return None;
            }
            table = entry & ADDRESS_MASK;
        }
        let entry = memory.read(table + 8 * Self::index(address, 1));
        (entry & PR != 0).then_some((entry & ADDRESS_MASK) | (address & (PAGE - 1)))
    }

    /// Gives every table page back (see the invariants for when).
    pub fn destroy(self, memory: &dyn TableMemory) {
        for page in self.tables {
            memory.free_page(page);
        }
        memory.free_page(self.root);
    }
}
