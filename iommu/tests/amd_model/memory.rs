//! Model physical memory: 4 KiB pages of qwords, handed out in physically contiguous runs,
//! that remembers which runs are out and asks every model unit, when a run comes back,
//! whether the unit may still read it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};

use iommu::TableMemory;

use super::unit::UnitState;

#[derive(Default)]
pub struct MemoryState {
    pub pages: BTreeMap<u64, Vec<u64>>,
    /// Runs given out: first page -> pages.
    pub runs: BTreeMap<u64, usize>,
    next: u64,
    /// Pages given out and given back, in total.
    pub allocated: u64,
    pub freed: u64,
    pub violations: Vec<String>,
    /// Refuse allocations once this many pages were given out (None: never).
    pub fail_after: Option<u64>,
    pub units: Vec<Weak<RefCell<UnitState>>>,
}

#[derive(Clone, Default)]
pub struct Memory(pub Rc<RefCell<MemoryState>>);

impl Memory {
    pub fn new() -> Memory {
        let m = Memory::default();
        m.0.borrow_mut().next = 0x10_0000;
        m
    }

    /// Pages given out and not given back.
    pub fn in_use(&self) -> u64 {
        let s = self.0.borrow();
        s.allocated - s.freed
    }

    /// The qword at `phys` if its page is out (the unit's view: no panic).
    pub fn peek(&self, phys: u64) -> Option<u64> {
        let s = self.0.borrow();
        s.pages
            .get(&(phys & !0xfff))
            .map(|p| p[((phys & 0xfff) / 8) as usize])
    }

    /// A device (or the unit) writes the qword at `phys`; false outside the pages given out.
    pub fn poke(&self, phys: u64, value: u64) -> bool {
        let mut s = self.0.borrow_mut();
        match s.pages.get_mut(&(phys & !0xfff)) {
            Some(p) => {
                p[((phys & 0xfff) / 8) as usize] = value;
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, phys: u64) -> bool {
        self.0.borrow().pages.contains_key(&(phys & !0xfff))
    }
}

impl TableMemory for Memory {
    fn alloc_page(&self) -> Option<u64> {
        self.alloc_pages(1)
    }

    fn free_page(&self, phys: u64) {
        self.free_pages(phys, 1)
    }

    fn alloc_pages(&self, count: usize) -> Option<u64> {
        let mut s = self.0.borrow_mut();
        if s.fail_after
            .is_some_and(|limit| s.allocated + count as u64 > limit)
        {
            return None;
        }
        let first = s.next;
        // A guard page between runs, so that a run overrun reads nothing.
        s.next += 0x1000 * (count as u64 + 1);
        for i in 0..count as u64 {
            s.pages.insert(first + 0x1000 * i, vec![0; 512]);
        }
        s.runs.insert(first, count);
        s.allocated += count as u64;
        Some(first)
    }

    fn free_pages(&self, phys: u64, count: usize) {
        let units: Vec<_> = self.0.borrow().units.clone();
        let mut found = Vec::new();
        for unit in units.iter().filter_map(Weak::upgrade) {
            if let Some(why) = UnitState::references(&unit, self, phys, count) {
                found.push(why);
            }
        }
        let mut s = self.0.borrow_mut();
        s.violations.extend(found);
        if s.runs.remove(&phys) != Some(count) {
            s.violations.push(format!(
                "free of {count} page(s) at {phys:#x}, not a run given out"
            ));
            return;
        }
        for i in 0..count as u64 {
            s.pages.remove(&(phys + 0x1000 * i));
        }
        s.freed += count as u64;
    }

    fn read(&self, phys: u64) -> u64 {
        match self.peek(phys) {
            Some(v) if phys.is_multiple_of(8) => v,
            _ => panic!("read of {phys:#x} outside the pages given out"),
        }
    }

    fn write(&self, phys: u64, value: u64) {
        if !phys.is_multiple_of(8) || !self.poke(phys, value) {
            panic!("write of {phys:#x} outside the pages given out");
        }
    }

    fn flush(&self, _phys: u64, _len: u64) {}
}
