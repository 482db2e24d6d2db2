//! Per-CPU tables: the GDT with its TSS (and the IST stacks it names), and the IDT with a
//! handler for every CPU exception.

pub mod exceptions;
pub mod gdt;
pub mod recover;
pub mod unwind;
