//! Tests of the vector allocator: unit tests, and a property test of random allocations
//! and frees against a model.

use super::*;
use proptest::prelude::*;

fn standard(cpus: u32) -> VectorAllocator {
    VectorAllocator::new(cpus, 0x30..=0xEF, &[]).unwrap()
}

#[test]
fn aligned_starts_finds_runs() {
    assert_eq!(aligned_starts(0, 1), 0);
    assert_eq!(aligned_starts(u64::MAX, 32), 1 | (1 << 32));
    assert_eq!(aligned_starts(u64::MAX, 1), u64::MAX);
    // Free 3..=10: the aligned 4-block at 4, the 8-block at 8 is only half free.
    let free = 0b111_1111_1000;
    assert_eq!(aligned_starts(free, 4), 1 << 4);
    assert_eq!(aligned_starts(free, 2), (1 << 4) | (1 << 6) | (1 << 8));
    assert_eq!(aligned_starts(free, 8), 0);
    // A run that is long enough but not aligned is not a block.
    assert_eq!(aligned_starts(0xFF << 4, 8), 0);
    // The top of the word.
    assert_eq!(aligned_starts(0xFFFF_FFFF << 32, 32), 1 << 32);
    assert_eq!(aligned_starts(1 << 63, 1), 1 << 63);
    assert_eq!(aligned_starts(1 << 63, 2), 0);
}

#[test]
fn single_vectors_spread_over_least_loaded_cpus() {
    let mut a = standard(4);
    let blocks: Vec<Block> = (0..8)
        .map(|_| a.allocate(1, Policy::LeastLoaded).unwrap())
        .collect();
    let placed: Vec<(u32, u8)> = blocks.iter().map(|b| (b.cpu(), b.first())).collect();
    assert_eq!(
        placed,
        [
            (0, 0x30),
            (1, 0x30),
            (2, 0x30),
            (3, 0x30),
            (0, 0x31),
            (1, 0x31),
            (2, 0x31),
            (3, 0x31)
        ]
    );
    for cpu in 0..4 {
        assert_eq!(a.used_on(cpu), Ok(2));
        assert_eq!(a.free_on(cpu), Ok(0xEF - 0x30 + 1 - 2));
    }
    assert_eq!(a.total_free(), 4 * 192 - 8);
    // Load CPU 2 with a block: singles now avoid it.
    let _big = a.allocate(16, Policy::Cpu(2)).unwrap();
    let next: Vec<u32> = (0..3)
        .map(|_| a.allocate(1, Policy::LeastLoaded).unwrap().cpu())
        .collect();
    assert_eq!(next, [0, 1, 3]);
}

#[test]
fn blocks_are_aligned_contiguous_and_on_one_cpu() {
    let mut a = standard(2);
    let one = a.allocate(1, Policy::Cpu(0)).unwrap();
    assert_eq!(one.first(), 0x30);
    // CPU 1 is less loaded; 0x30 is aligned to 16 but not to 32.
    let b16 = a.allocate(16, Policy::LeastLoaded).unwrap();
    assert_eq!((b16.cpu(), b16.first(), b16.last()), (1, 0x30, 0x3F));
    let b32 = a.allocate(32, Policy::LeastLoaded).unwrap();
    assert_eq!((b32.cpu(), b32.first(), b32.last()), (0, 0x40, 0x5F));
    for count in [1u8, 2, 4, 8, 16, 32] {
        let b = a.allocate(count, Policy::Cpu(1)).unwrap();
        assert_eq!(b.count(), count);
        assert_eq!(b.first() % count, 0);
        assert_eq!(b.vectors().count(), usize::from(count));
        assert!(b.vectors().all(|v| a.is_used(1, v)));
        assert!(b.contains(b.first()) && b.contains(b.last()));
        assert!(!b.contains(b.last().wrapping_add(1)));
    }
    // CPU 1: 0x30..=0x3F, then 1 at 0x40, 2 at 0x42, 4 at 0x44, 8 at 0x48, 16 at 0x50,
    // 32 at 0x60.
    for v in 0x30..=0x7F {
        assert_eq!(a.is_used(1, v), v != 0x41, "{v:#x}");
    }
    assert!(!a.is_used(1, 0x80));
    let _ = one;
}

#[test]
fn the_top_block_fits_against_the_range_end() {
    let mut a = VectorAllocator::new(1, 0xE0..=0xFF, &[]).unwrap();
    let b = a.allocate(32, Policy::LeastLoaded).unwrap();
    assert_eq!((b.first(), b.last()), (0xE0, 0xFF));
    assert_eq!(b.vectors().count(), 32);
    assert!(a.is_used(0, 0xFF));
    a.free(b).unwrap();
    assert_eq!(a.total_free(), 32);
}

#[test]
fn exhaustion_reports_what_is_free() {
    // One CPU, 0x30..=0x3F: 16 vectors.
    let mut a = VectorAllocator::new(1, 0x30..=0x3F, &[]).unwrap();
    let mut singles: Vec<Block> = (0..16)
        .map(|_| a.allocate(1, Policy::LeastLoaded).unwrap())
        .collect();
    let err = a.allocate(1, Policy::LeastLoaded).unwrap_err();
    assert_eq!(
        err,
        AllocError::Exhausted {
            asked: 1,
            cpu: None,
            free_total: 0,
            largest_block: 0
        }
    );
    assert_eq!(
        err.to_string(),
        "no free vector on any CPU: 0 vectors free, the largest aligned block is 0"
    );
    // Free 0x31, 0x34..=0x37, 0x3A: 6 free, largest aligned block 4.
    for v in [0x3A, 0x37, 0x36, 0x35, 0x34, 0x31] {
        a.free(singles.remove(v - 0x30)).unwrap();
    }
    assert_eq!(a.total_free(), 6);
    let err = a.allocate(8, Policy::LeastLoaded).unwrap_err();
    assert_eq!(
        err,
        AllocError::Exhausted {
            asked: 8,
            cpu: None,
            free_total: 6,
            largest_block: 4
        }
    );
    assert_eq!(
        err.to_string(),
        "no block of 8 aligned vectors on any CPU: 6 vectors free, the largest aligned \
         block is 4"
    );
    let err = a.allocate(8, Policy::Cpu(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no block of 8 aligned vectors on CPU 0: 6 vectors free there, the largest \
         aligned block is 4"
    );
    let four = a.allocate(4, Policy::LeastLoaded).unwrap();
    assert_eq!(four.first(), 0x34);
    assert_eq!(a.largest_block_on(0), Ok(1));
    let err = a.allocate(2, Policy::LeastLoaded).unwrap_err();
    assert_eq!(
        err,
        AllocError::Exhausted {
            asked: 2,
            cpu: None,
            free_total: 2,
            largest_block: 1
        }
    );
}

#[test]
fn exhaustion_over_several_cpus_sums_and_takes_the_largest() {
    let mut a = VectorAllocator::new(3, 0x40..=0x5F, &[]).unwrap();
    let _full = a.allocate(32, Policy::Cpu(0)).unwrap();
    let _half = a.allocate(16, Policy::Cpu(1)).unwrap();
    // CPU 2: only 0x42 and 0x52 used, so no block of 16 is free there.
    let mut singles: Vec<Block> = (0..32)
        .map(|_| a.allocate(1, Policy::Cpu(2)).unwrap())
        .collect();
    let keep = [singles.remove(0x12), singles.remove(0x02)];
    for b in singles {
        a.free(b).unwrap();
    }
    assert_eq!(a.used_on(2), Ok(2));
    assert_eq!(
        a.allocate(32, Policy::LeastLoaded),
        Err(AllocError::Exhausted {
            asked: 32,
            cpu: None,
            free_total: 16 + 30,
            largest_block: 16
        })
    );
    // A block goes to the least-loaded CPU that has one, even if another is emptier.
    let b = a.allocate(16, Policy::LeastLoaded).unwrap();
    assert_eq!((b.cpu(), b.first()), (1, 0x50));
    // Singles go to the emptiest CPU.
    let one = a.allocate(1, Policy::LeastLoaded).unwrap();
    assert_eq!((one.cpu(), one.first()), (2, 0x40));
    let _ = keep;
}

#[test]
fn reserved_vectors_are_never_handed_out() {
    let reserved = [0x40, 0x80, 0x20, 0xFE];
    let mut a = VectorAllocator::new(2, 0x30..=0xEF, &reserved).unwrap();
    assert_eq!(a.capacity_per_cpu(), 192 - 2);
    assert!(!a.is_allocatable(0x40) && !a.is_allocatable(0x2F) && !a.is_allocatable(0xF0));
    assert!(a.is_allocatable(0x30) && a.is_allocatable(0xEF));
    // Blocks of 32: 0x40 and 0x80 are reserved, 0xE0..=0xFF crosses the range end.
    let b32: Vec<Block> = core::iter::from_fn(|| a.allocate(32, Policy::Cpu(0)).ok()).collect();
    let firsts: Vec<u8> = b32.iter().map(Block::first).collect();
    assert_eq!(firsts, [0x60, 0xA0, 0xC0]);
    let mut singles = Vec::new();
    while let Ok(b) = a.allocate(1, Policy::LeastLoaded) {
        assert!(a.is_allocatable(b.first()));
        assert!(!reserved.contains(&b.first()));
        assert!((0x30..=0xEF).contains(&b.first()));
        singles.push(b);
    }
    assert_eq!(singles.len() + 96, 2 * 190);
    assert_eq!(a.total_free(), 0);
    for cpu in 0..2 {
        assert!(!a.is_used(cpu, 0x40) && !a.is_used(cpu, 0x80) && !a.is_used(cpu, 0xFF));
    }
}

#[test]
fn wrong_allocator_free_is_rejected_and_changes_nothing() {
    let mut a = standard(2);
    let mut b = standard(2);
    let block = a.allocate(4, Policy::LeastLoaded).unwrap();
    let _other = b.allocate(4, Policy::LeastLoaded).unwrap();
    let before = b.snapshot();
    let err = b.free(block).unwrap_err();
    assert!(matches!(err, FreeError::WrongAllocator { .. }));
    assert_eq!(
        err.to_string(),
        "cannot free vectors 0x30..=0x33 on CPU 0: they belong to another allocator"
    );
    assert_eq!(b.snapshot(), before);
    // The block comes back and frees into its own allocator.
    a.free(err.into_block()).unwrap();
    assert_eq!(a.snapshot(), standard(2).snapshot());
}

#[test]
fn inconsistent_blocks_are_rejected_and_change_nothing() {
    let mut a = standard(2);
    let real = a.allocate(2, Policy::Cpu(1)).unwrap();
    let before = a.snapshot();
    // Forged (only possible inside this module): half used, unused, bad shapes.
    let forged = [
        (1, 0x30, 4, 0x32),
        (0, 0x30, 1, 0x30),
        (1, 0x31, 2, 0x31),
        (1, 0x30, 3, 0x30),
        (1, 0x30, 0, 0x30),
        (1, 0x00, 64, 0x00),
        (2, 0x30, 1, 0x30),
        (1, 0x20, 32, 0x20),
    ];
    for (cpu, first, count, vector) in forged {
        let block = Block {
            allocator: a.id,
            cpu,
            first,
            count,
        };
        let err = a.free(block).unwrap_err();
        assert!(
            matches!(err, FreeError::NotUsed { vector: v, .. } if v == vector),
            "{err:?}"
        );
        assert_eq!(a.snapshot(), before);
    }
    let err = a
        .free(Block {
            allocator: a.id,
            cpu: 0,
            first: 0x40,
            count: 1,
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot free vectors 0x40..=0x40 on CPU 0: vector 0x40 is not marked used"
    );
    a.free(real).unwrap();
    assert_eq!(a.snapshot(), standard(2).snapshot());
}

#[test]
fn invalid_requests() {
    let mut a = standard(4);
    for count in [0u8, 3, 6, 12, 33, 64, 128, 255] {
        assert_eq!(
            a.allocate(count, Policy::LeastLoaded),
            Err(AllocError::InvalidCount(count))
        );
    }
    assert_eq!(
        AllocError::InvalidCount(3).to_string(),
        "cannot allocate a block of 3 vectors: a block is a power of two from 1 to 32 \
         (multi-message MSI)"
    );
    assert_eq!(a.allocate(1, Policy::Cpu(4)), Err(AllocError::NoSuchCpu(4)));
    assert_eq!(a.free_on(4), Err(AllocError::NoSuchCpu(4)));
    assert_eq!(a.used_on(u32::MAX), Err(AllocError::NoSuchCpu(u32::MAX)));
    assert_eq!(a.largest_block_on(4), Err(AllocError::NoSuchCpu(4)));
    assert!(!a.is_used(4, 0x30));
    assert_eq!(
        AllocError::NoSuchCpu(4).to_string(),
        "no CPU with index 4 in this allocator"
    );
    assert_eq!(a.snapshot(), standard(4).snapshot());
}

#[test]
fn setup_errors() {
    assert_eq!(
        VectorAllocator::new(0, 0x30..=0xEF, &[]).unwrap_err(),
        SetupError::CpuCount(0)
    );
    assert_eq!(
        VectorAllocator::new(MAX_CPUS + 1, 0x30..=0xEF, &[]).unwrap_err(),
        SetupError::CpuCount(257)
    );
    assert!(VectorAllocator::new(MAX_CPUS, 0x30..=0xEF, &[]).is_ok());
    assert_eq!(
        VectorAllocator::new(1, 0x1F..=0xEF, &[]).unwrap_err(),
        SetupError::ExceptionVector(0x1F)
    );
    #[allow(clippy::reversed_empty_ranges)]
    let empty = 0x40..=0x30;
    assert_eq!(
        VectorAllocator::new(1, empty, &[]).unwrap_err(),
        SetupError::NothingAllocatable
    );
    assert_eq!(
        VectorAllocator::new(1, 0x30..=0x31, &[0x31, 0x30]).unwrap_err(),
        SetupError::NothingAllocatable
    );
    assert_eq!(
        SetupError::ExceptionVector(0x1F).to_string(),
        "vector 0x1f is an exception vector (0..=31), never allocatable"
    );
    let a = VectorAllocator::new(3, 0x20..=0xFF, &[0xFF]).unwrap();
    assert_eq!(
        (a.cpus(), a.range(), a.capacity_per_cpu()),
        (3, 0x20..=0xFF, 223)
    );
}

#[test]
fn a_thousand_cycles_return_to_the_start() {
    let mut a = standard(8);
    let start = a.snapshot();
    let mut long_lived = Vec::new();
    // Miri interprets every step: enough cycles there to keep a block across some (60), the
    // thousand natively.
    for cycle in 0..if cfg!(miri) { 60 } else { 1000u32 } {
        let mut live = Vec::new();
        for count in [1u8, 32, 2, 1, 8, 4, 16, 1] {
            live.push(a.allocate(count, Policy::LeastLoaded).unwrap());
        }
        live.push(a.allocate(4, Policy::Cpu(cycle % 8)).unwrap());
        // Release in a cycle-dependent order.
        let n = live.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.rotate_left(cycle as usize % n);
        if cycle % 2 == 1 {
            order.reverse();
        }
        let mut slots: Vec<Option<Block>> = live.into_iter().map(Some).collect();
        for i in order {
            a.free(slots[i].take().unwrap()).unwrap();
        }
        // Some cycles keep one block across the next cycles, then give it back.
        if cycle % 100 == 0 {
            long_lived.push(a.allocate(2, Policy::LeastLoaded).unwrap());
        }
        if cycle % 100 == 50 {
            a.free(long_lived.pop().unwrap()).unwrap();
        }
    }
    assert!(long_lived.is_empty());
    assert_eq!(a.snapshot(), start);
    assert_eq!(a.total_free(), 8 * 192);
}

#[test]
fn snapshot_queries() {
    let mut a = standard(2);
    let b = a.allocate(4, Policy::Cpu(1)).unwrap();
    let s = a.snapshot();
    assert!(s.is_used(1, 0x33) && !s.is_used(1, 0x34) && !s.is_used(0, 0x30));
    assert!(!s.is_used(2, 0x30));
    assert_eq!(
        (s.used_on(0), s.used_on(1), s.used_on(2)),
        (Some(0), Some(4), None)
    );
    a.free(b).unwrap();
    assert_ne!(a.snapshot(), s);
}

/// The model: per-CPU sets of used vectors, searched by brute force.
struct Model {
    allocatable: [bool; 256],
    used: Vec<[bool; 256]>,
}

impl Model {
    fn count(&self, cpu: usize) -> usize {
        self.used[cpu].iter().filter(|&&u| u).count()
    }

    fn lowest(&self, cpu: usize, count: usize) -> Option<usize> {
        (0..256)
            .step_by(count)
            .find(|&s| (s..s + count).all(|v| self.allocatable[v] && !self.used[cpu][v]))
    }

    fn largest(&self, cpu: usize) -> u8 {
        [32u8, 16, 8, 4, 2, 1]
            .into_iter()
            .find(|&n| self.lowest(cpu, usize::from(n)).is_some())
            .unwrap_or(0)
    }

    fn free(&self, cpu: usize) -> usize {
        self.allocatable.iter().filter(|&&a| a).count() - self.count(cpu)
    }

    /// Where `allocate(count, policy)` must put its block, or the error it must return.
    fn expect(&self, count: usize, policy: Policy) -> Result<(usize, usize), AllocError> {
        let cpus = self.used.len();
        let candidates: Vec<usize> = match policy {
            Policy::LeastLoaded => (0..cpus).collect(),
            Policy::Cpu(c) if (c as usize) < cpus => vec![c as usize],
            Policy::Cpu(c) => return Err(AllocError::NoSuchCpu(c)),
        };
        let best = candidates
            .iter()
            .filter_map(|&cpu| self.lowest(cpu, count).map(|first| (cpu, first)))
            .min_by_key(|&(cpu, _)| (self.count(cpu), cpu));
        best.ok_or(AllocError::Exhausted {
            asked: count as u8,
            cpu: match policy {
                Policy::LeastLoaded => None,
                Policy::Cpu(c) => Some(c),
            },
            free_total: candidates.iter().map(|&c| self.free(c)).sum(),
            largest_block: candidates.iter().map(|&c| self.largest(c)).max().unwrap(),
        })
    }
}

fn check_cpu(a: &VectorAllocator, model: &Model, cpu: usize) {
    let c = cpu as u32;
    assert_eq!(a.used_on(c), Ok(model.count(cpu)));
    assert_eq!(a.free_on(c), Ok(model.free(cpu)));
    assert_eq!(a.largest_block_on(c), Ok(model.largest(cpu)));
    for v in 0..=255u8 {
        assert_eq!(
            a.is_used(c, v),
            model.used[cpu][usize::from(v)],
            "cpu {cpu} {v:#x}"
        );
    }
}

proptest! {
    // Miri interprets every case (each operation checks all 256 vectors against the
    // model): a few short ones there, many long ones natively.
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 3 } else { 300 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_allocations_and_frees_match_the_model(
        cpus in 1u32..=6,
        start in 0x20u8..=0x70,
        len in 1u8..=0x90,
        reserved in prop::collection::vec(any::<u8>(), 0..6),
        ops in prop::collection::vec(
            (0u8..10, 0u32..6, prop::option::of(0u32..7), any::<usize>()),
            0..if cfg!(miri) { 6 } else { 250 },
        ),
    ) {
        let end = start.saturating_add(len - 1);
        let a = VectorAllocator::new(cpus, start..=end, &reserved);
        let mut allocatable = [false; 256];
        for v in start..=end {
            allocatable[usize::from(v)] = !reserved.contains(&v);
        }
        if !allocatable.contains(&true) {
            prop_assert_eq!(a.unwrap_err(), SetupError::NothingAllocatable);
            return Ok(());
        }
        let mut a = a.unwrap();
        let mut model = Model { allocatable, used: vec![[false; 256]; cpus as usize] };
        let capacity = allocatable.iter().filter(|&&x| x).count();
        prop_assert_eq!(a.capacity_per_cpu(), capacity);
        let start_snapshot = a.snapshot();
        let mut live: Vec<Block> = Vec::new();

        for (kind, power, target, pick) in ops {
            if kind < 6 || live.is_empty() {
                let count = 1u8 << power;
                let policy = target.map_or(Policy::LeastLoaded, Policy::Cpu);
                let expected = model.expect(usize::from(count), policy);
                let got = a.allocate(count, policy);
                match (&got, expected) {
                    (Ok(b), Ok((cpu, first))) => {
                        prop_assert_eq!((b.cpu() as usize, usize::from(b.first())), (cpu, first));
                        prop_assert_eq!(b.count(), count);
                        prop_assert_eq!(b.first() % count, 0);
                        prop_assert_eq!(b.vectors().count(), usize::from(count));
                        prop_assert!(b.first() >= start && b.last() <= end);
                        for v in b.vectors() {
                            let v = usize::from(v);
                            prop_assert!(model.allocatable[v], "reserved {:#x} handed out", v);
                            prop_assert!(!model.used[cpu][v], "{:#x} handed out twice", v);
                            model.used[cpu][v] = true;
                        }
                        for other in &live {
                            prop_assert!(
                                other.cpu() != b.cpu()
                                    || other.last() < b.first()
                                    || b.last() < other.first()
                            );
                        }
                    }
                    (Err(e), Err(x)) => prop_assert_eq!(*e, x),
                    (got, expected) => {
                        prop_assert!(false, "got {:?}, the model expects {:?}", got, expected)
                    }
                }
                if let Ok(b) = got {
                    check_cpu(&a, &model, b.cpu() as usize);
                    live.push(b);
                }
            } else {
                let b = live.swap_remove(pick % live.len());
                let cpu = b.cpu() as usize;
                for v in b.vectors() {
                    model.used[cpu][usize::from(v)] = false;
                }
                prop_assert_eq!(a.free(b), Ok(()));
                check_cpu(&a, &model, cpu);
            }
            let total: usize = (0..cpus as usize).map(|c| model.free(c)).sum();
            prop_assert_eq!(a.total_free(), total);
            let used: usize = live.iter().map(|b| usize::from(b.count())).sum();
            prop_assert_eq!(a.total_free() + used, capacity * cpus as usize);
        }

        for cpu in 0..cpus as usize {
            check_cpu(&a, &model, cpu);
        }
        for b in live {
            prop_assert_eq!(a.free(b), Ok(()));
        }
        prop_assert_eq!(a.snapshot(), start_snapshot);
        prop_assert_eq!(a.total_free(), capacity * cpus as usize);
    }
}
