//! The kernel's vector allocator: `pci::vectors::VectorAllocator` (host-tested, property-
//! tested) behind a lock, over the online CPUs (the boot CPU until others are started) and the
//! allocatable range 0x30-0xEF.
//!
//! Ownership: a [`Block`] belongs to whoever allocated it (an `IrqVectors`, the console's
//! receive interrupt) and goes back through [`free`], which consumes it. A leaked block keeps
//! its vectors used: nothing else is ever handed them.

use pci::vectors::{AllocError, Block, FreeError, Policy, Snapshot, VectorAllocator};
use spin::Mutex;

/// First vector the allocator may hand out (0x20-0x2F stay with the masked PICs).
pub const FIRST: u8 = 0x30;
/// Last vector the allocator may hand out (0xF0-0xFF are the kernel's fixed vectors).
pub const LAST: u8 = 0xEF;

static ALLOCATOR: Mutex<Option<VectorAllocator>> = Mutex::new(None);

/// The allocator's index of the CPU this runs on. Only the boot CPU runs (see
/// [`super::init`]), and it is index 0.
pub fn current_cpu() -> u32 {
    0
}

/// Creates the allocator for `cpus` online CPUs (at most [`super::dispatch::MAX_CPUS`]: the
/// dispatch table has a slot for every vector it hands out).
pub fn init(cpus: u32) {
    assert!(
        cpus as usize <= super::dispatch::MAX_CPUS,
        "more CPUs than the dispatch table holds"
    );
    let allocator = VectorAllocator::new(cpus, FIRST..=LAST, &[]).expect("valid vector range");
    *ALLOCATOR.lock() = Some(allocator);
}

fn with<R>(f: impl FnOnce(&mut VectorAllocator) -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| {
        f(ALLOCATOR
            .lock()
            .as_mut()
            .expect("vector allocator used before init"))
    })
}

/// Allocates `count` vectors (1, or an aligned power-of-two block) on the least-loaded CPU.
pub fn allocate(count: u8) -> Result<Block, AllocError> {
    with(|a| a.allocate(count, Policy::LeastLoaded))
}

/// Gives a block back. Where interrupts are remapped, the block's remapping entries are
/// cleared too: the last owner's device can no longer raise these vectors.
pub fn free(block: Block) -> Result<(), FreeError> {
    let (cpu, first, count) = (block.cpu(), block.first(), block.count());
    with(|a| a.free(block))?;
    crate::iommu::interrupts::release(cpu, first, count);
    Ok(())
}

/// The allocator's state, for "back to baseline" checks.
pub fn snapshot() -> Snapshot {
    with(|a| a.snapshot())
}

/// Free vectors on all CPUs.
pub fn total_free() -> usize {
    with(|a| a.total_free())
}
