//! Interrupt vectors: a per-CPU allocator that hands out single vectors and aligned
//! power-of-two blocks as owned [`Block`]s, for MSI, MSI-X and the IOAPIC.
//!
//! # The vector space
//!
//! An x86 CPU has 256 interrupt vectors. Vectors 0 to 31 are reserved for exceptions and
//! architecture-defined interrupts (Intel SDM vol. 3A §6.2, "Exception and Interrupt
//! Vectors"); 32 to 255 are the operating system's. The kernel also keeps some for itself
//! (the spurious vector 0xFF, the APIC error and timer vectors, IPIs), so the allocator is
//! given the range it may hand out, for example `0x30..=0xEF`, plus any fixed vectors inside
//! it that stay reserved. A vector is a per-CPU resource: the local APIC of each CPU has its
//! own 256, so vector 0x41 on CPU 0 and vector 0x41 on CPU 3 are different interrupts.
//!
//! # Design
//!
//! *Per-CPU bitmaps*, as in Linux's irq matrix (`kernel/irq/matrix.c`): each CPU has a
//! 256-bit bitmap (`[u64; 4]`) of taken vectors, in which the reserved and out-of-range
//! vectors are set once at construction and never cleared, so "free" is simply a zero bit.
//! A separate count of used vectors per CPU makes "least-loaded CPU" a scan of one small
//! array, O(CPUs), without touching the bitmaps.
//!
//! *Least-loaded spreading*: a single vector goes to the CPU with the fewest used vectors
//! (ties go to the lowest CPU index), at the lowest free vector there. Every CPU has the same
//! allocatable set, so if the least-loaded CPU is full, all are. Callers that need a given
//! CPU (affinity set by a driver or a user) ask with [`Policy::Cpu`].
//!
//! *Aligned contiguous blocks*, which Linux's matrix cannot give: it allocates one bit at a
//! time, and x86 Linux refuses contiguous multi-vector allocations in its vector domain
//! (`x86_vector_alloc_irqs()` in `arch/x86/kernel/apic/vector.c`), so multi-message MSI
//! works there only behind interrupt remapping. Multi-message MSI needs them: with
//! Multiple Message Enable set to 2^k, the function generates its messages by modifying the
//! low k bits of the Message Data (PCI Local Bus Specification 3.0 §6.8.1.3 to §6.8.1.6),
//! and on x86 the low 8 bits of the data are the vector. So a block of 2^k messages must be
//! 2^k vectors, contiguous, starting at a multiple of 2^k, all on one CPU (one address).
//! At most 32 (Multiple Message Capable tops out at 32); MSI-X needs no blocks, since every
//! table entry has its own address and data: its callers allocate single vectors.
//!
//! Finding an aligned free block is a few word operations: with `free = !taken`, folding
//! `free &= free >> w` for `w = 1, 2, 4, ..., count / 2` leaves bit `i` set exactly when bits
//! `i .. i + count` are all free, and masking with the aligned start positions (every
//! `count`-th bit) plus `trailing_zeros` gives the lowest block. An aligned block of at most
//! 32 never straddles two words. A block goes to the least-loaded CPU that has one.
//!
//! # Ownership
//!
//! [`VectorAllocator::allocate`] returns a [`Block`]: an owned value, neither `Copy` nor
//! `Clone`, with private fields, so it can only come from the allocator. Its owner (the
//! kernel's MSI/MSI-X/IOAPIC wrapper, which holds it for as long as the device may send the
//! interrupt) gives it back with [`VectorAllocator::free`], which consumes it: freeing the
//! same block twice does not compile (the second call uses a moved value). A block freed
//! into the wrong allocator, or one whose vectors are not marked used (an internal
//! inconsistency), is refused with a [`FreeError`] that hands the block back, and the state
//! is left unchanged. `Block` has no `Drop`: a leaked block (dropped or `mem::forget`ten)
//! keeps its vectors used forever, which costs those vectors and nothing worse; no vector is
//! ever handed out twice. The kernel wraps the allocator in a lock and a `Block` in a type
//! whose `Drop` frees it.
//!
//! Nothing here panics on any input and there is no `unsafe`.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::RangeInclusive;
use core::sync::atomic::{AtomicU64, Ordering};

/// Vectors below this are exceptions (Intel SDM vol. 3A §6.2); they are never allocatable.
pub const FIRST_NON_EXCEPTION: u8 = 32;

/// The most CPUs an allocator can have.
pub const MAX_CPUS: u32 = 256;

/// The largest block: multi-message MSI gives a function at most 32 vectors.
pub const MAX_BLOCK: u8 = 32;

/// Identifies allocator instances so a [`Block`] freed into the wrong one is detected; 0 is
/// never used. 64 bits do not wrap in practice.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// For a block of `1 << i` vectors, the bits where such an aligned block may start in a
/// 64-bit word: every `1 << i`-th bit.
const ALIGNED_STARTS: [u64; 6] = [
    u64::MAX,
    0x5555_5555_5555_5555,
    0x1111_1111_1111_1111,
    0x0101_0101_0101_0101,
    0x0001_0001_0001_0001,
    0x0000_0001_0000_0001,
];

/// Bits where an aligned run of `count` (a power of two, 1 to 32) free bits starts in `free`.
#[inline(always)]
fn aligned_starts(free: u64, count: u8) -> u64 {
    let mut runs = free;
    let mut width = 1u32;
    // Invariant: bit i of `runs` is set iff bits i .. i + width of `free` are all set.
    while width < u32::from(count) {
        runs &= runs >> width;
        width <<= 1;
    }
    runs & ALIGNED_STARTS[count.trailing_zeros() as usize]
}

/// The lowest aligned block of `count` free vectors in a CPU's `taken` bitmap.
#[inline(always)]
fn lowest_block(taken: &[u64; 4], count: u8) -> Option<u8> {
    let mut base = 0u32;
    for &word in taken {
        let starts = aligned_starts(!word, count);
        if starts != 0 {
            // At most 192 + 63 = 255.
            return Some((base + starts.trailing_zeros()) as u8);
        }
        base += 64;
    }
    None
}

/// The largest aligned power-of-two block (at most 32) free in `taken`, 0 if none is free.
fn largest_block(taken: &[u64; 4]) -> u8 {
    let mut count = MAX_BLOCK;
    while count > 0 {
        if taken.iter().any(|&word| aligned_starts(!word, count) != 0) {
            return count;
        }
        count >>= 1;
    }
    0
}

/// Whether `count` is a block size: a power of two from 1 to [`MAX_BLOCK`].
fn valid_count(count: u8) -> bool {
    count.is_power_of_two() && count <= MAX_BLOCK
}

/// The bitmap word and mask covering an aligned block, or `None` if the shape is not one the
/// allocator makes.
fn block_mask(first: u8, count: u8) -> Option<(usize, u64)> {
    // `count` is a power of two, so alignment is a mask test (no division).
    if !valid_count(count) || first & (count - 1) != 0 {
        return None;
    }
    let mask = (u64::MAX >> (64 - u32::from(count))) << (first % 64);
    Some((usize::from(first / 64), mask))
}

/// Where [`VectorAllocator::allocate`] puts a block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// On the CPU with the fewest used vectors that has room (ties: the lowest index).
    #[default]
    LeastLoaded,
    /// On this CPU (an index `0..cpus`, not an APIC id), or not at all.
    Cpu(u32),
}

/// Allocated interrupt vectors: `count` contiguous vectors from `first` on CPU `cpu`, with
/// `first` a multiple of `count` and `count` a power of two from 1 to 32.
///
/// # Invariants
///
/// A `Block` can only come from [`VectorAllocator::allocate`]: its fields are private and it
/// is neither `Copy` nor `Clone`. While it exists its vectors are marked used in the
/// allocator that made it, and no other live `Block` covers any of them. Freeing it
/// ([`VectorAllocator::free`]) consumes it, so a double free cannot be written:
///
/// ```compile_fail,E0382
/// use pci::vectors::{Policy, VectorAllocator};
/// let mut vectors = VectorAllocator::new(1, 0x30..=0xEF, &[]).unwrap();
/// let block = vectors.allocate(1, Policy::LeastLoaded).unwrap();
/// vectors.free(block).unwrap();
/// vectors.free(block).unwrap(); // error[E0382]: use of moved value: `block`
/// ```
///
/// nor can a copy be made to free later:
///
/// ```compile_fail,E0599
/// use pci::vectors::{Policy, VectorAllocator};
/// let mut vectors = VectorAllocator::new(1, 0x30..=0xEF, &[]).unwrap();
/// let block = vectors.allocate(1, Policy::LeastLoaded).unwrap();
/// let copy = block.clone(); // error[E0599]: no method named `clone`
/// ```
///
/// Dropping a `Block` without freeing it leaks its vectors: they stay used forever, and
/// nothing worse happens.
#[must_use = "dropping a Block leaks its vectors; give it back with VectorAllocator::free"]
#[derive(Debug, PartialEq, Eq)]
pub struct Block {
    allocator: u64,
    cpu: u32,
    first: u8,
    count: u8,
}

impl Block {
    /// The CPU index (`0..cpus`) whose local APIC owns these vectors.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }

    /// The first vector, a multiple of [`count`](Self::count).
    pub fn first(&self) -> u8 {
        self.first
    }

    /// How many vectors: a power of two from 1 to 32.
    pub fn count(&self) -> u8 {
        self.count
    }

    /// The last vector.
    pub fn last(&self) -> u8 {
        // first is a multiple of count <= 32, so this never saturates for a real block.
        self.first.saturating_add(self.count.saturating_sub(1))
    }

    /// The vectors, in order (`first..=last`).
    pub fn vectors(&self) -> RangeInclusive<u8> {
        self.first..=self.last()
    }

    /// Whether `vector` is one of this block's.
    pub fn contains(&self, vector: u8) -> bool {
        self.vectors().contains(&vector)
    }
}

/// A failed [`VectorAllocator::allocate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// No CPU allowed by the policy has a free aligned block of `asked` vectors.
    Exhausted {
        /// The block size asked for.
        asked: u8,
        /// The CPU asked for (`Policy::Cpu`), or `None` for any CPU.
        cpu: Option<u32>,
        /// Free vectors on that CPU, or on all CPUs together.
        free_total: usize,
        /// The largest aligned power-of-two block (at most 32) free on that CPU or on any
        /// CPU; 0 if none.
        largest_block: u8,
    },
    /// A block size that is 0, not a power of two, or larger than 32.
    InvalidCount(u8),
    /// A CPU index at or past the allocator's number of CPUs.
    NoSuchCpu(u32),
    /// The CPU's APIC ID does not fit the 8-bit destination of an MSI message or an IOAPIC
    /// entry (Intel SDM vol. 3A §11.11.1); reaching it needs interrupt remapping, which this
    /// kernel does not program.
    Unreachable {
        /// The CPU index.
        cpu: u32,
        /// Its (x2APIC) ID.
        apic_id: u32,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AllocError::Exhausted {
                asked,
                cpu,
                free_total,
                largest_block,
            } => {
                if asked == 1 {
                    f.write_str("no free vector")?;
                } else {
                    write!(f, "no block of {asked} aligned vectors")?;
                }
                match cpu {
                    None => write!(f, " on any CPU: {free_total} vectors free")?,
                    Some(cpu) => write!(f, " on CPU {cpu}: {free_total} vectors free there")?,
                }
                write!(f, ", the largest aligned block is {largest_block}")
            }
            AllocError::InvalidCount(count) => write!(
                f,
                "cannot allocate a block of {count} vectors: a block is a power of two from 1 \
                 to {MAX_BLOCK} (multi-message MSI)"
            ),
            AllocError::NoSuchCpu(cpu) => write!(f, "no CPU with index {cpu} in this allocator"),
            AllocError::Unreachable { cpu, apic_id } => write!(
                f,
                "CPU {cpu} has APIC ID {apic_id}, above 255: device interrupts cannot name it \
                 without interrupt remapping"
            ),
        }
    }
}

impl core::error::Error for AllocError {}

/// A refused [`VectorAllocator::free`]: the allocator's state is unchanged and the block is
/// handed back ([`into_block`](Self::into_block)).
#[derive(Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The block was made by another allocator instance.
    WrongAllocator {
        /// The block, unchanged.
        block: Block,
    },
    /// One of the block's vectors is not marked used: the allocator's state and the block
    /// disagree (a bug, never a caller's mistake that compiles).
    NotUsed {
        /// The block, unchanged.
        block: Block,
        /// The first of its vectors that is not marked used.
        vector: u8,
    },
}

impl FreeError {
    /// The refused block.
    pub fn block(&self) -> &Block {
        match self {
            FreeError::WrongAllocator { block } | FreeError::NotUsed { block, .. } => block,
        }
    }

    /// Gives the refused block back, for example to free it into the right allocator.
    pub fn into_block(self) -> Block {
        match self {
            FreeError::WrongAllocator { block } | FreeError::NotUsed { block, .. } => block,
        }
    }
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let block = self.block();
        write!(
            f,
            "cannot free vectors {:#04x}..={:#04x} on CPU {}: ",
            block.first,
            block.last(),
            block.cpu
        )?;
        match self {
            FreeError::WrongAllocator { .. } => f.write_str("they belong to another allocator"),
            FreeError::NotUsed { vector, .. } => {
                write!(f, "vector {vector:#04x} is not marked used")
            }
        }
    }
}

impl core::error::Error for FreeError {}

/// A failed [`VectorAllocator::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The number of CPUs is 0 or above [`MAX_CPUS`].
    CpuCount(u32),
    /// The range starts at an exception vector (below 32).
    ExceptionVector(u8),
    /// The range is empty or every vector in it is reserved.
    NothingAllocatable,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SetupError::CpuCount(cpus) => {
                write!(f, "{cpus} CPUs: an allocator has 1 to {MAX_CPUS}")
            }
            SetupError::ExceptionVector(vector) => write!(
                f,
                "vector {vector:#04x} is an exception vector (0..=31), never allocatable"
            ),
            SetupError::NothingAllocatable => {
                f.write_str("no allocatable vector: the range is empty or all reserved")
            }
        }
    }
}

impl core::error::Error for SetupError {}

/// The used vectors of every CPU, to compare states: freeing everything allocated since a
/// snapshot gives an equal snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Per CPU: used vectors (reserved ones excluded) and their count.
    cpus: Vec<([u64; 4], u16)>,
}

impl Snapshot {
    /// Whether `vector` was used on `cpu` (false for a CPU that does not exist).
    pub fn is_used(&self, cpu: u32, vector: u8) -> bool {
        self.cpus
            .get(cpu as usize)
            .is_some_and(|(bits, _)| bits[usize::from(vector / 64)] & (1 << (vector % 64)) != 0)
    }

    /// How many vectors were used on `cpu`, or `None` for a CPU that does not exist.
    pub fn used_on(&self, cpu: u32) -> Option<usize> {
        self.cpus
            .get(cpu as usize)
            .map(|&(_, used)| usize::from(used))
    }
}

/// Per-CPU interrupt-vector bitmaps handing out single vectors and aligned blocks; see the
/// [module documentation](self).
///
/// ```
/// use pci::vectors::{Policy, VectorAllocator};
/// let mut vectors = VectorAllocator::new(4, 0x30..=0xEF, &[0x80]).unwrap();
/// let msi = vectors.allocate(8, Policy::LeastLoaded).unwrap();
/// assert_eq!((msi.cpu(), msi.first(), msi.count()), (0, 0x30, 8));
/// let one = vectors.allocate(1, Policy::LeastLoaded).unwrap();
/// assert_eq!((one.cpu(), one.first()), (1, 0x30)); // CPU 0 has 8 used, CPU 1 none
/// let start = VectorAllocator::new(4, 0x30..=0xEF, &[0x80]).unwrap().snapshot();
/// vectors.free(msi).unwrap();
/// vectors.free(one).unwrap();
/// assert_eq!(vectors.snapshot(), start);
/// ```
///
/// # Invariants
///
/// For every CPU, the used count equals the number of used bits; every used bit belongs to
/// exactly one live [`Block`] from this allocator (or to a leaked one); reserved and
/// out-of-range vectors are never used. The allocator is not `Clone`: two copies would share
/// an identity and each accept the other's blocks.
#[derive(Debug)]
pub struct VectorAllocator {
    /// Identity stamped into every [`Block`].
    id: u64,
    /// The range given at construction.
    first: u8,
    last: u8,
    /// Vectors never allocatable: outside the range, or reserved.
    unavailable: [u64; 4],
    /// Allocatable vectors per CPU.
    capacity: u16,
    /// Per CPU: used vectors plus `unavailable`.
    taken: Vec<[u64; 4]>,
    /// Per CPU: number of used vectors (reserved ones excluded).
    used: Vec<u16>,
    /// Sum of `used`.
    total_used: usize,
}

impl VectorAllocator {
    /// An allocator for `cpus` CPUs (indices `0..cpus`) handing out vectors from `range`
    /// (which must not include the exception vectors 0..=31), except those in `reserved`
    /// (entries outside `range` are ignored). Every CPU starts with nothing used.
    pub fn new(cpus: u32, range: RangeInclusive<u8>, reserved: &[u8]) -> Result<Self, SetupError> {
        if cpus == 0 || cpus > MAX_CPUS {
            return Err(SetupError::CpuCount(cpus));
        }
        let (first, last) = (*range.start(), *range.end());
        if first > last {
            return Err(SetupError::NothingAllocatable);
        }
        if first < FIRST_NON_EXCEPTION {
            return Err(SetupError::ExceptionVector(first));
        }
        let mut unavailable = [u64::MAX; 4];
        for vector in first..=last {
            unavailable[usize::from(vector / 64)] &= !(1 << (vector % 64));
        }
        for &vector in reserved {
            unavailable[usize::from(vector / 64)] |= 1 << (vector % 64);
        }
        let capacity: u32 = unavailable.iter().map(|word| word.count_zeros()).sum();
        if capacity == 0 {
            return Err(SetupError::NothingAllocatable);
        }
        Ok(VectorAllocator {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            first,
            last,
            unavailable,
            // At most 224.
            capacity: capacity as u16,
            taken: vec![unavailable; cpus as usize],
            used: vec![0; cpus as usize],
            total_used: 0,
        })
    }

    /// Allocates `count` vectors (a power of two from 1 to 32), contiguous and aligned to
    /// `count`, on one CPU chosen by `policy`: the lowest such block on that CPU.
    ///
    /// With [`Policy::LeastLoaded`], a single vector goes to the CPU with the fewest used
    /// vectors, and a block to the least-loaded CPU that has such a block free (ties: the
    /// lowest CPU index).
    #[inline]
    pub fn allocate(&mut self, count: u8, policy: Policy) -> Result<Block, AllocError> {
        if !valid_count(count) {
            return Err(AllocError::InvalidCount(count));
        }
        let found = match policy {
            Policy::LeastLoaded => self.find_least_loaded(count),
            Policy::Cpu(cpu) => {
                let taken = self
                    .taken
                    .get(cpu as usize)
                    .ok_or(AllocError::NoSuchCpu(cpu))?;
                lowest_block(taken, count).map(|first| (cpu as usize, first))
            }
        };
        let Some((cpu, first)) = found else {
            return Err(self.exhausted(count, policy));
        };
        // Aligned to `count` and free, so `block_mask` accepts it.
        let word = usize::from(first / 64);
        let mask = (u64::MAX >> (64 - u32::from(count))) << (first % 64);
        self.taken[cpu][word] |= mask;
        self.used[cpu] += u16::from(count);
        self.total_used += usize::from(count);
        Ok(Block {
            allocator: self.id,
            // At most MAX_CPUS - 1.
            cpu: cpu as u32,
            first,
            count,
        })
    }

    /// The least-loaded CPU with a free aligned block of `count`, and the block's first
    /// vector.
    #[inline(always)]
    fn find_least_loaded(&self, count: u8) -> Option<(usize, u8)> {
        if count == 1 {
            // Every CPU has the same allocatable set: if the least-loaded one is full, all are.
            let mut best = 0;
            let mut best_used = self.used[0];
            for (cpu, &used) in self.used.iter().enumerate().skip(1) {
                if used < best_used {
                    best = cpu;
                    best_used = used;
                }
            }
            if best_used >= self.capacity {
                return None;
            }
            return lowest_block(&self.taken[best], 1).map(|first| (best, first));
        }
        let mut best = None;
        let mut best_used = u16::MAX;
        for (cpu, &used) in self.used.iter().enumerate() {
            // Only a strictly less loaded CPU beats the one found (ties: lowest index).
            if used >= best_used || self.capacity - used < u16::from(count) {
                continue;
            }
            if let Some(first) = lowest_block(&self.taken[cpu], count) {
                best = Some((cpu, first));
                best_used = used;
                if used == 0 {
                    break;
                }
            }
        }
        best
    }

    /// The error for a failed allocation of `count` under `policy` (a valid CPU).
    #[cold]
    fn exhausted(&self, count: u8, policy: Policy) -> AllocError {
        let (cpu, free_total, largest_block) = match policy {
            Policy::LeastLoaded => (
                None,
                self.total_free(),
                self.taken.iter().map(largest_block).max().unwrap_or(0),
            ),
            Policy::Cpu(cpu) => {
                let index = cpu as usize;
                (
                    Some(cpu),
                    usize::from(self.capacity - self.used[index]),
                    largest_block(&self.taken[index]),
                )
            }
        };
        AllocError::Exhausted {
            asked: count,
            cpu,
            free_total,
            largest_block,
        }
    }

    /// Gives `block`'s vectors back; they may be handed out again at once.
    ///
    /// Refuses, leaving the state unchanged and handing the block back in the error, a block
    /// from another allocator instance ([`FreeError::WrongAllocator`]) or one whose vectors
    /// are not all marked used ([`FreeError::NotUsed`], an internal inconsistency).
    #[inline]
    pub fn free(&mut self, block: Block) -> Result<(), FreeError> {
        if block.allocator != self.id {
            return Err(FreeError::WrongAllocator { block });
        }
        let cpu = block.cpu as usize;
        let (Some((word, mask)), Some(taken)) = (
            block_mask(block.first, block.count),
            self.taken.get_mut(cpu),
        ) else {
            let vector = block.first;
            return Err(FreeError::NotUsed { block, vector });
        };
        let missing = (mask & !taken[word]) | (mask & self.unavailable[word]);
        if missing != 0 {
            // At most 192 + 63.
            let vector = (word as u32 * 64 + missing.trailing_zeros()) as u8;
            return Err(FreeError::NotUsed { block, vector });
        }
        taken[word] &= !mask;
        self.used[cpu] -= u16::from(block.count);
        self.total_used -= usize::from(block.count);
        Ok(())
    }

    /// The number of CPUs.
    pub fn cpus(&self) -> u32 {
        // At most MAX_CPUS.
        self.used.len() as u32
    }

    /// The range given at construction (reserved vectors inside it included).
    pub fn range(&self) -> RangeInclusive<u8> {
        self.first..=self.last
    }

    /// Allocatable vectors per CPU: the range minus the reserved vectors.
    pub fn capacity_per_cpu(&self) -> usize {
        usize::from(self.capacity)
    }

    /// Whether `vector` may ever be handed out (in the range and not reserved).
    pub fn is_allocatable(&self, vector: u8) -> bool {
        self.unavailable[usize::from(vector / 64)] & (1 << (vector % 64)) == 0
    }

    /// Free vectors on `cpu`.
    pub fn free_on(&self, cpu: u32) -> Result<usize, AllocError> {
        Ok(usize::from(self.capacity) - self.used_on(cpu)?)
    }

    /// Used vectors on `cpu`.
    pub fn used_on(&self, cpu: u32) -> Result<usize, AllocError> {
        self.used
            .get(cpu as usize)
            .map(|&used| usize::from(used))
            .ok_or(AllocError::NoSuchCpu(cpu))
    }

    /// The largest aligned power-of-two block (at most 32) free on `cpu`, 0 if none.
    pub fn largest_block_on(&self, cpu: u32) -> Result<u8, AllocError> {
        self.taken
            .get(cpu as usize)
            .map(largest_block)
            .ok_or(AllocError::NoSuchCpu(cpu))
    }

    /// Free vectors on all CPUs together.
    pub fn total_free(&self) -> usize {
        usize::from(self.capacity) * self.used.len() - self.total_used
    }

    /// Whether `vector` is allocated on `cpu` (false for reserved vectors and for a CPU that
    /// does not exist).
    pub fn is_used(&self, cpu: u32, vector: u8) -> bool {
        let (word, bit) = (usize::from(vector / 64), 1u64 << (vector % 64));
        self.taken
            .get(cpu as usize)
            .is_some_and(|taken| taken[word] & !self.unavailable[word] & bit != 0)
    }

    /// The used vectors of every CPU, comparable with `==`.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            cpus: self
                .taken
                .iter()
                .zip(&self.used)
                .map(|(taken, &used)| {
                    let mut bits = [0; 4];
                    for (word, bits) in bits.iter_mut().enumerate() {
                        *bits = taken[word] & !self.unavailable[word];
                    }
                    (bits, used)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
