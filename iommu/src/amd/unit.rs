//! [`AmdUnit`]: one AMD-Vi unit's register protocol (§3.3, §3.4): turning it on and off,
//! its command buffer and its event log.
//!
//! Design note. The unit is started in the order the specification gives for
//! initialisation: everything off first (firmware may have left the unit running with its
//! own tables, and base registers must not change while the unit uses them), the device
//! table, command buffer and event log bases programmed with head and tail at 0, the status
//! bits cleared, the command buffer and event log enabled, and only then translation. Each
//! wait for the unit is bounded ([`POLLS`]); a unit that does not answer is an error.

use alloc::vec::Vec;

use super::command::CommandBuffer;
use super::event::{self, Event};
use super::regs::*;
use crate::memory::TableMemory;
use crate::unit::{POLLS, Registers, UnitError};

/// One unit: its registers, its features and its command buffer.
///
/// # Invariants
/// `commands` is the buffer the unit was last programmed with (or will be, by
/// [`AmdUnit::start`]); `event_log` is one page of the remapper's memory.
pub struct AmdUnit<R> {
    regs: R,
    efr: u64,
    pub commands: CommandBuffer,
    pub event_log: u64,
}

impl<R: Registers> AmdUnit<R> {
    /// Reads the unit's features (EFR); writes nothing.
    pub fn new(regs: R, commands: CommandBuffer, event_log: u64) -> AmdUnit<R> {
        let efr = regs.read64(EFR);
        AmdUnit {
            regs,
            efr,
            commands,
            event_log,
        }
    }

    /// The extended feature register as read at [`AmdUnit::new`].
    pub fn efr(&self) -> u64 {
        self.efr
    }

    /// The control register now.
    pub fn control(&self) -> u64 {
        self.regs.read64(CONTROL)
    }

    /// Levels of host page tables to use: 4 (48-bit addresses). Every unit walks 4 levels
    /// (EFR.HATS gives 4, 5 or 6 as the most); HATS = 11b is reserved.
    pub fn levels(&self) -> Result<u8, UnitError> {
        match (self.efr >> EFR_HATS_SHIFT) & 3 {
            3 => Err(UnitError::Unsupported(
                "a known host address translation size (EFR.HATS = 11b)",
            )),
            _ => Ok(4),
        }
    }

    /// Whether INVALIDATE_IOMMU_ALL is supported (EFR.IASup).
    pub fn invalidate_all_supported(&self) -> bool {
        self.efr & EFR_IA_SUP != 0
    }

    /// Whether translation is on.
    pub fn enabled(&self) -> bool {
        self.control() & CONTROL_IOMMU_EN != 0
    }

    fn wait(&self, what: &'static str, mut done: impl FnMut(u64) -> bool) -> Result<(), UnitError> {
        for _ in 0..POLLS {
            if done(self.regs.read64(STATUS)) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(UnitError::Timeout(what))
    }

    /// Turns translation, the command buffer and the event log off (devices pass through
    /// untranslated), keeping the control bits firmware set that this crate does not drive,
    /// and waits until the unit stopped fetching commands and logging events.
    pub fn stop(&self) -> Result<(), UnitError> {
        let control = self.control();
        if control & CONTROL_DRIVEN & !CONTROL_COHERENT != 0 {
            self.regs
                .write64(CONTROL, control & !(CONTROL_DRIVEN & !CONTROL_COHERENT));
        }
        self.wait("stopping its command buffer and event log", |s| {
            s & (STATUS_CMD_BUF_RUN | STATUS_EVENT_LOG_RUN) == 0
        })
    }

    /// Programs the tables and turns the unit on: `device_table` is the device table base
    /// register's value (base and size).
    pub fn start(&mut self, device_table: u64) -> Result<(), UnitError> {
        self.stop()?;
        self.regs.write64(DEV_TABLE_BASE, device_table);
        self.commands.program(&self.regs);
        self.regs.write64(
            EVENT_LOG_BASE,
            (self.event_log & BASE_MASK) | event::SLOTS_LOG2 << LEN_SHIFT,
        );
        self.regs.write64(EVENT_LOG_HEAD, 0);
        self.regs.write64(EVENT_LOG_TAIL, 0);
        self.regs.write64(
            STATUS,
            STATUS_EVENT_OVERFLOW | STATUS_EVENT_LOG_INT | STATUS_COM_WAIT_INT,
        );
        let control = (self.control() & !CONTROL_DRIVEN)
            | CONTROL_CMD_BUF_EN
            | CONTROL_EVENT_LOG_EN
            | CONTROL_COHERENT;
        self.regs.write64(CONTROL, control);
        self.regs.write64(CONTROL, control | CONTROL_IOMMU_EN);
        Ok(())
    }

    /// Runs `commands` through the command buffer and waits for them.
    pub fn submit<M: TableMemory + ?Sized>(
        &mut self,
        memory: &M,
        commands: &[[u64; 2]],
    ) -> Result<(), UnitError> {
        self.commands.submit(&self.regs, memory, commands)
    }

    /// Appends the events logged since the last call to `out` and frees their slots. After
    /// an overflow (events were lost) the log is restarted empty.
    pub fn take_events<M: TableMemory + ?Sized>(&self, memory: &M, out: &mut Vec<Event>) {
        let size = event::SLOTS * event::EVENT_SIZE;
        let mut head = self.regs.read64(EVENT_LOG_HEAD) & POINTER_MASK;
        let tail = self.regs.read64(EVENT_LOG_TAIL) & POINTER_MASK;
        let start = head;
        while head != tail && head < size {
            let low = memory.read(self.event_log + head);
            let high = memory.read(self.event_log + head + 8);
            out.push(Event::decode([
                low as u32,
                (low >> 32) as u32,
                high as u32,
                (high >> 32) as u32,
            ]));
            head = (head + event::EVENT_SIZE) % size;
        }
        if head != start {
            self.regs.write64(EVENT_LOG_HEAD, head);
        }
        let status = self.regs.read64(STATUS);
        if status & STATUS_EVENT_LOG_INT != 0 {
            self.regs.write64(STATUS, STATUS_EVENT_LOG_INT);
        }
        if status & STATUS_EVENT_OVERFLOW != 0 {
            // §3.3.2: the unit stopped logging; the log restarts empty once it is off.
            let control = self.control();
            self.regs.write64(CONTROL, control & !CONTROL_EVENT_LOG_EN);
            if self
                .wait("stopping its event log", |s| s & STATUS_EVENT_LOG_RUN == 0)
                .is_ok()
            {
                self.regs.write64(EVENT_LOG_HEAD, 0);
                self.regs.write64(EVENT_LOG_TAIL, 0);
                self.regs.write64(STATUS, STATUS_EVENT_OVERFLOW);
                self.regs.write64(CONTROL, control);
            }
        }
    }
}
