//! Property-based fuzzing on the stable toolchain, with proptest.
//!
//! [`run`] checks a property on `cases` generated inputs: what `cargo test` does. With
//! `OSTIUM_FUZZ_SECONDS=N` set it keeps going, round after round of `cases` inputs from a fresh
//! random seed, until `N` seconds have passed, and then prints how many cases ran. A failure
//! panics with the input shrunk to a minimal one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// The environment variable that turns a bounded run into a timed one (in seconds).
pub const SECONDS_VAR: &str = "OSTIUM_FUZZ_SECONDS";

/// Checks `property` on inputs drawn from `strategy` (see the module documentation). The
/// property fails by returning an error (`prop_assert!`) or by panicking.
pub fn run<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let budget = std::env::var(SECONDS_VAR).ok().map(|s| {
        Duration::from_secs(s.trim().parse().unwrap_or_else(|_| panic!("{SECONDS_VAR}={s}: not a number")))
    });
    let started = Instant::now();
    let mut total = 0u64;
    loop {
        // No regression files: a failure is reported with its input, to become a plain test.
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        match TestRunner::new(config).run(&strategy, &property) {
            Ok(()) => total += u64::from(cases),
            Err(TestError::Fail(reason, input)) => {
                let shown = format!("{input:#?}");
                // The reason kept while shrinking may be that of a larger input: ask again.
                let reason = match catch_unwind(AssertUnwindSafe(|| property(input))) {
                    Ok(Err(error)) => error.to_string(),
                    Ok(Ok(())) => format!("{reason} (the minimal input passed when run again)"),
                    Err(panic) => panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| reason.to_string()),
                };
                panic!("{name}: failed after {total} passing cases: {reason}\nminimal failing input: {shown}")
            }
            Err(TestError::Abort(reason)) => panic!("{name}: aborted after {total} cases: {reason}"),
        }
        match budget {
            Some(budget) if started.elapsed() < budget => {}
            Some(_) => {
                let seconds = started.elapsed().as_secs_f64();
                println!("{name}: {total} cases in {seconds:.0} s, no failure");
                return;
            }
            None => return,
        }
    }
}
