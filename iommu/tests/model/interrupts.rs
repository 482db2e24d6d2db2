//! The model unit's interrupt remapping (VT-d §5.1, §9.10), written from the specification:
//! an interrupt request is a write to 0xFEEx_xxxx; with IRE on, a remappable-format request
//! names an entry of the table latched by SIRTP, which the unit reads (caching it until an
//! interrupt entry cache invalidation) and checks before it delivers what the entry says.

use super::{Model, vtd};

/// What an interrupt request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqOutcome {
    /// Reached a processor: this vector, APIC ID, and trigger mode.
    Delivered {
        vector: u8,
        destination: u32,
        level: bool,
    },
    /// Blocked with this fault reason (§7.1.3, appendix A): 20h malformed request, 21h index
    /// past the table, 22h entry not present, 23h table not reachable, 24h reserved bits in
    /// the entry, 25h compatibility format blocked, 26h source check failed.
    Refused(u8),
}

/// Bits 2:0 of a requester ID (its function number) that SQ / FM leave out of a comparison:
/// 01 bit 2, 10 bits 2:1, 11 bits 2:0.
fn compared(qualifier: u64) -> u16 {
    !((0b111u16 << (3 - (qualifier & 3))) & 0b111)
}

/// The compatibility format (§5.1.5.1 with IRE off, or CFIS): vector in data 7:0, trigger
/// mode in data 15, APIC ID in address 19:12.
fn compatibility(address: u64, data: u32) -> IrqOutcome {
    IrqOutcome::Delivered {
        vector: data as u8,
        destination: ((address >> 12) & 0xff) as u32,
        level: data & 1 << 15 != 0,
    }
}

impl Model {
    /// An interrupt request (a dword write of `data` to `address`) by `source`
    /// (bus << 8 | devfn).
    pub fn interrupt(&self, source: u16, address: u64, data: u32) -> IrqOutcome {
        let (gsts, latched, since_latch) = {
            let s = self.0.borrow();
            (s.gsts, s.irta_latched, s.iec_since_latch)
        };
        if gsts & vtd::IRE == 0 {
            return compatibility(address, data);
        }
        if address >> 32 != 0 || (address >> 20) & 0xfff != 0xfee {
            return self.refuse(source, 0, 0x20, false);
        }
        let Some(irta) = latched else {
            self.violation("interrupt remapping on with no table latched".into());
            return self.refuse(source, 0, 0x23, false);
        };
        let eime = irta & vtd::EIME != 0;
        // Interrupt format (address bit 4): 0 compatibility, 1 remappable (§5.1.2).
        if address & 1 << 4 == 0 {
            if gsts & vtd::CFI != 0 && !eime {
                return compatibility(address, data);
            }
            return self.refuse(source, 0, 0x25, false);
        }
        if !since_latch {
            self.violation(
                "interrupt remapped through a table latched without a global interrupt entry \
                 cache invalidation since"
                    .into(),
            );
        }
        // handle[14:0] in 19:5, handle[15] in 2; SHV (3): plus the subhandle, data 15:0.
        let handle = ((address >> 5) & 0x7fff) as u32 | (((address >> 2) & 1) as u32) << 15;
        let index = if address & 1 << 3 != 0 {
            handle + (data & 0xffff)
        } else {
            handle
        };
        if u64::from(index) >= 2 << (irta & 0xf) {
            return self.refuse(source, index, 0x21, false);
        }
        let Some((low, high)) = self.irte(irta, index) else {
            return self.refuse(source, index, 0x23, false);
        };
        let fpd = low & 1 << 1 != 0;
        if low & 1 == 0 {
            return self.refuse(source, index, 0x22, fpd);
        }
        // Reserved in a remapped-format entry: low 14:12, IM (15, no posted interrupts),
        // 31:24, and in xAPIC mode the destination's 39:32 and 63:48; high 63:20; delivery
        // modes 011b and 110b; SVT 11b.
        let mut reserved_low = 0x7000 | 1 << 15 | 0xff00_0000;
        if !eime {
            reserved_low |= 0xff << 32 | 0xffff << 48;
        }
        let mode = (low >> 5) & 7;
        let svt = (high >> 18) & 3;
        if low & reserved_low != 0 || high >> 20 != 0 || mode == 3 || mode == 6 || svt == 3 {
            return self.refuse(source, index, 0x24, fpd);
        }
        let sid = (high & 0xffff) as u16;
        let passes = match svt {
            0 => true,
            1 => {
                let mask = compared(high >> 16);
                source & mask == sid & mask
            }
            _ => ((sid >> 8)..=(sid & 0xff)).contains(&(source >> 8)),
        };
        if !passes {
            return self.refuse(source, index, 0x26, fpd);
        }
        IrqOutcome::Delivered {
            vector: (low >> 16) as u8,
            destination: if eime {
                (low >> 32) as u32
            } else {
                ((low >> 40) & 0xff) as u32
            },
            level: low & 1 << 4 != 0,
        }
    }

    /// Entry `index` of the table at `irta`: cached, or read (and cached if present, or
    /// under caching mode). None when the table is not in memory.
    fn irte(&self, irta: u64, index: u32) -> Option<(u64, u64)> {
        if let Some(&e) = self.0.borrow().irte_cache.get(&index) {
            return Some(e);
        }
        let at = (irta & !0xfff) + 16 * u64::from(index);
        if !self.1.contains(at) {
            self.violation(format!(
                "interrupt remapping entry at {at:#x}, outside the tables"
            ));
            return None;
        }
        let e = (self.table_read(at), self.table_read(at + 8));
        let mut s = self.0.borrow_mut();
        if e.0 & 1 != 0 || s.cap & vtd::CAP_CM != 0 {
            s.irte_cache.insert(index, e);
        }
        Some(e)
    }

    /// Records the refusal (FI: the index in 63:48, §11.4.7.3) unless the entry's FPD says
    /// not to.
    fn refuse(&self, source: u16, index: u32, reason: u8, fpd: bool) -> IrqOutcome {
        if !fpd {
            self.record(source, u64::from(index & 0xffff) << 48, true, reason);
        }
        IrqOutcome::Refused(reason)
    }
}
