//! pciehp on a port whose PCI Express capability runs past 0xFF.

use drivers::Driver;
use drivers::pciehp::PciehpDriver;
use pci::fake::FakeFunction;
use pci::fake::irq::{ADDRESS, FakePlatform, handle};

/// The PCI Express capability sits at 0xF0, so its Slot Capabilities (+0x14), Slot Control
/// (+0x18) and Slot Status (+0x1A) are at 0x104, 0x108 and 0x10A: inside the first extended
/// capability (here AER: Uncorrectable Error Status at 0x104, Uncorrectable Error Mask at
/// 0x108). Taken at its word, the driver would read the AER status as Slot Capabilities and
/// write its Slot Control value into the AER mask register; it refuses the port instead.
#[test]
fn pciehp_never_writes_past_the_legacy_capability_space() {
    let port = FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 1)
        // PCI Express Capabilities: version 2, Root Port (type 4), Slot Implemented.
        .with_capability(0xf0, 0x10, &[0x42, 0x01])
        // AER at 0x100.
        .with_extended_capability(0x100, 0x0001, 2)
        // "Slot Capabilities" = AER Uncorrectable Error Status: bits 6 (hot-plug capable)
        // and 18 (no Command Completed support, so nothing waits).
        .with32(0x104, (1 << 6) | (1 << 18))
        // AER Uncorrectable Error Mask: writable (RWS in real hardware).
        .with_writable(0x108, 0xffff_ffff);
    let platform = FakePlatform::leaked(1);
    let (function, space) = handle(port, platform);
    space.lock().clear_log();
    let result = PciehpDriver.probe(function);
    let extended_writes: Vec<(u16, u32)> = space
        .lock()
        .writes()
        .into_iter()
        .filter(|w| w.0 == ADDRESS && w.1 >= 0x100)
        .map(|w| (w.1, w.2))
        .collect();
    let bound = result.is_ok();
    // Keep the bound state alive until here (its drop writes Slot Control again).
    drop(result);
    assert!(
        extended_writes.is_empty(),
        "pciehp (bound: {bound}) wrote extended configuration space (AER) as Slot Control: {extended_writes:x?}"
    );
}
