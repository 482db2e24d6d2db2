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

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use pci::window::{DmaBuffer, DmaSlice};
use spin::Mutex;

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
    /// requests in flight (a request's pieces together). Requests are checked before anything is submitted (whole blocks,
    /// inside the disk, a buffer made for this disk's function); on an error, the data of
    /// requests that failed or were not reached is unspecified.
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

/// A named disk in the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// `nvme0n1`, `vda`, ...
    pub name: String,
    /// The driver serving it.
    pub driver: &'static str,
    /// The function it is on.
    pub address: pci::Address,
    /// Its index in the driver's [`BlockDevices::disks`].
    pub index: usize,
    /// What it is.
    pub info: DiskInfo,
}

/// The names of the disks of bound drivers.
pub struct Registry {
    disks: Mutex<Vec<Disk>>,
}

/// The registry the drivers register with.
pub static DISKS: Registry = Registry::new();

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry.
    pub const fn new() -> Registry {
        Registry {
            disks: Mutex::new(Vec::new()),
        }
    }

    /// Names `disks` (the driver's list, in its order) of `driver` at `address`. Whatever
    /// was registered for `address` before is replaced. The names live until the returned
    /// registration drops.
    pub fn register(
        &'static self,
        driver: &'static str,
        address: pci::Address,
        disks: &[DiskInfo],
    ) -> Registration {
        let mut list = self.disks.lock();
        list.retain(|d| d.address != address);
        for (index, info) in disks.iter().enumerate() {
            let name = name_for(&list, address, info.kind);
            list.push(Disk {
                name,
                driver,
                address,
                index,
                info: *info,
            });
        }
        // Room for exactly what is listed: the registry's heap then depends only on the
        // disks registered, so unbinding brings the heap back to where it was byte for byte.
        list.shrink_to_fit();
        Registration {
            registry: self,
            address,
        }
    }

    /// Every disk, by name.
    pub fn list(&self) -> Vec<Disk> {
        let mut list = self.disks.lock().clone();
        list.sort_by_key(|d| natural(&d.name));
        list
    }

    /// The disk called `name`.
    pub fn find(&self, name: &str) -> Option<Disk> {
        self.disks.lock().iter().find(|d| d.name == name).cloned()
    }

    fn unregister(&self, address: pci::Address) {
        let mut list = self.disks.lock();
        list.retain(|d| d.address != address);
        list.shrink_to_fit();
    }
}

/// A sort key that puts `nvme2n1` before `nvme10n1`: letters, then numbers by value.
fn natural(name: &str) -> (usize, String, Vec<u64>) {
    let letters: String = name.chars().take_while(|c| !c.is_ascii_digit()).collect();
    let numbers = name
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    (letters.len(), letters, numbers)
}

/// The name of a new disk of `kind` at `address`, given the disks named so far: an NVMe
/// namespace takes its controller's number (the lowest free one for a new controller) and
/// its NSID; a virtio-blk disk the lowest free letters (`vda` .. `vdz`, `vdaa` ..).
fn name_for(list: &[Disk], address: pci::Address, kind: DiskKind) -> String {
    match kind {
        DiskKind::Nvme { namespace } => {
            let number_of = |d: &Disk| {
                d.name
                    .strip_prefix("nvme")
                    .and_then(|r| r.split('n').next())
                    .and_then(|n| n.parse::<u32>().ok())
            };
            let controller = list
                .iter()
                .filter(|d| d.address == address)
                .find_map(number_of)
                .unwrap_or_else(|| {
                    let used: Vec<u32> = list.iter().filter_map(number_of).collect();
                    (0..).find(|n| !used.contains(n)).unwrap_or(0)
                });
            format!("nvme{controller}n{namespace}")
        }
        DiskKind::Virtio => {
            let used: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
            (0..)
                .map(|i| format!("vd{}", letters(i)))
                .find(|n| !used.contains(&n.as_str()))
                .unwrap_or_default()
        }
    }
}

/// 0 -> `a`, 25 -> `z`, 26 -> `aa` (as Linux names its disks).
fn letters(mut i: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// A driver's disks' names in the registry. Owned by the driver's bound state; `Drop`
/// removes the names (the disks themselves belong to the driver, never to the registry).
/// A leak keeps stale names that lead nowhere: a read through them finds no driver at the
/// address, or a driver without that disk.
pub struct Registration {
    registry: &'static Registry,
    address: pci::Address,
}

impl core::fmt::Debug for Registration {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Registration({})", self.address)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister(self.address);
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

/// One device command's share of a request: `data.len()` bytes from block `lba`.
#[derive(Debug)]
pub struct Piece<'a> {
    /// First logical block.
    pub lba: u64,
    /// The caller's bytes for it.
    pub data: &'a mut [u8],
}

/// Splits checked requests into pieces of at most `max_command` bytes (a multiple of
/// `block_size`), in order.
pub fn pieces<'a>(
    requests: &'a mut [Request<'_>],
    block_size: u32,
    max_command: u64,
) -> Vec<Piece<'a>> {
    let size = u64::from(block_size);
    let step = (max_command / size).max(1) * size;
    let mut out = Vec::new();
    for r in requests.iter_mut() {
        let mut lba = r.lba;
        for data in r.data.chunks_mut(step as usize) {
            let blocks = data.len() as u64 / size;
            out.push(Piece { lba, data });
            lba += blocks;
        }
    }
    out
}

/// Device commands to keep in flight so that `depth` requests are: `depth` times the most
/// pieces any request of `lengths` (bytes) splits into at `max_command` bytes per command
/// (see [`pieces`]), at least 1. The caller bounds it by its queue's size.
pub fn commands_in_flight(
    depth: usize,
    lengths: impl IntoIterator<Item = u64>,
    block_size: u32,
    max_command: u64,
) -> usize {
    let step = (max_command / u64::from(block_size)).max(1) * u64::from(block_size);
    let most = lengths
        .into_iter()
        .map(|bytes| bytes.div_ceil(step))
        .max()
        .unwrap_or(1)
        .max(1);
    depth
        .max(1)
        .saturating_mul(usize::try_from(most).unwrap_or(usize::MAX))
}

/// One device command's share of a [`DmaRequest`]: `data.len()` bytes from block `lba`.
#[derive(Debug)]
pub struct DmaPiece<'a> {
    /// First logical block.
    pub lba: u64,
    /// The part of the caller's DMA memory for it.
    pub data: DmaSlice<'a>,
}

/// [`pieces`] for reads into DMA memory: each checked request's slice split into parts of at
/// most `max_command` bytes (a multiple of `block_size`), in order.
pub fn dma_pieces<'a>(
    requests: &'a mut [DmaRequest<'_>],
    block_size: u32,
    max_command: u64,
) -> Vec<DmaPiece<'a>> {
    let size = u64::from(block_size);
    let step = (max_command / size).max(1) * size;
    let mut out = Vec::new();
    for r in requests.iter_mut() {
        let mut lba = r.lba;
        for data in r.data.reborrow().chunks(step) {
            let blocks = data.len() / size;
            out.push(DmaPiece { lba, data });
            lba += blocks;
        }
    }
    out
}

/// Command identifiers in flight: the lowest free one is handed out, and a completion must
/// name one that is in flight. Each carries a tag (the driver's index of the piece).
#[derive(Clone, Debug)]
pub struct Tracker {
    busy: Vec<Option<usize>>,
    in_flight: usize,
}

impl Tracker {
    /// A table of `ids` identifiers (0 to `ids - 1`).
    pub fn new(ids: usize) -> Tracker {
        Tracker {
            busy: vec![None; ids],
            in_flight: 0,
        }
    }

    /// Identifiers in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Takes the lowest free identifier for `tag`; `None` when all are in flight.
    pub fn start(&mut self, tag: usize) -> Option<u16> {
        let id = self.busy.iter().position(Option::is_none)?;
        self.busy[id] = Some(tag);
        self.in_flight += 1;
        Some(id as u16)
    }

    /// Ends identifier `id`; its tag, or an error when it was not in flight.
    pub fn finish(&mut self, id: u16) -> Result<usize, String> {
        let tag = self
            .busy
            .get_mut(usize::from(id))
            .and_then(Option::take)
            .ok_or_else(|| format!("completion for command {id}, which is not in flight"))?;
        self.in_flight -= 1;
        Ok(tag)
    }

    /// Forgets everything in flight (after the device was reset or declared broken).
    pub fn clear(&mut self) {
        self.busy.iter_mut().for_each(|b| *b = None);
        self.in_flight = 0;
    }
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
mod tests {
    use super::*;

    fn disk() -> DiskInfo {
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
    fn requests_split_into_commands_in_order() {
        let mut a = vec![1u8; 40960];
        let mut b = vec![2u8; 4096];
        let mut requests = [
            Request {
                lba: 10,
                data: &mut a,
            },
            Request {
                lba: 3,
                data: &mut b,
            },
        ];
        let p = pieces(&mut requests, 4096, 16384);
        let shape: Vec<(u64, usize)> = p.iter().map(|p| (p.lba, p.data.len())).collect();
        assert_eq!(
            shape,
            [(10, 16384), (14, 16384), (18, 8192), (3, 4096)],
            "10 blocks in commands of 4, then the second request"
        );
        // A limit below one block still moves a block per command.
        let p = pieces(&mut requests, 4096, 1000);
        assert_eq!(p.len(), 11);
    }

    #[test]
    fn depth_counts_requests_and_a_requests_pieces_fly_together() {
        // Depth 1, one 1 MiB request, 512 KiB commands: both pieces in flight.
        assert_eq!(commands_in_flight(1, [1 << 20], 512, 512 << 10), 2);
        // The same count as `pieces` makes, for each request shape.
        for (len, max) in [
            (40960u64, 16384u64),
            (4096, 16384),
            (40960, 1000),
            (4096, 4096),
        ] {
            let mut a = vec![0u8; len as usize];
            let mut requests = [Request {
                lba: 0,
                data: &mut a,
            }];
            let n = pieces(&mut requests, 4096, max).len();
            assert_eq!(commands_in_flight(1, [len], 4096, max), n, "{len} by {max}");
            assert_eq!(commands_in_flight(32, [len], 4096, max), 32 * n);
        }
        // The largest request sets the count; no requests or depth 0 still mean one.
        assert_eq!(commands_in_flight(3, [4096, 65536, 8192], 4096, 16384), 12);
        assert_eq!(commands_in_flight(0, [], 4096, 16384), 1);
        assert_eq!(
            commands_in_flight(usize::MAX, [1 << 20], 512, 512),
            usize::MAX
        );
    }

    #[test]
    fn pieces_write_into_the_callers_buffer() {
        let mut a = vec![0u8; 8192];
        {
            let mut requests = [Request {
                lba: 0,
                data: &mut a,
            }];
            let mut p = pieces(&mut requests, 512, 4096);
            p[1].data.fill(7);
        }
        assert!(a[..4096].iter().all(|&b| b == 0));
        assert!(a[4096..].iter().all(|&b| b == 7));
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

    fn address(device: u8) -> pci::Address {
        pci::Address::new(0, 0, device, 0).unwrap()
    }

    fn nvme(namespace: u32) -> DiskInfo {
        DiskInfo {
            kind: DiskKind::Nvme { namespace },
            ..disk()
        }
    }

    #[test]
    fn disks_are_named_and_go_with_their_registration() {
        let registry: &'static Registry =
            alloc::boxed::Box::leak(alloc::boxed::Box::new(Registry::new()));
        let a = registry.register("nvme", address(4), &[nvme(1), nvme(2)]);
        let b = registry.register("nvme", address(5), &[nvme(1)]);
        let v = registry.register("virtio-blk", address(6), &[disk()]);
        let w = registry.register("virtio-blk", address(7), &[disk()]);
        let names = |r: &Registry| r.list().into_iter().map(|d| d.name).collect::<Vec<_>>();
        assert_eq!(
            names(registry),
            ["vda", "vdb", "nvme0n1", "nvme0n2", "nvme1n1"]
        );
        let d = registry.find("nvme0n2").unwrap();
        assert_eq!((d.driver, d.address, d.index), ("nvme", address(4), 1));
        // Unbinding the first controller frees its number; the next controller takes it.
        drop(a);
        assert!(registry.find("nvme0n1").is_none());
        let c = registry.register("nvme", address(8), &[nvme(3)]);
        assert_eq!(registry.find("nvme0n3").unwrap().address, address(8));
        drop(v);
        let x = registry.register("virtio-blk", address(9), &[disk()]);
        assert_eq!(registry.find("vda").unwrap().address, address(9));
        drop((b, c, w, x));
        assert!(registry.list().is_empty());
    }

    #[test]
    fn names_sort_naturally_and_letters_continue() {
        assert!(natural("nvme2n1") < natural("nvme10n1"));
        assert!(natural("nvme0n2") < natural("nvme0n10"));
        assert!(natural("vdz") < natural("nvme0n1"));
        assert_eq!(
            (letters(0), letters(25), letters(26), letters(27)),
            ("a".into(), "z".into(), "aa".into(), "ab".into())
        );
        assert_eq!(letters(26 + 26 * 26), "aaa");
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

    #[test]
    fn identifiers_are_tracked() {
        let mut t = Tracker::new(4);
        assert_eq!(t.start(10), Some(0));
        assert_eq!(t.start(11), Some(1));
        assert_eq!(t.start(12), Some(2));
        assert_eq!(t.finish(1), Ok(11));
        assert_eq!(t.in_flight(), 2);
        // The lowest free identifier comes back first.
        assert_eq!(t.start(13), Some(1));
        assert_eq!(t.start(14), Some(3));
        assert_eq!(t.start(15), None, "all four in flight");
        // A completion twice, or for an identifier never used, is refused.
        assert_eq!(t.finish(3), Ok(14));
        assert!(t.finish(3).unwrap_err().contains("not in flight"));
        assert!(t.finish(9).is_err());
        assert_eq!(t.in_flight(), 3);
        t.clear();
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.start(0), Some(0));
    }
}
