//! `_OSC` of a PCI host bridge: which PCI Express features the operating system may control
//! natively (PCI Firmware 3.3 §4.5).
//!
//! The kernel asks for native PCI Express hot-plug (it runs slots itself, `drivers::pciehp`)
//! together with the PCI Express Capability structure, which hot-plug needs, and says it
//! supports extended configuration space (ECAM) and MSI. Firmware answers with the controls it
//! grants. Whatever it keeps stays firmware's: a slot whose hot-plug firmware kept (ACPI
//! hot-plug, QEMU's q35 default) is left alone by `pciehp`, as Linux leaves it.
//!
//! A host bridge without `_OSC` grants nothing (again as Linux reads it): its slots are
//! firmware's. The request is made once, without the query flag: asking is taking.
//!
//! Building the arguments and reading the answer are pure (host-tested here); evaluating the
//! method is [`super::routing`]'s.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::engine::Value;

/// The PCI host bridge `_OSC` UUID, 33DB4D5B-1FF7-401C-9657-7441C03DD766 (PCI Firmware 3.3
/// §4.5.1), in the byte order ACPI's `ToUUID` gives.
pub const PCI_HOST_BRIDGE_UUID: [u8; 16] = [
    0x5b, 0x4d, 0xdb, 0x33, 0xf7, 0x1f, 0x1c, 0x40, 0x96, 0x57, 0x74, 0x41, 0xc0, 0x3d, 0xd7, 0x66,
];
/// Revision 1 of the PCI `_OSC` interface.
pub const REVISION: u64 = 1;

/// Support Field (DWORD 2), PCI Firmware 3.3 §4.5.1, Table 4-4.
pub mod support {
    /// Bit 0: Extended PCI Config operation regions (ECAM).
    pub const EXTENDED_CONFIG: u32 = 1 << 0;
    /// Bit 4: MSI.
    pub const MSI: u32 = 1 << 4;
}

/// Control Field (DWORD 3), PCI Firmware 3.3 §4.5.1, Table 4-5.
pub mod control {
    /// Bit 0: PCI Express Native Hot Plug control.
    pub const NATIVE_HOT_PLUG: u32 = 1 << 0;
    /// Bit 4: PCI Express Capability Structure control.
    pub const CAPABILITY_STRUCTURE: u32 = 1 << 4;
}

/// Status bits of DWORD 1 in the answer (ACPI 6.5 §6.2.11, Table 6.16).
pub mod status {
    /// Bit 1: _OSC failure.
    pub const FAILURE: u32 = 1 << 1;
    /// Bit 2: unrecognised UUID.
    pub const UNRECOGNISED_UUID: u32 = 1 << 2;
    /// Bit 3: unrecognised revision.
    pub const UNRECOGNISED_REVISION: u32 = 1 << 3;
    /// Bit 4: capabilities masked (firmware granted less than asked).
    pub const CAPABILITIES_MASKED: u32 = 1 << 4;
}

/// What the kernel supports.
pub const SUPPORT: u32 = support::EXTENDED_CONFIG | support::MSI;
/// What the kernel asks to control.
pub const REQUEST: u32 = control::NATIVE_HOT_PLUG | control::CAPABILITY_STRUCTURE;

/// The four `_OSC` arguments: UUID, revision, DWORD count, and the capabilities buffer
/// (status 0 — a request, not a query —, support, control).
pub fn arguments(support: u32, control: u32) -> [Value; 4] {
    let mut caps = Vec::with_capacity(12);
    for dword in [0u32, support, control] {
        caps.extend_from_slice(&dword.to_le_bytes());
    }
    [
        Value::Buffer(PCI_HOST_BRIDGE_UUID.to_vec()),
        Value::Integer(REVISION),
        Value::Integer(3),
        Value::Buffer(caps),
    ]
}

/// Reads firmware's answer: the Control field it granted, or why there is none.
pub fn granted(answer: &[u8]) -> Result<u32, String> {
    let dword = |i: usize| {
        answer
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let Some(status) = dword(0) else {
        return Err(format!("_OSC returned {} bytes", answer.len()));
    };
    if status & status::UNRECOGNISED_UUID != 0 {
        return Err(String::from("_OSC does not know the PCI host bridge UUID"));
    }
    if status & status::UNRECOGNISED_REVISION != 0 {
        return Err(String::from("_OSC does not know revision 1"));
    }
    if status & status::FAILURE != 0 {
        return Err(format!("_OSC failed (status {status:#x})"));
    }
    dword(2).ok_or_else(|| format!("_OSC returned {} bytes, no Control field", answer.len()))
}

/// What firmware answered for one host bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Osc {
    /// No `_OSC` method: firmware keeps every control.
    Absent,
    /// The controls granted (a subset of [`REQUEST`]).
    Granted(u32),
    /// The method failed or answered something unreadable: nothing is granted.
    Failed(String),
}

impl Osc {
    /// Whether the operating system may run PCI Express hot-plug natively below the bridge.
    pub fn native_hot_plug(&self) -> bool {
        matches!(self, Osc::Granted(c) if c & control::NATIVE_HOT_PLUG != 0)
    }
}

impl core::fmt::Display for Osc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Osc::Absent => write!(f, "no _OSC (firmware keeps native control)"),
            Osc::Granted(c) => write!(
                f,
                "_OSC granted {c:#x} of {REQUEST:#x}: hot-plug {}",
                if c & control::NATIVE_HOT_PLUG != 0 {
                    "native"
                } else {
                    "kept by firmware"
                }
            ),
            Osc::Failed(why) => write!(f, "{why} (firmware keeps native control)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u32, support: u32, control: u32) -> Vec<u8> {
        [status, support, control]
            .iter()
            .flat_map(|d| d.to_le_bytes())
            .collect()
    }

    #[test]
    fn the_uuid_is_in_to_uuid_byte_order() {
        // ToUUID("33DB4D5B-1FF7-401C-9657-7441C03DD766"): the first three fields little-endian.
        assert_eq!(&PCI_HOST_BRIDGE_UUID[..4], &0x33db4d5bu32.to_le_bytes());
        assert_eq!(&PCI_HOST_BRIDGE_UUID[4..6], &0x1ff7u16.to_le_bytes());
        assert_eq!(&PCI_HOST_BRIDGE_UUID[6..8], &0x401cu16.to_le_bytes());
        assert_eq!(
            &PCI_HOST_BRIDGE_UUID[8..],
            &[0x96, 0x57, 0x74, 0x41, 0xc0, 0x3d, 0xd7, 0x66]
        );
    }

    #[test]
    fn arguments_carry_the_request() {
        let [uuid, rev, count, caps] = arguments(SUPPORT, REQUEST);
        assert_eq!(uuid, Value::Buffer(PCI_HOST_BRIDGE_UUID.to_vec()));
        assert_eq!((rev, count), (Value::Integer(1), Value::Integer(3)));
        assert_eq!(caps, Value::Buffer(answer(0, 0x11, 0x11)));
    }

    #[test]
    fn granted_reads_the_control_field_and_the_errors() {
        assert_eq!(granted(&answer(0, SUPPORT, 0x11)), Ok(0x11));
        // q35 with ACPI hot-plug: masked, hot-plug bit cleared.
        let masked = granted(&answer(status::CAPABILITIES_MASKED, SUPPORT, 0x10)).unwrap();
        assert!(!Osc::Granted(masked).native_hot_plug());
        assert!(Osc::Granted(0x11).native_hot_plug());
        assert!(granted(&answer(status::FAILURE, 0, 0)).is_err());
        assert!(granted(&answer(status::UNRECOGNISED_UUID, 0, 0)).is_err());
        assert!(granted(&answer(status::UNRECOGNISED_REVISION, 0, 0)).is_err());
        assert!(granted(&[0; 4]).is_err(), "no control field");
        assert!(granted(&[]).is_err());
        assert!(!Osc::Absent.native_hot_plug());
        assert!(!Osc::Failed(String::from("x")).native_hot_plug());
    }
}
