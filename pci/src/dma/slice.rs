//! Parts of a DMA buffer lent out for one transfer each.
//!
//! Design note. A [`DmaSlice`] is a range of a [`DmaBuffer`] borrowed exclusively: it is made
//! from `&mut DmaBuffer` ([`DmaBuffer::slice`]), and splitting it ([`DmaSlice::split_at`],
//! [`DmaSlice::chunks`]) gives disjoint parts, as `split_at_mut` does for a `&mut [u8]`. This is
//! how memory the *caller* owns reaches a device without a copy: a reader makes a buffer for
//! the function (through its driver), cuts it into one slice per request, and the driver
//! points the device's descriptors (NVMe PRPs, virtio descriptors) at the slices' bus
//! addresses. While the slices live, the caller cannot touch the buffer, so it never reads
//! bytes a device is still writing through this API; once the driver returns, the borrow
//! ends and the bytes are the caller's to read.
//!
//! What the borrow does not cover is a device that keeps writing after the driver gave up on
//! it (a timeout). That is the same as for every DMA buffer here: the buffer's memory is not
//! reused while the function can master the bus (a dropped buffer waits in the function's
//! quarantine), and the driver that timed out refuses further work until it is rebound.
//!
//! A slice is handed only to the function its buffer was made for
//! ([`DmaSlice::made_for`] says whether it was; [`BusAddr`] panics otherwise), since another
//! device could write into it after this one's bus mastering, which alone holds the memory
//! back from reuse, is off.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use super::{BusAddr, DmaBuffer};
use crate::function::BusMaster;

/// An exclusively borrowed range of a [`DmaBuffer`] (see the module documentation).
///
/// Disjoint by construction: two slices of one buffer never overlap, and the buffer cannot be
/// read or written while one lives.
///
/// ```compile_fail,E0502
/// # use pci::fake::irq::function_with_msix;
/// let function = function_with_msix(4);
/// let master = function.bus_master();
/// let mut buffer = master.dma_buffer(8192).unwrap();
/// let slice = buffer.slice();
/// buffer.read8(0); // error[E0502]: `buffer` is also borrowed as mutable
/// drop(slice);
/// ```
pub struct DmaSlice<'a> {
    buffer: &'a DmaBuffer,
    start: u64,
    len: u64,
}

impl fmt::Debug for DmaSlice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DmaSlice({:#x}..{:#x} of {:?})",
            self.start,
            self.start + self.len,
            self.buffer
        )
    }
}

impl DmaBuffer {
    /// The whole buffer as one slice, borrowed exclusively while the slice (or its parts)
    /// live.
    pub fn slice(&mut self) -> DmaSlice<'_> {
        let len = self.len();
        DmaSlice {
            buffer: self,
            start: 0,
            len,
        }
    }

    /// Whether the buffer was made for `master`'s function (so that its bus addresses may be
    /// handed to that function's device).
    pub fn made_for(&self, master: &BusMaster) -> bool {
        Arc::ptr_eq(&self.core, master.core())
    }
}

impl<'a> DmaSlice<'a> {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where it begins in its buffer.
    pub fn offset(&self) -> u64 {
        self.start
    }

    /// Whether its buffer was made for `master`'s function.
    pub fn made_for(&self, master: &BusMaster) -> bool {
        self.buffer.made_for(master)
    }

    /// A shorter-lived slice of the same bytes (to split while keeping this one).
    pub fn reborrow(&mut self) -> DmaSlice<'_> {
        DmaSlice {
            buffer: self.buffer,
            start: self.start,
            len: self.len,
        }
    }

    /// The first `mid` bytes and the rest; `None` when `mid` is past the end.
    pub fn split_at(self, mid: u64) -> Option<(DmaSlice<'a>, DmaSlice<'a>)> {
        if mid > self.len {
            return None;
        }
        let head = DmaSlice {
            buffer: self.buffer,
            start: self.start,
            len: mid,
        };
        let tail = DmaSlice {
            buffer: self.buffer,
            start: self.start + mid,
            len: self.len - mid,
        };
        Some((head, tail))
    }

    /// Consecutive parts of `size` bytes (the last may be shorter); one part for `size` 0.
    pub fn chunks(self, size: u64) -> Vec<DmaSlice<'a>> {
        let mut out = Vec::new();
        let mut rest = self;
        while rest.len > size && size > 0 {
            let (head, tail) = rest.split_at(size).expect("size is below the length");
            out.push(head);
            rest = tail;
        }
        out.push(rest);
        out
    }

    /// Bus address of the byte at `offset` of the slice, for the device of the buffer's
    /// function. Panics past the end (a driver bug).
    pub fn bus_address_at(&self, offset: u64) -> BusAddr<'a> {
        assert!(
            offset < self.len,
            "bus address at {offset:#x} of a {:#x}-byte DMA slice",
            self.len
        );
        self.buffer.bus_address_at(self.start + offset)
    }

    /// Copies `out.len()` bytes at `offset` of the slice out. Panics outside the slice.
    pub fn read_bytes(&self, offset: u64, out: &mut [u8]) {
        assert!(
            offset
                .checked_add(out.len() as u64)
                .is_some_and(|end| end <= self.len),
            "DMA slice copy of {:#x} bytes at {offset:#x} outside {:#x} bytes",
            out.len(),
            self.len
        );
        self.buffer.read_bytes(self.start + offset, out);
    }

    /// Copies `data` into the slice at `offset`. Panics outside the slice.
    pub fn write_bytes(&self, offset: u64, data: &[u8]) {
        assert!(
            offset
                .checked_add(data.len() as u64)
                .is_some_and(|end| end <= self.len),
            "DMA slice copy of {:#x} bytes at {offset:#x} outside {:#x} bytes",
            data.len(),
            self.len
        );
        self.buffer.write_bytes(self.start + offset, data);
    }
}

#[cfg(test)]
mod tests {
    use crate::fake::irq::function_with_msix;

    #[test]
    fn slices_split_into_disjoint_parts_of_one_buffer() {
        let function = function_with_msix(4);
        let master = function.bus_master();
        let mut buffer = master.dma_buffer(3 * 4096).unwrap();
        let base = {
            let s = buffer.slice();
            assert_eq!((s.offset(), s.len()), (0, 3 * 4096));
            format!("{:x}", s.bus_address_at(0))
        };
        let mut whole = buffer.slice();
        let parts = whole.reborrow().chunks(5000);
        let shape: Vec<(u64, u64)> = parts.iter().map(|p| (p.offset(), p.len())).collect();
        assert_eq!(shape, [(0, 5000), (5000, 5000), (10000, 2288)]);
        let start = u64::from_str_radix(&base, 16).unwrap();
        assert_eq!(
            format!("{:x}", parts[1].bus_address_at(10)),
            format!("{:x}", start + 5010)
        );
        parts[2].write_bytes(0, &[7, 8]);
        let mut out = [0u8; 2];
        parts[2].read_bytes(0, &mut out);
        assert_eq!(out, [7, 8]);
        drop(parts);
        let len = whole.len();
        assert!(whole.reborrow().split_at(len + 1).is_none());
        let (a, b) = whole.split_at(4096).unwrap();
        assert_eq!((a.len(), b.offset(), b.len()), (4096, 4096, 8192));
        assert_eq!(buffer.read8(10000), 7, "the write went into the buffer");
    }

    #[test]
    fn a_slice_knows_its_function() {
        let one = function_with_msix(4);
        let other = function_with_msix(4);
        let mut buffer = one.bus_master().dma_buffer(4096).unwrap();
        assert!(buffer.made_for(&one.bus_master()));
        assert!(!buffer.slice().made_for(&other.bus_master()));
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn a_copy_past_the_slice_panics() {
        let function = function_with_msix(4);
        let mut buffer = function.bus_master().dma_buffer(8192).unwrap();
        let (a, _b) = buffer.slice().split_at(4096).unwrap();
        a.read_bytes(4000, &mut [0u8; 100]);
    }
}
