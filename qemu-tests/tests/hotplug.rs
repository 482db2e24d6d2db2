//! PCI Express native hot-plug scenarios: devices added with QMP `device_add` into free
//! `pcie-root-port`s and into a switch downstream port (`x3130-upstream` +
//! `xio3130-downstream`), bound by the kernel, exercised, then removed with `device_del`
//! (QEMU presses the slot's attention button; the removal completes only when the kernel
//! powers the slot off).
//!
//! QEMU's own view is the independent truth: the `DEVICE_DELETED` event says the removal
//! completed, `query-pci` says where the device is and which BAR addresses it decodes. The
//! kernel's side is read off its console: the hot-plug log lines, `selftest`, and
//! `pciehp resources` (vectors, frames, heap, MMIO window, handlers, claims, INTx users and
//! known functions), which must equal the baseline taken before the first `device_add`
//! after every removal.
//!
//! QEMU is run with `-global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off`: q35's
//! default hands hot-plug of root ports to ACPI (presence detect stays clear), and the kernel
//! has no ACPI hot-plug (it evaluates no `_OSC`; see docs/hotplug.md).
//!
//! - `hotplug_cycles`: the spec's 5 s attention-button window once (edu: the removal takes
//!   at least 5 s, the BAR QEMU decodes is the one the kernel assigned, `lspci -t` shows
//!   slot 1 powered with the edu below it, then powered off and empty); then, with
//!   `pciehp delay 0`, edu, NVMe, virtio-blk and virtio-net in turn, alternating between a
//!   root port and the switch's downstream port, for about a minute; then an NVMe removed
//!   while `nvme read` commands keep coming (1 s window), after which the console answers,
//!   the NVMe is added again and binds; then that NVMe vanishes under its driver (`pciehp
//!   cut 1`: the slot's power is cut with the driver bound, which QEMU shows as a device that
//!   no longer answers), the kernel notices, unbinds it in well under the controller's 7.5 s
//!   shutdown timeout, powers the slot off (QEMU deletes the device), every counter is at
//!   baseline, and a new NVMe binds; that one dies without an event (`pciehp cut 1 quiet`),
//!   the next `nvme read` fails within a second saying the controller stopped answering,
//!   and `device_del` removes it with every counter at baseline; last, an edu whose driver
//!   leaks its state at unbinding (`inject leak`) stays claimed after its removal, and its
//!   slot refuses the next card (no BAR placed, slot powered off) while the other slot still
//!   binds one. Prints cycles per second.
//! - `hotplug_x2apic`: `-cpu max` (x2APIC mode), one cycle of each device type.
//!
//! A surprise removal proper (a card pulled without a button press, Presence Detect
//! cleared) cannot be produced with QEMU's PCIe ports: `device_del` always goes through the
//! attention button (or, for a slot the guest powered off, removes a device the guest can no
//! longer see). The vanishing card of `pciehp cut` stands in for it here; the presence-lost
//! transition itself is host-tested (`pci::hotplug` state machine, `pci/tests/vanish.rs`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use qemu_tests::{
    InteractRun, Machine, Qemu, Qmp, Session, check, ensure, kernel_elf, qemu_or_skip,
    unique_temp_dir,
};

const PROMPT: &str = "kernel> ";
const BOOT: Duration = Duration::from_secs(60);
const ANSWER: Duration = Duration::from_secs(20);
/// How long the cycle phase runs, and how many rounds at most: a minute by default
/// (`HOTPLUG_CYCLE_SECONDS` changes it), or, with `HOTPLUG_CYCLES=<n>`, until every device type
/// has been added and removed `n` times in a root port and `n` times in the switch's
/// downstream port, however long that takes.
fn cycle_plan() -> (Duration, usize) {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    if let Some(n) = var("HOTPLUG_CYCLES") {
        return (Duration::MAX, 2 * n as usize);
    }
    (
        Duration::from_secs(var("HOTPLUG_CYCLE_SECONDS").unwrap_or(60)),
        usize::MAX,
    )
}

/// How long one machine may run: a `HOTPLUG_CYCLES` run may take hours; the default one
/// about three minutes.
fn run_time() -> Duration {
    if std::env::var_os("HOTPLUG_CYCLES").is_some() {
        Duration::from_secs(6 * 3600)
    } else {
        Duration::from_secs(600)
    }
}

/// A port devices are hot-added into: its QEMU id and its Physical Slot Number.
#[derive(Clone, Copy)]
struct Port {
    id: &'static str,
    slot: u16,
}

const ROOT_PORT: Port = Port { id: "rp1", slot: 1 };
const DOWNSTREAM_PORT: Port = Port { id: "dp1", slot: 3 };

/// The machine: two free hot-plug ports (a root port, and a downstream port of a switch in
/// a second root port), block backends for the NVMe and virtio-blk, a user-mode network.
fn machine(scratch: &std::path::Path, cpu: &str) -> (Qemu, PathBuf) {
    machine_with(scratch, cpu, true)
}

/// The machine; `native`: with q35's ACPI hot-plug of root ports turned off, so its `_OSC`
/// grants native hot-plug.
fn machine_with(scratch: &std::path::Path, cpu: &str, native: bool) -> (Qemu, PathBuf) {
    machine_full(scratch, cpu, native, Unit::None)
}

/// Which of QEMU's remapping units the machine has, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    None,
    /// `intel-iommu`, with its trace of refused requests (`vtd_dmar_fault`) on stderr.
    Vtd,
    /// `amd-iommu,pt=off` (without `pt=off` QEMU 10's model lets emulated devices bypass
    /// it). Cards hot-plugged behind a root port reach it with their real requester IDs:
    /// QEMU numbers their address space when they arrive, after the kernel numbered the
    /// buses.
    Amd,
}

/// The machine, behind `unit`.
fn machine_full(scratch: &std::path::Path, cpu: &str, native: bool, unit: Unit) -> (Qemu, PathBuf) {
    std::fs::create_dir_all(scratch).expect("scratch directory");
    let qmp = scratch.join("qmp.sock");
    let disk = |name: &str| {
        let path = scratch.join(name);
        let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, data).expect("disk image");
        path
    };
    let nvme = disk("nvme.img");
    let blk = disk("blk.img");
    let mut qemu = Qemu::kernel(kernel_elf(), "log=info")
        .machine(Machine::Q35)
        .memory_mib(512)
        .timeout(run_time());
    match unit {
        Unit::None => {}
        Unit::Vtd => qemu = qemu.args(["-device", "intel-iommu", "-trace", "vtd_dmar_fault"]),
        Unit::Amd => qemu = qemu.args(["-device", "amd-iommu,pt=off"]),
    }
    let qemu = qemu.args([
        "-cpu",
        cpu,
        "-qmp",
        &format!("unix:{},server=on,wait=off", qmp.display()),
        "-global",
        if native {
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"
        } else {
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on"
        },
        "-device",
        "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x5",
        "-device",
        "pcie-root-port,id=rp2,bus=pcie.0,chassis=2,slot=2,addr=0x6",
        "-device",
        "x3130-upstream,id=up1,bus=rp2",
        "-device",
        "xio3130-downstream,id=dp1,bus=up1,chassis=3,slot=3",
        "-blockdev",
        &format!(
            "driver=raw,node-name=nvm0,file.driver=file,file.filename={}",
            nvme.display()
        ),
        "-blockdev",
        &format!(
            "driver=raw,node-name=blk0,file.driver=file,file.filename={}",
            blk.display()
        ),
        "-netdev",
        "user,id=net0",
    ]);
    (qemu, qmp)
}

/// A device type to hot-add: its `device_add` arguments (without id and bus) and the driver
/// that must bind.
struct Device {
    driver: &'static str,
    args: fn() -> Value,
}

const DEVICES: [Device; 4] = [
    Device {
        driver: "edu",
        args: || json!({ "driver": "edu" }),
    },
    Device {
        driver: "nvme",
        args: || json!({ "driver": "nvme", "drive": "nvm0", "serial": "hotplug0" }),
    },
    Device {
        driver: "virtio-blk",
        args: || json!({ "driver": "virtio-blk-pci", "drive": "blk0" }),
    },
    Device {
        driver: "virtio-net",
        args: || json!({ "driver": "virtio-net-pci", "netdev": "net0" }),
    },
];

/// Runs a console command and returns its output (up to the next prompt).
fn command(s: &mut Session<'_>, line: &str) -> Result<String, String> {
    s.send_line(line)?;
    let out = s.expect(PROMPT, ANSWER)?;
    Ok(out)
}

/// The kernel's resource counters.
fn resources(s: &mut Session<'_>) -> Result<String, String> {
    let out = command(s, "pciehp resources")?;
    out.lines()
        .find_map(|l| l.find("RESOURCES ").map(|at| l[at..].trim().to_owned()))
        .ok_or_else(|| format!("no RESOURCES line in:\n{out}"))
}

/// Waits for the QMP event `name` about device `id`.
fn wait_event(qmp: &mut Qmp, name: &str, id: &str, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if let Some(at) = qmp
            .events
            .iter()
            .position(|e| e["event"] == name && e["data"]["device"].as_str() == Some(id))
        {
            qmp.events.remove(at);
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "no {name} for {id} within {timeout:?} (events: {:?})",
                qmp.events
            ));
        }
        qmp.execute("query-status", None)?;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One hot-add: `device_add`, wait for the kernel to bind it; returns the function's
/// address and the milliseconds from power-on to bound.
fn add(
    s: &mut Session<'_>,
    qmp: &mut Qmp,
    device: &Device,
    port: Port,
    id: &str,
) -> Result<(String, u64), String> {
    let mut args = (device.args)();
    args["id"] = json!(id);
    args["bus"] = json!(port.id);
    qmp.execute("device_add", Some(args))?;
    s.expect(&format!("slot {}: bound ", port.slot), ANSWER)?;
    let line = s.expect(" ms from power-on)", ANSWER)?;
    ensure!(
        !line.contains("unbound:"),
        "{} in slot {}: not bound: {line}",
        device.driver,
        port.slot
    );
    let address = line
        .split_whitespace()
        .next()
        .ok_or_else(|| format!("no address in {line:?}"))?
        .to_owned();
    let ms = line
        .rsplit_once('(')
        .and_then(|(_, t)| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    Ok((address, ms))
}

/// Runs the self test of `address`; fails if it reports an error.
fn self_test(s: &mut Session<'_>, address: &str, driver: &str) -> Result<(), String> {
    let out = command(s, &format!("selftest {address}"))?;
    ensure!(
        !out.contains("selftest:"),
        "{driver} at {address}: self test failed:\n{out}"
    );
    Ok(())
}

/// `device_del` and wait until QEMU reports the device gone and the kernel powered the
/// slot off. Returns the time from `device_del` to `DEVICE_DELETED`.
fn remove(
    s: &mut Session<'_>,
    qmp: &mut Qmp,
    port: Port,
    id: &str,
    window: Duration,
) -> Result<Duration, String> {
    qmp.execute("device_del", Some(json!({ "id": id })))?;
    let took = wait_event(qmp, "DEVICE_DELETED", id, window + ANSWER)?;
    s.expect(&format!("slot {}: powered off", port.slot), ANSWER)?;
    Ok(took)
}

/// The QEMU functions on the secondary bus of the port with QEMU id `port`.
fn below(qmp: &mut Qmp, port: &str) -> Result<Vec<qemu_tests::qmp::QemuPciFunction>, String> {
    let all = qmp.query_pci()?;
    let bridge = all
        .iter()
        .find(|f| f.qdev_id == port)
        .and_then(|f| f.bridge)
        .ok_or_else(|| format!("query-pci: no bridge {port}"))?;
    Ok(all
        .into_iter()
        .filter(|f| f.address.bus == bridge.secondary)
        .collect())
}

struct Figures {
    cycles: usize,
    per_device: [usize; 4],
    seconds: f64,
    /// Time spent in each step over all cycles: add to bound, self test, removal, counters.
    steps: [Duration; 4],
    /// Milliseconds from power-on to bound as the kernel logged them, summed per port.
    bound_ms: [u64; 2],
}

fn run_cycles(
    s: &mut Session<'_>,
    qmp: &mut Qmp,
    baseline: &str,
    budget: Duration,
    max_rounds: usize,
) -> Result<Figures, String> {
    let start = Instant::now();
    let mut figures = Figures {
        cycles: 0,
        per_device: [0; 4],
        seconds: 0.0,
        steps: [Duration::ZERO; 4],
        bound_ms: [0; 2],
    };
    let ports = [ROOT_PORT, DOWNSTREAM_PORT];
    'outer: for round in 0..max_rounds {
        for (d, device) in DEVICES.iter().enumerate() {
            if start.elapsed() > budget {
                break 'outer;
            }
            let port = ports[(round + d) % 2];
            let id = format!("hp{}", figures.cycles);
            let t0 = Instant::now();
            let (address, ms) = add(s, qmp, device, port, &id)
                .map_err(|e| format!("cycle {}: {e}", figures.cycles))?;
            figures.bound_ms[(round + d) % 2] += ms;
            let t1 = Instant::now();
            self_test(s, &address, device.driver)
                .map_err(|e| format!("cycle {}: {e}", figures.cycles))?;
            let t2 = Instant::now();
            remove(s, qmp, port, &id, Duration::from_secs(1))
                .map_err(|e| format!("cycle {}: {e}", figures.cycles))?;
            let t3 = Instant::now();
            let now = resources(s)?;
            figures.steps[0] += t1 - t0;
            figures.steps[1] += t2 - t1;
            figures.steps[2] += t3 - t2;
            figures.steps[3] += t3.elapsed();
            ensure!(
                now == baseline,
                "cycle {} ({} in slot {}): not at baseline after removal:\n  baseline {baseline}\n  now      {now}",
                figures.cycles,
                device.driver,
                port.slot
            );
            figures.cycles += 1;
            figures.per_device[d] += 1;
        }
    }
    figures.seconds = start.elapsed().as_secs_f64();
    Ok(figures)
}

#[test]
fn hotplug_cycles() {
    if !qemu_or_skip("hotplug_cycles") {
        return;
    }
    let scratch = unique_temp_dir("hotplug");
    let (qemu, qmp_path) = machine(&scratch, "qemu64");
    let InteractRun { outcome, result } = qemu
        .interact(|s| {
            s.expect(PROMPT, BOOT)?;
            let mut qmp = Qmp::connect(&qmp_path, Instant::now() + Duration::from_secs(590))?
                .with_deadline(Instant::now() + run_time());
            let baseline = resources(s)?;

            // 1. The spec's 5 s window, once; QEMU decodes the BAR the kernel assigned.
            let (address, ms) = add(s, &mut qmp, &DEVICES[0], ROOT_PORT, "edu5s")?;
            let seen = below(&mut qmp, ROOT_PORT.id)?;
            let edu = seen
                .iter()
                .find(|f| f.qdev_id == "edu5s")
                .ok_or("query-pci does not show edu below rp1")?;
            let bar0 = edu
                .bars
                .iter()
                .find(|b| b.slot == 0)
                .and_then(|b| b.address)
                .ok_or("QEMU reports edu's BAR0 unmapped")?;
            let log = s.received();
            ensure!(
                log.contains(&format!("{address} BAR0 (Memory32, 0x100000 bytes) at {bar0:#x}")),
                "QEMU decodes edu's BAR0 at {bar0:#x}, which the kernel did not log assigning"
            );
            self_test(s, &address, "edu")?;
            let tree = command(s, "lspci -t")?;
            ensure!(
                tree.contains("[slot 1, power on]") && tree.contains("Technical Corp. QEMU edu device"),
                "`lspci -t` does not show slot 1 powered with the edu below it:\n{tree}"
            );
            let took = remove(s, &mut qmp, ROOT_PORT, "edu5s", Duration::from_secs(6))?;
            ensure!(
                took >= Duration::from_secs(5) && took < Duration::from_secs(9),
                "removal with the default window took {took:?} (expected 5 s plus a little)"
            );
            ensure!(
                below(&mut qmp, ROOT_PORT.id)?.is_empty(),
                "query-pci still shows a device below rp1"
            );
            let tree = command(s, "lspci -t")?;
            ensure!(
                tree.contains("[slot 1, power off]") && !tree.contains("edu device"),
                "`lspci -t` after the removal:\n{tree}"
            );
            let now = resources(s)?;
            ensure!(
                now == baseline,
                "not at baseline after the first removal:\n  baseline {baseline}\n  now      {now}"
            );
            println!("hotplug: default window: edu bound {ms} ms after power-on, removal took {:.2} s", took.as_secs_f64());

            // 2. Cycles with the window at 0.
            command(s, "pciehp delay 0")?;
            let (budget, rounds) = cycle_plan();
            let f = run_cycles(s, &mut qmp, &baseline, budget, rounds)?;
            println!(
                "hotplug: {} add/bind/selftest/remove cycles in {:.1} s = {:.2} cycles/s (edu {}, nvme {}, virtio-blk {}, virtio-net {}; half in a root port, half in a switch downstream port), every resource at baseline after each",
                f.cycles,
                f.seconds,
                f.cycles as f64 / f.seconds,
                f.per_device[0],
                f.per_device[1],
                f.per_device[2],
                f.per_device[3]
            );
            let per = |d: Duration| d.as_secs_f64() * 1000.0 / f.cycles.max(1) as f64;
            println!(
                "hotplug: per cycle: add to bound {:.0} ms, self test {:.0} ms, removal {:.0} ms, counters {:.0} ms",
                per(f.steps[0]),
                per(f.steps[1]),
                per(f.steps[2]),
                per(f.steps[3])
            );
            let half = (f.cycles as f64 / 2.0).max(1.0);
            println!(
                "hotplug: power-on to bound (kernel's figure): root port {:.0} ms, switch downstream port {:.0} ms",
                f.bound_ms[0] as f64 / half,
                f.bound_ms[1] as f64 / half
            );
            ensure!(f.per_device.iter().all(|&n| n >= 1), "some device type never cycled");

            // 3. Removal during I/O: `nvme read` keeps coming while the 1 s window runs.
            command(s, "pciehp delay 1000")?;
            let (address, _) = add(s, &mut qmp, &DEVICES[1], ROOT_PORT, "nvmeio")?;
            command(s, "nvme read 0")?;
            qmp.execute("device_del", Some(json!({ "id": "nvmeio" })))?;
            let start = Instant::now();
            let mut reads_ok = 0;
            let mut answers = 0;
            let mut seen = String::new();
            while !qmp
                .events
                .iter()
                .any(|e| e["event"] == "DEVICE_DELETED" && e["data"]["device"] == "nvmeio")
            {
                ensure!(start.elapsed() < Duration::from_secs(15), "the NVMe was not removed while reads ran");
                let out = command(s, &format!("nvme read {}", answers % 8))?;
                seen.push_str(&out);
                answers += 1;
                if !out.contains("nvme:") {
                    reads_ok += 1;
                }
                qmp.execute("query-status", None)?;
            }
            ensure!(reads_ok >= 1, "no read completed during the abort window");
            if !seen.contains("slot 1: powered off") {
                s.expect("slot 1: powered off", ANSWER)?;
            }
            let after = command(s, "nvme read 0")?;
            ensure!(
                after.contains("nvme: no nvme device is bound"),
                "`nvme read` after the removal:\n{after}"
            );
            let now = resources(s)?;
            ensure!(
                now == baseline,
                "not at baseline after removal during I/O:\n  baseline {baseline}\n  now      {now}"
            );
            println!("hotplug: NVMe removed during I/O: {answers} reads issued, {reads_ok} completed before it went, console answered every one");
            // The same device type, added again, binds and works.
            command(s, "pciehp delay 0")?;
            let (again, _) = add(s, &mut qmp, &DEVICES[1], ROOT_PORT, "nvmeagain")?;
            ensure!(again == address, "re-added NVMe at {again}, first at {address}");
            let out = command(s, "nvme read 0")?;
            ensure!(!out.contains("nvme:"), "read after re-adding failed:\n{out}");
            // 4. The card vanishes under its driver (fault injection: slot power cut with the
            //    indicator left on, so QEMU hides the NVMe but keeps it plugged in).
            let out = command(s, "pciehp cut 1")?;
            ensure!(out.contains("power cut"), "`pciehp cut 1`:\n{out}");
            let line = s.expect(" ms\n", ANSWER)?;
            ensure!(
                line.contains("the card below stopped answering")
                    && line.contains("surprise removal: unbound 0000:"),
                "no surprise removal after the cut:\n{line}"
            );
            let ms: u64 = line
                .rsplit_once(" in ")
                .and_then(|(_, t)| t.trim_end_matches(" ms\n").parse().ok())
                .ok_or_else(|| format!("no unbind time in {line:?}"))?;
            // The NVMe's teardown waits up to CAP.TO (7.5 s on QEMU) for a live controller;
            // a vanished one must not hold the unbind that long.
            ensure!(ms < 1000, "unbinding the vanished NVMe took {ms} ms");
            wait_event(&mut qmp, "DEVICE_DELETED", "nvmeagain", ANSWER)?;
            let after = command(s, "nvme read 0")?;
            ensure!(
                after.contains("nvme: no nvme device is bound"),
                "`nvme read` after the surprise removal:\n{after}"
            );
            let now = resources(s)?;
            ensure!(
                now == baseline,
                "not at baseline after the surprise removal:\n  baseline {baseline}\n  now      {now}"
            );
            println!(
                "hotplug: NVMe vanished under its driver: unbound in {ms} ms, QEMU deleted it, resources at baseline; the kernel said:\n{}",
                line.trim()
            );
            let (third, _) = add(s, &mut qmp, &DEVICES[1], ROOT_PORT, "nvmethird")?;
            self_test(s, &third, "nvme")?;
            // 5. A card that dies without an event: its driver's next wait ends with an error
            //    saying so, not a timeout; `device_del` then removes it through the button.
            let out = command(s, "pciehp cut 1 quiet")?;
            ensure!(out.contains("not looked at"), "`pciehp cut 1 quiet`:\n{out}");
            let out = command(s, "nvme read 0")?;
            let ms: u64 = out
                .split("stopped answering after ")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("`nvme read` on the dead NVMe did not say it stopped answering:\n{out}"))?;
            ensure!(ms < 1000, "the read on the dead NVMe waited {ms} ms");
            let took = remove(s, &mut qmp, ROOT_PORT, "nvmethird", Duration::from_secs(1))?;
            let now = resources(s)?;
            ensure!(
                now == baseline,
                "not at baseline after removing the dead NVMe:\n  baseline {baseline}\n  now      {now}"
            );
            println!(
                "hotplug: a read on an NVMe that died under it failed after {ms} ms (\"stopped answering\"), device_del removed it in {:.2} s, resources at baseline",
                took.as_secs_f64()
            );
            let now = resources(s)?;
            ensure!(now == baseline, "not at baseline at the end:\n  baseline {baseline}\n  now      {now}");
            // 6. A handle leaked past its unbinding (fault injection: the bus forgets the
            //    driver's state instead of dropping it). The function stays claimed after the
            //    card is gone, and its window still maps the old BAR: the slot refuses the
            //    next card rather than place that card's BARs where the leaked window reaches.
            let (leaky, _) = add(s, &mut qmp, &DEVICES[0], ROOT_PORT, "eduleak")?;
            let out = command(s, &format!("inject leak {leaky}"))?;
            ensure!(out.contains("leaks its state"), "`inject leak`:\n{out}");
            remove(s, &mut qmp, ROOT_PORT, "eduleak", Duration::from_secs(1))?;
            let log = s.received();
            ensure!(
                log.contains(&format!("{leaky}: injected leak"))
                    && log.contains(&format!("{leaky} still claimed after its driver was unbound")),
                "the kernel did not say the removed edu's claim outlived its unbinding"
            );
            let claimed = |line: &str| -> Option<u64> {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix("claimed="))
                    .and_then(|n| n.parse().ok())
            };
            let now = resources(s)?;
            ensure!(
                claimed(&now) == claimed(&baseline).map(|n| n + 1),
                "the leaked claim is not counted:\n  baseline {baseline}\n  now      {now}"
            );
            let mut args = (DEVICES[0].args)();
            args["id"] = json!("eduafter");
            args["bus"] = json!(ROOT_PORT.id);
            qmp.execute("device_add", Some(args))?;
            let line = s.expect("powering off", ANSWER)?;
            ensure!(
                line.contains(&format!("{leaky} of the card removed from this slot still claimed"))
                    && line.contains("the new card is not set up"),
                "a card added below a slot with a leaked claim was not refused:\n{line}"
            );
            // The refused card's slot goes off; QEMU then hides the card.
            s.expect("slot 1: presence lost (slot off, power off)", ANSWER)?;
            ensure!(
                !line.contains(" BAR0 ("),
                "BARs were placed for the refused card:\n{line}"
            );
            ensure!(
                below(&mut qmp, ROOT_PORT.id)?.is_empty(),
                "QEMU shows the refused card below rp1 (its slot should be off)"
            );
            // The other slot is not affected.
            let (other, _) = add(s, &mut qmp, &DEVICES[0], DOWNSTREAM_PORT, "eduother")?;
            self_test(s, &other, "edu")?;
            println!("hotplug: a leaked handle kept {leaky} claimed after removal; slot 1 refused the next card, slot 3 still works");
            command(s, "help")?;
            s.send_line("poweroff")?;
            s.wait_exit(Duration::from_secs(15))?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("hotplug_cycles: cannot run QEMU: {e}"));
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "hotplug_cycles: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    check("hotplug_cycles", &outcome, |_, report| {
        result?;
        ensure!(
            report.panic.is_none(),
            "kernel panicked: {:?}",
            report.panic
        );
        ensure!(
            report.exceptions.is_empty(),
            "CPU exception: {:?}",
            report.exceptions.first()
        );
        Ok(())
    });
}

#[test]
fn hotplug_x2apic() {
    if !qemu_or_skip("hotplug_x2apic") {
        return;
    }
    let scratch = unique_temp_dir("hotplug-x2apic");
    let (qemu, qmp_path) = machine(&scratch, "max");
    let InteractRun { outcome, result } = qemu
        .interact(|s| {
            s.expect(PROMPT, BOOT)?;
            let mut qmp = Qmp::connect(&qmp_path, Instant::now() + Duration::from_secs(590))?;
            ensure!(
                s.received().contains("x2APIC mode"),
                "-cpu max did not bring the local APIC up in x2APIC mode"
            );
            ensure!(
                s.received()
                    .contains("_OSC granted 0x11 of 0x11: hot-plug native"),
                "q35 without ACPI hot-plug: the kernel did not log native hot-plug granted by _OSC"
            );
            let baseline = resources(s)?;
            command(s, "pciehp delay 0")?;
            let f = run_cycles(s, &mut qmp, &baseline, Duration::from_secs(120), 2)?;
            ensure!(f.cycles == 8, "{} cycles instead of 8", f.cycles);
            println!("hotplug_x2apic: {} cycles in {:.1} s", f.cycles, f.seconds);
            s.send_line("poweroff")?;
            s.wait_exit(Duration::from_secs(15))?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("hotplug_x2apic: cannot run QEMU: {e}"));
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "hotplug_x2apic: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    check("hotplug_x2apic", &outcome, |_, report| {
        result?;
        ensure!(
            report.panic.is_none(),
            "kernel panicked: {:?}",
            report.panic
        );
        Ok(())
    });
}

/// Hot-plug cycles behind QEMU's VT-d unit: every card added is isolated when its driver
/// claims it, and when it is removed its DMA memory leaves its domain and the domain goes;
/// resources (frames included, so the domains' table pages, and the interrupt remapping
/// entries of the cards' vectors) back at baseline after every cycle, and no request
/// refused.
#[test]
fn hotplug_under_dma_remapping() {
    if !qemu_or_skip("hotplug_remapped") {
        return;
    }
    let scratch = unique_temp_dir("hotplug-remapped");
    let (qemu, qmp_path) = machine_full(&scratch, "qemu64", true, Unit::Vtd);
    let InteractRun { outcome, result } = qemu
        .interact(|s| {
            s.expect(PROMPT, BOOT)?;
            let mut qmp = Qmp::connect(&qmp_path, Instant::now() + Duration::from_secs(590))?;
            ensure!(
                s.received().contains("iommu: 1 remapping unit(s) on"),
                "remapping did not come on"
            );
            let baseline = resources(s)?;
            // Interrupt remapping is on too: the console's vectors have their entries, and
            // each cycle must end with exactly those (the baseline comparison below).
            ensure!(
                baseline
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("remap_entries="))
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n > 0),
                "no interrupt remapping entry at baseline: {baseline}"
            );
            command(s, "pciehp delay 0")?;
            let f = run_cycles(s, &mut qmp, &baseline, Duration::from_secs(120), 2)?;
            ensure!(f.cycles == 8, "{} cycles instead of 8", f.cycles);
            let status = command(s, "iommu")?;
            ensure!(
                status.contains("refused requests: none"),
                "the unit refused requests:\n{status}"
            );
            println!(
                "hotplug_remapped: {} cycles in {:.1} s",
                f.cycles, f.seconds
            );
            s.send_line("poweroff")?;
            s.wait_exit(Duration::from_secs(15))?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("hotplug_remapped: cannot run QEMU: {e}"));
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "hotplug_remapped: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    check("hotplug_remapped", &outcome, |outcome, report| {
        result?;
        ensure!(
            report.panic.is_none(),
            "kernel panicked: {:?}",
            report.panic
        );
        let refused: Vec<&str> = outcome
            .stderr
            .lines()
            .filter(|l| l.contains("vtd_dmar_fault"))
            .collect();
        ensure!(
            refused.is_empty(),
            "QEMU's unit refused requests: {refused:?}"
        );
        Ok(())
    });
}

/// q35's default: root-port hot-plug is ACPI's, and its `_OSC` keeps native hot-plug. The
/// kernel asks, logs what firmware answered, leaves the slots alone with a message saying
/// why and what to do, and a `device_add` there changes nothing the kernel owns.
#[test]
fn hotplug_left_to_firmware() {
    if !qemu_or_skip("hotplug_left_to_firmware") {
        return;
    }
    let scratch = unique_temp_dir("hotplug-firmware");
    let (qemu, qmp_path) = machine_with(&scratch, "qemu64", false);
    let InteractRun { outcome, result } = qemu
        .interact(|s| {
            s.expect(PROMPT, BOOT)?;
            let mut qmp = Qmp::connect(&qmp_path, Instant::now() + Duration::from_secs(590))?;
            let log = s.received();
            ensure!(
                log.contains("_OSC granted 0x10 of 0x11: hot-plug kept by firmware"),
                "the kernel did not log that q35's _OSC kept hot-plug"
            );
            ensure!(
                log.contains("slot 1: hot-plug is firmware's")
                    && log.contains("slot 3: hot-plug is firmware's"),
                "pciehp did not say it leaves slots 1 and 3 to firmware"
            );
            // No port driver is bound, so `pciehp resources` has no one to answer: `mem`
            // (frames, heap, vectors) is the counter here.
            let baseline = command(s, "mem")?;
            let slots = command(s, "drivers")?;
            ensure!(
                !slots.contains("pciehp"),
                "pciehp took a slot firmware keeps:\n{slots}"
            );
            let mut args = (DEVICES[0].args)();
            args["id"] = json!("fw0");
            args["bus"] = json!(ROOT_PORT.id);
            qmp.execute("device_add", Some(args))?;
            std::thread::sleep(Duration::from_secs(1));
            let drivers = command(s, "drivers")?;
            ensure!(
                !drivers.contains("edu"),
                "an edu was bound in a slot firmware keeps:\n{drivers}"
            );
            let now = command(s, "mem")?;
            ensure!(now == baseline, "`mem` moved:\n{baseline}\n{now}");
            s.send_line("poweroff")?;
            s.wait_exit(Duration::from_secs(15))?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("hotplug_left_to_firmware: cannot run QEMU: {e}"));
    let _ = std::fs::remove_dir_all(&scratch);
    check("hotplug_left_to_firmware", &outcome, |_, report| {
        result?;
        ensure!(
            report.panic.is_none(),
            "kernel panicked: {:?}",
            report.panic
        );
        Ok(())
    });
}

/// The same cycles behind an AMD IOMMU: each card isolated in its own domain with its own
/// interrupt table on arrival, and after its removal the domain, the table and the vectors'
/// entries gone: frames, heap and remapping entries back at baseline after every cycle,
/// and nothing in the unit's event log.
#[test]
fn hotplug_under_an_amd_iommu() {
    let name = "hotplug_amd";
    if !qemu_or_skip(name) {
        return;
    }
    let scratch = unique_temp_dir("hotplug-amd");
    let (qemu, qmp_path) = machine_full(&scratch, "qemu64", true, Unit::Amd);
    let InteractRun { outcome, result } = qemu
        .interact(|s| {
            s.expect(PROMPT, BOOT)?;
            let mut qmp = Qmp::connect(&qmp_path, Instant::now() + Duration::from_secs(590))?;
            ensure!(
                s.received().contains("iommu: 1 AMD IOMMU(s) on"),
                "the AMD IOMMU did not come on"
            );
            ensure!(
                s.received().contains("iommu: interrupt remapping on"),
                "interrupt remapping did not come on"
            );
            let baseline = resources(s)?;
            ensure!(
                baseline
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("remap_entries="))
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n > 0),
                "no interrupt remapping entry at baseline: {baseline}"
            );
            command(s, "pciehp delay 0")?;
            let f = run_cycles(s, &mut qmp, &baseline, Duration::from_secs(120), 2)?;
            ensure!(f.cycles == 8, "{} cycles instead of 8", f.cycles);
            let status = command(s, "iommu")?;
            ensure!(
                status.contains("refused requests: none"),
                "the unit logged events:\n{status}"
            );
            println!("{name}: {} cycles in {:.1} s", f.cycles, f.seconds);
            s.send_line("poweroff")?;
            s.wait_exit(Duration::from_secs(15))?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "{name}: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    check(name, &outcome, |_, report| {
        result?;
        ensure!(
            report.panic.is_none(),
            "kernel panicked: {:?}",
            report.panic
        );
        Ok(())
    });
}
