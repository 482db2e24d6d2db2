//! PCI enumeration scenarios: the kernel's view of the bus against QEMU's own, one test per
//! topology (see `qemu_tests::topology`).
//!
//! Each test boots the kernel with PVH (`-kernel`, `-append test=pci`, `-m 512M`) on SeaBIOS,
//! which assigns the BARs before the kernel starts. The kernel runs its `pci` suite, prints
//! one `PCIDEV` line per function, `PCISTATS` and `PCI HOLD`, and halts; the runner then asks
//! QEMU for `query-pci` over QMP and quits QEMU. A test passes when the suite passed, there is
//! no unexpected `PCIERR`, both views agree exactly (addresses, IDs, class and subclass, header
//! layout, interrupt pin and line, BARs) and the topology's known devices are there with the
//! right MSI/MSI-X vector counts. A failure shows the list of differences, a side-by-side view
//! of both enumerations and the whole serial log.
//!
//! - `q35_defaults`: (a) `-machine q35` as is;
//! - `q35_root_ports_bridges_multifunction`: (b) NVMe, virtio-net, virtio-blk and e1000e on
//!   root ports, edu, a pcie-pci-bridge with a pci-bridge and a virtio-rng behind it, a
//!   three-function virtio-rng slot;
//! - `q35_pxb_extra_root_bus`: (c) a `pxb-pcie` root bus 0x80 with a root port and a virtio-rng;
//! - `pc_port_io_only`: (d) `-machine pc` with edu and virtio-net (configuration space through
//!   ports 0xCF8/0xCFC, no extended configuration space).
//!
//! Without `qemu-system-x86_64` the scenarios print `SKIPPED` and return, unless `CI` is set.

use qemu_tests::topology::{
    MICROVM_PCIE, PC_DEVICES, Q35_DEFAULTS, Q35_DEVICES, Q35_PXB, Topology, check_pci_run, run_pci,
};
use qemu_tests::{DEFAULT_TIMEOUT, kernel_elf, qemu_or_skip};

#[track_caller]
fn scenario(name: &str, topology: &Topology) {
    if !qemu_or_skip(name) {
        return;
    }
    let run = run_pci(topology, kernel_elf(), &[], DEFAULT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
    match check_pci_run(topology, &run) {
        Ok(check) => {
            println!("{name}: {}", check.summary);
            for note in &check.comparison.notes {
                println!("  {note}");
            }
        }
        Err(message) => panic!("{name}: {message}\n{}", run.outcome.log()),
    }
}

#[test]
fn q35_defaults() {
    scenario("q35_defaults", &Q35_DEFAULTS);
}

#[test]
fn q35_root_ports_bridges_multifunction() {
    scenario("q35_root_ports_bridges_multifunction", &Q35_DEVICES);
}

#[test]
fn microvm_pcie_ecam_from_cba() {
    scenario("microvm_pcie_ecam_from_cba", &MICROVM_PCIE);
}

#[test]
fn q35_pxb_extra_root_bus() {
    scenario("q35_pxb_extra_root_bus", &Q35_PXB);
}

#[test]
fn pc_port_io_only() {
    scenario("pc_port_io_only", &PC_DEVICES);
}

/// Rewrites `tests/fixtures/query-pci-topology-b.json` (used by the unit tests) with QEMU's
/// `query-pci` answer from a real run of topology (b). Run with `cargo test -p qemu-tests
/// --test pci -- --ignored refresh_query_pci_fixture`.
#[test]
#[ignore = "rewrites a fixture; run explicitly"]
fn refresh_query_pci_fixture() {
    if !qemu_or_skip("refresh_query_pci_fixture") {
        return;
    }
    let run = run_pci(&Q35_DEVICES, kernel_elf(), &[], DEFAULT_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot run QEMU: {e}"));
    let json = run
        .qemu_json
        .unwrap_or_else(|| panic!("no query-pci answer\n{}", run.outcome.log()));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/query-pci-topology-b.json");
    let mut text = serde_json::to_string_pretty(&json).expect("serialise JSON");
    text.push('\n');
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!("wrote {}", path.display());
}
