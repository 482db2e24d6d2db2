//! Host tests of the virtio-blk driver against a device model on the fake PCI platform
//! ([`model`]: what the model does and how it reaches the driver's registers and memory).

mod model;

use alloc::vec;

use pci::platform::Platform;

use crate::block::{BlockDevices, DmaRequest};
use model::{
    CAPACITY, DRIVER_OK, DRIVER_TIMEOUT_US, Faults, TICK_US, device, device_status, pattern, probe,
    run_for,
};

#[test]
fn the_model_binds_and_reads() {
    let (function, model, platform) = device(Faults::default());
    let mut blk = probe(function);
    assert_eq!(blk.capacity(), CAPACITY);
    assert_eq!(blk.device().features(), 1 << 32, "VERSION_1 only");
    assert_ne!(device_status(platform) & DRIVER_OK, 0);
    // Through the staging slot: two blocks from sector 6.
    let mut data = vec![0u8; 1024];
    blk.read(6, &mut data).expect("staged read");
    assert!(
        data == pattern(6, 1024),
        "staged read: not the disk's bytes"
    );
    // Straight into the caller's DMA memory: eight blocks from sector 9.
    let mut memory = BlockDevices::dma_buffer(&blk, 0, 4096).expect("DMA memory");
    {
        let mut requests = [DmaRequest {
            lba: 9,
            data: memory.slice(),
        }];
        blk.read_dma(0, &mut requests, 1).expect("DMA read");
    }
    let mut back = vec![0u8; 4096];
    memory.read_bytes(0, &mut back);
    assert!(back == pattern(9, 4096), "DMA read: not the disk's bytes");
    assert_eq!(blk.requests(), 2);
    let m = model.lock();
    assert_eq!(m.completed, 2);
    assert!(m.notifies >= 2, "{} notification(s)", m.notifies);
    assert!(m.violations.is_empty(), "{:?}", m.violations);
    drop(m);
    assert!(platform.dma_red_zones_intact());
}

/// The device writes the data and a status of 0 but says it wrote only the status byte: the
/// read failed (§2.7.8.2), and nothing of the slot reaches the caller.
#[test]
fn a_short_used_length_is_a_failed_read() {
    let (function, model, _platform) = device(Faults {
        used_len_short: true,
        ..Faults::default()
    });
    let mut blk = probe(function);
    let mut data = vec![0xeeu8; 512];
    let e = blk.read(0, &mut data).unwrap_err();
    assert!(e.contains("wrote 1 of"), "{e}");
    assert!(
        data.iter().all(|&b| b == 0xee),
        "the caller's buffer was filled by a read that failed"
    );
    assert_eq!(blk.requests(), 0);
    assert_eq!(model.lock().completed, 1, "the device did answer");
}

/// A read straight into the caller's DMA memory that times out with its request still held
/// by the device: before the error returns, the device is reset (`device_status` reads 0), so
/// the request cannot complete later into memory the caller has its hands on again.
#[test]
fn a_timed_out_read_into_the_callers_memory_resets_the_device() {
    let (function, model, platform) = device(Faults::default());
    let mut blk = probe(function);
    let resets = model.lock().resets;
    model.lock().faults.never_complete = true;
    let mut memory = BlockDevices::dma_buffer(&blk, 0, 4096).expect("DMA memory");
    let before = Platform::now_us(&platform);
    let e = {
        let mut requests = [DmaRequest {
            lba: 0,
            data: memory.slice(),
        }];
        blk.read_dma(0, &mut requests, 1).unwrap_err()
    };
    assert!(
        Platform::now_us(&platform) - before >= DRIVER_TIMEOUT_US,
        "{e}"
    );
    assert_eq!(device_status(platform), 0, "the device was not reset ({e})");
    assert_eq!(model.lock().resets, resets + 1);
    // Were the device still running, the held request would complete now.
    model.lock().faults.never_complete = false;
    run_for(platform, 10 * TICK_US);
    let mut back = vec![0u8; 4096];
    memory.read_bytes(0, &mut back);
    assert!(back.iter().all(|&b| b == 0), "written after the error");
    assert_eq!(model.lock().completed, 0);
    let again = {
        let mut requests = [DmaRequest {
            lba: 0,
            data: memory.slice(),
        }];
        blk.read_dma(0, &mut requests, 1).unwrap_err()
    };
    assert!(again.contains("the device was reset"), "{again}");
    assert!(model.lock().violations.is_empty());
}

/// The same timeout on a read through the driver's staging slot leaves the device running
/// (the slot is the driver's until unbind), refuses further requests, and the unbind resets.
#[test]
fn a_timed_out_staged_read_keeps_the_device_until_unbind() {
    let (function, model, platform) = device(Faults::default());
    let mut blk = probe(function);
    let resets = model.lock().resets;
    model.lock().faults.never_complete = true;
    let mut data = vec![0u8; 512];
    let e = blk.read(0, &mut data).unwrap_err();
    assert!(e.contains("no completion"), "{e}");
    assert_ne!(device_status(platform) & DRIVER_OK, 0, "{e}");
    assert_eq!(model.lock().resets, resets);
    let again = blk.read(0, &mut data).unwrap_err();
    assert!(again.contains("unusable until rebound"), "{again}");
    assert!(!again.contains("was reset"), "{again}");
    drop(blk);
    assert_eq!(device_status(platform), 0, "unbind did not reset");
    assert_eq!(model.lock().resets, resets + 1);
    assert!(model.lock().violations.is_empty());
}
