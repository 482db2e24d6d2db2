//! Captured boots: every `boot/tests/fixtures/*.hex` is parsed and checked against its
//! `expect` lines, then truncated and corrupted to make sure the parsers never panic on it.
//!
//! Format (text, one item per line; blank lines and `#` comments are ignored), exactly what
//! `boot::write_fixture` prints (the kernel does so when booted with `dumpboot`):
//!
//! ```text
//! loader pvh | loader multiboot2
//! root 0x<start_info or mbi address>
//! blob 0x<physical address> <contiguous hex bytes>      (one or more)
//! expect cmdline=<rest of the line>
//! expect usable_min_mib=<n>      usable memory is at least n MiB
//! expect usable_max_mib=<n>      ... and at most n MiB
//! expect rsdp_revision=<n>       there is an RSDP of this revision
//! expect regions_min=<n>         the memory map has at least n regions
//! ```

#[path = "../src/testutil.rs"]
mod testutil;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use boot::{BootInfo, Loader, PhysMemory, Snapshot, multiboot2, pvh, usable_frames};

#[derive(Debug)]
struct Fixture {
    loader: Loader,
    root: u64,
    blobs: Vec<(u64, Vec<u8>)>,
    expects: Vec<(String, String)>,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("bad number {s:?}: {e}"))
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", s.len()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("bad hex at {i}"))
        })
        .collect()
}

fn parse_fixture(text: &str) -> Result<Fixture, String> {
    let mut loader = None;
    let mut root = None;
    let mut blobs = Vec::new();
    let mut expects = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        let at = |e: String| format!("line {}: {e}", n + 1);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "loader" => {
                loader = Some(match rest.trim() {
                    "pvh" => Loader::Pvh,
                    "multiboot2" => Loader::Multiboot2,
                    other => return Err(at(format!("unknown loader {other:?}"))),
                })
            }
            "root" => root = Some(parse_u64(rest).map_err(at)?),
            "blob" => {
                let (addr, hex) = rest
                    .trim()
                    .split_once(' ')
                    .ok_or_else(|| at("blob needs an address and bytes".into()))?;
                blobs.push((parse_u64(addr).map_err(at)?, parse_hex(hex).map_err(at)?));
            }
            "expect" => {
                let (key, value) = rest
                    .split_once('=')
                    .ok_or_else(|| at("expect needs key=value".into()))?;
                expects.push((key.trim().to_string(), value.to_string()));
            }
            other => return Err(at(format!("unknown line kind {other:?}"))),
        }
    }
    Ok(Fixture {
        loader: loader.ok_or("no loader line")?,
        root: root.ok_or("no root line")?,
        blobs,
        expects,
    })
}

fn parse_with(loader: Loader, mem: &impl PhysMemory, root: u64) -> Result<BootInfo, String> {
    match loader {
        Loader::Pvh => pvh::parse(mem, root).map_err(|e| e.to_string()),
        Loader::Multiboot2 => multiboot2::parse(mem, root).map_err(|e| e.to_string()),
    }
}

fn parse_blobs(loader: Loader, blobs: &[(u64, Vec<u8>)], root: u64) -> Result<BootInfo, String> {
    let regions: Vec<(u64, &[u8])> = blobs.iter().map(|(a, b)| (*a, &b[..])).collect();
    let info = parse_with(loader, &Snapshot::new(&regions), root)?;
    check_invariants(&info);
    Ok(info)
}

fn check_invariants(info: &BootInfo) {
    let map = info.memory_map();
    for w in map.windows(2) {
        assert!(w[0].end() <= w[1].start, "unsorted or overlapping: {map:?}");
    }
    assert!(map.iter().all(|r| r.len > 0));
    let frames = usable_frames(map, &[(0, 1 << 20)]);
    assert!(frames.iter().all(|(s, e)| s % 4096 == 0 && e % 4096 == 0));
}

/// Parses the fixture and checks its expectations (all of them, reporting every failure).
fn check_fixture(f: &Fixture) -> Result<BootInfo, String> {
    let info = parse_blobs(f.loader, &f.blobs, f.root)?;
    assert_eq!(info.loader, f.loader);
    const MIB: u64 = 1 << 20;
    let mut errors = String::new();
    for (key, value) in &f.expects {
        let num = || parse_u64(value);
        let ok = match key.as_str() {
            "cmdline" => info.cmdline() == value,
            "usable_min_mib" => info.usable_bytes() >= num()? * MIB,
            "usable_max_mib" => info.usable_bytes() <= num()? * MIB,
            "rsdp_revision" => {
                let want = num()?;
                info.rsdp.is_some_and(|r| u64::from(r.revision) == want)
            }
            "regions_min" => info.memory_map().len() as u64 >= num()?,
            other => return Err(format!("unknown expect key {other:?}")),
        };
        if !ok {
            let _ = writeln!(
                errors,
                "expect {key}={value} failed: cmdline {:?}, usable {} bytes, rsdp {:?}, {} regions",
                info.cmdline(),
                info.usable_bytes(),
                info.rsdp.map(|r| r.revision),
                info.memory_map().len()
            );
        }
    }
    if errors.is_empty() {
        Ok(info)
    } else {
        Err(errors)
    }
}

/// Truncations of every blob at a coarse step and single-byte corruptions: no panics.
fn abuse_fixture(f: &Fixture) {
    // Miri interprets every parse: a few cuts and corruptions there, many natively.
    let (cuts, corruptions) = if cfg!(miri) { (2, 2) } else { (64, 256) };
    for (i, (_, blob)) in f.blobs.iter().enumerate() {
        let step = (blob.len() / cuts).max(1);
        for cut in (0..blob.len()).step_by(step) {
            let mut blobs = f.blobs.clone();
            blobs[i].1.truncate(cut);
            let _ = parse_blobs(f.loader, &blobs, f.root);
        }
        let step = (blob.len() / corruptions).max(1);
        for pos in (0..blob.len()).step_by(step) {
            for flip in [
                |b: u8| b ^ 0xff,
                |_| 0,
                |b: u8| b.wrapping_add(1),
                |b: u8| b ^ 0x80,
            ] {
                let mut blobs = f.blobs.clone();
                blobs[i].1[pos] = flip(blobs[i].1[pos]);
                let _ = parse_blobs(f.loader, &blobs, f.root);
            }
        }
    }
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
#[cfg_attr(miri, ignore = "reads files, which Miri's isolation refuses")]
fn captured_fixtures() {
    let dir = fixture_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "hex"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        println!("no fixtures in {} (nothing captured yet)", dir.display());
        return;
    }
    let mut failures = String::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let text = std::fs::read_to_string(path).unwrap();
        let result = parse_fixture(&text).and_then(|f| {
            let info = check_fixture(&f)?;
            abuse_fixture(&f);
            Ok(info)
        });
        match result {
            Ok(info) => println!(
                "{name}: ok ({} {:?}, {} regions, {} MiB usable, cmdline {:?})",
                info.loader,
                info.loader_name(),
                info.memory_map().len(),
                info.usable_bytes() >> 20,
                info.cmdline()
            ),
            Err(e) => {
                let _ = writeln!(failures, "{name}: {e}");
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
    println!("{} fixtures checked", files.len());
}

/// Offsets of the multiboot2 tags of type `tag_type` in `mbi` (already known to parse).
fn find_tags(mbi: &[u8], tag_type: u32) -> Vec<usize> {
    let word = |at: usize| u32::from_le_bytes(mbi[at..at + 4].try_into().unwrap());
    let mut found = Vec::new();
    let mut offset = 8;
    while offset + 8 <= mbi.len() && word(offset) != 0 {
        if word(offset) == tag_type {
            found.push(offset);
        }
        offset = (offset + word(offset + 4) as usize).next_multiple_of(8);
    }
    found
}

/// GRUB on UEFI gives both memory maps, tag 6 derived from the EFI map: hiding tag 6 makes
/// the parser use tag 17, which must normalise to the same map. A check of the EFI type
/// mapping (UEFI 2.10 section 7.2) against real firmware.
#[test]
#[cfg_attr(miri, ignore = "reads files, which Miri's isolation refuses")]
fn captured_efi_map_agrees_with_e820_map() {
    let Ok(entries) = std::fs::read_dir(fixture_dir()) else {
        return;
    };
    let mut compared = 0;
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.extension().is_none_or(|x| x != "hex") {
            continue;
        }
        let f = parse_fixture(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let Some(i) = f.blobs.iter().position(|(a, _)| *a == f.root) else {
            continue;
        };
        let Ok(info) = parse_blobs(f.loader, &f.blobs, f.root) else {
            continue;
        };
        let mbi = &f.blobs[i].1;
        if f.loader != Loader::Multiboot2
            || !info.loader_name().starts_with("GRUB")
            || find_tags(mbi, 17).is_empty()
        {
            continue;
        }
        let mut blobs = f.blobs.clone();
        for at in find_tags(mbi, 6) {
            blobs[i].1[at..at + 4].copy_from_slice(&0x7fff_fff6u32.to_le_bytes());
        }
        let efi = parse_blobs(f.loader, &blobs, f.root).unwrap();
        assert_eq!(efi.memory_map(), info.memory_map(), "{}", path.display());
        compared += 1;
    }
    println!("{compared} fixtures with both memory maps compared");
}

/// `write_fixture` and this reader agree: synthetic boots round-trip through the text form.
#[test]
fn synthetic_round_trip() {
    use testutil::{Mbi, e820, rsdp, start_info};
    let map = [
        (0, 0x9fc00, 1),
        (0x9fc00, 0x400, 2),
        (0x10_0000, 0x7ee_0000, 1),
    ];

    let si = start_info(1, 0x5e0, 0xf_5270, 0x3000, 3);
    let cmdline = b"console=ttyS0 x=\"a b\" dumpboot\0".to_vec();
    let pvh_blobs = vec![
        (0x5a8u64, si),
        (0x3000, e820(&map, 24)),
        (0x5e0, cmdline),
        (0xf_5270, rsdp(0, 0x7fe_2000, 0)),
    ];
    let v2 = rsdp(2, 0x7fe_2000, 0x7fe_2100);
    let mbi = Mbi::new()
        .string(1, "log=trace  spaced  ")
        .string(2, "GRUB 2.06")
        .mmap(&map, 24)
        .tag(14, &v2[..20])
        .tag(15, &v2)
        .finish();
    let mb2_blobs = vec![(0x1_0000u64, mbi)];

    for (loader, blobs, root) in [
        (Loader::Pvh, pvh_blobs, 0x5a8),
        (Loader::Multiboot2, mb2_blobs, 0x1_0000),
    ] {
        let regions: Vec<(u64, &[u8])> = blobs.iter().map(|(a, b)| (*a, &b[..])).collect();
        let mem = Snapshot::new(&regions);
        let info = parse_with(loader, &mem, root).unwrap();
        let mut text = String::new();
        boot::write_fixture(&mut text, &info, &mem).unwrap();
        let f = parse_fixture(&text).unwrap();
        assert_eq!((f.loader, f.root), (loader, root));
        assert_eq!(f.blobs.len(), info.sources().len());
        let again = check_fixture(&f).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again.memory_map(), info.memory_map());
        assert_eq!(again.cmdline(), info.cmdline());
        assert_eq!(again.rsdp, info.rsdp);
        assert_eq!(f.expects.len(), 5, "{text}");
        abuse_fixture(&f);
    }
}

#[test]
fn reader_rejects_bad_fixtures() {
    assert!(parse_fixture("root 0x10\n").is_err());
    assert!(parse_fixture("loader pvh\n").is_err());
    assert!(parse_fixture("loader elf\nroot 0\n").is_err());
    assert!(parse_fixture("loader pvh\nroot 0\nblob 0x10 abc\n").is_err());
    assert!(parse_fixture("loader pvh\nroot 0\nblob 0x10 zz\n").is_err());
    assert!(parse_fixture("loader pvh\nroot 0\nbanana\n").is_err());
    let f =
        parse_fixture("# comment\n\nloader multiboot2\nroot 0x8\nexpect colour=blue\n").unwrap();
    assert!(check_fixture(&f).is_err(), "no blob: unreadable");
    let f = parse_fixture("loader pvh\r\nroot 8\r\nexpect cmdline=a=b c \r\n").unwrap();
    assert_eq!(f.expects, [("cmdline".to_string(), "a=b c ".to_string())]);
}
