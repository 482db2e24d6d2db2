//! Host tests against a small NVMe controller model running on the fake PCI platform: the
//! model is an interrupt handler on a spare vector that re-arms itself every millisecond of
//! fake time (`FakePlatform::halt_when_idle` + `interrupt_at`), looks at CC and the doorbells
//! in the fake BAR, and reads/writes the driver's rings through `FakePlatform::dma_read` /
//! `dma_write`.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use pci::fake::irq::{BAR0, FakePlatform, device, handle};
use pci::irq::{IrqKind, IrqKinds};
use pci::platform::{Interrupts, Platform};
use spin::Mutex;

use super::*;

const TICK_US: u64 = 1000;

#[derive(Clone, Copy, Default)]
struct Q {
    sq: u64,
    cq: u64,
    sq_entries: u16,
    cq_entries: u16,
    head: u16,
    tail: u16,
    phase: bool,
    vector: u16,
    live: bool,
}

/// What the model misbehaves with.
#[derive(Default)]
pub(super) struct Faults {
    /// Identify Controller NN.
    pub nn: u32,
    /// NSZE of every namespace.
    pub nsze: u64,
    /// CNS 02h: always a full page of NSIDs after the one asked (up to this many pages).
    pub full_lists: u32,
    /// I/O commands are never completed; instead a completion with an unknown CID is posted
    /// on their queue every `garbage_every` ticks, `garbage_left` times.
    pub garbage_every: u64,
    pub garbage_left: u32,
}

pub(super) struct Model {
    platform: &'static FakePlatform,
    /// MSI-X table entries the function has.
    entries: u16,
    enabled: bool,
    queues: [Q; 5],
    pub faults: Faults,
    ticks: u64,
    pub list_requests: u32,
    pub identify_ns: u32,
}

impl Model {
    fn reg(&self, off: u64) -> u32 {
        self.platform.peek(BAR0 + off)
    }
    fn set(&self, off: u64, v: u32) {
        self.platform.poke(BAR0 + off, v);
    }
    fn reg64(&self, off: u64) -> u64 {
        u64::from(self.reg(off)) | u64::from(self.reg(off + 4)) << 32
    }

    fn interrupt(&self, entry: u16) {
        let at = BAR0 + 0x2000 + 16 * u64::from(entry);
        let (addr, data) = (self.platform.peek(at), self.platform.peek(at + 8));
        self.platform.deliver((addr >> 12) & 0xff, data as u8);
    }

    fn post(&mut self, qid: usize, cid: u16, status: u16, dw0: u32) {
        let q = &mut self.queues[qid];
        let mut e = [0u8; 16];
        e[0..4].copy_from_slice(&dw0.to_le_bytes());
        e[8..12].copy_from_slice(&(u32::from(q.head) | (qid as u32) << 16).to_le_bytes());
        let dw3 = u32::from(cid) | u32::from(q.phase) << 16 | u32::from(status) << 17;
        e[12..16].copy_from_slice(&dw3.to_le_bytes());
        assert!(self.platform.dma_write(q.cq + 16 * u64::from(q.tail), &e));
        q.tail += 1;
        if q.tail == q.cq_entries {
            q.tail = 0;
            q.phase = !q.phase;
        }
        let v = q.vector;
        self.interrupt(v);
    }

    fn page(&self, nsid_or_cns: (u32, u32), after: u32) -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        match nsid_or_cns {
            (_, 1) => {
                d[4..12].copy_from_slice(b"SERIAL01");
                d[24..34].copy_from_slice(b"FAKE NVMe ");
                d[77] = 5;
                d[512] = 0x66;
                d[513] = 0x44;
                d[516..520].copy_from_slice(&self.faults.nn.to_le_bytes());
            }
            (_, 0) => {
                d[0..8].copy_from_slice(&self.faults.nsze.to_le_bytes());
                d[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
            }
            (_, 2) => {
                if self.list_requests <= self.faults.full_lists {
                    for i in 0..1024u32 {
                        d[4 * i as usize..][..4].copy_from_slice(&(after + 1 + i).to_le_bytes());
                    }
                } else if after == 0 {
                    d[0..4].copy_from_slice(&1u32.to_le_bytes());
                }
            }
            _ => {}
        }
        d
    }

    fn admin(&mut self, c: &[u32; 16]) -> (u16, u32) {
        let (opcode, nsid) = (c[0] as u8, c[1]);
        let prp1 = u64::from(c[6]) | u64::from(c[7]) << 32;
        match opcode {
            0x06 => {
                let cns = c[10] & 0xff;
                if cns == 2 {
                    self.list_requests += 1;
                }
                if cns == 0 {
                    self.identify_ns += 1;
                }
                let page = self.page((nsid, cns), nsid);
                assert!(self.platform.dma_write(prp1, &page));
                (0, 0)
            }
            0x09 => (0, c[11]),
            0x05 => {
                let qid = usize::from(c[10] as u16);
                if (c[11] >> 16) as u16 >= self.entries {
                    // Invalid Interrupt Vector (§5.3, status code type 1, code 08h).
                    return (0x108, 0);
                }
                let q = &mut self.queues[qid];
                q.cq = prp1;
                q.cq_entries = (c[10] >> 16) as u16 + 1;
                q.vector = (c[11] >> 16) as u16;
                q.phase = true;
                (0, 0)
            }
            0x01 => {
                let qid = usize::from(c[10] as u16);
                let q = &mut self.queues[qid];
                q.sq = prp1;
                q.sq_entries = (c[10] >> 16) as u16 + 1;
                q.live = true;
                (0, 0)
            }
            _ => (1, 0),
        }
    }

    fn tick(&mut self) {
        self.ticks += 1;
        let cc = self.reg(0x14);
        if cc & 1 != 0 && !self.enabled {
            let aqa = self.reg(0x24);
            self.queues = [Q::default(); 5];
            self.queues[0] = Q {
                sq: self.reg64(0x28),
                cq: self.reg64(0x30),
                sq_entries: (aqa & 0xfff) as u16 + 1,
                cq_entries: ((aqa >> 16) & 0xfff) as u16 + 1,
                phase: true,
                live: true,
                ..Q::default()
            };
            self.enabled = true;
            self.set(0x1c, 1);
        } else if cc & 1 == 0 && self.enabled {
            self.enabled = false;
            self.set(0x1c, 0);
        }
        if cc & (3 << 14) != 0 {
            let csts = self.reg(0x1c);
            self.set(0x1c, csts | 2 << 2);
        }
        if !self.enabled {
            return;
        }
        for qid in 0..5 {
            if !self.queues[qid].live {
                continue;
            }
            let tail = self.reg(0x1000 + 8 * qid as u64) as u16;
            while self.queues[qid].head != tail {
                let q = self.queues[qid];
                let mut raw = [0u8; 64];
                assert!(
                    self.platform
                        .dma_read(q.sq + 64 * u64::from(q.head), &mut raw)
                );
                self.queues[qid].head = (q.head + 1) % q.sq_entries;
                let c: [u32; 16] = core::array::from_fn(|i| {
                    u32::from_le_bytes(raw[4 * i..][..4].try_into().unwrap())
                });
                let cid = (c[0] >> 16) as u16;
                if qid == 0 {
                    let (status, dw0) = self.admin(&c);
                    self.post(0, cid, status, dw0);
                } else if self.faults.garbage_every == 0 {
                    self.post(qid, cid, 0, 0);
                }
            }
            if qid == 1
                && self.faults.garbage_every != 0
                && self.faults.garbage_left > 0
                && self.ticks.is_multiple_of(self.faults.garbage_every)
            {
                self.faults.garbage_left -= 1;
                self.post(qid, 0xbeef, 0, 0);
            }
        }
    }
}

/// A fake NVMe function and its model, ticking.
pub(super) fn controller(
    faults: Faults,
) -> (PciFunction, Arc<Mutex<Model>>, &'static FakePlatform) {
    controller_with(faults, 8)
}

/// [`controller`] with an MSI-X table of `entries` entries.
pub(super) fn controller_with(
    faults: Faults,
    entries: u16,
) -> (PciFunction, Arc<Mutex<Model>>, &'static FakePlatform) {
    let platform = FakePlatform::leaked(1);
    platform.halt_when_idle();
    // CAP: MQES 63, CQR, TO 1 (500 ms), DSTRD 0, CSS NVM, MPSMIN 0.
    let cap: u64 = 63 | 1 << 16 | 1 << 24 | 1 << 37;
    platform.poke(BAR0, cap as u32);
    platform.poke(BAR0 + 4, (cap >> 32) as u32);
    platform.poke(BAR0 + 8, 0x0001_0400);
    let (function, _space) = handle(device(entries), platform);
    let model = Arc::new(Mutex::new(Model {
        platform,
        entries,
        enabled: false,
        queues: [Q::default(); 5],
        faults,
        ticks: 0,
        list_requests: 0,
        identify_ns: 0,
    }));
    let block = Interrupts::allocate(&platform, 1).expect("a spare vector");
    let (cpu, vector) = (block.cpu(), block.first());
    let m = model.clone();
    Interrupts::install(
        &platform,
        cpu,
        vector,
        "nvme model",
        "test",
        Box::new(move || {
            m.lock().tick();
            let now = Platform::now_us(&platform);
            platform.interrupt_at(now + TICK_US, cpu, vector);
        }),
    )
    .expect("install the model");
    platform.interrupt_at(TICK_US, cpu, vector);
    (function, model, platform)
}

fn healthy() -> Faults {
    Faults {
        nn: 1,
        nsze: 1 << 20,
        ..Faults::default()
    }
}

#[test]
fn the_model_binds_and_reads() {
    let (function, _model, _p) = controller(healthy());
    let mut nvme = Nvme::new(function).map_err(|(_, e)| e).expect("probe");
    assert_eq!(nvme.namespaces().len(), 1);
    let mut block = vec![0u8; 512];
    nvme.read(0, &mut block).expect("read");
    let _ = nvme.status();
}

/// A one-entry MSI-X table: the admin queue and the one I/O queue share entry 0 (the model
/// refuses a completion queue on an entry the table does not have), and reads complete.
#[test]
fn one_msix_entry_serves_the_admin_and_the_io_queue() {
    let (function, model, _p) = controller_with(healthy(), 1);
    let mut nvme = Nvme::new(function).map_err(|(_, e)| e).expect("probe");
    assert_eq!(nvme.interrupts(), (IrqKind::Msix, 1));
    assert_eq!(nvme.io_queues(), 1);
    let before = nvme.interrupt_counts();
    let mut block = vec![0u8; 4096];
    nvme.read(0, &mut block).expect("read");
    let after = nvme.interrupt_counts();
    assert_eq!(after.len(), 1, "one counter per entry: {after:?}");
    assert!(after[0] > before[0], "entry 0 did not count the read");
    assert_eq!(model.lock().queues[1].vector, 0);
}

/// Allowing neither MSI-X nor INTx is a probe failure that names the kinds, and the function
/// comes back.
#[test]
fn no_allowed_kind_fails_the_probe() {
    let (function, _model, _p) = controller(healthy());
    match Nvme::new_with(function, IrqKinds::MSI) {
        Ok(_) => panic!("probed without an allowed interrupt kind"),
        Err((_function, e)) => assert!(e.to_string().contains("interrupts: none of"), "{e}"),
    }
}

/// Identify Namespace NSZE = u64::MAX is accepted, and `Bound::status` then multiplies it
/// by the block size (mod.rs: `(n.lbas * u64::from(n.lba_size)) >> 20`).
#[test]
fn huge_nsze_does_not_overflow_status() {
    let (function, _model, _p) = controller(Faults {
        nsze: u64::MAX,
        ..healthy()
    });
    match Nvme::new(function) {
        // Refusing such a namespace at probe is fine too.
        Err((_, e)) => assert!(!e.0.is_empty()),
        Ok(nvme) => {
            let text = nvme.status();
            assert!(text.contains("ns1"), "{text}");
        }
    }
}

/// NN = 1, but the active namespace list (CNS 02h) names NSIDs 1..=1024 (a full page, so the
/// driver asks again from 1024), then 1025..=2048: every one above NN is taken as a namespace
/// and asked about. A device answering full pages forever keeps the loop going for up to
/// 4 million pages (16 GiB of NSIDs) and 4 billion Identify commands.
#[test]
fn active_namespace_list_is_bounded_by_nn() {
    let (function, model, _p) = controller(Faults {
        full_lists: 2,
        ..healthy()
    });
    let result = Nvme::new(function);
    let m = model.lock();
    assert!(
        m.list_requests <= 1 && m.identify_ns <= 1,
        "NN is 1, yet {} active-namespace-list pages and {} Identify Namespace commands were issued",
        m.list_requests,
        m.identify_ns
    );
    drop(m);
    if let Ok(nvme) = result {
        assert!(
            nvme.namespaces()
                .iter()
                .all(|n| n.nsid <= nvme.identity().namespaces)
        );
    }
}

/// The device never completes a read but posts a completion with an unknown command
/// identifier every second: each one restarts the I/O timeout (io.rs, `start = now` when
/// anything was consumed), so the wait lasts as long as the device keeps it up (here 100
/// seconds, forever for a device that never stops).
#[test]
fn garbage_completions_do_not_extend_the_timeout() {
    let (function, model, platform) = controller(healthy());
    let mut nvme = Nvme::new(function).map_err(|(_, e)| e).expect("probe");
    {
        let mut m = model.lock();
        m.faults.garbage_every = 1000; // every second
        m.faults.garbage_left = 100;
    }
    let before = Platform::now_us(&platform);
    let mut block = vec![0u8; 512];
    let e = nvme.read(0, &mut block).unwrap_err();
    let waited = Platform::now_us(&platform) - before;
    assert!(
        waited <= IO_TIMEOUT_US + 2_000_000,
        "the read failed ({e}) only after {} s ({} bogus completions posted)",
        waited / 1_000_000,
        100 - model.lock().faults.garbage_left
    );
}

/// A read straight into the caller's DMA memory that times out with its command still in
/// flight: before the error returns, the controller is reset (CC.EN = 0, CSTS.RDY = 0), so
/// the command cannot complete later into memory the caller has its hands on again.
#[test]
fn a_timed_out_read_into_the_callers_memory_resets_the_controller() {
    let (function, model, platform) = controller(healthy());
    let mut nvme = Nvme::new(function).map_err(|(_, e)| e).expect("probe");
    // From now on the model takes I/O commands and never completes them.
    model.lock().faults.garbage_every = u64::MAX;
    let mut memory = BlockDevices::dma_buffer(&nvme, 0, 4096).expect("DMA memory");
    let mut requests = [crate::block::DmaRequest {
        lba: 0,
        data: memory.slice(),
    }];
    let e = nvme.read_ns_dma(0, 0, &mut requests, 1).unwrap_err();
    assert!(matches!(e, NvmeError::Timeout { .. }), "{e}");
    assert_eq!(platform.peek(BAR0 + 0x14) & 1, 0, "CC.EN still set");
    assert!(!model.lock().enabled, "the model did not see the reset");
    let again = nvme.read_ns_dma(0, 0, &mut requests, 1).unwrap_err();
    assert!(
        format!("{again}").contains("the controller was reset"),
        "{again}"
    );
}

/// The same timeout on a read through the driver's own staging memory leaves the
/// controller as it is (its memory is the driver's until unbind).
#[test]
fn a_timed_out_staged_read_keeps_the_controller_for_unbind() {
    let (function, model, platform) = controller(healthy());
    let mut nvme = Nvme::new(function).map_err(|(_, e)| e).expect("probe");
    model.lock().faults.garbage_every = u64::MAX;
    let mut block = vec![0u8; 512];
    let e = nvme.read(0, &mut block).unwrap_err();
    assert!(matches!(e, NvmeError::Timeout { .. }), "{e}");
    assert_eq!(platform.peek(BAR0 + 0x14) & 1, 1);
}

/// Past its deadline a wait is a timeout even if an interrupt came: a device interrupting
/// without completing anything (a storm, bogus completions faster than one per pass) must
/// not keep a read waiting forever.
#[test]
fn a_wait_past_its_deadline_is_a_timeout_even_if_an_interrupt_came() {
    use core::sync::atomic::Ordering;
    let (function, _model, platform) = controller(healthy());
    let nvme = Nvme::new(function).map_err(|(_, e)| e).expect("probe");
    let q = &nvme.io[0];
    let now = Platform::now_us(&platform);
    assert!(now > 2_000, "{now}");
    let seen = q.interrupts.load(Ordering::Acquire);
    q.interrupts.fetch_add(1, Ordering::AcqRel); // one interrupt since the snapshot
    let r = super::queues::wait(
        &nvme.controller,
        q,
        seen,
        0,
        1_000,
        super::commands::NVM_READ,
    );
    assert!(
        matches!(r, Err(NvmeError::Timeout { .. })),
        "wait gave {r:?} {now} us into a 1000 us timeout because the counter moved"
    );
}

/// NN at its largest and active-namespace list pages that are always full: one page is
/// taken (1024 namespaces), not the four million NN would allow.
#[test]
fn the_namespaces_asked_about_are_one_list_page_at_most() {
    let (function, model, _p) = controller(Faults {
        nn: u32::MAX,
        full_lists: 100,
        ..healthy()
    });
    let nvme = Nvme::new(function).map_err(|(_, e)| e).expect("probe");
    let m = model.lock();
    assert_eq!(m.list_requests, 1);
    assert!(m.identify_ns <= 1024, "{}", m.identify_ns);
    drop(m);
    assert_eq!(nvme.namespaces().len(), 1024);
}
