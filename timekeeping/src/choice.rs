//! Choosing the TSC rate from what CPUID states and what was measured.
//!
//! Design: CPUID (Intel SDM vol. 3B §18.7.3) gives an exact figure when it is right, but a
//! hypervisor may pass through leaves that describe the host's processor, not the rate at
//! which the guest's TSC runs; measurements are right to within their spread but depend on
//! a reference timer that may itself be broken (a wrong HPET period, a PM timer that is not
//! where the FADT says). So:
//!
//! - a CPUID figure is used when some measured source agrees with it within
//!   [`AGREEMENT_PPM`], or when nothing could be measured at all;
//! - otherwise the first measured source (in order of preference) that another source
//!   confirms is used; if no two sources agree, the first one, and the caller says so.

use crate::disagreement_ppm;

/// Two rates agree when they are this close, parts per million (2 %).
pub const AGREEMENT_PPM: u64 = 20_000;

/// What was decided. Indices refer to the `measured` slice given to [`decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// CPUID's figure.
    Cpuid {
        /// The rate, Hz.
        hz: u64,
        /// The measured source that confirms it and how far apart they are (ppm); `None`
        /// when nothing was measured.
        confirmed_by: Option<(usize, u64)>,
    },
    /// A measured figure.
    Measured {
        /// The rate, Hz.
        hz: u64,
        /// Which measured source.
        source: usize,
        /// How far CPUID's figure is from it (ppm), when CPUID gave one.
        cpuid_off_ppm: Option<u64>,
        /// Another source that agrees with it and how far apart (ppm); `None` when no
        /// other source agrees (or there is none).
        confirmed_by: Option<(usize, u64)>,
    },
    /// Nothing to go on.
    Nothing,
}

/// The first other source within [`AGREEMENT_PPM`] of `measured[i]`.
fn confirmation(measured: &[u64], i: usize) -> Option<(usize, u64)> {
    measured.iter().enumerate().find_map(|(j, hz)| {
        let d = disagreement_ppm(*hz, measured[i]);
        (j != i && d <= AGREEMENT_PPM).then_some((j, d))
    })
}

/// Decides the TSC rate from CPUID's `claim` and the `measured` rates (most preferred
/// first).
pub fn decide(claim: Option<u64>, measured: &[u64]) -> Decision {
    if let Some(claim) = claim {
        if measured.is_empty() {
            return Decision::Cpuid {
                hz: claim,
                confirmed_by: None,
            };
        }
        let agreeing = measured.iter().enumerate().find_map(|(i, hz)| {
            let d = disagreement_ppm(*hz, claim);
            (d <= AGREEMENT_PPM).then_some((i, d))
        });
        if agreeing.is_some() {
            return Decision::Cpuid {
                hz: claim,
                confirmed_by: agreeing,
            };
        }
    }
    let Some(&first) = measured.first() else {
        return Decision::Nothing;
    };
    let (source, confirmed_by) = (0..measured.len())
        .find_map(|i| confirmation(measured, i).map(|c| (i, Some(c))))
        .unwrap_or((0, None));
    let hz = measured.get(source).copied().unwrap_or(first);
    Decision::Measured {
        hz,
        source,
        cpuid_off_ppm: claim.map(|c| disagreement_ppm(c, hz)),
        confirmed_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: u64 = 2_445_000_000;
    const GUEST: u64 = 2_100_000_000;

    #[test]
    fn cpuid_confirmed() {
        assert_eq!(
            decide(Some(GUEST), &[GUEST + 2_000_000, GUEST]),
            Decision::Cpuid {
                hz: GUEST,
                confirmed_by: Some((0, 952))
            }
        );
    }

    #[test]
    fn cpuid_describing_the_host_is_refused() {
        // A hypervisor passes the host's leaf 0x15 through; the guest TSC runs at GUEST.
        let d = decide(Some(HOST), &[GUEST, GUEST + 1_000_000]);
        assert_eq!(
            d,
            Decision::Measured {
                hz: GUEST,
                source: 0,
                cpuid_off_ppm: Some(164_285),
                confirmed_by: Some((1, 476)),
            }
        );
    }

    #[test]
    fn cpuid_alone() {
        assert_eq!(
            decide(Some(GUEST), &[]),
            Decision::Cpuid {
                hz: GUEST,
                confirmed_by: None
            }
        );
    }

    #[test]
    fn broken_first_reference_is_outvoted() {
        // The HPET states a wrong period (measures 10 % high); PM timer and PIT agree.
        let d = decide(None, &[GUEST / 10 * 11, GUEST, GUEST - 1_000_000]);
        assert_eq!(
            d,
            Decision::Measured {
                hz: GUEST,
                source: 1,
                cpuid_off_ppm: None,
                confirmed_by: Some((2, 476)),
            }
        );
        // CPUID agreeing with the second source wins over a broken first one.
        assert_eq!(
            decide(Some(GUEST), &[GUEST * 2, GUEST]),
            Decision::Cpuid {
                hz: GUEST,
                confirmed_by: Some((1, 0))
            }
        );
    }

    #[test]
    fn no_agreement_takes_the_first() {
        let d = decide(Some(HOST), &[GUEST, GUEST * 2]);
        assert!(matches!(
            d,
            Decision::Measured {
                hz: GUEST,
                source: 0,
                confirmed_by: None,
                ..
            }
        ));
        assert_eq!(
            decide(None, &[GUEST]),
            Decision::Measured {
                hz: GUEST,
                source: 0,
                cpuid_off_ppm: None,
                confirmed_by: None
            }
        );
        assert_eq!(decide(None, &[]), Decision::Nothing);
    }
}
