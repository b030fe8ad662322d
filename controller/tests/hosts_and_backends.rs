//! `server-alias`, `service-upstream`, `default-backend` and `custom-http-errors` through the
//! whole binary: manifests translated, requests on loopback.

use ostium_e2e::{Ostium, request};
use ostium_test_support::{EchoBackend, echoed, echoed_header};

const BIN: &str = env!("CARGO_BIN_EXE_ostium");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_cluster_ips_and_default_backends_from_manifests() {
    let cluster_ip = EchoBackend::start("cluster-ip").await;
    let pod = EchoBackend::start("pod").await;
    let errors = EchoBackend::start("errors").await;
    let (ip, port) = (cluster_ip.addr.ip(), cluster_ip.addr.port());
    let manifest = format!(
        r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: ostium}}
spec: {{controller: ostium.dev/ingress-controller}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{clusterIP: "{ip}", ports: [{{name: http, port: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {pod_port}}}]
endpoints: [{{addresses: ["{pod_ip}"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: errors}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: errors-1, labels: {{kubernetes.io/service-name: errors}}}}
addressType: IPv4
ports: [{{name: http, port: {errors_port}}}]
endpoints: [{{addresses: ["{errors_ip}"]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations:
    nginx.ingress.kubernetes.io/server-alias: "alias.example.com"
    nginx.ingress.kubernetes.io/service-upstream: "true"
    nginx.ingress.kubernetes.io/default-backend: errors
    nginx.ingress.kubernetes.io/custom-http-errors: "404"
spec:
  ingressClassName: ostium
  rules:
  - host: web.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: {port}}}}}}}}}
      - {{path: /missing, pathType: Prefix, backend: {{service: {{name: missing, port: {{number: 80}}}}}}}}
"#,
        pod_ip = pod.addr.ip(),
        pod_port = pod.addr.port(),
        errors_ip = errors.addr.ip(),
        errors_port = errors.addr.port(),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), manifest).unwrap();
    tokio::task::block_in_place(|| {
        let ostium = Ostium::start(BIN.as_ref(), dir.path(), &[]);
        let get = |host: &str, path: &str| {
            let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            request(ostium.http, &raw).unwrap()
        };
        for host in ["web.example.com", "alias.example.com"] {
            let response = get(host, "/");
            assert_eq!(response.status, 200, "{host}: {}", ostium.log());
            assert_eq!(echoed(&response.body, "backend"), Some("cluster-ip"), "{host}");
        }
        assert_eq!(get("other.example.com", "/").status, 404);

        let response = get("web.example.com", "/missing/page");
        assert_eq!(echoed(&response.body, "backend"), Some("errors"));
        assert_eq!(echoed(&response.body, "target"), Some("/missing/page"));
        assert_eq!(echoed_header(&response.body, "x-code"), ["503"]);
        assert_eq!(echoed_header(&response.body, "x-service-name"), ["missing"]);

        let response = get("alias.example.com", "/status/404");
        assert_eq!(echoed(&response.body, "backend"), Some("errors"));
        assert_eq!(echoed(&response.body, "target"), Some("/"));
        assert_eq!(echoed_header(&response.body, "x-code"), ["404"]);
        assert_eq!(echoed_header(&response.body, "x-original-uri"), ["/status/404"]);
    });
    assert_eq!(pod.requests(), 0, "service-upstream never dials the pods");
}
