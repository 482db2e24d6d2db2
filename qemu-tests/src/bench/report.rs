//! The comparison table: figures summarised over interleaved runs ([`Summary`]: median and
//! range), each row's goal ([`Goal`]) and whether it is met, and the verdict.
//!
//! A row without a figure on either side (a run failed, or this kernel has no mode that
//! measures it yet) is *not met*: the verdict never passes on a figure it does not have.

use std::fmt::Write as _;

/// Median and range of one figure over several runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The median (the mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of runs.
    pub runs: usize,
}

/// Median and range of `values`; `None` if there are none (or one is not a number).
pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: sorted[0],
        max: sorted[n - 1],
        runs: n,
    })
}

/// How a figure is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Seconds, printed in milliseconds.
    Seconds,
    /// Guest instructions, printed in millions.
    Instructions,
    /// A count with one decimal.
    Count,
    /// MiB/s.
    MibPerSecond,
}

impl Unit {
    /// `value` in this unit, with its suffix.
    pub fn format(self, value: f64) -> String {
        match self {
            Self::Seconds => format!("{:.0} ms", value * 1e3),
            Self::Instructions => format!("{:.2} M", value / 1e6),
            Self::Count => format!("{value:.1}"),
            Self::MibPerSecond => format!("{value:.1} MiB/s"),
        }
    }

    /// Whether a larger value is better (throughput) rather than worse (time, cost).
    fn higher_is_better(self) -> bool {
        self == Self::MibPerSecond
    }
}

/// What a row must reach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// This kernel's median at most `margin` (same unit) above its firmware floor's median.
    WithinOfFloor(f64),
    /// This kernel's median below `limit`, and Linux's median at least `ratio` times it.
    BelowAndRatio {
        /// Exclusive upper bound for this kernel.
        limit: f64,
        /// Lower bound for Linux ÷ this kernel.
        ratio: f64,
    },
    /// This kernel's median at most `fraction` of Linux's.
    FractionOfLinux(f64),
    /// This kernel's median at least `factor` times Linux's (throughput).
    TimesLinux(f64),
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What is measured.
    pub figure: String,
    /// How values print.
    pub unit: Unit,
    /// This kernel.
    pub ours: Option<Summary>,
    /// Linux.
    pub linux: Option<Summary>,
    /// This kernel's firmware floor (QEMU start to its first instruction), where it applies.
    pub floor: Option<Summary>,
    /// Linux's firmware floor, where it applies.
    pub linux_floor: Option<Summary>,
    /// The goal.
    pub goal: Goal,
    /// Why a figure is missing, or what it stands for.
    pub note: Option<String>,
}

impl Row {
    /// A row with no floor and no note.
    pub fn new(figure: impl Into<String>, unit: Unit, goal: Goal) -> Self {
        Self {
            figure: figure.into(),
            unit,
            ours: None,
            linux: None,
            floor: None,
            linux_floor: None,
            goal,
            note: None,
        }
    }

    /// How many times better this kernel is: Linux ÷ ours for a cost, ours ÷ Linux for a
    /// throughput; for [`Goal::WithinOfFloor`] both sides count from their own floor.
    pub fn ratio(&self) -> Option<f64> {
        let (mut ours, mut linux) = (self.ours?.median, self.linux?.median);
        if let Goal::WithinOfFloor(_) = self.goal {
            ours -= self.floor?.median;
            linux -= self.linux_floor?.median;
        }
        let r = if self.unit.higher_is_better() {
            ours / linux
        } else {
            linux / ours
        };
        r.is_finite().then_some(r)
    }

    /// Whether the goal is met; `None` when a figure it needs is missing.
    pub fn met(&self) -> Option<bool> {
        let ours = self.ours?.median;
        Some(match self.goal {
            Goal::WithinOfFloor(margin) => ours - self.floor?.median <= margin,
            Goal::BelowAndRatio { limit, ratio } => {
                let linux = self.linux?.median;
                ours < limit && linux >= ratio * ours
            }
            Goal::FractionOfLinux(fraction) => ours <= fraction * self.linux?.median,
            Goal::TimesLinux(factor) => ours >= factor * self.linux?.median,
        })
    }

    fn goal_text(&self) -> String {
        match self.goal {
            Goal::WithinOfFloor(margin) => format!("<= floor + {}", self.unit.format(margin)),
            Goal::BelowAndRatio { limit, ratio } => {
                format!("< {}, Linux/ours >= {ratio:.0}", self.unit.format(limit))
            }
            Goal::FractionOfLinux(fraction) => format!("<= {fraction:.2} x Linux"),
            Goal::TimesLinux(factor) => {
                if (factor - 1.0).abs() < f64::EPSILON {
                    ">= Linux".to_owned()
                } else {
                    format!(">= {factor:.0} x Linux")
                }
            }
        }
    }
}

fn with_range(unit: Unit, s: &Summary) -> String {
    if s.runs > 1 {
        format!(
            "{} ({}..{}, n={})",
            unit.format(s.median),
            unit.format(s.min),
            unit.format(s.max),
            s.runs
        )
    } else {
        format!("{} (n=1)", unit.format(s.median))
    }
}

/// The table, one row per figure, and the notes under it.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "figure",
        "this kernel (median, range)",
        "Linux (median)",
        "floor (ours / Linux)",
        "ratio",
        "goal",
        "met",
    ];
    let mut cells: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    for row in rows {
        let floor = match (row.floor, row.linux_floor) {
            (None, None) => "-".to_owned(),
            (o, l) => format!(
                "{} / {}",
                o.map_or("?".into(), |s| row.unit.format(s.median)),
                l.map_or("?".into(), |s| row.unit.format(s.median))
            ),
        };
        cells.push([
            row.figure.clone(),
            row.ours
                .as_ref()
                .map_or_else(|| "no figure".to_owned(), |s| with_range(row.unit, s)),
            row.linux
                .as_ref()
                .map_or_else(|| "no figure".to_owned(), |s| row.unit.format(s.median)),
            floor,
            row.ratio().map_or("-".to_owned(), |r| format!("{r:.2}x")),
            row.goal_text(),
            match row.met() {
                Some(true) => "yes".to_owned(),
                Some(false) => "NO".to_owned(),
                None => "NO (no figure)".to_owned(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, line) in cells.iter().enumerate() {
        let padded: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "| {} |", padded.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        }
    }
    for row in rows.iter().filter(|r| r.note.is_some()) {
        let _ = writeln!(
            out,
            "  {}: {}",
            row.figure,
            row.note.as_deref().unwrap_or("")
        );
    }
    out
}

/// Whether every goal is met, and the verdict line.
pub fn verdict(rows: &[Row]) -> (bool, String) {
    let missed: Vec<&str> = rows
        .iter()
        .filter(|r| r.met() != Some(true))
        .map(|r| r.figure.as_str())
        .collect();
    if missed.is_empty() {
        (true, format!("verdict: PASS: all {} goals met", rows.len()))
    } else {
        (
            false,
            format!(
                "verdict: FAIL: {} of {} goals missed: {}",
                missed.len(),
                rows.len(),
                missed.join("; ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: f64) -> Option<Summary> {
        summarize(&[v])
    }

    #[test]
    fn median_and_range() {
        let s = summarize(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (3.0, 1.0, 5.0, 3));
        let s = summarize(&[4.0, 1.0, 3.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.5, 1.0, 10.0));
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn floor_goal_counts_from_the_floor() {
        let mut row = Row::new("a", Unit::Seconds, Goal::WithinOfFloor(0.030));
        row.ours = one(0.330);
        row.floor = one(0.310);
        row.linux = one(2.310);
        row.linux_floor = one(0.310);
        assert_eq!(row.met(), Some(true));
        // Linux spends 2.0 s above its floor, this kernel 0.02 s: 100x.
        assert!((row.ratio().unwrap() - 100.0).abs() < 1e-6);
        row.ours = one(0.341);
        assert_eq!(row.met(), Some(false));
        row.floor = None;
        assert_eq!(row.met(), None, "no floor, no verdict");
    }

    #[test]
    fn limit_and_ratio_both_needed() {
        let goal = Goal::BelowAndRatio {
            limit: 5e6,
            ratio: 350.0,
        };
        let mut row = Row::new("b", Unit::Instructions, goal);
        row.ours = one(4e6);
        row.linux = one(1.5e9);
        assert_eq!(row.met(), Some(true));
        row.linux = one(1.3e9);
        assert_eq!(row.met(), Some(false), "ratio 325");
        row.linux = one(1.5e9);
        row.ours = one(5e6);
        assert_eq!(row.met(), Some(false), "not below the limit");
        row.linux = None;
        assert_eq!(row.met(), None);
    }

    #[test]
    fn fraction_and_throughput_goals() {
        let mut c = Row::new("c", Unit::Count, Goal::FractionOfLinux(1.0 / 3.0));
        c.ours = one(10.0);
        c.linux = one(30.0);
        assert_eq!(c.met(), Some(true));
        c.linux = one(29.0);
        assert_eq!(c.met(), Some(false));
        assert!((c.ratio().unwrap() - 2.9).abs() < 1e-9);

        let mut d = Row::new("d", Unit::MibPerSecond, Goal::TimesLinux(2.0));
        d.ours = one(40.0);
        d.linux = one(20.0);
        assert_eq!(d.met(), Some(true));
        assert!((d.ratio().unwrap() - 2.0).abs() < 1e-9, "ours / Linux");
        d.ours = one(39.9);
        assert_eq!(d.met(), Some(false));
        d.ours = None;
        assert_eq!(d.met(), None);
    }

    #[test]
    fn verdict_fails_on_any_missed_or_missing_goal() {
        let mut good = Row::new("good", Unit::Count, Goal::FractionOfLinux(0.5));
        good.ours = one(1.0);
        good.linux = one(4.0);
        assert!(verdict(std::slice::from_ref(&good)).0);
        let missing = Row::new("missing", Unit::Count, Goal::FractionOfLinux(0.5));
        let (ok, line) = verdict(&[good.clone(), missing]);
        assert!(!ok);
        assert!(line.contains("1 of 2 goals missed: missing"), "{line}");
        let mut bad = good.clone();
        bad.figure = "bad".into();
        bad.linux = one(1.0);
        assert!(!verdict(&[good, bad]).0);
    }

    #[test]
    fn table_layout() {
        let mut row = Row::new(
            "NVMe read 4 KiB QD1",
            Unit::MibPerSecond,
            Goal::TimesLinux(2.0),
        );
        row.ours = summarize(&[50.0, 40.0, 60.0]);
        row.linux = one(20.0);
        let mut missing = Row::new(
            "virtio-blk read 4 KiB QD1",
            Unit::MibPerSecond,
            Goal::TimesLinux(2.0),
        );
        missing.note = Some("the kernel has no read mode".into());
        let text = table(&[row, missing]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("| figure"), "{text}");
        assert!(lines[1].starts_with("|---"), "{text}");
        assert!(
            lines[2].contains("50.0 MiB/s (40.0 MiB/s..60.0 MiB/s, n=3)")
                && lines[2].contains("2.50x")
                && lines[2].contains(">= 2 x Linux")
                && lines[2].contains("| yes"),
            "{text}"
        );
        assert!(
            lines[3].contains("no figure") && lines[3].contains("NO (no figure)"),
            "{text}"
        );
        assert!(lines[4].contains("the kernel has no read mode"), "{text}");
        // Every table line has the same width.
        assert_eq!(lines[0].len(), lines[2].len());
    }
}
