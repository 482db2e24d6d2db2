//! The kernel side of `pci::irq`: claims of PCI functions, and the `pci::platform` traits:
//! [`Interrupts`] (allocates vectors, installs handlers, routes INTx), [`DeviceMemory`] (maps
//! device registers, allocates DMA memory) and [`Platform`] (clock, the idle that drivers'
//! waits halt in, claims).
//!
//! INTx routing: the pin is swizzled up through PCI-to-PCI bridges to the root bus
//! (`pci::intx_lines::pin_at_root`) and looked up in the root bridge's `_PRT`, which the
//! firmware layer resolved to GSIs at boot (APIC mode, link devices through
//! `_CRS`/`_PRS`/`_SRS`, ISA overrides applied). Without AML or a `_PRT` entry, the Interrupt
//! Line register is taken as the GSI, and the kernel says so. Lines are shared: one vector per
//! GSI, every attached function's handler runs on it; the bookkeeping is
//! `pci::intx_lines::SharedLines` (host-tested, shared with the fake platform), and this file
//! adds the IOAPIC programming around it.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use pci::intx_lines::SharedLines;
use pci::irq::PciFunction;
use pci::platform::{
    DeviceMemory, DmaRegion, Handler, Interrupts, IntxLine, MsiMessage, Parking, Platform,
    PlatformError, RegisterWindow,
};
use pci::vectors::{AllocError, Block};
use pci::{Address, ConfigSpace, Function};
use spin::{Mutex, Once};

use crate::interrupts::{dispatch, ioapic, lapic, vectors};
use crate::memory::mmio::{MapError, Mmio};
use crate::pcie::KernelConfig;

/// The kernel's interrupt platform (a marker; state is global).
pub struct KernelIrq;

static PLATFORM: KernelIrq = KernelIrq;
static SPACE: Once<ConfigSpace<'static, KernelConfig>> = Once::new();
static CLAIMED: Mutex<Vec<Address>> = Mutex::new(Vec::new());
/// DMA memory of released functions, kept for their next claim (`pci::parking`).
static PARKING: Parking = Parking::new();
static PENDING_AT_RELEASE: AtomicU64 = AtomicU64::new(0);

/// Interrupts found pending on vectors being released, so far.
pub fn pending_at_release() -> u64 {
    PENDING_AT_RELEASE.load(Ordering::Relaxed)
}

/// Claims the function at `address`: its one owned handle, if it exists and is unclaimed.
pub fn claim(address: Address) -> Option<PciFunction> {
    let scan = crate::pcibus::scan()?;
    let info = scan.topology.function(address)?.clone();
    let space =
        SPACE.call_once(|| crate::pcibus::config_space(crate::pcibus::config(), &scan.roots));
    // With interrupts off, as every use of `CLAIMED`: `release_function` may run in an
    // interrupt handler (a handler holding a function's last handle, uninstalled while it
    // ran, is dropped there), which must not spin on a lock the code it interrupted holds.
    let taken = x86_64::instructions::interrupts::without_interrupts(|| {
        let mut claimed = CLAIMED.lock();
        let taken = claimed.contains(&address);
        if !taken {
            claimed.push(address);
        }
        taken
    });
    if taken {
        return None;
    }
    log::debug!("pci: {address} claimed");
    // SAFETY: `CLAIMED` now records `address`, and only `release_function` (called when this
    // handle drops) removes it, so this is the only handle; `space` reaches every scanned
    // function.
    let function = unsafe { PciFunction::new(info, space, &PLATFORM) };
    // Bus mastering is off now; from here the device reaches only what is mapped for it
    // (on a machine with DMA remapping).
    crate::iommu::isolate(address);
    Some(function)
}

/// The first scanned function with these IDs.
pub fn find(vendor: u16, device: u16) -> Option<Address> {
    let scan = crate::pcibus::scan()?;
    scan.topology
        .functions
        .iter()
        .find(|f| f.vendor_id == vendor && f.device_id == device)
        .map(|f| f.address)
}

struct Window(Mmio);

impl RegisterWindow for Window {
    fn read32(&self, offset: u64) -> u32 {
        self.0.read32(offset)
    }

    fn write32(&self, offset: u64, value: u32) {
        self.0.write32(offset, value)
    }
}

/// Every shared INTx line. Its lock is also taken in interrupt context (the line's dispatch
/// handler runs [`SharedLines::run`]), so every use here holds interrupts off.
static LINES: SharedLines = SharedLines::new();

/// One function's attachment to the shared line of `gsi`: owned by its `IrqVectors`;
/// dropping it detaches, and the last one unroutes the GSI and frees the line's vector.
struct Attachment {
    gsi: u32,
    cpu: u32,
    vector: u8,
    /// The function whose pin this is: quieted (Command.INTx Disable) if one of its
    /// handlers panics.
    address: Address,
}

/// Which function each handler on a shared line serves, by (GSI, handler id): the line's
/// dispatcher quiets the function of a handler that panicked before its driver is dropped,
/// so a level-triggered line it keeps asserting does not interrupt without end. Locked with
/// interrupts off only.
static LINE_FUNCTIONS: Mutex<BTreeMap<(u32, u64), Address>> = Mutex::new(BTreeMap::new());

/// (GSI, id) of every handler installed on a shared INTx line.
pub fn intx_handler_ids() -> Vec<(u32, u64)> {
    x86_64::instructions::interrupts::without_interrupts(|| LINES.handler_ids())
}

/// Runs the handlers of the shared line of `gsi`, each inside `unwind::catch`. One that
/// panics is parked by the line, its function's INTx is disabled in configuration space
/// (PCI Local Bus 3.0 §6.2.2, Command bit 10; the device's pin deasserts), and the fault
/// goes to `dispatch::take_faults` for `crate::bus::reap`, which drops the driver.
fn run_line(gsi: u32, cpu: u32, vector: u8) {
    LINES.run_with(
        gsi,
        |handler| crate::cpu::unwind::catch(handler),
        |fault, caught| {
            let address = LINE_FUNCTIONS.lock().get(&(fault.gsi, fault.id)).copied();
            if let (Some(address), Some(space)) = (address, SPACE.get()) {
                // A dword write: the Status half is written as zeros, which leaves its
                // write-one-to-clear bits alone.
                if let Ok(command) = space.read16(address, 0x04) {
                    let _ = space.write32(address, 0x04, u32::from(command | INTX_DISABLE));
                }
            }
            log::error!(
                "irq: the handler of {} on INTx GSI {gsi} (vector {vector:#04x}) panicked; parked, {} its driver will be unbound",
                fault.owner,
                match address {
                    Some(a) => alloc::format!("INTx of {a} disabled,"),
                    None => String::new(),
                }
            );
            dispatch::report_fault(dispatch::HandlerFault {
                cpu,
                vector,
                owner: fault.owner,
                caught,
                line: Some((fault.gsi, fault.id)),
            });
        },
    );
}

/// Command register bit 10: Interrupt Disable (PCI Local Bus 3.0 §6.2.2).
const INTX_DISABLE: u16 = 1 << 10;

impl IntxLine for Attachment {
    fn vector(&self) -> (u32, u8) {
        (self.cpu, self.vector)
    }

    fn gsi(&self) -> u32 {
        self.gsi
    }

    fn install(&self, owner: &'static str, handler: Handler) -> u64 {
        // The line exists while this attachment does; an id of 0 is never handed out.
        x86_64::instructions::interrupts::without_interrupts(|| {
            let id = LINES.install(self.gsi, owner, handler).unwrap_or(0);
            if id != 0 {
                LINE_FUNCTIONS.lock().insert((self.gsi, id), self.address);
            }
            id
        })
    }

    fn uninstall(&self, id: u64) -> bool {
        x86_64::instructions::interrupts::without_interrupts(|| {
            LINE_FUNCTIONS.lock().remove(&(self.gsi, id));
            LINES.uninstall(self.gsi, id, vectors::current_cpu())
        })
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let freed = x86_64::instructions::interrupts::without_interrupts(|| {
            // Masked with the lines locked, so a new line on the GSI is not masked by this
            // teardown; the dispatcher is removed after (it waits for a running line).
            LINES.detach(self.gsi, |_| {
                let _ = ioapic::set_masked(self.gsi, true);
            })
        });
        if let Some(block) = freed {
            dispatch::uninstall_on(block.cpu(), block.first());
            PLATFORM.free(block);
        }
    }
}

/// The GSI and wiring of `function`'s pin, from `_PRT` (or the Interrupt Line register).
fn route_pin(function: &Function) -> Result<(u32, ioapic::Trigger), PlatformError> {
    let scan = crate::pcibus::scan().ok_or(PlatformError::Failed("PCI not enumerated"))?;
    // Swizzle through bridges up to the root bus.
    let (address, pin) =
        pci::intx_lines::pin_at_root(&scan.topology, function.address, function.interrupt_pin)
            .ok_or(PlatformError::Failed("no interrupt pin"))?;
    // The root bus's host bridge, and its _PRT entry for (device, pin).
    let route = crate::platform::aml::report().and_then(|report| {
        let bridge = report
            .host_bridges
            .iter()
            .find(|b| b.segment == address.segment() && b.bus == address.bus())?;
        match &bridge.prt {
            Ok(routes) => routes
                .iter()
                .find(|r| r.device == address.device() && r.pin + 1 == pin)
                .copied(),
            Err(e) => {
                log::warn!("acpi: {}._PRT unusable: {e}", bridge.path);
                None
            }
        }
    });
    match route {
        Some(r) => {
            let trigger = ioapic::Trigger {
                level: r.trigger == ::firmware::aml::Trigger::Level,
                active_low: r.polarity == ::firmware::aml::Polarity::Low,
            };
            // ACPI is the authority (as in Linux). A link firmware had set that disagrees
            // with the Interrupt Line the BIOS recorded is worth a word: one of the two
            // describes other hardware (SeaBIOS's own tables on q35 describe a PIIX4).
            let line = u32::from(function.interrupt_line);
            if r.source == ::firmware::aml::RouteSource::LinkAsFound
                && (1..16).contains(&line)
                && line != r.gsi
            {
                log::warn!(
                    "pci: {} INTx: _PRT link gives GSI {}, the BIOS recorded IRQ {line}; following ACPI",
                    function.address,
                    r.gsi
                );
            }
            Ok((r.gsi, trigger))
        }
        None => {
            let line = function.interrupt_line;
            if line == 0 || line == 0xff {
                return Err(PlatformError::Failed("no _PRT route and no Interrupt Line"));
            }
            log::warn!(
                "pci: {} INTx routed by its Interrupt Line register ({line}): no _PRT route",
                function.address
            );
            Ok((u32::from(line), ioapic::Trigger::PCI))
        }
    }
}

impl Interrupts for KernelIrq {
    fn allocate(&self, count: u8) -> Result<Block, AllocError> {
        let block = vectors::allocate(count).and_then(|b| {
            // MSI destinations are 8 bits (x2APIC IDs above 255 need interrupt remapping):
            // a vector on a CPU a message cannot name is no vector.
            match lapic::apic_id(b.cpu()) {
                Some(apic_id) if apic_id > 0xff => {
                    let cpu = b.cpu();
                    if let Err(e) = vectors::free(b) {
                        log::error!("irq: vectors could not be returned: {e:?}");
                    }
                    Err(AllocError::Unreachable { cpu, apic_id })
                }
                _ => Ok(b),
            }
        });
        match &block {
            Ok(b) => log::debug!(
                "irq: {count} vector(s) allocated: {:#04x}..={:#04x} on CPU {}",
                b.first(),
                b.first().saturating_add(b.count().saturating_sub(1)),
                b.cpu()
            ),
            Err(e) => log::debug!("irq: {count} vector(s) refused: {e:?}"),
        }
        block
    }

    fn free(&self, block: Block) {
        log::debug!(
            "irq: {} vector(s) from {:#04x} on CPU {} freed",
            block.count(),
            block.first(),
            block.cpu()
        );
        if let Err(e) = vectors::free(block) {
            log::error!("irq: vectors could not be returned: {e:?}");
        }
    }

    fn message_for(&self, owner: Address, block: &Block) -> Result<MsiMessage, PlatformError> {
        match crate::iommu::interrupts::msi_message(
            owner,
            block.cpu(),
            block.first(),
            block.count(),
        ) {
            None => Ok(self.message(block.cpu(), block.first())),
            Some(Ok(m)) => {
                log::debug!(
                    "irq: remapped message for {owner}, vectors {:#04x}+{}: address {:#x}",
                    block.first(),
                    block.count(),
                    m.address
                );
                Ok(m)
            }
            Some(Err(e)) => {
                log::error!("irq: {owner}: {e}");
                Err(PlatformError::Failed(
                    "no interrupt remapping entry could be written",
                ))
            }
        }
    }

    fn message(&self, cpu: u32, vector: u8) -> MsiMessage {
        // Fixed delivery, edge, physical destination mode. The destination field is 8 bits:
        // APIC IDs above 255 would need interrupt remapping, so `allocate` gives no vector
        // on such a CPU and the conversion below cannot fail.
        let dest = lapic::apic_id(cpu).unwrap_or_else(|| {
            log::error!("irq: no APIC ID for CPU {cpu}; the message goes to APIC 0");
            0
        });
        let message = pci::x86_msi::x86_message(u8::try_from(dest).unwrap_or(0), vector);
        log::debug!(
            "irq: MSI/MSI-X message for CPU {cpu} (APIC {dest}) vector {vector:#04x}: address {:#x}, data {:#x}",
            message.address,
            message.data
        );
        message
    }

    fn install(
        &self,
        cpu: u32,
        vector: u8,
        owner: &'static str,
        kind: &'static str,
        handler: Handler,
    ) -> Result<(), PlatformError> {
        log::debug!("irq: {owner}: {kind} handler on CPU {cpu} vector {vector:#04x}");
        dispatch::install_on(cpu, vector, owner, kind, handler)
            .map_err(|_| PlatformError::Failed("vector already has a handler"))
    }

    fn uninstall(&self, cpu: u32, vector: u8) -> bool {
        dispatch::uninstall_on(cpu, vector)
    }

    fn is_installed(&self, cpu: u32, vector: u8) -> bool {
        dispatch::is_installed_on(cpu, vector)
    }

    fn attach_intx(&self, function: &Function) -> Result<Box<dyn IntxLine>, PlatformError> {
        let (gsi, trigger) = route_pin(function)?;
        // The line table is also taken in interrupt context (the line's dispatcher): with
        // interrupts on, an interrupt arriving while it is held here would spin on it forever.
        let (cpu, vector) = x86_64::instructions::interrupts::without_interrupts(|| {
            // The first function on the GSI opens the line (with the lines locked).
            LINES.attach(gsi, || {
                let block = vectors::allocate(1).map_err(PlatformError::Vectors)?;
                let (cpu, vector) = (block.cpu(), block.first());
                let dest = lapic::apic_id(cpu).unwrap_or(0);
                let run = Box::new(move || run_line(gsi, cpu, vector));
                let installed = dispatch::install_on(cpu, vector, "INTx line", "INTx", run)
                    .map_err(|_| PlatformError::Failed("INTx vector busy"));
                let routed = installed
                    .and_then(|()| {
                        ioapic::route(gsi, vector, dest, trigger)
                            .map_err(|_| PlatformError::Failed("no IOAPIC serves the GSI"))
                    })
                    .and_then(|()| {
                        ioapic::set_masked(gsi, false)
                            .map_err(|_| PlatformError::Failed("no IOAPIC serves the GSI"))
                    });
                if let Err(e) = routed {
                    // Not running: nothing was routed to it.
                    dispatch::uninstall_on(cpu, vector);
                    self.free(block);
                    return Err(e);
                }
                log::info!(
                    "pci: {} INTx pin {} -> GSI {gsi} -> vector {vector:#04x}",
                    function.address,
                    function.interrupt_pin
                );
                Ok(block)
            })
        })?;
        Ok(Box::new(Attachment {
            gsi,
            cpu,
            vector,
            address: function.address,
        }))
    }

    fn pending_at_release(&self, address: Address, vector: u8) {
        PENDING_AT_RELEASE.fetch_add(1, Ordering::Relaxed);
        log::warn!("irq: {address}: interrupt pending on vector {vector:#04x} at release");
    }
}

impl DeviceMemory for KernelIrq {
    fn map(&self, phys: u64, len: u64) -> Result<Box<dyn RegisterWindow>, PlatformError> {
        log::debug!("pci: device registers at {phys:#x} ({len:#x} bytes) mapped");
        Mmio::map_device(phys, len)
            .map(|m| Box::new(Window(m)) as Box<dyn RegisterWindow>)
            .map_err(|e| match e {
                MapError::KernelOwned { .. } => {
                    PlatformError::Failed("the range overlaps registers the kernel owns")
                }
                MapError::OverlapsRam { .. } => PlatformError::Failed("the range overlaps RAM"),
                _ => PlatformError::Failed("cannot map the device's registers"),
            })
    }

    fn dma(&self, owner: Address, bytes: u64) -> Result<Box<dyn DmaRegion>, PlatformError> {
        crate::iommu::DeviceDma::new(owner, bytes)
            .map(|b| Box::new(b) as Box<dyn DmaRegion>)
            .map_err(|e| {
                log::warn!("pci: {e}");
                PlatformError::Failed("no DMA memory for the device")
            })
    }

    fn parking(&self) -> &Parking {
        &PARKING
    }
}

impl Platform for KernelIrq {
    fn now_us(&self) -> u64 {
        crate::time::micros_since_boot()
    }

    /// Halts the CPU until the next interrupt, the timer armed for `until_us`, when
    /// interrupts are enabled (see `crate::interrupts::idle`); spins otherwise.
    fn idle_until(&self, until_us: u64, done: &mut dyn FnMut() -> bool) -> bool {
        crate::interrupts::idle::idle_until(until_us, done)
    }

    fn release_function(&self, address: Address) {
        log::debug!("pci: {address} released");
        x86_64::instructions::interrupts::without_interrupts(|| {
            CLAIMED.lock().retain(|a| *a != address);
        });
    }

    fn without_interrupts(&self, f: &mut dyn FnMut()) {
        x86_64::instructions::interrupts::without_interrupts(f);
    }
}

/// (GSI, vector, owner) of every handler on a shared INTx line.
pub fn intx_users() -> Vec<(u32, u8, &'static str)> {
    x86_64::instructions::interrupts::without_interrupts(|| LINES.users())
}

/// Nothing answers at `address` any more (its slot was powered off or emptied): the DMA
/// memory parked for its next claim is freed, as no device is left to write there. Returns
/// regions and bytes.
pub fn forget_dma(address: Address) -> (usize, u64) {
    let freed = x86_64::instructions::interrupts::without_interrupts(|| PARKING.release(address));
    // Its regions are unmapped and freed: the domain goes too.
    crate::iommu::forget(address);
    if freed.0 > 0 {
        log::debug!(
            "pci: {address}: {} KiB of parked DMA memory freed",
            freed.1 / 1024
        );
    }
    freed
}

/// The addresses DMA memory is parked under.
pub fn parked_addresses() -> Vec<Address> {
    x86_64::instructions::interrupts::without_interrupts(|| PARKING.addresses())
}

/// Regions and bytes of DMA memory parked for released functions' next claims.
pub fn parked_dma() -> (usize, u64) {
    x86_64::instructions::interrupts::without_interrupts(|| PARKING.total())
}

/// The claimed functions' addresses.
pub fn claimed_addresses() -> Vec<Address> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        CLAIMED.lock().iter().copied().collect()
    })
}

/// A short description of the claimed functions (for the console and tests).
pub fn claimed() -> Vec<String> {
    claimed_addresses()
        .iter()
        .map(|a| alloc::format!("{a}"))
        .collect()
}
