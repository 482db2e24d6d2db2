/*
 * A DSDT whose _PRT, _SEG, _BBN and \_S5 hold values outside their fields: what the AML
 * layer must refuse or say it narrowed, never fold onto another device, pin or bridge.
 */
DefinitionBlock ("", "DSDT", 2, "KERNEL", "MALFORMD", 1)
{
    Name (\_S5, Package () { 0x105, Zero })
    Scope (\_SB)
    {
        Device (LNKA)
        {
            Name (_HID, EisaId ("PNP0C0F"))
            Name (_UID, One)
            Name (BUFA, ResourceTemplate () { IRQ (Level, ActiveLow, Shared) {10} })
            Method (_CRS, 0) { Return (BUFA) }
            Method (_PRS, 0) { Return (BUFA) }
            Method (_SRS, 1) { }
        }
        Device (PCI0)
        {
            Name (_HID, EisaId ("PNP0A08"))
            Name (_CID, EisaId ("PNP0A03"))
            Name (_SEG, Zero)
            Name (_BBN, Zero)
            Name (_PRT, Package ()
            {
                Package () { 0x0001FFFF, Zero, Zero, 16 },
                Package () { 0x0001FFFF, 5, Zero, 20 },      // pin 5: no such pin
                Package () { 0x1230FFFF, Zero, Zero, 21 },   // device 0x1230: no such device
                Package () { 0x0002FFFF, 0x100, Zero, 22 },  // pin 0x100
                Package () { 0x00040000, Zero, Zero, 23 },   // function field not 0xFFFF
                Package () { 0x0003FFFF, One, LNKA, Zero },
            })
        }
        Device (PCI1)
        {
            Name (_HID, EisaId ("PNP0A08"))
            Name (_UID, One)
            Name (_SEG, 0x10001)                             // 16-bit field
            Name (_BBN, 0x180)                               // 8-bit field
        }
    }
}
