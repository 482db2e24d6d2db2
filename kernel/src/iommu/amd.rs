//! DMA remapping on AMD IOMMUs: the IVRS table's units, driven by the `iommu` crate's
//! [`iommu::amd::AmdRemapper`].
//!
//! Design note. An AMD machine describes its IOMMUs in the IVRS table (AMD IOMMU
//! specification §5.2) instead of a DMAR: per unit, its register base and the requester IDs
//! it translates for (device entries, with aliases), plus memory some devices must keep
//! reaching (IVMD blocks). The rules are the VT-d ones (see the parent module): every
//! function passes through until a driver claims it, a claimed function gets its own
//! domain holding exactly its DMA memory, and memory leaves the domain, with the unit told
//! to forget it, before it goes anywhere else.
//!
//! Interrupts are remapped too (unless `intremap=off`): every requester ID a unit covers,
//! and each I/O APIC the IVRS names (special device entries), gets an interrupt table of
//! its own, empty until the kernel gives the function a vector. A message's data names an
//! entry of the sender's own table (the index is the vector), so a device raises only the
//! vectors its owner was given, whatever it writes. The event log's interrupt is not used:
//! the log is read when someone asks (the console's `iommu`, the tests).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use firmware::tables::ivrs::Ivrs;
use iommu::Source;
use iommu::amd::{AmdRemapper, DeviceRange, UnitSetup};

use super::backend::Backend;
use super::hw::{TablePages, UnitRegisters};
use super::interrupts::IoApicSource;
use super::{MAX_RESERVED, PENDING, State};
use crate::memory::mmio::Mmio;

/// Bytes of one unit's registers the kernel maps: the control registers from 0000h and
/// the buffer pointers from 2000h (§3.4); Linux maps the same 16 KiB.
const REGISTERS: u64 = 0x4000;

/// The extended feature register (§3.4.13), read once to see the unit answers.
const EFR: u64 = 0x30;

/// Maps one unit's registers, never over RAM or registers the kernel owns (a wrong IVRS
/// must not make the kernel write there), and reserves them for the kernel.
fn map_unit(base: u64) -> Result<Mmio, String> {
    if base == 0 || !base.is_multiple_of(REGISTERS) {
        return Err(format!("its register base {base:#x} is not 16 KiB aligned"));
    }
    let regs = Mmio::map_device(base, REGISTERS).map_err(|e| format!("{e:?}"))?;
    if regs.read64(EFR) == u64::MAX {
        return Err("its registers read all ones".into());
    }
    crate::memory::mmio::reserve_for_kernel(base, REGISTERS);
    Ok(regs)
}

/// Requester IDs `[first, last]` as the functions enumeration found there.
fn functions_in(segment: u16, first: u16, last: u16) -> Vec<Source> {
    let Some(scan) = crate::pcibus::scan() else {
        return Vec::new();
    };
    scan.topology
        .functions
        .iter()
        .map(|f| super::source(f.address))
        .filter(|s| s.segment == segment && (first..=last).contains(&s.id()))
        .collect()
}

/// The I/O APICs the IVRS names (special device entries), one for each MADT I/O APIC, or
/// why not: an I/O APIC no entry names would be silenced by interrupt remapping
/// (`firmware::tables::ivrs::Ivrs::io_apic_sources_with`). `overrides`: the
/// `ivrs_ioapic` option, which takes the place of the entries for the I/O APICs it names.
fn io_apics(ivrs: &Ivrs, overrides: Option<&str>) -> Result<Vec<IoApicSource>, String> {
    let madt: Vec<u8> = crate::platform::get()
        .map(|p| p.io_apics.iter().map(|a| a.id).collect())
        .unwrap_or_default();
    let overrides = match overrides.map(firmware::tables::ivrs::parse_overrides) {
        None => Vec::new(),
        Some(Ok(o)) => {
            for s in &o {
                log::warn!(
                    "iommu: ivrs_ioapic: I/O APIC {} sends as {:04x}:{:02x}:{:02x}.{}, in place of what the IVRS says",
                    s.id,
                    s.segment,
                    s.requester >> 8,
                    (s.requester >> 3) & 0x1f,
                    s.requester & 7
                );
            }
            o
        }
        Some(Err(e)) => {
            log::warn!("iommu: ivrs_ioapic: {e}; ignored");
            Vec::new()
        }
    };
    Ok(ivrs
        .io_apic_sources_with(&madt, &overrides)?
        .into_iter()
        .map(|s| IoApicSource {
            id: s.id,
            unit: 0,
            requester: s.requester,
            segment: s.segment,
        })
        .collect())
}

/// Turns interrupt remapping on: every covered requester's messages, and the I/O APICs',
/// go through tables the kernel writes.
fn enable_interrupts(
    remapper: &mut AmdRemapper<UnitRegisters, TablePages>,
    ivrs: &Ivrs,
    overrides: Option<&str>,
) -> Result<Vec<IoApicSource>, String> {
    let ioapics = io_apics(ivrs, overrides)?;
    // The 32-bit entry format names an 8-bit APIC ID.
    if let Some(id) = crate::interrupts::lapic::get()
        .map(|l| l.id())
        .filter(|&id| id > 255)
    {
        return Err(format!(
            "APIC ID {id} needs the 128-bit entry format, which is not driven"
        ));
    }
    let extra: Vec<Source> = ioapics
        .iter()
        .map(|a| Source {
            segment: a.segment,
            bus: (a.requester >> 8) as u8,
            devfn: a.requester as u8,
        })
        .collect();
    remapper
        .enable_interrupt_remapping(&extra)
        .map_err(|e| format!("{e}"))?;
    Ok(ioapics)
}

/// Reads the IVRS and turns translation on in every unit it lists (all of them or none),
/// then interrupt remapping unless `intremap_off` (`ivrs_ioapic`: the command line's
/// requesters for I/O APICs). `None` (with the reason in the log) leaves DMA untranslated.
pub(super) fn init(bytes: &[u8], intremap_off: bool, ivrs_ioapic: Option<&str>) -> Option<State> {
    let ivrs = match Ivrs::parse(bytes) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("iommu: IVRS: {e}; DMA is not remapped");
            return None;
        }
    };
    for e in &ivrs.errors {
        log::warn!("iommu: IVRS: {e}");
    }
    let mut setups = Vec::new();
    for unit in ivrs.iommus() {
        let regs = match map_unit(unit.base) {
            Ok(r) => r,
            Err(e) => {
                log::warn!(
                    "iommu: the AMD IOMMU at {:#x} cannot be used ({e}); DMA is not remapped",
                    unit.base
                );
                return None;
            }
        };
        setups.push(UnitSetup {
            regs: UnitRegisters(regs),
            segment: unit.segment,
            iommu_id: unit.device_id,
            // The device entries, and the special devices' IDs (an I/O APIC's may lie outside
            // them), so that the device table has an entry for each.
            ranges: unit
                .devices
                .iter()
                .map(|d| DeviceRange {
                    first: d.first,
                    last: d.last,
                    alias: d.alias,
                })
                .chain(unit.specials.iter().map(|s| DeviceRange {
                    first: s.source,
                    last: s.source,
                    alias: None,
                }))
                .collect(),
        });
    }
    if setups.is_empty() {
        log::warn!("iommu: the IVRS table lists no usable IOMMU; DMA is not remapped");
        return None;
    }
    // Unity-mapped and exclusion ranges (IVMD): the devices they name keep reaching them
    // once isolated (exclusion ranges become identity maps too, as Linux makes them).
    let segment = setups[0].segment;
    let mut reserved = Vec::new();
    for m in &ivrs.memory {
        if !(m.unity() || m.exclusion()) {
            continue;
        }
        let end = m.start.saturating_add(m.length);
        if end <= m.start || m.length > MAX_RESERVED {
            log::warn!(
                "iommu: IVRS: memory block {:#x} (+{:#x}) ignored (empty or larger than {} MiB)",
                m.start,
                m.length,
                MAX_RESERVED >> 20
            );
            continue;
        }
        for who in functions_in(segment, m.first, m.last) {
            reserved.push((who, m.start & !0xfff, end.next_multiple_of(0x1000)));
        }
    }
    let mut remapper = match AmdRemapper::new(TablePages::new(), setups) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("iommu: AMD IOMMU: {e}; DMA is not remapped");
            return None;
        }
    };
    if let Err(e) = remapper.enable() {
        log::error!("iommu: turning AMD IOMMU translation on: {e}; DMA is not remapped");
        return None;
    }
    for unit in 0..remapper.units() {
        let (levels, efr, control) = remapper.unit_info(unit);
        log::info!(
            "iommu: AMD IOMMU {unit}: {levels}-level tables, EFR {efr:#x}, control {control:#x}, translation on"
        );
    }
    log::info!(
        "iommu: {} AMD IOMMU(s) on; the functions they cover pass through until claimed, and a claimed function reaches only its own DMA memory",
        remapper.units()
    );
    let ioapics = if intremap_off {
        log::warn!("iommu: intremap=off: interrupt messages are not checked");
        Vec::new()
    } else {
        match enable_interrupts(&mut remapper, &ivrs, ivrs_ioapic) {
            Ok(found) => {
                log::info!(
                    "iommu: interrupt remapping on: each requester has its own table, and a device raises only the vectors its owner was given"
                );
                found
            }
            Err(e) => {
                log::warn!(
                    "iommu: interrupt remapping off ({e}): interrupt messages are not checked"
                );
                Vec::new()
            }
        }
    };
    Some(State {
        remapper: Backend::Amd(remapper),
        reserved,
        faults: Vec::new(),
        ioapics,
        nosid: false,
        io_apic_check: "not run",
        pending: Vec::with_capacity(PENDING),
    })
}
