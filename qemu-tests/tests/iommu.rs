//! DMA remapping on QEMU's Intel VT-d model (`-device intel-iommu`): the kernel's `iommu`
//! suite (`kernel/src/tests/iommu_suite.rs`) points QEMU's `edu` device at memory with edu's
//! DMA engine, and the runner checks the outcome against two truths the kernel cannot fake:
//!
//! - QEMU's own record of every request its remapping unit refused (its `vtd_dmar_fault`
//!   trace event, one line per refused access on stderr: `sid 0x18 fault 5 addr 0x...
//!   write 1`): the pages edu was refused are exactly the pages the kernel says were
//!   blocked, refused as writes for edu's requester ID (00:03.0), none of its own;
//! - the same request without remapping (`iommu=off`, the `iommu_off` suite) really lands in
//!   the page, so "blocked" is the unit's doing, not a transfer that never happened.
//!
//! The same again with edu on the conventional PCI bus behind a PCIe-to-PCI bridge, where
//! its requests reach the unit with the bridge's alias ID (secondary bus, 00.0): the alias
//! must lead to edu's domain, or the blocked write would land.
//!
//! A further scenario runs the NVMe and virtio-blk drivers under remapping (virtio with
//! `iommu_platform=on`, so that its DMA goes through the unit too): the `blk` suite reads
//! both disks at depth 1 and 32 and compares them with the images this runner wrote, then
//! unbinds and binds each driver with everything back at baseline.

use qemu_tests::{
    Machine, Outcome, QEMU_EXIT_SUCCESS, Qemu, check, ensure, expect_exit, kernel_elf, qemu_or_skip,
};

/// edu at 00:03.0 (the first device after intel-iommu's own slot on q35).
const EDU_ON_ROOT: &[&str] = &["-device", "edu,addr=0x3"];
/// edu at 01:02.0, on the conventional PCI bus behind a PCIe-to-PCI bridge at 00:04.0: its
/// requests reach the unit as 01:00.0, the bridge's alias.
const EDU_BEHIND_BRIDGE: &[&str] = &[
    "-device",
    "pcie-pci-bridge,id=br,bus=pcie.0,addr=0x4",
    "-device",
    "edu,bus=br,addr=0x2",
];

fn boot(cmdline: &str, edu: &[&str]) -> Outcome {
    let mut args = vec!["-trace", "vtd_dmar_fault", "-device", "intel-iommu"];
    args.extend_from_slice(edu);
    Qemu::kernel(kernel_elf(), cmdline)
        .machine(Machine::Q35)
        // edu's DMA engine takes 28-bit addresses: all of RAM below 256 MiB.
        .memory_mib(256)
        .args(args)
        .run()
        .unwrap_or_else(|e| panic!("cannot run QEMU: {e}"))
}

/// The page in a kernel line `... blocked, fault 0018 write 0x2330000 reason 05h`.
fn blocked_page(line: &str) -> Option<u64> {
    let rest = line.split(" write 0x").nth(1)?;
    u64::from_str_radix(rest.split_whitespace().next()?, 16).ok()
}

/// The pages QEMU's unit refused requests with one of `ids` (requester IDs), from its
/// `vtd_dmar_fault` trace lines; `Err` for a refused read (the suite's blocked requests are
/// all writes).
fn refused_by_qemu(stderr: &str, ids: &[u16]) -> Result<Vec<u64>, String> {
    let mut pages = Vec::new();
    for line in stderr.lines().filter(|l| l.contains("vtd_dmar_fault")) {
        let field = |key: &str| {
            line.split(&format!(" {key} "))
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
        };
        let sid = field("sid")
            .and_then(|v| u16::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            .ok_or_else(|| format!("unreadable trace line `{line}`"))?;
        if !ids.contains(&sid) {
            continue;
        }
        ensure!(field("write") == Some("1"), "QEMU refused a read: `{line}`");
        let addr = field("addr")
            .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
            .ok_or_else(|| format!("unreadable trace line `{line}`"))?;
        if !pages.contains(&(addr & !0xfff)) {
            pages.push(addr & !0xfff);
        }
    }
    Ok(pages)
}

/// Runs the `iommu` suite with edu placed by `edu`; `ids` are the requester IDs its
/// requests may carry (its own, and the bridge's alias behind one), which the kernel must
/// name too.
fn isolation(name: &str, edu: &[&str], ids: &[u16]) {
    if !qemu_or_skip(name) {
        return;
    }
    let outcome = boot("test=iommu", edu);
    check(name, &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(5)?;
        let serial = &outcome.serial;
        let line = serial
            .lines()
            .find(|l| l.starts_with("iommu: 1 unit(s), translation on, edu isolated"))
            .ok_or("no isolation line")?;
        for id in ids {
            ensure!(
                line.contains(&format!("{id:04x}")),
                "`{line}` does not name requester ID {id:04x}"
            );
        }
        ensure!(
            serial.contains("iommu: edu round trip through its own DMA memory: 256 bytes equal"),
            "no round-trip line"
        );
        let blocked: Vec<u64> = serial
            .lines()
            .filter(|l| l.starts_with("iommu: edu write to memory") && l.contains("blocked"))
            .filter_map(blocked_page)
            .collect();
        ensure!(
            blocked.len() == 3,
            "{} blocked writes reported",
            blocked.len()
        );
        ensure!(
            serial.lines().any(|l| l
                .starts_with("iommu: edu write to memory it was not given, again: blocked")
                && l.contains(", fault event interrupt(s) ")),
            "no fault event interrupt line"
        );
        let mut refused = refused_by_qemu(&outcome.stderr, ids)?;
        let mut reported = blocked.clone();
        refused.sort_unstable();
        reported.sort_unstable();
        // The third write may reuse a page an earlier one was refused (frames come back).
        reported.dedup();
        ensure!(
            refused == reported,
            "QEMU refused edu's writes to pages {refused:x?}; the kernel reported {reported:x?}"
        );
        let others: Vec<u16> = (0..=u16::MAX).filter(|i| !ids.contains(i)).collect();
        let others = refused_by_qemu(&outcome.stderr, &others)?;
        ensure!(
            others.is_empty(),
            "QEMU refused other requesters: {others:x?}"
        );
        Ok(())
    });
}

#[test]
fn a_device_reaches_only_the_memory_its_function_owns() {
    isolation("iommu", EDU_ON_ROOT, &[0x0018]);
}

/// Behind a PCIe-to-PCI bridge edu's requests carry the bridge's alias (01:00.0): its domain
/// is reached through that ID too, so the same writes are blocked and its own memory is not.
#[test]
fn behind_a_pcie_to_pci_bridge_the_alias_leads_to_the_same_domain() {
    isolation("iommu_bridge", EDU_BEHIND_BRIDGE, &[0x0110, 0x0100]);
}

#[test]
fn without_remapping_the_same_write_lands() {
    if !qemu_or_skip("iommu_off") {
        return;
    }
    let outcome = boot("test=iommu_off iommu=off", EDU_ON_ROOT);
    check("iommu_off", &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(1)?;
        ensure!(
            outcome
                .serial
                .contains("iommu: edu write to memory it was not given: landed"),
            "no landed line"
        );
        ensure!(
            refused_by_qemu(&outcome.stderr, &[0x0018])?.is_empty(),
            "QEMU refused requests with remapping off"
        );
        Ok(())
    });
}

/// edu able to reach the interrupt range by DMA (QEMU's default is a 28-bit mask).
const EDU_WIDE: &[&str] = &["-device", "edu,addr=0x3,dma_mask=0xffffffff"];

/// The entry index in a kernel line `... entry 0x30: ...`.
fn entry_index(line: &str) -> Option<u64> {
    let rest = line.split(" entry 0x").nth(1)?;
    u64::from_str_radix(rest.split(|c: char| !c.is_ascii_hexdigit()).next()?, 16).ok()
}

/// Interrupt remapping: edu's own interrupt arrives through its entry; its MSI made to name
/// the IOAPIC's entry is refused by the source check, and a message naming the entry of a
/// vector that went back is refused because the entry is gone. QEMU's own error lines (its
/// unit prints each kind once) name the same entries and edu's requester ID (0x18 = 24).
#[test]
fn a_device_raises_only_the_vectors_its_owner_was_given() {
    if !qemu_or_skip("intremap") {
        return;
    }
    let outcome = boot("test=intremap", EDU_WIDE);
    check("intremap", &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(4)?;
        let serial = &outcome.serial;
        ensure!(
            serial.contains("intremap: edu interrupt through its own entry 0x")
                && serial.contains(": delivered, handler ran"),
            "no delivered line"
        );
        let line = |prefix: &str| {
            serial
                .lines()
                .find(|l| l.starts_with(prefix))
                .ok_or(format!("no `{prefix}` line"))
        };
        let other = line("intremap: edu message naming the IOAPIC's entry")?;
        ensure!(
            other.contains("refused, fault 0018 interrupt entry")
                && other.contains("reason 26h, 0 arrivals; its own message again: delivered"),
            "`{other}`"
        );
        let index = entry_index(other).ok_or("no entry in the line")?;
        ensure!(
            outcome
                .stderr
                .contains(&format!("invalid IRTE SID (index={index}, sid=24,")),
            "QEMU did not refuse edu's message for entry {index}: {}",
            outcome.stderr
        );
        let gone = line("intremap: edu write naming entry")?;
        ensure!(gone.contains("reason 22h, 0 arrivals"), "`{gone}`");
        let index = entry_index(gone).ok_or("no entry in the line")?;
        ensure!(
            outcome
                .stderr
                .contains(&format!("detected non-present IRTE (index={index},")),
            "QEMU did not refuse the message naming entry {index}: {}",
            outcome.stderr
        );
        Ok(())
    });
}

/// Without interrupt remapping (`intremap=off`; DMA remapping stays on), edu writing a
/// made-up message is an interrupt on a vector nobody gave it: what the suite above blocks.
#[test]
fn without_interrupt_remapping_a_made_up_message_is_an_interrupt() {
    if !qemu_or_skip("intremap_off") {
        return;
    }
    let outcome = boot("test=intremap_off intremap=off", EDU_WIDE);
    check("intremap_off", &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(1)?;
        let line = outcome
            .serial
            .lines()
            .find(|l| l.starts_with("intremap: off: edu message for vector"))
            .ok_or("no delivered line")?;
        ensure!(line.contains(": delivered (1 arrival(s))"), "`{line}`");
        Ok(())
    });
}

/// `intremap=nosid` (for firmware that names the wrong requester): the entries check no
/// requester ID, so edu's MSI naming the I/O APIC's entry arrives, where the checked run
/// above refuses it.
#[test]
fn with_intremap_nosid_entries_check_no_requester() {
    if !qemu_or_skip("intremap_nosid") {
        return;
    }
    let outcome = boot("test=intremap_nosid intremap=nosid", EDU_WIDE);
    check("intremap_nosid", &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(1)?;
        ensure!(
            outcome.serial.lines().any(|l| l
                .starts_with("intremap: nosid: edu message naming the IOAPIC's entry")
                && l.ends_with(": delivered")),
            "no delivered line"
        );
        ensure!(
            outcome
                .serial
                .contains("interrupt remapping on without requester checks"),
            "the boot log does not say the checks are off"
        );
        Ok(())
    });
}

/// The console's `iommu` command on a booted machine: edu and NVMe bound by their drivers,
/// each isolated; pages mapped for their DMA memory; each one's vectors with remapping
/// entries checking its requester ID; no request refused.
#[test]
fn the_console_shows_each_bound_function_isolated() {
    if !qemu_or_skip("iommu_console") {
        return;
    }
    let prompt = "kernel> ";
    let wait = std::time::Duration::from_secs(60);
    let dir = qemu_tests::unique_temp_dir("iommu_console");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let image = dir.join("nvme.img");
    std::fs::write(&image, vec![0x5au8; 1 << 20]).expect("disk image");
    let drive = format!("if=none,id=n0,format=raw,file={}", image.display());
    let run = Qemu::kernel(kernel_elf(), "log=warn")
        .machine(Machine::Q35)
        .memory_mib(256)
        .args(["-device", "intel-iommu", "-device", "edu"])
        .args(["-drive", &drive, "-device", "nvme,serial=iommu,drive=n0"])
        .interact(|s| {
            s.expect("kernel ready", wait)?;
            s.expect(prompt, wait)?;
            s.send_line("iommu")?;
            let answer = s.expect(prompt, wait)?;
            s.send_line("poweroff")?;
            Ok(answer)
        })
        .unwrap_or_else(|e| panic!("cannot run QEMU: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    check("iommu_console", &run.outcome, |outcome, _| {
        ensure!(
            outcome
                .serial
                .contains("Bound: edu at 0000:00:03.0, nvme at 0000:00:04.0."),
            "edu and NVMe are not both bound"
        );
        let answer = run.result.as_ref().map_err(|e| e.clone())?;
        let line = answer
            .lines()
            .find(|l| l.starts_with("iommu: "))
            .ok_or_else(|| format!("no summary line in `{answer}`"))?;
        ensure!(
            line.starts_with("iommu: 1 unit(s), translation on, 2 isolated function(s), "),
            "`{line}`"
        );
        let pages: u64 = line
            .split(", ")
            .find(|f| f.ends_with(" DMA page(s) mapped"))
            .and_then(|f| f.split(' ').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no page count in `{line}`"))?;
        ensure!(
            pages > 0,
            "no DMA page mapped for two bound drivers: `{line}`"
        );
        ensure!(
            answer.contains("interrupt remapping: on, "),
            "interrupts are not remapped: `{answer}`"
        );
        // The boot's own check: a PIT tick through the I/O APIC and its remapping entry.
        ensure!(
            answer.contains(
                "I/O APIC check at boot: a PIT tick arrived through the I/O APIC's remapping entry"
            ),
            "the boot's I/O APIC check did not see a tick: `{answer}`"
        );
        // Each bound driver's vectors have entries that only its function's messages pass.
        for who in ["00:03.0", "00:04.0"] {
            ensure!(
                answer
                    .lines()
                    .any(|l| l.contains(" entry 0x") && l.ends_with(&format!(", edge, from {who}"))),
                "no remapping entry for {who}'s messages: `{answer}`"
            );
        }
        ensure!(
            answer.contains("refused requests: none"),
            "requests were refused: `{answer}`"
        );
        Ok(())
    });
}
