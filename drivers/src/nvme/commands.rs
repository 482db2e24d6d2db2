//! NVMe commands: the submission entry (§4.2) and completion entry (§4.6) layouts, the admin
//! (§5) and NVM (§6) opcodes used, and the command builders.

use alloc::vec::Vec;

use super::PAGE;

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
/// Identify CNS 02h: the active namespace list (NSIDs above the one given).
pub(super) const CNS_ACTIVE_NAMESPACES: u32 = 0x02;
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
    /// No data, or PRPs written by the I/O path from its staging slot.
    #[default]
    None,
    /// The admin queue's one-page buffer (Identify answers).
    AdminPage,
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
    /// zero here and written from the buffer that owns the data.
    pub(super) fn dwords(&self, cid: u16) -> [u32; 16] {
        let mut d = [0u32; 16];
        d[0] = u32::from(self.opcode) | u32::from(cid) << 16; // FUSE 00b, PSDT 00b (PRPs)
        d[1] = self.nsid;
        d[10..16].copy_from_slice(&self.cdw);
        d
    }

    /// Read or Write (§6.9, §6.15) of `blocks` blocks at `lba` of namespace `nsid`.
    pub(super) fn io(opcode: u8, nsid: u32, lba: u64, blocks: u32) -> Command {
        Command {
            opcode,
            nsid,
            data: Data::None,
            cdw: [lba as u32, (lba >> 32) as u32, blocks - 1, 0, 0, 0],
        }
    }
}

/// Entries in one PRP list page (§4.3: a list fills a memory page; its last entry points to
/// the next list page when more entries follow).
const LIST_ENTRIES: u64 = PAGE / 8;

/// Where the PRPs of one transfer point, as offsets into one page-aligned staging buffer
/// whose data starts at offset 0 (§4.3, Figure "PRP List Layout").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Prps {
    /// PRP Entry 2: the second data page when the transfer has exactly two pages, the first
    /// list page when it has more, none for one page. PRP Entry 1 is offset 0.
    pub(super) second: Option<u64>,
    /// List entries to write: (offset of the entry, offset it points at).
    pub(super) list: Vec<(u64, u64)>,
}

/// What a PRP entry points at, for a transfer whose data and list are in different buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// The byte at this offset from the transfer's first byte (a page boundary of the data).
    Data(u64),
    /// This offset of the list memory (a list page).
    List(u64),
}

/// The PRPs of a transfer that starts `first` bytes into a memory page (§4.3: PRP Entry 1 may
/// have an offset, every later entry is page aligned), with its list pages in list memory
/// from offset `list_at` (page aligned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SplitPrps {
    /// PRP Entry 2 (PRP Entry 1 is the transfer's first byte).
    pub(super) second: Option<Target>,
    /// List entries to write: (offset of the entry in list memory, what it points at).
    pub(super) list: Vec<(u64, Target)>,
}

/// List pages for a transfer touching `pages` memory pages.
fn list_pages_for(pages: u64) -> u64 {
    if pages <= 2 {
        return 0;
    }
    // Each full page but the last carries LIST_ENTRIES - 1 data entries and a link.
    let entries = pages - 1;
    if entries <= LIST_ENTRIES {
        1
    } else {
        (entries - 1).div_ceil(LIST_ENTRIES - 1)
    }
}

/// List pages a transfer of `bytes` bytes from a page boundary needs.
pub(super) fn list_pages(bytes: u64) -> u64 {
    list_pages_for(bytes.div_ceil(PAGE))
}

/// List pages a transfer of at most `bytes` bytes needs from any dword in a page.
pub(super) fn list_pages_unaligned(bytes: u64) -> u64 {
    list_pages_for((PAGE - 4 + bytes).div_ceil(PAGE))
}

/// The PRPs of a transfer of `bytes` bytes (more than zero) starting `first` bytes into a
/// page (dword aligned), its list in list memory from `list_at` (see [`SplitPrps`]).
pub(super) fn split_prps(first: u64, bytes: u64, list_at: u64) -> SplitPrps {
    assert!(
        bytes > 0 && first < PAGE && first.is_multiple_of(4) && list_at.is_multiple_of(PAGE),
        "PRPs of {bytes} bytes from {first:#x} into a page, the list at {list_at:#x}"
    );
    let pages = (first + bytes).div_ceil(PAGE);
    // Page k >= 1 of the transfer begins this many bytes after its first byte.
    let data = |k: u64| Target::Data(k * PAGE - first);
    match pages {
        1 => SplitPrps {
            second: None,
            list: Vec::new(),
        },
        2 => SplitPrps {
            second: Some(data(1)),
            list: Vec::new(),
        },
        _ => {
            let mut list = Vec::with_capacity(pages as usize);
            let mut page = list_at;
            let mut next = 1;
            while next < pages {
                let left = pages - next;
                let here = if left <= LIST_ENTRIES {
                    left
                } else {
                    LIST_ENTRIES - 1
                };
                for k in 0..here {
                    list.push((page + 8 * k, data(next + k)));
                }
                next += here;
                if next < pages {
                    list.push((page + 8 * (LIST_ENTRIES - 1), Target::List(page + PAGE)));
                    page += PAGE;
                }
            }
            SplitPrps {
                second: Some(Target::List(list_at)),
                list,
            }
        }
    }
}

/// The PRPs of a transfer of `bytes` bytes (more than zero) from offset 0 of a staging
/// buffer, with its list pages from offset `list_at` (page aligned, past the data) of the same
/// buffer.
pub(super) fn prps(bytes: u64, list_at: u64) -> Prps {
    assert!(
        bytes > 0 && list_at.is_multiple_of(PAGE) && list_at >= bytes,
        "PRPs of {bytes} bytes with the list at {list_at:#x}"
    );
    let flat = |t: Target| match t {
        Target::Data(o) | Target::List(o) => o,
    };
    let split = split_prps(0, bytes, list_at);
    Prps {
        second: split.second.map(flat),
        list: split
            .list
            .into_iter()
            .map(|(at, t)| (at, flat(t)))
            .collect(),
    }
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
    fn io_command_dwords() {
        let c = Command::io(NVM_READ, 2, 0x1_0000_0002, 16);
        let d = c.dwords(0x1234);
        assert_eq!(d[0], 0x1234_0002);
        assert_eq!(d[1], 2, "namespace");
        assert_eq!(
            (d[6], d[7], d[8], d[9]),
            (0, 0, 0, 0),
            "PRPs come from the buffer"
        );
        assert_eq!((d[10], d[11], d[12]), (2, 1, 15));
    }

    #[test]
    fn one_or_two_pages_need_no_list() {
        assert_eq!(list_pages(512), 0);
        assert_eq!(
            prps(512, 4096),
            Prps {
                second: None,
                list: Vec::new()
            }
        );
        assert_eq!(prps(4096, 4096).second, None);
        assert_eq!(list_pages(8192), 0);
        assert_eq!(
            prps(8192, 8192),
            Prps {
                second: Some(4096),
                list: Vec::new()
            }
        );
    }

    #[test]
    fn a_list_names_every_page_after_the_first() {
        // 512 KiB (QEMU's MDTS): 128 pages, PRP2 = the list, 127 entries for pages 1..127.
        let bytes = 512 * 1024;
        assert_eq!(list_pages(bytes), 1);
        let p = prps(bytes, bytes);
        assert_eq!(p.second, Some(bytes));
        assert_eq!(p.list.len(), 127);
        for (k, &(at, to)) in p.list.iter().enumerate() {
            assert_eq!((at, to), (bytes + 8 * k as u64, (k as u64 + 1) * PAGE));
        }
        // Three pages, the last one partly: 2 entries.
        let p = prps(8192 + 512, 12288);
        assert_eq!(p.list, [(12288, 4096), (12296, 8192)]);
    }

    #[test]
    fn one_list_page_holds_512_entries_then_links() {
        // 513 pages: 512 entries fit one list page exactly.
        let bytes = 513 * PAGE;
        assert_eq!(list_pages(bytes), 1);
        let p = prps(bytes, bytes);
        assert_eq!(p.list.len(), 512);
        assert_eq!(p.list[511], (bytes + 8 * 511, 512 * PAGE));
        // 514 pages: 513 entries; the first list page carries 511 and a link to the second.
        let bytes = 514 * PAGE;
        assert_eq!(list_pages(bytes), 2);
        let p = prps(bytes, bytes);
        assert_eq!(p.list.len(), 514);
        assert_eq!(p.list[510], (bytes + 8 * 510, 511 * PAGE));
        assert_eq!(p.list[511], (bytes + 8 * 511, bytes + PAGE), "link");
        assert_eq!(p.list[512], (bytes + PAGE, 512 * PAGE));
        assert_eq!(p.list[513], (bytes + PAGE + 8, 513 * PAGE));
        // Every data page 1..n appears once, in order.
        let data: Vec<u64> = p
            .list
            .iter()
            .filter(|(_, to)| *to < bytes)
            .map(|(_, to)| to / PAGE)
            .collect();
        assert_eq!(data, (1..514).collect::<Vec<u64>>());
    }

    #[test]
    fn a_transfer_from_inside_a_page_names_each_page_boundary() {
        // 8 KiB from 512 bytes into a page: three pages, PRP1 at the start, then the list with
        // the boundaries 3584 and 7680 bytes in.
        let p = split_prps(512, 8192, 0);
        assert_eq!(p.second, Some(Target::List(0)));
        assert_eq!(p.list, [(0, Target::Data(3584)), (8, Target::Data(7680))]);
        // 4 KiB from 512 in: two pages, no list.
        let p = split_prps(512, 4096, 0);
        assert_eq!((p.second, p.list.len()), (Some(Target::Data(3584)), 0));
        // Ending exactly at a boundary adds no page.
        assert_eq!(split_prps(512, 3584, 0).second, None);
        // The worst case for the list fits what `list_pages_unaligned` sizes.
        for bytes in [4096, 8192, 512 * 1024, 1 << 20, 2 << 20] {
            let p = split_prps(PAGE - 4, bytes, 0);
            let pages = list_pages_unaligned(bytes);
            assert!(
                p.list.iter().all(|(at, _)| *at + 8 <= pages * PAGE),
                "{bytes}"
            );
            let data: Vec<u64> = p
                .list
                .iter()
                .filter_map(|(_, t)| match t {
                    Target::Data(d) => Some(*d),
                    Target::List(_) => None,
                })
                .chain(match p.second {
                    Some(Target::Data(d)) => Some(d),
                    _ => None,
                })
                .collect();
            // Every page boundary inside the transfer, once.
            assert_eq!(data.len() as u64, (PAGE - 4 + bytes).div_ceil(PAGE) - 1);
            assert!(
                data.iter()
                    .all(|d| (d + PAGE - 4).is_multiple_of(PAGE) && *d < bytes)
            );
        }
    }

    #[test]
    #[should_panic(expected = "PRPs of")]
    fn the_first_entry_is_dword_aligned() {
        let _ = split_prps(2, 4096, 0);
    }

    #[test]
    #[should_panic(expected = "PRPs of")]
    fn the_list_may_not_overlap_the_data() {
        let _ = prps(3 * PAGE, 2 * PAGE);
    }
}
