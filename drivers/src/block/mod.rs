//! Block devices: one view of a disk, whichever driver serves it.
//!
//! Design note. A storage driver's bound state implements [`BlockDevices`]: it lists its
//! disks ([`DiskInfo`]: block size, block count, how much one request may carry, how many
//! requests it keeps in flight) and reads whole blocks into memory the caller owns. An NVMe
//! controller has one disk per active namespace, a virtio-blk device one.
//!
//! Reads reach the caller in one of two ways:
//!
//! - **Into any memory, one copy.** [`BlockDevices::read_blocks`] fills the caller's
//!   `&mut [u8]`s: the device writes into the driver's DMA staging memory (ordinary memory has
//!   no bus address a safe driver could hand out), and each completed command's bytes are
//!   copied once into their place.
//! - **Into the caller's DMA memory, no copy.** [`BlockDevices::dma_buffer`] makes a
//!   [`DmaBuffer`] for the disk's function that the *caller* owns; [`BlockDevices::read_dma`]
//!   takes [`DmaRequest`]s, each a [`DmaSlice`] of such a buffer, and the driver points the
//!   device's descriptors (NVMe PRPs, virtio descriptors) straight at them. The slices borrow
//!   the buffer exclusively for the call, so the caller reads the bytes only after the device
//!   is done with them. A slice of a buffer made for another function is refused with an
//!   error before anything is submitted.
//!
//! Both forms take many requests and keep up to `depth` *requests* in flight. A request
//! larger than one command is split ([`pieces`], [`dma_pieces`]) and its pieces are in
//! flight together ([`commands_in_flight`]): at depth 1 a 1 MiB read on a controller that
//! takes 512 KiB per command has both its commands in flight, as Linux's block layer does
//! with a split request. The device's queue bounds the commands in flight in every case.
//!
//! A caller's DMA buffer holds its function's claim, like every buffer made for it: while the
//! caller keeps one, the function is not free to be claimed again, so drop it before unbinding
//! and rebinding. Its memory returns to the frame allocator on `Drop`, or waits in the
//! function's quarantine until bus mastering is off; a leak costs its frames and keeps the
//! function claimed.
//!
//! Ownership: the trait is implemented by the driver's bound state and borrowed only for
//! the length of one call. Nothing here holds a disk: the kernel's registry of disks keeps
//! names and the PCI address of the binding, and reaches the disk through the bus for each
//! request, so unbinding (dropping the state) is all it takes for a disk to go away.
//!
//! The registry ([`DISKS`]) names the disks: `nvme0n1`, `nvme0n2` (controller number,
//! namespace identifier), `vda`, `vdb`. A driver registers its disks at the end of a
//! successful probe and keeps the [`Registration`] in its bound state; dropping the state
//! (unbinding, a failed probe unwinding, a contained panic) drops the registration, which
//! removes the names. The registry holds names, the PCI address and the disk's index, never
//! the disk: whoever reads finds the driver through the bus by address, and a disk that was
//! unbound meanwhile is simply not found. Numbers are the lowest free ones, so a controller
//! unbound and bound again gets its old name back when nothing took it meanwhile.
//!
//! [`Tracker`] is the command-identifier table both drivers use to match completions to
//! requests: a completion naming an identifier not in flight is a device error.
//!
//! Here: the view itself (the trait, requests, the checks); `registry` (the names),
//! `split` (requests into device commands), `tracker` (identifiers in flight).

mod registry;
mod split;
mod tracker;

pub use registry::{DISKS, Disk, Registration, Registry};
pub use split::{DmaPiece, Piece, commands_in_flight, dma_pieces, pieces};
pub use tracker::Tracker;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use pci::window::{DmaBuffer, DmaSlice};

/// The largest request a driver carries as one device command (a driver may allow less:
/// NVMe's MDTS, virtio-blk's segment limits).
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;

/// Which driver's naming a disk follows (the kernel's registry turns it into `nvme0n1`,
/// `vda`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskKind {
    /// An NVMe namespace.
    Nvme {
        /// Namespace identifier (NSID).
        namespace: u32,
    },
    /// A virtio-blk device.
    Virtio,
}

/// What a disk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Its kind, for naming.
    pub kind: DiskKind,
    /// Logical block size in bytes: every request is a whole number of blocks.
    pub block_size: u32,
    /// Number of logical blocks.
    pub blocks: u64,
    /// Bytes one device command carries at most (larger requests are split).
    pub max_command: u64,
    /// Device commands the driver keeps in flight at most.
    pub max_depth: usize,
}

impl DiskInfo {
    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}

/// One read: whole blocks from `lba` into `data`.
#[derive(Debug)]
pub struct Request<'a> {
    /// First logical block.
    pub lba: u64,
    /// Where the blocks go; its length is a whole number of blocks.
    pub data: &'a mut [u8],
}

/// One read into the caller's DMA memory: whole blocks from `lba` into `data`, which the
/// device writes directly ([`BlockDevices::read_dma`]).
#[derive(Debug)]
pub struct DmaRequest<'a> {
    /// First logical block.
    pub lba: u64,
    /// Where the blocks go: part of a buffer from [`BlockDevices::dma_buffer`] for the same
    /// disk; its length is a whole number of blocks.
    pub data: DmaSlice<'a>,
}

/// A driver's disks.
pub trait BlockDevices {
    /// The disks, in a stable order: `disk` arguments index this list.
    fn disks(&self) -> Vec<DiskInfo>;

    /// Reads every request, with up to `depth` requests in flight (1: one at a time; the
    /// pieces of a request larger than one command are in flight together). Requests are checked before anything is submitted; on an error, the data of
    /// requests that failed or were not reached is unspecified.
    fn read_blocks(
        &mut self,
        disk: usize,
        requests: &mut [Request<'_>],
        depth: usize,
    ) -> Result<(), String>;

    /// A zeroed DMA buffer of at least `bytes` bytes that `disk`'s device can write into, owned
    /// by the caller (see the module documentation for what holding one means).
    fn dma_buffer(&self, disk: usize, bytes: u64) -> Result<DmaBuffer, String>;

    /// Reads every request straight into the caller's DMA memory, with up to `depth`
    /// requests in flight (a request's pieces together). Requests are checked before
    /// anything is submitted (whole blocks, inside the disk, a buffer made for this disk's
    /// function); on an error, the data of requests that failed or were not reached is
    /// unspecified. When the call returns the device no longer writes the memory: an error
    /// with requests still in flight resets the device first (a device that ignores its
    /// reset is named in the error).
    fn read_dma(
        &mut self,
        disk: usize,
        requests: &mut [DmaRequest<'_>],
        depth: usize,
    ) -> Result<(), String>;

    /// Reads `out.len()` bytes (whole blocks) from `lba`, its commands in flight together.
    fn read(&mut self, disk: usize, lba: u64, out: &mut [u8]) -> Result<(), String> {
        let depth = self.disks().get(disk).map_or(1, |d| d.max_depth).max(1);
        self.read_blocks(disk, &mut [Request { lba, data: out }], depth)
    }
}

/// Checks requests against a disk: whole blocks, not empty, inside the disk.
pub fn check(info: &DiskInfo, requests: &[Request<'_>]) -> Result<(), String> {
    check_spans(info, requests.iter().map(|r| (r.lba, r.data.len() as u64)))
}

/// [`check`] for reads into DMA memory; also that every slice's buffer was made for `master`
/// (the disk's function).
pub fn check_dma(
    info: &DiskInfo,
    master: &pci::function::BusMaster,
    requests: &[DmaRequest<'_>],
) -> Result<(), String> {
    if let Some(r) = requests.iter().find(|r| !r.data.made_for(master)) {
        return Err(format!(
            "the DMA buffer for block {} was made for another device",
            r.lba
        ));
    }
    check_spans(info, requests.iter().map(|r| (r.lba, r.data.len())))
}

/// Whole blocks, not empty, inside the disk, for each (first block, bytes).
fn check_spans(info: &DiskInfo, spans: impl Iterator<Item = (u64, u64)>) -> Result<(), String> {
    let size = u64::from(info.block_size);
    for (lba, bytes) in spans {
        if bytes == 0 || !bytes.is_multiple_of(size) {
            return Err(format!(
                "{bytes} bytes is not a whole number of {size}-byte blocks"
            ));
        }
        let blocks = bytes / size;
        if lba.checked_add(blocks).is_none_or(|end| end > info.blocks) {
            return Err(format!(
                "blocks {}..{} outside the disk ({} blocks)",
                lba,
                lba.saturating_add(blocks),
                info.blocks
            ));
        }
    }
    Ok(())
}

/// Appends `bytes` as hex rows of 16 (`\n0000: 00 01 ...`), as the console shows blocks.
pub fn hexdump(text: &mut String, bytes: &[u8]) {
    use core::fmt::Write as _;
    for (i, row) in bytes.chunks(16).enumerate() {
        let _ = write!(text, "\n{:04x}:", i * 16);
        for b in row {
            let _ = write!(text, " {b:02x}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn disk() -> DiskInfo {
        DiskInfo {
            kind: DiskKind::Virtio,
            block_size: 4096,
            blocks: 100,
            max_command: 16384,
            max_depth: 8,
        }
    }

    #[test]
    fn requests_are_whole_blocks_inside_the_disk() {
        let info = disk();
        let mut a = vec![0u8; 8192];
        let mut b = vec![0u8; 512];
        assert!(
            check(
                &info,
                &[Request {
                    lba: 98,
                    data: &mut a
                }]
            )
            .is_ok()
        );
        let e = check(
            &info,
            &[Request {
                lba: 99,
                data: &mut a,
            }],
        )
        .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let e = check(
            &info,
            &[Request {
                lba: 0,
                data: &mut b,
            }],
        )
        .unwrap_err();
        assert!(e.contains("whole number of 4096-byte blocks"), "{e}");
        let e = check(
            &info,
            &[Request {
                lba: 0,
                data: &mut [],
            }],
        )
        .unwrap_err();
        assert!(e.contains("0 bytes"), "{e}");
        let e = check(
            &info,
            &[Request {
                lba: u64::MAX,
                data: &mut a,
            }],
        )
        .unwrap_err();
        assert!(e.contains("outside"), "{e}");
    }

    #[test]
    fn dma_requests_split_and_are_checked_against_their_function() {
        let function = pci::fake::irq::function_with_msix(4);
        let master = function.bus_master();
        let other = pci::fake::irq::function_with_msix(4);
        let mut buffer = master.dma_buffer(40960 + 4096).unwrap();
        let mut stranger = other.bus_master().dma_buffer(4096).unwrap();
        let info = disk();
        let (a, rest) = buffer.slice().split_at(40960).unwrap();
        let mut requests = [
            DmaRequest { lba: 10, data: a },
            DmaRequest { lba: 3, data: rest },
        ];
        assert!(check_dma(&info, &master, &requests).is_ok());
        let p = dma_pieces(&mut requests, 4096, 16384);
        let shape: Vec<(u64, u64, u64)> = p
            .iter()
            .map(|p| (p.lba, p.data.offset(), p.data.len()))
            .collect();
        assert_eq!(
            shape,
            [
                (10, 0, 16384),
                (14, 16384, 16384),
                (18, 32768, 8192),
                (3, 40960, 4096)
            ]
        );
        drop(p);
        requests[1].lba = 100;
        let e = check_dma(&info, &master, &requests).unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let foreign = [DmaRequest {
            lba: 0,
            data: stranger.slice(),
        }];
        let e = check_dma(&info, &master, &foreign).unwrap_err();
        assert!(e.contains("another device"), "{e}");
    }

    pub(crate) fn address(device: u8) -> pci::Address {
        pci::Address::new(0, 0, device, 0).unwrap()
    }

    pub(crate) fn nvme(namespace: u32) -> DiskInfo {
        DiskInfo {
            kind: DiskKind::Nvme { namespace },
            ..disk()
        }
    }

    #[test]
    fn hexdump_rows() {
        let mut text = String::from("x");
        hexdump(&mut text, &(0u8..18).collect::<Vec<u8>>());
        assert_eq!(
            text,
            "x\n0000: 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f\n0010: 10 11"
        );
    }
}
