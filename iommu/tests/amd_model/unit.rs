//! The model unit: registers, command processor, event log and DMA path.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use iommu::Registers;

use super::memory::Memory;
use super::spec::*;

const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// A cached translation: Some((page, read, write)), or None for a not-present entry.
pub type Cached = Option<(u64, bool, bool)>;

pub struct UnitState {
    pub efr: u64,
    pub control: u64,
    pub status: u64,
    pub dev_table: u64,
    pub cmd_base: u64,
    pub event_base: u64,
    pub cmd_head: u64,
    pub cmd_tail: u64,
    pub event_head: u64,
    pub event_tail: u64,
    pub violations: Vec<String>,
    /// Cached device table entries, by device ID.
    pub dte_cache: HashMap<u16, [u64; 4]>,
    /// Cached translations by (domain, page): Some((page, read, write)), or None for a
    /// not-present entry (NpCache, which QEMU's unit reports).
    pub tlb: HashMap<(u16, u64), Cached>,
    /// Cached interrupt remapping entries by (device ID, index).
    pub irte_cache: HashMap<(u16, u16), u32>,
    pub np_cache: bool,
    /// Commands are never fetched (a unit that does not answer).
    pub stuck: bool,
    /// An opcode the unit treats as illegal.
    pub illegal_opcode: Option<u64>,
    /// Every command carried out, in order.
    pub executed: Vec<[u64; 2]>,
    /// Events the unit could not log (log off or full).
    pub lost_events: u64,
}

/// One model unit over a model memory.
#[derive(Clone)]
pub struct Unit(pub Rc<RefCell<UnitState>>, pub Memory);

impl Unit {
    /// A unit like QEMU's: INVALIDATE_IOMMU_ALL, 6-level host tables, NpCache.
    pub fn new(memory: &Memory) -> Unit {
        let state = Rc::new(RefCell::new(UnitState {
            efr: IA_SUP | HATS_6_LEVELS,
            control: 0,
            status: 0,
            dev_table: 0,
            cmd_base: 0,
            event_base: 0,
            cmd_head: 0,
            cmd_tail: 0,
            event_head: 0,
            event_tail: 0,
            violations: Vec::new(),
            dte_cache: HashMap::new(),
            tlb: HashMap::new(),
            irte_cache: HashMap::new(),
            np_cache: true,
            stuck: false,
            illegal_opcode: None,
            executed: Vec::new(),
            lost_events: 0,
        }));
        memory.0.borrow_mut().units.push(Rc::downgrade(&state));
        Unit(state, memory.clone())
    }

    pub fn state(&self) -> std::cell::RefMut<'_, UnitState> {
        self.0.borrow_mut()
    }

    /// The unit answers again and catches up with the commands queued.
    pub fn resume(&self) {
        self.0.borrow_mut().stuck = false;
        self.run();
    }

    fn violation(&self, what: String) {
        self.0.borrow_mut().violations.push(what);
    }

    fn on(&self) -> bool {
        self.0.borrow().control & IOMMU_EN != 0
    }

    fn update_run_bits(&self) {
        let mut s = self.0.borrow_mut();
        let on = s.control & IOMMU_EN != 0;
        let cmd = on && s.control & CMD_BUF_EN != 0;
        let log = on && s.control & EVENT_LOG_EN != 0;
        s.status = (s.status & !(CMD_BUF_RUN | EVENT_LOG_RUN))
            | if cmd { CMD_BUF_RUN } else { 0 }
            | if log { EVENT_LOG_RUN } else { 0 };
    }

    fn ring_bytes(base: u64) -> u64 {
        16 << ((base >> 56) & 0xf)
    }

    /// Checks that a base register names a run of pages given out, `len` bytes long.
    fn check_run(&self, what: &str, base: u64, len: u64) {
        let mut page = base & ADDR;
        while page < (base & ADDR) + len {
            if !self.1.contains(page) {
                self.violation(format!("{what} at {:#x} is not table memory", base & ADDR));
                return;
            }
            page += 0x1000;
        }
    }

    /// Logs an event (§2.5): four dwords.
    pub(super) fn log(&self, event: [u32; 4]) {
        let (base, head, tail, status, control) = {
            let s = self.0.borrow();
            (
                s.event_base,
                s.event_head,
                s.event_tail,
                s.status,
                s.control,
            )
        };
        if control & IOMMU_EN == 0 || control & EVENT_LOG_EN == 0 || status & EVENT_OVERFLOW != 0 {
            self.0.borrow_mut().lost_events += 1;
            return;
        }
        let size = Self::ring_bytes(base);
        let next = (tail + 16) % size;
        if next == head {
            let mut s = self.0.borrow_mut();
            s.status |= EVENT_OVERFLOW;
            s.lost_events += 1;
            return;
        }
        let at = (base & ADDR) + tail;
        let low = u64::from(event[1]) << 32 | u64::from(event[0]);
        let high = u64::from(event[3]) << 32 | u64::from(event[2]);
        if !self.1.poke(at, low) || !self.1.poke(at + 8, high) {
            self.violation(format!("event log at {at:#x} is not table memory"));
        }
        let mut s = self.0.borrow_mut();
        s.event_tail = next;
        s.status |= EVENT_LOG_INT;
    }

    pub(super) fn event(code: u32, id: u16, dword1_low: u32, address: u64) -> [u32; 4] {
        [
            u32::from(id),
            code << 28 | dword1_low,
            address as u32,
            (address >> 32) as u32,
        ]
    }

    /// Fetches and carries out commands from head to tail (§3.3.1).
    fn run(&self) {
        loop {
            let (base, head, tail, runs, stuck) = {
                let s = self.0.borrow();
                (
                    s.cmd_base,
                    s.cmd_head,
                    s.cmd_tail,
                    s.status & CMD_BUF_RUN != 0,
                    s.stuck,
                )
            };
            if !runs || stuck || head == tail {
                return;
            }
            let at = (base & ADDR) + head;
            let (Some(low), Some(high)) = (self.1.peek(at), self.1.peek(at + 8)) else {
                self.violation(format!("command at {at:#x} is not table memory"));
                self.log(Self::event(0x6, 0, 0, at));
                self.0.borrow_mut().status &= !CMD_BUF_RUN;
                return;
            };
            if !self.execute([low, high]) {
                // Illegal: logged, and the unit stops at the command (head stays).
                self.log(Self::event(0x5, 0, 0, at));
                self.0.borrow_mut().status &= !CMD_BUF_RUN;
                return;
            }
            let mut s = self.0.borrow_mut();
            s.executed.push([low, high]);
            s.cmd_head = (head + 16) % Self::ring_bytes(base);
        }
    }

    /// One command; false when it is illegal (reserved bits set, unknown opcode).
    fn execute(&self, cmd: [u64; 2]) -> bool {
        let opcode = cmd[0] >> 60;
        let bits = |q: u64, lo: u32, n: u32| (q >> lo) & ((1u64 << n) - 1);
        if self.0.borrow().illegal_opcode == Some(opcode) {
            return false;
        }
        match opcode {
            // COMPLETION_WAIT (§2.4.1): reserved 59:52 of the first qword.
            0x1 => {
                if bits(cmd[0], 52, 8) != 0 {
                    return false;
                }
                if cmd[0] & 1 != 0 {
                    let at = cmd[0] & 0x000f_ffff_ffff_fff8;
                    if !self.1.poke(at, cmd[1]) {
                        self.violation(format!("completion store to {at:#x}, not table memory"));
                    }
                }
                true
            }
            // INVALIDATE_DEVTAB_ENTRY (§2.4.2): only the device ID.
            0x2 => {
                if bits(cmd[0], 16, 44) != 0 || cmd[1] != 0 {
                    return false;
                }
                self.0.borrow_mut().dte_cache.remove(&(cmd[0] as u16));
                true
            }
            // INVALIDATE_IOMMU_PAGES (§2.4.3).
            0x3 => {
                if bits(cmd[0], 20, 12) != 0 || bits(cmd[0], 48, 12) != 0 || bits(cmd[1], 3, 9) != 0
                {
                    return false;
                }
                if cmd[1] & 4 != 0 {
                    self.violation("INVALIDATE_IOMMU_PAGES with GN (guest) set".into());
                }
                let domain = (cmd[0] >> 32) as u16;
                let address = cmd[1] & !0xfff;
                let (first, len) = if cmd[1] & 1 == 0 {
                    (address, 0x1000)
                } else {
                    let zero = (address | 0xfff).trailing_ones();
                    if zero >= 51 {
                        (0, u64::MAX)
                    } else {
                        let len = 1u64 << (zero + 1);
                        (address & !(len - 1), len)
                    }
                };
                self.0
                    .borrow_mut()
                    .tlb
                    .retain(|&(d, page), _| d != domain || page.wrapping_sub(first) >= len);
                true
            }
            // INVALIDATE_INTERRUPT_TABLE (§2.4.5): only the device ID (QEMU's mask).
            0x5 => {
                if bits(cmd[0], 16, 44) != 0 || cmd[1] != 0 {
                    return false;
                }
                let id = cmd[0] as u16;
                self.0.borrow_mut().irte_cache.retain(|&(d, _), _| d != id);
                true
            }
            // INVALIDATE_IOMMU_ALL (§2.4.8), when EFR.IASup.
            0x8 => {
                if self.0.borrow().efr & IA_SUP == 0 || bits(cmd[0], 0, 60) != 0 || cmd[1] != 0 {
                    return false;
                }
                let mut s = self.0.borrow_mut();
                s.dte_cache.clear();
                s.tlb.clear();
                s.irte_cache.clear();
                true
            }
            _ => false,
        }
    }

    fn table_entries(&self) -> u64 {
        ((self.0.borrow().dev_table & 0x1ff) + 1) * 4096 / 32
    }

    /// The device table entry of `id`, cached or read; Err(event) when it cannot be used.
    pub(super) fn dte(&self, id: u16, write: bool) -> Result<[u64; 4], ()> {
        if let Some(e) = self.0.borrow().dte_cache.get(&id) {
            return Ok(*e);
        }
        let at = (self.0.borrow().dev_table & ADDR) + 32 * u64::from(id);
        let rw = if write { 1 << 5 } else { 0 };
        if u64::from(id) >= self.table_entries() {
            self.violation(format!("device ID {id:#06x} beyond the device table"));
            self.log(Self::event(0x1, id, rw << 16, at));
            return Err(());
        }
        let mut e = [0; 4];
        for (i, q) in e.iter_mut().enumerate() {
            match self.1.peek(at + 8 * i as u64) {
                Some(v) => *q = v,
                None => {
                    self.violation(format!("device table entry at {at:#x} not in memory"));
                    self.log(Self::event(0x3, id, 0, at));
                    return Err(());
                }
            }
        }
        // Reserved bits: QEMU's masks, old and new (QEMU 10: 6:2 and 63 of qword 0, 53:52 of
        // qword 2, 14:0 and 53:48 of qword 3; before: 7:2, 53:52, 63; 55:52, 59; all of
        // qword 3), IntCtl = 11b (reserved), IntTabLen above 11 (reserved).
        if e[0] & 0x8030_0000_0000_00fc != 0
            || e[2] & 0x08f0_0000_0000_0000 != 0
            || e[3] != 0
            || (e[2] >> 60) & 3 == 3
            || (e[2] & 1 != 0 && (e[2] >> 1) & 0xf > 11)
        {
            self.violation(format!("device table entry {id:#06x}: {e:x?}"));
            self.log(Self::event(0x1, id, rw << 16, at));
            return Err(());
        }
        self.0.borrow_mut().dte_cache.insert(id, e);
        Ok(e)
    }

    fn page_fault(&self, id: u16, domain: u16, address: u64, write: bool, present: bool) {
        let flags = if write { 1 << 5 } else { 0 } | if present { 1 << 4 } else { 0 };
        self.log(Self::event(
            0x2,
            id,
            flags << 16 | u32::from(domain),
            address,
        ));
    }

    /// A DMA request by device `id` to `address`: where it lands, or Err when the unit
    /// blocked it (with an event logged).
    pub fn dma(&self, id: u16, address: u64, write: bool) -> Result<u64, ()> {
        if !self.on() {
            return Ok(address);
        }
        let e = self.dte(id, write)?;
        if e[0] & 1 == 0 {
            return Ok(address);
        }
        if e[0] & 2 == 0 {
            self.violation(format!("device {id:#06x}: V = 1 with TV = 0"));
            return Err(());
        }
        let domain = e[1] as u16;
        let mode = (e[0] >> 9) & 7;
        let (mut r, mut w) = (e[0] >> 61 & 1 != 0, e[0] >> 62 & 1 != 0);
        if mode == 0 {
            return if (write && w) || (!write && r) {
                Ok(address)
            } else {
                self.page_fault(id, domain, address, write, true);
                Err(())
            };
        }
        if !(3..=4).contains(&mode) {
            self.violation(format!("device {id:#06x}: Mode {mode}"));
            return Err(());
        }
        let page = address & !0xfff;
        let cached = self.0.borrow().tlb.get(&(domain, page)).copied();
        let found = match cached {
            Some(hit) => hit,
            None => {
                let walked = self.walk(id, e[0] & ADDR, mode, address, &mut r, &mut w)?;
                let entry = walked.map(|p| (p, r, w));
                if entry.is_some() || self.0.borrow().np_cache {
                    self.0.borrow_mut().tlb.insert((domain, page), entry);
                }
                entry
            }
        };
        match found {
            Some((p, r, w)) if (write && w) || (!write && r) => Ok(p | (address & 0xfff)),
            Some(_) => {
                self.page_fault(id, domain, address, write, true);
                Err(())
            }
            None => {
                self.page_fault(id, domain, address, write, false);
                Err(())
            }
        }
    }

    /// Walks the host page table (§2.2.3); Ok(None) at a not-present entry.
    fn walk(
        &self,
        id: u16,
        root: u64,
        mode: u64,
        address: u64,
        r: &mut bool,
        w: &mut bool,
    ) -> Result<Option<u64>, ()> {
        if address >> (12 + 9 * mode) != 0 {
            return Ok(None);
        }
        let mut table = root;
        for level in (1..=mode).rev() {
            let at = table + 8 * ((address >> (12 + 9 * (level - 1))) & 0x1ff);
            let Some(entry) = self.1.peek(at) else {
                self.violation(format!("walk of {at:#x}: not table memory (freed?)"));
                self.log(Self::event(0x4, id, 0, at));
                return Err(());
            };
            if entry & 1 == 0 {
                return Ok(None);
            }
            *r &= entry >> 61 & 1 != 0;
            *w &= entry >> 62 & 1 != 0;
            let next = (entry >> 9) & 7;
            if next != level - 1 {
                self.violation(format!(
                    "entry {entry:#x} at level {level}: NextLevel {next}"
                ));
                return Err(());
            }
            if entry & (0x7f << 52) != 0 || entry >> 63 != 0 {
                self.violation(format!("entry {entry:#x}: reserved bits"));
            }
            table = entry & ADDR;
        }
        Ok(Some(table))
    }

    /// Every table page the unit may read now: its own structures and the page tables its
    /// device table entries (cached or in memory) lead to.
    fn reachable(&self) -> BTreeSet<u64> {
        let mut pages = BTreeSet::new();
        let s = self.0.borrow();
        if s.control & IOMMU_EN == 0 {
            return pages;
        }
        let table = s.dev_table & ADDR;
        let entries = ((s.dev_table & 0x1ff) + 1) * 128;
        for i in 0..=(s.dev_table & 0x1ff) {
            pages.insert(table + 0x1000 * i);
        }
        pages.insert(s.cmd_base & ADDR);
        pages.insert(s.event_base & ADDR);
        let mut roots: Vec<(u64, u64)> = s
            .dte_cache
            .values()
            .filter(|e| e[0] & 3 == 3)
            .map(|e| (e[0] & ADDR, (e[0] >> 9) & 7))
            .collect();
        drop(s);
        pages.extend(self.interrupt_tables());
        for id in 0..entries {
            if let Some(q) = self.1.peek(table + 32 * id)
                && q & 3 == 3
            {
                roots.push((q & ADDR, (q >> 9) & 7));
            }
        }
        let mut stack = roots;
        while let Some((t, level)) = stack.pop() {
            if level == 0 || !pages.insert(t) {
                continue;
            }
            for i in 0..512 {
                if let Some(e) = self.1.peek(t + 8 * i)
                    && e & 1 != 0
                    && level > 1
                {
                    stack.push((e & ADDR, level - 1));
                }
            }
        }
        pages
    }

    fn read_register(&self, offset: u64) -> u64 {
        let s = self.0.borrow();
        match offset {
            DEV_TABLE_BASE => s.dev_table,
            CMD_BUF_BASE => s.cmd_base,
            EVENT_LOG_BASE => s.event_base,
            CONTROL => s.control,
            EFR => s.efr,
            CMD_BUF_HEAD => s.cmd_head,
            CMD_BUF_TAIL => s.cmd_tail,
            EVENT_LOG_HEAD => s.event_head,
            EVENT_LOG_TAIL => s.event_tail,
            STATUS => s.status,
            _ => 0,
        }
    }

    fn write_register(&self, offset: u64, value: u64) {
        let control = self.0.borrow().control;
        let on = control & IOMMU_EN != 0;
        match offset {
            DEV_TABLE_BASE => {
                if on {
                    self.violation("device table base written while IommuEn".into());
                }
                self.check_run("device table", value, ((value & 0x1ff) + 1) * 4096);
                self.0.borrow_mut().dev_table = value;
            }
            CMD_BUF_BASE => {
                if on || control & CMD_BUF_EN != 0 {
                    self.violation("command buffer base written while in use".into());
                }
                if (value >> 56) & 0xf < 8 {
                    self.violation(format!("ComLen {}", (value >> 56) & 0xf));
                }
                self.check_run("command buffer", value, Self::ring_bytes(value));
                let mut s = self.0.borrow_mut();
                s.cmd_base = value;
                s.cmd_head = 0;
                s.cmd_tail = 0;
            }
            EVENT_LOG_BASE => {
                if on || control & EVENT_LOG_EN != 0 {
                    self.violation("event log base written while in use".into());
                }
                if (value >> 56) & 0xf < 8 {
                    self.violation(format!("EventLen {}", (value >> 56) & 0xf));
                }
                self.check_run("event log", value, Self::ring_bytes(value));
                let mut s = self.0.borrow_mut();
                s.event_base = value;
                s.event_head = 0;
                s.event_tail = 0;
            }
            CONTROL => {
                if value & IOMMU_EN != 0 && control & IOMMU_EN == 0 {
                    let s = self.0.borrow();
                    let ready = s.dev_table != 0 && s.cmd_base != 0 && s.event_base != 0;
                    drop(s);
                    if !ready {
                        self.violation("IommuEn before the bases were programmed".into());
                    }
                }
                self.0.borrow_mut().control = value;
                self.update_run_bits();
                self.run();
            }
            CMD_BUF_HEAD => {
                if self.0.borrow().status & CMD_BUF_RUN != 0 {
                    self.violation("command buffer head written while it runs".into());
                }
                self.0.borrow_mut().cmd_head = value & 0x7fff0;
            }
            CMD_BUF_TAIL => {
                self.0.borrow_mut().cmd_tail = value & 0x7fff0;
                self.run();
            }
            EVENT_LOG_HEAD => self.0.borrow_mut().event_head = value & 0x7fff0,
            EVENT_LOG_TAIL => {
                if self.0.borrow().status & EVENT_LOG_RUN != 0 {
                    self.violation("event log tail written while it runs".into());
                }
                self.0.borrow_mut().event_tail = value & 0x7fff0;
            }
            STATUS => {
                let w1c = value & (EVENT_OVERFLOW | EVENT_LOG_INT | COM_WAIT_INT);
                self.0.borrow_mut().status &= !w1c;
            }
            _ => self.violation(format!("write of {value:#x} to register {offset:#x}")),
        }
    }
}

impl UnitState {
    /// Whether `unit` may still read a page of the run `[phys, phys + count pages)`: why,
    /// if so.
    pub fn references(
        unit: &Rc<RefCell<UnitState>>,
        memory: &Memory,
        phys: u64,
        count: usize,
    ) -> Option<String> {
        let model = Unit(unit.clone(), memory.clone());
        let reachable = model.reachable();
        (0..count as u64)
            .map(|i| phys + 0x1000 * i)
            .find(|p| reachable.contains(p))
            .map(|p| format!("page {p:#x} freed while the unit may read it"))
    }
}

impl Registers for Unit {
    fn read32(&self, offset: u64) -> u32 {
        (self.read_register(offset & !7) >> (8 * (offset & 4))) as u32
    }
    fn write32(&self, offset: u64, value: u32) {
        self.violation(format!("32-bit write of {value:#x} to {offset:#x}"));
    }
    fn read64(&self, offset: u64) -> u64 {
        self.read_register(offset)
    }
    fn write64(&self, offset: u64, value: u64) {
        self.write_register(offset, value);
    }
}
