//! iasl's listing of an IVRS (`iasl -d ivrs.dat`), read back into the facts compared.

use super::{IvhdFacts, IvrsFacts, RangeFacts, SpecialFacts};

/// `[030h 0048   1]    Subtable Type : 10 [Hardware Definition Block]` → (name, value).
pub(crate) fn dsl_field(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_start();
    let line = match line.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.1,
        None => line,
    };
    let (name, value) = line.split_once(" : ")?;
    Some((name.trim(), value.trim()))
}

pub(crate) fn dsl_hex(value: &str) -> Option<u64> {
    u64::from_str_radix(value.split_whitespace().next()?, 16).ok()
}

/// The IVRS as iasl decodes it.
pub(crate) struct IvrsDsl {
    pub(crate) facts: IvrsFacts,
    /// iasl stopped at a block type it does not know (its type): our lists must then start
    /// with its.
    pub(crate) stopped: Option<u64>,
    /// IVHDs at base 0: iasl lists them, we drop them.
    pub(crate) dropped: usize,
    /// Device entries of a type the expansion here does not know (nothing expected of them).
    pub(crate) unknown_entries: usize,
}

/// One device entry as iasl prints it: type, device ID, setting, the 8-byte fields.
#[derive(Default)]
struct Entry {
    ty: u64,
    id: u64,
    setting: u64,
    source: Option<u64>,
    handle: u64,
    variety: u64,
}

/// Expands iasl's entry list into ranges and specials, by the rules of the AMD IOMMU spec
/// (doc 48882 §5.2.2.2): 01h all, 02h/46h one device, 42h one with an alias, 03h/47h/43h
/// start a range (43h with an alias) that the next 04h ends; 48h a special device.
fn expand(entries: &[Entry], unknown: &mut usize) -> (Vec<RangeFacts>, Vec<SpecialFacts>) {
    let mut ranges = Vec::new();
    let mut specials = Vec::new();
    let mut open: Option<(u64, u64, Option<u64>)> = None;
    for e in entries {
        match e.ty {
            0x00 | 0xf0 => {}
            0x01 => ranges.push((0, 0xffff, e.setting, None)),
            0x02 | 0x46 => ranges.push((e.id, e.id, e.setting, None)),
            0x42 => ranges.push((e.id, e.id, e.setting, e.source)),
            0x03 | 0x47 => open = Some((e.id, e.setting, None)),
            0x43 => open = Some((e.id, e.setting, e.source)),
            0x04 => {
                if let Some((first, setting, alias)) = open.take()
                    && e.id >= first
                {
                    ranges.push((first, e.id, setting, alias));
                }
            }
            0x48 => specials.push([e.variety, e.handle, e.source.unwrap_or(0), e.setting]),
            _ => *unknown += 1,
        }
    }
    (ranges, specials)
}

/// A block as iasl prints it: its type, named fields and device entries.
type Block = (u64, Vec<(String, u64)>, Vec<Entry>);

pub(crate) fn ivrs_from_dsl(text: &str) -> Option<IvrsDsl> {
    let mut out = IvrsDsl {
        facts: IvrsFacts::default(),
        stopped: None,
        dropped: 0,
        unknown_entries: 0,
    };
    // The block being read: its type, named fields and entries.
    let mut block: Option<Block> = None;
    let mut any = false;
    let finish = |block: Option<Block>, out: &mut IvrsDsl| -> Option<()> {
        let Some((ty, fields, entries)) = block else {
            return Some(());
        };
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        match ty {
            0x10 | 0x11 | 0x40 => {
                let base = get("Base Address")?;
                if base == 0 {
                    out.dropped += 1;
                    return Some(());
                }
                let (devices, specials) = expand(&entries, &mut out.unknown_entries);
                out.facts.units.push(IvhdFacts {
                    head: [
                        ty,
                        get("Flags")?,
                        get("DeviceId")?,
                        base,
                        get("PCI Segment Group")?,
                    ],
                    devices,
                    specials,
                });
            }
            0x20..=0x22 => {
                let id = get("DeviceId")?;
                let (first, last) = match ty {
                    0x20 => (0, 0xffff),
                    0x21 => (id, id),
                    _ => (id, get("Auxiliary Data")?),
                };
                out.facts.memory.push([
                    ty,
                    get("Flags")?,
                    first,
                    last,
                    get("Start Address")?,
                    get("Memory Length")?,
                ]);
            }
            _ => {}
        }
        Some(())
    };
    for line in text.lines() {
        if line.starts_with("Raw Table Data") {
            break;
        }
        if let Some(rest) = line
            .trim()
            .strip_prefix("**** Unknown IVRS subtable type 0x")
        {
            // The block header iasl printed before giving up is not a decoded block.
            block = None;
            out.stopped = u64::from_str_radix(rest.trim(), 16).ok().or(Some(u64::MAX));
            break;
        }
        let Some((name, value)) = dsl_field(line) else {
            continue;
        };
        if name == "Signature" {
            any = true;
            continue;
        }
        let Some(v) = dsl_hex(value) else { continue };
        match (name, block.as_mut()) {
            ("Subtable Type", _) => {
                finish(block.take(), &mut out)?;
                block = Some((v, Vec::new(), Vec::new()));
            }
            ("Entry Type", Some((_, _, entries))) => entries.push(Entry {
                ty: v,
                ..Entry::default()
            }),
            (_, Some((_, fields, entries))) => match (name, entries.last_mut()) {
                ("Device ID", Some(e)) => e.id = v,
                ("Data Setting", Some(e)) => e.setting = v,
                ("Source Used Device ID", Some(e)) => e.source = Some(v),
                ("Handle", Some(e)) => e.handle = v,
                ("Variety", Some(e)) => e.variety = v,
                (_, Some(_)) => {}
                (_, None) => fields.push((name.to_string(), v)),
            },
            (_, None) => {}
        }
    }
    finish(block, &mut out)?;
    any.then_some(out)
}
