//! One measured call and the watchdog. [`measure`] runs a case under `catch_unwind`, with a
//! panic hook that records the panic's place quietly instead of printing it, and reports
//! its value, time, peak allocation and largest request (from [`crate::alloc_count`]);
//! [`watch`] registers a test with a watchdog thread that aborts the whole run, naming the
//! case, when one case runs past [`HANG_LIMIT`].

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use crate::HANG_LIMIT;
use crate::alloc_count::{LARGEST, LIVE, PEAK};
use crate::rng::seed;

thread_local! {
    /// Whether a panic now is one this file catches (the hook records it quietly).
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// Where and why the last caught panic happened.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.try_with(Cell::get).unwrap_or(false) {
                let place = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_else(|| "unknown place".into());
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let _ =
                    LAST_PANIC.try_with(|p| *p.borrow_mut() = Some(format!("{place}: {message}")));
            } else {
                previous(info);
            }
        }));
    });
}

/// What one call did.
pub(crate) struct Measured<T> {
    /// Its value, or where it panicked.
    pub(crate) value: Result<T, String>,
    pub(crate) elapsed: Duration,
    /// Most bytes it held at once (beyond what the thread held before).
    pub(crate) peak: usize,
    /// Its largest single request.
    pub(crate) largest: usize,
}

pub(crate) fn measure<T>(f: impl FnOnce() -> T) -> Measured<T> {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    LARGEST.with(|l| l.set(0));
    LAST_PANIC.with(|p| p.borrow_mut().take());
    CATCHING.with(|c| c.set(true));
    let started = Instant::now();
    let value = panic::catch_unwind(AssertUnwindSafe(f));
    let elapsed = started.elapsed();
    CATCHING.with(|c| c.set(false));
    let peak = PEAK.with(Cell::get).saturating_sub(base);
    let largest = LARGEST.with(Cell::get);
    let value = value.map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "a panic with no recorded place".into())
    });
    Measured {
        value,
        elapsed,
        peak,
        largest,
    }
}

// ---- Watchdog ----

/// What one test is running, for the watchdog.
pub(crate) struct Slot {
    test: &'static str,
    case: AtomicU64,
    since_ms: AtomicU64,
    busy: AtomicBool,
}

impl Slot {
    pub(crate) fn begin(&self, case: u64) {
        self.case.store(case, Ordering::Relaxed);
        self.since_ms.store(now_ms(), Ordering::Relaxed);
        self.busy.store(true, Ordering::Release);
    }

    pub(crate) fn end(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

fn start_instant() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(start_instant().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Registers `test` with the watchdog (started on first use).
pub(crate) fn watch(test: &'static str) -> Arc<Slot> {
    static SLOTS: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());
    static STARTED: Once = Once::new();
    let _ = start_instant();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner()).clone();
                for s in slots {
                    let since = s.since_ms.load(Ordering::Relaxed);
                    let limit = u64::try_from(HANG_LIMIT.as_millis()).unwrap_or(u64::MAX);
                    if s.busy.load(Ordering::Acquire) && now_ms().saturating_sub(since) > limit {
                        let _ = writeln!(
                            std::io::stderr(),
                            "mutations: HANG: test `{}` case {} has run for more than {} s \
                             (seed {:#x}; rerun with MUTATIONS_ONLY={} to print its input): \
                             aborting",
                            s.test,
                            s.case.load(Ordering::Relaxed),
                            HANG_LIMIT.as_secs(),
                            seed(),
                            s.case.load(Ordering::Relaxed),
                        );
                        std::process::abort();
                    }
                }
            }
        });
    });
    let slot = Arc::new(Slot {
        test,
        case: AtomicU64::new(0),
        since_ms: AtomicU64::new(0),
        busy: AtomicBool::new(false),
    });
    SLOTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(slot.clone());
    slot
}
