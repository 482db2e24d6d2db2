//! [`PageTable`]: one domain's second-level page table (VT-d §9.8), 4 KiB mappings only.
//!
//! Design note. A domain maps exactly the pages its device may reach, at their physical
//! address (the bus address a driver gives the device is the page's physical address, as
//! without remapping, so nothing above this layer changes). Intermediate tables are made on
//! the first mapping below them and kept until the domain is destroyed: a domain's mappings
//! are its function's DMA memory, which is bounded and reused (`pci::parking`), so the tables
//! stay small. Every entry is written as one qword store, leaf last, so a unit walking the
//! table concurrently sees either the old entry or the new one, and table writes are flushed
//! from the processor's cache for a unit that does not snoop it.

use alloc::vec::Vec;

use crate::entries::{ADDRESS_MASK, PAGE_SIZE, READ, WRITE, second_level_entry};
use crate::memory::{PAGE, TableMemory};

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No page for a table.
    OutOfMemory,
    /// The address is beyond what the table's levels translate.
    TooHigh(u64),
    /// The page is already mapped (a region mapped twice: a bookkeeping bug above).
    AlreadyMapped(u64),
    /// An entry the table holds is a large page, which this code never writes: the table
    /// was changed behind its back.
    Corrupt(u64),
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::OutOfMemory => f.write_str("no memory for a remapping table"),
            MapError::TooHigh(a) => write!(f, "address {a:#x} beyond the domain's address width"),
            MapError::AlreadyMapped(a) => write!(f, "page {a:#x} already mapped"),
            MapError::Corrupt(a) => write!(f, "unexpected large-page entry on the way to {a:#x}"),
        }
    }
}

/// A second-level page table of `levels` levels (3: 39-bit, 4: 48-bit addresses).
///
/// # Invariants
/// `root` and every page in `tables` were allocated from the memory passed to
/// [`PageTable::new`] and are owned by this table alone; [`PageTable::destroy`] gives them
/// back, after which no unit may refer to them (the caller detaches the domain first).
pub struct PageTable {
    root: u64,
    levels: u8,
    tables: Vec<u64>,
}

impl PageTable {
    /// An empty table (no page reachable).
    pub fn new(memory: &dyn TableMemory, levels: u8) -> Result<PageTable, MapError> {
        let root = memory.alloc_page().ok_or(MapError::OutOfMemory)?;
        Ok(PageTable {
            root,
            levels,
            tables: Vec::new(),
        })
    }

    /// Physical address of the top-level table (the context entry's SLPTPTR).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Levels.
    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// Table pages in use besides the root.
    pub fn table_pages(&self) -> usize {
        self.tables.len()
    }

    fn index(&self, address: u64, level: u8) -> u64 {
        (address >> (12 + 9 * u64::from(level - 1))) & 0x1ff
    }

    fn check(&self, address: u64) -> Result<(), MapError> {
        let bits = crate::entries::address_bits(self.levels);
        if bits < 64 && address >> bits != 0 {
            return Err(MapError::TooHigh(address));
        }
        Ok(())
    }

    /// Maps the 4 KiB page at `address` to itself, readable and writable by the device.
    pub fn map(
        &mut self,
        memory: &dyn TableMemory,
        coherent: bool,
        address: u64,
    ) -> Result<(), MapError> {
        let address = address & !(PAGE - 1);
        self.check(address)?;
        let mut table = self.root;
        for level in (2..=self.levels).rev() {
            let slot = table + 8 * self.index(address, level);
            let entry = memory.read(slot);
            if entry & PAGE_SIZE != 0 {
                return Err(MapError::Corrupt(address));
            }
            table = if entry & (READ | WRITE) != 0 {
                entry & ADDRESS_MASK
            } else {
                let next = memory.alloc_page().ok_or(MapError::OutOfMemory)?;
                self.tables.push(next);
                // The new table is zeroed and reaches nothing until this entry points at it.
                if !coherent {
                    memory.flush(next, PAGE);
                }
                memory.write(slot, second_level_entry(next));
                if !coherent {
                    memory.flush(slot, 8);
                }
                next
            };
        }
        let slot = table + 8 * self.index(address, 1);
        if memory.read(slot) & (READ | WRITE) != 0 {
            return Err(MapError::AlreadyMapped(address));
        }
        memory.write(slot, second_level_entry(address));
        if !coherent {
            memory.flush(slot, 8);
        }
        Ok(())
    }

    /// Removes the mapping of the page at `address`; whether there was one. The unit may
    /// still hold the translation in its IOTLB: the caller invalidates before the page is
    /// reused.
    pub fn unmap(&mut self, memory: &dyn TableMemory, coherent: bool, address: u64) -> bool {
        let address = address & !(PAGE - 1);
        if self.check(address).is_err() {
            return false;
        }
        let mut table = self.root;
        for level in (2..=self.levels).rev() {
            let entry = memory.read(table + 8 * self.index(address, level));
            if entry & (READ | WRITE) == 0 || entry & PAGE_SIZE != 0 {
                return false;
            }
            table = entry & ADDRESS_MASK;
        }
        let slot = table + 8 * self.index(address, 1);
        if memory.read(slot) & (READ | WRITE) == 0 {
            return false;
        }
        memory.write(slot, 0);
        if !coherent {
            memory.flush(slot, 8);
        }
        true
    }

    /// Where the device's access to `address` goes, as the unit would walk this table.
    pub fn translate(&self, memory: &dyn TableMemory, address: u64) -> Option<u64> {
        self.check(address).ok()?;
        let mut table = self.root;
        for level in (2..=self.levels).rev() {
            let entry = memory.read(table + 8 * self.index(address, level));
            if entry & (READ | WRITE) == 0 || entry & PAGE_SIZE != 0 {
                return None;
            }
            table = entry & ADDRESS_MASK;
        }
        let entry = memory.read(table + 8 * self.index(address, 1));
        (entry & (READ | WRITE) != 0).then_some((entry & ADDRESS_MASK) | (address & (PAGE - 1)))
    }

    /// Gives every table page back. The domain must be detached from every context entry
    /// and the unit's caches invalidated first.
    pub fn destroy(self, memory: &dyn TableMemory) {
        for page in self.tables {
            memory.free_page(page);
        }
        memory.free_page(self.root);
    }
}
