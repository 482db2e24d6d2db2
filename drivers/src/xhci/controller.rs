//! Controller bring-up (xHCI 1.2 §4.2) and the guard that stops it.
//!
//! Order: read the capability registers; take the controller from firmware through the USB
//! Legacy Support capability (§7.1) and note which ports are USB 2 and USB 3 (Supported
//! Protocol capabilities, §7.2); map the register windows; halt (USBCMD.R/S = 0, wait for
//! USBSTS.HCH); reset (USBCMD.HCRST, wait for it and USBSTS.CNR to clear); then, in
//! `Xhci::new`, MaxSlotsEn, the DCBAA with the scratchpad buffer array in entry 0, the
//! command ring (CRCR), the event ring (ERSTSZ, ERDP, ERSTBA), interrupter 0 (IMOD, IMAN)
//! and run (USBCMD.R/S | INTE). Every wait is bounded, and a controller that never halts,
//! never finishes its reset or never runs fails the probe with that message.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use pci::function::BusMaster;
use pci::irq::{IrqVectors, PciFunction};
use pci::window::BarWindow;

use super::registers::*;

/// How long halting may take (§5.4.2: HCH within 16 ms of R/S = 0), with margin.
pub(super) const HALT_US: u64 = 100_000;
/// How long a reset or firmware's hand-over may take.
const RESET_US: u64 = 1_000_000;
/// Extended capabilities walked at most (a `next` loop ends here).
const MAX_EXTENDED: usize = 64;

/// The register windows: capability, operational and port registers from the BAR's start;
/// interrupter 0; the doorbells of the enabled slots.
///
/// Who owns it: the driver state and the interrupt handler, through an `Arc`. Dropping the
/// last `Arc` unmaps the windows; a leak costs the mappings and keeps the function claimed.
pub(super) struct Registers {
    pub caps: Capabilities,
    pub oper: BarWindow,
    pub runtime: BarWindow,
    pub doorbells: BarWindow,
}

impl Registers {
    pub fn read_op(&self, offset: u64) -> u32 {
        self.oper.read32(self.caps.caplength + offset)
    }

    pub fn write_op(&self, offset: u64, value: u32) {
        self.oper.write32(self.caps.caplength + offset, value)
    }

    pub fn portsc(&self, port: u8) -> u32 {
        self.oper.read32(self.caps.portsc(port))
    }

    pub fn write_portsc(&self, port: u8, value: u32) {
        self.oper.write32(self.caps.portsc(port), value)
    }

    /// Rings doorbell `slot` (0: the command ring) for `target` (an endpoint's DCI).
    pub fn ring(&self, slot: u8, target: u8) {
        self.doorbells
            .write32(u64::from(slot) * 4, u32::from(target));
    }
}

/// The inner guard: while it lives the controller may run. Its `Drop` halts the controller
/// (R/S = 0, wait for HCH): a halted controller does no more DMA (§4.2). Then its fields
/// drop: the vectors (handler uninstalled; the handler's event ring and keyboard pipe go
/// with it), bus mastering, the registers. `Xhci` declares it first, so the rings, contexts
/// and scratchpads it holds are freed after the controller stopped.
pub(super) struct Controller {
    pub irq: Option<IrqVectors>,
    pub master: Option<BusMaster>,
    pub regs: Arc<Registers>,
}

impl Controller {
    pub fn irq(&self) -> &IrqVectors {
        self.irq
            .as_ref()
            .expect("vectors present until into_function")
    }

    pub fn function(&self) -> &PciFunction {
        self.irq().function()
    }

    pub fn master(&self) -> &BusMaster {
        self.master.as_ref().expect("present until into_function")
    }

    /// Halts the controller; whether HCH came in time.
    pub fn halt(&self) -> bool {
        halt(&self.regs, self.function())
    }

    /// Halts, releases the vectors as dropping does, gives the function back.
    pub fn into_function(mut self) -> PciFunction {
        self.halt();
        let irq = self.irq.take().expect("vectors present until here");
        let function = irq.into_function();
        drop(self.master.take());
        function
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if self.irq.is_some() {
            self.halt();
        }
    }
}

/// R/S = 0 and interrupts off, then a bounded wait for HCH.
pub(super) fn halt(regs: &Registers, function: &PciFunction) -> bool {
    let cmd = regs.read_op(USBCMD);
    regs.write_op(USBCMD, cmd & !(CMD_RUN | CMD_INTE));
    function.wait_until(HALT_US, || regs.read_op(USBSTS) & STS_HCH != 0)
}

/// Halts and resets the controller (§4.2 steps 1-2).
pub(super) fn reset(regs: &Registers, function: &PciFunction) -> Result<(), String> {
    if regs.read_op(USBSTS) & STS_HCH == 0 && !halt(regs, function) {
        return Err(format!(
            "controller did not halt within {} ms (USBSTS {:#x})",
            HALT_US / 1000,
            regs.read_op(USBSTS)
        ));
    }
    regs.write_op(USBCMD, CMD_HCRST);
    let done = function.wait_until(RESET_US, || {
        regs.read_op(USBCMD) & CMD_HCRST == 0 && regs.read_op(USBSTS) & STS_CNR == 0
    });
    if !done {
        return Err(format!(
            "controller reset did not finish within {} ms (USBCMD {:#x}, USBSTS {:#x})",
            RESET_US / 1000,
            regs.read_op(USBCMD),
            regs.read_op(USBSTS)
        ));
    }
    if regs.read_op(PAGESIZE) & 1 == 0 {
        return Err(format!(
            "PAGESIZE {:#x}: 4 KiB pages not supported",
            regs.read_op(PAGESIZE)
        ));
    }
    Ok(())
}

/// A range of root hub ports speaking one USB major revision (§7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Protocol {
    pub major: u8,
    pub first: u8,
    pub count: u8,
}

/// What the extended capabilities said.
#[derive(Debug, Default)]
pub(super) struct Extended {
    pub protocols: Vec<Protocol>,
    /// How firmware gave the controller up, if it had it.
    pub handoff: Option<String>,
}

/// Walks the extended capabilities (§7): takes ownership from firmware (USB Legacy
/// Support: OS Owned = 1, wait for BIOS Owned = 0, at most a second; a firmware that keeps
/// it is overridden, as Linux does, and the note says so; SMIs off) and collects the
/// Supported Protocol ranges. Each capability is read through a small window of its own.
pub(super) fn extended(function: &PciFunction, caps: &Capabilities, bar_size: u64) -> Extended {
    let mut out = Extended::default();
    let mut at = caps.xecp;
    for _ in 0..MAX_EXTENDED {
        if at == 0 || at + 16 > bar_size {
            break;
        }
        let Ok(w) = function.map_bar(0, at, 16) else {
            break;
        };
        let header = w.read32(0);
        if header == u32::MAX {
            break;
        }
        match header as u8 {
            EXT_LEGACY => out.handoff = Some(take_from_firmware(function, &w)),
            EXT_PROTOCOL => {
                let ports = w.read32(8);
                out.protocols.push(Protocol {
                    major: (header >> 24) as u8,
                    first: ports as u8,
                    count: (ports >> 8) as u8,
                });
            }
            _ => {}
        }
        let next = u64::from((header >> 8) & 0xff) * 4;
        if next == 0 {
            break;
        }
        at += next;
    }
    out
}

fn take_from_firmware(function: &PciFunction, w: &BarWindow) -> String {
    let sup = w.read32(0);
    let note = if sup & LEGACY_BIOS_OWNED == 0 {
        w.write32(0, sup | LEGACY_OS_OWNED);
        String::from("firmware did not own it")
    } else {
        w.write32(0, sup | LEGACY_OS_OWNED);
        let start = function.now_us();
        if function.wait_until(RESET_US, || w.read32(0) & LEGACY_BIOS_OWNED == 0) {
            format!(
                "handed over by firmware in {} ms",
                function.now_us().saturating_sub(start) / 1000
            )
        } else {
            w.write32(0, (w.read32(0) & !LEGACY_BIOS_OWNED) | LEGACY_OS_OWNED);
            format!("firmware kept it for {} ms; taken over", RESET_US / 1000)
        }
    };
    // USBLEGCTLSTS: SMI enables off, reserved bits kept, SMI statuses cleared (RW1C).
    let ctl = w.read32(4);
    w.write32(4, (ctl & LEGACY_CTLSTS_KEEP) | LEGACY_CTLSTS_CLEAR);
    note
}

/// USBLEGCTLSTS bits written back as read: the reserved ones (3:1, 12:5, 19:17).
const LEGACY_CTLSTS_KEEP: u32 = 7 << 1 | 0xff << 5 | 7 << 17;

/// The USB major revision of `port`: from the Supported Protocol ranges; without any, 3 for
/// a port that enabled itself (USB 3 ports train on their own), else 2.
pub(super) fn major(protocols: &[Protocol], port: u8, portsc: u32) -> u8 {
    protocols
        .iter()
        .find(|p| {
            p.count > 0
                && port >= p.first
                && u16::from(port) < u16::from(p.first) + u16::from(p.count)
        })
        .map_or(if portsc & PORT_PED != 0 { 3 } else { 2 }, |p| p.major)
}

/// Gets a connected port to Enabled (§4.3.1): a USB 2 port is reset (PR = 1, wait for
/// PRC); a USB 3 port trains by itself, and is waited for. Returns the speed.
pub(super) fn enable_port(
    regs: &Registers,
    function: &PciFunction,
    port: u8,
    major: u8,
) -> Result<Speed, String> {
    const PORT_US: u64 = 500_000;
    let sc = regs.portsc(port);
    if major < 3 {
        regs.write_portsc(port, (sc & PORT_PRESERVE) | PORT_PR);
        if !function.wait_until(PORT_US, || regs.portsc(port) & PORT_PRC != 0) {
            return Err(format!(
                "reset did not complete within {} ms (PORTSC {:#x})",
                PORT_US / 1000,
                regs.portsc(port)
            ));
        }
    } else if !function.wait_until(PORT_US, || regs.portsc(port) & PORT_PED != 0) {
        return Err(format!(
            "USB 3 link did not come up within {} ms (PORTSC {:#x})",
            PORT_US / 1000,
            regs.portsc(port)
        ));
    }
    // Clear every change bit (RW1C) without touching the rest.
    let sc = regs.portsc(port);
    regs.write_portsc(port, (sc & PORT_PRESERVE) | (sc & PORT_CHANGES));
    if sc & PORT_PED == 0 || sc & PORT_CCS == 0 {
        return Err(format!("not enabled after reset (PORTSC {sc:#x})"));
    }
    Speed::from_portsc(sc).ok_or_else(|| format!("unknown speed (PORTSC {sc:#x})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_majors() {
        // QEMU's `qemu-xhci` layout: USB 3 ports 1-4, USB 2 ports 5-8 (its USB bus port 1 is
        // the controller's port 5).
        let p = [
            Protocol {
                major: 3,
                first: 1,
                count: 4,
            },
            Protocol {
                major: 2,
                first: 5,
                count: 4,
            },
        ];
        assert_eq!(major(&p, 1, 0), 3);
        assert_eq!(major(&p, 4, PORT_PED), 3);
        assert_eq!(major(&p, 5, 0), 2);
        assert_eq!(major(&p, 8, 0), 2);
        // Outside every range, or no ranges: guessed from PED.
        assert_eq!(major(&p, 9, PORT_PED), 3);
        assert_eq!(major(&[], 1, 0), 2);
        let empty = [Protocol {
            major: 3,
            first: 255,
            count: 255,
        }];
        assert_eq!(major(&empty, 255, 0), 3);
    }
}
