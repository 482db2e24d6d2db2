//! The console's `lspci` as pciutils shapes it: the option words, and the one-line form of a
//! function for each `-n` level.
//!
//! Options are single letters after a `-`, alone or combined (`-vt`, `-nn`, `-v -nn`):
//! `t` tree, `v` verbose (`-vv` adds where the MSI-X table and PBA are), `n` numbers (`-n` numbers only, `-nn`
//! names and numbers), `D` always show the PCI domain (segment). Anything else is a usage
//! error. As pciutils does, the domain is shown only with `-D` or when some function is
//! outside domain 0.
//!
//! ```text
//! lspci:      00:01.0 Non-Volatile memory controller: Red Hat, Inc. QEMU NVM Express Controller (rev 02)
//! lspci -n:   00:01.0 0108: 1b36:0010 (rev 02)
//! lspci -nn:  00:01.0 Non-Volatile memory controller [0108]: Red Hat, Inc. QEMU NVM Express Controller [1b36:0010] (rev 02)
//! lspci -v:   the line, then ` (prog-if 02 [NVM Express])`, then the verbose block
//! ```

use core::fmt::{self, Write};

use crate::enumerate::{Function, Topology};
use crate::ids;

/// The usage line.
pub const USAGE: &str = "usage: lspci [-t] [-v|-vv] [-n|-nn] [-D]";

/// What the option words ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `-t`: the tree.
    pub tree: bool,
    /// How many `v`s (at most 2): 1 adds the verbose block after each line, 2 also the
    /// MSI-X table and PBA locations.
    pub verbose: u8,
    /// How many `n`s: 0 names, 1 numbers, 2 (or more) both.
    pub numeric: u8,
    /// `-D`: always show the domain.
    pub domains: bool,
}

impl Options {
    /// Parses the words after `lspci`. `Err` carries the offending word.
    pub fn parse<'a>(args: &[&'a str]) -> Result<Options, &'a str> {
        let mut o = Options::default();
        for &word in args {
            let Some(letters) = word.strip_prefix('-').filter(|l| !l.is_empty()) else {
                return Err(word);
            };
            for letter in letters.chars() {
                match letter {
                    't' => o.tree = true,
                    'v' => o.verbose = o.verbose.saturating_add(1).min(2),
                    'n' => o.numeric = o.numeric.saturating_add(1).min(2),
                    'D' => o.domains = true,
                    _ => return Err(word),
                }
            }
        }
        Ok(o)
    }

    /// Whether addresses carry the domain for this topology.
    pub fn show_domain(&self, topology: &Topology) -> bool {
        self.domains || topology.functions.iter().any(|f| f.address.segment() != 0)
    }
}

/// One listing line in pciutils' form for these options (without the newline); `domain`
/// from [`Options::show_domain`].
pub fn write_line<W: Write + ?Sized>(
    w: &mut W,
    f: &Function,
    options: &Options,
    domain: bool,
) -> fmt::Result {
    let a = f.address;
    if domain {
        write!(w, "{:04x}:", a.segment())?;
    }
    write!(w, "{:02x}:{:02x}.{} ", a.bus(), a.device(), a.function())?;
    let class = ids::class_name(f.class, f.subclass);
    let (vendor, device) = (
        ids::vendor_name(f.vendor_id),
        ids::device_name(f.vendor_id, f.device_id),
    );
    match options.numeric {
        0 => {
            match class {
                Some(name) => w.write_str(name)?,
                None => write!(w, "Class {:02x}{:02x}", f.class, f.subclass)?,
            }
            w.write_str(": ")?;
            match (vendor, device) {
                (Some(v), Some(d)) => write!(w, "{v} {d}")?,
                (Some(v), None) => write!(w, "{v} Device {:04x}", f.device_id)?,
                (None, _) => write!(w, "Device {:04x}:{:04x}", f.vendor_id, f.device_id)?,
            }
        }
        1 => write!(
            w,
            "{:02x}{:02x}: {:04x}:{:04x}",
            f.class, f.subclass, f.vendor_id, f.device_id
        )?,
        _ => {
            write!(
                w,
                "{} [{:02x}{:02x}]: ",
                class.unwrap_or("Class"),
                f.class,
                f.subclass
            )?;
            if let Some(v) = vendor {
                write!(w, "{v} ")?;
            }
            write!(
                w,
                "{} [{:04x}:{:04x}]",
                device.unwrap_or("Device"),
                f.vendor_id,
                f.device_id
            )?;
        }
    }
    if f.revision != 0 {
        write!(w, " (rev {:02x})", f.revision)?;
    }
    if options.verbose > 0 && f.prog_if != 0 {
        write!(w, " (prog-if {:02x}", f.prog_if)?;
        if let Some(name) = ids::prog_if_name(f.class, f.subclass, f.prog_if) {
            write!(w, " [{name}]")?;
        }
        w.write_char(')')?;
    }
    Ok(())
}
