//! What the interrupt remapping tests share: the requesters, a remapper over model units,
//! and the messages and faults they look for.

#![allow(dead_code)]

use iommu::intremap::msi_address;
use iommu::{Fault, Remapper, Scope, Source, Target, UnitSetup};

use crate::model::{IrqOutcome, Memory, Model};

pub const NVME: Source = Source {
    segment: 0,
    bus: 1,
    devfn: 0,
};
pub const NIC: Source = Source {
    segment: 0,
    bus: 2,
    devfn: 0,
};
pub const HBA: Source = Source {
    segment: 0,
    bus: 3,
    devfn: 1 << 3 | 1,
};
/// An I/O APIC's requester ID from the DMAR table (bus F0h, device 31, function 0).
pub const IOAPIC: u16 = 0xf0f8;

pub fn remapper(memory: &Memory, units: &[&Model]) -> Remapper<Model, Memory> {
    let setups = units
        .iter()
        .map(|u| UnitSetup {
            regs: (*u).clone(),
            segment: 0,
            scope: Scope::All,
        })
        .collect();
    Remapper::new(memory.clone(), setups).expect("remapper")
}

/// One unit with interrupt remapping (and EIM if `eim`), translation on for buses 0 to 3.
pub fn setup(coherent: bool, eim: bool) -> (Remapper<Model, Memory>, Model, Memory) {
    let memory = Memory::new();
    let unit = Model::with_interrupt_remapping(&memory, coherent, eim);
    let mut r = remapper(&memory, &[&unit]);
    r.enable((0, 3)).expect("enable");
    (r, unit, memory)
}

/// The same, with interrupts remapped.
pub fn remapped(coherent: bool, eim: bool) -> (Remapper<Model, Memory>, Model, Memory) {
    let (mut r, unit, memory) = setup(coherent, eim);
    r.enable_interrupt_remapping(eim)
        .expect("interrupt remapping");
    (r, unit, memory)
}

pub fn clean(unit: &Model, memory: &Memory) {
    let u = unit.state();
    assert!(u.violations.is_empty(), "unit: {:?}", u.violations);
    let m = memory.0.borrow();
    assert!(m.violations.is_empty(), "memory: {:?}", m.violations);
}

pub fn edge(vector: u8, destination: u32) -> Target {
    Target {
        vector,
        destination,
        level: false,
    }
}

pub fn delivered(vector: u8, destination: u32) -> IrqOutcome {
    IrqOutcome::Delivered {
        vector,
        destination,
        level: false,
    }
}

/// A single-message MSI naming entry `index`, from `source`.
pub fn msi(unit: &Model, source: Source, index: u16) -> IrqOutcome {
    unit.interrupt(source.id(), msi_address(index, false), 0)
}

pub fn interrupt_fault(source: u16, index: u64, reason: u8) -> (usize, Fault) {
    let fault = Fault {
        source,
        address: index,
        write: true,
        reason,
    };
    assert!(fault.interrupt());
    (0, fault)
}

pub fn gsts(unit: &Model) -> u32 {
    unit.state().gsts
}

/// FSTS as software reads it.
pub fn fsts(unit: &Model) -> u32 {
    iommu::Registers::read32(unit, iommu::regs::FSTS)
}
