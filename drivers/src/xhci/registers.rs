//! xHCI registers (eXtensible Host Controller Interface 1.2, chapter 5): the capability
//! registers at the start of BAR 0 (§5.3), the operational registers after them (§5.4), the
//! port register sets (§5.4.8), interrupter 0 of the runtime registers (§5.5.2) and the
//! doorbell array (§5.6); and what [`Capabilities::parse`] makes of the capability registers.
//!
//! The driver maps three windows, each exactly what it uses: capability + operational +
//! port registers, interrupter 0, and the doorbells of the slots it enables. The MSI-X table
//! lives in the same BAR (QEMU: at 0x3000), and a window that covered it would be refused
//! (`PciFunction::map_bar`).

use alloc::format;
use alloc::string::String;

// Capability registers (§5.3), offsets from the BAR.
/// CAPLENGTH (7:0) and HCIVERSION (31:16) in one dword (§5.3.1, §5.3.2).
pub(super) const CAPLENGTH: u64 = 0x00;
/// HCSPARAMS1 (§5.3.3): MaxSlots 7:0, MaxIntrs 18:8, MaxPorts 31:24.
pub(super) const HCSPARAMS1: u64 = 0x04;
/// HCSPARAMS2 (§5.3.4): ERST Max 7:4, Max Scratchpad Buffers Hi 25:21, Lo 31:27.
pub(super) const HCSPARAMS2: u64 = 0x08;
/// HCCPARAMS1 (§5.3.6): AC64 bit 0, PPC bit 3, CSZ bit 2, xECP 31:16 (in dwords).
pub(super) const HCCPARAMS1: u64 = 0x10;
/// DBOFF (§5.3.7): the doorbell array's offset, 31:2.
pub(super) const DBOFF: u64 = 0x14;
/// RTSOFF (§5.3.8): the runtime registers' offset, 31:5.
pub(super) const RTSOFF: u64 = 0x18;
/// Bytes of capability registers the driver reads.
pub(super) const CAP_BYTES: u64 = 0x20;

// Operational registers (§5.4), offsets from CAPLENGTH.
/// USBCMD (§5.4.1).
pub(super) const USBCMD: u64 = 0x00;
/// USBCMD.R/S: run.
pub(super) const CMD_RUN: u32 = 1 << 0;
/// USBCMD.HCRST: host controller reset.
pub(super) const CMD_HCRST: u32 = 1 << 1;
/// USBCMD.INTE: interrupter enable.
pub(super) const CMD_INTE: u32 = 1 << 2;
/// USBSTS (§5.4.2).
pub(super) const USBSTS: u64 = 0x04;
/// USBSTS.HCH: halted.
pub(super) const STS_HCH: u32 = 1 << 0;
/// USBSTS.HSE: host system error.
pub(super) const STS_HSE: u32 = 1 << 2;
/// USBSTS.EINT: event interrupt (RW1C).
pub(super) const STS_EINT: u32 = 1 << 3;
/// USBSTS.CNR: controller not ready.
pub(super) const STS_CNR: u32 = 1 << 11;
/// USBSTS.HCE: host controller error.
pub(super) const STS_HCE: u32 = 1 << 12;
/// PAGESIZE (§5.4.3): bit 0 = 4 KiB pages supported.
pub(super) const PAGESIZE: u64 = 0x08;
/// CRCR (§5.4.5): command ring pointer 63:6, RCS bit 0.
pub(super) const CRCR: u64 = 0x18;
/// DCBAAP (§5.4.6).
pub(super) const DCBAAP: u64 = 0x30;
/// CONFIG (§5.4.7): MaxSlotsEn 7:0.
pub(super) const CONFIG: u64 = 0x38;
/// The first port register set (§5.4.8): port `n` (1-based) at `0x400 + 0x10 * (n - 1)`.
pub(super) const PORTS: u64 = 0x400;

// PORTSC (§5.4.8).
/// Current Connect Status.
pub(super) const PORT_CCS: u32 = 1 << 0;
/// Port Enabled/Disabled (RW1C: writing 1 disables the port).
pub(super) const PORT_PED: u32 = 1 << 1;
/// Port Reset.
pub(super) const PORT_PR: u32 = 1 << 4;
/// Port Power.
pub(super) const PORT_PP: u32 = 1 << 9;
/// Port Speed, 13:10.
pub(super) const PORT_SPEED_SHIFT: u32 = 10;
/// The change bits (RW1C): CSC, PEC, WRC, OCC, PRC, PLC, CEC.
pub(super) const PORT_CHANGES: u32 = 0x7f << 17;
/// Port Reset Change.
pub(super) const PORT_PRC: u32 = 1 << 21;
/// The bits written back as read so that a write changes nothing else: PP, the indicator
/// control (15:14) and the wake enables (27:25). Everything else is read-only, RW1C (written
/// as 0 to leave it), or acts when written 1 (PR, LWS, WPR).
pub(super) const PORT_PRESERVE: u32 = PORT_PP | 3 << 14 | 7 << 25;

// Interrupter 0 (§5.5.2), offsets from RTSOFF.
/// MFINDEX (§5.5.1): the microframe index, 125 µs a count, bits 13:0 (wraps every
/// 2.048 s while the controller runs).
pub(super) const MFINDEX: u64 = 0x00;
/// MFINDEX's counting bits.
pub(super) const MFINDEX_MASK: u32 = 0x3fff;
/// IMAN (§5.5.2.1): IP bit 0 (RW1C), IE bit 1.
pub(super) const IMAN: u64 = 0x20;
/// IMAN.IP.
pub(super) const IMAN_IP: u32 = 1 << 0;
/// IMAN.IE.
pub(super) const IMAN_IE: u32 = 1 << 1;
/// IMOD (§5.5.2.2): interval 15:0 in 250 ns units.
pub(super) const IMOD: u64 = 0x24;
/// ERSTSZ (§5.5.2.3.1).
pub(super) const ERSTSZ: u64 = 0x28;
/// ERSTBA (§5.5.2.3.2).
pub(super) const ERSTBA: u64 = 0x30;
/// ERDP (§5.5.2.3.3): dequeue pointer 63:4, EHB bit 3 (RW1C).
pub(super) const ERDP: u64 = 0x38;
/// ERDP.EHB: event handler busy.
pub(super) const ERDP_EHB: u32 = 1 << 3;
/// Bytes of runtime registers mapped: MFINDEX, reserved, interrupter 0.
pub(super) const RUNTIME_BYTES: u64 = 0x40;

// Extended capabilities (§7).
/// USB Legacy Support (§7.1).
pub(super) const EXT_LEGACY: u8 = 1;
/// USBLEGSUP: HC BIOS Owned Semaphore.
pub(super) const LEGACY_BIOS_OWNED: u32 = 1 << 16;
/// USBLEGSUP: HC OS Owned Semaphore.
pub(super) const LEGACY_OS_OWNED: u32 = 1 << 24;
/// USBLEGCTLSTS (§7.1.2): the SMI enables (0, 4, 13, 14, 15) off, the RW1C SMI statuses
/// (29, 30, 31) cleared.
pub(super) const LEGACY_CTLSTS_CLEAR: u32 = 0xE000_0000;
/// Supported Protocol (§7.2).
pub(super) const EXT_PROTOCOL: u8 = 2;

/// What the capability registers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Capabilities {
    /// Where the operational registers start.
    pub caplength: u64,
    /// HCIVERSION, BCD (0x0100 = 1.0).
    pub version: u16,
    pub max_slots: u8,
    pub max_ports: u8,
    /// Scratchpad buffers the controller needs.
    pub scratchpads: u16,
    /// 64-byte contexts (HCCPARAMS1.CSZ).
    pub context_64: bool,
    /// Port power control (HCCPARAMS1.PPC): ports must be powered by software.
    pub port_power: bool,
    /// 64-bit addressing (HCCPARAMS1.AC64).
    pub ac64: bool,
    /// First extended capability, bytes from the BAR (0: none).
    pub xecp: u64,
    pub dboff: u64,
    pub rtsoff: u64,
}

impl Capabilities {
    /// Parses the capability registers' first dwords (`regs[i]` at offset `4 * i`) and checks
    /// them against the BAR's size: every register set they place must fit in it.
    pub fn parse(regs: [u32; 8], bar_size: u64) -> Result<Capabilities, String> {
        if regs[0] == u32::MAX {
            return Err("capability registers read all ones (memory decoding off?)".into());
        }
        let reg = |offset: u64| regs[(offset / 4) as usize];
        let caplength = u64::from(reg(CAPLENGTH) & 0xff);
        let hcs1 = reg(HCSPARAMS1);
        let hcs2 = reg(HCSPARAMS2);
        let hcc1 = reg(HCCPARAMS1);
        let caps = Capabilities {
            caplength,
            version: (reg(CAPLENGTH) >> 16) as u16,
            max_slots: hcs1 as u8,
            max_ports: (hcs1 >> 24) as u8,
            scratchpads: (((hcs2 >> 21) & 0x1f) << 5 | (hcs2 >> 27)) as u16,
            context_64: hcc1 & (1 << 2) != 0,
            port_power: hcc1 & (1 << 3) != 0,
            ac64: hcc1 & 1 != 0,
            xecp: u64::from(hcc1 >> 16) * 4,
            dboff: u64::from(reg(DBOFF) & !3),
            rtsoff: u64::from(reg(RTSOFF) & !0x1f),
        };
        if caplength < CAP_BYTES {
            return Err(format!(
                "CAPLENGTH {caplength:#x} is shorter than the capability registers"
            ));
        }
        if caps.max_slots == 0 || caps.max_ports == 0 {
            return Err(format!(
                "HCSPARAMS1 {hcs1:#x}: {} slots, {} ports",
                caps.max_slots, caps.max_ports
            ));
        }
        let fits = |what: &str, start: u64, len: u64| {
            if start.checked_add(len).is_some_and(|end| end <= bar_size) {
                Ok(())
            } else {
                Err(format!(
                    "{what} at {start:#x} (+{len:#x}) lie outside BAR 0 ({bar_size:#x} bytes)"
                ))
            }
        };
        fits("operational and port registers", 0, caps.oper_len())?;
        fits("runtime registers", caps.rtsoff, RUNTIME_BYTES)?;
        fits("doorbells", caps.dboff, 4 * (u64::from(caps.max_slots) + 1))?;
        Ok(caps)
    }

    /// Bytes from the BAR's start to the end of the last port register set.
    pub fn oper_len(&self) -> u64 {
        self.caplength + PORTS + 0x10 * u64::from(self.max_ports)
    }

    /// Offset of port `n`'s PORTSC (1-based) in the operational window.
    pub fn portsc(&self, port: u8) -> u64 {
        self.caplength + PORTS + 0x10 * u64::from(port - 1)
    }

    /// Bytes of one context (HCCPARAMS1.CSZ).
    pub fn context_size(&self) -> u64 {
        if self.context_64 { 64 } else { 32 }
    }
}

/// A port's speed (PORTSC.Port Speed with the default Protocol Speed IDs, §7.2.2.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Speed {
    Full,
    Low,
    High,
    Super,
    SuperPlus,
}

impl Speed {
    pub fn from_portsc(portsc: u32) -> Option<Speed> {
        Some(match (portsc >> PORT_SPEED_SHIFT) & 0xf {
            1 => Speed::Full,
            2 => Speed::Low,
            3 => Speed::High,
            4 => Speed::Super,
            5 => Speed::SuperPlus,
            _ => return None,
        })
    }

    /// The Slot Context's Speed field value (the same IDs).
    pub fn id(self) -> u32 {
        match self {
            Speed::Full => 1,
            Speed::Low => 2,
            Speed::High => 3,
            Speed::Super => 4,
            Speed::SuperPlus => 5,
        }
    }

    /// The default control endpoint's max packet size before the device descriptor is read
    /// (USB 2.0 §5.5.3; USB 3.2 §9.6.1: 512).
    pub fn default_max_packet(self) -> u16 {
        match self {
            Speed::Low | Speed::Full => 8,
            Speed::High => 64,
            Speed::Super | Speed::SuperPlus => 512,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Speed::Full => "full speed",
            Speed::Low => "low speed",
            Speed::High => "high speed",
            Speed::Super => "SuperSpeed",
            Speed::SuperPlus => "SuperSpeedPlus",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's qemu-xhci: CAPLENGTH 0x40, version 1.0, 64 slots, 16 interrupters, 8 ports,
    /// no scratchpads, AC64, xECP 0x20, DBOFF 0x2000, RTSOFF 0x1000; BAR 0 of 16 KiB.
    const QEMU: [u32; 8] = [
        0x0100_0040,
        0x0800_1040,
        0x0000_000f,
        0,
        0x0008_0001,
        0x2000,
        0x1000,
        0,
    ];

    #[test]
    fn parses_qemu_capabilities() {
        let c = Capabilities::parse(QEMU, 0x4000).unwrap();
        assert_eq!((c.caplength, c.version), (0x40, 0x100));
        assert_eq!((c.max_slots, c.max_ports, c.scratchpads), (64, 8, 0));
        assert_eq!((c.xecp, c.dboff, c.rtsoff), (0x20, 0x2000, 0x1000));
        assert!(c.ac64 && !c.context_64 && !c.port_power);
        assert_eq!(c.portsc(1), 0x440);
        assert_eq!(c.portsc(8), 0x4b0);
        assert_eq!(c.context_size(), 32);
    }

    #[test]
    fn scratchpad_count_joins_both_fields() {
        let mut regs = QEMU;
        // Hi = 1 (bit 21), Lo = 3 (bits 31:27): 1 << 5 | 3 = 35.
        regs[2] = 1 << 21 | 3 << 27;
        regs[4] |= 1 << 2;
        let c = Capabilities::parse(regs, 0x4000).unwrap();
        assert_eq!(c.scratchpads, 35);
        assert_eq!(c.context_size(), 64);
    }

    #[test]
    fn refuses_bogus_capabilities() {
        assert!(
            Capabilities::parse([u32::MAX; 8], 0x4000)
                .unwrap_err()
                .contains("all ones")
        );
        let mut short = QEMU;
        short[0] = 0x0100_0010;
        assert!(
            Capabilities::parse(short, 0x4000)
                .unwrap_err()
                .contains("CAPLENGTH")
        );
        let mut far = QEMU;
        far[5] = 0x3ffc;
        assert!(
            Capabilities::parse(far, 0x4000)
                .unwrap_err()
                .contains("doorbells")
        );
        let mut none = QEMU;
        none[1] = 0x0800_0000;
        assert!(Capabilities::parse(none, 0x4000).is_err());
        assert!(
            Capabilities::parse(QEMU, 0x400)
                .unwrap_err()
                .contains("port registers")
        );
    }

    #[test]
    fn port_speeds() {
        assert_eq!(Speed::from_portsc(3 << 10 | 1), Some(Speed::High));
        assert_eq!(Speed::from_portsc(0), None);
        assert_eq!(Speed::Full.default_max_packet(), 8);
        assert_eq!(Speed::Super.default_max_packet(), 512);
    }
}
