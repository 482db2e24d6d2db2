//! Running QEMU: a builder for the command line and a runner that captures the serial port,
//! enforces a timeout and reports the exit code.
//!
//! Every run uses `-display none -serial stdio -monitor none -no-reboot -device
//! isa-debug-exit,iobase=0xf4,iosize=0x04` (`-no-reboot` can be left out with
//! [`Qemu::no_reboot`]). The kernel ends a run by writing to port 0xf4: QEMU then exits with
//! `(value << 1) | 1`, so [`EXIT_SUCCESS`] (0x10) gives exit code 33 and [`EXIT_FAILURE`]
//! (0x11) gives 35.
//!
//! Four ways to run: [`Qemu::run`] until QEMU exits, [`Qemu::run_until`] a serial marker (then
//! QEMU is killed), [`Qemu::run_until_qmp`], which adds `-qmp
//! unix:<scratch>/qmp.sock,server=on,wait=off`, and at the marker connects a [`Qmp`] client,
//! runs the caller's commands and quits QEMU through QMP, and [`Qemu::interact`], which pipes
//! QEMU's stdin so that a [`Session`] can type on the serial console and wait for answers. The
//! serial port is captured the whole time and the timeout applies to all of it.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::thread;
use std::time::{Duration, Instant};

use crate::protocol::printable_log;
use crate::qmp::Qmp;
use crate::session::{Session, spawn_reader};
use crate::{OvmfImage, find_ovmf, unique_temp_dir};

/// Value the kernel writes to port 0xf4 on success.
pub const EXIT_SUCCESS: u32 = 0x10;
/// Value the kernel writes to port 0xf4 on failure.
pub const EXIT_FAILURE: u32 = 0x11;
/// QEMU's exit code after the kernel wrote [`EXIT_SUCCESS`].
pub const QEMU_EXIT_SUCCESS: i32 = ((EXIT_SUCCESS << 1) | 1) as i32;
/// QEMU's exit code after the kernel wrote [`EXIT_FAILURE`].
pub const QEMU_EXIT_FAILURE: i32 = ((EXIT_FAILURE << 1) | 1) as i32;

/// Default limit for one QEMU run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long QEMU may take to exit after a QMP `quit` before it is killed.
const QUIT_GRACE: Duration = Duration::from_secs(10);

/// How long QEMU may take to exit on its own after a failed QMP session before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// How long connecting to QMP (and the greeting and handshake) may take.
const QMP_CONNECT: Duration = Duration::from_secs(10);

/// File name of the QMP socket in the run's scratch directory.
const QMP_SOCKET: &str = "qmp.sock";

/// The QEMU binary, overridable with the `QEMU` environment variable.
pub fn qemu_program() -> OsString {
    std::env::var_os("QEMU").unwrap_or_else(|| "qemu-system-x86_64".into())
}

/// Whether the QEMU binary can be started (`--version` succeeds).
pub fn qemu_available() -> bool {
    Command::new(qemu_program())
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `-machine` type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// `q35`: PCIe, MCFG/ECAM.
    Q35,
    /// `pc`: i440fx, legacy PCI, no MCFG.
    Pc,
    /// `q35,acpi=off`: SeaBIOS's own ACPI 1.0 tables instead of QEMU's (a 116-byte FADT).
    Q35AcpiOff,
    /// `q35,i8042=off`: no PS/2 controller, as on boards without legacy emulation.
    Q35NoI8042,
    /// `microvm`: no PCI, no HPET, hardware-reduced ACPI (no PM timer), a PIT without the
    /// port 0x61 gate; boots only with `-kernel` (PVH).
    Microvm,
    /// `microvm,pcie=on`: a PCIe host bridge (QEMU's GPEX) whose ECAM window no MCFG
    /// describes; its DSDT gives it through the host bridge's `_CBA`.
    MicrovmPcie,
}

impl Machine {
    fn as_str(self) -> &'static str {
        match self {
            Self::Q35 => "q35",
            Self::Pc => "pc",
            Self::Q35AcpiOff => "q35,acpi=off",
            Self::Q35NoI8042 => "q35,i8042=off",
            Self::Microvm => "microvm",
            Self::MicrovmPcie => "microvm,pcie=on",
        }
    }
}

/// Firmware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's default SeaBIOS.
    Bios,
    /// UEFI, with the OVMF image found by [`find_ovmf`]; adds `-net none` (the iPXE option
    /// ROM costs about two seconds).
    Ovmf,
    /// UEFI with a given OVMF image; also adds `-net none`.
    OvmfImage(OvmfImage),
}

/// What to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// `-kernel <elf> -append <cmdline>` (PVH).
    Kernel {
        /// The kernel ELF.
        elf: PathBuf,
        /// The command line.
        append: String,
    },
    /// `-cdrom <iso>`.
    Cdrom(PathBuf),
}

/// A QEMU invocation.
#[derive(Clone, Debug)]
pub struct Qemu {
    machine: Machine,
    memory_mib: u32,
    boot: Boot,
    firmware: Firmware,
    extra: Vec<OsString>,
    timeout: Duration,
    no_reboot: bool,
}

/// What happened in one run.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// QEMU's exit code; `None` if it was killed (timeout, or stopped at a marker).
    pub exit_code: Option<i32>,
    /// Everything written to the serial port (lossy UTF-8).
    pub serial: String,
    /// Whether the run hit the timeout and QEMU was killed.
    pub timed_out: bool,
    /// Time from spawning QEMU until it exited.
    pub wall: Duration,
    /// Time from spawning QEMU until the first byte on the serial port (firmware, loader or
    /// kernel), if any: separates QEMU's own start-up from guest time.
    pub first_output: Option<Duration>,
    /// QEMU's own stderr (errors about the command line, the kernel image, ...).
    pub stderr: String,
    /// The command line, for logs.
    pub command: String,
    /// Whether the runner ended the run with a QMP `quit` (see [`Qemu::run_until_qmp`]); QEMU
    /// then exits with code 0.
    pub quit_via_qmp: bool,
}

/// What [`Qemu::run_until_qmp`] returns.
#[derive(Debug)]
pub struct QmpRun<T> {
    /// How the run went; the serial log includes everything printed until QEMU exited.
    pub outcome: Outcome,
    /// Time from spawning QEMU to the arrival of the marker, `None` if it never came.
    pub marker_at: Option<Duration>,
    /// What the QMP session returned (`Err` also when connecting failed); `None` if the marker
    /// never came, so the session did not run.
    pub session: Option<Result<T, String>>,
}

impl Outcome {
    /// Whether QEMU exited with 33 (the kernel wrote [`EXIT_SUCCESS`]).
    pub fn success(&self) -> bool {
        self.exit_code == Some(QEMU_EXIT_SUCCESS)
    }

    /// A human-readable description of how the run ended.
    pub fn describe_exit(&self) -> String {
        match self.exit_code {
            _ if self.timed_out => format!("timed out after {:.1} s", self.wall.as_secs_f64()),
            Some(0) if self.quit_via_qmp => "quit by the runner through QMP".to_owned(),
            Some(QEMU_EXIT_SUCCESS) => "exit code 33 (kernel reported success)".to_owned(),
            Some(QEMU_EXIT_FAILURE) => "exit code 35 (kernel reported failure)".to_owned(),
            Some(0) => "exit code 0 (QEMU quit on its own: triple fault with -no-reboot, \
                        or shutdown)"
                .to_owned(),
            Some(c) => format!("exit code {c}"),
            None => "killed".to_owned(),
        }
    }

    /// The full log for a failure report: command, how it ended, serial output and QEMU's
    /// stderr.
    pub fn log(&self) -> String {
        let serial = printable_log(&self.serial);
        let stderr = printable_log(&self.stderr);
        format!(
            "----- qemu: {}\n----- {} after {:.3} s\n----- serial output ({} bytes):\n{}{}\
             ----- qemu stderr:\n{}{}----- end of log\n",
            self.command,
            self.describe_exit(),
            self.wall.as_secs_f64(),
            self.serial.len(),
            serial,
            if serial.ends_with('\n') || serial.is_empty() {
                ""
            } else {
                "\n"
            },
            stderr,
            if stderr.ends_with('\n') || stderr.is_empty() {
                ""
            } else {
                "\n"
            },
        )
    }
}

impl Qemu {
    fn new(boot: Boot) -> Self {
        Self {
            machine: Machine::Q35,
            memory_mib: 512,
            boot,
            firmware: Firmware::Bios,
            extra: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            no_reboot: true,
        }
    }

    /// Boots `elf` with `-kernel` (PVH) and `-append cmdline`. Defaults: q35, 512 MiB, SeaBIOS,
    /// [`DEFAULT_TIMEOUT`].
    pub fn kernel(elf: impl Into<PathBuf>, cmdline: impl Into<String>) -> Self {
        Self::new(Boot::Kernel {
            elf: elf.into(),
            append: cmdline.into(),
        })
    }

    /// Boots an ISO image with `-cdrom`.
    pub fn cdrom(iso: impl Into<PathBuf>) -> Self {
        Self::new(Boot::Cdrom(iso.into()))
    }

    /// Sets the machine type.
    pub fn machine(mut self, machine: Machine) -> Self {
        self.machine = machine;
        self
    }

    /// Sets the memory size (`-m <n>M`).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Memory size in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mib) << 20
    }

    /// Sets the firmware.
    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }

    /// Adds one extra QEMU argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.extra.push(arg.as_ref().to_owned());
        self
    }

    /// Adds extra QEMU arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.extra
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets the timeout after which QEMU is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether to pass `-no-reboot` (the default): a guest reset (triple fault, reboot) then
    /// makes QEMU exit with code 0. With `false` QEMU resets the machine and boots again.
    pub fn no_reboot(mut self, no_reboot: bool) -> Self {
        self.no_reboot = no_reboot;
        self
    }

    /// The full argument list. `scratch` is a directory for a writable copy of the OVMF
    /// variable store when split OVMF images are used.
    fn arguments(&self, scratch: &Path) -> io::Result<Vec<OsString>> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &dyn AsRef<OsStr>| a.push(s.as_ref().to_owned());
        push(&"-machine");
        push(&self.machine.as_str());
        push(&"-m");
        push(&format!("{}M", self.memory_mib));
        let ovmf = match &self.firmware {
            Firmware::Bios => None,
            Firmware::Ovmf => Some(find_ovmf().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "OVMF not found (/usr/share/ovmf/OVMF.fd or /usr/share/OVMF/OVMF_CODE*.fd); \
                     install the `ovmf` package",
                )
            })?),
            Firmware::OvmfImage(image) => Some(image.clone()),
        };
        match &ovmf {
            None => {}
            Some(OvmfImage::Combined(fd)) => {
                push(&"-bios");
                push(fd);
            }
            Some(OvmfImage::Split { code, vars }) => {
                let vars_copy = scratch.join("OVMF_VARS.fd");
                std::fs::create_dir_all(scratch)?;
                std::fs::copy(vars, &vars_copy)?;
                let mut code_drive =
                    OsString::from("if=pflash,format=raw,unit=0,readonly=on,file=");
                code_drive.push(code);
                let mut vars_drive = OsString::from("if=pflash,format=raw,unit=1,file=");
                vars_drive.push(&vars_copy);
                push(&"-drive");
                push(&code_drive);
                push(&"-drive");
                push(&vars_drive);
            }
        }
        if ovmf.is_some() {
            push(&"-net");
            push(&"none");
        }
        match &self.boot {
            Boot::Kernel { elf, append } => {
                push(&"-kernel");
                push(elf);
                push(&"-append");
                push(append);
            }
            Boot::Cdrom(iso) => {
                push(&"-cdrom");
                push(iso);
            }
        }
        for fixed in [
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ] {
            if fixed == "-no-reboot" && !self.no_reboot {
                continue;
            }
            push(&fixed);
        }
        for extra in &self.extra {
            push(extra);
        }
        Ok(a)
    }

    /// Runs QEMU until it exits or the timeout expires.
    pub fn run(&self) -> io::Result<Outcome> {
        self.run_inner(None).map(|(outcome, _)| outcome)
    }

    /// Runs QEMU until `marker` appears on the serial port, then kills it. Returns the outcome
    /// and the time from spawning QEMU to the arrival of the marker (`None` if QEMU exited or
    /// timed out first).
    pub fn run_until(&self, marker: &str) -> io::Result<(Outcome, Option<Duration>)> {
        self.run_inner(Some((marker, AtMarker::Kill)))
    }

    /// Runs QEMU with a QMP socket until `marker` appears on the serial port, then connects to
    /// QMP (handshake done), calls `session`, and quits QEMU with the QMP `quit` command
    /// (killing it if it does not exit within a few seconds). The serial port keeps being
    /// captured throughout, and the timeout covers the whole run, QMP included.
    pub fn run_until_qmp<T>(
        &self,
        marker: &str,
        session: impl FnOnce(&mut Qmp) -> Result<T, String>,
    ) -> io::Result<QmpRun<T>> {
        let mut result = None;
        let (outcome, marker_at) = {
            let mut session = Some(session);
            let mut callback = |qmp: Result<&mut Qmp, String>| {
                if let Some(session) = session.take() {
                    result = Some(qmp.and_then(session));
                }
            };
            self.run_inner(Some((marker, AtMarker::Qmp(&mut callback))))?
        };
        Ok(QmpRun {
            outcome,
            marker_at,
            session: result,
        })
    }

    fn run_inner(
        &self,
        marker: Option<(&str, AtMarker<'_>)>,
    ) -> io::Result<(Outcome, Option<Duration>)> {
        let scratch = unique_temp_dir("qemu-run");
        let result = self.run_in(marker, &scratch);
        // Exists when a split OVMF variable store was copied or a QMP socket was made.
        let _ = std::fs::remove_dir_all(&scratch);
        result
    }

    fn run_in(
        &self,
        marker: Option<(&str, AtMarker<'_>)>,
        scratch: &Path,
    ) -> io::Result<(Outcome, Option<Duration>)> {
        let program = qemu_program();
        let mut args = self.arguments(scratch)?;
        let (marker, mut action) = match marker {
            Some((m, a)) => (Some(m), Some(a)),
            None => (None, None),
        };
        let qmp_socket = scratch.join(QMP_SOCKET);
        if matches!(action, Some(AtMarker::Qmp(_))) {
            std::fs::create_dir_all(scratch)?;
            let mut spec = OsString::from("unix:");
            spec.push(&qmp_socket);
            spec.push(",server=on,wait=off");
            args.push("-qmp".into());
            args.push(spec);
        }
        let command = command_line(&program, &args);
        let start = Instant::now();
        let mut child = spawn(&program, &args, Stdio::null())?;
        let child = &mut child.0;

        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let (rx, reader) = spawn_reader(stdout);
        let stderr_reader = spawn_stderr_reader(stderr);

        let deadline = start + self.timeout;
        let mut serial = Vec::new();
        let mut marker_at = None;
        let mut first_output = None;
        let mut timed_out = false;
        let mut killed = false;
        // Set after the QMP session: QEMU must exit before this instant.
        let mut quit_deadline: Option<Instant> = None;
        let mut quit_sent = false;
        loop {
            let now = Instant::now();
            if !killed && now >= deadline {
                timed_out = true;
                killed = true;
                let _ = child.kill();
            }
            if !killed && quit_deadline.is_some_and(|q| now >= q) {
                killed = true;
                let _ = child.kill();
            }
            // After a kill, keep draining until EOF (bounded by the pipe closing on exit).
            let wait = if killed {
                Duration::from_millis(100)
            } else if let Some(q) = quit_deadline {
                // QEMU closes stdout only when it exits: poll for the exit meanwhile.
                if child.try_wait()?.is_some() {
                    break;
                }
                q.min(deadline)
                    .saturating_duration_since(now)
                    .min(Duration::from_millis(50))
            } else {
                deadline.saturating_duration_since(now)
            };
            match rx.recv_timeout(wait) {
                Ok(chunk) => {
                    first_output.get_or_insert_with(|| start.elapsed());
                    let scan_from = serial.len().saturating_sub(marker.map_or(0, str::len));
                    serial.extend_from_slice(&chunk);
                    if let Some(m) = marker
                        && marker_at.is_none()
                        && contains(&serial[scan_from..], m.as_bytes())
                    {
                        marker_at = Some(start.elapsed());
                        match action.take() {
                            Some(AtMarker::Qmp(session)) => {
                                // QEMU creates the socket before the guest runs: if it is not
                                // there soon, QEMU has exited; do not wait for the deadline.
                                let connect_by = deadline.min(Instant::now() + QMP_CONNECT);
                                let mut qmp = Qmp::connect(&qmp_socket, connect_by)
                                    .map(|q| q.with_deadline(deadline));
                                session(qmp.as_mut().map_err(|e| e.clone()));
                                // Without a working connection (or if `quit` fails), kill.
                                let quit = qmp.and_then(|mut q| q.quit());
                                let now = Instant::now();
                                if quit.is_ok() {
                                    quit_sent = true;
                                    quit_deadline = Some(now + QUIT_GRACE);
                                } else if now < deadline {
                                    // QEMU may be exiting on its own (the connection failed
                                    // because of that): give it a moment to keep its exit
                                    // code, then kill it.
                                    quit_deadline = Some(now + EXIT_GRACE);
                                } else {
                                    timed_out = true;
                                    killed = true;
                                    let _ = child.kill();
                                }
                            }
                            Some(AtMarker::Kill) | None => {
                                killed = true;
                                let _ = child.kill();
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if (killed || quit_deadline.is_some()) && child.try_wait()?.is_some() {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait()?;
        let wall = start.elapsed();
        let _ = reader.join();
        let stderr = stderr_reader.join().unwrap_or_default();
        // After the QMP quit QEMU exits on its own; stdout may still hold serial output that
        // the reader has not passed on yet.
        while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            first_output.get_or_insert_with(|| start.elapsed());
            serial.extend_from_slice(&chunk);
        }
        let outcome = Outcome {
            exit_code: if killed { None } else { status.code() },
            serial: String::from_utf8_lossy(&serial).into_owned(),
            timed_out,
            wall,
            first_output,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            command,
            quit_via_qmp: quit_sent && !killed,
        };
        Ok((outcome, marker_at))
    }
}

impl Qemu {
    /// Runs QEMU with its stdin piped to the serial port and calls `script` with a
    /// [`Session`] to drive the kernel's console: [`Session::expect`] waits for text,
    /// [`Session::send`] types, [`Session::wait_exit`] waits for QEMU to exit.
    ///
    /// When `script` returns `Ok`, the run goes on as with [`Qemu::run`]: until QEMU exits or
    /// the timeout kills it (so a script that ends with `poweroff` gets QEMU's exit code in the
    /// outcome). When it returns `Err`, QEMU is killed at once. The serial port is captured the
    /// whole time, and the timeout covers the whole run, `script` included.
    pub fn interact<T>(
        &self,
        script: impl FnOnce(&mut Session<'_>) -> Result<T, String>,
    ) -> io::Result<InteractRun<T>> {
        let scratch = unique_temp_dir("qemu-run");
        let result = self.interact_in(&scratch, script);
        // Exists when a split OVMF variable store was copied.
        let _ = std::fs::remove_dir_all(&scratch);
        result
    }

    fn interact_in<T>(
        &self,
        scratch: &Path,
        script: impl FnOnce(&mut Session<'_>) -> Result<T, String>,
    ) -> io::Result<InteractRun<T>> {
        let program = qemu_program();
        let args = self.arguments(scratch)?;
        let command = command_line(&program, &args);
        let start = Instant::now();
        let mut guard = spawn(&program, &args, Stdio::piped())?;
        let child = &mut guard.0;
        let mut stdin = child.stdin.take().expect("stdin piped");
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let (rx, reader) = spawn_reader(stdout);
        let stderr_reader = spawn_stderr_reader(stderr);
        let deadline = start + self.timeout;

        let mut session = Session::new(&rx, &mut stdin, Some(&mut *child), start, deadline);
        let result = script(&mut session);
        let end = session.finish(result.is_err());
        let mut serial = end.raw;
        let mut first_output = end.first_output;
        // Reaped by the session, or (killed, or its stdout closed) exiting now.
        let status = match end.status {
            Some(status) => status,
            None => child.wait()?,
        };
        let wall = end.exited_at.unwrap_or_else(|| start.elapsed());
        // Kept open until QEMU is gone: QEMU's stdio backend is not to see end of file.
        drop(stdin);
        let _ = reader.join();
        let stderr = stderr_reader.join().unwrap_or_default();
        if !end.eof {
            while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
                first_output.get_or_insert_with(|| start.elapsed());
                serial.extend_from_slice(&chunk);
            }
        }
        let outcome = Outcome {
            exit_code: if end.killed { None } else { status.code() },
            serial: String::from_utf8_lossy(&serial).into_owned(),
            timed_out: end.timed_out,
            wall,
            first_output,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            command,
            quit_via_qmp: false,
        };
        Ok(InteractRun { outcome, result })
    }
}

/// What [`Qemu::interact`] returns.
#[derive(Debug)]
pub struct InteractRun<T> {
    /// How the run went; the serial log holds everything QEMU printed, echoed keystrokes and
    /// escape sequences included.
    pub outcome: Outcome,
    /// What the script returned.
    pub result: Result<T, String>,
}

/// The command line as one string, quoted for a shell, for logs.
fn command_line(program: &OsStr, args: &[OsString]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts QEMU with stdout and stderr piped and the given stdin.
fn spawn(program: &OsStr, args: &[OsString], stdin: Stdio) -> io::Result<ChildGuard> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().map(ChildGuard).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot start {}: {e}", program.to_string_lossy()),
        )
    })
}

/// Collects QEMU's stderr on a thread.
fn spawn_stderr_reader(mut stderr: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    })
}

/// What to do when the marker arrives.
enum AtMarker<'a> {
    /// Kill QEMU.
    Kill,
    /// Connect to QMP, pass the connection (or why connecting failed) to the callback, then
    /// quit QEMU through QMP.
    Qmp(&'a mut dyn FnMut(Result<&mut Qmp, String>)),
}

/// Kills and reaps QEMU if the runner returns early (error, panic); harmless after it exited.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Quotes an argument for display as a shell command.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(QEMU_EXIT_SUCCESS, 33);
        assert_eq!(QEMU_EXIT_FAILURE, 35);
    }

    #[test]
    fn command_line_pvh() {
        let q = Qemu::kernel("/k.elf", "test=boot token=1")
            .machine(Machine::Pc)
            .memory_mib(256)
            .arg("-smp")
            .arg("2");
        let args: Vec<String> = q
            .arguments(Path::new("/nonexistent"))
            .unwrap()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "-machine pc -m 256M -kernel /k.elf -append test=boot token=1 -display none \
             -serial stdio -monitor none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -smp 2"
        );
        assert_eq!(q.memory_bytes(), 256 << 20);
    }

    #[test]
    fn reboot_allowed() {
        let q = Qemu::kernel("/k.elf", "").no_reboot(false);
        let args: Vec<String> = q
            .arguments(Path::new("/nonexistent"))
            .unwrap()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args.iter().any(|a| a == "-no-reboot"), "{args:?}");
        assert!(
            args.iter()
                .any(|a| a == "isa-debug-exit,iobase=0xf4,iosize=0x04")
        );
        assert_eq!(
            command_line(
                OsStr::new("qemu"),
                &[OsString::from("-append"), OsString::from("a b")]
            ),
            "qemu -append 'a b'"
        );
    }

    #[test]
    fn command_line_ovmf_split() {
        let dir = unique_temp_dir("unit");
        std::fs::create_dir_all(&dir).unwrap();
        let vars = dir.join("VARS.fd");
        std::fs::write(&vars, b"vars").unwrap();
        let q = Qemu::cdrom("/x.iso").firmware(Firmware::OvmfImage(OvmfImage::Split {
            code: "/CODE.fd".into(),
            vars,
        }));
        let scratch = dir.join("scratch");
        let args: Vec<String> = q
            .arguments(&scratch)
            .unwrap()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.starts_with(&format!(
                "-machine q35 -m 512M -drive if=pflash,format=raw,unit=0,readonly=on,\
                 file=/CODE.fd -drive if=pflash,format=raw,unit=1,file={} -net none -cdrom /x.iso ",
                scratch.join("OVMF_VARS.fd").display()
            )),
            "{joined}"
        );
        assert_eq!(
            std::fs::read(scratch.join("OVMF_VARS.fd")).unwrap(),
            b"vars"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("-m"), "-m");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn marker_search() {
        assert!(contains(b"abc kernel ready\n", b"kernel ready"));
        assert!(!contains(b"kernel rea", b"kernel ready"));
    }
}
