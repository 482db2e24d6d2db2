//! DMA remapping on QEMU's AMD IOMMU model (`-device amd-iommu`, described to the kernel by
//! the IVRS table): the kernel's `iommu_amd` suite (`kernel/src/tests/iommu_suite.rs`) points
//! QEMU's `edu` device at memory with edu's DMA engine, and the runner checks the outcome
//! against truths the kernel cannot fake:
//!
//! - QEMU's own trace of every translation its unit made for edu (`amdvi_translation_result`,
//!   one line per request: `devid: 00:04.0 gpa 0x... hpa 0x...`): the pages the kernel says
//!   were blocked are pages QEMU's unit translated to nothing (hpa 0) for edu, and edu's own
//!   DMA memory translated to itself;
//! - the same request without remapping (`iommu=off`, the `iommu_off` suite, on the same
//!   machine) really lands in the page, so "blocked" is the unit's doing.
//!
//! QEMU's model refuses a request whose page table entry is empty without logging an
//! `IO_PAGE_FAULT` event (real units log one), so the kernel's evidence of a blocked write is
//! the page it left untouched, and the events are checked only where the unit logs them.

use qemu_tests::{
    Machine, Outcome, QEMU_EXIT_SUCCESS, Qemu, check, ensure, expect_exit, kernel_elf, qemu_or_skip,
};

/// edu at 00:04.0; its requester ID is 0x0020. QEMU 10's `amd-iommu` lets emulated
/// devices bypass translation altogether unless it is told it offers no pass-through
/// (`pt=off`): only then does every DMA request walk the kernel's tables.
const EDU: &[&str] = &["-device", "amd-iommu,pt=off", "-device", "edu,addr=0x4"];
const EDU_ID: u16 = 0x0020;

fn boot(cmdline: &str) -> Outcome {
    let mut args = vec!["-trace", "amdvi_translation_result"];
    args.extend_from_slice(EDU);
    Qemu::kernel(kernel_elf(), cmdline)
        .machine(Machine::Q35)
        // edu's DMA engine takes 28-bit addresses: all of RAM below 256 MiB.
        .memory_mib(256)
        .args(args)
        .run()
        .unwrap_or_else(|e| panic!("cannot run QEMU: {e}"))
}

/// The page in a kernel line `... blocked, no event logged ...` or `... write 0x2330000 ...`:
/// the suite prints the page it aimed at after `at 0x`.
fn aimed_page(line: &str) -> Option<u64> {
    let rest = line.split(" at 0x").nth(1)?;
    let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u64::from_str_radix(&hex, 16).ok().map(|p| p & !0xfff)
}

/// QEMU's translations for `id`: (guest page, host page), from its trace lines
/// `amdvi_translation_result devid: 00:04.0 gpa 0x... hpa 0x...`.
fn translations(stderr: &str, id: u16) -> Result<Vec<(u64, u64)>, String> {
    let devid = format!(
        "devid: {:02x}:{:02x}.{:x} ",
        id >> 8,
        (id >> 3) & 0x1f,
        id & 7
    );
    let mut out = Vec::new();
    for line in stderr
        .lines()
        .filter(|l| l.contains("amdvi_translation_result") && l.contains(&devid))
    {
        let field = |key: &str| {
            line.split(&format!(" {key} 0x"))
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| u64::from_str_radix(v, 16).ok())
        };
        let (Some(gpa), Some(hpa)) = (field("gpa"), field("hpa")) else {
            return Err(format!("unreadable trace line `{line}`"));
        };
        out.push((gpa & !0xfff, hpa & !0xfff));
    }
    Ok(out)
}

#[test]
fn a_device_reaches_only_the_memory_its_function_owns_behind_an_amd_iommu() {
    let name = "iommu_amd";
    if !qemu_or_skip(name) {
        return;
    }
    let outcome = boot("test=iommu_amd");
    check(name, &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(4)?;
        let serial = &outcome.serial;
        ensure!(
            serial.contains("iommu: 1 AMD IOMMU(s) on"),
            "the AMD IOMMU did not come on"
        );
        let line = serial
            .lines()
            .find(|l| l.starts_with("iommu: 1 unit(s), translation on, edu isolated"))
            .ok_or("no isolation line")?;
        ensure!(
            line.contains(&format!("{EDU_ID:04x}")),
            "`{line}` does not name edu's requester ID {EDU_ID:04x}"
        );
        ensure!(
            serial.contains("iommu: edu round trip through its own DMA memory: 256 bytes equal"),
            "no round-trip line"
        );
        let blocked: Vec<u64> = serial
            .lines()
            .filter(|l| l.starts_with("iommu: edu write to memory") && l.contains("blocked"))
            .map(|l| aimed_page(l).ok_or(format!("no page in `{l}`")))
            .collect::<Result<_, _>>()?;
        ensure!(
            blocked.len() == 2,
            "{} blocked writes reported",
            blocked.len()
        );
        let seen = translations(&outcome.stderr, EDU_ID)?;
        ensure!(
            !seen.is_empty(),
            "QEMU traced no translation for edu: its DMA did not go through the unit"
        );
        for page in &blocked {
            // The page freed from edu's domain was edu's own before (the round trip's
            // memory, parked and reused): its last translation is the refused one.
            let last = seen.iter().rev().find(|&&(gpa, _)| gpa == *page);
            ensure!(
                last.is_some_and(|&(_, hpa)| hpa == 0),
                "QEMU's unit did not refuse edu's last write to {page:#x}: {last:x?}"
            );
        }
        // Everything else edu reached went to itself (identity maps of its own memory), and
        // nothing but the blocked pages was refused.
        let wrong: Vec<&(u64, u64)> = seen
            .iter()
            .filter(|&&(gpa, hpa)| hpa != gpa && !(hpa == 0 && blocked.contains(&gpa)))
            .collect();
        ensure!(
            wrong.is_empty(),
            "QEMU translated edu's requests elsewhere: {wrong:x?}"
        );
        Ok(())
    });
}

#[test]
fn without_remapping_the_same_write_lands_on_the_amd_machine() {
    let name = "iommu_amd_off";
    if !qemu_or_skip(name) {
        return;
    }
    let outcome = boot("test=iommu_off iommu=off");
    check(name, &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(1)?;
        ensure!(
            outcome
                .serial
                .contains("iommu: edu write to memory it was not given: landed"),
            "no landed line"
        );
        ensure!(
            translations(&outcome.stderr, EDU_ID)?
                .iter()
                .all(|&(gpa, hpa)| gpa == hpa),
            "QEMU's unit translated requests with remapping off"
        );
        Ok(())
    });
}

/// The QEMU trace lines of interrupt messages the unit was asked to remap, as
/// (requester ID, data), each with whether QEMU then refused it (`amdvi_ir_target_abort`
/// right after the request line).
fn remap_requests(stderr: &str) -> Vec<(u16, u64, bool)> {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("amdvi_ir_remap_msi_req") || l.contains("amdvi_ir_target_abort"))
        .collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.contains("amdvi_ir_remap_msi_req") {
            continue;
        }
        let field = |key: &str| {
            line.split(&format!(" {key} 0x"))
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| u64::from_str_radix(v, 16).ok())
        };
        let (Some(data), Some(devid)) = (field("data"), field("devid")) else {
            continue;
        };
        let refused = lines
            .get(i + 1)
            .is_some_and(|l| l.contains("amdvi_ir_target_abort"));
        out.push((devid as u16, data, refused));
    }
    out
}

/// The vector in a kernel line `... vector 0x3c ...`.
fn vector_in(line: &str) -> Option<u64> {
    let rest = line.split("vector 0x").nth(1)?;
    let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u64::from_str_radix(&hex, 16).ok()
}

/// Interrupt remapping on the AMD IOMMU: edu's interrupt arrives through the entry of its
/// own table; its message made to name a vector routed to the I/O APIC is refused (edu's
/// table has no such entry), and so is its write naming a vector that went back. QEMU's
/// trace shows each of those messages reaching the unit and being refused.
#[test]
fn a_device_raises_only_the_vectors_its_owner_was_given_behind_an_amd_iommu() {
    let name = "intremap_amd";
    if !qemu_or_skip(name) {
        return;
    }
    let outcome = Qemu::kernel(kernel_elf(), "test=intremap_amd")
        .machine(Machine::Q35)
        .memory_mib(256)
        .args([
            "-trace",
            "amdvi_ir_remap_msi_req",
            "-trace",
            "amdvi_ir_target_abort",
            "-device",
            "amd-iommu,pt=off,intremap=on",
            "-device",
            "edu,addr=0x4,dma_mask=0xffffffff",
        ])
        .run()
        .unwrap_or_else(|e| panic!("cannot run QEMU: {e}"));
    check(name, &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(4)?;
        let serial = &outcome.serial;
        let line = |prefix: &str| {
            serial
                .lines()
                .find(|l| l.starts_with(prefix))
                .ok_or(format!("no `{prefix}` line"))
        };
        line("intremap: amd: edu interrupt through its own table's entry")?;
        let requests = remap_requests(&outcome.stderr);
        ensure!(
            requests
                .iter()
                .any(|&(devid, _, refused)| devid == EDU_ID && !refused),
            "QEMU's unit remapped no message from edu: {requests:x?}"
        );
        let other = line("intremap: amd: edu message naming vector")?;
        ensure!(
            other.ends_with("refused, 0 arrivals; its own message again: delivered"),
            "`{other}`"
        );
        let vector = vector_in(other).ok_or("no vector in the line")?;
        ensure!(
            requests
                .iter()
                .any(|&(devid, data, refused)| devid == EDU_ID
                    && data & 0x7ff == vector
                    && refused),
            "QEMU's unit did not refuse edu's message naming {vector:#x}: {requests:x?}"
        );
        let gone = line("intremap: amd: edu write naming vector")?;
        ensure!(gone.ends_with("refused, 0 arrivals"), "`{gone}`");
        let vector = vector_in(gone).ok_or("no vector in the line")?;
        ensure!(
            requests
                .iter()
                .any(|&(_, data, refused)| data & 0x7ff == vector && refused),
            "QEMU's unit did not refuse the write naming {vector:#x}: {requests:x?}"
        );
        Ok(())
    });
}

/// Without interrupt remapping (`intremap=off`; DMA remapping stays on), edu writing a
/// made-up message is an interrupt on a vector nobody gave it: what the suite above refuses.
#[test]
fn without_interrupt_remapping_a_made_up_message_is_an_interrupt_on_the_amd_machine() {
    let name = "intremap_amd_off";
    if !qemu_or_skip(name) {
        return;
    }
    let outcome = Qemu::kernel(kernel_elf(), "test=intremap_off intremap=off")
        .machine(Machine::Q35)
        .memory_mib(256)
        .args([
            "-device",
            "amd-iommu,pt=off,intremap=on",
            "-device",
            "edu,addr=0x4,dma_mask=0xffffffff",
        ])
        .run()
        .unwrap_or_else(|e| panic!("cannot run QEMU: {e}"));
    check(name, &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(1)?;
        ensure!(
            outcome.serial.contains("iommu: 1 AMD IOMMU(s) on"),
            "the AMD IOMMU did not come on"
        );
        let line = outcome
            .serial
            .lines()
            .find(|l| l.starts_with("intremap: off: edu message for vector"))
            .ok_or("no delivered line")?;
        ensure!(line.contains(": delivered (1 arrival(s))"), "`{line}`");
        Ok(())
    });
}

/// `ivrs_ioapic`: the requester given on the command line takes the place of the IVRS's
/// (here the same 00:14.0, so everything keeps working: QEMU 10's I/O APIC messages do not
/// pass through its unit's interrupt remapping, so a wrong one would show nothing; the
/// override's effect on the tables is tested on the host), and a malformed value is
/// reported and ignored.
#[test]
fn ivrs_ioapic_names_the_io_apics_requester() {
    let name = "ivrs_ioapic";
    if !qemu_or_skip(name) {
        return;
    }
    let run = |cmdline: &str| {
        Qemu::kernel(kernel_elf(), cmdline)
            .machine(Machine::Q35)
            .memory_mib(256)
            .args([
                "-device",
                "amd-iommu,pt=off,intremap=on",
                "-device",
                "edu,addr=0x4,dma_mask=0xffffffff",
            ])
            .run()
            .unwrap_or_else(|e| panic!("cannot run QEMU: {e}"))
    };
    let outcome = run("test=intremap_amd ivrs_ioapic=0@00:14.0");
    check(name, &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(4)?;
        ensure!(
            outcome.serial.contains(
                "ivrs_ioapic: I/O APIC 0 sends as 0000:00:14.0, in place of what the IVRS says"
            ),
            "the override is not in the log"
        );
        Ok(())
    });
    let outcome = run("test=intremap_amd ivrs_ioapic=0@00:20.0");
    check("ivrs_ioapic_malformed", &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(4)?;
        ensure!(
            outcome.serial.contains(
                "ivrs_ioapic: `0@00:20.0` is not <id>@[<segment>:]<bus>:<device>.<function>; ignored"
            ),
            "no warning for the malformed value"
        );
        Ok(())
    });
}

/// The console's `iommu` command behind the AMD IOMMU: edu and NVMe bound by their drivers,
/// each isolated, each with entries in its own interrupt table (and the I/O APIC's in its
/// own), and nothing in the event log.
#[test]
fn the_console_shows_each_bound_function_with_its_own_table() {
    let name = "iommu_amd_console";
    if !qemu_or_skip(name) {
        return;
    }
    let prompt = "kernel> ";
    let wait = std::time::Duration::from_secs(60);
    let dir = qemu_tests::unique_temp_dir(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let image = dir.join("nvme.img");
    std::fs::write(&image, vec![0x5au8; 1 << 20]).expect("disk image");
    let drive = format!("if=none,id=n0,format=raw,file={}", image.display());
    let run = Qemu::kernel(kernel_elf(), "log=warn")
        .machine(Machine::Q35)
        .memory_mib(256)
        .args(["-device", "amd-iommu,pt=off,intremap=on"])
        .args(["-device", "edu,addr=0x4"])
        .args([
            "-drive",
            &drive,
            "-device",
            "nvme,serial=iommu,drive=n0,addr=0x5",
        ])
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
    check(name, &run.outcome, |outcome, _| {
        ensure!(
            outcome
                .serial
                .contains("Bound: edu at 0000:00:04.0, nvme at 0000:00:05.0."),
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
        ensure!(
            answer.contains("interrupt remapping: on, ")
                && answer.contains("each in its requester's own table"),
            "interrupts are not remapped: `{answer}`"
        );
        // Each bound driver's vectors are in its own table; the console's input vectors in
        // the I/O APIC's (00:14.0 on QEMU's IVRS).
        for who in ["00:04.0", "00:05.0", "00:14.0"] {
            ensure!(
                answer
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{who} entry 0x"))
                        && l.ends_with(", only from it")),
                "no interrupt table entry for {who}: `{answer}`"
            );
        }
        ensure!(
            answer.contains("refused requests: none"),
            "the unit logged events: `{answer}`"
        );
        Ok(())
    });
}
