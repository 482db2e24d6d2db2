//! DMA buffers and the bus addresses a device is given for them.
//!
//! Design note. A [`DmaBuffer`] is made from a [`BusMaster`]
//! guard and owns physically contiguous memory. Its bus address is a [`BusAddr`], an opaque
//! value that borrows the buffer: it cannot be used once the buffer is gone, and the only
//! things that accept it are the writes that hand it to a device
//! ([`BarWindow::write_bus_address`](crate::window::BarWindow::write_bus_address) for a
//! register, [`DmaBuffer::write_bus_address`] for a descriptor in DMA memory).
//!
//! What stays outside the model without an IOMMU (on a machine with one, the kernel maps
//! each function's DMA memory into its own domain, `docs/irq-ownership.md` §4.8): the device
//! keeps whatever address it was given and can write there for as long as it may master the
//! bus; and a driver can still write any number it likes into a register the device reads
//! as an address. This layer makes
//! sure the memory behind a [`BusAddr`] is not reused while the device can master the bus
//! (buffers dropped meanwhile are quarantined, see [`BusMaster`]),
//! not that the device only goes where it was pointed.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Range;

use crate::function::{BusMaster, Core};
pub use crate::platform::DmaRegion;
pub use slice::DmaSlice;

mod slice;
use crate::range::checked_access;
use crate::window::WindowError;

/// The bus address of a byte of a [`DmaBuffer`], borrowing the buffer.
///
/// It can be handed to a device ([`BarWindow::write_bus_address`](crate::window::BarWindow),
/// [`DmaBuffer::write_bus_address`]) and printed, but not made from a number, and not kept
/// past the buffer:
///
/// ```compile_fail,E0505
/// # use pci::fake::irq::function_with_msix;
/// let function = function_with_msix(4);
/// let master = function.bus_master();
/// let buffer = master.dma_buffer(4096).unwrap();
/// let address = buffer.bus_address();
/// drop(buffer); // error[E0505]: cannot move out of `buffer` because it is borrowed
/// let registers = function.map_bar(0, 0, 0x1000).unwrap();
/// registers.write_bus_address(0x28, address);
/// ```
///
/// A number is not a bus address:
///
/// ```compile_fail,E0308
/// # use pci::fake::irq::function_with_msix;
/// let function = function_with_msix(4);
/// let registers = function.map_bar(0, 0, 0x1000).unwrap();
/// registers.write_bus_address(0x28, 0x1000_0000u64); // error[E0308]: mismatched types
/// ```
///
/// It is handed only to the function whose buffer it is: giving device B the address of
/// device A's buffer would let B write there after A's bus mastering (which alone holds the
/// buffer back from reuse) is off. That is a driver bug, and panics like an access outside a
/// window.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BusAddr<'a> {
    address: u64,
    /// The function the buffer was made for (its core's address, compared only).
    function: usize,
    _buffer: PhantomData<&'a DmaBuffer>,
}

impl BusAddr<'_> {
    /// The address, for a write into a device of `function` (a [`Core`] address).
    pub(crate) fn raw_for(self, function: usize) -> u64 {
        assert!(
            self.function == function,
            "bus address {:#x} belongs to another function's DMA buffer",
            self.address
        );
        self.address
    }

    /// Whether the address is a multiple of `align` (a power of two), as queue base
    /// registers require.
    pub fn is_aligned(self, align: u64) -> bool {
        align.is_power_of_two() && self.address & (align - 1) == 0
    }

    /// Whether the address is below `limit`: a device that takes only 32-bit addresses (an
    /// xHCI controller without HCCPARAMS1.AC64, say) drops the upper dword of what it is
    /// given, and would reach the memory at the address modulo 4 GiB instead.
    pub fn is_below(self, limit: u64) -> bool {
        self.address < limit
    }

    /// How far the address is past a multiple of `align` (a power of two): where it falls in
    /// a page, for descriptors whose first entry may start inside one (NVMe PRP Entry 1).
    pub fn offset_in(self, align: u64) -> u64 {
        assert!(
            align.is_power_of_two(),
            "alignment {align} is not a power of two"
        );
        self.address & (align - 1)
    }
}

impl fmt::Debug for BusAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BusAddr({:#x})", self.address)
    }
}

impl fmt::LowerHex for BusAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.address, f)
    }
}

/// A DMA buffer.
///
/// # Invariants
/// `region` is `Some` until `Drop` hands it to the function's core, which frees it once the
/// device cannot master the bus.
///
/// Who owns it: the driver. It holds the function's core, so the function stays claimed while
/// it lives. `Drop` frees the memory, or quarantines it until bus mastering is off; a leak
/// costs the frames.
pub struct DmaBuffer {
    core: Arc<Core>,
    region: Option<Box<dyn DmaRegion>>,
}

impl fmt::Debug for DmaBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuffer")
            .field("bus_address", &self.bus_address())
            .field("len", &self.len())
            .finish()
    }
}

impl DmaBuffer {
    pub(crate) fn new(core: Arc<Core>, region: Box<dyn DmaRegion>) -> DmaBuffer {
        DmaBuffer {
            core,
            region: Some(region),
        }
    }

    fn region(&self) -> &dyn DmaRegion {
        self.region.as_deref().expect("present until drop")
    }

    /// Bus address of the first byte.
    pub fn bus_address(&self) -> BusAddr<'_> {
        BusAddr {
            address: self.region().bus_address(),
            function: Arc::as_ptr(&self.core) as usize,
            _buffer: PhantomData,
        }
    }

    /// Bus address of the byte at `offset`. Panics past the end (a driver bug).
    pub fn bus_address_at(&self, offset: u64) -> BusAddr<'_> {
        let r = self.check(offset, 1);
        BusAddr {
            address: self.region().bus_address() + r.start,
            function: Arc::as_ptr(&self.core) as usize,
            _buffer: PhantomData,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.region().len()
    }

    /// Whether the buffer is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of an access, or a panic naming it.
    fn check(&self, offset: u64, size: u64) -> Range<u64> {
        match checked_access(offset, size, self.len()) {
            Ok(r) => r,
            Err(e) => panic!(
                "DMA access of {size} bytes at {offset:#x} outside {:#x} bytes: {e}",
                self.len()
            ),
        }
    }

    /// Reads a byte.
    pub fn read8(&self, offset: u64) -> u8 {
        self.check(offset, 1);
        self.region().read8(offset)
    }

    /// Writes a byte.
    pub fn write8(&self, offset: u64, value: u8) {
        self.check(offset, 1);
        self.region().write8(offset, value)
    }

    /// Reads a dword.
    pub fn read32(&self, offset: u64) -> u32 {
        self.check(offset, 4);
        self.region().read32(offset)
    }

    /// Writes a dword.
    pub fn write32(&self, offset: u64, value: u32) {
        self.check(offset, 4);
        self.region().write32(offset, value)
    }

    /// Copies `out.len()` bytes at `offset` out of the buffer in one bulk copy (data a device
    /// wrote). Panics outside the buffer (a driver bug).
    pub fn read_bytes(&self, offset: u64, out: &mut [u8]) {
        self.check_bytes(offset, out.len());
        self.region().read_bytes(offset, out);
    }

    /// Copies `data` into the buffer at `offset` in one bulk copy (data for a device to read).
    /// Panics outside the buffer.
    pub fn write_bytes(&self, offset: u64, data: &[u8]) {
        self.check_bytes(offset, data.len());
        self.region().write_bytes(offset, data);
    }

    fn check_bytes(&self, offset: u64, len: usize) {
        if let Err(e) = crate::range::checked_range(offset, len as u64, self.len()) {
            panic!(
                "DMA copy of {len:#x} bytes at {offset:#x} outside {:#x} bytes: {e}",
                self.len()
            );
        }
    }

    /// Writes a qword (two dwords, low first).
    pub fn write64(&self, offset: u64, value: u64) {
        let r = self.check(offset, 8);
        self.region().write32(r.start, value as u32);
        self.region().write32(r.end - 4, (value >> 32) as u32);
    }

    /// Writes a bus address (of this buffer or another of the same function) as a qword, for
    /// descriptors and PRP lists that live in DMA memory. Panics for another function's.
    pub fn write_bus_address(&self, offset: u64, address: BusAddr<'_>) {
        self.write64(offset, address.raw_for(Arc::as_ptr(&self.core) as usize));
    }
}

impl BusMaster {
    /// A zeroed DMA buffer of at least `bytes` bytes for this function's device: memory an
    /// earlier claim of the function used, if some fits ([`crate::parking`]), else new.
    pub fn dma_buffer(&self, bytes: u64) -> Result<DmaBuffer, WindowError> {
        let core = self.core();
        let region = match core.reuse_dma(bytes) {
            Some(region) => region,
            None => core
                .platform
                .dma(core.address(), bytes)
                .map_err(WindowError::Platform)?,
        };
        Ok(DmaBuffer::new(core.clone(), region))
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        if let Some(region) = self.region.take() {
            self.core.retire(region);
        }
    }
}
