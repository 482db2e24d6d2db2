//! [`PciFunction::alloc_irq_vectors`]: a function's handle goes in, its vectors come out.

use super::{IrqError, IrqKind, IrqKinds, IrqVectors};
use crate::function::PciFunction;

impl PciFunction {
    /// Allocates between `min` and `max` interrupt vectors, trying MSI-X, then MSI, then INTx,
    /// as `kinds` allows — the owned counterpart of Linux's
    /// `pci_alloc_irq_vectors(dev, min, max, flags)`.
    ///
    /// The handle moves into the returned [`IrqVectors`]; on failure it comes back with the
    /// error. The vectors are released when the `IrqVectors` is dropped, and only then.
    ///
    /// Allocating twice for one function does not compile, because the first call took the
    /// handle:
    ///
    /// ```compile_fail,E0382
    /// # use pci::irq::IrqKinds;
    /// # let function = pci::fake::irq::function_with_msix(4);
    /// let first = function.alloc_irq_vectors(1, 4, IrqKinds::ALL);
    /// let second = function.alloc_irq_vectors(1, 4, IrqKinds::ALL); // error[E0382]: use of moved value
    /// ```
    pub fn alloc_irq_vectors(
        self,
        min: usize,
        max: usize,
        kinds: IrqKinds,
    ) -> Result<IrqVectors, (PciFunction, IrqError)> {
        if min == 0 || min > max {
            return Err((self, IrqError::BadRange { min, max }));
        }
        if self.config_read32(0) == u32::MAX {
            return Err((self, IrqError::Vanished));
        }
        let mut tried: [Option<alloc::boxed::Box<IrqError>>; 3] = [None, None, None];
        let mut function = self;
        for (i, kind) in [IrqKind::Msix, IrqKind::Msi, IrqKind::Intx]
            .into_iter()
            .enumerate()
        {
            let allowed = match kind {
                IrqKind::Msix => kinds.contains(IrqKinds::MSIX),
                IrqKind::Msi => kinds.contains(IrqKinds::MSI),
                IrqKind::Intx => kinds.contains(IrqKinds::INTX),
            };
            if !allowed {
                continue;
            }
            match IrqVectors::setup(function, kind, min, max) {
                Ok(vectors) => return Ok(vectors),
                Err((f, e)) => {
                    function = f;
                    tried[i] = Some(alloc::boxed::Box::new(e));
                }
            }
        }
        let [msix, msi, intx] = tried;
        Err((
            function,
            IrqError::Unavailable {
                min,
                msix,
                msi,
                intx,
            },
        ))
    }
}
