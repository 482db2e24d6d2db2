//! Storage safety: booted without `storage=write`, the kernel leaves every disk exactly as it
//! found it.
//!
//! The runner writes two disk images of fresh pseudo-random bytes, attaches one as NVMe and
//! one as virtio-blk (plus edu and virtio-net, so that every driver binds and self-tests),
//! and boots `test=storage` (`kernel/src/tests/storage_suite.rs`): the write paths refuse
//! (the `nvme` suite's write test fails with the refusal), every driver binds and runs its
//! self test, and each storage driver goes through 1000 unbind/bind cycles with a self test
//! after every rebind. Two truths the kernel cannot fake:
//!
//! - QEMU's own block statistics (`query-blockstats`, asked while the kernel holds after its
//!   suite): 0 write operations, 0 bytes written and 0 discards on both drives, and some
//!   reads (so the statistics are those of drives the kernel really used);
//! - the image files after QEMU has quit: byte for byte what the runner wrote.
//!
//! With `storage=write` the `nvme` scenarios (`tests/nvme.rs`) check the other side: the
//! write test writes exactly its pattern and nothing else.

use std::time::Duration;

use qemu_tests::{
    Machine, Qemu, check, ensure, fnv1a, kernel_elf, qemu_or_skip, random_token, unique_temp_dir,
};
use serde_json::Value;

/// The NVMe image's size.
const NVME_DISK: usize = 4 << 20;
/// The virtio-blk image's size.
const VIRTIO_DISK: usize = 1 << 20;
/// Tests in the suite.
const TESTS: u64 = 6;
/// What every refused write says.
const REFUSAL: &str = "writes are disabled: boot with storage=write to allow them";

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

/// `Ok` when `after` is byte for byte `before`; otherwise where it first differs.
fn unchanged(name: &str, before: &[u8], after: &[u8]) -> Result<(), String> {
    ensure!(
        after.len() == before.len(),
        "{name}: the image is {} bytes, was {}",
        after.len(),
        before.len()
    );
    if let Some(offset) = before.iter().zip(after).position(|(a, b)| a != b) {
        let changed = before.iter().zip(after).filter(|(a, b)| a != b).count();
        return Err(format!(
            "{name}: {changed} byte(s) changed, the first at {offset:#x} (sector {} of 512 B): {:#04x} -> {:#04x}",
            offset / 512,
            before[offset],
            after[offset]
        ));
    }
    Ok(())
}

/// One drive's counters from a `query-blockstats` answer: (reads, writes, bytes written,
/// discards).
fn drive_stats(answer: &Value, drive: &str) -> Result<(u64, u64, u64, u64), String> {
    let entry = answer
        .as_array()
        .ok_or("query-blockstats: not a list")?
        .iter()
        .find(|e| e["device"].as_str() == Some(drive))
        .ok_or_else(|| format!("query-blockstats: no drive `{drive}` in {answer}"))?;
    let stats = &entry["stats"];
    let field = |name: &str| {
        stats[name]
            .as_u64()
            .ok_or_else(|| format!("query-blockstats: `{drive}` has no {name}: {stats}"))
    };
    Ok((
        field("rd_operations")?,
        field("wr_operations")?,
        field("wr_bytes")?,
        // Absent in old QEMU versions; a discard would also change the image.
        stats["unmap_operations"].as_u64().unwrap_or(0),
    ))
}

/// QEMU's counters say the drive was read and never written.
fn read_only_stats(answer: &Value, drive: &str) -> Result<(), String> {
    let (reads, writes, bytes, discards) = drive_stats(answer, drive)?;
    ensure!(
        writes == 0 && bytes == 0 && discards == 0,
        "QEMU counted {writes} write operation(s) ({bytes} bytes) and {discards} discard(s) on `{drive}`"
    );
    ensure!(
        reads > 0,
        "QEMU counted no read on `{drive}`: the kernel did not use it"
    );
    Ok(())
}

#[test]
fn disks_unchanged_without_storage_write() {
    let name = "storage_read_only";
    if !qemu_or_skip(name) {
        return;
    }
    let dir = unique_temp_dir(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let nvme_image = dir.join("nvme.img");
    let virtio_image = dir.join("virtio.img");
    let nvme_before = disk_image(&random_token(), NVME_DISK);
    let virtio_before = disk_image(&random_token(), VIRTIO_DISK);
    std::fs::write(&nvme_image, &nvme_before).expect("NVMe image");
    std::fs::write(&virtio_image, &virtio_before).expect("virtio image");

    let nvme_drive = format!("if=none,id=nvm,format=raw,file={}", nvme_image.display());
    let nvme = format!("nvme,serial={},drive=nvm", random_token());
    let virtio_drive = format!("if=none,id=vb,format=raw,file={}", virtio_image.display());
    let run = Qemu::kernel(kernel_elf(), "test=storage")
        .machine(Machine::Q35)
        .memory_mib(512)
        .timeout(Duration::from_secs(600))
        .args([
            "-cpu",
            "max",
            "-drive",
            &nvme_drive,
            "-device",
            &nvme,
            "-drive",
            &virtio_drive,
            "-device",
            "virtio-blk-pci,drive=vb",
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-device",
            "edu",
        ])
        .run_until_qmp("STORAGE HOLD", |qmp| qmp.execute("query-blockstats", None))
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    let outcome = &run.outcome;
    println!(
        "{name}: {} in {:.2} s (hold after {:.2} s)",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64(),
        run.marker_at.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    for line in outcome
        .serial
        .lines()
        .filter(|l| l.starts_with("storage: "))
    {
        println!("{name}: {}", line.trim_end());
    }
    let nvme_after = std::fs::read(&nvme_image).expect("NVMe image after the run");
    let virtio_after = std::fs::read(&virtio_image).expect("virtio image after the run");
    let _ = std::fs::remove_dir_all(&dir);

    // Every check runs and every failure is reported: the kernel's word and the two
    // independent truths (QEMU's counters, the image files) each on their own.
    check(name, outcome, |outcome, report| {
        let stats = match &run.session {
            Some(Ok(stats)) => Ok(stats),
            Some(Err(e)) => Err(format!("query-blockstats: {e}")),
            None => Err("no QMP session: the kernel never printed STORAGE HOLD".to_owned()),
        };
        let has = |wanted: &str| outcome.serial.lines().any(|l| l.trim_end() == wanted);
        let mut results = vec![
            report.check_tests_passed(TESTS),
            if run.marker_at.is_some() && outcome.quit_via_qmp && !outcome.timed_out {
                Ok(())
            } else {
                Err(format!(
                    "the kernel did not hold for the runner: {}",
                    outcome.describe_exit()
                ))
            },
            stats.clone().and_then(|s| read_only_stats(s, "nvm")),
            stats.and_then(|s| read_only_stats(s, "vb")),
            unchanged("NVMe image", &nvme_before, &nvme_after),
            unchanged("virtio-blk image", &virtio_before, &virtio_after),
        ];
        for wanted in [
            format!("storage: nvme write test refused: write: {REFUSAL}"),
            format!("storage: virtio-blk write refused: {REFUSAL}"),
        ] {
            results.push(if has(&wanted) {
                Ok(())
            } else {
                Err(format!("missing `{wanted}`"))
            });
        }
        for driver in ["edu", "nvme", "virtio-blk", "virtio-net"] {
            let seen = outcome.serial.contains(&format!(" {driver} self test: "));
            results.push(if seen {
                Ok(())
            } else {
                Err(format!("no self test of {driver}"))
            });
        }
        for driver in ["nvme", "virtio-blk"] {
            let line = format!("storage: {driver}: 1000 unbind/bind cycles in ");
            results.push(if outcome.serial.contains(&line) {
                Ok(())
            } else {
                Err(format!("no cycle line for {driver}"))
            });
        }
        let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        ensure!(errors.is_empty(), "{}", errors.join("\n"));
        Ok(())
    });
}

#[test]
fn checks_catch_a_write() {
    let before = disk_image("seed", 4096);
    assert_eq!(unchanged("x", &before, &before.clone()), Ok(()));
    let mut after = before.clone();
    after[1000] ^= 0x40;
    let err = unchanged("x", &before, &after).unwrap_err();
    assert!(
        err.contains("1 byte(s) changed, the first at 0x3e8"),
        "{err}"
    );
    assert!(unchanged("x", &before, &before[1..]).is_err());

    let stats = |rd: u64, wr: u64, bytes: u64| {
        serde_json::json!([
            { "device": "other", "stats": { "rd_operations": 0, "wr_operations": 9, "wr_bytes": 9 } },
            { "device": "nvm", "stats": { "rd_operations": rd, "wr_operations": wr, "wr_bytes": bytes, "unmap_operations": 0 } },
        ])
    };
    assert_eq!(read_only_stats(&stats(5, 0, 0), "nvm"), Ok(()));
    assert!(read_only_stats(&stats(5, 1, 512), "nvm").is_err());
    assert!(read_only_stats(&stats(5, 0, 512), "nvm").is_err());
    assert!(read_only_stats(&stats(0, 0, 0), "nvm").is_err());
    assert!(read_only_stats(&stats(5, 0, 0), "vb").is_err());
}
