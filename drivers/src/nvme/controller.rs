//! NVMe controller bring-up (§7.6.1): the controller guard and its shutdown, CAP checks,
//! reset, interrupts, admin queue, enable, Identify and the creation of the I/O queues.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use pci::function::BusMaster;
use pci::irq::{IrqKind, IrqKinds, IrqVectors, PciFunction};
use pci::window::BarWindow;

use super::commands::{
    ADMIN_CREATE_IO_CQ, ADMIN_CREATE_IO_SQ, ADMIN_IDENTIFY, ADMIN_SET_FEATURES,
    CNS_ACTIVE_NAMESPACES, CNS_CONTROLLER, CNS_NAMESPACE, Command, Data, FEATURE_NUMBER_OF_QUEUES,
};
use super::identify::{parse_controller, parse_namespace, parse_namespace_list};
use super::io::Namespace;
use super::queues::{Queue, admin_command};
use super::registers::*;
use super::{
    ADMIN_ENTRIES, IO_ENTRIES, Identity, MAX_COMMAND_BYTES, MAX_IO_QUEUES, Nvme, NvmeError, OWNERS,
    PAGE,
};
use crate::ProbeError;
use crate::fault::{self, Point};

/// Namespaces a controller is asked about at most: one active-namespace list page.
const MAX_NAMESPACES: usize = 1024;

/// The inner guard: the controller's registers and interrupt vectors. While it lives the
/// controller may be enabled; its `Drop` stops the controller (shutdown notification, then
/// CC.EN = 0 and CSTS.RDY = 0) before its vectors are released and before the queues that
/// [`Nvme`] declares after it are freed.
pub(super) struct Controller {
    /// `Some` until [`Controller::into_function`]. Declared before `regs`: the vectors (and
    /// the INTx handler's clone of the window) go before the window unmaps.
    irq: Option<IrqVectors>,
    /// Bus mastering for the queues' DMA, on while the controller may run; declared after
    /// `irq` and dropped last of the two, so the queue memory the driver drops while a
    /// stopped controller still could master the bus waits until it cannot.
    master: Option<BusMaster>,
    pub(super) regs: Arc<BarWindow>,
    /// Doorbell stride, bytes.
    stride: u64,
    /// CAP.TO, microseconds: how long enabling or disabling may take.
    timeout_us: u64,
}

impl Controller {
    pub(super) fn irq(&self) -> &IrqVectors {
        self.irq
            .as_ref()
            .expect("vectors present until into_function")
    }

    pub(super) fn function(&self) -> &PciFunction {
        self.irq().function()
    }

    pub(super) fn master(&self) -> &BusMaster {
        self.master.as_ref().expect("present until into_function")
    }

    pub(super) fn sq_doorbell(&self, queue: u16) -> u64 {
        DOORBELLS + 2 * u64::from(queue) * self.stride
    }

    pub(super) fn cq_doorbell(&self, queue: u16) -> u64 {
        DOORBELLS + (2 * u64::from(queue) + 1) * self.stride
    }

    /// INTx: the handler masks with INTMS; this unmasks (§7.5.1). MSI-X: nothing.
    pub(super) fn unmask(&self) {
        if self.irq().kind() == IrqKind::Intx {
            self.regs.write32(INTMC, 1);
        }
    }

    /// Stops the controller: normal shutdown notification (§7.6.2), then CC.EN = 0 and a
    /// wait for CSTS.RDY = 0. Whether it stopped in time.
    fn disable(&self) -> bool {
        let cc = self.regs.read32(CC);
        let function = self.function();
        if cc & CC_EN != 0 && self.regs.read32(CSTS) & CSTS_RDY != 0 {
            self.regs.write32(CC, cc | CC_SHN_NORMAL);
            function.wait_until(self.timeout_us, || {
                self.regs.read32(CSTS) & CSTS_SHST == CSTS_SHST_COMPLETE
            });
        }
        self.regs.write32(CC, 0);
        function.wait_until(self.timeout_us, || self.regs.read32(CSTS) & CSTS_RDY == 0)
    }

    /// Stops the controller for good, for queues that broke with commands still naming
    /// memory that is the caller's again once the failed call returns (a read into the
    /// caller's DMA memory): CC.EN = 0 aborts every outstanding command (NVMe Base 2.0
    /// §3.5.2, Controller Reset). Returns whether the controller reported CSTS.RDY = 0 within
    /// CAP.TO. Bus mastering stays on (the vectors' MSI writes need it); a controller that
    /// ignores its reset is beyond what software can stop without an IOMMU
    /// (docs/irq-ownership.md section 4.7).
    pub(super) fn stop(&self) -> bool {
        self.disable()
    }

    /// Stops the controller, releases the vectors exactly as dropping does, and gives the
    /// function back (for a probe that fails).
    fn into_function(mut self) -> PciFunction {
        self.disable();
        let irq = self.irq.take().expect("vectors present until here");
        let function = irq.into_function();
        drop(self.master.take());
        function
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // Step 1 of the release order: the device stops using memory. If it does not report
        // RDY = 0 in time, dropping `irq` and `master` right after still turns Bus Master
        // Enable off.
        if self.irq.is_some() {
            self.disable();
        }
    }
}

/// Checks CAP (§3.1.1): the NVM command set, 4 KiB pages. Returns the doorbell stride in
/// bytes and CAP.TO in microseconds.
fn parse_cap(cap: u64) -> Result<(u64, u64), String> {
    if cap == u64::MAX {
        return Err("registers read all ones (memory decoding off?)".into());
    }
    if cap & CAP_CSS_NVM == 0 {
        return Err(format!("CAP {cap:#x}: no NVM command set (CAP.CSS)"));
    }
    let mpsmin = (cap >> 48) & 0xf;
    if mpsmin != 0 {
        return Err(format!(
            "CAP.MPSMIN allows pages of {} KiB and up, not 4 KiB",
            4u64 << mpsmin
        ));
    }
    let stride = 4u64 << ((cap >> 32) & 0xf);
    let timeout_us = ((cap >> 24) & 0xff).max(1) * 500_000;
    Ok((stride, timeout_us))
}

impl Nvme {
    /// Brings the controller at `function` up (see the module documentation); on failure the
    /// function comes back with the reason.
    pub fn new(function: PciFunction) -> Result<Nvme, (PciFunction, ProbeError)> {
        Nvme::new_with(function, IrqKinds::MSIX | IrqKinds::INTX)
    }

    /// [`Nvme::new`] with the interrupt kinds it may use: MSI-X when `kinds` has it and the
    /// function grants at least one entry, else the INTx pin when `kinds` has it (tests force
    /// INTx with `IrqKinds::INTX` on a controller that has MSI-X).
    pub fn new_with(
        function: PciFunction,
        kinds: IrqKinds,
    ) -> Result<Nvme, (PciFunction, ProbeError)> {
        macro_rules! fail {
            ($function:expr, $($arg:tt)*) => {
                return Err(($function, ProbeError(format!($($arg)*))))
            };
        }
        let address = function.address();
        // 1. CAP through a window on the registers only, to learn the doorbell stride.
        let (cap, stride, timeout_us) = match function.map_bar(0, 0, DOORBELLS) {
            Ok(regs) => {
                let cap = regs.read64(CAP);
                match parse_cap(cap) {
                    Ok((stride, timeout)) => (cap, stride, timeout),
                    Err(e) => fail!(function, "{e}"),
                }
            }
            Err(e) => fail!(function, "BAR 0: {e}"),
        };
        // 2. Registers and the doorbells of 1 + MAX_IO_QUEUES queue pairs; never the MSI-X
        //    table (map_bar refuses it).
        let len = DOORBELLS + 2 * (1 + MAX_IO_QUEUES as u64) * stride;
        let regs = match function.map_bar(0, 0, len) {
            Ok(r) => Arc::new(r),
            Err(e) => fail!(function, "BAR 0 registers and doorbells [0, {len:#x}): {e}"),
        };
        // 3. Reset (§7.6.1): whatever firmware left running stops before bus mastering is
        //    enabled (the PCI layer turned it off when the function was claimed).
        regs.write32(CC, 0);
        if !function.wait_until(timeout_us, || regs.read32(CSTS) & CSTS_RDY == 0) {
            fail!(function, "controller did not reset (CSTS.RDY stays 1)");
        }
        // 4. Interrupts: MSI-X, one vector for the admin queue and one per I/O queue as far
        //    as the table goes (a one-entry table: both queues on entry 0); else the INTx pin
        //    (one vector, one I/O queue). The function moves into the vectors.
        let irq = 'granted: {
            let mut function = function;
            let mut why = Vec::new();
            if kinds.contains(IrqKinds::MSIX) {
                match function.alloc_irq_vectors(1, 1 + MAX_IO_QUEUES, IrqKinds::MSIX) {
                    Ok(v) => break 'granted v,
                    Err((f, e)) => {
                        function = f;
                        why.push(format!("MSI-X: {e}"));
                    }
                }
            }
            if kinds.contains(IrqKinds::INTX) {
                match function.alloc_irq_vectors(1, 1, IrqKinds::INTX) {
                    Ok(v) => break 'granted v,
                    Err((f, e)) => {
                        function = f;
                        why.push(format!("INTx: {e}"));
                    }
                }
            }
            if why.is_empty() {
                why.push(format!("none of {kinds:?} is MSI-X or INTx"));
            }
            fail!(function, "interrupts: {}", why.join("; "))
        };
        let counters: Vec<Arc<AtomicU64>> = (0..irq.len())
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        // The queues' DMA needs bus mastering whichever interrupt kind was granted.
        let master = irq.function().bus_master();
        let mut controller = Controller {
            irq: Some(irq),
            master: Some(master),
            regs,
            stride,
            timeout_us,
        };
        // 5. Handlers, living as long as the vectors. MSI-X: count. INTx: mask the
        //    controller's interrupt (the line is level-triggered and possibly shared), count.
        let intx = controller.irq().kind() == IrqKind::Intx;
        for (i, count) in counters.iter().enumerate() {
            let (count, regs) = (count.clone(), controller.regs.clone());
            let irq = controller.irq.as_mut().expect("allocated above");
            let installed = if intx {
                irq.install(i, OWNERS[i], move || {
                    fault::point(address, Point::Handler);
                    regs.write32(INTMS, 1);
                    count.fetch_add(1, Ordering::Release);
                })
            } else {
                irq.install(i, OWNERS[i], move || {
                    fault::point(address, Point::Handler);
                    count.fetch_add(1, Ordering::Release);
                })
            };
            if let Err(e) = installed {
                fail!(controller.into_function(), "handler {i}: {e}");
            }
        }
        // 6. The admin queue, on vector 0.
        let admin = match Queue::new(
            controller.master(),
            0,
            ADMIN_ENTRIES,
            0,
            counters[0].clone(),
        ) {
            Ok(q) => q,
            Err(e) => fail!(controller.into_function(), "{e}"),
        };
        let mut nvme = Nvme {
            registration: None,
            controller,
            admin,
            io: Vec::new(),
            staging: Vec::new(),
            lists: Vec::new(),
            identity: Identity::default(),
            namespaces: Vec::new(),
            chunk: MAX_COMMAND_BYTES,
            broken: None,
            next_queue: 0,
        };
        match nvme.start(cap, &counters) {
            Ok(()) => {
                fault::point(address, Point::Probe);
                let disks = crate::block::BlockDevices::disks(&nvme);
                nvme.registration = Some(crate::block::DISKS.register("nvme", address, &disks));
                Ok(nvme)
            }
            Err(e) => Err((nvme.into_function(), ProbeError(e))),
        }
    }

    /// Releases everything in the same order as dropping, giving the function back.
    fn into_function(self) -> PciFunction {
        let Nvme {
            controller,
            admin,
            io,
            staging,
            lists,
            ..
        } = self;
        let function = controller.into_function();
        drop(io);
        drop(admin);
        drop(staging);
        drop(lists);
        function
    }

    /// Enables the controller and creates the I/O queues (§7.6.1 from step 3 on).
    fn start(&mut self, cap: u64, counters: &[Arc<AtomicU64>]) -> Result<(), String> {
        let c = &self.controller;
        let regs = &c.regs;
        let mqes = (cap & 0xffff) as u16; // 0's based
        let admin_entries = ADMIN_ENTRIES.min(mqes.saturating_add(1));
        if admin_entries < 2 {
            return Err(format!("CAP.MQES {mqes} allows no queue"));
        }
        self.admin.entries = admin_entries;
        let aqs = u32::from(admin_entries - 1);
        regs.write32(AQA, aqs << 16 | aqs);
        regs.write_bus_address(ASQ, self.admin.sq.bus_address());
        regs.write_bus_address(ACQ, self.admin.cq.bus_address());
        regs.write32(CC, CC_IOSQES | CC_IOCQES | CC_EN);
        let ready = c.function().wait_until(c.timeout_us, || {
            regs.read32(CSTS) & (CSTS_RDY | CSTS_CFS) != 0
        });
        let csts = regs.read32(CSTS);
        if !ready || csts & CSTS_CFS != 0 {
            return Err(format!("controller did not become ready (CSTS {csts:#x})"));
        }
        let vs = regs.read32(VS);

        // Identify Controller.
        let data = self.identify(CNS_CONTROLLER, 0)?;
        let ctrl = parse_controller(&data, cap)?;
        self.chunk = ctrl
            .max_transfer
            .map_or(MAX_COMMAND_BYTES, |m| m.min(MAX_COMMAND_BYTES));
        // Every active namespace, each with its own LBA format.
        let mut skipped = Vec::new();
        for nsid in self.active_namespaces(ctrl.namespaces)? {
            let data = self.identify(CNS_NAMESPACE, nsid)?;
            match parse_namespace(&data) {
                Ok((lbas, lba_size)) if u64::from(lba_size) <= self.chunk => {
                    self.namespaces.push(Namespace {
                        nsid,
                        lbas,
                        lba_size,
                    })
                }
                Ok((_, lba_size)) => skipped.push(format!(
                    "namespace {nsid}: blocks of {lba_size} bytes exceed what one command may move ({} bytes)",
                    self.chunk
                )),
                // Tried from the 1..=NN fallback: not every NSID is in use.
                Err(e) if e.starts_with("not active") => {}
                Err(e) => skipped.push(format!("namespace {nsid}: {e}")),
            }
        }
        let Some(first) = self.namespaces.first().copied() else {
            return Err(if skipped.is_empty() {
                format!(
                    "no active namespace (the controller may have up to {})",
                    ctrl.namespaces
                )
            } else {
                skipped.join("; ")
            });
        };
        self.identity = Identity {
            model: ctrl.model,
            serial: ctrl.serial,
            firmware: ctrl.firmware,
            version: ((vs >> 16) as u16, (vs >> 8) as u8, vs as u8),
            max_transfer: ctrl.max_transfer,
            namespaces: ctrl.namespaces,
            lbas: first.lbas,
            lba_size: first.lba_size,
        };

        // Number of Queues first (§5.21.1.7): NSQR and NCQR, 0's based; the answer says how
        // many were allocated.
        let wanted = (counters.len() - 1).clamp(1, MAX_IO_QUEUES);
        let n = (wanted - 1) as u32;
        let granted = self
            .admin_command(Command {
                opcode: ADMIN_SET_FEATURES,
                cdw: [FEATURE_NUMBER_OF_QUEUES, n << 16 | n, 0, 0, 0, 0],
                ..Command::default()
            })
            .map_err(|e| format!("Set Features (Number of Queues): {e}"))?;
        let (nsqa, ncqa) = (
            (granted & 0xffff) as usize + 1,
            (granted >> 16) as usize + 1,
        );
        let queues = wanted.min(nsqa).min(ncqa);
        let entries = IO_ENTRIES.min(mqes.saturating_add(1));

        // The queue pairs: completion queue first, with its interrupt vector. Each queue's
        // memory belongs to `self.io` before the controller learns its address, so that a
        // failure here still frees it only after the controller has stopped.
        // Queue `qid` on entry `qid`; with fewer entries (one MSI-X entry, or INTx) on the
        // last one there is, which is entry 0 there.
        for qid in 1..=queues as u16 {
            let vector = usize::from(qid).min(counters.len() - 1);
            self.io.push(Queue::new(
                self.controller.master(),
                qid,
                entries,
                vector,
                counters[vector].clone(),
            )?);
            let q = &self.io[self.io.len() - 1];
            let size = u32::from(entries - 1) << 16 | u32::from(qid);
            let mut admin = |command, ring| {
                admin_command(
                    &self.controller,
                    &mut self.admin,
                    &mut self.broken,
                    command,
                    Some(ring),
                )
            };
            admin(
                Command {
                    opcode: ADMIN_CREATE_IO_CQ,
                    data: Data::Ring,
                    // IV in 31:16, IEN (bit 1), PC (bit 0): physically contiguous.
                    cdw: [size, (vector as u32) << 16 | 1 << 1 | 1, 0, 0, 0, 0],
                    ..Command::default()
                },
                q.cq.bus_address(),
            )
            .map_err(|e| format!("Create I/O Completion Queue {qid}: {e}"))?;
            admin(
                Command {
                    opcode: ADMIN_CREATE_IO_SQ,
                    data: Data::Ring,
                    // CQID in 31:16, QPRIO 00b, PC.
                    cdw: [size, u32::from(qid) << 16 | 1, 0, 0, 0, 0],
                    ..Command::default()
                },
                q.sq.bus_address(),
            )
            .map_err(|e| format!("Create I/O Submission Queue {qid}: {e}"))?;
        }
        // The first staging slot: what a self test needs, taken at bind rather than by the
        // first read.
        self.grow_staging(1).map_err(|e| format!("{e}"))?;
        Ok(())
    }

    /// The active NSIDs (Identify CNS 02h, §5.15.4: a list of up to 1024, ascending, ended by
    /// 0; asked again from the last one while the page is full). A controller older than 1.1
    /// that refuses CNS 02h gets every NSID from 1 to NN tried, and inactive ones (NSZE 0)
    /// skipped. At most [`MAX_NAMESPACES`] are taken (one list page), whatever NN says: a
    /// device answering full pages forever would otherwise cost millions of commands.
    fn active_namespaces(&mut self, nn: u32) -> Result<Vec<u32>, String> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let data = match self.identify(CNS_ACTIVE_NAMESPACES, after) {
                Ok(d) => d,
                // A status answer (not a timeout, which breaks the queue): CNS 02h unknown.
                Err(_) if after == 0 && self.broken.is_none() => {
                    return Ok((1..=nn.min(MAX_NAMESPACES as u32)).collect());
                }
                Err(e) => return Err(e),
            };
            let list = parse_namespace_list(&data, after)?;
            if let Some(bad) = list.iter().find(|&&n| n > nn) {
                return Err(format!("active namespace list: NSID {bad} above NN {nn}"));
            }
            let full = list.len() == 1024;
            let last = list.last().copied();
            out.extend(list);
            if out.len() >= MAX_NAMESPACES {
                out.truncate(MAX_NAMESPACES);
                return Ok(out);
            }
            match last {
                Some(l) if full && l < nn => after = l,
                _ => return Ok(out),
            }
        }
    }

    /// Identify with `cns` for `nsid`; the 4 KiB answer.
    fn identify(&mut self, cns: u32, nsid: u32) -> Result<Vec<u8>, String> {
        self.admin_command(Command {
            opcode: ADMIN_IDENTIFY,
            nsid,
            data: Data::AdminPage,
            cdw: [cns, 0, 0, 0, 0, 0],
        })
        .map_err(|e| format!("Identify (CNS {cns}, NSID {nsid}): {e}"))?;
        let mut out = vec![0u8; PAGE as usize];
        let page = self
            .admin
            .data
            .as_ref()
            .expect("the admin queue has its page");
        page.read_bytes(0, &mut out);
        Ok(out)
    }

    /// Runs one admin command; its completion dword 0.
    fn admin_command(&mut self, command: Command) -> Result<u32, NvmeError> {
        admin_command(
            &self.controller,
            &mut self.admin,
            &mut self.broken,
            command,
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_checks() {
        // QEMU: MQES 0x7ff, CQR, TO 15 (7.5 s), DSTRD 0, CSS NVM, MPSMIN 0, MPSMAX 4.
        let cap: u64 = 0x7ff | 1 << 16 | 0xf << 24 | CAP_CSS_NVM | 4 << 52;
        assert_eq!(parse_cap(cap), Ok((4, 7_500_000)));
        assert_eq!(parse_cap(cap | 2 << 32), Ok((16, 7_500_000)));
        assert!(parse_cap(cap & !CAP_CSS_NVM).unwrap_err().contains("NVM"));
        assert!(parse_cap(cap | 1 << 48).unwrap_err().contains("MPSMIN"));
        assert!(parse_cap(u64::MAX).unwrap_err().contains("all ones"));
    }
}
