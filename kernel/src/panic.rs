//! The panic handler: location and message on serial, then failure (QEMU exits with status
//! 35 through `isa-debug-exit`; a real board halts).
//!
//! Except inside `cpu::unwind::catch` (a driver's probe, handler, self test or command: see
//! docs/faults.md): there the panic is reported (`driver fault: panic at <file>:<line>:<col>:
//! <message>`) and unwound to the `catch`, and the kernel goes on.

use alloc::format;
use alloc::string::String;
use core::panic::PanicInfo;

use crate::cpu::unwind::Caught;

use crate::qemu;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    // Interrupts stay off during an unwind too (`catch` restores the flag afterwards).
    x86_64::instructions::interrupts::disable();
    // A recovery point (ACPICA) is never unwound: C frames have no landing pads.
    if !crate::cpu::recover::active() && crate::cpu::unwind::claim() {
        let caught = match info.location() {
            Some(l) => Caught {
                message: format!("{}", info.message()),
                location: format!("{}:{}:{}", l.file(), l.line(), l.column()),
            },
            None => Caught {
                message: format!("{}", info.message()),
                location: String::from("<unknown>"),
            },
        };
        crate::serial::write_fmt_emergency(format_args!("driver fault: {caught}\n"));
        let code = crate::cpu::unwind::begin(caught);
        // Only returns when no frame caught it: then it is an ordinary panic after all.
        crate::serial::write_fmt_emergency(format_args!(
            "  the unwind found no catching frame (reason {code})\n"
        ));
    }
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
