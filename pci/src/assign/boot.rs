//! Placement at boot of the memory BARs firmware left unassigned, in the gaps of the windows
//! that forward to their bus.
//!
//! Design note. Memory decode is one Command bit for all of a function's BARs, so a memory
//! BAR left at 0 would decode from address 0 up as soon as a driver maps any other BAR, and
//! [`PciFunction::map_bar`](crate::function::PciFunction::map_bar) refuses the whole
//! function while one is. Linux places such BARs at boot (`pci_assign_unassigned_resources`)
//! before it refuses; [`plan`] does the same, conservatively:
//!
//! - Only functions behind a PCI-to-PCI bridge. The bridge's forwarding windows are known
//!   from its registers (PCI-to-PCI Bridge Architecture 1.2 §3.2.5.8, §3.2.5.9); a root
//!   bus's apertures are the host bridge's ACPI `_CRS`, which the kernel does not have when
//!   it enumerates, so a BAR on a root bus stays unassigned.
//! - A window that starts at 0 is not used. The window registers have a granularity of
//!   1 MiB, so such a window covers the first MiB, which is RAM, the VGA range and the BIOS:
//!   it is what a bridge without a prefetchable window reads (its registers are read-only
//!   zero, §3.2.5.9), or what firmware that assigned nothing behind a bridge leaves (the
//!   registers' reset value), never an aperture a BAR may use.
//! - Only on a bus whose every decoder is known: not where a function's BARs could not be
//!   read (a BAR that did not decode, a header layout other than 0 and 1 such as CardBus,
//!   a function that vanished or refused an access), and not on a bus another bridge also
//!   claims (the walk reached it through one of them; which one the function sits behind,
//!   and so which window forwards to it, is not known).
//! - Nothing firmware assigned moves or changes size, and no bridge window changes: a BAR is
//!   put in a gap, a naturally aligned one (a BAR of size 2^n decodes an address aligned to
//!   2^n, PCI Local Bus 3.0 §6.2.5.1), clear of every assigned memory BAR of the topology,
//!   of the windows of the bridges on the same bus (their buses' BARs live there), of the
//!   ranges the platform reserves, and of what was placed before it.
//! - A prefetchable BAR goes in the prefetchable window when there is room (below 4 GiB for
//!   a 32-bit BAR, which cannot hold a higher address), else in the memory window; any other
//!   memory BAR goes in the memory window, which is below 4 GiB by its register format. A
//!   BAR of the legacy "below 1 MiB" type is not placed: no bridge window is down there.
//! - The address must also be forwarded by every bridge further up (firmware nests the
//!   windows; if it did not, the BAR is not placed), a non-prefetchable BAR's through
//!   non-prefetchable windows only.
//! - All or none per function: if one of its unassigned BARs finds no gap, none of them is
//!   placed, and every one is reported with the reason.
//! - Largest first (functions by their largest BAR, then each function's BARs by size), so
//!   alignment wastes as little as possible.
//!
//! Nothing here touches hardware: the kernel reads the windows, writes the BARs (decode off
//! while it does), and records the addresses in its topology.

use alloc::vec::Vec;
use core::fmt;
use core::ops::RangeInclusive;

use super::Windows;
use crate::address::Address;
use crate::bar::{Bar, BarKind};
use crate::enumerate::{BridgeError, Function, ScanErrorKind, Topology};

/// The last byte a 32-bit BAR register can address.
const LAST_32BIT: u64 = u32::MAX as u64;

/// The first address a window may be used from: the window registers count in MiB
/// (PCI-to-PCI Bridge Architecture 1.2 §3.2.5.8), so a window below this starts at 0.
const FIRST_USABLE: u64 = 1 << 20;

/// A memory BAR that needs an address: firmware left it at 0.
pub fn unassigned(bar: &Bar) -> bool {
    bar.kind != BarKind::Io && bar.address == 0
}

/// Whether any function of `topology` has a memory BAR at 0 (nothing to plan otherwise).
pub fn any_unassigned(topology: &Topology) -> bool {
    topology
        .functions
        .iter()
        .any(|f| f.bars().any(|(_, b)| unassigned(b)))
}

/// A BAR given an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The function.
    pub function: Address,
    /// BAR slot.
    pub slot: usize,
    /// The BAR, with its new address.
    pub bar: Bar,
}

/// Why a BAR was not placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The function is on a root bus, whose apertures (the host bridge's `_CRS`) are not
    /// known here.
    RootBus,
    /// The windows of this bridge (above the bus, on it, or further up) were not given.
    WindowsUnknown {
        /// The bridge.
        bridge: Address,
    },
    /// A function on the bus decodes ranges that were not read (a BAR that did not decode,
    /// an unsupported header layout, or a function left out of the topology).
    DecodeUnknown {
        /// The function.
        function: Address,
    },
    /// Another bridge also claims the bus as its secondary: which one forwards to it is not
    /// known.
    BusClaimedTwice {
        /// The bridge that was not followed.
        bridge: Address,
    },
    /// The legacy memory type 01b asks for an address below 1 MiB.
    Below1M,
    /// The size is not a power of two.
    BadSize,
    /// The bridge above has no open window this BAR may go in.
    NoWindow {
        /// The bridge.
        bridge: Address,
    },
    /// No naturally aligned gap of the BAR's size is left in the windows it may go in.
    NoRoom {
        /// The bridge.
        bridge: Address,
    },
    /// The gap found is not forwarded by a bridge further up.
    NotForwardedAbove {
        /// The bridge.
        bridge: Address,
        /// The address the gap starts at.
        address: u64,
    },
    /// Another unassigned BAR of the function was not placed (all or none).
    Sibling {
        /// Its slot.
        slot: usize,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::RootBus => write!(
                f,
                "the function is on a root bus, whose host bridge windows are not known at enumeration"
            ),
            Reason::WindowsUnknown { bridge } => {
                write!(f, "the windows of bridge {bridge} could not be read")
            }
            Reason::DecodeUnknown { function } => write!(
                f,
                "{function} on the same bus decodes ranges that could not be read"
            ),
            Reason::BusClaimedTwice { bridge } => write!(
                f,
                "bridge {bridge} also claims the bus, so the window that forwards to it is not known"
            ),
            Reason::Below1M => write!(f, "the BAR asks for an address below 1 MiB"),
            Reason::BadSize => write!(f, "the size is not a power of two"),
            Reason::NoWindow { bridge } => {
                write!(f, "bridge {bridge} has no open window for this BAR")
            }
            Reason::NoRoom { bridge } => write!(
                f,
                "no free naturally aligned gap of this size in the windows of bridge {bridge}"
            ),
            Reason::NotForwardedAbove { bridge, address } => write!(
                f,
                "the gap at {address:#x} is not forwarded by bridge {bridge} further up"
            ),
            Reason::Sibling { slot } => write!(
                f,
                "BAR{slot} of the same function could not be placed (all or none)"
            ),
        }
    }
}

/// A memory BAR left at 0, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaced {
    /// The function.
    pub function: Address,
    /// BAR slot.
    pub slot: usize,
    /// The BAR (address 0).
    pub bar: Bar,
    /// Why.
    pub reason: Reason,
}

/// What [`plan`] decided, each list sorted by function and slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// BARs to write.
    pub placed: Vec<Placed>,
    /// BARs that stay at 0 (their functions' drivers cannot map BARs).
    pub unplaced: Vec<Unplaced>,
}

/// The bytes a BAR decodes (`None` at 0 or for a size of 0).
fn span(address: u64, size: u64) -> Option<RangeInclusive<u64>> {
    let last = address.checked_add(size.checked_sub(1)?)?;
    Some(address..=last)
}

fn overlaps(a: &RangeInclusive<u64>, b: &RangeInclusive<u64>) -> bool {
    a.start() <= b.end() && b.start() <= a.end()
}

/// `x` rounded up to a multiple of `size` (a power of two), if that does not wrap.
fn align_up(x: u64, size: u64) -> Option<u64> {
    Some(x.checked_add(size - 1)? & !(size - 1))
}

/// The lowest address aligned to `size` (a power of two) whose `size` bytes lie in `window`,
/// at or below `last_allowed`, and clear of every range in `taken`.
fn first_fit(
    window: &RangeInclusive<u64>,
    size: u64,
    last_allowed: u64,
    taken: &[RangeInclusive<u64>],
) -> Option<u64> {
    let end = (*window.end()).min(last_allowed);
    let mut start = align_up(*window.start(), size)?;
    loop {
        let candidate = span(start, size)?;
        if *candidate.end() > end {
            return None;
        }
        // Past the furthest range in the way; `start` grows each turn, so this ends.
        match taken
            .iter()
            .filter(|t| overlaps(t, &candidate))
            .map(|t| *t.end())
            .max()
        {
            None => return Some(start),
            Some(last) => start = align_up(last.checked_add(1)?, size)?,
        }
    }
}

/// The windows of `bridge` from the caller's list.
fn windows_of(windows: &[(Address, Windows)], bridge: Address) -> Option<&Windows> {
    windows.iter().find(|(a, _)| *a == bridge).map(|(_, w)| w)
}

/// The bridges above `bus` of `segment`, nearest first (the walk recorded which bridge
/// reached each bus; a bus is scanned once, so this ends at a root bus).
fn bridges_above(topology: &Topology, segment: u16, bus: u8) -> Vec<Address> {
    let mut chain = Vec::new();
    let mut at = (segment, bus);
    for _ in 0..=256 {
        let Some(b) = topology.buses.iter().find(|b| (b.segment, b.number) == at) else {
            break;
        };
        let Some(via) = b.bridge else { break };
        chain.push(via);
        at = (via.segment(), via.bus());
    }
    chain
}

/// Places one BAR in the windows of `bridge`, clear of `taken`.
fn place_one(
    bar: &Bar,
    bridge: Address,
    w: &Windows,
    taken: &[RangeInclusive<u64>],
) -> Result<u64, Reason> {
    if bar.below_1m {
        return Err(Reason::Below1M);
    }
    if !bar.size.is_power_of_two() {
        return Err(Reason::BadSize);
    }
    let pref_limit = match bar.kind {
        BarKind::Memory64 => u64::MAX,
        _ => LAST_32BIT,
    };
    // A window from 0 covers the first MiB: no aperture (see the module notes).
    let usable = |w: &Option<RangeInclusive<u64>>| w.clone().filter(|w| *w.start() >= FIRST_USABLE);
    let mut tried = false;
    if let (true, Some(pf)) = (bar.prefetchable, &usable(&w.prefetchable)) {
        tried |= *pf.start() <= pref_limit;
        if let Some(a) = first_fit(pf, bar.size, pref_limit, taken) {
            return Ok(a);
        }
    }
    if let Some(mem) = &usable(&w.memory) {
        tried = true;
        if let Some(a) = first_fit(mem, bar.size, LAST_32BIT, taken) {
            return Ok(a);
        }
    }
    Err(if tried {
        Reason::NoRoom { bridge }
    } else {
        Reason::NoWindow { bridge }
    })
}

/// Places all of one function's unassigned BARs (largest first) in the windows of `bridge`,
/// forwarded by every bridge in `further_up`, clear of `taken`; or names the BAR that did not
/// fit and why.
fn place_function<'w>(
    function: Address,
    bars: &[(usize, Bar)],
    (bridge, w): (Address, &Windows),
    further_up: impl Iterator<Item = (Address, Option<&'w Windows>)> + Clone,
    taken: &[RangeInclusive<u64>],
) -> Result<Vec<Placed>, (usize, Reason)> {
    let mut all: Vec<RangeInclusive<u64>> = taken.to_vec();
    let mut done = Vec::new();
    for &(slot, bar) in bars {
        let address = place_one(&bar, bridge, w, &all).map_err(|r| (slot, r))?;
        // A non-prefetchable BAR only through non-prefetchable windows: a bridge may read
        // ahead in its prefetchable window (PCI-to-PCI Bridge Architecture 1.2 §3.2.5.9),
        // and a read a register did not ask for can have side effects.
        let forwarded = |w: &Windows| {
            let prefetchable = w.prefetchable.clone().filter(|_| bar.prefetchable);
            Windows {
                prefetchable,
                ..w.clone()
            }
            .forwards(bar.kind, address, bar.size)
        };
        if let Some((up, _)) = further_up.clone().find(|(_, w)| !w.is_some_and(forwarded)) {
            return Err((
                slot,
                Reason::NotForwardedAbove {
                    bridge: up,
                    address,
                },
            ));
        }
        all.extend(span(address, bar.size));
        done.push(Placed {
            function,
            slot,
            bar: Bar { address, ..bar },
        });
    }
    Ok(done)
}

/// Plans an address for every memory BAR firmware left at 0 in `topology`.
///
/// `windows` holds the forwarding windows of every bridge in the topology (read from its
/// registers); `reserved` the physical ranges the platform uses (ECAM, the APICs, the
/// interrupt message range, ...), which no BAR may overlap.
pub fn plan(
    topology: &Topology,
    windows: &[(Address, Windows)],
    reserved: &[RangeInclusive<u64>],
) -> Plan {
    let mut plan = Plan::default();
    // Everything assigned stays where it is.
    let assigned: Vec<RangeInclusive<u64>> = topology
        .functions
        .iter()
        .flat_map(|f| f.bars().map(|(_, b)| b))
        .filter(|b| b.kind != BarKind::Io && b.address != 0)
        // A malformed BAR near the top of the address space takes everything up to it.
        .map(|b| b.address..=b.address.saturating_add(b.size.saturating_sub(1)))
        .collect();
    let mut placed_ranges: Vec<RangeInclusive<u64>> = Vec::new();
    for bus in &topology.buses {
        let functions = topology.functions_on(bus.segment, bus.number);
        let mut needy: Vec<(&Function, Vec<(usize, Bar)>)> = functions
            .iter()
            .filter_map(|f| {
                let mut bars: Vec<(usize, Bar)> = f
                    .bars()
                    .filter(|(_, b)| unassigned(b))
                    .map(|(slot, b)| (slot, *b))
                    .collect();
                bars.sort_by(|a, b| b.1.size.cmp(&a.1.size).then(a.0.cmp(&b.0)));
                (!bars.is_empty()).then_some((f, bars))
            })
            .collect();
        if needy.is_empty() {
            continue;
        }
        needy.sort_by(|a, b| {
            b.1[0]
                .1
                .size
                .cmp(&a.1[0].1.size)
                .then(a.0.address.cmp(&b.0.address))
        });
        // What the bus's BARs must stay clear of, placements on earlier buses included.
        let mut taken: Vec<RangeInclusive<u64>> = assigned
            .iter()
            .chain(reserved)
            .chain(&placed_ranges)
            .cloned()
            .collect();
        let mut unknown = None;
        for f in functions.iter().filter(|f| f.is_bridge()) {
            match windows_of(windows, f.address) {
                Some(w) => taken.extend(w.memory.iter().chain(&w.prefetchable).cloned()),
                None => unknown = Some(f.address),
            }
        }
        let above = bridges_above(topology, bus.segment, bus.number);
        // Decoders on the bus that were not read, and other bridges claiming the bus.
        let on_bus = |a: Address| (a.segment(), a.bus()) == (bus.segment, bus.number);
        let undecoded = topology.errors.iter().find(|e| {
            on_bus(e.address)
                && matches!(
                    e.kind,
                    ScanErrorKind::Vanished
                        | ScanErrorKind::Config(_)
                        | ScanErrorKind::UnsupportedHeaderType(_)
                        | ScanErrorKind::Bar(_)
                )
        });
        let claimed = topology.errors.iter().find(|e| {
            e.address.segment() == bus.segment
                && e.kind
                    == ScanErrorKind::Bridge(BridgeError::BusAlreadyScanned { bus: bus.number })
        });
        // The windows of the bridge above, or why nothing on this bus can be placed.
        let window = match (bus.bridge, unknown, undecoded, claimed) {
            (None, ..) => Err(Reason::RootBus),
            (_, Some(bridge), ..) => Err(Reason::WindowsUnknown { bridge }),
            (_, _, Some(e), _) => Err(Reason::DecodeUnknown {
                function: e.address,
            }),
            (_, _, _, Some(e)) => Err(Reason::BusClaimedTwice { bridge: e.address }),
            (Some(bridge), None, None, None) => {
                match above.iter().find(|b| windows_of(windows, **b).is_none()) {
                    Some(b) => Err(Reason::WindowsUnknown { bridge: *b }),
                    None => windows_of(windows, bridge)
                        .map(|w| (bridge, w))
                        .ok_or(Reason::WindowsUnknown { bridge }),
                }
            }
        };
        for (f, bars) in needy {
            let outcome = match &window {
                Err(reason) => Err((bars[0].0, reason.clone())),
                Ok((bridge, w)) => place_function(
                    f.address,
                    &bars,
                    (*bridge, w),
                    above.iter().skip(1).map(|b| (*b, windows_of(windows, *b))),
                    &taken,
                ),
            };
            match outcome {
                Ok(done) => {
                    let mine = done.iter().filter_map(|p| span(p.bar.address, p.bar.size));
                    let mine: Vec<RangeInclusive<u64>> = mine.collect();
                    taken.extend(mine.iter().cloned());
                    placed_ranges.extend(mine);
                    plan.placed.extend(done);
                }
                Err((failed, reason)) => {
                    for (slot, bar) in bars {
                        plan.unplaced.push(Unplaced {
                            function: f.address,
                            slot,
                            bar,
                            reason: if slot == failed {
                                reason.clone()
                            } else {
                                Reason::Sibling { slot: failed }
                            },
                        });
                    }
                }
            }
        }
    }
    plan.placed.sort_by_key(|p| (p.function, p.slot));
    plan.unplaced.sort_by_key(|u| (u.function, u.slot));
    plan
}
