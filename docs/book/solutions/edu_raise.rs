// Solution to the exercise in docs/book/10-your-driver.md: an `edu raise <n>` console
// command that raises n edu interrupts and reports how many the handler counted.
//
// Two methods go into drivers/src/edu.rs, each inside an `impl` block that is already there.
// Nothing else changes: `Ordering` and `format!` are already imported there.

// 1. Inside `impl Edu`, next to `ping`:

    /// Raises the device's interrupt `n` times, one at a time, waiting for each; returns how
    /// many the handler counted meanwhile.
    pub fn raise(&self, n: u64) -> Result<u64, String> {
        let before = self.interrupts.load(Ordering::Relaxed);
        for i in 0..n {
            self.ping()
                .map_err(|e| format!("interrupt {} of {n}: {e}", i + 1))?;
        }
        Ok(self.interrupts.load(Ordering::Relaxed) - before)
    }

// 2. Inside `impl Bound for Edu`, after `self_test`:

    fn command(&mut self, args: &[&str]) -> Option<Result<String, String>> {
        let ["raise", n] = args else {
            return Some(Err("usage: edu raise <n>".into()));
        };
        let Ok(n) = n.parse::<u64>() else {
            return Some(Err(format!("{n} is not a number")));
        };
        Some(
            self.raise(n)
                .map(|counted| format!("raised {n} interrupt(s), the handler counted {counted}")),
        )
    }
