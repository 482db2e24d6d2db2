//! The kernel's TSC rate checked against the host's.
//!
//! Under QEMU's TCG the guest's TSC is the host's TSC, so the rate the kernel logs
//! (`TSC: <MHz> MHz from <source>, ...`) must match the host's TSC rate, which this test
//! measures itself: `rdtsc` across a 200 ms sleep, timed by the host's monotonic clock,
//! five times, median. Each boot must land within 10 %; the kernel is booted
//! [`Q35_BOOTS`] times on q35 (override with `TSC_BOOTS=<n>`), and once on pc and on
//! microvm (which has neither HPET nor PM timer, so its figure comes from the PIT alone),
//! and once on q35 with `hpet=off` (the PM timer, cross-checked by the PIT). Where two
//! reference timers exist the log must also say that the second source agrees.

use std::time::{Duration, Instant};

use qemu_tests::{Machine, Outcome, Qemu, check, ensure, kernel_elf, qemu_or_skip, say};

/// Boots on q35 in the suite.
const Q35_BOOTS: usize = 5;
/// Largest allowed distance from the host's rate, parts per million.
const TOLERANCE_PPM: f64 = 100_000.0;
/// Host measurement: samples and sleep per sample.
const HOST_SAMPLES: usize = 5;
const HOST_SLEEP: Duration = Duration::from_millis(200);

/// The host's TSC rate, Hz: the median of [`HOST_SAMPLES`] rdtsc deltas over
/// [`HOST_SLEEP`], each divided by the elapsed monotonic time.
fn host_tsc_hz() -> f64 {
    let mut rates: Vec<f64> = (0..HOST_SAMPLES)
        .map(|_| {
            let t0 = Instant::now();
            // SAFETY: RDTSC only reads the time-stamp counter; user mode may (CR4.TSD clear
            // on Linux).
            let c0 = unsafe { core::arch::x86_64::_rdtsc() };
            std::thread::sleep(HOST_SLEEP);
            // SAFETY: as above.
            let c1 = unsafe { core::arch::x86_64::_rdtsc() };
            let elapsed = t0.elapsed();
            c1.wrapping_sub(c0) as f64 / elapsed.as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// What the kernel's final TSC line says.
#[derive(Debug)]
struct TscLine {
    mhz: f64,
    source: String,
    line: String,
}

/// Finds `TSC: <MHz> MHz from <source>` in the serial log.
fn tsc_line(serial: &str) -> Result<TscLine, String> {
    let line = serial
        .lines()
        .find(|l| l.contains("TSC: ") && l.contains(" MHz from "))
        .ok_or("no `TSC: <MHz> MHz from <source>` line")?;
    let rest = &line[line.find("TSC: ").expect("found above") + 5..];
    let (number, after) = rest
        .split_once(" MHz from ")
        .ok_or_else(|| format!("malformed TSC line: {line}"))?;
    let mhz = number
        .trim()
        .parse::<f64>()
        .map_err(|e| format!("TSC figure {number:?} is not a number ({e}): {line}"))?;
    let source = after
        .split([',', ' '])
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(TscLine {
        mhz,
        source,
        line: line.trim().to_owned(),
    })
}

/// One boot to check.
struct Scenario<'a> {
    name: &'a str,
    machine: Machine,
    /// More QEMU arguments.
    args: &'a [&'a str],
    /// Whether two reference timers exist, so the line must report an agreeing second one.
    cross_checked: bool,
    /// The source the line must name, when the machine leaves no choice.
    source: Option<&'a str>,
}

/// Boots to `kernel ready` and checks the TSC line against `host_hz`. Returns the kernel's
/// figure, MHz.
#[track_caller]
fn boot_and_check(scenario: &Scenario<'_>, host_hz: f64) -> f64 {
    let name = scenario.name;
    let qemu = Qemu::kernel(kernel_elf(), "log=info")
        .machine(scenario.machine)
        .memory_mib(256)
        .args(scenario.args)
        .timeout(Duration::from_secs(60));
    let (outcome, marker): (Outcome, _) = qemu
        .run_until("kernel ready")
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    let mut figure = 0.0;
    check(name, &outcome, |_, report| {
        ensure!(marker.is_some(), "no `kernel ready` line");
        ensure!(report.panic.is_none(), "the kernel panicked");
        let tsc = tsc_line(&outcome.serial)?;
        let off_ppm = (tsc.mhz * 1e6 - host_hz).abs() / host_hz * 1e6;
        say(&format!(
            "{name}: kernel {:.1} MHz from {}, host {:.1} MHz, off by {:.2} %",
            tsc.mhz,
            tsc.source,
            host_hz / 1e6,
            off_ppm / 1e4
        ));
        ensure!(
            off_ppm <= TOLERANCE_PPM,
            "kernel TSC {:.1} MHz is {:.1} % from the host's {:.1} MHz (limit 10 %): {}",
            tsc.mhz,
            off_ppm / 1e4,
            host_hz / 1e6,
            tsc.line
        );
        if let Some(source) = scenario.source {
            ensure!(
                tsc.source == source,
                "expected the figure from {source}, the kernel took it from {}: {}",
                tsc.source,
                tsc.line
            );
        }
        if scenario.cross_checked {
            ensure!(
                tsc.line.contains("agrees within"),
                "two reference timers exist, but the line reports no agreeing second \
                 source: {}",
                tsc.line
            );
        }
        figure = tsc.mhz;
        Ok(())
    });
    figure
}

#[test]
fn tsc_line_parses() {
    let t = tsc_line(
        "[    0.1] INFO  kernel::time: TSC: 2445.1 MHz from HPET, 7 windows, spread 0.3 %\n",
    )
    .expect("parses");
    assert_eq!(t.mhz, 2445.1);
    assert_eq!(t.source, "HPET");
    assert!(tsc_line("[0.1] INFO  kernel: TSC (provisional): 2445 MHz\n").is_err());
    assert!(tsc_line("TSC: fast MHz from HPET\n").is_err());
}

#[test]
fn tsc_matches_host() {
    if !qemu_or_skip("tsc_matches_host") {
        return;
    }
    let boots = std::env::var("TSC_BOOTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(Q35_BOOTS);
    let host = host_tsc_hz();
    say(&format!("host TSC: {:.1} MHz", host / 1e6));
    let mut figures = Vec::new();
    for i in 0..boots {
        let name = format!("q35 #{}", i + 1);
        figures.push(boot_and_check(
            &Scenario {
                name: &name,
                machine: Machine::Q35,
                args: &[],
                cross_checked: true,
                source: None,
            },
            host,
        ));
    }
    for scenario in [
        Scenario {
            name: "pc",
            machine: Machine::Pc,
            args: &[],
            cross_checked: true,
            source: None,
        },
        Scenario {
            name: "q35 hpet=off",
            machine: Machine::Q35,
            args: &["-machine", "hpet=off"],
            cross_checked: true,
            // Under TCG CPUID states no TSC rate, and without an HPET the PM timer leads.
            source: Some("PM"),
        },
        Scenario {
            name: "microvm",
            machine: Machine::Microvm,
            args: &[],
            cross_checked: false,
            source: Some("PIT"),
        },
    ] {
        boot_and_check(&scenario, host);
    }
    let (lo, hi) = figures
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), f| (lo.min(*f), hi.max(*f)));
    say(&format!(
        "q35: {boots} boots between {lo:.1} and {hi:.1} MHz (host {:.1} MHz)",
        host / 1e6
    ));
}
