//! PCI Express native hot-plug: the slot registers and the state machine of one slot.
//!
//! Design note. A hot-plug slot is described by three registers of the downstream port's PCI
//! Express capability (PCIe Base 6.0 §7.5.3.9 Slot Capabilities, §7.5.3.10 Slot Control,
//! §7.5.3.11 Slot Status) plus the Data Link Layer Link Active bit of Link Status
//! (§7.5.3.8). This module decodes them and keeps the slot's state; it touches no hardware,
//! so every transition is host-tested. The driver that owns the port
//! (`drivers::pciehp`) reads the registers, feeds [`Slot::event`] and [`Slot::tick`], and
//! carries out the [`Action`] it gets back.
//!
//! The states follow the usage model of §6.7.1 and §6.7.3:
//!
//! | state | meaning | attention button | presence lost | timer |
//! |---|---|---|---|---|
//! | `Off` | slot powered off (or empty) | power on after the abort window | - | - |
//! | `BlinkingOn` | power indicator blinking, about to power on | cancel: `Off` | `Off` | power on |
//! | `On` | powered, functions bound | power off after the abort window | surprise removal | - |
//! | `BlinkingOff` | power indicator blinking, about to power off | cancel: `On` | surprise removal | power off |
//!
//! A presence-detect (or link) change that reports a card while the slot is off or about to
//! come on powers it on at once: that is a card inserted without a button press (§6.7.1.3),
//! and it is what QEMU signals on `device_add`. The abort window after a button press is 5 s
//! (§6.7.1.5: "the power indicator blinks for 5 seconds ... during which a second press
//! cancels"); [`BUTTON_DELAY_US`].

use core::fmt;

/// Offsets inside the PCI Express capability (PCIe Base 6.0 §7.5.3).
pub mod offset {
    /// PCI Express Capabilities register (§7.5.3.2): port type (bits 7:4), Slot Implemented
    /// (bit 8).
    pub const CAPABILITIES: u16 = 0x02;
    /// Link Capabilities (§7.5.3.6): Data Link Layer Link Active Reporting Capable (bit 20).
    pub const LINK_CAPABILITIES: u16 = 0x0c;
    /// Link Status (§7.5.3.8): Data Link Layer Link Active (bit 13).
    pub const LINK_STATUS: u16 = 0x12;
    /// Slot Capabilities (§7.5.3.9).
    pub const SLOT_CAPABILITIES: u16 = 0x14;
    /// Slot Control (§7.5.3.10).
    pub const SLOT_CONTROL: u16 = 0x18;
    /// Slot Status (§7.5.3.11).
    pub const SLOT_STATUS: u16 = 0x1a;
}

/// Device/port type values of the PCI Express Capabilities register (§7.5.3.2).
pub mod port_type {
    /// Root Port of a Root Complex.
    pub const ROOT_PORT: u8 = 0x4;
    /// Downstream Port of a switch.
    pub const DOWNSTREAM: u8 = 0x6;
}

/// PCI Express Capabilities register bit 8: Slot Implemented.
pub const SLOT_IMPLEMENTED: u16 = 1 << 8;
/// Link Capabilities bit 20: Data Link Layer Link Active Reporting Capable.
pub const DLL_ACTIVE_REPORTING: u32 = 1 << 20;
/// Link Status bit 13: Data Link Layer Link Active.
pub const DLL_LINK_ACTIVE: u16 = 1 << 13;

/// The abort window after an attention button press (§6.7.1.5), microseconds.
pub const BUTTON_DELAY_US: u64 = 5_000_000;
/// How long software waits for Command Completed after a Slot Control write: 1 s (§6.7.3.2
/// "Command Completed ... must be set within 1 second").
pub const COMMAND_TIMEOUT_US: u64 = 1_000_000;
/// After the link is active, software waits 100 ms before the first configuration request
/// (§6.7.3.3 with §6.6.1).
pub const LINK_SETTLE_US: u64 = 100_000;
/// How long software waits for the link to become active after power-on. A port that does
/// not report Data Link Layer Link Active waits 1 s instead (§6.6.1).
pub const LINK_TIMEOUT_US: u64 = 1_000_000;
/// Link Capabilities bits 3:0: Max Link Speed (1: 2.5 GT/s, 2: 5.0 GT/s, 3: 8.0 GT/s, ...).
pub const MAX_LINK_SPEED: u32 = 0xf;
/// The Vendor ID a Root Port returns for a read completed with Configuration Request Retry
/// Status when CRS Software Visibility is on (§2.3.2): the function is not ready yet.
pub const VENDOR_ID_RETRY: u16 = 0x0001;

/// How software learns that the card below a freshly powered slot may be configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkWait {
    /// The port reports Data Link Layer Link Active: wait for it (up to
    /// [`LINK_TIMEOUT_US`]), then [`LINK_SETTLE_US`] (§6.7.3.3).
    LinkActive,
    /// No Link Active reporting on a port of at most 5.0 GT/s: wait [`LINK_SETTLE_US`]
    /// after power-on, the minimum before a configuration request (§6.6.1), then read the
    /// Vendor ID of function 0 below until it is valid, up to [`LINK_TIMEOUT_US`] from
    /// power-on. Until the link trains the request completes as Unsupported Request (all
    /// ones); a card still initialising answers Retry ([`VENDOR_ID_RETRY`]). This is also
    /// what Linux does for such ports (`pci_bridge_wait_for_secondary_bus`).
    PollVendorId,
    /// No Link Active reporting on a faster port (the spec requires reporting above
    /// 5.0 GT/s, so only a non-conforming port lands here): a fixed 1 s.
    Fixed,
}

impl LinkWait {
    /// The wait for a port with these Link Capabilities (§7.5.3.6).
    pub const fn for_link_capabilities(link_caps: u32) -> Self {
        if link_caps & DLL_ACTIVE_REPORTING != 0 {
            Self::LinkActive
        } else if link_caps & MAX_LINK_SPEED <= 2 {
            Self::PollVendorId
        } else {
            Self::Fixed
        }
    }
}

/// Whether a Vendor ID read below a slot says function 0 is there and ready: not all ones
/// (no completion: link down or nothing there), not the Retry value, and not zero (no
/// vendor has it; Linux treats it as absent too).
pub const fn vendor_id_ready(vendor: u16) -> bool {
    vendor != 0xffff && vendor != VENDOR_ID_RETRY && vendor != 0
}

/// Slot Capabilities (§7.5.3.9), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotCapabilities(pub u32);

impl SlotCapabilities {
    /// Bit 0: Attention Button Present.
    pub const fn attention_button(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bit 1: Power Controller Present.
    pub const fn power_controller(self) -> bool {
        self.0 & (1 << 1) != 0
    }
    /// Bit 2: MRL Sensor Present.
    pub const fn mrl_sensor(self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// Bit 3: Attention Indicator Present.
    pub const fn attention_indicator(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// Bit 4: Power Indicator Present.
    pub const fn power_indicator(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Bit 5: Hot-Plug Surprise (the card may be removed without notice).
    pub const fn surprise(self) -> bool {
        self.0 & (1 << 5) != 0
    }
    /// Bit 6: Hot-Plug Capable.
    pub const fn hot_plug_capable(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    /// Bit 17: Electromechanical Interlock Present.
    pub const fn interlock(self) -> bool {
        self.0 & (1 << 17) != 0
    }
    /// Bit 18: No Command Completed Support (Slot Control writes complete at once).
    pub const fn no_command_completed(self) -> bool {
        self.0 & (1 << 18) != 0
    }
    /// Bits 31:19: Physical Slot Number.
    pub const fn physical_slot(self) -> u16 {
        (self.0 >> 19) as u16
    }
}

impl fmt::Display for SlotCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {}", self.physical_slot())?;
        for (has, name) in [
            (self.hot_plug_capable(), " hot-plug"),
            (self.surprise(), " surprise"),
            (self.attention_button(), " button"),
            (self.power_controller(), " power-controller"),
            (self.mrl_sensor(), " MRL"),
            (self.power_indicator(), " power-indicator"),
            (self.attention_indicator(), " attention-indicator"),
            (self.no_command_completed(), " no-command-completed"),
        ] {
            if has {
                f.write_str(name)?;
            }
        }
        Ok(())
    }
}

/// Slot Status bits (§7.5.3.11). Bits 0-4 and 8 are write-one-to-clear events.
pub mod status {
    /// Attention Button Pressed.
    pub const BUTTON_PRESSED: u16 = 1 << 0;
    /// Power Fault Detected.
    pub const POWER_FAULT: u16 = 1 << 1;
    /// MRL Sensor Changed.
    pub const MRL_CHANGED: u16 = 1 << 2;
    /// Presence Detect Changed.
    pub const PRESENCE_CHANGED: u16 = 1 << 3;
    /// Command Completed.
    pub const COMMAND_COMPLETED: u16 = 1 << 4;
    /// MRL Sensor State (1: open).
    pub const MRL_OPEN: u16 = 1 << 5;
    /// Presence Detect State (1: card present).
    pub const PRESENT: u16 = 1 << 6;
    /// Electromechanical Interlock Status.
    pub const INTERLOCK: u16 = 1 << 7;
    /// Data Link Layer State Changed.
    pub const LINK_CHANGED: u16 = 1 << 8;
    /// Every write-one-to-clear event bit.
    pub const EVENTS: u16 = BUTTON_PRESSED
        | POWER_FAULT
        | MRL_CHANGED
        | PRESENCE_CHANGED
        | COMMAND_COMPLETED
        | LINK_CHANGED;
}

/// Slot Control bits (§7.5.3.10).
pub mod control {
    /// Attention Button Pressed Enable.
    pub const BUTTON_ENABLE: u16 = 1 << 0;
    /// Power Fault Detected Enable.
    pub const POWER_FAULT_ENABLE: u16 = 1 << 1;
    /// MRL Sensor Changed Enable.
    pub const MRL_ENABLE: u16 = 1 << 2;
    /// Presence Detect Changed Enable.
    pub const PRESENCE_ENABLE: u16 = 1 << 3;
    /// Command Completed Interrupt Enable.
    pub const COMMAND_COMPLETED_ENABLE: u16 = 1 << 4;
    /// Hot-Plug Interrupt Enable.
    pub const HOT_PLUG_INTERRUPT_ENABLE: u16 = 1 << 5;
    /// Attention Indicator Control, bits 7:6.
    pub const ATTENTION_INDICATOR: u16 = 0b11 << 6;
    /// Power Indicator Control, bits 9:8.
    pub const POWER_INDICATOR: u16 = 0b11 << 8;
    /// Power Controller Control: 1 = power off.
    pub const POWER_OFF: u16 = 1 << 10;
    /// Electromechanical Interlock Control.
    pub const INTERLOCK: u16 = 1 << 11;
    /// Data Link Layer State Changed Enable.
    pub const LINK_CHANGED_ENABLE: u16 = 1 << 12;
    /// The event enables the hot-plug driver sets.
    pub const EVENT_ENABLES: u16 = BUTTON_ENABLE
        | PRESENCE_ENABLE
        | COMMAND_COMPLETED_ENABLE
        | HOT_PLUG_INTERRUPT_ENABLE
        | LINK_CHANGED_ENABLE;
}

/// An indicator's state (Slot Control §7.5.3.10: 01b on, 10b blink, 11b off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indicator {
    /// 01b.
    On,
    /// 10b.
    Blink,
    /// 11b.
    Off,
}

impl Indicator {
    const fn bits(self) -> u16 {
        match self {
            Indicator::On => 0b01,
            Indicator::Blink => 0b10,
            Indicator::Off => 0b11,
        }
    }

    /// Decodes the two-bit field (00b is reserved: `None`).
    pub const fn from_bits(bits: u16) -> Option<Indicator> {
        match bits & 0b11 {
            0b01 => Some(Indicator::On),
            0b10 => Some(Indicator::Blink),
            0b11 => Some(Indicator::Off),
            _ => None,
        }
    }
}

/// Slot Control with the power indicator set to `indicator`.
pub const fn with_power_indicator(control: u16, indicator: Indicator) -> u16 {
    (control & !control::POWER_INDICATOR) | (indicator.bits() << 8)
}

/// Slot Control with the power controller on or off.
pub const fn with_power(control: u16, on: bool) -> u16 {
    if on {
        control & !control::POWER_OFF
    } else {
        control | control::POWER_OFF
    }
}

/// The power indicator field of a Slot Control value.
pub const fn power_indicator(control: u16) -> Option<Indicator> {
    Indicator::from_bits(control >> 8)
}

/// Whether the power controller of a Slot Control value is on.
pub const fn power_on(control: u16) -> bool {
    control & control::POWER_OFF == 0
}

/// The states of a slot (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Powered off or empty.
    Off,
    /// Blinking until `deadline` (µs), then powered on.
    BlinkingOn {
        /// When the abort window ends.
        deadline: u64,
    },
    /// Powered, functions enumerated and bound.
    On,
    /// Blinking until `deadline` (µs), then powered off.
    BlinkingOff {
        /// When the abort window ends.
        deadline: u64,
    },
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Off => "off",
            State::BlinkingOn { .. } => "blinking (powering on)",
            State::On => "on",
            State::BlinkingOff { .. } => "blinking (powering off)",
        })
    }
}

/// What the owner of the slot does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Set the power indicator blinking (the abort window started).
    Blink,
    /// A press cancelled the window: power indicator back to on.
    CancelToOn,
    /// A press cancelled the window (or the card left): power indicator back to off.
    CancelToOff,
    /// Power the slot on, wait for the link, enumerate and bind; then report with
    /// [`Slot::enabled`].
    Enable,
    /// Unbind the drivers below, then power the slot off (orderly removal).
    Disable,
    /// The card is gone: unbind without touching it, then power the slot off.
    SurpriseRemoval,
}

/// What one interrupt (or poll) found in Slot Status and Link Status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// Attention Button Pressed was set.
    pub button: bool,
    /// Presence Detect Changed was set.
    pub presence_changed: bool,
    /// Data Link Layer State Changed was set.
    pub link_changed: bool,
    /// Presence Detect State now.
    pub present: bool,
    /// Data Link Layer Link Active now (`true` when the port does not report it).
    pub link_active: bool,
}

impl Events {
    /// Decodes Slot Status (and Link Status when the port reports link state).
    pub fn decode(slot_status: u16, link_status: Option<u16>) -> Events {
        Events {
            button: slot_status & status::BUTTON_PRESSED != 0,
            presence_changed: slot_status & status::PRESENCE_CHANGED != 0,
            link_changed: slot_status & status::LINK_CHANGED != 0,
            present: slot_status & status::PRESENT != 0,
            link_active: link_status.is_none_or(|l| l & DLL_LINK_ACTIVE != 0),
        }
    }

    /// Whether anything happened that the state machine acts on.
    pub fn any(&self) -> bool {
        self.button || self.presence_changed || self.link_changed
    }
}

/// One slot's state machine, with its abort-window timer.
///
/// # Invariants
/// `state` is `BlinkingOn`/`BlinkingOff` only while the power indicator was told to blink;
/// an `Enable` or `Disable` action is followed by [`Slot::enabled`] or nothing respectively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    state: State,
    /// The abort window, microseconds ([`BUTTON_DELAY_US`] unless configured).
    delay_us: u64,
}

impl Slot {
    /// A slot found `on` (powered with a card present) or off.
    pub const fn new(on: bool, delay_us: u64) -> Slot {
        Slot {
            state: if on { State::On } else { State::Off },
            delay_us,
        }
    }

    /// The state now.
    pub const fn state(&self) -> State {
        self.state
    }

    /// When [`Slot::tick`] has something to do, if ever.
    pub const fn deadline(&self) -> Option<u64> {
        match self.state {
            State::BlinkingOn { deadline } | State::BlinkingOff { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// Changes the abort window used by later presses.
    pub fn set_delay(&mut self, delay_us: u64) {
        self.delay_us = delay_us;
    }

    /// Feeds what one interrupt found, at time `now` (µs).
    pub fn event(&mut self, events: Events, now: u64) -> Action {
        // Presence (or the link) lost: the card is gone, whatever the button said.
        let lost = (events.presence_changed || events.link_changed)
            && (!events.present || (events.link_changed && !events.link_active));
        let arrived = (events.presence_changed || events.link_changed) && events.present;
        let window = now.saturating_add(self.delay_us);
        let (next, action) = match self.state {
            State::Off if arrived => (State::Off, Action::Enable),
            State::Off if events.button && events.present => {
                (State::BlinkingOn { deadline: window }, Action::Blink)
            }
            State::Off => (State::Off, Action::None),
            State::BlinkingOn { .. } if lost => (State::Off, Action::CancelToOff),
            State::BlinkingOn { .. } if arrived => (State::Off, Action::Enable),
            State::BlinkingOn { .. } if events.button => (State::Off, Action::CancelToOff),
            s @ State::BlinkingOn { .. } => (s, Action::None),
            State::On | State::BlinkingOff { .. } if lost => (State::Off, Action::SurpriseRemoval),
            State::On if events.button => (State::BlinkingOff { deadline: window }, Action::Blink),
            State::On => (State::On, Action::None),
            State::BlinkingOff { .. } if events.button => (State::On, Action::CancelToOn),
            s @ State::BlinkingOff { .. } => (s, Action::None),
        };
        self.state = next;
        action
    }

    /// Runs the timer at time `now` (µs): the end of an abort window.
    pub fn tick(&mut self, now: u64) -> Action {
        match self.state {
            State::BlinkingOn { deadline } if now >= deadline => {
                self.state = State::Off;
                Action::Enable
            }
            State::BlinkingOff { deadline } if now >= deadline => {
                self.state = State::Off;
                Action::Disable
            }
            _ => Action::None,
        }
    }

    /// Reports how an [`Action::Enable`] ended: `On` if the functions came up.
    pub fn enabled(&mut self, ok: bool) {
        self.state = if ok { State::On } else { State::Off };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRESENT: Events = Events {
        button: false,
        presence_changed: true,
        link_changed: false,
        present: true,
        link_active: true,
    };
    const BUTTON: Events = Events {
        button: true,
        presence_changed: false,
        link_changed: false,
        present: true,
        link_active: true,
    };
    const GONE: Events = Events {
        button: false,
        presence_changed: true,
        link_changed: false,
        present: false,
        link_active: false,
    };

    #[test]
    fn qemu_slot_capabilities_decode() {
        // What QEMU's pcie-root-port with slot=5 reports: ABP PCP AIP PIP HPS HPC EIP.
        let caps = SlotCapabilities((5 << 19) | (1 << 17) | 0b111_1011);
        assert!(caps.attention_button() && caps.power_controller() && caps.hot_plug_capable());
        assert!(!caps.mrl_sensor() && !caps.no_command_completed());
        assert_eq!(caps.physical_slot(), 5);
        assert_eq!(
            caps.to_string(),
            "slot 5 hot-plug surprise button power-controller power-indicator attention-indicator"
        );
    }

    #[test]
    fn control_fields_compose() {
        let c = with_power_indicator(with_power(0, false), Indicator::Off);
        assert_eq!(c, 0x0700);
        assert!(!power_on(c));
        assert_eq!(power_indicator(c), Some(Indicator::Off));
        let c = with_power_indicator(with_power(c, true), Indicator::Blink);
        assert_eq!(c, 0x0200);
        assert_eq!(power_indicator(c), Some(Indicator::Blink));
        assert_eq!(power_indicator(0), None);
    }

    #[test]
    fn status_decode() {
        let e = Events::decode(status::PRESENCE_CHANGED | status::PRESENT, Some(0));
        assert!(e.presence_changed && e.present && !e.link_active && e.any());
        let e = Events::decode(status::COMMAND_COMPLETED, None);
        assert!(!e.any() && e.link_active);
    }

    #[test]
    fn insertion_powers_on_at_once() {
        let mut slot = Slot::new(false, BUTTON_DELAY_US);
        // QEMU's device_add: presence changed and the button "pressed" together.
        let both = Events {
            button: true,
            ..PRESENT
        };
        assert_eq!(slot.event(both, 0), Action::Enable);
        slot.enabled(true);
        assert_eq!(slot.state(), State::On);
    }

    #[test]
    fn failed_enable_leaves_the_slot_off() {
        let mut slot = Slot::new(false, BUTTON_DELAY_US);
        assert_eq!(slot.event(PRESENT, 0), Action::Enable);
        slot.enabled(false);
        assert_eq!(slot.state(), State::Off);
        assert_eq!(slot.tick(u64::MAX), Action::None);
    }

    #[test]
    fn button_on_a_powered_slot_waits_five_seconds_then_powers_off() {
        let mut slot = Slot::new(true, BUTTON_DELAY_US);
        assert_eq!(slot.event(BUTTON, 1_000), Action::Blink);
        assert_eq!(slot.deadline(), Some(1_000 + BUTTON_DELAY_US));
        assert_eq!(slot.tick(1_000 + BUTTON_DELAY_US - 1), Action::None);
        assert_eq!(slot.tick(1_000 + BUTTON_DELAY_US), Action::Disable);
        assert_eq!(slot.state(), State::Off);
        assert_eq!(slot.deadline(), None);
    }

    #[test]
    fn second_press_cancels() {
        let mut slot = Slot::new(true, BUTTON_DELAY_US);
        assert_eq!(slot.event(BUTTON, 0), Action::Blink);
        assert_eq!(slot.event(BUTTON, 2_000_000), Action::CancelToOn);
        assert_eq!(slot.state(), State::On);
        assert_eq!(slot.tick(u64::MAX), Action::None);

        let mut slot = Slot::new(false, BUTTON_DELAY_US);
        assert_eq!(slot.event(BUTTON, 0), Action::Blink);
        assert!(matches!(slot.state(), State::BlinkingOn { .. }));
        assert_eq!(slot.event(BUTTON, 1), Action::CancelToOff);
        assert_eq!(slot.state(), State::Off);
    }

    #[test]
    fn button_on_an_empty_slot_does_nothing() {
        let mut slot = Slot::new(false, BUTTON_DELAY_US);
        let empty = Events {
            present: false,
            ..BUTTON
        };
        assert_eq!(slot.event(empty, 0), Action::None);
        assert_eq!(slot.state(), State::Off);
    }

    #[test]
    fn button_then_timer_powers_on() {
        let mut slot = Slot::new(false, 10);
        assert_eq!(slot.event(BUTTON, 0), Action::Blink);
        assert_eq!(slot.tick(10), Action::Enable);
        slot.enabled(true);
        assert_eq!(slot.state(), State::On);
    }

    #[test]
    fn presence_lost_is_a_surprise_removal() {
        let mut slot = Slot::new(true, BUTTON_DELAY_US);
        assert_eq!(slot.event(GONE, 0), Action::SurpriseRemoval);
        assert_eq!(slot.state(), State::Off);
        // ... also during the abort window, which then never fires.
        let mut slot = Slot::new(true, BUTTON_DELAY_US);
        slot.event(BUTTON, 0);
        assert_eq!(slot.event(GONE, 1), Action::SurpriseRemoval);
        assert_eq!(slot.tick(u64::MAX), Action::None);
        // Link down with the card still present (a card that died) counts too.
        let mut slot = Slot::new(true, BUTTON_DELAY_US);
        let link_down = Events {
            button: false,
            presence_changed: false,
            link_changed: true,
            present: true,
            link_active: false,
        };
        assert_eq!(slot.event(link_down, 0), Action::SurpriseRemoval);
        // A card pulled while about to power on only stops the blinking.
        let mut slot = Slot::new(false, BUTTON_DELAY_US);
        slot.event(BUTTON, 0);
        assert_eq!(slot.event(GONE, 1), Action::CancelToOff);
    }

    #[test]
    fn huge_times_do_not_wrap() {
        let mut slot = Slot::new(true, u64::MAX);
        assert_eq!(slot.event(BUTTON, u64::MAX - 1), Action::Blink);
        assert_eq!(slot.deadline(), Some(u64::MAX));
        assert_eq!(slot.tick(u64::MAX - 2), Action::None);
    }

    #[test]
    fn link_wait_follows_the_link_capabilities() {
        // Root port with Link Active reporting (QEMU pcie-root-port): 0x0070_0000 | speed.
        assert_eq!(
            LinkWait::for_link_capabilities(DLL_ACTIVE_REPORTING | 0x1),
            LinkWait::LinkActive
        );
        // A 2.5 GT/s switch downstream port without it (QEMU xio3130-downstream).
        assert_eq!(
            LinkWait::for_link_capabilities(0x0003_f411),
            LinkWait::PollVendorId
        );
        assert_eq!(LinkWait::for_link_capabilities(0x2), LinkWait::PollVendorId);
        assert_eq!(LinkWait::for_link_capabilities(0x3), LinkWait::Fixed);
    }

    #[test]
    fn vendor_id_ready_refuses_all_ones_and_retry() {
        assert!(!vendor_id_ready(0xffff));
        assert!(!vendor_id_ready(VENDOR_ID_RETRY));
        assert!(vendor_id_ready(0x1b36));
        assert!(!vendor_id_ready(0x0000));
    }
}
