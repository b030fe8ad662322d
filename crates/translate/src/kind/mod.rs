//! Ingestion, one kind at a time: what the sources, the snapshot and the store need to know about
//! each Kubernetes kind ostium reads, in one implementation of [`Kind`] per kind.
//!
//! Nothing else names the kinds: sources, [`Objects`] and the controller's store work on any
//! `K: Kind`, and code that must reach every kind goes through [`for_each_kind`], the one list of
//! them. A new kind is a file next to these with its `impl Kind`, its field in [`Objects`], its
//! line in [`for_each_kind`] and its [`ObjectKind`]; then its translation.

mod config_map;
mod endpoint_slice;
mod endpoints;
mod ingress;
mod ingress_class;
mod secret;
mod service;

use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, Metadata, NamespaceResourceScope, Resource};
use ostium_model::NamespacedName;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{ObjectKind, ObjectMap, Objects, Options};

/// What `kubectl apply` keeps of an object it applied, which nothing here reads.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The namespace objects without one are put in, as `kubectl apply` does.
const DEFAULT_NAMESPACE: &str = "default";

/// A Kubernetes kind ostium reads: how its objects are keyed, read, held and judged.
pub trait Kind:
    Resource<Scope: KindScope> + Metadata<Ty = ObjectMeta> + DeserializeOwned + Clone + Send + Sync + 'static
{
    /// The kind, as diagnostics, logs and metrics name it.
    const OBJECT_KIND: ObjectKind;

    /// Whether objects of this kind live in a namespace; others are keyed by name alone.
    const NAMESPACED: bool = <Self::Scope as KindScope>::NAMESPACED;

    /// This kind's objects in a snapshot.
    fn map(objects: &Objects) -> &ObjectMap<Self>;

    /// The same, to change: only [`Objects`] does, keeping its indexes in step.
    fn map_mut(objects: &mut Objects) -> &mut ObjectMap<Self>;

    /// Whether a new version of an object can give another table than the old one: whether what
    /// translation reads changed (status and `resourceVersion` never count, so our own status
    /// writes never cause a rebuild).
    fn differs(old: &Self, new: &Self) -> bool;

    /// Who must hear of a change to this object. A change is judged on the old version and on the
    /// new one, so both the Service a slice left and the one it joined hear of it.
    fn relevance(&self, key: &NamespacedName, objects: &Objects, options: &Options) -> Relevance;

    /// The objects this one names: a change to one of those matters as long as this one does.
    fn references(&self, _key: &NamespacedName, _options: &Options) -> Vec<Reference> {
        Vec::new()
    }

    /// This object without the data nothing needs while nothing names it (a Secret's keys), or
    /// `None` when objects of this kind are always held whole.
    fn without_payload(&self) -> Option<Self> {
        None
    }

    /// Completes the object as the API server stores it (a Secret's `stringData` goes into `data`).
    fn normalize(&mut self) {}

    /// Drops what nothing here reads and gives back the room a deserializer left in lists (it
    /// grows each to four entries): objects are held for as long as they exist.
    fn compact(&mut self) {}

    /// Brings the snapshot's indexes of this kind up to date, once `key` went from `old` to `new`.
    fn reindex(_objects: &mut Objects, _key: &NamespacedName, _old: Option<&Self>, _new: Option<&Self>) {}

    /// The key of an object with this metadata: namespace and name, or, for a cluster-scoped
    /// kind, the name with an empty namespace.
    fn key_of(metadata: &ObjectMeta) -> NamespacedName {
        let name = metadata.name.clone().unwrap_or_default();
        if !Self::NAMESPACED {
            return NamespacedName::new("", name);
        }
        NamespacedName::new(metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE), name)
    }

    fn key(&self) -> NamespacedName {
        Self::key_of(self.metadata())
    }

    /// Reads an object from its JSON form (as the API server sends it or a manifest holds it),
    /// normalized and without `managedFields` or `kubectl apply`'s last applied copy. An object
    /// that does not have this kind's shape is [`Malformed`], still with its metadata, so that it
    /// can be named and skipped on its own.
    fn from_value(mut value: Value) -> Result<Self, Malformed> {
        let metadata = value.as_object_mut().and_then(|fields| fields.remove("metadata"));
        let metadata = match metadata.map(ObjectMeta::deserialize).transpose() {
            Ok(metadata) => strip_metadata(metadata.unwrap_or_default()),
            Err(e) => {
                return Err(Malformed { metadata: Box::default(), reason: shape_error(&e.to_string()) });
            }
        };
        match Self::deserialize(value) {
            Ok(object) => Ok(complete(object, metadata)),
            Err(e) => Err(Malformed { metadata: Box::new(metadata), reason: shape_error(&e.to_string()) }),
        }
    }
}

/// Metadata without what nothing here reads and what can be large: `managedFields` and
/// `kubectl apply`'s copy of the whole object.
pub(crate) fn strip_metadata(mut metadata: ObjectMeta) -> ObjectMeta {
    metadata.managed_fields = None;
    if let Some(annotations) = &mut metadata.annotations {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
    metadata
}

/// An object read without its metadata, with it, normalized.
pub(crate) fn complete<K: Kind>(mut object: K, metadata: ObjectMeta) -> K {
    *object.metadata_mut() = metadata;
    normalize(&mut object);
    object
}

/// Whether a Kubernetes scope puts objects in namespaces.
pub trait KindScope {
    const NAMESPACED: bool;
}

impl KindScope for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl KindScope for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// Who must hear of a change to an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relevance {
    /// The table: any change can change it (IngressClass).
    Table,
    /// The table, while some object or flag names this object (Service, Secret).
    TableWhileReferenced,
    /// The table, when the object is served by the current table or, being `ours`, will be by
    /// the next (Ingress).
    TableWhenServed { ours: bool },
    /// The endpoints of this Service, while something names the Service (EndpointSlice,
    /// Endpoints): they move in place, without a new table.
    Endpoints(NamespacedName),
    /// Nobody (an EndpointSlice that belongs to no Service).
    Nobody,
}

/// An object by kind and key: what one object names, and what a store counts references to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    pub kind: ObjectKind,
    pub key: NamespacedName,
}

/// An object that does not have its kind's shape: its metadata (so that it can still be named,
/// and deleted) and what is wrong with it, said without quoting the object (it may be Secret
/// data).
#[derive(Clone)]
pub struct Malformed {
    pub metadata: Box<ObjectMeta>,
    pub reason: String,
}

/// Code to run for every kind: see [`for_each_kind`].
pub trait KindVisitor {
    fn visit<K: Kind>(&mut self);
}

/// Visits every kind ostium reads: the one list of them. IngressClasses and Services come before
/// the Ingresses that name them, so an Ingress is judged against them when a snapshot is applied.
pub fn for_each_kind(visitor: &mut impl KindVisitor) {
    visitor.visit::<IngressClass>();
    visitor.visit::<Service>();
    visitor.visit::<EndpointSlice>();
    visitor.visit::<Endpoints>();
    visitor.visit::<Secret>();
    visitor.visit::<ConfigMap>();
    visitor.visit::<Ingress>();
}

/// Visits the kind `kind` only: for code that holds a kind as a value.
pub fn visit_kind(kind: ObjectKind, visitor: &mut impl KindVisitor) {
    struct Only<'a, V> {
        kind: ObjectKind,
        visitor: &'a mut V,
    }
    impl<V: KindVisitor> KindVisitor for Only<'_, V> {
        fn visit<K: Kind>(&mut self) {
            if K::OBJECT_KIND == self.kind {
                self.visitor.visit::<K>();
            }
        }
    }
    for_each_kind(&mut Only { kind, visitor });
}

/// Puts a namespaced object without a namespace in `default` and completes it as the API server
/// stores it ([`Kind::normalize`]).
pub(crate) fn normalize<K: Kind>(object: &mut K) {
    if K::NAMESPACED {
        object.metadata_mut().namespace.get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned());
    }
    Kind::normalize(object);
    object.compact();
}

// === impl Options ===

impl Options {
    /// The objects the flags name (`--default-backend-service`, `--default-ssl-certificate`,
    /// `--configmap`, `--tcp-services-configmap`, `--udp-services-configmap`):
    /// they matter for as long as the process runs.
    pub fn references(&self) -> Vec<Reference> {
        let services = self.default_backend_service.iter().map(|s| Reference::new(ObjectKind::Service, s));
        let secrets = self.default_ssl_certificate.iter().map(|s| Reference::new(ObjectKind::Secret, s));
        let config_maps = [&self.configmap, &self.tcp_services_configmap, &self.udp_services_configmap]
            .into_iter()
            .flatten()
            .map(|c| Reference::new(ObjectKind::ConfigMap, c));
        services.chain(secrets).chain(config_maps).collect()
    }
}

// === impl Reference ===

impl Reference {
    pub fn new(kind: ObjectKind, key: &NamespacedName) -> Self {
        Self { kind, key: key.clone() }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.key)
    }
}

// === impl Malformed ===

/// Never prints the metadata: its annotations may hold a copy of the whole object.
impl fmt::Debug for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        f.debug_struct("Malformed").field("name", &name).field("reason", &self.reason).finish()
    }
}

/// The kinds of value serde names in "invalid type" and "invalid value" errors, with how it
/// quotes the value found: a string in Rust's debug form, a number, boolean or character
/// between backticks, other kinds not at all.
const VALUE_KINDS: [(&str, Quoted); 16] = [
    ("string", Quoted::Debug),
    ("integer", Quoted::Backticks),
    ("floating point", Quoted::Backticks),
    ("boolean", Quoted::Backticks),
    ("character", Quoted::Backticks),
    ("byte array", Quoted::Not),
    ("unit value", Quoted::Not),
    ("Option value", Quoted::Not),
    ("newtype struct", Quoted::Not),
    ("sequence", Quoted::Not),
    ("map", Quoted::Not),
    ("enum", Quoted::Not),
    ("unit variant", Quoted::Not),
    ("newtype variant", Quoted::Not),
    ("tuple variant", Quoted::Not),
    ("struct variant", Quoted::Not),
];

#[derive(Clone, Copy)]
enum Quoted {
    Debug,
    Backticks,
    Not,
}

/// A document that does not have its kind's shape, described without the offending value: serde
/// quotes it (`invalid type: string "…", expected a map`), and it may be Secret data. Kept: the
/// kind of value found, what was expected, and the names of missing or repeated fields, all of
/// which come from the type, not the document.
///
/// The message may start with the path of the field (map keys of the document) and end with a
/// position, and the quoted value may itself look like a message; so the message is read at
/// each place a serde error could start, and only one read to its end by serde's own grammar
/// counts. Anything else (a custom message from a field's own parser, such as a base64 error,
/// may hold input) becomes "invalid value".
pub(crate) fn shape_error(message: &str) -> String {
    let message = without_position(message);
    let starts = (0..message.len()).filter(|&i| message.is_char_boundary(i));
    starts.filter_map(|i| serde_error(&message[i..])).next().unwrap_or_else(|| "invalid value".to_owned())
}

/// A serde error message, whole, reduced to what comes from the type.
fn serde_error(message: &str) -> Option<String> {
    for kind in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(kind) else { continue };
        let (found, quoted) = VALUE_KINDS.iter().find(|(found, _)| rest.starts_with(found))?;
        let rest = skip_quoted(&rest[found.len()..], *quoted)?;
        let expected = rest.strip_prefix(", expected ")?;
        // What a type expects never holds a double quote; a value's debug form always does.
        if expected.is_empty() || expected.contains('"') {
            return None;
        }
        return Some(format!("{}: {found}, expected {expected}", &kind[..kind.len() - 2]));
    }
    for kind in ["missing field `", "duplicate field `"] {
        let Some(field) = message.strip_prefix(kind).and_then(|rest| rest.strip_suffix('`')) else {
            continue;
        };
        if !field.is_empty() && field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Some(format!("{kind}{field}`"));
        }
    }
    // These quote the input's name for the variant or field: only their kind is kept.
    ["unknown variant `", "unknown field `", "invalid length "]
        .into_iter()
        .find(|kind| message.starts_with(kind))
        .map(|kind| kind.trim_end_matches([' ', '`']).to_owned())
}

/// The rest of `text` after the quoted value it starts with.
fn skip_quoted(text: &str, quoted: Quoted) -> Option<&str> {
    match quoted {
        Quoted::Not => Some(text),
        Quoted::Backticks => {
            let inner = text.strip_prefix(" `")?;
            let end = inner.find('`')?;
            Some(&inner[end + 1..])
        }
        Quoted::Debug => {
            let inner = text.strip_prefix(" \"")?;
            let mut escaped = false;
            for (i, c) in inner.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => return Some(&inner[i + 1..]),
                    _ => {}
                }
            }
            None
        }
    }
}

/// The message without the position serde_norway ends it with, " at line L column C".
fn without_position(message: &str) -> &str {
    let Some(at) = message.rfind(" at line ") else { return message };
    let mut words = message[at + " at line ".len()..].split(' ');
    let number =
        |word: Option<&str>| word.is_some_and(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()));
    let exact = number(words.next())
        && words.next() == Some("column")
        && number(words.next())
        && words.next().is_none();
    if exact { &message[..at] } else { message }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn malformed_objects_keep_their_metadata_and_are_not_quoted() {
        let value = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "tls", "namespace": "default", "managedFields": [{"manager": "kubectl"}]},
            "data": ["-----BEGIN EC PRIVATE KEY----- SECRETMARKER"],
        });
        let malformed = Secret::from_value(value).unwrap_err();
        assert_eq!(malformed.reason, "invalid type: sequence, expected a map");
        assert_eq!(Secret::key_of(&malformed.metadata), NamespacedName::new("default", "tls"));
        assert!(!format!("{malformed:?}").contains("SECRETMARKER"));
    }

    #[test]
    fn objects_are_read_without_managed_fields_and_normalized() {
        let annotations = json!({LAST_APPLIED_ANNOTATION: "{\"data\": {\"auth\": \"...\"}}", "team": "a"});
        let value = json!({
            "metadata": {"name": "s", "managedFields": [{"manager": "kubectl"}], "annotations": annotations},
            "stringData": {"auth": "user:hash"},
        });
        let secret = Secret::from_value(value).unwrap();
        assert!(secret.metadata.managed_fields.is_none());
        let kept: Vec<&String> = secret.metadata.annotations.as_ref().unwrap().keys().collect();
        assert_eq!(kept, ["team"], "kubectl's last applied copy is dropped, other annotations kept");
        assert_eq!(secret.key(), NamespacedName::new("default", "s"));
        assert_eq!(secret.data.unwrap()["auth"].0, b"user:hash");
    }

    #[test]
    fn cluster_scoped_kinds_are_keyed_by_name() {
        let class =
            IngressClass::from_value(json!({"metadata": {"name": "ostium", "namespace": "x"}})).unwrap();
        assert_eq!(class.key(), NamespacedName::new("", "ostium"));
    }

    #[test]
    fn every_kind_is_visited_once() {
        struct Kinds(Vec<ObjectKind>);
        impl KindVisitor for Kinds {
            fn visit<K: Kind>(&mut self) {
                self.0.push(K::OBJECT_KIND);
            }
        }
        let mut kinds = Kinds(Vec::new());
        for_each_kind(&mut kinds);
        let mut sorted = kinds.0.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), kinds.0.len());
        assert_eq!(kinds.0.last(), Some(&ObjectKind::Ingress), "Ingresses are judged last");
    }
}
