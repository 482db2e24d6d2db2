//! Driving the kernel's serial console: an expect-style [`Session`] over QEMU's stdio serial
//! port (see [`Qemu::interact`](crate::Qemu::interact)).
//!
//! A reader thread passes QEMU's stdout on in chunks as they arrive. The session keeps every
//! byte (the raw capture becomes [`Outcome::serial`](crate::Outcome::serial)) and, alongside,
//! a cleaned copy without ANSI escape sequences and with `\r\n` turned into `\n`; patterns are
//! searched in, and [`Session::expect`] returns, the cleaned text. Other control characters
//! (the `\x08 \x08` that erases a character, say) are kept as they are.
//!
//! Keystrokes go to QEMU's stdin one byte at a time, [`CHAR_DELAY`] apart: the guest's 16550
//! has a 16-byte receive FIFO that the kernel drains by interrupt.

use std::io::{self, Read, Write};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::protocol::printable_log;

/// Default pause after each byte sent by [`Session::send`].
pub const CHAR_DELAY: Duration = Duration::from_millis(2);

/// At most this many bytes of received text are quoted in an error message (the end of it;
/// the whole serial log is in the [`Outcome`](crate::Outcome)).
const QUOTE_LIMIT: usize = 3000;

/// How long QEMU may take to exit after closing its stdout before the session stops waiting
/// for its exit status.
const REAP_GRACE: Duration = Duration::from_secs(2);

/// Reads `source` on a new thread and passes on each chunk as it arrives; the channel
/// disconnects at end of file (or on a read error).
pub(crate) fn spawn_reader<R: Read + Send + 'static>(
    mut source: R,
) -> (Receiver<Vec<u8>>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let handle = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match source.read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    (rx, handle)
}

/// Streaming filter: drops ANSI escape sequences (as [`crate::protocol::clean_line`] does:
/// CSI `ESC [ ... final`, charset selection `ESC ( x` / `ESC ) x`, other two-byte escapes)
/// and turns `\r\n` into `\n`. Works byte by byte, so sequences split across chunks are
/// handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Cleaner {
    /// Plain text.
    #[default]
    Text,
    /// After `ESC`.
    Escape,
    /// Inside `ESC [`, until a final byte in `@..=~`.
    Csi,
    /// After `ESC (` or `ESC )`: one more byte belongs to the sequence.
    Charset,
    /// After `\r`, which is dropped if `\n` follows.
    Cr,
}

impl Cleaner {
    /// Feeds `bytes`, appending the cleaned text to `out`.
    pub(crate) fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            self.byte(b, out);
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        *self = match *self {
            Self::Escape => match b {
                b'[' => Self::Csi,
                b'(' | b')' => Self::Charset,
                _ => Self::Text,
            },
            Self::Csi if (b'@'..=b'~').contains(&b) => Self::Text,
            Self::Csi => Self::Csi,
            Self::Charset => Self::Text,
            Self::Cr => {
                if b != b'\n' {
                    out.push(b'\r');
                }
                *self = Self::Text;
                return self.byte(b, out);
            }
            Self::Text => match b {
                0x1b => Self::Escape,
                b'\r' => Self::Cr,
                _ => {
                    out.push(b);
                    Self::Text
                }
            },
        };
    }

    /// End of input: a pending `\r` is text after all; an unfinished escape is dropped.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if *self == Self::Cr {
            out.push(b'\r');
        }
        *self = Self::Text;
    }
}

/// Byte offset of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// How a wait for output ended.
enum Waited {
    /// A chunk arrived.
    Data,
    /// The wait's own limit passed.
    Timeout,
    /// The run's overall timeout passed: QEMU has been killed.
    RunTimeout,
    /// QEMU closed its stdout: it has exited (or is exiting).
    Eof,
}

/// An interactive connection to QEMU's serial port, handed to the closure of
/// [`Qemu::interact`](crate::Qemu::interact).
///
/// All methods fail with a message that quotes the text received since the previous match.
/// The run's overall timeout ([`Qemu::timeout`](crate::Qemu::timeout)) caps every wait: when
/// it passes, QEMU is killed and the outcome says `timed_out`.
pub struct Session<'a> {
    rx: &'a Receiver<Vec<u8>>,
    input: &'a mut dyn Write,
    /// `None` when the session does not run QEMU (unit tests).
    child: Option<&'a mut Child>,
    start: Instant,
    deadline: Instant,
    char_delay: Duration,
    raw: Vec<u8>,
    first_output: Option<Duration>,
    cleaner: Cleaner,
    clean: Vec<u8>,
    /// End of the previous match in `clean`.
    consumed: usize,
    eof: bool,
    status: Option<ExitStatus>,
    /// When QEMU exited (or closed its stdout), from `start`.
    exited_at: Option<Duration>,
    killed: bool,
    timed_out: bool,
}

/// What the runner takes back from a finished session.
pub(crate) struct SessionEnd {
    pub(crate) raw: Vec<u8>,
    pub(crate) first_output: Option<Duration>,
    pub(crate) eof: bool,
    pub(crate) status: Option<ExitStatus>,
    pub(crate) exited_at: Option<Duration>,
    pub(crate) killed: bool,
    pub(crate) timed_out: bool,
}

impl<'a> Session<'a> {
    /// A session reading chunks from `rx`, writing keystrokes to `input`, and (if given)
    /// killing and reaping `child`. `start` is when QEMU was spawned; `deadline` is the end of
    /// the whole run.
    pub(crate) fn new(
        rx: &'a Receiver<Vec<u8>>,
        input: &'a mut dyn Write,
        child: Option<&'a mut Child>,
        start: Instant,
        deadline: Instant,
    ) -> Self {
        Self {
            rx,
            input,
            child,
            start,
            deadline,
            char_delay: CHAR_DELAY,
            raw: Vec::new(),
            first_output: None,
            cleaner: Cleaner::default(),
            clean: Vec::new(),
            consumed: 0,
            eof: false,
            status: None,
            exited_at: None,
            killed: false,
            timed_out: false,
        }
    }

    /// Waits for `pattern` in the (cleaned) serial output received after the previous match,
    /// for at most `timeout`. Returns the text from the end of the previous match up to and
    /// including this one, with escape sequences removed and `\r\n` as `\n`. Fails on timeout
    /// or if QEMU exits first, quoting what was received.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String, String> {
        let until = Instant::now() + timeout;
        let needle = pattern.as_bytes();
        let mut scan_from = self.consumed;
        loop {
            if let Some(pos) = find(&self.clean[scan_from..], needle) {
                let end = scan_from + pos + needle.len();
                let text = String::from_utf8_lossy(&self.clean[self.consumed..end]).into_owned();
                self.consumed = end;
                return Ok(text);
            }
            // Only the tail can still complete a match with more input.
            scan_from = self
                .clean
                .len()
                .saturating_sub(needle.len().saturating_sub(1))
                .max(self.consumed);
            let waited = if self.eof {
                Waited::Eof
            } else {
                self.wait(until)
            };
            match waited {
                Waited::Data => {}
                Waited::Timeout => {
                    return Err(format!(
                        "timed out after {:.1} s waiting for {pattern:?}{}",
                        timeout.as_secs_f64(),
                        self.since_match()
                    ));
                }
                Waited::RunTimeout => {
                    return Err(format!(
                        "the run's timeout ({:.1} s after start) expired while waiting for \
                         {pattern:?}; QEMU was killed{}",
                        self.deadline.duration_since(self.start).as_secs_f64(),
                        self.since_match()
                    ));
                }
                Waited::Eof => {
                    self.reap();
                    // A `\r` held back at the very end may complete the pattern.
                    if self.cleaner != Cleaner::Text {
                        self.cleaner.finish(&mut self.clean);
                        continue;
                    }
                    return Err(format!(
                        "QEMU exited ({}) before {pattern:?} appeared{}",
                        self.describe_status(),
                        self.since_match()
                    ));
                }
            }
        }
    }

    /// Sends `bytes` to the serial port (QEMU's stdin), one byte at a time with
    /// [`Session::set_char_delay`] (default [`CHAR_DELAY`]) after each. Type Enter as `\r`.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) -> Result<(), String> {
        for &b in bytes.as_ref() {
            if let Err(e) = self.input.write_all(&[b]).and_then(|()| self.input.flush()) {
                self.collect_pending();
                return Err(format!(
                    "cannot send {:?} to the serial port: {e}{}{}",
                    char::from(b),
                    if self.eof { " (QEMU has exited)" } else { "" },
                    self.since_match()
                ));
            }
            if !self.char_delay.is_zero() {
                thread::sleep(self.char_delay);
            }
        }
        Ok(())
    }

    /// Sends `line` followed by `\r` (Enter).
    pub fn send_line(&mut self, line: &str) -> Result<(), String> {
        self.send(line)?;
        self.send("\r")
    }

    /// Sets the pause after each byte sent.
    pub fn set_char_delay(&mut self, delay: Duration) {
        self.char_delay = delay;
    }

    /// Waits at most `timeout` for QEMU to exit, capturing its output meanwhile, and returns
    /// its exit code (`None` if it was killed by a signal, or in a session without a QEMU
    /// process). Fails if QEMU is still running then (it is not killed here: the runner kills
    /// it when the closure returns an error).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>, String> {
        let until = Instant::now() + timeout;
        while !self.eof {
            match self.wait(until) {
                Waited::Data | Waited::Eof => {}
                Waited::Timeout => {
                    return Err(format!(
                        "QEMU still running {:.1} s later{}",
                        timeout.as_secs_f64(),
                        self.since_match()
                    ));
                }
                Waited::RunTimeout => {
                    return Err(format!(
                        "the run's timeout ({:.1} s after start) expired while waiting for \
                         QEMU to exit; QEMU was killed{}",
                        self.deadline.duration_since(self.start).as_secs_f64(),
                        self.since_match()
                    ));
                }
            }
        }
        self.reap();
        if self.killed {
            return Err(format!("QEMU was killed{}", self.since_match()));
        }
        Ok(self.status.and_then(|s| s.code()))
    }

    /// Everything received so far, cleaned like [`Session::expect`]'s result.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.clean).into_owned()
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether QEMU has closed its stdout (exited) as far as the session has seen.
    pub fn exited(&self) -> bool {
        self.eof
    }

    /// Takes in one chunk, waiting until `until`; capped by the run's deadline unless QEMU
    /// has already been killed (then only its remaining output is collected).
    fn wait(&mut self, until: Instant) -> Waited {
        let now = Instant::now();
        let limit = if self.killed {
            until
        } else if now >= self.deadline {
            self.kill_for_timeout();
            return Waited::RunTimeout;
        } else {
            until.min(self.deadline)
        };
        match self.rx.recv_timeout(limit.saturating_duration_since(now)) {
            Ok(chunk) => {
                self.take(&chunk);
                Waited::Data
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.mark_eof();
                Waited::Eof
            }
            Err(RecvTimeoutError::Timeout) if !self.killed && Instant::now() >= self.deadline => {
                self.kill_for_timeout();
                Waited::RunTimeout
            }
            Err(RecvTimeoutError::Timeout) => Waited::Timeout,
        }
    }

    fn take(&mut self, chunk: &[u8]) {
        self.first_output
            .get_or_insert_with(|| self.start.elapsed());
        self.raw.extend_from_slice(chunk);
        self.cleaner.feed(chunk, &mut self.clean);
    }

    fn mark_eof(&mut self) {
        if !self.eof {
            self.eof = true;
            self.exited_at = Some(self.start.elapsed());
        }
    }

    /// Takes in whatever already arrived, without waiting.
    fn collect_pending(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(chunk) => self.take(&chunk),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.mark_eof();
                    break;
                }
            }
        }
    }

    fn kill_for_timeout(&mut self) {
        if !self.eof && !self.killed {
            self.timed_out = true;
            self.kill();
        }
    }

    /// Kills QEMU (if there is a process and it has not been reaped).
    pub(crate) fn kill(&mut self) {
        if self.status.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.killed = true;
            let _ = child.kill();
        }
    }

    /// After end of file: collects QEMU's exit status, waiting up to [`REAP_GRACE`].
    fn reap(&mut self) {
        if self.status.is_some() {
            return;
        }
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let until = Instant::now() + REAP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    return;
                }
                Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(10)),
                _ => return,
            }
        }
    }

    fn describe_status(&self) -> String {
        match (self.status, self.killed) {
            (_, true) => "killed".to_owned(),
            (Some(s), _) => match s.code() {
                Some(c) => format!("exit code {c}"),
                None => s.to_string(),
            },
            (None, _) if self.child.is_none() => "end of output".to_owned(),
            (None, _) => "exit status unknown".to_owned(),
        }
    }

    /// `"; received since the last match (N bytes): ..."`, the end of it if long.
    fn since_match(&self) -> String {
        let text = &self.clean[self.consumed..];
        if text.is_empty() {
            return "; nothing received since the last match".to_owned();
        }
        let mut start = text.len().saturating_sub(QUOTE_LIMIT);
        while start < text.len() && (text[start] & 0xc0) == 0x80 {
            start += 1;
        }
        let quoted = printable_log(&String::from_utf8_lossy(&text[start..]));
        format!(
            "; received since the last match ({} bytes{}):\n{}{}----- end of received text",
            text.len(),
            if start > 0 {
                format!(", last {} shown", text.len() - start)
            } else {
                String::new()
            },
            quoted,
            if quoted.ends_with('\n') { "" } else { "\n" },
        )
    }

    /// Ends the session: if QEMU is still running, waits for it to exit until the run's
    /// deadline (killing it then), or kills it at once if `kill_now`; then drains its output.
    pub(crate) fn finish(mut self, kill_now: bool) -> SessionEnd {
        if kill_now && !self.eof {
            self.kill();
        }
        // After a kill, the pipe closes promptly; otherwise the deadline bounds the wait.
        while !self.eof {
            let until = if self.killed {
                Instant::now() + Duration::from_millis(100)
            } else {
                self.deadline
            };
            match self.wait(until) {
                Waited::Data | Waited::Eof => {}
                // Without a process (unit tests) there is nothing to kill or wait for.
                Waited::RunTimeout if self.child.is_none() => break,
                Waited::RunTimeout => {}
                Waited::Timeout => {
                    if self.killed
                        && let Some(child) = self.child.as_mut()
                        && child.try_wait().is_ok_and(|s| s.is_some())
                    {
                        // Killed and gone; the runner drains what is left in the pipe.
                        break;
                    }
                }
            }
        }
        self.cleaner.finish(&mut self.clean);
        SessionEnd {
            raw: self.raw,
            first_output: self.first_output,
            eof: self.eof,
            status: self.status,
            exited_at: self.exited_at,
            killed: self.killed,
            timed_out: self.timed_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A reader that returns scripted chunks, each after a pause, then end of file.
    struct FakeSerial {
        chunks: VecDeque<(Duration, Vec<u8>)>,
    }

    impl FakeSerial {
        fn new(chunks: &[(u64, &[u8])]) -> Self {
            Self {
                chunks: chunks
                    .iter()
                    .map(|&(ms, bytes)| (Duration::from_millis(ms), bytes.to_vec()))
                    .collect(),
            }
        }
    }

    impl Read for FakeSerial {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((pause, mut chunk)) = self.chunks.pop_front() else {
                return Ok(0);
            };
            thread::sleep(pause);
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                chunk.drain(..n);
                self.chunks.push_front((Duration::ZERO, chunk));
            }
            Ok(n)
        }
    }

    /// A reader that never returns (QEMU that stays quiet); its thread is left behind.
    struct Silent;

    impl Read for Silent {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            loop {
                thread::sleep(Duration::from_secs(3600));
            }
        }
    }

    /// Runs `script` against a fake serial port; returns the script's result, what it sent
    /// and the session's end.
    fn with_fake<T>(
        serial: impl Read + Send + 'static,
        run_timeout: Duration,
        script: impl FnOnce(&mut Session<'_>) -> T,
    ) -> (T, Vec<u8>, SessionEnd) {
        let (rx, _reader) = spawn_reader(serial);
        let mut sent = Vec::new();
        let start = Instant::now();
        let mut session = Session::new(&rx, &mut sent, None, start, start + run_timeout);
        session.set_char_delay(Duration::ZERO);
        let result = script(&mut session);
        let end = session.finish(false);
        (result, sent, end)
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn cleaner_strips_escapes_across_chunks() {
        let mut c = Cleaner::default();
        let mut out = Vec::new();
        for chunk in [
            &b"\x1b[2J\x1b[01;0"[..],
            b"1Hkernel\x1b",
            b"[0m ready\r",
            b"\nab\x1b(B",
            b"c\rd\r",
        ] {
            c.feed(chunk, &mut out);
        }
        assert_eq!(out, b"kernel ready\nabc\rd");
        c.finish(&mut out);
        assert_eq!(out, b"kernel ready\nabc\rd\r");
        // Backspaces are not escape sequences: kept.
        let mut out = Vec::new();
        Cleaner::default().feed(b"xy\x08 \x08z\x1b[K", &mut out);
        assert_eq!(out, b"xy\x08 \x08z");
    }

    #[test]
    fn expect_returns_text_since_previous_match() {
        let serial = FakeSerial::new(&[
            (0, b"boot\r\nkernel re"),
            (20, b"ady\r\nkernel> "),
            (20, b"help\r\nhelp   this list\r\nmem    frames\r\nker"),
            (20, b"nel> \x1b[1mbold\x1b[0m\r\n"),
        ]);
        let (result, _, end) = with_fake(serial, 10 * SECOND, |s| {
            let a = s.expect("kernel ready", SECOND)?;
            let b = s.expect("kernel> ", SECOND)?;
            let c = s.expect("kernel> ", SECOND)?;
            let d = s.expect("bold\n", SECOND)?;
            Ok::<_, String>((a, b, c, d))
        });
        let (a, b, c, d) = result.unwrap();
        assert_eq!(a, "boot\nkernel ready");
        assert_eq!(b, "\nkernel> ");
        assert_eq!(c, "help\nhelp   this list\nmem    frames\nkernel> ");
        assert_eq!(d, "bold\n");
        assert!(end.eof && !end.killed && !end.timed_out);
        assert!(end.first_output.is_some());
        // The raw capture keeps everything.
        assert!(end.raw.ends_with(b"\x1b[1mbold\x1b[0m\r\n"));
    }

    #[test]
    fn pattern_split_by_escape_sequence_matches() {
        let serial = FakeSerial::new(&[(0, b"ker\x1b[0"), (10, b"mnel> ")]);
        let (result, _, _) = with_fake(serial, 10 * SECOND, |s| s.expect("kernel> ", SECOND));
        assert_eq!(result.unwrap(), "kernel> ");
    }

    #[test]
    fn expect_fails_when_output_ends_first() {
        let serial = FakeSerial::new(&[(0, b"kernel ready\r\npanicked\x07\r\n")]);
        let (result, _, end) = with_fake(serial, 10 * SECOND, |s| {
            s.expect("ready", SECOND)?;
            s.expect("kernel> ", SECOND)
        });
        let err = result.unwrap_err();
        assert!(
            err.starts_with("QEMU exited (end of output) before \"kernel> \" appeared"),
            "{err}"
        );
        assert!(
            err.contains("received since the last match (11 bytes):\n\npanicked\\x07\n"),
            "{err}"
        );
        assert!(end.eof);
    }

    #[test]
    fn expect_times_out_and_shows_what_came() {
        let serial = FakeSerial::new(&[(0, b"kernel> "), (0, b"hel"), (1000, b"p\r\n")]);
        let started = Instant::now();
        let (result, _, _) = with_fake(serial, 10 * SECOND, |s| {
            s.expect("kernel> ", SECOND)?;
            s.expect("help\n", Duration::from_millis(200))
        });
        let err = result.unwrap_err();
        assert!(
            err.starts_with("timed out after 0.2 s waiting for \"help\\n\""),
            "{err}"
        );
        assert!(err.contains("(3 bytes):\nhel\n"), "{err}");
        // `finish` then waits for the rest (end of file).
        assert!(started.elapsed() >= SECOND);
    }

    #[test]
    fn run_timeout_caps_expect() {
        let started = Instant::now();
        let (result, _, end) = with_fake(Silent, Duration::from_millis(300), |s| {
            s.expect("kernel> ", 10 * SECOND)
        });
        let err = result.unwrap_err();
        assert!(err.contains("the run's timeout"), "{err}");
        assert!(
            err.contains("nothing received since the last match"),
            "{err}"
        );
        assert!(end.timed_out);
        assert!(started.elapsed() < 5 * SECOND);
    }

    #[test]
    fn send_writes_bytes_and_wait_exit_sees_the_end() {
        let serial = FakeSerial::new(&[(0, b"kernel> "), (50, b"poweroff\r\n")]);
        let (result, sent, _) = with_fake(serial, 10 * SECOND, |s| {
            s.expect("kernel> ", SECOND)?;
            s.send_line("poweroff")?;
            s.send([0x7fu8, 0x15])?;
            let code = s.wait_exit(SECOND)?;
            Ok::<_, String>((code, s.received(), s.exited()))
        });
        assert_eq!(
            result.unwrap(),
            (None, "kernel> poweroff\n".to_owned(), true)
        );
        assert_eq!(sent, b"poweroff\r\x7f\x15");
    }

    #[test]
    fn wait_exit_times_out_while_output_continues() {
        let serial = FakeSerial::new(&[(0, b"a"), (100, b"b"), (100, b"c"), (600, b"d")]);
        let (result, _, _) = with_fake(serial, 10 * SECOND, |s| {
            s.wait_exit(Duration::from_millis(400))
        });
        let err = result.unwrap_err();
        assert!(err.starts_with("QEMU still running 0.4 s later"), "{err}");
        assert!(err.contains("(3 bytes):\nabc"), "{err}");
    }

    #[test]
    fn empty_pattern_matches_at_once() {
        let serial = FakeSerial::new(&[(0, b"x")]);
        let (result, _, _) = with_fake(serial, 10 * SECOND, |s| s.expect("", SECOND));
        assert_eq!(result.unwrap(), "");
    }
}
