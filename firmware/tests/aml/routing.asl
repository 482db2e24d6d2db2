/*
 * A firmware written to test the AML layer (tests/aml.rs): link devices of both descriptor
 * kinds, one set by firmware and one that needs _SRS, a _PRT that depends on \_PIC, nested
 * and recursive mutexes, an _INI that never ends, one that sleeps forever, and \_S5.
 */
DefinitionBlock ("", "DSDT", 2, "RUSTOS", "AMLTEST", 1)
{
    Name (PICM, Zero)
    Method (\_PIC, 1, NotSerialized)
    {
        PICM = Arg0
    }

    Mutex (MTXA, 0)
    Mutex (MTXB, 0)
    Name (BVAL, Zero)

    Scope (\_SB)
    {
        /* Set by firmware; an IRQ() descriptor whose mask is 0x8000 (IRQ 15). */
        Device (LNKA)
        {
            Name (_HID, EisaId ("PNP0C0F"))
            Name (_UID, One)
            Name (_PRS, ResourceTemplate () { IRQ (Level, ActiveLow, Shared) {15} })
            Method (_CRS, 0, NotSerialized)
            {
                Return (ResourceTemplate () { IRQ (Level, ActiveLow, Shared) {15} })
            }
            Method (_SRS, 1, NotSerialized) { }
        }

        /* Disabled until _SRS; Interrupt() descriptors (GSIs). */
        Device (LNKB)
        {
            Name (_HID, EisaId ("PNP0C0F"))
            Name (_UID, 2)
            Name (_PRS, ResourceTemplate ()
            {
                Interrupt (ResourceConsumer, Level, ActiveHigh, Shared, , , ) {20, 21}
            })
            Method (_CRS, 0, Serialized)
            {
                Name (RTL, ResourceTemplate ()
                {
                    Interrupt (ResourceConsumer, Level, ActiveHigh, Shared, , , ) {0}
                })
                CreateDWordField (RTL, 5, INTN)
                INTN = BVAL
                Return (RTL)
            }
            Method (_SRS, 1, NotSerialized)
            {
                CreateDWordField (Arg0, 5, NEWV)
                BVAL = NEWV
            }
        }

        Device (PCI0)
        {
            Name (_HID, EisaId ("PNP0A08"))
            Name (_CID, EisaId ("PNP0A03"))
            Name (_SEG, Zero)
            Name (_BBN, Zero)
            Method (_PRT, 0, NotSerialized)
            {
                If (PICM)
                {
                    Return (Package ()
                    {
                        Package () { 0x0001FFFF, Zero, Zero, 16 },
                        Package () { 0x0002FFFF, Zero, \_SB.LNKA, Zero },
                        Package () { 0x0003FFFF, One, LNKB, Zero },
                        Package () { 0x0004FFFF, 2, \_SB.LNKA, Zero }
                    })
                }
                /* PIC mode: what firmware says when \_PIC(1) did not happen. */
                Return (Package () { Package () { 0x0001FFFF, Zero, Zero, 9 } })
            }
            /* Grants what is asked except SHPC/PME/AER, the way QEMU's q35 does with native
               hot-plug; refuses another UUID. */
            Method (_OSC, 4, NotSerialized)
            {
                CreateDWordField (Arg3, Zero, CDW1)
                If (Arg0 == ToUUID ("33db4d5b-1ff7-401c-9657-7441c03dd766"))
                {
                    CreateDWordField (Arg3, 4, CDW2)
                    CreateDWordField (Arg3, 8, CDW3)
                    Local0 = CDW3
                    Local0 &= 0x11
                    If (Arg1 != One)
                    {
                        CDW1 |= 0x08
                    }
                    If (CDW3 != Local0)
                    {
                        CDW1 |= 0x10
                    }
                    CDW3 = Local0
                }
                Else
                {
                    CDW1 |= 0x04
                }
                Return (Arg3)
            }
            Method (_INI, 0, NotSerialized)
            {
                /* Two distinct mutexes, one of them taken twice by the same thread. */
                Acquire (MTXA, 0xFFFF)
                Acquire (MTXB, 0xFFFF)
                Acquire (MTXA, 0xFFFF)
                Release (MTXA)
                Release (MTXB)
                Release (MTXA)
            }
        }

        Device (PCI1)
        {
            Name (_HID, EisaId ("PNP0A03"))
            Name (_UID, One)
            Name (_CRS, ResourceTemplate ()
            {
                WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
                    0x0000, 0x0080, 0x00FE, 0x0000, 0x007F, , , )
            })
        }

        Device (HANG)
        {
            Name (_HID, "RUST0001")
            Method (_INI, 0, NotSerialized)
            {
                While (One) { }
            }
        }

        Device (SLEP)
        {
            Name (_HID, "RUST0002")
            Method (_INI, 0, NotSerialized)
            {
                While (One) { Sleep (100) }
            }
        }
    }

    Name (\_S5, Package () { 0x05, 0x06, Zero, Zero })
}
