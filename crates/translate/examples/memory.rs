//! Prints what the objects, the table and the incremental indexes of a manifests directory cost
//! in resident memory (system allocator), and how long the full translation takes:
//!
//!     cargo run --release -p ostium-translate --example memory -- DIR

use std::time::Instant;

use ostium_translate::{Incremental, Objects, Options};

fn main() {
    let dir = std::env::args().nth(1).expect("a manifests directory");
    let before = rss_kib();
    let started = Instant::now();
    let mut objects = Objects::default();
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        objects.extend(&Objects::from_yaml(&text).unwrap());
    }
    let parsing = started.elapsed();
    let parsed = rss_kib();
    let options = Options::new(
        ostium_test_support::certificate(&["memory.invalid"]),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    );
    let started = Instant::now();
    let translation = ostium_translate::translate(&objects, &options);
    let elapsed = started.elapsed();
    let translated = rss_kib();
    let started = Instant::now();
    let mut incremental = Incremental::new();
    incremental.rebuild(&objects, &options);
    let rebuilt = started.elapsed();
    let indexed = rss_kib();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "objects ({}): {:.1} MiB, parsed in {:.1} ms",
        objects.counts(),
        mib(parsed - before),
        parsing.as_secs_f64() * 1e3
    );
    println!(
        "table ({} hosts): {:.1} MiB, translated in {:.1} ms",
        translation.table.host_count(),
        mib(translated - parsed),
        elapsed.as_secs_f64() * 1e3
    );
    let indexes = (indexed - translated).saturating_sub(translated - parsed);
    println!(
        "incremental indexes (beyond a second table): {:.1} MiB; translating and indexing took {:.1} ms",
        mib(indexes),
        rebuilt.as_secs_f64() * 1e3
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
