//! The IDT and the CPU exceptions (Intel SDM vol. 3A §6.10-6.15).
//!
//! Every one of the 256 vectors gets a small naked stub that pushes a uniform
//! [`TrapFrame`] (a zero error code where the CPU pushes none, the vector number, and all
//! general registers) and calls [`exception_dispatch`]. The report names the exception and
//! prints the vector, error code, RIP, CR2 and every general register on serial; then the
//! kernel fails (QEMU exits with the failure status; a real board halts). Vectors 32-255
//! (device interrupts, APIC timer, error and spurious vectors) go to
//! [`crate::interrupts::dispatch()`] and return with `iretq`.
//!
//! Double fault, NMI and machine check run on their own IST stacks (see [`super::gdt`]).
//! The IDT is a plain array of 256 gate descriptors built here, so the interrupt layer can
//! later install its own stubs for vectors 32..=255 the same way.

use core::arch::naked_asm;

use spin::Mutex;
use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::registers::control::Cr2;
use x86_64::structures::DescriptorTablePointer;

use super::gdt;
use crate::qemu;

/// Register state saved by the stubs, lowest address first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    /// General registers, pushed by the common stub.
    pub r15: u64,
    /// r14.
    pub r14: u64,
    /// r13.
    pub r13: u64,
    /// r12.
    pub r12: u64,
    /// r11.
    pub r11: u64,
    /// r10.
    pub r10: u64,
    /// r9.
    pub r9: u64,
    /// r8.
    pub r8: u64,
    /// rbp.
    pub rbp: u64,
    /// rdi.
    pub rdi: u64,
    /// rsi.
    pub rsi: u64,
    /// rdx.
    pub rdx: u64,
    /// rcx.
    pub rcx: u64,
    /// rbx.
    pub rbx: u64,
    /// rax.
    pub rax: u64,
    /// Vector number, pushed by the per-vector stub.
    pub vector: u64,
    /// Error code: the CPU's, or 0 pushed by the stub for vectors without one.
    pub error_code: u64,
    /// Interrupted instruction (pushed by the CPU from here on).
    pub rip: u64,
    /// Code segment.
    pub cs: u64,
    /// Flags.
    pub rflags: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Stack segment.
    pub ss: u64,
}

/// Exception names by vector (SDM vol. 3A Table 6-1).
const NAMES: [&str; 32] = [
    "divide error (#DE)",
    "debug (#DB)",
    "non-maskable interrupt (NMI)",
    "breakpoint (#BP)",
    "overflow (#OF)",
    "bound range exceeded (#BR)",
    "invalid opcode (#UD)",
    "device not available (#NM)",
    "double fault (#DF)",
    "coprocessor segment overrun",
    "invalid TSS (#TS)",
    "segment not present (#NP)",
    "stack-segment fault (#SS)",
    "general protection (#GP)",
    "page fault (#PF)",
    "reserved (15)",
    "x87 floating-point error (#MF)",
    "alignment check (#AC)",
    "machine check (#MC)",
    "SIMD floating-point (#XM)",
    "virtualization (#VE)",
    "control protection (#CP)",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "hypervisor injection (#HV)",
    "VMM communication (#VC)",
    "security (#SX)",
    "reserved (31)",
];

/// One 16-byte interrupt-gate descriptor (SDM vol. 3A §6.14.1, Figure 6-8).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// Bits 0-2: IST index (1-based, 0 = none).
    ist: u8,
    /// Present (bit 7), DPL (bits 5-6), type 0xE = 64-bit interrupt gate.
    attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(handler: u64, selector: u16, ist: Option<u16>) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector,
            ist: ist.map_or(0, |i| (i + 1) as u8),
            attributes: 0x8E,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Mutex<Idt> = Mutex::new(Idt([Gate::MISSING; 256]));

/// Vectors for which the CPU pushes an error code (SDM vol. 3A Table 6-1).
const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

macro_rules! stubs {
    ($($vector:literal),* $(,)?) => {
        /// Entry points of the 256 stubs, by vector.
        const STUBS: [unsafe extern "C" fn() -> !; 256] = [$(stub::<$vector>),*];
    };
}

stubs!(
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49,
    50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73,
    74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97,
    98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116,
    117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135,
    136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154,
    155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173,
    174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192,
    193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211,
    212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230,
    231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249,
    250, 251, 252, 253, 254, 255
);

/// Per-vector entry: makes the frame uniform, then joins [`common_stub`].
///
/// # Safety
/// Only the CPU may call this, through the IDT, as an interrupt-gate handler for `VECTOR`.
#[unsafe(naked)]
unsafe extern "C" fn stub<const VECTOR: u8>() -> ! {
    naked_asm!(
        // Vectors without an error code get a zero one so the frame is uniform.
        ".if {has_error} == 0",
        "push 0",
        ".endif",
        "push {vector}",
        "jmp {common}",
        has_error = const has_error_code(VECTOR) as u8,
        vector = const VECTOR as u64,
        common = sym common_stub,
    )
}

/// Saves the general registers and calls [`exception_dispatch`] with the frame.
///
/// # Safety
/// Only reached from a per-vector stub, with the vector and an error code on the stack.
#[unsafe(naked)]
unsafe extern "C" fn common_stub() -> ! {
    naked_asm!(
        "push rax",
        "push rbx",
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push rbp",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov rdi, rsp",
        "cld",
        "call {dispatch}",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rbp",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rbx",
        "pop rax",
        "add rsp, 16",
        "iretq",
        dispatch = sym exception_dispatch,
    )
}

/// Vectors 32-255 go to the interrupt dispatcher; exceptions are reported and fatal.
extern "C" fn exception_dispatch(frame: &mut TrapFrame) {
    if frame.vector >= 32 {
        crate::interrupts::dispatch(frame.vector as u8);
        return;
    }
    let name = NAMES
        .get(frame.vector as usize)
        .copied()
        .unwrap_or("unknown");
    let cr2 = Cr2::read_raw();
    // Inside a recovery point (ACPICA running firmware's AML): abandon that code, not the
    // machine. The report follows in the log of whoever set the recovery point.
    let (vector, rip) = (frame.vector, frame.rip);
    if super::recover::on_exception(frame, cr2) {
        crate::serial::write_fmt_emergency(format_args!(
            "CONTAINED exception {name} (vector {vector}) at RIP=0x{rip:x} CR2=0x{cr2:x}: the guarded code is abandoned\n",
        ));
        return;
    }
    crate::serial::write_fmt_emergency(format_args!(
        "EXCEPTION {name} (vector {vector}) error=0x{err:x} RIP=0x{rip:016x} CR2=0x{cr2:x}\n\
         \x20 CS=0x{cs:x} RFLAGS=0x{rflags:x} RSP=0x{rsp:016x} SS=0x{ss:x}\n\
         \x20 RAX=0x{rax:016x} RBX=0x{rbx:016x} RCX=0x{rcx:016x} RDX=0x{rdx:016x}\n\
         \x20 RSI=0x{rsi:016x} RDI=0x{rdi:016x} RBP=0x{rbp:016x} R8 =0x{r8:016x}\n\
         \x20 R9 =0x{r9:016x} R10=0x{r10:016x} R11=0x{r11:016x} R12=0x{r12:016x}\n\
         \x20 R13=0x{r13:016x} R14=0x{r14:016x} R15=0x{r15:016x}\n",
        vector = frame.vector,
        err = frame.error_code,
        rip = frame.rip,
        cs = frame.cs,
        rflags = frame.rflags,
        rsp = frame.rsp,
        ss = frame.ss,
        rax = frame.rax,
        rbx = frame.rbx,
        rcx = frame.rcx,
        rdx = frame.rdx,
        rsi = frame.rsi,
        rdi = frame.rdi,
        rbp = frame.rbp,
        r8 = frame.r8,
        r9 = frame.r9,
        r10 = frame.r10,
        r11 = frame.r11,
        r12 = frame.r12,
        r13 = frame.r13,
        r14 = frame.r14,
        r15 = frame.r15,
    ));
    if frame.vector == 14 {
        crate::serial::write_fmt_emergency(format_args!(
            "  page fault: {} access, {}, {}{}\n",
            if frame.error_code & 2 != 0 {
                "write"
            } else {
                "read"
            },
            if frame.error_code & 1 != 0 {
                "protection violation"
            } else {
                "page not present"
            },
            if frame.error_code & 4 != 0 {
                "user"
            } else {
                "supervisor"
            },
            if frame.error_code & 16 != 0 {
                ", instruction fetch"
            } else {
                ""
            },
        ));
    }
    qemu::exit(qemu::ExitCode::Failure)
}

/// Fills all 256 gates and loads the IDT. Call after [`gdt::init`].
pub fn init() {
    let selector = x86_64::instructions::segmentation::CS::get_reg().0;
    let mut idt = IDT.lock();
    for (vector, stub) in STUBS.iter().enumerate() {
        let ist = match vector {
            8 => Some(gdt::DOUBLE_FAULT_IST),
            2 => Some(gdt::NMI_IST),
            18 => Some(gdt::MACHINE_CHECK_IST),
            _ => None,
        };
        idt.0[vector] = Gate::interrupt(*stub as usize as u64, selector, ist);
    }
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::from_ptr(idt.0.as_ptr()),
    };
    // SAFETY: the IDT lives in a static, so it outlives its use by the CPU; every present
    // gate points at a stub that follows the interrupt-gate calling convention.
    unsafe { lidt(&pointer) };
}

use x86_64::instructions::segmentation::Segment as _;
