//! Legacy INTx (PCI Local Bus 3.0 §2.2.6 and §6.2.2): the Interrupt Pin register (0x3D,
//! 1 = INTA#) and the Command register's Interrupt Disable bit (bit 10), which the stack
//! sets whenever no handler is listening and while MSI or MSI-X is in use.

pub use crate::function::config_guard::INTERRUPT_DISABLE;
