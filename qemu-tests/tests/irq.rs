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
    run_on(Machine::Q35, name, cpu, suite, extra, append)
}

fn run_on(
    machine: Machine,
    name: &str,
    cpu: &str,
    suite: &str,
    extra: &[&str],
    append: &str,
) -> Outcome {
    let cmdline = format!("test={suite} {append}");
    let qemu = Qemu::kernel(kernel_elf(), cmdline.trim())
        .machine(machine)
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
    devices_on(Machine::Q35, &[], &[], name, cpu, mode, virtio_vectors);
}

/// [`devices`] on `machine`, with `topology` added to QEMU's command line and each device
/// (edu, nvme, virtio-blk, virtio-net, e1000e) placed by the matching `placement` suffix
/// (for example `,bus=rp1`; empty: QEMU's default).
#[track_caller]
fn devices_on(
    machine: Machine,
    topology: &[&str],
    placement: &[&str],
    name: &str,
    cpu: &str,
    mode: &str,
    virtio_vectors: Option<u32>,
) {
    if !qemu_or_skip(name) {
        return;
    }
    let at = |i: usize| placement.get(i).copied().unwrap_or("");
    let serial = random_token();
    let edu = format!("edu{}", at(0));
    let nvme = format!("nvme,serial={serial}{}", at(1));
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
    let blk = format!("virtio-blk-pci,drive=vb{suffix}{}", at(2));
    let net = format!("virtio-net-pci,netdev=n0{}", at(3));
    let e1000e = format!("e1000e,netdev=n1{}", at(4));
    let mut extra = topology.to_vec();
    extra.extend([
        "-device",
        &edu,
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
        &e1000e,
    ]);
    let outcome = run_on(machine, name, cpu, "devirq", &extra, "");
    let _ = std::fs::remove_dir_all(&dir);
    check_suite(name, &outcome, 12, mode);
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

/// `-machine pc`: INTx through the PIIX's ACPI link devices (LNKA-LNKD, `IRQ()` numbers 5,
/// 10, 11 set with `_SRS`), configuration space through port I/O.
#[test]
fn devices_on_pc() {
    devices_on(Machine::Pc, &[], &[], "devices_pc", "qemu64", "xAPIC", None);
}

/// q35 with a `pxb-pcie` expander (root bus 0x80, its own host bridge and `_PRT` in AML) and
/// every device behind a root port on it: INTx swizzled through the port to bus 0x80 and
/// routed by the expander's `_PRT` (link devices).
///
/// QEMU's own routing of expander interrupts on q35 is not what its AML says for every port:
/// `pxb_map_irq_fn` subtracts the expander's slot from the swizzled pin and the ICH9 then
/// indexes its routing table with the (possibly negative) result, so for the third port here
/// the hardware raises a different PIRQ than the `_PRT` link names (and SeaBIOS's Interrupt
/// Line value is wrong for three others). The device on that port (virtio-net) is exercised
/// by MSI-X only; the four devices whose INTx is tested sit where QEMU's hardware and its
/// AML agree.
#[test]
fn devices_behind_a_pxb_pcie_expander() {
    let topology = [
        "-device",
        "pxb-pcie,id=pxb1,bus_nr=0x80,bus=pcie.0",
        "-device",
        "pcie-root-port,id=rp1,bus=pxb1,chassis=1,slot=1",
        "-device",
        "pcie-root-port,id=rp2,bus=pxb1,chassis=2,slot=2",
        "-device",
        "pcie-root-port,id=rp3,bus=pxb1,chassis=3,slot=3",
        "-device",
        "pcie-root-port,id=rp4,bus=pxb1,chassis=4,slot=4",
        "-device",
        "pcie-root-port,id=rp5,bus=pxb1,chassis=5,slot=5",
    ];
    // edu, nvme, virtio-blk, virtio-net, e1000e.
    let placement = [",bus=rp1", ",bus=rp2", ",bus=rp4", ",bus=rp3", ",bus=rp5"];
    devices_on(
        Machine::Q35,
        &topology,
        &placement,
        "devices_pxb",
        "qemu64",
        "xAPIC",
        None,
    );
}

/// `-machine q35,acpi=off`: SeaBIOS's own ACPI 1.0 tables instead of QEMU's (a 116-byte FADT
/// whose X_DSDT field lies past its end, no HPET, a DSDT and SSDT of SeaBIOS's own). The
/// machine must boot, read every table and load that AML, and drive each device by MSI or
/// MSI-X.
///
/// INTx is not required here: SeaBIOS's fallback DSDT describes a PIIX4 chipset (its link
/// devices read and write PIRQ registers at 00:01.0, which on q35 is the VGA), so its `_PRT`
/// cannot describe where an ICH9 routes a pin. The kernel follows ACPI, as Linux does, and
/// says so where the Interrupt Line the BIOS recorded disagrees.
#[test]
fn devices_on_q35_with_seabios_tables() {
    let name = "devices_q35_acpi_off";
    if !qemu_or_skip(name) {
        return;
    }
    let extra = [
        "-device",
        "edu",
        "-device",
        "nvme,serial=seabios",
        "-netdev",
        "user,id=n1",
        "-device",
        "e1000e,netdev=n1",
    ];
    let outcome = run_on(Machine::Q35AcpiOff, name, "qemu64", "devirq", &extra, "");
    check(name, &outcome, |outcome, _| {
        for line in [
            "acpi: revision 0, tables: FACP",
            "namespace initialised, APIC mode on, 1 host bridge(s)",
            "kernel ready",
            "TEST edu_msi_handler_counts_exactly_n ... ok",
            "TEST release_leaves_nothing_behind ... ok",
            "TEST nvme_identify_completes_by_msix ... ok",
            "TEST e1000e_forced_onto_msi ... ok",
        ] {
            ensure!(outcome.serial.contains(line), "missing `{line}`");
        }
        ensure!(
            !outcome.serial.contains("EXCEPTION") && !outcome.serial.contains("PANIC"),
            "the kernel faulted"
        );
        Ok(())
    });
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
