//! QEMU boot scenarios, one test per scenario.
//!
//! The kernel runs its built-in self tests when booted with `test=boot` (plus a random
//! `token=...` so that the command line round trip cannot pass by accident) and exits through
//! isa-debug-exit: 0x10 (QEMU exit code 33) on success, 0x11 (35) on failure. Each scenario
//! checks the exit code, the `TEST` lines, the `BOOTINFO` line (loader, command line, usable
//! memory) and `kernel ready`:
//!
//! - PVH (`-kernel`) on q35 and on pc (i440fx);
//! - a GRUB multiboot2 ISO on SeaBIOS and on OVMF (both q35), whose kernel is the build's
//!   without its debug information (checked apart: same loadable segments, no `.debug_`
//!   sections);
//! - should-fail runs: `test=pagefault` (page fault at 0xdeadb000) and `test=panic`.
//!
//! Without `qemu-system-x86_64` the scenarios print `SKIPPED` and return, unless `CI` is set.

use qemu_tests::{
    Firmware, Loader, Machine, Outcome, QEMU_EXIT_FAILURE, QEMU_EXIT_SUCCESS, Qemu, build_iso,
    check, ensure, expect_exit, kernel_elf, qemu_or_skip, random_token, strip_debug,
    unique_temp_dir,
};

/// Memory given to every VM, in MiB.
const MEMORY_MIB: u32 = 512;
/// The boot suite must report at least this many passed tests.
const MIN_PASSED: u64 = 5;
/// The address the kernel's `test=pagefault` mode touches.
const FAULT_ADDRESS: u64 = 0xdead_b000;
/// The message of the kernel's `test=panic` mode.
const PANIC_MESSAGE: &str = "deliberate panic";

/// `test=<mode> token=<random hex>`.
fn cmdline(mode: &str) -> String {
    format!("test={mode} token={}", random_token())
}

fn run(name: &str, qemu: &Qemu) -> Outcome {
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

/// Checks a `test=boot` run: exit 33, all tests ok, command line round trip, loader, usable
/// memory between `min_percent` and 100 % of the VM's memory, `kernel ready`.
#[track_caller]
fn check_boot(name: &str, outcome: &Outcome, cmdline: &str, loader: Loader, min_percent: u64) {
    let memory = u64::from(MEMORY_MIB) << 20;
    check(name, outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
        report.check_tests_passed(MIN_PASSED)?;
        let info = report
            .bootinfo
            .as_ref()
            .ok_or_else(|| "no BOOTINFO line".to_owned())?;
        ensure!(
            info.cmdline == cmdline,
            "command line round trip: passed {cmdline:?}, kernel saw {:?}",
            info.cmdline
        );
        ensure!(
            info.loader == loader,
            "loader: expected {loader}, kernel says {}",
            info.loader
        );
        ensure!(
            info.usable * 100 >= memory * min_percent && info.usable <= memory,
            "usable memory {} bytes ({:.1} MiB) is not within {min_percent}..100 % of {} MiB",
            info.usable,
            info.usable as f64 / f64::from(1u32 << 20),
            MEMORY_MIB
        );
        ensure!(report.ready, "no `kernel ready` line");
        Ok(())
    });
}

fn pvh(machine: Machine, mode: &str) -> (Qemu, String) {
    let cmdline = cmdline(mode);
    let qemu = Qemu::kernel(kernel_elf(), cmdline.clone())
        .machine(machine)
        .memory_mib(MEMORY_MIB);
    (qemu, cmdline)
}

#[test]
fn pvh_q35() {
    if !qemu_or_skip("pvh_q35") {
        return;
    }
    let (qemu, cmdline) = pvh(Machine::Q35, "boot");
    let outcome = run("pvh_q35", &qemu);
    check_boot("pvh_q35", &outcome, &cmdline, Loader::Pvh, 85);
}

#[test]
fn pvh_pc() {
    if !qemu_or_skip("pvh_pc") {
        return;
    }
    let (qemu, cmdline) = pvh(Machine::Pc, "boot");
    let outcome = run("pvh_pc", &qemu);
    check_boot("pvh_pc", &outcome, &cmdline, Loader::Pvh, 85);
}

#[track_caller]
fn grub(name: &str, firmware: Firmware, min_percent: u64) {
    if !qemu_or_skip(name) {
        return;
    }
    let cmdline = cmdline("boot");
    let iso = build_iso(kernel_elf(), &cmdline).unwrap_or_else(|e| panic!("{name}: {e}"));
    let qemu = Qemu::cdrom(&iso.path)
        .machine(Machine::Q35)
        .memory_mib(MEMORY_MIB)
        .firmware(firmware);
    let outcome = run(name, &qemu);
    check_boot(name, &outcome, &cmdline, Loader::Multiboot2, min_percent);
}

#[test]
fn grub_seabios_q35() {
    grub("grub_seabios_q35", Firmware::Bios, 85);
}

#[test]
fn grub_ovmf_q35() {
    // UEFI keeps more memory for itself (boot services data, runtime services, ACPI NVS).
    grub("grub_ovmf_q35", Firmware::Ovmf, 75);
}

/// `(virtual address, memory size, file bytes)` of each `PT_LOAD` segment of an ELF64 file.
fn loadable_segments(elf: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    assert_eq!(&elf[..5], b"\x7fELF\x02", "not an ELF64 file");
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    (0..usize::from(phnum))
        .map(|i| phoff + i * usize::from(phentsize))
        .filter(|&ph| u32_at(ph) == 1)
        .map(|ph| {
            let (offset, filesz) = (u64_at(ph + 8) as usize, u64_at(ph + 32) as usize);
            (
                u64_at(ph + 16),
                u64_at(ph + 40),
                elf[offset..offset + filesz].to_vec(),
            )
        })
        .collect()
}

/// The ISO's kernel: what runs is the build's, byte for byte; only the debug information GRUB
/// would read from the stick and never use is gone.
#[test]
fn iso_kernel_is_the_build_without_debug_information() {
    let dir = unique_temp_dir("strip");
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let stripped_path = dir.join("kernel.elf");
    strip_debug(kernel_elf(), &stripped_path).unwrap_or_else(|e| panic!("strip: {e}"));
    let built = std::fs::read(kernel_elf()).expect("read the kernel");
    let stripped = std::fs::read(&stripped_path).expect("read the stripped kernel");
    let _ = std::fs::remove_dir_all(&dir);
    let has = |elf: &[u8], name: &[u8]| elf.windows(name.len()).any(|w| w == name);
    assert!(
        has(&built, b".debug_info"),
        "the build has no debug information to strip"
    );
    assert!(
        !has(&stripped, b".debug_"),
        "debug sections left in the ISO's kernel"
    );
    assert!(
        stripped.len() * 4 < built.len(),
        "the ISO's kernel is {} bytes, the build {}",
        stripped.len(),
        built.len()
    );
    assert_eq!(
        loadable_segments(&stripped),
        loadable_segments(&built),
        "the loadable segments differ"
    );
}

#[test]
fn pagefault_is_reported() {
    if !qemu_or_skip("pagefault_is_reported") {
        return;
    }
    let (qemu, _) = pvh(Machine::Q35, "pagefault");
    let outcome = run("pagefault_is_reported", &qemu);
    check("pagefault_is_reported", &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_FAILURE)?;
        let fault = report.page_fault().ok_or_else(|| {
            "no `EXCEPTION ... (vector 14)` line (page fault) on the serial port".to_owned()
        })?;
        ensure!(
            fault.cr2 == Some(FAULT_ADDRESS),
            "page fault CR2 is {:x?}, expected Some({FAULT_ADDRESS:#x}): {}",
            fault.cr2,
            fault.line
        );
        Ok(())
    });
}

#[test]
fn panic_is_reported() {
    if !qemu_or_skip("panic_is_reported") {
        return;
    }
    let (qemu, _) = pvh(Machine::Q35, "panic");
    let outcome = run("panic_is_reported", &qemu);
    check("panic_is_reported", &outcome, |outcome, report| {
        expect_exit(outcome, QEMU_EXIT_FAILURE)?;
        let panic = report
            .panic
            .as_ref()
            .ok_or_else(|| "no `PANIC at` line on the serial port".to_owned())?;
        ensure!(
            panic.message.contains(PANIC_MESSAGE),
            "panic message {:?} does not contain {PANIC_MESSAGE:?}",
            panic.message
        );
        Ok(())
    });
}
