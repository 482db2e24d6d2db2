//! The kernel's dispatch table: one `pci::dispatch::DispatchTable` (host-tested, shared with
//! the fake platform) for [`MAX_CPUS`] CPUs, and the interrupt entry that runs it and sends
//! the EOI.
//!
//! Handlers are `'static` closures owned by the table (not by the driver): installing one moves
//! it in, and only the table drops it. A leaked guard is harmless: the handler stays here, the
//! vector stays allocated (see `pci::irq`), and nothing dangles. Uninstalling waits until the
//! handler runs on no CPU (from inside the handler itself, it is dropped when it returns).
//!
//! Every arrival is counted per (CPU, vector). A vector with no handler (never allocated, or
//! already released) is counted and logged as spurious, and acknowledged if the APIC has it in
//! service: never a crash.
//!
//! The table's locks are also taken in interrupt context, so every call here runs with
//! interrupts off (`without_interrupts`; the interrupt gate for [`dispatch`]).
//!
//! The functions without a CPU act on the current CPU ([`vectors::current_cpu`]); the `_on`
//! ones take the allocator's CPU index, as `pci::platform::Interrupts` hands it.

use alloc::vec::Vec;

use pci::dispatch::{DispatchTable, Dispatched};
use x86_64::instructions::interrupts::without_interrupts;

use super::{lapic, vectors};

pub use pci::dispatch::{Handler, InstallError};

/// CPUs the table has room for (allocator indices `0..MAX_CPUS`).
pub const MAX_CPUS: usize = 4;

static TABLE: DispatchTable<MAX_CPUS> = DispatchTable::new();

/// Installs `handler` for `vector` on the current CPU.
pub fn install(
    vector: u8,
    owner: &'static str,
    kind: &'static str,
    handler: Handler,
) -> Result<(), InstallError> {
    install_on(vectors::current_cpu(), vector, owner, kind, handler)
}

/// Installs `handler` for `vector` on `cpu` (allocator index).
pub fn install_on(
    cpu: u32,
    vector: u8,
    owner: &'static str,
    kind: &'static str,
    handler: Handler,
) -> Result<(), InstallError> {
    without_interrupts(|| TABLE.install(cpu, vector, owner, kind, handler))
}

/// Removes and drops the handler of `vector` on the current CPU; whether there was one.
pub fn uninstall(vector: u8) -> bool {
    uninstall_on(vectors::current_cpu(), vector)
}

/// Removes and drops the handler of `vector` on `cpu`; whether there was one. Returns once
/// the handler runs nowhere (see the module documentation).
pub fn uninstall_on(cpu: u32, vector: u8) -> bool {
    without_interrupts(|| TABLE.uninstall(cpu, vector, vectors::current_cpu()))
}

/// Whether a handler is installed for `vector` on the current CPU.
pub fn is_installed(vector: u8) -> bool {
    is_installed_on(vectors::current_cpu(), vector)
}

/// Whether a handler is installed for `vector` on `cpu`.
pub fn is_installed_on(cpu: u32, vector: u8) -> bool {
    without_interrupts(|| TABLE.is_installed(cpu, vector))
}

/// Interrupts handled on `vector` of the current CPU so far.
pub fn count(vector: u8) -> u64 {
    TABLE.count(vectors::current_cpu(), vector)
}

/// Spurious arrivals on `vector` of the current CPU so far.
pub fn spurious(vector: u8) -> u64 {
    TABLE.spurious(vectors::current_cpu(), vector)
}

/// Spurious arrivals on all CPUs and vectors.
pub fn spurious_total() -> u64 {
    TABLE.spurious_total()
}

/// (vector, owner, count) of every installed handler, on every CPU.
pub fn installed() -> Vec<(u8, &'static str, u64)> {
    without_interrupts(|| TABLE.installed())
        .into_iter()
        .map(|i| (i.vector, i.owner, i.count))
        .collect()
}

/// How the handler on `vector` of the current CPU is delivered ("" if none).
pub fn kind(vector: u8) -> &'static str {
    without_interrupts(|| TABLE.kind(vectors::current_cpu(), vector))
}

/// Runs the handler for `vector` on this CPU and acknowledges it (interrupts are disabled:
/// interrupt gate).
pub fn dispatch(vector: u8) {
    let lapic = lapic::get();
    let dispatched = TABLE.dispatch(vectors::current_cpu(), vector);
    if vector == lapic::SPURIOUS_VECTOR {
        // APIC spurious interrupts set no ISR bit and take no EOI (SDM vol. 3A §11.9).
        return;
    }
    match dispatched {
        Dispatched::Handled => {
            if let Some(l) = lapic {
                l.eoi();
            }
        }
        Dispatched::Spurious(n) => {
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
