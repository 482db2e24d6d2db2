//! The panic handler: location and message on serial, then failure (QEMU exits with status
//! 35 through `isa-debug-exit`; a real board halts).

use core::panic::PanicInfo;

use crate::qemu;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    x86_64::instructions::interrupts::disable();
    let us = crate::time::micros_since_boot();
    match info.location() {
        Some(l) => crate::serial::write_fmt_emergency(format_args!(
            "PANIC at {}:{}:{}: {}\n",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        )),
        None => crate::serial::write_fmt_emergency(format_args!(
            "PANIC at <unknown>: {}\n",
            info.message()
        )),
    }
    crate::serial::write_fmt_emergency(format_args!(
        "  state: {}.{:06} s after boot, interrupts off, halting\n",
        us / 1_000_000,
        us % 1_000_000
    ));
    qemu::exit(qemu::ExitCode::Failure)
}
