//! `ostium check` (the migration report) and `ostium route`, run as the real binary: on
//! manifests, and read-only against the in-memory API server (`ostium_test_support::kube_api`).
//! The cluster report against a real kube-apiserver is in `envtest.rs`.

use std::path::{Path, PathBuf};
use std::process::Output;

use ostium_test_support::kube_api::KubeApi;
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_ostium");

/// The flags that make ostium serve ingress-nginx's class `nginx`.
const NGINX: [&str; 4] = ["--ingress-class", "nginx", "--controller-name", "k8s.io/ingress-nginx"];

/// Base64 of `secret-marker-in-tls-crt`: must never show up in a report.
const SECRET_DATA: &str = "c2VjcmV0LW1hcmtlci1pbi10bHMtY3J0";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn ostium(args: &[&str], kubeconfig: Option<&Path>) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(BINARY);
    command.args(args);
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    let Output { status, stdout, stderr } = command.output().unwrap();
    let out = String::from_utf8_lossy(&stdout).into_owned();
    assert!(stderr.is_empty() || status.code() != Some(0), "{}", String::from_utf8_lossy(&stderr));
    (status.code(), out)
}

/// What a team running ingress-nginx has: Ingresses of class `nginx` (by IngressClass and by the
/// legacy annotation) with a typo, an annotation ostium ignores and a snippet; a TLS Secret and
/// a missing one; the controller's ConfigMap.
fn ingress_nginx_objects() -> Vec<Value> {
    let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
    let rule = |host: &str| json!({"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}});
    vec![
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "nginx"},
               "spec": {"controller": "k8s.io/ingress-nginx"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"ports": [{"port": 80}]}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-tls", "namespace": "default"},
               "type": "kubernetes.io/tls", "data": {"tls.crt": SECRET_DATA, "tls.key": SECRET_DATA}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "shop", "namespace": "default", "annotations": {
                   "nginx.ingress.kubernetes.io/proxy-read-timout": "30",
                   "nginx.ingress.kubernetes.io/fastcgi-index": "index.php",
                   "nginx.ingress.kubernetes.io/ssl-redirect": "false",
                   "nginx.ingress.kubernetes.io/configuration-snippet": "deny all;"}},
               "spec": {"ingressClassName": "nginx", "rules": [rule("shop.example.com")],
                        "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"},
                                {"hosts": ["lost.example.com"], "secretName": "lost-tls"}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "legacy", "namespace": "default",
                            "annotations": {"kubernetes.io/ingress.class": "nginx"}},
               "spec": {"rules": [rule("old.example.com")]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
               "data": {"proxy-body-size": "8m", "use-forwarded-headers": "true",
                        "enable-opentelemetry": "false"}}),
    ]
}

fn manifests_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let documents: Vec<String> =
        ingress_nginx_objects().iter().map(|o| serde_json::to_string(o).unwrap()).collect();
    // JSON is YAML: one document per object.
    std::fs::write(dir.path().join("all.yaml"), documents.join("\n---\n")).unwrap();
    dir
}

fn ingress<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["ingresses"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap()
}

fn support<'a>(ingress: &'a Value, key: &str) -> &'a Value {
    let key = format!("nginx.ingress.kubernetes.io/{key}");
    ingress["annotations"].as_array().unwrap().iter().find(|a| a["key"] == *key).unwrap()
}

/// With ostium's own class, ingress-nginx's Ingresses are not served: the report lists them with
/// the flags that would select them, and fails (none served), instead of `0 errors`, exit 0.
#[test]
fn ingresses_of_another_class_are_listed_with_the_flags_that_select_them() {
    let dir = manifests_dir();
    let (code, out) = ostium(&["check", dir.path().to_str().unwrap()], None);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("ingress default/shop: not served; class: ingressClassName nginx (IngressClass of controller k8s.io/ingress-nginx); served with: --ingress-class nginx --controller-name k8s.io/ingress-nginx"),
        "{out}"
    );
    assert!(out.contains("ingress default/legacy: not served; class: annotation kubernetes.io/ingress.class: nginx; served with: --ingress-class nginx"), "{out}");
    assert!(out.contains("summary: 2 ingresses (0 served, 2 not served)"), "{out}");
}

/// The ConfigMap given as `--configmap` is the one whose keys the report lists, unless
/// `--nginx-configmap` names another.
#[test]
fn the_report_lists_the_configmap_given_to_ostium() {
    let dir = manifests_dir();
    let path = dir.path().to_str().unwrap();
    let report = |extra: &[&str]| {
        let (_, out) = ostium(&[&["check", path, "--output", "json"][..], &NGINX, extra].concat(), None);
        serde_json::from_str::<Value>(&out).unwrap()["configmap"].clone()
    };
    assert_eq!(report(&[])["name"], "ingress-nginx-controller");
    let given = report(&["--configmap", "ingress/ostium"]);
    assert_eq!(
        (&given["namespace"], &given["name"], &given["found"]),
        (&json!("ingress"), &json!("ostium"), &json!(false))
    );
    let named = report(&[
        "--configmap",
        "ingress/ostium",
        "--nginx-configmap",
        "ingress-nginx/ingress-nginx-controller",
    ]);
    assert_eq!(named["found"], true);
}

/// The flags come after the subcommand; the JSON report tells a typo (unknown, with the key it
/// meant) from a real ingress-nginx key ostium ignores, and names the problems.
#[test]
fn the_json_report_classifies_annotations_and_names_problems() {
    let dir = manifests_dir();
    let path = dir.path().to_str().unwrap();
    let (code, out) = ostium(&[&["check", path, "--output", "json"][..], &NGINX].concat(), None);
    assert_eq!(code, Some(1), "errors: the snippet, the unusable and the missing Secret: {out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let shop = ingress(&report, "shop");
    assert_eq!(shop["served"], true);
    assert_eq!(shop["select_with"], Value::Null);
    let typo = support(shop, "proxy-read-timout");
    assert_eq!(
        (&typo["support"], &typo["did_you_mean"]),
        (&json!("unknown"), &json!("nginx.ingress.kubernetes.io/proxy-read-timeout"))
    );
    assert_eq!(support(shop, "fastcgi-index")["support"], "not-supported");
    assert_eq!(support(shop, "configuration-snippet")["support"], "refused");
    assert_eq!(support(shop, "ssl-redirect")["support"], "supported");
    let reasons: Vec<&str> =
        shop["problems"].as_array().unwrap().iter().map(|p| p["reason"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"MissingSecret") && reasons.contains(&"InvalidTlsSecret"), "{reasons:?}");
    assert_eq!(report["summary"]["served"], 2);
    let annotations = &report["summary"]["annotations"];
    assert_eq!(
        (&annotations["unknown"], &annotations["not_supported"], &annotations["refused"]),
        (&json!(1), &json!(1), &json!(1))
    );
    assert_eq!(
        report["configmap"]["keys"],
        json!(["enable-opentelemetry", "proxy-body-size", "use-forwarded-headers"])
    );
    assert_eq!(
        report["configmap"]["applied"],
        json!(["enable-opentelemetry", "proxy-body-size", "use-forwarded-headers"])
    );
    assert_eq!(report["configmap"]["settings"][1], json!({"key": "proxy-body-size", "support": "supported"}));
    assert!(!out.contains(SECRET_DATA));
}

/// Without a path, the report comes from the cluster of the current kubeconfig context:
/// read-only, Secrets by metadata only (their data is never asked for nor shown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_report_reads_the_api_read_only_and_never_secret_data() {
    let api = KubeApi::start().await;
    for object in ingress_nginx_objects() {
        api.apply(object);
    }
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(kubeconfig.path(), api.kubeconfig()).unwrap();
    let path = kubeconfig.path().to_owned();
    let (code, out) = tokio::task::block_in_place(|| {
        ostium(&[&["check"][..], &NGINX, &["--output", "json"]].concat(), Some(&path))
    });
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report["source"].as_str().unwrap().starts_with("cluster http://127.0.0.1:"), "{out}");
    let shop = ingress(&report, "shop");
    assert_eq!(shop["served"], true, "{out}");
    assert_eq!(support(shop, "proxy-read-timout")["support"], "unknown");
    // The missing Secret is reported; the content of the one that exists is not judged.
    let reasons: Vec<&str> =
        shop["problems"].as_array().unwrap().iter().map(|p| p["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["MissingSecret"], "{out}");
    assert!(report["notes"][0].as_str().unwrap().contains("Secret data is not read"), "{out}");
    assert_eq!(
        report["configmap"]["keys"],
        json!(["enable-opentelemetry", "proxy-body-size", "use-forwarded-headers"])
    );
    assert_eq!(code, Some(1), "the snippet is an error");
    assert!(!out.contains(SECRET_DATA));

    let requests = api.requests();
    assert!(requests.contains(&"GET /api/v1/secrets (metadata only)".to_owned()), "{requests:?}");
    for request in &requests {
        assert!(request.starts_with("GET "), "read-only: {request}");
        assert!(!request.contains("/secrets") || request.ends_with("(metadata only)"), "{request}");
    }

    // With ostium's own class, nothing is served: the text report says which flags would.
    let (code, out) = tokio::task::block_in_place(|| ostium(&["check"], Some(&path)));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("served with: --ingress-class nginx --controller-name k8s.io/ingress-nginx"),
        "{out}"
    );
}

/// A certificate whose key belongs to another is described in words.
#[test]
fn certificate_errors_are_readable() {
    let fixture = workspace_root().join("crates/translate/tests/fixtures/tls-certificates-from-secrets");
    let (code, out) = ostium(&["check", fixture.to_str().unwrap()], None);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("the private key does not belong to the certificate"), "{out}");
    assert!(!out.contains("KeyMismatch"), "{out}");
}

/// `route` shows the default HTTPS redirect of a TLS host (what the proxy answers) and names
/// the flag a route comes from.
#[test]
fn route_shows_the_https_redirect_and_flag_names() {
    let quickstart = workspace_root().join("examples/quickstart");
    let quickstart = quickstart.to_str().unwrap();
    let (code, http) = ostium(&["route", quickstart, "--host", "hello.localhost", "--path", "/x?y=1"], None);
    assert_eq!(code, Some(0));
    assert!(
        http.contains("answer: 308 redirect to https://hello.localhost/x?y=1 (ssl-redirect, on by default: the host is a TLS host)"),
        "{http}"
    );
    let (_, https) = ostium(&["route", quickstart, "--host", "hello.localhost", "--https"], None);
    assert!(https.contains("Strict-Transport-Security") && !https.contains("308"), "{https}");
    let args =
        ["route", quickstart, "--host", "nowhere.localhost", "--default-backend-service", "default/hello"];
    let (_, fallback) = ostium(&args, None);
    assert!(fallback.contains("(--default-backend-service)") && !fallback.contains("(flag)"), "{fallback}");
}
