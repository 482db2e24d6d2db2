//! Tests of [`Ivrs::parse`] over hand-built tables.

use alloc::vec;

use super::devices::*;
use super::*;
use crate::tables::testutil::table;

mod no_panic;

/// A 4-byte device entry.
fn e4(ty: u8, id: u16, settings: u8) -> Vec<u8> {
    let [lo, hi] = id.to_le_bytes();
    vec![ty, lo, hi, settings]
}

/// An 8-byte device entry: the 4 bytes, then `ext`.
fn e8(ty: u8, id: u16, settings: u8, ext: [u8; 4]) -> Vec<u8> {
    let mut e = e4(ty, id, settings);
    e.extend_from_slice(&ext);
    e
}

/// An 8-byte entry whose bytes 5-6 are a device ID (alias or special source).
fn e8_id(ty: u8, id: u16, settings: u8, byte4: u8, other: u16, byte7: u8) -> Vec<u8> {
    let [lo, hi] = other.to_le_bytes();
    e8(ty, id, settings, [byte4, lo, hi, byte7])
}

/// An ACPI HID entry (F0h) with a UID of `uid` bytes.
fn acpi_hid(uid: &[u8]) -> Vec<u8> {
    let mut e = vec![ENTRY_ACPI_HID, 0xa5, 0, 0x40];
    e.extend_from_slice(b"AMDI0020");
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&[2, uid.len() as u8]);
    e.extend_from_slice(uid);
    e
}

fn ivhd_bytes(kind: u8, flags: u8, device: u16, base: u64, entries: &[Vec<u8>]) -> Vec<u8> {
    let body = entries.concat();
    let fixed = if kind == TYPE_IVHD_10 { 24 } else { 40 };
    let mut s = vec![kind, flags];
    s.extend_from_slice(&((fixed + body.len()) as u16).to_le_bytes());
    s.extend_from_slice(&device.to_le_bytes());
    s.extend_from_slice(&0x40u16.to_le_bytes());
    s.extend_from_slice(&base.to_le_bytes());
    s.extend_from_slice(&0u16.to_le_bytes());
    s.extend_from_slice(&0x1300u16.to_le_bytes());
    s.extend_from_slice(&0x8004_8f6eu32.to_le_bytes());
    if kind != TYPE_IVHD_10 {
        s.extend_from_slice(&0x2465_77ef_a205_4adau64.to_le_bytes());
        s.extend_from_slice(&[0; 8]);
    }
    s.extend_from_slice(&body);
    s
}

fn ivmd_bytes(kind: u8, flags: u8, device: u16, aux: u16, start: u64, length: u64) -> Vec<u8> {
    let mut s = vec![kind, flags, 32, 0];
    s.extend_from_slice(&device.to_le_bytes());
    s.extend_from_slice(&aux.to_le_bytes());
    s.extend_from_slice(&[0; 8]);
    s.extend_from_slice(&start.to_le_bytes());
    s.extend_from_slice(&length.to_le_bytes());
    s
}

fn ivrs(info: u32, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut body = info.to_le_bytes().to_vec();
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&blocks.concat());
    table(b"IVRS", 2, &body)
}

fn range(first: u16, last: u16, settings: u8, alias: Option<u16>) -> DeviceRange {
    DeviceRange {
        first,
        last,
        settings,
        alias,
    }
}

/// The entries of a typical desktop's IOMMU: a range, an alias range for a PCI bridge, the
/// IOMMU's HPET and I/O APICs.
fn desktop_entries() -> Vec<Vec<u8>> {
    vec![
        e4(ENTRY_START, 0x0003, 0),
        e4(ENTRY_END, 0xfffe, 0),
        e8_id(ENTRY_ALIAS_START, 0xff00, 0, 0, 0x00a5, 0),
        e4(ENTRY_END, 0xffff, 0),
        e4(ENTRY_PAD, 0, 0),
        e8_id(ENTRY_SPECIAL, 0, 0, 0, 0x00a0, 2),
        e8_id(ENTRY_SPECIAL, 0, 0xd7, 0x21, 0x00a0, 1),
        e8_id(ENTRY_SPECIAL, 0, 0, 0x22, 0x0001, 1),
    ]
}

fn valid() -> Vec<u8> {
    let mut on40 = desktop_entries();
    on40.push(acpi_hid(b"\\_SB.FUR0"));
    on40.push(e4(ENTRY_SELECT, 0x00a5, 0));
    ivrs(
        0x0020_3043,
        &[
            ivhd_bytes(TYPE_IVHD_10, 0xb0, 2, 0xfd20_0000, &desktop_entries()),
            ivhd_bytes(TYPE_IVHD_11, 0x30, 2, 0xfd20_0000, &desktop_entries()),
            ivhd_bytes(TYPE_IVHD_40, 0x30, 2, 0xfd20_0000, &on40),
            ivmd_bytes(TYPE_IVMD_SELECT, 0x7, 0x0010, 0, 0x7c00_0000, 0x10_0000),
        ],
    )
}

#[test]
fn a_desktop_table() {
    let i = Ivrs::parse(&valid()).expect("parses");
    assert!(i.errors.is_empty(), "{:?}", i.errors);
    assert!(i.checksum_ok);
    assert_eq!(i.info, 0x0020_3043);
    assert_eq!(i.units.len(), 3);
    let u = &i.units[0];
    assert_eq!(
        (u.kind, u.flags, u.device_id, u.capability_offset, u.base),
        (0x10, 0xb0, 2, 0x40, 0xfd20_0000)
    );
    assert_eq!(
        (u.segment, u.info, u.features, u.efr),
        (0, 0x1300, 0x8004_8f6e, None)
    );
    assert_eq!(
        u.devices,
        vec![
            range(3, 0xfffe, 0, None),
            range(0xff00, 0xffff, 0, Some(0xa5))
        ]
    );
    assert_eq!(
        u.specials,
        vec![
            Special {
                kind: SpecialKind::Hpet,
                handle: 0,
                source: 0xa0,
                settings: 0
            },
            Special {
                kind: SpecialKind::IoApic,
                handle: 0x21,
                source: 0xa0,
                settings: 0xd7
            },
            Special {
                kind: SpecialKind::IoApic,
                handle: 0x22,
                source: 1,
                settings: 0
            },
        ]
    );
    assert_eq!(i.units[1].efr, Some(0x2465_77ef_a205_4ada));
    assert_eq!(i.units[1].devices, u.devices);
    // The ACPI HID entry is stepped over: the select after it is read.
    assert_eq!(i.units[2].devices.len(), 3);
    assert_eq!(i.units[2].devices[2], range(0xa5, 0xa5, 0, None));
    // One IOMMU, described three times: 40h is the one.
    let picked = i.iommus();
    assert_eq!(picked.len(), 1);
    assert_eq!(picked[0].kind, TYPE_IVHD_40);
    assert_eq!(
        i.memory,
        vec![Ivmd {
            kind: TYPE_IVMD_SELECT,
            flags: 7,
            first: 0x10,
            last: 0x10,
            start: 0x7c00_0000,
            length: 0x10_0000,
        }]
    );
}

#[test]
fn every_fixed_size_entry_type() {
    let t = ivrs(
        0,
        &[ivhd_bytes(
            TYPE_IVHD_11,
            0,
            0x0002,
            0xfeb8_0000,
            &[
                e4(ENTRY_ALL, 0, 0x01),
                e4(ENTRY_SELECT, 0x0008, 0x02),
                e8_id(ENTRY_ALIAS_SELECT, 0x0100, 0x04, 0, 0x00a4, 0),
                e8(ENTRY_EXT_SELECT, 0x0200, 0x40, [0, 0, 0, 0x80]),
                e8(ENTRY_EXT_START, 0x0300, 0x80, [1, 0, 0, 0]),
                e4(ENTRY_SELECT, 0x0010, 0),
                e4(ENTRY_END, 0x03ff, 0x11),
                e8_id(ENTRY_SPECIAL, 0, 0, 0, 0x00a0, 7),
            ],
        )],
    );
    let i = Ivrs::parse(&t).expect("parses");
    assert!(i.errors.is_empty(), "{:?}", i.errors);
    let u = &i.units[0];
    assert_eq!(
        u.devices,
        vec![
            range(0, 0xffff, 1, None),
            range(8, 8, 2, None),
            range(0x100, 0x100, 4, Some(0xa4)),
            range(0x200, 0x200, 0x40, None),
            // A select between a start and its end does not end the range; the start's
            // settings hold for it.
            range(0x10, 0x10, 0, None),
            range(0x300, 0x3ff, 0x80, None),
        ]
    );
    assert_eq!(u.specials[0].kind, SpecialKind::Other(7));
}

#[test]
fn ranges_without_their_other_half() {
    let t = ivrs(
        0,
        &[ivhd_bytes(
            TYPE_IVHD_10,
            0,
            2,
            0xfd20_0000,
            &[
                e4(ENTRY_END, 0x00ff, 0),
                e4(ENTRY_START, 0x0100, 0),
                e8_id(ENTRY_ALIAS_START, 0x0200, 0, 0, 0x0020, 0),
                e4(ENTRY_END, 0x02ff, 0),
                e4(ENTRY_START, 0x0500, 0),
                e4(ENTRY_END, 0x04ff, 0),
                e4(ENTRY_START, 0x0600, 0),
            ],
        )],
    );
    let i = Ivrs::parse(&t).expect("parses");
    assert_eq!(i.units[0].devices, vec![range(0x200, 0x2ff, 0, Some(0x20))]);
    let expect = [
        "end of range 0x00ff without a start",
        "starts a range at 0x0100 that no end",
        "ends before it starts",
        "starts a range at 0x0600 that no end",
    ];
    assert_eq!(i.errors.len(), expect.len(), "{:?}", i.errors);
    for (e, x) in i.errors.iter().zip(expect) {
        assert!(e.contains(x), "{e:?} should say {x:?}");
    }
}

#[test]
fn truncated_and_unknown_entries() {
    // An 8-byte entry cut to 6 bytes at the end of its block.
    let mut cut = e8_id(ENTRY_SPECIAL, 0, 0, 0x21, 0xa0, 1);
    cut.truncate(6);
    let t = ivrs(
        0,
        &[ivhd_bytes(
            TYPE_IVHD_10,
            0,
            2,
            0xfd20_0000,
            &[
                e4(0x05, 0x0001, 0),
                e8(0x7f, 0x0002, 0, [0; 4]),
                e4(ENTRY_SELECT, 0x0003, 0),
                cut,
            ],
        )],
    );
    let i = Ivrs::parse(&t).expect("parses");
    assert_eq!(i.units[0].devices, vec![range(3, 3, 0, None)]);
    assert!(i.units[0].specials.is_empty());
    let expect = [
        "unknown type 0x05 (4 bytes)",
        "unknown type 0x7f (8 bytes)",
        "its 8 bytes run past the block",
    ];
    assert_eq!(i.errors.len(), expect.len(), "{:?}", i.errors);
    for (e, x) in i.errors.iter().zip(expect) {
        assert!(e.contains(x), "{e:?} should say {x:?}");
    }
    // A variable-length type other than F0h: the rest of the block is lost, the next
    // block is read.
    let t = ivrs(
        0,
        &[
            ivhd_bytes(
                TYPE_IVHD_40,
                0,
                2,
                0xfd20_0000,
                &[e4(0x80, 0, 0), e4(ENTRY_SELECT, 0x0003, 0)],
            ),
            ivhd_bytes(TYPE_IVHD_40, 0, 0x42, 0xfd30_0000, &[e4(ENTRY_ALL, 0, 0)]),
        ],
    );
    let i = Ivrs::parse(&t).expect("parses");
    assert!(i.units[0].devices.is_empty());
    assert_eq!(i.units[1].devices, vec![range(0, 0xffff, 0, None)]);
    assert_eq!(i.errors.len(), 1, "{:?}", i.errors);
    assert!(i.errors[0].contains("variable-length type of unknown length"));
    // An ACPI HID entry whose UID runs past the block, and one cut before its length byte.
    for cut in [30usize, 10] {
        let mut hid = acpi_hid(b"\\_SB.FUR0");
        hid.truncate(cut);
        let t = ivrs(0, &[ivhd_bytes(TYPE_IVHD_40, 0, 2, 0xfd20_0000, &[hid])]);
        let i = Ivrs::parse(&t).expect("parses");
        assert_eq!(i.units.len(), 1);
        assert_eq!(i.errors.len(), 1, "{:?}", i.errors);
    }
}

#[test]
fn blocks_of_impossible_length() {
    // Length 0 after a good block: the walk stops, it does not spin.
    let good = ivhd_bytes(TYPE_IVHD_10, 0, 2, 0xfd20_0000, &[e4(ENTRY_ALL, 0, 0)]);
    let t = ivrs(0, &[good.clone(), vec![0x10, 0, 0, 0], good.clone()]);
    let i = Ivrs::parse(&t).expect("parses");
    assert_eq!(i.units.len(), 1);
    assert_eq!(i.errors.len(), 1, "{:?}", i.errors);
    assert!(i.errors[0].contains("length 0 is impossible"));
    // A block running past the table, and stray bytes.
    let mut long = good.clone();
    long[2] = 0xff;
    let i = Ivrs::parse(&ivrs(0, &[good.clone(), long])).expect("parses");
    assert_eq!(i.units.len(), 1);
    assert!(i.errors[0].contains("runs past the end"), "{:?}", i.errors);
    let i = Ivrs::parse(&ivrs(0, &[good.clone(), vec![0x10, 0, 9]])).expect("parses");
    assert!(i.errors[0].contains("3 stray bytes"), "{:?}", i.errors);
    // An IVHD 11h too short for its 40-byte fixed part, a 10h of 20 bytes, an IVMD of 16:
    // each skipped, the walk goes on.
    let mut short11 = ivhd_bytes(TYPE_IVHD_11, 0, 2, 0xfd20_0000, &[]);
    short11.truncate(32);
    short11[2] = 32;
    let mut short10 = ivhd_bytes(TYPE_IVHD_10, 0, 2, 0xfd20_0000, &[]);
    short10.truncate(20);
    short10[2] = 20;
    let mut short_ivmd = ivmd_bytes(TYPE_IVMD_ALL, 0, 0, 0, 0x1000, 0x1000);
    short_ivmd.truncate(16);
    short_ivmd[2] = 16;
    let t = ivrs(0, &[short11, short10, short_ivmd, good.clone()]);
    let i = Ivrs::parse(&t).expect("parses");
    assert_eq!(i.units.len(), 1);
    assert_eq!(i.errors.len(), 3, "{:?}", i.errors);
    assert!(i.errors[0].contains("below the 40 bytes"));
    assert!(i.errors[1].contains("below the 24 bytes"));
    assert!(i.errors[2].contains("below 32"));
    // An unknown block type and an IOMMU at address 0.
    let zero = ivhd_bytes(TYPE_IVHD_10, 0, 2, 0, &[]);
    let i = Ivrs::parse(&ivrs(0, &[vec![0x30, 0, 4, 0], zero, good])).expect("parses");
    assert_eq!(i.units.len(), 1);
    assert!(i.errors[0].contains("unknown type"), "{:?}", i.errors);
    assert!(
        i.errors[1].contains("register base is zero"),
        "{:?}",
        i.errors
    );
}

#[test]
fn one_ivhd_per_iommu() {
    let t = ivrs(
        0,
        &[
            ivhd_bytes(TYPE_IVHD_10, 0, 0x02, 0xfd20_0000, &[]),
            ivhd_bytes(TYPE_IVHD_10, 0, 0x42, 0xfd30_0000, &[]),
            ivhd_bytes(TYPE_IVHD_11, 0, 0x02, 0xfd20_0000, &[]),
            ivhd_bytes(TYPE_IVHD_11, 0, 0x42, 0xfd30_0000, &[]),
            // Same device ID, another base: another IOMMU.
            ivhd_bytes(TYPE_IVHD_10, 0, 0x02, 0xfd40_0000, &[]),
        ],
    );
    let i = Ivrs::parse(&t).expect("parses");
    let picked: Vec<(u8, u16, u64)> = i
        .iommus()
        .iter()
        .map(|u| (u.kind, u.device_id, u.base))
        .collect();
    assert_eq!(
        picked,
        vec![
            (TYPE_IVHD_11, 0x02, 0xfd20_0000),
            (TYPE_IVHD_11, 0x42, 0xfd30_0000),
            (TYPE_IVHD_10, 0x02, 0xfd40_0000),
        ]
    );
    // A 10h after the 11h does not displace it.
    let t = ivrs(
        0,
        &[
            ivhd_bytes(TYPE_IVHD_11, 0, 2, 0xfd20_0000, &[]),
            ivhd_bytes(TYPE_IVHD_10, 0, 2, 0xfd20_0000, &[]),
        ],
    );
    let i = Ivrs::parse(&t).expect("parses");
    assert_eq!(i.iommus()[0].kind, TYPE_IVHD_11);
}

#[test]
fn memory_definitions() {
    let t = ivrs(
        0,
        &[
            ivmd_bytes(
                TYPE_IVMD_ALL,
                IVMD_UNITY | IVMD_READ,
                0x1234,
                0,
                0x1000,
                0x2000,
            ),
            ivmd_bytes(TYPE_IVMD_SELECT, IVMD_WRITE, 0x00a5, 0x9999, 0x8000, 0x1000),
            ivmd_bytes(TYPE_IVMD_RANGE, IVMD_EXCLUSION, 0x0100, 0x01ff, 0xa000, 0),
            ivmd_bytes(TYPE_IVMD_RANGE, 0, 0x0200, 0x01ff, 0xa000, 0x1000),
            ivmd_bytes(TYPE_IVMD_ALL, 0, 0, 0, u64::MAX - 0xfff, 0x2000),
            // Ends on the last byte of the address space: kept.
            ivmd_bytes(TYPE_IVMD_ALL, 0, 0, 0, u64::MAX - 0xfff, 0x1000),
        ],
    );
    let i = Ivrs::parse(&t).expect("parses");
    assert_eq!(i.memory.len(), 4);
    let [all, one, range, top] = [&i.memory[0], &i.memory[1], &i.memory[2], &i.memory[3]];
    assert_eq!((all.first, all.last), (0, 0xffff));
    assert!(all.unity() && all.readable() && !all.writable() && !all.exclusion());
    assert_eq!(all.end(), Some(0x2fff));
    assert_eq!((one.first, one.last), (0xa5, 0xa5));
    assert!(one.writable() && !one.unity());
    assert!(one.applies_to(0xa5) && !one.applies_to(0xa6));
    assert_eq!((range.first, range.last), (0x100, 0x1ff));
    assert!(range.exclusion());
    assert_eq!(range.end(), None);
    assert_eq!(top.end(), Some(u64::MAX));
    assert_eq!(i.errors.len(), 2, "{:?}", i.errors);
    assert!(i.errors[0].contains("is empty"));
    assert!(i.errors[1].contains("wraps past 2^64"));
}

#[test]
fn refusals_and_checksum() {
    let t = valid();
    assert!(matches!(
        Ivrs::parse(&t[..t.len() - 1]),
        Err(TableError::Truncated { .. })
    ));
    assert!(matches!(
        Ivrs::parse(&table(b"IVRS", 2, &[0; 8])),
        Err(TableError::BadLength { length: 44 })
    ));
    assert!(matches!(
        Ivrs::parse(&table(b"DMAR", 2, &[0; 12])),
        Err(TableError::BadSignature { .. })
    ));
    let mut bad = t.clone();
    bad[9] = bad[9].wrapping_add(1);
    let i = Ivrs::parse(&bad).expect("kept");
    assert!(!i.checksum_ok);
    assert_eq!(i.units.len(), 3);
    let i = Ivrs::parse(&ivrs(7, &[])).expect("parses");
    assert!(i.units.is_empty() && i.memory.is_empty() && i.errors.is_empty());
}

#[test]
fn counts_are_capped() {
    // 70 IVHDs, one of them with 5000 selects and 300 specials (in two blocks' worth of
    // length: a block's length is 16 bits).
    let mut blocks = Vec::new();
    for n in 0..70u64 {
        blocks.push(ivhd_bytes(
            TYPE_IVHD_10,
            0,
            2,
            0x1_0000_0000 + (n << 20),
            &[],
        ));
    }
    let selects: Vec<Vec<u8>> = (0..5000u16).map(|d| e4(ENTRY_SELECT, d, 0)).collect();
    let specials: Vec<Vec<u8>> = (0..300u16)
        .map(|h| e8_id(ENTRY_SPECIAL, 0, 0, h as u8, 0xa0, 1))
        .collect();
    blocks[0] = ivhd_bytes(TYPE_IVHD_10, 0, 2, 0xfd20_0000, &selects);
    blocks[1] = ivhd_bytes(TYPE_IVHD_10, 0, 2, 0xfd30_0000, &specials);
    for _ in 0..300 {
        blocks.push(ivmd_bytes(TYPE_IVMD_ALL, 0, 0, 0, 0x1000, 0x1000));
    }
    let i = Ivrs::parse(&ivrs(0, &blocks)).expect("parses");
    assert_eq!(i.units.len(), MAX_UNITS);
    assert_eq!(i.units[0].devices.len(), MAX_RANGES);
    assert_eq!(i.units[1].specials.len(), MAX_SPECIALS);
    assert_eq!(i.memory.len(), MAX_MEMORY);
    assert_eq!(i.errors.len(), 4, "{:?}", i.errors);
    // Unknown blocks by the thousand: errors stop at the cap.
    let unknown = vec![vec![0x30, 0, 4, 0]; 5000];
    let i = Ivrs::parse(&ivrs(0, &unknown)).expect("parses");
    assert_eq!(i.errors.len(), MAX_ERRORS);
    assert!(i.errors[MAX_ERRORS - 1].contains("not recorded"));
}

/// An I/O APIC special entry (48h, variety 1): I/O APIC `id`, requester `source`.
fn io_apic(id: u8, source: u16) -> Vec<u8> {
    e8_id(ENTRY_SPECIAL, 0, 0, id, source, 1)
}

fn source(id: u8, segment: u16, requester: u16) -> IoApicSource {
    IoApicSource {
        id,
        segment,
        requester,
    }
}

#[test]
fn io_apic_sources_found_in_madt_order() {
    let i = Ivrs::parse(&valid()).expect("parses");
    // The desktop's I/O APICs 21h and 22h; the HPET entry (variety 2, handle 0) is not one.
    let want = vec![source(0x22, 0, 0x0001), source(0x21, 0, 0x00a0)];
    assert_eq!(i.io_apic_sources(&[0x22, 0x21, 0x22]), Ok(want));
    // An entry for an I/O APIC the MADT does not have is ignored.
    assert_eq!(i.io_apic_sources(&[0x21]).map(|v| v.len()), Ok(1));
    assert_eq!(i.io_apic_sources(&[]), Ok(vec![]));
}

#[test]
fn io_apic_sources_missing_one_is_an_error() {
    let i = Ivrs::parse(&valid()).expect("parses");
    let e = i.io_apic_sources(&[0x21, 0, 0x22, 5]).unwrap_err();
    assert!(
        e.contains("ID [0, 5]") && e.contains("name [33, 34]"),
        "{e}"
    );
    // Named only by the 10h of an IOMMU that a 40h also describes: the 40h is the one read.
    let t = ivrs(
        0,
        &[
            ivhd_bytes(TYPE_IVHD_10, 0, 2, 0xfd20_0000, &[io_apic(4, 0xa0)]),
            ivhd_bytes(TYPE_IVHD_40, 0, 2, 0xfd20_0000, &[]),
        ],
    );
    let i = Ivrs::parse(&t).expect("parses");
    let e = i.io_apic_sources(&[4]).unwrap_err();
    assert!(
        e.contains("ID [4]") && e.contains("no entry names an I/O APIC"),
        "{e}"
    );
}

#[test]
fn io_apic_sources_first_entry_wins_and_segment_is_the_ivhd_s() {
    let mut second = ivhd_bytes(
        TYPE_IVHD_11,
        0,
        0x42,
        0xfd30_0000,
        &[io_apic(9, 0x2001), io_apic(8, 0x20a0)],
    );
    second[16..18].copy_from_slice(&3u16.to_le_bytes());
    let t = ivrs(
        0,
        &[
            ivhd_bytes(TYPE_IVHD_11, 0, 2, 0xfd20_0000, &[io_apic(8, 0xa0)]),
            second,
        ],
    );
    let i = Ivrs::parse(&t).expect("parses");
    assert_eq!(i.units[1].segment, 3);
    assert_eq!(
        i.io_apic_sources(&[8, 9]),
        Ok(vec![source(8, 0, 0x00a0), source(9, 3, 0x2001)])
    );
}

#[test]
fn ivrs_ioapic_overrides_parse_as_linux_writes_them() {
    use super::parse_overrides;
    assert_eq!(
        parse_overrides("4@00:14.0,5@0003:20:1f.7"),
        Ok(vec![source(4, 0, 0x00a0), source(5, 3, 0x20ff)])
    );
    assert_eq!(parse_overrides(""), Ok(vec![]));
    for bad in [
        "4",
        "4@00:14",
        "x@00:14.0",
        "300@00:14.0",
        "4@00:20.0",
        "4@00:14.8",
        "4@100:14.0",
        "4@1:2:3:4.0",
        "4@:14.0",
        "4@00:14.0,5",
    ] {
        assert!(parse_overrides(bad).is_err(), "{bad} parsed");
    }
}

#[test]
fn ivrs_ioapic_overrides_take_the_place_of_the_entries() {
    use super::parse_overrides;
    let t = ivrs(
        0,
        &[ivhd_bytes(
            TYPE_IVHD_11,
            0,
            2,
            0xfd20_0000,
            &[io_apic(0x21, 0xa0)],
        )],
    );
    let i = Ivrs::parse(&t).expect("parses");
    // The MADT's I/O APIC 4 is named by no entry: an override makes it usable.
    assert!(i.io_apic_sources(&[4]).is_err());
    let o = parse_overrides("4@00:14.0").expect("parses");
    assert_eq!(
        i.io_apic_sources_with(&[4], &o),
        Ok(vec![source(4, 0, 0x00a0)])
    );
    // An entry the firmware got wrong is replaced.
    let o = parse_overrides("33@00:1f.0").expect("parses");
    assert_eq!(
        i.io_apic_sources_with(&[0x21], &o),
        Ok(vec![source(0x21, 0, 0x00f8)])
    );
}
