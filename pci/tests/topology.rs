//! Enumeration of a realistic q35-like machine: what is found, how it prints, how few
//! configuration accesses it costs, and that it leaves the devices as it found them.

mod common;

use common::*;
use pci::fake::{FakeConfigSpace, FakeFunction};
use pci::{Bar, BarKind, BridgeBuses, Bus, Msi, Msix, lspci};

#[test]
fn finds_every_function_once_in_address_order() {
    let fake = q35();
    let t = scan(&fake, &[ECAM_ROOT]);
    assert_eq!(t.errors, vec![], "no errors on a well-formed machine");
    let found: Vec<_> = t.functions.iter().map(|f| f.address).collect();
    let expected: Vec<_> = Q35.iter().map(|&(b, d, f)| a(b, d, f)).collect();
    assert_eq!(found, expected);
    assert_eq!(
        t.buses,
        vec![
            Bus {
                segment: 0,
                number: 0,
                bridge: None
            },
            Bus {
                segment: 0,
                number: 1,
                bridge: Some(a(0, 2, 0))
            },
            Bus {
                segment: 0,
                number: 2,
                bridge: Some(a(0, 2, 1))
            },
            Bus {
                segment: 0,
                number: 3,
                bridge: Some(a(0, 4, 0))
            },
            Bus {
                segment: 0,
                number: 4,
                bridge: Some(a(3, 1, 0))
            },
        ]
    );
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn decodes_the_nvme_behind_the_root_port() {
    let t = scan(&q35(), &[ECAM_ROOT]);
    let port = t.function(a(0, 2, 0)).unwrap();
    assert!(port.is_bridge() && port.multifunction);
    assert_eq!(
        port.bridge,
        Some(BridgeBuses {
            primary: 0,
            secondary: 1,
            subordinate: 1
        })
    );
    assert_eq!(
        port.subsystem_vendor_id, None,
        "type 1 headers have no subsystem"
    );
    assert_eq!(
        port.extended_capabilities
            .iter()
            .map(|c| (c.id, c.version, c.offset))
            .collect::<Vec<_>>(),
        vec![(0x0001, 2, 0x100), (0x000d, 1, 0x148)]
    );

    let nvme = t.function(a(1, 0, 0)).unwrap();
    assert_eq!((nvme.vendor_id, nvme.device_id), (0x1b36, 0x0010));
    assert_eq!(
        (nvme.class, nvme.subclass, nvme.prog_if, nvme.revision),
        (0x01, 0x08, 0x02, 0x02)
    );
    assert_eq!(
        (nvme.subsystem_vendor_id, nvme.subsystem_id),
        (Some(0x1af4), Some(0x1100))
    );
    assert_eq!(
        nvme.bars,
        [
            Some(Bar {
                kind: BarKind::Memory64,
                prefetchable: false,
                address: 0xfe80_0000,
                size: 0x4000,
                below_1m: false
            }),
            None,
            None,
            None,
            None,
            None
        ]
    );
    assert_eq!(
        nvme.msix,
        Some(Msix {
            offset: 0x40,
            table_size: 65,
            table_bir: 0,
            table_offset: 0x2000,
            pba_bir: 0,
            pba_offset: 0x3000
        })
    );
    assert_eq!(nvme.msi, None);
    assert_eq!(
        nvme.capabilities
            .iter()
            .map(|c| (c.id, c.offset))
            .collect::<Vec<_>>(),
        vec![(0x11, 0x40), (0x01, 0x60), (0x10, 0x80)]
    );
    assert!(nvme.is_pcie());
    assert_eq!(
        (nvme.interrupt_pin_letter(), nvme.interrupt_line),
        (Some('A'), 10)
    );

    let edu = t.function(a(0, 3, 0)).unwrap();
    assert_eq!(
        edu.msi,
        Some(Msi {
            offset: 0x40,
            vectors: 1,
            is_64bit: true,
            per_vector_masking: false
        })
    );
    assert!(
        edu.extended_capabilities.is_empty(),
        "no PCIe capability: 0x100 is not read"
    );

    let virtio = t.function(a(2, 0, 0)).unwrap();
    let bar4 = virtio.bars[4].unwrap();
    assert_eq!(
        (bar4.kind, bar4.prefetchable, bar4.address, bar4.size),
        (BarKind::Memory64, true, 0x80_0000_0000, 0x4000)
    );
    let e1000 = t.function(a(4, 2, 0)).unwrap();
    assert_eq!(
        e1000.bars[1].map(|b| (b.kind, b.address, b.size)),
        Some((BarKind::Io, 0xb000, 0x40))
    );
}

#[test]
fn multifunction_devices_are_scanned_only_when_flagged() {
    let fake = FakeConfigSpace::new();
    fake.add(a(0, 0, 0), host_bridge());
    // Function 0 without the multifunction bit: function 1 is not looked at.
    fake.add(
        a(0, 1, 0),
        FakeFunction::endpoint(0x8086, 0x100e, 0x02, 0, 0, 3),
    );
    fake.add(
        a(0, 1, 1),
        FakeFunction::endpoint(0x8086, 0x100e, 0x02, 0, 0, 3),
    );
    // Multifunction with a gap: 2.0 and 2.5.
    fake.add(
        a(0, 2, 0),
        FakeFunction::endpoint(0x8086, 0x2918, 0x06, 0x01, 0, 2).multifunction(),
    );
    fake.add(
        a(0, 2, 5),
        FakeFunction::endpoint(0x8086, 0x2930, 0x0c, 0x05, 0, 2),
    );
    // No function 0: the device is absent even if function 1 would answer.
    fake.add(
        a(0, 3, 1),
        FakeFunction::endpoint(0x8086, 0x2930, 0x0c, 0x05, 0, 2),
    );
    let t = scan(&fake, &[ECAM_ROOT]);
    let found: Vec<_> = t.functions.iter().map(|f| f.address).collect();
    assert_eq!(found, vec![a(0, 0, 0), a(0, 1, 0), a(0, 2, 0), a(0, 2, 5)]);
    assert!(t.errors.is_empty());
}

/// Reads and writes the walk must cost, computed from what it found: every bus costs 32
/// vendor reads (function 0 of each device), a multifunction device 7 more (functions
/// 1-7), then per function five header dwords (0x0C, 0x08, 0x04, 0x2C or 0x18, 0x3C), two reads per
/// BAR slot, and with a capability list the 0x34 pointer, one read per capability, two more
/// for MSI-X, and one per extended capability (at least the one at 0x100). Writes: two per
/// BAR slot, plus two Command writes when decode had to be switched off.
fn expected_accesses(t: &pci::Topology) -> (usize, usize) {
    let mut reads = 32 * t.buses.len();
    let mut writes = 0;
    for f in &t.functions {
        let slots = if f.is_bridge() { 2 } else { 6 };
        if f.address.function() == 0 && f.multifunction {
            reads += 7;
        }
        reads += 5 + 2 * slots;
        if !f.capabilities.is_empty() {
            reads += 1 + f.capabilities.len() + if f.msix.is_some() { 2 } else { 0 };
        }
        if f.is_pcie() {
            reads += f.extended_capabilities.len().max(1);
        }
        let host_bridge = f.class == 6 && f.subclass == 0;
        // Sizing writes all ones to every slot and restores only a slot that latched them
        // (an implemented BAR; a 64-bit BAR is two slots).
        let implemented: usize = f
            .bars()
            .map(|(_, b)| {
                if b.kind == pci::BarKind::Memory64 {
                    2
                } else {
                    1
                }
            })
            .sum();
        writes += slots
            + implemented
            + if f.command & 3 != 0 && !host_bridge {
                2
            } else {
                0
            };
    }
    (reads, writes)
}

#[test]
fn config_accesses_are_few() {
    let (t, reads, writes, _) = scan_counted(q35(), &[ECAM_ROOT]);
    assert_eq!((reads, writes), expected_accesses(&t));
    // The budget, absent-slot probing aside: an endpoint costs 5 header reads, 24 accesses
    // for its 6 BAR slots, 2 Command writes, and its capabilities: under 32 per function on
    // average here, so 13 functions on 5 buses (two multifunction devices) stay under
    // 5 * 32 + 2 * 7 + 13 * 32 accesses.
    let per_function =
        (reads + writes - 32 * t.buses.len() - 2 * 7) as f64 / t.functions.len() as f64;
    assert!(per_function < 32.0, "{per_function} accesses per function");
    assert!(
        reads + writes <= 5 * 32 + 2 * 7 + 13 * 32,
        "{reads} reads, {writes} writes"
    );
}

#[test]
fn leaves_command_bars_status_and_bus_numbers_as_found() {
    let fake = q35();
    let before: Vec<Vec<u32>> = Q35
        .iter()
        .map(|&(b, d, f)| {
            (0..64)
                .map(|dw| fake.peek(a(b, d, f), dw * 4).unwrap())
                .collect()
        })
        .collect();
    let t = scan(&fake, &[ECAM_ROOT]);
    assert_eq!(t.functions.len(), Q35.len());
    for (i, &(b, d, f)) in Q35.iter().enumerate() {
        let after: Vec<u32> = (0..64)
            .map(|dw| fake.peek(a(b, d, f), dw * 4).unwrap())
            .collect();
        assert_eq!(after, before[i], "{} changed", a(b, d, f));
    }
    // The VGA's Received Master Abort (RW1C) survived the Command writes.
    assert_eq!(fake.peek(a(0, 1, 0), 4).unwrap() >> 16, 0x2000);
    // Only Command and BARs were written; Command writes never set Status bits (which
    // would clear RW1C errors), and decode was never on while a BAR held all ones (the
    // fake records that as a violation).
    for (addr, offset, value) in fake.writes() {
        let is_bridge = t.function(addr).unwrap().is_bridge();
        let last_bar = if is_bridge { 0x14 } else { 0x24 };
        assert!(
            offset == 4 || (0x10..=last_bar).contains(&offset),
            "{addr} {offset:#x}"
        );
        if offset == 4 {
            assert_eq!(value >> 16, 0, "Command write touched Status");
        }
    }
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn host_bridges_keep_decode_while_sized() {
    let fake = q35();
    scan(&fake, &[ECAM_ROOT]);
    assert!(
        fake.writes()
            .iter()
            .all(|&(addr, off, _)| !(addr == a(0, 0, 0) && off == 4)),
        "Command of the host bridge must not be touched"
    );
    // The VGA had decode on: switched off (0x0000) and back (0x0003).
    let vga: Vec<_> = fake
        .writes()
        .into_iter()
        .filter(|&(addr, off, _)| addr == a(0, 1, 0) && off == 4)
        .collect();
    assert_eq!(vga, vec![(a(0, 1, 0), 4, 0x0000), (a(0, 1, 0), 4, 0x0003)]);
}

#[test]
fn port_io_roots_never_read_extended_space() {
    let (t, reads, writes, fake) = scan_counted(q35(), &[PIO_ROOT]);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!(t.functions.len(), Q35.len());
    assert!(
        t.functions
            .iter()
            .all(|f| f.extended_capabilities.is_empty())
    );
    assert!(fake.violations().is_empty());
    let (r, w) = expected_accesses(&t);
    // No extended-space reads at all.
    let pcie = t.functions.iter().filter(|f| f.is_pcie()).count();
    assert_eq!((reads, writes), (r - pcie, w));
}

#[test]
fn listing_matches_lspci_nn() {
    let t = scan(&q35(), &[ECAM_ROOT]);
    let mut s = String::new();
    lspci::write_listing(&mut s, &t).unwrap();
    let lines: Vec<_> = s.lines().collect();
    assert_eq!(lines.len(), Q35.len());
    assert_eq!(
        lines[0],
        "0000:00:00.0 Host bridge [0600]: Intel Corporation 82G33/G31/P35/P31 Express DRAM \
         Controller [8086:29c0]"
    );
    assert_eq!(
        lines[7],
        "0000:00:1f.2 SATA controller [0106]: Intel Corporation 82801IR/IO/IH (ICH9R/DO/DH) 6 \
         port SATA Controller [AHCI mode] [8086:2922] (rev 02)"
    );
    assert_eq!(
        lines[9],
        "0000:01:00.0 Non-Volatile memory controller [0108]: Red Hat, Inc. QEMU NVM Express \
         Controller [1b36:0010] (rev 02)"
    );
}

#[test]
fn unknown_ids_print_as_numbers() {
    let fake = FakeConfigSpace::new();
    fake.add(
        a(0, 5, 0),
        FakeFunction::endpoint(0xabcd, 0x0001, 0x77, 0x00, 0, 0),
    );
    fake.add(
        a(0, 6, 0),
        FakeFunction::endpoint(0x8086, 0xffee, 0x02, 0x42, 0, 1),
    );
    let t = scan(&fake, &[ECAM_ROOT]);
    let mut s = String::new();
    lspci::write_listing(&mut s, &t).unwrap();
    lspci::write_tree(&mut s, &t).unwrap();
    assert_eq!(
        s,
        "0000:00:05.0 Class [7700]: Device [abcd:0001]\n\
         0000:00:06.0 Network controller [0242]: Intel Corporation Device [8086:ffee] (rev 01)\n\
         -[0000:00]\n \
         +-05.0  Device abcd:0001\n \
         \\-06.0  Intel Corporation Device ffee\n"
    );
}

#[test]
fn tree_matches_lspci_tv() {
    let t = scan(&q35(), &[ECAM_ROOT]);
    let mut s = String::new();
    lspci::write_tree(&mut s, &t).unwrap();
    assert_eq!(
        s,
        "\
-[0000:00]
 +-00.0  Intel Corporation 82G33/G31/P35/P31 Express DRAM Controller
 +-01.0  Technical Corp. QEMU Virtual Video Controller
 +-02.0-[01]  Red Hat, Inc. QEMU PCIe Root port
 |  \\-00.0  Red Hat, Inc. QEMU NVM Express Controller
 +-02.1-[02]  Red Hat, Inc. QEMU PCIe Root port
 |  \\-00.0  Red Hat, Inc. Virtio 1.0 network device
 +-03.0  Technical Corp. QEMU edu device
 +-04.0-[03-04]  Red Hat, Inc. QEMU PCIe-to-PCI bridge
 |  \\-01.0-[04]  Red Hat, Inc. QEMU PCI-PCI bridge
 |     \\-02.0  Intel Corporation 82540EM Gigabit Ethernet Controller
 +-1f.0  Intel Corporation 82801IB (ICH9) LPC Interface Controller
 +-1f.2  Intel Corporation 82801IR/IO/IH (ICH9R/DO/DH) 6 port SATA Controller [AHCI mode]
 \\-1f.3  Intel Corporation 82801I (ICH9 Family) SMBus Controller
"
    );
}

#[test]
fn tree_shows_every_root() {
    let fake = q35();
    fake.add(
        a(0x80, 0, 0),
        FakeFunction::endpoint(0x1af4, 0x1042, 0x01, 0x00, 0, 1),
    );
    let roots = [
        ECAM_ROOT,
        pci::Root {
            segment: 0,
            bus: 0x80,
            extended: true,
        },
    ];
    let t = scan(&fake, &roots);
    let mut s = String::new();
    lspci::write_tree(&mut s, &t).unwrap();
    assert!(
        s.ends_with("-[0000:80]\n \\-00.0  Red Hat, Inc. Virtio 1.0 block device\n"),
        "{s}"
    );
}

#[test]
fn machine_lines_have_the_documented_format() {
    let t = scan(&q35(), &[ECAM_ROOT]);
    let mut s = String::new();
    lspci::write_machine(&mut s, &t).unwrap();
    let lines: Vec<_> = s.lines().collect();
    assert_eq!(lines.len(), Q35.len());
    assert_eq!(
        lines[0],
        "PCIDEV 0000:00:00.0 vendor=8086 device=29c0 class=060000 rev=00 header=00 bars=- \
         irq=-/255 caps=- ecaps=-"
    );
    assert_eq!(
        lines[2],
        "PCIDEV 0000:00:02.0 vendor=1b36 device=000c class=060400 rev=00 header=81 \
         bars=0:mem32:0xfeb00000:0x1000 irq=A/10 msix=1,bir0@0x0,pba0@0x800 caps=10,11 \
         ecaps=0001,000d"
    );
    assert_eq!(
        lines[5],
        "PCIDEV 0000:00:04.0 vendor=1b36 device=000e class=060400 rev=00 header=01 \
         bars=0:mem64:0xfeb02000:0x100 irq=A/11 msi=1,64,mask caps=10,0c,05 ecaps=-"
    );
    assert_eq!(
        lines[9],
        "PCIDEV 0000:01:00.0 vendor=1b36 device=0010 class=010802 rev=02 header=00 \
         bars=0:mem64:0xfe800000:0x4000 irq=A/10 msix=65,bir0@0x2000,pba0@0x3000 caps=11,01,10 \
         ecaps=0001"
    );
    assert_eq!(
        lines[10],
        "PCIDEV 0000:02:00.0 vendor=1af4 device=1041 class=020000 rev=01 header=00 \
         bars=1:mem32:0xfe600000:0x1000,4:mem64p:0x8000000000:0x4000 irq=A/11 \
         msix=4,bir1@0x0,pba1@0x800 caps=11,09,09,10 ecaps=-"
    );
    assert_eq!(
        lines[12],
        "PCIDEV 0000:04:02.0 vendor=8086 device=100e class=020000 rev=03 header=00 \
         bars=0:mem32:0xfe380000:0x20000,1:io:0xb000:0x40 irq=A/11 caps=- ecaps=-"
    );
    // Every line parses with the documented grammar.
    for line in lines {
        let fields: Vec<_> = line.split(' ').collect();
        assert_eq!(fields[0], "PCIDEV");
        let keys: Vec<_> = fields[2..]
            .iter()
            .map(|f| f.split('=').next().unwrap())
            .collect();
        let mut expected = vec!["vendor", "device", "class", "rev", "header", "bars", "irq"];
        if line.contains(" msi=") {
            expected.push("msi");
        }
        if line.contains(" msix=") {
            expected.push("msix");
        }
        expected.extend(["caps", "ecaps"]);
        assert_eq!(keys, expected, "{line}");
    }
}

#[test]
fn probe_reads_one_function() {
    let fake = q35();
    // SAFETY: the fake answers any aligned offset below 4096 of any address.
    let cs = unsafe { pci::ConfigSpace::new(&fake, &[ECAM_ROOT]) };
    let (f, errors) = pci::probe(&cs, a(1, 0, 0));
    assert!(errors.is_empty());
    assert_eq!(f.unwrap().msix.unwrap().table_size, 65);
    let (none, errors) = pci::probe(&cs, a(1, 5, 0));
    assert!(none.is_none() && errors.is_empty());
}
