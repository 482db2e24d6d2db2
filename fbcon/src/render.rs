//! Drawing a [`Grid`] into a linear framebuffer: pixel formats, the cell layout, and a
//! [`Screen`] that remembers what it drew.
//!
//! A framebuffer is `height` lines of `pitch` bytes; a pixel is 3 or 4 bytes, little-endian,
//! with red, green and blue at the bit positions the loader reported (usually 16, 8, 0).
//! Cells are 8x16 pixels from the top-left corner; the right and bottom margins that do not
//! hold a whole cell stay background.
//!
//! [`Screen`] keeps a copy of every cell as last drawn (character, colours, cursor or not). A
//! flush compares the grid with that copy and draws only the differences: after a scroll that
//! is most cells, but the framebuffer is only ever written, never read.

use alloc::vec;
use alloc::vec::Vec;

use crate::font::{self, Font};
use crate::grid::{Cell, Grid};

/// The 16 colours as 0xRRGGBB: the VGA text-mode palette in ANSI order (black, red, green,
/// yellow, blue, magenta, cyan, white, then the bright ones).
pub const PALETTE: [u32; 16] = [
    0x000000, 0xaa0000, 0x00aa00, 0xaa5500, 0x0000aa, 0xaa00aa, 0x00aaaa, 0xaaaaaa, 0x555555,
    0xff5555, 0x55ff55, 0xffff55, 0x5555ff, 0xff55ff, 0x55ffff, 0xffffff,
];

/// The largest width or height in pixels [`Layout::new`] accepts.
pub const MAX_SIDE: u32 = 16384;

/// The largest pitch in bytes [`Layout::new`] accepts: a line of [`MAX_SIDE`] pixels of 4
/// bytes. Real pitches exceed the line's bytes only by alignment padding; a larger one is a
/// broken tag, and `pitch * height` bytes of address space from the framebuffer's start
/// would be mapped and written, reaching whatever devices lie beyond the screen's memory.
pub const MAX_PITCH: u32 = MAX_SIDE * 4;

/// How a pixel is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelFormat {
    bytes: usize,
    shifts: [u8; 3],
}

impl PixelFormat {
    /// A format of `bpp` bits per pixel (24 or 32) with red, green and blue at the bit
    /// positions `channels` (8 bits each), or `None` if that does not fit.
    pub fn new(bpp: u8, channels: [u8; 3]) -> Option<PixelFormat> {
        if bpp != 24 && bpp != 32 {
            return None;
        }
        if channels.iter().any(|&s| u32::from(s) + 8 > u32::from(bpp)) {
            return None;
        }
        Some(PixelFormat {
            bytes: usize::from(bpp / 8),
            shifts: channels,
        })
    }

    /// Bytes per pixel (3 or 4).
    pub fn bytes_per_pixel(&self) -> usize {
        self.bytes
    }

    /// The bytes of a pixel of colour 0xRRGGBB (the first [`Self::bytes_per_pixel`] count).
    pub fn encode(&self, rgb: u32) -> [u8; 4] {
        let [r, g, b] = [rgb >> 16 & 0xff, rgb >> 8 & 0xff, rgb & 0xff];
        let value = r << self.shifts[0] | g << self.shifts[1] | b << self.shifts[2];
        value.to_le_bytes()
    }

    /// The colour 0xRRGGBB of a stored pixel (for tests and screenshots).
    pub fn decode(&self, pixel: &[u8]) -> u32 {
        let mut bytes = [0u8; 4];
        for (d, s) in bytes.iter_mut().zip(pixel.iter().take(self.bytes)) {
            *d = *s;
        }
        let value = u32::from_le_bytes(bytes);
        let [r, g, b] = self.shifts.map(|s| value >> s & 0xff);
        r << 16 | g << 8 | b
    }
}

/// Why a framebuffer cannot hold the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Not 24 or 32 bits per pixel, or channels outside the pixel.
    UnsupportedFormat {
        /// Bits per pixel.
        bpp: u8,
    },
    /// Smaller than one cell.
    TooSmall {
        /// Pixels per line.
        width: u32,
        /// Lines.
        height: u32,
    },
    /// A line of pixels does not fit in the pitch.
    PitchTooSmall {
        /// Bytes per line given.
        pitch: u32,
        /// Bytes a line of pixels needs.
        needed: u64,
    },
    /// The buffer's size does not fit in the address space.
    TooLarge,
    /// The pitch is above [`MAX_PITCH`].
    PitchTooLarge {
        /// Bytes per line given.
        pitch: u32,
    },
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::UnsupportedFormat { bpp } => {
                write!(f, "{bpp} bits per pixel (only 24 and 32 are drawn)")
            }
            LayoutError::TooSmall { width, height } => {
                write!(f, "{width}x{height} is smaller than one 8x16 cell")
            }
            LayoutError::PitchTooSmall { pitch, needed } => {
                write!(f, "pitch {pitch} is less than a line's {needed} bytes")
            }
            LayoutError::TooLarge => write!(f, "the framebuffer's size overflows"),
            LayoutError::PitchTooLarge { pitch } => {
                write!(
                    f,
                    "pitch {pitch} is above the largest real one ({MAX_PITCH})"
                )
            }
        }
    }
}

/// A framebuffer's geometry and the grid of cells that fits on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    width: u32,
    height: u32,
    pitch: usize,
    format: PixelFormat,
    cols: usize,
    rows: usize,
}

impl Layout {
    /// Validates a framebuffer's description (as a loader reports it).
    pub fn new(
        width: u32,
        height: u32,
        pitch: u32,
        bpp: u8,
        channels: [u8; 3],
    ) -> Result<Layout, LayoutError> {
        let format =
            PixelFormat::new(bpp, channels).ok_or(LayoutError::UnsupportedFormat { bpp })?;
        let cols = width as usize / font::WIDTH;
        let rows = height as usize / font::HEIGHT;
        if cols == 0 || rows == 0 {
            return Err(LayoutError::TooSmall { width, height });
        }
        let needed = u64::from(width) * format.bytes as u64;
        if u64::from(pitch) < needed {
            return Err(LayoutError::PitchTooSmall { pitch, needed });
        }
        // No screen is larger (8K is 7680x4320): bigger figures are a broken tag, and the
        // grid and the screen's record of it would not fit in the heap.
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(LayoutError::TooLarge);
        }
        if pitch > MAX_PITCH {
            return Err(LayoutError::PitchTooLarge { pitch });
        }
        let layout = Layout {
            width,
            height,
            pitch: pitch as usize,
            format,
            cols,
            rows,
        };
        (pitch as usize)
            .checked_mul(height as usize)
            .ok_or(LayoutError::TooLarge)?;
        Ok(layout)
    }

    /// Bytes the framebuffer spans (`pitch * height`).
    pub fn len(&self) -> usize {
        self.pitch * self.height as usize
    }

    /// Whether the framebuffer is empty (never: [`Layout::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Columns of cells.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows of cells.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Pixels per line.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Lines.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes per line.
    pub fn pitch(&self) -> usize {
        self.pitch
    }

    /// The pixel format.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// Draws one cell (inverted when it holds the cursor). Lines outside `fb` are skipped.
    pub fn draw_cell(
        &self,
        font: &Font,
        fb: &mut [u8],
        col: usize,
        row: usize,
        cell: Cell,
        cursor: bool,
    ) {
        if col >= self.cols || row >= self.rows {
            return;
        }
        let (mut fg, mut bg) = (
            PALETTE[usize::from(cell.fg & 15)],
            PALETTE[usize::from(cell.bg & 15)],
        );
        if cursor {
            core::mem::swap(&mut fg, &mut bg);
        }
        let bpp = self.format.bytes;
        let (fg, bg) = (self.format.encode(fg), self.format.encode(bg));
        let glyph = font.glyph(cell.ch);
        let mut line = [0u8; font::WIDTH * 4];
        let line = &mut line[..font::WIDTH * bpp];
        for (y, bits) in glyph.iter().enumerate() {
            for (x, pixel) in line.chunks_exact_mut(bpp).enumerate() {
                let on = bits & (0x80 >> x) != 0;
                pixel.copy_from_slice(&(if on { fg } else { bg })[..bpp]);
            }
            let start = (row * font::HEIGHT + y) * self.pitch + col * font::WIDTH * bpp;
            if let Some(dest) = fb.get_mut(start..start + line.len()) {
                dest.copy_from_slice(line);
            }
        }
    }
}

/// What is on the framebuffer, as cells.
///
/// # Invariants
/// `drawn.len() == layout.cols() * layout.rows()`; `drawn[i]` is what cell `i` of `fb` shows
/// (with the cursor flag), or `None` when unknown.
pub struct Screen {
    layout: Layout,
    font: Font,
    drawn: Vec<Option<(Cell, bool)>>,
}

impl Screen {
    /// A screen whose contents are unknown (the first flush draws every cell).
    pub fn new(layout: Layout, font: Font) -> Screen {
        // INVARIANT: one entry per cell, all unknown.
        Screen {
            drawn: vec![None; layout.cols * layout.rows],
            layout,
            font,
        }
    }

    /// [`Screen::new`], or `None` when the record of the cells does not fit in memory.
    pub fn try_new(layout: Layout, font: Font) -> Option<Screen> {
        let len = layout.cols.checked_mul(layout.rows)?;
        let mut drawn = Vec::new();
        drawn.try_reserve_exact(len).ok()?;
        drawn.resize(len, None);
        // INVARIANT: one entry per cell, all unknown.
        Some(Screen {
            drawn,
            layout,
            font,
        })
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Forgets what was drawn: the next flush draws every cell (after a draw that may have
    /// been interrupted).
    pub fn invalidate(&mut self) {
        self.drawn.fill(None);
    }

    /// Paints the whole framebuffer, margins included, in the background colour, and forgets
    /// what was drawn.
    pub fn clear(&mut self, fb: &mut [u8]) {
        let bg = self.layout.format.encode(PALETTE[0]);
        let bpp = self.layout.format.bytes;
        let row_bytes = self.layout.width as usize * bpp;
        for line in 0..self.layout.height as usize {
            let start = line * self.layout.pitch;
            if let Some(dest) = fb.get_mut(start..start + row_bytes) {
                for pixel in dest.chunks_exact_mut(bpp) {
                    pixel.copy_from_slice(&bg[..bpp]);
                }
            }
        }
        self.invalidate();
    }

    /// Draws every cell of `grid` that differs from what `fb` shows; returns how many.
    pub fn flush(&mut self, grid: &Grid, fb: &mut [u8]) -> usize {
        let cols = self.layout.cols.min(grid.cols());
        let rows = self.layout.rows.min(grid.rows());
        let cursor = grid.cursor();
        let mut drawn = 0;
        for row in 0..rows {
            for col in 0..cols {
                let want = (grid.cell(col, row), (col, row) == cursor);
                let slot = &mut self.drawn[row * self.layout.cols + col];
                if *slot != Some(want) {
                    self.layout
                        .draw_cell(&self.font, fb, col, row, want.0, want.1);
                    *slot = Some(want);
                    drawn += 1;
                }
            }
        }
        drawn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spleen() -> Font {
        Font::spleen().unwrap()
    }

    /// Reads cell (`col`, `row`) back as 16 rows of bits: 1 where the pixel is not `bg`.
    fn read_cell(layout: &Layout, fb: &[u8], col: usize, row: usize, bg: u32) -> Vec<u8> {
        let bpp = layout.format().bytes_per_pixel();
        (0..16)
            .map(|y| {
                let line = (row * 16 + y) * layout.pitch() + col * 8 * bpp;
                (0..8).fold(0u8, |bits, x| {
                    let p = &fb[line + x * bpp..line + (x + 1) * bpp];
                    bits | (u8::from(layout.format().decode(p) != bg) << (7 - x))
                })
            })
            .collect()
    }

    #[test]
    fn pixel_formats() {
        let bgr32 = PixelFormat::new(32, [16, 8, 0]).unwrap();
        assert_eq!(bgr32.encode(0x123456), [0x56, 0x34, 0x12, 0]);
        let rgb24 = PixelFormat::new(24, [0, 8, 16]).unwrap();
        assert_eq!(&rgb24.encode(0x123456)[..3], &[0x12, 0x34, 0x56]);
        assert_eq!(rgb24.decode(&[0x12, 0x34, 0x56]), 0x123456);
        assert_eq!(bgr32.decode(&[0x56, 0x34, 0x12, 0xff]), 0x123456);
        assert!(PixelFormat::new(16, [11, 5, 0]).is_none());
        assert!(PixelFormat::new(8, [0, 0, 0]).is_none());
        assert!(
            PixelFormat::new(24, [17, 8, 0]).is_none(),
            "red past bit 23"
        );
    }

    #[test]
    fn layouts_are_validated() {
        let l = Layout::new(800, 600, 2400, 24, [16, 8, 0]).unwrap();
        assert_eq!((l.cols(), l.rows(), l.len()), (100, 37, 2400 * 600));
        assert_eq!(
            Layout::new(800, 600, 2000, 24, [16, 8, 0]),
            Err(LayoutError::PitchTooSmall {
                pitch: 2000,
                needed: 2400
            })
        );
        assert_eq!(
            Layout::new(7, 600, 2400, 32, [16, 8, 0]),
            Err(LayoutError::TooSmall {
                width: 7,
                height: 600
            })
        );
        assert_eq!(
            Layout::new(800, 600, 3200, 15, [10, 5, 0]),
            Err(LayoutError::UnsupportedFormat { bpp: 15 })
        );
        assert!(Layout::new(0, 0, 0, 32, [16, 8, 0]).is_err());
        let l = Layout::new(u32::MAX, u32::MAX, u32::MAX, 24, [16, 8, 0]);
        assert!(matches!(l, Err(LayoutError::PitchTooSmall { .. })));
    }

    /// Every glyph drawn at 24 and 32 bpp, with odd pitches, reads back as the font's bits.
    #[test]
    fn cells_read_back_as_their_glyphs() {
        let font = spleen();
        for (bpp, pitch) in [(24u8, 3 * 40 + 5), (32, 4 * 40 + 12)] {
            let layout = Layout::new(40, 37, pitch, bpp, [16, 8, 0]).unwrap();
            assert_eq!((layout.cols(), layout.rows()), (5, 2));
            let mut fb = vec![0xeeu8; layout.len()];
            let mut screen = Screen::new(layout, font);
            screen.clear(&mut fb);
            let mut grid = Grid::new(5, 2).unwrap();
            for chunk in (0x20u8..0x7f).collect::<Vec<_>>().chunks(8) {
                grid.write(b"\x1b[2J");
                grid.write(chunk);
                screen.flush(&grid, &mut fb);
                for (i, &ch) in chunk.iter().enumerate() {
                    let (col, row) = (i % 5, i / 5);
                    assert_eq!(
                        read_cell(&layout, &fb, col, row, PALETTE[0]),
                        font.glyph(ch),
                        "{:?} at {bpp} bpp",
                        ch as char
                    );
                }
            }
            // The margins (right 0 px, bottom 5 lines; bytes past the width in each line) are
            // background or untouched, never glyph pixels.
            for line in 32..37 {
                let start = line * pitch as usize;
                assert!(
                    fb[start..start + 40 * usize::from(bpp / 8)]
                        .iter()
                        .all(|&b| b == 0)
                );
            }
            let past_width = 40 * usize::from(bpp / 8)..pitch as usize;
            assert!(
                fb[past_width].iter().all(|&b| b == 0xee),
                "padding untouched"
            );
        }
    }

    #[test]
    fn cursor_is_inverted_and_moves() {
        let font = spleen();
        let layout = Layout::new(80, 32, 320, 32, [16, 8, 0]).unwrap();
        let mut fb = vec![0u8; layout.len()];
        let mut screen = Screen::new(layout, font);
        let mut grid = Grid::new(10, 2).unwrap();
        grid.write(b"ab");
        screen.flush(&grid, &mut fb);
        // The cursor cell (2, 0) is a space drawn inverted: all light grey.
        let fg = PALETTE[7];
        assert_eq!(
            read_cell(&layout, &fb, 2, 0, fg),
            [0u8; 16],
            "all foreground"
        );
        grid.write(b"c");
        assert_eq!(
            screen.flush(&grid, &mut fb),
            2,
            "old and new cursor cells only"
        );
        assert_eq!(read_cell(&layout, &fb, 2, 0, PALETTE[0]), font.glyph(b'c'));
    }

    #[test]
    fn flush_draws_only_what_changed() {
        let font = spleen();
        let layout = Layout::new(80, 48, 240, 24, [16, 8, 0]).unwrap();
        let mut fb = vec![0u8; layout.len()];
        let mut screen = Screen::new(layout, font);
        let mut grid = Grid::new(10, 3).unwrap();
        assert_eq!(
            screen.flush(&grid, &mut fb),
            30,
            "first flush draws everything"
        );
        assert_eq!(screen.flush(&grid, &mut fb), 0);
        grid.write(b"hi");
        assert_eq!(
            screen.flush(&grid, &mut fb),
            3,
            "h, i and the cursor's two cells"
        );
        // A write the device did not keep (here: the buffer overwritten) is redrawn only
        // after invalidate: the screen never reads the framebuffer.
        fb.fill(0x55);
        assert_eq!(screen.flush(&grid, &mut fb), 0);
        screen.invalidate();
        assert_eq!(screen.flush(&grid, &mut fb), 30);
        assert_eq!(read_cell(&layout, &fb, 0, 0, PALETTE[0]), font.glyph(b'h'));
    }

    #[test]
    fn scrolling_redraws_from_the_model() {
        let font = spleen();
        let layout = Layout::new(64, 48, 256, 32, [16, 8, 0]).unwrap();
        let mut fb = vec![0u8; layout.len()];
        let mut screen = Screen::new(layout, font);
        let mut grid = Grid::new(8, 3).unwrap();
        grid.write(b"one\ntwo\nthree\nfour");
        screen.flush(&grid, &mut fb);
        for (row, text) in ["two", "three", "four"].iter().enumerate() {
            for (col, ch) in text.bytes().enumerate() {
                assert_eq!(
                    read_cell(&layout, &fb, col, row, PALETTE[0]),
                    font.glyph(ch)
                );
            }
        }
    }

    #[test]
    fn a_short_buffer_is_not_overrun() {
        let font = spleen();
        let layout = Layout::new(64, 48, 256, 32, [16, 8, 0]).unwrap();
        let mut fb = vec![0u8; layout.len() / 2];
        let mut screen = Screen::new(layout, font);
        let mut grid = Grid::new(8, 3).unwrap();
        grid.write(b"abcdefgh\nijklmnop\nqrstuvwx");
        screen.flush(&grid, &mut fb);
        screen.clear(&mut fb);
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// A framebuffer tag with sizes no screen has: every field fits its `u32`, and
    /// `pitch * height` (16 EiB) still fits a 64-bit `usize`. `Layout::new` refuses it, so
    /// the kernel never sizes a text grid or a screen record (3.6e16 cells) from it.
    #[test]
    fn an_absurd_framebuffer_is_refused_by_layout() {
        let l = Layout::new(u32::MAX / 4, u32::MAX, u32::MAX, 32, [16, 8, 0]);
        assert!(l.is_err(), "{l:?}");
        let l = Layout::new(MAX_SIDE + 1, 768, (MAX_SIDE + 1) * 4, 32, [16, 8, 0]);
        assert!(l.is_err(), "{l:?}");
    }
}

#[cfg(test)]
mod geometry_fuzz {
    use super::*;

    /// 20 000 random geometries (sizes 0 to 90 and `u32::MAX`, odd depths, pitches and
    /// channel positions, framebuffers shorter than the layout): nothing panics, nothing is
    /// written past the buffer or into the pitch padding.
    #[test]
    fn odd_geometries_never_panic_or_write_outside() {
        let font = Font::spleen().unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut accepted = 0;
        for _ in 0..20000 {
            let width = next(90) as u32;
            let height = next(70) as u32;
            let bpp = [0u8, 1, 8, 15, 16, 24, 32, 33, 255][next(9) as usize];
            let pitch = next(400) as u32;
            let ch = if next(2) == 0 {
                [16, 8, 0]
            } else {
                [next(40) as u8, next(40) as u8, next(40) as u8]
            };
            for &(w, h, p) in &[
                (width, height, pitch),
                (u32::MAX, height, pitch),
                (width, u32::MAX, pitch),
                (width, height, u32::MAX),
            ] {
                let Ok(layout) = Layout::new(w, h, p, bpp, ch) else {
                    continue;
                };
                if layout.len() > 1 << 22 {
                    continue;
                }
                accepted += 1;
                let len = layout.len();
                let short = next(len as u64 + 1) as usize;
                for fb_len in [len, short] {
                    let mut fb = vec![0u8; fb_len + 64];
                    for b in &mut fb[fb_len..] {
                        *b = 0xa5;
                    }
                    let (fb_main, _) = fb.split_at_mut(fb_len);
                    let mut screen = Screen::new(layout, font);
                    let mut grid = Grid::new(
                        layout.cols() + next(3) as usize,
                        layout.rows() + next(3) as usize,
                    )
                    .unwrap();
                    screen.clear(fb_main);
                    grid.write(b"hello\x1b[31mworld\n\t\x08\x1b[99;99Hz");
                    screen.flush(&grid, fb_main);
                    assert!(fb[fb_len..].iter().all(|&b| b == 0xa5));
                    // Nothing beyond the pixels of each line (the pitch padding) is written.
                    let row_bytes = layout.width() as usize * layout.format().bytes_per_pixel();
                    for line in 0..layout.height() as usize {
                        let s = line * layout.pitch() + row_bytes;
                        let e = ((line + 1) * layout.pitch()).min(fb_len);
                        if s < e {
                            assert!(fb[s..e].iter().all(|&b| b == 0), "padding written");
                        }
                    }
                }
            }
        }
        assert!(accepted > 100, "{accepted}");
    }
}
