//! The screen: the console and the log drawn as text on the loader's linear framebuffer
//! (multiboot2 tag 8: GRUB's video mode on BIOS boards, the UEFI GOP on UEFI boards).
//!
//! Everything written to the serial console also comes here (`serial::write_fmt` calls
//! [`write_fmt`]), so the screen shows the same lines as COM1, with or without a UART.
//!
//! The pure parts live in the host-tested `fbcon` crate: the text grid (scrolling, control
//! characters, ANSI colours), the font, and a `Screen` that redraws only cells that changed
//! from its own record of what it drew, so the framebuffer is written and never read back.
//! This file is the hardware glue:
//!
//! - Phases: until [`init`] runs (the framebuffer is mapped through `memory::mmio`, which needs
//!   the kernel's page tables) output is kept in a 16 KiB buffer and replayed onto the screen
//!   when it comes up; without a usable framebuffer the buffer is dropped.
//! - The framebuffer tag is a claim: a missing tag, an unsupported depth, a pitch too small
//!   for the width (or larger than any screen's), a range reaching into the fixed device
//!   space (IOAPIC, HPET, local APIC) or one the MMIO mapper refuses (RAM, overflow) each
//!   give one log line and a serial-only console, never a fault.
//! - Ownership: the [`Console`] owns the `Mmio` mapping of the framebuffer for the kernel's
//!   life, behind one spin lock taken with interrupts off.
//! - Cost: the mapping is uncached, and without hardware panning a scroll is a redraw of every
//!   changed cell; so the grid scrolls a quarter of the screen at a time (jump scrolling),
//!   and the screen is redrawn once per quarter screen of log, not once per line.
//! - Panics and CPU exceptions: [`write_fmt_emergency`] takes the lock over even when the
//!   interrupted code held it (that code never runs again), forgets what was drawn (a draw
//!   may have been cut in half) and redraws. A fault inside that path does not recurse: a
//!   second emergency while one is drawing skips the screen.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use boot::BootInfo;
use fbcon::{Font, Grid, Layout, Screen};
use spin::Mutex;

use crate::memory::mmio::Mmio;

/// Output before the screen exists is kept here.
const EARLY_BYTES: usize = 16 * 1024;

/// [`PHASE`]: output goes to the early buffer.
const RECORDING: u8 = 0;
/// [`PHASE`]: output goes to the screen.
const ACTIVE: u8 = 1;
/// [`PHASE`]: there is no screen; output is dropped.
const OFF: u8 = 2;

static PHASE: AtomicU8 = AtomicU8::new(RECORDING);

/// Output written before [`init`].
struct Early {
    bytes: [u8; EARLY_BYTES],
    len: usize,
    lost: usize,
}

impl Write for Early {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = EARLY_BYTES - self.len;
        let take = s.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        self.lost += s.len() - take;
        Ok(())
    }
}

static EARLY: Mutex<Early> = Mutex::new(Early {
    bytes: [0; EARLY_BYTES],
    len: 0,
    lost: 0,
});

/// The text console on the framebuffer.
///
/// # Invariants
/// `mmio` maps at least `screen.layout().len()` bytes of the framebuffer, is owned by this
/// value alone, and nothing else in the kernel writes to that memory.
struct Console {
    mmio: Mmio,
    grid: Grid,
    screen: Screen,
}

impl Console {
    /// Draws what changed.
    fn flush(&mut self) {
        let len = (self.screen.layout().len() as u64).min(self.mmio.len()) as usize;
        // SAFETY: by the invariant the mapping covers `len` bytes from `virt()` and belongs
        // to this console; the `&mut self` borrow makes this slice the only reference to it
        // while it lives. Framebuffer memory has no side effects on access, so plain stores
        // are correct.
        let fb = unsafe { core::slice::from_raw_parts_mut(self.mmio.virt() as *mut u8, len) };
        self.screen.flush(&self.grid, fb);
    }

    /// Paints the whole framebuffer black.
    fn clear(&mut self) {
        let len = (self.screen.layout().len() as u64).min(self.mmio.len()) as usize;
        // SAFETY: as in `flush`.
        let fb = unsafe { core::slice::from_raw_parts_mut(self.mmio.virt() as *mut u8, len) };
        self.screen.clear(fb);
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.grid.write(s.as_bytes());
        Ok(())
    }
}

static CONSOLE: Mutex<Option<Console>> = Mutex::new(None);

/// Set while the emergency path draws.
static IN_EMERGENCY: AtomicBool = AtomicBool::new(false);

/// Why the framebuffer is not used.
enum Refusal {
    Layout(fbcon::LayoutError),
    Map(crate::memory::mmio::MapError),
    NullAddress,
    DeviceSpace,
    Channels([u8; 3]),
    Font,
    Grid,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Layout(e) => write!(f, "{e}"),
            Refusal::Map(e) => write!(f, "cannot map it: {e}"),
            Refusal::NullAddress => write!(f, "its address is 0"),
            Refusal::Channels([r, g, b]) => write!(
                f,
                "its colour channels are {r}, {g} and {b} bits wide (8 or more are drawn)"
            ),
            Refusal::DeviceSpace => write!(
                f,
                "it reaches into {:#x}-{:#x} (IOAPIC, HPET, local APIC, firmware)",
                boot::info::FIXED_DEVICE_SPACE.0,
                boot::info::FIXED_DEVICE_SPACE.1
            ),
            Refusal::Font => write!(f, "the built-in font did not load"),
            Refusal::Grid => write!(f, "no memory for the text grid"),
        }
    }
}

/// Brings the screen up from the loader's framebuffer tag (after `memory::init`), replays the
/// output so far onto it and logs what it did. Without a usable framebuffer the console stays
/// serial-only and the reason is logged.
pub fn init(boot: &BootInfo) {
    let Some(fb) = boot.framebuffer else {
        stop();
        log::info!("framebuffer: none from the loader; console on serial only");
        return;
    };
    let console = match open(&fb) {
        Ok(c) => c,
        Err(why) => {
            stop();
            log::warn!(
                "framebuffer: {}x{}x{} pitch {} at {:#x} not used: {why}; console on serial only",
                fb.width,
                fb.height,
                fb.bpp,
                fb.pitch,
                fb.address
            );
            return;
        }
    };
    let (cols, rows) = (console.grid.cols(), console.grid.rows());
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut early = EARLY.lock();
        let mut console = console;
        console.clear();
        if early.lost > 0 {
            let _ = writeln!(
                console,
                "({} bytes of early output did not fit; see the serial log)",
                early.lost
            );
        }
        console.grid.write(&early.bytes[..early.len]);
        console.flush();
        *CONSOLE.lock() = Some(console);
        early.len = 0;
        PHASE.store(ACTIVE, Ordering::Release);
    });
    log::info!(
        "framebuffer: console {cols}x{rows} cells (Spleen 8x16) on {}x{}x{} pitch {} at {:#x}",
        fb.width,
        fb.height,
        fb.bpp,
        fb.pitch,
        fb.address
    );
}

/// Validates and maps the framebuffer.
fn open(fb: &boot::Framebuffer) -> Result<Console, Refusal> {
    let shifts = fb.shifts().ok_or(Refusal::Channels(fb.channel_sizes))?;
    let layout =
        Layout::new(fb.width, fb.height, fb.pitch, fb.bpp, shifts).map_err(Refusal::Layout)?;
    if fb.address == 0 {
        return Err(Refusal::NullAddress);
    }
    // The MMIO mapper refuses RAM, not the interrupt controllers' registers (their
    // reservations come with the ACPI tables, after the screen).
    if fb.reaches_device_space() {
        return Err(Refusal::DeviceSpace);
    }
    let font = Font::spleen().ok_or(Refusal::Font)?;
    // Mapped first: the mapper refuses a range no framebuffer has before any memory is taken.
    let mmio = Mmio::map(fb.address, layout.len() as u64).map_err(Refusal::Map)?;
    let mut grid = Grid::new(layout.cols(), layout.rows()).ok_or(Refusal::Grid)?;
    grid.set_scroll_step(layout.rows() / 4);
    let screen = Screen::try_new(layout, font).ok_or(Refusal::Grid)?;
    // INVARIANT: the mapping covers `layout.len()` bytes and moves into the console.
    Ok(Console { mmio, grid, screen })
}

/// No screen: drop the early buffer and all later output.
fn stop() {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut early = EARLY.lock();
        early.len = 0;
        PHASE.store(OFF, Ordering::Release);
    });
}

/// Writes to the screen (or the early buffer before [`init`]).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if PHASE.load(Ordering::Acquire) == OFF {
        return;
    }
    x86_64::instructions::interrupts::without_interrupts(|| write_locked(args));
}

/// The phase's destination, locks taken normally.
fn write_locked(args: fmt::Arguments<'_>) {
    match PHASE.load(Ordering::Acquire) {
        RECORDING => {
            let mut early = EARLY.lock();
            // `init` may have switched phases while this waited for the lock.
            if PHASE.load(Ordering::Acquire) == RECORDING {
                let _ = early.write_fmt(args);
                return;
            }
        }
        ACTIVE => {}
        _ => return,
    }
    if let Some(console) = CONSOLE.lock().as_mut() {
        let _ = console.write_fmt(args);
        console.flush();
    }
}

/// Writes to the screen even if its lock is held, for panics and fatal exceptions (which may
/// have interrupted a holder of the lock on this CPU). Interrupts must be off.
pub fn write_fmt_emergency(args: fmt::Arguments<'_>) {
    if IN_EMERGENCY.swap(true, Ordering::AcqRel) {
        return;
    }
    match PHASE.load(Ordering::Acquire) {
        RECORDING => {
            // SAFETY: the emergency path runs with interrupts off on the only CPU; a holder of
            // the lock was interrupted by this fault and will not run again, so taking over
            // the buffer cannot interleave with a live user.
            unsafe { EARLY.force_unlock() };
            let _ = EARLY.lock().write_fmt(args);
        }
        ACTIVE => {
            // SAFETY: as above, for the console's lock.
            unsafe { CONSOLE.force_unlock() };
            if let Some(console) = CONSOLE.lock().as_mut() {
                // The interrupted draw may have stopped between a cell and its record.
                console.screen.invalidate();
                let _ = console.write_fmt(args);
                console.flush();
            }
        }
        _ => {}
    }
    IN_EMERGENCY.store(false, Ordering::Release);
}
