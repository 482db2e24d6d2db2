//! The inputs: the static tables of the fixture dumps in `tests/fixtures/` and, unless
//! `MUTATIONS_NO_CORPUS` is set, of every machine in the shared corpus (gunzipped when the
//! feature `probe` is on), read once per run; and the seed tables each test mutates, the
//! real ones of a signature followed by hand-built ones carrying what real machines rarely
//! have.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use firmware::dump::DumpedTable;
use firmware::tables::{HEADER_LEN, build};

use crate::bytes::put;
use crate::oracles::{
    DSDT, FIRMWARE_CTRL, FLAGS, PM_TMR_BLK, RESET_REG, RESET_VALUE, X_DSDT, X_FIRMWARE_CTRL,
};
use crate::say;

/// Signatures kept from each dump.
fn wanted(name: &str) -> bool {
    matches!(
        name,
        "APIC" | "FACP" | "MCFG" | "HPET" | "FACS" | "RSDT" | "XSDT"
    ) || (name.starts_with("RSD") && name != "RSDT")
}

/// One machine's static tables.
pub(crate) struct Machine {
    pub(crate) name: String,
    pub(crate) tables: Vec<DumpedTable>,
}

impl Machine {
    pub(crate) fn find(&self, sig: &[u8; 4]) -> Option<&DumpedTable> {
        self.tables.iter().find(|t| &t.signature == sig)
    }
}

pub(crate) struct Inputs {
    pub(crate) machines: Vec<Machine>,
    pub(crate) fixtures: usize,
    pub(crate) corpus: usize,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn corpus_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .unwrap_or(manifest)
        .join("../shared/acpi-corpus")
}

/// `OFFSET: ...` (as `firmware::dump` reads it).
fn is_data_line(line: &str) -> bool {
    line.trim_start().split_once(':').is_some_and(|(off, _)| {
        !off.is_empty() && off.len() <= 8 && off.bytes().all(|c| c.is_ascii_hexdigit())
    })
}

/// `SIG @ 0xADDR`: the name.
fn header_name(line: &str) -> Option<&str> {
    let (name, rest) = line.split_once('@')?;
    let name = name.trim();
    let rest = rest.trim_start();
    (!name.is_empty() && name.len() <= 8 && (rest.starts_with("0x") || rest.starts_with("0X")))
        .then_some(name)
}

/// The blocks of a dump whose signature is [`wanted`] (the DSDT and SSDTs, most of the
/// text, are not parsed at all).
fn wanted_blocks(text: &str) -> String {
    let mut out = String::new();
    let mut keep = false;
    for line in text.lines() {
        if is_data_line(line) {
            if keep {
                out.push_str(line);
                out.push('\n');
            }
        } else if let Some(name) = header_name(line) {
            keep = wanted(name);
            if keep {
                out.push('\n');
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn machine_from_text(name: String, text: &str) -> Option<Machine> {
    let dump = firmware::dump::parse_lenient(&wanted_blocks(text)).ok()?;
    let tables: Vec<DumpedTable> = dump.tables.into_iter().collect();
    (!tables.is_empty()).then_some(Machine { name, tables })
}

fn load_fixtures() -> Vec<Machine> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "acpidump"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            let name = p.file_stem()?.to_string_lossy().into_owned();
            machine_from_text(name, &text)
        })
        .collect()
}

#[cfg(feature = "probe")]
fn gunzip(path: &Path) -> Option<String> {
    use std::io::Read;
    let bytes = std::fs::read(path).ok()?;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The corpus machines (two threads: gunzipping is most of the cost), and a note on what
/// was not used.
#[cfg(feature = "probe")]
fn load_corpus() -> (Vec<Machine>, String) {
    let dir = corpus_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return (
            Vec::new(),
            format!("{} not found: fixtures only", dir.display()),
        );
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".acpidump.gz"))
        .collect();
    files.sort();
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    let unreadable = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().replace(".acpidump.gz", ""))
                        .unwrap_or_default();
                    match gunzip(path).and_then(|t| machine_from_text(name, &t)) {
                        Some(m) => found.lock().unwrap_or_else(|e| e.into_inner()).push((i, m)),
                        None => {
                            unreadable.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
    found.sort_by_key(|(i, _)| *i);
    let n = unreadable.into_inner();
    let note = format!(
        "{} files in {}{}",
        files.len(),
        dir.display(),
        if n > 0 {
            format!(", {n} unreadable or without a static table (not used)")
        } else {
            String::new()
        }
    );
    (found.into_iter().map(|(_, m)| m).collect(), note)
}

#[cfg(not(feature = "probe"))]
fn load_corpus() -> (Vec<Machine>, String) {
    let note = if corpus_dir().exists() {
        "present, but this build has no gunzip (feature `probe` off): fixtures only"
    } else {
        "not found: fixtures only"
    };
    (Vec::new(), format!("{}: {note}", corpus_dir().display()))
}

pub(crate) fn inputs() -> &'static Inputs {
    static INPUTS: OnceLock<Inputs> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let started = Instant::now();
        let mut machines = load_fixtures();
        let fixtures = machines.len();
        assert!(
            fixtures >= 4,
            "only {fixtures} fixture dumps read from {}",
            fixtures_dir().display()
        );
        let (corpus, note) = if std::env::var_os("MUTATIONS_NO_CORPUS").is_some() {
            (
                Vec::new(),
                "skipped: MUTATIONS_NO_CORPUS is set".to_string(),
            )
        } else {
            load_corpus()
        };
        let n = corpus.len();
        machines.extend(corpus);
        say!(
            "inputs: {} machines: {fixtures} fixture dumps ({}) + {n} corpus machines ({note}); \
             loaded in {:.2} s",
            machines.len(),
            machines
                .iter()
                .take(fixtures)
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64()
        );
        Inputs {
            machines,
            fixtures,
            corpus: n,
        }
    })
}

/// A table to mutate and where it came from.
pub(crate) struct Seed {
    pub(crate) origin: String,
    pub(crate) bytes: Vec<u8>,
}

pub(crate) fn table(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    build::table(sig, revision, body).expect("a small table")
}

/// Every real table with signature `sig` (each machine's every copy), then the hand-built
/// ones.
pub(crate) fn seeds(sig: &[u8; 4]) -> (Vec<Seed>, usize) {
    let inputs = inputs();
    let mut out = Vec::new();
    let mut machines = 0;
    for m in &inputs.machines {
        let mut any = false;
        for t in m.tables.iter().filter(|t| &t.signature == sig) {
            any = true;
            out.push(Seed {
                origin: m.name.clone(),
                bytes: t.bytes.clone(),
            });
        }
        machines += usize::from(any);
    }
    for bytes in synthetic(sig) {
        out.push(Seed {
            origin: "hand-built".into(),
            bytes,
        });
    }
    (out, machines)
}

/// Tables real machines rarely have.
fn synthetic(sig: &[u8; 4]) -> Vec<Vec<u8>> {
    match sig {
        b"APIC" => {
            let mut body = 0xfee0_0000u32.to_le_bytes().to_vec();
            body.extend_from_slice(&1u32.to_le_bytes());
            for e in [
                &[0u8, 8, 0, 0, 1, 0, 0, 0][..],
                &[0, 8, 1, 1, 0, 0, 0, 0],
                &[9, 16, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0],
                &[1, 12, 2, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0],
                &[2, 10, 0, 9, 9, 0, 0, 0, 0x0f, 0],
                &[3, 8, 0x0d, 0, 23, 0, 0, 0],
                &[4, 6, 0xff, 5, 0, 1],
                &[0xa, 12, 5, 0, 0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0],
                &[5, 12, 0, 0, 0, 0, 0xe0, 0xfe, 1, 0, 0, 0],
                &[0x7f, 4, 0xaa, 0xbb],
            ] {
                body.extend_from_slice(e);
            }
            vec![table(b"APIC", 5, &body)]
        }
        b"FACP" => {
            let mut b = vec![0u8; 276];
            put(&mut b, FIRMWARE_CTRL, &0x7fe_0000u32.to_le_bytes());
            put(&mut b, DSDT, &0x7fe_0040u32.to_le_bytes());
            put(&mut b, 46, &9u16.to_le_bytes());
            put(&mut b, 48, &0xb2u32.to_le_bytes());
            put(&mut b, 56, &0x600u32.to_le_bytes());
            put(&mut b, 64, &0x604u32.to_le_bytes());
            put(&mut b, PM_TMR_BLK, &0x608u32.to_le_bytes());
            put(&mut b, 88, &[4, 2, 0, 4]);
            put(
                &mut b,
                FLAGS,
                &((1u32 << 8) | (1 << 10) | 0xa5).to_le_bytes(),
            );
            put(&mut b, RESET_REG, &[1, 8, 0, 1]);
            put(&mut b, RESET_REG + 4, &0xcf9u64.to_le_bytes());
            put(&mut b, RESET_VALUE, &[6]);
            put(&mut b, X_FIRMWARE_CTRL, &0x1_0000_0000u64.to_le_bytes());
            put(&mut b, X_DSDT, &0x1_0000_0040u64.to_le_bytes());
            for (i, off) in [148usize, 160, 172, 184, 196, 208, 220, 232]
                .into_iter()
                .enumerate()
            {
                put(&mut b, off, &[1, 32, 0, 3]);
                put(&mut b, off + 4, &(0x600u64 + 4 * i as u64).to_le_bytes());
            }
            vec![table(b"FACP", 6, &b[HEADER_LEN..])]
        }
        b"HPET" => {
            let mut body = 0x8086_a201u32.to_le_bytes().to_vec();
            body.extend_from_slice(&[0, 64, 0, 0]);
            body.extend_from_slice(&0xfed0_0000u64.to_le_bytes());
            body.extend_from_slice(&[0, 0x80, 0, 0]);
            vec![table(b"HPET", 1, &body)]
        }
        b"MCFG" => {
            let mut body = vec![0u8; 8];
            for (address, segment, start, end) in [
                (0xe000_0000u64, 0u16, 0u8, 0xffu8),
                (0x40_0000_0000, 1, 0x80, 0xbf),
            ] {
                body.extend_from_slice(&address.to_le_bytes());
                body.extend_from_slice(&segment.to_le_bytes());
                body.extend_from_slice(&[start, end, 0, 0, 0, 0]);
            }
            vec![table(b"MCFG", 1, &body)]
        }
        _ => Vec::new(),
    }
}
