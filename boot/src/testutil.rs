//! Builders for boot structures in tests (little-endian byte blobs), and a tiny PRNG.
//!
//! Used by the unit tests (`#[cfg(test)] mod testutil`) and, through `#[path]`, by the
//! integration tests in `boot/tests/`, so it depends on nothing but `std`.
#![allow(dead_code)]

/// Appends `v` little-endian.
pub fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` little-endian.
pub fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Overwrites 4 bytes at `offset`.
pub fn set32(buf: &mut [u8], offset: usize, v: u32) {
    buf[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
}

/// Overwrites 8 bytes at `offset`.
pub fn set64(buf: &mut [u8], offset: usize, v: u64) {
    buf[offset..offset + 8].copy_from_slice(&v.to_le_bytes());
}

/// A PVH `hvm_start_info` (56 bytes; version 0 gets the same bytes, the parser must not use
/// the tail).
pub fn start_info(version: u32, cmdline: u64, rsdp: u64, memmap: u64, entries: u32) -> Vec<u8> {
    let mut v = Vec::new();
    put32(&mut v, 0x336e_c578);
    put32(&mut v, version);
    put32(&mut v, 0); // flags
    put32(&mut v, 0); // nr_modules
    put64(&mut v, 0); // modlist_paddr
    put64(&mut v, cmdline);
    put64(&mut v, rsdp);
    put64(&mut v, memmap);
    put32(&mut v, entries);
    put32(&mut v, 0);
    v
}

/// E820-style entries `{u64 addr, u64 size, u32 type, u32 reserved}` padded to `entry_size`.
pub fn e820(entries: &[(u64, u64, u32)], entry_size: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for &(addr, size, kind) in entries {
        let at = v.len();
        put64(&mut v, addr);
        put64(&mut v, size);
        put32(&mut v, kind);
        put32(&mut v, 0);
        v.resize(at + entry_size, 0xee);
    }
    v
}

/// `EFI_MEMORY_DESCRIPTOR`s `(type, phys_start, pages)` padded to `descriptor_size`.
pub fn efi(descriptors: &[(u32, u64, u64)], descriptor_size: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for &(kind, start, pages) in descriptors {
        let at = v.len();
        put32(&mut v, kind);
        put32(&mut v, 0);
        put64(&mut v, start);
        put64(&mut v, 0); // virtual start
        put64(&mut v, pages);
        put64(&mut v, 0xf); // attribute: UC | WC | WT | WB
        v.resize(at + descriptor_size, 0);
    }
    v
}

fn fix_checksum(bytes: &mut [u8], range: core::ops::Range<usize>, at: usize) {
    bytes[at] = 0;
    let sum = bytes[range].iter().fold(0u8, |s, &b| s.wrapping_add(b));
    bytes[at] = sum.wrapping_neg();
}

/// A valid RSDP: 20 bytes for revision 0, 36 for revision 2.
pub fn rsdp(revision: u8, rsdt: u32, xsdt: u64) -> Vec<u8> {
    let mut v = b"RSD PTR ".to_vec();
    v.push(0); // checksum
    v.extend_from_slice(b"BOCHS ");
    v.push(revision);
    put32(&mut v, rsdt);
    if revision >= 2 {
        put32(&mut v, 36);
        put64(&mut v, xsdt);
        v.extend_from_slice(&[0, 0, 0, 0]); // extended checksum, reserved
        fix_checksum(&mut v, 0..20, 8);
        fix_checksum(&mut v, 0..36, 32);
    } else {
        fix_checksum(&mut v, 0..20, 8);
    }
    v
}

/// A multiboot2 information structure under construction.
pub struct Mbi {
    pub bytes: Vec<u8>,
}

impl Default for Mbi {
    fn default() -> Self {
        Self::new()
    }
}

impl Mbi {
    /// The fixed part, total_size filled in by [`Mbi::finish`].
    pub fn new() -> Mbi {
        Mbi { bytes: vec![0; 8] }
    }

    /// Appends a tag with `body`, then pads to 8 bytes.
    pub fn tag(self, tag_type: u32, body: &[u8]) -> Mbi {
        let size = 8 + body.len() as u32;
        self.raw_tag(tag_type, size, body)
    }

    /// Appends a tag with an arbitrary `size` field, then pads to 8 bytes.
    pub fn raw_tag(mut self, tag_type: u32, size: u32, body: &[u8]) -> Mbi {
        put32(&mut self.bytes, tag_type);
        put32(&mut self.bytes, size);
        self.bytes.extend_from_slice(body);
        let padded = self.bytes.len().next_multiple_of(8);
        self.bytes.resize(padded, 0);
        self
    }

    /// A NUL-terminated string tag.
    pub fn string(self, tag_type: u32, s: &str) -> Mbi {
        let mut body = s.as_bytes().to_vec();
        body.push(0);
        self.tag(tag_type, &body)
    }

    /// A memory map tag (6) with `entry_size`.
    pub fn mmap(self, entries: &[(u64, u64, u32)], entry_size: u32) -> Mbi {
        let mut body = Vec::new();
        put32(&mut body, entry_size);
        put32(&mut body, 0);
        body.extend(e820(entries, entry_size as usize));
        self.tag(6, &body)
    }

    /// An EFI memory map tag (17) with `descriptor_size`.
    pub fn efi_mmap(self, descriptors: &[(u32, u64, u64)], descriptor_size: u32) -> Mbi {
        let mut body = Vec::new();
        put32(&mut body, descriptor_size);
        put32(&mut body, 1);
        body.extend(efi(descriptors, descriptor_size as usize));
        self.tag(17, &body)
    }

    /// A framebuffer tag (8), direct RGB unless `fb_type` says otherwise.
    pub fn framebuffer(self, addr: u64, pitch: u32, w: u32, h: u32, bpp: u8, fb_type: u8) -> Mbi {
        let mut body = Vec::new();
        put64(&mut body, addr);
        put32(&mut body, pitch);
        put32(&mut body, w);
        put32(&mut body, h);
        body.push(bpp);
        body.push(fb_type);
        body.extend_from_slice(&[0, 0]); // reserved
        // Colour info for RGB: red pos/size, green, blue.
        body.extend_from_slice(&[16, 8, 8, 8, 0, 8]);
        self.tag(8, &body)
    }

    /// Appends the end tag and sets total_size.
    pub fn finish(self) -> Vec<u8> {
        let mut bytes = self.tag(0, &[]).bytes;
        let total = bytes.len() as u32;
        set32(&mut bytes, 0, total);
        bytes
    }

    /// Sets total_size to the current length without an end tag.
    pub fn finish_without_end(self) -> Vec<u8> {
        let mut bytes = self.bytes;
        let total = bytes.len() as u32;
        set32(&mut bytes, 0, total);
        bytes
    }
}

/// xorshift64: deterministic, no dependencies.
pub struct Rng(pub u64);

impl Rng {
    /// Next value (never zero for a non-zero seed).
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
