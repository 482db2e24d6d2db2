//! Mutations of a machine laid out in memory, for discovery: any table's bytes mutated as
//! one table; root-table entries pointed at odd addresses (zero, the junk, the last bytes
//! of the address space, the roots themselves), duplicated thousands of times or made 100
//! to 1100 distinct tables; root headers that lie; the RSDP mutated; the FADT's DSDT and
//! FACS pointers changed; the FACS's signature and length.

use std::borrow::Cow;

use firmware::tables::{HEADER_LEN, build};

use crate::bytes::{get_u32, get_u64, put, set_len_field};
use crate::memory::{JUNK_AT, JUNK_LEN, MANY_AT, Placed, RSDT_AT, TOP_AT, XSDT_AT, root_table};
use crate::oracles::{DSDT, FIRMWARE_CTRL, X_DSDT, X_FIRMWARE_CTRL};
use crate::rng::Rng;
use crate::rsdp::mutate_rsdp;
use crate::table_mutations::{length_lie, mutate_facs, mutate_table};

/// An address worth pointing an entry at.
fn interesting_address(rng: &mut Rng, l: &Placed) -> u64 {
    let region = l.regions[rng.below(l.regions.len())].0;
    match rng.below(12) {
        0 => 0,
        1 | 2 => rng.pick(&l.targets),
        3 => region,
        4 => region + 1 + rng.below(64) as u64,
        5 => rng.pick(&[
            u64::MAX,
            u64::MAX - 35,
            u64::MAX - 3,
            TOP_AT,
            TOP_AT + 2048,
            u64::MAX - 35,
            u64::MAX - 19,
        ]),
        6 => JUNK_AT + 64 * rng.below(JUNK_LEN / 64) as u64,
        7 => JUNK_AT + rng.below(JUNK_LEN) as u64,
        8 => 0xffff_ffff,
        9 => rng.below(4096) as u64,
        10 => u64::from(rng.next() as u32),
        _ => rng.next(),
    }
}

/// Which root region (XSDT or RSDT) a case changes, and its entry size.
fn pick_root(rng: &mut Rng, l: &Placed) -> Option<(usize, &'static [u8; 4])> {
    match (l.xsdt, l.rsdt, rng.one_in(2)) {
        (Some(x), _, true) | (Some(x), None, false) => Some((x, b"XSDT")),
        (_, Some(r), _) => Some((r, b"RSDT")),
        _ => None,
    }
}

fn root_entries(bytes: &[u8], sig: &[u8; 4]) -> Vec<u64> {
    let size = if sig == b"XSDT" { 8 } else { 4 };
    let len = get_u32(bytes, 4).map_or(0, |l| l as usize).min(bytes.len());
    bytes
        .get(HEADER_LEN..len)
        .unwrap_or_default()
        .chunks_exact(size)
        .map(|c| {
            if size == 8 {
                get_u64(c, 0).unwrap_or(0)
            } else {
                get_u32(c, 0).map_or(0, u64::from)
            }
        })
        .collect()
}

/// One discovery mutation, applied to `regions` and `rsdp`; returns its name.
pub(crate) fn mutate_machine(
    rng: &mut Rng,
    l: &Placed,
    regions: &mut [Cow<'_, [u8]>],
    rsdp: &mut Vec<u8>,
) -> &'static str {
    match rng.below(20) {
        0..=6 => {
            // A table's bytes (any table, the root tables and FACS included).
            let table_regions: Vec<usize> = (4..regions.len()).collect();
            let i = rng.pick(&table_regions);
            let mut out = Vec::new();
            let name = mutate_table(rng, &regions[i], &mut out);
            regions[i] = Cow::Owned(out);
            name
        }
        7..=9 => {
            let Some((i, sig)) = pick_root(rng, l) else {
                return "none";
            };
            let mut entries = root_entries(&regions[i], sig);
            for _ in 0..=rng.below(3) {
                let a = interesting_address(rng, l);
                if entries.is_empty() || rng.one_in(3) {
                    let at = rng.below(entries.len() + 1);
                    entries.insert(at, a);
                } else {
                    let at = rng.below(entries.len());
                    entries[at] = a;
                }
            }
            regions[i] = Cow::Owned(root_table(sig, &entries));
            "root entries to odd addresses"
        }
        10 => {
            let Some((i, sig)) = pick_root(rng, l) else {
                return "none";
            };
            let entries = root_entries(&regions[i], sig);
            let n = rng.pick(&[1000usize, 1024, 1025, 2000, 5000]);
            let mut all = Vec::with_capacity(n);
            let a = interesting_address(rng, l);
            let b = rng.pick(&l.targets);
            for k in 0..n {
                all.push(match rng.below(3) {
                    _ if entries.is_empty() => a,
                    0 => a,
                    1 => {
                        if k % 2 == 0 {
                            a
                        } else {
                            b
                        }
                    }
                    _ => entries[k % entries.len()],
                });
            }
            regions[i] = Cow::Owned(root_table(sig, &all));
            "root entries duplicated thousands of times"
        }
        11 => {
            if !rng.one_in(4) {
                return "none";
            }
            // Distinct entries: into the junk (each header claiming its own length) or to
            // as many valid tables as may be listed, and more.
            let Some((i, sig)) = pick_root(rng, l) else {
                return "none";
            };
            let n = rng.pick(&[100usize, 1023, 1024, 1025, 1100]);
            let all: Vec<u64> = if rng.one_in(2) {
                (0..n as u64).map(|k| JUNK_AT + 64 * (k % 1024)).collect()
            } else {
                (0..n as u64).map(|k| MANY_AT + 40 * k).collect()
            };
            regions[i] = Cow::Owned(root_table(sig, &all));
            "root entries: 100 to 1100 distinct tables"
        }
        12 => {
            // The roots list themselves and each other.
            for (i, sig) in [(l.xsdt, b"XSDT"), (l.rsdt, b"RSDT")] {
                let Some(i) = i else { continue };
                let mut entries = root_entries(&regions[i], sig);
                for a in [XSDT_AT, RSDT_AT, l.regions[i].0, l.regions[i].0 + 36] {
                    let at = rng.below(entries.len() + 1);
                    entries.insert(at, a);
                }
                regions[i] = Cow::Owned(root_table(sig, &entries));
            }
            "roots list themselves"
        }
        13 => {
            let Some((i, _)) = pick_root(rng, l) else {
                return "none";
            };
            let mut v = regions[i].to_vec();
            let real = v.len();
            match rng.below(3) {
                0 => set_len_field(&mut v, length_lie(rng, real, real, 36)),
                1 => {
                    // A partial entry at the end.
                    let l2 = (real + 1 + rng.below(7)) as u32;
                    set_len_field(&mut v, l2);
                    v.resize(l2 as usize, 0xaa);
                }
                _ => v.truncate(rng.below(real + 1)),
            }
            if rng.one_in(2) {
                build::fix_checksum(&mut v, 9);
            }
            regions[i] = Cow::Owned(v);
            "root header lies"
        }
        14..=16 => {
            let mut targets = l.targets.clone();
            targets.extend([0, u64::MAX, TOP_AT, u64::MAX - 35, JUNK_AT, 0xffff_ffff]);
            mutate_rsdp(rng, rsdp, &targets)
        }
        17 | 18 => {
            let Some(i) = l.fadt else { return "none" };
            let mut v = regions[i].to_vec();
            for _ in 0..=rng.below(2) {
                let a = match rng.below(3) {
                    0 => interesting_address(rng, l),
                    1 => l.regions[i].0,
                    _ => rng.pick(&[XSDT_AT, RSDT_AT, 0, u64::MAX, u64::MAX - 35]),
                };
                match rng.below(4) {
                    0 => put(&mut v, DSDT, &(a as u32).to_le_bytes()),
                    1 => put(&mut v, FIRMWARE_CTRL, &(a as u32).to_le_bytes()),
                    2 => put(&mut v, X_DSDT, &a.to_le_bytes()),
                    _ => put(&mut v, X_FIRMWARE_CTRL, &a.to_le_bytes()),
                }
            }
            let len = get_u32(&v, 4).map_or(0, |x| x as usize).min(v.len());
            if rng.one_in(4) {
                build::fix_checksum(&mut v[..len], 9);
            }
            regions[i] = Cow::Owned(v);
            "FADT DSDT/FACS pointers"
        }
        _ => {
            let Some(i) = l.facs else { return "none" };
            let mut v = regions[i].to_vec();
            let name = mutate_facs(rng, &mut v);
            regions[i] = Cow::Owned(v);
            name
        }
    }
}
