//! USB descriptors (USB 2.0 §9.6) the driver reads: the device descriptor, and the
//! configuration descriptor with its interfaces and endpoints, in which it looks for a boot
//! keyboard (HID 1.11 §4.2: interface class 3, subclass 1 = boot, protocol 1 = keyboard)
//! and its interrupt IN endpoint, or a hub (class 9). The hub descriptor is `hub`'s.
//!
//! Every length is checked against the bytes actually received: a descriptor shorter than two
//! bytes (which would loop), longer than what is left, or a configuration that claims fewer
//! bytes than its own header is an error naming the offset, never an index out of bounds.

use alloc::format;
use alloc::string::String;

/// Descriptor types (USB 2.0 Table 9-5).
pub(super) const DEVICE: u8 = 1;
pub(super) const CONFIGURATION: u8 = 2;
const INTERFACE: u8 = 4;
const ENDPOINT: u8 = 5;

/// The fields of a device descriptor the driver uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Device {
    pub usb: u16,
    pub class: u8,
    pub max_packet0: u8,
    pub vendor: u16,
    pub product: u16,
    pub configurations: u8,
}

/// Parses a device descriptor; `bytes` may be its first 8 bytes (enough for bMaxPacketSize0).
pub(super) fn device(bytes: &[u8]) -> Result<Device, String> {
    if bytes.len() < 8 {
        return Err(format!("device descriptor: {} bytes", bytes.len()));
    }
    if bytes[1] != DEVICE || bytes[0] < 8 {
        return Err(format!(
            "device descriptor: length {} type {} (expected type 1)",
            bytes[0], bytes[1]
        ));
    }
    let word = |i: usize| {
        bytes
            .get(i..i + 2)
            .map_or(0, |w| u16::from_le_bytes([w[0], w[1]]))
    };
    Ok(Device {
        usb: word(2),
        class: bytes[4],
        max_packet0: bytes[7],
        vendor: word(8),
        product: word(10),
        configurations: bytes.get(17).copied().unwrap_or(0),
    })
}

/// wTotalLength of a configuration descriptor's first 9 bytes.
pub(super) fn configuration_length(header: &[u8]) -> Result<u16, String> {
    if header.len() < 9 || header[1] != CONFIGURATION || header[0] < 9 {
        return Err(format!(
            "configuration descriptor header: {:02x?}",
            &header[..header.len().min(9)]
        ));
    }
    let total = u16::from_le_bytes([header[2], header[3]]);
    if total < 9 {
        return Err(format!("configuration wTotalLength {total} is below 9"));
    }
    Ok(total)
}

/// A boot keyboard interface found in a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BootKeyboard {
    /// bConfigurationValue, for SET_CONFIGURATION.
    pub configuration: u8,
    pub interface: u8,
    pub alternate: u8,
    /// The interrupt IN endpoint's address (bit 7 set).
    pub endpoint: u8,
    /// wMaxPacketSize, 10:0.
    pub max_packet: u16,
    /// Additional transactions per microframe (wMaxPacketSize 12:11, high speed).
    pub extra: u8,
    pub interval: u8,
}

/// Walks a whole configuration descriptor, handing `f` each descriptor in it (its bytes,
/// bLength of them) until `f` returns something; `Ok(None)` when it never does. A descriptor
/// shorter than 2 bytes or running past the bytes received is an error naming its offset.
fn walk<T>(
    config: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<Option<T>, String>,
) -> Result<Option<T>, String> {
    let total = usize::from(configuration_length(config)?);
    let bytes = &config[..total.min(config.len())];
    let mut at = 0;
    while at < bytes.len() {
        let len = usize::from(bytes[at]);
        if len < 2 {
            return Err(format!("descriptor at offset {at}: bLength {len}"));
        }
        if at + len > bytes.len() {
            return Err(format!(
                "descriptor at offset {at}: bLength {len} runs past the {} bytes received",
                bytes.len()
            ));
        }
        let d = &bytes[at..at + len];
        if matches!(d[1], INTERFACE if len < 9) || matches!(d[1], ENDPOINT if len < 7) {
            return Err(format!(
                "descriptor at offset {at}: type {} with bLength {len} is too short",
                d[1]
            ));
        }
        if let Some(found) = f(d)? {
            return Ok(Some(found));
        }
        at += len;
    }
    Ok(None)
}

/// Walks a whole configuration descriptor and returns its first boot keyboard interface with
/// an interrupt IN endpoint; `Ok(None)` when it has none.
pub(super) fn boot_keyboard(config: &[u8]) -> Result<Option<BootKeyboard>, String> {
    let configuration = configuration_value(config)?;
    // The interface being walked: (number, alternate, is a boot keyboard).
    let mut current: Option<(u8, u8, bool)> = None;
    walk(config, |d| {
        match d[1] {
            INTERFACE => {
                let boot = d[5] == 3 && d[6] == 1 && d[7] == 1;
                current = Some((d[2], d[3], boot));
            }
            ENDPOINT => {
                if let Some((interface, alternate, true)) = current {
                    let address = d[2];
                    let interrupt = d[3] & 3 == 3;
                    let packet = u16::from_le_bytes([d[4], d[5]]);
                    // Endpoint 0 is the control endpoint (its DCI is the default control
                    // endpoint's): an interrupt endpoint has a number from 1 to 15.
                    let number = address & 0x0f;
                    if interrupt && address & 0x80 != 0 && number != 0 && packet & 0x7ff != 0 {
                        return Ok(Some(BootKeyboard {
                            configuration,
                            interface,
                            alternate,
                            endpoint: address,
                            max_packet: packet & 0x7ff,
                            extra: ((packet >> 11) & 3) as u8,
                            interval: d[6],
                        }));
                    }
                }
            }
            _ => {}
        }
        Ok(None)
    })
}

/// bConfigurationValue of a configuration descriptor, for SET_CONFIGURATION.
pub(super) fn configuration_value(config: &[u8]) -> Result<u8, String> {
    configuration_length(config)?;
    Ok(config[5])
}

/// Whether a configuration has an interface of `class` (USB 2.0 §9.6.5 bInterfaceClass).
pub(super) fn has_interface_class(config: &[u8], class: u8) -> Result<bool, String> {
    walk(config, |d| {
        Ok((d[1] == INTERFACE && d[5] == class).then_some(()))
    })
    .map(|found| found.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's usb-kbd: one configuration, interface 0 class 3/1/1, a HID descriptor, and
    /// endpoint 0x81 interrupt, 8 bytes, every 7 ms (full speed: bInterval 10 in QEMU 10).
    const KEYBOARD: [u8; 34] = [
        9, 2, 34, 0, 1, 1, 0, 0xa0, 50, // configuration
        9, 4, 0, 0, 1, 3, 1, 1, 0, // interface
        9, 0x21, 0x11, 1, 0, 1, 0x22, 63, 0, // HID
        7, 5, 0x81, 3, 8, 0, 10, // endpoint
    ];

    #[test]
    fn finds_the_boot_keyboard() {
        let k = boot_keyboard(&KEYBOARD).unwrap().unwrap();
        assert_eq!(
            k,
            BootKeyboard {
                configuration: 1,
                interface: 0,
                alternate: 0,
                endpoint: 0x81,
                max_packet: 8,
                extra: 0,
                interval: 10,
            }
        );
    }

    #[test]
    fn a_mouse_is_not_a_keyboard() {
        let mut mouse = KEYBOARD;
        mouse[16] = 2; // protocol 2: mouse
        assert_eq!(boot_keyboard(&mouse), Ok(None));
        let mut out = KEYBOARD;
        out[29] = 0x01; // an OUT endpoint
        assert_eq!(boot_keyboard(&out), Ok(None));
        // Endpoint 0 IN is the control endpoint's DCI 1, not an interrupt endpoint.
        let mut zero = KEYBOARD;
        zero[29] = 0x80;
        assert_eq!(boot_keyboard(&zero), Ok(None));
    }

    #[test]
    fn bogus_lengths_are_errors() {
        let mut zero = KEYBOARD;
        zero[18] = 0;
        assert!(boot_keyboard(&zero).unwrap_err().contains("bLength 0"));
        let mut long = KEYBOARD;
        long[27] = 20;
        assert!(boot_keyboard(&long).unwrap_err().contains("runs past"));
        let mut tiny = KEYBOARD;
        tiny[2] = 4;
        assert!(boot_keyboard(&tiny).unwrap_err().contains("below 9"));
        // wTotalLength larger than what arrived: walked as far as it goes.
        let mut more = KEYBOARD;
        more[2] = 200;
        assert!(boot_keyboard(&more).unwrap().is_some());
        assert!(boot_keyboard(&KEYBOARD[..5]).is_err());
        let mut short_interface = KEYBOARD;
        short_interface[9] = 5;
        assert!(boot_keyboard(&short_interface).is_err());
    }

    #[test]
    fn interface_classes() {
        assert_eq!(has_interface_class(&KEYBOARD, 3), Ok(true));
        assert_eq!(has_interface_class(&KEYBOARD, 9), Ok(false));
        // QEMU's usb-hub: device class 9, one interface class 9, one interrupt endpoint.
        let hub = [
            9, 2, 25, 0, 1, 1, 0, 0xe0, 0, // configuration
            9, 4, 0, 0, 1, 9, 0, 0, 0, // interface
            7, 5, 0x81, 3, 2, 0, 0xff, // endpoint
        ];
        assert_eq!(has_interface_class(&hub, 9), Ok(true));
        assert_eq!(configuration_value(&hub), Ok(1));
        let mut bogus = hub;
        bogus[9] = 1;
        assert!(has_interface_class(&bogus, 9).is_err());
        assert!(configuration_value(&hub[..4]).is_err());
    }

    #[test]
    fn device_descriptor() {
        let d = device(&[
            18, 1, 0x00, 0x02, 0, 0, 0, 64, 0x27, 0x06, 0x01, 0x00, 0, 0, 1, 2, 3, 1,
        ])
        .unwrap();
        assert_eq!(
            (d.usb, d.max_packet0, d.vendor, d.product),
            (0x200, 64, 0x627, 1)
        );
        assert_eq!(d.configurations, 1);
        assert!(device(&[18, 2, 0, 0, 0, 0, 0, 8]).is_err());
        assert!(device(&[18, 1, 0]).is_err());
    }
}
