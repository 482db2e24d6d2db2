//! [`IrqVectors`]: a function's interrupt vectors, owned; [`Registration`]: a handler
//! installed on one of them, borrowing them.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::marker::PhantomData;

use spin::Mutex;

use super::{Handler, IntxLine, IrqError, IrqKind, PciFunction, RegisterWindow, intx, msi, msix};
use crate::function::BusMaster;
use crate::vectors::Block;

/// The hardware behind the vectors.
enum Backend {
    Msix {
        cap: crate::Msix,
        table: Box<dyn RegisterWindow>,
        pba: Box<dyn RegisterWindow>,
        /// One single-vector block per granted entry, entry `i` = `blocks[i]`.
        blocks: Vec<Block>,
    },
    Msi {
        cap: crate::Msi,
        block: Block,
    },
    Intx {
        line: Box<dyn IntxLine>,
    },
}

/// What is installed on one granted vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Free,
    /// A live [`Registration`] (or a leaked one) holds it; for INTx, the line's handler id.
    Registered(Option<u64>),
    /// Installed with [`IrqVectors::install`]: lives exactly as long as the vectors.
    Owned(Option<u64>),
}

impl Slot {
    fn id(self) -> Option<u64> {
        match self {
            Slot::Free => None,
            Slot::Registered(id) | Slot::Owned(id) => id,
        }
    }
}

/// A function's interrupt vectors: MSI-X entries, an MSI block, or its INTx line.
///
/// # Invariants
/// - `backend` is `Some` until `drop` tears it down; it owns the vectors (allocator
///   [`Block`]s, or the INTx attachment) and the MSI-X table mappings.
/// - `slots[i]` is `Registered` exactly while a handler for vector `i` is in the platform's
///   dispatch table (or on the INTx line) on behalf of this value.
///
/// Who owns it: the driver that allocated it; it also owns the [`PciFunction`] handle.
/// `Drop` releases everything, in order: handlers still registered through leaked
/// [`Registration`]s are left in place and their vectors are masked and never handed out
/// again; every entry is masked and read back; pending bits are checked and reported;
/// MSI / MSI-X is disabled, INTx left disabled (a function without an owner must not assert a
/// line that other owners' handlers share) and the vectors' [`BusMaster`] guard dropped; the vectors go back to the
/// allocator; then the function handle is released. A leaked `IrqVectors` keeps its vectors,
/// handlers and function forever, and nothing worse.
///
/// The misuses of the Linux API cannot be written. Freeing twice:
///
/// ```compile_fail,E0382
/// # use pci::irq::IrqKinds;
/// # let function = pci::fake::irq::function_with_msix(4);
/// let vectors = function.alloc_irq_vectors(1, 4, IrqKinds::ALL).unwrap();
/// drop(vectors);
/// drop(vectors); // error[E0382]: use of moved value: `vectors`
/// ```
///
/// Releasing the vectors while a handler is installed:
///
/// ```compile_fail,E0505
/// # use pci::irq::IrqKinds;
/// # let function = pci::fake::irq::function_with_msix(4);
/// let vectors = function.alloc_irq_vectors(1, 4, IrqKinds::ALL).unwrap();
/// let registration = vectors.request(0, "demo", || {}).unwrap();
/// drop(vectors); // error[E0505]: cannot move out of `vectors` because it is borrowed
/// drop(registration);
/// ```
///
/// Using a vector after release:
///
/// ```compile_fail,E0505
/// # use pci::irq::IrqKinds;
/// # let function = pci::fake::irq::function_with_msix(4);
/// let vectors = function.alloc_irq_vectors(1, 4, IrqKinds::ALL).unwrap();
/// let first = vectors.vector(0).unwrap();
/// drop(vectors); // error[E0505]: cannot move out of `vectors` because it is borrowed
/// println!("{}", first.number());
/// ```
///
/// The correct order compiles, and releasing is just the end of a scope:
///
/// ```
/// # use pci::irq::{IrqKind, IrqKinds};
/// # let function = pci::fake::irq::function_with_msix(4);
/// let vectors = function.alloc_irq_vectors(1, 4, IrqKinds::ALL).unwrap();
/// assert_eq!(vectors.kind(), IrqKind::Msix);
/// assert_eq!(vectors.len(), 4);
/// {
///     let _registration = vectors.request(0, "demo", || {}).unwrap();
///     // ... the device raises interrupts; the handler runs ...
/// } // handler uninstalled, entry masked
/// drop(vectors); // entries masked, MSI-X disabled, vectors returned
/// ```
pub struct IrqVectors {
    /// `Some` until [`IrqVectors::into_function`] takes it back.
    function: Option<PciFunction>,
    backend: Option<Backend>,
    kind: IrqKind,
    count: usize,
    /// MSI and MSI-X messages are memory writes: bus mastering stays on while they are in use.
    master: Option<BusMaster>,
    slots: Mutex<Vec<Slot>>,
}

/// One granted vector: where it is delivered. Borrows the [`IrqVectors`], so it cannot be
/// used after they are released.
#[derive(Clone, Copy, Debug)]
pub struct Vector<'a> {
    cpu: u32,
    number: u8,
    _vectors: PhantomData<&'a IrqVectors>,
}

impl Vector<'_> {
    /// CPU (allocator index) the vector is delivered to.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }

    /// The x86 vector number.
    pub fn number(&self) -> u8 {
        self.number
    }
}

/// A handler installed on one vector. Borrows the [`IrqVectors`]: they cannot be dropped
/// while it lives. Dropping it uninstalls the handler and masks the vector.
///
/// Leaking it (`mem::forget`) leaves the handler installed; when the vectors are later
/// dropped, that vector stays masked and allocated forever instead of being reused.
#[must_use = "dropping the Registration uninstalls the handler at once"]
pub struct Registration<'a> {
    vectors: &'a IrqVectors,
    index: usize,
}

impl Registration<'_> {
    /// Index of the vector the handler runs on.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.vectors.unregister(self.index);
    }
}

impl core::fmt::Debug for IrqVectors {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IrqVectors")
            .field("function", &self.func().address())
            .field("kind", &self.kind)
            .field("count", &self.count)
            .finish()
    }
}

impl IrqVectors {
    /// Sets up `kind` with between `min` and `max` vectors (called by
    /// [`PciFunction::alloc_irq_vectors`]).
    pub(crate) fn setup(
        function: PciFunction,
        kind: IrqKind,
        min: usize,
        max: usize,
    ) -> Result<IrqVectors, (PciFunction, IrqError)> {
        let built = match kind {
            IrqKind::Msix => setup_msix(&function, min, max),
            IrqKind::Msi => setup_msi(&function, min, max),
            IrqKind::Intx => setup_intx(&function, min),
        };
        match built {
            Ok((backend, count)) => {
                // MSI and MSI-X replace INTx, and are memory writes: they need bus mastering.
                // INTx itself stays disabled until a handler listens.
                function.core().command(intx::INTERRUPT_DISABLE, 0);
                let master = (kind != IrqKind::Intx).then(|| function.bus_master());
                // INVARIANT: the backend owns the vectors; no handler is installed yet.
                Ok(IrqVectors {
                    function: Some(function),
                    backend: Some(backend),
                    kind,
                    count,
                    master,
                    slots: Mutex::new(alloc::vec![Slot::Free; count]),
                })
            }
            Err(e) => Err((function, e)),
        }
    }

    /// The kind granted.
    pub fn kind(&self) -> IrqKind {
        self.kind
    }

    /// How many vectors were granted.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no vector was granted (never: allocation asks for at least one).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The function the vectors belong to.
    pub fn function(&self) -> &PciFunction {
        self.func()
    }

    fn func(&self) -> &PciFunction {
        self.function
            .as_ref()
            .expect("IrqVectors used after into_function")
    }

    /// Releases the vectors exactly as dropping them does, and gives the function handle
    /// back (for a probe that fails after allocating, or a driver that wants another kind).
    pub fn into_function(mut self) -> PciFunction {
        self.teardown();
        self.function.take().expect("function present until here")
    }

    fn backend(&self) -> &Backend {
        self.backend
            .as_ref()
            .expect("IrqVectors used after teardown")
    }

    /// Vector `index` (0-based), if granted.
    pub fn vector(&self, index: usize) -> Option<Vector<'_>> {
        let (cpu, number) = match self.backend() {
            Backend::Msix { blocks, .. } => blocks.get(index).map(|b| (b.cpu(), b.first()))?,
            Backend::Msi { block, .. } => {
                (index < self.count).then(|| (block.cpu(), block.first() + index as u8))?
            }
            Backend::Intx { line } => (index == 0).then(|| line.vector())?,
        };
        Some(Vector {
            cpu,
            number,
            _vectors: PhantomData,
        })
    }

    /// Installs `handler` on vector `index` and unmasks it. The handler is moved into the
    /// platform's dispatch table; the returned [`Registration`] removes it again.
    pub fn request(
        &self,
        index: usize,
        owner: &'static str,
        handler: impl FnMut() + Send + 'static,
    ) -> Result<Registration<'_>, IrqError> {
        self.register(index, owner, Box::new(handler), false)?;
        Ok(Registration {
            vectors: self,
            index,
        })
    }

    /// Installs `handler` on vector `index` for as long as these vectors live: the form a
    /// driver uses when the vectors sit in its own state (a [`Registration`] there would
    /// borrow a sibling field). Dropping the `IrqVectors` uninstalls it first, so the handler
    /// still cannot outlive its vector.
    pub fn install(
        &mut self,
        index: usize,
        owner: &'static str,
        handler: impl FnMut() + Send + 'static,
    ) -> Result<(), IrqError> {
        self.register(index, owner, Box::new(handler), true)
    }

    fn register(
        &self,
        index: usize,
        owner: &'static str,
        handler: Handler,
        owned: bool,
    ) -> Result<(), IrqError> {
        let slot = |id| {
            if owned {
                Slot::Owned(id)
            } else {
                Slot::Registered(id)
            }
        };
        let vector = self.vector(index).ok_or(IrqError::NoSuchVector(index))?;
        let mut slots = self.slots.lock();
        if slots[index] != Slot::Free {
            return Err(IrqError::Busy(index));
        }
        let platform = self.func().platform();
        match self.backend() {
            Backend::Msix { table, .. } => {
                platform.install(
                    vector.cpu,
                    vector.number,
                    owner,
                    IrqKind::Msix.name(),
                    handler,
                )?;
                msix::set_masked(table.as_ref(), index, false);
                slots[index] = slot(None);
            }
            Backend::Msi { cap, .. } => {
                platform.install(
                    vector.cpu,
                    vector.number,
                    owner,
                    IrqKind::Msi.name(),
                    handler,
                )?;
                slots[index] = slot(None);
                self.msi_update(cap, &slots);
            }
            Backend::Intx { line } => {
                let id = line.install(owner, handler);
                slots[index] = slot(Some(id));
                self.func().core().command(0, intx::INTERRUPT_DISABLE);
            }
        }
        Ok(())
    }

    /// MSI: mask exactly the vectors without a handler (per-vector masking), or keep the
    /// whole capability disabled until one is registered (without it).
    fn msi_update(&self, cap: &crate::Msi, slots: &[Slot]) {
        let control = msi::control(cap);
        match msi::mask(cap) {
            Some(mask_at) => {
                let mut mask = self.func().config_read32(mask_at);
                for (i, slot) in slots.iter().enumerate() {
                    match slot {
                        Slot::Free => mask |= 1 << i,
                        Slot::Registered(_) | Slot::Owned(_) => mask &= !(1 << i),
                    }
                }
                self.func().core().write32(mask_at, mask);
            }
            None => {
                let any = slots.iter().any(|s| *s != Slot::Free);
                let value = self.func().config_read16(control);
                let value = if any {
                    value | msi::ENABLE
                } else {
                    value & !msi::ENABLE
                };
                self.func().core().write16(control, value);
            }
        }
    }

    fn unregister(&self, index: usize) {
        let mut slots = self.slots.lock();
        if slots[index] == Slot::Free {
            return;
        }
        let id = slots[index].id();
        let platform = self.func().platform();
        match self.backend() {
            Backend::Msix { table, blocks, .. } => {
                msix::set_masked(table.as_ref(), index, true);
                let _ = table.read32(index as u64 * msix::ENTRY_SIZE + 12);
                platform.uninstall(blocks[index].cpu(), blocks[index].first());
                slots[index] = Slot::Free;
            }
            Backend::Msi { cap, block } => {
                slots[index] = Slot::Free;
                self.msi_update(cap, &slots);
                platform.uninstall(block.cpu(), block.first() + index as u8);
            }
            Backend::Intx { line } => {
                self.func().core().command(intx::INTERRUPT_DISABLE, 0);
                if let Some(id) = id {
                    line.uninstall(id);
                }
                slots[index] = Slot::Free;
            }
        }
    }
}

impl Drop for IrqVectors {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl IrqVectors {
    /// The one release path (see the type's documentation), used by `Drop` and
    /// [`IrqVectors::into_function`]. Runs once: the backend is taken.
    fn teardown(&mut self) {
        if self.function.is_none() {
            return;
        }
        // Handlers installed for the vectors' lifetime go first, the regular way.
        let owned: Vec<usize> = (0..self.count)
            .filter(|&i| matches!(self.slots.lock()[i], Slot::Owned(_)))
            .collect();
        for i in owned {
            self.unregister(i);
        }
        let Some(backend) = self.backend.take() else {
            return;
        };
        let platform = self.func().platform();
        let address = self.func().address();
        let slots = core::mem::take(&mut *self.slots.lock());
        // A slot still registered here means its Registration was leaked (a live one would
        // borrow `self`): the handler stays in the dispatch table, so its vector must never be
        // reused. It is masked below and kept out of the allocator.
        let leaked = |i: usize| matches!(slots.get(i), Some(Slot::Registered(_)));
        match backend {
            Backend::Msix {
                cap,
                table,
                pba,
                blocks,
            } => {
                let control_at = msix::control_offset(&cap);
                let control = self.func().config_read16(control_at);
                self.func()
                    .core()
                    .write16(control_at, control | msix::FUNCTION_MASK);
                for i in 0..usize::from(cap.table_size) {
                    msix::set_masked(table.as_ref(), i, true);
                }
                // Reading back flushes the posted mask writes before the pending check.
                let _ = table.read32(msix::ENTRY_SIZE * u64::from(cap.table_size) - 4);
                for (i, block) in blocks.iter().enumerate() {
                    if msix::is_pending(pba.as_ref(), i) {
                        platform.pending_at_release(address, block.first());
                    }
                }
                self.func()
                    .core()
                    .write16(control_at, control & !(msix::ENABLE | msix::FUNCTION_MASK));
                for (i, block) in blocks.into_iter().enumerate() {
                    // A `Block` that is not freed keeps its vectors used: leaked on purpose.
                    if leaked(i) {
                        log::warn!(
                            "{address}: MSI-X vector {:#x} kept: its registration was leaked",
                            block.first()
                        );
                    } else {
                        platform.free(block);
                    }
                }
            }
            Backend::Msi { cap, block } => {
                let control_at = msi::control(&cap);
                if let Some(mask_at) = msi::mask(&cap) {
                    self.func().core().write32(mask_at, u32::MAX);
                    let _ = self.func().config_read32(mask_at);
                    if let Some(pending_at) = msi::pending(&cap) {
                        let pending = self.func().config_read32(pending_at);
                        for i in 0..self.count {
                            if pending & (1 << i) != 0 {
                                platform.pending_at_release(address, block.first() + i as u8);
                            }
                        }
                    }
                }
                let control = self.func().config_read16(control_at);
                self.func().core().write16(
                    control_at,
                    control & !msi::ENABLE & !(0b111 << msi::MME_SHIFT),
                );
                let _ = self.func().config_read16(control_at);
                if (0..self.count).any(leaked) {
                    log::warn!(
                        "{address}: MSI vectors {:#x}+{} kept: a registration was leaked",
                        block.first(),
                        self.count
                    );
                } else {
                    platform.free(block);
                }
            }
            Backend::Intx { line } => {
                if leaked(0) {
                    log::warn!(
                        "{address}: INTx handler kept on GSI {}: its registration was leaked",
                        line.gsi()
                    );
                    core::mem::forget(line);
                } else {
                    drop(line);
                }
            }
        }
        // INTx stays disabled: the function has no handler now, and an INTx line is shared;
        // re-arming it here would let this device assert a line other owners still listen on
        // (the next owner enables INTx when it installs a handler).
        self.func().core().command(intx::INTERRUPT_DISABLE, 0);
        // Bus mastering ends with the messages (unless the driver holds a guard of its own).
        drop(self.master.take());
    }
}

/// Allocates one vector per entry and programs the table, every entry masked.
fn setup_msix(
    function: &PciFunction,
    min: usize,
    max: usize,
) -> Result<(Backend, usize), IrqError> {
    let info = function.info();
    let cap = info.msix.ok_or(IrqError::NotSupported(IrqKind::Msix))?;
    let supported = usize::from(cap.table_size);
    if supported < min {
        return Err(IrqError::TooFew {
            kind: IrqKind::Msix,
            supported,
            min,
        });
    }
    let table_len = u64::from(cap.table_size) * msix::ENTRY_SIZE;
    let table_phys = msix::locate(info, cap.table_bir, cap.table_offset, table_len)?;
    let pba_len = msix::pba_len(cap.table_size);
    let pba_phys = msix::locate(info, cap.pba_bir, cap.pba_offset, pba_len)?;
    let platform = function.platform();
    let mut blocks = Vec::new();
    for _ in 0..supported.min(max) {
        match platform.allocate(1) {
            Ok(b) => blocks.push(b),
            Err(e) if blocks.len() < min => {
                blocks.into_iter().for_each(|b| platform.free(b));
                return Err(IrqError::Vectors(e));
            }
            Err(_) => break,
        }
    }
    let mapped = platform
        .map(table_phys, table_len)
        .and_then(|t| platform.map(pba_phys, pba_len).map(|p| (t, p)))
        .map_err(IrqError::from);
    let (table, pba) = match mapped {
        Ok(m) => m,
        Err(e) => {
            blocks.into_iter().for_each(|b| platform.free(b));
            return Err(e);
        }
    };
    // Function mask on while entries are written (PCI 3.0 §6.8.2.3), every entry masked.
    let control_at = msix::control_offset(&cap);
    let control = function.config_read16(control_at);
    function
        .core()
        .write16(control_at, control | msix::ENABLE | msix::FUNCTION_MASK);
    for i in 0..usize::from(cap.table_size) {
        msix::set_masked(table.as_ref(), i, true);
    }
    let mut messages = Vec::with_capacity(blocks.len());
    for block in &blocks {
        match platform.message_for(function.address(), block) {
            Ok(m) => messages.push(m),
            Err(e) => {
                // Back to the Message Control the function had, every entry still masked.
                function.core().write16(control_at, control);
                blocks.into_iter().for_each(|b| platform.free(b));
                return Err(e.into());
            }
        }
    }
    for (i, message) in messages.into_iter().enumerate() {
        msix::write_entry(table.as_ref(), i, message);
    }
    let _ = table.read32(12);
    function
        .core()
        .write16(control_at, (control | msix::ENABLE) & !msix::FUNCTION_MASK);
    let count = blocks.len();
    Ok((
        Backend::Msix {
            cap,
            table,
            pba,
            blocks,
        },
        count,
    ))
}

/// Allocates an aligned block and programs the capability (masked where it can be).
fn setup_msi(function: &PciFunction, min: usize, max: usize) -> Result<(Backend, usize), IrqError> {
    let cap = function
        .info()
        .msi
        .ok_or(IrqError::NotSupported(IrqKind::Msi))?;
    let supported = usize::from(cap.vectors);
    let limit = supported.min(max);
    // Multi-message MSI grants a power of two (PCI 3.0 §6.8.1.3).
    let count = 1usize << (usize::BITS - 1 - limit.leading_zeros());
    if count < min {
        return Err(IrqError::TooFew {
            kind: IrqKind::Msi,
            supported,
            min,
        });
    }
    let platform = function.platform();
    let block = platform.allocate(count as u8).map_err(IrqError::Vectors)?;
    let message = match platform.message_for(function.address(), &block) {
        Ok(m) => m,
        Err(e) => {
            platform.free(block);
            return Err(e.into());
        }
    };
    let control_at = msi::control(&cap);
    let control = function.config_read16(control_at) & !msi::ENABLE;
    function.core().write16(control_at, control);
    if let Some(mask_at) = msi::mask(&cap) {
        function.core().write32(mask_at, u32::MAX);
    }
    function
        .core()
        .write32(msi::address_low(&cap), message.address as u32);
    if let Some(high) = msi::address_high(&cap) {
        function
            .core()
            .write32(high, (message.address >> 32) as u32);
    }
    function
        .core()
        .write16(msi::data(&cap), message.data as u16);
    let mme = (count.trailing_zeros() as u16) << msi::MME_SHIFT;
    let mut control = (control & !(0b111 << msi::MME_SHIFT)) | mme;
    if cap.per_vector_masking {
        // Enabled now, every vector masked until a handler is registered.
        control |= msi::ENABLE;
    }
    function.core().write16(control_at, control);
    Ok((Backend::Msi { cap, block }, count))
}

/// Attaches the INTx pin to its line (one vector, possibly shared).
fn setup_intx(function: &PciFunction, min: usize) -> Result<(Backend, usize), IrqError> {
    if function.info().interrupt_pin == 0 {
        return Err(IrqError::NotSupported(IrqKind::Intx));
    }
    if min > 1 {
        return Err(IrqError::TooFew {
            kind: IrqKind::Intx,
            supported: 1,
            min,
        });
    }
    let line = function.platform().attach_intx(function.info())?;
    Ok((Backend::Intx { line }, 1))
}
