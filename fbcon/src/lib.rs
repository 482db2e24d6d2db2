//! The framebuffer console's pure parts, host-tested: what the kernel draws on a linear
//! framebuffer, without the hardware.
//!
//! - [`grid`]: the text model. A [`Grid`] of [`Cell`]s with a cursor, fed bytes: printable
//!   ASCII, the control characters a console needs (LF, CR, BS, TAB) and a small part of
//!   ANSI/ECMA-48 (colours, erase, cursor moves). Scrolling moves cells in memory only.
//! - [`font`]: the Spleen 8x16 bitmap font (`spleen-font`, a PSF2 file), ASCII glyphs.
//! - [`render`]: pixel formats (24 and 32 bits per pixel, any channel order, any pitch) and a
//!   [`Screen`] that draws a grid into a byte buffer. It remembers what it drew last, so it
//!   redraws only cells that changed and never reads the framebuffer back (device memory is
//!   slow to read and may not even return what was written).
//!
//! The kernel owns the mapping of the framebuffer and hands [`Screen::flush`] a `&mut [u8]`
//! over it; everything else here is ordinary memory. Nothing panics on bad input: a
//! framebuffer that does not fit is refused by [`Layout::new`], and drawing outside the
//! buffer is skipped.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod font;
pub mod grid;
pub mod render;

pub use font::Font;
pub use grid::{Cell, Grid};
pub use render::{Layout, LayoutError, PixelFormat, Screen};
