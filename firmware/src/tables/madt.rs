//! The Multiple APIC Description Table, signature `APIC` (ACPI 6.5 §5.2.12, Table 5.19).
//!
//! Design: the MADT is a fixed part (local APIC address, flags) followed by variable-length
//! entries, each `type, length, ...` (ACPI 6.5 §5.2.12, Table 5.20). The walk trusts each
//! entry's length only as far as the table goes: an entry whose length is below 2 or runs
//! past the end stops the walk (nothing after it can be located); an entry too short for
//! its type, or with an impossible field (measured on real machines: NMI entries naming
//! LINT 4), is recorded in [`Madt::errors`] and skipped, and the walk goes on. Unknown
//! types (GIC, IOSAPIC, multiprocessor wakeup, ...) are skipped silently. Entries whose
//! Enabled flag is clear are kept but are not CPUs ([`Madt::enabled_cpus`]): 401 of 655 real
//! machines list such placeholders.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::bytes::{u8_at, u16_at, u32_at, u64_at};
use super::{HEADER_LEN, SdtHeader, Table, TableError};

/// Offset of the first entry: header, Local Interrupt Controller Address, Flags
/// (ACPI 6.5 Table 5.19).
pub const ENTRIES_AT: usize = HEADER_LEN + 8;
/// The MADT flag `PCAT_COMPAT`: dual 8259s present (ACPI 6.5 Table 5.20).
pub const PCAT_COMPAT: u32 = 1;

// Entry types (ACPI 6.5 Table 5.21) and the length each needs.
/// Processor Local APIC (§5.2.12.2, 8 bytes).
pub const TYPE_LOCAL_APIC: u8 = 0;
/// I/O APIC (§5.2.12.3, 12 bytes).
pub const TYPE_IO_APIC: u8 = 1;
/// Interrupt Source Override (§5.2.12.5, 10 bytes).
pub const TYPE_OVERRIDE: u8 = 2;
/// Non-Maskable Interrupt Source (§5.2.12.6, 8 bytes).
pub const TYPE_NMI_SOURCE: u8 = 3;
/// Local APIC NMI (§5.2.12.7, 6 bytes).
pub const TYPE_LOCAL_NMI: u8 = 4;
/// Local APIC Address Override (§5.2.12.8, 12 bytes).
pub const TYPE_LOCAL_APIC_ADDRESS: u8 = 5;
/// Processor Local x2APIC (§5.2.12.12, 16 bytes).
pub const TYPE_X2APIC: u8 = 9;
/// Local x2APIC NMI (§5.2.12.13, 12 bytes).
pub const TYPE_X2APIC_NMI: u8 = 0xA;

/// Local APIC flags bit 0: Enabled (ACPI 6.5 §5.2.12.2, Table 5.23).
pub const LAPIC_ENABLED: u32 = 1;
/// Local APIC flags bit 1: Online Capable (ACPI 6.5 Table 5.23; MADT revision 5+).
pub const LAPIC_ONLINE_CAPABLE: u32 = 1 << 1;

/// Polarity bits of MPS INTI flags (ACPI 6.5 §5.2.12.5, Table 5.26).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptPolarity {
    /// `00`: conforms to the bus (ISA: active-high).
    Conforms,
    /// `01`: active-high.
    ActiveHigh,
    /// `10`: reserved.
    Reserved,
    /// `11`: active-low.
    ActiveLow,
}

/// Trigger-mode bits of MPS INTI flags (ACPI 6.5 §5.2.12.5, Table 5.26).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptTrigger {
    /// `00`: conforms to the bus (ISA: edge).
    Conforms,
    /// `01`: edge-triggered.
    Edge,
    /// `10`: reserved.
    Reserved,
    /// `11`: level-triggered.
    Level,
}

/// Decodes MPS INTI flags: bits 1:0 polarity, bits 3:2 trigger mode.
pub fn inti_flags(flags: u16) -> (InterruptPolarity, InterruptTrigger) {
    let polarity = match flags & 3 {
        0 => InterruptPolarity::Conforms,
        1 => InterruptPolarity::ActiveHigh,
        2 => InterruptPolarity::Reserved,
        _ => InterruptPolarity::ActiveLow,
    };
    let trigger = match (flags >> 2) & 3 {
        0 => InterruptTrigger::Conforms,
        1 => InterruptTrigger::Edge,
        2 => InterruptTrigger::Reserved,
        _ => InterruptTrigger::Level,
    };
    (polarity, trigger)
}

/// A processor: a Local APIC (type 0) or Local x2APIC (type 9) entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// ACPI processor UID (matches `_UID` of a processor device).
    pub uid: u32,
    /// Its (x2)APIC ID.
    pub apic_id: u32,
    /// Enabled: usable now. A disabled entry that is not online-capable is no CPU at all.
    pub enabled: bool,
    /// Online capable: may be enabled at run time.
    pub online_capable: bool,
    /// From a Local x2APIC entry.
    pub x2apic: bool,
}

/// An I/O APIC (type 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    /// Its I/O APIC ID.
    pub id: u8,
    /// Physical address of its registers.
    pub address: u64,
    /// First GSI its inputs carry.
    pub gsi_base: u32,
}

/// An Interrupt Source Override (type 2): ISA IRQ `source` arrives on `gsi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    /// Bus (0 = ISA).
    pub bus: u8,
    /// Bus-relative IRQ.
    pub source: u8,
    /// Global system interrupt.
    pub gsi: u32,
    /// Polarity.
    pub polarity: InterruptPolarity,
    /// Trigger mode.
    pub trigger: InterruptTrigger,
}

/// A Non-Maskable Interrupt Source (type 3): an I/O APIC input wired to NMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NmiSource {
    /// The GSI.
    pub gsi: u32,
    /// Polarity.
    pub polarity: InterruptPolarity,
    /// Trigger mode.
    pub trigger: InterruptTrigger,
}

/// A Local APIC NMI (type 4) or Local x2APIC NMI (type 0xA): which LINT pin carries NMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalNmi {
    /// Processor UID; 0xFF (type 4) or 0xFFFF_FFFF (type 0xA) means all processors.
    pub uid: u32,
    /// LINT0 or LINT1.
    pub lint: u8,
    /// Polarity.
    pub polarity: InterruptPolarity,
    /// Trigger mode.
    pub trigger: InterruptTrigger,
    /// From a Local x2APIC NMI entry.
    pub x2apic: bool,
}

impl LocalNmi {
    /// Whether it applies to every processor.
    pub fn all_processors(&self) -> bool {
        if self.x2apic {
            self.uid == u32::MAX
        } else {
            self.uid == 0xFF
        }
    }
}

/// The MADT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Madt {
    /// The header.
    pub header: SdtHeader,
    /// Whether the bytes sum to zero.
    pub checksum_ok: bool,
    /// The local APIC's physical address: the 32-bit field, or a type-5 override's.
    pub local_apic_address: u64,
    /// Dual 8259 PICs present (flags bit 0): mask them before using the I/O APICs.
    pub pcat_compat: bool,
    /// Processor entries (Local APIC and x2APIC), enabled or not, in table order.
    pub cpus: Vec<Cpu>,
    /// I/O APICs.
    pub io_apics: Vec<IoApic>,
    /// Interrupt source overrides.
    pub overrides: Vec<Override>,
    /// NMI sources.
    pub nmi_sources: Vec<NmiSource>,
    /// Local (x2)APIC NMIs.
    pub local_nmis: Vec<LocalNmi>,
    /// Entries skipped and why; a walk stopped early and why.
    pub errors: Vec<String>,
}

impl Madt {
    /// Parses a MADT (`APIC`).
    pub fn parse(bytes: &[u8]) -> Result<Self, TableError> {
        let t = Table::parse(bytes, "APIC", ENTRIES_AT)?;
        let b = t.bytes;
        let mut m = Self {
            header: t.header,
            checksum_ok: t.checksum_ok,
            local_apic_address: u32_at(b, HEADER_LEN).map_or(0, u64::from),
            pcat_compat: u32_at(b, HEADER_LEN + 4).is_some_and(|f| f & PCAT_COMPAT != 0),
            cpus: Vec::new(),
            io_apics: Vec::new(),
            overrides: Vec::new(),
            nmi_sources: Vec::new(),
            local_nmis: Vec::new(),
            errors: Vec::new(),
        };
        let mut address_override = None;
        let mut off = ENTRIES_AT;
        let mut index = 0usize;
        while off < b.len() {
            let (Some(ty), Some(len)) = (u8_at(b, off), u8_at(b, off.saturating_add(1))) else {
                m.errors.push(format!(
                    "entry {index} at {off:#x}: a stray byte at the end: walk stopped"
                ));
                break;
            };
            let entry = match off
                .checked_add(usize::from(len))
                .filter(|_| len >= 2)
                .and_then(|end| b.get(off..end))
            {
                Some(e) => e,
                None => {
                    m.errors.push(format!(
                        "entry {index} at {off:#x} (type {ty}): length {len} {}: walk stopped",
                        if len < 2 {
                            "is impossible"
                        } else {
                            "runs past the end"
                        }
                    ));
                    break;
                }
            };
            if let Err(why) = m.entry(ty, entry, &mut address_override) {
                m.errors.push(format!(
                    "entry {index} at {off:#x} (type {ty}): {why}: skipped"
                ));
            }
            off = off.saturating_add(entry.len());
            index = index.saturating_add(1);
        }
        if let Some(a) = address_override {
            m.local_apic_address = a;
        }
        Ok(m)
    }

    /// Decodes one entry (`e` starts at its type byte and is exactly its length).
    fn entry(
        &mut self,
        ty: u8,
        e: &[u8],
        address_override: &mut Option<u64>,
    ) -> Result<(), String> {
        let need = match ty {
            TYPE_LOCAL_APIC | TYPE_NMI_SOURCE => 8,
            TYPE_IO_APIC | TYPE_LOCAL_APIC_ADDRESS | TYPE_X2APIC_NMI => 12,
            TYPE_OVERRIDE => 10,
            TYPE_LOCAL_NMI => 6,
            TYPE_X2APIC => 16,
            _ => return Ok(()),
        };
        if e.len() < need {
            return Err(format!(
                "length {} is below the {need} bytes it needs",
                e.len()
            ));
        }
        // From here every field read is inside `e`; `short` cannot happen but is not a panic.
        let short = || String::from("short");
        match ty {
            TYPE_LOCAL_APIC => {
                let flags = u32_at(e, 4).ok_or_else(short)?;
                self.cpus.push(Cpu {
                    uid: u8_at(e, 2).map(u32::from).ok_or_else(short)?,
                    apic_id: u8_at(e, 3).map(u32::from).ok_or_else(short)?,
                    enabled: flags & LAPIC_ENABLED != 0,
                    online_capable: flags & LAPIC_ONLINE_CAPABLE != 0,
                    x2apic: false,
                });
            }
            TYPE_X2APIC => {
                let flags = u32_at(e, 8).ok_or_else(short)?;
                self.cpus.push(Cpu {
                    uid: u32_at(e, 12).ok_or_else(short)?,
                    apic_id: u32_at(e, 4).ok_or_else(short)?,
                    enabled: flags & LAPIC_ENABLED != 0,
                    online_capable: flags & LAPIC_ONLINE_CAPABLE != 0,
                    x2apic: true,
                });
            }
            TYPE_IO_APIC => self.io_apics.push(IoApic {
                id: u8_at(e, 2).ok_or_else(short)?,
                address: u32_at(e, 4).map(u64::from).ok_or_else(short)?,
                gsi_base: u32_at(e, 8).ok_or_else(short)?,
            }),
            TYPE_OVERRIDE => {
                let (polarity, trigger) = inti_flags(u16_at(e, 8).ok_or_else(short)?);
                self.overrides.push(Override {
                    bus: u8_at(e, 2).ok_or_else(short)?,
                    source: u8_at(e, 3).ok_or_else(short)?,
                    gsi: u32_at(e, 4).ok_or_else(short)?,
                    polarity,
                    trigger,
                });
            }
            TYPE_NMI_SOURCE => {
                let (polarity, trigger) = inti_flags(u16_at(e, 2).ok_or_else(short)?);
                self.nmi_sources.push(NmiSource {
                    gsi: u32_at(e, 4).ok_or_else(short)?,
                    polarity,
                    trigger,
                });
            }
            TYPE_LOCAL_NMI | TYPE_X2APIC_NMI => {
                let x2apic = ty == TYPE_X2APIC_NMI;
                let (uid, flags, lint) = if x2apic {
                    (u32_at(e, 4), u16_at(e, 2), u8_at(e, 8))
                } else {
                    (u8_at(e, 2).map(u32::from), u16_at(e, 3), u8_at(e, 5))
                };
                let (polarity, trigger) = inti_flags(flags.ok_or_else(short)?);
                let lint = lint.ok_or_else(short)?;
                if lint > 1 {
                    return Err(format!(
                        "names LINT{lint}; a local APIC has LINT0 and LINT1"
                    ));
                }
                self.local_nmis.push(LocalNmi {
                    uid: uid.ok_or_else(short)?,
                    lint,
                    polarity,
                    trigger,
                    x2apic,
                });
            }
            TYPE_LOCAL_APIC_ADDRESS => {
                let address = u64_at(e, 4).ok_or_else(short)?;
                if address == 0 {
                    return Err("local APIC address override to 0".into());
                }
                if address_override.is_some() {
                    return Err("a second local APIC address override (the first is used)".into());
                }
                *address_override = Some(address);
            }
            _ => {}
        }
        Ok(())
    }

    /// Processors that are enabled (Local APIC and x2APIC entries with the Enabled flag).
    pub fn enabled_cpus(&self) -> usize {
        self.cpus.iter().filter(|c| c.enabled).count()
    }

    /// The ISA interrupt source overrides (bus 0), as the AML layer applies them to link
    /// devices' `IRQ()` numbers.
    pub fn isa_overrides(&self) -> Vec<crate::aml::IsaOverride> {
        self.overrides
            .iter()
            .filter(|o| o.bus == 0)
            .map(|o| crate::aml::IsaOverride {
                source: o.source,
                gsi: o.gsi,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::testutil::{Rng, table};
    use alloc::vec;

    fn madt(entries: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![];
        body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        body.extend_from_slice(&PCAT_COMPAT.to_le_bytes());
        for e in entries {
            body.extend_from_slice(e);
        }
        table(b"APIC", 4, &body)
    }

    const LAPIC0: &[u8] = &[0, 8, 0, 0, 1, 0, 0, 0];
    const LAPIC1_DISABLED: &[u8] = &[0, 8, 1, 1, 0, 0, 0, 0];
    const LAPIC2_ONLINE_CAPABLE: &[u8] = &[0, 8, 2, 2, 2, 0, 0, 0];
    const IOAPIC: &[u8] = &[1, 12, 2, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0];
    const ISO_0_2: &[u8] = &[2, 10, 0, 0, 2, 0, 0, 0, 0, 0];
    const ISO_9_LEVEL_LOW: &[u8] = &[2, 10, 0, 9, 9, 0, 0, 0, 0x0f, 0];
    const NMI_ALL_LINT1: &[u8] = &[4, 6, 0xff, 5, 0, 1];
    const NMI_LINT4: &[u8] = &[4, 6, 0xff, 5, 0, 4];
    const X2APIC: &[u8] = &[9, 16, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0];
    const X2NMI: &[u8] = &[0xa, 12, 5, 0, 0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0];
    const NMI_SRC: &[u8] = &[3, 8, 0x0d, 0, 23, 0, 0, 0];
    const ADDR_OVERRIDE: &[u8] = &[5, 12, 0, 0, 0, 0, 0xe0, 0xfe, 1, 0, 0, 0];
    const UNKNOWN: &[u8] = &[0x7f, 4, 0xaa, 0xbb];

    #[test]
    fn a_full_table() {
        let t = madt(&[
            LAPIC0,
            LAPIC1_DISABLED,
            LAPIC2_ONLINE_CAPABLE,
            X2APIC,
            IOAPIC,
            ISO_0_2,
            ISO_9_LEVEL_LOW,
            NMI_SRC,
            NMI_ALL_LINT1,
            X2NMI,
            UNKNOWN,
        ]);
        let m = Madt::parse(&t).expect("parses");
        assert!(m.checksum_ok);
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        assert_eq!(m.local_apic_address, 0xfee0_0000);
        assert!(m.pcat_compat);
        assert_eq!(m.cpus.len(), 4);
        assert_eq!(m.enabled_cpus(), 2);
        assert!(m.cpus[2].online_capable && !m.cpus[2].enabled);
        assert_eq!(
            m.cpus[3],
            Cpu {
                uid: 7,
                apic_id: 0x100,
                enabled: true,
                online_capable: false,
                x2apic: true
            }
        );
        assert_eq!(
            m.io_apics,
            vec![IoApic {
                id: 2,
                address: 0xfec0_0000,
                gsi_base: 0
            }]
        );
        assert_eq!(m.overrides.len(), 2);
        assert_eq!(m.overrides[0].gsi, 2);
        assert_eq!(m.overrides[0].polarity, InterruptPolarity::Conforms);
        assert_eq!(m.overrides[1].polarity, InterruptPolarity::ActiveLow);
        assert_eq!(m.overrides[1].trigger, InterruptTrigger::Level);
        assert_eq!(
            m.nmi_sources,
            vec![NmiSource {
                gsi: 23,
                polarity: InterruptPolarity::ActiveHigh,
                trigger: InterruptTrigger::Level
            }]
        );
        assert_eq!(m.local_nmis.len(), 2);
        assert!(m.local_nmis.iter().all(LocalNmi::all_processors));
        assert_eq!(m.local_nmis[0].trigger, InterruptTrigger::Edge);
    }

    #[test]
    fn address_override_replaces_the_32_bit_field() {
        let m = Madt::parse(&madt(&[LAPIC0, ADDR_OVERRIDE, ADDR_OVERRIDE])).expect("parses");
        assert_eq!(m.local_apic_address, 0x1_fee0_0000);
        assert_eq!(m.errors.len(), 1, "the second override is recorded");
    }

    #[test]
    fn lint4_costs_only_its_entry() {
        let m = Madt::parse(&madt(&[NMI_LINT4, LAPIC0, NMI_ALL_LINT1])).expect("parses");
        assert_eq!(m.local_nmis.len(), 1);
        assert_eq!(m.enabled_cpus(), 1);
        assert_eq!(m.errors.len(), 1);
        assert!(m.errors[0].contains("LINT4"), "{}", m.errors[0]);
    }

    #[test]
    fn an_entry_too_short_for_its_type_is_skipped() {
        let short_ioapic: &[u8] = &[1, 8, 2, 0, 0, 0, 0xc0, 0xfe];
        let m = Madt::parse(&madt(&[short_ioapic, LAPIC0])).expect("parses");
        assert!(m.io_apics.is_empty());
        assert_eq!(m.enabled_cpus(), 1);
        assert_eq!(m.errors.len(), 1);
    }

    #[test]
    fn impossible_lengths_stop_the_walk() {
        for bad in [&[0u8, 0][..], &[0, 1], &[0, 40, 0, 0]] {
            let m = Madt::parse(&madt(&[LAPIC0, bad, LAPIC0])).expect("parses");
            assert_eq!(m.enabled_cpus(), 1, "{bad:?}");
            assert_eq!(m.errors.len(), 1);
            assert!(m.errors[0].contains("walk stopped"));
        }
        // A single stray byte at the end.
        let m = Madt::parse(&madt(&[LAPIC0, &[0]])).expect("parses");
        assert_eq!((m.enabled_cpus(), m.errors.len()), (1, 1));
    }

    #[test]
    fn header_problems() {
        let t = madt(&[LAPIC0]);
        assert!(matches!(
            Madt::parse(&t[..t.len() - 1]),
            Err(TableError::Truncated { .. })
        ));
        assert!(matches!(
            Madt::parse(&table(b"APIC", 1, &[0; 4])),
            Err(TableError::BadLength { length: 40 })
        ));
        let mut bad = t.clone();
        bad[9] = bad[9].wrapping_add(1);
        assert!(!Madt::parse(&bad).expect("kept").checksum_ok);
        // Bytes beyond the length field are ignored.
        let mut longer = t.clone();
        longer.extend_from_slice(LAPIC0);
        assert_eq!(Madt::parse(&longer).expect("parses").cpus.len(), 1);
    }

    #[test]
    fn inti_decoding() {
        use InterruptPolarity as P;
        use InterruptTrigger as T;
        assert_eq!(inti_flags(0), (P::Conforms, T::Conforms));
        assert_eq!(inti_flags(0b0101), (P::ActiveHigh, T::Edge));
        assert_eq!(inti_flags(0b1010), (P::Reserved, T::Reserved));
        assert_eq!(inti_flags(0xffff), (P::ActiveLow, T::Level));
    }

    #[test]
    fn never_panics_on_mutations() {
        let seed = madt(&[
            LAPIC0,
            X2APIC,
            IOAPIC,
            ISO_9_LEVEL_LOW,
            NMI_SRC,
            NMI_ALL_LINT1,
            X2NMI,
            ADDR_OVERRIDE,
        ]);
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for i in 0..20_000 {
            let input = if i % 4 == 0 {
                rng.noise(b"APIC")
            } else {
                rng.mutate(&seed)
            };
            if let Ok(m) = Madt::parse(&input) {
                assert!(m.enabled_cpus() <= m.cpus.len());
            }
        }
    }
}
