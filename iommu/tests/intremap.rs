//! Interrupt remapping against the model unit: which requester's messages reach which
//! vector after each step, and that every change reaches the unit's caches through its queue.

mod model;
mod support;

use iommu::intremap::{ioapic_entry, msi_address};
use iommu::{RemapError, SourceCheck, Target, UnitError};
use model::{IrqOutcome, Memory, Model, Outcome, QueueMode, vtd};
use proptest::prelude::*;
use support::*;

#[test]
fn enabling_turns_on_the_queue_and_remapping_with_an_empty_table() {
    let (mut r, unit, memory) = setup(true, false);
    let before = memory.in_use();
    r.enable_interrupt_remapping(false)
        .expect("interrupt remapping");
    assert!(r.remaps_interrupts());
    let on = vtd::QIE | vtd::IRE | vtd::SIRTP;
    assert_eq!(gsts(&unit) & (on | vtd::CFI), on, "{:#x}", gsts(&unit));
    {
        let s = unit.state();
        let irta = s.irta_latched.expect("a table latched");
        assert_eq!(irta & 0xf, 7, "256 entries");
        assert_eq!(irta & vtd::EIME, 0);
        assert!(memory.contains(irta & !0xfff));
        assert_eq!(s.iec_invalidations, vec![None]);
        assert!(s.waits >= 1);
    }
    // The queue, its status page and the table.
    assert_eq!(memory.in_use(), before + 3);
    let summary = r.summary();
    assert!(summary.interrupts);
    assert_eq!(summary.interrupt_entries, 0);
    // Every index is refused until an entry is written.
    assert_eq!(msi(&unit, NVME, 0x41), IrqOutcome::Refused(0x22));
    clean(&unit, &memory);
}

#[test]
fn a_remapped_message_reaches_its_target_from_its_requester_only() {
    let (mut r, unit, memory) = remapped(true, false);
    r.set_interrupt(0, 0x41, edge(0x41, 3), SourceCheck::Requester(NVME.id()))
        .expect("set");
    assert!(r.interrupt_entry(0, 0x41).is_some());
    assert_eq!(msi(&unit, NVME, 0x41), delivered(0x41, 3));
    assert!(r.take_faults().is_empty());
    // Another requester, and another function of the same device, naming the same entry.
    assert_eq!(msi(&unit, NIC, 0x41), IrqOutcome::Refused(0x26));
    assert_eq!(
        unit.interrupt(NVME.id() | 1, msi_address(0x41, false), 0),
        IrqOutcome::Refused(0x26)
    );
    assert_eq!(
        r.take_faults(),
        vec![
            interrupt_fault(NIC.id(), 0x41, 0x26),
            interrupt_fault(NVME.id() | 1, 0x41, 0x26)
        ]
    );
    // A made-up compatibility-format message for the same vector and an entry nobody set.
    assert_eq!(
        unit.interrupt(NVME.id(), 0xfee0_3000, 0x41),
        IrqOutcome::Refused(0x25)
    );
    assert_eq!(msi(&unit, NVME, 0x42), IrqOutcome::Refused(0x22));
    assert_eq!(
        r.take_faults(),
        vec![
            interrupt_fault(NVME.id(), 0, 0x25),
            interrupt_fault(NVME.id(), 0x42, 0x22)
        ]
    );
    clean(&unit, &memory);
}

#[test]
fn a_cleared_entry_is_forgotten_by_the_unit() {
    let (mut r, unit, memory) = remapped(true, false);
    r.set_interrupt(0, 0x41, edge(0x41, 3), SourceCheck::Requester(NVME.id()))
        .expect("set");
    assert_eq!(msi(&unit, NVME, 0x41), delivered(0x41, 3));
    assert!(unit.state().irte_cache.contains_key(&0x41), "not cached");
    r.clear_interrupt(0, 0x41).expect("clear");
    assert_eq!(r.interrupt_entry(0, 0x41), None);
    assert_eq!(unit.state().iec_invalidations.last(), Some(&Some(0x41)));
    assert_eq!(msi(&unit, NVME, 0x41), IrqOutcome::Refused(0x22));
    assert_eq!(
        r.take_faults(),
        vec![interrupt_fault(NVME.id(), 0x41, 0x22)]
    );
    r.clear_interrupt(0, 0x41).expect("clearing twice");
    clean(&unit, &memory);
}

#[test]
fn a_rewritten_entry_delivers_its_new_target_to_its_new_owner() {
    let (mut r, unit, memory) = remapped(true, false);
    r.set_interrupt(0, 0x41, edge(0x41, 3), SourceCheck::Requester(NVME.id()))
        .expect("set");
    assert_eq!(msi(&unit, NVME, 0x41), delivered(0x41, 3));
    r.set_interrupt(0, 0x41, edge(0x41, 5), SourceCheck::Requester(NIC.id()))
        .expect("set again");
    assert_eq!(msi(&unit, NIC, 0x41), delivered(0x41, 5));
    assert_eq!(msi(&unit, NVME, 0x41), IrqOutcome::Refused(0x26));
    let _ = r.take_faults();
    clean(&unit, &memory);
}

#[test]
fn a_bus_range_check_admits_requesters_on_those_buses_only() {
    let (mut r, unit, memory) = remapped(true, false);
    r.set_interrupt(0, 0x60, edge(0x60, 1), SourceCheck::Buses(2, 3))
        .expect("set");
    for id in [0x0200, 0x0208, 0x0318, 0x03ff] {
        let got = unit.interrupt(id, msi_address(0x60, false), 0);
        assert_eq!(got, delivered(0x60, 1), "requester {id:#06x}");
    }
    for id in [0x0000, 0x0100, 0x01ff, 0x0400, 0xf0f8] {
        let got = unit.interrupt(id, msi_address(0x60, false), 0);
        assert_eq!(got, IrqOutcome::Refused(0x26), "requester {id:#06x}");
        let _ = r.take_faults();
    }
    clean(&unit, &memory);
}

/// `intremap=nosid`: an entry without a source check takes any requester's message, but
/// still only while it is present.
#[test]
fn an_entry_without_a_source_check_admits_any_requester_while_present() {
    let (mut r, unit, memory) = remapped(true, false);
    r.set_interrupt(0, 0x61, edge(0x61, 1), SourceCheck::Any)
        .expect("set");
    for id in [0x0000, 0x0210, 0xf0f8, 0xffff] {
        let got = unit.interrupt(id, msi_address(0x61, false), 0);
        assert_eq!(got, delivered(0x61, 1), "requester {id:#06x}");
    }
    r.clear_interrupt(0, 0x61).expect("clear");
    assert_eq!(
        unit.interrupt(0x0210, msi_address(0x61, false), 0),
        IrqOutcome::Refused(0x22)
    );
    let _ = r.take_faults();
    clean(&unit, &memory);
}

#[test]
fn a_multi_message_msi_reaches_the_base_entry_plus_the_message_number() {
    let (mut r, unit, memory) = remapped(true, false);
    for n in 0..4u16 {
        let vector = 0x50 + n as u8;
        r.set_interrupt(
            0,
            0x50 + n,
            edge(vector, 2),
            SourceCheck::Requester(HBA.id()),
        )
        .expect("set");
    }
    let address = msi_address(0x50, true);
    for n in 0..4u32 {
        let got = unit.interrupt(HBA.id(), address, n);
        assert_eq!(got, delivered(0x50 + n as u8, 2), "message {n}");
    }
    assert_eq!(
        unit.interrupt(NIC.id(), address, 1),
        IrqOutcome::Refused(0x26)
    );
    // Message 4 names entry 54h, not set; message B0h names 100h, past the 256 entries.
    assert_eq!(
        unit.interrupt(HBA.id(), address, 4),
        IrqOutcome::Refused(0x22)
    );
    assert_eq!(
        unit.interrupt(HBA.id(), address, 0xb0),
        IrqOutcome::Refused(0x21)
    );
    assert_eq!(
        r.take_faults(),
        vec![
            interrupt_fault(NIC.id(), 0x51, 0x26),
            interrupt_fault(HBA.id(), 0x54, 0x22),
            interrupt_fault(HBA.id(), 0x100, 0x21)
        ]
    );
    clean(&unit, &memory);
}

/// The message an I/O APIC sends for a remappable-format redirection entry (VT-d §5.1.5.1):
/// address 0xFEE00000 with RTE bits 63:48 (handle[14:0], format) in 19:4 and handle[15]
/// (RTE bit 11) in bit 2; data: the vector and the trigger mode in bit 15.
fn ioapic_message(rte: u64) -> (u64, u32) {
    let address = 0xfee0_0000 | ((rte >> 48) & 0xffff) << 4 | ((rte >> 11) & 1) << 2;
    let data = (rte & 0xff) as u32 | (((rte >> 15) & 1) as u32) << 15;
    (address, data)
}

#[test]
fn an_ioapic_entry_names_its_remapping_entry() {
    let (mut r, unit, memory) = remapped(true, false);
    let target = Target {
        vector: 0x31,
        destination: 2,
        level: true,
    };
    r.set_interrupt(0, 0x31, target, SourceCheck::Requester(IOAPIC))
        .expect("set");
    let rte = ioapic_entry(0x31, 0x31, true, true, false);
    assert_eq!(rte & (1 << 16), 0, "masked");
    let (address, data) = ioapic_message(rte);
    let level = IrqOutcome::Delivered {
        vector: 0x31,
        destination: 2,
        level: true,
    };
    assert_eq!(unit.interrupt(IOAPIC, address, data), level);
    assert_eq!(
        unit.interrupt(NVME.id(), address, data),
        IrqOutcome::Refused(0x26)
    );
    // handle[15] travels too: entry 8031h is past the table.
    let (high, _) = ioapic_message(ioapic_entry(0x8031, 0x31, true, true, false));
    assert_eq!(
        unit.interrupt(IOAPIC, high, data),
        IrqOutcome::Refused(0x21)
    );
    assert_eq!(msi(&unit, NVME, 0x8041), IrqOutcome::Refused(0x21));
    assert_eq!(
        r.take_faults(),
        vec![
            interrupt_fault(NVME.id(), 0x31, 0x26),
            interrupt_fault(IOAPIC, 0x8031, 0x21),
            interrupt_fault(NVME.id(), 0x8041, 0x21)
        ]
    );
    clean(&unit, &memory);
}

#[test]
fn a_unit_without_interrupt_remapping_or_queued_invalidation_turns_nothing_on() {
    for missing in [vtd::ECAP_IR, vtd::ECAP_QI] {
        let memory = Memory::new();
        let good = Model::with_interrupt_remapping(&memory, true, false);
        let lacking = Model::with_interrupt_remapping(&memory, true, false);
        lacking.state().ecap &= !missing;
        let mut r = remapper(&memory, &[&good, &lacking]);
        r.enable((0, 3)).expect("enable");
        let before = memory.in_use();
        let result = r.enable_interrupt_remapping(false);
        assert!(
            matches!(result, Err(RemapError::Unit(UnitError::Unsupported(_)))),
            "{result:?}"
        );
        assert!(!r.remaps_interrupts());
        for unit in [&good, &lacking] {
            assert_eq!(gsts(unit) & (vtd::QIE | vtd::IRE), 0, "{:#x}", gsts(unit));
            // Compatibility format, as before.
            let got = unit.interrupt(NVME.id(), 0xfee0_3000, 0x8041);
            let want = IrqOutcome::Delivered {
                vector: 0x41,
                destination: 3,
                level: true,
            };
            assert_eq!(got, want);
        }
        assert_eq!(memory.in_use(), before);
        assert_eq!(
            r.set_interrupt(0, 0x41, edge(0x41, 0), SourceCheck::Requester(NVME.id())),
            Err(RemapError::NoInterruptTable)
        );
        clean(&good, &memory);
        clean(&lacking, &memory);
    }
}

#[test]
fn x2apic_destinations_need_extended_interrupt_mode() {
    let (mut r, unit, memory) = setup(true, false);
    let result = r.enable_interrupt_remapping(true);
    assert!(
        matches!(result, Err(RemapError::Unit(UnitError::Unsupported(_)))),
        "{result:?}"
    );
    assert_eq!(gsts(&unit) & (vtd::QIE | vtd::IRE), 0);
    // xAPIC destinations still work.
    r.enable_interrupt_remapping(false)
        .expect("interrupt remapping");
    r.set_interrupt(0, 0x41, edge(0x41, 0xfe), SourceCheck::Requester(NVME.id()))
        .expect("set");
    assert_eq!(msi(&unit, NVME, 0x41), delivered(0x41, 0xfe));
    clean(&unit, &memory);
}

#[test]
fn with_extended_interrupt_mode_a_32_bit_destination_arrives_intact() {
    let (mut r, unit, memory) = remapped(true, true);
    let irta = unit.state().irta_latched.expect("latched");
    assert_ne!(irta & vtd::EIME, 0);
    r.set_interrupt(
        0,
        0x41,
        edge(0x41, 0x1_0003),
        SourceCheck::Requester(NVME.id()),
    )
    .expect("set");
    assert_eq!(msi(&unit, NVME, 0x41), delivered(0x41, 0x1_0003));
    // Compatibility format is blocked whatever CFI says once EIME is set.
    assert_eq!(
        unit.interrupt(NVME.id(), 0xfee0_3000, 0x41),
        IrqOutcome::Refused(0x25)
    );
    clean(&unit, &memory);
}

#[test]
fn compatibility_format_is_blocked_even_when_firmware_left_cfi_on() {
    let (mut r, unit, memory) = setup(true, false);
    unit.state().gsts |= vtd::CFI;
    r.enable_interrupt_remapping(false)
        .expect("interrupt remapping");
    assert_eq!(gsts(&unit) & vtd::CFI, 0);
    assert_eq!(
        unit.interrupt(NIC.id(), 0xfee0_1000, 0x33),
        IrqOutcome::Refused(0x25)
    );
    clean(&unit, &memory);
}

#[test]
fn dma_remapping_keeps_working_with_invalidations_through_the_queue() {
    let (mut r, unit, memory) = setup(true, false);
    r.isolate(NVME, &[], &[]).expect("isolate");
    r.map(NVME, 0x40_0000, 0x2000).expect("map");
    assert_eq!(
        unit.access(NVME.id(), 0x40_1000, true),
        Outcome::Reached(0x40_1000)
    );
    r.enable_interrupt_remapping(false)
        .expect("interrupt remapping");
    let (contexts, iotlbs, waits) = {
        let s = unit.state();
        (
            s.context_invalidations,
            s.iotlb_invalidations.len(),
            s.waits,
        )
    };
    // The IOTLB holds the translation: unmap must invalidate it, now through the queue.
    r.unmap(NVME, 0x40_1000, 0x1000).expect("unmap");
    assert_eq!(
        unit.access(NVME.id(), 0x40_1000, true),
        Outcome::Fault(0x05)
    );
    assert_eq!(
        unit.access(NVME.id(), 0x40_0000, true),
        Outcome::Reached(0x40_0000)
    );
    {
        let s = unit.state();
        assert_eq!(s.iotlb_invalidations.len(), iotlbs + 1);
        assert!(matches!(s.iotlb_invalidations.last(), Some(Some(_))));
        assert!(s.waits > waits);
    }
    r.map(NVME, 0x50_0000, 0x1000).expect("map");
    assert_eq!(
        unit.access(NVME.id(), 0x50_0000, false),
        Outcome::Reached(0x50_0000)
    );
    // A new domain and a released one change context entries: context-cache invalidations.
    r.isolate(NIC, &[], &[]).expect("isolate");
    assert_eq!(unit.access(NIC.id(), 0x50_0000, true), Outcome::Fault(0x05));
    r.unmap(NVME, 0x40_0000, 0x1000).expect("unmap");
    r.unmap(NVME, 0x50_0000, 0x1000).expect("unmap");
    r.release(NVME).expect("release");
    assert_eq!(
        unit.access(NVME.id(), 0x70_0000, true),
        Outcome::Reached(0x70_0000)
    );
    assert!(unit.state().context_invalidations > contexts);
    let _ = r.take_faults();
    // No register-based invalidation while the queue is on (the model flags one).
    clean(&unit, &memory);
}

#[test]
fn a_unit_that_does_not_snoop_reads_only_flushed_entries_and_descriptors() {
    let (mut r, unit, memory) = remapped(false, false);
    let sources = [NVME, NIC, HBA];
    for (n, s) in sources.iter().enumerate() {
        let index = 0x40 + n as u16;
        r.set_interrupt(
            0,
            index,
            edge(index as u8, 1),
            SourceCheck::Requester(s.id()),
        )
        .expect("set");
        assert_eq!(msi(&unit, *s, index), delivered(index as u8, 1));
    }
    r.set_interrupt(0, 0x41, edge(0x41, 2), SourceCheck::Buses(1, 3))
        .expect("rewrite");
    assert_eq!(msi(&unit, HBA, 0x41), delivered(0x41, 2));
    r.clear_interrupt(0, 0x40).expect("clear");
    assert_eq!(msi(&unit, NVME, 0x40), IrqOutcome::Refused(0x22));
    r.isolate(NVME, &[], &[]).expect("isolate");
    r.map(NVME, 0x40_0000, 0x3000).expect("map");
    assert_eq!(
        unit.access(NVME.id(), 0x40_2000, true),
        Outcome::Reached(0x40_2000)
    );
    r.unmap(NVME, 0x40_0000, 0x3000).expect("unmap");
    assert_eq!(
        unit.access(NVME.id(), 0x40_2000, true),
        Outcome::Fault(0x05)
    );
    let _ = r.take_faults();
    assert!(memory.0.borrow().flushes > 0);
    clean(&unit, &memory);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 48 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random writes and clears of entries for three requesters: after every step, each
    /// requester's message naming each index is delivered (with the entry's vector and
    /// destination) exactly when the entry is present and is that requester's, wherever the
    /// unit cached entries before.
    #[test]
    fn every_requester_raises_exactly_its_present_entries(
        ops in proptest::collection::vec((0usize..3, any::<bool>(), 0u16..24, any::<u8>()), 1..40),
        coherent in any::<bool>(),
        immediate in any::<bool>(),
        eim in any::<bool>(),
    ) {
        let (mut r, unit, memory) = remapped(coherent, eim);
        unit.state().queue = if immediate { QueueMode::Immediate } else { QueueMode::Lazy };
        let sources = [NVME, NIC, HBA];
        let destination = |who: usize| if eim { 0x1_0000 * who as u32 + 7 } else { who as u32 + 1 };
        let mut entries = std::collections::BTreeMap::new();
        for (who, set, slot, vector) in ops {
            let index = 0x20 + slot;
            if set {
                let check = SourceCheck::Requester(sources[who].id());
                r.set_interrupt(0, index, edge(vector, destination(who)), check).expect("set");
                entries.insert(index, (who, vector));
            } else {
                r.clear_interrupt(0, index).expect("clear");
                entries.remove(&index);
            }
            for (i, s) in sources.iter().enumerate() {
                for index in 0x20..0x20 + 24u16 {
                    let want = match entries.get(&index) {
                        Some(&(w, v)) if w == i => delivered(v, destination(w)),
                        Some(_) => IrqOutcome::Refused(0x26),
                        None => IrqOutcome::Refused(0x22),
                    };
                    prop_assert_eq!(msi(&unit, *s, index), want, "requester {} index {:#x}", i, index);
                }
            }
            let _ = r.take_faults();
        }
        clean(&unit, &memory);
    }
}

/// Remapping turned off again (the kernel's fallback when I/O APIC interrupts do not
/// arrive): messages are taken in the compatibility format, and the queue still works.
#[test]
fn turning_remapping_off_again_takes_compatibility_messages() {
    let (mut r, unit, memory) = remapped(true, false);
    r.set_interrupt(0, 0x41, edge(0x41, 3), SourceCheck::Requester(NVME.id()))
        .expect("set");
    assert_eq!(
        unit.interrupt(NVME.id(), 0xfee0_3000, 0x42),
        IrqOutcome::Refused(0x25)
    );
    let _ = r.take_faults();
    r.disable_interrupt_remapping().expect("off");
    assert!(!r.remaps_interrupts());
    assert_eq!(
        unit.interrupt(NVME.id(), 0xfee0_3000, 0x42),
        delivered(0x42, 3)
    );
    r.clear_interrupt(0, 0x41)
        .expect_err("no table in use any more");
    clean(&unit, &memory);
}
