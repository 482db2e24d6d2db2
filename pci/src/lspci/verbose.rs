//! `lspci -v`'s block under a function's line, as pciutils prints it at verbosity 1, from the
//! function's configuration space as it is *now*.
//!
//! The boot scan says where things are (BARs, where each capability sits in the lists);
//! every register whose value can change after boot (Command, Status, MSI and MSI-X
//! Message Control, the Express capability's flags) is read again through the `read`
//! callback the caller gives, so `Enable+` means the function has MSI enabled at the time
//! of the command. A function that stops answering (reads all ones) gets one line saying so.
//!
//! ```text
//!     Subsystem: Red Hat, Inc. Device 1100
//!     Flags: bus master, fast devsel, latency 0, IRQ 11
//!     Memory at fe800000 (64-bit, non-prefetchable) [size=16K]
//!     Capabilities: [40] MSI-X: Enable+ Count=65 Masked-
//!     Capabilities: [80] Express (v2) Endpoint, MSI 00
//!     Capabilities: [60] Power Management version 3
//!     Capabilities: [d0] MSI: Enable- Count=1/1 Maskable- 64bit+
//!     Capabilities: [100 v1] Advanced Error Reporting
//!     Kernel driver in use: nvme
//!     Vectors held: cpu0 0x31 0x32
//! ```
//!
//! (Each line starts with a tab, shown here as four spaces.) The last two lines are this kernel's own (pciutils shows the driver's name only): the
//! driver bound to the function and the (CPU, vector) pairs its interrupt handlers occupy.

use core::fmt::{self, Write};

use crate::bar::BarKind;
use crate::capability::{Capability, ExtendedCapability};
use crate::enumerate::Function;
use crate::ids;

/// A dword of the function's configuration space at a dword-aligned offset, read now;
/// `None` if it cannot be read.
pub type Read<'a> = &'a dyn Fn(u16) -> Option<u32>;

/// The driver bound to a function, for the block's last lines (the vectors' line is left out
/// when there are none).
#[derive(Clone, Copy, Debug)]
pub struct Driver<'a> {
    /// The driver's name.
    pub name: &'a str,
    /// (CPU, vector) of every interrupt handler it installed.
    pub vectors: &'a [(u32, u8)],
}

/// Reads bytes of configuration space out of aligned dwords.
struct Live<'a> {
    read: Read<'a>,
}

impl Live<'_> {
    fn dword(&self, offset: u16) -> Option<u32> {
        (self.read)(offset & !3).filter(|&v| v != u32::MAX || offset >= 0x100)
    }
    fn byte(&self, offset: u16) -> Option<u8> {
        self.dword(offset)
            .map(|d| (d >> (u32::from(offset & 3) * 8)) as u8)
    }
}

fn flag(on: bool) -> char {
    if on { '+' } else { '-' }
}

/// The verbose block of `f` (every line starts with a tab and ends with a newline); `level` 2
/// (`-vv`) adds, under MSI-X, where its table and PBA are, as pciutils does.
pub fn write_verbose<W: Write + ?Sized>(
    w: &mut W,
    f: &Function,
    read: Read<'_>,
    driver: Option<&Driver<'_>>,
    level: u8,
) -> fmt::Result {
    let live = Live { read };
    let Some(command_status) = live.dword(0x04).filter(|_| live.dword(0x00).is_some()) else {
        return w.write_str("\t(the function does not answer: it reads all ones)\n");
    };
    let (command, status) = (command_status as u16, (command_status >> 16) as u16);
    if let (Some(sv @ 0x0001..=0xfffe), Some(sd)) = (f.subsystem_vendor_id, f.subsystem_id) {
        match ids::vendor_name(sv) {
            Some(v) => writeln!(w, "\tSubsystem: {v} Device {sd:04x}")?,
            None => writeln!(w, "\tSubsystem: Device {sv:04x}:{sd:04x}")?,
        }
    }
    write_flags(w, f, &live, command, status)?;
    write_bars(w, f, command)?;
    if let Some(b) = f.bridge {
        let latency = live.byte(0x1b).unwrap_or(0);
        writeln!(
            w,
            "\tBus: primary={:02x}, secondary={:02x}, subordinate={:02x}, sec-latency={latency}",
            b.primary, b.secondary, b.subordinate
        )?;
        write_bridge_windows(w, &live)?;
    }
    for cap in &f.capabilities {
        write_capability(w, f, &live, cap)?;
        if let (Some(x), true) = (f.msix, level >= 2 && cap.id == crate::capability::id::MSIX) {
            writeln!(
                w,
                "\t\tVector table: BAR={} offset={:08x}",
                x.table_bir, x.table_offset
            )?;
            writeln!(w, "\t\tPBA: BAR={} offset={:08x}", x.pba_bir, x.pba_offset)?;
        }
    }
    for cap in &f.extended_capabilities {
        write_extended(w, &live, cap)?;
    }
    if let Some(d) = driver {
        writeln!(w, "\tKernel driver in use: {}", d.name)?;
        if d.vectors.is_empty() {
            return Ok(());
        }
        w.write_str("\tVectors held:")?;
        let mut cpu = None;
        for &(c, v) in d.vectors {
            if cpu != Some(c) {
                write!(w, " cpu{c}")?;
                cpu = Some(c);
            }
            write!(w, " {v:#04x}")?;
        }
        w.write_char('\n')?;
    }
    Ok(())
}

/// `Flags:` as pciutils builds it (Command bit 2, Status bits 5, 7, 9-10; latency only for a
/// bus master; the IRQ when a pin is wired).
fn write_flags<W: Write + ?Sized>(
    w: &mut W,
    f: &Function,
    live: &Live<'_>,
    command: u16,
    status: u16,
) -> fmt::Result {
    let master = command & 1 << 2 != 0;
    w.write_str("\tFlags: ")?;
    if master {
        w.write_str("bus master, ")?;
    }
    if command & 1 << 5 != 0 {
        w.write_str("VGA palette snoop, ")?;
    }
    if status & 1 << 7 != 0 {
        w.write_str("fast Back2Back, ")?;
    }
    if status & 1 << 5 != 0 {
        w.write_str("66MHz, ")?;
    }
    w.write_str(match (status >> 9) & 3 {
        0 => "fast",
        1 => "medium",
        2 => "slow",
        _ => "??",
    })?;
    w.write_str(" devsel")?;
    if master {
        write!(w, ", latency {}", live.byte(0x0d).unwrap_or(0))?;
    }
    if f.interrupt_pin != 0 && f.interrupt_line != 0 && f.interrupt_line != 0xff {
        write!(w, ", IRQ {}", f.interrupt_line)?;
    }
    w.write_char('\n')
}

/// A bridge's forwarding windows (PCI-to-PCI Bridge 1.2 §3.2.5.6-9): I/O at 0x1c (upper
/// halves at 0x30), memory at 0x20, prefetchable memory at 0x24 (upper halves at 0x28 and
/// 0x2c); a window whose limit is below its base is off.
fn write_bridge_windows<W: Write + ?Sized>(w: &mut W, live: &Live<'_>) -> fmt::Result {
    let window = |w: &mut W, what: &str, range: Option<(u64, u64)>, digits: usize| match range {
        Some((base, limit)) if base <= limit => {
            write!(
                w,
                "\t{what} behind bridge: {base:0digits$x}-{limit:0digits$x}"
            )?;
            write_size(w, limit - base + 1)?;
            w.write_char('\n')
        }
        _ => writeln!(w, "\t{what} behind bridge: [disabled]"),
    };
    let io = live.dword(0x1c).map(|d| {
        let (base, limit) = (d & 0xff, (d >> 8) & 0xff);
        let upper = if base & 0xf == 1 {
            live.dword(0x30).unwrap_or(0)
        } else {
            0
        };
        let base = u64::from((upper & 0xffff) << 16 | (base & 0xf0) << 8);
        let limit = u64::from((upper >> 16) << 16 | (limit & 0xf0) << 8 | 0xfff);
        (base, limit)
    });
    window(w, "I/O", io, 8)?;
    let memory = live.dword(0x20).map(|d| {
        let base = u64::from(d & 0xfff0) << 16;
        let limit = u64::from(d >> 16 & 0xfff0) << 16 | 0xf_ffff;
        (base, limit)
    });
    window(w, "Memory", memory, 8)?;
    let prefetchable = live.dword(0x24).map(|d| {
        let wide = d & 0xf == 1;
        let upper = |offset| {
            if wide {
                u64::from(live.dword(offset).unwrap_or(0)) << 32
            } else {
                0
            }
        };
        let base = upper(0x28) | u64::from(d & 0xfff0) << 16;
        let limit = upper(0x2c) | u64::from(d >> 16 & 0xfff0) << 16 | 0xf_ffff;
        (base, limit)
    });
    window(w, "Prefetchable memory", prefetchable, 16)
}

/// pciutils' size: the largest unit that divides it exactly.
fn write_size<W: Write + ?Sized>(w: &mut W, mut size: u64) -> fmt::Result {
    let mut suffix = "";
    for s in ["K", "M", "G", "T"] {
        if size == 0 || !size.is_multiple_of(1024) {
            break;
        }
        size /= 1024;
        suffix = s;
    }
    write!(w, " [size={size}{suffix}]")
}

fn write_bars<W: Write + ?Sized>(w: &mut W, f: &Function, command: u16) -> fmt::Result {
    for (_, bar) in f.bars() {
        match bar.kind {
            BarKind::Io => {
                write!(w, "\tI/O ports at {:04x}", bar.address)?;
                if command & 1 == 0 {
                    w.write_str(" [disabled]")?;
                }
            }
            BarKind::Memory32 | BarKind::Memory64 => {
                write!(
                    w,
                    "\tMemory at {:08x} ({}, {}prefetchable)",
                    bar.address,
                    match bar.kind {
                        BarKind::Memory64 => "64-bit",
                        _ if bar.below_1m => "low-1M",
                        _ => "32-bit",
                    },
                    if bar.prefetchable { "" } else { "non-" }
                )?;
                if command & 2 == 0 {
                    w.write_str(" [disabled]")?;
                }
            }
        }
        write_size(w, bar.size)?;
        w.write_char('\n')?;
    }
    Ok(())
}

fn write_capability<W: Write + ?Sized>(
    w: &mut W,
    f: &Function,
    live: &Live<'_>,
    cap: &Capability,
) -> fmt::Result {
    use crate::capability::id;
    let at = u16::from(cap.offset);
    write!(w, "\tCapabilities: [{:02x}] ", cap.offset)?;
    let Some(header) = live.dword(at) else {
        return w.write_str("<unreadable>\n");
    };
    let control = (header >> 16) as u16;
    match cap.id {
        id::MSI => {
            // Message Control (PCI Local Bus 3.0 §6.8.1.3): enable bit 0, Multiple Message
            // Capable bits 3:1, Multiple Message Enable bits 6:4, 64-bit bit 7, per-vector
            // masking bit 8.
            writeln!(
                w,
                "MSI: Enable{} Count={}/{} Maskable{} 64bit{}",
                flag(control & 1 != 0),
                1u32 << ((control >> 4) & 7).min(5),
                1u32 << ((control >> 1) & 7).min(5),
                flag(control & 1 << 8 != 0),
                flag(control & 1 << 7 != 0)
            )
        }
        id::MSIX => {
            // Message Control (§6.8.2.3): table size - 1 in bits 10:0, function mask bit 14,
            // enable bit 15.
            writeln!(
                w,
                "MSI-X: Enable{} Count={} Masked{}",
                flag(control & 1 << 15 != 0),
                (control & 0x7ff) + 1,
                flag(control & 1 << 14 != 0)
            )
        }
        id::PCI_EXPRESS => {
            // Express Capabilities (PCIe Base 6.0 §7.5.3.2): version bits 3:0, device/port
            // type bits 7:4, slot implemented bit 8, interrupt message number bits 13:9.
            w.write_str("Express ")?;
            if control & 0xf > 1 {
                write!(w, "(v{}) ", control & 0xf)?;
            }
            let slot = flag(control & 1 << 8 != 0);
            match (control >> 4) & 0xf {
                0 => w.write_str("Endpoint")?,
                1 => w.write_str("Legacy Endpoint")?,
                4 => write!(w, "Root Port (Slot{slot})")?,
                5 => w.write_str("Upstream Port")?,
                6 => write!(w, "Downstream Port (Slot{slot})")?,
                7 => w.write_str("PCI-Express to PCI/PCI-X Bridge")?,
                8 => w.write_str("PCI/PCI-X to PCI-Express Bridge")?,
                9 => w.write_str("Root Complex Integrated Endpoint")?,
                10 => w.write_str("Root Complex Event Collector")?,
                t => write!(w, "Unknown type {t}")?,
            }
            writeln!(w, ", MSI {:02x}", (control >> 9) & 0x1f)
        }
        id::POWER_MANAGEMENT => writeln!(w, "Power Management version {}", control & 7),
        id::VENDOR => {
            // Length byte after the header; virtio's structures (virtio 1.2 §4.1.4) name
            // their type in the byte after it.
            let (len, kind) = (control as u8, (control >> 8) as u8);
            w.write_str("Vendor Specific Information: ")?;
            if f.vendor_id == 0x1af4 && f.device_id <= 0x107f && len >= 16 {
                writeln!(w, "VirtIO: {}", virtio_cfg_name(kind))
            } else {
                writeln!(w, "Len={len:02x} <?>")
            }
        }
        // Bridge subsystem vendor and device IDs in the dword after the header (PCI-to-PCI
        // Bridge 1.2 §3.2.5.13).
        id::BRIDGE_SUBSYSTEM => {
            let ids = live.dword(at + 4).unwrap_or(0);
            let (vendor, device) = (ids as u16, (ids >> 16) as u16);
            match ids::vendor_name(vendor) {
                Some(v) => writeln!(w, "Subsystem: {v} Device {device:04x}"),
                None => writeln!(w, "Subsystem: Device {vendor:04x}:{device:04x}"),
            }
        }
        id::SATA => writeln!(w, "SATA HBA v{}.{}", (control >> 4) & 0xf, control & 0xf),
        id::EA => writeln!(w, "Enhanced Allocation (EA): NumEntries={}", control & 0x3f),
        other => match ids::capability_name(other) {
            Some(name) => writeln!(w, "{name}"),
            None => writeln!(w, "#{other:02x} [{control:04x}]"),
        },
    }
}

/// A virtio PCI capability's `cfg_type` (virtio 1.2 §4.1.4), named as pciutils does.
fn virtio_cfg_name(kind: u8) -> &'static str {
    match kind {
        1 => "CommonCfg",
        2 => "Notify",
        3 => "ISR",
        4 => "DeviceCfg",
        5 => "PCICfg",
        8 => "SharedMemory",
        9 => "VendorCfg",
        _ => "<unknown>",
    }
}

fn write_extended<W: Write + ?Sized>(
    w: &mut W,
    live: &Live<'_>,
    cap: &ExtendedCapability,
) -> fmt::Result {
    write!(w, "\tCapabilities: [{:03x} v{}] ", cap.offset, cap.version)?;
    match cap.id {
        // Device Serial Number (PCIe Base 6.0 §7.9.3): two dwords after the header, shown
        // most significant byte first.
        0x0003 => {
            let (Some(lo), Some(hi)) = (live.dword(cap.offset + 4), live.dword(cap.offset + 8))
            else {
                return w.write_str("Device Serial Number <unreadable>\n");
            };
            let b = (u64::from(hi) << 32 | u64::from(lo)).to_be_bytes();
            writeln!(
                w,
                "Device Serial Number {:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
            )
        }
        // Vendor-Specific Extended Capability (§7.9.5): ID, revision and length in the
        // dword after the header.
        0x000b => {
            let h = live.dword(cap.offset + 4).unwrap_or(0);
            writeln!(
                w,
                "Vendor Specific Information: ID={:04x} Rev={} Len={:03x} <?>",
                h & 0xffff,
                (h >> 16) & 0xf,
                h >> 20
            )
        }
        other => match ids::extended_capability_name(other) {
            Some(name) => writeln!(w, "{name}"),
            None => writeln!(w, "Extended Capability ID {other:#x}"),
        },
    }
}
