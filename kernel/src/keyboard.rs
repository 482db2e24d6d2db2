//! The PS/2 keyboard through the i8042 controller, feeding the console's input path.
//!
//! Boards: a PS/2 keyboard on a board with an i8042, and USB keyboards on boards whose
//! firmware emulates the i8042 for them (BIOS "USB legacy support", and most UEFI firmware's
//! CSM or its own legacy emulation) arrive here. A USB keyboard on a board without that
//! emulation needs an xHCI driver, which the kernel does not have.
//!
//! Bring-up ([`init`]) trusts nothing: every wait for the controller has a deadline (an
//! absent controller reads 0xFF and never becomes ready: that is reported, not waited on):
//!
//! 1. disable both ports (0xAD, 0xA7) so nothing arrives meanwhile, flush the output buffer;
//! 2. read the configuration byte (0x20), turn both ports' interrupts off, turn scancode
//!    translation on (the keyboard's set 2 reaches us as set 1), write it back (0x60);
//! 3. controller self test (0xAA must answer 0x55), which may reset the configuration, so it
//!    is written again; first-port interface test (0xAB must answer 0x00);
//! 4. enable the first port (0xAE), ask the keyboard to scan (0xF4, acknowledged with 0xFA;
//!    USB emulations do not always answer: that is logged, not fatal), then enable the
//!    first port's interrupt in the configuration byte.
//!
//! Interrupts ([`enable_interrupt`]): ISA IRQ 1, routed through the MADT's ISA overrides to
//! an IOAPIC input and an allocated vector. The handler reads every byte the controller
//! holds (skipping the second port's, bit 5 of the status), decodes it with the
//! `pc-keyboard` crate (scancode set 1, US layout, Ctrl-letter as control characters) and
//! pushes the characters to `input`. Keys without a character (arrows, F-keys) and Esc are
//! dropped.
//!
//! Port numbers and bits: IBM PC/AT Technical Reference, 8042 keyboard controller; commands
//! as documented for compatible controllers (OSDev "8042 PS/2 Controller").

use alloc::string::String;

use pc_keyboard::{PS2Keyboard, ScancodeSet1, layouts::Us104Key};
use spin::Mutex;
use x86_64::instructions::port::Port;

/// Data port: bytes from the keyboard and controller replies; bytes to the keyboard.
const DATA: u16 = 0x60;
/// Status (read) and command (write) port.
const STATUS: u16 = 0x64;

/// Status: the output buffer holds a byte for us.
const OUTPUT_FULL: u8 = 1 << 0;
/// Status: the controller has not taken our last byte yet.
const INPUT_FULL: u8 = 1 << 1;
/// Status: the byte in the output buffer came from the second port.
const AUX_DATA: u8 = 1 << 5;

/// Configuration byte: first port interrupt.
const CONFIG_IRQ1: u8 = 1 << 0;
/// Configuration byte: second port interrupt.
const CONFIG_IRQ12: u8 = 1 << 1;
/// Configuration byte: first port clock disabled.
const CONFIG_CLOCK1_OFF: u8 = 1 << 4;
/// Configuration byte: translate set 2 to set 1.
const CONFIG_TRANSLATE: u8 = 1 << 6;

/// Deadline for ordinary controller handshakes.
const WAIT_US: u64 = 20_000;
/// Deadline for the self test and the keyboard's acknowledgement.
const SLOW_WAIT_US: u64 = 200_000;
/// Upper bound on polls, whatever the clock says (a port read takes about 1 us on hardware).
const MAX_POLLS: u32 = 2_000_000;

/// Why the controller was not brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The status port reads 0xFF: nothing is there.
    Absent,
    /// The controller did not take a byte in time.
    WriteTimeout(u8),
    /// The controller did not answer `command` in time.
    ReadTimeout(u8),
    /// The self test answered something other than 0x55.
    SelfTest(u8),
    /// The first port's interface test answered something other than 0x00.
    PortTest(u8),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Absent => write!(f, "no i8042 controller (status reads 0xff)"),
            Error::WriteTimeout(c) => write!(f, "i8042 did not take byte {c:#04x}"),
            Error::ReadTimeout(c) => write!(f, "i8042 did not answer command {c:#04x}"),
            Error::SelfTest(r) => write!(f, "i8042 self test answered {r:#04x}, not 0x55"),
            Error::PortTest(r) => write!(f, "i8042 port 1 test answered {r:#04x}, not 0x00"),
        }
    }
}

fn status() -> u8 {
    // SAFETY: reading the i8042 status register has no side effects; ports 0x60/0x64 are
    // used only by this module.
    unsafe { Port::<u8>::new(STATUS).read() }
}

fn read_data() -> u8 {
    // SAFETY: reading the data port takes the byte the controller holds (or a stale value);
    // only this module and its interrupt handler read it, and never at the same time (the
    // handler is installed after bring-up).
    unsafe { Port::<u8>::new(DATA).read() }
}

/// Polls until `ready(status)` or `us` microseconds (or [`MAX_POLLS`] polls) have passed.
fn wait(us: u64, ready: impl Fn(u8) -> bool) -> bool {
    let deadline = crate::time::micros_since_boot().saturating_add(us);
    for _ in 0..MAX_POLLS {
        if ready(status()) {
            return true;
        }
        if crate::time::micros_since_boot() >= deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    false
}

/// Writes `byte` to `port` once the controller can take it.
fn write(port: u16, byte: u8) -> Result<(), Error> {
    if !wait(WAIT_US, |s| s & INPUT_FULL == 0) {
        return Err(Error::WriteTimeout(byte));
    }
    // SAFETY: a command (0x64) or data (0x60) byte for the i8042, owned by this module.
    unsafe { Port::<u8>::new(port).write(byte) };
    Ok(())
}

/// Reads the next byte within `us` microseconds.
fn read(us: u64, after: u8) -> Result<u8, Error> {
    if !wait(us, |s| s & OUTPUT_FULL != 0) {
        return Err(Error::ReadTimeout(after));
    }
    Ok(read_data())
}

/// Discards whatever the controller holds (at most 64 bytes).
fn flush() {
    for _ in 0..64 {
        if status() & OUTPUT_FULL == 0 {
            return;
        }
        read_data();
    }
}

/// Brings the controller and the first port's keyboard up with interrupts still off at the
/// controller. Returns a description of what answered.
pub fn init() -> Result<String, Error> {
    if status() == 0xff {
        return Err(Error::Absent);
    }
    write(STATUS, 0xad)?;
    write(STATUS, 0xa7)?;
    flush();
    write(STATUS, 0x20)?;
    let mut config = read(WAIT_US, 0x20)?;
    config &= !(CONFIG_IRQ1 | CONFIG_IRQ12);
    config |= CONFIG_TRANSLATE;
    write(STATUS, 0x60)?;
    write(DATA, config)?;

    write(STATUS, 0xaa)?;
    let answer = read(SLOW_WAIT_US, 0xaa)?;
    if answer != 0x55 {
        return Err(Error::SelfTest(answer));
    }
    write(STATUS, 0x60)?;
    write(DATA, config)?;
    write(STATUS, 0xab)?;
    let answer = read(WAIT_US, 0xab)?;
    if answer != 0x00 {
        return Err(Error::PortTest(answer));
    }

    write(STATUS, 0xae)?;
    write(DATA, 0xf4)?;
    let ack = read(SLOW_WAIT_US, 0xf4);
    flush();
    config = (config | CONFIG_IRQ1) & !CONFIG_CLOCK1_OFF;
    write(STATUS, 0x60)?;
    write(DATA, config)?;
    Ok(match ack {
        Ok(0xfa) => String::from("keyboard acknowledged"),
        Ok(other) => alloc::format!("keyboard answered {other:#04x} to enable scanning"),
        Err(_) => String::from("no answer from a keyboard yet"),
    })
}

/// The decoder: scancode set 1 (translation is on), US layout (`shell::keys::decoder`).
static DECODER: Mutex<PS2Keyboard<Us104Key, ScancodeSet1>> = Mutex::new(shell::keys::decoder());

/// The vector block of IRQ 1 (owned by the keyboard for the kernel's life).
static VECTOR: spin::Once<pci::vectors::Block> = spin::Once::new();
/// A vector set aside by [`reserve_vector`] for [`enable_interrupt`].
static RESERVED: Mutex<Option<pci::vectors::Block>> = Mutex::new(None);

/// Sets a vector aside for the keyboard's interrupt, so that the console keeps its input even
/// if the drivers bound before [`enable_interrupt`] take every other vector.
pub fn reserve_vector() -> Result<(), String> {
    let mut reserved = RESERVED.lock();
    if reserved.is_none() && VECTOR.get().is_none() {
        let block = crate::interrupts::vectors::allocate(1).map_err(|e| alloc::format!("{e}"))?;
        *reserved = Some(block);
    }
    Ok(())
}

/// The interrupt handler: drains the controller into the input queue.
fn on_interrupt() {
    let mut decoder = DECODER.lock();
    for _ in 0..16 {
        let s = status();
        if s & OUTPUT_FULL == 0 {
            break;
        }
        let byte = read_data();
        if s & AUX_DATA != 0 {
            continue;
        }
        let Ok(Some(event)) = decoder.add_byte(byte) else {
            continue;
        };
        // What a terminal would send for the key (`shell::keys`, host-tested).
        if let Some(key) = decoder.process_keyevent(event) {
            let mut buf = [0u8; 4];
            if let Some(bytes) = shell::keys::bytes(key, &mut buf) {
                crate::input::push(bytes);
            }
        }
    }
}

/// Routes ISA IRQ 1 (through the MADT's overrides) to the reserved vector (or one allocated
/// now) on this CPU and unmasks it. Returns the vector.
pub fn enable_interrupt() -> Result<u8, String> {
    use crate::interrupts::{dispatch, ioapic, lapic, vectors};
    if let Some(block) = VECTOR.get() {
        return Ok(block.first());
    }
    let reserved = RESERVED.lock().take();
    let block = match reserved {
        Some(block) => block,
        None => vectors::allocate(1).map_err(|e| alloc::format!("{e}"))?,
    };
    let vector = block.first();
    let dest = lapic::get().map_or(0, |l| l.id());
    let (gsi, trigger) = ioapic::isa_route(1);
    // On a failure the vector goes back to the reservation (the next try uses it again).
    if let Err(e) = dispatch::install(
        vector,
        "PS/2 keyboard",
        "IOAPIC",
        alloc::boxed::Box::new(on_interrupt),
    ) {
        *RESERVED.lock() = Some(block);
        return Err(alloc::format!("{e:?}"));
    }
    if let Err(e) = ioapic::route(gsi, vector, dest, trigger) {
        dispatch::uninstall(vector);
        *RESERVED.lock() = Some(block);
        return Err(alloc::format!("{e}"));
    }
    VECTOR.call_once(|| block);
    ioapic::set_masked(gsi, false).map_err(|e| alloc::format!("{e}"))?;
    // A key pressed before the unmask left its byte waiting with the edge already gone.
    x86_64::instructions::interrupts::without_interrupts(on_interrupt);
    log::info!("keyboard: i8042 port 1 on ISA IRQ 1 -> GSI {gsi} -> vector {vector:#04x}");
    Ok(vector)
}
