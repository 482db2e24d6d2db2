//! The console's input queue as plain data: a ring of `N` bytes that counts what it had to
//! drop, and hands each loss out once for the console to report.
//!
//! The kernel keeps one behind a lock that interrupt handlers (the UART, the keyboard) push
//! into; this type knows nothing of locks or devices. Two kinds of loss are counted apart:
//! bytes that arrived while the ring was full ([`InputQueue::push`]), and losses the device
//! reported before the byte reached the ring ([`InputQueue::note_overrun`], a 16550's overrun
//! error, each at least one byte).

/// Input lost so far, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Bytes that arrived while the queue was full.
    pub queue_full: u64,
    /// Overrun errors the device reported (each lost at least one byte).
    pub overrun: u64,
}

impl Dropped {
    /// Both counts together.
    pub fn total(&self) -> u64 {
        self.queue_full.saturating_add(self.overrun)
    }
}

impl core::fmt::Display for Dropped {
    /// `queue full`, `UART overrun`, or both with their counts.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match (self.queue_full, self.overrun) {
            (_, 0) => f.write_str("queue full"),
            (0, _) => f.write_str("UART overrun"),
            (q, o) => write!(f, "queue full: {q}, UART overrun: {o}"),
        }
    }
}

/// A ring of `N` bytes with drop accounting (see the module documentation).
#[derive(Clone, Debug)]
pub struct InputQueue<const N: usize> {
    bytes: [u8; N],
    head: usize,
    len: usize,
    counts: Dropped,
    /// What [`InputQueue::take_unreported`] last handed out.
    reported: Dropped,
}

impl<const N: usize> Default for InputQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> InputQueue<N> {
    /// An empty queue (usable in a `static`).
    pub const fn new() -> Self {
        InputQueue {
            bytes: [0; N],
            head: 0,
            len: 0,
            counts: Dropped {
                queue_full: 0,
                overrun: 0,
            },
            reported: Dropped {
                queue_full: 0,
                overrun: 0,
            },
        }
    }

    /// Appends `bytes`, dropping (and counting) what does not fit.
    pub fn push(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.len == N {
                self.counts.queue_full = self.counts.queue_full.saturating_add(1);
                continue;
            }
            self.bytes[(self.head + self.len) % N] = byte;
            self.len += 1;
        }
    }

    /// Counts an overrun the device reported.
    pub fn note_overrun(&mut self) {
        self.counts.overrun = self.counts.overrun.saturating_add(1);
    }

    /// The oldest byte, if any.
    pub fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.bytes[self.head];
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(byte)
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Everything dropped since the queue was made.
    pub fn dropped(&self) -> Dropped {
        self.counts
    }

    /// What was dropped since the last call, if anything: each loss is handed out once.
    pub fn take_unreported(&mut self) -> Option<Dropped> {
        let new = Dropped {
            queue_full: self.counts.queue_full - self.reported.queue_full,
            overrun: self.counts.overrun - self.reported.overrun,
        };
        self.reported = self.counts;
        (new.total() > 0).then_some(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_paste_that_fits_is_kept_in_order() {
        let mut q = InputQueue::<8192>::new();
        let paste: Vec<u8> = (0..100).flat_map(|_| *b"mem\r").collect();
        q.push(&paste);
        assert_eq!(q.len(), 400);
        let back: Vec<u8> = core::iter::from_fn(|| q.pop()).collect();
        assert_eq!(back, paste);
        assert_eq!(q.take_unreported(), None);
    }

    #[test]
    fn losses_are_counted_and_reported_once() {
        let mut q = InputQueue::<4>::new();
        q.push(b"abcdef");
        q.note_overrun();
        let d = q.take_unreported().unwrap();
        assert_eq!((d.queue_full, d.overrun, d.total()), (2, 1, 3));
        assert_eq!(d.to_string(), "queue full: 2, UART overrun: 1");
        assert_eq!(q.take_unreported(), None);
        assert_eq!(q.pop(), Some(b'a'));
        q.push(b"gh");
        let d = q.take_unreported().unwrap();
        assert_eq!((d.total(), d.to_string().as_str()), (1, "queue full"));
        assert_eq!(q.dropped().total(), 4);
        q.note_overrun();
        assert_eq!(q.take_unreported().unwrap().to_string(), "UART overrun");
        let rest: Vec<u8> = core::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, b"bcdg");
    }

    proptest! {
        /// Pushes and pops in any order: what comes out is what went in, in order, minus
        /// exactly the bytes counted as dropped.
        #[test]
        fn nothing_is_lost_uncounted(ops in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..20).prop_map(Ok),
                (0usize..20).prop_map(Err),
            ],
            0..100,
        )) {
            let mut q = InputQueue::<16>::new();
            let (mut pushed, mut popped, mut reported) = (0u64, 0u64, 0u64);
            let mut model = std::collections::VecDeque::new();
            for op in ops {
                match op {
                    Ok(bytes) => {
                        pushed += bytes.len() as u64;
                        for b in &bytes {
                            if model.len() < 16 {
                                model.push_back(*b);
                            }
                        }
                        q.push(&bytes);
                    }
                    Err(n) => for _ in 0..n {
                        let got = q.pop();
                        prop_assert_eq!(got, model.pop_front());
                        popped += u64::from(got.is_some());
                    },
                }
                reported += q.take_unreported().map_or(0, |d| d.total());
                prop_assert!(q.len() <= 16);
            }
            prop_assert_eq!(pushed, popped + q.len() as u64 + q.dropped().queue_full);
            prop_assert_eq!(reported, q.dropped().total());
        }
    }
}
