//! deploy/ holds valid manifests: every document parses and names itself, the Deployment's
//! arguments are flags this binary accepts, it is probed and hardened as documented, and its
//! ClusterRole reads every kind ostium watches.

use clap::Parser;
use ostium_e2e::workspace_root;
use ostium_translate::{Kind, KindVisitor, for_each_kind};
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

/// The ClusterRole lets ostium list and watch every kind it reads, and get the ones it fetches
/// whole once an Ingress names them (Secrets, ConfigMaps).
#[test]
fn the_cluster_role_reads_every_kind_ostium_watches() {
    struct Resources(Vec<(&'static str, &'static str)>);
    impl KindVisitor for Resources {
        fn visit<K: Kind>(&mut self) {
            self.0.push((K::GROUP, K::URL_PATH_SEGMENT));
        }
    }
    let mut resources = Resources(Vec::new());
    for_each_kind(&mut resources);
    let documents = documents();
    let role = documents.iter().map(|(_, d)| d).find(|d| d["kind"] == "ClusterRole").unwrap();
    let granted = |group: &str, resource: &str, verb: &str| {
        role["rules"].as_array().unwrap().iter().any(|rule| {
            let has = |field: &str, value: &str| rule[field].as_array().unwrap().iter().any(|v| v == value);
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    for (group, resource) in resources.0 {
        for verb in ["list", "watch"] {
            assert!(granted(group, resource, verb), "{verb} {resource}");
        }
    }
    for resource in ["secrets", "configmaps"] {
        assert!(granted("", resource, "get"), "get {resource}");
    }
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
    // Request bodies spill to /tmp (ProxyConfig::body_temp_dir): writable although the root is not.
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/tmp");
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["name"], container["volumeMounts"][0]["name"]);
    assert_eq!(volumes[0]["emptyDir"]["sizeLimit"], "1Gi", "uploads cannot fill the node's disk");
    assert_eq!(deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(deployment["spec"]["replicas"], 2);
}

/// The Helm chart cannot be rendered here (no helm binary), so it is checked for what can go
/// wrong without one: its YAML, its value references, its flags, and its RBAC against deploy/.
mod helm {
    use std::path::PathBuf;

    use clap::CommandFactory;
    use ostium_e2e::workspace_root;
    use serde_json::Value;

    fn chart() -> PathBuf {
        workspace_root().join("deploy/helm/ostium")
    }

    fn templates() -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(chart().join("templates"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        files.into_iter().map(|f| (f.display().to_string(), std::fs::read_to_string(&f).unwrap())).collect()
    }

    fn values() -> Value {
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap()
    }

    #[test]
    fn chart_metadata_and_values_parse() {
        let chart: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
        assert_eq!(chart["apiVersion"], "v2");
        assert_eq!(chart["name"], "ostium");
        assert_eq!(values()["controller"]["name"], "ostium.dev/ingress-controller");
        assert_eq!(values()["requestBodiesSizeLimit"], "1Gi", "as deploy/");
    }

    #[test]
    fn every_value_a_template_uses_is_defined() {
        let values = values();
        for (file, text) in templates() {
            for (at, _) in text.match_indices(".Values.") {
                let path: String = text[at + ".Values.".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                    .collect();
                let pointer = format!("/{}", path.trim_end_matches('.').replace('.', "/"));
                assert!(values.pointer(&pointer).is_some(), "{file}: .Values.{path} is not in values.yaml");
            }
        }
    }

    #[test]
    fn the_deployment_passes_only_flags_ostium_has() {
        let command = ostium::Args::command();
        let flags: Vec<&str> = command.get_arguments().filter_map(|a| a.get_long()).collect();
        let (_, deployment) = templates().into_iter().find(|(f, _)| f.ends_with("deployment.yaml")).unwrap();
        let used: Vec<&str> = deployment
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- --"))
            .map(|l| l.split('=').next().unwrap())
            .collect();
        assert!(used.len() >= 8, "{used:?}");
        for flag in used {
            assert!(flags.contains(&flag), "--{flag} is not an ostium flag");
        }
    }

    #[test]
    fn the_chart_grants_what_deploy_grants() {
        let rules = |text: &str| -> Vec<String> {
            let start = text.find("rules:").unwrap();
            text[start..]
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with('-') || l.starts_with(' '))
                .map(str::to_owned)
                .collect()
        };
        let deploy = std::fs::read_to_string(workspace_root().join("deploy/10-rbac.yaml")).unwrap();
        let (_, chart) = templates().into_iter().find(|(f, _)| f.ends_with("rbac.yaml")).unwrap();
        assert_eq!(rules(&chart), rules(&deploy), "ClusterRole rules differ");
        let lease_rules = |text: &str| {
            text[text.find("coordination.k8s.io").unwrap()..]
                .lines()
                .take(3)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(lease_rules(&chart), lease_rules(&deploy), "Lease rules differ");
    }
}
