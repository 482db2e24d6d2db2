//! The initramfs Linux boots in the comparison: a `newc` cpio ([`super::cpio`]) holding a
//! static busybox with links for the applets the script uses, the clock programs of
//! [`super::stubs`] (`/bin/tsc`, `/bin/clock`), the modules the benchmark's devices need
//! and an `/init` script ([`init_script`]).
//!
//! Debian's `linux-image-cloud-amd64` has NVMe built in and virtio as modules. The modules
//! wanted ([`WANTED_MODULES`]) and their dependencies are resolved from
//! `/lib/modules/<version>/modules.dep` ([`resolve_modules`]: dependencies first, each once)
//! and stored uncompressed (a `.ko.xz`, `.ko.zst` or `.ko.gz` goes through `xz`, `zstd` or
//! `gzip -dc`), because busybox's `insmod` takes them as they are.
//!
//! `/init` loads the modules, waits for `/dev/nvme0n1`, `/dev/vda` and `eth0`, brings `eth0`
//! up and pings QEMU's user-network gateway (so that the network queues interrupt), waits
//! until every non-configuration `nvme`/`virtio` vector in `/proc/interrupts` has counted,
//! prints `LINUXBENCH bound tsc=<rdtsc>`, and then does what `linuxbench=<mode>` on the
//! kernel command line asks: `ready` waits until *every* such vector has counted (the runner
//! triggers the configuration vectors through QMP) and prints `LINUXBENCH ready tsc=..`;
//! `read` runs the sequential reads of [`ReadPoint`]; `bound` stops there. Each mode ends
//! with `LINUXBENCH done` and `poweroff -f`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::cpio::Cpio;
use super::stubs::{Clock, linux_clock};

/// The modules the benchmark's devices need (NVMe is built into the cloud kernel).
pub const WANTED_MODULES: [&str; 3] = ["virtio_pci", "virtio_blk", "virtio_net"];

/// The busybox applets `/init` uses, linked to `/bin/busybox`.
const APPLETS: [&str; 14] = [
    "sh", "mount", "insmod", "awk", "cat", "ls", "usleep", "ifconfig", "ping", "dd", "poweroff",
    "sleep", "dmesg", "grep",
];

/// Where the cloud kernel and its modules are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxKernel {
    /// `uname -r` of that kernel, e.g. `6.1.0-57-cloud-amd64`.
    pub version: String,
    /// `/boot/vmlinuz-<version>`.
    pub vmlinuz: PathBuf,
    /// `/lib/modules/<version>`.
    pub modules: PathBuf,
}

/// The newest `/boot/vmlinuz-*-cloud-amd64` that has its `/lib/modules/<version>/modules.dep`.
pub fn find_linux() -> Result<LinuxKernel, String> {
    let mut versions: Vec<String> = std::fs::read_dir("/boot")
        .map_err(|e| format!("/boot: {e}"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_prefix("vmlinuz-").map(str::to_owned))
        .filter(|v| v.ends_with("-cloud-amd64"))
        .filter(|v| {
            Path::new("/lib/modules")
                .join(v)
                .join("modules.dep")
                .is_file()
        })
        .collect();
    versions.sort_by_key(|v| version_key(v));
    let version = versions.pop().ok_or(
        "no /boot/vmlinuz-*-cloud-amd64 with /lib/modules/<version>/modules.dep: install the \
         Debian package linux-image-cloud-amd64 (./run.sh bench does it when run as root)",
    )?;
    Ok(LinuxKernel {
        vmlinuz: PathBuf::from("/boot").join(format!("vmlinuz-{version}")),
        modules: Path::new("/lib/modules").join(&version),
        version,
    })
}

/// Numeric parts of a version string, for ordering `6.1.0-9` before `6.1.0-10`.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A static busybox: `/bin/busybox` or `/usr/bin/busybox` without an ELF interpreter.
pub fn find_busybox() -> Result<PathBuf, String> {
    for path in ["/bin/busybox", "/usr/bin/busybox"] {
        if let Ok(bytes) = std::fs::read(path) {
            return if is_static_elf(&bytes) {
                Ok(PathBuf::from(path))
            } else {
                Err(format!(
                    "{path} is dynamically linked: install busybox-static (./run.sh bench does \
                     it when run as root)"
                ))
            };
        }
    }
    Err(
        "no busybox: install the Debian package busybox-static (./run.sh bench does it when run \
         as root)"
            .to_owned(),
    )
}

/// Whether `bytes` is an ELF64 file without a `PT_INTERP` program header.
pub fn is_static_elf(bytes: &[u8]) -> bool {
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at).is_some_and(|kind| kind != 3) // PT_INTERP
    })
}

/// The name a module is known by: the file name without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The module files (paths relative to `/lib/modules/<version>`) needed to load `wanted`,
/// dependencies before the modules that use them, each once, from `modules.dep` text.
pub fn resolve_modules(modules_dep: &str, wanted: &[&str]) -> Result<Vec<String>, String> {
    let mut deps: std::collections::BTreeMap<String, (String, Vec<String>)> = Default::default();
    for line in modules_dep.lines() {
        let Some((module, rest)) = line.split_once(':') else {
            continue;
        };
        let module = module.trim();
        deps.insert(
            module_name(module),
            (
                module.to_owned(),
                rest.split_whitespace().map(module_name).collect(),
            ),
        );
    }
    fn visit(
        name: &str,
        deps: &std::collections::BTreeMap<String, (String, Vec<String>)>,
        stack: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), String> {
        let (path, needs) = deps
            .get(name)
            .ok_or_else(|| format!("module {name} is not in modules.dep"))?;
        if out.contains(path) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(format!("modules.dep has a cycle through {name}"));
        }
        stack.push(name.to_owned());
        for need in needs {
            visit(need, deps, stack, out)?;
        }
        stack.pop();
        out.push(path.clone());
        Ok(())
    }
    let mut out = Vec::new();
    for name in wanted {
        visit(&name.replace('-', "_"), &deps, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// A module file's contents, decompressed.
pub fn module_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        Some("xz")
    } else if name.ends_with(".ko.zst") {
        Some("zstd")
    } else if name.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    let Some(tool) = tool else {
        return std::fs::read(path).map_err(|e| format!("{name}: {e}"));
    };
    let out = Command::new(tool)
        .args(["-dc"])
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run {tool} to decompress {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} -dc {name}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// The file name a module gets in the initramfs (`/lib/modules/<name>.ko`).
fn stored_name(path: &str) -> String {
    format!("{}.ko", module_name(path))
}

/// One sequential read `/init` measures: `qd` parallel `dd ... iflag=direct` processes,
/// each reading `total / size / qd` blocks of `size` bytes from its own disjoint range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPoint {
    /// Bytes per read.
    pub size: u64,
    /// Reads in flight (processes).
    pub qd: u64,
    /// Bytes read in all.
    pub total: u64,
}

/// The disks `/init` reads: the name used in the report and the Linux device.
pub const READ_DISKS: [(&str, &str); 2] = [("nvme", "/dev/nvme0n1"), ("virtio-blk", "/dev/vda")];

/// The `/init` script, loading `modules` (as stored, in order) and measuring `reads`.
pub fn init_script(modules: &[String], reads: &[ReadPoint]) -> String {
    let modules: Vec<String> = modules.iter().map(|m| stored_name(m)).collect();
    let points: Vec<String> = reads
        .iter()
        .map(|p| format!("{}:{}:{}", p.size, p.qd, p.total))
        .collect();
    let disks: Vec<String> = READ_DISKS
        .iter()
        .map(|(name, dev)| format!("{name}:{dev}"))
        .collect();
    INIT_TEMPLATE
        .replace("@MODULES@", &modules.join(" "))
        .replace("@POINTS@", &points.join(" "))
        .replace("@DISKS@", &disks.join(" "))
}

const INIT_TEMPLATE: &str = r#"#!/bin/sh
# The benchmark's /init (qemu-tests, src/bench/initramfs.rs; see docs/bench.md).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "LINUXBENCH init tsc=$(tsc)"
mode=ready
for word in $(cat /proc/cmdline); do
    case $word in linuxbench=*) mode=${word#linuxbench=} ;; esac
done
for m in @MODULES@; do
    insmod /lib/modules/$m || echo "LINUXBENCH error: insmod $m failed"
done
# "<vectors> <seen> <queue vectors> <queue vectors seen>" over the nvme and virtio lines of
# /proc/interrupts (one CPU: the count is field 2, the name the last field).
vectors() {
    awk '$NF ~ /^(nvme|virtio)/ { t++; if ($2 > 0) s++; if ($NF !~ /config/) { q++; if ($2 > 0) qs++ } }
         END { printf "%d %d %d %d\n", t, s, q, qs }' /proc/interrupts
}
n=0
until [ -b /dev/nvme0n1 ] && [ -b /dev/vda ] && [ -e /sys/class/net/eth0 ]; do
    n=$((n + 1))
    if [ $n -gt 20000 ]; then echo "LINUXBENCH error: devices missing"; ls /dev /sys/class/net; break; fi
    usleep 1000
done
ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
ping -c 1 -W 2 10.0.2.2 >/dev/null 2>&1 || echo "LINUXBENCH note: no answer from 10.0.2.2"
# At least five queue vectors: nvme0q0, nvme0q1, virtio-blk req.0, virtio-net input.0, output.0.
n=0
while :; do
    set -- $(vectors)
    [ "$3" -ge 5 ] && [ "$4" = "$3" ] && break
    n=$((n + 1))
    if [ $n -gt 5000 ]; then echo "LINUXBENCH error: queue vectors $*"; cat /proc/interrupts; break; fi
    usleep 1000
done
echo "LINUXBENCH bound tsc=$(tsc) vectors=$1 seen=$2"
read_point() { # name device size qd total
    count=$(($5 / $3 / $4))
    pids=""
    i=0
    t0=$(clock)
    while [ $i -lt $4 ]; do
        dd if=$2 of=/dev/null bs=$3 count=$count skip=$((i * count)) iflag=direct 2>/dev/null &
        pids="$pids $!"
        i=$((i + 1))
    done
    failed=0
    for p in $pids; do wait $p || failed=$((failed + 1)); done
    t1=$(clock)
    echo "LINUXBENCH read disk=$1 size=$3 qd=$4 bytes=$((count * $4 * $3)) ns=$((t1 - t0)) failed=$failed"
}
case $mode in
ready)
    n=0
    while :; do
        set -- $(vectors)
        [ "$2" = "$1" ] && break
        n=$((n + 1))
        if [ $n -gt 20000 ]; then echo "LINUXBENCH error: vectors $*"; cat /proc/interrupts; break; fi
    done
    echo "LINUXBENCH ready tsc=$(tsc) vectors=$1 seen=$2"
    ;;
read)
    for disk in @DISKS@; do
        for point in @POINTS@; do
            IFS=:
            set -- $point
            IFS=' '
            read_point ${disk%%:*} ${disk#*:} $1 $2 $3
        done
    done
    ;;
esac
echo "LINUXBENCH done"
poweroff -f
"#;

/// The initramfs for `linux` with `busybox`, measuring `reads`.
pub fn build(linux: &LinuxKernel, busybox: &Path, reads: &[ReadPoint]) -> Result<Vec<u8>, String> {
    let dep_path = linux.modules.join("modules.dep");
    let dep =
        std::fs::read_to_string(&dep_path).map_err(|e| format!("{}: {e}", dep_path.display()))?;
    let modules = resolve_modules(&dep, &WANTED_MODULES)?;
    let mut cpio = Cpio::new();
    for dir in ["bin", "dev", "proc", "sys", "lib", "lib/modules"] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    let busybox_bytes =
        std::fs::read(busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    cpio.file("bin/busybox", 0o755, &busybox_bytes);
    for applet in APPLETS {
        cpio.symlink(&format!("bin/{applet}"), "busybox");
    }
    cpio.file("bin/tsc", 0o755, &linux_clock(Clock::Tsc));
    cpio.file("bin/clock", 0o755, &linux_clock(Clock::Monotonic));
    for module in &modules {
        let bytes = module_bytes(&linux.modules.join(module))?;
        cpio.file(
            &format!("lib/modules/{}", stored_name(module)),
            0o644,
            &bytes,
        );
    }
    cpio.file("init", 0o755, init_script(&modules, reads).as_bytes());
    Ok(cpio.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::cpio::parse;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
";

    #[test]
    fn dependencies_come_first_and_once() {
        let order = resolve_modules(DEP, &WANTED_MODULES).unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio",
                "virtio_ring",
                "virtio_pci",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        assert_eq!(order[6], "kernel/net/core/failover.ko.xz");
    }

    #[test]
    fn unknown_modules_and_cycles_are_errors() {
        assert!(
            resolve_modules(DEP, &["e1000e"])
                .unwrap_err()
                .contains("e1000e")
        );
        let cyclic = "a.ko: b.ko\nb.ko: a.ko\n";
        assert!(
            resolve_modules(cyclic, &["a"])
                .unwrap_err()
                .contains("cycle")
        );
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/net/core/failover.ko.zst"), "failover");
        assert_eq!(
            module_name("kernel/drivers/nvme/host/nvme-fabrics.ko"),
            "nvme_fabrics"
        );
        assert_eq!(stored_name("kernel/x/virtio_net.ko.xz"), "virtio_net.ko");
    }

    #[test]
    fn versions_order_numerically() {
        let mut v = vec![
            "6.1.0-10-cloud-amd64",
            "6.12.1-cloud-amd64",
            "6.1.0-9-cloud-amd64",
        ];
        v.sort_by_key(|v| version_key(v));
        assert_eq!(
            v,
            [
                "6.1.0-9-cloud-amd64",
                "6.1.0-10-cloud-amd64",
                "6.12.1-cloud-amd64"
            ]
        );
    }

    #[test]
    fn static_elf_check() {
        let clock = linux_clock(Clock::Tsc);
        assert!(is_static_elf(&clock));
        // The same with its one program header turned into PT_INTERP.
        let mut dynamic = clock.clone();
        dynamic[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert!(!is_static_elf(&dynamic));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(&clock[..40]));
    }

    #[test]
    fn init_script_lists_modules_and_points() {
        let modules = resolve_modules(DEP, &WANTED_MODULES).unwrap();
        let script = init_script(
            &modules,
            &[
                ReadPoint {
                    size: 4096,
                    qd: 1,
                    total: 1 << 20,
                },
                ReadPoint {
                    size: 131072,
                    qd: 32,
                    total: 8 << 20,
                },
            ],
        );
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains(
            "for m in virtio_pci_legacy_dev.ko virtio_pci_modern_dev.ko virtio.ko virtio_ring.ko \
             virtio_pci.ko virtio_blk.ko failover.ko net_failover.ko virtio_net.ko; do"
        ));
        assert!(script.contains("for point in 4096:1:1048576 131072:32:8388608; do"));
        assert!(script.contains("for disk in nvme:/dev/nvme0n1 virtio-blk:/dev/vda; do"));
        assert!(!script.contains('@'), "every placeholder filled");
    }

    /// Builds the archive from a fake module tree and a fake static busybox.
    #[test]
    fn archive_holds_everything_init_needs() {
        let root = crate::unique_temp_dir("initramfs");
        let modules = root.join("lib/modules/6.1.0-1-cloud-amd64");
        std::fs::create_dir_all(modules.join("kernel")).unwrap();
        std::fs::write(
            modules.join("modules.dep"),
            "kernel/virtio.ko:\nkernel/virtio_ring.ko: kernel/virtio.ko\n\
             kernel/virtio_pci.ko: kernel/virtio_ring.ko\nkernel/virtio_blk.ko: kernel/virtio.ko\n\
             kernel/virtio_net.ko: kernel/virtio.ko\n",
        )
        .unwrap();
        for m in [
            "virtio",
            "virtio_ring",
            "virtio_pci",
            "virtio_blk",
            "virtio_net",
        ] {
            std::fs::write(modules.join(format!("kernel/{m}.ko")), m.as_bytes()).unwrap();
        }
        let busybox = root.join("busybox");
        std::fs::write(&busybox, linux_clock(Clock::Tsc)).unwrap();
        let linux = LinuxKernel {
            version: "6.1.0-1-cloud-amd64".into(),
            vmlinuz: root.join("vmlinuz"),
            modules,
        };
        let archive = build(&linux, &busybox, &[]).unwrap();
        let entries = parse(&archive).unwrap();
        let find = |name: &str| entries.iter().find(|e| e.name == name);
        assert_eq!(find("dev/console").unwrap().rdev, (5, 1));
        assert_eq!(find("bin/sh").unwrap().data, b"busybox");
        assert_eq!(
            find("lib/modules/virtio_ring.ko").unwrap().data,
            b"virtio_ring"
        );
        assert_eq!(find("init").unwrap().mode, 0o100_755);
        assert!(is_static_elf(&find("bin/tsc").unwrap().data));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
