//! The I/O APICs (82093AA data sheet; ACPI 6.5 §5.2.12.3 for where they are).
//!
//! Each IOAPIC is an indirect register file: write the register index to IOREGSEL (+0x00),
//! then read or write IOWIN (+0x10). Register 0x01 holds the version and the highest
//! redirection entry; entry n is the 64-bit pair at 0x10 + 2n. An entry carries the vector,
//! the delivery mode (fixed), polarity, trigger mode, the mask bit and the destination APIC
//! ID. Every entry is masked at start; entries are unmasked only when a vector was allocated
//! for them and a handler installed.

use alloc::vec::Vec;

use spin::Mutex;

use crate::memory::mmio::Mmio;
use crate::platform::{IoApicInfo, SourceOverride};

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_VERSION: u32 = 0x01;
const REG_REDIRECTION: u32 = 0x10;

/// Redirection entry: masked.
const MASKED: u64 = 1 << 16;
/// Redirection entry: level-triggered.
const LEVEL: u64 = 1 << 15;
/// Redirection entry: active-low.
const ACTIVE_LOW: u64 = 1 << 13;

/// How an input is wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// Level-triggered (else edge).
    pub level: bool,
    /// Active-low (else active-high).
    pub active_low: bool,
}

impl Trigger {
    /// ISA default: edge, active-high.
    pub const ISA: Trigger = Trigger {
        level: false,
        active_low: false,
    };
    /// PCI INTx: level, active-low (PCI Local Bus 3.0 §2.2.6).
    pub const PCI: Trigger = Trigger {
        level: true,
        active_low: true,
    };
}

/// One mapped IOAPIC.
struct IoApic {
    info: IoApicInfo,
    mmio: Mmio,
    inputs: u32,
}

impl IoApic {
    fn read(&self, reg: u32) -> u32 {
        self.mmio.write32(IOREGSEL, reg);
        self.mmio.read32(IOWIN)
    }

    fn write(&self, reg: u32, value: u32) {
        self.mmio.write32(IOREGSEL, reg);
        self.mmio.write32(IOWIN, value);
    }

    fn entry(&self, input: u32) -> u64 {
        let low = self.read(REG_REDIRECTION + 2 * input);
        let high = self.read(REG_REDIRECTION + 2 * input + 1);
        u64::from(high) << 32 | u64::from(low)
    }

    fn set_entry(&self, input: u32, value: u64) {
        // Mask first so the entry is never live half-written.
        self.write(REG_REDIRECTION + 2 * input, (value as u32) | MASKED as u32);
        self.write(REG_REDIRECTION + 2 * input + 1, (value >> 32) as u32);
        self.write(REG_REDIRECTION + 2 * input, value as u32);
    }
}

/// All IOAPICs and the ISA overrides.
struct IoApics {
    chips: Vec<IoApic>,
    overrides: Vec<SourceOverride>,
}

static IOAPICS: Mutex<Option<IoApics>> = Mutex::new(None);

/// Why an input could not be programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No IOAPIC serves this GSI.
    NoSuchGsi(u32),
    /// The destination APIC ID does not fit the entry's 8-bit destination field (82093AA
    /// §3.2.4; x2APIC IDs above 255 need interrupt remapping).
    Unreachable(u32),
    /// Interrupts are remapped and the remapping entry could not be written.
    NotRemapped(u32),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::NoSuchGsi(gsi) => write!(f, "no IOAPIC serves GSI {gsi}"),
            Error::Unreachable(id) => write!(
                f,
                "APIC ID {id} is above 255: an IOAPIC entry cannot name it without interrupt remapping"
            ),
            Error::NotRemapped(gsi) => write!(
                f,
                "GSI {gsi}: no interrupt remapping entry could be written for it"
            ),
        }
    }
}

/// The highest Maximum Redirection Entry an IOAPIC can have: entries 0 to 77h fill the
/// register indices 10h to FFh.
const MAX_REDIRECTION_ENTRY: u32 = 0x77;

/// Maps every IOAPIC and masks all of their inputs. A chip that does not answer (version
/// reads all ones), claims more inputs than the index register reaches, or whose GSIs
/// overflow or overlap an earlier chip's is logged and left out.
pub fn init(infos: &[IoApicInfo], overrides: &[SourceOverride]) {
    let mut chips = Vec::new();
    for info in infos {
        // The chip's 4 KiB register page is the kernel's: no device window may reach it.
        crate::memory::mmio::reserve_for_kernel(info.address & !0xfff, 0x1000);
        let mmio = match Mmio::map(info.address, 0x20) {
            Ok(m) => m,
            Err(e) => {
                log::error!(
                    "ioapic: cannot map IOAPIC {} at {:#x}: {e}",
                    info.id,
                    info.address
                );
                continue;
            }
        };
        let mut chip = IoApic {
            info: *info,
            mmio,
            inputs: 0,
        };
        let version = chip.read(REG_VERSION);
        // Maximum Redirection Entry (bits 23:16): the index register is 8 bits and the
        // table starts at 10h, two registers per input, so at most 78h entries exist
        // (82093AA datasheet §3.2.2). All ones means nothing answered at the address.
        let max_entry = (version >> 16) & 0xff;
        if version == u32::MAX || max_entry > MAX_REDIRECTION_ENTRY {
            log::error!(
                "ioapic: IOAPIC {} at {:#x} reads version {version:#x}: no IOAPIC there (MADT wrong?); its GSIs from {} are not used",
                info.id,
                info.address,
                info.gsi_base
            );
            continue;
        }
        chip.inputs = max_entry + 1;
        // A chip that answers is masked whole, used or not: firmware may have left inputs
        // unmasked.
        for input in 0..chip.inputs {
            chip.set_entry(input, MASKED);
        }
        let Some(end) = info.gsi_base.checked_add(chip.inputs) else {
            log::error!(
                "ioapic: IOAPIC {} at {:#x}: GSI base {:#x} plus {} inputs overflows; not used",
                info.id,
                info.address,
                info.gsi_base,
                chip.inputs
            );
            continue;
        };
        if let Some(other) = chips
            .iter()
            .find(|c: &&IoApic| c.info.gsi_base < end && info.gsi_base < c.info.gsi_base + c.inputs)
        {
            log::error!(
                "ioapic: IOAPIC {} (GSIs {}-{}) overlaps IOAPIC {} (GSIs from {}); not used",
                info.id,
                info.gsi_base,
                end - 1,
                other.info.id,
                other.info.gsi_base
            );
            continue;
        }
        log::info!(
            "ioapic: id {} version {:#x}, GSIs {}-{}, all masked",
            info.id,
            version & 0xff,
            info.gsi_base,
            end - 1
        );
        chips.push(chip);
    }
    *IOAPICS.lock() = Some(IoApics {
        chips,
        overrides: overrides.to_vec(),
    });
}

/// The GSI and wiring of ISA IRQ `irq`, after the MADT's overrides.
pub fn isa_route(irq: u8) -> (u32, Trigger) {
    let guard = IOAPICS.lock();
    let over = guard
        .as_ref()
        .and_then(|a| a.overrides.iter().find(|o| o.isa_irq == irq).copied());
    match over {
        Some(o) => (
            o.gsi,
            Trigger {
                level: o.level,
                active_low: o.active_low,
            },
        ),
        None => (u32::from(irq), Trigger::ISA),
    }
}

fn with_gsi<R>(gsi: u32, f: impl FnOnce(&IoApic, u32) -> R) -> Result<R, Error> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let guard = IOAPICS.lock();
        let chip = guard
            .as_ref()
            .and_then(|a| {
                a.chips.iter().find(|c| {
                    gsi.checked_sub(c.info.gsi_base)
                        .is_some_and(|i| i < c.inputs)
                })
            })
            .ok_or(Error::NoSuchGsi(gsi))?;
        Ok(f(chip, gsi - chip.info.gsi_base))
    })
}

/// Points `gsi` at `vector` on the CPU with APIC ID `dest`, left masked.
///
/// Where interrupts are remapped (`iommu::interrupts`), the entry is in the remappable
/// format: it names the remapping entry written for `vector`, which checks that the message
/// comes from this IOAPIC.
pub fn route(gsi: u32, vector: u8, dest: u32, trigger: Trigger) -> Result<(), Error> {
    let id = with_gsi(gsi, |chip, _| chip.info.id)?;
    if let Some(remapped) = crate::iommu::interrupts::ioapic_entry(
        id,
        vector,
        dest,
        trigger.level,
        trigger.active_low,
        true,
    ) {
        let entry = remapped.map_err(|e| {
            log::error!("ioapic: GSI {gsi}: {e}");
            Error::NotRemapped(gsi)
        })?;
        return with_gsi(gsi, |chip, input| chip.set_entry(input, entry));
    }
    let dest = u8::try_from(dest).map_err(|_| Error::Unreachable(dest))?;
    let mut entry = u64::from(vector) | MASKED | u64::from(dest) << 56;
    if trigger.level {
        entry |= LEVEL;
    }
    if trigger.active_low {
        entry |= ACTIVE_LOW;
    }
    with_gsi(gsi, |chip, input| chip.set_entry(input, entry))
}

/// Masks or unmasks `gsi`.
pub fn set_masked(gsi: u32, masked: bool) -> Result<(), Error> {
    with_gsi(gsi, |chip, input| {
        let entry = chip.entry(input);
        chip.set_entry(
            input,
            if masked {
                entry | MASKED
            } else {
                entry & !MASKED
            },
        );
    })
}

/// The redirection entry of `gsi` (for tests and the `irqs` listing).
pub fn entry(gsi: u32) -> Result<u64, Error> {
    with_gsi(gsi, |chip, input| chip.entry(input))
}
