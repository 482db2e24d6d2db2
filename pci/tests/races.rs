//! What another CPU (or, in the kernel, an interrupt handler on this one, which the function's
//! lock keeps out by holding it with interrupts off) can do between a driver's configuration
//! read and its write: nothing. Each test stops a driver's write right after it read a chosen
//! register, runs a competitor on a second thread at that instant, gives it 50 ms to get in,
//! and then checks what the device was left with.
//!
//! Not under Miri: the competitor spins on the lock for the 50 ms the paused thread sleeps,
//! which is hours of interpreted spinning; `cargo test` runs them.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use pci::fake::irq::{BAR0, FakePlatform, device};
use pci::fake::{FakeBar, FakeConfigSpace, FakeFunction};
use pci::function::{BusMaster, ConfigPort};
use pci::irq::PciFunction;
use pci::{Address, ConfigSpace, Root};
use spin::Mutex;

const ADDRESS: Address = Address::new_masked(0, 0, 3, 0);

type Hook = Box<dyn FnOnce() + Send>;

/// The fake's configuration space, and a competitor started right after the `n`th next read
/// of one offset.
struct Paused {
    space: &'static Mutex<FakeConfigSpace>,
    /// Offset, reads of it still to let through, competitor.
    hook: Mutex<Option<(u16, usize, Hook)>>,
    competitor: Mutex<Option<JoinHandle<()>>>,
}

impl ConfigPort for Paused {
    fn read32(&self, address: Address, offset: u16) -> u32 {
        let value = ConfigPort::read32(self.space, address, offset);
        let hook = {
            let mut hook = self.hook.lock();
            match &mut *hook {
                Some((at, 0, _)) if *at == offset => hook.take(),
                Some((at, skip, _)) if *at == offset => {
                    *skip -= 1;
                    None
                }
                _ => None,
            }
        };
        if let Some((_, _, competitor)) = hook {
            *self.competitor.lock() = Some(thread::spawn(competitor));
            thread::sleep(Duration::from_millis(50));
        }
        value
    }

    fn write32(&self, address: Address, offset: u16, value: u32) {
        ConfigPort::write32(self.space, address, offset, value);
    }
}

impl Paused {
    /// Runs `competitor` on another thread right after the `nth` next read of `offset`
    /// (1: the next one).
    fn after_read(&self, offset: u16, nth: usize, competitor: impl FnOnce() + Send + 'static) {
        *self.hook.lock() = Some((offset, nth - 1, Box::new(competitor)));
    }

    /// Waits for the competitor to finish.
    fn join(&self) {
        let competitor = self.competitor.lock().take().expect("the hook ran");
        competitor.join().expect("the competitor did not panic");
    }
}

/// A handle on `function`, claimed as the kernel does, through the pausing port.
fn claim(
    function: FakeFunction,
    platform: &'static FakePlatform,
) -> (PciFunction, &'static Paused) {
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
        // SAFETY: the fake space answers every access.
        let config = unsafe { ConfigSpace::new(&*guard, &roots) };
        pci::probe(&config, ADDRESS).0.expect("the fake function")
    };
    let port: &'static Paused = Box::leak(Box::new(Paused {
        space,
        hook: Mutex::new(None),
        competitor: Mutex::new(None),
    }));
    let platform: &'static &'static FakePlatform = Box::leak(Box::new(platform));
    // SAFETY: a fresh space with one handle for its one function.
    let handle = unsafe { PciFunction::new(info, port, platform) };
    (handle, port)
}

/// The last guard, held by a competitor that drops it when run.
fn last_guard_dropper(master: BusMaster) -> impl FnOnce() + Send + 'static {
    let slot = Arc::new(Mutex::new(Some(master)));
    move || drop(slot.lock().take())
}

#[test]
#[cfg_attr(miri, ignore = "a thread spins 50 ms on a lock: hours under Miri")]
fn a_window_being_mapped_cannot_turn_bus_mastering_back_on() {
    let platform = FakePlatform::leaked(1);
    let (function, port) = claim(device(4), platform);
    let master = function.bus_master();
    let buffer = master.dma_buffer(4096).unwrap();
    drop(buffer);
    // `map_bar` sets memory decode: a read-modify-write of Command. The last guard goes
    // right after the read.
    port.after_read(0x04, 1, last_guard_dropper(master));
    let _registers = function.map_bar(0, 0x1000, 0x1000).unwrap();
    port.join();
    assert!(
        !function.is_bus_master(),
        "the write put back the Bus Master Enable bit it had read"
    );
    assert_eq!(platform.dma_live(), 1, "freed before the claim ended");
}

#[test]
#[cfg_attr(miri, ignore = "a thread spins 50 ms on a lock: hours under Miri")]
fn a_status_write_cannot_turn_bus_mastering_back_on() {
    let platform = FakePlatform::leaked(1);
    let (function, port) = claim(device(4), platform);
    let master = function.bus_master();
    // Status shares its dword with Command, which the write rewrites as read: the check
    // reads Command first, then the write reads the dword it rewrites.
    port.after_read(0x04, 2, last_guard_dropper(master));
    function.config_write16(0x06, 0).unwrap();
    port.join();
    assert!(
        !function.is_bus_master(),
        "the Status write put back the Bus Master Enable bit it had read"
    );
}

#[test]
#[cfg_attr(miri, ignore = "a thread spins 50 ms on a lock: hours under Miri")]
fn a_virtio_window_cannot_be_reaimed_between_its_check_and_its_write() {
    let virtio = FakeFunction::endpoint(0x1af4, 0x1041, 0x02, 0x00, 0x00, 1)
        .with_bar(
            0,
            FakeBar::Mem32 {
                address: BAR0 as u32,
                size: 0x4000,
                prefetchable: false,
            },
        )
        .with_msix(0x60, 4, (0, 0x2000), (0, 0x3000))
        // VIRTIO_PCI_CAP_PCI_CFG: cfg_type 5, bar, offset, length, pci_cfg_data.
        .with_capability(
            0x80,
            0x09,
            &[20, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        )
        .with_writable(0x84, 0xffff_ffff)
        .with_writable(0x88, 0xffff_ffff)
        .with_writable(0x8c, 0xffff_ffff)
        .with_writable(0x90, 0xffff_ffff);
    let platform = FakePlatform::leaked(1);
    let (function, port) = claim(virtio, platform);
    let window = function.vendor_window(0x80).unwrap();
    let other = function.vendor_window(0x80).unwrap();
    window.write32(4, 0).unwrap(); // BAR0
    window.write32(8, 0x100).unwrap(); // a device register
    window.write32(12, 4).unwrap();
    // Aimed at MSI-X entry 0's data, the data write is refused ...
    window.write32(8, 0x2008).unwrap();
    assert!(window.write32(16, 0xef).is_err());
    window.write32(8, 0x100).unwrap();
    // ... and another window cannot re-aim it there after the check read the aim (the
    // length, at 0x8c, is the check's last read) and before the data is written.
    port.after_read(0x8c, 1, move || other.write32(8, 0x2008).unwrap());
    window.write32(16, 0xef).unwrap();
    port.join();
    let writes = port.space.lock().writes();
    let data = writes
        .iter()
        .position(|w| w.1 == 0x90 && w.2 == 0xef)
        .expect("the data write");
    let aim = writes
        .iter()
        .rposition(|w| w.1 == 0x88 && w.2 == 0x2008)
        .expect("the competitor's aim");
    assert!(aim > data, "the data went to the MSI-X table: {writes:x?}");
}
