//! Little-endian field reads that never panic.
//!
//! Every ACPI table field is little-endian (ACPI 6.5 §5.2 "ACPI System Description Tables":
//! "all numeric values ... are little-endian"). Each reader returns `None` when the field does
//! not lie wholly inside the slice, so a parser can ask for any offset a table claims without
//! first proving it is in range.

/// `N` bytes at `off`, or `None` when they are not all inside `b`.
pub(crate) fn array<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    let end = off.checked_add(N)?;
    b.get(off..end)?.try_into().ok()
}

/// The byte at `off`.
pub(crate) fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

/// The little-endian `u16` at `off`.
pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    array(b, off).map(u16::from_le_bytes)
}

/// The little-endian `u32` at `off`.
pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    array(b, off).map(u32::from_le_bytes)
}

/// The little-endian `u64` at `off`.
pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    array(b, off).map(u64::from_le_bytes)
}

/// The 8-bit sum of `b`: zero for a table whose checksum is right.
pub(crate) fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
}

/// A signature or OEM field for messages: printable ASCII kept, anything else as `\xNN`.
pub(crate) fn show(b: &[u8]) -> alloc::string::String {
    use core::fmt::Write;
    let mut s = alloc::string::String::new();
    for &c in b {
        if c.is_ascii_graphic() || c == b' ' {
            s.push(char::from(c));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(s, "\\x{c:02x}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_range_and_refuses_out_of_range() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u8_at(&b, 8), Some(9));
        assert_eq!(u8_at(&b, 9), None);
        assert_eq!(u16_at(&b, 0), Some(0x0201));
        assert_eq!(u16_at(&b, 8), None);
        assert_eq!(u32_at(&b, 5), Some(0x0908_0706));
        assert_eq!(u32_at(&b, 6), None);
        assert_eq!(u64_at(&b, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(u64_at(&b, 2), None);
        assert_eq!(u64_at(&b, usize::MAX), None);
        assert_eq!(array::<2>(&b, usize::MAX - 1), None);
    }

    #[test]
    fn sums_and_shows() {
        assert_eq!(sum(&[0xff, 0x01]), 0);
        assert_eq!(show(b"AB\x00 "), "AB\\x00 ");
    }
}
