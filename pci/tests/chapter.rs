//! The chapters under `docs/` (`docs/irq-ownership.md`, the book in `docs/book/`, and every
//! other Markdown file there) say their Rust samples are copied from the repository
//! unchanged. This test holds them to that: every ```` ```rust ```` block must name its source
//! file (a backticked path such as `pci/src/irq/owned.rs` in the prose since the previous
//! block) and appear in that file line for line, up to a common indentation. Lines of doc
//! comments (`/// `, `//! `) are compared without their comment marker, since doctests are
//! quoted as the code they are.
//!
//! The samples that are doctests are also compiled (or checked not to compile) by
//! `cargo test --doc`, where they live; this test makes sure the chapter shows that code.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// A fenced Rust block: the line its fence is on, the prose before it, its lines.
struct Sample {
    line: usize,
    prose: String,
    lines: Vec<String>,
}

fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut prose = String::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            prose.push_str(line);
            prose.push('\n');
            continue;
        };
        // As in CommonMark, a fence indented (inside a list item) removes up to that much
        // indentation from each line of its content.
        let fence_indent = line.len() - line.trim_start().len();
        let mut body = Vec::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            let spaces = l.len() - l.trim_start_matches(' ').len();
            body.push(l[spaces.min(fence_indent)..].to_string());
        }
        if info.split(',').next() == Some("rust") {
            out.push(Sample {
                line: n + 1,
                prose: std::mem::take(&mut prose),
                lines: body,
            });
        } else {
            prose.clear();
        }
    }
    out
}

/// The last backticked repository path ending in `.rs` in `prose`.
fn source(prose: &str) -> Option<String> {
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.ends_with(".rs") && s.contains('/') && !s.contains(' '))
        .last()
        .map(str::to_string)
}

/// `line` without a leading doc-comment marker (and the one space after it), if it has one.
fn undoc(line: &str) -> Option<String> {
    let t = line.trim_start();
    let rest = t.strip_prefix("///").or_else(|| t.strip_prefix("//!"))?;
    Some(rest.strip_prefix(' ').unwrap_or(rest).to_string())
}

/// Whether `sample` appears in `file` as consecutive lines, shifted right by one indentation.
fn appears(sample: &[String], file: &[String]) -> bool {
    let first = &sample[0];
    (0..file.len()).any(|i| {
        let Some(indent) = file[i].len().checked_sub(first.len()) else {
            return false;
        };
        if !file[i].ends_with(first.as_str()) || !file[i][..indent].trim().is_empty() {
            return false;
        }
        sample
            .iter()
            .enumerate()
            .all(|(k, s)| match file.get(i + k) {
                Some(f) if s.trim().is_empty() => f.trim().is_empty(),
                Some(f) => f.len() == indent + s.len() && f.ends_with(s.as_str()),
                None => false,
            })
    })
}

/// Every Markdown file under `dir`, recursively, sorted.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("docs directory")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(markdown_files(&path));
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    out
}

/// The problems found in one chapter's samples (empty when all match).
fn check_chapter(root: &Path, samples: &[Sample]) -> Vec<String> {
    let mut problems = Vec::new();
    for sample in samples {
        let Some(path) = source(&sample.prose) else {
            problems.push(format!("line {}: names no source file", sample.line));
            continue;
        };
        let Ok(text) = std::fs::read_to_string(root.join(&path)) else {
            problems.push(format!("line {}: `{path}` does not exist", sample.line));
            continue;
        };
        let raw: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        let undocumented: Vec<String> = text
            .lines()
            .map(|l| undoc(l).unwrap_or_default().trim_end().to_string())
            .collect();
        let lines: Vec<String> = sample
            .lines
            .iter()
            .map(|l| l.trim_end().to_string())
            .collect();
        if lines.iter().all(|l| l.is_empty()) {
            problems.push(format!("line {}: empty sample", sample.line));
            continue;
        }
        if !appears(&lines, &raw) && !appears(&lines, &undocumented) {
            problems.push(format!(
                "line {}: not found as written in `{path}` (first line: {:?})",
                sample.line, lines[0]
            ));
        }
    }
    problems
}

#[test]
#[cfg_attr(miri, ignore = "reads files, which Miri's isolation refuses")]
fn every_rust_sample_is_quoted_from_the_file_it_names() {
    let root = root();
    let files = markdown_files(&root.join("docs"));
    let mut problems = Vec::new();
    let mut total = 0;
    let mut with_samples = 0;
    for file in &files {
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        let chapter = std::fs::read_to_string(file).expect("chapter");
        let samples = samples(&chapter);
        if name == "docs/irq-ownership.md" {
            assert!(samples.len() > 20, "only {} samples found", samples.len());
        }
        total += samples.len();
        with_samples += usize::from(!samples.is_empty());
        problems.extend(
            check_chapter(&root, &samples)
                .into_iter()
                .map(|p| format!("{name}: {p}")),
        );
    }
    assert!(
        files.iter().any(|f| f.ends_with("docs/book/README.md")),
        "the book's index docs/book/README.md is missing"
    );
    assert!(
        problems.is_empty(),
        "{} of {total} samples in {} Markdown files under docs/ do not match the code:\n{}",
        problems.len(),
        files.len(),
        problems.join("\n")
    );
    println!(
        "{total} samples in {with_samples} files verified ({} Markdown files under docs/)",
        files.len()
    );
}

#[test]
fn the_checker_finds_a_changed_line() {
    let file: Vec<String> = ["fn a() {", "    let x = 1;", "}"]
        .map(String::from)
        .to_vec();
    let good = ["let x = 1;".to_string()];
    let bad = ["let x = 2;".to_string()];
    assert!(appears(&good, &file));
    assert!(!appears(&bad, &file));
    let whole = ["fn a() {", "    let x = 1;", "}"].map(String::from);
    assert!(appears(&whole, &file));
    let shifted = ["fn a() {", "  let x = 1;", "}"].map(String::from);
    assert!(
        !appears(&shifted, &file),
        "indentation inside a sample counts"
    );
    assert_eq!(
        source("From `pci/src/irq/owned.rs`, the `Drop` impl of `IrqVectors`:").as_deref(),
        Some("pci/src/irq/owned.rs")
    );
}

#[test]
#[cfg_attr(miri, ignore = "reads files, which Miri's isolation refuses")]
fn the_checker_finds_a_sample_without_a_source_or_changed() {
    let root = root();
    let chapter = "From `pci/tests/chapter.rs`:\n\
                   ```rust\nfn root() -> PathBuf {\n```\n\
                   ```text\nnot Rust\n```\n\
                   ```rust\nfn root() -> PathBuf {\n```\n\
                   Again from `pci/tests/chapter.rs`:\n\
                   ```rust\nfn root() -> PathBuf { changed\n```\n\
                   From `pci/src/no_such_file.rs`:\n\
                   ```rust\nfn root() -> PathBuf {\n```\n";
    let samples = samples(chapter);
    assert_eq!(samples.len(), 4, "the text block is not a sample");
    let in_a_list = samples_in_a_list_item();
    assert_eq!(in_a_list, ["fn root() -> PathBuf {", "    Path::new(x)"]);
    let problems = check_chapter(&root, &samples);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("names no source file"), "{problems:?}");
    assert!(problems[1].contains("not found as written"), "{problems:?}");
    assert!(problems[2].contains("does not exist"), "{problems:?}");
    assert!(
        markdown_files(&root.join("docs"))
            .iter()
            .any(|f| f.ends_with("docs/irq-ownership.md")),
        "the walk finds the chapters"
    );
}

/// The lines of a sample fenced inside a list item: the fence's indentation is removed from
/// each line, deeper indentation kept.
fn samples_in_a_list_item() -> Vec<String> {
    let chapter = "- a point, from `pci/tests/chapter.rs`:\n\n  ```rust\n  fn root() -> PathBuf {\n      Path::new(x)\n  ```\n";
    samples(chapter).remove(0).lines
}
