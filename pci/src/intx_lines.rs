//! Shared legacy INTx lines: one vector per global system interrupt (GSI), and the handlers of
//! every function attached to it; and the bridge swizzle that finds a pin's wire at the root.
//!
//! One type for the kernel (a `static`, with the IOAPIC programming around it) and for the
//! fake platform, so host tests exercise the bookkeeping the kernel runs.
//!
//! Ownership: a line owns its vector [`Block`] from the first [`SharedLines::attach`] to the
//! last [`SharedLines::detach`], which hands the block back for freeing. Each attachment is
//! owned by one function's `pci::irq::IntxLine` (dropping it detaches). Handlers added with
//! [`SharedLines::install`] are owned by the line and dropped by [`SharedLines::uninstall`]
//! (or when a run ends after one).
//!
//! Running: [`SharedLines::run`] (the line vector's handler in the dispatch table) takes the
//! handlers out, runs them with the lines unlocked, and puts back those still installed. As in
//! [`crate::dispatch`], an uninstall from another CPU waits until the run is over; from inside
//! a handler on the line's own CPU, the handler is dropped when the run ends.
//!
//! Locking: the lines' lock is taken in interrupt context too, so callers hold interrupts off
//! around every call. The `open` and `close` callbacks run with it held: they may program the
//! interrupt controller and install or uninstall the dispatch handler, but must not wait for a
//! running line (uninstall the dispatch handler after [`SharedLines::detach`] returns).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use crate::Address;
use crate::dispatch::Handler;
use crate::enumerate::Topology;
use crate::vectors::Block;

/// The pin a function's `pin` (1 = INTA# .. 4 = INTD#) is wired to on the bridge's upstream
/// side, for a function at `device` on the bridge's secondary bus (PCI-to-PCI Bridge
/// Architecture 1.2 §9.1, Table 9-1: pin' = (device + pin - 1) mod 4 + 1). `None` for a pin
/// that is not 1..=4 (0: no interrupt pin).
pub fn swizzle(device: u8, pin: u8) -> Option<u8> {
    if !(1..=4).contains(&pin) {
        return None;
    }
    Some((device % 4 + pin - 1) % 4 + 1)
}

/// Where the interrupt pin `pin` (1..=4) of the function at `address` arrives at the root
/// bus: the address of the device on the root bus (the function itself or the bridge above
/// it) and the pin there, swizzled through every bridge on the way ([`swizzle`]) as
/// `topology` records them. `None` if the pin is not 1..=4.
pub fn pin_at_root(topology: &Topology, address: Address, pin: u8) -> Option<(Address, u8)> {
    let mut address = address;
    let mut pin = pin;
    swizzle(0, pin)?;
    // A bridge chain is at most one bridge per bus number; the bound holds even if a malformed
    // topology named a loop.
    for _ in 0..=256 {
        let Some(bus) = topology
            .buses
            .iter()
            .find(|b| b.segment == address.segment() && b.number == address.bus())
        else {
            break;
        };
        let Some(bridge) = bus.bridge else { break };
        pin = swizzle(address.device(), pin)?;
        address = bridge;
    }
    Some((address, pin))
}

struct User {
    /// The handler while it is not running.
    handler: Option<Handler>,
    owner: &'static str,
    /// A handler that panicked: it never runs again and is dropped when its owner
    /// uninstalls it (outside interrupt context, like the dispatch table's parked handlers).
    parked: Option<Handler>,
}

/// A handler on a shared line that panicked during [`SharedLines::run_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineFault {
    /// The line's GSI.
    pub gsi: u32,
    /// The handler's id, as [`SharedLines::install`] returned it.
    pub id: u64,
    /// Who installed it.
    pub owner: &'static str,
}

struct Line {
    /// Tells this line from a later one on the same GSI.
    serial: u64,
    block: Block,
    users: BTreeMap<u64, User>,
    attached: usize,
    running: bool,
}

/// Every shared INTx line, by GSI. Const-constructible, for a `static`.
pub struct SharedLines {
    lines: Mutex<BTreeMap<u32, Line>>,
    /// Source of handler ids and line serials: never reused.
    next_id: AtomicU64,
}

impl Default for SharedLines {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedLines {
    /// No lines.
    pub const fn new() -> Self {
        SharedLines {
            lines: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Attaches one more function to the line of `gsi` and returns its (CPU, vector). The
    /// first attachment calls `open` (with the lines locked), which allocates the line's
    /// vector, installs its dispatch handler and routes the GSI; its error is returned and
    /// nothing is recorded.
    pub fn attach<E>(
        &self,
        gsi: u32,
        open: impl FnOnce() -> Result<Block, E>,
    ) -> Result<(u32, u8), E> {
        let mut lines = self.lines.lock();
        if let Some(line) = lines.get_mut(&gsi) {
            line.attached += 1;
            return Ok((line.block.cpu(), line.block.first()));
        }
        let block = open()?;
        let at = (block.cpu(), block.first());
        let serial = self.id();
        lines.insert(
            gsi,
            Line {
                serial,
                block,
                users: BTreeMap::new(),
                attached: 1,
                running: false,
            },
        );
        Ok(at)
    }

    /// Detaches one function from the line of `gsi`. The last one calls `close` (with the
    /// lines locked: mask the GSI there, so that a new line on it is not masked by this one's
    /// teardown), removes the line, drops its handlers and returns its vectors: the caller
    /// uninstalls the vector's dispatch handler (which waits for a running line) and frees
    /// the block.
    pub fn detach(&self, gsi: u32, close: impl FnOnce(&Block)) -> Option<Block> {
        let removed = {
            let mut lines = self.lines.lock();
            let line = lines.get_mut(&gsi)?;
            line.attached = line.attached.saturating_sub(1);
            if line.attached > 0 {
                return None;
            }
            close(&line.block);
            lines.remove(&gsi)
        };
        removed.map(|line| line.block)
    }

    /// Adds `handler` to the line of `gsi`; its id, or `None` if there is no such line (the
    /// handler is dropped).
    pub fn install(&self, gsi: u32, owner: &'static str, handler: Handler) -> Option<u64> {
        let id = self.id();
        let mut lines = self.lines.lock();
        let line = lines.get_mut(&gsi)?;
        line.users.insert(
            id,
            User {
                handler: Some(handler),
                owner,
                parked: None,
            },
        );
        Some(id)
    }

    /// Removes and drops the handler `id` of the line of `gsi`; whether it was there.
    ///
    /// `current` is the caller's CPU. If the line is running on another CPU, this waits until
    /// the run is over; from inside a handler on the line's CPU, the handler is dropped when
    /// the run ends.
    pub fn uninstall(&self, gsi: u32, id: u64, current: u32) -> bool {
        let (user, wait_for) = {
            let mut lines = self.lines.lock();
            let Some(line) = lines.get_mut(&gsi) else {
                return false;
            };
            let Some(user) = line.users.remove(&id) else {
                return false;
            };
            let out = user.handler.is_none() && user.parked.is_none() && line.running;
            let wait = out && current != line.block.cpu();
            (user, wait.then_some(line.serial))
        };
        drop(user);
        if let Some(serial) = wait_for {
            while self
                .lines
                .lock()
                .get(&gsi)
                .is_some_and(|l| l.serial == serial && l.running)
            {
                core::hint::spin_loop();
            }
        }
        true
    }

    /// Runs every handler on the line of `gsi` (its vector arrived); how many ran.
    pub fn run(&self, gsi: u32) -> usize {
        self.run_with(
            gsi,
            |handler| {
                handler();
                Ok::<(), ()>(())
            },
            |_, ()| {},
        )
    }

    /// Runs every handler on the line of `gsi` through `call`, which returns `Err(why)` when
    /// the handler did not complete (it panicked and `call` caught it). Such a handler is
    /// parked: it never runs again, and its owner's uninstall drops it. `faulted` is called
    /// for each, with the lines unlocked (the kernel quiets the function there). Returns how
    /// many ran.
    pub fn run_with<F>(
        &self,
        gsi: u32,
        mut call: impl FnMut(&mut Handler) -> Result<(), F>,
        mut faulted: impl FnMut(LineFault, F),
    ) -> usize {
        let (serial, mut taken) = {
            let mut lines = self.lines.lock();
            let Some(line) = lines.get_mut(&gsi) else {
                return 0;
            };
            if line.running {
                return 0;
            }
            line.running = true;
            let taken: Vec<(u64, Handler, Result<(), F>)> = line
                .users
                .iter_mut()
                .filter_map(|(id, u)| u.handler.take().map(|h| (*id, h, Ok(()))))
                .collect();
            (line.serial, taken)
        };
        for (_, handler, completed) in &mut taken {
            *completed = call(handler);
        }
        let ran = taken.len();
        let mut stale = Vec::new();
        let mut faults = Vec::new();
        {
            let mut lines = self.lines.lock();
            let line = lines.get_mut(&gsi).filter(|l| l.serial == serial);
            match line {
                Some(line) => {
                    line.running = false;
                    for (id, handler, completed) in taken {
                        match (line.users.get_mut(&id), completed) {
                            (Some(user), Ok(())) => user.handler = Some(handler),
                            (Some(user), Err(why)) => {
                                user.parked = Some(handler);
                                let owner = user.owner;
                                faults.push((LineFault { gsi, id, owner }, why));
                            }
                            (None, _) => stale.push(handler),
                        }
                    }
                }
                None => stale.extend(taken.into_iter().map(|(_, h, _)| h)),
            }
        }
        // Uninstalled during the run: dropped with the lines unlocked.
        drop(stale);
        for (fault, why) in faults {
            faulted(fault, why);
        }
        ran
    }

    /// (GSI, id) of every handler installed on every line (parked ones included).
    pub fn handler_ids(&self) -> Vec<(u32, u64)> {
        self.lines
            .lock()
            .iter()
            .flat_map(|(gsi, line)| line.users.keys().map(move |id| (*gsi, *id)))
            .collect()
    }

    /// The (CPU, vector) of the line of `gsi`, if there is one.
    pub fn vector(&self, gsi: u32) -> Option<(u32, u8)> {
        self.lines
            .lock()
            .get(&gsi)
            .map(|l| (l.block.cpu(), l.block.first()))
    }

    /// (GSI, vector, owner) of every handler on every line.
    pub fn users(&self) -> Vec<(u32, u8, &'static str)> {
        self.lines
            .lock()
            .iter()
            .flat_map(|(gsi, line)| {
                line.users
                    .values()
                    .map(move |u| (*gsi, line.block.first(), u.owner))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bus;
    use crate::vectors::{Policy, VectorAllocator};
    use alloc::boxed::Box;
    use alloc::sync::Arc;
    use alloc::vec;
    use core::sync::atomic::AtomicBool;
    use std::sync::OnceLock;

    const A: u8 = 1;
    const B: u8 = 2;
    const C: u8 = 3;
    const D: u8 = 4;

    #[test]
    fn swizzle_follows_the_bridge_specification_table() {
        // PCI-to-PCI Bridge Architecture 1.2, Table 9-1: for each device number (mod 4), the
        // upstream pin of INTA#..INTD#.
        let table = [
            (0, [A, B, C, D]),
            (1, [B, C, D, A]),
            (2, [C, D, A, B]),
            (3, [D, A, B, C]),
        ];
        for (device, upstream) in table {
            for (pin, want) in [A, B, C, D].into_iter().zip(upstream) {
                for d in [device, device + 4, device + 28] {
                    assert_eq!(swizzle(d, pin), Some(want), "device {d} pin {pin}");
                }
            }
        }
        assert_eq!(swizzle(3, 0), None, "no pin");
        assert_eq!(swizzle(3, 5), None, "no such pin");
    }

    #[test]
    fn the_pin_is_swizzled_through_every_bridge_to_the_root() {
        let bridge1 = Address::new_masked(0, 0, 2, 0);
        let bridge2 = Address::new_masked(0, 1, 1, 0);
        let topology = Topology {
            functions: vec![],
            errors: vec![],
            buses: vec![
                Bus {
                    segment: 0,
                    number: 0,
                    bridge: None,
                },
                Bus {
                    segment: 0,
                    number: 1,
                    bridge: Some(bridge1),
                },
                Bus {
                    segment: 0,
                    number: 2,
                    bridge: Some(bridge2),
                },
            ],
        };
        // On the root bus: unchanged.
        let root_fn = Address::new_masked(0, 0, 5, 0);
        assert_eq!(pin_at_root(&topology, root_fn, B), Some((root_fn, B)));
        // Device 3 on bus 2: INTB# -> INTA# at bridge2 (device 1 on bus 1) -> INTB# at
        // bridge1, on the root bus.
        let deep = Address::new_masked(0, 2, 3, 0);
        assert_eq!(pin_at_root(&topology, deep, B), Some((bridge1, B)));
        assert_eq!(pin_at_root(&topology, deep, 0), None);
        // A bridge loop does not hang it.
        let looped = Topology {
            functions: vec![],
            errors: vec![],
            buses: vec![Bus {
                segment: 0,
                number: 1,
                bridge: Some(Address::new_masked(0, 1, 0, 0)),
            }],
        };
        assert!(pin_at_root(&looped, Address::new_masked(0, 1, 0, 0), A).is_some());
    }

    fn allocator() -> VectorAllocator {
        VectorAllocator::new(2, 0x30..=0xEF, &[]).unwrap()
    }

    fn counter(hits: &Arc<AtomicU64>) -> Handler {
        let h = hits.clone();
        Box::new(move || {
            h.fetch_add(1, Ordering::Relaxed);
        })
    }

    #[test]
    fn a_line_is_opened_once_and_closed_by_the_last_detach() {
        let mut vectors = allocator();
        let lines = SharedLines::new();
        let mut opened = 0;
        let mut open = || {
            opened += 1;
            vectors.allocate(1, Policy::LeastLoaded)
        };
        let first = lines.attach(16, &mut open).unwrap();
        let second = lines.attach(16, &mut open).unwrap();
        assert_eq!(
            (first, opened),
            (second, 1),
            "second attach opened a new line"
        );
        assert_eq!(lines.vector(16), Some(first));
        let mut closed = 0;
        assert!(lines.detach(16, |_| closed += 1).is_none());
        assert_eq!(closed, 0, "closed with a function still attached");
        let block = lines.detach(16, |_| closed += 1).unwrap();
        assert_eq!((closed, (block.cpu(), block.first())), (1, first));
        vectors.free(block).unwrap();
        assert_eq!(lines.vector(16), None);
        assert!(
            lines.detach(16, |_| closed += 1).is_none(),
            "detached twice"
        );
        assert_eq!(closed, 1);
    }

    #[test]
    fn a_failed_open_records_nothing() {
        let lines = SharedLines::new();
        assert_eq!(
            lines.attach(9, || Err::<Block, _>("no IOAPIC")),
            Err("no IOAPIC")
        );
        assert_eq!(lines.vector(9), None);
        assert_eq!(lines.install(9, "x", Box::new(|| {})), None);
    }

    #[test]
    fn every_handler_on_a_line_runs_and_uninstalled_ones_stop() {
        let mut vectors = allocator();
        let lines = SharedLines::new();
        lines
            .attach(16, || vectors.allocate(1, Policy::LeastLoaded))
            .unwrap();
        lines
            .attach(17, || vectors.allocate(1, Policy::LeastLoaded))
            .unwrap();
        let (a, b, other) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let ia = lines.install(16, "a", counter(&a)).unwrap();
        let ib = lines.install(16, "b", counter(&b)).unwrap();
        lines.install(17, "other", counter(&other)).unwrap();
        assert_eq!(lines.run(16), 2);
        assert_eq!(
            (
                a.load(Ordering::Relaxed),
                b.load(Ordering::Relaxed),
                other.load(Ordering::Relaxed)
            ),
            (1, 1, 0)
        );
        let mut users = lines.users();
        users.sort();
        let v16 = lines.vector(16).unwrap().1;
        assert!(users.contains(&(16, v16, "a")) && users.contains(&(16, v16, "b")));
        assert_eq!(users.len(), 3);
        assert!(lines.uninstall(16, ia, 0));
        assert!(!lines.uninstall(16, ia, 0), "uninstalled twice");
        assert!(!lines.uninstall(17, ib, 0), "uninstalled from another line");
        assert_eq!(Arc::strong_count(&a), 1, "uninstalled handler kept");
        assert_eq!(lines.run(16), 1);
        assert_eq!(
            (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed)),
            (1, 2)
        );
        for gsi in [16, 17] {
            vectors.free(lines.detach(gsi, |_| {}).unwrap()).unwrap();
        }
        assert_eq!(Arc::strong_count(&b), 1, "closing the line kept a handler");
        assert_eq!(lines.run(16), 0);
    }

    #[test]
    fn a_handler_that_panics_is_parked_reported_and_dropped_by_its_uninstall() {
        let mut vectors = allocator();
        let lines = SharedLines::new();
        lines
            .attach(16, || vectors.allocate(1, Policy::LeastLoaded))
            .unwrap();
        let (good, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let ig = lines.install(16, "good", counter(&good)).unwrap();
        let bad_in = Arc::clone(&bad);
        let ib = lines
            .install(
                16,
                "bad",
                Box::new(move || {
                    bad_in.fetch_add(1, Ordering::Relaxed);
                    panic!("injected");
                }),
            )
            .unwrap();
        let run = |lines: &SharedLines| {
            let mut faults = vec![];
            let ran = lines.run_with(
                16,
                |h| std::panic::catch_unwind(std::panic::AssertUnwindSafe(h)).map_err(drop),
                |f, ()| faults.push(f),
            );
            (ran, faults)
        };
        let (ran, faults) = run(&lines);
        assert_eq!(ran, 2);
        assert_eq!(
            faults,
            vec![LineFault {
                gsi: 16,
                id: ib,
                owner: "bad"
            }]
        );
        // The parked handler never runs again; the other one still does.
        let (ran, faults) = run(&lines);
        assert_eq!((ran, faults.len()), (1, 0));
        assert_eq!(good.load(Ordering::Relaxed), 2);
        assert_eq!(bad.load(Ordering::Relaxed), 1);
        // It stays listed (its owner has not let go) until its owner uninstalls it.
        assert!(lines.handler_ids().contains(&(16, ib)));
        assert_eq!(Arc::strong_count(&bad), 2);
        assert!(lines.uninstall(16, ib, 0));
        assert_eq!(Arc::strong_count(&bad), 1, "the parked handler was kept");
        assert_eq!(lines.handler_ids(), vec![(16, ig)]);
        vectors.free(lines.detach(16, |_| {}).unwrap()).unwrap();
    }

    #[test]
    fn a_handler_uninstalled_during_the_run_is_dropped_and_one_installed_stays() {
        static LINES: SharedLines = SharedLines::new();
        static ID: AtomicU64 = AtomicU64::new(0);
        let mut vectors = allocator();
        let (cpu, _) = LINES
            .attach(20, || vectors.allocate(1, Policy::LeastLoaded))
            .unwrap();
        let late = Arc::new(AtomicU64::new(0));
        let l = late.clone();
        let mut make = Some(move || counter(&l));
        let id = LINES
            .install(
                20,
                "self",
                Box::new(move || {
                    // From inside the run, on the line's CPU: must not wait for itself.
                    assert!(LINES.uninstall(20, ID.load(Ordering::Relaxed), cpu));
                    if let Some(make) = make.take() {
                        LINES.install(20, "late", make()).unwrap();
                    }
                }),
            )
            .unwrap();
        ID.store(id, Ordering::Relaxed);
        assert_eq!(LINES.run(20), 1);
        assert_eq!(
            late.load(Ordering::Relaxed),
            0,
            "installed during the run, ran in it"
        );
        assert_eq!(Arc::strong_count(&late), 2, "the late handler is installed");
        assert_eq!(LINES.run(20), 1, "the uninstalled handler came back");
        assert_eq!(late.load(Ordering::Relaxed), 1);
        vectors.free(LINES.detach(20, |_| {}).unwrap()).unwrap();
        assert_eq!(Arc::strong_count(&late), 1);
    }

    #[test]
    fn the_fake_platform_shares_one_line_and_frees_it_with_the_last_function() {
        use crate::fake::irq::{FakePlatform, device, handle};
        use crate::irq::IrqKinds;
        let platform = FakePlatform::leaked(1);
        let start = platform.snapshot();
        let (first, _) = handle(device(1), platform);
        let (second, _) = handle(device(1), platform);
        let mut first = first.alloc_irq_vectors(1, 1, IrqKinds::INTX).unwrap();
        let mut second = second.alloc_irq_vectors(1, 1, IrqKinds::INTX).unwrap();
        let v = first.vector(0).unwrap();
        let (cpu, number) = (v.cpu(), v.number());
        let w = second.vector(0).unwrap();
        assert_eq!(
            (w.cpu(), w.number()),
            (cpu, number),
            "two vectors for one line"
        );
        let (a, b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (ha, hb) = (a.clone(), b.clone());
        first
            .install(0, "first", move || {
                ha.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        second
            .install(0, "second", move || {
                hb.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        assert_eq!(platform.intx_users().len(), 2);
        assert!(platform.deliver(cpu, number));
        assert_eq!(
            (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed)),
            (1, 1)
        );
        drop(first);
        assert!(
            platform.deliver(cpu, number),
            "the line went with its first function"
        );
        assert_eq!(
            (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed)),
            (1, 2)
        );
        drop(second);
        assert!(
            !platform.deliver(cpu, number),
            "the line outlived its functions"
        );
        assert_eq!(
            platform.snapshot(),
            start,
            "the line's vector was not freed"
        );
        assert_eq!(platform.installed(), 0);
    }

    #[test]
    fn uninstall_from_another_cpu_waits_for_the_running_line() {
        static LINES: SharedLines = SharedLines::new();
        static STARTED: AtomicBool = AtomicBool::new(false);
        static FINISHED: AtomicBool = AtomicBool::new(false);
        static DONE: OnceLock<bool> = OnceLock::new();
        let mut vectors = allocator();
        let (cpu, _) = LINES
            .attach(21, || vectors.allocate(1, Policy::LeastLoaded))
            .unwrap();
        let id = LINES
            .install(
                21,
                "slow",
                Box::new(|| {
                    STARTED.store(true, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    FINISHED.store(true, Ordering::SeqCst);
                }),
            )
            .unwrap();
        let on_cpu = std::thread::spawn(|| LINES.run(21));
        let elsewhere = std::thread::spawn(move || {
            while !STARTED.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            assert!(LINES.uninstall(21, id, cpu + 1));
            DONE.set(FINISHED.load(Ordering::SeqCst)).unwrap();
        });
        elsewhere.join().unwrap();
        assert_eq!(on_cpu.join().unwrap(), 1);
        assert_eq!(
            DONE.get(),
            Some(&true),
            "uninstall returned while the handler ran"
        );
        assert_eq!(LINES.run(21), 0);
        vectors.free(LINES.detach(21, |_| {}).unwrap()).unwrap();
    }
}
