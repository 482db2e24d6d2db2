//! Resource assignment for functions that appear after boot: BARs placed inside the
//! forwarding windows of the bridge above them.
//!
//! Design note. Firmware assigns BARs at boot. A card hot-added later (PCIe Base 6.0 §6.7)
//! comes up with its BARs at zero, and the operating system places them (as Linux's
//! `pci_assign_unassigned_bridge_resources` does). A hot-plug port's windows were sized by
//! firmware (QEMU's SeaBIOS reserves a memory and an I/O window for every hot-plug capable
//! port), so the new functions' BARs are packed into those windows: largest first, each
//! naturally aligned (a BAR of size 2^n decodes an address aligned to 2^n, PCI Local Bus 3.0
//! §6.2.5.1). The windows come from the bridge's registers (PCI-to-PCI Bridge Architecture
//! 1.2 §3.2.5.6–§3.2.5.9); nothing here touches hardware.
//!
//! [`boot`] places, at boot, the memory BARs firmware left unassigned: in the gaps that the
//! BARs firmware did assign leave in the windows, which stay as they are.

use alloc::vec::Vec;
use core::fmt;
use core::ops::RangeInclusive;

use pci_types::ConfigRegionAccess;

use crate::BarKind;
use crate::address::Address;
use crate::config::{ConfigError, ConfigSpace};

pub mod boot;

/// A bridge's forwarding windows (inclusive ranges), `None` where the window is disabled
/// (base above limit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Windows {
    /// I/O Base/Limit (0x1C, 0x1D, upper 16 bits at 0x30).
    pub io: Option<RangeInclusive<u64>>,
    /// Memory Base/Limit (0x20, 0x22): 32-bit, non-prefetchable.
    pub memory: Option<RangeInclusive<u64>>,
    /// Prefetchable Memory Base/Limit (0x24, 0x26, upper 32 bits at 0x28, 0x2C).
    pub prefetchable: Option<RangeInclusive<u64>>,
}

/// Bridge register offsets the windows are read from.
pub mod offset {
    /// I/O Base (byte), I/O Limit (byte), Secondary Status (word).
    pub const IO: u16 = 0x1c;
    /// Memory Base (word), Memory Limit (word).
    pub const MEMORY: u16 = 0x20;
    /// Prefetchable Memory Base (word), Prefetchable Memory Limit (word).
    pub const PREFETCHABLE: u16 = 0x24;
    /// Prefetchable Base Upper 32 Bits.
    pub const PREFETCHABLE_BASE_UPPER: u16 = 0x28;
    /// Prefetchable Limit Upper 32 Bits.
    pub const PREFETCHABLE_LIMIT_UPPER: u16 = 0x2c;
    /// I/O Base Upper 16 Bits (word), I/O Limit Upper 16 Bits (word).
    pub const IO_UPPER: u16 = 0x30;
}

fn range(base: u64, limit: u64) -> Option<RangeInclusive<u64>> {
    (base <= limit).then_some(base..=limit)
}

impl Windows {
    /// Decodes the windows from the dwords at [`offset::IO`], [`offset::MEMORY`],
    /// [`offset::PREFETCHABLE`], the two prefetchable upper dwords and [`offset::IO_UPPER`].
    pub fn decode(
        io: u32,
        memory: u32,
        prefetchable: u32,
        pref_upper: (u32, u32),
        io_upper: u32,
    ) -> Windows {
        let (io_base, io_limit) = (io as u8, (io >> 8) as u8);
        let io32 = io_base & 0xf == 1;
        let (io_base_hi, io_limit_hi) = if io32 {
            (
                u64::from(io_upper as u16),
                u64::from((io_upper >> 16) as u16),
            )
        } else {
            (0, 0)
        };
        let io = range(
            (io_base_hi << 16) | (u64::from(io_base & 0xf0) << 8),
            (io_limit_hi << 16) | (u64::from(io_limit & 0xf0) << 8) | 0xfff,
        );
        let (mem_base, mem_limit) = (memory as u16, (memory >> 16) as u16);
        let memory = range(
            u64::from(mem_base & 0xfff0) << 16,
            (u64::from(mem_limit & 0xfff0) << 16) | 0xf_ffff,
        );
        let (pf_base, pf_limit) = (prefetchable as u16, (prefetchable >> 16) as u16);
        let pf64 = pf_base & 0xf == 1;
        let (hi_base, hi_limit) = if pf64 {
            (u64::from(pref_upper.0), u64::from(pref_upper.1))
        } else {
            (0, 0)
        };
        let prefetchable = range(
            (hi_base << 32) | (u64::from(pf_base & 0xfff0) << 16),
            (hi_limit << 32) | (u64::from(pf_limit & 0xfff0) << 16) | 0xf_ffff,
        );
        Windows {
            io,
            memory,
            prefetchable,
        }
    }
}

impl Windows {
    /// Reads and decodes the windows of the bridge at `bridge` (six dword reads).
    pub fn read<A: ConfigRegionAccess>(
        space: &ConfigSpace<'_, A>,
        bridge: Address,
    ) -> Result<Windows, ConfigError> {
        let read = |offset| space.read32(bridge, offset);
        Ok(Windows::decode(
            read(offset::IO)?,
            read(offset::MEMORY)?,
            read(offset::PREFETCHABLE)?,
            (
                read(offset::PREFETCHABLE_BASE_UPPER)?,
                read(offset::PREFETCHABLE_LIMIT_UPPER)?,
            ),
            read(offset::IO_UPPER)?,
        ))
    }
}

/// One BAR that needs an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Which function (an index the caller chose).
    pub function: usize,
    /// BAR slot.
    pub slot: usize,
    /// What it decodes.
    pub kind: BarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// Size in bytes (a power of two).
    pub size: u64,
}

/// An address given to a [`Request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The request.
    pub request: Request,
    /// Its address.
    pub address: u64,
}

/// Why a set of BARs does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignError {
    /// The size is not a power of two (or zero).
    BadSize(Request),
    /// No window of the right kind has room for it.
    NoRoom(Request),
}

impl fmt::Display for AssignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, what) = match self {
            AssignError::BadSize(r) => (r, "has a size that is not a power of two"),
            AssignError::NoRoom(r) => (r, "does not fit in the bridge's windows"),
        };
        write!(
            f,
            "function {} BAR {} ({:?}{}, {:#x} bytes) {what}",
            r.function,
            r.slot,
            r.kind,
            if r.prefetchable { ", prefetchable" } else { "" },
            r.size
        )
    }
}

impl Windows {
    /// Whether the port forwards all of `[address, address + size)` for a BAR of `kind`: I/O
    /// inside the I/O window, memory inside the memory or the prefetchable window. A BAR a
    /// card brought up somewhere else is not reached through this port, and its driver's
    /// window would reach whatever is there instead.
    pub fn forwards(&self, kind: BarKind, address: u64, size: u64) -> bool {
        let Some(last) = size
            .checked_sub(1)
            .and_then(|extra| address.checked_add(extra))
        else {
            return false;
        };
        let inside = |w: &Option<RangeInclusive<u64>>| {
            w.as_ref()
                .is_some_and(|w| w.contains(&address) && w.contains(&last))
        };
        match kind {
            BarKind::Io => inside(&self.io),
            BarKind::Memory32 | BarKind::Memory64 => {
                inside(&self.memory) || inside(&self.prefetchable)
            }
        }
    }
}

/// A window being filled from the bottom.
struct Cursor {
    /// The first free address; `None` once the window is used up to its last byte.
    next: Option<u64>,
    /// The window's last byte.
    end: u64,
}

impl Cursor {
    fn new(window: &Option<RangeInclusive<u64>>) -> Option<Cursor> {
        window.as_ref().map(|w| Cursor {
            next: Some(*w.start()),
            end: *w.end(),
        })
    }

    /// Takes `size` bytes aligned to `size`, if they fit (never wraps).
    fn take(&mut self, size: u64, below_4g: bool) -> Option<u64> {
        let start = self.next?.checked_add(size - 1)? & !(size - 1);
        let last = start.checked_add(size - 1)?;
        if last > self.end || (below_4g && last > u64::from(u32::MAX)) {
            return None;
        }
        self.next = last.checked_add(1);
        Some(start)
    }
}

/// Places every request in `windows`: I/O BARs in the I/O window; prefetchable memory in the
/// prefetchable window when it fits there, else in the memory window; other memory in the
/// memory window. 32-bit BARs stay below 4 GiB. Largest first, so alignment wastes nothing
/// between BARs.
pub fn assign(windows: &Windows, requests: &[Request]) -> Result<Vec<Placement>, AssignError> {
    let mut order: Vec<Request> = requests.to_vec();
    for r in &order {
        if r.size == 0 || !r.size.is_power_of_two() {
            return Err(AssignError::BadSize(*r));
        }
    }
    order.sort_by(|a, b| {
        b.size
            .cmp(&a.size)
            .then(a.function.cmp(&b.function))
            .then(a.slot.cmp(&b.slot))
    });
    let mut io = Cursor::new(&windows.io);
    let mut memory = Cursor::new(&windows.memory);
    let mut prefetchable = Cursor::new(&windows.prefetchable);
    let mut placed = Vec::with_capacity(order.len());
    for r in order {
        let below_4g = r.kind != BarKind::Memory64;
        let address = match r.kind {
            BarKind::Io => io.as_mut().and_then(|c| c.take(r.size, true)),
            _ => {
                let pref = if r.prefetchable {
                    prefetchable.as_mut().and_then(|c| c.take(r.size, below_4g))
                } else {
                    None
                };
                pref.or_else(|| memory.as_mut().and_then(|c| c.take(r.size, true)))
            }
        };
        match address {
            Some(address) => placed.push(Placement {
                request: r,
                address,
            }),
            None => return Err(AssignError::NoRoom(r)),
        }
    }
    placed.sort_by_key(|p| (p.request.function, p.request.slot));
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_is_forwarded_only_inside_its_window() {
        let w = Windows {
            io: Some(0x1000..=0x1fff),
            memory: Some(0xfe80_0000..=0xfe9f_ffff),
            prefetchable: Some(0x8_0000_0000..=0x8_001f_ffff),
        };
        assert!(w.forwards(BarKind::Memory32, 0xfe80_0000, 0x10_0000));
        assert!(w.forwards(BarKind::Memory64, 0x8_0000_0000, 0x4000));
        assert!(w.forwards(BarKind::Io, 0x1000, 0x100));
        // Past the window's end, below it, in the wrong window, empty, wrapping.
        assert!(!w.forwards(BarKind::Memory32, 0xfe90_0000, 0x20_0000));
        assert!(!w.forwards(BarKind::Memory32, 0xfe00_0000, 0x1000));
        assert!(!w.forwards(BarKind::Io, 0xfe80_0000, 0x100));
        assert!(!w.forwards(BarKind::Memory32, 0x1000, 0x100));
        assert!(!w.forwards(BarKind::Memory32, 0xfe80_0000, 0));
        assert!(!w.forwards(BarKind::Memory64, u64::MAX, 2));
        let closed = Windows {
            io: None,
            memory: None,
            prefetchable: None,
        };
        assert!(!closed.forwards(BarKind::Memory32, 0xfe80_0000, 0x1000));
    }

    fn req(function: usize, slot: usize, kind: BarKind, prefetchable: bool, size: u64) -> Request {
        Request {
            function,
            slot,
            kind,
            prefetchable,
            size,
        }
    }

    #[test]
    fn decodes_a_qemu_root_port() {
        // I/O 0x1000-0x1fff, memory 0xfe800000-0xfe9fffff, prefetchable 64-bit
        // 0x7fc00000..0x7fdfffff (upper dwords zero).
        let w = Windows::decode(0x2000_1010, 0xfe90_fe80, 0x7fd1_7fc1, (0, 0), 0);
        assert_eq!(w.io, Some(0x1000..=0x1fff));
        assert_eq!(w.memory, Some(0xfe80_0000..=0xfe9f_ffff));
        assert_eq!(w.prefetchable, Some(0x7fc0_0000..=0x7fdf_ffff));
        // 32-bit I/O decoding uses the upper halves.
        let w = Windows::decode(0x0101, 0, 0, (0, 0), 0x0001_0001);
        assert_eq!(w.io, Some(0x1_0000..=0x1_0fff));
        // 64-bit prefetchable.
        let w = Windows::decode(0, 0, 0x0001_0001, (0x80, 0x80), 0);
        assert_eq!(w.prefetchable, Some(0x80_0000_0000..=0x80_000f_ffff));
    }

    #[test]
    fn disabled_windows_are_none() {
        // Base above limit, as firmware leaves an unused window.
        let w = Windows::decode(0x00f0, 0x0000_fff0, 0x0001_fff1, (0, 0), 0);
        assert_eq!(w, Windows::default());
    }

    #[test]
    fn packs_largest_first_naturally_aligned() {
        let w = Windows {
            io: Some(0x1000..=0x1fff),
            memory: Some(0xfe80_0000..=0xfe9f_ffff),
            prefetchable: Some(0x7fc0_0000..=0x7fdf_ffff),
        };
        // A virtio device: I/O BAR0, MMIO BAR1 (4 KiB), 64-bit prefetchable BAR4 (16 KiB);
        // and edu's 1 MiB BAR0.
        let placed = assign(
            &w,
            &[
                req(0, 0, BarKind::Io, false, 0x40),
                req(0, 1, BarKind::Memory32, false, 0x1000),
                req(0, 4, BarKind::Memory64, true, 0x4000),
                req(1, 0, BarKind::Memory32, false, 0x10_0000),
            ],
        )
        .unwrap();
        let at: Vec<(usize, usize, u64)> = placed
            .iter()
            .map(|p| (p.request.function, p.request.slot, p.address))
            .collect();
        assert_eq!(
            at,
            [
                (0, 0, 0x1000),
                (0, 1, 0xfe90_0000),
                (0, 4, 0x7fc0_0000),
                (1, 0, 0xfe80_0000)
            ]
        );
        for p in &placed {
            assert_eq!(p.address % p.request.size, 0);
        }
    }

    #[test]
    fn prefetchable_falls_back_to_the_memory_window() {
        let w = Windows {
            io: None,
            memory: Some(0xfe80_0000..=0xfe9f_ffff),
            prefetchable: None,
        };
        let placed = assign(&w, &[req(0, 4, BarKind::Memory64, true, 0x4000)]).unwrap();
        assert_eq!(placed[0].address, 0xfe80_0000);
    }

    #[test]
    fn a_32_bit_bar_never_lands_above_4g() {
        let w = Windows {
            io: None,
            memory: None,
            prefetchable: Some(0x80_0000_0000..=0x80_001f_ffff),
        };
        let r = req(0, 0, BarKind::Memory32, true, 0x1000);
        assert_eq!(assign(&w, &[r]), Err(AssignError::NoRoom(r)));
        let r = req(0, 0, BarKind::Memory64, true, 0x1000);
        assert_eq!(assign(&w, &[r]).unwrap()[0].address, 0x80_0000_0000);
    }

    #[test]
    fn too_big_or_bad_sizes_are_errors() {
        let w = Windows {
            io: Some(0x1000..=0x1fff),
            memory: Some(0xfe80_0000..=0xfe8f_ffff),
            prefetchable: None,
        };
        let big = req(0, 0, BarKind::Memory32, false, 0x20_0000);
        assert_eq!(assign(&w, &[big]), Err(AssignError::NoRoom(big)));
        let two = [
            req(0, 0, BarKind::Memory32, false, 0x8_0000),
            req(0, 1, BarKind::Memory32, false, 0x8_0000),
            req(0, 2, BarKind::Memory32, false, 0x1000),
        ];
        assert!(matches!(assign(&w, &two), Err(AssignError::NoRoom(_))));
        let odd = req(0, 0, BarKind::Io, false, 0x30);
        assert_eq!(assign(&w, &[odd]), Err(AssignError::BadSize(odd)));
        let io = req(0, 0, BarKind::Io, false, 0x2000);
        assert_eq!(assign(&w, &[io]), Err(AssignError::NoRoom(io)));
        assert!(
            AssignError::NoRoom(big)
                .to_string()
                .contains("does not fit in the bridge's windows")
        );
    }

    #[test]
    fn a_window_at_the_top_does_not_wrap() {
        let w = Windows {
            io: None,
            memory: None,
            prefetchable: Some(0xffff_ffff_fff0_0000..=u64::MAX),
        };
        let ok = req(0, 0, BarKind::Memory64, true, 0x10_0000);
        assert_eq!(assign(&w, &[ok]).unwrap()[0].address, 0xffff_ffff_fff0_0000);
        let two = [ok, req(0, 2, BarKind::Memory64, true, 0x1000)];
        assert!(assign(&w, &two).is_err());
    }
}
