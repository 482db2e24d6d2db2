//! Tests of [`super::discover`] over hand-built memories.

use super::testutil::{Memory, Rng, fix_checksum, table};
use super::*;

const RSDT_AT: u64 = 0x7fe_1000;
const XSDT_AT: u64 = 0x7fe_2000;
const FADT_AT: u64 = 0x7fe_3000;
const MADT_AT: u64 = 0x7fe_4000;
const DSDT_AT: u64 = 0x7fe_5000;
const FACS_AT: u64 = 0x7fe_6000;
const HPET_AT: u64 = 0x7fe_7000;

fn rsdp(revision: u8, rsdt: u32, xsdt: u64) -> Vec<u8> {
    let mut r = b"RSD PTR ".to_vec();
    r.push(0);
    r.extend_from_slice(b"BOCHS ");
    r.push(revision);
    r.extend_from_slice(&rsdt.to_le_bytes());
    if revision >= 2 {
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&xsdt.to_le_bytes());
        r.extend_from_slice(&[0, 0, 0, 0]);
    }
    // The first checksum covers bytes 0..20, the extended one (byte 32) all 36.
    fix_checksum(&mut r[..20], 8);
    if revision >= 2 {
        fix_checksum(&mut r, 32);
    }
    r
}

fn fadt_116() -> Vec<u8> {
    let mut body = vec![0u8; 116 - 36];
    body[0..4].copy_from_slice(&(FACS_AT as u32).to_le_bytes());
    body[4..8].copy_from_slice(&(DSDT_AT as u32).to_le_bytes());
    table(b"FACP", 1, &body)
}

fn facs() -> Vec<u8> {
    let mut f = b"FACS".to_vec();
    f.extend_from_slice(&64u32.to_le_bytes());
    f.resize(64, 0);
    f
}

fn rsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries
        .iter()
        .flat_map(|e| (*e as u32).to_le_bytes())
        .collect();
    table(b"RSDT", 1, &body)
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    table(b"XSDT", 1, &body)
}

/// A q35-like machine: RSDT (and XSDT) listing FADT, MADT, HPET; the FADT's DSDT and FACS.
fn machine() -> Memory {
    let mut m = Memory::default();
    m.put(RSDT_AT, rsdt(&[FADT_AT, MADT_AT, HPET_AT]));
    m.put(XSDT_AT, xsdt(&[FADT_AT, MADT_AT, HPET_AT]));
    m.put(FADT_AT, fadt_116());
    let mut apic = vec![0, 0, 0xe0, 0xfe, 1, 0, 0, 0];
    apic.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]);
    m.put(MADT_AT, table(b"APIC", 1, &apic));
    m.put(DSDT_AT, table(b"DSDT", 1, &[0x10, 0x05, 0x5c, 0x5f, 0x53]));
    m.put(FACS_AT, facs());
    m.put(HPET_AT, table(b"HPET", 1, &[0; 20]));
    m
}

fn sigs(set: &TableSet) -> Vec<&[u8]> {
    set.tables.iter().map(|t| t.signature.as_slice()).collect()
}

#[test]
fn revision_0_walks_the_rsdt_and_adds_dsdt_and_facs() {
    let m = machine();
    let set = discover(&m, &rsdp(0, RSDT_AT as u32, 0)).expect("discovers");
    assert_eq!(set.root, RootKind::Rsdt);
    assert_eq!(set.root_phys, RSDT_AT);
    assert_eq!(set.revision, 0);
    assert_eq!(&set.oem_id, b"BOCHS ");
    assert_eq!(
        sigs(&set),
        [&b"FACP"[..], b"APIC", b"HPET", b"DSDT", b"FACS"]
    );
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    let madt = set.find(b"APIC").expect("listed");
    assert_eq!(
        (madt.phys, madt.length, madt.checksum_ok),
        (MADT_AT, 52, true)
    );
    assert_eq!(set.find(b"FACS").expect("added").length, 64);
    assert_eq!(set.find_all(b"DSDT").count(), 1);
    assert!(set.find(b"MCFG").is_none());
    let bytes = read_table(&m, madt).expect("reads");
    assert_eq!(Madt::parse(&bytes).expect("parses").enabled_cpus(), 1);
}

#[test]
fn revision_2_prefers_the_xsdt() {
    let m = machine();
    let set = discover(&m, &rsdp(2, RSDT_AT as u32, XSDT_AT)).expect("discovers");
    assert_eq!(set.root, RootKind::Xsdt);
    assert_eq!(set.tables.len(), 5);
    assert!(set.errors.is_empty(), "{:?}", set.errors);
}

#[test]
fn falls_back_to_the_rsdt_and_says_why() {
    let mut m = machine();
    // XSDT address unreadable.
    let set = discover(&m, &rsdp(2, RSDT_AT as u32, 0xdead_0000)).expect("discovers");
    assert_eq!(set.root, RootKind::Rsdt);
    assert!(set.errors[0].contains("XSDT"), "{:?}", set.errors);
    // XSDT address zero.
    let set = discover(&m, &rsdp(2, RSDT_AT as u32, 0)).expect("discovers");
    assert_eq!(set.root, RootKind::Rsdt);
    assert_eq!(set.errors.len(), 1);
    // Something else where the XSDT should be.
    m.put(XSDT_AT, table(b"JUNK", 1, &[]));
    let set = discover(&m, &rsdp(2, RSDT_AT as u32, XSDT_AT)).expect("discovers");
    assert_eq!(set.root, RootKind::Rsdt);
    assert!(set.errors[0].contains("bad signature"), "{:?}", set.errors);
    // A revision-2 RSDP cut to 20 bytes: the RSDT, with a warning.
    let r = rsdp(2, RSDT_AT as u32, XSDT_AT);
    let set = discover(&m, &r[..20]).expect("discovers");
    assert_eq!(set.root, RootKind::Rsdt);
    assert!(set.errors[0].contains("no XSDT address"));
}

#[test]
fn bad_entries_are_skipped_and_recorded() {
    let mut m = machine();
    m.put(
        RSDT_AT,
        rsdt(&[0, FADT_AT, 0xbad_0000, MADT_AT, HPET_AT, 0x7fe_8000]),
    );
    // A table claiming a length below the header's.
    let mut liar = table(b"SSDT", 1, &[]);
    liar[4] = 10;
    m.put(0x7fe_8000, liar);
    // A bad checksum: kept, recorded.
    let mut madt = m.ranges[&MADT_AT].clone();
    madt[9] ^= 0x55;
    m.put(MADT_AT, madt);
    let set = discover(&m, &rsdp(0, RSDT_AT as u32, 0)).expect("discovers");
    assert_eq!(
        sigs(&set),
        [&b"FACP"[..], b"APIC", b"HPET", b"DSDT", b"FACS"]
    );
    assert!(!set.find(b"APIC").expect("kept").checksum_ok);
    assert_eq!(set.errors.len(), 4, "{:#?}", set.errors);
    assert!(set.errors[0].contains("entry 0 is zero"));
    assert!(set.errors[1].contains("cannot read"));
    assert!(set.errors[2].contains("impossible length"));
    assert!(set.errors[3].contains("bad checksum"));
}

#[test]
fn missing_dsdt_and_facs_are_recorded() {
    let mut m = machine();
    m.ranges.remove(&DSDT_AT);
    m.put(FACS_AT, b"FACX\x40\0\0\0".to_vec());
    let set = discover(&m, &rsdp(0, RSDT_AT as u32, 0)).expect("discovers");
    assert_eq!(sigs(&set), [&b"FACP"[..], b"APIC", b"HPET"]);
    assert_eq!(set.errors.len(), 2, "{:?}", set.errors);
}

#[test]
fn a_facs_claiming_more_than_any_table_is_not_listed() {
    let mut m = machine();
    let mut f = facs();
    f[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    m.put(FACS_AT, f);
    let set = discover(&m, &rsdp(0, RSDT_AT as u32, 0)).expect("discovers");
    assert!(!sigs(&set).contains(&&b"FACS"[..]), "{:?}", sigs(&set));
    assert!(
        set.errors.iter().any(|e| e.contains("larger than")),
        "{:?}",
        set.errors
    );
}

#[test]
fn rsdp_and_root_failures() {
    let m = machine();
    let good = rsdp(0, RSDT_AT as u32, 0);
    assert!(matches!(
        discover(&m, &good[..19]),
        Err(TableError::Truncated { need: 20, have: 19 })
    ));
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(
        discover(&m, &bad),
        Err(TableError::BadSignature { .. })
    ));
    let mut bad = good.clone();
    bad[8] ^= 1;
    assert!(matches!(
        discover(&m, &bad),
        Err(TableError::BadChecksum { .. })
    ));
    assert!(matches!(
        discover(&m, &rsdp(0, 0, 0)),
        Err(TableError::NoRootTable { .. })
    ));
    assert!(matches!(
        discover(&m, &rsdp(0, 0x1234_0000, 0)),
        Err(TableError::NoRootTable { .. })
    ));
    // A wrong extended checksum is only a warning.
    let mut ext = rsdp(2, RSDT_AT as u32, XSDT_AT);
    ext[32] ^= 1;
    let set = discover(&m, &ext).expect("discovers");
    assert_eq!(set.root, RootKind::Xsdt);
    assert!(set.errors[0].contains("extended checksum"));
    // Errors display.
    let e = TableError::Truncated { need: 36, have: 3 };
    assert_eq!(e.to_string(), "truncated: need 36 bytes, have 3");
}

#[test]
fn too_many_entries_are_capped() {
    let mut m = machine();
    // 2000 SSDTs at 2000 addresses (above the other tables).
    let ssdt = table(b"SSDT", 2, &[0xA3; 8]);
    let at = |i: u64| 0x800_0000 + i * 0x40;
    for i in 0..2000 {
        m.put(at(i), ssdt.clone());
    }
    let entries: Vec<u64> = (0..2000).map(at).collect();
    m.put(XSDT_AT, xsdt(&entries));
    let set = discover(&m, &rsdp(2, RSDT_AT as u32, XSDT_AT)).expect("discovers");
    assert_eq!(set.find_all(b"SSDT").count(), MAX_ENTRIES);
    assert!(set.errors.iter().any(|e| e.contains("more than 1024")));
}

#[test]
fn a_table_listed_many_times_is_listed_once() {
    let mut m = machine();
    let entries: Vec<u64> = (0..1000).map(|_| MADT_AT).collect();
    m.put(XSDT_AT, xsdt(&entries));
    let set = discover(&m, &rsdp(2, RSDT_AT as u32, XSDT_AT)).expect("discovers");
    assert_eq!(set.find_all(b"APIC").count(), 1);
    assert_eq!(
        set.errors
            .iter()
            .filter(|e| e.contains("listed before"))
            .count(),
        999
    );
}

#[test]
fn a_header_claiming_the_largest_length_costs_no_copy() {
    // A 36-byte header saying 16 MiB, listed 1000 times at different addresses: discovery
    // sums what is there (unreadable past the end here) and never copies a table whole.
    let mut m = machine();
    let mut big = table(b"SSDT", 2, &[]);
    big[4..8].copy_from_slice(&MAX_TABLE_LEN.to_le_bytes());
    let at = |i: u64| 0x800_0000 + i * 0x40;
    for i in 0..1000 {
        m.put(at(i), big.clone());
    }
    let mut entries = vec![FADT_AT, MADT_AT];
    entries.extend((0..1000).map(at));
    m.put(XSDT_AT, xsdt(&entries));
    let started = std::time::Instant::now();
    let set = discover(&m, &rsdp(2, RSDT_AT as u32, XSDT_AT)).expect("discovers");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        set.find_all(b"APIC").count() == 1,
        "the real tables are still there"
    );
}

#[test]
fn read_table_refuses_huge_and_unreadable() {
    let m = machine();
    let huge = TableRef {
        signature: *b"SSDT",
        phys: DSDT_AT,
        length: MAX_TABLE_LEN + 1,
        checksum_ok: true,
    };
    assert!(matches!(
        read_table(&m, &huge),
        Err(TableError::TooLarge { .. })
    ));
    let gone = TableRef {
        phys: 0x10,
        length: 36,
        ..huge
    };
    assert!(matches!(
        read_table(&m, &gone),
        Err(TableError::Unreadable {
            phys: 0x10,
            len: 36
        })
    ));
}

#[test]
fn discover_never_panics_on_mutated_memory() {
    let mut rng = Rng(0x5eed_0000_1111_2222);
    let base = machine();
    for i in 0..3000 {
        let mut m = Memory::default();
        for (at, bytes) in &base.ranges {
            let b = if rng.below(3) == 0 {
                rng.mutate(bytes)
            } else {
                bytes.clone()
            };
            m.put(*at, b);
        }
        let r = if i % 2 == 0 {
            rsdp(2, RSDT_AT as u32, XSDT_AT)
        } else {
            rsdp(0, RSDT_AT as u32, 0)
        };
        let r = if rng.below(4) == 0 { rng.mutate(&r) } else { r };
        if let Ok(set) = discover(&m, &r) {
            assert!(set.tables.len() <= MAX_ENTRIES + 2);
            for t in &set.tables {
                let _ = read_table(&m, t);
            }
        }
    }
}
