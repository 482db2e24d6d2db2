//! Random configuration spaces: enumeration always terminates, never panics, never
//! accesses outside a function's space, and its output renders.

mod common;

use std::collections::BTreeSet;

use common::*;
use pci::fake::{FakeConfigSpace, FakeFunction};
use pci::{ConfigSpace, Counting, Root, Topology, lspci};
use proptest::prelude::*;

struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 4 KiB of random bytes, shaped by `shape` so the interesting paths are reached often:
/// 0 raw, 1 endpoint with a capability list, 2 bridge to a small bus number, 3 vanishing,
/// 4 PCI Express with a random extended list, 5 random writable BARs.
fn random_function(seed: u64, shape: u8, bus: u8) -> FakeFunction {
    let mut rng = XorShift::new(seed);
    let mut bytes = vec![0u8; 4096];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    // Mostly present: a random vendor is rarely 0xFFFF anyway.
    if bytes[0] == 0xff && bytes[1] == 0xff {
        bytes[0] = 0x86;
    }
    let mut f;
    match shape % 6 {
        1 => {
            bytes[0x0e] &= 0x80;
            bytes[0x06] |= 0x10;
            bytes[0x34] = 0x40 + (rng.below(0xc0) as u8);
            f = FakeFunction::raw(&bytes);
        }
        2 => {
            bytes[0x0e] = (bytes[0x0e] & 0x80) | 1;
            bytes[0x18] = if rng.below(4) == 0 {
                rng.below(8) as u8
            } else {
                bus
            };
            bytes[0x19] = rng.below(8) as u8;
            bytes[0x1a] = rng.below(10) as u8;
            f = FakeFunction::raw(&bytes);
        }
        3 => {
            f = FakeFunction::raw(&bytes).vanish_after_reads(rng.below(64) as usize);
        }
        4 => {
            bytes[0x0e] &= 0x81;
            bytes[0x06] |= 0x10;
            bytes[0x34] = 0x40;
            bytes[0x40] = 0x10;
            f = FakeFunction::raw(&bytes);
        }
        5 => {
            bytes[0x0e] &= 0x81;
            f = FakeFunction::raw(&bytes);
            for slot in 0..6 {
                let size_log2 = rng.below(33);
                let mask = if size_log2 == 32 {
                    0
                } else {
                    !0u32 << size_log2
                };
                f = f.with_writable(0x10 + 4 * slot, mask | rng.below(16) as u32);
            }
        }
        _ => f = FakeFunction::raw(&bytes),
    }
    // Command's decode bits take writes (as the spec requires), so the fake's "BAR sized
    // with decode on" check means what it says.
    if shape % 6 != 5 {
        f = f.with_writable(0x04, 0x3);
    } else {
        f = f.with_writable(0x04, rng.next() as u32 | 0x3);
    }
    f
}

/// Enumerates and checks the invariants; returns the topology.
fn check(fake: FakeConfigSpace, roots: &[Root]) -> Topology {
    // Functions the fake holds (an upper bound on what can be walked).
    let present = fake.function_count();
    let counting = Counting::new(fake);
    // SAFETY: the fake answers any aligned offset below 4096 of any address.
    let cs = unsafe { ConfigSpace::new(&counting, roots) };
    let t = pci::enumerate(&cs);
    let (reads, writes) = (counting.reads(), counting.writes());
    let fake = counting.into_inner();

    for v in fake.violations() {
        // The only tolerated complaint: host bridges are sized with decode on, on purpose.
        assert!(v.contains("decode on"), "{v}");
        let addr = &v[..12];
        let f = t
            .functions
            .iter()
            .find(|f| f.address.to_string() == addr)
            .unwrap();
        assert_eq!((f.class, f.subclass), (0x06, 0x00), "{v}");
    }
    let addresses: BTreeSet<_> = t.functions.iter().map(|f| f.address).collect();
    assert_eq!(addresses.len(), t.functions.len(), "each function once");
    let buses: BTreeSet<_> = t.buses.iter().map(|b| (b.segment, b.number)).collect();
    assert_eq!(buses.len(), t.buses.len(), "each bus once");
    for f in &t.functions {
        assert!(f.capabilities.len() <= 48);
        assert!(f.extended_capabilities.len() <= 960);
        for (slot, bar) in f.bars() {
            assert!(slot < 6 && bar.size.is_power_of_two(), "{bar:?}");
        }
    }
    // Bounded work: 8 ID reads per device slot of each bus, and per function at most the
    // header, BARs, 48 capabilities and 960 extended capabilities, each possibly followed
    // by one presence check.
    let bound = t.buses.len() * 32 * 8 + present * 2 * (8 + 6 * 3 + 1 + 48 + 4 + 960 + 2);
    assert!(reads + writes <= bound, "{reads} + {writes} > {bound}");
    let mut s = String::new();
    lspci::write_listing(&mut s, &t).unwrap();
    lspci::write_tree(&mut s, &t).unwrap();
    lspci::write_machine(&mut s, &t).unwrap();
    assert_eq!(s.matches("PCIDEV ").count(), t.functions.len());
    assert_eq!(s.matches("PCIERR ").count(), t.errors.len());
    t
}

proptest! {
    // Miri interprets every case, and every configuration read takes milliseconds there: a
    // few small cases under Miri, many natively.
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 3 } else { 200 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_config_spaces_terminate(
        functions in prop::collection::vec(
            (0u8..6, 0u8..32, 0u8..8, any::<u64>(), 0u8..6),
            1..if cfg!(miri) { 4 } else { 40 },
        ),
        extended in any::<bool>(),
        second_root in any::<bool>(),
    ) {
        let fake = FakeConfigSpace::new();
        for &(bus, dev, func, seed, shape) in &functions {
            fake.add(a(bus, dev, func), random_function(seed, shape, bus));
        }
        let mut roots = vec![Root { segment: 0, bus: 0, extended }];
        if second_root {
            roots.push(Root { segment: 0, bus: 3, extended: !extended });
        }
        check(fake, &roots);
    }
}

#[test]
#[cfg_attr(miri, ignore = "ten thousand random functions: hours under Miri")]
fn fully_populated_random_buses() {
    let mut rng = XorShift::new(0x5eed_1234_abcd_9876);
    for _ in 0..40 {
        let fake = FakeConfigSpace::new();
        for dev in 0..32 {
            for func in 0..8 {
                let bus = rng.below(3) as u8;
                let shape = rng.below(6) as u8;
                fake.add(a(bus, dev, func), random_function(rng.next(), shape, bus));
            }
        }
        check(fake, &[ECAM_ROOT]);
    }
}

#[test]
#[cfg_attr(miri, ignore = "8192 device slots probed: many minutes under Miri")]
fn a_chain_of_255_bridges_is_followed_without_recursion() {
    let fake = FakeConfigSpace::new();
    for bus in 0..255u8 {
        fake.add(
            a(bus, 0, 0),
            FakeFunction::bridge(0x1b36, 0x0001, bus, bus + 1, 255),
        );
    }
    fake.add(
        a(255, 0, 0),
        FakeFunction::endpoint(0x8086, 0x100e, 0x02, 0, 0, 3),
    );
    let t = check(fake, &[ECAM_ROOT]);
    assert_eq!(t.buses.len(), 256);
    assert_eq!(t.functions.len(), 256);
    assert!(t.errors.is_empty());
    let mut tree = String::new();
    lspci::write_tree(&mut tree, &t).unwrap();
    assert_eq!(tree.lines().count(), 257);
    assert!(
        tree.lines()
            .last()
            .unwrap()
            .ends_with("\\-00.0  Intel Corporation 82540EM Gigabit Ethernet Controller")
    );
}
