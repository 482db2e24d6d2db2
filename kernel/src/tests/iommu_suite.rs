//! The `iommu` suite: DMA remapping (`crate::iommu`) on QEMU's `intel-iommu` (and, as
//! `iommu_amd`, on its `amd-iommu`), with the `edu`
//! device's DMA engine as the device a driver points somewhere (QEMU docs/specs/edu.rst:
//! source 0x80, destination 0x88, count 0x90, command 0x98 with bit 0 start and bit 1
//! "edu to RAM"; edu's own buffer at 0x40000; the transfer happens a little later, and bit 0
//! clears when it is done).
//!
//! What the runner reads (`qemu-tests/tests/iommu.rs`):
//!
//! ```text
//! iommu: <n> unit(s), translation on, edu isolated, requester ID(s) <own> [<aliases>]
//! iommu: edu round trip through its own DMA memory: <n> bytes equal
//! iommu: edu write to memory it was not given: blocked, fault <source> write <page> reason 05h, aimed at <page>
//! iommu: edu write to memory freed from its domain: blocked, fault <source> write <page> reason 05h, aimed at <page>
//! iommu: edu write to memory it was not given, again: blocked, fault <source> write <page> reason 05h, aimed at <page>, fault event interrupt(s) <n>
//! ```
//!
//! On an AMD IOMMU (`iommu_amd`, read by `qemu-tests/tests/amd_iommu.rs`) a blocked line
//! says `blocked, no event logged (<n> other event(s)), aimed at <page>` where the unit
//! logged no event (QEMU's model logs none for an empty page table entry), and the page's
//! canary is what shows the write did not land.
//!
//! `iommu_off` (booted with `iommu=off`) runs the second edu test without remapping and
//! prints `iommu: edu write to memory it was not given: landed`: the same request that the
//! remapped run blocks really reaches the memory, so the blocked result is the unit's work.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use pci::Address;
use pci::irq::PciFunction;

use super::{Test, wait_for};
use crate::ensure;
use crate::memory::dma::DmaBuffer;
use crate::pciirq;

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    remapping_is_on_and_edu_is_isolated,
    edu_round_trip_through_its_own_memory,
    edu_write_to_memory_it_was_not_given_is_blocked,
    edu_write_to_memory_freed_from_its_domain_is_blocked,
    a_refused_request_raises_the_fault_event_interrupt,
];

/// `test=iommu_amd`: the same on an AMD IOMMU (QEMU's `amd-iommu`), where the unit's
/// events are checked when it logs them (see [`blocked_write`]) and the evidence of a
/// blocked write is the untouched page.
pub const AMD: &[Test] = crate::tests![
    remapping_is_on_and_edu_is_isolated,
    edu_round_trip_through_its_own_memory,
    edu_write_to_memory_it_was_not_given_is_blocked,
    edu_write_to_memory_freed_from_its_domain_is_blocked,
];

/// `test=iommu_off`: the same write without remapping lands.
pub const OFF: &[Test] = crate::tests![edu_write_to_memory_it_was_not_given_lands];

pub(super) const EDU: (u16, u16) = (0x1234, 0x11e8);
pub(super) const DMA_SRC: u64 = 0x80;
pub(super) const DMA_DST: u64 = 0x88;
pub(super) const DMA_COUNT: u64 = 0x90;
pub(super) const DMA_CMD: u64 = 0x98;
pub(super) const CMD_START: u32 = 1;
pub(super) const CMD_TO_RAM: u32 = 2;
/// edu's own buffer, in its DMA address space.
pub(super) const EDU_BUFFER: u32 = 0x4_0000;
/// Bytes each transfer moves.
const LEN: u32 = 256;
/// What the victim page holds before the write.
const CANARY: u32 = 0x5afe_c0de;

pub(super) fn edu() -> Result<(Address, PciFunction), String> {
    let address = pciirq::find(EDU.0, EDU.1).ok_or("no edu device (-device edu)")?;
    let function = pciirq::claim(address).ok_or("edu already claimed")?;
    Ok((address, function))
}

/// Starts an edu transfer of [`LEN`] bytes between the addresses already written; `Ok`
/// once the command bit cleared.
fn start(regs: &pci::window::BarWindow, to_ram: bool) -> Result<(), String> {
    regs.write32(DMA_COUNT, LEN);
    regs.write32(DMA_CMD, CMD_START | if to_ram { CMD_TO_RAM } else { 0 });
    ensure!(
        wait_for(2000, || regs.read32(DMA_CMD) & CMD_START == 0),
        "edu's DMA did not finish"
    );
    Ok(())
}

/// edu's buffer written to `destination`, a plain number: what a wrong driver can write
/// into any device register.
fn write_to(regs: &pci::window::BarWindow, destination: u64) -> Result<(), String> {
    regs.write32(DMA_SRC, EDU_BUFFER);
    regs.write32(DMA_DST, destination as u32);
    start(regs, true)
}

/// A bus address as the number a device register would hold.
fn number(address: pci::dma::BusAddr<'_>) -> u64 {
    let text = format!("{address:x}");
    u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap_or(u64::MAX)
}

/// The fault the unit recorded for `address`'s write to `page`, as a line. The request may
/// carry one of its aliases' requester IDs (behind a PCIe-to-PCI bridge).
fn blocked_write(address: Address, page: u64) -> Result<String, String> {
    let ids = crate::iommu::requester_ids(address);
    let faults = crate::iommu::take_faults();
    let found = faults
        .iter()
        .find(|f| ids.contains(&f.source) && f.address == page & !0xfff);
    let Some(fault) = found else {
        // An AMD IOMMU logs an IO_PAGE_FAULT event for a page not present; QEMU's model of
        // one refuses a request whose page table entry is empty without logging anything.
        // On such a unit the untouched page (checked by the caller) is the evidence.
        if crate::iommu::kind() == Some("AMD IOMMU") {
            return Ok(format!(
                "no event logged ({} other event(s)), aimed at {page:#x}",
                faults.len()
            ));
        }
        return Err(format!(
            "no fault recorded for {address} at {page:#x}: {faults:x?}"
        ));
    };
    ensure!(
        fault.write && fault.page_not_mapped(),
        "fault {fault:x?}, expected a write to a page not mapped for it"
    );
    Ok(format!(
        "fault {:04x} write {:#x} {}, aimed at {page:#x}",
        fault.source, fault.address, fault.reason
    ))
}

fn remapping_is_on_and_edu_is_isolated() -> Result<(), String> {
    let summary = crate::iommu::summary().ok_or("DMA remapping is off (no DMAR, or iommu=off)")?;
    ensure!(
        summary.enabled,
        "remapping units found but translation is off"
    );
    let (address, function) = edu()?;
    ensure!(
        crate::iommu::isolated(address),
        "edu claimed but not isolated"
    );
    // Nothing is mapped for it yet: nothing is reachable.
    ensure!(
        crate::iommu::translate(address, 0x10_0000).is_none(),
        "edu reaches 0x100000 with no DMA memory"
    );
    drop(function);
    let ids: Vec<String> = crate::iommu::requester_ids(address)
        .iter()
        .map(|id| format!("{id:04x}"))
        .collect();
    crate::serial_println!(
        "iommu: {} unit(s), translation on, edu isolated, requester ID(s) {}",
        summary.units,
        ids.join(" ")
    );
    Ok(())
}

fn edu_round_trip_through_its_own_memory() -> Result<(), String> {
    let (address, function) = edu()?;
    let regs = function
        .map_bar(0, 0, 0x100)
        .map_err(|e| format!("BAR 0: {e}"))?;
    let master = function.bus_master();
    let buffer = master.dma_buffer(4096).map_err(|e| format!("{e}"))?;
    let data: Vec<u8> = (0..LEN)
        .map(|i| (i as u8).wrapping_mul(37) ^ 0x5a)
        .collect();
    buffer.write_bytes(0, &data);
    let at = number(buffer.bus_address());
    ensure!(
        at >> 28 == 0,
        "DMA memory at {at:#x}, beyond edu's 28-bit DMA mask"
    );
    ensure!(
        crate::iommu::translate(address, at).is_some(),
        "edu's own DMA memory is not mapped for it"
    );
    // RAM to edu, then edu back to RAM 2 KiB further on, with the buffer's bus addresses.
    regs.write_bus_address(DMA_SRC, buffer.bus_address());
    regs.write32(DMA_DST, EDU_BUFFER);
    start(&regs, false)?;
    regs.write32(DMA_SRC, EDU_BUFFER);
    regs.write_bus_address(DMA_DST, buffer.bus_address_at(2048));
    start(&regs, true)?;
    let mut back = alloc::vec![0u8; LEN as usize];
    buffer.read_bytes(2048, &mut back);
    ensure!(back == data, "the round trip through edu changed the data");
    ensure!(
        crate::iommu::take_faults().is_empty(),
        "the unit recorded faults for edu's own memory"
    );
    drop((buffer, master, regs, function));
    crate::serial_println!("iommu: edu round trip through its own DMA memory: {LEN} bytes equal");
    Ok(())
}

/// A page of kernel memory no device was given, holding the canary; and whether edu's
/// write of its buffer into it landed.
fn write_into_victim(expect_blocked: bool) -> Result<String, String> {
    let victim = DmaBuffer::new(4096).ok_or("no memory for the victim page")?;
    for i in 0..1024 {
        victim.write32(i * 4, CANARY);
    }
    let phys = victim.phys();
    ensure!(
        phys >> 28 == 0,
        "victim at {phys:#x}, beyond edu's DMA mask"
    );
    let (address, function) = edu()?;
    let regs = function
        .map_bar(0, 0, 0x100)
        .map_err(|e| format!("BAR 0: {e}"))?;
    let master = function.bus_master();
    write_to(&regs, phys)?;
    drop((master, regs, function));
    let intact = (0..1024).all(|i| victim.read32(i * 4) == CANARY);
    if expect_blocked {
        ensure!(intact, "edu's write reached memory it was not given");
        Ok(format!("blocked, {}", blocked_write(address, phys)?))
    } else {
        ensure!(!intact, "without remapping edu's write should have landed");
        Ok("landed".into())
    }
}

fn edu_write_to_memory_it_was_not_given_is_blocked() -> Result<(), String> {
    let line = write_into_victim(true)?;
    crate::serial_println!("iommu: edu write to memory it was not given: {line}");
    Ok(())
}

fn edu_write_to_memory_it_was_not_given_lands() -> Result<(), String> {
    ensure!(
        crate::iommu::summary().is_none(),
        "remapping is on; this test is for iommu=off"
    );
    let line = write_into_victim(false)?;
    crate::serial_println!("iommu: edu write to memory it was not given: {line}");
    Ok(())
}

/// DMA memory stays mapped while its function exists (parked between claims); once the
/// function's memory is freed (`forget_dma`, as when a card is removed), its pages leave
/// the domain before the frames are reused, and a device at that address still holding the
/// old bus address is blocked when it is claimed again.
fn edu_write_to_memory_freed_from_its_domain_is_blocked() -> Result<(), String> {
    let (address, function) = edu()?;
    let master = function.bus_master();
    let buffer = master.dma_buffer(4096).map_err(|e| format!("{e}"))?;
    let old = number(buffer.bus_address());
    drop((buffer, master, function));
    ensure!(
        crate::iommu::translate(address, old).is_some(),
        "parked DMA memory left edu's domain while edu still exists"
    );
    // The function's memory is freed and its domain goes; claimed again, it gets a new one.
    let (freed, _) = pciirq::forget_dma(address);
    ensure!(freed > 0, "nothing was parked for edu");
    let (_, function) = edu()?;
    ensure!(
        crate::iommu::translate(address, old).is_none(),
        "freed DMA memory at {old:#x} is still mapped for edu"
    );
    // A canary in the freed frame, when the allocator hands it out again (it gives back
    // the frame freed last): the write must not reach it.
    let victim = DmaBuffer::new(4096).ok_or("no memory for the victim page")?;
    let canary = victim.phys() == old;
    if canary {
        for i in 0..1024 {
            victim.write32(i * 4, CANARY);
        }
    } else {
        ensure!(
            crate::iommu::kind() != Some("AMD IOMMU"),
            "the freed frame {old:#x} was not handed out again, so nothing shows whether the write landed"
        );
    }
    let regs = function
        .map_bar(0, 0, 0x100)
        .map_err(|e| format!("BAR 0: {e}"))?;
    let master = function.bus_master();
    write_to(&regs, old)?;
    drop((master, regs, function));
    if canary {
        ensure!(
            (0..1024).all(|i| victim.read32(i * 4) == CANARY),
            "edu's write reached its freed DMA memory"
        );
    }
    let line = blocked_write(address, old)?;
    crate::serial_println!("iommu: edu write to memory freed from its domain: blocked, {line}");
    Ok(())
}

/// The unit's fault event interrupt (VT-d §7.3) arrives when a request is refused: the
/// kernel hears of the fault when it happens, not only when it asks.
fn a_refused_request_raises_the_fault_event_interrupt() -> Result<(), String> {
    let before = crate::iommu::fault_events();
    let line = write_into_victim(true)?;
    ensure!(
        wait_for(500, || crate::iommu::fault_events() > before),
        "no fault event interrupt for the refused write"
    );
    crate::serial_println!(
        "iommu: edu write to memory it was not given, again: {line}, fault event interrupt(s) {}",
        crate::iommu::fault_events() - before
    );
    Ok(())
}
