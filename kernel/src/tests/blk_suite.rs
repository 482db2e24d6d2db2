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
//! blk: <name> size=<bytes> depth=<d> lbas=<l0>,<l1>,... fnv1a=<16 hex digits>
//! blk: console <command>: <first line of the answer>
//! blk: <address>: <cycles> unbind/bind cycles with reads at depth 32; everything at baseline
//! BLKBENCH disk=<name> size=<bytes> depth=<d> bytes=<n> us=<n> mib_s=<x.y> batches=<n> fnv1a=<hex>
//! ```
//!
//! A `size=` line hashes the concatenation of its requests' data, in request order: request
//! `i` reads `size` bytes from block `lbas[i]`. The runner recomputes it from the image.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use drivers::block::{DISKS, Disk, Request};
use drivers::fnv1a;

use super::{Test, baseline::measure};
use crate::ensure;

/// The tests, in order.
pub const TESTS: &[Test] = crate::tests![
    every_disk_is_registered,
    reads_at_depth_1_and_32_match_the_images,
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
            }
        }
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
            // Deep reads: every staging slot the driver allocates on demand.
            for disk in disks().into_iter().filter(|d| d.address == address) {
                let size = disk.info.max_command.min(1 << 20);
                let lbas = spread(&disk, size, 32);
                read_batch(&disk, &lbas, size, 32)?;
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
                bench_one(&disk, size, depth)?;
            }
        }
    }
    Ok(())
}

/// Bytes moved per figure at least.
const BENCH_BYTES: u64 = 64 << 20;

fn bench_one(disk: &Disk, size: u64, depth: usize) -> Result<(), String> {
    let bs = u64::from(disk.info.block_size);
    let per = size / bs;
    let slots = disk.info.blocks / per;
    ensure!(slots > 0, "{}: smaller than {size} bytes", disk.name);
    let batches = BENCH_BYTES.div_ceil(size * depth as u64).max(2);
    let mut hash_input_state = 0xcbf2_9ce4_8422_2325u64;
    let mut us = 0;
    let mut next = 0u64;
    // The caller's memory, made once; a warm-up batch (staging slots allocated), not counted.
    let mut data = vec![0u8; depth * size as usize];
    let lbas: Vec<u64> = (0..depth as u64).map(|i| (i % slots) * per).collect();
    read_into(disk, &lbas, size, depth, &mut data)?;
    for _ in 0..batches {
        let lbas: Vec<u64> = (0..depth as u64)
            .map(|i| ((next + i) % slots) * per)
            .collect();
        next += depth as u64;
        let start = crate::time::micros_since_boot();
        read_into(disk, &lbas, size, depth, &mut data)?;
        us += crate::time::micros_since_boot() - start;
        hash_input_state = data.iter().fold(hash_input_state, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    }
    let bytes = batches * depth as u64 * size;
    let mib_s = (bytes as f64 / (1u64 << 20) as f64) / (us.max(1) as f64 / 1e6);
    crate::serial_println!(
        "BLKBENCH disk={} size={size} depth={depth} bytes={bytes} us={us} mib_s={:.1} batches={batches} fnv1a={hash_input_state:016x}",
        disk.name,
        mib_s
    );
    Ok(())
}
