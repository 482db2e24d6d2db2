//! NVMe controller registers (NVM Express Base Specification 1.4, §3.1): offsets in BAR 0
//! and the bits of CAP, CC and CSTS the driver uses.

// Controller registers (§3.1).
/// Controller Capabilities (§3.1.1).
pub(super) const CAP: u64 = 0x00;
/// Version (§3.1.2).
pub(super) const VS: u64 = 0x08;
/// Interrupt Mask Set (§3.1.3): pin-based and single-MSI interrupts only.
pub(super) const INTMS: u64 = 0x0C;
/// Interrupt Mask Clear (§3.1.4).
pub(super) const INTMC: u64 = 0x10;
/// Controller Configuration (§3.1.5).
pub(super) const CC: u64 = 0x14;
/// Controller Status (§3.1.6).
pub(super) const CSTS: u64 = 0x1C;
/// Admin Queue Attributes (§3.1.8): ACQS in 27:16, ASQS in 11:0, both 0's based.
pub(super) const AQA: u64 = 0x24;
/// Admin Submission Queue Base Address (§3.1.9).
pub(super) const ASQ: u64 = 0x28;
/// Admin Completion Queue Base Address (§3.1.10).
pub(super) const ACQ: u64 = 0x30;
/// The first doorbell (§3.1, SQyTDBL / CQyHDBL): queue `y`'s submission tail at
/// `0x1000 + 2y * (4 << CAP.DSTRD)`, its completion head one stride further.
pub(super) const DOORBELLS: u64 = 0x1000;

// CAP fields (§3.1.1).
/// CAP.CSS bit 37: the NVM command set.
pub(super) const CAP_CSS_NVM: u64 = 1 << 37;

// CC fields (§3.1.5).
/// CC.EN.
pub(super) const CC_EN: u32 = 1;
/// CC.SHN (15:14) = 01b: normal shutdown notification.
pub(super) const CC_SHN_NORMAL: u32 = 1 << 14;
/// CC.IOSQES (19:16) = 6: 64-byte submission entries.
pub(super) const CC_IOSQES: u32 = 6 << 16;
/// CC.IOCQES (23:20) = 4: 16-byte completion entries.
pub(super) const CC_IOCQES: u32 = 4 << 20;
// CC.CSS (6:4) = 000b NVM, CC.MPS (10:7) = 0 (4 KiB pages), CC.AMS (13:11) = 000b round
// robin: all zero.

// CSTS fields (§3.1.6).
/// CSTS.RDY.
pub(super) const CSTS_RDY: u32 = 1;
/// CSTS.CFS: controller fatal status.
pub(super) const CSTS_CFS: u32 = 1 << 1;
/// CSTS.SHST (3:2).
pub(super) const CSTS_SHST: u32 = 3 << 2;
/// CSTS.SHST = 10b: shutdown processing complete.
pub(super) const CSTS_SHST_COMPLETE: u32 = 2 << 2;
