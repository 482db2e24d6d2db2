//! Three tiny programs the benchmark builds byte by byte, so that it needs no assembler and
//! no C compiler: two floor kernels and a clock reader for Linux's userspace.
//!
//! - [`floor_pvh`]: an ELF with a PVH entry note (what `-kernel` boots for this kernel) and
//!   [`floor_bzimage`]: a bzImage (boot protocol 2.06, what `-kernel` boots for Linux). Each
//!   reads the TSC as its first instruction, prints it on COM1 as 16 hexadecimal digits and a
//!   newline, and exits through `isa-debug-exit` (QEMU exit code 33). Booted with the same
//!   QEMU command line as the kernels they stand for, they measure the *firmware floor*:
//!   QEMU start to a kernel's first instruction, in wall time and, under `-icount
//!   shift=0,sleep=off`, in guest instructions (the TSC they print). The PVH one runs in 32-bit
//!   protected mode (as PVH enters), the bzImage one in real mode at the setup code's entry,
//!   `setup_seg + 0x20 : 0` (where QEMU's `linuxboot_dma` option ROM jumps), which is Linux's
//!   first instruction.
//! - [`linux_clock`]: a static x86-64 Linux executable with two entry points: `tsc` prints
//!   `rdtsc` in decimal (under `-icount shift=0` the guest instruction count since QEMU
//!   started) and `clock` prints `CLOCK_MONOTONIC` in nanoseconds; busybox can do neither.
//!
//! The machine code is listed beside the bytes (GNU `as` syntax; assembled once and copied
//! here). The Linux program is tested on the host by running it.

/// 32-bit and 16-bit encodings of one routine: `rdtsc`, the 64-bit value printed as 16
/// lowercase hexadecimal digits on port 0x3f8, a newline, `out 0x10` to port 0xf4.
///
/// ```text
///   rdtsc
///   mov %eax, %ebx          ; low half
///   mov %edx, %esi          ; high half
///   mov $16, %ecx
///   mov $0x3f8, %dx
/// 1:mov %esi, %eax
///   shr $28, %eax           ; top nibble
///   shld $4, %ebx, %esi     ; esi:ebx <<= 4
///   shl $4, %ebx
///   add $'0', %al
///   cmp $'9', %al
///   jbe 2f
///   add $('a' - '9' - 1), %al
/// 2:out %al, %dx
///   loop 1b
///   mov $'\n', %al
///   out %al, %dx
///   mov $0x10, %al
///   out %al, $0xf4          ; isa-debug-exit: QEMU exits with 33
/// 3:hlt
///   jmp 3b
/// ```
const FLOOR_CODE32: [u8; 48] = [
    0x0f, 0x31, 0x89, 0xc3, 0x89, 0xd6, 0xb9, 0x10, 0x00, 0x00, 0x00, 0x66, 0xba, 0xf8, 0x03, 0x89,
    0xf0, 0xc1, 0xe8, 0x1c, 0x0f, 0xa4, 0xde, 0x04, 0xc1, 0xe3, 0x04, 0x04, 0x30, 0x3c, 0x39, 0x76,
    0x02, 0x04, 0x27, 0xee, 0xe2, 0xe9, 0xb0, 0x0a, 0xee, 0xb0, 0x10, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd,
];

/// The same routine assembled with `.code16` (operand-size prefixes on the 32-bit moves).
const FLOOR_CODE16: [u8; 54] = [
    0x0f, 0x31, 0x66, 0x89, 0xc3, 0x66, 0x89, 0xd6, 0x66, 0xb9, 0x10, 0x00, 0x00, 0x00, 0xba, 0xf8,
    0x03, 0x66, 0x89, 0xf0, 0x66, 0xc1, 0xe8, 0x1c, 0x66, 0x0f, 0xa4, 0xde, 0x04, 0x66, 0xc1, 0xe3,
    0x04, 0x04, 0x30, 0x3c, 0x39, 0x76, 0x02, 0x04, 0x27, 0xee, 0xe2, 0xe5, 0xb0, 0x0a, 0xee, 0xb0,
    0x10, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd,
];

/// The Linux program (x86-64):
///
/// ```text
/// tsc:                      ; offset 0x00
///   rdtsc
///   shl $32, %rdx
///   or %rdx, %rax
///   jmp print
/// clock:                    ; offset 0x0b
///   mov $228, %eax          ; clock_gettime
///   mov $1, %edi            ; CLOCK_MONOTONIC
///   lea -32(%rsp), %rsi
///   syscall
///   imul $1000000000, -32(%rsp), %rax
///   add -24(%rsp), %rax
/// print:                    ; rax in decimal and '\n', below the stack pointer
///   lea -1(%rsp), %rsi
///   movb $'\n', (%rsi)
///   mov $10, %ecx
/// 1:xor %edx, %edx
///   div %rcx
///   add $'0', %dl
///   dec %rsi
///   mov %dl, (%rsi)
///   test %rax, %rax
///   jnz 1b
///   mov %rsp, %rdx
///   sub %rsi, %rdx          ; length
///   mov $1, %eax            ; write(1, rsi, rdx)
///   mov $1, %edi
///   syscall
///   mov $60, %eax           ; exit(0)
///   xor %edi, %edi
///   syscall
/// ```
const CLOCK_CODE: [u8; 100] = [
    0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0xeb, 0x1f, 0xb8, 0xe4, 0x00, 0x00, 0x00,
    0xbf, 0x01, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x74, 0x24, 0xe0, 0x0f, 0x05, 0x48, 0x69, 0x44, 0x24,
    0xe0, 0x00, 0xca, 0x9a, 0x3b, 0x48, 0x03, 0x44, 0x24, 0xe8, 0x48, 0x8d, 0x74, 0x24, 0xff, 0xc6,
    0x06, 0x0a, 0xb9, 0x0a, 0x00, 0x00, 0x00, 0x31, 0xd2, 0x48, 0xf7, 0xf1, 0x80, 0xc2, 0x30, 0x48,
    0xff, 0xce, 0x88, 0x16, 0x48, 0x85, 0xc0, 0x75, 0xee, 0x48, 0x89, 0xe2, 0x48, 0x29, 0xf2, 0xb8,
    0x01, 0x00, 0x00, 0x00, 0xbf, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8, 0x3c, 0x00, 0x00, 0x00,
    0x31, 0xff, 0x0f, 0x05,
];

/// Entry offsets in [`CLOCK_CODE`].
const CLOCK_TSC_ENTRY: u64 = 0x00;
const CLOCK_MONOTONIC_ENTRY: u64 = 0x0b;

/// What [`linux_clock`] prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// `rdtsc`.
    Tsc,
    /// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds.
    Monotonic,
}

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_X86_64: u16 = 62;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical entry point of a PVH kernel.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// An ELF64 header for an x86-64 executable with `phnum` program headers right after it.
fn elf_header(out: &mut Vec<u8>, entry: u64, phnum: u16) {
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    put16(out, 2); // ET_EXEC
    put16(out, EM_X86_64);
    put32(out, 1); // EV_CURRENT
    put64(out, entry);
    put64(out, EHDR_SIZE as u64); // program headers
    put64(out, 0); // no section headers
    put32(out, 0); // flags
    put16(out, EHDR_SIZE as u16);
    put16(out, PHDR_SIZE as u16);
    put16(out, phnum);
    put16(out, 64); // section header size
    put16(out, 0);
    put16(out, 0);
}

#[allow(clippy::too_many_arguments)]
fn program_header(
    out: &mut Vec<u8>,
    kind: u32,
    flags: u32,
    offset: u64,
    address: u64,
    size: u64,
    align: u64,
) {
    put32(out, kind);
    put32(out, flags);
    put64(out, offset);
    put64(out, address); // virtual
    put64(out, address); // physical
    put64(out, size);
    put64(out, size);
    put64(out, align);
}

/// The Linux clock program as a static ELF (load address 0x400000, one segment).
pub fn linux_clock(clock: Clock) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    let code_at = (EHDR_SIZE + PHDR_SIZE) as u64;
    let entry = match clock {
        Clock::Tsc => CLOCK_TSC_ENTRY,
        Clock::Monotonic => CLOCK_MONOTONIC_ENTRY,
    };
    let size = code_at + CLOCK_CODE.len() as u64;
    let mut out = Vec::new();
    elf_header(&mut out, BASE + code_at + entry, 1);
    program_header(&mut out, PT_LOAD, 5, 0, BASE, size, 0x1000);
    out.extend_from_slice(&CLOCK_CODE);
    out
}

/// The PVH floor kernel: an ELF loaded at 1 MiB whose `PT_NOTE` segment (alignment 4)
/// carries `XEN_ELFNOTE_PHYS32_ENTRY` with an 8-byte entry address.
pub fn floor_pvh() -> Vec<u8> {
    const BASE: u64 = 0x10_0000;
    let note_at = EHDR_SIZE + 2 * PHDR_SIZE;
    let note_size = 12 + 4 + 8;
    let code_at = (note_at + note_size) as u64;
    let entry = BASE + code_at;
    let size = code_at + FLOOR_CODE32.len() as u64;
    let mut out = Vec::new();
    elf_header(&mut out, entry, 2);
    program_header(&mut out, PT_LOAD, 7, 0, BASE, size, 0x1000);
    program_header(
        &mut out,
        PT_NOTE,
        4,
        note_at as u64,
        BASE + note_at as u64,
        note_size as u64,
        4,
    );
    put32(&mut out, 4); // name size: "Xen\0"
    put32(&mut out, 8); // descriptor size
    put32(&mut out, XEN_ELFNOTE_PHYS32_ENTRY);
    out.extend_from_slice(b"Xen\0");
    put64(&mut out, entry);
    out.extend_from_slice(&FLOOR_CODE32);
    out
}

/// Offsets in a bzImage's setup header (`Documentation/arch/x86/boot.rst`).
const SETUP_SECTS: usize = 0x1f1;
const BOOT_FLAG: usize = 0x1fe;
const JUMP: usize = 0x200;
const HEADER_MAGIC: usize = 0x202;
const VERSION: usize = 0x206;
const LOADFLAGS: usize = 0x211;
const CODE32_START: usize = 0x214;
const INITRD_ADDR_MAX: usize = 0x22c;
const CMDLINE_SIZE: usize = 0x238;
/// Where the real-mode code goes, past the 2.06 header.
const SETUP_CODE: usize = 0x280;

/// The bzImage floor kernel: one setup sector after the boot sector (the real-mode code at
/// `SETUP_CODE`, reached by the short jump at 0x200), then one sector of protected-mode
/// "kernel" that never runs. Boot protocol 2.06, loaded high (`LOADED_HIGH`), so QEMU puts
/// the setup code at 0x10000 and accepts an initrd.
pub fn floor_bzimage() -> Vec<u8> {
    let mut out = vec![0u8; 3 * 512];
    out[SETUP_SECTS] = 1;
    out[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
    out[JUMP] = 0xeb; // jmp rel8
    out[JUMP + 1] = u8::try_from(SETUP_CODE - (JUMP + 2)).expect("short jump");
    out[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
    out[VERSION..VERSION + 2].copy_from_slice(&0x0206u16.to_le_bytes());
    out[LOADFLAGS] = 0x01; // LOADED_HIGH
    out[CODE32_START..CODE32_START + 4].copy_from_slice(&0x10_0000u32.to_le_bytes());
    out[INITRD_ADDR_MAX..INITRD_ADDR_MAX + 4].copy_from_slice(&0x37ff_ffffu32.to_le_bytes());
    out[CMDLINE_SIZE..CMDLINE_SIZE + 4].copy_from_slice(&2047u32.to_le_bytes());
    out[SETUP_CODE..SETUP_CODE + FLOOR_CODE16.len()].copy_from_slice(&FLOOR_CODE16);
    out
}

/// The TSC a floor kernel printed: the first line of 16 hexadecimal digits.
pub fn parse_floor_tsc(serial: &str) -> Option<u64> {
    serial.lines().map(str::trim).find_map(|line| {
        (line.len() == 16 && line.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(line, 16).ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn pvh_note_names_the_entry() {
        let elf = floor_pvh();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(u16_at(&elf, 18), EM_X86_64);
        assert_eq!(u16_at(&elf, 56), 2, "two program headers");
        let note_ph = EHDR_SIZE + PHDR_SIZE;
        assert_eq!(u32_at(&elf, note_ph), PT_NOTE);
        assert_eq!(u64_at(&elf, note_ph + 48), 4, "PT_NOTE alignment 4");
        let note = u64_at(&elf, note_ph + 8) as usize;
        assert_eq!(u32_at(&elf, note + 8), XEN_ELFNOTE_PHYS32_ENTRY);
        assert_eq!(&elf[note + 12..note + 16], b"Xen\0");
        let entry = u64_at(&elf, note + 16);
        assert_eq!(entry, u64_at(&elf, 24), "note and e_entry agree");
        // The entry is the routine, inside the loaded segment.
        let offset = (entry - 0x10_0000) as usize;
        assert_eq!(&elf[offset..], &FLOOR_CODE32);
        assert_eq!(
            u64_at(&elf, EHDR_SIZE + 32),
            elf.len() as u64,
            "PT_LOAD covers the file"
        );
    }

    #[test]
    fn bzimage_header_and_entry() {
        let image = floor_bzimage();
        assert_eq!(&image[HEADER_MAGIC..HEADER_MAGIC + 4], b"HdrS");
        assert_eq!(u16_at(&image, VERSION), 0x0206);
        assert_eq!(u16_at(&image, BOOT_FLAG), 0xaa55);
        // QEMU's loader: (setup_sects + 1) * 512 bytes of setup, the rest is the kernel.
        let setup = (usize::from(image[SETUP_SECTS]) + 1) * 512;
        assert!(setup < image.len());
        assert!(SETUP_CODE + FLOOR_CODE16.len() <= setup);
        // The jump at 0x200 lands on the routine.
        assert_eq!(image[JUMP], 0xeb);
        let target = JUMP + 2 + usize::from(image[JUMP + 1]);
        assert_eq!(&image[target..target + 2], &[0x0f, 0x31], "rdtsc first");
        assert_eq!(image[LOADFLAGS] & 1, 1);
    }

    #[test]
    fn floor_routines_end_in_the_exit_write() {
        for code in [&FLOOR_CODE32[..], &FLOOR_CODE16[..]] {
            assert_eq!(&code[..2], &[0x0f, 0x31]);
            // mov $0x10, %al; out %al, $0xf4; hlt; jmp .-1
            assert_eq!(
                &code[code.len() - 7..],
                &[0xb0, 0x10, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]
            );
        }
    }

    #[test]
    fn floor_tsc_line() {
        assert_eq!(parse_floor_tsc("000000000101fe2a\n"), Some(0x0101_fe2a));
        assert_eq!(
            parse_floor_tsc("junk\r\n00000000deadbeef\r\n"),
            Some(0xdead_beef)
        );
        assert_eq!(parse_floor_tsc("deadbeef\n"), None);
        assert_eq!(parse_floor_tsc(""), None);
    }

    /// Runs the clock program on the host (an x86-64 Linux machine, like the guest).
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn clock_program_runs_on_the_host() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::unique_temp_dir("clock");
        std::fs::create_dir_all(&dir).unwrap();
        let read = |clock: Clock| -> u64 {
            let path = dir.join(format!("{clock:?}"));
            std::fs::write(&path, linux_clock(clock)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            let out = std::process::Command::new(&path).output().unwrap();
            assert!(out.status.success(), "{clock:?}: {:?}", out.status);
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.ends_with('\n'), "{text:?}");
            text.trim().parse().unwrap()
        };
        let t0 = read(Clock::Tsc);
        let t1 = read(Clock::Tsc);
        assert!(t1 > t0, "the TSC advances: {t0} then {t1}");
        let m0 = read(Clock::Monotonic);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let m1 = read(Clock::Monotonic);
        assert!(
            (15_000_000..5_000_000_000).contains(&(m1 - m0)),
            "monotonic nanoseconds across a 20 ms sleep: {m0} then {m1}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
