//! `--configmap` through the whole binary: `use-gzip` and `enable-brotli` in a ConfigMap among
//! the manifests compress answers as curl decodes them, and an edit of the ConfigMap applies
//! live. Keys and values as ingress-nginx's internal/ingress/controller/config/config.go.

use std::net::SocketAddr;
use std::time::Duration;

use ostium_e2e::{Ostium, eventually, site_manifest};
use ostium_test_support::{EchoBackend, echoed};

const BIN: &str = env!("CARGO_BIN_EXE_ostium");

fn manifest(backend: SocketAddr, gzip: bool, brotli: bool) -> String {
    format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ostium, namespace: ingress}}\ndata:\n  use-gzip: \"{gzip}\"\n  gzip-min-length: \"0\"\n  enable-brotli: \"{brotli}\"\n  brotli-min-length: \"0\"\n",
        site_manifest(backend)
    )
}

/// curl `--compressed` (it offers `deflate, gzip, br, zstd` and decodes the answer): the
/// `Content-Encoding` it got, and the decoded body.
fn curl(proxy: SocketAddr) -> (Option<String>, String) {
    let head = tempfile::NamedTempFile::new().unwrap();
    let output = std::process::Command::new("curl")
        .args(["-sS", "--compressed", "-H", "Host: web.example.com", "-D"])
        .arg(head.path())
        .arg(format!("http://{proxy}/"))
        .output()
        .expect("curl is installed");
    assert!(output.status.success(), "curl: {}", String::from_utf8_lossy(&output.stderr));
    let head = std::fs::read_to_string(head.path()).unwrap().to_ascii_lowercase();
    let coding =
        head.lines().find_map(|line| line.strip_prefix("content-encoding:")).map(|c| c.trim().to_owned());
    (coding, String::from_utf8(output.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configmap_turns_compression_on_and_off_live() {
    let backend = EchoBackend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let write = |gzip: bool, brotli: bool| {
        let path = dir.path().join("all.tmp");
        std::fs::write(&path, manifest(backend.addr, gzip, brotli)).unwrap();
        std::fs::rename(path, dir.path().join("all.yaml")).unwrap();
    };
    write(true, true);
    tokio::task::block_in_place(|| {
        let ostium = Ostium::start(BIN.as_ref(), dir.path(), &["--configmap", "ingress/ostium"]);
        let (coding, body) = curl(ostium.http);
        assert_eq!(coding.as_deref(), Some("br"), "{}", ostium.log());
        assert_eq!(echoed(&body, "backend"), Some("web"), "decoded: {body}");

        write(true, false);
        eventually(Duration::from_secs(10), "gzip instead of brotli", || {
            curl(ostium.http).0.as_deref() == Some("gzip")
        });
        let (_, body) = curl(ostium.http);
        assert_eq!(echoed(&body, "backend"), Some("web"), "decoded: {body}");

        write(false, false);
        eventually(Duration::from_secs(10), "compression off", || curl(ostium.http).0.is_none());
    });
}
