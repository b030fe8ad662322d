//! The `--configmap` ConfigMap in standalone mode: read from the manifests and applied live.

use std::path::Path;
use std::time::Duration;

use ostium_e2e::{Ostium, eventually, request, site_manifest};

const BIN: &str = env!("CARGO_BIN_EXE_ostium");

fn write_atomically(dir: &Path, name: &str, text: &str) {
    let temporary = dir.join(format!("{name}.tmp"));
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(temporary, dir.join(name)).unwrap();
}

fn config_map(data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ostium, namespace: system}}\ndata:\n{data}")
}

fn post(ostium: &Ostium, size: usize) -> u16 {
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: web.example.com\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n{}",
        "x".repeat(size)
    );
    request(ostium.http, &raw).map_or(0, |response| response.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_change_applies_without_a_restart() {
    let backend = ostium_test_support::EchoBackend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = site_manifest(backend.addr);
    std::fs::write(dir.path().join("all.yaml"), manifest).unwrap();
    write_atomically(dir.path(), "config.yaml", &config_map("  proxy-body-size: 4k\n"));
    tokio::task::block_in_place(|| {
        let ostium = Ostium::start(BIN.as_ref(), dir.path(), &["--configmap", "system/ostium"]);
        assert_eq!(post(&ostium, 2048), 200, "{}", ostium.log());
        assert_eq!(post(&ostium, 5000), 413, "{}", ostium.log());

        // The same process takes the new value.
        write_atomically(dir.path(), "config.yaml", &config_map("  proxy-body-size: 1k\n"));
        eventually(Duration::from_secs(10), "the new body limit", || post(&ostium, 2048) == 413);

        // An invalid value is reported and leaves ingress-nginx's default (1m).
        write_atomically(dir.path(), "config.yaml", &config_map("  proxy-body-size: lots\n"));
        eventually(Duration::from_secs(10), "the default body limit", || post(&ostium, 5000) == 200);
        assert!(ostium.log().contains("proxy-body-size"), "{}", ostium.log());
    });
}
