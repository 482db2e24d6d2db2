//! The remapping unit's registers (Intel VT-d Architecture Specification rev. 4.1, §11.4),
//! as offsets into the unit's register page and the bits this crate uses.

/// Version (§11.4.1), 32 bits.
pub const VER: u64 = 0x00;
/// Capability (§11.4.2), 64 bits.
pub const CAP: u64 = 0x08;
/// Extended Capability (§11.4.3), 64 bits.
pub const ECAP: u64 = 0x10;
/// Global Command (§11.4.4.1), 32 bits, write-only in effect (reads as 0).
pub const GCMD: u64 = 0x18;
/// Global Status (§11.4.4.2), 32 bits.
pub const GSTS: u64 = 0x1c;
/// Root Table Address (§11.4.5), 64 bits.
pub const RTADDR: u64 = 0x20;
/// Context Command (§11.4.6.1), 64 bits.
pub const CCMD: u64 = 0x28;
/// Fault Status (§11.4.7.1), 32 bits.
pub const FSTS: u64 = 0x34;
/// Fault Event Control (§11.4.7.2), 32 bits.
pub const FECTL: u64 = 0x38;
/// Fault Event Data, Address and Upper Address (§11.4.7.3-5), 32 bits each: the message the
/// unit sends when a fault is recorded and FECTL.IM is clear. It is never remapped (§5.1.6).
pub const FEDATA: u64 = 0x3c;
pub const FEADDR: u64 = 0x40;
pub const FEUADDR: u64 = 0x44;
/// Invalidation Queue Head and Tail (§11.4.8.1, §11.4.8.2), 64 bits: equal once the unit has
/// fetched every descriptor queued.
pub const IQH: u64 = 0x80;
pub const IQT: u64 = 0x88;
/// Invalidation Queue Address (§11.4.8.3), 64 bits: the queue's base (63:12), descriptor
/// width (DW, 11: 0 = 128-bit descriptors) and size (QS, 2:0: 2^QS 4 KiB pages).
pub const IQA: u64 = 0x90;
/// Invalidation Completion Status (§11.4.8.4), 32 bits: IWC (0), set by a wait descriptor
/// with IF; this crate waits on a status write instead.
pub const ICS: u64 = 0x9c;
/// Interrupt Remapping Table Address (§11.4.9.1), 64 bits: the table's base (63:12),
/// extended interrupt mode (EIME, 11: 32-bit x2APIC destinations) and size (S, 3:0:
/// 2^(S + 1) entries).
pub const IRTA: u64 = 0xb8;
/// IRTA.EIME.
pub const IRTA_EIME: u64 = 1 << 11;

/// CAP.ND (2:0): domain IDs supported, 2^(4 + 2·ND).
pub const CAP_ND_MASK: u64 = 0x7;
/// CAP.RWBF (4): the unit needs a write-buffer flush after its tables change.
pub const CAP_RWBF: u64 = 1 << 4;
/// CAP.CM (7): caching mode: the unit may cache not-present entries, so making an entry
/// present needs an invalidation too (virtual units such as QEMU's with `caching-mode=on`).
pub const CAP_CM: u64 = 1 << 7;
/// CAP.SAGAW (12:8): second-level address widths supported; bit 1 = 39 bits (3 levels),
/// bit 2 = 48 bits (4 levels), bit 3 = 57 bits (5 levels).
pub const CAP_SAGAW_SHIFT: u64 = 8;
/// CAP.MGAW (21:16): maximum guest address width - 1.
pub const CAP_MGAW_SHIFT: u64 = 16;
/// CAP.FRO (33:24): offset of the first fault recording register, in 16-byte units.
pub const CAP_FRO_SHIFT: u64 = 24;
/// CAP.NFR (47:40): number of fault recording registers - 1.
pub const CAP_NFR_SHIFT: u64 = 40;
/// CAP.DWD (54) and CAP.DRD (55): the unit can drain writes and reads on an IOTLB
/// invalidation.
pub const CAP_DWD: u64 = 1 << 54;
pub const CAP_DRD: u64 = 1 << 55;

/// ECAP.C (0): page-walk coherency: the unit snoops the processor's caches when it reads
/// the tables. Without it every table write is flushed from the cache (`clflush`).
pub const ECAP_C: u64 = 1 << 0;
/// ECAP.QI (1): queued invalidation, which interrupt remapping needs (the interrupt entry
/// cache is invalidated only through the queue, §6.5.2.7).
pub const ECAP_QI: u64 = 1 << 1;
/// ECAP.IR (3): interrupt remapping.
pub const ECAP_IR: u64 = 1 << 3;
/// ECAP.EIM (4): extended interrupt mode (x2APIC destinations).
pub const ECAP_EIM: u64 = 1 << 4;
/// ECAP.PT (6): pass-through context entries (translation type 10b).
pub const ECAP_PT: u64 = 1 << 6;
/// ECAP.IRO (17:8): offset of the IOTLB registers, in 16-byte units.
pub const ECAP_IRO_SHIFT: u64 = 8;
/// ECAP.SMTS (43): scalable mode; this crate uses legacy mode only, which every unit has.
pub const ECAP_SMTS: u64 = 1 << 43;

/// GCMD/GSTS.TE / TES (31): translation enable / status.
pub const GCMD_TE: u32 = 1 << 31;
/// GCMD/GSTS.SRTP / RTPS (30): set root table pointer / status.
pub const GCMD_SRTP: u32 = 1 << 30;
/// GCMD/GSTS.WBF / WBFS (27): write buffer flush / status (1 while flushing).
pub const GCMD_WBF: u32 = 1 << 27;
/// GCMD/GSTS.QIE (26) and IRE (25): queued invalidation and interrupt remapping enable /
/// status.
pub const GCMD_QIE: u32 = 1 << 26;
pub const GCMD_IRE: u32 = 1 << 25;
/// GCMD/GSTS.SIRTP / IRTPS (24): set interrupt remapping table pointer (one-shot) / status.
pub const GCMD_SIRTP: u32 = 1 << 24;
/// GCMD/GSTS.CFI / CFIS (23): compatibility-format interrupts pass through while interrupt
/// remapping is on. This crate keeps it clear: such interrupts are then blocked (§5.1.4).
pub const GCMD_CFI: u32 = 1 << 23;
/// GSTS bits that are persistent state rather than one-shot commands: a GCMD write starts
/// from `GSTS & GSTS_PERSISTENT` and changes one bit (§11.4.4.1).
pub const GSTS_PERSISTENT: u32 = 0x96ff_ffff;

/// CCMD.ICC (63): invalidate context cache; hardware clears it when done.
pub const CCMD_ICC: u64 = 1 << 63;
/// CCMD.CIRG (62:61) = 01b: global invalidation.
pub const CCMD_GLOBAL: u64 = 1 << 61;

/// IOTLB register (at ECAP.IRO·16 + 8): IVT (63), set to invalidate, cleared when done.
pub const IOTLB_IVT: u64 = 1 << 63;
/// IIRG (61:60) = 01b global, 10b domain-selective (DID in 47:32).
pub const IOTLB_GLOBAL: u64 = 1 << 60;
pub const IOTLB_DOMAIN: u64 = 2 << 60;
/// DR (49), DW (48): drain reads and writes before the invalidation completes.
pub const IOTLB_DR: u64 = 1 << 49;
pub const IOTLB_DW: u64 = 1 << 48;
/// DID in the IOTLB register.
pub const IOTLB_DID_SHIFT: u64 = 32;

/// FSTS.PPF (1): a fault is recorded in a fault recording register; PFO (0): overflow.
pub const FSTS_PFO: u32 = 1 << 0;
pub const FSTS_PPF: u32 = 1 << 1;
/// FSTS.IQE (4): invalidation queue error (a descriptor the unit could not process; IQH
/// points at it). Write 1 to clear.
pub const FSTS_IQE: u32 = 1 << 4;
/// FECTL.IM (31): fault event interrupt masked.
pub const FECTL_IM: u32 = 1 << 31;

/// Fault recording register, high qword (§11.4.7.3): F (63 of the high qword) fault,
/// T (62) type: 1 = read request, 0 = write request; FR (39:32) reason; SID (15:0).
pub const FRCD_F: u64 = 1 << 63;
pub const FRCD_T: u64 = 1 << 62;
