//! The virtio PCI capabilities (§4.1.4): the vendor-specific capabilities that locate the
//! common configuration, notification, ISR, device-specific configuration and PCI
//! configuration access structures.

use alloc::format;
use alloc::string::String;

use pci::irq::PciFunction;

use super::transport::COMMON_LEN;

// Capability types (§4.1.4).
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_PCI_CFG: u8 = 5;
/// PCI capability ID of vendor-specific capabilities.
const CAP_ID_VENDOR: u8 = 0x09;

/// Where a structure lies: a BAR and a byte range in it (§4.1.4, `struct virtio_pci_cap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Structure {
    /// BAR index.
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Length in bytes.
    pub length: u32,
}

/// The virtio capabilities of a function (§4.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Common configuration.
    pub common: Structure,
    /// Notification area.
    pub notify: Structure,
    /// `notify_off_multiplier`.
    pub notify_multiplier: u32,
    /// ISR status.
    pub isr: Structure,
    /// Device-specific configuration, if the device has any.
    pub device: Option<Structure>,
    /// Configuration-space offset of the PCI configuration access capability.
    pub pci_cfg: u16,
}

impl Caps {
    /// Reads the vendor-specific capabilities of `function`: the first instance of each type
    /// that lies inside a memory BAR (§4.1.4.1: the driver uses the first it can).
    pub fn find(function: &PciFunction) -> Result<Caps, String> {
        let info = function.info();
        let mut found: [Option<(Structure, u16)>; 6] = [None; 6];
        for cap in info.capabilities.iter().filter(|c| c.id == CAP_ID_VENDOR) {
            let at = u16::from(cap.offset);
            let head = function.config_read32(at);
            let (cap_len, cfg_type) = ((head >> 16) as u8, (head >> 24) as u8);
            if !(CAP_COMMON..=CAP_PCI_CFG).contains(&cfg_type) || cap_len < 16 {
                continue;
            }
            let structure = Structure {
                bar: function.config_read32(at + 4) as u8,
                offset: function.config_read32(at + 8),
                length: function.config_read32(at + 12),
            };
            let slot = &mut found[usize::from(cfg_type)];
            if slot.is_some() {
                continue;
            }
            if cfg_type == CAP_PCI_CFG {
                // Its BAR fields select what the window reaches; nothing to locate.
                if cap_len >= 20 {
                    *slot = Some((structure, at));
                }
                continue;
            }
            if cfg_type == CAP_NOTIFY && cap_len < 20 {
                continue;
            }
            let fits = info
                .bars
                .get(usize::from(structure.bar))
                .copied()
                .flatten()
                .filter(|b| b.kind != pci::BarKind::Io)
                .is_some_and(|b| {
                    structure.length > 0
                        && u64::from(structure.offset) + u64::from(structure.length) <= b.size
                });
            if fits {
                *slot = Some((structure, at));
            }
        }
        let need = |t: u8, what: &str| {
            found[usize::from(t)].ok_or_else(|| {
                format!("no usable virtio {what} capability (a legacy-only device?)")
            })
        };
        let common = need(CAP_COMMON, "common configuration")?.0;
        let (notify, notify_at) = need(CAP_NOTIFY, "notification")?;
        let isr = need(CAP_ISR, "ISR status")?.0;
        let pci_cfg = need(CAP_PCI_CFG, "PCI configuration access")?.1;
        if common.length < COMMON_LEN {
            return Err(format!("common configuration of {} bytes", common.length));
        }
        Ok(Caps {
            common,
            notify,
            notify_multiplier: function.config_read32(notify_at + 16),
            isr,
            device: found[usize::from(CAP_DEVICE)].map(|(s, _)| s),
            pci_cfg,
        })
    }
}
