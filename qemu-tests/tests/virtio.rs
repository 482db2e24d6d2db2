//! virtio scenarios: the kernel's `virtio` suite drives QEMU's `virtio-blk-pci` and
//! `virtio-net-pci` with the drivers in `drivers::virtio` (modern virtio-pci, virtio 1.1).
//!
//! This runner writes a 1 MiB disk image with a pattern derived from a fresh token, gives the
//! network card a MAC address made from it too, boots q35 with `test=virtio`, and checks:
//!
//! - the checksum (FNV-1a 64) the kernel prints for sectors 0..128, read by MSI-X (or INTx)
//!   and again by forced INTx, against its own computation over the image;
//! - the round trip: the kernel writes a known pattern over sectors 1024..1032 and reads it
//!   back; after QEMU exits the image must hold exactly the original with those sectors
//!   replaced (the self tests' writes over the last sector were restored);
//! - virtio-net: the MAC the driver read from the device's configuration, and the gateway
//!   MAC QEMU's user network answers an ARP request with (52:55:0a:00:02:02), by MSI-X and
//!   by INTx;
//! - 1000 unbind/bind cycles of each driver with a self test after every rebind, everything
//!   back at baseline;
//! - the device IDs and interrupt routing the kernel reports against how QEMU was set up.
//!
//! Five set-ups: transitional devices on the root complex (IDs 1af4:1001 and 1af4:1000,
//! MSI-X with a vector per queue and one for configuration changes); modern-only devices
//! behind PCIe root ports (1af4:1042 and 1af4:1041, which QEMU makes modern-only there) that
//! also offer VIRTIO_F_ACCESS_PLATFORM (`iommu_platform=on`: QEMU then refuses FEATURES_OK
//! to a driver that does not accept it) and packed rings (declined: the split ring is used);
//! both behind QEMU's VT-d unit (`intel-iommu`, `iommu_platform=on`), each isolated in its
//! own domain, with no request refused by the unit (its `vtd_dmar_fault` trace); fewer
//! MSI-X vectors than queues + 1 (`vectors=1` for the disk: everything on entry 0;
//! `vectors=2` for the card: configuration on entry 0, both queues sharing entry 1); and no
//! MSI-X at all (`vectors=0`: the drivers fall back to INTx, the ISR read in the handler).

use qemu_tests::fnv1a;
use qemu_tests::{
    Machine, Outcome, QEMU_EXIT_SUCCESS, Qemu, check, ensure, expect_exit, kernel_elf,
    qemu_or_skip, random_token, unique_temp_dir,
};

/// Sectors whose checksum the kernel prints (`READ_SECTORS` in the suite).
const READ: std::ops::Range<usize> = 0..128;
/// Sectors the kernel overwrites (`WRITE_SECTORS` in the suite).
const WRITTEN: std::ops::Range<usize> = 1024..1032;
const SECTOR: usize = 512;
const IMAGE_BYTES: usize = 1 << 20;
/// What QEMU's slirp answers for the gateway: 52:55 and the IPv4 address.
const GATEWAY_MAC: &str = "52:55:0a:00:02:02";

/// Byte `offset` of the disk as the kernel's round-trip test writes it.
fn written_byte(offset: usize) -> u8 {
    ((offset as u32).wrapping_mul(0x9E37_79B1) >> 11) as u8 ^ b'V'
}

/// How a scenario sets the devices up, and what the kernel must then report.
struct Setup {
    name: &'static str,
    cpu: &'static str,
    /// Extra `-device` options before the virtio devices (root ports).
    extra: &'static [&'static str],
    /// Suffix of the virtio-blk `-device` option.
    blk: &'static str,
    /// Suffix of the virtio-net `-device` option (after `netdev` and `mac`).
    net: &'static str,
    /// `[vendor:device]` the kernel's listing must show.
    ids: [&'static str; 2],
    /// The routing each driver's status line must show.
    blk_vectors: &'static str,
    net_vectors: &'static str,
    /// The kind the first read is completed by.
    best: &'static str,
    /// Behind QEMU's VT-d unit (`extra` adds it): translation must come on and QEMU's trace
    /// of refused requests must stay empty.
    remapped: bool,
    /// Behind QEMU's AMD IOMMU (`extra` adds it): translation and interrupt remapping must
    /// come on.
    amd: bool,
}

fn scenario(setup: &Setup) {
    if !qemu_or_skip(setup.name) {
        return;
    }
    let token = random_token();
    let dir = unique_temp_dir(setup.name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let image = dir.join("disk.img");
    let original: Vec<u8> = (0..IMAGE_BYTES as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ token.as_bytes()[i as usize % 16])
        .collect();
    std::fs::write(&image, &original).expect("disk image");
    let t = token.as_bytes();
    let mac = format!("52:54:00:{:02x}:{:02x}:{:02x}", t[0], t[1], t[2]);

    let drive = format!("if=none,id=vb,format=raw,file={}", image.display());
    let blk = format!("virtio-blk-pci,drive=vb{}", setup.blk);
    let net = format!("virtio-net-pci,netdev=n0,mac={mac}{}", setup.net);
    let mut args: Vec<&str> = vec!["-cpu", setup.cpu];
    if setup.remapped {
        args.extend_from_slice(&["-trace", "vtd_dmar_fault"]);
    }
    args.extend_from_slice(setup.extra);
    args.extend_from_slice(&[
        "-drive",
        &drive,
        "-device",
        &blk,
        "-netdev",
        "user,id=n0",
        "-device",
        &net,
    ]);
    let outcome: Outcome = Qemu::kernel(kernel_elf(), "test=virtio storage=write")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(args)
        .run()
        .unwrap_or_else(|e| panic!("{}: cannot run QEMU: {e}", setup.name));
    println!(
        "{}: {} in {:.2} s",
        setup.name,
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    let after = std::fs::read(&image).expect("image after the run");
    let _ = std::fs::remove_dir_all(&dir);
    for line in outcome.serial.lines().filter(|l| l.starts_with("virtio-")) {
        println!("{}: {line}", setup.name);
    }

    let read = fnv1a(&original[READ.start * SECTOR..READ.end * SECTOR]);
    let sector0 = fnv1a(&original[..SECTOR]);
    let pattern: Vec<u8> = (WRITTEN.start * SECTOR..WRITTEN.end * SECTOR)
        .map(written_byte)
        .collect();
    let last = IMAGE_BYTES / SECTOR - 1;
    check(setup.name, &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(7)?;
        let serial = &outcome.serial;
        if setup.amd {
            ensure!(
                serial.contains("iommu: 1 AMD IOMMU(s) on")
                    && serial.contains("iommu: interrupt remapping on"),
                "the AMD IOMMU did not come on with interrupt remapping"
            );
        }
        if setup.remapped {
            ensure!(
                serial.contains("iommu: 1 remapping unit(s) on"),
                "remapping did not come on"
            );
            let refused: Vec<&str> = outcome
                .stderr
                .lines()
                .filter(|l| l.contains("vtd_dmar_fault"))
                .collect();
            ensure!(
                refused.is_empty(),
                "QEMU's unit refused requests: {refused:?}"
            );
        }
        for id in setup.ids {
            ensure!(serial.contains(id), "the PCI listing has no {id} device");
        }
        let bound = |driver: &str| {
            serial
                .lines()
                .find(|l| l.starts_with(&format!("{driver}: bound 0")))
                .unwrap_or("")
                .to_owned()
        };
        let blk_line = bound("virtio-blk");
        ensure!(
            blk_line.contains(&format!("{} sectors", IMAGE_BYTES / SECTOR))
                && blk_line.contains(setup.blk_vectors),
            "virtio-blk status `{blk_line}` does not say `{}`",
            setup.blk_vectors
        );
        let net_line = bound("virtio-net");
        ensure!(
            net_line.contains(&format!("{mac} (from the device)"))
                && net_line.contains(setup.net_vectors),
            "virtio-net status `{net_line}` does not say `{mac} (from the device)` and `{}`",
            setup.net_vectors
        );
        for line in [
            format!(
                "virtio-blk: sectors {}..{} fnv1a={read:016x}",
                READ.start, READ.end
            ),
            format!("request(s) by {},", setup.best),
            format!(
                "virtio-blk: INTx sectors {}..{} fnv1a={read:016x}",
                READ.start, READ.end
            ),
            format!(
                "virtio-blk: wrote sectors {}..{} fnv1a={:016x}, read back equal",
                WRITTEN.start,
                WRITTEN.end,
                fnv1a(&pattern)
            ),
            format!(
                "virtio-blk self test: block 0 fnv1a={sector0:016x}; block {last} written, read back and restored, by {}",
                setup.best
            ),
            format!(
                "virtio-blk INTx self test: block 0 fnv1a={sector0:016x}; block {last} written, read back and restored, by INTx"
            ),
            format!("virtio-net: gateway 10.0.2.2 is at {GATEWAY_MAC}"),
            format!("virtio-net: INTx gateway 10.0.2.2 is at {GATEWAY_MAC}"),
            format!(
                "gateway 10.0.2.2 is at {GATEWAY_MAC} (ARP reply by {} on receiveq1)",
                setup.best
            ),
        ] {
            ensure!(serial.contains(&line), "missing `{line}`");
        }
        for driver in ["virtio-blk", "virtio-net"] {
            let wanted = format!("{driver}: 1000 unbind/bind cycles in");
            ensure!(
                serial.lines().any(|l| l.starts_with(&wanted)
                    && l.contains("self test after every rebind")
                    && l.ends_with("claims at baseline")),
                "no `{wanted} ... at baseline` line"
            );
        }
        // The image: the original, with exactly the round trip's sectors replaced.
        ensure!(after.len() == IMAGE_BYTES, "image is {} bytes", after.len());
        let mut expected = original.clone();
        expected[WRITTEN.start * SECTOR..WRITTEN.end * SECTOR].copy_from_slice(&pattern);
        if after != expected {
            let differing: Vec<usize> = (0..IMAGE_BYTES / SECTOR)
                .filter(|s| {
                    after[s * SECTOR..(s + 1) * SECTOR] != expected[s * SECTOR..(s + 1) * SECTOR]
                })
                .collect();
            return Err(format!(
                "the image differs from the expected one in sectors {differing:?} (written {WRITTEN:?}, last {last})"
            ));
        }
        Ok(())
    });
}

#[test]
fn virtio_transitional_on_the_root_complex() {
    scenario(&Setup {
        name: "virtio_root_complex",
        cpu: "qemu64",
        extra: &[],
        blk: "",
        net: "",
        ids: ["[1af4:1001]", "[1af4:1000]"],
        blk_vectors: "MSI-X 2 vector(s): config 0, requestq 1,",
        net_vectors: "MSI-X 3 vector(s): config 0, receiveq1 1, transmitq1 2,",
        best: "MSI-X",
        remapped: false,
        amd: false,
    });
}

#[test]
fn virtio_modern_only_behind_pcie_root_ports_with_platform_access() {
    scenario(&Setup {
        name: "virtio_root_ports",
        cpu: "max",
        extra: &[
            "-device",
            "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,addr=0x6",
            "-device",
            "pcie-root-port,id=rp2,bus=pcie.0,chassis=2,addr=0x7",
        ],
        blk: ",bus=rp1,iommu_platform=on,packed=on",
        net: ",bus=rp2,iommu_platform=on,packed=on",
        ids: ["[1af4:1042]", "[1af4:1041]"],
        blk_vectors: "MSI-X 2 vector(s): config 0, requestq 1,",
        net_vectors: "MSI-X 3 vector(s): config 0, receiveq1 1, transmitq1 2,",
        best: "MSI-X",
        remapped: false,
        amd: false,
    });
}

/// Both drivers behind QEMU's VT-d unit, each function isolated in its own domain: the disk's
/// reads and writes, the card's ARP round trip and 1000 unbind/bind cycles each, with every
/// request inside the function's own DMA memory.
#[test]
fn virtio_under_dma_remapping() {
    scenario(&Setup {
        name: "virtio_remapped",
        cpu: "qemu64",
        extra: &["-device", "intel-iommu"],
        blk: ",iommu_platform=on,disable-legacy=on",
        net: ",iommu_platform=on,disable-legacy=on",
        ids: ["[1af4:1042]", "[1af4:1041]"],
        blk_vectors: "MSI-X 2 vector(s): config 0, requestq 1,",
        net_vectors: "MSI-X 3 vector(s): config 0, receiveq1 1, transmitq1 2,",
        best: "MSI-X",
        remapped: true,
        amd: false,
    });
}

/// The same behind QEMU's AMD IOMMU: each function in its own domain with its own interrupt
/// table, through the 1000 unbind/bind cycles of each driver.
#[test]
fn virtio_behind_an_amd_iommu() {
    scenario(&Setup {
        name: "virtio_amd",
        cpu: "qemu64",
        extra: &["-device", "amd-iommu,pt=off"],
        blk: ",iommu_platform=on,disable-legacy=on",
        net: ",iommu_platform=on,disable-legacy=on",
        ids: ["[1af4:1042]", "[1af4:1041]"],
        blk_vectors: "MSI-X 2 vector(s): config 0, requestq 1,",
        net_vectors: "MSI-X 3 vector(s): config 0, receiveq1 1, transmitq1 2,",
        best: "MSI-X",
        remapped: false,
        amd: true,
    });
}

#[test]
fn virtio_with_fewer_vectors_than_queues_share_them() {
    scenario(&Setup {
        name: "virtio_fewer_vectors",
        cpu: "qemu64",
        extra: &[],
        blk: ",vectors=1",
        net: ",vectors=2",
        ids: ["[1af4:1001]", "[1af4:1000]"],
        blk_vectors: "MSI-X 1 vector(s): config 0, requestq 0,",
        net_vectors: "MSI-X 2 vector(s): config 0, receiveq1 1, transmitq1 1,",
        best: "MSI-X",
        remapped: false,
        amd: false,
    });
}

#[test]
fn virtio_without_msix_falls_back_to_intx() {
    scenario(&Setup {
        name: "virtio_no_msix",
        cpu: "qemu64",
        extra: &[],
        blk: ",vectors=0",
        net: ",vectors=0",
        ids: ["[1af4:1001]", "[1af4:1000]"],
        blk_vectors: "INTx (ISR read in the handler)",
        net_vectors: "INTx (ISR read in the handler)",
        best: "INTx",
        remapped: false,
        amd: false,
    });
}
