//! The registry of disk names: `nvme0n1`, `vda`, handed out when a driver registers its
//! disks and taken back when its [`Registration`] drops (the module documentation of
//! [`crate::block`] says who owns what).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use spin::Mutex;

use super::{DiskInfo, DiskKind};

/// A named disk in the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// `nvme0n1`, `vda`, ...
    pub name: String,
    /// The driver serving it.
    pub driver: &'static str,
    /// The function it is on.
    pub address: pci::Address,
    /// Its index in the driver's [`BlockDevices::disks`](super::BlockDevices::disks).
    pub index: usize,
    /// What it is.
    pub info: DiskInfo,
}

/// The names of the disks of bound drivers.
pub struct Registry {
    disks: Mutex<Vec<Disk>>,
}

/// The registry the drivers register with.
pub static DISKS: Registry = Registry::new();

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry.
    pub const fn new() -> Registry {
        Registry {
            disks: Mutex::new(Vec::new()),
        }
    }

    /// Names `disks` (the driver's list, in its order) of `driver` at `address`. Whatever
    /// was registered for `address` before is replaced. The names live until the returned
    /// registration drops.
    pub fn register(
        &'static self,
        driver: &'static str,
        address: pci::Address,
        disks: &[DiskInfo],
    ) -> Registration {
        let mut list = self.disks.lock();
        list.retain(|d| d.address != address);
        for (index, info) in disks.iter().enumerate() {
            let name = name_for(&list, address, info.kind);
            list.push(Disk {
                name,
                driver,
                address,
                index,
                info: *info,
            });
        }
        // Room for exactly what is listed: the registry's heap then depends only on the
        // disks registered, so unbinding brings the heap back to where it was byte for byte.
        list.shrink_to_fit();
        Registration {
            registry: self,
            address,
        }
    }

    /// Every disk, by name.
    pub fn list(&self) -> Vec<Disk> {
        let mut list = self.disks.lock().clone();
        list.sort_by_key(|d| natural(&d.name));
        list
    }

    /// The disk called `name`.
    pub fn find(&self, name: &str) -> Option<Disk> {
        self.disks.lock().iter().find(|d| d.name == name).cloned()
    }

    fn unregister(&self, address: pci::Address) {
        let mut list = self.disks.lock();
        list.retain(|d| d.address != address);
        list.shrink_to_fit();
    }
}

/// A sort key that puts `nvme2n1` before `nvme10n1`: letters, then numbers by value.
fn natural(name: &str) -> (usize, String, Vec<u64>) {
    let letters: String = name.chars().take_while(|c| !c.is_ascii_digit()).collect();
    let numbers = name
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    (letters.len(), letters, numbers)
}

/// The name of a new disk of `kind` at `address`, given the disks named so far: an NVMe
/// namespace takes its controller's number (the lowest free one for a new controller) and
/// its NSID; a virtio-blk disk the lowest free letters (`vda` .. `vdz`, `vdaa` ..).
fn name_for(list: &[Disk], address: pci::Address, kind: DiskKind) -> String {
    match kind {
        DiskKind::Nvme { namespace } => {
            let number_of = |d: &Disk| {
                d.name
                    .strip_prefix("nvme")
                    .and_then(|r| r.split('n').next())
                    .and_then(|n| n.parse::<u32>().ok())
            };
            let controller = list
                .iter()
                .filter(|d| d.address == address)
                .find_map(number_of)
                .unwrap_or_else(|| {
                    let used: Vec<u32> = list.iter().filter_map(number_of).collect();
                    (0..).find(|n| !used.contains(n)).unwrap_or(0)
                });
            format!("nvme{controller}n{namespace}")
        }
        DiskKind::Virtio => {
            let used: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
            (0..)
                .map(|i| format!("vd{}", letters(i)))
                .find(|n| !used.contains(&n.as_str()))
                .unwrap_or_default()
        }
    }
}

/// 0 -> `a`, 25 -> `z`, 26 -> `aa` (as Linux names its disks).
fn letters(mut i: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// A driver's disks' names in the registry. Owned by the driver's bound state; `Drop`
/// removes the names (the disks themselves belong to the driver, never to the registry).
/// A leak keeps stale names that lead nowhere: a read through them finds no driver at the
/// address, or a driver without that disk.
pub struct Registration {
    registry: &'static Registry,
    address: pci::Address,
}

impl core::fmt::Debug for Registration {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Registration({})", self.address)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister(self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::tests::{address, disk, nvme};

    #[test]
    fn disks_are_named_and_go_with_their_registration() {
        let registry: &'static Registry =
            alloc::boxed::Box::leak(alloc::boxed::Box::new(Registry::new()));
        let a = registry.register("nvme", address(4), &[nvme(1), nvme(2)]);
        let b = registry.register("nvme", address(5), &[nvme(1)]);
        let v = registry.register("virtio-blk", address(6), &[disk()]);
        let w = registry.register("virtio-blk", address(7), &[disk()]);
        let names = |r: &Registry| r.list().into_iter().map(|d| d.name).collect::<Vec<_>>();
        assert_eq!(
            names(registry),
            ["vda", "vdb", "nvme0n1", "nvme0n2", "nvme1n1"]
        );
        let d = registry.find("nvme0n2").unwrap();
        assert_eq!((d.driver, d.address, d.index), ("nvme", address(4), 1));
        // Unbinding the first controller frees its number; the next controller takes it.
        drop(a);
        assert!(registry.find("nvme0n1").is_none());
        let c = registry.register("nvme", address(8), &[nvme(3)]);
        assert_eq!(registry.find("nvme0n3").unwrap().address, address(8));
        drop(v);
        let x = registry.register("virtio-blk", address(9), &[disk()]);
        assert_eq!(registry.find("vda").unwrap().address, address(9));
        drop((b, c, w, x));
        assert!(registry.list().is_empty());
    }

    #[test]
    fn names_sort_naturally_and_letters_continue() {
        assert!(natural("nvme2n1") < natural("nvme10n1"));
        assert!(natural("nvme0n2") < natural("nvme0n10"));
        assert!(natural("vdz") < natural("nvme0n1"));
        assert_eq!(
            (letters(0), letters(25), letters(26), letters(27)),
            ("a".into(), "z".into(), "aa".into(), "ab".into())
        );
        assert_eq!(letters(26 + 26 * 26), "aaa");
    }
}
