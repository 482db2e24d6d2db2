//! Which requester ID each I/O APIC's interrupt messages carry, as AMD interrupt remapping
//! needs it (AMD IOMMU spec, doc 48882 rev 3.x, §5.2.2.2, special device entry 48h).
//!
//! An I/O APIC is not a PCI function: enumerating PCI does not find it, yet its interrupt
//! messages reach the IOMMU with a requester ID like any device's DMA, and the IOMMU looks
//! up that requester's device table entry to find the interrupt remapping table to use.
//! Firmware says which requester ID each I/O APIC uses with a special device entry (type
//! 48h) of the IVHD of the IOMMU its messages go through: variety 1 (I/O APIC), handle =
//! the I/O APIC ID the MADT gives it, and the requester ID at offset 5.
//!
//! Once interrupt remapping is on, an I/O APIC whose requester has no device table entry
//! set up would lose every interrupt; so an OS turns it on only when every I/O APIC of the
//! MADT is named (Linux: `check_ioapic_information`, which logs `IOAPIC[n] not in IVRS
//! table` and leaves interrupt remapping off).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{Ivrs, SpecialKind};

/// An I/O APIC as AMD interrupt remapping sees it: its MADT ID, and the segment and
/// requester ID its messages carry (an IVHD special device entry 48h, variety 1, whose
/// handle is the I/O APIC ID; §5.2.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicSource {
    /// Its I/O APIC ID (the MADT's).
    pub id: u8,
    /// The PCI segment group of its messages: that of the IVHD whose entry names it.
    pub segment: u16,
    /// The requester ID its messages carry: bus << 8 | device << 3 | function.
    pub requester: u16,
}

impl Ivrs {
    /// The requester of each I/O APIC in `io_apics` (the MADT's I/O APIC IDs), from the
    /// special device entries of the IVHDs [`Ivrs::iommus`] picks; one per distinct ID, in
    /// the order of `io_apics`. Or why interrupt remapping cannot cover them all: an I/O
    /// APIC that no entry names (Linux then leaves interrupt remapping off too, `IOAPIC[n]
    /// not in IVRS table`). The message also says which I/O APIC IDs the entries do name.
    ///
    /// When two entries name the same I/O APIC with different requesters, the first one
    /// counts (IOMMUs in the order of [`Ivrs::iommus`], entries in table order), as Linux's
    /// lookup also returns the first. Entries naming an I/O APIC the MADT does not have are
    /// ignored.
    pub fn io_apic_sources(&self, io_apics: &[u8]) -> Result<Vec<IoApicSource>, String> {
        self.io_apic_sources_with(io_apics, &[])
    }

    /// The same, with `overrides` (from the command line, [`parse_overrides`]) taking the
    /// place of what the entries say for the I/O APICs they name, as Linux's `ivrs_ioapic`
    /// option does for firmware that names the wrong requester or none.
    pub fn io_apic_sources_with(
        &self,
        io_apics: &[u8],
        overrides: &[IoApicSource],
    ) -> Result<Vec<IoApicSource>, String> {
        // Every I/O APIC the overrides and the entries name, with the first requester.
        let mut listed: Vec<IoApicSource> = Vec::new();
        for o in overrides {
            if !listed.iter().any(|n| n.id == o.id) {
                listed.push(*o);
            }
        }
        for unit in self.iommus() {
            for s in unit
                .specials
                .iter()
                .filter(|s| s.kind == SpecialKind::IoApic)
            {
                if !listed.iter().any(|n| n.id == s.handle) {
                    listed.push(IoApicSource {
                        id: s.handle,
                        segment: unit.segment,
                        requester: s.source,
                    });
                }
            }
        }
        let mut missing: Vec<u8> = Vec::new();
        let mut out: Vec<IoApicSource> = Vec::new();
        for &id in io_apics {
            match listed.iter().find(|n| n.id == id) {
                Some(n) if !out.contains(n) => out.push(*n),
                Some(_) => {}
                None if !missing.contains(&id) => missing.push(id),
                None => {}
            }
        }
        if !missing.is_empty() {
            let ids: Vec<u8> = listed.iter().map(|n| n.id).collect();
            return Err(format!(
                "no IVHD special device entry names the I/O APIC(s) with ID {missing:?}; {}",
                if ids.is_empty() {
                    String::from("no entry names an I/O APIC")
                } else {
                    format!("the entries name {ids:?}")
                }
            ));
        }
        Ok(out)
    }
}

/// Parses the `ivrs_ioapic` command-line option: comma-separated `<id>@[<segment>:]<bus>:<device>.<function>`,
/// with the I/O APIC ID in decimal and the rest in hexadecimal as `lspci` prints it
/// (`ivrs_ioapic=4@00:14.0,5@0000:00:00.1`; Linux's option of the same name has the same
/// form). Each names the requester the I/O APIC's messages carry, in place of what the IVRS
/// says.
pub fn parse_overrides(text: &str) -> Result<Vec<IoApicSource>, String> {
    let mut out = Vec::new();
    for item in text.split(',').filter(|i| !i.is_empty()) {
        let bad = || format!("`{item}` is not <id>@[<segment>:]<bus>:<device>.<function>");
        let (id, address) = item.split_once('@').ok_or_else(bad)?;
        let id: u8 = id.parse().map_err(|_| bad())?;
        let (path, function) = address.rsplit_once('.').ok_or_else(bad)?;
        let mut parts = path.rsplit(':');
        let device = parts.next().ok_or_else(bad)?;
        let bus = parts.next().ok_or_else(bad)?;
        let segment = parts.next().unwrap_or("0");
        if parts.next().is_some() {
            return Err(bad());
        }
        let hex = |t: &str, max: u32| {
            u32::from_str_radix(t, 16)
                .ok()
                .filter(|v| *v <= max && !t.is_empty() && t.len() <= 4)
        };
        let (Some(segment), Some(bus), Some(device), Some(function)) = (
            hex(segment, 0xffff),
            hex(bus, 0xff),
            hex(device, 0x1f),
            hex(function, 7),
        ) else {
            return Err(bad());
        };
        out.push(IoApicSource {
            id,
            segment: segment as u16,
            requester: (bus << 8 | device << 3 | function) as u16,
        });
    }
    Ok(out)
}
