//! Console commands over the block devices: `blk` lists every disk the drivers registered
//! (`drivers::block::DISKS`), `read <disk> <lba> [count]` reads through the disk's driver,
//! and `nvme read <lba> [nsid]` reads a block on every NVMe controller, each answer naming
//! its disk.
//!
//! Design note. The registry names disks and keeps their PCI address; it owns none of them.
//! A read finds the bound driver through the bus by that address ([`crate::bus::on_driver`]),
//! under the bus's lock and inside its panic containment, for the length of the read only. A
//! disk unbound between `blk` and `read` is reported as gone; nothing here can keep a
//! driver's state, or its DMA memory, alive.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use drivers::block::{self, DISKS};
use drivers::fnv1a;

/// Bytes `read` moves at most.
const READ_LIMIT: u64 = 16 << 20;

/// Runs `blk`, `read` or `nvme read`; `None` for any other command.
pub fn command(name: &str, args: &[&str]) -> Option<Result<String, String>> {
    match (name, args) {
        ("blk", []) => Some(Ok(list())),
        ("blk", _) => Some(Err("usage: blk".into())),
        ("read", _) => Some(read(args)),
        // Without a bound controller the command is nobody's, as any driver's command.
        ("nvme", ["read", rest @ ..]) if !crate::bus::bound_addresses("nvme").is_empty() => {
            Some(nvme_read(rest))
        }
        _ => None,
    }
}

/// One line per disk: name, driver, PCI address, block size, blocks, size.
pub fn list() -> String {
    let disks = DISKS.list();
    if disks.is_empty() {
        return "no disks".into();
    }
    let mut out = format!(
        "{:<10} {:<11} {:<13} {:>6} {:>12} {:>10}",
        "disk", "driver", "address", "block", "blocks", "size"
    );
    for d in disks {
        out.push_str(&format!(
            "\n{:<10} {:<11} {:<13} {:>6} {:>12} {:>10}",
            d.name,
            d.driver,
            format!("{}", d.address),
            d.info.block_size,
            d.info.blocks,
            size(d.info.bytes())
        ));
    }
    out
}

/// `512 B`, `64 KiB`, `4 MiB`, `2 GiB` (rounded down).
fn size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024 && value.is_multiple_of(1024) && unit + 1 < units.len() {
        value /= 1024;
        unit += 1;
    }
    if value >= 10 * 1024 && unit + 1 < units.len() {
        value /= 1024;
        unit += 1;
    }
    format!("{value} {}", units[unit])
}

/// Reads `count` blocks at `lba` of the disk called `name` into `out` (resized), with the
/// driver's full depth.
pub fn read_disk(name: &str, lba: u64, count: u64, out: &mut Vec<u8>) -> Result<(), String> {
    let disk = DISKS
        .find(name)
        .ok_or_else(|| format!("no disk {name} (see `blk`)"))?;
    let bytes = count
        .checked_mul(u64::from(disk.info.block_size))
        .filter(|b| *b > 0 && *b <= READ_LIMIT)
        .ok_or_else(|| format!("{count} blocks: from 1 to {} bytes", READ_LIMIT))?;
    // Checked before the buffer is made: a block range outside the disk needs no memory.
    if lba
        .checked_add(count)
        .is_none_or(|end| end > disk.info.blocks)
    {
        return Err(format!(
            "{name}: blocks {lba}..{} outside the disk ({} blocks)",
            lba.saturating_add(count),
            disk.info.blocks
        ));
    }
    out.clear();
    // Fallible: the heap may be smaller than READ_LIMIT (an eighth of memory).
    out.try_reserve_exact(bytes as usize)
        .map_err(|_| format!("{name}: no memory for {bytes} bytes; read fewer blocks"))?;
    out.resize(bytes as usize, 0);
    let index = disk.index;
    crate::bus::on_driver(disk.address, |bound| {
        let devices = bound
            .block()
            .ok_or_else(|| format!("{}: the driver has no disks", disk.address))?;
        devices.read(index, lba, out)
    })
    .ok_or_else(|| format!("{name}: {} is no longer bound", disk.address))?
    .and_then(|r| r)
    .map_err(|e| format!("{name}: {e}"))
}

/// `read <disk> <lba> [count]`.
fn read(args: &[&str]) -> Result<String, String> {
    let (name, lba, count) = match args {
        [name, lba] => (*name, *lba, "1"),
        [name, lba, count] => (*name, *lba, *count),
        _ => return Err("usage: read <disk> <lba> [count]".into()),
    };
    let lba: u64 = lba
        .parse()
        .map_err(|_| format!("not a block number: {lba}"))?;
    let count: u64 = count
        .parse()
        .map_err(|_| format!("not a block count: {count}"))?;
    let mut data = Vec::new();
    read_disk(name, lba, count, &mut data)?;
    let mut text = format!(
        "{name}: blocks {lba}..{} ({} bytes) fnv1a={:016x}",
        lba + count,
        data.len(),
        fnv1a(&data)
    );
    block::hexdump(&mut text, &data[..64.min(data.len())]);
    Ok(text)
}

/// `nvme read <lba> [nsid]` on every bound NVMe controller, through the driver's own command,
/// each answer prefixed with the disk it read.
fn nvme_read(rest: &[&str]) -> Result<String, String> {
    let mut args = vec!["read"];
    args.extend_from_slice(rest);
    let nsid: Option<u32> = rest.get(1).and_then(|n| n.parse().ok());
    let disks = DISKS.list();
    let mut controllers: Vec<pci::Address> = crate::bus::bound_addresses("nvme");
    controllers.sort();
    let (mut answers, mut failed) = (Vec::new(), false);
    for address in controllers {
        // The disk the driver reads: the namespace asked for, or the controller's first.
        let name = disks
            .iter()
            .filter(|d| d.address == address)
            .find(|d| match (nsid, d.info.kind) {
                (Some(n), block::DiskKind::Nvme { namespace }) => n == namespace,
                _ => true,
            })
            .map_or_else(|| format!("nvme at {address}"), |d| d.name.clone());
        let answer = crate::bus::on_driver(address, |bound| bound.command(&args))
            .ok_or_else(|| format!("{address} is no longer bound"))
            .and_then(|r| r)
            .and_then(|r| r.ok_or_else(|| "usage: nvme read <lba> [nsid]".into()))
            .and_then(|r| r);
        match answer {
            Ok(text) => answers.push(format!("{name} ({address}): {text}")),
            Err(e) => {
                failed = true;
                answers.push(format!("{name} ({address}): {e}"));
            }
        }
    }
    let text = answers.join("\n");
    if failed { Err(text) } else { Ok(text) }
}
