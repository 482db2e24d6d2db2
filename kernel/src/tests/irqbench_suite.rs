//! The `irqbench` suite: what one device interrupt costs, in guest instructions.
//!
//! Meant to run under `-icount shift=0,sleep=off`, where QEMU advances the TSC by exactly one
//! per guest instruction, so every TSC delta below is an instruction count (on real hardware
//! or without `-icount` they are TSC ticks instead). The device is QEMU's `edu` (`-device
//! edu`; QEMU docs/specs/edu.rst), which raises its interrupt synchronously inside the write
//! to its raise register (0x60) and signals it through MSI.
//!
//! One round trip, timed with `rdtsc` at three points:
//!
//! 1. `t0`: just before the write of 1 to the raise register;
//! 2. `handler`: the first thing the handler does (after the CPU's delivery, the IDT stub,
//!    `exception_dispatch` and `dispatch`);
//! 3. `t2`: when the busy-waiting code sees the handler's count go up, that is after the rest
//!    of the handler (status read at 0x24, acknowledge at 0x64), the dispatcher's EOI, the
//!    stub's register restore and `iretq`, plus up to one iteration of the wait loop.
//!
//! The wait is a plain busy loop with interrupts enabled (no `hlt`: with `sleep=off` a halted
//! CPU jumps virtual time forward to the next timer, which is not an instruction count).
//!
//! Printed, for [`ROUNDS`] round trips (all values in TSC ticks = instructions under icount):
//!
//! ```text
//! IRQBENCH mode=<xAPIC|x2APIC> vector=<hex> tsc_hz=<hz>
//! IRQBENCH rdtsc_back_to_back=<median>
//! IRQBENCH baseline=<median>
//! IRQBENCH roundtrips=<n> raise_to_handler=<median> handler_to_return=<median> total=<median> min=<min>
//! ```
//!
//! `rdtsc_back_to_back` is two consecutive `rdtsc` reads (the cost of the measurement
//! itself); `baseline` is `rdtsc`, a write of edu's liveness register (0x04), its read back,
//! `rdtsc`: the same measurement around MMIO accesses with no interrupt involved. The figures
//! are printed raw; subtracting the baseline is left to the reader (the host-side `irqbench`
//! prints both). This is a benchmark: the test fails only if no figures could be collected,
//! never because of a figure.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use pci::irq::{IrqKind, IrqKinds};

use super::Test;
use crate::ensure;
use crate::interrupts::lapic;
use crate::memory::mmio::Mmio;
use crate::pciirq;
use crate::time::rdtsc;

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![edu_msi_round_trip_instructions];

const EDU: (u16, u16) = (0x1234, 0x11e8);
const EDU_ID: u64 = 0x00;
const EDU_LIVENESS: u64 = 0x04;
const EDU_IRQ_STATUS: u64 = 0x24;
const EDU_IRQ_RAISE: u64 = 0x60;
const EDU_IRQ_ACK: u64 = 0x64;
/// Round trips measured (and baseline samples taken).
pub const ROUNDS: usize = 1000;
/// How long one interrupt may take to arrive before the run counts as failed, in ms.
const ARRIVAL_LIMIT_MS: u64 = 100;

/// The handler's `rdtsc`, taken first thing in the handler.
static HANDLER_TSC: AtomicU64 = AtomicU64::new(0);
/// Interrupts the handler acknowledged.
static HITS: AtomicU64 = AtomicU64::new(0);

fn median(samples: &mut [u64]) -> u64 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Spins until [`HITS`] reaches `target`; returns the TSC at that moment, or `None` after
/// `deadline` (a TSC value).
fn wait_for_hit(target: u64, deadline: u64) -> Option<u64> {
    loop {
        if HITS.load(Ordering::Acquire) >= target {
            return Some(rdtsc());
        }
        if rdtsc() > deadline {
            return None;
        }
    }
}

fn edu_msi_round_trip_instructions() -> Result<(), String> {
    ensure!(
        x86_64::instructions::interrupts::are_enabled(),
        "interrupts are disabled"
    );
    let mode = match lapic::get() {
        Some(l) if l.is_x2apic() => "x2APIC",
        Some(_) => "xAPIC",
        None => return Err("no local APIC".into()),
    };
    let address = pciirq::find(EDU.0, EDU.1).ok_or("no edu device (-device edu)")?;
    let function = pciirq::claim(address).ok_or("edu already claimed")?;
    let bar = function.info().bars[0].ok_or("edu has no BAR 0")?;
    let regs = Arc::new(Mmio::map(bar.address, bar.size).map_err(|e| alloc::format!("{e}"))?);
    ensure!(
        regs.read32(EDU_ID) & 0xffff == 0x00ed,
        "edu identification reads {:#x}",
        regs.read32(EDU_ID)
    );
    let vectors = function
        .alloc_irq_vectors(1, 1, IrqKinds::MSI)
        .map_err(|(_, e)| alloc::format!("alloc_irq_vectors: {e}"))?;
    ensure!(
        vectors.kind() == IrqKind::Msi,
        "granted {} instead of MSI",
        vectors.kind()
    );
    let vector = vectors.vector(0).ok_or("no vector 0")?.number();
    let tsc_hz = crate::time::tsc_hz();
    crate::serial_println!("IRQBENCH mode={mode} vector={vector:#04x} tsc_hz={tsc_hz}");

    // The cost of the measurement itself: two reads of the TSC in a row.
    let mut back_to_back: Vec<u64> = (0..ROUNDS)
        .map(|_| {
            let a = rdtsc();
            let b = rdtsc();
            b.wrapping_sub(a)
        })
        .collect();
    crate::serial_println!("IRQBENCH rdtsc_back_to_back={}", median(&mut back_to_back));

    // Baseline: the same timing around an MMIO write and a read back, no interrupt.
    let mut baseline = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS as u32 {
        let t0 = rdtsc();
        regs.write32(EDU_LIVENESS, i);
        let back = regs.read32(EDU_LIVENESS);
        let t1 = rdtsc();
        ensure!(
            back == !i,
            "edu liveness register read {back:#x} after writing {i:#x}"
        );
        baseline.push(t1.wrapping_sub(t0));
    }
    crate::serial_println!("IRQBENCH baseline={}", median(&mut baseline));

    HITS.store(0, Ordering::Release);
    let r = regs.clone();
    let registration = vectors
        .request(0, "irqbench", move || {
            let now = rdtsc();
            let status = r.read32(EDU_IRQ_STATUS);
            if status != 0 {
                r.write32(EDU_IRQ_ACK, status);
                HANDLER_TSC.store(now, Ordering::Relaxed);
                HITS.fetch_add(1, Ordering::Release);
            }
        })
        .map_err(|e| alloc::format!("request: {e}"))?;

    // TSC ticks per millisecond; at least a 1 GHz TSC's, should calibration have failed.
    let limit = ARRIVAL_LIMIT_MS * (tsc_hz / 1000).max(1_000_000);
    let mut to_handler = Vec::with_capacity(ROUNDS);
    let mut to_return = Vec::with_capacity(ROUNDS);
    let mut total = Vec::with_capacity(ROUNDS);
    let mut failure = None;
    for i in 1..=ROUNDS as u64 {
        let t0 = rdtsc();
        regs.write32(EDU_IRQ_RAISE, 1);
        let Some(t2) = wait_for_hit(i, t0 + limit) else {
            failure = Some(alloc::format!(
                "round trip {i}: no interrupt within {ARRIVAL_LIMIT_MS} ms"
            ));
            break;
        };
        let handler = HANDLER_TSC.load(Ordering::Relaxed);
        if !(t0..=t2).contains(&handler) {
            failure = Some(alloc::format!(
                "round trip {i}: handler timestamp {handler} outside [{t0}, {t2}]"
            ));
            break;
        }
        to_handler.push(handler - t0);
        to_return.push(t2 - handler);
        total.push(t2 - t0);
    }
    // Nothing may arrive after the last round trip.
    crate::time::busy_wait_us(1000);
    let hits = HITS.load(Ordering::Acquire);
    drop(registration);
    drop(vectors);
    if let Some(reason) = failure {
        return Err(reason);
    }
    ensure!(
        hits == ROUNDS as u64,
        "{ROUNDS} raises, the handler counted {hits}"
    );
    let min = total.iter().copied().min().unwrap_or(0);
    crate::serial_println!(
        "IRQBENCH roundtrips={} raise_to_handler={} handler_to_return={} total={} min={min}",
        total.len(),
        median(&mut to_handler),
        median(&mut to_return),
        median(&mut total),
    );
    Ok(())
}
