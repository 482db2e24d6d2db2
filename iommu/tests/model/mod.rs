//! A model remapping unit and memory for the host tests.
//!
//! [`Memory`] holds 4 KiB pages as qwords, counts pages in use and remembers which qwords
//! were written since their last flush, so that a non-coherent unit reading one is caught.
//! [`Model`] is one unit's registers (GCMD/GSTS, RTADDR, CCMD, IOTLB, fault records, in
//! [`mod@registers`]) and its DMA path: [`Model::access`] walks the latched root table the way the specification
//! describes (§3.4.3 legacy mode, §9), written here independently of the crate's tables,
//! through an IOTLB that caches translations until an invalidation. With ECAP.QI and ECAP.IR
//! ([`Model::with_interrupt_remapping`]) it also has an invalidation queue ([`mod@queue`])
//! and remaps interrupts ([`Model::interrupt`], in [`mod@interrupts`]) through a cache of
//! interrupt remapping entries that only an interrupt entry cache invalidation empties.

#![allow(dead_code)]

mod interrupts;
mod queue;
mod registers;

// Each test crate uses some of these.
#[allow(unused_imports)]
pub use interrupts::IrqOutcome;
#[allow(unused_imports)]
pub use queue::QueueMode;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use iommu::TableMemory;
use iommu::regs::*;

/// Queued invalidation and interrupt remapping registers and bits, as the specification
/// gives them (§11.4), independently of the crate's constants.
pub mod vtd {
    pub const IQH: u64 = 0x80;
    pub const IQT: u64 = 0x88;
    pub const IQA: u64 = 0x90;
    pub const ICS: u64 = 0x9c;
    pub const IRTA: u64 = 0xb8;
    /// ECAP: C (0), QI (1), IR (3), EIM (4), SMTS (43).
    pub const ECAP_C: u64 = 1 << 0;
    pub const ECAP_QI: u64 = 1 << 1;
    pub const ECAP_IR: u64 = 1 << 3;
    pub const ECAP_EIM: u64 = 1 << 4;
    pub const ECAP_SMTS: u64 = 1 << 43;
    /// CAP.CM (7): not-present entries may be cached.
    pub const CAP_CM: u64 = 1 << 7;
    /// GCMD / GSTS: QIE / QIES (26), IRE / IRES (25), SIRTP / IRTPS (24), CFI / CFIS (23).
    pub const QIE: u32 = 1 << 26;
    pub const IRE: u32 = 1 << 25;
    pub const SIRTP: u32 = 1 << 24;
    pub const CFI: u32 = 1 << 23;
    /// FSTS: PFO (0), PPF (1), IQE (4).
    pub const PFO: u32 = 1 << 0;
    pub const PPF: u32 = 1 << 1;
    pub const IQE: u32 = 1 << 4;
    /// ICS.IWC (0).
    pub const IWC: u32 = 1 << 0;
    /// IRTA.EIME (11); S in 3:0.
    pub const EIME: u64 = 1 << 11;
}

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
    /// Whether `phys` lies in a page given out.
    pub fn contains(&self, phys: u64) -> bool {
        self.0.borrow().pages.contains_key(&(phys & !0xfff))
    }
    /// A device's dword write to `phys` (4-aligned; the unit's status write): it reaches
    /// memory, and the processor's cached copy is snooped away. False outside the tables.
    pub fn device_write32(&self, phys: u64, value: u32) -> bool {
        let mut s = self.0.borrow_mut();
        let qword = phys & !7;
        let shift = (phys & 4) * 8;
        let Some(p) = s.pages.get_mut(&(qword & !0xfff)) else {
            return false;
        };
        let q = &mut p[((qword & 0xfff) / 8) as usize];
        *q = (*q & !(0xffff_ffff << shift)) | u64::from(value) << shift;
        s.dirty.remove(&qword);
        true
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
    /// FECTL (IM in bit 31, reset value masked), FEDATA, FEADDR, FEUADDR.
    pub fectl: u32,
    pub fe_message: [u32; 3],
    /// Fault event interrupts sent: (address, data).
    pub fault_events: Vec<(u64, u32)>,
    /// Invalidation queue head and tail (byte offsets, as the registers hold them). A queue
    /// at address 0 (firmware's, which the tests do not model) is consumed without effect.
    pub iqh: u64,
    pub iqt: u64,
    /// IQA as written.
    pub iqa: u64,
    /// FSTS bits other than PPF (which the records give): IQE, PFO.
    pub fsts: u32,
    /// ICS.IWC.
    pub ics: u32,
    /// When the queue makes progress.
    pub queue: QueueMode,
    /// Wait descriptors complete without writing their status (a queue that never reports).
    pub stuck_waits: bool,
    /// A descriptor type (bits 3:0 | 11:9 << 4) the unit treats as invalid.
    pub rejected_type: Option<u64>,
    /// Wait descriptors processed.
    pub waits: u64,
    /// Interrupt entry cache invalidations from the queue: None = global, Some(index).
    pub iec_invalidations: Vec<Option<u16>>,
    /// IRTA as written, and as latched by SIRTP.
    pub irta: u64,
    pub irta_latched: Option<u64>,
    /// A global interrupt entry cache invalidation happened since the latch.
    pub iec_since_latch: bool,
    /// Cached interrupt remapping entries: index -> (low, high).
    pub irte_cache: HashMap<u32, (u64, u64)>,
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
                fectl: 1 << 31,
                fe_message: [0; 3],
                fault_events: Vec::new(),
                iqh: 0,
                iqt: 0,
                iqa: 0,
                fsts: 0,
                ics: 0,
                queue: QueueMode::Lazy,
                stuck_waits: false,
                rejected_type: None,
                waits: 0,
                iec_invalidations: Vec::new(),
                irta: 0,
                irta_latched: None,
                iec_since_latch: false,
                irte_cache: HashMap::new(),
            })),
            memory.clone(),
        )
    }

    /// The same unit with queued invalidation and interrupt remapping (ECAP.QI, ECAP.IR), and
    /// extended interrupt mode (ECAP.EIM) if `eim`.
    pub fn with_interrupt_remapping(memory: &Memory, coherent: bool, eim: bool) -> Model {
        let model = Model::new(memory, coherent);
        model.state().ecap |= vtd::ECAP_QI | vtd::ECAP_IR | if eim { vtd::ECAP_EIM } else { 0 };
        model
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
        // A fault event interrupt when PPF goes from 0 to 1 with IM clear (§7.3.1).
        let was_pending = s.records.iter().any(|r| r.1 & FRCD_F != 0);
        if !was_pending && s.fectl & (1 << 31) == 0 && s.records.iter().any(|r| r.1 & FRCD_F == 0) {
            let [data, low, high] = s.fe_message;
            s.fault_events
                .push((u64::from(high) << 32 | u64::from(low), data));
        }
        if let Some(slot) = s.records.iter_mut().find(|r| r.1 & FRCD_F == 0) {
            *slot = (
                address & !0xfff,
                FRCD_F
                    | if write { 0 } else { FRCD_T }
                    | u64::from(reason) << 32
                    | u64::from(source),
            );
        } else {
            // Every register holds a fault: this one is lost (§7.2.1).
            s.fsts |= vtd::PFO;
        }
    }

    fn violation(&self, what: String) {
        self.0.borrow_mut().violations.push(what);
    }
}
