//! The Fixed ACPI Description Table, signature `FACP` (ACPI 6.5 §5.2.9, Table 5.9).
//!
//! Design: the FADT grew with every ACPI revision and real firmware ships every length from
//! 116 bytes (ACPI 1.0; QEMU's SeaBIOS with `acpi=off` still does) to 276. Each field is
//! therefore `Option`: present only when the table's length field covers it. Where a
//! 64-bit `X_` field exists (ACPI 2.0+) it is preferred when it is inside the table and
//! nonzero, else the 32-bit field is used; nothing beyond the length field is ever read
//! (the old kernel page-faulted reading `X_DSDT` past the end of a 116-byte FADT).

use super::bytes::{u8_at, u16_at, u32_at, u64_at};
use super::{SdtHeader, Table, TableError};

/// Bytes up to and including the `Flags` field, the ACPI 1.0 FADT (ACPI 6.5 Table 5.9).
pub const FADT_V1_LEN: usize = 116;

// Field offsets (ACPI 6.5 §5.2.9, Table 5.9).
const FIRMWARE_CTRL: usize = 36;
const DSDT: usize = 40;
const SCI_INT: usize = 46;
const SMI_CMD: usize = 48;
const ACPI_ENABLE: usize = 52;
const ACPI_DISABLE: usize = 53;
const PM1A_EVT_BLK: usize = 56;
const PM1B_EVT_BLK: usize = 60;
const PM1A_CNT_BLK: usize = 64;
const PM1B_CNT_BLK: usize = 68;
const PM_TMR_BLK: usize = 76;
const PM1_EVT_LEN: usize = 88;
const PM1_CNT_LEN: usize = 89;
const PM_TMR_LEN: usize = 91;
const CENTURY: usize = 108;
const IAPC_BOOT_ARCH: usize = 109;
const FLAGS: usize = 112;
const RESET_REG: usize = 116;
const RESET_VALUE: usize = 128;
const MINOR_VERSION: usize = 131;
const X_FIRMWARE_CTRL: usize = 132;
const X_DSDT: usize = 140;
const X_PM1A_EVT_BLK: usize = 148;
const X_PM1B_EVT_BLK: usize = 160;
const X_PM1A_CNT_BLK: usize = 172;
const X_PM1B_CNT_BLK: usize = 184;
const X_PM_TMR_BLK: usize = 208;

/// Size of a Generic Address Structure (ACPI 6.5 §5.2.3.2, Table 5.1).
pub const GAS_LEN: usize = 12;

// FADT fixed feature flags (ACPI 6.5 §5.2.9.1, Table 5.10).
/// `TMR_VAL_EXT`: the PM timer is 32 bits wide (else 24).
pub const FLAG_TMR_VAL_EXT: u32 = 1 << 8;
/// `RESET_REG_SUP`: the reset register is supported.
pub const FLAG_RESET_REG_SUP: u32 = 1 << 10;
/// `HW_REDUCED_ACPI`: no fixed hardware (PM1 blocks, PM timer, SCI as the old way).
pub const FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;

/// Address space IDs of a Generic Address Structure (ACPI 6.5 §5.2.3.2, Table 5.1).
pub mod space {
    /// System memory.
    pub const SYSTEM_MEMORY: u8 = 0;
    /// System I/O (ports).
    pub const SYSTEM_IO: u8 = 1;
    /// PCI configuration space.
    pub const PCI_CONFIG: u8 = 2;
}

/// A Generic Address Structure (ACPI 6.5 §5.2.3.2, Table 5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GenericAddress {
    /// Address space ([`space`]).
    pub space_id: u8,
    /// Register width in bits.
    pub bit_width: u8,
    /// Bit offset of the register at the address.
    pub bit_offset: u8,
    /// Access size: 0 undefined, 1 byte, 2 word, 3 dword, 4 qword.
    pub access_size: u8,
    /// The address.
    pub address: u64,
}

impl GenericAddress {
    /// Reads the 12-byte structure at `off`.
    pub fn parse(b: &[u8], off: usize) -> Option<Self> {
        Some(Self {
            space_id: u8_at(b, off)?,
            bit_width: u8_at(b, off.checked_add(1)?)?,
            bit_offset: u8_at(b, off.checked_add(2)?)?,
            access_size: u8_at(b, off.checked_add(3)?)?,
            address: u64_at(b, off.checked_add(4)?)?,
        })
    }

    /// A block of `len_bytes` I/O ports at `port`, as the 32-bit FADT fields describe one.
    pub fn io(port: u32, len_bytes: u8) -> Self {
        Self {
            space_id: space::SYSTEM_IO,
            bit_width: len_bytes.saturating_mul(8),
            bit_offset: 0,
            access_size: 0,
            address: u64::from(port),
        }
    }
}

/// The ACPI power-management timer (ACPI 6.5 §4.8.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmTimer {
    /// Where it is (normally an I/O port).
    pub block: GenericAddress,
    /// 32 bits wide (`TMR_VAL_EXT`), else 24.
    pub extended_32bit: bool,
}

/// IA-PC boot architecture flags (ACPI 6.5 §5.2.9.3, Table 5.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IapcBootArch(pub u16);

impl IapcBootArch {
    /// Bit 0 `LEGACY_DEVICES`: user-visible legacy (LPC/ISA) devices exist.
    pub fn legacy_devices(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bit 1 `8042`: an 8042 keyboard controller exists.
    pub fn i8042(self) -> bool {
        self.0 & (1 << 1) != 0
    }
    /// Bit 2 `VGA Not Present`: do not probe legacy VGA.
    pub fn vga_not_present(self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// Bit 3 `MSI Not Supported`.
    pub fn msi_not_supported(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// Bit 4 `PCIe ASPM Controls`: the OS must not enable ASPM on its own.
    pub fn pcie_aspm_controls(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Bit 5 `CMOS RTC Not Present`.
    pub fn cmos_rtc_not_present(self) -> bool {
        self.0 & (1 << 5) != 0
    }
}

/// The reset register (ACPI 6.5 §4.8.3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetRegister {
    /// Where to write.
    pub register: GenericAddress,
    /// What to write.
    pub value: u8,
}

/// What the kernel uses from the FADT. `None` = not covered by the table's length (or, for
/// addresses, zero).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fadt {
    /// The header (revision: 1 for ACPI 1.0, 3+ for ACPI 2.0+, 6 for 6.x).
    pub header: SdtHeader,
    /// Whether the bytes sum to zero.
    pub checksum_ok: bool,
    /// FADT minor version (ACPI 5.1+; 0 before).
    pub minor_version: Option<u8>,
    /// The FACS: `X_FIRMWARE_CTRL` when present and nonzero, else `FIRMWARE_CTRL`.
    pub facs: Option<u64>,
    /// The DSDT: `X_DSDT` when inside the table and nonzero, else `DSDT`.
    pub dsdt: Option<u64>,
    /// The SCI's interrupt (an ISA IRQ or a GSI).
    pub sci_int: Option<u16>,
    /// The SMI command port (0 = no legacy ACPI mode switch).
    pub smi_cmd: Option<u32>,
    /// Value to write to `smi_cmd` to enter ACPI mode.
    pub acpi_enable: Option<u8>,
    /// Value to write to `smi_cmd` to leave ACPI mode.
    pub acpi_disable: Option<u8>,
    /// PM1a event block.
    pub pm1a_evt: Option<GenericAddress>,
    /// PM1b event block.
    pub pm1b_evt: Option<GenericAddress>,
    /// PM1a control block.
    pub pm1a_cnt: Option<GenericAddress>,
    /// PM1b control block.
    pub pm1b_cnt: Option<GenericAddress>,
    /// The PM timer.
    pub pm_timer: Option<PmTimer>,
    /// The RTC's century register index in CMOS (0 = none).
    pub century: Option<u8>,
    /// IA-PC boot architecture flags (FADT revision 3+ only; reserved before).
    pub iapc_boot_arch: Option<IapcBootArch>,
    /// Fixed feature flags (ACPI 6.5 Table 5.10).
    pub flags: Option<u32>,
    /// The reset register, when `RESET_REG_SUP` is set and the table covers it.
    pub reset: Option<ResetRegister>,
}

impl Fadt {
    /// Parses a FADT (`FACP`). Needs the header and the 32-bit `FIRMWARE_CTRL`/`DSDT`
    /// fields at least; every later field is optional by length.
    pub fn parse(bytes: &[u8]) -> Result<Self, TableError> {
        let t = Table::parse(bytes, "FACP", DSDT + 4)?;
        let b = t.bytes;
        let flags = u32_at(b, FLAGS);
        let nonzero32 = |off| u32_at(b, off).filter(|v| *v != 0).map(u64::from);
        let nonzero64 = |off| u64_at(b, off).filter(|v| *v != 0);
        let len8 = |off| u8_at(b, off).unwrap_or(0);
        // A fixed register block: the X_ GAS when inside the table with a nonzero address,
        // else the 32-bit port with the FADT's length field.
        let block = |x_off: usize, off: usize, len_off: usize| {
            GenericAddress::parse(b, x_off)
                .filter(|g| g.address != 0)
                .or_else(|| {
                    u32_at(b, off)
                        .filter(|p| *p != 0)
                        .map(|p| GenericAddress::io(p, len8(len_off)))
                })
        };
        let pm_timer = block(X_PM_TMR_BLK, PM_TMR_BLK, PM_TMR_LEN).map(|block| PmTimer {
            block,
            extended_32bit: flags.is_some_and(|f| f & FLAG_TMR_VAL_EXT != 0),
        });
        let reset = match (
            flags,
            GenericAddress::parse(b, RESET_REG),
            u8_at(b, RESET_VALUE),
        ) {
            (Some(f), Some(register), Some(value)) if f & FLAG_RESET_REG_SUP != 0 => {
                Some(ResetRegister { register, value })
            }
            _ => None,
        };
        Ok(Self {
            header: t.header,
            checksum_ok: t.checksum_ok,
            minor_version: u8_at(b, MINOR_VERSION),
            facs: nonzero64(X_FIRMWARE_CTRL).or_else(|| nonzero32(FIRMWARE_CTRL)),
            dsdt: nonzero64(X_DSDT).or_else(|| nonzero32(DSDT)),
            sci_int: u16_at(b, SCI_INT),
            smi_cmd: u32_at(b, SMI_CMD),
            acpi_enable: u8_at(b, ACPI_ENABLE),
            acpi_disable: u8_at(b, ACPI_DISABLE),
            pm1a_evt: block(X_PM1A_EVT_BLK, PM1A_EVT_BLK, PM1_EVT_LEN),
            pm1b_evt: block(X_PM1B_EVT_BLK, PM1B_EVT_BLK, PM1_EVT_LEN),
            pm1a_cnt: block(X_PM1A_CNT_BLK, PM1A_CNT_BLK, PM1_CNT_LEN),
            pm1b_cnt: block(X_PM1B_CNT_BLK, PM1B_CNT_BLK, PM1_CNT_LEN),
            pm_timer,
            century: u8_at(b, CENTURY),
            iapc_boot_arch: u16_at(b, IAPC_BOOT_ARCH)
                .filter(|_| t.header.revision >= 3)
                .map(IapcBootArch),
            flags,
            reset,
        })
    }

    /// `HW_REDUCED_ACPI` (flags bit 20): no fixed-hardware ACPI (ACPI 6.5 §4.1).
    pub fn hw_reduced(&self) -> bool {
        self.flags.is_some_and(|f| f & FLAG_HW_REDUCED_ACPI != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::testutil::{Rng, fix_checksum, table};
    use alloc::vec;
    use alloc::vec::Vec;

    /// A body (after the header) of `len - 36` bytes with the 32-bit fields filled as QEMU's
    /// SeaBIOS does (q35).
    fn qemu_body(len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len - 36];
        let mut put = |off: usize, v: &[u8]| b[off - 36..off - 36 + v.len()].copy_from_slice(v);
        put(FIRMWARE_CTRL, &0x7fe_0000u32.to_le_bytes());
        put(DSDT, &0x7fe_0040u32.to_le_bytes());
        put(SCI_INT, &9u16.to_le_bytes());
        put(SMI_CMD, &0xb2u32.to_le_bytes());
        put(ACPI_ENABLE, &[0xf1, 0xf0]);
        put(PM1A_EVT_BLK, &0x600u32.to_le_bytes());
        put(PM1A_CNT_BLK, &0x604u32.to_le_bytes());
        put(PM_TMR_BLK, &0x608u32.to_le_bytes());
        put(PM1_EVT_LEN, &[4, 2]);
        put(PM_TMR_LEN, &[4]);
        put(CENTURY, &[0x32]);
        put(IAPC_BOOT_ARCH, &3u16.to_le_bytes());
        put(
            FLAGS,
            &(FLAG_TMR_VAL_EXT | FLAG_RESET_REG_SUP | 0xa5).to_le_bytes(),
        );
        b
    }

    #[test]
    fn the_116_byte_seabios_fadt_has_no_x_fields() {
        let t = table(b"FACP", 1, &qemu_body(116));
        let f = Fadt::parse(&t).expect("parses");
        assert!(f.checksum_ok);
        assert_eq!(f.dsdt, Some(0x7fe_0040));
        assert_eq!(f.facs, Some(0x7fe_0000));
        assert_eq!(f.sci_int, Some(9));
        assert_eq!(f.smi_cmd, Some(0xb2));
        assert_eq!((f.acpi_enable, f.acpi_disable), (Some(0xf1), Some(0xf0)));
        assert_eq!(f.pm1a_evt, Some(GenericAddress::io(0x600, 4)));
        assert_eq!(f.pm1a_cnt, Some(GenericAddress::io(0x604, 2)));
        assert_eq!(f.pm1b_evt, None);
        let timer = f.pm_timer.expect("timer");
        assert_eq!(timer.block.address, 0x608);
        assert_eq!(timer.block.bit_width, 32);
        assert!(timer.extended_32bit);
        // Revision 1: IAPC_BOOT_ARCH is reserved.
        assert_eq!(f.iapc_boot_arch, None);
        // The reset register lies beyond 116 bytes even though the flag says supported.
        assert_eq!(f.reset, None);
        assert_eq!(f.minor_version, None);
        assert!(!f.hw_reduced());
    }

    #[test]
    fn x_fields_are_preferred_when_inside_and_nonzero() {
        let mut body = qemu_body(276);
        let mut put = |off: usize, v: &[u8]| {
            body[off - 36..off - 36 + v.len()].copy_from_slice(v);
        };
        put(X_DSDT, &0x1_0000_0000u64.to_le_bytes());
        // X_FIRMWARE_CTRL zero: FIRMWARE_CTRL is used.
        // X_PM_TMR_BLK: a GAS in memory space.
        put(X_PM_TMR_BLK, &[0, 32, 0, 3]);
        put(X_PM_TMR_BLK + 4, &0xfed0_0000u64.to_le_bytes());
        put(RESET_REG, &[1, 8, 0, 1]);
        put(RESET_REG + 4, &0xcf9u64.to_le_bytes());
        put(RESET_VALUE, &[6]);
        let f = Fadt::parse(&table(b"FACP", 6, &body)).expect("parses");
        assert_eq!(f.dsdt, Some(0x1_0000_0000));
        assert_eq!(f.facs, Some(0x7fe_0000));
        let timer = f.pm_timer.expect("timer");
        assert_eq!(timer.block.space_id, space::SYSTEM_MEMORY);
        assert_eq!(timer.block.address, 0xfed0_0000);
        let reset = f.reset.expect("reset");
        assert_eq!(reset.register.address, 0xcf9);
        assert_eq!(reset.value, 6);
        let arch = f.iapc_boot_arch.expect("rev 6 has it");
        assert!(arch.legacy_devices() && arch.i8042() && !arch.vga_not_present());
        assert_eq!(f.minor_version, Some(0));
    }

    #[test]
    fn x_dsdt_straddling_the_end_is_not_read() {
        // Length ends in the middle of X_DSDT: the 32-bit DSDT must be used.
        let mut body = qemu_body(144);
        body[X_DSDT - 36..].copy_from_slice(&[0xff; 4]);
        let f = Fadt::parse(&table(b"FACP", 3, &body)).expect("parses");
        assert_eq!(f.dsdt, Some(0x7fe_0040));
    }

    #[test]
    fn hw_reduced_flag() {
        let mut body = qemu_body(276);
        body[FLAGS - 36..FLAGS - 32].copy_from_slice(&FLAG_HW_REDUCED_ACPI.to_le_bytes());
        let f = Fadt::parse(&table(b"FACP", 6, &body)).expect("parses");
        assert!(f.hw_reduced());
        assert_eq!(f.reset, None);
        assert!(!f.pm_timer.expect("timer").extended_32bit);
    }

    #[test]
    fn short_and_lying_tables_are_refused() {
        let t = table(b"FACP", 1, &qemu_body(116));
        assert!(matches!(
            Fadt::parse(&t[..100]),
            Err(TableError::Truncated {
                need: 116,
                have: 100
            })
        ));
        assert!(matches!(
            Fadt::parse(&t[..20]),
            Err(TableError::Truncated { .. })
        ));
        let mut short = table(b"FACP", 1, &[0; 4]);
        fix_checksum(&mut short, 9);
        assert!(matches!(
            Fadt::parse(&short),
            Err(TableError::BadLength { length: 40 })
        ));
        assert!(matches!(
            Fadt::parse(&table(b"APIC", 1, &qemu_body(116))),
            Err(TableError::BadSignature { .. })
        ));
        let mut bad_sum = t.clone();
        bad_sum[9] ^= 1;
        assert!(!Fadt::parse(&bad_sum).expect("kept").checksum_ok);
    }

    #[test]
    fn never_panics_on_mutations() {
        let seeds = [
            table(b"FACP", 1, &qemu_body(116)),
            table(b"FACP", 6, &qemu_body(276)),
        ];
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for i in 0..20_000 {
            let input = if i % 4 == 0 {
                rng.noise(b"FACP")
            } else {
                rng.mutate(&seeds[i % 2])
            };
            let _ = Fadt::parse(&input);
        }
    }
}
