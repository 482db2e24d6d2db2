//! A fake interrupt platform and fake functions with MSI-X, MSI and INTx, for host tests and
//! the documentation examples of [`crate::irq`].
//!
//! The platform keeps a real [`VectorAllocator`], the kernel's [`DispatchTable`] and
//! [`SharedLines`] (so [`FakePlatform::deliver`] runs a vector's handler, or a shared INTx
//! line's handlers, with the code the kernel runs), fake device memory for MSI-X tables,
//! and records what it was asked (releases, pending reports). DMA buffers sit between red
//! zones so that a test can tell whether an access escaped one.
//!
//! The platform and a function's configuration space are handed out as `&'static` (what
//! [`PciFunction::new`] takes), so they live until the test process exits. They are kept
//! reachable from a static ([`keep`]): Miri's leak check counts memory reachable from a
//! static as still in use, so it stays on and reports every leak but these intended ones.
//!
//! CPUs: everything runs on the calling thread, which stands for the CPU an interrupt is
//! delivered to, so an uninstall is always "on the handler's CPU" (never waits; from inside a
//! handler, the handler is dropped when it returns). Waiting across CPUs is tested with real
//! threads in [`crate::dispatch`] and [`crate::intx_lines`]. Every fake function's pin is
//! wired to GSI [`FAKE_GSI`], one line shared by all of them.
//!
//! Time: each platform has its own clock, which every look ([`Platform::now_us`]) advances by
//! 1 µs. Waits spin on it ([`Platform::idle_until`]'s default behaviour) unless
//! [`FakePlatform::halt_when_idle`] turned on a model of the kernel's halting idle: the
//! clock then jumps to the end of each sleep, the bound the wait gave or the first interrupt
//! scheduled with [`FakePlatform::interrupt_at`], whichever comes first.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use super::{FakeBar, FakeConfigSpace, FakeFunction};
use crate::dispatch::{DispatchTable, Dispatched};
use crate::intx_lines::SharedLines;
use crate::irq::{ConfigPort, PciFunction};
use crate::platform::{
    DeviceMemory, DmaRegion, Handler, Interrupts, IntxLine, MsiMessage, Parking, Platform,
    PlatformError, RegisterWindow,
};
use crate::range::checked_range;
use crate::vectors::{AllocError, Block, Policy, Snapshot, VectorAllocator};
use crate::{Address, ConfigSpace, Function, Root};

impl ConfigPort for Mutex<FakeConfigSpace> {
    fn read32(&self, address: Address, offset: u16) -> u32 {
        // SAFETY: the fake has no side effects outside its own state.
        unsafe {
            pci_types::ConfigRegionAccess::read(&*self.lock(), address.to_pci_types(), offset)
        }
    }

    fn write32(&self, address: Address, offset: u16, value: u32) {
        // SAFETY: as above.
        unsafe {
            pci_types::ConfigRegionAccess::write(
                &*self.lock(),
                address.to_pci_types(),
                offset,
                value,
            )
        }
    }
}

/// Everything [`keep`] gave out.
static KEPT: Mutex<Vec<&'static dyn Sync>> = Mutex::new(Vec::new());

/// `value` as `&'static`: allocated, never freed, and reachable from [`KEPT`] so that it does
/// not count as a leak.
fn keep<T: Sync + 'static>(value: T) -> &'static T {
    let kept: &'static T = Box::leak(Box::new(value));
    KEPT.lock().push(kept);
    kept
}

/// Bytes on each side of a fake DMA buffer.
const RED_ZONE: usize = 64;
/// What the red zones hold.
const RED_ZONE_BYTE: u8 = 0xa5;

/// Fake DMA memory: a buffer between two red zones.
type DmaMemory = Arc<Mutex<Vec<u8>>>;

/// CPUs the fake's dispatch table has room for.
pub const FAKE_CPUS: usize = 8;

/// The GSI every fake function's INTx pin is wired to.
pub const FAKE_GSI: u32 = 16;

/// The fake platform.
pub struct FakePlatform {
    vectors: Mutex<VectorAllocator>,
    handlers: DispatchTable<FAKE_CPUS>,
    memory: Mutex<BTreeMap<u64, u32>>,
    dma: Mutex<Vec<DmaMemory>>,
    /// (bus address, length, memory) of every DMA buffer given out: what a device model
    /// reads and writes through [`FakePlatform::dma_read`] and [`FakePlatform::dma_write`].
    dma_by_bus: Mutex<Vec<(u64, u64, DmaMemory)>>,
    parking: Parking,
    released: Mutex<Vec<Address>>,
    pending: Mutex<Vec<(Address, u8)>>,
    intx: SharedLines,
    /// The clock, µs.
    now: AtomicU64,
    /// How far each look at the clock moves it, µs.
    step: AtomicU64,
    idle: Mutex<Idle>,
}

/// What [`Platform::idle_until`] does on the fake, and what it was asked.
#[derive(Default)]
struct Idle {
    /// Whether it sleeps (models a CPU halted until an interrupt or its timer).
    halts: bool,
    /// Calls so far.
    calls: u64,
    /// (from, to) on the clock of every sleep.
    sleeps: Vec<(u64, u64)>,
    /// Interrupts to deliver during a sleep: (when, CPU, vector), in no order.
    scheduled: Vec<(u64, u32, u8)>,
}

impl FakePlatform {
    /// A platform with `cpus` CPUs (at most [`FAKE_CPUS`]) and vectors 0x30..=0xEF, kept
    /// until the process exits to be `'static` (see the module documentation).
    pub fn leaked(cpus: u32) -> &'static FakePlatform {
        assert!(
            cpus as usize <= FAKE_CPUS,
            "fake: more CPUs than its dispatch table"
        );
        keep(FakePlatform {
            vectors: Mutex::new(VectorAllocator::new(cpus, 0x30..=0xEF, &[]).expect("valid range")),
            handlers: DispatchTable::new(),
            memory: Mutex::new(BTreeMap::new()),
            dma: Mutex::new(Vec::new()),
            dma_by_bus: Mutex::new(Vec::new()),
            parking: Parking::new(),
            released: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            intx: SharedLines::new(),
            now: AtomicU64::new(0),
            step: AtomicU64::new(1),
            idle: Mutex::new(Idle::default()),
        })
    }

    /// From now on every look at the clock ([`Platform::now_us`]) moves it by `us` instead
    /// of 1 µs: a spinning wait then covers its bound in fewer looks (for tests that run
    /// under Miri, where each look is slow). At least 1.
    pub fn set_clock_step(&self, us: u64) {
        self.step.store(us.max(1), Ordering::Relaxed);
    }

    /// From now on [`Platform::idle_until`] sleeps as the kernel's halting CPU does: after a
    /// last look at the condition it jumps the clock to the bound it was given, or to the
    /// first interrupt [`FakePlatform::interrupt_at`] scheduled before that, whose handler it
    /// then runs. Without this it spins (one look, one `spin_loop`), the trait's default.
    pub fn halt_when_idle(&self) {
        self.idle.lock().halts = true;
    }

    /// Schedules an interrupt on (`cpu`, `vector`) at `at_us` on this platform's clock: it is
    /// delivered ([`FakePlatform::deliver`]) by the sleep that reaches that time (only while
    /// [`FakePlatform::halt_when_idle`] is on; nothing else advances the clock that far).
    pub fn interrupt_at(&self, at_us: u64, cpu: u32, vector: u8) {
        self.idle.lock().scheduled.push((at_us, cpu, vector));
    }

    /// Calls to [`Platform::idle_until`] so far.
    pub fn idle_calls(&self) -> u64 {
        self.idle.lock().calls
    }

    /// (from, to) on the clock of every sleep so far.
    pub fn sleeps(&self) -> Vec<(u64, u64)> {
        self.idle.lock().sleeps.clone()
    }

    /// Runs the handler installed on (`cpu`, `vector`), as an interrupt would; whether one ran
    /// (for a shared INTx line's vector: the line's handler, which runs every function's).
    pub fn deliver(&self, cpu: u32, vector: u8) -> bool {
        self.handlers.dispatch(cpu, vector) == Dispatched::Handled
    }

    /// Arrivals on (`cpu`, `vector`) with no handler, so far.
    pub fn spurious(&self, cpu: u32, vector: u8) -> u64 {
        self.handlers.spurious(cpu, vector)
    }

    /// (GSI, vector, owner) of every handler on a shared INTx line.
    pub fn intx_users(&self) -> Vec<(u32, u8, &'static str)> {
        self.intx.users()
    }

    /// The allocator's state.
    pub fn snapshot(&self) -> Snapshot {
        self.vectors.lock().snapshot()
    }

    /// Vectors with a handler installed (a shared INTx line's counts once).
    pub fn installed(&self) -> usize {
        self.handlers.installed().len()
    }

    /// Functions whose handle was dropped.
    pub fn released(&self) -> Vec<Address> {
        self.released.lock().clone()
    }

    /// Pending interrupts reported at release.
    pub fn pending_reports(&self) -> Vec<(Address, u8)> {
        self.pending.lock().clone()
    }

    /// Reads fake device memory.
    pub fn peek(&self, phys: u64) -> u32 {
        self.memory.lock().get(&phys).copied().unwrap_or(0)
    }

    /// Writes fake device memory (e.g. to set a PBA bit).
    pub fn poke(&self, phys: u64, value: u32) {
        self.memory.lock().insert(phys, value);
    }

    /// Every dword of fake device memory ever written, by physical address.
    pub fn memory(&self) -> Vec<(u64, u32)> {
        self.memory.lock().iter().map(|(&a, &v)| (a, v)).collect()
    }

    /// Regions and bytes of DMA memory parked for the next claim of `address`.
    pub fn parked(&self, address: Address) -> (usize, u64) {
        self.parking.parked(address)
    }

    /// The function at `address` was removed: its parked DMA memory is freed (what the
    /// kernel does when a function leaves the bus). Returns regions and bytes.
    pub fn remove(&self, address: Address) -> (usize, u64) {
        self.parking.release(address)
    }

    /// How many DMA buffers this platform gave out are not freed yet (parked ones included).
    pub fn dma_live(&self) -> usize {
        self.dma
            .lock()
            .iter()
            // One reference here, one in `dma_by_bus`: a third is the buffer's own.
            .filter(|m| Arc::strong_count(m) > 2)
            .count()
    }

    /// A device's DMA read: `out.len()` bytes at bus address `bus`, which must lie inside one
    /// buffer this platform gave out; whether it did (as an IOMMU fault would say).
    pub fn dma_read(&self, bus: u64, out: &mut [u8]) -> bool {
        let list = self.dma_by_bus.lock();
        let Some((base, _, m)) = list
            .iter()
            .find(|(b, l, _)| bus >= *b && bus + out.len() as u64 <= b + l)
        else {
            return false;
        };
        let start = RED_ZONE + (bus - base) as usize;
        out.copy_from_slice(&m.lock()[start..start + out.len()]);
        true
    }

    /// A device's DMA write of `data` at bus address `bus` (see [`FakePlatform::dma_read`]).
    pub fn dma_write(&self, bus: u64, data: &[u8]) -> bool {
        let list = self.dma_by_bus.lock();
        let Some((base, _, m)) = list
            .iter()
            .find(|(b, l, _)| bus >= *b && bus + data.len() as u64 <= b + l)
        else {
            return false;
        };
        let start = RED_ZONE + (bus - base) as usize;
        m.lock()[start..start + data.len()].copy_from_slice(data);
        true
    }

    /// Whether the red zones around every DMA buffer this platform gave out (live or freed)
    /// still hold what they were filled with: no access escaped a buffer.
    pub fn dma_red_zones_intact(&self) -> bool {
        self.dma.lock().iter().all(|m| {
            let m = m.lock();
            let (before, rest) = m.split_at(RED_ZONE);
            let after = &rest[rest.len() - RED_ZONE..];
            before.iter().chain(after).all(|&b| b == RED_ZONE_BYTE)
        })
    }
}

struct Window {
    platform: &'static FakePlatform,
    base: u64,
    len: u64,
}

impl RegisterWindow for Window {
    fn read32(&self, offset: u64) -> u32 {
        assert!(
            checked_range(offset, 4, self.len).is_ok(),
            "fake window read out of bounds"
        );
        self.platform.peek(self.base + offset)
    }

    fn write32(&self, offset: u64, value: u32) {
        assert!(
            checked_range(offset, 4, self.len).is_ok(),
            "fake window write out of bounds"
        );
        self.platform.poke(self.base + offset, value);
    }
}

/// Fake DMA memory at a made-up bus address.
///
/// Like the kernel's buffer, which adds the offset to its address, it does no bounds check of
/// its own and adds with wrapping, as address arithmetic would: an offset that escapes
/// [`DmaBuffer`](crate::dma::DmaBuffer)'s check lands in a red zone (or panics on the
/// vector's bounds), where [`FakePlatform::dma_red_zones_intact`] sees it.
struct FakeDma {
    memory: DmaMemory,
    len: u64,
    bus: u64,
}

impl FakeDma {
    /// Index into `memory` of byte `offset + i` of the buffer.
    fn at(offset: u64, i: usize) -> usize {
        RED_ZONE.wrapping_add(offset as usize).wrapping_add(i)
    }
}

impl DmaRegion for FakeDma {
    fn bus_address(&self) -> u64 {
        self.bus
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read8(&self, offset: u64) -> u8 {
        self.memory.lock()[Self::at(offset, 0)]
    }
    fn write8(&self, offset: u64, value: u8) {
        self.memory.lock()[Self::at(offset, 0)] = value;
    }
    fn read32(&self, offset: u64) -> u32 {
        let m = self.memory.lock();
        u32::from_le_bytes(core::array::from_fn(|i| m[Self::at(offset, i)]))
    }
    fn write32(&self, offset: u64, value: u32) {
        let mut m = self.memory.lock();
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            m[Self::at(offset, i)] = b;
        }
    }
    // Bulk copies under one lock, as the kernel's are one `memcpy` (byte by byte, a reused
    // 1 MiB buffer's zeroing took a million locks). Indexes as `at` does, so an access that
    // escaped the buffer lands in a red zone, where `dma_red_zones_intact` finds it.
    fn read_bytes(&self, offset: u64, out: &mut [u8]) {
        let m = self.memory.lock();
        let start = Self::at(offset, 0);
        out.copy_from_slice(&m[start..start + out.len()]);
    }
    fn write_bytes(&self, offset: u64, data: &[u8]) {
        let mut m = self.memory.lock();
        let start = Self::at(offset, 0);
        m[start..start + data.len()].copy_from_slice(data);
    }
    fn zero(&self) {
        let mut m = self.memory.lock();
        let start = Self::at(0, 0);
        m[start..start + self.len as usize].fill(0);
    }
}

/// One function's attachment to the shared line of [`FAKE_GSI`]; dropping it detaches.
struct FakeLine {
    platform: &'static FakePlatform,
    cpu: u32,
    vector: u8,
}

impl IntxLine for FakeLine {
    fn vector(&self) -> (u32, u8) {
        (self.cpu, self.vector)
    }

    fn gsi(&self) -> u32 {
        FAKE_GSI
    }

    fn install(&self, owner: &'static str, handler: Handler) -> u64 {
        // The line exists while this attachment does; an id of 0 is never handed out.
        self.platform
            .intx
            .install(FAKE_GSI, owner, handler)
            .unwrap_or(0)
    }

    fn uninstall(&self, id: u64) -> bool {
        // The calling thread stands for the line's CPU (see the module documentation).
        self.platform.intx.uninstall(FAKE_GSI, id, self.cpu)
    }
}

impl Drop for FakeLine {
    fn drop(&mut self) {
        if let Some(block) = self.platform.intx.detach(FAKE_GSI, |_| {}) {
            self.platform
                .handlers
                .uninstall(block.cpu(), block.first(), block.cpu());
            self.platform.free(block);
        }
    }
}

impl Interrupts for &'static FakePlatform {
    fn allocate(&self, count: u8) -> Result<Block, AllocError> {
        self.vectors.lock().allocate(count, Policy::LeastLoaded)
    }

    fn free(&self, block: Block) {
        self.vectors
            .lock()
            .free(block)
            .expect("fake: block from this allocator");
    }

    fn message(&self, cpu: u32, vector: u8) -> MsiMessage {
        // The fake's APIC IDs are its CPU indices.
        crate::x86_msi::x86_message(u8::try_from(cpu).expect("fake: APIC ID fits"), vector)
    }

    fn install(
        &self,
        cpu: u32,
        vector: u8,
        owner: &'static str,
        kind: &'static str,
        handler: Handler,
    ) -> Result<(), PlatformError> {
        self.handlers
            .install(cpu, vector, owner, kind, handler)
            .map_err(|_| PlatformError::Failed("vector already has a handler"))
    }

    fn uninstall(&self, cpu: u32, vector: u8) -> bool {
        // The calling thread stands for the handler's CPU (see the module documentation).
        self.handlers.uninstall(cpu, vector, cpu)
    }

    fn is_installed(&self, cpu: u32, vector: u8) -> bool {
        self.handlers.is_installed(cpu, vector)
    }

    fn attach_intx(&self, _function: &Function) -> Result<Box<dyn IntxLine>, PlatformError> {
        let platform: &'static FakePlatform = self;
        let (cpu, vector) = platform.intx.attach(FAKE_GSI, || {
            let block = self.allocate(1).map_err(PlatformError::Vectors)?;
            let run = Box::new(move || {
                platform.intx.run(FAKE_GSI);
            });
            match platform
                .handlers
                .install(block.cpu(), block.first(), "INTx line", "INTx", run)
            {
                Ok(()) => Ok(block),
                Err(_) => {
                    self.free(block);
                    Err(PlatformError::Failed("INTx vector busy"))
                }
            }
        })?;
        Ok(Box::new(FakeLine {
            platform,
            cpu,
            vector,
        }))
    }

    fn pending_at_release(&self, address: Address, vector: u8) {
        self.pending.lock().push((address, vector));
    }
}

impl DeviceMemory for &'static FakePlatform {
    fn map(&self, phys: u64, len: u64) -> Result<Box<dyn RegisterWindow>, PlatformError> {
        Ok(Box::new(Window {
            platform: self,
            base: phys,
            len,
        }))
    }

    fn dma(&self, _owner: Address, bytes: u64) -> Result<Box<dyn DmaRegion>, PlatformError> {
        let too_large = PlatformError::Failed("fake: DMA buffer too large");
        let len = usize::try_from(bytes).map_err(|_| too_large.clone())?;
        let total = len.checked_add(2 * RED_ZONE).ok_or(too_large)?;
        let mut memory = alloc::vec![RED_ZONE_BYTE; RED_ZONE];
        memory.resize(RED_ZONE + len, 0);
        memory.resize(total, RED_ZONE_BYTE);
        let memory = Arc::new(Mutex::new(memory));
        self.dma.lock().push(memory.clone());
        // Each buffer gets bus addresses of its own, page-aligned, as the kernel's do.
        static NEXT_BUS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
        let pages = bytes.div_ceil(4096).max(1);
        let first = NEXT_BUS.fetch_add(pages, core::sync::atomic::Ordering::Relaxed);
        let bus = 0x1000_0000 + first * 4096;
        self.dma_by_bus.lock().push((bus, bytes, memory.clone()));
        Ok(Box::new(FakeDma {
            memory,
            len: bytes,
            bus,
        }))
    }

    fn parking(&self) -> &Parking {
        &self.parking
    }
}

impl Platform for &'static FakePlatform {
    fn now_us(&self) -> u64 {
        // Fake time: every look at the clock advances it by the step (1 µs unless set).
        self.now
            .fetch_add(self.step.load(Ordering::Relaxed), Ordering::Relaxed)
    }

    fn idle_until(&self, until_us: u64, done: &mut dyn FnMut() -> bool) -> bool {
        let halts = {
            let mut idle = self.idle.lock();
            idle.calls += 1;
            idle.halts
        };
        // The kernel looks with interrupts off; here nothing runs in between anyway.
        if done() {
            return true;
        }
        if !halts {
            core::hint::spin_loop();
            return false;
        }
        let from = self.now.load(Ordering::Relaxed);
        if from >= until_us {
            // The bound has passed: no sleep (the kernel does not arm a timer for the past).
            return false;
        }
        let woken_by = {
            let mut idle = self.idle.lock();
            let first = idle
                .scheduled
                .iter()
                .enumerate()
                .filter(|(_, (at, _, _))| *at < until_us)
                .min_by_key(|(_, (at, _, _))| *at)
                .map(|(i, _)| i);
            let woken_by = first.map(|i| idle.scheduled.swap_remove(i));
            let to = woken_by.map_or(until_us, |(at, _, _)| at.max(from));
            idle.sleeps.push((from, to));
            self.now.store(to, Ordering::Relaxed);
            woken_by
        };
        if let Some((_, cpu, vector)) = woken_by {
            self.deliver(cpu, vector);
        }
        false
    }

    fn release_function(&self, address: Address) {
        self.released.lock().push(address);
    }
}

/// Address of the fake functions.
pub const ADDRESS: Address = Address::new_masked(0, 0, 3, 0);
/// Physical address of BAR 0 of the fake functions (the MSI-X table lives at +0x2000).
pub const BAR0: u64 = 0xfe00_0000;

/// A handle for `function` on a fresh fake config space and `platform`.
pub fn handle(
    function: FakeFunction,
    platform: &'static FakePlatform,
) -> (PciFunction, &'static Mutex<FakeConfigSpace>) {
    let space = FakeConfigSpace::new();
    space.add(ADDRESS, function);
    let space: &'static Mutex<FakeConfigSpace> = keep(Mutex::new(space));
    // SAFETY: the config space is new, so this is the only handle of its one function.
    (unsafe { claim_again(space, platform) }, space)
}

/// [`handle`], with every configuration access of the handle going through the port `wrap`
/// makes of the space: a device model that answers some registers itself (such as virtio's
/// PCI configuration access window, which forwards to a BAR).
pub fn handle_with(
    function: FakeFunction,
    platform: &'static FakePlatform,
    wrap: impl FnOnce(&'static Mutex<FakeConfigSpace>) -> Box<dyn ConfigPort>,
) -> (PciFunction, &'static Mutex<FakeConfigSpace>) {
    let space = FakeConfigSpace::new();
    space.add(ADDRESS, function);
    let space: &'static Mutex<FakeConfigSpace> = keep(Mutex::new(space));
    let port: &'static dyn ConfigPort = &**keep(wrap(space));
    let info = {
        let guard = space.lock();
        let roots = [Root {
            segment: 0,
            bus: 0,
            extended: true,
        }];
        // SAFETY: the fake has no side effects outside its own state.
        let config = unsafe { ConfigSpace::new(&*guard, &roots) };
        crate::probe(&config, ADDRESS)
            .0
            .expect("fake function present")
    };
    let platform: &'static &'static FakePlatform = keep(platform);
    // SAFETY: the config space is new, so this is the only handle of its one function.
    (unsafe { PciFunction::new(info, port, platform) }, space)
}

/// A new handle for the function of `space` (made by [`handle`]): what the kernel's claim
/// does after an unbind.
///
/// # Safety
/// No other handle of that function may exist, nor anything made from one (its release was
/// reported to [`FakePlatform::released`]).
pub unsafe fn claim_again(
    space: &'static Mutex<FakeConfigSpace>,
    platform: &'static FakePlatform,
) -> PciFunction {
    let info = {
        let guard = space.lock();
        let roots = [Root {
            segment: 0,
            bus: 0,
            extended: true,
        }];
        // SAFETY: the fake has no side effects outside its own state.
        let config = unsafe { ConfigSpace::new(&*guard, &roots) };
        crate::probe(&config, ADDRESS)
            .0
            .expect("fake function present")
    };
    let platform: &'static &'static FakePlatform = keep(platform);
    // SAFETY: the caller guarantees this is the only handle.
    unsafe { PciFunction::new(info, space, platform) }
}

/// An endpoint with a 16 KiB memory BAR 0 and an MSI-X capability of `entries` entries (table
/// at BAR 0 + 0x2000, PBA at + 0x3000), a 4-vector MSI capability and INTA#.
pub fn device(entries: u16) -> FakeFunction {
    FakeFunction::endpoint(0x1b36, 0x0010, 0x01, 0x08, 0x02, 2)
        .with_bar(
            0,
            FakeBar::Mem32 {
                address: BAR0 as u32,
                size: 0x4000,
                prefetchable: false,
            },
        )
        .with_interrupt(1, 11)
        .with_msi(0x40, 2, true, true)
        .with_msix(0x60, entries, (0, 0x2000), (0, 0x3000))
        .with_writable(0x40, 0xffff_0000)
        .with_writable(0x44, 0xffff_fffc)
        .with_writable(0x48, 0xffff_ffff)
        .with_writable(0x4c, 0x0000_ffff)
        .with_writable(0x50, 0xffff_ffff)
        .with_writable(0x60, 0xc000_0000)
}

/// A handle of [`device`] with `entries` MSI-X entries on a fresh platform (for examples).
pub fn function_with_msix(entries: u16) -> PciFunction {
    handle(device(entries), FakePlatform::leaked(1)).0
}
