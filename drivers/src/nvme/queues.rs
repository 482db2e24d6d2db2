//! NVMe queue pairs: submission and completion rings with their bounce buffer, the tail and
//! head doorbells, the phase tag; running commands on a queue and waiting for their
//! completions by interrupt; and the I/O path through the queues.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use pci::dma::BusAddr;
use pci::function::BusMaster;
use pci::window::DmaBuffer;

use super::commands::{Command, Completion, Data, NVM_READ, NVM_WRITE, prps};
use super::controller::Controller;
use super::registers::CSTS;
use super::{ADMIN_TIMEOUT_US, DEPTH, IO_TIMEOUT_US, Nvme, NvmeError};

/// A submission/completion queue pair with its bounce buffer.
///
/// Owns three DMA buffers; they must outlive the controller's use of them, which
/// [`Nvme`]'s field order guarantees (see the module documentation).
pub(super) struct Queue {
    /// Queue identifier (0: admin).
    pub(super) id: u16,
    pub(super) entries: u16,
    /// Submission ring: `entries` 64-byte entries.
    pub(super) sq: DmaBuffer,
    /// Completion ring: `entries` 16-byte entries.
    pub(super) cq: DmaBuffer,
    /// Bounce buffer: `DEPTH` command slices of `MAX_COMMAND_BYTES` (one page for admin).
    pub(super) data: DmaBuffer,
    pub(super) sq_tail: u16,
    pub(super) cq_head: u16,
    /// The phase tag of entries not consumed yet (starts at 1: the ring is zeroed).
    pub(super) phase: bool,
    pub(super) next_cid: u16,
    /// MSI-X entry (and Interrupt Vector) of the completion queue.
    pub(super) vector: usize,
    /// Bumped by the vector's handler.
    pub(super) interrupts: Arc<AtomicU64>,
    /// Commands completed.
    pub(super) completed: u64,
}

impl Queue {
    pub(super) fn new(
        master: &BusMaster,
        id: u16,
        entries: u16,
        data_bytes: u64,
        vector: usize,
        interrupts: Arc<AtomicU64>,
    ) -> Result<Queue, String> {
        let buffer = |what: &str, bytes: u64| {
            master
                .dma_buffer(bytes)
                .map_err(|e| format!("queue {id} {what}: {e}"))
        };
        Ok(Queue {
            id,
            entries,
            sq: buffer("submission ring", 64 * u64::from(entries))?,
            cq: buffer("completion ring", 16 * u64::from(entries))?,
            data: buffer("data buffer", data_bytes)?,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            next_cid: 0,
            vector,
            interrupts,
            completed: 0,
        })
    }

    /// Writes `command` at the tail (the doorbell is rung separately); returns its CID.
    /// `ring` is the address for a [`Data::Ring`] command.
    fn push(&mut self, command: &Command, ring: Option<BusAddr<'_>>) -> u16 {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        let at = u64::from(self.sq_tail) * 64;
        for (i, d) in command.dwords(cid).iter().enumerate() {
            self.sq.write32(at + 4 * i as u64, *d);
        }
        match command.data {
            Data::None => {}
            Data::Bounce { offset, len } => {
                let (prp1, prp2) = prps(offset, len);
                self.sq
                    .write_bus_address(at + 24, self.data.bus_address_at(prp1));
                if let Some(prp2) = prp2 {
                    self.sq
                        .write_bus_address(at + 32, self.data.bus_address_at(prp2));
                }
            }
            Data::Ring => {
                let ring = ring.expect("a queue-creation command comes with its ring");
                self.sq.write_bus_address(at + 24, ring);
            }
        }
        self.sq_tail = (self.sq_tail + 1) % self.entries;
        cid
    }

    /// Whether the entry at the head carries the current phase tag (a new completion).
    fn posted(&self) -> bool {
        let dw3 = self.cq.read32(u64::from(self.cq_head) * 16 + 12);
        (dw3 & (1 << 16) != 0) == self.phase
    }

    /// Consumes the completion at the head, if one is new.
    fn pop(&mut self) -> Option<Completion> {
        if !self.posted() {
            return None;
        }
        let at = u64::from(self.cq_head) * 16;
        let entry = Completion::from_dwords(self.cq.read32(at), self.cq.read32(at + 12));
        self.cq_head += 1;
        if self.cq_head == self.entries {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        self.completed += 1;
        Some(entry)
    }
}

/// Submits `commands` on `q` (fewer than its entries), rings its tail doorbell once, and
/// waits for every completion by interrupt; their dword 0 go to `dw0`. Every completion is
/// consumed even when one fails, so the queue stays consistent; the first failure is
/// returned. A timeout leaves commands outstanding.
/// Runs one admin command on `admin`; its completion dword 0. `ring` is the address of a
/// queue being created ([`Data::Ring`]). A timeout or protocol error marks the queues broken.
pub(super) fn admin_command(
    c: &Controller,
    admin: &mut Queue,
    broken: &mut Option<String>,
    command: Command,
    ring: Option<BusAddr<'_>>,
) -> Result<u32, NvmeError> {
    let mut dw0 = [0u32];
    execute(c, admin, &[command], &mut dw0, ADMIN_TIMEOUT_US, ring).inspect_err(|e| {
        if matches!(
            e,
            NvmeError::Timeout { .. } | NvmeError::Gone { .. } | NvmeError::Protocol(_)
        ) {
            *broken = Some(format!("{e}"));
        }
    })?;
    Ok(dw0[0])
}

fn execute(
    c: &Controller,
    q: &mut Queue,
    commands: &[Command],
    dw0: &mut [u32],
    timeout_us: u64,
    ring: Option<BusAddr<'_>>,
) -> Result<(), NvmeError> {
    assert!(
        commands.len() < usize::from(q.entries).min(64) && commands.len() == dw0.len(),
        "{} commands for a queue of {} entries",
        commands.len(),
        q.entries
    );
    let first = q.next_cid;
    for command in commands {
        q.push(command, ring);
    }
    let function = c.function();
    let start = function.now_us();
    // The snapshot comes before the doorbell: any interrupt for these commands moves the
    // counter past it.
    let mut seen = q.interrupts.load(Ordering::Acquire);
    c.unmask();
    c.regs.write32(c.sq_doorbell(q.id), u32::from(q.sq_tail));
    // Bit `i`: command `i` has its completion (at most `DEPTH` or `ADMIN_ENTRIES` commands).
    let mut done = 0u64;
    let mut pending = commands.len();
    let mut failure = None;
    while pending > 0 {
        let waited = function.now_us().saturating_sub(start);
        let counter = &q.interrupts;
        if !function.wait_until(timeout_us.saturating_sub(waited), || {
            counter.load(Ordering::Acquire) != seen
        }) {
            if function.vanished() {
                return Err(NvmeError::Gone {
                    queue: q.id,
                    waited_us: function.now_us().saturating_sub(start),
                });
            }
            return Err(NvmeError::Timeout {
                queue: q.id,
                opcode: commands[(!done).trailing_zeros() as usize].opcode,
                pending,
                waited_us: function.now_us().saturating_sub(start),
                interrupts: q.interrupts.load(Ordering::Relaxed),
                posted: q.posted(),
                csts: c.regs.read32(CSTS),
            });
        }
        // Snapshot before consuming: a completion posted after the pass below raises an
        // interrupt that moves the counter past this value.
        seen = q.interrupts.load(Ordering::Acquire);
        let mut consumed = false;
        while let Some(entry) = q.pop() {
            consumed = true;
            let index = usize::from(entry.cid.wrapping_sub(first));
            if index >= commands.len() || done & (1 << index) != 0 {
                failure.get_or_insert(NvmeError::Protocol(format!(
                    "queue {}: unexpected completion for command {}",
                    q.id, entry.cid
                )));
                continue;
            }
            done |= 1 << index;
            pending -= 1;
            dw0[index] = entry.dw0;
            if let Some((sct, sc, dnr)) = entry.error() {
                failure.get_or_insert(NvmeError::Status {
                    queue: q.id,
                    opcode: commands[index].opcode,
                    sct,
                    sc,
                    dnr,
                });
            }
        }
        if consumed {
            c.regs.write32(c.cq_doorbell(q.id), u32::from(q.cq_head));
        }
        c.unmask();
    }
    failure.map_or(Ok(()), Err)
}

/// Copies from a DMA buffer (one bulk copy).
pub(super) fn copy_from_dma(buffer: &DmaBuffer, offset: u64, out: &mut [u8]) {
    buffer.read_bytes(offset, out);
}

/// Copies into the start of a DMA buffer (one bulk copy).
fn copy_to_dma(buffer: &DmaBuffer, data: &[u8]) {
    buffer.write_bytes(0, data);
}

impl Nvme {
    /// Checks a request of `bytes` bytes at `lba` on `queue`; the block count.
    fn check(&self, queue: usize, lba: u64, bytes: usize) -> Result<u64, NvmeError> {
        if let Some(why) = &self.broken {
            return Err(NvmeError::Broken(why.clone()));
        }
        if queue >= self.io.len() {
            return Err(NvmeError::Request(format!(
                "no I/O queue {} ({} in use)",
                queue + 1,
                self.io.len()
            )));
        }
        let size = u64::from(self.identity.lba_size);
        if bytes == 0 || !(bytes as u64).is_multiple_of(size) {
            return Err(NvmeError::Request(format!(
                "{bytes} bytes is not a whole number of {size}-byte blocks"
            )));
        }
        let blocks = bytes as u64 / size;
        if lba
            .checked_add(blocks)
            .is_none_or(|end| end > self.identity.lbas)
        {
            return Err(NvmeError::Request(format!(
                "blocks {lba}..{} outside the namespace ({} blocks)",
                lba.saturating_add(blocks),
                self.identity.lbas
            )));
        }
        Ok(blocks)
    }

    /// Moves `bytes` bytes at `lba` between the device and the start of `queue`'s bounce
    /// buffer, in commands of at most `self.chunk` bytes, at most `depth` at once.
    fn transfer(
        &mut self,
        queue: usize,
        opcode: u8,
        lba: u64,
        bytes: u64,
        depth: usize,
    ) -> Result<(), NvmeError> {
        let size = u64::from(self.identity.lba_size);
        let q = &mut self.io[queue];
        // The device is given addresses inside the bounce buffer only: past its end it would
        // write into memory the driver does not own.
        assert!(
            bytes <= q.data.len(),
            "transfer of {bytes} bytes through a {}-byte buffer",
            q.data.len()
        );
        let mut commands = [Command::default(); DEPTH];
        let depth = depth.clamp(1, DEPTH).min(usize::from(q.entries) - 1);
        let mut done = 0u64;
        while done < bytes {
            let mut n = 0;
            while n < depth && done < bytes {
                let len = (bytes - done).min(self.chunk);
                // Each command uses the buffer slice at `done`; slices start page aligned.
                commands[n] =
                    Command::io(opcode, lba + done / size, (len / size) as u32, done, len);
                done += len;
                n += 1;
            }
            let mut dw0 = [0u32; DEPTH];
            execute(
                &self.controller,
                q,
                &commands[..n],
                &mut dw0[..n],
                IO_TIMEOUT_US,
                None,
            )
            .inspect_err(|e| {
                if matches!(
                    e,
                    NvmeError::Timeout { .. } | NvmeError::Gone { .. } | NvmeError::Protocol(_)
                ) {
                    self.broken = Some(format!("{e}"));
                }
            })?;
        }
        Ok(())
    }

    /// Reads `out.len()` bytes (whole blocks) from `lba` through I/O queue `queue` (0-based).
    pub fn read_on(&mut self, queue: usize, lba: u64, out: &mut [u8]) -> Result<(), NvmeError> {
        let blocks = self.check(queue, lba, out.len())?;
        let size = u64::from(self.identity.lba_size);
        let batch = (DEPTH as u64 * self.chunk) as usize;
        let mut at = lba;
        for piece in out.chunks_mut(batch) {
            self.transfer(queue, NVM_READ, at, piece.len() as u64, DEPTH)?;
            copy_from_dma(&self.io[queue].data, 0, piece);
            at += piece.len() as u64 / size;
        }
        debug_assert_eq!(at, lba + blocks);
        Ok(())
    }

    /// Writes `data` (whole blocks) at `lba` through I/O queue `queue` (0-based). Refused
    /// with [`NvmeError::WritesDisabled`], before anything reaches the device, unless
    /// [`crate::storage::writes_allowed`].
    pub fn write_on(&mut self, queue: usize, lba: u64, data: &[u8]) -> Result<(), NvmeError> {
        crate::storage::check_write().map_err(|_| NvmeError::WritesDisabled)?;
        self.check(queue, lba, data.len())?;
        let size = u64::from(self.identity.lba_size);
        let batch = (DEPTH as u64 * self.chunk) as usize;
        let mut at = lba;
        for piece in data.chunks(batch) {
            copy_to_dma(&self.io[queue].data, piece);
            self.transfer(queue, NVM_WRITE, at, piece.len() as u64, DEPTH)?;
            at += piece.len() as u64 / size;
        }
        Ok(())
    }

    /// Picks the next I/O queue, round robin.
    fn pick(&mut self) -> usize {
        let q = self.next_queue % self.io.len().max(1);
        self.next_queue = q + 1;
        q
    }

    /// Reads `out.len()` bytes (whole blocks) from `lba`, on the I/O queues in turn.
    pub fn read(&mut self, lba: u64, out: &mut [u8]) -> Result<(), NvmeError> {
        let q = self.pick();
        self.read_on(q, lba, out)
    }

    /// Writes `data` (whole blocks) at `lba`, on the I/O queues in turn.
    pub fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), NvmeError> {
        let q = self.pick();
        self.write_on(q, lba, data)
    }

    /// Reads `blocks` blocks at `lba` into `queue`'s bounce buffer only, `depth` commands in
    /// flight: the device and driver without the copy to the caller (for benchmarks).
    /// At most `DEPTH * command_bytes()` bytes.
    pub fn read_uncopied(
        &mut self,
        queue: usize,
        lba: u64,
        blocks: u64,
        depth: usize,
    ) -> Result<(), NvmeError> {
        let bytes = blocks.saturating_mul(u64::from(self.identity.lba_size));
        self.check(queue, lba, bytes as usize)?;
        if bytes > DEPTH as u64 * self.chunk {
            return Err(NvmeError::Request(format!(
                "{bytes} bytes exceed the bounce buffer ({} bytes)",
                DEPTH as u64 * self.chunk
            )));
        }
        self.transfer(queue, NVM_READ, lba, bytes, depth)
    }
}
