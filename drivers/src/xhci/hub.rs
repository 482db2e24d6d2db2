//! USB 2.0 hubs (USB 2.0 chapter 11): the hub class requests the driver sends, the hub
//! descriptor, and the port status a hub reports. What is done with them (power the ports,
//! reset the connected ones, enumerate what is behind) is `tree`'s.
//!
//! A hub is a device of class 9 (or with an interface of class 9). Its ports are driven
//! with class requests to its control endpoint (§11.24.2): `SET_FEATURE(PORT_POWER)` turns
//! a port's power on, `GET_STATUS` reads a port's status and change bits,
//! `SET_FEATURE(PORT_RESET)` resets and then enables it (the hub sets `C_PORT_RESET` when
//! done), and `CLEAR_FEATURE` acknowledges a change. The hub descriptor (§11.23.2.1, type
//! 0x29) says how many ports there are, how long their power takes to be good, and the
//! Transaction Translator's think time.
//!
//! USB 3 hubs (SuperSpeed, hub descriptor type 0x2A, which need `SET_HUB_DEPTH` before their
//! ports can be used) are not supported. Such a hub also has a USB 2 half on the paired
//! USB 2 port, which is enumerated like any USB 2 hub, so a keyboard behind it is still
//! found.
//!
//! The hub's status-change endpoint (an interrupt IN endpoint that reports ports changing)
//! is not polled: the ports are looked at once, at bind, and a device plugged into a hub
//! later is not seen (as on the root ports).
//!
//! Every length is checked against the bytes received: a descriptor or status that is too
//! short is an error, never an index out of bounds.

use alloc::format;
use alloc::string::String;

use super::place::MAX_ROUTE_PORT;
use super::registers::Speed;

/// The hub class code (USB 2.0 §11.23.1, bDeviceClass and bInterfaceClass).
pub(super) const CLASS_HUB: u8 = 9;
/// The hub descriptor type (§11.23.2.1).
pub(super) const HUB_DESCRIPTOR: u8 = 0x29;
/// The SuperSpeed hub descriptor type (USB 3.2 §10.15.2.1), not supported.
const SS_HUB_DESCRIPTOR: u8 = 0x2A;
/// Bytes of hub descriptor asked for: 7 fixed, and two bitmaps of up to 32 bytes each
/// (255 ports).
pub(super) const HUB_DESCRIPTOR_MAX: u16 = 71;

/// bmRequestType values (§11.24.2, Table 11-15): class, to the hub (device) or a port
/// (other), in either direction.
pub(super) const TO_HUB_IN: u8 = 0xA0;
pub(super) const TO_PORT_IN: u8 = 0xA3;
pub(super) const TO_PORT_OUT: u8 = 0x23;

/// Standard request codes the hub class uses (USB 2.0 Table 9-4).
pub(super) const GET_STATUS: u8 = 0;
pub(super) const CLEAR_FEATURE: u8 = 1;
pub(super) const SET_FEATURE: u8 = 3;
pub(super) const GET_DESCRIPTOR: u8 = 6;

/// Port feature selectors (§11.24.2, Table 11-17).
pub(super) const PORT_RESET: u16 = 4;
pub(super) const PORT_POWER: u16 = 8;
pub(super) const C_PORT_CONNECTION: u16 = 16;
pub(super) const C_PORT_RESET: u16 = 20;

/// wPortStatus bits (§11.24.2.7.1, Table 11-21).
const PORT_CONNECTION: u16 = 1 << 0;
const PORT_ENABLE: u16 = 1 << 1;
const PORT_OVER_CURRENT: u16 = 1 << 3;
const PORT_LOW_SPEED: u16 = 1 << 9;
const PORT_HIGH_SPEED: u16 = 1 << 10;
/// wPortChange bits (§11.24.2.7.2, Table 11-22).
const C_RESET: u16 = 1 << 4;

/// What the driver uses of a hub descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HubDescriptor {
    /// bNbrPorts.
    pub ports: u8,
    /// wHubCharacteristics: power switching (1:0), compound device (2), over-current
    /// protection (4:3), TT think time (6:5), port indicators (7).
    pub characteristics: u16,
    /// bPwrOn2PwrGood: the time from a port's power on to its power being good, in units
    /// of 2 ms.
    pub power_on_2ms: u8,
}

impl HubDescriptor {
    /// The TT Think Time field (wHubCharacteristics 6:5): 0 to 3 for 8 to 32 full-speed bit
    /// times, as the Slot Context wants it.
    pub fn think_time(&self) -> u8 {
        ((self.characteristics >> 5) & 3) as u8
    }

    /// Microseconds from power on to power good: bPwrOn2PwrGood × 2 ms (510 ms at most).
    pub fn power_good_us(&self) -> u64 {
        u64::from(self.power_on_2ms) * 2000
    }

    /// The ports the driver powers, reads and resets: 1 to this. A route string names hub
    /// ports 1 to 15 only (xHCI 1.2 §8.9), so a hub claiming more (bNbrPorts goes to 255)
    /// has the rest left alone: looking at them would cost a request each, several times
    /// over, for ports nothing behind could be addressed on.
    pub fn usable_ports(&self) -> u8 {
        self.ports.min(MAX_ROUTE_PORT)
    }
}

/// Parses a hub descriptor (§11.23.2.1): bDescLength, bDescriptorType 0x29, bNbrPorts,
/// wHubCharacteristics, bPwrOn2PwrGood, bHubContrCurrent, then the DeviceRemovable and
/// PortPwrCtrlMask bitmaps, which the driver does not use (so a descriptor whose bitmaps
/// are short or missing is accepted).
pub(super) fn hub_descriptor(bytes: &[u8]) -> Result<HubDescriptor, String> {
    if bytes.len() < 7 {
        return Err(format!(
            "hub descriptor: {} bytes (7 at least): {:02x?}",
            bytes.len(),
            bytes
        ));
    }
    if bytes[1] == SS_HUB_DESCRIPTOR {
        return Err(String::from(
            "a USB 3 hub descriptor (type 0x2a): USB 3 hubs are not supported",
        ));
    }
    if bytes[1] != HUB_DESCRIPTOR || bytes[0] < 7 {
        return Err(format!(
            "hub descriptor: length {} type {:#04x} (expected type 0x29, length 7 at least)",
            bytes[0], bytes[1]
        ));
    }
    if bytes[2] == 0 {
        return Err(String::from("hub descriptor: no ports"));
    }
    Ok(HubDescriptor {
        ports: bytes[2],
        characteristics: u16::from_le_bytes([bytes[3], bytes[4]]),
        power_on_2ms: bytes[5],
    })
}

/// A hub port's status and change bits, as `GET_STATUS` returns them (§11.24.2.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PortStatus {
    /// wPortStatus.
    pub status: u16,
    /// wPortChange.
    pub change: u16,
}

impl PortStatus {
    /// The 4 bytes of a port's `GET_STATUS`.
    pub fn parse(bytes: &[u8]) -> Result<PortStatus, String> {
        if bytes.len() < 4 {
            return Err(format!("port status: {} bytes (4 expected)", bytes.len()));
        }
        Ok(PortStatus {
            status: u16::from_le_bytes([bytes[0], bytes[1]]),
            change: u16::from_le_bytes([bytes[2], bytes[3]]),
        })
    }

    /// A device is attached.
    pub fn connected(&self) -> bool {
        self.status & PORT_CONNECTION != 0
    }

    /// The port is enabled (after a reset): traffic reaches the device.
    pub fn enabled(&self) -> bool {
        self.status & PORT_ENABLE != 0
    }

    pub fn over_current(&self) -> bool {
        self.status & PORT_OVER_CURRENT != 0
    }

    /// The reset the driver asked for has completed (C_PORT_RESET).
    pub fn reset_done(&self) -> bool {
        self.change & C_RESET != 0
    }

    /// The attached device's speed (bits 9 and 10; neither: full speed). Meaningful on a
    /// connected, enabled port; both bits set is not a speed.
    pub fn speed(&self) -> Result<Speed, String> {
        match (
            self.status & PORT_LOW_SPEED != 0,
            self.status & PORT_HIGH_SPEED != 0,
        ) {
            (false, false) => Ok(Speed::Full),
            (true, false) => Ok(Speed::Low),
            (false, true) => Ok(Speed::High),
            (true, true) => Err(format!(
                "wPortStatus {:#06x} says both low and high speed",
                self.status
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's usb-hub: 8 ports, no power switching, per-port over-current protection,
    /// power good after 2 ms, then the two bitmaps.
    const QEMU_HUB: [u8; 9] = [9, 0x29, 8, 0x0a, 0x00, 0x01, 0, 0x00, 0xff];

    #[test]
    fn parses_a_hub_descriptor() {
        let d = hub_descriptor(&QEMU_HUB).unwrap();
        assert_eq!(d.ports, 8);
        assert_eq!(d.characteristics, 0x000a);
        assert_eq!(d.power_good_us(), 2000);
        assert_eq!(d.think_time(), 0);
        // A high-speed hub with TT think time 24 bit times (10b) and the longest wait.
        let mut hs = QEMU_HUB;
        hs[3] = 0x40 | 0x09;
        hs[5] = 255;
        let d = hub_descriptor(&hs).unwrap();
        assert_eq!(d.think_time(), 2);
        assert_eq!(d.power_good_us(), 510_000);
        // Only the fixed part arrived: enough.
        assert!(hub_descriptor(&QEMU_HUB[..7]).is_ok());
    }

    #[test]
    fn only_ports_a_route_string_can_name_are_used() {
        assert_eq!(hub_descriptor(&QEMU_HUB).unwrap().usable_ports(), 8);
        // A hub claiming 255 ports: 15 are looked at, not 255.
        let mut many = QEMU_HUB;
        many[2] = 255;
        let d = hub_descriptor(&many).unwrap();
        assert_eq!((d.ports, d.usable_ports()), (255, 15));
        many[2] = 15;
        assert_eq!(hub_descriptor(&many).unwrap().usable_ports(), 15);
    }

    #[test]
    fn bogus_hub_descriptors_are_errors() {
        assert!(hub_descriptor(&[]).is_err());
        assert!(
            hub_descriptor(&QEMU_HUB[..6])
                .unwrap_err()
                .contains("6 bytes")
        );
        let mut short = QEMU_HUB;
        short[0] = 2;
        assert!(hub_descriptor(&short).unwrap_err().contains("length 2"));
        let mut kind = QEMU_HUB;
        kind[1] = 0x02;
        assert!(hub_descriptor(&kind).unwrap_err().contains("type 0x02"));
        let mut usb3 = QEMU_HUB;
        usb3[1] = 0x2a;
        assert!(hub_descriptor(&usb3).unwrap_err().contains("USB 3"));
        let mut none = QEMU_HUB;
        none[2] = 0;
        assert!(hub_descriptor(&none).unwrap_err().contains("no ports"));
        // A bDescLength beyond what arrived is accepted: the bitmaps are not used.
        let mut long = QEMU_HUB;
        long[0] = 200;
        assert_eq!(hub_descriptor(&long).unwrap().ports, 8);
    }

    #[test]
    fn port_status_bits() {
        // Connected, enabled, powered (bit 8), full speed; C_PORT_CONNECTION and C_PORT_RESET.
        let s = PortStatus::parse(&[0x03, 0x01, 0x11, 0x00]).unwrap();
        assert_eq!((s.status, s.change), (0x0103, 0x0011));
        assert!(s.connected() && s.enabled() && s.reset_done());
        assert!(!s.over_current());
        assert_eq!(s.speed(), Ok(Speed::Full));
        let low = PortStatus::parse(&[0x03, 0x03, 0, 0]).unwrap();
        assert_eq!(low.speed(), Ok(Speed::Low));
        let high = PortStatus::parse(&[0x03, 0x05, 0, 0]).unwrap();
        assert_eq!(high.speed(), Ok(Speed::High));
        let both = PortStatus::parse(&[0x03, 0x07, 0, 0]).unwrap();
        assert!(both.speed().is_err());
        // Empty, powered port; reset still in progress.
        let empty = PortStatus::parse(&[0x10, 0x01, 0, 0]).unwrap();
        assert!(!empty.connected() && !empty.reset_done());
        assert!(PortStatus::parse(&[1, 2, 3]).is_err());
    }
}
