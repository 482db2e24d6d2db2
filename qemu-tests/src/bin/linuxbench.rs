//! This kernel against Linux on the same QEMU machine: one table and a verdict (see
//! `docs/bench.md` and `qemu_tests::bench`). Exits non-zero when a goal is missed or a figure
//! is missing.
//!
//! Run with `./run.sh bench` or `cargo run --release -p qemu-tests --bin linuxbench [--
//! <figures>]`, figures among `a` (wall time to ready), `b` (instructions), `c`
//! (configuration accesses), `d` (reads); all by default. `LINUXBENCH_RUNS=<n>` sets the runs
//! per kernel (default 5).

use std::process::ExitCode;

use qemu_tests::bench::initramfs::ReadPoint;
use qemu_tests::bench::report::{self, Goal, Row, Summary, Unit, summarize};
use qemu_tests::bench::runs::{self, Kernel, ReadFigure, Setup};

/// Runs per kernel and figure unless `LINUXBENCH_RUNS` says otherwise.
const DEFAULT_RUNS: usize = 5;
/// Figure a: this kernel within this many seconds of its firmware floor.
const WALL_MARGIN: f64 = 0.030;
/// Figure b: this kernel below this many instructions ...
const INSTRUCTION_LIMIT: f64 = 5e6;
/// ... and Linux at least this many times more.
const INSTRUCTION_RATIO: f64 = 350.0;
/// Figure c: at most this fraction of Linux's accesses per function.
const CONFIG_FRACTION: f64 = 1.0 / 3.0;
/// Figure d: sizes and depths compared, and bytes read per point.
const READ_SIZES: [u64; 3] = [4 << 10, 128 << 10, 1 << 20];
const READ_DEPTHS: [u64; 2] = [1, 32];
/// The points `test=nvmebench` measures (8 KiB at QD1 and QD8), measured on Linux too so
/// that this kernel's fallback figures have a counterpart.
const FALLBACK_POINTS: [(u64, u64); 2] = [(8 << 10, 1), (8 << 10, 8)];

/// Bytes read per point: enough that each of 32 `dd` processes makes many reads (their start
/// is inside the measured time), within the 256 MiB disks.
fn read_total(size: u64) -> u64 {
    match size {
        0..=8192 => 16 << 20,
        8193..=131_072 => 128 << 20,
        _ => 256 << 20,
    }
}

fn read_plan() -> Vec<ReadPoint> {
    let mut plan: Vec<ReadPoint> = READ_SIZES
        .iter()
        .flat_map(|&size| READ_DEPTHS.iter().map(move |&qd| (size, qd)))
        .chain(FALLBACK_POINTS)
        .map(|(size, qd)| ReadPoint {
            size,
            qd,
            total: read_total(size),
        })
        .collect();
    plan.dedup();
    plan
}

fn size_text(size: u64) -> String {
    if size >= 1 << 20 {
        format!("{} MiB", size >> 20)
    } else {
        format!("{} KiB", size >> 10)
    }
}

/// A long error (with a QEMU log) cut to its first line and its last 30.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 31 {
        return text.to_owned();
    }
    format!(
        "{}\n[...]\n{}",
        lines[0],
        lines[lines.len() - 30..].join("\n")
    )
}

/// Runs `f` and prints the value or the error; `None` on error.
fn attempt<T: std::fmt::Debug>(label: &str, f: impl FnOnce() -> Result<T, String>) -> Option<T> {
    match f() {
        Ok(v) => Some(v),
        Err(e) => {
            println!("  {label}: FAILED: {}", tail(&e));
            None
        }
    }
}

fn figure_a(setup: &Setup, n: usize) -> Row {
    println!(
        "a. wall time, QEMU start to all drivers bound and every device vector delivered \
         (kernels: drivers bound / every vector seen):"
    );
    let kernels = [
        Kernel::FloorPvh,
        Kernel::Ours,
        Kernel::FloorBzImage,
        Kernel::Linux,
    ];
    let mut values: [Vec<f64>; 4] = Default::default();
    // Each kernel's time above the floor of its own loader in the same run (ours, Linux):
    // the floors move by more than the goal's margin between runs.
    let mut paired: [Vec<f64>; 2] = Default::default();
    for run in 1..=n {
        let mut line = format!("  run {run}:");
        let mut this_run = [None; 4];
        for (k, kernel) in kernels.iter().enumerate() {
            if let Some((bound, ready)) =
                attempt(&format!("{kernel:?}"), || runs::wall(setup, *kernel))
            {
                if bound < ready {
                    line += &format!(" {kernel:?} {bound:.3}/{ready:.3} s");
                } else {
                    line += &format!(" {kernel:?} {ready:.3} s");
                }
                values[k].push(ready);
                this_run[k] = Some(ready);
            }
        }
        for (side, (floor, kernel)) in [(0, 1), (2, 3)].into_iter().enumerate() {
            if let (Some(f), Some(k)) = (this_run[floor], this_run[kernel]) {
                paired[side].push(k - f);
            }
        }
        println!("{line}");
    }
    for (name, above) in [("this kernel", &paired[0]), ("Linux", &paired[1])] {
        if let Some(s) = summarize(above) {
            println!(
                "  {name} above the same run's floor: median {:.0} ms ({:.0}..{:.0} ms, n={})",
                s.median * 1e3,
                s.min * 1e3,
                s.max * 1e3,
                s.runs
            );
        }
    }
    let mut row = Row::new(
        "a. wall: QEMU start to all drivers bound, every vector seen",
        Unit::Seconds,
        Goal::WithinOfFloor(WALL_MARGIN),
    );
    row.floor = summarize(&values[0]);
    row.ours = summarize(&values[1]);
    row.linux_floor = summarize(&values[2]);
    row.linux = summarize(&values[3]);
    row.note = Some(
        "floors: first serial byte of a kernel that prints its TSC and exits (PVH for this \
         kernel, bzImage with the same initramfs for Linux); ratio compares time above each floor"
            .to_owned(),
    );
    row
}

fn figure_b(setup: &Setup, n: usize) -> Row {
    println!("b. guest instructions (-icount shift=0,sleep=off), kernel entry to drivers bound:");
    let kernels = [
        Kernel::FloorPvh,
        Kernel::Ours,
        Kernel::FloorBzImage,
        Kernel::Linux,
    ];
    let mut values: [Vec<f64>; 4] = Default::default();
    for run in 1..=n {
        let mut line = format!("  run {run}: TSC");
        for (k, kernel) in kernels.iter().enumerate() {
            if let Some(t) = attempt(&format!("{kernel:?}"), || runs::icount_tsc(setup, *kernel)) {
                line += &format!(" {kernel:?} {t}");
                values[k].push(t as f64);
            }
        }
        println!("{line}");
    }
    let mut row = Row::new(
        "b. instructions: kernel entry to drivers bound",
        Unit::Instructions,
        Goal::BelowAndRatio {
            limit: INSTRUCTION_LIMIT,
            ratio: INSTRUCTION_RATIO,
        },
    );
    row.floor = summarize(&values[0]);
    row.linux_floor = summarize(&values[2]);
    // Each run's TSC at ready minus the median floor of its loader.
    let minus = |v: &[f64], floor: Option<Summary>| -> Vec<f64> {
        floor.map_or_else(Vec::new, |f| v.iter().map(|x| x - f.median).collect())
    };
    row.ours = summarize(&minus(&values[1], row.floor));
    row.linux = summarize(&minus(&values[3], row.linux_floor));
    row.note = Some(
        "TSC at the ready line minus the floor kernel's TSC at its first instruction; this \
         kernel: BOOTBENCH tsc= (drivers bound, self tests done); Linux: /init's `LINUXBENCH \
         bound` (modules loaded, devices up, every queue vector counted)"
            .to_owned(),
    );
    row
}

fn figure_c(setup: &Setup, n: usize) -> Row {
    println!("c. configuration accesses per present function, kernel entry to end of enumeration:");
    let mut ours = Vec::new();
    let mut linux = Vec::new();
    for run in 1..=n {
        for (kernel, values) in [(Kernel::Ours, &mut ours), (Kernel::Linux, &mut linux)] {
            // A trace run is tried twice: QEMU at times ends without writing the whole log.
            if let Some((per, _, what)) = attempt(&format!("{kernel:?}"), || {
                runs::config_accesses(setup, kernel)
                    .or_else(|_| runs::config_accesses(setup, kernel))
            }) {
                println!("  run {run}: {kernel:?}: {per:.1} per function ({what})");
                values.push(per);
            }
        }
    }
    let mut row = Row::new(
        "c. config accesses per present function, to end of enumeration",
        Unit::Count,
        Goal::FractionOfLinux(CONFIG_FRACTION),
    );
    row.ours = summarize(&ours);
    row.linux = summarize(&linux);
    row
}

fn figure_d(setup: &Setup, n: usize) -> Vec<Row> {
    println!("d. sequential reads, data delivered to the caller:");
    let mut ours: Vec<Vec<ReadFigure>> = Vec::new();
    let mut linux: Vec<Vec<ReadFigure>> = Vec::new();
    let mut fallback = false;
    let show = |f: &[ReadFigure]| {
        f.iter()
            .map(|r| {
                format!(
                    "{} {}/QD{} {:.1}",
                    r.disk,
                    size_text(r.size),
                    r.qd,
                    r.mib_per_s
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for run in 1..=n {
        if let Some((f, fell_back)) = attempt("Ours", || runs::ours_reads(setup)) {
            println!("  run {run}: Ours (MiB/s): {}", show(&f));
            fallback |= fell_back;
            ours.push(f);
        }
        if let Some(f) = attempt("Linux", || runs::linux_reads(setup)) {
            println!("  run {run}: Linux (MiB/s): {}", show(&f));
            linux.push(f);
        }
    }
    let values = |all: &[Vec<ReadFigure>], disk: &str, size: u64, qd: u64| -> Vec<f64> {
        all.iter()
            .flatten()
            .filter(|f| f.disk == disk && f.size == size && f.qd == qd)
            .map(|f| f.mib_per_s)
            .collect()
    };
    let mut points: Vec<(String, u64, u64)> = Vec::new();
    for disk in ["nvme", "virtio-blk"] {
        for size in READ_SIZES {
            for qd in READ_DEPTHS {
                points.push((disk.to_owned(), size, qd));
            }
        }
    }
    for f in ours.iter().flatten() {
        let p = (f.disk.clone(), f.size, f.qd);
        if !points.contains(&p) {
            points.push(p);
        }
    }
    points
        .into_iter()
        .map(|(disk, size, qd)| {
            let factor = if size == 4 << 10 && qd == 1 { 2.0 } else { 1.0 };
            let mut row = Row::new(
                format!("d. {disk} read {} QD{qd}", size_text(size)),
                Unit::MibPerSecond,
                Goal::TimesLinux(factor),
            );
            row.ours = summarize(&values(&ours, &disk, size, qd));
            row.linux = summarize(&values(&linux, &disk, size, qd));
            if row.ours.is_none() && fallback {
                row.note = Some(
                    "this kernel has no test=blkbench suite; the figures below come from \
                     test=nvmebench"
                        .to_owned(),
                );
            } else if fallback && !READ_SIZES.contains(&size) {
                row.note = Some(if qd == 1 {
                    "test=nvmebench qd1: 8 KiB commands one at a time, data left in the driver's \
                     DMA buffer"
                        .to_owned()
                } else {
                    "test=nvmebench copy: 8 KiB commands eight at a time, copied out to the \
                     caller's buffer"
                        .to_owned()
                });
            }
            row
        })
        .collect()
}

fn main() -> ExitCode {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let all = ["a", "b", "c", "d"];
    if let Some(bad) = wanted.iter().find(|w| !all.contains(&w.as_str())) {
        eprintln!("linuxbench: unknown figure {bad:?} (figures: a b c d)");
        return ExitCode::FAILURE;
    }
    let want = |f: &str| wanted.is_empty() || wanted.iter().any(|w| w == f);
    let n = match std::env::var("LINUXBENCH_RUNS") {
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("linuxbench: LINUXBENCH_RUNS={v:?} is not a positive number");
                return ExitCode::FAILURE;
            }
        },
        Err(_) => DEFAULT_RUNS,
    };
    let kernel = match qemu_tests::bench_kernel("linuxbench") {
        Ok(kernel) => kernel,
        Err(code) => return code,
    };
    let setup = match runs::prepare(&kernel, &read_plan()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("linuxbench: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "this kernel: {}\nLinux: {} with {}\n{n} interleaved runs per kernel; one QEMU command \
         line for all (q35, 512 MiB, 1 vCPU, TCG, NVMe + virtio-blk + virtio-net + edu):",
        setup.ours.display(),
        setup.linux.vmlinuz.display(),
        setup.initramfs.display()
    );
    match runs::command_line(&setup) {
        Ok(command) => println!("  {command}"),
        Err(e) => println!("  (cannot show it: {e})"),
    }
    let mut rows = Vec::new();
    if want("a") {
        rows.push(figure_a(&setup, n));
    }
    if want("b") {
        rows.push(figure_b(&setup, n));
    }
    if want("c") {
        rows.push(figure_c(&setup, n));
    }
    if want("d") {
        rows.extend(figure_d(&setup, n));
    }
    println!();
    print!("{}", report::table(&rows));
    let (ok, line) = report::verdict(&rows);
    println!("{line}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
