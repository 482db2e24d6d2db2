//! What the AMD-Vi tests share: the requesters, a remapper over model units, and the
//! checks every test ends with.

use iommu::Source;
use iommu::amd::{AmdRemapper, DeviceRange, UnitSetup};

use super::{Memory, Unit};

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
pub const GPU: Source = Source {
    segment: 0,
    bus: 0,
    devfn: 2 << 3,
};
/// The unit's own device ID (00:00.2, as QEMU places it).
pub const IOMMU_ID: u16 = 0x0002;

pub fn source(id: u16) -> Source {
    Source {
        segment: 0,
        bus: (id >> 8) as u8,
        devfn: id as u8,
    }
}

pub fn all_of_bus_0_to_3() -> Vec<DeviceRange> {
    vec![DeviceRange {
        first: 0,
        last: 0x3ff,
        alias: None,
    }]
}

pub fn remapper(memory: &Memory, units: &[(&Unit, Vec<DeviceRange>)]) -> AmdRemapper<Unit, Memory> {
    let setups = units
        .iter()
        .map(|(u, ranges)| UnitSetup {
            regs: (*u).clone(),
            segment: 0,
            iommu_id: IOMMU_ID,
            ranges: ranges.clone(),
        })
        .collect();
    AmdRemapper::new(memory.clone(), setups).expect("remapper")
}

pub fn setup() -> (AmdRemapper<Unit, Memory>, Unit, Memory) {
    let memory = Memory::new();
    let unit = Unit::new(&memory);
    let r = remapper(&memory, &[(&unit, all_of_bus_0_to_3())]);
    (r, unit, memory)
}

pub fn enabled() -> (AmdRemapper<Unit, Memory>, Unit, Memory) {
    let (mut r, unit, memory) = setup();
    r.enable().expect("enable");
    (r, unit, memory)
}

pub fn clean(unit: &Unit, memory: &Memory) {
    let u = unit.state();
    assert!(u.violations.is_empty(), "unit: {:?}", u.violations);
    let m = memory.0.borrow();
    assert!(m.violations.is_empty(), "memory: {:?}", m.violations);
}

pub fn reaches(unit: &Unit, s: Source, address: u64, write: bool) -> bool {
    unit.dma(s.id(), address, write) == Ok(address)
}
