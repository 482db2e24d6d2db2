//! Enumeration of a realistic q35-like machine.

mod common;

use common::*;
use pci::lspci;

#[test]
fn dump() {
    let (t, reads, writes, fake) = scan_counted(q35(), &[ECAM_ROOT]);
    let mut s = String::new();
    lspci::write_listing(&mut s, &t).unwrap();
    lspci::write_tree(&mut s, &t).unwrap();
    lspci::write_machine(&mut s, &t).unwrap();
    println!("{s}reads={reads} writes={writes}\n{:?}", fake.violations());
}
