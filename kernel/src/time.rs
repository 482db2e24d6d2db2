//! Time since boot from the time-stamp counter, at a rate the kernel can trust.
//!
//! The TSC (Intel SDM vol. 3B §18.17) counts at a constant rate on every CPU this kernel
//! targets; what it lacks is a stated rate. Sources, in order of preference:
//!
//! 1. CPUID leaf 0x15 (TSC/crystal ratio × crystal Hz, the crystal from the SDM's table by
//!    model or from leaf 0x16 when the leaf leaves it 0), else leaf 0x16 (base MHz), else
//!    the hypervisor leaf 0x4000_0010 ([`cpuid`], SDM vol. 3B §18.7.3). A hypervisor may
//!    pass leaves through that describe the host, not the guest's TSC, so a CPUID figure is
//!    used only if a measured one agrees within 2 % (or nothing can be measured), and the
//!    log says which.
//! 2. Measured against the HPET ([`hpet`], IA-PC HPET 1.0a §2.3), else the ACPI PM timer
//!    ([`pmtimer`], ACPI 6.5 §4.8.3.3), over the boot: each read once by [`calibrate`] and
//!    again by [`finish_calibration`] when the kernel is ready, so the boot's work is the
//!    window and nothing waits (`timekeeping::calibration::span`). A reference whose boot
//!    window cannot be used, and the 8254 PIT ([`pit`]), are measured in
//!    [`measure::WINDOWS`] windows of 2 ms, each reference read bracketed by TSC reads,
//!    slow reads and outliers rejected, the median kept (`timekeeping::calibration`). A second reference, when
//!    there is one, cross-checks the first; when the first two disagree by over 2 % the PIT
//!    is measured too and the figure two sources agree on is taken
//!    (`timekeeping::choice`); a disagreement is reported.
//!
//! Three steps, because the HPET and PM timer are found in the ACPI tables:
//! [`calibrate_early`] at kernel entry against the PIT (four 0.25 ms windows: a provisional
//! rate for the log's timestamps and the boot's timeouts), [`calibrate`] once the tables are
//! read, and [`finish_calibration`] when the kernel is ready. Nothing here panics on bad hardware: a reference that does not
//! count, a PM timer block of 0 or a TSC that does not advance is logged and skipped.
//!
//! Under QEMU's TCG the guest TSC runs at the host's TSC rate while the HPET, PM timer and
//! PIT follow QEMU's virtual clock, so a window in which the vCPU thread lost the host CPU
//! shows as a wide bracket or an outlier and is dropped. QEMU 10's TCG reports leaves 0x15
//! and 0x16 as zero (even with `level=0x16` and `tsc-frequency=`), so there the rate is
//! always measured.

mod cpuid;
mod hpet;
mod measure;
mod pit;
mod pmtimer;

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use boot::BootInfo;
use firmware::tables::{self, Fadt};
use spin::Once;
use timekeeping::calibration::{Estimate, Failure};
use timekeeping::choice::{self, AGREEMENT_PPM, Decision};
use timekeeping::{disagreement_ppm, mhz, percent};

use crate::platform::Platform;

/// Rate assumed when nothing at all can be measured at entry: high, so that waits are
/// never shorter than asked on any TSC up to this rate.
const ASSUMED_HZ: u64 = 4_000_000_000;

/// Windows of the provisional measurement at entry, and their length: short, since the
/// rate only has to carry the boot until [`finish_calibration`] (about 0.5 % is plenty for
/// timeouts and log stamps), and every microsecond here is boot time.
const EARLY_WINDOWS: usize = 4;
const EARLY_WINDOW_US: u64 = 250;

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Set when a measurement found the TSC standing still: waits then poll the PIT.
static TSC_STILL: AtomicBool = AtomicBool::new(false);
/// What [`calibrate_early`] found (logged later by [`calibrate`]: the logger is not up yet).
static EARLY: Once<Result<Estimate, Failure>> = Once::new();

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear in ring 0 anyway.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads the time-stamp counter after every earlier instruction has completed (LFENCE then
/// RDTSC, SDM vol. 2B, RDTSC), so a bracket around a reference read really contains it.
fn rdtsc_ordered() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: LFENCE orders loads and RDTSC reads the counter; neither touches memory or
    // the stack. Every x86_64 processor has both (LFENCE came with SSE2).
    unsafe {
        core::arch::asm!(
            "lfence",
            "rdtsc",
            out("eax") lo,
            out("edx") hi,
            options(nomem, nostack, preserves_flags)
        );
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// TSC ticks since [`mark_boot`] (under QEMU's `-icount shift=0`: guest instructions).
pub fn ticks_since_boot() -> u64 {
    rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed))
}

/// Marks time zero. Called first thing at boot.
pub fn mark_boot() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

/// A provisional TSC rate, measured against the PIT at kernel entry (no allocation, no
/// logging: neither is up yet). Returns it in Hz.
pub fn calibrate_early() -> u64 {
    let result = *EARLY
        .call_once(|| measure::measure_with(&pit::Pit::start(), EARLY_WINDOWS, EARLY_WINDOW_US));
    if result == Err(Failure::TscStill) {
        TSC_STILL.store(true, Ordering::Relaxed);
    }
    let hz = match result {
        Ok(e) if timekeeping::cpuid::plausible(e.hz) => e.hz,
        _ => ASSUMED_HZ,
    };
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// One measured source.
struct Measured {
    name: &'static str,
    estimate: Estimate,
    /// For a measurement over the boot's window, how long the window was, µs.
    lasted_us: Option<u64>,
}

/// Measures against one reference, logging why it could not be used.
fn try_reference(
    name: &'static str,
    reference: Result<&dyn measure::Reference, String>,
) -> Option<Measured> {
    let reference = match reference {
        Ok(r) => r,
        Err(why) => {
            log::info!("{name} not used: {why}");
            return None;
        }
    };
    match measure::measure(reference) {
        Ok(estimate) if timekeeping::cpuid::plausible(estimate.hz) => Some(Measured {
            name,
            estimate,
            lasted_us: None,
        }),
        Ok(estimate) => {
            log::warn!(
                "{name} gives an implausible TSC rate of {} MHz; not used",
                mhz(estimate.hz)
            );
            None
        }
        Err(failure) => {
            if failure == Failure::TscStill {
                TSC_STILL.store(true, Ordering::Relaxed);
            }
            log::warn!("{name} not used: {failure}");
            None
        }
    }
}

/// The FADT, read again from the tables (`platform` keeps only what it needs of it).
fn read_fadt(boot: &BootInfo) -> Result<Fadt, String> {
    let rsdp = boot.rsdp.as_ref().ok_or("the loader gave no RSDP")?;
    let bytes = rsdp.bytes.get(..rsdp.len).unwrap_or(&rsdp.bytes[..20]);
    let mem = &crate::platform::hw::HARDWARE;
    let set = tables::discover(mem, bytes).map_err(|e| alloc::format!("ACPI: {e}"))?;
    let t = set.find(b"FACP").ok_or("no FADT")?;
    let b = tables::read_table(mem, t).map_err(|e| alloc::format!("FADT: {e}"))?;
    Fadt::parse(&b).map_err(|e| alloc::format!("FADT: {e}"))
}

/// Windows and spread of an estimate, for the log.
fn describe(e: &Estimate) -> String {
    let mut s = alloc::format!("{} windows, spread {} %", e.used, percent(e.spread_ppm));
    if e.slow_reads + e.outliers > 0 {
        s.push_str(&alloc::format!(
            " ({} of {} rejected: {} slow reads, {} outliers)",
            e.total - e.used,
            e.total,
            e.slow_reads,
            e.outliers
        ));
    }
    s
}

/// How a source was measured, for the log.
fn describe_measured(m: &Measured) -> String {
    match m.lasted_us {
        Some(us) => alloc::format!(
            "over the boot's {}.{} ms, reads within {} %",
            us / 1000,
            us % 1000 / 100,
            percent(m.estimate.spread_ppm)
        ),
        None => describe(&m.estimate),
    }
}

/// Begins calibrating the TSC with everything the platform offers (see the module
/// documentation): logs the provisional rate and what CPUID says, finds the HPET and the PM
/// timer and reads each once. The boot goes on at the provisional rate, and
/// [`finish_calibration`] reads them again when the kernel is ready: the boot's own work is
/// the calibration window, so nothing waits for it.
pub fn calibrate(boot: &BootInfo, platform: Option<&Platform>) -> Pending {
    match EARLY.get() {
        Some(Ok(e)) => log::info!(
            "provisional TSC rate at entry {} MHz from the PIT, {}",
            mhz(e.hz),
            describe(e)
        ),
        Some(Err(f)) => log::warn!(
            "no provisional TSC rate from the PIT at entry ({f}); assumed {} MHz",
            mhz(ASSUMED_HZ)
        ),
        None => {}
    }
    let facts = cpuid::read();
    log::info!(
        "CPUID max leaf {:#x}, hypervisor {}, invariant TSC {}; {}",
        facts.max_leaf,
        if facts.hypervisor { "yes" } else { "no" },
        if facts.invariant { "yes" } else { "no" },
        facts.claim.as_ref().map_or_else(
            || String::from("no TSC rate from CPUID"),
            |c| alloc::format!("{} says {} MHz", c.source, mhz(c.hz))
        )
    );

    let hpet = match platform.and_then(|p| p.hpet) {
        Some(base) => hpet::Hpet::new(base),
        None => Err(String::from("no HPET in the ACPI tables")),
    };
    let pm = read_fadt(boot).and_then(|fadt| {
        if fadt
            .flags
            .is_some_and(|f| f & tables::fadt::FLAG_HW_REDUCED_ACPI != 0)
            && fadt.pm_timer.is_none()
        {
            return Err(String::from("hardware-reduced ACPI, no PM timer"));
        }
        pmtimer::PmTimer::from_fadt(&fadt).map_err(String::from)
    });
    if let Ok(p) = &pm {
        log::debug!("PM timer at port {:#x}", p.port());
    }
    let started = [
        ("HPET", hpet.map(Started::Hpet)),
        ("PM timer", pm.map(Started::Pm)),
    ]
    .into_iter()
    .filter_map(|(name, r)| match r {
        Ok(r) => {
            let start = measure::tightest(r.reference());
            Some(Span {
                name,
                reference: r,
                start,
            })
        }
        Err(why) => {
            log::info!("{name} not used: {why}");
            None
        }
    })
    .collect();
    Pending {
        facts,
        spans: started,
    }
}

/// A reference timer kept from [`calibrate`] to [`finish_calibration`].
enum Started {
    Hpet(hpet::Hpet),
    Pm(pmtimer::PmTimer),
}

impl Started {
    fn reference(&self) -> &dyn measure::Reference {
        match self {
            Started::Hpet(h) => h,
            Started::Pm(p) => p,
        }
    }
}

/// One reference read at the start of the boot's calibration window.
struct Span {
    name: &'static str,
    reference: Started,
    start: timekeeping::calibration::Reading,
}

/// The calibration in progress: what [`calibrate`] found, for [`finish_calibration`].
pub struct Pending {
    facts: cpuid::Facts,
    spans: Vec<Span>,
}

/// The shortest calibration window [`finish_calibration`] accepts, by the provisional rate:
/// if the boot was quicker, it waits the rest. Over 10 ms the reads' brackets (a
/// microsecond or two) stay near 0.01 %.
const MIN_SPAN_US: u64 = 10_000;

/// Ends the calibration [`calibrate`] began: reads every reference again and takes the TSC
/// rate over the whole window between (`timekeeping::calibration::span`), cross-checked as
/// the module documentation says. A reference whose window cannot be used (it may have
/// wrapped, a read was slow) is measured the old way, in short windows. Logs the result and
/// returns the rate, Hz.
pub fn finish_calibration(pending: Pending) -> u64 {
    let Pending { facts, spans } = pending;
    let provisional = TSC_HZ.load(Ordering::Relaxed).max(1);
    if let Some(first) = spans.first() {
        let lasted = rdtsc().wrapping_sub(first.start.tsc_after);
        let lasted_us = u64::try_from(u128::from(lasted) * 1_000_000 / u128::from(provisional))
            .unwrap_or(u64::MAX);
        if lasted_us < MIN_SPAN_US {
            busy_wait_us(MIN_SPAN_US - lasted_us);
        }
    }
    let mut measured: Vec<Measured> = Vec::new();
    for span in &spans {
        let reference = span.reference.reference();
        let window = timekeeping::calibration::Window {
            start: span.start,
            end: measure::tightest(reference),
        };
        match timekeeping::calibration::span(&window, &reference.counter(), provisional) {
            Ok(estimate) if timekeeping::cpuid::plausible(estimate.hz) => {
                measured.push(Measured {
                    name: span.name,
                    estimate,
                    lasted_us: Some(
                        u64::try_from(
                            u128::from(window.end.tsc_after.wrapping_sub(window.start.tsc_before))
                                * 1_000_000
                                / u128::from(estimate.hz.max(1)),
                        )
                        .unwrap_or(u64::MAX),
                    ),
                });
            }
            Ok(estimate) => log::warn!(
                "{} gives an implausible TSC rate of {} MHz over the boot; not used",
                span.name,
                mhz(estimate.hz)
            ),
            Err(why) => {
                log::info!(
                    "{}: the boot's window is not usable ({why}); measuring in windows",
                    span.name
                );
                measured.extend(try_reference(span.name, Ok(reference)));
            }
        }
    }
    drop(spans);
    // The PIT decides when there is no second source or the first two disagree.
    let rates = |m: &[Measured]| m.iter().map(|m| m.estimate.hz).collect::<Vec<u64>>();
    let first_two_agree = measured.len() >= 2
        && disagreement_ppm(measured[1].estimate.hz, measured[0].estimate.hz) <= AGREEMENT_PPM;
    if !first_two_agree {
        let pit = pit::Pit::start();
        measured.extend(try_reference("PIT", Ok(&pit)));
    }

    let claim = facts.claim.as_ref();
    let hz = match choice::decide(claim.map(|c| c.hz), &rates(&measured)) {
        Decision::Cpuid {
            hz,
            confirmed_by: Some((i, ppm)),
        } => {
            let m = &measured[i];
            log::info!(
                "TSC: {} MHz from {}, {} agrees within {} % ({} MHz, {})",
                mhz(hz),
                claim.map_or("CPUID", |c| c.source.as_str()),
                m.name,
                percent(ppm),
                mhz(m.estimate.hz),
                describe_measured(m)
            );
            hz
        }
        Decision::Cpuid {
            hz,
            confirmed_by: None,
        } => {
            log::warn!(
                "TSC: {} MHz from {}, not cross-checked (no reference timer works)",
                mhz(hz),
                claim.map_or("CPUID", |c| c.source.as_str())
            );
            hz
        }
        Decision::Measured {
            hz,
            source,
            cpuid_off_ppm,
            confirmed_by,
        } => {
            let m = &measured[source];
            if let (Some(c), Some(off)) = (claim, cpuid_off_ppm) {
                log::warn!(
                    "{} claims {} MHz but the {} measures {} MHz (off by {} %){}: CPUID not \
                     trusted",
                    c.source,
                    mhz(c.hz),
                    m.name,
                    mhz(hz),
                    percent(off),
                    if facts.hypervisor {
                        " under a hypervisor, which may describe the host's processor"
                    } else {
                        ""
                    }
                );
            }
            let check = match confirmed_by {
                Some((j, ppm)) => {
                    alloc::format!("{} agrees within {} %", measured[j].name, percent(ppm))
                }
                None if measured.len() > 1 => {
                    let others: Vec<String> = measured
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != source)
                        .map(|(_, o)| {
                            alloc::format!(
                                "{} {} MHz, off by {} %",
                                o.name,
                                mhz(o.estimate.hz),
                                percent(disagreement_ppm(o.estimate.hz, hz))
                            )
                        })
                        .collect();
                    alloc::format!("NO second source agrees ({})", others.join("; "))
                }
                None => String::from("no second source to cross-check"),
            };
            let line = alloc::format!(
                "TSC: {} MHz from {}, {}, {}",
                mhz(hz),
                m.name,
                describe_measured(m),
                check
            );
            if confirmed_by.is_none() && measured.len() > 1 {
                log::warn!("{line}");
            } else {
                log::info!("{line}");
            }
            hz
        }
        Decision::Nothing => {
            let hz = TSC_HZ.load(Ordering::Relaxed);
            if TSC_STILL.load(Ordering::Relaxed) {
                log::error!(
                    "TSC: the time-stamp counter does not advance; waits poll the PIT \
                     instead and timestamps are meaningless"
                );
                return hz;
            }
            log::error!(
                "TSC: no CPUID rate and no reference timer works; keeping {} MHz from {}",
                mhz(hz),
                if matches!(EARLY.get(), Some(Ok(_))) {
                    "the PIT at entry"
                } else {
                    "an assumption"
                }
            );
            return hz;
        }
    };
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// Measured TSC rate, Hz (provisional until [`calibrate`]; 0 before [`calibrate_early`]).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// TSC ticks in `us` microseconds, or `None` while the TSC cannot measure time (before
/// [`calibrate_early`], or when it was found standing still).
pub fn tsc_ticks_in_us(us: u64) -> Option<u64> {
    let hz = tsc_hz();
    if hz == 0 || TSC_STILL.load(Ordering::Relaxed) {
        return None;
    }
    Some(((u128::from(us) * u128::from(hz)) / 1_000_000).min(u128::from(u64::MAX)) as u64)
}

/// Microseconds since [`mark_boot`] (0 before calibration).
pub fn micros_since_boot() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return 0;
    }
    let delta = rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed));
    ((delta as u128) * 1_000_000 / hz as u128) as u64
}

/// Spins for at least `us` microseconds (never returns early; bounded by the TSC, or by
/// the PIT if the TSC was found standing still).
pub fn busy_wait_us(us: u64) {
    if TSC_STILL.load(Ordering::Relaxed) {
        pit_wait_us(us);
        return;
    }
    let hz = tsc_hz().max(1_000_000);
    let ticks = us.saturating_mul(hz / 1_000_000);
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// Waits `us` microseconds by polling PIT channel 0 (left free-running by the calibration),
/// adding up wrap-aware deltas. Bounded by a number of reads in case the PIT is not there
/// either (a read takes about a microsecond or more).
fn pit_wait_us(us: u64) {
    let pit = pit::Pit::running();
    let counter = timekeeping::counter::Counter::pit();
    let target = counter.ticks_in_us(us);
    let max_polls = us.saturating_mul(4).saturating_add(1_000);
    let mut last = measure::Reference::read(&pit);
    let mut elapsed = 0u64;
    let mut polls = 0u64;
    while elapsed < target && polls < max_polls {
        let now = measure::Reference::read(&pit);
        elapsed += counter.delta(last, now);
        last = now;
        polls += 1;
    }
}
