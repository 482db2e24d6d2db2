//! The kernel on a board without a serial cable: the GRUB image booted with `-serial none`
//! and `-vga std`, looked at through QMP `screendump` and typed on through QMP `send-key`
//! (the PS/2 keyboard).
//!
//! The screen is read back as text by matching every 8x16 cell against the glyphs of the
//! `spleen-font` crate's 8x16 font, read here from the font file the crate ships (the kernel's
//! drawing code is not used): a cell whose lit pixels (anything not black) equal a glyph's
//! bits is that character. So a test passes only if the kernel really drew those characters
//! in those cells.
//!
//! - `screen_keyboard_seabios`, `screen_keyboard_ovmf`: no COM1. The prompt `kernel>` appears
//!   on the screen below `kernel ready`; typing `help` and Enter shows the typed line and the
//!   command list, and the prompt again. Home and Up edit lines; on SeaBIOS a line longer
//!   than a row is typed past the right margin and erased with Backspace.
//! - `screen_usb_keyboard_only` (SeaBIOS, no COM1, no i8042, a USB keyboard on xHCI): the
//!   console comes up and `help` typed on the USB keyboard is answered on the screen.
//! - `screen_shows_panic`, `screen_shows_page_fault` (SeaBIOS, no COM1): `test=panic` and
//!   `test=pagefault` end in the kernel's panic and exception reports, which must be drawn
//!   too (they are written on the emergency path, which takes no lock).
//! - `screen_matches_serial` (SeaBIOS, COM1 to a file): after typing `help` on the keyboard,
//!   every text row on the screen above the prompt equals the corresponding line of the serial
//!   log (wrapped at the screen's width), so the screen shows the same log and console.
//!
//! Without `qemu-system-x86_64` the scenarios print `SKIPPED` and return, unless `CI` is set.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use qemu_tests::screen::{ScreenVm, Screenshot};
use qemu_tests::{Firmware, build_iso, kernel_elf, qemu_or_skip};

/// Cell size of the console font.
const CELL: (usize, usize) = (8, 16);
/// The prompt as it reads on the screen (the cell after it holds the cursor).
const PROMPT: &str = "kernel>";
/// From QEMU's start to the prompt on the screen (GRUB's menu waits 3 s).
const BOOT: Duration = Duration::from_secs(90);
/// From Enter to the answer on the screen.
const ANSWER: Duration = Duration::from_secs(20);
/// Stands for a cell that is no glyph of the font (GRUB's font, the cursor).
const UNKNOWN: char = '\u{2592}';

/// The ASCII glyphs of Spleen 8x16 from the file `spleen-font` ships: a PSF1 file (magic
/// 0x36 0x04, mode, glyph height 16), glyphs of 16 bytes from offset 4, bit 7 leftmost.
fn glyph_table() -> HashMap<[u8; 16], char> {
    let file = spleen_font::FONT_8X16;
    assert_eq!(&file[..2], &[0x36, 0x04], "PSF1 magic");
    assert_eq!(file[3], 16, "glyph height");
    let mut table = HashMap::new();
    for c in (0x20u8..0x7f).rev() {
        let start = 4 + usize::from(c) * 16;
        let glyph: [u8; 16] = file[start..start + 16].try_into().unwrap();
        table.insert(glyph, c as char);
    }
    assert!(table.len() >= 94, "glyphs must be distinguishable");
    table
}

/// The screen as rows of text (trailing blanks removed).
fn screen_text(shot: &Screenshot, glyphs: &HashMap<[u8; 16], char>) -> Vec<String> {
    let (cols, rows) = (shot.width / CELL.0, shot.height / CELL.1);
    (0..rows)
        .map(|row| {
            let text: String = (0..cols)
                .map(|col| {
                    let mut bits = [0u8; 16];
                    for (y, b) in bits.iter_mut().enumerate() {
                        for x in 0..CELL.0 {
                            let p = shot.pixel(col * CELL.0 + x, row * CELL.1 + y);
                            if p != [0, 0, 0] {
                                *b |= 0x80 >> x;
                            }
                        }
                    }
                    glyphs.get(&bits).copied().unwrap_or(UNKNOWN)
                })
                .collect();
            text.trim_end().to_owned()
        })
        .collect()
}

fn show(rows: &[String]) -> String {
    rows.iter()
        .enumerate()
        .map(|(i, r)| format!("{i:2}|{r}\n"))
        .collect()
}

/// The last row with text.
fn last_row(rows: &[String]) -> &str {
    rows.iter()
        .rev()
        .find(|r| !r.is_empty())
        .map_or("", String::as_str)
}

/// Takes screenshots until `done` holds for the text on the screen (or `limit` passes).
fn wait_for(
    vm: &mut ScreenVm,
    glyphs: &HashMap<[u8; 16], char>,
    limit: Duration,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let until = Instant::now() + limit;
    let mut rows = Vec::new();
    while Instant::now() < until {
        match vm.screendump() {
            Ok(shot) => {
                rows = screen_text(&shot, glyphs);
                if done(&rows) {
                    return rows;
                }
            }
            Err(e) => panic!("screendump failed after {:?}: {e}", vm.elapsed()),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "no {what} on the screen within {limit:?} ({:?} after QEMU started); the screen reads:\n{}",
        vm.elapsed(),
        show(&rows)
    );
}

/// The prompt is the last row, alone, with the cursor after it.
fn at_prompt(rows: &[String]) -> bool {
    last_row(rows) == format!("{PROMPT} {UNKNOWN}")
}

/// Boots the ISO without COM1, waits for the prompt, types `help`, checks the answer.
///
/// With `long_line`, also edits a line longer than a row of the screen.
fn keyboard_on_screen(name: &str, firmware: Firmware, long_line: bool) {
    if !qemu_or_skip(name) {
        return;
    }
    let glyphs = glyph_table();
    let iso = build_iso(kernel_elf(), "").unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut vm = ScreenVm::boot(&iso.path, &firmware, false, BOOT + ANSWER * 2)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let before = wait_for(&mut vm, &glyphs, BOOT, "prompt", at_prompt);
    let booted = vm.elapsed();
    for wanted in ["kernel ready", "Type `help` for commands on the keyboard."] {
        assert!(
            before.iter().any(|r| r.starts_with(wanted)),
            "{name}: no row starting with {wanted:?}:\n{}",
            show(&before)
        );
    }
    assert!(
        before.iter().any(|r| r.contains("INFO  kernel::keyboard")),
        "{name}: the keyboard's log line is not on the screen:\n{}",
        show(&before)
    );

    vm.type_text("help\n")
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let after = wait_for(&mut vm, &glyphs, ANSWER, "help output", |rows| {
        at_prompt(rows) && rows.iter().any(|r| r.starts_with("poweroff   "))
    });
    let typed = after
        .iter()
        .position(|r| r == "kernel> help")
        .unwrap_or_else(|| panic!("{name}: the typed line is not shown:\n{}", show(&after)));
    let listed: Vec<&str> = after[typed + 1..]
        .iter()
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    for command in [
        "help", "lspci", "irqs", "mem", "drivers", "reboot", "poweroff",
    ] {
        assert!(
            listed.contains(&command),
            "{name}: `help` output lacks {command}:\n{}",
            show(&after)
        );
    }
    assert!(
        after
            .iter()
            .any(|r| r == "help       this list" || r.starts_with("help       this list")),
        "{name}: `help`'s first line is not drawn as text:\n{}",
        show(&after)
    );
    assert_ne!(before, after, "{name}: the screen did not change");

    // Keys without a character: Home moves to the start of the line (`em` becomes `mem`),
    // Up recalls the last line over what was typed (`x` becomes `mem` again).
    let mem_rows = |rows: &[String]| rows.iter().filter(|r| *r == "kernel> mem").count();
    let step = |vm: &mut ScreenVm, keys: &[&[&str]], text: &str| {
        for k in keys {
            vm.send_key(k).unwrap_or_else(|e| panic!("{name}: {e}"));
            std::thread::sleep(Duration::from_millis(60));
        }
        vm.type_text(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    };
    vm.type_text("em").unwrap_or_else(|e| panic!("{name}: {e}"));
    step(&mut vm, &[&["home"]], "m\n");
    wait_for(&mut vm, &glyphs, ANSWER, "mem typed with Home", |rows| {
        at_prompt(rows) && mem_rows(rows) == 1 && rows.iter().any(|r| r.starts_with("frames:"))
    });
    vm.type_text("x").unwrap_or_else(|e| panic!("{name}: {e}"));
    step(&mut vm, &[&["up"]], "\n");
    wait_for(&mut vm, &glyphs, ANSWER, "mem recalled with Up", |rows| {
        at_prompt(rows) && mem_rows(rows) == 2
    });
    if long_line {
        // A line longer than a row, typed two cells past the right margin and erased with
        // Backspace, then `mem`: the line editor moves left with BS only, so every `x` must
        // go, across the row boundary, and `mem` must be drawn right after the prompt.
        let cols = vm
            .screendump()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .width
            / CELL.0;
        let long = "x".repeat((cols + 2).saturating_sub(PROMPT.len() + 1));
        vm.type_text(&long)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for _ in 0..long.len() {
            vm.send_key(&["backspace"])
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            std::thread::sleep(Duration::from_millis(60));
        }
        vm.type_text("mem\n")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        wait_for(&mut vm, &glyphs, ANSWER, "a wrapped line erased", |rows| {
            at_prompt(rows) && mem_rows(rows) == 3 && !rows.iter().any(|r| r.contains("xx"))
        });
    }
    println!(
        "{name}: prompt on the screen {:.1} s after start, help answered at {:.1} s",
        booted.as_secs_f64(),
        vm.elapsed().as_secs_f64()
    );
}

#[test]
fn screen_keyboard_seabios() {
    keyboard_on_screen("screen_keyboard_seabios", Firmware::Bios, true);
}

#[test]
fn screen_keyboard_ovmf() {
    keyboard_on_screen("screen_keyboard_ovmf", Firmware::Ovmf, false);
}

/// A board as many modern ones are: no COM1, no PS/2 controller (`q35,i8042=off`), a USB
/// keyboard on an xHCI controller. The console must not give up for want of input: the
/// prompt appears, and `help` typed on the USB keyboard (QMP `send-key`, which goes to the
/// only keyboard there is) is answered on the screen.
#[test]
fn screen_usb_keyboard_only() {
    let name = "screen_usb_keyboard_only";
    if !qemu_or_skip(name) {
        return;
    }
    let glyphs = glyph_table();
    let iso = build_iso(kernel_elf(), "").unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut vm = ScreenVm::boot_with(
        &iso.path,
        &Firmware::Bios,
        false,
        BOOT + ANSWER * 2,
        "q35,i8042=off",
        &[
            "-device",
            "qemu-xhci,id=xhci",
            "-device",
            "usb-kbd,bus=xhci.0",
        ],
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let before = wait_for(&mut vm, &glyphs, BOOT, "prompt", at_prompt);
    for wanted in ["kernel ready", "Type `help` for commands on the keyboard."] {
        assert!(
            before.iter().any(|r| r.starts_with(wanted)),
            "{name}: no row starting with {wanted:?}:\n{}",
            show(&before)
        );
    }
    vm.type_text("help\n")
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let after = wait_for(&mut vm, &glyphs, ANSWER, "help output", |rows| {
        at_prompt(rows) && rows.iter().any(|r| r.starts_with("poweroff   "))
    });
    assert!(
        after.iter().any(|r| r == "kernel> help"),
        "{name}: the typed line is not shown:\n{}",
        show(&after)
    );
}

/// The serial log as screen rows: each line (CR removed) cut into pieces of `cols`.
fn serial_rows(serial: &str, cols: usize) -> Vec<String> {
    let mut rows = Vec::new();
    for line in serial.split('\n') {
        let line: Vec<char> = line.chars().filter(|&c| c != '\r').collect();
        if line.is_empty() {
            rows.push(String::new());
            continue;
        }
        for piece in line.chunks(cols) {
            rows.push(piece.iter().collect::<String>().trim_end().to_owned());
        }
    }
    rows
}

#[test]
fn screen_matches_serial() {
    let name = "screen_matches_serial";
    if !qemu_or_skip(name) {
        return;
    }
    let glyphs = glyph_table();
    let iso = build_iso(kernel_elf(), "").unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut vm = ScreenVm::boot(&iso.path, &Firmware::Bios, true, BOOT + ANSWER * 2)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    wait_for(&mut vm, &glyphs, BOOT, "prompt", at_prompt);
    vm.type_text("help\n")
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let screen = wait_for(&mut vm, &glyphs, ANSWER, "help output", |rows| {
        at_prompt(rows) && rows.iter().any(|r| r.starts_with("poweroff   "))
    });
    let cols = vm.screendump().map(|s| s.width / CELL.0).unwrap_or(0);
    // The serial log ends with the same prompt (and no cursor).
    let until = Instant::now() + ANSWER;
    let mut serial = vm.serial();
    while !serial.ends_with("poweroff   power off (ACPI S5)\r\nkernel> ") && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(200));
        serial = vm.serial();
    }
    assert!(
        serial.contains("Type `help` for commands on COM1 or the keyboard."),
        "{name}: both inputs should be active:\n{serial}"
    );
    let lines = serial_rows(&serial, cols);
    // Screen rows above the prompt row, against the serial rows above its last line.
    let prompt_row = screen.iter().rposition(|r| !r.is_empty()).unwrap();
    let shown = &screen[..prompt_row];
    let logged = &lines[lines.len() - 1 - shown.len()..lines.len() - 1];
    let differing: Vec<String> = shown
        .iter()
        .zip(logged)
        .enumerate()
        .filter(|(_, (s, l))| s != l)
        .map(|(i, (s, l))| format!("row {i}: screen {s:?}\n        serial {l:?}"))
        .collect();
    assert!(
        differing.is_empty() && shown.len() > 20,
        "{name}: {} of {} rows differ:\n{}\nscreen:\n{}",
        differing.len(),
        shown.len(),
        differing.join("\n"),
        show(&screen)
    );
    assert!(shown.iter().any(|r| r == "kernel> help"));
}

/// Boots the ISO without COM1 with `cmdline` and waits for rows starting with each of
/// `wanted` (in order) on the screen.
fn fatal_on_screen(name: &str, cmdline: &str, wanted: &[&str]) {
    if !qemu_or_skip(name) {
        return;
    }
    let glyphs = glyph_table();
    let iso = build_iso(kernel_elf(), cmdline).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut vm = ScreenVm::boot(&iso.path, &Firmware::Bios, false, BOOT + ANSWER)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let rows = wait_for(&mut vm, &glyphs, BOOT, wanted[0], |rows| {
        let mut from = 0;
        wanted.iter().all(
            |w| match rows[from..].iter().position(|r| r.starts_with(w)) {
                Some(i) => {
                    from += i + 1;
                    true
                }
                None => false,
            },
        )
    });
    println!(
        "{name}: report on the screen after {:.1} s",
        vm.elapsed().as_secs_f64()
    );
    assert!(
        rows.iter().all(|r| !r.starts_with(PROMPT)),
        "{name}: no console after a fatal error"
    );
}

#[test]
fn screen_shows_panic() {
    fatal_on_screen(
        "screen_shows_panic",
        "test=panic",
        &["PANIC at kernel/src/tests/mod.rs:", "  state: "],
    );
}

#[test]
fn screen_shows_page_fault() {
    fatal_on_screen(
        "screen_shows_page_fault",
        "test=pagefault",
        &[
            "EXCEPTION page fault (#PF) (vector 14) error=0x",
            "  CS=0x",
            "  page fault: ",
        ],
    );
}
