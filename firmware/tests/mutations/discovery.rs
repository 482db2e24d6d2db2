//! Discovery over a simulated physical memory: each case mutates one laid-out machine and
//! runs `tables::discover` on it, which must agree with the RSDP's own parse, list each
//! address once, at most `MAX_ENTRIES + 2` tables, each with a possible length, and fail
//! only when the RSDP or every root table is unusable; every table it lists is then copied
//! with `read_table` and parsed. Also the most work discovery can be made to do by design,
//! measured on a few entries.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use firmware::tables::{self, HEADER_LEN, MAX_ENTRIES, MAX_TABLE_LEN, RootKind, Rsdp, TableError};

use crate::alloc_count::take_refused;
use crate::bytes::{byte_sum, hex_array, kib};
use crate::inputs::inputs;
use crate::machine_mutations::mutate_machine;
use crate::measure::{install_panic_hook, measure, watch};
use crate::memory::{Mem, XSDT_AT, layouts, root_table};
use crate::oracles::{Verdict, check_fadt, check_hpet, check_madt, check_mcfg, variant};
use crate::parsers::Stats;
use crate::rng::{Rng, cases, only, seed};
use crate::rsdp::rsdp_bytes;
use crate::{CASE_LIMIT, say};

thread_local! {
    /// What discovery found, over a test: XSDT walks, RSDT walks, most tables listed, most
    /// errors, FACS lengths above `MAX_TABLE_LEN`, listed tables parsed.
    static DISCOVERED: Cell<[usize; 6]> = const { Cell::new([0; 6]) };
}

/// each listed table read and parsed.
fn check_discover(mem: &Mem<'_>, rsdp: &[u8]) -> Result<Verdict, String> {
    let parsed = Rsdp::parse(rsdp);
    let found = tables::discover(mem, rsdp);
    let set = match (&parsed, found) {
        (Err(a), Err(b)) if *a == b => return Ok(Err(variant(&b))),
        (Ok(_), Err(e @ TableError::NoRootTable { .. })) => {
            let _ = e.to_string();
            return Ok(Err("NoRootTable"));
        }
        (p, Err(e)) => return Err(format!("discover failed with {e:?}; the RSDP parse: {p:?}")),
        (Err(e), Ok(_)) => return Err(format!("discover succeeded past an RSDP error {e:?}")),
        (Ok(_), Ok(set)) => set,
    };
    let p = parsed.map_err(|e| format!("{e:?}"))?;
    DISCOVERED.with(|d| {
        let mut v = d.get();
        v[0] += usize::from(set.root == RootKind::Xsdt);
        v[1] += usize::from(set.root == RootKind::Rsdt);
        v[2] = v[2].max(set.tables.len());
        v[3] = v[3].max(set.errors.len());
        v[4] += set
            .tables
            .iter()
            .filter(|t| &t.signature == b"FACS" && t.length > MAX_TABLE_LEN)
            .count();
        d.set(v);
    });
    if set.revision != p.revision || set.oem_id != p.oem_id {
        return Err("revision or OEM ID differs from the RSDP's".into());
    }
    match set.root {
        RootKind::Xsdt if p.xsdt != Some(set.root_phys) || set.root_phys == 0 => {
            return Err(format!(
                "walked an XSDT at {:#x}; the RSDP says {:x?}",
                set.root_phys, p.xsdt
            ));
        }
        RootKind::Rsdt if set.root_phys != u64::from(p.rsdt) || p.rsdt == 0 => {
            return Err(format!(
                "walked an RSDT at {:#x}; the RSDP says {:#x}",
                set.root_phys, p.rsdt
            ));
        }
        _ => {}
    }
    if set.tables.len() > MAX_ENTRIES + 2 {
        return Err(format!("{} tables listed", set.tables.len()));
    }
    let mut addresses: Vec<u64> = set.tables.iter().map(|t| t.phys).collect();
    addresses.sort_unstable();
    let n = addresses.len();
    addresses.dedup();
    if addresses.len() != n {
        return Err("an address listed twice".into());
    }
    if set.errors.len() > 2 * MAX_ENTRIES + 16 {
        return Err(format!("{} errors", set.errors.len()));
    }
    for t in &set.tables {
        if t.phys == 0 {
            return Err(format!("{:?} listed at address 0", t.signature));
        }
        let facs = &t.signature == b"FACS";
        // Every table, the FACS included, is listed with 36 bytes at least (a FACS the
        // FADT names needs 64; one a root table lists is read as any table) and at most
        // `MAX_TABLE_LEN`.
        if !(HEADER_LEN as u32..=MAX_TABLE_LEN).contains(&t.length) {
            return Err(format!("{:?} listed with length {}", t.signature, t.length));
        }
        if facs && t.length > 4096 {
            // The FACS is never read whole here; its length is only a claim.
            continue;
        }
        match tables::read_table(mem, t) {
            Ok(bytes) => {
                if bytes.len() != t.length as usize {
                    return Err(format!(
                        "read_table gave {} bytes of {}",
                        bytes.len(),
                        t.length
                    ));
                }
                if !facs && t.checksum_ok != (byte_sum(&bytes) == 0) {
                    return Err(format!(
                        "{:?} at {:#x}: checksum_ok is wrong",
                        t.signature, t.phys
                    ));
                }
                let check = match &t.signature {
                    b"APIC" => Some(check_madt as fn(&[u8]) -> Result<Verdict, String>),
                    b"MCFG" => Some(check_mcfg as fn(&[u8]) -> Result<Verdict, String>),
                    b"HPET" => Some(check_hpet as fn(&[u8]) -> Result<Verdict, String>),
                    b"FACP" => Some(check_fadt as fn(&[u8]) -> Result<Verdict, String>),
                    _ => None,
                };
                if let Some(check) = check {
                    DISCOVERED.with(|d| {
                        let mut v = d.get();
                        v[5] += 1;
                        d.set(v);
                    });
                    let _refused_or_parsed =
                        check(&bytes).map_err(|e| format!("the listed {:?}: {e}", t.signature))?;
                }
            }
            Err(e) if !facs => {
                return Err(format!("a listed table cannot be read: {e:?}"));
            }
            Err(_) => {}
        }
    }
    let _ = set.find_all(b"SSDT").count();
    Ok(Ok(()))
}

/// Discovery may copy one FADT of up to `MAX_TABLE_LEN`, and the check reads each listed
/// table (one at a time): the lists and messages beyond that stay small.
fn discover_budget() -> usize {
    2 * MAX_TABLE_LEN as usize + (8 << 20)
}

/// The discovery test: every unmutated layout must discover its tables; then
/// `base_cases` (before `MUTATIONS_SCALE`) mutated layouts, each checked by
/// [`check_discover`] within the time, allocation and hang limits.
pub(crate) fn discover_mutated_machines(base_cases: u64) {
    install_panic_hook();
    let test = "discover";
    let slot = watch(test);
    let started = Instant::now();
    let layouts = layouts();
    assert!(!layouts.is_empty(), "no machine to lay out");
    let real = layouts
        .iter()
        .filter(|l| l.name.contains("real addresses"))
        .count();
    let mut stats = Stats::default();
    let mut most_read = 0u64;
    let only = only();
    // Unmutated first: every layout must discover its tables.
    let mut unmutated_ok = 0;
    for l in &layouts {
        let mem = Mem {
            regions: l
                .regions
                .iter()
                .map(|(a, b)| (*a, Cow::Borrowed(&b[..])))
                .collect(),
            bytes_read: Cell::new(0),
        };
        let set = tables::discover(&mem, &l.rsdp)
            .unwrap_or_else(|e| panic!("{}: unmutated layout: {e}", l.name));
        unmutated_ok += usize::from(!set.tables.is_empty());
    }
    let range = match only {
        Some(i) => i..i + 1,
        None => 0..cases(base_cases),
    };
    for i in range {
        let mut rng = Rng::for_case(test, i);
        let l = &layouts[(i as usize) % layouts.len()];
        let mut regions: Vec<Cow<'_, [u8]>> = l
            .regions
            .iter()
            .map(|(_, b)| Cow::Borrowed(&b[..]))
            .collect();
        let mut rsdp = l.rsdp.clone();
        let mut names = Vec::new();
        for _ in 0..1 + rng.below(3) {
            names.push(mutate_machine(&mut rng, l, &mut regions, &mut rsdp));
        }
        let name = if names.len() > 1 {
            "several at once"
        } else {
            names[0]
        };
        *stats.strategies.entry(name).or_default() += 1;
        let mem = Mem {
            regions: l
                .regions
                .iter()
                .zip(regions)
                .map(|((a, _), b)| (*a, b))
                .collect(),
            bytes_read: Cell::new(0),
        };
        let describe = |mem: &Mem<'_>| {
            let mut s = format!(
                "case {i} on {} ({names:?}, seed {:#x})\n  RSDP: {}",
                l.name,
                seed(),
                hex_array(&rsdp)
            );
            for ((a, orig), (_, now)) in l.regions.iter().zip(&mem.regions) {
                if orig[..] != now[..] {
                    let shown = &now[..now.len().min(256)];
                    let _ = write!(
                        s,
                        "\n  changed region at {a:#x} ({} bytes, first {}): {}",
                        now.len(),
                        shown.len(),
                        hex_array(shown)
                    );
                }
            }
            s
        };
        if only.is_some() {
            say!("{test}: {}", describe(&mem));
        }
        slot.begin(i);
        let m = measure(|| check_discover(&mem, &rsdp));
        slot.end();
        let refused = take_refused();
        let verdict = match m.value {
            Err(place) => panic!("{test}: PANIC at {place}\n  {}", describe(&mem)),
            Ok(Err(why)) => panic!("{test}: implausible: {why}\n  {}", describe(&mem)),
            Ok(Ok(v)) => v,
        };
        assert!(
            refused == 0,
            "{test}: an allocation of {refused} bytes was asked for\n  {}",
            describe(&mem)
        );
        assert!(
            m.elapsed <= CASE_LIMIT,
            "{test}: {:?} for one case\n  {}",
            m.elapsed,
            describe(&mem)
        );
        assert!(
            m.peak <= discover_budget(),
            "{test}: {} allocated at once\n  {}",
            kib(m.peak),
            describe(&mem)
        );
        most_read = most_read.max(mem.bytes_read.get());
        stats.add(verdict, m.elapsed, m.peak, m.largest, rsdp.len());
    }
    say!(
        "{test}: {} cases on {} layouts ({real} at a dump's real addresses, the rest placed \
         here) of {} machines, in {:.2} s: {} discovered, refused: {}; no panic, slowest case \
         {:.3} ms, peak allocation {} (largest single {}), most memory read by one case {}",
        stats.cases,
        layouts.len(),
        inputs().machines.len(),
        started.elapsed().as_secs_f64(),
        stats.parsed,
        stats.refusals(),
        stats.slowest.as_secs_f64() * 1e3,
        kib(stats.peak),
        kib(stats.largest),
        kib(usize::try_from(most_read).unwrap_or(usize::MAX)),
    );
    say!(
        "{test}: {unmutated_ok} of {} unmutated layouts list tables; mutations used: {}",
        layouts.len(),
        stats
            .strategies
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let [xsdt, rsdt, most_tables, most_errors, huge_facs, parsed] = DISCOVERED.with(Cell::get);
    let inputs = inputs();
    say!(
        "{test}: walked the XSDT {xsdt} times, the RSDT {rsdt} times; at most {most_tables} \
         tables and {most_errors} errors in one set; {parsed} listed MADT/MCFG/HPET/FADT \
         copies parsed; {huge_facs} FACS listed with a length above MAX_TABLE_LEN; machines: {} fixture dumps, {} \
         corpus",
        inputs.fixtures,
        inputs.corpus
    );
    assert!(stats.cases > 0);
}

/// The most work discovery can be made to do by design: `MAX_ENTRIES` distinct entries,
/// each a readable table claiming `MAX_TABLE_LEN` bytes, each summed whole (16 GiB read).
/// Measured here on a few entries and extrapolated; the full run is the `#[ignore]`d
/// `discover_worst_case_full`.
fn worst_case_memory(entries: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let region_len = MAX_TABLE_LEN as usize + 64 * entries;
    let mut region = vec![0u8; region_len];
    for k in 0..entries {
        let at = 64 * k;
        region[at..at + 4].copy_from_slice(b"SSDT");
        region[at + 4..at + 8].copy_from_slice(&MAX_TABLE_LEN.to_le_bytes());
    }
    let list: Vec<u64> = (0..entries as u64)
        .map(|k| 0x1_0000_0000 + 64 * k)
        .collect();
    let xsdt = root_table(b"XSDT", &list);
    let rsdp = rsdp_bytes(2, b"RUSTOS", 0, XSDT_AT);
    (region, xsdt, rsdp)
}

pub(crate) fn run_worst_case(entries: usize) -> (Duration, u64, usize) {
    let (region, xsdt, rsdp) = worst_case_memory(entries);
    let mem = Mem {
        regions: vec![
            (XSDT_AT, Cow::Borrowed(&xsdt[..])),
            (0x1_0000_0000, Cow::Borrowed(&region[..])),
        ],
        bytes_read: Cell::new(0),
    };
    let started = Instant::now();
    let set = tables::discover(&mem, &rsdp).expect("discovers");
    let elapsed = started.elapsed();
    (elapsed, mem.bytes_read.get(), set.tables.len())
}
