//! Power: reboot and power off.
//!
//! - Reboot: the FADT's reset register where it has one (ACPI 6.5 §4.8.3.6), else the PCI
//!   reset control port 0xCF9 (full reset), else the keyboard controller's reset line
//!   (command 0xFE to port 0x64); as a last resort a triple fault (an empty IDT).
//! - Power off: ACPI S5: `SLP_TYPa` from the `\_S5` package, written with `SLP_EN` (bit 13)
//!   to the PM1a control block (ACPI 6.5 §7.4.2, §4.8.3.2.1).

use x86_64::instructions::port::Port;

fn outb(port: u16, value: u8) {
    // SAFETY: only used with the reset and sleep registers named below; writing them resets
    // or powers off the machine, which is what the caller asked for.
    unsafe { Port::<u8>::new(port).write(value) }
}

/// Resets the machine. Returns only if every method failed (it then halts). What was
/// printed before reaches the serial line first.
pub fn reboot() -> ! {
    crate::serial::flush();
    x86_64::instructions::interrupts::disable();
    if let Some((port, value)) = crate::platform::get().and_then(|p| p.reset) {
        outb(port, value);
        crate::time::busy_wait_us(50_000);
    }
    outb(0xCF9, 0x02);
    outb(0xCF9, 0x06);
    crate::time::busy_wait_us(50_000);
    outb(0x64, 0xFE);
    crate::time::busy_wait_us(50_000);
    // Triple fault: load an empty IDT and raise an exception.
    let empty = x86_64::structures::DescriptorTablePointer {
        limit: 0,
        base: x86_64::VirtAddr::new(0),
    };
    // SAFETY: deliberately unusable IDT; the next exception resets the CPU (triple fault).
    unsafe { x86_64::instructions::tables::lidt(&empty) };
    x86_64::instructions::interrupts::int3();
    crate::qemu::halt_forever()
}

/// `SLP_TYPa` of state `\_S5` (read from AML at boot).
fn s5_sleep_type() -> Option<u16> {
    crate::platform::aml::report()?
        .s5
        .map(|(a, _)| u16::from(a & 0x7))
}

/// Powers the machine off (ACPI S5). Returns an error text when it cannot.
pub fn poweroff() -> Result<core::convert::Infallible, &'static str> {
    let port = crate::platform::get()
        .and_then(|p| p.pm1a_control)
        .ok_or("no PM1a control block in the FADT")?;
    let slp_typ = s5_sleep_type().ok_or("no \\_S5 object in the AML namespace")?;
    x86_64::instructions::interrupts::disable();
    let mut control: Port<u16> = Port::new(port);
    // SAFETY: the FADT names this port as PM1a_CNT; SLP_EN with SLP_TYP(S5) powers off.
    unsafe { control.write(slp_typ << 10 | 1 << 13) };
    crate::time::busy_wait_us(100_000);
    Err("the machine did not power off")
}
