//! Where a device sits in the USB tree, and what its Slot Context says about it (xHCI 1.2
//! §4.3.3, §6.2.2, §8.9).
//!
//! The controller reaches a device through one of its own (root hub) ports and, below that,
//! through zero to five hubs. The Slot Context names the path with two fields:
//!
//! - Root Hub Port Number: the controller's port the top-level hub (or the device itself)
//!   is plugged into;
//! - Route String (20 bits, §8.9): one 4-bit nibble per hub tier, the number of the hub
//!   port the path takes, tier 1 (the hub on the root port) in bits 3:0. A device on a root
//!   port has route 0; the keyboard on port 2 of a hub on root port 1 has route 0x2, and is
//!   "port 1.2" in `drivers`. Five nibbles: at most five hubs deep (USB 2.0 §4.1.1 allows
//!   five hub tiers), and only hub ports 1 to 15 can be named.
//!
//! A low- or full-speed device behind a high-speed hub is reached through that hub's
//! Transaction Translator (USB 2.0 §11.14): its Slot Context names the TT's hub (TT Hub
//! Slot ID) and the hub port the path leaves it by (TT Port Number). A low- or full-speed
//! device behind a full-speed hub that is itself behind a high-speed hub uses the same TT
//! as its parent. The driver leaves multi-TT hubs in their single-TT setting (the default,
//! alternate setting 0), so MTT is always 0.
//!
//! Everything here is arithmetic on values, host-tested.

use alloc::format;
use alloc::string::String;

use super::registers::Speed;

/// Hub tiers a route string can name (§8.9: five nibbles).
pub(super) const MAX_TIERS: u8 = 5;
/// The highest hub port a route string nibble can name.
pub(super) const MAX_ROUTE_PORT: u8 = 15;

/// A device's position: how the controller reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Place {
    /// The controller's port the path starts at (1-based).
    pub root_port: u8,
    /// The Route String: hub port numbers, 4 bits per tier.
    pub route: u32,
    /// Hubs between the root port and the device (0: on a root port).
    pub tier: u8,
    pub speed: Speed,
    /// The Transaction Translator a low- or full-speed device behind a high-speed hub goes
    /// through: (the hub's slot, the hub port).
    pub tt: Option<(u8, u8)>,
}

impl Place {
    /// A device on root port `port`.
    pub fn root(port: u8, speed: Speed) -> Place {
        Place {
            root_port: port,
            route: 0,
            tier: 0,
            speed,
            tt: None,
        }
    }

    /// The device at `speed` on port `port` of the hub at this place, whose slot is
    /// `hub_slot`. `Err` when the route string cannot name it (too deep, port 0 or above 15)
    /// or the speeds cannot be (a USB 3 hub, a high-speed device behind a slower hub).
    pub fn child(&self, hub_slot: u8, port: u8, speed: Speed) -> Result<Place, String> {
        if self.tier >= MAX_TIERS {
            return Err(format!(
                "more than {MAX_TIERS} hubs deep: not enumerated (USB allows {MAX_TIERS} tiers)"
            ));
        }
        if port == 0 || port > MAX_ROUTE_PORT {
            return Err(format!(
                "hub port {port}: a route string names ports 1 to {MAX_ROUTE_PORT} only"
            ));
        }
        let tt = match (self.speed, speed) {
            (Speed::Super | Speed::SuperPlus, _) | (_, Speed::Super | Speed::SuperPlus) => {
                return Err(String::from("USB 3 hubs are not supported"));
            }
            (Speed::Low | Speed::Full, Speed::High) => {
                return Err(format!(
                    "a high-speed device behind a {} hub",
                    self.speed.name()
                ));
            }
            // The hub's own TT translates for it.
            (Speed::High, Speed::Low | Speed::Full) => Some((hub_slot, port)),
            // Behind a full-speed hub: the TT that hub goes through, if any.
            (_, Speed::Low | Speed::Full) => self.tt,
            (_, Speed::High) => None,
        };
        Ok(Place {
            root_port: self.root_port,
            route: self.route | u32::from(port) << (4 * u32::from(self.tier)),
            tier: self.tier + 1,
            speed,
            tt,
        })
    }

    /// The port path as `drivers` shows it: the root port, then each hub port, with dots
    /// ("1", "1.2", "3.1.4"), as QEMU's `port=` property and Linux's sysfs names write it.
    pub fn name(&self) -> String {
        let mut s = format!("{}", self.root_port);
        for t in 0..self.tier {
            s.push_str(&format!(".{}", (self.route >> (4 * u32::from(t))) & 0xf));
        }
        s
    }
}

/// The Slot Context fields a hub adds (§6.2.2), from its hub descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HubSlot {
    /// Number of Ports (bNbrPorts).
    pub ports: u8,
    /// TT Think Time, 0 to 3 (8 to 32 FS bit times; high-speed hubs only).
    pub think_time: u8,
}

/// Slot Context dwords 0-3 (§6.2.2) for a device at `place`:
///
/// - dword 0: Route String 19:0, Speed 23:20, MTT 25 (0: single TT), Hub 26, Context
///   Entries 31:27 (the highest DCI in use);
/// - dword 1: Root Hub Port Number 23:16, Number of Ports 31:24 (hubs);
/// - dword 2: TT Hub Slot ID 7:0 and TT Port Number 15:8 (a low- or full-speed device behind
///   a high-speed hub), TT Think Time 17:16 (a high-speed hub), interrupter 0;
/// - dword 3: written by the controller.
pub(super) fn slot(place: &Place, entries: u8, hub: Option<HubSlot>) -> [u32; 4] {
    let mut d = [
        (place.route & 0xf_ffff) | place.speed.id() << 20 | u32::from(entries & 0x1f) << 27,
        u32::from(place.root_port) << 16,
        0,
        0,
    ];
    if let Some((slot, port)) = place.tt {
        d[2] |= u32::from(slot) | u32::from(port) << 8;
    }
    if let Some(h) = hub {
        d[0] |= 1 << 26;
        d[1] |= u32::from(h.ports) << 24;
        if place.speed == Speed::High {
            d[2] |= u32::from(h.think_time & 3) << 16;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_strings_take_a_nibble_per_tier() {
        let root = Place::root(1, Speed::High);
        assert_eq!(
            (root.route, root.tier, root.name()),
            (0, 0, String::from("1"))
        );
        let a = root.child(5, 2, Speed::High).unwrap();
        assert_eq!((a.route, a.tier, a.root_port), (0x2, 1, 1));
        assert_eq!(a.name(), "1.2");
        let b = a.child(6, 15, Speed::High).unwrap();
        assert_eq!(b.route, 0xf2);
        assert_eq!(b.name(), "1.2.15");
        let mut p = b;
        for port in [3, 4, 1] {
            p = p.child(7, port, Speed::High).unwrap();
        }
        assert_eq!((p.route, p.tier), (0x1_43f2, 5));
        assert_eq!(p.name(), "1.2.15.3.4.1");
    }

    #[test]
    fn depth_and_port_limits() {
        let mut p = Place::root(3, Speed::High);
        for _ in 0..MAX_TIERS {
            p = p.child(2, 1, Speed::High).unwrap();
        }
        // `p` is a device behind five hubs: named. Were it a sixth hub, nothing behind it
        // could be (no sixth nibble).
        assert!(p.child(2, 1, Speed::High).unwrap_err().contains("deep"));
        let root = Place::root(3, Speed::High);
        assert!(root.child(2, 0, Speed::Full).is_err());
        assert!(
            root.child(2, 16, Speed::Full)
                .unwrap_err()
                .contains("1 to 15")
        );
    }

    #[test]
    fn transaction_translators() {
        let hs_hub = Place::root(1, Speed::High);
        // A full-speed keyboard on port 3 of a high-speed hub in slot 4: that hub's TT.
        let kbd = hs_hub.child(4, 3, Speed::Full).unwrap();
        assert_eq!(kbd.tt, Some((4, 3)));
        // A high-speed device needs no TT.
        assert_eq!(hs_hub.child(4, 3, Speed::High).unwrap().tt, None);
        // A full-speed hub on port 2 of it, and a low-speed device on that hub: still the
        // high-speed hub's TT, by the port the full-speed hub hangs on.
        let fs_hub = hs_hub.child(4, 2, Speed::Full).unwrap();
        let mouse = fs_hub.child(9, 1, Speed::Low).unwrap();
        assert_eq!(mouse.tt, Some((4, 2)));
        // Full-speed hub on a root port (QEMU's usb-hub): no TT anywhere below.
        let qemu_hub = Place::root(1, Speed::Full);
        assert_eq!(qemu_hub.child(2, 2, Speed::Full).unwrap().tt, None);
        assert!(
            qemu_hub
                .child(2, 2, Speed::High)
                .unwrap_err()
                .contains("high-speed")
        );
        // USB 3 hubs are refused.
        assert!(
            Place::root(5, Speed::Super)
                .child(2, 1, Speed::Super)
                .is_err()
        );
    }

    #[test]
    fn slot_context_fields() {
        // On a root port: as before hubs existed.
        let s = slot(&Place::root(5, Speed::High), 3, None);
        assert_eq!(s, [3 << 20 | 3 << 27, 5 << 16, 0, 0]);
        // A full-speed keyboard at 1.3, behind a high-speed hub in slot 4.
        let kbd = Place::root(1, Speed::High)
            .child(4, 3, Speed::Full)
            .unwrap();
        let s = slot(&kbd, 1, None);
        assert_eq!(s[0], 0x3 | 1 << 20 | 1 << 27);
        assert_eq!(s[1], 1 << 16);
        assert_eq!(s[2], 4 | 3 << 8);
        // The high-speed hub itself: Hub, Number of Ports, TT Think Time.
        let hub = HubSlot {
            ports: 7,
            think_time: 2,
        };
        let s = slot(&Place::root(2, Speed::High), 1, Some(hub));
        assert_eq!(s[0], 3 << 20 | 1 << 26 | 1 << 27);
        assert_eq!(s[1], 2 << 16 | 7 << 24);
        assert_eq!(s[2], 2 << 16);
        // A full-speed hub has no TT: no think time.
        let s = slot(&Place::root(2, Speed::Full), 1, Some(hub));
        assert_eq!(s[2], 0);
        assert_eq!(s[0] & (1 << 25), 0, "MTT stays 0");
    }
}
