//! Looking at the screen and typing: a QEMU run driven only through QMP, for boards without
//! a serial cable.
//!
//! [`ScreenVm::boot`] starts a GRUB ISO on q35 (SeaBIOS or OVMF) with the standard VGA
//! (`-vga std`, which gives GRUB a linear framebuffer on both), no display window, a QMP
//! socket, and COM1 either absent (`-serial none`, a board without a serial port) or written
//! to a file. The caller then takes screenshots (QMP `screendump`, a binary PPM that
//! [`Screenshot::parse_ppm`] decodes) and types on the PS/2 keyboard (QMP `send-key`, one key
//! at a time, as a person would). Dropping the VM kills QEMU and removes its directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{Firmware, Qmp, find_ovmf, qemu_program, unique_temp_dir};

/// A screenshot: `width` x `height` RGB pixels, row by row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screenshot {
    /// Pixels per line.
    pub width: usize,
    /// Lines.
    pub height: usize,
    /// `width * height` pixels, each `[r, g, b]`.
    pub pixels: Vec<[u8; 3]>,
}

impl Screenshot {
    /// Decodes a binary PPM (`P6`, maximum value 255) as QEMU's `screendump` writes it.
    pub fn parse_ppm(bytes: &[u8]) -> Result<Screenshot, String> {
        // Header: "P6" <ws> width <ws> height <ws> maxval <one ws> data; `#` comments.
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            while at < bytes.len() && (bytes[at].is_ascii_whitespace() || bytes[at] == b'#') {
                if bytes[at] == b'#' {
                    while at < bytes.len() && bytes[at] != b'\n' {
                        at += 1;
                    }
                }
                at += 1;
            }
            let start = at;
            while at < bytes.len() && !bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            if start == at {
                return Err("PPM: header cut short".into());
            }
            fields.push(String::from_utf8_lossy(&bytes[start..at]).into_owned());
        }
        at += 1; // the single whitespace byte before the data
        if fields[0] != "P6" {
            return Err(format!("PPM: magic {:?}, not P6", fields[0]));
        }
        let number = |i: usize| {
            fields[i]
                .parse::<usize>()
                .map_err(|e| format!("PPM: bad number {:?}: {e}", fields[i]))
        };
        let (width, height, max) = (number(1)?, number(2)?, number(3)?);
        if max != 255 {
            return Err(format!("PPM: maximum value {max}, not 255"));
        }
        let len = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(3))
            .ok_or("PPM: size overflows")?;
        let data = bytes
            .get(at..)
            .filter(|d| d.len() >= len)
            .ok_or_else(|| format!("PPM: {width}x{height} needs {len} bytes of pixels"))?;
        let pixels = data[..len].as_chunks::<3>().0.to_vec();
        Ok(Screenshot {
            width,
            height,
            pixels,
        })
    }

    /// The pixel at (`x`, `y`) (black outside).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        if x >= self.width || y >= self.height {
            return [0; 3];
        }
        self.pixels[y * self.width + x]
    }
}

/// QMP `send-key` names of the keys that type `c` on a US keyboard (with `shift` where
/// needed), or `None` for characters this does not know.
pub fn keys_for(c: char) -> Option<Vec<&'static str>> {
    const PLAIN: &[(char, &str)] = &[
        (' ', "spc"),
        ('\n', "ret"),
        ('-', "minus"),
        ('=', "equal"),
        ('.', "dot"),
        (',', "comma"),
        ('/', "slash"),
        (';', "semicolon"),
        ('0', "0"),
        ('1', "1"),
        ('2', "2"),
        ('3', "3"),
        ('4', "4"),
        ('5', "5"),
        ('6', "6"),
        ('7', "7"),
        ('8', "8"),
        ('9', "9"),
    ];
    const LETTERS: [&str; 26] = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
        "s", "t", "u", "v", "w", "x", "y", "z",
    ];
    if c.is_ascii_lowercase() {
        return Some(vec![LETTERS[(c as u8 - b'a') as usize]]);
    }
    if c.is_ascii_uppercase() {
        return Some(vec!["shift", LETTERS[(c as u8 - b'A') as usize]]);
    }
    if c == ':' {
        return Some(vec!["shift", "semicolon"]);
    }
    PLAIN
        .iter()
        .find(|(p, _)| *p == c)
        .map(|(_, name)| vec![*name])
}

/// A QEMU run looked at through its screen.
pub struct ScreenVm {
    child: Child,
    qmp: Qmp,
    dir: PathBuf,
    shots: u32,
    started: Instant,
}

impl ScreenVm {
    /// Boots `iso` on q35 with `firmware` and `-vga std`; with `serial` COM1 writes to a file
    /// ([`ScreenVm::serial`]), without it there is no COM1 at all. Every QMP operation fails
    /// after `timeout` from now.
    pub fn boot(
        iso: &Path,
        firmware: &Firmware,
        serial: bool,
        timeout: Duration,
    ) -> Result<ScreenVm, String> {
        ScreenVm::boot_with(iso, firmware, serial, timeout, "q35", &[])
    }

    /// [`ScreenVm::boot`] on `-machine <machine>` (options included, e.g. `q35,i8042=off`)
    /// with `extra` arguments for QEMU (more devices).
    pub fn boot_with(
        iso: &Path,
        firmware: &Firmware,
        serial: bool,
        timeout: Duration,
        machine: &str,
        extra: &[&str],
    ) -> Result<ScreenVm, String> {
        let dir = unique_temp_dir("screen");
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let socket = dir.join("qmp.sock");
        let mut cmd = Command::new(qemu_program());
        cmd.args(["-machine", machine, "-m", "512M", "-vga", "std"]);
        cmd.args(extra);
        cmd.args(["-display", "none", "-monitor", "none"]);
        match firmware {
            Firmware::Bios => {}
            Firmware::Ovmf | Firmware::OvmfImage(_) => {
                let image = match firmware {
                    Firmware::OvmfImage(image) => image.clone(),
                    _ => find_ovmf().ok_or("OVMF not found; install the `ovmf` package")?,
                };
                match image {
                    crate::OvmfImage::Combined(fd) => {
                        cmd.arg("-bios").arg(fd);
                    }
                    crate::OvmfImage::Split { code, vars } => {
                        let copy = dir.join("OVMF_VARS.fd");
                        fs::copy(&vars, &copy).map_err(|e| format!("copy OVMF vars: {e}"))?;
                        cmd.arg("-drive").arg(format!(
                            "if=pflash,format=raw,unit=0,readonly=on,file={}",
                            code.display()
                        ));
                        cmd.arg("-drive").arg(format!(
                            "if=pflash,format=raw,unit=1,file={}",
                            copy.display()
                        ));
                    }
                }
                cmd.args(["-net", "none"]);
            }
        }
        cmd.arg("-cdrom").arg(iso);
        if serial {
            cmd.arg("-serial")
                .arg(format!("file:{}", dir.join("serial.log").display()));
        } else {
            cmd.args(["-serial", "none"]);
        }
        cmd.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| format!("cannot start QEMU: {e}"))?;
        let deadline = started + timeout;
        let qmp = match Qmp::connect(&socket, deadline.min(started + Duration::from_secs(10))) {
            Ok(q) => q.with_deadline(deadline),
            Err(e) => {
                let _ = child.kill();
                let output = child.wait_with_output().ok();
                let stderr = output
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default();
                let _ = fs::remove_dir_all(&dir);
                return Err(format!("{e}; QEMU said: {stderr}"));
            }
        };
        Ok(ScreenVm {
            child,
            qmp,
            dir,
            shots: 0,
            started,
        })
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Takes a screenshot.
    pub fn screendump(&mut self) -> Result<Screenshot, String> {
        self.shots += 1;
        let path = self.dir.join(format!("shot{}.ppm", self.shots));
        self.qmp.execute(
            "screendump",
            Some(json!({ "filename": path.to_string_lossy() })),
        )?;
        let bytes = fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let _ = fs::remove_file(&path);
        Screenshot::parse_ppm(&bytes)
    }

    /// Presses and releases one key combination (QMP `send-key` names, e.g. `["shift",
    /// "a"]`).
    pub fn send_key(&mut self, keys: &[&str]) -> Result<(), String> {
        let keys: Vec<_> = keys
            .iter()
            .map(|k| json!({ "type": "qcode", "data": k }))
            .collect();
        self.qmp
            .execute("send-key", Some(json!({ "keys": keys })))
            .map(|_| ())
    }

    /// Types `text` key by key, with a pause between keys (a guest under TCG may be slow to
    /// take its interrupts).
    pub fn type_text(&mut self, text: &str) -> Result<(), String> {
        for c in text.chars() {
            let keys = keys_for(c).ok_or_else(|| format!("no key types {c:?}"))?;
            self.send_key(&keys)?;
            std::thread::sleep(Duration::from_millis(60));
        }
        Ok(())
    }

    /// What COM1 wrote so far (empty without a serial port).
    pub fn serial(&self) -> String {
        fs::read(self.dir.join("serial.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for ScreenVm {
    fn drop(&mut self) {
        let _ = self.qmp.quit();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_decoding() {
        let mut ppm = b"P6\n# made by hand\n3 2\n255\n".to_vec();
        ppm.extend((0u8..18).collect::<Vec<_>>());
        let shot = Screenshot::parse_ppm(&ppm).unwrap();
        assert_eq!((shot.width, shot.height), (3, 2));
        assert_eq!(shot.pixel(0, 0), [0, 1, 2]);
        assert_eq!(shot.pixel(2, 1), [15, 16, 17]);
        assert_eq!(shot.pixel(3, 0), [0, 0, 0], "outside is black");
        // Pixel data may begin with a byte that looks like whitespace.
        let mut ppm = b"P6 1 1 255\n".to_vec();
        ppm.extend([b' ', b'\n', 7]);
        assert_eq!(
            Screenshot::parse_ppm(&ppm).unwrap().pixels,
            [[b' ', b'\n', 7]]
        );
    }

    #[test]
    fn bad_ppm_is_an_error() {
        assert!(Screenshot::parse_ppm(b"").is_err());
        assert!(Screenshot::parse_ppm(b"P3\n1 1\n255\n0 0 0").is_err());
        assert!(
            Screenshot::parse_ppm(b"P6\n2 2\n255\n\0\0\0").is_err(),
            "short data"
        );
        assert!(Screenshot::parse_ppm(b"P6\n1 1\n65535\n\0\0\0\0\0\0").is_err());
        assert!(Screenshot::parse_ppm(b"P6\n99999999999 99999999999\n255\n").is_err());
    }

    #[test]
    fn keys() {
        assert_eq!(keys_for('h'), Some(vec!["h"]));
        assert_eq!(keys_for('H'), Some(vec!["shift", "h"]));
        assert_eq!(keys_for('\n'), Some(vec!["ret"]));
        assert_eq!(keys_for(' '), Some(vec!["spc"]));
        assert_eq!(keys_for(':'), Some(vec!["shift", "semicolon"]));
        assert_eq!(keys_for('\u{e9}'), None);
    }
}
