//! A model AMD-Vi unit and memory for the host tests, written from the specification
//! (doc. 48882, §2 and §3) and QEMU's emulation, independently of the crate's encoders.
//!
//! [`Memory`] hands out runs of pages and asks each unit, when a run comes back, whether
//! the unit may still read it. [`Unit`] is one unit's registers ([`Unit`] implements
//! `iommu::Registers`), its command processor (run when the tail moves; it caches device
//! table entries and translations until a command invalidates them and rejects commands with
//! reserved bits set, as QEMU does, by logging ILLEGAL_COMMAND_ERROR and, as hardware does,
//! stopping), its DMA path ([`Unit::dma`]), which walks the tables and logs
//! IO_PAGE_FAULT events, and its interrupt path ([`Unit::msi`]), which looks messages up in
//! the requester's interrupt remapping table, caching device table entries and remapping
//! entries until a command invalidates them.

#![allow(dead_code)]

pub mod fixtures;
mod interrupts;
mod memory;
mod unit;

#[allow(unused_imports)]
pub use interrupts::Refused;
pub use memory::Memory;
#[allow(unused_imports)]
pub use unit::{Unit, UnitState};

/// The specification's numbers, written out here rather than taken from the crate.
pub mod spec {
    pub const DEV_TABLE_BASE: u64 = 0x0000;
    pub const CMD_BUF_BASE: u64 = 0x0008;
    pub const EVENT_LOG_BASE: u64 = 0x0010;
    pub const CONTROL: u64 = 0x0018;
    pub const EFR: u64 = 0x0030;
    pub const CMD_BUF_HEAD: u64 = 0x2000;
    pub const CMD_BUF_TAIL: u64 = 0x2008;
    pub const EVENT_LOG_HEAD: u64 = 0x2010;
    pub const EVENT_LOG_TAIL: u64 = 0x2018;
    pub const STATUS: u64 = 0x2020;

    pub const IOMMU_EN: u64 = 1;
    pub const EVENT_LOG_EN: u64 = 1 << 2;
    pub const COHERENT: u64 = 1 << 10;
    pub const CMD_BUF_EN: u64 = 1 << 12;

    pub const EVENT_OVERFLOW: u64 = 1;
    pub const EVENT_LOG_INT: u64 = 1 << 1;
    pub const COM_WAIT_INT: u64 = 1 << 2;
    pub const EVENT_LOG_RUN: u64 = 1 << 3;
    pub const CMD_BUF_RUN: u64 = 1 << 4;

    /// EFR: IASup (6), HATS (11:10) = 10b as QEMU reports.
    pub const IA_SUP: u64 = 1 << 6;
    pub const HATS_6_LEVELS: u64 = 2 << 10;
}
