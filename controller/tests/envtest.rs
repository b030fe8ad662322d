//! Cluster mode against a real kube-apiserver and etcd, following the envtest convention: it
//! runs when `KUBEBUILDER_ASSETS` names a folder holding `kube-apiserver` and `etcd` (set when the
//! tests are built: `controller/build.rs` turns on `cfg(envtest)`), and shows as ignored otherwise. The same scenarios run against the in-memory API server in
//! `cluster.rs` on every machine.
//!
//! The install in `deploy/` is checked by the API server itself: every document passes a
//! server-side dry run, and ostium runs as the ServiceAccount of `deploy/10-rbac.yaml`, with a
//! token the API server issued for it, so a permission missing from that RBAC fails here.
//!
//! The API server refuses loopback addresses in EndpointSlices, so the backends here are test
//! hosts in network namespaces, each behind a veth pair (`ip netns`, needs root), serving a file
//! that names them with Python's `http.server`. Where network namespaces cannot be made the test
//! fails and says why. A run killed before it could clean up leaves its `ostium-test-*`
//! namespaces behind (`ip netns del NAME` removes one with its veth pair).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, ValidationDirective};
use kube::discovery::{Discovery, Scope};
use ostium_e2e::{Ostium, Response, free_addrs, get, request};
use serde::Deserialize;
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_ostium");

/// The namespace and ServiceAccount of the install in `deploy/`.
const INSTALL_NAMESPACE: &str = "ostium";
const SERVICE_ACCOUNT: &str = "ostium";

/// How long kube-apiserver is gone in the outage: long enough for kube-rs' default watch backoff
/// to wait 12-24 s between two attempts, while ostium's retries wait at most 2 s.
const OUTAGE: Duration = Duration::from_secs(20);

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Why test hosts cannot be made on this machine (no `ip`, no `python3`, no privileges).
struct Unavailable(String);

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

/// Runs `ip args`; `Err` carries what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).stdin(Stdio::null()).output();
    match output {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `ip`: {e}")),
    }
}

impl NetnsHost {
    /// Makes a test host answering `/name` with `name`. Its names and its /30 subnet in
    /// 10.213.0.0/16 are derived from the process id and `index` (below 4), so that runs at the
    /// same time do not get in each other's way. `Err` where this machine cannot make network
    /// namespaces at all; any other failure panics.
    fn start(index: u8, name: &str) -> Result<Self, Unavailable> {
        assert!(index < 4, "index {index} out of range");
        if Command::new("python3").arg("--version").stdout(Stdio::null()).status().is_err() {
            return Err(Unavailable("no python3 to serve the test hosts".into()));
        }
        let pid = std::process::id();
        let id = format!("{}{index}", pid % 100_000);
        let namespace = format!("ostium-test-{id}");
        let (host_link, peer_link) = (format!("ost{id}h"), format!("ost{id}p"));
        let base = ((pid % 4000) * 4 + u32::from(index)) * 4;
        let (third, fourth) = (base >> 8, base & 0xff);
        let (host_ip, host) =
            (format!("10.213.{third}.{}", fourth + 1), format!("10.213.{third}.{}", fourth + 2));
        if let Err(e) = ip(&["netns", "add", &namespace]) {
            let denied = ["cannot run", "Operation not permitted", "Permission denied"];
            if denied.iter().any(|d| e.contains(d)) {
                return Err(Unavailable(e));
            }
            panic!("cannot make a network namespace: {e}");
        }
        let links = Links { namespace: namespace.clone(), host_link: host_link.clone() };
        let (host_cidr, peer_cidr) = (format!("{host_ip}/30"), format!("{host}/30"));
        let setup = [
            vec!["link", "add", &host_link, "type", "veth", "peer", "name", &peer_link],
            vec!["link", "set", &peer_link, "netns", &namespace],
            vec!["addr", "add", &host_cidr, "dev", &host_link],
            vec!["link", "set", &host_link, "up"],
            vec!["netns", "exec", &namespace, "ip", "addr", "add", &peer_cidr, "dev", &peer_link],
            vec!["netns", "exec", &namespace, "ip", "link", "set", &peer_link, "up"],
            vec!["netns", "exec", &namespace, "ip", "link", "set", "lo", "up"],
        ];
        for args in setup {
            ip(&args).unwrap_or_else(|e| panic!("cannot set up the test host {host}: {e}"));
        }

        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("name"), name).unwrap();
        let server = Command::new("ip")
            .args(["netns", "exec", &namespace, "python3", "-m", "http.server", "8080", "--bind", &host])
            .arg("--directory")
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let mut started = Self { ip: host, _server: Process(server), _root: root, _links: links };
        let addr = started.addr();
        let deadline = Instant::now() + Duration::from_secs(15);
        while get(addr, "/name", None).map(|r| r.body).ok().as_deref() != Some(name) {
            if let Ok(Some(status)) = started._server.0.try_wait() {
                panic!("the server of the test host {} exited with {status}", started.ip);
            }
            assert!(Instant::now() < deadline, "the test host {} does not answer", started.ip);
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(started)
    }

    fn addr(&self) -> SocketAddr {
        format!("{}:8080", self.ip).parse().expect("an address")
    }
}

/// A kubeconfig for `server` (TLS unverified) with a bearer token.
fn kubeconfig(server: SocketAddr, user: &str, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster: {{server: \"https://{server}\", insecure-skip-tls-verify: true}}\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: {user}, namespace: {namespace}}}\ncurrent-context: envtest\nusers:\n- name: {user}\n  user: {{token: \"{token}\"}}\n"
    )
}

async fn client_from(kubeconfig: &Path) -> kube::Client {
    let options = kube::config::KubeConfigOptions::default();
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

/// etcd and kube-apiserver from `KUBEBUILDER_ASSETS`, with a token for an admin user. Dropped in
/// field order: the API server goes before etcd.
struct ControlPlane {
    apiserver: Process,
    _etcd: Process,
    dir: tempfile::TempDir,
    assets: PathBuf,
    etcd_client: SocketAddr,
    secure: SocketAddr,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    fn start(assets: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let [etcd_client, etcd_peer, secure] = free_addrs();
        let etcd = Command::new(assets.join("etcd"))
            .args(["--data-dir", &path("etcd")])
            .args(["--listen-client-urls", &format!("http://{etcd_client}")])
            .args(["--advertise-client-urls", &format!("http://{etcd_client}")])
            .args(["--listen-peer-urls", &format!("http://{etcd_peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{etcd_peer}")])
            .args(["--initial-cluster", &format!("default=http://{etcd_peer}")])
            .arg("--unsafe-no-fsync")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log("etcd.log"))
            .spawn()
            .expect("start etcd");
        let etcd = Process(etcd);

        let token = "ostium-envtest-admin-token";
        std::fs::write(dir.path().join("tokens.csv"), format!("{token},admin,admin,system:masters\n"))
            .unwrap();
        // Service account tokens are signed with the private key (PKCS#8) and verified with the
        // public one: the API server does not read a PKCS#8 EC private key as a verifying key.
        let signing_key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("sa.key"), signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("sa.pub"), signing_key.public_key_pem()).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, self::kubeconfig(secure, "admin", token, "default")).unwrap();
        let apiserver = Self::start_apiserver(dir.path(), assets, etcd_client, secure);
        Self { apiserver, _etcd: etcd, dir, assets: assets.to_owned(), etcd_client, secure, kubeconfig }
    }

    /// Starts kube-apiserver; again after [`Self::stop_apiserver`], on the same port, with the same
    /// keys and certificates, so clients and tokens keep working.
    fn start_apiserver(dir: &Path, assets: &Path, etcd_client: SocketAddr, secure: SocketAddr) -> Process {
        let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(dir.join("apiserver.log")).unwrap();
        let apiserver = Command::new(assets.join("kube-apiserver"))
            .args(["--etcd-servers", &format!("http://{etcd_client}")])
            .args(["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
            .args(["--secure-port", &secure.port().to_string()])
            .args(["--cert-dir", &path("certs")])
            .args(["--token-auth-file", &path("tokens.csv")])
            .args(["--authorization-mode", "RBAC"])
            .args(["--service-cluster-ip-range", "10.96.0.0/24"])
            .args(["--service-account-issuer", &format!("https://{secure}")])
            .args(["--service-account-key-file", &path("sa.pub")])
            .args(["--service-account-signing-key-file", &path("sa.key")])
            .args(["--disable-admission-plugins", "ServiceAccount"])
            // The `kubernetes` Service would point at the advertised 127.0.0.1, which this API
            // server refuses in Endpoints: it would log that failure every 10 s.
            .args(["--endpoint-reconciler-type", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kube-apiserver");
        Process(apiserver)
    }

    /// Kills kube-apiserver, as an outage would: its connections close, its port refuses.
    fn stop_apiserver(&mut self) {
        let _ = self.apiserver.0.kill();
        let _ = self.apiserver.0.wait();
    }

    /// Starts kube-apiserver again after [`Self::stop_apiserver`].
    fn restart_apiserver(&mut self) {
        self.apiserver = Self::start_apiserver(self.dir.path(), &self.assets, self.etcd_client, self.secure);
    }

    /// The end of the API server's and etcd's logs, for failure messages.
    fn logs(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- kube-apiserver log (end) ---\n{}\n--- etcd log (end) ---\n{}",
            tail("apiserver.log"),
            tail("etcd.log")
        )
    }

    /// Waits until the API server is ready (`/readyz`, which `/version` answers well before),
    /// the `default` namespace exists, and discovery lists every kind in `kinds`; returns that
    /// discovery.
    async fn wait_ready(&mut self, client: &kube::Client, kinds: &[GroupVersionKind]) -> Discovery {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut waiting_for = String::from("/readyz");
        loop {
            if let Ok(Some(status)) = self.apiserver.0.try_wait() {
                panic!("kube-apiserver exited with {status}\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready in time, waiting for {waiting_for}\n{}",
                self.logs()
            );
            if let Some(discovery) = Self::ready(client, kinds, &mut waiting_for).await {
                return discovery;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn ready(
        client: &kube::Client,
        kinds: &[GroupVersionKind],
        waiting_for: &mut String,
    ) -> Option<Discovery> {
        let readyz = http::Request::get("/readyz").body(Vec::new()).unwrap();
        if client.request_text(readyz).await.ok()?.trim() != "ok" {
            return None;
        }
        *waiting_for = "the default namespace".into();
        Api::<Namespace>::all(client.clone()).get_opt("default").await.ok()??;
        *waiting_for = "discovery".into();
        let discovery = Discovery::new(client.clone()).run().await.ok()?;
        let missing: Vec<String> = kinds
            .iter()
            .filter(|gvk| discovery.resolve_gvk(gvk).is_none())
            .map(|gvk| format!("{}/{} {}", gvk.group, gvk.version, gvk.kind))
            .collect();
        if !missing.is_empty() {
            *waiting_for = format!("discovery to list {}", missing.join(", "));
            return None;
        }
        Some(discovery)
    }
}

fn gvk_of(object: &Value) -> GroupVersionKind {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// Server-side applies objects (or, with `dry_run`, only has the API server validate and admit
/// them).
async fn apply(client: &kube::Client, discovery: &Discovery, objects: &[Value], dry_run: bool) {
    for object in objects {
        let gvk = gvk_of(object);
        let (resource, capabilities) = discovery.resolve_gvk(&gvk).unwrap_or_else(|| {
            panic!("the API server does not know {}/{} {}", gvk.group, gvk.version, gvk.kind)
        });
        let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
        let name = object.metadata.name.clone().expect("a name");
        let api: Api<DynamicObject> = match (&capabilities.scope, &object.metadata.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (Scope::Namespaced, None) => Api::namespaced_with(client.clone(), "default", &resource),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        let mut params = PatchParams::apply("ostium-envtest").force();
        params.dry_run = dry_run;
        // Unknown or duplicate fields fail rather than being dropped with a warning.
        params.field_validation = Some(ValidationDirective::Strict);
        if let Err(e) = api.patch(&name, &params, &Patch::Apply(&object)).await {
            let mode = if dry_run { " (dry run)" } else { "" };
            panic!("applying {} {name}{mode}: {e}", gvk.kind);
        }
    }
}

fn manifests(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|d| !d.is_null())
        .collect()
}

/// Every document of `deploy/*.yaml`, in file order.
fn deploy_documents() -> Vec<Value> {
    let deploy = ostium_e2e::workspace_root().join("deploy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&deploy)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| manifests(f)).collect()
}

fn ingress(name: &str, host: &str, service: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"ingressClassName": "ostium", "rules": [{"host": host, "http": {"paths": [
               {"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}})
}

fn slice(host: &NetnsHost) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "web-1", "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": [{"addresses": [host.ip.clone()]}]})
}

/// `GET /name` for `host` from the proxy at `addr`, with an `Authorization` header if given.
async fn get_name(addr: SocketAddr, host: &str, authorization: Option<&str>) -> Option<Response> {
    let authorization = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let raw = format!("GET /name HTTP/1.1\r\nHost: {host}\r\n{authorization}Connection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || request(addr, &raw)).await.unwrap().ok()
}

/// What the test host behind `host` on the proxy at `addr` answers: its name, or `None` when the
/// answer is not a 200.
async fn name_behind(addr: SocketAddr, host: &str) -> Option<String> {
    get_name(addr, host, None).await.filter(|r| r.status == 200).map(|r| r.body)
}

/// The status the proxy at `addr` answers for `host` (0: no answer).
async fn status_of(addr: SocketAddr, host: &str, authorization: Option<&str>) -> u16 {
    get_name(addr, host, authorization).await.map_or(0, |r| r.status)
}

/// The sum of a metric's samples (every label set) on a replica's admin address.
async fn metric(ostium: &Ostium, name: &str) -> f64 {
    let (admin, name) = (ostium.admin, name.to_owned());
    let text = tokio::task::spawn_blocking(move || get(admin, "/metrics", None)).await.unwrap().unwrap().body;
    text.lines()
        .filter(|line| line.split(['{', ' ']).next() == Some(name.as_str()))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The logs of the replicas, for failure messages.
fn logs(replicas: &[&Ostium]) -> String {
    replicas.iter().map(|o| format!("--- ostium (admin {}) ---\n{}", o.admin, o.log())).collect()
}

/// Polls `check` every 100 ms until it holds; panics after `timeout`, naming `what` and showing
/// `context()`.
async fn until(
    timeout: Duration,
    what: &str,
    context: impl Fn() -> String,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}\n{}", context());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The address ostium writes into Ingress statuses (its `status.loadBalancer.ingress[].ip`s).
async fn status_ips(ingresses: &Api<Ingress>, name: &str) -> Vec<String> {
    let Ok(ingress) = ingresses.get(name).await else { return vec![] };
    let entries = ingress.status.and_then(|s| s.load_balancer?.ingress).unwrap_or_default();
    entries.into_iter().filter_map(|e| e.ip).collect()
}

async fn lease_renew_time(leases: &Api<Lease>) -> Option<MicroTime> {
    leases.get("ostium-leader").await.ok()?.spec?.renew_time
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases.get("ostium-leader").await.ok()?.spec?.holder_identity.filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(envtest), ignore = "KUBEBUILDER_ASSETS was not set when the tests were built")]
async fn against_a_real_api_server() {
    let assets = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from).expect("KUBEBUILDER_ASSETS");
    for binary in ["etcd", "kube-apiserver"] {
        assert!(assets.join(binary).exists(), "KUBEBUILDER_ASSETS has no {binary}");
    }
    let started = Instant::now();
    let (a, b) = match (NetnsHost::start(1, "a"), NetnsHost::start(2, "b")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(Unavailable(e)), _) | (_, Err(Unavailable(e))) => {
            panic!("the test backends need network namespaces (root and iproute2): {e}")
        }
    };

    let deploy = deploy_documents();
    // What deploy/ holds, and what ostium and this test use beyond it.
    let mut kinds: Vec<GroupVersionKind> = deploy.iter().map(gvk_of).collect();
    kinds.extend([
        GroupVersionKind::gvk("networking.k8s.io", "v1", "Ingress"),
        GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice"),
        GroupVersionKind::gvk("", "v1", "Secret"),
        GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"),
        GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
    ]);
    let mut plane = ControlPlane::start(&assets);
    let admin = client_from(&plane.kubeconfig).await;
    let discovery = plane.wait_ready(&admin, &kinds).await;
    eprintln!("kube-apiserver ready after {:?}", started.elapsed());

    // deploy/: the Namespace first (namespaced objects need it, even in a dry run), then every
    // document through a server-side dry run, then for real what ostium needs to run: its
    // identity and RBAC, the IngressClass and the Service it publishes.
    let (namespaces, rest): (Vec<Value>, Vec<Value>) =
        deploy.into_iter().partition(|d| d["kind"] == "Namespace");
    assert_eq!(namespaces.len(), 1, "deploy/ makes one Namespace");
    assert_eq!(namespaces[0]["metadata"]["name"], INSTALL_NAMESPACE);
    apply(&admin, &discovery, &namespaces, false).await;
    apply(&admin, &discovery, &rest, true).await;
    let needed = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "IngressClass",
        "Service",
    ];
    let runtime: Vec<Value> = rest.into_iter().filter(|d| needed.iter().any(|k| d["kind"] == *k)).collect();
    for kind in needed {
        assert!(runtime.iter().any(|d| d["kind"] == kind), "no {kind} in deploy/");
    }
    apply(&admin, &discovery, &runtime, false).await;

    // ostium's identity: a token the API server issues for the ServiceAccount of deploy/.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), INSTALL_NAMESPACE);
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(3600), ..TokenRequestSpec::default() },
        ..TokenRequest::default()
    };
    let issued = accounts.create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request).await;
    let token = issued.expect("a token for the ServiceAccount").status.expect("a token").token;
    let ostium_kubeconfig = plane.dir.path().join("ostium-kubeconfig");
    std::fs::write(&ostium_kubeconfig, kubeconfig(plane.secure, SERVICE_ACCOUNT, &token, INSTALL_NAMESPACE))
        .unwrap();
    // The token authenticates as the ServiceAccount and carries only its permissions.
    let restricted = client_from(&ostium_kubeconfig).await;
    match Api::<Pod>::all(restricted).list(&Default::default()).await {
        Err(kube::Error::Api(e)) if e.code == 403 => {
            assert!(
                e.message.contains(&format!("system:serviceaccount:{INSTALL_NAMESPACE}:{SERVICE_ACCOUNT}")),
                "{e:?}"
            );
        }
        other => panic!("the ServiceAccount may list Pods, or its token does not work: {other:?}"),
    }

    apply(
        &admin,
        &discovery,
        &[
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
            slice(&a),
            ingress("web", "web.example.com", "web"),
            // Basic-auth users (demo:demo), which no Ingress refers to yet: held without data.
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "users", "namespace": "default"},
                   "data": {"auth": "ZGVtbzp7U0hBfWllU1Y1NVFjK2VRT2FZRFJTaGEvQWp6TlRKRT0="}}),
        ],
        false,
    )
    .await;

    // Two replicas, as the Deployment of deploy/ runs them: publishing the address of its
    // Service, the Lease in the install's namespace.
    let published = Api::<Service>::namespaced(admin.clone(), INSTALL_NAMESPACE).get("ostium").await.unwrap();
    let cluster_ip = published.spec.and_then(|s| s.cluster_ip).filter(|ip| !ip.is_empty() && ip != "None");
    let address = vec![cluster_ip.expect("the Service of deploy/ has a cluster IP")];
    let ostium_kubeconfig = ostium_kubeconfig.to_str().unwrap().to_owned();
    let publish = format!("{INSTALL_NAMESPACE}/ostium");
    let start = |pod: &str| {
        let env = [
            ("KUBECONFIG", ostium_kubeconfig.as_str()),
            ("POD_NAME", pod),
            ("POD_NAMESPACE", INSTALL_NAMESPACE),
        ];
        Ostium::spawn_with(Path::new(BINARY), &["--publish-service", &publish], &env)
    };
    let (mut one, mut two) = (start("one"), start("two"));
    tokio::task::block_in_place(|| {
        one.wait_ready(Duration::from_secs(60));
        two.wait_ready(Duration::from_secs(60));
    });
    eprintln!("two replicas ready after {:?}", started.elapsed());
    let both = || logs(&[&one, &two]);
    for ostium in [&one, &two] {
        until(Duration::from_secs(20), "the route to a", both, async || {
            name_behind(ostium.http, "web.example.com").await.as_deref() == Some("a")
        })
        .await;
    }

    // An endpoint moves in place; a new Ingress is served.
    apply(&admin, &discovery, &[slice(&b), ingress("second", "second.example.com", "web")], false).await;
    for ostium in [&one, &two] {
        until(Duration::from_secs(20), "the endpoint moves to b", both, async || {
            name_behind(ostium.http, "web.example.com").await.as_deref() == Some("b")
        })
        .await;
        until(Duration::from_secs(20), "the new Ingress", both, async || {
            name_behind(ostium.http, "second.example.com").await.as_deref() == Some("b")
        })
        .await;
    }

    // An Ingress comes to refer to the Secret: it is fetched whole, and authentication applies.
    let mut admin_ingress = ingress("admin", "admin.example.com", "web");
    admin_ingress["metadata"]["annotations"] = json!({"nginx.ingress.kubernetes.io/auth-type": "basic",
                                                       "nginx.ingress.kubernetes.io/auth-secret": "users"});
    apply(&admin, &discovery, &[admin_ingress], false).await;
    for ostium in [&one, &two] {
        until(Duration::from_secs(20), "the admin route asks for credentials", both, async || {
            status_of(ostium.http, "admin.example.com", None).await == 401
        })
        .await;
        let with_credentials = get_name(ostium.http, "admin.example.com", Some("Basic ZGVtbzpkZW1v")).await;
        assert_eq!(with_credentials.map(|r| (r.status, r.body)), Some((200, "b".to_owned())), "{}", both());
    }

    // One replica leads, through the Lease in the install's namespace, and writes the status.
    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), "default");
    let leases: Api<Lease> = Api::namespaced(admin.clone(), INSTALL_NAMESPACE);
    until(Duration::from_secs(30), "a leader", both, async || lease_holder(&leases).await.is_some()).await;
    let leader = lease_holder(&leases).await.unwrap();
    assert!(["one", "two"].contains(&leader.as_str()), "leader {leader}");
    for name in ["web", "second"] {
        until(Duration::from_secs(30), &format!("status of {name} written"), both, async || {
            status_ips(&ingresses, name).await == address
        })
        .await;
    }
    let (killed, survivor) = if leader == "one" { (one, two) } else { (two, one) };
    assert!(metric(&killed, "ostium_ingress_status_writes_total").await >= 1.0, "{}", killed.log());
    assert_eq!(metric(&survivor, "ostium_ingress_status_writes_total").await, 0.0, "followers never write");

    // The leader records a diagnostic as an Event on its Ingress; the broken route answers 503.
    apply(&admin, &discovery, &[ingress("broken", "broken.example.com", "missing")], false).await;
    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    let pair = || logs(&[&killed, &survivor]);
    until(Duration::from_secs(30), "an Event for the Ingress without its Service", pair, async || {
        let Ok(list) = events.list(&Default::default()).await else { return false };
        list.items.iter().any(|e| {
            e.reason.as_deref() == Some("MissingService")
                && e.type_.as_deref() == Some("Warning")
                && e.reporting_controller.as_deref() == Some("ostium")
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("Ingress") && r.name.as_deref() == Some("broken")
                })
        })
    })
    .await;
    for ostium in [&killed, &survivor] {
        until(Duration::from_secs(20), "the route without a Service answers 503", pair, async || {
            status_of(ostium.http, "broken.example.com", None).await == 503
        })
        .await;
    }

    // The leader dies without releasing the Lease: the other replica waits it out (15 s) and
    // takes over the status.
    let killed_at = Instant::now();
    drop(killed);
    let survivor_log = || survivor.log();
    until(Duration::from_secs(30), "the other replica takes over", survivor_log, async || {
        lease_holder(&leases).await.is_some_and(|h| h != leader)
    })
    .await;
    eprintln!("took over {:?} after the leader died", killed_at.elapsed());
    apply(&admin, &discovery, &[ingress("third", "third.example.com", "web")], false).await;
    until(Duration::from_secs(20), "the third Ingress", survivor_log, async || {
        name_behind(survivor.http, "third.example.com").await.as_deref() == Some("b")
    })
    .await;
    until(Duration::from_secs(30), "the new leader writes status", survivor_log, async || {
        status_ips(&ingresses, "third").await == address
    })
    .await;
    // Counted once the API server has answered the write, a moment after the status shows.
    until(Duration::from_secs(5), "the write counted", survivor_log, async || {
        metric(&survivor, "ostium_ingress_status_writes_total").await >= 1.0
    })
    .await;
    // Everything it needed, its RBAC allowed: no watch ever failed.
    assert_eq!(metric(&survivor, "ostium_watch_errors_total").await, 0.0, "{}", survivor.log());
    assert_eq!(metric(&survivor, "ostium_malformed_objects_total").await, 0.0, "{}", survivor.log());

    // kube-apiserver goes away for a while and comes back. Serving never stops; a change made
    // once it is back is live, and the Lease renewed, within 5 s.
    let renewed_before = lease_renew_time(&leases).await;
    plane.stop_apiserver();
    let gone = Instant::now();
    let (mut served, mut failed) = (0, 0);
    while gone.elapsed() < OUTAGE {
        match name_behind(survivor.http, "web.example.com").await.as_deref() {
            Some("b") => served += 1,
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failed, 0, "{served} requests served, {failed} failed during the outage\n{}", survivor.log());
    plane.restart_apiserver();
    plane.wait_ready(&admin, &kinds).await;
    let back = Instant::now();
    eprintln!("kube-apiserver back {:?} after it went away", gone.elapsed());
    apply(&admin, &discovery, &[ingress("fourth", "fourth.example.com", "web")], false).await;
    let (mut change_live, mut lease_renewed) = (None, None);
    while change_live.is_none() || lease_renewed.is_none() {
        assert!(back.elapsed() < Duration::from_secs(60), "not resumed\n{}", survivor.log());
        if change_live.is_none()
            && name_behind(survivor.http, "fourth.example.com").await.as_deref() == Some("b")
        {
            change_live = Some(back.elapsed());
        }
        if lease_renewed.is_none()
            && lease_renew_time(&leases).await.is_some_and(|t| Some(&t) != renewed_before.as_ref())
        {
            lease_renewed = Some(back.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (change_live, lease_renewed) = (change_live.unwrap(), lease_renewed.unwrap());
    eprintln!(
        "after a {OUTAGE:?} outage: change live in {change_live:?}, Lease renewed in {lease_renewed:?}"
    );
    assert!(change_live <= Duration::from_secs(5), "change live after {change_live:?}\n{}", survivor.log());
    assert!(
        lease_renewed <= Duration::from_secs(5),
        "Lease renewed after {lease_renewed:?}\n{}",
        survivor.log()
    );

    // Shut down, the leader hands the Lease back.
    let mut survivor = survivor;
    let exited = tokio::task::block_in_place(|| survivor.terminate(Duration::from_secs(40)));
    assert!(exited, "exit 0 after SIGTERM; log:\n{}", survivor.log());
    assert!(survivor.log().contains("leader lease released"), "{}", survivor.log());
    assert_eq!(lease_holder(&leases).await, None, "the Lease is released");
    eprintln!("done after {:?}", started.elapsed());
}

/// The backends' harness itself, run with the envtest it serves.
#[test]
#[cfg_attr(not(envtest), ignore = "KUBEBUILDER_ASSETS was not set when the tests were built")]
fn network_namespace_hosts_answer() {
    match NetnsHost::start(3, "c") {
        Ok(host) => assert_eq!(get(host.addr(), "/name", None).unwrap().body, "c"),
        Err(Unavailable(e)) => panic!("the test backends need network namespaces (root and iproute2): {e}"),
    }
}

/// `ostium check` without a path: the migration report from a real API server, read-only, with
/// Secrets listed by metadata only (their data never shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(envtest), ignore = "KUBEBUILDER_ASSETS was not set when the tests were built")]
async fn the_migration_report_reads_a_real_api_server() {
    let assets = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from).expect("KUBEBUILDER_ASSETS");
    let mut plane = ControlPlane::start(&assets);
    let admin = client_from(&plane.kubeconfig).await;
    let kinds = [
        GroupVersionKind::gvk("", "v1", "Namespace"),
        GroupVersionKind::gvk("", "v1", "ConfigMap"),
        GroupVersionKind::gvk("", "v1", "Secret"),
        GroupVersionKind::gvk("", "v1", "Service"),
        GroupVersionKind::gvk("networking.k8s.io", "v1", "IngressClass"),
        GroupVersionKind::gvk("networking.k8s.io", "v1", "Ingress"),
    ];
    let discovery = plane.wait_ready(&admin, &kinds).await;
    // Base64 of `secret-marker`: Secret data, which must never reach the report.
    let secret_data = "c2VjcmV0LW1hcmtlcg==";
    let mut shop = ingress("shop", "shop.example.com", "web");
    shop["spec"]["ingressClassName"] = json!("nginx");
    shop["spec"]["tls"] = json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"},
                                 {"hosts": ["lost.example.com"], "secretName": "lost-tls"}]);
    shop["metadata"]["annotations"] = json!({"nginx.ingress.kubernetes.io/proxy-read-timout": "30",
                                              "nginx.ingress.kubernetes.io/fastcgi-index": "index.php"});
    let mut other = ingress("other", "other.example.com", "web");
    other["spec"]["ingressClassName"] = json!("traefik");
    apply(
        &admin,
        &discovery,
        &[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ingress-nginx"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
                   "data": {"proxy-body-size": "8m"}}),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "nginx"},
                   "spec": {"controller": "k8s.io/ingress-nginx"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"ports": [{"name": "http", "port": 80}]}}),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                   "metadata": {"name": "shop-tls", "namespace": "default"},
                   "data": {"tls.crt": secret_data, "tls.key": secret_data}}),
            shop,
            other,
        ],
        false,
    )
    .await;

    let kubeconfig = plane.kubeconfig.clone();
    let args = [
        "check",
        "--ingress-class",
        "nginx",
        "--controller-name",
        "k8s.io/ingress-nginx",
        "--output",
        "json",
    ];
    let output = tokio::task::block_in_place(|| {
        Command::new(BINARY).args(args).env("KUBECONFIG", &kubeconfig).output().unwrap()
    });
    let out = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{e}: {out}\n{}", String::from_utf8_lossy(&output.stderr)));
    let ingresses = report["ingresses"].as_array().unwrap();
    let by_name = |name: &str| ingresses.iter().find(|i| i["name"] == name).unwrap();
    let shop = by_name("shop");
    assert_eq!(shop["served"], true, "{out}");
    let support: Vec<(&str, &str)> = shop["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["key"].as_str().unwrap(), a["support"].as_str().unwrap()))
        .collect();
    assert_eq!(
        support,
        [
            ("nginx.ingress.kubernetes.io/fastcgi-index", "not-supported"),
            ("nginx.ingress.kubernetes.io/proxy-read-timout", "unknown")
        ]
    );
    let problems: Vec<&str> =
        shop["problems"].as_array().unwrap().iter().map(|p| p["reason"].as_str().unwrap()).collect();
    assert_eq!(problems, ["MissingSecret"], "the existing Secret is found, its content not judged: {out}");
    let other = by_name("other");
    assert_eq!(other["served"], false);
    assert_eq!(other["select_with"], "an IngressClass traefik with spec.controller k8s.io/ingress-nginx");
    assert_eq!(report["configmap"]["keys"], json!(["proxy-body-size"]));
    assert_eq!(output.status.code(), Some(1), "the missing Secret is an error: {out}");
    assert!(!out.contains(secret_data), "{out}");
}
