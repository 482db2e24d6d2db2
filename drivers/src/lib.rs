//! Device drivers. They hold no `unsafe`: `pci/` and `kernel/` hand them owned, safe views of
//! configuration space, BARs, DMA memory and interrupt vectors, and everything a driver holds
//! is released when its state is dropped.
//!
//! The model: a [`Driver`] names the devices it matches; its `probe` receives an owned
//! [`pci::irq::PciFunction`] and returns its state as a [`Bound`], or hands the function back
//! with the error. Unbinding is dropping the `Bound`: its fields (register windows, DMA
//! buffers, interrupt vectors with their handlers, the function handle) release themselves.
//! There is no `remove` method to forget to write.
//!
//! The same `Drop` path runs when a driver panics: the kernel catches a panic in `probe`, in
//! an interrupt handler, in `self_test` or in `command` by unwinding, drops the driver's
//! state and marks the binding failed (docs/faults.md). [`fault`] injects such panics.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod block;
pub mod edu;
pub mod fault;
pub mod input;
pub mod nvme;
pub mod pciehp;
pub mod storage;
pub mod virtio;
pub mod xhci;

use alloc::boxed::Box;
use alloc::string::String;

use pci::irq::PciFunction;

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeError(pub String);

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A driver: what it matches and how it binds.
pub trait Driver: Sync {
    /// Short name.
    fn name(&self) -> &'static str;
    /// The devices it drives.
    fn matches(&self) -> &'static [Match];
    /// Takes the function and brings the device up; on failure the function comes back.
    fn probe(&self, function: PciFunction) -> Result<Box<dyn Bound>, (PciFunction, ProbeError)>;
}

/// A bound driver's state. Dropping it unbinds the device and releases everything.
pub trait Bound: Send {
    /// The driver's name.
    fn driver(&self) -> &'static str;
    /// The function it drives.
    fn address(&self) -> pci::Address;
    /// One line about the device (for the console's `drivers`).
    fn status(&self) -> String;
    /// Exercises the device once and says what happened (an error says what failed). A
    /// storage driver's self test reads only, unless [`storage::writes_allowed`].
    fn self_test(&mut self) -> Result<String, String>;
    /// A driver-specific console command (`<driver> <args>`, e.g. `nvme read 0`); `None`
    /// when the driver has no such command.
    fn command(&mut self, args: &[&str]) -> Option<Result<String, String>> {
        let _ = args;
        None
    }

    /// The disks this driver serves ([`block`]), for the kernel's registry of block devices;
    /// `None` for a driver that is not a storage driver.
    fn block(&mut self) -> Option<&mut dyn block::BlockDevices> {
        None
    }
}

/// FNV-1a, 64 bits: the checksum drivers' self tests and the test suites print, which the
/// host-side runner recomputes over the data it gave QEMU.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Every driver, in probe order.
pub const ALL: &[&dyn Driver] = &[
    &edu::EduDriver,
    &nvme::NvmeDriver,
    &virtio::blk::VirtioBlkDriver,
    &virtio::net::VirtioNetDriver,
    &pciehp::PciehpDriver,
    &xhci::XhciDriver,
];

/// The first driver matching these identity fields.
pub fn find(vendor: u16, device: u16, class: u8, subclass: u8) -> Option<&'static dyn Driver> {
    ALL.iter().copied().find(|d| {
        d.matches()
            .iter()
            .any(|m| m.matches(vendor, device, class, subclass))
    })
}

/// How a driver names the devices it can drive (PCI Local Bus 3.0 §6.2.1: vendor and device
/// IDs; Appendix D: class codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// One vendor/device ID pair.
    Id {
        /// Vendor ID (offset 0x00).
        vendor: u16,
        /// Device ID (offset 0x02).
        device: u16,
    },
    /// A base class and subclass (offsets 0x0B and 0x0A).
    Class {
        /// Base class.
        class: u8,
        /// Subclass.
        subclass: u8,
    },
}

impl Match {
    /// Whether a function with these identity fields matches.
    pub const fn matches(&self, vendor: u16, device: u16, class: u8, subclass: u8) -> bool {
        match *self {
            Match::Id {
                vendor: v,
                device: d,
            } => v == vendor && d == device,
            Match::Class {
                class: c,
                subclass: s,
            } => c == class && s == subclass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Match;

    #[test]
    fn id_and_class_matches() {
        let edu = Match::Id {
            vendor: 0x1234,
            device: 0x11e8,
        };
        assert!(edu.matches(0x1234, 0x11e8, 0x00, 0xff));
        assert!(!edu.matches(0x1234, 0x11e9, 0x00, 0xff));
        let nvme = Match::Class {
            class: 0x01,
            subclass: 0x08,
        };
        assert!(nvme.matches(0x1b36, 0x0010, 0x01, 0x08));
        assert!(!nvme.matches(0x1b36, 0x0010, 0x01, 0x06));
    }
}
