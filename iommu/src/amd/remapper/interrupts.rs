//! Interrupt remapping over every AMD-Vi unit (§2.2.5): one table per requester that was
//! given an entry, a shared all-zero table for every other requester.
//!
//! Design note. On AMD-Vi the table is chosen by the requester's device table entry, so
//! the isolation is per requester: [`AmdRemapper::set_interrupt`] writes an entry in the
//! table of that requester ID only, and a message from any other requester naming the same
//! index reads its own table. Turning remapping on points *every* device table entry the
//! units cover (and the I/O APICs' IDs) at a table: a requester nobody gave an entry points
//! at the shared zero table, where every index is refused. Leaving such a requester with
//! IV = 0 would let its messages through untouched, which is exactly what remapping is
//! meant to stop.
//!
//! Each change is followed by INVALIDATE_INTERRUPT_TABLE for the requester (and
//! INVALIDATE_DEVTAB_ENTRY when its entry now names another table), then a completion
//! wait: after `Ok` the unit no longer delivers through what was cleared. A table no
//! requester points at any more is given back only after the unit confirmed; when it does
//! not, the page is leaked (counted by [`AmdRemapper::leaked_pages`]) rather than reused
//! while the unit may still read it.

use alloc::vec::Vec;

use super::AmdRemapper;
use crate::amd::command;
use crate::amd::dte;
use crate::amd::intremap::{self, ENTRIES, ENTRIES_LOG2, REMAP_EN};
use crate::intremap::Target;
use crate::memory::TableMemory;
use crate::pagetable::MapError;
use crate::remapper::{RemapError, Source};
use crate::unit::{Registers, UnitError};

/// Requesters with a table of their own before the list grows: made with this room, so that
/// functions coming and going (hot-plug) do not grow the heap, which returns exactly to
/// where it was (as the VT-d remapper's domain list).
const TABLES: usize = 128;

/// What the remapper holds for interrupt remapping.
///
/// # Invariants
/// While `on`, every device table entry of every ID of `AmdRemapper::interrupt_ids` has
/// IV = 1 and names the table of `tables` for its requester, else `zero`. Every page here
/// (tables, `zero`, `pending`) came from the remapper's memory; `pending` pages are named
/// by no entry but a stopped unit may still hold them cached.
pub(super) struct Interrupts {
    on: bool,
    /// The shared all-zero table (0: none).
    zero: u64,
    /// Each requester's own table.
    tables: Vec<(Source, u64)>,
    /// Requesters outside every unit's ranges whose entries are remapped too (I/O APICs).
    extra: Vec<Source>,
    /// Given back after the next [`AmdRemapper::enable`] invalidated everything.
    pending: Vec<u64>,
    leaked: usize,
}

impl Default for Interrupts {
    fn default() -> Interrupts {
        Interrupts {
            on: false,
            zero: 0,
            tables: Vec::with_capacity(TABLES),
            extra: Vec::new(),
            pending: Vec::new(),
            leaked: 0,
        }
    }
}

impl<R: Registers, M: TableMemory> AmdRemapper<R, M> {
    /// Turns interrupt remapping on in every unit (all or none): from now on every device
    /// table entry of every requester ID the units cover, and of each of `extra` (the I/O
    /// APICs' IDs from the IVRS special entries, which may lie outside the ranges), has
    /// IV = 1 and IntCtl = remapped, pointing at that requester's table; a requester with no
    /// entry set points at one shared all-zero table, so nothing it sends passes. DMA
    /// fields (V, TV, mode, root, domain) are kept as they are. Invalidates
    /// (INVALIDATE_IOMMU_ALL when EFR.IASup, else per entry and INVALIDATE_INTERRUPT_TABLE)
    /// and waits. While translation is off the entries take effect at the next
    /// [`AmdRemapper::enable`]. On an error every entry is back to IV = 0.
    pub fn enable_interrupt_remapping(&mut self, extra: &[Source]) -> Result<(), RemapError> {
        for s in extra {
            if !self.units.iter().any(|u| u.segment == s.segment)
                || u32::from(s.id()) >= self.entries()
            {
                return Err(UnitError::Unsupported(
                    "an I/O APIC requester ID inside a unit's device table",
                )
                .into());
            }
        }
        if self.irq.zero == 0 {
            self.irq.zero = self.memory.alloc_page().ok_or(MapError::OutOfMemory)?;
        }
        let was_on = self.irq.on;
        for s in extra {
            if !self.irq.extra.contains(s) {
                self.irq.extra.push(*s);
            }
        }
        self.irq.on = true;
        let mut result = Ok(());
        for unit in 0..self.units.len() {
            result = result.and(self.rewrite_unit(unit, false));
        }
        if result.is_err() && !was_on {
            let _ = self.disable_interrupt_remapping();
        }
        result
    }

    /// Back to IV = 0 everywhere (interrupt messages pass through as they are); the tables
    /// are given back once every unit confirmed, else leaked. The first unit that does not
    /// answer is the error; the others are still asked.
    pub fn disable_interrupt_remapping(&mut self) -> Result<(), RemapError> {
        if !self.irq.on && self.irq.zero == 0 {
            return Ok(());
        }
        let mut result = Ok(());
        for unit in 0..self.units.len() {
            result = result.and(self.rewrite_unit(unit, true));
        }
        self.irq.on = false;
        self.irq.extra.clear();
        let mut pages: Vec<u64> = self.irq.tables.drain(..).map(|(_, p)| p).collect();
        if self.irq.zero != 0 {
            pages.push(core::mem::take(&mut self.irq.zero));
        }
        self.let_go(pages, result.is_ok());
        result
    }

    /// Whether interrupts are remapped.
    pub fn remaps_interrupts(&self) -> bool {
        self.irq.on
    }

    /// Entry `index` (< 256) of `requester`'s table delivers `target` (fixed, physical;
    /// the destination APIC ID below 256; `target.level` is not part of the entry, the
    /// message keeps its own trigger mode). Gives the requester its own table (one page) on
    /// first use and points its device table entry at it. Invalidates the requester's
    /// interrupt table (and its device table entry when it changed) and waits. Only this
    /// requester ID changes: the IDs its messages may carry instead are set one by one.
    pub fn set_interrupt(
        &mut self,
        requester: Source,
        index: u16,
        target: Target,
    ) -> Result<(), RemapError> {
        let units = self.interrupt_units(requester, index)?;
        let value = intremap::entry(target)?;
        let id = requester.id();
        let mut commands = Vec::new();
        let page = match self.table_of(requester) {
            Some(page) => page,
            None => {
                let page = self.memory.alloc_page().ok_or(MapError::OutOfMemory)?;
                self.irq.tables.push((requester, page));
                commands.push(command::invalidate_devtab_entry(id));
                page
            }
        };
        // The entry first, then (for a new table) the device table entry naming it.
        intremap::write(&self.memory, page, index, value);
        if !commands.is_empty() {
            for &unit in &units {
                let table = self.units[unit].device_table;
                dte::write_interrupts(&self.memory, table, id, dte::remapped(page, ENTRIES_LOG2));
            }
        }
        commands.push(command::invalidate_interrupt_table(id));
        self.sync_units(&units, &commands)
    }

    /// Clears entry `index` of `requester`'s table: a message from `requester` naming it is
    /// refused from now on. Invalidated even when already clear (an earlier clear whose
    /// invalidation failed may have left the unit holding it). A table left with no entry
    /// goes back to the shared zero table, and its page is given back once the unit
    /// confirmed.
    pub fn clear_interrupt(&mut self, requester: Source, index: u16) -> Result<(), RemapError> {
        let units = self.interrupt_units(requester, index)?;
        let id = requester.id();
        let Some(t) = self.irq.tables.iter().position(|(s, _)| *s == requester) else {
            return self.sync_units(&units, &[command::invalidate_interrupt_table(id)]);
        };
        let page = self.irq.tables[t].1;
        intremap::write(&self.memory, page, index, 0);
        if (0..ENTRIES).any(|i| intremap::read(&self.memory, page, i) & REMAP_EN != 0) {
            return self.sync_units(&units, &[command::invalidate_interrupt_table(id)]);
        }
        self.irq.tables.swap_remove(t);
        let zero = dte::remapped(self.irq.zero, ENTRIES_LOG2);
        for &unit in &units {
            dte::write_interrupts(&self.memory, self.units[unit].device_table, id, zero);
        }
        let commands = [
            command::invalidate_devtab_entry(id),
            command::invalidate_interrupt_table(id),
        ];
        let result = self.sync_units(&units, &commands);
        self.let_go(alloc::vec![page], result.is_ok());
        result
    }

    /// The raw entry `index` of `requester`'s table, when present (RemapEn set).
    pub fn interrupt_entry(&self, requester: Source, index: u16) -> Option<u32> {
        if index >= ENTRIES {
            return None;
        }
        let page = self.table_of(requester)?;
        let value = intremap::read(&self.memory, page, index);
        (value & REMAP_EN != 0).then_some(value)
    }

    /// Every present entry: (requester, index, raw entry), by requester and index.
    pub fn interrupt_entries(&self) -> Vec<(Source, u16, u32)> {
        let mut tables = self.irq.tables.clone();
        tables.sort();
        let mut out = Vec::new();
        for (requester, page) in tables {
            for index in 0..ENTRIES {
                let value = intremap::read(&self.memory, page, index);
                if value & REMAP_EN != 0 {
                    out.push((requester, index, value));
                }
            }
        }
        out
    }

    /// Pages held for interrupt remapping (tables, the zero table, pages waiting to be
    /// given back).
    pub(super) fn interrupt_table_pages(&self) -> usize {
        self.irq.tables.len() + usize::from(self.irq.zero != 0) + self.irq.pending.len()
    }

    /// Pages leaked because a unit did not confirm it forgot them.
    pub(super) fn interrupt_leaked_pages(&self) -> usize {
        self.irq.leaked
    }

    /// After every unit invalidated everything ([`AmdRemapper::enable`]).
    pub(super) fn free_pending_interrupt_tables(&mut self) {
        for page in core::mem::take(&mut self.irq.pending) {
            self.memory.free_page(page);
        }
    }

    fn table_of(&self, requester: Source) -> Option<u64> {
        self.irq
            .tables
            .iter()
            .find(|(s, _)| *s == requester)
            .map(|&(_, page)| page)
    }

    /// Whether `unit` holds the device table entry `id` of `segment` gets remapped through:
    /// an ID of its ranges, an ID they alias to, or one of the extra requesters; never the
    /// unit's own ID.
    fn holds(&self, unit: usize, segment: u16, id: u16) -> bool {
        let state = &self.units[unit];
        state.segment == segment
            && id != state.iommu_id
            && u32::from(id) < self.entries()
            && (state
                .ranges
                .iter()
                .any(|r| (r.first..=r.last).contains(&id) || r.alias == Some(id))
                || self
                    .irq
                    .extra
                    .iter()
                    .any(|s| s.segment == segment && s.id() == id))
    }

    /// Every ID of `unit` whose entry [`Self::holds`].
    fn interrupt_ids(&self, unit: usize) -> Vec<u16> {
        let segment = self.units[unit].segment;
        (0..self.entries())
            .map(|id| id as u16)
            .filter(|&id| self.holds(unit, segment, id))
            .collect()
    }

    /// The units whose device table holds `requester`'s entry, for entry `index`.
    fn interrupt_units(&self, requester: Source, index: u16) -> Result<Vec<usize>, RemapError> {
        if index >= ENTRIES {
            return Err(UnitError::Unsupported("an interrupt remapping entry that high").into());
        }
        if !self.irq.on {
            return Err(RemapError::NoInterruptTable);
        }
        let units: Vec<usize> = (0..self.units.len())
            .filter(|&u| self.holds(u, requester.segment, requester.id()))
            .collect();
        if units.is_empty() {
            return Err(RemapError::NoInterruptTable);
        }
        Ok(units)
    }

    /// Writes the interrupt half of every entry `unit` holds: remapped through the
    /// requester's table (or the zero table), or with `clear` back to IV = 0; then
    /// invalidates them and waits.
    fn rewrite_unit(&mut self, unit: usize, clear: bool) -> Result<(), RemapError> {
        let ids = self.interrupt_ids(unit);
        let (table, segment) = (self.units[unit].device_table, self.units[unit].segment);
        for &id in &ids {
            let qword = if clear {
                0
            } else {
                let requester = Source {
                    segment,
                    bus: (id >> 8) as u8,
                    devfn: id as u8,
                };
                let page = self.table_of(requester).unwrap_or(self.irq.zero);
                dte::remapped(page, ENTRIES_LOG2)
            };
            dte::write_interrupts(&self.memory, table, id, qword);
        }
        let commands: Vec<[u64; 2]> = if self.units[unit].unit.invalidate_all_supported() {
            alloc::vec![command::invalidate_all()]
        } else {
            ids.iter()
                .flat_map(|&id| {
                    [
                        command::invalidate_devtab_entry(id),
                        command::invalidate_interrupt_table(id),
                    ]
                })
                .collect()
        };
        self.sync(unit, &commands)
    }

    /// Runs `commands` at each of `units`; the first error is returned, the others are still
    /// asked.
    fn sync_units(&mut self, units: &[usize], commands: &[[u64; 2]]) -> Result<(), RemapError> {
        let mut result = Ok(());
        for &unit in units {
            result = result.and(self.sync(unit, commands));
        }
        result
    }

    /// Pages no entry names any more: given back when the units `confirmed` they forgot
    /// them, kept for the next [`AmdRemapper::enable`] while translation is off, else leaked.
    fn let_go(&mut self, pages: Vec<u64>, confirmed: bool) {
        if !self.enabled {
            self.irq.pending.extend(pages);
        } else if confirmed {
            for page in pages {
                self.memory.free_page(page);
            }
        } else {
            self.irq.leaked += pages.len();
        }
    }
}
