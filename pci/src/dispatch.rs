//! The dispatch table: which handler runs for which (CPU, vector), and what arrived.
//!
//! One type for the kernel (a `static` behind its interrupt entry) and for the fake platform
//! (`fake::irq`), so host tests exercise the code the kernel runs.
//!
//! Ownership: handlers are `'static` closures owned by the table, not by the driver.
//! [`DispatchTable::install`] moves one in; only the table drops it, on
//! [`DispatchTable::uninstall`] (or when a run ends after an uninstall). That is what keeps a
//! leaked guard harmless: if a driver `mem::forget`s the guard that would have uninstalled
//! its handler, the handler stays here, its vector stays allocated (see [`crate::irq`]), and
//! nothing dangles.
//!
//! Slots are keyed by (CPU, vector) because vectors are allocated per CPU
//! ([`crate::vectors`]): the same vector number on two CPUs is two interrupts. CPUs are the
//! allocator's indices `0..CPUS`.
//!
//! Running: [`DispatchTable::dispatch`] takes the handler out of its slot, runs it with the
//! table unlocked (it may take other locks), and puts it back only if the slot's generation
//! did not change meanwhile, so an uninstall (or an uninstall and a new install) during the
//! run wins. [`DispatchTable::uninstall`] from another CPU waits until the run is over, so
//! once it returns the handler is neither installed nor running anywhere, and what it
//! borrowed may go. From inside the handler itself (the same CPU) it cannot wait for its own
//! caller: the handler is then dropped when it returns.
//!
//! A handler that fails: [`DispatchTable::dispatch_with`] runs the handler through a
//! caller-supplied function (the kernel's catches a panic by unwinding; a host test's uses
//! `std::panic::catch_unwind`), so this crate needs no unwinder. When that function says the
//! handler did not complete, the handler is parked: it stays installed (its owner's
//! uninstall, on the normal `Drop` path, still finds and drops it, outside interrupt
//! context) but never runs again, and later arrivals on the slot count as spurious.
//!
//! Accounting: every arrival is counted per (CPU, vector); an arrival with no handler (never
//! installed, or already uninstalled) is counted as spurious and reported to the caller, which
//! acknowledges it: never a crash.
//!
//! Locking: each CPU's slots sit behind a spin lock that handlers' arrivals also take. The
//! caller must hold interrupts off on its CPU around every call (the kernel wraps them in
//! `without_interrupts`; interrupt entry already has them off), or an interrupt arriving while
//! the lock is held would spin on it forever. The handler itself runs with the lock released.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

/// A handler: runs in interrupt context (interrupts off); must not block.
pub type Handler = Box<dyn FnMut() + Send + 'static>;

/// Vectors per CPU (x86: an 8-bit vector, Intel SDM vol. 3A §6.2).
pub const VECTORS: usize = 256;

/// What [`DispatchTable::dispatch`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatched {
    /// A handler ran.
    Handled,
    /// No handler was installed (or it is parked after a fault); the spurious count of the
    /// slot is now this.
    Spurious(u64),
    /// The handler ran and did not complete (it panicked): it is parked, see the module
    /// documentation.
    Faulted {
        /// Who installed it.
        owner: &'static str,
    },
}

/// Why a handler could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallError {
    /// Another handler holds the slot.
    Busy {
        /// CPU (allocator index).
        cpu: u32,
        /// Vector.
        vector: u8,
    },
    /// The CPU index is outside the table.
    NoSuchCpu(u32),
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::Busy { cpu, vector } => {
                write!(f, "vector {vector:#04x} on CPU {cpu} already has a handler")
            }
            InstallError::NoSuchCpu(cpu) => write!(f, "no CPU {cpu} in the dispatch table"),
        }
    }
}

/// An installed handler, as listed by [`DispatchTable::installed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    /// CPU (allocator index).
    pub cpu: u32,
    /// Vector.
    pub vector: u8,
    /// Who installed it.
    pub owner: &'static str,
    /// How it arrives ("MSI-X", "MSI", "INTx", "IOAPIC", "LAPIC", ...).
    pub kind: &'static str,
    /// Arrivals handled so far.
    pub count: u64,
}

struct Slot {
    /// The installed handler while it is not running.
    handler: Option<Handler>,
    /// Whether a handler is installed (in `handler`, or out running).
    installed: bool,
    /// A handler that faulted: kept (never run) until uninstalled.
    parked: Option<Handler>,
    /// The generation of the handler out running, if one is.
    running: Option<u64>,
    /// Bumped by every install and uninstall, so a handler taken out to run is only put back
    /// if nobody uninstalled (or replaced) it meanwhile.
    generation: u64,
    /// Who installed it (for the listing).
    owner: &'static str,
    /// How it arrives.
    kind: &'static str,
}

impl Slot {
    const EMPTY: Slot = Slot {
        handler: None,
        parked: None,
        installed: false,
        running: None,
        generation: 0,
        owner: "",
        kind: "",
    };
}

/// Handlers and arrival counts for `CPUS` CPUs of [`VECTORS`] vectors each.
///
/// Const-constructible, for a `static`. See the module documentation for ownership and
/// locking (interrupts off around every call).
pub struct DispatchTable<const CPUS: usize> {
    slots: [Mutex<[Slot; VECTORS]>; CPUS],
    counts: [[AtomicU64; VECTORS]; CPUS],
    spurious: [[AtomicU64; VECTORS]; CPUS],
}

impl<const CPUS: usize> Default for DispatchTable<CPUS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CPUS: usize> DispatchTable<CPUS> {
    /// An empty table.
    pub const fn new() -> Self {
        DispatchTable {
            slots: [const { Mutex::new([Slot::EMPTY; VECTORS]) }; CPUS],
            counts: [const { [const { AtomicU64::new(0) }; VECTORS] }; CPUS],
            spurious: [const { [const { AtomicU64::new(0) }; VECTORS] }; CPUS],
        }
    }

    fn cpu(cpu: u32) -> Option<usize> {
        usize::try_from(cpu).ok().filter(|&c| c < CPUS)
    }

    /// Installs `handler` for `vector` on `cpu`; the table owns it from now on.
    pub fn install(
        &self,
        cpu: u32,
        vector: u8,
        owner: &'static str,
        kind: &'static str,
        handler: Handler,
    ) -> Result<(), InstallError> {
        let c = Self::cpu(cpu).ok_or(InstallError::NoSuchCpu(cpu))?;
        let mut slots = self.slots[c].lock();
        let slot = &mut slots[usize::from(vector)];
        if slot.installed {
            return Err(InstallError::Busy { cpu, vector });
        }
        slot.handler = Some(handler);
        slot.installed = true;
        slot.generation += 1;
        slot.owner = owner;
        slot.kind = kind;
        Ok(())
    }

    /// Removes the handler of `vector` on `cpu` and drops it; whether there was one.
    ///
    /// `current` is the CPU the caller runs on. If the handler is running on another CPU,
    /// this waits until that run is over: on return, the handler runs nowhere. Called from
    /// inside the handler itself (`current == cpu` while it runs), it cannot wait for its own
    /// caller: the handler is dropped when it returns instead of being put back.
    pub fn uninstall(&self, cpu: u32, vector: u8, current: u32) -> bool {
        let Some(c) = Self::cpu(cpu) else {
            return false;
        };
        let (handler, wait_for) = {
            let mut slots = self.slots[c].lock();
            let slot = &mut slots[usize::from(vector)];
            if !slot.installed {
                return false;
            }
            slot.installed = false;
            slot.generation += 1;
            slot.owner = "";
            slot.kind = "";
            let wait_for = slot.running.filter(|_| current != cpu);
            (slot.handler.take().or(slot.parked.take()), wait_for)
        };
        // Dropped with the table unlocked: its drop may call back into the table.
        drop(handler);
        if let Some(generation) = wait_for {
            while self.slots[c].lock()[usize::from(vector)].running == Some(generation) {
                core::hint::spin_loop();
            }
        }
        true
    }

    /// Whether a handler is installed for `vector` on `cpu` (running or not).
    pub fn is_installed(&self, cpu: u32, vector: u8) -> bool {
        Self::cpu(cpu).is_some_and(|c| self.slots[c].lock()[usize::from(vector)].installed)
    }

    /// Runs the handler of `vector` on `cpu`, as its interrupt arrived on `cpu`. The caller
    /// acknowledges the interrupt (EOI) afterwards, whatever was found.
    pub fn dispatch(&self, cpu: u32, vector: u8) -> Dispatched {
        self.dispatch_with(cpu, vector, |handler| {
            handler();
            true
        })
    }

    /// [`DispatchTable::dispatch`], running the handler through `call`, which returns whether
    /// the handler completed. `false` (it panicked, and `call` caught it) parks the handler:
    /// see the module documentation. The caller acknowledges the interrupt afterwards.
    pub fn dispatch_with(
        &self,
        cpu: u32,
        vector: u8,
        call: impl FnOnce(&mut (dyn FnMut() + Send)) -> bool,
    ) -> Dispatched {
        let Some(c) = Self::cpu(cpu) else {
            return Dispatched::Spurious(0);
        };
        let v = usize::from(vector);
        let taken = {
            let mut slots = self.slots[c].lock();
            let slot = &mut slots[v];
            let taken = slot.handler.take().map(|h| (h, slot.generation));
            if let Some((_, generation)) = taken {
                slot.running = Some(generation);
            }
            taken
        };
        let Some((mut handler, generation)) = taken else {
            let n = self.spurious[c][v].fetch_add(1, Ordering::Relaxed) + 1;
            return Dispatched::Spurious(n);
        };
        let completed = call(&mut *handler);
        let (stale, owner) = {
            let mut slots = self.slots[c].lock();
            let slot = &mut slots[v];
            slot.running = None;
            let owner = slot.owner;
            if slot.generation != generation {
                (Some(handler), owner)
            } else if completed {
                slot.handler = Some(handler);
                (None, owner)
            } else {
                slot.parked = Some(handler);
                (None, owner)
            }
        };
        // An uninstalled handler is dropped with the table unlocked.
        drop(stale);
        self.counts[c][v].fetch_add(1, Ordering::Relaxed);
        if completed {
            Dispatched::Handled
        } else {
            Dispatched::Faulted { owner }
        }
    }

    /// Arrivals handled on `vector` of `cpu` so far.
    pub fn count(&self, cpu: u32, vector: u8) -> u64 {
        Self::cpu(cpu).map_or(0, |c| {
            self.counts[c][usize::from(vector)].load(Ordering::Relaxed)
        })
    }

    /// Spurious arrivals on `vector` of `cpu` so far.
    pub fn spurious(&self, cpu: u32, vector: u8) -> u64 {
        Self::cpu(cpu).map_or(0, |c| {
            self.spurious[c][usize::from(vector)].load(Ordering::Relaxed)
        })
    }

    /// Spurious arrivals on every CPU and vector.
    pub fn spurious_total(&self) -> u64 {
        self.spurious
            .iter()
            .flatten()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// How the handler on `vector` of `cpu` arrives ("" if none).
    pub fn kind(&self, cpu: u32, vector: u8) -> &'static str {
        Self::cpu(cpu).map_or("", |c| self.slots[c].lock()[usize::from(vector)].kind)
    }

    /// Every installed handler, by CPU then vector.
    pub fn installed(&self) -> Vec<Installed> {
        let mut all = Vec::new();
        for (c, slots) in self.slots.iter().enumerate() {
            let cpu = c as u32;
            let slots = slots.lock();
            for (v, slot) in slots.iter().enumerate() {
                if slot.installed {
                    all.push(Installed {
                        cpu,
                        vector: v as u8,
                        owner: slot.owner,
                        kind: slot.kind,
                        count: self.counts[c][v].load(Ordering::Relaxed),
                    });
                }
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use core::sync::atomic::AtomicBool;
    use std::sync::OnceLock;

    type Table = DispatchTable<2>;

    fn counter(hits: &Arc<AtomicU64>) -> Handler {
        let h = hits.clone();
        Box::new(move || {
            h.fetch_add(1, Ordering::Relaxed);
        })
    }

    #[test]
    fn a_handler_runs_and_is_counted() {
        let table = Table::new();
        let hits = Arc::new(AtomicU64::new(0));
        table.install(0, 0x40, "t", "MSI", counter(&hits)).unwrap();
        assert!(table.is_installed(0, 0x40));
        assert_eq!(table.dispatch(0, 0x40), Dispatched::Handled);
        assert_eq!(table.dispatch(0, 0x40), Dispatched::Handled);
        assert_eq!(hits.load(Ordering::Relaxed), 2);
        assert_eq!((table.count(0, 0x40), table.spurious(0, 0x40)), (2, 0));
        assert_eq!(
            table.installed(),
            [Installed {
                cpu: 0,
                vector: 0x40,
                owner: "t",
                kind: "MSI",
                count: 2
            }]
        );
        assert_eq!(table.kind(0, 0x40), "MSI");
        assert!(table.uninstall(0, 0x40, 0));
        assert!(!table.uninstall(0, 0x40, 0), "uninstalled twice");
        assert!(table.installed().is_empty());
    }

    #[test]
    fn a_second_install_is_busy_and_keeps_the_first() {
        let table = Table::new();
        let hits = Arc::new(AtomicU64::new(0));
        let other = Arc::new(AtomicU64::new(0));
        table
            .install(1, 0x41, "first", "MSI", counter(&hits))
            .unwrap();
        assert_eq!(
            table.install(1, 0x41, "second", "MSI", counter(&other)),
            Err(InstallError::Busy {
                cpu: 1,
                vector: 0x41
            })
        );
        assert_eq!(
            table.install(2, 0x41, "third", "MSI", Box::new(|| {})),
            Err(InstallError::NoSuchCpu(2))
        );
        table.dispatch(1, 0x41);
        assert_eq!(
            (hits.load(Ordering::Relaxed), other.load(Ordering::Relaxed)),
            (1, 0)
        );
        // The refused handler was dropped, not kept.
        assert_eq!(Arc::strong_count(&other), 1);
    }

    #[test]
    fn arrivals_without_a_handler_are_spurious_and_counted() {
        let table = Table::new();
        assert_eq!(table.dispatch(0, 0x50), Dispatched::Spurious(1));
        assert_eq!(table.dispatch(0, 0x50), Dispatched::Spurious(2));
        assert_eq!(table.dispatch(1, 0x51), Dispatched::Spurious(1));
        assert_eq!(table.dispatch(7, 0x51), Dispatched::Spurious(0), "no CPU 7");
        assert_eq!((table.spurious(0, 0x50), table.count(0, 0x50)), (2, 0));
        assert_eq!(table.spurious_total(), 3);
        // After an uninstall, arrivals are spurious again.
        table.install(0, 0x50, "t", "MSI", Box::new(|| {})).unwrap();
        assert_eq!(table.dispatch(0, 0x50), Dispatched::Handled);
        table.uninstall(0, 0x50, 0);
        assert_eq!(table.dispatch(0, 0x50), Dispatched::Spurious(3));
    }

    #[test]
    fn a_handler_that_panics_is_parked_until_uninstalled() {
        let table = Table::new();
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        table
            .install(
                0,
                0x42,
                "bad",
                "MSI-X",
                Box::new(move || {
                    if h.fetch_add(1, Ordering::Relaxed) == 1 {
                        panic!("handler fault");
                    }
                }),
            )
            .unwrap();
        let guarded = |handler: &mut (dyn FnMut() + Send)| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)).is_ok()
        };
        assert_eq!(table.dispatch_with(0, 0x42, guarded), Dispatched::Handled);
        assert_eq!(
            table.dispatch_with(0, 0x42, guarded),
            Dispatched::Faulted { owner: "bad" }
        );
        // Parked: still installed (and listed), never run again, arrivals spurious.
        assert!(table.is_installed(0, 0x42));
        assert_eq!(
            table.dispatch_with(0, 0x42, guarded),
            Dispatched::Spurious(1)
        );
        assert_eq!(table.dispatch(0, 0x42), Dispatched::Spurious(2));
        assert_eq!(hits.load(Ordering::Relaxed), 2);
        assert_eq!(Arc::strong_count(&hits), 2, "parked handler dropped early");
        // The owner's uninstall drops it.
        assert!(table.uninstall(0, 0x42, 0));
        assert_eq!(Arc::strong_count(&hits), 1, "parked handler leaked");
        assert!(!table.uninstall(0, 0x42, 0));
        // The slot can be used again.
        table
            .install(0, 0x42, "good", "MSI-X", counter(&hits))
            .unwrap();
        assert_eq!(table.dispatch_with(0, 0x42, guarded), Dispatched::Handled);
    }

    #[test]
    fn cpus_are_separate() {
        let table = Table::new();
        let (a, b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        table.install(0, 0x60, "a", "MSI-X", counter(&a)).unwrap();
        table.install(1, 0x60, "b", "MSI-X", counter(&b)).unwrap();
        table.dispatch(1, 0x60);
        table.dispatch(1, 0x60);
        table.dispatch(0, 0x60);
        assert_eq!(
            (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed)),
            (1, 2)
        );
        assert_eq!((table.count(0, 0x60), table.count(1, 0x60)), (1, 2));
        assert!(table.uninstall(1, 0x60, 1));
        assert!(table.is_installed(0, 0x60) && !table.is_installed(1, 0x60));
        assert_eq!(table.dispatch(1, 0x60), Dispatched::Spurious(1));
        assert_eq!(table.dispatch(0, 0x60), Dispatched::Handled);
        let listed: Vec<_> = table.installed().iter().map(|i| (i.cpu, i.owner)).collect();
        assert_eq!(listed, [(0, "a")]);
    }

    #[test]
    fn uninstalled_while_running_it_is_dropped_when_it_returns() {
        static TABLE: Table = Table::new();
        let table = &TABLE;
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        let uninstalled = Arc::new(AtomicBool::new(false));
        let u = uninstalled.clone();
        table
            .install(
                0,
                0x70,
                "self",
                "MSI",
                Box::new(move || {
                    h.fetch_add(1, Ordering::Relaxed);
                    // From inside the handler, on its own CPU: must not wait for itself.
                    u.store(table.uninstall(0, 0x70, 0), Ordering::Relaxed);
                }),
            )
            .unwrap();
        assert_eq!(Arc::strong_count(&hits), 2);
        assert_eq!(table.dispatch(0, 0x70), Dispatched::Handled);
        assert!(
            uninstalled.load(Ordering::Relaxed),
            "running handler not found"
        );
        assert!(!table.is_installed(0, 0x70));
        assert_eq!(Arc::strong_count(&hits), 1, "handler put back or leaked");
        assert_eq!(table.dispatch(0, 0x70), Dispatched::Spurious(1));
        assert_eq!(hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn reinstalled_while_running_the_new_handler_stays() {
        static TABLE: Table = Table::new();
        let table = &TABLE;
        let new = Arc::new(AtomicU64::new(0));
        let n = new.clone();
        let mut first = Some(move || {
            let n = n.clone();
            Box::new(move || {
                n.fetch_add(1, Ordering::Relaxed);
            }) as Handler
        });
        table
            .install(
                0,
                0x71,
                "old",
                "MSI",
                Box::new(move || {
                    if let Some(make) = first.take() {
                        assert!(table.uninstall(0, 0x71, 0));
                        table.install(0, 0x71, "new", "MSI", make()).unwrap();
                    }
                }),
            )
            .unwrap();
        assert_eq!(table.dispatch(0, 0x71), Dispatched::Handled);
        assert_eq!(table.installed()[0].owner, "new");
        assert_eq!(table.dispatch(0, 0x71), Dispatched::Handled);
        assert_eq!(new.load(Ordering::Relaxed), 1, "the old handler came back");
    }

    #[test]
    fn the_fake_platform_drops_a_handler_uninstalled_while_it_ran() {
        use crate::fake::irq::FakePlatform;
        use crate::platform::Interrupts;
        let platform = FakePlatform::leaked(1);
        let block = platform.allocate(1).unwrap();
        let (cpu, vector) = (block.cpu(), block.first());
        platform
            .install(
                cpu,
                vector,
                "self",
                "MSI",
                Box::new(move || {
                    assert!(platform.uninstall(cpu, vector), "running handler not found");
                }),
            )
            .unwrap();
        assert!(platform.deliver(cpu, vector));
        assert!(!platform.is_installed(cpu, vector));
        assert!(
            !platform.deliver(cpu, vector),
            "the uninstalled handler came back"
        );
        assert_eq!(platform.spurious(cpu, vector), 1);
        platform.free(block);
    }

    #[test]
    fn uninstall_from_another_cpu_waits_for_the_running_handler() {
        static TABLE: Table = Table::new();
        static STARTED: AtomicBool = AtomicBool::new(false);
        static FINISHED: AtomicBool = AtomicBool::new(false);
        static DONE: OnceLock<bool> = OnceLock::new();
        TABLE
            .install(
                0,
                0x80,
                "slow",
                "MSI",
                Box::new(|| {
                    STARTED.store(true, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    FINISHED.store(true, Ordering::SeqCst);
                }),
            )
            .unwrap();
        let cpu0 = std::thread::spawn(|| TABLE.dispatch(0, 0x80));
        let cpu1 = std::thread::spawn(|| {
            while !STARTED.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            assert!(TABLE.uninstall(0, 0x80, 1));
            DONE.set(FINISHED.load(Ordering::SeqCst)).unwrap();
        });
        cpu1.join().unwrap();
        assert_eq!(cpu0.join().unwrap(), Dispatched::Handled);
        assert_eq!(
            DONE.get(),
            Some(&true),
            "uninstall returned while the handler still ran"
        );
        assert!(!TABLE.is_installed(0, 0x80));
        assert_eq!(TABLE.dispatch(0, 0x80), Dispatched::Spurious(1));
    }
}
