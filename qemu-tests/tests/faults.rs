//! Contained driver faults (docs/faults.md): a panic in a driver's probe, interrupt handler,
//! self test or console command is caught by unwinding, reported with its source location,
//! the driver's state is dropped (releasing everything it held), the device is left
//! quiescent and the function can be bound again. The kernel keeps running.
//!
//! - `fault_suite_every_driver`: the kernel's `faults` suite (`kernel/src/tests/faults_suite.rs`)
//!   on q35 with edu, NVMe, virtio-blk and virtio-net, once with `-cpu qemu64` (xAPIC) and
//!   once with `-cpu max` (x2APIC): the unwinder (destructors, locks, interrupt flag), then
//!   for each driver a panic injected in probe, in the interrupt handler, in the self test
//!   (and in `nvme read`), each caught at the injection point's line in `drivers/src/`, the
//!   device quiescent and unclaimed, a rebind and a passing self test, and vectors, frames,
//!   heap, MMIO window, handlers and claims exactly at baseline after each.
//!   A third run gives the virtio devices no MSI-X (`vectors=0`): their handlers run on a
//!   shared INTx line, where a panicking handler is parked alone, its function's INTx is
//!   disabled at once (a level-triggered line would otherwise keep interrupting) and its
//!   binding, found by its place on the line, is unbound.
//! - `console_inject_and_rebind`: the same through the console, as a user would: `inject
//!   panic <address> <point>`, the command that reaches the point, `drivers` listing the
//!   failed binding with the panic's location, `bind` and `selftest` working again, `mem`'s
//!   frames and vectors and `irqs`' handlers back where they were, and the console answering
//!   throughout.
//!
//! Without `qemu-system-x86_64` the scenarios print `SKIPPED` and return, unless `CI` is set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_tests::{
    InteractRun, Machine, QEMU_EXIT_SUCCESS, Qemu, Session, check, ensure, expect_exit, kernel_elf,
    qemu_or_skip, random_token,
};

/// Tests in the suite.
const SUITE_TESTS: u64 = 6;
/// (driver, injection points the suite exercises).
const MATRIX: [(&str, &[&str]); 4] = [
    ("edu", &["probe", "handler", "selftest"]),
    ("nvme", &["probe", "handler", "selftest", "command"]),
    ("virtio-blk", &["probe", "handler", "selftest"]),
    ("virtio-net", &["probe", "handler", "selftest"]),
];

/// A scratch directory with the two disk images (1 MiB of zeros each).
fn disks(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("faults-{name}-{}", random_token()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let (nvme, blk) = (dir.join("nvme.img"), dir.join("blk.img"));
    std::fs::write(&nvme, vec![0u8; 1 << 20]).expect("NVMe image");
    std::fs::write(&blk, vec![0u8; 1 << 20]).expect("virtio-blk image");
    (dir, nvme, blk)
}

/// q35, 512 MiB, `-cpu cpu`, and the four devices; with `intx`, the virtio devices have no
/// MSI-X (`vectors=0`), so their drivers take a shared INTx line.
fn machine(cmdline: &str, cpu: &str, nvme: &Path, blk: &Path, intx: bool) -> Qemu {
    let vectors = if intx { ",vectors=0" } else { "" };
    Qemu::kernel(kernel_elf(), cmdline)
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(["-cpu", cpu, "-device", "edu"])
        .args([
            "-drive".to_owned(),
            format!("if=none,id=nvm,format=raw,file={}", nvme.display()),
            "-device".to_owned(),
            format!("nvme,serial={},drive=nvm", random_token()),
            "-drive".to_owned(),
            format!("if=none,id=vb,format=raw,file={}", blk.display()),
            "-device".to_owned(),
            format!("virtio-blk-pci,drive=vb{vectors}"),
            "-netdev".to_owned(),
            "user,id=n0".to_owned(),
            "-device".to_owned(),
            format!("virtio-net-pci,netdev=n0{vectors}"),
        ])
}

#[test]
fn fault_suite_every_driver() {
    if !qemu_or_skip("fault_suite_every_driver") {
        return;
    }
    for (cpu, intx) in [("qemu64", false), ("max", false), ("qemu64", true)] {
        let name = format!("fault_suite_{cpu}{}", if intx { "_intx" } else { "" });
        let (dir, nvme, blk) = disks(&name);
        let outcome = machine("test=faults", cpu, &nvme, &blk, intx)
            .timeout(Duration::from_secs(240))
            .run()
            .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "{name}: {} in {:.2} s",
            outcome.describe_exit(),
            outcome.wall.as_secs_f64()
        );
        check(&name, &outcome, |outcome, report| {
            expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
            report.check_tests_passed(SUITE_TESTS)?;
            if intx {
                // Both virtio functions on INTx: their handler faults were on a shared line.
                let lines = outcome.serial.matches(" INTx pin ").count();
                ensure!(
                    lines >= 2,
                    "virtio with vectors=0: {lines} INTx routes logged, expected both functions on INTx"
                );
                ensure!(
                    outcome.serial.contains("on INTx GSI")
                        && outcome
                            .serial
                            .contains("disabled, its driver will be unbound"),
                    "no handler fault on a shared INTx line was reported"
                );
            }
            if cpu == "max" {
                ensure!(
                    outcome.serial.contains("lapic: x2APIC mode"),
                    "-cpu max did not run in x2APIC mode"
                );
            }
            for (driver, points) in MATRIX {
                for point in points {
                    // `faults: <driver> <address>: <point> fault caught at drivers/src/<file>:<line>:<col>; rebound, self test: ...`
                    let line = outcome
                        .serial
                        .lines()
                        .find(|l| {
                            l.starts_with(&format!("faults: {driver} "))
                                && l.contains(&format!(": {point} fault caught at drivers/src/"))
                        })
                        .ok_or_else(|| format!("no contained {point} fault of {driver}"))?;
                    let location = line
                        .split(" caught at ")
                        .nth(1)
                        .and_then(|r| r.split(';').next())
                        .unwrap_or("");
                    let parts: Vec<&str> = location.rsplitn(3, ':').collect();
                    ensure!(
                        parts.len() == 3
                            && parts[0].parse::<u32>().is_ok()
                            && parts[1].parse::<u32>().is_ok()
                            && parts[2].ends_with(".rs"),
                        "{driver} {point}: location {location:?} is not file:line:column"
                    );
                    ensure!(
                        outcome.serial.contains(&format!(
                            "driver fault: panic at {location}: injected fault: {point}"
                        )),
                        "{driver} {point}: no `driver fault` report at {location}"
                    );
                    ensure!(
                        line.contains("; rebound, self test: "),
                        "{driver} {point}: no self test after the rebind: {line}"
                    );
                }
                ensure!(
                    outcome.serial.contains(&format!(
                        "faults: {driver}: {} fault(s) contained; vectors, frames, heap, MMIO window, handlers and claims at baseline after each",
                        points.len()
                    )),
                    "{driver}: no baseline line"
                );
            }
            Ok(())
        });
    }
}

/// The console's prompt.
const PROMPT: &str = "kernel> ";
/// From QEMU's start to the first prompt.
const BOOT: Duration = Duration::from_secs(60);
/// From sending a command to the next prompt (an NVMe command whose interrupt never comes
/// waits for the driver's 10 s timeout).
const ANSWER: Duration = Duration::from_secs(30);

/// Sends `line`, waits for the next prompt, returns the output (without echo and prompt).
fn command(s: &mut Session<'_>, line: &str) -> Result<String, String> {
    s.send_line(line)?;
    let text = s
        .expect(PROMPT, ANSWER)
        .map_err(|e| format!("`{line}`: {e}"))?;
    let text = text.strip_suffix(PROMPT).unwrap_or(&text);
    Ok(match text.split_once('\n') {
        Some((_echo, output)) => output.to_owned(),
        None => String::new(),
    })
}

/// The address of the function `driver` is bound to, from `drivers`.
fn address_of(drivers: &str, driver: &str) -> Result<String, String> {
    drivers
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() > 2 && w[1] == driver && w[2] != "FAILED")
        .map(|w| w[0].to_owned())
        .ok_or_else(|| format!("`drivers` does not show {driver} bound:\n{drivers}"))
}

/// `mem`'s frame and vector lines (the heap line moves with the console's own history).
fn resources(s: &mut Session<'_>) -> Result<(Vec<String>, Vec<String>), String> {
    let mem = command(s, "mem")?;
    let mem: Vec<String> = mem
        .lines()
        .filter(|l| l.starts_with("frames:") || l.starts_with("vectors:"))
        .map(str::to_owned)
        .collect();
    // `irqs`: vector, CPU, kind, count, owner: all but the count.
    let irqs = command(s, "irqs")?;
    let handlers: Vec<String> = irqs
        .lines()
        .filter(|l| l.starts_with("0x"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let mut kept: Vec<&str> = w.iter().take(3).copied().collect();
            kept.extend(w.iter().skip(4));
            kept.join(" ")
        })
        .collect();
    ensure!(mem.len() == 2, "`mem` lacks its frames or vectors line");
    ensure!(!handlers.is_empty(), "`irqs` lists no handler:\n{irqs}");
    Ok((mem, handlers))
}

fn console_script(s: &mut Session<'_>) -> Result<(), String> {
    s.expect("kernel ready", BOOT)?;
    let banner = s.expect(PROMPT, BOOT)?;
    let drivers = command(s, "drivers")?;
    let addresses: Vec<(&str, String)> = ["edu", "nvme", "virtio-blk", "virtio-net"]
        .iter()
        .map(|d| address_of(&drivers, d).map(|a| (*d, a)))
        .collect::<Result<_, _>>()?;
    // The banner before the first prompt names what `drivers` lists, and the disks.
    let bound = banner
        .lines()
        .find(|l| l.starts_with("Bound: "))
        .ok_or_else(|| format!("no `Bound:` line before the first prompt:\n{banner}"))?;
    for (driver, address) in &addresses {
        ensure!(
            bound.contains(&format!("{driver} at {address}")),
            "the banner does not name {driver} at {address}: {bound}"
        );
    }
    ensure!(
        banner.lines().any(|l| l.starts_with("Disks: ")
            && l.contains("nvme0n1")
            && l.contains("vda")
            && l.contains("`read ")),
        "no `Disks:` line naming nvme0n1 and vda:\n{banner}"
    );
    let at = |driver: &str| {
        addresses
            .iter()
            .find(|(d, _)| *d == driver)
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    };
    let baseline = resources(s)?;
    // (driver, point, the command that reaches it, what its output must say).
    let edu = at("edu");
    let cases: [(&str, &str, Vec<String>, &str); 6] = [
        (
            "edu",
            "probe",
            vec![format!("unbind {edu}"), format!("bind {edu}")],
            "panicked (panic at drivers/src/edu.rs:",
        ),
        ("edu", "handler", vec![format!("selftest {edu}")], ""),
        (
            "edu",
            "selftest",
            vec![format!("selftest {edu}")],
            "self test panicked (panic at drivers/src/edu.rs:",
        ),
        (
            "nvme",
            "command",
            vec!["nvme read 0".to_owned()],
            "command panicked (panic at drivers/src/nvme/",
        ),
        (
            "virtio-blk",
            "selftest",
            vec![format!("selftest {}", at("virtio-blk"))],
            "self test panicked (panic at drivers/src/virtio/blk.rs:",
        ),
        (
            "virtio-net",
            "handler",
            vec![format!("selftest {}", at("virtio-net"))],
            "",
        ),
    ];
    for (driver, point, commands, says) in cases {
        let address = at(driver);
        let armed = command(s, &format!("inject panic {address} {point}"))?;
        ensure!(
            armed.contains("armed"),
            "`inject panic {address} {point}`: {armed}"
        );
        let mut output = String::new();
        for c in &commands {
            output.push_str(&command(s, c)?);
        }
        ensure!(
            output.contains(says),
            "{driver} {point}: expected `{says}` in:\n{output}"
        );
        let during = match point {
            "probe" => "probe",
            "handler" => "interrupt handler",
            "selftest" => "self test",
            _ => "command",
        };
        let listed = command(s, "drivers")?;
        let want = format!("FAILED in {during}: panic at drivers/src/");
        ensure!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{address} {driver}")) && l.contains(&want)),
            "{driver} {point}: `drivers` does not list `{address} {driver} ... {want}`:\n{listed}"
        );
        let bound = command(s, &format!("bind {address}"))?;
        ensure!(
            bound.starts_with(&format!("{driver}: {address}: ")),
            "{driver} {point}: rebind: {bound}"
        );
        let tested = command(s, &format!("selftest {address}"))?;
        ensure!(
            !tested.starts_with("selftest:"),
            "{driver} {point}: self test after the rebind: {tested}"
        );
        let now = resources(s)?;
        ensure!(
            now == baseline,
            "{driver} {point}: not at baseline:\n{baseline:?}\n{now:?}"
        );
    }
    let listed = command(s, "drivers")?;
    ensure!(
        !listed.contains("FAILED"),
        "failed bindings left after every rebind:\n{listed}"
    );
    s.send_line("poweroff")?;
    s.wait_exit(Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn console_inject_and_rebind() {
    if !qemu_or_skip("console_inject_and_rebind") {
        return;
    }
    let (dir, nvme, blk) = disks("console");
    let InteractRun { outcome, result } = machine("log=warn", "qemu64", &nvme, &blk, false)
        .timeout(Duration::from_secs(240))
        .interact(console_script)
        .unwrap_or_else(|e| panic!("console_inject_and_rebind: cannot run QEMU: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "console_inject_and_rebind: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    check("console_inject_and_rebind", &outcome, |outcome, report| {
        result?;
        expect_exit(outcome, 0)?;
        if let Some(p) = &report.panic {
            return Err(format!(
                "kernel panicked at {}:{}:{}: {}",
                p.file, p.line, p.column, p.message
            ));
        }
        let contained = outcome
            .serial
            .matches("driver fault: panic at drivers/src/")
            .count();
        ensure!(
            contained == 6,
            "{contained} `driver fault` reports, expected 6"
        );
        Ok(())
    });
}
