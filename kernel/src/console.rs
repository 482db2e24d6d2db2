//! The console where `./run.sh` ends: a line editor over the kernel's input devices and a
//! handful of commands to look at the machine.
//!
//! Input: COM1's receive interrupt (ISA IRQ 4) and the PS/2 keyboard's (ISA IRQ 1), both
//! through the IOAPIC, feed one queue (`input`); both work at once. Their vectors are taken by
//! [`start_input`] before any driver binds, so drivers that take every free vector (forty
//! NVMe controllers do) cannot leave the console deaf. The console sleeps with `sti; hlt`
//! while the queue is empty, so an idle console costs no CPU.
//! Output goes to COM1 and the screen (`serial_print!` draws on both).
//! Line editing: printable characters, Backspace/Delete, Ctrl-U (erase line), Ctrl-C (cancel
//! line); escape sequences (arrow keys) are ignored.

use alloc::string::String;

use crate::{serial, serial_print, serial_println};

/// Which inputs [`start_input`] brought up.
static INPUTS: spin::Once<Inputs> = spin::Once::new();

/// The console's inputs.
#[derive(Clone, Copy, Debug)]
struct Inputs {
    serial: bool,
    keyboard: bool,
}

/// Brings up the console's inputs (COM1 receive, PS/2 keyboard) and takes their interrupt
/// vectors. Called before drivers bind; each failure is logged, the console runs with what
/// works.
pub fn start_input() {
    INPUTS.call_once(|| {
        let serial = match serial::enable_receive_interrupt() {
            Ok(_) => true,
            Err(e) => {
                log::warn!("console: no serial input: {e}");
                false
            }
        };
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
const MAX_LINE: usize = 256;

const COMMANDS: &[(&str, &str)] = &[
    ("help", "this list"),
    (
        "lspci",
        "PCI functions (-t: tree, -v: BARs, capabilities, MSI/MSI-X)",
    ),
    (
        "irqs",
        "installed interrupt handlers: vector, CPU, count, owner",
    ),
    ("mem", "frames, heap and interrupt vectors in use"),
    ("drivers", "bound drivers, and failed bindings with why"),
    ("bind", "bind <address>: offer a function to the drivers"),
    (
        "unbind",
        "unbind <address>: drop the driver's state, releasing everything",
    ),
    ("selftest", "selftest <address>: exercise a bound device"),
    (
        "nvme",
        "nvme read <lba>: read one block through the bound NVMe driver",
    ),
    (
        "inject",
        "inject panic <address> <probe|handler|selftest|command>: a one-shot panic in that driver",
    ),
    ("reboot", "reset the machine"),
    ("poweroff", "power off (ACPI S5)"),
];

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

/// Whether the last line ended with CR (so a following LF is the same line end).
static AFTER_CR: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Reads one line with editing.
fn read_line() -> String {
    use core::sync::atomic::Ordering::Relaxed;
    let mut line = String::new();
    loop {
        let b = next_byte();
        let after_cr = AFTER_CR.swap(b == b'\r', Relaxed);
        match b {
            b'\n' if after_cr => {}
            b'\r' | b'\n' => {
                serial_print!("\n");
                return line;
            }
            0x7f | 0x08 => {
                if line.pop().is_some() {
                    serial_print!("\x08 \x08");
                }
            }
            0x15 => {
                for _ in 0..line.len() {
                    serial_print!("\x08 \x08");
                }
                line.clear();
            }
            0x03 => {
                serial_print!("^C\n");
                line.clear();
                return line;
            }
            0x1b => {
                // ESC [ <final byte>: arrow keys and friends; ignored.
                if next_byte() == b'[' {
                    while !(0x40..=0x7e).contains(&next_byte()) {}
                }
            }
            0x20..=0x7e if line.len() < MAX_LINE => {
                line.push(b as char);
                serial_print!("{}", b as char);
            }
            _ => {}
        }
    }
}

/// Runs the console forever.
pub fn run() -> ! {
    start_input();
    let inputs = INPUTS.get().copied().unwrap_or(Inputs {
        serial: false,
        keyboard: false,
    });
    if !inputs.serial && !inputs.keyboard {
        serial_println!(
            "console: no input (no COM1, no keyboard); halting. (In QEMU: Ctrl-A then X quits.)"
        );
        crate::qemu::halt_forever();
    }
    serial_println!(
        "Type `help` for commands{}. (In QEMU: Ctrl-A then X quits.)",
        match (inputs.serial, inputs.keyboard) {
            (true, true) => " on COM1 or the keyboard",
            (true, false) => " on COM1",
            _ => " on the keyboard",
        }
    );
    loop {
        serial_print!("{PROMPT}");
        let line = read_line();
        let mut words = line.split_whitespace();
        let Some(command) = words.next() else {
            continue;
        };
        let args: alloc::vec::Vec<&str> = words.collect();
        execute(command, &args);
    }
}

fn execute(command: &str, args: &[&str]) {
    match command {
        "help" => {
            for (name, what) in COMMANDS {
                serial_println!("{name:<10} {what}");
            }
        }
        "lspci" => lspci(args),
        "irqs" => irqs(),
        "mem" => mem(),
        "drivers" => {
            let list = crate::bus::list();
            if list.is_empty() {
                serial_println!("no drivers are bound");
            }
            for line in list {
                serial_println!("{line}");
            }
        }
        "bind" | "unbind" | "selftest" => {
            let Some(address) = args.first().and_then(|a| crate::bus::parse_address(a)) else {
                serial_println!("{command}: give an address like 0000:00:03.0");
                return;
            };
            let result = match command {
                "bind" => crate::bus::bind(address),
                "unbind" => {
                    crate::bus::unbind(address).map(|()| alloc::format!("{address} unbound"))
                }
                _ => crate::bus::self_test(address),
            };
            match result {
                Ok(text) => serial_println!("{text}"),
                Err(e) => serial_println!("{command}: {e}"),
            }
        }
        "inject" => inject(args),
        "reboot" => crate::power::reboot(),
        "poweroff" => match crate::power::poweroff() {
            Ok(never) => match never {},
            Err(e) => serial_println!("poweroff failed: {e}"),
        },
        other => match crate::bus::command(other, args) {
            Some(Ok(text)) => serial_println!("{text}"),
            Some(Err(e)) => serial_println!("{other}: {e}"),
            None => serial_println!("unknown command: {other} (try `help`)"),
        },
    }
}

fn lspci(args: &[&str]) {
    let Some(scan) = crate::pcibus::scan() else {
        serial_println!("PCI was not enumerated");
        return;
    };
    let out = &mut serial::SerialWriter;
    match args.first().copied() {
        None => {
            let _ = pci::lspci::write_listing(out, &scan.topology);
        }
        Some("-t") => {
            let _ = pci::lspci::write_tree(out, &scan.topology);
        }
        Some("-v") => {
            for f in &scan.topology.functions {
                let _ = pci::lspci::write_listing_line(out, f);
                for (slot, bar) in f.bars() {
                    serial_println!(
                        "\tBAR{slot}: {:?}{} at {:#x}, {:#x} bytes",
                        bar.kind,
                        if bar.prefetchable {
                            " prefetchable"
                        } else {
                            ""
                        },
                        bar.address,
                        bar.size
                    );
                }
                if let Some(pin) = f.interrupt_pin_letter() {
                    serial_println!("\tINT{pin}#, Interrupt Line {}", f.interrupt_line);
                }
                if !f.capabilities.is_empty() {
                    let ids: alloc::vec::Vec<String> = f
                        .capabilities
                        .iter()
                        .map(|c| alloc::format!("{:02x}@{:#x}", c.id, c.offset))
                        .collect();
                    serial_println!("\tcapabilities: {}", ids.join(" "));
                }
                if !f.extended_capabilities.is_empty() {
                    let ids: alloc::vec::Vec<String> = f
                        .extended_capabilities
                        .iter()
                        .map(|c| alloc::format!("{:04x}@{:#x}", c.id, c.offset))
                        .collect();
                    serial_println!("\textended capabilities: {}", ids.join(" "));
                }
                if let Some(m) = f.msi {
                    serial_println!(
                        "\tMSI: {} vector(s){}{}",
                        m.vectors,
                        if m.is_64bit { ", 64-bit" } else { ", 32-bit" },
                        if m.per_vector_masking {
                            ", per-vector masking"
                        } else {
                            ""
                        }
                    );
                }
                if let Some(m) = f.msix {
                    serial_println!(
                        "\tMSI-X: {} entries, table BAR{}+{:#x}, PBA BAR{}+{:#x}",
                        m.table_size,
                        m.table_bir,
                        m.table_offset,
                        m.pba_bir,
                        m.pba_offset
                    );
                }
            }
        }
        Some(other) => serial_println!("lspci: unknown option {other} (use -t or -v)"),
    }
}

/// `inject panic <address> <point>`: arms a one-shot panic at that point of the driver
/// bound (or next bound) to `address` (docs/faults.md).
fn inject(args: &[&str]) {
    use drivers::fault::{self, Point};
    let usage = "inject panic <address> <probe|handler|selftest|command>";
    let ["panic", address, point] = args else {
        serial_println!("usage: {usage}");
        return;
    };
    let (Some(address), Some(point)) = (crate::bus::parse_address(address), Point::parse(point))
    else {
        serial_println!("usage: {usage}");
        return;
    };
    match fault::arm(address, point) {
        Ok(()) => serial_println!("armed: a panic at the next {point} of the driver of {address}"),
        Err(e) => serial_println!("inject: {e}"),
    }
}

fn irqs() {
    use crate::interrupts::dispatch;
    serial_println!("vector  cpu  kind    count       owner");
    for (vector, owner, count) in dispatch::installed() {
        serial_println!(
            "{vector:#04x}    0    {:<6}  {count:<10}  {owner}",
            dispatch::kind(vector)
        );
    }
    for (gsi, vector, owner) in crate::pciirq::intx_users() {
        serial_println!("  INTx GSI {gsi} (vector {vector:#04x}): {owner}");
    }
    serial_println!("spurious: {}", dispatch::spurious_total());
}

fn mem() {
    let (free, managed) = crate::memory::frames::with(|f| (f.free_bytes(), f.managed_bytes()));
    let (used, heap_free) = crate::memory::heap::usage();
    serial_println!("frames: {} KiB free of {} KiB", free / 1024, managed / 1024);
    serial_println!(
        "heap: {} KiB used, {} KiB free",
        used / 1024,
        heap_free / 1024
    );
    serial_println!("vectors: {} free", crate::interrupts::vectors::total_free());
    serial_println!(
        "input: {} bytes dropped (queue full)",
        crate::input::dropped()
    );
}
