//! The console's one input path: bytes from every input device, in arrival order.
//!
//! Producers are interrupt handlers: COM1's receive interrupt (`serial`) pushes the bytes the
//! UART received, the PS/2 keyboard's (`keyboard`) the characters its keys decode to (Enter
//! as LF, Backspace as BS, Ctrl-letter as the control character). Both are active at once;
//! the line editor in `console` reads one stream and does not know where a byte came from.
//!
//! The queue is an 8 KiB ring behind a spin lock, taken with interrupts off: a pasted
//! screenful (80 × 50 characters, or a hundred short commands) fits while a command prints.
//! Nothing is lost silently: bytes that arrive when it is full are dropped and counted, and so
//! are the UART's overrun errors (a byte the UART itself had no room for; `serial`). The
//! console says so once at its next prompt ([`take_unreported`]) and `mem` shows the totals
//! ([`dropped`]).

use spin::Mutex;

/// Bytes the queue holds.
pub const CAPACITY: usize = 8 * 1024;

/// Received bytes waiting for a reader.
struct Queue {
    bytes: [u8; CAPACITY],
    head: usize,
    len: usize,
    counts: Dropped,
    /// What [`take_unreported`] last handed out.
    reported: Dropped,
}

/// Input lost so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Bytes that arrived while the queue was full.
    pub queue_full: u64,
    /// UART overrun errors (each lost at least one byte).
    pub overrun: u64,
}

impl Dropped {
    /// Both counts together.
    pub fn total(&self) -> u64 {
        self.queue_full + self.overrun
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

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    bytes: [0; CAPACITY],
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
});

/// Appends `bytes` (dropping, and counting, what does not fit).
pub fn push(bytes: &[u8]) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut q = QUEUE.lock();
        for &byte in bytes {
            if q.len == CAPACITY {
                q.counts.queue_full += 1;
                continue;
            }
            let at = (q.head + q.len) % CAPACITY;
            q.bytes[at] = byte;
            q.len += 1;
        }
    });
}

/// Counts a UART overrun error (input lost before it reached the queue).
pub fn overrun() {
    x86_64::instructions::interrupts::without_interrupts(|| QUEUE.lock().counts.overrun += 1);
}

/// The oldest waiting byte, if any.
pub fn read_byte() -> Option<u8> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut q = QUEUE.lock();
        if q.len == 0 {
            return None;
        }
        let byte = q.bytes[q.head];
        q.head = (q.head + 1) % CAPACITY;
        q.len -= 1;
        Some(byte)
    })
}

/// Input dropped since boot.
pub fn dropped() -> Dropped {
    x86_64::instructions::interrupts::without_interrupts(|| QUEUE.lock().counts)
}

/// Input dropped since the last call, if any (each loss is reported once).
pub fn take_unreported() -> Option<Dropped> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut q = QUEUE.lock();
        let new = Dropped {
            queue_full: q.counts.queue_full - q.reported.queue_full,
            overrun: q.counts.overrun - q.reported.overrun,
        };
        q.reported = q.counts;
        (new.total() > 0).then_some(new)
    })
}
