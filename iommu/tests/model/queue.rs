//! The model unit's invalidation queue (VT-d §6.5.2), written from the specification: 128-bit
//! descriptors fetched from IQA's pages at IQH up to IQT, each checked for its type and
//! reserved bits; an invalid one sets FSTS.IQE and stops the queue with IQH at it until
//! software clears IQE, when fetching resumes at IQH.

use super::{Model, vtd};

/// When the queue makes progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueMode {
    /// Everything queued is processed as soon as IQT is written (or IQE cleared).
    Immediate,
    /// One descriptor each time software reads a register: a unit working in the background,
    /// so software must wait for its wait descriptor's status.
    Lazy,
    /// Nothing is fetched (a hung unit).
    Paused,
}

/// What gives the unit a chance to fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    TailWrite,
    Resume,
    Read,
}

/// Descriptor types (bits 3:0, with 11:9 as bits 6:4).
const CONTEXT: u64 = 0x1;
const IOTLB: u64 = 0x2;
const IEC: u64 = 0x4;
const WAIT: u64 = 0x5;

impl Model {
    pub(super) fn run_queue(&self, trigger: Trigger) {
        let mode = self.0.borrow().queue;
        match (mode, trigger) {
            (QueueMode::Paused, _) => {}
            (QueueMode::Immediate, _) => while self.step() {},
            (QueueMode::Lazy, Trigger::Read) => {
                self.step();
            }
            (QueueMode::Lazy, _) => {}
        }
    }

    /// Descriptors the queue holds: 256 per 4 KiB page, 2^QS pages.
    fn slots(&self) -> u64 {
        256 << (self.0.borrow().iqa & 7)
    }

    pub(super) fn write_tail(&self, value: u64) {
        {
            let slots = self.slots();
            let mut s = self.0.borrow_mut();
            // QT is bits 18:4 for 128-bit descriptors; 3:0 and 63:19 are reserved.
            if value & 0xf != 0 || value >> 19 != 0 {
                s.violations.push(format!("IQT {value:#x}: reserved bits"));
            }
            if value >> 4 >= slots {
                s.violations
                    .push(format!("IQT {value:#x} past the queue's {slots} slots"));
                s.fsts |= vtd::IQE;
            }
            s.iqt = value & 0x7fff0;
        }
        self.run_queue(Trigger::TailWrite);
    }

    /// Fetches and carries out the descriptor at IQH: false when there was none to fetch
    /// (queue off or empty, an error pending) or it was invalid (IQE now set).
    fn step(&self) -> bool {
        let slots = self.slots();
        let (iqa, iqh) = {
            let s = self.0.borrow();
            if s.gsts & vtd::QIE == 0 || s.fsts & vtd::IQE != 0 || s.iqh == s.iqt {
                return false;
            }
            (s.iqa, s.iqh)
        };
        let base = iqa & !0xfff;
        let next = (iqh + 16) % (slots * 16);
        if base == 0 {
            // Firmware's queue: not modelled, its descriptors have no effect here.
            self.0.borrow_mut().iqh = next;
            return true;
        }
        let at = base + iqh;
        if !self.1.contains(at) {
            self.violation(format!("descriptor fetch at {at:#x}, outside the tables"));
            self.0.borrow_mut().fsts |= vtd::IQE;
            return false;
        }
        let descriptor = [self.table_read(at), self.table_read(at + 8)];
        match self.carry_out(descriptor) {
            Ok(()) => {
                self.0.borrow_mut().iqh = next;
                true
            }
            Err(why) => {
                let mut s = self.0.borrow_mut();
                if let Some(why) = why {
                    s.violations.push(format!(
                        "invalid descriptor {descriptor:#x?} at {at:#x}: {why}"
                    ));
                }
                s.fsts |= vtd::IQE;
                false
            }
        }
    }

    /// One descriptor. Err: invalid (with what was wrong, None for a type the test made the
    /// unit reject).
    fn carry_out(&self, [low, high]: [u64; 2]) -> Result<(), Option<String>> {
        let kind = (low & 0xf) | ((low >> 9) & 0x7) << 4;
        if self.0.borrow().rejected_type == Some(kind) {
            return Err(None);
        }
        let reserved = |mask_low: u64, mask_high: u64| -> Result<(), Option<String>> {
            if low & mask_low != 0 || high & mask_high != 0 {
                Err(Some("reserved bits set".into()))
            } else {
                Ok(())
            }
        };
        let mut s = self.0.borrow_mut();
        match kind {
            // Context-cache invalidate (§6.5.2.1): G 5:4, DID 31:16, SID 47:32, FM 49:48.
            CONTEXT => {
                reserved(0xf1c0 | 0xfffc << 48, !0)?;
                let did = (low >> 16) & 0xffff;
                let sid = ((low >> 32) & 0xffff) as u16;
                // FM: 01 ignores SID bit 2, 10 bits 2:1, 11 bits 2:0.
                let mask = !((0b111u16 << (3 - ((low >> 48) & 3))) & 0b111);
                match (low >> 4) & 3 {
                    1 => s.context_cache.clear(),
                    2 => s.context_cache.retain(|_, e| (e.1 >> 8) & 0xffff != did),
                    3 => s.context_cache.retain(|k, _| k & mask != sid & mask),
                    _ => return Err(Some("context-cache granularity 0".into())),
                }
                s.context_invalidations += 1;
            }
            // IOTLB invalidate (§6.5.2.3): G 5:4, DW 6, DR 7, DID 31:16; ADDR 63:12, IH 6,
            // AM 5:0.
            IOTLB => {
                reserved(0xf100 | 0xffff_ffff << 32, 0xf80)?;
                let did = ((low >> 16) & 0xffff) as u16;
                match (low >> 4) & 3 {
                    1 => {
                        s.tlb.clear();
                        s.iotlb_invalidations.push(None);
                    }
                    2 => {
                        s.tlb.retain(|k, _| k.0 != did);
                        s.iotlb_invalidations.push(Some(did));
                    }
                    3 => {
                        let first = high & !0xfff;
                        let end = first + (0x1000 << (high & 0x3f));
                        s.tlb
                            .retain(|k, _| k.0 != did || !(first..end).contains(&k.1));
                        s.iotlb_invalidations.push(Some(did));
                    }
                    _ => return Err(Some("IOTLB granularity 0".into())),
                }
            }
            // Interrupt entry cache invalidate (§6.5.2.7): G 4 (0 global, 1 index), IM 31:27,
            // IIDX 47:32.
            IEC => {
                reserved(0x07ff_f1e0 | 0xffff << 48, !0)?;
                if s.ecap & vtd::ECAP_IR == 0 {
                    return Err(Some(
                        "interrupt entry cache invalidation without ECAP.IR".into(),
                    ));
                }
                if low & 1 << 4 == 0 {
                    s.irte_cache.clear();
                    s.iec_since_latch = true;
                    s.iec_invalidations.push(None);
                } else {
                    let im = (low >> 27) & 0x1f;
                    let index = (low >> 32) & 0xffff;
                    s.irte_cache
                        .retain(|&k, _| u64::from(k) >> im != index >> im);
                    s.iec_invalidations.push(Some(index as u16));
                }
            }
            // Invalidation wait (§6.5.2.8): IF 4, SW 5, FN 6, PD 7, status data 63:32; status
            // address 63:2.
            WAIT => {
                reserved(0xffff_f100, 0x3)?;
                s.waits += 1;
                if low & 1 << 4 != 0 {
                    s.ics |= vtd::IWC;
                }
                if low & 1 << 5 != 0 && !s.stuck_waits {
                    let address = high & !0x3;
                    drop(s);
                    if !self.1.device_write32(address, (low >> 32) as u32) {
                        self.violation(format!(
                            "wait descriptor status write to {address:#x}, outside the tables"
                        ));
                    }
                }
            }
            other => return Err(Some(format!("descriptor type {other:#x}"))),
        }
        Ok(())
    }
}
