//! The model unit's interrupt path (§2.2.5, and what QEMU's `amdvi_int_remap_msi` does):
//! an MSI write by a requester, looked up through its device table entry and interrupt
//! remapping table, with device table entries and remapping entries cached until a command
//! invalidates them.

use super::spec::*;
use super::unit::Unit;

/// Why the unit did not deliver a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The device table entry could not be used (ILLEGAL_DEV_TABLE_ENTRY logged).
    IllegalEntry,
    /// IntCtl = 00b: fixed and arbitrated interrupts are aborted.
    Aborted,
    /// The index is beyond the table's length (IntTabLen): IO_PAGE_FAULT logged.
    BeyondTable,
    /// The entry's RemapEn is clear: IO_PAGE_FAULT logged (unless SupIOPF or IG).
    NotPresent,
    /// An entry the unit cannot use (GuestMode, a reserved IntType or reserved bits).
    BadEntry,
    /// An NMI, INIT or ExtINT message whose pass bit is clear, or a reserved type.
    NotPassed,
    /// The table is not memory (freed?).
    NoTable,
}

/// The interrupt fields of the third qword (bits 191:128), as the specification places them.
const IV: u64 = 1;
const INT_TABLE: u64 = 0x000f_ffff_ffff_ffc0;
const IG: u64 = 1 << 5;

impl Unit {
    /// A message by device `id` with `data` written to `0xFEE0_0000` (destination APIC 0,
    /// physical): Ok((vector, destination APIC ID, level-triggered)) as delivered.
    pub fn msi(&self, id: u16, data: u32) -> Result<(u8, u8, bool), Refused> {
        self.msi_at(id, 0xfee0_0000, data)
    }

    /// A message by device `id`: `data` written to `address` (in `0xFEEx_xxxx`).
    pub fn msi_at(&self, id: u16, address: u64, data: u32) -> Result<(u8, u8, bool), Refused> {
        let level = data & 1 << 15 != 0;
        let untranslated = Ok((data as u8, (address >> 12) as u8, level));
        if self.0.borrow().control & IOMMU_EN == 0 {
            return untranslated;
        }
        let e = self.dte(id, true).map_err(|()| Refused::IllegalEntry)?;
        if e[2] & IV == 0 {
            return untranslated;
        }
        // Data bits 10:8 give the type first (QEMU): fixed and arbitrated are remapped,
        // NMI, INIT and ExtINT pass only with their pass bits.
        let pass = match (data >> 8) & 7 {
            0 | 1 => None,
            4 => Some(58),
            5 => Some(56),
            7 => Some(57),
            _ => return Err(Refused::NotPassed),
        };
        if let Some(bit) = pass {
            return if e[2] >> bit & 1 != 0 {
                untranslated
            } else {
                Err(Refused::NotPassed)
            };
        }
        match (e[2] >> 60) & 3 {
            0 => return Err(Refused::Aborted),
            1 => return untranslated,
            _ => {}
        }
        let index = (data & 0x7ff) as u16;
        let length = 1u32 << ((e[2] >> 1) & 0xf);
        let root = e[2] & INT_TABLE;
        if root & 0x7f != 0 {
            self.0.borrow_mut().violations.push(format!(
                "device {id:#06x}: interrupt table {root:#x} not 128-byte aligned"
            ));
            return Err(Refused::NoTable);
        }
        let fault = |unit: &Unit| {
            if e[2] & IG == 0 {
                // IO_PAGE_FAULT, flags I (3) and RW (5).
                unit.log(Unit::event(0x2, id, (1 << 3 | 1 << 5) << 16, address));
            }
        };
        if u32::from(index) >= length {
            fault(self);
            return Err(Refused::BeyondTable);
        }
        let cached = self.0.borrow().irte_cache.get(&(id, index)).copied();
        let irte = match cached {
            Some(irte) => irte,
            None => {
                let at = root + 4 * u64::from(index);
                let Some(q) = self.1.peek(at & !7) else {
                    self.0
                        .borrow_mut()
                        .violations
                        .push(format!("interrupt table at {root:#x} is not table memory"));
                    return Err(Refused::NoTable);
                };
                let irte = (q >> (8 * (at & 4))) as u32;
                self.0.borrow_mut().irte_cache.insert((id, index), irte);
                irte
            }
        };
        if irte & 1 == 0 {
            if irte & 2 == 0 {
                fault(self);
            }
            return Err(Refused::NotPresent);
        }
        // GuestMode (7), IntType (4:2) above arbitrated, reserved 31:24; RqEoi (5) and DM
        // (6) are legal but never what the kernel means (QEMU takes RqEoi as the
        // redirection hint).
        if irte & 0xff00_0080 != 0 || (irte >> 2) & 7 > 1 {
            return Err(Refused::BadEntry);
        }
        if irte & 0x60 != 0 {
            self.0.borrow_mut().violations.push(format!(
                "device {id:#06x}: entry {irte:#x} with RqEoi or DM"
            ));
        }
        Ok(((irte >> 16) as u8, (irte >> 8) as u8, level))
    }

    /// Interrupt tables the unit may read: those its device table entries, cached or in
    /// memory, name.
    pub(super) fn interrupt_tables(&self) -> Vec<u64> {
        let s = self.0.borrow();
        let table = s.dev_table & 0x000f_ffff_ffff_f000;
        let entries = ((s.dev_table & 0x1ff) + 1) * 128;
        let mut pages: Vec<u64> = s
            .dte_cache
            .values()
            .filter(|e| e[2] & IV != 0)
            .map(|e| e[2] & INT_TABLE & !0xfff)
            .collect();
        drop(s);
        for id in 0..entries {
            if let Some(q) = self.1.peek(table + 32 * id + 16)
                && q & IV != 0
            {
                pages.push(q & INT_TABLE & !0xfff);
            }
        }
        pages
    }
}
