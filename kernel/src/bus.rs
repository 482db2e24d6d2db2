//! Binding drivers to PCI functions, and unbinding them.
//!
//! At boot every enumerated function is offered to the drivers in `drivers::ALL`; the first
//! one whose match table fits claims the function (one owned `PciFunction` handle) and
//! probes it. The bound state lives in [`BOUND`] until unbound: unbinding removes it and
//! drops it, which is all it takes for the driver to release everything it held.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use drivers::Bound;
use pci::Address;
use spin::Mutex;

/// The bound drivers' states.
static BOUND: Mutex<Vec<Box<dyn Bound>>> = Mutex::new(Vec::new());

/// Offers the function at `address` to the drivers. Returns the driver's status line.
pub fn bind(address: Address) -> Result<String, String> {
    let scan = crate::pcibus::scan().ok_or("PCI not enumerated")?;
    let f = scan
        .topology
        .function(address)
        .ok_or_else(|| format!("no function at {address}"))?;
    let driver = drivers::find(f.vendor_id, f.device_id, f.class, f.subclass).ok_or_else(|| {
        format!(
            "no driver for {address} [{:04x}:{:04x}]",
            f.vendor_id, f.device_id
        )
    })?;
    let function =
        crate::pciirq::claim(address).ok_or_else(|| format!("{address} is already bound"))?;
    match driver.probe(function) {
        Ok(bound) => {
            let status = bound.status();
            BOUND.lock().push(bound);
            Ok(format!("{}: {address}: {status}", driver.name()))
        }
        // The handle came back: dropping it returns the function to the unclaimed pool.
        Err((_function, e)) => Err(format!("{}: probe of {address} failed: {e}", driver.name())),
    }
}

/// Unbinds `address`: its driver state is dropped, releasing everything.
pub fn unbind(address: Address) -> Result<(), String> {
    let bound = {
        let mut list = BOUND.lock();
        let at = list
            .iter()
            .position(|b| b.address() == address)
            .ok_or_else(|| format!("{address} is not bound"))?;
        list.remove(at)
    };
    drop(bound);
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
    for address in addresses {
        match bind(address) {
            Ok(status) => log::info!("bound {status}"),
            Err(e) => log::warn!("{e}"),
        }
    }
}

/// Status lines of the bound drivers.
pub fn list() -> Vec<String> {
    BOUND
        .lock()
        .iter()
        .map(|b| format!("{} {:<8} {}", b.address(), b.driver(), b.status()))
        .collect()
}

/// Runs the self test of the driver bound to `address`.
pub fn self_test(address: Address) -> Result<String, String> {
    let mut list = BOUND.lock();
    let bound = list
        .iter_mut()
        .find(|b| b.address() == address)
        .ok_or_else(|| format!("{address} is not bound"))?;
    bound.self_test()
}

/// Runs every bound driver's self test; returns (passed, failed) and logs failures.
pub fn self_test_all() -> (usize, usize) {
    let mut list = BOUND.lock();
    let (mut ok, mut failed) = (0, 0);
    for bound in list.iter_mut() {
        match bound.self_test() {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                log::error!(
                    "{} {}: self test failed: {e}",
                    bound.address(),
                    bound.driver()
                );
            }
        }
    }
    (ok, failed)
}

/// Runs a driver-specific command (`nvme read 0`) on the first bound device of `driver`.
pub fn command(driver: &str, args: &[&str]) -> Option<Result<String, String>> {
    let mut list = BOUND.lock();
    let bound = list.iter_mut().find(|b| b.driver() == driver)?;
    bound.command(args)
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
