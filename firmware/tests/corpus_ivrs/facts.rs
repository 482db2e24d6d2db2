//! What the probe's JSON and iasl's listing say about an IVRS, in one shape.

use serde_json::Value;

/// A device range: first, last, DTE setting, alias (`None`: no alias).
pub(crate) type RangeFacts = (u64, u64, u64, Option<u64>);
/// A special device: variety, handle, source requester ID, DTE setting.
pub(crate) type SpecialFacts = [u64; 4];

/// An IVHD: type, flags, device ID, base, segment; its ranges and special devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IvhdFacts {
    pub(crate) head: [u64; 5],
    pub(crate) devices: Vec<RangeFacts>,
    pub(crate) specials: Vec<SpecialFacts>,
}

/// An IVMD: type, flags, first and last requester ID, start, length.
pub(crate) type IvmdFacts = [u64; 6];

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct IvrsFacts {
    pub(crate) units: Vec<IvhdFacts>,
    pub(crate) memory: Vec<IvmdFacts>,
}

pub(crate) fn num(v: &Value, key: &str) -> Option<u64> {
    v.get(key)?.as_u64()
}

pub(crate) fn ivrs_from_json(i: &Value) -> Option<IvrsFacts> {
    let unit = |u: &Value| -> Option<IvhdFacts> {
        Some(IvhdFacts {
            head: [
                num(u, "type")?,
                num(u, "flags")?,
                num(u, "device_id")?,
                num(u, "base")?,
                num(u, "segment")?,
            ],
            devices: u
                .get("devices")?
                .as_array()?
                .iter()
                .map(|d| {
                    Some((
                        num(d, "first")?,
                        num(d, "last")?,
                        num(d, "settings")?,
                        d.get("alias")?.as_u64(),
                    ))
                })
                .collect::<Option<_>>()?,
            specials: u
                .get("specials")?
                .as_array()?
                .iter()
                .map(|s| {
                    Some([
                        num(s, "variety")?,
                        num(s, "handle")?,
                        num(s, "source")?,
                        num(s, "settings")?,
                    ])
                })
                .collect::<Option<_>>()?,
        })
    };
    Some(IvrsFacts {
        units: i
            .get("units")?
            .as_array()?
            .iter()
            .map(unit)
            .collect::<Option<_>>()?,
        memory: i
            .get("memory")?
            .as_array()?
            .iter()
            .map(|m| {
                Some([
                    num(m, "type")?,
                    num(m, "flags")?,
                    num(m, "first")?,
                    num(m, "last")?,
                    num(m, "start")?,
                    num(m, "length")?,
                ])
            })
            .collect::<Option<_>>()?,
    })
}
