//! Split virtqueues (§2.6): the descriptor table, the available and used rings, the free
//! list of descriptors, the DMA buffer requests point into, and setting a queue up on the
//! device (§4.1.5.1.3).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering, fence};

use pci::function::BusMaster;
use pci::window::{DmaBuffer, DmaSlice};

use super::transport::*;
use super::{QueueSpec, Routing, VirtioPci, queue_vector};

// Descriptor flags (§2.6.5).
const DESC_F_NEXT: u32 = 1;
const DESC_F_WRITE: u32 = 2;

/// A part of a request: a byte range of the queue's buffer, of another DMA buffer of the same
/// function that the driver owns (a block driver's staging slot), or of a slice of the
/// caller's DMA memory ([`DmaSlice`]); and who writes it.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// The memory the offset is in.
    pub memory: Memory<'a>,
    /// Offset in that memory.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes it (VIRTQ_DESC_F_WRITE), else it reads it.
    pub device_writes: bool,
}

/// Which memory a [`Segment`] is in.
#[derive(Clone, Copy, Debug)]
pub enum Memory<'a> {
    /// The queue's own buffer.
    Queue,
    /// A DMA buffer of the same function the driver owns.
    Buffer(&'a DmaBuffer),
    /// A slice of a DMA buffer of the same function, lent by the caller for this request.
    Slice(&'a DmaSlice<'a>),
}

impl Segment<'static> {
    /// A range of the queue's buffer the device reads.
    pub const fn reads(offset: u64, len: u32) -> Segment<'static> {
        Segment {
            memory: Memory::Queue,
            offset,
            len,
            device_writes: false,
        }
    }

    /// A range of the queue's buffer the device writes.
    pub const fn writes(offset: u64, len: u32) -> Segment<'static> {
        Segment {
            memory: Memory::Queue,
            offset,
            len,
            device_writes: true,
        }
    }
}

impl<'a> Segment<'a> {
    /// A range of `buffer` (a DMA buffer of the same function, which must stay allocated
    /// until the device has returned the chain or was reset).
    pub const fn of(
        buffer: &'a DmaBuffer,
        offset: u64,
        len: u32,
        device_writes: bool,
    ) -> Segment<'a> {
        Segment {
            memory: Memory::Buffer(buffer),
            offset,
            len,
            device_writes,
        }
    }

    /// A range of `slice` (its buffer made for the same function; the slice stays borrowed
    /// until the driver has taken the chain back or the device was reset).
    pub const fn in_slice(
        slice: &'a DmaSlice<'a>,
        offset: u64,
        len: u32,
        device_writes: bool,
    ) -> Segment<'a> {
        Segment {
            memory: Memory::Slice(slice),
            offset,
            len,
            device_writes,
        }
    }
}

/// A completed request, taken from the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// Head descriptor of the chain (what [`Virtqueue::add`] returned).
    pub head: u16,
    /// Bytes the device wrote into the chain's device-writable segments.
    pub len: u32,
    /// Offset of the chain's first segment in the queue's buffer.
    pub offset: u64,
}

/// One split virtqueue (§2.6) and the DMA buffer its requests use.
///
/// Owns two DMA buffers: `ring` (descriptor table at 0, available ring after it, used ring
/// after that at 4-byte alignment, §2.6: alignments 16, 2 and 4) and `buffers`, which every
/// [`Segment`] points into. Both are freed when the queue drops, so it may only drop after
/// its device was reset: [`VirtioPci`] guarantees that, and the type cannot be built outside
/// this module.
///
/// The driver-side bookkeeping mirrors the descriptor table: `next[d]` is descriptor `d`'s
/// successor (in a chain in flight, or in the free list starting at `free_head`), and
/// `chain[h]` is the length of the chain headed by `h` while the device holds it (0
/// otherwise), so descriptors return to the free list exactly once and a used element naming
/// anything else is caught as a device error. `writable[h]` is how many bytes that chain lets
/// the device write: a used element saying it wrote more is a device error too.
#[derive(Debug)]
pub struct Virtqueue {
    pub(super) index: u16,
    size: u16,
    ring: DmaBuffer,
    buffers: DmaBuffer,
    avail: u64,
    used: u64,
    free_head: u16,
    free: u16,
    next: Vec<u16>,
    chain: Vec<u16>,
    writable: Vec<u32>,
    first_offset: Vec<u64>,
    avail_idx: u16,
    pub(super) last_used: u16,
    /// Bumped by the interrupt handler of the queue's vector.
    pub(super) interrupts: Arc<AtomicU64>,
    /// Interrupt count after which the used ring was last found empty.
    pub(super) seen: u64,
    /// Offset of the notification address in the notify structure's BAR.
    pub(super) notify_at: u32,
    /// MSI-X table entry, or [`NO_VECTOR`].
    pub(super) vector: u16,
}

/// Byte offsets of the available ring, the used ring, and the total ring size for `size`
/// entries (§2.6.2).
const fn ring_layout(size: u16) -> (u64, u64, u64) {
    let n = size as u64;
    let avail = 16 * n;
    let used = (avail + 6 + 2 * n).next_multiple_of(4);
    (avail, used, used + 6 + 8 * n)
}

impl Virtqueue {
    /// A queue of `size` entries (a power of two) with a `buffer_bytes` DMA buffer.
    fn new(
        master: &BusMaster,
        index: u16,
        size: u16,
        buffer_bytes: u64,
        interrupts: Arc<AtomicU64>,
    ) -> Result<Virtqueue, String> {
        assert!(
            size.is_power_of_two(),
            "split queue sizes are powers of two"
        );
        let (avail, used, total) = ring_layout(size);
        let ring = master
            .dma_buffer(total)
            .map_err(|e| format!("queue {index} rings: {e}"))?;
        let buffers = master
            .dma_buffer(buffer_bytes.max(1))
            .map_err(|e| format!("queue {index} buffers: {e}"))?;
        Ok(Virtqueue {
            index,
            size,
            ring,
            buffers,
            avail,
            used,
            free_head: 0,
            free: size,
            next: (1..=size).map(|i| i % size).collect(),
            chain: alloc::vec![0; usize::from(size)],
            writable: alloc::vec![0; usize::from(size)],
            first_offset: alloc::vec![0; usize::from(size)],
            avail_idx: 0,
            last_used: 0,
            interrupts,
            seen: 0,
            notify_at: 0,
            vector: NO_VECTOR,
        })
    }

    /// Queue index on the device.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Descriptors not in flight.
    pub fn free_descriptors(&self) -> u16 {
        self.free
    }

    /// The DMA buffer requests point into.
    pub fn buffers(&self) -> &DmaBuffer {
        &self.buffers
    }

    /// Interrupts counted for this queue.
    pub fn interrupts(&self) -> u64 {
        self.interrupts.load(Ordering::Acquire)
    }

    /// Makes `chain` available to the device (§2.6.13): descriptors from the free list, the
    /// head in the next available-ring slot, then the available index. Returns the head. The
    /// device is not told: see [`VirtioPci::notify`].
    pub fn add(&mut self, chain: &[Segment]) -> Result<u16, String> {
        let n = chain.len();
        if n == 0 || n > usize::from(self.free) {
            return Err(format!(
                "queue {}: {n} descriptor(s) asked, {} free",
                self.index, self.free
            ));
        }
        for s in chain {
            let len = match s.memory {
                Memory::Queue => self.buffers.len(),
                Memory::Buffer(b) => b.len(),
                Memory::Slice(b) => b.len(),
            };
            let inside = pci::range::checked_range(s.offset, u64::from(s.len), len);
            if s.len == 0 || inside.is_err() {
                return Err(format!(
                    "queue {}: segment {:#x}+{:#x} outside its {len:#x}-byte buffer",
                    self.index, s.offset, s.len,
                ));
            }
        }
        let head = self.free_head;
        let mut d = head;
        for (i, s) in chain.iter().enumerate() {
            let last = i + 1 == n;
            let at = 16 * u64::from(d);
            let address = match s.memory {
                Memory::Queue => self.buffers.bus_address_at(s.offset),
                Memory::Buffer(b) => b.bus_address_at(s.offset),
                Memory::Slice(b) => b.bus_address_at(s.offset),
            };
            self.ring.write_bus_address(at, address);
            self.ring.write32(at + 8, s.len);
            let mut flags = if s.device_writes { DESC_F_WRITE } else { 0 };
            let next = if last {
                0
            } else {
                flags |= DESC_F_NEXT;
                u32::from(self.next[usize::from(d)])
            };
            self.ring.write32(at + 12, flags | next << 16);
            if !last {
                d = self.next[usize::from(d)];
            }
        }
        // The free list continues after the chain's last descriptor.
        self.free_head = self.next[usize::from(d)];
        self.free -= n as u16;
        self.chain[usize::from(head)] = n as u16;
        // At most 2^16 segments of at most 2^32 - 1 bytes: saturated, it still bounds `len`.
        self.writable[usize::from(head)] = chain
            .iter()
            .filter(|s| s.device_writes)
            .fold(0u32, |sum, s| sum.saturating_add(s.len));
        self.first_offset[usize::from(head)] = chain[0].offset;
        // The ring entry (only the device's past reads could see this slot: bytes are fine),
        // then, once it is visible, the index that publishes it (one dword with the flags,
        // which stay 0: interrupts wanted).
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.ring.write8(slot, head as u8);
        self.ring.write8(slot + 1, (head >> 8) as u8);
        fence(Ordering::Release);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.ring
            .write32(self.avail, u32::from(self.avail_idx) << 16);
        Ok(head)
    }

    /// The device's used index.
    pub(super) fn used_idx(&self) -> u16 {
        (self.ring.read32(self.used) >> 16) as u16
    }

    /// Takes the next used element, if any (§2.6.8), and returns its descriptors to the free
    /// list. An element naming a descriptor that is not the head of a chain in flight, or
    /// saying the device wrote more bytes than the chain let it (§2.7.8.2: `len` is what the
    /// device wrote), is a device error.
    pub fn pop_used(&mut self) -> Result<Option<Used>, String> {
        let idx = self.used_idx();
        if idx == self.last_used {
            return Ok(None);
        }
        if idx.wrapping_sub(self.last_used) > self.size {
            return Err(format!(
                "queue {}: used index {idx} is more than {} ahead of {}",
                self.index, self.size, self.last_used
            ));
        }
        // The element is read only after the index that announced it.
        fence(Ordering::Acquire);
        let at = self.used + 4 + 8 * u64::from(self.last_used % self.size);
        let (id, len) = (self.ring.read32(at), self.ring.read32(at + 4));
        self.last_used = self.last_used.wrapping_add(1);
        let count = usize::try_from(id)
            .ok()
            .and_then(|i| self.chain.get(i).copied())
            .filter(|&c| c != 0)
            .ok_or_else(|| {
                format!(
                    "queue {}: device returned descriptor {id}, not a chain in flight",
                    self.index
                )
            })?;
        let head = id as u16;
        let writable = self.writable[usize::from(head)];
        if len > writable {
            return Err(format!(
                "queue {}: device says it wrote {len} bytes into chain {head}, which has {writable} writable",
                self.index
            ));
        }
        let mut tail = head;
        for _ in 1..count {
            tail = self.next[usize::from(tail)];
        }
        self.next[usize::from(tail)] = self.free_head;
        self.free_head = head;
        self.free += count;
        self.chain[usize::from(head)] = 0;
        Ok(Some(Used {
            head,
            len,
            offset: self.first_offset[usize::from(head)],
        }))
    }
}

impl VirtioPci {
    /// Queue `index`: select, size, rings, vector, notification offset, enable (§4.1.5.1.3).
    pub(super) fn setup_queue(
        &self,
        index: u16,
        spec: &QueueSpec,
        counter: Arc<AtomicU64>,
    ) -> Result<Virtqueue, String> {
        let f = self.irq().function();
        let t = &self.transport;
        t.common_write(f, QUEUE_SELECT, 2, u32::from(index));
        let offered = t.common_read(f, QUEUE_SIZE, 2) as u16;
        if offered == 0 {
            return Err(format!("queue {index} ({}) is not available", spec.name));
        }
        if t.common_read(f, QUEUE_ENABLE, 2) != 0 {
            return Err(format!("queue {index} is enabled before setup"));
        }
        // Split queues have power-of-two sizes; the driver may ask for fewer entries.
        let wanted = offered.min(spec.max_size).max(1);
        let size = 1u16 << (15 - wanted.leading_zeros());
        let master = self.master.as_ref().ok_or("bus mastering not set up")?;
        let mut queue = Virtqueue::new(master, index, size, spec.buffer_bytes, counter)?;
        t.common_write(f, QUEUE_SIZE, 2, u32::from(size));
        let ring = &queue.ring;
        t.common
            .write_bus_address(u64::from(QUEUE_DESC), ring.bus_address());
        t.common
            .write_bus_address(u64::from(QUEUE_DRIVER), ring.bus_address_at(queue.avail));
        t.common
            .write_bus_address(u64::from(QUEUE_DEVICE), ring.bus_address_at(queue.used));
        if let Routing::Msix(n) = self.routing {
            let vector = queue_vector(index, n);
            t.common_write(f, QUEUE_MSIX_VECTOR, 2, u32::from(vector));
            let got = t.common_read(f, QUEUE_MSIX_VECTOR, 2) as u16;
            if got != vector {
                return Err(format!(
                    "queue {index}: MSI-X entry {vector} refused (reads {got:#x})"
                ));
            }
            queue.vector = vector;
        }
        let notify_off = t.common_read(f, QUEUE_NOTIFY_OFF, 2);
        let n = t.caps.notify;
        let at = u64::from(notify_off) * u64::from(t.caps.notify_multiplier);
        // A 16-bit write: inside the structure and 2-aligned (the multiplier is even, §4.1.4.4).
        if at + 2 > u64::from(n.length) || !(u64::from(n.offset) + at).is_multiple_of(2) {
            return Err(format!(
                "queue {index}: notification offset {at:#x} outside the {:#x}-byte structure",
                n.length
            ));
        }
        queue.notify_at = n.offset + at as u32;
        t.common_write(f, QUEUE_ENABLE, 2, 1);
        Ok(queue)
    }
}

/// Copies `out.len()` bytes from `buffer` at `offset` (one bulk copy).
pub(crate) fn copy_from(buffer: &DmaBuffer, offset: u64, out: &mut [u8]) {
    buffer.read_bytes(offset, out);
}

/// Copies `data` into `buffer` at `offset` (one bulk copy).
pub(crate) fn copy_to(buffer: &DmaBuffer, offset: u64, data: &[u8]) {
    buffer.write_bytes(offset, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(size: u16) -> (BusMaster, Virtqueue) {
        let function = pci::fake::irq::function_with_msix(4);
        let master = function.bus_master();
        let q =
            Virtqueue::new(&master, 0, size, 4096, Arc::new(AtomicU64::new(0))).expect("fake DMA");
        (master, q)
    }

    /// The device's side: takes the next available head, returns it as used with `len`.
    fn device_completes(q: &Virtqueue, device_avail: &mut u16, device_used: &mut u16, len: u32) {
        let avail_idx = (q.ring.read32(q.avail) >> 16) as u16;
        assert_ne!(avail_idx, *device_avail, "nothing available");
        let slot = q.avail + 4 + 2 * u64::from(*device_avail % q.size);
        let head = u16::from(q.ring.read8(slot)) | u16::from(q.ring.read8(slot + 1)) << 8;
        *device_avail = device_avail.wrapping_add(1);
        let at = q.used + 4 + 8 * u64::from(*device_used % q.size);
        q.ring.write32(at, u32::from(head));
        q.ring.write32(at + 4, len);
        *device_used = device_used.wrapping_add(1);
        q.ring.write32(q.used, u32::from(*device_used) << 16);
    }

    #[test]
    fn layout_follows_the_alignment_rules() {
        assert_eq!(ring_layout(8), (128, 128 + 24, 152 + 6 + 64));
        let (avail, used, total) = ring_layout(256);
        assert_eq!(avail, 4096);
        assert!(used.is_multiple_of(4) && used >= avail + 6 + 512);
        assert_eq!(total, used + 6 + 2048);
    }

    #[test]
    fn descriptors_chain_and_come_back() {
        let (_f, mut q) = queue(8);
        let chain = [
            Segment::reads(0, 16),
            Segment::writes(512, 512),
            Segment::writes(16, 1),
        ];
        let head = q.add(&chain).unwrap();
        assert_eq!(q.free_descriptors(), 5);
        // Descriptor table: addresses, lengths, flags and next links as the spec lays out.
        let mut d = head;
        for (i, s) in chain.iter().enumerate() {
            let at = 16 * u64::from(d);
            let addr = u64::from(q.ring.read32(at)) | u64::from(q.ring.read32(at + 4)) << 32;
            assert_eq!(
                format!("{addr:x}"),
                format!("{:x}", q.buffers.bus_address_at(s.offset))
            );
            assert_eq!(q.ring.read32(at + 8), s.len);
            let flags_next = q.ring.read32(at + 12);
            let flags = flags_next & 0xffff;
            assert_eq!(flags & DESC_F_WRITE != 0, s.device_writes);
            assert_eq!(flags & DESC_F_NEXT != 0, i + 1 < chain.len());
            d = (flags_next >> 16) as u16;
        }
        let (mut da, mut du) = (0, 0);
        assert_eq!(q.pop_used().unwrap(), None);
        device_completes(&q, &mut da, &mut du, 513);
        let used = q.pop_used().unwrap().unwrap();
        assert_eq!((used.head, used.len, used.offset), (head, 513, 0));
        assert_eq!(q.free_descriptors(), 8);
        assert_eq!(q.pop_used().unwrap(), None);
    }

    #[test]
    fn a_request_chains_header_data_pages_and_status() {
        let function = pci::fake::irq::function_with_msix(4);
        let master = function.bus_master();
        let mut q = Virtqueue::new(&master, 0, 16, 4096, Arc::new(AtomicU64::new(0))).unwrap();
        let slot = master.dma_buffer(64 * 1024).unwrap();
        // A header, four 16 KiB data segments of another buffer, a status byte.
        let mut chain = alloc::vec![Segment::reads(0, 16)];
        for k in 0..4u64 {
            chain.push(Segment::of(&slot, k * 16384, 16384, true));
        }
        chain.push(Segment::writes(16, 1));
        let head = q.add(&chain).unwrap();
        assert_eq!(q.free_descriptors(), 10);
        let mut d = head;
        for (i, s) in chain.iter().enumerate() {
            let at = 16 * u64::from(d);
            let addr = u64::from(q.ring.read32(at)) | u64::from(q.ring.read32(at + 4)) << 32;
            let want = match s.memory {
                Memory::Queue => q.buffers.bus_address_at(s.offset),
                Memory::Buffer(b) => b.bus_address_at(s.offset),
                Memory::Slice(b) => b.bus_address_at(s.offset),
            };
            assert_eq!(format!("{addr:x}"), format!("{want:x}"), "descriptor {i}");
            assert_eq!(q.ring.read32(at + 8), s.len);
            let flags_next = q.ring.read32(at + 12);
            assert_eq!(flags_next & DESC_F_WRITE != 0, s.device_writes);
            assert_eq!(flags_next & DESC_F_NEXT != 0, i + 1 < chain.len());
            d = (flags_next >> 16) as u16;
        }
        // Past the end of the other buffer: refused before anything is written.
        let bad = [Segment::of(&slot, 60 * 1024, 8192, true)];
        assert!(q.add(&bad).unwrap_err().contains("outside"));
        assert_eq!(q.free_descriptors(), 10);
    }

    #[test]
    fn indices_wrap_past_u16() {
        let (_f, mut q) = queue(4);
        let (mut da, mut du) = (0u16, 0u16);
        for i in 0..70_000u32 {
            let n = 1 + (i % 3) as usize;
            let chain: Vec<Segment> = (0..n).map(|k| Segment::writes(64 * k as u64, 8)).collect();
            let head = q.add(&chain).unwrap();
            let len = i % (8 * n as u32 + 1);
            device_completes(&q, &mut da, &mut du, len);
            let used = q.pop_used().unwrap().unwrap();
            assert_eq!((used.head, used.len), (head, len));
            assert_eq!(q.free_descriptors(), 4);
        }
    }

    #[test]
    fn a_used_length_beyond_the_chain_is_a_device_error() {
        // Chains refused as used stay the device's (the queue is no longer trusted): 8
        // descriptors for the four chains below.
        let (_f, mut q) = queue(8);
        let (mut da, mut du) = (0, 0);
        // 8 writable bytes: 8 is fine, 9 and 0xffff_ffff are not.
        q.add(&[Segment::reads(0, 16), Segment::writes(16, 8)])
            .unwrap();
        device_completes(&q, &mut da, &mut du, 8);
        assert_eq!(q.pop_used().unwrap().unwrap().len, 8);
        for len in [9, u32::MAX] {
            q.add(&[Segment::reads(0, 16), Segment::writes(16, 8)])
                .unwrap();
            device_completes(&q, &mut da, &mut du, len);
            let e = q.pop_used().unwrap_err();
            assert!(e.contains(&format!("wrote {len} bytes")), "{e}");
        }
        // A chain the device only reads: any length but 0 is an error.
        q.add(&[Segment::reads(0, 16)]).unwrap();
        device_completes(&q, &mut da, &mut du, 1);
        assert!(q.pop_used().is_err());
    }

    #[test]
    fn full_queue_and_bad_segments_are_refused() {
        let (_f, mut q) = queue(4);
        assert!(
            q.add(&[Segment::reads(4090, 8)]).is_err(),
            "outside the buffer"
        );
        assert!(q.add(&[Segment::reads(0, 0)]).is_err(), "empty segment");
        assert!(q.add(&[]).is_err());
        q.add(&[
            Segment::reads(0, 8),
            Segment::reads(8, 8),
            Segment::reads(16, 8),
        ])
        .unwrap();
        assert!(
            q.add(&[Segment::reads(0, 8), Segment::reads(8, 8)])
                .is_err()
        );
        q.add(&[Segment::reads(0, 8)]).unwrap();
        assert!(q.add(&[Segment::reads(0, 8)]).is_err());
    }

    #[test]
    fn a_used_element_naming_no_chain_is_a_device_error() {
        let (_f, mut q) = queue(4);
        let head = q
            .add(&[Segment::reads(0, 8), Segment::reads(8, 8)])
            .unwrap();
        // The device names the chain's second descriptor instead of its head.
        let second = q.next[usize::from(head)];
        q.ring.write32(q.used + 4, u32::from(second));
        q.ring.write32(q.used, 1 << 16);
        assert!(q.pop_used().is_err());
        // And an index far ahead of what was made available.
        q.ring.write32(q.used, 100 << 16);
        assert!(q.pop_used().is_err());
    }
}
