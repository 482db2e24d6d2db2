//! The PCI stack: addresses, configuration-space access and (as it grows) enumeration,
//! capabilities and MSI/MSI-X programming.
//!
//! Design: everything here is logic over traits (config-space access, MMIO), so it builds
//! `no_std` for the kernel and is tested on the host against fakes. The kernel supplies the
//! real ECAM mapping and port I/O.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod address;

pub use address::{Address, AddressError};
