//! What the kernel provides to the PCI layer, split by what it is.
//!
//! Design note. The PCI layer programs the PCI side of things (configuration space, MSI and
//! MSI-X capabilities, BAR windows); the machine side is the kernel's, behind three traits:
//!
//! - [`Interrupts`]: vectors (allocate and free), the MSI message that reaches a CPU, the
//!   dispatch table (install and uninstall handlers), legacy INTx lines.
//! - [`DeviceMemory`]: uncached mappings of device registers and DMA memory.
//! - [`Platform`]: both, plus the clock drivers time out by and the claim bookkeeping (a
//!   released function may be claimed again).
//!
//! This module is the bottom of the layer's dependencies: it names no other module of the
//! crate except the vector allocator's [`Block`] and the DMA [`Parking`] (which names only
//! [`DmaRegion`]), so `function`, `dma`, `window` and `irq` all build on it and none of them
//! on each other in a cycle. The kernel implements the
//! traits on real hardware (`kernel/src/pciirq.rs`), the host tests on the fake platform
//! (`pci/src/fake/irq.rs`), with the same shared logic ([`crate::dispatch`],
//! [`crate::intx_lines`], [`crate::x86_msi`]) underneath.

use alloc::boxed::Box;
use core::fmt;

pub use crate::dispatch::Handler;
pub use crate::parking::Parking;
use crate::vectors::{AllocError, Block};
use crate::{Address, Function};

/// Why the platform could not map, allocate, route or install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// The vector allocator ran out.
    Vectors(AllocError),
    /// Anything else, said in words.
    Failed(&'static str),
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformError::Vectors(e) => write!(f, "{e}"),
            PlatformError::Failed(why) => f.write_str(why),
        }
    }
}

/// The message a function writes to raise an interrupt (Intel SDM vol. 3A §11.11.1 on x86:
/// address `0xFEE0_0000 | destination << 12`, data = vector).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// A mapped window of 32-bit device registers (a BAR range, an MSI-X table or PBA).
pub trait RegisterWindow: Send + Sync {
    /// Reads the dword at `offset` (dword-aligned, inside the window).
    fn read32(&self, offset: u64) -> u32;
    /// Writes the dword at `offset`.
    fn write32(&self, offset: u64, value: u32);
}

/// Memory a device can reach by DMA.
pub trait DmaRegion: Send + Sync {
    /// Bus address of the first byte (what the device is given).
    fn bus_address(&self) -> u64;
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads a byte.
    fn read8(&self, offset: u64) -> u8;
    /// Writes a byte.
    fn write8(&self, offset: u64, value: u8);
    /// Reads a dword (4-byte aligned).
    fn read32(&self, offset: u64) -> u32;
    /// Writes a dword (4-byte aligned).
    fn write32(&self, offset: u64, value: u32);
    /// Copies `out.len()` bytes at `offset` out of the region in one go (the caller checked
    /// the range). The default goes byte by byte; a platform overrides it with a bulk copy.
    fn read_bytes(&self, offset: u64, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.read8(offset + i as u64);
        }
    }
    /// Copies `data` into the region at `offset` in one go (the caller checked the range).
    fn write_bytes(&self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            self.write8(offset + i as u64, *b);
        }
    }
    /// Zeroes the whole region (a parked region handed to a new buffer, which is promised
    /// zeroed). The default writes zeros in chunks through [`DmaRegion::write_bytes`].
    fn zero(&self) {
        const CHUNK: [u8; 512] = [0; 512];
        let mut at = 0;
        while at < self.len() {
            let n = (self.len() - at).min(CHUNK.len() as u64);
            self.write_bytes(at, &CHUNK[..n as usize]);
            at += n;
        }
    }
}

/// A function's attachment to a (possibly shared) legacy INTx line.
///
/// Dropping it detaches the function; the platform frees the line's vector when the last
/// function sharing it is gone.
pub trait IntxLine: Send + Sync {
    /// The CPU (allocator index) and vector the line is delivered on.
    fn vector(&self) -> (u32, u8);
    /// The global system interrupt the pin is wired to.
    fn gsi(&self) -> u32;
    /// Adds `handler` to the line; returns an id for [`IntxLine::uninstall`].
    fn install(&self, owner: &'static str, handler: Handler) -> u64;
    /// Removes the handler `id`; whether it was there (waits until it is not running).
    fn uninstall(&self, id: u64) -> bool;
}

/// Interrupt delivery: vectors, messages, the dispatch table, INTx lines.
pub trait Interrupts: Send + Sync {
    /// Allocates `count` vectors: 1, or an aligned power-of-two block on one CPU.
    fn allocate(&self, count: u8) -> Result<Block, AllocError>;
    /// Gives vectors back.
    fn free(&self, block: Block);
    /// The message that delivers `vector` to CPU `cpu` (allocator index).
    fn message(&self, cpu: u32, vector: u8) -> MsiMessage;
    /// The message `owner`'s device sends for `block` (multi-message MSI adds the message
    /// number to its data). Where the platform remaps interrupts this also writes the
    /// remapping entries that let `owner`, and only it, raise the block's vectors; they
    /// are cleared when the block is [freed](Interrupts::free). By default the
    /// compatibility-format [`Interrupts::message`] of the block's first vector.
    fn message_for(&self, owner: Address, block: &Block) -> Result<MsiMessage, PlatformError> {
        let _ = owner;
        Ok(self.message(block.cpu(), block.first()))
    }
    /// Installs `handler` for `vector` on `cpu`; `kind` says how it arrives ("MSI-X", ...).
    fn install(
        &self,
        cpu: u32,
        vector: u8,
        owner: &'static str,
        kind: &'static str,
        handler: Handler,
    ) -> Result<(), PlatformError>;
    /// Removes the handler of `vector` on `cpu`, waiting until it is not running on any
    /// CPU; whether there was one.
    fn uninstall(&self, cpu: u32, vector: u8) -> bool;
    /// Whether a handler is installed for `vector` on `cpu`.
    fn is_installed(&self, cpu: u32, vector: u8) -> bool;
    /// Attaches the function's INTx pin (1 = INTA#) to its line, routed by firmware.
    fn attach_intx(&self, function: &Function) -> Result<Box<dyn IntxLine>, PlatformError>;
    /// Counts an interrupt found pending on a vector being released (the release checks
    /// the pending bits after masking).
    fn pending_at_release(&self, address: Address, vector: u8) {
        let _ = (address, vector);
    }
}

/// Device memory: register mappings and DMA memory.
pub trait DeviceMemory: Send + Sync {
    /// Maps `len` bytes of device memory at `phys` uncached.
    fn map(&self, phys: u64, len: u64) -> Result<Box<dyn RegisterWindow>, PlatformError>;
    /// Allocates a zeroed, physically contiguous DMA buffer of at least `bytes` bytes for the
    /// device at `owner`. On a machine with DMA remapping the region is made reachable by
    /// that function alone (mapped into its domain), and is unreachable again before its
    /// memory is freed when the region drops.
    fn dma(&self, owner: Address, bytes: u64) -> Result<Box<dyn DmaRegion>, PlatformError>;
    /// Where the DMA memory of released functions waits for their next claim (see
    /// [`Parking`]): one per platform.
    fn parking(&self) -> &Parking;
}

/// Everything a claimed function's handles reach the machine through.
pub trait Platform: Interrupts + DeviceMemory {
    /// Microseconds since boot (a monotonic clock for drivers' timeouts).
    fn now_us(&self) -> u64;
    /// Waits a little for `done` to hold: what [`PciFunction::wait_until`] does between its
    /// looks at the clock and at the function's presence. Returns whether `done` held (then
    /// the wait is over); `false` says "look again", and may come early, for any reason.
    ///
    /// A platform may sleep here instead of spinning, but never past `until_us` (on the
    /// [`Platform::now_us`] clock): that is the caller's deadline or its next presence check,
    /// and nothing else ends a wait on a device that never interrupts. The kernel halts the
    /// CPU until the next interrupt, with the local APIC timer armed for `until_us`
    /// (`kernel/src/interrupts/idle.rs`). It evaluates `done` with interrupts off right before
    /// halting, so an interrupt that makes it true cannot slip in between the look and the
    /// sleep and leave the CPU halted on a condition that already holds.
    ///
    /// The default spins: one look at `done`, one [`core::hint::spin_loop`]. That is right
    /// wherever halting is not possible, and it is what the host tests' fakes use.
    ///
    /// [`PciFunction::wait_until`]: crate::function::PciFunction::wait_until
    fn idle_until(&self, until_us: u64, done: &mut dyn FnMut() -> bool) -> bool {
        let _ = until_us;
        if done() {
            return true;
        }
        core::hint::spin_loop();
        false
    }
    /// The function at `address` and every handle made from it are gone: it may be claimed
    /// again.
    fn release_function(&self, address: Address);
    /// Runs `f` once with interrupts off on this CPU: what a function's lock is held under
    /// (`spin_lock_irqsave`'s place), so that an interrupt handler dropping a guard or buffer
    /// of the same function cannot spin on a lock the code it interrupted holds. The kernel
    /// clears `RFLAGS.IF` around it; the default, for hosts and fakes without interrupts,
    /// just runs it.
    fn without_interrupts(&self, f: &mut dyn FnMut()) {
        f();
    }
}
