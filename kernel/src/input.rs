//! The console's one input path: bytes from every input device, in arrival order.
//!
//! Producers are interrupt handlers: COM1's receive interrupt (`serial`) pushes the bytes the
//! UART received, the PS/2 keyboard's (`keyboard`) the characters its keys decode to (Enter
//! as LF, Backspace as BS, Ctrl-letter as the control character), and the xHCI driver's the
//! same for a USB keyboard (through `drivers::input`, whose sink is [`push`]). All are active
//! at once; the line editor in `console` reads one stream and does not know where a byte
//! came from.
//!
//! The queue is the `shell` crate's [`shell::InputQueue`] (host-tested) of 8 KiB behind a
//! spin lock, taken with interrupts off: a pasted screenful (80 × 50 characters, or a hundred
//! short commands) fits while a command prints. Nothing is lost silently: bytes that arrive
//! when it is full are dropped and counted, and so are the UART's overrun errors (a byte the
//! UART itself had no room for; `serial`). The console says so once at its next prompt
//! ([`take_unreported`]) and `mem` shows the totals ([`dropped`]).

use shell::{Dropped, InputQueue};
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

/// Bytes the queue holds.
pub const CAPACITY: usize = 8 * 1024;

static QUEUE: Mutex<InputQueue<CAPACITY>> = Mutex::new(InputQueue::new());

/// Appends `bytes` (dropping, and counting, what does not fit).
pub fn push(bytes: &[u8]) {
    without_interrupts(|| QUEUE.lock().push(bytes));
}

/// Counts a UART overrun error (input lost before it reached the queue).
pub fn overrun() {
    without_interrupts(|| QUEUE.lock().note_overrun());
}

/// The oldest waiting byte, if any.
pub fn read_byte() -> Option<u8> {
    without_interrupts(|| QUEUE.lock().pop())
}

/// Input dropped since boot.
pub fn dropped() -> Dropped {
    without_interrupts(|| QUEUE.lock().dropped())
}

/// Input dropped since the last call, if any (each loss is reported once).
pub fn take_unreported() -> Option<Dropped> {
    without_interrupts(|| QUEUE.lock().take_unreported())
}
