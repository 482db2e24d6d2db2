//! One hot-plug port's state and the servicing of its slot: Slot Status read and
//! acknowledged, the state machine ([`pci::hotplug::Slot`]) fed and its actions carried out
//! (power, indicators, the link wait, the host's attach and detach), and the storm guard.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pci::Address;
use pci::hotplug::{
    self, Action, Events, Indicator, Slot, SlotCapabilities, State, control, offset, status,
};
use pci::irq::{IrqVectors, PciFunction};
use spin::Mutex;

use super::{BUTTON_DELAY_US, EVENTS_HANDLED, HOST, Host};

/// Slot Status event bits this driver acknowledges and acts on (Command Completed is waited
/// for, not handled as an event).
pub(super) const EVENT_BITS: u16 = status::BUTTON_PRESSED
    | status::POWER_FAULT
    | status::MRL_CHANGED
    | status::PRESENCE_CHANGED
    | status::LINK_CHANGED;

/// How often a slot without a message interrupt is looked at, µs.
pub(super) const POLL_INTERVAL_US: u64 = 100_000;
/// Interrupts without an event, within [`STORM_WINDOW_US`], that make a storm.
pub(super) const STORM_INTERRUPTS: u64 = 1000;
/// The window [`STORM_INTERRUPTS`] are counted in: one second.
pub(super) const STORM_WINDOW_US: u64 = 1_000_000;

/// How the port's function is held: by its vectors, or (polled) by itself with a bus-master
/// guard (a bridge forwards its secondary side's memory requests, DMA and MSI, upstream only
/// with Bus Master Enable set: PCI-to-PCI Bridge 1.2 §3.2.2.1.3).
pub(super) enum Owner {
    Irq(IrqVectors),
    Polled(PciFunction, pci::function::BusMaster),
}

impl Owner {
    pub(super) fn function(&self) -> &PciFunction {
        match self {
            Owner::Irq(v) => v.function(),
            Owner::Polled(f, _) => f,
        }
    }

    pub(super) fn into_function(self) -> PciFunction {
        match self {
            Owner::Irq(v) => v.into_function(),
            Owner::Polled(f, master) => {
                drop(master);
                f
            }
        }
    }
}

/// One hot-plug port.
pub(super) struct Port {
    pub(super) address: Address,
    /// Offset of the PCI Express capability.
    pub(super) cap: u16,
    pub(super) caps: SlotCapabilities,
    /// The port reports Data Link Layer Link Active.
    pub(super) link_reporting: bool,
    /// How a freshly powered slot is waited for.
    pub(super) link_wait: hotplug::LinkWait,
    /// Set by the interrupt handler.
    pub(super) pending: Arc<AtomicBool>,
    /// Interrupts taken.
    pub(super) interrupts: Arc<AtomicU64>,
    /// The bound state was dropped: nothing more is done.
    pub(super) unbound: AtomicBool,
    pub(super) inner: Mutex<Inner>,
}

pub(super) struct Inner {
    pub(super) owner: Owner,
    pub(super) slot: Slot,
    /// Slot Control as last written.
    pub(super) control: u16,
    /// The last thing that happened (for `drivers`).
    pub(super) last: String,
    /// A card was found in a powered-off slot at bind: the next service powers it on.
    pub(super) kick: bool,
    /// The first service checked presence detect against what enumeration found.
    pub(super) checked: bool,
    /// The next service checks that the card below still answers (after `pciehp cut`).
    pub(super) probe_card: bool,
    /// Presence detect disagrees with enumeration (functions below an "empty" slot): hot-plug
    /// is handled elsewhere (ACPI hot-plug firmware kept), so this slot is left alone.
    pub(super) inert: bool,
    /// The interrupt counter at the last service.
    pub(super) interrupts_seen: u64,
    /// (start, count) of the current window of interrupts that brought no event.
    pub(super) quiet: (u64, u64),
    /// The port interrupted in a storm: its Hot-Plug Interrupt Enable is off and the slot
    /// is polled, as one without a message interrupt is.
    pub(super) storm: bool,
}

impl Port {
    pub(super) fn host(&self) -> Option<&'static dyn Host> {
        HOST.get().copied()
    }

    pub(super) fn log(&self, line: &str) {
        if let Some(h) = self.host() {
            h.log(&format!(
                "pciehp {} slot {}: {line}",
                self.address,
                self.caps.physical_slot()
            ));
        }
    }

    pub(super) fn status(&self, inner: &Inner) -> u16 {
        inner
            .owner
            .function()
            .config_read16(self.cap + offset::SLOT_STATUS)
    }

    /// Writes Slot Control (one command, §6.7.3.2) and waits for Command Completed. The same
    /// dword write clears the previous Command Completed (write-one-to-clear).
    pub(super) fn command(&self, inner: &mut Inner, value: u16) -> Result<(), String> {
        self.write_control(inner, value, status::COMMAND_COMPLETED)?;
        inner.control = value;
        Ok(())
    }

    pub(super) fn write_control(
        &self,
        inner: &Inner,
        value: u16,
        clear: u16,
    ) -> Result<(), String> {
        let f = inner.owner.function();
        f.config_write32(
            self.cap + offset::SLOT_CONTROL,
            u32::from(value) | (u32::from(clear) << 16),
        )
        .map_err(|e| format!("Slot Control write refused: {e}"))?;
        if self.caps.no_command_completed() {
            return Ok(());
        }
        let done = f.wait_until(hotplug::COMMAND_TIMEOUT_US, || {
            f.config_read16(self.cap + offset::SLOT_STATUS) & status::COMMAND_COMPLETED != 0
        });
        if done {
            Ok(())
        } else if f.vanished() {
            Err("the port stopped answering".into())
        } else {
            Err(format!(
                "Slot Control command {value:#06x} not completed within 1 s"
            ))
        }
    }

    /// Clears the event bits `events` in Slot Status. The Slot Control half of the dword is
    /// written with the enables of events that are not pending masked for the one write (a
    /// port may take a set enable with a clear event bit in the same dword as a Slot Status
    /// write of that bit — QEMU does — and restore the events), then restored.
    pub(super) fn acknowledge(&self, inner: &mut Inner, events: u16) {
        let masked = inner.control & !(0x1f & !events);
        let first = self.write_control(inner, masked, events | status::COMMAND_COMPLETED);
        let second = self.write_control(inner, inner.control, status::COMMAND_COMPLETED);
        if let Err(e) = first.and(second) {
            self.log(&format!("acknowledging events {events:#06x}: {e}"));
        }
    }

    /// Slot Control with the power controller and power indicator as given (only the fields
    /// the slot has).
    pub(super) fn with(
        &self,
        control: u16,
        power: Option<bool>,
        indicator: Option<Indicator>,
    ) -> u16 {
        let mut c = control;
        if let (Some(on), true) = (power, self.caps.power_controller()) {
            c = hotplug::with_power(c, on);
        }
        if let (Some(i), true) = (indicator, self.caps.power_indicator()) {
            c = hotplug::with_power_indicator(c, i);
        }
        c
    }

    /// Sets the power indicator (and maybe the power controller), logging a failure.
    pub(super) fn set(
        &self,
        inner: &mut Inner,
        power: Option<bool>,
        indicator: Option<Indicator>,
    ) -> bool {
        let value = self.with(inner.control, power, indicator);
        match self.command(inner, value) {
            Ok(()) => true,
            Err(e) => {
                self.log(&e);
                false
            }
        }
    }

    /// Reads and acknowledges what happened, runs the state machine and its timer, and
    /// carries out the action. Returns the next deadline, if any.
    pub(super) fn service(&self, host: &'static dyn Host) -> Option<u64> {
        let mut inner = self.inner.lock();
        let signalled = self.pending.swap(false, Ordering::Acquire);
        if inner.inert {
            return None;
        }
        let sta = self.status(&inner);
        if sta == 0xffff {
            // The port itself is gone (a switch pulled out): nothing to do here; the port
            // above unbinds us.
            return None;
        }
        if !core::mem::replace(&mut inner.checked, true)
            && sta & status::PRESENT == 0
            && host.occupied(self.address)
        {
            // The firmware's own hot-plug (ACPI, e.g. QEMU's q35 default) keeps presence
            // detect clear; without `_OSC` this is the sign that native control was not
            // granted. Mask the slot's events and stay out of the way.
            inner.inert = true;
            let quiet = inner.control & !control::EVENT_ENABLES;
            let _ = self.command(&mut inner, quiet);
            self.log(
                "presence detect reads empty but functions are below: hot-plug is handled by firmware (ACPI); leaving this slot alone",
            );
            inner.last =
                String::from("left to firmware (presence detect disagrees with enumeration)");
            return None;
        }
        let events_bits = sta & EVENT_BITS;
        if events_bits != 0 {
            self.acknowledge(&mut inner, events_bits);
        }
        self.watch_for_storm(&mut inner, events_bits != 0, host.now_us());
        let link = self.link_reporting.then(|| {
            inner
                .owner
                .function()
                .config_read16(self.cap + offset::LINK_STATUS)
        });
        let events = Events::decode(sta, link);
        let now = host.now_us();
        let mut action = Action::None;
        if core::mem::take(&mut inner.probe_card)
            && inner.slot.state() == State::On
            && !host.answers(self.address)
        {
            // The card stopped answering with presence detect unchanged (a dead card, or
            // its power lost): the same as its link going down.
            self.log("the card below stopped answering");
            let dead = Events {
                link_changed: true,
                link_active: false,
                ..events
            };
            action = inner.slot.event(dead, now);
        }
        if action == Action::None && events.any() {
            EVENTS_HANDLED.fetch_add(1, Ordering::Relaxed);
            let mut what = Vec::new();
            if events.button {
                what.push("attention button pressed");
            }
            if events.presence_changed {
                what.push(if events.present {
                    "presence detected"
                } else {
                    "presence lost"
                });
            }
            if events.link_changed {
                what.push(if events.link_active {
                    "link up"
                } else {
                    "link down"
                });
            }
            let text = what.join(", ");
            self.log(&format!(
                "{text} (slot {}, power {}){}",
                inner.slot.state(),
                if hotplug::power_on(inner.control) {
                    "on"
                } else {
                    "off"
                },
                if signalled { "" } else { " [polled]" }
            ));
            inner.last = text;
            action = inner.slot.event(events, now);
        } else if signalled && sta & status::POWER_FAULT != 0 {
            self.log("power fault");
        }
        if action == Action::None {
            action = inner.slot.tick(now);
        }
        if action == Action::None && core::mem::take(&mut inner.kick) && events.present {
            // The card found in a powered-off slot at bind: as if it had just arrived.
            let arrived = Events {
                presence_changed: true,
                ..events
            };
            action = inner.slot.event(arrived, now);
        }
        self.carry_out(&mut inner, action, host);
        let deadline = inner.slot.deadline();
        if matches!(inner.owner, Owner::Polled(..)) || inner.storm {
            // No interrupt wakes the kernel for this slot: ask to be called again soon.
            let poll = host.now_us().saturating_add(POLL_INTERVAL_US);
            return Some(deadline.map_or(poll, |d| d.min(poll)));
        }
        deadline
    }

    /// Counts the port's interrupts that brought no event; [`STORM_INTERRUPTS`] of them
    /// within [`STORM_WINDOW_US`] (a broken port, or one interrupting for a reason no
    /// register shows) turn the slot's interrupt off: the slot is polled from then on, and
    /// the CPU is not spent answering it.
    pub(super) fn watch_for_storm(&self, inner: &mut Inner, event: bool, now: u64) {
        let total = self.interrupts.load(Ordering::Relaxed);
        let new = total.wrapping_sub(core::mem::replace(&mut inner.interrupts_seen, total));
        if event || new == 0 || inner.storm {
            if event {
                inner.quiet = (now, 0);
            }
            return;
        }
        if now.saturating_sub(inner.quiet.0) > STORM_WINDOW_US {
            inner.quiet = (now, 0);
        }
        inner.quiet.1 = inner.quiet.1.saturating_add(new);
        if inner.quiet.1 < STORM_INTERRUPTS {
            return;
        }
        inner.storm = true;
        let quiet = inner.control & !control::HOT_PLUG_INTERRUPT_ENABLE;
        let done = self.command(inner, quiet);
        self.log(&format!(
            "{} interrupts without an event within {} ms: the slot's interrupt is off{}, and the slot is polled every {} ms",
            inner.quiet.1,
            STORM_WINDOW_US / 1000,
            match done {
                Ok(()) => String::new(),
                Err(e) => format!(" ({e})"),
            },
            POLL_INTERVAL_US / 1000
        ));
        inner.last = String::from("interrupt storm: polled");
    }

    pub(super) fn carry_out(&self, inner: &mut Inner, action: Action, host: &'static dyn Host) {
        let delay_ms = BUTTON_DELAY_US.load(Ordering::Relaxed) / 1000;
        match action {
            Action::None => {}
            Action::Blink => {
                self.set(inner, None, Some(Indicator::Blink));
                let what = if matches!(inner.slot.state(), State::BlinkingOff { .. }) {
                    "off"
                } else {
                    "on"
                };
                self.log(&format!(
                    "power indicator blinking: powering {what} in {delay_ms} ms (press again to cancel)"
                ));
            }
            Action::CancelToOn => {
                self.set(inner, None, Some(Indicator::On));
                self.log("cancelled: the slot stays on");
                inner.last = String::from("cancelled");
            }
            Action::CancelToOff => {
                self.set(inner, None, Some(Indicator::Off));
                self.log("cancelled: the slot stays off");
                inner.last = String::from("cancelled");
            }
            Action::Enable => {
                let ok = self.enable(inner, host);
                inner.slot.enabled(ok);
            }
            Action::Disable => {
                let what = host.detach(self.address, false);
                self.log(&format!("unbound {what}"));
                if self.set(inner, Some(false), Some(Indicator::Off)) {
                    self.log("powered off");
                }
                host.forget_dma(self.address);
                inner.last = String::from("powered off");
            }
            Action::SurpriseRemoval => {
                let start = host.now_us();
                let what = host.detach(self.address, true);
                self.log(&format!(
                    "surprise removal: unbound {what} in {} ms",
                    (host.now_us() - start) / 1000
                ));
                if self.set(inner, Some(false), Some(Indicator::Off)) {
                    self.log("powered off");
                }
                host.forget_dma(self.address);
                inner.last = String::from("surprise removal");
            }
        }
    }

    /// Powers the slot on, waits for the link, and has the host bind what is below.
    pub(super) fn enable(&self, inner: &mut Inner, host: &'static dyn Host) -> bool {
        let start = host.now_us();
        if !self.set(inner, Some(true), Some(Indicator::Blink)) {
            return false;
        }
        let f = inner.owner.function();
        let link_up = match self.link_wait {
            hotplug::LinkWait::LinkActive => {
                let up = f.wait_until(hotplug::LINK_TIMEOUT_US, || {
                    f.config_read16(self.cap + offset::LINK_STATUS) & hotplug::DLL_LINK_ACTIVE != 0
                });
                // 100 ms after the link is up before the first configuration request.
                up && !f.wait_until(hotplug::LINK_SETTLE_US, || false) && !f.vanished()
            }
            hotplug::LinkWait::PollVendorId => {
                // 100 ms after power-on, then until function 0 below answers (§6.6.1).
                !f.wait_until(hotplug::LINK_SETTLE_US, || false)
                    && !f.vanished()
                    && f.wait_until(hotplug::LINK_TIMEOUT_US - hotplug::LINK_SETTLE_US, || {
                        hotplug::vendor_id_ready(host.vendor_below(self.address))
                    })
            }
            hotplug::LinkWait::Fixed => {
                // No Data Link Layer Link Active reporting: 1 s (§6.6.1).
                !f.wait_until(hotplug::LINK_TIMEOUT_US, || false) && !f.vanished()
            }
        };
        if !link_up {
            self.log("link did not come up within 1 s; powering off");
            self.set(inner, Some(false), Some(Indicator::Off));
            inner.last = String::from("link did not come up");
            return false;
        }
        self.log(&format!(
            "powered on, link up after {} ms",
            (host.now_us() - start) / 1000
        ));
        match host.attach(self.address) {
            Ok(what) => {
                self.set(inner, None, Some(Indicator::On));
                self.log(&format!(
                    "bound {what} ({} ms from power-on)",
                    (host.now_us() - start) / 1000
                ));
                inner.last = String::from("on");
                true
            }
            Err(e) => {
                self.log(&format!("{e}; powering off"));
                host.detach(self.address, false);
                self.set(inner, Some(false), Some(Indicator::Off));
                host.forget_dma(self.address);
                inner.last = e;
                false
            }
        }
    }

    pub(super) fn describe(&self) -> String {
        let inner = self.inner.lock();
        let f = inner.owner.function();
        let sta = f.config_read16(self.cap + offset::SLOT_STATUS);
        format!(
            "{} slot {} {}, power {}, {}, {} interrupt(s), last: {} [cap {:#x} control {:#06x} status {:#06x}]",
            self.address,
            self.caps.physical_slot(),
            inner.slot.state(),
            if !self.caps.power_controller() || hotplug::power_on(inner.control) {
                "on"
            } else {
                "off"
            },
            if sta & status::PRESENT != 0 {
                "card present"
            } else {
                "empty"
            },
            self.interrupts.load(Ordering::Relaxed),
            inner.last,
            self.cap,
            f.config_read16(self.cap + offset::SLOT_CONTROL),
            sta
        )
    }
}
