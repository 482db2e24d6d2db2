//! [`Ivrs::parse`] never panics, whatever the bytes: mutations of a valid table, arbitrary
//! bodies and arbitrary device entries.

use super::*;
use crate::tables::testutil::Rng;

#[test]
fn never_panics_on_mutations() {
    let seed = valid();
    let mut rng = Rng(0x5eed_a3d1_0bad_cafe);
    for n in 0..20_000 {
        let input = if n % 4 == 0 {
            rng.noise(b"IVRS")
        } else {
            rng.mutate(&seed)
        };
        let _ = Ivrs::parse(&input);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// Arbitrary bytes after an IVRS header whose length field is right: the walk meets
    /// every kind of block and entry length, and stays within its caps.
    #[test]
    fn never_panics_on_arbitrary_bodies(
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
    ) {
        if let Ok(i) = Ivrs::parse(&table(b"IVRS", 2, &body)) {
            proptest::prop_assert!(i.units.len() <= MAX_UNITS);
            proptest::prop_assert!(i.memory.len() <= MAX_MEMORY);
            proptest::prop_assert!(i.errors.len() <= MAX_ERRORS);
            for u in &i.units {
                proptest::prop_assert!(u.base != 0);
                for d in &u.devices {
                    proptest::prop_assert!(d.first <= d.last);
                }
            }
            for m in &i.memory {
                proptest::prop_assert!(m.first <= m.last);
            }
        }
    }

    /// Arbitrary IVHD device entries: a block of any bytes after a valid fixed part.
    #[test]
    fn never_panics_on_arbitrary_entries(
        kind in proptest::sample::select(vec![TYPE_IVHD_10, TYPE_IVHD_11, TYPE_IVHD_40]),
        entries in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
    ) {
        let mut block = ivhd_bytes(kind, 0, 2, 0xfd20_0000, &[]);
        let len = block.len() + entries.len();
        block[2..4].copy_from_slice(&(len as u16).to_le_bytes());
        block.extend_from_slice(&entries);
        let i = Ivrs::parse(&ivrs(0, &[block]));
        proptest::prop_assert!(i.is_ok());
    }

    /// The valid table with bytes overwritten, then cut or extended.
    #[test]
    fn never_panics_on_mutated_tables(
        edits in proptest::collection::vec(
            (0usize..512, proptest::prelude::any::<u8>()), 1..12),
        cut in proptest::option::of(0usize..512),
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        fix in proptest::prelude::any::<bool>(),
    ) {
        let mut t = valid();
        t.extend_from_slice(&tail);
        let len = t.len();
        for (at, byte) in edits {
            t[at % len] = byte;
        }
        if let Some(c) = cut {
            t.truncate(c);
        }
        if fix {
            crate::tables::testutil::fix_checksum(&mut t, 9);
        }
        let _ = Ivrs::parse(&t);
    }
}
