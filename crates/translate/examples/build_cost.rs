//! Prints what building the table for 10 000 Ingresses (2 paths each, 50 000 endpoints) costs:
//! wall time and the peak RSS of the process during the build, measured by resetting the
//! kernel's high-water mark (`/proc/self/clear_refs`) before translating.
//!
//!     cargo run --profile dist -p ostium-translate --example build_cost [-- N]

use std::time::Instant;

#[path = "../benches/fleet.rs"]
mod fleet;

fn main() {
    let n: usize = std::env::args().nth(1).map_or(10_000, |a| a.parse().expect("N must be a number"));
    let options = fleet::options();
    let objects = fleet::objects(n);
    let before = status_kib("VmRSS");
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();

    let started = Instant::now();
    let translation = ostium_translate::translate(&objects, &options);
    let elapsed = started.elapsed();
    let peak = status_kib("VmHWM");
    let after = status_kib("VmRSS");

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("ingresses:                 {n}");
    println!("hosts in table:            {}", translation.table.virtual_hosts().len());
    println!("diagnostics:               {}", translation.diagnostics.len());
    println!("translation time:          {:.1} ms", elapsed.as_secs_f64() * 1e3);
    println!("RSS before (objects held): {:.1} MiB", mib(before));
    if reset {
        println!(
            "peak RSS during the build: {:.1} MiB (+{:.1} MiB over the objects)",
            mib(peak),
            mib(peak - before)
        );
    } else {
        println!("peak RSS of the process:   {:.1} MiB (could not reset the high-water mark)", mib(peak));
    }
    println!(
        "RSS after (table held):    {:.1} MiB (+{:.1} MiB for the table)",
        mib(after),
        mib(after - before)
    );
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("field in /proc/self/status");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of kB")
}
