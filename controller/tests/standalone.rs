//! The binary in standalone mode: readiness, reloads, bad input.

use std::time::Duration;

use ostium_e2e::{Ostium, get, site_manifest, workspace_root};

const BIN: &str = env!("CARGO_BIN_EXE_ostium");

#[test]
fn quickstart_manifests_become_ready() {
    let ostium = Ostium::start(BIN.as_ref(), &workspace_root().join("examples/quickstart"), &[]);
    assert_eq!(get(ostium.admin, "/healthz", None).unwrap().status, 200);
    assert!(!ostium.log().contains("WARN"), "the quickstart has diagnostics:\n{}", ostium.log());
}

#[test]
fn the_text_log_says_ready_with_counts_and_has_no_colour_codes_off_a_terminal() {
    // The log goes to a file here, not a terminal.
    let ostium = Ostium::start(BIN.as_ref(), &workspace_root().join("examples/quickstart"), &[]);
    let log = ostium.log();
    assert!(!log.contains('\u{1b}'), "{log:?}");
    let ready: Vec<&str> = log.lines().filter(|l| l.contains(" ready ")).collect();
    assert_eq!(ready.len(), 1, "{log}");
    for field in ["INFO", "ingresses=3", "routes=", "service_ports=2", "hosts=2", "build="] {
        assert!(ready[0].contains(field), "no {field} in {}", ready[0]);
    }
}

#[test]
fn broken_manifests_at_start_keep_it_unready_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "kind: [").unwrap();
    let mut ostium = Ostium::spawn(BIN.as_ref(), dir.path(), &[]);
    // Alive (healthz) but not ready while the only manifest is broken.
    let mut healthy = false;
    for _ in 0..250 {
        if get(ostium.admin, "/healthz", None).is_ok_and(|r| r.status == 200) {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(healthy, "no /healthz; log:\n{}", ostium.log());
    assert_eq!(get(ostium.admin, "/readyz", None).unwrap().status, 503);

    std::fs::write(dir.path().join("b.tmp"), "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").unwrap();
    std::fs::rename(dir.path().join("b.tmp"), dir.path().join("a.yaml")).unwrap();
    ostium.wait_ready(Duration::from_secs(10));
}

#[test]
fn missing_manifests_path_exits_with_an_error() {
    let output = std::process::Command::new(BIN)
        .args(["--manifests", "/nonexistent/ostium", "--admin-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/ostium"));
}

#[test]
fn bad_flag_values_exit_with_usage_errors() {
    let status = std::process::Command::new(BIN)
        .args(["--default-backend-service", "no-slash"])
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(2), "clap usage error");
    let status = std::process::Command::new(BIN)
        .args(["--http-addr", "127.0.0.1:1", "--https-addr", "127.0.0.1:1"])
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(64), "EX_USAGE");
}

#[test]
fn check_lists_diagnostics_and_fails_on_errors() {
    let good = std::process::Command::new(BIN)
        .arg("check")
        .arg(workspace_root().join("examples/quickstart"))
        .output()
        .unwrap();
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stdout));
    assert!(String::from_utf8_lossy(&good.stdout).contains("0 errors"));

    let broken = workspace_root()
        .join("crates/translate/tests/fixtures/backend-problems-answer-503-with-a-diagnostic");
    let bad = std::process::Command::new(BIN).arg("check").arg(broken).output().unwrap();
    let out = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{out}");
    assert!(out.contains("MissingService: service default/nope not found"), "{out}");
}

#[test]
fn route_explains_what_a_request_gets() {
    let quickstart = workspace_root().join("examples/quickstart");
    let explain = |args: &[&str]| {
        let out = std::process::Command::new(BIN).arg("route").arg(&quickstart).args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let admin = explain(&["--host", "api.localhost", "--path", "/admin/users"]);
    assert!(admin.contains("ingress default/api-admin") && admin.contains("auth Basic"), "{admin}");
    let tls = explain(&["--host", "hello.localhost", "--path", "/x/../y", "--https"]);
    assert!(
        tls.contains("hello.localhost/y") && tls.contains("certificate: default/quickstart-tls"),
        "{tls}"
    );
    assert!(explain(&["--host", "unknown.localhost"]).contains("built-in 404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_counts_bytes_both_ways() {
    let backend = ostium_test_support::EchoBackend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = site_manifest(backend.addr);
    std::fs::write(dir.path().join("all.yaml"), manifest).unwrap();
    tokio::task::block_in_place(|| {
        let ostium = Ostium::start(BIN.as_ref(), dir.path(), &[]);
        let raw = "POST /upload HTTP/1.1\r\nHost: web.example.com\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world";
        let response = ostium_e2e::request(ostium.http, raw).unwrap();
        assert_eq!(response.status, 200, "{}", ostium.log());
        let expected = format!("bytes_out={}", response.body.len());
        let mut line = String::new();
        for _ in 0..100 {
            let log = ostium.log();
            if let Some(found) = log.lines().find(|l| l.contains("ostium::access") && l.contains("/upload")) {
                line = found.to_owned();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(line.contains("bytes_in=11"), "{line}");
        assert!(line.contains(&expected), "{line} ({expected})");
        // Milliseconds to the microsecond, at most three decimals.
        let duration = line.split("duration_ms=").nth(1).and_then(|v| v.split(' ').next()).unwrap();
        assert!(duration.parse::<f64>().is_ok(), "{line}");
        assert!(duration.split('.').nth(1).is_none_or(|decimals| decimals.len() <= 3), "{line}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_log_format_writes_bare_lines_beside_the_log() {
    let backend = ostium_test_support::EchoBackend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: ostium}}\nspec: {{controller: ostium.dev/ingress-controller}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web}}\nspec:\n  ingressClassName: ostium\n  rules: [{{host: web.example.com, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}}}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ostium, namespace: default}}\ndata:\n  log-format-upstream: 'access \"$request\" $status [$proxy_upstream_name] $http_x_custom'\n",
        backend.addr.port(),
        backend.addr.ip()
    );
    std::fs::write(dir.path().join("all.yaml"), manifest).unwrap();
    tokio::task::block_in_place(|| {
        // The log is text here: an event would carry its time, level and target before it.
        let ostium = Ostium::start(BIN.as_ref(), dir.path(), &["--configmap", "default/ostium"]);
        let raw =
            "GET /shop?a=1 HTTP/1.1\r\nHost: web.example.com\r\nX-Custom: blue\r\nConnection: close\r\n\r\n";
        assert_eq!(ostium_e2e::request(ostium.http, raw).unwrap().status, 200, "{}", ostium.log());
        let expected = r#"access "GET /shop?a=1 HTTP/1.1" 200 [default-web-80] blue"#;
        for _ in 0..100 {
            if ostium.log().lines().any(|line| line == expected) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no line {expected:?} in:\n{}", ostium.log());
    });
}
