//! The oracles: what each parser must say, decoded here independently of the crate. Each
//! `check_*` runs one parser on a byte slice and compares its result with a small decoder
//! of its own (which header problems must be refused and with which error, which MADT and
//! MCFG entries must be kept, which FADT fields exist at which length); it gives the
//! parser's [`Verdict`], or why the result is implausible.

use firmware::tables::{
    self, Fadt, HEADER_LEN, Hpet, Madt, Mcfg, Rsdp, SdtHeader, Table, TableError,
};

use crate::bytes::{byte_sum, get_u8, get_u16, get_u32, get_u64};

// FADT field offsets (ACPI 6.5 Table 5.9).
pub(crate) const FIRMWARE_CTRL: usize = 36;
pub(crate) const DSDT: usize = 40;
pub(crate) const PM_TMR_BLK: usize = 76;
pub(crate) const FLAGS: usize = 112;
pub(crate) const RESET_REG: usize = 116;
pub(crate) const RESET_VALUE: usize = 128;
pub(crate) const X_FIRMWARE_CTRL: usize = 132;
pub(crate) const X_DSDT: usize = 140;
/// FADT lengths that matter: the fixed 44 the parser needs, ACPI 1.0 (116), the end of
/// each field the parser reads, ACPI 2.0 (244), 5.0 (268), 6.0 (276).
pub(crate) const FADT_SIZES: [usize; 24] = [
    36, 40, 44, 48, 52, 54, 60, 64, 68, 72, 80, 89, 92, 109, 111, 116, 129, 132, 140, 148, 208,
    220, 244, 276,
];
/// Fixed lengths the parsers need.
pub(crate) fn min_len(sig: &[u8; 4]) -> usize {
    match sig {
        b"APIC" | b"MCFG" => 44,
        b"HPET" => 56,
        b"FACP" => 44,
        _ => HEADER_LEN,
    }
}

/// How a parser's `Err` is named.
pub(crate) fn variant(e: &TableError) -> &'static str {
    match e {
        TableError::Truncated { .. } => "Truncated",
        TableError::BadLength { .. } => "BadLength",
        TableError::BadChecksum { .. } => "BadChecksum",
        TableError::BadSignature { .. } => "BadSignature",
        TableError::Unreadable { .. } => "Unreadable",
        TableError::TooLarge { .. } => "TooLarge",
        TableError::NoMemory { .. } => "NoMemory",
        TableError::NoRootTable { .. } => "NoRootTable",
    }
}

/// What `Table::parse` must do: the table's length, or the error it must give.
fn header_verdict(b: &[u8], sig: &[u8; 4], min: usize) -> Result<usize, &'static str> {
    if b.len() < HEADER_LEN {
        return Err("Truncated");
    }
    if &b[..4] != sig {
        return Err("BadSignature");
    }
    let len = get_u32(b, 4).map_or(0, |l| l as usize);
    if len < min.max(HEADER_LEN) {
        return Err("BadLength");
    }
    if len > b.len() {
        return Err("Truncated");
    }
    Ok(len)
}

/// A parser's outcome: parsed, or refused with an error of this kind.
pub(crate) type Verdict = Result<(), &'static str>;

/// Checks a parse result against [`header_verdict`], and gives the table's bytes when it
/// parsed.
fn check_header<'a, T>(
    b: &'a [u8],
    sig: &[u8; 4],
    r: &Result<T, TableError>,
    header: impl Fn(&T) -> (SdtHeader, bool),
) -> Result<Option<&'a [u8]>, String> {
    let expected = header_verdict(b, sig, min_len(sig));
    match (r, expected) {
        (Err(e), Err(kind)) if variant(e) == kind => {
            let _ = e.to_string();
            Ok(None)
        }
        (Err(e), want) => Err(format!("refused with {e:?}; expected {want:?}")),
        (Ok(_), Err(kind)) => Err(format!("parsed; expected a {kind} error")),
        (Ok(v), Ok(len)) => {
            let t = &b[..len];
            let (h, checksum_ok) = header(v);
            if Ok(h) != SdtHeader::parse(b) {
                return Err(format!("header {h:?} is not the bytes' header"));
            }
            if checksum_ok != (byte_sum(t) == 0) {
                return Err(format!("checksum_ok {checksum_ok} is wrong"));
            }
            Ok(Some(t))
        }
    }
}

/// The MADT, walked here.
#[derive(Debug, Default, PartialEq, Eq)]
struct MadtModel {
    cpus: Vec<(u32, bool)>,
    io_apics: usize,
    overrides: usize,
    nmi_sources: usize,
    local_nmis: usize,
    local_apic_address: u64,
    errors: usize,
    entries: usize,
}

fn madt_model(t: &[u8]) -> MadtModel {
    let mut m = MadtModel::default();
    let mut address_override = None;
    let mut off = 44usize;
    while off < t.len() {
        let (Some(ty), Some(len)) = (get_u8(t, off), get_u8(t, off + 1)) else {
            m.errors += 1;
            break;
        };
        let len = usize::from(len);
        if len < 2 || off + len > t.len() {
            m.errors += 1;
            break;
        }
        let e = &t[off..off + len];
        m.entries += 1;
        let need = match ty {
            0 | 3 => 8,
            1 | 5 | 0xa => 12,
            2 => 10,
            4 => 6,
            9 => 16,
            _ => 0,
        };
        if len < need {
            m.errors += 1;
        } else {
            match ty {
                0 => m.cpus.push((u32::from(e[3]), e[4] & 1 != 0)),
                9 => m.cpus.push((get_u32(e, 4).unwrap_or(0), e[8] & 1 != 0)),
                1 => m.io_apics += 1,
                2 => m.overrides += 1,
                3 => m.nmi_sources += 1,
                4 | 0xa => {
                    let lint = if ty == 4 { e[5] } else { e[8] };
                    if lint > 1 {
                        m.errors += 1;
                    } else {
                        m.local_nmis += 1;
                    }
                }
                5 => {
                    let a = get_u64(e, 4).unwrap_or(0);
                    if a == 0 || address_override.is_some() {
                        m.errors += 1;
                    } else {
                        address_override = Some(a);
                    }
                }
                _ => {}
            }
        }
        off += len;
    }
    m.local_apic_address = address_override.unwrap_or_else(|| get_u32(t, 36).map_or(0, u64::from));
    m
}

pub(crate) fn check_madt(b: &[u8]) -> Result<Verdict, String> {
    let r = Madt::parse(b);
    let Some(t) = check_header(b, b"APIC", &r, |m| (m.header, m.checksum_ok))? else {
        return Ok(Err(r.err().map_or("?", |e| variant(&e))));
    };
    let m = r.map_err(|e| format!("{e:?}"))?;
    let want = madt_model(t);
    let got = MadtModel {
        cpus: m.cpus.iter().map(|c| (c.apic_id, c.enabled)).collect(),
        io_apics: m.io_apics.len(),
        overrides: m.overrides.len(),
        nmi_sources: m.nmi_sources.len(),
        local_nmis: m.local_nmis.len(),
        local_apic_address: m.local_apic_address,
        errors: m.errors.len(),
        entries: want.entries,
    };
    if got != want {
        return Err(format!(
            "MADT parsed as {got:?}; the walk here says {want:?}"
        ));
    }
    // Counts bounded by the table: every kept entry has at least its type's length.
    let used = 8 * m.cpus.len()
        + 12 * m.io_apics.len()
        + 10 * m.overrides.len()
        + 8 * m.nmi_sources.len()
        + 6 * m.local_nmis.len();
    if used > t.len().saturating_sub(44) {
        return Err(format!(
            "{used} bytes of entries kept from a {}-byte table",
            t.len()
        ));
    }
    if m.errors.len() > (t.len().saturating_sub(44)) / 2 + 1 {
        return Err(format!(
            "{} errors for a {}-byte table",
            m.errors.len(),
            t.len()
        ));
    }
    if m.local_nmis.iter().any(|n| n.lint > 1) {
        return Err("a local NMI on a LINT pin above 1 was kept".into());
    }
    if m.enabled_cpus() > m.cpus.len() || m.isa_overrides().len() > m.overrides.len() {
        return Err("enabled_cpus or isa_overrides exceeds its list".into());
    }
    let _ = m.local_nmis.iter().filter(|n| n.all_processors()).count();
    Ok(Ok(()))
}

pub(crate) fn check_mcfg(b: &[u8]) -> Result<Verdict, String> {
    let r = Mcfg::parse(b);
    let Some(t) = check_header(b, b"MCFG", &r, |m| (m.header, m.checksum_ok))? else {
        return Ok(Err(r.err().map_or("?", |e| variant(&e))));
    };
    let m = r.map_err(|e| format!("{e:?}"))?;
    let body = &t[44..];
    let mut want = Vec::new();
    let mut bad = 0usize;
    for e in body.as_chunks::<16>().0 {
        let (address, segment, start, end) = (
            get_u64(e, 0).unwrap_or(0),
            get_u16(e, 8).unwrap_or(0),
            e[10],
            e[11],
        );
        if end < start {
            bad += 1;
        } else {
            want.push((segment, address, start, end));
        }
    }
    let got: Vec<_> = m
        .entries
        .iter()
        .map(|e| (e.segment, e.address, e.bus_start, e.bus_end))
        .collect();
    if got != want {
        return Err(format!(
            "MCFG entries {got:x?}; the walk here says {want:x?}"
        ));
    }
    let errors = bad + usize::from(body.len() % 16 != 0);
    if m.errors.len() != errors {
        return Err(format!("{} MCFG errors; expected {errors}", m.errors.len()));
    }
    if m.entries.iter().any(|e| e.bus_start > e.bus_end) {
        return Err("an MCFG entry with start bus above end bus was kept".into());
    }
    Ok(Ok(()))
}

pub(crate) fn check_hpet(b: &[u8]) -> Result<Verdict, String> {
    let r = Hpet::parse(b);
    let Some(t) = check_header(b, b"HPET", &r, |h| (h.header, h.checksum_ok))? else {
        return Ok(Err(r.err().map_or("?", |e| variant(&e))));
    };
    let h = r.map_err(|e| format!("{e:?}"))?;
    let want = (
        get_u32(t, 36),
        get_u8(t, 40),
        get_u64(t, 44),
        get_u8(t, 52),
        get_u16(t, 53),
        get_u8(t, 55),
    );
    let got = (
        Some(h.event_timer_block_id),
        Some(h.base_address.space_id),
        Some(h.base_address.address),
        Some(h.hpet_number),
        Some(h.min_tick),
        Some(h.page_protection),
    );
    if got != want {
        return Err(format!("HPET fields {got:x?}; the bytes say {want:x?}"));
    }
    if !(1..=32).contains(&h.comparators()) {
        return Err(format!("{} comparators", h.comparators()));
    }
    Ok(Ok(()))
}

/// A fixed register block's address: the `X_` GAS when inside and nonzero, else the 32-bit
/// field when inside and nonzero.
fn fadt_block(t: &[u8], x_off: usize, off: usize) -> Option<u64> {
    get_u64(t, x_off + 4)
        .filter(|a| *a != 0 && t.len() >= x_off + 12)
        .or_else(|| get_u32(t, off).filter(|p| *p != 0).map(u64::from))
}

pub(crate) fn check_fadt(b: &[u8]) -> Result<Verdict, String> {
    let r = Fadt::parse(b);
    let Some(t) = check_header(b, b"FACP", &r, |f| (f.header, f.checksum_ok))? else {
        return Ok(Err(r.err().map_or("?", |e| variant(&e))));
    };
    let f = r.map_err(|e| format!("{e:?}"))?;
    let len = t.len();
    let nonzero64 = |off| get_u64(t, off).filter(|v| *v != 0);
    let nonzero32 = |off| get_u32(t, off).filter(|v| *v != 0).map(u64::from);
    let flags = get_u32(t, FLAGS);
    let revision = t[8];
    let want_reset = flags
        .filter(|f| f & (1 << 10) != 0 && len > RESET_VALUE)
        .and_then(|_| Some((get_u64(t, RESET_REG + 4)?, get_u8(t, RESET_VALUE)?)));
    let mut problems = Vec::new();
    let mut expect = |what: &str, got: String, want: String| {
        if got != want {
            problems.push(format!("{what}: {got}, expected {want}"));
        }
    };
    expect(
        "dsdt",
        format!("{:x?}", f.dsdt),
        format!("{:x?}", nonzero64(X_DSDT).or_else(|| nonzero32(DSDT))),
    );
    expect(
        "facs",
        format!("{:x?}", f.facs),
        format!(
            "{:x?}",
            nonzero64(X_FIRMWARE_CTRL).or_else(|| nonzero32(FIRMWARE_CTRL))
        ),
    );
    expect(
        "sci_int",
        format!("{:?}", f.sci_int),
        format!("{:?}", get_u16(t, 46)),
    );
    expect(
        "smi_cmd",
        format!("{:?}", f.smi_cmd),
        format!("{:?}", get_u32(t, 48)),
    );
    expect(
        "acpi_enable/disable",
        format!("{:?}", (f.acpi_enable, f.acpi_disable)),
        format!("{:?}", (get_u8(t, 52), get_u8(t, 53))),
    );
    expect(
        "century",
        format!("{:?}", f.century),
        format!("{:?}", get_u8(t, 108)),
    );
    expect(
        "iapc_boot_arch",
        format!("{:?}", f.iapc_boot_arch.map(|a| a.0)),
        format!("{:?}", get_u16(t, 109).filter(|_| revision >= 3)),
    );
    expect("flags", format!("{flags:?}"), format!("{:?}", f.flags));
    expect(
        "minor_version",
        format!("{:?}", f.minor_version),
        format!("{:?}", get_u8(t, 131)),
    );
    expect(
        "reset",
        format!("{:x?}", f.reset.map(|r| (r.register.address, r.value))),
        format!("{want_reset:x?}"),
    );
    for (what, got, x_off, off) in [
        ("pm1a_evt", f.pm1a_evt, 148, 56),
        ("pm1b_evt", f.pm1b_evt, 160, 60),
        ("pm1a_cnt", f.pm1a_cnt, 172, 64),
        ("pm1b_cnt", f.pm1b_cnt, 184, 68),
        ("pm_timer", f.pm_timer.map(|p| p.block), 208, PM_TMR_BLK),
    ] {
        expect(
            what,
            format!("{:x?}", got.map(|g| g.address)),
            format!("{:x?}", fadt_block(t, x_off, off)),
        );
    }
    if f.hw_reduced() != flags.is_some_and(|f| f & (1 << 20) != 0) {
        problems.push("hw_reduced disagrees with the flags".into());
    }
    if let Some(a) = f.iapc_boot_arch {
        let _ = (
            a.legacy_devices(),
            a.i8042(),
            a.vga_not_present(),
            a.msi_not_supported(),
            a.pcie_aspm_controls(),
            a.cmos_rtc_not_present(),
        );
    }
    if problems.is_empty() {
        Ok(Ok(()))
    } else {
        Err(format!("FADT of {len} bytes: {}", problems.join("; ")))
    }
}

/// `Rsdp::parse` against the rules of ACPI 6.5 §5.2.5.3 as the crate states them.
pub(crate) fn check_rsdp(b: &[u8]) -> Result<Verdict, String> {
    let r = Rsdp::parse(b);
    let want: Result<(u8, u32, Option<u64>), &str> = if b.len() < 20 {
        Err("Truncated")
    } else if &b[..8] != b"RSD PTR " {
        Err("BadSignature")
    } else if byte_sum(&b[..20]) != 0 {
        Err("BadChecksum")
    } else {
        let revision = b[15];
        let xsdt = (revision >= 2 && b.len() >= 36)
            .then(|| get_u64(b, 24))
            .flatten();
        Ok((revision, get_u32(b, 16).unwrap_or(0), xsdt))
    };
    match (r, want) {
        (Err(e), Err(kind)) if variant(&e) == kind => {
            let _ = e.to_string();
            Ok(Err(kind))
        }
        (Ok(p), Ok(w)) if (p.revision, p.rsdt, p.xsdt) == w && p.warnings.len() <= 2 => Ok(Ok(())),
        (got, want) => Err(format!("Rsdp::parse gave {got:?}; expected {want:?}")),
    }
}

/// `SdtHeader::parse`, `Table::parse` (any signature, any minimum) and `checksum_ok`.
pub(crate) fn check_headers(b: &[u8]) -> Result<Verdict, String> {
    let h = SdtHeader::parse(b);
    if h.is_ok() != (b.len() >= HEADER_LEN) {
        return Err(format!("SdtHeader::parse on {} bytes gave {h:?}", b.len()));
    }
    let _ = tables::checksum_ok(b);
    for (sig, min) in [
        ("APIC", 44usize),
        ("SSDT", 0),
        ("FACP", 200),
        ("XSDT", 1 << 20),
    ] {
        let sig4: [u8; 4] = sig.as_bytes().try_into().unwrap_or([0; 4]);
        let want = header_verdict(b, &sig4, min);
        match (Table::parse(b, sig, min), want) {
            (Ok(t), Ok(len)) if t.bytes.len() == len && t.header.length as usize == len => {}
            (Err(e), Err(kind)) if variant(&e) == kind => {}
            (got, want) => {
                return Err(format!(
                    "Table::parse({sig}, min {min}) gave {got:?}; expected {want:?}"
                ));
            }
        }
    }
    Ok(h.map(|_| ()).map_err(|e| variant(&e)))
}
