//! The platform as firmware describes it: ACPI tables (RSDT/XSDT, MADT, MCFG, HPET), and the
//! AML namespace through the `firmware` crate (ACPICA) on [`hw::KernelHardware`].
//!
//! Everything firmware says is a claim: a missing table or bad checksum is reported and the
//! kernel carries on with what it has (no MCFG means legacy port I/O for PCI; no MADT means
//! no IOAPIC). AML is initialised here because interrupt routing (`_PRT`) needs it later; if
//! the interpreter fails on some firmware, the kernel says so and continues without it.

pub mod aml;
pub mod hw;
pub mod roots;

use alloc::vec::Vec;

use ::firmware::tables::madt::{InterruptPolarity, InterruptTrigger};
use ::firmware::tables::{self, Fadt, Hpet, Madt, Mcfg};
use boot::BootInfo;
use spin::Once;

/// One ECAM window from the MCFG (PCI Firmware 3.2 §4.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamRegion {
    /// Physical base address (of bus `start_bus`).
    pub base: u64,
    /// PCI segment group.
    pub segment: u16,
    /// First bus decoded.
    pub start_bus: u8,
    /// Last bus decoded.
    pub end_bus: u8,
}

/// One IOAPIC from the MADT (ACPI 6.5 §5.2.12.3).
#[derive(Clone, Copy, Debug)]
pub struct IoApicInfo {
    /// APIC ID.
    pub id: u8,
    /// MMIO base.
    pub address: u64,
    /// First global system interrupt of its inputs.
    pub gsi_base: u32,
}

/// An ISA interrupt that arrives on another GSI or with other polarity/trigger
/// (ACPI 6.5 §5.2.12.5).
#[derive(Clone, Copy, Debug)]
pub struct SourceOverride {
    /// ISA IRQ.
    pub isa_irq: u8,
    /// GSI it is wired to.
    pub gsi: u32,
    /// Active-low when true (false: active-high or bus default).
    pub active_low: bool,
    /// Level-triggered when true.
    pub level: bool,
}

/// What the kernel learned from ACPI.
pub struct Platform {
    /// ACPI revision of the RSDP (0 = 1.0 with RSDT, 2+ = XSDT).
    pub revision: u8,
    /// Table signatures found, in order.
    pub tables: Vec<[u8; 4]>,
    /// Local APIC MMIO base from the MADT.
    pub local_apic: Option<u64>,
    /// Processors (local APIC IDs) from the MADT.
    pub cpus: Vec<u32>,
    /// IOAPICs.
    pub io_apics: Vec<IoApicInfo>,
    /// Interrupt source overrides.
    pub overrides: Vec<SourceOverride>,
    /// NMI sources (GSIs) and local NMI lines, as text for the log.
    pub nmi_entries: usize,
    /// Whether the 8259 PICs exist (MADT flag PCAT_COMPAT).
    pub legacy_pics: bool,
    /// ECAM windows. Empty: config space only through port I/O.
    pub ecam: Vec<EcamRegion>,
    /// HPET base address.
    pub hpet: Option<u64>,
    /// Physical address of the RSDP (the kernel's identity-mapped copy of it).
    pub rsdp_phys: u64,
    /// FADT PM1a control block, when it is an I/O port (ACPI 6.5 §4.8.3.2.1).
    pub pm1a_control: Option<u16>,
    /// FADT reset register (I/O port) and value, when the FADT has one (ACPI 6.5 §4.8.3.6).
    pub reset: Option<(u16, u8)>,
    /// What the definition blocks' bytes say about host bridges ([`firmware::aml::scan`]);
    /// `None` when a block could not be read.
    pub aml_scan: Option<::firmware::aml::scan::Scan>,
    /// The DMAR table's bytes (Intel VT-d §8), for [`crate::iommu`].
    pub dmar: Option<Vec<u8>>,
    /// The IVRS table's bytes (AMD IOMMU specification §5.2), for [`crate::iommu`].
    pub ivrs: Option<Vec<u8>>,
}

static PLATFORM: Once<Platform> = Once::new();

/// The platform description (after [`init`]).
pub fn get() -> Option<&'static Platform> {
    PLATFORM.get()
}

/// Reads the ACPI tables from the RSDP the loader gave, with the `firmware` crate's parsers.
/// Never panics on bad tables: a table that cannot be read or parsed is logged and left out,
/// a bad MADT entry loses only that entry, and the rest of ACPI goes on.
pub fn init(boot: &BootInfo) -> Option<&'static Platform> {
    let Some(rsdp) = boot.rsdp else {
        log::warn!("acpi: the loader gave no RSDP; no ACPI");
        return None;
    };
    // Multiboot2 gives a copy of the RSDP inside its (since reused) information structure;
    // the kernel's own copy in `BootInfo` lives in the kernel image, identity-mapped.
    let rsdp_phys = boot.rsdp.as_ref().map(|r| r.bytes.as_ptr() as u64)?;
    let rsdp_bytes = rsdp.bytes.get(..rsdp.len).unwrap_or(&rsdp.bytes[..20]);
    let mem = &hw::HARDWARE;
    let set = match tables::discover(mem, rsdp_bytes) {
        Ok(set) => set,
        Err(e) => {
            log::error!("acpi: cannot read the root table: {e}");
            return None;
        }
    };
    for e in &set.errors {
        log::warn!("acpi: {e}");
    }
    let read = |signature: &[u8; 4]| -> Option<Vec<u8>> {
        let t = set.find(signature)?;
        match tables::read_table(mem, t) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                log::warn!(
                    "acpi: {} at {:#x}: {e}",
                    core::str::from_utf8(signature).unwrap_or("????"),
                    t.phys
                );
                None
            }
        }
    };

    let mut platform = Platform {
        revision: set.revision,
        tables: set.tables.iter().map(|t| t.signature).collect(),
        local_apic: None,
        cpus: Vec::new(),
        io_apics: Vec::new(),
        overrides: Vec::new(),
        nmi_entries: 0,
        legacy_pics: true,
        ecam: Vec::new(),
        hpet: None,
        rsdp_phys,
        pm1a_control: None,
        reset: None,
        aml_scan: None,
        dmar: None,
        ivrs: None,
    };
    platform.dmar = read(b"DMAR");
    platform.ivrs = read(b"IVRS");
    // The DSDT and every SSDT, read as bytes (whether the boot will need AML's host bridges).
    let blocks: Option<Vec<Vec<u8>>> = set
        .find(b"DSDT")
        .into_iter()
        .chain(set.find_all(b"SSDT"))
        .map(|t| tables::read_table(mem, t).ok())
        .collect();
    platform.aml_scan = blocks
        .filter(|b| !b.is_empty())
        .map(|b| ::firmware::aml::scan::scan(b.iter().map(Vec::as_slice)));

    match read(b"MCFG").map(|b| Mcfg::parse(&b)) {
        Some(Ok(mcfg)) => {
            for e in &mcfg.errors {
                log::warn!("acpi: MCFG: {e}");
            }
            platform.ecam = mcfg
                .entries
                .iter()
                .filter_map(|e| {
                    // An MCFG entry's base is that of bus 0 (PCI Firmware 3.2 §4.1.2), even
                    // when its first bus is not 0; the window starts at its first bus.
                    let base = e.address.checked_add(u64::from(e.bus_start) << 20);
                    if base.is_none() {
                        log::warn!("acpi: MCFG entry at {:#x} wraps; ignored", e.address);
                    }
                    Some(EcamRegion {
                        base: base?,
                        segment: e.segment,
                        start_bus: e.bus_start,
                        end_bus: e.bus_end,
                    })
                })
                .collect();
        }
        Some(Err(e)) => log::warn!("acpi: MCFG unusable ({e}): PCI config space through port I/O"),
        None => log::info!("acpi: no MCFG: PCI config space through port I/O only"),
    }
    match read(b"HPET").map(|b| Hpet::parse(&b)) {
        Some(Ok(h)) if h.base_address.space_id == 0 && h.base_address.address != 0 => {
            platform.hpet = Some(h.base_address.address);
        }
        Some(Ok(_)) => log::warn!("acpi: the HPET table names no memory-mapped HPET"),
        Some(Err(e)) => log::warn!("acpi: HPET table unusable ({e})"),
        None => log::info!("acpi: no HPET table"),
    }
    match read(b"FACP").map(|b| Fadt::parse(&b)) {
        Some(Ok(fadt)) => {
            // System I/O space is address space 1 (ACPI 6.5 §5.2.3.2).
            platform.pm1a_control = fadt
                .pm1a_cnt
                .filter(|g| g.space_id == 1)
                .and_then(|g| u16::try_from(g.address).ok());
            platform.reset = fadt
                .reset
                .filter(|r| r.register.space_id == 1 && r.register.address != 0)
                .and_then(|r| u16::try_from(r.register.address).ok().map(|p| (p, r.value)));
        }
        Some(Err(e)) => log::warn!("acpi: FADT unusable ({e}): no ACPI power-off or reset"),
        None => log::warn!("acpi: no FADT"),
    }
    match read(b"APIC").map(|b| Madt::parse(&b)) {
        Some(Ok(madt)) => {
            for e in &madt.errors {
                log::warn!("acpi: MADT: {e} (entry skipped)");
            }
            platform.local_apic = Some(madt.local_apic_address);
            platform.legacy_pics = madt.pcat_compat;
            // Disabled entries are not CPUs (online-capable ones may be hot-added later).
            platform.cpus = madt
                .cpus
                .iter()
                .filter(|c| c.enabled)
                .map(|c| c.apic_id)
                .collect();
            platform.io_apics = madt
                .io_apics
                .iter()
                .map(|i| IoApicInfo {
                    id: i.id,
                    address: i.address,
                    gsi_base: i.gsi_base,
                })
                .collect();
            platform.overrides = madt
                .overrides
                .iter()
                .filter(|o| o.bus == 0)
                .map(|o| SourceOverride {
                    isa_irq: o.source,
                    gsi: o.gsi,
                    active_low: o.polarity == InterruptPolarity::ActiveLow,
                    level: o.trigger == InterruptTrigger::Level,
                })
                .collect();
            platform.nmi_entries = madt.nmi_sources.len() + madt.local_nmis.len();
        }
        Some(Err(e)) => log::warn!("acpi: MADT unusable ({e})"),
        None => log::warn!("acpi: no MADT"),
    }
    Some(PLATFORM.call_once(|| platform))
}

/// Root buses without AML: the first bus of each ECAM window, or bus 0.
pub fn fallback_roots(ecam: &[EcamRegion]) -> Vec<roots::RootBus> {
    if ecam.is_empty() {
        return alloc::vec![roots::RootBus { segment: 0, bus: 0 }];
    }
    ecam.iter()
        .map(|e| roots::RootBus {
            segment: e.segment,
            bus: e.start_bus,
        })
        .collect()
}

/// Logs what ACPI said.
pub fn log_summary(p: &Platform) {
    let mut names = alloc::string::String::new();
    for s in &p.tables {
        for &b in s {
            names.push(if b.is_ascii_graphic() { b as char } else { '?' });
        }
        names.push(' ');
    }
    log::info!(
        "acpi: revision {}, tables: {}",
        p.revision,
        names.trim_end()
    );
    log::info!(
        "acpi: {} CPU(s) {:?}, local APIC at {:#x}, legacy PICs: {}",
        p.cpus.len(),
        p.cpus,
        p.local_apic.unwrap_or(0),
        if p.legacy_pics { "yes" } else { "no" }
    );
    for io in &p.io_apics {
        log::info!(
            "acpi: IOAPIC id {} at {:#x}, GSI base {}",
            io.id,
            io.address,
            io.gsi_base
        );
    }
    for o in &p.overrides {
        log::info!(
            "acpi: ISA IRQ {} -> GSI {} ({}, {})",
            o.isa_irq,
            o.gsi,
            if o.active_low {
                "active-low"
            } else {
                "active-high"
            },
            if o.level { "level" } else { "edge" }
        );
    }
    for e in &p.ecam {
        log::info!(
            "acpi: ECAM segment {} buses {:#04x}-{:#04x} at {:#x}",
            e.segment,
            e.start_bus,
            e.end_bus,
            e.base
        );
    }
    if let Some(h) = p.hpet {
        log::info!("acpi: HPET at {h:#x}");
    }
}
