//! NVMe driver scenarios: the kernel's `nvme` suite (`kernel/src/tests/nvme_suite.rs`) drives
//! QEMU's `nvme` controller through `drivers::nvme`, and this runner checks what it reports
//! against what the runner itself set up, the independent truth:
//!
//! - a fresh disk image (4 MiB of pseudo-random bytes seeded by a random token) and a fresh
//!   serial number (another token) for every run;
//! - the kernel's Identify line: model `QEMU NVMe Ctrl`, the serial given to QEMU, the firmware
//!   revision QEMU reports (its own version), the namespace size and block size of the image,
//!   the number of I/O queues and the interrupt kind this runner configured;
//! - one FNV-1a line per 64 KiB of the disk, computed here from the image as written;
//! - the write test (the kernel is booted with `storage=write`; without it every write is
//!   refused, see `tests/storage.rs`): after QEMU exits, the image must hold the kernel's
//!   pattern (a function of the disk offset and the serial number, computed here too) in
//!   exactly its 20 KiB at 1 MiB, and every other byte as written before the run (the self
//!   tests' write to the last block was restored 1001 times);
//! - with MSI-X, each I/O queue completing on its own vector; every probe (successful or not)
//!   and the 1000 unbind/bind cycles leaving vectors, frames, heap, MMIO window, handlers and
//!   claims at baseline;
//! - in every scenario, the first 64 KiB read again by forced INTx (the suite probes with
//!   `IrqKinds::INTX` only), its checksum against the image.
//!
//! Scenarios: MSI-X with four I/O queues in x2APIC mode; a controller with a one-entry MSI-X
//! table (`msix_qsize=1`), where the admin queue and one I/O queue share entry 0; 4 KiB
//! logical blocks with the controller limited to two queue pairs (`max_ioqpairs=2`), plus a
//! second controller without a drive, hence without any active namespace, whose probe must
//! fail after enabling the controller and still release everything.

use qemu_tests::fnv1a;
use std::process::Command;

use qemu_tests::{
    Machine, Outcome, QEMU_EXIT_SUCCESS, Qemu, check, ensure, expect_exit, kernel_elf,
    qemu_or_skip, qemu_program, random_token, unique_temp_dir,
};

/// Image size.
const DISK: usize = 4 << 20;
/// The kernel hashes the disk in regions of this size.
const REGION: usize = 64 * 1024;
/// The kernel's write test: 20 KiB at 1 MiB.
const WRITE_AT: usize = 1 << 20;
/// Length of the write test's range.
const WRITE_LEN: usize = 20 * 1024;
/// Tests in the suite.
const TESTS: u64 = 9;

/// The kernel's write-test byte at disk offset `offset` (`nvme_suite::pattern_byte`).
fn pattern_byte(offset: u64, serial: &[u8]) -> u8 {
    let mixed = ((offset as u32).wrapping_mul(0x9E37_79B1) >> 7) as u8;
    let key = if serial.is_empty() {
        0
    } else {
        serial[(offset % serial.len() as u64) as usize]
    };
    mixed ^ key ^ 0xA5
}

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

/// The firmware revision QEMU's nvme reports: its version, at most 8 characters.
fn qemu_firmware_revision() -> Option<String> {
    let output = Command::new(qemu_program())
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .lines()
        .next()?
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)?;
    Some(version.chars().take(8).collect())
}

/// One scenario's configuration and what the kernel must report for it.
struct Scenario {
    name: &'static str,
    cpu: &'static str,
    /// Extra `-device nvme` properties.
    properties: &'static str,
    lba_size: usize,
    queues: usize,
    vectors: usize,
    kind: &'static str,
    /// Also a second controller without a drive (its probe must fail cleanly).
    broken_second: bool,
}

fn run(s: &Scenario) {
    if !qemu_or_skip(s.name) {
        return;
    }
    let serial = random_token();
    let dir = unique_temp_dir(s.name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let image = dir.join("nvme.img");
    let original = disk_image(&random_token(), DISK);
    std::fs::write(&image, &original).expect("disk image");
    let drive = format!("if=none,id=nvm,format=raw,file={}", image.display());
    let device = format!("nvme,serial={serial},drive=nvm{}", s.properties);
    let mut qemu = Qemu::kernel(kernel_elf(), "test=nvme storage=write")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(["-cpu", s.cpu, "-drive", &drive, "-device", &device]);
    if s.broken_second {
        // After the first on the command line, so at a higher address: the suite's other
        // tests find the first.
        qemu = qemu.args(["-device", "nvme,serial=nonamespace"]);
    }
    let outcome = qemu
        .run()
        .unwrap_or_else(|e| panic!("{}: cannot run QEMU: {e}", s.name));
    println!(
        "{}: {} in {:.2} s",
        s.name,
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    let after = std::fs::read(&image).expect("read the image back");
    let _ = std::fs::remove_dir_all(&dir);
    check(s.name, &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(TESTS)?;
        check_lines(s, outcome, &serial, &original)?;
        check_image(&original, &after, &serial)
    });
}

/// The kernel's report against the configuration and the image.
fn check_lines(s: &Scenario, outcome: &Outcome, serial: &str, image: &[u8]) -> Result<(), String> {
    let lines: Vec<String> = outcome
        .serial
        .lines()
        .map(qemu_tests::protocol::clean_line)
        .collect();
    let has = |wanted: &str| lines.iter().any(|l| l == wanted);
    let identify = lines
        .iter()
        .find(|l| l.starts_with("nvme: model="))
        .ok_or("no Identify line")?;
    let firmware = match qemu_firmware_revision() {
        Some(v) => v,
        None => identify
            .split("firmware=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .filter(|f| !f.is_empty())
            .ok_or("empty firmware revision")?
            .to_owned(),
    };
    let expected = format!(
        "nvme: model=\"QEMU NVMe Ctrl\" serial=\"{serial}\" firmware=\"{firmware}\" lbas={} lba_size={} queues={} vectors={} kind={}",
        DISK / s.lba_size,
        s.lba_size,
        s.queues,
        s.vectors,
        s.kind
    );
    ensure!(
        *identify == expected,
        "Identify line\n  `{identify}`\nexpected\n  `{expected}`"
    );
    let mut regions = 0;
    for (i, region) in image.chunks(REGION).enumerate() {
        let (a, b) = (i * REGION / s.lba_size, (i + 1) * REGION / s.lba_size);
        let line = format!("nvme: read lba {a}..{b} fnv1a={:016x}", fnv1a(region));
        ensure!(has(&line), "missing or wrong checksum: expected `{line}`");
        regions += 1;
    }
    let printed = lines
        .iter()
        .filter(|l| l.starts_with("nvme: read lba"))
        .count();
    ensure!(
        printed == regions,
        "{printed} checksum lines for {regions} regions"
    );
    let written: Vec<u8> = (WRITE_AT..WRITE_AT + WRITE_LEN)
        .map(|o| pattern_byte(o as u64, serial.as_bytes()))
        .collect();
    let line = format!(
        "nvme: wrote lba {}..{} fnv1a={:016x}",
        WRITE_AT / s.lba_size,
        (WRITE_AT + WRITE_LEN) / s.lba_size,
        fnv1a(&written)
    );
    ensure!(has(&line), "missing `{line}`");
    if s.kind == "MSI-X" {
        for q in 1..=s.queues {
            // A one-entry table: the I/O queue shares entry 0 with the admin queue.
            let entry = q.min(s.vectors - 1);
            let line = format!("nvme: queue {q} completed on vector entry {entry} only");
            ensure!(has(&line), "missing `{line}`");
        }
    }
    let first = &image[..REGION.min(image.len())];
    let line = format!(
        "nvme: by INTx: read lba 0..{} fnv1a={:016x}",
        first.len() / s.lba_size,
        fnv1a(first)
    );
    ensure!(
        has(&line),
        "missing or wrong forced-INTx read: expected `{line}`"
    );
    let probes: Vec<&String> = lines
        .iter()
        .filter(|l| l.ends_with("; everything released"))
        .collect();
    ensure!(
        probes.len() == 1 + usize::from(s.broken_second),
        "{} probe lines: {probes:?}",
        probes.len()
    );
    ensure!(
        probes[0].ends_with(": bound and dropped; everything released"),
        "first probe: `{}`",
        probes[0]
    );
    if s.broken_second {
        ensure!(
            probes[1].contains(": probe failed: no active namespace")
                && probes[1].ends_with("; everything released"),
            "second probe: `{}`",
            probes[1]
        );
    }
    ensure!(
        lines.iter().any(
            |l| l.starts_with("nvme: 1000 unbind/bind cycles, self test after each")
                && l.ends_with("MMIO window, handlers and claims at baseline")
        ),
        "no cycle result line"
    );
    Ok(())
}

/// After the run: the write test's range holds the kernel's pattern, everything else is as
/// written before.
fn check_image(original: &[u8], after: &[u8], serial: &str) -> Result<(), String> {
    ensure!(
        after.len() == original.len(),
        "the image is {} bytes, was {}",
        after.len(),
        original.len()
    );
    for (offset, (&now, &before)) in after.iter().zip(original).enumerate() {
        let expected = if (WRITE_AT..WRITE_AT + WRITE_LEN).contains(&offset) {
            pattern_byte(offset as u64, serial.as_bytes())
        } else {
            before
        };
        ensure!(
            now == expected,
            "image byte {offset:#x} (block {} of 512 B) is {now:#04x}, expected {expected:#04x}{}",
            offset / 512,
            if expected == before {
                " (unchanged)"
            } else {
                " (the kernel's pattern)"
            }
        );
    }
    Ok(())
}

#[test]
fn nvme_msix_four_queues_x2apic() {
    run(&Scenario {
        name: "nvme_msix",
        cpu: "max",
        properties: "",
        lba_size: 512,
        queues: 4,
        vectors: 5,
        kind: "MSI-X",
        broken_second: false,
    });
}

#[test]
fn nvme_one_msix_entry_shared_by_the_admin_and_io_queue() {
    run(&Scenario {
        name: "nvme_one_entry",
        cpu: "qemu64",
        properties: ",msix_qsize=1",
        lba_size: 512,
        queues: 1,
        vectors: 1,
        kind: "MSI-X",
        broken_second: false,
    });
}

#[test]
fn nvme_4k_blocks_two_queue_pairs_and_a_controller_without_namespace() {
    run(&Scenario {
        name: "nvme_4k",
        cpu: "qemu64",
        properties: ",max_ioqpairs=2,logical_block_size=4096,physical_block_size=4096",
        lba_size: 4096,
        queues: 2,
        vectors: 5,
        kind: "MSI-X",
        broken_second: true,
    });
}

#[test]
fn image_helpers() {
    let a = disk_image("seed", 1000);
    assert_eq!(a.len(), 1000);
    assert_eq!(a, disk_image("seed", 1000));
    assert_ne!(a, disk_image("other", 1000));
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    // The pattern depends on the serial.
    assert_ne!(pattern_byte(5, b"ab"), pattern_byte(5, b"ba"));
}

#[test]
fn image_check_wants_exactly_the_write() {
    let serial = "0123456789abcdef";
    let original = disk_image("x", WRITE_AT + WRITE_LEN + 4096);
    let mut after = original.clone();
    for (o, b) in after.iter_mut().enumerate().skip(WRITE_AT).take(WRITE_LEN) {
        *b = pattern_byte(o as u64, serial.as_bytes());
    }
    assert_eq!(check_image(&original, &after, serial), Ok(()));
    let err = check_image(&original, &original, serial).unwrap_err();
    assert!(err.contains("the kernel's pattern"), "{err}");
    let mut stray = after.clone();
    let last = stray.len() - 1;
    stray[last] ^= 1;
    let err = check_image(&original, &stray, serial).unwrap_err();
    assert!(err.contains("(unchanged)"), "{err}");
    assert!(check_image(&original, &after[1..], serial).is_err());
}
