//! Device drivers. They hold no `unsafe`: `pci/` and `kernel/` hand them owned, safe views of
//! configuration space, BARs, DMA memory and interrupt vectors, and everything a driver holds
//! is released when its state is dropped.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// How a driver names the devices it can drive (PCI Local Bus 3.0 §6.2.1: vendor and device
/// IDs; Appendix D: class codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// One vendor/device ID pair.
    Id {
        /// Vendor ID (offset 0x00).
        vendor: u16,
        /// Device ID (offset 0x02).
        device: u16,
    },
    /// A base class and subclass (offsets 0x0B and 0x0A).
    Class {
        /// Base class.
        class: u8,
        /// Subclass.
        subclass: u8,
    },
}

impl Match {
    /// Whether a function with these identity fields matches.
    pub const fn matches(&self, vendor: u16, device: u16, class: u8, subclass: u8) -> bool {
        match *self {
            Match::Id {
                vendor: v,
                device: d,
            } => v == vendor && d == device,
            Match::Class {
                class: c,
                subclass: s,
            } => c == class && s == subclass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Match;

    #[test]
    fn id_and_class_matches() {
        let edu = Match::Id {
            vendor: 0x1234,
            device: 0x11e8,
        };
        assert!(edu.matches(0x1234, 0x11e8, 0x00, 0xff));
        assert!(!edu.matches(0x1234, 0x11e9, 0x00, 0xff));
        let nvme = Match::Class {
            class: 0x01,
            subclass: 0x08,
        };
        assert!(nvme.matches(0x1b36, 0x0010, 0x01, 0x08));
        assert!(!nvme.matches(0x1b36, 0x0010, 0x01, 0x06));
    }
}
