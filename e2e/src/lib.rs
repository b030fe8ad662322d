//! Harness for black-box tests of the built `ostium` binary.
//!
//! The tests themselves live in `controller/tests/`, the one place Cargo tells a test where the
//! binary is (`CARGO_BIN_EXE_ostium`); they start it with [`Ostium::start`] on free loopback
//! ports, wait for `/readyz`, and speak plain HTTP to it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `ostium` process, killed on drop.
#[derive(Debug)]
pub struct Ostium {
    child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
}

impl Ostium {
    /// Starts `binary --manifests <manifests> <extra>` on free ports of 127.0.0.1. Does not wait.
    pub fn spawn(binary: &Path, manifests: &Path, extra: &[&str]) -> Self {
        let manifests = manifests.to_str().expect("a UTF-8 path");
        let args: Vec<&str> = ["--manifests", manifests].into_iter().chain(extra.iter().copied()).collect();
        Self::spawn_with(binary, &args, &[])
    }

    /// Starts `binary <args>` with extra environment variables, on free ports of 127.0.0.1.
    /// Does not wait.
    pub fn spawn_with(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let [http, https, admin] = free_addrs();
        let log =
            std::env::temp_dir().join(format!("ostium-e2e-{}-{}.log", std::process::id(), admin.port()));
        let log_file = std::fs::File::create(&log).expect("create the log file");
        let child = Command::new(binary)
            .args(["--http-addr", &http.to_string(), "--https-addr", &https.to_string()])
            .args(["--admin-addr", &admin.to_string(), "--log-format", "text"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log file"))
            .stderr(log_file)
            .env("RUST_LOG", "info")
            .spawn()
            .expect("start ostium");
        Self { child, http, https, admin, log }
    }

    /// Starts ostium and waits (up to 30 s) until `/readyz` answers 200.
    pub fn start(binary: &Path, manifests: &Path, extra: &[&str]) -> Self {
        let mut ostium = Self::spawn(binary, manifests, extra);
        ostium.wait_ready(Duration::from_secs(30));
        ostium
    }

    /// Polls `/readyz` every 20 ms until it answers 200; panics with the log after `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ostium exited with {status} before it was ready; log:\n{}", self.log());
            }
            if get(self.admin, "/readyz", None).is_ok_and(|r| r.status == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ostium was not ready after {timeout:?}; log:\n{}", self.log());
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the process to exit; returns whether it
    /// exited successfully.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything ostium wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ostium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A response as the tests need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// `GET path` over a fresh HTTP/1.1 connection with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str, host: Option<&str>) -> std::io::Result<Response> {
    let host = host.unwrap_or("localhost");
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"))
}

/// Sends raw bytes and reads until the server closes (5 s timeout).
pub fn request(addr: SocketAddr, raw: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(raw.as_bytes())?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(Response { status, head: head.to_owned(), body: body.to_owned() })
}

/// Waits (up to `timeout`) for `check` to hold, polling every 20 ms; panics naming `what`.
pub fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not within {timeout:?}: {what}");
}

/// An address on 127.0.0.1 that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let [addr] = free_addrs();
    addr
}

/// `N` distinct free addresses of 127.0.0.1: each port stays bound until all are picked, as the
/// kernel may hand a port just released out again.
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let listeners: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"));
    listeners.map(|listener| listener.local_addr().expect("a bound listener's address"))
}

/// The workspace root, for paths such as `examples/quickstart`: the nearest directory with a
/// `Cargo.lock` above the package Cargo runs (read at run time, since a build directory shared
/// between checkouts can hold this crate compiled in another one).
pub fn workspace_root() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_owned(), PathBuf::from);
    package
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .expect("a workspace root above")
        .to_owned()
}

/// A Service `name` in the default namespace whose one endpoint is `backend`, as manifests:
/// the Service and its EndpointSlice.
pub fn service_manifest(name: &str, backend: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [\"{ip}\"]}}]\n",
        port = backend.port(),
        ip = backend.ip(),
    )
}

/// One site as manifests: the `ostium` IngressClass, Service `web` at `backend`, and Ingress
/// `web` sending every path of `web.example.com` to it.
pub fn site_manifest(backend: SocketAddr) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: ostium}}\nspec: {{controller: ostium.dev/ingress-controller}}\n---\n{}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web}}\nspec:\n  ingressClassName: ostium\n  rules: [{{host: web.example.com, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}}}]\n",
        service_manifest("web", backend)
    )
}
