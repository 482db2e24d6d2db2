use std::io::Read;
use std::time::Instant;
#[test]
fn t() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/acpi-corpus");
    let t0 = Instant::now();
    let mut total = 0;
    let mut n = 0;
    let mut kept = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if !e.path().to_string_lossy().ends_with(".acpidump.gz") { continue; } let bytes = std::fs::read(e.path()).unwrap();
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice()).read_to_string(&mut s).unwrap();
        total += s.len();
        let d = firmware::dump::Dump::default(); let _ = &s;
        kept += d.tables.iter().filter(|t| [*b"APIC", *b"FACP", *b"MCFG", *b"HPET"].contains(&t.signature)).count();
        n += 1;
    }
    println!("{n} files {total} bytes {kept} tables in {:?}", t0.elapsed());
}
