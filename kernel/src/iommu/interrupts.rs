//! Interrupt remapping: every device interrupt names an entry the kernel wrote for its owner.
//!
//! Design note. DMA remapping keeps a device inside its owner's memory, but a write to
//! `0xFEEx_xxxx` is not memory: it is an interrupt message, which the remapping unit does
//! not translate. Without interrupt remapping a driver that points a queue at that range
//! (any number written into a device register or a descriptor is an address) makes its
//! device raise any vector on any CPU: another driver's handler, or an exception vector.
//! With it ([`enable`], at boot right after DMA remapping), a message reaches a processor
//! only through an entry of the unit's table:
//!
//! - the entry of a vector is written when a message for it is made
//!   ([`msi_message`], from `pciirq`'s `message_for`; [`ioapic_entry`], from
//!   `ioapic::route`), with the source check of its owner: the function's requester ID (or
//!   the bus range its messages come from behind a PCIe-to-PCI bridge), or the I/O APIC's
//!   ID from the DMAR table;
//! - it is cleared, and the unit's entry cache invalidated, when the vector goes back to
//!   the allocator ([`release`], from `interrupts::vectors::free`): the entry lives exactly
//!   as long as the vector's owner;
//! - compatibility-format messages (the ones a made-up write produces) are blocked; a
//!   message from the wrong requester, or naming a cleared entry, is refused and recorded
//!   (the console's `iommu` command lists it).
//!
//! The entry's index is the vector: device interrupts go to one CPU, and a vector has one
//! owner at a time. `intremap=off` on the command line keeps the compatibility format (DMA
//! remapping stays on).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use firmware::tables::dmar::Dmar;
use iommu::{SourceCheck, Target};
use pci::Address;
use pci::platform::MsiMessage;

use super::{State, aliases, source, with};

/// An I/O APIC the units remap: its ID (as in the MADT), the unit and the requester ID its
/// messages carry (from the DMAR's I/O APIC device scope).
#[derive(Clone, Copy, Debug)]
pub(super) struct IoApicSource {
    pub id: u8,
    pub unit: usize,
    pub requester: u16,
    /// The PCI segment of `requester`.
    pub segment: u16,
}

/// The I/O APICs the DMAR's scopes name (`firmware::tables::dmar::IoApicScope`), each
/// with the remapper's unit: `units[i]` is the unit of DRHD `i` (`None`: not used). Every
/// I/O APIC of the MADT must be there, or remapping would block its interrupts.
pub(super) fn io_apics(
    dmar: &Dmar,
    units: &[Option<usize>],
    madt: &[u8],
) -> Result<Vec<IoApicSource>, String> {
    dmar.io_apic_scopes(madt)?
        .into_iter()
        .map(|s| {
            let unit = units
                .get(s.unit)
                .copied()
                .flatten()
                .ok_or_else(|| format!("the unit listing I/O APIC {} is not used", s.id))?;
            Ok(IoApicSource {
                id: s.id,
                unit,
                requester: s.requester,
                segment: 0,
            })
        })
        .collect()
}

/// Turns interrupt remapping on in every unit (see the module documentation). A failure
/// leaves the compatibility format, with the reason in the log.
pub(super) fn enable(
    state: &mut State,
    ioapics: Vec<IoApicSource>,
    x2apic: bool,
    nosid: bool,
) -> Result<(), String> {
    state
        .remapper
        .enable_interrupt_remapping(x2apic)
        .map_err(|e| format!("{e}"))?;
    state.ioapics = ioapics;
    state.nosid = nosid;
    Ok(())
}

/// Whether interrupts are remapped.
pub fn remapping() -> bool {
    with(|s| s.remapper.remaps_interrupts()).unwrap_or(false)
}

/// Whether the machine's units are AMD IOMMUs.
fn amd() -> bool {
    with(|s| s.remapper.amd().is_some()).unwrap_or(false)
}

/// An AMD IOMMU's entries for `owner`'s vectors `first..first + count` on `cpu`, in the
/// tables of the owner and of each alias its messages may carry (the ones a unit covers).
fn amd_entries(owner: Address, cpu: u32, first: u8, count: u8) -> Result<(), String> {
    let base = index(cpu, first)?;
    let destination = destination(cpu)?;
    let own = source(owner);
    let mut requesters = alloc::vec![own];
    requesters.extend(aliases(owner));
    with(|s| {
        let remapper = &mut s.remapper;
        let covered: Vec<iommu::Source> = requesters
            .iter()
            .copied()
            .filter(|r| *r == own || remapper.unit_for(*r).is_some())
            .collect();
        let r = remapper.amd().ok_or("not an AMD IOMMU")?;
        for who in covered {
            for n in 0..u16::from(count.max(1)) {
                let target = Target {
                    vector: first.wrapping_add(n as u8),
                    destination,
                    level: false,
                };
                r.set_interrupt(who, base + n, target)
                    .map_err(|e| format!("interrupt remapping entry {}: {e}", base + n))?;
            }
        }
        Ok(())
    })
    .unwrap_or_else(|| Err("DMA remapping is off".into()))
}

/// The entry of `vector` in I/O APIC `ioapic`'s table on an AMD IOMMU.
fn amd_ioapic_entry(
    ioapic: u8,
    cpu: u32,
    vector: u8,
    dest: u32,
    level: bool,
) -> Result<(), String> {
    let at = index(cpu, vector)?;
    with(|s| {
        let apic = s
            .ioapics
            .iter()
            .find(|a| a.id == ioapic)
            .copied()
            .ok_or_else(|| format!("the IVRS lists no requester for I/O APIC {ioapic}"))?;
        let who = iommu::Source {
            segment: apic.segment,
            bus: (apic.requester >> 8) as u8,
            devfn: apic.requester as u8,
        };
        let target = Target {
            vector,
            destination: dest,
            level,
        };
        s.remapper
            .amd()
            .ok_or("not an AMD IOMMU")?
            .set_interrupt(who, at, target)
            .map_err(|e| format!("interrupt remapping entry {at}: {e}"))
    })
    .unwrap_or_else(|| Err("DMA remapping is off".into()))
}

/// The entry index of `vector` on `cpu`: the vector itself, on the one CPU that takes
/// device interrupts.
fn index(cpu: u32, vector: u8) -> Result<u16, String> {
    if cpu != crate::interrupts::vectors::current_cpu() {
        return Err(format!(
            "vector {vector:#04x} is on CPU {cpu}, which takes no remapped interrupts"
        ));
    }
    Ok(u16::from(vector))
}

fn destination(cpu: u32) -> Result<u32, String> {
    crate::interrupts::lapic::apic_id(cpu).ok_or_else(|| format!("no APIC ID for CPU {cpu}"))
}

/// How a function's messages are checked: its own requester ID, or, when its requests may
/// carry a bridge's ID instead (`aliases`), the buses between that bridge's and its own,
/// as Linux verifies them.
fn check_for(owner: Address) -> SourceCheck {
    if with(|s| s.nosid).unwrap_or(false) {
        return SourceCheck::Any;
    }
    let own = source(owner);
    let aliases = aliases(owner);
    if aliases.is_empty() {
        return SourceCheck::Requester(own.id());
    }
    let buses = aliases.iter().map(|a| a.bus).chain([own.bus]);
    let first = buses.clone().min().unwrap_or(own.bus);
    let last = buses.max().unwrap_or(own.bus);
    SourceCheck::Buses(first, last)
}

/// The remappable-format message for `count` vectors from `first` on `cpu`, owned by
/// `owner`: one entry per vector, all checked against the owner's requester ID. `None`
/// when interrupts are not remapped (the caller makes a compatibility-format message).
pub fn msi_message(
    owner: Address,
    cpu: u32,
    first: u8,
    count: u8,
) -> Option<Result<MsiMessage, String>> {
    if !remapping() {
        return None;
    }
    if amd() {
        // The device's own message names its own table's entries (index = vector).
        return amd_entries(owner, cpu, first, count).err().map(Err);
    }
    let check = check_for(owner);
    Some((|| {
        let base = index(cpu, first)?;
        let destination = destination(cpu)?;
        let who = source(owner);
        let unit = with(|s| s.remapper.unit_for(who))
            .flatten()
            .ok_or_else(|| format!("no remapping unit covers {owner}"))?;
        for n in 0..u16::from(count.max(1)) {
            let target = Target {
                vector: first.wrapping_add(n as u8),
                destination,
                level: false,
            };
            with(|s| s.remapper.set_interrupt(unit, base + n, target, check))
                .unwrap_or(Err(iommu::RemapError::NoInterruptTable))
                .map_err(|e| format!("interrupt remapping entry {}: {e}", base + n))?;
        }
        // Multi-message MSI adds the message number to the data: the subhandle.
        Ok(MsiMessage {
            address: iommu::intremap::msi_address(base, count > 1),
            data: 0,
        })
    })())
}

/// The remappable-format redirection entry of I/O APIC `ioapic`'s input delivering
/// `vector` to `dest` (an APIC ID), masked or not. `None` when interrupts are not remapped.
pub fn ioapic_entry(
    ioapic: u8,
    vector: u8,
    dest: u32,
    level: bool,
    active_low: bool,
    masked: bool,
) -> Option<Result<u64, String>> {
    if !remapping() {
        return None;
    }
    let cpu = crate::interrupts::vectors::current_cpu();
    if amd() {
        // The I/O APIC's message carries the vector: its table's entry of that index
        // decides.
        return amd_ioapic_entry(ioapic, cpu, vector, dest, level)
            .err()
            .map(Err);
    }
    Some((|| {
        let at = index(cpu, vector)?;
        let apic = with(|s| s.ioapics.iter().find(|a| a.id == ioapic).copied())
            .flatten()
            .ok_or_else(|| format!("no remapping unit lists I/O APIC {ioapic}"))?;
        let target = Target {
            vector,
            destination: dest,
            level,
        };
        with(|s| {
            let check = if s.nosid {
                SourceCheck::Any
            } else {
                SourceCheck::Requester(apic.requester)
            };
            s.remapper.set_interrupt(apic.unit, at, target, check)
        })
        .unwrap_or(Err(iommu::RemapError::NoInterruptTable))
        .map_err(|e| format!("interrupt remapping entry {at}: {e}"))?;
        Ok(iommu::intremap::ioapic_entry(
            at, vector, level, active_low, masked,
        ))
    })())
}

/// Vectors `first..first + count` on `cpu` went back to the allocator: their entries are
/// cleared in every unit, so their last owner's device can no longer raise them.
pub fn release(cpu: u32, first: u8, count: u8) {
    if cpu != crate::interrupts::vectors::current_cpu() {
        return;
    }
    let result = with(|s| {
        if !s.remapper.remaps_interrupts() {
            return Ok(());
        }
        if let Some(r) = s.remapper.amd() {
            // Every requester's entry of these vectors: the owner's, its aliases', an
            // I/O APIC's.
            let end = u16::from(first) + u16::from(count);
            for (requester, index, _) in r.interrupt_entries() {
                if (u16::from(first)..end).contains(&index) {
                    r.clear_interrupt(requester, index)?;
                }
            }
            return Ok(());
        }
        for unit in 0..s.remapper.units() {
            for n in 0..u16::from(count) {
                s.remapper.clear_interrupt(unit, u16::from(first) + n)?;
            }
        }
        Ok::<(), iommu::RemapError>(())
    });
    if let Some(Err(e)) = result {
        log::error!("iommu: clearing the remapping entries of vectors {first:#04x}+{count}: {e}");
    }
}

/// The entry of `vector` in the unit that covers `owner` (low, high), for tests.
pub fn entry_of(owner: Address, vector: u8) -> Option<[u64; 2]> {
    with(|s| {
        if let Some(r) = s.remapper.amd() {
            // An AMD IRTE is 32 bits, in the owner's own table.
            return r
                .interrupt_entry(source(owner), u16::from(vector))
                .map(|e| [u64::from(e), 0]);
        }
        let unit = s.remapper.unit_for(source(owner))?;
        s.remapper.interrupt_entry(unit, u16::from(vector))
    })
    .flatten()
}

/// Every present entry, as one line each for the console: unit, index, what it delivers and
/// whose messages pass (VT-d §9.10 fields).
pub fn describe_entries() -> Vec<String> {
    with(|s| {
        let mut out = Vec::new();
        if let Some(r) = s.remapper.amd() {
            // AMD IOMMU §2.2.5.1: vector 23:16, destination 15:8, one table per requester.
            for (who, index, e) in r.interrupt_entries() {
                out.push(format!(
                    "{:02x}:{:02x}.{} entry {index:#04x}: vector {:#04x} to APIC {}, only from it",
                    who.bus,
                    who.devfn >> 3,
                    who.devfn & 7,
                    (e >> 16) as u8,
                    (e >> 8) as u8,
                ));
            }
            return out;
        }
        for unit in 0..s.remapper.units() {
            for index in 0..iommu::remapper::INTERRUPT_ENTRIES {
                let Some([low, high]) = s.remapper.interrupt_entry(unit, index) else {
                    continue;
                };
                let sid = high as u16;
                let who = match (high >> 18) & 3 {
                    1 => format!(
                        "from {:02x}:{:02x}.{}",
                        sid >> 8,
                        (sid >> 3) & 0x1f,
                        sid & 7
                    ),
                    2 => format!("from buses {:02x}..={:02x}", sid >> 8, sid & 0xff),
                    _ => "from any requester".into(),
                };
                out.push(format!(
                    "unit {unit} entry {index:#04x}: vector {:#04x} to APIC {}, {}, {who}",
                    (low >> 16) as u8,
                    if s.remapper.extended_destinations() {
                        low >> 32
                    } else {
                        (low >> 40) & 0xff
                    },
                    if low & (1 << 4) != 0 { "level" } else { "edge" },
                ));
            }
        }
        out
    })
    .unwrap_or_default()
}

/// PIT ticks the I/O APIC check's handler counted.
static CHECK_TICKS: AtomicU64 = AtomicU64::new(0);

/// Longest the check waits for a PIT tick (the PIT runs at 18.2 Hz: one every 55 ms).
const CHECK_US: u64 = 150_000;

/// What [`check_io_apic_path`] found.
pub(super) enum Check {
    /// A PIT tick arrived through the I/O APIC and its remapping entry.
    Arrived,
    /// The unit refused the I/O APIC's message (the fault's reason): interrupt remapping
    /// would silence every I/O APIC input (the serial port, a PS/2 keyboard, INTx).
    Refused(u8),
    /// Nothing arrived and nothing was refused: the PIT may be gated or its IRQ 0 taken by
    /// the HPET; nothing can be concluded.
    Silent,
    /// The check could not be set up.
    NotRun(String),
}

/// Checks that I/O APIC interrupts arrive through interrupt remapping, with the PIT's IRQ 0
/// (channel 0 runs at 18.2 Hz, `time::pit`): routed to a vector of its own, unmasked until
/// one tick arrives or [`CHECK_US`] passed, then masked and the vector given back. Linux's
/// `check_timer` checks the same route the same way. Firmware whose DMAR names the wrong
/// requester for an I/O APIC makes the unit refuse its messages, which the fault record
/// says.
pub(super) fn check_io_apic_path() -> Check {
    use crate::interrupts::{dispatch, ioapic, lapic, vectors};
    let (gsi, trigger) = ioapic::isa_route(0);
    let block = match vectors::allocate(1) {
        Ok(b) => b,
        Err(e) => return Check::NotRun(format!("no vector ({e})")),
    };
    let (cpu, vector) = (block.cpu(), block.first());
    let handler = Box::new(|| {
        CHECK_TICKS.fetch_add(1, Ordering::Relaxed);
    });
    if let Err(e) = dispatch::install(vector, "iommu check", "IOAPIC", handler) {
        let _ = vectors::free(block);
        return Check::NotRun(format!("handler: {e:?}"));
    }
    let dest = lapic::apic_id(cpu).unwrap_or(0);
    let before = CHECK_TICKS.load(Ordering::Relaxed);
    let routed =
        ioapic::route(gsi, vector, dest, trigger).and_then(|()| ioapic::set_masked(gsi, false));
    let mut arrived = false;
    if routed.is_ok() {
        let deadline = crate::time::micros_since_boot() + CHECK_US;
        while crate::time::micros_since_boot() < deadline {
            if CHECK_TICKS.load(Ordering::Relaxed) > before {
                arrived = true;
                break;
            }
            core::hint::spin_loop();
        }
    }
    let _ = ioapic::set_masked(gsi, true);
    dispatch::uninstall(vector);
    let refused = super::take_faults()
        .into_iter()
        .find(|f| f.interrupt() && f.address == u64::from(vector))
        .and_then(|f| f.vtd_reason());
    let _ = vectors::free(block);
    match (routed, arrived, refused) {
        (Err(e), _, _) => Check::NotRun(format!("GSI {gsi}: {e}")),
        (Ok(()), true, _) => Check::Arrived,
        (Ok(()), false, Some(reason)) => Check::Refused(reason),
        (Ok(()), false, None) => Check::Silent,
    }
}
