//! The `irq` suite: interrupt delivery on the running machine (local APIC in whichever mode
//! was chosen, the dispatch table, spurious accounting).

use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{Test, wait_for};
use crate::ensure;
use crate::interrupts::{dispatch, idle, lapic};

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    lapic_timer_fires_once,
    a_halted_wait_is_woken_by_the_timer,
    self_ipi_reaches_its_handler,
    interrupt_on_unallocated_vector_is_spurious,
    ioapic_entries_round_trip,
    com1_receive_interrupt_arrives_through_the_ioapic,
    thousand_allocate_release_cycles_return_to_start,
    exhaustion_is_an_error_and_earlier_vectors_keep_working,
];

fn lapic_timer_fires_once() -> Result<(), String> {
    let lapic = lapic::get().ok_or("no local APIC")?;
    // The timer's vector has the kernel's own handler from the end of the boot: the one
    // that wakes halted waits (`interrupts::idle`). Its arrivals are counted.
    ensure!(
        dispatch::is_installed(lapic::TIMER_VECTOR),
        "no handler on the timer's vector"
    );
    ensure!(idle::timer_ready(), "the timer cannot bound a sleep");
    let before = dispatch::count(lapic::TIMER_VECTOR);
    // 1 ms at the calibrated rate.
    lapic.timer_one_shot((lapic::timer_hz() / 1000).max(1));
    let fired = wait_for(100, || dispatch::count(lapic::TIMER_VECTOR) > before);
    // Give a second (wrong) expiry the chance to show up.
    crate::time::busy_wait_us(3000);
    ensure!(fired, "timer interrupt did not arrive within 100 ms");
    ensure!(
        dispatch::count(lapic::TIMER_VECTOR) == before + 1,
        "one-shot timer fired {} times",
        dispatch::count(lapic::TIMER_VECTOR) - before
    );
    ensure!(
        !lapic.in_service(lapic::TIMER_VECTOR),
        "timer vector left in service (no EOI)"
    );
    Ok(())
}

/// `interrupts::idle::idle_until`, the sleep drivers' waits take between looks: halted until
/// the timer armed for its bound, without a busy loop, and never with interrupts off.
fn a_halted_wait_is_woken_by_the_timer() -> Result<(), String> {
    use x86_64::instructions::interrupts::{are_enabled, without_interrupts};
    ensure!(idle::timer_ready(), "the timer cannot bound a sleep");
    ensure!(are_enabled(), "interrupts off before the test");
    let before = dispatch::count(lapic::TIMER_VECTOR);
    let start = crate::time::micros_since_boot();
    let until = start + 2_000;
    let (mut rounds, mut looks) = (0u64, 0u64);
    while crate::time::micros_since_boot() < until && rounds < 1_000 {
        let held = idle::idle_until(until, &mut || {
            looks += 1;
            false
        });
        ensure!(!held, "a condition that never holds was reported held");
        rounds += 1;
    }
    let waited = crate::time::micros_since_boot() - start;
    ensure!(are_enabled(), "interrupts off after a halted wait");
    ensure!(
        dispatch::count(lapic::TIMER_VECTOR) > before,
        "the timer did not fire during the wait"
    );
    // A spinning wait comes back thousands of times in 2 ms; a halted one once per
    // wake-up (the timer, rounding, a stray interrupt).
    ensure!(
        rounds < 50,
        "{rounds} rounds ({looks} looks) in {waited} µs: not halted"
    );
    // A condition that holds ends it before any halt.
    let held = idle::idle_until(crate::time::micros_since_boot() + 1_000_000, &mut || true);
    ensure!(held && are_enabled(), "a holding condition was not seen");
    // With interrupts off it must not halt (nothing could wake it): one look, and the flag
    // stays off.
    let (held, off) = without_interrupts(|| {
        let held = idle::idle_until(crate::time::micros_since_boot() + 1_000_000, &mut || false);
        (held, !are_enabled())
    });
    ensure!(
        !held && off,
        "interrupts were enabled by a wait that began with them off"
    );
    ensure!(are_enabled(), "interrupts not restored");
    Ok(())
}

/// A vector in the allocatable range that no one uses in this suite.
const TEST_VECTOR: u8 = 0xE0;

fn self_ipi_reaches_its_handler() -> Result<(), String> {
    let lapic = lapic::get().ok_or("no local APIC")?;
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    dispatch::install(
        TEST_VECTOR,
        "test ipi",
        "IPI",
        alloc::boxed::Box::new(move || {
            h.fetch_add(1, Ordering::Relaxed);
        }),
    )
    .map_err(|e| alloc::format!("{e:?}"))?;
    ensure!(dispatch::is_installed(TEST_VECTOR), "install did not take");
    ensure!(
        dispatch::installed()
            .iter()
            .any(|(v, owner, _)| *v == TEST_VECTOR && *owner == "test ipi"),
        "handler missing from the listing"
    );
    for _ in 0..10 {
        lapic.self_ipi(TEST_VECTOR);
    }
    let all = wait_for(100, || hits.load(Ordering::Relaxed) >= 10);
    dispatch::uninstall(TEST_VECTOR);
    ensure!(
        all,
        "{} of 10 self-IPIs arrived",
        hits.load(Ordering::Relaxed)
    );
    ensure!(
        !lapic.in_service(TEST_VECTOR),
        "vector still in service: EOI missing"
    );
    Ok(())
}

fn interrupt_on_unallocated_vector_is_spurious() -> Result<(), String> {
    let lapic = lapic::get().ok_or("no local APIC")?;
    let vector = TEST_VECTOR + 1;
    ensure!(
        !dispatch::is_installed(vector),
        "vector {vector:#x} unexpectedly in use"
    );
    let before = dispatch::spurious(vector);
    let total_before = dispatch::spurious_total();
    let handled_before = dispatch::count(vector);
    lapic.self_ipi(vector);
    let counted = wait_for(100, || dispatch::spurious(vector) > before);
    ensure!(
        counted,
        "interrupt on an unallocated vector was not counted as spurious"
    );
    ensure!(
        dispatch::count(vector) == handled_before,
        "counted as handled"
    );
    ensure!(
        !lapic.in_service(vector),
        "spurious vector left in service (no EOI)"
    );
    // The machine is still fine: another interrupt still gets through.
    lapic.self_ipi(vector);
    ensure!(
        wait_for(100, || dispatch::spurious(vector) == before + 2),
        "second spurious interrupt lost"
    );
    ensure!(
        dispatch::spurious_total() >= total_before + 2,
        "total spurious count off"
    );
    Ok(())
}

/// A redirection entry written through IOREGSEL/IOWIN reads back as written, and stays masked.
fn ioapic_entries_round_trip() -> Result<(), String> {
    use crate::interrupts::ioapic::{self, Trigger};
    let platform = crate::platform::get().ok_or("no ACPI platform")?;
    let chip = platform.io_apics.first().ok_or("no IOAPIC")?;
    // The last input of the first IOAPIC: a PCI interrupt line nothing here has claimed.
    let gsi = chip.gsi_base + 23;
    let original = ioapic::entry(gsi).map_err(|e| alloc::format!("{e}"))?;
    ensure!(
        original & (1 << 16) != 0,
        "GSI {gsi} not masked at start: {original:#x}"
    );
    ioapic::route(gsi, TEST_VECTOR, 0, Trigger::PCI).map_err(|e| alloc::format!("{e}"))?;
    let entry = ioapic::entry(gsi).map_err(|e| alloc::format!("{e}"))?;
    ioapic::set_masked(gsi, true).map_err(|e| alloc::format!("{e}"))?;
    ensure!(
        entry & 0xff == u64::from(TEST_VECTOR),
        "vector field {:#x}",
        entry & 0xff
    );
    ensure!(
        entry & (1 << 15) != 0 && entry & (1 << 13) != 0,
        "not level/active-low: {entry:#x}"
    );
    ensure!(entry & (1 << 16) != 0, "route() left the entry unmasked");
    ensure!(
        ioapic::entry(gsi + 1000).is_err(),
        "a GSI no IOAPIC serves was accepted"
    );
    Ok(())
}

fn com1_receive_interrupt_arrives_through_the_ioapic() -> Result<(), String> {
    let vector = crate::serial::enable_receive_interrupt()?;
    while crate::serial::read_byte().is_some() {}
    let before = dispatch::count(vector);
    crate::serial::loopback(b"ping");
    let mut got = alloc::vec::Vec::new();
    let complete = wait_for(200, || {
        while let Some(b) = crate::serial::read_byte() {
            got.push(b);
        }
        got.len() >= 4
    });
    ensure!(
        complete,
        "received {:?} of \"ping\"",
        core::str::from_utf8(&got)
    );
    ensure!(got == b"ping", "received {:?}", got);
    ensure!(
        dispatch::count(vector) > before,
        "bytes arrived without a receive interrupt"
    );
    Ok(())
}

fn thousand_allocate_release_cycles_return_to_start() -> Result<(), String> {
    use crate::interrupts::vectors;
    let start = vectors::snapshot();
    for i in 0..1000u32 {
        let count = 1u8 << (i % 6);
        let block = vectors::allocate(count).map_err(|e| alloc::format!("cycle {i}: {e}"))?;
        ensure!(
            block.count() == count && block.first() % count == 0,
            "cycle {i}: bad block {block:?}"
        );
        vectors::free(block).map_err(|e| alloc::format!("cycle {i}: free: {e:?}"))?;
    }
    ensure!(
        vectors::snapshot() == start,
        "allocator not back at its starting state"
    );
    Ok(())
}

fn exhaustion_is_an_error_and_earlier_vectors_keep_working() -> Result<(), String> {
    use crate::interrupts::vectors;
    // The console's receive vector is an earlier allocation that must keep working.
    crate::serial::enable_receive_interrupt()?;
    let start = vectors::snapshot();
    let free_at_start = vectors::total_free();
    let mut held = alloc::vec::Vec::new();
    let error = loop {
        match vectors::allocate(1) {
            Ok(b) => held.push(b),
            Err(e) => break e,
        }
        ensure!(held.len() <= 256, "allocator never ran out");
    };
    let message = alloc::format!("{error}");
    let exhausted = held.len() == free_at_start && vectors::total_free() == 0;
    let block_error = vectors::allocate(8).err().map(|e| alloc::format!("{e}"));
    // The console still receives while every vector is taken.
    while crate::serial::read_byte().is_some() {}
    crate::serial::loopback(b"ok");
    let mut got = alloc::vec::Vec::new();
    let received = wait_for(200, || {
        while let Some(b) = crate::serial::read_byte() {
            got.push(b);
        }
        got.len() >= 2
    });
    for block in held {
        vectors::free(block).map_err(|e| alloc::format!("free: {e:?}"))?;
    }
    ensure!(
        exhausted,
        "ran out after {} of {free_at_start} free vectors",
        vectors::total_free()
    );
    ensure!(
        message.contains("vectors free") || message.contains("free"),
        "error says: {message}"
    );
    crate::serial_println!("exhaustion error: {message}; block of 8: {block_error:?}");
    ensure!(
        block_error.is_some(),
        "a block of 8 was granted with nothing free"
    );
    ensure!(
        received && got == b"ok",
        "console receive broke under exhaustion: {got:?}"
    );
    ensure!(
        vectors::snapshot() == start,
        "allocator not back at its starting state"
    );
    Ok(())
}
