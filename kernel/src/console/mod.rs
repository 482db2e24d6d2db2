//! The console where `./run.sh` ends: a line editor over the kernel's input devices and a
//! handful of commands to look at the machine (`commands`).
//!
//! Input: COM1's receive interrupt (ISA IRQ 4) and the PS/2 keyboard's (ISA IRQ 1), both
//! through the IOAPIC, feed one queue (`input`); both work at once. Their vectors are taken by
//! [`start_input`] before any driver binds, so drivers that take every free vector (forty
//! NVMe controllers do) cannot leave the console deaf. The console sleeps with `sti; hlt`
//! while the queue is empty, so an idle console costs no CPU.
//!
//! Output goes to COM1 and the screen (`serial_print!` draws on both).
//!
//! Line editing is the `shell` crate's [`shell::Editor`] (host-tested): cursor keys, Home/End,
//! Delete, Backspace, Ctrl-U, Ctrl-C and a history of [`HISTORY`] lines on Up/Down, with
//! whole escape sequences parsed so that none leaks into the line. This file feeds it bytes
//! and prints what it answers. An escape sequence still incomplete after [`ESCAPE_WAIT_US`]
//! without input (a lone Esc key, or a sequence cut short) is abandoned, so the letters typed
//! after it are not taken as its end.
//!
//! Input is never lost silently: when bytes were dropped (input queue full, or the UART
//! overran), the next prompt is preceded by one line saying how many, and `mem` keeps the
//! totals.

use alloc::string::String;
use alloc::vec::Vec;

use crate::{serial, serial_print, serial_println};

mod commands;

/// Which inputs [`start_input`] brought up.
static INPUTS: spin::Once<Inputs> = spin::Once::new();

/// The console's inputs.
#[derive(Clone, Copy, Debug)]
struct Inputs {
    serial: bool,
    keyboard: bool,
}

/// Starts serial input and sets the keyboard's interrupt vector aside. Called before drivers
/// bind: they could otherwise take every vector, and bytes typed while they bind go to the
/// input queue instead of overflowing the UART's 16-byte FIFO. The keyboard itself starts in
/// [`start_input`], once the drivers are bound: the PS/2 controller's handshake is nothing a
/// driver waits for, and the keyboard keeps what is typed meanwhile in its own buffer.
pub fn reserve_input() {
    serial_input();
    if let Err(e) = crate::keyboard::reserve_vector() {
        log::warn!("console: no vector for keyboard input: {e}");
    }
}

/// Enables COM1's receive interrupt, once; whether it works.
fn serial_input() -> bool {
    static SERIAL: spin::Once<bool> = spin::Once::new();
    *SERIAL.call_once(|| match serial::enable_receive_interrupt() {
        Ok(_) => true,
        Err(e) => {
            log::warn!("console: no serial input: {e}");
            false
        }
    })
}

/// Brings up the console's inputs (COM1 receive if [`reserve_input`] did not, the PS/2
/// keyboard on the vector it set aside). Each failure is logged, the console runs with what
/// works.
pub fn start_input() {
    INPUTS.call_once(|| {
        let serial = serial_input();
        let keyboard = match crate::keyboard::init() {
            Ok(what) => {
                log::info!("keyboard: i8042 ready, {what}");
                match crate::keyboard::enable_interrupt() {
                    Ok(_) => true,
                    Err(e) => {
                        log::warn!("console: no keyboard input: {e}");
                        false
                    }
                }
            }
            Err(e) => {
                log::warn!("console: no keyboard input: {e}");
                false
            }
        };
        Inputs { serial, keyboard }
    });
}

/// The prompt.
pub const PROMPT: &str = "kernel> ";
/// The longest line, in bytes.
const MAX_LINE: usize = 256;
/// Lines the history keeps.
pub const HISTORY: usize = 32;
/// How long an incomplete escape sequence waits for its next byte. A terminal sends a whole
/// sequence at once, a person pressing Esc and then typing is slower; the margin is for a
/// host that delays the emulated serial line (QEMU on a loaded machine).
pub const ESCAPE_WAIT_US: u64 = 250_000;

/// Waits for the next received byte, sleeping between interrupts.
fn next_byte() -> u8 {
    loop {
        crate::hotplug::idle();
        // Drivers whose interrupt handlers panicked are dropped here, outside interrupt context.
        crate::bus::reap();
        x86_64::instructions::interrupts::disable();
        if let Some(b) = crate::input::read_byte() {
            x86_64::instructions::interrupts::enable();
            return b;
        }
        // `sti; hlt` back to back: an interrupt cannot slip in between check and sleep.
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// The next received byte if one comes within `us` microseconds (polling: used only for the
/// short wait inside an escape sequence).
fn next_byte_within(us: u64) -> Option<u8> {
    // Counted steps of `busy_wait_us`, which falls back to the PIT where the TSC stands
    // still: there `micros_since_boot` never moves and a deadline on it is never reached.
    const STEP_US: u64 = 100;
    for _ in 0..us.div_ceil(STEP_US) {
        if let Some(b) = crate::input::read_byte() {
            return Some(b);
        }
        crate::time::busy_wait_us(STEP_US);
    }
    crate::input::read_byte()
}

/// Reads one line through `editor`; `None` when it was cancelled (Ctrl-C).
fn read_line(editor: &mut shell::Editor) -> Option<String> {
    let mut out = Vec::new();
    loop {
        let byte = if editor.escape_pending() {
            match next_byte_within(ESCAPE_WAIT_US) {
                Some(b) => b,
                None => {
                    editor.abandon_escape();
                    continue;
                }
            }
        } else {
            next_byte()
        };
        out.clear();
        let fed = editor.feed(byte, &mut out);
        if !out.is_empty() {
            // The editor prints ASCII only.
            serial_print!("{}", core::str::from_utf8(&out).unwrap_or(""));
        }
        match fed {
            shell::Feed::Pending => {}
            shell::Feed::Line(line) => return Some(line),
            shell::Feed::Cancelled => return None,
            shell::Feed::Overlong => {
                serial_println!(
                    "line longer than {} bytes: not run (what is left of it is not what was sent)",
                    editor.max_line()
                );
                return None;
            }
        }
    }
}

/// Says, once, that input was dropped since the last prompt.
fn report_dropped() {
    if let Some(dropped) = crate::input::take_unreported() {
        serial_println!(
            "console: {} input bytes dropped ({dropped})",
            dropped.total()
        );
    }
}

/// What the machine offers, before the first prompt: the drivers bound at boot (and the
/// ones that failed), the disks, and commands to start with.
fn banner() {
    let bound = crate::bus::bound();
    if bound.is_empty() {
        serial_println!("No driver is bound (`lspci` lists the functions; `help` the commands).");
    } else {
        let list: alloc::vec::Vec<String> = bound
            .iter()
            .map(|(driver, address)| alloc::format!("{driver} at {address}"))
            .collect();
        serial_println!("Bound: {}.", list.join(", "));
    }
    for failed in crate::bus::failed() {
        serial_println!(
            "FAILED: {} at {} ({} panicked; `drivers` says where)",
            failed.driver,
            failed.address,
            failed.during
        );
    }
    let disks: alloc::vec::Vec<String> = drivers::block::DISKS
        .list()
        .into_iter()
        .map(|d| d.name)
        .collect();
    if let Some(first) = disks.first() {
        serial_println!(
            "Disks: {}. Try `drivers`, `lspci -v`, `blk`, `read {first} 0`, `irqs`, `mem`.",
            disks.join(", ")
        );
    } else if !bound.is_empty() {
        serial_println!("Try `drivers`, `lspci -v`, `irqs`, `mem`.");
    }
}

/// Runs the console forever.
pub fn run() -> ! {
    start_input();
    let mut inputs = INPUTS.get().copied().unwrap_or(Inputs {
        serial: false,
        keyboard: false,
    });
    // A USB keyboard (the xHCI driver's) types into the same queue: on a board without COM1
    // and without a PS/2 controller it is the only way in.
    inputs.keyboard |= drivers::input::keyboards() > 0;
    if !inputs.serial && !inputs.keyboard {
        serial_println!(
            "console: no input (no COM1, no PS/2 or USB keyboard); halting. (In QEMU: Ctrl-A then X quits.)"
        );
        crate::qemu::halt_forever();
    }
    banner();
    serial_println!(
        "Type `help` for commands{}. (In QEMU: Ctrl-A then X quits.)",
        match (inputs.serial, inputs.keyboard) {
            (true, true) => " on COM1 or the keyboard",
            (true, false) => " on COM1",
            _ => " on the keyboard",
        }
    );
    let mut editor = shell::Editor::new(MAX_LINE, HISTORY);
    loop {
        report_dropped();
        serial_print!("{PROMPT}");
        let Some(line) = read_line(&mut editor) else {
            continue;
        };
        let mut words = line.split_whitespace();
        let Some(command) = words.next() else {
            continue;
        };
        let args: Vec<&str> = words.collect();
        commands::execute(command, &args);
    }
}
