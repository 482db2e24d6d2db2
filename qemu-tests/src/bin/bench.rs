//! Boot benchmark: boots the kernel via PVH on q35 (`-m 512M`, command line `bench`) five
//! times and measures the wall time from spawning QEMU to the serial line `kernel ready`
//! (QEMU is killed as soon as the line arrives). Prints each run, the median and the goal.
//!
//! Run with `./run.sh bench` or `cargo run --release -p qemu-tests --bin bench`.

use std::process::ExitCode;
use std::time::Duration;

use qemu_tests::{Machine, Qemu};

const RUNS: usize = 5;
const MARKER: &str = "kernel ready";
const GOAL: Duration = Duration::from_millis(150);
const TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let kernel = match qemu_tests::bench_kernel("bench") {
        Ok(kernel) => kernel,
        Err(code) => return code,
    };
    println!(
        "boot benchmark: PVH, q35 -nodefaults, 512 MiB, cmdline \"bench\", {}",
        kernel.display()
    );
    println!("time from spawning QEMU to the serial line `{MARKER}`:");
    let mut times = Vec::with_capacity(RUNS);
    for run in 1..=RUNS {
        // -nodefaults: no VGA card and no NIC, whose option ROMs the firmware would run
        // before the kernel (about 60 ms under TCG); the kernel needs neither to boot.
        let qemu = Qemu::kernel(&kernel, "bench")
            .machine(Machine::Q35)
            .memory_mib(512)
            .arg("-nodefaults")
            .timeout(TIMEOUT);
        let (outcome, ready) = match qemu.run_until(MARKER) {
            Ok(result) => result,
            Err(e) => {
                eprintln!("bench: cannot run QEMU: {e}");
                return ExitCode::FAILURE;
            }
        };
        match ready {
            Some(t) => {
                let first = outcome.first_output.map_or_else(String::new, |f| {
                    format!(" (first serial byte at {:.3} s)", f.as_secs_f64())
                });
                println!("  run {run}: {:.3} s{first}", t.as_secs_f64());
                times.push(t);
            }
            None => {
                eprintln!(
                    "  run {run}: no `{MARKER}` line ({})\n{}",
                    outcome.describe_exit(),
                    outcome.log()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "median: {:.3} s (min {:.3} s, max {:.3} s)",
        median.as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64()
    );
    println!(
        "goal: < {:.3} s: {}",
        GOAL.as_secs_f64(),
        if median < GOAL { "met" } else { "NOT met" }
    );
    ExitCode::SUCCESS
}
