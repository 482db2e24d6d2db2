//! AMD-Vi interrupt remapping against the model unit: which messages each requester's
//! table lets through after each step.

mod amd_model;

use amd_model::fixtures::*;
use amd_model::{Memory, Refused, Unit};
use iommu::amd::{DeviceRange, event};
use iommu::{RemapError, Source, Target, UnitError};
use proptest::prelude::*;

const TARGET: Target = Target {
    vector: 0x41,
    destination: 3,
    level: false,
};

fn remapping() -> (iommu::amd::AmdRemapper<Unit, Memory>, Unit, Memory) {
    let (mut r, unit, memory) = enabled();
    r.enable_interrupt_remapping(&[])
        .expect("interrupt remapping");
    (r, unit, memory)
}

/// The third qword of `id`'s device table entry, as the unit would read it.
fn qword2(unit: &Unit, memory: &Memory, id: u16) -> u64 {
    let table = unit.state().dev_table & 0x000f_ffff_ffff_f000;
    memory.peek(table + 32 * u64::from(id) + 16).expect("entry")
}

fn executed(unit: &Unit, opcode: u64) -> usize {
    let s = unit.state();
    s.executed.iter().filter(|c| c[0] >> 60 == opcode).count()
}

#[test]
fn once_on_every_covered_requester_is_refused() {
    let (mut r, unit, memory) = enabled();
    // Before: messages pass as they are.
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 0, false)));
    assert!(!r.remaps_interrupts());
    r.enable_interrupt_remapping(&[])
        .expect("interrupt remapping");
    assert!(r.remaps_interrupts());
    for id in 0..0x400u16 {
        let got = unit.msi(id, 0x41);
        if id == IOMMU_ID {
            assert_eq!(
                got,
                Ok((0x41, 0, false)),
                "the unit's own ID is never remapped"
            );
        } else {
            assert_eq!(got, Err(Refused::NotPresent), "device {id:#06x}");
        }
    }
    // IV (128), IntTabLen = 8 (132:129), IG clear, IntCtl = 10b (189:188), no pass bits,
    // one shared table.
    let q = qword2(&unit, &memory, NVME.id());
    assert_eq!(q & 0x3f, 1 | 8 << 1);
    assert_eq!(q >> 56, 2 << 4);
    assert_eq!(
        q & 0x000f_ffff_ffff_ffc0,
        qword2(&unit, &memory, NIC.id()) & 0x000f_ffff_ffff_ffc0
    );
    assert_eq!(q & 0x7f, 0x11, "table 128-byte aligned");
    // NMI, INIT and ExtINT messages do not pass either.
    for kind in [4, 5, 7] {
        assert_eq!(unit.msi(NVME.id(), kind << 8), Err(Refused::NotPassed));
    }
    // DMA is untouched: pass-through.
    assert!(reaches(&unit, NVME, 0x20_0000, true));
    let events = r.take_events();
    let e = events.last().expect("a refused message is logged").1;
    assert_eq!(e.code, event::IO_PAGE_FAULT);
    assert_ne!(e.flags() & event::FLAG_INTERRUPT, 0);
    let summary = r.summary();
    assert!(summary.interrupts);
    assert_eq!(summary.interrupt_entries, 0);
    assert_eq!(summary.table_pages as u64, memory.in_use());
    clean(&unit, &memory);
}

#[test]
fn an_entry_delivers_for_its_requester_only() {
    let (mut r, unit, memory) = remapping();
    // The unit caches NVME's entry pointing at the zero table, and the zero entry.
    assert_eq!(unit.msi(NVME.id(), 0x41), Err(Refused::NotPresent));
    let level = Target {
        level: true,
        ..TARGET
    };
    r.set_interrupt(NVME, 0x41, level).expect("set");
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 3, false)));
    // The trigger mode is the message's own.
    assert_eq!(unit.msi(NVME.id(), 0x41 | 1 << 15), Ok((0x41, 3, true)));
    assert_eq!(unit.msi(NIC.id(), 0x41), Err(Refused::NotPresent));
    assert_eq!(unit.msi(NVME.id(), 0x42), Err(Refused::NotPresent));
    assert_eq!(r.interrupt_entry(NVME, 0x41), Some(0x0041_0301));
    assert_eq!(r.interrupt_entry(NIC, 0x41), None);
    assert_eq!(r.interrupt_entry(NVME, 0x42), None);
    // Another requester gets its own table, the same index another target.
    let other = Target {
        vector: 0x50,
        destination: 0,
        level: false,
    };
    r.set_interrupt(NIC, 0x41, other).expect("set");
    assert_eq!(unit.msi(NIC.id(), 0x41), Ok((0x50, 0, false)));
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 3, false)));
    assert_ne!(
        qword2(&unit, &memory, NVME.id()) & 0x000f_ffff_ffff_ffc0,
        qword2(&unit, &memory, NIC.id()) & 0x000f_ffff_ffff_ffc0
    );
    // Overwriting an entry the unit cached.
    r.set_interrupt(NVME, 0x41, other).expect("set");
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x50, 0, false)));
    assert_eq!(
        r.interrupt_entries(),
        vec![(NVME, 0x41, 0x0050_0001), (NIC, 0x41, 0x0050_0001)]
    );
    let summary = r.summary();
    assert_eq!(summary.interrupt_entries, 2);
    assert_eq!(summary.table_pages as u64, memory.in_use());
    clean(&unit, &memory);
}

#[test]
fn a_cleared_entry_is_refused_though_the_unit_cached_it() {
    let (mut r, unit, memory) = remapping();
    let baseline = memory.in_use();
    r.set_interrupt(NVME, 0x41, TARGET).expect("set");
    r.set_interrupt(NVME, 0x42, TARGET).expect("set");
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 3, false)));
    assert_eq!(unit.msi(NVME.id(), 0x42), Ok((0x41, 3, false)));
    r.clear_interrupt(NVME, 0x41).expect("clear");
    assert_eq!(unit.msi(NVME.id(), 0x41), Err(Refused::NotPresent));
    assert_eq!(unit.msi(NVME.id(), 0x42), Ok((0x41, 3, false)));
    // The last entry: the table goes back to the shared zero table and is freed.
    r.clear_interrupt(NVME, 0x42).expect("clear");
    assert_eq!(unit.msi(NVME.id(), 0x42), Err(Refused::NotPresent));
    assert_eq!(memory.in_use(), baseline);
    // Clearing what is clear still invalidates.
    let before = executed(&unit, 0x5);
    r.clear_interrupt(NVME, 0x42).expect("clear");
    r.clear_interrupt(NIC, 7).expect("clear");
    assert_eq!(executed(&unit, 0x5), before + 2);
    assert!(r.interrupt_entries().is_empty());
    clean(&unit, &memory);
}

#[test]
fn dma_isolation_and_interrupt_remapping_are_independent() {
    let (mut r, unit, memory) = enabled();
    // Isolated before: enabling interrupt remapping keeps the domain.
    assert!(r.isolate(NIC, &[], &[]).expect("isolate"));
    r.map(NIC, 0x40_0000, 0x1000).expect("map");
    r.enable_interrupt_remapping(&[])
        .expect("interrupt remapping");
    assert!(reaches(&unit, NIC, 0x40_0000, true));
    assert!(!reaches(&unit, NIC, 0x50_0000, true));
    assert_eq!(unit.msi(NIC.id(), 0x41), Err(Refused::NotPresent));
    // Isolated after: the interrupt fields stay.
    r.set_interrupt(NVME, 0x41, TARGET).expect("set");
    assert!(r.isolate(NVME, &[], &[]).expect("isolate"));
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 3, false)));
    assert!(!reaches(&unit, NVME, 0x40_0000, true));
    // Released: DMA passes through again, interrupts are still remapped.
    r.release(NVME).expect("release");
    assert!(reaches(&unit, NVME, 0x40_0000, true));
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 3, false)));
    assert_eq!(unit.msi(NVME.id(), 0x42), Err(Refused::NotPresent));
    // Interrupt changes leave DMA alone.
    r.clear_interrupt(NVME, 0x41).expect("clear");
    r.set_interrupt(NIC, 0x41, TARGET).expect("set");
    assert!(reaches(&unit, NIC, 0x40_0000, true));
    assert!(!reaches(&unit, NIC, 0x50_0000, true));
    r.disable_interrupt_remapping().expect("disable");
    assert!(reaches(&unit, NIC, 0x40_0000, true));
    assert!(!reaches(&unit, NIC, 0x50_0000, true));
    let _ = r.take_events();
    clean(&unit, &memory);
}

#[test]
fn an_io_apic_outside_the_ranges_is_remapped_through_extra() {
    let memory = Memory::new();
    let unit = Unit::new(&memory);
    let ranges = vec![DeviceRange {
        first: 0x100,
        last: 0x3ff,
        alias: None,
    }];
    let mut r = remapper(&memory, &[(&unit, ranges)]);
    r.enable().expect("enable");
    let ioapic = source(0x00a0);
    let beyond = source(0x0400);
    assert!(matches!(
        r.enable_interrupt_remapping(&[beyond]),
        Err(RemapError::Unit(UnitError::Unsupported(_)))
    ));
    assert!(!r.remaps_interrupts());
    r.enable_interrupt_remapping(&[ioapic])
        .expect("interrupt remapping");
    assert_eq!(unit.msi(0x00a0, 0x30), Err(Refused::NotPresent));
    r.set_interrupt(ioapic, 0x30, TARGET).expect("set");
    assert_eq!(unit.msi(0x00a0, 0x30), Ok((0x41, 3, false)));
    // An ID no unit covers, not named: no table to hold its entry, its entry untouched.
    assert_eq!(
        r.set_interrupt(source(0x0010), 0x30, TARGET),
        Err(RemapError::NoInterruptTable)
    );
    assert_eq!(qword2(&unit, &memory, 0x0010), 0);
    assert_eq!(unit.msi(NVME.id(), 0x30), Err(Refused::NotPresent));
    r.disable_interrupt_remapping().expect("disable");
    assert_eq!(qword2(&unit, &memory, 0x00a0), 0);
    assert_eq!(unit.msi(0x00a0, 0x30), Ok((0x30, 0, false)));
    let _ = r.take_events();
    clean(&unit, &memory);
}

#[test]
fn after_disable_messages_pass_untranslated() {
    let (mut r, unit, memory) = enabled();
    let baseline = memory.in_use();
    r.enable_interrupt_remapping(&[])
        .expect("interrupt remapping");
    r.set_interrupt(NVME, 0x41, TARGET).expect("set");
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 3, false)));
    r.disable_interrupt_remapping().expect("disable");
    assert!(!r.remaps_interrupts());
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 0, false)));
    assert_eq!(unit.msi(NIC.id(), 0x33), Ok((0x33, 0, false)));
    assert_eq!(memory.in_use(), baseline);
    assert_eq!(r.interrupt_entry(NVME, 0x41), None);
    assert_eq!(
        r.set_interrupt(NVME, 0x41, TARGET),
        Err(RemapError::NoInterruptTable)
    );
    assert!(!r.summary().interrupts);
    // And on again: empty tables.
    r.enable_interrupt_remapping(&[])
        .expect("interrupt remapping");
    assert_eq!(unit.msi(NVME.id(), 0x41), Err(Refused::NotPresent));
    let _ = r.take_events();
    clean(&unit, &memory);
}

#[test]
fn what_the_entries_cannot_hold_is_an_error() {
    let (mut r, unit, memory) = enabled();
    assert_eq!(
        r.set_interrupt(NVME, 0x41, TARGET),
        Err(RemapError::NoInterruptTable)
    );
    assert_eq!(
        r.clear_interrupt(NVME, 0x41),
        Err(RemapError::NoInterruptTable)
    );
    r.enable_interrupt_remapping(&[])
        .expect("interrupt remapping");
    let far = Target {
        destination: 256,
        ..TARGET
    };
    assert!(matches!(
        r.set_interrupt(NVME, 0x41, far),
        Err(RemapError::Unit(UnitError::Unsupported(_)))
    ));
    for index in [256, 0x7ff, u16::MAX] {
        assert!(matches!(
            r.set_interrupt(NVME, index, TARGET),
            Err(RemapError::Unit(UnitError::Unsupported(_)))
        ));
        assert!(r.clear_interrupt(NVME, index).is_err());
        assert_eq!(r.interrupt_entry(NVME, index), None);
    }
    // The unit's own ID has no entry to set.
    assert_eq!(
        r.set_interrupt(source(IOMMU_ID), 0x41, TARGET),
        Err(RemapError::NoInterruptTable)
    );
    assert!(r.interrupt_entries().is_empty());
    // The last index is inside the table.
    r.set_interrupt(NVME, 0xff, TARGET).expect("set");
    assert_eq!(unit.msi(NVME.id(), 0xff), Ok((0x41, 3, false)));
    // An index beyond IntTabLen (a message the kernel never makes) is refused.
    r.set_interrupt(NVME, 0x41, TARGET).expect("set");
    assert_eq!(unit.msi(NVME.id(), 0x100 | 0x41), Err(Refused::BeyondTable));
    let _ = r.take_events();
    clean(&unit, &memory);
}

#[test]
fn a_unit_that_never_completes_is_an_error_not_a_hang() {
    let (mut r, unit, memory) = remapping();
    r.set_interrupt(NVME, 0x41, TARGET).expect("set");
    unit.state().stuck = true;
    assert!(matches!(
        r.set_interrupt(NVME, 0x42, TARGET),
        Err(RemapError::Unit(UnitError::Timeout(_)))
    ));
    unit.resume();
    r.clear_interrupt(NVME, 0x42).expect("clear");
    unit.state().stuck = true;
    // The last entry: the table is not freed while the unit may still read it.
    assert!(r.clear_interrupt(NVME, 0x41).is_err());
    assert_eq!(r.leaked_pages(), 1);
    assert!(r.disable_interrupt_remapping().is_err());
    assert!(!r.remaps_interrupts());
    assert!(r.leaked_pages() > 1);
    clean(&unit, &memory);
}

#[test]
fn enabling_is_all_units_or_none() {
    let memory = Memory::new();
    let (a, b) = (Unit::new(&memory), Unit::new(&memory));
    let second = vec![DeviceRange {
        first: 0x400,
        last: 0x4ff,
        alias: None,
    }];
    let mut r = remapper(&memory, &[(&a, all_of_bus_0_to_3()), (&b, second)]);
    r.enable().expect("enable");
    let baseline = memory.in_use();
    b.state().stuck = true;
    assert!(r.enable_interrupt_remapping(&[]).is_err());
    assert!(!r.remaps_interrupts());
    assert_eq!(qword2(&a, &memory, NVME.id()), 0);
    assert_eq!(a.msi(NVME.id(), 0x41), Ok((0x41, 0, false)));
    b.resume();
    // The zero table was leaked (unit b never confirmed), nothing else.
    assert_eq!(memory.in_use(), baseline + r.leaked_pages() as u64);
    r.enable_interrupt_remapping(&[])
        .expect("interrupt remapping");
    r.set_interrupt(source(0x401), 0x41, TARGET).expect("set");
    assert_eq!(b.msi(0x401, 0x41), Ok((0x41, 3, false)));
    assert_eq!(a.msi(NVME.id(), 0x41), Err(Refused::NotPresent));
    clean(&a, &memory);
    clean(&b, &memory);
}

#[test]
fn without_invalidate_all_each_entry_and_table_is_invalidated() {
    let memory = Memory::new();
    let unit = Unit::new(&memory);
    unit.state().efr = 0;
    let mut r = remapper(&memory, &[(&unit, all_of_bus_0_to_3())]);
    r.enable().expect("enable");
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 0, false)));
    let before = (executed(&unit, 0x2), executed(&unit, 0x5));
    r.enable_interrupt_remapping(&[])
        .expect("interrupt remapping");
    assert_eq!(executed(&unit, 0x2), before.0 + 1023);
    assert_eq!(executed(&unit, 0x5), before.1 + 1023);
    assert_eq!(executed(&unit, 0x8), 0);
    assert_eq!(unit.msi(NVME.id(), 0x41), Err(Refused::NotPresent));
    r.set_interrupt(NVME, 0x41, TARGET).expect("set");
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 3, false)));
    r.disable_interrupt_remapping().expect("disable");
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 0, false)));
    let _ = r.take_events();
    clean(&unit, &memory);
}

#[test]
fn tables_let_go_while_translation_is_off_are_freed_after_the_next_enable() {
    let (mut r, unit, memory) = remapping();
    let baseline = memory.in_use();
    r.set_interrupt(NVME, 0x41, TARGET).expect("set");
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 3, false)));
    r.disable().expect("disable");
    r.clear_interrupt(NVME, 0x41).expect("clear");
    assert_eq!(memory.in_use(), baseline + 1);
    assert_eq!(r.summary().table_pages as u64, memory.in_use());
    r.enable().expect("enable");
    assert_eq!(memory.in_use(), baseline);
    assert_eq!(unit.msi(NVME.id(), 0x41), Err(Refused::NotPresent));
    let _ = r.take_events();
    clean(&unit, &memory);
}

#[test]
fn an_entry_cleared_while_translation_is_off_is_forgotten_at_enable() {
    // Without INVALIDATE_IOMMU_ALL: enable() invalidates every interrupt table itself.
    let memory = Memory::new();
    let unit = Unit::new(&memory);
    unit.state().efr = 0;
    let mut r = remapper(&memory, &[(&unit, all_of_bus_0_to_3())]);
    r.enable().expect("enable");
    r.enable_interrupt_remapping(&[])
        .expect("interrupt remapping");
    r.set_interrupt(NVME, 0x41, TARGET).expect("set");
    r.set_interrupt(NVME, 0x42, TARGET).expect("set");
    assert_eq!(unit.msi(NVME.id(), 0x41), Ok((0x41, 3, false)));
    r.disable().expect("disable");
    r.clear_interrupt(NVME, 0x41).expect("clear");
    r.enable().expect("enable");
    assert_eq!(unit.msi(NVME.id(), 0x41), Err(Refused::NotPresent));
    assert_eq!(unit.msi(NVME.id(), 0x42), Ok((0x41, 3, false)));
    let _ = r.take_events();
    clean(&unit, &memory);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 64 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random sets and clears for three requesters: after every step each requester's
    /// message for each index delivers exactly what a reference map says, wherever the unit
    /// cached entries before (every step's checks fill its caches).
    #[test]
    fn each_requester_raises_exactly_its_entries(
        ops in proptest::collection::vec((0usize..3, any::<bool>(), 0u16..6, 0x20u8..0xff, 0u32..4), 1..40),
    ) {
        let (mut r, unit, memory) = enabled();
        let baseline = memory.in_use();
        r.enable_interrupt_remapping(&[]).expect("interrupt remapping");
        let sources = [NVME, NIC, Source { segment: 0, bus: 3, devfn: 9 }];
        let mut reference: std::collections::BTreeMap<(usize, u16), (u8, u8)> = Default::default();
        for (who, set, index, vector, destination) in ops {
            let index = 0x40 + index;
            if set {
                let target = Target { vector, destination, level: false };
                r.set_interrupt(sources[who], index, target).expect("set");
                reference.insert((who, index), (vector, destination as u8));
            } else {
                r.clear_interrupt(sources[who], index).expect("clear");
                reference.remove(&(who, index));
            }
            for (i, s) in sources.iter().enumerate() {
                for index in 0x3fu16..0x47 {
                    let expected = reference
                        .get(&(i, index))
                        .map(|&(v, d)| (v, d, false))
                        .ok_or(Refused::NotPresent);
                    prop_assert_eq!(unit.msi(s.id(), u32::from(index)), expected);
                    prop_assert_eq!(
                        r.interrupt_entry(*s, index).is_some(),
                        reference.contains_key(&(i, index))
                    );
                }
            }
            prop_assert_eq!(r.interrupt_entries().len(), reference.len());
            prop_assert_eq!(r.summary().table_pages as u64, memory.in_use());
        }
        let _ = r.take_events();
        r.disable_interrupt_remapping().expect("disable");
        prop_assert_eq!(memory.in_use(), baseline);
        clean(&unit, &memory);
    }
}
