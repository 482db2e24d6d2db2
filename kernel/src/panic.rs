//! The panic handler: location and message on serial, then failure (QEMU exits with status
//! 35 through `isa-debug-exit`; a real board halts).

use core::panic::PanicInfo;

use crate::qemu;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    x86_64::instructions::interrupts::disable();
    // No allocation here: the panic may come from the allocator. Inside a recovery point the
    // contained code is abandoned, not the machine (and the line says so: the test runner
    // fails any run with a `PANIC at` line).
    let contained = crate::cpu::recover::active();
    let prefix = if contained {
        "CONTAINED panic at"
    } else {
        "PANIC at"
    };
    let location = info.location();
    match location {
        Some(l) => crate::serial::write_fmt_emergency(format_args!(
            "{prefix} {}:{}:{}: {}\n",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        )),
        None => crate::serial::write_fmt_emergency(format_args!(
            "{prefix} <unknown>: {}\n",
            info.message()
        )),
    }
    crate::cpu::recover::on_panic(location.map_or(("<unknown>", 0), |l| (l.file(), l.line())));
    let us = crate::time::micros_since_boot();
    crate::serial::write_fmt_emergency(format_args!(
        "  state: {}.{:06} s after boot, interrupts off, halting\n",
        us / 1_000_000,
        us % 1_000_000
    ));
    qemu::exit(qemu::ExitCode::Failure)
}
