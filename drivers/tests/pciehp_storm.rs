//! A hot-plug port that interrupts in a storm (interrupts with no event in Slot Status): the
//! driver turns the slot's interrupt off and polls the slot instead, so the CPU is not spent
//! answering it; a port whose interrupts bring events keeps its interrupt.

use std::sync::Mutex;

use drivers::Driver;
use drivers::pciehp::{self, Host, PciehpDriver};
use pci::Address;
use pci::fake::irq::{ADDRESS, BAR0, FakePlatform, handle};
use pci::fake::{FakeBar, FakeFunction};
use pci::platform::Platform;

/// Offset of the PCI Express capability in the fake port.
const CAP: u16 = 0x50;
/// Slot Control, with Slot Status in the upper half of its dword (PCIe Base 6.0 §7.5.3.10,
/// §7.5.3.11).
const SLOT_CONTROL: u16 = CAP + 0x18;
/// Slot Control bit 5: Hot-Plug Interrupt Enable.
const HPIE: u32 = 1 << 5;

struct TestHost {
    platform: &'static FakePlatform,
    lines: Mutex<Vec<String>>,
}

impl Host for TestHost {
    fn attach(&self, _port: Address) -> Result<String, String> {
        Err("no card in this test".into())
    }
    fn detach(&self, _port: Address, _gone: bool) -> String {
        String::from("nothing")
    }
    fn forget_dma(&self, _port: Address) {}
    fn log(&self, line: &str) {
        self.lines.lock().unwrap().push(line.to_owned());
    }
    fn resources(&self) -> String {
        String::new()
    }
    fn now_us(&self) -> u64 {
        Platform::now_us(&self.platform)
    }
    fn occupied(&self, _port: Address) -> bool {
        false
    }
    fn answers(&self, _port: Address) -> bool {
        true
    }
    fn vendor_below(&self, _port: Address) -> u16 {
        0xffff
    }
}

/// A Root Port with an empty hot-plug slot (no power controller, no Command Completed
/// support, so nothing waits) and one MSI-X vector.
fn port() -> FakeFunction {
    // PCI Express Capabilities: version 2, Root Port, Slot Implemented; Slot Capabilities:
    // hot-plug capable (bit 6), no Command Completed support (bit 18).
    let mut body = vec![0u8; 0x3a];
    body[0] = 0x42;
    body[1] = 0x01;
    let slot_caps: u32 = (1 << 6) | (1 << 18);
    body[0x12..0x16].copy_from_slice(&slot_caps.to_le_bytes());
    FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 1)
        .with_bar(
            0,
            FakeBar::Mem32 {
                address: BAR0 as u32,
                size: 0x4000,
                prefetchable: false,
            },
        )
        .with_msix(0x40, 1, (0, 0x2000), (0, 0x3000))
        .with_writable(0x40, 0xc000_0000)
        .with_capability(CAP as u8, 0x10, &body)
        // Slot Control and Slot Status (one dword); Slot Status is RW1C in hardware, plain
        // here: the test sets and clears its bits itself.
        .with_writable(usize::from(SLOT_CONTROL), 0xffff_ffff)
}

/// Sets Slot Status to `status`, Slot Control unchanged.
fn set_status(space: &spin::Mutex<pci::fake::FakeConfigSpace>, status: u16) {
    use pci::irq::ConfigPort;
    let control = space.read32(ADDRESS, SLOT_CONTROL) & 0xffff;
    space.write32(ADDRESS, SLOT_CONTROL, control | u32::from(status) << 16);
}

/// Raises the port's MSI-X vector as the device would.
fn interrupt(platform: &FakePlatform) {
    let (address, data) = (platform.peek(BAR0 + 0x2000), platform.peek(BAR0 + 0x2008));
    assert!(platform.deliver((address >> 12) & 0xff, data as u8));
}

#[test]
fn a_storm_turns_the_slot_interrupt_off_and_the_slot_is_polled() {
    let platform = FakePlatform::leaked(1);
    let host: &'static TestHost = Box::leak(Box::new(TestHost {
        platform,
        lines: Mutex::new(Vec::new()),
    }));
    let (function, space) = handle(port(), platform);
    let bound = PciehpDriver
        .probe(function)
        .map_err(|(_, e)| e)
        .expect("probe");
    let control = |space: &spin::Mutex<pci::fake::FakeConfigSpace>| {
        use pci::irq::ConfigPort;
        space.read32(ADDRESS, SLOT_CONTROL) & 0xffff
    };
    assert_ne!(control(space) & HPIE, 0, "the interrupt is on after bind");
    pciehp::poll(host);

    // Interrupts that bring events: a presence change each time (a card that flaps).
    // Acknowledged, handled, and the interrupt stays on.
    for _ in 0..1500 {
        set_status(space, 1 << 3); // Presence Detect Changed
        interrupt(platform);
        pciehp::poll(host);
    }
    assert_ne!(control(space) & HPIE, 0, "events are no storm");

    // Interrupts with nothing in Slot Status, as fast as the kernel services them.
    let mut storm_at = None;
    for i in 0..1500 {
        set_status(space, 0);
        interrupt(platform);
        pciehp::poll(host);
        if control(space) & HPIE == 0 {
            storm_at = Some(i + 1);
            break;
        }
    }
    let at = storm_at.expect("1500 interrupts without an event and the interrupt still on");
    assert_eq!(at, 1000, "turned off after {at} interrupts");
    let lines = host.lines.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("interrupts without an event")),
        "{lines:?}"
    );
    drop(lines);
    // Polled from now on: the next call asks to be called again within 100 ms.
    let now = Platform::now_us(&platform);
    let next = pciehp::poll(host).expect("a polled slot asks to be looked at again");
    assert!(
        next <= now + 100_000 + 1_000,
        "next look at {next}, now {now}"
    );
    drop(bound);
}
