//! The console's one input path: bytes from every input device, in arrival order.
//!
//! Producers are interrupt handlers: COM1's receive interrupt (`serial`) pushes the bytes the
//! UART received, the PS/2 keyboard's (`keyboard`) the characters its keys decode to (Enter
//! as LF, Backspace as BS, Ctrl-letter as the control character). Both are active at once;
//! the line editor in `console` reads one stream and does not know where a byte came from.
//!
//! The queue is a 256-byte ring behind a spin lock, taken with interrupts off; when it is
//! full new bytes are dropped and counted.

use spin::Mutex;

/// Received bytes waiting for a reader.
struct Queue {
    bytes: [u8; 256],
    head: usize,
    len: usize,
    dropped: u64,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    bytes: [0; 256],
    head: 0,
    len: 0,
    dropped: 0,
});

/// Appends `bytes` (dropping, and counting, what does not fit).
pub fn push(bytes: &[u8]) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut q = QUEUE.lock();
        for &byte in bytes {
            if q.len == q.bytes.len() {
                q.dropped += 1;
                continue;
            }
            let at = (q.head + q.len) % q.bytes.len();
            q.bytes[at] = byte;
            q.len += 1;
        }
    });
}

/// The oldest waiting byte, if any.
pub fn read_byte() -> Option<u8> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut q = QUEUE.lock();
        if q.len == 0 {
            return None;
        }
        let byte = q.bytes[q.head];
        q.head = (q.head + 1) % q.bytes.len();
        q.len -= 1;
        Some(byte)
    })
}

/// Bytes dropped because the queue was full.
pub fn dropped() -> u64 {
    x86_64::instructions::interrupts::without_interrupts(|| QUEUE.lock().dropped)
}
