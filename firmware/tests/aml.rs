//! The AML layer on a firmware written for the test (`tests/aml/routing.asl`, compiled with
//! ACPICA's `iasl`), run by `acpi-probe` in its own process (ACPICA is one global instance):
//!
//! - `\_PIC(1)` selects the APIC-mode `_PRT`;
//! - a direct GSI entry is level-triggered, active-low;
//! - an `IRQ()` descriptor gives the IRQ *number* (15), not its mask (0x8000), and the
//!   MADT's ISA override (IRQ 15 -> GSI 23) is applied to it;
//! - a disabled link is given an interrupt from `_PRS` with `_SRS`, read back through
//!   `_CRS`, and carries the descriptor's polarity and trigger;
//! - a second host bridge's root bus comes from its `_CRS` bus range (no `_BBN`);
//! - two mutexes and a recursive `Acquire` by one thread do not deadlock or fail;
//! - an `_INI` that loops forever and one that sleeps forever are abandoned, and the whole
//!   run stays within the probe's 10 s;
//! - `\_S5` is read.
//!
//! Needs `iasl` (Debian's acpica-tools, which `./run.sh test` installs); without it the test
//! says it was skipped.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    firmware::tables::build::table(signature, revision, body).expect("small table")
}

/// An ACPI 1.0 FADT (116 bytes; the simulated machine fills in FACS and DSDT).
fn fadt() -> Vec<u8> {
    let mut body = vec![0u8; 116 - 36];
    // SCI_INT (offset 46) = 9; PM1a_CNT_BLK (offset 64) = 0x604, length (offset 89) = 2.
    body[46 - 36..48 - 36].copy_from_slice(&9u16.to_le_bytes());
    body[64 - 36..68 - 36].copy_from_slice(&0x604u32.to_le_bytes());
    body[89 - 36] = 2;
    table(b"FACP", 1, &body)
}

/// A MADT: local APIC 0, IOAPIC 1 (GSI 0-23), and ISA IRQ 15 -> GSI 23, active-low, level.
fn madt() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0xFEE0_0000u32.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
    body.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // LAPIC: uid 0, id 0, enabled
    body.extend_from_slice(&[1, 12, 1, 0]); // IOAPIC id 1
    body.extend_from_slice(&0xFEC0_0000u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&[2, 10, 0, 15]); // ISO bus 0, source 15
    body.extend_from_slice(&23u32.to_le_bytes());
    body.extend_from_slice(&0x000Fu16.to_le_bytes()); // active-low, level
    table(b"APIC", 3, &body)
}

fn dump_text(tables: &[(&str, &[u8])]) -> String {
    let mut out = String::new();
    for (sig, bytes) in tables {
        let _ = writeln!(out, "{sig} @ 0x0000000000000000");
        for (i, chunk) in bytes.chunks(16).enumerate() {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02X}")).collect();
            let _ = writeln!(out, "    {:04X}: {}", i * 16, hex.join(" "));
        }
        out.push('\n');
    }
    out
}

fn iasl_available() -> bool {
    Command::new("iasl").arg("-v").output().is_ok()
}

#[test]
fn aml_layer_on_a_written_firmware() {
    if !iasl_available() {
        println!("aml: iasl (acpica-tools) not installed: SKIPPED (run ./run.sh test)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("firmware-aml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aml/routing.asl");
    let prefix = dir.join("routing");
    let out = Command::new("iasl")
        .arg("-p")
        .arg(&prefix)
        .arg(&source)
        .output()
        .expect("iasl runs");
    assert!(
        out.status.success(),
        "iasl failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dsdt = std::fs::read(prefix.with_extension("aml")).expect("iasl wrote the AML");
    let text = dump_text(&[("FACP", &fadt()), ("APIC", &madt()), ("DSDT", &dsdt)]);
    let file = dir.join("machine.acpidump");
    std::fs::write(&file, text).expect("write dump");

    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_acpi-probe"))
        .arg(&file)
        .output()
        .expect("acpi-probe runs");
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "acpi-probe failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let v: Value = serde_json::from_str(&stdout).expect("one JSON object");
    let aml = &v["aml"];
    println!("aml: {aml}");
    assert_eq!(aml["tables_loaded"], 1);
    assert_eq!(aml["tables_failed"], 0);
    assert_eq!(aml["namespace_initialised"], true);
    assert_eq!(aml["apic_mode"], true);
    assert_eq!(aml["s5"], serde_json::json!([5, 6]));
    let errors: Vec<&str> = aml["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Both endless _INI methods were abandoned, and nothing else failed.
    let timeouts = errors
        .iter()
        .filter(|e| e.contains("AE_AML_LOOP_TIMEOUT"))
        .count();
    assert!(timeouts >= 2, "loops not abandoned: {errors:#?}");
    assert!(
        !errors
            .iter()
            .any(|e| e.contains("MTX") || e.contains("MUTEX") || e.contains("AE_TIME")),
        "mutex trouble: {errors:#?}"
    );

    let bridges = v["host_bridges"].as_array().expect("host bridges");
    let paths: Vec<&str> = bridges.iter().filter_map(|b| b["path"].as_str()).collect();
    assert_eq!(paths, ["\\_SB_.PCI0", "\\_SB_.PCI1"]);
    assert_eq!(bridges[1]["bus"], 0x80);
    assert_eq!(bridges[1]["bus_end"], 0xFE);
    assert_eq!(bridges[1]["has_prt"], false);
    // `_OSC`: PCI0 grants native hot-plug; PCI1 has no `_OSC`, so firmware keeps it.
    assert_eq!(bridges[0]["native_hot_plug"], true, "{}", bridges[0]["osc"]);
    assert_eq!(
        bridges[0]["osc"],
        "_OSC granted 0x11 of 0x11: hot-plug native"
    );
    assert_eq!(bridges[1]["native_hot_plug"], false);
    assert_eq!(bridges[1]["osc"], "no _OSC (firmware keeps native control)");
    let routes = bridges[0]["prt"].as_array().expect("routes");
    let route = |device: u64| {
        routes
            .iter()
            .find(|r| r["device"] == device)
            .unwrap_or_else(|| panic!("no route for device {device}: {routes:#?}"))
    };
    let expect = |device: u64, pin: &str, gsi: u64, polarity: &str, source: &str| {
        let r = route(device);
        assert_eq!(r["pin"], pin, "{r}");
        assert_eq!(r["gsi"], gsi, "{r}");
        assert_eq!(r["polarity"], polarity, "{r}");
        assert_eq!(r["trigger"], "level", "{r}");
        assert_eq!(r["source"], source, "{r}");
    };
    assert_eq!(routes.len(), 4, "{routes:#?}");
    expect(1, "A", 16, "active-low", "gsi");
    expect(2, "A", 23, "active-low", "link");
    expect(3, "B", 20, "active-high", "link-set");
    expect(4, "C", 23, "active-low", "link");
}
