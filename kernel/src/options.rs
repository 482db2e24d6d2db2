//! Kernel command-line options.
//!
//! | option | meaning |
//! | --- | --- |
//! | `log=<level>` | off, error, warn, info (default), debug, trace |
//! | `test=<suite>` | run an in-kernel test suite and exit QEMU with its result |
//! | `dumpboot` | print the loader's raw boot structures (fixture format) |
//! | `apic=xapic` | keep the local APIC in xAPIC mode even where x2APIC exists |
//! | `bootbench` | exercise every bound driver once and report its vectors (boot benchmark) |
//! | `bootbench=ready` | the same, then wait (up to 10 s) until every device vector has delivered and say so |
//! | `storage=write` | allow drivers to write to disks (default: they only read; see `drivers::storage`) |
//! | `iommu=off` | leave DMA remapping off where firmware describes units |
//! | `intremap=off`, `intremap=nosid` | leave interrupt remapping off; or (VT-d) remap without requester checks |
//! | `ivrs_ioapic=<id>@<bus>:<dev>.<fn>,...` | (AMD) the requester of each named I/O APIC, in place of the IVRS's |
//!
//! Any other word is reported at boot as a warning (`kernel: unknown command-line option
//! 'xyz' (known: ...)`), so a mistyped option is seen at the default log level; `token=` is
//! the test runner's own tag for a boot and is accepted silently.

use log::LevelFilter;

/// The parsed options.
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    /// The command line as given.
    pub cmdline: &'a str,
    /// Log level.
    pub log: LevelFilter,
    /// `log=` value that did not parse, for a warning once logging works.
    pub bad_log: Option<&'a str>,
    /// Test suite to run.
    pub test: Option<&'a str>,
    /// Print the raw boot structures.
    pub dumpboot: bool,
    /// `apic=xapic`: keep the local APIC in xAPIC mode even if x2APIC exists.
    pub prefer_xapic: bool,
    /// `bootbench`: after binding, exercise every driver and report which of their vectors
    /// have delivered an interrupt (for the boot benchmark).
    pub bootbench: bool,
    /// `bootbench=ready`: then wait until every device vector has delivered (the benchmark
    /// makes the configuration vectors fire from outside) and report when.
    pub bootbench_ready: bool,
    /// `storage=write`: drivers may write to disks. Without it they only read.
    pub storage_write: bool,
    /// `storage=` value that is not `write`, for a warning (storage stays read only).
    pub bad_storage: Option<&'a str>,
    /// `iommu=off`: leave DMA remapping off even where firmware describes units.
    pub iommu_off: bool,
    /// `intremap=off`: leave interrupt remapping off (DMA remapping stays on).
    pub intremap_off: bool,
    /// `intremap=nosid`: remap interrupts without checking requester IDs, for firmware
    /// whose DMAR names the wrong requester for an I/O APIC (as Linux's option).
    pub intremap_nosid: bool,
    /// `intremap=` value that is neither, for a warning.
    pub bad_intremap: Option<&'a str>,
    /// `ivrs_ioapic=<id>@[<segment>:]<bus>:<device>.<function>,...`: the requester each
    /// named I/O APIC's messages carry, in place of what the IVRS says (AMD interrupt
    /// remapping; Linux's option of the same name).
    pub ivrs_ioapic: Option<&'a str>,
}

/// The options this kernel knows (the first word of each `key=value`).
pub const KNOWN: &[&str] = &[
    "log",
    "test",
    "dumpboot",
    "apic",
    "bootbench",
    "storage",
    "iommu",
    "intremap",
    "ivrs_ioapic",
];

/// Words the test runner adds for itself (not options; not reported).
const RUNNER_WORDS: &[&str] = &["token"];

/// The words of `cmdline` that are not options, in order.
pub fn unknown(cmdline: &str) -> impl Iterator<Item = &str> {
    boot::cmdline::words(cmdline)
        .filter(|w| !KNOWN.contains(&w.key) && !RUNNER_WORDS.contains(&w.key))
        .map(|w| w.key)
}

/// Parses `cmdline`.
pub fn parse(cmdline: &str) -> Options<'_> {
    let (log, bad_log) = match boot::cmdline::get(cmdline, "log") {
        None => (LevelFilter::Info, None),
        Some(v) => match crate::logger::parse_level(v) {
            Some(level) => (level, None),
            None => (LevelFilter::Info, Some(v)),
        },
    };
    Options {
        cmdline,
        log,
        bad_log,
        test: boot::cmdline::get(cmdline, "test").filter(|s| !s.is_empty()),
        dumpboot: boot::cmdline::get(cmdline, "dumpboot").is_some(),
        prefer_xapic: boot::cmdline::get(cmdline, "apic") == Some("xapic"),
        bootbench: boot::cmdline::get(cmdline, "bootbench").is_some(),
        bootbench_ready: boot::cmdline::get(cmdline, "bootbench") == Some("ready"),
        storage_write: boot::cmdline::get(cmdline, "storage") == Some("write"),
        bad_storage: boot::cmdline::get(cmdline, "storage").filter(|v| *v != "write"),
        iommu_off: boot::cmdline::get(cmdline, "iommu") == Some("off"),
        intremap_off: boot::cmdline::get(cmdline, "intremap") == Some("off"),
        intremap_nosid: boot::cmdline::get(cmdline, "intremap") == Some("nosid"),
        bad_intremap: boot::cmdline::get(cmdline, "intremap")
            .filter(|v| *v != "off" && *v != "nosid"),
        ivrs_ioapic: boot::cmdline::get(cmdline, "ivrs_ioapic"),
    }
}

impl Options<'_> {
    /// Warns about every word of the command line that is not an option (see the module
    /// documentation). Called once logging has its level.
    pub fn report_unknown(&self) {
        /// The known options, comma-separated (formatted without allocating: this runs
        /// before the heap exists).
        struct Known;
        impl core::fmt::Display for Known {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                for (i, k) in KNOWN.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(k)?;
                }
                Ok(())
            }
        }
        for word in unknown(self.cmdline) {
            log::warn!("unknown command-line option '{word}' (known: {Known}); ignored");
        }
        if let Some(bad) = self.bad_intremap {
            log::warn!(
                "intremap={bad} is not known (intremap=off or intremap=nosid); interrupts are remapped where the units can"
            );
        }
    }

    /// Reports unknown options ([`Options::report_unknown`]), then hands the storage
    /// permission to the drivers (once, at boot, before any driver binds) and says which it
    /// is.
    pub fn apply_storage(&self) {
        self.report_unknown();
        if let Some(bad) = self.bad_storage {
            log::warn!("storage={bad} is not known (only storage=write is); disks stay read only");
        }
        if self.storage_write {
            drivers::storage::allow_writes();
            log::warn!("storage: writes to disks allowed (storage=write)");
        } else {
            log::info!("storage: disks are read only (boot with storage=write to allow writes)");
        }
    }
}
