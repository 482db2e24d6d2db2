//! DMA remapping on Intel VT-d units: the DMAR table's units, driven by the `iommu` crate's
//! [`iommu::Remapper`] (the rules are in the parent module's design note), then interrupt
//! remapping ([`super::interrupts`]).
//!
//! The DMAR lists each unit's register base and the devices it translates for as device
//! scopes: a start bus and a path of device/function hops, followed here through the
//! bridges enumeration found. INCLUDE_PCI_ALL units take every other function of their
//! segment. RMRRs name memory firmware keeps using for DMA, mapped one to one for the
//! devices they name.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use firmware::tables::dmar::{DeviceScope, Dmar, ScopeKind};
use iommu::scope::ScopeTarget;
use iommu::{Remapper, Scope, ScopeEntry, Source, UnitSetup};
use pci::Address;
use pci::enumerate::Topology;

use super::backend::Backend;
use super::hw::{TablePages, UnitRegisters};
use super::{
    MAX_RESERVED, PENDING, STATE, State, check_interrupt_remapping, interrupts, start_fault_events,
};
use crate::memory::mmio::Mmio;

/// The functions and buses a device scope names, followed through the bridges enumeration
/// found (`iommu::scope`).
fn resolve(topology: &Topology, segment: u16, scope: &DeviceScope) -> Vec<ScopeEntry> {
    let target = match scope.kind {
        ScopeKind::Endpoint => ScopeTarget::Endpoint,
        ScopeKind::Bridge => ScopeTarget::Bridge,
        _ => ScopeTarget::Other,
    };
    iommu::scope::resolve(
        target,
        scope.start_bus,
        &scope.path,
        |bus, device, function| {
            let address = Address::new(segment, bus, device, function).ok()?;
            let b = topology.function(address)?.bridge?;
            Some((b.secondary, b.subordinate))
        },
    )
}

/// Maps one unit's registers: the first page, then as much as its IOTLB and fault recording
/// registers need. Never over RAM or registers the kernel owns (an IOAPIC, the HPET, the
/// local APIC, an ECAM window: a wrong DMAR must not make the kernel write there), and
/// reserved for the kernel afterwards, so that no device window can be mapped over them.
fn map_unit(base: u64) -> Result<Mmio, String> {
    let first = Mmio::map_device(base, 0x1000).map_err(|e| format!("{e:?}"))?;
    let cap = first.read64(iommu::regs::CAP);
    let ecap = first.read64(iommu::regs::ECAP);
    if cap == u64::MAX || ecap == u64::MAX {
        return Err("its registers read all ones".into());
    }
    let iotlb = ((ecap >> iommu::regs::ECAP_IRO_SHIFT) & 0x3ff) * 16 + 16;
    let faults = ((cap >> iommu::regs::CAP_FRO_SHIFT) & 0x3ff) * 16
        + 16 * (((cap >> iommu::regs::CAP_NFR_SHIFT) & 0xff) + 1);
    let need = iotlb.max(faults).next_multiple_of(0x1000);
    let regs = if need <= 0x1000 {
        first
    } else {
        drop(first);
        Mmio::map_device(base, need).map_err(|e| format!("{e:?}"))?
    };
    crate::memory::mmio::reserve_for_kernel(base, need.max(0x1000));
    Ok(regs)
}

/// The Intel VT-d path of [`super::init`]: the DMAR's units, then interrupt remapping.
pub(super) fn init(bytes: &[u8], intremap_off: bool, nosid: bool) {
    let dmar = match Dmar::parse(bytes) {
        Ok(d) => d,
        Err(e) => {
            log::warn!("iommu: DMAR: {e}; DMA is not remapped");
            return;
        }
    };
    for w in &dmar.warnings {
        log::warn!("iommu: DMAR: {w}");
    }
    let Some(scan) = crate::pcibus::scan() else {
        return;
    };
    let topology = &scan.topology;
    let mut setups = Vec::new();
    let mut bases: Vec<u64> = Vec::new();
    // The remapper's unit of each DRHD (a unit listed twice is used once).
    let mut drhd_units: Vec<Option<usize>> = Vec::new();
    for unit in &dmar.units {
        if let Some(first) = bases.iter().position(|&b| b == unit.register_base) {
            log::warn!(
                "iommu: DMAR lists the unit at {:#x} twice; the second is ignored",
                unit.register_base
            );
            drhd_units.push(Some(first));
            continue;
        }
        drhd_units.push(Some(setups.len()));
        bases.push(unit.register_base);
        let regs = match map_unit(unit.register_base) {
            Ok(r) => r,
            Err(e) => {
                log::warn!(
                    "iommu: the unit at {:#x} cannot be used ({e}); DMA is not remapped",
                    unit.register_base
                );
                return;
            }
        };
        let scope = if unit.include_pci_all() {
            Scope::All
        } else {
            Scope::Listed(
                unit.scopes
                    .iter()
                    .flat_map(|s| resolve(topology, unit.segment, s))
                    .collect(),
            )
        };
        setups.push(UnitSetup {
            regs: UnitRegisters(regs),
            segment: unit.segment,
            scope,
        });
    }
    if setups.is_empty() {
        log::warn!("iommu: the DMAR table lists no usable unit; DMA is not remapped");
        return;
    }
    let mut reserved = Vec::new();
    for r in &dmar.reserved {
        let end = r.limit.saturating_add(1);
        if end <= r.base || end - r.base > MAX_RESERVED {
            log::warn!(
                "iommu: DMAR: reserved region {:#x}..={:#x} ignored (empty or larger than {} MiB)",
                r.base,
                r.limit,
                MAX_RESERVED >> 20
            );
            continue;
        }
        for s in &r.scopes {
            for entry in resolve(topology, r.segment, s) {
                if let ScopeEntry::Function(bus, devfn) = entry {
                    let who = Source {
                        segment: r.segment,
                        bus,
                        devfn,
                    };
                    reserved.push((who, r.base, end));
                }
            }
        }
    }
    // Every bus a unit covers, not only those enumeration has found so far: root buses AML
    // names later, buses behind hot-plug ports and devices firmware hides all keep working
    // until claimed.
    let (first_bus, last_bus) = (0u8, 255u8);
    let mut remapper = match Remapper::new(TablePages::new(), setups) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("iommu: {e}; DMA is not remapped");
            return;
        }
    };
    if let Err(e) = remapper.enable((first_bus, last_bus)) {
        log::error!("iommu: turning translation on: {e}; DMA is not remapped");
        return;
    }
    for unit in 0..remapper.units() {
        let (levels, cap, ecap) = remapper.unit_info(unit);
        log::info!(
            "iommu: unit {unit}: {levels}-level tables, CAP {cap:#x}, ECAP {ecap:#x}, translation on"
        );
    }
    log::info!(
        "iommu: {} remapping unit(s) on; the functions they cover pass through until claimed, and a claimed function reaches only its own DMA memory",
        remapper.units()
    );
    let mut state = State {
        remapper: Backend::Vtd(remapper),
        reserved,
        faults: Vec::new(),
        ioapics: Vec::new(),
        nosid: false,
        io_apic_check: "not run",
        pending: Vec::with_capacity(PENDING),
    };
    if intremap_off {
        log::warn!("iommu: intremap=off: interrupt messages are not checked");
    } else if !dmar.offers_interrupt_remapping() {
        log::info!("iommu: the DMAR does not offer interrupt remapping (INTR_REMAP clear)");
    } else {
        let madt: Vec<u8> = crate::platform::get()
            .map(|p| p.io_apics.iter().map(|a| a.id).collect())
            .unwrap_or_default();
        // In x2APIC mode, 32-bit destinations where every unit takes them; otherwise 8-bit
        // ones, which reach an x2APIC whose ID is below 256 (and only such a one).
        let lapic = crate::interrupts::lapic::get();
        let x2apic = lapic.is_some_and(|l| l.is_x2apic());
        let eime = x2apic && state.remapper.extended_interrupt_mode();
        let id = lapic.map_or(0, |l| l.id());
        match interrupts::io_apics(&dmar, &drhd_units, &madt).and_then(|found| {
            if !eime && id > 255 {
                return Err(format!(
                    "APIC ID {id} needs 32-bit destinations, which a unit lacks (ECAP.EIM)"
                ));
            }
            interrupts::enable(&mut state, found, eime, nosid)
        }) {
            Ok(()) if nosid => log::warn!(
                "iommu: interrupt remapping on without requester checks (intremap=nosid): any device can raise any vector in use"
            ),
            Ok(()) => log::info!(
                "iommu: interrupt remapping on: a device raises only the vectors its owner was given, compatibility-format messages are blocked"
            ),
            Err(e) => log::warn!(
                "iommu: interrupt remapping off ({e}): interrupt messages are not checked"
            ),
        }
    }
    x86_64::instructions::interrupts::without_interrupts(|| {
        *STATE.lock() = Some(state);
    });
    start_fault_events();
    if interrupts::remapping() {
        check_interrupt_remapping();
    }
}
