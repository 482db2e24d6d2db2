//! Block devices through one view (`drivers::block`, the kernel's `blk` suite in
//! `kernel/src/tests/blk_suite.rs`): what the kernel reads is checked byte for byte, by
//! checksum, against images this runner wrote.
//!
//! The machine: q35 with two NVMe controllers (the first with two namespaces, 512-byte and
//! 4096-byte blocks; the second with one namespace), a virtio-blk disk with 512-byte blocks
//! and one with 4096-byte logical blocks, each on its own 8 MiB image of pseudo-random bytes
//! from a fresh token, at fixed PCI addresses so that each disk the kernel names can be
//! matched to its image. The kernel is booted without `storage=write`. The runner checks:
//!
//! - every disk is registered with its driver, address, block size and block count;
//! - every batch read (4 KiB, 128 KiB and 1 MiB requests, at depth 1 and 32, at block
//!   numbers the kernel prints) hashes to what the image holds there;
//! - the console's `read <disk> 0 8` on each disk, and `nvme read 0` answering for both
//!   controllers;
//! - unbind/bind cycles with deep reads leaving every counter at baseline and the names back;
//! - every image unchanged afterwards;
//! - all of it again behind QEMU's VT-d unit (`intel-iommu`, virtio-blk with
//!   `iommu_platform=on`), each controller isolated in its own domain, with QEMU's trace of
//!   refused requests (`vtd_dmar_fault`) empty.

use qemu_tests::{
    Machine, Outcome, QEMU_EXIT_SUCCESS, Qemu, check, ensure, expect_exit, fnv1a, kernel_elf,
    qemu_or_skip, random_token, unique_temp_dir,
};

/// Image size.
const DISK: usize = 8 << 20;
/// Tests in the suite.
const TESTS: u64 = 4;

/// One disk of the machine.
struct Drive {
    /// The image's drive id.
    id: &'static str,
    /// PCI address of the function serving it.
    address: &'static str,
    /// NVMe namespace, or `None` for virtio-blk.
    nsid: Option<u32>,
    block_size: usize,
}

const DRIVES: [Drive; 5] = [
    Drive {
        id: "n0a",
        address: "0000:00:10.0",
        nsid: Some(1),
        block_size: 512,
    },
    Drive {
        id: "n0b",
        address: "0000:00:10.0",
        nsid: Some(2),
        block_size: 4096,
    },
    Drive {
        id: "n1",
        address: "0000:00:11.0",
        nsid: Some(1),
        block_size: 512,
    },
    Drive {
        id: "v512",
        address: "0000:00:12.0",
        nsid: None,
        block_size: 512,
    },
    Drive {
        id: "v4k",
        address: "0000:00:13.0",
        nsid: None,
        block_size: 4096,
    },
];

/// `len` pseudo-random bytes (xorshift64*) from a seed token.
fn disk_image(seed: &str, len: usize) -> Vec<u8> {
    let mut state = fnv1a(seed.as_bytes()) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Which of QEMU's remapping units the disks sit behind, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    None,
    /// `intel-iommu`, with its trace of refused requests.
    Vtd,
    /// `amd-iommu,pt=off`.
    Amd,
}

/// The QEMU arguments for the drives and their devices; behind a remapping unit,
/// virtio-blk has `iommu_platform=on` (its DMA goes through the unit; NVMe's always does).
fn device_args(images: &[std::path::PathBuf], unit: Unit) -> Vec<String> {
    let mut a = Vec::new();
    match unit {
        Unit::None => {}
        Unit::Vtd => {
            a.extend(["-trace", "vtd_dmar_fault", "-device", "intel-iommu"].map(String::from))
        }
        // Without `pt=off` QEMU 10's model lets emulated devices bypass translation.
        Unit::Amd => a.extend(["-device", "amd-iommu,pt=off"].map(String::from)),
    }
    let virtio = if unit != Unit::None {
        ",iommu_platform=on,disable-legacy=on"
    } else {
        ""
    };
    for (d, image) in DRIVES.iter().zip(images) {
        a.push("-drive".into());
        a.push(format!(
            "if=none,id={},format=raw,file={}",
            d.id,
            image.display()
        ));
    }
    let serial = random_token();
    a.extend(
        [
            format!("nvme,id=c0,serial={serial}a,addr=0x10"),
            "nvme-ns,drive=n0a,bus=c0,nsid=1".into(),
            "nvme-ns,drive=n0b,bus=c0,nsid=2,logical_block_size=4096,physical_block_size=4096"
                .into(),
            format!("nvme,serial={serial}b,drive=n1,addr=0x11"),
            format!("virtio-blk-pci,drive=v512,addr=0x12{virtio}"),
            format!(
                "virtio-blk-pci,drive=v4k,addr=0x13,logical_block_size=4096,physical_block_size=4096{virtio}"
            ),
        ]
        .into_iter()
        .flat_map(|d| ["-device".to_owned(), d]),
    );
    a
}

/// A `key=value` field of a line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Which drive a kernel disk line (`blk: disk <name> ... address=<a> block_size=<n>`) is.
fn drive_of(name: &str, address: &str) -> Option<usize> {
    let nsid = name
        .strip_prefix("nvme")
        .and_then(|r| r.split_once('n'))
        .and_then(|(_, ns)| ns.parse::<u32>().ok());
    DRIVES
        .iter()
        .position(|d| d.address == address && d.nsid == nsid)
}

fn check_lines(outcome: &Outcome, images: &[Vec<u8>]) -> Result<(), String> {
    let lines: Vec<String> = outcome
        .serial
        .lines()
        .map(qemu_tests::protocol::clean_line)
        .collect();
    // The disks: all five, each where it was put, with its block size and size.
    let mut names = std::collections::BTreeMap::new();
    for line in lines.iter().filter(|l| l.starts_with("blk: disk ")) {
        let name = line.split_whitespace().nth(2).ok_or("no name")?.to_owned();
        let address = field(line, "address").ok_or("no address")?;
        let drive = drive_of(&name, address)
            .ok_or_else(|| format!("`{line}`: no such drive was configured"))?;
        let d = &DRIVES[drive];
        let expected = format!("block_size={} blocks={}", d.block_size, DISK / d.block_size);
        ensure!(line.contains(&expected), "`{line}`: expected {expected}");
        let driver = if d.nsid.is_some() {
            "nvme"
        } else {
            "virtio-blk"
        };
        ensure!(
            field(line, "driver") == Some(driver),
            "`{line}`: expected driver {driver}"
        );
        ensure!(
            names.insert(name.clone(), drive).is_none(),
            "{name} listed twice"
        );
    }
    ensure!(
        names.len() == DRIVES.len(),
        "{} disks registered: {:?}",
        names.len(),
        names.keys()
    );
    for expected in ["nvme0n1", "nvme0n2", "nvme1n1", "vda", "vdb"] {
        ensure!(
            names.contains_key(expected),
            "no disk {expected}: {names:?}"
        );
    }
    // Every batch against the image.
    let mut batches = 0;
    for line in lines
        .iter()
        .filter(|l| l.starts_with("blk: ") && l.contains(" size="))
    {
        let name = line.split_whitespace().nth(1).ok_or("no name")?;
        let drive = *names
            .get(name)
            .ok_or_else(|| format!("`{line}`: unknown disk"))?;
        let image = &images[drive];
        let bs = DRIVES[drive].block_size;
        let size: usize = field(line, "size")
            .and_then(|s| s.parse().ok())
            .ok_or("size")?;
        let lbas: Vec<usize> = field(line, "lbas")
            .ok_or("lbas")?
            .split(',')
            .map(|l| l.parse().map_err(|_| format!("`{line}`: lba {l}")))
            .collect::<Result<_, _>>()?;
        let depth: usize = field(line, "depth")
            .and_then(|s| s.parse().ok())
            .ok_or("depth")?;
        ensure!(lbas.len() == depth, "`{line}`: {} requests", lbas.len());
        let mut data = Vec::with_capacity(lbas.len() * size);
        for lba in lbas {
            let at = lba * bs;
            ensure!(
                at + size <= image.len(),
                "`{line}`: block {lba} past the end"
            );
            data.extend_from_slice(&image[at..at + size]);
        }
        let expected = format!("fnv1a={:016x}", fnv1a(&data));
        ensure!(
            line.ends_with(&expected),
            "`{line}`: the image gives {expected}"
        );
        batches += 1;
    }
    // Three sizes, two depths, through the staging copy and into DMA memory.
    ensure!(
        batches == DRIVES.len() * 3 * 2 * 2,
        "{batches} batch lines, expected {}",
        DRIVES.len() * 12
    );
    let dma = lines
        .iter()
        .filter(|l| l.starts_with("blk: ") && l.contains(" path=dma "))
        .count();
    ensure!(
        dma == DRIVES.len() * 6,
        "{dma} lines of reads into DMA memory, expected {}",
        DRIVES.len() * 6
    );
    // Reads into another function's DMA memory, or of part of a block, are refused.
    for name in names.keys() {
        let nvme_only = ["two bytes into a page"];
        let whats = ["another function's buffer", "part of a block"]
            .into_iter()
            .chain(nvme_only.into_iter().filter(|_| name.starts_with("nvme")));
        for what in whats {
            let prefix = format!("blk: {name} dma refused: {what} (");
            ensure!(
                lines.iter().any(|l| l.starts_with(&prefix)),
                "missing `{prefix}...`"
            );
        }
    }
    // The console: `read <disk> 0 8` on every disk, `nvme read 0` on both controllers.
    for (name, &drive) in &names {
        let bs = DRIVES[drive].block_size;
        let expected = format!(
            "blk: console read {name} 0 8: {name}: blocks 0..8 ({} bytes) fnv1a={:016x}",
            8 * bs,
            fnv1a(&images[drive][..8 * bs])
        );
        ensure!(lines.contains(&expected), "missing `{expected}`");
    }
    for (name, drive) in [("nvme0n1", 0), ("nvme1n1", 2)] {
        let expected = format!(
            "blk: console nvme read 0: {name} ({}): namespace 1 LBA 0 (512 bytes) fnv1a={:016x}",
            DRIVES[drive].address,
            fnv1a(&images[drive][..512])
        );
        ensure!(lines.contains(&expected), "missing `{expected}`");
    }
    let cycles = lines
        .iter()
        .filter(|l| l.starts_with("blk: 0000:00:1") && l.contains("at baseline"))
        .count();
    ensure!(cycles == 4, "{cycles} functions cycled, expected 4");
    Ok(())
}

/// Boots the `blk` suite on the machine above (see [`device_args`] for `unit`).
fn every_disk(name: &str, unit: Unit) {
    if !qemu_or_skip(name) {
        return;
    }
    let dir = unique_temp_dir(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let originals: Vec<Vec<u8>> = DRIVES
        .iter()
        .map(|_| disk_image(&random_token(), DISK))
        .collect();
    let paths: Vec<std::path::PathBuf> = DRIVES
        .iter()
        .map(|d| dir.join(format!("{}.img", d.id)))
        .collect();
    for (path, image) in paths.iter().zip(&originals) {
        std::fs::write(path, image).expect("disk image");
    }
    let outcome = Qemu::kernel(kernel_elf(), "test=blk")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(["-cpu", "max"])
        .args(device_args(&paths, unit))
        .timeout(std::time::Duration::from_secs(600))
        .run()
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    println!(
        "{name}: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    let after: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).expect("read the image back"))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    check(name, &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(TESTS)?;
        check_lines(outcome, &originals)?;
        for ((d, before), now) in DRIVES.iter().zip(&originals).zip(&after) {
            ensure!(before == now, "image {} changed", d.id);
        }
        if unit == Unit::Amd {
            // The data read back equals the images: every read landed in the DMA memory
            // of the function that asked, through its domain.
            ensure!(
                outcome.serial.contains("iommu: 1 AMD IOMMU(s) on"),
                "remapping did not come on"
            );
            ensure!(
                outcome.serial.contains("blk: AMD IOMMU events: none"),
                "the unit logged events: {}",
                outcome
                    .serial
                    .lines()
                    .filter(|l| l.starts_with("blk: AMD IOMMU events"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        if unit == Unit::Vtd {
            ensure!(
                outcome.serial.contains("iommu: 1 remapping unit(s) on"),
                "remapping did not come on"
            );
            // Every request of every driver stayed inside its function's DMA memory.
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
        Ok(())
    });
}

#[test]
fn every_disk_reads_as_its_image() {
    every_disk("blk", Unit::None);
}

/// The same under DMA remapping: every NVMe and virtio-blk function isolated in its own
/// domain, every read landing in its own DMA memory, no request refused.
#[test]
fn every_disk_reads_as_its_image_under_dma_remapping() {
    every_disk("blk_remapped", Unit::Vtd);
}

/// The same behind QEMU's AMD IOMMU (`amd-iommu`): the IVRS table's unit, device table
/// entries leading each controller to its own domain.
#[test]
fn every_disk_reads_as_its_image_behind_an_amd_iommu() {
    every_disk("blk_amd", Unit::Amd);
}

#[test]
fn disk_lines_map_to_drives() {
    assert_eq!(drive_of("nvme0n2", "0000:00:10.0"), Some(1));
    assert_eq!(drive_of("nvme3n1", "0000:00:11.0"), Some(2));
    assert_eq!(drive_of("vdb", "0000:00:13.0"), Some(4));
    assert_eq!(drive_of("vdb", "0000:00:10.0"), None);
    assert_eq!(
        field("blk: vda size=4096 depth=1 lbas=0 fnv1a=1", "lbas"),
        Some("0")
    );
}
