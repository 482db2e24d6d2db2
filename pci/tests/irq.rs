//! `pci::irq` against the fake platform: what allocation programs, what a handler
//! registration changes, and that dropping the vectors undoes everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use pci::fake::FakeFunction;
use pci::fake::irq::{ADDRESS, BAR0, FakePlatform, device, handle};
use pci::irq::{IrqError, IrqKind, IrqKinds};

const TABLE: u64 = BAR0 + 0x2000;
const PBA: u64 = BAR0 + 0x3000;

fn entry_masked(p: &FakePlatform, n: u64) -> bool {
    p.peek(TABLE + 16 * n + 12) & 1 == 1
}

#[test]
fn msix_is_preferred_and_entries_stay_masked_until_a_handler_listens() {
    let platform = FakePlatform::leaked(2);
    let start = platform.snapshot();
    let (function, space) = handle(device(8), platform);
    let vectors = function.alloc_irq_vectors(2, 4, IrqKinds::ALL).unwrap();
    assert_eq!(vectors.kind(), IrqKind::Msix);
    assert_eq!(vectors.len(), 4);
    // MSI-X enabled, function mask cleared, INTx disabled.
    let control = (space.lock().peek(ADDRESS, 0x60).unwrap() >> 16) as u16;
    assert_eq!(control & 0xc000, 0x8000);
    assert_ne!(space.lock().peek(ADDRESS, 0x04).unwrap() & (1 << 10), 0);
    for n in 0..8 {
        assert!(
            entry_masked(platform, n),
            "entry {n} unmasked before a handler"
        );
    }
    // Messages point at the granted vectors; single vectors spread over both CPUs.
    let v0 = vectors.vector(0).unwrap();
    let v1 = vectors.vector(1).unwrap();
    assert_ne!(v0.cpu(), v1.cpu());
    assert_eq!(platform.peek(TABLE + 8), u32::from(v0.number()));
    assert_eq!(platform.peek(TABLE), 0xFEE0_0000 | v0.cpu() << 12);

    let hits = Arc::new(AtomicU32::new(0));
    {
        let h = hits.clone();
        let registration = vectors
            .request(0, "test", move || {
                h.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        assert_eq!(registration.index(), 0);
        assert!(!entry_masked(platform, 0));
        assert!(entry_masked(platform, 1));
        assert!(platform.deliver(v0.cpu(), v0.number()));
        assert!(matches!(
            vectors.request(0, "again", || {}),
            Err(IrqError::Busy(0))
        ));
    }
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    assert!(
        entry_masked(platform, 0),
        "entry not masked after the registration dropped"
    );
    assert!(
        !platform.deliver(v0.cpu(), v0.number()),
        "handler still installed"
    );
    drop(vectors);
    assert_eq!(platform.snapshot(), start, "vectors not returned");
    assert_eq!(platform.released(), vec![ADDRESS]);
    let control = (space.lock().peek(ADDRESS, 0x60).unwrap() >> 16) as u16;
    assert_eq!(control & 0xc000, 0, "MSI-X still enabled");
    // A released function is left unable to assert INTx: it has no handler, and its line may
    // be shared with other owners.
    assert_ne!(
        space.lock().peek(ADDRESS, 0x04).unwrap() & (1 << 10),
        0,
        "INTx re-armed by the release"
    );
}

#[test]
fn msi_block_is_aligned_and_masked_per_vector() {
    let platform = FakePlatform::leaked(1);
    let start = platform.snapshot();
    let (function, space) = handle(device(8), platform);
    let vectors = function
        .alloc_irq_vectors(3, 8, IrqKinds::MSI | IrqKinds::INTX)
        .unwrap();
    assert_eq!(vectors.kind(), IrqKind::Msi);
    assert_eq!(vectors.len(), 4, "MSI capability offers 4");
    let first = vectors.vector(0).unwrap().number();
    assert_eq!(first % 4, 0, "block not aligned");
    assert_eq!(vectors.vector(3).unwrap().number(), first + 3);
    assert!(vectors.vector(4).is_none());
    let cfg = |off| space.lock().peek(ADDRESS, off).unwrap();
    let control = (cfg(0x40) >> 16) as u16;
    assert_eq!(control & 1, 1, "MSI not enabled");
    assert_eq!((control >> 4) & 7, 2, "multiple message enable != log2(4)");
    assert_eq!(cfg(0x4c) & 0xffff, u32::from(first));
    assert_eq!(cfg(0x50) & 0xf, 0xf, "vectors unmasked before handlers");
    {
        let _r = vectors.request(2, "test", || {}).unwrap();
        assert_eq!(cfg(0x50) & 0xf, 0b1011);
    }
    assert_eq!(cfg(0x50) & 0xf, 0xf);
    drop(vectors);
    assert_eq!((cfg(0x40) >> 16) & 1, 0, "MSI still enabled");
    assert_eq!(platform.snapshot(), start);
}

#[test]
fn intx_is_the_last_resort_and_enables_only_with_a_handler() {
    let platform = FakePlatform::leaked(1);
    let start = platform.snapshot();
    let plain = FakeFunction::endpoint(0x1234, 0x5678, 0x02, 0x00, 0, 0).with_interrupt(1, 10);
    let (function, space) = handle(plain, platform);
    let vectors = function.alloc_irq_vectors(1, 4, IrqKinds::ALL).unwrap();
    assert_eq!(vectors.kind(), IrqKind::Intx);
    assert_eq!(vectors.len(), 1);
    let disabled = || space.lock().peek(ADDRESS, 0x04).unwrap() & (1 << 10) != 0;
    assert!(disabled());
    let v = vectors.vector(0).unwrap();
    {
        let _r = vectors.request(0, "test", || {}).unwrap();
        assert!(!disabled());
        assert!(platform.deliver(v.cpu(), v.number()));
    }
    assert!(disabled());
    drop(vectors);
    assert_eq!(platform.snapshot(), start);
}

#[test]
fn errors_say_what_each_kind_lacked_and_hand_the_function_back() {
    let platform = FakePlatform::leaked(1);
    let plain = FakeFunction::endpoint(0x1234, 0x5678, 0x02, 0x00, 0, 0);
    let (function, _) = handle(plain, platform);
    let (function, error) = function.alloc_irq_vectors(1, 1, IrqKinds::ALL).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("MSI-X: the function has no MSI-X"), "{text}");
    assert!(text.contains("INTx: the function has no INTx"), "{text}");
    let (function, error) = function.alloc_irq_vectors(0, 1, IrqKinds::ALL).unwrap_err();
    assert_eq!(error, IrqError::BadRange { min: 0, max: 1 });
    drop(function);
    assert_eq!(platform.released(), vec![ADDRESS]);

    let (function, _) = handle(device(4), platform);
    let (_, error) = function
        .alloc_irq_vectors(8, 8, IrqKinds::MSIX)
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("MSI-X supports 4 vector(s), 8 needed"),
        "{error}"
    );
}

#[test]
fn an_msix_table_outside_its_bar_is_refused() {
    let platform = FakePlatform::leaked(1);
    let start = platform.snapshot();
    // 1024 entries * 16 bytes at 0x2000 run past the 16 KiB BAR.
    let (function, _) = handle(device(1024), platform);
    let (_, error) = function
        .alloc_irq_vectors(1, 1024, IrqKinds::MSIX)
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("outside the BAR"), "{text}");
    assert_eq!(
        platform.snapshot(),
        start,
        "vectors leaked on the error path"
    );
}

#[test]
fn exhaustion_is_reported_and_earlier_vectors_keep_working() {
    let platform = FakePlatform::leaked(1);
    let (first, _) = handle(device(4), platform);
    let first = first.alloc_irq_vectors(1, 4, IrqKinds::MSIX).unwrap();
    let mut others = Vec::new();
    loop {
        let (f, _) = handle(device(64), platform);
        match f.alloc_irq_vectors(64, 64, IrqKinds::MSIX) {
            Ok(v) => others.push(v),
            Err((_, e)) => {
                assert!(e.to_string().contains("vectors free"), "{e}");
                break;
            }
        }
    }
    let v = first.vector(0).unwrap();
    let _r = first.request(0, "still", || {}).unwrap();
    assert!(platform.deliver(v.cpu(), v.number()));
}

#[test]
fn a_leaked_registration_keeps_its_vector_out_of_the_allocator() {
    let platform = FakePlatform::leaked(1);
    let (function, _) = handle(device(2), platform);
    let vectors = function.alloc_irq_vectors(2, 2, IrqKinds::MSIX).unwrap();
    let leaked = vectors.vector(0).unwrap();
    let (cpu, number) = (leaked.cpu(), leaked.number());
    std::mem::forget(vectors.request(0, "leaked", || {}).unwrap());
    drop(vectors);
    // The handler is still installed and its vector never handed out again; the other
    // vector went back.
    assert!(platform.deliver(cpu, number));
    assert!(platform.snapshot().is_used(cpu, number));
    assert_eq!(platform.installed(), 1);
}

#[test]
fn pending_bits_are_checked_at_release() {
    let platform = FakePlatform::leaked(1);
    let (function, _) = handle(device(4), platform);
    let vectors = function.alloc_irq_vectors(4, 4, IrqKinds::MSIX).unwrap();
    let third = vectors.vector(2).unwrap().number();
    platform.poke(PBA, 1 << 2);
    drop(vectors);
    assert_eq!(platform.pending_reports(), vec![(ADDRESS, third)]);
}

#[test]
fn msi_32_bit_without_masking_enables_only_with_a_handler() {
    let platform = FakePlatform::leaked(1);
    let start = platform.snapshot();
    // 32-bit MSI, 8 vectors (log2 3), no per-vector masking: address at +4, data at +8.
    let f = FakeFunction::endpoint(0x1234, 0x11e8, 0x00, 0xff, 0, 0x10)
        .with_msi(0x40, 3, false, false)
        .with_writable(0x40, 0xffff_0000)
        .with_writable(0x44, 0xffff_fffc)
        .with_writable(0x48, 0x0000_ffff);
    let (function, space) = handle(f, platform);
    let vectors = function.alloc_irq_vectors(1, 8, IrqKinds::MSI).unwrap();
    assert_eq!((vectors.kind(), vectors.len()), (IrqKind::Msi, 8));
    let cfg = |off| space.lock().peek(ADDRESS, off).unwrap();
    let first = vectors.vector(0).unwrap().number();
    assert_eq!(first % 8, 0, "block of 8 not aligned");
    assert_eq!(cfg(0x44), 0xFEE0_0000);
    assert_eq!(cfg(0x48) & 0xffff, u32::from(first));
    let control = (cfg(0x40) >> 16) as u16;
    assert_eq!((control >> 4) & 7, 3, "multiple message enable != log2(8)");
    assert_eq!(
        control & 1,
        0,
        "enabled before any handler (no masking to hold it back)"
    );
    assert_eq!(
        cfg(0x04) & 0b100,
        0b100,
        "bus mastering off: MSI writes would be dropped"
    );
    {
        let _r = vectors.request(5, "test", || {}).unwrap();
        assert_eq!((cfg(0x40) >> 16) & 1, 1, "not enabled with a handler");
        assert!(platform.deliver(0, first + 5));
    }
    assert_eq!(
        (cfg(0x40) >> 16) & 1,
        0,
        "still enabled after the last handler left"
    );
    drop(vectors);
    assert_eq!(platform.snapshot(), start);
    // Bus mastering (needed for MSI writes) is restored to what it was: off.
    assert_eq!(cfg(0x04) & 0b100, 0);
}

#[test]
fn installed_handlers_live_as_long_as_the_vectors() {
    let platform = FakePlatform::leaked(1);
    let start = platform.snapshot();
    let (function, _) = handle(device(4), platform);
    let mut vectors = function.alloc_irq_vectors(2, 2, IrqKinds::MSIX).unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    vectors
        .install(1, "owned", move || {
            h.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    assert!(!entry_masked(platform, 1));
    let v = vectors.vector(1).unwrap();
    let (cpu, number) = (v.cpu(), v.number());
    assert!(platform.deliver(cpu, number));
    assert!(matches!(
        vectors.install(1, "twice", || {}),
        Err(IrqError::Busy(1))
    ));
    drop(vectors);
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    assert!(
        !platform.deliver(cpu, number),
        "handler outlived its vectors"
    );
    assert_eq!(platform.installed(), 0);
    assert_eq!(
        platform.snapshot(),
        start,
        "an installed handler kept its vector"
    );
}

#[test]
fn into_function_releases_like_drop_and_returns_the_handle() {
    let platform = FakePlatform::leaked(1);
    let start = platform.snapshot();
    let (function, _) = handle(device(4), platform);
    let mut vectors = function.alloc_irq_vectors(4, 4, IrqKinds::MSIX).unwrap();
    vectors.install(0, "owned", || {}).unwrap();
    let function = vectors.into_function();
    assert_eq!(platform.snapshot(), start, "vectors not released");
    assert_eq!(platform.installed(), 0, "handler not uninstalled");
    assert!(
        platform.released().is_empty(),
        "the handle was released although returned"
    );
    // The same handle can allocate again.
    let again = function.alloc_irq_vectors(1, 1, IrqKinds::MSI).unwrap();
    assert_eq!(again.kind(), IrqKind::Msi);
    drop(again);
    assert_eq!(platform.released(), vec![ADDRESS]);
}
