//! Fault injection: a one-shot panic armed at a named point of the driver bound (or next
//! bound) to a function, so that the kernel's containment of driver panics can be exercised
//! on every driver (the console's `inject panic <address> <point>`, docs/faults.md); and a
//! one-shot leak ([`arm_leak`], `inject leak <address>`): the next unbinding of the
//! function's driver forgets its state instead of dropping it, as a driver that kept its
//! handles in a `static` would, so that what a leak costs can be seen and tested.
//!
//! Each driver calls [`point`] at its injection points: late in `probe` (when it holds its
//! windows, DMA memory and vectors, so the unwind has to release them), at the top of each
//! interrupt handler, of `self_test` and of `command`. An unarmed point costs one atomic
//! load. The table is lock-free, because interrupt handlers check it: a lock taken there
//! could be held by the code they interrupted.

use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use pci::Address;

/// Where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// In `Driver::probe`, after the device's resources were taken.
    Probe,
    /// In an interrupt handler.
    Handler,
    /// In `Bound::self_test`.
    SelfTest,
    /// In `Bound::command`.
    Command,
}

impl Point {
    /// Every point, in the order the console lists them.
    pub const ALL: [Point; 4] = [
        Point::Probe,
        Point::Handler,
        Point::SelfTest,
        Point::Command,
    ];

    /// The console's name for it.
    pub const fn name(self) -> &'static str {
        match self {
            Point::Probe => "probe",
            Point::Handler => "handler",
            Point::SelfTest => "selftest",
            Point::Command => "command",
        }
    }

    /// The point named `name` (as [`Point::name`] gives it).
    pub fn parse(name: &str) -> Option<Point> {
        Point::ALL.into_iter().find(|p| p.name() == name)
    }

    const fn code(self) -> u64 {
        match self {
            Point::Probe => 1,
            Point::Handler => 2,
            Point::SelfTest => 3,
            Point::Command => 4,
        }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Armed faults at once (more are refused).
pub const SLOTS: usize = 8;

/// Armed faults: 0 = free, else [`key`].
static ARMED: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
/// How many slots are in use (a fast path for the unarmed case).
static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// The code of the leak fault in [`key`] (the panic points use 1 to 4).
const LEAK: u64 = 5;

/// The slot value for (`address`, fault `code`): never 0.
fn key(address: Address, code: u64) -> u64 {
    code << 40
        | u64::from(address.segment()) << 16
        | u64::from(address.bus()) << 8
        | u64::from(address.device()) << 3
        | u64::from(address.function())
}

/// Why a fault could not be armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArmError {
    /// The same fault is already armed.
    AlreadyArmed,
    /// Every slot is armed.
    Full,
}

impl fmt::Display for ArmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArmError::AlreadyArmed => f.write_str("already armed"),
            ArmError::Full => write!(f, "{SLOTS} faults armed already"),
        }
    }
}

/// Arms a one-shot panic at `point` of the driver of `address`.
pub fn arm(address: Address, point: Point) -> Result<(), ArmError> {
    arm_key(key(address, point.code()))
}

/// Arms a one-shot leak: the next unbinding of the driver of `address` forgets the driver's
/// state (its function handle, windows, DMA memory, vectors and handlers) instead of
/// dropping it. The bus calls [`take_leak`] when it unbinds.
pub fn arm_leak(address: Address) -> Result<(), ArmError> {
    arm_key(key(address, LEAK))
}

/// Whether a leak was armed for `address`; disarms it.
pub fn take_leak(address: Address) -> bool {
    IN_USE.load(Ordering::Relaxed) != 0 && take(key(address, LEAK))
}

fn arm_key(k: u64) -> Result<(), ArmError> {
    if ARMED.iter().any(|s| s.load(Ordering::SeqCst) == k) {
        return Err(ArmError::AlreadyArmed);
    }
    for slot in &ARMED {
        if slot
            .compare_exchange(0, k, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            IN_USE.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
    }
    Err(ArmError::Full)
}

/// Disarms the fault at `point` of `address`; whether it was armed.
pub fn disarm(address: Address, point: Point) -> bool {
    take(key(address, point.code()))
}

/// Whether the fault at `point` of `address` is armed.
pub fn is_armed(address: Address, point: Point) -> bool {
    let k = key(address, point.code());
    ARMED.iter().any(|s| s.load(Ordering::SeqCst) == k)
}

fn take(k: u64) -> bool {
    for slot in &ARMED {
        if slot
            .compare_exchange(k, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            IN_USE.fetch_sub(1, Ordering::SeqCst);
            return true;
        }
    }
    false
}

/// An injection point: panics (once) if a fault is armed here for `address`. The panic's
/// location is the caller's line.
#[track_caller]
pub fn point(address: Address, point: Point) {
    if IN_USE.load(Ordering::Relaxed) == 0 {
        return;
    }
    if take(key(address, point.code())) {
        panic!("injected fault: {point} of the driver of {address}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The table is global and tests run in parallel: each test uses its own addresses.
    fn at(device: u8) -> Address {
        Address::new(0, 0x7f, device, 0).unwrap()
    }

    #[test]
    fn an_armed_point_panics_once() {
        let a = at(1);
        arm(a, Point::SelfTest).unwrap();
        assert_eq!(arm(a, Point::SelfTest), Err(ArmError::AlreadyArmed));
        point(a, Point::Probe); // another point: nothing
        point(at(2), Point::SelfTest); // another function: nothing
        let caught = std::panic::catch_unwind(|| point(a, Point::SelfTest)).unwrap_err();
        let message = caught.downcast_ref::<String>().unwrap();
        assert!(message.contains("selftest"), "{message}");
        assert!(message.contains("0000:7f:01.0"), "{message}");
        point(a, Point::SelfTest); // one shot: disarmed by the panic
        assert!(!is_armed(a, Point::SelfTest));
    }

    #[test]
    fn disarm_and_names() {
        let a = at(3);
        arm(a, Point::Handler).unwrap();
        assert!(is_armed(a, Point::Handler));
        assert!(disarm(a, Point::Handler));
        assert!(!disarm(a, Point::Handler));
        point(a, Point::Handler);
        for p in Point::ALL {
            assert_eq!(Point::parse(p.name()), Some(p));
        }
        assert_eq!(Point::parse("irq"), None);
    }

    #[test]
    fn a_leak_is_taken_once_and_is_no_panic_point() {
        let a = at(4);
        arm_leak(a).unwrap();
        assert_eq!(arm_leak(a), Err(ArmError::AlreadyArmed));
        for p in Point::ALL {
            assert!(!is_armed(a, p));
            point(a, p); // a leak armed makes no point panic
        }
        assert!(!take_leak(at(5)));
        assert!(take_leak(a));
        assert!(!take_leak(a));
    }
}
