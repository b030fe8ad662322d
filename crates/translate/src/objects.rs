//! The snapshot of Kubernetes objects that translation reads, and its loading from YAML
//! manifests (standalone `--manifests` mode and test fixtures).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use ostium_model::NamespacedName;

use crate::ObjectKind;
use serde_json::Value;

/// Every object translation may look at, keyed by identity. Values are `Arc`s so a snapshot is
/// cheap to take from a cache.
#[derive(Clone, Default)]
pub struct Objects {
    pub ingresses: BTreeMap<NamespacedName, Arc<Ingress>>,
    /// Cluster-scoped, by name.
    pub ingress_classes: BTreeMap<String, Arc<IngressClass>>,
    pub services: BTreeMap<NamespacedName, Arc<Service>>,
    pub endpoint_slices: BTreeMap<NamespacedName, Arc<EndpointSlice>>,
    pub endpoints: BTreeMap<NamespacedName, Arc<Endpoints>>,
    pub secrets: BTreeMap<NamespacedName, Arc<Secret>>,
}

/// One object of a kind ostium reads.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // short-lived: each is moved into an `Arc` right away
pub enum Object {
    Ingress(Ingress),
    IngressClass(IngressClass),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Endpoints(Endpoints),
    Secret(Secret),
}

/// A manifest that cannot be loaded: a YAML syntax error, or a document of a kind ostium reads
/// that does not have that kind's shape. The message says where and what kind of problem, never
/// the text of the document: that may be Secret data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("document {document}: {message}")]
pub struct ManifestError {
    /// 1-based position of the document in the file (0 when the YAML itself does not parse).
    pub document: usize,
    pub message: String,
}

/// The namespace objects without one are put in, as `kubectl apply` does.
const DEFAULT_NAMESPACE: &str = "default";

/// Parses a YAML stream (one or more `---`-separated documents, `kind: List` included) into the
/// objects ostium reads. Documents of other kinds (Deployments, ConfigMaps …) are skipped, so a
/// whole application's manifests can be pointed at. Any error fails the whole stream: a
/// half-read file must not replace a good one.
pub fn parse_manifests(text: &str) -> Result<Vec<Object>, ManifestError> {
    // The default budget stops at 1 024 documents and 250 000 nodes, which a fleet's worth of
    // Ingresses in one file passes. Alias expansion keeps its default limits (the YAML bomb guard).
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 1_000_000,
            max_nodes: 50_000_000,
            max_events: 100_000_000,
        },
        with_snippet: false,
    };
    let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| ManifestError { document: 0, message: yaml_error(&e) })?;
    let mut objects = Vec::new();
    for (i, document) in documents.into_iter().enumerate() {
        let document_number = i + 1;
        parse_document(document, &mut objects)
            .map_err(|message| ManifestError { document: document_number, message })?;
    }
    Ok(objects)
}

fn parse_document(document: Value, out: &mut Vec<Object>) -> Result<(), String> {
    if document.is_null() {
        return Ok(());
    }
    let field = |name: &str| document.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err("not a Kubernetes object: `apiVersion` and `kind` are required".to_owned());
    };
    let name = document.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
    let describe = |e: serde_json::Error| format!("{api_version} {kind} `{name}`: {}", shape_error(&e));
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "List") => {
            let Some(Value::Array(items)) = document.get("items") else {
                return Err("v1 List without `items`".to_owned());
            };
            for item in items.clone() {
                parse_document(item, out)?;
            }
            return Ok(());
        }
        ("networking.k8s.io/v1", "Ingress") => {
            Object::Ingress(serde_json::from_value(document).map_err(describe)?)
        }
        ("networking.k8s.io/v1", "IngressClass") => {
            Object::IngressClass(serde_json::from_value(document).map_err(describe)?)
        }
        ("v1", "Service") => Object::Service(serde_json::from_value(document).map_err(describe)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(serde_json::from_value(document).map_err(describe)?)
        }
        ("v1", "Endpoints") => Object::Endpoints(serde_json::from_value(document).map_err(describe)?),
        ("v1", "Secret") => Object::Secret(serde_json::from_value(document).map_err(describe)?),
        (_, "Ingress" | "IngressClass" | "Service" | "EndpointSlice" | "Endpoints" | "Secret") => {
            return Err(format!("{kind} `{name}`: unsupported apiVersion `{api_version}`"));
        }
        _ => return Ok(()),
    };
    if name.is_empty() {
        return Err(format!("{kind}: `metadata.name` is required"));
    }
    out.push(object);
    Ok(())
}

/// A YAML syntax error by position and kind only: the parser's message and snippet may quote
/// the document.
fn yaml_error(error: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error;
    let what = match error.without_snippet() {
        Error::Eof { .. } => "unexpected end of input",
        Error::InvalidUtf8Input => "not UTF-8",
        Error::DuplicateMappingKey { .. } => "a key appears twice in one mapping",
        Error::UnknownAnchor { .. } => "an alias names an unknown anchor",
        Error::Budget { .. }
        | Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. } => "too large or too deeply nested",
        _ => "syntax error",
    };
    match error.location() {
        Some(at) => format!("invalid YAML at line {}, column {}: {what}", at.line(), at.column()),
        None => format!("invalid YAML: {what}"),
    }
}

/// The kinds of value serde names in "invalid type" and "invalid value" errors, before quoting
/// the value itself.
const VALUE_KINDS: [&str; 16] = [
    "string",
    "integer",
    "floating point",
    "boolean",
    "character",
    "byte array",
    "unit value",
    "Option value",
    "newtype struct",
    "sequence",
    "map",
    "enum",
    "unit variant",
    "newtype variant",
    "tuple variant",
    "struct variant",
];

/// A document that does not have its kind's shape, described without the offending value: serde
/// quotes it (`invalid type: string "…", expected a map`), and it may be Secret data. Kept:
/// the kind of value found, what was expected, and the names of missing or repeated fields (which
/// come from the type, not the document). Any other message (a custom one from a field's own
/// parser, such as a base64 error) may hold input and becomes "invalid value".
fn shape_error(error: &serde_json::Error) -> String {
    let message = error.to_string();
    // What follows the last ", expected " comes from the type; anything before it may be input.
    let expected = message.rfind(", expected ").map(|i| &message[i + 2..]);
    for kind in ["invalid type", "invalid value"] {
        let Some(rest) = message.strip_prefix(kind).and_then(|r| r.strip_prefix(": ")) else { continue };
        let found = VALUE_KINDS.iter().find(|found| rest.starts_with(*found));
        return match (found, expected) {
            (Some(found), Some(expected)) => format!("{kind}: {found}, {expected}"),
            (None, Some(expected)) => format!("{kind}, {expected}"),
            (Some(found), None) => format!("{kind}: {found}"),
            (None, None) => kind.to_owned(),
        };
    }
    if message.starts_with("missing field `") || message.starts_with("duplicate field `") {
        return message;
    }
    for kind in ["unknown variant", "unknown field", "invalid length"] {
        if message.starts_with(kind) {
            return expected.map_or_else(|| kind.to_owned(), |expected| format!("{kind}, {expected}"));
        }
    }
    "invalid value".to_owned()
}

// === impl Objects ===

impl Objects {
    /// Parses manifests (see [`parse_manifests`]) into a snapshot.
    pub fn from_yaml(text: &str) -> Result<Self, ManifestError> {
        let mut objects = Self::default();
        for object in parse_manifests(text)? {
            objects.insert(object);
        }
        Ok(objects)
    }

    /// Adds an object, replacing one of the same kind and identity (see [`Object::normalize`]).
    pub fn insert(&mut self, mut object: Object) {
        let key = object.normalize();
        match object {
            Object::Ingress(o) => {
                self.ingresses.insert(key, Arc::new(o));
            }
            Object::IngressClass(o) => {
                self.ingress_classes.insert(key.name, Arc::new(o));
            }
            Object::Service(o) => {
                self.services.insert(key, Arc::new(o));
            }
            Object::EndpointSlice(o) => {
                self.endpoint_slices.insert(key, Arc::new(o));
            }
            Object::Endpoints(o) => {
                self.endpoints.insert(key, Arc::new(o));
            }
            Object::Secret(o) => {
                self.secrets.insert(key, Arc::new(o));
            }
        }
    }

    /// Adds every object of `other` (sharing them), replacing objects of the same identity.
    pub fn extend(&mut self, other: &Objects) {
        self.ingresses.extend(other.ingresses.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.ingress_classes.extend(other.ingress_classes.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.services.extend(other.services.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.endpoint_slices.extend(other.endpoint_slices.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.endpoints.extend(other.endpoints.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.secrets.extend(other.secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// Every object, copied out, with its kind and key (an IngressClass's namespace is empty).
    pub fn to_objects(&self) -> Vec<(ObjectKind, NamespacedName, Object)> {
        let mut out = Vec::new();
        let cluster_key = |name: &String| NamespacedName::new("", name);
        out.extend(
            self.ingresses
                .iter()
                .map(|(k, o)| (ObjectKind::Ingress, k.clone(), Object::Ingress((**o).clone()))),
        );
        out.extend(
            self.ingress_classes.iter().map(|(k, o)| {
                (ObjectKind::IngressClass, cluster_key(k), Object::IngressClass((**o).clone()))
            }),
        );
        out.extend(
            self.services
                .iter()
                .map(|(k, o)| (ObjectKind::Service, k.clone(), Object::Service((**o).clone()))),
        );
        out.extend(
            self.endpoint_slices
                .iter()
                .map(|(k, o)| (ObjectKind::EndpointSlice, k.clone(), Object::EndpointSlice((**o).clone()))),
        );
        out.extend(
            self.endpoints
                .iter()
                .map(|(k, o)| (ObjectKind::Endpoints, k.clone(), Object::Endpoints((**o).clone()))),
        );
        out.extend(
            self.secrets.iter().map(|(k, o)| (ObjectKind::Secret, k.clone(), Object::Secret((**o).clone()))),
        );
        out
    }

    /// Whether an object of this kind and key is here.
    pub fn contains(&self, kind: ObjectKind, key: &NamespacedName) -> bool {
        match kind {
            ObjectKind::Ingress => self.ingresses.contains_key(key),
            ObjectKind::IngressClass => self.ingress_classes.contains_key(&key.name),
            ObjectKind::Service => self.services.contains_key(key),
            ObjectKind::EndpointSlice => self.endpoint_slices.contains_key(key),
            ObjectKind::Endpoints => self.endpoints.contains_key(key),
            ObjectKind::Secret => self.secrets.contains_key(key),
        }
    }

    /// How many objects of each kind, for logs.
    pub fn counts(&self) -> String {
        format!(
            "{} ingresses, {} ingressclasses, {} services, {} endpointslices, {} endpoints, {} secrets",
            self.ingresses.len(),
            self.ingress_classes.len(),
            self.services.len(),
            self.endpoint_slices.len(),
            self.endpoints.len(),
            self.secrets.len()
        )
    }
}

// === impl Object ===

impl Object {
    /// One object from its JSON form (as the API server sends it, `apiVersion` and `kind`
    /// included), checked as [`parse_manifests`] checks a document.
    pub fn from_value(value: Value) -> Result<Self, String> {
        let mut out = Vec::new();
        parse_document(value, &mut out)?;
        match (out.pop(), out.is_empty()) {
            (Some(object), true) => Ok(object),
            _ => Err("not one object of a kind ostium reads".to_owned()),
        }
    }

    /// Puts a namespaced object without a namespace in `default` and merges a Secret's
    /// `stringData` into `data`, as the API server does on write. Returns the object's key
    /// (an IngressClass's has an empty namespace).
    pub fn normalize(&mut self) -> NamespacedName {
        let meta = match self {
            Self::IngressClass(o) => {
                return NamespacedName::new("", o.metadata.name.clone().unwrap_or_default());
            }
            Self::Secret(o) => {
                if let Some(string_data) = o.string_data.take() {
                    let data = o.data.get_or_insert_with(BTreeMap::new);
                    for (k, v) in string_data {
                        data.insert(k, ByteString(v.into_bytes()));
                    }
                }
                &mut o.metadata
            }
            Self::Ingress(o) => &mut o.metadata,
            Self::Service(o) => &mut o.metadata,
            Self::EndpointSlice(o) => &mut o.metadata,
            Self::Endpoints(o) => &mut o.metadata,
        };
        let namespace = meta.namespace.get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned()).clone();
        NamespacedName::new(namespace, meta.name.clone().unwrap_or_default())
    }
}

/// Never prints Secret data.
impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.counts())
    }
}

/// Never prints Secret data.
impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, meta) = match self {
            Self::Ingress(o) => ("Ingress", &o.metadata),
            Self::IngressClass(o) => ("IngressClass", &o.metadata),
            Self::Service(o) => ("Service", &o.metadata),
            Self::EndpointSlice(o) => ("EndpointSlice", &o.metadata),
            Self::Endpoints(o) => ("Endpoints", &o.metadata),
            Self::Secret(o) => ("Secret", &o.metadata),
        };
        write!(f, "{kind} {}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_stream_with_list_and_foreign_kinds() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Secret
  metadata: {name: s, namespace: other}
  stringData: {auth: "user:hash"}
---
"#;
        let objects = Objects::from_yaml(yaml).unwrap();
        assert!(objects.services.contains_key(&NamespacedName::new("default", "web")));
        let secret = &objects.secrets[&NamespacedName::new("other", "s")];
        assert_eq!(secret.data.as_ref().unwrap()["auth"].0, b"user:hash");
        assert!(secret.string_data.is_none());
    }

    #[test]
    fn files_with_thousands_of_documents_load() {
        let one = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n";
        let text: String =
            (0..5000).map(|i| format!("---\n{}", one.replace("name: s", &format!("name: s{i}")))).collect();
        assert_eq!(Objects::from_yaml(&text).unwrap().services.len(), 5000);
    }

    #[test]
    fn yaml_syntax_error_fails_the_stream() {
        let err = Objects::from_yaml("kind: [unclosed").unwrap_err();
        assert_eq!(err.document, 0);
        assert!(err.message.contains("invalid YAML"), "{err}");
    }

    #[test]
    fn malformed_known_kind_names_document_and_object() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: broken}\nspec: {rules: [{http: {paths: \"not a list\"}}]}\n";
        let err = Objects::from_yaml(yaml).unwrap_err();
        assert_eq!(err.document, 2);
        assert!(err.message.contains("Ingress `broken`") && err.message.contains("invalid type"), "{err}");
    }

    #[test]
    fn removed_api_versions_are_refused() {
        let yaml = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\n";
        let err = Objects::from_yaml(yaml).unwrap_err();
        assert!(err.message.contains("unsupported apiVersion"), "{err}");
    }

    #[test]
    fn documents_that_are_not_objects_are_refused() {
        assert!(Objects::from_yaml("- a\n- b\n").is_err());
        assert!(Objects::from_yaml("apiVersion: v1\nkind: Service\nmetadata: {}\n").is_err());
    }

    /// Asserts that neither the Display nor the Debug form of an error quotes the marker.
    fn assert_redacted(err: &ManifestError) {
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("SECRETMARKER") && !shown.contains("PRIVATE KEY"), "{shown}");
        }
    }

    #[test]
    fn shape_errors_never_quote_secret_data() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: tls}\ndata: \"tls.key: -----BEGIN EC PRIVATE KEY----- SECRETMARKER\"\n";
        let err = Objects::from_yaml(yaml).unwrap_err();
        assert_redacted(&err);
        assert_eq!(err.document, 2);
        assert_eq!(err.message, "v1 Secret `tls`: invalid type: string, expected a map");
    }

    #[test]
    fn secret_values_that_are_not_base64_are_not_quoted() {
        let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\ndata:\n  tls.key: \"-----BEGIN EC PRIVATE KEY----- SECRETMARKER\"\n";
        let err = Objects::from_yaml(yaml).unwrap_err();
        assert_redacted(&err);
        assert_eq!(err.message, "v1 Secret `tls`: invalid value");
    }

    #[test]
    fn yaml_syntax_errors_never_quote_the_document() {
        for yaml in [
            "apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\nstringData: {tls.key: \"-----BEGIN EC PRIVATE KEY----- SECRETMARKER\"\n",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\nstringData:\n  tls.key: -----BEGIN EC PRIVATE KEY----- SECRETMARKER\n   bad: [indent\n",
            "apiVersion: v1\nkind: Secret\nstringData:\n  tls.key: \"SECRETMARKER\\q\"\n",
            "stringData: {a: 1, a: SECRETMARKER}\n",
        ] {
            let err = Objects::from_yaml(yaml).unwrap_err();
            assert_redacted(&err);
            assert_eq!(err.document, 0, "{err}");
            assert!(err.message.starts_with("invalid YAML at line "), "{err}");
        }
    }

    #[test]
    fn objects_from_the_api_are_checked_without_quoting_them() {
        let value = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "tls"},
            "data": ["-----BEGIN EC PRIVATE KEY----- SECRETMARKER"],
        });
        let err = Object::from_value(value).unwrap_err();
        assert!(!err.contains("SECRETMARKER"), "{err}");
        assert_eq!(err, "v1 Secret `tls`: invalid type: sequence, expected a map");
    }

    #[test]
    fn debug_never_shows_secret_data() {
        let objects = Objects::from_yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: hunter2}\n",
        )
        .unwrap();
        assert!(!format!("{objects:?}").contains("hunter2"));
        let parsed = parse_manifests(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: hunter2}\n",
        )
        .unwrap();
        assert!(!format!("{parsed:?}").contains("hunter2"));
    }
}
