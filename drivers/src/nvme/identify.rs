//! Identify data (NVM Express 1.4 §5.15): the Identify Controller, Identify Namespace and
//! active namespace list fields the driver uses, parsed from the 4 KiB answers and checked
//! (a device's answer is a claim to validate).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The Identify Controller fields used (§5.15.2, Identify Controller data structure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ControllerData {
    pub(super) model: String,
    pub(super) serial: String,
    pub(super) firmware: String,
    pub(super) max_transfer: Option<u64>,
    pub(super) namespaces: u32,
}

/// An ASCII field (NVMe Base 2.0 §1.5: ASCII, space padded), trailing spaces and NULs
/// removed. What is not printable ASCII becomes `?`: the text goes to the console, where a
/// device's control bytes or escape sequences would act on the terminal.
fn text(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i + 1);
    bytes[..end]
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    u64::from(le32(bytes, at)) | u64::from(le32(bytes, at + 4)) << 32
}

/// Parses Identify Controller data; `cap` gives the page size MDTS counts in.
pub(super) fn parse_controller(data: &[u8], cap: u64) -> Result<ControllerData, String> {
    if data.len() < 4096 {
        return Err("short Identify Controller data".into());
    }
    // MDTS (byte 77): 2^n units of the minimum page size; 0 means no limit.
    let mdts = data[77];
    let page = 4096u64 << ((cap >> 48) & 0xf);
    let max_transfer = (mdts != 0).then(|| page << mdts.min(32));
    // SQES (512) and CQES (513): required size in 3:0, maximum in 7:4, log2 bytes.
    let (sqes, cqes) = (data[512], data[513]);
    if !(sqes & 0xf <= 6 && sqes >> 4 >= 6) || !(cqes & 0xf <= 4 && cqes >> 4 >= 4) {
        return Err(format!(
            "entry sizes unsupported: SQES {sqes:#x}, CQES {cqes:#x} (need 64 and 16 bytes)"
        ));
    }
    Ok(ControllerData {
        serial: text(&data[4..24]),
        model: text(&data[24..64]),
        firmware: text(&data[64..72]),
        max_transfer,
        namespaces: le32(data, 516),
    })
}

/// Parses Identify Namespace data (§5.15.2, Identify Namespace data structure): (NSZE, block
/// size).
pub(super) fn parse_namespace(data: &[u8]) -> Result<(u64, u32), String> {
    if data.len() < 4096 {
        return Err("short Identify Namespace data".into());
    }
    let nsze = le64(data, 0);
    if nsze == 0 {
        return Err("not active (NSZE 0)".into());
    }
    // FLBAS (byte 26) bits 3:0 pick one of NLBAF + 1 (byte 25, 0's based) LBA formats at
    // byte 128 + 4n: MS in 15:0, LBADS (log2 of the block size) in 23:16.
    let (nlbaf, flbas) = (data[25], data[26]);
    let index = flbas & 0xf;
    if index > nlbaf {
        return Err(format!(
            "FLBAS {flbas:#x} names format {index} of {}",
            nlbaf + 1
        ));
    }
    let format = le32(data, 128 + 4 * usize::from(index));
    let (ms, lbads) = (format & 0xffff, (format >> 16) & 0xff);
    if ms != 0 {
        return Err(format!("LBA format {index} carries {ms} bytes of metadata"));
    }
    if !(9..=16).contains(&lbads) {
        return Err(format!("LBA format {index}: LBADS {lbads}"));
    }
    if nsze.checked_mul(1 << lbads).is_none() {
        return Err(format!(
            "NSZE {nsze:#x} blocks of {} bytes overflow 64 bits",
            1u64 << lbads
        ));
    }
    Ok((nsze, 1 << lbads))
}

/// Parses an active namespace list (§5.15.4): NSIDs in ascending order, each above `after`,
/// ended by the first 0 entry. Anything else is a device error.
pub(super) fn parse_namespace_list(data: &[u8], after: u32) -> Result<Vec<u32>, String> {
    if data.len() < 4096 {
        return Err("short active namespace list".into());
    }
    let mut out = Vec::new();
    let mut previous = after;
    for at in (0..4096).step_by(4) {
        let nsid = le32(data, at);
        if nsid == 0 {
            break;
        }
        if nsid <= previous || nsid == u32::MAX {
            return Err(format!(
                "active namespace list: NSID {nsid:#x} after {previous:#x} (not ascending)"
            ));
        }
        out.push(nsid);
        previous = nsid;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_text_reaches_the_console_printable() {
        assert_eq!(text(b"QEMU NVMe Ctrl    \0\0"), "QEMU NVMe Ctrl");
        // An escape sequence that would clear the screen, a newline, a byte above ASCII.
        assert_eq!(text(b"\x1b[2Jevil\nname\xff  "), "?[2Jevil?name?");
        assert_eq!(text(b"    "), "");
        assert_eq!(text(b""), "");
    }

    fn controller_page() -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        d[4..24].copy_from_slice(b"deadbeef            ");
        d[24..64].copy_from_slice(b"QEMU NVMe Ctrl                          ");
        d[64..72].copy_from_slice(b"10.0.2  ");
        d[77] = 7;
        d[512] = 0x66;
        d[513] = 0x44;
        d[516] = 1;
        d
    }

    #[test]
    fn identify_controller_fields() {
        let c = parse_controller(&controller_page(), 0).unwrap();
        assert_eq!(c.serial, "deadbeef");
        assert_eq!(c.model, "QEMU NVMe Ctrl");
        assert_eq!(c.firmware, "10.0.2");
        assert_eq!(c.max_transfer, Some(512 * 1024));
        assert_eq!(c.namespaces, 1);
        let mut d = controller_page();
        d[77] = 0;
        assert_eq!(parse_controller(&d, 0).unwrap().max_transfer, None);
        d[512] = 0x77; // requires 128-byte entries
        assert!(parse_controller(&d, 0).unwrap_err().contains("SQES"));
    }

    #[test]
    fn identify_namespace_fields() {
        let mut d = vec![0u8; 4096];
        d[0..8].copy_from_slice(&8192u64.to_le_bytes());
        d[25] = 1; // two formats
        d[26] = 1; // the second
        d[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
        d[132..136].copy_from_slice(&(12u32 << 16).to_le_bytes());
        assert_eq!(parse_namespace(&d).unwrap(), (8192, 4096));
        d[26] = 0;
        assert_eq!(parse_namespace(&d).unwrap(), (8192, 512));
        d[26] = 2;
        assert!(parse_namespace(&d).is_err());
        d[26] = 0;
        d[128] = 8; // 8 bytes of metadata
        assert!(parse_namespace(&d).unwrap_err().contains("metadata"));
        d[0..8].copy_from_slice(&0u64.to_le_bytes());
        assert!(parse_namespace(&d).unwrap_err().contains("not active"));
    }

    #[test]
    fn active_namespace_lists() {
        let mut d = vec![0u8; 4096];
        assert_eq!(parse_namespace_list(&d, 0).unwrap(), Vec::<u32>::new());
        for (i, nsid) in [1u32, 2, 7].iter().enumerate() {
            d[4 * i..4 * i + 4].copy_from_slice(&nsid.to_le_bytes());
        }
        assert_eq!(parse_namespace_list(&d, 0).unwrap(), [1, 2, 7]);
        // Everything must be above the NSID asked from, and ascending.
        assert!(
            parse_namespace_list(&d, 2)
                .unwrap_err()
                .contains("not ascending")
        );
        d[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(parse_namespace_list(&d, 0).is_err());
        // A full page: 1024 entries.
        let full: Vec<u8> = (1u32..=1024).flat_map(u32::to_le_bytes).collect();
        assert_eq!(parse_namespace_list(&full, 0).unwrap().len(), 1024);
    }
}
