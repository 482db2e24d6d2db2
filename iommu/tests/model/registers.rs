//! The model unit's registers: GCMD/GSTS commands (§11.4.4), the root table pointer,
//! register-based invalidation (§6.5.1), fault status and records (§11.4.7), and the queued
//! invalidation and interrupt remapping registers (§11.4.8, §11.4.9).

use iommu::Registers;
use iommu::regs::*;

use super::{FRO, IRO, Model, NFR, queue, vtd};

impl Registers for Model {
    fn read32(&self, offset: u64) -> u32 {
        // Time passes with every register read: the queue moves on.
        self.run_queue(queue::Trigger::Read);
        let s = self.0.borrow();
        match offset {
            GSTS => s.gsts,
            GCMD => 0,
            FSTS => {
                let pending = s.records.iter().any(|r| r.1 & FRCD_F != 0);
                s.fsts | if pending { vtd::PPF } else { 0 }
            }
            vtd::ICS => s.ics,
            FECTL => s.fectl,
            _ => panic!("read32 of {offset:#x}"),
        }
    }
    fn write32(&self, offset: u64, value: u32) {
        match offset {
            GCMD => self.command(value),
            FSTS => {
                let resume = {
                    let mut s = self.0.borrow_mut();
                    let was = s.fsts;
                    s.fsts &= !(value & (vtd::IQE | vtd::PFO));
                    was & vtd::IQE != 0 && s.fsts & vtd::IQE == 0
                };
                // Cleared IQE: the unit fetches again from IQH (§6.5.2.10).
                if resume {
                    self.run_queue(queue::Trigger::Resume);
                }
            }
            vtd::ICS => self.0.borrow_mut().ics &= !(value & vtd::IWC),
            FECTL => {
                let mut s = self.0.borrow_mut();
                s.fectl = value & (1 << 31);
            }
            0x3c => self.0.borrow_mut().fe_message[0] = value,
            0x40 => self.0.borrow_mut().fe_message[1] = value,
            0x44 => self.0.borrow_mut().fe_message[2] = value,
            _ => panic!("write32 of {offset:#x}"),
        }
    }
    fn read64(&self, offset: u64) -> u64 {
        self.run_queue(queue::Trigger::Read);
        let s = self.0.borrow();
        match offset {
            CAP => s.cap,
            ECAP => s.ecap,
            RTADDR => s.rtaddr,
            CCMD => s.ccmd,
            vtd::IQH => s.iqh,
            vtd::IQT => s.iqt,
            vtd::IQA => s.iqa,
            vtd::IRTA => s.irta,
            o if o == IRO * 16 + 8 => s.iotlb,
            o if (FRO * 16..FRO * 16 + 16 * NFR).contains(&o) => {
                let r = s.records[((o - FRO * 16) / 16) as usize];
                if o % 16 == 0 { r.0 } else { r.1 }
            }
            _ => panic!("read64 of {offset:#x}"),
        }
    }
    fn write64(&self, offset: u64, value: u64) {
        if offset == vtd::IQT {
            self.write_tail(value);
            return;
        }
        let mut s = self.0.borrow_mut();
        match offset {
            RTADDR => s.rtaddr = value,
            CCMD => {
                if s.gsts & vtd::QIE != 0 {
                    s.violations
                        .push("register-based invalidation with queued invalidation on".into());
                }
                if value & CCMD_ICC != 0 && !s.stuck_ccmd {
                    s.context_invalidations += 1;
                    s.context_cache.clear();
                    s.ccmd = value & !CCMD_ICC;
                } else {
                    s.ccmd = value;
                }
            }
            vtd::IQA => {
                if s.gsts & vtd::QIE != 0 {
                    s.violations
                        .push("IQA written with queued invalidation on".into());
                }
                if value & (1 << 11) != 0 && s.ecap & vtd::ECAP_SMTS == 0 {
                    s.violations
                        .push("IQA.DW (256-bit descriptors) without scalable mode".into());
                }
                if value & 0x7f8 != 0 {
                    s.violations.push(format!("IQA {value:#x}: reserved bits"));
                }
                s.iqa = value;
            }
            vtd::IRTA => {
                if value & vtd::EIME != 0 && s.ecap & vtd::ECAP_EIM == 0 {
                    s.violations
                        .push("IRTA.EIME on a unit without ECAP.EIM".into());
                }
                if value & 0x7f0 != 0 {
                    s.violations.push(format!("IRTA {value:#x}: reserved bits"));
                }
                s.irta = value;
            }
            o if o == IRO * 16 + 8 => {
                if value & IOTLB_IVT != 0 {
                    if s.gsts & vtd::QIE != 0 {
                        s.violations
                            .push("register-based invalidation with queued invalidation on".into());
                    }
                    let granularity = (value >> 60) & 3;
                    let did = ((value >> IOTLB_DID_SHIFT) & 0xffff) as u16;
                    match granularity {
                        1 => {
                            s.tlb.clear();
                            s.iotlb_invalidations.push(None);
                        }
                        2 => {
                            s.tlb.retain(|k, _| k.0 != did);
                            s.iotlb_invalidations.push(Some(did));
                        }
                        g => s.violations.push(format!("IOTLB granularity {g}")),
                    }
                }
                s.iotlb = value & !IOTLB_IVT;
            }
            o if (FRO * 16..FRO * 16 + 16 * NFR).contains(&o) && o % 16 == 8 => {
                let i = ((o - FRO * 16) / 16) as usize;
                if value & FRCD_F != 0 {
                    s.records[i].1 &= !FRCD_F;
                }
            }
            _ => panic!("write64 of {offset:#x}"),
        }
    }
}

impl Model {
    /// A GCMD write: at most one command, persistent bits compared with GSTS (§11.4.4.1).
    fn command(&self, value: u32) {
        let mut s = self.0.borrow_mut();
        s.commands.push(value);
        let persistent = s.gsts & GSTS_PERSISTENT;
        let changed = (value ^ persistent) & GSTS_PERSISTENT;
        let one_shot = value & !GSTS_PERSISTENT;
        if changed.count_ones() + one_shot.count_ones() > 1 {
            let gsts = s.gsts;
            s.violations.push(format!(
                "GCMD {value:#x} with status {gsts:#x}: more than one command"
            ));
        }
        let ir = s.ecap & vtd::ECAP_IR != 0;
        if changed & vtd::QIE != 0 {
            if value & vtd::QIE != 0 {
                if s.ecap & vtd::ECAP_QI == 0 {
                    s.violations
                        .push("queued invalidation on a unit without ECAP.QI".into());
                } else {
                    // The head starts at the queue's base (§11.4.8.1).
                    s.iqh = 0;
                    s.gsts |= vtd::QIE;
                }
            } else {
                if s.iqh != s.iqt {
                    s.violations
                        .push("queued invalidation off before the queue drained".into());
                }
                s.gsts &= !vtd::QIE;
            }
        }
        if changed & vtd::IRE != 0 {
            if value & vtd::IRE != 0 {
                if !ir {
                    s.violations
                        .push("interrupt remapping on a unit without ECAP.IR".into());
                } else {
                    if s.irta_latched.is_none() {
                        s.violations
                            .push("interrupt remapping on with no table latched".into());
                    }
                    if !s.iec_since_latch {
                        s.violations.push(
                            "interrupt remapping on without a global interrupt entry cache \
                             invalidation since the table was latched"
                                .into(),
                        );
                    }
                    s.gsts |= vtd::IRE;
                }
            } else {
                s.gsts &= !vtd::IRE;
            }
        }
        if changed & vtd::CFI != 0 {
            if !ir {
                s.violations.push("CFI on a unit without ECAP.IR".into());
            }
            s.gsts = (s.gsts & !vtd::CFI) | (value & vtd::CFI);
        }
        if one_shot & vtd::SIRTP != 0 {
            if ir {
                s.irta_latched = Some(s.irta);
                s.gsts |= vtd::SIRTP;
                s.irte_cache.clear();
                s.iec_since_latch = false;
            } else {
                s.violations.push("SIRTP on a unit without ECAP.IR".into());
            }
        }
        if one_shot & GCMD_SRTP != 0 {
            s.latched = Some(s.rtaddr & !0xfff);
            s.gsts |= GCMD_SRTP;
            s.context_cache.clear();
        }
        if one_shot & GCMD_WBF != 0 {
            s.write_buffer_flushes += 1;
        }
        if changed & GCMD_TE != 0 {
            if value & GCMD_TE != 0 {
                if s.context_invalidations == 0 || s.iotlb_invalidations.is_empty() {
                    s.violations
                        .push("translation on before invalidating".into());
                }
                s.gsts |= GCMD_TE;
            } else {
                s.gsts &= !GCMD_TE;
            }
        }
    }
}
