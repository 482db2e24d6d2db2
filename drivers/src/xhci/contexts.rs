//! Device and input contexts (xHCI 1.2 §6.2) and what goes into them.
//!
//! A device context (§6.2.1) is the Slot Context followed by 31 Endpoint Contexts, indexed by
//! the Device Context Index (DCI: endpoint number × 2, plus 1 for IN; the default control
//! endpoint is DCI 1). An input context (§6.2.5) is the same preceded by the Input Control
//! Context, whose Add flags say which contexts a command takes. Each context is 32 bytes, or
//! 64 when HCCPARAMS1.CSZ is set (the upper half reserved); [`Layout`] does the offsets.
//!
//! The Slot Context's fields, which depend on where the device sits (route string, hubs,
//! transaction translators), are `place`'s.
//!
//! The controller owns a device context once its address is in the DCBAA; the driver writes
//! only input contexts. Both are [`DmaBuffer`](pci::window::DmaBuffer)s of the slot's
//! `Device` (`enumerate`).

use super::registers::Speed;

/// Endpoint types (§6.2.3, Table 6-9).
pub(super) const EP_CONTROL: u32 = 4;
pub(super) const EP_INTERRUPT_IN: u32 = 7;

/// Context offsets for a context size of 32 or 64 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    pub size: u64,
}

impl Layout {
    /// The Input Control Context: Drop flags (dword 0), Add flags (dword 1).
    pub fn control(&self) -> u64 {
        0
    }
    /// The Slot Context in an input context.
    pub fn input_slot(&self) -> u64 {
        self.size
    }
    /// Endpoint `dci`'s context in an input context.
    pub fn input_endpoint(&self, dci: u8) -> u64 {
        (1 + u64::from(dci)) * self.size
    }
    /// Bytes of an input context (33 contexts): at most 2112, within the page the driver
    /// gives it, as a device context (32) is.
    #[cfg(test)]
    pub fn input_bytes(&self) -> u64 {
        33 * self.size
    }
}

/// The DCI of an endpoint address (bit 7 IN, 3:0 number).
pub(super) fn dci(endpoint_address: u8) -> u8 {
    (endpoint_address & 0x0f) * 2 + (endpoint_address >> 7)
}

/// What an Endpoint Context says about an endpoint (§6.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub kind: u32,
    pub max_packet: u16,
    pub max_burst: u8,
    /// The Interval field: 2^Interval × 125 µs ([`interval`]).
    pub interval: u8,
    /// Max ESIT Payload: bytes per service interval (periodic endpoints).
    pub max_esit: u32,
    /// Average TRB Length (§4.14.1.1: 8 for control, the report size for interrupt).
    pub average_trb: u16,
}

impl Endpoint {
    /// The default control endpoint.
    pub fn control(max_packet: u16) -> Endpoint {
        Endpoint {
            kind: EP_CONTROL,
            max_packet,
            max_burst: 0,
            interval: 0,
            max_esit: 0,
            average_trb: 8,
        }
    }

    /// Dwords 0, 1 and 4 (dwords 2-3, the TR Dequeue Pointer with DCS, are written with the
    /// ring's bus address). CErr = 3: three retries before the endpoint halts.
    pub fn dwords(&self) -> [u32; 3] {
        [
            u32::from(self.interval) << 16 | (self.max_esit >> 16) << 24,
            3 << 1
                | self.kind << 3
                | u32::from(self.max_burst) << 8
                | u32::from(self.max_packet) << 16,
            u32::from(self.average_trb) | (self.max_esit & 0xffff) << 16,
        ]
    }
}

/// The Interval field for an interrupt endpoint's bInterval (§6.2.3.6): full and low speed
/// give it in frames of 1 ms (1 to 255), rounded down to a power of two of 125 µs
/// microframes (3 = 1 ms to 10 = 128 ms); high speed and SuperSpeed as an exponent,
/// 2^(bInterval-1) microframes (1 to 16).
pub(super) fn interval(speed: Speed, b_interval: u8) -> u8 {
    match speed {
        Speed::Low | Speed::Full => {
            let microframes = u32::from(b_interval.max(1)) * 8;
            (31 - microframes.leading_zeros()).clamp(3, 10) as u8
        }
        _ => b_interval.clamp(1, 16) - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_the_context_size() {
        let small = Layout { size: 32 };
        let big = Layout { size: 64 };
        assert_eq!(small.input_slot(), 0x20);
        assert_eq!(small.input_endpoint(1), 0x40);
        assert_eq!(big.input_endpoint(3), 0x100);
        assert_eq!(big.input_bytes(), 2112);
    }

    #[test]
    fn device_context_indexes() {
        assert_eq!(dci(0x00), 0 /* the caller uses 1 for EP0 */);
        assert_eq!(dci(0x81), 3);
        assert_eq!(dci(0x01), 2);
        assert_eq!(dci(0x82), 5);
    }

    #[test]
    fn intervals_per_speed() {
        // A full-speed keyboard polled every 10 ms: 80 microframes -> 2^6 = 8 ms.
        assert_eq!(interval(Speed::Full, 10), 6);
        assert_eq!(interval(Speed::Full, 1), 3);
        assert_eq!(interval(Speed::Low, 255), 10);
        assert_eq!(interval(Speed::Full, 0), 3);
        // High speed: bInterval 4 -> 2^3 microframes = 1 ms.
        assert_eq!(interval(Speed::High, 4), 3);
        assert_eq!(interval(Speed::High, 0), 0);
        assert_eq!(interval(Speed::Super, 200), 15);
    }

    #[test]
    fn endpoint_dwords() {
        let e = Endpoint {
            kind: EP_INTERRUPT_IN,
            max_packet: 8,
            max_burst: 0,
            interval: 6,
            max_esit: 8,
            average_trb: 8,
        }
        .dwords();
        assert_eq!(e[0], 6 << 16);
        assert_eq!(e[1], 3 << 1 | 7 << 3 | 8 << 16);
        assert_eq!(e[2], 8 | 8 << 16);
        assert_eq!(
            Endpoint::control(64).dwords()[1],
            3 << 1 | 4 << 3 | 64 << 16
        );
    }
}
