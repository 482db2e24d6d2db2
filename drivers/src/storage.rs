//! Permission to write to storage devices.
//!
//! On a real machine the NVMe and virtio-blk drivers bind to the user's own disks, so by
//! default no driver writes to storage: self tests read only, and every write path
//! ([`crate::nvme::Nvme::write_on`], [`crate::virtio::blk::VirtioBlk::write`]) refuses with
//! [`WRITES_DISABLED`] before anything is submitted to the device.
//!
//! Writing needs an explicit choice by whoever boots the kernel: the command-line option
//! `storage=write`, which the kernel turns into one call of [`allow_writes`] at boot, before
//! any driver is bound. The switch is a process-wide atomic rather than a token passed to each
//! driver because the permission belongs to the machine's owner, not to a driver, and every
//! path that writes (self tests, test suites, a future console command) must see the same
//! answer. It only ever goes from "refused" to "allowed": nothing that runs later can quietly
//! widen or narrow what the person at the boot prompt chose, and there is no state in between
//! to reason about.
//!
//! What "write" covers: commands that change the medium (NVMe Write, virtio-blk OUT). Register
//! writes, queue set-up and the controller's shutdown notification are the driver talking to
//! its device and are not storage writes.

use core::sync::atomic::{AtomicBool, Ordering};

/// The message every refused write carries.
pub const WRITES_DISABLED: &str = "writes are disabled: boot with storage=write to allow them";

/// Whether writes to storage are allowed. Starts `false`.
static WRITES_ALLOWED: AtomicBool = AtomicBool::new(false);

/// Allows writes to storage from now on (the kernel calls this once at boot for
/// `storage=write`). There is no way back.
pub fn allow_writes() {
    WRITES_ALLOWED.store(true, Ordering::SeqCst);
}

/// Whether writes to storage are allowed.
pub fn writes_allowed() -> bool {
    WRITES_ALLOWED.load(Ordering::SeqCst)
}

/// `Ok` when writes are allowed, otherwise [`WRITES_DISABLED`]: the check at the top of every
/// write path.
pub fn check_write() -> Result<(), &'static str> {
    if writes_allowed() {
        Ok(())
    } else {
        Err(WRITES_DISABLED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test in this crate that touches the switch (tests share the process).
    #[test]
    fn refused_until_allowed_then_allowed_for_good() {
        assert!(!writes_allowed());
        assert_eq!(check_write(), Err(WRITES_DISABLED));
        assert!(WRITES_DISABLED.contains("storage=write"));
        allow_writes();
        assert!(writes_allowed());
        assert_eq!(check_write(), Ok(()));
        allow_writes();
        assert_eq!(check_write(), Ok(()));
    }
}
