//! Queued invalidation when the unit does not keep up: a queue that never reports, a
//! descriptor the unit rejects, a unit that stops fetching. Every such case is an error,
//! never a hang, and leaves the unit in a state the next call can work from.

mod model;
mod support;

use iommu::{RemapError, SourceCheck, UnitError};
use model::{IrqOutcome, Memory, Model, Outcome, QueueMode, vtd};
use support::*;

#[test]
fn a_queue_that_never_reports_completion_is_an_error_not_a_hang() {
    let (mut r, unit, memory) = remapped(true, false);
    unit.state().stuck_waits = true;
    let timeout = Err(RemapError::Unit(UnitError::Timeout(
        "an invalidation through the queue",
    )));
    let target = edge(0x41, 3);
    let check = SourceCheck::Requester(NVME.id());
    assert_eq!(r.set_interrupt(0, 0x41, target, check), timeout);
    r.isolate(NVME, &[], &[]).expect_err("isolate invalidates");
    unit.state().stuck_waits = false;
    r.set_interrupt(0, 0x41, target, check).expect("set");
    assert_eq!(msi(&unit, NVME, 0x41), delivered(0x41, 3));
    clean(&unit, &memory);
}

/// The second unit's queue never reports: turning remapping on fails, and both units are left
/// as before it, with their queues off and invalidation through the registers again.
#[test]
fn turning_remapping_on_fails_cleanly_when_a_queue_never_reports() {
    let memory = Memory::new();
    let first = Model::with_interrupt_remapping(&memory, true, false);
    let second = Model::with_interrupt_remapping(&memory, true, false);
    second.state().stuck_waits = true;
    let mut r = remapper(&memory, &[&first, &second]);
    r.enable((0, 3)).expect("enable");
    let before = memory.in_use();
    let result = r.enable_interrupt_remapping(false);
    assert!(
        matches!(result, Err(RemapError::Unit(UnitError::Timeout(_)))),
        "{result:?}"
    );
    assert!(!r.remaps_interrupts());
    assert_eq!(memory.in_use(), before, "pages kept");
    for unit in [&first, &second] {
        assert_eq!(gsts(unit) & (vtd::QIE | vtd::IRE), 0, "{:#x}", gsts(unit));
        assert_eq!(
            unit.interrupt(NVME.id(), 0xfee0_3000, 0x41),
            delivered(0x41, 3)
        );
    }
    // DMA remapping goes on, through the registers.
    r.isolate(NVME, &[], &[]).expect("isolate");
    r.map(NVME, 0x40_0000, 0x1000).expect("map");
    assert_eq!(
        first.access(NVME.id(), 0x40_0000, true),
        Outcome::Reached(0x40_0000)
    );
    r.unmap(NVME, 0x40_0000, 0x1000).expect("unmap");
    assert_eq!(
        first.access(NVME.id(), 0x40_0000, true),
        Outcome::Fault(0x05)
    );
    let _ = r.take_faults();
    clean(&first, &memory);
    clean(&second, &memory);
}

#[test]
fn a_descriptor_the_unit_rejects_is_an_error_not_a_hang() {
    let (mut r, unit, _memory) = remapped(true, false);
    unit.state().rejected_type = Some(0x4);
    assert_eq!(
        r.set_interrupt(0, 0x41, edge(0x41, 3), SourceCheck::Requester(NVME.id())),
        Err(RemapError::Unit(UnitError::Timeout(
            "an invalidation (the queue reported an error)"
        )))
    );
}

/// The model itself: an unknown descriptor type stops the queue at it with FSTS.IQE, and
/// clearing IQE resumes there.
#[test]
fn the_model_stops_at_an_invalid_descriptor() {
    use iommu::Registers;
    let (_r, unit, memory) = remapped(true, false);
    unit.state().queue = QueueMode::Immediate;
    let (base, head) = {
        let s = unit.state();
        (s.iqa & !0xfff, s.iqh)
    };
    iommu::TableMemory::write(&memory, base + head, 0x3);
    iommu::TableMemory::write(&memory, base + head + 8, 0);
    unit.write64(vtd::IQT, head + 16);
    assert_ne!(unit.read32(iommu::regs::FSTS) & vtd::IQE, 0);
    assert_eq!(unit.read64(vtd::IQH), head);
    assert_eq!(
        unit.state().violations.len(),
        1,
        "{:?}",
        unit.state().violations
    );
    // Made a wait descriptor (no status write), it is processed once IQE is cleared.
    iommu::TableMemory::write(&memory, base + head, 0x5);
    unit.write32(iommu::regs::FSTS, vtd::IQE);
    assert_eq!(unit.read64(vtd::IQH), head + 16);
}

// Recovery after a failure, each a way the queue or the table could be left wrong:
// - after a rejected descriptor, IQT goes back to IQH before IQE is cleared, so the unit
//   does not fetch the bad descriptor again;
// - every submission waits for its own status value, so a wait left queued by a timed-out
//   submission cannot complete a later one early;
// - `clear_interrupt` always invalidates, also after a clear whose invalidation failed;
// - a failed `enable_interrupt_remapping` gives back a unit's pages only if its queue was
//   stopped; otherwise they are leaked, never reused.

/// After the unit rejected a descriptor, the error is cleared and the queue goes on.
#[test]
fn after_a_rejected_descriptor_the_queue_goes_on() {
    let (mut r, unit, memory) = remapped(true, false);
    unit.state().rejected_type = Some(0x4);
    let check = SourceCheck::Requester(NVME.id());
    r.set_interrupt(0, 0x41, edge(0x41, 3), check)
        .expect_err("rejected");
    assert_eq!(fsts(&unit) & vtd::IQE, 0, "the queue error is left set");
    unit.state().rejected_type = None;
    r.set_interrupt(0, 0x41, edge(0x41, 3), check)
        .expect("set after the error");
    assert_eq!(msi(&unit, NVME, 0x41), delivered(0x41, 3));
    clean(&unit, &memory);
}

/// A submission that timed out leaves its wait descriptor queued; when the unit gets to it
/// later, its status write must not pass for the next submission's.
#[test]
fn a_late_status_write_does_not_complete_a_later_invalidation() {
    let (mut r, unit, memory) = remapped(true, false);
    let check = SourceCheck::Requester(NVME.id());
    r.set_interrupt(0, 0x41, edge(0x41, 3), check).expect("set");
    assert_eq!(msi(&unit, NVME, 0x41), delivered(0x41, 3));
    unit.state().queue = QueueMode::Paused;
    r.set_interrupt(0, 0x42, edge(0x42, 3), check)
        .expect_err("the unit is not fetching");
    unit.state().queue = QueueMode::Lazy;
    r.clear_interrupt(0, 0x41).expect("clear");
    assert_eq!(
        msi(&unit, NVME, 0x41),
        IrqOutcome::Refused(0x22),
        "clear_interrupt returned before the unit invalidated the entry"
    );
    let _ = r.take_faults();
    clean(&unit, &memory);
}

/// A clear whose invalidation timed out, retried, must still make the unit forget the entry.
#[test]
fn a_retried_clear_makes_the_unit_forget_the_entry() {
    let (mut r, unit, memory) = remapped(true, false);
    r.set_interrupt(0, 0x41, edge(0x41, 3), SourceCheck::Requester(NVME.id()))
        .expect("set");
    assert_eq!(msi(&unit, NVME, 0x41), delivered(0x41, 3));
    unit.state().queue = QueueMode::Paused;
    r.clear_interrupt(0, 0x41)
        .expect_err("the unit is not fetching");
    unit.state().queue = QueueMode::Lazy;
    r.clear_interrupt(0, 0x41).expect("clear again");
    assert_eq!(msi(&unit, NVME, 0x41), IrqOutcome::Refused(0x22));
    let _ = r.take_faults();
    clean(&unit, &memory);
}

/// A unit whose queue cannot be drained keeps its queue on: its pages must not be given
/// back while it may still fetch from them.
#[test]
fn a_failed_enable_keeps_the_pages_a_unit_still_uses() {
    let (mut r, unit, memory) = setup(true, false);
    unit.state().queue = QueueMode::Paused;
    r.enable_interrupt_remapping(false)
        .expect_err("the unit is not fetching");
    let (on, iqa, irta) = {
        let s = unit.state();
        (s.gsts & (vtd::QIE | vtd::IRE), s.iqa, s.irta)
    };
    if on & vtd::QIE != 0 {
        assert!(
            memory.contains(iqa),
            "the queue page was freed with the queue on"
        );
    }
    if on & vtd::IRE != 0 {
        assert!(
            memory.contains(irta),
            "the table was freed with remapping on"
        );
    }
}
