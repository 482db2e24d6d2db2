//! The kernel's PCI enumeration report on the serial port, and its comparison with QEMU's own
//! view of the bus (`query-pci`, see [`crate::qmp`]).
//!
//! Booted with `test=pci`, the kernel prints, besides its `TEST` lines and log lines:
//!
//! ```text
//! PCIDEV <ssss:bb:dd.f> vendor=<4 hex> device=<4 hex> class=<6 hex> rev=<2 hex> header=<2 hex>
//!        bars=<list|-> irq=<A-D|->/<line> [msi=<n>[,64][,mask]]
//!        [msix=<size>,bir<n>@0x<off>,pba<n>@0x<off>] [caps=<hex,...>] [ecaps=<hex,...>]
//! PCIERR <address> <message>
//! PCISTATS functions=<n> reads=<n> writes=<n>
//! PCI HOLD
//! ```
//!
//! (each `PCIDEV` on one line), where a BAR is `<slot>:<io|mem32|mem64>[p]:0x<addr>:0x<size>`
//! and an optional field may also be given as `-` (e.g. `caps=-`).
//! Fields are parsed by key, so unknown `key=value` fields are kept (in
//! [`KernelFunction::extra`]) and do not break the parser. After `PCI HOLD` the kernel halts
//! without leaving QEMU, so the runner can ask QEMU about the bus and then quit it.
//!
//! [`compare`] checks that both views list the same functions with the same IDs, class and
//! subclass (QEMU does not report the programming interface), header layout (bridge or not),
//! interrupt pin and line, and BARs (slot, I/O or memory, 64-bit, prefetchable, address, size).
//! Two QEMU specifics:
//!
//! - a BAR QEMU reports unmapped (address -1: not assigned, or decoding disabled) is compared
//!   by kind and size only, whatever address the kernel read back from the register;
//! - the expansion ROM (QEMU's BAR 6) is compared only if the kernel lists a slot 6.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::protocol::clean_line;
use crate::qmp::QemuPciFunction;

/// Marker the kernel prints when it is done and waits for the runner to query QEMU.
pub const PCI_HOLD: &str = "PCI HOLD";

/// A PCI function address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// Segment (PCI domain).
    pub segment: u16,
    /// Bus.
    pub bus: u8,
    /// Device (slot), 0..32.
    pub device: u8,
    /// Function, 0..8.
    pub function: u8,
}

impl PciAddress {
    /// An address.
    pub const fn new(segment: u16, bus: u8, device: u8, function: u8) -> Self {
        Self {
            segment,
            bus,
            device,
            function,
        }
    }

    /// Parses `ssss:bb:dd.f` (hex).
    pub fn parse(text: &str) -> Option<Self> {
        let (segment, rest) = text.split_once(':')?;
        let (bus, rest) = rest.split_once(':')?;
        let (device, function) = rest.split_once('.')?;
        let hex = |s: &str, digits: usize| {
            (s.len() == digits && s.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
        };
        let address = Self::new(
            u16::try_from(hex(segment, 4)?).ok()?,
            u8::try_from(hex(bus, 2)?).ok()?,
            u8::try_from(hex(device, 2)?).ok()?,
            u8::try_from(hex(function, 1)?).ok()?,
        );
        (address.device < 32 && address.function < 8).then_some(address)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.segment, self.bus, self.device, self.function
        )
    }
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarSpace {
    /// I/O ports.
    Io,
    /// 32-bit memory.
    Mem32,
    /// 64-bit memory (takes two slots; reported under the lower one).
    Mem64,
}

impl BarSpace {
    /// `io`, `mem32` or `mem64`, as the kernel prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Io => "io",
            Self::Mem32 => "mem32",
            Self::Mem64 => "mem64",
        }
    }
}

/// One BAR (or the expansion ROM, slot 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR index 0..=5, 6 for the expansion ROM.
    pub slot: u8,
    /// I/O, 32-bit or 64-bit memory.
    pub space: BarSpace,
    /// Prefetchable memory.
    pub prefetch: bool,
    /// Base address; `None` when QEMU reports the BAR unmapped.
    pub address: Option<u64>,
    /// Size in bytes.
    pub size: u64,
}

impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}{}:",
            self.slot,
            self.space.as_str(),
            if self.prefetch { "p" } else { "" }
        )?;
        match self.address {
            Some(a) => write!(f, "{a:#x}")?,
            None => f.write_str("unmapped")?,
        }
        write!(f, ":{:#x}", self.size)
    }
}

/// `msi=<count>[,64][,mask]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msi {
    /// Vectors the function can request (Multiple Message Capable, decoded).
    pub count: u16,
    /// 64-bit message address.
    pub addr64: bool,
    /// Per-vector masking.
    pub mask: bool,
}

/// `msix=<size>,bir<n>@0x<off>,pba<n>@0x<off>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msix {
    /// Table size (entries).
    pub size: u16,
    /// BAR holding the table.
    pub table_bir: u8,
    /// Offset of the table in that BAR.
    pub table_offset: u64,
    /// BAR holding the pending-bit array.
    pub pba_bir: u8,
    /// Offset of the PBA in that BAR.
    pub pba_offset: u64,
}

/// One `PCIDEV` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFunction {
    /// Address.
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class, subclass and programming interface (`class << 16 | subclass << 8 | progif`).
    pub class: u32,
    /// Revision ID.
    pub revision: u8,
    /// Header Type register (bit 7: multifunction).
    pub header: u8,
    /// Present BARs.
    pub bars: Vec<Bar>,
    /// Interrupt pin: 0 none, 1..=4 INTA..INTD.
    pub irq_pin: u8,
    /// Interrupt line.
    pub irq_line: u8,
    /// MSI capability.
    pub msi: Option<Msi>,
    /// MSI-X capability.
    pub msix: Option<Msix>,
    /// Capability IDs in list order.
    pub caps: Vec<u8>,
    /// Extended capability IDs in list order.
    pub ecaps: Vec<u16>,
    /// Fields this parser does not know, verbatim.
    pub extra: BTreeMap<String, String>,
    /// The whole line (cleaned).
    pub line: String,
}

impl KernelFunction {
    /// The header layout (Header Type without the multifunction bit): 0 endpoint, 1 PCI-PCI
    /// bridge, 2 CardBus bridge.
    pub fn layout(&self) -> u8 {
        self.header & 0x7f
    }

    /// The BAR in `slot`.
    pub fn bar(&self, slot: u8) -> Option<&Bar> {
        self.bars.iter().find(|b| b.slot == slot)
    }
}

/// A `PCIERR <address> <message>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciError {
    /// The address field, verbatim.
    pub address: String,
    /// The rest of the line.
    pub message: String,
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PCIERR {} {}", self.address, self.message)
    }
}

/// The `PCISTATS` line: configuration-space accesses the kernel made while enumerating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciStats {
    /// `functions=`.
    pub functions: u64,
    /// `reads=`.
    pub reads: u64,
    /// `writes=`.
    pub writes: u64,
    /// Other `key=value` fields, verbatim.
    pub extra: BTreeMap<String, String>,
}

/// Everything PCI-related the kernel printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelPci {
    /// `PCIDEV` lines in order.
    pub functions: Vec<KernelFunction>,
    /// `PCIERR` lines.
    pub errors: Vec<PciError>,
    /// The (last) `PCISTATS` line.
    pub stats: Option<PciStats>,
    /// Whether `PCI HOLD` appeared.
    pub hold: bool,
    /// Malformed lines and fields.
    pub problems: Vec<String>,
}

const KEYWORDS: [&str; 4] = ["PCIDEV ", "PCIERR ", "PCISTATS ", PCI_HOLD];

fn hex_exact(value: &str, digits: usize) -> Option<u64> {
    (value.len() == digits && value.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(value, 16).ok())
        .flatten()
}

/// `0x<hex>` (the prefix is required).
fn hex_prefixed(value: &str) -> Option<u64> {
    let digits = value.strip_prefix("0x")?;
    (!digits.is_empty() && digits.len() <= 16)
        .then(|| u64::from_str_radix(digits, 16).ok())
        .flatten()
}

/// Hex with an optional `0x`.
fn hex_loose(value: &str) -> Option<u64> {
    let digits = value.strip_prefix("0x").unwrap_or(value);
    (!digits.is_empty() && digits.len() <= 16)
        .then(|| u64::from_str_radix(digits, 16).ok())
        .flatten()
}

fn parse_bar(text: &str) -> Result<Bar, String> {
    let mut parts = text.split(':');
    let (Some(slot), Some(kind), Some(address), Some(size), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(format!(
            "BAR `{text}` is not <slot>:<io|mem32|mem64>[p]:0x<addr>:0x<size>"
        ));
    };
    let slot: u8 = slot
        .parse()
        .ok()
        .filter(|&s| s <= 6)
        .ok_or_else(|| format!("bad BAR slot in `{text}`"))?;
    let (kind, prefetch) = match kind.strip_suffix('p') {
        Some(k) => (k, true),
        None => (kind, false),
    };
    let space = match kind {
        "io" if !prefetch => BarSpace::Io,
        "mem32" => BarSpace::Mem32,
        "mem64" => BarSpace::Mem64,
        _ => return Err(format!("bad BAR kind in `{text}`")),
    };
    let address = hex_prefixed(address).ok_or_else(|| format!("bad BAR address in `{text}`"))?;
    let size = hex_prefixed(size).ok_or_else(|| format!("bad BAR size in `{text}`"))?;
    Ok(Bar {
        slot,
        space,
        prefetch,
        address: Some(address),
        size,
    })
}

fn parse_bars(value: &str) -> Result<Vec<Bar>, String> {
    if value == "-" {
        return Ok(Vec::new());
    }
    let bars = value
        .split(',')
        .map(parse_bar)
        .collect::<Result<Vec<_>, _>>()?;
    let mut slots = BTreeSet::new();
    for bar in &bars {
        if !slots.insert(bar.slot) {
            return Err(format!("BAR slot {} listed twice", bar.slot));
        }
    }
    Ok(bars)
}

fn parse_irq(value: &str) -> Result<(u8, u8), String> {
    let (pin, line) = value
        .split_once('/')
        .ok_or_else(|| format!("irq=`{value}` is not <A-D|->/<line>"))?;
    let pin = match pin {
        "-" => 0,
        "A" => 1,
        "B" => 2,
        "C" => 3,
        "D" => 4,
        _ => return Err(format!("bad interrupt pin in irq=`{value}`")),
    };
    let line = line
        .parse()
        .map_err(|_| format!("bad interrupt line in irq=`{value}`"))?;
    Ok((pin, line))
}

fn parse_msi(value: &str) -> Result<Msi, String> {
    let mut parts = value.split(',');
    let count = parts
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|c: &u16| (1..=32).contains(c) && c.is_power_of_two())
        .ok_or_else(|| format!("bad MSI vector count in msi=`{value}`"))?;
    let mut msi = Msi {
        count,
        addr64: false,
        mask: false,
    };
    for flag in parts {
        match flag {
            "64" if !msi.addr64 => msi.addr64 = true,
            "mask" if !msi.mask => msi.mask = true,
            _ => return Err(format!("bad MSI flag `{flag}` in msi=`{value}`")),
        }
    }
    Ok(msi)
}

fn parse_bir_offset(text: &str, prefix: &str) -> Option<(u8, u64)> {
    let (bir, offset) = text.strip_prefix(prefix)?.split_once('@')?;
    let bir = bir.parse().ok().filter(|&b: &u8| b <= 5)?;
    Some((bir, hex_prefixed(offset)?))
}

fn parse_msix(value: &str) -> Result<Msix, String> {
    let bad = || format!("msix=`{value}` is not <size>,bir<n>@0x<off>,pba<n>@0x<off>");
    let mut parts = value.split(',');
    let (Some(size), Some(table), Some(pba), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let size = size
        .parse()
        .ok()
        .filter(|s| (1..=2048).contains(s))
        .ok_or_else(bad)?;
    let (table_bir, table_offset) = parse_bir_offset(table, "bir").ok_or_else(bad)?;
    let (pba_bir, pba_offset) = parse_bir_offset(pba, "pba").ok_or_else(bad)?;
    Ok(Msix {
        size,
        table_bir,
        table_offset,
        pba_bir,
        pba_offset,
    })
}

fn parse_id_list<T: TryFrom<u64>>(value: &str, key: &str) -> Result<Vec<T>, String> {
    value
        .split(',')
        .map(|id| {
            hex_loose(id)
                .and_then(|v| T::try_from(v).ok())
                .ok_or_else(|| format!("bad capability ID `{id}` in {key}=`{value}`"))
        })
        .collect()
}

/// Parses the text after `PCIDEV `. Malformed optional or unknown parts become `problems`;
/// a malformed address or mandatory field rejects the line.
fn parse_pcidev(rest: &str, problems: &mut Vec<String>) -> Result<KernelFunction, String> {
    let mut tokens = rest.split_whitespace();
    let address_text = tokens.next().ok_or("no address")?;
    let address = PciAddress::parse(address_text)
        .ok_or_else(|| format!("bad address `{address_text}` (want ssss:bb:dd.f)"))?;
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for token in tokens {
        match token.split_once('=') {
            Some((key, value)) => {
                if fields.insert(key, value).is_some() {
                    problems.push(format!("PCIDEV {address}: field `{key}` given twice"));
                }
            }
            None => problems.push(format!(
                "PCIDEV {address}: `{token}` is not a key=value field"
            )),
        }
    }
    let mut take = |key: &str| fields.remove(key).ok_or_else(|| format!("no {key}= field"));
    let hex_field = |value: &str, key: &str, digits: usize| {
        hex_exact(value, digits)
            .ok_or_else(|| format!("{key}=`{value}` is not {digits} hex digits"))
    };
    let vendor = hex_field(take("vendor")?, "vendor", 4)?;
    let device = hex_field(take("device")?, "device", 4)?;
    let class = hex_field(take("class")?, "class", 6)?;
    let revision = hex_field(take("rev")?, "rev", 2)?;
    let header = hex_field(take("header")?, "header", 2)?;
    let bars = parse_bars(take("bars")?)?;
    let (irq_pin, irq_line) = parse_irq(take("irq")?)?;
    // An optional field may also be printed as `-` (none).
    let mut optional = |key: &str, problems: &mut Vec<String>| {
        let value = fields.remove(key).filter(|&v| v != "-")?;
        if value.is_empty() {
            problems.push(format!("PCIDEV {address}: empty {key}="));
            None
        } else {
            Some(value)
        }
    };
    fn note<T>(r: Result<T, String>, address: PciAddress, problems: &mut Vec<String>) -> Option<T> {
        r.map_err(|e| problems.push(format!("PCIDEV {address}: {e}")))
            .ok()
    }
    let msi = optional("msi", problems)
        .map(parse_msi)
        .and_then(|r| note(r, address, problems));
    let msix = optional("msix", problems)
        .map(parse_msix)
        .and_then(|r| note(r, address, problems));
    let caps = optional("caps", problems)
        .map(|v| parse_id_list(v, "caps"))
        .and_then(|r| note(r, address, problems))
        .unwrap_or_default();
    let ecaps = optional("ecaps", problems)
        .map(|v| parse_id_list(v, "ecaps"))
        .and_then(|r| note(r, address, problems))
        .unwrap_or_default();
    // The widths were checked above, so these conversions cannot fail.
    let narrow = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
    Ok(KernelFunction {
        address,
        vendor: narrow(vendor),
        device: narrow(device),
        class: u32::try_from(class).unwrap_or(u32::MAX),
        revision: u8::try_from(revision).unwrap_or(u8::MAX),
        header: u8::try_from(header).unwrap_or(u8::MAX),
        bars,
        irq_pin,
        irq_line,
        msi,
        msix,
        caps,
        ecaps,
        extra: fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        line: String::new(),
    })
}

fn parse_stats(rest: &str) -> Result<PciStats, String> {
    let mut fields = BTreeMap::new();
    for token in rest.split_whitespace() {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| format!("`{token}` is not a key=value field"))?;
        fields.insert(key.to_owned(), value.to_owned());
    }
    let mut number = |key: &str| {
        let value = fields
            .remove(key)
            .ok_or_else(|| format!("no {key}= field"))?;
        value
            .parse()
            .map_err(|_| format!("{key}=`{value}` is not a decimal number"))
    };
    Ok(PciStats {
        functions: number("functions")?,
        reads: number("reads")?,
        writes: number("writes")?,
        extra: fields,
    })
}

impl KernelPci {
    /// Parses a serial log. A keyword may start in the middle of a physical line (after other
    /// output without a newline); everything else is ignored.
    pub fn parse(serial: &str) -> Self {
        let mut report = Self::default();
        for line in serial.lines().map(clean_line) {
            let Some(pos) = KEYWORDS.iter().filter_map(|k| line.find(k)).min() else {
                continue;
            };
            let text = line[pos..].trim_end();
            if let Some(rest) = text.strip_prefix("PCIDEV ") {
                match parse_pcidev(rest, &mut report.problems) {
                    Ok(mut function) => {
                        function.line = text.to_owned();
                        report.functions.push(function);
                    }
                    Err(e) => report
                        .problems
                        .push(format!("bad PCIDEV line ({e}): {text}")),
                }
            } else if let Some(rest) = text.strip_prefix("PCIERR ") {
                let rest = rest.trim();
                let (address, message) = rest.split_once(' ').unwrap_or((rest, ""));
                report.errors.push(PciError {
                    address: address.to_owned(),
                    message: message.trim().to_owned(),
                });
            } else if let Some(rest) = text.strip_prefix("PCISTATS ") {
                match parse_stats(rest) {
                    Ok(stats) => {
                        if report.stats.is_some() {
                            report
                                .problems
                                .push(format!("second PCISTATS line: {text}"));
                        }
                        report.stats = Some(stats);
                    }
                    Err(e) => report
                        .problems
                        .push(format!("bad PCISTATS line ({e}): {text}")),
                }
            } else if text == PCI_HOLD {
                report.hold = true;
            } else if text.starts_with(PCI_HOLD) {
                report.problems.push(format!("bad PCI HOLD line: {text}"));
            }
        }
        report
    }

    /// The function at `address`.
    pub fn function(&self, address: PciAddress) -> Option<&KernelFunction> {
        self.functions.iter().find(|f| f.address == address)
    }
}

/// The result of [`compare`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Every difference, one sentence each.
    pub differences: Vec<String>,
    /// Things deliberately not compared (e.g. an expansion ROM the kernel does not list).
    pub notes: Vec<String>,
    /// Addresses with at least one difference.
    pub differing: BTreeSet<PciAddress>,
}

impl Comparison {
    /// Whether the views agree.
    pub fn matches(&self) -> bool {
        self.differences.is_empty()
    }

    fn differ(&mut self, address: PciAddress, message: String) {
        self.differing.insert(address);
        self.differences.push(format!("{address}: {message}"));
    }
}

fn pin_name(pin: u8) -> String {
    match pin {
        0 => "-".to_owned(),
        1..=4 => char::from(b'A' + pin - 1).to_string(),
        other => format!("?{other}"),
    }
}

fn compare_bars(q: &QemuPciFunction, k: &KernelFunction, out: &mut Comparison) {
    let address = q.address;
    for qb in &q.bars {
        let Some(kb) = k.bar(qb.slot) else {
            if qb.slot == 6 {
                out.notes.push(format!(
                    "{address}: expansion ROM ({:#x} bytes) not listed by the kernel, not compared",
                    qb.size
                ));
            } else {
                out.differ(
                    address,
                    format!("BAR {}: QEMU has {qb}, the kernel lists none", qb.slot),
                );
            }
            continue;
        };
        let mut problems = Vec::new();
        // The expansion ROM has no type bits: compare its size (and address) only.
        if qb.slot != 6 && (kb.space != qb.space || kb.prefetch != qb.prefetch) {
            problems.push("type");
        }
        if kb.size != qb.size {
            problems.push("size");
        }
        if let Some(qa) = qb.address
            && kb.address != Some(qa)
        {
            problems.push("address");
        }
        if !problems.is_empty() {
            out.differ(
                address,
                format!(
                    "BAR {}: {} differ: QEMU {qb}, kernel {kb}",
                    qb.slot,
                    problems.join(" and ")
                ),
            );
        } else if qb.address.is_none() {
            out.notes.push(format!(
                "{address}: BAR {} unmapped in QEMU; kernel read {kb}; kind and size compared",
                qb.slot
            ));
        }
    }
    for kb in &k.bars {
        if !q.bars.iter().any(|qb| qb.slot == kb.slot) {
            out.differ(
                address,
                format!("BAR {}: the kernel lists {kb}, QEMU has none", kb.slot),
            );
        }
    }
}

fn compare_function(q: &QemuPciFunction, k: &KernelFunction, out: &mut Comparison) {
    let address = q.address;
    if (k.vendor, k.device) != (q.vendor, q.device) {
        out.differ(
            address,
            format!(
                "IDs: QEMU {:04x}:{:04x}, kernel {:04x}:{:04x}",
                q.vendor, q.device, k.vendor, k.device
            ),
        );
    }
    if k.class >> 8 != u32::from(q.class) {
        out.differ(
            address,
            format!(
                "class/subclass: QEMU {:04x}, kernel {:04x} (class={:06x})",
                q.class,
                k.class >> 8,
                k.class
            ),
        );
    }
    let qemu_layout = u8::from(q.bridge.is_some());
    if k.layout() != qemu_layout {
        out.differ(
            address,
            format!(
                "header layout: QEMU {}, kernel header={:02x} (layout {})",
                if q.bridge.is_some() {
                    "PCI-PCI bridge (1)"
                } else {
                    "endpoint (0)"
                },
                k.header,
                k.layout()
            ),
        );
    }
    if k.irq_pin != q.irq_pin {
        out.differ(
            address,
            format!(
                "interrupt pin: QEMU {}, kernel {}",
                pin_name(q.irq_pin),
                pin_name(k.irq_pin)
            ),
        );
    }
    if let Some(line) = q.irq_line
        && line != k.irq_line
    {
        out.differ(
            address,
            format!("interrupt line: QEMU {line}, kernel {}", k.irq_line),
        );
    }
    compare_bars(q, k, out);
}

/// Compares QEMU's view with the kernel's `PCIDEV` lines.
pub fn compare(qemu: &[QemuPciFunction], kernel: &[KernelFunction]) -> Comparison {
    let mut out = Comparison::default();
    let mut by_address: BTreeMap<PciAddress, &KernelFunction> = BTreeMap::new();
    // With duplicates, the first line is compared and the others only reported.
    for k in kernel {
        match by_address.entry(k.address) {
            Entry::Occupied(_) => {
                out.differ(k.address, "listed more than once by the kernel".to_owned());
            }
            Entry::Vacant(slot) => {
                slot.insert(k);
            }
        }
    }
    let mut seen = BTreeSet::new();
    for q in qemu {
        seen.insert(q.address);
        match by_address.get(&q.address) {
            Some(k) => compare_function(q, k, &mut out),
            None => out.differ(
                q.address,
                format!(
                    "QEMU has {:04x}:{:04x} (class {:04x}{}), the kernel does not list it",
                    q.vendor,
                    q.device,
                    q.class,
                    q.class_desc
                        .as_deref()
                        .map_or_else(String::new, |d| format!(", {d}"))
                ),
            ),
        }
    }
    for k in by_address.values() {
        if !seen.contains(&k.address) {
            out.differ(
                k.address,
                format!(
                    "the kernel lists {:04x}:{:04x} (class {:06x}), QEMU does not have it",
                    k.vendor, k.device, k.class
                ),
            );
        }
    }
    // A slot with functions other than 0 must say so in function 0's Header Type.
    for q in qemu.iter().filter(|q| q.address.function != 0) {
        let zero = PciAddress {
            function: 0,
            ..q.address
        };
        if let Some(k) = by_address.get(&zero)
            && k.header & 0x80 == 0
        {
            out.differ(
                zero,
                format!(
                    "QEMU has function {} in this slot, but the kernel's header={:02x} lacks \
                     the multifunction bit",
                    q.address, k.header
                ),
            );
        }
    }
    out.differences.dedup();
    out
}

/// One QEMU function in a compact, `PCIDEV`-like form (only the fields QEMU reports).
pub fn describe_qemu(q: &QemuPciFunction) -> String {
    let bars = if q.bars.is_empty() {
        "-".to_owned()
    } else {
        q.bars
            .iter()
            .map(Bar::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{} vendor={:04x} device={:04x} class={:04x}.. header={} bars={bars} irq={}/{}{}",
        q.address,
        q.vendor,
        q.device,
        q.class,
        if q.bridge.is_some() {
            "bridge"
        } else {
            "endpoint"
        },
        pin_name(q.irq_pin),
        q.irq_line.map_or_else(|| "?".to_owned(), |l| l.to_string()),
        q.class_desc
            .as_deref()
            .map_or_else(String::new, |d| format!(" ({d})")),
    )
}

/// A readable diff of both views: the list of differences, then every address in order,
/// `  ` when both agree, `- QEMU` / `+ kernel` lines where they do not, plus the notes.
pub fn render_diff(qemu: &[QemuPciFunction], kernel: &[KernelFunction], c: &Comparison) -> String {
    let mut out = String::new();
    if c.matches() {
        out.push_str("QEMU and the kernel agree.\n");
    } else {
        out.push_str(&format!("{} difference(s):\n", c.differences.len()));
        for d in &c.differences {
            out.push_str(&format!("  * {d}\n"));
        }
    }
    out.push_str("functions (`-` QEMU's view, `+` the kernel's PCIDEV line):\n");
    let addresses: BTreeSet<PciAddress> = qemu
        .iter()
        .map(|q| q.address)
        .chain(kernel.iter().map(|k| k.address))
        .collect();
    for address in addresses {
        let q = qemu.iter().find(|q| q.address == address);
        let ks: Vec<_> = kernel.iter().filter(|k| k.address == address).collect();
        if !c.differing.contains(&address) {
            if let Some(q) = q {
                out.push_str(&format!("    {}\n", describe_qemu(q)));
            }
            continue;
        }
        match q {
            Some(q) => out.push_str(&format!("  - {}\n", describe_qemu(q))),
            None => out.push_str(&format!("  - {address} (not in QEMU's view)\n")),
        }
        if ks.is_empty() {
            out.push_str(&format!("  + {address} (no PCIDEV line)\n"));
        }
        for k in ks {
            let line = k.line.strip_prefix("PCIDEV ").unwrap_or(&k.line);
            out.push_str(&format!("  + {line}\n"));
        }
    }
    if !c.notes.is_empty() {
        out.push_str("not compared:\n");
        for n in &c.notes {
            out.push_str(&format!("  {n}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::parse_query_pci_text;

    const FIXTURE: &str = include_str!("../tests/fixtures/query-pci-topology-b.json");

    fn bars_text(bars: &[Bar]) -> String {
        if bars.is_empty() {
            return "-".to_owned();
        }
        bars.iter()
            .map(|b| {
                format!(
                    "{}:{}{}:{:#x}:{:#x}",
                    b.slot,
                    b.space.as_str(),
                    if b.prefetch { "p" } else { "" },
                    b.address.unwrap_or(0),
                    b.size
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `PCIDEV` line a correct kernel would print for a QEMU function (ROM left out,
    /// programming interface 00, multifunction bit when QEMU has other functions in the slot).
    fn pcidev_for(q: &QemuPciFunction, all: &[QemuPciFunction]) -> String {
        let multi = q.address.function == 0
            && all.iter().any(|o| {
                o.address.function != 0
                    && o.address.device == q.address.device
                    && o.address.bus == q.address.bus
            });
        let header = u8::from(q.bridge.is_some()) | if multi { 0x80 } else { 0 };
        let bars: Vec<Bar> = q.bars.iter().filter(|b| b.slot != 6).copied().collect();
        format!(
            "PCIDEV {} vendor={:04x} device={:04x} class={:04x}00 rev=00 header={header:02x} \
             bars={} irq={}/{}",
            q.address,
            q.vendor,
            q.device,
            q.class,
            bars_text(&bars),
            pin_name(q.irq_pin),
            q.irq_line.unwrap_or(0)
        )
    }

    fn fixture() -> Vec<QemuPciFunction> {
        parse_query_pci_text(FIXTURE).unwrap()
    }

    fn kernel_log(qemu: &[QemuPciFunction]) -> String {
        let mut log = String::from("TEST START pci\n");
        for q in qemu {
            log.push_str(&pcidev_for(q, qemu));
            log.push_str("\r\n");
        }
        log.push_str("PCISTATS functions=21 reads=1000 writes=40 ecam=1\nPCI HOLD\n");
        log
    }

    #[test]
    fn address_round_trip() {
        let a = PciAddress::parse("0000:80:1f.7").unwrap();
        assert_eq!(a, PciAddress::new(0, 0x80, 0x1f, 7));
        assert_eq!(a.to_string(), "0000:80:1f.7");
        for bad in [
            "00:1f.7",
            "0000:80:20.0",
            "0000:80:1f.8",
            "0000:80:1f",
            "000g:00:00.0",
        ] {
            assert_eq!(PciAddress::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_the_example_line() {
        let log = "[    0.1] INFO pci: scanning\n\
PCIDEV 0000:00:02.0 vendor=1234 device=1111 class=030000 rev=02 header=00 \
bars=0:mem32p:0xfd000000:0x1000000,2:mem32:0xfebf4000:0x1000 irq=-/0\r\n\
PCIDEV 0000:01:00.0 vendor=1b36 device=0010 class=010802 rev=02 header=00 \
bars=0:mem64:0xfe800000:0x4000 irq=A/11 msix=65,bir0@0x2000,pba0@0x3000 \
caps=11,01,05,10 ecaps=1,0003 numa=0\n\
PCIDEV 0000:00:09.0 vendor=1234 device=11e8 class=00ff00 rev=10 header=00 \
bars=0:mem32:0xfea00000:0x100000 irq=A/10 msi=1,64 caps=5 ecaps=- msix=-\n\
garbage PCIERR 0000:00:05.0 BAR 2 overlaps 0000:00:04.0 BAR 0\n\
PCISTATS functions=3 reads=120 writes=12 probes=96\nPCI HOLD\n";
        let pci = KernelPci::parse(log);
        assert_eq!(pci.problems, Vec::<String>::new());
        assert!(pci.hold);
        assert_eq!(pci.functions.len(), 3);
        let vga = &pci.functions[0];
        assert_eq!(vga.address, PciAddress::new(0, 0, 2, 0));
        assert_eq!((vga.vendor, vga.device), (0x1234, 0x1111));
        assert_eq!(vga.class, 0x03_0000);
        assert_eq!((vga.revision, vga.header), (2, 0));
        assert_eq!(
            vga.bars,
            [
                Bar {
                    slot: 0,
                    space: BarSpace::Mem32,
                    prefetch: true,
                    address: Some(0xfd00_0000),
                    size: 0x100_0000
                },
                Bar {
                    slot: 2,
                    space: BarSpace::Mem32,
                    prefetch: false,
                    address: Some(0xfebf_4000),
                    size: 0x1000
                }
            ]
        );
        assert_eq!((vga.irq_pin, vga.irq_line), (0, 0));
        assert_eq!(vga.msi, None);
        assert!(vga.line.starts_with("PCIDEV 0000:00:02.0 vendor=1234"));
        let nvme = &pci.functions[1];
        assert_eq!(
            nvme.msix,
            Some(Msix {
                size: 65,
                table_bir: 0,
                table_offset: 0x2000,
                pba_bir: 0,
                pba_offset: 0x3000
            })
        );
        assert_eq!(nvme.caps, [0x11, 0x01, 0x05, 0x10]);
        assert_eq!(nvme.ecaps, [0x1, 0x3]);
        assert_eq!(nvme.extra.get("numa").map(String::as_str), Some("0"));
        assert_eq!((nvme.irq_pin, nvme.irq_line), (1, 11));
        let edu = &pci.functions[2];
        assert_eq!(
            edu.msi,
            Some(Msi {
                count: 1,
                addr64: true,
                mask: false
            })
        );
        assert_eq!(edu.msix, None);
        assert_eq!(
            pci.errors,
            [PciError {
                address: "0000:00:05.0".into(),
                message: "BAR 2 overlaps 0000:00:04.0 BAR 0".into()
            }]
        );
        let stats = pci.stats.unwrap();
        assert_eq!((stats.functions, stats.reads, stats.writes), (3, 120, 12));
        assert_eq!(stats.extra.get("probes").map(String::as_str), Some("96"));
    }

    #[test]
    fn malformed_lines() {
        let log = "PCIDEV 0000:00:02.0 vendor=12345 device=1111 class=030000 rev=02 header=00 bars=- irq=-/0\n\
PCIDEV 00:02.0 vendor=1234\n\
PCIDEV 0000:00:03.0 vendor=1234 device=1111 class=030000 rev=02 header=00 bars=0:mem16:0x0:0x10 irq=-/0\n\
PCIDEV 0000:00:04.0 vendor=1234 device=1111 class=030000 rev=02 header=00 bars=0:iop:0x0:0x10 irq=-/0\n\
PCIDEV 0000:00:05.0 vendor=1234 device=1111 class=030000 rev=02 header=00 bars=- irq=E/0\n\
PCIDEV 0000:00:06.0 vendor=1234 device=1111 class=030000 rev=02 header=00 bars=- irq=A/1 msi=3 msix=4,bir9@0x0,pba0@0x0 stray\n\
PCIDEV 0000:00:07.0 vendor=1234 device=1111 class=030000 rev=02 header=00 bars=0:io:0xc000:0x20,0:io:0xc000:0x20 irq=-/0\n\
PCISTATS functions=x\nPCI HOLD now\n";
        let pci = KernelPci::parse(log);
        // Only 06.0 survives, with three problems noted.
        assert_eq!(pci.functions.len(), 1, "{:#?}", pci.problems);
        assert_eq!(pci.functions[0].address, PciAddress::new(0, 0, 6, 0));
        assert_eq!(pci.functions[0].msi, None);
        assert_eq!(pci.functions[0].msix, None);
        assert_eq!(pci.problems.len(), 6 + 3 + 2, "{:#?}", pci.problems);
        assert!(!pci.hold);
        assert!(pci.stats.is_none());
    }

    #[test]
    fn fixture_matches_a_correct_kernel() {
        let qemu = fixture();
        let pci = KernelPci::parse(&kernel_log(&qemu));
        assert_eq!(pci.problems, Vec::<String>::new());
        let c = compare(&qemu, &pci.functions);
        assert!(c.matches(), "{}", render_diff(&qemu, &pci.functions, &c));
        // The expansion ROMs (VGA, virtio-net, e1000e) are not compared, and noted.
        assert_eq!(
            c.notes
                .iter()
                .filter(|n| n.contains("expansion ROM"))
                .count(),
            3,
            "{:#?}",
            c.notes
        );
        let diff = render_diff(&qemu, &pci.functions, &c);
        assert!(diff.starts_with("QEMU and the kernel agree."), "{diff}");
    }

    #[test]
    fn rom_is_compared_when_the_kernel_lists_it() {
        let qemu = fixture();
        let vga = qemu.iter().find(|q| q.device == 0x1111).unwrap();
        let line = pcidev_for(vga, &qemu).replace(" irq=", ",6:mem32:0xfeb00000:0x10000 irq=");
        let pci = KernelPci::parse(&line);
        let c = compare(std::slice::from_ref(vga), &pci.functions);
        assert!(c.matches(), "{:#?}", c);
        let wrong = line.replace(":0x10000 irq", ":0x20000 irq");
        let pci = KernelPci::parse(&wrong);
        let c = compare(std::slice::from_ref(vga), &pci.functions);
        assert_eq!(c.differences.len(), 1, "{:#?}", c);
        assert!(c.differences[0].contains("BAR 6: size differ"), "{c:#?}");
    }

    #[test]
    fn unmapped_bars_compare_kind_and_size() {
        let mut qemu = fixture();
        let nvme = qemu.iter_mut().find(|q| q.device == 0x0010).unwrap();
        nvme.bars[0].address = None;
        let nvme = nvme.clone();
        // The kernel read back 0 (or anything): fine.
        let line = pcidev_for(&nvme, &qemu);
        assert!(line.contains("bars=0:mem64:0x0:0x4000"), "{line}");
        let c = compare(
            std::slice::from_ref(&nvme),
            &KernelPci::parse(&line).functions,
        );
        assert!(c.matches(), "{c:#?}");
        assert!(c.notes[0].contains("unmapped"), "{c:#?}");
        let other = line.replace("0:mem64:0x0:", "0:mem64:0xfe800000:");
        let c = compare(
            std::slice::from_ref(&nvme),
            &KernelPci::parse(&other).functions,
        );
        assert!(c.matches(), "{c:#?}");
        // But not another kind or size.
        let bad = line.replace("0:mem64:0x0:0x4000", "0:mem32:0x0:0x2000");
        let c = compare(
            std::slice::from_ref(&nvme),
            &KernelPci::parse(&bad).functions,
        );
        assert!(c.differences[0].contains("type and size differ"), "{c:#?}");
    }

    /// Every kind of mismatch, each found and named.
    #[test]
    fn differences_are_found_and_rendered() {
        let qemu = fixture();
        let log = kernel_log(&qemu);
        let edit = |from: &str, to: &str, log: &str| {
            assert!(log.contains(from), "{from}");
            log.replacen(from, to, 1)
        };
        let nvme = qemu.iter().find(|q| q.device == 0x0010).unwrap();
        let nvme_bar = bars_text(&nvme.bars);
        let rp = qemu.iter().find(|q| q.device == 0x000c).unwrap();
        let e1000e = qemu.iter().find(|q| q.device == 0x10d3).unwrap();
        let e1000e_io = e1000e.bars.iter().find(|b| b.slot == 2).unwrap();
        let io_text = format!("2:io:{:#x}:0x20", e1000e_io.address.unwrap());
        let mut bad = edit("device=0010", "device=0011", &log);
        bad = edit(&nvme_bar, &nvme_bar.replace("mem64", "mem64p"), &bad);
        bad = edit("class=010800", "class=010900", &bad);
        bad = edit(&io_text, &io_text.replace("0x20", "0x40"), &bad);
        // A root port claiming to be an endpoint.
        let rp_line = pcidev_for(rp, &qemu);
        bad = edit(&rp_line, &rp_line.replace("header=01", "header=00"), &bad);
        // Drop the host bridge, invent a function, list one twice.
        let host = pcidev_for(&qemu[0], &qemu);
        bad = edit(&format!("{host}\r\n"), "", &bad);
        bad.push_str(
            "PCIDEV 0000:00:1e.0 vendor=8086 device=244e class=060401 rev=92 header=01 bars=- irq=-/0\n",
        );
        bad.push_str(&format!("{rp_line}\n"));
        // Multifunction bit missing on 00:0b.0, pin and line wrong on edu.
        let rng0 = qemu
            .iter()
            .find(|q| q.device == 0x1005 && q.address.bus == 0 && q.address.function == 0)
            .unwrap();
        let rng_line = pcidev_for(rng0, &qemu);
        bad = edit(&rng_line, &rng_line.replace("header=80", "header=00"), &bad);
        let edu = qemu.iter().find(|q| q.device == 0x11e8).unwrap();
        let edu_line = pcidev_for(edu, &qemu);
        bad = edit(&edu_line, &edu_line.replace("irq=A/", "irq=B/1"), &bad);
        // An extra BAR.
        let vga_line = pcidev_for(&qemu[1], &qemu);
        bad = edit(
            &vga_line,
            &vga_line.replace(" irq=", ",5:io:0x1000:0x8 irq="),
            &bad,
        );

        let pci = KernelPci::parse(&bad);
        assert_eq!(pci.problems, Vec::<String>::new());
        let c = compare(&qemu, &pci.functions);
        let text = render_diff(&qemu, &pci.functions, &c);
        for expected in [
            "IDs: QEMU 1b36:0010, kernel 1b36:0011",
            "BAR 0: type differ",
            "class/subclass: QEMU 0108, kernel 0109",
            "BAR 2: size differ",
            "header layout: QEMU PCI-PCI bridge (1)",
            "0000:00:00.0: QEMU has 8086:29c0",
            "0000:00:1e.0: the kernel lists 8086:244e",
            "listed more than once",
            "lacks the multifunction bit",
            "interrupt pin: QEMU A, kernel B",
            "interrupt line: QEMU",
            "BAR 5: the kernel lists 5:io:0x1000:0x8, QEMU has none",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(!c.matches());
        assert!(text.contains("\n  - 0000:00:00.0 vendor=8086"), "{text}");
        assert!(
            text.contains("\n  + 0000:00:00.0 (no PCIDEV line)"),
            "{text}"
        );
        assert!(
            text.contains("\n  - 0000:00:1e.0 (not in QEMU's view)"),
            "{text}"
        );
        // An agreeing function is shown once, unmarked.
        let ahci = qemu.iter().find(|q| q.device == 0x2922).unwrap();
        assert!(
            text.contains(&format!("\n    {}\n", describe_qemu(ahci))),
            "{text}"
        );
    }
}
