//! Which remapping unit remaps each I/O APIC's interrupts, and the requester ID its
//! messages carry (VT-d §8.3.1.1: an I/O APIC device scope's enumeration ID is the I/O APIC
//! ID of the MADT, and its path names the I/O APIC's own bus, device and function).
//!
//! Interrupt remapping blocks compatibility-format messages, so an I/O APIC that no unit
//! lists would lose every interrupt: an OS turns interrupt remapping on only when every
//! I/O APIC the MADT describes is found here (Linux: `ir_parse_ioapic_hpet_scope`, then
//! "not all IO-APIC's listed under remapping hardware").

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{Dmar, ScopeKind};

/// An I/O APIC as interrupt remapping sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicScope {
    /// Index of the DRHD that lists it, in [`Dmar::units`].
    pub unit: usize,
    /// Its I/O APIC ID (the MADT's).
    pub id: u8,
    /// The requester ID of its messages: bus << 8 | device << 3 | function.
    pub requester: u16,
}

impl Dmar {
    /// Whether the table offers interrupt remapping (flag INTR_REMAP, bit 0).
    pub fn offers_interrupt_remapping(&self) -> bool {
        self.flags & 1 != 0
    }

    /// The unit and requester ID of each I/O APIC in `io_apics` (the MADT's IDs), or why
    /// interrupt remapping cannot cover them all: an I/O APIC no unit lists, or a scope
    /// whose path does not name one device directly (an I/O APIC sits on its start bus).
    pub fn io_apic_scopes(&self, io_apics: &[u8]) -> Result<Vec<IoApicScope>, String> {
        let mut found: Vec<IoApicScope> = Vec::new();
        for (unit, drhd) in self.units.iter().enumerate() {
            for s in drhd.scopes.iter().filter(|s| s.kind == ScopeKind::IoApic) {
                if !io_apics.contains(&s.enumeration_id)
                    || found.iter().any(|f| f.id == s.enumeration_id)
                {
                    continue;
                }
                let &[(device, function)] = s.path.as_slice() else {
                    return Err(format!(
                        "the scope of I/O APIC {} has a path of {} hops",
                        s.enumeration_id,
                        s.path.len()
                    ));
                };
                if device > 31 || function > 7 {
                    return Err(format!(
                        "the scope of I/O APIC {} names device {device} function {function}",
                        s.enumeration_id
                    ));
                }
                found.push(IoApicScope {
                    unit,
                    id: s.enumeration_id,
                    requester: u16::from(s.start_bus) << 8 | u16::from(device << 3 | function),
                });
            }
        }
        let missing: Vec<u8> = io_apics
            .iter()
            .copied()
            .filter(|id| !found.iter().any(|f| f.id == *id))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "no remapping unit lists the I/O APIC(s) with ID {missing:?}"
            ));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::super::{DeviceScope, Drhd};
    use super::*;

    fn ioapic(id: u8, bus: u8, path: Vec<(u8, u8)>) -> DeviceScope {
        DeviceScope {
            kind: ScopeKind::IoApic,
            enumeration_id: id,
            start_bus: bus,
            path,
        }
    }

    fn dmar(units: Vec<Vec<DeviceScope>>) -> Dmar {
        Dmar {
            address_width: 39,
            flags: 1,
            units: units
                .into_iter()
                .enumerate()
                .map(|(i, scopes)| Drhd {
                    flags: 0,
                    size: 0,
                    segment: 0,
                    register_base: 0xfed9_0000 + 0x1000 * i as u64,
                    scopes,
                })
                .collect(),
            reserved: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn each_io_apic_is_found_with_its_unit_and_requester() {
        let d = dmar(vec![
            vec![],
            vec![ioapic(8, 0xf0, vec![(0x1f, 0)]), ioapic(9, 0, vec![(5, 4)])],
        ]);
        assert!(d.offers_interrupt_remapping());
        assert_eq!(
            d.io_apic_scopes(&[8, 9]),
            Ok(vec![
                IoApicScope {
                    unit: 1,
                    id: 8,
                    requester: 0xf0f8
                },
                IoApicScope {
                    unit: 1,
                    id: 9,
                    requester: 0x002c
                },
            ])
        );
        // One the MADT does not have is ignored.
        assert_eq!(d.io_apic_scopes(&[9]).map(|v| v.len()), Ok(1));
    }

    #[test]
    fn a_missing_io_apic_or_a_path_through_bridges_is_an_error() {
        let d = dmar(vec![vec![ioapic(8, 0xf0, vec![(0x1f, 0)])]]);
        let e = d.io_apic_scopes(&[8, 2]).unwrap_err();
        assert!(e.contains("[2]"), "{e}");
        let d = dmar(vec![vec![ioapic(8, 0, vec![(1, 0), (0, 0)])]]);
        assert!(d.io_apic_scopes(&[8]).unwrap_err().contains("2 hops"));
        let d = dmar(vec![vec![ioapic(8, 0, vec![(40, 0)])]]);
        assert!(d.io_apic_scopes(&[8]).is_err());
    }
}
