//! [`Remapper`]: every remapping unit of the machine, their root and context tables, and one
//! domain per isolated PCI function.
//!
//! Design note: who may reach what.
//!
//! - **Unclaimed functions pass through.** Translation on with no context entry would block
//!   every device's DMA, including devices firmware still uses (a graphics controller
//!   scanning out the boot framebuffer, a USB controller the firmware emulates a keyboard
//!   with). So when translation is turned on, every bus/device/function the unit covers on
//!   the buses the kernel gives (all 256) gets a pass-through context entry: such devices
//!   behave exactly as without remapping.
//! - **A claimed function is isolated.** When a driver claims a function, the kernel gives it
//!   its own domain ([`Remapper::isolate`]): an empty second-level table (plus identity maps
//!   of the firmware's reserved regions for it, RMRRs). From then on the device reaches only
//!   pages mapped in its domain: exactly the DMA memory allocated for that function
//!   ([`Remapper::map`]), which is unmapped, and the unit's IOTLB invalidated with reads and
//!   writes drained, before the memory can go anywhere else ([`Remapper::unmap`]). A driver
//!   that writes a wrong address into a device register gets a recorded fault, not corrupted
//!   memory.
//! - **The domain outlives claims.** The function's DMA memory stays the function's while it
//!   exists (`pci::parking`), so its mappings do too; the domain goes, and the context entry
//!   returns to pass-through, when the function is gone ([`Remapper::release`]).
//!
//! Bus addresses stay physical addresses: a domain maps each page at its own address, so
//! drivers and the `pci` crate's `BusAddr` do not change.
//!
//! Interrupt remapping ([`Remapper::enable_interrupt_remapping`], in `remapper/interrupts.rs`)
//! adds one table per unit whose entries say which requester may raise which vector.

mod interrupts;
pub use interrupts::INTERRUPT_ENTRIES;

use alloc::vec;
use alloc::vec::Vec;

use crate::entries::{Translation, context_entry, root_entry};
use crate::memory::{PAGE, TableMemory};
use crate::pagetable::{MapError, PageTable};
use crate::unit::{Fault, Registers, Unit, UnitError};

/// A requester: PCI segment, bus, device << 3 | function (the unit's source ID is
/// bus << 8 | devfn).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    pub segment: u16,
    pub bus: u8,
    pub devfn: u8,
}

impl Source {
    /// The 16-bit requester ID a unit records.
    pub fn id(&self) -> u16 {
        u16::from(self.bus) << 8 | u16::from(self.devfn)
    }
}

/// What one unit translates for, besides its segment: everything not claimed by another
/// unit (DRHD INCLUDE_PCI_ALL), or listed devices and bus ranges (its device scopes, resolved
/// by the kernel through the bridges they name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// INCLUDE_PCI_ALL: every function of the segment no other unit lists.
    All,
    /// The listed functions and buses.
    Listed(Vec<ScopeEntry>),
}

/// One resolved device scope entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeEntry {
    /// An endpoint: bus and devfn.
    Function(u8, u8),
    /// A bridge's subordinate buses, first to last.
    Buses(u8, u8),
}

/// One unit as the kernel found it.
pub struct UnitSetup<R> {
    pub regs: R,
    pub segment: u16,
    pub scope: Scope,
}

/// Why remapping could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemapError {
    Unit(UnitError),
    Map(MapError),
    /// Every domain ID of the unit is in use.
    NoDomainId,
    /// Interrupts are not remapped, or there is no such unit.
    NoInterruptTable,
}

impl From<UnitError> for RemapError {
    fn from(e: UnitError) -> Self {
        RemapError::Unit(e)
    }
}

impl From<MapError> for RemapError {
    fn from(e: MapError) -> Self {
        RemapError::Map(e)
    }
}

impl core::fmt::Display for RemapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RemapError::Unit(e) => e.fmt(f),
            RemapError::Map(e) => e.fmt(f),
            RemapError::NoDomainId => f.write_str("no free domain ID"),
            RemapError::NoInterruptTable => {
                f.write_str("no interrupt remapping table (interrupts are not remapped)")
            }
        }
    }
}

/// Domain ID of every pass-through context entry (0 is reserved under caching mode).
const PASS_THROUGH_ID: u16 = 1;

/// Domains the remapper holds before its list grows.
const DOMAINS: usize = 64;

struct UnitState<R> {
    unit: Unit<R>,
    segment: u16,
    scope: Scope,
    levels: u8,
    root: u64,
    /// Context table of each bus (0: none yet).
    contexts: Vec<u64>,
    /// Interrupt remapping: the queue page, its status page and the remapping table
    /// (0: none).
    queue: u64,
    status: u64,
    irq_table: u64,
}

/// One domain: the functions isolated in it and the requester IDs that lead to it.
///
/// # Invariants
/// `table` is referenced by the context entries of `ids` in unit `unit` only, with domain
/// ID `id`, unique in that unit. `members` is not empty.
struct Domain {
    /// The functions whose DMA memory is mapped here (usually one; more when their requests
    /// can carry the same requester ID, behind a PCIe-to-PCI bridge).
    members: Vec<Source>,
    /// The requester IDs whose context entries point here: the members' own, and the IDs
    /// their requests may carry instead (DMA aliases).
    ids: Vec<Source>,
    unit: usize,
    id: u16,
    table: PageTable,
    /// Pages mapped for the members' DMA memory (not counting reserved regions).
    pages: u64,
}

/// All remapping units and their domains.
///
/// # Invariants
/// Every table page (root, context and second-level tables) came from `memory` and is
/// owned here; a page is given back only after no context entry leads to it and the unit's
/// caches were invalidated.
pub struct Remapper<R, M> {
    memory: M,
    units: Vec<UnitState<R>>,
    domains: Vec<Domain>,
    enabled: bool,
    /// Whether every unit remaps interrupts, and with 32-bit destinations.
    interrupts: bool,
    eime: bool,
}

/// What [`Remapper::summary`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub units: usize,
    pub enabled: bool,
    pub domains: usize,
    pub pages: u64,
    pub table_pages: usize,
    /// Whether interrupts are remapped, and how many remapping entries are present.
    pub interrupts: bool,
    pub interrupt_entries: usize,
}

impl<R: Registers, M: TableMemory> Remapper<R, M> {
    /// Reads each unit's capabilities and makes its root table; nothing is written to the
    /// units yet. A unit that cannot do legacy-mode 3- or 4-level tables with pass-through
    /// entries fails the whole remapper (a device behind it could not be isolated, and one
    /// left out would block every unclaimed device).
    pub fn new(memory: M, setups: Vec<UnitSetup<R>>) -> Result<Remapper<R, M>, RemapError> {
        let mut units: Vec<UnitState<R>> = Vec::new();
        let mut result = Ok(());
        for setup in setups {
            let unit = Unit::new(setup.regs);
            let levels = match unit.levels() {
                Ok(l) => l,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            if !unit.pass_through() {
                result =
                    Err(UnitError::Unsupported("pass-through context entries (ECAP.PT)").into());
                break;
            }
            let Some(root) = memory.alloc_page() else {
                result = Err(MapError::OutOfMemory.into());
                break;
            };
            units.push(UnitState {
                unit,
                segment: setup.segment,
                scope: setup.scope,
                levels,
                root,
                contexts: vec![0; 256],
                queue: 0,
                status: 0,
                irq_table: 0,
            });
        }
        let remapper = Remapper {
            memory,
            units,
            // Room for the domains of a machine's claimed functions, so that functions
            // coming and going (hot-plug) do not grow it: the kernel's heap returns exactly to
            // where it was.
            domains: Vec::with_capacity(DOMAINS),
            enabled: false,
            interrupts: false,
            eime: false,
        };
        match result {
            Ok(()) => Ok(remapper),
            Err(e) => {
                remapper.free_tables();
                Err(e)
            }
        }
    }

    fn free_tables(self) {
        for state in &self.units {
            for &table in state.contexts.iter().filter(|&&t| t != 0) {
                self.memory.free_page(table);
            }
            for page in [state.queue, state.status, state.irq_table] {
                if page != 0 {
                    self.memory.free_page(page);
                }
            }
            self.memory.free_page(state.root);
        }
        for domain in self.domains {
            domain.table.destroy(&self.memory);
        }
    }

    /// Units.
    pub fn units(&self) -> usize {
        self.units.len()
    }

    /// The unit that translates for `source`: a unit listing it (or a bus range holding it),
    /// else the segment's INCLUDE_PCI_ALL unit.
    pub fn unit_for(&self, source: Source) -> Option<usize> {
        let listed = self.units.iter().position(|u| {
            u.segment == source.segment
                && match &u.scope {
                    Scope::All => false,
                    Scope::Listed(entries) => entries.iter().any(|e| match *e {
                        ScopeEntry::Function(bus, devfn) => {
                            bus == source.bus && devfn == source.devfn
                        }
                        ScopeEntry::Buses(first, last) => (first..=last).contains(&source.bus),
                    }),
                }
        });
        listed.or_else(|| {
            self.units
                .iter()
                .position(|u| u.segment == source.segment && u.scope == Scope::All)
        })
    }

    fn coherent(&self, unit: usize) -> bool {
        self.units[unit].unit.coherent()
    }

    /// The context table of `bus` in `unit`, made (zeroed: nothing present) if needed.
    fn context_table(&mut self, unit: usize, bus: u8) -> Result<u64, RemapError> {
        let state = &self.units[unit];
        let existing = state.contexts[usize::from(bus)];
        if existing != 0 {
            return Ok(existing);
        }
        let table = self.memory.alloc_page().ok_or(MapError::OutOfMemory)?;
        let coherent = state.unit.coherent();
        if !coherent {
            self.memory.flush(table, PAGE);
        }
        let slot = state.root + 16 * u64::from(bus);
        self.memory.write(slot + 8, 0);
        self.memory.write(slot, root_entry(table));
        if !coherent {
            self.memory.flush(slot, 16);
        }
        self.units[unit].contexts[usize::from(bus)] = table;
        Ok(table)
    }

    fn write_context(
        &mut self,
        unit: usize,
        source: Source,
        entry: (u64, u64),
    ) -> Result<(), RemapError> {
        let table = self.context_table(unit, source.bus)?;
        let slot = table + 16 * u64::from(source.devfn);
        let coherent = self.coherent(unit);
        // High qword first: the entry becomes present with the low one.
        self.memory.write(slot + 8, entry.1);
        self.memory.write(slot, entry.0);
        if !coherent {
            self.memory.flush(slot, 16);
        }
        Ok(())
    }

    fn clear_context(&mut self, unit: usize, source: Source) {
        let table = self.units[unit].contexts[usize::from(source.bus)];
        if table == 0 {
            return;
        }
        let slot = table + 16 * u64::from(source.devfn);
        self.memory.write(slot, 0);
        self.memory.write(slot + 8, 0);
        if !self.coherent(unit) {
            self.memory.flush(slot, 16);
        }
    }

    fn pass_through_entry(&self, unit: usize) -> (u64, u64) {
        let levels = self.units[unit].unit.largest_levels();
        context_entry(Translation::PassThrough, PASS_THROUGH_ID, levels)
    }

    /// Writes pass-through context entries for every function on `buses` (inclusive) that a
    /// unit covers, and turns translation on in every unit. On an error every unit is left
    /// with translation off.
    pub fn enable(&mut self, buses: (u8, u8)) -> Result<(), RemapError> {
        for unit in 0..self.units.len() {
            let segment = self.units[unit].segment;
            for bus in buses.0..=buses.1 {
                for devfn in 0..=255u8 {
                    let source = Source {
                        segment,
                        bus,
                        devfn,
                    };
                    if self.unit_for(source) == Some(unit) {
                        let entry = self.pass_through_entry(unit);
                        self.write_context(unit, source, entry)?;
                    }
                }
            }
        }
        for i in 0..self.units.len() {
            let state = &self.units[i];
            if let Err(e) = state.unit.enable(&self.memory, state.root) {
                for state in &self.units {
                    let _ = state.unit.disable();
                }
                return Err(e.into());
            }
        }
        self.enabled = true;
        Ok(())
    }

    /// Whether translation is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// After a context entry changed: the unit forgets the old one and every translation
    /// made through it.
    fn invalidate_all(&self, unit: usize) -> Result<(), RemapError> {
        let u = &self.units[unit].unit;
        u.flush_write_buffer()?;
        u.invalidate_context(&self.memory)?;
        u.invalidate_iotlb(&self.memory, None)?;
        Ok(())
    }

    fn domain_of(&self, function: Source) -> Option<usize> {
        self.domains
            .iter()
            .position(|d| d.members.contains(&function))
    }

    fn domain_with_id(&self, requester: Source) -> Option<usize> {
        self.domains.iter().position(|d| d.ids.contains(&requester))
    }

    /// Points `requester`'s context entry at domain `d` (from pass-through or another
    /// domain): not present first, so the unit never sees half an entry and forgets the old
    /// one, then the new entry.
    fn point_at(&mut self, requester: Source, d: usize) -> Result<(), RemapError> {
        let (unit, id) = (self.domains[d].unit, self.domains[d].id);
        let table = self.domains[d].table.root();
        let levels = self.domains[d].table.levels();
        self.clear_context(unit, requester);
        self.invalidate_all(unit)?;
        let entry = context_entry(Translation::PageTable { table, levels }, id, levels);
        self.write_context(unit, requester, entry)?;
        self.invalidate_all(unit)
    }

    fn map_reserved(&mut self, d: usize, reserved: &[(u64, u64)]) -> Result<(), RemapError> {
        let coherent = self.coherent(self.domains[d].unit);
        for &(start, end) in reserved {
            let mut page = start & !(PAGE - 1);
            while page < end {
                match self.domains[d].table.map(&self.memory, coherent, page) {
                    Ok(()) | Err(MapError::AlreadyMapped(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                page += PAGE;
            }
        }
        Ok(())
    }

    fn free_domain_id(&self, unit: usize) -> Option<u16> {
        let limit = self.units[unit].unit.domain_ids().min(u32::from(u16::MAX));
        (PASS_THROUGH_ID as u32 + 1..limit)
            .map(|id| id as u16)
            .find(|id| !self.domains.iter().any(|d| d.unit == unit && d.id == *id))
    }

    /// Gives `function` its own domain, holding only `reserved` (page ranges `[start, end)`
    /// firmware needs the device to keep reaching, RMRRs): from now on it reaches only what
    /// is mapped for it. `aliases` are the other requester IDs its requests may carry (a
    /// PCIe-to-PCI bridge's secondary bus with devfn 0, a conventional bridge's own ID);
    /// their context entries lead to the same domain, which a function already isolated
    /// behind the same alias shares. `Ok(false)` when no unit covers it (nothing is
    /// translated for it), or translation is off; `Ok(true)` when it was isolated now or
    /// before.
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
        let mut ids = alloc::vec![function];
        for &alias in aliases {
            if !ids.contains(&alias) && self.unit_for(alias) == Some(unit) {
                ids.push(alias);
            }
        }
        // A domain one of these IDs already leads to is joined; otherwise a new one.
        let d = match ids.iter().find_map(|&r| self.domain_with_id(r)) {
            Some(d) => {
                self.domains[d].members.push(function);
                d
            }
            None => {
                let id = self.free_domain_id(unit).ok_or(RemapError::NoDomainId)?;
                let levels = self.units[unit].levels;
                let table = PageTable::new(&self.memory, levels)?;
                if !self.coherent(unit) {
                    self.memory.flush(table.root(), PAGE);
                }
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
        let mapped = self.map_reserved(d, reserved).and_then(|()| {
            for &requester in &ids {
                if !self.domains[d].ids.contains(&requester) {
                    self.point_at(requester, d)?;
                    self.domains[d].ids.push(requester);
                }
            }
            Ok(())
        });
        if let Err(e) = mapped {
            // Back to where it was: the function leaves the domain, and a domain nobody is
            // in goes.
            let _ = self.release(function);
            return Err(e);
        }
        Ok(true)
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

    /// Maps `[start, start + len)` (whole pages) into `source`'s domain at the same address.
    /// Nothing to do for a function that is not isolated. On an error nothing stays mapped.
    pub fn map(&mut self, source: Source, start: u64, len: u64) -> Result<(), RemapError> {
        let Some(d) = self.domain_of(source) else {
            return Ok(());
        };
        let unit = self.domains[d].unit;
        let coherent = self.coherent(unit);
        let first = start & !(PAGE - 1);
        let end = start.saturating_add(len);
        let mut page = first;
        while page < end {
            if let Err(e) = self.domains[d].table.map(&self.memory, coherent, page) {
                let mut undo = first;
                while undo < page {
                    self.domains[d].table.unmap(&self.memory, coherent, undo);
                    undo += PAGE;
                }
                let _ = self.invalidate_domain(d);
                return Err(e.into());
            }
            self.domains[d].pages += 1;
            page += PAGE;
        }
        let u = &self.units[unit].unit;
        u.flush_write_buffer()?;
        if u.caching_mode() {
            // The unit may have cached the pages as not present.
            self.invalidate_domain(d)?;
        }
        Ok(())
    }

    fn invalidate_domain(&self, d: usize) -> Result<(), RemapError> {
        let domain = &self.domains[d];
        let u = &self.units[domain.unit].unit;
        u.flush_write_buffer()?;
        u.invalidate_iotlb(&self.memory, Some(domain.id))?;
        Ok(())
    }

    /// Unmaps `[start, start + len)` from `source`'s domain and waits until the unit has
    /// forgotten every translation of it and finished the requests it made with them: after
    /// `Ok`, the device cannot reach those pages. Nothing to do for a function that is not
    /// isolated.
    pub fn unmap(&mut self, source: Source, start: u64, len: u64) -> Result<(), RemapError> {
        let Some(d) = self.domain_of(source) else {
            return Ok(());
        };
        let coherent = self.coherent(self.domains[d].unit);
        let mut page = start & !(PAGE - 1);
        let end = start.saturating_add(len);
        while page < end {
            if self.domains[d].table.unmap(&self.memory, coherent, page) {
                self.domains[d].pages -= 1;
            }
            page += PAGE;
        }
        self.invalidate_domain(d)
    }

    /// The function is gone (or will never be claimed again): it leaves its domain; a
    /// domain left with no function is destroyed and its requester IDs pass through again, as
    /// for a device never claimed.
    pub fn release(&mut self, function: Source) -> Result<(), RemapError> {
        let Some(d) = self.domain_of(function) else {
            return Ok(());
        };
        self.domains[d].members.retain(|m| *m != function);
        if !self.domains[d].members.is_empty() {
            return Ok(());
        }
        let unit = self.domains[d].unit;
        let entry = self.pass_through_entry(unit);
        let ids = core::mem::take(&mut self.domains[d].ids);
        for requester in ids {
            self.clear_context(unit, requester);
            self.invalidate_all(unit)?;
            self.write_context(unit, requester, entry)?;
        }
        self.invalidate_all(unit)?;
        let domain = self.domains.swap_remove(d);
        domain.table.destroy(&self.memory);
        Ok(())
    }

    /// Where `source`'s access to `address` lands, as the unit walks the tables: `None` when
    /// it faults. (Without a domain: the address itself, passed through.)
    pub fn translate(&self, source: Source, address: u64) -> Option<u64> {
        match self.domain_of(source) {
            Some(d) => self.domains[d].table.translate(&self.memory, address),
            None => Some(address),
        }
    }

    /// Faults every unit recorded since the last call: (unit, fault).
    pub fn take_faults(&self) -> Vec<(usize, Fault)> {
        let mut out = Vec::new();
        for (i, state) in self.units.iter().enumerate() {
            let mut faults = Vec::new();
            state.unit.take_faults(&mut faults);
            out.extend(faults.into_iter().map(|f| (i, f)));
        }
        out
    }

    /// Every unit sends `data` to `address` when it records a fault
    /// ([`Unit::enable_fault_events`]).
    pub fn enable_fault_events(&self, address: u64, data: u32) {
        for state in &self.units {
            state.unit.enable_fault_events(address, data);
        }
    }

    /// Counts for the log and the console.
    pub fn summary(&self) -> Summary {
        Summary {
            units: self.units.len(),
            enabled: self.enabled,
            interrupts: self.interrupts,
            interrupt_entries: self.present_interrupt_entries(),
            domains: self.domains.len(),
            pages: self.domains.iter().map(|d| d.pages).sum(),
            table_pages: self
                .units
                .iter()
                .map(|u| 1 + u.contexts.iter().filter(|&&t| t != 0).count())
                .sum::<usize>()
                + self
                    .units
                    .iter()
                    .map(|u| {
                        [u.queue, u.status, u.irq_table]
                            .iter()
                            .filter(|&&p| p != 0)
                            .count()
                    })
                    .sum::<usize>()
                + self
                    .domains
                    .iter()
                    .map(|d| 1 + d.table.table_pages())
                    .sum::<usize>(),
        }
    }

    /// Each unit's levels and capability registers, for the log.
    pub fn unit_info(&self, unit: usize) -> (u8, u64, u64) {
        let s = &self.units[unit];
        (s.levels, s.unit.cap(), s.unit.ecap())
    }
}
