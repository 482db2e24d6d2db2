//! What CPUID says about the TSC rate (Intel SDM vol. 3B §18.7.3; leaves 0x15 and 0x16 in
//! vol. 2A; the hypervisor leaf 0x4000_0010, "TSC frequency in kHz", of VMware and KVM).
//!
//! Design: this only gathers the claim; the arithmetic and the plausibility bounds are
//! `timekeeping::cpuid`'s. A hypervisor may hide these leaves or pass the host processor's
//! values through while the guest TSC runs at another rate (under QEMU's TCG the guest TSC
//! follows the host's TSC whatever the emulated CPU model says), so the caller cross-checks
//! a claim against a measured rate whenever it has one.

use alloc::format;
use alloc::string::String;

use raw_cpuid::CpuId;
use timekeeping::cpuid::{self, Leaf15};

/// A TSC rate stated by CPUID.
pub struct Claim {
    /// The rate, Hz.
    pub hz: u64,
    /// Which leaf, for the log.
    pub source: String,
}

/// What the processor says about itself, for the log.
pub struct Facts {
    /// The claim, if any leaf gives a plausible one.
    pub claim: Option<Claim>,
    /// CPUID.1:ECX bit 31: running under a hypervisor.
    pub hypervisor: bool,
    /// CPUID.8000_0007H:EDX bit 8: the TSC runs at a constant rate in all states.
    pub invariant: bool,
    /// Highest basic leaf.
    pub max_leaf: u32,
}

/// Reads the TSC-related leaves.
pub fn read() -> Facts {
    let id = CpuId::new();
    let features = id.get_feature_info();
    let hypervisor = features.as_ref().is_some_and(|f| f.has_hypervisor());
    let (family, model) = features.as_ref().map_or((0, 0), |f| {
        (u32::from(f.family_id()), u32::from(f.model_id()))
    });
    let invariant = id
        .get_advanced_power_mgmt_info()
        .is_some_and(|a| a.has_invariant_tsc());
    let max_leaf = raw_cpuid::cpuid!(0).eax;
    let base_mhz = id
        .get_processor_frequency_info()
        .map(|f| u32::from(f.processor_base_frequency()))
        .filter(|m| *m != 0);
    let leaf15 = id.get_tsc_info().and_then(|t| {
        let leaf = Leaf15 {
            denominator: t.denominator(),
            numerator: t.numerator(),
            crystal_hz: t.nominal_frequency(),
        };
        cpuid::tsc_hz_from_leaf15(leaf, family, model, base_mhz).map(|(hz, crystal)| Claim {
            hz,
            source: format!(
                "CPUID 0x15 ({}/{} x {}, {})",
                leaf.numerator,
                leaf.denominator,
                leaf.crystal_hz,
                crystal.describe()
            ),
        })
    });
    let claim = leaf15
        .or_else(|| {
            let mhz = base_mhz?;
            cpuid::tsc_hz_from_leaf16(mhz).map(|hz| Claim {
                hz,
                source: format!("CPUID 0x16 (base {mhz} MHz)"),
            })
        })
        .or_else(|| {
            let khz = id.get_hypervisor_info()?.tsc_frequency()?;
            let hz = u64::from(khz) * 1000;
            cpuid::plausible(hz).then(|| Claim {
                hz,
                source: format!("CPUID 0x40000010 (hypervisor, {khz} kHz)"),
            })
        });
    Facts {
        claim,
        hypervisor,
        invariant,
        max_leaf,
    }
}
