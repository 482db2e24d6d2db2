//! A driver for NVM Express controllers (NVM Express Base Specification 1.4), the PCI class
//! 01h/08h: one namespace, read and write of whole logical blocks, every completion taken
//! by interrupt. Tested on QEMU's `nvme` (1b36:0010).
//!
//! # How the controller is driven
//!
//! Registers (§3.1) sit at the start of BAR 0, the doorbells from 0x1000 on, one pair per
//! queue, `4 << CAP.DSTRD` bytes apart. QEMU puts the MSI-X table right after them (0x2000),
//! and that table belongs to [`IrqVectors`] alone: the driver maps exactly
//! `[0, 0x1000 + doorbells)` for its five queue pairs and refuses a device where that would
//! cover the table ([`PciFunction::map_bar`] checks it).
//!
//! Bring-up follows §7.6.1: reset (CC.EN = 0, wait for CSTS.RDY = 0), check CAP (NVM command
//! set, 4 KiB pages allowed by MPSMIN), admin queue (AQA/ASQ/ACQ), enable (CC.EN = 1 with
//! 64-byte SQ and 16-byte CQ entries), wait for CSTS.RDY = 1, Identify Controller and
//! Identify Namespace 1 (§5.15), Set Features Number of Queues (§5.21.1.7), then one Create
//! I/O Completion Queue (§5.3) and Create I/O Submission Queue (§5.4) per queue pair.
//!
//! Interrupts: MSI-X, entry 0 for the admin queue, entry `i` for I/O queue `i` (the queue's
//! Interrupt Vector field is `i`), up to four I/O queues as the vectors allow. Without
//! MSI-X the driver takes the INTx pin (one vector, possibly shared) and one I/O queue; the
//! handler then masks the controller's interrupt with INTMS (§3.1.3, §7.5.1) and the waiting
//! code unmasks it with INTMC once it has consumed the completions.
//!
//! Commands (§4.2) are 64-byte submission entries; completions (§4.6) 16-byte entries whose
//! phase tag flips each time the queue wraps. A handler does one thing: it bumps its queue's
//! interrupt counter. The submitting code snapshots that counter, rings the submission tail
//! doorbell, waits (with a timeout) for the counter to move, then consumes every completion
//! whose phase tag is current and writes the completion head doorbell. It never polls the
//! completion queue without an interrupt first.
//!
//! Data moves through a bounce buffer per queue. One command carries at most 8 KiB, what PRP
//! Entry 1 and 2 describe without a PRP list (§4.3) when the buffer is page aligned; larger
//! requests are split, and up to [`DEPTH`] such commands are in flight on a queue at once.
//!
//! # Ownership
//!
//! Everything the driver holds is in [`Nvme`], and unbinding is dropping it. Fields drop in
//! declaration order, and that order is the release protocol:
//!
//! 1. [`Controller`], the inner guard, first. Its `Drop` body sends the normal shutdown
//!    notification (CC.SHN, §7.6.2), clears CC.EN and waits for CSTS.RDY = 0: a disabled
//!    controller has deleted its queues and does no more DMA. Then its own fields drop:
//!    the [`IrqVectors`] (handlers uninstalled, MSI-X entries masked and disabled, Bus
//!    Master Enable restored to its state before the allocation, which is off because the
//!    probe turns it off first; vectors back to the allocator; the [`PciFunction`] handle
//!    released), then the register window ([`BarWindow`], unmapped; the INTx handler's
//!    `Arc` clone of it went with the handler).
//! 2. The admin queue, then the I/O queues: submission and completion rings and bounce
//!    buffers ([`DmaBuffer`]s) go back to the frame allocator. The device can no longer
//!    write them: it is disabled, and even one that ignored CC.EN has lost bus mastering.
//!
//! Freeing the rings first would let a live controller write completions (and read data)
//! into frames the kernel has handed to someone else, the classic use-after-free by DMA.
//! That is why the stop is a guard's `Drop` rather than a line to remember in a remove
//! function. A probe that fails after enabling releases in the same order
//! ([`Nvme::into_function`]), and gives the function back.
//!
//! What a leak (`mem::forget`) costs: the controller stays enabled but idle (nothing submits
//! any more), its vectors and handlers stay installed (masked vectors are never reused),
//! about 75 frames (300 KiB) of DMA memory and a page of MMIO window stay taken, and the
//! function stays claimed.

use crate::fnv1a;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use pci::dma::BusAddr;
use pci::function::BusMaster;
use pci::irq::{IrqKind, IrqKinds, IrqVectors, PciFunction};
use pci::window::{BarWindow, DmaBuffer};

use crate::{Bound, Driver, Match, ProbeError};

// Controller registers (§3.1).
/// Controller Capabilities (§3.1.1).
const CAP: u64 = 0x00;
/// Version (§3.1.2).
const VS: u64 = 0x08;
/// Interrupt Mask Set (§3.1.3): pin-based and single-MSI interrupts only.
const INTMS: u64 = 0x0C;
/// Interrupt Mask Clear (§3.1.4).
const INTMC: u64 = 0x10;
/// Controller Configuration (§3.1.5).
const CC: u64 = 0x14;
/// Controller Status (§3.1.6).
const CSTS: u64 = 0x1C;
/// Admin Queue Attributes (§3.1.8): ACQS in 27:16, ASQS in 11:0, both 0's based.
const AQA: u64 = 0x24;
/// Admin Submission Queue Base Address (§3.1.9).
const ASQ: u64 = 0x28;
/// Admin Completion Queue Base Address (§3.1.10).
const ACQ: u64 = 0x30;
/// The first doorbell (§3.1, SQyTDBL / CQyHDBL): queue `y`'s submission tail at
/// `0x1000 + 2y * (4 << CAP.DSTRD)`, its completion head one stride further.
const DOORBELLS: u64 = 0x1000;

// CAP fields (§3.1.1).
/// CAP.CSS bit 37: the NVM command set.
const CAP_CSS_NVM: u64 = 1 << 37;

// CC fields (§3.1.5).
/// CC.EN.
const CC_EN: u32 = 1;
/// CC.SHN (15:14) = 01b: normal shutdown notification.
const CC_SHN_NORMAL: u32 = 1 << 14;
/// CC.IOSQES (19:16) = 6: 64-byte submission entries.
const CC_IOSQES: u32 = 6 << 16;
/// CC.IOCQES (23:20) = 4: 16-byte completion entries.
const CC_IOCQES: u32 = 4 << 20;
// CC.CSS (6:4) = 000b NVM, CC.MPS (10:7) = 0 (4 KiB pages), CC.AMS (13:11) = 000b round
// robin: all zero.

// CSTS fields (§3.1.6).
/// CSTS.RDY.
const CSTS_RDY: u32 = 1;
/// CSTS.CFS: controller fatal status.
const CSTS_CFS: u32 = 1 << 1;
/// CSTS.SHST (3:2).
const CSTS_SHST: u32 = 3 << 2;
/// CSTS.SHST = 10b: shutdown processing complete.
const CSTS_SHST_COMPLETE: u32 = 2 << 2;

// Admin commands (§5).
/// Create I/O Submission Queue (§5.4).
const ADMIN_CREATE_IO_SQ: u8 = 0x01;
/// Create I/O Completion Queue (§5.3).
const ADMIN_CREATE_IO_CQ: u8 = 0x05;
/// Identify (§5.15).
const ADMIN_IDENTIFY: u8 = 0x06;
/// Set Features (§5.21).
const ADMIN_SET_FEATURES: u8 = 0x09;
/// Identify CNS 00h: the namespace named by NSID.
const CNS_NAMESPACE: u32 = 0x00;
/// Identify CNS 01h: the controller.
const CNS_CONTROLLER: u32 = 0x01;
/// Feature 07h: Number of Queues (§5.21.1.7).
const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;

// NVM command set (§6).
/// Write (§6.15).
const NVM_WRITE: u8 = 0x01;
/// Read (§6.9).
const NVM_READ: u8 = 0x02;

/// The namespace driven.
const NAMESPACE: u32 = 1;
/// Memory page size (CC.MPS = 0).
const PAGE: u64 = 4096;
/// Admin queue entries.
const ADMIN_ENTRIES: u16 = 16;
/// Entries of each I/O queue (capped by CAP.MQES).
const IO_ENTRIES: u16 = 32;
/// I/O queue pairs at most.
pub const MAX_IO_QUEUES: usize = 4;
/// Bytes one command moves at most: what PRP1 + PRP2 cover from a page-aligned buffer.
pub const MAX_COMMAND_BYTES: u64 = 2 * PAGE;
/// Commands in flight per I/O queue at once (each with its slice of the bounce buffer).
pub const DEPTH: usize = 8;
/// Admin command timeout.
const ADMIN_TIMEOUT_US: u64 = 2_000_000;
/// I/O batch timeout.
const IO_TIMEOUT_US: u64 = 10_000_000;
/// Handler owners, by vector (the dispatch table shows them).
const OWNERS: [&str; 1 + MAX_IO_QUEUES] =
    ["nvme admin", "nvme io1", "nvme io2", "nvme io3", "nvme io4"];

/// The NVMe driver.
pub struct NvmeDriver;

impl Driver for NvmeDriver {
    fn name(&self) -> &'static str {
        "nvme"
    }

    fn matches(&self) -> &'static [Match] {
        // Mass storage / Non-Volatile Memory controller (PCI Code and ID Assignment).
        &[Match::Class {
            class: 0x01,
            subclass: 0x08,
        }]
    }

    fn probe(&self, function: PciFunction) -> Result<Box<dyn Bound>, (PciFunction, ProbeError)> {
        Nvme::new(function).map(|n| Box::new(n) as Box<dyn Bound>)
    }
}

/// What Identify said about the controller and namespace 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Model Number (MN, bytes 63:24), trailing spaces removed.
    pub model: String,
    /// Serial Number (SN, bytes 23:04).
    pub serial: String,
    /// Firmware Revision (FR, bytes 71:64).
    pub firmware: String,
    /// Version register: major, minor, tertiary.
    pub version: (u16, u8, u8),
    /// Maximum Data Transfer Size in bytes (MDTS); `None`: no limit.
    pub max_transfer: Option<u64>,
    /// Number of Namespaces (NN).
    pub namespaces: u32,
    /// Namespace 1 size in logical blocks (NSZE).
    pub lbas: u64,
    /// Logical block size in bytes (from FLBAS and its LBA format).
    pub lba_size: u32,
}

/// Why a command failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NvmeError {
    /// The completion carried an error status (§4.6.1).
    Status {
        /// Queue identifier (0: admin).
        queue: u16,
        /// The command's opcode.
        opcode: u8,
        /// Status Code Type.
        sct: u8,
        /// Status Code.
        sc: u8,
        /// Do Not Retry.
        dnr: bool,
    },
    /// No completion within the timeout.
    Timeout {
        /// Queue identifier.
        queue: u16,
        /// Opcode of the first command (in submission order) without a completion.
        opcode: u8,
        /// Commands still without a completion.
        pending: usize,
        /// Microseconds waited.
        waited_us: u64,
        /// Interrupts counted on the queue's vector meanwhile.
        interrupts: u64,
        /// Whether a completion had been posted without an interrupt announcing it.
        posted: bool,
        /// CSTS at the time.
        csts: u32,
    },
    /// The controller broke a rule (unknown command identifier, ...).
    Protocol(String),
    /// The request itself is wrong (range, length, queue).
    Request(String),
    /// An earlier timeout left a queue in an unknown state; the device needs rebinding.
    Broken(String),
}

impl fmt::Display for NvmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NvmeError::Status {
                queue,
                opcode,
                sct,
                sc,
                dnr,
            } => write!(
                f,
                "queue {queue}: opcode {opcode:#04x} failed: {} (SCT {sct}, SC {sc:#04x}{})",
                status_name(*queue, *sct, *sc),
                if *dnr { ", do not retry" } else { "" }
            ),
            NvmeError::Timeout {
                queue,
                opcode,
                pending,
                waited_us,
                interrupts,
                posted,
                csts,
            } => {
                write!(
                    f,
                    "queue {queue}: opcode {opcode:#04x}: {pending} command(s) without completion after {} ms ({interrupts} interrupt(s)",
                    waited_us / 1000
                )?;
                if *posted {
                    f.write_str(", a completion was posted but no interrupt came")?;
                }
                write!(f, "; CSTS {csts:#x}")?;
                if *csts & CSTS_CFS != 0 {
                    f.write_str(": controller fatal status")?;
                }
                f.write_str(")")
            }
            NvmeError::Protocol(s) => write!(f, "protocol error: {s}"),
            NvmeError::Request(s) => f.write_str(s),
            NvmeError::Broken(s) => write!(f, "controller unusable after an earlier error: {s}"),
        }
    }
}

/// Names the common status codes (§4.6.1: generic, command specific, media errors).
fn status_name(queue: u16, sct: u8, sc: u8) -> &'static str {
    match (sct, sc) {
        (0, 0x01) => "invalid command opcode",
        (0, 0x02) => "invalid field in command",
        (0, 0x03) => "command ID conflict",
        (0, 0x04) => "data transfer error",
        (0, 0x06) => "internal error",
        (0, 0x0B) => "invalid namespace or format",
        (0, 0x13) => "invalid number of SGL descriptors",
        (0, 0x80) => "LBA out of range",
        (0, 0x81) => "capacity exceeded",
        (0, 0x82) => "namespace not ready",
        (1, 0x01) if queue == 0 => "invalid queue identifier",
        (1, 0x02) if queue == 0 => "invalid queue size",
        (1, 0x08) if queue == 0 => "invalid interrupt vector",
        (1, 0x0D) if queue == 0 => "feature identifier not saveable",
        (2, _) => "media or data integrity error",
        (3, _) => "path related error",
        _ => "error",
    }
}

/// Where a command's data is: what PRP Entry 1 and 2 (§4.3) will point at. The bus addresses
/// themselves are written when the command is pushed, from the buffer that owns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Data {
    /// No data.
    #[default]
    None,
    /// `len` bytes at `offset` of the queue's own bounce buffer (page aligned, at most
    /// `MAX_COMMAND_BYTES`).
    Bounce { offset: u64, len: u64 },
    /// The ring of a queue being created (physically contiguous), given with the command.
    Ring,
}

/// One submission entry (§4.2): the fields this driver uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Command {
    opcode: u8,
    nsid: u32,
    data: Data,
    /// Command dwords 10 to 15.
    cdw: [u32; 6],
}

impl Command {
    /// The 16 dwords, with command identifier `cid`; PRP Entry 1 and 2 (dwords 6 to 9) are
    /// zero here and written by [`Queue::push`].
    fn dwords(&self, cid: u16) -> [u32; 16] {
        let mut d = [0u32; 16];
        d[0] = u32::from(self.opcode) | u32::from(cid) << 16; // FUSE 00b, PSDT 00b (PRPs)
        d[1] = self.nsid;
        d[10..16].copy_from_slice(&self.cdw);
        d
    }

    /// Read or Write (§6.9, §6.15) of `blocks` blocks at `lba`, data at `offset` of the
    /// queue's bounce buffer (page aligned, at most two pages long).
    fn io(opcode: u8, lba: u64, blocks: u32, offset: u64, bytes: u64) -> Command {
        Command {
            opcode,
            nsid: NAMESPACE,
            data: Data::Bounce { offset, len: bytes },
            cdw: [lba as u32, (lba >> 32) as u32, blocks - 1, 0, 0, 0],
        }
    }
}

/// PRP Entry 1 and 2 (§4.3) for `bytes` bytes at page-aligned `offset` of a page-aligned
/// buffer, as offsets into it: the second entry is the second page, or none when one page is
/// enough. More than two pages would need a PRP list.
fn prps(offset: u64, bytes: u64) -> (u64, Option<u64>) {
    assert!(
        offset.is_multiple_of(PAGE) && bytes > 0 && bytes <= MAX_COMMAND_BYTES,
        "PRP1+PRP2 cover two pages"
    );
    (offset, (bytes > PAGE).then_some(offset + PAGE))
}

/// One completion entry (§4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Completion {
    /// Dword 0: command specific.
    dw0: u32,
    /// Command identifier.
    cid: u16,
    /// The 15-bit status field (dword 3 bits 31:17).
    status: u16,
}

impl Completion {
    fn from_dwords(dw0: u32, dw3: u32) -> Completion {
        Completion {
            dw0,
            cid: dw3 as u16,
            status: (dw3 >> 17) as u16,
        }
    }

    /// (SCT, SC, DNR) when the command failed.
    fn error(&self) -> Option<(u8, u8, bool)> {
        let (sc, sct) = (self.status as u8, ((self.status >> 8) & 7) as u8);
        (sc != 0 || sct != 0).then_some((sct, sc, self.status & (1 << 14) != 0))
    }
}

/// A submission/completion queue pair with its bounce buffer.
///
/// Owns three DMA buffers; they must outlive the controller's use of them, which
/// [`Nvme`]'s field order guarantees (see the module documentation).
struct Queue {
    /// Queue identifier (0: admin).
    id: u16,
    entries: u16,
    /// Submission ring: `entries` 64-byte entries.
    sq: DmaBuffer,
    /// Completion ring: `entries` 16-byte entries.
    cq: DmaBuffer,
    /// Bounce buffer: `DEPTH` command slices of `MAX_COMMAND_BYTES` (one page for admin).
    data: DmaBuffer,
    sq_tail: u16,
    cq_head: u16,
    /// The phase tag of entries not consumed yet (starts at 1: the ring is zeroed).
    phase: bool,
    next_cid: u16,
    /// MSI-X entry (and Interrupt Vector) of the completion queue.
    vector: usize,
    /// Bumped by the vector's handler.
    interrupts: Arc<AtomicU64>,
    /// Commands completed.
    completed: u64,
}

impl Queue {
    fn new(
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

/// The inner guard: the controller's registers and interrupt vectors. While it lives the
/// controller may be enabled; its `Drop` stops the controller (shutdown notification, then
/// CC.EN = 0 and CSTS.RDY = 0) before its vectors are released and before the queues that
/// [`Nvme`] declares after it are freed.
struct Controller {
    /// `Some` until [`Controller::into_function`]. Declared before `regs`: the vectors (and
    /// the INTx handler's clone of the window) go before the window unmaps.
    irq: Option<IrqVectors>,
    /// Bus mastering for the queues' DMA, on while the controller may run; declared after
    /// `irq` and dropped last of the two, so the queue memory the driver drops while a
    /// stopped controller still could master the bus waits until it cannot.
    master: Option<BusMaster>,
    regs: Arc<BarWindow>,
    /// Doorbell stride, bytes.
    stride: u64,
    /// CAP.TO, microseconds: how long enabling or disabling may take.
    timeout_us: u64,
}

impl Controller {
    fn irq(&self) -> &IrqVectors {
        self.irq
            .as_ref()
            .expect("vectors present until into_function")
    }

    fn function(&self) -> &PciFunction {
        self.irq().function()
    }

    fn master(&self) -> &BusMaster {
        self.master.as_ref().expect("present until into_function")
    }

    fn sq_doorbell(&self, queue: u16) -> u64 {
        DOORBELLS + 2 * u64::from(queue) * self.stride
    }

    fn cq_doorbell(&self, queue: u16) -> u64 {
        DOORBELLS + (2 * u64::from(queue) + 1) * self.stride
    }

    /// INTx: the handler masks with INTMS; this unmasks (§7.5.1). MSI-X: nothing.
    fn unmask(&self) {
        if self.irq().kind() == IrqKind::Intx {
            self.regs.write32(INTMC, 1);
        }
    }

    /// Stops the controller: normal shutdown notification (§7.6.2), then CC.EN = 0 and a
    /// wait for CSTS.RDY = 0. Whether it stopped in time.
    fn disable(&self) -> bool {
        let cc = self.regs.read32(CC);
        let function = self.function();
        if cc & CC_EN != 0 && self.regs.read32(CSTS) & CSTS_RDY != 0 {
            self.regs.write32(CC, cc | CC_SHN_NORMAL);
            function.wait_until(self.timeout_us, || {
                self.regs.read32(CSTS) & CSTS_SHST == CSTS_SHST_COMPLETE
            });
        }
        self.regs.write32(CC, 0);
        function.wait_until(self.timeout_us, || self.regs.read32(CSTS) & CSTS_RDY == 0)
    }

    /// Stops the controller, releases the vectors exactly as dropping does, and gives the
    /// function back (for a probe that fails).
    fn into_function(mut self) -> PciFunction {
        self.disable();
        let irq = self.irq.take().expect("vectors present until here");
        let function = irq.into_function();
        drop(self.master.take());
        function
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // Step 1 of the release order: the device stops using memory. If it does not report
        // RDY = 0 in time, dropping `irq` right after still turns Bus Master Enable off.
        if self.irq.is_some() {
            self.disable();
        }
    }
}

/// A bound NVMe controller and namespace 1.
///
/// Fields drop in declaration order, which is the release protocol (module documentation):
/// the controller guard first (device stopped, then vectors released), then the queues.
pub struct Nvme {
    controller: Controller,
    admin: Queue,
    io: Vec<Queue>,
    identity: Identity,
    /// Bytes per command: `MAX_COMMAND_BYTES`, or less if MDTS says so.
    chunk: u64,
    /// Set by a timeout: the queues' state is unknown.
    broken: Option<String>,
    /// Round-robin cursor for [`Nvme::read`] and [`Nvme::write`].
    next_queue: usize,
}

/// Checks CAP (§3.1.1): the NVM command set, 4 KiB pages. Returns the doorbell stride in
/// bytes and CAP.TO in microseconds.
fn parse_cap(cap: u64) -> Result<(u64, u64), String> {
    if cap == u64::MAX {
        return Err("registers read all ones (memory decoding off?)".into());
    }
    if cap & CAP_CSS_NVM == 0 {
        return Err(format!("CAP {cap:#x}: no NVM command set (CAP.CSS)"));
    }
    let mpsmin = (cap >> 48) & 0xf;
    if mpsmin != 0 {
        return Err(format!(
            "CAP.MPSMIN allows pages of {} KiB and up, not 4 KiB",
            4u64 << mpsmin
        ));
    }
    let stride = 4u64 << ((cap >> 32) & 0xf);
    let timeout_us = ((cap >> 24) & 0xff).max(1) * 500_000;
    Ok((stride, timeout_us))
}

impl Nvme {
    /// Brings the controller at `function` up (see the module documentation); on failure the
    /// function comes back with the reason.
    pub fn new(function: PciFunction) -> Result<Nvme, (PciFunction, ProbeError)> {
        macro_rules! fail {
            ($function:expr, $($arg:tt)*) => {
                return Err(($function, ProbeError(format!($($arg)*))))
            };
        }
        // 1. CAP through a window on the registers only, to learn the doorbell stride.
        let (cap, stride, timeout_us) = match function.map_bar(0, 0, DOORBELLS) {
            Ok(regs) => {
                let cap = regs.read64(CAP);
                match parse_cap(cap) {
                    Ok((stride, timeout)) => (cap, stride, timeout),
                    Err(e) => fail!(function, "{e}"),
                }
            }
            Err(e) => fail!(function, "BAR 0: {e}"),
        };
        // 2. Registers and the doorbells of 1 + MAX_IO_QUEUES queue pairs; never the MSI-X
        //    table (map_bar refuses it).
        let len = DOORBELLS + 2 * (1 + MAX_IO_QUEUES as u64) * stride;
        let regs = match function.map_bar(0, 0, len) {
            Ok(r) => Arc::new(r),
            Err(e) => fail!(function, "BAR 0 registers and doorbells [0, {len:#x}): {e}"),
        };
        // 3. Reset (§7.6.1): whatever firmware left running stops before bus mastering is
        //    enabled (the PCI layer turned it off when the function was claimed).
        regs.write32(CC, 0);
        if !function.wait_until(timeout_us, || regs.read32(CSTS) & CSTS_RDY == 0) {
            fail!(function, "controller did not reset (CSTS.RDY stays 1)");
        }
        // 4. Interrupts: MSI-X, one vector for the admin queue and one per I/O queue; else
        //    the INTx pin (one vector, one I/O queue). The function moves into the vectors.
        let irq = match function.alloc_irq_vectors(2, 1 + MAX_IO_QUEUES, IrqKinds::MSIX) {
            Ok(v) => v,
            Err((function, msix)) => match function.alloc_irq_vectors(1, 1, IrqKinds::INTX) {
                Ok(v) => v,
                Err((function, intx)) => {
                    fail!(function, "interrupts: MSI-X: {msix}; INTx: {intx}")
                }
            },
        };
        let counters: Vec<Arc<AtomicU64>> = (0..irq.len())
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        // The queues' DMA needs bus mastering whichever interrupt kind was granted.
        let master = irq.function().bus_master();
        let mut controller = Controller {
            irq: Some(irq),
            master: Some(master),
            regs,
            stride,
            timeout_us,
        };
        // 5. Handlers, living as long as the vectors. MSI-X: count. INTx: mask the
        //    controller's interrupt (the line is level-triggered and possibly shared), count.
        let intx = controller.irq().kind() == IrqKind::Intx;
        for (i, count) in counters.iter().enumerate() {
            let (count, regs) = (count.clone(), controller.regs.clone());
            let irq = controller.irq.as_mut().expect("allocated above");
            let installed = if intx {
                irq.install(i, OWNERS[i], move || {
                    regs.write32(INTMS, 1);
                    count.fetch_add(1, Ordering::Release);
                })
            } else {
                irq.install(i, OWNERS[i], move || {
                    count.fetch_add(1, Ordering::Release);
                })
            };
            if let Err(e) = installed {
                fail!(controller.into_function(), "handler {i}: {e}");
            }
        }
        // 6. The admin queue, on vector 0.
        let admin = match Queue::new(
            controller.master(),
            0,
            ADMIN_ENTRIES,
            PAGE,
            0,
            counters[0].clone(),
        ) {
            Ok(q) => q,
            Err(e) => fail!(controller.into_function(), "{e}"),
        };
        let mut nvme = Nvme {
            controller,
            admin,
            io: Vec::new(),
            identity: Identity::default(),
            chunk: MAX_COMMAND_BYTES,
            broken: None,
            next_queue: 0,
        };
        match nvme.start(cap, &counters) {
            Ok(()) => Ok(nvme),
            Err(e) => Err((nvme.into_function(), ProbeError(e))),
        }
    }

    /// Releases everything in the same order as dropping, giving the function back.
    fn into_function(self) -> PciFunction {
        let Nvme {
            controller,
            admin,
            io,
            ..
        } = self;
        let function = controller.into_function();
        drop(io);
        drop(admin);
        function
    }

    /// Enables the controller and creates the I/O queues (§7.6.1 from step 3 on).
    fn start(&mut self, cap: u64, counters: &[Arc<AtomicU64>]) -> Result<(), String> {
        let c = &self.controller;
        let regs = &c.regs;
        let mqes = (cap & 0xffff) as u16; // 0's based
        let admin_entries = ADMIN_ENTRIES.min(mqes.saturating_add(1));
        if admin_entries < 2 {
            return Err(format!("CAP.MQES {mqes} allows no queue"));
        }
        self.admin.entries = admin_entries;
        let aqs = u32::from(admin_entries - 1);
        regs.write32(AQA, aqs << 16 | aqs);
        regs.write_bus_address(ASQ, self.admin.sq.bus_address());
        regs.write_bus_address(ACQ, self.admin.cq.bus_address());
        regs.write32(CC, CC_IOSQES | CC_IOCQES | CC_EN);
        let ready = c.function().wait_until(c.timeout_us, || {
            regs.read32(CSTS) & (CSTS_RDY | CSTS_CFS) != 0
        });
        let csts = regs.read32(CSTS);
        if !ready || csts & CSTS_CFS != 0 {
            return Err(format!("controller did not become ready (CSTS {csts:#x})"));
        }
        let vs = regs.read32(VS);

        // Identify Controller.
        let data = self.identify(CNS_CONTROLLER, 0)?;
        let ctrl = parse_controller(&data, cap)?;
        // Identify Namespace 1.
        if ctrl.namespaces < NAMESPACE {
            return Err(format!("the controller has {} namespaces", ctrl.namespaces));
        }
        let data = self.identify(CNS_NAMESPACE, NAMESPACE)?;
        let (lbas, lba_size) = parse_namespace(&data)?;
        self.chunk = ctrl
            .max_transfer
            .map_or(MAX_COMMAND_BYTES, |m| m.min(MAX_COMMAND_BYTES));
        if u64::from(lba_size) > self.chunk {
            return Err(format!(
                "blocks of {lba_size} bytes exceed what one command may move ({} bytes)",
                self.chunk
            ));
        }
        self.identity = Identity {
            model: ctrl.model,
            serial: ctrl.serial,
            firmware: ctrl.firmware,
            version: ((vs >> 16) as u16, (vs >> 8) as u8, vs as u8),
            max_transfer: ctrl.max_transfer,
            namespaces: ctrl.namespaces,
            lbas,
            lba_size,
        };

        // Number of Queues first (§5.21.1.7): NSQR and NCQR, 0's based; the answer says how
        // many were allocated.
        let wanted = (counters.len() - 1).clamp(1, MAX_IO_QUEUES);
        let n = (wanted - 1) as u32;
        let granted = self
            .admin_command(Command {
                opcode: ADMIN_SET_FEATURES,
                cdw: [FEATURE_NUMBER_OF_QUEUES, n << 16 | n, 0, 0, 0, 0],
                ..Command::default()
            })
            .map_err(|e| format!("Set Features (Number of Queues): {e}"))?;
        let (nsqa, ncqa) = (
            (granted & 0xffff) as usize + 1,
            (granted >> 16) as usize + 1,
        );
        let queues = wanted.min(nsqa).min(ncqa);
        let entries = IO_ENTRIES.min(mqes.saturating_add(1));

        // The queue pairs: completion queue first, with its interrupt vector. Each queue's
        // memory belongs to `self.io` before the controller learns its address, so that a
        // failure here still frees it only after the controller has stopped.
        let intx = self.controller.irq().kind() == IrqKind::Intx;
        for qid in 1..=queues as u16 {
            let vector = if intx { 0 } else { usize::from(qid) };
            self.io.push(Queue::new(
                self.controller.master(),
                qid,
                entries,
                DEPTH as u64 * MAX_COMMAND_BYTES,
                vector,
                counters[vector].clone(),
            )?);
            let q = &self.io[self.io.len() - 1];
            let size = u32::from(entries - 1) << 16 | u32::from(qid);
            let mut admin = |command, ring| {
                admin_command(
                    &self.controller,
                    &mut self.admin,
                    &mut self.broken,
                    command,
                    Some(ring),
                )
            };
            admin(
                Command {
                    opcode: ADMIN_CREATE_IO_CQ,
                    data: Data::Ring,
                    // IV in 31:16, IEN (bit 1), PC (bit 0): physically contiguous.
                    cdw: [size, (vector as u32) << 16 | 1 << 1 | 1, 0, 0, 0, 0],
                    ..Command::default()
                },
                q.cq.bus_address(),
            )
            .map_err(|e| format!("Create I/O Completion Queue {qid}: {e}"))?;
            admin(
                Command {
                    opcode: ADMIN_CREATE_IO_SQ,
                    data: Data::Ring,
                    // CQID in 31:16, QPRIO 00b, PC.
                    cdw: [size, u32::from(qid) << 16 | 1, 0, 0, 0, 0],
                    ..Command::default()
                },
                q.sq.bus_address(),
            )
            .map_err(|e| format!("Create I/O Submission Queue {qid}: {e}"))?;
        }
        Ok(())
    }

    /// Identify with `cns` for `nsid`; the 4 KiB answer.
    fn identify(&mut self, cns: u32, nsid: u32) -> Result<Vec<u8>, String> {
        self.admin_command(Command {
            opcode: ADMIN_IDENTIFY,
            nsid,
            data: Data::Bounce {
                offset: 0,
                len: PAGE,
            },
            cdw: [cns, 0, 0, 0, 0, 0],
        })
        .map_err(|e| format!("Identify (CNS {cns}): {e}"))?;
        let mut out = vec![0u8; PAGE as usize];
        copy_from_dma(&self.admin.data, 0, &mut out);
        Ok(out)
    }

    /// Runs one admin command; its completion dword 0.
    fn admin_command(&mut self, command: Command) -> Result<u32, NvmeError> {
        admin_command(
            &self.controller,
            &mut self.admin,
            &mut self.broken,
            command,
            None,
        )
    }

    /// What Identify said.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// I/O queue pairs in use.
    pub fn io_queues(&self) -> usize {
        self.io.len()
    }

    /// The interrupt kind granted and how many vectors.
    pub fn interrupts(&self) -> (IrqKind, usize) {
        (self.controller.irq().kind(), self.controller.irq().len())
    }

    /// Interrupts counted per vector so far (index = MSI-X entry).
    pub fn interrupt_counts(&self) -> Vec<u64> {
        let mut counts = vec![self.admin.interrupts.load(Ordering::Relaxed)];
        for q in &self.io {
            if q.vector == counts.len() {
                counts.push(q.interrupts.load(Ordering::Relaxed));
            }
        }
        counts
    }

    /// Commands completed on each I/O queue.
    pub fn completed(&self) -> Vec<u64> {
        self.io.iter().map(|q| q.completed).collect()
    }

    /// Bytes one command moves at most.
    pub fn command_bytes(&self) -> u64 {
        self.chunk
    }

    /// The function the driver is bound to.
    pub fn function(&self) -> &PciFunction {
        self.controller.function()
    }

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
                if matches!(e, NvmeError::Timeout { .. } | NvmeError::Protocol(_)) {
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

    /// Writes `data` (whole blocks) at `lba` through I/O queue `queue` (0-based).
    pub fn write_on(&mut self, queue: usize, lba: u64, data: &[u8]) -> Result<(), NvmeError> {
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

/// Submits `commands` on `q` (fewer than its entries), rings its tail doorbell once, and
/// waits for every completion by interrupt; their dword 0 go to `dw0`. Every completion is
/// consumed even when one fails, so the queue stays consistent; the first failure is
/// returned. A timeout leaves commands outstanding.
/// Runs one admin command on `admin`; its completion dword 0. `ring` is the address of a
/// queue being created ([`Data::Ring`]). A timeout or protocol error marks the queues broken.
fn admin_command(
    c: &Controller,
    admin: &mut Queue,
    broken: &mut Option<String>,
    command: Command,
    ring: Option<BusAddr<'_>>,
) -> Result<u32, NvmeError> {
    let mut dw0 = [0u32];
    execute(c, admin, &[command], &mut dw0, ADMIN_TIMEOUT_US, ring).inspect_err(|e| {
        if matches!(e, NvmeError::Timeout { .. } | NvmeError::Protocol(_)) {
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

/// Copies from a DMA buffer (dword reads; `out.len()` a multiple of 4).
fn copy_from_dma(buffer: &DmaBuffer, offset: u64, out: &mut [u8]) {
    for (i, word) in out.chunks_exact_mut(4).enumerate() {
        word.copy_from_slice(&buffer.read32(offset + 4 * i as u64).to_le_bytes());
    }
}

/// Copies into the start of a DMA buffer (dword writes; `data.len()` a multiple of 4).
fn copy_to_dma(buffer: &DmaBuffer, data: &[u8]) {
    for (i, word) in data.chunks_exact(4).enumerate() {
        let value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        buffer.write32(4 * i as u64, value);
    }
}

/// The Identify Controller fields used (§5.15.2, Identify Controller data structure).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ControllerData {
    model: String,
    serial: String,
    firmware: String,
    max_transfer: Option<u64>,
    namespaces: u32,
}

/// An ASCII field, trailing spaces (and NULs) removed.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches([' ', '\0'])
        .into()
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    u64::from(le32(bytes, at)) | u64::from(le32(bytes, at + 4)) << 32
}

/// Parses Identify Controller data; `cap` gives the page size MDTS counts in.
fn parse_controller(data: &[u8], cap: u64) -> Result<ControllerData, String> {
    if data.len() < 4096 {
        return Err("short Identify Controller data".into());
    }
    // MDTS (byte 77): 2^n units of the minimum page size; 0 means no limit.
    let mdts = data[77];
    let page = 4096u64 << ((cap >> 48) & 0xf);
    let max_transfer = (mdts != 0).then(|| page << mdts.min(32));
    // SQES (512) and CQES (513): required size in 3:0, maximum in 7:4, log2 bytes.
    let (sqes, cqes) = (data[512], data[513]);
    if !(sqes & 0xf <= 6 && sqes >> 4 >= 6) || !(cqes & 0xf <= 4 && cqes >> 4 >= 4) {
        return Err(format!(
            "entry sizes unsupported: SQES {sqes:#x}, CQES {cqes:#x} (need 64 and 16 bytes)"
        ));
    }
    Ok(ControllerData {
        serial: text(&data[4..24]),
        model: text(&data[24..64]),
        firmware: text(&data[64..72]),
        max_transfer,
        namespaces: le32(data, 516),
    })
}

/// Parses Identify Namespace data (§5.15.2, Identify Namespace data structure): (NSZE, block
/// size).
fn parse_namespace(data: &[u8]) -> Result<(u64, u32), String> {
    if data.len() < 4096 {
        return Err("short Identify Namespace data".into());
    }
    let nsze = le64(data, 0);
    if nsze == 0 {
        return Err("namespace 1 is not active (NSZE 0)".into());
    }
    // FLBAS (byte 26) bits 3:0 pick one of NLBAF + 1 (byte 25, 0's based) LBA formats at
    // byte 128 + 4n: MS in 15:0, LBADS (log2 of the block size) in 23:16.
    let (nlbaf, flbas) = (data[25], data[26]);
    let index = flbas & 0xf;
    if index > nlbaf {
        return Err(format!(
            "FLBAS {flbas:#x} names format {index} of {}",
            nlbaf + 1
        ));
    }
    let format = le32(data, 128 + 4 * usize::from(index));
    let (ms, lbads) = (format & 0xffff, (format >> 16) & 0xff);
    if ms != 0 {
        return Err(format!("LBA format {index} carries {ms} bytes of metadata"));
    }
    if !(9..=16).contains(&lbads) {
        return Err(format!("LBA format {index}: LBADS {lbads}"));
    }
    Ok((nsze, 1 << lbads))
}

impl Bound for Nvme {
    fn driver(&self) -> &'static str {
        "nvme"
    }

    /// `read <lba>`: reads one block and shows its first 64 bytes and its FNV-1a.
    fn command(&mut self, args: &[&str]) -> Option<Result<String, String>> {
        let ["read", lba] = args else { return None };
        let Ok(lba) = lba.parse::<u64>() else {
            return Some(Err(format!("not a block number: {lba}")));
        };
        let mut block = vec![0u8; self.identity.lba_size as usize];
        Some(
            self.read(lba, &mut block)
                .map_err(|e| format!("read LBA {lba}: {e}"))
                .map(|()| {
                    let mut text = format!(
                        "LBA {lba} ({} bytes) fnv1a={:016x}",
                        block.len(),
                        fnv1a(&block)
                    );
                    for (i, row) in block[..64.min(block.len())].chunks(16).enumerate() {
                        text.push_str(&format!("\n{:04x}:", i * 16));
                        for b in row {
                            text.push_str(&format!(" {b:02x}"));
                        }
                    }
                    text
                }),
        )
    }

    fn address(&self) -> pci::Address {
        self.function().address()
    }

    fn status(&self) -> String {
        let id = &self.identity;
        let (kind, vectors) = self.interrupts();
        let first = self.controller.irq().vector(0).map_or(0, |v| v.number());
        format!(
            "{} serial {} fw {} (NVMe {}.{}), ns1 {} x {} B ({} MiB), {} I/O queue(s), {vectors} {kind} vector(s) from {first:#04x}",
            id.model,
            id.serial,
            id.firmware,
            id.version.0,
            id.version.1,
            id.lbas,
            id.lba_size,
            (id.lbas * u64::from(id.lba_size)) >> 20,
            self.io.len(),
        )
    }

    fn self_test(&mut self) -> Result<String, String> {
        let size = self.identity.lba_size as usize;
        let e = |what: &str, e: NvmeError| format!("{what}: {e}");
        // LBA 0 on every I/O queue: each queue's vector delivers.
        let mut first = vec![0u8; size];
        self.read_on(0, 0, &mut first)
            .map_err(|x| e("read LBA 0 on queue 1", x))?;
        let mut again = vec![0u8; size];
        for q in 1..self.io.len() {
            self.read_on(q, 0, &mut again)
                .map_err(|x| e(&format!("read LBA 0 on queue {}", q + 1), x))?;
            if again != first {
                return Err(format!("LBA 0 differs between queue 1 and queue {}", q + 1));
            }
        }
        // Round trip on the last block, restoring what was there.
        let last = self.identity.lbas - 1;
        let mut original = vec![0u8; size];
        self.read(last, &mut original)
            .map_err(|x| e("read the last LBA", x))?;
        let pattern: Vec<u8> = original
            .iter()
            .enumerate()
            .map(|(i, b)| !b ^ (i as u8).wrapping_mul(31))
            .collect();
        // Once the block may be overwritten, restoring it is attempted whatever happens.
        let round_trip = self
            .write(last, &pattern)
            .map_err(|x| e("write the last LBA", x))
            .and_then(|()| {
                self.read(last, &mut again)
                    .map_err(|x| e("read back the last LBA", x))
            })
            .and_then(|()| {
                (again == pattern)
                    .then_some(())
                    .ok_or_else(|| format!("LBA {last}: read back differs from what was written"))
            });
        let restored = self
            .write(last, &original)
            .map_err(|x| e("restore the last LBA", x))
            .and_then(|()| {
                self.read(last, &mut again)
                    .map_err(|x| e("read the restored last LBA", x))
            })
            .and_then(|()| {
                (again == original)
                    .then_some(())
                    .ok_or_else(|| format!("LBA {last}: not restored"))
            });
        round_trip?;
        restored?;
        Ok(format!(
            "LBA 0 read on {} queue(s) (fnv1a {:016x}), write/read round trip on LBA {last} restored",
            self.io.len(),
            fnv1a(&first)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller_page() -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        d[4..24].copy_from_slice(b"deadbeef            ");
        d[24..64].copy_from_slice(b"QEMU NVMe Ctrl                          ");
        d[64..72].copy_from_slice(b"10.0.2  ");
        d[77] = 7;
        d[512] = 0x66;
        d[513] = 0x44;
        d[516] = 1;
        d
    }

    #[test]
    fn identify_controller_fields() {
        let c = parse_controller(&controller_page(), 0).unwrap();
        assert_eq!(c.serial, "deadbeef");
        assert_eq!(c.model, "QEMU NVMe Ctrl");
        assert_eq!(c.firmware, "10.0.2");
        assert_eq!(c.max_transfer, Some(512 * 1024));
        assert_eq!(c.namespaces, 1);
        let mut d = controller_page();
        d[77] = 0;
        assert_eq!(parse_controller(&d, 0).unwrap().max_transfer, None);
        d[512] = 0x77; // requires 128-byte entries
        assert!(parse_controller(&d, 0).unwrap_err().contains("SQES"));
    }

    #[test]
    fn identify_namespace_fields() {
        let mut d = vec![0u8; 4096];
        d[0..8].copy_from_slice(&8192u64.to_le_bytes());
        d[25] = 1; // two formats
        d[26] = 1; // the second
        d[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
        d[132..136].copy_from_slice(&(12u32 << 16).to_le_bytes());
        assert_eq!(parse_namespace(&d).unwrap(), (8192, 4096));
        d[26] = 0;
        assert_eq!(parse_namespace(&d).unwrap(), (8192, 512));
        d[26] = 2;
        assert!(parse_namespace(&d).is_err());
        d[26] = 0;
        d[128] = 8; // 8 bytes of metadata
        assert!(parse_namespace(&d).unwrap_err().contains("metadata"));
        d[0..8].copy_from_slice(&0u64.to_le_bytes());
        assert!(parse_namespace(&d).unwrap_err().contains("not active"));
    }

    #[test]
    fn commands_and_prps() {
        assert_eq!(prps(0x10_0000, 512), (0x10_0000, None));
        assert_eq!(prps(0x10_0000, 4096), (0x10_0000, None));
        assert_eq!(prps(0x10_0000, 8192), (0x10_0000, Some(0x10_1000)));
        let c = Command::io(NVM_READ, 0x1_0000_0002, 16, 0x2000, 8192);
        assert_eq!(
            c.data,
            Data::Bounce {
                offset: 0x2000,
                len: 8192
            }
        );
        let d = c.dwords(0x1234);
        assert_eq!(d[0], 0x1234_0002);
        assert_eq!(d[1], 1);
        assert_eq!(
            (d[6], d[7], d[8], d[9]),
            (0, 0, 0, 0),
            "PRPs come from the buffer"
        );
        assert_eq!((d[10], d[11], d[12]), (2, 1, 15));
    }

    #[test]
    #[should_panic(expected = "PRP1+PRP2")]
    fn three_pages_need_a_prp_list() {
        let _ = prps(0x10_0000, 8192 + 512);
    }

    #[test]
    fn completion_status() {
        // Phase 1, CID 7, success.
        let ok = Completion::from_dwords(5, 1 << 16 | 7);
        assert_eq!((ok.cid, ok.dw0, ok.error()), (7, 5, None));
        // SCT 0, SC 0x80 (LBA out of range), DNR.
        let bad = Completion::from_dwords(0, (0x80 | 1 << 14) << 17 | 1 << 16 | 9);
        assert_eq!(bad.error(), Some((0, 0x80, true)));
        let e = NvmeError::Status {
            queue: 1,
            opcode: NVM_READ,
            sct: 0,
            sc: 0x80,
            dnr: true,
        };
        assert_eq!(
            e.to_string(),
            "queue 1: opcode 0x02 failed: LBA out of range (SCT 0, SC 0x80, do not retry)"
        );
        // SCT 1 on the admin queue: command specific.
        let q = Completion::from_dwords(0, (1 << 8 | 0x01) << 17);
        assert_eq!(q.error(), Some((1, 0x01, false)));
        assert_eq!(status_name(0, 1, 0x01), "invalid queue identifier");
    }

    #[test]
    fn timeout_message_says_what_happened() {
        let e = NvmeError::Timeout {
            queue: 2,
            opcode: NVM_WRITE,
            pending: 3,
            waited_us: 10_000_000,
            interrupts: 4,
            posted: true,
            csts: 3,
        };
        let text = e.to_string();
        assert!(
            text.contains("3 command(s) without completion after 10000 ms"),
            "{text}"
        );
        assert!(text.contains("posted but no interrupt"), "{text}");
        assert!(text.contains("controller fatal status"), "{text}");
    }

    #[test]
    fn capabilities_checks() {
        // QEMU: MQES 0x7ff, CQR, TO 15 (7.5 s), DSTRD 0, CSS NVM, MPSMIN 0, MPSMAX 4.
        let cap: u64 = 0x7ff | 1 << 16 | 0xf << 24 | CAP_CSS_NVM | 4 << 52;
        assert_eq!(parse_cap(cap), Ok((4, 7_500_000)));
        assert_eq!(parse_cap(cap | 2 << 32), Ok((16, 7_500_000)));
        assert!(parse_cap(cap & !CAP_CSS_NVM).unwrap_err().contains("NVM"));
        assert!(parse_cap(cap | 1 << 48).unwrap_err().contains("MPSMIN"));
        assert!(parse_cap(u64::MAX).unwrap_err().contains("all ones"));
    }
}
