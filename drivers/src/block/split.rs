//! Requests into device commands: a request larger than one command is split into pieces
//! in order, and [`commands_in_flight`] says how many commands keep `depth` requests in
//! flight.

use alloc::vec::Vec;

use pci::window::DmaSlice;

use super::{DmaRequest, Request};

/// One device command's share of a request: `data.len()` bytes from block `lba`.
#[derive(Debug)]
pub struct Piece<'a> {
    /// First logical block.
    pub lba: u64,
    /// The caller's bytes for it.
    pub data: &'a mut [u8],
}

/// Splits checked requests into pieces of at most `max_command` bytes (a multiple of
/// `block_size`), in order.
pub fn pieces<'a>(
    requests: &'a mut [Request<'_>],
    block_size: u32,
    max_command: u64,
) -> Vec<Piece<'a>> {
    let size = u64::from(block_size);
    let step = (max_command / size).max(1) * size;
    let mut out = Vec::new();
    for r in requests.iter_mut() {
        let mut lba = r.lba;
        for data in r.data.chunks_mut(step as usize) {
            let blocks = data.len() as u64 / size;
            out.push(Piece { lba, data });
            lba += blocks;
        }
    }
    out
}

/// Device commands to keep in flight so that `depth` requests are: `depth` times the most
/// pieces any request of `lengths` (bytes) splits into at `max_command` bytes per command
/// (see [`pieces`]), at least 1. The caller bounds it by its queue's size.
pub fn commands_in_flight(
    depth: usize,
    lengths: impl IntoIterator<Item = u64>,
    block_size: u32,
    max_command: u64,
) -> usize {
    let step = (max_command / u64::from(block_size)).max(1) * u64::from(block_size);
    let most = lengths
        .into_iter()
        .map(|bytes| bytes.div_ceil(step))
        .max()
        .unwrap_or(1)
        .max(1);
    depth
        .max(1)
        .saturating_mul(usize::try_from(most).unwrap_or(usize::MAX))
}

/// One device command's share of a [`DmaRequest`]: `data.len()` bytes from block `lba`.
#[derive(Debug)]
pub struct DmaPiece<'a> {
    /// First logical block.
    pub lba: u64,
    /// The part of the caller's DMA memory for it.
    pub data: DmaSlice<'a>,
}

/// [`pieces`] for reads into DMA memory: each checked request's slice split into parts of at
/// most `max_command` bytes (a multiple of `block_size`), in order.
pub fn dma_pieces<'a>(
    requests: &'a mut [DmaRequest<'_>],
    block_size: u32,
    max_command: u64,
) -> Vec<DmaPiece<'a>> {
    let size = u64::from(block_size);
    let step = (max_command / size).max(1) * size;
    let mut out = Vec::new();
    for r in requests.iter_mut() {
        let mut lba = r.lba;
        for data in r.data.reborrow().chunks(step) {
            let blocks = data.len() / size;
            out.push(DmaPiece { lba, data });
            lba += blocks;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn requests_split_into_commands_in_order() {
        let mut a = vec![1u8; 40960];
        let mut b = vec![2u8; 4096];
        let mut requests = [
            Request {
                lba: 10,
                data: &mut a,
            },
            Request {
                lba: 3,
                data: &mut b,
            },
        ];
        let p = pieces(&mut requests, 4096, 16384);
        let shape: Vec<(u64, usize)> = p.iter().map(|p| (p.lba, p.data.len())).collect();
        assert_eq!(
            shape,
            [(10, 16384), (14, 16384), (18, 8192), (3, 4096)],
            "10 blocks in commands of 4, then the second request"
        );
        // A limit below one block still moves a block per command.
        let p = pieces(&mut requests, 4096, 1000);
        assert_eq!(p.len(), 11);
    }

    #[test]
    fn depth_counts_requests_and_a_requests_pieces_fly_together() {
        // Depth 1, one 1 MiB request, 512 KiB commands: both pieces in flight.
        assert_eq!(commands_in_flight(1, [1 << 20], 512, 512 << 10), 2);
        // The same count as `pieces` makes, for each request shape.
        for (len, max) in [
            (40960u64, 16384u64),
            (4096, 16384),
            (40960, 1000),
            (4096, 4096),
        ] {
            let mut a = vec![0u8; len as usize];
            let mut requests = [Request {
                lba: 0,
                data: &mut a,
            }];
            let n = pieces(&mut requests, 4096, max).len();
            assert_eq!(commands_in_flight(1, [len], 4096, max), n, "{len} by {max}");
            assert_eq!(commands_in_flight(32, [len], 4096, max), 32 * n);
        }
        // The largest request sets the count; no requests or depth 0 still mean one.
        assert_eq!(commands_in_flight(3, [4096, 65536, 8192], 4096, 16384), 12);
        assert_eq!(commands_in_flight(0, [], 4096, 16384), 1);
        assert_eq!(
            commands_in_flight(usize::MAX, [1 << 20], 512, 512),
            usize::MAX
        );
    }

    #[test]
    fn pieces_write_into_the_callers_buffer() {
        let mut a = vec![0u8; 8192];
        {
            let mut requests = [Request {
                lba: 0,
                data: &mut a,
            }];
            let mut p = pieces(&mut requests, 512, 4096);
            p[1].data.fill(7);
        }
        assert!(a[..4096].iter().all(|&b| b == 0));
        assert!(a[4096..].iter().all(|&b| b == 7));
    }
}
