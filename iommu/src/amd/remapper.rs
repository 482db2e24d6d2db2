//! [`AmdRemapper`]: every AMD-Vi unit of the machine, their device tables, and one domain per
//! isolated PCI function (the rules are in the design note of [`crate::amd`]). Interrupt
//! remapping is in `remapper/interrupts.rs`.

mod interrupts;

use alloc::vec::Vec;

use super::command::{self, CommandBuffer};
use super::dte;
use super::event::Event;
use super::pagetable::IoPageTable;
use super::unit::AmdUnit;
use super::{DeviceRange, UnitSetup};
use crate::memory::{PAGE, TableMemory};
use crate::pagetable::MapError;
use crate::remapper::{RemapError, Source, Summary};
use crate::unit::Registers;

/// Device table pages at most: 65536 entries of 32 bytes (§3.4.1, Size = 511).
pub const MAX_TABLE_PAGES: usize = 512;

/// Domains held before the list grows (see the VT-d remapper: hot-plug does not grow it).
const DOMAINS: usize = 64;

struct UnitState<R> {
    unit: AmdUnit<R>,
    segment: u16,
    iommu_id: u16,
    ranges: Vec<DeviceRange>,
    levels: u8,
    device_table: u64,
    status: u64,
    /// Domain IDs of domains released while the unit did not confirm it forgot them: never
    /// given out again (the unit may still hold translations tagged with them).
    retired: Vec<u16>,
    /// Table pages leaked for the same reason (never reused, never freed).
    leaked: usize,
    /// Domains released while translation was off, with their IDs: the unit may still hold
    /// their entries, so their pages are given back (and their IDs reused) only once the
    /// next [`AmdRemapper::enable`] invalidated everything.
    pending: Vec<(u16, IoPageTable)>,
}

/// One domain: the functions isolated in it and the device IDs whose entries lead to it.
///
/// # Invariants
/// `table` is referenced by the device table entries of `ids` in unit `unit` only, tagged
/// with `id`, unique in that unit. `members` is not empty.
struct Domain {
    members: Vec<Source>,
    ids: Vec<u16>,
    unit: usize,
    id: u16,
    table: IoPageTable,
    pages: u64,
}

/// All AMD-Vi units and their domains.
///
/// # Invariants
/// Every table page (device tables, command buffers, event logs, status pages and I/O page
/// tables) came from `memory` and is owned here. A page is given back only after no entry
/// leads to it and the unit confirmed (a completion wait) that it forgot every cached entry
/// made through it; when a unit does not confirm, the page is leaked instead (never reused,
/// counted by [`AmdRemapper::leaked_pages`]): a few KiB lost, against a device that could
/// otherwise walk a table page already holding something else. Device tables, command buffers and event logs live
/// as long as the remapper (the kernel keeps it for good).
pub struct AmdRemapper<R, M> {
    memory: M,
    units: Vec<UnitState<R>>,
    domains: Vec<Domain>,
    enabled: bool,
    /// Pages of each unit's device table.
    table_pages: usize,
    irq: interrupts::Interrupts,
}

/// Device table pages needed for device IDs up to `highest`.
fn device_table_pages(highest: u16) -> usize {
    ((usize::from(highest) + 1) * dte::SIZE as usize).div_ceil(PAGE as usize)
}

impl<R: Registers, M: TableMemory> AmdRemapper<R, M> {
    /// Reads each unit's features and allocates its device table (sized for the highest
    /// device ID any unit's ranges name), command buffer, event log and status page; nothing
    /// is written to the units yet. A unit whose features are unknown fails the whole
    /// remapper, and so does memory running short (everything allocated is given back).
    pub fn new(memory: M, setups: Vec<UnitSetup<R>>) -> Result<AmdRemapper<R, M>, RemapError> {
        let highest = setups
            .iter()
            .flat_map(|s| {
                s.ranges
                    .iter()
                    .flat_map(|r| [r.first, r.last, r.alias.unwrap_or(0)])
                    .chain([s.iommu_id])
            })
            .max()
            .unwrap_or(0);
        let table_pages = device_table_pages(highest).clamp(1, MAX_TABLE_PAGES);
        let mut remapper = AmdRemapper {
            memory,
            units: Vec::new(),
            domains: Vec::with_capacity(DOMAINS),
            enabled: false,
            table_pages,
            irq: interrupts::Interrupts::default(),
        };
        for setup in setups {
            if let Err(e) = remapper.add_unit(setup) {
                remapper.free_tables();
                return Err(e);
            }
        }
        Ok(remapper)
    }

    fn add_unit(&mut self, setup: UnitSetup<R>) -> Result<(), RemapError> {
        let m = &self.memory;
        let device_table = m
            .alloc_pages(self.table_pages)
            .ok_or(MapError::OutOfMemory)?;
        let pages = [m.alloc_page(), m.alloc_page(), m.alloc_page()];
        let [Some(commands), Some(event_log), Some(status)] = pages else {
            for page in pages.into_iter().flatten() {
                m.free_page(page);
            }
            m.free_pages(device_table, self.table_pages);
            return Err(MapError::OutOfMemory.into());
        };
        let buffer = CommandBuffer {
            page: commands,
            status,
            tail: 0,
            sequence: 0,
        };
        let unit = AmdUnit::new(setup.regs, buffer, event_log);
        let state = UnitState {
            levels: unit.levels().unwrap_or(0),
            unit,
            segment: setup.segment,
            iommu_id: setup.iommu_id,
            ranges: setup.ranges,
            device_table,
            status,
            retired: Vec::new(),
            leaked: 0,
            pending: Vec::new(),
        };
        let levels = state.unit.levels();
        self.units.push(state);
        levels.map(|_| ()).map_err(RemapError::from)
    }

    /// Only before any unit was started (a failed [`AmdRemapper::new`]).
    fn free_tables(self) {
        for state in &self.units {
            self.memory.free_pages(state.device_table, self.table_pages);
            self.memory.free_page(state.unit.commands.page);
            self.memory.free_page(state.unit.event_log);
            self.memory.free_page(state.status);
        }
    }

    /// Units.
    pub fn units(&self) -> usize {
        self.units.len()
    }

    /// The unit that translates for `source`: one of its segment whose ranges hold its
    /// device ID. `None` for a unit's own requester ID (its requests are never translated).
    pub fn unit_for(&self, source: Source) -> Option<usize> {
        let id = source.id();
        let on_segment = |u: &UnitState<R>| u.segment == source.segment;
        if self.units.iter().any(|u| on_segment(u) && u.iommu_id == id) {
            return None;
        }
        self.units.iter().position(|u| {
            on_segment(u) && u.ranges.iter().any(|r| (r.first..=r.last).contains(&id))
        })
    }

    /// The ID `source`'s requests carry at `unit` (its range's alias, else its own).
    fn carried_id(&self, unit: usize, source: Source) -> u16 {
        let id = source.id();
        self.units[unit]
            .ranges
            .iter()
            .find(|r| (r.first..=r.last).contains(&id))
            .and_then(|r| r.alias)
            .unwrap_or(id)
    }

    fn entries(&self) -> u32 {
        (self.table_pages as u64 * PAGE / dte::SIZE) as u32
    }

    /// Runs `commands` at `unit` and waits for them. Nothing to do while translation is
    /// off: [`AmdRemapper::enable`] invalidates everything before the unit translates again.
    fn sync(&mut self, unit: usize, commands: &[[u64; 2]]) -> Result<(), RemapError> {
        if !self.enabled {
            return Ok(());
        }
        self.units[unit].unit.submit(&self.memory, commands)?;
        Ok(())
    }

    /// Starts every unit: device tables, command buffers and event logs programmed,
    /// translation on, then every cached entry invalidated. Device table entries left as they
    /// are: zeroed (pass-through) for every device nobody isolated. All units or none: on an
    /// error every unit is left off.
    pub fn enable(&mut self) -> Result<(), RemapError> {
        let size = (self.table_pages - 1) as u64;
        let entries = self.entries();
        for i in 0..self.units.len() {
            if let Err(e) = self.start(i, size, entries) {
                for state in &self.units {
                    let _ = state.unit.stop();
                }
                self.enabled = false;
                return Err(e);
            }
        }
        self.enabled = true;
        self.free_pending_interrupt_tables();
        Ok(())
    }

    fn start(&mut self, i: usize, size: u64, entries: u32) -> Result<(), RemapError> {
        let state = &mut self.units[i];
        state
            .unit
            .start((state.device_table & dte::ROOT_MASK) | size)?;
        let commands: Vec<[u64; 2]> = if state.unit.invalidate_all_supported() {
            alloc::vec![command::invalidate_all()]
        } else {
            // Every entry the table holds, its interrupt table and every domain ID, as
            // INVALIDATE_IOMMU_ALL would.
            (0..entries)
                .flat_map(|id| {
                    [
                        command::invalidate_devtab_entry(id as u16),
                        command::invalidate_interrupt_table(id as u16),
                    ]
                })
                .chain((1..=u16::MAX).map(command::invalidate_domain))
                .collect()
        };
        state.unit.submit(&self.memory, &commands)?;
        for (_, table) in core::mem::take(&mut state.pending) {
            table.destroy(&self.memory);
        }
        Ok(())
    }

    /// Turns translation off in every unit (devices pass through; domains and entries are
    /// kept for the next [`AmdRemapper::enable`]).
    pub fn disable(&mut self) -> Result<(), RemapError> {
        self.enabled = false;
        let mut result = Ok(());
        for state in &self.units {
            if let Err(e) = state.unit.stop() {
                result = Err(e.into());
            }
        }
        result
    }

    /// Whether translation is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn domain_of(&self, function: Source) -> Option<usize> {
        self.domains
            .iter()
            .position(|d| d.members.contains(&function))
    }

    fn domain_with_id(&self, unit: usize, id: u16) -> Option<usize> {
        self.domains
            .iter()
            .position(|d| d.unit == unit && d.ids.contains(&id))
    }

    fn free_domain_id(&self, unit: usize) -> Option<u16> {
        let state = &self.units[unit];
        (1..=u16::MAX).find(|id| {
            !state.retired.contains(id)
                && !state.pending.iter().any(|(p, _)| p == id)
                && !self.domains.iter().any(|d| d.unit == unit && d.id == *id)
        })
    }

    /// Whether `id` may lead to a domain of `unit`: a device ID it translates for, or one its
    /// ranges' requests carry; never the unit's own; inside the device table.
    fn usable_id(&self, unit: usize, segment: u16, id: u16) -> bool {
        let state = &self.units[unit];
        let source = Source {
            segment,
            bus: (id >> 8) as u8,
            devfn: id as u8,
        };
        u32::from(id) < self.entries()
            && id != state.iommu_id
            && (self.unit_for(source) == Some(unit)
                || state.ranges.iter().any(|r| r.alias == Some(id)))
    }

    /// Gives `function` its own domain holding only `reserved` (page ranges `[start, end)`
    /// firmware needs the device to keep reaching, IVMD ranges): from now on it reaches only
    /// what is mapped for it. The device IDs its requests may carry instead — `aliases` and
    /// its range's alias — lead to the same domain, which a function already isolated behind
    /// the same alias shares. Only the DMA fields of their entries are written (V, TV, Mode,
    /// root, IR, IW, DomainID); the interrupt fields stay. `Ok(false)` when no unit covers it
    /// or translation is off; `Ok(true)` when it was isolated now or before.
    pub fn isolate(
        &mut self,
        function: Source,
        aliases: &[Source],
        reserved: &[(u64, u64)],
    ) -> Result<bool, RemapError> {
        if !self.enabled {
            return Ok(false);
        }
        let Some(unit) = self.unit_for(function) else {
            return Ok(false);
        };
        if self.domain_of(function).is_some() {
            return Ok(true);
        }
        let own = function.id();
        let mut ids = alloc::vec![own];
        let carried = self.carried_id(unit, function);
        let others = aliases
            .iter()
            .filter(|a| a.segment == function.segment)
            .map(|a| a.id());
        for id in core::iter::once(carried).chain(others) {
            if !ids.contains(&id) && self.usable_id(unit, function.segment, id) {
                ids.push(id);
            }
        }
        let d = match ids.iter().find_map(|&id| self.domain_with_id(unit, id)) {
            Some(d) => {
                self.domains[d].members.push(function);
                d
            }
            None => {
                let id = self.free_domain_id(unit).ok_or(RemapError::NoDomainId)?;
                let table = IoPageTable::new(&self.memory, self.units[unit].levels)?;
                self.domains.push(Domain {
                    members: alloc::vec![function],
                    ids: Vec::new(),
                    unit,
                    id,
                    table,
                    pages: 0,
                });
                self.domains.len() - 1
            }
        };
        let result = self.map_reserved(d, reserved).and_then(|()| {
            let (root, levels, id) = {
                let dom = &self.domains[d];
                (dom.table.root(), dom.table.levels(), dom.id)
            };
            let table = self.units[unit].device_table;
            let mut commands = Vec::new();
            for &requester in &ids {
                if !self.domains[d].ids.contains(&requester) {
                    let [low, domain, ..] = dte::translated(root, levels, id);
                    dte::write_dma(&self.memory, table, requester, [low, domain]);
                    self.domains[d].ids.push(requester);
                    commands.push(command::invalidate_devtab_entry(requester));
                }
            }
            // The unit may hold the pass-through entries, and (NpCache) not-present
            // translations of the reserved pages.
            commands.push(command::invalidate_domain(id));
            self.sync(unit, &commands)
        });
        if let Err(e) = result {
            let _ = self.release(function);
            return Err(e);
        }
        Ok(true)
    }

    fn map_reserved(&mut self, d: usize, reserved: &[(u64, u64)]) -> Result<(), RemapError> {
        for &(start, end) in reserved {
            let mut page = start & !(PAGE - 1);
            while page < end {
                match self.domains[d].table.map(&self.memory, page) {
                    Ok(()) | Err(MapError::AlreadyMapped(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                page += PAGE;
            }
        }
        Ok(())
    }

    /// Every function isolated in a domain.
    pub fn isolated_functions(&self) -> Vec<Source> {
        self.domains
            .iter()
            .flat_map(|d| d.members.iter().copied())
            .collect()
    }

    /// Whether `source` has its own domain.
    pub fn isolated(&self, source: Source) -> bool {
        self.domain_of(source).is_some()
    }

    /// Maps `[start, start + len)` (whole pages) into `source`'s domain at the same address,
    /// then has the unit forget what it cached for the domain (a unit may cache not-present
    /// entries). Nothing to do for a function that is not isolated. On an error nothing stays
    /// mapped.
    pub fn map(&mut self, source: Source, start: u64, len: u64) -> Result<(), RemapError> {
        let Some(d) = self.domain_of(source) else {
            return Ok(());
        };
        let first = start & !(PAGE - 1);
        let end = start.saturating_add(len);
        let mut page = first;
        while page < end {
            if let Err(e) = self.domains[d].table.map(&self.memory, page) {
                let mut undo = first;
                while undo < page {
                    self.domains[d].table.unmap(&self.memory, undo);
                    self.domains[d].pages -= 1;
                    undo += PAGE;
                }
                // The device may have used a page while it was mapped.
                let (unit, id) = (self.domains[d].unit, self.domains[d].id);
                let _ = self.sync(unit, &[command::invalidate_domain(id)]);
                return Err(e.into());
            }
            self.domains[d].pages += 1;
            page += PAGE;
        }
        let (unit, id) = (self.domains[d].unit, self.domains[d].id);
        self.sync(unit, &[command::invalidate_domain(id)])
    }

    /// Unmaps `[start, start + len)` from `source`'s domain and waits until the unit has
    /// forgotten every translation of the domain (INVALIDATE_IOMMU_PAGES, then a completion
    /// wait): after `Ok`, the device cannot reach those pages (while translation is off no
    /// device is translated at all, and [`AmdRemapper::enable`] invalidates everything).
    /// Nothing to do for a function that is not isolated.
    pub fn unmap(&mut self, source: Source, start: u64, len: u64) -> Result<(), RemapError> {
        let Some(d) = self.domain_of(source) else {
            return Ok(());
        };
        let mut page = start & !(PAGE - 1);
        let end = start.saturating_add(len);
        while page < end {
            if self.domains[d].table.unmap(&self.memory, page) {
                self.domains[d].pages -= 1;
            }
            page += PAGE;
        }
        let (unit, id) = (self.domains[d].unit, self.domains[d].id);
        self.sync(unit, &[command::invalidate_domain(id)])
    }

    /// The function is gone (or will never be claimed again): it leaves its domain. A domain
    /// left with no function is destroyed: its device table entries return to pass-through
    /// (V = 0; their interrupt fields are kept), the unit forgets them and the domain's translations, and then its table pages
    /// are given back. If the unit does not confirm, the pages and the domain ID are leaked
    /// (never reused) and the error returned. While translation is off they wait for the
    /// next [`AmdRemapper::enable`].
    pub fn release(&mut self, function: Source) -> Result<(), RemapError> {
        let Some(d) = self.domain_of(function) else {
            return Ok(());
        };
        self.domains[d].members.retain(|m| *m != function);
        if !self.domains[d].members.is_empty() {
            return Ok(());
        }
        let domain = self.domains.swap_remove(d);
        let table = self.units[domain.unit].device_table;
        let mut commands = Vec::new();
        for &id in &domain.ids {
            dte::clear_dma(&self.memory, table, id);
            commands.push(command::invalidate_devtab_entry(id));
        }
        commands.push(command::invalidate_domain(domain.id));
        if !self.enabled {
            self.units[domain.unit]
                .pending
                .push((domain.id, domain.table));
            return Ok(());
        }
        match self.sync(domain.unit, &commands) {
            Ok(()) => {
                domain.table.destroy(&self.memory);
                Ok(())
            }
            Err(e) => {
                let state = &mut self.units[domain.unit];
                state.retired.push(domain.id);
                state.leaked += 1 + domain.table.table_pages();
                Err(e)
            }
        }
    }

    /// Where `source`'s access to `address` lands, as the unit walks the tables: `None` when
    /// it faults. (Untranslated: the address itself, passed through.)
    pub fn translate(&self, source: Source, address: u64) -> Option<u64> {
        if !self.enabled {
            return Some(address);
        }
        let Some(unit) = self.unit_for(source) else {
            return Some(address);
        };
        match self.domain_with_id(unit, self.carried_id(unit, source)) {
            Some(d) => self.domains[d].table.translate(&self.memory, address),
            None => Some(address),
        }
    }

    /// Events every unit logged since the last call: (unit, event).
    pub fn take_events(&self) -> Vec<(usize, Event)> {
        let mut out = Vec::new();
        for (i, state) in self.units.iter().enumerate() {
            let mut events = Vec::new();
            state.unit.take_events(&self.memory, &mut events);
            out.extend(events.into_iter().map(|e| (i, e)));
        }
        out
    }

    /// Counts for the log and the console.
    pub fn summary(&self) -> Summary {
        Summary {
            units: self.units.len(),
            enabled: self.enabled,
            domains: self.domains.len(),
            pages: self.domains.iter().map(|d| d.pages).sum(),
            table_pages: self.units.len() * (self.table_pages + 3)
                + self
                    .domains
                    .iter()
                    .map(|d| 1 + d.table.table_pages())
                    .sum::<usize>()
                + self
                    .units
                    .iter()
                    .flat_map(|u| &u.pending)
                    .map(|(_, t)| 1 + t.table_pages())
                    .sum::<usize>()
                + self.interrupt_table_pages(),
            interrupts: self.remaps_interrupts(),
            interrupt_entries: self.interrupt_entries().len(),
        }
    }

    /// Table pages leaked because a unit did not confirm it forgot them.
    pub fn leaked_pages(&self) -> usize {
        self.units.iter().map(|u| u.leaked).sum::<usize>() + self.interrupt_leaked_pages()
    }

    /// A unit's levels, extended feature register and control register, for the log.
    pub fn unit_info(&self, unit: usize) -> (u8, u64, u64) {
        let s = &self.units[unit];
        (s.levels, s.unit.efr(), s.unit.control())
    }
}
