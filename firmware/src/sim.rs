//! A simulated machine that holds a real machine's ACPI tables: what `acpi-probe` and the
//! host tests run ACPICA on.
//!
//! The tables of an `acpidump` are laid out in simulated physical memory from 16 MiB up,
//! listed in a fresh XSDT under a fresh RSDP (the dumps carry no usable addresses), with the
//! FADT's DSDT and FACS pointers set to where those tables now are. Everything else a
//! firmware method touches answers like ACPICA's own `acpiexec` simulation: memory,
//! ports and PCI configuration space read as zero until written, and keep what is written.
//! Time is the host's clock plus the time AML asked to `Stall` or `Sleep`, which passes
//! at once.
//!
//! Mappings are copies: `map` hands out a buffer filled from simulated memory and `unmap`
//! writes it back, so two live mappings of one address do not see each other's writes
//! until one is unmapped (ACPICA maps tables and regions once and keeps them).

extern crate std;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use spin::Mutex;

use crate::aml::{self, AmlReport, IsaOverride, LoadOptions};
use crate::hw::{Hardware, PciLocation, PhysRead};
use crate::tables::build;

const PAGE: u64 = 4096;
/// Where the RSDP goes (inside the BIOS area, as on a PC).
const RSDP_AT: u64 = 0x000E_0000;
/// Where the XSDT and the tables start.
const TABLES_AT: u64 = 0x0100_0000;
/// Largest single mapping handed out (a table or a region window).
const MAX_MAP: usize = 64 << 20;

/// A live mapping: its physical address and the copy handed out.
type Mapping = (u64, Box<[u8]>);

/// The simulated machine.
pub struct SimMachine {
    pages: Mutex<BTreeMap<u64, Box<[u8; PAGE as usize]>>>,
    maps: Mutex<BTreeMap<usize, Mapping>>,
    ports: Mutex<BTreeMap<u16, u32>>,
    pci: Mutex<BTreeMap<(PciLocation, u16), u8>>,
    start: Instant,
    slept_ns: AtomicU64,
}

impl SimMachine {
    /// An empty machine (all memory zero).
    pub fn new() -> Self {
        Self {
            pages: Mutex::new(BTreeMap::new()),
            maps: Mutex::new(BTreeMap::new()),
            ports: Mutex::new(BTreeMap::new()),
            pci: Mutex::new(BTreeMap::new()),
            start: Instant::now(),
            slept_ns: AtomicU64::new(0),
        }
    }

    /// Writes `bytes` into simulated memory at `phys`.
    pub fn write(&self, phys: u64, bytes: &[u8]) {
        let mut pages = self.pages.lock();
        let mut done = 0usize;
        while done < bytes.len() {
            let a = phys.wrapping_add(done as u64);
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(bytes.len() - done);
            let page = pages
                .entry(a / PAGE)
                .or_insert_with(|| Box::new([0; PAGE as usize]));
            page[off..off + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
    }

    fn read(&self, phys: u64, buf: &mut [u8]) {
        let pages = self.pages.lock();
        let mut done = 0usize;
        while done < buf.len() {
            let a = phys.wrapping_add(done as u64);
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(buf.len() - done);
            match pages.get(&(a / PAGE)) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[off..off + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
    }

    /// Lays out a dump's tables (see the module notes) and returns the RSDP's address.
    pub fn install_tables(&self, tables: &[([u8; 4], &[u8])]) -> Option<u64> {
        let mut next = TABLES_AT + PAGE; // the XSDT goes at TABLES_AT
        let mut listed = Vec::new();
        let mut dsdt = None;
        let mut facs = None;
        let mut fadts = Vec::new();
        for (sig, bytes) in tables {
            if matches!(sig, b"RSDP" | b"RSDT" | b"XSDT") || bytes.len() < 4 {
                continue;
            }
            let at = next;
            next = (next + bytes.len() as u64 + 15) & !15;
            self.write(at, bytes);
            match sig {
                b"DSDT" => {
                    dsdt.get_or_insert(at);
                }
                b"FACS" => {
                    facs.get_or_insert(at);
                }
                _ => {
                    if sig == b"FACP" {
                        fadts.push((at, bytes.len()));
                    }
                    listed.push(at);
                }
            }
        }
        // Point each FADT at the placed DSDT and FACS, and fix its checksum.
        for (at, len) in fadts {
            let mut fadt = alloc::vec![0u8; len];
            self.read(at, &mut fadt);
            let put32 = |f: &mut [u8], o: usize, v: u64| {
                if let Some(d) = f.get_mut(o..o + 4) {
                    d.copy_from_slice(&(v as u32).to_le_bytes());
                }
            };
            let put64 = |f: &mut [u8], o: usize, v: u64| {
                if let Some(d) = f.get_mut(o..o + 8) {
                    d.copy_from_slice(&v.to_le_bytes());
                }
            };
            // ACPI 6.5 §5.2.9: FIRMWARE_CTRL at 36, DSDT at 40, X_FIRMWARE_CTRL at 132,
            // X_DSDT at 140.
            put32(&mut fadt, 36, facs.unwrap_or(0));
            put32(&mut fadt, 40, dsdt.unwrap_or(0));
            put64(&mut fadt, 132, facs.unwrap_or(0));
            put64(&mut fadt, 140, dsdt.unwrap_or(0));
            build::fix_checksum(&mut fadt, 9);
            self.write(at, &fadt);
        }
        // XSDT (ACPI 6.5 §5.2.8).
        let entries: Vec<u8> = listed.iter().flat_map(|at| at.to_le_bytes()).collect();
        let xsdt = build::table(b"XSDT", 1, &entries)?;
        self.write(TABLES_AT, &xsdt);
        // RSDP revision 2 (ACPI 6.5 §5.2.5.3).
        let mut rsdp = Vec::with_capacity(36);
        rsdp.extend_from_slice(b"RSD PTR ");
        rsdp.push(0);
        rsdp.extend_from_slice(b"RUSTOS");
        rsdp.push(2);
        rsdp.extend_from_slice(&0u32.to_le_bytes());
        rsdp.extend_from_slice(&36u32.to_le_bytes());
        rsdp.extend_from_slice(&TABLES_AT.to_le_bytes());
        rsdp.extend_from_slice(&[0, 0, 0, 0]);
        let sum20 = rsdp[..20].iter().fold(0u8, |s, b| s.wrapping_add(*b));
        rsdp[8] = 0u8.wrapping_sub(sum20);
        let sum36 = rsdp.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        rsdp[32] = 0u8.wrapping_sub(sum36);
        self.write(RSDP_AT, &rsdp);
        Some(RSDP_AT)
    }
}

impl Default for SimMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl PhysRead for SimMachine {
    fn read_phys(&self, phys: u64, buf: &mut [u8]) -> bool {
        self.read(phys, buf);
        true
    }
}

impl Hardware for SimMachine {
    fn map(&self, phys: u64, len: usize) -> Option<NonNull<u8>> {
        if len > MAX_MAP {
            return None;
        }
        // Like a page-table mapping, the copy covers whole pages around the range, plus the
        // page after it (whose contents are simulated memory too): a parser that reads a few
        // bytes past a malformed table sees what a real machine would, not the host's heap.
        let start = phys & !(PAGE - 1);
        let head = (phys - start) as usize;
        let span = (head + len.max(1)).next_multiple_of(PAGE as usize) + PAGE as usize;
        let mut buf = alloc::vec![0u8; span].into_boxed_slice();
        self.read(start, &mut buf);
        // SAFETY: `head` < PAGE <= span, inside the allocation.
        let p = NonNull::new(unsafe { buf.as_mut_ptr().add(head) })?;
        self.maps.lock().insert(p.as_ptr() as usize, (start, buf));
        Some(p)
    }

    unsafe fn unmap(&self, virt: NonNull<u8>, _len: usize) {
        let entry = self.maps.lock().remove(&(virt.as_ptr() as usize));
        if let Some((phys, buf)) = entry {
            self.write(phys, &buf);
        }
    }

    fn port_read(&self, port: u16, width: u32) -> u32 {
        let v = self.ports.lock().get(&port).copied().unwrap_or(0);
        match width {
            8 => v & 0xFF,
            16 => v & 0xFFFF,
            _ => v,
        }
    }

    fn port_write(&self, port: u16, value: u32, _width: u32) {
        self.ports.lock().insert(port, value);
    }

    fn pci_read(&self, at: PciLocation, offset: u16, width: u32) -> u64 {
        let pci = self.pci.lock();
        (0..u16::try_from(width / 8).unwrap_or(4))
            .rev()
            .fold(0u64, |v, i| {
                (v << 8) | u64::from(pci.get(&(at, offset.wrapping_add(i))).copied().unwrap_or(0))
            })
    }

    fn pci_write(&self, at: PciLocation, offset: u16, value: u64, width: u32) {
        let mut pci = self.pci.lock();
        for i in 0..u16::try_from(width / 8).unwrap_or(4) {
            pci.insert((at, offset.wrapping_add(i)), (value >> (8 * i)) as u8);
        }
    }

    fn now_ns(&self) -> u64 {
        let real = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        real.saturating_add(self.slept_ns.load(Ordering::Relaxed))
    }

    fn stall_us(&self, us: u64) {
        self.slept_ns
            .fetch_add(us.saturating_mul(1000), Ordering::Relaxed);
    }

    fn sleep_ms(&self, ms: u64) {
        self.slept_ns
            .fetch_add(ms.saturating_mul(1_000_000), Ordering::Relaxed);
    }
}

/// Runs ACPICA over a dump's tables on a [`SimMachine`]: what `acpi-probe` reports under
/// `aml` and `host_bridges`. Call it once per process (ACPICA is global).
pub fn probe_aml(tables: &[([u8; 4], &[u8])], overrides: &[IsaOverride]) -> AmlReport {
    probe_aml_within(tables, overrides, crate::aml::os::MAX_LIVE)
}

/// [`probe_aml`] with at most `max_bytes` held by ACPICA at once ([`LoadOptions::max_bytes`]).
pub fn probe_aml_within(
    tables: &[([u8; 4], &[u8])],
    overrides: &[IsaOverride],
    max_bytes: u64,
) -> AmlReport {
    let machine: &'static SimMachine = Box::leak(Box::new(SimMachine::new()));
    let Some(rsdp) = machine.install_tables(tables) else {
        return AmlReport {
            errors: alloc::vec!["no tables".into()],
            ..AmlReport::default()
        };
    };
    let options = LoadOptions {
        overrides: overrides.to_vec(),
        max_bytes,
        ..LoadOptions::default()
    };
    aml::load(machine, rsdp, &options)
}
