//! examples/migration/ (one Ingress moved to class ostium, two still on ingress-nginx) is served
//! as docs/migration.md says for each way of running ostium next to ingress-nginx, without a
//! diagnostic; and the Helm values that page sets exist in the chart.

use std::sync::Arc;

use ostium_e2e::workspace_root;
use ostium_translate::{Objects, Options, translate};
use serde_json::Value;

fn objects() -> Objects {
    let mut objects = Objects::default();
    let mut files: Vec<_> = std::fs::read_dir(workspace_root().join("examples/migration"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed = Objects::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        objects.extend(&parsed);
    }
    objects
}

/// The Ingresses ostium serves with these flags; panics on any diagnostic.
fn served(ingress_class: &str, controller_name: &str) -> Vec<String> {
    let fallback = ostium_test_support::fallback_certificate();
    let mut options = Options::new(fallback, Arc::new(rustls::crypto::ring::default_provider()));
    options.ingress_class = ingress_class.into();
    options.controller_name = controller_name.into();
    let translation = translate(&objects(), &options);
    assert!(translation.diagnostics.is_empty(), "{:#?}", translation.diagnostics);
    translation.ingresses.iter().map(|i| format!("{}/{}", i.namespace, i.name)).collect()
}

/// Side by side on its own class (the defaults): only the Ingress moved to class ostium.
#[test]
fn on_its_own_class_ostium_serves_the_moved_ingresses() {
    assert_eq!(served("ostium", "ostium.dev/ingress-controller"), ["default/blog"]);
}

/// Taking over class nginx: every Ingress ingress-nginx serves, by ingressClassName or by the
/// legacy annotation, and not the one already moved to class ostium.
#[test]
fn taking_over_class_nginx_serves_what_ingress_nginx_serves() {
    assert_eq!(served("nginx", "k8s.io/ingress-nginx"), ["default/docs", "default/shop"]);
}

/// Every `--set key=value` of an `helm … deploy/helm/ostium` command in docs/migration.md names
/// a value of the chart.
#[test]
fn the_helm_values_of_the_migration_guide_exist() {
    let values: Value = serde_norway::from_str(
        &std::fs::read_to_string(workspace_root().join("deploy/helm/ostium/values.yaml")).unwrap(),
    )
    .unwrap();
    let guide = std::fs::read_to_string(workspace_root().join("docs/migration.md")).unwrap();
    let commands: Vec<String> = guide
        .replace("\\\n", " ")
        .lines()
        .filter(|l| l.contains("helm ") && l.contains("deploy/helm/ostium"))
        .map(str::to_owned)
        .collect();
    assert!(commands.len() >= 3, "{commands:?}");
    let mut keys = Vec::new();
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        for pair in words.windows(2).filter(|w| w[0] == "--set") {
            let key = pair[1].split('=').next().unwrap();
            let pointer = format!("/{}", key.replace('.', "/"));
            assert!(values.pointer(&pointer).is_some(), "--set {key}: not a value of the chart");
            keys.push(key.to_owned());
        }
    }
    for key in ["ingressClass.create", "ingressClass.name", "controller.name", "controller.publishService"] {
        assert!(keys.iter().any(|k| k == key), "the guide never sets {key}");
    }
}
