//! `ostium check`: the migration report. Per Ingress, what ostium does differently from
//! ingress-nginx: its annotations (supported, not supported, denied, refused, unknown), the class
//! it is served under or the flags that would select it, and its problems (conflicts, TLS,
//! backends); then the ingress-nginx ConfigMap's keys and a summary. Read from manifests, or
//! read-only from the cluster of the current kubeconfig context.

use std::path::Path;

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ListParams};
use ostium_model::NamespacedName;
use ostium_translate::{
    AnnotationSupport, Diagnostic, Kind, ObjectKind, Objects, Options, Reason, SettingSupport, Severity,
    Translation, setting_support,
};
use serde::Serialize;

use crate::args::{Config, OutputFormat};
use crate::source::manifests::Manifests;

/// Runs `ostium check`; returns the exit code: 1 when an Ingress ostium serves (or another
/// object) has an error, or when there are Ingresses and none is served.
pub(crate) fn run(
    config: &Config,
    path: Option<&Path>,
    output: OutputFormat,
    nginx_configmap: &NamespacedName,
) -> anyhow::Result<u8> {
    let report = match path.or(config.manifests.as_deref()) {
        Some(path) => {
            let objects = Manifests::new(path.to_owned()).load()?;
            Report::new(
                format!("manifests {}", path.display()),
                &objects,
                &config.translate,
                nginx_configmap,
                true,
            )
        }
        None => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")?;
            let namespace = config.translate.watch_namespace.as_deref();
            let (source, objects) =
                runtime.block_on(read_cluster(namespace, nginx_configmap, &config.translate))?;
            Report::new(source, &objects, &config.translate, nginx_configmap, false)
        }
    };
    let text = match output {
        OutputFormat::Text => report.text(),
        OutputFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
    };
    // Written, not printed: a closed pipe (`| head`) is an error to report, not a panic.
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())
        .context("cannot write the report")?;
    Ok(report.exit_code())
}

/// The report, as `--output json` prints it (the shape is documented in docs/cli.md).
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// `manifests PATH` or `cluster URL`.
    source: String,
    ingresses: Vec<IngressReport>,
    /// Problems of objects other than Ingresses (a Service or Secret named by a flag).
    other: Vec<Problem>,
    configmap: ConfigMapReport,
    /// What the report could not check.
    notes: Vec<String>,
    summary: Summary,
}

#[derive(Debug, Serialize)]
struct IngressReport {
    namespace: String,
    name: String,
    served: bool,
    /// How the Ingress names its class.
    class: String,
    /// When not served: the flags (or the IngressClass) that would make ostium serve it.
    select_with: Option<String>,
    annotations: Vec<AnnotationReport>,
    /// Diagnostics other than the annotations' classification (only for served Ingresses:
    /// the others are not translated).
    problems: Vec<Problem>,
}

#[derive(Debug, Serialize)]
struct AnnotationReport {
    key: String,
    /// `supported`, `not-supported`, `denied`, `refused` or `unknown`.
    support: &'static str,
    /// For an unknown key: the ingress-nginx key it most likely meant.
    did_you_mean: Option<String>,
}

#[derive(Debug, Serialize)]
struct Problem {
    /// `error` or `warning`.
    severity: &'static str,
    reason: &'static str,
    /// `kind namespace/name`.
    object: String,
    message: String,
}

#[derive(Debug, Serialize)]
struct ConfigMapReport {
    namespace: String,
    name: String,
    found: bool,
    keys: Vec<String>,
    /// The keys ostium applies.
    applied: Vec<String>,
    /// Every key, with what ostium does with it (docs/configmap.md).
    settings: Vec<SettingReport>,
    note: String,
}

#[derive(Debug, Serialize)]
struct SettingReport {
    key: String,
    /// `supported`, `no-effect`, `not-supported`, `refused` or `unknown`.
    support: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    did_you_mean: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    ingresses: usize,
    served: usize,
    not_served: usize,
    hosts: usize,
    annotations: AnnotationCounts,
    errors: usize,
    warnings: usize,
}

#[derive(Debug, Default, Serialize)]
struct AnnotationCounts {
    supported: usize,
    not_supported: usize,
    denied: usize,
    refused: usize,
    unknown: usize,
}

/// Reasons whose diagnostics repeat what the annotation list says.
const ANNOTATION_REASONS: [Reason; 4] = [
    Reason::UnsupportedAnnotation,
    Reason::UnknownAnnotation,
    Reason::RefusedAnnotation,
    Reason::UnsupportedAccessControl,
];

/// Reasons of diagnostics that may judge a Secret's data, which the cluster report never reads.
const SECRET_DATA_REASONS: [Reason; 3] =
    [Reason::InvalidTlsSecret, Reason::CertificateHostMismatch, Reason::AuthMisconfigured];

/// Whether a diagnostic judges the content of a Secret that was read without its data: one of
/// [`SECRET_DATA_REASONS`] naming a Secret that exists (a missing one is a real problem).
fn judges_unread_data(diagnostic: &Diagnostic, unread: &[String]) -> bool {
    SECRET_DATA_REASONS.contains(&diagnostic.reason)
        && unread.iter().any(|secret| {
            diagnostic.message.match_indices(secret.as_str()).any(|(at, _)| {
                let next = diagnostic.message[at + secret.len()..].chars().next();
                !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            })
        })
}

impl Report {
    /// `secret_data`: whether the Secrets carry their data (manifests) or only their metadata
    /// (a cluster), in which case the checks of their content are left out.
    pub(crate) fn new(
        source: String,
        objects: &Objects,
        options: &Options,
        nginx_configmap: &NamespacedName,
        secret_data: bool,
    ) -> Self {
        let translation = ostium_translate::translate(objects, options);
        let unread: Vec<String> = match secret_data {
            true => Vec::new(),
            false => objects.secrets.keys().map(|id| format!("secret {id}")).collect(),
        };
        let diagnostics: Vec<&Diagnostic> =
            translation.diagnostics.iter().filter(|d| !judges_unread_data(d, &unread)).collect();
        let mut summary = Summary { hosts: translation.table.host_count(), ..Summary::default() };
        let ingresses: Vec<IngressReport> = objects
            .ingresses
            .iter()
            .map(|(id, ingress)| ingress_report(id, ingress, objects, options, &translation, &diagnostics))
            .collect();
        let other: Vec<Problem> =
            diagnostics.iter().filter(|d| d.object.kind != ObjectKind::Ingress).map(|d| problem(d)).collect();
        for ingress in &ingresses {
            if ingress.served {
                summary.served += 1;
            } else {
                summary.not_served += 1;
            }
            for annotation in &ingress.annotations {
                let counts = &mut summary.annotations;
                *match annotation.support {
                    "supported" => &mut counts.supported,
                    "not-supported" => &mut counts.not_supported,
                    "denied" => &mut counts.denied,
                    "refused" => &mut counts.refused,
                    _ => &mut counts.unknown,
                } += 1;
            }
        }
        summary.ingresses = ingresses.len();
        summary.errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
        summary.warnings = diagnostics.len() - summary.errors;
        let mut notes = Vec::new();
        if !secret_data {
            notes.push(
                "Secret data is not read from a cluster: certificates, keys and credentials are not checked \
                 (run `ostium check PATH` on exported manifests for that)"
                    .to_owned(),
            );
        }
        if summary.not_served > 0 {
            notes.push(
                "Ingresses that are not served are not translated: their problems show once the flags select them"
                    .to_owned(),
            );
        }
        let configmap =
            configmap_report(nginx_configmap, objects.config_maps.get(nginx_configmap).map(|c| &**c));
        Self { source, ingresses, other, configmap, notes, summary }
    }

    pub(crate) fn exit_code(&self) -> u8 {
        let none_served = self.summary.ingresses > 0 && self.summary.served == 0;
        u8::from(self.summary.errors > 0 || none_served)
    }

    pub(crate) fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = format!("source: {}\n", self.source);
        for ingress in &self.ingresses {
            let id = format!("{}/{}", ingress.namespace, ingress.name);
            match &ingress.select_with {
                None => {
                    let _ = writeln!(out, "ingress {id}: served; class: {}", ingress.class);
                }
                Some(select) => {
                    let _ = writeln!(
                        out,
                        "ingress {id}: not served; class: {}; served with: {select}",
                        ingress.class
                    );
                }
            }
            for (support, label) in [
                ("supported", "supported"),
                ("not-supported", "not supported, ignored"),
                ("denied", "denied (every request answered 503 until implemented)"),
                ("refused", "refused (every request answered 503)"),
                ("unknown", "unknown, ignored"),
            ] {
                let keys: Vec<String> = ingress
                    .annotations
                    .iter()
                    .filter(|a| a.support == support)
                    .map(|a| match &a.did_you_mean {
                        Some(meant) => format!("{} (did you mean {meant}?)", a.key),
                        None => a.key.clone(),
                    })
                    .collect();
                if !keys.is_empty() {
                    let _ = writeln!(out, "  {label}: {}", keys.join(", "));
                }
            }
            for problem in &ingress.problems {
                let _ = writeln!(out, "  {}: {}: {}", problem.severity, problem.reason, problem.message);
            }
        }
        if !self.other.is_empty() {
            out.push_str("other objects:\n");
            for problem in &self.other {
                let _ = writeln!(
                    out,
                    "  {}: {}: {}: {}",
                    problem.severity, problem.object, problem.reason, problem.message
                );
            }
        }
        let configmap = &self.configmap;
        let _ = writeln!(out, "configmap {}/{}: {}", configmap.namespace, configmap.name, configmap.note);
        for support in ["no-effect", "not-supported", "refused", "unknown"] {
            let keys: Vec<String> = (configmap.settings.iter())
                .filter(|s| s.support == support)
                .map(|s| match s.did_you_mean {
                    Some(meant) => format!("{} (did you mean {meant}?)", s.key),
                    None => s.key.clone(),
                })
                .collect();
            if !keys.is_empty() {
                let _ = writeln!(out, "  {support}: {}", keys.join(", "));
            }
        }
        if !configmap.keys.is_empty() {
            let _ = writeln!(out, "  keys: {}", configmap.keys.join(", "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        let s = &self.summary;
        let a = &s.annotations;
        let _ = writeln!(
            out,
            "summary: {} ingresses ({} served, {} not served), {} hosts; annotations: {} supported, {} not supported, \
             {} denied, {} refused, {} unknown; {} errors, {} warnings",
            s.ingresses,
            s.served,
            s.not_served,
            s.hosts,
            a.supported,
            a.not_supported,
            a.denied,
            a.refused,
            a.unknown,
            s.errors,
            s.warnings
        );
        out
    }
}

fn ingress_report(
    id: &NamespacedName,
    ingress: &Ingress,
    objects: &Objects,
    options: &Options,
    translation: &Translation,
    diagnostics: &[&Diagnostic],
) -> IngressReport {
    let served = translation.ingresses.binary_search(id).is_ok();
    let claim = ostium_translate::class_claim(objects, options, ingress);
    let select_with = match &options.watch_namespace {
        _ if served => None,
        Some(watched) if **watched != *id.namespace => {
            Some(format!("--watch-namespace {} (or none)", id.namespace))
        }
        _ => Some(claim.selected_by),
    };
    let prefix = format!("{}/", options.annotations_prefix);
    let annotations = ingress
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter_map(|(key, _)| {
            let name = key.strip_prefix(&prefix)?;
            let (support, did_you_mean) = match ostium_translate::annotation_support(name) {
                AnnotationSupport::Supported => ("supported", None),
                AnnotationSupport::NotSupported => ("not-supported", None),
                AnnotationSupport::Denied => ("denied", None),
                AnnotationSupport::Refused => ("refused", None),
                AnnotationSupport::Unknown { did_you_mean } => {
                    ("unknown", did_you_mean.map(|meant| format!("{prefix}{meant}")))
                }
            };
            Some(AnnotationReport { key: key.clone(), support, did_you_mean })
        })
        .collect();
    let problems = diagnostics
        .iter()
        .filter(|d| d.object.kind == ObjectKind::Ingress && !ANNOTATION_REASONS.contains(&d.reason))
        .filter(|d| d.object.namespace.as_deref() == Some(&*id.namespace) && *d.object.name == *id.name)
        .map(|d| problem(d))
        .collect();
    IngressReport {
        namespace: id.namespace.to_string(),
        name: id.name.to_string(),
        served,
        class: claim.class,
        select_with,
        annotations,
        problems,
    }
}

fn problem(diagnostic: &Diagnostic) -> Problem {
    Problem {
        severity: match diagnostic.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        },
        reason: diagnostic.reason.as_str(),
        object: diagnostic.object.to_string(),
        message: diagnostic.message.clone(),
    }
}

/// The ingress-nginx ConfigMap: its keys, and those ostium applies (given as `--configmap`).
fn configmap_report(id: &NamespacedName, config_map: Option<&ConfigMap>) -> ConfigMapReport {
    let keys: Vec<String> =
        config_map.and_then(|c| c.data.as_ref()).into_iter().flatten().map(|(k, _)| k.clone()).collect();
    let settings: Vec<SettingReport> = keys
        .iter()
        .map(|key| {
            let (support, did_you_mean) = match setting_support(key) {
                SettingSupport::Supported => ("supported", None),
                SettingSupport::NoEffect => ("no-effect", None),
                SettingSupport::NotSupported => ("not-supported", None),
                SettingSupport::Refused => ("refused", None),
                SettingSupport::Unknown { did_you_mean } => ("unknown", did_you_mean),
            };
            SettingReport { key: key.clone(), support, did_you_mean }
        })
        .collect();
    let applied: Vec<String> =
        settings.iter().filter(|s| s.support == "supported").map(|s| s.key.clone()).collect();
    let count = |support| settings.iter().filter(|s| s.support == support).count();
    let note = match config_map {
        None => "not found".to_owned(),
        Some(_) if keys.is_empty() => "no keys".to_owned(),
        Some(_) => format!(
            "{} key(s): {} applied with --configmap, {} no effect, {} not supported, {} refused, {} unknown (docs/configmap.md)",
            keys.len(),
            applied.len(),
            count("no-effect"),
            count("not-supported"),
            count("refused"),
            count("unknown"),
        ),
    };
    ConfigMapReport {
        namespace: id.namespace.to_string(),
        name: id.name.to_string(),
        found: config_map.is_some(),
        keys,
        applied,
        settings,
        note,
    }
}

/// Reads what the report needs from the cluster of the current kubeconfig context, read-only:
/// Ingresses, IngressClasses, Services, the metadata of Secrets (never their data), the
/// ConfigMaps Ingresses name and the ingress-nginx ConfigMap. Returns the source's name too.
async fn read_cluster(
    namespace: Option<&str>,
    nginx_configmap: &NamespacedName,
    options: &Options,
) -> anyhow::Result<(String, Objects)> {
    let kube_config = kube::Config::infer()
        .await
        .context("no Kubernetes API to talk to (KUBECONFIG, ~/.kube/config, in-cluster); give a PATH to check manifests")?;
    let source = format!("cluster {}", kube_config.cluster_url);
    let client = kube::Client::try_from(kube_config).context("cannot set up the Kubernetes client")?;
    let all = ListParams::default();
    let mut objects = Objects::default();
    let failed = |kind: &str| format!("cannot list {kind} from the {source}");
    for ingress in
        scoped::<Ingress>(&client, namespace).list(&all).await.with_context(|| failed("Ingresses"))?
    {
        objects.put(Ingress::key_of(&ingress.metadata), ingress.into());
    }
    for class in
        Api::<IngressClass>::all(client.clone()).list(&all).await.with_context(|| failed("IngressClasses"))?
    {
        objects.put(IngressClass::key_of(&class.metadata), class.into());
    }
    for service in
        scoped::<Service>(&client, namespace).list(&all).await.with_context(|| failed("Services"))?
    {
        objects.put(Service::key_of(&service.metadata), service.into());
    }
    // Metadata only: the report needs to know a Secret exists, never what it holds.
    let secrets =
        scoped::<Secret>(&client, namespace).list_metadata(&all).await.with_context(|| failed("Secrets"))?;
    for secret in secrets {
        let secret = Secret { metadata: secret.metadata, ..Secret::default() };
        objects.put(Secret::key_of(&secret.metadata), secret.into());
    }
    let mut config_maps = vec![nginx_configmap.clone()];
    for (id, ingress) in &objects.ingresses {
        let named = ingress.references(id, options).into_iter().filter(|r| r.kind == ObjectKind::ConfigMap);
        config_maps.extend(named.map(|r| r.key));
    }
    config_maps.sort();
    config_maps.dedup();
    for id in config_maps {
        let api = Api::<ConfigMap>::namespaced(client.clone(), &id.namespace);
        let found = api
            .get_opt(&id.name)
            .await
            .with_context(|| format!("cannot read ConfigMap {id} from the {source}"))?;
        if let Some(config_map) = found {
            objects.put(id, config_map.into());
        }
    }
    Ok((source, objects))
}

/// The API of a namespaced kind: in `namespace`, or in all namespaces.
fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let generated = rcgen::generate_simple_self_signed(vec!["ostium.invalid".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        let key =
            rustls::sign::CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider).unwrap();
        let fallback =
            ostium_model::Certificate { key: std::sync::Arc::new(key), source: "self-signed".into() };
        Options::new(fallback, provider)
    }

    const NGINX_CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ingress-nginx-controller, namespace: ingress-nginx}\ndata: {otlp-collector-host: otel.example, proxy-body-size: 8m, use-forwarded-headers: \"true\"}\n";

    #[test]
    fn the_configmap_keys_are_listed_with_those_applied() {
        let objects = Objects::from_yaml(NGINX_CONFIGMAP).unwrap();
        let id = NamespacedName::new("ingress-nginx", "ingress-nginx-controller");
        let report = configmap_report(&id, objects.config_maps.get(&id).map(|c| &**c));
        assert!(report.found);
        assert_eq!(report.keys, ["otlp-collector-host", "proxy-body-size", "use-forwarded-headers"]);
        assert_eq!(report.applied, ["otlp-collector-host", "proxy-body-size", "use-forwarded-headers"]);
        assert!(report.note.contains("3 key(s): 3 applied"), "{}", report.note);
        assert!(!configmap_report(&NamespacedName::new("a", "b"), None).found);
    }

    /// Without Secret data (a cluster), content checks are left out and the report says so.
    #[test]
    fn without_secret_data_content_problems_are_not_reported() {
        let yaml = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ostium}\nspec: {controller: ostium.dev/ingress-controller}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: tls}\ntype: kubernetes.io/tls\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec:\n  ingressClassName: ostium\n  tls: [{hosts: [a.example.com], secretName: tls}]\n  rules: [{host: a.example.com}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: auth, annotations: {nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: tl}}\nspec:\n  ingressClassName: ostium\n  rules: [{host: b.example.com}]\n";
        let objects = Objects::from_yaml(yaml).unwrap();
        let id = NamespacedName::new("ingress-nginx", "ingress-nginx-controller");
        let with_data = Report::new("m".into(), &objects, &options(), &id, true);
        assert_eq!(with_data.ingresses[1].problems[0].reason, "InvalidTlsSecret");
        let metadata_only = Report::new("c".into(), &objects, &options(), &id, false);
        assert!(metadata_only.ingresses[1].problems.is_empty());
        assert!(metadata_only.notes[0].contains("Secret data is not read"));
        // A Secret that does not exist is a problem all the same (`tl` is not `tls`).
        let auth = &metadata_only.ingresses[0];
        assert_eq!(auth.name, "auth");
        assert_eq!(auth.problems[0].reason, "AuthMisconfigured", "{:?}", auth.problems);
        assert!(auth.problems[0].message.contains("secret default/tl "), "{:?}", auth.problems);
    }
}
