//! The TSC rate as CPUID states it (Intel SDM vol. 3B §18.7.3, "Determining the Processor
//! Base Frequency"; leaves described in vol. 2A, CPUID instruction).
//!
//! Design:
//! - Leaf 0x15: `EAX` = denominator, `EBX` = numerator of the TSC/core-crystal ratio,
//!   `ECX` = crystal frequency in Hz. TSC Hz = `ECX * EBX / EAX`. `EBX` = 0 means the ratio
//!   is not enumerated. `ECX` = 0 means the crystal is not enumerated; the SDM's table gives
//!   it for some models ([`known_crystal_hz`]), and otherwise it can be derived from leaf
//!   0x16's base frequency (the TSC runs at the base frequency on those parts).
//! - Leaf 0x16: `EAX` bits 15:0 = processor base frequency in MHz (0 = not enumerated).
//!   The TSC's nominal rate is the base frequency, to within the MHz rounding.
//!
//! Every figure is a claim: [`plausible`] bounds it, and under a hypervisor these leaves
//! may be missing or may describe the host's processor rather than the guest's TSC, so the
//! kernel cross-checks them against a measured rate.

/// Lowest TSC rate believed, Hz.
pub const MIN_PLAUSIBLE_HZ: u64 = 100_000_000;
/// Highest TSC rate believed, Hz.
pub const MAX_PLAUSIBLE_HZ: u64 = 10_000_000_000;

/// Whether a TSC rate is believable for an x86_64 processor.
pub fn plausible(hz: u64) -> bool {
    (MIN_PLAUSIBLE_HZ..=MAX_PLAUSIBLE_HZ).contains(&hz)
}

/// CPUID leaf 0x15 as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf15 {
    /// `EAX`: denominator of the TSC/crystal ratio.
    pub denominator: u32,
    /// `EBX`: numerator of the TSC/crystal ratio.
    pub numerator: u32,
    /// `ECX`: crystal frequency, Hz (0 = not enumerated).
    pub crystal_hz: u32,
}

/// The display family and model of CPUID leaf 1 `EAX` (SDM vol. 2A, CPUID, "Processor
/// Version Information"): the extended model is added for families 6 and 15, the extended
/// family for family 15.
pub fn family_model(leaf1_eax: u32) -> (u32, u32) {
    let family = (leaf1_eax >> 8) & 0xf;
    let model = (leaf1_eax >> 4) & 0xf;
    let ext_model = (leaf1_eax >> 16) & 0xf;
    let ext_family = (leaf1_eax >> 20) & 0xff;
    let display_family = if family == 0xf {
        family + ext_family
    } else {
        family
    };
    let display_model = if family == 0x6 || family == 0xf {
        (ext_model << 4) | model
    } else {
        model
    };
    (display_family, display_model)
}

/// The nominal core crystal clock for Intel parts whose leaf 0x15 leaves `ECX` at 0 (Intel
/// SDM vol. 3B §18.7.3, table "Nominal Core Crystal Clock Frequency").
pub fn known_crystal_hz(family: u32, model: u32) -> Option<u64> {
    match (family, model) {
        // 6th and 7th generation Intel Core processors (Skylake, Kaby Lake).
        (6, 0x4e | 0x5e | 0x8e | 0x9e) => Some(24_000_000),
        // Intel Xeon Scalable processor family, CPUID signature 06_55H.
        (6, 0x55) => Some(25_000_000),
        // Intel Atom processors based on the Goldmont microarchitecture, signature 06_5CH
        // (not Denverton, 06_5FH).
        (6, 0x5c) => Some(19_200_000),
        _ => None,
    }
}

/// Where a leaf 0x15 rate took its crystal frequency from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crystal {
    /// Leaf 0x15 `ECX`.
    Enumerated,
    /// The SDM's table of crystal frequencies by model.
    ByModel,
    /// Derived from leaf 0x16's base frequency.
    FromBaseFrequency,
}

impl Crystal {
    /// For the log.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Enumerated => "crystal from CPUID 0x15",
            Self::ByModel => "crystal by CPU model",
            Self::FromBaseFrequency => "crystal from CPUID 0x16 base frequency",
        }
    }
}

/// The TSC rate from leaf 0x15, `None` when the leaf does not give one (ratio or crystal
/// not enumerated and not otherwise known) or the result is implausible.
/// `base_mhz` is leaf 0x16 `EAX[15:0]` when that leaf exists.
pub fn tsc_hz_from_leaf15(
    leaf: Leaf15,
    family: u32,
    model: u32,
    base_mhz: Option<u32>,
) -> Option<(u64, Crystal)> {
    if leaf.denominator == 0 || leaf.numerator == 0 {
        return None;
    }
    let num = u128::from(leaf.numerator);
    let den = u128::from(leaf.denominator);
    let (hz, crystal) = if leaf.crystal_hz != 0 {
        (u128::from(leaf.crystal_hz) * num / den, Crystal::Enumerated)
    } else if let Some(crystal) = known_crystal_hz(family, model) {
        (u128::from(crystal) * num / den, Crystal::ByModel)
    } else {
        // TSC = base frequency; crystal = base * den / num (the TSC Hz is then the base).
        let base = u128::from(base_mhz.filter(|m| *m != 0)?) * 1_000_000;
        let crystal = base * den / num;
        (crystal * num / den, Crystal::FromBaseFrequency)
    };
    let hz = u64::try_from(hz).ok()?;
    plausible(hz).then_some((hz, crystal))
}

/// The TSC's nominal rate from leaf 0x16's base frequency, when enumerated and plausible.
pub fn tsc_hz_from_leaf16(base_mhz: u32) -> Option<u64> {
    let hz = u64::from(base_mhz & 0xffff) * 1_000_000;
    plausible(hz).then_some(hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature() {
        // Kaby Lake 06_9EH stepping 9: EAX = 0x000906E9.
        assert_eq!(family_model(0x0009_06e9), (6, 0x9e));
        // Xeon Scalable 06_55H: 0x00050654.
        assert_eq!(family_model(0x0005_0654), (6, 0x55));
        // AMD Zen 2, family 17h model 31h: 0x00830F10.
        assert_eq!(family_model(0x0083_0f10), (0x17, 0x31));
        // Family 5 ignores the extended model.
        assert_eq!(family_model(0x000f_0543), (5, 4));
    }

    #[test]
    fn enumerated_crystal() {
        // Ice Lake-ish: crystal 38.4 MHz, ratio 78/2 → 1497.6 MHz.
        let leaf = Leaf15 {
            denominator: 2,
            numerator: 78,
            crystal_hz: 38_400_000,
        };
        assert_eq!(
            tsc_hz_from_leaf15(leaf, 6, 0x7e, None),
            Some((1_497_600_000, Crystal::Enumerated))
        );
    }

    #[test]
    fn crystal_by_model() {
        // Skylake client: ECX = 0, ratio 216/2, crystal 24 MHz → 2592 MHz.
        let leaf = Leaf15 {
            denominator: 2,
            numerator: 216,
            crystal_hz: 0,
        };
        assert_eq!(
            tsc_hz_from_leaf15(leaf, 6, 0x5e, None),
            Some((2_592_000_000, Crystal::ByModel))
        );
        // Xeon Scalable: 25 MHz, ratio 168/2 → 2100 MHz.
        let leaf = Leaf15 {
            denominator: 2,
            numerator: 168,
            crystal_hz: 0,
        };
        assert_eq!(
            tsc_hz_from_leaf15(leaf, 6, 0x55, Some(2100)),
            Some((2_100_000_000, Crystal::ByModel))
        );
        // Goldmont: 19.2 MHz, ratio 94/1 → 1804.8 MHz.
        let leaf = Leaf15 {
            denominator: 1,
            numerator: 94,
            crystal_hz: 0,
        };
        assert_eq!(
            tsc_hz_from_leaf15(leaf, 6, 0x5c, None),
            Some((1_804_800_000, Crystal::ByModel))
        );
    }

    #[test]
    fn crystal_from_base_frequency() {
        let leaf = Leaf15 {
            denominator: 2,
            numerator: 200,
            crystal_hz: 0,
        };
        // Unknown model, leaf 0x16 says 2400 MHz.
        assert_eq!(
            tsc_hz_from_leaf15(leaf, 6, 0xa5, Some(2400)),
            Some((2_400_000_000, Crystal::FromBaseFrequency))
        );
        // Unknown model, no leaf 0x16 (or a zero base): fall through.
        assert_eq!(tsc_hz_from_leaf15(leaf, 6, 0xa5, None), None);
        assert_eq!(tsc_hz_from_leaf15(leaf, 6, 0xa5, Some(0)), None);
    }

    #[test]
    fn not_enumerated_or_implausible() {
        let zero = Leaf15 {
            denominator: 0,
            numerator: 0,
            crystal_hz: 0,
        };
        assert_eq!(tsc_hz_from_leaf15(zero, 6, 0x5e, Some(2400)), None);
        let no_ratio = Leaf15 {
            denominator: 2,
            numerator: 0,
            crystal_hz: 24_000_000,
        };
        assert_eq!(tsc_hz_from_leaf15(no_ratio, 6, 0x5e, None), None);
        // 24 MHz × 1/2: 12 MHz is no TSC rate.
        let tiny = Leaf15 {
            denominator: 2,
            numerator: 1,
            crystal_hz: 24_000_000,
        };
        assert_eq!(tsc_hz_from_leaf15(tiny, 6, 0x5e, None), None);
        // Huge values do not overflow.
        let huge = Leaf15 {
            denominator: 1,
            numerator: u32::MAX,
            crystal_hz: u32::MAX,
        };
        assert_eq!(tsc_hz_from_leaf15(huge, 6, 0x5e, None), None);
    }

    #[test]
    fn leaf16() {
        assert_eq!(tsc_hz_from_leaf16(2400), Some(2_400_000_000));
        assert_eq!(tsc_hz_from_leaf16(0), None);
        assert_eq!(tsc_hz_from_leaf16(50), None);
        // Bits above 15 are reserved.
        assert_eq!(tsc_hz_from_leaf16(0x1_0000 | 3000), Some(3_000_000_000));
    }
}
