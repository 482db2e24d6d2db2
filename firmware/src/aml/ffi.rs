//! ACPICA's C interface: the few entry points, globals and structures this crate uses.
//!
//! Layouts were checked against ACPICA 20250404's headers (the version the `acpica` crate
//! bundles, built by `build.rs`) on x86_64: `ACPI_OBJECT` is 24 bytes (type at 0; integer value, or string/buffer/
//! package length at 4 and pointer at 8), `ACPI_BUFFER` is (length, pointer), and a
//! `ACPI_PCI_ROUTING_TABLE` entry is (length u32, pin u32, address u64, source index u32,
//! NUL-terminated source name at 20). Resource descriptors are not read through ACPICA's
//! packed structures: `_CRS`/`_PRS` are evaluated as raw AML buffers and decoded by
//! [`super::resources`], which is plain Rust with host tests.

#![allow(non_snake_case, non_upper_case_globals, dead_code)]

use core::ffi::{c_char, c_void};

/// `ACPI_STATUS`.
pub type Status = u32;
/// `ACPI_HANDLE`.
pub type Handle = *mut c_void;

pub const AE_OK: Status = 0x0000;
pub const AE_ERROR: Status = 0x0001;
pub const AE_NO_MEMORY: Status = 0x0004;
pub const AE_NOT_FOUND: Status = 0x0005;
pub const AE_NOT_EXIST: Status = 0x0006;
pub const AE_ALREADY_EXISTS: Status = 0x0007;
pub const AE_BUFFER_OVERFLOW: Status = 0x000B;
pub const AE_NOT_IMPLEMENTED: Status = 0x000E;
pub const AE_SUPPORT: Status = 0x000F;
pub const AE_LIMIT: Status = 0x0010;
pub const AE_TIME: Status = 0x0011;
pub const AE_BAD_PARAMETER: Status = 0x1001;

/// `ACPI_TYPE_*` (actypes.h).
pub const TYPE_INTEGER: u32 = 1;
pub const TYPE_STRING: u32 = 2;
pub const TYPE_BUFFER: u32 = 3;
pub const TYPE_PACKAGE: u32 = 4;
pub const TYPE_DEVICE: u32 = 6;
pub const TYPE_LOCAL_REFERENCE: u32 = 0x14;

/// `ACPI_ALLOCATE_BUFFER`: ACPICA allocates the result with `AcpiOsAllocate`.
pub const ALLOCATE_BUFFER: usize = usize::MAX;
/// `ACPI_FULL_PATHNAME` for `AcpiGetName`.
pub const FULL_PATHNAME: u32 = 0;

/// `AcpiEnableSubsystem` / `AcpiInitializeObjects` flags (acpixf.h).
pub const NO_ACPI_ENABLE: u32 = 0x02;
pub const NO_EVENT_INIT: u32 = 0x08;
pub const NO_HANDLER_INIT: u32 = 0x10;
pub const FULL_INITIALIZATION: u32 = 0;

/// `ACPI_OBJECT` (actypes.h), the union seen as its common prefix.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Object {
    /// `ACPI_TYPE_*`.
    pub kind: u32,
    /// String/buffer length or package count (unused for integers).
    pub count: u32,
    /// Integer value, or string/buffer/package pointer, or reference handle.
    pub value: u64,
    /// Reference: actual type; processor: PBLK length (unused here).
    pub extra: u64,
}

const _: () = assert!(
    size_of::<Object>() == 24,
    "ACPI_OBJECT is 24 bytes on x86_64"
);

/// `ACPI_OBJECT_LIST`.
#[repr(C)]
pub struct ObjectList {
    /// Number of objects.
    pub count: u32,
    /// The objects.
    pub pointer: *mut Object,
}

/// `ACPI_BUFFER`.
#[repr(C)]
pub struct Buffer {
    /// Length in bytes, or [`ALLOCATE_BUFFER`] on input.
    pub length: usize,
    /// The data (allocated by ACPICA with `AcpiOsAllocate` when asked to).
    pub pointer: *mut c_void,
}

/// `ACPI_WALK_CALLBACK`.
pub type WalkCallback = unsafe extern "C" fn(Handle, u32, *mut c_void, *mut *mut c_void) -> Status;

/// `ACPI_OSD_EXEC_CALLBACK`.
pub type ExecCallback = unsafe extern "C" fn(*mut c_void);

unsafe extern "C" {
    pub fn AcpiInitializeSubsystem() -> Status;

    pub fn AcpiInitializeTables(initial: *mut c_void, count: u32, allow_resize: u8) -> Status;
    pub fn AcpiLoadTables() -> Status;
    pub fn AcpiEnableSubsystem(flags: u32) -> Status;
    pub fn AcpiInitializeObjects(flags: u32) -> Status;

    pub fn AcpiEvaluateObject(
        object: Handle,
        pathname: *const c_char,
        parameters: *mut ObjectList,
        result: *mut Buffer,
    ) -> Status;
    pub fn AcpiGetHandle(parent: Handle, pathname: *const c_char, handle: *mut Handle) -> Status;
    pub fn AcpiGetName(object: Handle, name_type: u32, buffer: *mut Buffer) -> Status;
    pub fn AcpiGetDevices(
        hid: *const c_char,
        callback: WalkCallback,
        context: *mut c_void,
        result: *mut *mut c_void,
    ) -> Status;
    pub fn AcpiGetIrqRoutingTable(device: Handle, buffer: *mut Buffer) -> Status;
    pub fn AcpiFormatException(status: Status) -> *const c_char;

    /// Seconds a single AML `While` loop may run (ACPICA: `ACPI_MAX_LOOP_TIMEOUT`, 30).
    pub static mut AcpiGbl_MaxLoopIterations: u32;
    pub static mut AcpiDbgLevel: u32;
    pub static mut AcpiDbgLayer: u32;

    /// ACPICA's own formatter (utprint.c), used by `AcpiOsVprintf`.
    pub fn vsnprintf(
        buffer: *mut c_char,
        size: usize,
        format: *const c_char,
        args: core::ffi::VaList<'_>,
    ) -> i32;
}
