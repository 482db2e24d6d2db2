//! PCI configuration-access benchmark: boots the kernel with `test=pci` on topology (b) (or
//! the one named on the command line, `a`..`d`), prints the kernel's `PCISTATS` (reads and
//! writes, in total and per function) and cross-checks them against QEMU's own trace of the
//! guest's configuration accesses.
//!
//! QEMU runs with `-trace memory_region_ops_read -trace memory_region_ops_write -trace
//! pci_cfg_read -trace pci_cfg_write -trace serial_write -D <log>` (see
//! `qemu_tests::cfgtrace`): raw ECAM / port 0xCFC accesses including probes of absent
//! functions, the accesses that reached a device model, and the serial output in the same
//! order, so that each access is placed between two of the kernel's serial lines. The
//! firmware's accesses (before the PVH option ROM's last `fw_cfg` access, which loads and
//! starts the kernel) are counted separately. The cross-check looks for the shortest run of
//! consecutive serial lines between which QEMU saw exactly the kernel's `reads` and `writes`
//! (the kernel enumerates without printing, then logs a summary line), and prints which lines
//! bracket it; no such window is a failure (exit code 1).
//!
//! Run with `cargo run --release -p qemu-tests --bin pcibench [-- <topology>]`.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use qemu_tests::cfgtrace::{Counts, Trace, WindowCounts};
use qemu_tests::pci::PciAddress;
use qemu_tests::qmp::QemuPciFunction;
use qemu_tests::topology::{
    PCI_CMDLINE, PCI_MEMORY_MIB, Q35_DEVICES, Scratch, TOPOLOGIES, Topology, check_pci_run,
    run_pci, topology,
};

/// Tracing every MMIO access slows QEMU down; leave it plenty of time.
const TIMEOUT: Duration = Duration::from_secs(300);
const TRACE_EVENTS: [&str; 5] = [
    "memory_region_ops_read",
    "memory_region_ops_write",
    "pci_cfg_read",
    "pci_cfg_write",
    "serial_write",
];
/// Width of the label column of the tables.
const LABEL_WIDTH: usize = 76;

/// `line` cut to `width` characters.
fn short(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        line.to_owned()
    } else {
        let cut: String = line.chars().take(width.saturating_sub(3)).collect();
        format!("{cut}...")
    }
}

fn row(label: &str, w: &WindowCounts) -> String {
    format!(
        "  {:<LABEL_WIDTH$} {:>6} {:>6} {:>6} {:>6}",
        short(label, LABEL_WIDTH),
        w.raw.reads,
        w.raw.writes,
        w.device.reads,
        w.device.writes
    )
}

/// The kernel's log timestamp (`[    0.110102] ...`) in seconds.
fn timestamp(line: &str) -> Option<f64> {
    line.trim_start()
        .strip_prefix('[')?
        .split_once(']')?
        .0
        .trim()
        .parse()
        .ok()
}

fn per_function(window: &WindowCounts, qemu: &[QemuPciFunction]) {
    println!(
        "  {:<13} {:<9} {:<24} {:>6} {:>6} {:>6} {:>6}",
        "function", "ids", "what", "raw r", "raw w", "dev r", "dev w"
    );
    let mut absent = Counts::default();
    let mut absent_functions = 0;
    let mut present = Counts::default();
    for (address, raw) in &window.raw_by_function {
        let device = window
            .device_by_function
            .get(address)
            .copied()
            .unwrap_or_default();
        match qemu.iter().find(|q| q.address == *address) {
            Some(q) => {
                present.reads += raw.reads;
                present.writes += raw.writes;
                let what = q
                    .class_desc
                    .clone()
                    .unwrap_or_else(|| format!("class {:04x}", q.class));
                println!(
                    "  {:<13} {:04x}:{:04x} {:<24} {:>6} {:>6} {:>6} {:>6}",
                    address.to_string(),
                    q.vendor,
                    q.device,
                    short(&what, 24),
                    raw.reads,
                    raw.writes,
                    device.reads,
                    device.writes
                );
            }
            None => {
                absent.reads += raw.reads;
                absent.writes += raw.writes;
                absent_functions += 1;
            }
        }
    }
    let functions = window
        .raw_by_function
        .keys()
        .filter(|a| qemu.iter().any(|q| q.address == **a))
        .count()
        .max(1) as f64;
    println!(
        "  present functions: {} reads, {} writes ({:.1} reads and {:.1} writes per function)",
        present.reads,
        present.writes,
        present.reads as f64 / functions,
        present.writes as f64 / functions
    );
    println!(
        "  absent functions (probes that read all ones): {} reads, {} writes on {} addresses",
        absent.reads, absent.writes, absent_functions
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let topology: &Topology = match args.as_slice() {
        [] => &Q35_DEVICES,
        [name] => match topology(name) {
            Some(t) => t,
            None => {
                let names: Vec<_> = TOPOLOGIES.iter().map(|t| t.name).collect();
                eprintln!("pcibench: unknown topology {name:?} (one of {names:?})");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("usage: pcibench [topology: a|b|c|d]");
            return ExitCode::FAILURE;
        }
    };
    let kernel = match qemu_tests::bench_kernel("pcibench") {
        Ok(kernel) => kernel,
        Err(code) => return code,
    };
    let scratch = match Scratch::new("pcibench") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pcibench: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log_path = scratch.path().join("trace.log");
    let mut extra: Vec<OsString> = Vec::new();
    for event in TRACE_EVENTS {
        extra.push("-trace".into());
        extra.push(event.into());
    }
    extra.push("-D".into());
    extra.push(log_path.clone().into_os_string());

    println!(
        "PCI config-access benchmark: topology {} ({}), PVH, {} MiB, cmdline {PCI_CMDLINE:?}",
        topology.name, topology.description, PCI_MEMORY_MIB
    );
    println!("kernel: {}", kernel.display());
    println!("QEMU trace events: {}", TRACE_EVENTS.join(", "));
    let run = match run_pci(topology, &kernel, &extra, TIMEOUT) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("pcibench: cannot run QEMU: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(stats) = run.kernel.stats.clone() else {
        eprintln!(
            "pcibench: the kernel printed no PCISTATS line\n{}",
            run.outcome.log()
        );
        return ExitCode::FAILURE;
    };
    let qemu = match &run.qemu {
        Ok(q) => q.clone(),
        Err(e) => {
            eprintln!("pcibench: {e}\n{}", run.outcome.log());
            return ExitCode::FAILURE;
        }
    };
    match check_pci_run(topology, &run) {
        Ok(check) => println!("enumeration check: ok ({})", check.summary),
        Err(e) => println!("enumeration check: FAILED (the counts below are still valid)\n{e}"),
    }

    let functions = stats.functions.max(1) as f64;
    println!();
    println!(
        "kernel PCISTATS: functions={} reads={} writes={} -> {:.1} reads and {:.1} writes per \
         present function",
        stats.functions,
        stats.reads,
        stats.writes,
        stats.reads as f64 / functions,
        stats.writes as f64 / functions
    );
    for (key, value) in &stats.extra {
        println!("  {key}={value}");
    }

    let text = match std::fs::read_to_string(&log_path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "pcibench: cannot read the trace {}: {e}",
                log_path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let trace = Trace::parse(&text);
    if !trace.unparsed.is_empty() {
        println!(
            "warning: {} trace lines not understood, e.g. {:?}",
            trace.unparsed.len(),
            trace.unparsed[0]
        );
    }
    let Some((hold_event, _)) = trace.line_event("PCI HOLD", 0) else {
        eprintln!(
            "pcibench: `PCI HOLD` is not in the serial output rebuilt from the trace ({} bytes); \
             is the `serial_write` trace event available?",
            trace.serial.len()
        );
        return ExitCode::FAILURE;
    };

    println!();
    println!(
        "configuration accesses QEMU saw (raw: every ECAM or port-0xCFC access, absent \
         functions included; dev: accesses that reached a present function's model):"
    );
    println!(
        "  {:<LABEL_WIDTH$} {:>6} {:>6} {:>6} {:>6}",
        "where", "raw r", "raw w", "dev r", "dev w"
    );
    println!(
        "{}",
        row(
            "firmware (SeaBIOS and the PVH option ROM, until the last fw_cfg access)",
            &trace.count(0, trace.kernel_start)
        )
    );
    let segments = trace.segments();
    let before_hold: Vec<_> = segments
        .iter()
        .filter(|s| s.from < hold_event)
        .cloned()
        .collect();
    for segment in &before_hold {
        let counts = trace.count(segment.from, segment.to);
        if counts.raw.total() == 0 {
            continue;
        }
        let label = segment.line.as_deref().map_or_else(
            || "kernel, after its last line".to_owned(),
            |l| format!("kernel, up to `{l}`"),
        );
        println!("{}", row(&label, &counts));
    }
    let kernel_total = trace.count(trace.kernel_start, hold_event);
    println!(
        "{}",
        row("kernel in total, until `PCI HOLD`", &kernel_total)
    );
    if kernel_total.port.total() > 0 && kernel_total.ecam.total() > 0 {
        println!(
            "  (kernel: {} ECAM accesses, {} through ports 0xCF8/0xCFC)",
            kernel_total.ecam.total(),
            kernel_total.port.total()
        );
    }

    println!();
    let found = trace.find_window(&before_hold, stats.reads, stats.writes);
    let Some((first, last)) = found else {
        println!(
            "cross-check: FAILED: no stretch of the kernel's run between two serial lines has \
             exactly reads={} writes={} (the kernel's PCISTATS). Either the kernel miscounts, \
             or its enumeration is not delimited by serial output (see the table above).",
            stats.reads, stats.writes
        );
        return ExitCode::FAILURE;
    };
    let start_line = first
        .checked_sub(1)
        .and_then(|i| before_hold[i].line.as_deref());
    let end_line = before_hold[last].line.as_deref();
    let quote =
        |l: Option<&str>, none: &str| l.map_or_else(|| none.to_owned(), |l| format!("`{l}`"));
    println!(
        "cross-check: ok: QEMU saw exactly reads={} writes={} = the kernel's PCISTATS,\n  \
         after {}\n  up to {}",
        stats.reads,
        stats.writes,
        quote(start_line, "the kernel's start"),
        quote(end_line, "the end")
    );
    if let (Some(t0), Some(t1)) = (start_line.and_then(timestamp), end_line.and_then(timestamp)) {
        let total = (stats.reads + stats.writes).max(1) as f64;
        println!(
            "  guest time between these lines (the kernel's log timestamps, TCG): {:.1} ms, \
             {:.2} us per access",
            (t1 - t0) * 1e3,
            (t1 - t0) * 1e6 / total
        );
    }
    let window = trace.count(before_hold[first].from, before_hold[last].to);
    let present: Vec<PciAddress> = qemu.iter().map(|q| q.address).collect();
    let listed = window
        .raw_by_function
        .keys()
        .filter(|a| present.contains(a))
        .count();
    if listed != qemu.len() {
        println!(
            "  note: the window touches {listed} of QEMU's {} functions",
            qemu.len()
        );
    }
    println!();
    println!("per function, in that window:");
    per_function(&window, &qemu);
    println!();
    println!(
        "the kernel's other configuration accesses until `PCI HOLD` (ACPI/AML, tests): {} \
         reads, {} writes",
        kernel_total.raw.reads - window.raw.reads,
        kernel_total.raw.writes - window.raw.writes
    );
    ExitCode::SUCCESS
}
