//! The `intremap_amd` suite: interrupt remapping on QEMU's `amd-iommu` (booted with
//! `-device amd-iommu,pt=off,intremap=on`), with the `edu` device as in the `intremap` suite.
//! An AMD IOMMU gives every requester its own table: the data of a message names an entry
//! of the sender's table (here the index is the vector), so a device reaches only the
//! vectors written into its own table, those its owner was given.
//!
//! What the runner reads (`qemu-tests/tests/amd_iommu.rs`):
//!
//! ```text
//! intremap: on, <n> entries present
//! intremap: amd: edu interrupt through its own table's entry <v>: delivered, handler ran
//! intremap: amd: edu message naming vector <v> (the I/O APIC's): refused, 0 arrivals; its own message again: delivered
//! intremap: amd: edu write naming vector <v> after the vector went back: refused, 0 arrivals
//! ```
//!
//! QEMU's model logs no event for a refused interrupt; it traces it
//! (`amdvi_ir_target_abort`), which the runner checks. A write edu makes by DMA reaches
//! QEMU's unit without a requester ID, and QEMU takes it as the I/O APIC's
//! (`AMDVI_IOAPIC_SB_DEVID`): that table holds no entry for edu's old vector either.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::Ordering;

use super::intremap_suite::{
    MSI_BASE, RAISE, edu_msi, edu_writes, interrupt_remapping_is_on, load_buffer,
};
use super::iommu_suite::edu;
use super::{Test, wait_for};
use crate::ensure;
use crate::interrupts::{dispatch, vectors};

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    interrupt_remapping_is_on,
    edu_interrupt_arrives_through_its_own_tables_entry,
    edu_message_naming_a_vector_it_was_not_given_is_refused,
    edu_write_naming_a_vector_that_went_back_is_refused,
];

/// The AMD IRTE's vector (bits 23:16) and RemapEn (bit 0), AMD IOMMU §2.2.5.1.
fn irte_vector(entry: u64) -> Option<u8> {
    (entry & 1 != 0).then_some((entry >> 16) as u8)
}

fn edu_interrupt_arrives_through_its_own_tables_entry() -> Result<(), String> {
    let edu = edu_msi()?;
    let entry = crate::iommu::interrupts::entry_of(edu.address, edu.vector)
        .ok_or("no entry for edu's vector in its table")?;
    ensure!(
        irte_vector(entry[0]) == Some(edu.vector),
        "edu's entry {:#x} does not deliver vector {:#04x}",
        entry[0],
        edu.vector
    );
    ensure!(edu.raise(), "edu's interrupt did not arrive");
    crate::serial_println!(
        "intremap: amd: edu interrupt through its own table's entry {:#04x}: delivered, handler ran",
        edu.vector
    );
    Ok(())
}

/// edu's MSI data changed (behind its owner's back) to a vector routed to the I/O APIC:
/// edu's table has no such entry, so the unit refuses it and nothing arrives. Its own data
/// put back, its interrupt arrives again.
fn edu_message_naming_a_vector_it_was_not_given_is_refused() -> Result<(), String> {
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
    let pci_address = pci_types::PciAddress::new(
        edu.address.segment(),
        edu.address.bus(),
        edu.address.device(),
        edu.address.function(),
    );
    // Message Data at +8, or +12 when Message Control says 64-bit addresses (bit 7; PCI
    // Local Bus 3.0 §6.8.1.3).
    let control = crate::pcie::read32(pci_address, u16::from(cap.offset)) >> 16;
    let at = u16::from(cap.offset) + if control & (1 << 7) != 0 { 12 } else { 8 };
    let own = crate::pcie::read32(pci_address, at);
    ensure!(
        own & 0xff == u32::from(edu.vector),
        "edu's message data {own:#x} does not carry its vector {:#04x}",
        edu.vector
    );
    crate::pcie::write32(pci_address, at, (own & !0xff) | u32::from(vector));
    let before = dispatch::spurious(vector) + dispatch::count(vector);
    let ran_before = edu.ran.load(Ordering::Relaxed);
    edu.regs.write32(RAISE, 1);
    // Time for a wrongly delivered interrupt to show.
    wait_for(200, || {
        dispatch::spurious(vector) + dispatch::count(vector) > before
    });
    let arrivals = dispatch::spurious(vector) + dispatch::count(vector) - before;
    let ran = edu.ran.load(Ordering::Relaxed) - ran_before;
    crate::pcie::write32(pci_address, at, own);
    ensure!(
        arrivals == 0 && ran == 0,
        "edu's message naming vector {vector:#04x} arrived ({arrivals} on it, {ran} on edu's)"
    );
    ensure!(edu.raise(), "edu's own message, put back, did not arrive");
    drop(edu);
    ioapic::set_masked(gsi, true).map_err(|e| format!("{e}"))?;
    vectors::free(block).map_err(|e| format!("free: {e:?}"))?;
    crate::serial_println!(
        "intremap: amd: edu message naming vector {vector:#04x} (the I/O APIC's): refused, {arrivals} arrivals; its own message again: delivered"
    );
    Ok(())
}

/// edu's vector goes back (its `IrqVectors` dropped): the entry leaves its table, and edu
/// writing its old message by DMA, as a device that kept it would, is refused.
fn edu_write_naming_a_vector_that_went_back_is_refused() -> Result<(), String> {
    let with_msi = edu_msi()?;
    let (address, vector) = (with_msi.address, with_msi.vector);
    ensure!(with_msi.raise(), "edu's interrupt did not arrive");
    drop(with_msi);
    ensure!(
        crate::iommu::interrupts::entry_of(address, vector).is_none(),
        "edu's entry {vector:#04x} is still present after its vectors were dropped"
    );
    let (_, function) = edu()?;
    let regs = function
        .map_bar(0, 0, 0x100)
        .map_err(|e| format!("BAR 0: {e}"))?;
    let master = function.bus_master();
    load_buffer(&master, &regs, u32::from(vector))?;
    let before = dispatch::spurious(vector) + dispatch::count(vector);
    edu_writes(&regs, MSI_BASE)?;
    wait_for(200, || {
        dispatch::spurious(vector) + dispatch::count(vector) > before
    });
    let arrivals = dispatch::spurious(vector) + dispatch::count(vector) - before;
    drop((master, regs, function));
    ensure!(
        arrivals == 0,
        "{arrivals} arrival(s) on vector {vector:#04x}"
    );
    crate::serial_println!(
        "intremap: amd: edu write naming vector {vector:#04x} after the vector went back: refused, {arrivals} arrivals"
    );
    Ok(())
}
