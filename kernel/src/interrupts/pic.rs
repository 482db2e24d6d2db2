//! The legacy 8259A PICs: remapped away from the exception vectors and fully masked.
//!
//! Firmware leaves the master PIC on vectors 0x08-0x0F, where a stray IRQ would look like a
//! double fault. The initialisation sequence (8259A data sheet: ICW1-ICW4) moves master and
//! slave to 0x20-0x2F; then every line is masked, since the IOAPIC delivers ISA interrupts.
//! A PIC can still raise a spurious IRQ 7 or 15 on those vectors; the dispatcher counts
//! those as spurious.

use x86_64::instructions::port::Port;

/// Master PIC command and data ports.
const MASTER: (u16, u16) = (0x20, 0x21);
/// Slave PIC command and data ports.
const SLAVE: (u16, u16) = (0xA0, 0xA1);
/// First vector of the remapped master PIC.
pub const MASTER_BASE: u8 = 0x20;
/// First vector of the remapped slave PIC.
pub const SLAVE_BASE: u8 = 0x28;

fn outb(port: u16, value: u8) {
    // SAFETY: the ports are the two 8259A PICs of the PC platform; remapping and masking them
    // affects only which vectors their (now masked) lines would raise.
    unsafe { Port::<u8>::new(port).write(value) };
    // A write to an unused port gives the old PICs time to settle (the classic delay).
    // SAFETY: port 0x80 is the POST diagnostic port; writes have no effect.
    unsafe { Port::<u8>::new(0x80).write(0) };
}

/// Remaps both PICs to 0x20-0x2F and masks all sixteen lines.
pub fn remap_and_mask() {
    outb(MASTER.0, 0x11); // ICW1: initialise, ICW4 follows, cascade mode
    outb(SLAVE.0, 0x11);
    outb(MASTER.1, MASTER_BASE); // ICW2: vector base
    outb(SLAVE.1, SLAVE_BASE);
    outb(MASTER.1, 0x04); // ICW3: slave on IRQ 2
    outb(SLAVE.1, 0x02); // ICW3: cascade identity 2
    outb(MASTER.1, 0x01); // ICW4: 8086 mode
    outb(SLAVE.1, 0x01);
    outb(MASTER.1, 0xFF); // OCW1: mask everything
    outb(SLAVE.1, 0xFF);
}
