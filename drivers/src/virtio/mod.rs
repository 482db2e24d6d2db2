//! Modern virtio over PCI (virtio 1.1, OASIS csd01): the transport the block and network
//! drivers share.
//!
//! # What the spec asks, and where it is done here
//!
//! - §4.1.2 device IDs: vendor 0x1AF4; a modern device has ID 0x1040 + device type, a
//!   transitional one an ID in 0x1000..=0x103F and the device type in its Subsystem ID
//!   ([`device_type`]). Only the modern interface is driven (no legacy I/O BAR), so a
//!   transitional device works exactly like a modern one.
//! - §4.1.4 vendor-specific capabilities locate the structures ([`Caps`]): common
//!   configuration (§4.1.4.3), notifications (§4.1.4.4), ISR status (§4.1.4.5),
//!   device-specific configuration (§4.1.4.6) and the PCI configuration access window
//!   (§4.1.4.7). The first usable instance of each type is taken.
//! - §3.1.1 / §4.1.5 initialisation ([`VirtioPci::probe`]): reset, ACKNOWLEDGE, DRIVER,
//!   feature negotiation (VIRTIO_F_VERSION_1 required, VIRTIO_F_ACCESS_PLATFORM and
//!   VIRTIO_F_ORDER_PLATFORM accepted when offered, nothing accepted that the driver does
//!   not handle), FEATURES_OK and its read-back, interrupt vectors, the virtqueues, DRIVER_OK.
//! - §2.6 split virtqueues ([`Virtqueue`]): descriptor table, available ring, used ring, a
//!   free list of descriptors, completions consumed after the queue's interrupt.
//! - §4.1.5.1.2 MSI-X: entry 0 is the configuration-change vector, queue `i` gets entry
//!   `1 + i`; with fewer entries than `1 + queues` the queues share what there is (config 0,
//!   queues round-robin over the rest, or everything on entry 0), and without MSI-X the
//!   function's INTx pin with the ISR read in the handler (§4.1.4.5: the read clears the ISR
//!   and deasserts the line).
//!
//! # Register access widths
//!
//! The spec wants every field accessed at its natural width (§4.1.3.1). [`BarWindow`] only
//! does dword accesses, so:
//!
//! - 32-bit fields (feature words) and 64-bit fields (queue addresses, as two 32-bit halves,
//!   which §4.1.3.1 allows) go through the mapped BAR windows;
//! - 8- and 16-bit fields (`device_status`, `queue_select`, `queue_size`, the MSI-X vector
//!   fields, `queue_notify_off`, `config_generation`, the notification itself, byte-wide
//!   device configuration such as a MAC address) go through the PCI configuration access
//!   capability, a window in configuration space that forwards 1-, 2- or 4-byte accesses to
//!   any BAR offset (§4.1.4.7; every modern device must have one). The window's setup is
//!   cached, so a notification after the first is one configuration write.
//! - The one exception is the ISR read in the INTx handler: an interrupt can arrive in the
//!   middle of a window access, so the handler reads the mapped ISR structure as a dword
//!   (INTx is only used when that structure is at least 4 bytes long, as QEMU's is).
//!
//! (A `read16`/`write16` on [`BarWindow`] would let everything go through the BAR mappings.)
//!
//! # Ownership
//!
//! A bound device is one [`VirtioPci`]. It owns, in field order:
//!
//! - the [`Transport`]: BAR windows on the common, ISR and device structures (unmapped on
//!   drop; a leak costs MMIO window space) and the configuration window's cached setup;
//! - the [`Virtqueue`]s, each owning its rings (one DMA buffer: descriptor table, available
//!   ring, used ring) and the DMA buffer its requests point into (drivers name buffers by
//!   offset in it, or in a DMA buffer of their own made by [`VirtioPci::dma_buffer`] such as
//!   the block driver's staging slots, never by bus address, so the device can only be
//!   pointed at memory the queue or the driver owns); a leak costs their frames;
//! - the interrupt vectors with their handlers and the function handle ([`IrqVectors`]).
//!
//! `Drop` resets the device first (device_status 0, then waits until it reads back 0, §2.1.2
//! and §4.1.4.3.2): after that the device neither reads nor writes guest memory nor raises
//! interrupts. Only then do the fields drop in order: windows unmapped, rings and buffers
//! freed, handlers uninstalled, MSI-X entries masked and disabled, vectors freed, the
//! function handed back to the PCI layer. Freeing the rings first would let a running device
//! write into frames that already belong to someone else. If the device does not confirm the
//! reset within [`RESET_TIMEOUT_US`], the queues are leaked on purpose (their frames stay
//! allocated forever): a leak costs memory, a free under a live device costs correctness.
//! Leaking a whole `VirtioPci` (`mem::forget`) likewise leaves the device running on memory
//! that stays allocated, its vectors and handlers installed and the function claimed: it
//! costs frames, vectors, window space and the device, never someone else's memory.

pub mod blk;
pub mod net;

mod capabilities;
#[cfg(test)]
mod fake_tests;
mod transport;
mod virtqueue;

pub use crate::fnv1a;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicU64, Ordering};

use pci::function::BusMaster;
use pci::irq::{IrqKind, IrqKinds, IrqVectors, PciFunction};
#[cfg(doc)]
use pci::window::BarWindow;

use crate::ProbeError;
use crate::fault::{self, Point};

pub use capabilities::{Caps, Structure};
pub use transport::Transport;
use transport::*;
pub use virtqueue::{Memory, Segment, Used, Virtqueue};
pub(crate) use virtqueue::{copy_from, copy_to};

/// The virtio vendor ID (§4.1.2).
pub const VENDOR: u16 = 0x1AF4;
/// Device type of a network card (§5.1).
pub const TYPE_NET: u16 = 1;
/// Device type of a block device (§5.2).
pub const TYPE_BLOCK: u16 = 2;

/// VIRTIO_F_VERSION_1 (§6): the device is modern; required.
pub const F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_F_ACCESS_PLATFORM (§6): the device reaches memory the way other bus masters do,
/// through whatever translation the platform puts between them (an IOMMU, encrypted guest
/// memory), so it must be given bus addresses, not CPU physical ones. Accepted when offered:
/// every address this driver writes to a device is a [`pci::dma::BusAddr`] of the function's own
/// DMA memory, which is what the feature asks for. A device that offers it may refuse
/// FEATURES_OK without it (QEMU's `iommu_platform=on` does; so do confidential guests'
/// devices and hardware virtio functions).
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;
/// VIRTIO_F_ORDER_PLATFORM (§6): the driver must order its memory and register accesses with
/// the platform's DMA barriers rather than SMP ones (a hardware implementation, not a
/// hypervisor). Accepted when offered: on x86 both kinds are the same, since stores to
/// write-back memory become visible in program order and uncached register accesses are not
/// reordered with them (Intel SDM vol. 3A, "Memory Ordering in P6 and More Recent Processor
/// Families"); the virtqueue's release and acquire fences keep the compiler from
/// reordering.
pub const F_ORDER_PLATFORM: u64 = 1 << 36;
/// The transport's features, accepted from any device that offers them whatever the device
/// type: VERSION_1, ACCESS_PLATFORM and ORDER_PLATFORM.
pub const TRANSPORT_FEATURES: u64 = F_VERSION_1 | F_ACCESS_PLATFORM | F_ORDER_PLATFORM;

/// How long the device may take to confirm a reset.
pub const RESET_TIMEOUT_US: u64 = 1_000_000;

/// The virtio device type of a PCI function, if it is a virtio device (§4.1.2.1): modern ID
/// 0x1040 + type, or transitional ID 0x1000..=0x103F with the type in the Subsystem ID.
pub fn device_type(info: &pci::Function) -> Option<u16> {
    if info.vendor_id != VENDOR {
        return None;
    }
    match info.device_id {
        0x1000..=0x103F => info.subsystem_id,
        id @ 0x1041..=0x107F => Some(id - 0x1040),
        _ => None,
    }
}

/// Why waiting for a completion failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// Nothing arrived in time (the text says whether the device completed without
    /// interrupting).
    Timeout(String),
    /// The device broke the queue's rules.
    Device(String),
}

impl core::fmt::Display for WaitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WaitError::Timeout(why) | WaitError::Device(why) => f.write_str(why),
        }
    }
}

impl From<WaitError> for String {
    fn from(e: WaitError) -> String {
        alloc::string::ToString::to_string(&e)
    }
}

/// What a device driver asks of the transport.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Device type (§5).
    pub device_type: u16,
    /// Owner name for the interrupt handlers.
    pub name: &'static str,
    /// Features the driver handles besides the transport's ([`TRANSPORT_FEATURES`]); only
    /// those the device offers are accepted.
    pub features: u64,
    /// The queues to set up, in index order from 0: name, largest size wanted, and the size
    /// of the DMA buffer their requests use.
    pub queues: &'static [QueueSpec],
}

/// One queue a driver wants.
#[derive(Clone, Copy, Debug)]
pub struct QueueSpec {
    /// The spec's name for it (e.g. `requestq`).
    pub name: &'static str,
    /// At most this many entries (the device may offer fewer).
    pub max_size: u16,
    /// Bytes of DMA buffer for its requests.
    pub buffer_bytes: u64,
}

/// How interrupts reach the queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// MSI-X with this many entries: config on entry 0, queue `i` on [`queue_vector`].
    Msix(u16),
    /// The INTx pin; the handler reads the ISR.
    Intx,
}

/// The MSI-X entry of queue `queue` when `vectors` entries were granted: `1 + queue` with
/// enough of them, round-robin over entries 1.. when there are fewer, entry 0 (shared with
/// configuration changes) when there is only one.
pub const fn queue_vector(queue: u16, vectors: u16) -> u16 {
    if vectors >= 2 {
        1 + queue % (vectors - 1)
    } else {
        0
    }
}

/// A bound modern virtio-pci device: transport, queues, vectors. See the module
/// documentation for what it owns and the order `Drop` releases it in.
#[derive(Debug)]
pub struct VirtioPci {
    transport: Transport,
    queues: Vec<Virtqueue>,
    features: u64,
    routing: Routing,
    names: &'static [QueueSpec],
    config_changes: Arc<AtomicU64>,
    /// The device was reset (by [`VirtioPci::stop`]); nothing of it runs.
    stopped: bool,
    /// `Some` until [`VirtioPci::into_function`] takes it; owns the function handle.
    irq: Option<IrqVectors>,
    /// Bus mastering for the queues' DMA (declared last: it goes off after everything else;
    /// queue memory dropped before then waits in the function's quarantine).
    master: Option<BusMaster>,
}

impl VirtioPci {
    /// Takes `function` through initialisation (§3.1.1) as `spec` says, with interrupts of
    /// the kinds `kinds` allows (MSI-X preferred, then INTx). On failure the device is reset
    /// and the function comes back with the reason.
    pub fn probe(
        function: PciFunction,
        spec: &Spec,
        kinds: IrqKinds,
    ) -> Result<VirtioPci, (PciFunction, ProbeError)> {
        // The bus prefixes the driver's name.
        let e = ProbeError;
        if device_type(function.info()) != Some(spec.device_type) {
            return Err((function, e("not this virtio device type".into())));
        }
        let transport = match Caps::find(&function).and_then(|c| Transport::map(&function, c)) {
            Ok(t) => t,
            Err(why) => return Err((function, e(why))),
        };
        // 1-6: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK (and its read-back).
        let features = match negotiate(&transport, &function, spec) {
            Ok(f) => f,
            Err(why) => {
                transport.fail(&function);
                return Err((function, e(why)));
            }
        };
        let queues = spec.queues.len() as u16;
        let available = transport.common_read(&function, NUM_QUEUES, 2) as u16;
        if available < queues {
            transport.fail(&function);
            return Err((
                function,
                e(format!("{available} queue(s), {queues} needed")),
            ));
        }
        let irq = match allocate_vectors(function, queues, kinds, transport.isr.is_some()) {
            Ok(irq) => irq,
            Err((function, why)) => {
                transport.fail(&function);
                return Err((function, e(why)));
            }
        };
        let routing = match irq.kind() {
            IrqKind::Intx => Routing::Intx,
            _ => Routing::Msix(irq.len() as u16),
        };
        // From here the device state lives in `dev`: a failure drops back through
        // `into_function`, which resets before freeing anything.
        let mut dev = VirtioPci {
            transport,
            queues: Vec::new(),
            features,
            routing,
            names: spec.queues,
            config_changes: Arc::new(AtomicU64::new(0)),
            stopped: false,
            irq: Some(irq),
            master: None,
        };
        match dev.bring_up(spec) {
            Ok(()) => {
                fault::point(dev.function().address(), Point::Probe);
                Ok(dev)
            }
            Err(why) => {
                dev.transport.fail(dev.function());
                Err((dev.into_function(), e(why)))
            }
        }
    }

    fn irq(&self) -> &IrqVectors {
        self.irq
            .as_ref()
            .expect("VirtioPci used after into_function")
    }

    /// The function (for its clock, address and DMA buffers).
    pub fn function(&self) -> &PciFunction {
        self.irq().function()
    }

    /// Handlers, vectors, queues, DRIVER_OK (§3.1.1 steps 7-8).
    fn bring_up(&mut self, spec: &Spec) -> Result<(), String> {
        let counters: Vec<Arc<AtomicU64>> = spec
            .queues
            .iter()
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        self.install_handlers(spec.name, &counters)?;
        // Bus mastering for the queues, whichever interrupt kind was granted; off again when
        // the guard drops, after the vectors.
        self.master = Some(self.irq().function().bus_master());
        let f = self.irq().function();
        if let Routing::Msix(_) = self.routing {
            let t = &self.transport;
            t.common_write(f, MSIX_CONFIG, 2, 0);
            let got = t.common_read(f, MSIX_CONFIG, 2) as u16;
            if got != 0 {
                return Err(format!("config vector 0 refused (reads {got:#x})"));
            }
        }
        for (i, (q, counter)) in spec.queues.iter().zip(counters).enumerate() {
            let queue = self.setup_queue(i as u16, q, counter)?;
            self.queues.push(queue);
        }
        let f = self.irq().function();
        let status = self.transport.status(f);
        self.transport.set_status(f, status | DRIVER_OK);
        let status = self.transport.status(f);
        if status & (DEVICE_NEEDS_RESET | FAILED) != 0 || status & DRIVER_OK == 0 {
            return Err(format!("device status {status:#x} after DRIVER_OK"));
        }
        Ok(())
    }

    /// One handler per granted vector, living exactly as long as the vectors. MSI-X: each
    /// bumps the counters of the queues routed to its entry (and the config counter on entry
    /// 0). INTx: reads the ISR (which deasserts the line); bit 0 means a queue, bit 1 a
    /// configuration change; 0 means another function on a shared line.
    fn install_handlers(
        &mut self,
        name: &'static str,
        counters: &[Arc<AtomicU64>],
    ) -> Result<(), String> {
        let config = self.config_changes.clone();
        let routing = self.routing;
        let isr = self.transport.isr.clone();
        let address = self.function().address();
        let irq = self.irq.as_mut().expect("vectors present in bring_up");
        match routing {
            Routing::Msix(n) => {
                for v in 0..n {
                    let mine: Vec<Arc<AtomicU64>> = (0..counters.len() as u16)
                        .filter(|&q| queue_vector(q, n) == v)
                        .map(|q| counters[usize::from(q)].clone())
                        .collect();
                    let config = (v == 0).then(|| config.clone());
                    irq.install(usize::from(v), name, move || {
                        fault::point(address, Point::Handler);
                        for c in &mine {
                            c.fetch_add(1, Ordering::Release);
                        }
                        if let Some(c) = &config {
                            c.fetch_add(1, Ordering::Release);
                        }
                    })
                    .map_err(|e| format!("handler on MSI-X entry {v}: {e}"))?;
                }
            }
            Routing::Intx => {
                let isr = isr.ok_or("no dword-sized ISR structure for INTx")?;
                let all: Vec<Arc<AtomicU64>> = counters.to_vec();
                irq.install(0, name, move || {
                    fault::point(address, Point::Handler);
                    let status = isr.read32(0) & 0xff;
                    if status & 1 != 0 {
                        for c in &all {
                            c.fetch_add(1, Ordering::Release);
                        }
                    }
                    if status & 2 != 0 {
                        config.fetch_add(1, Ordering::Release);
                    }
                })
                .map_err(|e| format!("INTx handler: {e}"))?;
            }
        }
        Ok(())
    }

    /// Resets the device now (idempotent). Whether it confirmed; if it did not, the queues
    /// are leaked when `self` drops rather than freed under a device that may still use them.
    pub fn stop(&mut self) -> bool {
        if self.stopped {
            return true;
        }
        let Some(irq) = self.irq.as_ref() else {
            return true;
        };
        if self.transport.reset(irq.function()) {
            self.stopped = true;
        }
        self.stopped
    }

    /// Resets the device, frees the queues, releases the vectors and gives the function back
    /// (for a probe that fails after this value exists).
    pub fn into_function(mut self) -> PciFunction {
        if !self.stop() {
            core::mem::forget(core::mem::take(&mut self.queues));
        }
        self.queues.clear();
        let irq = self.irq.take().expect("into_function runs once");
        let function = irq.into_function();
        drop(self.master.take());
        function
    }

    /// The features both sides agreed on.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// How interrupts are routed.
    pub fn routing(&self) -> Routing {
        self.routing
    }

    /// The interrupt kind granted.
    pub fn irq_kind(&self) -> IrqKind {
        self.irq().kind()
    }

    /// Queue `index`.
    pub fn queue(&self, index: usize) -> &Virtqueue {
        &self.queues[index]
    }

    /// Configuration-change interrupts so far.
    pub fn config_changes(&self) -> u64 {
        self.config_changes.load(Ordering::Acquire)
    }

    /// The transport (device configuration reads).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Makes `chain` available on queue `queue` (see [`Virtqueue::add`]) without notifying.
    pub fn add(&mut self, queue: usize, chain: &[Segment]) -> Result<u16, String> {
        self.queues[queue].add(chain)
    }

    /// The bus-mastering guard, once the queues are set up (to check that a caller's DMA
    /// memory was made for this function).
    pub fn bus_master(&self) -> Option<&BusMaster> {
        self.master.as_ref()
    }

    /// A zeroed DMA buffer for this device (a driver's own request memory, named in a
    /// [`Segment::of`]); the driver must keep it until the device is reset, which declaring it
    /// after the `VirtioPci` in its state does.
    pub fn dma_buffer(&self, bytes: u64) -> Result<pci::window::DmaBuffer, String> {
        let master = self.master.as_ref().ok_or("bus mastering not set up")?;
        master
            .dma_buffer(bytes)
            .map_err(|e| format!("DMA buffer of {bytes} bytes: {e}"))
    }

    /// Tells the device queue `queue` has new buffers.
    pub fn notify(&self, queue: usize) {
        self.transport
            .notify(self.irq().function(), &self.queues[queue]);
    }

    /// Adds `chain` to queue `queue` and notifies the device.
    pub fn submit(&mut self, queue: usize, chain: &[Segment]) -> Result<u16, String> {
        let head = self.add(queue, chain)?;
        self.notify(queue);
        Ok(head)
    }

    /// The next used element of queue `queue` if the device has returned one, without
    /// waiting (after [`VirtioPci::next_used`] found the first of a batch).
    pub fn poll_used(&mut self, queue: usize) -> Result<Option<Used>, WaitError> {
        self.queues[queue].pop_used().map_err(WaitError::Device)
    }

    /// The next used element of queue `queue`, consumed only after the queue's interrupt
    /// said there is one: the handler bumps the queue's counter, this side drains the used
    /// ring once per observed change. Waits up to `timeout_us`.
    pub fn next_used(&mut self, queue: usize, timeout_us: u64) -> Result<Used, WaitError> {
        let f = self
            .irq
            .as_ref()
            .expect("VirtioPci used after into_function")
            .function();
        let q = &mut self.queues[queue];
        let deadline = f.now_us().saturating_add(timeout_us);
        loop {
            // Loaded before looking at the ring: an interrupt after the look is not missed.
            let count = q.interrupts.load(Ordering::Acquire);
            if count != q.seen {
                if let Some(used) = q.pop_used().map_err(WaitError::Device)? {
                    return Ok(used);
                }
                q.seen = count;
            }
            let (seen, counter) = (q.seen, &q.interrupts);
            let left = deadline.saturating_sub(f.now_us());
            if left == 0 || !f.wait_until(left, || counter.load(Ordering::Acquire) != seen) {
                if f.vanished() {
                    return Err(WaitError::Device(format!(
                        "queue {} ({}): the device stopped answering (removed?)",
                        q.index, self.names[queue].name
                    )));
                }
                let idx = q.used_idx();
                return Err(WaitError::Timeout(format!(
                    "queue {} ({}): no completion interrupt within {} ms (used index {idx}, consumed {}, {} interrupt(s){})",
                    q.index,
                    self.names[queue].name,
                    timeout_us / 1000,
                    q.last_used,
                    q.interrupts.load(Ordering::Acquire),
                    if idx != q.last_used {
                        ": the device completed, the interrupt did not arrive"
                    } else {
                        ""
                    }
                )));
            }
        }
    }

    /// One line about vectors: kind, count and where each queue's interrupts arrive.
    pub fn describe_vectors(&self) -> String {
        let mut s = String::new();
        match self.routing {
            Routing::Msix(n) => {
                let _ = write!(s, "MSI-X {n} vector(s): config 0");
                for (q, spec) in self.queues.iter().zip(self.names) {
                    let _ = write!(s, ", {} {}", spec.name, q.vector);
                }
            }
            Routing::Intx => s.push_str("INTx (ISR read in the handler)"),
        }
        s
    }
}

impl Drop for VirtioPci {
    /// Resets the device before anything it could use is freed; the fields then drop in
    /// order (windows, queues, vectors with their handlers and the function). A device that
    /// does not confirm the reset keeps its queues: they are leaked, not freed.
    fn drop(&mut self) {
        if !self.stop() {
            core::mem::forget(core::mem::take(&mut self.queues));
        }
    }
}

/// MSI-X with `1 + queues` vectors, else as many MSI-X vectors as there are (at least one),
/// else INTx (if `intx_ok`: the handler needs a dword-readable ISR).
fn allocate_vectors(
    function: PciFunction,
    queues: u16,
    kinds: IrqKinds,
    intx_ok: bool,
) -> Result<IrqVectors, (PciFunction, String)> {
    let full = 1 + usize::from(queues);
    let mut function = function;
    let mut why: Vec<String> = Vec::new();
    if kinds.contains(IrqKinds::MSIX) {
        for (min, max) in [(full, full), (1, full)] {
            match function.alloc_irq_vectors(min, max, IrqKinds::MSIX) {
                Ok(v) => return Ok(v),
                Err((f, e)) => {
                    function = f;
                    why.push(format!("{min}..={max} MSI-X: {e}"));
                }
            }
        }
    }
    if kinds.contains(IrqKinds::INTX) {
        if !intx_ok {
            why.push("INTx: the ISR structure is shorter than a dword".into());
        } else {
            match function.alloc_irq_vectors(1, 1, IrqKinds::INTX) {
                Ok(v) => return Ok(v),
                Err((f, e)) => {
                    function = f;
                    why.push(format!("INTx: {e}"));
                }
            }
        }
    }
    Err((function, format!("no interrupts ({})", why.join("; "))))
}

/// Boxes a concrete bound driver as the trait object the bus keeps.
pub(crate) fn boxed<T: crate::Bound + 'static>(
    result: Result<T, (PciFunction, ProbeError)>,
) -> Result<Box<dyn crate::Bound>, (PciFunction, ProbeError)> {
    result.map(|b| Box::new(b) as Box<dyn crate::Bound>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_vectors_share_when_short() {
        assert_eq!([queue_vector(0, 3), queue_vector(1, 3)], [1, 2]);
        assert_eq!([queue_vector(0, 2), queue_vector(1, 2)], [1, 1]);
        assert_eq!([queue_vector(0, 1), queue_vector(1, 1)], [0, 0]);
        assert_eq!([queue_vector(0, 3), queue_vector(2, 3)], [1, 1]);
    }

    #[test]
    fn device_types_from_ids() {
        let f = pci::fake::irq::function_with_msix(1);
        let mut info = f.info().clone();
        info.vendor_id = VENDOR;
        info.device_id = 0x1042;
        assert_eq!(device_type(&info), Some(TYPE_BLOCK));
        info.device_id = 0x1001;
        info.subsystem_id = Some(2);
        assert_eq!(device_type(&info), Some(TYPE_BLOCK));
        info.device_id = 0x1000;
        info.subsystem_id = Some(1);
        assert_eq!(device_type(&info), Some(TYPE_NET));
        info.device_id = 0x1040;
        assert_eq!(device_type(&info), None);
        info.vendor_id = 0x8086;
        info.device_id = 0x1041;
        assert_eq!(device_type(&info), None);
    }

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
