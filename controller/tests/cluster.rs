//! Cluster mode against an in-memory API server on loopback (`ostium_test_support::kube_api`):
//! the real binary, its kube-rs watchers, Lease election and status writes. The same scenarios
//! against a real kube-apiserver are in `envtest.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use ostium_e2e::{Ostium, eventually, get, request};
use ostium_test_support::EchoBackend;
use ostium_test_support::kube_api::KubeApi;
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_ostium");

struct Cluster {
    api: KubeApi,
    kubeconfig: tempfile::NamedTempFile,
}

impl Cluster {
    async fn start() -> Self {
        let api = KubeApi::start().await;
        let kubeconfig = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(kubeconfig.path(), api.kubeconfig()).unwrap();
        api.apply(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "ostium"}, "spec": {"controller": "ostium.dev/ingress-controller"},
        }));
        Self { api, kubeconfig }
    }

    fn ostium(&self, pod: &str, extra: &[&str]) -> Ostium {
        let env = [("KUBECONFIG", self.kubeconfig.path().to_str().unwrap()), ("POD_NAME", pod)];
        let mut args = vec!["--publish-status-address", "10.1.2.3"];
        args.extend(extra);
        Ostium::spawn_with(Path::new(BINARY), &args, &env)
    }

    fn service(&self, name: &str) {
        self.api.apply(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }));
    }

    fn slice(&self, service: &str, backend: &EchoBackend) {
        self.api.apply(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-1"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": backend.addr.port()}],
            "endpoints": [{"addresses": [backend.addr.ip().to_string()]}],
        }));
    }

    fn ingress(&self, name: &str, host: &str, service: &str, annotations: Value) {
        self.api.apply(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"ingressClassName": "ostium", "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]},
        }));
    }

    fn status_ips(&self, ingress: &str) -> Vec<String> {
        let Some(object) = self.api.get("ingresses", "default", ingress) else { return vec![] };
        let entries = object.pointer("/status/loadBalancer/ingress").and_then(Value::as_array).cloned();
        entries.unwrap_or_default().iter().filter_map(|e| e["ip"].as_str().map(str::to_owned)).collect()
    }

    /// The Service `web` with its one endpoint on `backend`, and the Ingress `web` routing
    /// `web.example.com` to it.
    fn seed_web(&self, backend: &EchoBackend) {
        self.service("web");
        self.slice("web", backend);
        self.ingress("web", "web.example.com", "web", json!({}));
    }

    /// Two ready replicas, once one leads: (leader, follower, the leader's identity).
    fn two_replicas(&self) -> (Ostium, Ostium, String) {
        let mut one = self.ostium("one", &[]);
        let mut two = self.ostium("two", &[]);
        one.wait_ready(Duration::from_secs(30));
        two.wait_ready(Duration::from_secs(30));
        eventually(Duration::from_secs(20), "a leader", || self.lease_holder().is_some());
        let holder = self.lease_holder().unwrap();
        if holder == "one" { (one, two, holder) } else { (two, one, holder) }
    }

    fn lease_renew_time(&self) -> Option<String> {
        let lease = self.api.get("leases", "default", "ostium-leader")?;
        lease.pointer("/spec/renewTime")?.as_str().map(str::to_owned)
    }

    fn lease_holder(&self) -> Option<String> {
        let lease = self.api.get("leases", "default", "ostium-leader")?;
        lease.pointer("/spec/holderIdentity")?.as_str().map(str::to_owned)
    }
}

fn backend_of(ostium: &Ostium, host: &str) -> Option<String> {
    let response = get(ostium.http, "/", Some(host)).ok()?;
    response.header("x-backend").map(str::to_owned)
}

fn metric(ostium: &Ostium, name: &str) -> f64 {
    let text = get(ostium.admin, "/metrics", None).map(|r| r.body).unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_endpoints_secrets_and_status_follow_the_api() {
    let cluster = Cluster::start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    cluster.service("web");
    cluster.slice("web", &a);
    cluster.ingress("web", "web.example.com", "web", json!({}));
    // An unrelated Secret: its payload is not kept (checked through the fetch path below).
    cluster.api.apply(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "users", "namespace": "default"},
        "data": {"auth": "ZGVtbzp7U0hBfWllU1Y1NVFjK2VRT2FZRFJTaGEvQWp6TlRKRT0="}}));

    let mut ostium = tokio::task::block_in_place(|| {
        let mut ostium = cluster.ostium("one", &[]);
        ostium.wait_ready(Duration::from_secs(30));
        ostium
    });
    tokio::task::block_in_place(|| {
        assert_eq!(backend_of(&ostium, "web.example.com").as_deref(), Some("a"), "{}", ostium.log());

        // Endpoints move.
        cluster.slice("web", &b);
        eventually(Duration::from_secs(10), "the endpoint moves to b", || {
            backend_of(&ostium, "web.example.com").as_deref() == Some("b")
        });

        // Status: written by the leader with the published address.
        eventually(Duration::from_secs(20), "status written", || cluster.status_ips("web") == ["10.1.2.3"]);

        // A new Ingress that refers to the existing Secret: the Secret is fetched, auth applies.
        cluster.ingress(
            "admin",
            "admin.example.com",
            "web",
            json!({"nginx.ingress.kubernetes.io/auth-type": "basic",
                   "nginx.ingress.kubernetes.io/auth-secret": "users"}),
        );
        eventually(Duration::from_secs(10), "the admin route asks for credentials", || {
            get(ostium.http, "/", Some("admin.example.com")).is_ok_and(|r| r.status == 401)
        });
        // demo:demo, {SHA} hash.
        let with_credentials = "GET / HTTP/1.1\r\nHost: admin.example.com\r\nAuthorization: Basic ZGVtbzpkZW1v\r\nConnection: close\r\n\r\n";
        assert_eq!(request(ostium.http, with_credentials).unwrap().status, 200, "{}", ostium.log());

        // Deleting an Ingress removes its routes and our address from its status... and it is
        // gone, so only the route matters here.
        cluster.api.delete("ingresses", "default", "admin");
        eventually(Duration::from_secs(10), "the admin route is gone", || {
            get(ostium.http, "/", Some("admin.example.com")).is_ok_and(|r| r.status == 404)
        });

        // An Ingress that leaves our class loses our address.
        cluster.ingress("other", "other.example.com", "web", json!({}));
        eventually(Duration::from_secs(20), "status of other", || {
            cluster.status_ips("other") == ["10.1.2.3"]
        });
        let mut object = cluster.api.get("ingresses", "default", "other").unwrap();
        object["spec"]["ingressClassName"] = "nginx".into();
        cluster.api.apply(object);
        eventually(Duration::from_secs(20), "our address removed", || cluster.status_ips("other").is_empty());

        assert!(ostium.is_running());
        assert_eq!(metric(&ostium, "ostium_malformed_objects_total"), 0.0);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_keeps_serving_and_changes_resume_after_it() {
    let cluster = Cluster::start().await;
    let a = EchoBackend::start("a").await;
    cluster.seed_web(&a);
    tokio::task::block_in_place(|| {
        let mut ostium = cluster.ostium("one", &[]);
        ostium.wait_ready(Duration::from_secs(30));

        cluster.api.set_down(true);
        let deadline = Instant::now() + Duration::from_secs(10);
        // The Ingress watch itself must have broken, so that the change below reaches a watch
        // that reconnected (a watch that resumes sees nothing until something changes).
        while metric(&ostium, "ostium_watch_errors_total{kind=\"ingress\"}") == 0.0 {
            assert!(Instant::now() < deadline, "no Ingress watch error counted; log:\n{}", ostium.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(backend_of(&ostium, "web.example.com").as_deref(), Some("a"), "still serving");
        assert_eq!(get(ostium.admin, "/readyz", None).unwrap().status, 200);

        cluster.ingress("new", "new.example.com", "web", json!({}));
        cluster.api.set_down(false);
        eventually(Duration::from_secs(30), "the change made during the outage arrives", || {
            backend_of(&ostium, "new.example.com").as_deref() == Some("a")
        });
        eventually(Duration::from_secs(30), "the Ingress watch counts its restart", || {
            metric(&ostium, "ostium_watch_restarts_total{kind=\"ingress\"}") > 0.0
        });
    });
}

/// How long the API server is gone in the outage test: long enough for kube-rs' default watch
/// backoff (800 ms doubling up to 30 s, plus up to as much again of jitter) to wait 12-24 s
/// between two attempts, while ostium's retries wait at most 2 s.
const OUTAGE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_api_server_was_gone_watches_and_the_lease_resume_within_seconds() {
    let cluster = Cluster::start().await;
    let a = EchoBackend::start("a").await;
    cluster.seed_web(&a);
    tokio::task::block_in_place(|| {
        let mut ostium = cluster.ostium("one", &[]);
        ostium.wait_ready(Duration::from_secs(30));
        eventually(Duration::from_secs(20), "leading", || cluster.lease_holder().as_deref() == Some("one"));

        // Gone: connections closed, the port refusing. Serving must not notice.
        cluster.api.set_unreachable(true);
        let gone = Instant::now();
        let (mut served, mut failed) = (0, 0);
        while gone.elapsed() < OUTAGE {
            match backend_of(&ostium, "web.example.com").as_deref() {
                Some("a") => served += 1,
                _ => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(failed, 0, "{served} requests served, {failed} failed; log:\n{}", ostium.log());
        assert!(metric(&ostium, "ostium_watch_errors_total{kind=\"ingress\"}") > 0.0, "{}", ostium.log());
        let renewed_before = cluster.lease_renew_time();

        // Back: an Ingress made at once goes live, and the leader renews, within 5 s.
        cluster.api.set_unreachable(false);
        let back = Instant::now();
        cluster.ingress("after", "after.example.com", "web", json!({}));
        let (mut change_live, mut lease_renewed) = (None, None);
        while change_live.is_none() || lease_renewed.is_none() {
            assert!(back.elapsed() < Duration::from_secs(30), "not resumed; log:\n{}", ostium.log());
            if change_live.is_none() && backend_of(&ostium, "after.example.com").as_deref() == Some("a") {
                change_live = Some(back.elapsed());
            }
            if lease_renewed.is_none() && cluster.lease_renew_time() != renewed_before {
                lease_renewed = Some(back.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (change_live, lease_renewed) = (change_live.unwrap(), lease_renewed.unwrap());
        eprintln!(
            "after a {OUTAGE:?} outage: change live in {change_live:?}, Lease renewed in {lease_renewed:?}"
        );
        assert!(change_live <= Duration::from_secs(5), "change live after {change_live:?}");
        assert!(lease_renewed <= Duration::from_secs(5), "Lease renewed after {lease_renewed:?}");
        assert!(ostium.log().contains("watch reconnected"), "{}", ostium.log());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_named_in_the_log_with_the_cause() {
    let cluster = Cluster::start().await;
    cluster.api.set_unreachable(true);
    tokio::task::block_in_place(|| {
        let ostium = cluster.ostium("one", &[]);
        let address = format!("api=http://{}/", cluster.api.addr);
        eventually(Duration::from_secs(20), "a watch failure logged", || {
            ostium.log().lines().any(|l| l.contains("watch failed") && l.contains(&address))
        });
        let log = ostium.log();
        let line = log.lines().find(|l| l.contains("watch failed")).unwrap();
        assert!(line.contains("Connection refused"), "{line}");
        assert!(!log.contains("reconnected"), "{log}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_replicas_writes_status_and_the_other_takes_over_when_it_dies() {
    let cluster = Cluster::start().await;
    let a = EchoBackend::start("a").await;
    cluster.seed_web(&a);
    tokio::task::block_in_place(|| {
        let (leader, follower, holder) = cluster.two_replicas();
        eventually(Duration::from_secs(20), "status written", || cluster.status_ips("web") == ["10.1.2.3"]);
        // Counted once the API server has answered the write, which may be after it is visible.
        eventually(Duration::from_secs(5), "the write counted", || {
            metric(&leader, "ostium_ingress_status_writes_total") >= 1.0
        });
        assert_eq!(metric(&follower, "ostium_ingress_status_writes_total"), 0.0, "followers never write");
        assert_eq!(metric(&follower, "ostium_leader "), 0.0);

        // Killed without a chance to release: the follower waits out the Lease (15 s).
        let killed_at = Instant::now();
        drop(leader);
        eventually(Duration::from_secs(30), "the follower takes over", || {
            cluster.lease_holder().is_some_and(|h| h != holder)
        });
        let takeover = killed_at.elapsed();
        // The Lease (15 s) from the last renewal seen, plus a round (2 s), plus slack for a busy machine.
        assert!(takeover <= Duration::from_secs(15 + 2 + 5), "took {takeover:?}");

        cluster.ingress("later", "later.example.com", "web", json!({}));
        eventually(Duration::from_secs(20), "the new leader writes status", || {
            cluster.status_ips("later") == ["10.1.2.3"]
        });
        assert!(metric(&follower, "ostium_ingress_status_writes_total") >= 1.0);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_shut_down_hands_over_at_once() {
    let cluster = Cluster::start().await;
    let a = EchoBackend::start("a").await;
    cluster.seed_web(&a);
    tokio::task::block_in_place(|| {
        let (mut leader, follower, holder) = cluster.two_replicas();

        let stopped_at = Instant::now();
        assert!(leader.terminate(Duration::from_secs(40)), "exit 0 after SIGTERM; log:\n{}", leader.log());
        assert!(leader.log().contains("leader lease released"), "{}", leader.log());
        eventually(Duration::from_secs(10), "the follower takes over", || {
            cluster.lease_holder().is_some_and(|h| h != holder)
        });
        // Well within the 15 s a killed leader's Lease takes to expire.
        assert!(stopped_at.elapsed() < Duration::from_secs(8), "took {:?}", stopped_at.elapsed());
        drop(follower);
    });
}

/// `proxy-set-headers` of the `--configmap` ConfigMap names a ConfigMap of another namespace
/// (ingress-nginx's nginx.go reads it by `namespace/name`): its data is fetched once named, and
/// each edit of it applies at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_config_map_named_by_the_configmap_applies_its_edits_live() {
    let cluster = Cluster::start().await;
    let backend = EchoBackend::start("web").await;
    cluster.seed_web(&backend);
    let headers = |team: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "to-backends", "namespace": "headers"}, "data": {"X-Team": team}})
    };
    cluster.api.apply(headers("red"));
    cluster.api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ostium", "namespace": "ingress"},
        "data": {"proxy-set-headers": "headers/to-backends"}}));
    let team = |ostium: &Ostium| {
        let response = get(ostium.http, "/", Some("web.example.com")).ok()?;
        ostium_test_support::echoed_header(&response.body, "x-team").first().map(|t| (*t).to_owned())
    };
    tokio::task::block_in_place(|| {
        let mut ostium = cluster.ostium("one", &["--configmap", "ingress/ostium"]);
        ostium.wait_ready(Duration::from_secs(30));
        assert_eq!(team(&ostium).as_deref(), Some("red"), "{}", ostium.log());
        cluster.api.apply(headers("blue"));
        eventually(Duration::from_secs(10), "the edit applies", || team(&ostium).as_deref() == Some("blue"));
    });
}
