//! A framebuffer tag with an absurd pitch is refused, not mapped and drawn on.
//!
//! The kernel maps `pitch * height` bytes from the framebuffer's address and draws each
//! line at `line * pitch`. With a pitch of megabytes the lines land far beyond the screen's
//! memory: from a framebuffer at 0xC000_0000, a 4 MiB pitch puts line 251 at 0xFEC0_0000,
//! the IOAPIC's registers, and the first pixels of that line over its index and data
//! registers. No real screen has a line longer than 16384 pixels of 4 bytes.

use fbcon::render::{MAX_PITCH, MAX_SIDE};
use fbcon::{Layout, LayoutError};

#[test]
fn a_pitch_of_megabytes_is_refused() {
    let pitch = 4 << 20;
    assert_eq!(
        Layout::new(1024, 256, pitch, 32, [16, 8, 0]),
        Err(LayoutError::PitchTooLarge { pitch })
    );
    assert_eq!(
        Layout::new(8, 16, u32::MAX, 24, [16, 8, 0]),
        Err(LayoutError::PitchTooLarge { pitch: u32::MAX })
    );
    let e = LayoutError::PitchTooLarge { pitch }.to_string();
    assert!(e.contains("4194304"), "{e}");
}

#[test]
fn real_pitches_are_kept() {
    // Padding to a power of two (1366 px at 32 bpp: 8192 bytes), 8K, and the largest.
    for (width, pitch) in [
        (1366, 8192),
        (1920, 7680),
        (7680, 30720),
        (MAX_SIDE, MAX_PITCH),
    ] {
        let layout = Layout::new(width, 768, pitch, 32, [16, 8, 0]);
        assert!(layout.is_ok(), "{width} px, pitch {pitch}: {layout:?}");
    }
    assert_eq!(MAX_PITCH, MAX_SIDE * 4);
}
