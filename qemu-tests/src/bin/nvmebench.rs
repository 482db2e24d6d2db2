//! NVMe sequential-read benchmark: boots the kernel with `test=nvmebench` on q35 with a
//! 16 MiB disk image behind QEMU's `nvme` (MSI-X, four I/O queues), [`RUNS`] times, and
//! prints the kernel's figures (see `sequential_read_throughput` in
//! `kernel/src/tests/nvme_suite.rs`) as MiB/s, median of the runs:
//!
//! - `qd1`: 16 MiB in 8 KiB Read commands, one in flight: submit, ring, wait for the MSI-X
//!   interrupt, consume the completion, next;
//! - `qd8`: the same commands eight at a time per doorbell, each batch waited for by
//!   interrupt (the controller often coalesces several completions into one interrupt);
//! - `copy`: `qd8` through the driver's `read_on`, which also copies every byte out of the
//!   DMA bounce buffer into an ordinary buffer.
//!
//! Time is the guest's: microseconds from the TSC, calibrated at boot. Under TCG (no KVM) the
//! guest TSC follows the host's clock, so these are host-time figures for an emulated CPU:
//! the controller's side (QEMU's block layer reading the image file) runs at native speed,
//! the driver's side at TCG speed. They compare driver strategies on one machine; they are not
//! a measure of NVMe hardware.
//!
//! Run with `cargo run --release -p qemu-tests --bin nvmebench`; `QEMU_TESTS_KERNEL=<elf>`
//! uses a prebuilt kernel. The exit status is non-zero only if a run failed.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use qemu_tests::protocol::clean_line;
use qemu_tests::{
    Machine, Outcome, QEMU_EXIT_SUCCESS, Qemu, Report, random_token, unique_temp_dir,
};

/// Boots measured.
const RUNS: usize = 5;
/// Disk image size (the kernel reads at most 16 MiB).
const DISK: usize = 16 << 20;
/// One run.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The line prefix of the kernel's figures.
const PREFIX: &str = "NVMEBENCH ";
/// The modes the kernel measures, in order.
const MODES: [&str; 3] = ["qd1", "qd8", "copy"];

/// One mode's figures from one run.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Figure {
    mode: String,
    bytes: u64,
    us: u64,
    commands: u64,
    interrupts: u64,
}

impl Figure {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / (self.us.max(1) as f64 / 1e6)
    }
}

/// The `key=value` fields of one `NVMEBENCH` line; a value may be `"quoted"`.
fn fields(line: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = line[line.find(PREFIX).map_or(0, |p| p + PREFIX.len())..].trim_start();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("malformed field `{rest}` in `{line}`"))?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => quoted
                .split_once('"')
                .ok_or_else(|| format!("unterminated quote in `{line}`"))?,
            None => after.split_once(' ').unwrap_or((after, "")),
        };
        if key.is_empty() || key.contains(' ') {
            return Err(format!("malformed key `{key}` in `{line}`"));
        }
        out.insert(key.to_owned(), value.to_owned());
        rest = after.trim_start();
    }
    Ok(out)
}

/// The header fields and the per-mode figures of one run.
fn parse(serial: &str) -> Result<(BTreeMap<String, String>, Vec<Figure>), String> {
    let mut header = BTreeMap::new();
    let mut figures = Vec::new();
    for line in serial.lines().map(clean_line) {
        if !line.contains(PREFIX) {
            continue;
        }
        let f = fields(&line)?;
        let Some(mode) = f.get("mode") else {
            header = f;
            continue;
        };
        let number = |key: &str| {
            f.get(key)
                .ok_or_else(|| format!("no `{key}=` in `{line}`"))?
                .parse::<u64>()
                .map_err(|e| format!("`{key}=` in `{line}`: {e}"))
        };
        figures.push(Figure {
            mode: mode.clone(),
            bytes: number("bytes")?,
            us: number("us")?,
            commands: number("commands")?,
            interrupts: number("interrupts")?,
        });
    }
    let modes: Vec<&str> = figures.iter().map(|f| f.mode.as_str()).collect();
    if modes != MODES {
        return Err(format!("modes {modes:?}, expected {MODES:?}"));
    }
    Ok((header, figures))
}

fn figures(outcome: &Outcome) -> Result<(BTreeMap<String, String>, Vec<Figure>), String> {
    if outcome.exit_code != Some(QEMU_EXIT_SUCCESS) || outcome.timed_out {
        return Err(format!("QEMU: {}", outcome.describe_exit()));
    }
    Report::parse(&outcome.serial).check_tests_passed(1)?;
    parse(&outcome.serial)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> ExitCode {
    let kernel = match qemu_tests::bench_kernel("nvmebench") {
        Ok(kernel) => kernel,
        Err(code) => return code,
    };
    let dir = unique_temp_dir("nvmebench");
    let image = dir.join("nvme.img");
    // Pseudo-random contents, so the host's page cache holds real data (not a sparse file).
    let mut state =
        0x9E37_79B9_7F4A_7C15u64 ^ u64::from_str_radix(&random_token(), 16).unwrap_or(1);
    let mut data = Vec::with_capacity(DISK);
    while data.len() < DISK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&image, &data)) {
        eprintln!("nvmebench: disk image {}: {e}", image.display());
        return ExitCode::FAILURE;
    }
    let drive = format!("if=none,id=nvm,format=raw,file={}", image.display());
    println!(
        "NVMe sequential read: q35, -cpu max, -device nvme (MSI-X) on a {} MiB raw image, cmdline \"test=nvmebench\", {}",
        DISK >> 20,
        kernel.display()
    );
    let mut runs = Vec::new();
    let mut header = BTreeMap::new();
    let mut failed = false;
    for run in 1..=RUNS {
        let qemu = Qemu::kernel(&kernel, "test=nvmebench")
            .machine(Machine::Q35)
            .memory_mib(512)
            .args(["-cpu", "max", "-drive", &drive, "-device"])
            .arg("nvme,serial=nvmebench,drive=nvm")
            .timeout(TIMEOUT);
        let outcome = match qemu.run() {
            Ok(outcome) => outcome,
            Err(e) => {
                eprintln!("nvmebench: cannot run QEMU: {e}");
                failed = true;
                break;
            }
        };
        match figures(&outcome) {
            Ok((h, f)) => {
                println!(
                    "run {run}: {} (wall {:.2} s)",
                    f.iter()
                        .map(|f| format!("{} {:.0} MiB/s", f.mode, f.mib_per_s()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    outcome.wall.as_secs_f64()
                );
                header = h;
                runs.push(f);
            }
            Err(message) => {
                eprintln!("nvmebench: run {run}: {message}\n{}", outcome.log());
                failed = true;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if runs.is_empty() {
        return ExitCode::FAILURE;
    }
    let get = |k: &str| header.get(k).cloned().unwrap_or_else(|| "?".into());
    println!(
        "controller \"{}\", {} I/O queue(s) by {}, {}-byte blocks, {} bytes per command; guest time (TSC at {} Hz; under TCG it follows the host clock)",
        get("model"),
        get("queues"),
        get("kind"),
        get("lba_size"),
        get("command_bytes"),
        get("tsc_hz")
    );
    println!(
        "{:<6} {:>10} {:>10} {:>11} {:>10} {:>12} {:>12}",
        "mode", "bytes", "commands", "interrupts", "us", "MiB/s", "us/command"
    );
    for (i, mode) in MODES.iter().enumerate() {
        let rates: Vec<f64> = runs.iter().map(|r| r[i].mib_per_s()).collect();
        let us: Vec<f64> = runs.iter().map(|r| r[i].us as f64).collect();
        let last = &runs[runs.len() - 1][i];
        let us = median(us);
        println!(
            "{:<6} {:>10} {:>10} {:>11} {:>10.0} {:>12.1} {:>12.1}",
            mode,
            last.bytes,
            last.commands,
            last.interrupts,
            us,
            median(rates),
            us / last.commands.max(1) as f64
        );
    }
    println!(
        "medians of {} run(s); interrupts are from the last run (qd8: the controller coalesces completions of a batch)",
        runs.len()
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\u{1b}[0mTEST START nvmebench\r\n\
NVMEBENCH model=\"QEMU NVMe Ctrl\" lba_size=512 command_bytes=8192 queues=4 kind=MSI-X tsc_hz=2597498800\n\
NVMEBENCH mode=qd1 bytes=16777216 us=124944 commands=2048 interrupts=2048\n\
NVMEBENCH mode=qd8 bytes=16777216 us=25564 commands=2048 interrupts=259\n\
NVMEBENCH mode=copy bytes=16777216 us=290688 commands=2048 interrupts=256 check=254\n\
TEST sequential_read_throughput ... ok\n\
TEST DONE nvmebench: 1 passed, 0 failed\n";

    #[test]
    fn parses_the_kernel_lines() {
        let (header, figures) = parse(LOG).unwrap();
        assert_eq!(header["model"], "QEMU NVMe Ctrl");
        assert_eq!(header["queues"], "4");
        assert_eq!(header["kind"], "MSI-X");
        assert_eq!(
            figures[1],
            Figure {
                mode: "qd8".into(),
                bytes: 16 << 20,
                us: 25564,
                commands: 2048,
                interrupts: 259,
            }
        );
        assert!((figures[0].mib_per_s() - 128.06).abs() < 0.1);
    }

    #[test]
    fn missing_or_malformed_lines_are_errors() {
        let err = parse(&LOG.replace("NVMEBENCH mode=qd8", "NVMEBENCH mode=qd9")).unwrap_err();
        assert!(err.contains("modes"), "{err}");
        let err = parse(&LOG.replace("us=25564", "us=x")).unwrap_err();
        assert!(err.contains("`us=`"), "{err}");
        assert!(
            parse(&LOG.replace("Ctrl\"", "Ctrl"))
                .unwrap_err()
                .contains("quote")
        );
        assert!(parse("").is_err());
    }
}
