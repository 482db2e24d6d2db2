//! A simulated physical memory and the machines laid out in it. [`Mem`] answers
//! `PhysRead` from byte ranges at addresses (anything else is unreadable) and counts what
//! is read; [`layouts`] places each machine's tables, at a dump's real addresses when it
//! carries its RSDP and otherwise at made-up ones with an RSDT, XSDT and DSDT around them,
//! next to regions every layout has (low memory, junk full of headers, the top of the
//! address space, many small valid tables).

use std::borrow::Cow;
use std::cell::Cell;

use firmware::hw::PhysRead;
use firmware::tables::{MAX_TABLE_LEN, build};

use crate::bytes::{get_u32, put};
use crate::inputs::{Machine, inputs, table};
use crate::oracles::{DSDT, FIRMWARE_CTRL, X_DSDT, X_FIRMWARE_CTRL};
use crate::rng::Rng;
use crate::rsdp::rsdp_bytes;

/// Low memory: readable from address 0.
const LOW_AT: u64 = 0;
pub(crate) const RSDT_AT: u64 = 0x0010_0000;
pub(crate) const XSDT_AT: u64 = 0x0018_0000;
/// Tables from here, 1 MiB apart.
const TABLES_AT: u64 = 0x0020_0000;
/// 64 KiB of noise with a header every 64 bytes.
pub(crate) const JUNK_AT: u64 = 0x2000_0000;
pub(crate) const JUNK_LEN: usize = 1 << 16;
/// `MANY_N` small valid tables, 40 bytes apart.
pub(crate) const MANY_AT: u64 = 0x3000_0000;
const MANY_N: usize = 1100;
/// The last 4 KiB of the 64-bit address space.
pub(crate) const TOP_AT: u64 = 0u64.wrapping_sub(4096);

/// Physical memory: byte ranges at addresses, anything else unreadable. Counts what is
/// read.
pub(crate) struct Mem<'a> {
    pub(crate) regions: Vec<(u64, Cow<'a, [u8]>)>,
    pub(crate) bytes_read: Cell<u64>,
}

impl PhysRead for Mem<'_> {
    /// Each address reads the byte of the first region holding it (a mutated table may
    /// grow into the next one, as in real memory); a read succeeds when every byte of it
    /// is held somewhere.
    fn read_phys(&self, phys: u64, buf: &mut [u8]) -> bool {
        let mut pos = u128::from(phys);
        let end = pos + buf.len() as u128;
        while pos < end {
            let span = |(at, bytes): &(u64, Cow<'_, [u8]>)| {
                (u128::from(*at), u128::from(*at) + bytes.len() as u128)
            };
            let Some(r) = self.regions.iter().position(|r| {
                let (a, b) = span(r);
                a <= pos && pos < b
            }) else {
                return false;
            };
            let (start, r_end) = span(&self.regions[r]);
            // Up to the end of the region, the read, or an earlier region's start.
            let stop = self.regions[..r]
                .iter()
                .map(|x| span(x).0)
                .filter(|a| *a > pos)
                .fold(r_end.min(end), u128::min);
            let from = (pos - start) as usize;
            let to = (stop - start) as usize;
            let at = (pos - u128::from(phys)) as usize;
            buf[at..at + (to - from)].copy_from_slice(&self.regions[r].1[from..to]);
            pos = stop;
        }
        self.bytes_read
            .set(self.bytes_read.get().saturating_add(buf.len() as u64));
        true
    }
}

/// One machine laid out in memory.
pub(crate) struct Placed {
    pub(crate) name: String,
    pub(crate) rsdp: Vec<u8>,
    pub(crate) regions: Vec<(u64, Vec<u8>)>,
    /// Region indexes.
    pub(crate) rsdt: Option<usize>,
    pub(crate) xsdt: Option<usize>,
    pub(crate) fadt: Option<usize>,
    pub(crate) facs: Option<usize>,
    /// Addresses worth pointing at.
    pub(crate) targets: Vec<u64>,
}

/// Regions every layout has: low memory, junk, the top of memory, many small tables.
fn common_regions(rng: &mut Rng) -> Vec<(u64, Vec<u8>)> {
    let low = rng.bytes(4096);
    let mut junk = rng.bytes(JUNK_LEN);
    let sigs: [&[u8; 4]; 8] = [
        b"APIC", b"MCFG", b"HPET", b"FACP", b"SSDT", b"XSDT", b"RSDT", b"FACS",
    ];
    for at in (0..JUNK_LEN).step_by(64) {
        let sig = rng.pick(&sigs);
        put(&mut junk, at, sig);
        let len = match rng.below(6) {
            0 => 36,
            1 => 36 + rng.below(256) as u32,
            2 => rng.below(JUNK_LEN) as u32,
            3 => MAX_TABLE_LEN,
            4 => u32::MAX,
            _ => rng.next() as u32,
        };
        put(&mut junk, at + 4, &len.to_le_bytes());
    }
    let mut top = rng.bytes(4096);
    // A table ending exactly at 2^64, one running past it, one of 36 bytes at the very end.
    put(&mut top, 0, b"SSDT");
    put(&mut top, 4, &4096u32.to_le_bytes());
    put(&mut top, 2048, b"SSDT");
    put(&mut top, 2052, &0x10000u32.to_le_bytes());
    put(&mut top, 4096 - 36, b"OEMX");
    put(&mut top, 4096 - 32, &36u32.to_le_bytes());
    let mut many = Vec::with_capacity(40 * MANY_N);
    for k in 0..MANY_N {
        many.extend_from_slice(&table(b"SSDT", 2, &(k as u32).to_le_bytes()));
    }
    vec![
        (LOW_AT, low),
        (JUNK_AT, junk),
        (TOP_AT, top),
        (MANY_AT, many),
    ]
}

pub(crate) fn root_table(sig: &[u8; 4], entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = if sig == b"XSDT" {
        entries.iter().flat_map(|e| e.to_le_bytes()).collect()
    } else {
        entries
            .iter()
            .flat_map(|e| (*e as u32).to_le_bytes())
            .collect()
    };
    table(sig, 1, &body)
}

/// A machine's static tables at made-up addresses, with an RSDT, XSDT, DSDT and RSDP
/// around them (the dumps carry no addresses, except the Toshiba's: see [`real_layout`]).
fn synthetic_layout(m: &Machine, rng: &mut Rng) -> Placed {
    let mut regions = common_regions(rng);
    let mut at = TABLES_AT;
    let mut place = |regions: &mut Vec<(u64, Vec<u8>)>, bytes: Vec<u8>| {
        let here = at;
        at += (bytes.len() as u64).div_ceil(0x10_0000) * 0x10_0000;
        regions.push((here, bytes));
        (regions.len() - 1, here)
    };
    let dsdt = table(b"DSDT", 2, &[0x10, 0x05, 0x5c, 0x5f, 0x53, 0x42, 0x5f]);
    let (_, dsdt_at) = place(&mut regions, dsdt);
    let facs_bytes = m.find(b"FACS").map(|t| t.bytes.clone()).unwrap_or_else(|| {
        let mut f = b"FACS".to_vec();
        f.extend_from_slice(&64u32.to_le_bytes());
        f.resize(64, 0);
        f
    });
    let (facs, facs_at) = place(&mut regions, facs_bytes);
    let mut listed = Vec::new();
    let mut fadt = None;
    for sig in [b"FACP", b"APIC", b"MCFG", b"HPET"] {
        let Some(t) = m.find(sig) else { continue };
        let mut bytes = t.bytes.clone();
        if sig == b"FACP" {
            let len = get_u32(&bytes, 4)
                .map_or(0, |l| l as usize)
                .min(bytes.len());
            put(&mut bytes, FIRMWARE_CTRL, &(facs_at as u32).to_le_bytes());
            put(&mut bytes, DSDT, &(dsdt_at as u32).to_le_bytes());
            if len >= X_FIRMWARE_CTRL + 8 {
                put(&mut bytes, X_FIRMWARE_CTRL, &0u64.to_le_bytes());
            }
            if len >= X_DSDT + 8 {
                put(&mut bytes, X_DSDT, &dsdt_at.to_le_bytes());
            }
            build::fix_checksum(&mut bytes[..len], 9);
        }
        let (i, here) = place(&mut regions, bytes);
        if sig == b"FACP" {
            fadt = Some(i);
        }
        listed.push(here);
    }
    regions.push((RSDT_AT, root_table(b"RSDT", &listed)));
    let rsdt = Some(regions.len() - 1);
    regions.push((XSDT_AT, root_table(b"XSDT", &listed)));
    let xsdt = Some(regions.len() - 1);
    let oem: [u8; 6] = m
        .tables
        .iter()
        .find(|t| t.bytes.len() >= 16)
        .and_then(|t| t.bytes[10..16].try_into().ok())
        .unwrap_or(*b"RUSTOS");
    let mut targets: Vec<u64> = listed.clone();
    targets.extend([dsdt_at, facs_at, RSDT_AT, XSDT_AT]);
    Placed {
        name: m.name.clone(),
        rsdp: rsdp_bytes(2, &oem, RSDT_AT as u32, XSDT_AT),
        regions,
        rsdt,
        xsdt,
        fadt,
        facs: Some(facs),
        targets,
    }
}

/// A dump that carries an RSDP: its tables at their real addresses.
fn real_layout(m: &Machine, rng: &mut Rng) -> Option<Placed> {
    let rsdp = m.find(b"RSDP")?.bytes.clone();
    let mut regions = common_regions(rng);
    let (mut rsdt, mut xsdt, mut fadt, mut facs) = (None, None, None, None);
    let mut targets = Vec::new();
    for t in &m.tables {
        if t.address == 0 || &t.signature == b"RSDP" {
            continue;
        }
        regions.push((t.address, t.bytes.clone()));
        let i = regions.len() - 1;
        targets.push(t.address);
        match &t.signature {
            b"RSDT" => rsdt = Some(i),
            b"XSDT" => xsdt = Some(i),
            b"FACP" => fadt = Some(i),
            b"FACS" => facs = Some(i),
            _ => {}
        }
    }
    Some(Placed {
        name: format!("{} (real addresses)", m.name),
        rsdp,
        regions,
        rsdt,
        xsdt,
        fadt,
        facs,
        targets,
    })
}

pub(crate) fn layouts() -> Vec<Placed> {
    let mut rng = Rng::for_case("layouts", 0);
    let mut out = Vec::new();
    for m in &inputs().machines {
        if let Some(l) = real_layout(m, &mut rng) {
            out.push(l);
        }
        if m.find(b"FACP").is_some() || m.find(b"APIC").is_some() {
            out.push(synthetic_layout(m, &mut rng));
        }
    }
    out
}
