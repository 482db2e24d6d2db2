//! A model remapping unit and memory for the host tests.
//!
//! [`Memory`] holds 4 KiB pages as qwords, counts pages in use and remembers which qwords
//! were written since their last flush, so that a non-coherent unit reading one is caught.
//! [`Model`] is one unit's registers (GCMD/GSTS, RTADDR, CCMD, IOTLB, fault records) and its
//! DMA path: [`Model::access`] walks the latched root table the way the specification
//! describes (§3.4.3 legacy mode, §9), written here independently of the crate's tables,
//! through an IOTLB that caches translations until an invalidation.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use iommu::regs::*;
use iommu::{Registers, TableMemory};

#[derive(Default)]
pub struct MemoryState {
    pub pages: BTreeMap<u64, Vec<u64>>,
    next: u64,
    pub allocated: u64,
    pub freed: u64,
    pub dirty: BTreeSet<u64>,
    pub flushes: u64,
    pub violations: Vec<String>,
    /// Refuse allocations after this many (None: never).
    pub fail_after: Option<u64>,
}

#[derive(Clone, Default)]
pub struct Memory(pub Rc<RefCell<MemoryState>>);

impl Memory {
    pub fn new() -> Memory {
        let m = Memory::default();
        m.0.borrow_mut().next = 0x10_0000;
        m
    }
    pub fn in_use(&self) -> u64 {
        let s = self.0.borrow();
        s.allocated - s.freed
    }
    fn qword(&self, phys: u64) -> u64 {
        let s = self.0.borrow();
        match s.pages.get(&(phys & !0xfff)) {
            Some(p) => p[((phys & 0xfff) / 8) as usize],
            None => 0,
        }
    }
}

impl TableMemory for Memory {
    fn alloc_page(&self) -> Option<u64> {
        let mut s = self.0.borrow_mut();
        if s.fail_after.is_some_and(|limit| s.allocated >= limit) {
            return None;
        }
        let phys = s.next;
        s.next += 0x1000;
        s.pages.insert(phys, vec![0; 512]);
        s.allocated += 1;
        Some(phys)
    }
    fn free_page(&self, phys: u64) {
        let mut s = self.0.borrow_mut();
        if s.pages.remove(&phys).is_none() {
            s.violations
                .push(format!("free of {phys:#x}, not allocated"));
        }
        s.freed += 1;
    }
    fn read(&self, phys: u64) -> u64 {
        let s = self.0.borrow();
        match s.pages.get(&(phys & !0xfff)) {
            Some(p) if phys.is_multiple_of(8) => p[((phys & 0xfff) / 8) as usize],
            _ => panic!("read of {phys:#x} outside the tables"),
        }
    }
    fn write(&self, phys: u64, value: u64) {
        let mut s = self.0.borrow_mut();
        match s.pages.get_mut(&(phys & !0xfff)) {
            Some(p) if phys.is_multiple_of(8) => p[((phys & 0xfff) / 8) as usize] = value,
            _ => panic!("write of {phys:#x} outside the tables"),
        }
        s.dirty.insert(phys);
    }
    fn flush(&self, phys: u64, len: u64) {
        let mut s = self.0.borrow_mut();
        s.flushes += 1;
        let end = phys + len;
        let gone: Vec<u64> = s.dirty.range(phys..end).copied().collect();
        for q in gone {
            s.dirty.remove(&q);
        }
    }
}

/// What a device request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reached this physical address.
    Reached(u64),
    /// Blocked with this fault reason (02h no context, 05h/06h not mapped, 01h no root).
    Fault(u8),
}

pub struct ModelState {
    pub cap: u64,
    pub ecap: u64,
    pub gsts: u32,
    pub rtaddr: u64,
    /// Root table the unit latched with SRTP.
    pub latched: Option<u64>,
    pub ccmd: u64,
    pub iotlb: u64,
    pub context_invalidations: u64,
    pub iotlb_invalidations: Vec<Option<u16>>,
    pub write_buffer_flushes: u64,
    /// Every GCMD write, in order.
    pub commands: Vec<u32>,
    pub violations: Vec<String>,
    /// Cached context entries: source id -> (low, high).
    pub context_cache: HashMap<u16, (u64, u64)>,
    /// Cached translations: (domain, page) -> physical page.
    pub tlb: HashMap<(u16, u64), u64>,
    /// Commands that never finish.
    pub stuck_ccmd: bool,
    /// Fault records: (low, high) qwords.
    pub records: Vec<(u64, u64)>,
    /// Invalidation queue head and tail; the head catches up one step per IQH read.
    pub iqh: u64,
    pub iqt: u64,
}

#[derive(Clone)]
pub struct Model(pub Rc<RefCell<ModelState>>, pub Memory);

/// Where the model puts its fault records and IOTLB registers (CAP.FRO, ECAP.IRO in 16-byte
/// units).
pub const FRO: u64 = 0x22;
pub const IRO: u64 = 0x20;
pub const NFR: u64 = 4;

impl Model {
    /// A unit with 48-bit (4-level) and 39-bit tables, 256 domain IDs (ND=2), pass-through,
    /// coherent or not.
    pub fn new(memory: &Memory, coherent: bool) -> Model {
        let cap = (0b0110 << CAP_SAGAW_SHIFT)
            | 2
            | (47 << CAP_MGAW_SHIFT)
            | (FRO << CAP_FRO_SHIFT)
            | ((NFR - 1) << CAP_NFR_SHIFT)
            | CAP_DRD
            | CAP_DWD;
        let ecap = ECAP_PT | (IRO << ECAP_IRO_SHIFT) | u64::from(coherent);
        Model(
            Rc::new(RefCell::new(ModelState {
                cap,
                ecap,
                gsts: 0,
                rtaddr: 0,
                latched: None,
                ccmd: 0,
                iotlb: 0,
                context_invalidations: 0,
                iotlb_invalidations: Vec::new(),
                write_buffer_flushes: 0,
                commands: Vec::new(),
                violations: Vec::new(),
                context_cache: HashMap::new(),
                tlb: HashMap::new(),
                stuck_ccmd: false,
                records: vec![(0, 0); NFR as usize],
                iqh: 0,
                iqt: 0,
            })),
            memory.clone(),
        )
    }

    pub fn state(&self) -> std::cell::RefMut<'_, ModelState> {
        self.0.borrow_mut()
    }

    fn table_read(&self, phys: u64) -> u64 {
        let m = self.1.0.borrow();
        let coherent = self.0.borrow().ecap & ECAP_C != 0;
        if !coherent && m.dirty.contains(&phys) {
            drop(m);
            self.0
                .borrow_mut()
                .violations
                .push(format!("walk read {phys:#x}, written but not flushed"));
        }
        self.1.qword(phys)
    }

    /// A DMA request by `source` (bus << 8 | devfn) to `address`.
    pub fn access(&self, source: u16, address: u64, write: bool) -> Outcome {
        let gsts = self.0.borrow().gsts;
        if gsts & GCMD_TE == 0 {
            return Outcome::Reached(address);
        }
        let Some(root) = self.0.borrow().latched else {
            return Outcome::Fault(0x01);
        };
        let cached = self.0.borrow().context_cache.get(&source).copied();
        let (low, high) = match cached {
            Some(e) => e,
            None => {
                let bus = u64::from(source >> 8);
                let r = self.table_read(root + 16 * bus);
                if r & 1 == 0 {
                    return Outcome::Fault(0x01);
                }
                let ctx = (r & 0x000f_ffff_ffff_f000) + 16 * u64::from(source & 0xff);
                let e = (self.table_read(ctx), self.table_read(ctx + 8));
                if e.0 & 1 == 0 {
                    return Outcome::Fault(0x02);
                }
                self.0.borrow_mut().context_cache.insert(source, e);
                e
            }
        };
        let did = ((high >> 8) & 0xffff) as u16;
        match (low >> 2) & 3 {
            2 => return Outcome::Reached(address),
            0 => {}
            tt => {
                self.0
                    .borrow_mut()
                    .violations
                    .push(format!("context TT {tt}"));
                return Outcome::Fault(0x03);
            }
        }
        let page = address & !0xfff;
        if let Some(p) = self.0.borrow().tlb.get(&(did, page)) {
            return Outcome::Reached(p | (address & 0xfff));
        }
        let levels = (high & 7) as u32 + 2;
        if !(3..=4).contains(&levels) {
            self.0
                .borrow_mut()
                .violations
                .push(format!("context AW {}", high & 7));
            return Outcome::Fault(0x04);
        }
        if address >> (12 + 9 * levels) != 0 {
            return Outcome::Fault(0x04);
        }
        let mut table = low & 0x000f_ffff_ffff_f000;
        let reason = if write { 0x05 } else { 0x06 };
        for level in (1..=levels).rev() {
            let index = (address >> (12 + 9 * (level - 1))) & 0x1ff;
            let e = self.table_read(table + 8 * index);
            let allowed = if write { e & 2 != 0 } else { e & 1 != 0 };
            if !allowed {
                self.record(source, address, write, reason);
                return Outcome::Fault(reason);
            }
            if level > 1 && e & (1 << 7) != 0 {
                self.0.borrow_mut().violations.push("large page".into());
                return Outcome::Fault(0x0a);
            }
            table = e & 0x000f_ffff_ffff_f000;
        }
        self.0.borrow_mut().tlb.insert((did, page), table);
        Outcome::Reached(table | (address & 0xfff))
    }

    fn record(&self, source: u16, address: u64, write: bool, reason: u8) {
        let mut s = self.0.borrow_mut();
        if let Some(slot) = s.records.iter_mut().find(|r| r.1 & FRCD_F == 0) {
            *slot = (
                address & !0xfff,
                FRCD_F
                    | if write { 0 } else { FRCD_T }
                    | u64::from(reason) << 32
                    | u64::from(source),
            );
        }
    }
}

impl Registers for Model {
    fn read32(&self, offset: u64) -> u32 {
        let s = self.0.borrow();
        match offset {
            GSTS => s.gsts,
            GCMD => 0,
            FSTS => 0,
            _ => panic!("read32 of {offset:#x}"),
        }
    }
    fn write32(&self, offset: u64, value: u32) {
        let mut s = self.0.borrow_mut();
        match offset {
            GCMD => {
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
                if changed & GCMD_QIE != 0 && value & GCMD_QIE == 0 {
                    if s.iqh != s.iqt {
                        s.violations
                            .push("queued invalidation off before the queue drained".into());
                    }
                    s.gsts &= !GCMD_QIE;
                }
                if changed & GCMD_IRE != 0 && value & GCMD_IRE == 0 {
                    s.gsts &= !GCMD_IRE;
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
            FSTS | FECTL => {}
            _ => panic!("write32 of {offset:#x}"),
        }
    }
    fn read64(&self, offset: u64) -> u64 {
        if offset == IQH {
            let mut s = self.0.borrow_mut();
            if s.iqh < s.iqt {
                s.iqh += 16;
            }
            return s.iqh;
        }
        let s = self.0.borrow();
        match offset {
            CAP => s.cap,
            ECAP => s.ecap,
            RTADDR => s.rtaddr,
            CCMD => s.ccmd,
            IQT => s.iqt,
            o if o == IRO * 16 + 8 => s.iotlb,
            o if (FRO * 16..FRO * 16 + 16 * NFR).contains(&o) => {
                let r = s.records[((o - FRO * 16) / 16) as usize];
                if o % 16 == 0 { r.0 } else { r.1 }
            }
            _ => panic!("read64 of {offset:#x}"),
        }
    }
    fn write64(&self, offset: u64, value: u64) {
        let mut s = self.0.borrow_mut();
        match offset {
            RTADDR => s.rtaddr = value,
            CCMD => {
                if s.gsts & GCMD_QIE != 0 {
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
            o if o == IRO * 16 + 8 => {
                if value & IOTLB_IVT != 0 {
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
