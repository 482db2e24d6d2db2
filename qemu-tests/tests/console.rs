//! Serial console scenarios: the runner types on COM1 (QEMU's stdin, `-serial stdio`) and
//! reads the answers ([`Qemu::interact`]).
//!
//! Booted without `test=`, the kernel prints its boot summary, `kernel ready`, then the prompt
//! `kernel> ` and reads lines from COM1's receive interrupt (echo, Backspace/Delete, Ctrl-U).
//! Both scenarios boot PVH on q35 with 512 MiB, an `edu` device and the command line
//! `log=warn` (few log lines to interleave with the console):
//!
//! - `console_commands`: `help` lists the commands; `lspci` shows the edu device and the q35
//!   host bridge in pciutils' form (`bb:dd.f class: vendor device`), `lspci -nn` with
//!   `[class]` and `[vendor:device]`, `lspci -D` with the domain; `lspci -t` draws the tree
//!   from `-[0000:00]`; `irqs` shows the console's own `COM1 receive` handler (typed after a
//!   line erased with Ctrl-U); `xyz`, three Backspaces, `mem` runs `mem`; an unknown command
//!   says so; `poweroff` says `powering off` and (ACPI S5) makes QEMU exit with status 0
//!   within 10 s.
//! - `console_reboot`: without `-no-reboot`, `reboot` says `rebooting`, resets the machine,
//!   the kernel boots again (a second `kernel ready`), and `poweroff` ends the run.
//!
//! More console scenarios: `console_edit.rs` (line editing, history, a pasted burst),
//! `console_pci.rs` (`lspci` against QEMU's `query-pci`, live MSI state, `irqs`, `mem`, usage
//! errors, command-line warnings, `log=debug`, `test=pci` by hand).
//!
//! Without `qemu-system-x86_64` the scenarios print `SKIPPED` and return, unless `CI` is set.

use qemu_tests::fnv1a;
use std::time::Duration;

use qemu_tests::{
    InteractRun, Machine, Qemu, Report, Session, check, ensure, expect_exit, kernel_elf,
    qemu_or_skip,
};

/// The console's prompt.
const PROMPT: &str = "kernel> ";
/// From QEMU's start to the first prompt.
const BOOT: Duration = Duration::from_secs(30);
/// From sending a command to the next prompt.
const ANSWER: Duration = Duration::from_secs(10);
/// From `poweroff` to QEMU's exit.
const POWEROFF: Duration = Duration::from_secs(10);
/// The whole run.
const RUN: Duration = Duration::from_secs(120);

fn console_vm(reboot: bool) -> Qemu {
    Qemu::kernel(kernel_elf(), "log=warn")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(["-device", "edu"])
        .timeout(RUN)
        .no_reboot(!reboot)
}

/// Sends `line` and Enter, waits for the next prompt, and returns the command's output: what
/// came after the echoed line, without the final prompt.
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

/// Waits for `kernel ready` and the first prompt after it.
fn boot(s: &mut Session<'_>) -> Result<(), String> {
    s.expect("kernel ready", BOOT)?;
    s.expect(PROMPT, BOOT)?;
    Ok(())
}

/// Whether `line` looks like `bb:dd.f ...` (hex digits), or `ssss:bb:dd.f ...` with
/// `domain`.
fn starts_with_address(line: &str, domain: bool) -> bool {
    let b = line.as_bytes();
    let b = if domain {
        if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_hexdigit) || b[4] != b':' {
            return false;
        }
        &b[5..]
    } else {
        b
    };
    b.len() > 8
        && [0, 1, 3, 4, 6].iter().all(|&i| b[i].is_ascii_hexdigit())
        && b[2] == b':'
        && b[5] == b'.'
        && b[7] == b' '
}

/// The `lspci -nn` line for vendor:device `id` (e.g. `1234:11e8`), checked for the pciutils
/// shape and the class code `[class]`.
fn lspci_line<'a>(listing: &'a str, id: &str, class: &str, what: &str) -> Result<&'a str, String> {
    let tag = format!("[{id}]");
    let line = listing
        .lines()
        .map(str::trim)
        .find(|l| l.contains(&tag))
        .ok_or_else(|| format!("`lspci -nn` does not list the {what} {tag}:\n{listing}"))?;
    ensure!(
        starts_with_address(line, false),
        "`lspci -nn` line of the {what} does not start with bb:dd.f: {line:?}"
    );
    ensure!(
        line.contains(&format!("[{class}]:")),
        "`lspci` line of the {what} lacks its class code [{class}]: {line:?}"
    );
    Ok(line)
}

fn console_script(s: &mut Session<'_>) -> Result<(), String> {
    boot(s)?;

    let help = command(s, "help")?;
    let listed: Vec<&str> = help
        .lines()
        .filter_map(|l| l.split(|c: char| !c.is_ascii_alphanumeric()).next())
        .filter(|w| !w.is_empty())
        .collect();
    for wanted in ["help", "lspci", "irqs", "mem", "reboot", "poweroff"] {
        ensure!(
            listed.contains(&wanted),
            "`help` does not list `{wanted}` at the start of a line:\n{help}"
        );
    }

    let lspci = command(s, "lspci")?;
    for (what, text) in [
        (
            "edu device",
            "Unclassified device: Technical Corp. QEMU edu device (rev 10)",
        ),
        (
            "q35 host bridge",
            "Host bridge: Intel Corporation 82G33/G31/P35/P31 Express DRAM Controller",
        ),
    ] {
        ensure!(
            lspci
                .lines()
                .any(|l| starts_with_address(l, false) && l.ends_with(text)),
            "`lspci` has no line `bb:dd.f {text}` for the {what}:\n{lspci}"
        );
    }
    ensure!(
        !lspci.contains("[1234:11e8]"),
        "plain `lspci` shows numbers (only -n/-nn do):\n{lspci}"
    );
    let nn = command(s, "lspci -nn")?;
    lspci_line(&nn, "1234:11e8", "00ff", "edu device")?;
    lspci_line(&nn, "8086:29c0", "0600", "q35 host bridge")?;
    let domains = command(s, "lspci -D")?;
    ensure!(
        domains.lines().count() == lspci.lines().count()
            && domains.lines().all(|l| starts_with_address(l, true)),
        "`lspci -D` does not show the domain on every line:\n{domains}"
    );

    let tree = command(s, "lspci -t")?;
    ensure!(
        tree.contains("-[0000:00]"),
        "`lspci -t` has no root bus `-[0000:00]`:\n{tree}"
    );

    // A line erased with Ctrl-U, then `irqs`.
    s.send("nonsense\x15")?;
    let irqs = command(s, "irqs")?;
    ensure!(
        !irqs.contains("unknown command"),
        "Ctrl-U did not erase the line before `irqs`:\n{irqs}"
    );
    ensure!(
        irqs.contains("COM1 receive"),
        "`irqs` does not show the console's `COM1 receive` interrupt:\n{irqs}"
    );

    // `xyz`, three Backspaces (DEL, as terminals send it), `mem`: must run `mem`.
    s.send("xyz\x7f\x7f\x7f")?;
    let mem = command(s, "mem")?;
    ensure!(
        !mem.contains("unknown command"),
        "Backspace did not erase `xyz` before `mem`:\n{mem}"
    );
    ensure!(
        mem.contains("heap"),
        "`mem` does not mention the heap:\n{mem}"
    );

    let unknown = command(s, "frobnicate")?;
    ensure!(
        unknown
            .lines()
            .any(|l| l.trim_start().starts_with("unknown command:")),
        "an unknown command gives no `unknown command:` line:\n{unknown}"
    );

    s.send_line("poweroff")?;
    s.expect("powering off", ANSWER)
        .map_err(|e| format!("`poweroff` does not say so: {e}"))?;
    let code = s
        .wait_exit(POWEROFF)
        .map_err(|e| format!("after `poweroff`: {e}"))?;
    ensure!(
        code == Some(0),
        "after `poweroff` QEMU exited with {code:?}, expected Some(0) (ACPI S5)"
    );
    Ok(())
}

fn reboot_script(s: &mut Session<'_>) -> Result<(), String> {
    boot(s)?;
    s.send_line("reboot")?;
    let said = s
        .expect("kernel ready", BOOT)
        .map_err(|e| format!("no second boot after `reboot`: {e}"))?;
    ensure!(
        said.lines().any(|l| l.trim() == "rebooting"),
        "`reboot` did not say `rebooting` before the machine reset:\n{said}"
    );
    s.expect(PROMPT, BOOT)?;
    s.send_line("poweroff")?;
    let code = s
        .wait_exit(POWEROFF)
        .map_err(|e| format!("after `poweroff`: {e}"))?;
    ensure!(
        code == Some(0),
        "after `poweroff` QEMU exited with {code:?}, expected Some(0) (ACPI S5)"
    );
    Ok(())
}

/// Runs `script` on a console VM and checks the run: the script's result, QEMU's exit code 0,
/// no panic or CPU exception, `kernel ready` at least `boots` times.
#[track_caller]
fn scenario(
    name: &str,
    reboot: bool,
    boots: usize,
    script: impl FnOnce(&mut Session<'_>) -> Result<(), String>,
) {
    let InteractRun { outcome, result } = console_vm(reboot)
        .interact(script)
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    println!(
        "{name}: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    check(name, &outcome, |outcome, report: &Report| {
        result?;
        expect_exit(outcome, 0)?;
        if let Some(p) = &report.panic {
            return Err(format!(
                "kernel panicked at {}:{}:{}: {}",
                p.file, p.line, p.column, p.message
            ));
        }
        if let Some(e) = report.exceptions.first() {
            return Err(format!("CPU exception: {}", e.line));
        }
        let ready = outcome.serial.matches("kernel ready").count();
        ensure!(
            ready >= boots,
            "`kernel ready` appeared {ready} times, expected {boots}"
        );
        Ok(())
    });
}

#[test]
fn console_commands() {
    if !qemu_or_skip("console_commands") {
        return;
    }
    scenario("console_commands", false, 1, console_script);
}

#[test]
fn console_reboot() {
    if !qemu_or_skip("console_reboot") {
        return;
    }
    scenario("console_reboot", true, 2, reboot_script);
}

/// `drivers` lists the NVMe controller bound at boot, and `nvme read <lba>` reads blocks
/// through it that match the disk image this runner wrote.
#[test]
fn console_nvme_read() {
    if !qemu_or_skip("console_nvme_read") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("qemu-tests-console-nvme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let image = dir.join("disk.img");
    let token = qemu_tests::random_token();
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| {
            (i.wrapping_mul(2_246_822_519) >> 11) as u8 ^ token.as_bytes()[i as usize % token.len()]
        })
        .collect();
    std::fs::write(&image, &data).expect("disk image");
    let drive = format!("if=none,id=nvm,format=raw,file={}", image.display());
    let serial = format!("nvme,serial={token},drive=nvm");
    let expected: Vec<(u64, u64)> = [0u64, 1, 777, 2047]
        .iter()
        .map(|&lba| {
            (
                lba,
                fnv1a(&data[lba as usize * 512..lba as usize * 512 + 512]),
            )
        })
        .collect();
    let InteractRun { outcome, result } = console_vm(false)
        .args(["-drive", &drive, "-device", &serial])
        .interact(|s| {
            boot(s)?;
            let drivers = command(s, "drivers")?;
            ensure!(
                drivers.contains("nvme") && drivers.contains(&token),
                "`drivers` does not show the NVMe with serial {token}:\n{drivers}"
            );
            for (lba, hash) in &expected {
                let out = command(s, &format!("nvme read {lba}"))?;
                let want = format!("LBA {lba} (512 bytes) fnv1a={hash:016x}");
                ensure!(
                    out.contains(&want),
                    "`nvme read {lba}`: expected `{want}`, got:\n{out}"
                );
            }
            s.send_line("poweroff")?;
            s.wait_exit(POWEROFF)?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("console_nvme_read: cannot run QEMU: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    check("console_nvme_read", &outcome, |outcome, _| {
        result?;
        expect_exit(outcome, 0)?;
        Ok(())
    });
}
