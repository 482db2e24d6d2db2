//! Property-style robustness tests: random bytes, random truncations and random corruptions
//! fed to both parsers. The property is "no panic, and every `Ok` result keeps the
//! `BootInfo` invariants". Deterministic (xorshift with fixed seeds), no extra crates.

#[path = "../src/testutil.rs"]
mod testutil;

use boot::{
    BootInfo, MAX_CMDLINE, MAX_LOADER_NAME, MAX_MEMORY_REGIONS, PhysMemory, Snapshot, multiboot2,
    pvh, usable_frames, write_fixture,
};
use testutil::{Mbi, Rng, e820, put32, rsdp, set32, set64, start_info};

/// Rounds of a random test: `native` normally; under Miri, which interprets every step, one
/// in 2000 of them (too few for the success-rate checks, which only run natively).
const fn rounds(native: usize) -> usize {
    if cfg!(miri) { native / 2000 } else { native }
}

/// Every value of `range` normally; under Miri every 32nd and the last.
fn sample(range: std::ops::Range<usize>) -> impl Iterator<Item = usize> {
    let last = range.end.saturating_sub(1);
    range.filter(move |&v| !cfg!(miri) || v % 32 == 0 || v == last)
}

/// The invariants every parsed `BootInfo` keeps, whatever the input.
fn check(info: &BootInfo, mem: &impl PhysMemory) {
    let map = info.memory_map();
    assert!(map.len() <= MAX_MEMORY_REGIONS);
    for w in map.windows(2) {
        assert!(w[0].end() <= w[1].start, "unsorted or overlapping: {map:?}");
    }
    assert!(
        map.iter()
            .all(|r| r.len > 0 && r.start.checked_add(r.len).is_some())
    );
    assert!(info.cmdline().len() <= MAX_CMDLINE);
    assert!(info.loader_name().len() <= MAX_LOADER_NAME);
    if let Some(rsdp) = &info.rsdp {
        assert!(rsdp.len == 20 || rsdp.len == 36);
        assert_eq!(&rsdp.as_bytes()[..8], b"RSD PTR ");
    }
    let frames = usable_frames(map, &[(0, 1 << 20), (info.raw_address, info.raw_size)]);
    assert!(
        frames
            .iter()
            .all(|(s, e)| s % 4096 == 0 && e % 4096 == 0 && s < e)
    );
    assert!(frames.iter().all(|(s, _)| s >= 1 << 20));
    let mut text = String::new();
    write_fixture(&mut text, info, mem).unwrap();
}

/// Parses and checks; true when the parser accepted the input.
fn mb2(bytes: &[u8], at: u64) -> bool {
    let regions = [(at, bytes)];
    let mem = Snapshot::new(&regions);
    match multiboot2::parse(&mem, at) {
        Ok(info) => {
            check(&info, &mem);
            true
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

const MBI: u64 = 0x8000;

fn valid_mbis() -> Vec<Vec<u8>> {
    let map = [
        (0, 0x9fc00, 1),
        (0x9fc00, 0x400, 2),
        (0x10_0000, 0x7ee_0000, 1),
        (0xb000_0000, 0x1000_0000, 2),
    ];
    let v2 = rsdp(2, 0x7fe_2000, 0x7fe_2100);
    let bios = Mbi::new()
        .string(1, "log=debug dumpboot")
        .string(2, "GRUB 2.06")
        .mmap(&map, 24)
        .tag(14, &rsdp(0, 0x7fe_2000, 0))
        .finish();
    let uefi = Mbi::new()
        .string(1, "console=ttyS0")
        .string(2, "GRUB 2.06")
        .framebuffer(0xc000_0000, 3200, 800, 600, 32, 1)
        .tag(14, &v2[..20])
        .tag(15, &v2)
        .efi_mmap(
            &[
                (7, 0, 0xa0),
                (7, 0x10_0000, 0x700),
                (10, 0x80_0000, 8),
                (4, 0x90_0000, 0x1000),
            ],
            48,
        )
        .finish();
    vec![bios, uefi]
}

#[test]
fn multiboot2_random_bytes() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..rounds(20_000) {
        let len = rng.below(300) as usize;
        let mut blob: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Make total_size plausible most of the time, so the tag walk is exercised.
        if len >= 8 && rng.below(4) != 0 {
            let total = if rng.below(2) == 0 {
                len as u32
            } else {
                rng.below(len as u64 + 16) as u32
            };
            set32(&mut blob, 0, total);
        }
        mb2(&blob, MBI);
    }
}

#[test]
fn multiboot2_random_tags() {
    // Structured garbage: plausible tag headers with random bodies and sizes.
    let types = [0, 1, 2, 6, 8, 14, 15, 17, 3, 21, 0xffff_ffff];
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut accepted = 0usize;
    for _ in 0..rounds(20_000) {
        let mut mbi = Mbi::new();
        for _ in 0..rng.below(6) {
            let tag_type = types[rng.below(types.len() as u64) as usize];
            let mut body_len = rng.below(120) as usize;
            // A believable entry size most of the time, and, for those, room for whole
            // entries most of the time (a map without one is refused).
            let entry = [24u32, 40, 48, 0, 1, 23][rng.below(6) as usize];
            let map = tag_type == 6 || tag_type == 17;
            if map && entry >= 24 && rng.below(4) != 0 {
                body_len = 8 + entry as usize * (1 + rng.below(3) as usize);
            }
            let mut body: Vec<u8> = (0..body_len).map(|_| rng.next() as u8).collect();
            if map && body_len >= 8 {
                body[..4].copy_from_slice(&entry.to_le_bytes());
            }
            let size = match rng.below(8) {
                0 => rng.next() as u32,
                1 => rng.below(8) as u32,
                _ => 8 + body_len as u32,
            };
            mbi = mbi.raw_tag(tag_type, size, &body);
        }
        let blob = if rng.below(4) == 0 {
            mbi.finish_without_end()
        } else {
            mbi.finish()
        };
        accepted += usize::from(mb2(&blob, MBI));
    }
    // The generator must reach the success path often enough to mean something.
    assert!(cfg!(miri) || accepted > 400, "only {accepted} accepted");
}

#[test]
fn multiboot2_truncations() {
    for blob in valid_mbis() {
        for cut in sample(0..blob.len() + 1) {
            // The blob cut short, total_size unchanged (unreadable)...
            assert_eq!(mb2(&blob[..cut], MBI), cut == blob.len());
            // ... and total_size cut to match (a walk that runs out mid-tag).
            let mut short = blob[..cut].to_vec();
            if cut >= 4 {
                set32(&mut short, 0, cut as u32);
            }
            mb2(&short, MBI);
        }
    }
}

#[test]
fn multiboot2_corruptions() {
    let mut rng = Rng(0x5151_5151_7777_9999);
    let mut accepted = 0usize;
    for blob in valid_mbis() {
        for _ in 0..rounds(10_000) {
            let mut bad = blob.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bad.len() as u64) as usize;
                bad[i] = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.next() as u8,
                };
            }
            accepted += usize::from(mb2(&bad, MBI));
        }
    }
    assert!(cfg!(miri) || accepted > 1000, "only {accepted} accepted");
}

const SI: u64 = 0x5a8;
const CMDLINE: u64 = 0x5e0;
const MEMMAP: u64 = 0x3000;
const RSDP: u64 = 0xf_5270;

struct Pvh {
    si: Vec<u8>,
    memmap: Vec<u8>,
    cmdline: Vec<u8>,
    rsdp: Vec<u8>,
}

impl Pvh {
    fn valid(rsdp_revision: u8) -> Pvh {
        let map = [
            (0, 0x9fc00, 1),
            (0x9fc00, 0x400, 2),
            (0xf0000, 0x10000, 2),
            (0x10_0000, 0x7ee_0000, 1),
            (0xb000_0000, 0x1000_0000, 2),
        ];
        Pvh {
            si: start_info(1, CMDLINE, RSDP, MEMMAP, map.len() as u32),
            memmap: e820(&map, 24),
            cmdline: b"console=ttyS0 dumpboot\0".to_vec(),
            rsdp: rsdp(rsdp_revision, 0x7fe_2000, 0x7fe_2100),
        }
    }

    fn blobs_mut(&mut self) -> [&mut Vec<u8>; 4] {
        [
            &mut self.si,
            &mut self.memmap,
            &mut self.cmdline,
            &mut self.rsdp,
        ]
    }

    /// Parses and checks; true when the parser accepted the input.
    fn run(&self) -> bool {
        let regions = [
            (SI, &self.si[..]),
            (MEMMAP, &self.memmap[..]),
            (CMDLINE, &self.cmdline[..]),
            (RSDP, &self.rsdp[..]),
        ];
        let mem = Snapshot::new(&regions);
        match pvh::parse(&mem, SI) {
            Ok(info) => {
                check(&info, &mem);
                true
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                false
            }
        }
    }
}

#[test]
fn pvh_valid_baseline() {
    for rev in [0, 2] {
        let p = Pvh::valid(rev);
        let regions = [
            (SI, &p.si[..]),
            (MEMMAP, &p.memmap[..]),
            (CMDLINE, &p.cmdline[..]),
            (RSDP, &p.rsdp[..]),
        ];
        let info = pvh::parse(&Snapshot::new(&regions), SI).unwrap();
        assert_eq!(info.rsdp.unwrap().revision, rev);
    }
}

#[test]
fn pvh_random_fields() {
    let addrs = [
        0,
        SI,
        CMDLINE,
        MEMMAP,
        RSDP,
        MEMMAP + 24,
        RSDP + 1,
        u64::MAX,
        u64::MAX - 20,
    ];
    let mut rng = Rng(0x1357_9bdf_2468_ace0);
    let mut accepted = 0usize;
    for _ in 0..rounds(20_000) {
        let mut p = Pvh::valid(if rng.below(2) == 0 { 0 } else { 2 });
        if rng.below(4) != 0 {
            set32(&mut p.si, 4, rng.below(3) as u32);
        }
        for offset in [24, 32, 40] {
            if rng.below(3) == 0 {
                set64(
                    &mut p.si,
                    offset,
                    addrs[rng.below(addrs.len() as u64) as usize],
                );
            }
        }
        if rng.below(2) == 0 {
            let entries = match rng.below(3) {
                0 => rng.next() as u32,
                1 => rng.below(5000) as u32,
                _ => rng.below(12) as u32,
            };
            set32(&mut p.si, 48, entries);
        }
        if rng.below(2) == 0 {
            let n = rng.below(400) as usize;
            p.memmap = (0..n).map(|_| rng.next() as u8).collect();
        }
        if rng.below(3) == 0 {
            let n = rng.below(1200) as usize;
            p.cmdline = (0..n).map(|_| rng.next() as u8).collect();
        }
        if rng.below(3) == 0 {
            let n = rng.below(40) as usize;
            let mut r = p.rsdp.clone();
            r.resize(n.max(r.len()), 0);
            for b in r.iter_mut().skip(8) {
                if rng.below(4) == 0 {
                    *b = rng.next() as u8;
                }
            }
            r.truncate(n);
            p.rsdp = r;
        }
        accepted += usize::from(p.run());
    }
    assert!(cfg!(miri) || accepted > 1000, "only {accepted} accepted");
}

#[test]
fn pvh_truncations_and_corruptions() {
    let mut rng = Rng(0xabcd_ef01_2345_6789);
    for rev in [0, 2] {
        for which in 0..4 {
            let len = Pvh::valid(rev).blobs_mut()[which].len();
            for cut in sample(0..len) {
                let mut p = Pvh::valid(rev);
                p.blobs_mut()[which].truncate(cut);
                assert!(!p.run(), "blob {which} cut at {cut} was accepted");
            }
        }
        for _ in 0..rounds(10_000) {
            let mut p = Pvh::valid(rev);
            let which = rng.below(4) as usize;
            let blob = &mut p.blobs_mut()[which];
            let i = rng.below(blob.len() as u64) as usize;
            blob[i] = rng.next() as u8;
            p.run();
        }
    }
}

#[test]
fn pvh_random_bytes() {
    let mut rng = Rng(0x7777_0000_1111_2222);
    for _ in 0..rounds(5_000) {
        let mut si: Vec<u8> = (0..rng.below(80)).map(|_| rng.next() as u8).collect();
        if si.len() >= 4 {
            set32(&mut si, 0, pvh::MAGIC);
        }
        let mut extra = Vec::new();
        put32(&mut extra, rng.next() as u32);
        let regions = [(SI, &si[..]), (MEMMAP, &extra[..])];
        let mem = Snapshot::new(&regions);
        if let Ok(info) = pvh::parse(&mem, SI) {
            check(&info, &mem);
        }
    }
}
