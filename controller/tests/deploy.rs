//! deploy/ holds valid manifests: every document parses and names itself, the Deployment's
//! arguments are flags this binary accepts, and it is probed and hardened as documented.

use clap::Parser;
use ostium_e2e::workspace_root;
use serde_json::Value;

fn documents() -> Vec<(String, Value)> {
    let mut documents = Vec::new();
    let mut files: Vec<_> =
        std::fs::read_dir(workspace_root().join("deploy")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for document in parsed {
            documents.push((file.display().to_string(), document));
        }
    }
    documents
}

#[test]
fn every_manifest_parses_and_names_itself() {
    let documents = documents();
    assert!(documents.len() >= 9, "expected the whole install, found {} documents", documents.len());
    for (file, document) in &documents {
        for field in ["/apiVersion", "/kind", "/metadata/name"] {
            assert!(
                document.pointer(field).and_then(Value::as_str).is_some_and(|s| !s.is_empty()),
                "{file}: {field}"
            );
        }
    }
    let kinds: Vec<&str> = documents.iter().filter_map(|(_, d)| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "IngressClass",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in deploy/");
    }
    let class = documents.iter().map(|(_, d)| d).find(|d| d["kind"] == "IngressClass").unwrap();
    assert_eq!(class["spec"]["controller"], "ostium.dev/ingress-controller");
}

#[test]
fn the_deployment_runs_ostium_with_valid_flags_probes_and_hardening() {
    let documents = documents();
    let deployment = documents.iter().map(|(_, d)| d).find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let parsed = ostium::Args::try_parse_from(std::iter::once("ostium").chain(args.iter().copied()));
    let config = ostium::Config::try_from(parsed.unwrap_or_else(|e| panic!("{args:?}: {e}"))).unwrap();
    assert!(config.manifests.is_none(), "in a cluster, ostium reads the API server");

    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let admin = container["ports"].as_array().unwrap().iter().find(|p| p["name"] == "admin").unwrap();
    assert_eq!(admin["containerPort"].as_u64(), Some(u64::from(config.admin_addr.port())));
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert_eq!(deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(deployment["spec"]["replicas"], 2);
}
