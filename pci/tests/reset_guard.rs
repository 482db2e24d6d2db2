//! A function reset started by a driver's configuration write: Initiate FLR in the PCI Express
//! Device Control register, Initiate FLR in the Advanced Features capability, or a trip to
//! D3hot and back (PCI PM 1.2 §5.4.1: without No_Soft_Reset the function is reset). A reset
//! clears the Command register, the BARs and the MSI/MSI-X enables, so it would undo, in one
//! write, what `IrqVectors` (Interrupt Disable, MSI-X enable), the `BusMaster` guard and
//! enumeration (BARs) each own. The device model below resets the way hardware does; the
//! tests check that a driver cannot start it, and that the rest of those registers stays
//! writable.

use pci::fake::FakeFunction;
use pci::fake::irq::{FakePlatform, device, handle_with};
use pci::function::{ConfigWriteError, Register};
use pci::irq::{ConfigPort, IrqKinds};
use pci::{Address, fake::FakeConfigSpace};
use spin::Mutex;

/// PCI Express capability at 0xa0 (endpoint): Device Control at 0xa8.
const PCIE: u16 = 0xa0;
const DEVICE_CONTROL: u16 = PCIE + 8;
/// Power Management capability at 0x90: PMCSR at 0x94.
const PM: u16 = 0x90;
const PMCSR: u16 = PM + 4;
/// Advanced Features capability at 0xe0: AF Control at 0xe4.
const AF: u16 = 0xe0;
const AF_CONTROL: u16 = AF + 4;

/// [`device`] with the three capabilities that can reset it.
fn resettable() -> FakeFunction {
    device(4)
        // PMC: version 3; PMCSR: D0, No_Soft_Reset clear.
        .with_capability(PM as u8, 0x01, &[0x03, 0x00, 0x00, 0x00, 0x00, 0x00])
        .with_writable(usize::from(PMCSR), 0x0000_8103)
        .with_pcie(PCIE as u8)
        // Device Capabilities: Function Level Reset capable (bit 28).
        .with32(usize::from(PCIE) + 4, 1 << 28)
        .with_writable(usize::from(DEVICE_CONTROL), 0x0000_ffff)
        // AF: length 6, capabilities TP and FLR.
        .with_capability(AF as u8, 0x13, &[0x06, 0x03, 0x00, 0x00])
        .with_writable(usize::from(AF_CONTROL), 0x0000_0001)
}

/// The device model: configuration space that resets the function when told to.
struct Resettable(&'static Mutex<FakeConfigSpace>);

impl Resettable {
    /// What a function reset does to the registers the stack owns.
    fn reset(&self, address: Address) {
        let space = self.0;
        space.write32(address, 0x04, 0); // Command: decode, bus master, INTx disable off
        space.write32(address, 0x10, 0); // BAR 0
        let msi = space.read32(address, 0x40);
        space.write32(address, 0x40, msi & 0xffff); // MSI Enable off
        let msix = space.read32(address, 0x60);
        space.write32(address, 0x60, msix & 0xffff); // MSI-X Enable off
    }
}

impl ConfigPort for Resettable {
    fn read32(&self, address: Address, offset: u16) -> u32 {
        self.0.read32(address, offset)
    }

    fn write32(&self, address: Address, offset: u16, value: u32) {
        let flr = (offset == DEVICE_CONTROL && value & 1 << 15 != 0)
            || (offset == AF_CONTROL && value & 1 != 0);
        let d3hot_to_d0 =
            offset == PMCSR && self.0.read32(address, PMCSR) & 3 == 3 && value & 3 == 0;
        if flr || d3hot_to_d0 {
            self.reset(address);
        }
        if !flr {
            self.0.write32(address, offset, value);
        }
    }
}

/// Vectors (MSI-X, one handler) of the resettable device on the resetting model.
fn vectors() -> pci::irq::IrqVectors {
    let (function, _space) = handle_with(resettable(), FakePlatform::leaked(1), |space| {
        Box::new(Resettable(space))
    });
    function
        .alloc_irq_vectors(1, 4, IrqKinds::MSIX)
        .expect("MSI-X vectors")
}

/// What `IrqVectors` and its `BusMaster` guard promise about the function.
fn owners_intact(function: &pci::irq::PciFunction) {
    let command = function.config_read16(0x04);
    assert_ne!(
        command & 1 << 10,
        0,
        "Interrupt Disable cleared: the function asserts a shared INTx line with MSI-X in use"
    );
    assert_ne!(command & 1 << 2, 0, "bus mastering off under a live guard");
    assert_ne!(
        function.config_read16(0x62) & 1 << 15,
        0,
        "MSI-X disabled under live vectors"
    );
    assert_eq!(
        function.config_read32(0x10) & !0xf,
        pci::fake::irq::BAR0 as u32,
        "BAR 0 cleared"
    );
}

#[test]
fn a_driver_cannot_start_a_function_level_reset() {
    let vectors = vectors();
    let _handler = vectors.request(0, "reset test", || {}).unwrap();
    let function = vectors.function();
    owners_intact(function);
    let control = function.config_read16(DEVICE_CONTROL);
    let refused = Err(ConfigWriteError::Protected {
        offset: DEVICE_CONTROL,
        register: Register::Reset(PCIE),
    });
    assert_eq!(
        function.config_write16(DEVICE_CONTROL, control | 1 << 15),
        refused
    );
    assert!(
        function
            .config_write32(DEVICE_CONTROL, u32::from(control | 1 << 15))
            .is_err()
    );
    assert!(
        function
            .config_write8(DEVICE_CONTROL + 1, ((control | 1 << 15) >> 8) as u8)
            .is_err()
    );
    owners_intact(function);
    // Device Control's other fields are still the driver's (here Enable Relaxed Ordering),
    // and so is a byte write of its low half.
    function
        .config_write16(DEVICE_CONTROL, control | 1 << 4)
        .unwrap();
    function
        .config_write8(DEVICE_CONTROL, (control | 1 << 4) as u8)
        .unwrap();
    assert_ne!(function.config_read16(DEVICE_CONTROL) & 1 << 4, 0);
    owners_intact(function);
}

#[test]
fn a_driver_cannot_start_an_advanced_features_reset() {
    let vectors = vectors();
    let function = vectors.function();
    assert_eq!(
        function.config_write8(AF_CONTROL, 1),
        Err(ConfigWriteError::Protected {
            offset: AF_CONTROL,
            register: Register::Reset(AF),
        })
    );
    assert!(function.config_write32(AF_CONTROL, 1).is_err());
    owners_intact(function);
}

#[test]
fn a_driver_cannot_take_the_function_through_d3hot() {
    let vectors = vectors();
    let function = vectors.function();
    let e = function.config_write16(PMCSR, 3).unwrap_err();
    assert_eq!(
        e,
        ConfigWriteError::Protected {
            offset: PMCSR,
            register: Register::Reset(PM),
        }
    );
    assert!(e.to_string().contains("reset"), "{e}");
    let _ = function.config_write16(PMCSR, 0);
    owners_intact(function);
    // D0 (a no-op) and PME_En stay writable.
    function.config_write16(PMCSR, 1 << 8).unwrap();
    assert_eq!(function.config_read16(PMCSR) & 0x103, 1 << 8);
    owners_intact(function);
}

#[test]
fn a_port_driver_cannot_take_its_link_down() {
    use pci::fake::irq::handle;
    // A switch downstream port (PCI Express capability type 6) with DPC at 0x100. Taking the
    // link down (Link Disable, or DPC's software trigger) resets every function below the
    // port, whichever drivers own them, as Secondary Bus Reset (refused) does.
    let port = FakeFunction::bridge(0x1b36, 0x000e, 1, 2, 2)
        .with_capability(0x40, 0x10, &[0x62, 0x00])
        .with_writable(0x50, 0x0000_ffff)
        .with_extended_capability(0x100, 0x001d, 1)
        .with_writable(0x104, 0xffff_0000);
    let (function, space) = handle(port, FakePlatform::leaked(1));
    let link_control = function.config_read16(0x50);
    assert_eq!(
        function.config_write16(0x50, link_control | 1 << 4),
        Err(ConfigWriteError::Protected {
            offset: 0x50,
            register: Register::Reset(0x40),
        })
    );
    assert_eq!(
        function.config_write16(0x106, 1 << 6),
        Err(ConfigWriteError::Protected {
            offset: 0x106,
            register: Register::Reset(0x100),
        })
    );
    let address = pci::fake::irq::ADDRESS;
    assert_eq!(space.lock().peek(address, 0x50).unwrap() & 1 << 4, 0);
    assert_eq!(space.lock().peek(address, 0x104).unwrap() & 1 << 22, 0);
    // Retrain Link and the DPC interrupt enable stay the driver's.
    function
        .config_write16(0x50, link_control | 1 << 5)
        .unwrap();
    function.config_write16(0x106, 1 << 3).unwrap();
    // On an endpoint, Link Control bit 4 is reserved: not a reset, not refused.
    let (endpoint, _space) = handle(resettable(), FakePlatform::leaked(1));
    endpoint.config_write16(PCIE + 0x10, 1 << 4).unwrap();
}
