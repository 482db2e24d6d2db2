//! Block read throughput (the kernel's `blkbench` suite, `kernel/src/tests/blk_suite.rs`):
//! MiB/s for NVMe namespaces with 512- and 4096-byte blocks and virtio-blk disks with 512-
//! and 4096-byte blocks, at request sizes of 4 KiB, 128 KiB and 1 MiB, one request in flight
//! and 32, with every byte delivered into the caller's memory.
//!
//! Each figure comes with the FNV-1a of everything read for it, which this runner checks
//! against the image it wrote (sequential requests from block 0, wrapping at the end of the
//! disk), so a figure for data that was not read correctly fails the run.
//!
//! Time is the guest's (TSC-based microseconds, around the read calls only). Under TCG the
//! guest TSC follows the host's clock, so these are host-time figures for an emulated CPU,
//! comparable between depths, sizes and drivers on one machine, not a measure of hardware.
//!
//! Ignored by `cargo test` (it takes minutes); run it with
//! `cargo test --release -p qemu-tests --test blkbench -- --ignored --nocapture`.

use qemu_tests::{
    Machine, QEMU_EXIT_SUCCESS, Qemu, check, ensure, expect_exit, fnv1a, kernel_elf, qemu_or_skip,
    random_token, unique_temp_dir,
};

/// Image size.
const DISK: usize = 32 << 20;

/// (drive id, disk name, block size, QEMU device arguments).
const DRIVES: [(&str, &str, usize, &str); 4] = [
    ("n0a", "nvme0n1", 512, "nvme-ns,drive=n0a,bus=c0,nsid=1"),
    (
        "n0b",
        "nvme0n2",
        4096,
        "nvme-ns,drive=n0b,bus=c0,nsid=2,logical_block_size=4096,physical_block_size=4096",
    ),
    ("v512", "vda", 512, "virtio-blk-pci,drive=v512,addr=0x12"),
    (
        "v4k",
        "vdb",
        4096,
        "virtio-blk-pci,drive=v4k,addr=0x13,logical_block_size=4096,physical_block_size=4096",
    ),
];

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

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn number(line: &str, key: &str) -> Result<u64, String> {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("`{line}`: no {key}"))
}

/// The FNV-1a of what the kernel reads for one figure: `batches` batches of `depth`
/// requests of `size` bytes, request `n` (counting on across batches) at slot `n` modulo the
/// slots of `size` bytes the image holds.
fn expected_hash(image: &[u8], size: usize, depth: usize, batches: usize) -> u64 {
    let slots = image.len() / size;
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for n in 0..batches * depth {
        let at = (n % slots) * size;
        for b in &image[at..at + size] {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[test]
#[ignore = "a benchmark: minutes under TCG; run with --ignored"]
fn block_read_throughput() {
    let name = "blkbench";
    if !qemu_or_skip(name) {
        return;
    }
    let dir = unique_temp_dir(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let images: Vec<Vec<u8>> = DRIVES
        .iter()
        .map(|_| disk_image(&random_token(), DISK))
        .collect();
    let mut args: Vec<String> = Vec::new();
    for ((id, ..), image) in DRIVES.iter().zip(&images) {
        let path = dir.join(format!("{id}.img"));
        std::fs::write(&path, image).expect("disk image");
        args.push("-drive".into());
        args.push(format!(
            "if=none,id={id},format=raw,file={}",
            path.display()
        ));
    }
    args.push("-device".into());
    args.push(format!("nvme,id=c0,serial={},addr=0x10", random_token()));
    for (.., device) in DRIVES {
        args.push("-device".into());
        args.push(device.into());
    }
    let outcome = Qemu::kernel(kernel_elf(), "test=blkbench")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(["-cpu", "max"])
        .args(args)
        .timeout(std::time::Duration::from_secs(1200))
        .run()
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    check(name, &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(1)?;
        let mut figures = 0;
        println!("block reads into the caller's memory, MiB/s (guest TSC time, TCG):");
        println!(
            "{:<9} {:>6} {:>8} {:>6} {:>10}",
            "disk", "block", "request", "depth", "MiB/s"
        );
        for line in outcome.serial.lines().map(qemu_tests::protocol::clean_line) {
            if !line.starts_with("BLKBENCH disk=") {
                continue;
            }
            let disk = field(&line, "disk").ok_or("disk")?;
            let (drive, (_, _, bs, _)) = DRIVES
                .iter()
                .enumerate()
                .find(|(_, d)| d.1 == disk)
                .ok_or_else(|| format!("`{line}`: unknown disk"))?;
            let size = number(&line, "size")? as usize;
            let depth = number(&line, "depth")? as usize;
            let batches = number(&line, "batches")? as usize;
            let hash = format!(
                "fnv1a={:016x}",
                expected_hash(&images[drive], size, depth, batches)
            );
            ensure!(
                line.ends_with(&hash),
                "`{line}`: the image gives {hash}: the data read is wrong"
            );
            println!(
                "{disk:<9} {bs:>6} {:>7}K {depth:>6} {:>10}",
                size / 1024,
                field(&line, "mib_s").ok_or("mib_s")?
            );
            figures += 1;
        }
        ensure!(
            figures == DRIVES.len() * 6,
            "{figures} figures, expected {}",
            DRIVES.len() * 6
        );
        Ok(())
    });
}

#[test]
fn expected_hash_wraps_at_the_end() {
    let image: Vec<u8> = (0..16u8).collect();
    // Two slots of 8 bytes; three requests: slots 0, 1, 0.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in image[..8].iter().chain(&image[8..]).chain(&image[..8]) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    assert_eq!(expected_hash(&image, 8, 3, 1), h);
    assert_eq!(expected_hash(&image, 8, 1, 3), h);
}
