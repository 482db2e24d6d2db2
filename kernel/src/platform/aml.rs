//! The AML namespace, loaded once through the `firmware` crate (ACPICA), after PCI
//! configuration access is set up (AML reads PCI configuration space).
//!
//! Everything the kernel asks of AML is answered during that one load (host bridges, every
//! `_PRT` entry resolved to a GSI, `_OSC`, `\_S5`) and kept in an [`AmlReport`]; nothing
//! runs AML afterwards. Loading is bounded in time and cannot stop the boot: whatever fails
//! is logged, and the kernel carries on with what it learned (or with no AML at all).
//!
//! When: on first need. Loading the namespace is most of a boot's work (about 16 M guest
//! instructions for QEMU's q35 DSDT, against 7 M for everything else from kernel entry to
//! bound drivers), and most boots need none of its answers to bind their drivers: the MCFG
//! names the root buses, and devices with MSI or MSI-X need no `_PRT`. So [`prepare`] only
//! notes the platform, and [`report`] loads when something asks: an INTx route, a hot-plug
//! port (`_OSC`), `poweroff` (`\_S5`), a machine without MCFG (whose root buses and ECAM
//! window only AML knows). Once the boot's drivers are bound, the kernel asks whether AML
//! names host bridges that the MCFG's roots did not reach ([`late_host_bridges`]), so that a
//! multi-root machine ends with everything bound before the first prompt. The definition
//! blocks' bytes answer first ([`firmware::aml::scan`]): when they name no more devices that
//! can be host bridges than the MCFG gave root buses, and load no tables at run time, there
//! is nothing to find and AML stays unloaded until something needs it. Otherwise the kernel
//! loads it and walks the host bridges it names. (The bytes cannot see a host bridge whose
//! ID AML computes at run time; such a bridge is found only when AML is loaded for another
//! reason.)

use alloc::vec::Vec;

use ::firmware::aml::{self, AmlReport, Budget, IsaOverride, LoadOptions};
use spin::Once;

use super::Platform;
use super::roots::RootBus;

static REPORT: Once<Option<AmlReport>> = Once::new();
/// The platform [`report`] loads AML for (set by [`prepare`]).
static PLATFORM: Once<&'static Platform> = Once::new();

/// Notes the platform whose AML [`report`] loads when first asked.
pub fn prepare(platform: &'static Platform) {
    PLATFORM.call_once(|| platform);
}

/// What AML said, loading it first if nothing asked before (`None` when AML is
/// unavailable: no ACPI, or loading failed).
pub fn report() -> Option<&'static AmlReport> {
    if let Some(done) = REPORT.get() {
        return done.as_ref();
    }
    load(PLATFORM.get()?)
}

/// Whether AML was loaded (or tried).
pub fn loaded() -> bool {
    REPORT.is_completed()
}

/// Loads AML if nothing needed it during the boot, then walks (and, with `bind`, offers to
/// the drivers) what is below host bridges AML names that the boot's roots did not reach.
/// Returns how many functions were added.
pub fn late_host_bridges(boot_roots: &[RootBus], bind: bool) -> usize {
    let started = crate::time::ticks_since_boot();
    let was_loaded = loaded();
    if !was_loaded
        && let Some(scan) = PLATFORM.get().and_then(|p| p.aml_scan)
        && !scan.loads_tables
        && scan.host_bridges <= boot_roots.len()
    {
        log::info!(
            "acpi: the AML's bytes name {} device(s) that can be host bridges and load no tables, the MCFG gave {} root bus(es): AML left until something needs it",
            scan.host_bridges,
            boot_roots.len()
        );
        return 0;
    }
    let Some(report) = report() else {
        return 0;
    };
    let all = roots(report);
    let extra: Vec<RootBus> = all
        .iter()
        .filter(|r| !boot_roots.contains(r))
        .copied()
        .collect();
    let added = crate::pcibus::add_roots(&extra);
    for address in added.iter().filter(|_| bind) {
        if let Err(e) = crate::bus::bind(*address) {
            if !e.starts_with("no driver for") {
                log::warn!("{e}");
            }
        } else {
            log::info!("bound {address} below a host bridge AML named");
        }
    }
    if !was_loaded {
        log::info!(
            "acpi: AML loaded after the boot's drivers were bound ({} TSC ticks): {} host bridge(s), {} root bus(es) the MCFG did not give, {} function(s) added",
            crate::time::ticks_since_boot().saturating_sub(started),
            report.host_bridges.len(),
            extra.len(),
            added.len()
        );
    }
    added.len()
}

/// Loads the namespace and resolves what the kernel needs. Call once, after `pcie::init`.
///
/// ACPICA runs inside a recovery point ([`crate::cpu::recover::contain`]): a CPU exception or
/// a panic while it interprets firmware's AML abandons AML (never to be called again: its
/// state is not trusted after a fault), and the kernel boots on without it.
pub fn load(platform: &Platform) -> Option<&'static AmlReport> {
    REPORT
        .call_once(|| {
            let loaded = crate::cpu::recover::contain(|| load_contained(platform));
            loaded
                .map_err(|fault| {
                    log::error!(
                        "acpi: AML abandoned: {fault} while ACPICA ran firmware's AML; \
                         continuing without AML (no _PRT routing: INTx by Interrupt Line)"
                    );
                })
                .ok()
        })
        .as_ref()
}

fn load_contained(platform: &Platform) -> AmlReport {
    let options = LoadOptions {
        budget: Budget { ms: 2000 },
        total: Budget { ms: 6000 },
        overrides: platform
            .overrides
            .iter()
            .map(|o| IsaOverride {
                source: o.isa_irq,
                gsi: o.gsi,
            })
            .collect(),
        loop_seconds: 1,
        // A quarter of what the heap has free: a table declaring huge buffers fails its
        // load, and the kernel keeps the rest (ACPICA's namespace stays allocated).
        max_bytes: crate::memory::heap::usage().1 as u64 / 4,
    };
    let started = crate::time::micros_since_boot();
    let report = aml::load(&super::hw::HARDWARE, platform.rsdp_phys, &options);
    let took = crate::time::micros_since_boot().saturating_sub(started);
    log::info!(
        "acpi: AML: {} table(s) loaded, {} failed, namespace {}, APIC mode {}, {} host bridge(s), {} us",
        report.tables_loaded,
        report.tables_failed,
        if report.namespace_initialised {
            "initialised"
        } else {
            "NOT initialised"
        },
        if report.apic_mode { "on" } else { "off" },
        report.host_bridges.len(),
        took
    );
    for b in &report.host_bridges {
        match &b.prt {
            Ok(routes) => log::info!(
                "acpi: host bridge {}: segment {}, bus {:#04x}{}, {} _PRT route(s)",
                b.path,
                b.segment,
                b.bus,
                b.bus_end
                    .map(|e| alloc::format!("-{e:#04x}"))
                    .unwrap_or_default(),
                routes.len()
            ),
            Err(e) => log::warn!("acpi: host bridge {}: _PRT not usable: {e}", b.path),
        }
        log::info!("acpi: host bridge {}: {}", b.path, b.osc);
        if !b.osc.native_hot_plug() {
            drivers::pciehp::firmware_keeps(
                b.segment,
                b.bus,
                b.bus_end.unwrap_or(0xff),
                alloc::format!("{}: {}", b.path, b.osc),
            );
        }
        for r in b.prt.iter().flatten() {
            log::debug!(
                "acpi: {} device {:#04x} INT{} -> GSI {} ({:?}, {:?})",
                b.path,
                r.device,
                (b'A' + r.pin) as char,
                r.gsi,
                r.polarity,
                r.trigger
            );
        }
    }
    report
}

/// Root buses from the report, sorted, without duplicates.
pub fn roots(report: &AmlReport) -> Vec<RootBus> {
    // Host bridges no MCFG entry covers may still say where their ECAM window is.
    crate::pcie::discover(&report.host_bridges);
    let mut roots: Vec<RootBus> = report
        .host_bridges
        .iter()
        .map(|b| RootBus {
            segment: b.segment,
            bus: b.bus,
        })
        .collect();
    roots.sort_unstable();
    roots.dedup();
    roots
}
