//! The `pci` suite: the boot-time enumeration, checked on the running machine, then printed
//! in the machine-readable form the host runner compares with QEMU's own view (`query-pci`).
//!
//! After the result lines the kernel prints `PCI HOLD` and waits without leaving QEMU: the
//! runner queries QEMU's monitor and then quits it. Run by hand, with no runner, the wait
//! ends after `super::HOLD_SECONDS` with a line saying so, and QEMU exits with the result.

use alloc::string::String;

use super::Test;
use crate::ensure;
use crate::pcibus;

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    host_bridge_is_found,
    enumeration_reports_no_errors,
    devices_are_left_as_found,
    ids_agree_with_port_io,
    bridges_lead_to_their_buses,
];

fn scan() -> Result<alloc::sync::Arc<pcibus::Scan>, String> {
    pcibus::scan().ok_or_else(|| String::from("PCI was not enumerated"))
}

fn host_bridge_is_found() -> Result<(), String> {
    let scan = scan()?;
    ensure!(!scan.roots.is_empty(), "no root bus");
    let host =
        scan.topology.functions.iter().find(|f| {
            f.address.bus() == scan.roots[0].bus && f.class == 0x06 && f.subclass == 0x00
        });
    ensure!(
        host.is_some(),
        "no host bridge on root bus {:#04x}",
        scan.roots[0].bus
    );
    Ok(())
}

fn enumeration_reports_no_errors() -> Result<(), String> {
    let scan = scan()?;
    if let Some(e) = scan.topology.errors.first() {
        return Err(alloc::format!(
            "{} error(s), first: {e}",
            scan.topology.errors.len()
        ));
    }
    Ok(())
}

/// Command and every BAR read back as they were before the scan sized them.
fn devices_are_left_as_found() -> Result<(), String> {
    let scan = scan()?;
    let config = pcibus::config();
    for f in &scan.topology.functions {
        let a = f.address.to_pci_types();
        let command = config.read(a, 0x04) as u16;
        ensure!(
            command == f.command,
            "{}: Command {command:#06x}, was {:#06x}",
            f.address,
            f.command
        );
        for (slot, bar) in f.bars() {
            let offset = pci::bar::bar_offset(slot);
            let low = u64::from(config.read(a, offset) & !0xf);
            let value = match bar.kind {
                pci::bar::BarKind::Io => u64::from(config.read(a, offset) & !0x3),
                pci::bar::BarKind::Memory32 => low,
                pci::bar::BarKind::Memory64 => low | u64::from(config.read(a, offset + 4)) << 32,
            };
            ensure!(
                value == bar.address,
                "{} BAR{slot} reads {value:#x}, was {:#x}",
                f.address,
                bar.address
            );
        }
    }
    Ok(())
}

/// On segment 0 configuration mechanism #1 reaches the same functions (first 256 bytes).
fn ids_agree_with_port_io() -> Result<(), String> {
    let scan = scan()?;
    let port = crate::pcie::port_io();
    // Machines without configuration mechanism #1 (QEMU microvm) answer all ones on every
    // address through it; then there is nothing to compare, and the line says so.
    let answers =
        scan.topology.functions.iter().any(|f| {
            f.address.segment() == 0 && port.read(f.address.to_pci_types(), 0) != u32::MAX
        });
    if !answers && !scan.topology.functions.is_empty() {
        crate::serial_println!(
            "pci: port I/O reaches no function on this machine; nothing to compare"
        );
        return Ok(());
    }
    for f in scan
        .topology
        .functions
        .iter()
        .filter(|f| f.address.segment() == 0)
    {
        let ids = port.read(f.address.to_pci_types(), 0);
        let expected = u32::from(f.device_id) << 16 | u32::from(f.vendor_id);
        ensure!(
            ids == expected,
            "{}: port I/O reads {ids:#010x}, scan found {expected:#010x}",
            f.address
        );
    }
    Ok(())
}

fn bridges_lead_to_their_buses() -> Result<(), String> {
    let scan = scan()?;
    for f in scan.topology.functions.iter().filter(|f| f.is_bridge()) {
        let buses = f
            .bridge
            .ok_or_else(|| alloc::format!("{}: bridge without bus numbers", f.address))?;
        ensure!(
            buses.secondary > buses.primary,
            "{}: secondary bus not above primary",
            f.address
        );
        ensure!(
            scan.topology
                .bus_behind(f.address)
                .is_some_and(|b| b.number == buses.secondary),
            "{}: bus {:#04x} behind it was not scanned",
            f.address,
            buses.secondary
        );
    }
    Ok(())
}

/// Prints the machine-readable lines and the access counts (after the tests).
pub fn report() {
    if let Some(scan) = pcibus::scan() {
        let _ = pci::lspci::write_machine(&mut crate::serial::SerialWriter, &scan.topology);
        crate::serial_println!(
            "PCISTATS functions={} reads={} writes={}",
            scan.topology.functions.len(),
            scan.reads,
            scan.writes
        );
    }
}
