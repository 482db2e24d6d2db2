//! Interrupt scenarios: the kernel's `irq` suite (local APIC timer, self-IPIs, spurious
//! accounting, IOAPIC entries, COM1 receive through the IOAPIC, vector exhaustion, 1000
//! allocate/release cycles) and `devirq` suite (QEMU's `edu` device through `pci::irq`: MSI
//! and INTx via `_PRT`, each raised 100 times and counted exactly; release leaves nothing;
//! an NVMe Identify Controller completion by MSI-X and by INTx, whose serial number must be
//! the random one this runner gave QEMU; virtio-blk reads of a sector this runner wrote and a
//! virtio-net transmit, by MSI-X and INTx; an e1000e forced onto MSI and onto INTx),
//! in xAPIC mode (`-cpu qemu64`, no x2APIC) and x2APIC mode (`-cpu max`).
//!
//! The mode the kernel chose is checked against what QEMU was told the CPU has.

use qemu_tests::fnv1a;
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

/// The `devirq` suite with an edu, an NVMe controller whose serial is a fresh token, a
/// virtio-blk disk whose first sector this runner wrote, and a virtio-net card on QEMU's user
/// network. `virtio_vectors` is `None` for QEMU's default (MSI-X) or `Some(0)` for a
/// virtio-blk without MSI-X, which must then complete by INTx.
#[track_caller]
fn devices(name: &str, cpu: &str, mode: &str, virtio_vectors: Option<u32>) {
    if !qemu_or_skip(name) {
        return;
    }
    let serial = random_token();
    let nvme = format!("nvme,serial={serial}");
    let dir = std::env::temp_dir().join(format!("qemu-tests-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let image = dir.join("disk.img");
    let pattern: Vec<u8> = (0..1u32 << 20)
        .map(|i| {
            (i.wrapping_mul(2_654_435_761) >> 13) as u8
                ^ serial.as_bytes()[i as usize % serial.len()]
        })
        .collect();
    std::fs::write(&image, &pattern).expect("disk image");
    let suffix = virtio_vectors.map_or(String::new(), |v| format!(",vectors={v}"));
    let drive = format!("if=none,id=vb,format=raw,file={}", image.display());
    let blk = format!("virtio-blk-pci,drive=vb{suffix}");
    let net = "virtio-net-pci,netdev=n0".to_owned();
    let extra = [
        "-device",
        "edu",
        "-device",
        &nvme,
        "-drive",
        &drive,
        "-device",
        &blk,
        "-netdev",
        "user,id=n0",
        "-device",
        &net,
        "-netdev",
        "user,id=n1",
        "-device",
        "e1000e,netdev=n1",
    ];
    let outcome = run(name, cpu, "devirq", &extra, "");
    let _ = std::fs::remove_dir_all(&dir);
    check_suite(name, &outcome, 11, mode);
    let best = if virtio_vectors == Some(0) {
        "INTx"
    } else {
        "MSI-X"
    };
    let hash = fnv1a(&pattern[..512]);
    check(name, &outcome, |outcome, _| {
        for line in [
            "edu: 100 MSI interrupts".to_owned(),
            "edu: 100 INTx interrupts".to_owned(),
            format!("nvme: MSI-X completion; model=\"QEMU NVMe Ctrl\" serial=\"{serial}\""),
            format!("nvme: INTx completion; model=\"QEMU NVMe Ctrl\" serial=\"{serial}\""),
            format!("virtio-blk: {best} completion; sector0 fnv1a={hash:016x}"),
            format!("virtio-blk: INTx completion; sector0 fnv1a={hash:016x}"),
            "virtio-net: MSI-X transmit completion".to_owned(),
            "e1000e: 20 MSI interrupts".to_owned(),
            "e1000e: 20 INTx interrupts".to_owned(),
        ] {
            ensure!(outcome.serial.contains(&line), "missing `{line}`");
        }
        Ok(())
    });
}

#[test]
fn devices_xapic() {
    devices("devices_xapic", "qemu64", "xAPIC", None);
}

#[test]
fn devices_x2apic() {
    devices("devices_x2apic", "max", "x2APIC", None);
}

#[test]
fn devices_virtio_without_msix_fall_back_to_intx() {
    devices("devices_virtio_intx", "qemu64", "xAPIC", Some(0));
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
    // No virtio devices here: their three tests fail, the six edu/NVMe tests must pass.
    check("edu_behind_a_bridge", &outcome, |outcome, _| {
        for test in [
            "edu_msi_handler_counts_exactly_n",
            "edu_intx_through_prt_counts_exactly_n",
            "nvme_identify_completes_by_intx",
        ] {
            ensure!(
                outcome.serial.contains(&format!("TEST {test} ... ok")),
                "{test} did not pass"
            );
        }
        Ok(())
    });
}

#[test]
fn two_devices_share_one_intx_line() {
    if !qemu_or_skip("shared_intx") {
        return;
    }
    // On q35, slots 4 and 8 both reach GSI 20 through INTA# (the firmware's _PRT).
    let extra = ["-device", "edu,addr=0x4", "-device", "edu,addr=0x8"];
    let outcome = run("shared_intx", "qemu64", "sharedirq", &extra, "");
    check_suite("shared_intx", &outcome, 1, "xAPIC");
    check("shared_intx", &outcome, |outcome, _| {
        ensure!(
            outcome
                .serial
                .contains("served both devices, 20 interrupts each"),
            "no shared-line result line"
        );
        Ok(())
    });
}
