//! The `blk` suite: every disk through the one block-device view (`drivers::block`), on
//! NVMe namespaces of different block sizes, two NVMe controllers and virtio-blk disks with
//! 512- and 4096-byte blocks, against images the host-side runner wrote
//! (`qemu-tests/tests/blk.rs`); and the `blkbench` suite (throughput).
//!
//! The suite binds every driver through the bus, as at boot, and reaches the disks through
//! the registry's names and the bus, as the console does. Lines for the runner:
//!
//! ```text
//! blk: disk <name> driver=<d> address=<a> block_size=<n> blocks=<n> max_command=<n> max_depth=<n>
//! blk: <name> size=<bytes> depth=<d> lbas=<l0>,<l1>,... [path=dma] fnv1a=<16 hex digits>
//! blk: <name> dma refused: <what> (<the error>)
//! blk: console <command>: <first line of the answer>
//! blk: <address>: <cycles> unbind/bind cycles with reads at depth 32; everything at baseline
//! BLKBENCH disk=<name> size=<bytes> depth=<d> bytes=<n> us=<n> mib_s=<x.y> batches=<n> path=<dma|copy> fnv1a=<hex>
//! ```
//!
//! A `size=` line hashes the concatenation of its requests' data, in request order: request
//! `i` reads `size` bytes from block `lbas[i]`. The runner recomputes it from the image.
//! `path=dma` lines read into DMA memory the suite owns ([`BlockDevices::dma_buffer`],
//! [`BlockDevices::read_dma`]: the device writes it directly); the others into ordinary
//! memory, through the driver's staging copy.
//!
//! [`BlockDevices::dma_buffer`]: drivers::block::BlockDevices::dma_buffer
//! [`BlockDevices::read_dma`]: drivers::block::BlockDevices::read_dma

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use drivers::block::{DISKS, Disk, DmaRequest, Request};
use drivers::fnv1a;
use pci::window::DmaBuffer;

use super::{Test, baseline::measure};
use crate::ensure;

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    every_disk_is_registered,
    reads_at_depth_1_and_32_match_the_images,
    dma_reads_refuse_foreign_and_partial_memory,
    console_reads_every_disk_and_controller,
    unbind_bind_leaves_everything_at_baseline,
];

/// The benchmark (`test=blkbench`).
pub const BENCH: &[Test] = crate::tests![throughput];

/// Request sizes read.
const SIZES: [u64; 3] = [4096, 128 * 1024, 1 << 20];
/// Depths read at.
const DEPTHS: [usize; 2] = [1, 32];
/// Unbind/bind cycles per storage function.
const CYCLES: u32 = 8;

fn disks() -> Vec<Disk> {
    DISKS.list()
}

/// Reads `requests` (block numbers, `size` bytes each) of `disk` with `depth` in flight,
/// through the bus; the data, in request order.
fn read_batch(disk: &Disk, lbas: &[u64], size: u64, depth: usize) -> Result<Vec<u8>, String> {
    let mut data = vec![0u8; lbas.len() * size as usize];
    read_into(disk, lbas, size, depth, &mut data)?;
    Ok(data)
}

/// [`read_batch`] into `data` (`lbas.len() * size` bytes).
fn read_into(
    disk: &Disk,
    lbas: &[u64],
    size: u64,
    depth: usize,
    data: &mut [u8],
) -> Result<(), String> {
    let index = disk.index;
    crate::bus::on_driver(disk.address, |bound| {
        let devices = bound.block().ok_or("no block devices")?;
        let mut requests: Vec<Request<'_>> = data
            .chunks_mut(size as usize)
            .zip(lbas)
            .map(|(data, &lba)| Request { lba, data })
            .collect();
        devices.read_blocks(index, &mut requests, depth)
    })
    .ok_or_else(|| format!("{}: not bound", disk.name))?
    .and_then(|r| r)
    .map_err(|e| format!("{}: {e}", disk.name))
}

/// A DMA buffer of at least `bytes` bytes for `disk`'s function, owned by the suite.
fn dma_buffer(disk: &Disk, bytes: u64) -> Result<DmaBuffer, String> {
    crate::bus::on_driver(disk.address, |bound| {
        bound
            .block()
            .ok_or("no block devices")?
            .dma_buffer(disk.index, bytes)
    })
    .ok_or_else(|| format!("{}: not bound", disk.name))?
    .and_then(|r| r)
    .map_err(|e| format!("{}: {e}", disk.name))
}

/// Reads `lbas` (`size` bytes each) of `disk` with `depth` in flight straight into `buffer`
/// (request `i` at offset `i * size`), through the bus.
fn read_dma_into(
    disk: &Disk,
    lbas: &[u64],
    size: u64,
    depth: usize,
    buffer: &mut DmaBuffer,
) -> Result<(), String> {
    let index = disk.index;
    let bytes = lbas.len() as u64 * size;
    crate::bus::on_driver(disk.address, |bound| {
        let devices = bound.block().ok_or("no block devices")?;
        let (whole, _) = buffer
            .slice()
            .split_at(bytes)
            .ok_or("the buffer is too small")?;
        let mut requests: Vec<DmaRequest<'_>> = whole
            .chunks(size)
            .into_iter()
            .zip(lbas)
            .map(|(data, &lba)| DmaRequest { lba, data })
            .collect();
        devices.read_dma(index, &mut requests, depth)
    })
    .ok_or_else(|| format!("{}: not bound", disk.name))?
    .and_then(|r| r)
    .map_err(|e| format!("{}: {e}", disk.name))
}

/// Reads `len` bytes from `lba` of `disk` into `buffer` starting `offset` bytes in; the data.
fn read_dma_at(
    disk: &Disk,
    lba: u64,
    len: u64,
    offset: u64,
    buffer: &mut DmaBuffer,
) -> Result<Vec<u8>, String> {
    let index = disk.index;
    crate::bus::on_driver(disk.address, |bound| {
        let devices = bound.block().ok_or("no block devices")?;
        let (_, rest) = buffer
            .slice()
            .split_at(offset)
            .ok_or("offset past the buffer")?;
        let (data, _) = rest.split_at(len).ok_or("the buffer is too small")?;
        devices.read_dma(index, &mut [DmaRequest { lba, data }], 1)
    })
    .ok_or_else(|| format!("{}: not bound", disk.name))?
    .and_then(|r| r)
    .map_err(|e| format!("{}: {e}", disk.name))?;
    let mut out = vec![0u8; len as usize];
    buffer.read_bytes(offset, &mut out);
    Ok(out)
}

/// [`read_batch`] through a DMA buffer of the suite's; the FNV-1a of the data, hashed out of
/// the buffer afterwards (in pieces: the buffer may be larger than the heap could copy).
fn read_dma_batch(disk: &Disk, lbas: &[u64], size: u64, depth: usize) -> Result<u64, String> {
    let bytes = lbas.len() as u64 * size;
    let mut buffer = dma_buffer(disk, bytes)?;
    read_dma_into(disk, lbas, size, depth, &mut buffer)?;
    Ok(dma_fnv1a(&buffer, bytes, FNV_START))
}

/// FNV-1a's starting value.
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues FNV-1a state `hash` over `bytes`.
fn fnv1a_more(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Continues FNV-1a state `hash` over the first `bytes` bytes of `buffer`, copied out 64 KiB at
/// a time.
fn dma_fnv1a(buffer: &DmaBuffer, bytes: u64, mut hash: u64) -> u64 {
    let mut piece = vec![0u8; 1 << 16];
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(piece.len() as u64) as usize;
        buffer.read_bytes(at, &mut piece[..n]);
        hash = fnv1a_more(hash, &piece[..n]);
        at += n as u64;
    }
    hash
}

/// `count` request block numbers for `size`-byte reads spread over `disk` (each inside it).
fn spread(disk: &Disk, size: u64, count: usize) -> Vec<u64> {
    let per = size / u64::from(disk.info.block_size);
    let room = disk.info.blocks.saturating_sub(per) + 1;
    (0..count as u64)
        .map(|i| (i * 7 * per + i * 3) % room)
        .collect()
}

fn every_disk_is_registered() -> Result<(), String> {
    crate::bus::bind_all();
    let list = disks();
    ensure!(!list.is_empty(), "no disk registered");
    for d in &list {
        crate::serial_println!(
            "blk: disk {} driver={} address={} block_size={} blocks={} max_command={} max_depth={}",
            d.name,
            d.driver,
            d.address,
            d.info.block_size,
            d.info.blocks,
            d.info.max_command,
            d.info.max_depth
        );
    }
    // Every bound storage function has its disks, and nothing else is named.
    for driver in ["nvme", "virtio-blk"] {
        for address in crate::bus::bound_addresses(driver) {
            ensure!(
                list.iter().any(|d| d.address == address),
                "{driver} at {address} has no disk"
            );
        }
    }
    for d in &list {
        ensure!(
            crate::bus::bound_addresses(d.driver).contains(&d.address),
            "{} names {} which is not bound",
            d.name,
            d.address
        );
    }
    Ok(())
}

fn reads_at_depth_1_and_32_match_the_images() -> Result<(), String> {
    for disk in disks() {
        for size in SIZES {
            for depth in DEPTHS {
                let lbas = spread(&disk, size, depth);
                let data = read_batch(&disk, &lbas, size, depth)?;
                let list: Vec<String> = lbas.iter().map(u64::to_string).collect();
                crate::serial_println!(
                    "blk: {} size={size} depth={depth} lbas={} fnv1a={:016x}",
                    disk.name,
                    list.join(","),
                    fnv1a(&data)
                );
                // The same blocks straight into DMA memory: the other half of the list (so
                // that both paths cover every part of the disk the first half does not).
                let lbas: Vec<u64> = spread(&disk, size, 2 * depth)[depth..].to_vec();
                let hash = read_dma_batch(&disk, &lbas, size, depth)?;
                let list: Vec<String> = lbas.iter().map(u64::to_string).collect();
                crate::serial_println!(
                    "blk: {} size={size} depth={depth} lbas={} path=dma fnv1a={hash:016x}",
                    disk.name,
                    list.join(","),
                );
            }
        }
    }
    Ok(())
}

/// Reads into DMA memory are refused, with an error and nothing submitted, when the memory
/// was made for another function or is not whole blocks; the disk reads normally afterwards.
fn dma_reads_refuse_foreign_and_partial_memory() -> Result<(), String> {
    let list = disks();
    for disk in &list {
        let Some(other) = list.iter().find(|d| d.address != disk.address) else {
            continue;
        };
        let bs = u64::from(disk.info.block_size);
        let mut foreign = dma_buffer(other, bs)?;
        let e = read_dma_into(disk, &[0], bs, 1, &mut foreign)
            .err()
            .ok_or("a read into another function's DMA memory was accepted")?;
        ensure!(e.contains("another device"), "{}: {e}", disk.name);
        crate::serial_println!(
            "blk: {} dma refused: another function's buffer ({e})",
            disk.name
        );
        let mut own = dma_buffer(disk, bs)?;
        let e = read_dma_into(disk, &[0], bs - 4, 1, &mut own)
            .err()
            .ok_or("a read of part of a block was accepted")?;
        ensure!(e.contains("whole number"), "{}: {e}", disk.name);
        crate::serial_println!("blk: {} dma refused: part of a block ({e})", disk.name);
        // From inside a page: 8 KiB starting 512 bytes in touches three pages (NVMe: PRP
        // Entry 1 with an offset, a list for the two page boundaries); the same as the copy.
        let len = 2 * 4096u64.max(bs);
        let mut inside = dma_buffer(disk, len + 4096)?;
        let data = read_dma_at(disk, 2, len, 512, &mut inside)?;
        ensure!(
            data == read_batch(disk, &[2], len, 1)?,
            "{}: a read 512 bytes into a page differs from the copy",
            disk.name
        );
        // Two bytes in: NVMe refuses (PRP Entry 1 must be dword aligned), virtio-blk reads.
        match (disk.driver, read_dma_at(disk, 2, bs, 2, &mut inside)) {
            ("nvme", Err(e)) => {
                ensure!(e.contains("dword"), "{}: {e}", disk.name);
                crate::serial_println!(
                    "blk: {} dma refused: two bytes into a page ({e})",
                    disk.name
                );
            }
            ("nvme", Ok(_)) => {
                return Err(format!(
                    "{}: a read two bytes into a page was accepted",
                    disk.name
                ));
            }
            (_, r) => ensure!(
                r? == read_batch(disk, &[2], bs, 1)?,
                "{}: a read two bytes into a page differs from the copy",
                disk.name
            ),
        }
        drop(inside);
        let lbas = [1, 0];
        let hash = read_dma_batch(disk, &lbas, bs, 2)?;
        let copy = read_batch(disk, &lbas, bs, 2)?;
        ensure!(
            hash == fnv1a(&copy),
            "{}: the DMA read differs from the copy",
            disk.name
        );
    }
    Ok(())
}

fn first_line(answer: &Option<Result<String, String>>) -> String {
    match answer {
        Some(Ok(t)) => t.lines().next().unwrap_or("").to_string(),
        Some(Err(e)) => format!("error: {e}"),
        None => "no answer".into(),
    }
}

fn console_reads_every_disk_and_controller() -> Result<(), String> {
    let listing = crate::bus::command("blk", &[]).ok_or("no answer to blk")??;
    for line in listing.lines() {
        crate::serial_println!("blk: console blk: {line}");
    }
    for disk in disks() {
        let answer = crate::bus::command("read", &[&disk.name, "0", "8"]);
        crate::serial_println!(
            "blk: console read {} 0 8: {}",
            disk.name,
            first_line(&answer)
        );
        ensure!(
            matches!(answer, Some(Ok(_))),
            "read {}: {}",
            disk.name,
            first_line(&answer)
        );
    }
    let answer = crate::bus::command("nvme", &["read", "0"]).ok_or("no answer to nvme read")??;
    for line in answer.lines().filter(|l| l.starts_with("nvme")) {
        crate::serial_println!("blk: console nvme read 0: {line}");
    }
    let controllers = crate::bus::bound_addresses("nvme").len();
    let answered = answer.lines().filter(|l| l.starts_with("nvme")).count();
    ensure!(
        answered == controllers,
        "nvme read answered for {answered} of {controllers} controllers"
    );
    let e = crate::bus::command("read", &["nosuchdisk", "0"]).ok_or("no answer")?;
    ensure!(
        e.as_ref().is_err_and(|e| e.contains("no disk nosuchdisk")),
        "read of a missing disk: {e:?}"
    );
    Ok(())
}

fn unbind_bind_leaves_everything_at_baseline() -> Result<(), String> {
    let mut addresses = crate::bus::bound_addresses("nvme");
    addresses.extend(crate::bus::bound_addresses("virtio-blk"));
    for address in addresses {
        let names = |a| -> Vec<String> {
            disks()
                .into_iter()
                .filter(|d| d.address == a)
                .map(|d| d.name)
                .collect()
        };
        let before_names = names(address);
        let cycle = || -> Result<(), String> {
            crate::bus::unbind(address)?;
            ensure!(
                names(address).is_empty(),
                "{address}: disks named after unbind"
            );
            crate::bus::bind(address)?;
            ensure!(
                names(address) == before_names,
                "{address}: named {:?} after rebinding, {before_names:?} before",
                names(address)
            );
            // Deep reads: every staging slot and PRP list the driver allocates on demand.
            for disk in disks().into_iter().filter(|d| d.address == address) {
                let size = disk.info.max_command.min(1 << 20);
                let lbas = spread(&disk, size, 32);
                read_batch(&disk, &lbas, size, 32)?;
                read_dma_batch(&disk, &lbas, size, 32)?;
            }
            crate::bus::unbind(address)
        };
        // Warm-up: lazily built kernel structures exist in the baseline.
        cycle()?;
        crate::bus::bind(address)?;
        crate::bus::unbind(address)?;
        // The heap is read with the same measurement alive both times (measuring allocates).
        let baseline = measure();
        let heap = crate::memory::heap::usage().0;
        for n in 0..CYCLES {
            crate::bus::bind(address).map_err(|e| format!("cycle {n}: {e}"))?;
            cycle().map_err(|e| format!("cycle {n}: {e}"))?;
        }
        let heap_after = crate::memory::heap::usage().0;
        let after = measure();
        ensure!(
            after == baseline,
            "{address}: not at baseline after {CYCLES} cycles:\n{baseline:?}\n{after:?}"
        );
        ensure!(
            heap_after == heap,
            "{address}: heap use {heap} -> {heap_after} bytes"
        );
        crate::bus::bind(address)?;
        crate::serial_println!(
            "blk: {address}: {CYCLES} unbind/bind cycles with reads at depth 32; vectors, frames, heap, MMIO window, handlers, claims and disk names at baseline"
        );
    }
    if crate::iommu::kind() == Some("AMD IOMMU") {
        // Everything the drivers did stayed inside their functions' domains: the unit
        // logged nothing.
        let events: Vec<String> = crate::iommu::faults()
            .iter()
            .map(crate::iommu::describe)
            .collect();
        crate::serial_println!(
            "blk: AMD IOMMU events: {}",
            if events.is_empty() {
                "none".into()
            } else {
                events.join("; ")
            }
        );
    }
    Ok(())
}

/// MiB/s for every disk, request size and depth, with the data delivered into the
/// caller's memory: a batch of `depth` requests of `size` bytes, sequential from block 0
/// (wrapping at the disk's end), repeated until at least [`BENCH_BYTES`] moved. Only the read
/// calls are timed; the FNV-1a over everything read (hashed between batches) lets the
/// runner check the data against the image.
fn throughput() -> Result<(), String> {
    crate::bus::bind_all();
    crate::serial_println!("BLKBENCH tsc_hz={}", crate::time::tsc_hz());
    for disk in disks() {
        for size in SIZES {
            for depth in DEPTHS {
                bench_one(&disk, size, depth, Path::Dma)?;
                bench_one(&disk, size, depth, Path::Copy)?;
            }
        }
    }
    Ok(())
}

/// How a benchmark's reads reach the caller.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Into DMA memory the caller owns: the device writes it directly.
    Dma,
    /// Into ordinary memory, through the driver's staging slots and one copy.
    Copy,
}

/// Bytes moved per figure at least.
const BENCH_BYTES: u64 = 64 << 20;

fn bench_one(disk: &Disk, size: u64, depth: usize, path: Path) -> Result<(), String> {
    let bs = u64::from(disk.info.block_size);
    let per = size / bs;
    let slots = disk.info.blocks / per;
    ensure!(slots > 0, "{}: smaller than {size} bytes", disk.name);
    let batches = BENCH_BYTES.div_ceil(size * depth as u64).max(2);
    let mut hash_input_state = FNV_START;
    let mut us = 0;
    let mut next = 0u64;
    // The caller's memory, made once; a warm-up batch (staging slots or PRP lists allocated),
    // not counted.
    let total = depth * size as usize;
    let mut data = vec![0u8; if path == Path::Copy { total } else { 0 }];
    let mut buffer = match path {
        Path::Dma => Some(dma_buffer(disk, total as u64)?),
        Path::Copy => None,
    };
    let read = |lbas: &[u64], data: &mut [u8], buffer: &mut Option<DmaBuffer>| match buffer {
        Some(b) => read_dma_into(disk, lbas, size, depth, b),
        None => read_into(disk, lbas, size, depth, data),
    };
    let lbas: Vec<u64> = (0..depth as u64).map(|i| (i % slots) * per).collect();
    read(&lbas, &mut data, &mut buffer)?;
    for _ in 0..batches {
        let lbas: Vec<u64> = (0..depth as u64)
            .map(|i| ((next + i) % slots) * per)
            .collect();
        next += depth as u64;
        let start = crate::time::micros_since_boot();
        read(&lbas, &mut data, &mut buffer)?;
        us += crate::time::micros_since_boot() - start;
        // Hashed outside the timed calls (out of the DMA memory in pieces).
        hash_input_state = match &buffer {
            Some(b) => dma_fnv1a(b, total as u64, hash_input_state),
            None => fnv1a_more(hash_input_state, &data),
        };
    }
    let bytes = batches * depth as u64 * size;
    let mib_s = (bytes as f64 / (1u64 << 20) as f64) / (us.max(1) as f64 / 1e6);
    crate::serial_println!(
        "BLKBENCH disk={} size={size} depth={depth} bytes={bytes} us={us} mib_s={:.1} batches={batches} path={} fnv1a={hash_input_state:016x}",
        disk.name,
        mib_s,
        if path == Path::Dma { "dma" } else { "copy" }
    );
    Ok(())
}
