//! Binding drivers to PCI functions, and unbinding them.
//!
//! At boot every enumerated function is offered to the drivers in `drivers::ALL`; the first
//! one whose match table fits claims the function (one owned `PciFunction` handle) and
//! probes it. The bound state lives in [`BOUND`] until unbound: unbinding removes it and
//! drops it, which is all it takes for the driver to release everything it held.
//!
//! Contained faults (docs/faults.md): a driver's probe, self test and commands run inside
//! `cpu::unwind::catch`, and its interrupt handlers inside the dispatch path's. When one
//! panics, the panic unwinds (a probe's frame drops what the probe held, the function
//! handle included), the driver's state is dropped on the ordinary `Drop` path, and the
//! binding is recorded as failed, with the panic's location: `drivers` lists it, and
//! `bind <address>` may bind the function again. A handler's panic is queued by the
//! dispatch path; [`reap`] (after each self test or command, and before each console
//! command) drops the driver that installed that handler.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use drivers::Bound;
use pci::Address;
use spin::Mutex;

use crate::cpu::unwind::{self, Caught};
use crate::interrupts::dispatch;

/// A bound driver's state, and the interrupt handlers its probe installed (to find the
/// binding a handler fault belongs to).
struct Binding {
    state: Box<dyn Bound>,
    handlers: Vec<(u32, u8)>,
    /// The handlers its probe installed on shared INTx lines: (GSI, id).
    intx: Vec<(u32, u64)>,
}

/// The bound drivers' states.
static BOUND: Mutex<Vec<Binding>> = Mutex::new(Vec::new());

/// A binding whose driver panicked.
#[derive(Clone, Debug)]
pub struct Failed {
    /// The function.
    pub address: Address,
    /// The driver's name.
    pub driver: &'static str,
    /// Where the panic happened: "probe", "interrupt handler", "self test", "command".
    pub during: &'static str,
    /// The panic.
    pub caught: Caught,
}

/// Failed bindings, until the function is bound again.
static FAILED: Mutex<Vec<Failed>> = Mutex::new(Vec::new());

/// Failed bindings so far (each until its function is bound again).
pub fn failed() -> Vec<Failed> {
    FAILED.lock().clone()
}

/// Records a failure, replacing an earlier one of the same function.
fn record(failed: Failed) {
    log::error!(
        "{} {}: {} failed: {}; the driver was unbound",
        failed.address,
        failed.driver,
        failed.during,
        failed.caught
    );
    let mut list = FAILED.lock();
    list.retain(|f| f.address != failed.address);
    list.push(failed);
}

/// Drops the state of a binding whose driver panicked (on the ordinary `Drop` path, which
/// releases everything it holds) and records the failure.
fn fail(binding: Binding, during: &'static str, caught: Caught) {
    let (address, driver) = (binding.state.address(), binding.state.driver());
    if let Err(again) = unwind::catch(move || drop(binding)) {
        log::error!("{address} {driver}: dropping the failed driver's state panicked too: {again}");
    }
    record(Failed {
        address,
        driver,
        during,
        caught,
    });
}

/// Offers the function at `address` to the drivers. Returns the driver's status line.
pub fn bind(address: Address) -> Result<String, String> {
    bind_with(address, true).map(Option::unwrap_or_default)
}

/// [`bind`], asking the bound driver for its status line only when `describe`.
fn bind_with(address: Address, describe: bool) -> Result<Option<String>, String> {
    let scan = crate::pcibus::scan().ok_or("PCI not enumerated")?;
    let f = scan
        .topology
        .function(address)
        .ok_or_else(|| format!("no function at {address}"))?;
    if (f.class, f.subclass) == (0x06, 0x04) {
        // A PCI-to-PCI bridge may be a hot-plug port, whose driver needs to know whether
        // firmware granted native hot-plug (`_OSC`): AML is loaded first if nothing did.
        let _ = crate::platform::aml::report();
    }
    let driver = drivers::find(f.vendor_id, f.device_id, f.class, f.subclass).ok_or_else(|| {
        format!(
            "no driver for {address} [{:04x}:{:04x}]",
            f.vendor_id, f.device_id
        )
    })?;
    let function =
        crate::pciirq::claim(address).ok_or_else(|| format!("{address} is already bound"))?;
    let before = dispatch::installed_slots();
    let intx_before = crate::pciirq::intx_handler_ids();
    // A panic in the probe unwinds its frame: the function handle and whatever was made from
    // it (windows, DMA buffers, vectors, bus mastering) drop there.
    match unwind::catch(move || driver.probe(function)) {
        Ok(Ok(bound)) => {
            let status = describe.then(|| bound.status());
            let handlers = dispatch::installed_slots()
                .into_iter()
                .filter(|h| !before.contains(h))
                .collect();
            let intx = crate::pciirq::intx_handler_ids()
                .into_iter()
                .filter(|h| !intx_before.contains(h))
                .collect();
            BOUND.lock().push(Binding {
                state: bound,
                handlers,
                intx,
            });
            FAILED.lock().retain(|f| f.address != address);
            Ok(status.map(|status| format!("{}: {address}: {status}", driver.name())))
        }
        // The handle came back: dropping it returns the function to the unclaimed pool.
        Ok(Err((_function, e))) => {
            Err(format!("{}: probe of {address} failed: {e}", driver.name()))
        }
        Err(caught) => {
            let message = format!(
                "{}: probe of {address} panicked ({caught}); the function was released",
                driver.name()
            );
            record(Failed {
                address,
                driver: driver.name(),
                during: "probe",
                caught,
            });
            Err(message)
        }
    }
}

/// Drops the drivers whose interrupt handlers panicked since the last call (outside
/// interrupt context: the dispatch path only parked the handler and queued the fault).
pub fn reap() {
    for fault in dispatch::take_faults() {
        let binding = {
            let mut list = BOUND.lock();
            list.iter()
                .position(|b| match fault.line {
                    Some(line) => b.intx.contains(&line),
                    None => b.handlers.contains(&(fault.cpu, fault.vector)),
                })
                .map(|at| list.remove(at))
        };
        match binding {
            Some(binding) => fail(binding, "interrupt handler", fault.caught),
            None => log::error!(
                "irq: handler of {} on vector {:#04x} (CPU {}) panicked ({}); no binding installed it, it stays parked",
                fault.owner,
                fault.vector,
                fault.cpu,
                fault.caught
            ),
        }
    }
}

/// Runs `f` on the state bound to `address` (or, with `driver`, on the first binding of that
/// driver); a panic in it fails the binding. `None` when nothing matches.
fn with_bound<R>(
    find: impl Fn(&Binding) -> bool,
    during: &'static str,
    f: impl FnOnce(&mut dyn Bound) -> R,
) -> Option<Result<R, String>> {
    let mut list = BOUND.lock();
    let at = list.iter().position(find)?;
    let outcome = {
        let state = &mut *list[at].state;
        unwind::catch(move || f(state))
    };
    let result = match outcome {
        Ok(r) => {
            drop(list);
            Ok(r)
        }
        Err(caught) => {
            let binding = list.remove(at);
            drop(list);
            let (address, driver) = (binding.state.address(), binding.state.driver());
            let message =
                format!("{driver} {address}: {during} panicked ({caught}); the driver was unbound");
            fail(binding, during, caught);
            Err(message)
        }
    };
    reap();
    Some(result)
}

/// Unbinds `address`: its driver state is dropped, releasing everything.
pub fn unbind(address: Address) -> Result<(), String> {
    let bound = {
        let mut list = BOUND.lock();
        let at = list
            .iter()
            .position(|b| b.state.address() == address)
            .ok_or_else(|| format!("{address} is not bound"))?;
        list.remove(at)
    };
    if drivers::fault::take_leak(address) {
        // What a driver that kept its handles in a `static` would do: nothing is released,
        // and the function stays claimed for as long as the kernel runs.
        log::warn!(
            "{address}: injected leak: the driver's state is forgotten, not dropped; its claim, vectors, windows and DMA memory stay taken"
        );
        core::mem::forget(bound);
    } else {
        drop(bound);
    }
    Ok(())
}

/// Binds every function some driver matches; logs what happened.
pub fn bind_all() {
    let Some(scan) = crate::pcibus::scan() else {
        return;
    };
    let addresses: Vec<Address> = scan
        .topology
        .functions
        .iter()
        .filter(|f| drivers::find(f.vendor_id, f.device_id, f.class, f.subclass).is_some())
        .map(|f| f.address)
        .collect();
    // A status line is a description: built only when the log shows it.
    let describe = log::log_enabled!(log::Level::Info);
    for address in addresses {
        match bind_with(address, describe) {
            Ok(Some(status)) => log::info!("bound {status}"),
            Ok(None) => {}
            Err(e) => log::warn!("{e}"),
        }
    }
}

/// (driver, address) of every bound driver, in binding order.
pub fn bound() -> Vec<(&'static str, Address)> {
    BOUND
        .lock()
        .iter()
        .map(|b| (b.state.driver(), b.state.address()))
        .collect()
}

/// Status lines of the bound drivers, then the failed bindings (`FAILED` and why).
pub fn list() -> Vec<String> {
    reap();
    let mut lines: Vec<String> = BOUND
        .lock()
        .iter()
        .map(|b| {
            let s = &b.state;
            format!("{} {:<8} {}", s.address(), s.driver(), s.status())
        })
        .collect();
    lines.extend(FAILED.lock().iter().map(|f| {
        format!(
            "{} {:<8} FAILED in {}: {}",
            f.address, f.driver, f.during, f.caught
        )
    }));
    lines
}

/// Runs the self test of the driver bound to `address`.
pub fn self_test(address: Address) -> Result<String, String> {
    with_bound(
        |b| b.state.address() == address,
        "self test",
        |b| b.self_test(),
    )
    .ok_or_else(|| format!("{address} is not bound"))?
    .and_then(|r| r)
}

/// Runs every bound driver's self test; returns (passed, failed) and logs failures.
pub fn self_test_all() -> (usize, usize) {
    let addresses: Vec<Address> = BOUND.lock().iter().map(|b| b.state.address()).collect();
    let (mut ok, mut failed) = (0, 0);
    for address in addresses {
        match self_test(address) {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                log::error!("{address}: self test failed: {e}");
            }
        }
    }
    (ok, failed)
}

/// Runs a driver-specific command (`nvme read 0`) on the first bound device of `driver`.
/// The block-device commands (`blk`, `read`, `nvme read`) go to [`crate::blockcmd`], which
/// reaches every disk's driver by address.
pub fn command(driver: &str, args: &[&str]) -> Option<Result<String, String>> {
    if let Some(answer) = crate::blockcmd::command(driver, args) {
        return Some(answer);
    }
    match with_bound(
        |b| b.state.driver() == driver,
        "command",
        |b| b.command(args),
    )? {
        Ok(answer) => answer,
        Err(panicked) => Some(Err(panicked)),
    }
}

/// Runs `f` on the driver bound to `address`, as a command (a panic in it fails the
/// binding); `None` when nothing is bound there.
pub fn on_driver<R>(
    address: Address,
    f: impl FnOnce(&mut dyn Bound) -> R,
) -> Option<Result<R, String>> {
    with_bound(|b| b.state.address() == address, "command", f)
}

/// The addresses of the functions `driver` is bound to.
pub fn bound_addresses(driver: &str) -> Vec<Address> {
    BOUND
        .lock()
        .iter()
        .filter(|b| b.state.driver() == driver)
        .map(|b| b.state.address())
        .collect()
}

/// Parses `ssss:bb:dd.f` or `bb:dd.f`.
pub fn parse_address(text: &str) -> Option<Address> {
    let parts: Vec<&str> = text.split(':').collect();
    let (segment, bus, rest) = match parts.as_slice() {
        [s, b, r] => (u16::from_str_radix(s, 16).ok()?, *b, *r),
        [b, r] => (0, *b, *r),
        _ => return None,
    };
    let (device, function) = rest.split_once('.')?;
    Address::new(
        segment,
        u8::from_str_radix(bus, 16).ok()?,
        u8::from_str_radix(device, 16).ok()?,
        function.parse().ok()?,
    )
    .ok()
}
