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
//! mappings, INTx routing) is [`crate::platform`]'s [`Interrupts`](crate::platform::Interrupts)
//! and [`DeviceMemory`](crate::platform::DeviceMemory), implemented by the kernel; this module
//! programs the PCI side (PCI Local Bus 3.0 §6.8: MSI and MSI-X) and is host-tested against
//! fakes.

mod allocate;
mod intx;
mod msi;
mod msix;
mod owned;

use alloc::boxed::Box;
use core::fmt;

pub use crate::function::{ConfigPort, PciFunction};
pub use crate::platform::{Handler, IntxLine, MsiMessage, RegisterWindow};
pub use owned::{IrqVectors, Registration, Vector};

use crate::platform::PlatformError;
use crate::vectors::AllocError;

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

impl IrqKind {
    /// Its name: "MSI-X", "MSI" or "INTx".
    pub fn name(self) -> &'static str {
        match self {
            IrqKind::Msix => "MSI-X",
            IrqKind::Msi => "MSI",
            IrqKind::Intx => "INTx",
        }
    }
}

impl fmt::Display for IrqKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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

impl From<PlatformError> for IrqError {
    fn from(e: PlatformError) -> IrqError {
        match e {
            PlatformError::Vectors(e) => IrqError::Vectors(e),
            PlatformError::Failed(why) => IrqError::Platform(why),
        }
    }
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
