//! A look at the AML's bytes without running it: how many devices can be host bridges.
//!
//! Design note. Loading the namespace (ACPICA) is the largest piece of work a boot can do, and
//! on most machines the only thing the boot needs from it is the list of host bridges, to know
//! whether the MCFG's root buses are all there is. This module answers that question, from
//! above, by reading the definition blocks (DSDT and SSDTs) as bytes:
//!
//! - a host bridge says so with `_HID` or `_CID` `PNP0A03` (PCI) or `PNP0A08` (PCI Express),
//!   or `ACPI0016` (CXL) (PCI Firmware 3.3 §4.1.2; ACPI 6.5 §6.1.5), as an `EISAID` (a
//!   `DWordConst`, opcode 0x0C, ACPI 6.5 §20.2.3) or a string (`StringPrefix`, 0x0D);
//! - IDs held by exactly the same `Device` packages (`DeviceOp`, 0x5B 0x82, with its
//!   `PkgLength`, §20.2.4 and §20.2.5.2; every byte pair that decodes as one inside the block
//!   is taken for one) count once, and an ID no package holds counts on its own;
//! - `Load` (0x5B 0x20) and `LoadTable` (0x5B 0x1F) anywhere mean tables may appear at run
//!   time, which bytes cannot see.
//!
//! The count is an upper bound for the host bridges whose IDs are constants. Each such bridge's
//! ID lies inside its own package, and every real package is among those taken, so two IDs of
//! two real bridges are never held by the same set of packages; a byte pattern that only looks
//! like a package or an ID can split one device's IDs apart or add one, never merge two. (Taking
//! the innermost package alone would not do: a false package that starts inside one bridge
//! and ends inside the next could be the innermost holder of both bridges' IDs.) What bytes cannot bound is a bridge whose ID AML computes, or one in a table loaded
//! at run time; [`Scan::loads_tables`] flags the second, and the first is documented as the
//! limit of this shortcut (`docs/firmware.md`). The corpus test checks the bound against
//! ACPICA's own list on every machine.

use alloc::vec::Vec;

/// Bytes of a definition block's header (ACPI 6.5 §5.2.6).
const HEADER: usize = 36;

/// Most (ID, package) pairs [`scan_block`] compares before it counts every ID on its own
/// (what bounds its time and memory: a quarter of a million pairs, 2 MiB at most). The
/// largest block of the 162 machines in the corpus has 7332 (12 IDs, 611 packages).
const MAX_PAIRS: usize = 1 << 18;

/// The IDs a host bridge carries, as AML encodes them.
const IDS: [&[u8]; 5] = [
    // EISAID ("PNP0A03") and EISAID ("PNP0A08"): DWordConst 0x030AD041, 0x080AD041.
    &[0x0C, 0x41, 0xD0, 0x0A, 0x03],
    &[0x0C, 0x41, 0xD0, 0x0A, 0x08],
    b"\x0DPNP0A03\x00",
    b"\x0DPNP0A08\x00",
    b"\x0DACPI0016\x00",
];

/// What the bytes say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Devices (or stray IDs) that may be host bridges: at least as many as there are host
    /// bridges with constant IDs.
    pub host_bridges: usize,
    /// Whether any block may load a table at run time (`Load`, `LoadTable`).
    pub loads_tables: bool,
}

/// Reads `blocks` (whole tables, headers included: the DSDT and every SSDT).
pub fn scan<'a>(blocks: impl IntoIterator<Item = &'a [u8]>) -> Scan {
    let mut out = Scan::default();
    for block in blocks {
        let declared = block
            .get(4..8)
            .map_or(0, |l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize);
        let end = declared.min(block.len());
        let Some(aml) = block.get(HEADER..end) else {
            continue;
        };
        let one = scan_block(aml);
        out.host_bridges += one.host_bridges;
        out.loads_tables |= one.loads_tables;
    }
    out
}

fn scan_block(aml: &[u8]) -> Scan {
    // Every plausible Device package: (start, end) of its PkgLength's extent.
    let mut devices: Vec<(usize, usize)> = Vec::new();
    let mut loads_tables = false;
    let mut ids: Vec<usize> = Vec::new();
    for (i, &byte) in aml.iter().enumerate() {
        match byte {
            0x5B => match aml.get(i + 1) {
                Some(0x82) => {
                    if let Some(len) = pkg_length(&aml[i + 2..]) {
                        let start = i + 2;
                        if let Some(end) = start.checked_add(len).filter(|e| *e <= aml.len()) {
                            devices.push((start, end));
                        }
                    }
                }
                Some(0x20 | 0x1F) => loads_tables = true,
                _ => {}
            },
            // Only a DWordConst or a String can be an ID.
            0x0C | 0x0D if IDS.iter().any(|id| aml[i..].starts_with(id)) => ids.push(i),
            _ => {}
        }
    }
    // Grouping IDs by the packages that hold them costs IDs x packages (and as much memory
    // for a block built to nest every package around every ID). Real tables are far below
    // this; past it, every ID counts on its own: still an upper bound, found in one step.
    if ids.len().saturating_mul(devices.len()) > MAX_PAIRS {
        return Scan {
            host_bridges: ids.len(),
            loads_tables,
        };
    }
    // IDs held by exactly the same packages count once: they are in the same real device
    // (every real device's package is among `devices`, so two IDs of different real devices
    // differ at least there). An ID no package holds counts on its own.
    let mut sets: Vec<Vec<usize>> = Vec::with_capacity(ids.len());
    let mut stray = 0;
    for &at in &ids {
        let holders: Vec<usize> = devices
            .iter()
            .enumerate()
            .filter(|(_, (s, e))| *s <= at && at < *e)
            .map(|(k, _)| k)
            .collect();
        if holders.is_empty() {
            stray += 1;
        } else {
            sets.push(holders);
        }
    }
    // Equal sets side by side, then one of each: n log n comparisons, not n squared.
    sets.sort_unstable();
    sets.dedup();
    Scan {
        host_bridges: sets.len() + stray,
        loads_tables,
    }
}

/// The value of the PkgLength at the start of `b` (ACPI 6.5 §20.2.4), when it is well formed.
fn pkg_length(b: &[u8]) -> Option<usize> {
    let lead = *b.first()?;
    let follow = usize::from(lead >> 6);
    if follow == 0 {
        return Some(usize::from(lead & 0x3F));
    }
    // With following bytes, bits 5:4 of the lead byte are reserved (zero).
    if lead & 0x30 != 0 {
        return None;
    }
    let mut len = usize::from(lead & 0x0F);
    for k in 0..follow {
        len |= usize::from(*b.get(1 + k)?) << (4 + 8 * k);
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A definition block around `aml`.
    fn block(aml: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; HEADER];
        t[..4].copy_from_slice(b"DSDT");
        t.extend_from_slice(aml);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t
    }

    /// `Name (_HID, EISAID ("PNP0A08"))` and `Name (_CID, EISAID ("PNP0A03"))`.
    fn pci_ids() -> Vec<u8> {
        let mut b = vec![0x08];
        b.extend_from_slice(b"_HID");
        b.extend_from_slice(&[0x0C, 0x41, 0xD0, 0x0A, 0x08]);
        b.push(0x08);
        b.extend_from_slice(b"_CID");
        b.extend_from_slice(&[0x0C, 0x41, 0xD0, 0x0A, 0x03]);
        b
    }

    #[test]
    fn a_block_built_to_nest_every_package_around_every_id_is_bounded_quickly() {
        // N packages, each reaching to the end of the block, each followed by an ID: every
        // ID is held by a different set (N x N pairs, N x N / 2 holders kept before the
        // limit). Counted one per ID, at once.
        const N: usize = 3000;
        let mut aml = Vec::new();
        for _ in 0..N {
            aml.extend_from_slice(&[0x5B, 0x82, 0, 0, 0, 0]);
            aml.extend_from_slice(&[0x0C, 0x41, 0xD0, 0x0A, 0x08]);
        }
        let total = aml.len();
        for k in 0..N {
            // A 4-byte PkgLength (lead 0xC0 | low nibble) from after the opcode to the end.
            let start = k * 11 + 2;
            let len = total - start;
            aml[start] = 0xC0 | (len & 0x0F) as u8;
            aml[start + 1] = (len >> 4) as u8;
            aml[start + 2] = (len >> 12) as u8;
            aml[start + 3] = (len >> 20) as u8;
        }
        let t = block(&aml);
        let started = std::time::Instant::now();
        assert_eq!(scan([t.as_slice()]).host_bridges, N);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn one_bridge_with_two_ids_is_one() {
        let mut body = pci_ids();
        // A child device of the bridge (a slot) with its own, unrelated _ADR.
        body.extend(device(b"S00_", &[0x08, b'_', b'A', b'D', b'R', 0x00]));
        let t = block(&device(b"PCI0", &body));
        assert_eq!(
            scan([t.as_slice()]),
            Scan {
                host_bridges: 1,
                loads_tables: false
            }
        );
    }

    #[test]
    fn two_bridges_in_two_tables_and_a_string_id() {
        let a = block(&device(b"PCI0", &pci_ids()));
        let mut body = vec![0x08];
        body.extend_from_slice(b"_HID");
        body.extend_from_slice(b"\x0DACPI0016\x00");
        body.extend(vec![0xA3; 100]); // long enough for a two-byte PkgLength
        let b = block(&device(b"CXL0", &body));
        assert_eq!(scan([a.as_slice(), b.as_slice()]).host_bridges, 2);
    }

    #[test]
    fn ids_outside_devices_and_table_loads_are_counted_conservatively() {
        let mut aml = device(b"PCI0", &pci_ids());
        // A Method returning the ID, outside any device: counted on its own.
        aml.extend_from_slice(&[0x14, 0x0B]);
        aml.extend_from_slice(b"MHID");
        aml.extend_from_slice(&[0x00, 0xA4, 0x0C, 0x41, 0xD0, 0x0A, 0x08]);
        aml.extend_from_slice(&[0x5B, 0x20]); // Load
        let t = block(&aml);
        assert_eq!(
            scan([t.as_slice()]),
            Scan {
                host_bridges: 2,
                loads_tables: true
            }
        );
    }

    #[test]
    fn a_false_package_across_two_bridges_does_not_merge_them() {
        // PCI0's body ends with bytes that decode as a Device whose package runs past PCI0's
        // end into PCI1 (5B 82, PkgLength 0x20), holding PCI0's ID and then PCI1's.
        let mut body0 = vec![0xA3; 100]; // PCI0 larger than the false package
        body0.extend_from_slice(&[0x5B, 0x82, 0x20]);
        body0.extend_from_slice(&[0x08]);
        body0.extend_from_slice(b"_HID");
        body0.extend_from_slice(&[0x0C, 0x41, 0xD0, 0x0A, 0x08]);
        let mut body1 = vec![0x08];
        body1.extend_from_slice(b"_HID");
        body1.extend_from_slice(&[0x0C, 0x41, 0xD0, 0x0A, 0x08]);
        body1.extend(vec![0xA3; 200]);
        let mut aml = device(b"PCI0", &body0);
        aml.extend(device(b"PCI1", &body1));
        let t = block(&aml);
        assert_eq!(scan([t.as_slice()]).host_bridges, 2);
    }

    /// A generated device: its filler bytes, whether it is a host bridge, its children.
    #[derive(Clone, Debug)]
    struct Node {
        filler: Vec<u8>,
        bridge: Option<u8>,
        children: Vec<Node>,
    }

    fn node() -> impl proptest::strategy::Strategy<Value = Node> {
        use proptest::prelude::*;
        let leaf = (
            proptest::collection::vec(any::<u8>(), 0..80),
            proptest::option::of(0u8..4),
        )
            .prop_map(|(filler, bridge)| Node {
                filler,
                bridge,
                children: Vec::new(),
            });
        leaf.prop_recursive(3, 24, 4, |inner| {
            (
                proptest::collection::vec(any::<u8>(), 0..80),
                proptest::option::of(0u8..4),
                proptest::collection::vec(inner, 0..4),
            )
                .prop_map(|(filler, bridge, children)| Node {
                    filler,
                    bridge,
                    children,
                })
        })
    }

    /// The node as AML, and how many host bridges it holds.
    fn encode(n: &Node) -> (Vec<u8>, usize) {
        let mut body = Vec::new();
        let mut bridges = 0;
        if let Some(kind) = n.bridge {
            bridges += 1;
            body.push(0x08);
            body.extend_from_slice(b"_HID");
            body.extend_from_slice(IDS[usize::from(kind) % IDS.len()]);
            if kind == 0 {
                body.push(0x08);
                body.extend_from_slice(b"_CID");
                body.extend_from_slice(IDS[0]);
            }
        }
        body.extend_from_slice(&n.filler);
        for c in &n.children {
            let (aml, b) = encode(c);
            body.extend(aml);
            bridges += b;
        }
        (device(b"DEV_", &body), bridges)
    }

    /// `Device (<name>) { <body> }`, with a PkgLength of one to three bytes.
    fn device(name: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let inner = 4 + body.len();
        let mut out = vec![0x5B, 0x82];
        if inner + 1 < 0x40 {
            out.push((inner + 1) as u8);
        } else if inner + 2 < 1 << 12 {
            let len = inner + 2;
            out.push(0x40 | (len & 0x0F) as u8);
            out.push((len >> 4) as u8);
        } else {
            let len = inner + 3;
            out.push(0x80 | (len & 0x0F) as u8);
            out.push((len >> 4) as u8);
            out.push((len >> 12) as u8);
        }
        out.extend_from_slice(name);
        out.extend_from_slice(body);
        out
    }

    proptest::proptest! {
        /// Whatever bytes surround them, the scan never counts fewer host bridges than a
        /// device tree holds (unless it says tables may be loaded at run time).
        #[test]
        fn never_fewer_than_the_bridges_a_tree_holds(
            roots in proptest::collection::vec(node(), 1..4)
        ) {
            let mut aml = Vec::new();
            let mut bridges = 0;
            for r in &roots {
                let (a, b) = encode(r);
                aml.extend(a);
                bridges += b;
            }
            let t = block(&aml);
            let s = scan([t.as_slice()]);
            proptest::prop_assert!(s.loads_tables || s.host_bridges >= bridges,
                "{} counted, {} in the tree", s.host_bridges, bridges);
        }
    }

    #[test]
    fn truncated_and_garbage_blocks_do_not_panic() {
        let t = block(&device(b"PCI0", &pci_ids()));
        for cut in 0..t.len() {
            let _ = scan([&t[..cut]]);
        }
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        let _ = scan([garbage.as_slice()]);
        assert_eq!(pkg_length(&[0x05]), Some(5));
        assert_eq!(pkg_length(&[0x41, 0x02]), Some(0x21));
        assert_eq!(pkg_length(&[0x71, 0x02]), None, "reserved bits set");
        assert_eq!(pkg_length(&[0x81, 0x02]), None, "a byte missing");
    }
}
