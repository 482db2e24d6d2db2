//! A driver for NVM Express controllers (NVM Express Base Specification 1.4), the PCI class
//! 01h/08h: every active namespace, each with its own block size, read and write of whole
//! logical blocks, many commands in flight per queue, every completion taken by interrupt.
//! Tested on QEMU's `nvme` (1b36:0010) with `nvme-ns` namespaces.
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
//! 64-byte SQ and 16-byte CQ entries), wait for CSTS.RDY = 1, Identify Controller (§5.15:
//! MDTS, in units of CAP.MPSMIN pages, bounds a command; 0 means no limit, and the driver
//! caps commands at 1 MiB either way), the active namespace list (CNS 02h; every NSID from 1
//! to NN on a controller that refuses it) and Identify Namespace for each (NSZE, and the
//! block size of the LBA format FLBAS picks; a namespace with metadata is skipped), Set
//! Features Number of Queues (§5.21.1.7), then one Create I/O Completion Queue (§5.3) and
//! Create I/O Submission Queue (§5.4) per queue pair. A controller with no usable namespace
//! fails the probe.
//!
//! Interrupts: MSI-X, entry 0 for the admin queue, entry `i` for I/O queue `i` (the queue's
//! Interrupt Vector field is `i`), up to four I/O queues as the vectors allow. A controller
//! that grants one MSI-X entry gets one I/O queue on entry 0 beside the admin queue, as
//! Linux's `nvme` driver shares its first vector (the INTx pin, which a board may not route,
//! is not needed then). Without MSI-X the driver takes the INTx pin (one vector, possibly
//! shared) and one I/O queue; the
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
//! Data moves through staging slots, one per command in flight, indexed by the command
//! identifier (`io`): a command carries up to MDTS (at most 1 MiB), described by PRP Entry
//! 1, and PRP Entry 2 or a PRP list (§4.3) in the slot's last page; up to `IO_ENTRIES - 1`
//! commands are in flight on a queue, and each completed read is copied once into the
//! caller's bytes. Interrupt coalescing (Set Features, Feature Identifier 08h) is left at
//! the controller's default: each interrupt takes every completion posted by then, and
//! QEMU's controller stores the feature without acting on it, so no gain could be measured.
//!
//! # Ownership
//!
//! Everything the driver holds is in [`Nvme`], and unbinding is dropping it. Fields drop in
//! declaration order, and that order is the release protocol:
//!
//! 1. `Controller` (`controller.rs`), the inner guard, first. Its `Drop` body sends the
//!    normal shutdown notification (CC.SHN, §7.6.2), clears CC.EN and waits for
//!    CSTS.RDY = 0: a disabled controller has deleted its queues and does no more DMA.
//!    Then its own fields drop:
//!    the [`IrqVectors`] (handlers uninstalled, MSI-X entries masked and disabled, vectors
//!    back to the allocator, the vectors' own bus-mastering hold dropped), then the
//!    driver's [`BusMaster`](pci::function::BusMaster) guard (Bus Master Enable off: the PCI
//!    layer turned it off when the function was claimed, and only guards turn it on), then
//!    the register window ([`BarWindow`], unmapped; the INTx handler's `Arc` clone of it
//!    went with the handler).
//! 2. The admin queue, then the I/O queues, then the staging slots: submission and
//!    completion rings and data buffers ([`DmaBuffer`]s) go back to the frame allocator. The device can no longer
//!    write them: it is disabled, and even one that ignored CC.EN has lost bus mastering.
//!    Had a buffer been dropped while bus mastering was still on, the PCI layer would have
//!    kept it in the function's quarantine until it went off.
//!
//! Freeing the rings first would let a live controller write completions (and read data)
//! into frames the kernel has handed to someone else, the classic use-after-free by DMA.
//! That is why the stop is a guard's `Drop` rather than a line to remember in a remove
//! function. A probe that fails after enabling releases in the same order
//! (`Nvme::into_function`), and gives the function back.
//!
//! Before all that, the namespaces' names leave the block registry
//! ([`crate::block::Registration`], the first field).
//!
//! What a leak (`mem::forget`) costs: the controller stays enabled but idle (nothing submits
//! any more), its vectors and handlers stay installed (masked vectors are never reused), its
//! rings and staging slots (a slot per command depth ever used, MDTS bytes each) and a page
//! of MMIO window stay taken, the function stays claimed, and its disk names stay in the
//! registry, leading nowhere.

mod commands;
mod controller;
#[cfg(test)]
mod fake_tests;
mod identify;
mod io;
mod queues;
mod registers;

pub use io::Namespace;

use crate::fnv1a;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;

#[cfg(doc)]
use pci::irq::IrqVectors;
use pci::irq::{IrqKind, PciFunction};
#[cfg(doc)]
use pci::window::{BarWindow, DmaBuffer};

use crate::block::BlockDevices;
use crate::{Bound, Driver, Match, ProbeError};

use controller::Controller;
use queues::Queue;
use registers::CSTS_CFS;

/// Memory page size (CC.MPS = 0).
const PAGE: u64 = 4096;
/// Admin queue entries.
const ADMIN_ENTRIES: u16 = 16;
/// Entries of each I/O queue (capped by CAP.MQES): up to one fewer commands in flight.
const IO_ENTRIES: u16 = 64;
/// I/O queue pairs at most.
pub const MAX_IO_QUEUES: usize = 4;
/// Bytes one command moves at most when MDTS allows more (or sets no limit).
pub const MAX_COMMAND_BYTES: u64 = crate::block::MAX_REQUEST_BYTES;
/// The depth of the benchmark's batched mode (`nvmebench` `qd8`).
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

/// What Identify said about the controller and its first active namespace.
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
    /// Number of Namespaces (NN): the highest NSID the controller may have.
    pub namespaces: u32,
    /// The first active namespace's size in logical blocks (NSZE); every namespace is in
    /// [`Nvme::namespaces`].
    pub lbas: u64,
    /// The first active namespace's logical block size in bytes (from FLBAS and its LBA
    /// format).
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
    /// The controller stopped answering while a command was outstanding (configuration
    /// reads return all ones: removed, or dead); the wait ended at the first presence check
    /// ([`PciFunction::wait_until`](pci::irq::PciFunction::wait_until)).
    Gone {
        /// Queue identifier.
        queue: u16,
        /// Microseconds waited.
        waited_us: u64,
    },
    /// The controller broke a rule (unknown command identifier, ...).
    Protocol(String),
    /// The request itself is wrong (range, length, queue).
    Request(String),
    /// An earlier timeout left a queue in an unknown state; the device needs rebinding.
    Broken(String),
    /// A write was refused before reaching the device: writes to storage are not allowed
    /// ([`crate::storage`]).
    WritesDisabled,
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
            NvmeError::Gone { queue, waited_us } => write!(
                f,
                "queue {queue}: the controller stopped answering after {} ms (removed?)",
                waited_us / 1000
            ),
            NvmeError::Protocol(s) => write!(f, "protocol error: {s}"),
            NvmeError::Request(s) => f.write_str(s),
            NvmeError::Broken(s) => write!(f, "controller unusable after an earlier error: {s}"),
            NvmeError::WritesDisabled => f.write_str(crate::storage::WRITES_DISABLED),
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

/// A bound NVMe controller and its active namespaces.
///
/// Fields drop in declaration order, which is the release protocol (module documentation):
/// the controller guard first (device stopped, then vectors released), then the queues and
/// the staging slots.
pub struct Nvme {
    /// The namespaces' names in the block registry, removed first when the state drops.
    registration: Option<crate::block::Registration>,
    controller: Controller,
    admin: Queue,
    io: Vec<Queue>,
    /// Staging slots for the commands in flight, indexed by command identifier.
    staging: Vec<pci::window::DmaBuffer>,
    /// PRP list pages for reads into the caller's DMA memory, indexed by command identifier.
    lists: Vec<pci::window::DmaBuffer>,
    identity: Identity,
    namespaces: Vec<Namespace>,
    /// Bytes per command: `MAX_COMMAND_BYTES`, or less if MDTS says so.
    chunk: u64,
    /// Set by a timeout: the queues' state is unknown.
    broken: Option<String>,
    /// Round-robin cursor for [`Nvme::read`] and [`Nvme::write`].
    next_queue: usize,
}

impl Nvme {
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

    /// Bytes one command moves at most: MDTS, capped at [`MAX_COMMAND_BYTES`].
    pub fn command_bytes(&self) -> u64 {
        self.chunk
    }

    /// The function the driver is bound to.
    pub fn function(&self) -> &PciFunction {
        self.controller.function()
    }
}

impl Bound for Nvme {
    fn driver(&self) -> &'static str {
        "nvme"
    }

    /// `read <lba> [nsid]`: reads one block of namespace `nsid` (default: the first active
    /// one) and shows its first 64 bytes and its FNV-1a.
    fn command(&mut self, args: &[&str]) -> Option<Result<String, String>> {
        crate::fault::point(self.address(), crate::fault::Point::Command);
        let (lba, nsid) = match args {
            ["read", lba] => (*lba, None),
            ["read", lba, nsid] => (*lba, Some(*nsid)),
            _ => return None,
        };
        let Ok(lba) = lba.parse::<u64>() else {
            return Some(Err(format!("not a block number: {lba}")));
        };
        let index = match nsid.map(str::parse::<u32>) {
            None => 0,
            Some(Ok(n)) => match self.namespaces.iter().position(|x| x.nsid == n) {
                Some(i) => i,
                None => return Some(Err(format!("no active namespace {n}"))),
            },
            Some(Err(_)) => return Some(Err("not a namespace identifier".into())),
        };
        let ns = self.namespaces[index];
        let mut block = vec![0u8; ns.lba_size as usize];
        let q = self.pick_queue();
        Some(
            self.read_ns(
                index,
                q,
                &mut [crate::block::Request {
                    lba,
                    data: &mut block,
                }],
                1,
            )
            .map_err(|e| format!("namespace {} LBA {lba}: {e}", ns.nsid))
            .map(|()| {
                let mut text = format!(
                    "namespace {} LBA {lba} ({} bytes) fnv1a={:016x}",
                    ns.nsid,
                    block.len(),
                    fnv1a(&block)
                );
                crate::block::hexdump(&mut text, &block[..64.min(block.len())]);
                text
            }),
        )
    }

    fn block(&mut self) -> Option<&mut dyn BlockDevices> {
        Some(self)
    }

    fn address(&self) -> pci::Address {
        self.function().address()
    }

    fn status(&self) -> String {
        let id = &self.identity;
        let (kind, vectors) = self.interrupts();
        let first = self.controller.irq().vector(0).map_or(0, |v| v.number());
        let mut namespaces = String::new();
        for n in &self.namespaces {
            namespaces.push_str(&format!(
                "ns{} {} x {} B ({} MiB), ",
                n.nsid,
                n.lbas,
                n.lba_size,
                n.lbas.saturating_mul(u64::from(n.lba_size)) >> 20
            ));
        }
        format!(
            "{} serial {} fw {} (NVMe {}.{}), {namespaces}{} I/O queue(s) of depth {}, {} KiB per command, {vectors} {kind} vector(s) from {first:#04x}",
            id.model,
            id.serial,
            id.firmware,
            id.version.0,
            id.version.1,
            self.io.len(),
            self.max_depth(),
            self.chunk / 1024,
        )
    }

    fn self_test(&mut self) -> Result<String, String> {
        crate::fault::point(self.address(), crate::fault::Point::SelfTest);
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
        // The last block: read always; a write round trip (restoring what was there) only
        // when writes are allowed. By default a self test never writes (`crate::storage`):
        // on a real machine this is the user's disk, and its last block holds the backup GPT
        // header.
        let last = self.identity.lbas.saturating_sub(1);
        let mut original = vec![0u8; size];
        self.read(last, &mut original)
            .map_err(|x| e("read the last LBA", x))?;
        if !crate::storage::writes_allowed() {
            return Ok(format!(
                "LBA 0 read on {} queue(s) (fnv1a {:016x}), last LBA {last} read (fnv1a {:016x}); read only, no write test (boot with storage=write for one)",
                self.io.len(),
                fnv1a(&first),
                fnv1a(&original)
            ));
        }
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
    use super::commands::{Completion, NVM_READ, NVM_WRITE};
    use super::*;

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
    fn refused_write_says_how_to_allow_it() {
        assert_eq!(
            NvmeError::WritesDisabled.to_string(),
            "writes are disabled: boot with storage=write to allow them"
        );
    }

    #[test]
    fn gone_message_says_the_controller_stopped_answering() {
        let e = NvmeError::Gone {
            queue: 1,
            waited_us: 12_345,
        };
        assert_eq!(
            e.to_string(),
            "queue 1: the controller stopped answering after 12 ms (removed?)"
        );
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
}
