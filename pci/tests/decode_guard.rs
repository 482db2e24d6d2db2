//! Where a function decodes: memory decode (Command bit 1) is one bit for all of a function's
//! memory BARs, so a window on an assigned BAR must not turn it on while another memory BAR
//! sits unassigned at 0; and the capabilities whose registers place decode ranges the way
//! BARs do (Enhanced Allocation, Multicast) or say where MSI writes go (HyperTransport MSI
//! mapping) are not a driver's to write.

use pci::fake::irq::{ADDRESS, BAR0, FakePlatform, device, handle};
use pci::fake::{FakeBar, FakeFunction};
use pci::function::{ConfigWriteError, Register};
use pci::window::WindowError;

#[test]
fn memory_decode_is_not_turned_on_while_another_memory_bar_is_unassigned() {
    // BAR 0 assigned; BAR 2, a 64 GiB 64-bit BAR, left at 0 by firmware (out of room).
    let f = FakeFunction::endpoint(0x1234, 0x5678, 0x02, 0, 0, 0)
        .with_bar(
            0,
            FakeBar::Mem32 {
                address: BAR0 as u32,
                size: 0x4000,
                prefetchable: false,
            },
        )
        .with_bar(
            2,
            FakeBar::Mem64 {
                address: 0,
                size: 1 << 36,
                prefetchable: true,
            },
        );
    let (function, space) = handle(f, FakePlatform::leaked(1));
    assert_eq!(function.info().bars[2].unwrap().address, 0);
    let mapped = function.map_bar(0, 0, 0x1000);
    let command = space.lock().peek(ADDRESS, 0x04).unwrap() as u16;
    assert_eq!(
        command & 1 << 1,
        0,
        "memory decode on: BAR 2 now claims 0..64 GiB (RAM, and the MSI range at 0xfee00000)"
    );
    let e = mapped.unwrap_err();
    assert_eq!(
        e,
        WindowError::SiblingUnassigned {
            bar: 0,
            unassigned: 2
        }
    );
    assert!(e.to_string().contains("BAR2 is unassigned"), "{e}");
    // An unassigned I/O BAR is no obstacle: I/O decode is never turned on.
    let f = device(4).with_bar(
        1,
        FakeBar::Io {
            address: 0,
            size: 0x20,
        },
    );
    let (function, _space) = handle(f, FakePlatform::leaked(1));
    function.map_bar(0, 0, 0x1000).unwrap();
}

#[test]
fn enhanced_allocation_entries_are_refused() {
    // EA at 0x80 with one entry: DW0 (entry size 2, BEI 0, Writable) at 0x84, base at 0x88,
    // max offset at 0x8c. Setting its Enable bit would make the device decode the range.
    let f = device(4)
        .with_capability(0x80, 0x14, &[0x01, 0x00])
        .with32(0x84, 1 << 30 | 2)
        .with32(0x88, 0x8000_0000)
        .with32(0x8c, 0x0000_fffc)
        .with_writable(0x84, 0x8000_0000)
        .with_writable(0x88, 0xffff_fffc)
        // A byte past the capability: the driver's.
        .with_writable(0x90, 0xffff_ffff);
    let (function, space) = handle(f, FakePlatform::leaked(1));
    for (offset, value) in [(0x84, 1u32 << 31 | 1 << 30 | 2), (0x88, 0xfee0_0000)] {
        assert_eq!(
            function.config_write32(offset, value),
            Err(ConfigWriteError::Protected {
                offset,
                register: Register::AddressDecoder(0x80)
            })
        );
    }
    assert!(function.config_write8(0x87, 0xc0).is_err());
    assert_eq!(
        space.lock().peek(ADDRESS, 0x84).unwrap() >> 31,
        0,
        "entry enabled"
    );
    function.config_write32(0x90, 1).unwrap();
}

#[test]
fn multicast_base_address_is_refused() {
    let mut f = device(4)
        .with_pcie(0xa0)
        .with_extended_capability(0x100, 0x0012, 1)
        .with_extended_capability(0x140, 0x0001, 2)
        .with_writable(0x104, 0xffff_0000)
        .with_writable(0x108, 0xffff_f03f)
        .with_writable(0x144, 0xffff_ffff);
    f.set32(0x104, 0x3f); // MC_Max_Group 63
    let (function, _space) = handle(f, FakePlatform::leaked(1));
    for (offset, value) in [(0x104, 0x8000_0000u32), (0x108, 0xfee0_0000)] {
        assert_eq!(
            function.config_write32(offset, value),
            Err(ConfigWriteError::Protected {
                offset,
                register: Register::AddressDecoder(0x100)
            })
        );
    }
    // AER after it (uncorrectable status) stays writable.
    function.config_write32(0x144, 0x10).unwrap();
}

#[test]
fn hypertransport_msi_mapping_is_refused() {
    // Capability type 10101b (bits 15:11 of the control word), Enable (bit 0) clear; the
    // mapping address at +4 and +8.
    let f = device(4)
        .with_capability(0x80, 0x08, &[0x00, 0xa8])
        .with_writable(0x80, 0x0001_0000)
        .with_writable(0x84, 0xffff_fff0)
        // Another HyperTransport capability type (a link): not an interrupt path.
        .with_capability(0x90, 0x08, &[0x00, 0xd0])
        .with_writable(0x94, 0xffff_ffff);
    let (function, _space) = handle(f, FakePlatform::leaked(1));
    for (offset, value) in [(0x82u16, 0xa801u32), (0x84, 0xfee0_0000)] {
        let e = if offset == 0x82 {
            function.config_write16(offset, value as u16)
        } else {
            function.config_write32(offset, value)
        };
        assert_eq!(
            e,
            Err(ConfigWriteError::Protected {
                offset,
                register: Register::MsiMapping(0x80)
            })
        );
    }
    function.config_write32(0x94, 1).unwrap();
}
