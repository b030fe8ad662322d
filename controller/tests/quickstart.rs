//! The quickstart works: its manifests, served by the binary with echo backends behind them,
//! answer the curl commands `examples/quickstart/run` prints. The manifests are copied with the
//! backends' port replaced by a free one, so a running quickstart does not get in the way.

use std::net::SocketAddr;
use std::process::Command;

use ostium_e2e::{Ostium, workspace_root};
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
