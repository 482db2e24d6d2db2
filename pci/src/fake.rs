//! An in-memory configuration space for host tests (feature `fake`, always in this crate's
//! own tests): per-function 4 KiB arrays behind [`ConfigRegionAccess`].
//!
//! It behaves like hardware where enumeration cares: absent functions read all ones;
//! registers are read-only unless given a writable mask, so a BAR of size S keeps only its
//! address bits and reads back `!(S - 1)` plus its type bits after all ones are written;
//! Command is writable and the Status error bits are write-one-to-clear. It also watches
//! the caller: every write is logged, and it records a *violation* for a misaligned or
//! out-of-range access and for all ones written to an implemented BAR while Command has I/O
//! or memory decode on. A function can be made to vanish after a number of reads.

pub mod irq;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use pci_types::{ConfigRegionAccess, PciAddress};

use crate::address::Address;

/// Status bits that are write-one-to-clear (PCI 3.0 §6.2.3): master data parity error,
/// signalled/received target abort, received master abort, signalled system error, detected
/// parity error.
const STATUS_RW1C: u32 = 0xf900;
/// Command bits software may write (bits 0-10).
const COMMAND_WRITABLE: u32 = 0x07ff;

/// A BAR to put in a [`FakeFunction`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeBar {
    /// I/O BAR; `size` a power of two, at least 4.
    Io {
        /// Base address.
        address: u32,
        /// Size in bytes.
        size: u32,
    },
    /// 32-bit memory BAR; `size` a power of two, at least 16.
    Mem32 {
        /// Base address.
        address: u32,
        /// Size in bytes.
        size: u32,
        /// Prefetchable bit.
        prefetchable: bool,
    },
    /// 64-bit memory BAR (takes two slots).
    Mem64 {
        /// Base address.
        address: u64,
        /// Size in bytes.
        size: u64,
        /// Prefetchable bit.
        prefetchable: bool,
    },
    /// Any value with any writable mask (malformed BARs).
    Raw {
        /// Value.
        value: u32,
        /// Bits that take writes.
        writable: u32,
    },
}

/// One function's configuration space.
#[derive(Clone, Debug)]
pub struct FakeFunction {
    space: Vec<u8>,
    writable: Vec<u32>,
    /// Last legacy capability added (for chaining).
    cap_tail: Option<u8>,
    /// Last extended capability added.
    ext_tail: Option<u16>,
    /// Reads left before the function vanishes.
    reads_left: Option<usize>,
    removed: bool,
}

impl FakeFunction {
    /// All-zero space of a header-type-0 function, nothing writable.
    fn blank() -> Self {
        let mut f = FakeFunction {
            space: vec![0; 4096],
            writable: vec![0; 1024],
            cap_tail: None,
            ext_tail: None,
            reads_left: None,
            removed: false,
        };
        f.writable[1] = COMMAND_WRITABLE;
        f
    }

    /// A function with exactly these 4096 bytes (shorter input is zero-padded) and nothing
    /// writable: for fuzzing.
    pub fn raw(bytes: &[u8]) -> Self {
        let mut f = Self::blank();
        let n = bytes.len().min(4096);
        f.space[..n].copy_from_slice(&bytes[..n]);
        f.writable[1] = 0;
        f
    }

    /// A header-type-0 function (interrupt line 0xFF, no pin, no BARs).
    pub fn endpoint(
        vendor: u16,
        device: u16,
        class: u8,
        subclass: u8,
        prog_if: u8,
        revision: u8,
    ) -> Self {
        let mut f = Self::blank();
        f.set16(0x00, vendor);
        f.set16(0x02, device);
        f.set32(
            0x08,
            u32::from_le_bytes([revision, prog_if, subclass, class]),
        );
        f.set8(0x3c, 0xff);
        f
    }

    /// A PCI-to-PCI bridge (header type 1, class 0604) with these bus numbers.
    pub fn bridge(vendor: u16, device: u16, primary: u8, secondary: u8, subordinate: u8) -> Self {
        let mut f = Self::endpoint(vendor, device, 0x06, 0x04, 0x00, 0);
        f.set8(0x0e, 0x01);
        f.set32(
            0x18,
            u32::from_le_bytes([primary, secondary, subordinate, 0]),
        );
        f
    }

    /// Sets bit 7 of the header type.
    pub fn multifunction(mut self) -> Self {
        self.space[0x0e] |= 0x80;
        self
    }

    /// Sets the header layout (bits 0-6 of 0x0E).
    pub fn with_header_type(mut self, layout: u8) -> Self {
        self.space[0x0e] = (self.space[0x0e] & 0x80) | (layout & 0x7f);
        self
    }

    /// Sets Command.
    pub fn with_command(mut self, command: u16) -> Self {
        self.set16(0x04, command);
        self
    }

    /// Sets Status (bit 4, capabilities list, is also set by the capability builders).
    pub fn with_status(mut self, status: u16) -> Self {
        self.set16(0x06, status);
        self
    }

    /// Sets subsystem vendor and ID (0x2C).
    pub fn with_subsystem(mut self, vendor: u16, device: u16) -> Self {
        self.set16(0x2c, vendor);
        self.set16(0x2e, device);
        self
    }

    /// Sets interrupt pin (0x3D) and line (0x3C).
    pub fn with_interrupt(mut self, pin: u8, line: u8) -> Self {
        self.set8(0x3c, line);
        self.set8(0x3d, pin);
        self
    }

    /// Puts a BAR in `slot` (0..=5, or 0..=1 for bridges; a 64-bit BAR also fills
    /// `slot + 1` if the header layout has one).
    pub fn with_bar(mut self, slot: usize, bar: FakeBar) -> Self {
        let off = 0x10 + 4 * slot;
        let (value, mask, high) = match bar {
            FakeBar::Io { address, size } => (address & !3 | 1, !(size - 1) & !3, None),
            FakeBar::Mem32 {
                address,
                size,
                prefetchable,
            } => {
                let pf = if prefetchable { 8 } else { 0 };
                (address & !0xf | pf, !(size - 1) & !0xf, None)
            }
            FakeBar::Mem64 {
                address,
                size,
                prefetchable,
            } => {
                let pf = if prefetchable { 8 } else { 0 };
                let mask = !(size - 1);
                let low = (address as u32) & !0xf | pf | 0b100;
                (
                    low,
                    (mask as u32) & !0xf,
                    Some(((address >> 32) as u32, (mask >> 32) as u32)),
                )
            }
            FakeBar::Raw { value, writable } => (value, writable, None),
        };
        self.set32(off, value);
        self.writable[off / 4] = mask;
        if let Some((value, mask)) = high {
            // In the last slot there is nowhere for the upper half (set the header type
            // before adding BARs).
            if self.is_bar(off + 4) {
                self.set32(off + 4, value);
                self.writable[off / 4 + 1] = mask;
            }
        }
        self
    }

    /// Appends a legacy capability at `offset` with `body` after its two header bytes,
    /// linking it from 0x34 or the previous capability and setting Status bit 4.
    pub fn with_capability(mut self, offset: u8, id: u8, body: &[u8]) -> Self {
        let o = usize::from(offset);
        self.space[o] = id;
        self.space[o + 1] = 0;
        for (i, b) in body.iter().enumerate() {
            if o + 2 + i < 256 {
                self.space[o + 2 + i] = *b;
            }
        }
        match self.cap_tail {
            None => self.space[0x34] = offset,
            Some(t) => self.space[usize::from(t) + 1] = offset,
        }
        self.cap_tail = Some(offset);
        self.space[0x06] |= 1 << 4;
        self
    }

    /// Appends an MSI capability: `2^log2_vectors` vectors (the 3-bit field as given).
    pub fn with_msi(self, offset: u8, log2_vectors: u8, is_64bit: bool, masking: bool) -> Self {
        let control =
            u16::from(log2_vectors & 7) << 1 | u16::from(is_64bit) << 7 | u16::from(masking) << 8;
        self.with_capability(offset, 0x05, &control.to_le_bytes())
    }

    /// Appends an MSI-X capability with `table_size` entries.
    pub fn with_msix(self, offset: u8, table_size: u16, table: (u8, u32), pba: (u8, u32)) -> Self {
        let mut body = Vec::new();
        body.extend_from_slice(&((table_size - 1) & 0x7ff).to_le_bytes());
        body.extend_from_slice(&(table.1 & !7 | u32::from(table.0 & 7)).to_le_bytes());
        body.extend_from_slice(&(pba.1 & !7 | u32::from(pba.0 & 7)).to_le_bytes());
        self.with_capability(offset, 0x11, &body)
    }

    /// Appends a PCI Express capability (version 2, endpoint).
    pub fn with_pcie(self, offset: u8) -> Self {
        self.with_capability(offset, 0x10, &[0x02, 0x00])
    }

    /// Appends an extended capability at `offset` (the first must be at 0x100), linking it
    /// from the previous one.
    pub fn with_extended_capability(mut self, offset: u16, id: u16, version: u8) -> Self {
        let header = u32::from(id) | u32::from(version & 0xf) << 16;
        self.set32(usize::from(offset), header);
        if let Some(t) = self.ext_tail {
            let prev = self.get32(usize::from(t));
            self.set32(usize::from(t), prev & 0x000f_ffff | u32::from(offset) << 20);
        }
        self.ext_tail = Some(offset);
        self
    }

    /// Vanish (read all ones from then on) after `reads` more reads.
    pub fn vanish_after_reads(mut self, reads: usize) -> Self {
        self.reads_left = Some(reads);
        self
    }

    /// Makes the bits of `mask` in the dword at `offset` writable.
    pub fn with_writable(mut self, offset: usize, mask: u32) -> Self {
        self.writable[offset / 4] = mask;
        self
    }

    /// Sets a byte.
    pub fn set8(&mut self, offset: usize, value: u8) {
        self.space[offset] = value;
    }

    /// Sets a little-endian word.
    pub fn set16(&mut self, offset: usize, value: u16) {
        self.space[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
    }

    /// Sets a little-endian dword.
    pub fn set32(&mut self, offset: usize, value: u32) {
        self.space[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// Builder form of [`set8`](Self::set8).
    pub fn with8(mut self, offset: usize, value: u8) -> Self {
        self.set8(offset, value);
        self
    }

    /// Builder form of [`set32`](Self::set32).
    pub fn with32(mut self, offset: usize, value: u32) -> Self {
        self.set32(offset, value);
        self
    }

    /// Reads a dword.
    pub fn get32(&self, offset: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.space[offset..offset + 4]);
        u32::from_le_bytes(b)
    }

    /// Dword slots (by offset) that are BARs in this header layout.
    fn is_bar(&self, offset: usize) -> bool {
        match self.space[0x0e] & 0x7f {
            0 => (0x10..=0x24).contains(&offset),
            1 => (0x10..=0x14).contains(&offset),
            _ => false,
        }
    }
}

#[derive(Default)]
struct State {
    functions: BTreeMap<Address, FakeFunction>,
    violations: Vec<String>,
    writes: Vec<(Address, u16, u32)>,
}

/// The fake configuration space: any number of functions on any segment and bus.
#[derive(Default)]
pub struct FakeConfigSpace {
    state: RefCell<State>,
}

impl FakeConfigSpace {
    /// Empty: every address reads all ones.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a function.
    pub fn add(&self, address: Address, function: FakeFunction) {
        self.state.borrow_mut().functions.insert(address, function);
    }

    /// How many functions were added (and not taken away), vanished ones included.
    pub fn function_count(&self) -> usize {
        self.state.borrow().functions.len()
    }

    /// Takes a function away (it then reads all ones).
    pub fn remove(&self, address: Address) {
        self.state.borrow_mut().functions.remove(&address);
    }

    /// A dword as stored, without counting as a read (`None` if absent).
    pub fn peek(&self, address: Address, offset: usize) -> Option<u32> {
        self.state
            .borrow()
            .functions
            .get(&address)
            .map(|f| f.get32(offset))
    }

    /// Misuse seen so far (empty if the caller behaved).
    pub fn violations(&self) -> Vec<String> {
        self.state.borrow().violations.clone()
    }

    /// Every write so far: address, offset, value.
    pub fn writes(&self) -> Vec<(Address, u16, u32)> {
        self.state.borrow().writes.clone()
    }

    /// Forgets logged writes and violations.
    pub fn clear_log(&self) {
        let mut s = self.state.borrow_mut();
        s.writes.clear();
        s.violations.clear();
    }

    fn check_offset(state: &mut State, address: Address, offset: u16, what: &str) -> bool {
        if crate::range::checked_access(u64::from(offset), 4, 4096).is_err() {
            state
                .violations
                .push(format!("{what} {address} at bad offset {offset:#x}"));
            return false;
        }
        true
    }
}

impl ConfigRegionAccess for FakeConfigSpace {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        let address = Address::from(address);
        let mut state = self.state.borrow_mut();
        if !Self::check_offset(&mut state, address, offset, "read") {
            return !0;
        }
        let Some(f) = state.functions.get_mut(&address) else {
            return !0;
        };
        if let Some(left) = &mut f.reads_left {
            if *left == 0 {
                f.removed = true;
            } else {
                *left -= 1;
            }
        }
        if f.removed {
            !0
        } else {
            f.get32(usize::from(offset))
        }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        let address = Address::from(address);
        let mut state = self.state.borrow_mut();
        state.writes.push((address, offset, value));
        if !Self::check_offset(&mut state, address, offset, "write") {
            return;
        }
        let off = usize::from(offset);
        let Some(f) = state.functions.get_mut(&address) else {
            return;
        };
        if f.removed {
            return;
        }
        let mask = f.writable[off / 4];
        let command = f.get32(0x04) & 0b11;
        let violation = f.is_bar(off) && value == !0 && mask != 0 && command != 0;
        let old = f.get32(off);
        let mut new = old & !mask | value & mask;
        if off == 0x04 {
            new &= !((value >> 16 & STATUS_RW1C) << 16);
        }
        f.set32(off, new);
        if violation {
            state.violations.push(format!(
                "{address}: BAR at {offset:#x} sized with decode on (Command {command:#x})"
            ));
        }
    }
}
