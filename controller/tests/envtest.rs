//! Cluster mode against a real kube-apiserver and etcd, following the envtest convention: it
//! runs when `KUBEBUILDER_ASSETS` names a folder holding `kube-apiserver` and `etcd`, and is
//! skipped with a message otherwise. The same scenarios run against the in-memory API server in
//! `cluster.rs` on every machine.
//!
//! The API server refuses loopback addresses in EndpointSlices, so the backends here are test
//! hosts in network namespaces, each behind a veth pair (`ip netns`, needs root), serving a file
//! that names them with Python's `http.server`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use ostium_e2e::{Ostium, eventually, free_addr, get};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_ostium");

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test host: a network namespace joined to this one by a veth pair, serving `/name`.
struct NetnsHost {
    ip: String,
    _server: Process,
    _root: tempfile::TempDir,
    _links: Links,
}

/// The namespace and veth pair of a test host, removed on drop.
struct Links {
    namespace: String,
    host_link: String,
}

impl Drop for Links {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["netns", "del", &self.namespace]).stderr(Stdio::null()).status();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    match Command::new("ip").args(args).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`ip {}` failed ({s})", args.join(" "))),
        Err(e) => Err(format!("cannot run `ip`: {e}")),
    }
}

impl NetnsHost {
    /// Makes host 10.213.`index`.2 answering `/name` with `name`; `Err` (with the reason)
    /// where network namespaces cannot be made.
    fn start(index: u8, name: &str) -> Result<Self, String> {
        let id = format!("{}{index}", std::process::id() % 100_000);
        let namespace = format!("ostium-test-{id}");
        let (host_link, peer_link) = (format!("ost{id}h"), format!("ost{id}p"));
        let (host_ip, host) = (format!("10.213.{index}.1"), format!("10.213.{index}.2"));
        ip(&["netns", "add", &namespace])?;
        let links = Links { namespace: namespace.clone(), host_link: host_link.clone() };
        ip(&["link", "add", &host_link, "type", "veth", "peer", "name", &peer_link])?;
        ip(&["link", "set", &peer_link, "netns", &namespace])?;
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_link])?;
        ip(&["link", "set", &host_link, "up"])?;
        ip(&["netns", "exec", &namespace, "ip", "addr", "add", &format!("{host}/24"), "dev", &peer_link])?;
        ip(&["netns", "exec", &namespace, "ip", "link", "set", &peer_link, "up"])?;
        ip(&["netns", "exec", &namespace, "ip", "link", "set", "lo", "up"])?;

        let root = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(root.path().join("name"), name).map_err(|e| e.to_string())?;
        let server = Command::new("ip")
            .args(["netns", "exec", &namespace, "python3", "-m", "http.server", "8080", "--bind", &host])
            .arg("--directory")
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start python3 -m http.server: {e}"))?;
        let started = Self { ip: host, _server: Process(server), _root: root, _links: links };
        let addr = format!("{}:8080", started.ip).parse().expect("an address");
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(addr, "/name", None).map(|r| r.body).ok().as_deref() != Some(name) {
            if Instant::now() > deadline {
                return Err(format!("the test host {} does not answer", started.ip));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(started)
    }
}

/// etcd and kube-apiserver from `KUBEBUILDER_ASSETS`, with a token for an admin user.
struct ControlPlane {
    _etcd: Process,
    _apiserver: Process,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    fn start(assets: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (etcd_client, etcd_peer, secure) = (free_addr(), free_addr(), free_addr());
        let etcd = Command::new(assets.join("etcd"))
            .args(["--data-dir", dir.path().join("etcd").to_str().unwrap()])
            .args(["--listen-client-urls", &format!("http://{etcd_client}")])
            .args(["--advertise-client-urls", &format!("http://{etcd_client}")])
            .args(["--listen-peer-urls", &format!("http://{etcd_peer}")])
            .arg("--unsafe-no-fsync")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Process(etcd);

        let token = "ostium-envtest-admin-token";
        std::fs::write(dir.path().join("tokens.csv"), format!("{token},admin,admin,system:masters\n"))
            .unwrap();
        let signing_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        std::fs::write(dir.path().join("sa.key"), signing_key).unwrap();
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let apiserver = Command::new(assets.join("kube-apiserver"))
            .args(["--etcd-servers", &format!("http://{etcd_client}")])
            .args(["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
            .args(["--secure-port", &secure.port().to_string()])
            .args(["--cert-dir", &path("certs")])
            .args(["--token-auth-file", &path("tokens.csv")])
            .args(["--authorization-mode", "RBAC"])
            .args(["--service-cluster-ip-range", "10.96.0.0/24"])
            .args(["--service-account-issuer", &format!("https://{secure}")])
            .args(["--service-account-key-file", &path("sa.key")])
            .args(["--service-account-signing-key-file", &path("sa.key")])
            .args(["--disable-admission-plugins", "ServiceAccount"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("apiserver.log")).unwrap())
            .spawn()
            .expect("start kube-apiserver");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster: {{server: \"https://{secure}\", insecure-skip-tls-verify: true}}\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: admin, namespace: default}}\ncurrent-context: envtest\nusers:\n- name: admin\n  user: {{token: {token}}}\n"
            ),
        )
        .unwrap();
        Self { _etcd: etcd, _apiserver: Process(apiserver), dir, kubeconfig }
    }

    async fn client(&self) -> kube::Client {
        let options = kube::config::KubeConfigOptions::default();
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Waits until the API server serves, with its log in the panic message otherwise.
    async fn wait_ready(&self, client: &kube::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.apiserver_version().await.is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default();
                panic!("kube-apiserver did not come up; log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Server-side applies objects (or, with `dry_run`, only validates them).
async fn apply(client: &kube::Client, discovery: &Discovery, objects: &[Value], dry_run: bool) {
    for object in objects {
        let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = kube::api::GroupVersionKind::try_from(&types).unwrap();
        let (resource, capabilities) = discovery.resolve_gvk(&gvk).expect("a kind the API server knows");
        let name = object.metadata.name.clone().unwrap();
        let api: Api<DynamicObject> = match (&capabilities.scope, &object.metadata.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (Scope::Namespaced, None) => Api::namespaced_with(client.clone(), "default", &resource),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        let mut params = PatchParams::apply("ostium-envtest").force();
        params.dry_run = dry_run;
        if let Err(e) = api.patch(&name, &params, &Patch::Apply(&object)).await {
            panic!("{} {name}: {e}", types.kind);
        }
    }
}

fn manifests(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).unwrap().into_iter().filter(|d| !d.is_null()).collect()
}

fn ingress(name: &str, host: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"ingressClassName": "ostium", "rules": [{"host": host, "http": {"paths": [
               {"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
}

fn slice(ip: &str) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "web-1", "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": [{"addresses": [ip]}]})
}

fn name_behind(ostium: &Ostium, host: &str) -> Option<String> {
    get(ostium.http, "/name", Some(host)).ok().filter(|r| r.status == 200).map(|r| r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_api_server() {
    let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from) else {
        eprintln!("skipped: KUBEBUILDER_ASSETS is not set (it names a folder with kube-apiserver and etcd)");
        return;
    };
    for binary in ["etcd", "kube-apiserver"] {
        assert!(assets.join(binary).exists(), "KUBEBUILDER_ASSETS has no {binary}");
    }
    let (a, b) = match (NetnsHost::start(1, "a"), NetnsHost::start(2, "b")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("skipped: no network namespaces for the test backends here: {e}");
            return;
        }
    };
    let plane = ControlPlane::start(&assets);
    let client = plane.client().await;
    plane.wait_ready(&client).await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();

    // deploy/: the namespace for real (dry runs of namespaced objects need it), the rest dry.
    let deploy = ostium_e2e::workspace_root().join("deploy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&deploy)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let documents: Vec<Value> = files.iter().flat_map(|f| manifests(f)).collect();
    let (namespaces, rest): (Vec<Value>, Vec<Value>) =
        documents.into_iter().partition(|d| d["kind"] == "Namespace");
    apply(&client, &discovery, &namespaces, false).await;
    apply(&client, &discovery, &rest, true).await;

    apply(&client, &discovery, &[
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "ostium"},
               "spec": {"controller": "ostium.dev/ingress-controller"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        slice(&a.ip),
        ingress("web", "web.example.com"),
    ], false)
    .await;

    let kubeconfig = plane.kubeconfig.to_str().unwrap().to_owned();
    let start = |pod: &str| {
        let env = [("KUBECONFIG", kubeconfig.as_str()), ("POD_NAME", pod), ("POD_NAMESPACE", "default")];
        Ostium::spawn_with(Path::new(BINARY), &["--publish-status-address", "10.9.9.9"], &env)
    };
    let (mut one, mut two) = (start("one"), start("two"));
    tokio::task::block_in_place(|| {
        one.wait_ready(Duration::from_secs(60));
        two.wait_ready(Duration::from_secs(60));
        for ostium in [&one, &two] {
            eventually(Duration::from_secs(10), "the route to a", || {
                name_behind(ostium, "web.example.com").as_deref() == Some("a")
            });
        }
    });

    apply(&client, &discovery, &[slice(&b.ip), ingress("second", "second.example.com")], false).await;
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(client.clone(), "default");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "default");
    let handle = tokio::runtime::Handle::current();
    let status_ip = |name: &str| {
        let ingress = handle.block_on(ingresses.get(name)).ok()?;
        ingress.status?.load_balancer?.ingress?.first()?.ip.clone()
    };
    let holder = || handle.block_on(leases.get("ostium-leader")).ok()?.spec?.holder_identity;
    tokio::task::block_in_place(|| {
        for ostium in [&one, &two] {
            eventually(Duration::from_secs(10), "the endpoint moves to b", || {
                name_behind(ostium, "web.example.com").as_deref() == Some("b")
            });
            eventually(Duration::from_secs(10), "the new Ingress", || {
                name_behind(ostium, "second.example.com").as_deref() == Some("b")
            });
        }
        eventually(Duration::from_secs(30), "status written", || {
            status_ip("web").as_deref() == Some("10.9.9.9")
        });
        let leader = holder().expect("a leader");
        let (killed, survivor) = if leader == "one" { (one, two) } else { (two, one) };
        drop(killed);
        eventually(Duration::from_secs(30), "the other replica takes over", || {
            holder().is_some_and(|h| h != leader)
        });
        let handle = handle.clone();
        handle.block_on(apply(&client, &discovery, &[ingress("third", "third.example.com")], false));
        eventually(Duration::from_secs(30), "the new leader writes status", || {
            status_ip("third").as_deref() == Some("10.9.9.9")
        });
        drop(survivor);
    });
}

/// The backends' harness itself, wherever network namespaces can be made.
#[test]
fn network_namespace_hosts_answer() {
    match NetnsHost::start(3, "c") {
        Ok(host) => {
            let addr = format!("{}:8080", host.ip).parse().unwrap();
            assert_eq!(get(addr, "/name", None).unwrap().body, "c");
        }
        Err(e) => eprintln!("skipped: no network namespaces here: {e}"),
    }
}
