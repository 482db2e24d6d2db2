//! BAR windows never cover the MSI-X structures; DMA buffers are bounds-checked.

use pci::fake::irq::{BAR0, FakePlatform, device, handle};
use pci::fake::{FakeBar, FakeFunction};
use pci::window::WindowError;

#[test]
fn bar_windows_refuse_the_msix_table_and_pba() {
    let platform = FakePlatform::leaked(1);
    let (function, _) = handle(device(8), platform);
    // Registers below the table (at 0x2000) are fine.
    let regs = function.map_bar(0, 0, 0x2000).unwrap();
    regs.write32(0x10, 0xabcd);
    assert_eq!(platform.peek(BAR0 + 0x10), 0xabcd);
    assert_eq!(regs.read32(0x10), 0xabcd);
    // Table (0x2000..0x2080) and PBA (0x3000..0x3008) are off limits, even partly.
    assert_eq!(
        function.map_bar(0, 0x1000, 0x1004).unwrap_err(),
        WindowError::CoversMsix { bar: 0 }
    );
    assert_eq!(
        function.map_bar(0, 0x3004, 4).unwrap_err(),
        WindowError::CoversMsix { bar: 0 }
    );
    // Between and after them is fine.
    assert!(function.map_bar(0, 0x2080, 0x80).is_ok());
    assert!(function.map_bar(0, 0x3008, 0xff8).is_ok());
    assert!(matches!(
        function.map_bar(0, 0x2ff0, 0x20),
        Err(WindowError::CoversMsix { .. })
    ));
    assert!(matches!(
        function.map_bar(0, 0x3ff0, 0x20),
        Err(WindowError::OutsideBar { .. })
    ));
    assert_eq!(
        function.map_bar(1, 0, 4).unwrap_err(),
        WindowError::NoMemoryBar(1)
    );
}

#[test]
#[should_panic(expected = "outside a 0x100-byte window")]
fn window_accesses_are_bounds_checked() {
    let platform = FakePlatform::leaked(1);
    let (function, _) = handle(device(8), platform);
    let regs = function.map_bar(0, 0, 0x100).unwrap();
    regs.read32(0x100);
}

#[test]
fn dma_buffers_are_zeroed_and_bounds_checked() {
    let platform = FakePlatform::leaked(1);
    let (function, _) = handle(device(8), platform);
    let master = function.bus_master();
    let buffer = master.dma_buffer(64).unwrap();
    assert_eq!(buffer.len(), 64);
    assert!((0..64).all(|i| buffer.read8(i) == 0));
    buffer.write64(8, 0x1122_3344_5566_7788);
    assert_eq!(buffer.read32(8), 0x5566_7788);
    assert_eq!(buffer.read32(12), 0x1122_3344);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| buffer.read32(62)));
    assert!(result.is_err(), "a read across the end was allowed");
}

/// Runs `access`, which must panic with a message containing `expected`.
fn refused(expected: &str, access: impl FnOnce()) {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(access))
        .expect_err("an out-of-range access was allowed");
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    assert!(
        message.contains(expected),
        "refused for the wrong reason: {message:?}"
    );
}

/// Offsets whose `offset + size` wraps past `u64::MAX` (to 0 or just above it), which a
/// check written as `offset + size <= len` accepts in release builds.
const WRAPPING: [u64; 5] = [u64::MAX, u64::MAX - 1, u64::MAX - 3, u64::MAX - 7, 1 << 63];

#[test]
fn window_accesses_near_u64_max_are_refused_and_touch_nothing() {
    let platform = FakePlatform::leaked(1);
    let (function, _) = handle(device(8), platform);
    let regs = function.map_bar(0, 0x100, 0x100).unwrap();
    for offset in (0..0x100).step_by(4) {
        regs.write32(offset, 0x1111_0000 | offset as u32);
    }
    let before = platform.memory();
    assert_eq!(before.len(), 0x40);
    let outside = "outside a 0x100-byte window";
    for offset in WRAPPING {
        refused(outside, || regs.write32(offset, 0xdead_beef));
        refused(outside, || {
            let _ = regs.read32(offset);
        });
        refused(outside, || regs.write64(offset, u64::MAX));
        refused(outside, || {
            let _ = regs.read64(offset);
        });
    }
    // At and just past the end, and across it.
    refused(outside, || regs.write32(0x100, 1));
    refused(outside, || regs.write32(0x104, 1));
    refused(outside, || regs.write64(0xfc, 1));
    refused(outside, || regs.write64(0x100, 1));
    refused(outside, || regs.write32(0xfe, 1));
    // Inside, at the very end: fine.
    regs.write32(0xfc, 0x2222_2222);
    regs.write64(0xf8, 0x3333_3333_4444_4444);
    let after = platform.memory();
    assert_eq!(
        after.len(),
        before.len(),
        "a dword outside the window was written"
    );
    assert!(
        after
            .iter()
            .all(|&(a, _)| (BAR0 + 0x100..BAR0 + 0x200).contains(&a))
    );
    assert_eq!(platform.peek(BAR0 + 0xfc), 0, "the dword before the window");
    assert_eq!(platform.peek(BAR0 + 0x200), 0, "the dword after the window");
    assert_eq!(regs.read64(0xf8), 0x3333_3333_4444_4444);
}

#[test]
fn map_bar_refuses_ranges_that_wrap() {
    let platform = FakePlatform::leaked(1);
    let (function, _) = handle(device(8), platform);
    for (offset, len) in [
        (u64::MAX, 1),
        (u64::MAX - 3, 4),
        (4, u64::MAX),
        (u64::MAX, u64::MAX),
        (0x3ffc, 8),
        (0x4000, 0),
        (0, 0),
    ] {
        assert!(
            matches!(
                function.map_bar(0, offset, len),
                Err(WindowError::OutsideBar { .. })
            ),
            "{offset:#x}+{len:#x}"
        );
    }
    assert!(function.map_bar(0, 0x3ffc, 4).is_ok());
}

#[test]
fn dma_accesses_near_u64_max_are_refused_and_touch_nothing() {
    let platform = FakePlatform::leaked(1);
    let (function, _) = handle(device(8), platform);
    let master = function.bus_master();
    let buffer = master.dma_buffer(64).unwrap();
    for offset in 0..64 {
        buffer.write8(offset, offset as u8);
    }
    let outside = "outside 0x40 bytes";
    for offset in WRAPPING {
        refused(outside, || buffer.write32(offset, 0xdead_beef));
        refused(outside, || {
            let _ = buffer.read32(offset);
        });
        refused(outside, || buffer.write64(offset, u64::MAX));
    }
    // A byte access wraps only at the very top.
    refused(outside, || buffer.write8(u64::MAX, 0xff));
    refused(outside, || {
        let _ = buffer.read8(u64::MAX);
    });
    // At and just past the end, and across it.
    refused(outside, || buffer.write8(64, 1));
    refused(outside, || buffer.write32(64, 1));
    refused(outside, || buffer.write32(62, 1));
    refused(outside, || buffer.write64(60, 1));
    refused(outside, || buffer.write64(64, 1));
    assert!(
        platform.dma_red_zones_intact(),
        "an access escaped the buffer"
    );
    assert!(
        (0..64).all(|i| buffer.read8(i) == i as u8),
        "the buffer changed"
    );
    // Inside, at the very end: fine.
    buffer.write32(60, 0x5555_5555);
    buffer.write64(56, 0x6666_6666_7777_7777);
    assert_eq!(buffer.read32(56), 0x7777_7777);
    assert_eq!(buffer.read8(63), 0x66);
    drop(buffer);
    assert!(platform.dma_red_zones_intact());
}

/// A BAR at the very top of the address space: a window reaching its last byte would end at
/// 2^64, which no `u64` holds; it is refused rather than mapped at a wrapped address.
#[test]
fn map_bar_refuses_windows_ending_past_u64_max() {
    let platform = FakePlatform::leaked(1);
    let top = FakeFunction::endpoint(0x1b36, 0x0010, 0x01, 0x08, 0x02, 2).with_bar(
        0,
        FakeBar::Mem64 {
            address: 0xffff_ffff_ffff_c000,
            size: 0x4000,
            prefetchable: false,
        },
    );
    let (function, _) = handle(top, platform);
    let bar = function.info().bars[0].unwrap();
    assert_eq!((bar.address, bar.size), (0xffff_ffff_ffff_c000, 0x4000));
    let regs = function.map_bar(0, 0x3e00, 0x1ff).unwrap();
    regs.write32(0x1f8, 7);
    assert_eq!(platform.peek(u64::MAX - 7), 7);
    for (offset, len) in [(0x3f00, 0x100), (0, 0x4000), (0x3ffc, 4), (u64::MAX, 1)] {
        assert!(
            matches!(
                function.map_bar(0, offset, len),
                Err(WindowError::OutsideBar { .. })
            ),
            "{offset:#x}+{len:#x}"
        );
    }
}

#[test]
fn dma_bulk_copies_round_trip_and_stay_inside() {
    let platform = FakePlatform::leaked(1);
    let (function, _space) = handle(device(4), platform);
    let master = function.bus_master();
    let buffer = master.dma_buffer(100).unwrap();
    let data: Vec<u8> = (0..37u8).collect();
    buffer.write_bytes(63, &data);
    let mut back = vec![0u8; 37];
    buffer.read_bytes(63, &mut back);
    assert_eq!(back, data);
    assert_eq!(buffer.read8(63), 0);
    assert_eq!(buffer.read8(99), 36);
    buffer.read_bytes(100, &mut []);
    for (offset, len) in [(64u64, 37usize), (100, 1), (u64::MAX, 1), (u64::MAX - 3, 4)] {
        let copy = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut out = vec![0u8; len];
            buffer.read_bytes(offset, &mut out);
        }));
        assert!(copy.is_err(), "read of {len} at {offset:#x} was allowed");
        let copy = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            buffer.write_bytes(offset, &vec![0xffu8; len]);
        }));
        assert!(copy.is_err(), "write of {len} at {offset:#x} was allowed");
    }
    assert!(platform.dma_red_zones_intact());
}
