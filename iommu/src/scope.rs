//! Device scopes (VT-d §8.3.1) resolved to the functions and buses a unit translates for,
//! and the requester IDs a function's DMA may carry besides its own ([`aliases`]).
//!
//! A scope names a device by a start bus and a path of (device, function) hops: every hop
//! but the last is a PCI-to-PCI bridge, whose secondary bus is where the next hop is. The
//! path is followed through the bridges enumeration found; a hop that is not there (a device
//! firmware lists but the board lacks) resolves to nothing.

use alloc::vec;
use alloc::vec::Vec;

use crate::remapper::{ScopeEntry, Source};

/// The bridge a bus hangs from, as DMA aliasing sees it (PCIe Base 6.0 §7.5.3.2, Device/Port
/// Type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// A PCIe root port or switch port: requests keep their requester ID.
    PciePort,
    /// A PCI Express to PCI/PCI-X bridge (type 7): requests from the conventional bus below
    /// may carry the bridge's secondary bus number with device and function 0.
    PcieToPci,
    /// A PCI/PCI-X to PCI Express bridge (type 8) or a conventional PCI-to-PCI bridge:
    /// requests may carry the bridge's own ID.
    Other,
}

/// The requester IDs other than its own that `function`'s requests may reach a remapping
/// unit with, walking up from its bus: `up(bus)` gives the bridge the bus hangs from and
/// its kind, `None` on a root bus. As Linux's `pci_for_each_dma_alias`.
pub fn aliases(function: Source, up: impl Fn(u8) -> Option<(Source, Upstream)>) -> Vec<Source> {
    let mut out = Vec::new();
    let mut bus = function.bus;
    while let Some((bridge, kind)) = up(bus) {
        let alias = match kind {
            Upstream::PciePort => None,
            Upstream::PcieToPci => Some(Source {
                segment: function.segment,
                bus,
                devfn: 0,
            }),
            Upstream::Other => Some(bridge),
        };
        if let Some(a) = alias.filter(|a| *a != function && !out.contains(a)) {
            out.push(a);
        }
        // A bridge sits on a lower bus than the one it leads to; anything else would loop.
        if bridge.bus >= bus {
            break;
        }
        bus = bridge.bus;
    }
    out
}

/// What a scope entry names, as far as DMA remapping cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeTarget {
    /// A PCI endpoint: that function.
    Endpoint,
    /// A PCI-to-PCI bridge: the bridge and every bus below it.
    Bridge,
    /// An IOAPIC, HPET or ACPI device: nothing here (they matter for interrupt remapping).
    Other,
}

/// The functions and buses a scope names. `bridge(bus, device, function)` gives a bridge's
/// (secondary, subordinate) buses, or `None` when no bridge is there.
pub fn resolve(
    target: ScopeTarget,
    start_bus: u8,
    path: &[(u8, u8)],
    bridge: impl Fn(u8, u8, u8) -> Option<(u8, u8)>,
) -> Vec<ScopeEntry> {
    if target == ScopeTarget::Other {
        return Vec::new();
    }
    let mut bus = start_bus;
    for (i, &(device, function)) in path.iter().enumerate() {
        if device > 31 || function > 7 {
            return Vec::new();
        }
        let devfn = device << 3 | function;
        let below = bridge(bus, device, function);
        if i + 1 == path.len() {
            let mut entries = vec![ScopeEntry::Function(bus, devfn)];
            if target == ScopeTarget::Bridge
                && let Some((secondary, subordinate)) = below
                && secondary <= subordinate
            {
                entries.push(ScopeEntry::Buses(secondary, subordinate));
            }
            return entries;
        }
        match below {
            // A bridge whose secondary bus is not below its own bus would loop back.
            Some((secondary, _)) if secondary > bus => bus = secondary,
            _ => return Vec::new(),
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root port at 00:1c.0 forwarding buses 2..=4, and a switch port at 02:00.0 forwarding
    /// 3..=3.
    fn bridges(bus: u8, device: u8, function: u8) -> Option<(u8, u8)> {
        match (bus, device, function) {
            (0, 0x1c, 0) => Some((2, 4)),
            (2, 0, 0) => Some((3, 3)),
            _ => None,
        }
    }

    #[test]
    fn an_endpoint_on_the_start_bus() {
        assert_eq!(
            resolve(ScopeTarget::Endpoint, 0, &[(2, 0)], bridges),
            [ScopeEntry::Function(0, 0x10)]
        );
    }

    #[test]
    fn an_endpoint_two_bridges_down() {
        assert_eq!(
            resolve(
                ScopeTarget::Endpoint,
                0,
                &[(0x1c, 0), (0, 0), (0, 1)],
                bridges
            ),
            [ScopeEntry::Function(3, 1)]
        );
    }

    #[test]
    fn a_bridge_takes_its_buses() {
        assert_eq!(
            resolve(ScopeTarget::Bridge, 0, &[(0x1c, 0)], bridges),
            [ScopeEntry::Function(0, 0xe0), ScopeEntry::Buses(2, 4)]
        );
    }

    #[test]
    fn a_missing_hop_names_nothing() {
        assert!(resolve(ScopeTarget::Endpoint, 0, &[(0x1d, 0), (0, 0)], bridges).is_empty());
        assert!(resolve(ScopeTarget::Endpoint, 0, &[], bridges).is_empty());
        assert!(resolve(ScopeTarget::Endpoint, 0, &[(32, 0)], bridges).is_empty());
        assert!(resolve(ScopeTarget::Other, 0, &[(2, 0)], bridges).is_empty());
    }

    fn up(bus: u8) -> Option<(Source, Upstream)> {
        let at = |bus, devfn| Source {
            segment: 0,
            bus,
            devfn,
        };
        match bus {
            // 00:1c.0 root port -> bus 1; 01:00.0 PCIe-to-PCI bridge -> bus 2; 02:03.0
            // conventional bridge -> bus 3.
            1 => Some((at(0, 0xe0), Upstream::PciePort)),
            2 => Some((at(1, 0), Upstream::PcieToPci)),
            3 => Some((at(2, 0x18), Upstream::Other)),
            _ => None,
        }
    }

    #[test]
    fn dma_aliases_follow_linux() {
        let f = |bus, devfn| Source {
            segment: 0,
            bus,
            devfn,
        };
        // Behind a root port only: none.
        assert!(aliases(f(1, 0x08), up).is_empty());
        // On the conventional bus: the PCIe-to-PCI bridge's (secondary, 00.0).
        assert_eq!(aliases(f(2, 0x10), up), [f(2, 0)]);
        // The function at 02:00.0 is its own alias: nothing else.
        assert!(aliases(f(2, 0), up).is_empty());
        // Behind both: the conventional bridge's own ID, then the PCIe-to-PCI alias.
        assert_eq!(aliases(f(3, 0x08), up), [f(2, 0x18), f(2, 0)]);
        // On a root bus: none.
        assert!(aliases(f(0, 0x10), up).is_empty());
    }

    #[test]
    fn a_bridge_pointing_back_up_ends_the_walk() {
        let looping = |bus: u8, _: u8, _: u8| Some((bus, bus));
        assert!(resolve(ScopeTarget::Endpoint, 5, &[(1, 0), (1, 0), (1, 0)], looping).is_empty());
    }
}
