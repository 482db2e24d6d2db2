//! Driver scenarios: the kernel's `drivers` suite binds the edu driver at boot, runs its self
//! test (factorial and a raised interrupt, both completed by interrupt), then unbinds and
//! rebinds it 1000 times with a self test after each rebind, and checks that vectors,
//! frames, heap, the MMIO window, the dispatch table and the claims are exactly at baseline.

use qemu_tests::{
    Machine, QEMU_EXIT_SUCCESS, Qemu, check, ensure, expect_exit, kernel_elf, qemu_or_skip,
};

#[test]
fn edu_unbind_bind_1000_cycles() {
    if !qemu_or_skip("edu_unbind_bind") {
        return;
    }
    for cpu in ["qemu64", "max"] {
        let name = format!("edu_unbind_bind_{cpu}");
        let qemu = Qemu::kernel(kernel_elf(), "test=drivers")
            .machine(Machine::Q35)
            .memory_mib(512)
            .args(["-cpu", cpu, "-device", "edu"]);
        let outcome = qemu
            .run()
            .unwrap_or_else(|e| panic!("{name}: cannot run QEMU: {e}"));
        println!(
            "{name}: {} in {:.2} s",
            outcome.describe_exit(),
            outcome.wall.as_secs_f64()
        );
        check(&name, &outcome, |outcome, report| {
            expect_exit(outcome, QEMU_EXIT_SUCCESS)?;
            report.check_tests_passed(2)?;
            ensure!(
                outcome
                    .serial
                    .contains("edu self test: 10! = 3628800 by interrupt"),
                "no self-test result line"
            );
            ensure!(
                outcome
                    .serial
                    .contains("drivers: 1000 unbind/bind cycles of edu"),
                "no cycle result line"
            );
            Ok(())
        });
    }
}
