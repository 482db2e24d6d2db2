//! Mutation tests of the crate's own static-table parsers and of table discovery, fed with
//! real machines' tables mutated at random.
//!
//! Design:
//!
//! - Inputs: the static tables (MADT `APIC`, MCFG, HPET, FADT `FACP`, FACS, and the RSDP,
//!   RSDT and XSDT where a dump has them) of the fixture dumps in `tests/fixtures/` (always
//!   there), plus those of every machine in `<workspace>/../shared/acpi-corpus/*.acpidump.gz`
//!   when that folder exists (read as `tests/corpus.rs` does; gunzipped with `flate2`, which
//!   the default feature `probe` brings). A few hand-built tables add what real machines
//!   rarely carry (a MADT with every entry type, a 276-byte FADT with every `X_` field). The
//!   output says how many machines were used. `MUTATIONS_NO_CORPUS=1` leaves the corpus out
//!   (the fixtures-only run, as on a machine without the folder).
//! - Mutations (a seeded xorshift generator: the same seed gives the same cases, so a
//!   failure reproduces; `MUTATIONS_SEED` picks another seed, `MUTATIONS_SCALE` multiplies
//!   the case counts, `MUTATIONS_ONLY=N` runs and prints only random case N of each test):
//!   byte flips, header length fields of 0, 1, 35, 36, below the real size, beyond the
//!   buffer, 0xFFFF_FFFF; truncation; MADT entry type and length bytes of 0, 1, 255; MCFG
//!   entries with start bus above end bus; HPET base addresses of 0 and all ones; FADTs cut
//!   at each revision's size; RSDT/XSDT entries pointing to 0, to each other, to the XSDT
//!   itself, to the last bytes of the address space, the same entry thousands of times; RSDPs
//!   with bad checksums, revisions 0 and 2 and an XSDT address of 0. Each parser also gets a
//!   deterministic sweep of those header values over every real table.
//! - Each case must return (`Ok` or `Err`) without panicking (a panic hook records its
//!   place; the input is then shrunk and printed as a byte array), within [`CASE_LIMIT`] (a
//!   watchdog thread aborts the run, naming the case, when one takes [`HANG_LIMIT`]), and
//!   within an allocation budget (a counting global allocator measures each case's peak;
//!   single requests above [`REFUSE_ABOVE`] are refused and reported).
//! - Plausibility: each parser's result is compared with a small independent decoder written
//!   here (which header problems must be refused, which entries must be kept, which FADT
//!   fields exist at which length); discovery must list each address once, at most
//!   `MAX_ENTRIES + 2` tables, each with a possible length, and fail only when the RSDP or
//!   every root table is unusable; every table it lists is then copied with `read_table`
//!   and parsed.

mod alloc_count;
mod bytes;
mod discovery;
mod inputs;
mod machine_mutations;
mod measure;
mod memory;
mod oracles;
mod parsers;
mod rng;
mod rsdp;
mod table_mutations;

use std::time::Duration;

use firmware::tables::{MAX_ENTRIES, MAX_TABLE_LEN};

use crate::bytes::kib;
use crate::discovery::run_worst_case;
use crate::inputs::{Seed, inputs, seeds};
use crate::measure::install_panic_hook;
use crate::memory::{RSDT_AT, XSDT_AT};
use crate::oracles::{Verdict, check_fadt, check_headers, check_hpet, check_madt, check_mcfg};
use crate::parsers::{Failure, run_one, run_slice_test, shrink};
use crate::rsdp::{rsdp_bytes, run_rsdp_cases};

/// The default seed ("mutation").
const DEFAULT_SEED: u64 = 0x6d75_7461_7469_6f6e;
/// Longest one case may take (they take microseconds; this is for debug builds on a busy
/// machine).
const CASE_LIMIT: Duration = Duration::from_secs(2);
/// A case running this long is a hang: the watchdog prints it and aborts the run.
const HANG_LIMIT: Duration = Duration::from_secs(15);
/// Single allocations larger than this are refused (and reported).
const REFUSE_ABOVE: usize = 1 << 30;

// Random cases per test (before `MUTATIONS_SCALE`).
const MADT_CASES: u64 = 40_000;
const MCFG_CASES: u64 = 25_000;
const HPET_CASES: u64 = 20_000;
const FADT_CASES: u64 = 40_000;
const HEADER_CASES: u64 = 30_000;
const DISCOVER_CASES: u64 = 12_000;

/// Prints straight to stderr, past the test harness's capture: the counts always show.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        let _ = writeln!(std::io::stderr(), "mutations: {line}");
    }};
}
pub(crate) use say;

// ---- Slice parsers ----

#[test]
fn madt_never_panics_and_keeps_only_real_entries() {
    let (seeds, machines) = seeds(b"APIC");
    run_slice_test("MADT", b"APIC", check_madt, &seeds, machines, MADT_CASES);
}

#[test]
fn mcfg_never_panics_and_drops_backwards_bus_ranges() {
    let (seeds, machines) = seeds(b"MCFG");
    run_slice_test("MCFG", b"MCFG", check_mcfg, &seeds, machines, MCFG_CASES);
}

#[test]
fn hpet_never_panics() {
    let (seeds, machines) = seeds(b"HPET");
    run_slice_test("HPET", b"HPET", check_hpet, &seeds, machines, HPET_CASES);
}

#[test]
fn fadt_never_panics_and_reads_only_what_its_length_covers() {
    let (seeds, machines) = seeds(b"FACP");
    run_slice_test("FADT", b"FACP", check_fadt, &seeds, machines, FADT_CASES);
}

/// RSDPs (each machine's OEM ID, revisions 0 and 2, and the real one where a dump has it)
/// and table headers of every signature.
#[test]
fn rsdp_and_headers_never_panic() {
    let inputs = inputs();
    let mut rsdps = Vec::new();
    for m in &inputs.machines {
        if let Some(r) = m.find(b"RSDP") {
            rsdps.push(Seed {
                origin: m.name.clone(),
                bytes: r.bytes.clone(),
            });
        }
        let oem: [u8; 6] = m
            .tables
            .iter()
            .find(|t| t.bytes.len() >= 16)
            .and_then(|t| t.bytes[10..16].try_into().ok())
            .unwrap_or(*b"RUSTOS");
        for revision in [0u8, 2] {
            rsdps.push(Seed {
                origin: m.name.clone(),
                bytes: rsdp_bytes(revision, &oem, RSDT_AT as u32, XSDT_AT),
            });
        }
    }
    let machines = inputs.machines.len();
    run_rsdp_cases(&rsdps, machines);
    let mut headers = Vec::new();
    for m in &inputs.machines {
        for t in &m.tables {
            headers.push(Seed {
                origin: m.name.clone(),
                bytes: t.bytes.clone(),
            });
        }
    }
    run_slice_test(
        "table headers",
        b"SSDT",
        check_headers,
        &headers,
        machines,
        HEADER_CASES / 2,
    );
}

// ---- Discovery ----

#[test]
fn discover_never_panics_on_mutated_machines() {
    discovery::discover_mutated_machines(DISCOVER_CASES);
}

#[test]
fn discover_worst_case_work_is_measured() {
    let entries = 4;
    let (elapsed, read, listed) = run_worst_case(entries);
    assert_eq!(listed, entries);
    let per_entry = elapsed.as_secs_f64() / entries as f64;
    say!(
        "discover worst case: {entries} entries each a readable {}-byte table: {} read in \
         {:.3} s; {MAX_ENTRIES} such entries (allowed) would read {} GiB, about {:.0} s at \
         this speed",
        MAX_TABLE_LEN,
        kib(usize::try_from(read).unwrap_or(usize::MAX)),
        elapsed.as_secs_f64(),
        (MAX_ENTRIES as u64 * u64::from(MAX_TABLE_LEN)) >> 30,
        per_entry * MAX_ENTRIES as f64,
    );
}

#[test]
#[ignore = "reads 16 GiB through PhysRead: the design's worst case, run by hand"]
fn discover_worst_case_full() {
    let (elapsed, read, listed) = run_worst_case(MAX_ENTRIES);
    say!(
        "discover worst case, {MAX_ENTRIES} entries: {listed} listed, {} GiB read in {:.1} s",
        read >> 30,
        elapsed.as_secs_f64()
    );
}

// ---- The harness itself ----

fn panics_on_0x42_at_5(b: &[u8]) -> Result<Verdict, String> {
    if b.get(5) == Some(&0x42) {
        let v: Vec<u8> = Vec::new();
        return Ok(if v[b.len()] == 0 { Ok(()) } else { Err("x") });
    }
    Ok(Ok(()))
}

fn allocates_64_mib(b: &[u8]) -> Result<Verdict, String> {
    let v = vec![1u8; 64 << 20];
    Ok(if v.len() > b.len() { Ok(()) } else { Err("x") })
}

fn asks_for_2_gib(_: &[u8]) -> Result<Verdict, String> {
    let mut v: Vec<u8> = Vec::new();
    Ok(match v.try_reserve_exact(2 << 30) {
        Ok(()) => Ok(()),
        Err(_) => Err("NoMemory"),
    })
}

/// The checks above would catch what they are for: a panic (placed and shrunk), a large
/// allocation, an absurd one.
#[test]
fn the_harness_catches_panics_and_allocations() {
    install_panic_hook();
    let mut input = vec![7u8; 300];
    input[5] = 0x42;
    let (r, ..) = run_one(panics_on_0x42_at_5, &input);
    let Err(f @ Failure::Panic(place)) = &r else {
        panic!("the panic was not caught: {r:?}");
    };
    assert!(place.contains(file!()), "{place}");
    assert_eq!(
        shrink(panics_on_0x42_at_5, &input, f),
        [0, 0, 0, 0, 0, 0x42]
    );
    assert!(matches!(
        run_one(allocates_64_mib, &[0; 10]).0,
        Err(Failure::Memory { largest, .. }) if largest == 64 << 20
    ));
    assert!(matches!(
        run_one(asks_for_2_gib, &[0; 10]).0,
        Err(Failure::Refused(n)) if n == 2 << 30
    ));
    assert!(matches!(run_one(check_madt, &[]).0, Ok(Err("Truncated"))));
}
