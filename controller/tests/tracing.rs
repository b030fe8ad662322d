//! `--configmap` through the whole binary: a ConfigMap among the manifests turns OpenTelemetry
//! tracing on (the endpoint gets a `traceparent`), and an edit of it applies live.
//! Keys as ingress-nginx's internal/ingress/controller/config/config.go.

use std::time::Duration;

use ostium_e2e::{Ostium, eventually, free_addr, request, site_manifest};
use ostium_test_support::{EchoBackend, echoed_header};

const BIN: &str = env!("CARGO_BIN_EXE_ostium");

fn manifest(backend: std::net::SocketAddr, collector: std::net::SocketAddr, enabled: bool) -> String {
    format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ostium, namespace: ingress}}\ndata:\n  enable-opentelemetry: \"{enabled}\"\n  otlp-collector-host: \"{ip}\"\n  otlp-collector-port: \"{port}\"\n",
        site_manifest(backend),
        ip = collector.ip(),
        port = collector.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configmap_among_the_manifests_turns_tracing_on_and_off_live() {
    let backend = EchoBackend::start("web").await;
    // Nothing listens there: exports fail, which requests must not notice.
    let collector = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let write = |enabled: bool| {
        let path = dir.path().join("all.tmp");
        std::fs::write(&path, manifest(backend.addr, collector, enabled)).unwrap();
        std::fs::rename(path, dir.path().join("all.yaml")).unwrap();
    };
    write(true);
    tokio::task::block_in_place(|| {
        let ostium = Ostium::start(BIN.as_ref(), dir.path(), &["--configmap", "ingress/ostium"]);
        let traceparents = || {
            let raw = "GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n";
            let response = request(ostium.http, raw).unwrap();
            assert_eq!(response.status, 200, "{}", ostium.log());
            echoed_header(&response.body, "traceparent").len()
        };
        assert_eq!(traceparents(), 1, "{}", ostium.log());

        write(false);
        eventually(Duration::from_secs(10), "tracing turned off", || traceparents() == 0);
    });
}
