//! Interrupt scenarios: the kernel's `irq` suite (local APIC timer, self-IPIs, spurious
//! accounting, IOAPIC entries, COM1 receive through the IOAPIC, vector exhaustion, 1000
//! allocate/release cycles) and `devirq` suite (QEMU's `edu` device through `pci::irq`: MSI
//! and INTx via `_PRT`, each raised 100 times and counted exactly; release leaves nothing),
//! in xAPIC mode (`-cpu qemu64`, no x2APIC) and x2APIC mode (`-cpu max`).
//!
//! The mode the kernel chose is checked against what QEMU was told the CPU has.

use qemu_tests::{
    Machine, Outcome, QEMU_EXIT_SUCCESS, Qemu, check, ensure, expect_exit, kernel_elf, qemu_or_skip,
};

fn run(name: &str, cpu: &str, suite: &str, extra: &[&str], append: &str) -> Outcome {
    let cmdline = format!("test={suite} {append}");
    let qemu = Qemu::kernel(kernel_elf(), cmdline.trim())
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(["-cpu", cpu])
        .args(extra.iter().copied());
    let outcome = qemu
        .run()
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    println!(
        "{name}: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    outcome
}

#[track_caller]
fn check_suite(name: &str, outcome: &Outcome, min_passed: u64, mode: &str) {
    check(name, outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(min_passed)?;
        let wanted = format!("lapic: {mode} mode");
        ensure!(
            outcome.serial.contains(&wanted),
            "the kernel did not report `{wanted}`"
        );
        Ok(())
    });
}

#[test]
fn irq_xapic() {
    if !qemu_or_skip("irq_xapic") {
        return;
    }
    let outcome = run("irq_xapic", "qemu64", "irq", &[], "");
    check_suite("irq_xapic", &outcome, 7, "xAPIC");
}

#[test]
fn irq_x2apic() {
    if !qemu_or_skip("irq_x2apic") {
        return;
    }
    let outcome = run("irq_x2apic", "max", "irq", &[], "");
    check_suite("irq_x2apic", &outcome, 7, "x2APIC");
}

#[test]
fn irq_xapic_forced_on_an_x2apic_cpu() {
    if !qemu_or_skip("irq_xapic_forced_on_an_x2apic_cpu") {
        return;
    }
    let outcome = run("irq_xapic_forced", "max", "irq", &[], "apic=xapic");
    check_suite("irq_xapic_forced", &outcome, 7, "xAPIC");
}

#[test]
fn edu_xapic() {
    if !qemu_or_skip("edu_xapic") {
        return;
    }
    let outcome = run("edu_xapic", "qemu64", "devirq", &["-device", "edu"], "");
    check_suite("edu_xapic", &outcome, 4, "xAPIC");
    assert!(
        outcome.serial.contains("edu: 100 MSI interrupts"),
        "no MSI count line"
    );
    assert!(
        outcome.serial.contains("edu: 100 INTx interrupts"),
        "no INTx count line"
    );
}

#[test]
fn edu_x2apic() {
    if !qemu_or_skip("edu_x2apic") {
        return;
    }
    let outcome = run("edu_x2apic", "max", "devirq", &["-device", "edu"], "");
    check_suite("edu_x2apic", &outcome, 4, "x2APIC");
}

#[test]
fn edu_behind_a_bridge_routes_intx_through_the_swizzle() {
    if !qemu_or_skip("edu_behind_a_bridge") {
        return;
    }
    let extra = [
        "-device",
        "pcie-pci-bridge,id=ppb,bus=pcie.0,addr=0x5",
        "-device",
        "edu,bus=ppb,addr=0x3",
    ];
    let outcome = run("edu_behind_a_bridge", "qemu64", "devirq", &extra, "");
    check_suite("edu_behind_a_bridge", &outcome, 4, "xAPIC");
}
