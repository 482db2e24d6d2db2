//! `acpi-probe` on real machines' firmware tables.
//!
//! Design: two kinds of test.
//!
//! - Always run: the probe on the small dumps in `tests/fixtures/` (cut from real machines,
//!   plus a hand-made malformed one), with the expected values written down here, and
//!   [`firmware::tables::discover`] over a memory holding the one fixture that carries real
//!   physical addresses.
//! - The corpus (`<workspace>/../shared/acpi-corpus/*.acpidump.gz`, 162 machines; skipped,
//!   saying so, when the folder is absent): every machine must give exit status 0 and one
//!   JSON object within 10 s, with no panic text. The MADT, MCFG, the FADT's main fields
//!   and the DMAR are checked against an independent decoder, ACPICA's `acpixtract -a` + `iasl -d`
//!   (text output parsed here); where iasl decodes a table, ours must say the same. When
//!   acpica-tools is not installed, that comparison is skipped loudly and the rest still
//!   runs. The AML counts are printed, not asserted (the engine is new).
//!
//! Machines run on two threads sharing an index; each one's iasl work happens in its own
//! temporary directory.

use std::collections::HashMap;
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

/// Where the corpus summary is also written, for `./run.sh test` to print after the tests.
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

fn probe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_acpi-probe")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
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
    /// Exit code; `None` when killed by a signal or by us.
    code: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs `cmd` with a time limit, collecting its output (read on threads, so a chatty child
/// cannot block on a full pipe).
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
        elapsed: start.elapsed(),
    })
}

/// Runs the probe on `file`: exit 0 within the limit, one JSON object, no panic.
fn probe(file: &Path) -> Result<(Value, Duration), String> {
    let r = run(Command::new(probe_bin()).arg(file), TIMEOUT)
        .map_err(|e| format!("cannot run the probe: {e}"))?;
    if r.timed_out {
        return Err(format!("no answer within {} s: killed", TIMEOUT.as_secs()));
    }
    for text in [&r.stdout, &r.stderr] {
        if text.contains("panicked") || text.contains("RUST_BACKTRACE") {
            return Err(format!("panic: {}", tail(text)));
        }
    }
    if r.code != Some(0) {
        return Err(format!("exit {:?}: {}", r.code, tail(&r.stderr)));
    }
    let mut lines = r.stdout.lines().filter(|l| !l.trim().is_empty());
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Err(format!(
            "not exactly one line on stdout: {}",
            tail(&r.stdout)
        ));
    };
    match serde_json::from_str::<Value>(line) {
        Ok(v) if v.is_object() => Ok((v, r.elapsed)),
        Ok(_) => Err("stdout is JSON but not an object".into()),
        Err(e) => Err(format!("stdout is not JSON ({e}): {}", tail(line))),
    }
}

fn tail(s: &str) -> String {
    let s = s.trim();
    let start = s.char_indices().rev().nth(600).map_or(0, |(i, _)| i);
    s[start..].to_string()
}

// ---- What both sides say, in one shape ----

/// The MADT facts compared: local APIC address, enabled CPUs' APIC IDs (LAPIC and x2APIC
/// entries, table order), I/O APICs (id, address, GSI base), overrides (bus, source, GSI,
/// polarity bits, trigger bits).
#[derive(Debug, Default, PartialEq, Eq)]
struct MadtFacts {
    local_apic: u64,
    apic_ids: Vec<u64>,
    ioapics: Vec<[u64; 3]>,
    overrides: Vec<[u64; 5]>,
}

/// MCFG entries (segment, address, first bus, last bus).
type McfgFacts = Vec<[u64; 4]>;

/// FADT fields compared: effective DSDT and FACS, SCI, SMI command port, flags.
#[derive(Debug, Default, PartialEq, Eq)]
struct FadtFacts {
    dsdt: u64,
    facs: u64,
    sci: u64,
    smi_cmd: u64,
    flags: u64,
}

/// A DMAR device scope: type, enumeration ID, start bus, (device, function) hops.
type ScopeFacts = (u64, u64, u64, Vec<[u64; 2]>);

/// DMAR facts compared: address width in bits, flags; each DRHD's flags, segment, register
/// base and device scopes; each RMRR's segment, base, limit and device scopes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct DmarFacts {
    address_width: u64,
    flags: u64,
    units: Vec<([u64; 3], Vec<ScopeFacts>)>,
    reserved: Vec<([u64; 3], Vec<ScopeFacts>)>,
}

fn num(v: &Value, key: &str) -> Option<u64> {
    v.get(key)?.as_u64()
}

fn madt_from_json(m: &Value) -> Option<MadtFacts> {
    let list = |key: &str| m.get(key)?.as_array().cloned();
    let polarity = |s: Option<&str>| match s {
        Some("conforms") => Some(0),
        Some("active-high") => Some(1),
        Some("reserved") => Some(2),
        Some("active-low") => Some(3),
        _ => None,
    };
    let trigger = |s: Option<&str>| match s {
        Some("conforms") => Some(0),
        Some("edge") => Some(1),
        Some("reserved") => Some(2),
        Some("level") => Some(3),
        _ => None,
    };
    Some(MadtFacts {
        local_apic: num(m, "local_apic")?,
        apic_ids: list("apic_ids")?
            .iter()
            .map(Value::as_u64)
            .collect::<Option<_>>()?,
        ioapics: list("ioapics")?
            .iter()
            .map(|a| Some([num(a, "id")?, num(a, "address")?, num(a, "gsi_base")?]))
            .collect::<Option<_>>()?,
        overrides: list("overrides")?
            .iter()
            .map(|o| {
                Some([
                    num(o, "bus")?,
                    num(o, "source")?,
                    num(o, "gsi")?,
                    polarity(o.get("polarity")?.as_str())?,
                    trigger(o.get("trigger")?.as_str())?,
                ])
            })
            .collect::<Option<_>>()?,
    })
}

fn mcfg_from_json(m: &Value) -> Option<McfgFacts> {
    m.as_array()?
        .iter()
        .map(|e| {
            Some([
                num(e, "segment")?,
                num(e, "address")?,
                num(e, "bus_start")?,
                num(e, "bus_end")?,
            ])
        })
        .collect()
}

fn dmar_from_json(d: &Value) -> Option<DmarFacts> {
    let scopes = |v: &Value| -> Option<Vec<ScopeFacts>> {
        v.get("scopes")?
            .as_array()?
            .iter()
            .map(|s| {
                let path = s
                    .get("path")?
                    .as_array()?
                    .iter()
                    .map(|hop| Some([hop.get(0)?.as_u64()?, hop.get(1)?.as_u64()?]))
                    .collect::<Option<_>>()?;
                Some((
                    num(s, "type")?,
                    num(s, "enumeration_id")?,
                    num(s, "start_bus")?,
                    path,
                ))
            })
            .collect()
    };
    Some(DmarFacts {
        address_width: num(d, "address_width")?,
        flags: num(d, "flags")?,
        units: d
            .get("units")?
            .as_array()?
            .iter()
            .map(|u| {
                Some((
                    [
                        num(u, "flags")?,
                        num(u, "segment")?,
                        num(u, "register_base")?,
                    ],
                    scopes(u)?,
                ))
            })
            .collect::<Option<_>>()?,
        reserved: d
            .get("reserved")?
            .as_array()?
            .iter()
            .map(|r| {
                Some((
                    [num(r, "segment")?, num(r, "base")?, num(r, "limit")?],
                    scopes(r)?,
                ))
            })
            .collect::<Option<_>>()?,
    })
}

/// The probe's interrupt remapping view: (I/O APIC ID, DRHD index, requester ID) of each
/// MADT I/O APIC, or `None` when it found them not all covered.
fn intremap_from_json(json: &Value) -> Option<Vec<[u64; 3]>> {
    json.get("intremap")?
        .get("io_apics")?
        .as_array()?
        .iter()
        .map(|a| Some([num(a, "id")?, num(a, "unit")?, num(a, "requester")?]))
        .collect()
}

/// The same from iasl's decoding: every I/O APIC ID of the MADT must be the enumeration ID
/// of an I/O APIC scope (type 3) of some DRHD, whose one-hop path gives the requester ID
/// (VT-d §8.3.1.1); the first DRHD listing it counts.
fn intremap_reference(dmar: &DmarFacts, ioapic_ids: &[u64]) -> Option<Vec<[u64; 3]>> {
    let mut found: Vec<[u64; 3]> = Vec::new();
    for (unit, (_, scopes)) in dmar.units.iter().enumerate() {
        for (kind, id, bus, path) in scopes {
            if *kind != 3 || !ioapic_ids.contains(id) || found.iter().any(|f| f[0] == *id) {
                continue;
            }
            match path.as_slice() {
                [[device, function]] if *device < 32 && *function < 8 => {
                    found.push([*id, unit as u64, bus << 8 | device << 3 | function]);
                }
                _ => return None,
            }
        }
    }
    ioapic_ids
        .iter()
        .all(|id| found.iter().any(|f| f[0] == *id))
        .then_some(found)
}

fn fadt_from_json(f: &Value) -> Option<FadtFacts> {
    Some(FadtFacts {
        dsdt: num(f, "dsdt").unwrap_or(0),
        facs: num(f, "facs").unwrap_or(0),
        sci: num(f, "sci_int")?,
        smi_cmd: num(f, "smi_cmd")?,
        flags: num(f, "flags")?,
    })
}

// ---- iasl's text ----

/// `[02Eh 0046   1]    Processor ID : 00` or `   Processor Enabled : 1` → (name, value).
fn dsl_field(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_start();
    let line = match line.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.1,
        None => line,
    };
    let (name, value) = line.split_once(" : ")?;
    Some((name.trim(), value.trim()))
}

/// The leading hex number of an iasl value (`FEC00000`, `00 [Processor Local APIC]`).
fn dsl_hex(value: &str) -> Option<u64> {
    u64::from_str_radix(value.split_whitespace().next()?, 16).ok()
}

/// The `name : value` lines of an iasl listing whose value is a number, up to the raw dump.
fn dsl_numbers(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines()
        .take_while(|line| !line.starts_with("Raw Table Data"))
        .filter_map(|line| {
            let (name, value) = dsl_field(line)?;
            Some((name, dsl_hex(value)?))
        })
}

/// Named numeric fields of an iasl table or subtable.
type Fields = HashMap<String, u64>;

/// The fields before the first `Subtable Type`, and each subtable's type and fields.
fn dsl_subtables(text: &str) -> (Fields, Vec<(u64, Fields)>) {
    let mut top = Fields::new();
    let mut subs: Vec<(u64, Fields)> = Vec::new();
    for (name, v) in dsl_numbers(text) {
        if name == "Subtable Type" {
            subs.push((v, HashMap::new()));
        } else if let Some((_, fields)) = subs.last_mut() {
            fields.entry(name.to_string()).or_insert(v);
        } else {
            top.entry(name.to_string()).or_insert(v);
        }
    }
    (top, subs)
}

fn madt_from_dsl(text: &str) -> Option<MadtFacts> {
    let (top, subs) = dsl_subtables(text);
    let mut m = MadtFacts {
        local_apic: *top.get("Local Apic Address")?,
        ..MadtFacts::default()
    };
    let get = |f: &Fields, k: &str| f.get(k).copied();
    for (ty, f) in &subs {
        match ty {
            0 if get(f, "Processor Enabled") == Some(1) => {
                m.apic_ids.push(get(f, "Local Apic ID")?);
            }
            9 if get(f, "Processor Enabled") == Some(1) => {
                m.apic_ids.push(get(f, "Processor x2Apic ID")?);
            }
            1 => m.ioapics.push([
                get(f, "I/O Apic ID")?,
                get(f, "Address")?,
                get(f, "Interrupt")?,
            ]),
            2 => m.overrides.push([
                get(f, "Bus")?,
                get(f, "Source")?,
                get(f, "Interrupt")?,
                get(f, "Polarity")?,
                get(f, "Trigger Mode")?,
            ]),
            5 => m.local_apic = get(f, "APIC Address")?,
            _ => {}
        }
    }
    Some(m)
}

/// MCFG entries from iasl; entries whose last bus is below the first are returned apart
/// (our parser skips those on purpose).
fn mcfg_from_dsl(text: &str) -> Option<(McfgFacts, McfgFacts)> {
    let mut good = Vec::new();
    let mut skipped = Vec::new();
    let mut cur: HashMap<&str, u64> = HashMap::new();
    let mut any = false;
    for line in text.lines() {
        if line.starts_with("Raw Table Data") {
            break;
        }
        let Some((name, value)) = dsl_field(line) else {
            continue;
        };
        if name == "Signature" {
            any = true;
        }
        let Some(v) = dsl_hex(value) else {
            continue;
        };
        if name == "Base Address" {
            cur.clear();
        }
        cur.insert(name, v);
        if name == "End Bus Number" {
            let e = [
                *cur.get("Segment Group Number")?,
                *cur.get("Base Address")?,
                *cur.get("Start Bus Number")?,
                v,
            ];
            if e[3] < e[2] {
                skipped.push(e);
            } else {
                good.push(e);
            }
        }
    }
    any.then_some((good, skipped))
}

fn fadt_from_dsl(text: &str) -> Option<FadtFacts> {
    // 32-bit and (when the length covers them) 64-bit addresses share a name; the 64-bit
    // one is used when present and nonzero, as ACPI 6.5 §5.2.9 says.
    let mut dsdt = Vec::new();
    let mut facs = Vec::new();
    let mut f = FadtFacts::default();
    let mut seen = 0;
    for (name, v) in dsl_numbers(text) {
        match name {
            "DSDT Address" => dsdt.push(v),
            "FACS Address" => facs.push(v),
            "SCI Interrupt" => (f.sci, seen) = (v, seen + 1),
            "SMI Command Port" => (f.smi_cmd, seen) = (v, seen + 1),
            "Flags (decoded below)" if f.flags == 0 => (f.flags, seen) = (v, seen + 1),
            _ => {}
        }
    }
    let pick = |v: &[u64]| match v {
        [_, x, ..] if *x != 0 => *x,
        [low, ..] => *low,
        [] => 0,
    };
    f.dsdt = pick(&dsdt);
    f.facs = pick(&facs);
    (seen == 3).then_some(f)
}

/// The DMAR as iasl decodes it, with what our parser leaves out on purpose set apart.
struct DmarDsl {
    /// What our parse must equal.
    facts: DmarFacts,
    /// DRHDs whose register base is 0 or not 4 KiB aligned, RMRRs whose limit is below
    /// their base: iasl lists them, we drop them.
    dropped: usize,
    /// iasl stopped at a structure type it does not know (its decoding of the rest is
    /// missing): our lists must then start with its.
    stopped: bool,
}

/// The DMAR from iasl's listing. Device scopes are kept for DRHDs and RMRRs only (ATSRs
/// have them too); each `PCI Path : 1F,00` line is one hop.
fn dmar_from_dsl(text: &str) -> Option<DmarDsl> {
    #[derive(PartialEq)]
    enum In {
        Top,
        Drhd,
        Rmrr,
        Other,
    }
    let mut out = DmarDsl {
        facts: DmarFacts::default(),
        dropped: 0,
        stopped: false,
    };
    let mut any = false;
    let mut haw = None;
    let mut flags = None;
    let mut cur = In::Top;
    // The structure being read: its fields and scopes.
    let mut fields: HashMap<&str, u64> = HashMap::new();
    let mut scopes: Vec<ScopeFacts> = Vec::new();
    let finish = |cur: &In,
                  fields: &HashMap<&str, u64>,
                  scopes: &mut Vec<ScopeFacts>,
                  out: &mut DmarDsl|
     -> Option<()> {
        let scopes = std::mem::take(scopes);
        match cur {
            In::Drhd => {
                let base = *fields.get("Register Base Address")?;
                if base == 0 || base & 0xfff != 0 {
                    out.dropped += 1;
                } else {
                    out.facts.units.push((
                        [
                            *fields.get("Flags")?,
                            *fields.get("PCI Segment Number")?,
                            base,
                        ],
                        scopes,
                    ));
                }
            }
            In::Rmrr => {
                let base = *fields.get("Base Address")?;
                let limit = *fields.get("End Address (limit)")?;
                if limit < base {
                    out.dropped += 1;
                } else {
                    out.facts
                        .reserved
                        .push(([*fields.get("PCI Segment Number")?, base, limit], scopes));
                }
            }
            In::Top | In::Other => {}
        }
        Some(())
    };
    for line in text.lines() {
        if line.starts_with("Raw Table Data") {
            break;
        }
        if line.contains("Unknown DMAR subtable") {
            out.stopped = true;
            break;
        }
        let Some((name, value)) = dsl_field(line) else {
            continue;
        };
        match name {
            "Signature" => any = true,
            "Subtable Type" => {
                finish(&cur, &fields, &mut scopes, &mut out)?;
                fields.clear();
                cur = match dsl_hex(value)? {
                    0 => In::Drhd,
                    1 => In::Rmrr,
                    _ => In::Other,
                };
            }
            "Host Address Width" if cur == In::Top => haw = dsl_hex(value),
            "Flags" if cur == In::Top => flags = dsl_hex(value),
            _ if cur == In::Top || cur == In::Other => {}
            "Device Scope Type" => scopes.push((dsl_hex(value)?, 0, 0, Vec::new())),
            "Enumeration ID" => scopes.last_mut()?.1 = dsl_hex(value)?,
            "PCI Bus Number" => scopes.last_mut()?.2 = dsl_hex(value)?,
            "PCI Path" => {
                let (dev, func) = value.split_once(',')?;
                let hop = [
                    u64::from_str_radix(dev.trim(), 16).ok()?,
                    u64::from_str_radix(func.trim(), 16).ok()?,
                ];
                scopes.last_mut()?.3.push(hop);
            }
            _ => {
                if let Some(v) = dsl_hex(value) {
                    fields.entry(name).or_insert(v);
                }
            }
        }
    }
    finish(&cur, &fields, &mut scopes, &mut out)?;
    if !any {
        return None;
    }
    // The table holds the width minus one (VT-d §8.1); ours is the width.
    out.facts.address_width = (haw? + 1).min(255);
    out.facts.flags = flags?;
    Some(out)
}

// ---- One machine ----

/// How one table compared.
#[derive(Debug, Default, Clone, Copy)]
struct TableCount {
    /// Our parser accepted it.
    ours: bool,
    /// iasl decoded it.
    iasl: bool,
    /// Both, and they agree.
    equal: bool,
}

#[derive(Debug, Default)]
struct Outcome {
    name: String,
    exit_ok: bool,
    elapsed: Duration,
    failures: Vec<String>,
    notes: Vec<String>,
    madt: TableCount,
    mcfg: TableCount,
    fadt: TableCount,
    dmar: TableCount,
    /// The DMAR offers interrupt remapping (INTR_REMAP).
    intremap_offered: bool,
    /// Every I/O APIC of the MADT is in a unit's scope, so interrupt remapping can be used.
    intremap_usable: bool,
    /// The same units and requester IDs (or the same refusal) from iasl's decoding.
    intremap_equal: bool,
    aml_initialised: bool,
    bridges_found: bool,
    all_routed: bool,
    /// The byte scan's bound held (at least ACPICA's host bridges, or tables loaded at run
    /// time flagged).
    scan_bound: bool,
    /// The byte scan counted exactly ACPICA's host bridges and no run-time loads: a boot on
    /// this machine whose MCFG gives one root per bridge needs no AML to bind its drivers.
    scan_exact: bool,
}

/// acpica-tools, when installed.
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
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(file).read_to_end(&mut out)?;
    Ok(out)
}

/// `acpixtract -a` then `iasl -d` on the first table with that name: the .dsl text.
fn iasl_decode(dir: &Path, name: &str) -> Option<String> {
    let dat = [format!("{name}.dat"), format!("{name}1.dat")]
        .into_iter()
        .find(|f| dir.join(f).exists())?;
    let r = run(
        Command::new("iasl").arg("-d").arg(&dat).current_dir(dir),
        Duration::from_secs(30),
    )
    .ok()?;
    if r.timed_out {
        return None;
    }
    let dsl = dir.join(dat.replace(".dat", ".dsl"));
    std::fs::read_to_string(dsl).ok()
}

fn check_machine(path: &Path, iasl: bool) -> Outcome {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().replace(".acpidump.gz", ""))
        .unwrap_or_default();
    let mut o = Outcome {
        name: name.clone(),
        ..Outcome::default()
    };
    let json = match probe(path) {
        Ok((v, elapsed)) => {
            o.exit_ok = true;
            o.elapsed = elapsed;
            v
        }
        Err(e) => {
            o.failures.push(format!("probe: {e}"));
            return o;
        }
    };
    let ours_madt = json.get("madt").filter(|m| m.get("error").is_none());
    let ours_mcfg = json.get("mcfg").filter(|m| m.is_array());
    let ours_fadt = json.get("fadt").filter(|m| m.get("error").is_none());
    let ours_dmar = json.get("dmar").filter(|m| m.get("error").is_none());
    o.madt.ours = ours_madt.is_some();
    o.mcfg.ours = ours_mcfg.is_some();
    o.fadt.ours = ours_fadt.is_some();
    o.dmar.ours = ours_dmar.is_some();
    o.intremap_offered = ours_dmar
        .and_then(|d| num(d, "flags"))
        .is_some_and(|f| f & 1 != 0);
    o.intremap_usable = o.intremap_offered && intremap_from_json(&json).is_some();
    if let Some(aml) = json.get("aml") {
        o.aml_initialised = aml.get("namespace_initialised") == Some(&Value::Bool(true));
    }
    if let Some(bridges) = json.get("host_bridges").and_then(Value::as_array) {
        // The byte scan (`firmware::aml::scan`) against ACPICA: never fewer host bridges,
        // unless it flagged tables loaded at run time (then a boot loads AML anyway).
        let scan = json.get("host_bridge_scan");
        let counted = scan
            .and_then(|s| s.get("host_bridges"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        let loads = scan
            .and_then(|s| s.get("loads_tables"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        o.scan_bound = loads || counted >= bridges.len();
        o.scan_exact = !loads && counted == bridges.len();
        if !o.scan_bound {
            o.failures.push(format!(
                "the byte scan counted {counted} host bridge(s), ACPICA found {}",
                bridges.len()
            ));
        }
        o.bridges_found = !bridges.is_empty();
        o.all_routed = o.bridges_found
            && bridges
                .iter()
                .all(|b| b.get("prt").is_some_and(Value::is_array));
    }
    if !iasl {
        return o;
    }
    let dir = std::env::temp_dir().join(format!("firmware-corpus-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        o.failures.push(format!("temp dir: {e}"));
        return o;
    }
    compare_with_iasl(path, &dir, &json, &mut o);
    let _ = std::fs::remove_dir_all(&dir);
    o
}

fn compare_with_iasl(path: &Path, dir: &Path, json: &Value, o: &mut Outcome) {
    let text = match gunzip(path) {
        Ok(t) => t,
        Err(e) => {
            o.failures.push(format!("gunzip: {e}"));
            return;
        }
    };
    if let Err(e) = std::fs::write(dir.join("dump.txt"), text) {
        o.failures.push(format!("temp file: {e}"));
        return;
    }
    let x = run(
        Command::new("acpixtract")
            .args(["-a", "dump.txt"])
            .current_dir(dir),
        Duration::from_secs(30),
    );
    if !x.is_ok_and(|r| r.code == Some(0)) {
        o.notes.push("acpixtract failed".into());
        return;
    }
    // MADT.
    let madt_dsl = iasl_decode(dir, "apic").as_deref().and_then(madt_from_dsl);
    if let Some(theirs) = &madt_dsl {
        o.madt.iasl = true;
        match json.get("madt").and_then(madt_from_json) {
            Some(ours) if ours == *theirs => o.madt.equal = true,
            Some(ours) => o.failures.push(format!(
                "MADT differs:\n    ours {ours:?}\n    iasl {theirs:?}"
            )),
            None => o.failures.push(format!(
                "MADT decoded by iasl but not by us: {}",
                json.get("madt").map(Value::to_string).unwrap_or_default()
            )),
        }
    }
    // MCFG.
    if let Some((theirs, skipped)) = iasl_decode(dir, "mcfg").as_deref().and_then(mcfg_from_dsl) {
        o.mcfg.iasl = true;
        if !skipped.is_empty() {
            o.notes.push(format!(
                "MCFG: {} entries with end bus below start bus (iasl lists them, we skip them)",
                skipped.len()
            ));
        }
        match json.get("mcfg").and_then(mcfg_from_json) {
            Some(ours) if ours == theirs => o.mcfg.equal = true,
            Some(ours) => o.failures.push(format!(
                "MCFG differs:\n    ours {ours:?}\n    iasl {theirs:?}"
            )),
            None => o.failures.push(format!(
                "MCFG decoded by iasl but not by us: {}",
                json.get("mcfg").map(Value::to_string).unwrap_or_default()
            )),
        }
    }
    // FADT main fields.
    if let Some(theirs) = iasl_decode(dir, "facp").as_deref().and_then(fadt_from_dsl) {
        o.fadt.iasl = true;
        match json.get("fadt").and_then(fadt_from_json) {
            Some(ours) if ours == theirs => o.fadt.equal = true,
            Some(ours) => o.failures.push(format!(
                "FADT differs:\n    ours {ours:?}\n    iasl {theirs:?}"
            )),
            None => o.failures.push("FADT decoded by iasl but not by us".into()),
        }
    }
    // DMAR.
    if let Some(theirs) = iasl_decode(dir, "dmar").as_deref().and_then(dmar_from_dsl) {
        o.dmar.iasl = true;
        if theirs.dropped > 0 {
            o.notes.push(format!(
                "DMAR: {} structures with an unusable register base or limit below base (iasl \
                 lists them, we drop them)",
                theirs.dropped
            ));
        }
        let ours = json.get("dmar").and_then(dmar_from_json);
        // When iasl stopped early, compare what it decoded with the start of ours.
        let ours_cut = ours.clone().map(|mut d| {
            if theirs.stopped {
                d.units.truncate(theirs.facts.units.len());
                d.reserved.truncate(theirs.facts.reserved.len());
            }
            d
        });
        if theirs.stopped {
            o.notes.push(format!(
                "DMAR: iasl stops at a structure type it does not know; compared its {} DRHD(s) \
                 and {} RMRR(s) with ours ({} and {})",
                theirs.facts.units.len(),
                theirs.facts.reserved.len(),
                ours.as_ref().map_or(0, |d| d.units.len()),
                ours.as_ref().map_or(0, |d| d.reserved.len()),
            ));
        }
        // Interrupt remapping's view, worked out again from iasl's DMAR and MADT.
        if o.intremap_offered
            && !theirs.stopped
            && let Some(madt) = &madt_dsl
        {
            let ids: Vec<u64> = madt.ioapics.iter().map(|a| a[0]).collect();
            let reference = intremap_reference(&theirs.facts, &ids);
            let ours = intremap_from_json(json);
            if ours == reference {
                o.intremap_equal = true;
            } else {
                o.failures.push(format!(
                    "interrupt remapping's I/O APICs differ:\n    ours {ours:?}\n    iasl {reference:?}"
                ));
            }
        }
        match ours_cut {
            Some(ours) if ours == theirs.facts => o.dmar.equal = true,
            Some(ours) => o.failures.push(format!(
                "DMAR differs:\n    ours {ours:?}\n    iasl {:?}",
                theirs.facts
            )),
            None => o.failures.push(format!(
                "DMAR decoded by iasl but not by us: {}",
                json.get("dmar").map(Value::to_string).unwrap_or_default()
            )),
        }
    }
}

#[test]
fn corpus() {
    let _ = std::fs::remove_file(summary_file());
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".acpidump.gz"))
            .collect(),
        Err(_) => {
            say!("corpus: ../shared/acpi-corpus not found: SKIPPED (162 machines not checked)");
            return;
        }
    };
    files.sort();
    let iasl = iasl_available();
    if !iasl {
        say!(
            "corpus: acpica-tools (iasl, acpixtract) not installed: MADT/MCFG/FADT/DMAR comparison \
             with iasl SKIPPED; exit status, JSON and no-panic checks still run"
        );
    }
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let o = check_machine(path, iasl);
                    outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(o);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    outcomes.sort_by(|a, b| a.name.cmp(&b.name));
    let n = outcomes.len();
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let slowest = outcomes
        .iter()
        .max_by_key(|o| o.elapsed)
        .map(|o| format!("{} {:.2} s", o.name, o.elapsed.as_secs_f64()))
        .unwrap_or_default();
    say!(
        "corpus: {n} machines: exit 0 with one JSON object on {} (slowest: {slowest})",
        count(&|o| o.exit_ok)
    );
    for (label, get) in [
        ("MADT", (|o: &Outcome| o.madt) as fn(&Outcome) -> TableCount),
        ("MCFG", |o: &Outcome| o.mcfg),
        ("FADT (DSDT, FACS, SCI, SMI_CMD, flags)", |o: &Outcome| {
            o.fadt
        }),
        (
            "DMAR (width, flags, DRHDs, RMRRs, device scopes)",
            |o: &Outcome| o.dmar,
        ),
    ] {
        if iasl {
            say!(
                "corpus: {label} parsed {}, decoded by iasl {}, equal to iasl on {}",
                count(&|o| get(o).ours),
                count(&|o| get(o).iasl),
                count(&|o| get(o).equal),
            );
        } else {
            say!(
                "corpus: {label} parsed {} (iasl comparison SKIPPED)",
                count(&|o| get(o).ours)
            );
        }
    }
    say!(
        "corpus: interrupt remapping offered by the DMAR on {}, every MADT I/O APIC in a \
         remapping unit's scope on {}{}",
        count(&|o| o.intremap_offered),
        count(&|o| o.intremap_usable),
        if iasl {
            format!(
                ", the same units and requester IDs from iasl's tables on {}",
                count(&|o| o.intremap_equal)
            )
        } else {
            " (iasl comparison SKIPPED)".into()
        }
    );
    say!(
        "corpus: AML namespace initialised {}, host bridges found on {}, every host bridge's \
         _PRT routed on {}",
        count(&|o| o.aml_initialised),
        count(&|o| o.bridges_found),
        count(&|o| o.all_routed),
    );
    say!(
        "corpus: host-bridge byte scan at least ACPICA's count (or run-time table loads \
         flagged) on {}, exactly ACPICA's count without run-time loads on {}",
        count(&|o| o.scan_bound),
        count(&|o| o.scan_exact),
    );
    for o in &outcomes {
        for note in &o.notes {
            say!("corpus: note: {}: {note}", o.name);
        }
    }
    let failures: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.failures.iter().map(move |f| format!("{}: {f}", o.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} problems on {} machines:\n{}",
        failures.len(),
        count(&|o| !o.failures.is_empty()),
        failures.join("\n")
    );
}

// ---- Fixtures (always run) ----

fn probe_fixture(name: &str) -> Value {
    probe(&fixtures().join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .0
}

fn madt_of(v: &Value) -> MadtFacts {
    madt_from_json(&v["madt"]).expect("a MADT")
}

#[test]
fn fixture_toshiba_rsdp_xsdt_and_two_ioapics() {
    let v = probe_fixture("toshiba-satellite-c70d-b.acpidump");
    assert_eq!(
        madt_of(&v),
        MadtFacts {
            local_apic: 0xfee0_0000,
            apic_ids: vec![0, 1, 2, 3],
            ioapics: vec![[4, 0xfec0_0000, 0], [5, 0xfec0_1000, 24]],
            overrides: vec![[0, 0, 2, 0, 0], [0, 9, 9, 3, 3]],
        }
    );
    assert_eq!(
        mcfg_from_json(&v["mcfg"]),
        Some(vec![[0, 0xf800_0000, 0, 63]])
    );
    assert_eq!(v["fadt"]["length"], 268);
    assert_eq!(v["dump"]["tables"], 8);
}

#[test]
fn fixture_gigabyte_116_byte_fadt() {
    let v = probe_fixture("gigabyte-ga-ma785gm-us2h.acpidump");
    let f = &v["fadt"];
    assert_eq!(f["length"], 116);
    assert_eq!(f["revision"], 1);
    assert_eq!(f["dsdt"], 0xbfdf_3100u64);
    assert_eq!(f["minor_version"], Value::Null);
    assert_eq!(f["reset"], Value::Null);
    assert_eq!(f["iapc_boot_arch"], Value::Null);
    assert_eq!(f["sci_int"], 9);
    assert_eq!(f["pm_timer"]["block"]["space_id"], 1);
    let m = madt_of(&v);
    assert_eq!(m.apic_ids, vec![0, 1]);
    assert_eq!(
        v["madt"]["cpu_entries"], 8,
        "6 disabled entries are not CPUs"
    );
}

#[test]
fn fixture_framework_x2apic() {
    let v = probe_fixture("framework-laptop-13.acpidump");
    assert_eq!(v["madt"]["cpus"], 22);
    assert_eq!(v["madt"]["x2apic_cpus"], 22);
    assert_eq!(v["madt"]["cpu_entries"], 48);
    let nmis = v["madt"]["local_nmis"].as_array().expect("list");
    assert_eq!(nmis.len(), 1);
    assert_eq!(nmis[0]["uid"], u64::from(u32::MAX));
    assert_eq!(nmis[0]["all"], true);
}

#[test]
fn fixture_dell_three_ioapics() {
    let v = probe_fixture("dell-precision-t7500.acpidump");
    let m = madt_of(&v);
    assert_eq!(m.apic_ids.len(), 12);
    assert_eq!(v["madt"]["cpu_entries"], 64);
    assert_eq!(
        m.ioapics.iter().map(|a| a[2]).collect::<Vec<_>>(),
        vec![0, 24, 48]
    );
    assert_eq!(v["hpet"]["error"], "no HPET");
}

#[test]
fn fixture_malformed() {
    let v = probe_fixture("malformed.acpidump");
    // The SSDT with a gap is dropped; FACP, APIC, MCFG, HPET (short) and a second APIC stay.
    assert_eq!(v["dump"]["tables"], 5);
    assert_eq!(v["dump"]["warnings"].as_array().map(Vec::len), Some(1));
    let m = &v["madt"];
    assert_eq!(m["checksum_ok"], false);
    assert_eq!(m["cpus"], 1, "the first MADT, with one enabled CPU");
    assert_eq!(m["cpu_entries"], 2);
    assert_eq!(m["ioapics"].as_array().map(Vec::len), Some(1));
    assert_eq!(m["overrides"].as_array().map(Vec::len), Some(2));
    let errors: Vec<&str> = m["errors"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("LINT4"));
    assert!(errors[1].contains("below the 12 bytes"));
    assert!(errors[2].contains("walk stopped"));
    assert_eq!(
        mcfg_from_json(&v["mcfg"]),
        Some(vec![[0, 0xb000_0000, 0, 255]])
    );
    assert_eq!(v["mcfg_errors"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["fadt"]["length"], 116);
    assert_eq!(v["fadt"]["dsdt"], 0x07fe_0040);
    assert_eq!(v["fadt"]["pm_timer"]["extended_32bit"], true);
    assert!(
        v["hpet"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("truncated"))
    );
}

#[test]
fn gzip_is_recognised_by_content_not_name() {
    let plain = fixtures().join("malformed.acpidump");
    let text = std::fs::read(&plain).expect("fixture");
    let dir = std::env::temp_dir().join(format!("firmware-gz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let gz = dir.join("no-gz-suffix.txt");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&text).expect("compress");
    std::fs::write(&gz, enc.finish().expect("compress")).expect("write");
    let a = probe(&plain).expect("plain").0;
    let b = probe(&gz).expect("gzipped").0;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(a, b);
}

#[test]
fn not_a_dump_exits_2() {
    for file in [
        fixtures().join("not-a-dump.txt"),
        fixtures().join("no-such-file"),
    ] {
        let r = run(Command::new(probe_bin()).arg(&file), TIMEOUT).expect("runs");
        assert_eq!(r.code, Some(2), "{}", file.display());
        assert!(r.stdout.trim().is_empty());
        assert!(!r.stderr.trim().is_empty());
    }
    let r = run(&mut Command::new(probe_bin()), TIMEOUT).expect("runs");
    assert_eq!(r.code, Some(2), "no argument");
}

/// Physical memory holding a dump's tables at their printed addresses.
struct DumpMemory(Vec<(u64, Vec<u8>)>);

impl firmware::hw::PhysRead for DumpMemory {
    fn read_phys(&self, phys: u64, buf: &mut [u8]) -> bool {
        self.0.iter().any(|(at, bytes)| {
            let Some(off) = phys.checked_sub(*at).and_then(|o| usize::try_from(o).ok()) else {
                return false;
            };
            match bytes.get(off..off.saturating_add(buf.len())) {
                Some(src) if src.len() == buf.len() => {
                    buf.copy_from_slice(src);
                    true
                }
                _ => false,
            }
        })
    }
}

#[test]
fn fixture_toshiba_discover_walks_the_xsdt() {
    use firmware::tables::{self, Madt, RootKind};
    let text = std::fs::read_to_string(fixtures().join("toshiba-satellite-c70d-b.acpidump"))
        .expect("fixture");
    let dumped = firmware::dump::parse(&text).expect("parses");
    let rsdp = dumped
        .iter()
        .find(|t| &t.signature == b"RSDP")
        .expect("an RSDP");
    let mem = DumpMemory(
        dumped
            .iter()
            .map(|t| (t.address, t.bytes.clone()))
            .collect(),
    );
    let set = tables::discover(&mem, &rsdp.bytes).expect("discovers");
    assert_eq!(set.root, RootKind::Xsdt);
    assert_eq!(set.root_phys, 0x9fbc_7188);
    assert_eq!(set.revision, 2);
    assert_eq!(&set.oem_id, b"TOSINV");
    // The fixture holds FACP, HPET, APIC, MCFG and FACS; the XSDT lists 21 tables, so 17
    // entries are unreadable here, and so is the DSDT.
    let found: Vec<&[u8]> = set.tables.iter().map(|t| t.signature.as_slice()).collect();
    assert_eq!(found, [&b"FACP"[..], b"HPET", b"APIC", b"MCFG", b"FACS"]);
    assert_eq!(set.errors.len(), 18, "{:#?}", set.errors);
    assert!(set.errors[17].starts_with("DSDT at 0x9fbf2000"));
    let apic = set.find(b"APIC").expect("listed");
    assert_eq!(apic.phys, 0x9fbf_a000);
    assert!(apic.checksum_ok);
    let bytes = tables::read_table(&mem, apic).expect("reads");
    assert_eq!(Madt::parse(&bytes).expect("parses").enabled_cpus(), 4);
    assert_eq!(set.find(b"FACS").map(|t| t.phys), Some(0x9fb5_f000));
}
