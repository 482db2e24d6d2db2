//! A fake interrupt platform and fake functions with MSI-X, MSI and INTx, for host tests and
//! the documentation examples of [`crate::irq`].
//!
//! The platform keeps a real [`VectorAllocator`], a dispatch table that can "deliver" an
//! interrupt (run the handler installed on a vector), fake device memory for MSI-X tables,
//! and records what it was asked (releases, pending reports).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use spin::Mutex;

use super::{FakeBar, FakeConfigSpace, FakeFunction};
use crate::irq::{
    ConfigPort, Handler, IntxLine, IrqError, IrqPlatform, MsiMessage, PciFunction, RegisterWindow,
};
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

/// Installed handlers by (CPU, vector), with their owners.
type HandlerTable = BTreeMap<(u32, u8), (Handler, &'static str)>;

/// The fake platform.
pub struct FakePlatform {
    vectors: Mutex<VectorAllocator>,
    handlers: Mutex<HandlerTable>,
    memory: Mutex<BTreeMap<u64, u32>>,
    released: Mutex<Vec<Address>>,
    pending: Mutex<Vec<(Address, u8)>>,
    intx: Mutex<Option<Block>>,
    intx_users: Mutex<BTreeMap<u64, (Handler, &'static str)>>,
}

impl FakePlatform {
    /// A platform with `cpus` CPUs and vectors 0x30..=0xEF, leaked to be `'static`.
    pub fn leaked(cpus: u32) -> &'static FakePlatform {
        Box::leak(Box::new(FakePlatform {
            vectors: Mutex::new(VectorAllocator::new(cpus, 0x30..=0xEF, &[]).expect("valid range")),
            handlers: Mutex::new(BTreeMap::new()),
            memory: Mutex::new(BTreeMap::new()),
            released: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            intx: Mutex::new(None),
            intx_users: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Runs the handler installed on (`cpu`, `vector`), as an interrupt would; whether one ran.
    pub fn deliver(&self, cpu: u32, vector: u8) -> bool {
        let taken = self.handlers.lock().remove(&(cpu, vector));
        match taken {
            Some((mut h, owner)) => {
                h();
                self.handlers.lock().insert((cpu, vector), (h, owner));
                true
            }
            None => {
                let intx = self.intx.lock().as_ref().map(|b| (b.cpu(), b.first()));
                if intx == Some((cpu, vector)) {
                    for (h, _) in self.intx_users.lock().values_mut() {
                        h();
                    }
                    return true;
                }
                false
            }
        }
    }

    /// The allocator's state.
    pub fn snapshot(&self) -> Snapshot {
        self.vectors.lock().snapshot()
    }

    /// Vectors with a handler installed.
    pub fn installed(&self) -> usize {
        self.handlers.lock().len()
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
}

struct Window {
    platform: &'static FakePlatform,
    base: u64,
    len: u64,
}

impl RegisterWindow for Window {
    fn read32(&self, offset: u64) -> u32 {
        assert!(offset + 4 <= self.len, "fake window read out of bounds");
        self.platform.peek(self.base + offset)
    }

    fn write32(&self, offset: u64, value: u32) {
        assert!(offset + 4 <= self.len, "fake window write out of bounds");
        self.platform.poke(self.base + offset, value);
    }
}

/// Fake DMA memory: a vector of bytes at a made-up bus address.
struct FakeDma {
    bytes: Mutex<Vec<u8>>,
}

impl crate::window::DmaRegion for FakeDma {
    fn bus_address(&self) -> u64 {
        0x1000_0000
    }
    fn len(&self) -> u64 {
        self.bytes.lock().len() as u64
    }
    fn read8(&self, offset: u64) -> u8 {
        self.bytes.lock()[offset as usize]
    }
    fn write8(&self, offset: u64, value: u8) {
        self.bytes.lock()[offset as usize] = value;
    }
    fn read32(&self, offset: u64) -> u32 {
        let b = self.bytes.lock();
        let o = offset as usize;
        u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
    }
    fn write32(&self, offset: u64, value: u32) {
        let o = offset as usize;
        self.bytes.lock()[o..o + 4].copy_from_slice(&value.to_le_bytes());
    }
}

struct FakeLine {
    platform: &'static FakePlatform,
    cpu: u32,
    vector: u8,
    next: Mutex<u64>,
}

impl IntxLine for FakeLine {
    fn vector(&self) -> (u32, u8) {
        (self.cpu, self.vector)
    }

    fn gsi(&self) -> u32 {
        16
    }

    fn install(&self, owner: &'static str, handler: Handler) -> u64 {
        let mut next = self.next.lock();
        *next += 1;
        self.platform
            .intx_users
            .lock()
            .insert(*next, (handler, owner));
        *next
    }

    fn uninstall(&self, id: u64) -> bool {
        self.platform.intx_users.lock().remove(&id).is_some()
    }
}

impl Drop for FakeLine {
    fn drop(&mut self) {
        if let Some(block) = self.platform.intx.lock().take() {
            self.platform.free(block);
        }
    }
}

impl IrqPlatform for &'static FakePlatform {
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
        MsiMessage {
            address: 0xFEE0_0000 | u64::from(cpu) << 12,
            data: u32::from(vector),
        }
    }

    fn install(
        &self,
        cpu: u32,
        vector: u8,
        owner: &'static str,
        _kind: crate::irq::IrqKind,
        handler: Handler,
    ) -> Result<(), IrqError> {
        let mut handlers = self.handlers.lock();
        if handlers.contains_key(&(cpu, vector)) {
            return Err(IrqError::Platform("vector already has a handler"));
        }
        handlers.insert((cpu, vector), (handler, owner));
        Ok(())
    }

    fn uninstall(&self, cpu: u32, vector: u8) -> bool {
        self.handlers.lock().remove(&(cpu, vector)).is_some()
    }

    fn is_installed(&self, cpu: u32, vector: u8) -> bool {
        self.handlers.lock().contains_key(&(cpu, vector))
    }

    fn map(&self, phys: u64, len: u64) -> Result<Box<dyn RegisterWindow>, IrqError> {
        Ok(Box::new(Window {
            platform: self,
            base: phys,
            len,
        }))
    }

    fn now_us(&self) -> u64 {
        static NOW: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
        // Fake time: every look at the clock advances it by 1 µs.
        NOW.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
    }

    fn dma(&self, bytes: u64) -> Result<Box<dyn crate::window::DmaRegion>, IrqError> {
        Ok(Box::new(FakeDma {
            bytes: Mutex::new(alloc::vec![0; bytes as usize]),
        }))
    }

    fn attach_intx(&self, _function: &Function) -> Result<Box<dyn IntxLine>, IrqError> {
        let block = self.allocate(1).map_err(IrqError::Vectors)?;
        let (cpu, vector) = (block.cpu(), block.first());
        *self.intx.lock() = Some(block);
        Ok(Box::new(FakeLine {
            platform: self,
            cpu,
            vector,
            next: Mutex::new(0),
        }))
    }

    fn release_function(&self, address: Address) {
        self.released.lock().push(address);
    }

    fn pending_at_release(&self, address: Address, vector: u8) {
        self.pending.lock().push((address, vector));
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
    let space: &'static Mutex<FakeConfigSpace> = Box::leak(Box::new(Mutex::new(space)));
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
    let platform: &'static &'static FakePlatform = Box::leak(Box::new(platform));
    // SAFETY: the config space is new, so this is the only handle of its one function.
    let function = unsafe { PciFunction::new(info, space, platform) };
    (function, space)
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
