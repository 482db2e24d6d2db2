//! The console's line editor in the kernel, driven through COM1 as a terminal drives it.
//!
//! `console_line_editing` (PVH on q35, 512 MiB, an `edu` device, `log=warn`):
//!
//! - `ESC [`, a pause, then `help`: the pause abandons the unfinished sequence and `help`
//!   runs whole (it used to lose its `h`).
//! - Cursor keys as xterm sends them: `lpci`, Left ×3 (`ESC [ D`), `s` makes `lspci`;
//!   `mm`, Left as SS3 (`ESC O D`), `e` makes `mem`; `em`, Home (`ESC [ H`), `m`, End
//!   (`ESC [ F`) makes `mem`; `memx`, Left, Delete (`ESC [ 3 ~`) makes `mem`; a CSI with
//!   parameters (`ESC [ 1 ; 5 C`) swallows nothing after it.
//! - Ctrl-C drops a line (`^C`, a new prompt, nothing run); so does Enter on a pasted line
//!   longer than the editor's 256 bytes, with a message saying so.
//! - History: Up (`ESC [ A`) recalls the last line, Up again the one before, Down comes back;
//!   a line repeating the one before is stored once.
//! - A paste: 100 commands written at once (no delay between bytes), half ending in CR, half
//!   in CR LF: exactly 100 answers and 100 prompts (a CR LF is one line end), and no input
//!   reported dropped.
//!
//! Without `qemu-system-x86_64` the scenario prints `SKIPPED` and returns, unless `CI` is set.

use std::time::Duration;

use qemu_tests::{
    InteractRun, Machine, Qemu, Session, check, ensure, expect_exit, kernel_elf, qemu_or_skip,
};

const PROMPT: &str = "kernel> ";
const BOOT: Duration = Duration::from_secs(60);
const ANSWER: Duration = Duration::from_secs(20);
/// Commands in the pasted burst.
const PASTED: usize = 100;

/// Sends `bytes` (a line with its own line end) and returns the output up to the next prompt,
/// echo included.
fn typed(s: &mut Session<'_>, bytes: &str) -> Result<String, String> {
    s.send(bytes)?;
    let text = s
        .expect(PROMPT, ANSWER)
        .map_err(|e| format!("{bytes:?}: {e}"))?;
    Ok(text.strip_suffix(PROMPT).unwrap_or(&text).to_owned())
}

/// Whether `output` is `mem`'s answer.
fn is_mem(output: &str) -> bool {
    output.contains("\nframes: ") && output.contains("\nvectors: ")
}

fn script(s: &mut Session<'_>) -> Result<(), String> {
    s.expect("kernel ready", BOOT)?;
    s.expect(PROMPT, BOOT)?;

    // ESC [ and a pause longer than the console's escape wait (250 ms), then `help`.
    s.send("\x1b[")?;
    std::thread::sleep(Duration::from_millis(1500));
    let help = typed(s, "help\r")?;
    ensure!(
        !help.contains("unknown command") && help.contains("\npoweroff "),
        "`ESC [`, a pause, `help` did not run `help`:\n{help}"
    );

    let lspci = typed(s, "lpci\x1b[D\x1b[D\x1b[Ds\r")?;
    ensure!(
        lspci.contains("Technical Corp. QEMU edu device"),
        "`lpci`, Left x3, `s` did not run `lspci`:\n{lspci}"
    );
    for (keys, what) in [
        ("mm\x1bODe\r", "SS3 Left"),
        ("em\x1b[Hm\x1b[F\r", "Home, End"),
        ("memx\x1b[D\x1b[3~\r", "Left, Delete"),
        ("\x1b[1;5Cmem\r", "a CSI with parameters"),
        ("xyz\x7f\x7f\x7fmem\r", "Backspace"),
    ] {
        let out = typed(s, keys)?;
        ensure!(
            is_mem(&out) && !out.contains("unknown command"),
            "{what} ({keys:?}) did not make `mem`:\n{out}"
        );
    }

    let cancelled = typed(s, "frobnicate\x03")?;
    ensure!(
        cancelled.contains("^C") && !cancelled.contains("unknown command"),
        "Ctrl-C did not drop the line:\n{cancelled}"
    );

    // A pasted line longer than the editor's room: not run (what is left is not what was
    // sent), and the next line is whole.
    let long = format!("mem {}\r", "x".repeat(300));
    let out = typed(s, &long)?;
    ensure!(
        out.contains("line longer than 256 bytes: not run") && !is_mem(&out),
        "a 304-byte line was not refused:\n{out}"
    );

    // History: the last lines entered were `mem` (five times, stored once) and, before them,
    // `lspci` (as edited).
    let up = typed(s, "\x1b[A\r")?;
    ensure!(is_mem(&up), "Up did not recall `mem`:\n{up}");
    let up2 = typed(s, "\x1b[A\x1b[A\r")?;
    ensure!(
        up2.contains("Technical Corp. QEMU edu device"),
        "Up twice did not recall `lspci` (a repeated `mem` must be stored once):\n{up2}"
    );
    // Now newest first: lspci, mem, lspci, help.
    let down = typed(s, "\x1b[A\x1b[A\x1b[A\x1b[B\r")?;
    ensure!(
        is_mem(&down),
        "Up x3, Down did not come back to `mem`:\n{down}"
    );

    // The paste: one write, no delay between bytes.
    let mut burst = String::new();
    for i in 0..PASTED {
        burst.push_str(if i % 2 == 0 { "mem\r" } else { "mem\r\n" });
    }
    s.set_char_delay(Duration::ZERO);
    s.send(&burst)?;
    let mut answers = 0;
    let mut prompts = 0;
    let mut text = String::new();
    while answers < PASTED {
        let chunk = s
            .expect(PROMPT, ANSWER)
            .map_err(|e| format!("after {answers} of {PASTED} pasted commands answered: {e}"))?;
        prompts += 1;
        if is_mem(&chunk) {
            answers += 1;
        }
        text.push_str(&chunk);
    }
    s.set_char_delay(qemu_tests::session::CHAR_DELAY);
    // A prompt left over (an LF of CR LF taken as an empty line) would end this wait before
    // `drivers` answers.
    let after = typed(s, "drivers\r")?;
    ensure!(
        after.contains(" edu "),
        "`drivers` after the paste did not answer first: a CR LF counted as two line ends?\n{after}"
    );
    ensure!(
        prompts == PASTED,
        "{PASTED} pasted commands gave {answers} answers in {prompts} prompts"
    );
    ensure!(
        !text.contains("input bytes dropped") && !after.contains("input bytes dropped"),
        "the console reports dropped input after the paste:\n{text}"
    );
    let mem = typed(s, "mem\r")?;
    ensure!(
        mem.contains("\ninput: 0 bytes dropped"),
        "`mem` does not show `input: 0 bytes dropped` after the paste:\n{mem}"
    );

    s.send("poweroff\r")?;
    s.wait_exit(ANSWER)?;
    Ok(())
}

#[test]
fn console_line_editing() {
    let name = "console_line_editing";
    if !qemu_or_skip(name) {
        return;
    }
    let InteractRun { outcome, result } = Qemu::kernel(kernel_elf(), "log=warn")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(["-device", "edu"])
        .timeout(Duration::from_secs(300))
        .interact(script)
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    println!(
        "{name}: {} in {:.2} s",
        outcome.describe_exit(),
        outcome.wall.as_secs_f64()
    );
    check(name, &outcome, |outcome, report| {
        result?;
        expect_exit(outcome, 0)?;
        ensure!(report.panic.is_none(), "the kernel panicked");
        Ok(())
    });
}
