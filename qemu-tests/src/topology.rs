//! PCI topologies for the `test=pci` scenarios and the config-access benchmark, and the
//! scenario runner and checks they share.
//!
//! [`run_pci`] boots the kernel with PVH (`-kernel`, `-append test=pci`, 512 MiB) on a
//! [`Topology`], waits for `PCI HOLD` (the kernel has enumerated, printed its `PCIDEV` lines
//! and halted; the firmware assigned the BARs long before), asks QEMU for `query-pci` over QMP
//! and quits QEMU. [`check_pci_run`] then checks the kernel's suite, its `PCIERR` lines, its
//! `PCISTATS`, the exact agreement of both views of the bus ([`crate::pci::compare`]) and what
//! is known about the topology's devices (IDs, MSI/MSI-X sizes, capabilities).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::pci::{Comparison, KernelFunction, KernelPci, PCI_HOLD, compare, render_diff};
use crate::qmp::{QemuPciFunction, parse_query_pci};
use crate::{Machine, Outcome, Qemu, Report, unique_temp_dir};

/// Kernel command line for the PCI scenarios.
pub const PCI_CMDLINE: &str = "test=pci";
/// Memory given to the PCI scenarios, in MiB.
pub const PCI_MEMORY_MIB: u32 = 512;
/// Size of the raw disk images the topologies use.
pub const IMAGE_SIZE: u64 = 1 << 20;

/// PCI Express capability ID.
const CAP_PCIE: u8 = 0x10;
/// `pcie-root-port`.
const ROOT_PORT: (u16, u16) = (0x1b36, 0x000c);

/// An expectation about an MSI or MSI-X capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vectors {
    /// Not checked.
    Any,
    /// The capability must be absent.
    Absent,
    /// The capability must be present with this many vectors (MSI: the `msi=` count; MSI-X:
    /// the table size).
    Exactly(u16),
}

/// A device a topology must contain, as seen by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    /// A name for messages.
    pub name: &'static str,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// How many functions with these IDs the kernel must list.
    pub count: usize,
    /// MSI.
    pub msi: Vectors,
    /// MSI-X.
    pub msix: Vectors,
}

const fn known(name: &'static str, vendor: u16, device: u16, count: usize) -> Known {
    Known {
        name,
        vendor,
        device,
        count,
        msi: Vectors::Any,
        msix: Vectors::Any,
    }
}

const fn with_msix(k: Known, vectors: u16) -> Known {
    Known {
        msix: Vectors::Exactly(vectors),
        ..k
    }
}

/// A QEMU machine with its PCI devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Short name (`a`..`d`), used by the benchmark's command line.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Machine type.
    pub machine: Machine,
    /// QEMU arguments; `{dir}` stands for a scratch directory holding [`Self::images`].
    pub args: &'static [&'static str],
    /// Raw images of [`IMAGE_SIZE`] bytes created in the scratch directory.
    pub images: &'static [&'static str],
    /// Devices the kernel must report.
    pub known: &'static [Known],
    /// Root buses QEMU must report (a sanity check of the topology itself).
    pub root_buses: &'static [u8],
    /// Whether functions can have extended configuration space (ECAM; not on `pc`).
    pub extended_config: bool,
    /// Substrings of `PCIERR` lines that are expected; any other `PCIERR` line fails.
    pub expected_errors: &'static [&'static str],
}

/// (e) `microvm,pcie=on` with edu and virtio-net: no MCFG; the kernel must find the ECAM
/// window through the host bridge's `_CBA` (port I/O reaches nothing on this machine).
pub const MICROVM_PCIE: Topology = Topology {
    name: "e",
    description: "microvm,pcie=on (ECAM from _CBA, no MCFG) with edu and virtio-net",
    machine: Machine::MicrovmPcie,
    args: &[
        "-device",
        "edu",
        "-device",
        "virtio-net-pci,netdev=n0",
        "-netdev",
        "user,id=n0",
    ],
    images: &[],
    known: &[
        known("GPEX host bridge", 0x1b36, 0x0008, 1),
        EDU,
        with_msix(known("virtio-net (transitional)", 0x1af4, 0x1000, 1), 4),
    ],
    root_buses: &[0],
    extended_config: true,
    expected_errors: &[],
};

/// What every `q35` machine has (with the default VGA).
const Q35_CHIPSET: [Known; 5] = [
    known("q35 host bridge", 0x8086, 0x29c0, 1),
    known("VGA", 0x1234, 0x1111, 1),
    known("ICH9 LPC", 0x8086, 0x2918, 1),
    known("ICH9 AHCI", 0x8086, 0x2922, 1),
    known("ICH9 SMBus", 0x8086, 0x2930, 1),
];

const EDU: Known = Known {
    msi: Vectors::Exactly(1),
    msix: Vectors::Absent,
    ..known("edu", 0x1234, 0x11e8, 1)
};

/// (a) `-machine q35` with its defaults (VGA, e1000e NIC, ICH9 LPC/AHCI/SMBus).
pub const Q35_DEFAULTS: Topology = Topology {
    name: "a",
    description: "q35 defaults",
    machine: Machine::Q35,
    args: &[],
    images: &[],
    known: &[
        Q35_CHIPSET[0],
        Q35_CHIPSET[1],
        Q35_CHIPSET[2],
        Q35_CHIPSET[3],
        Q35_CHIPSET[4],
        with_msix(known("e1000e", 0x8086, 0x10d3, 1), 5),
    ],
    root_buses: &[0],
    extended_config: true,
    expected_errors: &[],
};

/// (b) q35 with four root ports (NVMe, virtio-net, virtio-blk, e1000e), `edu`, a
/// PCIe-to-PCI bridge with a PCI-PCI bridge and a virtio-rng behind it, and a three-function
/// virtio-rng slot.
pub const Q35_DEVICES: Topology = Topology {
    name: "b",
    description: "q35 with root ports (NVMe, virtio-net, virtio-blk, e1000e), edu, \
                  pcie-pci-bridge + pci-bridge + virtio-rng, multifunction virtio-rng",
    machine: Machine::Q35,
    args: &[
        "-device",
        "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1",
        "-device",
        "nvme,serial=deadbeef,drive=nvm,bus=rp1",
        "-drive",
        "if=none,id=nvm,format=raw,file={dir}/nvme.img",
        "-device",
        "pcie-root-port,id=rp2,bus=pcie.0,chassis=2,slot=2",
        "-device",
        "virtio-net-pci,bus=rp2,netdev=n0",
        "-netdev",
        "user,id=n0",
        "-device",
        "pcie-root-port,id=rp3,bus=pcie.0,chassis=3,slot=3",
        "-device",
        "virtio-blk-pci,bus=rp3,drive=vb",
        "-drive",
        "if=none,id=vb,format=raw,file={dir}/virtio-blk.img",
        "-device",
        "pcie-root-port,id=rp4,bus=pcie.0,chassis=4,slot=4",
        "-device",
        "e1000e,bus=rp4,netdev=n1",
        "-netdev",
        "user,id=n1",
        "-device",
        "edu,bus=pcie.0,addr=0x9",
        "-device",
        "pcie-pci-bridge,id=ppb,bus=pcie.0,addr=0xa",
        "-device",
        "pci-bridge,id=pb,bus=ppb,chassis_nr=5,addr=0x1",
        "-device",
        "virtio-rng-pci,bus=pb,addr=0x2",
        "-device",
        "virtio-rng-pci,bus=pcie.0,addr=0xb.0,multifunction=on",
        "-device",
        "virtio-rng-pci,bus=pcie.0,addr=0xb.1",
        "-device",
        "virtio-rng-pci,bus=pcie.0,addr=0xb.2",
    ],
    images: &["nvme.img", "virtio-blk.img"],
    known: &[
        Q35_CHIPSET[0],
        Q35_CHIPSET[1],
        Q35_CHIPSET[2],
        Q35_CHIPSET[3],
        Q35_CHIPSET[4],
        with_msix(known("pcie-root-port", 0x1b36, 0x000c, 4), 1),
        with_msix(known("NVMe", 0x1b36, 0x0010, 1), 65),
        with_msix(known("virtio-net (modern)", 0x1af4, 0x1041, 1), 4),
        with_msix(known("virtio-blk (modern)", 0x1af4, 0x1042, 1), 2),
        with_msix(known("e1000e", 0x8086, 0x10d3, 1), 5),
        EDU,
        known("pcie-pci-bridge", 0x1b36, 0x000e, 1),
        known("pci-bridge", 0x1b36, 0x0001, 1),
        with_msix(known("virtio-rng (transitional)", 0x1af4, 0x1005, 4), 2),
    ],
    root_buses: &[0],
    extended_config: true,
    expected_errors: &[],
};

/// (c) q35 with a `pxb-pcie` (extra root bus 0x80) and a root port with a virtio-rng on it.
pub const Q35_PXB: Topology = Topology {
    name: "c",
    description: "q35 with pxb-pcie (root bus 0x80), a root port and virtio-rng behind it",
    machine: Machine::Q35,
    args: &[
        "-device",
        "pxb-pcie,id=pxb1,bus_nr=0x80,bus=pcie.0",
        "-device",
        "pcie-root-port,id=rpx,bus=pxb1,chassis=9,slot=9",
        "-device",
        "virtio-rng-pci,bus=rpx",
    ],
    images: &[],
    known: &[
        Q35_CHIPSET[0],
        Q35_CHIPSET[1],
        Q35_CHIPSET[2],
        Q35_CHIPSET[3],
        Q35_CHIPSET[4],
        with_msix(known("e1000e", 0x8086, 0x10d3, 1), 5),
        known("pxb-pcie host bridge", 0x1b36, 0x000b, 1),
        with_msix(known("pcie-root-port", 0x1b36, 0x000c, 1), 1),
        with_msix(known("virtio-rng (modern)", 0x1af4, 0x1044, 1), 2),
    ],
    root_buses: &[0, 0x80],
    extended_config: true,
    expected_errors: &[],
};

/// (d) `-machine pc` (i440fx, configuration space through ports 0xCF8/0xCFC only) with `edu`
/// and a virtio-net.
pub const PC_DEVICES: Topology = Topology {
    name: "d",
    description: "pc (i440fx) defaults with edu and virtio-net",
    machine: Machine::Pc,
    args: &[
        "-device",
        "edu",
        "-device",
        "virtio-net-pci,netdev=n0",
        "-netdev",
        "user,id=n0",
    ],
    images: &[],
    known: &[
        known("i440FX host bridge", 0x8086, 0x1237, 1),
        known("PIIX3 ISA", 0x8086, 0x7000, 1),
        known("PIIX3 IDE", 0x8086, 0x7010, 1),
        known("PIIX4 ACPI", 0x8086, 0x7113, 1),
        known("VGA", 0x1234, 0x1111, 1),
        EDU,
        with_msix(known("virtio-net (transitional)", 0x1af4, 0x1000, 1), 4),
    ],
    root_buses: &[0],
    extended_config: false,
    expected_errors: &[],
};

/// All topologies.
pub const TOPOLOGIES: [&Topology; 4] = [&Q35_DEFAULTS, &Q35_DEVICES, &Q35_PXB, &PC_DEVICES];

/// The topology called `name` (`a`..`d`).
pub fn topology(name: &str) -> Option<&'static Topology> {
    TOPOLOGIES.into_iter().find(|t| t.name == name)
}

/// A scratch directory, removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates a fresh directory under the system temp directory.
    pub fn new(prefix: &str) -> io::Result<Self> {
        let dir = unique_temp_dir(prefix);
        fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Topology {
    /// The QEMU arguments with `{dir}` replaced.
    pub fn qemu_args(&self, dir: &Path) -> Vec<String> {
        let dir = dir.to_string_lossy();
        self.args.iter().map(|a| a.replace("{dir}", &dir)).collect()
    }

    /// Creates the disk images in `dir` and returns the QEMU invocation booting `elf` with
    /// `test=pci` on this topology.
    pub fn qemu(&self, elf: &Path, dir: &Path) -> io::Result<Qemu> {
        for image in self.images {
            let file = fs::File::create(dir.join(image))?;
            file.set_len(IMAGE_SIZE)?;
        }
        Ok(Qemu::kernel(elf, PCI_CMDLINE)
            .machine(self.machine)
            .memory_mib(PCI_MEMORY_MIB)
            .args(self.qemu_args(dir)))
    }
}

/// One `test=pci` run.
#[derive(Debug)]
pub struct PciRun {
    /// How QEMU ended, with the whole serial log.
    pub outcome: Outcome,
    /// When `PCI HOLD` arrived.
    pub hold_at: Option<Duration>,
    /// QEMU's raw `query-pci` answer.
    pub qemu_json: Option<Value>,
    /// QEMU's view, flattened; `Err` if the kernel never held or QMP failed.
    pub qemu: Result<Vec<QemuPciFunction>, String>,
    /// The kernel's test protocol lines.
    pub report: Report,
    /// The kernel's PCI lines.
    pub kernel: KernelPci,
}

/// Boots `elf` with `test=pci` on `topology` plus `extra` QEMU arguments, waits for `PCI HOLD`,
/// queries QEMU's view of the bus and quits QEMU.
pub fn run_pci(
    topology: &Topology,
    elf: &Path,
    extra: &[OsString],
    timeout: Duration,
) -> io::Result<PciRun> {
    let scratch = Scratch::new(&format!("pci-{}", topology.name))?;
    let qemu = topology
        .qemu(elf, scratch.path())?
        .args(extra)
        .timeout(timeout);
    let run = qemu.run_until_qmp(PCI_HOLD, |qmp| qmp.query_pci_json())?;
    let (qemu_json, qemu) = match run.session {
        Some(Ok(json)) => {
            let parsed = parse_query_pci(&json);
            (Some(json), parsed)
        }
        Some(Err(e)) => (None, Err(e)),
        None => (
            None,
            Err(format!(
                "the kernel never printed `{PCI_HOLD}` ({}), so QEMU was not queried",
                run.outcome.describe_exit()
            )),
        ),
    };
    let report = Report::parse(&run.outcome.serial);
    let kernel = KernelPci::parse(&run.outcome.serial);
    Ok(PciRun {
        outcome: run.outcome,
        hold_at: run.marker_at,
        qemu_json,
        qemu,
        report,
        kernel,
    })
}

fn check_vectors(
    what: &str,
    k: &KernelFunction,
    name: &str,
    expected: Vectors,
    actual: Option<u16>,
    errors: &mut Vec<String>,
) {
    match (expected, actual) {
        (Vectors::Any, _) => {}
        (Vectors::Absent, None) => {}
        (Vectors::Absent, Some(n)) => errors.push(format!(
            "{name} at {}: expected no {what}, the kernel reports {what} with {n} vectors",
            k.address
        )),
        (Vectors::Exactly(n), Some(m)) if n == m => {}
        (Vectors::Exactly(n), actual) => errors.push(format!(
            "{name} at {}: expected {what} with {n} vectors, the kernel reports {}",
            k.address,
            actual.map_or_else(|| "none".to_owned(), |m| format!("{m}"))
        )),
    }
}

/// The MSI-X table and PBA must lie inside a memory BAR the kernel lists.
fn check_msix_placement(k: &KernelFunction, errors: &mut Vec<String>) {
    let Some(msix) = k.msix else {
        return;
    };
    let size = u64::from(msix.size);
    for (what, bir, offset, bytes) in [
        ("table", msix.table_bir, msix.table_offset, size * 16),
        ("PBA", msix.pba_bir, msix.pba_offset, size.div_ceil(64) * 8),
    ] {
        match k.bar(bir) {
            Some(bar) if bar.space != crate::pci::BarSpace::Io => {
                if offset + bytes > bar.size {
                    errors.push(format!(
                        "{}: MSI-X {what} ({bytes:#x} bytes at {offset:#x}) does not fit in \
                         BAR {bir} ({:#x} bytes)",
                        k.address, bar.size
                    ));
                }
            }
            _ => errors.push(format!(
                "{}: MSI-X {what} is in BAR {bir}, which the kernel does not list as a memory BAR",
                k.address
            )),
        }
    }
}

/// Checks what is known about the topology against both views; returns the errors.
fn check_known(
    topology: &Topology,
    qemu: &[QemuPciFunction],
    kernel: &KernelPci,
    errors: &mut Vec<String>,
) {
    let mut roots: Vec<u8> = qemu.iter().map(|q| q.root_bus).collect();
    roots.sort_unstable();
    roots.dedup();
    if roots != topology.root_buses {
        errors.push(format!(
            "topology: QEMU reports root buses {roots:02x?}, expected {:02x?}",
            topology.root_buses
        ));
    }
    for known in topology.known {
        let matching: Vec<&KernelFunction> = kernel
            .functions
            .iter()
            .filter(|k| (k.vendor, k.device) == (known.vendor, known.device))
            .collect();
        if matching.len() != known.count {
            errors.push(format!(
                "{} ({:04x}:{:04x}): expected {} function(s), the kernel lists {}",
                known.name,
                known.vendor,
                known.device,
                known.count,
                matching.len()
            ));
        }
        for k in matching {
            check_vectors(
                "MSI",
                k,
                known.name,
                known.msi,
                k.msi.map(|m| m.count),
                errors,
            );
            check_vectors(
                "MSI-X",
                k,
                known.name,
                known.msix,
                k.msix.map(|m| m.size),
                errors,
            );
        }
    }
    for k in &kernel.functions {
        check_msix_placement(k, errors);
        if !topology.extended_config && !k.ecaps.is_empty() {
            errors.push(format!(
                "{}: extended capabilities {:x?} on a machine without extended configuration \
                 space",
                k.address, k.ecaps
            ));
        }
        let Some(q) = qemu.iter().find(|q| q.address == k.address) else {
            continue;
        };
        if q.behind_conventional_bridge() && !k.ecaps.is_empty() {
            errors.push(format!(
                "{}: extended capabilities {:x?} behind a conventional PCI bridge (no extended \
                 configuration space there)",
                k.address, k.ecaps
            ));
        }
        let is_port = (q.vendor, q.device) == ROOT_PORT;
        if (is_port || q.parent == Some(ROOT_PORT)) && !k.caps.contains(&CAP_PCIE) {
            errors.push(format!(
                "{}: {} without a PCI Express capability (10) in caps={:02x?}",
                k.address,
                if is_port {
                    "root port"
                } else {
                    "device on a root port"
                },
                k.caps
            ));
        }
    }
}

/// Everything [`check_pci_run`] found out, for printing.
#[derive(Debug)]
pub struct PciCheck {
    /// The comparison of both views (empty if QEMU could not be queried).
    pub comparison: Comparison,
    /// A one-line summary.
    pub summary: String,
}

/// Checks a `test=pci` run on `topology`: the kernel reached `PCI HOLD` and QEMU answered;
/// the `pci` suite passed (no failure, panic, exception or protocol problem); no unexpected
/// `PCIERR`; `PCISTATS` present and consistent; both views of the bus agree exactly; the
/// topology's known devices are there with their MSI/MSI-X vector counts; MSI-X tables fit in
/// their BARs; no extended capabilities where there is no extended configuration space; PCI
/// Express capability on root ports and the devices behind them. On failure the message lists
/// every problem and the diff of both views (the caller adds the serial log).
pub fn check_pci_run(topology: &Topology, run: &PciRun) -> Result<PciCheck, String> {
    let mut errors = Vec::new();
    if run.hold_at.is_none() {
        errors.push(format!(
            "no `{PCI_HOLD}` line: {}",
            run.outcome.describe_exit()
        ));
    } else if !run.outcome.quit_via_qmp {
        errors.push(format!(
            "QEMU did not end through the QMP quit: {}",
            run.outcome.describe_exit()
        ));
    }
    if run.report.suite("pci").is_none() {
        errors.push("no `TEST START pci` suite".to_owned());
    }
    if let Err(e) = run.report.check_tests_passed(1) {
        errors.push(e);
    }
    errors.extend(
        run.kernel
            .problems
            .iter()
            .map(|p| format!("PCI protocol: {p}")),
    );
    for e in &run.kernel.errors {
        let line = e.to_string();
        if !topology.expected_errors.iter().any(|x| line.contains(x)) {
            errors.push(format!("unexpected {line}"));
        }
    }
    match &run.kernel.stats {
        None => errors.push("no PCISTATS line".to_owned()),
        Some(stats) => {
            if stats.functions != run.kernel.functions.len() as u64 {
                errors.push(format!(
                    "PCISTATS functions={} but {} PCIDEV lines",
                    stats.functions,
                    run.kernel.functions.len()
                ));
            }
            if stats.reads < stats.functions {
                errors.push(format!(
                    "PCISTATS reads={} is less than one read per function",
                    stats.reads
                ));
            }
        }
    }
    let mut comparison = Comparison::default();
    let mut diff = String::new();
    match &run.qemu {
        Err(e) => errors.push(format!("QEMU's view is not available: {e}")),
        Ok(qemu) => {
            comparison = compare(qemu, &run.kernel.functions);
            if !comparison.matches() {
                errors.push(format!(
                    "the kernel's enumeration differs from QEMU's query-pci in {} place(s)",
                    comparison.differences.len()
                ));
            }
            check_known(topology, qemu, &run.kernel, &mut errors);
            diff = render_diff(qemu, &run.kernel.functions, &comparison);
        }
    }
    if errors.is_empty() {
        let stats = run.kernel.stats.as_ref();
        let summary = format!(
            "topology {} ({}): {} functions agree with QEMU, {} config reads, {} writes, \
             PCI HOLD after {:.2} s, QEMU done after {:.2} s",
            topology.name,
            topology.description,
            run.kernel.functions.len(),
            stats.map_or(0, |s| s.reads),
            stats.map_or(0, |s| s.writes),
            run.hold_at.unwrap_or_default().as_secs_f64(),
            run.outcome.wall.as_secs_f64()
        );
        return Ok(PciCheck {
            comparison,
            summary,
        });
    }
    let mut message = format!(
        "topology {} ({}): {} problem(s):\n",
        topology.name,
        topology.description,
        errors.len()
    );
    for e in &errors {
        let _ = writeln!(message, "- {e}");
    }
    if !diff.is_empty() {
        let _ = write!(message, "----- QEMU vs kernel\n{diff}");
    }
    Err(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::parse_query_pci_text;
    use std::time::Duration;

    const FIXTURE: &str = include_str!("../tests/fixtures/query-pci-topology-b.json");

    #[test]
    fn names_and_args() {
        assert_eq!(topology("b"), Some(&Q35_DEVICES));
        assert_eq!(topology("z"), None);
        let args = Q35_DEVICES.qemu_args(Path::new("/tmp/x"));
        assert!(args.contains(&"if=none,id=nvm,format=raw,file=/tmp/x/nvme.img".to_owned()));
        assert!(args.iter().all(|a| !a.contains("{dir}")));
        for t in TOPOLOGIES {
            for image in t.images {
                assert!(
                    t.args
                        .iter()
                        .any(|a| a.contains(&format!("{{dir}}/{image}"))),
                    "{image}"
                );
            }
        }
    }

    #[test]
    fn images_are_created() {
        let scratch = Scratch::new("topology-unit").unwrap();
        let q = Q35_DEVICES
            .qemu(Path::new("/k.elf"), scratch.path())
            .unwrap();
        assert_eq!(q.memory_bytes(), u64::from(PCI_MEMORY_MIB) << 20);
        for image in Q35_DEVICES.images {
            let meta = fs::metadata(scratch.path().join(image)).unwrap();
            assert_eq!(meta.len(), IMAGE_SIZE);
        }
        let dir = scratch.path().to_owned();
        drop(scratch);
        assert!(!dir.exists());
    }

    /// A kernel log that agrees with the fixture: caps and MSI-X as QEMU 10's devices have
    /// them.
    fn good_log(qemu: &[QemuPciFunction]) -> String {
        let mut log = String::from("TEST START pci\nTEST enumerate ... ok\n");
        for q in qemu {
            let multi = q.address.function == 0
                && qemu.iter().any(|o| {
                    o.address.function != 0
                        && (o.address.bus, o.address.device) == (q.address.bus, q.address.device)
                });
            let header = u8::from(q.bridge.is_some()) | if multi { 0x80 } else { 0 };
            let bars: Vec<String> = q
                .bars
                .iter()
                .filter(|b| b.slot != 6)
                .map(|b| {
                    format!(
                        "{}:{}{}:{:#x}:{:#x}",
                        b.slot,
                        b.space.as_str(),
                        if b.prefetch { "p" } else { "" },
                        b.address.unwrap_or(0),
                        b.size
                    )
                })
                .collect();
            let pin = match q.irq_pin {
                0 => "-".to_owned(),
                p => char::from(b'A' + p - 1).to_string(),
            };
            let extra = match (q.vendor, q.device) {
                (0x1b36, 0x0010) => " msix=65,bir0@0x2000,pba0@0x3000 caps=11,01,05,10 ecaps=1",
                (0x1b36, 0x000c) => " msix=1,bir0@0x0,pba0@0x800 caps=10,11,0d ecaps=1",
                (0x1af4, 0x1041) => " msix=4,bir1@0x0,pba1@0x800 caps=11,09,10",
                (0x1af4, 0x1042) => " msix=2,bir1@0x0,pba1@0x800 caps=11,09,10",
                (0x1af4, 0x1005) => " msix=2,bir1@0x0,pba1@0x800 caps=11,09",
                (0x8086, 0x10d3) => {
                    " msi=1,64 msix=5,bir3@0x0,pba3@0x2000 caps=01,05,10,11 ecaps=1,3"
                }
                (0x1234, 0x11e8) => " msi=1,64 caps=05",
                _ => "",
            };
            log.push_str(&format!(
                "PCIDEV {} vendor={:04x} device={:04x} class={:04x}00 rev=00 header={header:02x} \
                 bars={} irq={pin}/{}{extra}\n",
                q.address,
                q.vendor,
                q.device,
                q.class,
                if bars.is_empty() {
                    "-".to_owned()
                } else {
                    bars.join(",")
                },
                q.irq_line.unwrap_or(0)
            ));
        }
        log.push_str(&format!(
            "PCISTATS functions={} reads=900 writes=60\nTEST DONE pci: 1 passed, 0 failed\n\
             PCI HOLD\n",
            qemu.len()
        ));
        log
    }

    fn fake_run(serial: String, qemu: Vec<QemuPciFunction>) -> PciRun {
        PciRun {
            outcome: Outcome {
                exit_code: Some(0),
                serial: serial.clone(),
                timed_out: false,
                wall: Duration::from_millis(900),
                first_output: None,
                stderr: String::new(),
                command: "qemu".into(),
                quit_via_qmp: true,
            },
            hold_at: Some(Duration::from_millis(800)),
            qemu_json: None,
            qemu: Ok(qemu),
            report: Report::parse(&serial),
            kernel: KernelPci::parse(&serial),
        }
    }

    #[test]
    fn good_run_passes() {
        let qemu = parse_query_pci_text(FIXTURE).unwrap();
        let run = fake_run(good_log(&qemu), qemu);
        let check = check_pci_run(&Q35_DEVICES, &run).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            check.summary.contains("functions agree"),
            "{}",
            check.summary
        );
    }

    #[test]
    fn bad_runs_fail_with_reasons() {
        let qemu = parse_query_pci_text(FIXTURE).unwrap();
        let good = good_log(&qemu);
        let cases: [(&str, &str, &str); 9] = [
            (
                "msix=65,",
                "msix=64,",
                "NVMe at 0000:01:00.0: expected MSI-X with 65 vectors",
            ),
            (
                " msi=1,64 caps=05",
                " msix=1,bir0@0x0,pba0@0x800 caps=05",
                "expected no MSI",
            ),
            (
                "pba0@0x3000",
                "pba0@0x4000",
                "MSI-X PBA (0x10 bytes at 0x4000) does not fit",
            ),
            ("0 failed", "1 failed", "reports 1 failed"),
            (
                "PCI HOLD\n",
                "PCI HOLD\nPCIERR 0000:00:02.0 bad things\n",
                "unexpected PCIERR",
            ),
            ("reads=900 ", "", "bad PCISTATS line"),
            (
                "caps=11,09\nPCISTATS",
                "caps=11,09 ecaps=1\nPCISTATS",
                "behind a conventional PCI bridge",
            ),
            (
                "caps=10,11,0d",
                "caps=11,0d",
                "root port without a PCI Express capability",
            ),
            (
                "device=0010",
                "device=0011",
                "NVMe (1b36:0010): expected 1 function(s)",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(good.contains(from), "{from}");
            let run = fake_run(good.replacen(from, to, 1), qemu.clone());
            let err = check_pci_run(&Q35_DEVICES, &run).unwrap_err();
            assert!(
                err.contains(expected),
                "{from} -> {to}: {expected:?} not in\n{err}"
            );
        }
        // Not holding: QEMU could not be asked.
        let mut run = fake_run(good.replace("PCI HOLD\n", ""), qemu.clone());
        run.hold_at = None;
        run.qemu = Err("the kernel never printed `PCI HOLD`".into());
        let err = check_pci_run(&Q35_DEVICES, &run).unwrap_err();
        assert!(err.contains("no `PCI HOLD` line"), "{err}");
        assert!(err.contains("QEMU's view is not available"), "{err}");
        // The wrong topology: known devices and root buses do not match.
        let run = fake_run(good, qemu);
        let err = check_pci_run(&Q35_PXB, &run).unwrap_err();
        assert!(err.contains("root buses [00], expected [00, 80]"), "{err}");
        assert!(err.contains("pxb-pcie host bridge"), "{err}");
    }
}
