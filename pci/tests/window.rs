//! BAR windows never cover the MSI-X structures; DMA buffers are bounds-checked.

use pci::fake::irq::{BAR0, FakePlatform, device, handle};
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
    let buffer = function.dma_buffer(64).unwrap();
    assert_eq!(buffer.len(), 64);
    assert!((0..64).all(|i| buffer.read8(i) == 0));
    buffer.write64(8, 0x1122_3344_5566_7788);
    assert_eq!(buffer.read32(8), 0x5566_7788);
    assert_eq!(buffer.read32(12), 0x1122_3344);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| buffer.read32(62)));
    assert!(result.is_err(), "a read across the end was allowed");
}
