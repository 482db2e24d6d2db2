//! Shared fixtures: a q35-like machine in the fake configuration space.
#![allow(dead_code)]

use pci::fake::{FakeBar, FakeConfigSpace, FakeFunction};
use pci::{Address, ConfigSpace, Counting, Root, Topology};

pub fn a(bus: u8, dev: u8, func: u8) -> Address {
    Address::new(0, bus, dev, func).unwrap()
}

pub const ECAM_ROOT: Root = Root {
    segment: 0,
    bus: 0,
    extended: true,
};
pub const PIO_ROOT: Root = Root {
    segment: 0,
    bus: 0,
    extended: false,
};

/// Enumerates `fake` below `roots`.
pub fn scan(fake: &FakeConfigSpace, roots: &[Root]) -> Topology {
    // SAFETY: the fake answers any aligned offset below 4096 of any address.
    let cs = unsafe { ConfigSpace::new(fake, roots) };
    pci::enumerate(&cs)
}

/// Enumerates and counts accesses: (topology, reads, writes).
pub fn scan_counted(
    fake: FakeConfigSpace,
    roots: &[Root],
) -> (Topology, usize, usize, FakeConfigSpace) {
    let counting = Counting::new(fake);
    // SAFETY: the fake answers any aligned offset below 4096 of any address.
    let cs = unsafe { ConfigSpace::new(&counting, roots) };
    let t = pci::enumerate(&cs);
    let (r, w) = (counting.reads(), counting.writes());
    (t, r, w, counting.into_inner())
}

pub fn host_bridge() -> FakeFunction {
    FakeFunction::endpoint(0x8086, 0x29c0, 0x06, 0x00, 0x00, 0x00)
        .with_command(0x0006)
        .with_subsystem(0x1af4, 0x1100)
}

/// Addresses of the q35-like machine, in order.
pub const Q35: [(u8, u8, u8); 13] = [
    (0, 0x00, 0), // host bridge
    (0, 0x01, 0), // VGA
    (0, 0x02, 0), // pcie-root-port -> bus 1
    (0, 0x02, 1), // pcie-root-port -> bus 2
    (0, 0x03, 0), // edu
    (0, 0x04, 0), // pcie-pci-bridge -> bus 3 (-4)
    (0, 0x1f, 0), // ICH9 LPC
    (0, 0x1f, 2), // ICH9 SATA
    (0, 0x1f, 3), // ICH9 SMBus
    (1, 0x00, 0), // NVMe
    (2, 0x00, 0), // virtio-net
    (3, 0x01, 0), // pci-bridge -> bus 4
    (4, 0x02, 0), // e1000
];

pub fn root_port(secondary: u8, bar: u32) -> FakeFunction {
    FakeFunction::bridge(0x1b36, 0x000c, 0, secondary, secondary)
        .with_command(0x0107)
        .with_interrupt(1, 10)
        .with_bar(
            0,
            FakeBar::Mem32 {
                address: bar,
                size: 0x1000,
                prefetchable: false,
            },
        )
        .with_pcie(0x40)
        .with_msix(0x48, 1, (0, 0), (0, 0x800))
        .with_extended_capability(0x100, 0x0001, 2)
        .with_extended_capability(0x148, 0x000d, 1)
}

/// A q35 machine: host bridge, VGA, two root ports (NVMe behind one, virtio-net behind the
/// other), edu, a pcie-pci-bridge with a pci-bridge and an e1000 behind it, and the ICH9
/// multifunction device.
pub fn q35() -> FakeConfigSpace {
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 0, 0), host_bridge());
    fake.add(
        a(0, 1, 0),
        FakeFunction::endpoint(0x1234, 0x1111, 0x03, 0x00, 0x00, 0x02)
            .with_command(0x0003)
            .with_status(0x2000) // Received Master Abort: RW1C, must survive enumeration
            .with_subsystem(0x1af4, 0x1100)
            .with_bar(
                0,
                FakeBar::Mem32 {
                    address: 0xfd00_0000,
                    size: 0x100_0000,
                    prefetchable: true,
                },
            )
            .with_bar(
                2,
                FakeBar::Mem32 {
                    address: 0xfebf_0000,
                    size: 0x1000,
                    prefetchable: false,
                },
            ),
    );
    fake.add(a(0, 2, 0), root_port(1, 0xfeb0_0000).multifunction());
    fake.add(a(0, 2, 1), root_port(2, 0xfeb0_1000));
    fake.add(
        a(0, 3, 0),
        FakeFunction::endpoint(0x1234, 0x11e8, 0x00, 0xff, 0x00, 0x10)
            .with_command(0x0002)
            .with_subsystem(0x1af4, 0x1100)
            .with_interrupt(1, 11)
            .with_bar(
                0,
                FakeBar::Mem32 {
                    address: 0xfe00_0000,
                    size: 0x10_0000,
                    prefetchable: false,
                },
            )
            .with_msi(0x40, 0, true, false),
    );
    fake.add(
        a(0, 4, 0),
        FakeFunction::bridge(0x1b36, 0x000e, 0, 3, 4)
            .with_command(0x0107)
            .with_interrupt(1, 11)
            .with_bar(
                0,
                FakeBar::Mem64 {
                    address: 0xfeb0_2000,
                    size: 0x100,
                    prefetchable: false,
                },
            )
            .with_pcie(0x40)
            .with_capability(0x48, 0x0c, &[0; 6])
            .with_msi(0x70, 0, true, true),
    );
    fake.add(
        a(0, 0x1f, 0),
        FakeFunction::endpoint(0x8086, 0x2918, 0x06, 0x01, 0x00, 0x02)
            .multifunction()
            .with_command(0x0007)
            .with_subsystem(0x1af4, 0x1100),
    );
    fake.add(
        a(0, 0x1f, 2),
        FakeFunction::endpoint(0x8086, 0x2922, 0x01, 0x06, 0x01, 0x02)
            .with_command(0x0407)
            .with_subsystem(0x1af4, 0x1100)
            .with_interrupt(1, 10)
            .with_bar(
                4,
                FakeBar::Io {
                    address: 0xc040,
                    size: 0x20,
                },
            )
            .with_bar(
                5,
                FakeBar::Mem32 {
                    address: 0xfebf_1000,
                    size: 0x1000,
                    prefetchable: false,
                },
            )
            .with_msi(0x80, 0, false, false)
            .with_capability(0xa8, 0x12, &[0x10, 0, 0x48, 0, 0, 0]),
    );
    fake.add(
        a(0, 0x1f, 3),
        FakeFunction::endpoint(0x8086, 0x2930, 0x0c, 0x05, 0x00, 0x02)
            .with_command(0x0003)
            .with_subsystem(0x1af4, 0x1100)
            .with_interrupt(1, 10)
            .with_bar(
                4,
                FakeBar::Io {
                    address: 0x0700,
                    size: 0x40,
                },
            ),
    );
    fake.add(
        a(1, 0, 0),
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
            .with_msix(0x40, 65, (0, 0x2000), (0, 0x3000))
            .with_capability(0x60, 0x01, &[0x03, 0x00, 0x08, 0x00, 0x00, 0x00])
            .with_pcie(0x80)
            .with_extended_capability(0x100, 0x0001, 2),
    );
    fake.add(
        a(2, 0, 0),
        FakeFunction::endpoint(0x1af4, 0x1041, 0x02, 0x00, 0x00, 0x01)
            .with_command(0x0507)
            .with_subsystem(0x1af4, 0x1100)
            .with_interrupt(1, 11)
            .with_bar(
                1,
                FakeBar::Mem32 {
                    address: 0xfe60_0000,
                    size: 0x1000,
                    prefetchable: false,
                },
            )
            .with_bar(
                4,
                FakeBar::Mem64 {
                    address: 0x80_0000_0000,
                    size: 0x4000,
                    prefetchable: true,
                },
            )
            .with_msix(0x98, 4, (1, 0), (1, 0x800))
            .with_capability(0x84, 0x09, &[0x14, 0x05])
            .with_capability(0x70, 0x09, &[0x14, 0x01])
            .with_pcie(0x40),
    );
    fake.add(
        a(3, 1, 0),
        FakeFunction::bridge(0x1b36, 0x0001, 3, 4, 4)
            .with_command(0x0103)
            .with_interrupt(1, 11)
            .with_bar(
                0,
                FakeBar::Mem64 {
                    address: 0xfe40_0000,
                    size: 0x100,
                    prefetchable: false,
                },
            )
            .with_capability(0x4c, 0x0c, &[0; 6])
            .with_capability(0x48, 0x04, &[0x01, 0x00])
            .with_msi(0x6c, 0, true, true),
    );
    fake.add(
        a(4, 2, 0),
        FakeFunction::endpoint(0x8086, 0x100e, 0x02, 0x00, 0x00, 0x03)
            .with_command(0x0103)
            .with_subsystem(0x1af4, 0x1100)
            .with_interrupt(1, 11)
            .with_bar(
                0,
                FakeBar::Mem32 {
                    address: 0xfe38_0000,
                    size: 0x2_0000,
                    prefetchable: false,
                },
            )
            .with_bar(
                1,
                FakeBar::Io {
                    address: 0xb000,
                    size: 0x40,
                },
            ),
    );
    fake
}
