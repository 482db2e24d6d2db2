//! The remapper against the model unit: what each device can reach after each step.

mod model;

use iommu::{RemapError, Remapper, Scope, ScopeEntry, Source, UnitError, UnitSetup};
use model::{Memory, Model, Outcome};
use proptest::prelude::*;

const NVME: Source = Source {
    segment: 0,
    bus: 1,
    devfn: 0,
};
const NIC: Source = Source {
    segment: 0,
    bus: 2,
    devfn: 0,
};
const GPU: Source = Source {
    segment: 0,
    bus: 0,
    devfn: 2 << 3,
};

fn setup(coherent: bool) -> (Remapper<Model, Memory>, Model, Memory) {
    let memory = Memory::new();
    let unit = Model::new(&memory, coherent);
    let remapper = Remapper::new(
        memory.clone(),
        vec![UnitSetup {
            regs: unit.clone(),
            segment: 0,
            scope: Scope::All,
        }],
    )
    .expect("remapper");
    (remapper, unit, memory)
}

fn clean(unit: &Model, memory: &Memory) {
    let u = unit.state();
    assert!(u.violations.is_empty(), "unit: {:?}", u.violations);
    let m = memory.0.borrow();
    assert!(m.violations.is_empty(), "memory: {:?}", m.violations);
}

#[test]
fn unclaimed_devices_pass_through_once_translation_is_on() {
    let (mut r, unit, memory) = setup(true);
    r.enable((0, 3)).expect("enable");
    assert!(r.enabled());
    assert_eq!(
        unit.access(NVME.id(), 0x1234_5678, true),
        Outcome::Reached(0x1234_5678)
    );
    assert_eq!(
        unit.access(GPU.id(), 0xdead_b000, false),
        Outcome::Reached(0xdead_b000)
    );
    // A bus past the ones given has no context entry: blocked.
    assert_eq!(unit.access(0x0900, 0x1000, true), Outcome::Fault(0x01));
    clean(&unit, &memory);
}

#[test]
fn an_isolated_function_reaches_only_what_is_mapped_for_it() {
    let (mut r, unit, memory) = setup(true);
    r.enable((0, 3)).expect("enable");
    assert!(r.isolate(NVME, &[], &[]).expect("isolate"));
    // Nothing mapped yet: blocked, and the fault is recorded with the requester and page.
    assert_eq!(
        unit.access(NVME.id(), 0x20_0000, true),
        Outcome::Fault(0x05)
    );
    let faults = r.take_faults();
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].1.source, NVME.id());
    assert_eq!(faults[0].1.address, 0x20_0000);
    assert!(faults[0].1.write);
    assert!(r.take_faults().is_empty(), "a fault reported twice");
    // Two pages at 0x40_0000.
    r.map(NVME, 0x40_0000, 0x2000).expect("map");
    assert_eq!(
        unit.access(NVME.id(), 0x40_0010, true),
        Outcome::Reached(0x40_0010)
    );
    assert_eq!(
        unit.access(NVME.id(), 0x40_1ff8, false),
        Outcome::Reached(0x40_1ff8)
    );
    assert_eq!(
        unit.access(NVME.id(), 0x40_2000, true),
        Outcome::Fault(0x05)
    );
    assert_eq!(
        unit.access(NVME.id(), 0x3f_f000, false),
        Outcome::Fault(0x06)
    );
    // Its neighbour still passes through.
    assert_eq!(
        unit.access(NIC.id(), 0x20_0000, true),
        Outcome::Reached(0x20_0000)
    );
    clean(&unit, &memory);
}

#[test]
fn after_unmap_the_device_cannot_use_a_cached_translation() {
    let (mut r, unit, memory) = setup(true);
    r.enable((0, 3)).expect("enable");
    r.isolate(NVME, &[], &[]).expect("isolate");
    r.map(NVME, 0x40_0000, 0x1000).expect("map");
    // The unit caches the translation...
    assert_eq!(
        unit.access(NVME.id(), 0x40_0000, true),
        Outcome::Reached(0x40_0000)
    );
    assert_eq!(unit.state().tlb.len(), 1);
    // ...and unmap returns only after invalidating it.
    r.unmap(NVME, 0x40_0000, 0x1000).expect("unmap");
    assert_eq!(
        unit.access(NVME.id(), 0x40_0000, true),
        Outcome::Fault(0x05)
    );
    clean(&unit, &memory);
}

/// Two conventional functions behind a PCIe-to-PCI bridge: their requests reach the unit as
/// the bridge's secondary bus, devfn 0. Each is isolated with that alias; they share one
/// domain, and the alias reaches exactly their pages.
#[test]
fn functions_behind_a_pcie_to_pci_bridge_share_their_alias_domain() {
    let (mut r, unit, memory) = setup(true);
    r.enable((0, 5)).expect("enable");
    let alias = Source {
        segment: 0,
        bus: 5,
        devfn: 0,
    };
    let a = Source {
        segment: 0,
        bus: 5,
        devfn: 2 << 3,
    };
    let b = Source {
        segment: 0,
        bus: 5,
        devfn: 3 << 3,
    };
    assert_eq!(r.isolate(a, &[alias], &[]), Ok(true));
    r.map(a, 0x40_0000, 0x1000).expect("map a");
    assert_eq!(
        unit.access(alias.id(), 0x40_0000, true),
        Outcome::Reached(0x40_0000)
    );
    assert_eq!(
        unit.access(alias.id(), 0x50_0000, true),
        Outcome::Fault(0x05)
    );
    assert_eq!(r.isolate(b, &[alias], &[]), Ok(true));
    assert_eq!(r.summary().domains, 1, "the alias's domain was not shared");
    r.map(b, 0x50_0000, 0x1000).expect("map b");
    assert_eq!(
        unit.access(alias.id(), 0x50_0000, true),
        Outcome::Reached(0x50_0000)
    );
    assert_eq!(
        unit.access(b.id(), 0x40_0000, false),
        Outcome::Reached(0x40_0000)
    );
    // One leaves: the other's pages stay reachable through the alias.
    r.unmap(a, 0x40_0000, 0x1000).expect("unmap a");
    r.release(a).expect("release a");
    assert_eq!(
        unit.access(alias.id(), 0x40_0000, true),
        Outcome::Fault(0x05)
    );
    assert_eq!(
        unit.access(alias.id(), 0x50_0000, true),
        Outcome::Reached(0x50_0000)
    );
    // The last leaves: the alias passes through again.
    r.unmap(b, 0x50_0000, 0x1000).expect("unmap b");
    r.release(b).expect("release b");
    assert_eq!(r.summary().domains, 0);
    assert_eq!(
        unit.access(alias.id(), 0x60_0000, true),
        Outcome::Reached(0x60_0000)
    );
    clean(&unit, &memory);
}

#[test]
fn release_passes_through_again_and_frees_the_domain() {
    let (mut r, unit, memory) = setup(true);
    r.enable((0, 3)).expect("enable");
    let before = memory.in_use();
    r.isolate(NVME, &[], &[]).expect("isolate");
    r.map(NVME, 0x7654_3000, 0x3000).expect("map");
    assert!(memory.in_use() > before);
    r.unmap(NVME, 0x7654_3000, 0x3000).expect("unmap");
    r.release(NVME).expect("release");
    assert_eq!(
        memory.in_use(),
        before,
        "the domain's tables were not all freed"
    );
    assert!(!r.isolated(NVME));
    assert_eq!(
        unit.access(NVME.id(), 0x20_0000, true),
        Outcome::Reached(0x20_0000)
    );
    clean(&unit, &memory);
}

#[test]
fn reserved_regions_stay_reachable_for_the_device_they_belong_to() {
    let (mut r, unit, memory) = setup(true);
    r.enable((0, 3)).expect("enable");
    r.isolate(NVME, &[], &[(0x9a00_0000, 0x9a00_2000)])
        .expect("isolate");
    assert_eq!(
        unit.access(NVME.id(), 0x9a00_1000, false),
        Outcome::Reached(0x9a00_1000)
    );
    assert_eq!(
        unit.access(NVME.id(), 0x9a00_2000, false),
        Outcome::Fault(0x06)
    );
    clean(&unit, &memory);
}

/// Pass-through entries carry the unit's largest address width (5 levels here), domains the
/// 4-level tables this crate writes.
#[test]
fn pass_through_entries_carry_the_largest_width() {
    let memory = Memory::new();
    let unit = Model::new(&memory, true);
    unit.state().cap |= 0b1000 << iommu::regs::CAP_SAGAW_SHIFT;
    let mut r = Remapper::new(
        memory.clone(),
        vec![UnitSetup {
            regs: unit.clone(),
            segment: 0,
            scope: Scope::All,
        }],
    )
    .expect("remapper");
    r.enable((0, 1)).expect("enable");
    let root = unit.state().latched.expect("root latched");
    let context = iommu::TableMemory::read(&memory, root + 16) & !0xfff;
    let high = iommu::TableMemory::read(&memory, context + 8);
    assert_eq!(high & 7, 3, "AW of a pass-through entry: {high:#x}");
    r.isolate(NVME, &[], &[]).expect("isolate");
    let high = iommu::TableMemory::read(&memory, context + 8);
    assert_eq!(high & 7, 2, "AW of a 4-level domain: {high:#x}");
}

#[test]
fn firmware_left_translation_on_it_is_turned_off_before_the_new_root() {
    let (mut r, unit, memory) = setup(true);
    unit.state().gsts = iommu::regs::GCMD_TE;
    r.enable((0, 1)).expect("enable");
    let commands = unit.state().commands.clone();
    assert_eq!(commands[0] & iommu::regs::GCMD_TE, 0, "{commands:x?}");
    assert!(r.enabled());
    clean(&unit, &memory);
}

#[test]
fn firmware_left_queued_invalidation_and_interrupt_remapping_on() {
    let (mut r, unit, memory) = setup(true);
    {
        let mut u = unit.state();
        u.gsts = iommu::regs::GCMD_TE | iommu::regs::GCMD_QIE | iommu::regs::GCMD_IRE;
        u.iqt = 0x40; // four descriptors not fetched yet
    }
    r.enable((0, 1)).expect("enable");
    let gsts = unit.state().gsts;
    assert_eq!(
        gsts & (iommu::regs::GCMD_QIE | iommu::regs::GCMD_IRE),
        0,
        "{gsts:#x}"
    );
    assert_ne!(gsts & iommu::regs::GCMD_TE, 0);
    clean(&unit, &memory);
}

#[test]
fn a_unit_that_never_finishes_an_invalidation_is_an_error_not_a_hang() {
    let (mut r, unit, _memory) = setup(true);
    unit.state().stuck_ccmd = true;
    assert_eq!(
        r.enable((0, 0)),
        Err(RemapError::Unit(UnitError::Timeout(
            "a context-cache invalidation"
        )))
    );
    assert!(!r.enabled());
    assert_eq!(unit.state().gsts & iommu::regs::GCMD_TE, 0);
}

#[test]
fn a_unit_that_does_not_snoop_sees_only_flushed_entries() {
    let (mut r, unit, memory) = setup(false);
    r.enable((0, 3)).expect("enable");
    r.isolate(NVME, &[], &[]).expect("isolate");
    r.map(NVME, 0x40_0000, 0x4000).expect("map");
    for page in 0..4 {
        let a = 0x40_0000 + page * 0x1000;
        assert_eq!(unit.access(NVME.id(), a, true), Outcome::Reached(a));
    }
    assert_eq!(
        unit.access(NIC.id(), 0x1000, true),
        Outcome::Reached(0x1000)
    );
    clean(&unit, &memory);
}

#[test]
fn units_translate_for_their_own_scopes() {
    let memory = Memory::new();
    let graphics = Model::new(&memory, true);
    let rest = Model::new(&memory, true);
    let mut r = Remapper::new(
        memory.clone(),
        vec![
            UnitSetup {
                regs: graphics.clone(),
                segment: 0,
                scope: Scope::Listed(vec![ScopeEntry::Function(0, 2 << 3)]),
            },
            UnitSetup {
                regs: rest.clone(),
                segment: 0,
                scope: Scope::All,
            },
        ],
    )
    .expect("remapper");
    assert_eq!(r.unit_for(GPU), Some(0));
    assert_eq!(r.unit_for(NVME), Some(1));
    assert_eq!(r.unit_for(Source { segment: 1, ..NVME }), None);
    r.enable((0, 3)).expect("enable");
    r.isolate(NVME, &[], &[]).expect("isolate");
    r.map(NVME, 0x40_0000, 0x1000).expect("map");
    assert_eq!(
        rest.access(NVME.id(), 0x40_0000, true),
        Outcome::Reached(0x40_0000)
    );
    assert_eq!(
        rest.access(NVME.id(), 0x50_0000, true),
        Outcome::Fault(0x05)
    );
    // The graphics unit has no context table for NVMe's bus, and its own device passes through.
    assert_eq!(
        graphics.access(NVME.id(), 0x40_0000, true),
        Outcome::Fault(0x01)
    );
    assert_eq!(
        graphics.access(GPU.id(), 0x50_0000, true),
        Outcome::Reached(0x50_0000)
    );
    // A function on another segment is nobody's: isolating it is a no-op.
    assert_eq!(
        r.isolate(Source { segment: 1, ..NVME }, &[], &[]),
        Ok(false)
    );
    clean(&rest, &memory);
    clean(&graphics, &memory);
}

#[test]
fn domain_ids_run_out_with_an_error() {
    // ND = 0: 16 IDs, of which 0 and 1 (pass-through) are not for domains.
    let (mut r2, _u2, _m2) = {
        let memory = Memory::new();
        let unit = Model::new(&memory, true);
        unit.state().cap &= !7;
        let r = Remapper::new(
            memory.clone(),
            vec![UnitSetup {
                regs: unit.clone(),
                segment: 0,
                scope: Scope::All,
            }],
        )
        .expect("remapper");
        (r, unit, memory)
    };
    r2.enable((0, 1)).expect("enable");
    for devfn in 0..14u8 {
        assert_eq!(
            r2.isolate(
                Source {
                    segment: 0,
                    bus: 1,
                    devfn
                },
                &[],
                &[]
            ),
            Ok(true)
        );
    }
    assert_eq!(
        r2.isolate(
            Source {
                segment: 0,
                bus: 1,
                devfn: 14
            },
            &[],
            &[]
        ),
        Err(RemapError::NoDomainId)
    );
    // Releasing one frees its ID.
    r2.release(Source {
        segment: 0,
        bus: 1,
        devfn: 3,
    })
    .expect("release");
    assert_eq!(
        r2.isolate(
            Source {
                segment: 0,
                bus: 1,
                devfn: 14
            },
            &[],
            &[]
        ),
        Ok(true)
    );
}

#[test]
fn a_failed_map_leaves_nothing_mapped() {
    let (mut r, unit, memory) = setup(true);
    r.enable((0, 1)).expect("enable");
    r.isolate(NVME, &[], &[]).expect("isolate");
    // Two pages far apart need new tables; allow one more page only.
    let used = memory.0.borrow().allocated;
    memory.0.borrow_mut().fail_after = Some(used + 2);
    let result = r.map(NVME, 0x40_0000, 0x40_0000_0000);
    assert!(result.is_err(), "{result:?}");
    memory.0.borrow_mut().fail_after = None;
    assert_eq!(
        unit.access(NVME.id(), 0x40_0000, true),
        Outcome::Fault(0x05)
    );
    assert_eq!(r.summary().pages, 0);
    clean(&unit, &memory);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 64 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random maps and unmaps of page runs for three functions: after every step, each
    /// function reaches exactly the pages mapped for it (an oracle set), wherever the unit's
    /// IOTLB held a translation before.
    #[test]
    fn each_device_reaches_exactly_its_mapped_pages(
        ops in proptest::collection::vec((0usize..3, any::<bool>(), 0u64..64, 1u64..4), 1..40),
        coherent in any::<bool>(),
    ) {
        let (mut r, unit, memory) = setup(coherent);
        r.enable((0, 3)).expect("enable");
        let sources = [NVME, NIC, Source { segment: 0, bus: 3, devfn: 9 }];
        for s in sources {
            r.isolate(s, &[], &[]).expect("isolate");
        }
        let mut mapped = std::collections::BTreeSet::new();
        for (who, map, first, count) in ops {
            // Each function's pages come from its own range, as DMA memory never is shared.
            let base = 0x100_0000 * (who as u64 + 1) + first * 0x1000;
            let pages: Vec<u64> = (0..count).map(|i| base + i * 0x1000).collect();
            if map {
                if pages.iter().any(|p| mapped.contains(&(who, *p))) {
                    continue;
                }
                r.map(sources[who], base, count * 0x1000).expect("map");
                mapped.extend(pages.iter().map(|p| (who, *p)));
            } else {
                r.unmap(sources[who], base, count * 0x1000).expect("unmap");
                for p in &pages {
                    mapped.remove(&(who, *p));
                }
            }
            for (i, s) in sources.iter().enumerate() {
                for page in 0..68u64 {
                    for owner in 0..3u64 {
                        let a = 0x100_0000 * (owner + 1) + page * 0x1000;
                        let reached = unit.access(s.id(), a + 8, true) == Outcome::Reached(a + 8);
                        prop_assert_eq!(reached, mapped.contains(&(i, a)), "source {} page {:#x}", i, a);
                    }
                }
            }
        }
        let _ = r.take_faults();
        clean(&unit, &memory);
    }
}

/// With fault events enabled, the unit sends the message once when a fault is recorded while
/// none was pending; once the kernel took the faults, the next fault sends it again.
#[test]
fn a_recorded_fault_sends_the_fault_event_message() {
    let (mut r, unit, memory) = setup(true);
    r.enable((0, 3)).expect("enable");
    assert!(r.isolate(NVME, &[], &[]).expect("isolate"));
    // Masked (the reset state): a fault sends nothing.
    assert_eq!(
        unit.access(NVME.id(), 0x20_0000, true),
        Outcome::Fault(0x05)
    );
    assert!(unit.state().fault_events.is_empty());
    assert_eq!(r.take_faults().len(), 1);
    r.enable_fault_events(0xfee0_1000, 0x4e);
    assert_eq!(
        unit.access(NVME.id(), 0x21_0000, true),
        Outcome::Fault(0x05)
    );
    // A second fault while the first is pending: no second message.
    assert_eq!(
        unit.access(NVME.id(), 0x22_0000, false),
        Outcome::Fault(0x06)
    );
    assert_eq!(unit.state().fault_events, vec![(0xfee0_1000, 0x4e)]);
    assert_eq!(r.take_faults().len(), 2);
    assert_eq!(
        unit.access(NVME.id(), 0x23_0000, true),
        Outcome::Fault(0x05)
    );
    assert_eq!(unit.state().fault_events.len(), 2);
    clean(&unit, &memory);
}
