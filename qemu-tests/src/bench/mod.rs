//! This kernel against Linux on the same QEMU machine (`./run.sh bench`, the `linuxbench`
//! binary; the method is in `docs/bench.md`).
//!
//! One QEMU command line boots four kernels ([`runs::Kernel`]): this one, Debian's
//! `linux-image-cloud-amd64` with an initramfs built here ([`initramfs`], written with
//! [`cpio`]), and two floor kernels ([`stubs`]) that stand for each loader's cost up to a
//! kernel's first instruction. The runs are interleaved (ours, Linux, ours, Linux, ...) so
//! that a loaded machine slows both alike, and each figure is summarised by its median and
//! range ([`report`]). Four figures:
//!
//! - a. wall time from QEMU's start until every driver is bound and every device vector has
//!   delivered once; goal: within 30 ms of the firmware floor;
//! - b. guest instructions (`-icount shift=0,sleep=off`, where the TSC counts them) from the
//!   kernel's first instruction until its drivers are bound; goal: below 5 M and at most
//!   1/350 of Linux's;
//! - c. configuration-space accesses per present PCI function from the kernel's first
//!   instruction to the end of its enumeration, from QEMU's trace ([`crate::cfgtrace`]);
//!   goal: at most a third of Linux's;
//! - d. sequential reads from NVMe and virtio-blk at 4 KiB, 128 KiB and 1 MiB, one and 32 in
//!   flight; goal: at least Linux's throughput, twice it at 4 KiB with one in flight.
//!
//! Everything that decides a figure from text (the archive format, the output parsers, the
//! medians, the goals and the verdict) is a pure function with host tests; the QEMU runs are
//! in [`runs`].

pub mod cpio;
pub mod initramfs;
pub mod report;
pub mod runs;
pub mod stubs;
