//! Interrupt remapping over every unit (VT-d §5.1): one table per unit, entries written and
//! forgotten one at a time.
//!
//! Design note. The kernel names entries by *index*; it uses the vector as the index (one
//! CPU takes device interrupts, and each vector has one owner at a time), so an entry
//! lives exactly as long as its vector's allocation: written when a message for the vector
//! is made, cleared when the vector goes back. Each change is followed by an interrupt
//! entry cache invalidation of that index through the unit's queue, so no unit delivers
//! through an entry the kernel already cleared.
//!
//! Turning remapping on is all or nothing: every unit must have interrupt remapping and
//! queued invalidation. A unit left out would deliver its devices' compatibility-format
//! messages unchecked, and one that refuses them would silence its devices.

use super::{RemapError, Remapper};
use crate::intremap::{self, SourceCheck, Target};
use crate::memory::TableMemory;
use crate::unit::{Registers, UnitError};

/// Entries in each unit's table: one page (16 bytes each), indexes 0..=255.
pub const INTERRUPT_ENTRIES: u16 = 256;
/// IRTA.S for [`INTERRUPT_ENTRIES`]: 2^(S + 1) entries.
const SIZE: u8 = 7;

impl<R: Registers, M: TableMemory> Remapper<R, M> {
    /// Turns interrupt remapping on in every unit, with empty tables: from then on a
    /// message reaches a processor only through an entry [`Remapper::set_interrupt`] wrote.
    /// `x2apic`: destinations are 32-bit x2APIC IDs (EIME; needs ECAP.EIM on every unit);
    /// otherwise they are 8-bit APIC IDs, which an x2APIC with an ID below 256 receives too.
    /// Call after [`Remapper::enable`]. On an error every unit is left with interrupt
    /// remapping and queued invalidation off, and interrupts keep the compatibility format.
    pub fn enable_interrupt_remapping(&mut self, x2apic: bool) -> Result<(), RemapError> {
        if self.interrupts {
            return Ok(());
        }
        for state in &self.units {
            if !state.unit.can_remap_interrupts() {
                return Err(UnitError::Unsupported(
                    "interrupt remapping with queued invalidation (ECAP.IR, ECAP.QI)",
                )
                .into());
            }
            if x2apic && !state.unit.extended_interrupt_mode() {
                return Err(UnitError::Unsupported(
                    "x2APIC destinations in interrupt remapping (ECAP.EIM)",
                )
                .into());
            }
        }
        let result = self.start_interrupt_remapping(x2apic);
        if result.is_err() {
            for state in &mut self.units {
                // A unit whose queue could not be stopped may still fetch from its pages:
                // they are leaked, never reused.
                let stopped = state.unit.take_over().is_ok();
                for page in [&mut state.queue, &mut state.status, &mut state.irq_table] {
                    if *page != 0 && stopped {
                        self.memory.free_page(*page);
                    }
                    *page = 0;
                }
            }
        }
        result
    }

    fn start_interrupt_remapping(&mut self, x2apic: bool) -> Result<(), RemapError> {
        for i in 0..self.units.len() {
            for _ in 0..3 {
                let page = self
                    .memory
                    .alloc_page()
                    .ok_or(crate::pagetable::MapError::OutOfMemory)?;
                let state = &mut self.units[i];
                if state.queue == 0 {
                    state.queue = page;
                } else if state.status == 0 {
                    state.status = page;
                } else {
                    state.irq_table = page;
                }
            }
            let state = &self.units[i];
            if !state.unit.coherent() {
                self.memory.flush(state.irq_table, crate::PAGE);
            }
            // The context cache and IOTLB invalidations go through the queue from here on.
            state.unit.enable_queue(state.queue, state.status)?;
            state
                .unit
                .enable_interrupt_remapping(&self.memory, state.irq_table, SIZE, x2apic)?;
        }
        self.interrupts = true;
        self.eime = x2apic;
        Ok(())
    }

    /// Turns interrupt remapping off in every unit (the queues stay on, the tables stay
    /// allocated until the remapper goes): for when remapped interrupts are found not to
    /// arrive. The first unit that does not answer is the error; the others are still
    /// asked.
    pub fn disable_interrupt_remapping(&mut self) -> Result<(), RemapError> {
        let mut result = Ok(());
        for state in &self.units {
            if let Err(e) = state.unit.disable_interrupt_remapping() {
                result = result.and(Err(e.into()));
            }
        }
        if result.is_ok() {
            self.interrupts = false;
        }
        result
    }

    /// Whether every unit can take 32-bit (x2APIC) destinations (ECAP.EIM).
    pub fn extended_interrupt_mode(&self) -> bool {
        self.units.iter().all(|s| s.unit.extended_interrupt_mode())
    }

    /// Whether the entries hold 32-bit destinations (EIME).
    pub fn extended_destinations(&self) -> bool {
        self.eime
    }

    /// Whether interrupts are remapped.
    pub fn remaps_interrupts(&self) -> bool {
        self.interrupts
    }

    fn entry_at(&self, unit: usize, index: u16) -> Result<u64, RemapError> {
        let state = self.units.get(unit).ok_or(RemapError::NoInterruptTable)?;
        if !self.interrupts || state.irq_table == 0 {
            return Err(RemapError::NoInterruptTable);
        }
        if index >= INTERRUPT_ENTRIES {
            return Err(UnitError::Unsupported("an interrupt remapping entry that high").into());
        }
        Ok(state.irq_table + 16 * u64::from(index))
    }

    /// Writes entry `index` of `unit`'s table: messages naming it from requesters that pass
    /// `check` deliver `target`. The unit forgets what it cached for the index.
    pub fn set_interrupt(
        &mut self,
        unit: usize,
        index: u16,
        target: Target,
        check: SourceCheck,
    ) -> Result<(), RemapError> {
        let at = self.entry_at(unit, index)?;
        let [low, high] = intremap::entry(target, check, self.eime);
        // Not present while the high half changes, then the low half with P: the unit never
        // uses half of an old entry with half of a new one.
        self.memory.write(at, 0);
        self.memory.write(at + 8, high);
        self.memory.write(at, low);
        let u = &self.units[unit].unit;
        if !u.coherent() {
            self.memory.flush(at, 16);
        }
        u.invalidate_interrupt_entries(&self.memory, Some(index))?;
        Ok(())
    }

    /// Clears entry `index` of `unit`'s table and makes the unit forget it: a message naming
    /// it is refused (and recorded) from now on.
    pub fn clear_interrupt(&mut self, unit: usize, index: u16) -> Result<(), RemapError> {
        let at = self.entry_at(unit, index)?;
        // Invalidated even when the entry already reads as clear: an earlier clear whose
        // invalidation failed may have left the unit holding it.
        self.memory.write(at, 0);
        self.memory.write(at + 8, 0);
        let u = &self.units[unit].unit;
        if !u.coherent() {
            self.memory.flush(at, 16);
        }
        u.invalidate_interrupt_entries(&self.memory, Some(index))?;
        Ok(())
    }

    /// Entry `index` of `unit`'s table as written (low, high), if present.
    pub fn interrupt_entry(&self, unit: usize, index: u16) -> Option<[u64; 2]> {
        let at = self.entry_at(unit, index).ok()?;
        let low = self.memory.read(at);
        (low & 1 != 0).then(|| [low, self.memory.read(at + 8)])
    }

    pub(super) fn present_interrupt_entries(&self) -> usize {
        if !self.interrupts {
            return 0;
        }
        (0..self.units.len())
            .map(|u| {
                (0..INTERRUPT_ENTRIES)
                    .filter(|&i| self.interrupt_entry(u, i).is_some())
                    .count()
            })
            .sum()
    }
}
