//! Malformed configuration spaces: each gives a recorded error or a skipped item, never a
//! hang or a panic, and never an access outside the function's space.

mod common;

use common::*;
use pci::fake::{FakeBar, FakeConfigSpace, FakeFunction};
use pci::{
    BarError, BarKind, BridgeError, CapabilityError, ConfigSpace, Root, ScanError, ScanErrorKind,
    Topology, lspci,
};

/// A machine with a host bridge and `f` at 00:05.0, enumerated through `root`.
fn with_function(f: FakeFunction, root: Root) -> (Topology, FakeConfigSpace) {
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 0, 0), host_bridge());
    fake.add(a(0, 5, 0), f);
    let t = scan(&fake, &[root]);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    (t, fake)
}

fn endpoint() -> FakeFunction {
    FakeFunction::endpoint(0x1af4, 0x1041, 0x02, 0x00, 0x00, 0x01).with_command(0x0007)
}

/// Offsets written at 00:05.0.
fn written(fake: &FakeConfigSpace, addr: pci::Address) -> Vec<u16> {
    fake.writes()
        .into_iter()
        .filter(|w| w.0 == addr)
        .map(|w| w.1)
        .collect()
}

fn errors(t: &Topology) -> Vec<ScanErrorKind> {
    t.errors.iter().map(|e| e.kind).collect()
}

fn cap_ids(t: &Topology) -> Vec<(u8, u8)> {
    t.function(a(0, 5, 0))
        .unwrap()
        .capabilities
        .iter()
        .map(|c| (c.id, c.offset))
        .collect()
}

fn ecap_offsets(t: &Topology) -> Vec<u16> {
    t.function(a(0, 5, 0))
        .unwrap()
        .extended_capabilities
        .iter()
        .map(|c| c.offset)
        .collect()
}

fn cap(e: CapabilityError) -> ScanErrorKind {
    ScanErrorKind::Capability(e)
}

fn ecap(e: CapabilityError) -> ScanErrorKind {
    ScanErrorKind::ExtendedCapability(e)
}

#[test]
fn capability_loop_stops_with_an_error() {
    // 0x40 -> 0x50 -> 0x40 -> ...
    let f = endpoint()
        .with_capability(0x40, 0x01, &[])
        .with_capability(0x50, 0x10, &[])
        .with8(0x51, 0x40);
    let (t, _) = with_function(f, ECAM_ROOT);
    assert_eq!(cap_ids(&t), vec![(0x01, 0x40), (0x10, 0x50)]);
    assert_eq!(
        errors(&t),
        vec![cap(CapabilityError::Loop {
            at: 0x51,
            pointer: 0x40
        })]
    );
    assert_eq!(t.errors[0].address, a(0, 5, 0));
}

#[test]
fn self_loop_stops_with_an_error() {
    let f = endpoint()
        .with_capability(0x40, 0x09, &[])
        .with8(0x41, 0x40);
    let (t, _) = with_function(f, ECAM_ROOT);
    assert_eq!(cap_ids(&t), vec![(0x09, 0x40)]);
    assert_eq!(
        errors(&t),
        vec![cap(CapabilityError::Loop {
            at: 0x41,
            pointer: 0x40
        })]
    );
}

#[test]
fn pointer_into_the_header_is_rejected() {
    let f = endpoint().with_status(0x0010).with8(0x34, 0x20);
    let (t, _) = with_function(f, ECAM_ROOT);
    assert!(cap_ids(&t).is_empty());
    assert_eq!(
        errors(&t),
        vec![cap(CapabilityError::IntoHeader {
            at: 0x34,
            pointer: 0x20,
            min: 0x40
        })]
    );

    // Same from a capability's next pointer: what was found before is kept.
    let f = endpoint()
        .with_capability(0x40, 0x01, &[])
        .with8(0x41, 0x3c);
    let (t, _) = with_function(f, ECAM_ROOT);
    assert_eq!(cap_ids(&t), vec![(0x01, 0x40)]);
    assert_eq!(
        errors(&t),
        vec![cap(CapabilityError::IntoHeader {
            at: 0x41,
            pointer: 0x3c,
            min: 0x40
        })]
    );
}

#[test]
fn misaligned_legacy_pointer_is_reported_and_masked() {
    let f = endpoint()
        .with_capability(0x40, 0x05, &[0, 0])
        .with8(0x34, 0x43);
    let (t, _) = with_function(f, ECAM_ROOT);
    assert_eq!(cap_ids(&t), vec![(0x05, 0x40)]);
    assert_eq!(
        errors(&t),
        vec![cap(CapabilityError::Misaligned {
            at: 0x34,
            pointer: 0x43
        })]
    );
    assert!(t.function(a(0, 5, 0)).unwrap().msi.is_some());
}

#[test]
fn pointer_past_0xff_cannot_escape_the_legacy_space() {
    // 0xFF: misaligned, masked to 0xFC, the last dword; the walk reads it and nothing
    // beyond (the fake and ConfigSpace would flag or refuse an access past 0xFF).
    let f = endpoint()
        .with_status(0x0010)
        .with8(0x34, 0xff)
        .with32(0xfc, 0x0000_0001);
    let (t, _) = with_function(f, PIO_ROOT);
    assert_eq!(cap_ids(&t), vec![(0x01, 0xfc)]);
    assert_eq!(
        errors(&t),
        vec![cap(CapabilityError::Misaligned {
            at: 0x34,
            pointer: 0xff
        })]
    );

    // An MSI-X capability at 0xF8 would need 0x100..0x104: reported, not read.
    let f = endpoint()
        .with_bar(
            0,
            FakeBar::Mem32 {
                address: 0xfe00_0000,
                size: 0x4000,
                prefetchable: false,
            },
        )
        .with_capability(0xf8, 0x11, &[0x03, 0x00]);
    let (t, _) = with_function(f, PIO_ROOT);
    assert_eq!(cap_ids(&t), vec![(0x11, 0xf8)]);
    assert_eq!(t.function(a(0, 5, 0)).unwrap().msix, None);
    assert_eq!(
        errors(&t),
        vec![cap(CapabilityError::Truncated {
            id: 0x11,
            offset: 0xf8,
            length: 12
        })]
    );
}

fn pcie_endpoint() -> FakeFunction {
    endpoint().with_pcie(0x40)
}

#[test]
fn extended_pointer_past_0xfff_is_rejected() {
    let f = pcie_endpoint()
        .with_extended_capability(0x100, 0x0001, 2)
        .with32(0x100, 0xffe2_0001);
    let (t, _) = with_function(f, ECAM_ROOT);
    assert_eq!(ecap_offsets(&t), vec![0x100]);
    assert_eq!(
        errors(&t),
        vec![ecap(CapabilityError::PastEnd {
            at: 0x100,
            pointer: 0xffe,
            max: 0xffc
        })]
    );
}

#[test]
fn extended_pointer_into_the_legacy_space_is_rejected() {
    let f = pcie_endpoint()
        .with_extended_capability(0x100, 0x0001, 2)
        .with_extended_capability(0x140, 0x0003, 1)
        .with32(0x140, 0x0f01_0003);
    let (t, _) = with_function(f, ECAM_ROOT);
    assert_eq!(ecap_offsets(&t), vec![0x100, 0x140]);
    assert_eq!(
        errors(&t),
        vec![ecap(CapabilityError::IntoHeader {
            at: 0x140,
            pointer: 0x0f0,
            min: 0x100
        })]
    );
}

#[test]
fn misaligned_extended_pointer_is_rejected() {
    let f = pcie_endpoint().with32(0x100, 0x1422_0001);
    let (t, _) = with_function(f, ECAM_ROOT);
    assert_eq!(ecap_offsets(&t), vec![0x100]);
    assert_eq!(
        errors(&t),
        vec![ecap(CapabilityError::Misaligned {
            at: 0x100,
            pointer: 0x142
        })]
    );
}

#[test]
fn extended_loop_is_detected() {
    let f = pcie_endpoint()
        .with_extended_capability(0x100, 0x0001, 2)
        .with_extended_capability(0x140, 0x000d, 1)
        .with_extended_capability(0x200, 0x0003, 1)
        .with32(0x200, 0x1401_0003);
    let (t, _) = with_function(f, ECAM_ROOT);
    assert_eq!(ecap_offsets(&t), vec![0x100, 0x140, 0x200]);
    assert_eq!(
        errors(&t),
        vec![ecap(CapabilityError::Loop {
            at: 0x200,
            pointer: 0x140
        })]
    );
}

#[test]
fn empty_extended_space_is_no_list() {
    for header in [0, !0] {
        let f = pcie_endpoint().with32(0x100, header);
        let (t, _) = with_function(f, ECAM_ROOT);
        assert!(ecap_offsets(&t).is_empty());
        assert!(t.errors.is_empty());
    }
}

#[test]
fn bar_reading_all_ones_is_an_error() {
    let f = endpoint()
        .with_bar(
            0,
            FakeBar::Raw {
                value: !0,
                writable: 0,
            },
        )
        .with_bar(
            1,
            FakeBar::Mem32 {
                address: 0xfe00_0000,
                size: 0x1000,
                prefetchable: false,
            },
        );
    let (t, fake) = with_function(f, ECAM_ROOT);
    let f = t.function(a(0, 5, 0)).expect("the function is still there");
    assert_eq!(f.bars[0], None);
    assert_eq!(f.bars[1].map(|b| b.size), Some(0x1000));
    assert_eq!(
        errors(&t),
        vec![ScanErrorKind::Bar(BarError::AllOnes { slot: 0 })]
    );
    // Not written: sizing a register that reads all ones tells nothing.
    assert!(!written(&fake, a(0, 5, 0)).contains(&0x10));
}

#[test]
fn bar_reading_back_all_ones_is_an_error_and_restored() {
    let f = endpoint().with_bar(
        2,
        FakeBar::Raw {
            value: 0xfe00_0000,
            writable: !0,
        },
    );
    let (t, fake) = with_function(f, ECAM_ROOT);
    assert_eq!(t.function(a(0, 5, 0)).unwrap().bars[2], None);
    assert_eq!(
        errors(&t),
        vec![ScanErrorKind::Bar(BarError::ReadbackAllOnes { slot: 2 })]
    );
    assert_eq!(fake.peek(a(0, 5, 0), 0x18), Some(0xfe00_0000));
    assert_eq!(
        fake.peek(a(0, 5, 0), 0x04).map(|c| c & 0xffff),
        Some(0x0007)
    );
}

#[test]
fn sixty_four_bit_bar_in_the_last_slot_is_an_error() {
    let f = endpoint()
        .with_bar(
            0,
            FakeBar::Io {
                address: 0xc000,
                size: 0x20,
            },
        )
        .with_bar(
            5,
            FakeBar::Mem64 {
                address: 0xfe00_0000,
                size: 0x1000,
                prefetchable: false,
            },
        )
        .with32(0x28, 0x1234_5678);
    let (t, fake) = with_function(f, ECAM_ROOT);
    let f = t.function(a(0, 5, 0)).unwrap();
    assert_eq!(f.bars[5], None);
    assert_eq!(f.bars[0].map(|b| b.kind), Some(BarKind::Io));
    assert_eq!(
        errors(&t),
        vec![ScanErrorKind::Bar(BarError::Memory64InLastSlot { slot: 5 })]
    );
    let w = written(&fake, a(0, 5, 0));
    assert!(!w.contains(&0x24) && !w.contains(&0x28), "{w:x?}");

    // A bridge's last BAR is slot 1; the dword after it holds the bus numbers.
    let fake = FakeConfigSpace::new();
    fake.add(
        a(0, 6, 0),
        FakeFunction::bridge(0x1b36, 0x0001, 0, 1, 1)
            .with_command(0x0003)
            .with_bar(
                1,
                FakeBar::Mem64 {
                    address: 0xfe00_0000,
                    size: 0x100,
                    prefetchable: false,
                },
            ),
    );
    let t = scan(&fake, &[ECAM_ROOT]);
    assert_eq!(
        errors(&t),
        vec![ScanErrorKind::Bar(BarError::Memory64InLastSlot { slot: 1 })]
    );
    let w = written(&fake, a(0, 6, 0));
    assert!(!w.contains(&0x14) && !w.contains(&0x18), "{w:x?}");
    assert_eq!(t.buses.len(), 2, "the bridge is still followed");
    assert!(fake.violations().is_empty());
}

#[test]
fn reserved_memory_type_is_an_error_and_below_1m_is_32_bit() {
    let f = endpoint()
        .with_bar(
            0,
            FakeBar::Raw {
                value: 0xfe00_0006,
                writable: 0xffff_f000,
            },
        )
        .with_bar(
            1,
            FakeBar::Raw {
                value: 0x000d_0002,
                writable: 0xffff_0000,
            },
        );
    let (t, fake) = with_function(f, ECAM_ROOT);
    let f = t.function(a(0, 5, 0)).unwrap();
    assert_eq!(f.bars[0], None);
    let legacy = f.bars[1].unwrap();
    assert_eq!(
        (legacy.kind, legacy.below_1m, legacy.address, legacy.size),
        (BarKind::Memory32, true, 0xd_0000, 0x1_0000)
    );
    assert_eq!(
        errors(&t),
        vec![ScanErrorKind::Bar(BarError::ReservedMemoryType {
            slot: 0,
            value: 0xfe00_0006
        })]
    );
    assert!(!written(&fake, a(0, 5, 0)).contains(&0x10), "not sized");
}

#[test]
fn unimplemented_bars_are_none() {
    let (t, _) = with_function(endpoint(), ECAM_ROOT);
    assert!(
        t.function(a(0, 5, 0))
            .unwrap()
            .bars
            .iter()
            .all(Option::is_none)
    );
    assert!(t.errors.is_empty());
}

fn bridge_errors(t: &Topology) -> Vec<(pci::Address, BridgeError)> {
    t.errors
        .iter()
        .filter_map(|e| match e.kind {
            ScanErrorKind::Bridge(b) => Some((e.address, b)),
            _ => None,
        })
        .collect()
}

#[test]
fn bridge_whose_secondary_is_not_above_its_primary_is_not_followed() {
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 0, 0), host_bridge());
    fake.add(a(0, 6, 0), FakeFunction::bridge(0x1b36, 0x0001, 0, 0, 0));
    fake.add(a(0, 7, 0), FakeFunction::bridge(0x1b36, 0x0001, 5, 3, 3));
    fake.add(a(0, 8, 0), FakeFunction::bridge(0x1b36, 0x0001, 0, 4, 2));
    fake.add(
        a(3, 0, 0),
        FakeFunction::endpoint(0x8086, 0x100e, 0x02, 0, 0, 3),
    );
    let t = scan(&fake, &[ECAM_ROOT]);
    assert_eq!(
        bridge_errors(&t),
        vec![
            (
                a(0, 6, 0),
                BridgeError::SecondaryNotAbove {
                    primary: 0,
                    secondary: 0,
                    bus: 0
                }
            ),
            (
                a(0, 7, 0),
                BridgeError::SecondaryNotAbove {
                    primary: 5,
                    secondary: 3,
                    bus: 0
                }
            ),
            (
                a(0, 8, 0),
                BridgeError::SubordinateBelowSecondary {
                    secondary: 4,
                    subordinate: 2
                }
            ),
        ]
    );
    assert_eq!(t.buses.len(), 1);
    assert!(t.function(a(3, 0, 0)).is_none());
    for bridge in [a(0, 6, 0), a(0, 7, 0), a(0, 8, 0)] {
        assert!(
            !written(&fake, bridge).contains(&0x18),
            "bus numbers never written"
        );
    }
}

#[test]
fn two_bridges_claiming_one_bus_scan_it_once() {
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 0, 0), host_bridge());
    fake.add(a(0, 6, 0), FakeFunction::bridge(0x1b36, 0x0001, 0, 1, 1));
    fake.add(a(0, 7, 0), FakeFunction::bridge(0x1b36, 0x0001, 0, 1, 1));
    fake.add(
        a(1, 0, 0),
        FakeFunction::endpoint(0x8086, 0x100e, 0x02, 0, 0, 3),
    );
    let t = scan(&fake, &[ECAM_ROOT]);
    assert_eq!(
        bridge_errors(&t),
        vec![(a(0, 7, 0), BridgeError::BusAlreadyScanned { bus: 1 })]
    );
    assert_eq!(
        t.functions
            .iter()
            .filter(|f| f.address == a(1, 0, 0))
            .count(),
        1
    );
    assert_eq!(t.bus_behind(a(0, 6, 0)).map(|b| b.number), Some(1));
    assert_eq!(t.bus_behind(a(0, 7, 0)), None);
    let mut tree = String::new();
    lspci::write_tree(&mut tree, &t).unwrap();
    assert_eq!(tree.matches("82540EM").count(), 1, "{tree}");
}

#[test]
fn bridge_loop_across_levels_is_cut() {
    // 00:06.0 -> [1-3]; 01:00.0 -> [2-3]; 02:00.0 -> [3]; but 00:07.0 claimed bus 3 first.
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 6, 0), FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 3));
    fake.add(a(0, 7, 0), FakeFunction::bridge(0x1b36, 0x000c, 0, 3, 3));
    fake.add(a(1, 0, 0), FakeFunction::bridge(0x1b36, 0x000e, 1, 2, 3));
    fake.add(a(2, 0, 0), FakeFunction::bridge(0x1b36, 0x0001, 2, 3, 3));
    fake.add(
        a(3, 0, 0),
        FakeFunction::endpoint(0x8086, 0x100e, 0x02, 0, 0, 3),
    );
    let t = scan(&fake, &[ECAM_ROOT]);
    assert_eq!(
        bridge_errors(&t),
        vec![(a(2, 0, 0), BridgeError::BusAlreadyScanned { bus: 3 })]
    );
    assert_eq!(
        t.buses.iter().map(|b| b.number).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(t.functions.len(), 5);
}

#[test]
fn bridge_outside_its_parents_range_is_not_followed() {
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 6, 0), FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 2));
    fake.add(a(1, 0, 0), FakeFunction::bridge(0x1b36, 0x000e, 1, 5, 5));
    fake.add(a(1, 1, 0), FakeFunction::bridge(0x1b36, 0x000e, 1, 2, 9));
    let t = scan(&fake, &[ECAM_ROOT]);
    assert_eq!(
        bridge_errors(&t),
        vec![
            (
                a(1, 0, 0),
                BridgeError::OutsideParentRange {
                    secondary: 5,
                    last: 2
                }
            ),
            (
                a(1, 1, 0),
                BridgeError::SubordinateBeyondParent {
                    subordinate: 9,
                    last: 2
                }
            ),
        ]
    );
    assert_eq!(
        t.buses.iter().map(|b| b.number).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
}

#[test]
fn roots_end_where_the_next_root_begins() {
    let fake = FakeConfigSpace::new();
    fake.add(
        a(0, 6, 0),
        FakeFunction::bridge(0x1b36, 0x000c, 0, 0x80, 0x80),
    );
    fake.add(
        a(0x80, 0, 0),
        FakeFunction::endpoint(0x1af4, 0x1042, 0x01, 0, 0, 1),
    );
    let roots = [
        ECAM_ROOT,
        Root {
            segment: 0,
            bus: 0x80,
            extended: true,
        },
        ECAM_ROOT,
    ];
    let t = scan(&fake, &roots);
    assert_eq!(
        bridge_errors(&t),
        vec![
            (a(0, 0, 0), BridgeError::BusAlreadyScanned { bus: 0 }),
            (
                a(0, 6, 0),
                BridgeError::OutsideParentRange {
                    secondary: 0x80,
                    last: 0x7f
                }
            ),
        ]
    );
    assert_eq!(t.functions.len(), 2);
    assert_eq!(t.bus_behind(a(0, 6, 0)), None);
}

#[test]
fn function_vanishing_mid_walk_is_skipped_with_an_error() {
    // Reads: 0x00 by the bus scan, 0x0C, 0x08, 0x04; the 4th read returns all ones.
    let f = endpoint().vanish_after_reads(3);
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 5, 0), f);
    let t = scan(&fake, &[ECAM_ROOT]);
    assert!(t.functions.is_empty());
    assert_eq!(
        t.errors,
        vec![ScanError {
            address: a(0, 5, 0),
            kind: ScanErrorKind::Vanished
        }]
    );
    let mut s = String::new();
    lspci::write_machine(&mut s, &t).unwrap();
    assert_eq!(
        s,
        "PCIERR 0000:00:05.0 function vanished during the scan (vendor ID reads ffff); skipped\n"
    );
}

#[test]
fn vanishing_at_any_point_never_panics_or_hangs() {
    let rich = || {
        FakeFunction::endpoint(0x1b36, 0x0010, 0x01, 0x08, 0x02, 0x02)
            .with_command(0x0507)
            .with_subsystem(0x1af4, 0x1100)
            .with_interrupt(1, 10)
            .with_bar(
                0,
                FakeBar::Mem64 {
                    address: 0xfe80_0000,
                    size: 0x4000,
                    prefetchable: false,
                },
            )
            .with_bar(
                2,
                FakeBar::Io {
                    address: 0xc000,
                    size: 0x40,
                },
            )
            .with_msix(0x40, 65, (0, 0x2000), (0, 0x3000))
            .with_msi(0x50, 2, true, true)
            .with_pcie(0x80)
            .with_extended_capability(0x100, 0x0001, 2)
            .with_extended_capability(0x140, 0x0003, 1)
    };
    let (full, _) = with_function(rich(), ECAM_ROOT);
    let complete = full.function(a(0, 5, 0)).unwrap().clone();
    let mut vanished = 0;
    // Every point natively; every 4th under Miri, which takes seconds per scan.
    let step = if cfg!(miri) { 4 } else { 1 };
    for n in (0..80).step_by(step) {
        let fake = FakeConfigSpace::new();
        fake.add(a(0, 5, 0), rich().vanish_after_reads(n));
        let t = scan(&fake, &[ECAM_ROOT]);
        assert!(fake.violations().is_empty(), "{n}: {:?}", fake.violations());
        match t.function(a(0, 5, 0)) {
            Some(f) => {
                assert_eq!(f, &complete, "after {n} reads");
                assert!(t.errors.is_empty(), "{n}: {:?}", t.errors);
            }
            None if n == 0 => assert!(t.errors.is_empty(), "absent from the start"),
            None => {
                vanished += 1;
                assert_eq!(
                    t.errors.last().map(|e| e.kind),
                    Some(ScanErrorKind::Vanished),
                    "{n}"
                );
            }
        }
    }
    assert!(
        vanished * step > 20,
        "the function vanished at {vanished} different points"
    );
}

#[test]
fn other_malformations_are_reported() {
    let f = endpoint()
        .with_interrupt(7, 3)
        .with_msi(0x40, 6, false, false)
        .with_msix(0x50, 8, (4, 0), (6, 0x800));
    let (t, _) = with_function(f, ECAM_ROOT);
    let f = t.function(a(0, 5, 0)).unwrap();
    assert_eq!(
        (f.interrupt_pin_letter(), f.msi, f.msix),
        (None, None, None)
    );
    assert_eq!(
        errors(&t),
        vec![
            ScanErrorKind::InvalidInterruptPin(7),
            cap(CapabilityError::MsiReservedVectorCount {
                offset: 0x40,
                encoding: 6
            }),
            cap(CapabilityError::MsixTableBir {
                offset: 0x50,
                bir: 4
            }),
            cap(CapabilityError::MsixPbaBir {
                offset: 0x50,
                bir: 6
            }),
        ]
    );
    let mut s = String::new();
    lspci::write_machine(&mut s, &t).unwrap();
    assert!(s.contains(" irq=-/3 caps=05,11 ecaps=-\n"), "{s}");
    assert!(s.contains(
        "PCIERR 0000:00:05.0 capability list: MSI-X at 0x50 puts its table in BIR 4, not an \
         implemented memory BAR\n"
    ));
}

#[test]
fn cardbus_headers_are_listed_but_not_walked() {
    let f = FakeFunction::endpoint(0x1180, 0x0476, 0x06, 0x07, 0, 0).with_header_type(2);
    let (t, fake) = with_function(f, ECAM_ROOT);
    let f = t.function(a(0, 5, 0)).unwrap();
    assert_eq!(f.header_type, 2);
    assert_eq!(errors(&t), vec![ScanErrorKind::UnsupportedHeaderType(2)]);
    assert!(written(&fake, a(0, 5, 0)).is_empty());
}

#[test]
fn refused_accesses_are_errors_not_panics() {
    let fake = q35();
    // SAFETY: the fake answers any aligned offset below 4096 of any address.
    let cs = unsafe { ConfigSpace::new(&fake, &[ECAM_ROOT]) };
    let (f, errors) = pci::probe(&cs, pci::Address::new(3, 0, 0, 0).unwrap());
    assert!(f.is_none());
    assert_eq!(
        errors[0].kind,
        ScanErrorKind::Config(pci::ConfigError::NoRoot { segment: 3, bus: 0 })
    );
    assert_eq!(
        errors[0].to_string(),
        "0003:00:00.0 config access refused: no root covers segment 0003 bus 00; skipped"
    );
}

#[test]
fn every_error_kind_displays_a_message() {
    let kinds = [
        ScanErrorKind::Vanished,
        ScanErrorKind::UnsupportedHeaderType(2),
        ScanErrorKind::InvalidInterruptPin(9),
        ScanErrorKind::Config(pci::ConfigError::OutOfRange {
            offset: 0x100,
            limit: 256,
        }),
        ScanErrorKind::Config(pci::ConfigError::Misaligned {
            offset: 2,
            width: 4,
        }),
        ScanErrorKind::Bar(BarError::TypeChanged {
            slot: 1,
            original: 0xc,
            readback: 0xfff0,
        }),
        cap(CapabilityError::TooMany { limit: 48 }),
        ecap(CapabilityError::PastEnd {
            at: 0x100,
            pointer: 0xffd,
            max: 0xffc,
        }),
        ScanErrorKind::Bridge(BridgeError::SubordinateBeyondParent {
            subordinate: 9,
            last: 2,
        }),
    ];
    let expected = [
        "function vanished during the scan (vendor ID reads ffff); skipped",
        "header type 02 is not supported; BARs and capabilities not read",
        "interrupt pin 0x09 is not 0-4; ignored",
        "config access refused: offset 0x100 is past the 256-byte configuration space; skipped",
        "config access refused: offset 0x2 is not aligned for a 4-byte access; skipped",
        "BAR 1 type bits changed while sizing (0x0000000c, read back 0x0000fff0); ignored",
        "capability list: more than 48 entries",
        "extended capability list: pointer 0xffd at 0x100 is past 0xffc",
        "bridge subordinate bus 09 is beyond the parent's last bus 02; scanned up to 02",
    ];
    for (k, e) in kinds.iter().zip(expected) {
        assert_eq!(k.to_string(), e);
    }
}
