//! Intel VT-d DMA remapping, the part a kernel needs to keep each device inside the memory
//! its driver owns (Intel Virtualization Technology for Directed I/O, Architecture
//! Specification rev. 4.1).
//!
//! Design note. Without remapping, a PCI device that masters the bus writes wherever it is
//! told, and a driver can tell it anything: a number written into a queue-base register is
//! an address. The `pci` crate's types make sure the kernel never *gives* a device memory
//! that is not its function's, but they cannot stop a driver from writing another number.
//! A remapping unit can: it translates every DMA request through tables the kernel writes,
//! per requester ID. This crate writes those tables:
//!
//! - [`entries`]: the root, context and second-level paging entries (§9);
//! - [`pagetable`]: one domain's second-level table, 4 KiB identity mappings;
//! - [`mod@unit`]: one unit's register protocol (§10, §11.4): enabling translation,
//!   invalidating its caches, reading the faults it recorded;
//! - [`queue`]: queued invalidation, which interrupt remapping needs;
//! - [`intremap`]: interrupt remapping's table entry and the message formats that name one;
//! - [`remapper`]: all units, pass-through for unclaimed functions, a domain per claimed
//!   one holding exactly its DMA memory (see its design note for the rules);
//! - [`scope`]: the DMAR table's device scopes followed through bridges to the functions
//!   and buses each unit covers;
//! - [`amd`]: AMD-Vi DMA remapping, the same rules on AMD's device table, I/O page tables,
//!   command buffer and event log.
//!
//! Everything runs on the host against a model unit and a model memory (`tests/`); the
//! kernel supplies [`memory::TableMemory`] (its frames, `clflush`) and [`unit::Registers`]
//! (the unit's register page, mapped uncached) and calls [`remapper::Remapper`] from the
//! claim and DMA paths.
#![no_std]

extern crate alloc;

pub mod amd;
pub mod entries;
pub mod intremap;
pub mod memory;
pub mod pagetable;
pub mod queue;
pub mod regs;
pub mod remapper;
pub mod scope;
pub mod unit;

pub use intremap::{SourceCheck, Target};
pub use memory::{PAGE, TableMemory};
pub use remapper::{RemapError, Remapper, Scope, ScopeEntry, Source, Summary, UnitSetup};
pub use unit::{Fault, Registers, Unit, UnitError};
