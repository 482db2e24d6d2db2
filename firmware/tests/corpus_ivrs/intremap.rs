//! Interrupt remapping's view of the I/O APICs (`Ivrs::io_apic_sources`, the probe's
//! `ivrs.intremap`), worked out again from iasl's decoding of the IVRS and the MADT.

use serde_json::Value;

use super::dsl::{dsl_field, dsl_hex};
use super::{IvhdFacts, num};

/// Each I/O APIC's ID, segment and requester ID; or, when not all of them are named, why
/// (the probe's message) or which are missing (the reference).
pub(crate) type Sources<E> = Result<Vec<[u64; 3]>, E>;

/// The probe's `intremap` object; `None` when it is neither `io_apics` nor `error`.
pub(crate) fn intremap_from_json(ivrs: &Value) -> Option<Sources<String>> {
    let v = ivrs.get("intremap")?;
    if let Some(e) = v.get("error") {
        return Some(Err(e.as_str()?.to_string()));
    }
    v.get("io_apics")?
        .as_array()?
        .iter()
        .map(|a| Some([num(a, "id")?, num(a, "segment")?, num(a, "requester")?]))
        .collect::<Option<_>>()
        .map(Ok)
}

/// The I/O APIC IDs of iasl's MADT listing (subtables of type 1, `I/O Apic ID`), in table
/// order; `None` when it is no MADT listing.
pub(crate) fn madt_io_apic_ids(text: &str) -> Option<Vec<u64>> {
    let mut ids = Vec::new();
    let mut subtable: Option<u64> = None;
    let mut any = false;
    for line in text.lines() {
        if line.starts_with("Raw Table Data") {
            break;
        }
        let Some((name, value)) = dsl_field(line) else {
            continue;
        };
        match name {
            "Signature" => any |= value.starts_with("\"APIC\""),
            "Subtable Type" => subtable = dsl_hex(value),
            "I/O Apic ID" if subtable == Some(1) => ids.push(dsl_hex(value)?),
            _ => {}
        }
    }
    any.then_some(ids)
}

/// The reference: one IVHD per IOMMU (same device ID, base and segment), the highest type
/// (40h over 11h over 10h), in the order each IOMMU first appears; then every special entry
/// of variety 1 whose handle is a MADT I/O APIC ID gives that I/O APIC its requester ID
/// and the IVHD's segment (AMD IOMMU spec 48882 §5.2.2.2), the first entry counting. The
/// answer is in the order of `ioapic_ids`, once per ID; `Err` lists the IDs no entry names.
pub(crate) fn intremap_reference(units: &[IvhdFacts], ioapic_ids: &[u64]) -> Sources<Vec<u64>> {
    let rank = |ty: u64| [0x10, 0x11, 0x40].iter().position(|t| *t == ty);
    let mut picked: Vec<&IvhdFacts> = Vec::new();
    for u in units {
        match picked.iter_mut().find(|p| p.head[2..] == u.head[2..]) {
            Some(p) if rank(u.head[0]) > rank(p.head[0]) => *p = u,
            Some(_) => {}
            None => picked.push(u),
        }
    }
    let named = |id: u64| {
        picked.iter().find_map(|u| {
            u.specials
                .iter()
                .find(|[variety, handle, ..]| *variety == 1 && *handle == id)
                .map(|s| [id, u.head[4], s[2]])
        })
    };
    let mut found: Vec<[u64; 3]> = Vec::new();
    let mut missing: Vec<u64> = Vec::new();
    for &id in ioapic_ids {
        match named(id) {
            Some(f) if !found.contains(&f) => found.push(f),
            None if !missing.contains(&id) => missing.push(id),
            _ => {}
        }
    }
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(missing)
    }
}

/// Whether the probe's answer is the reference's: the same list, or a refusal whose
/// message names the same missing IDs (as `ID [4, 5]`).
pub(crate) fn same(ours: &Sources<String>, reference: &Sources<Vec<u64>>) -> bool {
    match (ours, reference) {
        (Ok(a), Ok(b)) => a == b,
        (Err(message), Err(missing)) => message.contains(&format!("ID {missing:?}")),
        _ => false,
    }
}
