//! Mutations of one table: generic ones (byte flips, length-field lies, truncation,
//! splices, noise bodies, signature and revision) and ones aimed at each signature's
//! structure (MADT entry types and lengths, MCFG bus ranges, HPET addresses, FADTs cut at
//! each revision's size, FACS lengths), combined at random by [`mutate_table`]; and
//! [`sweep`], the deterministic list of header values and cuts every real table gets.

use firmware::tables::{HEADER_LEN, MAX_TABLE_LEN, build};

use crate::bytes::{get_u8, get_u32, put, set_len_field};
use crate::oracles::{DSDT, FADT_SIZES, FIRMWARE_CTRL, FLAGS, X_DSDT, X_FIRMWARE_CTRL, min_len};
use crate::rng::Rng;

/// Length-field values: the listed header values plus values near the real length and the buffer.
pub(crate) fn length_lie(rng: &mut Rng, real: usize, buf: usize, min: usize) -> u32 {
    let c = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    match rng.below(16) {
        0 => 0,
        1 => 1,
        2 => 35,
        3 => 36,
        4 => 37,
        5 => c(real.saturating_sub(1)),
        6 => c(rng.below(real.max(1))),
        7 => c(buf + 1),
        8 => c(buf + 1 + rng.below(1 << 16)),
        9 => u32::MAX,
        10 => 0x7fff_ffff,
        11 => MAX_TABLE_LEN,
        12 => MAX_TABLE_LEN + 1,
        13 => c(min.saturating_sub(1)),
        14 => c(min),
        _ => rng.next() as u32,
    }
}

/// Entries of a MADT as the bytes lay them out (offset, length), as far as they go.
fn madt_entries(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 44;
    while let (Some(_), Some(len)) = (get_u8(b, off), get_u8(b, off + 1)) {
        let len = usize::from(len);
        if len < 2 || off + len > b.len() {
            break;
        }
        out.push((off, len));
        off += len;
    }
    out
}

/// One generic mutation; returns its name.
fn mutate_generic(rng: &mut Rng, v: &mut Vec<u8>, sig: &[u8; 4]) -> &'static str {
    let real = get_u32(v, 4).map_or(v.len(), |l| l as usize).min(v.len());
    let min = min_len(sig);
    match rng.below(9) {
        0 | 1 => {
            // Flip bytes in the body (sometimes anywhere).
            let from = if rng.one_in(8) || v.len() <= HEADER_LEN {
                0
            } else {
                HEADER_LEN
            };
            for _ in 0..=rng.below(8) {
                if v.len() > from {
                    let i = from + rng.below(v.len() - from);
                    v[i] ^= rng.byte() | 1;
                }
            }
            "flip bytes"
        }
        2 => {
            let l = length_lie(rng, real, v.len(), min);
            set_len_field(v, l);
            "length field"
        }
        3 => {
            let at = match rng.below(4) {
                0 => rng.pick(&[0usize, 1, 4, 8, 35, 36, 37, 43, 44, 55, 56]),
                1 => min.saturating_sub(rng.below(2)),
                2 => real.saturating_sub(1 + rng.below(4)),
                _ => rng.below(v.len() + 1),
            };
            v.truncate(at);
            "truncate"
        }
        4 => {
            // A consistent lie: the header and the buffer both say the shorter length.
            let at = rng.below(real + 1);
            v.truncate(at);
            set_len_field(v, u32::try_from(at).unwrap_or(u32::MAX));
            "length and buffer cut"
        }
        5 => {
            let big = rng.one_in(8);
            let n = 1 + rng.below(if big { 4096 } else { 64 });
            let extra = rng.bytes(n);
            v.extend_from_slice(&extra);
            if rng.one_in(2) {
                let l = u32::try_from(v.len()).unwrap_or(u32::MAX);
                set_len_field(v, l);
            }
            "extend"
        }
        6 => {
            // Insert or delete a run in the body, length field following (or not).
            if v.len() > HEADER_LEN {
                let at = HEADER_LEN + rng.below(v.len() - HEADER_LEN);
                if rng.one_in(2) {
                    let n = 1 + rng.below(32);
                    let end = (at + n).min(v.len());
                    v.drain(at..end);
                } else {
                    let n = 1 + rng.below(32);
                    let run = rng.bytes(n);
                    v.splice(at..at, run);
                }
                if rng.one_in(2) {
                    let l = u32::try_from(v.len()).unwrap_or(u32::MAX);
                    set_len_field(v, l);
                }
            }
            "splice"
        }
        7 => {
            // The header kept, the body replaced by noise of another length.
            let n = rng.below(600);
            v.truncate(HEADER_LEN.min(v.len()));
            let body = rng.bytes(n);
            v.extend_from_slice(&body);
            let l = u32::try_from(v.len()).unwrap_or(u32::MAX);
            set_len_field(v, l);
            "noise body"
        }
        _ => {
            v.resize(v.len().max(HEADER_LEN), 0);
            if rng.one_in(2) {
                v[..4].copy_from_slice(&rng.bytes(4));
            } else {
                v[8] = rng.pick(&[0, 1, 2, 3, 4, 5, 6, 255]);
            }
            "signature or revision"
        }
    }
}

fn mutate_madt(rng: &mut Rng, v: &mut Vec<u8>) -> &'static str {
    let entries = madt_entries(v);
    let types = [0u8, 1, 2, 3, 4, 5, 9, 0xa, 0x7f, 255];
    let lens = [0u8, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 15, 16, 255];
    match rng.below(6) {
        0 | 1 if !entries.is_empty() => {
            let (off, len) = entries[rng.below(entries.len())];
            match rng.below(3) {
                0 => v[off] = rng.pick(&types),
                1 => v[off + 1] = rng.pick(&lens),
                _ => {
                    let x = rng.pick(&[0u8, 1, 255]);
                    v[off] = x;
                    v[off + 1] = rng.pick(&[0u8, 1, 255]);
                }
            }
            if rng.one_in(4) && len > 2 {
                // And a field inside it (the LINT byte, an address).
                let i = off + 2 + rng.below(len - 2);
                v[i] = rng.pick(&[0u8, 1, 2, 4, 0xff]);
            }
            "MADT entry type/length"
        }
        2 => {
            // Crafted entries appended (length field following, mostly).
            for _ in 0..=rng.below(6) {
                let ty = rng.pick(&types);
                let len = rng.pick(&lens);
                v.push(ty);
                v.push(len);
                let body = usize::from(len).saturating_sub(2);
                let body = if rng.one_in(6) {
                    rng.below(body + 1)
                } else {
                    body
                };
                let bytes = rng.bytes(body);
                v.extend_from_slice(&bytes);
            }
            if !rng.one_in(5) {
                let l = u32::try_from(v.len()).unwrap_or(u32::MAX);
                set_len_field(v, l);
            }
            "MADT entries appended"
        }
        3 => {
            // Thousands of entries: the lists and the errors grow with the table only.
            v.resize(44, 0);
            let unit: &[u8] = match rng.below(5) {
                0 => &[0, 8, 0, 0, 1, 0, 0, 0],
                1 => &[0x7f, 2],
                2 => &[0, 2],
                3 => &[4, 6, 0xff, 5, 0, 4],
                _ => &[5, 12, 0, 0, 0, 0, 0xe0, 0xfe, 1, 0, 0, 0],
            };
            for _ in 0..1 + rng.below(4000) {
                v.extend_from_slice(unit);
            }
            let l = u32::try_from(v.len()).unwrap_or(u32::MAX);
            set_len_field(v, l);
            "MADT flooded with entries"
        }
        4 => {
            // Local APIC address override: 0, all ones, twice.
            for _ in 0..=rng.below(2) {
                let a = rng.choose64(&[0u64, u64::MAX, 0xfee0_0000]);
                v.extend_from_slice(&[5, 12, 0, 0]);
                v.extend_from_slice(&a.to_le_bytes());
            }
            let l = u32::try_from(v.len()).unwrap_or(u32::MAX);
            set_len_field(v, l);
            "MADT address override"
        }
        _ => {
            // The fixed part: local APIC address and flags.
            put(v, 36, &rng.choose32(&[0u32, u32::MAX]).to_le_bytes());
            put(v, 40, &rng.pick(&[0u32, u32::MAX, 1]).to_le_bytes());
            "MADT fixed fields"
        }
    }
}

fn mutate_mcfg(rng: &mut Rng, v: &mut Vec<u8>) -> &'static str {
    let n = v.len().saturating_sub(44) / 16;
    match rng.below(5) {
        0 | 1 if n > 0 => {
            let at = 44 + 16 * rng.below(n);
            let (start, end) = match rng.below(5) {
                0 => (255, 0),
                1 => (1, 0),
                2 => {
                    let s = 1 + rng.below(255);
                    (s as u8, rng.below(s) as u8)
                }
                3 => (0, 255),
                _ => (rng.byte(), rng.byte()),
            };
            v[at + 10] = start;
            v[at + 11] = end;
            "MCFG start/end bus"
        }
        2 if n > 0 => {
            let at = 44 + 16 * rng.below(n);
            put(v, at, &rng.choose64(&[0u64, u64::MAX]).to_le_bytes());
            put(v, at + 8, &rng.pick(&[0u16, 0xffff]).to_le_bytes());
            "MCFG address/segment"
        }
        3 => {
            let n = 1 + rng.below(15);
            let stray = rng.bytes(n);
            v.extend_from_slice(&stray);
            if rng.one_in(2) {
                let l = u32::try_from(v.len()).unwrap_or(u32::MAX);
                set_len_field(v, l);
            }
            "MCFG stray bytes"
        }
        _ => {
            v.resize(44, 0);
            for _ in 0..1 + rng.below(4000) {
                let e = rng.bytes(16);
                v.extend_from_slice(&e);
            }
            let l = u32::try_from(v.len()).unwrap_or(u32::MAX);
            set_len_field(v, l);
            "MCFG thousands of entries"
        }
    }
}

fn mutate_hpet(rng: &mut Rng, v: &mut Vec<u8>) -> &'static str {
    v.resize(v.len().max(56), 0);
    match rng.below(3) {
        0 => {
            put(v, 44, &rng.choose64(&[0u64, u64::MAX]).to_le_bytes());
            v[40] = rng.pick(&[0u8, 1, 2, 0x7f, 255]);
            "HPET base address"
        }
        1 => {
            put(v, 36, &rng.choose32(&[0u32, u32::MAX]).to_le_bytes());
            "HPET block ID"
        }
        _ => {
            let l = rng.pick(&[54usize, 55, 56, 57, 64]);
            set_len_field(v, l as u32);
            if rng.one_in(2) {
                v.resize(l, 0);
            }
            "HPET length 55/56/57"
        }
    }
}

fn mutate_fadt(rng: &mut Rng, v: &mut Vec<u8>) -> &'static str {
    match rng.below(5) {
        0 | 1 => {
            // Cut at a revision's size, one byte either side.
            let l = (rng.pick(&FADT_SIZES) + rng.below(3)).saturating_sub(1);
            set_len_field(v, l as u32);
            match rng.below(3) {
                0 => {}
                1 => v.truncate(l),
                _ => {
                    let fill = rng.byte();
                    v.resize(l, fill);
                }
            }
            "FADT cut at a revision's size"
        }
        2 => {
            let revision = rng.pick(&[0u8, 1, 2, 3, 4, 5, 6, 255]);
            put(v, 8, &[revision]);
            "FADT revision"
        }
        3 => {
            let a = rng.choose64(&[0u64, u64::MAX, 0xffff_ffff]);
            match rng.below(4) {
                0 => put(v, DSDT, &(a as u32).to_le_bytes()),
                1 => put(v, FIRMWARE_CTRL, &(a as u32).to_le_bytes()),
                2 => put(v, X_DSDT, &a.to_le_bytes()),
                _ => put(v, X_FIRMWARE_CTRL, &a.to_le_bytes()),
            }
            "FADT DSDT/FACS pointers"
        }
        _ => {
            put(v, FLAGS, &rng.choose32(&[u32::MAX, 0]).to_le_bytes());
            let gas = 116 + 12 * rng.below(12);
            let g = rng.bytes(12);
            put(v, gas, &g);
            let i = 88 + rng.below(4);
            let x = rng.pick(&[0u8, 255]);
            put(v, i, &[x]);
            "FADT flags and registers"
        }
    }
}

pub(crate) fn mutate_facs(rng: &mut Rng, v: &mut Vec<u8>) -> &'static str {
    v.resize(v.len().max(8), 0);
    if rng.one_in(3) {
        v[rng.below(4)] ^= 0x20;
    } else {
        set_len_field(v, rng.pick(&[0u32, 8, 63, 64, u32::MAX, MAX_TABLE_LEN + 1]));
    }
    "FACS signature/length"
}

/// A mutation of a table: one to four rounds of generic and signature-specific changes,
/// the checksum fixed half the time. Returns the first round's name.
pub(crate) fn mutate_table(rng: &mut Rng, seed: &[u8], out: &mut Vec<u8>) -> &'static str {
    out.clear();
    out.extend_from_slice(seed);
    let sig: [u8; 4] = seed
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; 4]);
    let rounds = if rng.one_in(5) { 2 + rng.below(3) } else { 1 };
    let mut first = "";
    for _ in 0..rounds {
        let specific = rng.one_in(2);
        let name = match &sig {
            b"APIC" if specific => mutate_madt(rng, out),
            b"MCFG" if specific => mutate_mcfg(rng, out),
            b"HPET" if specific => mutate_hpet(rng, out),
            b"FACP" if specific => mutate_fadt(rng, out),
            b"FACS" => mutate_facs(rng, out),
            _ => mutate_generic(rng, out, &sig),
        };
        if first.is_empty() {
            first = name;
        }
    }
    if rng.one_in(2) {
        build::fix_checksum(out, 9);
    }
    if rounds > 1 { "several at once" } else { first }
}

/// The deterministic sweep for one table: each length-field value and each cut of the
/// listed header values (and for the FADT every revision size), with the checksum fixed.
pub(crate) fn sweep(seed: &[u8], sig: &[u8; 4]) -> Vec<Vec<u8>> {
    let real = get_u32(seed, 4)
        .map_or(seed.len(), |l| l as usize)
        .min(seed.len());
    let min = min_len(sig);
    let mut lengths: Vec<usize> = vec![
        0,
        1,
        35,
        36,
        37,
        min.saturating_sub(1),
        min,
        real / 2,
        real.saturating_sub(1),
        real,
        real + 1,
        seed.len() + 1,
        MAX_TABLE_LEN as usize,
        MAX_TABLE_LEN as usize + 1,
        0x7fff_ffff,
        0xffff_ffff,
    ];
    if sig == b"FACP" {
        for s in FADT_SIZES {
            lengths.extend([s.saturating_sub(1), s, s + 1]);
        }
    }
    let mut out = Vec::new();
    for l in lengths {
        let field = u32::try_from(l).unwrap_or(u32::MAX);
        // The header lies; the buffer is unchanged.
        let mut v = seed.to_vec();
        set_len_field(&mut v, field);
        build::fix_checksum(&mut v, 9);
        out.push(v);
        // Both say `l` (buffer cut, or padded with zeros up to 64 KiB beyond).
        if l <= seed.len() + 65536 {
            let mut v = seed.to_vec();
            v.resize(l, 0);
            set_len_field(&mut v, field);
            build::fix_checksum(&mut v, 9);
            out.push(v);
        }
        // The buffer cut, the header kept.
        if l < seed.len() {
            out.push(seed[..l].to_vec());
        }
    }
    if sig == b"APIC" {
        for (off, _) in madt_entries(seed).into_iter().take(64) {
            for (ty, len) in [
                (None, 0u8),
                (None, 1),
                (None, 255),
                (Some(0u8), 1),
                (Some(255), 0),
            ] {
                let mut v = seed.to_vec();
                if let Some(ty) = ty {
                    v[off] = ty;
                }
                v[off + 1] = len;
                build::fix_checksum(&mut v, 9);
                out.push(v);
            }
        }
    }
    if sig == b"MCFG" {
        for e in 0..seed.len().saturating_sub(44) / 16 {
            let mut v = seed.to_vec();
            v[44 + 16 * e + 10] = 0xff;
            v[44 + 16 * e + 11] = 0;
            out.push(v);
        }
    }
    if sig == b"HPET" {
        for a in [0u64, u64::MAX] {
            let mut v = seed.to_vec();
            put(&mut v, 44, &a.to_le_bytes());
            build::fix_checksum(&mut v, 9);
            out.push(v);
        }
    }
    out
}
