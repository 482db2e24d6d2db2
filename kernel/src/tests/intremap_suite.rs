//! The `intremap` suite: interrupt remapping (`crate::iommu::interrupts`) on QEMU's
//! `intel-iommu`, with the `edu` device (QEMU docs/specs/edu.rst: 0x60 raises its
//! interrupt; its DMA engine writes wherever it is told; boot with
//! `-device edu,dma_mask=0xffffffff` so that it reaches `0xFEEx_xxxx`).
//!
//! What the runner reads (`qemu-tests/tests/iommu.rs`):
//!
//! ```text
//! intremap: on, <n> entries present
//! intremap: edu interrupt through its own entry <v>: delivered, handler ran
//! intremap: edu message naming the IOAPIC's entry <v>: refused, fault <source> interrupt entry <v> reason 26h, 0 arrivals; its own message again: delivered
//! intremap: edu write naming entry <v> after the vector went back: refused, fault <source> interrupt entry <v> reason 22h, 0 arrivals
//! ```
//!
//! `intremap_off` (booted with `intremap=off`) has edu write a compatibility-format
//! message for a vector nobody gave it and prints `intremap: off: edu message for vector
//! <v>: delivered (<n> arrival(s))`: without remapping, a made-up write is an interrupt.
//!
//! QEMU 10's unit checks the requester of real MSIs, but not of messages a device writes
//! by DMA, and lets compatibility-format messages through with CFI clear; the tests here
//! use what it enforces (the entry must be present; a real MSI must come from the entry's
//! requester). The rest is checked on the host against the model unit
//! (`iommu/tests/intremap.rs`).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use pci::Address;
use pci::irq::IrqKinds;

use super::iommu_suite::{
    CMD_START, CMD_TO_RAM, DMA_CMD, DMA_COUNT, DMA_DST, DMA_SRC, EDU_BUFFER, edu,
};
use super::{Test, wait_for};
use crate::ensure;
use crate::interrupts::{dispatch, vectors};

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    interrupt_remapping_is_on,
    edu_interrupt_arrives_through_its_own_entry,
    edu_message_naming_another_owners_entry_is_refused,
    edu_write_naming_a_vector_that_went_back_is_refused,
];

/// `test=intremap_off`: without remapping, the same kind of write is an interrupt.
pub const OFF: &[Test] = crate::tests![edu_made_up_message_is_delivered_without_remapping];

/// `test=intremap_nosid` (booted with `intremap=nosid`): entries check no requester, so
/// edu's MSI naming the I/O APIC's entry is delivered.
pub const NOSID: &[Test] =
    crate::tests![without_requester_checks_another_owners_entry_takes_the_message];

/// The interrupt message range's base: destination APIC ID 0 (the boot CPU here).
pub(super) const MSI_BASE: u64 = 0xfee0_0000;

/// edu writes the 4 bytes its buffer starts with to `address` (what [`load_buffer`] put
/// there): what a device does with any number a driver gave it.
pub(super) fn edu_writes(regs: &pci::window::BarWindow, address: u64) -> Result<(), String> {
    regs.write32(DMA_SRC, EDU_BUFFER);
    regs.write32(DMA_DST, address as u32);
    regs.write32(DMA_COUNT, 4);
    regs.write32(DMA_CMD, CMD_START | CMD_TO_RAM);
    ensure!(
        wait_for(2000, || regs.read32(DMA_CMD) & CMD_START == 0),
        "edu's DMA did not finish"
    );
    Ok(())
}

/// Fills edu's buffer with `data` from DMA memory edu owns.
pub(super) fn load_buffer(
    master: &pci::function::BusMaster,
    regs: &pci::window::BarWindow,
    data: u32,
) -> Result<(), String> {
    let buffer = master.dma_buffer(4096).map_err(|e| format!("{e}"))?;
    buffer.write32(0, data);
    let text = format!("{:x}", buffer.bus_address());
    let bus = u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| format!("{e}"))?;
    regs.write32(DMA_SRC, bus as u32);
    regs.write32(DMA_DST, EDU_BUFFER);
    regs.write32(DMA_COUNT, 4);
    regs.write32(DMA_CMD, CMD_START);
    ensure!(
        wait_for(2000, || regs.read32(DMA_CMD) & CMD_START == 0),
        "edu's DMA into its buffer did not finish"
    );
    Ok(())
}

/// The interrupt fault the unit recorded for `address`'s message naming `index`.
fn refused(address: Address, index: u8) -> Result<(u16, u8), String> {
    let ids = crate::iommu::requester_ids(address);
    let faults = crate::iommu::take_faults();
    let fault = faults
        .iter()
        // QEMU records a message a device wrote by DMA with no requester (FFFFh).
        .find(|f| {
            f.interrupt()
                && (ids.contains(&f.source) || f.source == 0xffff)
                && f.address == u64::from(index)
        })
        .ok_or_else(|| {
            format!("no interrupt fault for {address} naming entry {index:#x}: {faults:x?}")
        })?;
    Ok((fault.source, fault.vtd_reason().unwrap_or(0)))
}

pub(super) fn interrupt_remapping_is_on() -> Result<(), String> {
    let summary = crate::iommu::summary().ok_or("DMA remapping is off")?;
    ensure!(summary.interrupts, "interrupt remapping is off");
    crate::serial_println!(
        "intremap: on, {} entries present",
        summary.interrupt_entries
    );
    Ok(())
}

/// edu's register that raises its interrupt (edu.rst: "interrupt raise register").
pub(super) const RAISE: u64 = 0x60;
/// Interrupt acknowledge.
const ACK: u64 = 0x64;

/// edu with one MSI vector and a handler counting its interrupts.
pub(super) struct EduMsi {
    pub address: Address,
    pub irq: pci::irq::IrqVectors,
    pub regs: Arc<pci::window::BarWindow>,
    pub ran: Arc<AtomicU64>,
    pub vector: u8,
}

pub(super) fn edu_msi() -> Result<EduMsi, String> {
    let (address, function) = edu()?;
    let mut irq = function
        .alloc_irq_vectors(1, 1, IrqKinds::MSI)
        .map_err(|(_, e)| format!("edu's MSI: {e}"))?;
    let vector = irq.vector(0).ok_or("no vector")?.number();
    let regs = Arc::new(
        irq.function()
            .map_bar(0, 0, 0x100)
            .map_err(|e| format!("BAR 0: {e}"))?,
    );
    let ran = Arc::new(AtomicU64::new(0));
    let (counter, r) = (ran.clone(), regs.clone());
    irq.install(0, "intremap test", move || {
        r.write32(ACK, r.read32(0x24));
        counter.fetch_add(1, Ordering::Relaxed);
    })
    .map_err(|e| format!("install: {e}"))?;
    Ok(EduMsi {
        address,
        irq,
        regs,
        ran,
        vector,
    })
}

impl EduMsi {
    /// Raises edu's interrupt; whether its handler ran within half a second.
    pub(super) fn raise(&self) -> bool {
        let before = self.ran.load(Ordering::Relaxed);
        self.regs.write32(RAISE, 1);
        wait_for(500, || self.ran.load(Ordering::Relaxed) > before)
    }
}

/// edu's interrupt arrives through the entry written for its vector, which checks its
/// requester ID.
fn edu_interrupt_arrives_through_its_own_entry() -> Result<(), String> {
    let edu = edu_msi()?;
    let entry = crate::iommu::interrupts::entry_of(edu.address, edu.vector)
        .ok_or("no remapping entry for edu's vector")?;
    ensure!(
        (entry[0] >> 16) as u8 == edu.vector,
        "edu's entry {entry:x?} does not deliver vector {:#04x}",
        edu.vector
    );
    let own = crate::iommu::requester_ids(edu.address)[0];
    ensure!(
        entry[1] & 0xffff == u64::from(own) && (entry[1] >> 18) & 3 == 1,
        "edu's entry {entry:x?} does not check requester {own:04x}"
    );
    ensure!(
        edu.raise(),
        "edu's interrupt did not arrive: {:x?}",
        crate::iommu::take_faults()
    );
    crate::serial_println!(
        "intremap: edu interrupt through its own entry {:#04x}: delivered, handler ran",
        edu.vector
    );
    drop(edu);
    Ok(())
}

/// edu's MSI made to name the entry of a vector routed to the IOAPIC (as a device whose
/// message was changed behind its owner's back): the unit checks the requester ID against
/// the entry's (the IOAPIC's) and refuses it; nothing arrives anywhere. Its own message
/// put back, it is delivered again.
fn edu_message_naming_another_owners_entry_is_refused() -> Result<(), String> {
    use crate::interrupts::ioapic::{self, Trigger};
    let platform = crate::platform::get().ok_or("no ACPI platform")?;
    let chip = platform.io_apics.first().ok_or("no IOAPIC")?;
    let gsi = chip.gsi_base + 23;
    let block = vectors::allocate(1).map_err(|e| format!("{e}"))?;
    let vector = block.first();
    let dest = crate::interrupts::lapic::apic_id(0).unwrap_or(0);
    ioapic::route(gsi, vector, dest, Trigger::PCI).map_err(|e| format!("route: {e}"))?;
    let edu = edu_msi()?;
    let cap = edu
        .irq
        .function()
        .info()
        .msi
        .ok_or("edu has no MSI capability")?;
    // Message Address at +4 (PCI Local Bus 3.0 §6.8.1.4).
    let at = u16::from(cap.offset) + 4;
    let pci_address = pci_types::PciAddress::new(
        edu.address.segment(),
        edu.address.bus(),
        edu.address.device(),
        edu.address.function(),
    );
    let own = crate::pcie::read32(pci_address, at);
    crate::pcie::write32(
        pci_address,
        at,
        iommu::intremap::msi_address(u16::from(vector), false) as u32,
    );
    let _ = crate::iommu::take_faults();
    let before = dispatch::spurious(vector) + dispatch::count(vector);
    let delivered = edu.raise();
    crate::pcie::write32(pci_address, at, own);
    let (source, reason) = refused(edu.address, vector)?;
    let arrivals = dispatch::spurious(vector) + dispatch::count(vector) - before;
    ensure!(
        !delivered,
        "edu's handler ran for a message naming another entry"
    );
    ensure!(
        reason == 0x26,
        "reason {reason:02x}h, expected 26h (source check)"
    );
    ensure!(
        arrivals == 0,
        "{arrivals} arrival(s) on vector {vector:#04x}"
    );
    ensure!(edu.raise(), "edu's own message, put back, did not arrive");
    drop(edu);
    ioapic::set_masked(gsi, true).map_err(|e| format!("{e}"))?;
    vectors::free(block).map_err(|e| format!("free: {e:?}"))?;
    crate::serial_println!(
        "intremap: edu message naming the IOAPIC's entry {vector:#04x}: refused, fault {source:04x} interrupt entry {vector:#x} reason {reason:02x}h, {arrivals} arrivals; its own message again: delivered"
    );
    Ok(())
}

/// edu's vector goes back (its `IrqVectors` dropped): the entry is cleared, so edu writing
/// its old message by DMA, as a device that kept it would, is refused.
fn edu_write_naming_a_vector_that_went_back_is_refused() -> Result<(), String> {
    let with_msi = edu_msi()?;
    let (address, vector) = (with_msi.address, with_msi.vector);
    ensure!(with_msi.raise(), "edu's interrupt did not arrive");
    drop(with_msi);
    ensure!(
        crate::iommu::interrupts::entry_of(address, vector).is_none(),
        "edu's entry {vector:#04x} is still present after its vectors were dropped"
    );
    let (address, function) = edu()?;
    let regs = function
        .map_bar(0, 0, 0x100)
        .map_err(|e| format!("BAR 0: {e}"))?;
    let master = function.bus_master();
    load_buffer(&master, &regs, 0)?;
    let _ = crate::iommu::take_faults();
    let before = dispatch::spurious(vector) + dispatch::count(vector);
    edu_writes(
        &regs,
        iommu::intremap::msi_address(u16::from(vector), false),
    )?;
    let (source, reason) = refused(address, vector)?;
    let arrivals = dispatch::spurious(vector) + dispatch::count(vector) - before;
    drop((master, regs, function));
    ensure!(
        reason == 0x22,
        "reason {reason:02x}h, expected 22h (entry not present)"
    );
    ensure!(
        arrivals == 0,
        "{arrivals} arrival(s) on vector {vector:#04x}"
    );
    crate::serial_println!(
        "intremap: edu write naming entry {vector:#04x} after the vector went back: refused, fault {source:04x} interrupt entry {vector:#x} reason {reason:02x}h, {arrivals} arrivals"
    );
    Ok(())
}

/// Without interrupt remapping, edu's made-up compatibility-format message (destination
/// APIC 0, a vector nobody gave it) is an interrupt like any other.
fn edu_made_up_message_is_delivered_without_remapping() -> Result<(), String> {
    ensure!(
        crate::iommu::summary().is_some_and(|s| !s.interrupts),
        "this test is for DMA remapping on, interrupt remapping off (intremap=off)"
    );
    let block = vectors::allocate(1).map_err(|e| format!("{e}"))?;
    let vector = block.first();
    let (_, function) = edu()?;
    let regs = function
        .map_bar(0, 0, 0x100)
        .map_err(|e| format!("BAR 0: {e}"))?;
    let master = function.bus_master();
    load_buffer(&master, &regs, u32::from(vector))?;
    let before = dispatch::spurious(vector) + dispatch::count(vector);
    edu_writes(&regs, MSI_BASE)?;
    let arrived = wait_for(500, || {
        dispatch::spurious(vector) + dispatch::count(vector) > before
    });
    let arrivals = dispatch::spurious(vector) + dispatch::count(vector) - before;
    drop((master, regs, function));
    vectors::free(block).map_err(|e| format!("free: {e:?}"))?;
    ensure!(
        arrived,
        "edu's made-up message for vector {vector:#04x} did not arrive"
    );
    crate::serial_println!(
        "intremap: off: edu message for vector {vector:#04x}: delivered ({arrivals} arrival(s))"
    );
    Ok(())
}

/// With `intremap=nosid` the entries check no requester ID: edu's MSI made to name the
/// I/O APIC's entry arrives on that vector. What the default (checked) run refuses.
fn without_requester_checks_another_owners_entry_takes_the_message() -> Result<(), String> {
    use crate::interrupts::ioapic::{self, Trigger};
    let summary = crate::iommu::summary().ok_or("DMA remapping is off")?;
    ensure!(summary.interrupts, "interrupt remapping is off");
    let platform = crate::platform::get().ok_or("no ACPI platform")?;
    let chip = platform.io_apics.first().ok_or("no IOAPIC")?;
    let gsi = chip.gsi_base + 23;
    let block = vectors::allocate(1).map_err(|e| format!("{e}"))?;
    let vector = block.first();
    let dest = crate::interrupts::lapic::apic_id(0).unwrap_or(0);
    ioapic::route(gsi, vector, dest, Trigger::PCI).map_err(|e| format!("route: {e}"))?;
    let edu = edu_msi()?;
    let entry = crate::iommu::interrupts::entry_of(edu.address, vector)
        .ok_or("no entry for the I/O APIC's vector")?;
    ensure!(
        (entry[1] >> 18) & 3 == 0,
        "the entry {entry:x?} checks a requester"
    );
    let cap = edu
        .irq
        .function()
        .info()
        .msi
        .ok_or("edu has no MSI capability")?;
    let at = u16::from(cap.offset) + 4;
    let pci_address = pci_types::PciAddress::new(
        edu.address.segment(),
        edu.address.bus(),
        edu.address.device(),
        edu.address.function(),
    );
    let own = crate::pcie::read32(pci_address, at);
    crate::pcie::write32(
        pci_address,
        at,
        iommu::intremap::msi_address(u16::from(vector), false) as u32,
    );
    let before = dispatch::spurious(vector) + dispatch::count(vector);
    edu.regs.write32(RAISE, 1);
    let arrived = wait_for(500, || {
        dispatch::spurious(vector) + dispatch::count(vector) > before
    });
    crate::pcie::write32(pci_address, at, own);
    drop(edu);
    ioapic::set_masked(gsi, true).map_err(|e| format!("{e}"))?;
    vectors::free(block).map_err(|e| format!("free: {e:?}"))?;
    ensure!(
        arrived,
        "edu's message naming entry {vector:#04x} did not arrive"
    );
    crate::serial_println!(
        "intremap: nosid: edu message naming the IOAPIC's entry {vector:#04x}: delivered"
    );
    Ok(())
}
