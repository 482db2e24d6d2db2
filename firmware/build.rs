//! Builds ACPICA (the C source bundled by the `acpica` crate, a build-dependency so that Cargo
//! fetches it) into a static library linked into this crate.
//!
//! - Source: `<cargo home>/registry/src/*/acpica-0.1.0/acpica/source`, copied to `OUT_DIR`,
//!   with `include/platform/acenv.h` pointed at this crate's platform header
//!   (`src/aml/acfirmware.h`: 64-bit, ACPICA's own C library, local object caches).
//! - Components: everything but the debugger and disassembler (as the crate builds it).
//! - Flags: `-O2 -fno-stack-protector -ffreestanding -fno-builtin
//!   -fno-tree-loop-distribute-patterns` (ACPICA's own memcpy/memset must not become calls to
//!   themselves); for `x86_64-unknown-none` also no SSE/MMX/x87 state,
//!   no red zone (interrupts share the stack), the kernel code model.

// The ACPICA C source this script compiles is found in the `acpica` package's directory; the
// crate itself is not used, only named, so that cargo keeps it as a build dependency.
use acpica as _;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const CRATE: &str = "acpica-0.1.0";

fn cargo_home() -> PathBuf {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return PathBuf::from(home);
    }
    let home = env::var_os("HOME").expect("neither CARGO_HOME nor HOME is set");
    PathBuf::from(home).join(".cargo")
}

/// The `acpica` crate's unpacked source (Cargo unpacked it: it is a build-dependency).
fn acpica_source() -> PathBuf {
    let registry = cargo_home().join("registry").join("src");
    let mut found = Vec::new();
    if let Ok(indexes) = fs::read_dir(&registry) {
        for index in indexes.flatten() {
            let candidate = index.path().join(CRATE).join("acpica").join("source");
            if candidate.join("components").is_dir() {
                found.push(candidate);
            }
        }
    }
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "ACPICA source not found under {}/*/{CRATE}/acpica/source (the `acpica` crate is a \
             build-dependency of this crate; `cargo fetch` unpacks it there)",
            registry.display()
        )
    })
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in fs::read_dir(from).expect("read dir").flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            fs::copy(&path, &target).expect("copy file");
        }
    }
}

/// Fixes for faults in ACPICA 20250404 on malformed AML, found by feeding it mutated real
/// tables. A fix that no longer applies stops the build, so a newer ACPICA is looked at rather
/// than silently unpatched.
fn fix_known_faults(tree: &Path) {
    let fixes: [(&str, &str, &str); 4] = [
        (
            // An expression as a package element: `Results` may be NULL here (a NULL check;
            // upstream has since fixed the same place).
            "components/dispatcher/dspkginit.c",
            "                AcpiUtRemoveReference (WalkState->Results->Results.ObjDesc[0]);",
            "                if (WalkState->Results)\n                {\n                    AcpiUtRemoveReference (WalkState->Results->Results.ObjDesc[0]);\n                }",
        ),
        (
            // A `Break` or `Continue` that no `While` encloses (`While (One) {}` then a stray
            // `Break` at table level): the parser pops scopes looking for the `While`, and
            // once the stack is empty each pop leaves `*Op` NULL, forever, without one OS
            // call the operation's deadline could act on (`acpiexec` 20200925 hangs the
            // same way). Stop at the empty stack with ACPICA's own error for it.
            "components/parser/psobject.c",
            "        while (!(*Op) || ((*Op)->Common.AmlOpcode != AML_WHILE_OP))\n        {\n",
            "        while (!(*Op) || ((*Op)->Common.AmlOpcode != AML_WHILE_OP))\n        {\n            if (!WalkState->ParserState.Scope->Common.Next)\n            {\n                return_ACPI_STATUS (AE_AML_NO_WHILE);\n            }\n",
        ),
        (
            // A PkgLength reaching past the end of the block (an `If` on an undefined name
            // with a 256 MiB length: the error path skips the body by its length) sent the
            // parser reading past the table. A package ends at the block's end at the latest.
            "components/parser/psargs.c",
            "    return_PTR (Start + PackageLength); /* end of package */",
            "    if (Start >= ParserState->AmlEnd ||\n        PackageLength > (UINT32) (ParserState->AmlEnd - Start))\n    {\n        return_PTR (ParserState->AmlEnd);\n    }\n    return_PTR (Start + PackageLength); /* end of package */",
        ),
        (
            // ... and a skipped `If` body that ends at the block's end has no `Else` to look at.
            "components/parser/psloop.c",
            "                    if (*WalkState->Aml == AML_ELSE_OP)",
            "                    if (WalkState->Aml < ParserState->AmlEnd &&\n                        *WalkState->Aml == AML_ELSE_OP)",
        ),
    ];
    for (file, from, to) in fixes {
        let path = tree.join(file);
        let text = fs::read_to_string(&path).expect("ACPICA source file");
        assert!(
            text.contains(from),
            "{file}: the code this build fixes is not there (a different ACPICA?)"
        );
        fs::write(&path, text.replacen(from, to, 1)).expect("write fix");
    }
}

/// ACPICA's own C library (utclib.c) brings `memcpy`, `memset`, `memmove` and `memcmp` as
/// byte-at-a-time loops, and as strong symbols they would replace the word-wise ones of the
/// whole program (the kernel's `compiler_builtins`, the host's libc): every copy the kernel
/// makes, not only ACPICA's, would move one byte per iteration. They are renamed out of the
/// way, so that ACPICA calls the program's own.
fn drop_byte_loops(tree: &Path) {
    let path = tree.join("components/utilities/utclib.c");
    let mut text = fs::read_to_string(&path).expect("utclib.c");
    for name in ["memcmp", "memmove", "memcpy", "memset"] {
        let from = format!("\n{name} (\n");
        assert!(
            text.contains(&from),
            "utclib.c: no definition of {name} (a different ACPICA?)"
        );
        text = text.replacen(&from, &format!("\nAcpiUtUnused_{name} (\n"), 1);
    }
    fs::write(&path, text).expect("write utclib.c");
}

fn main() {
    let source = acpica_source();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let tree = out.join("acpica");
    let _ = fs::remove_dir_all(&tree);
    copy_dir(&source, &tree);

    // Our platform header replaces acenv.h's per-OS selection.
    let acenv = tree.join("include/platform/acenv.h");
    let text = fs::read_to_string(&acenv).expect("acenv.h");
    let start = text
        .find("#if defined(_LINUX)")
        .expect("acenv.h: no per-OS section");
    let end = text[start..]
        .find("#endif")
        .map(|e| start + e + "#endif".len())
        .expect("acenv.h: per-OS section not closed");
    let patched = format!(
        "{}#include \"acfirmware.h\"{}",
        &text[..start],
        &text[end..]
    );
    fs::write(&acenv, patched).expect("write acenv.h");
    fix_known_faults(&tree);
    drop_byte_loops(&tree);
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let header = manifest.join("src/aml/acfirmware.h");
    fs::copy(&header, tree.join("include/platform/acfirmware.h")).expect("platform header");
    println!("cargo::rerun-if-changed={}", header.display());
    println!("cargo::rerun-if-changed=build.rs");

    let mut build = cc::Build::new();
    build
        .warnings(false)
        .include(tree.join("include"))
        .opt_level(2)
        .flag("-fno-stack-protector")
        .flag("-Wno-format-truncation")
        // ACPICA brings its own memcpy/memset (utclib.c): the compiler must not turn their
        // loops back into calls to themselves.
        .flag("-ffreestanding")
        .flag("-fno-builtin")
        .flag("-fno-tree-loop-distribute-patterns");
    if env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        for flag in [
            "-mno-red-zone",
            "-mgeneral-regs-only",
            "-mno-sse",
            "-mno-sse2",
            "-mno-mmx",
            "-mno-80387",
            "-mcmodel=kernel",
            "-fno-pic",
            "-fno-pie",
        ] {
            build.flag(flag);
        }
    }
    let mut files = Vec::new();
    for component in fs::read_dir(tree.join("components"))
        .expect("components")
        .flatten()
    {
        let name = component.file_name();
        if name == "debugger" || name == "disassembler" {
            continue;
        }
        for file in fs::read_dir(component.path()).expect("component").flatten() {
            let path = file.path();
            // The resource dumper is debugger code (its tables exist only in debug builds).
            if path.extension().is_some_and(|e| e == "c") && !path.ends_with("rsdump.c") {
                files.push(path);
            }
        }
    }
    files.sort();
    build.files(files).compile("acpica");
}
