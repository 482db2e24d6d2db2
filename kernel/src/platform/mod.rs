//! The platform as firmware describes it: ACPI tables (RSDT/XSDT, MADT, MCFG, HPET), and the
//! AML namespace through the `firmware` crate (ACPICA) on [`hw::KernelHardware`].
//!
//! Everything firmware says is a claim: a missing table or bad checksum is reported and the
//! kernel carries on with what it has (no MCFG means legacy port I/O for PCI; no MADT means
//! no IOAPIC). AML is initialised here because interrupt routing (`_PRT`) needs it later; if
//! the interpreter fails on some firmware, the kernel says so and continues without it.

pub mod aml;
pub mod handler;
pub mod hw;
pub mod roots;

use alloc::vec::Vec;

use ::acpi::AcpiTables;
use ::acpi::platform::PciConfigRegions;
use ::acpi::platform::interrupt::{InterruptModel, Polarity, TriggerMode};
use ::acpi::sdt::hpet::HpetInfo;
use boot::BootInfo;
use spin::Once;

use handler::KernelAcpi;

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
}

static PLATFORM: Once<Platform> = Once::new();

/// The platform description (after [`init`]).
pub fn get() -> Option<&'static Platform> {
    PLATFORM.get()
}

/// Reads the ACPI tables from the RSDP the loader gave. Never panics on bad tables.
pub fn init(boot: &BootInfo) -> Option<&'static Platform> {
    let Some(rsdp) = boot.rsdp else {
        log::warn!("acpi: the loader gave no RSDP; no ACPI");
        return None;
    };
    // Multiboot2 gives a copy of the RSDP inside its (since reused) information structure;
    // the kernel's own copy in `BootInfo` lives in the kernel image, identity-mapped.
    let rsdp_address = boot.rsdp.as_ref().map(|r| r.bytes.as_ptr() as usize)?;
    // SAFETY: `rsdp_address` points at a checksummed RSDP (verified by the boot parser)
    // inside the 'static BootInfo; the handler maps every table it names on demand.
    let tables = match unsafe { AcpiTables::from_rsdp(KernelAcpi, rsdp_address) } {
        Ok(t) => t,
        Err(e) => {
            log::error!("acpi: cannot read the root table: {e:?}");
            return None;
        }
    };
    // Signatures are read as raw bytes: a corrupt one must not reach the crate's `as_str`.
    let signatures: Vec<[u8; 4]> = tables.table_entries().map(handler::signature_at).collect();

    let ecam = match PciConfigRegions::new(&tables) {
        Ok(r) => r
            .regions
            .iter()
            .map(|e| EcamRegion {
                base: e.base_address,
                segment: e.pci_segment_group,
                start_bus: e.bus_number_start,
                end_bus: e.bus_number_end,
            })
            .collect(),
        Err(e) => {
            log::info!("acpi: no MCFG ({e:?}): PCI config space through port I/O only");
            Vec::new()
        }
    };
    let hpet = match HpetInfo::new(&tables) {
        Ok(h) => Some(h.base_address as u64),
        Err(e) => {
            log::info!("acpi: no HPET table ({e:?})");
            None
        }
    };

    let mut platform = Platform {
        revision: rsdp.revision,
        tables: signatures,
        local_apic: None,
        cpus: Vec::new(),
        io_apics: Vec::new(),
        overrides: Vec::new(),
        nmi_entries: 0,
        legacy_pics: true,
        ecam,
        hpet,
        rsdp_phys: rsdp_address as u64,
        pm1a_control: None,
        reset: None,
    };
    if let Some(fadt) = tables.find_table::<::acpi::sdt::fadt::Fadt>() {
        use ::acpi::address::AddressSpace;
        if let Ok(pm1a) = fadt.pm1a_control_block()
            && matches!(pm1a.address_space, AddressSpace::SystemIo)
        {
            platform.pm1a_control = u16::try_from(pm1a.address).ok();
        }
        // RESET_REG_SUP is FADT flag bit 10.
        if let Ok(reset) = fadt.reset_register()
            && matches!(reset.address_space, AddressSpace::SystemIo)
            && reset.address != 0
        {
            platform.reset = u16::try_from(reset.address)
                .ok()
                .map(|port| (port, fadt.reset_value));
        }
    }
    match InterruptModel::new(&tables) {
        Ok((InterruptModel::Apic(apic), processors)) => {
            platform.local_apic = Some(apic.local_apic_address);
            platform.io_apics = apic
                .io_apics
                .iter()
                .map(|i| IoApicInfo {
                    id: i.id,
                    address: i.address.into(),
                    gsi_base: i.global_system_interrupt_base,
                })
                .collect();
            platform.overrides = apic
                .interrupt_source_overrides
                .iter()
                .map(|o| SourceOverride {
                    isa_irq: o.isa_source,
                    gsi: o.global_system_interrupt,
                    active_low: matches!(o.polarity, Polarity::ActiveLow),
                    level: matches!(o.trigger_mode, TriggerMode::Level),
                })
                .collect();
            platform.nmi_entries = apic.nmi_sources.len() + apic.local_apic_nmi_lines.len();
            platform.legacy_pics = apic.also_has_legacy_pics;
            if let Some(p) = processors {
                platform.cpus.push(p.boot_processor.local_apic_id);
                platform
                    .cpus
                    .extend(p.application_processors.iter().map(|a| a.local_apic_id));
            }
        }
        Ok((_, _)) => log::warn!("acpi: the MADT describes no APIC"),
        Err(e) => log::warn!("acpi: no usable MADT ({e:?})"),
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
