//! Legacy INTx (PCI Local Bus 3.0 §2.2.6 and §6.2.2): the Interrupt Pin register (0x3D,
//! 1 = INTA#) and the Command register's Interrupt Disable bit (bit 10), which the kernel
//! sets whenever no handler is listening and while MSI or MSI-X is in use.

/// Command register offset.
pub const COMMAND: u16 = 0x04;
/// Command: Interrupt Disable.
pub const INTERRUPT_DISABLE: u16 = 1 << 10;
/// Command: Bus Master Enable. MSI and MSI-X messages are memory writes issued by the
/// function, so they need it (PCI Local Bus 3.0 §6.8).
pub const BUS_MASTER: u16 = 1 << 2;
