//! How virtio-blk requests are shaped for one device (§5.2.3, §5.2.4): the logical block
//! size, the data descriptors a request may have and their size, and the requests in flight
//! the queue's descriptors allow.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{F_BLK_SIZE, F_SEG_MAX, F_SIZE_MAX, MAX_DEPTH, SECTOR};
use crate::block;

/// How requests are shaped for one device (§5.2.3, §5.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Bytes of one data descriptor at most.
    pub segment: u64,
    /// Data descriptors of one request at most.
    pub segments: u64,
    /// Data bytes of one request at most (a whole number of blocks).
    pub request: u64,
    /// Requests in flight at most (descriptors and identifiers allowing).
    pub depth: usize,
}

impl Limits {
    /// The limits for the negotiated `features` and the configuration fields, on a queue of
    /// `queue_size` descriptors. A block size that is not a power of two from 512 bytes to
    /// 64 KiB, or limits that leave no room for one block, are device errors.
    pub fn new(
        features: u64,
        size_max: u32,
        seg_max: u32,
        blk_size: u32,
        queue_size: u16,
    ) -> Result<Limits, String> {
        let block_size = if features & F_BLK_SIZE != 0 {
            blk_size
        } else {
            SECTOR as u32
        };
        if !block_size.is_power_of_two() || !(512..=65536).contains(&block_size) {
            return Err(format!("block size {block_size} (blk_size) is not usable"));
        }
        let segment = if features & F_SIZE_MAX != 0 && size_max != 0 {
            u64::from(size_max).min(block::MAX_REQUEST_BYTES)
        } else {
            block::MAX_REQUEST_BYTES
        };
        // A request is the header, the data and the status: two descriptors besides the data.
        let room = u64::from(queue_size).saturating_sub(2);
        let segments = if features & F_SEG_MAX != 0 && seg_max != 0 {
            u64::from(seg_max).min(room)
        } else {
            room
        };
        let size = u64::from(block_size);
        let request = (segment
            .saturating_mul(segments)
            .min(block::MAX_REQUEST_BYTES)
            / size)
            * size;
        if request == 0 {
            return Err(format!(
                "size_max {size_max} and seg_max {seg_max} leave no room for one {block_size}-byte block"
            ));
        }
        let per_request = 2 + request.div_ceil(segment);
        let depth = ((u64::from(queue_size) / per_request) as usize).clamp(1, MAX_DEPTH);
        Ok(Limits {
            block_size,
            segment,
            segments,
            request,
            depth,
        })
    }

    /// Sectors (512 bytes) per block.
    pub fn sectors_per_block(&self) -> u64 {
        u64::from(self.block_size) / SECTOR as u64
    }

    /// The data descriptors of a request of `bytes` bytes from the start of its slot:
    /// (offset, length), each at most [`Limits::segment`].
    pub fn data_segments(&self, bytes: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes {
            let len = (bytes - at).min(self.segment);
            out.push((at, len as u32));
            at += len;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_negotiated_features() {
        // QEMU: SEG_MAX (queue size - 2), BLK_SIZE 512, no SIZE_MAX.
        let l = Limits::new(F_SEG_MAX | F_BLK_SIZE, 0, 254, 512, 256).unwrap();
        assert_eq!(l.block_size, 512);
        assert_eq!(l.request, block::MAX_REQUEST_BYTES);
        assert_eq!(l.data_segments(l.request), [(0, 1 << 20)]);
        assert_eq!(l.depth, MAX_DEPTH, "3 descriptors per request: 85 fit");
        // 4 KiB logical blocks.
        let l = Limits::new(F_BLK_SIZE, 0, 0, 4096, 128).unwrap();
        assert_eq!((l.block_size, l.sectors_per_block()), (4096, 8));
        // Without BLK_SIZE the field means nothing: 512.
        let l = Limits::new(0, 0, 0, 4096, 128).unwrap();
        assert_eq!(l.block_size, 512);
        // Impossible block sizes are refused.
        assert!(Limits::new(F_BLK_SIZE, 0, 0, 1000, 128).is_err());
        assert!(Limits::new(F_BLK_SIZE, 0, 0, 256, 128).is_err());
    }

    #[test]
    fn size_max_makes_a_chain_of_data_descriptors() {
        // 64 KiB per descriptor, 8 descriptors: 512 KiB per request, 10 descriptors each.
        let l = Limits::new(F_SIZE_MAX | F_SEG_MAX, 65536, 8, 0, 128).unwrap();
        assert_eq!(l.request, 512 * 1024);
        assert_eq!(l.depth, 12);
        let s = l.data_segments(200 * 1024);
        assert_eq!(
            s,
            [(0, 65536), (65536, 65536), (131072, 65536), (196608, 8192)]
        );
        // seg_max above what the queue can chain is capped by the queue.
        let l = Limits::new(F_SIZE_MAX | F_SEG_MAX, 4096, 1000, 0, 16).unwrap();
        assert_eq!((l.segments, l.request), (14, 14 * 4096));
        // A block that fits in no request.
        let e = Limits::new(F_SIZE_MAX | F_SEG_MAX | F_BLK_SIZE, 512, 1, 4096, 16).unwrap_err();
        assert!(e.contains("no room"), "{e}");
    }
}
