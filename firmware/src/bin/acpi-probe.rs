//! `acpi-probe [--acpica-memory BYTES] FILE`: what the kernel would learn from a real
//! machine's firmware (ACPICA allowed at most BYTES at once, 256 MiB by default, as the
//! kernel gives it a share of its heap).
//!
//! Design: FILE is `acpidump` text, plain or gzipped (recognised by the gzip magic bytes
//! 1f 8b, not by the name). The MADT, MCFG, FADT, HPET, DMAR and IVRS are decoded from the dump's bytes
//! by [`firmware::tables`]; the AML namespace, host bridges and `_PRT` routes come from the
//! AML layer. The result is ONE JSON object on stdout, and the exit status is 0 whenever the
//! file is an acpidump, however broken its tables are (a table that cannot be parsed becomes
//! `{"error": "..."}` in its place). Exit status 2, with a message on stderr, means the file
//! could not be read or holds no ACPI table at all.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use firmware::aml::{AmlReport, HostBridge, IsaOverride, Polarity, Route, RouteSource, Trigger};
use firmware::dump::{self, Dump, DumpedTable};
use firmware::tables::dmar::{DeviceScope, ScopeKind};
use firmware::tables::ivrs::SpecialKind;
use firmware::tables::madt::{InterruptPolarity, InterruptTrigger};
use firmware::tables::{Dmar, Fadt, GenericAddress, Hpet, Ivrs, Madt, Mcfg};
use serde_json::{Value, json};

/// Largest decompressed dump accepted (the largest real one is a few MB).
const MAX_TEXT: u64 = 256 << 20;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let usage = || {
        eprintln!(
            "usage: acpi-probe [--acpica-memory BYTES] FILE   (acpidump text, plain or gzipped)"
        );
        ExitCode::from(2)
    };
    let (max_bytes, path) = match args.as_slice() {
        [path] => (firmware::aml::os::MAX_LIVE, path),
        [flag, bytes, path] if flag == "--acpica-memory" => {
            match bytes.to_str().and_then(|b| b.parse().ok()) {
                Some(b) => (b, path),
                None => return usage(),
            }
        }
        _ => return usage(),
    };
    let path = Path::new(path);
    let text = match read_text(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("acpi-probe: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let dump = match dump::parse_lenient(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("acpi-probe: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    println!("{}", probe(&dump, max_bytes));
    ExitCode::SUCCESS
}

/// The file's text, gunzipped when it starts with the gzip magic.
fn read_text(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .take(MAX_TEXT)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip: {e}"))?;
        out
    } else {
        bytes
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The whole report.
fn probe(dump: &Dump, max_bytes: u64) -> Value {
    let table = |sig: &[u8; 4]| dump.find(sig).map(|t| t.bytes.as_slice());
    let madt = table(b"APIC").map(Madt::parse);
    let dmar = table(b"DMAR").map(Dmar::parse);
    let mcfg = table(b"MCFG").map(Mcfg::parse);
    let overrides: Vec<IsaOverride> = match &madt {
        Some(Ok(m)) => m.isa_overrides(),
        _ => Vec::new(),
    };
    let report = aml_report(&dump.tables, &overrides, max_bytes);
    let scan = firmware::aml::scan::scan(
        dump.tables
            .iter()
            .filter(|t| &t.signature == b"DSDT" || &t.signature == b"SSDT")
            .map(|t| t.bytes.as_slice()),
    );
    json!({
        "dump": {
            "tables": dump.tables.len(),
            "warnings": dump.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "madt": match &madt {
            None => json!({"error": "no MADT"}),
            Some(Err(e)) => json!({"error": e.to_string()}),
            Some(Ok(m)) => madt_json(m),
        },
        "mcfg": match &mcfg {
            None => json!({"error": "no MCFG"}),
            Some(Err(e)) => json!({"error": e.to_string()}),
            Some(Ok(m)) => Value::Array(m.entries.iter().map(|e| json!({
                "segment": e.segment,
                "address": e.address,
                "bus_start": e.bus_start,
                "bus_end": e.bus_end,
            })).collect()),
        },
        "mcfg_errors": match &mcfg {
            Some(Ok(m)) => m.errors.clone(),
            _ => Vec::new(),
        },
        "fadt": match table(b"FACP").map(Fadt::parse) {
            None => json!({"error": "no FADT"}),
            Some(Err(e)) => json!({"error": e.to_string()}),
            Some(Ok(f)) => fadt_json(&f),
        },
        "hpet": match table(b"HPET").map(Hpet::parse) {
            None => json!({"error": "no HPET"}),
            Some(Err(e)) => json!({"error": e.to_string()}),
            Some(Ok(h)) => json!({
                "address": gas_json(&h.base_address),
                "number": h.hpet_number,
                "min_tick": h.min_tick,
                "comparators": h.comparators(),
            }),
        },
        "dmar": match &dmar {
            None => json!({"error": "no DMAR"}),
            Some(Err(e)) => json!({"error": e.to_string()}),
            Some(Ok(d)) => dmar_json(d),
        },
        "ivrs": match table(b"IVRS").map(Ivrs::parse) {
            None => json!({"error": "no IVRS"}),
            Some(Err(e)) => json!({"error": e.to_string()}),
            Some(Ok(i)) => ivrs_json(&i, match &madt {
                None => Err("no MADT".into()),
                Some(Err(e)) => Err(format!("MADT: {e}")),
                Some(Ok(m)) => Ok(m.io_apics.iter().map(|a| a.id).collect()),
            }),
        },
        // Interrupt remapping's view: each MADT I/O APIC's unit and requester ID.
        "intremap": match (&dmar, &madt) {
            (Some(Ok(d)), Some(Ok(m))) if d.offers_interrupt_remapping() => {
                let ids: Vec<u8> = m.io_apics.iter().map(|a| a.id).collect();
                match d.io_apic_scopes(&ids) {
                    Ok(found) => json!({"io_apics": found.iter().map(|f| json!({
                        "id": f.id,
                        "unit": f.unit,
                        "requester": f.requester,
                    })).collect::<Vec<_>>()}),
                    Err(e) => json!({"error": e}),
                }
            }
            _ => json!({"error": "not offered"}),
        },
        "aml": {
            "tables_loaded": report.tables_loaded,
            "tables_failed": report.tables_failed,
            "namespace_initialised": report.namespace_initialised,
            "apic_mode": report.apic_mode,
            "s5": report.s5.map(|(a, b)| json!([a, b])),
            "errors": report.errors,
            "acpica_bytes": firmware::aml::os::live_bytes(),
        },
        "host_bridges": report.host_bridges.iter().map(bridge_json).collect::<Vec<_>>(),
        "host_bridge_scan": {
            "host_bridges": scan.host_bridges,
            "loads_tables": scan.loads_tables,
        },
    })
}

/// ACPICA's report on the dump's definition blocks, run on a simulated machine.
fn aml_report(tables: &[DumpedTable], overrides: &[IsaOverride], max_bytes: u64) -> AmlReport {
    let tables: Vec<([u8; 4], &[u8])> = tables
        .iter()
        .map(|t| (t.signature, t.bytes.as_slice()))
        .collect();
    firmware::sim::probe_aml_within(&tables, overrides, max_bytes)
}

fn madt_json(m: &Madt) -> Value {
    json!({
        "cpus": m.enabled_cpus(),
        "cpu_entries": m.cpus.len(),
        "apic_ids": m.cpus.iter().filter(|c| c.enabled).map(|c| c.apic_id).collect::<Vec<_>>(),
        "x2apic_cpus": m.cpus.iter().filter(|c| c.enabled && c.x2apic).count(),
        "local_apic": m.local_apic_address,
        "pcat_compat": m.pcat_compat,
        "checksum_ok": m.checksum_ok,
        "ioapics": m.io_apics.iter().map(|a| json!({
            "id": a.id,
            "address": a.address,
            "gsi_base": a.gsi_base,
        })).collect::<Vec<_>>(),
        "overrides": m.overrides.iter().map(|o| json!({
            "bus": o.bus,
            "source": o.source,
            "gsi": o.gsi,
            "polarity": polarity(o.polarity),
            "trigger": trigger(o.trigger),
        })).collect::<Vec<_>>(),
        "nmi_sources": m.nmi_sources.iter().map(|n| json!({
            "gsi": n.gsi,
            "polarity": polarity(n.polarity),
            "trigger": trigger(n.trigger),
        })).collect::<Vec<_>>(),
        "local_nmis": m.local_nmis.iter().map(|n| json!({
            "uid": n.uid,
            "all": n.all_processors(),
            "lint": n.lint,
            "polarity": polarity(n.polarity),
            "trigger": trigger(n.trigger),
        })).collect::<Vec<_>>(),
        "errors": m.errors,
    })
}

fn dmar_json(d: &Dmar) -> Value {
    json!({
        "address_width": d.address_width,
        "flags": d.flags,
        "units": d.units.iter().map(|u| json!({
            "flags": u.flags,
            "include_pci_all": u.include_pci_all(),
            "size": u.size,
            "segment": u.segment,
            "register_base": u.register_base,
            "scopes": u.scopes.iter().map(scope_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "reserved": d.reserved.iter().map(|r| json!({
            "segment": r.segment,
            "base": r.base,
            "limit": r.limit,
            "scopes": r.scopes.iter().map(scope_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "warnings": d.warnings,
    })
}

/// The IVRS; `iommus` lists the indices in `units` of the IVHDs [`Ivrs::iommus`] picks,
/// one per IOMMU. A special device's `variety` is the table's number (1 I/O APIC, 2 HPET).
/// `intremap` is interrupt remapping's view of the MADT's I/O APICs
/// ([`Ivrs::io_apic_sources`]): each one's segment and requester ID, or why not all of them
/// are covered (`io_apics`: the MADT's I/O APIC IDs, or why there are none to give).
fn ivrs_json(i: &Ivrs, io_apics: Result<Vec<u8>, String>) -> Value {
    let picked = i.iommus();
    let intremap = match io_apics.and_then(|ids| i.io_apic_sources(&ids)) {
        Ok(found) => json!({"io_apics": found.iter().map(|f| json!({
            "id": f.id,
            "segment": f.segment,
            "requester": f.requester,
        })).collect::<Vec<_>>()}),
        Err(e) => json!({"error": e}),
    };
    json!({
        "info": i.info,
        "checksum_ok": i.checksum_ok,
        "units": i.units.iter().map(|u| json!({
            "type": u.kind,
            "flags": u.flags,
            "device_id": u.device_id,
            "capability_offset": u.capability_offset,
            "base": u.base,
            "segment": u.segment,
            "info": u.info,
            "features": u.features,
            "efr": u.efr,
            "devices": u.devices.iter().map(|d| json!({
                "first": d.first,
                "last": d.last,
                "settings": d.settings,
                "alias": d.alias,
            })).collect::<Vec<_>>(),
            "specials": u.specials.iter().map(|s| json!({
                "variety": match s.kind {
                    SpecialKind::IoApic => 1,
                    SpecialKind::Hpet => 2,
                    SpecialKind::Other(n) => n,
                },
                "handle": s.handle,
                "source": s.source,
                "settings": s.settings,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "iommus": picked
            .iter()
            .filter_map(|p| i.units.iter().position(|u| std::ptr::eq(u, *p)))
            .collect::<Vec<_>>(),
        "memory": i.memory.iter().map(|m| json!({
            "type": m.kind,
            "flags": m.flags,
            "first": m.first,
            "last": m.last,
            "start": m.start,
            "length": m.length,
        })).collect::<Vec<_>>(),
        "errors": i.errors,
        "intremap": intremap,
    })
}

/// A device scope; `type` is the table's number (VT-d §8.3.1: 1 endpoint, 2 bridge,
/// 3 I/O APIC, 4 HPET, 5 ACPI namespace device).
fn scope_json(s: &DeviceScope) -> Value {
    json!({
        "type": match s.kind {
            ScopeKind::Endpoint => 1,
            ScopeKind::Bridge => 2,
            ScopeKind::IoApic => 3,
            ScopeKind::Hpet => 4,
            ScopeKind::AcpiNamespace => 5,
            ScopeKind::Other(n) => n,
        },
        "enumeration_id": s.enumeration_id,
        "start_bus": s.start_bus,
        "path": s.path.iter().map(|(d, f)| json!([d, f])).collect::<Vec<_>>(),
    })
}

fn fadt_json(f: &Fadt) -> Value {
    let gas = |g: &Option<GenericAddress>| g.as_ref().map_or(Value::Null, gas_json);
    json!({
        "revision": f.header.revision,
        "minor_version": f.minor_version,
        "length": f.header.length,
        "checksum_ok": f.checksum_ok,
        "dsdt": f.dsdt,
        "facs": f.facs,
        "sci_int": f.sci_int,
        "smi_cmd": f.smi_cmd,
        "acpi_enable": f.acpi_enable,
        "acpi_disable": f.acpi_disable,
        "pm1a_evt": gas(&f.pm1a_evt),
        "pm1b_evt": gas(&f.pm1b_evt),
        "pm1a_cnt": gas(&f.pm1a_cnt),
        "pm1b_cnt": gas(&f.pm1b_cnt),
        "pm_timer": f.pm_timer.map(|t| json!({
            "block": gas_json(&t.block),
            "extended_32bit": t.extended_32bit,
        })),
        "century": f.century,
        "flags": f.flags,
        "hw_reduced": f.hw_reduced(),
        "iapc_boot_arch": f.iapc_boot_arch.map(|a| json!({
            "raw": a.0,
            "legacy_devices": a.legacy_devices(),
            "i8042": a.i8042(),
            "vga_not_present": a.vga_not_present(),
            "msi_not_supported": a.msi_not_supported(),
            "pcie_aspm_controls": a.pcie_aspm_controls(),
            "cmos_rtc_not_present": a.cmos_rtc_not_present(),
        })),
        "reset": f.reset.map(|r| json!({
            "register": gas_json(&r.register),
            "value": r.value,
        })),
    })
}

fn gas_json(g: &GenericAddress) -> Value {
    json!({
        "space_id": g.space_id,
        "bit_width": g.bit_width,
        "bit_offset": g.bit_offset,
        "access_size": g.access_size,
        "address": g.address,
    })
}

fn bridge_json(b: &HostBridge) -> Value {
    json!({
        "path": b.path,
        "segment": b.segment,
        "bus": b.bus,
        "bus_end": b.bus_end,
        "has_prt": b.has_prt,
        "native_hot_plug": b.osc.native_hot_plug(),
        "osc": b.osc.to_string(),
        "prt": match &b.prt {
            Ok(routes) => Value::Array(routes.iter().map(route_json).collect()),
            Err(e) => json!({"error": e}),
        },
    })
}

fn route_json(r: &Route) -> Value {
    json!({
        "device": r.device,
        "pin": match r.pin {
            0 => "A".to_string(),
            1 => "B".to_string(),
            2 => "C".to_string(),
            3 => "D".to_string(),
            n => format!("pin{n}"),
        },
        "gsi": r.gsi,
        "polarity": match r.polarity {
            Polarity::High => "active-high",
            Polarity::Low => "active-low",
        },
        "trigger": match r.trigger {
            Trigger::Edge => "edge",
            Trigger::Level => "level",
        },
        "source": match r.source {
            RouteSource::Gsi => "gsi",
            RouteSource::LinkAsFound => "link",
            RouteSource::LinkProgrammed => "link-set",
        },
    })
}

fn polarity(p: InterruptPolarity) -> &'static str {
    match p {
        InterruptPolarity::Conforms => "conforms",
        InterruptPolarity::ActiveHigh => "active-high",
        InterruptPolarity::Reserved => "reserved",
        InterruptPolarity::ActiveLow => "active-low",
    }
}

fn trigger(t: InterruptTrigger) -> &'static str {
    match t {
        InterruptTrigger::Conforms => "conforms",
        InterruptTrigger::Edge => "edge",
        InterruptTrigger::Reserved => "reserved",
        InterruptTrigger::Level => "level",
    }
}
