//! Interrupt vectors for PCI functions, owned.
//!
//! This is the project's answer to a bug class in Linux, where `pci_alloc_irq_vectors()` is
//! silently managed by devres after `pcim_enable_device()` and manual otherwise, so drivers
//! free their vectors twice. Here:
//!
//! - A [`PciFunction`] is an owned handle: at most one exists per function.
//! - [`PciFunction::alloc_irq_vectors`] consumes the handle and returns an [`IrqVectors`]
//!   that owns both the function and its vectors (MSI-X, else MSI, else INTx, as the caller
//!   allows). Allocating twice for one function cannot be written: the handle has moved.
//! - [`IrqVectors::request`] installs a handler and returns a [`Registration`] that borrows
//!   the vectors, so the vectors cannot be dropped while a handler is installed.
//! - Dropping [`IrqVectors`] is the only way to release them, and it does everything in
//!   order: uninstall what it still owns, mask every entry, read back to flush posted
//!   writes, check the pending bits, disable MSI/MSI-X, leave INTx disabled, return the
//!   vectors to the allocator. There is no free function.
//! - Handlers are `'static` and owned by the platform's dispatch table, so leaking a
//!   `Registration` or the `IrqVectors` with `mem::forget` leaks them, and nothing worse: a
//!   vector whose handler was leaked is masked and never handed out again.
//!
//! The hardware side (vector allocation, the dispatch table, MSI message format, MMIO
//! mappings, INTx routing) is the [`IrqPlatform`] trait, implemented by the kernel; this
//! module programs the PCI side (PCI Local Bus 3.0 §6.8: MSI and MSI-X) and is host-tested
//! against fakes.

mod allocate;
mod intx;
mod msi;
mod msix;
mod owned;

use alloc::boxed::Box;
use core::fmt;

pub use crate::function::{ConfigPort, PciFunction};
pub use owned::{IrqVectors, Registration, Vector};

use crate::Address;
use crate::vectors::{AllocError, Block};

/// A handler: runs in interrupt context, must not block. Owned by the dispatch table.
pub type Handler = Box<dyn FnMut() + Send + 'static>;

/// The message a function writes to raise an interrupt (Intel SDM vol. 3A §11.11.1 on x86:
/// address `0xFEE0_0000 | destination << 12`, data = vector).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// A bounds-checked window of 32-bit device registers (an MSI-X table or PBA).
pub trait RegisterWindow: Send + Sync {
    /// Reads the dword at `offset` (dword-aligned, inside the window).
    fn read32(&self, offset: u64) -> u32;
    /// Writes the dword at `offset`.
    fn write32(&self, offset: u64, value: u32);
}

/// A function's attachment to a (possibly shared) legacy INTx line.
///
/// Dropping it detaches the function; the platform frees the line's vector when the last
/// function sharing it is gone.
pub trait IntxLine: Send + Sync {
    /// The CPU (allocator index) and vector the line is delivered on.
    fn vector(&self) -> (u32, u8);
    /// The global system interrupt the pin is wired to.
    fn gsi(&self) -> u32;
    /// Adds `handler` to the line; returns an id for [`IntxLine::uninstall`].
    fn install(&self, owner: &'static str, handler: Handler) -> u64;
    /// Removes the handler `id`; whether it was there.
    fn uninstall(&self, id: u64) -> bool;
}

/// What the kernel provides to interrupt delivery.
pub trait IrqPlatform: Send + Sync {
    /// Allocates `count` vectors: 1, or an aligned power-of-two block on one CPU.
    fn allocate(&self, count: u8) -> Result<Block, AllocError>;
    /// Gives vectors back.
    fn free(&self, block: Block);
    /// The message that delivers `vector` to CPU `cpu` (allocator index).
    fn message(&self, cpu: u32, vector: u8) -> MsiMessage;
    /// Installs `handler` for `vector` on `cpu`.
    fn install(
        &self,
        cpu: u32,
        vector: u8,
        owner: &'static str,
        kind: IrqKind,
        handler: Handler,
    ) -> Result<(), IrqError>;
    /// Removes the handler of `vector` on `cpu`; whether there was one.
    fn uninstall(&self, cpu: u32, vector: u8) -> bool;
    /// Whether a handler is installed for `vector` on `cpu`.
    fn is_installed(&self, cpu: u32, vector: u8) -> bool;
    /// Maps `len` bytes of device memory at `phys` uncached.
    fn map(&self, phys: u64, len: u64) -> Result<Box<dyn RegisterWindow>, IrqError>;
    /// Microseconds since boot (a monotonic clock for drivers' timeouts).
    fn now_us(&self) -> u64;
    /// Allocates a zeroed DMA buffer of at least `bytes` bytes.
    fn dma(&self, bytes: u64) -> Result<Box<dyn crate::dma::DmaRegion>, IrqError>;
    /// Attaches the function's INTx pin (1 = INTA#) to its line, routed by firmware.
    fn attach_intx(&self, function: &crate::Function) -> Result<Box<dyn IntxLine>, IrqError>;
    /// The handle of `address` was dropped: the function may be claimed again.
    fn release_function(&self, address: Address);
    /// Counts an interrupt found pending on a vector being released (the release checks
    /// the pending bits after masking).
    fn pending_at_release(&self, address: Address, vector: u8) {
        let _ = (address, vector);
    }
}

bitflags::bitflags! {
    /// Which interrupt kinds [`PciFunction::alloc_irq_vectors`] may try, best first.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct IrqKinds: u8 {
        /// MSI-X (PCI 3.0 §6.8.2).
        const MSIX = 1;
        /// MSI (PCI 3.0 §6.8.1).
        const MSI = 2;
        /// Legacy INTx, routed through the IOAPIC.
        const INTX = 4;
        /// Any of them.
        const ALL = 7;
    }
}

/// The kind granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqKind {
    /// MSI-X entries, each with its own vector.
    Msix,
    /// One MSI capability with a block of vectors.
    Msi,
    /// The legacy INTx pin, possibly shared.
    Intx,
}

impl fmt::Display for IrqKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IrqKind::Msix => "MSI-X",
            IrqKind::Msi => "MSI",
            IrqKind::Intx => "INTx",
        })
    }
}

/// Why interrupts could not be set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqError {
    /// `min` is 0 or above `max`.
    BadRange {
        /// Asked minimum.
        min: usize,
        /// Asked maximum.
        max: usize,
    },
    /// None of the allowed kinds can give `min` vectors; each tried kind says why.
    Unavailable {
        /// Vectors asked for at least.
        min: usize,
        /// What MSI-X said, if tried.
        msix: Option<Box<IrqError>>,
        /// What MSI said, if tried.
        msi: Option<Box<IrqError>>,
        /// What INTx said, if tried.
        intx: Option<Box<IrqError>>,
    },
    /// The function has no such capability (or no interrupt pin).
    NotSupported(IrqKind),
    /// The function supports fewer vectors than `min`.
    TooFew {
        /// Kind tried.
        kind: IrqKind,
        /// What the function supports.
        supported: usize,
        /// What was asked.
        min: usize,
    },
    /// The vector allocator ran out.
    Vectors(AllocError),
    /// The MSI-X table or PBA lies outside its BAR, or the BAR is not memory.
    TableOutsideBar {
        /// BAR index.
        bir: u8,
        /// Offset of the structure in the BAR.
        offset: u64,
        /// Its length.
        len: u64,
        /// The BAR's size (0: no such memory BAR).
        bar_size: u64,
    },
    /// The platform could not map, route or install.
    Platform(&'static str),
    /// The vector index is not one of the granted ones.
    NoSuchVector(usize),
    /// A handler is already installed on that vector.
    Busy(usize),
    /// The function stopped answering (configuration reads return all ones).
    Vanished,
}

impl fmt::Display for IrqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IrqError::BadRange { min, max } => write!(f, "asked for {min}..={max} vectors"),
            IrqError::Unavailable {
                min,
                msix,
                msi,
                intx,
            } => {
                write!(f, "no interrupt kind gives {min} vector(s)")?;
                for (name, e) in [("MSI-X", msix), ("MSI", msi), ("INTx", intx)] {
                    if let Some(e) = e {
                        write!(f, "; {name}: {e}")?;
                    }
                }
                Ok(())
            }
            IrqError::NotSupported(kind) => write!(f, "the function has no {kind}"),
            IrqError::TooFew {
                kind,
                supported,
                min,
            } => {
                write!(f, "{kind} supports {supported} vector(s), {min} needed")
            }
            IrqError::Vectors(e) => write!(f, "{e}"),
            IrqError::TableOutsideBar {
                bir,
                offset,
                len,
                bar_size,
            } => write!(
                f,
                "MSI-X structure at BAR{bir}+{offset:#x} ({len:#x} bytes) lies outside the BAR ({bar_size:#x} bytes)"
            ),
            IrqError::Platform(why) => f.write_str(why),
            IrqError::NoSuchVector(i) => write!(f, "vector index {i} was not granted"),
            IrqError::Busy(i) => write!(f, "vector index {i} already has a handler"),
            IrqError::Vanished => f.write_str("the function no longer answers"),
        }
    }
}
