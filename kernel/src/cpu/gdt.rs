//! The kernel's GDT and TSS (Intel SDM vol. 3A §3.4.5, §7.7).
//!
//! Long mode ignores segment bases and limits, so the GDT only holds a 64-bit code segment,
//! a data segment and the TSS. The TSS matters for its Interrupt Stack Table: double fault,
//! NMI and machine check each switch to a stack of their own (SDM vol. 3A §6.14.5), so they
//! are reported even when the kernel stack is exhausted or corrupt.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slot (0-based, as the `x86_64` crate counts) for #DF.
pub const DOUBLE_FAULT_IST: u16 = 0;
/// IST slot for NMI.
pub const NMI_IST: u16 = 1;
/// IST slot for #MC.
pub const MACHINE_CHECK_IST: u16 = 2;

const IST_STACK_SIZE: usize = 16 * 1024;

/// One IST stack. Aligned so the CPU's 16-byte alignment of the pushed frame holds.
#[repr(C, align(16))]
struct Stack([u8; IST_STACK_SIZE]);

static mut DOUBLE_FAULT_STACK: Stack = Stack([0; IST_STACK_SIZE]);
static mut NMI_STACK: Stack = Stack([0; IST_STACK_SIZE]);
static mut MACHINE_CHECK_STACK: Stack = Stack([0; IST_STACK_SIZE]);

struct Tables {
    gdt: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<Tables> = Once::new();

fn stack_top(stack: *const Stack) -> VirtAddr {
    VirtAddr::from_ptr(stack) + IST_STACK_SIZE as u64
}

/// Builds and loads the GDT and TSS, and reloads every segment register.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        // Only the addresses of the stacks are taken; the CPU is their sole user.
        tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] =
            stack_top(&raw const DOUBLE_FAULT_STACK);
        tss.interrupt_stack_table[NMI_IST as usize] = stack_top(&raw const NMI_STACK);
        tss.interrupt_stack_table[MACHINE_CHECK_IST as usize] =
            stack_top(&raw const MACHINE_CHECK_STACK);
        tss
    });
    let tables = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        Tables {
            gdt,
            code,
            data,
            tss,
        }
    });
    tables.gdt.load();
    // SAFETY: the selector names the 64-bit code segment of the GDT just loaded ('static).
    unsafe { CS::set_reg(tables.code) };
    for set in [DS::set_reg, ES::set_reg, SS::set_reg] {
        // SAFETY: the selector names the writable data segment of the same GDT.
        unsafe { set(tables.data) };
    }
    // SAFETY: the descriptor points at a 'static TSS, and the TSS is loaded exactly once.
    unsafe { load_tss(tables.tss) };
}
