//! `Table::route()` at 10, 1 000 and 10 000 hosts: a hit on a deep prefix, a hit on the
//! host-less rule, and an unknown host with no matching rule (the built-in 404).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

mod fleet;

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for n in [10, 1_000, 10_000] {
        let table = fleet::table(n);
        let host = format!("h{}.bench.local", n / 2);
        let host_with_port = format!("H{}.Bench.Local:8080", n / 2);
        group.bench_function(format!("{n}_hosts/hit_prefix"), |b| {
            b.iter(|| black_box(table.route(Some(black_box(&host)), black_box("/api/v1/users/42"))).is_some())
        });
        group.bench_function(format!("{n}_hosts/hit_mixed_case_host_with_port"), |b| {
            b.iter(|| {
                black_box(table.route(Some(black_box(&host_with_port)), black_box("/healthz"))).is_some()
            })
        });
        group.bench_function(format!("{n}_hosts/miss_path_of_known_host"), |b| {
            b.iter(|| black_box(table.route(Some(black_box(&host)), black_box("/static/app.js"))).is_none())
        });
        group.bench_function(format!("{n}_hosts/unknown_host_hostless_rule"), |b| {
            b.iter(|| {
                black_box(table.route(Some(black_box("nope.example.com")), black_box("/x/y"))).is_some()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
