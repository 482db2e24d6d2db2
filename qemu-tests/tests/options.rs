//! Kernel command-line options, each checked for its effect on a q35 machine with edu and
//! virtio-net (whose driver makes DMA memory): the
//! machine boots to the prompt with the option, powers off, and the serial log must show
//! what the option promises (README, "Kernel command line"). Options whose effect other
//! tests check in depth are listed there: `storage=write` (storage, blk), `apic=xapic` (irq),
//! `log=debug` and unknown words (console_pci), `iommu=off` (iommu: the same DMA write that
//! remapping blocks lands), `intremap=off` (iommu: a made-up interrupt message is
//! delivered), `intremap=nosid` (iommu: another owner's entry takes edu's message),
//! `ivrs_ioapic` (amd_iommu), `test=<suite>` (every suite).
//!
//! - `dumpboot`: the boot information as a fixture between `BOOTDUMP BEGIN` and `END`.
//! - `log=trace`: trace lines from PCI enumeration (each function and BAR) and from DMA
//!   memory (each buffer made and given back), not only from the AML interpreter.
//! - `log=<not a level>`: a warning naming the word, and `info` as if none was given.
//! - `storage=<not write>`: a warning; disks stay read only.
//! - `bootbench`: the `BOOTBENCH` line (drivers bound and tested, TSC at binding) and `all
//!   drivers bound`; `bootbench=ready` then waits for every device vector and says whether
//!   they all came (here virtio-net's configuration vector cannot: nothing changes its link).

use std::time::Duration;

use qemu_tests::{Machine, Qemu, check, ensure, kernel_elf, qemu_or_skip};

const PROMPT: &str = "kernel> ";

/// Boots with `cmdline`, waits for the prompt, powers off; returns the serial log.
fn boot(name: &str, cmdline: &str) -> Option<String> {
    let run = Qemu::kernel(kernel_elf(), cmdline)
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(["-device", "edu"])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .timeout(Duration::from_secs(120))
        .interact(|s| {
            s.expect(PROMPT, Duration::from_secs(90))?;
            s.send_line("poweroff")?;
            s.wait_exit(Duration::from_secs(20))?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    let mut serial = None;
    check(name, &run.outcome, |outcome, report| {
        run.result.clone()?;
        ensure!(
            report.panic.is_none(),
            "kernel panicked: {:?}",
            report.panic
        );
        serial = Some(outcome.serial.clone());
        Ok(())
    });
    serial
}

#[test]
fn each_option_shows_its_effect() {
    let name = "each_option_shows_its_effect";
    if !qemu_or_skip(name) {
        return;
    }

    let log = boot("dumpboot", "log=warn dumpboot").expect("dumpboot log");
    let begin = log
        .find("BOOTDUMP BEGIN")
        .expect("dumpboot: no BOOTDUMP BEGIN");
    let end = log.find("BOOTDUMP END").expect("dumpboot: no BOOTDUMP END");
    let dump = &log[begin..end];
    assert!(
        dump.lines().count() > 3,
        "dumpboot: the dump between BEGIN and END is empty:\n{dump}"
    );

    let log = boot("log=trace", "log=trace").expect("trace log");
    let trace = |module: &str| {
        log.lines()
            .filter(|l| l.contains("TRACE") && l.contains(module))
            .count()
    };
    assert!(
        trace("pci::enumerate") >= 5 && log.contains("[1234:11e8] class 00ff00"),
        "log=trace: no trace of PCI enumeration naming edu ({} lines)",
        trace("pci::enumerate")
    );
    assert!(
        log.lines()
            .any(|l| l.contains("TRACE") && l.contains("BAR0: Memory32 at")),
        "log=trace: no trace of a sized BAR"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("TRACE") && l.contains("KiB of zeroed DMA memory at")),
        "log=trace: no trace of DMA memory made"
    );

    let log = boot("log=loud", "log=loud").expect("bad level log");
    assert!(
        log.contains("log=loud is not a level") && log.contains("INFO "),
        "log=loud: no warning, or not at info"
    );

    let log = boot("storage=maybe", "storage=maybe").expect("bad storage log");
    assert!(
        log.contains("storage=maybe is not known") && log.contains("disks are read only"),
        "storage=maybe: no warning, or disks not read only"
    );

    let log = boot("bootbench", "log=warn bootbench").expect("bootbench log");
    let line = log
        .lines()
        .find(|l| l.starts_with("BOOTBENCH "))
        .expect("bootbench: no BOOTBENCH line");
    for field in ["drivers=2 ", "self_tests_failed=0 ", "tsc=", "bound_tsc="] {
        assert!(line.contains(field), "bootbench: {field} missing in {line}");
    }
    assert!(log.contains("all drivers bound"), "bootbench: no marker");
    assert!(
        !log.contains("BOOTBENCH ready"),
        "bootbench: a ready line without bootbench=ready"
    );

    // Nothing changes virtio-net's link here, so its configuration vector never fires: the
    // wait ends after its 10 s with `ready=no`, every other vector seen.
    let log = boot("bootbench=ready", "log=warn bootbench=ready").expect("bootbench=ready log");
    let line = log
        .lines()
        .find(|l| l.starts_with("BOOTBENCH ready="))
        .expect("bootbench=ready: no ready line");
    let value = |key: &str| -> Option<usize> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let (vectors, seen) = (value("vectors"), value("seen"));
    assert!(
        line.starts_with("BOOTBENCH ready=no ")
            && matches!((vectors, seen), (Some(v), Some(s)) if s > 0 && s + 1 == v),
        "bootbench=ready: expected every vector but virtio-net's configuration one: {line}"
    );
}
