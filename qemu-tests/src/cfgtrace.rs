//! Configuration-space accesses counted from QEMU's trace log, for the config-access benchmark.
//!
//! QEMU is run with `-D <log>` and these trace events (names checked with QEMU 10's
//! `-trace help`):
//!
//! - `memory_region_ops_read` / `memory_region_ops_write`: every guest access to an MMIO or
//!   I/O-port region, with the region's name. Accesses to `pcie-mmcfg-mmio` (ECAM, q35) and to
//!   `pci-conf-data` (port 0xCFC..0xCFF, after an address written to `pci-conf-idx` at 0xCF8)
//!   are the guest's configuration-space accesses: the **raw** counts, which include probes of
//!   absent functions (they read all ones).
//! - `pci_cfg_read` / `pci_cfg_write`: what reached a device model (both mechanisms end up in
//!   `pci_host_config_{read,write}_common`). QEMU traces these only for present functions and
//!   offsets below the function's configuration-space size (256 bytes for conventional PCI
//!   devices): the **device** counts.
//! - `serial_write`: every write to the 16550's registers. Bytes written to the transmit
//!   register (offset 0 with DLAB clear) rebuild the serial output *in the same order as the
//!   configuration accesses*, which places the kernel's lines (`TEST START pci`, `PCISTATS`,
//!   `PCI HOLD`) exactly among the accesses.
//!
//! The firmware (SeaBIOS) makes many configuration accesses before the kernel runs. The
//! kernel's start is taken as the end of the last `fw_cfg` access: the PVH option ROM loads the
//! kernel, its command line and boot data through `fw_cfg` and then jumps to it, and the kernel
//! itself does not use `fw_cfg`.

use std::collections::BTreeMap;

use crate::pci::PciAddress;

/// How an access reached configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// Memory-mapped (ECAM, `pcie-mmcfg-mmio`).
    Ecam,
    /// Ports 0xCF8/0xCFC.
    Port,
}

/// One event of interest from the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A guest access to configuration space (ECAM or port 0xCFC).
    Raw {
        /// Write (else read).
        write: bool,
        /// ECAM or ports.
        mechanism: Mechanism,
        /// The function addressed (segment 0).
        address: PciAddress,
        /// Register offset.
        offset: u16,
    },
    /// An access that reached a device model (`pci_cfg_read`/`pci_cfg_write`).
    Device {
        /// Write (else read).
        write: bool,
        /// The function.
        address: PciAddress,
        /// Register offset.
        offset: u16,
    },
    /// A byte the guest sent on the serial port.
    Serial(u8),
    /// An access to `fw_cfg`.
    FwCfg,
}

/// Read and write counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Reads.
    pub reads: u64,
    /// Writes.
    pub writes: u64,
}

impl Counts {
    fn add(&mut self, write: bool) {
        if write {
            self.writes += 1;
        } else {
            self.reads += 1;
        }
    }

    /// Reads plus writes.
    pub fn total(&self) -> u64 {
        self.reads + self.writes
    }
}

/// Counts over a range of events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Raw accesses (ECAM and ports together).
    pub raw: Counts,
    /// Raw ECAM accesses.
    pub ecam: Counts,
    /// Raw port accesses.
    pub port: Counts,
    /// Accesses that reached a device model.
    pub device: Counts,
    /// Raw accesses per function.
    pub raw_by_function: BTreeMap<PciAddress, Counts>,
    /// Device accesses per function.
    pub device_by_function: BTreeMap<PciAddress, Counts>,
}

/// A stretch of the kernel's run ending with a serial line (see [`Trace::segments`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The line that ends the segment (cleaned), `None` for the tail after the last line.
    pub line: Option<String>,
    /// First event.
    pub from: usize,
    /// One past the last event.
    pub to: usize,
}

/// A parsed trace log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Events in order.
    pub events: Vec<Event>,
    /// The serial output rebuilt from the transmit-register writes.
    pub serial: String,
    /// For each byte of [`Self::serial`], the index of its event.
    pub serial_events: Vec<usize>,
    /// Index of the first event after the last `fw_cfg` access (0 if there was none).
    pub kernel_start: usize,
    /// Lines the parser could not read (events it should understand), for diagnosis.
    pub unparsed: Vec<String>,
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

/// `bb:dd.f` as printed by `pci_cfg_read`/`pci_cfg_write`.
fn parse_bdf(text: &str) -> Option<PciAddress> {
    let (bus, rest) = text.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    Some(PciAddress::new(
        0,
        u8::from_str_radix(bus, 16).ok()?,
        u8::from_str_radix(device, 16).ok()?,
        u8::from_str_radix(function, 16).ok()?,
    ))
}

/// `<name> bb:dd.f @0x<off> -> 0x<val>` or `... <- 0x<val>`.
fn parse_device_access(rest: &str, write: bool) -> Option<Event> {
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let at = tokens.iter().position(|t| t.starts_with('@'))?;
    let address = parse_bdf(tokens.get(at.checked_sub(1)?)?)?;
    let offset = u16::try_from(hex(tokens[at].strip_prefix('@')?)?).ok()?;
    Some(Event::Device {
        write,
        address,
        offset,
    })
}

/// `cpu N mr 0x... addr 0x<addr> value 0x<val> size N name '<region>'`.
fn parse_region_access(rest: &str) -> Option<(u64, u64, String)> {
    let mut addr = None;
    let mut value = None;
    let mut tokens = rest.split_whitespace();
    while let Some(token) = tokens.next() {
        match token {
            "addr" => addr = hex(tokens.next()?),
            "value" => value = hex(tokens.next()?),
            _ => {}
        }
    }
    let name_start = rest.find("name '")? + "name '".len();
    let name = rest[name_start..].strip_suffix('\'')?.to_owned();
    Some((addr?, value?, name))
}

/// The function and offset of an ECAM address: bus in bits 20..28, device 15..20, function
/// 12..15, offset 0..12 (the window is 256 MiB aligned, so the base drops out).
fn ecam_decode(address: u64) -> (PciAddress, u16) {
    let field = |shift: u32, bits: u32| ((address >> shift) & ((1 << bits) - 1)) as u8;
    (
        PciAddress::new(0, field(20, 8), field(15, 5), field(12, 3)),
        (address & 0xfff) as u16,
    )
}

/// The event for an access to the region `name` (`None` if it is of no interest);
/// `cf8` tracks the address last written to port 0xCF8.
fn region_event(cf8: &mut u32, write: bool, addr: u64, value: u64, name: &str) -> Option<Event> {
    match name {
        "pcie-mmcfg-mmio" => {
            let (address, offset) = ecam_decode(addr);
            Some(Event::Raw {
                write,
                mechanism: Mechanism::Ecam,
                address,
                offset,
            })
        }
        "pci-conf-idx" => {
            if write && addr == 0xcf8 {
                *cf8 = value as u32;
            }
            None
        }
        "pci-conf-data" if *cf8 & 0x8000_0000 != 0 => {
            let address = PciAddress::new(
                0,
                (*cf8 >> 16) as u8,
                ((*cf8 >> 11) & 0x1f) as u8,
                ((*cf8 >> 8) & 0x7) as u8,
            );
            let offset = ((*cf8 & 0xfc) as u16) | ((addr & 3) as u16);
            Some(Event::Raw {
                write,
                mechanism: Mechanism::Port,
                address,
                offset,
            })
        }
        n if n.starts_with("fwcfg") => Some(Event::FwCfg),
        _ => None,
    }
}

impl Trace {
    /// Parses a QEMU log (`-D`) holding the events listed in the module documentation. Other
    /// lines are ignored. Lines may carry a `<pid>@<time>:` prefix.
    pub fn parse(log: &str) -> Self {
        let mut trace = Self::default();
        let mut cf8: u32 = 0;
        let mut lcr: u8 = 0;
        for line in log.lines() {
            let line = line.trim_end();
            // Optional "<pid>@<seconds>:" prefix.
            let line = match line.split_once(':') {
                Some((prefix, rest)) if prefix.contains('@') && !prefix.contains(' ') => rest,
                _ => line,
            };
            let Some((event, rest)) = line.split_once(' ') else {
                continue;
            };
            let parsed = match event {
                "pci_cfg_read" => parse_device_access(rest, false).map(Some),
                "pci_cfg_write" => parse_device_access(rest, true).map(Some),
                "serial_write" => {
                    // "write addr 0x00 val 0x5b"
                    let mut tokens = rest.split_whitespace();
                    let mut addr = None;
                    let mut val = None;
                    while let Some(t) = tokens.next() {
                        match t {
                            "addr" => addr = tokens.next().and_then(hex),
                            "val" => val = tokens.next().and_then(hex),
                            _ => {}
                        }
                    }
                    match (addr, val) {
                        (Some(0), Some(v)) if lcr & 0x80 == 0 => Some(Some(Event::Serial(v as u8))),
                        (Some(3), Some(v)) => {
                            lcr = v as u8;
                            Some(None)
                        }
                        (Some(_), Some(_)) => Some(None),
                        _ => None,
                    }
                }
                "memory_region_ops_read" | "memory_region_ops_write" => {
                    let write = event.ends_with("write");
                    parse_region_access(rest).map(|(addr, value, name)| {
                        region_event(&mut cf8, write, addr, value, &name)
                    })
                }
                _ => continue,
            };
            match parsed {
                Some(Some(event)) => {
                    if let Event::Serial(byte) = event {
                        trace.serial.push(char::from(byte));
                        trace.serial_events.push(trace.events.len());
                    }
                    trace.events.push(event);
                }
                Some(None) => {}
                None => trace.unparsed.push(line.to_owned()),
            }
        }
        trace.kernel_start = trace
            .events
            .iter()
            .rposition(|e| *e == Event::FwCfg)
            .map_or(0, |i| i + 1);
        trace
    }

    /// The event index where the first serial line starting with `prefix` begins (searching
    /// after byte `from` of the serial output), with the byte offset in the serial output.
    pub fn line_event(&self, prefix: &str, from: usize) -> Option<(usize, usize)> {
        let mut start = from;
        while let Some(found) = self.serial.get(start..)?.find(prefix) {
            let pos = start + found;
            if pos == 0 || self.serial.as_bytes()[pos - 1] == b'\n' {
                return Some((self.serial_events[pos], pos));
            }
            start = pos + 1;
        }
        None
    }

    /// The kernel's part of the run cut at each serial line: segment `i` holds the events
    /// after the end of line `i - 1` up to and including the end of line `i` (accesses made
    /// before and while printing it). Lines that ended before [`Self::kernel_start`] are left
    /// out; a last segment without a line (`line: None`) holds what came after the last one.
    pub fn segments(&self) -> Vec<Segment> {
        let mut segments = Vec::new();
        let mut from = self.kernel_start;
        let mut line_start = 0;
        for (pos, byte) in self.serial.bytes().enumerate() {
            if byte != b'\n' {
                continue;
            }
            let text = &self.serial[line_start..pos];
            line_start = pos + 1;
            let end = self.serial_events[pos] + 1;
            if end <= from {
                continue;
            }
            segments.push(Segment {
                line: Some(crate::protocol::clean_line(text)),
                from,
                to: end,
            });
            from = end;
        }
        if from < self.events.len() {
            segments.push(Segment {
                line: None,
                from,
                to: self.events.len(),
            });
        }
        segments
    }

    /// The shortest run of consecutive segments whose raw accesses are exactly `reads` reads
    /// and `writes` writes (the earliest among equally short ones), as `first..=last` indices.
    pub fn find_window(
        &self,
        segments: &[Segment],
        reads: u64,
        writes: u64,
    ) -> Option<(usize, usize)> {
        let counts: Vec<Counts> = segments
            .iter()
            .map(|s| self.count(s.from, s.to).raw)
            .collect();
        let mut best: Option<(usize, usize)> = None;
        for first in 0..counts.len() {
            let mut sum = Counts::default();
            for (last, c) in counts.iter().enumerate().skip(first) {
                sum.reads += c.reads;
                sum.writes += c.writes;
                if sum.reads > reads || sum.writes > writes {
                    break;
                }
                if sum.reads == reads
                    && sum.writes == writes
                    && best.is_none_or(|(f, l)| last - first < l - f)
                {
                    best = Some((first, last));
                }
            }
        }
        best
    }

    /// Counts the configuration accesses among events `from..to`.
    pub fn count(&self, from: usize, to: usize) -> WindowCounts {
        let mut counts = WindowCounts::default();
        for event in self.events.get(from..to).unwrap_or_default() {
            match *event {
                Event::Raw {
                    write,
                    mechanism,
                    address,
                    ..
                } => {
                    counts.raw.add(write);
                    match mechanism {
                        Mechanism::Ecam => counts.ecam.add(write),
                        Mechanism::Port => counts.port.add(write),
                    }
                    counts
                        .raw_by_function
                        .entry(address)
                        .or_default()
                        .add(write);
                }
                Event::Device { write, address, .. } => {
                    counts.device.add(write);
                    counts
                        .device_by_function
                        .entry(address)
                        .or_default()
                        .add(write);
                }
                Event::Serial(_) | Event::FwCfg => {}
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like QEMU 10's log: firmware accesses through ports, fw_cfg, then the kernel's
    /// UART set-up (DLAB divisor write to offset 0 must not count as a byte), its lines and
    /// ECAM accesses, one of them to an absent function.
    const LOG: &str = "\
memory_region_ops_write cpu 0 mr 0x1 addr 0xcf8 value 0x80000000 size 4 name 'pci-conf-idx'
pci_cfg_read mch 00:00.0 @0x0 -> 0x29c08086
memory_region_ops_read cpu 0 mr 0x2 addr 0xcfc value 0x29c08086 size 4 name 'pci-conf-data'
memory_region_ops_write cpu 0 mr 0x1 addr 0xcf8 value 0x80000804 size 4 name 'pci-conf-idx'
memory_region_ops_write cpu 0 mr 0x2 addr 0xcfe value 0x1 size 2 name 'pci-conf-data'
pci_cfg_write vga 00:01.0 @0x6 <- 0x1
memory_region_ops_write cpu 0 mr 0x3 addr 0x518 value 0x6ec4 size 4 name 'fwcfg.dma'
serial_write write addr 0x03 val 0x80
serial_write write addr 0x00 val 0x01
serial_write write addr 0x03 val 0x03
serial_write write addr 0x00 val 0x68
serial_write write addr 0x00 val 0x69
serial_write write addr 0x00 val 0x0a
memory_region_ops_read cpu 0 mr 0x4 addr 0xb0000000 value 0x29c08086 size 4 name 'pcie-mmcfg-mmio'
pci_cfg_read mch 00:00.0 @0x0 -> 0x29c08086
memory_region_ops_read cpu 0 mr 0x4 addr 0xb0008000 value 0xffffffff size 4 name 'pcie-mmcfg-mmio'
1234@1700000000.000001:memory_region_ops_write cpu 0 mr 0x4 addr 0xb0b0b104 value 0x0 size 4 name 'pcie-mmcfg-mmio'
memory_region_ops_read cpu 0 mr 0x5 addr 0x3f8 value 0x0 size 1 name 'serial'
serial_write write addr 0x00 val 0x50
serial_write write addr 0x00 val 0x0a
pci_cfg_read broken
";

    #[test]
    fn parses_and_counts() {
        let trace = Trace::parse(LOG);
        assert_eq!(trace.serial, "hi\nP\n");
        assert_eq!(trace.unparsed, ["pci_cfg_read broken"]);
        // Events: raw, device, raw, device, fwcfg | S S S raw device raw raw S S.
        assert_eq!(trace.kernel_start, 5);
        let firmware = trace.count(0, trace.kernel_start);
        assert_eq!(
            firmware.raw,
            Counts {
                reads: 1,
                writes: 1
            }
        );
        assert_eq!(firmware.port, firmware.raw);
        assert_eq!(
            firmware.device,
            Counts {
                reads: 1,
                writes: 1
            }
        );
        assert_eq!(
            firmware.raw_by_function[&PciAddress::new(0, 0, 1, 0)],
            Counts {
                reads: 0,
                writes: 1
            }
        );
        assert!(matches!(
            trace.events[2],
            Event::Raw {
                offset: 6,
                mechanism: Mechanism::Port,
                ..
            }
        ));
        let (start, pos) = trace.line_event("hi", 0).unwrap();
        assert_eq!((start, pos), (5, 0));
        let (end, pos) = trace.line_event("P", 0).unwrap();
        assert_eq!(pos, 3);
        let kernel = trace.count(start, end);
        assert_eq!(
            kernel.raw,
            Counts {
                reads: 2,
                writes: 1
            }
        );
        assert_eq!(kernel.ecam, kernel.raw);
        assert_eq!(
            kernel.device,
            Counts {
                reads: 1,
                writes: 0
            }
        );
        assert_eq!(
            kernel.raw_by_function.keys().copied().collect::<Vec<_>>(),
            [
                PciAddress::new(0, 0, 0, 0),
                PciAddress::new(0, 0, 1, 0),
                PciAddress::new(0, 0x0b, 0x01, 3)
            ]
        );
        assert!(matches!(
            trace.events[11],
            Event::Raw {
                write: true,
                offset: 0x104,
                ..
            }
        ));
        assert_eq!(trace.line_event("i", 0), None);
        assert_eq!(trace.line_event("hi", 1), None);
    }

    #[test]
    fn segments_and_windows() {
        let trace = Trace::parse(LOG);
        let segments = trace.segments();
        assert_eq!(
            segments,
            [
                Segment {
                    line: Some("hi".into()),
                    from: 5,
                    to: 8
                },
                Segment {
                    line: Some("P".into()),
                    from: 8,
                    to: 14
                },
            ]
        );
        assert_eq!(trace.find_window(&segments, 2, 1), Some((1, 1)));
        assert_eq!(trace.find_window(&segments, 0, 0), Some((0, 0)));
        assert_eq!(trace.find_window(&segments, 1, 1), None);
        // Without fw_cfg everything counts as the kernel's, and a tail without a newline
        // becomes its own segment.
        let trace = Trace::parse(
            "serial_write write addr 0x00 val 0x61\n\
             serial_write write addr 0x00 val 0x0a\n\
             memory_region_ops_read cpu 0 mr 0x4 addr 0xb0000000 value 0x0 size 4 name 'pcie-mmcfg-mmio'\n",
        );
        assert_eq!(trace.kernel_start, 0);
        let segments = trace.segments();
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[1].line, None);
        assert_eq!(trace.find_window(&segments, 1, 0), Some((1, 1)));
    }

    #[test]
    fn ecam_addresses() {
        assert_eq!(
            ecam_decode(0xb08f_a024),
            (PciAddress::new(0, 0x08, 0x1f, 2), 0x024)
        );
        assert_eq!(ecam_decode(0xb000_0ffc).1, 0xffc);
    }
}
