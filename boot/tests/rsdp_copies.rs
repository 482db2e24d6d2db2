//! An invalid RSDP copy in the multiboot2 information is not a reason to refuse the boot.
//!
//! GRUB on UEFI copies the firmware's RSDP into tag 15 (and its first 20 bytes into tag 14)
//! without checking it, so a firmware with a bad extended checksum, or a `length` field
//! below 36, reaches the parser as is. The kernel runs without ACPI (and with the ACPI 1.0
//! RSDT when only the extended part is bad); refusing the whole structure would halt the
//! machine before the screen exists, with the reason only on a COM1 the board may not have.

#[path = "../src/testutil.rs"]
mod testutil;

use boot::{RsdpError, Snapshot, multiboot2};
use testutil::{Mbi, rsdp};

const MBI: u64 = 0x1_0000;

/// A UEFI board's map, enough for the parser.
const E820: [(u64, u64, u32); 2] = [(0, 0x9f000, 1), (0x10_0000, 0x7f00_0000, 1)];

fn parse(blob: &[u8]) -> Result<boot::BootInfo, multiboot2::Multiboot2Error> {
    multiboot2::parse(&Snapshot::new(&[(MBI, blob)]), MBI)
}

#[test]
fn a_bad_extended_checksum_falls_back_to_the_acpi_1_copy() {
    let mut v2 = rsdp(2, 0x7fe_2345, 0x7fe_3000);
    v2[30] ^= 0x40; // a reserved byte: only the extended checksum sees it
    let blob = Mbi::new()
        .mmap(&E820, 24)
        .tag(14, &v2[..20])
        .tag(15, &v2)
        .finish();
    let info = parse(&blob).expect("the boot goes on");
    let p = info.rsdp.expect("the ACPI 1.0 copy is used");
    assert_eq!(
        (p.len, p.rsdt_address(), p.xsdt_address()),
        (20, 0x7fe_2345, None)
    );
    assert_eq!(info.rsdp_error, Some(RsdpError::BadExtendedChecksum));
}

#[test]
fn an_unusable_rsdp_leaves_the_kernel_without_acpi_not_without_a_boot() {
    // `length` below 36 (GRUB copies `length` bytes: here 20).
    let mut v2 = rsdp(2, 1, 2);
    v2[20] = 20;
    let blob = Mbi::new()
        .mmap(&E820, 24)
        .tag(15, &v2[..20])
        .string(1, "log=info")
        .finish();
    let info = parse(&blob).expect("the boot goes on");
    assert_eq!(info.rsdp, None);
    assert_eq!(info.rsdp_error, Some(RsdpError::TooShort { len: 20 }));
    assert_eq!(info.cmdline(), "log=info");
    // A bad signature in the only copy (tag 14).
    let mut v1 = rsdp(0, 1, 0);
    v1[0] = b'X';
    let blob = Mbi::new().mmap(&E820, 24).tag(14, &v1).finish();
    let info = parse(&blob).expect("the boot goes on");
    assert_eq!(
        (info.rsdp, info.rsdp_error),
        (None, Some(RsdpError::BadSignature))
    );
}

#[test]
fn a_valid_rsdp_reports_no_error() {
    let v2 = rsdp(2, 0x1234, 0x5678);
    let blob = Mbi::new()
        .mmap(&E820, 24)
        .tag(14, &v2[..20])
        .tag(15, &v2)
        .finish();
    let info = parse(&blob).unwrap();
    assert_eq!(info.rsdp.unwrap().xsdt_address(), Some(0x5678));
    assert_eq!(info.rsdp_error, None);
}
