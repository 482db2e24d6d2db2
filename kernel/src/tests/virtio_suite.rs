//! The `virtio` suite: the virtio-blk and virtio-net drivers of `drivers::virtio` (modern
//! virtio-pci, virtio 1.1 §4.1; split virtqueues, §2.6) on QEMU's `virtio-blk-pci` and
//! `virtio-net-pci` with user networking.
//!
//! - virtio-blk: sectors [`READ_SECTORS`] read by the best interrupt kind (MSI-X unless
//!   the runner took it away) and their FNV-1a 64 printed with the driver's status line
//!   (the runner compares the checksum with the image it wrote and the vector routing with
//!   how it configured QEMU); a pattern written over [`WRITE_SECTORS`] and read
//!   back (the runner checks the image after QEMU exits); the driver's self test (sector 0,
//!   a round trip on the last sector, restored); the same reads completed by INTx.
//! - virtio-net: an ARP request for 10.0.2.2 from 10.0.2.15, the reply taken from the
//!   receive queue after its interrupt; the gateway's MAC printed; again over INTx.
//! - Both: 1000 unbind/bind cycles through `crate::bus`, a self test after every rebind,
//!   and then vectors, frames, heap, the MMIO window, the dispatch table and the claims
//!   exactly at baseline (as the `drivers` suite measures them).
//!
//! Nothing is bound at boot with `test=virtio`; the tests claim the functions themselves
//! (the concrete driver types have the read/write/ARP API) or bind them through the bus.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use drivers::virtio::blk::{SECTOR, VirtioBlk};
use drivers::virtio::net::{GATEWAY_IP, GUEST_IP, VirtioNet};
use drivers::virtio::{self, fnv1a};
use pci::irq::{IrqKind, IrqKinds};

use super::{Test, baseline::measure};
use crate::ensure;

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    blk_reads_sectors_by_best_kind,
    blk_write_read_round_trip,
    blk_completes_by_intx,
    net_resolves_the_gateway_by_interrupt,
    net_resolves_the_gateway_by_intx,
    blk_thousand_unbind_bind_cycles_leave_nothing,
    net_thousand_unbind_bind_cycles_leave_nothing,
];

/// Sectors whose checksum is printed (64 KiB: two requests).
pub const READ_SECTORS: Range<u64> = 0..128;
/// Sectors the round-trip test overwrites with [`pattern`] (left so for the runner).
pub const WRITE_SECTORS: Range<u64> = 1024..1032;
/// Cycles per driver.
const CYCLES: u32 = 1000;

/// Byte `offset` of the disk as the round-trip test writes it (the runner computes the
/// same): a multiplicative hash of the offset.
fn pattern(offset: u64) -> u8 {
    ((offset as u32).wrapping_mul(0x9E37_79B1) >> 11) as u8 ^ b'V'
}

/// The first function of virtio device type `ty`.
fn find(ty: u16) -> Result<pci::Address, String> {
    let scan = crate::pcibus::scan().ok_or("PCI not enumerated")?;
    scan.topology
        .functions
        .iter()
        .find(|f| virtio::device_type(f) == Some(ty))
        .map(|f| f.address)
        .ok_or_else(|| alloc::format!("no virtio device of type {ty}"))
}

fn blk(kinds: IrqKinds) -> Result<VirtioBlk, String> {
    let address = find(virtio::TYPE_BLOCK)?;
    let function = crate::pciirq::claim(address).ok_or("virtio-blk already claimed")?;
    VirtioBlk::probe_with(function, kinds).map_err(|(_, e)| alloc::format!("{e}"))
}

fn net(kinds: IrqKinds) -> Result<VirtioNet, String> {
    let address = find(virtio::TYPE_NET)?;
    let function = crate::pciirq::claim(address).ok_or("virtio-net already claimed")?;
    VirtioNet::probe_with(function, kinds).map_err(|(_, e)| alloc::format!("{e}"))
}

fn read_checksum(disk: &mut VirtioBlk, sectors: Range<u64>) -> Result<u64, String> {
    let mut data = vec![0u8; (sectors.end - sectors.start) as usize * SECTOR];
    disk.read(sectors.start, &mut data)?;
    Ok(fnv1a(&data))
}

fn blk_reads_sectors_by_best_kind() -> Result<(), String> {
    let mut disk = blk(IrqKinds::ALL)?;
    crate::serial_println!(
        "virtio-blk: bound {}: {}",
        drivers::Bound::address(&disk),
        drivers::Bound::status(&disk)
    );
    let start = crate::time::micros_since_boot();
    let sum = read_checksum(&mut disk, READ_SECTORS)?;
    let us = crate::time::micros_since_boot() - start;
    crate::serial_println!(
        "virtio-blk: sectors {}..{} fnv1a={sum:016x}",
        READ_SECTORS.start,
        READ_SECTORS.end
    );
    crate::serial_println!(
        "virtio-blk: {} KiB in {} request(s) by {}, {us} us",
        (READ_SECTORS.end - READ_SECTORS.start) / 2,
        disk.requests(),
        disk.device().irq_kind()
    );
    Ok(())
}

fn blk_write_read_round_trip() -> Result<(), String> {
    let mut disk = blk(IrqKinds::ALL)?;
    ensure!(
        disk.capacity() >= WRITE_SECTORS.end,
        "capacity {} sectors",
        disk.capacity()
    );
    let first = WRITE_SECTORS.start * SECTOR as u64;
    let bytes: Vec<u8> = (0..(WRITE_SECTORS.end - WRITE_SECTORS.start) * SECTOR as u64)
        .map(|i| pattern(first + i))
        .collect();
    disk.write(WRITE_SECTORS.start, &bytes)?;
    let mut back = vec![0u8; bytes.len()];
    disk.read(WRITE_SECTORS.start, &mut back)?;
    ensure!(back == bytes, "read back differs from what was written");
    crate::serial_println!(
        "virtio-blk: wrote sectors {}..{} fnv1a={:016x}, read back equal",
        WRITE_SECTORS.start,
        WRITE_SECTORS.end,
        fnv1a(&bytes)
    );
    let result = drivers::Bound::self_test(&mut disk)?;
    crate::serial_println!("virtio-blk self test: {result}");
    Ok(())
}

fn blk_completes_by_intx() -> Result<(), String> {
    let mut disk = blk(IrqKinds::INTX)?;
    let kind = disk.device().irq_kind();
    ensure!(kind == IrqKind::Intx, "granted {kind}");
    let sum = read_checksum(&mut disk, READ_SECTORS)?;
    crate::serial_println!(
        "virtio-blk: INTx sectors {}..{} fnv1a={sum:016x}",
        READ_SECTORS.start,
        READ_SECTORS.end
    );
    let result = drivers::Bound::self_test(&mut disk)?;
    crate::serial_println!("virtio-blk INTx self test: {result}");
    Ok(())
}

fn net_resolves_the_gateway_by_interrupt() -> Result<(), String> {
    let mut card = net(IrqKinds::ALL)?;
    crate::serial_println!(
        "virtio-net: bound {}: {}",
        drivers::Bound::address(&card),
        drivers::Bound::status(&card)
    );
    let start = crate::time::micros_since_boot();
    let gateway = card.arp_resolve(GUEST_IP, GATEWAY_IP, 500_000)?;
    let us = crate::time::micros_since_boot() - start;
    crate::serial_println!("virtio-net: gateway 10.0.2.2 is at {gateway}");
    crate::serial_println!(
        "virtio-net: ARP round trip by {} in {us} us; {}",
        card.device().irq_kind(),
        drivers::Bound::status(&card)
    );
    Ok(())
}

fn net_resolves_the_gateway_by_intx() -> Result<(), String> {
    let mut card = net(IrqKinds::INTX)?;
    let kind = card.device().irq_kind();
    ensure!(kind == IrqKind::Intx, "granted {kind}");
    let gateway = card.arp_resolve(GUEST_IP, GATEWAY_IP, 500_000)?;
    crate::serial_println!("virtio-net: INTx gateway 10.0.2.2 is at {gateway}");
    Ok(())
}

/// Unbinds and binds the driver of device type `ty` [`CYCLES`] times through the bus, with
/// a self test after every rebind (cheap enough under TCG: well under a millisecond for the
/// card, about one for the disk's six requests); checks the baseline.
fn cycles(ty: u16, name: &str) -> Result<(), String> {
    let address = find(ty)?;
    let status = crate::bus::bind(address)?;
    crate::serial_println!("{name}: bound through the bus: {status}");
    // One warm-up cycle, so that lazily created kernel structures exist in the baseline.
    crate::bus::unbind(address)?;
    crate::bus::bind(address)?;
    let first = crate::bus::self_test(address)?;
    let baseline = measure();
    let unbound = {
        crate::bus::unbind(address)?;
        let m = measure();
        crate::bus::bind(address)?;
        m
    };
    ensure!(
        unbound.claimed + 1 == baseline.claimed,
        "unbinding did not release the function"
    );
    ensure!(
        unbound.handlers.len() < baseline.handlers.len(),
        "unbinding left the handlers installed"
    );
    // The device still holds the queues' addresses: unbinding parks the driver's DMA memory
    // for the next claim (`pci::parking`) rather than freeing it.
    ensure!(
        unbound.dma_parked > baseline.dma_parked,
        "unbinding parked no DMA memory"
    );
    ensure!(
        unbound.mmio_free > baseline.mmio_free,
        "unbinding unmapped nothing"
    );
    let pending = crate::pciirq::pending_at_release();
    let heap_before = crate::memory::heap::usage().0;
    let (mut bind_us, mut test_us, mut tests) = (0u64, 0u64, 0u32);
    let start = crate::time::micros_since_boot();
    for cycle in 1..=CYCLES {
        let t0 = crate::time::micros_since_boot();
        crate::bus::unbind(address).map_err(|e| alloc::format!("cycle {cycle}: {e}"))?;
        crate::bus::bind(address).map_err(|e| alloc::format!("cycle {cycle}: {e}"))?;
        let t1 = crate::time::micros_since_boot();
        bind_us += t1 - t0;
        crate::bus::self_test(address)
            .map_err(|e| alloc::format!("cycle {cycle}: device broken: {e}"))?;
        test_us += crate::time::micros_since_boot() - t1;
        tests += 1;
    }
    let total_us = crate::time::micros_since_boot() - start;
    let heap_after = crate::memory::heap::usage().0;
    let after = measure();
    ensure!(
        heap_after == heap_before,
        "heap use {heap_before} -> {heap_after} bytes over {CYCLES} cycles"
    );
    ensure!(
        after == baseline,
        "not at baseline after {CYCLES} cycles:\n{baseline:?}\n{after:?}"
    );
    ensure!(
        crate::pciirq::pending_at_release() == pending,
        "interrupts were pending at release"
    );
    crate::bus::unbind(address)?;
    crate::serial_println!("{name}: first self test after a rebind: {first}");
    crate::serial_println!(
        "{name}: {CYCLES} unbind/bind cycles in {} ms ({} us per unbind+bind), self test after every rebind ({tests} tests, {} us each); vectors, frames, heap ({heap_after} bytes used), MMIO window, handlers and claims at baseline",
        total_us / 1000,
        bind_us / u64::from(CYCLES),
        test_us / u64::from(tests.max(1))
    );
    Ok(())
}

fn blk_thousand_unbind_bind_cycles_leave_nothing() -> Result<(), String> {
    cycles(virtio::TYPE_BLOCK, "virtio-blk")
}

fn net_thousand_unbind_bind_cycles_leave_nothing() -> Result<(), String> {
    cycles(virtio::TYPE_NET, "virtio-net")
}
