//! Host-side QEMU test support for the kernel.
//!
//! - [`workspace_root`] and [`kernel_elf`]: builds the kernel once per process with
//!   `CARGO_TARGET_DIR=target/kernel cargo build -Zbuild-std=core,alloc -p kernel --target
//!   x86_64-unknown-none --release` (a separate target directory, so the nested cargo does
//!   not wait for the lock held by the `cargo test` that runs us). `QEMU_TESTS_KERNEL=<elf>`
//!   skips the build and uses that file instead.
//! - [`build_iso`]: a hybrid BIOS/UEFI GRUB image (`grub-mkrescue`) booting the kernel via
//!   multiboot2, with `grub/grub.cfg.in` as the configuration template.
//! - [`find_ovmf`]: the UEFI firmware image.
//! - [`Qemu`]: runs QEMU with a timeout and captures the serial port ([`Outcome`]).
//! - [`Report`]: parses the kernel's serial test protocol (see [`protocol`]).
//! - [`check`]: runs assertions on an outcome and panics with the whole serial log on failure.
//! - [`qemu_or_skip`]: lets scenario tests skip, loudly, when QEMU is missing outside CI.
//! - [`session`]: [`Qemu::interact`]'s expect-style [`Session`] on the serial console.
//! - [`qmp`]: a QMP client ([`Qemu::run_until_qmp`]) and QEMU's `query-pci` as a flat list.
//! - [`pci`]: the kernel's `PCIDEV`/`PCIERR`/`PCISTATS` lines and their comparison with QEMU.
//! - [`topology`]: the PCI topologies, the `test=pci` runner and its checks.
//! - [`cfgtrace`]: configuration-space accesses counted from QEMU's trace log.
//! - [`screen`]: a run without serial, looked at through QMP `screendump` and typed on through
//!   QMP `send-key`.

pub mod bench;
pub mod cfgtrace;
pub mod pci;
pub mod protocol;
pub mod qemu;
pub mod qmp;
pub mod screen;
pub mod session;
pub mod topology;

use std::fs;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use protocol::{BootInfo, Exception, Loader, Panic, Report, Suite, TestCase, Verdict};
pub use qemu::{
    Boot, DEFAULT_TIMEOUT, Firmware, InteractRun, Machine, Outcome, QEMU_EXIT_FAILURE,
    QEMU_EXIT_SUCCESS, Qemu, QmpRun, qemu_available, qemu_program,
};
pub use qmp::Qmp;
pub use session::Session;

/// The GRUB configuration template; `@CMDLINE@` is replaced by the kernel command line.
pub const GRUB_CFG_TEMPLATE: &str = include_str!("../../grub/grub.cfg.in");

/// Target triple of the kernel.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// The workspace root: the nearest ancestor of this crate with a `Cargo.toml` that declares
/// `[workspace]`.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| {
            fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.lines().any(|l| l.trim() == "[workspace]"))
        })
        .unwrap_or_else(|| manifest_dir.parent().unwrap_or(manifest_dir))
        .to_path_buf()
}

/// Where the kernel build puts the ELF, relative to the workspace root.
pub fn kernel_elf_path(root: &Path) -> PathBuf {
    root.join("target/kernel")
        .join(KERNEL_TARGET)
        .join("release/kernel")
}

/// Builds the kernel (release, `x86_64-unknown-none`, target dir `target/kernel`) and returns
/// the ELF path, or an error message including cargo's output.
pub fn build_kernel() -> Result<PathBuf, String> {
    if let Some(elf) = std::env::var_os("QEMU_TESTS_KERNEL") {
        let elf = PathBuf::from(elf);
        return if elf.is_file() {
            Ok(elf)
        } else {
            Err(format!("QEMU_TESTS_KERNEL={} is not a file", elf.display()))
        };
    }
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", root.join("target/kernel"))
        .args([
            "build",
            // `core` and `alloc` with unwind tables: the kernel unwinds driver panics.
            "-Zbuild-std=core,alloc",
            "-p",
            "kernel",
            "--target",
            KERNEL_TARGET,
            "--release",
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        return Err(format!(
            "kernel build failed ({}): CARGO_TARGET_DIR=target/kernel cargo build -Zbuild-std=core,alloc -p kernel \
             --target {KERNEL_TARGET} --release\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        ));
    }
    let elf = kernel_elf_path(&root);
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(format!(
            "kernel build succeeded but {} is missing",
            elf.display()
        ))
    }
}

/// The kernel ELF, built at most once per process. Panics with cargo's output if the build
/// fails (every caller in the process gets the same failure, without rebuilding).
#[track_caller]
pub fn kernel_elf() -> &'static Path {
    static KERNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match KERNEL.get_or_init(build_kernel) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

/// FNV-1a, 64 bits, as the kernel prints it (`drivers::fnv1a`): tests recompute it over
/// the data they gave QEMU.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What every benchmark binary needs first: QEMU present and the kernel built. On failure
/// the reason is printed (prefixed with `name`) and `Err` carries the exit code to return.
pub fn bench_kernel(name: &str) -> Result<PathBuf, std::process::ExitCode> {
    if !qemu_available() {
        eprintln!(
            "{name}: {} not found; install QEMU >= 8 (./run.sh installs it when run as root)",
            qemu_program().to_string_lossy()
        );
        return Err(std::process::ExitCode::FAILURE);
    }
    build_kernel().map_err(|message| {
        eprintln!("{name}: {message}");
        std::process::ExitCode::FAILURE
    })
}

/// A random-enough token (16 hex digits) from the time, the process id, a counter and the
/// standard library's per-process random hash keys.
pub fn random_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

/// A fresh path under the system temp directory (not created).
pub fn unique_temp_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "qemu-tests-{prefix}-{}-{}",
        std::process::id(),
        random_token()
    ))
}

/// Checks that a kernel command line can be written into `grub.cfg` unquoted: only letters,
/// digits, spaces and `._,:/=+@%-`.
pub fn validate_grub_cmdline(cmdline: &str) -> Result<(), String> {
    match cmdline
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || " ._,:/=+@%-".contains(c)))
    {
        None => Ok(()),
        Some(c) => Err(format!(
            "character {c:?} in kernel command line {cmdline:?} is not allowed in grub.cfg \
             (allowed: letters, digits, spaces and ._,:/=+@%-)"
        )),
    }
}

/// `grub.cfg` for the given kernel command line, from [`GRUB_CFG_TEMPLATE`].
pub fn grub_cfg(cmdline: &str) -> Result<String, String> {
    validate_grub_cmdline(cmdline)?;
    Ok(GRUB_CFG_TEMPLATE.replace("@CMDLINE@", cmdline))
}

/// A GRUB ISO in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct Iso {
    dir: PathBuf,
    /// The image.
    pub path: PathBuf,
}

impl Drop for Iso {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The toolchain's `rust-objcopy` (shipped with `rustc` itself, in
/// `<sysroot>/lib/rustlib/<host>/bin/`).
fn rust_objcopy() -> Result<PathBuf, String> {
    let rustc = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("rustc")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run rustc: {e}"))?;
        if !out.status.success() {
            return Err(format!("rustc {args:?} failed ({})", out.status));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let sysroot = rustc(&["--print", "sysroot"])?;
    let host = rustc(&["-vV"])?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or("rustc -vV names no host")?;
    let path = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host.trim())
        .join("bin/rust-objcopy");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} not found", path.display()))
    }
}

/// Copies the kernel ELF `from` to `to` without its debug information, as `./run.sh iso`
/// puts it on the ISO: GRUB reads the whole file, and the debug information is nine tenths
/// of it.
pub fn strip_debug(from: &Path, to: &Path) -> Result<(), String> {
    let objcopy = rust_objcopy()?;
    let output = Command::new(&objcopy)
        .arg("--strip-debug")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", objcopy.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} --strip-debug {} failed ({}): {}",
            objcopy.display(),
            from.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// Builds a hybrid BIOS/UEFI GRUB ISO (`grub-mkrescue`) containing `boot/kernel.elf` (the
/// kernel without its debug information, [`strip_debug`]) and `boot/grub/grub.cfg` for
/// `cmdline`.
pub fn build_iso(kernel: &Path, cmdline: &str) -> Result<Iso, String> {
    let cfg = grub_cfg(cmdline)?;
    let dir = unique_temp_dir("iso");
    let iso = Iso {
        path: dir.join("kernel.iso"),
        dir,
    };
    let tree = iso.dir.join("tree");
    let io_err = |what: &str, e: io::Error| format!("{what}: {e}");
    fs::create_dir_all(tree.join("boot/grub")).map_err(|e| io_err("create ISO tree", e))?;
    strip_debug(kernel, &tree.join("boot/kernel.elf"))?;
    fs::write(tree.join("boot/grub/grub.cfg"), cfg).map_err(|e| io_err("write grub.cfg", e))?;
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso.path)
        .arg(&tree)
        .output()
        .map_err(|e| {
            format!(
                "cannot run grub-mkrescue ({e}); install grub-common, grub-pc-bin, \
                 grub-efi-amd64-bin, xorriso and mtools (./run.sh does it when run as root)"
            )
        })?;
    if !output.status.success() || !iso.path.is_file() {
        return Err(format!(
            "grub-mkrescue failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(iso)
}

/// An OVMF firmware image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OvmfImage {
    /// Code and variables in one file, passed with `-bios`.
    Combined(PathBuf),
    /// Separate code (read-only pflash unit 0) and variable store template (a writable copy
    /// becomes pflash unit 1).
    Split {
        /// `OVMF_CODE*.fd`.
        code: PathBuf,
        /// The matching `OVMF_VARS*.fd`.
        vars: PathBuf,
    },
}

/// Finds OVMF: `/usr/share/ovmf/OVMF.fd`, else `/usr/share/OVMF/OVMF_CODE_4M.fd` or
/// `OVMF_CODE.fd` with the matching `OVMF_VARS` file (Secure Boot variants are skipped: they
/// need SMM).
pub fn find_ovmf() -> Option<OvmfImage> {
    find_ovmf_in(Path::new("/usr/share"))
}

fn find_ovmf_in(share: &Path) -> Option<OvmfImage> {
    let combined = share.join("ovmf/OVMF.fd");
    if combined.is_file() {
        return Some(OvmfImage::Combined(combined));
    }
    let dir = share.join("OVMF");
    [
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
        ("OVMF_CODE.fd", "OVMF_VARS.fd"),
    ]
    .into_iter()
    .map(|(code, vars)| (dir.join(code), dir.join(vars)))
    .find(|(code, vars)| code.is_file() && vars.is_file())
    .map(|(code, vars)| OvmfImage::Split { code, vars })
}

/// Writes a line straight to the process's stderr, bypassing the test harness's output
/// capture, so that it shows up even for passing tests.
pub fn say(line: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

/// Decides whether a QEMU scenario can run. Returns `true` if QEMU is available. If it is not
/// and the `CI` environment variable is unset, prints a clear `SKIPPED` message (visible even
/// though the harness captures output) and returns `false`; under CI it panics instead.
#[track_caller]
pub fn qemu_or_skip(test: &str) -> bool {
    if qemu_available() {
        return true;
    }
    let program = qemu_program();
    let program = program.to_string_lossy();
    if std::env::var_os("CI").is_some() {
        panic!("{program} not found or not runnable, and CI is set: QEMU scenarios must run");
    }
    say(&format!(
        "SKIPPED {test}: {program} not found (install QEMU >= 8, e.g. `sudo ./run.sh test`); \
         with CI set this is a failure"
    ));
    false
}

/// Returns early from a check closure with an error message.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Parses the outcome's serial log and runs `checks` on it. On `Err`, panics with the message,
/// how QEMU ended, and the whole serial log and QEMU stderr. Returns the report on success.
#[track_caller]
pub fn check(
    name: &str,
    outcome: &Outcome,
    checks: impl FnOnce(&Outcome, &Report) -> Result<(), String>,
) -> Report {
    let report = Report::parse(&outcome.serial);
    if let Err(message) = checks(outcome, &report) {
        // The harness prints the panic message of a failed test in full, log included.
        panic!("{name}: {message}\n{}", outcome.log());
    }
    report
}

/// Checks QEMU's exit code.
pub fn expect_exit(outcome: &Outcome, code: i32) -> Result<(), String> {
    if outcome.exit_code == Some(code) && !outcome.timed_out {
        Ok(())
    } else {
        Err(format!(
            "expected QEMU exit code {code}, got: {}",
            outcome.describe_exit()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_workspace() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file());
        assert!(root.join("qemu-tests/Cargo.toml").is_file());
        assert_eq!(
            kernel_elf_path(&root),
            root.join("target/kernel/x86_64-unknown-none/release/kernel")
        );
    }

    #[test]
    fn tokens_differ() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn grub_cfg_from_template() {
        let cfg = grub_cfg("test=boot token=0123abcd").unwrap();
        assert!(
            cfg.lines()
                .any(|l| l.trim() == "multiboot2 /boot/kernel.elf test=boot token=0123abcd"),
            "{cfg}"
        );
        for needed in [
            "set timeout=3",
            "insmod all_video",
            "if [ \"$com1_scratch\" = \"5a\" ]; then",
            "serial --unit=0 --speed=115200",
            "terminal_input console serial",
            "terminal_output console serial",
            "menuentry \"pcikernel\" {",
            "boot",
        ] {
            assert!(cfg.lines().any(|l| l.trim() == needed), "missing {needed}");
        }
        assert!(!cfg.contains("@CMDLINE@"));
        // The command line goes on the `multiboot2` line only, not into the comments.
        assert_eq!(cfg.matches("token=0123abcd").count(), 1, "{cfg}");
        assert!(grub_cfg("a=\"b\"").is_err());
        assert!(grub_cfg("x;reboot").is_err());
        assert!(grub_cfg("$root").is_err());
        assert!(grub_cfg("").is_ok());
    }

    #[test]
    fn ovmf_lookup_order() {
        let share = unique_temp_dir("ovmf");
        fs::create_dir_all(share.join("OVMF")).unwrap();
        assert_eq!(find_ovmf_in(&share), None);
        for f in ["OVMF_CODE.fd", "OVMF_VARS.fd", "OVMF_CODE_4M.secboot.fd"] {
            fs::write(share.join("OVMF").join(f), b"").unwrap();
        }
        assert_eq!(
            find_ovmf_in(&share),
            Some(OvmfImage::Split {
                code: share.join("OVMF/OVMF_CODE.fd"),
                vars: share.join("OVMF/OVMF_VARS.fd"),
            })
        );
        // A code image without its variable store does not count.
        fs::write(share.join("OVMF/OVMF_CODE_4M.fd"), b"").unwrap();
        assert_eq!(
            find_ovmf_in(&share),
            Some(OvmfImage::Split {
                code: share.join("OVMF/OVMF_CODE.fd"),
                vars: share.join("OVMF/OVMF_VARS.fd"),
            })
        );
        fs::write(share.join("OVMF/OVMF_VARS_4M.fd"), b"").unwrap();
        assert!(matches!(
            find_ovmf_in(&share),
            Some(OvmfImage::Split { code, .. }) if code.ends_with("OVMF_CODE_4M.fd")
        ));
        fs::create_dir_all(share.join("ovmf")).unwrap();
        fs::write(share.join("ovmf/OVMF.fd"), b"").unwrap();
        assert_eq!(
            find_ovmf_in(&share),
            Some(OvmfImage::Combined(share.join("ovmf/OVMF.fd")))
        );
        fs::remove_dir_all(&share).unwrap();
    }

    #[test]
    fn check_passes_and_returns_report() {
        let outcome = Outcome {
            exit_code: Some(33),
            serial: "kernel ready\n".into(),
            timed_out: false,
            wall: std::time::Duration::from_millis(5),
            first_output: None,
            stderr: String::new(),
            command: "qemu".into(),
            quit_via_qmp: false,
        };
        let report = check("unit", &outcome, |o, r| {
            expect_exit(o, 33)?;
            ensure!(r.ready, "not ready");
            Ok(())
        });
        assert!(report.ready);
        let err = std::panic::catch_unwind(|| {
            check("unit", &outcome, |o, _| expect_exit(o, 35));
        })
        .unwrap_err();
        let message = err.downcast_ref::<String>().unwrap();
        assert!(message.contains("expected QEMU exit code 35"), "{message}");
        assert!(
            message.contains("serial output (13 bytes):\nkernel ready\n"),
            "{message}"
        );
    }
}
