//! A writer for the `newc` cpio format (the one the Linux kernel unpacks as an initramfs,
//! `Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry is a 110-byte ASCII header (`070701`, then thirteen 8-digit hexadecimal fields:
//! inode, mode, uid, gid, nlink, mtime, file size, device major/minor, rdev major/minor, name
//! size including its NUL, checksum 0), the name and its NUL padded to a multiple of four
//! bytes, then the data padded to a multiple of four. The archive ends with the entry
//! `TRAILER!!!`. Entries here are owned by root, dated 0, and numbered from 1 in the order
//! they are added; directories must come before what they contain.

/// File type bits of `mode` (`S_IFDIR`, `S_IFREG`, `S_IFLNK`, `S_IFCHR`).
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// The name of the last entry.
const TRAILER: &str = "TRAILER!!!";

/// An archive being written in memory.
#[derive(Debug, Default)]
pub struct Cpio {
    out: Vec<u8>,
    next_inode: u32,
    finished: bool,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (`path` without a leading `/`), mode 0755.
    pub fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    /// A regular file with the given permission bits (e.g. 0o755 for a program).
    pub fn file(&mut self, path: &str, permissions: u32, data: &[u8]) {
        self.entry(path, S_IFREG | (permissions & 0o7777), 1, (0, 0), data);
    }

    /// A symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// A character device node (e.g. `dev/console`, 5:1), mode 0600.
    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | 0o600, 1, (major, minor), &[]);
    }

    /// Ends the archive with the trailer and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.trailer();
        std::mem::take(&mut self.out)
    }

    fn trailer(&mut self) {
        if !self.finished {
            self.finished = true;
            self.header(TRAILER, 0, 0, 1, (0, 0), 0);
        }
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        assert!(!self.finished, "cpio: entry after the trailer");
        let path = path.trim_start_matches('/');
        assert!(!path.is_empty(), "cpio: empty path");
        self.next_inode += 1;
        let size = u32::try_from(data.len()).expect("cpio: newc entries are below 4 GiB");
        self.header(path, self.next_inode, mode, nlink, rdev, size);
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn header(
        &mut self,
        name: &str,
        inode: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        size: u32,
    ) {
        let name_size = u32::try_from(name.len() + 1).expect("cpio: name too long");
        let fields = [
            inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

/// One entry read back by [`parse`] (for tests and checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name, without a leading `/`.
    pub name: String,
    /// Mode: file type and permission bits.
    pub mode: u32,
    /// Device number of a device node.
    pub rdev: (u32, u32),
    /// The contents (a symbolic link's target).
    pub data: Vec<u8>,
}

/// Reads a `newc` archive back, up to its trailer.
pub fn parse(archive: &[u8]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let mut at = 0;
    let align = |n: usize| n.next_multiple_of(4);
    loop {
        let header = archive
            .get(at..at + 110)
            .ok_or_else(|| format!("cpio: truncated header at {at}"))?;
        if &header[..6] != b"070701" {
            return Err(format!("cpio: bad magic at {at}"));
        }
        let field = |i: usize| -> Result<u32, String> {
            let text = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .map_err(|_| format!("cpio: non-ASCII header at {at}"))?;
            u32::from_str_radix(text, 16).map_err(|e| format!("cpio: field {i} at {at}: {e}"))
        };
        let (mode, size, name_size) = (field(1)?, field(6)? as usize, field(11)? as usize);
        let rdev = (field(9)?, field(10)?);
        let name_bytes = archive
            .get(at + 110..at + 110 + name_size)
            .ok_or_else(|| format!("cpio: truncated name at {at}"))?;
        let name = std::str::from_utf8(
            name_bytes
                .strip_suffix(&[0])
                .ok_or("cpio: name without NUL")?,
        )
        .map_err(|_| "cpio: name is not UTF-8".to_owned())?
        .to_owned();
        let data_at = align(at + 110 + name_size);
        let data = archive
            .get(data_at..data_at + size)
            .ok_or_else(|| format!("cpio: truncated data of {name}"))?
            .to_vec();
        at = align(data_at + size);
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(Entry {
            name,
            mode,
            rdev,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_newc() {
        let mut cpio = Cpio::new();
        cpio.file("/init", 0o755, b"#!/bin/sh\n");
        let bytes = cpio.finish();
        // The first header, field by field.
        let text = std::str::from_utf8(&bytes[..110]).unwrap();
        assert_eq!(&text[..6], "070701");
        assert_eq!(&text[6..14], "00000001", "inode");
        assert_eq!(&text[14..22], "000081ed", "mode: regular file, 0755");
        assert_eq!(&text[54..62], "0000000a", "file size");
        assert_eq!(&text[94..102], "00000005", "name size with NUL");
        // Name "init\0" ends at 115; padded to 116, then the data, padded to 128.
        assert_eq!(&bytes[110..116], b"init\0\0");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        assert_eq!(&bytes[126..128], &[0, 0]);
        assert_eq!(&bytes[128..134], b"070701");
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn round_trip() {
        let mut cpio = Cpio::new();
        cpio.dir("bin");
        cpio.file("bin/busybox", 0o755, &[1, 2, 3, 4, 5]);
        cpio.symlink("bin/sh", "busybox");
        cpio.dir("/dev");
        cpio.char_device("dev/console", 5, 1);
        cpio.file("empty", 0o644, &[]);
        let entries = parse(&cpio.finish()).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "empty"
            ]
        );
        assert_eq!(entries[0].mode, 0o040_755);
        assert_eq!(entries[1].data, [1, 2, 3, 4, 5]);
        assert_eq!(entries[2].mode, 0o120_777);
        assert_eq!(entries[2].data, b"busybox");
        assert_eq!(entries[4].mode, 0o020_600);
        assert_eq!(entries[4].rdev, (5, 1));
        assert_eq!(entries[5].data, b"");
    }

    #[test]
    fn damaged_archives_are_rejected() {
        let mut cpio = Cpio::new();
        cpio.file("a", 0o644, b"abc");
        let bytes = cpio.finish();
        assert!(parse(&bytes[..100]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'1';
        assert!(parse(&bad).unwrap_err().contains("magic"));
        // Without the trailer the reader runs off the end.
        let cut = bytes.len() - 124;
        assert!(parse(&bytes[..cut]).is_err());
    }
}
