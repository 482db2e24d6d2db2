//! The book's exercise checker (`./run.sh exercise`, `qemu-tests/src/bin/exercise.rs`) can
//! fail and can pass.
//!
//! Design: the checker binary itself is run (Cargo hands integration tests its path), twice:
//!
//! - against the kernel as the repository holds it, where the exercise is not done
//!   (`drivers/src/edu.rs` has no `raise` and no `command`; the test checks that first): the
//!   steps that need `edu raise` must fail, saying `unknown command: edu`, the steps that do
//!   not (edu bound, unbind, the unknown command after it, bind) must pass, and the exit
//!   status must be 1;
//! - against a kernel built from a copy of the workspace whose `drivers/src/edu.rs` has the
//!   two methods of `docs/book/solutions/edu_raise.rs` inserted: every step must pass, exit
//!   status 0.
//!
//! The copy lives in `target/exercise/workspace` and builds into `target/exercise/target`, so
//! that the second kernel is cached between runs: the copy is refreshed file by file and a
//! file is rewritten only when its content changed (Cargo judges freshness by modification
//! time). The real `drivers/src/edu.rs` is never written.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_tests::{KERNEL_TARGET, kernel_elf, qemu_or_skip, workspace_root};

/// The steps the checker prints, in order, as `(passes, command)`, for the repository's
/// kernel (the exercise not done); edu's address is written `<address>`.
const UNDONE: &[(bool, &str)] = &[
    (true, "drivers"),
    (false, "edu raise 5"),
    (false, "edu raise 1000"),
    (false, "edu raise"),
    (false, "edu raise x"),
    (false, "drivers"),
    (true, "unbind <address>"),
    (true, "edu raise 5"),
    (true, "bind <address>"),
    (false, "edu raise 5"),
];

/// The two methods of the solution file: the block after `// 1.` and the one after `// 2.`,
/// without the blank lines around them.
fn solution_methods(solution: &str) -> Result<(String, String), String> {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in solution.lines() {
        if line.starts_with("// ") {
            if let Some(block) = current.take() {
                blocks.push(block);
            }
            if line.starts_with("// 1.") || line.starts_with("// 2.") {
                current = Some(Vec::new());
            }
            continue;
        }
        if let Some(block) = &mut current {
            block.push(line);
        }
    }
    blocks.extend(current);
    let trimmed: Vec<String> = blocks
        .iter()
        .map(|b| b.join("\n").trim_matches('\n').to_string())
        .collect();
    match trimmed.as_slice() {
        [a, b] if !a.is_empty() && !b.is_empty() => Ok((a.clone(), b.clone())),
        _ => Err(format!(
            "expected two methods after `// 1.` and `// 2.`, found {} block(s)",
            trimmed.len()
        )),
    }
}

/// `source` with `method` inserted before the closing brace (at the start of a line) of the
/// block that opens with the line `header`.
fn insert_into(source: &str, header: &str, method: &str) -> Result<String, String> {
    let start = source
        .find(&format!("\n{header}\n"))
        .ok_or_else(|| format!("no `{header}` line"))?;
    let close = source[start + 1..]
        .find("\n}\n")
        .map(|i| start + 1 + i + 1)
        .ok_or_else(|| format!("no closing brace after `{header}`"))?;
    Ok(format!(
        "{}\n{method}\n{}",
        &source[..close],
        &source[close..]
    ))
}

/// `drivers/src/edu.rs` with the solution's two methods in their `impl` blocks.
fn with_solution(edu: &str, solution: &str) -> Result<String, String> {
    let (raise, command) = solution_methods(solution)?;
    let edu = insert_into(edu, "impl Edu {", &raise)?;
    insert_into(&edu, "impl Bound for Edu {", &command)
}

/// Makes `to` a copy of `from` (without `target/` and `.git/`), writing a file only when its
/// content differs, and removing what `from` no longer has (a stale `foo.rs` beside a new
/// `foo/mod.rs` would not compile).
fn sync(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(to)? {
        let entry = entry?;
        if fs::symlink_metadata(from.join(entry.file_name())).is_err() {
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(entry.path())?;
            } else {
                fs::remove_file(entry.path())?;
            }
        }
    }
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let (source, dest) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if name != "target" && name != ".git" {
                sync(&source, &dest)?;
            }
        } else if kind.is_file() {
            write_if_changed(&dest, &fs::read(&source)?)?;
        }
    }
    Ok(())
}

fn write_if_changed(path: &Path, content: &[u8]) -> std::io::Result<()> {
    if fs::read(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    fs::write(path, content)
}

/// Builds the kernel from a copy of the workspace with the solution inserted; returns its
/// ELF.
fn solution_kernel(root: &Path) -> PathBuf {
    let base = root.join("target/exercise");
    let copy = base.join("workspace");
    sync(root, &copy).expect("copy of the workspace");
    let edu = fs::read_to_string(root.join("drivers/src/edu.rs")).expect("drivers/src/edu.rs");
    let solution = fs::read_to_string(root.join("docs/book/solutions/edu_raise.rs"))
        .expect("docs/book/solutions/edu_raise.rs");
    let solved = with_solution(&edu, &solution).expect("inserting the solution");
    write_if_changed(&copy.join("drivers/src/edu.rs"), solved.as_bytes()).expect("edu.rs");
    let target = base.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&copy)
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "build",
            "-Zbuild-std=core,alloc",
            "-p",
            "kernel",
            "--target",
            KERNEL_TARGET,
            "--release",
        ])
        .output()
        .expect("cargo");
    assert!(
        output.status.success(),
        "the kernel with the solution did not build ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    target.join(KERNEL_TARGET).join("release/kernel")
}

/// Runs the checker against `kernel`: its exit code and its step lines as `(passes,
/// command)`.
fn check_with(kernel: &Path) -> (Option<i32>, Vec<(bool, String)>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_exercise"))
        .arg("--kernel")
        .arg(kernel)
        .output()
        .expect("the checker runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    qemu_tests::say(&stdout);
    let steps = stdout
        .lines()
        .filter_map(|l| {
            let (mark, rest) = l.split_once(' ')?;
            let pass = match mark {
                "✓" => true,
                "✗" => false,
                _ => return None,
            };
            let command = rest.strip_prefix('`')?.split_once('`')?.0;
            // edu's address is QEMU's choice; the checker reads it from `drivers`.
            let command = match command.split_once(' ') {
                Some((verb @ ("bind" | "unbind"), _)) => format!("{verb} <address>"),
                _ => command.to_string(),
            };
            Some((pass, command))
        })
        .collect();
    (output.status.code(), steps, all)
}

#[test]
fn the_checker_fails_without_the_solution_and_passes_with_it() {
    if !qemu_or_skip("exercise_checker") {
        return;
    }
    let root = workspace_root();
    let edu = fs::read_to_string(root.join("drivers/src/edu.rs")).expect("drivers/src/edu.rs");
    assert!(
        !edu.contains("fn raise(") && !edu.contains("fn command("),
        "drivers/src/edu.rs already has the exercise's methods: the repository keeps the \
         exercise for the reader to do (docs/book/10-your-driver.md)"
    );

    let (code, steps, all) = check_with(kernel_elf());
    let expected: Vec<(bool, String)> = UNDONE.iter().map(|&(p, c)| (p, c.into())).collect();
    assert_eq!(steps, expected, "without the solution:\n{all}");
    assert_eq!(code, Some(1), "without the solution:\n{all}");
    assert!(
        all.contains(
            "✗ `edu raise 5`: expected `raised 5 interrupt(s), the handler counted 5`, \
             got `` unknown command: edu (try `help`) ``"
        ),
        "the failure shows what was expected and what came:\n{all}"
    );

    let kernel = solution_kernel(&root);
    let (code, steps, all) = check_with(&kernel);
    let expected: Vec<(bool, String)> = UNDONE.iter().map(|&(_, c)| (true, c.into())).collect();
    assert_eq!(steps, expected, "with the solution:\n{all}");
    assert_eq!(code, Some(0), "with the solution:\n{all}");
    assert!(all.contains("all 10 steps pass"), "{all}");
}

#[test]
fn the_solution_goes_into_its_impl_blocks() {
    let edu = "use x;\n\nimpl Edu {\n    pub fn ping(&self) {\n    }\n}\n\n\
               impl Bound for Edu {\n    fn self_test(&mut self) {\n    }\n}\n";
    let solution = "// Solution.\n//\n// Notes.\n\n// 1. Inside `impl Edu`:\n\n    \
                    pub fn raise(&self) {\n    }\n\n// 2. Inside `impl Bound for Edu`:\n\n    \
                    fn command(&mut self) {\n    }\n";
    let solved = with_solution(edu, solution).unwrap();
    assert_eq!(
        solved,
        "use x;\n\nimpl Edu {\n    pub fn ping(&self) {\n    }\n\n    \
         pub fn raise(&self) {\n    }\n}\n\n\
         impl Bound for Edu {\n    fn self_test(&mut self) {\n    }\n\n    \
         fn command(&mut self) {\n    }\n}\n"
    );
    assert!(with_solution("fn main() {}\n", solution).is_err());
    assert!(with_solution(edu, "// 1. only one\n    fn a() {}\n").is_err());
    // The real files fit together.
    let root = workspace_root();
    let real = with_solution(
        &fs::read_to_string(root.join("drivers/src/edu.rs")).unwrap(),
        &fs::read_to_string(root.join("docs/book/solutions/edu_raise.rs")).unwrap(),
    )
    .unwrap();
    assert_eq!(real.matches("pub fn raise(&self, n: u64)").count(), 1);
    assert_eq!(
        real.matches("fn command(&mut self, args: &[&str])").count(),
        1
    );
}

#[test]
fn the_copy_follows_the_workspace_and_keeps_unchanged_files() {
    let base = qemu_tests::unique_temp_dir("exercise-sync");
    let (from, to) = (base.join("from"), base.join("to"));
    fs::create_dir_all(from.join("src")).unwrap();
    fs::create_dir_all(from.join("target")).unwrap();
    fs::write(from.join("src/a.rs"), "a").unwrap();
    fs::write(from.join("src/b.rs"), "b").unwrap();
    fs::write(from.join("target/big"), "build output").unwrap();
    sync(&from, &to).unwrap();
    assert_eq!(fs::read_to_string(to.join("src/a.rs")).unwrap(), "a");
    assert!(!to.join("target").exists(), "target/ is not copied");
    let written = fs::metadata(to.join("src/a.rs"))
        .unwrap()
        .modified()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::remove_file(from.join("src/b.rs")).unwrap();
    fs::write(from.join("src/c.rs"), "c").unwrap();
    sync(&from, &to).unwrap();
    assert_eq!(
        fs::metadata(to.join("src/a.rs"))
            .unwrap()
            .modified()
            .unwrap(),
        written,
        "an unchanged file is not rewritten"
    );
    assert!(!to.join("src/b.rs").exists(), "a removed file goes");
    assert_eq!(fs::read_to_string(to.join("src/c.rs")).unwrap(), "c");
    fs::remove_dir_all(&base).unwrap();
}
