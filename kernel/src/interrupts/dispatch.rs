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
//! A handler that panics is contained: [`dispatch`] runs each handler inside
//! `cpu::unwind::catch`, so the panic unwinds to the handler call and never through the
//! interrupt frame. The table parks the handler (it never runs again; its owner's `Drop`
//! still uninstalls it), the interrupt is acknowledged, and the fault is queued for
//! [`take_faults`]: `crate::bus` drops the owning driver outside interrupt context
//! (docs/faults.md).
//!
//! The table's locks are also taken in interrupt context, so every call here runs with
//! interrupts off (`without_interrupts`; the interrupt gate for [`dispatch`]).
//!
//! The functions without a CPU act on the current CPU ([`vectors::current_cpu`]); the `_on`
//! ones take the allocator's CPU index, as `pci::platform::Interrupts` hands it.

use alloc::vec::Vec;

use pci::dispatch::{DispatchTable, Dispatched};
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

use crate::cpu::unwind::{self, Caught};

use super::{lapic, vectors};

pub use pci::dispatch::{Handler, InstallError};

/// CPUs the table has room for (allocator indices `0..MAX_CPUS`).
pub const MAX_CPUS: usize = 4;

static TABLE: DispatchTable<MAX_CPUS> = DispatchTable::new();

/// A handler that panicked: where it was installed and what the panic said.
#[derive(Clone, Debug)]
pub struct HandlerFault {
    /// CPU (allocator index).
    pub cpu: u32,
    /// Vector.
    pub vector: u8,
    /// Who installed the handler.
    pub owner: &'static str,
    /// The panic.
    pub caught: Caught,
    /// For a handler on a shared INTx line (which the line's dispatcher runs): the line's
    /// GSI and the handler's id on it. `None` for a handler installed on its own vector.
    pub line: Option<(u32, u64)>,
}

/// Queues a fault caught outside [`dispatch`] (a handler on a shared INTx line) for
/// [`take_faults`]. Called with interrupts off (from the line's dispatcher).
pub fn report_fault(fault: HandlerFault) {
    FAULTS.lock().push(fault);
}

/// Handler faults not yet taken by [`take_faults`]. Locked with interrupts off only.
static FAULTS: Mutex<Vec<HandlerFault>> = Mutex::new(Vec::new());

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

/// (CPU, vector) of every installed handler (a driver's are those its probe installed).
pub fn installed_slots() -> Vec<(u32, u8)> {
    without_interrupts(|| TABLE.installed())
        .into_iter()
        .map(|i| (i.cpu, i.vector))
        .collect()
}

/// Takes the handler faults reported since the last call.
pub fn take_faults() -> Vec<HandlerFault> {
    without_interrupts(|| core::mem::take(&mut *FAULTS.lock()))
}

/// How the handler on `vector` of the current CPU is delivered ("" if none).
pub fn kind(vector: u8) -> &'static str {
    without_interrupts(|| TABLE.kind(vectors::current_cpu(), vector))
}

/// Runs the handler for `vector` on this CPU and acknowledges it (interrupts are disabled:
/// interrupt gate).
pub fn dispatch(vector: u8) {
    let lapic = lapic::get();
    let cpu = vectors::current_cpu();
    let mut caught = None;
    let dispatched = TABLE.dispatch_with(cpu, vector, |handler| match unwind::catch(handler) {
        Ok(()) => true,
        Err(c) => {
            caught = Some(c);
            false
        }
    });
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
        Dispatched::Faulted { owner } => {
            if let Some(l) = lapic {
                l.eoi();
            }
            log::error!(
                "irq: the handler of {owner} on vector {vector:#04x} panicked; parked, its driver will be unbound"
            );
            if let Some(caught) = caught {
                FAULTS.lock().push(HandlerFault {
                    cpu,
                    vector,
                    owner,
                    caught,
                    line: None,
                });
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
