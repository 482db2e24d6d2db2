//! The AML namespace, loaded once at boot through the `firmware` crate (ACPICA), after PCI
//! configuration access is set up (AML reads PCI configuration space).
//!
//! Everything the kernel asks of AML is answered during that one load (host bridges, every
//! `_PRT` entry resolved to a GSI, `\_S5`) and kept in an [`AmlReport`]; nothing runs AML
//! afterwards. Loading is bounded in time and cannot stop the boot: whatever fails is
//! logged, and the kernel carries on with what it learned (or with no AML at all).

use alloc::vec::Vec;

use ::firmware::aml::{self, AmlReport, Budget, IsaOverride, LoadOptions};
use spin::Once;

use super::Platform;
use super::roots::RootBus;

static REPORT: Once<Option<AmlReport>> = Once::new();

/// What AML said (after [`load`]; `None` when AML is unavailable).
pub fn report() -> Option<&'static AmlReport> {
    REPORT.get().and_then(Option::as_ref)
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
