//! deploy/ holds valid manifests: every document parses and names itself, the Deployment's
//! arguments are flags this binary accepts, it is probed and hardened as documented, its
//! ClusterRole reads every kind ostium watches, the admin port is reachable for Prometheus but
//! not through the public Service, and the Grafana dashboard queries metrics ostium exposes.
//! The Dockerfile's dependency layer is a workspace Cargo can build.

use clap::Parser;
use ostium_e2e::workspace_root;
use ostium_translate::{Kind, KindVisitor, for_each_kind};
use serde::Deserialize;
use serde_json::Value;

fn documents() -> Vec<(String, Value)> {
    let mut documents = Vec::new();
    let mut files: Vec<_> =
        std::fs::read_dir(workspace_root().join("deploy")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let document = Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
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

/// The metrics Service reaches the admin port; the LoadBalancer Service does not expose it.
#[test]
fn the_admin_port_has_its_own_cluster_service() {
    let documents = documents();
    let services: Vec<&Value> = documents.iter().map(|(_, d)| d).filter(|d| d["kind"] == "Service").collect();
    let targets = |service: &Value| -> Vec<String> {
        service["spec"]["ports"].as_array().unwrap().iter().map(|p| p["targetPort"].to_string()).collect()
    };
    let metrics =
        services.iter().find(|s| s["metadata"]["name"] == "ostium-metrics").expect("ostium-metrics");
    assert_eq!(metrics["spec"]["type"], "ClusterIP");
    assert_eq!(targets(metrics), ["\"admin\""]);
    assert_eq!(metrics["spec"]["ports"][0]["name"], "metrics");
    let public = services.iter().find(|s| s["metadata"]["name"] == "ostium").unwrap();
    assert_eq!(public["spec"]["type"], "LoadBalancer");
    assert!(!targets(public).contains(&"\"admin\"".to_owned()), "/metrics would be public");
    let deployment = documents.iter().map(|(_, d)| d).find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(metrics["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
}

/// Every metric the dashboard queries is a family of docs/metrics.md (which the quickstart test
/// holds to what /metrics exposes), with the suffix its type has in the exposition.
#[test]
fn the_grafana_dashboard_queries_documented_metrics() {
    let docs = std::fs::read_to_string(workspace_root().join("docs/metrics.md")).unwrap();
    // Rows: | `family` | type | labels | meaning |
    let families: Vec<(String, String)> = docs
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            name.starts_with("ostium_").then(|| (name.to_owned(), cells[2].to_owned()))
        })
        .collect();
    let exposed: Vec<String> = families
        .iter()
        .flat_map(|(name, kind)| match kind.as_str() {
            "counter" => vec![format!("{name}_total")],
            "histogram" => ["_bucket", "_sum", "_count"].iter().map(|s| format!("{name}{s}")).collect(),
            _ => vec![name.clone()],
        })
        .collect();

    let text =
        std::fs::read_to_string(workspace_root().join("deploy/grafana/ostium-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{}: no queries", panel["title"]));
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("ostium_") {
                let name: String =
                    expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(exposed.contains(&name), "{}: {name} is not exposed by ostium", panel["title"]);
                queried.insert(name);
            }
        }
    }
    // Every family has a panel.
    for (name, _) in &families {
        assert!(queried.iter().any(|q| q.starts_with(name.as_str())), "no panel shows {name}");
    }
}

/// The Dockerfile builds the dependencies from the manifests alone: run its stub step over the
/// files it copies before the sources, and Cargo must load that workspace (every target a
/// manifest declares exists) and build from it.
#[test]
fn the_dockerfile_dependency_layer_is_a_buildable_workspace() {
    let root = workspace_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    // Instructions, continuation lines joined, comments dropped.
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines().filter(|l| !l.trim_start().starts_with('#')) {
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    instructions.push(std::mem::take(&mut current));
                }
            }
        }
    }
    let sources = instructions.iter().position(|i| i == "COPY . .").expect("COPY . .");
    let stub_layer = &instructions[..sources];

    let stage = tempfile::tempdir().unwrap();
    let mut copied = Vec::new();
    for instruction in stub_layer {
        let mut words = instruction.split_whitespace();
        match words.next() {
            Some("COPY") => {
                let words: Vec<&str> = words.collect();
                let (destination, files) = words.split_last().unwrap();
                for file in files {
                    let target = stage.path().join(destination).join(file.rsplit('/').next().unwrap());
                    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                    std::fs::copy(root.join(file), target).unwrap();
                    copied.push(file.to_string());
                }
            }
            Some("RUN") if !instruction.contains("cargo build") => {
                let status = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(instruction.trim_start_matches("RUN"))
                    .current_dir(stage.path())
                    .status()
                    .unwrap();
                assert!(status.success(), "{instruction}");
            }
            _ => {}
        }
    }
    // Every package's manifest is in the layer.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let metadata = std::process::Command::new(&cargo)
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(metadata.status.success(), "{}", String::from_utf8_lossy(&metadata.stderr));
    let metadata: Value = serde_json::from_slice(&metadata.stdout).unwrap();
    for package in metadata["packages"].as_array().unwrap() {
        let manifest = package["manifest_path"].as_str().unwrap();
        let relative = std::path::Path::new(manifest).strip_prefix(&root).unwrap().to_str().unwrap();
        assert!(
            copied.iter().any(|c| c == relative),
            "the Dockerfile does not copy {relative} before the sources"
        );
    }
    // Cargo loads the stub workspace (a declared target without its file fails here) and builds
    // a crate of it; the crate without dependencies keeps this quick.
    let target = stage.path().join("target");
    let check = std::process::Command::new(&cargo)
        .args(["check", "--offline", "--locked", "-p", "ostium-e2e"])
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_BUILD_BUILD_DIR", &target)
        .current_dir(stage.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
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
        serde_norway::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap()
    }

    #[test]
    fn chart_metadata_and_values_parse() {
        let chart: Value =
            serde_norway::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
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

    /// The ServiceMonitor is off by default, rendered only when enabled, and scrapes the metrics
    /// Service by its labels and port name.
    #[test]
    fn the_service_monitor_is_optional_and_scrapes_the_metrics_service() {
        let values = values();
        assert_eq!(values["metrics"]["serviceMonitor"]["enabled"], false);
        assert_eq!(values["metrics"]["service"]["enabled"], true);
        let template =
            |name: &str| templates().into_iter().find(|(f, _)| f.ends_with(&format!("/{name}"))).unwrap().1;
        let monitor = template("servicemonitor.yaml");
        let service = template("metrics-service.yaml");
        assert!(monitor.starts_with("{{- if .Values.metrics.serviceMonitor.enabled }}"), "{monitor}");
        assert!(monitor.trim_end().ends_with("{{- end }}"));
        assert!(service.starts_with("{{- if .Values.metrics.service.enabled }}"), "{service}");
        assert!(monitor.contains("kind: ServiceMonitor") && monitor.contains("monitoring.coreos.com/v1"));
        assert!(
            service.contains("{name: metrics, port: {{ .Values.metrics.service.port }}, targetPort: admin}")
        );
        assert!(monitor.contains("- port: metrics\n    path: /metrics"), "{monitor}");
        // The component label tells the metrics Service from the main one, which shares the rest.
        assert!(service.contains("    app.kubernetes.io/component: metrics\n"), "{service}");
        assert!(monitor.contains("      app.kubernetes.io/component: metrics\n"), "{monitor}");
        assert!(!template("service.yaml").contains("admin"), "the public Service exposes the admin port");
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
