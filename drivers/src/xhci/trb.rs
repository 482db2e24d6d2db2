//! Transfer Request Blocks (xHCI 1.2 §4.11, §6.4): the 16-byte entries of every ring, as
//! four dwords. Dword 3 holds the cycle bit (bit 0) and the TRB type (15:10); the producer
//! writes it last, since the cycle bit hands the TRB over.
//!
//! Only encoding and decoding live here (host-tested); writing TRBs into DMA memory is
//! `rings`.

/// TRB types (§6.4.6, Table 6-91).
pub(super) mod kind {
    pub const NORMAL: u32 = 1;
    pub const SETUP: u32 = 2;
    pub const DATA: u32 = 3;
    pub const STATUS: u32 = 4;
    pub const LINK: u32 = 6;
    pub const ENABLE_SLOT: u32 = 9;
    pub const ADDRESS_DEVICE: u32 = 11;
    pub const CONFIGURE_ENDPOINT: u32 = 12;
    pub const EVALUATE_CONTEXT: u32 = 13;
    pub const RESET_ENDPOINT: u32 = 14;
    pub const SET_TR_DEQUEUE: u32 = 16;
    pub const NO_OP_COMMAND: u32 = 23;
    pub const TRANSFER_EVENT: u32 = 32;
    pub const COMMAND_COMPLETION: u32 = 33;
    pub const PORT_STATUS_CHANGE: u32 = 34;
    pub const HOST_CONTROLLER: u32 = 37;
}

/// Cycle bit (dword 3).
pub(super) const CYCLE: u32 = 1 << 0;
/// Link TRB: Toggle Cycle.
const LINK_TC: u32 = 1 << 1;
/// Transfer TRBs: Interrupt on Short Packet.
const ISP: u32 = 1 << 2;
/// Transfer TRBs: Interrupt On Completion.
const IOC: u32 = 1 << 5;
/// Setup Stage: Immediate Data.
const IDT: u32 = 1 << 6;
/// Data and Status Stage: direction IN.
const DIR_IN: u32 = 1 << 16;

/// A TRB as four dwords; dword 3's cycle bit is set by the ring that writes it.
pub(super) type Trb = [u32; 4];

const fn control(kind: u32) -> u32 {
    kind << 10
}

/// The TRB type of dword 3.
pub(super) fn trb_type(dw3: u32) -> u32 {
    (dw3 >> 10) & 0x3f
}

/// Link TRB (§6.4.4.1) to the ring's start, toggling the cycle; the pointer (dwords 0-1) is
/// written by the ring.
pub(super) fn link() -> Trb {
    [0, 0, 0, control(kind::LINK) | LINK_TC]
}

/// A command without parameters for `slot` (Enable Slot with slot 0, No Op).
pub(super) fn command(kind: u32, slot: u8) -> Trb {
    [0, 0, 0, control(kind) | u32::from(slot) << 24]
}

/// A command naming an endpoint (Reset Endpoint, Set TR Dequeue Pointer: its pointer is
/// written by the caller).
pub(super) fn endpoint_command(kind: u32, slot: u8, dci: u8) -> Trb {
    [
        0,
        0,
        0,
        control(kind) | u32::from(slot) << 24 | u32::from(dci) << 16,
    ]
}

/// A USB SETUP packet (USB 2.0 §9.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Setup {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

impl Setup {
    /// Whether the data stage (if any) goes device to host.
    pub fn is_in(&self) -> bool {
        self.request_type & 0x80 != 0
    }
}

/// Setup Stage TRB (§6.4.1.2.1): the packet as immediate data, TRT (17:16) = no data (0),
/// OUT data (2) or IN data (3).
pub(super) fn setup_stage(s: &Setup) -> Trb {
    let trt = match (s.length, s.is_in()) {
        (0, _) => 0,
        (_, false) => 2,
        (_, true) => 3,
    };
    [
        u32::from(s.request_type) | u32::from(s.request) << 8 | u32::from(s.value) << 16,
        u32::from(s.index) | u32::from(s.length) << 16,
        8,
        control(kind::SETUP) | IDT | trt << 16,
    ]
}

/// Data Stage TRB (§6.4.1.2.2) of `length` bytes; the buffer pointer is written by the
/// caller. ISP: a short packet raises an event of its own.
pub(super) fn data_stage(length: u16, is_in: bool) -> Trb {
    let dir = if is_in { DIR_IN } else { 0 };
    [0, 0, u32::from(length), control(kind::DATA) | ISP | dir]
}

/// Status Stage TRB (§6.4.1.2.3): opposite direction to the data (IN without data), IOC.
pub(super) fn status_stage(data_in: Option<bool>) -> Trb {
    let dir = match data_in {
        Some(true) => 0,
        _ => DIR_IN,
    };
    [0, 0, 0, control(kind::STATUS) | IOC | dir]
}

/// Normal TRB (§6.4.1.1) of `length` bytes with ISP and IOC; pointer written by the caller.
pub(super) fn normal(length: u32) -> Trb {
    [0, 0, length & 0x1_ffff, control(kind::NORMAL) | ISP | IOC]
}

/// Completion codes (§6.4.5, Table 6-90).
pub(super) mod code {
    pub const SUCCESS: u8 = 1;
    pub const STALL: u8 = 6;
    pub const SHORT_PACKET: u8 = 13;
}

/// Names the completion codes a driver meets.
pub(super) fn code_name(code: u8) -> &'static str {
    match code {
        0 => "invalid",
        1 => "success",
        2 => "data buffer error",
        3 => "babble detected",
        4 => "USB transaction error",
        5 => "TRB error",
        6 => "stall",
        7 => "resource error",
        8 => "bandwidth error",
        9 => "no slots available",
        10 => "invalid stream type",
        11 => "slot not enabled",
        12 => "endpoint not enabled",
        13 => "short packet",
        14 => "ring underrun",
        15 => "ring overrun",
        17 => "parameter error",
        19 => "context state error",
        21 => "event ring full",
        22 => "incompatible device",
        24 => "command ring stopped",
        25 => "command aborted",
        26 => "stopped",
        27 => "stopped, length invalid",
        _ => "error",
    }
}

/// An event TRB, decoded (§6.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Event {
    pub kind: u32,
    /// Dwords 0-1: the TRB the event is about (transfer, command), or the port (31:24 of
    /// dword 0) for a port status change.
    pub pointer: u64,
    pub code: u8,
    /// Transfer events: bytes not transferred (23:0 of dword 2).
    pub residual: u32,
    pub slot: u8,
    /// Transfer events: the endpoint's DCI.
    pub endpoint: u8,
}

impl Event {
    pub fn decode(t: Trb) -> Event {
        Event {
            kind: trb_type(t[3]),
            pointer: u64::from(t[0]) | u64::from(t[1]) << 32,
            code: (t[2] >> 24) as u8,
            residual: t[2] & 0x00ff_ffff,
            slot: (t[3] >> 24) as u8,
            endpoint: ((t[3] >> 16) & 0x1f) as u8,
        }
    }

    /// The low dword of the TRB pointer, compared with the TRB the driver wrote.
    pub fn pointer_low(&self) -> u32 {
        self.pointer as u32
    }

    /// Whether the completion code says the work was done (a short packet is done too).
    pub fn ok(&self) -> bool {
        self.code == code::SUCCESS || self.code == code::SHORT_PACKET
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_stage_encodes_get_descriptor() {
        // GET_DESCRIPTOR(Device), 18 bytes: 80 06 0100 0000 0012.
        let s = Setup {
            request_type: 0x80,
            request: 6,
            value: 0x0100,
            index: 0,
            length: 18,
        };
        let t = setup_stage(&s);
        assert_eq!(t[0], 0x0100_0680);
        assert_eq!(t[1], 0x0012_0000);
        assert_eq!(t[2], 8);
        assert_eq!(trb_type(t[3]), kind::SETUP);
        assert_eq!(t[3] & IDT, IDT);
        assert_eq!((t[3] >> 16) & 3, 3, "IN data stage");
        // SET_CONFIGURATION: no data stage.
        let set = setup_stage(&Setup {
            request_type: 0,
            request: 9,
            value: 1,
            index: 0,
            length: 0,
        });
        assert_eq!((set[3] >> 16) & 3, 0);
        assert_eq!(set[3] & CYCLE, 0, "the ring sets the cycle bit");
    }

    #[test]
    fn stages_have_the_right_directions() {
        assert_eq!(data_stage(18, true)[3] & DIR_IN, DIR_IN);
        assert_eq!(data_stage(18, true)[2], 18);
        assert_eq!(status_stage(Some(true))[3] & DIR_IN, 0);
        assert_eq!(status_stage(None)[3] & DIR_IN, DIR_IN);
        assert_eq!(status_stage(Some(false))[3] & DIR_IN, DIR_IN);
        assert_eq!(status_stage(None)[3] & IOC, IOC);
        assert_eq!(trb_type(normal(8)[3]), kind::NORMAL);
        assert_eq!(normal(8)[2], 8);
        let l = link();
        assert_eq!((trb_type(l[3]), l[3] & LINK_TC), (kind::LINK, LINK_TC));
    }

    #[test]
    fn commands_carry_slot_and_endpoint() {
        let c = endpoint_command(kind::RESET_ENDPOINT, 5, 3);
        assert_eq!(trb_type(c[3]), kind::RESET_ENDPOINT);
        assert_eq!(c[3] >> 24, 5);
        assert_eq!((c[3] >> 16) & 0x1f, 3);
        assert_eq!(command(kind::ENABLE_SLOT, 0)[3], 9 << 10);
    }

    #[test]
    fn events_decode() {
        // Transfer event: pointer 0x1234_5670, short packet with 3 bytes left, slot 2, DCI 3.
        let e = Event::decode([
            0x1234_5670,
            0x1,
            13 << 24 | 3,
            2 << 24 | 3 << 16 | kind::TRANSFER_EVENT << 10 | 1,
        ]);
        assert_eq!(e.kind, kind::TRANSFER_EVENT);
        assert_eq!(e.pointer, 0x1_1234_5670);
        assert_eq!(e.pointer_low(), 0x1234_5670);
        assert_eq!((e.code, e.residual, e.slot, e.endpoint), (13, 3, 2, 3));
        assert!(e.ok());
        let stall = Event::decode([0, 0, 6 << 24, kind::TRANSFER_EVENT << 10]);
        assert!(!stall.ok());
        assert_eq!(code_name(stall.code), "stall");
    }
}
