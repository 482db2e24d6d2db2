//! `lspci -t` with hot-plug slot labels: the Physical Slot Number and power state its owner
//! reports, after the port's name, and nothing for other functions.

mod common;

use common::*;
use pci::lspci::{self, SlotLabel};

#[test]
fn tree_labels_hot_plug_ports() {
    let t = scan(&q35(), &[ECAM_ROOT]);
    let mut s = String::new();
    lspci::write_tree_labelled(&mut s, &t, &|address| match address.function() {
        _ if address.bus() != 0 || address.device() != 2 => None,
        0 => Some(SlotLabel {
            number: 1,
            powered: true,
        }),
        _ => Some(SlotLabel {
            number: 2,
            powered: false,
        }),
    })
    .unwrap();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(
        lines[3],
        " +-02.0-[01]  Red Hat, Inc. QEMU PCIe Root port [slot 1, power on]"
    );
    assert_eq!(
        lines[5],
        " +-02.1-[02]  Red Hat, Inc. QEMU PCIe Root port [slot 2, power off]"
    );
    assert_eq!(s.matches("[slot").count(), 2, "{s}");
    // Without labels, the tree is what `write_tree` prints.
    let mut plain = String::new();
    lspci::write_tree_labelled(&mut plain, &t, &|_| None).unwrap();
    let mut expected = String::new();
    lspci::write_tree(&mut expected, &t).unwrap();
    assert_eq!(plain, expected);
}
