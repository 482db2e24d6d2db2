//! The IVRS (AMD IOMMUs) of real machines: `acpi-probe`'s `ivrs` object against ACPICA's
//! decoding of the same table.
//!
//! Design: every corpus machine whose dump holds an IVRS (`<workspace>/../shared/acpi-corpus`;
//! skipped, saying so, when the folder is absent) is run through `acpi-probe`, which must
//! exit 0 with one JSON object within 10 s and an `ivrs` object that is not an error. The
//! table is then decoded by `acpixtract -a` + `iasl -d` (skipped loudly when acpica-tools is
//! not installed) and compared, block by block: each IVHD's type, flags, device ID, base,
//! segment, device entries (expanded here, from iasl's entry list, into the requester ID
//! ranges the parser gives) and special devices; each IVMD's type, flags, requester IDs,
//! start and length. Interrupt remapping's view (the probe's `ivrs.intremap`: each MADT I/O
//! APIC's segment and requester ID, or the I/O APICs no special device entry names) is
//! worked out again from iasl's IVRS and MADT (`corpus_ivrs/intremap.rs`) and compared.
//!
//! iasl releases before 2022 stop at IVHD type 40h ("Unknown IVRS subtable type 0x40"):
//! then what iasl decoded is compared with the same number of our first blocks, and the
//! rest is counted apart and said. Machines run on two threads sharing an index; each one's
//! iasl work happens in its own temporary directory. The summary lines are also appended to
//! the summary file `tests/corpus.rs` starts (`./run.sh test` prints it).

#![cfg(feature = "probe")]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a single probe run may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Machines probed at once.
const THREADS: usize = 2;
/// Summary lines start with this (and earlier ones are replaced).
const PREFIX: &str = "corpus: IVRS";

fn summary_file() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("acpi-corpus.txt")
}

/// Prints a summary line and appends it to [`summary_file`].
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(summary_file())
        {
            let _ = writeln!(f, "{line}");
        }
    }};
}

/// Drops the summary lines of an earlier run of this test from [`summary_file`].
fn forget_earlier_summary() {
    if let Ok(text) = std::fs::read_to_string(summary_file()) {
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with(PREFIX))
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = std::fs::write(summary_file(), kept);
    }
}

fn corpus_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .unwrap_or(manifest)
        .join("../shared/acpi-corpus")
}

/// What a child process did.
struct Run {
    code: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with a time limit, collecting its output on threads.
fn run(cmd: &mut Command, limit: Duration) -> std::io::Result<Run> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Run {
        code: status.code(),
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Runs the probe on `file`: exit 0 within the limit, one JSON object, no panic.
fn probe(file: &Path) -> Result<Value, String> {
    let r = run(
        Command::new(env!("CARGO_BIN_EXE_acpi-probe")).arg(file),
        TIMEOUT,
    )
    .map_err(|e| format!("cannot run the probe: {e}"))?;
    if r.timed_out {
        return Err(format!("no answer within {} s: killed", TIMEOUT.as_secs()));
    }
    if r.stdout.contains("panicked") || r.stderr.contains("panicked") {
        return Err("panic".into());
    }
    if r.code != Some(0) {
        return Err(format!("exit {:?}: {}", r.code, r.stderr.trim()));
    }
    let mut lines = r.stdout.lines().filter(|l| !l.trim().is_empty());
    match (lines.next(), lines.next()) {
        (Some(line), None) => serde_json::from_str::<Value>(line)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| "stdout is not one JSON object".into()),
        _ => Err("not exactly one line on stdout".into()),
    }
}

// ---- What both sides say, in one shape ----

#[path = "corpus_ivrs/facts.rs"]
mod facts;
use facts::{IvhdFacts, IvrsFacts, RangeFacts, SpecialFacts, ivrs_from_json, num};
#[path = "corpus_ivrs/dsl.rs"]
mod dsl;
use dsl::ivrs_from_dsl;
#[path = "corpus_ivrs/intremap.rs"]
mod intremap;

// ---- One machine ----

#[derive(Debug, Default)]
struct Outcome {
    name: String,
    /// Our parse of the IVRS (probe exit 0 and an `ivrs` object that is not an error).
    ours: bool,
    /// Errors our parser recorded.
    errors: usize,
    /// iasl decoded it (wholly or up to a block type it does not know).
    iasl: bool,
    /// Equal to iasl over everything iasl decoded.
    equal: bool,
    /// iasl stopped early, at a block of this type.
    stopped_at: Option<u64>,
    /// Then: our blocks it did not decode.
    undecoded: usize,
    /// Of those, IVHDs of type 40h, and how many have the entries of our 11h for the same
    /// IOMMU.
    undecoded_40: usize,
    same_as_11: usize,
    /// IVHDs (ours) and the IOMMUs `iommus` picks.
    units: usize,
    iommus: usize,
    /// IVMDs (ours).
    memory: usize,
    /// The probe's `intremap`: how many I/O APICs it gives a requester ID, or why not all.
    intremap: Option<Result<usize, String>>,
    /// The same answer from iasl's IVRS and MADT.
    intremap_equal: bool,
    failures: Vec<String>,
    notes: Vec<String>,
}

fn iasl_available() -> bool {
    let ok = |tool: &str, arg: &str| {
        Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    ok("iasl", "-v") && ok("acpixtract", "-v")
}

fn gunzip(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path)?).read_to_end(&mut out)?;
    Ok(out)
}

/// Whether an acpidump text lists an IVRS (a line `IVRS @ 0x...`).
fn has_ivrs(text: &[u8]) -> bool {
    text.split(|&b| b == b'\n')
        .any(|l| l.starts_with(b"IVRS @"))
}

/// `acpixtract -a`, then `iasl -d` on the IVRS and the MADT: their .dsl texts (the MADT's
/// `None` when it could not be decoded).
fn iasl_ivrs(text: &[u8], dir: &Path) -> Result<(String, Option<String>), String> {
    std::fs::write(dir.join("dump.txt"), text).map_err(|e| format!("temp file: {e}"))?;
    let limit = Duration::from_secs(30);
    let x = run(
        Command::new("acpixtract")
            .args(["-a", "dump.txt"])
            .current_dir(dir),
        limit,
    );
    if !x.is_ok_and(|r| r.code == Some(0)) {
        return Err("acpixtract failed".into());
    }
    let dat = ["ivrs.dat", "ivrs1.dat"]
        .into_iter()
        .find(|f| dir.join(f).exists())
        .ok_or("acpixtract wrote no ivrs.dat")?;
    let r = run(
        Command::new("iasl").arg("-d").arg(dat).current_dir(dir),
        limit,
    )
    .map_err(|e| format!("iasl: {e}"))?;
    if r.timed_out {
        return Err("iasl timed out".into());
    }
    let ivrs = std::fs::read_to_string(dir.join(dat.replace(".dat", ".dsl")))
        .map_err(|e| format!("iasl wrote no .dsl: {e}"))?;
    let madt = ["apic.dat", "apic1.dat"]
        .into_iter()
        .find(|f| dir.join(f).exists())
        .and_then(|dat| {
            let r = run(
                Command::new("iasl").arg("-d").arg(dat).current_dir(dir),
                limit,
            )
            .ok()?;
            if r.timed_out {
                return None;
            }
            std::fs::read_to_string(dir.join(dat.replace(".dat", ".dsl"))).ok()
        });
    Ok((ivrs, madt))
}

fn check_machine(path: &Path, text: &[u8], iasl: bool) -> Outcome {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().replace(".acpidump.gz", ""))
        .unwrap_or_default();
    let mut o = Outcome {
        name: name.clone(),
        ..Outcome::default()
    };
    let json = match probe(path) {
        Ok(v) => v,
        Err(e) => {
            o.failures.push(format!("probe: {e}"));
            return o;
        }
    };
    let Some(ivrs) = json.get("ivrs").filter(|i| i.get("error").is_none()) else {
        o.failures.push(format!(
            "the dump has an IVRS but the probe says {}",
            json.get("ivrs").map(Value::to_string).unwrap_or_default()
        ));
        return o;
    };
    let Some(ours) = ivrs_from_json(ivrs) else {
        o.failures
            .push(format!("the ivrs object is not as expected: {ivrs}"));
        return o;
    };
    o.ours = true;
    o.errors = ivrs
        .get("errors")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    for e in ivrs
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        o.notes.push(format!("our parser: {e}"));
    }
    o.units = ours.units.len();
    o.memory = ours.memory.len();
    o.iommus = ivrs
        .get("iommus")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let Some(ours_intremap) = intremap::intremap_from_json(ivrs) else {
        o.failures.push(format!(
            "the ivrs object's intremap is not as expected: {}",
            ivrs.get("intremap")
                .map(Value::to_string)
                .unwrap_or_default()
        ));
        return o;
    };
    o.intremap = Some(ours_intremap.as_ref().map(Vec::len).map_err(Clone::clone));
    if !iasl {
        return o;
    }
    let dir = std::env::temp_dir().join(format!("firmware-ivrs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        o.failures.push(format!("temp dir: {e}"));
        return o;
    }
    let dsl = iasl_ivrs(text, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let (dsl, madt_dsl) = match dsl {
        Ok((ivrs, madt)) => (Ok(ivrs), madt),
        Err(e) => (Err(e), None),
    };
    let theirs = match dsl.as_deref().map(ivrs_from_dsl) {
        Ok(Some(t)) => t,
        Ok(None) => {
            o.failures
                .push("iasl's IVRS listing could not be read".into());
            return o;
        }
        Err(e) => {
            o.failures.push(e.clone());
            return o;
        }
    };
    o.iasl = true;
    if theirs.dropped > 0 {
        o.notes.push(format!(
            "{} IVHD(s) at base 0 (iasl lists them, we drop them)",
            theirs.dropped
        ));
    }
    if theirs.unknown_entries > 0 {
        o.notes.push(format!(
            "{} device entries of a type not expanded here",
            theirs.unknown_entries
        ));
    }
    let mut ours_cut = ours.clone();
    if let Some(ty) = theirs.stopped {
        ours_cut.units.truncate(theirs.facts.units.len());
        ours_cut.memory.truncate(theirs.facts.memory.len());
        o.stopped_at = Some(ty);
        o.undecoded = (ours.units.len() + ours.memory.len())
            .saturating_sub(ours_cut.units.len() + ours_cut.memory.len());
        // Not a check against iasl, only a consistency figure: the undecoded 40h blocks
        // whose entries (ACPI HID devices aside) are those of the 11h of the same IOMMU.
        let rest = ours.units.get(ours_cut.units.len()..).unwrap_or_default();
        for u in rest.iter().filter(|u| u.head[0] == 0x40) {
            o.undecoded_40 += 1;
            if ours.units.iter().any(|v| {
                v.head[0] == 0x11
                    && v.head[2..] == u.head[2..]
                    && v.devices == u.devices
                    && v.specials == u.specials
            }) {
                o.same_as_11 += 1;
            }
        }
    }
    // Interrupt remapping's view, from the IVHDs iasl decoded (where it stops at a 40h, the
    // 11h for the same IOMMU, whose entries are checked above to be the 40h's).
    match madt_dsl.as_deref().and_then(intremap::madt_io_apic_ids) {
        Some(ids) => {
            let reference = intremap::intremap_reference(&theirs.facts.units, &ids);
            if intremap::same(&ours_intremap, &reference) {
                o.intremap_equal = true;
            } else {
                o.failures.push(format!(
                    "interrupt remapping's I/O APICs differ:\n    ours {ours_intremap:?}\n    \
                     iasl {reference:?}"
                ));
            }
        }
        None => o
            .failures
            .push("iasl's MADT listing could not be read (no I/O APIC IDs)".into()),
    }
    if ours_cut == theirs.facts {
        o.equal = true;
    } else {
        o.failures.push(format!(
            "IVRS differs:\n    ours {ours_cut:?}\n    iasl {:?}",
            theirs.facts
        ));
    }
    o
}

#[test]
fn corpus_ivrs() {
    forget_earlier_summary();
    let dir = corpus_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        say!("{PREFIX}: ../shared/acpi-corpus not found: SKIPPED (no machine checked)");
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".acpidump.gz"))
        .collect();
    files.sort();
    let total = files.len();
    let mut machines: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for path in files {
        match gunzip(&path) {
            Ok(text) if has_ivrs(&text) => machines.push((path, text)),
            Ok(_) => {}
            Err(e) => failures.push(format!("{}: gunzip: {e}", path.display())),
        }
    }
    let iasl = iasl_available();
    if !iasl {
        say!(
            "{PREFIX}: acpica-tools (iasl, acpixtract) not installed: comparison with iasl \
             SKIPPED on {} machines; exit status and JSON checks still run",
            machines.len()
        );
    }
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, text)) = machines.get(i) else {
                        break;
                    };
                    let o = check_machine(path, text, iasl);
                    outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(o);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    outcomes.sort_by(|a, b| a.name.cmp(&b.name));
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let sum = |f: &dyn Fn(&Outcome) -> usize| outcomes.iter().map(f).sum::<usize>();
    say!(
        "{PREFIX}: {} of {total} machines have an IVRS; parsed on {} ({} IVHDs, {} IOMMUs, {} \
         IVMDs; parser errors on {} machines)",
        machines.len(),
        count(&|o| o.ours),
        sum(&|o| o.units),
        sum(&|o| o.iommus),
        sum(&|o| o.memory),
        count(&|o| o.errors > 0),
    );
    if iasl {
        say!(
            "{PREFIX}: decoded by iasl on {}, equal to iasl on {}",
            count(&|o| o.iasl),
            count(&|o| o.equal),
        );
        let stopped: Vec<String> = outcomes
            .iter()
            .filter_map(|o| Some(format!("{} ({:#04x})", o.name, o.stopped_at?)))
            .collect();
        if !stopped.is_empty() {
            say!(
                "{PREFIX}: iasl stops at a block type it does not know on {} machines, compared \
                 up to there; {} of our blocks NOT checked against iasl ({} IVHDs of type 40h, \
                 {} of them with the same ranges and special devices as our 11h for the same \
                 IOMMU): {}",
                stopped.len(),
                sum(&|o| o.undecoded),
                sum(&|o| o.undecoded_40),
                sum(&|o| o.same_as_11),
                stopped.join(", ")
            );
        }
    }
    let refused: Vec<String> = outcomes
        .iter()
        .filter_map(|o| Some(format!("{} ({})", o.name, o.intremap.clone()?.err()?)))
        .collect();
    say!(
        "{PREFIX}: interrupt remapping: every MADT I/O APIC named by an IVHD special device \
         entry on {}, not on {}{}{}",
        count(&|o| matches!(o.intremap, Some(Ok(_)))),
        refused.len(),
        if refused.is_empty() {
            String::new()
        } else {
            format!(": {}", refused.join(", "))
        },
        if iasl {
            format!(
                "; the same segments and requester IDs (or the same missing I/O APICs) from \
                 iasl's IVRS and MADT on {}",
                count(&|o| o.intremap_equal)
            )
        } else {
            " (iasl comparison SKIPPED)".into()
        }
    );
    for o in &outcomes {
        for note in &o.notes {
            say!("{PREFIX}: note: {}: {note}", o.name);
        }
    }
    failures.extend(
        outcomes
            .iter()
            .flat_map(|o| o.failures.iter().map(move |f| format!("{}: {f}", o.name))),
    );
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
