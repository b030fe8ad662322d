//! The header keys of `--configmap` through the whole binary: `proxy-set-headers` and
//! `add-headers` name other ConfigMaps (ingress-nginx's internal/ingress/controller/nginx.go),
//! whose edits apply live; the `custom-headers` annotation sets the headers
//! `global-allowed-response-headers` allows and denies (503) an Ingress asking for others
//! (internal/ingress/annotations/customheaders/main.go, test/e2e/annotations/customheaders.go).

use std::time::Duration;

use ostium_e2e::{Ostium, eventually, request, service_manifest};
use ostium_test_support::{EchoBackend, echoed_header};

const BIN: &str = env!("CARGO_BIN_EXE_ostium");

fn manifest(backend: std::net::SocketAddr, team: &str) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: ostium}}
spec: {{controller: ostium.dev/ingress-controller}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ostium, namespace: ingress}}
data:
  proxy-set-headers: headers/to-backends
  add-headers: headers/to-clients
  global-allowed-response-headers: My-Custom-Header
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: to-backends, namespace: headers}}
data: {{X-Team: "{team}"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: to-clients, namespace: headers}}
data: {{X-Frame-Options: "{team}"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: allowed, namespace: default}}
data: {{My-Custom-Header: "42"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: refused, namespace: default}}
data: {{Not-Allowed: "1"}}
---
{service}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: allowed
  annotations: {{nginx.ingress.kubernetes.io/custom-headers: default/allowed}}
spec:
  ingressClassName: ostium
  rules:
  - host: allowed.example.com
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: refused
  annotations: {{nginx.ingress.kubernetes.io/custom-headers: default/refused}}
spec:
  ingressClassName: ostium
  rules:
  - host: refused.example.com
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]
"#,
        service = service_manifest("web", backend),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_config_maps_apply_live_and_custom_headers_follow_the_allowed_list() {
    let backend = EchoBackend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let write = |team: &str| {
        let path = dir.path().join("all.tmp");
        std::fs::write(&path, manifest(backend.addr, team)).unwrap();
        std::fs::rename(path, dir.path().join("all.yaml")).unwrap();
    };
    write("red");
    tokio::task::block_in_place(|| {
        let ostium = Ostium::start(BIN.as_ref(), dir.path(), &["--configmap", "ingress/ostium"]);
        let get = |host: &str| {
            let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            request(ostium.http, &raw).unwrap()
        };
        let allowed = get("allowed.example.com");
        assert_eq!(allowed.status, 200, "{}", ostium.log());
        assert_eq!(echoed_header(&allowed.body, "x-team"), ["red"]);
        assert_eq!(allowed.header("x-frame-options"), Some("red"));
        assert_eq!(allowed.header("my-custom-header"), Some("42"));
        let refused = get("refused.example.com");
        assert_eq!(refused.status, 503, "a header outside global-allowed-response-headers denies");
        assert_eq!(refused.header("not-allowed"), None);

        write("blue");
        eventually(Duration::from_secs(10), "the edited ConfigMaps apply", || {
            let answer = get("allowed.example.com");
            echoed_header(&answer.body, "x-team") == ["blue"]
                && answer.header("x-frame-options") == Some("blue")
        });
    });
}
