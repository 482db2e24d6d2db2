//! Device scopes (VT-d §8.3.1) resolved to the functions and buses a unit translates for.
//!
//! A scope names a device by a start bus and a path of (device, function) hops: every hop
//! but the last is a PCI-to-PCI bridge, whose secondary bus is where the next hop is. The
//! path is followed through the bridges enumeration found; a hop that is not there (a device
//! firmware lists but the board lacks) resolves to nothing.

use alloc::vec;
use alloc::vec::Vec;

use crate::remapper::ScopeEntry;

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

    #[test]
    fn a_bridge_pointing_back_up_ends_the_walk() {
        let looping = |bus: u8, _: u8, _: u8| Some((bus, bus));
        assert!(resolve(ScopeTarget::Endpoint, 5, &[(1, 0), (1, 0), (1, 0)], looping).is_empty());
    }
}
