#!/usr/bin/env bash
# run.sh: build, boot, test and package the kernel.
#
#   ./run.sh [--qemu <args>...] [-- <kernel args>]
#                                 build the kernel and boot it in QEMU (q35, 512 MiB) with the
#                                 serial port on this terminal and devices to explore: edu, an
#                                 NVMe controller and a virtio-blk disk (images generated in
#                                 target/run/, 64 MiB each; the kernel only reads them unless it
#                                 is booted with storage=write) and virtio-net on user
#                                 networking. Arguments after --qemu go to QEMU as they are (e.g.
#                                 --qemu -smp 2 -cpu max), those after -- to the kernel
#                                 (-append), e.g. ./run.sh -- log=debug
#   ./run.sh test                 cargo fmt --check, clippy (host crates and kernel), the tests
#                                 of pci and boot under Miri, then cargo test for the host
#                                 crates (including the QEMU scenarios in qemu-tests); the last
#                                 line is "N passed, M failed, K skipped" (a skipped scenario is
#                                 not a pass, and fails the run)
#   ./run.sh exercise             check the book's exercise (docs/book/10-your-driver.md): build the
#                                 kernel, boot it with edu, type the exercise's commands and say
#                                 which answers are right and which still fail (expected vs.
#                                 received); non-zero exit while anything fails
#   ./run.sh iso [-- <args>]      write target/kernel.iso, a hybrid BIOS/UEFI GRUB image
#   ./run.sh bench                benchmarks (boot time, PCI configuration accesses, interrupt
#                                 round trip, reads, vector allocator), then this kernel against
#                                 Linux on the same QEMU machine: one table and a verdict, non-zero
#                                 exit when a goal is missed (docs/bench.md; installs
#                                 linux-image-cloud-amd64 and busybox-static when run as root)
#
# Each command first installs what is missing: the Rust toolchain from rust-toolchain.toml
# (via rustup) and, when run as root on Debian/Ubuntu, the system packages it needs (QEMU >= 8,
# OVMF, GRUB, xorriso, mtools). As a normal user it names the missing packages and stops.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"

readonly KERNEL_TARGET=x86_64-unknown-none
readonly KERNEL_TARGET_DIR=target/kernel
readonly KERNEL_ELF=$KERNEL_TARGET_DIR/$KERNEL_TARGET/release/kernel
readonly ISO=target/kernel.iso
readonly ISO_TREE=target/iso
readonly QEMU_MIN_MAJOR=8
# Characters GRUB's script parser takes literally in an unquoted word.
readonly GRUB_CMDLINE_RE='^[A-Za-z0-9 ._,:/=+@%-]*$'

die() {
    echo "error: $*" >&2
    exit 1
}

step() {
    echo "==> $*"
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

# ---------------------------------------------------------------------------------------------
# Rust toolchain

toolchain_complete() {
    local sysroot
    rustc --version >/dev/null 2>&1 || return 1
    sysroot=$(rustc --print sysroot 2>/dev/null) || return 1
    [[ -d $sysroot/lib/rustlib/$KERNEL_TARGET/lib ]] &&
        [[ -d $sysroot/lib/rustlib/src/rust/library ]] &&
        [[ -x $sysroot/bin/cargo-clippy ]] &&
        [[ -x $sysroot/bin/rustfmt ]] &&
        cargo miri --version >/dev/null 2>&1
}

ensure_toolchain() {
    toolchain_complete && return 0
    if ! command -v rustup >/dev/null 2>&1; then
        die "the Rust toolchain pinned in rust-toolchain.toml is not usable here and rustup is" \
            "not installed. Install rustup (https://rustup.rs), then run ./run.sh again: it" \
            "installs the toolchain, the $KERNEL_TARGET target, rust-src, clippy, rustfmt and miri."
    fi
    # RUSTUP_AUTO_INSTALL=0 may be set, so install explicitly. Without a toolchain argument
    # rustup installs the one named in rust-toolchain.toml, with its targets and components.
    # --no-self-update: installing a toolchain must not replace the rustup binary itself.
    step "installing the Rust toolchain from rust-toolchain.toml (rustup toolchain install)"
    rustup toolchain install --no-self-update
    toolchain_complete || die "rustup toolchain install did not produce a complete toolchain" \
        "(need rustc, the $KERNEL_TARGET target, rust-src, clippy, rustfmt, miri)"
}

# ---------------------------------------------------------------------------------------------
# System packages

qemu_major() {
    qemu-system-x86_64 --version 2>/dev/null | sed -nE '1s/.*version ([0-9]+)\..*/\1/p'
}

qemu_ok() {
    local major
    command -v qemu-system-x86_64 >/dev/null 2>&1 || return 1
    major=$(qemu_major)
    [[ -n $major ]] && ((major >= QEMU_MIN_MAJOR))
}

ovmf_ok() {
    [[ -f /usr/share/ovmf/OVMF.fd ]] || compgen -G '/usr/share/OVMF/OVMF_CODE*.fd' >/dev/null
}

is_bookworm() {
    [[ -r /etc/os-release ]] && (
        # shellcheck source=/dev/null
        . /etc/os-release
        [[ ${ID:-} == debian && ${VERSION_CODENAME:-} == bookworm ]]
    )
}

backports_enabled() {
    grep -sqE '^[^#]*[[:space:]]bookworm-backports([[:space:]]|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
}

# Enables bookworm-backports by copying the existing Debian source with the suite changed, so
# the mirror configured on this machine is reused and no host name is written here.
enable_backports() {
    backports_enabled && return 0
    local deb822=/etc/apt/sources.list.d/debian.sources
    if [[ -f $deb822 ]]; then
        step "enabling bookworm-backports: $deb822 (first stanza) -> backports.sources"
        awk '
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { if (started) exit; next }
            { started = 1 }
            /^Suites:/ { print "Suites: bookworm-backports"; next }
            { print }
        ' "$deb822" >/etc/apt/sources.list.d/backports.sources
        [[ -s /etc/apt/sources.list.d/backports.sources ]] ||
            die "could not derive a backports source from $deb822"
    elif [[ -f /etc/apt/sources.list ]]; then
        local line
        line=$(grep -E '^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+bookworm[[:space:]]' \
            /etc/apt/sources.list | head -n 1 || true)
        [[ -n $line ]] || die "no 'deb ... bookworm ...' line in /etc/apt/sources.list to copy"
        step "enabling bookworm-backports: /etc/apt/sources.list (first bookworm line) -> backports.list"
        sed -E 's/([[:space:]])bookworm([[:space:]])/\1bookworm-backports\2/' <<<"$line" \
            >/etc/apt/sources.list.d/backports.list
    else
        die "no APT source to copy for bookworm-backports"
    fi
}

# ensure_system <need>...: need is one of qemu, ovmf, grub (grub-mkrescue and what it uses),
# acpica (iasl and acpixtract: the reference ACPI decoder the firmware tests compare with).
ensure_system() {
    local need_qemu=0 missing=() need
    for need in "$@"; do
        case $need in
        qemu) qemu_ok || need_qemu=1 ;;
        ovmf) ovmf_ok || missing+=(ovmf) ;;
        grub)
            command -v grub-mkrescue >/dev/null 2>&1 || missing+=(grub-common)
            [[ -d /usr/lib/grub/i386-pc ]] || missing+=(grub-pc-bin)
            [[ -d /usr/lib/grub/x86_64-efi ]] || missing+=(grub-efi-amd64-bin)
            command -v xorriso >/dev/null 2>&1 || missing+=(xorriso)
            command -v mformat >/dev/null 2>&1 || missing+=(mtools)
            ;;
        acpica)
            { command -v iasl && command -v acpixtract; } >/dev/null 2>&1 ||
                missing+=(acpica-tools)
            ;;
        *) die "internal: unknown requirement $need" ;;
        esac
    done
    ((need_qemu == 0 && ${#missing[@]} == 0)) && return 0

    local found="not installed"
    if command -v qemu-system-x86_64 >/dev/null 2>&1; then
        found=$(qemu-system-x86_64 --version | head -n 1)
    fi
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        {
            echo "error: missing system packages:"
            ((need_qemu)) && echo "  qemu-system-x86 (QEMU >= $QEMU_MIN_MAJOR; found: $found)"
            ((${#missing[@]})) && echo "  ${missing[*]}"
            echo
            if command -v apt-get >/dev/null 2>&1; then
                echo "Run this script as root (sudo ./run.sh ${COMMAND:-}) to install them, or:"
                echo "  sudo apt-get update"
                ((${#missing[@]})) &&
                    echo "  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
                if ((need_qemu)); then
                    if is_bookworm; then
                        echo "  # Debian 12 ships QEMU 7.2 (no x2APIC under TCG): use bookworm-backports."
                        echo "  # Copy the first stanza of /etc/apt/sources.list.d/debian.sources to"
                        echo "  # /etc/apt/sources.list.d/backports.sources with 'Suites: bookworm-backports',"
                        echo "  # run 'sudo apt-get update', then:"
                        echo "  sudo apt-get install -y -t bookworm-backports qemu-system-x86"
                    else
                        echo "  sudo apt-get install -y qemu-system-x86"
                    fi
                fi
            else
                echo "apt-get is not available: install these with your system's package manager."
            fi
        } >&2
        exit 1
    fi

    export DEBIAN_FRONTEND=noninteractive
    if ((need_qemu)) && is_bookworm; then
        enable_backports
    fi
    step "apt-get update"
    apt-get update
    if ((${#missing[@]})); then
        step "apt-get install ${missing[*]}"
        apt-get install -y "${missing[@]}"
    fi
    if ((need_qemu)); then
        if is_bookworm; then
            step "apt-get install -t bookworm-backports qemu-system-x86 (QEMU >= $QEMU_MIN_MAJOR)"
            apt-get install -y -t bookworm-backports qemu-system-x86
        else
            step "apt-get install qemu-system-x86"
            apt-get install -y qemu-system-x86
        fi
        hash -r
        qemu_ok || die "QEMU >= $QEMU_MIN_MAJOR is still not available" \
            "($(qemu-system-x86_64 --version 2>/dev/null | head -n 1 || echo 'not installed'))"
    fi
}

# The Linux side of `./run.sh bench`: Debian's cloud kernel (/boot/vmlinuz-*-cloud-amd64 with
# its modules) and a static busybox for the initramfs the benchmark builds.
bench_packages_missing() {
    local missing=()
    compgen -G '/boot/vmlinuz-*-cloud-amd64' >/dev/null || missing+=(linux-image-cloud-amd64)
    { [[ -x /bin/busybox ]] || [[ -x /usr/bin/busybox ]]; } && dpkg -s busybox-static >/dev/null 2>&1 ||
        missing+=(busybox-static)
    echo "${missing[*]}"
}

ensure_bench_packages() {
    local missing
    missing=$(bench_packages_missing)
    [[ -z $missing ]] && return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        {
            echo "error: ./run.sh bench compares the kernel with Linux and needs: $missing"
            if command -v apt-get >/dev/null 2>&1; then
                echo "Run this script as root (sudo ./run.sh bench) to install them, or:"
                echo "  sudo apt-get update"
                echo "  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y $missing"
            else
                echo "apt-get is not available: install the Debian packages $missing (or" \
                    "their equivalents: a kernel image with virtio modules, a static busybox)."
            fi
        } >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    step "apt-get update"
    apt-get update
    step "apt-get install $missing"
    # shellcheck disable=SC2086 # a list of package names
    apt-get install -y $missing
    missing=$(bench_packages_missing)
    [[ -z $missing ]] || die "still missing after apt-get install: $missing"
}

# ---------------------------------------------------------------------------------------------
# Building

# Builds the kernel ELF ($KERNEL_ELF). Returns non-zero on failure instead of exiting, so that
# `test` can report it and still run the rest.
build_kernel() {
    step "building the kernel: CARGO_TARGET_DIR=$KERNEL_TARGET_DIR cargo build -Zbuild-std=core,alloc -p kernel --target $KERNEL_TARGET --release"
    CARGO_TARGET_DIR=$KERNEL_TARGET_DIR cargo build -Zbuild-std=core,alloc -p kernel --target "$KERNEL_TARGET" --release ||
        return 1
    if [[ ! -f $KERNEL_ELF ]]; then
        echo "error: the build did not produce $KERNEL_ELF" >&2
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# Commands

# Disk images for `./run.sh`: 64 MiB each, made once. Block 0 says what the disk is, so that
# reading it from the console shows something; the rest is zeros (sparse).
readonly RUN_DIR=target/run
QEMU_EXTRA=()

make_disk() {
    local image=$RUN_DIR/$1.img
    [[ -f $image ]] && return 0
    mkdir -p "$RUN_DIR"
    printf '%s\n' "pcikernel demo disk: $1 (./run.sh made it; 64 MiB)" >"$image"
    truncate -s 64M "$image"
}

cmd_run() {
    ensure_toolchain
    ensure_system qemu
    build_kernel || die "kernel build failed"
    make_disk nvme
    make_disk virtio-blk
    local append="$*"
    step "booting $KERNEL_ELF (q35, 512 MiB), cmdline: \"$append\""
    echo "    Devices: edu, NVMe ($RUN_DIR/nvme.img), virtio-blk ($RUN_DIR/virtio-blk.img), virtio-net (user networking)${QEMU_EXTRA[*]:+; also: ${QEMU_EXTRA[*]}}"
    echo "    To quit QEMU press Ctrl-A, then X.  (Ctrl-A, C switches to the QEMU monitor and back.)"
    local status=0
    qemu-system-x86_64 -machine q35 -m 512M -kernel "$KERNEL_ELF" \
        -serial mon:stdio -display none -no-reboot \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
        -device edu \
        -drive "file=$RUN_DIR/nvme.img,if=none,id=nvme0,format=raw" \
        -device nvme,drive=nvme0,serial=run-nvme \
        -drive "file=$RUN_DIR/virtio-blk.img,if=none,id=vblk0,format=raw" \
        -device virtio-blk-pci,drive=vblk0 \
        -netdev user,id=net0 -device virtio-net-pci,netdev=net0 \
        "${QEMU_EXTRA[@]}" \
        -append "$append" || status=$?
    case $status in
    33) step "the kernel exited with success (isa-debug-exit 0x10)" ;;
    35) step "the kernel reported failure (isa-debug-exit 0x11)" && return 1 ;;
    *) return "$status" ;;
    esac
}

cmd_test() {
    ensure_toolchain
    ensure_system qemu ovmf grub acpica
    local failed_steps=()

    step "cargo fmt --all -- --check"
    cargo fmt --all -- --check || failed_steps+=("cargo fmt --check")
    step "cargo clippy --all-targets -- -D warnings (host crates)"
    cargo clippy --all-targets -- -D warnings || failed_steps+=("clippy (host crates)")
    step "cargo clippy -p kernel --target $KERNEL_TARGET -- -D warnings"
    cargo clippy -p kernel --target "$KERNEL_TARGET" -- -D warnings ||
        failed_steps+=("clippy (kernel)")
    # The documentation as a reader gets it: every intra-doc link resolves, and public pages
    # name nothing private.
    step "RUSTDOCFLAGS=\"-D warnings\" cargo doc --no-deps (host crates, then the kernel)"
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --exclude kernel ||
        failed_steps+=("cargo doc (host crates)")
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p kernel --target "$KERNEL_TARGET" ||
        failed_steps+=("cargo doc (kernel)")
    # The host crates' tests under Miri (undefined behaviour, leaks). The first run builds
    # Miri's sysroot (cargo miri setup, on demand); heavy tests run smaller or not at all
    # under cfg(miri) and in full in cargo test below.
    step "cargo miri test -p pci -p boot"
    cargo miri test --no-fail-fast -p pci -p boot || failed_steps+=("miri (pci, boot)")
    # Built here so that progress is visible; the QEMU tests reuse it (same target dir).
    build_kernel || failed_steps+=("kernel build")

    step "cargo test --no-fail-fast"
    local status=0
    TEST_LOG=$(mktemp)
    trap 'rm -f "$TEST_LOG"' EXIT
    cargo test --no-fail-fast 2>&1 | tee "$TEST_LOG" || status=$?

    # A QEMU scenario that cannot run prints "SKIPPED <name>: ..." and returns, which the test
    # harness counts as passed: it is counted here as skipped instead.
    local passed failed skipped
    read -r passed failed skipped < <(awk '
        /^test result: / {
            for (i = 2; i <= NF; i++) {
                if ($i ~ /^passed;?$/) p += $(i - 1)
                if ($i ~ /^failed;?$/) f += $(i - 1)
            }
        }
        /^SKIPPED / { s += 1 }
        END { printf "%d %d %d\n", p - s, f, s }
    ' "$TEST_LOG")

    # The real-firmware corpus test's per-stage counts (written by firmware/tests/corpus.rs).
    if [[ -f target/tmp/acpi-corpus.txt ]]; then
        step "real machines' ACPI tables (firmware/tests/corpus.rs)"
        cat target/tmp/acpi-corpus.txt
    fi

    local step_name
    for step_name in "${failed_steps[@]}"; do
        echo "also failed: $step_name"
    done
    ((status == 0)) || echo "cargo test exited with status $status"
    echo "$passed passed, $failed failed, $skipped skipped"
    ((status == 0 && failed == 0 && skipped == 0 && ${#failed_steps[@]} == 0))
}

cmd_iso() {
    local cmdline="$*"
    [[ $cmdline =~ $GRUB_CMDLINE_RE ]] ||
        die "kernel command line \"$cmdline\": only letters, digits, spaces and ._,:/=+@%- can go into grub.cfg"
    ensure_toolchain
    ensure_system grub
    build_kernel || die "kernel build failed"

    step "writing $ISO (grub-mkrescue, BIOS + UEFI), cmdline: \"$cmdline\""
    rm -rf "$ISO_TREE"
    mkdir -p "$ISO_TREE/boot/grub"
    # Without its debug information (nine tenths of the file): GRUB reads the whole file from
    # the stick before the kernel's first instruction. Under QEMU that is 1.9 s against 0.8 s
    # from power-on to the drivers bound (README, "Booting a real board").
    local objcopy
    objcopy="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-objcopy"
    [[ -x $objcopy ]] || die "$objcopy not found (it comes with rustc; reinstall the toolchain)"
    "$objcopy" --strip-debug "$KERNEL_ELF" "$ISO_TREE/boot/kernel.elf" ||
        die "$objcopy --strip-debug $KERNEL_ELF failed"
    local template
    template=$(<grub/grub.cfg.in)
    # Quoted replacement: no `&` expansion (bash 5.2 patsub_replacement).
    printf '%s\n' "${template//@CMDLINE@/"$cmdline"}" >"$ISO_TREE/boot/grub/grub.cfg"
    local output
    if ! output=$(grub-mkrescue -o "$ISO" "$ISO_TREE" 2>&1); then
        echo "$output" >&2
        die "grub-mkrescue failed"
    fi
    [[ -f $ISO ]] || die "grub-mkrescue did not write $ISO"

    echo
    echo "ISO image: $PWD/$ISO ($(du -h "$ISO" | cut -f1))"
    echo
    echo "Write it to a USB stick (replace /dev/sdX with the stick's device; everything on it is lost):"
    echo "  sudo dd if=$ISO of=/dev/sdX bs=4M conv=fsync"
    echo
    echo "Boot the board from it (BIOS or UEFI; Secure Boot off). GRUB's menu starts the kernel after"
    echo "3 s (press e to add kernel options to the multiboot2 line, then Ctrl-X). The log and the"
    echo "console are on the screen and, if the board has one, on COM1 (115200 8-N-1); type on a PS/2"
    echo "keyboard, a USB keyboard the firmware presents as PS/2, or the serial line."
    echo
    local uefi="-bios /usr/share/ovmf/OVMF.fd"
    if [[ ! -f /usr/share/ovmf/OVMF.fd ]] && [[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ]]; then
        uefi="-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
    fi
    echo "Try it in QEMU as a board with a screen and no serial port:"
    echo "  BIOS: qemu-system-x86_64 -machine q35 -m 512M -vga std -serial none -cdrom $ISO"
    echo "  UEFI: qemu-system-x86_64 -machine q35 -m 512M -vga std -serial none $uefi -net none -cdrom $ISO"
    echo "or with the serial port on this terminal: add -serial stdio instead of -serial none."
    echo "On a machine without a display (QEMU would say 'gtk initialization failed'), add"
    echo "-display vnc=127.0.0.1:1 and point a VNC viewer at 127.0.0.1:5901, or use -serial stdio"
    echo "-display none to see only the serial side."
}

cmd_bench() {
    ensure_toolchain
    ensure_system qemu
    ensure_bench_packages
    build_kernel || die "kernel build failed"
    step "boot time: cargo run --release -p qemu-tests --bin bench"
    cargo run --release -p qemu-tests --bin bench
    step "PCI config accesses: cargo run --release -p qemu-tests --bin pcibench"
    cargo run --release -p qemu-tests --bin pcibench
    step "interrupt round trip (guest instructions, icount): cargo run --release -p qemu-tests --bin irqbench"
    cargo run --release -p qemu-tests --bin irqbench
    step "boot to all drivers bound: cargo run --release -p qemu-tests --bin bootbench"
    cargo run --release -p qemu-tests --bin bootbench
    step "NVMe sequential read through the driver: cargo run --release -p qemu-tests --bin nvmebench"
    cargo run --release -p qemu-tests --bin nvmebench
    step "vector allocator: cargo bench -p pci --bench vectors"
    cargo bench -p pci --bench vectors
    # Last, and its exit status is the command's: the table against Linux and the verdict.
    step "this kernel against Linux (docs/bench.md): cargo run --release -p qemu-tests --bin linuxbench"
    cargo run --release -p qemu-tests --bin linuxbench
}

cmd_exercise() {
    ensure_toolchain
    ensure_system qemu
    build_kernel || die "kernel build failed"
    step "checking the exercise: cargo run -p qemu-tests --bin exercise -- --kernel $KERNEL_ELF"
    cargo run -q -p qemu-tests --bin exercise -- --kernel "$KERNEL_ELF"
}

main() {
    COMMAND=${1:-}
    case $COMMAND in
    "") cmd_run ;;
    --) shift && cmd_run "$@" ;;
    --qemu)
        shift
        QEMU_EXTRA=()
        while (($#)) && [[ $1 != -- ]]; do
            QEMU_EXTRA+=("$1")
            shift
        done
        (($#)) && shift
        cmd_run "$@"
        ;;
    test)
        (($# == 1)) || die "usage: ./run.sh test"
        cmd_test
        ;;
    iso)
        shift
        if (($#)); then
            [[ $1 == -- ]] || die "usage: ./run.sh iso [-- <kernel args>]"
            shift
        fi
        cmd_iso "$@"
        ;;
    bench)
        (($# == 1)) || die "usage: ./run.sh bench"
        cmd_bench
        ;;
    exercise)
        (($# == 1)) || die "usage: ./run.sh exercise"
        cmd_exercise
        ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        die "unknown command: $COMMAND"
        ;;
    esac
}

main "$@"
