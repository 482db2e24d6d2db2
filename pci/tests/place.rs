//! Boot-time placement of memory BARs firmware left unassigned (`pci::assign::boot`): gaps
//! between assigned BARs, natural alignment, prefetchable and 64-bit BARs, windows too
//! small, all or none per function, and (property test) that a placement never overlaps
//! anything and always lies inside the window that forwards to its bus.

use core::ops::RangeInclusive;

use pci::assign::Windows;
use pci::assign::boot::{Plan, Reason, plan};
use pci::{
    Address, Bar, BarError, BarKind, BridgeBuses, BridgeError, Bus, Function, ScanError,
    ScanErrorKind, Topology,
};
use proptest::prelude::*;

fn a(bus: u8, device: u8, function: u8) -> Address {
    Address::new(0, bus, device, function).unwrap()
}

fn function(address: Address, bars: &[(usize, Bar)], bridge: Option<(u8, u8)>) -> Function {
    let mut slots = [None; 6];
    for &(slot, bar) in bars {
        slots[slot] = Some(bar);
    }
    Function {
        address,
        vendor_id: 0x1b36,
        device_id: 0x0010,
        subsystem_vendor_id: None,
        subsystem_id: None,
        class: if bridge.is_some() { 6 } else { 1 },
        subclass: if bridge.is_some() { 4 } else { 8 },
        prog_if: 0,
        revision: 0,
        header_type: u8::from(bridge.is_some()),
        multifunction: false,
        command: 0,
        status: 0,
        bars: slots,
        interrupt_pin: 0,
        interrupt_line: 0,
        capabilities: Vec::new(),
        extended_capabilities: Vec::new(),
        msi: None,
        msix: None,
        bridge: bridge.map(|(secondary, subordinate)| BridgeBuses {
            primary: address.bus(),
            secondary,
            subordinate,
        }),
        pcie_flags: None,
    }
}

fn mem32(address: u64, size: u64) -> Bar {
    Bar {
        kind: BarKind::Memory32,
        prefetchable: false,
        address,
        size,
        below_1m: false,
    }
}

fn mem64(address: u64, size: u64, prefetchable: bool) -> Bar {
    Bar {
        kind: BarKind::Memory64,
        prefetchable,
        address,
        size,
        below_1m: false,
    }
}

fn io(address: u64, size: u64) -> Bar {
    Bar {
        kind: BarKind::Io,
        prefetchable: false,
        address,
        size,
        below_1m: false,
    }
}

const PORT: (u8, u8, u8) = (0, 2, 0);

fn port() -> Address {
    a(PORT.0, PORT.1, PORT.2)
}

/// A root port at 00:02.0 leading to bus 1, holding `endpoints` (device numbers from 0).
fn behind_port(endpoints: Vec<Vec<(usize, Bar)>>) -> Topology {
    let mut functions = vec![function(port(), &[], Some((1, 1)))];
    for (d, bars) in endpoints.iter().enumerate() {
        functions.push(function(a(1, d as u8, 0), bars, None));
    }
    Topology {
        functions,
        errors: Vec::new(),
        buses: vec![
            Bus {
                segment: 0,
                number: 0,
                bridge: None,
            },
            Bus {
                segment: 0,
                number: 1,
                bridge: Some(port()),
            },
        ],
    }
}

fn windows(
    memory: Option<RangeInclusive<u64>>,
    prefetchable: Option<RangeInclusive<u64>>,
) -> Windows {
    Windows {
        io: Some(0x1000..=0x1fff),
        memory,
        prefetchable,
    }
}

/// (function's bus, device, slot, address) of every placement.
fn at(p: &Plan) -> Vec<(u8, u8, usize, u64)> {
    p.placed
        .iter()
        .map(|p| (p.function.bus(), p.function.device(), p.slot, p.bar.address))
        .collect()
}

const MEM: RangeInclusive<u64> = 0xfe80_0000..=0xfe9f_ffff;

#[test]
fn fills_the_gap_between_assigned_bars_naturally_aligned() {
    let t = behind_port(vec![vec![
        (0, mem32(0xfe80_0000, 0x1000)),
        (1, mem32(0, 0x1000)),
        (2, mem32(0, 0x10_0000)),
    ]]);
    let p = plan(&t, &[(port(), windows(Some(MEM), None))], &[]);
    assert_eq!(p.unplaced, vec![]);
    // The 1 MiB BAR first (aligned to 1 MiB: above the assigned page), then the page right
    // after the assigned one.
    assert_eq!(at(&p), [(1, 0, 1, 0xfe80_1000), (1, 0, 2, 0xfe90_0000)]);
}

#[test]
fn nothing_to_do_when_firmware_assigned_everything() {
    let t = behind_port(vec![vec![
        (0, io(0x1000, 0x40)),
        (1, mem32(0xfe80_0000, 0x1000)),
    ]]);
    assert!(!pci::assign::boot::any_unassigned(&t));
    assert_eq!(
        plan(&t, &[(port(), windows(Some(MEM), None))], &[]),
        Plan::default()
    );
}

#[test]
fn io_bars_at_zero_are_not_memory_and_not_placed() {
    let t = behind_port(vec![vec![
        (0, io(0, 0x40)),
        (1, mem32(0xfe80_0000, 0x1000)),
    ]]);
    assert!(!pci::assign::boot::any_unassigned(&t));
}

#[test]
fn prefetchable_64_bit_goes_to_the_prefetchable_window() {
    let pref = 0x8_0000_0000..=0x8_03ff_ffff;
    let t = behind_port(vec![vec![
        (0, mem32(0, 0x1000)),
        (2, mem64(0, 0x20_0000, true)),
        // Non-prefetchable 64-bit: the memory window only.
        (4, mem64(0, 0x4000, false)),
    ]]);
    let p = plan(&t, &[(port(), windows(Some(MEM), Some(pref)))], &[]);
    assert_eq!(p.unplaced, vec![]);
    assert_eq!(
        at(&p),
        [
            (1, 0, 0, 0xfe80_4000),
            (1, 0, 2, 0x8_0000_0000),
            (1, 0, 4, 0xfe80_0000)
        ]
    );
}

#[test]
fn a_32_bit_prefetchable_bar_never_goes_above_4g() {
    let pref = 0x8_0000_0000..=0x8_03ff_ffff;
    let pf32 = Bar {
        prefetchable: true,
        ..mem32(0, 0x1000)
    };
    let t = behind_port(vec![vec![(0, pf32)]]);
    let p = plan(&t, &[(port(), windows(Some(MEM), Some(pref.clone())))], &[]);
    assert_eq!(at(&p), [(1, 0, 0, 0xfe80_0000)]);
    // Without a memory window it has nowhere to go.
    let p = plan(&t, &[(port(), windows(None, Some(pref)))], &[]);
    assert_eq!(p.placed, vec![]);
    assert_eq!(p.unplaced[0].reason, Reason::NoWindow { bridge: port() });
}

#[test]
fn prefetchable_falls_back_to_the_memory_window_when_its_own_is_full() {
    let pref = 0x8_0000_0000..=0x8_000f_ffff;
    let t = behind_port(vec![
        vec![(0, mem64(0x8_0000_0000, 0x10_0000, true))],
        vec![(0, mem64(0, 0x4000, true))],
    ]);
    let p = plan(&t, &[(port(), windows(Some(MEM), Some(pref)))], &[]);
    assert_eq!(at(&p), [(1, 1, 0, 0xfe80_0000)]);
}

#[test]
fn a_window_too_small_leaves_the_bar_with_a_reason() {
    let t = behind_port(vec![vec![(0, mem32(0, 0x40_0000))]]);
    let p = plan(&t, &[(port(), windows(Some(MEM), None))], &[]);
    assert_eq!(p.placed, vec![]);
    assert_eq!(p.unplaced.len(), 1);
    let u = &p.unplaced[0];
    assert_eq!((u.function, u.slot), (a(1, 0, 0), 0));
    assert_eq!(u.reason, Reason::NoRoom { bridge: port() });
    assert!(
        u.reason
            .to_string()
            .contains("no free naturally aligned gap")
    );
    // A closed memory window: no window at all.
    let p = plan(&t, &[(port(), windows(None, None))], &[]);
    assert_eq!(p.unplaced[0].reason, Reason::NoWindow { bridge: port() });
}

#[test]
fn all_or_none_per_function() {
    // Device 0 needs 1 MiB and 4 MiB (which cannot fit); device 1 needs 1 MiB. Device 0's
    // 1 MiB is not placed, so device 1 gets the first free megabyte.
    let t = behind_port(vec![
        vec![(0, mem32(0, 0x10_0000)), (1, mem32(0, 0x40_0000))],
        vec![(0, mem32(0, 0x10_0000))],
    ]);
    let p = plan(&t, &[(port(), windows(Some(MEM), None))], &[]);
    assert_eq!(at(&p), [(1, 1, 0, 0xfe80_0000)]);
    let reasons: Vec<(usize, Reason)> = p
        .unplaced
        .iter()
        .map(|u| (u.slot, u.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            (0, Reason::Sibling { slot: 1 }),
            (1, Reason::NoRoom { bridge: port() })
        ]
    );
    assert!(p.unplaced[0].reason.to_string().contains("BAR1"));
}

#[test]
fn largest_first_packs_what_smallest_first_would_not() {
    // A 2 MiB window with a page assigned at its bottom. The 1 MiB BAR goes first (to the
    // second megabyte, its first aligned gap), then the page right after the assigned one:
    // the first megabyte stays free but for two pages.
    let t = behind_port(vec![
        vec![(0, mem32(0xfe80_0000, 0x1000))],
        vec![(0, mem32(0, 0x1000))],
        vec![(0, mem32(0, 0x10_0000))],
    ]);
    let p = plan(&t, &[(port(), windows(Some(MEM), None))], &[]);
    assert_eq!(at(&p), [(1, 1, 0, 0xfe80_1000), (1, 2, 0, 0xfe90_0000)]);
}

#[test]
fn stays_clear_of_child_bridge_windows_and_reserved_ranges() {
    // Bus 1 holds a switch port 01:00.0 (to bus 2) whose memory window is the first MiB, and
    // an endpoint 01:01.0 with an unassigned page; the platform reserves the next page.
    let mut t = behind_port(vec![]);
    t.functions
        .push(function(a(1, 0, 0), &[(0, mem32(0, 0x1000))], Some((2, 2))));
    t.functions
        .push(function(a(1, 1, 0), &[(0, mem32(0, 0x1000))], None));
    t.buses.push(Bus {
        segment: 0,
        number: 2,
        bridge: Some(a(1, 0, 0)),
    });
    let child = windows(Some(0xfe80_0000..=0xfe8f_ffff), None);
    let reserved = vec![span(0xfe90_0000, 0x1000)];
    let p = plan(
        &t,
        &[(port(), windows(Some(MEM), None)), (a(1, 0, 0), child)],
        &reserved,
    );
    assert_eq!(p.unplaced, vec![]);
    // The switch port's own BAR is placed too: it is on bus 1 like the endpoint.
    assert_eq!(at(&p), [(1, 0, 0, 0xfe90_1000), (1, 1, 0, 0xfe90_2000)]);
}

#[test]
fn unknown_windows_and_root_buses_place_nothing() {
    let mut t = behind_port(vec![vec![(0, mem32(0, 0x1000))]]);
    t.functions
        .push(function(a(0, 3, 0), &[(0, mem32(0, 0x1000))], None));
    t.functions.sort_by_key(|f| f.address);
    let p = plan(&t, &[], &[]);
    assert_eq!(p.placed, vec![]);
    let reasons: Vec<(Address, Reason)> = p
        .unplaced
        .iter()
        .map(|u| (u.function, u.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            (a(0, 3, 0), Reason::RootBus),
            (a(1, 0, 0), Reason::WindowsUnknown { bridge: port() })
        ]
    );
    assert!(reasons[0].1.to_string().contains("root bus"));
}

#[test]
fn a_gap_the_bridge_further_up_does_not_forward_is_refused() {
    // 00:02.0 -> bus 1: 01:00.0 -> bus 2 (the endpoint). The lower bridge's window is not
    // inside the upper one's (firmware error): nothing is placed.
    let mut t = behind_port(vec![]);
    t.functions.push(function(a(1, 0, 0), &[], Some((2, 2))));
    t.functions
        .push(function(a(2, 0, 0), &[(0, mem32(0, 0x1000))], None));
    t.buses.push(Bus {
        segment: 0,
        number: 2,
        bridge: Some(a(1, 0, 0)),
    });
    let upper = windows(Some(0xfe80_0000..=0xfe8f_ffff), None);
    let lower = windows(Some(0xfe90_0000..=0xfe9f_ffff), None);
    let p = plan(&t, &[(port(), upper.clone()), (a(1, 0, 0), lower)], &[]);
    assert_eq!(
        p.unplaced[0].reason,
        Reason::NotForwardedAbove {
            bridge: port(),
            address: 0xfe90_0000
        }
    );
    // Nested properly, it is placed.
    let lower = windows(Some(0xfe80_0000..=0xfe8f_ffff), None);
    let p = plan(&t, &[(port(), upper), (a(1, 0, 0), lower)], &[]);
    assert_eq!(at(&p), [(2, 0, 0, 0xfe80_0000)]);
}

#[test]
fn a_non_prefetchable_bar_is_not_forwarded_through_a_prefetchable_window_further_up() {
    // 00:02.0 -> bus 1: 01:00.0 -> bus 2. The lower bridge's memory window lies in the upper
    // one's prefetchable window only: a bridge may read ahead there, so a register BAR is
    // refused; a prefetchable one is placed.
    let mut t = behind_port(vec![]);
    t.functions.push(function(a(1, 0, 0), &[], Some((2, 2))));
    t.functions.push(function(
        a(2, 0, 0),
        &[
            (0, mem32(0, 0x1000)),
            (
                1,
                Bar {
                    prefetchable: true,
                    ..mem32(0, 0x1000)
                },
            ),
        ],
        None,
    ));
    t.functions.push(function(
        a(2, 1, 0),
        &[(
            0,
            Bar {
                prefetchable: true,
                ..mem32(0, 0x1000)
            },
        )],
        None,
    ));
    t.buses.push(Bus {
        segment: 0,
        number: 2,
        bridge: Some(a(1, 0, 0)),
    });
    let upper = windows(
        Some(0xfe80_0000..=0xfe8f_ffff),
        Some(0xd000_0000..=0xd00f_ffff),
    );
    let lower = windows(Some(0xd000_0000..=0xd00f_ffff), None);
    let p = plan(&t, &[(port(), upper), (a(1, 0, 0), lower)], &[]);
    assert_eq!(
        p.unplaced[0].reason,
        Reason::NotForwardedAbove {
            bridge: port(),
            address: 0xd000_0000
        }
    );
    assert_eq!(at(&p), [(2, 1, 0, 0xd000_0000)]);
}

#[test]
fn a_below_1m_bar_is_not_placed() {
    let legacy = Bar {
        below_1m: true,
        ..mem32(0, 0x1000)
    };
    let t = behind_port(vec![vec![(0, legacy)]]);
    let p = plan(&t, &[(port(), windows(Some(MEM), None))], &[]);
    assert_eq!(p.unplaced[0].reason, Reason::Below1M);
}

#[test]
fn a_window_at_the_top_of_the_address_space_does_not_wrap() {
    let top = 0xffff_ffff_fff0_0000..=u64::MAX;
    let t = behind_port(vec![
        vec![(0, mem64(0xffff_ffff_fff0_0000, 0x8_0000, true))],
        vec![(0, mem64(0, 0x8_0000, true)), (2, mem64(0, 0x1000, true))],
    ]);
    let p = plan(&t, &[(port(), windows(None, Some(top)))], &[]);
    assert_eq!(p.placed, vec![]);
    assert_eq!(p.unplaced.len(), 2);
}

#[test]
fn a_window_from_zero_is_not_an_aperture() {
    // A bridge without a prefetchable window reads its registers as zero (PCI-to-PCI Bridge
    // Architecture 1.2 §3.2.5.9), which decodes as 0..=0xfffff; firmware that assigned
    // nothing behind a bridge leaves the memory window there too. The first MiB is RAM, the
    // VGA range and the BIOS: prefetchable BARs go to the memory window, and behind a bridge
    // whose memory window is also at 0 nothing is placed.
    let unimplemented = Windows::decode(0, 0xfe90_fe80, 0, (0, 0), 0);
    assert_eq!(unimplemented.prefetchable, Some(0..=0xf_ffff));
    let t = behind_port(vec![vec![
        (0, mem64(0, 0x1000, true)),
        (2, mem64(0, 0x1000, true)),
    ]]);
    let p = plan(&t, &[(port(), unimplemented)], &[]);
    assert_eq!(p.unplaced, vec![]);
    assert_eq!(at(&p), [(1, 0, 0, 0xfe80_0000), (1, 0, 2, 0xfe80_1000)]);

    let reset = Windows::decode(0, 0, 0, (0, 0), 0);
    assert_eq!(reset.memory, Some(0..=0xf_ffff));
    let t = behind_port(vec![vec![
        (0, mem32(0, 0x1000)),
        (1, mem64(0, 0x1000, true)),
    ]]);
    let p = plan(&t, &[(port(), reset)], &[]);
    assert_eq!(p.placed, vec![]);
    assert!(
        p.unplaced
            .iter()
            .all(|u| u.reason == Reason::NoWindow { bridge: port() }
                || u.reason == Reason::Sibling { slot: 0 }),
        "{:?}",
        p.unplaced
    );
}

#[test]
fn a_bus_with_decoders_not_read_places_nothing() {
    // 01:01.0 is a CardBus bridge (its windows and BAR are not read) and 01:02.0 a BAR
    // that did not decode: either could decode any gap of the port's window.
    for kind in [
        ScanErrorKind::UnsupportedHeaderType(2),
        ScanErrorKind::Bar(BarError::AllOnes { slot: 1 }),
        ScanErrorKind::Vanished,
    ] {
        let mut t = behind_port(vec![vec![(0, mem32(0, 0x1000))]]);
        t.errors.push(ScanError {
            address: a(1, 1, 0),
            kind,
        });
        let p = plan(&t, &[(port(), windows(Some(MEM), None))], &[]);
        assert_eq!(p.placed, vec![], "{kind:?}");
        assert_eq!(
            p.unplaced[0].reason,
            Reason::DecodeUnknown {
                function: a(1, 1, 0)
            }
        );
    }
    // The same error on another bus does not matter here.
    let mut t = behind_port(vec![vec![(0, mem32(0, 0x1000))]]);
    t.errors.push(ScanError {
        address: a(0, 5, 0),
        kind: ScanErrorKind::UnsupportedHeaderType(2),
    });
    let p = plan(&t, &[(port(), windows(Some(MEM), None))], &[]);
    assert_eq!(at(&p), [(1, 0, 0, 0xfe80_0000)]);
}

#[test]
fn a_bus_two_bridges_claim_places_nothing() {
    // 00:02.0 and 00:03.0 both name bus 1 as their secondary; the walk followed 00:02.0.
    // The endpoint may sit behind 00:03.0, whose window is elsewhere.
    let mut t = behind_port(vec![vec![(0, mem32(0, 0x1000))]]);
    t.functions.push(function(a(0, 3, 0), &[], Some((1, 1))));
    t.functions.sort_by_key(|f| f.address);
    t.errors.push(ScanError {
        address: a(0, 3, 0),
        kind: ScanErrorKind::Bridge(BridgeError::BusAlreadyScanned { bus: 1 }),
    });
    let given = [
        (port(), windows(Some(MEM), None)),
        (a(0, 3, 0), windows(Some(0xfd00_0000..=0xfd0f_ffff), None)),
    ];
    let p = plan(&t, &given, &[]);
    assert_eq!(p.placed, vec![]);
    assert_eq!(
        p.unplaced[0].reason,
        Reason::BusClaimedTwice { bridge: a(0, 3, 0) }
    );
    assert!(p.unplaced[0].reason.to_string().contains("00:03.0"));
}

fn span(address: u64, size: u64) -> RangeInclusive<u64> {
    address..=address + (size - 1)
}

fn overlap(x: &RangeInclusive<u64>, y: &RangeInclusive<u64>) -> bool {
    x.start() <= y.end() && y.start() <= x.end()
}

/// One endpoint BAR: (size as a power of two, kind 0 = 32-bit, 1 = 64-bit, prefetchable,
/// assigned at this many size units into its window, or not).
type BarSpec = (u32, u8, bool, Option<u8>);

fn bar_spec() -> impl Strategy<Value = BarSpec> {
    (12u32..=21, 0u8..2, any::<bool>(), prop::option::of(0u8..16))
}

proptest! {
    // Under Miri: a few cases, and no regression file (Miri isolates the file system).
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 512 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random windows, assigned BARs (in their windows, possibly overlapping each other, as
    /// broken firmware does), unassigned BARs and a reserved range: every placement is
    /// naturally aligned, inside the window its kind may use, clear of every assigned BAR,
    /// of the child bridge's window, of the reserved range and of every other placement;
    /// and a function is placed whole or not at all.
    #[test]
    fn placements_never_overlap_and_stay_inside(
        mem_mib in 1u64..8,
        pref_mib in prop::option::of(1u64..8),
        pref_high in any::<bool>(),
        devices in prop::collection::vec(prop::collection::vec(bar_spec(), 1..4), 1..6),
        child_mib in prop::option::of(0u64..8),
        reserved_page in prop::option::of(0u64..2048),
    ) {
        let mem = 0xc000_0000..=0xc000_0000 + (mem_mib << 20) - 1;
        let pref_base = if pref_high { 0x40_0000_0000 } else { 0xd000_0000 };
        let pref = pref_mib.map(|m| pref_base..=pref_base + (m << 20) - 1);
        let mut endpoints = Vec::new();
        for specs in &devices {
            let mut bars = Vec::new();
            let mut slot = 0;
            for &(log2, kind, prefetchable, assigned) in specs {
                let size = 1u64 << log2;
                let window = if prefetchable { pref.clone().unwrap_or(mem.clone()) } else { mem.clone() };
                let address = assigned
                    .map(|k| *window.start() + u64::from(k) * size)
                    .filter(|&x| x + size - 1 <= *window.end())
                    .unwrap_or(0);
                let bar = if kind == 1 {
                    mem64(address, size, prefetchable)
                } else {
                    Bar { prefetchable, ..mem32(address, size) }
                };
                bars.push((slot, bar));
                slot += if kind == 1 { 2 } else { 1 };
                if slot >= 6 {
                    break;
                }
            }
            endpoints.push(bars);
        }
        let mut t = behind_port(endpoints);
        // A bridge on the bus whose window is one MiB of the memory window.
        let child = child_mib
            .filter(|m| *m < mem_mib)
            .map(|m| 0xc000_0000 + (m << 20)..=0xc000_0000 + (m << 20) + 0xf_ffff);
        let mut given = vec![(port(), windows(Some(mem.clone()), pref.clone()))];
        if let Some(c) = &child {
            let bridge = a(1, 31, 0);
            t.functions.push(function(bridge, &[], Some((2, 2))));
            t.buses.push(Bus { segment: 0, number: 2, bridge: Some(bridge) });
            given.push((bridge, windows(Some(c.clone()), None)));
        }
        let reserved: Vec<RangeInclusive<u64>> = reserved_page
            .map(|p| span(0xc000_0000 + (p << 12), 0x1000))
            .into_iter()
            .collect();
        let p = plan(&t, &given, &reserved);

        let assigned: Vec<RangeInclusive<u64>> = t
            .functions
            .iter()
            .flat_map(|f| f.bars().map(|(_, b)| *b))
            .filter(|b| b.address != 0)
            .map(|b| span(b.address, b.size))
            .collect();
        for (i, x) in p.placed.iter().enumerate() {
            let b = x.bar;
            let r = span(b.address, b.size);
            prop_assert_eq!(b.address % b.size, 0, "aligned");
            let in_mem = mem.contains(r.start()) && mem.contains(r.end());
            let in_pref = pref.as_ref().is_some_and(|w| w.contains(r.start()) && w.contains(r.end()));
            prop_assert!(in_mem || (b.prefetchable && in_pref), "inside its window: {:?}", x);
            if b.kind == BarKind::Memory32 {
                prop_assert!(*r.end() <= 0xffff_ffff);
            }
            for y in assigned.iter().chain(&reserved).chain(child.iter()) {
                prop_assert!(!overlap(&r, y), "{:?} overlaps {:?}", x, y);
            }
            for y in &p.placed[i + 1..] {
                prop_assert!(!overlap(&r, &span(y.bar.address, y.bar.size)), "{:?} and {:?}", x, y);
            }
        }
        // Every unassigned memory BAR is accounted for exactly once, and a function is
        // placed whole or not at all.
        for f in &t.functions {
            let wanted = f.bars().filter(|(_, b)| b.address == 0).count();
            let placed = p.placed.iter().filter(|x| x.function == f.address).count();
            let unplaced = p.unplaced.iter().filter(|x| x.function == f.address).count();
            prop_assert!(placed == 0 || unplaced == 0, "all or none: {}", f.address);
            prop_assert_eq!(placed + unplaced, wanted);
        }
    }
}
