//! Configuration space that lies about its layout or its topology: a PCI Express capability
//! running past the 256-byte header, a device answering at every device number below a
//! link, sibling bridges with overlapping bus ranges, and a host bridge learned after the
//! first walk whose bridges claim buses that walk scanned.

mod common;

use common::*;
use pci::fake::{FakeBar, FakeConfigSpace, FakeFunction};
use pci::{CapabilityError, Root, ScanErrorKind};

/// A PCI Express capability whose registers run past 0xFF (here at 0xF0: Slot Control at
/// +0x18 would be 0x108, in the extended space) is reported as `Truncated`, as MSI and
/// MSI-X are, and not used.
#[test]
fn pcie_capability_running_past_0xff_is_reported() {
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 0, 0), host_bridge());
    // Root port (type 4), version 2, Slot Implemented.
    fake.add(
        a(0, 5, 0),
        FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 1)
            .with_capability(0xf0, 0x10, &[0x42, 0x01])
            .with_extended_capability(0x100, 0x0001, 2),
    );
    let t = scan(&fake, &[ECAM_ROOT]);
    let f = t.function(a(0, 5, 0)).unwrap();
    assert!(f.is_pcie());
    let truncated = t.errors_at(a(0, 5, 0)).any(|e| {
        matches!(
            e.kind,
            ScanErrorKind::Capability(CapabilityError::Truncated { id: 0x10, .. })
        )
    });
    assert!(
        truncated,
        "PCIe capability at 0xf0 (60 bytes in v2) runs past 0xff but no error: {:?}",
        t.errors
    );
}

/// Version 1 of the capability holds only the registers the function has: an endpoint's
/// ends with Link Status (14h bytes), so one at 0xE0 fits (QEMU's e1000e has it there); a
/// version 1 Root Port's ends with Root Status (24h bytes) and does not.
#[test]
fn a_version_1_pcie_capability_is_as_long_as_its_registers() {
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 0, 0), host_bridge());
    // Endpoint (type 0), version 1.
    fake.add(
        a(0, 2, 0),
        FakeFunction::endpoint(0x8086, 0x10d3, 0x02, 0, 0, 0).with_capability(
            0xe0,
            0x10,
            &[0x01, 0x00],
        ),
    );
    // Root port (type 4), version 1.
    fake.add(
        a(0, 3, 0),
        FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 1).with_capability(0xe0, 0x10, &[0x41, 0x00]),
    );
    let t = scan(&fake, &[ECAM_ROOT]);
    let truncated = |at| {
        t.errors_at(at).any(|e| {
            matches!(
                e.kind,
                ScanErrorKind::Capability(CapabilityError::Truncated { id: 0x10, .. })
            )
        })
    };
    assert!(!truncated(a(0, 2, 0)), "{:?}", t.errors);
    assert!(truncated(a(0, 3, 0)), "{:?}", t.errors);
}

/// Behind a PCI Express Root Port or Downstream Port only device 0 exists (the link reaches
/// one device). A device that does not decode the device number answers at all 32; the walk
/// lists it once, not 32 copies of one function sharing one set of BARs.
#[test]
fn device_answering_on_every_device_number_behind_a_root_port_is_listed_once() {
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 0, 0), host_bridge());
    // Root port: PCIe capability, port type 4.
    fake.add(
        a(0, 2, 0),
        FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 1).with_capability(0x40, 0x10, &[0x42, 0x01]),
    );
    for dev in 0..32 {
        fake.add(
            a(1, dev, 0),
            FakeFunction::endpoint(0x8086, 0x10d3, 0x02, 0, 0, 0)
                .with_command(0x0006)
                .with_bar(
                    0,
                    FakeBar::Mem32 {
                        address: 0xfe80_0000,
                        size: 0x2_0000,
                        prefetchable: false,
                    },
                )
                .with_pcie(0x40),
        );
    }
    let t = scan(&fake, &[ECAM_ROOT]);
    let on_bus_1 = t.functions_on(0, 1).len();
    assert_eq!(
        on_bus_1, 1,
        "{on_bus_1} functions on the bus below a root port, all decoding BAR 0xfe800000"
    );
}

/// Sibling bridges with overlapping bus ranges: 00:06.0 claims buses 1-3, 00:07.0 bus 3
/// (followed: bus 3 not yet visited when the walk reaches it), 00:08.0 bus 1 (not
/// followed: 00:06.0 took it). What lies below a bridge is what the walk reached through
/// it, not what its registers say (the hot-plug code's view of a slot).
#[test]
fn what_lies_below_a_bridge_is_what_was_reached_through_it() {
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 0, 0), host_bridge());
    fake.add(a(0, 6, 0), FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 3));
    fake.add(a(0, 7, 0), FakeFunction::bridge(0x1b36, 0x000c, 0, 3, 3));
    fake.add(a(0, 8, 0), FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 1));
    fake.add(
        a(1, 0, 0),
        FakeFunction::endpoint(0x1b36, 0x0010, 0x01, 0x08, 0x02, 2),
    );
    fake.add(
        a(3, 0, 0),
        FakeFunction::endpoint(0x8086, 0x100e, 0x02, 0, 0, 3),
    );
    let t = scan(&fake, &[ECAM_ROOT]);
    assert!(t.reached_through(0, 1, a(0, 6, 0)));
    assert!(
        !t.reached_through(0, 3, a(0, 6, 0)),
        "bus 3 came through 00:07.0"
    );
    assert!(t.reached_through(0, 3, a(0, 7, 0)));
    assert!(
        !t.reached_through(0, 1, a(0, 8, 0)),
        "00:08.0 was not followed"
    );
    assert!(t.bus_behind(a(0, 8, 0)).is_none());
    assert!(
        !t.reached_through(0, 0, a(0, 6, 0)),
        "the root bus is below no bridge"
    );
    assert!(!t.reached_through(0, 9, a(0, 6, 0)), "a bus never scanned");
}

/// A host bridge learned late (from AML) whose bridge claims a bus the boot walk scanned:
/// `pci::enumerate_more` (what the kernel's `add_roots` calls) does not enter it, so the
/// function there, which may have a driver by now, is not written (BAR sizing would switch
/// its decode off).
#[test]
fn a_late_root_walked_with_enumerate_more_leaves_the_boot_buses_alone() {
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 0, 0), host_bridge());
    fake.add(
        a(0, 2, 0),
        FakeFunction::bridge(0x1b36, 0x000c, 0, 0x30, 0x30),
    );
    fake.add(
        a(0x20, 0, 0),
        FakeFunction::bridge(0x1b36, 0x000c, 0x20, 0x30, 0x30),
    );
    let nvme = a(0x30, 0, 0);
    fake.add(
        nvme,
        FakeFunction::endpoint(0x1b36, 0x0010, 0x01, 0x08, 0x02, 2).with_command(0x0006),
    );
    let boot = scan(&fake, &[ECAM_ROOT]);
    let late = Root {
        segment: 0,
        bus: 0x20,
        extended: true,
    };
    fake.clear_log();
    // SAFETY: the fake answers any aligned offset below 4096 of any address.
    let cs = unsafe { pci::ConfigSpace::new(&fake, &[ECAM_ROOT, late]) };
    let found = pci::enumerate_more(&cs, &[late], &boot);
    assert!(fake.writes().iter().all(|w| w.0 != nvme));
    assert!(found.function(nvme).is_none());
    assert!(found.function(a(0x20, 0, 0)).is_some());
    assert!(found.errors.iter().any(
        |e| e.kind == ScanErrorKind::Bridge(pci::BridgeError::BusAlreadyScanned { bus: 0x30 })
    ));
}
