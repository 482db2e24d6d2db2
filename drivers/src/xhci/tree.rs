//! The walk of the USB tree: a device on a port is enumerated (`enumerate`); a hub is
//! configured, its ports powered and looked at once, and each connected one reset and
//! enumerated in turn, down to five hubs deep (`place`), until a keyboard is found.
//!
//! For a hub (USB 2.0 §11.24, xHCI 1.2 §4.3, §4.6.6):
//!
//! 1. `SET_CONFIGURATION`, then the hub descriptor (`hub`): its number of ports, power-on
//!    time and TT think time.
//! 2. Configure Endpoint with the Slot Context only (Add flag A0): Hub = 1, Number of Ports,
//!    TT Think Time. The controller then knows the slot is a hub, which it needs to route
//!    split transactions to devices behind the hub's TT.
//! 3. `SET_FEATURE(PORT_POWER)` on every port, and bPwrOn2PwrGood × 2 ms of waiting; then
//!    the ports' status is read until one shows a connection (or [`HUB_CONNECT_US`]), and
//!    after a connection the 100 ms debounce interval (USB 2.0 §7.1.7.3).
//! 4. For each connected port: `SET_FEATURE(PORT_RESET)`; `GET_STATUS` every 10 ms until
//!    `C_PORT_RESET` (bounded); `CLEAR_FEATURE` of `C_PORT_RESET` and `C_PORT_CONNECTION`;
//!    the 10 ms reset recovery (§7.1.7.5); the speed from wPortStatus; then the device is
//!    enumerated at its place (route string, root port, TT), as on a root port.
//!
//! Every wait is bounded; a hub or port that misbehaves leaves a note for `drivers` and the
//! walk goes on with the next port. At most [`MAX_DEVICES`] devices are enumerated (each
//! takes a slot and a few pages). The first keyboard found wins: ports looked at after it
//! are noted and left alone.
//!
//! Bounded waits still add up: a hub's power-on time (up to 510 ms), the connection wait
//! and the debounce, then up to half a second of reset per port, and every request may take
//! [`CONTROL_US`](super::enumerate) to answer; with 15 ports a hub, and hubs behind hubs,
//! that is minutes. So all the hub work of a bind shares one deadline, [`HUB_WALK_US`]
//! after the first hub is found ([`Walk`]): the pauses, the polls and the control
//! transfers of the hubs and of the devices behind them end at it, and the ports not yet
//! looked at are noted. Commands are not cut short (one that times out stops all later
//! ones at once), so the walk overruns its deadline by a command's second at most. A hub
//! in the sixth tier, behind which nothing can be addressed, is not walked at all.

use alloc::format;
use alloc::string::String;

use super::Xhci;
use super::contexts::Layout;
use super::enumerate::{Attached, HubFound, write_dwords};
use super::hub::{self, HubDescriptor, PortStatus};
use super::place::{self, HubSlot, Place};
use super::registers::Speed;
use super::trb::kind;

/// Devices (hubs included) enumerated at most: one slot each.
pub(super) const MAX_DEVICES: usize = super::MAX_SLOTS as usize;
/// How long after powering a hub's ports the driver waits for a first connection.
const HUB_CONNECT_US: u64 = 200_000;
/// Connect debounce before a port is reset (USB 2.0 §7.1.7.3, TATTDB: 100 ms).
const DEBOUNCE_US: u64 = 100_000;
/// How long a hub port reset may take (USB 2.0 §7.1.7.5: 10 to 20 ms; hubs take longer
/// to report it).
const PORT_RESET_US: u64 = 500_000;
/// Between two looks at a port being reset, or waiting for a connection.
const POLL_US: u64 = 10_000;
/// Reset recovery before the device is addressed (USB 2.0 §7.1.7.5, TRSTRCY: 10 ms).
const RESET_RECOVERY_US: u64 = 10_000;
/// The time all the hubs of a bind get together, from the first hub found: a tree of
/// working hubs is walked in well under a second, one that misbehaves is cut short here.
pub(super) const HUB_WALK_US: u64 = 4_000_000;
/// Why a request or a port was left alone once [`HUB_WALK_US`] had passed.
pub(super) const WALK_SPENT: &str = "the 4 s given to hubs are spent";

/// The hubs' share of the bind: the deadline, set when the first hub is found, and whether
/// a hub is being walked (from a hub on a root port being configured to the last port
/// behind it). While one is, every pause and control transfer ends at the deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Walk {
    until: Option<u64>,
    active: bool,
}

impl Walk {
    /// A hub on a root port is walked from `now`; the deadline is set by the first one.
    pub fn start(&mut self, now: u64) {
        self.until.get_or_insert(now.saturating_add(HUB_WALK_US));
        self.active = true;
    }

    /// Its walk is over: later requests (a keyboard on another root port) are not held to
    /// the deadline.
    pub fn end(&mut self) {
        self.active = false;
    }

    /// A wait of `wanted_us` from `now`, shortened to what is left of the walk while one is
    /// active (0 when it is spent).
    pub fn clamp(&self, now: u64, wanted_us: u64) -> u64 {
        match (self.active, self.until) {
            (true, Some(until)) => wanted_us.min(until.saturating_sub(now)),
            _ => wanted_us,
        }
    }

    /// A walk is active and its time is spent.
    pub fn spent(&self, now: u64) -> bool {
        self.clamp(now, 1) == 0
    }
}

impl Xhci {
    /// Enumerates the device at `place`, whose port is enabled: a keyboard is kept, a hub
    /// walked, anything else or a failure noted for `drivers`.
    pub(super) fn attach_at(&mut self, place: Place) {
        let name = place.name();
        if self.keyboard.is_some() {
            self.ports.push(format!(
                "port {name}: not enumerated (a keyboard was found first)"
            ));
            return;
        }
        if self.hub_walk.spent(self.controller.function().now_us()) {
            self.ports
                .push(format!("port {name}: not enumerated ({WALK_SPENT})"));
            return;
        }
        if self.devices.len() >= MAX_DEVICES {
            self.ports.push(format!(
                "port {name}: not enumerated ({MAX_DEVICES} devices at most)"
            ));
            return;
        }
        match self.attach(place) {
            Ok(Attached::Keyboard(k)) => {
                self.keyboard = Some(k);
                self._typing = Some(crate::input::Presence::new());
            }
            Ok(Attached::Other(what)) => self.ports.push(format!("port {name}: {what}")),
            Ok(Attached::Hub(h)) => {
                let what = format!(
                    "hub {:04x}:{:04x} ({})",
                    h.vendor,
                    h.product,
                    place.speed.name()
                );
                if place.tier >= place::MAX_TIERS {
                    self.ports.push(format!(
                        "port {name}: {what}: not used (a hub behind {} hubs: nothing behind it can be addressed)",
                        place.tier
                    ));
                    return;
                }
                let top = place.tier == 0;
                if top {
                    self.hub_walk.start(self.controller.function().now_us());
                }
                match self.configure_hub(&h, &place) {
                    Ok(desc) => {
                        self.ports
                            .push(format!("port {name}: {what}, {} ports", desc.ports));
                        self.scan_hub(h.d, &place, &desc);
                    }
                    Err(e) => self.ports.push(format!("port {name}: {what}: {e}")),
                }
                if top {
                    self.hub_walk.end();
                }
            }
            Err(e) => self
                .ports
                .push(format!("port {name} ({}): {e}", place.speed.name())),
        }
    }

    /// Steps 1 and 2: configuration, hub descriptor, the slot marked as a hub.
    fn configure_hub(&mut self, h: &HubFound, place: &Place) -> Result<HubDescriptor, String> {
        let d = h.d;
        self.request_out(d, 0x00, 9, u16::from(h.configuration), 0)
            .map_err(|e| format!("SET_CONFIGURATION: {e}"))?;
        let bytes = self
            .request_in(
                d,
                hub::TO_HUB_IN,
                hub::GET_DESCRIPTOR,
                u16::from(hub::HUB_DESCRIPTOR) << 8,
                0,
                hub::HUB_DESCRIPTOR_MAX,
            )
            .map_err(|e| format!("hub descriptor: {e}"))?;
        let desc = hub::hub_descriptor(&bytes)?;
        let layout = Layout {
            size: self.controller.regs.caps.context_size(),
        };
        let slot = place::slot(
            place,
            1,
            Some(HubSlot {
                ports: desc.ports,
                think_time: desc.think_time(),
            }),
        );
        let input = &self.devices[d].input;
        // Add A0 only: the Slot Context; no endpoint added or dropped.
        write_dwords(input, layout.control(), &[0, 1]);
        write_dwords(input, layout.input_slot(), &slot);
        self.command_with_input(d, "Configure Endpoint (hub)", kind::CONFIGURE_ENDPOINT)?;
        Ok(desc)
    }

    /// Steps 3 and 4: power, connections, and each connected port reset and enumerated.
    fn scan_hub(&mut self, d: usize, place: &Place, desc: &HubDescriptor) {
        let name = place.name();
        let hub_slot = self.devices[d].slot;
        let ports = desc.usable_ports();
        if desc.ports > ports {
            self.ports.push(format!(
                "port {name}.{} to {name}.{}: not used (a route string names hub ports 1 to {ports} only)",
                ports + 1,
                desc.ports
            ));
        }
        for p in 1..=ports {
            if self.walk_spent(&name, p, ports) {
                return;
            }
            if let Err(e) = self.port_feature(d, hub::SET_FEATURE, hub::PORT_POWER, p) {
                self.ports
                    .push(format!("port {name}.{p}: SET_FEATURE(PORT_POWER): {e}"));
                if self.devices[d].broken {
                    return;
                }
            }
        }
        self.pause(desc.power_good_us());
        let start = self.controller.function().now_us();
        let mut connected = false;
        // Bounded by time and by count: a hub answering slowly cannot stretch it.
        for _ in 0..HUB_CONNECT_US / POLL_US {
            connected = (1..=ports).any(|p| self.port_status(d, p).is_ok_and(|s| s.connected()));
            let waited = self.controller.function().now_us().saturating_sub(start);
            if connected
                || waited >= HUB_CONNECT_US
                || self.devices[d].broken
                || self.hub_walk.spent(self.controller.function().now_us())
            {
                break;
            }
            self.pause(POLL_US);
        }
        if !connected {
            return;
        }
        self.pause(DEBOUNCE_US);
        for p in 1..=ports {
            if self.walk_spent(&name, p, ports) {
                return;
            }
            let child = format!("{name}.{p}");
            let status = match self.port_status(d, p) {
                Ok(s) => s,
                Err(e) => {
                    self.ports.push(format!("port {child}: GET_STATUS: {e}"));
                    if self.devices[d].broken {
                        return;
                    }
                    continue;
                }
            };
            if !status.connected() {
                continue;
            }
            if self.keyboard.is_some() {
                self.ports.push(format!(
                    "port {child}: not enumerated (a keyboard was found first)"
                ));
                continue;
            }
            if status.over_current() {
                self.ports.push(format!("port {child}: over-current"));
                continue;
            }
            // A place the route string cannot name is refused before the port is reset.
            if let Err(e) = place.child(hub_slot, p, Speed::Full) {
                self.ports.push(format!("port {child}: {e}"));
                continue;
            }
            let at = self
                .reset_hub_port(d, p)
                .and_then(|speed| place.child(hub_slot, p, speed));
            match at {
                Ok(at) => self.attach_at(at),
                Err(e) => self.ports.push(format!("port {child}: {e}")),
            }
        }
    }

    /// Resets hub `d`'s port `p` and waits for it to be enabled; the device's speed.
    fn reset_hub_port(&mut self, d: usize, p: u8) -> Result<Speed, String> {
        self.port_feature(d, hub::SET_FEATURE, hub::PORT_RESET, p)
            .map_err(|e| format!("SET_FEATURE(PORT_RESET): {e}"))?;
        let start = self.controller.function().now_us();
        let mut status = None;
        for _ in 0..PORT_RESET_US / POLL_US {
            self.pause(POLL_US);
            let s = self.port_status(d, p)?;
            if s.reset_done() {
                status = Some(s);
                break;
            }
            if self.controller.function().now_us().saturating_sub(start) >= PORT_RESET_US {
                break;
            }
        }
        let Some(s) = status else {
            return Err(format!(
                "reset did not complete within {} ms",
                PORT_RESET_US / 1000
            ));
        };
        for (feature, what) in [
            (hub::C_PORT_RESET, "C_PORT_RESET"),
            (hub::C_PORT_CONNECTION, "C_PORT_CONNECTION"),
        ] {
            self.port_feature(d, hub::CLEAR_FEATURE, feature, p)
                .map_err(|e| format!("CLEAR_FEATURE({what}): {e}"))?;
        }
        if !s.connected() || !s.enabled() {
            return Err(format!(
                "not enabled after reset (wPortStatus {:#06x})",
                s.status
            ));
        }
        self.pause(RESET_RECOVERY_US);
        s.speed()
    }

    /// `GET_STATUS` of hub `d`'s port `p`.
    fn port_status(&mut self, d: usize, p: u8) -> Result<PortStatus, String> {
        let bytes = self.request_in(d, hub::TO_PORT_IN, hub::GET_STATUS, 0, u16::from(p), 4)?;
        PortStatus::parse(&bytes)
    }

    /// `SET_FEATURE` or `CLEAR_FEATURE` (`request`) of `feature` on hub `d`'s port `p`.
    fn port_feature(&mut self, d: usize, request: u8, feature: u16, p: u8) -> Result<(), String> {
        self.request_out(d, hub::TO_PORT_OUT, request, feature, u16::from(p))
    }

    /// Whether the walk's time is spent, before hub port `p` of `ports` at `name`; if so,
    /// the ports left are noted.
    fn walk_spent(&mut self, name: &str, p: u8, ports: u8) -> bool {
        if !self.hub_walk.spent(self.controller.function().now_us()) {
            return false;
        }
        self.ports.push(if p == ports {
            format!("port {name}.{p}: not looked at ({WALK_SPENT})")
        } else {
            format!("port {name}.{p} to {name}.{ports}: not looked at ({WALK_SPENT})")
        });
        true
    }

    /// Waits `us` microseconds (the CPU halted between interrupts), or until the walk's
    /// deadline.
    fn pause(&self, us: u64) {
        let function = self.controller.function();
        let us = self.hub_walk.clamp(function.now_us(), us);
        function.wait_until(us, || false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_walk_has_one_deadline() {
        let mut w = Walk::default();
        // No hub yet: waits are as asked.
        assert_eq!(w.clamp(0, 1_000_000), 1_000_000);
        assert!(!w.spent(u64::MAX));
        w.start(10);
        assert_eq!(w.clamp(10, 1_000_000), 1_000_000);
        // Near the end a control transfer gets what is left, then nothing.
        assert_eq!(w.clamp(10 + HUB_WALK_US - 300, 1_000_000), 300);
        assert_eq!(w.clamp(10 + HUB_WALK_US, 1_000_000), 0);
        assert!(w.spent(10 + HUB_WALK_US));
        // A second hub on another root port does not start the clock again.
        w.end();
        assert!(!w.spent(20 + HUB_WALK_US), "no walk active: not held");
        w.start(20 + HUB_WALK_US);
        assert!(w.spent(20 + HUB_WALK_US));
    }
}
