//! Checked configuration-space access: the one place where this crate calls the `unsafe`
//! methods of [`pci_types::ConfigRegionAccess`].
//!
//! The kernel supplies the real mechanism (ECAM MMIO, PCIe Base 6.0 §7.2.2, or the legacy
//! 0xCF8/0xCFC ports, PCI Local Bus 3.0 §3.2.2.3.2). It promises once, in the `unsafe`
//! [`ConfigSpace::new`], which functions and offsets are sound to touch; every access after
//! that is safe and checked here (by [`crate::range`]): naturally aligned, and inside the
//! function's configuration space (4096 bytes behind an ECAM root, 256 behind a port-I/O root).

use alloc::vec::Vec;
use core::fmt;

use pci_types::ConfigRegionAccess;

use crate::address::Address;
use crate::enumerate::Root;
use crate::range;

/// Size of a conventional (PCI 3.0) configuration space, the most port I/O can reach.
pub const LEGACY_SIZE: u16 = 256;
/// Size of a PCI Express (ECAM) configuration space.
pub const EXTENDED_SIZE: u16 = 4096;

/// Why [`ConfigSpace`] refused an access. Refusals never reach the hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The offset is not a multiple of the access width.
    Misaligned {
        /// Byte offset asked for.
        offset: u16,
        /// Access width in bytes (1, 2 or 4).
        width: u8,
    },
    /// The access would go past the function's configuration space.
    OutOfRange {
        /// Byte offset asked for.
        offset: u16,
        /// Size of that function's configuration space: 256 or 4096.
        limit: u16,
    },
    /// No root given to [`ConfigSpace::new`] covers this segment and bus.
    NoRoot {
        /// Segment asked for.
        segment: u16,
        /// Bus asked for.
        bus: u8,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::Misaligned { offset, width } => {
                write!(
                    f,
                    "offset {offset:#x} is not aligned for a {width}-byte access"
                )
            }
            ConfigError::OutOfRange { offset, limit } => {
                write!(
                    f,
                    "offset {offset:#x} is past the {limit}-byte configuration space"
                )
            }
            ConfigError::NoRoot { segment, bus } => {
                write!(f, "no root covers segment {segment:04x} bus {bus:02x}")
            }
        }
    }
}

/// Configuration space of the functions below a set of [`Root`]s, reached through the
/// kernel's [`ConfigRegionAccess`].
///
/// A function belongs to the root of its segment with the highest bus number not above its
/// own (so with roots at buses 0x00 and 0x80, bus 0x85 belongs to the second); its space is
/// 4096 bytes if that root is [`extended`](Root::extended), else 256.
pub struct ConfigSpace<'a, A> {
    access: &'a A,
    roots: Vec<Root>,
}

impl<'a, A: ConfigRegionAccess> ConfigSpace<'a, A> {
    /// Wraps `access` for the functions below `roots`.
    ///
    /// # Safety
    ///
    /// For every root, `access.read` and `access.write` must be sound to call for every
    /// function address (any device 0..=31, function 0..=7) of the root's segment on any bus
    /// from the root's bus to 255, at every dword-aligned offset below 4096 if the root is
    /// `extended` (ECAM) or below 256 if not (port I/O). Reads of absent functions or buses
    /// must return all ones (the master-abort value) rather than fault.
    ///
    /// The safe methods then let any holder write configuration registers: Command and the
    /// BARs while [`enumerate`](crate::enumerate()) sizes them, and whatever
    /// [`write32`](Self::write32) is given. The caller also vouches that such writes cannot
    /// break memory safety elsewhere (no code relies on a device's decode or bus-mastering
    /// state for soundness while this value exists): only the kernel's PCI owner should
    /// make one.
    pub unsafe fn new(access: &'a A, roots: &[Root]) -> Self {
        ConfigSpace {
            access,
            roots: roots.to_vec(),
        }
    }

    /// The roots given to [`new`](Self::new).
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// The wrapped mechanism (for example a [`Counting`](crate::Counting) wrapper's counters).
    pub fn access(&self) -> &'a A {
        self.access
    }

    /// The root that covers `address`, if any.
    pub fn root_of(&self, address: Address) -> Option<Root> {
        self.roots
            .iter()
            .filter(|r| r.segment == address.segment() && r.bus <= address.bus())
            .max_by_key(|r| r.bus)
            .copied()
    }

    /// Size in bytes of `address`'s configuration space: 256 or 4096.
    pub fn limit(&self, address: Address) -> Result<u16, ConfigError> {
        match self.root_of(address) {
            Some(r) if r.extended => Ok(EXTENDED_SIZE),
            Some(_) => Ok(LEGACY_SIZE),
            None => Err(ConfigError::NoRoot {
                segment: address.segment(),
                bus: address.bus(),
            }),
        }
    }

    fn check(&self, address: Address, offset: u16, width: u8) -> Result<(), ConfigError> {
        range::aligned(u64::from(offset), u64::from(width))
            .map_err(|_| ConfigError::Misaligned { offset, width })?;
        let limit = self.limit(address)?;
        range::checked_range(u64::from(offset), u64::from(width), u64::from(limit))
            .map_err(|_| ConfigError::OutOfRange { offset, limit })?;
        Ok(())
    }

    /// Reads the dword at `offset` (a multiple of 4).
    pub fn read32(&self, address: Address, offset: u16) -> Result<u32, ConfigError> {
        self.check(address, offset, 4)?;
        // SAFETY: `check` proved `offset` dword-aligned and below the limit of the root that
        // covers `address`; `new`'s caller promised such accesses are sound.
        Ok(unsafe { self.access.read(address.into(), offset) })
    }

    /// Writes the dword at `offset` (a multiple of 4).
    ///
    /// There is deliberately no 8- or 16-bit write: the hardware only writes dwords, and a
    /// read-modify-write of a dword would write back RW1C status bits that read as one (and
    /// clear them). Write the dword with zeroes in RW1C fields instead.
    pub fn write32(&self, address: Address, offset: u16, value: u32) -> Result<(), ConfigError> {
        self.check(address, offset, 4)?;
        // SAFETY: as in `read32`: aligned, in range for this root, promised sound by `new`.
        unsafe { self.access.write(address.into(), offset, value) };
        Ok(())
    }

    /// Reads the word at `offset` (a multiple of 2) from its dword.
    pub fn read16(&self, address: Address, offset: u16) -> Result<u16, ConfigError> {
        self.check(address, offset, 2)?;
        let dword = self.read32(address, offset & !3)?;
        Ok((dword >> ((offset & 2) * 8)) as u16)
    }

    /// Reads the byte at `offset` from its dword.
    pub fn read8(&self, address: Address, offset: u16) -> Result<u8, ConfigError> {
        self.check(address, offset, 1)?;
        let dword = self.read32(address, offset & !3)?;
        Ok((dword >> ((offset & 3) * 8)) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeConfigSpace, FakeFunction};

    fn addr(bus: u8, dev: u8, func: u8) -> Address {
        Address::new(0, bus, dev, func).unwrap()
    }

    #[test]
    fn checks_alignment_and_limits_per_root() {
        let fake = FakeConfigSpace::new();
        fake.add(
            addr(0, 1, 0),
            FakeFunction::endpoint(0x8086, 0x100e, 0x02, 0x00, 0x00, 3),
        );
        fake.add(
            addr(0x80, 0, 0),
            FakeFunction::endpoint(0x1af4, 0x1041, 0x02, 0x00, 0x00, 1),
        );
        let roots = [
            Root {
                segment: 0,
                bus: 0,
                extended: false,
            },
            Root {
                segment: 0,
                bus: 0x80,
                extended: true,
            },
        ];
        // SAFETY: the fake answers any aligned offset below 4096 of any address.
        let cs = unsafe { ConfigSpace::new(&fake, &roots) };
        let legacy = addr(0, 1, 0);
        let ecam = addr(0x80, 0, 0);
        assert_eq!(cs.read32(legacy, 0), Ok(0x100e_8086));
        assert_eq!(cs.read16(legacy, 2), Ok(0x100e));
        assert_eq!(cs.read8(legacy, 1), Ok(0x80));
        assert_eq!(cs.read8(legacy, 0xff), Ok(0));
        assert_eq!(
            cs.read32(legacy, 2),
            Err(ConfigError::Misaligned {
                offset: 2,
                width: 4
            })
        );
        assert_eq!(
            cs.read16(legacy, 3),
            Err(ConfigError::Misaligned {
                offset: 3,
                width: 2
            })
        );
        assert_eq!(
            cs.read32(legacy, 0x100),
            Err(ConfigError::OutOfRange {
                offset: 0x100,
                limit: 256
            })
        );
        assert_eq!(cs.read32(ecam, 0x100), Ok(0));
        assert_eq!(
            cs.write32(ecam, 0x1000, 0),
            Err(ConfigError::OutOfRange {
                offset: 0x1000,
                limit: 4096
            })
        );
        assert_eq!(cs.limit(addr(0x7f, 0, 0)), Ok(256));
        assert_eq!(
            cs.read32(Address::new(1, 0, 0, 0).unwrap(), 0),
            Err(ConfigError::NoRoot { segment: 1, bus: 0 })
        );
        assert!(fake.violations().is_empty());
    }
}
