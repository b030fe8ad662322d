//! Propagation latency: from an object change to the first request that sees it.
//!
//! ```text
//! cargo build --profile dist && cargo run --release -p ostium --example propagation -- \
//!     [--binary target/dist/ostium] [--ingresses 1000,10000,100000] [--changes 100] [--mode both]
//! ```
//!
//! For each Ingress count N it loads N Ingresses (each its own host, all on one Service) plus a
//! route whose only endpoint moves, into the `ostium` binary, then times two kinds of change,
//! one at a time, each until the first answer that shows it:
//! - an EndpointSlice change: the moving Service's endpoint switches between two echo backends
//!   (until the answer names the new one);
//! - a new Ingress with a new host (until it answers 200).
//!
//! Modes: `manifests` writes each change as a file renamed into the `--manifests` directory;
//! `cluster` runs ostium against the in-memory API server of `ostium-test-support` (watch
//! events over loopback HTTP, kube-rs watchers). Requests poll over fresh loopback connections
//! as fast as they are answered. Prints p50, p99 and max per mode, N and kind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ostium_e2e::{Ostium, get};
use ostium_test_support::EchoBackend;
use ostium_test_support::kube_api::KubeApi;
use serde_json::{Value, json};

struct Options {
    binary: PathBuf,
    counts: Vec<usize>,
    changes: usize,
    modes: Vec<&'static str>,
}

fn options() -> Options {
    let mut options = Options {
        binary: ostium_e2e::workspace_root().join("target/dist/ostium"),
        counts: vec![1000, 10000, 100000],
        changes: 100,
        modes: vec!["manifests", "cluster"],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--binary" => options.binary = value.into(),
            "--ingresses" => options.counts = value.split(',').map(|n| n.parse().expect("a count")).collect(),
            "--changes" => options.changes = value.parse().expect("a count"),
            "--mode" => {
                options.modes = match value.as_str() {
                    "manifests" => vec!["manifests"],
                    "cluster" => vec!["cluster"],
                    "both" => vec!["manifests", "cluster"],
                    other => panic!("unknown mode {other}"),
                }
            }
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        options.binary.exists(),
        "{} not found: cargo build --profile dist first",
        options.binary.display()
    );
    options
}

fn class() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "ostium"},
           "spec": {"controller": "ostium.dev/ingress-controller"}})
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
           "spec": {"ports": [{"name": "http", "port": 80}]}})
}

fn slice(service: &str, backend: &EchoBackend) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-1"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": backend.addr.port()}],
           "endpoints": [{"addresses": [backend.addr.ip().to_string()]}]})
}

fn ingress(name: &str, host: &str, service: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"ingressClassName": "ostium", "rules": [{"host": host, "http": {"paths": [
               {"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}})
}

/// Where changes go.
enum Target {
    Files { dir: PathBuf, staging: PathBuf },
    Api(KubeApi),
}

impl Target {
    fn apply(&self, file: &str, objects: &[Value]) {
        match self {
            Self::Files { dir, staging } => {
                let text: String = objects.iter().map(|o| format!("---\n{o}\n")).collect();
                let temp = staging.join(file);
                std::fs::write(&temp, text).unwrap();
                std::fs::rename(&temp, dir.join(file)).unwrap();
            }
            Self::Api(api) => objects.iter().for_each(|o| api.apply(o.clone())),
        }
    }
}

/// Polls until `seen` holds for an answer; returns the time from `started`.
fn until(
    ostium: &Ostium,
    host: &str,
    started: Instant,
    seen: impl Fn(&ostium_e2e::Response) -> bool,
) -> Duration {
    let deadline = started + Duration::from_secs(30);
    loop {
        if let Ok(response) = get(ostium.http, "/", Some(host))
            && seen(&response)
        {
            return started.elapsed();
        }
        assert!(Instant::now() < deadline, "{host}: not seen within 30 s");
    }
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!("p50 {:7.2} ms   p99 {:7.2} ms   max {:7.2} ms", ms(at(0.50)), ms(at(0.99)), ms(at(1.0)))
}

fn run(
    mode: &str,
    count: usize,
    options: &Options,
    backends: &[EchoBackend; 2],
    runtime: &tokio::runtime::Runtime,
) {
    let work = tempfile::tempdir().unwrap();
    let mut base = vec![
        class(),
        service("web"),
        slice("web", &backends[0]),
        service("moving"),
        slice("moving", &backends[0]),
    ];
    base.push(ingress("moving", "moving.bench", "moving"));
    base.extend((0..count).map(|i| ingress(&format!("i{i}"), &format!("h{i}.bench"), "web")));

    let (target, ostium) = match mode {
        "manifests" => {
            let dir = work.path().join("manifests");
            let staging = work.path().join("staging");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::create_dir_all(&staging).unwrap();
            let target = Target::Files { dir: dir.clone(), staging };
            // The moving slice has a file of its own, so that moving it rewrites nothing else.
            target.apply("10-moving-slice.yaml", &[slice("moving", &backends[0])]);
            target.apply("00-base.yaml", &base[..4]);
            target.apply("20-ingresses.yaml", &base[5..]);
            let args = ["--manifests", dir.to_str().unwrap(), "--access-log", "off"];
            (target, Ostium::spawn_with(&options.binary, &args, &[]))
        }
        _ => {
            let api = runtime.block_on(KubeApi::start());
            base.iter().for_each(|o| api.apply(o.clone()));
            let kubeconfig = work.path().join("kubeconfig");
            std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
            let env = [("KUBECONFIG", kubeconfig.to_str().unwrap()), ("POD_NAME", "bench")];
            (Target::Api(api), Ostium::spawn_with(&options.binary, &["--access-log", "off"], &env))
        }
    };
    let mut ostium = ostium;
    let started = Instant::now();
    ostium.wait_ready(Duration::from_secs(120));
    let ready = started.elapsed();
    until(&ostium, "moving.bench", Instant::now(), |r| r.header("x-backend") == Some("a"));

    let mut endpoint = Vec::new();
    for i in 0..options.changes {
        let (to, name) = if i % 2 == 0 { (&backends[1], "b") } else { (&backends[0], "a") };
        let started = Instant::now();
        target.apply("10-moving-slice.yaml", &[slice("moving", to)]);
        endpoint.push(until(&ostium, "moving.bench", started, |r| r.header("x-backend") == Some(name)));
    }
    let mut route = Vec::new();
    for i in 0..options.changes {
        let host = format!("new-{i}.bench");
        let started = Instant::now();
        target.apply(&format!("30-new-{i}.yaml"), &[ingress(&format!("new-{i}"), &host, "web")]);
        route.push(until(&ostium, &host, started, |r| r.status == 200));
    }
    println!("{mode:9} N = {count:6}  ready in {:.2} s", ready.as_secs_f64());
    println!("{mode:9} N = {count:6}  endpoint change  {}", summary(&mut endpoint));
    println!("{mode:9} N = {count:6}  new Ingress      {}", summary(&mut route));
    assert!(ostium.is_running());
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let backends = runtime.block_on(async { [EchoBackend::start("a").await, EchoBackend::start("b").await] });
    println!("{} changes of each kind, one at a time; binary {}", options.changes, options.binary.display());
    for mode in &options.modes {
        for &count in &options.counts {
            run(mode, count, &options, &backends, &runtime);
        }
    }
}
