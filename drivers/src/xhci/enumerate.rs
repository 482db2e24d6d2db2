//! Commands, control transfers and device enumeration (xHCI 1.2 §4.3, §4.6; USB 2.0 §9.4;
//! HID 1.11 §7.2).
//!
//! For a connected port (a root port, or a hub's port: `tree`): Enable Slot (§4.6.3),
//! Address Device with the Slot and default control endpoint contexts (§4.6.5),
//! GET_DESCRIPTOR of the device (first its first 8 bytes: at full speed bMaxPacketSize0 may
//! differ from the 8 assumed, and Evaluate Context, §4.6.7, tells the controller), then of
//! the configuration. A hub (class 9) goes back to `tree` to be configured and have its
//! ports looked at. If it has a boot keyboard interface: SET_CONFIGURATION,
//! SET_PROTOCOL(boot), SET_IDLE(32 ms) (the report resent every 32 ms, which times key
//! repeat; a device that stalls it is still used, without repeat), Configure Endpoint for
//! the interrupt IN endpoint (§4.6.6), and one 8-byte report transfer queued; the handler
//! keeps one queued from then on (`events`).
//!
//! One command and one control transfer are in flight at a time. A command or a transfer
//! is waited for through the handler's mailbox with a deadline; a stall on the control
//! endpoint halts it, and Reset Endpoint plus Set TR Dequeue Pointer (§4.6.8, §4.6.10)
//! restart it past the failed transfer. A timeout leaves the ring in an unknown state: the
//! device (or, for a command, the rest of the enumeration) is given up, with the reason
//! noted for `drivers`.

use alloc::format;
use alloc::string::String;
use alloc::vec;

use pci::window::DmaBuffer;

use super::contexts::{self, EP_INTERRUPT_IN, Endpoint, Layout};
use super::descriptors::{self, BootKeyboard, CONFIGURATION, DEVICE};
use super::events::KeyboardPipe;
use super::hub::CLASS_HUB;
use super::place::{self, Place};
use super::registers::Speed;
use super::rings::{self, Ring, low};
use super::trb::{self, Event, Setup, Trb, code, code_name, kind};
use super::tree;
use super::{KeyboardInfo, Xhci};

/// How long a command may take.
const COMMAND_US: u64 = 1_000_000;
/// How long a control transfer may take (USB 2.0 §9.2.6.4 allows 5 s for a request with data;
/// a keyboard answers in milliseconds).
const CONTROL_US: u64 = 1_000_000;
/// Bytes of configuration descriptor read at most.
const CONFIG_MAX: u16 = 1024;
/// The keyboard's idle period: a report at least this often, changed or not, so that a held
/// key repeats (a multiple of 4 ms; 32 ms gives repeats at 31 a second).
const IDLE_MS: u16 = 32;

/// One addressed device: its slot's contexts, its control endpoint's ring and a page for
/// control data.
///
/// Who owns it: [`Xhci`]. Dropping it frees the contexts, the ring and the page (or
/// quarantines them while the function may master the bus); `Xhci` drops it only after the
/// controller halted. A leak costs three or four pages.
pub(super) struct Device {
    pub slot: u8,
    /// Where it sits: root port, route string, speed, transaction translator.
    pub place: Place,
    /// The device context, the controller's from Address Device on (DCBAA entry `slot`).
    pub _output: DmaBuffer,
    pub input: DmaBuffer,
    pub ep0: Ring,
    pub data: DmaBuffer,
    pub max_packet0: u16,
    /// Set by a control transfer that timed out: the ring's state is unknown.
    pub broken: bool,
}

impl Xhci {
    /// Waits for an event in the mailbox that `wanted` accepts, skipping others, until
    /// `timeout_us` has passed.
    fn wait_event(
        &self,
        timeout_us: u64,
        what: &str,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Result<Event, String> {
        let function = self.controller.function();
        let start = function.now_us();
        let mailbox = &self.shared.mailbox;
        loop {
            while let Some(t) = mailbox.take() {
                let e = Event::decode(t);
                if wanted(&e) {
                    return Ok(e);
                }
            }
            let waited = function.now_us().saturating_sub(start);
            if waited >= timeout_us {
                let regs = &self.controller.regs;
                return Err(format!(
                    "{what}: no completion within {} ms ({} interrupt(s), {} event(s) lost, USBSTS {:#x})",
                    timeout_us / 1000,
                    self.interrupts(),
                    mailbox.lost.load(core::sync::atomic::Ordering::Relaxed),
                    regs.read_op(super::registers::USBSTS)
                ));
            }
            function.wait_until(timeout_us - waited, || !mailbox.is_empty());
        }
    }

    /// Runs one command (with `pointer` in dwords 0-1, `t[0]`'s low bits ORed in); its
    /// completion event, or an error naming the completion code.
    pub(super) fn command(
        &mut self,
        name: &str,
        t: Trb,
        pointer: Option<pci::dma::BusAddr<'_>>,
    ) -> Result<Event, String> {
        if let Some(broken) = &self.commands_broken {
            return Err(format!("{name}: command ring unusable ({broken})"));
        }
        let at = self.commands.push(t, pointer);
        self.controller.regs.ring(0, 0);
        let e = self
            .wait_event(COMMAND_US, name, |e| {
                e.kind == kind::COMMAND_COMPLETION && e.pointer_low() == at
            })
            .inspect_err(|e| self.commands_broken = Some(e.clone()))?;
        if e.code != code::SUCCESS {
            return Err(format!(
                "{name}: {} (completion code {})",
                code_name(e.code),
                e.code
            ));
        }
        Ok(e)
    }

    /// One control transfer on device `d`'s endpoint 0; the bytes received (IN), or the
    /// count sent (OUT, `data` copied to the device first).
    fn control(&mut self, d: usize, setup: Setup, out: &mut [u8]) -> Result<usize, String> {
        let length = setup.length;
        let what = format!(
            "request {:#04x}/{:#04x} value {:#06x}",
            setup.request_type, setup.request, setup.value
        );
        // Behind a hub, or to one being walked: no later than the walk's deadline.
        let now = self.controller.function().now_us();
        let wait_us = self.hub_walk.clamp(now, CONTROL_US);
        if wait_us == 0 {
            return Err(format!("{what}: not sent, {}", tree::WALK_SPENT));
        }
        let dev = &mut self.devices[d];
        if dev.broken {
            return Err(format!("{what}: control endpoint unusable after a timeout"));
        }
        let slot = dev.slot;
        dev.ep0.push(trb::setup_stage(&setup), None);
        let data_at = (length > 0).then(|| {
            if !setup.is_in() {
                dev.data.write_bytes(0, &out[..usize::from(length)]);
            }
            dev.ep0.push(
                trb::data_stage(length, setup.is_in()),
                Some(dev.data.bus_address()),
            )
        });
        let status_at = dev
            .ep0
            .push(trb::status_stage((length > 0).then(|| setup.is_in())), None);
        self.controller.regs.ring(slot, 1);
        // One deadline for the whole transfer: events of this endpoint that name none of its
        // TRBs (a stale or bogus event) are skipped, and must not restart the wait.
        let deadline = now.saturating_add(wait_us);
        let mut residual = 0;
        loop {
            let left = deadline.saturating_sub(self.controller.function().now_us());
            let e = self.wait_event(left, &what, |e| {
                e.kind == kind::TRANSFER_EVENT && e.slot == slot && e.endpoint == 1
            });
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    self.devices[d].broken = true;
                    return Err(err);
                }
            };
            if !e.ok() {
                let recovered = if e.code == code::STALL {
                    self.restart_ep0(d)
                } else {
                    Err(String::new())
                };
                if recovered.is_err() {
                    self.devices[d].broken = true;
                }
                return Err(format!(
                    "{what}: {} (completion code {})",
                    code_name(e.code),
                    e.code
                ));
            }
            if Some(e.pointer_low()) == data_at {
                residual = e.residual;
            }
            if e.pointer_low() == status_at {
                break;
            }
        }
        let got = usize::from(length).saturating_sub(residual as usize);
        if setup.is_in() {
            self.devices[d].data.read_bytes(0, &mut out[..got]);
        }
        Ok(got)
    }

    /// After a stall: Reset Endpoint, then Set TR Dequeue Pointer to the enqueue position,
    /// past the failed transfer's TRBs.
    fn restart_ep0(&mut self, d: usize) -> Result<(), String> {
        let slot = self.devices[d].slot;
        self.command(
            "Reset Endpoint",
            trb::endpoint_command(kind::RESET_ENDPOINT, slot, 1),
            None,
        )?;
        // Borrow the ring out of `self` for the pointer: the command ring is a sibling field.
        let dev = &self.devices[d];
        let (at, cycle) = dev.ep0.enqueue();
        let mut t = trb::endpoint_command(kind::SET_TR_DEQUEUE, slot, 1);
        t[0] = u32::from(cycle);
        let pushed = self.commands.push(t, Some(at));
        self.controller.regs.ring(0, 0);
        let e = self.wait_event(COMMAND_US, "Set TR Dequeue Pointer", |e| {
            e.kind == kind::COMMAND_COMPLETION && e.pointer_low() == pushed
        })?;
        if e.code != code::SUCCESS {
            return Err(format!("Set TR Dequeue Pointer: {}", code_name(e.code)));
        }
        Ok(())
    }

    fn get_descriptor(
        &mut self,
        d: usize,
        kind: u8,
        length: u16,
    ) -> Result<alloc::vec::Vec<u8>, String> {
        self.request_in(d, 0x80, 6, u16::from(kind) << 8, 0, length)
    }

    /// A request with an IN data stage of `length` bytes at most; the bytes received.
    pub(super) fn request_in(
        &mut self,
        d: usize,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        length: u16,
    ) -> Result<alloc::vec::Vec<u8>, String> {
        let mut buf = vec![0u8; usize::from(length)];
        let got = self.control(
            d,
            Setup {
                request_type,
                request,
                value,
                index,
                length,
            },
            &mut buf,
        )?;
        buf.truncate(got);
        Ok(buf)
    }

    pub(super) fn request_out(
        &mut self,
        d: usize,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
    ) -> Result<(), String> {
        self.control(
            d,
            Setup {
                request_type,
                request,
                value,
                index,
                length: 0,
            },
            &mut [],
        )
        .map(|_| ())
    }

    /// Enumerates the device at `place` (its port enabled): a boot keyboard ends up
    /// delivering reports, a hub comes back addressed for `tree` to configure, another
    /// device is left addressed and unconfigured; `Err` says what failed.
    pub(super) fn attach(&mut self, place: Place) -> Result<Attached, String> {
        let speed = place.speed;
        let layout = Layout {
            size: self.controller.regs.caps.context_size(),
        };
        // Enable Slot (§4.6.3): the slot ID is in the completion.
        let e = self.command("Enable Slot", trb::command(kind::ENABLE_SLOT, 0), None)?;
        let slot = e.slot;
        if slot == 0 || slot > self.slots_enabled {
            return Err(format!("Enable Slot returned slot {slot}"));
        }
        let master = self.controller.master();
        let ac64 = self.controller.regs.caps.ac64;
        let page = |what: &str| rings::dma(master, ac64, 4096, &format!("slot {slot} {what}"));
        let output = page("device context")?;
        let input = page("input context")?;
        let data = page("control data")?;
        let ep0 = Ring::new(master, ac64, "control endpoint")?;
        if !output.bus_address().is_aligned(64) || !input.bus_address().is_aligned(64) {
            return Err("contexts: DMA memory not 64-byte aligned".into());
        }
        self.dcbaa
            .write_bus_address(u64::from(slot) * 8, output.bus_address());
        let max_packet0 = speed.default_max_packet();
        self.devices.push(Device {
            slot,
            place,
            _output: output,
            input,
            ep0,
            data,
            max_packet0,
            broken: false,
        });
        let d = self.devices.len() - 1;
        // Address Device (§4.6.5): Add flags A0 (slot) and A1 (EP0).
        {
            let dev = &self.devices[d];
            write_dwords(&dev.input, layout.control(), &[0, 0b11]);
            write_dwords(
                &dev.input,
                layout.input_slot(),
                &place::slot(&place, 1, None),
            );
            write_endpoint(
                &dev.input,
                layout.input_endpoint(1),
                &Endpoint::control(max_packet0),
                &dev.ep0,
            );
        }
        self.command_with_input(d, "Address Device", kind::ADDRESS_DEVICE)?;
        // The first 8 bytes of the device descriptor: bMaxPacketSize0.
        let head = self.get_descriptor(d, DEVICE, 8)?;
        let dev8 = descriptors::device(&head)?;
        let mps = match speed {
            Speed::Super | Speed::SuperPlus => 1u16 << dev8.max_packet0.min(9),
            _ => u16::from(dev8.max_packet0),
        };
        if !matches!(mps, 8 | 16 | 32 | 64 | 512) {
            return Err(format!(
                "bMaxPacketSize0 {} is not a valid size",
                dev8.max_packet0
            ));
        }
        if mps != max_packet0 {
            let dev = &mut self.devices[d];
            dev.max_packet0 = mps;
            write_dwords(&dev.input, layout.control(), &[0, 0b10]);
            write_endpoint(
                &dev.input,
                layout.input_endpoint(1),
                &Endpoint::control(mps),
                &dev.ep0,
            );
            self.command_with_input(d, "Evaluate Context", kind::EVALUATE_CONTEXT)?;
        }
        let desc = descriptors::device(&self.get_descriptor(d, DEVICE, 18)?)?;
        let header = self.get_descriptor(d, CONFIGURATION, 9)?;
        let total = descriptors::configuration_length(&header)?.min(CONFIG_MAX);
        let config = self.get_descriptor(d, CONFIGURATION, total)?;
        if desc.class == CLASS_HUB || descriptors::has_interface_class(&config, CLASS_HUB)? {
            if matches!(speed, Speed::Super | Speed::SuperPlus) {
                return Ok(Attached::Other(format!(
                    "USB 3 hub {:04x}:{:04x}: not supported (its USB 2 half, on a USB 2 port, is used)",
                    desc.vendor, desc.product
                )));
            }
            return Ok(Attached::Hub(HubFound {
                d,
                configuration: descriptors::configuration_value(&config)?,
                vendor: desc.vendor,
                product: desc.product,
            }));
        }
        let Some(k) = descriptors::boot_keyboard(&config)? else {
            return Ok(Attached::Other(format!(
                "device {:04x}:{:04x} (class {:#04x}) has no boot keyboard interface",
                desc.vendor, desc.product, desc.class
            )));
        };
        self.configure_keyboard(d, &k, layout)?;
        Ok(Attached::Keyboard(KeyboardInfo {
            position: place.name(),
            slot,
            speed,
            vendor: desc.vendor,
            product: desc.product,
            endpoint: k.endpoint,
            interval: contexts::interval(speed, k.interval),
            notes: self.keyboard_notes.take(),
        }))
    }

    /// Runs `kind` (Address Device, Evaluate Context, Configure Endpoint) with device
    /// `d`'s input context.
    pub(super) fn command_with_input(
        &mut self,
        d: usize,
        name: &str,
        kind: u32,
    ) -> Result<(), String> {
        if let Some(broken) = &self.commands_broken {
            return Err(format!("{name}: command ring unusable ({broken})"));
        }
        let slot = self.devices[d].slot;
        let at = self.commands.push(
            trb::command(kind, slot),
            Some(self.devices[d].input.bus_address()),
        );
        self.controller.regs.ring(0, 0);
        let e = self
            .wait_event(COMMAND_US, name, |e| {
                e.kind == trb::kind::COMMAND_COMPLETION && e.pointer_low() == at
            })
            .inspect_err(|e| self.commands_broken = Some(e.clone()))?;
        if e.code != code::SUCCESS {
            return Err(format!(
                "{name}: {} (completion code {})",
                code_name(e.code),
                e.code
            ));
        }
        Ok(())
    }

    /// SET_CONFIGURATION, SET_PROTOCOL(boot), SET_IDLE(32 ms), Configure Endpoint, the first
    /// report queued and the pipe handed to the handler.
    fn configure_keyboard(
        &mut self,
        d: usize,
        k: &BootKeyboard,
        layout: Layout,
    ) -> Result<(), String> {
        let interface = u16::from(k.interface);
        self.request_out(d, 0x00, 9, u16::from(k.configuration), 0)
            .map_err(|e| format!("SET_CONFIGURATION: {e}"))?;
        if k.alternate != 0 {
            self.request_out(d, 0x01, 11, u16::from(k.alternate), interface)
                .map_err(|e| format!("SET_INTERFACE: {e}"))?;
        }
        let mut notes = String::new();
        // Boot protocol (HID 1.11 §7.2.6): value 0. Required of boot devices; a stall is
        // noted and the keyboard tried anyway (most power up in report protocol, whose
        // keyboard reports are the boot layout on simple devices).
        if let Err(e) = self.request_out(d, 0x21, 0x0B, 0, interface) {
            notes.push_str(&format!("SET_PROTOCOL failed ({e}); "));
        }
        // Idle rate (HID 1.11 §7.2.4; wValue: the duration in 4 ms units, then report ID
        // 0): the report is sent again every IDLE_MS while nothing changes, which is what
        // times key repeat (`shell::hid::Keyboard::with_repeat`). Optional: a keyboard that
        // stalls it is used without key repeat.
        let decoder = match self.request_out(d, 0x21, 0x0A, (IDLE_MS / 4) << 8, interface) {
            Ok(()) => shell::hid::Keyboard::with_repeat(u32::from(IDLE_MS)),
            Err(e) => {
                notes.push_str(&format!("SET_IDLE refused ({e}): keys do not repeat; "));
                shell::hid::Keyboard::new()
            }
        };
        let dci = contexts::dci(k.endpoint);
        let speed = self.devices[d].place.speed;
        let master = self.controller.master();
        let ac64 = self.controller.regs.caps.ac64;
        let ring = Ring::new(master, ac64, "keyboard endpoint")?;
        let report = rings::dma(master, ac64, 64, "keyboard report buffer")?;
        let burst = if speed == Speed::High { k.extra } else { 0 };
        let endpoint = Endpoint {
            kind: EP_INTERRUPT_IN,
            max_packet: k.max_packet,
            max_burst: burst,
            interval: contexts::interval(speed, k.interval),
            max_esit: u32::from(k.max_packet) * (u32::from(burst) + 1),
            average_trb: 8,
        };
        {
            let dev = &self.devices[d];
            write_dwords(&dev.input, layout.control(), &[0, 1 | 1 << dci]);
            write_dwords(
                &dev.input,
                layout.input_slot(),
                &place::slot(&dev.place, dci, None),
            );
            write_endpoint(&dev.input, layout.input_endpoint(dci), &endpoint, &ring);
        }
        self.command_with_input(d, "Configure Endpoint", kind::CONFIGURE_ENDPOINT)?;
        let mut pipe = KeyboardPipe {
            slot: self.devices[d].slot,
            dci,
            ring,
            report,
            length: k.max_packet.clamp(8, 64),
            decoder,
            pending: None,
            last_mfindex: None,
        };
        pipe.queue();
        // Handed over before the doorbell: the first report's event finds it there.
        *self.handoff.lock() = Some(pipe);
        self.controller.regs.ring(self.devices[d].slot, dci);
        if !notes.is_empty() {
            self.keyboard_notes = Some(String::from(notes.trim_end_matches("; ")));
        }
        Ok(())
    }
}

/// What enumerating a port found.
pub(super) enum Attached {
    /// A boot keyboard, now delivering reports.
    Keyboard(KeyboardInfo),
    /// Another device, and what it is.
    Other(String),
    /// A hub, addressed, for `tree` to configure.
    Hub(HubFound),
}

/// A hub found by [`Xhci::attach`].
pub(super) struct HubFound {
    /// Its index in `Xhci::devices`.
    pub d: usize,
    /// bConfigurationValue, for SET_CONFIGURATION.
    pub configuration: u8,
    pub vendor: u16,
    pub product: u16,
}

pub(super) fn write_dwords(buf: &DmaBuffer, at: u64, dwords: &[u32]) {
    for (i, d) in dwords.iter().enumerate() {
        buf.write32(at + 4 * i as u64, *d);
    }
}

/// An Endpoint Context: dwords 0, 1, 4, and the TR Dequeue Pointer of `ring`'s enqueue
/// position with its cycle as DCS (dwords 2-3).
fn write_endpoint(buf: &DmaBuffer, at: u64, e: &Endpoint, ring: &Ring) {
    let [d0, d1, d4] = e.dwords();
    buf.write32(at, d0);
    buf.write32(at + 4, d1);
    let (dequeue, cycle) = ring.enqueue();
    buf.write_bus_address(at + 8, dequeue);
    buf.write32(at + 8, low(dequeue) | u32::from(cycle));
    buf.write32(at + 16, d4);
}
