//! A host bridge's `_SEG`/`_BBN`/`_CRS` and its `_PRT`, resolved to GSIs (ACPI 6.5 §6.2.13,
//! §6.5.5-6.5.6; PCI Firmware 3.2 §4.1).
//!
//! Each `_PRT` entry names a device (address `0xDDDDFFFF`), a pin, and a source:
//! - no source: the entry's source index *is* the GSI, and the line is level-triggered,
//!   active-low (the PCI default);
//! - a link device (`PNP0C0F`): the interrupt comes from its current resources, `_CRS`. A
//!   link with no interrupt set is given one from `_PRS` with `_SRS` (the least used so far
//!   by other links, in `_PRS` order), then read back. Polarity and trigger come from the
//!   descriptor. `IRQ()` descriptors give ISA IRQ numbers (bit *positions* of the mask),
//!   which the MADT's interrupt source overrides map to GSIs; `Interrupt()` descriptors give
//!   GSIs.
//!
//! A link is resolved once and shared by every entry that names it. When a link has no
//! interrupt yet, the one chosen is, where `_PRS` allows it, the one firmware already told the
//! devices behind it (their Interrupt Line registers, PCI 3.0 §6.2.4): BIOSes route PIRQs
//! at boot and record the result there, and a DSDT that does not describe the chipset
//! (SeaBIOS's own tables on a q35 machine) is then still right for the devices present.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{CStr, c_void};

use super::engine::{self, IsaOverride, Value};
use super::ffi::{self, Handle};
use super::os;
use super::osc;
use super::resources::{self, Interrupts, IrqForm};
use super::{HostBridge, Polarity, Route, RouteSource, Trigger};
use crate::hw::PciLocation;

/// A resolved interrupt: GSI, polarity, trigger, and where it came from.
type Resolved = (u32, Polarity, Trigger, RouteSource);

/// Link devices resolved so far (by node), and how many links use each interrupt.
#[derive(Default)]
pub struct Links {
    resolved: BTreeMap<usize, Result<Resolved, String>>,
    uses: BTreeMap<u32, u32>,
}

/// The Interrupt Line values (1-15) of the functions present at (`segment`, `bus`,
/// `device`) whose Interrupt Pin is `pin` (0 = INTA).
fn line_hints(segment: u16, bus: u8, device: u8, pin: u8) -> Vec<u32> {
    let mut hints = Vec::new();
    if device >= 32 {
        return hints;
    }
    for function in 0..8u8 {
        let at = PciLocation {
            segment,
            bus,
            device,
            function,
        };
        let id = os::pci_read(at, 0, 32);
        if id == 0xFFFF_FFFF || id == 0 {
            if function == 0 {
                break;
            }
            continue;
        }
        let line_pin = os::pci_read(at, 0x3C, 16);
        let (line, fpin) = ((line_pin & 0xFF) as u32, ((line_pin >> 8) & 0xFF) as u8);
        if fpin == pin + 1 && (1..16).contains(&line) {
            hints.push(line);
        }
    }
    hints
}

fn integer(scope: Handle, name: &str) -> Result<Option<u64>, String> {
    match engine::evaluate(Some(scope), name, &[])? {
        None => Ok(None),
        Some(Value::Integer(v)) => Ok(Some(v)),
        Some(other) => Err(alloc::format!("{name} returned {other:?}, not an Integer")),
    }
}

fn buffer(scope: Handle, name: &str) -> Result<Option<Vec<u8>>, String> {
    match engine::evaluate(Some(scope), name, &[])? {
        None => Ok(None),
        Some(Value::Buffer(b)) => Ok(Some(b)),
        Some(other) => Err(alloc::format!("{name} returned {other:?}, not a Buffer")),
    }
}

/// Where the ECAM window of the host bridge at `handle` might be when no MCFG entry says:
/// its `_CBA`, and the memory that `PNP0C02` devices directly below it reserve (`reserved`
/// lists every present `PNP0C02` device with its path). The kernel verifies a candidate
/// before it uses it.
///
/// # Safety
/// `handle` and the handles in `reserved` are device nodes ACPICA handed out.
pub unsafe fn ecam_hints(handle: Handle, bridge: &mut HostBridge, reserved: &[(Handle, String)]) {
    match integer(handle, "_CBA") {
        Ok(cba) => bridge.cba = cba,
        Err(e) => log::warn!("acpi: host bridge {}: {e}", bridge.path),
    }
    let prefix = alloc::format!("{}.", bridge.path);
    for (device, path) in reserved {
        let Some(rest) = path.strip_prefix(&prefix) else {
            continue;
        };
        if rest.contains('.') {
            continue; // not directly below the bridge
        }
        match buffer(*device, "_CRS") {
            Ok(Some(crs)) => bridge.reserved.extend(resources::memory_ranges(&crs)),
            Ok(None) => {}
            Err(e) => log::warn!("acpi: {path}: {e}"),
        }
    }
}

/// Asks the host bridge at `handle` for native PCI Express hot-plug control (`_OSC`, PCI
/// Firmware 3.3 §4.5); what firmware granted.
///
/// # Safety
/// `handle` is a device node ACPICA handed out.
pub unsafe fn osc(handle: Handle) -> osc::Osc {
    let args = osc::arguments(osc::SUPPORT, osc::REQUEST);
    match engine::evaluate(Some(handle), "_OSC", &args) {
        Ok(None) => osc::Osc::Absent,
        Ok(Some(Value::Buffer(answer))) => match osc::granted(&answer) {
            Ok(control) => osc::Osc::Granted(control & osc::REQUEST),
            Err(e) => osc::Osc::Failed(e),
        },
        Ok(Some(other)) => {
            osc::Osc::Failed(alloc::format!("_OSC returned {other:?}, not a Buffer"))
        }
        Err(e) => osc::Osc::Failed(alloc::format!("_OSC: {e}")),
    }
}

/// Describes the host bridge at `handle`: numbers and routes.
///
/// # Safety
/// `handle` is a device node ACPICA handed out (from `AcpiGetDevices`).
pub unsafe fn describe(
    handle: Handle,
    path: String,
    overrides: &[IsaOverride],
    links: &mut Links,
) -> HostBridge {
    let mut errors = Vec::new();
    let segment = integer(handle, "_SEG").unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let bbn = integer(handle, "_BBN").unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let range = buffer(handle, "_CRS")
        .unwrap_or_else(|e| {
            errors.push(e);
            None
        })
        .and_then(|crs| resources::bus_range(&crs));
    // `_SEG` is 16 bits and `_BBN` 8 (ACPI 6.5 §6.5.6, §6.5.5): a wider value keeps its low
    // bits, as the field it stands for would, and says so (0 would alias another bridge).
    if let Some(s) = segment.filter(|s| *s > u64::from(u16::MAX)) {
        errors.push(alloc::format!(
            "_SEG {s:#x} is wider than 16 bits: {:#x} used",
            s & 0xffff
        ));
    }
    if let Some(b) = bbn.filter(|b| *b > u64::from(u8::MAX)) {
        errors.push(alloc::format!(
            "_BBN {b:#x} is wider than 8 bits: {:#x} used",
            b & 0xff
        ));
    }
    for e in &errors {
        log::warn!("acpi: host bridge {path}: {e}");
    }
    let segment = segment.map_or(0, |s| (s & 0xffff) as u16);
    let bus = bbn
        .map(|b| (b & 0xff) as u8)
        .or(range.map(|r| r.0))
        .unwrap_or(0);
    let mut bridge = engine::bridge(path, segment, bus, range.map(|r| r.1));
    let mut table = ffi::Buffer {
        length: ffi::ALLOCATE_BUFFER,
        pointer: core::ptr::null_mut(),
    };
    // SAFETY: `handle` is a device node (the caller's contract); ACPICA allocates the result
    // buffer.
    let status = unsafe { ffi::AcpiGetIrqRoutingTable(handle, &mut table) };
    if status == ffi::AE_NOT_FOUND {
        engine::free_buffer(&table);
        return bridge;
    }
    bridge.has_prt = true;
    if status != ffi::AE_OK {
        bridge.prt = Err(alloc::format!("_PRT: {}", os::status_name(status)));
        engine::free_buffer(&table);
        return bridge;
    }
    let mut entries = prt_entries(&table);
    engine::free_buffer(&table);
    // PCI Firmware 3.3 §4.5.1 / ACPI 6.5 §6.2.13: Address is (device << 16) | 0xFFFF, the
    // device 0-31, the pin 0-3 (INTA#-INTD#). An entry outside that routes nothing: it is
    // dropped with a warning, never folded onto another device's or pin's line.
    let name = &bridge.path;
    entries.retain(|e| {
        let device = e.address >> 16;
        let ok = device <= 31 && e.address & 0xffff == 0xffff && e.pin <= 3;
        if !ok {
            log::warn!(
                "acpi: host bridge {name}: _PRT entry with address {:#x}, pin {} is not a device 0-31 and pin INTA#-INTD#: ignored",
                e.address,
                e.pin
            );
        }
        ok
    });
    // What firmware told the devices present behind each link.
    let mut hints: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for e in entries.iter().filter(|e| !e.source.is_empty()) {
        let device = (e.address >> 16) as u8;
        hints
            .entry(e.source.as_str())
            .or_default()
            .extend(line_hints(segment, bus, device, (e.pin & 3) as u8));
    }
    let mut routes = Vec::with_capacity(entries.len());
    for e in &entries {
        let device = (e.address >> 16) as u8;
        let Ok(pin) = u8::try_from(e.pin).map(|p| p & 3) else {
            continue;
        };
        let resolved = if e.source.is_empty() {
            Ok((e.index, Polarity::Low, Trigger::Level, RouteSource::Gsi))
        } else {
            let hint = hints.get(e.source.as_str()).map_or(&[][..], |h| &h[..]);
            link(handle, &e.source, e.index, overrides, hint, links)
        };
        match resolved {
            Ok((gsi, polarity, trigger, source)) => routes.push(Route {
                device,
                pin,
                gsi,
                polarity,
                trigger,
                source,
            }),
            Err(why) => {
                bridge.prt = Err(alloc::format!(
                    "device {device:#04x} pin {}: {why}",
                    (b'A' + pin) as char
                ));
                return bridge;
            }
        }
    }
    bridge.prt = Ok(routes);
    bridge
}

struct PrtEntry {
    address: u64,
    pin: u32,
    index: u32,
    source: String,
}

/// Walks ACPICA's `ACPI_PCI_ROUTING_TABLE` list (length, pin, address, source index, source
/// name; ended by a zero length), every step bounded by the buffer.
fn prt_entries(table: &ffi::Buffer) -> Vec<PrtEntry> {
    let mut out = Vec::new();
    if table.pointer.is_null() || table.length == ffi::ALLOCATE_BUFFER {
        return out;
    }
    // SAFETY: ACPICA filled `length` bytes at `pointer`.
    let bytes = unsafe { core::slice::from_raw_parts(table.pointer.cast::<u8>(), table.length) };
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 20) {
        let u32_at =
            |o: usize| u32::from_le_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
        let length = u32_at(0) as usize;
        if length < 24 || out.len() >= 4096 {
            break;
        }
        let Some(entry) = bytes.get(at..at + length) else {
            break;
        };
        let address = u64::from(u32_at(8)) | (u64::from(u32_at(12)) << 32);
        let source = entry
            .get(20..)
            .and_then(|s| CStr::from_bytes_until_nul(s).ok())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(PrtEntry {
            address,
            pin: u32_at(4),
            index: u32_at(16),
            source,
        });
        at += length;
    }
    out
}

fn link(
    bridge: Handle,
    source: &str,
    index: u32,
    overrides: &[IsaOverride],
    hints: &[u32],
    links: &mut Links,
) -> Result<Resolved, String> {
    let handle = engine::handle_of(bridge, source)
        .ok_or_else(|| alloc::format!("link {source} not found"))?;
    let key = handle as usize;
    if let Some(r) = links.resolved.get(&key) {
        return r.clone();
    }
    let r = resolve_link(handle, source, index, overrides, hints, links);
    if let Ok((gsi, _, _, _)) = r {
        *links.uses.entry(gsi).or_default() += 1;
    }
    links.resolved.insert(key, r.clone());
    r
}

fn current(handle: Handle) -> Result<Option<Interrupts>, String> {
    let crs = buffer(handle, "_CRS")?.ok_or("no _CRS")?;
    Ok(resources::interrupts(&crs)
        .into_iter()
        .find(|i| i.numbers.iter().any(|n| *n != 0)))
}

fn resolve_link(
    handle: Handle,
    source: &str,
    index: u32,
    overrides: &[IsaOverride],
    hints: &[u32],
    links: &Links,
) -> Result<Resolved, String> {
    let to_gsi = |irqs: &Interrupts, n: u32| match irqs.form {
        IrqForm::Legacy { .. } => overrides
            .iter()
            .find(|o| u32::from(o.source) == n)
            .map_or(n, |o| o.gsi),
        IrqForm::Extended => n,
    };
    let pick = |irqs: &Interrupts| -> Option<u32> {
        irqs.numbers
            .get(index as usize)
            .or(irqs.numbers.first())
            .copied()
            .filter(|n| *n != 0)
    };
    if let Some(irqs) = current(handle).map_err(|e| alloc::format!("link {source}: {e}"))?
        && let Some(n) = pick(&irqs)
    {
        return Ok((
            to_gsi(&irqs, n),
            irqs.polarity,
            irqs.trigger,
            RouteSource::LinkAsFound,
        ));
    }
    // Not set: choose from _PRS and set it.
    let prs = buffer(handle, "_PRS")
        .map_err(|e| alloc::format!("link {source}: {e}"))?
        .ok_or_else(|| alloc::format!("link {source}: disabled and no _PRS"))?;
    let choice = resources::interrupts(&prs)
        .into_iter()
        .find(|i| i.numbers.iter().any(|n| *n != 0))
        .ok_or_else(|| alloc::format!("link {source}: _PRS offers no interrupt"))?;
    // The IRQ firmware gave the devices behind this link (the most common one), if _PRS
    // offers it; else the one least used by other links so far.
    let hinted = hints
        .iter()
        .copied()
        .filter(|h| choice.numbers.contains(h))
        .max_by_key(|h| hints.iter().filter(|x| *x == h).count());
    let number = hinted
        .or_else(|| {
            choice
                .numbers
                .iter()
                .copied()
                .filter(|n| *n != 0)
                .min_by_key(|n| links.uses.get(&to_gsi(&choice, *n)).copied().unwrap_or(0))
        })
        .ok_or_else(|| alloc::format!("link {source}: _PRS offers no interrupt"))?;
    let template = resources::srs_template(&choice, number)
        .ok_or_else(|| alloc::format!("link {source}: cannot encode IRQ {number}"))?;
    engine::evaluate(Some(handle), "_SRS", &[Value::Buffer(template)])
        .map_err(|e| alloc::format!("link {source}: _SRS: {e}"))?
        .ok_or_else(|| alloc::format!("link {source}: disabled and no _SRS"))?;
    // Read back what the link now says (some only report after _SRS).
    match current(handle) {
        Ok(Some(irqs)) if pick(&irqs).is_some() => {
            let n = pick(&irqs).unwrap_or(number);
            Ok((
                to_gsi(&irqs, n),
                irqs.polarity,
                irqs.trigger,
                RouteSource::LinkProgrammed,
            ))
        }
        _ => Ok((
            to_gsi(&choice, number),
            choice.polarity,
            choice.trigger,
            RouteSource::LinkProgrammed,
        )),
    }
}

/// Keeps `c_void` in scope for the FFI signatures above.
const _: Option<*mut c_void> = None;
