//! Interrupt scenarios: the kernel's `irq` suite (local APIC timer, self-IPIs, spurious
//! accounting, IOAPIC entries, COM1 receive through the IOAPIC, vector exhaustion, 1000
//! allocate/release cycles) and `devirq` suite (QEMU's `edu` device through `pci::irq`: MSI
//! and INTx via `_PRT`, each raised 100 times and counted exactly; release leaves nothing;
//! an NVMe Identify Controller completion by MSI-X and by INTx, whose serial number must be
//! the random one this runner gave QEMU),
//! in xAPIC mode (`-cpu qemu64`, no x2APIC) and x2APIC mode (`-cpu max`).
//!
//! The mode the kernel chose is checked against what QEMU was told the CPU has.

use qemu_tests::{
    Machine, Outcome, QEMU_EXIT_SUCCESS, Qemu, check, ensure, expect_exit, kernel_elf,
    qemu_or_skip, random_token,
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

/// The `devirq` suite with an edu and an NVMe controller whose serial is a fresh token.
#[track_caller]
fn devices(name: &str, cpu: &str, mode: &str) {
    if !qemu_or_skip(name) {
        return;
    }
    let serial = random_token();
    let nvme = format!("nvme,serial={serial}");
    let outcome = run(
        name,
        cpu,
        "devirq",
        &["-device", "edu", "-device", &nvme],
        "",
    );
    check_suite(name, &outcome, 6, mode);
    check(name, &outcome, |outcome, _| {
        for line in [
            "edu: 100 MSI interrupts".to_owned(),
            "edu: 100 INTx interrupts".to_owned(),
            format!("nvme: MSI-X completion; model=\"QEMU NVMe Ctrl\" serial=\"{serial}\""),
            format!("nvme: INTx completion; model=\"QEMU NVMe Ctrl\" serial=\"{serial}\""),
        ] {
            ensure!(outcome.serial.contains(&line), "missing `{line}`");
        }
        Ok(())
    });
}

#[test]
fn devices_xapic() {
    devices("devices_xapic", "qemu64", "xAPIC");
}

#[test]
fn devices_x2apic() {
    devices("devices_x2apic", "max", "x2APIC");
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
        "-device",
        "nvme,serial=bridge",
    ];
    let outcome = run("edu_behind_a_bridge", "qemu64", "devirq", &extra, "");
    check_suite("edu_behind_a_bridge", &outcome, 6, "xAPIC");
}
