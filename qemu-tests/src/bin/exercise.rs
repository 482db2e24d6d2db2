//! The checker for the book's exercise (`docs/book/10-your-driver.md`: a console command
//! `edu raise <n>`), run as `./run.sh exercise` after editing `drivers/src/edu.rs`.
//!
//! Design: the checker boots the kernel as it is (q35, 512 MiB, QEMU's `edu`, `log=warn`),
//! types at its console the commands the chapter lists, and judges each answer against the
//! exact line the chapter promises. Every step is judged on its own and printed as it is
//! judged (`✓`, or `✗` with the expected and the received text), so a learner sees what
//! already works and what does not; a step whose console never answers (a panic, a hang) ends
//! the run, and the steps after it are listed as not run. The exit status is 0 when every
//! step passes, 1 when any fails, 2 when the checker could not run at all (no QEMU, the build
//! failed). The edu function's address and its interrupt count come from `drivers`, not from
//! assumptions about QEMU's slot numbering.
//!
//! `qemu-tests/tests/exercise.rs` runs this binary against the kernel as the repository
//! holds it (the exercise not done: the steps that need the command must fail) and against a
//! copy with the solution inserted (every step must pass).
//!
//! Usage: `exercise [--kernel <elf>]`. Without `--kernel` the kernel is built as the QEMU
//! tests build it (`QEMU_TESTS_KERNEL` is honoured).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use qemu_tests::{Machine, Qemu, Report, Session, build_kernel, qemu_available, qemu_program};

/// The console's prompt.
const PROMPT: &str = "kernel> ";
/// From QEMU's start to the first prompt (TCG on a busy machine).
const BOOT: Duration = Duration::from_secs(90);
/// From a command to the next prompt.
const ANSWER: Duration = Duration::from_secs(30);
/// From `edu raise 1000` to the next prompt: a thousand interrupt round trips under TCG.
const RAISE_MANY: Duration = Duration::from_secs(120);
/// The whole run.
const RUN: Duration = Duration::from_secs(420);

/// What the console answers after unbinding: no driver named `edu` is bound to take it.
const UNKNOWN: &str = "unknown command: edu (try `help`)";

/// One judged step.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// The answer held the expected line (quoted).
    Pass(String),
    /// Expected, then received.
    Fail { expected: String, got: String },
    /// The console stopped answering before this step.
    NotRun,
}

/// A step: what was typed and how it went.
#[derive(Debug, Clone)]
struct Step {
    command: String,
    verdict: Verdict,
}

/// `text` in backticks, with Markdown's double backticks when it holds one itself; several
/// lines are shown joined by ` ⏎ `.
fn quote(text: &str) -> String {
    let one_line = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ⏎ ");
    if one_line.contains('`') {
        format!("`` {one_line} ``")
    } else {
        format!("`{one_line}`")
    }
}

impl Step {
    /// The step as printed: `✓ `cmd`: line`, `✗ `cmd`: expected `a`, got `b``, or
    /// `- `cmd`: not run`.
    fn line(&self) -> String {
        let command = quote(&self.command);
        match &self.verdict {
            Verdict::Pass(line) => format!("✓ {command}: {line}"),
            Verdict::Fail { expected, got } => {
                let got = if got.trim().is_empty() {
                    "nothing".to_string()
                } else {
                    quote(got)
                };
                format!("✗ {command}: expected {}, got {got}", quote(expected))
            }
            Verdict::NotRun => format!("- {command}: not run"),
        }
    }
}

/// The output of a command: what came after the echoed line, without the final prompt.
fn output_of(text: &str) -> String {
    let text = text.strip_suffix(PROMPT).unwrap_or(text);
    match text.split_once('\n') {
        Some((_echo, output)) => output.to_owned(),
        None => String::new(),
    }
}

/// Judges `output` against one expected line: the step passes when a line of the output is
/// exactly `expected` (log lines may come in between).
fn judge_line(output: &str, expected: &str) -> Verdict {
    if output.lines().any(|l| l.trim_end() == expected) {
        Verdict::Pass(quote(expected))
    } else {
        Verdict::Fail {
            expected: expected.to_owned(),
            got: output.to_owned(),
        }
    }
}

/// edu's line in `drivers`: its address and interrupt count, from
/// `0000:00:02.0 edu      edu v1.0, 7 interrupt(s) by MSI on vector 0x22`.
fn edu_line(drivers: &str) -> Option<(String, u64, String)> {
    drivers.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let address = words.next()?;
        if words.next()? != "edu" {
            return None;
        }
        let (before, _) = l.split_once(" interrupt(s)")?;
        let count = before.rsplit(' ').next()?.parse().ok()?;
        Some((address.to_owned(), count, l.trim_end().to_owned()))
    })
}

/// Types the steps and judges them. Stops early (the rest not run) when the console stops
/// answering.
struct Run<'s, 'q> {
    session: &'s mut Session<'q>,
    steps: Vec<Step>,
    dead: bool,
}

impl Run<'_, '_> {
    /// Types `command` and returns its output, or the reason no prompt came back (after which
    /// nothing more is typed).
    fn ask(&mut self, command: &str, timeout: Duration) -> Result<String, String> {
        if self.dead {
            return Err(String::new());
        }
        let answer = self
            .session
            .send_line(command)
            .and_then(|()| self.session.expect(PROMPT, timeout));
        match answer {
            Ok(text) => Ok(output_of(&text)),
            Err(e) => {
                self.dead = true;
                Err(format!("no prompt after it ({e})"))
            }
        }
    }

    /// Records and prints a step.
    fn record(&mut self, command: &str, verdict: Verdict) {
        let step = Step {
            command: command.to_owned(),
            verdict,
        };
        println!("{}", step.line());
        self.steps.push(step);
    }

    /// A step whose answer must hold `expected` as a line.
    fn expect_line(&mut self, command: &str, expected: &str, timeout: Duration) {
        let verdict = match self.ask(command, timeout) {
            Ok(output) => judge_line(&output, expected),
            Err(e) if e.is_empty() => Verdict::NotRun,
            Err(e) => Verdict::Fail {
                expected: expected.to_owned(),
                got: e,
            },
        };
        self.record(command, verdict);
    }

    /// `drivers`, and edu's line in it checked by `check` against its count; returns edu's
    /// address and count when the line is there.
    fn drivers(
        &mut self,
        expected: &str,
        check: impl FnOnce(u64) -> bool,
    ) -> Option<(String, u64)> {
        let verdict;
        let mut found = None;
        match self.ask("drivers", ANSWER) {
            Err(e) if e.is_empty() => verdict = Verdict::NotRun,
            Err(e) => {
                verdict = Verdict::Fail {
                    expected: expected.to_owned(),
                    got: e,
                }
            }
            Ok(output) => match edu_line(&output) {
                Some((address, count, line)) if check(count) => {
                    verdict = Verdict::Pass(quote(&line));
                    found = Some((address, count));
                }
                Some((address, count, line)) => {
                    verdict = Verdict::Fail {
                        expected: expected.to_owned(),
                        got: line,
                    };
                    found = Some((address, count));
                }
                None => {
                    verdict = Verdict::Fail {
                        expected: expected.to_owned(),
                        got: output,
                    }
                }
            },
        }
        self.record("drivers", verdict);
        found
    }
}

/// Boots, types the chapter's steps in order into `steps`, and powers the machine off. An
/// error (no prompt after boot, no exit after `poweroff`) makes the runner kill QEMU.
fn script(session: &mut Session<'_>, steps: &mut Vec<Step>) -> Result<(), String> {
    session.expect("kernel ready", BOOT)?;
    session.expect(PROMPT, BOOT)?;
    let mut run = Run {
        session,
        steps: Vec::new(),
        dead: false,
    };
    type_steps(&mut run);
    *steps = std::mem::take(&mut run.steps);
    if run.dead {
        return Err("the console stopped answering".into());
    }
    run.session.send_line("poweroff")?;
    run.session.wait_exit(ANSWER)?;
    Ok(())
}

/// The chapter's steps.
fn type_steps(run: &mut Run<'_, '_>) {
    let Some((address, before)) =
        run.drivers("a line for edu, `<address> edu edu v1.0, ...`", |_| true)
    else {
        return;
    };
    raise(run, 5, ANSWER);
    raise(run, 1000, RAISE_MANY);
    run.expect_line("edu raise", "edu: usage: edu raise <n>", ANSWER);
    run.expect_line("edu raise x", "edu: x is not a number", ANSWER);
    let after = before + 1005;
    run.drivers(
        &format!("edu's count grown by 5 + 1000, from {before} to {after} interrupt(s)"),
        |count| count == after,
    );
    run.expect_line(
        &format!("unbind {address}"),
        &format!("{address} unbound"),
        ANSWER,
    );
    run.expect_line("edu raise 5", UNKNOWN, ANSWER);
    let bind = format!("bind {address}");
    let verdict = match run.ask(&bind, ANSWER) {
        Err(e) if e.is_empty() => Verdict::NotRun,
        Err(e) => Verdict::Fail {
            expected: "edu's status line".into(),
            got: e,
        },
        Ok(output) => match output.lines().find(|l| l.contains("edu v")) {
            Some(line) => Verdict::Pass(quote(line.trim_end())),
            None => Verdict::Fail {
                expected: "edu's status line".into(),
                got: output,
            },
        },
    };
    run.record(&bind, verdict);
    raise(run, 5, ANSWER);
}

fn raise(run: &mut Run<'_, '_>, n: u64, timeout: Duration) {
    run.expect_line(
        &format!("edu raise {n}"),
        &format!("raised {n} interrupt(s), the handler counted {n}"),
        timeout,
    );
}

/// `--kernel <elf>`, or `None` to build it.
fn kernel_argument() -> Result<Option<PathBuf>, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (None, _, _) => Ok(None),
        (Some("--kernel"), Some(elf), None) => Ok(Some(PathBuf::from(elf))),
        _ => Err("usage: exercise [--kernel <elf>]".into()),
    }
}

fn main() -> ExitCode {
    let kernel = match kernel_argument() {
        Ok(Some(elf)) => elf,
        Ok(None) => match build_kernel() {
            Ok(elf) => elf,
            Err(e) => {
                eprintln!("exercise: {e}");
                return ExitCode::from(2);
            }
        },
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !qemu_available() {
        eprintln!(
            "exercise: {} not found; install QEMU >= 8 (./run.sh installs it when run as root)",
            qemu_program().to_string_lossy()
        );
        return ExitCode::from(2);
    }
    println!(
        "exercise `edu raise <n>` (docs/book/10-your-driver.md): booting {} with edu",
        kernel.display()
    );
    let qemu = Qemu::kernel(&kernel, "log=warn")
        .machine(Machine::Q35)
        .memory_mib(512)
        .args(["-device", "edu"])
        .timeout(RUN);
    let mut steps = Vec::new();
    let run = match qemu.interact(|s| script(s, &mut steps)) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("exercise: cannot run QEMU: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = &run.result
        && steps.is_empty()
    {
        eprintln!("exercise: the kernel did not reach its prompt: {e}");
        eprintln!("{}", run.outcome.log());
        return ExitCode::from(2);
    }
    if let Some(p) = Report::parse(&run.outcome.serial).panic {
        println!(
            "the kernel panicked at {}:{}:{}: {}",
            p.file, p.line, p.column, p.message
        );
    }
    let passed = steps
        .iter()
        .filter(|s| matches!(s.verdict, Verdict::Pass(_)))
        .count();
    let failed = steps.len() - passed;
    if failed == 0 {
        println!("all {passed} steps pass: the exercise is done");
        ExitCode::SUCCESS
    } else {
        println!(
            "{passed} of {} steps pass, {failed} still fail: edit drivers/src/edu.rs and run \
             ./run.sh exercise again",
            steps.len()
        );
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_print_what_was_expected_and_received() {
        let fail = Step {
            command: "edu raise 5".into(),
            verdict: judge_line(
                "unknown command: edu (try `help`)\n",
                "raised 5 interrupt(s), the handler counted 5",
            ),
        };
        assert_eq!(
            fail.line(),
            "✗ `edu raise 5`: expected `raised 5 interrupt(s), the handler counted 5`, \
             got `` unknown command: edu (try `help`) ``"
        );
        let pass = Step {
            command: "edu raise".into(),
            verdict: judge_line(
                "[    1.000] WARN  x: y\nedu: usage: edu raise <n>\n",
                "edu: usage: edu raise <n>",
            ),
        };
        assert_eq!(pass.line(), "✓ `edu raise`: `edu: usage: edu raise <n>`");
        let empty = Step {
            command: "edu raise x".into(),
            verdict: judge_line("", "edu: x is not a number"),
        };
        assert_eq!(
            empty.line(),
            "✗ `edu raise x`: expected `edu: x is not a number`, got nothing"
        );
        // A line that only contains the expected text does not pass.
        assert!(matches!(
            judge_line("edu: x is not a number!\n", "edu: x is not a number"),
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn edu_is_found_in_drivers() {
        let drivers = "0000:00:03.0 nvme     NVMe 1.4, 2 I/O queues\n\
                       0000:00:02.0 edu      edu v1.0, 1007 interrupt(s) by MSI on vector 0x22\n";
        let (address, count, line) = edu_line(drivers).unwrap();
        assert_eq!(address, "0000:00:02.0");
        assert_eq!(count, 1007);
        assert!(line.ends_with("vector 0x22"));
        assert_eq!(edu_line("no drivers are bound\n"), None);
    }

    #[test]
    fn output_drops_the_echo_and_the_prompt() {
        assert_eq!(output_of("edu raise 5\nraised\nkernel> "), "raised\n");
        assert_eq!(output_of("kernel> "), "");
    }
}
