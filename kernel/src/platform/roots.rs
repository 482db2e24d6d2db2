//! Finding the PCI host bridges: every AML device whose `_HID` or `_CID` is `PNP0A08` (PCI
//! Express root) or `PNP0A03` (PCI root), with its `_SEG` (segment, default 0) and `_BBN`
//! (base bus number, default 0) (ACPI 6.5 §6.5.5-6.5.6; PCI Firmware 3.2 §4.1).
//!
//! A machine may have several root buses in one segment (QEMU's `pxb-pcie` adds bus 0x80,
//! multi-socket servers have one per socket); only firmware knows where they start, and
//! enumeration starts at each of them instead of scanning all 256 bus numbers. Without AML
//! the kernel falls back to the first bus of each ECAM window (or bus 0 for port I/O).

use alloc::string::String;
use alloc::vec::Vec;
use core::str::FromStr;

use ::acpi::aml::Interpreter;
use ::acpi::aml::namespace::{AmlName, NamespaceLevelKind};
use ::acpi::aml::object::Object;

use super::handler::KernelAcpi;

/// A root bus: where enumeration starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RootBus {
    /// PCI segment group.
    pub segment: u16,
    /// First bus number below the host bridge.
    pub bus: u8,
}

/// Compressed EISA ID of a 7-character PNP ID (ACPI 6.5 §6.1.5): three 5-bit letters and
/// four hex digits, stored little-endian as AML integers.
const fn eisa_id(id: &[u8; 7]) -> u64 {
    const fn hex(c: u8) -> u32 {
        match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'A'..=b'F' => (c - b'A' + 10) as u32,
            _ => 0,
        }
    }
    const fn l(c: u8) -> u32 {
        (c.wrapping_sub(0x40) & 0x1f) as u32
    }
    let v = (l(id[0]) << 26)
        | (l(id[1]) << 21)
        | (l(id[2]) << 16)
        | (hex(id[3]) << 12)
        | (hex(id[4]) << 8)
        | (hex(id[5]) << 4)
        | hex(id[6]);
    v.swap_bytes() as u64
}

const PCIE_ROOT: u64 = eisa_id(b"PNP0A08");
const _: () = assert!(
    PCIE_ROOT == 0x080A_D041,
    "EISA ID encoding (ACPI 6.5 §6.1.5)"
);
const PCI_ROOT: u64 = eisa_id(b"PNP0A03");

fn is_root_id(object: &Object) -> bool {
    match object {
        Object::Integer(v) => *v == PCIE_ROOT || *v == PCI_ROOT,
        Object::String(s) => s == "PNP0A08" || s == "PNP0A03",
        Object::Package(items) => items.iter().any(|i| is_root_id(i)),
        _ => false,
    }
}

fn evaluate(aml: &Interpreter<KernelAcpi>, path: &str) -> Option<Object> {
    let name = AmlName::from_str(path).ok()?;
    match aml.evaluate_if_present(name, Vec::new()) {
        Ok(Some(o)) => Some((*o).clone()),
        Ok(None) => None,
        Err(e) => {
            log::warn!("acpi: evaluating {path} failed: {e:?}");
            None
        }
    }
}

fn integer(aml: &Interpreter<KernelAcpi>, path: &str) -> Option<u64> {
    match evaluate(aml, path)? {
        Object::Integer(v) => Some(v),
        _ => {
            log::warn!("acpi: {path} is not an integer");
            None
        }
    }
}

/// The root buses the namespace describes, sorted, each with its AML device path (where its
/// `_PRT` lives); empty if it names none.
pub fn from_aml(aml: &Interpreter<KernelAcpi>) -> Vec<(RootBus, String)> {
    let mut devices: Vec<String> = Vec::new();
    let walk = aml.namespace.lock().traverse(|name, level| {
        if matches!(level.kind, NamespaceLevelKind::Device) {
            devices.push(name.as_string());
        }
        Ok(true)
    });
    if let Err(e) = walk {
        log::warn!("acpi: namespace walk failed: {e:?}");
    }
    let mut roots = Vec::new();
    for device in devices {
        let hid = evaluate(aml, &alloc::format!("{device}._HID"));
        let cid = evaluate(aml, &alloc::format!("{device}._CID"));
        if !hid.iter().chain(cid.iter()).any(is_root_id) {
            continue;
        }
        let segment = integer(aml, &alloc::format!("{device}._SEG")).unwrap_or(0);
        let bus = integer(aml, &alloc::format!("{device}._BBN")).unwrap_or(0);
        match (u16::try_from(segment), u8::try_from(bus)) {
            (Ok(segment), Ok(bus)) => {
                log::info!("acpi: host bridge {device}: segment {segment}, root bus {bus:#04x}");
                roots.push((RootBus { segment, bus }, device));
            }
            _ => log::warn!(
                "acpi: host bridge {device} has _SEG {segment:#x} / _BBN {bus:#x} out of range; ignored"
            ),
        }
    }
    roots.sort_unstable();
    roots.dedup_by(|a, b| a.0 == b.0);
    roots
}
