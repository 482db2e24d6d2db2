//! The address of one PCI function: segment (PCI Firmware 3.2 §4.1.2, MCFG), bus, device,
//! function (PCI Local Bus 3.0 §3.2.2.3.2: 8-bit bus, 5-bit device, 3-bit function).

use core::fmt;

use pci_types::PciAddress;

/// Segment, bus, device and function of one PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    segment: u16,
    bus: u8,
    device: u8,
    function: u8,
}

/// Why an [`Address`] could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Device numbers are 0..=31.
    DeviceOutOfRange(u8),
    /// Function numbers are 0..=7.
    FunctionOutOfRange(u8),
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::DeviceOutOfRange(d) => write!(f, "device {d} is not in 0..=31"),
            AddressError::FunctionOutOfRange(n) => write!(f, "function {n} is not in 0..=7"),
        }
    }
}

impl Address {
    /// Checks the device (5 bits) and function (3 bits) numbers.
    pub const fn new(
        segment: u16,
        bus: u8,
        device: u8,
        function: u8,
    ) -> Result<Self, AddressError> {
        if device > 31 {
            return Err(AddressError::DeviceOutOfRange(device));
        }
        if function > 7 {
            return Err(AddressError::FunctionOutOfRange(function));
        }
        Ok(Address {
            segment,
            bus,
            device,
            function,
        })
    }

    /// Builds an address from any numbers, keeping the low 5 bits of `device` and the low 3
    /// bits of `function` (what a configuration mechanism would decode).
    pub const fn new_masked(segment: u16, bus: u8, device: u8, function: u8) -> Self {
        Address {
            segment,
            bus,
            device: device & 0x1f,
            function: function & 0x07,
        }
    }

    /// The same function's address in `pci_types`' encoding, for [`ConfigRegionAccess`].
    ///
    /// [`ConfigRegionAccess`]: pci_types::ConfigRegionAccess
    pub fn to_pci_types(&self) -> PciAddress {
        PciAddress::new(self.segment, self.bus, self.device, self.function)
    }

    /// PCI segment group.
    pub const fn segment(&self) -> u16 {
        self.segment
    }
    /// Bus number.
    pub const fn bus(&self) -> u8 {
        self.bus
    }
    /// Device number, 0..=31.
    pub const fn device(&self) -> u8 {
        self.device
    }
    /// Function number, 0..=7.
    pub const fn function(&self) -> u8 {
        self.function
    }

    /// Byte offset of this function's 4 KiB configuration space inside an ECAM window whose
    /// first bus is `start_bus` (PCIe Base 6.0 §7.2.2: bus << 20 | device << 15 | function << 12).
    pub const fn ecam_offset(&self, start_bus: u8) -> Option<u64> {
        if self.bus < start_bus {
            return None;
        }
        Some(
            ((self.bus - start_bus) as u64) << 20
                | (self.device as u64) << 15
                | (self.function as u64) << 12,
        )
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.segment, self.bus, self.device, self.function
        )
    }
}

impl From<Address> for PciAddress {
    fn from(a: Address) -> PciAddress {
        a.to_pci_types()
    }
}

impl From<PciAddress> for Address {
    fn from(a: PciAddress) -> Address {
        Address::new_masked(a.segment(), a.bus(), a.device(), a.function())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_out_of_range_numbers() {
        assert_eq!(
            Address::new(0, 0, 32, 0),
            Err(AddressError::DeviceOutOfRange(32))
        );
        assert_eq!(
            Address::new(0, 0, 0, 8),
            Err(AddressError::FunctionOutOfRange(8))
        );
    }

    #[test]
    fn formats_like_lspci() {
        let a = Address::new(1, 0x80, 0x1f, 7).unwrap();
        assert_eq!(a.to_string(), "0001:80:1f.7");
    }

    #[test]
    fn ecam_offsets_follow_the_spec() {
        let a = Address::new(0, 3, 2, 1).unwrap();
        assert_eq!(a.ecam_offset(0), Some((3 << 20) | (2 << 15) | (1 << 12)));
        assert_eq!(a.ecam_offset(3), Some((2 << 15) | (1 << 12)));
        assert_eq!(a.ecam_offset(4), None);
    }

    #[test]
    fn converts_to_and_from_pci_types() {
        let a = Address::new(2, 0x80, 0x1f, 7).unwrap();
        let p = PciAddress::from(a);
        assert_eq!(
            (p.segment(), p.bus(), p.device(), p.function()),
            (2, 0x80, 0x1f, 7)
        );
        assert_eq!(Address::from(p), a);
        assert_eq!(
            Address::new_masked(0, 0, 0x3f, 0xf),
            Address::new(0, 0, 0x1f, 7).unwrap()
        );
    }
}
