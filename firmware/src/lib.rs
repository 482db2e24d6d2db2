//! What the kernel learns from firmware, as a `no_std` library tested on the host.
//!
//! Firmware tables are claims made by code the kernel did not write, on machines it has never
//! seen. Everything here treats them as untrusted input: a table that is short, has a bad
//! length or an unknown entry loses only that table or entry; nothing in this crate panics or
//! loops without bound on any input.
//!
//! - [`tables`]: the static tables (RSDP, RSDT/XSDT, FADT, MADT, MCFG, HPET, DMAR), parsed from
//!   bytes by code of our own.
//! - [`aml`]: the AML namespace through ACPICA (the reference implementation, bundled by the
//!   `acpica` crate), with the OS layer written here; PCI host bridges and `_PRT` routing,
//!   link devices included.
//! - [`hw`]: the one trait through which all of it reaches the machine (physical memory, port
//!   I/O, PCI configuration space, time). The kernel implements it with real hardware; the
//!   host tests and `acpi-probe` with [`sim`], a simulated machine holding a real machine's
//!   tables.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod aml;
pub mod dump;
pub mod hw;
#[cfg(feature = "probe")]
pub mod sim;
pub mod tables;
