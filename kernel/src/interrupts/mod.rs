//! Interrupt delivery: the legacy PICs silenced, the local APIC and every IOAPIC programmed,
//! and one dispatch table from vector to handler.
//!
//! - [`pic`]: 8259A remapped to 0x20-0x2F and masked.
//! - [`lapic`]: xAPIC or x2APIC, chosen at run time; spurious, error and timer vectors; EOI;
//!   the timer calibrated against the TSC, whose rate `crate::time` measured against the
//!   HPET, the ACPI PM timer or the PIT and cross-checked.
//! - [`ioapic`]: every IOAPIC of the MADT with its GSI base, ISA overrides, masked entries
//!   pointed at allocated vectors.
//! - [`dispatch`]: handlers owned by the table, counts, spurious accounting.
//!
//! Vector map: 0x00-0x1F exceptions; 0x20-0x2F the (masked) PICs' range; 0x30-0xEF allocatable
//! (`pci::vectors`); 0xFD LAPIC timer; 0xFE LAPIC error; 0xFF spurious.

pub mod dispatch;
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

    let hz = lapic::calibrate_timer(lapic, 2_000, crate::time::busy_wait_us);
    log::info!(
        "lapic: {} mode, id {}, version {:#x}; timer {} kHz (divide 16) by the TSC ({} MHz)",
        if lapic.is_x2apic() { "x2APIC" } else { "xAPIC" },
        lapic.id(),
        lapic.read(lapic::reg::VERSION),
        hz / 1000,
        crate::time::tsc_hz() / 1_000_000
    );
    x86_64::instructions::interrupts::enable();
}
