//! The kernel's side of PCI Express hot-plug: deferred work for the `pciehp` driver, and the
//! enumeration and bind path it asks for when a slot comes up or goes away.
//!
//! Design note. The slot logic (registers, state machine, abort-window timer) lives in
//! `pci::hotplug` and the driver that owns each hot-plug port in `drivers::pciehp`. What only
//! the kernel can do is here:
//!
//! - **Deferred work.** The port's interrupt handler only notes that the port signalled.
//!   [`idle()`] runs from the console's idle loop (before it sleeps with `sti; hlt`) and calls
//!   `drivers::pciehp::poll`, which may wait (for Command Completed, for the link, 100 ms
//!   after it): never in interrupt context. When an attention-button abort window is open, it
//!   arms the local APIC's one-shot timer for the window's end (`interrupts::idle::wake_in`,
//!   the same alarm drivers' waits sleep with), so the sleeping console wakes up in time
//!   without a periodic tick.
//! - **Enumeration below a slot** ([`KernelHost::attach`]): the functions of device 0 on the
//!   port's secondary bus are read with `pci::probe`; BARs firmware did not assign (a card
//!   added after boot has them at zero) are placed inside the port's forwarding windows by
//!   `pci::assign` and written with decode off; the functions join the kernel's topology
//!   (`pcibus::add_functions`) and are offered to the drivers through the normal bind path
//!   (`bus::bind`). A bridge found below a slot (a hot-added switch) is not configured: its
//!   bus numbers would have to be carved out of the port's range, which is not done; the
//!   attach says so.
//! - **Removal** ([`KernelHost::detach`]): every function on the buses below the port is
//!   unbound (`bus::unbind`: dropping the driver state releases vectors, mappings, DMA memory,
//!   handlers and the claim) and forgotten (`pcibus::remove_functions`).
//!
//! `lspci -t` labels each hot-plug port with its Physical Slot Number and power state
//! (`pci::lspci::set_slot_labels`, set on the first idle call).
//!
//! A surprise removal runs the same drops on a device that no longer answers: waits in
//! drivers end early (`PciFunction::wait_until` checks presence), configuration writes are
//! dropped (each is preceded by a presence check), and the teardown's memory writes (MSI-X
//! masks, a controller's registers) go to BARs that decode nothing, which discards them.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use drivers::pciehp::{self, Host};
use pci::assign::{self, Request, Windows};
use pci::{Address, BarKind, ConfigSpace, Function};
use spin::Once;

use crate::interrupts::{dispatch, idle};
use crate::pcie::KernelConfig;

/// The kernel as the hot-plug driver's host.
pub struct KernelHost;

static HOST: KernelHost = KernelHost;

/// Sets what the first idle call sets up (the slot labels of `lspci -t`).
static LABELS: Once<()> = Once::new();

/// Runs hot-plug work that is due; called by the console's idle loop before it sleeps.
///
/// Returns with interrupts **disabled** after a last check that nothing is pending (or,
/// after [`MAX_PASSES`] rounds that kept finding work, with the timer armed 1 ms ahead): the
/// console then sleeps with `sti; hlt`, which takes any interrupt that arrived after the
/// check (a port's event, the abort-window timer) as its wake-up. Returning with interrupts
/// enabled would leave a window in which an event is handled by its interrupt handler (which
/// only notes it) and the console then sleeps on it until the next keystroke.
pub fn idle() {
    LABELS.call_once(|| pci::lspci::set_slot_labels(slot_label));
    for _ in 0..MAX_PASSES {
        x86_64::instructions::interrupts::enable();
        // Its waits may arm the timer for themselves (`interrupts::idle`); the arming for
        // the window's end comes after them.
        let next = pciehp::poll(&HOST);
        if let Some(deadline) = next {
            // At most 250 ms per arming: the CPU wakes a few times during a window, and a
            // wake-up that comes early (the timer's rate is a calibration) or is lost costs
            // little. Without the timer (`idle::timer_ready`), the window ends at the next
            // interrupt.
            let us = deadline
                .saturating_sub(crate::time::micros_since_boot())
                .clamp(50, 250_000);
            idle::wake_in(us);
        }
        x86_64::instructions::interrupts::disable();
        let due = next.is_some_and(|d| d <= crate::time::micros_since_boot());
        if !due && !pciehp::signalled() {
            return;
        }
    }
    // A port that signals faster than its events are handled (a storm, or a broken port)
    // must not keep the console from its input: back to the console, which wakes again in
    // a millisecond (the timer, armed here) to carry on.
    idle::wake_in(1000);
}

/// Rounds of hot-plug work one idle call does at most before the console reads its input.
const MAX_PASSES: usize = 32;

/// The hot-plug slot below `port`, for `lspci -t`.
fn slot_label(port: Address) -> Option<pci::lspci::SlotLabel> {
    pciehp::slot_numbers()
        .into_iter()
        .find(|(address, _, _)| *address == port)
        .map(|(_, number, powered)| pci::lspci::SlotLabel { number, powered })
}

fn config_space(scan: &crate::pcibus::Scan) -> ConfigSpace<'static, KernelConfig> {
    crate::pcibus::config_space(crate::pcibus::config(), &scan.roots)
}

/// The port's forwarding windows, read from its bridge registers.
fn windows(space: &ConfigSpace<'static, KernelConfig>, port: Address) -> Windows {
    let read = |offset| space.read32(port, offset).unwrap_or(0);
    Windows::decode(
        read(assign::offset::IO),
        read(assign::offset::MEMORY),
        read(assign::offset::PREFETCHABLE),
        (
            read(assign::offset::PREFETCHABLE_BASE_UPPER),
            read(assign::offset::PREFETCHABLE_LIMIT_UPPER),
        ),
        read(assign::offset::IO_UPPER),
    )
}

/// Reads the functions of device 0 on `bus` (a PCI Express link leads to device 0 only).
fn probe_slot(space: &ConfigSpace<'static, KernelConfig>, segment: u16, bus: u8) -> Vec<Function> {
    let mut found = Vec::new();
    for function in 0..8 {
        let address = Address::new_masked(segment, bus, 0, function);
        let (f, errors) = pci::probe(space, address);
        for e in errors {
            log::warn!("hotplug: {e}");
        }
        let Some(f) = f else {
            if function == 0 {
                break;
            }
            continue;
        };
        let multifunction = f.multifunction;
        found.push(f);
        if function == 0 && !multifunction {
            break;
        }
    }
    found
}

/// Places the unassigned BARs of `functions` inside `windows` and writes them (decode off).
fn assign_bars(
    space: &ConfigSpace<'static, KernelConfig>,
    windows: &Windows,
    functions: &[Function],
) -> Result<usize, String> {
    // A card added after boot has its BARs at zero. One that came up with a BAR the port
    // does not forward (left over from another machine, or made up) would have its driver
    // reach whatever sits at that address. When any BAR needs a place, every BAR of the
    // card is placed anew: `assign` fills the windows from the bottom and knows nothing of
    // BARs that would stay, so none may stay.
    let outside: Vec<String> = functions
        .iter()
        .flat_map(|f| f.bars().map(move |(slot, bar)| (f.address, slot, bar)))
        .filter(|(_, _, bar)| {
            bar.address != 0 && !windows.forwards(bar.kind, bar.address, bar.size)
        })
        .map(|(address, slot, bar)| format!("{address} BAR{slot} at {:#x}", bar.address))
        .collect();
    if !outside.is_empty() {
        log::warn!(
            "hotplug: {} outside the port's windows: the card's BARs are placed anew",
            outside.join(", ")
        );
    }
    let all = !outside.is_empty()
        || functions
            .iter()
            .any(|f| f.bars().any(|(_, bar)| bar.address == 0));
    let mut requests = Vec::new();
    for (i, f) in functions.iter().enumerate() {
        for (slot, bar) in f.bars() {
            if all {
                requests.push(Request {
                    function: i,
                    slot,
                    kind: bar.kind,
                    prefetchable: bar.prefetchable,
                    size: bar.size,
                });
            }
        }
    }
    let placed = assign::assign(windows, &requests).map_err(|e| format!("{e}"))?;
    for f in functions {
        // Decode off while BARs move (PCI 3.0 §6.2.5.1).
        let command = space.read32(f.address, 0x04).unwrap_or(0);
        let _ = space.write32(f.address, 0x04, command & 0x0000_fffc);
    }
    for p in &placed {
        let f = &functions[p.request.function];
        let offset = pci::bar::bar_offset(p.request.slot);
        let _ = space.write32(f.address, offset, p.address as u32);
        if p.request.kind == BarKind::Memory64 {
            let _ = space.write32(f.address, offset + 4, (p.address >> 32) as u32);
        }
        log::info!(
            "hotplug: {} BAR{} ({:?}{}, {:#x} bytes) at {:#x}",
            f.address,
            p.request.slot,
            p.request.kind,
            if p.request.prefetchable {
                " prefetchable"
            } else {
                ""
            },
            p.request.size,
            p.address
        );
    }
    Ok(placed.len())
}

/// The functions on the buses below `port`: those the walk reached through it (not merely
/// inside its secondary-to-subordinate range, which a sibling bridge may claim too).
fn below(scan: &crate::pcibus::Scan, port: Address) -> Option<impl Fn(Address) -> bool + use<>> {
    scan.topology.function(port)?.bridge?;
    let segment = port.segment();
    let buses: Vec<u8> = scan
        .topology
        .buses
        .iter()
        .filter(|b| scan.topology.reached_through(b.segment, b.number, port))
        .map(|b| b.number)
        .collect();
    Some(move |a: Address| a.segment() == segment && buses.contains(&a.bus()))
}

/// Claimed functions on the buses below `port` that the topology no longer lists: functions
/// of a removed card whose claim outlived their unbinding.
fn stale_claims(scan: &crate::pcibus::Scan, port: Address) -> Vec<Address> {
    let Some(inside) = below(scan, port) else {
        return Vec::new();
    };
    crate::pciirq::claimed_addresses()
        .into_iter()
        .filter(|a| inside(*a) && scan.topology.function(*a).is_none())
        .collect()
}

/// Addresses, comma-separated.
fn list(addresses: &[Address]) -> String {
    let names: Vec<String> = addresses.iter().map(|a| format!("{a}")).collect();
    names.join(", ")
}

impl Host for KernelHost {
    fn attach(&self, port: Address) -> Result<String, String> {
        let scan = crate::pcibus::scan().ok_or("PCI not enumerated")?;
        let bridge = scan
            .topology
            .function(port)
            .and_then(|f| f.bridge)
            .ok_or_else(|| format!("{port} is not a bridge"))?;
        // A function of a card removed from this slot that is still claimed kept its handle
        // past its unbinding (a leak): its windows still map the old card's BARs, and the
        // new card's BARs may be placed at the same addresses. The slot takes no new card
        // until that claim ends.
        // The bus the walk reached through this port is the slot's. A port whose secondary
        // bus was reached another way (a sibling bridge claiming the same numbers) or not
        // followed at all would have the card probed on a bus another bridge owns.
        if scan.topology.bus_behind(port).map(|b| b.number) != Some(bridge.secondary) {
            return Err(format!(
                "bus {:02x} below {port} was not reached through it at boot (another bridge claims it): the card is not set up",
                bridge.secondary
            ));
        }
        let stale = stale_claims(&scan, port);
        if !stale.is_empty() {
            return Err(format!(
                "{} of the card removed from this slot still claimed (a handle kept past its unbinding, whose windows may reach the new card's registers): the new card is not set up",
                list(&stale)
            ));
        }
        let space = config_space(&scan);
        let mut functions = probe_slot(&space, port.segment(), bridge.secondary);
        if functions.is_empty() {
            return Err(format!(
                "no function answers on bus {:02x} below {port}",
                bridge.secondary
            ));
        }
        if let Some(b) = functions.iter().find(|f| f.is_bridge()) {
            return Err(format!(
                "{} is a bridge: bridges below a hot-plug slot are not configured (bus numbers are not assigned)",
                b.address
            ));
        }
        let windows = windows(&space, port);
        let assigned =
            assign_bars(&space, &windows, &functions).map_err(|e| format!("{port}: BARs: {e}"))?;
        if assigned > 0 {
            // Read again: the BARs now hold their addresses.
            functions = probe_slot(&space, port.segment(), bridge.secondary);
            if functions.is_empty() {
                return Err(format!(
                    "the card below {port} vanished while it was set up"
                ));
            }
        }
        drop(scan);
        crate::pcibus::add_functions(&functions);
        let mut lines = Vec::new();
        for f in &functions {
            match crate::bus::bind(f.address) {
                Ok(status) => {
                    log::info!("hotplug: bound {status}");
                    lines.push(format!("{}", f.address));
                }
                Err(e) => {
                    log::warn!("hotplug: {e}");
                    lines.push(format!("{} (unbound: {e})", f.address));
                }
            }
        }
        Ok(lines.join(", "))
    }

    fn detach(&self, port: Address, gone: bool) -> String {
        let Some(scan) = crate::pcibus::scan() else {
            return String::from("nothing (PCI not enumerated)");
        };
        let Some(inside) = below(&scan, port) else {
            return format!("nothing ({port} is not a bridge)");
        };
        let addresses: Vec<Address> = scan
            .topology
            .functions
            .iter()
            .map(|f| f.address)
            .filter(|a| inside(*a))
            .collect();
        drop(scan);
        let mut unbound = Vec::new();
        // Deepest first: functions behind a bridge below the slot before the bridge.
        for address in addresses.iter().rev() {
            if crate::bus::unbind(*address).is_ok() {
                unbound.push(format!("{address}"));
            }
        }
        crate::pcibus::remove_functions(inside);
        let scan = crate::pcibus::scan();
        let stale = scan.map(|s| stale_claims(&s, port)).unwrap_or_default();
        if !stale.is_empty() {
            log::warn!(
                "hotplug: {port}: {} still claimed after its driver was unbound (a leaked handle): this slot takes no new card until the claim ends",
                list(&stale)
            );
        }
        if gone {
            log::warn!("hotplug: {port}: card gone; its drivers were dropped");
        }
        if unbound.is_empty() {
            String::from("nothing")
        } else {
            unbound.join(", ")
        }
    }

    fn forget_dma(&self, port: Address) {
        let Some(scan) = crate::pcibus::scan() else {
            return;
        };
        let Some(below) = below(&scan, port) else {
            return;
        };
        let space = config_space(&scan);
        for address in crate::pciirq::parked_addresses()
            .into_iter()
            .filter(|a| below(*a))
        {
            // Nothing answers (all ones): the card is off or out, and has forgotten
            // everything. Anything else may still hold the addresses: kept.
            if space.read32(address, 0).unwrap_or(u32::MAX) & 0xffff == 0xffff {
                crate::pciirq::forget_dma(address);
            } else {
                log::warn!(
                    "hotplug: {address} still answers after its slot was turned off: its DMA memory stays reserved for it"
                );
            }
        }
        // Functions isolated by DMA remapping that had no DMA memory parked: their domains
        // go too once nothing answers (with memory parked, `forget_dma` did it above).
        for address in crate::iommu::isolated_functions()
            .into_iter()
            .filter(|a| below(*a))
        {
            if space.read32(address, 0).unwrap_or(u32::MAX) & 0xffff == 0xffff {
                crate::iommu::forget(address);
            }
        }
    }

    fn log(&self, line: &str) {
        log::info!("{line}");
    }

    fn resources(&self) -> String {
        // The heap first, before this function allocates.
        let (heap_used, _) = crate::memory::heap::usage();
        let frames = crate::memory::frames::with(|f| f.free_bytes());
        let mmio = crate::memory::mmio::window_free_bytes();
        let vectors = crate::interrupts::vectors::total_free();
        let handlers = dispatch::installed();
        let claimed = crate::pciirq::claimed().len();
        let intx = crate::pciirq::intx_users().len();
        let functions = crate::pcibus::scan().map_or(0, |s| s.topology.functions.len());
        // Interrupt remapping entries present (0 without remapping): one per vector in use.
        let entries = crate::iommu::summary().map_or(0, |s| s.interrupt_entries);
        format!(
            "RESOURCES vectors_free={vectors} frames_free={frames} heap_used={heap_used} mmio_free={mmio} handlers={} claimed={claimed} intx={intx} functions={functions} remap_entries={entries}",
            handlers.len()
        )
    }

    fn now_us(&self) -> u64 {
        crate::time::micros_since_boot()
    }

    fn answers(&self, port: Address) -> bool {
        let Some(scan) = crate::pcibus::scan() else {
            return true;
        };
        let Some(inside) = below(&scan, port) else {
            return true;
        };
        let space = config_space(&scan);
        scan.topology
            .functions
            .iter()
            .filter(|f| inside(f.address))
            .all(|f| {
                let ids = u32::from(f.vendor_id) | (u32::from(f.device_id) << 16);
                space.read32(f.address, 0) == Ok(ids)
            })
    }

    fn vendor_below(&self, port: Address) -> u16 {
        let Some(scan) = crate::pcibus::scan() else {
            return 0xffff;
        };
        let Some(bridge) = scan.topology.function(port).and_then(|f| f.bridge) else {
            return 0xffff;
        };
        let below = Address::new_masked(port.segment(), bridge.secondary, 0, 0);
        config_space(&scan)
            .read32(below, 0)
            .map_or(0xffff, |ids| ids as u16)
    }

    fn occupied(&self, port: Address) -> bool {
        crate::pcibus::scan().is_some_and(|scan| {
            below(&scan, port)
                .is_some_and(|inside| scan.topology.functions.iter().any(|f| inside(f.address)))
        })
    }
}
