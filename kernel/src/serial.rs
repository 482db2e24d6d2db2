//! COM1 (I/O port 0x3F8), 115200 baud 8-N-1: the console and the log's destination.
//!
//! The UART itself is driven by `uart_16550`; this module owns the single instance behind a
//! spin lock and offers `print!`-style macros. On a board without COM1 the port reads back as
//! absent and every write is dropped (the kernel still runs).

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
        *CONSOLE.lock() = Some(uart);
    }
    present
}

struct Writer<'a>(&'a mut Uart16550<PioBackend>);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.split_inclusive('\n') {
            match chunk.strip_suffix('\n') {
                Some(line) => {
                    self.0.send_bytes_exact(line.as_bytes());
                    self.0.send_bytes_exact(b"\r\n");
                }
                None => self.0.send_bytes_exact(chunk.as_bytes()),
            }
        }
        Ok(())
    }
}

/// Writes formatted text to COM1 (dropped when there is no UART).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(uart) = CONSOLE.lock().as_mut() {
            let _ = Writer(uart).write_fmt(args);
        }
    });
}

/// Writes to COM1 even if the lock is held (for panics and fatal exceptions, which may have
/// interrupted a holder of the lock on this CPU).
pub fn write_fmt_emergency(args: fmt::Arguments<'_>) {
    // SAFETY: used only on the way to stopping the machine: the interrupted holder will
    // never run again, so taking over the UART cannot interleave with a live user.
    unsafe { CONSOLE.force_unlock() };
    write_fmt(args);
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
