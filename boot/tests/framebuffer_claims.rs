//! A framebuffer tag whose memory reaches the PC's fixed device space is recognised.
//!
//! The kernel's MMIO mapper refuses RAM but not the interrupt controllers' registers (the
//! IOAPIC at 0xFEC0_0000, the HPET at 0xFED0_0000, the local APIC at 0xFEE0_0000), whose
//! reservations come from the ACPI tables after the screen is up. A framebuffer tag whose
//! `pitch * height` bytes reach there would have the console's pixels written over them.
//!
//! Also: the colour channels' sizes. A deep-colour mode (10 bits per channel in a 32-bit
//! pixel, which GRUB reports from a UEFI GOP's pixel masks) drawn with 8-bit values at the
//! channels' positions shows everything at a quarter of its brightness.

#[path = "../src/testutil.rs"]
mod testutil;

use boot::{Framebuffer, Snapshot, multiboot2};
use testutil::Mbi;

fn fb(address: u64, pitch: u32, height: u32) -> Framebuffer {
    Framebuffer {
        address,
        pitch,
        width: 1024,
        height,
        bpp: 32,
        channels: [16, 8, 0],
        channel_sizes: [8, 8, 8],
    }
}

#[test]
fn a_framebuffer_running_into_the_ioapic_is_recognised() {
    // Parsed from a real tag: 1024 lines of 1 MiB from 0xC000_0000 end at 4 GiB.
    let blob = Mbi::new()
        .mmap(&[(0, 0x9f000, 1), (0x10_0000, 0x7f00_0000, 1)], 24)
        .framebuffer(0xc000_0000, 1 << 20, 1024, 1024, 32, 1)
        .finish();
    let info = multiboot2::parse(&Snapshot::new(&[(0x1_0000, &blob)]), 0x1_0000).unwrap();
    let parsed = info.framebuffer.unwrap();
    assert_eq!(parsed.span(), Some((0xc000_0000, 0x1_0000_0000)));
    assert!(parsed.reaches_device_space());
    // Starting inside it, or ending one byte into it.
    assert!(fb(0xfee0_0000, 4096, 768).reaches_device_space());
    assert!(fb(0xfec0_0000 - 4096 * 767, 4096, 768).reaches_device_space());
    // A span that overflows cannot be checked: it counts as reaching it.
    assert_eq!(fb(u64::MAX - 4095, 4096, 2).span(), None);
    assert!(fb(u64::MAX - 4095, 4096, 2).reaches_device_space());
}

#[test]
fn real_framebuffers_do_not() {
    // Below it (a PCI BAR under 4 GiB, the legacy VGA window), ending exactly at its
    // start, and above 4 GiB (a GOP framebuffer in a 64-bit BAR).
    assert!(!fb(0xfd00_0000, 4096, 768).reaches_device_space());
    assert!(!fb(0xa_0000, 320, 200).reaches_device_space());
    assert!(!fb(0xfec0_0000 - 4096 * 768, 4096, 768).reaches_device_space());
    assert!(!fb(0x40_0000_0000, 7680, 2160).reaches_device_space());
    assert!(!fb(0x1_0000_0000, 4096, 768).reaches_device_space());
}

/// A framebuffer tag body: addr, pitch, width, height, bpp, type 1, reserved, then
/// `colours` (red, green, blue as position, size).
fn tag_body(bpp: u8, colours: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0xe000_0000u64.to_le_bytes());
    b.extend_from_slice(&4096u32.to_le_bytes());
    b.extend_from_slice(&1024u32.to_le_bytes());
    b.extend_from_slice(&768u32.to_le_bytes());
    b.extend_from_slice(&[bpp, 1, 0, 0]);
    b.extend_from_slice(colours);
    b
}

fn parsed(bpp: u8, colours: &[u8]) -> Framebuffer {
    let blob = Mbi::new()
        .mmap(&[(0, 0x9f000, 1), (0x10_0000, 0x7f00_0000, 1)], 24)
        .tag(8, &tag_body(bpp, colours))
        .finish();
    let info = multiboot2::parse(&Snapshot::new(&[(0x1_0000, &blob)]), 0x1_0000).unwrap();
    info.framebuffer.unwrap()
}

#[test]
fn deep_colour_channels_are_drawn_through_their_top_bits() {
    // x2r10g10b10: red at 20, green at 10, blue at 0, 10 bits each.
    let fb = parsed(32, &[20, 10, 10, 10, 0, 10]);
    assert_eq!(fb.channel_sizes, [10, 10, 10]);
    assert_eq!(fb.shifts(), Some([22, 12, 2]));
    // The usual 8-bit channels are where they are, in either order.
    assert_eq!(parsed(32, &[16, 8, 8, 8, 0, 8]).shifts(), Some([16, 8, 0]));
    assert_eq!(parsed(24, &[0, 8, 8, 8, 16, 8]).shifts(), Some([0, 8, 16]));
    // Without colour information: 8 bits at 16, 8, 0.
    assert_eq!(parsed(32, &[]).shifts(), Some([16, 8, 0]));
}

#[test]
fn channels_narrower_than_eight_bits_cannot_take_eight_bit_colours() {
    // 5:6:5 positions in a tag that claims 32 bits per pixel.
    assert_eq!(parsed(32, &[11, 5, 5, 6, 0, 5]).shifts(), None);
    // A size that would put the top bits past bit 255.
    assert_eq!(parsed(32, &[250, 20, 8, 8, 0, 8]).shifts(), None);
}
