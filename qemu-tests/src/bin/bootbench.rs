//! Boot-to-drivers benchmark: QEMU start to the kernel's `all drivers bound` line on q35 with
//! an NVMe controller, virtio-blk, virtio-net and edu. The kernel (command line `bootbench`)
//! binds every driver, runs each driver's self test once (so their queues' vectors deliver),
//! and reports how many of the drivers' vectors have delivered an interrupt.
//!
//! Prints the wall time of five runs and the median, then one run under
//! `-icount shift=0,sleep=off`, where the TSC the kernel prints is the number of guest
//! instructions executed since QEMU started (firmware included).
//!
//! Run with `./run.sh bench` or `cargo run --release -p qemu-tests --bin bootbench`.

use std::process::ExitCode;
use std::time::Duration;

use qemu_tests::{Machine, Qemu, random_token};

const RUNS: usize = 5;
const MARKER: &str = "all drivers bound";
const TIMEOUT: Duration = Duration::from_secs(120);

fn vm(kernel: &std::path::Path, dir: &std::path::Path) -> Qemu {
    let nvme = dir.join("nvme.img");
    let blk = dir.join("blk.img");
    let nvme_drive = format!("if=none,id=nvm,format=raw,file={}", nvme.display());
    let blk_drive = format!("if=none,id=vb,format=raw,file={}", blk.display());
    Qemu::kernel(kernel, "log=warn bootbench")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args([
            "-drive",
            &nvme_drive,
            "-device",
            "nvme,serial=bootbench,drive=nvm",
        ])
        .args(["-drive", &blk_drive, "-device", "virtio-blk-pci,drive=vb"])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-device",
            "edu",
        ])
        .timeout(TIMEOUT)
}

fn bench_line(serial: &str) -> Option<&str> {
    serial.lines().find(|l| l.contains("BOOTBENCH "))
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn main() -> ExitCode {
    let kernel = match qemu_tests::bench_kernel("bootbench") {
        Ok(kernel) => kernel,
        Err(code) => return code,
    };
    let dir = std::env::temp_dir().join(format!(
        "qemu-bootbench-{}-{}",
        std::process::id(),
        random_token()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("nvme.img"), vec![0x5a; 4 << 20]).expect("image");
    std::fs::write(dir.join("blk.img"), vec![0xa5; 4 << 20]).expect("image");
    println!(
        "boot to `{MARKER}`: q35, 512 MiB, nvme + virtio-blk + virtio-net + edu, {}",
        kernel.display()
    );
    let mut times = Vec::new();
    let mut last = String::new();
    for run in 1..=RUNS {
        let (outcome, at) = match vm(&kernel, &dir).run_until(MARKER) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("bootbench: cannot run QEMU: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Some(at) = at else {
            eprintln!(
                "run {run}: no `{MARKER}` ({})\n{}",
                outcome.describe_exit(),
                outcome.log()
            );
            return ExitCode::FAILURE;
        };
        println!("  run {run}: {:.3} s", at.as_secs_f64());
        times.push(at);
        last = bench_line(&outcome.serial).unwrap_or_default().to_owned();
    }
    times.sort();
    println!(
        "median: {:.3} s (wall time, TCG)",
        times[RUNS / 2].as_secs_f64()
    );
    println!("kernel report: {}", last.trim());
    if let (Some(vectors), Some(seen)) = (field(&last, "vectors"), field(&last, "seen")) {
        println!(
            "device vectors: {seen} of {vectors} delivered at least once (virtio configuration-change vectors only fire on a configuration change)"
        );
    }
    let icount = vm(&kernel, &dir).args(["-icount", "shift=0,sleep=off"]);
    match icount.run_until(MARKER) {
        Ok((outcome, Some(_))) => match bench_line(&outcome.serial).and_then(|l| field(l, "tsc")) {
            Some(tsc) => println!(
                "under -icount shift=0,sleep=off: {tsc} guest instructions from QEMU start (firmware included)"
            ),
            None => println!("under icount: no BOOTBENCH line"),
        },
        Ok((outcome, None)) => {
            println!("under icount: no `{MARKER}` ({})", outcome.describe_exit())
        }
        Err(e) => println!("under icount: cannot run QEMU: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}
