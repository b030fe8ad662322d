//! A synthetic cluster for benchmarks: `n` Ingresses (host `h<i>.bench.local`, `Prefix /api` and
//! `Exact /healthz`), each with its own Service and an EndpointSlice of 5 ready endpoints.

use std::sync::Arc;

use ostium_translate::{Object, Objects, Options};
use serde_json::json;

pub fn objects(n: usize) -> Objects {
    let mut objects = Objects::default();
    let class = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "ostium"}, "spec": {"controller": "ostium.dev/ingress-controller"}});
    objects.insert(Object::from_value(class).unwrap());
    for i in 0..n {
        let name = format!("svc-{i}");
        let service = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"ports": [{"name": "http", "port": 80}]}});
        let endpoints: Vec<_> = (0..5)
            .map(|j| json!({"addresses": [format!("10.{}.{}.{j}", i >> 8 & 255, i & 255)], "conditions": {"ready": true}}))
            .collect();
        let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-x1"), "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints});
        let backend = json!({"service": {"name": name, "port": {"name": "http"}}});
        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": format!("ing-{i}"), "namespace": "bench"},
            "spec": {"ingressClassName": "ostium", "rules": [{"host": format!("h{i}.bench.local"), "http": {"paths": [
                {"path": "/api", "pathType": "Prefix", "backend": backend},
                {"path": "/healthz", "pathType": "Exact", "backend": backend}]}}]}});
        objects.insert(Object::from_value(service).unwrap());
        objects.insert(Object::from_value(slice).unwrap());
        objects.insert(Object::from_value(ingress).unwrap());
    }
    objects
}

pub fn options() -> Options {
    let certificate = ostium_test_support::certificate(&["bench.invalid"]);
    Options::new(certificate, Arc::new(rustls::crypto::ring::default_provider()))
}
