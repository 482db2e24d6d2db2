//! Names for class codes (PCI Code and ID Assignment 1.11 §1, spelled as in the `pci.ids`
//! database that `lspci` uses) and for the vendors and devices a kernel meets in QEMU and on
//! common hardware. Anything else is shown by number.

/// Name of a base class.
pub fn base_class_name(class: u8) -> Option<&'static str> {
    Some(match class {
        0x00 => "Unclassified device",
        0x01 => "Mass storage controller",
        0x02 => "Network controller",
        0x03 => "Display controller",
        0x04 => "Multimedia controller",
        0x05 => "Memory controller",
        0x06 => "Bridge",
        0x07 => "Communication controller",
        0x08 => "Generic system peripheral",
        0x09 => "Input device controller",
        0x0a => "Docking station",
        0x0b => "Processor",
        0x0c => "Serial bus controller",
        0x0d => "Wireless controller",
        0x0e => "Intelligent controller",
        0x0f => "Satellite communications controller",
        0x10 => "Encryption controller",
        0x11 => "Signal processing controller",
        0x12 => "Processing accelerators",
        0x13 => "Non-Essential Instrumentation",
        0x40 => "Coprocessor",
        0xff => "Unassigned class",
        _ => return None,
    })
}

/// Name of a subclass.
pub fn subclass_name(class: u8, subclass: u8) -> Option<&'static str> {
    Some(match (class, subclass) {
        (0x00, 0x00) => "Non-VGA unclassified device",
        (0x00, 0x01) => "VGA compatible unclassified device",
        (0x00, 0x05) => "Image coprocessor",
        (0x01, 0x00) => "SCSI storage controller",
        (0x01, 0x01) => "IDE interface",
        (0x01, 0x02) => "Floppy disk controller",
        (0x01, 0x03) => "IPI bus controller",
        (0x01, 0x04) => "RAID bus controller",
        (0x01, 0x05) => "ATA controller",
        (0x01, 0x06) => "SATA controller",
        (0x01, 0x07) => "Serial Attached SCSI controller",
        (0x01, 0x08) => "Non-Volatile memory controller",
        (0x01, 0x09) => "Universal Flash Storage controller",
        (0x01, 0x80) => "Mass storage controller",
        (0x02, 0x00) => "Ethernet controller",
        (0x02, 0x01) => "Token ring network controller",
        (0x02, 0x02) => "FDDI network controller",
        (0x02, 0x03) => "ATM network controller",
        (0x02, 0x04) => "ISDN controller",
        (0x02, 0x05) => "WorldFip controller",
        (0x02, 0x06) => "PICMG controller",
        (0x02, 0x07) => "Infiniband controller",
        (0x02, 0x08) => "Fabric controller",
        (0x02, 0x80) => "Network controller",
        (0x03, 0x00) => "VGA compatible controller",
        (0x03, 0x01) => "XGA compatible controller",
        (0x03, 0x02) => "3D controller",
        (0x03, 0x80) => "Display controller",
        (0x04, 0x00) => "Multimedia video controller",
        (0x04, 0x01) => "Multimedia audio controller",
        (0x04, 0x02) => "Computer telephony device",
        (0x04, 0x03) => "Audio device",
        (0x04, 0x80) => "Multimedia controller",
        (0x05, 0x00) => "RAM memory",
        (0x05, 0x01) => "FLASH memory",
        (0x05, 0x02) => "CXL",
        (0x05, 0x80) => "Memory controller",
        (0x06, 0x00) => "Host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x02) => "EISA bridge",
        (0x06, 0x03) => "MicroChannel bridge",
        (0x06, 0x04) => "PCI bridge",
        (0x06, 0x05) => "PCMCIA bridge",
        (0x06, 0x06) => "NuBus bridge",
        (0x06, 0x07) => "CardBus bridge",
        (0x06, 0x08) => "RACEway bridge",
        (0x06, 0x09) => "Semi-transparent PCI-to-PCI bridge",
        (0x06, 0x0a) => "InfiniBand to PCI host bridge",
        (0x06, 0x80) => "Bridge",
        (0x07, 0x00) => "Serial controller",
        (0x07, 0x01) => "Parallel controller",
        (0x07, 0x02) => "Multiport serial controller",
        (0x07, 0x03) => "Modem",
        (0x07, 0x04) => "GPIB controller",
        (0x07, 0x05) => "Smard Card controller",
        (0x07, 0x80) => "Communication controller",
        (0x08, 0x00) => "PIC",
        (0x08, 0x01) => "DMA controller",
        (0x08, 0x02) => "Timer",
        (0x08, 0x03) => "RTC",
        (0x08, 0x04) => "PCI Hot-plug controller",
        (0x08, 0x05) => "SD Host controller",
        (0x08, 0x06) => "IOMMU",
        (0x08, 0x80) => "System peripheral",
        (0x09, 0x00) => "Keyboard controller",
        (0x09, 0x01) => "Digitizer Pen",
        (0x09, 0x02) => "Mouse controller",
        (0x09, 0x03) => "Scanner controller",
        (0x09, 0x04) => "Gameport controller",
        (0x09, 0x80) => "Input device controller",
        (0x0a, 0x00) => "Generic Docking Station",
        (0x0a, 0x80) => "Docking Station",
        (0x0b, 0x40) => "Co-processor",
        (0x0c, 0x00) => "FireWire (IEEE 1394)",
        (0x0c, 0x01) => "ACCESS Bus",
        (0x0c, 0x02) => "SSA",
        (0x0c, 0x03) => "USB controller",
        (0x0c, 0x04) => "Fibre Channel",
        (0x0c, 0x05) => "SMBus",
        (0x0c, 0x06) => "InfiniBand",
        (0x0c, 0x07) => "IPMI Interface",
        (0x0c, 0x08) => "SERCOS interface",
        (0x0c, 0x09) => "CANBUS",
        (0x0c, 0x80) => "Serial bus controller",
        (0x0d, 0x00) => "IRDA controller",
        (0x0d, 0x01) => "Consumer IR controller",
        (0x0d, 0x10) => "RF controller",
        (0x0d, 0x11) => "Bluetooth",
        (0x0d, 0x12) => "Broadband",
        (0x0d, 0x80) => "Wireless controller",
        (0x0e, 0x00) => "I2O",
        (0x10, 0x00) => "Network and computing encryption device",
        (0x10, 0x10) => "Entertainment encryption device",
        (0x10, 0x80) => "Encryption controller",
        (0x11, 0x00) => "DPIO module",
        (0x11, 0x01) => "Performance counters",
        (0x11, 0x80) => "Signal processing controller",
        (0x12, 0x00) => "Processing accelerators",
        _ => return None,
    })
}

/// The most specific class name: the subclass's, else the base class's (as `lspci`).
pub fn class_name(class: u8, subclass: u8) -> Option<&'static str> {
    subclass_name(class, subclass).or_else(|| base_class_name(class))
}

/// Name of a vendor.
pub fn vendor_name(vendor: u16) -> Option<&'static str> {
    Some(match vendor {
        0x8086 => "Intel Corporation",
        0x1b36 | 0x1af4 => "Red Hat, Inc.",
        0x1234 => "Technical Corp.",
        0x1022 => "Advanced Micro Devices, Inc. [AMD]",
        0x1002 => "Advanced Micro Devices, Inc. [AMD/ATI]",
        0x10de => "NVIDIA Corporation",
        0x10ec => "Realtek Semiconductor Co., Ltd.",
        0x14e4 => "Broadcom Inc. and subsidiaries",
        0x144d => "Samsung Electronics Co Ltd",
        0x15ad => "VMware",
        0x1013 => "Cirrus Logic",
        0x1b21 => "ASMedia Technology Inc.",
        0x1d0f => "Amazon.com, Inc.",
        0x80ee => "InnoTek Systemberatung GmbH",
        0x1414 => "Microsoft Corporation",
        0x15b3 => "Mellanox Technologies",
        0x1957 => "Freescale Semiconductor Inc",
        _ => return None,
    })
}

/// Name of a device.
pub fn device_name(vendor: u16, device: u16) -> Option<&'static str> {
    Some(match (vendor, device) {
        // Intel: the q35 chipset (82G33 MCH + ICH9), i440fx + PIIX3/4, NICs QEMU emulates.
        (0x8086, 0x29c0) => "82G33/G31/P35/P31 Express DRAM Controller",
        (0x8086, 0x2918) => "82801IB (ICH9) LPC Interface Controller",
        (0x8086, 0x2922) => "82801IR/IO/IH (ICH9R/DO/DH) 6 port SATA Controller [AHCI mode]",
        (0x8086, 0x2930) => "82801I (ICH9 Family) SMBus Controller",
        (0x8086, 0x2934) => "82801I (ICH9 Family) USB UHCI Controller #1",
        (0x8086, 0x2935) => "82801I (ICH9 Family) USB UHCI Controller #2",
        (0x8086, 0x2936) => "82801I (ICH9 Family) USB UHCI Controller #3",
        (0x8086, 0x293a) => "82801I (ICH9 Family) USB2 EHCI Controller #1",
        (0x8086, 0x293e) => "82801I (ICH9 Family) HD Audio Controller",
        (0x8086, 0x2668) => "82801FB/FBM/FR/FW/FRW (ICH6 Family) High Definition Audio Controller",
        (0x8086, 0x1237) => "440FX - 82441FX PMC [Natoma]",
        (0x8086, 0x7000) => "82371SB PIIX3 ISA [Natoma/Triton II]",
        (0x8086, 0x7010) => "82371SB PIIX3 IDE [Natoma/Triton II]",
        (0x8086, 0x7020) => "82371SB PIIX3 USB [Natoma/Triton II]",
        (0x8086, 0x7113) => "82371AB/EB/MB PIIX4 ACPI",
        (0x8086, 0x100e) => "82540EM Gigabit Ethernet Controller",
        (0x8086, 0x10d3) => "82574L Gigabit Network Connection",
        (0x8086, 0x10c9) => "82576 Gigabit Network Connection",
        (0x8086, 0x1209) => "8255xER/82551IT Fast Ethernet Controller",
        (0x8086, 0x2415) => "82801AA AC'97 Audio Controller",
        (0x8086, 0x25ab) => "6300ESB Watchdog Timer",
        (0x8086, 0x24cd) => "82801DB/DBM (ICH4/ICH4-M) USB2 EHCI Controller",
        (0x8086, 0x15f3) => "Ethernet Controller I225-V",
        (0x8086, 0x1533) => "I210 Gigabit Network Connection",
        // Red Hat: QEMU's own devices.
        (0x1b36, 0x0001) => "QEMU PCI-PCI bridge",
        (0x1b36, 0x0002) => "QEMU PCI 16550A Adapter",
        (0x1b36, 0x0003) => "QEMU PCI Dual-port 16550A Adapter",
        (0x1b36, 0x0004) => "QEMU PCI Quad-port 16550A Adapter",
        (0x1b36, 0x0005) => "QEMU PCI Test Device",
        (0x1b36, 0x0008) => "QEMU PCIe Host bridge",
        (0x1b36, 0x0009) => "QEMU PCI Expander bridge",
        (0x1b36, 0x000b) => "QEMU PCIe Expander bridge",
        (0x1b36, 0x000c) => "QEMU PCIe Root port",
        (0x1b36, 0x000d) => "QEMU XHCI Host Controller",
        (0x1b36, 0x000e) => "QEMU PCIe-to-PCI bridge",
        (0x1b36, 0x0010) => "QEMU NVM Express Controller",
        (0x1b36, 0x0011) => "QEMU PVPanic device",
        (0x1b36, 0x0100) => "QXL paravirtual graphic card",
        // Red Hat: virtio (transitional 0x1000-0x103f, modern 0x1040 + device type).
        (0x1af4, 0x1000) => "Virtio network device",
        (0x1af4, 0x1001) => "Virtio block device",
        (0x1af4, 0x1002) => "Virtio memory balloon",
        (0x1af4, 0x1003) => "Virtio console",
        (0x1af4, 0x1004) => "Virtio SCSI",
        (0x1af4, 0x1005) => "Virtio RNG",
        (0x1af4, 0x1009) => "Virtio filesystem",
        (0x1af4, 0x1041) => "Virtio 1.0 network device",
        (0x1af4, 0x1042) => "Virtio 1.0 block device",
        (0x1af4, 0x1043) => "Virtio 1.0 console",
        (0x1af4, 0x1044) => "Virtio 1.0 RNG",
        (0x1af4, 0x1045) => "Virtio 1.0 memory balloon",
        (0x1af4, 0x1048) => "Virtio 1.0 SCSI",
        (0x1af4, 0x1049) => "Virtio 1.0 filesystem",
        (0x1af4, 0x1050) => "Virtio 1.0 GPU",
        (0x1af4, 0x1052) => "Virtio 1.0 input",
        (0x1af4, 0x1053) => "Virtio 1.0 socket",
        (0x1af4, 0x1110) => "Inter-VM shared memory",
        // QEMU's "1234" devices (bochs-display/stdvga, and the edu teaching device).
        (0x1234, 0x1111) => "QEMU Virtual Video Controller",
        (0x1234, 0x11e8) => "QEMU edu device",
        // Others seen in virtual machines and on common boards.
        (0x1013, 0x00b8) => "GD 5446",
        (0x15ad, 0x0405) => "SVGA II Adapter",
        (0x15ad, 0x07b0) => "VMXNET3 Ethernet Controller",
        (0x80ee, 0xbeef) => "VirtualBox Graphics Adapter",
        (0x80ee, 0xcafe) => "VirtualBox Guest Service",
        (0x10ec, 0x8139) => "RTL-8100/8101L/8139 PCI Fast Ethernet Adapter",
        (0x10ec, 0x8168) => "RTL8111/8168/8211/8411 PCI Express Gigabit Ethernet Controller",
        (0x1d0f, 0xec20) => "Elastic Network Adapter (ENA)",
        (0x1d0f, 0x8061) => "NVMe EBS Controller",
        _ => return None,
    })
}

/// Name of a programming interface, for the few classes where `lspci -v` shows one (as in
/// `pci.ids`).
pub fn prog_if_name(class: u8, subclass: u8, prog_if: u8) -> Option<&'static str> {
    Some(match (class, subclass, prog_if) {
        (0x01, 0x01, 0x80) => "ISA Compatibility mode-only controller, supports bus mastering",
        (0x01, 0x01, 0x8a) => {
            "ISA Compatibility mode controller, supports both channels switched to PCI native mode, supports bus mastering"
        }
        (0x01, 0x06, 0x01) => "AHCI 1.0",
        (0x01, 0x08, 0x01) => "NVMHCI",
        (0x01, 0x08, 0x02) => "NVM Express",
        (0x03, 0x00, 0x00) => "VGA controller",
        (0x06, 0x04, 0x01) => "Subtractive decode",
        (0x07, 0x00, 0x02) => "16550",
        (0x0c, 0x03, 0x00) => "UHCI",
        (0x0c, 0x03, 0x10) => "OHCI",
        (0x0c, 0x03, 0x20) => "EHCI",
        (0x0c, 0x03, 0x30) => "XHCI",
        _ => return None,
    })
}

/// Name of a legacy capability that `lspci -v` shows by name alone (PCI Code and ID
/// Assignment 1.11 §2, spelled as pciutils prints them); the ones with fields (MSI, MSI-X,
/// Express, Power Management, vendor-specific) are formatted in `lspci`.
pub fn capability_name(id: u8) -> Option<&'static str> {
    Some(match id {
        0x01 => "Power Management",
        0x02 => "AGP",
        0x03 => "Vital Product Data",
        0x04 => "Slot ID",
        0x05 => "MSI",
        0x06 => "CompactPCI hot-swap <?>",
        0x07 => "PCI-X",
        0x08 => "HyperTransport",
        0x09 => "Vendor Specific Information",
        0x0a => "Debug port",
        0x0b => "CompactPCI central resource control <?>",
        0x0c => "Hot-plug capable",
        0x0d => "Subsystem",
        0x0e => "AGP3 <?>",
        0x0f => "Secure device <?>",
        0x10 => "Express",
        0x11 => "MSI-X",
        0x12 => "SATA HBA",
        0x13 => "PCI Advanced Features",
        0x14 => "Enhanced Allocation (EA)",
        0x15 => "Flattening Portal Bridge (FPB)",
        _ => return None,
    })
}

/// Name of a PCI Express extended capability (PCI Code and ID Assignment 1.11 §3, spelled
/// as pciutils prints them).
pub fn extended_capability_name(id: u16) -> Option<&'static str> {
    Some(match id {
        0x0001 => "Advanced Error Reporting",
        0x0002 | 0x0009 => "Virtual Channel",
        0x0003 => "Device Serial Number",
        0x0004 => "Power Budgeting <?>",
        0x0005 => "Root Complex Link <?>",
        0x0006 => "Root Complex Internal Link <?>",
        0x0007 => "Root Complex Event Collector <?>",
        0x0008 => "Multi-Function Virtual Channel <?>",
        0x000a => "Root Complex Register Block <?>",
        0x000b => "Vendor Specific Information",
        0x000c => "Configuration Access Correlation <?>",
        0x000d => "Access Control Services",
        0x000e => "Alternative Routing-ID Interpretation (ARI)",
        0x000f => "Address Translation Service (ATS)",
        0x0010 => "Single Root I/O Virtualization (SR-IOV)",
        0x0011 => "Multi-Root I/O Virtualization (MR-IOV) <?>",
        0x0012 => "Multicast",
        0x0013 => "Page Request Interface (PRI)",
        0x0015 => "Resizable BAR <?>",
        0x0016 => "Dynamic Power Allocation (DPA)",
        0x0017 => "TPH Requester",
        0x0018 => "Latency Tolerance Reporting",
        0x0019 => "Secondary PCI Express",
        0x001a => "Protocol Multiplexing <?>",
        0x001b => "Process Address Space ID (PASID)",
        0x001c => "LN Requester <?>",
        0x001d => "Downstream Port Containment",
        0x001e => "L1 PM Substates",
        0x001f => "Precision Time Measurement",
        0x0023 => "Designated Vendor-Specific",
        0x0024 => "VF Resizable BAR <?>",
        0x0025 => "Data Link Feature <?>",
        0x0026 => "Physical Layer 16.0 GT/s <?>",
        0x0027 => "Lane Margining at the Receiver <?>",
        0x002a => "Physical Layer 32.0 GT/s <?>",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_pci_ids() {
        assert_eq!(class_name(0x01, 0x06), Some("SATA controller"));
        assert_eq!(class_name(0x06, 0x42), Some("Bridge"));
        assert_eq!(class_name(0x77, 0x00), None);
        assert_eq!(vendor_name(0x1af4), Some("Red Hat, Inc."));
        assert_eq!(device_name(0x1b36, 0x000e), Some("QEMU PCIe-to-PCI bridge"));
        assert_eq!(device_name(0x8086, 0x0000), None);
        assert_eq!(prog_if_name(0x01, 0x08, 0x02), Some("NVM Express"));
        assert_eq!(capability_name(0x13), Some("PCI Advanced Features"));
        assert_eq!(capability_name(0x16), None);
        assert_eq!(
            extended_capability_name(0x0001),
            Some("Advanced Error Reporting")
        );
        assert_eq!(
            extended_capability_name(0x000e),
            Some("Alternative Routing-ID Interpretation (ARI)")
        );
        assert_eq!(extended_capability_name(0x0fff), None);
    }
}
