//! `Table::route()` must not allocate: measured with a counting global allocator.

#[path = "../benches/fleet.rs"]
mod fleet;

#[test]
fn route_does_not_allocate() {
    // The counter must be live, or a zero below would prove nothing.
    let probe = allocation_counter::measure(|| drop(std::hint::black_box(Box::new(1u64))));
    assert!(probe.count_total >= 1, "the counting allocator is not installed");

    let table = fleet::table(1_000);
    let requests = [
        (Some("h500.bench.local"), "/api/v1/users"),
        (Some("H500.Bench.LOCAL.:8443"), "/healthz"),
        (Some("h500.bench.local"), "/nothing/here"),
        (Some("unknown.example.com"), "/"),
        (None, "/a/b/c/"),
        (Some("[::1]:8080"), "/"),
    ];
    for (host, path) in requests {
        let info = allocation_counter::measure(|| {
            std::hint::black_box(table.route(std::hint::black_box(host), std::hint::black_box(path)));
        });
        assert_eq!(info.count_total, 0, "route({host:?}, {path}) allocated");
    }
    let info = allocation_counter::measure(|| {
        std::hint::black_box(ostium_model::normalize_path(std::hint::black_box("/api/v1/users")).unwrap());
    });
    assert_eq!(info.count_total, 0, "normalising an already normal path allocated");
}
