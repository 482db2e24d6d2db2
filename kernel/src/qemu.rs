//! Leaving QEMU with a status: the `isa-debug-exit` device at port 0xF4 (QEMU
//! `hw/misc/debugexit.c`) exits with `(value << 1) | 1`. On real hardware nothing listens
//! there, so after the write the CPU halts for good.

use x86_64::instructions::port::Port;

/// I/O port of `-device isa-debug-exit,iobase=0xf4,iosize=0x04`.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;

/// How the kernel wants QEMU to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// QEMU exits with status 33.
    Success = 0x10,
    /// QEMU exits with status 35.
    Failure = 0x11,
}

/// Exits QEMU (or halts on hardware).
pub fn exit(code: ExitCode) -> ! {
    let mut port: Port<u32> = Port::new(DEBUG_EXIT_PORT);
    // SAFETY: writing to the debug-exit port has no effect other than ending the emulator;
    // on real boards 0xF4 is unassigned.
    unsafe { port.write(code as u32) };
    halt_forever()
}

/// Disables interrupts and halts, forever.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
