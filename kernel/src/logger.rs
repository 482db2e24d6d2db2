//! The `log` backend: every record goes to COM1 and the screen (through `serial::write_fmt`)
//! as `[seconds.micros] LEVEL target: message`, timestamped from boot. The level comes from
//! the `log=` command-line option.

use log::{LevelFilter, Log, Metadata, Record};

use crate::{serial, time};

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let us = time::micros_since_boot();
        serial::write_fmt(format_args!(
            "[{:5}.{:06}] {:5} {}: {}\n",
            us / 1_000_000,
            us % 1_000_000,
            record.level(),
            record.target(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`. Safe to call once; later calls only change the level.
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Parses a `log=` value: off, error, warn, info, debug, trace.
pub fn parse_level(value: &str) -> Option<LevelFilter> {
    value.parse().ok()
}
