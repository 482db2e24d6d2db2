//! The dispatch table: which handler runs for which vector, and what arrived.
//!
//! Handlers are `'static` closures owned by this table (not by the driver): installing one
//! moves it in, and only the table drops it. That is what keeps a leaked guard harmless: if a
//! driver `mem::forget`s the guard that would have uninstalled its handler, the handler simply
//! stays here, the vector stays allocated (see `pci::irq`), and nothing dangles.
//!
//! Every arrival is counted per vector. A vector with no handler (never allocated, or already
//! released) is counted and logged as spurious, and acknowledged if the APIC has it in service:
//! never a crash.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use super::lapic;

/// A handler: runs in interrupt context with interrupts disabled; must not block.
pub type Handler = Box<dyn FnMut() + Send>;

struct Slot {
    handler: Option<Handler>,
    /// Who installed it (for the `irqs` listing).
    owner: &'static str,
    /// How it arrives: "MSI-X", "MSI", "INTx", "IOAPIC", "LAPIC", ...
    kind: &'static str,
    /// Bumped by every install and uninstall, so a handler taken out to run is only put
    /// back if nobody uninstalled (or replaced) it meanwhile.
    generation: u64,
}

impl Slot {
    const EMPTY: Slot = Slot {
        handler: None,
        owner: "",
        kind: "",
        generation: 0,
    };
}

static TABLE: Mutex<[Slot; 256]> = Mutex::new([Slot::EMPTY; 256]);
static COUNTS: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
static SPURIOUS: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

/// Why a handler could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallError {
    /// Another handler holds the vector.
    Busy(u8),
}

/// Installs `handler` for `vector`.
pub fn install(
    vector: u8,
    owner: &'static str,
    kind: &'static str,
    handler: Handler,
) -> Result<(), InstallError> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut table = TABLE.lock();
        let slot = &mut table[usize::from(vector)];
        if slot.handler.is_some() {
            return Err(InstallError::Busy(vector));
        }
        slot.handler = Some(handler);
        slot.owner = owner;
        slot.kind = kind;
        slot.generation += 1;
        Ok(())
    })
}

/// Removes and drops the handler of `vector`; returns whether there was one.
pub fn uninstall(vector: u8) -> bool {
    let old = x86_64::instructions::interrupts::without_interrupts(|| {
        let mut table = TABLE.lock();
        let slot = &mut table[usize::from(vector)];
        slot.owner = "";
        slot.generation += 1;
        slot.handler.take()
    });
    old.is_some()
}

/// Whether a handler is installed for `vector`.
pub fn is_installed(vector: u8) -> bool {
    x86_64::instructions::interrupts::without_interrupts(|| {
        TABLE.lock()[usize::from(vector)].handler.is_some()
    })
}

/// Interrupts handled on `vector` so far.
pub fn count(vector: u8) -> u64 {
    COUNTS[usize::from(vector)].load(Ordering::Relaxed)
}

/// Spurious arrivals on `vector` so far.
pub fn spurious(vector: u8) -> u64 {
    SPURIOUS[usize::from(vector)].load(Ordering::Relaxed)
}

/// Spurious arrivals on all vectors.
pub fn spurious_total() -> u64 {
    SPURIOUS.iter().map(|c| c.load(Ordering::Relaxed)).sum()
}

/// (vector, owner, count) of every installed handler.
pub fn installed() -> alloc::vec::Vec<(u8, &'static str, u64)> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let table = TABLE.lock();
        (0..=255u8)
            .filter(|v| table[usize::from(*v)].handler.is_some())
            .map(|v| (v, table[usize::from(v)].owner, count(v)))
            .collect()
    })
}

/// How the handler on `vector` is delivered ("" if none).
pub fn kind(vector: u8) -> &'static str {
    x86_64::instructions::interrupts::without_interrupts(|| TABLE.lock()[usize::from(vector)].kind)
}

/// Runs the handler for `vector` (interrupts are disabled: interrupt gate).
pub fn dispatch(vector: u8) {
    let lapic = lapic::get();
    if vector == lapic::SPURIOUS_VECTOR {
        // APIC spurious interrupts set no ISR bit and take no EOI (SDM vol. 3A §11.9).
        SPURIOUS[usize::from(vector)].fetch_add(1, Ordering::Relaxed);
        return;
    }
    let taken = {
        let mut table = TABLE.lock();
        let slot = &mut table[usize::from(vector)];
        slot.handler.take().map(|h| (h, slot.generation))
    };
    match taken {
        Some((mut handler, generation)) => {
            // The handler runs without the table locked (it may take other locks); if it was
            // uninstalled meanwhile, it is dropped here instead of coming back.
            handler();
            let mut table = TABLE.lock();
            let slot = &mut table[usize::from(vector)];
            if slot.generation == generation && slot.handler.is_none() {
                slot.handler = Some(handler);
            }
            COUNTS[usize::from(vector)].fetch_add(1, Ordering::Relaxed);
            if let Some(l) = lapic {
                l.eoi();
            }
        }
        None => {
            let n = SPURIOUS[usize::from(vector)].fetch_add(1, Ordering::Relaxed) + 1;
            if n <= 3 || n.is_power_of_two() {
                log::warn!(
                    "irq: spurious interrupt on vector {vector:#04x} (no handler; {n} so far)"
                );
            }
            if let Some(l) = lapic
                && l.in_service(vector)
            {
                l.eoi();
            }
        }
    }
}
