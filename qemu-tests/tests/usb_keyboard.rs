//! The console through a USB keyboard on an xHCI controller, on a machine without a PS/2
//! controller (`-machine q35,i8042=off`), so nothing typed can have come through PS/2.
//!
//! - `usb_keyboard_types_commands` (`qemu-xhci` with a `usb-kbd`, QMP): the boot log shows
//!   the xHCI driver bound with the keyboard found; keys sent with QMP `input-send-event` type
//!   `mex`, Backspace,
//!   `m`, Enter, and `mem` runs; `selftest <address of the controller>` typed with Shift for
//!   each `:` runs the driver's self test (a No Op command completed by interrupt); then, on
//!   the serial console, `drivers` shows reports and typed bytes counted and `irqs` a count
//!   above zero for the `xhci` handler.
//! - `usb_keyboard_behind_a_hub` (`qemu-xhci`, a `usb-hub` on root port 1, a `usb-tablet`
//!   on its port 1 and the `usb-kbd` on its port 2): the driver configures the hub, resets
//!   its connected ports and enumerates them with a route string; `mex`, Backspace, `m`,
//!   Enter typed on the keyboard runs `mem`, and `drivers` names the hub on its root port
//!   (QEMU's bus port 1 is the controller's port 5: its USB 3 ports come first), the tablet
//!   on port 5.1 and the keyboard on port 5.2.
//! - `xhci_without_devices` (`qemu-xhci` alone): the driver binds, reports no keyboard, and
//!   the console answers.
//!
//! How the keys provably come through the USB keyboard: `input-send-event`'s `device` names
//! a display, and the events go to the input devices bound to it. The `usb-kbd` is bound to
//! the VGA device `video0` (`display=video0`) and the keys are sent to `video0`; the machine
//! has no i8042 at all (the boot log must say so). `-parallel none` because QEMU 10.0 aborts
//! in that lookup when it meets the parallel port's text console.
//!
//! Without `qemu-system-x86_64` the scenarios print `SKIPPED` and return, unless `CI` is set.

use std::path::Path;
use std::time::{Duration, Instant};

use qemu_tests::{
    InteractRun, Machine, Qemu, Qmp, Session, check, ensure, expect_exit, kernel_elf, qemu_or_skip,
};
use serde_json::json;

const PROMPT: &str = "kernel> ";
const BOOT: Duration = Duration::from_secs(30);
const ANSWER: Duration = Duration::from_secs(10);
/// The display the USB keyboard is bound to.
const DISPLAY: &str = "video0";

/// Sends `line` and Enter on the serial port; the output up to the next prompt.
fn command(s: &mut Session<'_>, line: &str) -> Result<String, String> {
    s.send_line(line)?;
    let text = s
        .expect(PROMPT, ANSWER)
        .map_err(|e| format!("`{line}`: {e}"))?;
    Ok(text.strip_suffix(PROMPT).unwrap_or(&text).to_owned())
}

/// Presses and releases `key` (a QEMU qcode) on the USB keyboard, with `shift` held around
/// it when asked.
fn key(qmp: &mut Qmp, key: &str, shift: bool) -> Result<(), String> {
    let event = |qcode: &str, down: bool| json!({"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": qcode}}});
    let mut events = Vec::new();
    if shift {
        events.push(event("shift", true));
    }
    events.push(event(key, true));
    events.push(event(key, false));
    if shift {
        events.push(event("shift", false));
    }
    for e in events {
        qmp.execute(
            "input-send-event",
            Some(json!({"device": DISPLAY, "events": [e]})),
        )?;
        // The keyboard is polled every 8 ms: one report per event, none merged.
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Types `text` (lowercase letters, digits, `.`, `:`, space) and optionally more keys.
fn type_text(qmp: &mut Qmp, text: &str) -> Result<(), String> {
    for c in text.chars() {
        match c {
            'a'..='z' | '0'..='9' => key(qmp, &c.to_string(), false)?,
            '.' => key(qmp, "dot", false)?,
            ' ' => key(qmp, "spc", false)?,
            ':' => key(qmp, "semicolon", true)?,
            _ => return Err(format!("cannot type {c:?}")),
        }
    }
    Ok(())
}

/// Boots, checks the keyboard was found, types `mem` (with a Backspace) on it, and, when
/// `selftest` is set, `selftest <controller>`; then `drivers` and `irqs` from the serial
/// console.
fn keyboard_script(
    s: &mut Session<'_>,
    qmp_path: &Path,
    selftest: bool,
) -> Result<(String, String), String> {
    let boot = s.expect(PROMPT, BOOT)?;
    let bound = boot
        .lines()
        .find(|l| l.contains("bound xhci: "))
        .ok_or_else(|| format!("no `bound xhci` line at boot:\n{boot}"))?;
    ensure!(
        bound.contains("keyboard 0627:0001 on port"),
        "the xHCI driver found no keyboard: {bound}"
    );
    ensure!(
        boot.contains("no i8042 controller"),
        "the machine has a PS/2 controller after all:\n{boot}"
    );
    // The controller's address, from `bound xhci: 0000:00:03.0: ...`.
    let address = bound
        .split("bound xhci: ")
        .nth(1)
        .and_then(|rest| rest.split(": ").next())
        .ok_or_else(|| format!("no address in {bound}"))?
        .to_owned();
    let mut qmp = Qmp::connect(qmp_path, Instant::now() + Duration::from_secs(20))?;

    // `mex`, Backspace, `m`, Enter: `mem` runs.
    type_text(&mut qmp, "mex")?;
    key(&mut qmp, "backspace", false)?;
    type_text(&mut qmp, "m")?;
    key(&mut qmp, "ret", false)?;
    let mem = s
        .expect(PROMPT, ANSWER)
        .map_err(|e| format!("`mem` typed on the USB keyboard: {e}"))?;
    ensure!(
        mem.contains("frames: ") && mem.contains("heap: "),
        "`mem` typed on the USB keyboard did not run:\n{mem}"
    );

    if selftest {
        // Shift: `selftest 0000:00:03.0`.
        type_text(&mut qmp, &format!("selftest {address}"))?;
        key(&mut qmp, "ret", false)?;
        let selftest = s
            .expect(PROMPT, ANSWER)
            .map_err(|e| format!("`selftest` typed on the USB keyboard: {e}"))?;
        ensure!(
            selftest.contains("No Op command completed by interrupt"),
            "`selftest {address}` typed with Shift for `:` did not run the xHCI self test:\n{selftest}"
        );
    }

    let drivers = command(s, "drivers")?;
    let irqs = command(s, "irqs")?;
    s.send_line("poweroff")?;
    s.wait_exit(ANSWER)?;
    Ok((drivers, irqs))
}

/// The count in the `irqs` row of `owner`.
fn irq_count(irqs: &str, owner: &str) -> Option<u64> {
    irqs.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() >= 5 && w[4] == owner).then(|| w[3].parse().ok())?
    })
}

/// Boots with the VGA display, `qemu-xhci` and `usb` devices on it (the keyboard bound to
/// the display), runs [`keyboard_script`], and checks the `drivers` line of the controller
/// (counts moved, the keyboard running, then `more`) and the handler's interrupts.
fn boot_and_type(
    name: &str,
    usb: &[&str],
    selftest: bool,
    more: impl Fn(&str) -> Result<(), String>,
) {
    if !qemu_or_skip(name) {
        return;
    }
    let scratch = qemu_tests::unique_temp_dir("usb-keyboard");
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let qmp = scratch.join("qmp.sock");
    let mut args = vec![
        String::from("-parallel"),
        "none".into(),
        "-vga".into(),
        "none".into(),
        "-device".into(),
        format!("VGA,id={DISPLAY}"),
        "-device".into(),
        "qemu-xhci,id=xhci".into(),
    ];
    for device in usb {
        args.push("-device".into());
        args.push((*device).into());
    }
    args.push("-qmp".into());
    args.push(format!("unix:{},server=on,wait=off", qmp.display()));
    let InteractRun { outcome, result } = Qemu::kernel(kernel_elf(), "")
        .machine(Machine::Q35NoI8042)
        .memory_mib(256)
        .args(args)
        .timeout(Duration::from_secs(120))
        .interact(|s| keyboard_script(s, &qmp, selftest))
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "{name}: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    check(name, &outcome, |outcome, report| {
        let (drivers, irqs) = result?;
        expect_exit(outcome, 0)?;
        ensure!(report.panic.is_none(), "the kernel panicked");
        let line = drivers
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("xhci"))
            .ok_or_else(|| format!("`drivers` lists no xhci:\n{drivers}"))?;
        ensure!(
            !line.contains(" 0 report(s)") && !line.contains(" 0 byte(s) typed"),
            "`drivers` counts no reports or no bytes typed: {line}"
        );
        ensure!(!line.contains("stopped"), "the keyboard stopped: {line}");
        more(line)?;
        let count =
            irq_count(&irqs, "xhci").ok_or_else(|| format!("`irqs` has no xhci row:\n{irqs}"))?;
        ensure!(count > 0, "the xhci handler counted no interrupt:\n{irqs}");
        Ok(())
    });
}

#[test]
fn usb_keyboard_types_commands() {
    boot_and_type(
        "usb_keyboard_types_commands",
        &[&format!("usb-kbd,id=kbd,bus=xhci.0,display={DISPLAY}")],
        true,
        |_| Ok(()),
    );
}

#[test]
fn usb_keyboard_behind_a_hub() {
    boot_and_type(
        "usb_keyboard_behind_a_hub",
        &[
            "usb-hub,id=hub,bus=xhci.0,port=1",
            "usb-tablet,id=tablet,bus=xhci.0,port=1.1",
            &format!("usb-kbd,id=kbd,bus=xhci.0,port=1.2,display={DISPLAY}"),
        ],
        false,
        |line| {
            // QEMU's bus port 1 is the controller's first USB 2 port, whose number depends
            // on the order of the USB 2 and USB 3 ranges: taken from the hub's note.
            let root = line
                .split("; port ")
                .find_map(|note| note.split_once(": hub ").map(|(port, _)| port))
                .ok_or_else(|| format!("`drivers` names no hub: {line}"))?;
            ensure!(
                line.contains(&format!("keyboard 0627:0001 on port {root}.2 ")),
                "`drivers` does not name the keyboard's place behind the hub ({root}.2): {line}"
            );
            ensure!(
                line.contains(&format!("port {root}.1: device ")),
                "`drivers` does not name the tablet on port {root}.1: {line}"
            );
            Ok(())
        },
    );
}

#[test]
fn xhci_without_devices() {
    let name = "xhci_without_devices";
    if !qemu_or_skip(name) {
        return;
    }
    let InteractRun { outcome, result } = Qemu::kernel(kernel_elf(), "")
        .machine(Machine::Q35NoI8042)
        .memory_mib(256)
        .args(["-device", "qemu-xhci"])
        .timeout(Duration::from_secs(90))
        .interact(|s| {
            s.expect(PROMPT, BOOT)?;
            let drivers = command(s, "drivers")?;
            s.send_line("poweroff")?;
            s.wait_exit(ANSWER)?;
            Ok(drivers)
        })
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    println!(
        "{name}: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    check(name, &outcome, |outcome, report| {
        let drivers = result?;
        expect_exit(outcome, 0)?;
        ensure!(report.panic.is_none(), "the kernel panicked");
        let line = drivers
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("xhci"))
            .ok_or_else(|| format!("`drivers` lists no xhci:\n{drivers}"))?;
        ensure!(
            line.contains("no keyboard") && line.contains("8 ports"),
            "`drivers` line: {line}"
        );
        Ok(())
    });
}
