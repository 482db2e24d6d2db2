//! RSDPs: built with both checksums right ([`rsdp_bytes`]), mutated (bad checksums,
//! revisions 0 to 255, odd or zero RSDT and XSDT addresses, length fields, truncation), and
//! run through `Rsdp::parse` against its oracle by [`run_rsdp_cases`].

use std::time::Instant;

use firmware::tables::build;

use crate::bytes::{get_u32, hex_array, kib, put};
use crate::inputs::Seed;
use crate::measure::{install_panic_hook, watch};
use crate::memory::{RSDT_AT, XSDT_AT};
use crate::oracles::check_rsdp;
use crate::parsers::{Stats, fail_slice, run_one};
use crate::rng::{Rng, cases, only};
use crate::{HEADER_CASES, say};

/// An RSDP: revision 0 (20 bytes) or 2+ (36), checksums right.
pub(crate) fn rsdp_bytes(revision: u8, oem: &[u8; 6], rsdt: u32, xsdt: u64) -> Vec<u8> {
    let mut r = b"RSD PTR ".to_vec();
    r.push(0);
    r.extend_from_slice(oem);
    r.push(revision);
    r.extend_from_slice(&rsdt.to_le_bytes());
    if revision >= 2 {
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&xsdt.to_le_bytes());
        r.extend_from_slice(&[0, 0, 0, 0]);
    }
    fix_rsdp(&mut r);
    r
}

/// Fixes both RSDP checksums (the extended one over 36 bytes or the length field).
fn fix_rsdp(r: &mut [u8]) {
    if r.len() >= 20 {
        build::fix_checksum(&mut r[..20], 8);
    }
    if r.len() > 32 {
        let l = get_u32(r, 20)
            .map_or(36, |l| l as usize)
            .max(36)
            .min(r.len());
        build::fix_checksum(&mut r[..l], 32);
    }
}

/// One RSDP mutation; returns its name.
pub(crate) fn mutate_rsdp(rng: &mut Rng, r: &mut Vec<u8>, targets: &[u64]) -> &'static str {
    let name = match rng.below(8) {
        0 => {
            if rng.one_in(2) {
                let x = rng.byte() | 1;
                if let Some(b) = r.get_mut(8) {
                    *b ^= x;
                }
            } else {
                let x = rng.byte() | 1;
                if let Some(b) = r.get_mut(32) {
                    *b ^= x;
                }
            }
            return "RSDP bad checksum";
        }
        1 => {
            put(r, 15, &[rng.pick(&[0u8, 1, 2, 3, 255])]);
            match rng.below(3) {
                0 => r.truncate(20),
                1 => r.resize(36.max(r.len()), 0),
                _ => {}
            }
            "RSDP revision"
        }
        2 => {
            r.resize(r.len().max(36), 0);
            put(r, 15, &[2]);
            put(r, 24, &rng.pick(targets).to_le_bytes());
            "RSDP XSDT address"
        }
        3 => {
            put(r, 16, &(rng.pick(targets) as u32).to_le_bytes());
            "RSDP RSDT address"
        }
        4 => {
            r.resize(r.len().max(36), 0);
            put(r, 16, &0u32.to_le_bytes());
            put(r, 24, &0u64.to_le_bytes());
            "RSDP both addresses zero"
        }
        5 => {
            r.resize(r.len().max(24), 0);
            put(
                r,
                20,
                &rng.pick(&[0u32, 1, 20, 35, 36, 37, 64, 4096, u32::MAX])
                    .to_le_bytes(),
            );
            if rng.one_in(2) {
                let n = rng.below(64);
                let extra = rng.bytes(n);
                r.extend_from_slice(&extra);
            }
            "RSDP length field"
        }
        6 => {
            r.truncate(rng.below(37));
            "RSDP truncated"
        }
        _ => {
            for _ in 0..=rng.below(4) {
                if !r.is_empty() {
                    let i = rng.below(r.len());
                    r[i] ^= rng.byte() | 1;
                }
            }
            "RSDP bytes flipped"
        }
    };
    if !rng.one_in(4) {
        fix_rsdp(r);
    }
    name
}

pub(crate) fn run_rsdp_cases(seeds: &[Seed], machines: usize) {
    install_panic_hook();
    let test = "RSDP";
    let slot = watch(test);
    let started = Instant::now();
    let mut stats = Stats::default();
    let targets = [0u64, RSDT_AT, XSDT_AT, u64::MAX, 0xffff_ffff];
    let only = only();
    let range = match only {
        Some(i) => i..i + 1,
        None => 0..cases(HEADER_CASES / 2),
    };
    for i in range {
        let mut rng = Rng::for_case(test, i);
        let s = &seeds[(i as usize) % seeds.len()];
        let mut r = s.bytes.clone();
        let mut name = mutate_rsdp(&mut rng, &mut r, &targets);
        if rng.one_in(4) {
            mutate_rsdp(&mut rng, &mut r, &targets);
            name = "several at once";
        }
        if only.is_some() {
            say!("{test}: case {i}: {name}: input {}", hex_array(&r));
        }
        *stats.strategies.entry(name).or_default() += 1;
        slot.begin(i);
        let (out, elapsed, peak, largest) = run_one(check_rsdp, &r);
        slot.end();
        match out {
            Ok(v) => stats.add(v, elapsed, peak, largest, r.len()),
            Err(f) => fail_slice(
                test,
                check_rsdp,
                &format!("random case {i} ({name}, from {})", s.origin),
                &r,
                &f,
            ),
        }
    }
    say!(
        "{test}: {} cases on {} RSDPs from {machines} machines, in {:.2} s: {} parsed, \
         refused: {}; no panic, slowest case {:.3} ms, peak allocation {}",
        stats.cases,
        seeds.len(),
        started.elapsed().as_secs_f64(),
        stats.parsed,
        stats.refusals(),
        stats.slowest.as_secs_f64() * 1e3,
        kib(stats.peak),
    );
}
