//! COM1 (I/O port 0x3F8), 115200 baud 8-N-1: the console and the log's destination.
//!
//! The UART itself is driven by `uart_16550`; this module owns the single instance behind a
//! spin lock and offers `print!`-style macros. On a board without COM1 the port reads back as
//! absent and every write is dropped (the kernel still runs).
//!
//! Everything written here is also drawn on the screen (`framebuffer`), so the macros are the
//! kernel's console output whatever is attached. Received bytes go to the console's one input
//! queue (`input`), which the PS/2 keyboard feeds too.
//!
//! Receiving loses nothing silently. The receive interrupt moves every byte the UART holds
//! (not one per interrupt). Output is written with interrupts off, so while a command prints
//! the interrupt cannot run: the transmit loop itself moves received bytes to the queue
//! whenever it waits for room in the transmit FIFO, so the 16-byte receive FIFO does not
//! overflow during a long listing. An overrun the UART reports anyway (Line Status bit 1:
//! a byte arrived with the receive FIFO full) is counted with the queue's dropped bytes.
//!
//! Sending never waits without a bound. A UART that answers but does not send (its
//! transmitter never empties: no baud clock, or a board controller's virtual UART that
//! nobody reads) is found before it is used ([`init`]), and one that stops later costs a
//! write at most [`STALL_US`] (and at least [`STALL_ROUNDS`] rounds of polling, the bound
//! while the TSC cannot tell time): the rest of that write is dropped, later writes wait only
//! [`STALLED_US`] and [`STALLED_ROUNDS`] until the UART takes a byte again, and the screen
//! says so once. The time matters under emulation: a host that is slow to read an emulated
//! UART (a loaded machine running QEMU) must not lose output, however fast the guest polls.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550};

/// Base I/O port of COM1 (IBM PC/AT convention).
pub const COM1: u16 = 0x3F8;

/// The console UART, or `None` before [`init`] or when no UART answers.
static CONSOLE: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Line status register offset and its "transmitter empty" bit (TEMT: the FIFO and the
/// shift register are empty), 16550 data sheet.
const LSR_OFFSET: u16 = 5;
const LSR_TEMT: u8 = 1 << 6;

/// Line status reads [`transmitter_drains`] waits for TEMT: at least 100 ms at a
/// microsecond or more per read on a real board, while one character at 115200 baud takes
/// 87 µs.
const DRAIN_POLLS: u32 = 100_000;

/// Programs COM1 for 115200 baud 8-N-1 by hand with its interrupts off, resets its FIFOs,
/// and waits a bounded time for the transmitter to be empty. `uart_16550`'s `init` ends
/// with the same wait, without a bound: a UART that answers but never sends would hang the
/// kernel before its first line. Without a UART the status reads 0xFF, which has TEMT set.
fn transmitter_drains() -> bool {
    fn out(offset: u16, value: u8) {
        // SAFETY: COM1's registers (see `init`), written before anything else uses them.
        unsafe { x86_64::instructions::port::Port::<u8>::new(COM1 + offset).write(value) };
    }
    out(3, 0x00); // LCR: divisor latch off, so that offset 1 is IER
    out(1, 0x00); // IER: no interrupts
    out(3, 0x80); // LCR: divisor latch on
    out(0, 0x01); // DLL: 115200 baud (115200 / 1)
    out(1, 0x00); // DLM
    out(3, 0x03); // LCR: 8 data bits, no parity, 1 stop bit, divisor latch off
    out(2, 0x07); // FCR: FIFOs on, both reset
    let mut lsr = x86_64::instructions::port::Port::<u8>::new(COM1 + LSR_OFFSET);
    for _ in 0..DRAIN_POLLS {
        // SAFETY: reading the line status register has no side effect on the data path.
        if unsafe { lsr.read() } & LSR_TEMT != 0 {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// Programs COM1 for 115200 baud. Returns whether a usable UART answered.
pub fn init() -> bool {
    if !transmitter_drains() {
        // Only the screen can say it (its early buffer keeps the line until it is up).
        crate::framebuffer::write_fmt(format_args!(
            "serial: COM1 answers but its transmitter never empties; not used\n"
        ));
        return false;
    }
    // SAFETY: 0x3F8..0x3FF are COM1's registers on every PC-compatible machine; the kernel
    // touches them only through this one instance, kept in `CONSOLE` for the kernel's life.
    let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1) }) else {
        return false;
    };
    let config = Config {
        baud_rate: BaudRate::Baud115200,
        ..Config::DEFAULT
    };
    let present = uart.init(config).is_ok();
    if present {
        // Errors latched before the kernel owned the port (firmware, the loader) are not ours.
        let _ = uart.lsr();
        *CONSOLE.lock() = Some(uart);
    }
    present
}

struct Writer<'a>(&'a mut Uart16550<PioBackend>);

/// Rounds of [`send`]'s loop (each reads the line status two or three times, a microsecond
/// or more per read on a real board) a write waits for the UART to take a byte before the
/// rest of it is dropped: seconds, a thousand times the 1.4 ms in which a 16550 sends its
/// 16-byte FIFO at 115200 baud, so a host that is slow to read an emulated UART loses
/// nothing.
const STALL_ROUNDS: u32 = 1_000_000;
/// How long a write waits for the UART to take a byte, when the TSC can tell: longer than
/// any pause a loaded host takes in reading an emulated UART, short enough that a board
/// whose UART stops loses seconds once.
const STALL_US: u64 = 3_000_000;
/// The same once the UART has stalled.
const STALLED_US: u64 = 5_000;
/// The same once the UART has stalled, until it takes a byte again: a few FIFO times, so a
/// UART that never recovers costs each later write milliseconds.
const STALLED_ROUNDS: u32 = 4_000;

/// Set when a write gave up on the UART; cleared when it takes a byte again.
static STALLED: AtomicBool = AtomicBool::new(false);

/// The UART took no byte for the whole wait; the rest of the write is dropped.
struct Stalled;

/// Sends `bytes`, moving received bytes to the input queue whenever the transmit FIFO is full
/// (see the module documentation), and gives up after [`STALL_ROUNDS`] rounds and
/// [`STALL_US`] without progress ([`STALLED_ROUNDS`] and [`STALLED_US`] while [`STALLED`]).
fn send(uart: &mut Uart16550<PioBackend>, mut bytes: &[u8]) -> Result<(), Stalled> {
    let mut idle: u32 = 0;
    let mut idle_since = 0;
    while !bytes.is_empty() {
        let sent = uart.send_bytes(bytes);
        if sent == 0 {
            let (rounds, us) = if STALLED.load(Ordering::Relaxed) {
                (STALLED_ROUNDS, STALLED_US)
            } else {
                (STALL_ROUNDS, STALL_US)
            };
            if idle == 0 {
                idle_since = crate::time::rdtsc();
            }
            idle = idle.saturating_add(1);
            // Both bounds must pass; without a usable TSC, the rounds alone.
            let waited_long_enough = crate::time::tsc_ticks_in_us(us)
                .is_none_or(|ticks| crate::time::rdtsc().wrapping_sub(idle_since) >= ticks);
            if idle >= rounds && waited_long_enough {
                STALLED.store(true, Ordering::Relaxed);
                return Err(Stalled);
            }
            receive(uart);
            core::hint::spin_loop();
        } else {
            idle = 0;
            STALLED.store(false, Ordering::Relaxed);
        }
        bytes = &bytes[sent..];
    }
    Ok(())
}

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let stalled = |_: Stalled| fmt::Error;
        for chunk in s.split_inclusive('\n') {
            match chunk.strip_suffix('\n') {
                Some(line) => {
                    send(self.0, line.as_bytes()).map_err(stalled)?;
                    send(self.0, b"\r\n").map_err(stalled)?;
                }
                None => send(self.0, chunk.as_bytes()).map_err(stalled)?,
            }
        }
        receive(self.0);
        Ok(())
    }
}

/// Writes formatted text to COM1 only. When the UART stops taking bytes during this write,
/// the screen says so (once per stall: later writes find [`STALLED`] already set).
fn write_uart(args: fmt::Arguments<'_>) {
    let was_stalled = STALLED.load(Ordering::Relaxed);
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(uart) = CONSOLE.lock().as_mut() {
            let _ = Writer(uart).write_fmt(args);
        }
    });
    if !was_stalled && STALLED.load(Ordering::Relaxed) {
        crate::framebuffer::write_fmt(format_args!(
            "serial: COM1 stopped sending; output to it is dropped until it sends again\n"
        ));
    }
}

/// Writes formatted text to COM1 (dropped when there is no UART) and to the screen.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    write_uart(args);
    crate::framebuffer::write_fmt(args);
}

/// Writes to COM1 and the screen even if their locks are held (for panics and fatal
/// exceptions, which may have interrupted a holder of a lock on this CPU).
pub fn write_fmt_emergency(args: fmt::Arguments<'_>) {
    // SAFETY: used only on the way to stopping the machine: the interrupted holder will
    // never run again, so taking over the UART cannot interleave with a live user.
    unsafe { CONSOLE.force_unlock() };
    write_uart(args);
    crate::framebuffer::write_fmt_emergency(args);
}

/// `print!` to the serial console.
#[macro_export]
macro_rules! serial_print {
    ($($arg:tt)*) => ($crate::serial::write_fmt(format_args!($($arg)*)));
}

/// `println!` to the serial console.
#[macro_export]
macro_rules! serial_println {
    () => ($crate::serial_print!("\n"));
    ($($arg:tt)*) => ($crate::serial::write_fmt(format_args!("{}\n", format_args!($($arg)*))));
}

/// A [`Write`] that goes to COM1 (for formatters such as the PCI listings).
pub struct SerialWriter;

impl Write for SerialWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_fmt(format_args!("{s}"));
        Ok(())
    }
}

/// The vector block the receive interrupt uses (owned by the console for the kernel's life).
static RX_VECTOR: spin::Once<pci::vectors::Block> = spin::Once::new();

/// Bytes [`receive`] moves at most per call: far more than the FIFO holds, and a bound for
/// a UART that always claims data (a broken or absent one).
const RECEIVE_MAX: usize = 4096;

/// Moves every byte the UART holds into the input queue and counts an overrun it reports.
fn receive(uart: &mut Uart16550<PioBackend>) {
    for _ in 0..RECEIVE_MAX {
        let Ok(byte) = uart.try_receive_byte() else {
            break;
        };
        crate::input::push(&[byte]);
    }
    // `lsr` also returns the error bits the reads above saw (reading LSR clears them).
    if uart
        .lsr()
        .contains(uart_16550::spec::registers::LSR::OVERRUN_ERROR)
    {
        crate::input::overrun();
    }
}

/// Waits until the UART has sent everything written to it (at most 20 ms), e.g. before a
/// reset.
pub fn flush() {
    use uart_16550::spec::registers::LSR;
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut console = CONSOLE.lock();
        let Some(uart) = console.as_mut() else { return };
        for _ in 0..200 {
            let lsr = uart.lsr();
            if lsr.contains(LSR::OVERRUN_ERROR) {
                crate::input::overrun();
            }
            if lsr.contains(LSR::TRANSMITTER_EMPTY) {
                return;
            }
            crate::time::busy_wait_us(100);
        }
    });
}

/// The receive interrupt's handler.
fn drain() {
    let mut console = CONSOLE.lock();
    if let Some(uart) = console.as_mut() {
        receive(uart);
    }
}

/// The next byte of console input, if any (COM1 and the keyboard share one queue).
pub fn read_byte() -> Option<u8> {
    crate::input::read_byte()
}

/// Routes COM1's receive interrupt (ISA IRQ 4, through the MADT's overrides) to an allocated
/// vector on this CPU and enables it in the UART. Returns the vector.
pub fn enable_receive_interrupt() -> Result<u8, alloc::string::String> {
    use crate::interrupts::{dispatch, ioapic, lapic, vectors};
    if let Some(block) = RX_VECTOR.get() {
        return Ok(block.first());
    }
    if CONSOLE.lock().is_none() {
        return Err("no UART at COM1".into());
    }
    let block = vectors::allocate(1).map_err(|e| alloc::format!("{e}"))?;
    let vector = block.first();
    let dest = lapic::get().map_or(0, |l| l.id());
    let (gsi, trigger) = ioapic::isa_route(4);
    // On a failure the handler and the vector are given back.
    if let Err(e) = dispatch::install(
        vector,
        "COM1 receive",
        "IOAPIC",
        alloc::boxed::Box::new(drain),
    ) {
        let _ = vectors::free(block);
        return Err(alloc::format!("{e:?}"));
    }
    if let Err(e) = ioapic::route(gsi, vector, dest, trigger) {
        dispatch::uninstall(vector);
        let _ = vectors::free(block);
        return Err(alloc::format!("{e}"));
    }
    RX_VECTOR.call_once(|| block);
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(uart) = CONSOLE.lock().as_mut() {
            uart.enable_interrupts(uart_16550::spec::registers::IER::DATA_READY);
        }
    });
    ioapic::set_masked(gsi, false).map_err(|e| alloc::format!("{e}"))?;
    log::info!("serial: COM1 receive on ISA IRQ 4 -> GSI {gsi} -> vector {vector:#04x}");
    Ok(vector)
}

/// Modem control register (16550 data sheet): bit 4 loops transmit back to receive.
const MCR: u16 = COM1 + 4;
const MCR_LOOP: u8 = 1 << 4;

/// Sends `bytes` through the UART in loopback mode: they come back as received data (and
/// through the receive interrupt), never leaving the machine. For tests.
pub fn loopback(bytes: &[u8]) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut console = CONSOLE.lock();
        let Some(uart) = console.as_mut() else { return };
        let mut port = x86_64::instructions::port::Port::<u8>::new(MCR);
        // SAFETY: COM1's modem control register, owned by this module; loopback only reroutes
        // the UART's own transmit line to its receiver.
        let old = unsafe { port.read() };
        // SAFETY: as above.
        unsafe { port.write(old | MCR_LOOP) };
        let _ = send(uart, bytes);
        // Wait until the transmitter is empty so every byte looped back (bounded: a UART
        // that stops sending must not hang the test that called this).
        let mut lsr = x86_64::instructions::port::Port::<u8>::new(COM1 + LSR_OFFSET);
        for _ in 0..DRAIN_POLLS {
            // SAFETY: reading the line status register has no side effects on the data path.
            if unsafe { lsr.read() } & LSR_TEMT != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: restores the modem control register as it was.
        unsafe { port.write(old) };
    });
}
