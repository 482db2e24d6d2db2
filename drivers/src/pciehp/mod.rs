//! PCI Express native hot-plug (`pciehp`): a port service driver for root ports and switch
//! downstream ports whose slot is hot-plug capable.
//!
//! Design note. A hot-plug slot is one more device to own, not a special case of the bus
//! code: this driver claims the port like any driver claims its function (one owned
//! [`PciFunction`]), takes its interrupt vector
//! ([`IrqVectors`](pci::irq::IrqVectors), MSI-X or MSI), and is unbound by dropping its
//! state. What it adds is a [`Host`]: the kernel's enumeration and
//! bind path, which it asks to bring up the functions below a slot that was powered on and
//! to unbind them before the slot is powered off.
//!
//! Spec (PCIe Base 6.0):
//! - §7.5.3.9–§7.5.3.11: Slot Capabilities, Slot Control, Slot Status, decoded in
//!   [`pci::hotplug`] (host-tested, with the slot's state machine).
//! - §6.7.3.2: every Slot Control write is a command; software waits for Command Completed
//!   (at most 1 s) before the next. Configuration writes here are dwords, so a write of Slot
//!   Control also writes Slot Status (write-one-to-clear) and clearing Command Completed is
//!   itself a command: Command Completed is therefore polled after each write rather than
//!   taken as an interrupt (with its interrupt enabled, a Command Completed bit that can never
//!   be seen clear keeps the port's event line asserted and hides every later event). A port
//!   with No Command Completed Support is not waited for.
//! - §6.7.1.5: an attention button press starts a 5 s abort window with the power indicator
//!   blinking; a second press cancels. The window is [`pci::hotplug::BUTTON_DELAY_US`] unless
//!   `pciehp delay <ms>` changed it (for tests that cycle a slot many times).
//! - §6.7.3.3 and §6.6.1: after power-on, wait for Data Link Layer Link Active, then 100 ms
//!   before the first configuration request. A port that does not report Link Active and runs
//!   at most 5.0 GT/s (QEMU's switch downstream port) waits 100 ms after power-on and then
//!   reads function 0's Vendor ID below until it answers (1 s at most), as Linux does; a
//!   faster port without reporting waits 1 s ([`pci::hotplug::LinkWait`]).
//! - §6.7.5 / §6.7.1.3: presence lost (or the link down) without a button press is a surprise
//!   removal: the drivers below are unbound (their waits end early on a vanished function,
//!   see [`PciFunction::wait_until`], and their configuration writes are dropped) and the slot
//!   is powered off. A card that stops answering with presence unchanged counts the same;
//!   `pciehp cut <slot>` injects one (power cut under a bound driver) for tests.
//!
//! Firmware control (`_OSC`, PCI Firmware 3.3 §4.5): the kernel asks every host bridge for
//! native hot-plug control at boot (`firmware::aml::osc`) and tells this driver, through
//! [`firmware_keeps`], the buses whose firmware kept it; ports there are not taken (ACPI
//! hot-plug is firmware's business, as on QEMU's q35 default). Without ACPI (`acpi=off`)
//! native control is assumed. A port whose presence detect disagrees with enumeration is
//! also left alone (see `service`).
//!
//! Work is never done in the interrupt handler: it only notes that the port signalled. The
//! kernel calls [`poll`] from its idle loop, which reads Slot Status, acknowledges events,
//! runs the state machine and its timers, and carries out the action (which may wait, for
//! the link or for Command Completed, with timeouts).
//!
//! Who owns what: [`PciehpBound`] (in the kernel's bound list) owns an `Arc` of the port's
//! state; the registry that [`poll`] walks holds only `Weak` references, so unbinding the port
//! (dropping its `PciehpBound`) masks the slot's interrupts and releases the vector and the
//! claim. A leaked `PciehpBound` keeps the port claimed and its vector allocated.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pci::hotplug::{self, Indicator, Slot, SlotCapabilities, State, control, offset, status};
use pci::irq::{IrqKinds, PciFunction};
use pci::{Address, capability};
use spin::{Mutex, Once};

use crate::{Bound, Driver, Match, ProbeError};

/// What the kernel does for the driver: enumerate and bind below a port, unbind below it.
pub trait Host: Sync {
    /// The slot below `port` is powered and its link is up: find the functions on its
    /// secondary bus, give them resources, bind drivers. Returns what was bound (one line).
    fn attach(&self, port: Address) -> Result<String, String>;
    /// Unbind every function below `port` and forget them. `gone`: the card is gone, so
    /// nothing below may be written to. Returns what was unbound (one line).
    fn detach(&self, port: Address, gone: bool) -> String;
    /// The slot below `port` was powered off (or found empty): free the DMA memory kept for
    /// the next claims of functions below it that no longer answer (`pci::parking`). A card
    /// that still answers (a slot without a power controller) keeps it: it may still hold
    /// the addresses.
    fn forget_dma(&self, port: Address);
    /// Logs one line.
    fn log(&self, line: &str);
    /// The resource counters (vectors, frames, heap, MMIO window, handlers, claims), one line.
    fn resources(&self) -> String;
    /// Microseconds since boot.
    fn now_us(&self) -> u64;
    /// Whether enumeration knows functions below `port`.
    fn occupied(&self, port: Address) -> bool;
    /// Whether the functions known below `port` still answer configuration reads with their
    /// IDs (`true` if there are none).
    fn answers(&self, port: Address) -> bool;
    /// The Vendor ID of function 0 on the secondary bus of `port` (all ones when nothing
    /// answers), for ports that cannot report their link ([`hotplug::LinkWait::PollVendorId`]).
    fn vendor_below(&self, port: Address) -> u16;
}

/// The host, set by the first [`poll`].
static HOST: Once<&'static dyn Host> = Once::new();
/// Every bound port (weak: the bound state owns them).
static PORTS: Mutex<Vec<Weak<Port>>> = Mutex::new(Vec::new());
/// The attention-button abort window, µs.
static BUTTON_DELAY_US: AtomicU64 = AtomicU64::new(hotplug::BUTTON_DELAY_US);
/// Hot-plug events handled so far (for tests: they wait for this to move).
static EVENTS_HANDLED: AtomicU64 = AtomicU64::new(0);

/// Buses (segment, first, last) whose host bridge's firmware kept PCI Express hot-plug, and
/// what it answered.
static FIRMWARE_KEEPS: Mutex<Vec<(u16, u8, u8, String)>> = Mutex::new(Vec::new());

/// Records that firmware kept PCI Express hot-plug for the buses `first..=last` of
/// `segment` (its `_OSC` did not grant native control; `why` says what it answered). Ports
/// there are left to firmware. Called by the kernel before drivers bind.
pub fn firmware_keeps(segment: u16, first: u8, last: u8, why: String) {
    FIRMWARE_KEEPS.lock().push((segment, first, last, why));
}

/// Why firmware keeps hot-plug of the port at `address`, if it does.
fn kept_by_firmware(address: Address) -> Option<String> {
    FIRMWARE_KEEPS
        .lock()
        .iter()
        .find(|(segment, first, last, _)| {
            address.segment() == *segment && (*first..=*last).contains(&address.bus())
        })
        .map(|(_, _, _, why)| why.clone())
}

/// The hot-plug port driver.
pub struct PciehpDriver;

/// Bridges (class 06h, subclass 04h); `probe` keeps only hot-plug capable slots.
static MATCHES: [Match; 1] = [Match::Class {
    class: 0x06,
    subclass: 0x04,
}];

impl Driver for PciehpDriver {
    fn name(&self) -> &'static str {
        "pciehp"
    }

    fn matches(&self) -> &'static [Match] {
        &MATCHES
    }

    fn probe(&self, function: PciFunction) -> Result<Box<dyn Bound>, (PciFunction, ProbeError)> {
        let Some(cap) = function
            .info()
            .capability(capability::id::PCI_EXPRESS)
            .map(|c| u16::from(c.offset))
        else {
            return Err((function, ProbeError("not PCI Express".into())));
        };
        if cap + offset::SLOT_STATUS + 2 > 0x100 {
            return Err((
                function,
                ProbeError(format!(
                    "PCI Express capability at {cap:#x}: its slot registers would lie past 0xff"
                )),
            ));
        }
        let flags = function.config_read16(cap + offset::CAPABILITIES);
        let port_type = ((flags >> 4) & 0xf) as u8;
        if !matches!(
            port_type,
            hotplug::port_type::ROOT_PORT | hotplug::port_type::DOWNSTREAM
        ) || flags & hotplug::SLOT_IMPLEMENTED == 0
        {
            return Err((
                function,
                ProbeError(format!(
                    "no slot (PCI Express Capabilities {flags:#06x}: not a root or downstream port with a slot)"
                )),
            ));
        }
        let caps = SlotCapabilities(function.config_read32(cap + offset::SLOT_CAPABILITIES));
        if caps.hot_plug_capable()
            && let Some(why) = kept_by_firmware(function.address())
        {
            return Err((
                function,
                ProbeError(format!(
                    "slot {}: hot-plug is firmware's ({why}); this kernel has no ACPI hot-plug, so devices added here are not seen (on QEMU's q35: -global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off gives native hot-plug)",
                    caps.physical_slot()
                )),
            ));
        }
        if !caps.hot_plug_capable() {
            return Err((
                function,
                ProbeError(format!("{caps}: not hot-plug capable")),
            ));
        }
        let link_wait = hotplug::LinkWait::for_link_capabilities(
            function.config_read32(cap + offset::LINK_CAPABILITIES),
        );
        let link_reporting = link_wait == hotplug::LinkWait::LinkActive;
        let address = function.address();
        let pending = Arc::new(AtomicBool::new(false));
        let interrupts = Arc::new(AtomicU64::new(0));
        // The port's event interrupt: MSI-X or MSI. INTx is not used: its level would stay
        // asserted until Slot Status is cleared, which the handler (no configuration access
        // of its own) cannot do; without a message interrupt the slot is polled instead.
        let owner = match function.alloc_irq_vectors(1, 1, IrqKinds::MSIX | IrqKinds::MSI) {
            Ok(mut vectors) => {
                let (p, n) = (pending.clone(), interrupts.clone());
                match vectors.install(0, "pciehp", move || {
                    p.store(true, Ordering::Release);
                    n.fetch_add(1, Ordering::Relaxed);
                }) {
                    Ok(()) => Owner::Irq(vectors),
                    Err(e) => {
                        let function = vectors.into_function();
                        return Err((function, ProbeError(format!("handler: {e}"))));
                    }
                }
            }
            Err((function, _)) => {
                let master = function.bus_master();
                Owner::Polled(function, master)
            }
        };
        let control_now = owner.function().config_read16(cap + offset::SLOT_CONTROL);
        let status_now = owner.function().config_read16(cap + offset::SLOT_STATUS);
        let present = status_now & status::PRESENT != 0;
        let powered = !caps.power_controller() || hotplug::power_on(control_now);
        let port = Port {
            address,
            cap,
            caps,
            link_reporting,
            link_wait,
            pending,
            interrupts,
            unbound: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                owner,
                slot: Slot::new(present && powered, BUTTON_DELAY_US.load(Ordering::Relaxed)),
                control: control_now,
                last: String::from("bound"),
                kick: false,
                checked: false,
                probe_card: false,
                inert: false,
                interrupts_seen: 0,
                quiet: (0, 0),
                storm: false,
            }),
        };
        let enabled = {
            let mut inner = port.inner.lock();
            // Clear stale events, then enable the ones handled here (§6.7.3.1).
            let stale = status_now & EVENT_BITS;
            if stale != 0 {
                port.acknowledge(&mut inner, stale);
            }
            let mut wanted = (inner.control & !control::COMMAND_COMPLETED_ENABLE)
                | control::BUTTON_ENABLE
                | control::PRESENCE_ENABLE
                | control::HOT_PLUG_INTERRUPT_ENABLE;
            if link_reporting {
                wanted |= control::LINK_CHANGED_ENABLE;
            }
            // Power is left as found: an empty slot may be powered (QEMU leaves it so) and a
            // slot whose presence detect is not trusted yet (see `service`) must not lose
            // what is below it.
            if caps.power_indicator() && present && powered {
                wanted = hotplug::with_power_indicator(wanted, Indicator::On);
            }
            if present && !powered {
                // A card waiting in a powered-off slot: bring it up on the first poll.
                inner.last = String::from("card present in a powered-off slot");
                inner.kick = true;
                port.pending.store(true, Ordering::Release);
            }
            port.command(&mut inner, wanted)
        };
        if let Err(e) = enabled {
            let function = port.inner.into_inner().owner.into_function();
            return Err((function, ProbeError(e)));
        }
        let port = Arc::new(port);
        PORTS.lock().push(Arc::downgrade(&port));
        Ok(Box::new(PciehpBound { port }))
    }
}

mod port;

use port::{EVENT_BITS, Inner, Owner, Port};

/// A bound hot-plug port. Dropping it masks the slot's event interrupts and releases the
/// vector and the claim; the functions below stay bound.
pub struct PciehpBound {
    port: Arc<Port>,
}

impl Drop for PciehpBound {
    fn drop(&mut self) {
        self.port.unbound.store(true, Ordering::Release);
        let mut inner = self.port.inner.lock();
        if inner.owner.function().is_present() {
            let quiet = inner.control & !control::EVENT_ENABLES;
            if let Err(e) = self.port.command(&mut inner, quiet) {
                self.port.log(&format!("masking the slot's events: {e}"));
            }
        }
    }
}

impl Bound for PciehpBound {
    fn driver(&self) -> &'static str {
        "pciehp"
    }

    fn address(&self) -> Address {
        self.port.address
    }

    fn status(&self) -> String {
        let inner = self.port.inner.lock();
        let irq = match &inner.owner {
            Owner::Irq(v) => format!("{:?}", v.kind()),
            Owner::Polled(..) => String::from("polled"),
        };
        format!("{}, {irq}, slot {}", self.port.caps, inner.slot.state())
    }

    fn self_test(&mut self) -> Result<String, String> {
        let inner = self.port.inner.lock();
        let f = inner.owner.function();
        let control = f.config_read16(self.port.cap + offset::SLOT_CONTROL);
        if control == 0xffff {
            return Err("the port does not answer".into());
        }
        let wanted =
            control::BUTTON_ENABLE | control::PRESENCE_ENABLE | control::HOT_PLUG_INTERRUPT_ENABLE;
        if control & wanted != wanted {
            return Err(format!(
                "Slot Control {control:#06x}: event interrupts not enabled"
            ));
        }
        Ok(format!("Slot Control {control:#06x}, events enabled"))
    }

    /// `pciehp` (list the slots), `pciehp resources` (the kernel's resource counters),
    /// `pciehp delay <ms>` (the attention-button abort window), `pciehp events` (events
    /// handled so far).
    fn command(&mut self, args: &[&str]) -> Option<Result<String, String>> {
        Some(match args {
            [] | ["slots"] => Ok(slots().join("\n")),
            ["resources"] => HOST
                .get()
                .map(|h| h.resources())
                .ok_or_else(|| String::from("the kernel has not polled yet")),
            ["events"] => Ok(format!(
                "events handled: {}",
                EVENTS_HANDLED.load(Ordering::Relaxed)
            )),
            ["delay"] => Ok(format!(
                "attention button delay: {} ms",
                BUTTON_DELAY_US.load(Ordering::Relaxed) / 1000
            )),
            ["delay", ms] => match ms.parse::<u64>() {
                Ok(ms) if ms <= 60_000 => {
                    set_button_delay_us(ms * 1000);
                    Ok(format!("attention button delay: {ms} ms"))
                }
                _ => Err(format!("delay: {ms} is not a number of ms up to 60000")),
            },
            ["cut", slot] => cut(slot, true),
            ["cut", slot, "quiet"] => cut(slot, false),
            _ => Err(
                "usage: pciehp [slots | resources | events | delay [<ms>] | cut <slot> [quiet]]"
                    .to_string(),
            ),
        })
    }
}

/// Fault injection: turns the power controller of slot `slot` off with the power indicator
/// left on and the drivers below still bound. The card vanishes under its drivers (QEMU hides
/// a device whose slot is unpowered but keeps it plugged in). With `notice`, the next service
/// finds it no longer answering and runs the surprise-removal path; without, nothing looks
/// (as with a card that dies without an event), and its driver finds out on its next wait.
fn cut(slot: &str, notice: bool) -> Result<String, String> {
    let number: u16 = slot
        .parse()
        .map_err(|_| format!("cut: {slot} is not a slot number"))?;
    let port = live_ports()
        .into_iter()
        .find(|p| !p.unbound.load(Ordering::Acquire) && p.caps.physical_slot() == number)
        .ok_or_else(|| format!("cut: no hot-plug slot {number}"))?;
    if !port.caps.power_controller() {
        return Err(format!("cut: slot {number} has no power controller"));
    }
    let mut inner = port.inner.lock();
    if inner.slot.state() != State::On {
        return Err(format!("cut: slot {number} is {}", inner.slot.state()));
    }
    let value = hotplug::with_power(inner.control, false);
    port.command(&mut inner, value)?;
    if notice {
        inner.probe_card = true;
        port.pending.store(true, Ordering::Release);
    }
    Ok(format!(
        "slot {number}: power cut with its drivers bound (fault injection{})",
        if notice { "" } else { ", not looked at" }
    ))
}

/// Sets the attention-button abort window for every slot (default
/// [`pci::hotplug::BUTTON_DELAY_US`], the spec's 5 s).
pub fn set_button_delay_us(us: u64) {
    BUTTON_DELAY_US.store(us, Ordering::Relaxed);
    for port in live_ports() {
        port.inner.lock().slot.set_delay(us);
    }
}

fn live_ports() -> Vec<Arc<Port>> {
    let mut list = PORTS.lock();
    list.retain(|w| w.strong_count() > 0);
    list.iter().filter_map(Weak::upgrade).collect()
}

/// One line per bound hot-plug slot.
pub fn slots() -> Vec<String> {
    live_ports()
        .iter()
        .filter(|p| !p.unbound.load(Ordering::Acquire))
        .map(|p| p.describe())
        .collect()
}

/// (port, physical slot number, powered) of every bound hot-plug slot, for `lspci -t`.
pub fn slot_numbers() -> Vec<(Address, u16, bool)> {
    live_ports()
        .iter()
        .filter(|p| !p.unbound.load(Ordering::Acquire))
        .map(|p| {
            let control = p.inner.lock().control;
            (
                p.address,
                p.caps.physical_slot(),
                !p.caps.power_controller() || hotplug::power_on(control),
            )
        })
        .collect()
}

/// Hot-plug events handled so far.
pub fn events_handled() -> u64 {
    EVENTS_HANDLED.load(Ordering::Relaxed)
}

/// Services every slot: events since the last call, abort windows that ended. Called by
/// the kernel outside interrupt context (its idle loop). Returns the earliest pending
/// deadline (µs since boot), so the caller knows when to call again without an interrupt: the
/// end of an abort window, or, for a slot without a message interrupt, the next look at it
/// (every 100 ms).
pub fn poll(host: &'static dyn Host) -> Option<u64> {
    HOST.call_once(|| host);
    // The registry lock is not held while a slot is serviced: binding below a slot may
    // register new ports (a switch's downstream ports).
    let ports = live_ports();
    let mut next: Option<u64> = None;
    for port in &ports {
        if port.unbound.load(Ordering::Acquire) {
            continue;
        }
        if let Some(d) = port.service(host) {
            next = Some(next.map_or(d, |n| n.min(d)));
        }
    }
    next
}

/// Whether some port's interrupt arrived since it was last serviced. Takes no lock a handler
/// could hold, so it may be called with interrupts disabled.
pub fn signalled() -> bool {
    live_ports()
        .iter()
        .any(|p| !p.unbound.load(Ordering::Acquire) && p.pending.load(Ordering::Acquire))
}
