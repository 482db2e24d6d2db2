//! The kernel: a small x86_64 kernel whose heart is a PCI stack.
//!
//! Boot order, each step needing the one before:
//!
//! 1. `boot::entry` (32-bit, shared by PVH and multiboot2) enters long mode on identity
//!    tables for the first 4 GiB and calls [`kernel_main64`].
//! 2. COM1 comes up, the TSC gets a provisional rate from the PIT, and the `log` backend
//!    starts.
//! 3. The loader's structures are parsed into a kernel-owned [`boot::BootInfo`].
//! 4. The GDT/TSS (with IST stacks) and the IDT (every CPU exception reported) are loaded.
//! 5. Memory: frame allocator, the kernel's own page tables, the MMIO window, the heap; then
//!    the screen (the loader's framebuffer, mapped through the MMIO window) replays the
//!    output so far and mirrors serial from then on.
//! 6. Interrupts, PCI; the console's input vectors (COM1 receive, keyboard) are taken before
//!    drivers bind.
//! 7. The boot summary is printed, then `kernel ready`; with `test=<suite>` a suite runs and
//!    QEMU exits with its result.
#![no_std]
#![no_main]

extern crate alloc;

mod blockcmd;
mod bootinfo;
mod bus;
mod console;
mod cpu;
mod framebuffer;
mod hotplug;
mod input;
mod interrupts;
mod iommu;
mod keyboard;
mod logger;
mod memory;
mod options;
mod panic;
mod pcibus;
mod pcie;
mod pciirq;
mod platform;
mod power;
mod qemu;
mod serial;
mod tests;
mod time;

use boot::BootInfo;

/// 64-bit entry, called once by the boot path with the loader code and the physical address
/// of its information structure.
#[unsafe(no_mangle)]
pub extern "C" fn kernel_main64(loader: u32, info_address: u32) -> ! {
    time::mark_boot();
    let mut phases = Phases::new();
    serial::init();
    time::calibrate_early();
    phases.mark("early TSC");
    logger::init(log::LevelFilter::Info);

    let boot = match bootinfo::init(loader, info_address) {
        Ok(boot) => boot,
        Err(e) => {
            serial_println!("FATAL: cannot read the boot information at {info_address:#x}: {e}");
            qemu::exit(qemu::ExitCode::Failure)
        }
    };
    let options = options::parse(boot.cmdline());
    log::set_max_level(options.log);
    if let Some(bad) = options.bad_log {
        log::warn!("log={bad} is not a level (off, error, warn, info, debug, trace); using info");
    }
    options.apply_storage();

    cpu::unwind::enable_sse_state();
    cpu::gdt::init();
    cpu::exceptions::init();
    if options.dumpboot {
        bootinfo::dump(boot);
    }
    phases.mark("CPU set-up");
    memory::init(boot);
    phases.mark("memory");
    framebuffer::init(boot);
    phases.mark("screen");

    summary(boot);
    let platform = platform::init(boot);
    if let Some(p) = platform
        && log::log_enabled!(log::Level::Info)
    {
        platform::log_summary(p);
    }
    phases.mark("ACPI tables");
    // The HPET and PM timer are known now: the TSC rate the rest of the kernel relies on.
    let calibration = time::calibrate(boot, platform);
    phases.mark("TSC calibration");
    interrupts::init(platform, options.prefer_xapic);
    phases.mark("APIC");
    let config = pcie::init(platform.map_or(&[][..], |p| &p.ecam));
    if let Some(p) = platform {
        platform::aml::prepare(p);
    }
    // With an MCFG, its entries' first buses are where enumeration starts, and AML is loaded
    // when something needs an answer from it (platform::aml). Without one, only AML knows
    // the root buses (and maybe the ECAM window).
    let ecam = config.ecam_regions();
    let mut roots = if ecam.is_empty() {
        platform::aml::report()
            .map(platform::aml::roots)
            .unwrap_or_default()
    } else {
        let roots = platform::fallback_roots(&ecam);
        log::info!(
            "pci: root bus(es) {roots:?} from the MCFG; AML is loaded when something needs it"
        );
        roots
    };
    phases.mark("roots");
    if roots.is_empty() {
        roots = platform::fallback_roots(&config.ecam_regions());
        log::warn!("acpi: no host bridge found in AML; starting at {roots:?}");
    }
    pcibus::init(config, &roots);
    // The listing is information: where the log shows information it comes now, so that a
    // driver that hangs the boot leaves it on the screen; otherwise once the drivers are bound.
    let listed_early = log::log_enabled!(log::Level::Info);
    if listed_early {
        pcibus::print_listing();
    }
    phases.mark("PCI enumeration");
    // DMA remapping, where firmware describes it, before any function is claimed.
    iommu::init(
        options.iommu_off,
        options.intremap_off,
        options.intremap_nosid,
        options.ivrs_ioapic,
    );
    // The console's input vectors before any driver can take them all.
    if options.test.is_none() {
        console::reserve_input();
    }
    phases.mark("console input");
    // Input drivers (the xHCI keyboard) deliver to the console's queue.
    drivers::input::set_sink(input::push);
    // Test suites that drive devices themselves (and claim them) run without drivers.
    let drivers = options.test.is_none_or(|suite| suite == "drivers");
    if drivers {
        bus::bind_all();
        phases.mark("drivers");
    }
    let bound_at = time::rdtsc();
    // The boot benchmark's self tests, which make every queue vector deliver, right after
    // the binding they measure.
    let bench = (drivers && options.bootbench).then(bus::self_test_all);
    let tested_at = time::rdtsc();
    // AML, if nothing needed it yet, and whatever is below host bridges only it names.
    let late = platform::aml::late_host_bridges(&roots, drivers);
    phases.mark("AML after");
    if let Some(tested) = bench {
        // When AML added nothing, every driver was bound at `bound_at` and tested at
        // `tested_at`; otherwise the drivers it added are tested now and the figures move.
        let (tested, bound_at, tested_at) = if late == 0 {
            (tested, bound_at, tested_at)
        } else {
            let now = time::rdtsc();
            (bus::self_test_all(), now, time::rdtsc())
        };
        boot_bench(tested, bound_at, tested_at);
        if options.bootbench_ready {
            wait_for_every_vector();
        }
        phases.mark("bench report");
    }
    // What is reported rather than needed comes once the drivers are bound: the line the
    // test runner reads, the PCI listing (unless it came after enumeration).
    bootinfo_line(boot);
    if !listed_early {
        pcibus::print_listing();
    }
    if options.test.is_none() {
        console::start_input();
    }
    phases.mark("reports, keyboard");
    // The boot so far was the calibration window of the TSC and the LAPIC timer.
    time::finish_calibration(calibration);
    interrupts::finish_timer_calibration();
    phases.mark("calibration end");
    phases.log();
    log::info!(
        "boot: {} TSC ticks from kernel entry to ready (guest instructions under -icount shift=0)",
        time::ticks_since_boot()
    );
    serial_println!("kernel ready");

    match options.test {
        Some(suite) => tests::run(suite),
        None => console::run(),
    }
}

/// Where boot time goes: TSC ticks per phase (guest instructions under `-icount shift=0`),
/// logged in one line when the drivers are bound.
struct Phases {
    last: u64,
    spent: [(&'static str, u64); 16],
    count: usize,
}

impl Phases {
    fn new() -> Self {
        Phases {
            last: 0,
            spent: [("", 0); 16],
            count: 0,
        }
    }

    /// Ends the phase called `name` now.
    fn mark(&mut self, name: &'static str) {
        let now = time::ticks_since_boot();
        if let Some(slot) = self.spent.get_mut(self.count) {
            *slot = (name, now.saturating_sub(self.last));
            self.count += 1;
        }
        self.last = now;
    }

    fn log(&self) {
        if !log::log_enabled!(log::Level::Info) {
            return;
        }
        let mut line = alloc::string::String::new();
        for (name, ticks) in &self.spent[..self.count] {
            use core::fmt::Write;
            let _ = write!(line, " {name} {}k,", ticks / 1000);
        }
        log::info!(
            "boot: phases (TSC ticks; guest instructions under -icount shift=0):{}",
            line.trim_end_matches(',')
        );
    }
}

/// Reports the boot benchmark's figures: how the self tests went, which device vectors have
/// delivered, and the TSC when the drivers were bound (`bound_tsc`) and when their self
/// tests had made the queue vectors deliver (`tsc`), the point the boot benchmark measures
/// to ("all drivers bound"). Under `-icount shift=0` the TSC is the number of guest
/// instructions since QEMU started.
fn boot_bench((ok, failed): (usize, usize), bound_at: u64, tested_at: u64) {
    let (vectors, seen) = device_vectors_seen();
    serial_println!(
        "BOOTBENCH drivers={} self_tests_failed={failed} vectors={vectors} seen={seen} tsc={tested_at} bound_tsc={bound_at}",
        ok + failed,
    );
    serial_println!("all drivers bound");
}

/// `(device vectors installed, those that have delivered at least once)`: the MSI-X, MSI
/// and INTx vectors, not the kernel's own (timer, console).
fn device_vectors_seen() -> (usize, usize) {
    let counts: alloc::vec::Vec<u64> = interrupts::dispatch::installed()
        .into_iter()
        .filter(|(v, _, _)| matches!(interrupts::dispatch::kind(*v), "MSI-X" | "MSI" | "INTx"))
        .map(|(_, _, count)| count)
        .collect();
    (counts.len(), counts.iter().filter(|c| **c > 0).count())
}

/// How long `bootbench=ready` waits for the vectors only something outside the guest makes
/// fire (a link change, a disk resize).
const READY_WAIT_US: u64 = 10_000_000;

/// `bootbench=ready`: waits until every device vector has delivered, then prints `BOOTBENCH
/// ready=yes vectors=<n> seen=<n> tsc=<TSC>` (as Linux's benchmark `/init` does from
/// `/proc/interrupts`); after [`READY_WAIT_US`] it prints what it saw with `ready=no`. It
/// spins with interrupts enabled: the local APIC timer is still being measured, so nothing
/// could wake a halted CPU when no device interrupts.
fn wait_for_every_vector() {
    let deadline = time::micros_since_boot().saturating_add(READY_WAIT_US);
    loop {
        let (vectors, seen) = device_vectors_seen();
        let all = vectors > 0 && seen == vectors;
        if all || time::micros_since_boot() >= deadline {
            serial_println!(
                "BOOTBENCH ready={} vectors={vectors} seen={seen} tsc={}",
                if all { "yes" } else { "no" },
                time::rdtsc()
            );
            return;
        }
        for _ in 0..1000 {
            core::hint::spin_loop();
        }
    }
}

/// The boot summary, when the log shows information: loader, memory, RSDP, command line.
fn summary(boot: &BootInfo) {
    if boot.dropped_regions > 0 {
        log::warn!(
            "{} memory-map entries dropped (empty or too many)",
            boot.dropped_regions
        );
    }
    if boot.rsdp.is_none() {
        log::warn!("RSDP: none given by the loader");
    }
    // The rest is information: not even computed when it would not be shown.
    if !log::log_enabled!(log::Level::Info) {
        return;
    }
    let name = boot.loader_name();
    log::info!(
        "booted by {}{}{} (information at {:#x}, {} bytes)",
        boot.loader,
        if name.is_empty() { "" } else { ": " },
        name,
        boot.raw_address,
        boot.raw_size
    );
    log::info!("TSC (provisional): {} MHz", time::tsc_hz() / 1_000_000);
    for r in boot.memory_map() {
        log::info!(
            "  [{:#014x}-{:#014x}) {:>9} KiB {:?}",
            r.start,
            r.end(),
            r.len / 1024,
            r.kind
        );
    }
    let (free, managed, leaked) =
        memory::frames::with(|f| (f.free_bytes(), f.managed_bytes(), f.leaked_frames()));
    let (heap_used, heap_free) = memory::heap::usage();
    log::info!(
        "memory: {} MiB usable, {} MiB allocatable, {} MiB free, heap {} KiB ({} KiB used){}",
        boot.usable_bytes() >> 20,
        managed >> 20,
        free >> 20,
        (heap_used + heap_free) / 1024,
        heap_used / 1024,
        if leaked > 0 { " (frames leaked!)" } else { "" }
    );
    if let Some(r) = &boot.rsdp {
        let oem = core::str::from_utf8(&r.bytes[9..15]).unwrap_or("?");
        log::info!(
            "RSDP: at {:#x}, ACPI revision {}, OEM {:?}",
            r.loader_address,
            r.revision,
            oem
        );
    }
    if let Some(fb) = &boot.framebuffer {
        log::info!(
            "framebuffer: {}x{}x{} at {:#x}",
            fb.width,
            fb.height,
            fb.bpp,
            fb.address
        );
    }
    log::info!("command line: {:?}", boot.cmdline());
}

/// The machine-readable summary of what the loader gave (`BOOTINFO`, read by the test
/// runner), printed once the drivers are bound.
fn bootinfo_line(boot: &BootInfo) {
    serial_println!(
        "BOOTINFO loader={} usable={} regions={} rsdp={} cmdline=\"{}\"",
        match boot.loader {
            boot::Loader::Pvh => "pvh",
            boot::Loader::Multiboot2 => "multiboot2",
        },
        boot.usable_bytes(),
        boot.memory_map().len(),
        match &boot.rsdp {
            Some(r) => alloc::format!("{:#x}", r.loader_address),
            None => alloc::string::String::from("none"),
        },
        boot.cmdline()
    );
}
