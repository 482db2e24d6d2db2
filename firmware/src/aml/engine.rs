//! Driving ACPICA: loading the namespace, evaluating objects, host bridges and `_PRT`.
//!
//! ACPICA is one global instance per program, so this module is a set of functions over that
//! instance, not a value. [`load`] runs the whole sequence once and returns an [`AmlReport`];
//! [`evaluate`] is there for later questions (`_S5` at power-off, for one).
//!
//! The sequence (each step under its own [`Budget`]):
//! 1. `AcpiInitializeSubsystem`.
//! 2. `AcpiInitializeTables` + `AcpiLoadTables`: DSDT and SSDTs into the namespace.
//! 3. `AcpiEnableSubsystem` without switching the machine into ACPI mode and without events
//!    (the kernel does not take the SCI yet), then `AcpiInitializeObjects`: `_REG`, `_STA`,
//!    `_INI`, and the tables firmware loads at run time.
//! 4. `\_PIC(1)`: APIC mode, so `_PRT` describes IOAPIC inputs (ACPI 6.5 §5.8.1).
//! 5. Host bridges (`PNP0A03`/`PNP0A08`, present per `_STA`) with `_SEG`, `_BBN` and the bus
//!    range of `_CRS`; each one's `_PRT` resolved to GSIs ([`super::routing`]).

use alloc::ffi::CString;
use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{CStr, c_void};

use super::ffi::{self, Handle, Status};
use super::os::{self, Budget};
use super::{AmlReport, HostBridge, routing};
use crate::hw::Hardware;

/// A value returned by AML, copied out of ACPICA's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Integer.
    Integer(u64),
    /// String.
    String(String),
    /// Buffer.
    Buffer(Vec<u8>),
    /// Package (nested values).
    Package(Vec<Value>),
    /// A reference to a namespace node.
    Reference(usize),
    /// Any other type (its `ACPI_TYPE_*`).
    Other(u32),
}

/// ISA interrupt source override from the MADT, applied to ISA IRQ numbers that `IRQ()`
/// descriptors of link devices give (ACPI 6.5 §5.2.12.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsaOverride {
    /// ISA IRQ.
    pub source: u8,
    /// The GSI it arrives on.
    pub gsi: u32,
}

/// How [`load`] runs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Budget for loading the tables, for initialising the namespace, and for routing each
    /// host bridge, separately.
    pub budget: Budget,
    /// Budget for the whole load: no step runs past it, however many host bridges.
    pub total: Budget,
    /// The MADT's ISA overrides.
    pub overrides: Vec<IsaOverride>,
    /// Seconds one AML `While` loop may run (ACPICA's default is 30).
    pub loop_seconds: u32,
    /// Most memory ACPICA may hold at once, bytes (at most [`os::MAX_LIVE`], 256 MiB): the
    /// kernel gives it a share of its heap.
    pub max_bytes: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            budget: Budget { ms: 2000 },
            total: Budget { ms: 8000 },
            overrides: Vec::new(),
            loop_seconds: 1,
            max_bytes: os::MAX_LIVE,
        }
    }
}

fn check(step: &str, status: Status, report: &mut AmlReport) -> bool {
    if status == ffi::AE_OK {
        return true;
    }
    report
        .errors
        .push(alloc::format!("{step}: {}", os::status_name(status)));
    false
}

/// Runs `f` as one top-level operation under `budget`; notes in `report` when it ran out.
fn timed<R>(what: &str, budget: Budget, report: &mut AmlReport, f: impl FnOnce() -> R) -> R {
    os::begin(budget);
    let started = os::now_ns();
    let r = f();
    log::debug!(
        "acpi: {what}: {} us",
        os::now_ns().saturating_sub(started) / 1000
    );
    if os::end() {
        report.errors.push(alloc::format!(
            "{what}: abandoned after {} ms (time budget)",
            budget.ms
        ));
    }
    r
}

/// Loads the namespace from the tables under the RSDP at `rsdp_phys` and answers what the
/// kernel asks of AML. Never panics; everything that failed is in the report's `errors`.
/// Only the first call in a program does anything (ACPICA is global).
pub fn load(hw: &'static dyn Hardware, rsdp_phys: u64, options: &LoadOptions) -> AmlReport {
    let mut report = AmlReport::default();
    if !os::install(hw, rsdp_phys) {
        report.errors.push("ACPICA was already started".into());
        return report;
    }
    let budget = options.budget;
    os::set_overall(options.total);
    os::set_max_live(options.max_bytes);
    // SAFETY: ACPICA's first call, made once (`install` refuses a second start).
    let status = timed("subsystem", budget, &mut report, || unsafe {
        ffi::AcpiInitializeSubsystem()
    });
    if !check("AcpiInitializeSubsystem", status, &mut report) {
        collect_messages(&mut report);
        return report;
    }
    // SAFETY: plain stores to ACPICA globals while nothing else runs ACPICA (also below).
    unsafe { ffi::AcpiDbgLevel = 0 };
    // SAFETY: as above.
    unsafe { ffi::AcpiDbgLayer = 0 };
    // SAFETY: as above.
    unsafe { ffi::AcpiGbl_MaxLoopIterations = options.loop_seconds.max(1) };
    // SAFETY: after subsystem initialisation; ACPICA allocates its own table array.
    let status = timed("tables", budget, &mut report, || unsafe {
        ffi::AcpiInitializeTables(core::ptr::null_mut(), 16, 1)
    });
    if !check("AcpiInitializeTables", status, &mut report) {
        collect_messages(&mut report);
        return report;
    }
    // SAFETY: after AcpiInitializeTables. A table that fails to load is reported by ACPICA
    // and skipped; the others stay loaded.
    let status = timed("load", budget, &mut report, || unsafe {
        ffi::AcpiLoadTables()
    });
    check("AcpiLoadTables", status, &mut report);
    // SAFETY: after AcpiLoadTables; no ACPI-mode switch, no events, no SCI.
    let status = timed("enable", budget, &mut report, || unsafe {
        ffi::AcpiEnableSubsystem(ffi::NO_ACPI_ENABLE | ffi::NO_EVENT_INIT | ffi::NO_HANDLER_INIT)
    });
    check("AcpiEnableSubsystem", status, &mut report);
    // SAFETY: after AcpiEnableSubsystem, as ACPICA requires.
    let status = timed("initialise", budget, &mut report, || unsafe {
        ffi::AcpiInitializeObjects(ffi::FULL_INITIALIZATION)
    });
    report.namespace_initialised = check("AcpiInitializeObjects", status, &mut report);
    count_tables(&mut report);

    report.apic_mode = timed("\\_PIC", budget, &mut report, || {
        evaluate(None, "\\_PIC", &[Value::Integer(1)])
    })
    .map_or_else(
        |e| {
            report.errors.push(alloc::format!("\\_PIC(1): {e}"));
            false
        },
        |_| true,
    );

    let bridges = timed("host bridges", budget, &mut report, host_bridges);
    let reservations = timed("PNP0C02 devices", budget, &mut report, || {
        devices(c"PNP0C02")
    });
    let mut links = routing::Links::default();
    for (handle, path) in bridges {
        let mut bridge = timed(&path.clone(), budget, &mut report, || {
            // SAFETY: `handle` came from AcpiGetDevices (`host_bridges`).
            unsafe { routing::describe(handle, path, &options.overrides, &mut links) }
        });
        // SAFETY: as above; the reservations came from AcpiGetDevices too.
        unsafe { routing::ecam_hints(handle, &mut bridge, &reservations) };
        bridge.osc = timed("_OSC", budget, &mut report, || {
            // SAFETY: as above.
            unsafe { routing::osc(handle) }
        });
        report.host_bridges.push(bridge);
    }
    report.s5 = timed("\\_S5", budget, &mut report, sleep_type_s5);
    collect_messages(&mut report);
    report
}

fn collect_messages(report: &mut AmlReport) {
    let (lines, dropped) = os::take_messages();
    report.errors.extend(lines);
    if dropped > 0 {
        report
            .errors
            .push(alloc::format!("... and {dropped} more messages"));
    }
}

/// `ACPI_TABLE_DESC` (actbl.h), as far as this crate reads it.
#[repr(C)]
struct TableDesc {
    address: u64,
    pointer: *mut c_void,
    length: u32,
    signature: [u8; 4],
    owner_id: u16,
    flags: u8,
    validation_count: u16,
}

/// `ACPI_TABLE_LIST`.
#[repr(C)]
struct TableList {
    tables: *mut TableDesc,
    count: u32,
    max: u32,
    flags: u8,
}

const _: () = assert!(size_of::<TableDesc>() == 32, "ACPI_TABLE_DESC is 32 bytes");

unsafe extern "C" {
    static AcpiGbl_RootTableList: TableList;
}

/// `ACPI_TABLE_IS_LOADED` (aclocal.h).
const TABLE_IS_LOADED: u8 = 0x08;

/// Counts definition blocks (DSDT, SSDT, PSDT, OEMx) loaded and not, including those that
/// firmware loaded at run time.
fn count_tables(report: &mut AmlReport) {
    // SAFETY: ACPICA's root table list, read after initialisation on the one thread that
    // runs ACPICA; `tables` holds `count` descriptors.
    let list = unsafe { &*core::ptr::addr_of!(AcpiGbl_RootTableList) };
    if list.tables.is_null() {
        return;
    }
    // SAFETY: `tables` holds `count` initialised descriptors.
    let tables = unsafe { core::slice::from_raw_parts(list.tables, list.count as usize) };
    for t in tables {
        let sig = t.signature;
        let aml = matches!(&sig, b"DSDT" | b"SSDT" | b"PSDT") || sig.starts_with(b"OEM");
        if aml {
            if t.flags & TABLE_IS_LOADED != 0 {
                report.tables_loaded += 1;
            } else {
                report.tables_failed += 1;
            }
        }
    }
}

/// Evaluates `path` (absolute, or relative to `scope`) with `args`. `Ok(None)`: the object
/// does not exist; `Ok(Some(Value::Other(0)))`: it returned nothing.
pub fn evaluate(
    scope: Option<Handle>,
    path: &str,
    args: &[Value],
) -> Result<Option<Value>, String> {
    let cpath = CString::new(path).map_err(|_| String::from("path contains NUL"))?;
    // Arguments as ACPI_OBJECTs (integers and buffers are all this crate passes).
    let mut objects: Vec<ffi::Object> = Vec::with_capacity(args.len());
    for a in args {
        objects.push(match a {
            Value::Integer(v) => ffi::Object {
                kind: ffi::TYPE_INTEGER,
                count: 0,
                value: *v,
                extra: 0,
            },
            Value::Buffer(b) => ffi::Object {
                kind: ffi::TYPE_BUFFER,
                count: u32::try_from(b.len()).map_err(|_| String::from("buffer too long"))?,
                value: b.as_ptr() as u64,
                extra: 0,
            },
            _ => return Err("unsupported argument type".into()),
        });
    }
    let mut list = ffi::ObjectList {
        count: objects.len() as u32,
        pointer: objects.as_mut_ptr(),
    };
    let mut result = ffi::Buffer {
        length: ffi::ALLOCATE_BUFFER,
        pointer: core::ptr::null_mut(),
    };
    // SAFETY: `cpath` is NUL-terminated; `list` points at `objects` (and the buffers they
    // name), alive across the call; ACPICA allocates `result` with AcpiOsAllocate.
    let status = unsafe {
        ffi::AcpiEvaluateObject(
            scope.unwrap_or_default(),
            cpath.as_ptr(),
            if objects.is_empty() {
                core::ptr::null_mut()
            } else {
                &mut list
            },
            &mut result,
        )
    };
    drop(objects);
    if status == ffi::AE_NOT_FOUND {
        return Ok(None);
    }
    if status != ffi::AE_OK {
        return Err(os::status_name(status));
    }
    let value = if result.pointer.is_null() || result.length < size_of::<ffi::Object>() {
        Value::Other(0)
    } else {
        // SAFETY: ACPICA returned an ACPI_OBJECT tree in `result`, all inside that one
        // allocation, valid until it is freed below.
        let root = unsafe { &*result.pointer.cast::<ffi::Object>() };
        // SAFETY: as above.
        unsafe { copy_object(root, 0) }
    };
    free_buffer(&result);
    Ok(Some(value))
}

/// Frees a buffer ACPICA allocated for a result (`ACPI_ALLOCATE_BUFFER`).
pub(super) fn free_buffer(buffer: &ffi::Buffer) {
    if let Some(p) = core::ptr::NonNull::new(buffer.pointer.cast::<u8>()) {
        // SAFETY: ACPICA allocated it through AcpiOsAllocate (`os::allocate`); freed once.
        unsafe { os::free_acpica(p) }
    }
}

/// # Safety
/// `o` is a valid ACPI_OBJECT whose pointers lead to valid memory (ACPICA's result).
unsafe fn copy_object(o: &ffi::Object, depth: u32) -> Value {
    let bytes = |p: u64, n: u32| -> Vec<u8> {
        if p == 0 {
            return Vec::new();
        }
        // SAFETY: ACPICA's string/buffer objects point at `count` bytes.
        unsafe { core::slice::from_raw_parts(p as *const u8, n as usize) }.to_vec()
    };
    match o.kind {
        ffi::TYPE_INTEGER => Value::Integer(o.value),
        ffi::TYPE_STRING => {
            Value::String(String::from_utf8_lossy(&bytes(o.value, o.count)).into_owned())
        }
        ffi::TYPE_BUFFER => Value::Buffer(bytes(o.value, o.count)),
        ffi::TYPE_PACKAGE if depth < 8 && o.value != 0 => {
            // SAFETY: a package object points at `count` ACPI_OBJECTs.
            let items = unsafe {
                core::slice::from_raw_parts(o.value as *const ffi::Object, o.count as usize)
            };
            // SAFETY: the elements are objects of the same tree.
            Value::Package(
                items
                    .iter()
                    .map(|i| unsafe { copy_object(i, depth + 1) })
                    .collect(),
            )
        }
        ffi::TYPE_LOCAL_REFERENCE => Value::Reference(o.value as usize),
        other => Value::Other(other),
    }
}

/// The absolute path of a namespace node.
pub(super) fn path_of(handle: Handle) -> String {
    let mut buf = ffi::Buffer {
        length: ffi::ALLOCATE_BUFFER,
        pointer: core::ptr::null_mut(),
    };
    // SAFETY: `handle` is a node ACPICA gave us; the result is allocated by ACPICA.
    let status = unsafe { ffi::AcpiGetName(handle, ffi::FULL_PATHNAME, &mut buf) };
    let name = if status == ffi::AE_OK && !buf.pointer.is_null() {
        // SAFETY: AcpiGetName returns a NUL-terminated string.
        unsafe { CStr::from_ptr(buf.pointer.cast()) }
            .to_string_lossy()
            .into_owned()
    } else {
        String::from("?")
    };
    free_buffer(&buf);
    name
}

unsafe extern "C" fn collect(
    handle: Handle,
    _level: u32,
    context: *mut c_void,
    _ret: *mut *mut c_void,
) -> Status {
    // SAFETY: `context` is the `Vec<Handle>` passed to AcpiGetDevices below.
    let found = unsafe { &mut *context.cast::<Vec<Handle>>() };
    if found.len() < 256 && !found.contains(&handle) {
        found.push(handle);
    }
    ffi::AE_OK
}

/// Host bridges (`PNP0A08` PCI Express, `PNP0A03` PCI; `_HID` or `_CID`) that `_STA` says
/// are present, with their paths, in namespace order.
fn host_bridges() -> Vec<(Handle, String)> {
    devices_of(&[c"PNP0A08", c"PNP0A03"])
}

/// Present devices with `_HID` or `_CID` `hid`, with their paths, sorted by path.
fn devices(hid: &CStr) -> Vec<(Handle, String)> {
    devices_of(&[hid])
}

fn devices_of(hids: &[&CStr]) -> Vec<(Handle, String)> {
    let mut found: Vec<Handle> = Vec::new();
    for hid in hids {
        // SAFETY: `collect` matches ACPI_WALK_CALLBACK and `found` outlives the walk.
        let status = unsafe {
            ffi::AcpiGetDevices(
                hid.as_ptr(),
                collect,
                (&raw mut found).cast(),
                core::ptr::null_mut(),
            )
        };
        if status != ffi::AE_OK {
            log::warn!("acpi: walking {hid:?} devices: {}", os::status_name(status));
        }
    }
    let mut bridges: Vec<(Handle, String)> = found.into_iter().map(|h| (h, path_of(h))).collect();
    bridges.sort_by(|a, b| a.1.cmp(&b.1));
    bridges
}

/// `\_S5`'s SLP_TYPa and SLP_TYPb (ACPI 6.5 §7.4.2), for power-off.
fn sleep_type_s5() -> Option<(u8, u8)> {
    match evaluate(None, "\\_S5", &[]) {
        Ok(Some(Value::Package(items))) => {
            // SLP_TYP is a 3-bit field (PM1 control bits 12:10): a larger value is not one
            // to write, so there is no S5 value rather than a truncated one.
            let int = |i: usize| match items.get(i) {
                Some(Value::Integer(v)) if *v <= 7 => Some(*v as u8),
                Some(Value::Integer(v)) => {
                    log::warn!("acpi: \\_S5 element {i} is {v:#x}, not a 3-bit SLP_TYP: ignored");
                    None
                }
                _ => None,
            };
            let a = int(0)?;
            Some((a, int(1).unwrap_or(a)))
        }
        _ => None,
    }
}

/// Looks a namespace path up (absolute, or relative to `scope`).
pub(super) fn handle_of(scope: Handle, path: &str) -> Option<Handle> {
    let cpath = CString::new(path).ok()?;
    let mut handle: Handle = core::ptr::null_mut();
    // SAFETY: `cpath` is NUL-terminated; ACPICA writes the node into `handle`.
    let status = unsafe { ffi::AcpiGetHandle(scope, cpath.as_ptr(), &mut handle) };
    (status == ffi::AE_OK && !handle.is_null()).then_some(handle)
}

/// Allows host bridges to be described from another module (`HostBridge` plumbing).
pub(super) fn bridge(path: String, segment: u16, bus: u8, bus_end: Option<u8>) -> HostBridge {
    HostBridge {
        path,
        segment,
        bus,
        bus_end,
        prt: Ok(Vec::new()),
        has_prt: false,
        cba: None,
        reserved: Vec::new(),
        osc: super::osc::Osc::Absent,
    }
}
