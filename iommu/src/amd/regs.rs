//! An AMD-Vi unit's MMIO registers (AMD I/O Virtualization Technology (IOMMU)
//! Specification, doc. 48882 rev. 3.x, §3.4), as offsets into the unit's register space
//! and the bits this crate uses.

/// Device Table Base Address (§3.4.1), 64 bits: base (51:12), Size (8:0) = table size in
/// 4 KiB units minus 1.
pub const DEV_TABLE_BASE: u64 = 0x0000;
/// Command Buffer Base Address (§3.4.2), 64 bits: base (51:12), ComLen (59:56) = log2 of
/// the number of 16-byte entries (8 at least: 256 entries, one page).
pub const CMD_BUF_BASE: u64 = 0x0008;
/// Event Log Base Address (§3.4.3), 64 bits: base (51:12), EventLen (59:56) as ComLen.
pub const EVENT_LOG_BASE: u64 = 0x0010;
/// Control (§3.4.5), 64 bits.
pub const CONTROL: u64 = 0x0018;
/// Extended Feature Register (§3.4.6), 64 bits, read-only.
pub const EFR: u64 = 0x0030;
/// Command Buffer Head and Tail (§3.4.10), 64 bits: byte offsets into the buffer
/// (bits 18:4). The unit moves the head; software moves the tail.
pub const CMD_BUF_HEAD: u64 = 0x2000;
pub const CMD_BUF_TAIL: u64 = 0x2008;
/// Event Log Head and Tail (§3.4.11), 64 bits: byte offsets (bits 18:4). The unit moves
/// the tail; software moves the head.
pub const EVENT_LOG_HEAD: u64 = 0x2010;
pub const EVENT_LOG_TAIL: u64 = 0x2018;
/// Status (§3.4.12), 64 bits.
pub const STATUS: u64 = 0x2020;

/// Base address bits of the three base registers (51:12).
pub const BASE_MASK: u64 = 0x000f_ffff_ffff_f000;
/// ComLen / EventLen (59:56).
pub const LEN_SHIFT: u64 = 56;
/// Head and tail pointer bits (18:4).
pub const POINTER_MASK: u64 = 0x7fff0;

/// Control.IommuEn (0): translation on.
pub const CONTROL_IOMMU_EN: u64 = 1 << 0;
/// Control.EventLogEn (2), EventIntEn (3), ComWaitIntEn (4).
pub const CONTROL_EVENT_LOG_EN: u64 = 1 << 2;
pub const CONTROL_EVENT_INT_EN: u64 = 1 << 3;
pub const CONTROL_COM_WAIT_INT_EN: u64 = 1 << 4;
/// Control.Coherent (10): the unit's device table reads are snooped.
pub const CONTROL_COHERENT: u64 = 1 << 10;
/// Control.CmdBufEn (12).
pub const CONTROL_CMD_BUF_EN: u64 = 1 << 12;
/// Control.PprLogEn (13), PprIntEn (14), PprEn (15), GTEn (16), GAEn (17): peripheral page
/// requests, guest translation and guest virtual APIC, which this crate does not use and
/// turns off if firmware left them on.
pub const CONTROL_UNUSED: u64 = 0x3e000;
/// Every Control bit this crate drives; the others (firmware's HyperTransport and
/// ordering settings) are kept as read.
pub const CONTROL_DRIVEN: u64 = CONTROL_IOMMU_EN
    | CONTROL_EVENT_LOG_EN
    | CONTROL_EVENT_INT_EN
    | CONTROL_COM_WAIT_INT_EN
    | CONTROL_COHERENT
    | CONTROL_CMD_BUF_EN
    | CONTROL_UNUSED;

/// EFR.IASup (6): INVALIDATE_IOMMU_ALL is supported.
pub const EFR_IA_SUP: u64 = 1 << 6;
/// EFR.HATS (11:10): host address translation size: 00b 4 levels, 01b 5, 10b 6, 11b
/// reserved.
pub const EFR_HATS_SHIFT: u64 = 10;

/// Status.EventOverflow (0, write 1 to clear), EventLogInt (1, W1C), ComWaitInt (2, W1C),
/// EventLogRun (3), CmdBufRun (4).
pub const STATUS_EVENT_OVERFLOW: u64 = 1 << 0;
pub const STATUS_EVENT_LOG_INT: u64 = 1 << 1;
pub const STATUS_COM_WAIT_INT: u64 = 1 << 2;
pub const STATUS_EVENT_LOG_RUN: u64 = 1 << 3;
pub const STATUS_CMD_BUF_RUN: u64 = 1 << 4;
