//! The `nvme` suite: the NVMe driver (`drivers::nvme`) against a controller whose disk the
//! host-side runner wrote (`qemu-tests/tests/nvme.rs`), and the `nvmebench` suite.
//!
//! Drivers are not bound at boot under `test=nvme`, so each test brings its own controller up:
//! it claims the function and calls [`drivers::nvme::Nvme::new`], owns the result, and drops
//! it at the end (which stops the controller and releases everything). One test probes every
//! NVMe controller present and requires the baseline afterwards, whether the probe succeeded
//! or failed (the runner adds a controller without namespace 1 to see a failure after the
//! controller was enabled). The last test goes
//! through the kernel's bus instead, like the `drivers` suite: 1000 `bind`/`unbind` cycles with
//! a self test after each, then vectors, frames, heap, MMIO window, handlers and claims must
//! be exactly at baseline.
//!
//! Lines printed for the runner, which checks them against what it gave QEMU:
//!
//! ```text
//! nvme: model="<MN>" serial="<SN>" firmware="<FR>" lbas=<n> lba_size=<n> queues=<n> vectors=<n> kind=<MSI-X|INTx>
//! nvme: read lba <a>..<b> fnv1a=<16 hex digits>        one per 64 KiB of the disk (16 MiB at most)
//! nvme: wrote lba <a>..<b> fnv1a=<16 hex digits>       the write test's pattern, read back equal
//! nvme: queue <q> completed on vector entry <e> only   (MSI-X)
//! nvme: by INTx: read lba 0..<b> fnv1a=<16 hex digits>  the first 64 KiB, by forced INTx
//! nvme: <address>: <bound and dropped | probe failed: <why>>; everything released
//! nvme: 1000 unbind/bind cycles ...
//! ```
//!
//! The write test and the self tests' write round trip need `storage=write` on the command
//! line (`drivers::storage`); without it the write test fails with the refusal, which the
//! `storage` suite checks.
//!
//! The write test's pattern depends on the disk offset and the controller's serial number (a
//! fresh random token per run), see [`pattern_byte`]; the runner computes the same bytes and
//! finds them in the image after QEMU exits.
//!
//! `nvmebench` prints `NVMEBENCH mode=<m> bytes=<n> us=<n> commands=<n> interrupts=<n>` for
//! sequential reads (see `qemu-tests/src/bin/nvmebench.rs`).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use drivers::fnv1a;

use drivers::nvme::Nvme;
use pci::irq::{IrqKind, IrqKinds};

use super::{Test, baseline::measure};
use crate::ensure;

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    identify_controller_and_namespace,
    read_checksums_per_64k,
    odd_sized_reads_split_and_agree,
    each_queue_completes_on_its_own_vector,
    intx_reads_agree,
    write_pattern_reads_back,
    out_of_range_requests_are_refused,
    every_probe_releases_everything,
    thousand_unbind_bind_cycles_leave_nothing,
];

/// The benchmark (`test=nvmebench`).
pub const BENCH: &[Test] = crate::tests![sequential_read_throughput];

/// Region hashed per line of the read test.
const REGION: usize = 64 * 1024;
/// The read test covers at most this much of the disk.
const READ_LIMIT: u64 = 16 << 20;
/// The write test's byte range on the disk: 20 KiB at 1 MiB (one command, through a PRP list).
const WRITE_AT: u64 = 1 << 20;
/// Length of the write test's range.
const WRITE_LEN: usize = 20 * 1024;
/// Bind/unbind cycles.
const CYCLES: u32 = 1000;

/// The write test's byte at disk offset `offset`, for a controller with serial `serial` (the
/// runner's `pattern_byte` is the same function).
pub fn pattern_byte(offset: u64, serial: &[u8]) -> u8 {
    let mixed = ((offset as u32).wrapping_mul(0x9E37_79B1) >> 7) as u8;
    let key = if serial.is_empty() {
        0
    } else {
        serial[(offset % serial.len() as u64) as usize]
    };
    mixed ^ key ^ 0xA5
}

/// The address of the first NVMe controller (class 01h, subclass 08h).
fn address() -> Result<pci::Address, String> {
    let scan = crate::pcibus::scan().ok_or("PCI not enumerated")?;
    scan.topology
        .functions
        .iter()
        .find(|f| f.class == 0x01 && f.subclass == 0x08)
        .map(|f| f.address)
        .ok_or_else(|| "no NVMe controller (-device nvme)".into())
}

/// Claims the controller and brings it up; the caller owns it (dropping it unbinds).
fn controller() -> Result<Nvme, String> {
    let address = address()?;
    let function =
        crate::pciirq::claim(address).ok_or_else(|| format!("{address} is already claimed"))?;
    Nvme::new(function).map_err(|(_, e)| format!("probe of {address}: {e}"))
}

fn identify_controller_and_namespace() -> Result<(), String> {
    let nvme = controller()?;
    let id = nvme.identity();
    let (kind, vectors) = nvme.interrupts();
    ensure!(id.lbas > 0 && id.lba_size >= 512, "empty namespace");
    ensure!(nvme.io_queues() >= 1, "no I/O queue");
    match kind {
        // An entry per queue, or one entry for the admin queue and the one I/O queue.
        IrqKind::Msix => ensure!(
            nvme.io_queues() < vectors || (vectors == 1 && nvme.io_queues() == 1),
            "{} I/O queues on {vectors} vectors",
            nvme.io_queues()
        ),
        _ => ensure!(
            nvme.io_queues() == 1 && vectors == 1,
            "{kind}: {} queues on {vectors} vectors",
            nvme.io_queues()
        ),
    }
    crate::serial_println!(
        "nvme: model=\"{}\" serial=\"{}\" firmware=\"{}\" lbas={} lba_size={} queues={} vectors={vectors} kind={kind}",
        id.model,
        id.serial,
        id.firmware,
        id.lbas,
        id.lba_size,
        nvme.io_queues()
    );
    crate::serial_println!(
        "nvme: NVMe {}.{}.{}, MDTS {}, {} byte(s) per command",
        id.version.0,
        id.version.1,
        id.version.2,
        id.max_transfer
            .map_or("unlimited".into(), |m| format!("{m} bytes")),
        nvme.command_bytes()
    );
    Ok(())
}

fn read_checksums_per_64k() -> Result<(), String> {
    let mut nvme = controller()?;
    let size = u64::from(nvme.identity().lba_size);
    let total = (nvme.identity().lbas * size).min(READ_LIMIT);
    let mut buffer = vec![0u8; REGION];
    let mut offset = 0;
    while offset < total {
        let len = (total - offset).min(REGION as u64) as usize;
        let piece = &mut buffer[..len];
        let lba = offset / size;
        nvme.read(lba, piece)
            .map_err(|e| format!("lba {lba}: {e}"))?;
        crate::serial_println!(
            "nvme: read lba {lba}..{} fnv1a={:016x}",
            lba + len as u64 / size,
            fnv1a(piece)
        );
        offset += len as u64;
    }
    crate::serial_println!(
        "nvme: interrupts per vector {:?}, commands per I/O queue {:?}",
        nvme.interrupt_counts(),
        nvme.completed()
    );
    Ok(())
}

/// Reads the first 256 KiB in pieces of 37 blocks (not a multiple of a command), alternating
/// queues, and checks them against one big read.
fn odd_sized_reads_split_and_agree() -> Result<(), String> {
    let mut nvme = controller()?;
    let size = nvme.identity().lba_size as usize;
    let blocks = ((256 * 1024) / size).min(nvme.identity().lbas as usize);
    let mut whole = vec![0u8; blocks * size];
    nvme.read_on(0, 0, &mut whole)
        .map_err(|e| format!("whole: {e}"))?;
    let mut pieces = vec![0u8; blocks * size];
    let step = 37 * size;
    for (i, piece) in pieces.chunks_mut(step).enumerate() {
        let queue = i % nvme.io_queues();
        let lba = (i * 37) as u64;
        nvme.read_on(queue, lba, piece)
            .map_err(|e| format!("piece {i} on queue {}: {e}", queue + 1))?;
    }
    ensure!(
        pieces == whole,
        "37-block reads differ from one {}-block read",
        blocks
    );
    Ok(())
}

/// MSI-X: a read on I/O queue `q` raises interrupts on vector entry `q` and on no other (on
/// entry 0, the admin queue's, when the table has one entry).
fn each_queue_completes_on_its_own_vector() -> Result<(), String> {
    let mut nvme = controller()?;
    let (kind, vectors) = nvme.interrupts();
    if kind != IrqKind::Msix {
        crate::serial_println!("nvme: {kind}: one vector for every queue");
        return Ok(());
    }
    let size = nvme.identity().lba_size as usize;
    let mut buffer = vec![0u8; 4 * size];
    for q in 0..nvme.io_queues() {
        let before = nvme.interrupt_counts();
        nvme.read_on(q, 0, &mut buffer)
            .map_err(|e| format!("queue {}: {e}", q + 1))?;
        let after = nvme.interrupt_counts();
        let moved: Vec<usize> = (0..after.len())
            .filter(|&i| after[i] != before[i])
            .collect();
        let entry = (q + 1).min(vectors - 1);
        ensure!(
            moved == [entry],
            "a read on I/O queue {} moved the counters of entries {moved:?}",
            q + 1
        );
        crate::serial_println!(
            "nvme: queue {} completed on vector entry {entry} only",
            q + 1
        );
    }
    Ok(())
}

/// The INTx pin, forced on a controller that may have MSI-X ([`Nvme::new_with`]): one
/// vector, one I/O queue, the first 64 KiB read by interrupts counted on the pin's vector.
fn intx_reads_agree() -> Result<(), String> {
    let address = address()?;
    let function =
        crate::pciirq::claim(address).ok_or_else(|| format!("{address} is already claimed"))?;
    let mut nvme = Nvme::new_with(function, IrqKinds::INTX)
        .map_err(|(_, e)| format!("probe of {address} with INTx: {e}"))?;
    let (kind, vectors) = nvme.interrupts();
    ensure!(
        kind == IrqKind::Intx && vectors == 1 && nvme.io_queues() == 1,
        "{kind}: {} queue(s) on {vectors} vector(s)",
        nvme.io_queues()
    );
    let size = u64::from(nvme.identity().lba_size);
    let len = (nvme.identity().lbas * size).min(REGION as u64) as usize;
    let mut buffer = vec![0u8; len];
    let before = nvme.interrupt_counts()[0];
    nvme.read(0, &mut buffer)
        .map_err(|e| format!("read by INTx: {e}"))?;
    let counted = nvme.interrupt_counts()[0] - before;
    ensure!(counted > 0, "the read completed without an INTx interrupt");
    crate::serial_println!(
        "nvme: by INTx: read lba 0..{} fnv1a={:016x}",
        len as u64 / size,
        fnv1a(&buffer)
    );
    Ok(())
}

/// Refused, and so failing, unless the kernel was booted with `storage=write` (the runner
/// passes it; the `storage` suite runs this test without it and requires the refusal).
pub(super) fn write_pattern_reads_back() -> Result<(), String> {
    let mut nvme = controller()?;
    let size = u64::from(nvme.identity().lba_size);
    ensure!(
        nvme.identity().lbas * size >= WRITE_AT + WRITE_LEN as u64,
        "disk too small for the write test"
    );
    let serial = nvme.identity().serial.clone();
    let data: Vec<u8> = (0..WRITE_LEN as u64)
        .map(|i| pattern_byte(WRITE_AT + i, serial.as_bytes()))
        .collect();
    let lba = WRITE_AT / size;
    let end = lba + WRITE_LEN as u64 / size;
    nvme.write_on(0, lba, &data)
        .map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; WRITE_LEN];
    let last = nvme.io_queues() - 1;
    nvme.read_on(last, lba, &mut back)
        .map_err(|e| format!("read back on queue {}: {e}", last + 1))?;
    ensure!(back == data, "read back differs from what was written");
    crate::serial_println!("nvme: wrote lba {lba}..{end} fnv1a={:016x}", fnv1a(&data));
    Ok(())
}

fn out_of_range_requests_are_refused() -> Result<(), String> {
    let mut nvme = controller()?;
    let size = nvme.identity().lba_size as usize;
    let lbas = nvme.identity().lbas;
    let mut two = vec![0u8; 2 * size];
    let e = nvme
        .read(lbas - 1, &mut two)
        .err()
        .ok_or("a read across the end succeeded")?;
    ensure!(e.to_string().contains("outside"), "{e}");
    let e = nvme
        .read(0, &mut two[..size - 1])
        .err()
        .ok_or("a partial block was read")?;
    ensure!(e.to_string().contains("whole number"), "{e}");
    let e = nvme
        .read_on(nvme.io_queues(), 0, &mut two)
        .err()
        .ok_or("a read on a missing queue succeeded")?;
    ensure!(e.to_string().contains("no I/O queue"), "{e}");
    // The device still works after refusals (nothing was submitted).
    nvme.read(lbas - 1, &mut two[..size])
        .map_err(|e| format!("last block: {e}"))?;
    Ok(())
}

/// Probes every NVMe controller twice (the first time warms lazily built kernel structures
/// up) and drops the result: whether the probe succeeded or failed (a controller without a
/// namespace 1 fails after it was enabled), vectors, frames, heap, MMIO window, handlers and
/// claims must be where they were.
fn every_probe_releases_everything() -> Result<(), String> {
    let scan = crate::pcibus::scan().ok_or("PCI not enumerated")?;
    let addresses: Vec<pci::Address> = scan
        .topology
        .functions
        .iter()
        .filter(|f| f.class == 0x01 && f.subclass == 0x08)
        .map(|f| f.address)
        .collect();
    ensure!(!addresses.is_empty(), "no NVMe controller");
    for address in addresses {
        let mut outcome = String::new();
        let mut before = None;
        for round in 0..2 {
            if round == 1 {
                before = Some((measure(), crate::memory::heap::usage().0));
            }
            let function = crate::pciirq::claim(address)
                .ok_or_else(|| format!("{address} is already claimed"))?;
            outcome = match Nvme::new(function) {
                Ok(nvme) => {
                    drop(nvme);
                    "bound and dropped".to_string()
                }
                // The function came back; dropping it releases the claim.
                Err((_function, e)) => format!("probe failed: {e}"),
            };
        }
        let heap = crate::memory::heap::usage().0;
        let after = measure();
        let (baseline, heap_before) = before.ok_or("no measurement")?;
        ensure!(
            heap == heap_before,
            "{address}: heap use {heap_before} -> {heap} bytes ({outcome})"
        );
        ensure!(
            after == baseline,
            "{address}: not at baseline ({outcome}):\n{baseline:?}\n{after:?}"
        );
        crate::serial_println!("nvme: {address}: {outcome}; everything released");
    }
    Ok(())
}

fn thousand_unbind_bind_cycles_leave_nothing() -> Result<(), String> {
    let address = address()?;
    // One warm-up cycle, so that lazily created kernel structures exist in the baseline.
    crate::bus::bind(address)?;
    crate::bus::unbind(address)?;
    let unbound = measure();
    let status = crate::bus::bind(address)?;
    let bound = measure();
    ensure!(
        bound.claimed == unbound.claimed + 1,
        "binding did not claim the function"
    );
    ensure!(
        bound.handlers.len() > unbound.handlers.len(),
        "binding installed no handler"
    );
    // The driver's DMA memory comes from what its last claim parked (`pci::parking`), new
    // frames only for what does not fit.
    ensure!(
        bound.frames_free < unbound.frames_free || bound.dma_parked < unbound.dma_parked,
        "binding took no DMA memory, new or parked"
    );
    crate::serial_println!("nvme: bound {status}");
    let heap_before = crate::memory::heap::usage().0;
    let start = crate::time::micros_since_boot();
    let mut bind_us = 0;
    let mut test_us = 0;
    for cycle in 1..=CYCLES {
        let t0 = crate::time::micros_since_boot();
        crate::bus::unbind(address).map_err(|e| format!("cycle {cycle}: {e}"))?;
        crate::bus::bind(address).map_err(|e| format!("cycle {cycle}: {e}"))?;
        let t1 = crate::time::micros_since_boot();
        crate::bus::self_test(address).map_err(|e| format!("cycle {cycle}: device broken: {e}"))?;
        bind_us += t1 - t0;
        test_us += crate::time::micros_since_boot() - t1;
    }
    let elapsed = crate::time::micros_since_boot() - start;
    let heap_after = crate::memory::heap::usage().0;
    let after = measure();
    let result = crate::bus::self_test(address)?;
    crate::bus::unbind(address)?;
    let end = measure();
    ensure!(
        heap_after == heap_before,
        "heap use {heap_before} -> {heap_after} bytes over {CYCLES} cycles"
    );
    ensure!(
        after == bound,
        "not at baseline after {CYCLES} cycles:\n{bound:?}\n{after:?}"
    );
    ensure!(
        end == unbound,
        "unbinding did not return to the unbound state:\n{unbound:?}\n{end:?}"
    );
    crate::serial_println!("nvme self test: {result}");
    crate::serial_println!(
        "nvme: {CYCLES} unbind/bind cycles, self test after each, in {} ms (unbind+bind {} us, self test {} us per cycle); vectors, frames, heap ({heap_after} bytes used), MMIO window, handlers and claims at baseline",
        elapsed / 1000,
        bind_us / u64::from(CYCLES),
        test_us / u64::from(CYCLES)
    );
    Ok(())
}

/// Sequential reads of up to 16 MiB: one command (up to MDTS) at a time (`qd1`), eight in flight
/// per doorbell (`qd8`), and `qd8` with the copy into memory (`copy`).
fn sequential_read_throughput() -> Result<(), String> {
    let mut nvme = controller()?;
    let size = u64::from(nvme.identity().lba_size);
    let command = nvme.command_bytes();
    let total = (nvme.identity().lbas * size).min(READ_LIMIT);
    crate::serial_println!(
        "NVMEBENCH model=\"{}\" lba_size={size} command_bytes={command} queues={} kind={} tsc_hz={}",
        nvme.identity().model,
        nvme.io_queues(),
        nvme.interrupts().0,
        crate::time::tsc_hz()
    );
    for (mode, depth) in [("qd1", 1usize), ("qd8", drivers::nvme::DEPTH)] {
        let batch = command * depth as u64;
        let interrupts: u64 = nvme.interrupt_counts().iter().sum();
        let completed: u64 = nvme.completed().iter().sum();
        let start = crate::time::micros_since_boot();
        let mut offset = 0;
        while offset < total {
            let len = (total - offset).min(batch);
            nvme.read_uncopied(0, offset / size, len / size, depth)
                .map_err(|e| format!("{mode} at {offset}: {e}"))?;
            offset += len;
        }
        let us = crate::time::micros_since_boot() - start;
        crate::serial_println!(
            "NVMEBENCH mode={mode} bytes={total} us={us} commands={} interrupts={}",
            nvme.completed().iter().sum::<u64>() - completed,
            nvme.interrupt_counts().iter().sum::<u64>() - interrupts
        );
    }
    let interrupts: u64 = nvme.interrupt_counts().iter().sum();
    let completed: u64 = nvme.completed().iter().sum();
    let mut buffer = vec![0u8; REGION];
    let mut hash = 0u64;
    let start = crate::time::micros_since_boot();
    let mut offset = 0;
    while offset < total {
        let len = (total - offset).min(REGION as u64) as usize;
        nvme.read_on(0, offset / size, &mut buffer[..len])
            .map_err(|e| format!("copy at {offset}: {e}"))?;
        hash ^= u64::from(buffer[0]);
        offset += len as u64;
    }
    let us = crate::time::micros_since_boot() - start;
    crate::serial_println!(
        "NVMEBENCH mode=copy bytes={total} us={us} commands={} interrupts={} check={hash}",
        nvme.completed().iter().sum::<u64>() - completed,
        nvme.interrupt_counts().iter().sum::<u64>() - interrupts
    );
    Ok(())
}
