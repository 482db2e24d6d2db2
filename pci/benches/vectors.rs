//! Benchmark of the interrupt-vector allocator (`pci::vectors`): allocate and release, single
//! vectors and blocks of 32, on 8 CPUs, empty and fragmented.
//!
//! Run with `cargo bench -p pci --bench vectors` (release profile). Each figure is the median
//! of 5 runs of many iterations, timed with `std::time::Instant`.

use std::hint::black_box;
use std::time::Instant;

use pci::vectors::{Block, Policy, VectorAllocator};

const CPUS: u32 = 8;
const RUNS: usize = 5;

/// An empty allocator: 8 CPUs, vectors 0x30..=0xEF.
fn empty() -> VectorAllocator {
    VectorAllocator::new(CPUS, 0x30..=0xEF, &[0x80]).expect("valid allocator")
}

/// A fragmented one: on every CPU, 0x30..=0x9F allocated as singles and every fifth one
/// (shifted per CPU) freed again, so searches go past used words and scattered holes, and
/// blocks of 32 are free only from 0xA0. Returns the blocks still held.
fn fragmented() -> (VectorAllocator, Vec<Block>) {
    let mut a = empty();
    let mut held = Vec::new();
    for cpu in 0..CPUS {
        let mut singles = Vec::new();
        while let Ok(b) = a.allocate(1, Policy::Cpu(cpu)) {
            if b.first() > 0x9F {
                a.free(b).expect("own block");
                break;
            }
            singles.push(b);
        }
        for b in singles {
            if (usize::from(b.first()) + cpu as usize).is_multiple_of(5) {
                a.free(b).expect("own block");
            } else {
                held.push(b);
            }
        }
    }
    (a, held)
}

/// Nanoseconds per allocate+release of `count` vectors under `policy`: median of RUNS runs.
fn time(a: &mut VectorAllocator, count: u8, policy: Policy, iterations: u32) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                let block = a
                    .allocate(black_box(count), black_box(policy))
                    .expect("room");
                black_box(&block);
                a.free(black_box(block)).expect("own block");
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn report(what: &str, ns: f64, goal: f64) -> bool {
    let met = ns < goal;
    println!(
        "{what}: {ns:.1} ns (goal < {goal} ns: {})",
        if met { "met" } else { "NOT met" }
    );
    met
}

fn main() {
    let mut all_met = true;
    println!("vector allocator, {CPUS} CPUs, vectors 0x30..=0xEF, median of {RUNS} runs");

    let mut a = empty();
    let start = a.snapshot();
    let ns = time(&mut a, 1, Policy::LeastLoaded, 1_000_000);
    all_met &= report("allocate+release 1 vector", ns, 50.0);
    let ns = time(&mut a, 32, Policy::LeastLoaded, 200_000);
    all_met &= report("allocate+release block of 32", ns, 200.0);
    let ns = time(&mut a, 1, Policy::Cpu(5), 1_000_000);
    all_met &= report("allocate+release 1 vector on CPU 5", ns, 50.0);
    assert!(a.snapshot() == start, "the benchmark left vectors used");

    let (mut a, held) = fragmented();
    let loaded = a.snapshot();
    println!(
        "fragmented: {} of {} vectors used",
        CPUS as usize * a.capacity_per_cpu() - a.total_free(),
        CPUS as usize * a.capacity_per_cpu()
    );
    let ns = time(&mut a, 1, Policy::LeastLoaded, 1_000_000);
    all_met &= report("allocate+release 1 vector (fragmented)", ns, 50.0);
    let ns = time(&mut a, 32, Policy::LeastLoaded, 200_000);
    all_met &= report("allocate+release block of 32 (fragmented)", ns, 200.0);
    let ns = time(&mut a, 8, Policy::LeastLoaded, 200_000);
    all_met &= report("allocate+release block of 8 (fragmented)", ns, 200.0);
    assert!(a.snapshot() == loaded, "the benchmark left vectors used");
    for b in held {
        a.free(b).expect("own block");
    }
    assert!(a.snapshot() == empty().snapshot());

    println!(
        "{}",
        if all_met {
            "all goals met"
        } else {
            "some goals NOT met"
        }
    );
}
