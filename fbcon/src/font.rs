//! The console font: Spleen 8x16 (BSD-2, by Frederic Cambus) as shipped by the `spleen-font`
//! crate, whose first 128 glyphs are ASCII.
//!
//! Chosen by measurement (docs/boards.md): 1 bit per pixel, so a cell is drawn with two
//! colours and can be matched exactly against the same glyph on the host; 8x16 is the VGA
//! text cell, readable on an 800x600 screen (100x37 cells).
//!
//! The crate ships the 8x16 size as a PSF1 file (magic 0x36 0x04, mode, glyph height), and
//! its loader (0.2.0) reads the mode and height bytes swapped, giving 3-line glyphs. So the
//! glyphs are taken from the file here, after checking its header: 4 bytes, then 256 or 512
//! glyphs of 16 bytes, one byte per row.

/// Glyph width in pixels.
pub const WIDTH: usize = 8;
/// Glyph height in pixels.
pub const HEIGHT: usize = 16;

/// The glyphs for ASCII 0x00-0x7f, one byte per row (bit 7 = leftmost pixel).
#[derive(Clone, Copy)]
pub struct Font {
    glyphs: &'static [u8],
}

impl Font {
    /// The Spleen 8x16 font, or `None` if the embedded file is not an 8x16 PSF2 font with
    /// at least 128 glyphs (it is; the check keeps `glyph` free of assumptions).
    pub fn spleen() -> Option<Font> {
        Font::from_psf1(spleen_font::FONT_8X16)
    }

    /// The ASCII glyphs of an 8x16 PSF1 file.
    pub fn from_psf1(file: &'static [u8]) -> Option<Font> {
        match file {
            [0x36, 0x04, _mode, height, rest @ ..] if usize::from(*height) == HEIGHT => {
                rest.get(..128 * HEIGHT).map(|glyphs| Font { glyphs })
            }
            _ => None,
        }
    }

    /// The 16 rows of the glyph for `byte` (`?` for bytes outside ASCII).
    pub fn glyph(&self, byte: u8) -> &'static [u8] {
        let index = if byte < 0x80 { byte } else { b'?' } as usize * HEIGHT;
        let glyphs: &'static [u8] = self.glyphs;
        glyphs.get(index..index + HEIGHT).unwrap_or(&[0; HEIGHT])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_glyphs() {
        let font = Font::spleen().expect("spleen 8x16");
        // 'A' in Spleen 8x16, read off the file with xxd (rows 2-11 hold the letter).
        assert_eq!(
            font.glyph(b'A'),
            [
                0, 0, 0x7c, 0xc6, 0xc6, 0xc6, 0xfe, 0xc6, 0xc6, 0xc6, 0xc6, 0xc6, 0, 0, 0, 0
            ]
        );
        assert!(font.glyph(b' ').iter().all(|&r| r == 0), "space is empty");
        assert!(font.glyph(b'A').iter().any(|&r| r != 0), "A has pixels");
        assert_eq!(font.glyph(0xc3), font.glyph(b'?'));
    }

    #[test]
    fn other_files_are_refused() {
        assert!(Font::from_psf1(&[]).is_none());
        assert!(
            Font::from_psf1(&[0x36, 0x04, 0, 8, 0, 0]).is_none(),
            "8-line glyphs"
        );
        assert!(
            Font::from_psf1(&[0x36, 0x04, 0, 16, 0, 0]).is_none(),
            "truncated"
        );
        assert!(Font::from_psf1(&[0x72, 0xb5, 0x4a, 0x86]).is_none(), "PSF2");
    }
}
