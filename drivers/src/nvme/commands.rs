//! NVMe commands: the submission entry (§4.2) and completion entry (§4.6) layouts, the admin
//! (§5) and NVM (§6) opcodes used, and the command builders.

#[cfg(doc)]
use super::queues::Queue;
use super::{MAX_COMMAND_BYTES, NAMESPACE, PAGE};

// Admin commands (§5).
/// Create I/O Submission Queue (§5.4).
pub(super) const ADMIN_CREATE_IO_SQ: u8 = 0x01;
/// Create I/O Completion Queue (§5.3).
pub(super) const ADMIN_CREATE_IO_CQ: u8 = 0x05;
/// Identify (§5.15).
pub(super) const ADMIN_IDENTIFY: u8 = 0x06;
/// Set Features (§5.21).
pub(super) const ADMIN_SET_FEATURES: u8 = 0x09;
/// Identify CNS 00h: the namespace named by NSID.
pub(super) const CNS_NAMESPACE: u32 = 0x00;
/// Identify CNS 01h: the controller.
pub(super) const CNS_CONTROLLER: u32 = 0x01;
/// Feature 07h: Number of Queues (§5.21.1.7).
pub(super) const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;

// NVM command set (§6).
/// Write (§6.15).
pub(super) const NVM_WRITE: u8 = 0x01;
/// Read (§6.9).
pub(super) const NVM_READ: u8 = 0x02;

/// Where a command's data is: what PRP Entry 1 and 2 (§4.3) will point at. The bus addresses
/// themselves are written when the command is pushed, from the buffer that owns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Data {
    /// No data.
    #[default]
    None,
    /// `len` bytes at `offset` of the queue's own bounce buffer (page aligned, at most
    /// `MAX_COMMAND_BYTES`).
    Bounce { offset: u64, len: u64 },
    /// The ring of a queue being created (physically contiguous), given with the command.
    Ring,
}

/// One submission entry (§4.2): the fields this driver uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Command {
    pub(super) opcode: u8,
    pub(super) nsid: u32,
    pub(super) data: Data,
    /// Command dwords 10 to 15.
    pub(super) cdw: [u32; 6],
}

impl Command {
    /// The 16 dwords, with command identifier `cid`; PRP Entry 1 and 2 (dwords 6 to 9) are
    /// zero here and written by [`Queue::push`].
    pub(super) fn dwords(&self, cid: u16) -> [u32; 16] {
        let mut d = [0u32; 16];
        d[0] = u32::from(self.opcode) | u32::from(cid) << 16; // FUSE 00b, PSDT 00b (PRPs)
        d[1] = self.nsid;
        d[10..16].copy_from_slice(&self.cdw);
        d
    }

    /// Read or Write (§6.9, §6.15) of `blocks` blocks at `lba`, data at `offset` of the
    /// queue's bounce buffer (page aligned, at most two pages long).
    pub(super) fn io(opcode: u8, lba: u64, blocks: u32, offset: u64, bytes: u64) -> Command {
        Command {
            opcode,
            nsid: NAMESPACE,
            data: Data::Bounce { offset, len: bytes },
            cdw: [lba as u32, (lba >> 32) as u32, blocks - 1, 0, 0, 0],
        }
    }
}

/// PRP Entry 1 and 2 (§4.3) for `bytes` bytes at page-aligned `offset` of a page-aligned
/// buffer, as offsets into it: the second entry is the second page, or none when one page is
/// enough. More than two pages would need a PRP list.
pub(super) fn prps(offset: u64, bytes: u64) -> (u64, Option<u64>) {
    assert!(
        offset.is_multiple_of(PAGE) && bytes > 0 && bytes <= MAX_COMMAND_BYTES,
        "PRP1+PRP2 cover two pages"
    );
    (offset, (bytes > PAGE).then_some(offset + PAGE))
}

/// One completion entry (§4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Completion {
    /// Dword 0: command specific.
    pub(super) dw0: u32,
    /// Command identifier.
    pub(super) cid: u16,
    /// The 15-bit status field (dword 3 bits 31:17).
    pub(super) status: u16,
}

impl Completion {
    pub(super) fn from_dwords(dw0: u32, dw3: u32) -> Completion {
        Completion {
            dw0,
            cid: dw3 as u16,
            status: (dw3 >> 17) as u16,
        }
    }

    /// (SCT, SC, DNR) when the command failed.
    pub(super) fn error(&self) -> Option<(u8, u8, bool)> {
        let (sc, sct) = (self.status as u8, ((self.status >> 8) & 7) as u8);
        (sc != 0 || sct != 0).then_some((sct, sc, self.status & (1 << 14) != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_prps() {
        assert_eq!(prps(0x10_0000, 512), (0x10_0000, None));
        assert_eq!(prps(0x10_0000, 4096), (0x10_0000, None));
        assert_eq!(prps(0x10_0000, 8192), (0x10_0000, Some(0x10_1000)));
        let c = Command::io(NVM_READ, 0x1_0000_0002, 16, 0x2000, 8192);
        assert_eq!(
            c.data,
            Data::Bounce {
                offset: 0x2000,
                len: 8192
            }
        );
        let d = c.dwords(0x1234);
        assert_eq!(d[0], 0x1234_0002);
        assert_eq!(d[1], 1);
        assert_eq!(
            (d[6], d[7], d[8], d[9]),
            (0, 0, 0, 0),
            "PRPs come from the buffer"
        );
        assert_eq!((d[10], d[11], d[12]), (2, 1, 15));
    }

    #[test]
    #[should_panic(expected = "PRP1+PRP2")]
    fn three_pages_need_a_prp_list() {
        let _ = prps(0x10_0000, 8192 + 512);
    }
}
