//! DMA remapping with Intel VT-d or an AMD IOMMU: each claimed PCI function reaches only its
//! own DMA memory.
//!
//! Design note. The `pci` crate's types make sure the kernel never *gives* a device memory
//! that is not its function's (`BusAddr`, parking), but a driver can still write any number
//! into a register the device reads as an address, and a buggy device can use an address
//! after its buffer was freed. On a machine whose firmware describes remapping units (the
//! ACPI DMAR table), this module closes that gap with the `iommu` crate:
//!
//! - at boot, after PCI enumeration and before any driver binds ([`init`]), every function
//!   the units cover gets a pass-through context entry and translation goes on: unclaimed
//!   devices (a graphics controller scanning out the firmware's framebuffer, a USB
//!   controller firmware still uses) work as before;
//! - a claim isolates the function ([`isolate`], from `pciirq::claim`): its own domain,
//!   holding only the firmware's reserved regions for it (RMRRs);
//! - every DMA region allocated for the function is mapped into its domain when it is made
//!   and unmapped, with the unit's IOTLB invalidated and its requests drained, before its
//!   frames are freed ([`DeviceDma`]); a region the unit cannot be made to forget is leaked,
//!   never reused;
//! - requests elsewhere are blocked and recorded by the unit ([`take_faults`]; the console's
//!   `iommu` command shows them).
//!
//! Who owns what: the remapper (tables, domains, units) is this module's static, for the
//! kernel's life. A [`DeviceDma`] owns its frames and its mapping: `Drop` unmaps, then frees.
//! `iommu=off` on the command line leaves translation off (devices then reach all memory, as
//! on a machine without units). Without a DMAR or IVRS table nothing here runs. The AMD
//! path is in `amd.rs`; `backend.rs` holds either kind behind one set of calls.

mod amd;
mod backend;
mod fault;
mod hw;
pub mod interrupts;
mod vtd;

pub use fault::{Fault, describe};

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicU64, Ordering};
use iommu::scope::Upstream;
use iommu::{Source, Summary};
use pci::Address;

use spin::Mutex;

use crate::memory::dma::DmaBuffer;
use backend::Backend;

/// Largest reserved region (RMRR) mapped for a device, page by page.
const MAX_RESERVED: u64 = 256 << 20;

struct State {
    remapper: Backend,
    /// Memory firmware needs devices to keep reaching (VT-d RMRRs, AMD IVMD unity ranges):
    /// (function, start, end) with `end` exclusive.
    reserved: Vec<(Source, u64, u64)>,
    /// Faults taken from the units so far (kept for the console and tests), oldest first.
    faults: Vec<Fault>,
    /// The I/O APICs whose interrupts are remapped (empty while interrupts are not).
    ioapics: Vec<interrupts::IoApicSource>,
    /// `intremap=nosid`: entries check no requester ID.
    nosid: bool,
    /// What the boot's check of the I/O APIC path found (`check_interrupt_remapping`).
    io_apic_check: &'static str,
    /// Faults the fault event handler took from the units, not yet given to
    /// [`take_faults`] (room for [`PENDING`], so the handler never grows it).
    pending: Vec<Fault>,
}

/// Faults the fault event handler keeps until someone takes them.
const PENDING: usize = 64;

/// Fault event interrupts handled.
static FAULT_EVENTS: AtomicU64 = AtomicU64::new(0);

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    x86_64::instructions::interrupts::without_interrupts(|| STATE.lock().as_mut().map(f))
}

fn source(address: Address) -> Source {
    Source {
        segment: address.segment(),
        bus: address.bus(),
        devfn: address.device() << 3 | address.function(),
    }
}

/// Reads the DMAR table and turns remapping on (see the module documentation), and
/// interrupt remapping unless `intremap_off` ([`interrupts`]; `nosid`: without requester
/// checks). Call after PCI enumeration,
/// before any interrupt is routed or driver binds.
pub fn init(disabled: bool, intremap_off: bool, nosid: bool, ivrs_ioapic: Option<&str>) {
    let platform = crate::platform::get();
    let dmar = platform.and_then(|p| p.dmar.as_ref());
    let ivrs = platform.and_then(|p| p.ivrs.as_ref());
    if dmar.is_none() && ivrs.is_none() {
        log::info!("iommu: no DMAR or IVRS table: DMA is not remapped, devices reach all memory");
        return;
    }
    if disabled {
        log::warn!("iommu: iommu=off: DMA is not remapped, devices reach all memory");
        return;
    }
    match (dmar, ivrs) {
        (Some(bytes), _) => vtd::init(bytes, intremap_off, nosid),
        (None, Some(bytes)) => {
            let Some(state) = amd::init(bytes, intremap_off, ivrs_ioapic) else {
                return;
            };
            x86_64::instructions::interrupts::without_interrupts(|| {
                *STATE.lock() = Some(state);
            });
            if interrupts::remapping() {
                check_interrupt_remapping();
            }
        }
        (None, None) => {}
    }
}

/// Interrupt remapping must not cost the board its I/O APIC inputs (the serial port, a PS/2
/// keyboard, INTx): if the unit refuses a PIT tick routed through the I/O APIC, remapping
/// goes off again, with the reason in the log.
fn check_interrupt_remapping() {
    let check = interrupts::check_io_apic_path();
    let summary = match &check {
        interrupts::Check::Arrived => "a PIT tick arrived through the I/O APIC's remapping entry",
        interrupts::Check::Silent => "no PIT tick within the check",
        interrupts::Check::NotRun(_) => "not run",
        interrupts::Check::Refused(_) => "the unit refused the I/O APIC's interrupt: remapping off",
    };
    with(|s| s.io_apic_check = summary);
    match check {
        interrupts::Check::Arrived => {
            log::info!("iommu: a PIT tick arrived through the I/O APIC's remapping entry");
        }
        interrupts::Check::Silent if kind() == Some("AMD IOMMU") => {
            // An AMD IOMMU that refuses the I/O APIC's message records nothing this kernel
            // reads back: silence is the only sign, and the safe side is the board's inputs.
            let off = with(|s| s.remapper.disable_interrupt_remapping());
            with(|s| {
                s.io_apic_check = "no PIT tick arrived through the I/O APIC's entry: remapping off";
                s.ioapics.clear();
            });
            log::error!(
                "iommu: no PIT tick arrived through the I/O APIC's entry (the IVRS may name the wrong requester for it): interrupt remapping is off again ({off:?}), interrupt messages are not checked"
            );
        }
        interrupts::Check::Silent => log::info!(
            "iommu: no PIT tick within the check (the PIT may be gated); interrupt remapping stays on"
        ),
        interrupts::Check::NotRun(why) => {
            log::info!("iommu: the I/O APIC path was not checked ({why})");
        }
        interrupts::Check::Refused(reason) => {
            let off = with(|s| s.remapper.disable_interrupt_remapping());
            match off {
                Some(Ok(())) => log::error!(
                    "iommu: the unit refused the I/O APIC's interrupt (reason {reason:02x}h; the DMAR may name the wrong requester for it): interrupt remapping is off again, interrupt messages are not checked (intremap=nosid keeps it on without requester checks)"
                ),
                other => log::error!(
                    "iommu: the unit refused the I/O APIC's interrupt (reason {reason:02x}h) and interrupt remapping could not be turned off ({other:?}): I/O APIC inputs may stay silent; boot with intremap=off"
                ),
            }
        }
    }
}

/// The units' fault event interrupt (VT-d §7.3): one vector for the kernel's life, whose
/// handler takes the recorded faults from the units as they happen (so the next fault
/// raises the event again) and keeps them for [`take_faults`]. The message is in the
/// compatibility format: the units' own interrupts are not remapped.
fn start_fault_events() {
    use crate::interrupts::{dispatch, lapic, vectors};
    let block = match vectors::allocate(1) {
        Ok(b) => b,
        Err(e) => {
            log::warn!("iommu: no vector for fault events ({e}); faults are read when asked for");
            return;
        }
    };
    let (cpu, vector) = (block.cpu(), block.first());
    let Some(apic) = lapic::apic_id(cpu).and_then(|id| u8::try_from(id).ok()) else {
        log::warn!("iommu: fault events need an APIC ID below 256; faults are read when asked for");
        let _ = vectors::free(block);
        return;
    };
    let handler = alloc::boxed::Box::new(|| {
        FAULT_EVENTS.fetch_add(1, Ordering::Relaxed);
        // The handler runs with interrupts off, and every holder of the state's lock holds
        // it with interrupts off on the one CPU: the lock is free here.
        with(|s| {
            for f in s.remapper.take_faults() {
                if s.pending.len() < PENDING {
                    s.pending.push(f);
                }
            }
        });
    });
    if let Err(e) = dispatch::install(vector, "iommu", "fault event", handler) {
        log::warn!("iommu: fault event handler: {e:?}; faults are read when asked for");
        let _ = vectors::free(block);
        return;
    }
    let message = pci::x86_msi::x86_message(apic, vector);
    let on = with(|s| {
        s.remapper
            .enable_fault_events(message.address, message.data)
    });
    if on != Some(true) {
        dispatch::uninstall(vector);
        let _ = vectors::free(block);
        return;
    }
    log::info!("iommu: fault events on vector {vector:#04x}");
}

/// What the boot's check of the I/O APIC path through interrupt remapping found.
pub fn io_apic_check() -> &'static str {
    with(|s| s.io_apic_check).unwrap_or("not run")
}

/// Fault event interrupts handled so far.
pub fn fault_events() -> u64 {
    FAULT_EVENTS.load(Ordering::Relaxed)
}

/// The requester IDs `address`'s DMA may carry besides its own, from the bridges above it
/// (`iommu::scope::aliases`).
fn aliases(address: Address) -> Vec<Source> {
    let Some(scan) = crate::pcibus::scan() else {
        return Vec::new();
    };
    let topology = &scan.topology;
    let segment = address.segment();
    iommu::scope::aliases(source(address), |bus| {
        let bridge = topology
            .buses
            .iter()
            .find(|b| b.segment == segment && b.number == bus)?
            .bridge?;
        // PCIe Capabilities register, Device/Port Type (bits 7:4).
        let kind = match topology
            .function(bridge)?
            .pcie_flags
            .map(|f| (f >> 4) & 0xf)
        {
            Some(7) => Upstream::PcieToPci,
            Some(8) | None => Upstream::Other,
            Some(_) => Upstream::PciePort,
        };
        Some((source(bridge), kind))
    })
}

/// Gives a newly claimed function its own domain (shared with the functions whose requests
/// carry the same alias, behind a PCIe-to-PCI bridge). A failure is logged: the function
/// then reaches all memory, as without remapping.
pub fn isolate(address: Address) {
    let who = source(address);
    if summary().is_none() {
        return;
    }
    let aliases = aliases(address);
    let result = with(|s| {
        let ranges: Vec<(u64, u64)> = s
            .reserved
            .iter()
            .filter(|r| r.0 == who)
            .map(|r| (r.1, r.2))
            .collect();
        s.remapper.isolate(who, &aliases, &ranges)
    });
    if let Some(Err(e)) = result {
        log::error!("iommu: {address} not isolated ({e}): it can reach all memory");
    }
}

/// The requester IDs (bus << 8 | devfn) `address`'s DMA may reach a unit with: its own,
/// then its aliases.
pub fn requester_ids(address: Address) -> Vec<u16> {
    core::iter::once(source(address))
        .chain(aliases(address))
        .map(|s| s.id())
        .collect()
}

/// Every function with a domain of its own.
pub fn isolated_functions() -> Vec<Address> {
    with(|s| {
        s.remapper
            .isolated_functions()
            .into_iter()
            .filter_map(|f| Address::new(f.segment, f.bus, f.devfn >> 3, f.devfn & 7).ok())
            .collect()
    })
    .unwrap_or_default()
}

/// Whether `address` has its own domain.
pub fn isolated(address: Address) -> bool {
    with(|s| s.remapper.isolated(source(address))).unwrap_or(false)
}

/// The function is gone: its domain goes, its context entry passes through again.
pub fn forget(address: Address) {
    if let Some(Err(e)) = with(|s| s.remapper.release(source(address))) {
        log::error!("iommu: releasing {address}'s domain: {e}");
    }
}

/// Where `address`'s device reaches `bus` (as the unit walks its tables), `None` when the
/// request would be blocked. For tests and the console.
pub fn translate(address: Address, bus: u64) -> Option<u64> {
    with(|s| s.remapper.translate(source(address), bus)).unwrap_or(Some(bus))
}

/// Faults the units recorded since the last call (also kept for [`faults`]).
pub fn take_faults() -> Vec<Fault> {
    with(|s| {
        // `append` keeps the pending list's room, so the handler never allocates.
        let mut new: Vec<Fault> = Vec::new();
        new.append(&mut s.pending);
        new.extend(s.remapper.take_faults());
        s.faults.extend(new.iter().copied());
        let excess = s.faults.len().saturating_sub(64);
        s.faults.drain(..excess);
        new
    })
    .unwrap_or_default()
}

/// The last faults (at most 64), oldest first.
pub fn faults() -> Vec<Fault> {
    take_faults();
    with(|s| s.faults.clone()).unwrap_or_default()
}

/// The kind of the machine's units ("Intel VT-d", "AMD IOMMU"), when remapping is on.
pub fn kind() -> Option<&'static str> {
    with(|s| s.remapper.kind())
}

/// Counts, when remapping is on.
pub fn summary() -> Option<Summary> {
    with(|s| s.remapper.summary())
}

/// DMA memory of one function: its frames, mapped into the function's domain while this
/// value lives.
///
/// # Invariants
/// `buffer` is `Some` until `Drop`; while it is, its pages are mapped in `owner`'s domain (if
/// the function is isolated) and nowhere else.
pub struct DeviceDma {
    owner: Address,
    buffer: Option<DmaBuffer>,
}

impl DeviceDma {
    /// At least `bytes` bytes for `owner`, mapped into its domain.
    pub fn new(owner: Address, bytes: u64) -> Result<DeviceDma, String> {
        let buffer = DmaBuffer::new(bytes).ok_or("out of memory for a DMA buffer")?;
        let (phys, len) = (buffer.phys(), buffer.len());
        if let Some(Err(e)) = with(|s| s.remapper.map(source(owner), phys, len)) {
            // Nothing stays mapped on an error: the frames can go back.
            return Err(format!("mapping DMA memory for {owner}: {e}"));
        }
        Ok(DeviceDma {
            owner,
            buffer: Some(buffer),
        })
    }

    fn buffer(&self) -> &DmaBuffer {
        self.buffer
            .as_ref()
            .expect("a DeviceDma has its buffer until Drop")
    }
}

impl Drop for DeviceDma {
    fn drop(&mut self) {
        let Some(buffer) = self.buffer.take() else {
            return;
        };
        let (phys, len) = (buffer.phys(), buffer.len());
        if let Some(Err(e)) = with(|s| s.remapper.unmap(source(self.owner), phys, len)) {
            // The unit may still reach these frames: they must never hold anything else.
            log::error!(
                "iommu: unmapping {phys:#x} (+{len:#x}) of {}: {e}; the memory is leaked",
                self.owner
            );
            core::mem::forget(buffer);
        }
    }
}

impl pci::platform::DmaRegion for DeviceDma {
    fn bus_address(&self) -> u64 {
        // Domains map each page at its physical address.
        self.buffer().phys()
    }
    fn len(&self) -> u64 {
        self.buffer().len()
    }
    fn read8(&self, offset: u64) -> u8 {
        pci::platform::DmaRegion::read8(self.buffer(), offset)
    }
    fn write8(&self, offset: u64, value: u8) {
        pci::platform::DmaRegion::write8(self.buffer(), offset, value)
    }
    fn read32(&self, offset: u64) -> u32 {
        pci::platform::DmaRegion::read32(self.buffer(), offset)
    }
    fn write32(&self, offset: u64, value: u32) {
        pci::platform::DmaRegion::write32(self.buffer(), offset, value)
    }
    fn read_bytes(&self, offset: u64, out: &mut [u8]) {
        pci::platform::DmaRegion::read_bytes(self.buffer(), offset, out)
    }
    fn write_bytes(&self, offset: u64, data: &[u8]) {
        pci::platform::DmaRegion::write_bytes(self.buffer(), offset, data)
    }
    fn zero(&self) {
        pci::platform::DmaRegion::zero(self.buffer())
    }
}
