//! A driver for USB 3 host controllers (eXtensible Host Controller Interface 1.2, PCI class
//! 0Ch/03h, programming interface 30h) that does one thing: it finds a USB keyboard, on a
//! root port or behind USB 2 hubs, and feeds its keys to the console, for boards whose
//! firmware does not present USB keyboards as PS/2. Tested on QEMU's `qemu-xhci` with
//! `usb-kbd`, on a root port and behind a `usb-hub`.
//!
//! # How the controller is driven
//!
//! - `registers`: the capability, operational, port and runtime registers (spec chapter 5),
//!   and the checks on what the capability registers say.
//! - `controller`: bring-up (§4.2): firmware hand-over (§7.1), halt, reset, and the guard
//!   whose `Drop` halts the controller; port reset and speed (§4.3.1).
//! - `trb` and `rings`: TRB encoding (§6.4) and the rings (§4.9): command and transfer rings
//!   with Link TRBs, the event ring with its segment table, the cycle bits.
//! - `contexts`: device and input contexts (§6.2), 32 or 64 bytes each (HCCPARAMS1.CSZ).
//! - `enumerate`: commands, control transfers and the enumeration of a device (§4.3).
//! - `place`: where a device sits (root port, route string, transaction translator) and
//!   the Slot Context that says so (§6.2.2, §8.9).
//! - `hub` and `tree`: USB 2.0 hubs (USB 2.0 chapter 11): their descriptor, requests and
//!   port status; the walk that configures a hub, resets its connected ports and
//!   enumerates what is behind them, five hubs deep at most.
//! - `descriptors`: the USB descriptors, and finding a boot keyboard (HID 1.11).
//! - `events`: the interrupt handler: the event ring, the keyboard's reports.
//!
//! The key logic that does not touch the controller (boot report differences, HID usages
//! to keys, the bytes each key sends) is `shell::hid`, next to the PS/2 path's `shell::keys`.
//!
//! Interrupts: one vector, MSI-X, else MSI, else the INTx pin (then the handler checks
//! IMAN.IP, the line may be shared), for interrupter 0. What it does is `events`.
//!
//! Limits: USB 2 hubs only (a USB 3 hub's SuperSpeed half is not used; its USB 2 half is),
//! one keyboard (the first found), boot protocol only (no report descriptor parsing), no
//! hot-plug (a keyboard plugged in after bind, on a root port or a hub, needs `unbind` and
//! `bind`; hubs' status-change endpoints are not polled), no LEDs. Key repeat is timed by
//! the keyboard's idle rate (`SET_IDLE`, see `shell::hid`) and measured by MFINDEX between
//! reports, not by a timer.
//!
//! # Ownership
//!
//! Everything is in [`Xhci`]; unbinding is dropping it. Fields drop in declaration order,
//! which is the release protocol (as in NVMe):
//!
//! 1. `Controller` first: its `Drop` halts the controller (USBCMD.R/S = 0, HCH awaited,
//!    100 ms at most), so it writes no more events and reads no more TRBs. Then the vectors
//!    (the handler is uninstalled, and with it drop the event ring and the keyboard's ring
//!    and report buffer it owns), bus mastering, and the register windows.
//! 2. The command ring, the DCBAA, the scratchpad buffers and the devices' contexts and
//!    rings. Had bus mastering still been on, the PCI layer would keep them quarantined until
//!    it went off.
//!
//! What a leak (`mem::forget`) costs: the controller keeps running with one report transfer
//! queued, its vector and handler stay installed (and keep delivering key presses), its
//! pages (a few per device, plus the scratchpads) and register mappings stay taken, and the
//! function stays claimed.

mod contexts;
mod controller;
mod descriptors;
mod enumerate;
mod events;
mod hub;
mod place;
mod registers;
mod rings;
mod trb;
mod tree;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use pci::irq::{IrqKind, IrqKinds, PciFunction};
use pci::window::DmaBuffer;

use crate::fault::{self, Point};
use crate::{Bound, Driver, Match, ProbeError};

use controller::{Controller, Registers};
use enumerate::Device;
use events::{Interrupter, KeyboardPipe, Shared};
use registers::*;
use rings::{EventRing, Ring, low};

/// The programming interface of an xHCI controller (class 0Ch, subclass 03h).
const PROG_IF_XHCI: u8 = 0x30;
/// Slots enabled at most (CONFIG.MaxSlotsEn): a keyboard and whatever else is on the ports.
const MAX_SLOTS: u8 = 16;
/// Scratchpad buffers accepted at most (HCSPARAMS2 allows 1023 pages).
const MAX_SCRATCHPADS: u16 = 256;
/// Interrupt moderation: 1 ms (IMOD counts 250 ns).
const IMOD_INTERVAL: u32 = 4000;
/// How long after run the driver waits for a first connection on the root ports.
const CONNECT_US: u64 = 150_000;

/// The xHCI driver.
pub struct XhciDriver;

impl Driver for XhciDriver {
    fn name(&self) -> &'static str {
        "xhci"
    }

    fn matches(&self) -> &'static [Match] {
        // Serial bus controller / USB controller (PCI Code and ID Assignment); the
        // programming interface (UHCI, OHCI, EHCI or xHCI) is checked by the probe.
        &[Match::Class {
            class: 0x0C,
            subclass: 0x03,
        }]
    }

    fn probe(&self, function: PciFunction) -> Result<Box<dyn Bound>, (PciFunction, ProbeError)> {
        Xhci::new(function).map(|x| Box::new(x) as Box<dyn Bound>)
    }
}

/// The keyboard found, for the status line.
#[derive(Clone, Debug)]
pub(crate) struct KeyboardInfo {
    /// The port path: "2", or "1.2" for port 2 of a hub on root port 1.
    position: String,
    slot: u8,
    speed: Speed,
    vendor: u16,
    product: u16,
    endpoint: u8,
    /// Endpoint Context Interval: 2^interval × 125 µs.
    interval: u8,
    /// Requests the keyboard refused.
    notes: Option<String>,
}

/// The scratchpad buffers the controller asked for (§4.20): an array of page addresses
/// (DCBAA entry 0 points to it) and the pages. Owned by [`Xhci`], dropped after the
/// controller halted; a leak costs the pages.
struct Scratchpads {
    _array: DmaBuffer,
    _pages: Vec<DmaBuffer>,
}

/// A bound xHCI controller.
///
/// Fields drop in declaration order (module documentation): the controller guard first.
pub struct Xhci {
    controller: Controller,
    commands: Ring,
    /// Device Context Base Address Array: slot `n`'s device context at entry `n`,
    /// the scratchpad array at entry 0.
    dcbaa: DmaBuffer,
    _scratchpads: Option<Scratchpads>,
    devices: Vec<Device>,
    shared: Arc<Shared>,
    /// The keyboard's pipe on its way to the handler.
    handoff: Arc<spin::Mutex<Option<KeyboardPipe>>>,
    slots_enabled: u8,
    /// USB 2 and USB 3 ports (from the Supported Protocol capabilities).
    port_counts: (u8, u8),
    handoff_note: Option<String>,
    keyboard: Option<KeyboardInfo>,
    /// Held while the keyboard is configured: the console counts it as a way to type.
    _typing: Option<crate::input::Presence>,
    keyboard_notes: Option<String>,
    /// What the other ports hold, or why they were not used.
    ports: Vec<String>,
    /// Set by a command that timed out: no more commands are sent.
    commands_broken: Option<String>,
    /// The hubs' share of the bind (`tree`): when it ends, and whether a hub is being
    /// walked now.
    hub_walk: tree::Walk,
}

impl Xhci {
    /// Brings the controller up and looks for a keyboard; on failure the function comes
    /// back with the reason. A device that fails to enumerate does not fail the probe: the
    /// reason shows in the status line.
    pub fn new(function: PciFunction) -> Result<Xhci, (PciFunction, ProbeError)> {
        macro_rules! fail {
            ($function:expr, $($arg:tt)*) => {
                return Err(($function, ProbeError(format!($($arg)*))))
            };
        }
        let address = function.address();
        let prog_if = function.info().prog_if;
        if prog_if != PROG_IF_XHCI {
            let kind = match prog_if {
                0x00 => "UHCI",
                0x10 => "OHCI",
                0x20 => "EHCI",
                0xFE => "a USB device",
                _ => "an unknown interface",
            };
            fail!(
                function,
                "programming interface {prog_if:#04x} ({kind}), not xHCI: not driven"
            );
        }
        let Some(bar_size) = function.info().bars[0].map(|b| b.size) else {
            fail!(function, "no BAR 0");
        };
        // 1. Capability registers.
        let caps = match function.map_bar(0, 0, CAP_BYTES) {
            Ok(w) => {
                let regs: [u32; 8] = core::array::from_fn(|i| w.read32(4 * i as u64));
                match Capabilities::parse(regs, bar_size) {
                    Ok(c) => c,
                    Err(e) => fail!(function, "{e}"),
                }
            }
            Err(e) => fail!(function, "BAR 0: {e}"),
        };
        // 2. Firmware hand-over and the ports' protocols.
        let ext = controller::extended(&function, &caps, bar_size);
        // 3. Register windows.
        let slots_enabled = caps.max_slots.min(MAX_SLOTS);
        let window = |what: &str, offset: u64, len: u64| {
            function
                .map_bar(0, offset, len)
                .map_err(|e| format!("{what} [{offset:#x}, +{len:#x}): {e}"))
        };
        let regs = match (
            window("operational registers", 0, caps.oper_len()),
            window("runtime registers", caps.rtsoff, RUNTIME_BYTES),
            window("doorbells", caps.dboff, 4 * (u64::from(slots_enabled) + 1)),
        ) {
            (Ok(oper), Ok(runtime), Ok(doorbells)) => Arc::new(Registers {
                caps,
                oper,
                runtime,
                doorbells,
            }),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => fail!(function, "BAR 0: {e}"),
        };
        // 4. Halt and reset, before bus mastering is on.
        if let Err(e) = controller::reset(&regs, &function) {
            fail!(function, "{e}");
        }
        // 5. One vector; the function moves into it.
        let irq = match function.alloc_irq_vectors(1, 1, IrqKinds::ALL) {
            Ok(v) => v,
            Err((function, e)) => fail!(function, "interrupts: {e}"),
        };
        let master = irq.function().bus_master();
        let mut controller = Controller {
            irq: Some(irq),
            master: Some(master),
            regs,
        };
        let memory = match Memory::new(controller.master(), &caps) {
            Ok(m) => m,
            Err(e) => fail!(controller.into_function(), "{e}"),
        };
        let Memory {
            dcbaa,
            scratchpads,
            commands,
            events,
        } = memory;
        // 6. Program the controller (§4.2 steps 3-8).
        let r = &controller.regs;
        r.write_op(CONFIG, u32::from(slots_enabled));
        r.oper
            .write_bus_address(caps.caplength + DCBAAP, dcbaa.bus_address());
        r.oper
            .write_bus_address(caps.caplength + CRCR, commands.start());
        // RCS = 1: the ring's first lap carries cycle 1.
        r.write_op(CRCR, low(commands.start()) | 1);
        r.runtime.write32(ERSTSZ, 1);
        r.runtime.write_bus_address(ERDP, events.dequeue());
        r.runtime.write_bus_address(ERSTBA, events.table());
        r.runtime.write32(IMOD, IMOD_INTERVAL);
        // 7. The handler, owning the event ring.
        let shared = Arc::new(Shared::new());
        let handoff = Arc::new(spin::Mutex::new(None));
        let mut interrupter = Interrupter {
            regs: controller.regs.clone(),
            ring: events,
            shared: shared.clone(),
            handoff: handoff.clone(),
            keyboard: None,
            intx: controller.irq().kind() == IrqKind::Intx,
        };
        let installed =
            controller
                .irq
                .as_mut()
                .expect("allocated above")
                .install(0, "xhci", move || {
                    fault::point(address, Point::Handler);
                    interrupter.on_interrupt();
                });
        if let Err(e) = installed {
            fail!(controller.into_function(), "handler: {e}");
        }
        let r = &controller.regs;
        r.runtime.write32(IMAN, IMAN_IE | IMAN_IP);
        // 8. Run.
        r.write_op(USBCMD, CMD_RUN | CMD_INTE);
        let running = controller
            .function()
            .wait_until(controller::HALT_US, || r.read_op(USBSTS) & STS_HCH == 0);
        let sts = r.read_op(USBSTS);
        if !running || sts & (STS_HSE | STS_HCE) != 0 {
            fail!(
                controller.into_function(),
                "controller did not run (USBSTS {sts:#x})"
            );
        }
        let count = |major: u8| {
            ext.protocols
                .iter()
                .filter(|p| p.major == major)
                .map(|p| p.count)
                .fold(0u8, u8::saturating_add)
        };
        let mut xhci = Xhci {
            controller,
            commands,
            dcbaa,
            _scratchpads: scratchpads,
            devices: Vec::new(),
            shared,
            handoff,
            slots_enabled,
            port_counts: (count(2), count(3)),
            handoff_note: ext.handoff,
            keyboard: None,
            _typing: None,
            keyboard_notes: None,
            ports: Vec::new(),
            commands_broken: None,
            hub_walk: tree::Walk::default(),
        };
        xhci.scan_ports(&ext.protocols);
        fault::point(address, Point::Probe);
        Ok(xhci)
    }

    /// Powers the ports if software must, waits a little for connections, and enumerates
    /// each connected port (and what hubs on them hold, `tree`) until a keyboard is found.
    fn scan_ports(&mut self, protocols: &[controller::Protocol]) {
        let regs = self.controller.regs.clone();
        let ports = regs.caps.max_ports;
        if regs.caps.port_power {
            for p in 1..=ports {
                let sc = regs.portsc(p);
                if sc & PORT_PP == 0 {
                    regs.write_portsc(p, (sc & PORT_PRESERVE) | PORT_PP);
                }
            }
        }
        let function = self.controller.function();
        function.wait_until(CONNECT_US, || {
            (1..=ports).any(|p| regs.portsc(p) & PORT_CCS != 0)
        });
        for p in 1..=ports {
            let sc = regs.portsc(p);
            if sc & PORT_CCS == 0 {
                continue;
            }
            if self.keyboard.is_some() {
                self.ports.push(format!(
                    "port {p}: not enumerated (a keyboard was found first)"
                ));
                continue;
            }
            let major = controller::major(protocols, p, sc);
            let speed = match controller::enable_port(&regs, self.controller.function(), p, major) {
                Ok(s) => s,
                Err(e) => {
                    self.ports.push(format!("port {p}: {e}"));
                    continue;
                }
            };
            self.attach_at(place::Place::root(p, speed));
        }
    }

    /// Interrupts taken so far.
    pub fn interrupts(&self) -> u64 {
        self.shared.interrupts.load(Ordering::Relaxed)
    }
}

/// The controller's own memory, made before it runs.
struct Memory {
    dcbaa: DmaBuffer,
    scratchpads: Option<Scratchpads>,
    commands: Ring,
    events: EventRing,
}

impl Memory {
    fn new(master: &pci::function::BusMaster, caps: &Capabilities) -> Result<Memory, String> {
        let ac64 = caps.ac64;
        let dcbaa = rings::dma(master, ac64, 4096, "DCBAA")?;
        if !dcbaa.bus_address().is_aligned(64) {
            return Err("DCBAA: DMA memory not 64-byte aligned".into());
        }
        let scratchpads = match caps.scratchpads {
            0 => None,
            n if n > MAX_SCRATCHPADS => {
                return Err(format!(
                    "the controller asks for {n} scratchpad pages (at most {MAX_SCRATCHPADS} given)"
                ));
            }
            n => {
                let array = rings::dma(master, ac64, u64::from(n) * 8, "scratchpad array")?;
                let mut pages = Vec::new();
                for i in 0..u64::from(n) {
                    let page = rings::dma(master, ac64, 4096, &format!("scratchpad page {i}"))?;
                    if !page.bus_address().is_aligned(4096) {
                        return Err("scratchpad page not page-aligned".into());
                    }
                    array.write_bus_address(i * 8, page.bus_address());
                    pages.push(page);
                }
                dcbaa.write_bus_address(0, array.bus_address());
                Some(Scratchpads {
                    _array: array,
                    _pages: pages,
                })
            }
        };
        Ok(Memory {
            dcbaa,
            scratchpads,
            commands: Ring::new(master, ac64, "command")?,
            events: EventRing::new(master, ac64)?,
        })
    }
}

impl Bound for Xhci {
    fn driver(&self) -> &'static str {
        "xhci"
    }

    fn address(&self) -> pci::Address {
        self.controller.function().address()
    }

    fn status(&self) -> String {
        let caps = &self.controller.regs.caps;
        let irq = self.controller.irq();
        let vector = irq.vector(0).map_or(0, |v| v.number());
        let keyboard = match &self.keyboard {
            Some(k) => {
                let stopped = self.shared.stopped.load(Ordering::Relaxed);
                format!(
                    "keyboard {:04x}:{:04x} on port {} (slot {}, {}, endpoint {:#04x} every {} us), {} report(s), {} byte(s) typed{}{}",
                    k.vendor,
                    k.product,
                    k.position,
                    k.slot,
                    k.speed.name(),
                    k.endpoint,
                    125u32 << k.interval,
                    self.shared.reports.load(Ordering::Relaxed),
                    self.shared.bytes.load(Ordering::Relaxed),
                    match self.shared.refused.load(Ordering::Relaxed) {
                        0 => String::new(),
                        n => format!(", {n} refused (rollover or short)"),
                    },
                    if stopped != 0 {
                        format!(", stopped: {} (rebind to restart)", trb::code_name(stopped))
                    } else {
                        String::new()
                    }
                )
            }
            None => String::from("no keyboard"),
        };
        let mut text = format!(
            "xHCI {}.{}, {} ports ({} USB 2, {} USB 3), {} of {} slots, {keyboard}, {} interrupt(s) by {} on vector {vector:#04x}",
            caps.version >> 8,
            (caps.version >> 4) & 0xf,
            caps.max_ports,
            self.port_counts.0,
            self.port_counts.1,
            self.slots_enabled,
            caps.max_slots,
            self.interrupts(),
            irq.kind(),
        );
        if let Some(n) = self.keyboard.as_ref().and_then(|k| k.notes.as_ref()) {
            text.push_str(&format!("; {n}"));
        }
        for p in &self.ports {
            text.push_str(&format!("; {p}"));
        }
        if let Some(h) = &self.handoff_note {
            text.push_str(&format!("; {h}"));
        }
        text
    }

    fn self_test(&mut self) -> Result<String, String> {
        fault::point(self.address(), Point::SelfTest);
        // A No Op command (§4.6.2) round trip: command ring, event ring, interrupt.
        let before = self.interrupts();
        self.command("No Op", trb::command(trb::kind::NO_OP_COMMAND, 0), None)?;
        let after = self.interrupts();
        if after == before {
            return Err("No Op completed without an interrupt".into());
        }
        Ok(format!(
            "No Op command completed by interrupt; {}",
            match &self.keyboard {
                Some(k) => format!("keyboard on port {}", k.position),
                None => String::from("no keyboard"),
            }
        ))
    }
}
