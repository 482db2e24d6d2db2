//! The text model: a grid of character cells, a cursor, and the byte stream that changes them.
//!
//! Bytes are interpreted as a serial terminal would show the same stream:
//!
//! - printable ASCII is put at the cursor, which advances; writing past the last column wraps
//!   to the next line (deferred, as VT100s do: the wrap happens at the next printable byte);
//! - LF moves to the start of the next line (the serial side sends CR LF for it), CR to the
//!   start of this line, BS one cell left (the line editor erases with BS, space, BS), TAB to
//!   the next multiple of 8; other control bytes are ignored;
//! - BS follows the cursor's place in the text rather than VT100's quirks, so that a line
//!   editor which moves left with BS and right by reprinting works on lines longer than the
//!   screen: BS while a wrap is pending goes to the last column (the cell just written), and
//!   BS at the start of a row that the text wrapped into goes to the end of the row above
//!   (what xterm calls reverse wraparound, there an option);
//! - bytes >= 0x80 (UTF-8) show as one `?` per character;
//! - `ESC [ params final` (CSI): `m` colours (0, 1, 22, 30-37, 39, 40-47, 49, 90-97, 100-107),
//!   `K` erase in line, `J` erase in display (`2J` clears), `H`/`f` cursor position,
//!   `A`/`B`/`C`/`D` cursor moves; other sequences are consumed and ignored;
//! - below the last line the grid scrolls: rows move up in memory and the rows uncovered
//!   are blank. By default one row at a time; [`Grid::set_scroll_step`] makes it jump
//!   several, so that a screen which must be redrawn after every scroll (a framebuffer
//!   without hardware panning) is redrawn once per step instead of once per line.
//!
//! Nothing here can panic on any input: positions are clamped, parameters saturate.

use alloc::vec::Vec;

/// Palette index of the default foreground (light grey).
pub const DEFAULT_FG: u8 = 7;
/// Palette index of the default background (black).
pub const DEFAULT_BG: u8 = 0;

/// One character cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The character (ASCII).
    pub ch: u8,
    /// Foreground palette index (0-15).
    pub fg: u8,
    /// Background palette index (0-15).
    pub bg: u8,
}

impl Cell {
    /// A space in the default colours.
    pub const BLANK: Cell = Cell {
        ch: b' ',
        fg: DEFAULT_FG,
        bg: DEFAULT_BG,
    };
}

/// Where the escape-sequence parser is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    /// Plain text.
    None,
    /// After ESC.
    Esc,
    /// Inside `ESC [`, collecting parameters.
    Csi,
}

/// At most this many CSI parameters are kept (more are dropped).
const MAX_PARAMS: usize = 8;

/// A grid of `cols` x `rows` cells with a cursor.
///
/// # Invariants
/// `cells.len() == cols * rows`, `wrapped.len() == rows`, `cols >= 1`, `rows >= 1`,
/// `row < rows`, `col <= cols` (`col == cols` means a wrap is pending).
#[derive(Clone, Debug)]
pub struct Grid {
    cols: usize,
    rows: usize,
    cells: Vec<Cell>,
    /// Per row: whether the text wrapped into it from the row above (BS may go back up).
    wrapped: Vec<bool>,
    col: usize,
    row: usize,
    fg: u8,
    bg: u8,
    bold: bool,
    escape: Escape,
    params: [u16; MAX_PARAMS],
    param_count: usize,
    scrolled: u64,
    step: usize,
}

impl Grid {
    /// An empty grid, or `None` for a zero dimension.
    pub fn new(cols: usize, rows: usize) -> Option<Grid> {
        if cols == 0 || rows == 0 {
            return None;
        }
        let len = cols.checked_mul(rows)?;
        // Fallible: a size the heap cannot hold is refused, not a panic or an abort.
        let mut cells = Vec::new();
        cells.try_reserve_exact(len).ok()?;
        cells.resize(len, Cell::BLANK);
        let mut wrapped = Vec::new();
        wrapped.try_reserve_exact(rows).ok()?;
        wrapped.resize(rows, false);
        // INVARIANT: the cell vector matches the dimensions; the cursor is at the origin.
        Some(Grid {
            cols,
            rows,
            cells,
            wrapped,
            col: 0,
            row: 0,
            fg: DEFAULT_FG,
            bg: DEFAULT_BG,
            bold: false,
            escape: Escape::None,
            params: [0; MAX_PARAMS],
            param_count: 0,
            scrolled: 0,
            step: 1,
        })
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The cell at (`col`, `row`); a blank outside the grid.
    pub fn cell(&self, col: usize, row: usize) -> Cell {
        if col >= self.cols || row >= self.rows {
            return Cell::BLANK;
        }
        self.cells[row * self.cols + col]
    }

    /// The cursor as (column, row); the column is clamped to the last one while a wrap is
    /// pending.
    pub fn cursor(&self) -> (usize, usize) {
        (self.col.min(self.cols - 1), self.row)
    }

    /// Scroll by `step` rows at a time (clamped to 1..=rows).
    pub fn set_scroll_step(&mut self, step: usize) {
        self.step = step.clamp(1, self.rows);
    }

    /// How many lines have scrolled off the top so far.
    pub fn scrolled(&self) -> u64 {
        self.scrolled
    }

    /// The characters of `row`, trailing spaces removed.
    pub fn row_text(&self, row: usize) -> alloc::string::String {
        let text: alloc::string::String = (0..self.cols)
            .map(|c| self.cell(c, row).ch as char)
            .collect();
        alloc::string::String::from(text.trim_end())
    }

    /// Feeds a byte stream.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        match self.escape {
            Escape::None => self.plain(b),
            Escape::Esc => {
                if b == b'[' {
                    self.escape = Escape::Csi;
                    self.params = [0; MAX_PARAMS];
                    self.param_count = 0;
                } else {
                    // Two-byte sequences (ESC c, ESC 7, ...) are ignored.
                    self.escape = Escape::None;
                }
            }
            Escape::Csi => self.csi(b),
        }
    }

    fn plain(&mut self, b: u8) {
        match b {
            b'\n' => self.newline(),
            b'\r' => self.col = 0,
            0x08 => self.back(),
            b'\t' => {
                let next = (self.col / 8 + 1) * 8;
                self.col = next.min(self.cols - 1).max(self.col.min(self.cols - 1));
            }
            0x1b => self.escape = Escape::Esc,
            0x20..=0x7e => self.put(b),
            // UTF-8 continuation bytes belong to the character already shown as `?`.
            0x80..=0xbf => {}
            0xc0..=0xff => self.put(b'?'),
            _ => {}
        }
    }

    fn csi(&mut self, b: u8) {
        match b {
            b'0'..=b'9' => {
                let index = self.param_count.max(1) - 1;
                if self.param_count == 0 {
                    self.param_count = 1;
                }
                if let Some(p) = self.params.get_mut(index) {
                    *p = p.saturating_mul(10).saturating_add(u16::from(b - b'0'));
                }
            }
            b';' => {
                // An empty first parameter still counts.
                self.param_count = (self.param_count.max(1) + 1).min(MAX_PARAMS + 1);
            }
            0x40..=0x7e => {
                self.escape = Escape::None;
                self.execute_csi(b);
            }
            // Intermediate and private-marker bytes (`?`, space, ...) are skipped.
            0x20..=0x3f => {}
            // Anything else aborts the sequence.
            _ => self.escape = Escape::None,
        }
    }

    /// Parameter `i`, or `default` when absent or 0.
    fn param(&self, i: usize, default: u16) -> u16 {
        match self.params.get(i) {
            Some(&p) if i < self.param_count && p != 0 => p,
            _ => default,
        }
    }

    fn execute_csi(&mut self, final_byte: u8) {
        let n = usize::from(self.param(0, 1));
        match final_byte {
            b'm' => self.sgr(),
            b'K' => {
                let (from, to) = match self.param(0, 0) {
                    0 => (self.col.min(self.cols), self.cols),
                    1 => (0, (self.col + 1).min(self.cols)),
                    _ => (0, self.cols),
                };
                self.clear_row_range(self.row, from, to);
            }
            b'J' => match self.param(0, 0) {
                2 | 3 => {
                    let blank = self.blank();
                    self.cells.fill(blank);
                    self.wrapped.fill(false);
                    self.col = 0;
                    self.row = 0;
                }
                0 => {
                    self.clear_row_range(self.row, self.col.min(self.cols), self.cols);
                    for r in self.row + 1..self.rows {
                        self.clear_row_range(r, 0, self.cols);
                    }
                }
                _ => {}
            },
            b'H' | b'f' => {
                self.row = usize::from(self.param(0, 1) - 1).min(self.rows - 1);
                self.col = usize::from(self.param(1, 1) - 1).min(self.cols - 1);
            }
            b'A' => {
                self.col = self.col.min(self.cols - 1);
                self.row = self.row.saturating_sub(n);
            }
            b'B' => {
                self.col = self.col.min(self.cols - 1);
                self.row = self.row.saturating_add(n).min(self.rows - 1);
            }
            b'C' => self.col = self.col.saturating_add(n).min(self.cols - 1),
            b'D' => self.col = self.col.min(self.cols - 1).saturating_sub(n),
            _ => {}
        }
    }

    /// Select Graphic Rendition: the 16 ANSI colours, bold as bright.
    fn sgr(&mut self) {
        let count = self.param_count.clamp(1, MAX_PARAMS);
        for i in 0..count {
            let p = if i < self.param_count {
                self.params[i]
            } else {
                0
            };
            match p {
                0 => {
                    self.fg = DEFAULT_FG;
                    self.bg = DEFAULT_BG;
                    self.bold = false;
                }
                1 => self.bold = true,
                22 => self.bold = false,
                30..=37 => self.fg = (p - 30) as u8,
                39 => self.fg = DEFAULT_FG,
                40..=47 => self.bg = (p - 40) as u8,
                49 => self.bg = DEFAULT_BG,
                90..=97 => self.fg = (p - 90) as u8 + 8,
                100..=107 => self.bg = (p - 100) as u8 + 8,
                _ => {}
            }
        }
    }

    fn blank(&self) -> Cell {
        Cell {
            ch: b' ',
            fg: self.fg,
            bg: self.bg,
        }
    }

    fn clear_row_range(&mut self, row: usize, from: usize, to: usize) {
        let blank = self.blank();
        let start = row * self.cols;
        if let Some(cells) = self.cells.get_mut(start + from..start + to.max(from)) {
            cells.fill(blank);
        }
    }

    /// BS: one cell back in the text (see the module's notes).
    fn back(&mut self) {
        if self.col >= self.cols {
            // A wrap is pending: the cursor is just past the last column.
            self.col = self.cols - 1;
        } else if self.col > 0 {
            self.col -= 1;
        } else if self.row > 0 && self.wrapped[self.row] {
            self.row -= 1;
            self.col = self.cols - 1;
        }
    }

    fn put(&mut self, ch: u8) {
        if self.col >= self.cols {
            self.newline();
            self.wrapped[self.row] = true;
        }
        let fg = if self.bold && self.fg < 8 {
            self.fg + 8
        } else {
            self.fg
        };
        let at = self.row * self.cols + self.col;
        if let Some(cell) = self.cells.get_mut(at) {
            *cell = Cell {
                ch,
                fg,
                bg: self.bg,
            };
        }
        self.col += 1;
    }

    /// To the start of the next row (scrolling below the last), which the text did not wrap
    /// into (the caller marks a wrap).
    fn newline(&mut self) {
        self.col = 0;
        if self.row + 1 < self.rows {
            self.row += 1;
            self.wrapped[self.row] = false;
            return;
        }
        // Scroll: rows `step..` move up `step` rows, the rows they leave become blank, and the
        // cursor goes to the first of those.
        let step = self.step.clamp(1, self.rows);
        self.cells.copy_within(step * self.cols.., 0);
        let first_blank = (self.rows - step) * self.cols;
        let blank = self.blank();
        self.cells[first_blank..].fill(blank);
        self.wrapped.copy_within(step.., 0);
        self.wrapped[self.rows - step..].fill(false);
        self.row = self.rows - step;
        self.scrolled += step as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(cols: usize, rows: usize, text: &str) -> Grid {
        let mut g = Grid::new(cols, rows).unwrap();
        g.write(text.as_bytes());
        g
    }

    fn rows(g: &Grid) -> Vec<String> {
        (0..g.rows()).map(|r| g.row_text(r)).collect()
    }

    #[test]
    fn zero_sizes_are_refused() {
        assert!(Grid::new(0, 5).is_none());
        assert!(Grid::new(5, 0).is_none());
        assert!(Grid::new(usize::MAX, 2).is_none());
    }

    #[test]
    fn lines_and_carriage_return() {
        let g = grid(10, 3, "abc\r\nde\rX\n");
        assert_eq!(rows(&g), ["abc", "Xe", ""]);
        assert_eq!(g.cursor(), (0, 2));
    }

    #[test]
    fn wraps_at_the_last_column_only_when_more_follows() {
        let g = grid(4, 3, "abcd");
        assert_eq!(rows(&g), ["abcd", "", ""]);
        assert_eq!(g.cursor(), (3, 0), "wrap pending, cursor clamped");
        let g = grid(4, 3, "abcdef");
        assert_eq!(rows(&g), ["abcd", "ef", ""]);
        // A line exactly as wide as the screen followed by LF takes one row, not two.
        let g = grid(4, 3, "abcd\nx");
        assert_eq!(rows(&g), ["abcd", "x", ""]);
    }

    #[test]
    fn scrolls_keeping_the_newest_lines() {
        let mut g = Grid::new(8, 3).unwrap();
        for i in 0..10 {
            g.write(format!("line {i}\n").as_bytes());
        }
        assert_eq!(rows(&g), ["line 8", "line 9", ""]);
        assert_eq!(g.scrolled(), 8);
    }

    #[test]
    fn jump_scrolling() {
        let mut g = Grid::new(8, 4).unwrap();
        g.set_scroll_step(3);
        g.write(b"a\nb\nc\nd\ne");
        // "e" did not fit: three rows went up at once, "e" is on the first uncovered row.
        assert_eq!(rows(&g), ["d", "e", "", ""]);
        assert_eq!((g.cursor(), g.scrolled()), ((1, 1), 3));
        g.write(b"\nf\ng\nh");
        assert_eq!(rows(&g), ["g", "h", "", ""]);
        // Steps outside 1..=rows are clamped; a step of all rows clears the screen.
        g.set_scroll_step(99);
        g.write(b"\n\n\nx");
        assert_eq!(rows(&g), ["x", "", "", ""]);
        g.set_scroll_step(0);
        g.write(b"\n1\n2\n3\n4");
        assert_eq!(rows(&g), ["1", "2", "3", "4"], "one row at a time again");
    }

    #[test]
    fn backspace_erases_as_the_line_editor_does() {
        let g = grid(20, 2, "kernel> helq\x08 \x08p");
        assert_eq!(g.row_text(0), "kernel> help");
        // BS at the start of a line stays there.
        let g = grid(5, 2, "\x08\x08a");
        assert_eq!(g.row_text(0), "a");
        // BS while a wrap is pending goes back to the last column, the cell just written.
        let g = grid(3, 2, "abc\x08X");
        assert_eq!(g.row_text(0), "abX");
        assert_eq!(g.cursor(), (2, 0));
        // BS at the start of a row the text wrapped into goes to the end of the row above.
        let g = grid(3, 2, "abcd\x08\x08X");
        assert_eq!(
            (g.row_text(0).as_str(), g.row_text(1).as_str()),
            ("abX", "d")
        );
        // ... but not across a real line break.
        let g = grid(3, 2, "abc\r\nd\x08\x08X");
        assert_eq!(
            (g.row_text(0).as_str(), g.row_text(1).as_str()),
            ("abc", "X")
        );
    }

    #[test]
    fn tabs_stop_at_multiples_of_eight() {
        let g = grid(20, 1, "a\tb\tc");
        assert_eq!(g.row_text(0), "a       b       c");
        let g = grid(10, 2, "a\t\t\tb");
        assert_eq!(g.row_text(0), "a        b");
    }

    #[test]
    fn utf8_shows_one_question_mark_per_character() {
        let g = grid(10, 1, "a\u{2192}b\u{e9}");
        assert_eq!(g.row_text(0), "a?b?");
    }

    #[test]
    fn colours_and_reset() {
        let g = grid(10, 1, "\x1b[31ma\x1b[1;44mb\x1b[0mc\x1b[92md\x1b[mx");
        assert_eq!(g.row_text(0), "abcdx");
        assert_eq!((g.cell(0, 0).fg, g.cell(0, 0).bg), (1, DEFAULT_BG));
        assert_eq!((g.cell(1, 0).fg, g.cell(1, 0).bg), (9, 4), "bold = bright");
        assert_eq!(
            g.cell(2, 0),
            Cell {
                ch: b'c',
                ..Cell::BLANK
            }
        );
        assert_eq!(g.cell(3, 0).fg, 10);
        assert_eq!(g.cell(4, 0).fg, DEFAULT_FG);
    }

    #[test]
    fn erase_and_cursor_moves() {
        let g = grid(10, 3, "hello\x1b[3D\x1b[K!");
        assert_eq!(g.row_text(0), "he!");
        let g = grid(10, 3, "one\ntwo\x1b[2Jx");
        assert_eq!(rows(&g), ["x", "", ""]);
        let g = grid(10, 3, "\x1b[2;4Hx\x1b[99;99Hy\x1b[Az");
        assert_eq!(rows(&g), ["", "   x     z", "         y"]);
        let g = grid(10, 2, "abcdef\x1b[4D\x1b[1K");
        assert_eq!(
            g.row_text(0),
            "   def",
            "erase from the start to the cursor"
        );
    }

    #[test]
    fn unknown_and_broken_sequences_are_consumed() {
        let g = grid(10, 1, "a\x1b[?25lb\x1bcc\x1b[1;2;3;4;5;6;7;8;9;10md");
        assert_eq!(g.row_text(0), "abcd");
        let g = grid(10, 1, "a\x1b[65535;65535;99999999mb\x1b[\x01c");
        assert_eq!(g.row_text(0), "abc");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic pseudo-random stream over every byte value, into tiny grids.
        let mut x: u32 = 0x1234_5678;
        for (cols, rows) in [(1, 1), (1, 3), (3, 1), (7, 5)] {
            let mut g = Grid::new(cols, rows).unwrap();
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                g.write(&[(x >> 8) as u8]);
                let (c, r) = g.cursor();
                assert!(c < cols && r < rows);
            }
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// A size whose cells fit `usize` but not memory (or not `isize`, where `vec!` panics
    /// with "capacity overflow") is refused with `None`, not a panic or an abort.
    #[test]
    fn a_huge_grid_is_refused_not_a_panic() {
        let r = std::panic::catch_unwind(|| Grid::new(usize::MAX / 4, 1).is_none());
        assert_eq!(
            r.ok(),
            Some(true),
            "Grid::new panicked instead of returning None"
        );
    }
}
