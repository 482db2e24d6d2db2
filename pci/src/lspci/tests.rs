//! The console's `lspci` against the fake configuration space: option parsing, pciutils'
//! line forms, and the `-v` block reading MSI/MSI-X state at the time of the command.

use alloc::string::String;
use alloc::vec::Vec;

use super::*;
use crate::fake::{FakeBar, FakeConfigSpace, FakeFunction};
use crate::{Address, ConfigSpace, Root};

const ROOT: Root = Root {
    segment: 0,
    bus: 0,
    extended: true,
};

fn a(bus: u8, dev: u8, func: u8) -> Address {
    Address::new(0, bus, dev, func).unwrap()
}

/// An NVMe like QEMU's (MSI-X 65 at 0x40, Express at 0x80, PM at 0x60, AER and a serial
/// number), an edu (MSI at 0x40), a virtio-net with a vendor capability, and the host
/// bridge.
fn machine() -> FakeConfigSpace {
    let fake = FakeConfigSpace::new();
    fake.add(
        a(0, 0, 0),
        FakeFunction::endpoint(0x8086, 0x29c0, 0x06, 0x00, 0x00, 0x00).with_command(0x0006),
    );
    fake.add(
        a(0, 1, 0),
        FakeFunction::endpoint(0x1b36, 0x0010, 0x01, 0x08, 0x02, 0x02)
            .with_command(0x0006)
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
            .with_writable(0x40, 0xc000_0000)
            .with_capability(0x80, 0x10, &[0x02, 0x00])
            .with_capability(0x60, 0x01, &[0x03, 0x00])
            .with_extended_capability(0x100, 0x0001, 2)
            .with_extended_capability(0x148, 0x0003, 1)
            .with32(0x14c, 0x4433_2211)
            .with32(0x150, 0x8877_6655),
    );
    fake.add(
        a(0, 3, 0),
        FakeFunction::endpoint(0x1234, 0x11e8, 0x00, 0xff, 0x00, 0x10)
            .with_command(0x0002)
            .with_interrupt(1, 11)
            .with_bar(
                0,
                FakeBar::Mem32 {
                    address: 0xfe00_0000,
                    size: 0x10_0000,
                    prefetchable: false,
                },
            )
            .with_msi(0xd0, 0, true, false)
            .with_writable(0xd0, 0x0071_0000),
    );
    fake.add(
        a(0, 4, 0),
        FakeFunction::endpoint(0x1af4, 0x1000, 0x02, 0x00, 0x00, 0x00)
            .with_command(0x0001)
            .with_bar(
                0,
                FakeBar::Io {
                    address: 0xc000,
                    size: 0x20,
                },
            )
            .with_capability(
                0x84,
                0x09,
                &[0x10, 0x01, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
    );
    fake
}

fn run(fake: &FakeConfigSpace, args: &[&str], bound: Option<Address>) -> String {
    // SAFETY: the fake answers any aligned offset below 4096 of any address.
    let cs = unsafe { ConfigSpace::new(fake, &[ROOT]) };
    let topology = crate::enumerate(&cs);
    let options = Options::parse(args).unwrap();
    let mut out = String::new();
    write_command(
        &mut out,
        &topology,
        &options,
        &|address, offset| cs.read32(address, offset).ok(),
        &|address| (Some(address) == bound).then(|| ("nvme", Vec::from([(0, 0x31), (0, 0x32)]))),
    )
    .unwrap();
    out
}

#[test]
fn options_combine_and_unknown_ones_are_refused() {
    fn o<'a>(args: &[&'a str]) -> Result<Options, &'a str> {
        Options::parse(args)
    }
    assert_eq!(o(&[]), Ok(Options::default()));
    let tv = Options {
        tree: true,
        verbose: 1,
        ..Options::default()
    };
    assert_eq!(o(&["-vt"]), Ok(tv));
    assert_eq!(o(&["-tv"]), Ok(tv));
    assert_eq!(o(&["-t", "-v"]), Ok(tv));
    assert_eq!(o(&["-nn"]).unwrap().numeric, 2);
    assert_eq!(o(&["-n", "-n", "-n"]).unwrap().numeric, 2);
    let vnn = o(&["-v", "-nn"]).unwrap();
    assert!(vnn.verbose == 1 && vnn.numeric == 2);
    assert_eq!(
        o(&["-vv"]).unwrap(),
        Options {
            verbose: 2,
            ..Options::default()
        }
    );
    assert_eq!(o(&["-v", "-vv"]).unwrap().verbose, 2);
    assert!(o(&["-D"]).unwrap().domains);
    assert_eq!(o(&["-x"]), Err("-x"));
    assert_eq!(o(&["-vx"]), Err("-vx"));
    assert_eq!(o(&["-"]), Err("-"));
    assert_eq!(o(&["v"]), Err("v"));
    assert!(USAGE.starts_with("usage: lspci"));
}

#[test]
fn lines_take_pciutils_forms() {
    let fake = machine();
    let plain = run(&fake, &[], None);
    assert!(plain.contains(
        "00:01.0 Non-Volatile memory controller: Red Hat, Inc. QEMU NVM Express Controller (rev 02)\n"
    ), "{plain}");
    let n = run(&fake, &["-n"], None);
    assert!(n.contains("00:01.0 0108: 1b36:0010 (rev 02)\n"), "{n}");
    let nn = run(&fake, &["-nn"], None);
    assert!(nn.contains(
        "00:01.0 Non-Volatile memory controller [0108]: Red Hat, Inc. QEMU NVM Express Controller [1b36:0010] (rev 02)\n"
    ), "{nn}");
    assert!(nn.contains("00:03.0 Unclassified device [00ff]: Technical Corp. QEMU edu device [1234:11e8] (rev 10)\n"), "{nn}");
    let d = run(&fake, &["-D"], None);
    assert!(d.lines().all(|l| l.starts_with("0000:")), "{d}");
    assert_eq!(plain.lines().count(), 4);
    // The tree is the same with or without -v.
    assert_eq!(run(&fake, &["-t"], None), run(&fake, &["-vt"], None));
}

#[test]
fn verbose_names_capabilities_and_ends_each_block() {
    let fake = machine();
    let v = run(&fake, &["-v", "-nn"], Some(a(0, 1, 0)));
    let nvme: Vec<&str> = v
        .split("\n\n")
        .find(|b| b.starts_with("00:01.0"))
        .unwrap()
        .lines()
        .collect();
    assert_eq!(
        nvme,
        [
            "00:01.0 Non-Volatile memory controller [0108]: Red Hat, Inc. QEMU NVM Express Controller [1b36:0010] (rev 02) (prog-if 02 [NVM Express])",
            "\tSubsystem: Red Hat, Inc. Device 1100",
            "\tFlags: bus master, fast devsel, latency 0, IRQ 10",
            "\tMemory at fe800000 (64-bit, non-prefetchable) [size=16K]",
            "\tCapabilities: [40] MSI-X: Enable- Count=65 Masked-",
            "\tCapabilities: [80] Express (v2) Endpoint, MSI 00",
            "\tCapabilities: [60] Power Management version 3",
            "\tCapabilities: [100 v2] Advanced Error Reporting",
            "\tCapabilities: [148 v1] Device Serial Number 88-77-66-55-44-33-22-11",
            "\tKernel driver in use: nvme",
            "\tVectors held: cpu0 0x31 0x32",
        ]
    );
    // -vv adds where the MSI-X table and PBA are.
    let vv = run(&fake, &["-vv"], None);
    assert!(vv.contains(
        "\tCapabilities: [40] MSI-X: Enable- Count=65 Masked-\n\t\tVector table: BAR=0 offset=00002000\n\t\tPBA: BAR=0 offset=00003000\n"
    ), "{vv}");
    assert!(!v.contains("Vector table"));
    // Every function's block ends with a blank line: no line runs into the next header.
    assert_eq!(v.matches("\n\n").count(), 4, "{v}");
    assert!(v.ends_with("\n\n"));
    for line in v.lines().filter(|l| !l.is_empty() && !l.starts_with('\t')) {
        assert!(line.len() > 8 && line.as_bytes()[2] == b':', "{line:?}");
    }
    let edu = v.split("\n\n").find(|b| b.starts_with("00:03.0")).unwrap();
    assert!(edu.contains("\n\tFlags: fast devsel, IRQ 11\n"), "{edu}");
    assert!(edu.contains("\n\tMemory at fe000000 (32-bit, non-prefetchable) [size=1M]\n"));
    assert!(edu.contains("\n\tCapabilities: [d0] MSI: Enable- Count=1/1 Maskable- 64bit+"));
    assert!(!edu.contains("Kernel driver"));
    let net = v.split("\n\n").find(|b| b.starts_with("00:04.0")).unwrap();
    assert!(net.contains("\n\tI/O ports at c000 [size=32]\n"), "{net}");
    assert!(net.contains("\n\tCapabilities: [84] Vendor Specific Information: VirtIO: CommonCfg"));
}

#[test]
fn verbose_reads_msi_state_at_the_time_of_the_command() {
    let fake = machine();
    // SAFETY: the fake answers any aligned offset below 4096 of any address.
    let cs = unsafe { ConfigSpace::new(&fake, &[ROOT]) };
    let topology = crate::enumerate(&cs);
    let verbose = || {
        let mut out = String::new();
        let options = Options::parse(&["-v"]).unwrap();
        write_command(
            &mut out,
            &topology,
            &options,
            &|address, offset| cs.read32(address, offset).ok(),
            &|_| None,
        )
        .unwrap();
        out
    };
    let before = verbose();
    assert!(
        before.contains("[40] MSI-X: Enable- Count=65 Masked-"),
        "{before}"
    );
    assert!(before.contains("[d0] MSI: Enable- Count=1/1"), "{before}");
    // After the scan: MSI-X enabled with the function masked, MSI enabled, the edu's memory
    // decoding turned off.
    let (nvme, edu) = (a(0, 1, 0), a(0, 3, 0));
    let x = cs.read32(nvme, 0x40).unwrap();
    cs.write32(nvme, 0x40, x | 0xc000 << 16).unwrap();
    let m = cs.read32(edu, 0xd0).unwrap();
    cs.write32(edu, 0xd0, m | 1 << 16).unwrap();
    cs.write32(edu, 0x04, 0).unwrap();
    let after = verbose();
    assert!(
        after.contains("[40] MSI-X: Enable+ Count=65 Masked+"),
        "{after}"
    );
    assert!(
        after.contains("[d0] MSI: Enable+ Count=1/1 Maskable- 64bit+"),
        "{after}"
    );
    assert!(
        after.contains("\tMemory at fe000000 (32-bit, non-prefetchable) [disabled] [size=1M]"),
        "{after}"
    );
}

#[test]
fn a_bridge_shows_its_buses_windows_and_subsystem() {
    let fake = FakeConfigSpace::new();
    fake.add(
        a(0, 2, 0),
        FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 1)
            .with_capability(0x40, 0x0d, &[0, 0, 0xf4, 0x1a, 0x00, 0x00])
            .with_pcie(0x54)
            // I/O 0xc000-0xcfff, memory 0xfe800000-0xfe9fffff, prefetchable off.
            .with32(0x1c, 0x0000_c0c0)
            .with32(0x20, 0xfe90_fe80)
            .with32(0x24, 0x0001_fff1),
    );
    let mut out = String::new();
    // SAFETY: the fake answers any aligned offset below 4096 of any address.
    let cs = unsafe { ConfigSpace::new(&fake, &[ROOT]) };
    let topology = crate::enumerate(&cs);
    let f = topology.function(a(0, 2, 0)).unwrap();
    write_verbose(&mut out, f, &|o| cs.read32(f.address, o).ok(), None, 1).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[1..7],
        [
            "\tBus: primary=00, secondary=01, subordinate=01, sec-latency=0",
            "\tI/O behind bridge: 0000c000-0000cfff [size=4K]",
            "\tMemory behind bridge: fe800000-fe9fffff [size=2M]",
            "\tPrefetchable memory behind bridge: [disabled]",
            "\tCapabilities: [40] Subsystem: Red Hat, Inc. Device 0000",
            "\tCapabilities: [54] Express (v2) Endpoint, MSI 00",
        ],
        "{out}"
    );
}

#[test]
fn a_vanished_function_says_so() {
    let fake = machine();
    // SAFETY: the fake answers any aligned offset below 4096 of any address.
    let cs = unsafe { ConfigSpace::new(&fake, &[ROOT]) };
    let topology = crate::enumerate(&cs);
    fake.remove(a(0, 3, 0));
    let mut out = String::new();
    let f = topology.function(a(0, 3, 0)).unwrap();
    write_verbose(&mut out, f, &|o| cs.read32(f.address, o).ok(), None, 1).unwrap();
    assert_eq!(out, "\t(the function does not answer: it reads all ones)\n");
}
