//! The quickstart works: its manifests, served by the binary with echo backends behind them,
//! answer the curl commands `examples/quickstart/run` prints. The manifests are copied with the
//! backends' port replaced by a free one, so a running quickstart does not get in the way.
//! The script itself refuses an address already in use and reports an ostium that exits.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ostium_e2e::{Ostium, free_addrs, workspace_root};
use ostium_test_support::EchoBackend;

const BIN: &str = env!("CARGO_BIN_EXE_ostium");

/// `curl -s -i ARGS`: status, head and body.
fn curl(args: &[&str]) -> (u16, String, String) {
    let output = Command::new("curl").arg("-s").arg("-i").args(args).output().expect("curl is installed");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// Echo backends on 127.0.0.1–3 sharing one free port.
async fn backends() -> (u16, Vec<EchoBackend>) {
    for _ in 0..20 {
        let first = EchoBackend::start_on("hello", "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = first.addr.port();
        let at = |ip: &str| format!("{ip}:{port}").parse::<SocketAddr>().unwrap();
        let (Ok(second), Ok(api)) = (
            EchoBackend::start_on("hello", at("127.0.0.2")).await,
            EchoBackend::start_on("api", at("127.0.0.3")).await,
        ) else {
            continue;
        };
        return (port, vec![first, second, api]);
    }
    panic!("no port free on 127.0.0.1, .2 and .3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_curl_commands_work() {
    let (port, _backends) = backends().await;
    let manifests = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(workspace_root().join("examples/quickstart")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text =
                std::fs::read_to_string(&path).unwrap().replace("port: 9081", &format!("port: {port}"));
            std::fs::write(manifests.path().join(path.file_name().unwrap()), text).unwrap();
        }
    }
    let ostium = tokio::task::spawn_blocking(move || {
        let ostium = Ostium::start(BIN.as_ref(), manifests.path(), &[]);
        (ostium, manifests)
    })
    .await
    .unwrap();
    let (ostium, _manifests) = ostium;
    let http = ostium.http.to_string();
    let https_port = ostium.https.port().to_string();

    let (status, _, body) = curl(&["-H", "Host: api.localhost", &format!("http://{http}/v1/users")]);
    assert_eq!(status, 200);
    assert!(body.contains("backend: api"), "{body}");
    assert_eq!(curl(&["-H", "Host: api.localhost", &format!("http://{http}/health")]).0, 200);
    assert_eq!(curl(&["-H", "Host: api.localhost", &format!("http://{http}/other")]).0, 404);

    let (status, head, _) = curl(&["-H", "Host: api.localhost", &format!("http://{http}/admin")]);
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: basic realm=\"ostium quickstart\""), "{head}");
    let (status, _, body) =
        curl(&["-u", "demo:demo", "-H", "Host: api.localhost", &format!("http://{http}/admin")]);
    assert_eq!(status, 200);
    assert!(body.contains("backend: api"), "{body}");

    let (status, head, _) = curl(&["-H", "Host: hello.localhost", &format!("http://{http}/welcome")]);
    assert_eq!(status, 308);
    assert!(head.contains("location: https://hello.localhost/welcome"), "{head}");

    let resolve = format!("hello.localhost:{https_port}:127.0.0.1");
    let (status, head, body) =
        curl(&["-k", "--resolve", &resolve, &format!("https://hello.localhost:{https_port}/")]);
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("backend: hello"), "{body}");
    assert!(head.contains("strict-transport-security"), "{head}");
    assert!(!ostium.log().contains("WARN"), "the quickstart has diagnostics:\n{}", ostium.log());

    // The traffic above shows in /metrics, which a Prometheus parser reads, and every family
    // exposed is documented (and the other way round).
    let (status, _, text) = curl(&[&format!("http://{}/metrics", ostium.admin)]);
    assert_eq!(status, 200);
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition");
    let requests = |class: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "ostium_requests_total" && s.labels.get("class") == Some(class))
            .filter(|s| s.labels.get("ingress") == Some("default/api-admin"))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(requests("2xx"), 1.0, "{text}");
    assert_eq!(requests("4xx"), 1.0, "{text}");
    let exposed: std::collections::BTreeSet<&str> = scrape.docs.keys().map(String::as_str).collect();
    let docs = std::fs::read_to_string(workspace_root().join("docs/metrics.md")).unwrap();
    // Rows: | `family` | type | labels | meaning |
    let rows: Vec<(&str, bool)> = docs
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            name.starts_with("ostium_").then(|| (name, !cells.get(3).unwrap_or(&"").is_empty()))
        })
        .collect();
    let documented: std::collections::BTreeSet<&str> = rows.iter().map(|(name, _)| *name).collect();
    assert!(exposed.is_subset(&documented), "undocumented: {:?}", exposed.difference(&documented));
    for (family, labelled) in rows {
        // A labelled family appears once it has a series (no diagnostics here, for one).
        assert!(labelled || exposed.contains(family), "{family} is documented but not exposed");
    }
}

/// Runs `examples/quickstart/run ARGS` with its binaries taken from `bin_dir` and ostium's
/// addresses from `addrs` (http, https, admin); kills it if it is still running after 20 s.
fn run_quickstart(bin_dir: &Path, addrs: [SocketAddr; 3], args: &[&str]) -> (Output, bool) {
    let mut child = Command::new(workspace_root().join("examples/quickstart/run"))
        .args(args)
        .env("OSTIUM_BIN_DIR", bin_dir)
        .env("OSTIUM_HTTP", addrs[0].to_string())
        .env("OSTIUM_HTTPS", addrs[1].to_string())
        .env("OSTIUM_ADMIN", addrs[2].to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the quickstart");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut finished = true;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            finished = false;
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().unwrap(), finished)
}

/// An address in use stops the quickstart before it builds or starts anything (the binaries
/// given here do not even exist), instead of another process's `/readyz` passing for ostium's.
#[test]
fn the_quickstart_refuses_an_address_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap();
    let missing = tempfile::tempdir().unwrap();
    let [http, https] = free_addrs();
    let (output, finished) = run_quickstart(missing.path(), [http, https, admin], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(finished, "still waiting after 20 s: {stderr}");
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("{admin} is already in use")), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("ready"));
}

/// An ostium that exits while starting (here: a flag it does not know) ends the wait at once
/// with its exit status, rather than after the 30 s readiness timeout.
#[test]
fn the_quickstart_reports_an_ostium_that_exited() {
    let bin_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.path().join("ostium")).unwrap();
    // Backends that stay up and never answer: only ostium's exit is under test.
    let echo = bin_dir.path().join("ostium-echo");
    std::fs::write(&echo, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&echo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let (output, finished) = run_quickstart(bin_dir.path(), free_addrs(), &["--no-such-flag"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(finished, "still waiting after 20 s: {stderr}");
    assert!(!output.status.success());
    assert!(stderr.contains("ostium exited with status 2 while starting"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("ready"));
}
