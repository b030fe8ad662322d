//! Translation of 1 000 and 10 000 Ingresses (2 paths each, 5 endpoints per Service, so 50 000
//! endpoints at 10 000), and routing on the translated 10 000-Ingress table.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ostium_translate::translate;

mod fleet;

fn translation(c: &mut Criterion) {
    let options = fleet::options();
    let mut group = c.benchmark_group("translate");
    group.sample_size(10);
    for n in [1_000, 10_000] {
        let objects = fleet::objects(n);
        group.bench_function(format!("{n}_ingresses"), |b| {
            b.iter_with_large_drop(|| translate(black_box(&objects), &options))
        });
    }
    group.finish();

    let table = translate(&fleet::objects(10_000), &options).table;
    let mut group = c.benchmark_group("route_translated_10000_ingresses");
    group.bench_function("hit", |b| {
        b.iter(|| {
            black_box(table.route(Some(black_box("h5000.bench.local")), black_box("/api/orders/7"))).is_some()
        })
    });
    group.bench_function("miss", |b| {
        b.iter(|| black_box(table.route(Some(black_box("h5000.bench.local")), black_box("/other"))).is_none())
    });
    group.finish();
}

criterion_group!(benches, translation);
criterion_main!(benches);
