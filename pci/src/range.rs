//! One checked range: the bounds check behind every access this stack and the kernel make
//! through an offset into something of known length (BAR windows, DMA buffers, MMIO mappings,
//! configuration space).
//!
//! Design note. The obvious check, `offset + size <= len`, is wrong: in a release build the
//! sum wraps, so `offset = u64::MAX - 3, size = 4` passes (the sum is 0) and the access lands
//! just *before* the buffer. Writing the check by hand at every call site made that mistake
//! easy to repeat, so there is exactly one, here, and it is tested against a model in `u128`
//! arithmetic (where nothing wraps) at and around `u64::MAX`.
//!
//! - [`checked_range`] says whether `[offset, offset + size)` lies inside `[0, len)` and
//!   returns it as a `Range<u64>`. It never adds without checking, so it cannot wrap. An empty
//!   range (`size == 0`) is inside when `offset <= len`, as for slices (`s.get(len..len)`).
//! - [`aligned`] says whether `offset` is a multiple of an access width, which must be a power
//!   of two (1, 2, 4, 8, ...); anything else is refused rather than trusted.
//! - [`checked_access`] is both, for register and memory accesses of `width` bytes, which
//!   must be naturally aligned (a dword at a multiple of 4): alignment first, then bounds.
//!
//! Callers keep their own error shape: the configuration-space accessors turn a
//! [`RangeError`] into a [`ConfigError`](crate::ConfigError), BAR windows and DMA buffers
//! panic with it (an out-of-range register access is a driver bug).

use core::fmt;
use core::ops::Range;

/// Why [`checked_range`], [`aligned`] or [`checked_access`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// `offset` is not a multiple of `width`, or `width` is not a power of two.
    Misaligned {
        /// Offset asked for.
        offset: u64,
        /// Access width in bytes.
        width: u64,
    },
    /// `[offset, offset + size)` does not lie inside `[0, len)` (its end may not even be a
    /// `u64`).
    OutOfBounds {
        /// Offset asked for.
        offset: u64,
        /// Bytes asked for.
        size: u64,
        /// Length of what is accessed.
        len: u64,
    },
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RangeError::Misaligned { offset, width } => {
                write!(
                    f,
                    "offset {offset:#x} is not aligned for a {width}-byte access"
                )
            }
            RangeError::OutOfBounds { offset, size, len } => {
                write!(
                    f,
                    "{size:#x} bytes at {offset:#x} do not fit in {len:#x} bytes"
                )
            }
        }
    }
}

/// `offset..offset + size` if it lies inside `0..len`; never wraps.
///
/// ```
/// use pci::range::{RangeError, checked_range};
/// assert_eq!(checked_range(0xc, 4, 0x10), Ok(0xc..0x10));
/// assert!(checked_range(0xd, 4, 0x10).is_err());
/// // `offset + size` would wrap to 0, which `<= len` would accept.
/// assert!(matches!(
///     checked_range(u64::MAX - 3, 4, 0x10),
///     Err(RangeError::OutOfBounds { .. })
/// ));
/// ```
pub const fn checked_range(offset: u64, size: u64, len: u64) -> Result<Range<u64>, RangeError> {
    // `offset <= len` first, so `len - offset` cannot underflow; then the room left is
    // compared with `size` instead of adding `size` to `offset`.
    if offset <= len && size <= len - offset {
        Ok(offset..offset + size)
    } else {
        Err(RangeError::OutOfBounds { offset, size, len })
    }
}

/// Whether `offset` suits an access of `width` bytes: `width` is a power of two and divides
/// `offset`.
pub const fn aligned(offset: u64, width: u64) -> Result<(), RangeError> {
    if width.is_power_of_two() && offset & (width - 1) == 0 {
        Ok(())
    } else {
        Err(RangeError::Misaligned { offset, width })
    }
}

/// The bytes of a naturally aligned access of `width` bytes at `offset` into `len` bytes:
/// [`aligned`], then [`checked_range`].
pub const fn checked_access(offset: u64, width: u64, len: u64) -> Result<Range<u64>, RangeError> {
    match aligned(offset, width) {
        Ok(()) => checked_range(offset, width, len),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u64 = u64::MAX;

    fn oob(offset: u64, size: u64, len: u64) -> Result<Range<u64>, RangeError> {
        Err(RangeError::OutOfBounds { offset, size, len })
    }

    /// The model: the same question in `u128`, where `offset + size` cannot wrap.
    fn model(offset: u64, size: u64, len: u64) -> Option<Range<u128>> {
        let end = u128::from(offset) + u128::from(size);
        (end <= u128::from(len)).then(|| u128::from(offset)..end)
    }

    #[test]
    fn inside_and_at_the_end() {
        assert_eq!(checked_range(0, 4, 16), Ok(0..4));
        assert_eq!(checked_range(12, 4, 16), Ok(12..16)); // len - size
        assert_eq!(checked_range(13, 4, 16), oob(13, 4, 16)); // len - size + 1
        assert_eq!(checked_range(16, 4, 16), oob(16, 4, 16));
        assert_eq!(checked_range(0, 16, 16), Ok(0..16));
        assert_eq!(checked_range(0, 17, 16), oob(0, 17, 16)); // size > len
        assert_eq!(checked_range(0, 1, 0), oob(0, 1, 0));
    }

    #[test]
    fn offsets_near_u64_max_are_refused() {
        for offset in [MAX, MAX - 1, MAX - 3, MAX - 7, 1 << 63] {
            for size in [1, 2, 4, 8] {
                assert_eq!(
                    checked_range(offset, size, 0x1000),
                    oob(offset, size, 0x1000)
                );
                assert!(checked_access(offset, size, 0x1000).is_err());
            }
        }
        // The wrapping sum is exactly 0 or lands inside: still refused.
        assert_eq!(checked_range(MAX - 3, 4, 16), oob(MAX - 3, 4, 16));
        assert_eq!(checked_range(MAX, 1, 16), oob(MAX, 1, 16));
        assert_eq!(checked_range(8, MAX, 16), oob(8, MAX, 16));
        assert_eq!(checked_range(MAX, MAX, MAX), oob(MAX, MAX, MAX));
    }

    #[test]
    fn huge_lengths() {
        assert_eq!(checked_range(MAX - 4, 4, MAX), Ok(MAX - 4..MAX)); // len - size
        assert_eq!(checked_range(MAX - 3, 4, MAX), oob(MAX - 3, 4, MAX)); // len - size + 1
        assert_eq!(checked_range(0, MAX, MAX), Ok(0..MAX));
        assert_eq!(checked_range(1, MAX, MAX), oob(1, MAX, MAX));
        assert_eq!(checked_range(MAX, 0, MAX), Ok(MAX..MAX));
        assert_eq!(checked_access(MAX - 7, 4, MAX), Ok(MAX - 7..MAX - 3));
        // 2^64 - 4 is dword-aligned, but its dword ends at 2^64, one past `u64::MAX`.
        assert_eq!(checked_access(MAX - 3, 4, MAX), oob(MAX - 3, 4, MAX));
        assert_eq!(
            checked_access(MAX - 2, 4, MAX),
            Err(RangeError::Misaligned {
                offset: MAX - 2,
                width: 4
            })
        );
    }

    #[test]
    fn empty_ranges_are_inside_up_to_len() {
        assert_eq!(checked_range(0, 0, 0), Ok(0..0));
        assert_eq!(checked_range(16, 0, 16), Ok(16..16));
        assert_eq!(checked_range(17, 0, 16), oob(17, 0, 16));
        assert_eq!(checked_range(MAX, 0, 16), oob(MAX, 0, 16));
    }

    #[test]
    fn alignment() {
        assert_eq!(aligned(0, 1), Ok(()));
        assert_eq!(aligned(7, 1), Ok(()));
        assert_eq!(aligned(8, 8), Ok(()));
        assert_eq!(aligned(MAX - 7, 8), Ok(()));
        assert_eq!(
            aligned(MAX - 3, 8),
            Err(RangeError::Misaligned {
                offset: MAX - 3,
                width: 8
            })
        );
        assert_eq!(
            aligned(2, 4),
            Err(RangeError::Misaligned {
                offset: 2,
                width: 4
            })
        );
        // Widths that are not powers of two are refused, 0 included.
        for width in [0, 3, 6, 12, MAX] {
            assert_eq!(
                aligned(0, width),
                Err(RangeError::Misaligned { offset: 0, width })
            );
        }
        // Alignment is checked before bounds.
        assert_eq!(
            checked_access(0x102, 4, 0x100),
            Err(RangeError::Misaligned {
                offset: 0x102,
                width: 4
            })
        );
        assert_eq!(checked_access(0x100, 4, 0x100), oob(0x100, 4, 0x100));
        assert_eq!(checked_access(0xfc, 4, 0x100), Ok(0xfc..0x100));
    }

    #[test]
    fn errors_display() {
        let e = checked_range(MAX - 3, 4, 16).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0x4 bytes at 0xfffffffffffffffc do not fit in 0x10 bytes"
        );
        let e = aligned(2, 4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "offset 0x2 is not aligned for a 4-byte access"
        );
    }

    /// Values that hit the edges: small ones, ones near `u64::MAX`, and anything.
    fn edgy() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..64u64,
            (0..64u64).prop_map(|d| MAX - d),
            (0..64u64).prop_map(|d| (1u64 << 63).wrapping_add(d).wrapping_sub(32)),
            any::<u64>(),
        ]
    }

    proptest! {
        // Miri interprets every case; a few keep its run short, the native run does many.
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 4096 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn checked_range_agrees_with_u128(offset in edgy(), size in edgy(), len in edgy()) {
            let got = checked_range(offset, size, len);
            match model(offset, size, len) {
                Some(r) => prop_assert_eq!(
                    got.map(|g| u128::from(g.start)..u128::from(g.end)),
                    Ok(r)
                ),
                None => prop_assert_eq!(got, oob(offset, size, len)),
            }
        }

        #[test]
        fn checked_access_is_aligned_and_inside(
            offset in edgy(),
            shift in 0..4u32,
            len in edgy(),
        ) {
            let width = 1u64 << shift;
            let got = checked_access(offset, width, len);
            if offset % width != 0 {
                prop_assert_eq!(got.clone(), Err(RangeError::Misaligned { offset, width }));
            } else {
                prop_assert_eq!(got.clone(), checked_range(offset, width, len));
            }
            if let Ok(r) = got {
                prop_assert!(r.start == offset && r.end - r.start == width && r.end <= len);
            }
        }
    }
}
