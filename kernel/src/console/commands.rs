//! The console's commands: one table ([`COMMANDS`]) gives each command's name, arguments and
//! one-line description (what `help` prints and what a usage error repeats), and how it runs.
//!
//! A command either runs here ([`Run::Local`]) or is a driver's ([`Run::Driver`]): those go
//! through `crate::bus::command` to the bound driver of that name (`nvme read <lba>`), which
//! is where a driver-specific command is added — one table row naming the driver.
//!
//! A command given arguments it does not take, or missing ones, answers `usage: <name>
//! <arguments>` and does nothing else.

use alloc::string::String;
use alloc::vec::Vec;

use crate::{serial, serial_println};

/// How a command runs.
enum Run {
    /// Runs in the kernel; `Err(Usage)` for bad arguments.
    Local(fn(&[&str]) -> Result<(), Usage>),
    /// Handled by the bound driver of this name (`bus::command`).
    Driver,
}

/// Bad arguments: the caller prints the usage line.
struct Usage;

/// One command.
struct Command {
    name: &'static str,
    /// Arguments, as `help` and usage errors show them (empty: none).
    args: &'static str,
    what: &'static str,
    run: Run,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "help",
        args: "",
        what: "this list",
        run: Run::Local(help),
    },
    Command {
        name: "lspci",
        args: "[-t] [-v|-vv] [-n|-nn] [-D]",
        what: "PCI functions as pciutils shows them (-v: read now)",
        run: Run::Local(lspci),
    },
    Command {
        name: "irqs",
        args: "",
        what: "installed interrupt handlers: vector, CPU, kind, count, owner",
        run: Run::Local(irqs),
    },
    Command {
        name: "mem",
        args: "",
        what: "frames, heap, vectors, MMIO window, dropped input, claimed functions",
        run: Run::Local(mem),
    },
    Command {
        name: "iommu",
        args: "",
        what: "DMA remapping: units, isolated functions, mapped pages, refused requests",
        run: Run::Local(iommu),
    },
    Command {
        name: "drivers",
        args: "",
        what: "bound drivers, and failed bindings with why",
        run: Run::Local(drivers),
    },
    Command {
        name: "bind",
        args: "<address>",
        what: "offer a function to the drivers",
        run: Run::Local(bind),
    },
    Command {
        name: "unbind",
        args: "<address>",
        what: "drop the driver's state, releasing everything",
        run: Run::Local(unbind),
    },
    Command {
        name: "selftest",
        args: "<address>",
        what: "exercise a bound device",
        run: Run::Local(selftest),
    },
    // Driver commands: the bound driver of this name answers (`bus::command`).
    Command {
        name: "nvme",
        args: "read <lba> [nsid]",
        what: "read one block on every bound NVMe controller",
        run: Run::Driver,
    },
    Command {
        name: "blk",
        args: "",
        what: "every disk: name, driver, address, block size, blocks, size",
        run: Run::Driver,
    },
    Command {
        name: "read",
        args: "<disk> <lba> [count]",
        what: "hexdump and FNV-1a of blocks of a disk (`blk` names them)",
        run: Run::Driver,
    },
    Command {
        name: "inject",
        args: "panic <address> <probe|handler|selftest|command> | leak <address>",
        what: "a one-shot panic in that driver, or a leak of its state at its next unbinding",
        run: Run::Local(inject),
    },
    Command {
        name: "reboot",
        args: "",
        what: "reset the machine",
        run: Run::Local(reboot),
    },
    Command {
        name: "poweroff",
        args: "",
        what: "power off (ACPI S5)",
        run: Run::Local(poweroff),
    },
];

fn usage(c: &Command) {
    if c.args.is_empty() {
        serial_println!("usage: {}", c.name);
    } else {
        serial_println!("usage: {} {}", c.name, c.args);
    }
}

/// Runs `command` with `args`.
pub fn execute(command: &str, args: &[&str]) {
    let Some(c) = COMMANDS.iter().find(|c| c.name == command) else {
        // A driver's command without a row of its own still reaches the driver.
        match crate::bus::command(command, args) {
            Some(Ok(text)) => serial_println!("{text}"),
            Some(Err(e)) => serial_println!("{command}: {e}"),
            None => serial_println!("unknown command: {command} (try `help`)"),
        }
        return;
    };
    match c.run {
        Run::Local(run) => {
            if run(args).is_err() {
                usage(c);
            }
        }
        Run::Driver => match crate::bus::command(c.name, args) {
            Some(Ok(text)) => serial_println!("{text}"),
            Some(Err(e)) => serial_println!("{}: {e}", c.name),
            None if !crate::bus::list()
                .iter()
                .any(|l| l.split_whitespace().nth(1) == Some(c.name)) =>
            {
                serial_println!("{}: no {} device is bound", c.name, c.name);
            }
            None => usage(c),
        },
    }
}

/// `Err(Usage)` unless `args` is empty.
fn no_args(args: &[&str]) -> Result<(), Usage> {
    if args.is_empty() { Ok(()) } else { Err(Usage) }
}

fn help(args: &[&str]) -> Result<(), Usage> {
    no_args(args)?;
    for c in COMMANDS {
        if c.args.is_empty() {
            serial_println!("{:<10} {}", c.name, c.what);
        } else {
            serial_println!("{:<10} {}: {}", c.name, c.args, c.what);
        }
    }
    serial_println!(
        "Keys: Left/Right, Home/End, Delete, Backspace, Up/Down (history), Ctrl-U, Ctrl-C"
    );
    Ok(())
}

fn lspci(args: &[&str]) -> Result<(), Usage> {
    let options = match pci::lspci::Options::parse(args) {
        Ok(o) => o,
        Err(word) => {
            serial_println!("lspci: unknown option {word}");
            return Err(Usage);
        }
    };
    let Some(scan) = crate::pcibus::scan() else {
        serial_println!("PCI was not enumerated");
        return Ok(());
    };
    let space = crate::pcibus::config_space(crate::pcibus::config(), &scan.roots);
    let installed = crate::interrupts::dispatch::installed_slots();
    let bound = bound_drivers();
    let driver = |address: pci::Address| -> Option<pci::lspci::BoundDriver> {
        let name = bound.iter().find(|(a, _)| *a == address)?.1;
        let f = scan.topology.function(address)?;
        let mut vectors = held::vectors(&space, f);
        vectors.retain(|slot| installed.contains(slot));
        Some((name, vectors))
    };
    let _ = pci::lspci::write_command(
        &mut serial::SerialWriter,
        &scan.topology,
        &options,
        &|address, offset| space.read32(address, offset).ok(),
        &driver,
    );
    Ok(())
}

fn irqs(args: &[&str]) -> Result<(), Usage> {
    use crate::interrupts::dispatch;
    no_args(args)?;
    serial_println!("vector  cpu  kind    count       owner");
    // Two walks of the table (by CPU, then vector): (CPU, vector) and (vector, owner, count).
    // Only the console thread installs or removes handlers, so they agree; if they ever do
    // not, the listing says so rather than pairing a handler with the wrong CPU.
    let slots = dispatch::installed_slots();
    let handlers = dispatch::installed();
    let agree =
        slots.len() == handlers.len() && slots.iter().zip(&handlers).all(|(s, h)| s.1 == h.0);
    if !agree {
        serial_println!("irqs: the handler table changed while it was read; try again");
        return Ok(());
    }
    let here = crate::interrupts::vectors::current_cpu();
    for (&(cpu, _), &(vector, owner, count)) in slots.iter().zip(&handlers) {
        // The table names the kind per CPU; this CPU's is the one that can be asked.
        let kind = if cpu == here {
            dispatch::kind(vector)
        } else {
            "?"
        };
        serial_println!("{vector:#04x}    {cpu:<3}  {kind:<6}  {count:<10}  {owner}");
    }
    for (gsi, vector, owner) in crate::pciirq::intx_users() {
        serial_println!("  INTx GSI {gsi} (vector {vector:#04x}): {owner}");
    }
    serial_println!("spurious: {}", dispatch::spurious_total());
    Ok(())
}

fn iommu(args: &[&str]) -> Result<(), Usage> {
    no_args(args)?;
    let Some(s) = crate::iommu::summary() else {
        serial_println!(
            "iommu: off (no DMAR or IVRS table, or iommu=off): devices reach all memory"
        );
        return Ok(());
    };
    serial_println!(
        "iommu: {} unit(s), translation {}, {} isolated function(s), {} DMA page(s) mapped, {} table page(s)",
        s.units,
        if s.enabled { "on" } else { "off" },
        s.domains,
        s.pages,
        s.table_pages
    );
    if s.interrupts && crate::iommu::kind() == Some("AMD IOMMU") {
        serial_println!(
            "interrupt remapping: on, {} entries present, each in its requester's own table (messages name an entry of the sender's table)",
            s.interrupt_entries
        );
        serial_println!("I/O APIC check at boot: {}", crate::iommu::io_apic_check());
        for line in crate::iommu::interrupts::describe_entries() {
            serial_println!("  {line}");
        }
    } else if s.interrupts {
        serial_println!(
            "interrupt remapping: on, {} entries present (one per vector in use); compatibility-format messages blocked",
            s.interrupt_entries
        );
        serial_println!("I/O APIC check at boot: {}", crate::iommu::io_apic_check());
        for line in crate::iommu::interrupts::describe_entries() {
            serial_println!("  {line}");
        }
    } else {
        serial_println!("interrupt remapping: off (intremap=off, or the units cannot)");
    }
    if crate::iommu::kind() == Some("AMD IOMMU") {
        serial_println!("event log interrupt: not used; the event log is read when asked for");
    } else {
        serial_println!("fault event interrupts: {}", crate::iommu::fault_events());
    }
    let faults = crate::iommu::faults();
    if faults.is_empty() {
        serial_println!("refused requests: none");
    }
    for f in &faults {
        serial_println!("refused: {}", crate::iommu::describe(f));
    }
    Ok(())
}

fn mem(args: &[&str]) -> Result<(), Usage> {
    use crate::memory::paging::{MMIO_BASE, MMIO_SIZE};
    no_args(args)?;
    let (free, managed) = crate::memory::frames::with(|f| (f.free_bytes(), f.managed_bytes()));
    let (used, heap_free) = crate::memory::heap::usage();
    serial_println!("frames: {} KiB free of {} KiB", free / 1024, managed / 1024);
    serial_println!(
        "heap: {} KiB used, {} KiB free",
        used / 1024,
        heap_free / 1024
    );
    serial_println!("vectors: {} free", crate::interrupts::vectors::total_free());
    let window_free = crate::memory::mmio::window_free_bytes();
    serial_println!(
        "mmio window: {:#x}-{:#x}, {} KiB in use, {} MiB free",
        MMIO_BASE,
        MMIO_BASE + MMIO_SIZE - 1,
        MMIO_SIZE.saturating_sub(window_free) / 1024,
        window_free >> 20
    );
    let dropped = crate::input::dropped();
    serial_println!(
        "input: {} bytes dropped (queue full: {}, UART overrun: {})",
        dropped.total(),
        dropped.queue_full,
        dropped.overrun
    );
    let bound = bound_drivers();
    for claimed in crate::pciirq::claimed() {
        let owner = crate::bus::parse_address(&claimed)
            .and_then(|a| bound.iter().find(|(b, _)| *b == a))
            .map_or("(no driver)", |(_, name)| name);
        serial_println!("claimed: {claimed} by {owner}");
    }
    Ok(())
}

/// (address, driver name) of every bound driver, from `bus::list`'s lines
/// (`<address> <driver> <status>`; failed bindings say `FAILED` and hold nothing).
fn bound_drivers() -> Vec<(pci::Address, &'static str)> {
    crate::bus::list()
        .iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let address = crate::bus::parse_address(words.next()?)?;
            let name = words.next()?;
            if words.next() == Some("FAILED") {
                return None;
            }
            let name = drivers::ALL.iter().map(|d| d.name()).find(|n| *n == name)?;
            Some((address, name))
        })
        .collect()
}

fn drivers(args: &[&str]) -> Result<(), Usage> {
    no_args(args)?;
    let list = crate::bus::list();
    if list.is_empty() {
        serial_println!("no drivers are bound");
    }
    for line in list {
        serial_println!("{line}");
    }
    Ok(())
}

/// The one argument of `bind`, `unbind`, `selftest`.
fn address(args: &[&str]) -> Result<pci::Address, Usage> {
    match args {
        [a] => crate::bus::parse_address(a).ok_or(Usage),
        _ => Err(Usage),
    }
}

fn answer(command: &str, result: Result<String, String>) {
    match result {
        Ok(text) => serial_println!("{text}"),
        Err(e) => serial_println!("{command}: {e}"),
    }
}

fn bind(args: &[&str]) -> Result<(), Usage> {
    answer("bind", crate::bus::bind(address(args)?));
    Ok(())
}

fn unbind(args: &[&str]) -> Result<(), Usage> {
    let a = address(args)?;
    answer(
        "unbind",
        crate::bus::unbind(a).map(|()| alloc::format!("{a} unbound")),
    );
    Ok(())
}

fn selftest(args: &[&str]) -> Result<(), Usage> {
    answer("selftest", crate::bus::self_test(address(args)?));
    Ok(())
}

/// `inject panic <address> <point>`: arms a one-shot panic at that point of the driver
/// bound (or next bound) to `address`; `inject leak <address>`: its next unbinding forgets
/// the driver's state instead of dropping it (docs/faults.md).
fn inject(args: &[&str]) -> Result<(), Usage> {
    use drivers::fault::{self, Point};
    match args {
        ["panic", address, point] => {
            let (Some(address), Some(point)) =
                (crate::bus::parse_address(address), Point::parse(point))
            else {
                return Err(Usage);
            };
            match fault::arm(address, point) {
                Ok(()) => {
                    serial_println!("armed: a panic at the next {point} of the driver of {address}")
                }
                Err(e) => serial_println!("inject: {e}"),
            }
        }
        ["leak", address] => {
            let Some(address) = crate::bus::parse_address(address) else {
                return Err(Usage);
            };
            match fault::arm_leak(address) {
                Ok(()) => serial_println!(
                    "armed: the next unbinding of the driver of {address} leaks its state"
                ),
                Err(e) => serial_println!("inject: {e}"),
            }
        }
        _ => return Err(Usage),
    }
    Ok(())
}

fn reboot(args: &[&str]) -> Result<(), Usage> {
    no_args(args)?;
    serial_println!("rebooting");
    crate::power::reboot()
}

fn poweroff(args: &[&str]) -> Result<(), Usage> {
    no_args(args)?;
    serial_println!("powering off");
    match crate::power::poweroff() {
        Ok(never) => match never {},
        Err(e) => serial_println!("poweroff failed: {e}"),
    }
    Ok(())
}

/// The vectors a function's MSI or MSI-X capability is programmed with now, read from the
/// device (configuration space, and the MSI-X table through a temporary mapping).
mod held {
    use alloc::vec::Vec;

    use pci::{ConfigSpace, Function};

    use crate::memory::mmio::Mmio;
    use crate::pcie::KernelConfig;

    /// (CPU, vector) pairs: the destination APIC ID in the message address (bits 19:12, PCI
    /// Local Bus 3.0 §6.8.1; Intel SDM vol. 3A §11.11.1) as the allocator's CPU index, the
    /// vector in the data's low byte. MSI-X entries masked or never written are left out.
    pub fn vectors(space: &ConfigSpace<'_, KernelConfig>, f: &Function) -> Vec<(u32, u8)> {
        let mut out = Vec::new();
        let read = |o: u8| space.read32(f.address, u16::from(o)).ok();
        if let Some(m) = f.msi
            && let Some(header) = read(m.offset)
            && header & 1 << 16 != 0
        {
            let enabled = 1u16 << ((header >> 20) & 7).min(5);
            let data_at = if m.is_64bit {
                m.offset + 0x0c
            } else {
                m.offset + 0x08
            };
            if let (Some(address), Some(data)) = (read(m.offset + 4), read(data_at)) {
                let cpu = cpu_of(address);
                for i in 0..enabled {
                    out.push((cpu, (data as u8).wrapping_add(i as u8)));
                }
            }
        }
        if let Some(x) = f.msix
            && let Some(header) = read(x.offset)
            && header & 1 << 31 != 0
            && let Some(Some(bar)) = f.bars.get(usize::from(x.table_bir))
            && let Ok(table) = Mmio::map(
                bar.address + u64::from(x.table_offset),
                u64::from(x.table_size) * 16,
            )
        {
            for i in 0..u64::from(x.table_size) {
                let (address, data, control) = (
                    table.read32(i * 16),
                    table.read32(i * 16 + 8),
                    table.read32(i * 16 + 12),
                );
                if control & 1 == 0 && address != 0 {
                    out.push((cpu_of(address), data as u8));
                }
            }
        }
        out
    }

    /// The allocator's CPU index of the APIC ID in a message address (one CPU: the boot
    /// CPU is index 0).
    fn cpu_of(address: u32) -> u32 {
        let apic = (address >> 12) & 0xff;
        match crate::interrupts::lapic::get() {
            Some(l) if l.id() == apic => 0,
            _ => apic,
        }
    }
}
