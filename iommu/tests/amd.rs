//! The AMD-Vi remapper against the model unit: what each device can reach after each step.

mod amd_model;

use amd_model::fixtures::*;
use amd_model::{Memory, Unit, spec};
use iommu::amd::{AmdRemapper, DeviceRange, Event, UnitSetup};
use iommu::{RemapError, Source, UnitError};
use proptest::prelude::*;

#[test]
fn devices_pass_through_before_and_after_enable() {
    let (mut r, unit, memory) = setup();
    // Nothing written to the unit by new().
    assert_eq!(unit.state().control, 0);
    assert!(reaches(&unit, NVME, 0x1234_5678, true));
    r.enable().expect("enable");
    assert!(r.enabled());
    let control = unit.state().control;
    for bit in [spec::IOMMU_EN, spec::CMD_BUF_EN, spec::EVENT_LOG_EN] {
        assert_ne!(control & bit, 0, "control {control:#x}");
    }
    // Four buses of devices: 1024 entries of 32 bytes, 8 pages (Size = 7).
    assert_eq!(unit.state().dev_table & 0x1ff, 7);
    // The enabling invalidation ran (INVALIDATE_IOMMU_ALL, then the wait).
    let executed = unit.state().executed.clone();
    assert_eq!(executed.len(), 2, "{executed:x?}");
    assert_eq!(executed[0][0] >> 60, 0x8);
    assert_eq!(executed[1][0] >> 60, 0x1);
    assert!(reaches(&unit, NVME, 0x1234_5678, true));
    assert!(reaches(&unit, GPU, 0xdead_b000, false));
    assert_eq!(r.translate(NVME, 0x5000), Some(0x5000));
    assert!(r.take_events().is_empty());
    let (levels, efr, control) = r.unit_info(0);
    assert_eq!(levels, 4);
    assert_eq!(efr, spec::IA_SUP | spec::HATS_6_LEVELS);
    assert_ne!(control & spec::IOMMU_EN, 0);
    let summary = r.summary();
    assert!(summary.enabled && !summary.interrupts);
    assert_eq!(summary.interrupt_entries, 0);
    assert_eq!(summary.table_pages as u64, memory.in_use());
    clean(&unit, &memory);
}

#[test]
fn an_isolated_function_reaches_only_what_is_mapped_for_it() {
    let (mut r, unit, memory) = enabled();
    // The device used the unit before: its pass-through entry is cached.
    assert!(reaches(&unit, NVME, 0x20_0000, true));
    assert!(r.isolate(NVME, &[], &[]).expect("isolate"));
    assert!(r.isolated(NVME));
    assert_eq!(r.isolated_functions(), vec![NVME]);
    assert!(!reaches(&unit, NVME, 0x20_0000, true));
    let events = r.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let (u, e) = events[0];
    assert_eq!(u, 0);
    assert_eq!(e.code, 0x2);
    assert_eq!(e.source, NVME.id());
    assert_eq!(e.address, 0x20_0000);
    assert!(e.write);
    assert_ne!(e.domain, 0);
    assert_eq!(
        e.to_string(),
        format!(
            "I/O page fault: 01:00.0 wrote 0x200000 (domain {})",
            e.domain
        )
    );
    assert!(r.take_events().is_empty(), "an event reported twice");
    // A read fault says read.
    assert!(!reaches(&unit, NVME, 0x30_0000, false));
    let events = r.take_events();
    assert!(!events[0].1.write);
    assert!(events[0].1.to_string().contains("read 0x300000"));

    r.map(NVME, 0x40_0000, 0x2000).expect("map");
    assert!(reaches(&unit, NVME, 0x40_0010, true));
    assert!(reaches(&unit, NVME, 0x40_1ff8, false));
    assert!(!reaches(&unit, NVME, 0x40_2000, true));
    assert!(!reaches(&unit, NVME, 0x3f_f000, false));
    assert_eq!(r.translate(NVME, 0x40_0123), Some(0x40_0123));
    assert_eq!(r.translate(NVME, 0x40_2000), None);
    // Its neighbours still pass through.
    assert!(reaches(&unit, NIC, 0x20_0000, true));
    assert!(reaches(&unit, GPU, 0x40_0000, true));
    assert_eq!(r.summary().pages, 2);
    clean(&unit, &memory);
}

#[test]
fn a_page_the_unit_saw_not_present_is_reachable_once_mapped() {
    let (mut r, unit, memory) = enabled();
    r.isolate(NVME, &[], &[]).expect("isolate");
    // The unit caches the not-present entry (NpCache)...
    assert!(!reaches(&unit, NVME, 0x40_0000, true));
    assert_eq!(unit.state().tlb.len(), 1);
    // ...and map has it forget.
    r.map(NVME, 0x40_0000, 0x1000).expect("map");
    assert!(reaches(&unit, NVME, 0x40_0000, true));
    clean(&unit, &memory);
}

#[test]
fn after_unmap_the_device_cannot_use_a_cached_translation() {
    let (mut r, unit, memory) = enabled();
    r.isolate(NVME, &[], &[]).expect("isolate");
    r.map(NVME, 0x40_0000, 0x3000).expect("map");
    assert!(reaches(&unit, NVME, 0x40_1000, true));
    assert!(unit.state().tlb.values().any(|e| e.is_some()));
    r.unmap(NVME, 0x40_1000, 0x1000).expect("unmap");
    assert!(!reaches(&unit, NVME, 0x40_1000, true));
    assert!(!reaches(&unit, NVME, 0x40_1000, false));
    assert!(reaches(&unit, NVME, 0x40_0000, true));
    assert!(reaches(&unit, NVME, 0x40_2000, false));
    assert_eq!(r.summary().pages, 2);
    // The last command before the wait: INVALIDATE_IOMMU_PAGES of every page of the domain.
    let executed = unit.state().executed.clone();
    let invalidation = executed[executed.len() - 2];
    assert_eq!(invalidation[0] >> 60, 0x3);
    assert_eq!(invalidation[1] & !0xfff, 0x7fff_ffff_ffff_f000);
    clean(&unit, &memory);
}

#[test]
fn release_returns_the_function_to_pass_through_and_frees_its_tables() {
    let (mut r, unit, memory) = enabled();
    let baseline = memory.in_use();
    r.isolate(NVME, &[], &[]).expect("isolate");
    r.map(NVME, 0x40_0000, 0x1000).expect("map");
    r.map(NVME, 0x80_0000_0000, 0x1000).expect("map far");
    assert!(reaches(&unit, NVME, 0x40_0000, true));
    assert!(!reaches(&unit, NVME, 0x50_0000, true));
    assert!(memory.in_use() > baseline);
    assert_eq!(r.summary().table_pages as u64, memory.in_use());
    r.release(NVME).expect("release");
    assert!(!r.isolated(NVME));
    assert_eq!(r.summary().domains, 0);
    assert_eq!(memory.in_use(), baseline);
    assert!(reaches(&unit, NVME, 0x50_0000, true));
    assert_eq!(r.translate(NVME, 0x50_0000), Some(0x50_0000));
    // Releasing again, or something never isolated, is nothing.
    r.release(NVME).expect("release again");
    r.release(NIC).expect("release unclaimed");
    // Isolated again: a fresh, empty domain.
    r.isolate(NVME, &[], &[]).expect("isolate again");
    assert!(!reaches(&unit, NVME, 0x40_0000, true));
    assert_eq!(r.leaked_pages(), 0);
    clean(&unit, &memory);
}

#[test]
fn aliases_lead_to_the_same_domain() {
    let memory = Memory::new();
    let unit = Unit::new(&memory);
    // Bus 3 sits behind a PCIe-to-PCI bridge at 00:05.0: its requests carry the bridge's ID.
    let bridge = 0x0028;
    let ranges = vec![
        DeviceRange {
            first: 0,
            last: 0x2ff,
            alias: None,
        },
        DeviceRange {
            first: 0x300,
            last: 0x3ff,
            alias: Some(bridge),
        },
    ];
    let mut r = remapper(&memory, &[(&unit, ranges)]);
    r.enable().expect("enable");
    let a = source(0x0300);
    let b = source(0x0308);
    assert!(reaches(&unit, source(bridge), 0x40_0000, true));
    assert!(r.isolate(a, &[], &[]).expect("isolate a"));
    assert!(r.isolate(b, &[], &[]).expect("isolate b"));
    assert_eq!(r.summary().domains, 1);
    r.map(a, 0x40_0000, 0x1000).expect("map a");
    r.map(b, 0x41_0000, 0x1000).expect("map b");
    // What the unit sees: the bridge's ID, translated through the shared domain.
    assert!(reaches(&unit, source(bridge), 0x40_0000, true));
    assert!(reaches(&unit, source(bridge), 0x41_0000, true));
    assert!(!reaches(&unit, source(bridge), 0x42_0000, true));
    assert_eq!(r.translate(a, 0x41_0000), Some(0x41_0000));
    assert_eq!(r.translate(a, 0x42_0000), None);
    // An alias given by the caller: NVME's requests may also carry 01:00.1's ID.
    let other = source(0x0101);
    assert!(r.isolate(NVME, &[other], &[]).expect("isolate nvme"));
    r.map(NVME, 0x50_0000, 0x1000).expect("map nvme");
    assert!(reaches(&unit, other, 0x50_0000, true));
    assert!(!reaches(&unit, other, 0x40_0000, true));
    assert_eq!(r.summary().domains, 2);
    // The domain stays while one member does.
    r.release(a).expect("release a");
    assert!(!reaches(&unit, source(bridge), 0x42_0000, true));
    r.release(b).expect("release b");
    assert!(reaches(&unit, source(bridge), 0x42_0000, true));
    assert!(reaches(&unit, b, 0x42_0000, true));
    assert_eq!(r.summary().domains, 1);
    clean(&unit, &memory);
}

#[test]
fn the_unit_itself_and_uncovered_functions_are_never_isolated() {
    let (mut r, unit, memory) = enabled();
    assert_eq!(r.unit_for(source(IOMMU_ID)), None);
    assert_eq!(r.isolate(source(IOMMU_ID), &[], &[]), Ok(false));
    let far = source(0x0900);
    assert_eq!(r.unit_for(far), None);
    assert_eq!(r.isolate(far, &[], &[]), Ok(false));
    let other_segment = Source { segment: 1, ..NVME };
    assert_eq!(r.unit_for(other_segment), None);
    assert_eq!(r.unit_for(NVME), Some(0));
    // The unit's own ID as an alias is ignored.
    r.isolate(NVME, &[source(IOMMU_ID)], &[]).expect("isolate");
    assert!(reaches(&unit, source(IOMMU_ID), 0x1000, true));
    assert_eq!(r.units(), 1);
    clean(&unit, &memory);
}

#[test]
fn reserved_ranges_are_mapped_for_the_device() {
    let (mut r, unit, memory) = enabled();
    r.isolate(
        NVME,
        &[],
        &[(0xe000_0000, 0xe000_2000), (0x9_f800, 0x9_fc00)],
    )
    .expect("isolate");
    assert!(reaches(&unit, NVME, 0xe000_0000, false));
    assert!(reaches(&unit, NVME, 0xe000_1ff0, true));
    assert!(!reaches(&unit, NVME, 0xe000_2000, true));
    assert!(reaches(&unit, NVME, 0x9_f000, true));
    // Reserved pages are not the function's DMA memory.
    assert_eq!(r.summary().pages, 0);
    clean(&unit, &memory);
}

#[test]
fn isolation_does_nothing_while_translation_is_off() {
    let (mut r, unit, memory) = setup();
    assert_eq!(r.isolate(NVME, &[], &[]), Ok(false));
    r.map(NVME, 0x40_0000, 0x1000).expect("map is nothing");
    assert!(reaches(&unit, NVME, 0x50_0000, true));
    clean(&unit, &memory);
}

#[test]
fn a_unit_that_never_completes_is_an_error_not_a_hang() {
    let (mut r, unit, memory) = enabled();
    r.isolate(NVME, &[], &[]).expect("isolate");
    r.map(NVME, 0x40_0000, 0x1000).expect("map");
    let in_use = memory.in_use();
    unit.state().stuck = true;
    assert!(matches!(
        r.unmap(NVME, 0x40_0000, 0x1000),
        Err(RemapError::Unit(UnitError::Timeout(_)))
    ));
    assert!(matches!(
        r.isolate(NIC, &[], &[]),
        Err(RemapError::Unit(UnitError::Timeout(_)))
    ));
    assert!(!r.isolated(NIC));
    // Releasing: the entries go back to pass-through, but no page is freed while the unit
    // did not confirm; the pages are leaked.
    assert!(r.release(NVME).is_err());
    assert!(!r.isolated(NVME));
    assert!(r.leaked_pages() > 0);
    assert!(memory.in_use() >= in_use);
    clean(&unit, &memory);
}

#[test]
fn a_full_command_buffer_is_an_error() {
    let (mut r, unit, memory) = enabled();
    unit.state().stuck = true;
    // 200 aliases: 200 entries to invalidate, more than one batch (half the ring) holds.
    let aliases: Vec<Source> = (0x200..0x2c8).map(source).collect();
    // The first batch times out and stays in the ring, unfetched...
    assert!(matches!(
        r.isolate(NVME, &aliases, &[]),
        Err(RemapError::Unit(UnitError::Timeout(_)))
    ));
    // ...so the next does not fit: an error at once, nothing overwritten.
    let more: Vec<Source> = (0x300..0x3c8).map(source).collect();
    assert_eq!(
        r.isolate(NIC, &more, &[]),
        Err(RemapError::Unit(UnitError::Timeout(
            "earlier commands (the command buffer is full)"
        )))
    );
    assert!(!r.isolated(NVME) && !r.isolated(NIC));
    // The unit answers again: it catches up, and so does the driver.
    unit.resume();
    assert!(r.isolate(NVME, &[], &[]).expect("isolate"));
    r.map(NVME, 0x40_0000, 0x1000).expect("map");
    assert!(reaches(&unit, NVME, 0x40_0000, true));
    assert!(!reaches(&unit, NVME, 0x41_0000, true));
    clean(&unit, &memory);
}

#[test]
fn events_are_decoded() {
    let (mut r, unit, memory) = enabled();
    r.isolate(NVME, &[], &[]).expect("isolate");
    // The unit refuses INVALIDATE_IOMMU_PAGES: it logs the command and stops.
    unit.state().illegal_opcode = Some(0x3);
    assert!(r.map(NVME, 0x40_0000, 0x1000).is_err());
    let events = r.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e: Event = events[0].1;
    assert_eq!(e.code, 0x5);
    assert_eq!(e.describe(), "illegal command");
    let cmd_page = unit.state().cmd_base & 0x000f_ffff_ffff_f000;
    assert_eq!(e.address & !0xfff, cmd_page);
    assert_eq!(
        e.to_string(),
        format!("illegal command at {:#x}", e.address)
    );
    // Decoding by hand: an I/O page fault on a present page (a permission fault).
    let raw = [0x0020, 0x2 << 28 | (0x30 << 16) | 7, 0x1234_5000, 0x1];
    let e = Event::decode(raw);
    assert_eq!((e.code, e.source, e.domain), (2, 0x20, 7));
    assert_eq!(e.address, 0x1_1234_5000);
    assert!(e.write);
    assert_eq!(
        e.to_string(),
        "I/O page fault: 00:04.0 wrote 0x112345000 (domain 7), not permitted"
    );
    let e = Event::decode([0x0310, 0x1 << 28, 0x10_0000, 0]);
    assert_eq!(
        e.to_string(),
        "illegal device table entry: 03:02.0 (entry at 0x100000)"
    );
    let e = Event::decode([0, 0xf << 28, 1, 2]);
    assert!(e.to_string().starts_with("unknown event (code 0xf)"));
    let violations = std::mem::take(&mut unit.state().violations);
    assert!(violations.is_empty(), "{violations:?}");
    clean(&unit, &memory);
}

#[test]
fn an_overflowed_event_log_restarts() {
    let (mut r, unit, memory) = enabled();
    r.isolate(NVME, &[], &[]).expect("isolate");
    for i in 0..300u64 {
        assert!(!reaches(&unit, NVME, 0x100_0000 + i * 0x1000, false));
    }
    assert_ne!(unit.state().status & spec::EVENT_OVERFLOW, 0);
    // 255 of them fit.
    assert_eq!(r.take_events().len(), 255);
    assert_eq!(unit.state().status & spec::EVENT_OVERFLOW, 0);
    assert!(!reaches(&unit, NVME, 0x200_0000, true));
    let events = r.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1.address, 0x200_0000);
    clean(&unit, &memory);
}

#[test]
fn enabling_is_all_units_or_none() {
    let memory = Memory::new();
    let a = Unit::new(&memory);
    let b = Unit::new(&memory);
    let lower = vec![DeviceRange {
        first: 0,
        last: 0x1ff,
        alias: None,
    }];
    let upper = vec![DeviceRange {
        first: 0x200,
        last: 0x3ff,
        alias: None,
    }];
    b.state().stuck = true;
    let mut r = remapper(&memory, &[(&a, lower.clone()), (&b, upper.clone())]);
    assert!(matches!(
        r.enable(),
        Err(RemapError::Unit(UnitError::Timeout(_)))
    ));
    assert!(!r.enabled());
    assert_eq!(a.state().control & spec::IOMMU_EN, 0);
    assert_eq!(b.state().control & spec::IOMMU_EN, 0);
    assert!(reaches(&a, NVME, 0x1000, true));
    // Both answer: both on, each translating for its own range.
    b.state().stuck = false;
    r.enable().expect("enable");
    assert_eq!(r.unit_for(NVME), Some(0));
    assert_eq!(r.unit_for(NIC), Some(1));
    r.isolate(NIC, &[], &[]).expect("isolate");
    r.map(NIC, 0x40_0000, 0x1000).expect("map");
    assert!(reaches(&b, NIC, 0x40_0000, true));
    assert!(!reaches(&b, NIC, 0x50_0000, true));
    assert_eq!(r.take_events().iter().map(|e| e.0).collect::<Vec<_>>(), [1]);
    clean(&a, &memory);
    clean(&b, &memory);
}

#[test]
fn firmware_left_the_unit_on() {
    let memory = Memory::new();
    let unit = Unit::new(&memory);
    let firmware = iommu::TableMemory::alloc_pages(&memory, 1).expect("page");
    {
        let mut s = unit.state();
        s.dev_table = firmware;
        s.cmd_base = firmware | 8 << 56;
        s.event_base = firmware | 8 << 56;
        s.control = spec::IOMMU_EN | spec::CMD_BUF_EN | 1 << 1;
        s.status = spec::CMD_BUF_RUN;
    }
    let mut r = remapper(&memory, &[(&unit, all_of_bus_0_to_3())]);
    r.enable().expect("enable");
    // The bit firmware set that this crate does not drive (HtTunEn) is kept.
    assert_ne!(unit.state().control & 1 << 1, 0);
    assert_ne!(unit.state().dev_table & !0xfff, firmware);
    clean(&unit, &memory);
}

#[test]
fn without_invalidate_all_every_entry_and_domain_is_invalidated() {
    let memory = Memory::new();
    let unit = Unit::new(&memory);
    unit.state().efr = 0;
    let mut r = remapper(&memory, &[(&unit, all_of_bus_0_to_3())]);
    r.enable().expect("enable");
    let executed = unit.state().executed.clone();
    let devtab = executed.iter().filter(|c| c[0] >> 60 == 0x2).count();
    let pages = executed.iter().filter(|c| c[0] >> 60 == 0x3).count();
    assert_eq!(devtab, 1024);
    assert_eq!(pages, 0xffff);
    assert!(executed.iter().all(|c| c[0] >> 60 != 0x8));
    r.isolate(NVME, &[], &[]).expect("isolate");
    assert!(!reaches(&unit, NVME, 0x1000, true));
    clean(&unit, &memory);
}

#[test]
fn disable_lets_everything_through_and_enable_restores_isolation() {
    let (mut r, unit, memory) = enabled();
    r.isolate(NVME, &[], &[]).expect("isolate");
    assert!(!reaches(&unit, NVME, 0x1000, true));
    r.disable().expect("disable");
    assert!(!r.enabled());
    assert_eq!(unit.state().control & spec::IOMMU_EN, 0);
    assert!(reaches(&unit, NVME, 0x1000, true));
    // Changes while off need no command; enable invalidates everything.
    r.map(NVME, 0x40_0000, 0x1000).expect("map");
    r.enable().expect("enable again");
    assert!(!reaches(&unit, NVME, 0x1000, true));
    assert!(reaches(&unit, NVME, 0x40_0000, true));
    clean(&unit, &memory);
}

#[test]
fn a_domain_released_while_off_is_freed_after_the_next_enable() {
    let (mut r, unit, memory) = enabled();
    r.isolate(NVME, &[], &[]).expect("isolate");
    r.map(NVME, 0x40_0000, 0x1000).expect("map");
    // The unit caches the entry and the translation.
    assert!(reaches(&unit, NVME, 0x40_0000, true));
    r.disable().expect("disable");
    let in_use = memory.in_use();
    r.release(NVME).expect("release");
    // Nothing freed yet: the unit was not told to forget.
    assert_eq!(memory.in_use(), in_use);
    assert_eq!(r.summary().table_pages as u64, in_use);
    r.enable().expect("enable");
    assert!(memory.in_use() < in_use);
    assert_eq!(r.summary().table_pages as u64, memory.in_use());
    assert!(reaches(&unit, NVME, 0x50_0000, true));
    clean(&unit, &memory);
}

#[test]
fn a_reserved_translation_size_fails_the_remapper() {
    let memory = Memory::new();
    let unit = Unit::new(&memory);
    unit.state().efr = 3 << 10;
    let setups = vec![UnitSetup {
        regs: unit.clone(),
        segment: 0,
        iommu_id: IOMMU_ID,
        ranges: all_of_bus_0_to_3(),
    }];
    assert!(matches!(
        AmdRemapper::new(memory.clone(), setups),
        Err(RemapError::Unit(UnitError::Unsupported(_)))
    ));
    assert_eq!(memory.in_use(), 0);
    clean(&unit, &memory);
}

#[test]
fn the_device_table_covers_the_highest_device_id() {
    let memory = Memory::new();
    let a = Unit::new(&memory);
    let b = Unit::new(&memory);
    let ranges = |first, last| {
        vec![DeviceRange {
            first,
            last,
            alias: None,
        }]
    };
    let mut r = remapper(
        &memory,
        &[(&a, ranges(0, 0xff)), (&b, ranges(0xff00, 0xffff))],
    );
    r.enable().expect("enable");
    // 65536 entries: 512 pages, Size = 511, in both units.
    assert_eq!(a.state().dev_table & 0x1ff, 511);
    assert_eq!(b.state().dev_table & 0x1ff, 511);
    let last = source(0xffff);
    r.isolate(last, &[], &[]).expect("isolate");
    assert!(!reaches(&b, last, 0x1000, true));
    clean(&a, &memory);
    clean(&b, &memory);
}

#[test]
fn running_out_of_memory_gives_everything_back() {
    let memory = Memory::new();
    let a = Unit::new(&memory);
    let b = Unit::new(&memory);
    memory.0.borrow_mut().fail_after = Some(8 + 3 + 8 + 1);
    let setups = [&a, &b]
        .iter()
        .map(|u| UnitSetup {
            regs: (*u).clone(),
            segment: 0,
            iommu_id: IOMMU_ID,
            ranges: all_of_bus_0_to_3(),
        })
        .collect();
    let result = AmdRemapper::new(memory.clone(), setups);
    assert!(matches!(result, Err(RemapError::Map(_))));
    assert_eq!(memory.in_use(), 0);
    clean(&a, &memory);
}

#[test]
fn a_failed_map_leaves_nothing_mapped() {
    let (mut r, unit, memory) = enabled();
    r.isolate(NVME, &[], &[]).expect("isolate");
    let used = memory.0.borrow().allocated;
    memory.0.borrow_mut().fail_after = Some(used + 2);
    assert!(r.map(NVME, 0x40_0000, 0x40_0000_0000).is_err());
    memory.0.borrow_mut().fail_after = None;
    assert!(!reaches(&unit, NVME, 0x40_0000, true));
    assert_eq!(r.summary().pages, 0);
    clean(&unit, &memory);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 64 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random isolations, releases, maps and unmaps for three functions: after every step
    /// each function reaches exactly the pages a reference set says, wherever the unit
    /// cached entries before (every step's checks fill its caches).
    #[test]
    fn each_device_reaches_exactly_its_mapped_pages(
        ops in proptest::collection::vec((0usize..3, 0u8..4, 0u64..24, 1u64..4), 1..40),
    ) {
        let (mut r, unit, memory) = enabled();
        let baseline = memory.in_use();
        let sources = [NVME, NIC, Source { segment: 0, bus: 3, devfn: 9 }];
        let mut isolated = [false; 3];
        let mut mapped: std::collections::HashSet<(usize, u64)> = Default::default();
        for (who, op, first, count) in ops {
            let base = 0x100_0000 * (who as u64 + 1) + first * 0x1000;
            let pages: Vec<u64> = (0..count).map(|i| base + i * 0x1000).collect();
            match op {
                0 => {
                    prop_assert_eq!(r.isolate(sources[who], &[], &[]), Ok(true));
                    isolated[who] = true;
                }
                1 => {
                    r.release(sources[who]).expect("release");
                    isolated[who] = false;
                    mapped.retain(|(w, _)| *w != who);
                }
                2 => {
                    if pages.iter().any(|p| mapped.contains(&(who, *p))) {
                        continue;
                    }
                    r.map(sources[who], base, count * 0x1000).expect("map");
                    if isolated[who] {
                        mapped.extend(pages.iter().map(|p| (who, *p)));
                    }
                }
                _ => {
                    r.unmap(sources[who], base, count * 0x1000).expect("unmap");
                    for p in &pages {
                        mapped.remove(&(who, *p));
                    }
                }
            }
            for (i, s) in sources.iter().enumerate() {
                for page in 0..28u64 {
                    for owner in 0..3u64 {
                        let a = 0x100_0000 * (owner + 1) + page * 0x1000;
                        let expected = !isolated[i] || mapped.contains(&(i, a));
                        let write = page % 2 == 0;
                        prop_assert_eq!(
                            reaches(&unit, *s, a + 8, write), expected,
                            "source {} page {:#x}", i, a
                        );
                        prop_assert_eq!(r.translate(*s, a + 8).is_some(), expected);
                    }
                }
            }
        }
        let _ = r.take_events();
        for s in sources {
            r.release(s).expect("release");
        }
        prop_assert_eq!(memory.in_use(), baseline);
        clean(&unit, &memory);
    }
}
