//! Text output of a [`Topology`] into any [`core::fmt::Write`]: a listing like `lspci -nn`,
//! a tree like `lspci -tv`, and one machine-readable line per function for the test runner.
//! The console's `lspci` command with its options ([`Options`], [`write_command`]) is shaped
//! like pciutils' (submodule `options`), and its `-v` block reads the registers that change
//! from configuration space at the time of the command (submodule `verbose`).
//!
//! Listing ([`write_listing`]), one line per function (revision only when not zero, as
//! `lspci`; names from [`ids`], otherwise `Device` and the numbers):
//!
//! ```text
//! 0000:00:00.0 Host bridge [0600]: Intel Corporation 82G33/G31/P35/P31 Express DRAM Controller [8086:29c0]
//! 0000:00:1f.2 SATA controller [0106]: Intel Corporation 82801IR/IO/IH (ICH9R/DO/DH) 6 port SATA Controller [AHCI mode] [8086:2922] (rev 02)
//! 0000:01:00.0 Non-Volatile memory controller [0108]: Red Hat, Inc. QEMU NVM Express Controller [1b36:0010] (rev 02)
//! 0000:00:05.0 Class [7700]: Device [abcd:0001]
//! ```
//!
//! Tree ([`write_tree`]): a `-[seg:bus]` header per root bus, then each bus's functions as
//! `dd.f  name`; a bridge shows `-[secondary]` (or `-[secondary-subordinate]`) and, when its
//! bus was scanned, that bus's functions indented below it:
//!
//! ```text
//! -[0000:00]
//!  +-00.0  Intel Corporation 82G33/G31/P35/P31 Express DRAM Controller
//!  +-01.0-[01]  Red Hat, Inc. QEMU PCIe Root port
//!  |  \-00.0  Red Hat, Inc. QEMU NVM Express Controller
//!  +-02.0-[02-03]  Red Hat, Inc. QEMU PCIe-to-PCI bridge
//!  |  \-01.0-[03]  Red Hat, Inc. QEMU PCI-PCI bridge
//!  \-1f.0  Intel Corporation 82801IB (ICH9) LPC Interface Controller
//! ```
//!
//! Machine-readable ([`write_machine`]): one `PCIDEV` line per function, then one `PCIERR`
//! line per error. Numbers are lower-case hex without `0x` unless shown, the interrupt line
//! is decimal; fields are separated by single spaces:
//!
//! ```text
//! PCIDEV <seg:bus:dev.fn> vendor=<4 hex> device=<4 hex> class=<class><subclass><prog-if, 2 hex each> rev=<2 hex> header=<2 hex> bars=<list> irq=<pin>/<line>[ msi=<count>[,64][,mask]][ msix=<size>,bir<n>@0x<off>,pba<n>@0x<off>] caps=<list> ecaps=<list>
//! PCIERR <seg:bus:dev.fn> <message>
//! ```
//!
//! - `header` is the whole byte at 0x0E (bit 7 = multifunction).
//! - `bars` lists present BARs as `<slot>:<io|mem32|mem64>[p]:0x<address>:0x<size>`
//!   (`p` = prefetchable), comma-separated; `-` if none.
//! - `irq` is the pin letter `A`-`D` or `-`, then the interrupt line in decimal.
//! - `msi=`/`msix=` appear only when the function has them; `msi` gives the vector count.
//! - `caps` are legacy capability IDs (2 hex digits), `ecaps` extended ones (4 hex
//!   digits), comma-separated in list order; `-` if none.
//!
//! ```text
//! PCIDEV 0000:00:00.0 vendor=8086 device=29c0 class=060000 rev=00 header=00 bars=- irq=-/0 caps=- ecaps=-
//! PCIDEV 0000:00:01.0 vendor=1b36 device=000c class=060400 rev=00 header=81 bars=0:mem32:0xfea00000:0x1000 irq=A/10 msix=1,bir0@0x0,pba0@0x800 caps=10,11 ecaps=0001
//! PCIDEV 0000:01:00.0 vendor=1b36 device=0010 class=010802 rev=02 header=00 bars=0:mem64:0xfe800000:0x4000 irq=A/10 msix=65,bir0@0x2000,pba0@0x3000 caps=11,01,10 ecaps=0001
//! PCIDEV 0000:00:03.0 vendor=1234 device=11e8 class=00ff00 rev=10 header=00 bars=0:mem32:0xfe000000:0x100000 irq=A/11 msi=1,64 caps=05 ecaps=-
//! PCIERR 0000:00:05.0 BAR 5 is 64-bit but is the last BAR; ignored
//! ```

use core::fmt::{self, Write};

use crate::bar::BarKind;
use crate::enumerate::{Function, ScanError, Topology};
use crate::ids;

mod options;
#[cfg(test)]
mod tests;
mod verbose;

pub use options::{Options, USAGE, write_line};
pub use verbose::{Driver, Read, write_verbose};

/// The driver bound to a function, as [`write_command`] asks for it: its name and the
/// (CPU, vector) pairs it holds.
pub type BoundDriver = (&'static str, alloc::vec::Vec<(u32, u8)>);

/// The console's `lspci` with `options`: the tree, or one line per function in pciutils'
/// form, each followed with `-v` by its verbose block and a blank line. `read(address,
/// offset)` reads a dword of a function's configuration space now; `driver(address)` names
/// the driver bound to a function and the (CPU, vector) pairs it holds.
pub fn write_command<W: Write + ?Sized>(
    w: &mut W,
    topology: &Topology,
    options: &Options,
    read: &dyn Fn(crate::Address, u16) -> Option<u32>,
    driver: &dyn Fn(crate::Address) -> Option<BoundDriver>,
) -> fmt::Result {
    if options.tree {
        return write_tree(w, topology);
    }
    let domain = options.show_domain(topology);
    for f in &topology.functions {
        write_line(w, f, options, domain)?;
        w.write_char('\n')?;
        if options.verbose > 0 {
            let bound = driver(f.address);
            let bound = bound
                .as_ref()
                .map(|(name, vectors)| Driver { name, vectors });
            let read = |offset| read(f.address, offset);
            write_verbose(w, f, &read, bound.as_ref(), options.verbose)?;
            w.write_char('\n')?;
        }
    }
    Ok(())
}

/// Class name and code: `SATA controller [0106]`, or `Class [7700]` when unknown.
fn write_class<W: Write + ?Sized>(w: &mut W, f: &Function) -> fmt::Result {
    let name = ids::class_name(f.class, f.subclass).unwrap_or("Class");
    write!(w, "{name} [{:02x}{:02x}]", f.class, f.subclass)
}

/// `Vendor Device` with known names; `Device` where a name is unknown.
fn write_names<W: Write + ?Sized>(w: &mut W, f: &Function) -> fmt::Result {
    if let Some(vendor) = ids::vendor_name(f.vendor_id) {
        write!(w, "{vendor} ")?;
    }
    w.write_str(ids::device_name(f.vendor_id, f.device_id).unwrap_or("Device"))
}

/// One line of [`write_listing`], without the newline.
pub fn write_listing_line<W: Write + ?Sized>(w: &mut W, f: &Function) -> fmt::Result {
    write!(w, "{} ", f.address)?;
    write_class(w, f)?;
    w.write_str(": ")?;
    write_names(w, f)?;
    write!(w, " [{:04x}:{:04x}]", f.vendor_id, f.device_id)?;
    if f.revision != 0 {
        write!(w, " (rev {:02x})", f.revision)?;
    }
    Ok(())
}

/// Every function, one line each, like `lspci -nn` (see the module documentation).
pub fn write_listing<W: Write + ?Sized>(w: &mut W, topology: &Topology) -> fmt::Result {
    for f in &topology.functions {
        write_listing_line(w, f)?;
        w.write_char('\n')?;
    }
    Ok(())
}

/// Name in the tree: like the listing's, but numbers as `lspci -tv` shows them.
fn write_tree_name<W: Write + ?Sized>(w: &mut W, f: &Function) -> fmt::Result {
    match (
        ids::vendor_name(f.vendor_id),
        ids::device_name(f.vendor_id, f.device_id),
    ) {
        (Some(v), Some(d)) => write!(w, "{v} {d}"),
        (Some(v), None) => write!(w, "{v} Device {:04x}", f.device_id),
        (None, Some(d)) => write!(w, "Device {:04x}:{:04x} {d}", f.vendor_id, f.device_id),
        (None, None) => write!(w, "Device {:04x}:{:04x}", f.vendor_id, f.device_id),
    }
}

/// The buses as a tree, like `lspci -tv` (see the module documentation). Iterative, so a
/// deep chain of bridges cannot overflow the kernel stack.
pub fn write_tree<W: Write + ?Sized>(w: &mut W, topology: &Topology) -> fmt::Result {
    let labels = SLOT_LABELS.get().copied();
    write_tree_labelled(w, topology, &|address| labels.and_then(|f| f(address)))
}

/// A hot-plug slot below a port, as the slot's owner reports it: its Physical Slot Number
/// (PCIe Base 6.0 §7.5.3.9) and whether its power controller is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLabel {
    /// Physical Slot Number.
    pub number: u16,
    /// Slot power on.
    pub powered: bool,
}

/// Where [`write_tree`] gets slot labels from (set once by the kernel's hot-plug code).
static SLOT_LABELS: spin::Once<fn(crate::Address) -> Option<SlotLabel>> = spin::Once::new();

/// Makes [`write_tree`] label hot-plug ports with what `labels` reports (once; later calls
/// are ignored).
pub fn set_slot_labels(labels: fn(crate::Address) -> Option<SlotLabel>) {
    SLOT_LABELS.call_once(|| labels);
}

/// [`write_tree`] with the slot labels `labels` gives (`[slot 1, power on]` after a port's
/// name).
pub fn write_tree_labelled<W: Write + ?Sized>(
    w: &mut W,
    topology: &Topology,
    labels: &dyn Fn(crate::Address) -> Option<SlotLabel>,
) -> fmt::Result {
    // One level per bus being printed: its functions and how many are done.
    let mut stack: alloc::vec::Vec<(&[Function], usize)> = alloc::vec::Vec::new();
    for root in topology.buses.iter().filter(|b| b.bridge.is_none()) {
        writeln!(w, "-[{:04x}:{:02x}]", root.segment, root.number)?;
        stack.push((topology.functions_on(root.segment, root.number), 0));
        while let Some(&mut (functions, ref mut done)) = stack.last_mut() {
            let Some(f) = functions.get(*done) else {
                stack.pop();
                continue;
            };
            *done += 1;
            let last = *done == functions.len();
            w.write_char(' ')?;
            for &(outer, outer_done) in &stack[..stack.len() - 1] {
                w.write_str(if outer_done < outer.len() {
                    "|  "
                } else {
                    "   "
                })?;
            }
            w.write_str(if last { "\\-" } else { "+-" })?;
            write!(w, "{:02x}.{}", f.address.device(), f.address.function())?;
            if let Some(b) = f.bridge {
                if b.subordinate > b.secondary {
                    write!(w, "-[{:02x}-{:02x}]", b.secondary, b.subordinate)?;
                } else {
                    write!(w, "-[{:02x}]", b.secondary)?;
                }
            }
            w.write_str("  ")?;
            write_tree_name(w, f)?;
            if let Some(slot) = labels(f.address) {
                write!(
                    w,
                    " [slot {}, power {}]",
                    slot.number,
                    if slot.powered { "on" } else { "off" }
                )?;
            }
            w.write_char('\n')?;
            if let Some(bus) = topology.bus_behind(f.address) {
                stack.push((topology.functions_on(bus.segment, bus.number), 0));
            }
        }
    }
    Ok(())
}

/// One `PCIDEV` line (see the module documentation), without the newline.
pub fn write_function_line<W: Write + ?Sized>(w: &mut W, f: &Function) -> fmt::Result {
    write!(
        w,
        "PCIDEV {} vendor={:04x} device={:04x} class={:06x} rev={:02x} header={:02x} bars=",
        f.address,
        f.vendor_id,
        f.device_id,
        f.class_code(),
        f.revision,
        f.header_type_byte()
    )?;
    let mut any = false;
    for (slot, bar) in f.bars() {
        if any {
            w.write_char(',')?;
        }
        any = true;
        let kind = match bar.kind {
            BarKind::Io => "io",
            BarKind::Memory32 => "mem32",
            BarKind::Memory64 => "mem64",
        };
        let p = if bar.prefetchable { "p" } else { "" };
        write!(w, "{slot}:{kind}{p}:{:#x}:{:#x}", bar.address, bar.size)?;
    }
    if !any {
        w.write_char('-')?;
    }
    match f.interrupt_pin_letter() {
        Some(pin) => write!(w, " irq={pin}/{}", f.interrupt_line)?,
        None => write!(w, " irq=-/{}", f.interrupt_line)?,
    }
    if let Some(msi) = f.msi {
        write!(w, " msi={}", msi.vectors)?;
        if msi.is_64bit {
            w.write_str(",64")?;
        }
        if msi.per_vector_masking {
            w.write_str(",mask")?;
        }
    }
    if let Some(x) = f.msix {
        write!(
            w,
            " msix={},bir{}@{:#x},pba{}@{:#x}",
            x.table_size, x.table_bir, x.table_offset, x.pba_bir, x.pba_offset
        )?;
    }
    w.write_str(" caps=")?;
    write_list(w, f.capabilities.iter().map(|c| c.id), |w, id| {
        write!(w, "{id:02x}")
    })?;
    w.write_str(" ecaps=")?;
    write_list(w, f.extended_capabilities.iter().map(|c| c.id), |w, id| {
        write!(w, "{id:04x}")
    })
}

/// One `PCIERR` line, without the newline.
pub fn write_error_line<W: Write + ?Sized>(w: &mut W, e: &ScanError) -> fmt::Result {
    write!(w, "PCIERR {} {}", e.address, e.kind)
}

/// `PCIDEV` lines for every function, then `PCIERR` lines for every error.
pub fn write_machine<W: Write + ?Sized>(w: &mut W, topology: &Topology) -> fmt::Result {
    for f in &topology.functions {
        write_function_line(w, f)?;
        w.write_char('\n')?;
    }
    for e in &topology.errors {
        write_error_line(w, e)?;
        w.write_char('\n')?;
    }
    Ok(())
}

fn write_list<W: Write + ?Sized, T>(
    w: &mut W,
    items: impl Iterator<Item = T>,
    mut one: impl FnMut(&mut W, T) -> fmt::Result,
) -> fmt::Result {
    let mut any = false;
    for item in items {
        if any {
            w.write_char(',')?;
        }
        any = true;
        one(w, item)?;
    }
    if !any {
        w.write_char('-')?;
    }
    Ok(())
}
