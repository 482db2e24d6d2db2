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

use core::fmt::{self, Write};

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550};

/// Base I/O port of COM1 (IBM PC/AT convention).
pub const COM1: u16 = 0x3F8;

/// The console UART, or `None` before [`init`] or when no UART answers.
static CONSOLE: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Programs COM1 for 115200 baud. Returns whether a UART answered.
pub fn init() -> bool {
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

/// Sends `bytes`, moving received bytes to the input queue whenever the transmit FIFO is full
/// (see the module documentation).
fn send(uart: &mut Uart16550<PioBackend>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let sent = uart.send_bytes(bytes);
        if sent == 0 {
            receive(uart);
            core::hint::spin_loop();
        }
        bytes = &bytes[sent..];
    }
}

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.split_inclusive('\n') {
            match chunk.strip_suffix('\n') {
                Some(line) => {
                    send(self.0, line.as_bytes());
                    send(self.0, b"\r\n");
                }
                None => send(self.0, chunk.as_bytes()),
            }
        }
        receive(self.0);
        Ok(())
    }
}

/// Writes formatted text to COM1 only.
fn write_uart(args: fmt::Arguments<'_>) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(uart) = CONSOLE.lock().as_mut() {
            let _ = Writer(uart).write_fmt(args);
        }
    });
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
        uart.send_bytes_exact(bytes);
        // Wait until the transmitter is empty (LSR bit 6) so every byte looped back.
        let mut lsr = x86_64::instructions::port::Port::<u8>::new(COM1 + 5);
        // SAFETY: reading the line status register has no side effects on the data path.
        while unsafe { lsr.read() } & 0x40 == 0 {
            core::hint::spin_loop();
        }
        // SAFETY: restores the modem control register as it was.
        unsafe { port.write(old) };
    });
}
