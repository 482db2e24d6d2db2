//! [`Unit`]: one DMA remapping unit's register protocol (VT-d §10, §11.4), legacy mode;
//! invalidation through the registers (what every VT-d unit has) or, once
//! [`Unit::enable_queue`] turned it on, through the invalidation queue ([`crate::queue`]),
//! which interrupt remapping needs.
//!
//! Design note. The unit is driven in the order the specification gives: translation off if
//! firmware left it on, the root table pointer set and latched (SRTP, §10.4.5), the context
//! cache and IOTLB invalidated globally, then translation on (§10.4.4). Each command is one
//! write of GCMD built from the persistent GSTS bits, then a bounded wait for its status.
//! Invalidations wait for hardware to clear the command bit; a unit that never does is an
//! error, never a hang.

use core::cell::Cell;

use crate::memory::TableMemory;
use crate::queue::{self, Queue};
use crate::regs::*;

/// Register access to one unit's page (the kernel maps it uncached).
pub trait Registers {
    /// A 32-bit register.
    fn read32(&self, offset: u64) -> u32;
    /// Writes a 32-bit register.
    fn write32(&self, offset: u64, value: u32);
    /// A 64-bit register.
    fn read64(&self, offset: u64) -> u64;
    /// Writes a 64-bit register.
    fn write64(&self, offset: u64, value: u64);
}

/// Register reads a command may wait for its status: at about a microsecond a read on real
/// hardware, a second. Units finish in microseconds.
pub const POLLS: u32 = 1_000_000;

/// Why the unit could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitError {
    /// A command's status never came.
    Timeout(&'static str),
    /// The unit cannot do what this crate needs (legacy-mode second-level tables of 3 or 4
    /// levels, pass-through context entries).
    Unsupported(&'static str),
}

impl core::fmt::Display for UnitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UnitError::Timeout(what) => write!(f, "the unit did not finish {what}"),
            UnitError::Unsupported(what) => write!(f, "the unit lacks {what}"),
        }
    }
}

/// A fault the unit recorded (§7.2.1, §11.4.7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Requester ID: bus << 8 | device << 3 | function.
    pub source: u16,
    /// The page the request addressed; for an interrupt remapping fault (reason 20h and
    /// above), the interrupt remapping entry's index.
    pub address: u64,
    /// A write request (else a read).
    pub write: bool,
    /// Fault reason (appendix A of the specification; 05h: write to a page not writable
    /// or not present, 06h: read of one, 02h: no context entry present; 20h and above:
    /// an interrupt request refused, 22h: entry not present, 25h: compatibility format
    /// blocked, 26h: requester failed the entry's source check).
    pub reason: u8,
}

impl Fault {
    /// Whether it is an interrupt request the unit refused (rather than a DMA request).
    pub fn interrupt(&self) -> bool {
        self.reason >= 0x20
    }
}

/// One remapping unit.
///
/// # Invariants
/// While `queue` is `Some`, the unit's queued invalidation is on with that queue, and every
/// invalidation goes through it.
pub struct Unit<R> {
    regs: R,
    cap: u64,
    ecap: u64,
    queue: Cell<Option<Queue>>,
}

impl<R: Registers> Unit<R> {
    /// Reads the unit's capabilities.
    pub fn new(regs: R) -> Unit<R> {
        let cap = regs.read64(CAP);
        let ecap = regs.read64(ECAP);
        Unit {
            regs,
            cap,
            ecap,
            queue: Cell::new(None),
        }
    }

    /// The capability register as read at [`Unit::new`].
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// The extended capability register as read at [`Unit::new`].
    pub fn ecap(&self) -> u64 {
        self.ecap
    }

    /// Levels of second-level tables to use: 4 (48-bit) if supported, else 3 (39-bit).
    pub fn levels(&self) -> Result<u8, UnitError> {
        let sagaw = (self.cap >> CAP_SAGAW_SHIFT) & 0x1f;
        if sagaw & 0b0100 != 0 {
            Ok(4)
        } else if sagaw & 0b0010 != 0 {
            Ok(3)
        } else {
            Err(UnitError::Unsupported(
                "3- or 4-level second-level tables (SAGAW)",
            ))
        }
    }

    /// The largest width the unit supports, in levels (5, 4 or 3): what a pass-through
    /// context entry's address width must say (§9.3).
    pub fn largest_levels(&self) -> u8 {
        let sagaw = (self.cap >> CAP_SAGAW_SHIFT) & 0x1f;
        match sagaw {
            s if s & 0b1000 != 0 => 5,
            s if s & 0b0100 != 0 => 4,
            _ => 3,
        }
    }

    /// Whether the unit snoops table writes (ECAP.C).
    pub fn coherent(&self) -> bool {
        self.ecap & ECAP_C != 0
    }

    /// Whether the unit may cache not-present entries (CAP.CM).
    pub fn caching_mode(&self) -> bool {
        self.cap & CAP_CM != 0
    }

    /// Domain IDs the unit supports (CAP.ND).
    pub fn domain_ids(&self) -> u32 {
        1 << (4 + 2 * (self.cap & CAP_ND_MASK).min(6))
    }

    /// Whether pass-through context entries are supported (ECAP.PT).
    pub fn pass_through(&self) -> bool {
        self.ecap & ECAP_PT != 0
    }

    /// Whether translation is on.
    pub fn enabled(&self) -> bool {
        self.regs.read32(GSTS) & GCMD_TE != 0
    }

    fn wait(&self, what: &'static str, mut done: impl FnMut(&R) -> bool) -> Result<(), UnitError> {
        for _ in 0..POLLS {
            if done(&self.regs) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(UnitError::Timeout(what))
    }

    /// One GCMD command: the persistent status bits with `bit` set or cleared, then the wait
    /// until GSTS shows it (§11.4.4.1).
    fn command(&self, what: &'static str, bit: u32, set: bool) -> Result<(), UnitError> {
        let status = self.regs.read32(GSTS) & GSTS_PERSISTENT;
        let value = if set { status | bit } else { status & !bit };
        self.regs.write32(GCMD, value);
        self.wait(what, |r| (r.read32(GSTS) & bit != 0) == set)
    }

    /// Turns translation off (firmware may leave it on with its own tables, for pre-boot DMA
    /// protection). Devices pass through untranslated until [`Unit::enable`].
    pub fn disable(&self) -> Result<(), UnitError> {
        if !self.enabled() {
            return Ok(());
        }
        self.command("turning translation off", GCMD_TE, false)
    }

    /// Undoes what firmware may have left on that this crate does not drive: queued
    /// invalidation (while it is on, the register-based invalidations used here must not be;
    /// it goes off once the unit has fetched every queued descriptor, §6.5.2) and interrupt
    /// remapping (on, it would block the compatibility-format MSIs the kernel programs).
    pub fn take_over(&self) -> Result<(), UnitError> {
        // Interrupt remapping first (its entry cache is invalidated through the queue), then
        // the queue once it drained, as Linux does.
        if self.regs.read32(GSTS) & GCMD_IRE != 0 {
            self.command("turning interrupt remapping off", GCMD_IRE, false)?;
        }
        if self.regs.read32(GSTS) & GCMD_QIE != 0 {
            self.wait("draining the invalidation queue", |r| {
                r.read64(IQH) == r.read64(IQT)
            })?;
            self.command("turning queued invalidation off", GCMD_QIE, false)?;
        }
        self.queue.set(None);
        Ok(())
    }

    /// Whether the unit can remap interrupts the way this crate does it: interrupt
    /// remapping and queued invalidation (ECAP.IR, ECAP.QI).
    pub fn can_remap_interrupts(&self) -> bool {
        self.ecap & ECAP_IR != 0 && self.ecap & ECAP_QI != 0
    }

    /// Whether interrupt remapping entries may name 32-bit (x2APIC) destinations (ECAP.EIM).
    pub fn extended_interrupt_mode(&self) -> bool {
        self.ecap & ECAP_EIM != 0
    }

    /// Turns queued invalidation on with the queue page `page`, whose wait descriptors
    /// write into `status` (both zeroed pages of `memory`'s). From now on every
    /// invalidation goes through the queue.
    pub fn enable_queue(&self, page: u64, status: u64) -> Result<(), UnitError> {
        if self.ecap & ECAP_QI == 0 {
            return Err(UnitError::Unsupported("queued invalidation (ECAP.QI)"));
        }
        if self.regs.read32(GSTS) & GCMD_QIE != 0 {
            self.take_over()?;
        }
        let q = Queue {
            page,
            status,
            tail: 0,
            sequence: 0,
        };
        q.program(&self.regs);
        self.command("turning queued invalidation on", GCMD_QIE, true)?;
        self.queue.set(Some(q));
        Ok(())
    }

    /// Whether invalidations go through the queue.
    pub fn queued(&self) -> bool {
        self.queue.get().is_some()
    }

    fn submit<M: TableMemory>(
        &self,
        memory: &M,
        descriptors: &[[u64; 2]],
    ) -> Result<(), UnitError> {
        let Some(mut q) = self.queue.get() else {
            return Err(UnitError::Unsupported("queued invalidation turned on"));
        };
        let result = q.submit(&self.regs, memory, self.coherent(), descriptors);
        self.queue.set(Some(q));
        result
    }

    /// Points the unit at the interrupt remapping table at `table` (2^(size + 1) entries,
    /// `eime`: 32-bit destinations), forgets every cached entry and turns interrupt
    /// remapping on, with compatibility-format interrupts blocked (CFI clear, §5.1.4): from
    /// now on an interrupt reaches a processor only through a present entry whose source
    /// check its requester passes. Needs the queue ([`Unit::enable_queue`]).
    pub fn enable_interrupt_remapping<M: TableMemory>(
        &self,
        memory: &M,
        table: u64,
        size: u8,
        eime: bool,
    ) -> Result<(), UnitError> {
        if self.ecap & ECAP_IR == 0 {
            return Err(UnitError::Unsupported("interrupt remapping (ECAP.IR)"));
        }
        if !self.queued() {
            return Err(UnitError::Unsupported("queued invalidation turned on"));
        }
        let mut irta = (table & !0xfff) | u64::from(size & 0xf);
        if eime {
            irta |= IRTA_EIME;
        }
        self.regs.write64(IRTA, irta);
        // SIRTP is one-shot; IRTPS says the pointer is latched (§11.4.4).
        let status = self.regs.read32(GSTS) & GSTS_PERSISTENT;
        self.regs.write32(GCMD, status | GCMD_SIRTP);
        self.wait("latching the interrupt remapping table (SIRTP)", |r| {
            r.read32(GSTS) & GCMD_SIRTP != 0
        })?;
        self.invalidate_interrupt_entries(memory, None)?;
        if self.regs.read32(GSTS) & GCMD_CFI != 0 {
            self.command("blocking compatibility-format interrupts", GCMD_CFI, false)?;
        }
        self.command("turning interrupt remapping on", GCMD_IRE, true)
    }

    /// Turns interrupt remapping off again (the queue stays on): messages are then taken in
    /// the compatibility format.
    pub fn disable_interrupt_remapping(&self) -> Result<(), UnitError> {
        if self.regs.read32(GSTS) & GCMD_IRE == 0 {
            return Ok(());
        }
        self.command("turning interrupt remapping off", GCMD_IRE, false)
    }

    /// Whether interrupt remapping is on.
    pub fn remapping_interrupts(&self) -> bool {
        self.regs.read32(GSTS) & GCMD_IRE != 0
    }

    /// Interrupt entry cache invalidation (§6.5.2.7): of entry `index`, or of all.
    pub fn invalidate_interrupt_entries<M: TableMemory>(
        &self,
        memory: &M,
        index: Option<u16>,
    ) -> Result<(), UnitError> {
        self.submit(memory, &[queue::interrupt_entries(index)])
    }

    /// Points the unit at the root table at `root` (legacy mode), invalidates its caches and
    /// turns translation on; first turns off what firmware left on ([`Unit::disable`],
    /// [`Unit::take_over`]).
    pub fn enable<M: TableMemory>(&self, memory: &M, root: u64) -> Result<(), UnitError> {
        self.disable()?;
        self.take_over()?;
        self.regs.write64(RTADDR, root & !0xfff);
        // SRTP is a one-shot command whose status, RTPS, is set when the pointer is latched.
        let status = self.regs.read32(GSTS) & GSTS_PERSISTENT;
        self.regs.write32(GCMD, status | GCMD_SRTP);
        self.wait("latching the root table (SRTP)", |r| {
            r.read32(GSTS) & GCMD_SRTP != 0
        })?;
        self.flush_write_buffer()?;
        self.invalidate_context(memory)?;
        self.invalidate_iotlb(memory, None)?;
        self.command("turning translation on", GCMD_TE, true)
    }

    /// Write-buffer flush (§6.8), for units that need one after table writes (CAP.RWBF).
    pub fn flush_write_buffer(&self) -> Result<(), UnitError> {
        if self.cap & CAP_RWBF == 0 {
            return Ok(());
        }
        let status = self.regs.read32(GSTS) & GSTS_PERSISTENT;
        self.regs.write32(GCMD, status | GCMD_WBF);
        self.wait("a write-buffer flush", |r| r.read32(GSTS) & GCMD_WBF == 0)
    }

    /// Global context-cache invalidation (§6.5.1.1 through the registers, §6.5.2.1 through
    /// the queue).
    pub fn invalidate_context<M: TableMemory>(&self, memory: &M) -> Result<(), UnitError> {
        if self.queued() {
            return self.submit(memory, &[queue::context_global()]);
        }
        self.regs.write64(CCMD, CCMD_ICC | CCMD_GLOBAL);
        self.wait("a context-cache invalidation", |r| {
            r.read64(CCMD) & CCMD_ICC == 0
        })
    }

    fn iotlb_register(&self) -> u64 {
        ((self.ecap >> ECAP_IRO_SHIFT) & 0x3ff) * 16 + 8
    }

    /// IOTLB invalidation (§6.5.1.2): of one domain, or global; draining the unit's pending
    /// reads and writes where it can, so that no request translated before returns after.
    pub fn invalidate_iotlb<M: TableMemory>(
        &self,
        memory: &M,
        domain: Option<u16>,
    ) -> Result<(), UnitError> {
        if self.queued() {
            let d = queue::iotlb(domain, self.cap & CAP_DRD != 0, self.cap & CAP_DWD != 0);
            return self.submit(memory, &[d]);
        }
        let mut value = IOTLB_IVT;
        value |= match domain {
            Some(did) => IOTLB_DOMAIN | u64::from(did) << IOTLB_DID_SHIFT,
            None => IOTLB_GLOBAL,
        };
        if self.cap & CAP_DRD != 0 {
            value |= IOTLB_DR;
        }
        if self.cap & CAP_DWD != 0 {
            value |= IOTLB_DW;
        }
        let at = self.iotlb_register();
        self.regs.write64(at, value);
        self.wait("an IOTLB invalidation", |r| r.read64(at) & IOTLB_IVT == 0)
    }

    /// Makes the unit send `data` to `address` (a compatibility-format MSI) when it records
    /// a fault while none was pending (§7.3): the fault event interrupt. Faults are then
    /// seen when they happen rather than when someone looks.
    pub fn enable_fault_events(&self, address: u64, data: u32) {
        self.regs.write32(FECTL, FECTL_IM);
        self.regs.write32(FEDATA, data);
        self.regs.write32(FEADDR, address as u32);
        self.regs.write32(FEUADDR, (address >> 32) as u32);
        self.regs.write32(FECTL, 0);
    }

    /// Masks the fault event interrupt again.
    pub fn disable_fault_events(&self) {
        self.regs.write32(FECTL, FECTL_IM);
    }

    /// The faults recorded since the last call, cleared from the unit (at most one per fault
    /// recording register; an overflow is cleared too).
    pub fn take_faults(&self, out: &mut alloc::vec::Vec<Fault>) {
        let first = ((self.cap >> CAP_FRO_SHIFT) & 0x3ff) * 16;
        let count = ((self.cap >> CAP_NFR_SHIFT) & 0xff) + 1;
        for i in 0..count {
            let at = first + 16 * i;
            let high = self.regs.read64(at + 8);
            if high & FRCD_F == 0 {
                continue;
            }
            let low = self.regs.read64(at);
            let reason = (high >> 32) as u8;
            out.push(Fault {
                source: high as u16,
                // An interrupt remapping fault records the entry index in 63:48 (FI).
                address: if reason >= 0x20 {
                    low >> 48
                } else {
                    low & !0xfff
                },
                write: high & FRCD_T == 0,
                reason,
            });
            // F is write-1-to-clear.
            self.regs.write64(at + 8, FRCD_F);
        }
        let status = self.regs.read32(FSTS);
        if status & FSTS_PFO != 0 {
            self.regs.write32(FSTS, FSTS_PFO);
        }
    }
}
