//! The `boot` suite: what the foundation promises, checked on the running machine.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::alloc::Layout;

use boot::MemoryKind;

use super::Test;
use crate::ensure;
use crate::memory::{self, PAGE_SIZE, firmware, frames, heap, mmio::Mmio, paging};

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    memory_map_is_sorted_and_disjoint,
    cmdline_round_trips,
    frames_are_never_reserved_or_kernel,
    frame_double_free_is_refused,
    heap_allocates_and_releases,
    mmio_maps_uncached_and_unmaps_on_drop,
    mmio_refuses_ram,
    tsc_is_calibrated,
    config_space_methods_agree,
    recovery_point_contains_a_page_fault,
    recovery_point_contains_a_panic,
    recovery_point_passes_results_through,
];

/// A page fault inside `contain` returns an error naming it; the kernel goes on.
fn recovery_point_contains_a_page_fault() -> Result<(), String> {
    use crate::cpu::recover::{Fault, contain};
    let r = contain(|| {
        // SAFETY: deliberately reads page 0, which the kernel leaves unmapped, to raise a
        // page fault inside the recovery point; the read never completes.
        unsafe { core::arch::asm!("mov {0}, [{1}]", out(reg) _, in(reg) 8u64) };
        1u32
    });
    match r {
        Err(Fault::Exception {
            vector: 14, cr2: 8, ..
        }) => {}
        other => {
            return Err(alloc::format!(
                "expected a page fault at 0x8, got {other:?}"
            ));
        }
    }
    // And again: the recovery point is reusable after a fault.
    ensure!(
        matches!(contain(|| 7u8), Ok(7)),
        "contain after a fault did not run"
    );
    Ok(())
}

/// A panic inside `contain` returns an error naming its line; the kernel goes on.
fn recovery_point_contains_a_panic() -> Result<(), String> {
    use crate::cpu::recover::{Fault, contain};
    let line = line!() + 1;
    let r: Result<(), Fault> = contain(|| panic!("deliberate, inside a recovery point"));
    match r {
        Err(Fault::Panic(site)) if site.line == line && site.file().ends_with("boot_suite.rs") => {
            Ok(())
        }
        other => Err(alloc::format!(
            "expected a panic at line {line}, got {other:?}"
        )),
    }
}

/// Without a fault, `contain` returns what the closure returned, and nothing is left active.
fn recovery_point_passes_results_through() -> Result<(), String> {
    let v = crate::cpu::recover::contain(|| alloc::vec![1u8, 2, 3]);
    ensure!(matches!(v.as_deref(), Ok([1, 2, 3])), "got {v:?}");
    ensure!(
        !crate::cpu::recover::active(),
        "a recovery point stayed active"
    );
    Ok(())
}

fn memory_map_is_sorted_and_disjoint() -> Result<(), String> {
    let map = crate::bootinfo::get().memory_map();
    ensure!(!map.is_empty(), "empty memory map");
    for pair in map.windows(2) {
        ensure!(
            pair[0].end() <= pair[1].start,
            "regions overlap or are unsorted: {:x?} then {:x?}",
            pair[0],
            pair[1]
        );
    }
    ensure!(map.iter().all(|r| r.len > 0), "zero-sized region kept");
    let usable = crate::bootinfo::get().usable_bytes();
    ensure!(usable >= 16 << 20, "only {usable} bytes usable");
    Ok(())
}

fn cmdline_round_trips() -> Result<(), String> {
    let cmdline = crate::bootinfo::get().cmdline();
    let options = crate::options::parse(cmdline);
    ensure!(
        options.test == Some("boot"),
        "test= parsed as {:?} from {cmdline:?}",
        options.test
    );
    // The runner checks the printed BOOTINFO line against the exact text it passed.
    crate::serial_println!("CMDLINE {cmdline}");
    Ok(())
}

/// Why an address must never be handed out, if it must not.
fn forbidden(addr: u64, acpi: &firmware::AcpiRanges) -> Option<String> {
    let boot = crate::bootinfo::get();
    let image = memory::kernel_image();
    let page = (addr, addr + PAGE_SIZE);
    let overlaps = |r: (u64, u64)| page.0 < r.1 && r.0 < page.1;
    if addr < memory::LOW_MEMORY_END {
        return Some("low memory".to_string());
    }
    if overlaps(image.all) {
        return Some("kernel image".to_string());
    }
    if overlaps((boot.raw_address, boot.raw_address + boot.raw_size)) {
        return Some("boot information".to_string());
    }
    if let Some(r) = acpi.as_slice().iter().find(|r| overlaps(**r)) {
        return Some(alloc::format!("ACPI table {:#x}..{:#x}", r.0, r.1));
    }
    let in_usable = boot
        .memory_map()
        .iter()
        .any(|r| r.kind == MemoryKind::Usable && r.start <= page.0 && page.1 <= r.end());
    if !in_usable {
        return Some("not inside a usable region".to_string());
    }
    None
}

fn frames_are_never_reserved_or_kernel() -> Result<(), String> {
    let acpi = firmware::found();
    ensure!(
        !acpi.as_slice().is_empty(),
        "no ACPI tables found to check against"
    );
    let before = frames::with(|f| f.free_bytes());
    let mut taken = Vec::new();
    for _ in 0..4096 {
        let Some(frame) = frames::with(|f| f.allocate()) else {
            break;
        };
        taken.push(frame.start_address().as_u64());
    }
    let block = frames::with(|f| f.allocate_contiguous(64, 64 * PAGE_SIZE))
        .ok_or("no 64-frame aligned block")?;
    ensure!(block % (64 * PAGE_SIZE) == 0, "block {block:#x} misaligned");
    ensure!(taken.len() == 4096, "only {} frames available", taken.len());
    let mut all: Vec<u64> = taken.clone();
    all.extend((0..64).map(|i| block + i * PAGE_SIZE));
    for &addr in &all {
        if let Some(why) = forbidden(addr, acpi) {
            return Err(alloc::format!("frame {addr:#x} handed out: {why}"));
        }
        // The frame is really usable RAM: write and read back through the identity map.
        let p = addr as *mut u64;
        // SAFETY: the frame was just allocated to this test, is RAM and identity-mapped.
        unsafe { p.write_volatile(addr ^ 0x5a5a_5a5a) };
        // SAFETY: as above.
        let back = unsafe { p.read_volatile() };
        ensure!(
            back == addr ^ 0x5a5a_5a5a,
            "frame {addr:#x} did not hold a value"
        );
    }
    let mut sorted = all.clone();
    sorted.sort_unstable();
    sorted.dedup();
    ensure!(sorted.len() == all.len(), "a frame was handed out twice");
    for &addr in &taken {
        frames::with(|f| f.free(addr, 1)).map_err(|e| alloc::format!("free {addr:#x}: {e:?}"))?;
    }
    frames::with(|f| f.free(block, 64)).map_err(|e| alloc::format!("free block: {e:?}"))?;
    let after = frames::with(|f| f.free_bytes());
    ensure!(after == before, "free bytes {before} before, {after} after");
    Ok(())
}

fn frame_double_free_is_refused() -> Result<(), String> {
    let frame = frames::with(|f| f.allocate())
        .ok_or("no frame")?
        .start_address()
        .as_u64();
    frames::with(|f| f.free(frame, 1)).map_err(|e| alloc::format!("first free: {e:?}"))?;
    let second = frames::with(|f| f.free(frame, 1));
    ensure!(
        second == Err(frames::FreeError::AlreadyFree(frame)),
        "second free gave {second:?}"
    );
    let kernel = memory::kernel_image().all.0;
    let r = frames::with(|f| f.free(kernel, 1));
    ensure!(
        r == Err(frames::FreeError::NotAllocatable(kernel)),
        "freeing the kernel gave {r:?}"
    );
    Ok(())
}

fn heap_allocates_and_releases() -> Result<(), String> {
    let (used_before, free_before) = heap::usage();
    {
        let big: Vec<u64> = (0..128 * 1024).collect();
        ensure!(
            big.iter().enumerate().all(|(i, v)| *v == i as u64),
            "big vector corrupted"
        );
        let boxed = Box::new([7u8; 4096]);
        ensure!(boxed.iter().all(|b| *b == 7), "box corrupted");
        let strings: Vec<String> = (0..1000).map(|i| alloc::format!("item {i}")).collect();
        ensure!(strings[999] == "item 999", "string corrupted");
        let (used, _) = heap::usage();
        ensure!(
            used >= used_before + 1024 * 1024,
            "heap use did not grow: {used}"
        );
    }
    let (used_after, free_after) = heap::usage();
    ensure!(
        used_after == used_before && free_after == free_before,
        "heap not back to baseline: used {used_before}->{used_after}, free {free_before}->{free_after}"
    );
    let too_big = Layout::from_size_align(free_after + 4096, 8).map_err(|e| e.to_string())?;
    if let Some(p) = heap::try_allocate(too_big) {
        // SAFETY: `p` was just allocated with `too_big`.
        unsafe { heap::deallocate(p, too_big) };
        return Err("an allocation larger than the heap succeeded".to_string());
    }
    Ok(())
}

/// IOAPIC register select / window offsets and the version register (82093AA §3.0).
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const IOAPIC_VERSION: u32 = 0x01;

fn mmio_maps_uncached_and_unmaps_on_drop() -> Result<(), String> {
    let phys = crate::platform::get()
        .and_then(|p| p.io_apics.first().map(|i| i.address))
        .ok_or("no IOAPIC in the MADT to map")?;
    let window_before = memory::mmio::window_free_bytes();
    let virt = {
        let ioapic = Mmio::map(phys, 0x20).map_err(|e| e.to_string())?;
        let virt = ioapic.virt();
        ensure!(
            virt >= paging::MMIO_BASE,
            "mapped at {virt:#x}, outside the MMIO window"
        );
        ensure!(
            ioapic.len() == 0x20 && !ioapic.is_empty(),
            "mapping length {}",
            ioapic.len()
        );
        let translated = paging::with(|s| s.translate(virt));
        ensure!(
            translated == Some(phys),
            "{virt:#x} translates to {translated:x?}"
        );
        // A write through the mapping (IOREGSEL holds the index), then a read of what it selects.
        let version = x86_64::instructions::interrupts::without_interrupts(|| {
            ioapic.write32(IOREGSEL, IOAPIC_VERSION);
            let selected = ioapic.read32(IOREGSEL) & 0xff;
            (selected, ioapic.read32(IOWIN))
        });
        ensure!(
            version.0 == IOAPIC_VERSION,
            "IOREGSEL reads {:#x} after writing 1",
            version.0
        );
        // 82093AA: version 0x11; QEMU and newer chipsets: 0x20. Max entry in bits 16-23.
        ensure!(
            matches!(version.1 & 0xff, 0x11..=0x20) && (version.1 >> 16) & 0xff >= 15,
            "IOAPIC version register reads {:#x}",
            version.1
        );
        virt
    };
    let after_drop = paging::with(|s| s.translate(virt));
    ensure!(
        after_drop.is_none(),
        "{virt:#x} still mapped after drop ({after_drop:x?})"
    );
    ensure!(
        memory::mmio::window_free_bytes() == window_before,
        "virtual window not restored after drop"
    );
    let again = Mmio::map(phys, 0x20).map_err(|e| e.to_string())?;
    ensure!(
        again.virt() == virt,
        "virtual range not reused: {:#x} vs {virt:#x}",
        again.virt()
    );
    Ok(())
}

fn mmio_refuses_ram() -> Result<(), String> {
    let kernel = memory::kernel_image().all.0;
    match Mmio::map(kernel, 4096) {
        Err(memory::mmio::MapError::OverlapsRam { .. }) => Ok(()),
        Err(e) => Err(alloc::format!("wrong error: {e}")),
        Ok(m) => Err(alloc::format!("RAM at {:#x} mapped as MMIO", m.phys())),
    }
}

fn tsc_is_calibrated() -> Result<(), String> {
    let hz = crate::time::tsc_hz();
    ensure!(
        (100_000_000..=20_000_000_000).contains(&hz),
        "TSC rate {hz} Hz is implausible"
    );
    let a = crate::time::micros_since_boot();
    let b = crate::time::micros_since_boot();
    ensure!(b >= a && a > 0, "clock not monotonic: {a} then {b}");
    Ok(())
}

fn config_space_methods_agree() -> Result<(), String> {
    let config = crate::pcie::config().ok_or("no config access")?;
    let ecam = crate::platform::get()
        .map(|p| p.ecam.clone())
        .unwrap_or_default();
    ensure!(
        config.ecam_regions() == ecam,
        "ECAM windows differ from the MCFG"
    );
    ensure!(
        config.extended() == !ecam.is_empty(),
        "extended config space without ECAM"
    );
    let host = pci_types::PciAddress::new(0, 0, 0, 0);
    let (reads_before, _) = config.counts();
    let id = config.read(host, 0);
    let class = config.read(host, 8);
    ensure!(config.counts().0 == reads_before + 2, "access counter off");
    ensure!(
        id != u32::MAX && id & 0xffff != 0,
        "no host bridge at 00:00.0 (read {id:#x})"
    );
    ensure!(
        class >> 16 == 0x0600,
        "00:00.0 is class {:#06x}, not a host bridge",
        class >> 16
    );
    // Mechanism #1 is the independent path to the same registers (q35 and i440fx have both).
    let port = crate::pcie::port_io();
    ensure!(
        port.read(host, 0) == id,
        "port I/O reads {:#x}, ECAM {id:#x}",
        port.read(host, 0)
    );
    ensure!(port.read(host, 8) == class, "class differs between methods");
    ensure!(
        config.read(host, 0x1000 - 4) != 0 || config.extended(),
        "unreachable offset answered"
    );
    Ok(())
}
