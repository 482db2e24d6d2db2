//! What a driver in safe code cannot do to the ownership model: each refused configuration
//! write gives its error, handles keep their function claimed, bus mastering is a guard, and
//! DMA memory is not reused while the device can still master the bus.

use pci::fake::FakeFunction;
use pci::fake::irq::{ADDRESS, FakePlatform, device, handle};
use pci::function::{ConfigWriteError, Register};
use pci::irq::{IrqKind, IrqKinds};

/// The fake device with a 16-byte vendor-specific capability at 0x80 (virtio's layout:
/// cfg_type, bar, padding, offset, length) and the writable bits a real one has.
fn with_vendor() -> FakeFunction {
    device(4)
        .with_capability(0x80, 0x09, &[16, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .with_writable(0x84, 0xffff_ffff)
        .with_writable(0x88, 0xffff_ffff)
        .with_writable(0x8c, 0xffff_ffff)
        .with_writable(0x04, 0x0000_ffff)
        .with_writable(0x3c, 0x0000_00ff)
}

#[test]
fn command_bits_of_the_stack_are_refused_and_the_others_are_written() {
    let (function, space) = handle(with_vendor(), FakePlatform::leaked(1));
    let command = function.config_read16(0x04);
    for (bit, what) in [
        (1u16 << 0, "I/O decode"),
        (1 << 1, "memory decode"),
        (1 << 2, "bus master"),
        (1 << 10, "INTx disable"),
    ] {
        let e = function.config_write16(0x04, command ^ bit).unwrap_err();
        assert_eq!(e, ConfigWriteError::Command { bits: bit }, "{what}");
        assert!(e.to_string().contains(what), "{e}");
        // Through the dword and the byte accessors too.
        assert!(
            function
                .config_write32(0x04, u32::from(command ^ bit))
                .is_err()
        );
        let (at, byte) = if bit < 0x100 {
            (0x04, (command ^ bit) as u8)
        } else {
            (0x05, ((command ^ bit) >> 8) as u8)
        };
        assert!(function.config_write8(at, byte).is_err());
    }
    assert_eq!(
        function.config_read16(0x04),
        command,
        "a refused write landed"
    );
    // SERR# enable (bit 8) is the driver's to set.
    function.config_write16(0x04, command | 1 << 8).unwrap();
    assert_eq!(space.lock().peek(ADDRESS, 0x04).unwrap() & 1 << 8, 1 << 8);
    // Interrupt Line is scratch for software.
    function.config_write8(0x3c, 0x42).unwrap();
    assert_eq!(function.config_read8(0x3c), 0x42);
}

#[test]
fn bars_msi_msix_and_vendor_bodies_are_refused_with_their_owner() {
    let (function, space) = handle(with_vendor(), FakePlatform::leaked(1));
    let before = space.lock().writes().len();
    let cases = [
        (0x10, Register::Bar(0), "BAR0"),
        (0x14, Register::Bar(1), "BAR1"),
        (0x30, Register::ExpansionRom, "expansion ROM"),
        (0x40, Register::Msi(0x40), "IrqVectors"),
        (0x44, Register::Msi(0x40), "IrqVectors"),
        (0x48, Register::Msi(0x40), "IrqVectors"),
        (0x60, Register::Msix(0x60), "IrqVectors"),
        (0x84, Register::Vendor(0x80), "vendor_window(0x80)"),
        (0x80, Register::CapabilityHeader(0x80), "read-only"),
    ];
    for (offset, register, says) in cases {
        let e = function.config_write32(offset, 0xdead_beef).unwrap_err();
        assert_eq!(e, ConfigWriteError::Protected { offset, register });
        assert!(e.to_string().contains(says), "{offset:#x}: {e}");
        assert!(function.config_write16(offset + 2, 0xbeef).is_err());
        assert!(function.config_write8(offset + 1, 0xef).is_err());
    }
    assert_eq!(
        space.lock().writes().len(),
        before,
        "a refused write reached the device"
    );
    for (offset, width) in [(0x41, 2), (0x42, 4), (0xffe, 4), (0xfff, 2), (0x1000, 1)] {
        let r = match width {
            1 => function.config_write8(offset, 0),
            2 => function.config_write16(offset, 0),
            _ => function.config_write32(offset, 0),
        };
        assert_eq!(
            r,
            Err(ConfigWriteError::BadAccess { offset, width }),
            "{offset:#x}/{width}"
        );
    }
}

#[test]
fn msi_cannot_be_armed_behind_the_vectors_back() {
    let platform = FakePlatform::leaked(1);
    let (function, space) = handle(with_vendor(), platform);
    let vectors = function.alloc_irq_vectors(1, 4, IrqKinds::ALL).unwrap();
    assert_eq!(vectors.kind(), IrqKind::Msix);
    let f = vectors.function();
    // Enabling MSI while MSI-X vectors are held, or aiming it at a vector not owned.
    let control = f.config_read16(0x42);
    assert!(f.config_write16(0x42, control | 1).is_err());
    assert!(f.config_write32(0x44, 0xfee0_0000).is_err());
    assert!(f.config_write16(0x48, 0x31).is_err());
    // Turning MSI-X off under the vectors, or masking it all.
    let msix = f.config_read16(0x62);
    assert!(f.config_write16(0x62, msix & !(1 << 15)).is_err());
    assert!(f.config_write16(0x62, msix | 1 << 14).is_err());
    assert_eq!((space.lock().peek(ADDRESS, 0x40).unwrap() >> 16) & 1, 0);
    drop(vectors);
}

#[test]
fn a_vendor_window_is_bounded_to_its_capability() {
    let (function, space) = handle(with_vendor(), FakePlatform::leaked(1));
    assert_eq!(function.vendor_capabilities().collect::<Vec<_>>(), [0x80]);
    assert!(function.vendor_window(0x84).is_none());
    let window = function.vendor_window(0x80).unwrap();
    assert_eq!(window.len(), 16);
    assert_eq!(window.read8(3).unwrap(), 5, "cfg_type");
    window.write32(4, 0x0000_0002).unwrap();
    window.write32(8, 0x1234).unwrap();
    window.write32(12, 4).unwrap();
    assert_eq!(space.lock().peek(ADDRESS, 0x88).unwrap(), 0x1234);
    assert_eq!(window.read32(8).unwrap(), 0x1234);
    // The header, past the end, and wrapping offsets are refused.
    assert!(matches!(
        window.write32(0, 0),
        Err(ConfigWriteError::Protected {
            register: Register::CapabilityHeader(0x80),
            ..
        })
    ));
    for offset in [16, 14, u16::MAX - 3, u16::MAX] {
        assert!(window.write32(offset, 0).is_err(), "{offset:#x}");
        assert!(window.read32(offset).is_err(), "{offset:#x}");
    }
    assert!(window.write8(16, 0).is_err());
}

#[test]
fn a_vendor_capability_that_claims_to_cover_msi_does_not_open_it() {
    // A vendor capability whose length byte reaches over the MSI capability at 0x40.
    let f = FakeFunction::endpoint(0x1af4, 0x1041, 0x01, 0x00, 0x00, 0)
        .with_capability(0x40, 0x09, &[0x40, 0, 0, 0])
        .with_msi(0x50, 0, true, false);
    let (function, _space) = handle(f, FakePlatform::leaked(1));
    let window = function.vendor_window(0x40).unwrap();
    assert_eq!(window.len(), 0x40);
    assert!(window.write32(4, 0).is_ok());
    assert!(matches!(
        window.write32(0x14, 0xfee0_0000),
        Err(ConfigWriteError::Protected {
            register: Register::Msi(0x50),
            ..
        })
    ));
}

#[test]
fn windows_buffers_and_guards_keep_their_function_claimed() {
    let platform = FakePlatform::leaked(1);
    let (function, _space) = handle(device(4), platform);
    let registers = function.map_bar(0, 0, 0x1000).unwrap();
    let master = function.bus_master();
    let buffer = master.dma_buffer(4096).unwrap();
    let vendor = function.vendor_window(0x80);
    assert!(
        vendor.is_none(),
        "the plain device has no vendor capability"
    );
    drop(function);
    assert!(
        platform.released().is_empty(),
        "released under a live window"
    );
    registers.write32(0, 1);
    drop(registers);
    assert!(
        platform.released().is_empty(),
        "released under a live guard"
    );
    drop(master);
    assert!(
        platform.released().is_empty(),
        "released under a live buffer"
    );
    buffer.write32(0, 1);
    drop(buffer);
    assert_eq!(platform.released(), [ADDRESS]);
    // The buffer is parked for the function's next claim, and freed when it leaves the bus.
    assert_eq!(platform.parked(ADDRESS), (1, 4096));
    assert_eq!(platform.remove(ADDRESS), (1, 4096));
    assert_eq!(platform.dma_live(), 0);
}

#[test]
fn bus_mastering_is_off_at_claim_and_on_exactly_while_a_guard_lives() {
    let platform = FakePlatform::leaked(1);
    let (function, _space) = handle(device(4).with_command(0x0006), platform);
    assert!(!function.is_bus_master(), "left on from before the claim");
    let a = function.bus_master();
    let b = a.clone();
    assert!(function.is_bus_master());
    drop(a);
    assert!(function.is_bus_master(), "off while a guard lives");
    drop(b);
    assert!(!function.is_bus_master());
    // MSI-X vectors hold bus mastering for their messages; a driver's guard outlives them.
    let vectors = function.alloc_irq_vectors(1, 4, IrqKinds::MSIX).unwrap();
    assert!(vectors.function().is_bus_master());
    let guard = vectors.function().bus_master();
    let function = vectors.into_function();
    assert!(function.is_bus_master(), "vectors took the driver's guard");
    drop(guard);
    assert!(!function.is_bus_master());
}

#[test]
fn dma_memory_is_not_reused_while_the_device_can_master_the_bus() {
    let platform = FakePlatform::leaked(1);
    let (function, _space) = handle(device(4), platform);
    let master = function.bus_master();
    let a = master.dma_buffer(100).unwrap();
    let b = master.dma_buffer(8192).unwrap();
    let c = master.dma_buffer(1).unwrap();
    // Each buffer has addresses of its own.
    let (a0, b0, c0) = (
        format!("{:x}", a.bus_address()),
        format!("{:x}", b.bus_address()),
        format!("{:x}", c.bus_address()),
    );
    assert!(a0 != b0 && b0 != c0 && a0 != c0, "{a0} {b0} {c0}");
    assert!(b.bus_address().is_aligned(4096));
    let at = b.bus_address_at(4096);
    b.write_bus_address(0, at);
    assert_eq!(
        u64::from(b.read32(0)) | u64::from(b.read32(4)) << 32,
        u64::from_str_radix(&b0, 16).unwrap() + 4096
    );
    drop(a);
    drop(b);
    assert_eq!(
        platform.dma_live(),
        3,
        "freed while the device masters the bus"
    );
    drop(master);
    assert_eq!(
        platform.dma_live(),
        3,
        "freed with bus mastering off, which a new guard turns back on"
    );
    drop(c);
    let again = function.bus_master();
    assert_eq!(platform.dma_live(), 3, "freed under a new guard");
    drop(again);
    drop(function);
    assert_eq!(platform.released().len(), 1);
    // The device still holds those addresses, and a new claim may turn bus mastering on:
    // the memory is parked for that claim, not freed.
    assert_eq!(platform.dma_live(), 3, "freed while the function exists");
    assert_eq!(platform.parked(ADDRESS), (3, 100 + 8192 + 1));
    assert_eq!(platform.remove(ADDRESS).0, 3);
    assert_eq!(
        platform.dma_live(),
        0,
        "kept after the function left the bus"
    );
    assert!(platform.dma_red_zones_intact());
}

#[test]
fn a_new_claim_reuses_its_functions_parked_memory_zeroed() {
    // Under Miri: two cycles and a 16 KiB staging buffer (every byte is interpreted).
    let (cycles, big) = if cfg!(miri) {
        (3, 64 << 10)
    } else {
        (100, 1 << 20)
    };
    let platform = FakePlatform::leaked(1);
    let space = {
        let (function, space) = handle(device(4), platform);
        let master = function.bus_master();
        let queue = master.dma_buffer(8192).unwrap();
        let staging = master.dma_buffer(big).unwrap();
        queue.write32(0, 0xdead_beef);
        staging.write32(4096, 0x1234_5678);
        drop((queue, staging, master, function));
        space
    };
    assert_eq!(platform.dma_live(), 2);
    for cycle in 0..cycles {
        // Claimed again, as the kernel does after an unbind (the same configuration space).
        assert_eq!(platform.released().len(), cycle as usize + 1);
        // SAFETY: the last handle and everything made from it were dropped (released above).
        let function = unsafe { pci::fake::irq::claim_again(space, platform) };
        let master = function.bus_master();
        let staging = master.dma_buffer(big).unwrap();
        let queue = master.dma_buffer(8000).unwrap();
        assert_eq!(
            queue.read32(0),
            0,
            "cycle {cycle}: a reused buffer is not zeroed"
        );
        assert_eq!(
            staging.read32(4096),
            0,
            "cycle {cycle}: a reused buffer is not zeroed"
        );
        queue.write32(0, cycle);
        staging.write32(4096, cycle);
        // A request the parked memory cannot serve is new memory.
        let extra = master.dma_buffer(64).unwrap();
        drop((extra, queue, staging, master, function));
        assert_eq!(platform.dma_live(), 3, "cycle {cycle}: memory use grew");
    }
    assert_eq!(platform.parked(ADDRESS).0, 3);
    assert!(platform.dma_red_zones_intact());
}

#[test]
#[should_panic(expected = "outside")]
fn a_bus_address_past_the_buffer_is_refused() {
    let (function, _space) = handle(device(4), FakePlatform::leaked(1));
    let master = function.bus_master();
    let buffer = master.dma_buffer(64).unwrap();
    let _ = buffer.bus_address_at(64);
}

#[test]
fn virtio_configuration_access_cannot_reach_the_msix_table() {
    use pci::fake::FakeBar;
    // A virtio device: BAR 0 with the MSI-X table at +0x2000, and a
    // VIRTIO_PCI_CAP_PCI_CFG capability (cfg_type 5) at 0x80 of 20 bytes.
    let f = FakeFunction::endpoint(0x1af4, 0x1041, 0x02, 0x00, 0x00, 1)
        .with_bar(
            0,
            FakeBar::Mem32 {
                address: 0xfe00_0000,
                size: 0x4000,
                prefetchable: false,
            },
        )
        .with_msix(0x60, 4, (0, 0x2000), (0, 0x3000))
        .with_capability(
            0x80,
            0x09,
            &[20, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        )
        .with_writable(0x84, 0xffff_ffff)
        .with_writable(0x88, 0xffff_ffff)
        .with_writable(0x8c, 0xffff_ffff)
        .with_writable(0x90, 0xffff_ffff);
    let (function, _space) = handle(f, FakePlatform::leaked(1));
    let window = function.vendor_window(0x80).unwrap();
    let aim = |offset: u32| {
        window.write32(4, 0).unwrap(); // BAR 0
        window.write32(8, offset).unwrap();
        window.write32(12, 4).unwrap();
    };
    aim(0x100);
    window
        .write32(16, 1)
        .expect("device registers are the driver's");
    for offset in [0x2000, 0x200c, 0x3000] {
        aim(offset);
        let e = window.write32(16, 0).unwrap_err();
        assert_eq!(
            e,
            ConfigWriteError::Protected {
                offset: 0x90,
                register: Register::Msix(0x60)
            },
            "{offset:#x}"
        );
        assert!(window.write8(16, 0).is_err());
    }
}

#[test]
#[should_panic(expected = "another function's DMA buffer")]
fn a_bus_address_goes_only_to_its_own_function() {
    let platform = FakePlatform::leaked(1);
    let (a, _) = handle(device(4), platform);
    let (b, _) = handle(device(4), platform);
    let master = a.bus_master();
    let buffer = master.dma_buffer(4096).unwrap();
    let registers_of_b = b.map_bar(0, 0, 0x1000).unwrap();
    // Device B would keep the address after A's bus mastering (which alone holds the buffer
    // back from reuse) is off.
    registers_of_b.write_bus_address(0x28, buffer.bus_address());
}

#[test]
fn a_bus_address_goes_into_its_own_functions_registers_and_buffers() {
    let platform = FakePlatform::leaked(1);
    let (a, _) = handle(device(4), platform);
    let master = a.bus_master();
    let ring = master.dma_buffer(4096).unwrap();
    let data = master.dma_buffer(4096).unwrap();
    ring.write_bus_address(0, data.bus_address());
    let registers = a.map_bar(0, 0, 0x1000).unwrap();
    registers.write_bus_address(0x28, ring.bus_address());
    assert_eq!(
        format!("{:x}", registers.read64(0x28)),
        format!("{:x}", ring.bus_address())
    );
}

#[test]
fn map_bar_refuses_a_bar_that_no_longer_holds_its_enumerated_address() {
    use pci::irq::ConfigPort;
    use pci::window::WindowError;
    let (function, space) = handle(device(4), FakePlatform::leaked(1));
    let first = function.map_bar(0, 0, 0x1000).unwrap();
    // What a function reset does to a BAR.
    space.write32(ADDRESS, 0x10, 0);
    let e = function.map_bar(0, 0, 0x1000).unwrap_err();
    assert_eq!(
        e,
        WindowError::BarMoved {
            bar: 0,
            enumerated: pci::fake::irq::BAR0,
            now: 0
        }
    );
    assert!(e.to_string().contains("reset"), "{e}");
    drop(first);
}

#[test]
fn an_unassigned_bar_is_not_mapped() {
    use pci::fake::FakeBar;
    use pci::window::WindowError;
    // Firmware left a 64 GiB BAR at 0: "inside" it would be every address below 64 GiB.
    let unassigned = FakeFunction::endpoint(0x1234, 0x5678, 0x02, 0, 0, 0).with_bar(
        0,
        FakeBar::Mem64 {
            address: 0,
            size: 1 << 36,
            prefetchable: true,
        },
    );
    let (function, _space) = handle(unassigned, FakePlatform::leaked(1));
    assert_eq!(function.info().bars[0].unwrap().address, 0);
    for (offset, len) in [(0, 0x1000), (0xfee0_0000, 0x1000), (0xfe00_2000, 0x10)] {
        let e = function.map_bar(0, offset, len).unwrap_err();
        assert_eq!(e, WindowError::Unassigned { bar: 0 });
        assert!(e.to_string().contains("unassigned"), "{e}");
    }
}

#[test]
fn buffers_made_and_dropped_over_and_over_reuse_the_same_memory() {
    let platform = FakePlatform::leaked(1);
    let (function, _space) = handle(device(4), platform);
    for n in 0..if cfg!(miri) { 10 } else { 1000u32 } {
        let master = function.bus_master();
        let buffer = master.dma_buffer(4096).unwrap();
        assert_eq!(
            buffer.read32(0),
            0,
            "operation {n}: reused memory not zeroed"
        );
        buffer.write32(0, n + 1);
        drop((buffer, master));
    }
    assert_eq!(platform.dma_live(), 1, "one operation's memory at a time");
    drop(function);
    assert_eq!(platform.parked(ADDRESS), (1, 4096));
}

#[test]
fn vendor_specific_extended_capabilities_are_refused_whole() {
    // A VSEC at 0x100 of 0x20 bytes, then AER at 0x120 (a driver may clear its status), then
    // a DVSEC at 0x160 whose length field says 0x10.
    let mut f = with_vendor()
        .with_pcie(0xa0)
        .with_extended_capability(0x100, 0x000b, 1)
        .with_extended_capability(0x120, 0x0001, 2)
        .with_extended_capability(0x160, 0x0023, 1)
        .with_writable(0x104, 0xffff_ffff)
        .with_writable(0x11c, 0xffff_ffff)
        .with_writable(0x124, 0xffff_ffff)
        .with_writable(0x16c, 0xffff_ffff);
    f.set32(0x104, 0x020 << 20 | 0x1234); // VSEC ID 0x1234, length 0x20
    f.set32(0x164, 0x010 << 20 | 0x1af4); // DVSEC vendor 0x1af4, length 0x10
    let (function, space) = handle(f, FakePlatform::leaked(1));
    for (offset, register) in [
        (0x100, Register::ExtendedVendor(0x100)),
        (0x108, Register::ExtendedVendor(0x100)),
        (0x11c, Register::ExtendedVendor(0x100)),
        (0x16c, Register::ExtendedVendor(0x160)),
    ] {
        let e = function.config_write32(offset, 0).unwrap_err();
        assert_eq!(e, ConfigWriteError::Protected { offset, register });
        assert!(e.to_string().contains("VSEC/DVSEC"), "{e}");
    }
    let before = space.lock().writes().len();
    // Past the VSEC's length, AER's status is the driver's to clear.
    function.config_write32(0x124, 0xffff_ffff).unwrap();
    assert_eq!(space.lock().writes().len(), before + 1);
}
