//! The console's line editor (`shell::Editor`) drawn on the framebuffer console's grid: what
//! the screen shows must be the prompt and the line being edited, with the cursor where the
//! editor says, whatever the screen's width. The editor does not know the width: it moves
//! left with BS and right by reprinting, so a line longer than a row relies on the grid
//! taking BS back across the rows the text wrapped into.

use fbcon::Grid;
use proptest::prelude::*;
use shell::Editor;

const PROMPT: &str = "kernel> ";

/// The text of rows `0..` joined (each row's trailing spaces removed), as the screen shows
/// the prompt and the line after them.
fn screen_text(g: &Grid) -> String {
    (0..g.rows())
        .map(|r| {
            let mut row: String = (0..g.cols()).map(|c| g.cell(c, r).ch as char).collect();
            if r + 1 == g.rows() {
                row = row.trim_end().to_owned();
            }
            row
        })
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// Types `keys` into an editor whose output goes to a grid of `cols` x `rows`, then checks
/// the screen against the editor's line and cursor.
fn check(cols: usize, rows: usize, keys: &[u8]) -> Result<(), TestCaseError> {
    let mut grid = Grid::new(cols, rows).unwrap();
    let mut editor = Editor::new(256, 8);
    grid.write(PROMPT.as_bytes());
    let mut out = Vec::new();
    for &k in keys {
        out.clear();
        editor.feed(k, &mut out);
        grid.write(&out);
    }
    let expected = format!("{PROMPT}{}", editor.line());
    prop_assert_eq!(screen_text(&grid), expected.trim_end());
    let at = PROMPT.len() + editor.cursor();
    // The grid's cursor is clamped to the last column while a wrap is pending.
    let (col, row) = grid.cursor();
    let want = if at > 0 && at.is_multiple_of(cols) {
        // After the last character of a full row the cursor may wait at the margin: at the
        // end of the line, or when a move right reprinted the character in the last column
        // (the next byte written goes to the next row, where the text continues).
        [(cols - 1, at / cols - 1), (0, at / cols)]
    } else {
        [(at % cols, at / cols); 2]
    };
    prop_assert!(
        want.contains(&(col, row)),
        "cursor at {:?}, editor at {} ({:?})",
        (col, row),
        at,
        want
    );
    Ok(())
}

#[test]
fn backspace_at_the_right_margin_erases_the_last_character() {
    // A line that ends exactly at the margin, then Backspace: the character in the last
    // column goes, and typing puts the next one there.
    let cols = PROMPT.len() + 4;
    check(cols, 3, b"abcd\x7f").unwrap();
    check(cols, 3, b"abcd\x7fX").unwrap();
    check(cols, 3, b"abcd\x7f\x7f\x7fYZ").unwrap();
}

#[test]
fn backspace_goes_back_across_a_wrapped_row() {
    let cols = PROMPT.len() + 4;
    check(cols, 4, b"abcdefgh\x7f\x7f\x7f\x7f\x7f").unwrap();
    check(cols, 4, b"abcdefghij\x7f\x7f\x7f\x7f\x7f\x7f\x7fQ").unwrap();
}

#[test]
fn editing_in_the_middle_of_a_wrapped_line() {
    let cols = PROMPT.len() + 5;
    // Left arrow into the first row, insert, delete, Home, End, Ctrl-U.
    check(
        cols,
        4,
        b"0123456789\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[DX",
    )
    .unwrap();
    check(cols, 4, b"0123456789\x1b[H\x1b[3~\x1b[3~").unwrap();
    check(cols, 4, b"0123456789\x1b[H\x1b[F\x7f").unwrap();
    check(cols, 4, b"0123456789\x15ok").unwrap();
}

proptest! {
    /// Any keys on any narrow screen tall enough for the line: the screen shows the line.
    #[test]
    fn the_screen_shows_the_line(
        cols in 9usize..20,
        keys in proptest::collection::vec(
            prop_oneof![
                (b'a'..=b'z').prop_map(|b| vec![b]),
                Just(vec![0x7f]),
                Just(b"\x1b[D".to_vec()),
                Just(b"\x1b[C".to_vec()),
                Just(b"\x1b[H".to_vec()),
                Just(b"\x1b[F".to_vec()),
                Just(b"\x1b[3~".to_vec()),
                Just(vec![0x15]),
            ],
            0..60,
        ),
    ) {
        let keys: Vec<u8> = keys.concat();
        // Tall enough that nothing scrolls: 256 bytes at most, plus the prompt.
        check(cols, 300 / cols + 2, &keys)?;
    }
}
