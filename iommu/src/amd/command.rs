//! Commands (§2.4) and one unit's command buffer (§3.3.1).
//!
//! Design note. Software tells an AMD-Vi unit to forget what it cached (device table entries,
//! translations) only through its command buffer: a ring of 16-byte commands in memory that
//! the unit fetches from its head register up to the tail register software writes. The
//! buffer here is one page (256 commands). Each [`CommandBuffer::submit`] writes its commands
//! and then a COMPLETION_WAIT that makes the unit store a value (a new one per submission)
//! into a status qword once every command before it is done, moves the tail and waits,
//! bounded, for that value. A unit that never stores it is an error, never a hang; and since
//! a stale wait from a submission that timed out stores an older value, it can never
//! complete a later one. Before writing, the free room is computed from the head the unit
//! reports, so a unit that stopped fetching never has unfetched commands overwritten.
//!
//! Every command sets no reserved bit: units reject such a command (QEMU's emulation logs
//! ILLEGAL_COMMAND_ERROR).

use super::regs::*;
use crate::memory::TableMemory;
use crate::unit::{POLLS, Registers, UnitError};

/// Bytes per command.
pub const COMMAND_SIZE: u64 = 16;
/// Commands one page holds; ComLen = log2 of it (§3.4.2).
pub const SLOTS: u64 = 256;
pub const SLOTS_LOG2: u64 = 8;

/// Opcodes, in bits 31:28 of the second dword (bits 63:60 of the first qword).
pub const COMPLETION_WAIT: u64 = 0x1;
pub const INVALIDATE_DEVTAB_ENTRY: u64 = 0x2;
pub const INVALIDATE_IOMMU_PAGES: u64 = 0x3;
pub const INVALIDATE_INTERRUPT_TABLE: u64 = 0x5;
pub const INVALIDATE_IOMMU_ALL: u64 = 0x8;
const OPCODE_SHIFT: u64 = 60;

/// COMPLETION_WAIT (§2.4.1): S (bit 0) makes the unit store the second qword at the 8-byte
/// aligned address in bits 51:3 once every earlier command finished.
pub fn completion_wait(store_at: u64, data: u64) -> [u64; 2] {
    [
        COMPLETION_WAIT << OPCODE_SHIFT | (store_at & 0x000f_ffff_ffff_fff8) | 1,
        data,
    ]
}

/// INVALIDATE_DEVTAB_ENTRY (§2.4.2): the unit forgets the device table entry of `id`
/// (bits 15:0).
pub fn invalidate_devtab_entry(id: u16) -> [u64; 2] {
    [INVALIDATE_DEVTAB_ENTRY << OPCODE_SHIFT | u64::from(id), 0]
}

/// The address that, with S = 1, names every page (§2.4.3, "Example Page Size Encodings").
pub const ALL_PAGES: u64 = 0x7fff_ffff_ffff_f000;
/// INVALIDATE_IOMMU_PAGES flags in the second qword: S (0) size from the address, PDE (1)
/// directory entries too.
pub const PAGES_S: u64 = 1 << 0;
pub const PAGES_PDE: u64 = 1 << 1;

/// INVALIDATE_IOMMU_PAGES (§2.4.3) of every page and directory entry of `domain` (DomainID
/// in bits 15:0 of the second dword).
pub fn invalidate_domain(domain: u16) -> [u64; 2] {
    [
        INVALIDATE_IOMMU_PAGES << OPCODE_SHIFT | u64::from(domain) << 32,
        ALL_PAGES | PAGES_PDE | PAGES_S,
    ]
}

/// INVALIDATE_INTERRUPT_TABLE (§2.4.5): the unit forgets the interrupt remapping entries
/// it cached for device `id` (bits 15:0). Every other bit is reserved (QEMU rejects bits
/// 59:16 of the first qword and any bit of the second).
pub fn invalidate_interrupt_table(id: u16) -> [u64; 2] {
    [
        INVALIDATE_INTERRUPT_TABLE << OPCODE_SHIFT | u64::from(id),
        0,
    ]
}

/// INVALIDATE_IOMMU_ALL (§2.4.8, when EFR.IASup): every cached entry of every kind.
pub fn invalidate_all() -> [u64; 2] {
    [INVALIDATE_IOMMU_ALL << OPCODE_SHIFT, 0]
}

/// Commands per submission before its wait: the ring always keeps room for one batch.
const BATCH: usize = (SLOTS / 2) as usize - 1;

/// One unit's command buffer and the qword its waits store into.
///
/// # Invariants
/// `page` (one page) and `status` (a qword in another page) belong to the remapper's
/// memory and live as long as the unit may fetch from them; `tail` is the byte offset after
/// the last command written (what CMD_BUF_TAIL holds); `sequence` is the value the last
/// submission waited for.
pub struct CommandBuffer {
    pub page: u64,
    pub status: u64,
    pub tail: u64,
    pub sequence: u64,
}

impl CommandBuffer {
    /// The base register's value: the page and ComLen.
    pub fn base_register(&self) -> u64 {
        (self.page & BASE_MASK) | SLOTS_LOG2 << LEN_SHIFT
    }

    /// Programs base, head and tail (the unit's command buffer must be off).
    pub fn program<R: Registers>(&mut self, regs: &R) {
        regs.write64(CMD_BUF_BASE, self.base_register());
        regs.write64(CMD_BUF_HEAD, 0);
        regs.write64(CMD_BUF_TAIL, 0);
        self.tail = 0;
    }

    /// Writes `commands` (in batches, each followed by a completion wait), moves the tail
    /// and waits until the unit has carried them all out.
    pub fn submit<R: Registers, M: TableMemory + ?Sized>(
        &mut self,
        regs: &R,
        memory: &M,
        commands: &[[u64; 2]],
    ) -> Result<(), UnitError> {
        if commands.is_empty() {
            return self.batch(regs, memory, &[]);
        }
        for chunk in commands.chunks(BATCH) {
            self.batch(regs, memory, chunk)?;
        }
        Ok(())
    }

    fn batch<R: Registers, M: TableMemory + ?Sized>(
        &mut self,
        regs: &R,
        memory: &M,
        commands: &[[u64; 2]],
    ) -> Result<(), UnitError> {
        let size = SLOTS * COMMAND_SIZE;
        let head = regs.read64(CMD_BUF_HEAD) & POINTER_MASK;
        let free = (head + size - self.tail - COMMAND_SIZE) % size / COMMAND_SIZE;
        if free < commands.len() as u64 + 1 {
            return Err(UnitError::Timeout(
                "earlier commands (the command buffer is full)",
            ));
        }
        self.sequence = self.sequence.wrapping_add(1).max(1);
        let done = self.sequence;
        let wait = completion_wait(self.status, done);
        for command in commands.iter().chain(core::iter::once(&wait)) {
            let at = self.page + self.tail;
            memory.write(at, command[0]);
            memory.write(at + 8, command[1]);
            self.tail = (self.tail + COMMAND_SIZE) % size;
        }
        regs.write64(CMD_BUF_TAIL, self.tail);
        for _ in 0..POLLS {
            if memory.read(self.status) == done {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(UnitError::Timeout(
            "a command (its completion wait never stored)",
        ))
    }
}
