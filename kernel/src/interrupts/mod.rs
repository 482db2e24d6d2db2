//! Interrupt delivery: the legacy PICs silenced, the local APIC and every IOAPIC programmed,
//! and one dispatch table from vector to handler.
//!
//! - [`pic`]: 8259A remapped to 0x20-0x2F and masked.
//! - [`lapic`]: xAPIC or x2APIC, chosen at run time; spurious, error and timer vectors; EOI;
//!   the timer calibrated against the TSC, whose rate `crate::time` measured against the
//!   HPET, the ACPI PM timer or the PIT and cross-checked.
//! - [`ioapic`]: every IOAPIC of the MADT with its GSI base, ISA overrides, masked entries
//!   pointed at allocated vectors.
//! - [`mod@dispatch`]: handlers owned by the table, counts, spurious accounting.
//! - [`idle`]: waits that halt the CPU until the next interrupt, the timer bounding the sleep.
//!
//! Vector map: 0x00-0x1F exceptions; 0x20-0x2F the (masked) PICs' range; 0x30-0xEF allocatable
//! (`pci::vectors`); 0xFD LAPIC timer; 0xFE LAPIC error; 0xFF spurious.

pub mod dispatch;
pub mod idle;
pub mod ioapic;
pub mod lapic;
pub mod pic;
pub mod vectors;

pub use dispatch::dispatch;

/// Brings up interrupt delivery on the boot CPU and enables interrupts.
pub fn init(platform: Option<&crate::platform::Platform>, prefer_xapic: bool) {
    pic::remap_and_mask();
    let lapic = lapic::init(prefer_xapic);
    // Only the boot CPU runs: vectors are allocated on the CPUs that can receive them.
    vectors::init(1);
    if let Some(p) = platform {
        ioapic::init(&p.io_apics, &p.overrides);
    }
    dispatch::install(
        lapic::ERROR_VECTOR,
        "lapic error",
        "LAPIC",
        alloc::boxed::Box::new(|| {
            if let Some(l) = lapic::get() {
                l.write(lapic::reg::ESR, 0);
                let esr = l.read(lapic::reg::ESR);
                log::error!("lapic: error interrupt, ESR {esr:#x}");
            }
        }),
    )
    .expect("error vector free at boot");

    // The timer's rate is measured over the rest of the boot (`finish_timer_calibration`).
    lapic::start_timer_span(lapic);
    log::info!(
        "lapic: {} mode, id {}, version {:#x}",
        if lapic.is_x2apic() { "x2APIC" } else { "xAPIC" },
        lapic.id(),
        lapic.read(lapic::reg::VERSION),
    );
    x86_64::instructions::interrupts::enable();
}

/// Measures the local APIC timer's rate against the TSC (whose rate is final now) over the
/// boot since [`init`]; if that window cannot be used, over a 2 ms wait. Logs it, and lets
/// waits halt ([`idle::init`]).
pub fn finish_timer_calibration() {
    let Some(lapic) = lapic::get() else {
        return;
    };
    let tsc_hz = crate::time::tsc_hz();
    let (hz, how) = match lapic::finish_timer_span(lapic, tsc_hz) {
        Some((hz, us)) => (
            hz,
            alloc::format!("over the boot's {}.{} ms", us / 1000, us % 1000 / 100),
        ),
        None => (
            lapic::calibrate_timer(lapic, 2_000, crate::time::busy_wait_us),
            alloc::string::String::from("over a 2 ms wait"),
        ),
    };
    log::info!(
        "lapic: timer {} kHz (divide 16) by the TSC ({} MHz), {how}",
        hz / 1000,
        tsc_hz / 1_000_000
    );
    // The timer can bound a sleep now: waits halt from here on.
    if hz != 0 {
        idle::init();
    }
}
