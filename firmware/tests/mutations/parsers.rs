//! Running the slice parsers: one case run and judged ([`run_one`]: a panic, an implausible
//! result, a refused allocation, too long or too much memory are failures), a failing
//! input shrunk and printed as a byte array, the running totals a test prints, and
//! [`run_slice_test`], which runs one parser's sweep and random cases over its seed tables.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::alloc_count::take_refused;
use crate::bytes::{hex_array, kib};
use crate::inputs::Seed;
use crate::measure::{install_panic_hook, measure, watch};
use crate::oracles::Verdict;
use crate::rng::{Rng, cases, only, seed};
use crate::table_mutations::{mutate_table, sweep};
use crate::{CASE_LIMIT, say};

/// What a failing case did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    Panic(String),
    Implausible(String),
    Slow(Duration),
    Memory { peak: usize, largest: usize },
    Refused(usize),
}

impl Failure {
    /// Whether `other` is the same problem (for shrinking).
    fn same_kind(&self, other: &Failure) -> bool {
        match (self, other) {
            (Failure::Panic(a), Failure::Panic(b)) => a.split(": ").next() == b.split(": ").next(),
            (Failure::Implausible(_), Failure::Implausible(_))
            | (Failure::Slow(_), Failure::Slow(_))
            | (Failure::Memory { .. }, Failure::Memory { .. })
            | (Failure::Refused(_), Failure::Refused(_)) => true,
            _ => false,
        }
    }
}

/// Allocation allowed for parsing `n` bytes: the lists and error strings grow with the
/// table (an error message per two-byte MADT entry at most).
fn slice_budget(n: usize) -> usize {
    (1 << 20) + 256 * n
}

/// Running totals for one test.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) cases: u64,
    pub(crate) parsed: u64,
    refused: BTreeMap<&'static str, u64>,
    pub(crate) strategies: BTreeMap<&'static str, u64>,
    pub(crate) slowest: Duration,
    pub(crate) peak: usize,
    pub(crate) largest: usize,
    largest_input: usize,
    worst_ratio: f64,
}

impl Stats {
    pub(crate) fn add(
        &mut self,
        verdict: Verdict,
        m_elapsed: Duration,
        peak: usize,
        largest: usize,
        n: usize,
    ) {
        self.cases += 1;
        match verdict {
            Ok(()) => self.parsed += 1,
            Err(kind) => *self.refused.entry(kind).or_default() += 1,
        }
        self.slowest = self.slowest.max(m_elapsed);
        self.peak = self.peak.max(peak);
        self.largest = self.largest.max(largest);
        self.largest_input = self.largest_input.max(n);
        if n > 0 {
            self.worst_ratio = self.worst_ratio.max(peak as f64 / n as f64);
        }
    }

    pub(crate) fn refusals(&self) -> String {
        if self.refused.is_empty() {
            return "none".into();
        }
        self.refused
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs `check` on `input`, measured.
pub(crate) fn run_one(
    check: fn(&[u8]) -> Result<Verdict, String>,
    input: &[u8],
) -> (Result<Verdict, Failure>, Duration, usize, usize) {
    let m = measure(|| check(input));
    let refused = take_refused();
    let outcome = match m.value {
        Err(place) => Err(Failure::Panic(place)),
        Ok(Err(why)) => Err(Failure::Implausible(why)),
        Ok(Ok(_)) if refused > 0 => Err(Failure::Refused(refused)),
        Ok(Ok(_)) if m.elapsed > CASE_LIMIT => Err(Failure::Slow(m.elapsed)),
        Ok(Ok(_)) if m.peak > slice_budget(input.len()) => Err(Failure::Memory {
            peak: m.peak,
            largest: m.largest,
        }),
        Ok(Ok(v)) => Ok(v),
    };
    (outcome, m.elapsed, m.peak, m.largest)
}

/// The smallest input found (deleting runs, then zeroing bytes) that fails the same way.
pub(crate) fn shrink(
    check: fn(&[u8]) -> Result<Verdict, String>,
    input: &[u8],
    failure: &Failure,
) -> Vec<u8> {
    let fails = |b: &[u8]| matches!(run_one(check, b).0, Err(f) if f.same_kind(failure));
    let mut best = input.to_vec();
    let mut budget = 20_000usize;
    let mut chunk = best.len().max(1).next_power_of_two();
    while chunk >= 1 && budget > 0 {
        let mut at = 0;
        while at < best.len() && budget > 0 {
            budget -= 1;
            let end = (at + chunk).min(best.len());
            let mut trial = best[..at].to_vec();
            trial.extend_from_slice(&best[end..]);
            if fails(&trial) {
                best = trial;
            } else {
                at += chunk;
            }
        }
        chunk /= 2;
    }
    for i in 0..best.len() {
        if budget == 0 {
            break;
        }
        budget -= 1;
        if best[i] != 0 {
            let mut trial = best.clone();
            trial[i] = 0;
            if fails(&trial) {
                best = trial;
            }
        }
    }
    best
}

pub(crate) fn fail_slice(
    test: &str,
    check: fn(&[u8]) -> Result<Verdict, String>,
    case: &str,
    input: &[u8],
    failure: &Failure,
) -> ! {
    let small = shrink(check, input, failure);
    let again = run_one(check, &small).0;
    panic!(
        "{test}: {case}: {failure:?}\n  input ({} bytes): {}\n  shrunk input ({} bytes), \
         which gives {again:?}:\n  {}",
        input.len(),
        if input.len() <= 512 {
            hex_array(input)
        } else {
            format!("{}...", hex_array(&input[..512]))
        },
        small.len(),
        hex_array(&small)
    );
}

/// Runs a slice parser's sweep and random cases over `seeds`.
pub(crate) fn run_slice_test(
    test: &'static str,
    sig: &[u8; 4],
    check: fn(&[u8]) -> Result<Verdict, String>,
    seeds: &[Seed],
    machines: usize,
    base_cases: u64,
) {
    install_panic_hook();
    let slot = watch(test);
    assert!(!seeds.is_empty(), "{test}: no seed table at all");
    let started = Instant::now();
    let mut stats = Stats::default();
    let mut buf = Vec::new();
    let only = only();
    let mut sweep_cases = 0u64;
    if only.is_none() {
        for (k, s) in seeds.iter().enumerate() {
            for (j, input) in sweep(&s.bytes, sig).into_iter().enumerate() {
                slot.begin(u64::MAX);
                let (r, elapsed, peak, largest) = run_one(check, &input);
                slot.end();
                match r {
                    Ok(v) => stats.add(v, elapsed, peak, largest, input.len()),
                    Err(f) => fail_slice(
                        test,
                        check,
                        &format!("sweep item {j} of seed {k} (from {})", s.origin),
                        &input,
                        &f,
                    ),
                }
                sweep_cases += 1;
            }
        }
    }
    let n = cases(base_cases);
    let range = match only {
        Some(i) => i..i + 1,
        None => 0..n,
    };
    for i in range {
        let mut rng = Rng::for_case(test, i);
        let s = &seeds[(i as usize) % seeds.len()];
        let name = mutate_table(&mut rng, &s.bytes, &mut buf);
        if only.is_some() {
            say!(
                "{test}: case {i}: {name} of a table from {}: input {}",
                s.origin,
                hex_array(&buf)
            );
        }
        *stats.strategies.entry(name).or_default() += 1;
        slot.begin(i);
        let (r, elapsed, peak, largest) = run_one(check, &buf);
        slot.end();
        match r {
            Ok(v) => stats.add(v, elapsed, peak, largest, buf.len()),
            Err(f) => fail_slice(
                test,
                check,
                &format!(
                    "random case {i} ({name} of a table from {}, seed {:#x})",
                    s.origin,
                    seed()
                ),
                &buf,
                &f,
            ),
        }
    }
    say!(
        "{test}: {} cases ({sweep_cases} sweep + {} random) on {} tables from {machines} \
         machines, in {:.2} s: {} parsed, refused: {}; no panic, slowest case {:.3} ms, peak \
         allocation {} (largest single {}, at most {:.0} bytes per input byte; largest input {})",
        stats.cases,
        stats.cases - sweep_cases,
        seeds.len(),
        started.elapsed().as_secs_f64(),
        stats.parsed,
        stats.refusals(),
        stats.slowest.as_secs_f64() * 1e3,
        kib(stats.peak),
        kib(stats.largest),
        stats.worst_ratio,
        kib(stats.largest_input),
    );
    say!(
        "{test}: mutations used: {}",
        stats
            .strategies
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(stats.cases > 0, "{test}: no case ran");
}
