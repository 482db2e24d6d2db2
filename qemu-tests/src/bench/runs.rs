//! The runs behind each figure: one QEMU command line ([`Setup::qemu`]) for this kernel,
//! Linux and the two floor kernels, and what is read from each run's output.
//!
//! The command line: `-machine q35 -m 512M -smp 1 -accel tcg -kernel <kernel> [-initrd
//! <initramfs>] -append <words> -display none -serial stdio -monitor none -no-reboot -device
//! isa-debug-exit,iobase=0xf4,iosize=0x04 -drive if=none,id=nvm,format=raw,file=<nvme.img>
//! -device nvme,serial=bench,drive=nvm -drive if=none,id=vb,format=raw,file=<blk.img> -device
//! virtio-blk-pci,drive=vb -netdev user,id=n0 -device virtio-net-pci,netdev=n0 -device edu
//! -qmp unix:<socket>,server=on,wait=off`, plus `-icount shift=0,sleep=off` for the
//! instruction figures and `-trace ... -D <log>` for the configuration-access figures. The
//! disks are 256 MiB of pseudo-random data made once in `target/bench/`.
//!
//! The virtio configuration vectors fire only on a configuration change after the driver
//! is up, so when a kernel says its drivers are bound the runner makes one, the same for
//! both kernels: QMP `set_link n0 off` then `on` (virtio-net's link status) and
//! `block_resize vb` to 256 MiB + 1 MiB (virtio-blk's capacity; the image is cut back to
//! 256 MiB after the run).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::initramfs::{self, LinuxKernel, ReadPoint};
use super::stubs;
use crate::cfgtrace::Trace;
use crate::pci::PciAddress;
use crate::protocol::clean_line;
use crate::{Machine, Outcome, Qemu, Qmp, Session, unique_temp_dir, workspace_root};

/// Size of each disk image.
pub const DISK_BYTES: u64 = 256 << 20;
/// The block size `block_resize` sets (the image is cut back after the run).
const RESIZED_BYTES: u64 = DISK_BYTES + (1 << 20);
/// Limit for one boot (TCG on a loaded machine; icount runs are several times slower).
const TIMEOUT: Duration = Duration::from_secs(300);
/// This kernel's command line for the boot figures: bind every driver, run each driver's
/// self test once (so that every queue vector delivers), print `BOOTBENCH ... tsc=` and
/// `all drivers bound`.
const OURS_BOOT: &str = "log=warn bootbench";
/// Linux's: serial console, only warnings, and the `/init` mode.
const LINUX_BOOT: &str = "console=ttyS0 quiet";
/// Trace events for the configuration-access figure (see [`crate::cfgtrace`]).
const TRACE_EVENTS: [&str; 5] = [
    "memory_region_ops_read",
    "memory_region_ops_write",
    "pci_cfg_read",
    "pci_cfg_write",
    "serial_write",
];
/// The line after which Linux's PCI enumeration is over (`pci_apply_final_quirks`, after
/// the scan, the header fixups and the resource assignment).
const LINUX_PCI_DONE: &str = "PCI: CLS";
/// The line this kernel prints when its enumeration is over.
const OURS_PCI_DONE: &str = "config reads and";

/// Which kernel a run boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// This kernel (PVH).
    Ours,
    /// Debian's cloud kernel with the benchmark's initramfs (bzImage).
    Linux,
    /// The PVH floor kernel of [`stubs::floor_pvh`].
    FloorPvh,
    /// The bzImage floor kernel of [`stubs::floor_bzimage`], with Linux's initramfs.
    FloorBzImage,
}

/// Everything the runs need, made once.
#[derive(Clone, Debug)]
pub struct Setup {
    /// This kernel's ELF.
    pub ours: PathBuf,
    /// Linux.
    pub linux: LinuxKernel,
    /// `target/bench/initramfs-<version>.cpio`.
    pub initramfs: PathBuf,
    /// `target/bench/floor-pvh.elf`.
    pub floor_pvh: PathBuf,
    /// `target/bench/floor-bzimage`.
    pub floor_bzimage: PathBuf,
    /// `target/bench/nvme.img`.
    pub nvme: PathBuf,
    /// `target/bench/virtio-blk.img`.
    pub blk: PathBuf,
}

/// Writes the initramfs, the floor kernels and the disk images into `target/bench/`.
pub fn prepare(ours: &Path, reads: &[ReadPoint]) -> Result<Setup, String> {
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let linux = initramfs::find_linux()?;
    let busybox = initramfs::find_busybox()?;
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    };
    let initramfs = write(
        &format!("initramfs-{}.cpio", linux.version),
        &initramfs::build(&linux, &busybox, reads)?,
    )?;
    let floor_pvh = write("floor-pvh.elf", &stubs::floor_pvh())?;
    let floor_bzimage = write("floor-bzimage", &stubs::floor_bzimage())?;
    let nvme = dir.join("nvme.img");
    let blk = dir.join("virtio-blk.img");
    for (image, seed) in [
        (&nvme, 0x9e37_79b9_7f4a_7c15u64),
        (&blk, 0x2545_f491_4f6c_dd1d),
    ] {
        let ok = std::fs::metadata(image).is_ok_and(|m| m.len() == DISK_BYTES);
        if !ok {
            std::fs::write(image, pseudo_random(DISK_BYTES as usize, seed))
                .map_err(|e| format!("{}: {e}", image.display()))?;
        }
    }
    Ok(Setup {
        ours: ours.to_owned(),
        linux,
        initramfs,
        floor_pvh,
        floor_bzimage,
        nvme,
        blk,
    })
}

/// `len` bytes of xorshift output (so that the host's page cache holds real data).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// A run's scratch directory (QMP socket, trace log), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Result<Self, String> {
        let dir = unique_temp_dir(what);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
    fn socket(&self) -> PathBuf {
        self.0.join("qmp.sock")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Setup {
    /// The common command line for `kernel` with the kernel command line `append` and a QMP
    /// socket at `socket`.
    pub fn qemu(&self, kernel: Kernel, append: &str, socket: &Path) -> Qemu {
        let elf = match kernel {
            Kernel::Ours => &self.ours,
            Kernel::Linux => &self.linux.vmlinuz,
            Kernel::FloorPvh => &self.floor_pvh,
            Kernel::FloorBzImage => &self.floor_bzimage,
        };
        let mut qemu = Qemu::kernel(elf, append)
            .machine(Machine::Q35)
            .memory_mib(512)
            .timeout(TIMEOUT)
            .args(["-smp", "1", "-accel", "tcg"]);
        if matches!(kernel, Kernel::Linux | Kernel::FloorBzImage) {
            qemu = qemu.arg("-initrd").arg(&self.initramfs);
        }
        let nvme = format!("if=none,id=nvm,format=raw,file={}", self.nvme.display());
        let blk = format!("if=none,id=vb,format=raw,file={}", self.blk.display());
        qemu.args(["-drive", &nvme, "-device", "nvme,serial=bench,drive=nvm"])
            .args(["-drive", &blk, "-device", "virtio-blk-pci,drive=vb"])
            .args([
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-pci,netdev=n0",
            ])
            .args(["-device", "edu", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
    }

    /// Cuts the virtio-blk image back to its size after a `block_resize`.
    fn restore_blk(&self) -> Result<(), String> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.blk)
            .and_then(|f| f.set_len(DISK_BYTES))
            .map_err(|e| format!("{}: {e}", self.blk.display()))
    }
}

/// The exact QEMU command line, as QEMU ran it for the PVH floor kernel (the kernel, its
/// `-append` words, `-initrd` and the socket path change between runs; the rest is the same).
pub fn command_line(setup: &Setup) -> Result<String, String> {
    let scratch = Scratch::new("bench-command")?;
    let outcome = setup
        .qemu(Kernel::FloorPvh, "floor", &scratch.socket())
        .run()
        .map_err(|e| format!("cannot run QEMU: {e}"))?;
    Ok(outcome.command)
}

/// Makes the virtio devices change their configuration (see the module documentation).
fn trigger_config_vectors(qmp: &mut Qmp) -> Result<(), String> {
    qmp.execute("set_link", Some(json!({"name": "n0", "up": false})))?;
    qmp.execute("set_link", Some(json!({"name": "n0", "up": true})))?;
    qmp.execute(
        "block_resize",
        Some(json!({"device": "vb", "size": RESIZED_BYTES})),
    )?;
    Ok(())
}

/// Connects to a run's QMP socket (QEMU creates it before the guest runs); the connection
/// then lasts as long as a run may.
fn connect(socket: &Path) -> Result<Qmp, String> {
    Qmp::connect(socket, Instant::now() + Duration::from_secs(20))
        .map(|qmp| qmp.with_deadline(Instant::now() + TIMEOUT))
}

/// Ends an interactive run through QMP and waits for QEMU to go.
fn quit(session: &mut Session<'_>, qmp: &mut Qmp) -> Result<(), String> {
    qmp.quit()?;
    session.wait_exit(Duration::from_secs(20)).map(|_| ())
}

fn failed(what: &str, outcome: &Outcome, message: &str) -> String {
    format!("{what}: {message}\n{}", outcome.log())
}

/// The value of `key=` on the first line containing `prefix` (a `LINUXBENCH bound`,
/// `BOOTBENCH` line).
pub fn field(serial: &str, prefix: &str, key: &str) -> Option<u64> {
    serial
        .lines()
        .map(clean_line)
        .find(|l| l.contains(prefix))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Figure a, one run: seconds from QEMU's start until `kernel` said its drivers were bound,
/// and until every device vector had delivered once (configuration vectors triggered at the
/// binding line). A floor kernel: seconds until its first serial byte, twice.
pub fn wall(setup: &Setup, kernel: Kernel) -> Result<(f64, f64), String> {
    let scratch = Scratch::new("bench-wall")?;
    let socket = scratch.socket();
    let result = match kernel {
        Kernel::FloorPvh | Kernel::FloorBzImage => {
            let run = setup.qemu(kernel, "floor", &socket).run();
            let outcome = run.map_err(|e| format!("cannot run QEMU: {e}"))?;
            match (
                outcome.first_output,
                stubs::parse_floor_tsc(&outcome.serial),
            ) {
                (Some(at), Some(_)) if outcome.success() => {
                    Ok((at.as_secs_f64(), at.as_secs_f64()))
                }
                _ => Err(failed("floor kernel", &outcome, "no TSC line")),
            }
        }
        Kernel::Ours => {
            // `bootbench=ready`: the kernel says when every device vector has delivered, as
            // Linux's `/init` does from `/proc/interrupts`.
            let append = format!("{OURS_BOOT}=ready");
            let run = setup
                .qemu(kernel, &append, &socket)
                .interact(|session| {
                    let mut qmp = connect(&socket)?;
                    session.expect("all drivers bound", TIMEOUT)?;
                    let bound = session.elapsed().as_secs_f64();
                    trigger_config_vectors(&mut qmp)?;
                    session.expect("BOOTBENCH ready=", TIMEOUT)?;
                    let at = session.elapsed().as_secs_f64();
                    let rest = session.expect("tsc=", Duration::from_secs(30))?;
                    let line = format!("BOOTBENCH ready={rest}");
                    let seen = field(&line, "BOOTBENCH ready", "seen");
                    let vectors = field(&line, "BOOTBENCH ready", "vectors");
                    quit(session, &mut qmp)?;
                    match (rest.starts_with("yes"), vectors, seen) {
                        (true, Some(v), Some(s)) if v > 0 && v == s => Ok((bound, at)),
                        _ => Err(format!("not every vector delivered: {line}")),
                    }
                })
                .map_err(|e| format!("cannot run QEMU: {e}"))?;
            run.result
                .map_err(|e| failed("this kernel", &run.outcome, &e))
        }
        Kernel::Linux => {
            let append = format!("{LINUX_BOOT} linuxbench=ready");
            let run = setup
                .qemu(kernel, &append, &socket)
                .interact(|session| {
                    let mut qmp = connect(&socket)?;
                    session.expect("LINUXBENCH bound", TIMEOUT)?;
                    let bound = session.elapsed().as_secs_f64();
                    trigger_config_vectors(&mut qmp)?;
                    session.expect("LINUXBENCH ready", TIMEOUT)?;
                    let at = session.elapsed().as_secs_f64();
                    let rest = session.expect("LINUXBENCH done", TIMEOUT)?;
                    let seen = field(&format!("ready{rest}"), "ready", "seen");
                    let vectors = field(&format!("ready{rest}"), "ready", "vectors");
                    quit(session, &mut qmp)?;
                    match (vectors, seen) {
                        (Some(v), Some(s)) if v > 0 && v == s => Ok((bound, at)),
                        _ => Err(format!("not every vector delivered: {rest}")),
                    }
                })
                .map_err(|e| format!("cannot run QEMU: {e}"))?;
            run.result.map_err(|e| failed("Linux", &run.outcome, &e))
        }
    };
    setup.restore_blk()?;
    result
}

/// Figure b, one run under `-icount shift=0,sleep=off`: the guest TSC (instructions since
/// QEMU started, plus virtual time skipped while the guest idles) when `kernel` reports its
/// drivers bound with every queue vector delivered, or, for a floor kernel, at its first
/// instruction.
pub fn icount_tsc(setup: &Setup, kernel: Kernel) -> Result<u64, String> {
    let scratch = Scratch::new("bench-icount")?;
    let socket = scratch.socket();
    let (append, marker, prefix) = match kernel {
        Kernel::Ours => (OURS_BOOT.to_owned(), "all drivers bound", "BOOTBENCH"),
        Kernel::Linux => (
            format!("{LINUX_BOOT} linuxbench=bound"),
            "LINUXBENCH done",
            "LINUXBENCH bound",
        ),
        Kernel::FloorPvh | Kernel::FloorBzImage => ("floor".to_owned(), "", ""),
    };
    let qemu = setup
        .qemu(kernel, &append, &socket)
        .args(["-icount", "shift=0,sleep=off"]);
    if marker.is_empty() {
        let outcome = qemu.run().map_err(|e| format!("cannot run QEMU: {e}"))?;
        return stubs::parse_floor_tsc(&outcome.serial)
            .ok_or_else(|| failed("floor kernel under icount", &outcome, "no TSC line"));
    }
    let (outcome, at) = qemu
        .run_until(marker)
        .map_err(|e| format!("cannot run QEMU: {e}"))?;
    if at.is_none() {
        return Err(failed("icount run", &outcome, &format!("no `{marker}`")));
    }
    field(&outcome.serial, prefix, "tsc")
        .ok_or_else(|| failed("icount run", &outcome, &format!("no `{prefix} ... tsc=`")))
}

/// Figure c, one run: configuration accesses to present functions per present function,
/// from the kernel's first instruction (after the loader's last `fw_cfg` access) to the end
/// of its PCI enumeration, from QEMU's trace. Also returns the number of present functions
/// and a description of the window.
pub fn config_accesses(setup: &Setup, kernel: Kernel) -> Result<(f64, usize, String), String> {
    let scratch = Scratch::new("bench-cfg")?;
    let log = scratch.0.join("trace.log");
    let (append, done) = match kernel {
        Kernel::Ours => ("bootbench".to_owned(), OURS_PCI_DONE),
        Kernel::Linux => ("console=ttyS0 linuxbench=bound".to_owned(), LINUX_PCI_DONE),
        _ => return Err("no configuration figure for a floor kernel".to_owned()),
    };
    let mut qemu = setup.qemu(kernel, &append, &scratch.socket());
    for event in TRACE_EVENTS {
        qemu = qemu.args(["-trace", event]);
    }
    let qemu = qemu.arg("-D").arg(&log);
    // Quit through QMP rather than kill: QEMU writes the rest of its trace log on the way out.
    // QEMU's own list of the functions present (its trace also names absent ones, "empty").
    let run = qemu
        .run_until_qmp(done, |qmp| qmp.query_pci())
        .map_err(|e| format!("cannot run QEMU: {e}"))?;
    let present: Vec<PciAddress> = match run.session {
        Some(Ok(functions)) => functions.iter().map(|f| f.address).collect(),
        Some(Err(e)) => return Err(failed("trace run", &run.outcome, &e)),
        None => {
            return Err(failed(
                "trace run",
                &run.outcome,
                &format!("no `{done}` line"),
            ));
        }
    };
    let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    per_function(&Trace::parse(&text), done, &present)
}

/// The configuration-access figure from a parsed trace: accesses to the `present` functions
/// from the kernel's start to the end of the first line containing `done`, per present
/// function.
pub fn per_function(
    trace: &Trace,
    done: &str,
    present: &[PciAddress],
) -> Result<(f64, usize, String), String> {
    let end = trace
        .segments()
        .into_iter()
        .find(|s| s.line.as_deref().is_some_and(|l| l.contains(done)))
        .ok_or_else(|| format!("`{done}` is not in the serial output rebuilt from the trace"))?;
    if present.is_empty() {
        return Err("no PCI function present".to_owned());
    }
    let window = trace.count(trace.kernel_start, end.to);
    let on_present: u64 = window
        .raw_by_function
        .iter()
        .filter(|(a, _)| present.contains(a))
        .map(|(_, c)| c.total())
        .sum();
    let absent: u64 = window.raw.total() - on_present;
    let what = format!(
        "{on_present} accesses to {} present functions, {absent} probes of absent ones, up to `{}`",
        present.len(),
        end.line.unwrap_or_default()
    );
    Ok((
        on_present as f64 / present.len() as f64,
        present.len(),
        what,
    ))
}

/// One sequential-read figure.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadFigure {
    /// `nvme` or `virtio-blk`.
    pub disk: String,
    /// Bytes per read.
    pub size: u64,
    /// Reads in flight.
    pub qd: u64,
    /// Throughput.
    pub mib_per_s: f64,
}

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20) / seconds
}

/// `LINUXBENCH read disk=<d> size=<n> qd=<n> bytes=<n> ns=<n> failed=<n>` lines.
pub fn parse_linux_reads(serial: &str) -> Result<Vec<ReadFigure>, String> {
    let mut out = Vec::new();
    for line in serial.lines().map(clean_line) {
        let Some(rest) = line.split("LINUXBENCH read ").nth(1) else {
            continue;
        };
        let get = |key: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .ok_or_else(|| format!("no `{key}=` in `{line}`"))
        };
        let number = |key: &str| -> Result<u64, String> {
            get(key)?
                .parse()
                .map_err(|e| format!("`{key}=` in `{line}`: {e}"))
        };
        if number("failed")? != 0 {
            return Err(format!("a dd failed: `{line}`"));
        }
        let ns = number("ns")?;
        if ns == 0 {
            return Err(format!("zero time in `{line}`"));
        }
        out.push(ReadFigure {
            disk: get("disk")?.to_owned(),
            size: number("size")?,
            qd: number("qd")?,
            mib_per_s: mib_per_s(number("bytes")?, ns as f64 / 1e9),
        });
    }
    Ok(out)
}

/// The disks of the benchmark machine as this kernel names them, and their report names.
const OUR_DISKS: [(&str, &str); 2] = [("nvme0n1", "nvme"), ("vda", "virtio-blk")];

/// This kernel's read figures from its `blkbench` suite (`kernel/src/tests/blk_suite.rs`):
/// `BLKBENCH disk=<name> size=<bytes per read> depth=<reads in flight> bytes=<bytes
/// delivered> us=<guest microseconds> ... path=<dma|copy>`; disks other than the machine's
/// first NVMe namespace and first virtio-blk disk are left out, and so are `path=copy` lines
/// (reads through the driver's staging copy): the figure is the kernel's reads into memory
/// the caller owns and the device writes directly, as Linux's `O_DIRECT` reads are.
pub fn parse_ours_reads(serial: &str) -> Result<Vec<ReadFigure>, String> {
    let mut out = Vec::new();
    for line in serial.lines().map(clean_line) {
        let Some(rest) = line.split("BLKBENCH ").nth(1) else {
            continue;
        };
        if !rest.contains("disk=") {
            continue;
        }
        let get = |key: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .ok_or_else(|| format!("no `{key}=` in `{line}`"))
        };
        let number = |key: &str| -> Result<u64, String> {
            get(key)?
                .parse()
                .map_err(|e| format!("`{key}=` in `{line}`: {e}"))
        };
        let Some((_, disk)) = OUR_DISKS.iter().find(|(name, _)| get("disk") == Ok(*name)) else {
            continue;
        };
        if get("path").is_ok_and(|p| p != "dma") {
            continue;
        }
        let us = number("us")?;
        if us == 0 {
            return Err(format!("zero time in `{line}`"));
        }
        out.push(ReadFigure {
            disk: (*disk).to_owned(),
            size: number("size")?,
            qd: number("depth")?,
            mib_per_s: mib_per_s(number("bytes")?, us as f64 / 1e6),
        });
    }
    Ok(out)
}

/// The FNV-1a the kernel reports for `bytes` read sequentially in `size`-byte requests from
/// the start of `image`, wrapping at the last whole request (as `blkbench` reads).
pub fn expected_fnv1a(image: &[u8], size: u64, bytes: u64) -> Option<u64> {
    let size = usize::try_from(size).ok()?;
    let slots = image.len().checked_div(size)?;
    if slots == 0 {
        return None;
    }
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for k in 0..usize::try_from(bytes).ok()? / size {
        let at = (k % slots) * size;
        hash = image[at..at + size].iter().fold(hash, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    }
    Some(hash)
}

/// Checks every `BLKBENCH` line's `fnv1a=` (when it has one) against the image of its disk:
/// a figure for data that was not delivered correctly is no figure.
pub fn verify_ours_reads(serial: &str, images: &[(&str, &[u8])]) -> Result<usize, String> {
    let mut checked = 0;
    for line in serial.lines().map(clean_line) {
        let Some(rest) = line.split("BLKBENCH ").nth(1) else {
            continue;
        };
        let get = |key: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        };
        let (Some(disk), Some(reported)) = (get("disk"), get("fnv1a")) else {
            continue;
        };
        let Some((_, image)) = images.iter().find(|(name, _)| *name == disk) else {
            continue;
        };
        let number = |key: &str| get(key).and_then(|v| v.parse::<u64>().ok());
        let (Some(size), Some(bytes)) = (number("size"), number("bytes")) else {
            return Err(format!("no size= or bytes= in `{line}`"));
        };
        let expected = expected_fnv1a(image, size, bytes)
            .ok_or_else(|| format!("`{line}`: no whole request fits the image"))?;
        if u64::from_str_radix(reported, 16).ok() != Some(expected) {
            return Err(format!(
                "`{line}`: the data read does not match the image (expected fnv1a={expected:016x})"
            ));
        }
        checked += 1;
    }
    Ok(checked)
}

/// Until this kernel has its read mode: `test=nvmebench`'s lines (8 KiB commands; `qd1`:
/// one in flight, left in the driver's DMA buffer; `copy`: eight in flight, copied out to
/// the caller's buffer), as NVMe figures at QD1 and QD8.
pub fn parse_nvmebench(serial: &str) -> Result<Vec<ReadFigure>, String> {
    let header_bytes = field(serial, "NVMEBENCH model=", "command_bytes");
    let mut out = Vec::new();
    for line in serial.lines().map(clean_line) {
        let Some(rest) = line.split("NVMEBENCH mode=").nth(1) else {
            continue;
        };
        let mode = rest.split_whitespace().next().unwrap_or_default();
        let qd = match mode {
            "qd1" => 1,
            "copy" => 8,
            _ => continue,
        };
        let number = |key: &str| -> Result<u64, String> {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                .ok_or_else(|| format!("no `{key}=` in `{line}`"))
        };
        let us = number("us")?.max(1);
        out.push(ReadFigure {
            disk: "nvme".to_owned(),
            size: header_bytes.ok_or("no NVMEBENCH header with command_bytes=")?,
            qd,
            mib_per_s: mib_per_s(number("bytes")?, us as f64 / 1e6),
        });
    }
    if out.len() != 2 {
        return Err(format!(
            "expected NVMEBENCH qd1 and copy lines, got {out:?}"
        ));
    }
    Ok(out)
}

/// Figure d for this kernel, one run: `test=blkbench` ([`parse_ours_reads`]). A kernel
/// without that suite ("no such suite") boots again with `test=nvmebench` instead
/// ([`parse_nvmebench`]). Returns the figures and whether they came from the fallback.
pub fn ours_reads(setup: &Setup) -> Result<(Vec<ReadFigure>, bool), String> {
    let scratch = Scratch::new("bench-reads")?;
    let socket = scratch.socket();
    let outcome = setup
        .qemu(Kernel::Ours, "test=blkbench", &socket)
        .run()
        .map_err(|e| format!("cannot run QEMU: {e}"))?;
    if !outcome.serial.contains("no such suite") {
        if !outcome.success() {
            return Err(failed("test=blkbench", &outcome, "the suite failed"));
        }
        let figures =
            parse_ours_reads(&outcome.serial).map_err(|e| failed("blkbench", &outcome, &e))?;
        let nvme =
            std::fs::read(&setup.nvme).map_err(|e| format!("{}: {e}", setup.nvme.display()))?;
        let blk = std::fs::read(&setup.blk).map_err(|e| format!("{}: {e}", setup.blk.display()))?;
        let images = [(OUR_DISKS[0].0, &nvme[..]), (OUR_DISKS[1].0, &blk[..])];
        verify_ours_reads(&outcome.serial, &images)
            .map_err(|e| failed("blkbench", &outcome, &e))?;
        if figures.is_empty() {
            return Err(failed(
                "test=blkbench",
                &outcome,
                "no BLKBENCH lines for nvme0n1 or vda",
            ));
        }
        return Ok((figures, false));
    }
    let outcome = setup
        .qemu(Kernel::Ours, "test=nvmebench", &socket)
        .run()
        .map_err(|e| format!("cannot run QEMU: {e}"))?;
    if !outcome.success() {
        return Err(failed("test=nvmebench", &outcome, "the suite failed"));
    }
    parse_nvmebench(&outcome.serial).map(|f| (f, true))
}

/// Figure d for Linux, one run: `/init` in `read` mode.
pub fn linux_reads(setup: &Setup) -> Result<Vec<ReadFigure>, String> {
    let scratch = Scratch::new("bench-reads")?;
    let append = format!("{LINUX_BOOT} linuxbench=read");
    let (outcome, at) = setup
        .qemu(Kernel::Linux, &append, &scratch.socket())
        .run_until("LINUXBENCH done")
        .map_err(|e| format!("cannot run QEMU: {e}"))?;
    if at.is_none() {
        return Err(failed("Linux reads", &outcome, "no `LINUXBENCH done`"));
    }
    parse_linux_reads(&outcome.serial).map_err(|e| failed("Linux reads", &outcome, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_marker_lines() {
        let serial = "x\r\nBOOTBENCH drivers=4 self_tests_failed=0 vectors=11 seen=9 tsc=808421420\r\n\
LINUXBENCH bound tsc=7479798430 vectors=7 seen=5\n\
BOOTBENCH ready=yes vectors=11 seen=11 tsc=909421420\r\n";
        assert_eq!(field(serial, "BOOTBENCH", "tsc"), Some(808_421_420));
        assert_eq!(field(serial, "BOOTBENCH", "seen"), Some(9));
        assert_eq!(
            field(serial, "LINUXBENCH bound", "tsc"),
            Some(7_479_798_430)
        );
        assert_eq!(field(serial, "LINUXBENCH ready", "tsc"), None);
        assert_eq!(field(serial, "BOOTBENCH", "nothing"), None);
        assert_eq!(field(serial, "BOOTBENCH ready", "seen"), Some(11));
    }

    #[test]
    fn linux_read_lines() {
        let serial = "LINUXBENCH bound tsc=1\n\
LINUXBENCH read disk=nvme size=4096 qd=1 bytes=4194304 ns=180629601 failed=0\r\n\
LINUXBENCH read disk=virtio-blk size=1048576 qd=32 bytes=67108864 ns=275165337 failed=0\n";
        let f = parse_linux_reads(serial).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].disk.as_str(), f[0].size, f[0].qd), ("nvme", 4096, 1));
        assert!((f[0].mib_per_s - 22.145).abs() < 0.01, "{}", f[0].mib_per_s);
        assert!((f[1].mib_per_s - 232.59).abs() < 0.01, "{}", f[1].mib_per_s);
        assert!(parse_linux_reads(&serial.replace("failed=0\r", "failed=2\r")).is_err());
        assert!(parse_linux_reads(&serial.replace("ns=180629601", "ns=0")).is_err());
        assert!(parse_linux_reads(&serial.replace("qd=1 ", "")).is_err());
    }

    #[test]
    fn our_read_lines() {
        let serial = "BLKBENCH tsc_hz=2600000000\n\
BLKBENCH disk=nvme0n1 size=4096 depth=1 bytes=16777216 us=500000 mib_s=32.0 batches=4096 fnv1a=0123\n\
BLKBENCH disk=nvme1n1 size=4096 depth=1 bytes=16777216 us=1 mib_s=1.0 batches=4096 fnv1a=0123\n\
BLKBENCH disk=vda size=131072 depth=32 bytes=67108864 us=250000 mib_s=256.0 batches=16 fnv1a=4567\n";
        let f = parse_ours_reads(serial).unwrap();
        assert_eq!(f.len(), 2, "nvme1n1 is not one of the machine's disks");
        assert!((f[0].mib_per_s - 32.0).abs() < 1e-9);
        assert_eq!(
            (f[1].disk.as_str(), f[1].size, f[1].qd),
            ("virtio-blk", 131072, 32)
        );
        assert!((f[1].mib_per_s - 256.0).abs() < 1e-9);
        assert!(parse_ours_reads(&serial.replace("us=500000", "us=x")).is_err());
        assert!(parse_ours_reads("kernel ready\n").unwrap().is_empty());
    }

    #[test]
    fn read_data_is_checked_against_the_image() {
        let image: Vec<u8> = (0..64u8).collect();
        // 16-byte requests, 96 bytes: four slots, then the first two again.
        let mut data = image.clone();
        data.extend_from_slice(&image[..32]);
        assert_eq!(expected_fnv1a(&image, 16, 96), Some(crate::fnv1a(&data)));
        assert_eq!(
            expected_fnv1a(&image, 128, 128),
            None,
            "no whole request fits"
        );
        let good = format!(
            "BLKBENCH disk=vda size=16 depth=1 bytes=96 us=1 fnv1a={:016x}\n",
            crate::fnv1a(&data)
        );
        assert_eq!(verify_ours_reads(&good, &[("vda", &image)]), Ok(1));
        assert_eq!(verify_ours_reads(&good, &[("nvme0n1", &image)]), Ok(0));
        let bad = good.replace("bytes=96", "bytes=80");
        assert!(
            verify_ours_reads(&bad, &[("vda", &image)])
                .unwrap_err()
                .contains("does not match")
        );
    }

    #[test]
    fn nvmebench_fallback() {
        let serial = "NVMEBENCH model=\"QEMU NVMe Ctrl\" lba_size=512 command_bytes=8192 queues=4 kind=MSI-X tsc_hz=2597498800\n\
NVMEBENCH mode=qd1 bytes=16777216 us=124944 commands=2048 interrupts=2048\n\
NVMEBENCH mode=qd8 bytes=16777216 us=25564 commands=2048 interrupts=259\n\
NVMEBENCH mode=copy bytes=16777216 us=290688 commands=2048 interrupts=256 check=254\n";
        let f = parse_nvmebench(serial).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].size, f[0].qd), (8192, 1));
        assert!((f[0].mib_per_s - 128.06).abs() < 0.01);
        assert_eq!((f[1].size, f[1].qd), (8192, 8));
        assert!((f[1].mib_per_s - 55.04).abs() < 0.01);
        assert!(parse_nvmebench(&serial.replace("mode=copy", "mode=other")).is_err());
    }

    #[test]
    fn trace_window_per_function() {
        // fw_cfg, then the kernel: two functions present, one absent probe.
        let log = "\
memory_region_ops_read cpu 0 mr 0x1 addr 0x510 value 0x0 size 2 name 'fwcfg'
memory_region_ops_read cpu 0 mr 0x1 addr 0xb0000000 value 0x29c08086 size 4 name 'pcie-mmcfg-mmio'
pci_cfg_read mch 00:00.0 @0x0 -> 0x29c08086
memory_region_ops_read cpu 0 mr 0x1 addr 0xb0008000 value 0x11118086 size 4 name 'pcie-mmcfg-mmio'
pci_cfg_read vga 00:01.0 @0x0 -> 0x11111234
memory_region_ops_write cpu 0 mr 0x1 addr 0xb0008004 value 0x7 size 2 name 'pcie-mmcfg-mmio'
pci_cfg_write vga 00:01.0 @0x4 <- 0x7
memory_region_ops_read cpu 0 mr 0x1 addr 0xb0010000 value 0xffffffff size 4 name 'pcie-mmcfg-mmio'
serial_write write addr 0x00 val 0x64
serial_write write addr 0x00 val 0x0a
memory_region_ops_read cpu 0 mr 0x1 addr 0xb0000000 value 0x29c08086 size 4 name 'pcie-mmcfg-mmio'
pci_cfg_read mch 00:00.0 @0x0 -> 0x29c08086
";
        let trace = Trace::parse(log);
        let present = [PciAddress::new(0, 0, 0, 0), PciAddress::new(0, 0, 1, 0)];
        let (per, functions, what) = per_function(&trace, "d", &present).unwrap();
        assert_eq!(functions, 2);
        assert!(
            (per - 1.5).abs() < 1e-9,
            "3 accesses on 2 present functions: {per}"
        );
        assert!(what.contains("1 probes of absent ones"), "{what}");
        assert!(per_function(&trace, "missing line", &present).is_err());
        assert!(per_function(&trace, "d", &[]).is_err());
    }

    #[test]
    fn disk_data_is_not_sparse() {
        let data = pseudo_random(4096, 1);
        assert_eq!(data.len(), 4096);
        assert!(data.iter().filter(|b| **b == 0).count() < 100);
        assert_ne!(pseudo_random(64, 1), pseudo_random(64, 2));
    }
}
