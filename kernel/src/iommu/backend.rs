//! [`Backend`]: the machine's remapping units, Intel VT-d or AMD IOMMU, behind one set of
//! calls.
//!
//! Both kinds keep a claimed function inside its own DMA memory in the same way (the
//! `iommu` crate's `Remapper` and `amd::AmdRemapper` have the same contract: pass-through
//! until claimed, one domain per isolated function, unmapped and invalidated before the
//! memory moves on). Interrupt remapping differs in shape: a VT-d unit has one table per
//! unit, each entry naming the requester it accepts; an AMD IOMMU has one table per
//! requester. The VT-d calls below answer "no table" on an AMD IOMMU, whose own calls are
//! reached through [`Backend::amd`] (`interrupts.rs`).

use alloc::vec::Vec;

use iommu::amd::AmdRemapper;
use iommu::{RemapError, Remapper, Source, SourceCheck, Summary, Target};

use super::fault::Fault;
use super::hw::{TablePages, UnitRegisters};

/// The units of one machine: one kind or the other, never both (firmware describes either
/// a DMAR or an IVRS).
pub(super) enum Backend {
    Vtd(Remapper<UnitRegisters, TablePages>),
    Amd(AmdRemapper<UnitRegisters, TablePages>),
}

impl Backend {
    /// The AMD remapper, on an AMD machine.
    pub fn amd(&mut self) -> Option<&mut AmdRemapper<UnitRegisters, TablePages>> {
        match self {
            Backend::Vtd(_) => None,
            Backend::Amd(r) => Some(r),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Vtd(_) => "Intel VT-d",
            Backend::Amd(_) => "AMD IOMMU",
        }
    }

    pub fn units(&self) -> usize {
        match self {
            Backend::Vtd(r) => r.units(),
            Backend::Amd(r) => r.units(),
        }
    }

    pub fn unit_for(&self, source: Source) -> Option<usize> {
        match self {
            Backend::Vtd(r) => r.unit_for(source),
            Backend::Amd(r) => r.unit_for(source),
        }
    }

    pub fn isolate(
        &mut self,
        function: Source,
        aliases: &[Source],
        reserved: &[(u64, u64)],
    ) -> Result<bool, RemapError> {
        match self {
            Backend::Vtd(r) => r.isolate(function, aliases, reserved),
            Backend::Amd(r) => r.isolate(function, aliases, reserved),
        }
    }

    pub fn isolated_functions(&self) -> Vec<Source> {
        match self {
            Backend::Vtd(r) => r.isolated_functions(),
            Backend::Amd(r) => r.isolated_functions(),
        }
    }

    pub fn isolated(&self, source: Source) -> bool {
        match self {
            Backend::Vtd(r) => r.isolated(source),
            Backend::Amd(r) => r.isolated(source),
        }
    }

    pub fn map(&mut self, source: Source, start: u64, len: u64) -> Result<(), RemapError> {
        match self {
            Backend::Vtd(r) => r.map(source, start, len),
            Backend::Amd(r) => r.map(source, start, len),
        }
    }

    pub fn unmap(&mut self, source: Source, start: u64, len: u64) -> Result<(), RemapError> {
        match self {
            Backend::Vtd(r) => r.unmap(source, start, len),
            Backend::Amd(r) => r.unmap(source, start, len),
        }
    }

    pub fn release(&mut self, function: Source) -> Result<(), RemapError> {
        match self {
            Backend::Vtd(r) => r.release(function),
            Backend::Amd(r) => r.release(function),
        }
    }

    pub fn translate(&self, source: Source, address: u64) -> Option<u64> {
        match self {
            Backend::Vtd(r) => r.translate(source, address),
            Backend::Amd(r) => r.translate(source, address),
        }
    }

    /// What every unit recorded since the last call.
    pub fn take_faults(&self) -> Vec<Fault> {
        match self {
            Backend::Vtd(r) => r.take_faults().into_iter().map(|f| f.1.into()).collect(),
            Backend::Amd(r) => r.take_events().into_iter().map(|e| e.1.into()).collect(),
        }
    }

    pub fn summary(&self) -> Summary {
        match self {
            Backend::Vtd(r) => r.summary(),
            Backend::Amd(r) => r.summary(),
        }
    }

    // Interrupt remapping: VT-d only.

    pub fn enable_fault_events(&self, address: u64, data: u32) -> bool {
        match self {
            Backend::Vtd(r) => {
                r.enable_fault_events(address, data);
                true
            }
            Backend::Amd(_) => false,
        }
    }

    pub fn enable_interrupt_remapping(&mut self, x2apic: bool) -> Result<(), RemapError> {
        match self {
            Backend::Vtd(r) => r.enable_interrupt_remapping(x2apic),
            Backend::Amd(_) => Err(RemapError::NoInterruptTable),
        }
    }

    pub fn disable_interrupt_remapping(&mut self) -> Result<(), RemapError> {
        match self {
            Backend::Vtd(r) => r.disable_interrupt_remapping(),
            Backend::Amd(r) => r.disable_interrupt_remapping(),
        }
    }

    pub fn extended_interrupt_mode(&self) -> bool {
        match self {
            Backend::Vtd(r) => r.extended_interrupt_mode(),
            Backend::Amd(_) => false,
        }
    }

    pub fn extended_destinations(&self) -> bool {
        match self {
            Backend::Vtd(r) => r.extended_destinations(),
            Backend::Amd(_) => false,
        }
    }

    pub fn remaps_interrupts(&self) -> bool {
        match self {
            Backend::Vtd(r) => r.remaps_interrupts(),
            Backend::Amd(r) => r.remaps_interrupts(),
        }
    }

    pub fn set_interrupt(
        &mut self,
        unit: usize,
        index: u16,
        target: Target,
        check: SourceCheck,
    ) -> Result<(), RemapError> {
        match self {
            Backend::Vtd(r) => r.set_interrupt(unit, index, target, check),
            Backend::Amd(_) => Err(RemapError::NoInterruptTable),
        }
    }

    pub fn clear_interrupt(&mut self, unit: usize, index: u16) -> Result<(), RemapError> {
        match self {
            Backend::Vtd(r) => r.clear_interrupt(unit, index),
            Backend::Amd(_) => Err(RemapError::NoInterruptTable),
        }
    }

    pub fn interrupt_entry(&self, unit: usize, index: u16) -> Option<[u64; 2]> {
        match self {
            Backend::Vtd(r) => r.interrupt_entry(unit, index),
            Backend::Amd(_) => None,
        }
    }
}
