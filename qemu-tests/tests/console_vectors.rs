//! The console's inputs under pressure.
//!
//! `console_input_survives_vector_exhaustion`: PVH on q35 with 40 NVMe controllers (null
//! block devices, 8 per PCI bridge) whose drivers ask for a vector per queue, more than the
//! 190 the allocator has. The console's vectors (COM1 receive, PS/2 keyboard) are taken
//! before any driver binds, so the prompt still answers typed commands: `mem` shows the
//! vectors used up, `irqs` lists both console handlers; `poweroff` ends the run.
//!
//! `console_without_keyboard_controller`: q35 with `i8042=off` (a board without a PS/2
//! controller, whose status port reads 0xFF). The kernel says so, does not wait for it, and
//! the console works on COM1 alone.
//!
//! Without `qemu-system-x86_64` the scenario prints `SKIPPED` and returns, unless `CI` is set.

use std::time::Duration;

use qemu_tests::{Machine, Qemu, Session, check, ensure, kernel_elf, qemu_or_skip};

const PROMPT: &str = "kernel> ";
const CONTROLLERS: usize = 40;
const PER_BRIDGE: usize = 8;

fn command(s: &mut Session<'_>, line: &str) -> Result<String, String> {
    s.send_line(line)?;
    let text = s
        .expect(PROMPT, Duration::from_secs(20))
        .map_err(|e| format!("`{line}`: {e}"))?;
    let text = text.strip_suffix(PROMPT).unwrap_or(&text);
    Ok(text
        .split_once('\n')
        .map(|(_, o)| o.to_owned())
        .unwrap_or_default())
}

#[test]
fn console_input_survives_vector_exhaustion() {
    let name = "console_input_survives_vector_exhaustion";
    if !qemu_or_skip(name) {
        return;
    }
    let mut args: Vec<String> = Vec::new();
    for b in 0..CONTROLLERS.div_ceil(PER_BRIDGE) {
        args.extend([
            "-device".into(),
            format!("pcie-pci-bridge,id=br{b},bus=pcie.0,addr={:#x}", 0x10 + b),
        ]);
    }
    for i in 0..CONTROLLERS {
        args.extend([
            "-blockdev".into(),
            format!("driver=null-co,node-name=null{i},size=1048576,read-zeroes=on"),
            "-device".into(),
            format!(
                "nvme,serial=exhaust{i},drive=null{i},bus=br{},addr={:#x}",
                i / PER_BRIDGE,
                1 + i % PER_BRIDGE
            ),
        ]);
    }
    let qemu = Qemu::kernel(kernel_elf(), "log=warn")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(&args)
        .timeout(Duration::from_secs(180));
    let run = qemu
        .interact(|s| {
            s.expect("kernel ready", Duration::from_secs(150))?;
            s.expect(PROMPT, Duration::from_secs(20))?;
            let mem = command(s, "mem")?;
            let irqs = command(s, "irqs")?;
            let at = s.elapsed();
            s.send_line("poweroff")?;
            s.wait_exit(Duration::from_secs(20))?;
            println!(
                "{name}: console answered {:.1} s after start",
                at.as_secs_f64()
            );
            Ok((mem, irqs))
        })
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    check(name, &run.outcome, |outcome, _| {
        let (mem, irqs) = run.result.as_ref().map_err(Clone::clone)?;
        ensure!(
            !outcome.serial.contains("console: no input"),
            "the console lost its input"
        );
        let free: usize = mem
            .lines()
            .find_map(|l| {
                l.strip_prefix("vectors: ")?
                    .strip_suffix(" free")?
                    .parse()
                    .ok()
            })
            .ok_or_else(|| format!("no `vectors: N free` in `mem`:\n{mem}"))?;
        ensure!(
            free < 5,
            "drivers left {free} vectors free: the scenario must use (nearly) all of them"
        );
        for handler in ["COM1 receive", "PS/2 keyboard"] {
            ensure!(irqs.contains(handler), "`irqs` lacks {handler}:\n{irqs}");
        }
        Ok(())
    });
}

#[test]
fn console_without_keyboard_controller() {
    let name = "console_without_keyboard_controller";
    if !qemu_or_skip(name) {
        return;
    }
    let qemu = Qemu::kernel(kernel_elf(), "")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(["-machine", "i8042=off"])
        .timeout(Duration::from_secs(60));
    let run = qemu
        .interact(|s| {
            s.expect("kernel ready", Duration::from_secs(40))?;
            s.expect(PROMPT, Duration::from_secs(10))?;
            let help = command(s, "help")?;
            s.send_line("poweroff")?;
            s.wait_exit(Duration::from_secs(20))?;
            Ok(help)
        })
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    check(name, &run.outcome, |outcome, _| {
        let help = run.result.as_ref().map_err(Clone::clone)?;
        ensure!(
            outcome
                .serial
                .contains("console: no keyboard input: no i8042 controller (status reads 0xff)"),
            "no line saying the controller is absent"
        );
        ensure!(
            outcome.serial.contains("Type `help` for commands on COM1."),
            "the console should say it reads COM1 only"
        );
        ensure!(help.contains("poweroff"), "`help` not answered:\n{help}");
        Ok(())
    });
}
