//! The console's machine-facing commands against independent truth, and the boot options
//! that change what the kernel says.
//!
//! - `console_pci_and_resources` (PVH on q35 with an `edu`, and an NVMe controller on a null
//!   block device behind a PCIe root port, QMP; command line `log=warn bogus=1 mystery`): both unknown words are
//!   warned about at boot; `lspci -nn` lists exactly the functions QEMU's `query-pci` reports,
//!   each with QEMU's class code and vendor:device IDs; `-t`, `-vt` and `-tv` draw the same
//!   tree; an unknown option gives the usage line; `irqs` shows CPU 0 for every handler (the
//!   one CPU); `lspci -v` shows edu's MSI enabled and NVMe's MSI-X enabled with QEMU's 65
//!   entries, each with its driver and exactly the vectors `irqs` lists for that driver;
//!   `-vv` adds where NVMe's MSI-X table and PBA are; the root port shows QEMU's bus numbers
//!   and a memory window that holds NVMe's BAR0 where QEMU decodes it;
//!   after `unbind` of edu its MSI reads `Enable-` and no driver, after `bind` `Enable+`
//!   again (read at the time of the command, not from the boot scan); `mem` shows the MMIO
//!   window and each claimed function with its driver, edu's claim gone while unbound;
//!   `selftest` of edu computes 10! by interrupt; every command given wrong arguments
//!   answers its `usage:` line.
//! - `console_log_debug` (`log=debug`, an `edu`): the boot log shows edu's claim, its BAR
//!   mapping, the vector allocated, the MSI message and the handler, and no `TRACE` line.
//! - `pci_hold_ends_without_a_runner` (`test=pci`, nobody quitting QEMU): after `PCI HOLD`
//!   the kernel says that no runner quit QEMU and exits with the suite's result (33).
//!
//! Without `qemu-system-x86_64` the scenarios print `SKIPPED` and return, unless `CI` is set.

use std::path::Path;
use std::time::{Duration, Instant};

use qemu_tests::{
    InteractRun, Machine, Qemu, Qmp, Session, check, ensure, expect_exit, kernel_elf, qemu_or_skip,
};

const PROMPT: &str = "kernel> ";
const BOOT: Duration = Duration::from_secs(60);
const ANSWER: Duration = Duration::from_secs(20);

/// Sends `line` and Enter; the output up to the next prompt, without the echoed line.
fn command(s: &mut Session<'_>, line: &str) -> Result<String, String> {
    s.send_line(line)?;
    let text = s
        .expect(PROMPT, ANSWER)
        .map_err(|e| format!("`{line}`: {e}"))?;
    let text = text.strip_suffix(PROMPT).unwrap_or(&text);
    Ok(text
        .split_once('\n')
        .map(|(_, o)| o.to_owned())
        .unwrap_or_default())
}

/// The `lspci -v` block of the function at `bb:dd.f`.
fn block<'a>(verbose: &'a str, address: &str) -> Result<&'a str, String> {
    verbose
        .split("\n\n")
        .map(|b| b.trim_start_matches('\n'))
        .find(|b| b.starts_with(address))
        .ok_or_else(|| format!("`lspci -v` has no block for {address}:\n{verbose}"))
}

/// The vectors in a block's `Vectors held: cpu0 0x.. 0x..` line, sorted.
fn held(block: &str) -> Vec<String> {
    let mut v: Vec<String> = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("Vectors held:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter(|w| w.starts_with("0x"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `irqs` rows as (vector, cpu, owner).
fn irq_rows(irqs: &str) -> Vec<(String, String, String)> {
    irqs.lines()
        .filter(|l| l.starts_with("0x"))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 5).then(|| (w[0].to_owned(), w[1].to_owned(), w[4..].join(" ")))
        })
        .collect()
}

/// The vectors `irqs` lists for owners starting with `owner`, sorted.
fn vectors_of(rows: &[(String, String, String)], owner: &str) -> Vec<String> {
    let mut v: Vec<String> = rows
        .iter()
        .filter(|(_, _, o)| o.starts_with(owner))
        .map(|(v, _, _)| v.clone())
        .collect();
    v.sort();
    v
}

fn pci_script(s: &mut Session<'_>, qmp_path: &Path) -> Result<(), String> {
    let boot = s.expect("kernel ready", BOOT)?;
    for word in ["bogus", "mystery"] {
        ensure!(
            boot.lines().any(|l| l.contains(" WARN ")
                && l.contains(&format!("unknown command-line option '{word}'"))),
            "no warning about the unknown option `{word}` at log=warn:\n{boot}"
        );
    }
    s.expect(PROMPT, BOOT)?;
    let mut qmp = Qmp::connect(qmp_path, Instant::now() + Duration::from_secs(60))?;
    let qemu = qmp.query_pci()?;

    // lspci -nn against QEMU's own view.
    let nn = command(s, "lspci -nn")?;
    ensure!(
        nn.lines().count() == qemu.len(),
        "`lspci -nn` lists {} functions, QEMU {}:\n{nn}",
        nn.lines().count(),
        qemu.len()
    );
    for f in &qemu {
        let a = f.address;
        let at = format!("{:02x}:{:02x}.{} ", a.bus, a.device, a.function);
        let line = nn
            .lines()
            .find(|l| l.starts_with(&at))
            .ok_or_else(|| format!("`lspci -nn` has no line for {at}(QEMU has it):\n{nn}"))?;
        let class = format!("[{:04x}]: ", f.class);
        let ids = format!("[{:04x}:{:04x}]", f.vendor, f.device);
        ensure!(
            line.contains(&class) && line.contains(&ids),
            "`lspci -nn` line for {at}lacks QEMU's class {class}or IDs {ids}: {line:?}"
        );
    }
    let edu = qemu
        .iter()
        .find(|f| (f.vendor, f.device) == (0x1234, 0x11e8))
        .map(|f| f.address)
        .ok_or("QEMU reports no edu")?;
    let nvme = qemu
        .iter()
        .find(|f| (f.vendor, f.device) == (0x1b36, 0x0010))
        .map(|f| f.address)
        .ok_or("QEMU reports no NVMe")?;
    let short =
        |a: qemu_tests::pci::PciAddress| format!("{:02x}:{:02x}.{}", a.bus, a.device, a.function);
    let full = |a: qemu_tests::pci::PciAddress| format!("0000:{}", short(a));
    let (edu_at, nvme_at) = (short(edu), short(nvme));

    let tree = command(s, "lspci -t")?;
    ensure!(tree.starts_with("-[0000:00]"), "`lspci -t`:\n{tree}");
    for combined in ["lspci -vt", "lspci -tv", "lspci -t -v"] {
        let other = command(s, combined)?;
        ensure!(
            other == tree,
            "`{combined}` differs from `lspci -t`:\n{other}"
        );
    }
    let bad = command(s, "lspci -x")?;
    ensure!(
        bad.contains("lspci: unknown option -x") && bad.contains("usage: lspci [-t] [-v|-vv]"),
        "`lspci -x` does not give the usage line:\n{bad}"
    );

    // irqs: the real CPU of each handler, and which vectors each driver has.
    let rows = irq_rows(&command(s, "irqs")?);
    ensure!(!rows.is_empty(), "`irqs` lists no handler");
    ensure!(
        rows.iter().all(|(_, cpu, _)| cpu == "0"),
        "`irqs` shows a CPU other than 0 on a one-CPU machine: {rows:?}"
    );
    let (edu_vectors, nvme_vectors) = (vectors_of(&rows, "edu"), vectors_of(&rows, "nvme"));
    ensure!(
        edu_vectors.len() == 1 && nvme_vectors.len() >= 2,
        "`irqs` should show one edu vector and NVMe's admin and I/O vectors: {rows:?}"
    );

    let verbose = command(s, "lspci -v")?;
    let e = block(&verbose, &edu_at)?;
    ensure!(
        e.contains("\n\tCapabilities: [40] MSI: Enable+ Count=1/1 Maskable- 64bit+")
            && e.contains("\n\tKernel driver in use: edu")
            && held(e) == edu_vectors,
        "edu's `lspci -v` block does not show MSI on, its driver and vectors {edu_vectors:?}:\n{e}"
    );
    let n = block(&verbose, &nvme_at)?;
    ensure!(
        n.contains("MSI-X: Enable+ Count=65 Masked-")
            && n.contains("\n\tKernel driver in use: nvme")
            && held(n) == nvme_vectors,
        "NVMe's `lspci -v` block does not show MSI-X on with 65 entries, its driver and vectors {nvme_vectors:?}:\n{n}"
    );
    ensure!(
        n.contains("(prog-if 02 [NVM Express])") && n.contains("\n\tMemory at "),
        "NVMe's `lspci -v` block lacks its prog-if or BAR:\n{n}"
    );
    // -vv: where NVMe's MSI-X table and PBA are (QEMU puts them at 0x2000 and 0x3000 of
    // BAR0).
    let vv = command(s, "lspci -vv")?;
    let n = block(&vv, &nvme_at)?;
    ensure!(
        n.contains("\n\t\tVector table: BAR=0 offset=00002000\n\t\tPBA: BAR=0 offset=00003000"),
        "NVMe's `lspci -vv` block does not locate its MSI-X table and PBA:\n{n}"
    );
    ensure!(
        verbose.lines().filter(|l| l.is_empty()).count() == qemu.len(),
        "`lspci -v` does not end each of {} blocks with one blank line:\n{verbose}",
        qemu.len()
    );

    // The root port the NVMe sits behind: its buses as QEMU has them, and a memory window
    // that holds the NVMe's BAR0 where QEMU decodes it.
    let port = qemu
        .iter()
        .find(|f| (f.vendor, f.device) == (0x1b36, 0x000c))
        .ok_or("QEMU reports no root port")?;
    let buses = port
        .bridge
        .ok_or("QEMU reports no buses for the root port")?;
    let p = block(&verbose, &short(port.address))?;
    let bus_line = format!(
        "\n\tBus: primary={:02x}, secondary={:02x}, subordinate={:02x},",
        buses.primary, buses.secondary, buses.subordinate
    );
    ensure!(
        p.contains(&bus_line) && p.contains("Express (v2) Root Port (Slot+)"),
        "the root port's block lacks `{}` or its Express type:\n{p}",
        bus_line.trim()
    );
    let bar0 = qemu
        .iter()
        .find(|f| f.address == nvme)
        .and_then(|f| f.bars.iter().find(|b| b.slot == 0))
        .and_then(|b| b.address)
        .ok_or("QEMU reports no address for NVMe's BAR0")?;
    let window = p
        .lines()
        .find_map(|l| l.trim().strip_prefix("Memory behind bridge: "))
        .and_then(|w| w.split_whitespace().next()?.split_once('-'))
        .and_then(|(b, l)| {
            Some((
                u64::from_str_radix(b, 16).ok()?,
                u64::from_str_radix(l, 16).ok()?,
            ))
        })
        .ok_or_else(|| format!("the root port's block has no memory window:\n{p}"))?;
    ensure!(
        window.0 <= bar0 && bar0 <= window.1,
        "NVMe's BAR0 at {bar0:#x} (QEMU) is outside the root port's window {window:x?}:\n{p}"
    );

    let mem = command(s, "mem")?;
    for wanted in [
        "mmio window: 0x".to_owned(),
        format!("claimed: {} by edu", full(edu)),
        format!("claimed: {} by nvme", full(nvme)),
    ] {
        ensure!(mem.contains(&wanted), "`mem` lacks `{wanted}`:\n{mem}");
    }

    // MSI state read now: off after unbind, on again after bind.
    let unbound = command(s, &format!("unbind {}", full(edu)))?;
    ensure!(unbound.contains("unbound"), "`unbind`: {unbound}");
    let e = command(s, "lspci -v")?;
    let e = block(&e, &edu_at)?;
    ensure!(
        e.contains("MSI: Enable- Count=1/1") && !e.contains("Kernel driver"),
        "after `unbind` edu's block still shows MSI on or a driver:\n{e}"
    );
    let mem = command(s, "mem")?;
    ensure!(
        !mem.contains(&format!("claimed: {}", full(edu))),
        "`mem` still shows edu claimed after `unbind`:\n{mem}"
    );
    let bound = command(s, &format!("bind {edu_at}"))?;
    ensure!(bound.contains("edu"), "`bind {edu_at}`: {bound}");
    let e = command(s, "lspci -v")?;
    let e = block(&e, &edu_at)?;
    ensure!(
        e.contains("MSI: Enable+ Count=1/1") && e.contains("Kernel driver in use: edu"),
        "after `bind` edu's block does not show MSI on and its driver:\n{e}"
    );

    // selftest with its one argument: the edu computes 10! (3628800) by interrupt.
    let tested = command(s, &format!("selftest {edu_at}"))?;
    ensure!(
        tested.contains("10! = 3628800 by interrupt"),
        "`selftest {edu_at}`: {tested}"
    );

    // Usage errors.
    for (line, usage) in [
        ("bind", "usage: bind <address>"),
        ("bind nowhere", "usage: bind <address>"),
        ("unbind", "usage: unbind <address>"),
        ("selftest 00:01.0 extra", "usage: selftest <address>"),
        ("mem now", "usage: mem"),
        ("irqs -a", "usage: irqs"),
        ("help me", "usage: help"),
        (
            "inject",
            "usage: inject panic <address> <probe|handler|selftest|command> | leak <address>",
        ),
        ("nvme", "usage: nvme read <lba> [nsid]"),
        ("reboot now", "usage: reboot"),
    ] {
        let out = command(s, line)?;
        ensure!(
            out.lines().any(|l| l.trim() == usage),
            "`{line}` does not answer `{usage}`:\n{out}"
        );
    }
    s.send_line("poweroff")?;
    s.wait_exit(ANSWER)?;
    Ok(())
}

#[test]
fn console_pci_and_resources() {
    let name = "console_pci_and_resources";
    if !qemu_or_skip(name) {
        return;
    }
    let scratch = qemu_tests::unique_temp_dir("console-pci");
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let qmp = scratch.join("qmp.sock");
    let InteractRun { outcome, result } = Qemu::kernel(kernel_elf(), "log=warn bogus=1 mystery")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args([
            "-device",
            "edu",
            "-blockdev",
            "driver=null-co,node-name=null0,size=1048576,read-zeroes=on",
            "-device",
            "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1",
            "-device",
            "nvme,serial=lspci,drive=null0,bus=rp1",
            "-qmp",
            &format!("unix:{},server=on,wait=off", qmp.display()),
        ])
        .timeout(Duration::from_secs(300))
        .interact(|s| pci_script(s, &qmp))
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "{name}: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    check(name, &outcome, |outcome, report| {
        result?;
        expect_exit(outcome, 0)?;
        ensure!(report.panic.is_none(), "the kernel panicked");
        Ok(())
    });
}

#[test]
fn console_log_debug() {
    let name = "console_log_debug";
    if !qemu_or_skip(name) {
        return;
    }
    let InteractRun { outcome, result } = Qemu::kernel(kernel_elf(), "log=debug")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(["-device", "edu"])
        .timeout(Duration::from_secs(300))
        .interact(|s| {
            s.expect(PROMPT, BOOT)?;
            let drivers = command(s, "drivers")?;
            s.send_line("poweroff")?;
            s.wait_exit(ANSWER)?;
            Ok(drivers)
        })
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    check(name, &outcome, |outcome, _| {
        let drivers = result?;
        expect_exit(outcome, 0)?;
        let edu = drivers
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("edu"))
            .and_then(|l| l.split_whitespace().next())
            .ok_or_else(|| format!("`drivers` shows no edu:\n{drivers}"))?;
        let log = &outcome.serial;
        let debug: Vec<&str> = log.lines().filter(|l| l.contains(" DEBUG ")).collect();
        for wanted in [
            format!("pci: {edu} claimed"),
            format!("pci: {edu} BAR0+0x0: 0x"),
            "vector(s) allocated: ".to_owned(),
            "irq: MSI/MSI-X message for CPU 0".to_owned(),
            "irq: edu: MSI handler on CPU 0 vector ".to_owned(),
        ] {
            ensure!(
                debug.iter().any(|l| l.contains(&wanted)),
                "no DEBUG line with `{wanted}` at log=debug"
            );
        }
        ensure!(!log.contains(" TRACE "), "TRACE lines appear at log=debug");
        Ok(())
    });
}

#[test]
fn pci_hold_ends_without_a_runner() {
    let name = "pci_hold_ends_without_a_runner";
    if !qemu_or_skip(name) {
        return;
    }
    let outcome = Qemu::kernel(kernel_elf(), "test=pci")
        .machine(Machine::Q35)
        .memory_mib(512)
        .timeout(Duration::from_secs(240))
        .run()
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    println!(
        "{name}: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    check(name, &outcome, |outcome, _| {
        let log = &outcome.serial;
        let hold = log
            .find("\nPCI HOLD")
            .ok_or("the kernel never printed `PCI HOLD`")?;
        ensure!(
            log[hold..]
                .contains("test=pci: no test runner quit QEMU within 30 s of PCI HOLD; exiting"),
            "no line saying the hold ended"
        );
        ensure!(
            outcome.success(),
            "QEMU did not exit with the suite's success after the hold: {}",
            outcome.describe_exit()
        );
        Ok(())
    });
}
