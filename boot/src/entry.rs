//! The shared 32-bit entry path: one ELF, two boot protocols.
//!
//! - **PVH** (Xen `XEN_ELFNOTE_PHYS32_ENTRY`, note type 18, used by `qemu -kernel`): the
//!   loader jumps to `pvh_start` in 32-bit protected mode, paging off, `%ebx` holding the
//!   physical address of `hvm_start_info`. The note lives in its own `PT_NOTE` segment with
//!   4-byte alignment and an 8-byte payload (QEMU rejects other shapes).
//! - **Multiboot2** (GRUB on BIOS and UEFI boards): the header below sits in the first 32 KiB
//!   of the file; GRUB jumps to the ELF entry `_start` in 32-bit protected mode with
//!   `%eax = 0x36d76289` and `%ebx` = the information structure (Multiboot2 spec 1.0 §3.2).
//!   There is deliberately no multiboot1 header: QEMU looks for one before the PVH note and
//!   refuses a 64-bit multiboot1 ELF, which would make `-kernel` unusable.
//!
//! Both paths record (loader, pointer), build identity page tables for the first 4 GiB with
//! 2 MiB pages (Intel SDM vol. 3A §4.5), enable PAE, long mode (EFER.LME) and paging, load a
//! minimal 64-bit GDT and call `kernel_main64(loader: u32, info: u32)` on a 64 KiB boot stack.
//! The kernel replaces these tables and this GDT as soon as it has a frame allocator.
//!
//! The kernel is linked at 1 MiB with virtual = physical addresses, so every symbol below is
//! also its physical address.

/// Value passed to `kernel_main64` as `loader` for PVH.
pub const LOADER_PVH: u32 = 1;
/// Value passed to `kernel_main64` as `loader` for multiboot2.
pub const LOADER_MULTIBOOT2: u32 = 2;

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
mb2_header_start:
    .long 0xe85250d6                                  /* magic */
    .long 0                                           /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header_start           /* header length */
    .long -(0xe85250d6 + 0 + (mb2_header_end - mb2_header_start))
    /* Framebuffer tag (type 5), optional (flags = 1): a screen on UEFI boards. */
    .balign 8
    .short 5
    .short 1
    .long 20
    .long 0
    .long 0
    .long 32
    /* End tag. */
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

    .section .note.Xen, "a", @note
    .balign 4
    .long 4                                           /* namesz: "Xen\0" */
    .long 8                                           /* descsz */
    .long 18                                          /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start

    .section .boot.text, "ax"
    .code32
    .global _start
_start:
    cli
    cld
    cmpl $0x36d76289, %eax
    jne .Lunknown_loader
    movl ${mb2}, %esi
    jmp .Lcommon

    .global pvh_start
pvh_start:
    cli
    cld
    movl ${pvh}, %esi

.Lcommon:
    movl $boot_stack_top, %esp
    movl %esi, boot_loader_kind
    movl %ebx, boot_info_address

    /* Long mode needs CPUID leaf 0x80000001 EDX bit 29. */
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb .Lno_long_mode
    movl $0x80000001, %eax
    cpuid
    btl $29, %edx
    jnc .Lno_long_mode
    movl %edx, %ebp                                   /* keep: bit 20 says NX exists */

    /* Zero the six table pages: PML4, PDPT, four page directories. */
    movl $boot_pml4, %edi
    xorl %eax, %eax
    movl $(6 * 4096 / 4), %ecx
    rep stosl

    /* PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3 (present | writable). */
    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $0x3, %eax
    movl %eax, boot_pdpt
    addl $4096, %eax
    movl %eax, boot_pdpt + 8
    addl $4096, %eax
    movl %eax, boot_pdpt + 16
    addl $4096, %eax
    movl %eax, boot_pdpt + 24

    /* 2048 entries of 2 MiB: present | writable | page size. Entry i maps i * 2 MiB. */
    movl $boot_pd, %edi
    movl $0x83, %eax
    xorl %edx, %edx
    movl $2048, %ecx
1:
    movl %eax, (%edi)
    movl %edx, 4(%edi)
    addl $0x200000, %eax
    adcl $0, %edx
    addl $8, %edi
    loop 1b

    /* CR4.PAE, then CR3, then EFER.LME (+ NXE where present), then CR0.PG | WP | PE. */
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    btl $20, %ebp
    jnc 2f
    orl $(1 << 11), %eax
2:
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16) | 1), %eax
    movl %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $.Llong_mode

.Lunknown_loader:
    movl $msg_unknown_loader, %esi
    jmp .Lfail
.Lno_long_mode:
    movl $msg_no_long_mode, %esi
.Lfail:
    /* Print the NUL-terminated message at %esi on COM1, then halt for good. */
    movw $0x3f8, %dx
3:
    lodsb
    testb %al, %al
    jz 4f
    outb %al, %dx
    jmp 3b
4:
    hlt
    jmp 4b

    .code64
.Llong_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl boot_loader_kind(%rip), %edi
    movl boot_info_address(%rip), %esi
    call kernel_main64
5:
    hlt
    jmp 5b

    .section .rodata.boot, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff                          /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff                          /* 0x10: data, DPL 0 */
boot_gdt_end:
boot_gdt_pointer:
    .short boot_gdt_end - boot_gdt - 1
    .quad boot_gdt
msg_unknown_loader:
    .asciz "boot: not started by a PVH or multiboot2 loader (bad magic in eax)\r\n"
msg_no_long_mode:
    .asciz "boot: this CPU has no long mode (x86_64); cannot continue\r\n"

    .section .data.boot, "aw"
    .balign 4
boot_loader_kind:
    .long 0
boot_info_address:
    .long 0

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
    .balign 16
boot_stack_bottom:
    .skip 64 * 1024
boot_stack_top:
    .code64
    .text
"#,
    pvh = const LOADER_PVH,
    mb2 = const LOADER_MULTIBOOT2,
    options(att_syntax)
);
