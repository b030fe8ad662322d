//! The snapshot of Kubernetes objects that translation reads, with the indexes it keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, ObjectReference, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use ostium_model::{EndpointKey, NamespacedName, Transport};
use serde::de::value::MapDeserializer;
use serde_json::Value;

use crate::class::ClassList;
use crate::kind::{self, Kind, KindVisitor, for_each_kind, visit_kind};
use crate::manifests::{self, DocumentError, ManifestError, parse_manifests};
use crate::{ObjectKind, ObjectRef, backend};

/// Every object translation may look at, keyed by identity (see [`Kind::key`]), with indexes kept
/// in step as objects come and go. Values are `Arc`s, so a snapshot is cheap to take from a
/// cache.
#[derive(Clone, Default)]
pub struct Objects {
    pub ingresses: ObjectMap<Ingress>,
    /// Cluster-scoped: keyed by name, with an empty namespace.
    pub ingress_classes: ObjectMap<IngressClass>,
    pub services: ObjectMap<Service>,
    pub endpoint_slices: ObjectMap<EndpointSlice>,
    pub endpoints: ObjectMap<Endpoints>,
    pub secrets: ObjectMap<Secret>,
    pub config_maps: ObjectMap<ConfigMap>,
    /// The EndpointSlices of each Service, by their `kubernetes.io/service-name` label.
    slices_by_service: Arc<BTreeMap<NamespacedName, BTreeSet<NamespacedName>>>,
    /// The IngressClasses, summed up once per change to one.
    classes: Arc<ClassList>,
}

/// The objects of one kind by key, shared. Read like a `BTreeMap`; changed only through
/// [`Objects`], which keeps its indexes in step.
pub struct ObjectMap<K>(BTreeMap<NamespacedName, Arc<K>>);

/// One object of a kind ostium reads, whatever the kind: a manifest document.
pub struct Object(Box<dyn AnyObject>);

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

    /// Adds an object, normalized ([`Kind::normalize`]), replacing one of the same kind and key.
    pub fn insert(&mut self, object: impl Into<Object>) {
        object.into().0.insert_into(self);
    }

    /// Puts an object, already normalized, under its key; returns the one it replaces.
    pub fn put<K: Kind>(&mut self, key: NamespacedName, object: Arc<K>) -> Option<Arc<K>> {
        let key = K::map(self).with_shared_namespace(key);
        let old = K::map_mut(self).0.insert(key.clone(), object.clone());
        K::reindex(self, &key, old.as_deref(), Some(&*object));
        old
    }

    /// Removes an object; returns it.
    pub fn remove<K: Kind>(&mut self, key: &NamespacedName) -> Option<Arc<K>> {
        let old = K::map_mut(self).0.remove(key)?;
        K::reindex(self, key, Some(&*old), None);
        Some(old)
    }

    /// Adds every object of `other` (sharing them), replacing objects of the same identity.
    pub fn extend(&mut self, other: &Objects) {
        struct Extend<'a> {
            into: &'a mut Objects,
            from: &'a Objects,
        }
        impl KindVisitor for Extend<'_> {
            fn visit<K: Kind>(&mut self) {
                for (key, object) in K::map(self.from) {
                    self.into.put(key.clone(), object.clone());
                }
            }
        }
        for_each_kind(&mut Extend { into: self, from: other });
    }

    /// The EndpointSlices of a Service.
    pub fn slices_of<'a>(&'a self, service: &NamespacedName) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        let keys = self.slices_by_service.get(service).into_iter().flatten();
        keys.filter_map(|key| self.endpoint_slices.get(key).map(|s| &**s))
    }

    /// The current addresses of an endpoint set, from the Service and its EndpointSlices or else
    /// its Endpoints object: what a full translation would give, for moving endpoints without
    /// one. `None` when the Service or its port is gone, which only a new translation can answer.
    pub fn endpoint_addrs(&self, key: &EndpointKey) -> Option<Vec<SocketAddr>> {
        let spec = self.services.get(&key.service)?.spec.as_ref()?;
        // The port of that number and protocol; HTTP backends take a port by number alone.
        let ports = || spec.ports.iter().flatten().filter(|p| p.port == i32::from(key.port));
        let port = ports()
            .find(|p| crate::stream::transport(p) == key.protocol)
            .or_else(|| ports().next().filter(|_| key.protocol == Transport::Tcp))?;
        let slices: Vec<&EndpointSlice> = self.slices_of(&key.service).collect();
        let slices = (!slices.is_empty()).then_some(&slices[..]);
        let endpoints = self.endpoints.get(&key.service).map(|e| &**e);
        Some(backend::addrs(slices, endpoints, port, key.protocol))
    }

    /// The metadata of an object named by kind and key.
    pub fn metadata<'a>(&'a self, kind: ObjectKind, key: &NamespacedName) -> Option<&'a ObjectMeta> {
        struct Find<'a, 'k> {
            objects: &'a Objects,
            key: &'k NamespacedName,
            found: Option<&'a ObjectMeta>,
        }
        impl<'a> KindVisitor for Find<'a, '_> {
            fn visit<K: Kind>(&mut self) {
                self.found = K::map(self.objects).get(self.key).map(|o| o.metadata());
            }
        }
        let mut find = Find { objects: self, key, found: None };
        visit_kind(kind, &mut find);
        find.found
    }

    /// A Kubernetes reference to an object (for Events about it), with its uid when it is here.
    pub fn object_reference(&self, object: &ObjectRef) -> ObjectReference {
        struct Describe(Option<(&'static str, &'static str)>);
        impl KindVisitor for Describe {
            fn visit<K: Kind>(&mut self) {
                self.0 = Some((K::API_VERSION, <K as Resource>::KIND));
            }
        }
        let mut describe = Describe(None);
        visit_kind(object.kind, &mut describe);
        let key = NamespacedName::new(object.namespace.as_deref().unwrap_or(""), &object.name);
        ObjectReference {
            api_version: describe.0.map(|(api_version, _)| api_version.to_owned()),
            kind: describe.0.map(|(_, kind)| kind.to_owned()),
            namespace: object.namespace.clone(),
            name: Some(object.name.clone()),
            uid: self.metadata(object.kind, &key).and_then(|m| m.uid.clone()),
            ..ObjectReference::default()
        }
    }

    /// Keeps an object without its payload ([`Kind::without_payload`]); `false` when it is not
    /// here or its kind has none.
    pub fn drop_payload(&mut self, kind: ObjectKind, key: &NamespacedName) -> bool {
        struct Strip<'a> {
            objects: &'a mut Objects,
            key: &'a NamespacedName,
            dropped: bool,
        }
        impl KindVisitor for Strip<'_> {
            fn visit<K: Kind>(&mut self) {
                let Some(held) = K::map(self.objects).get(self.key) else { return };
                let Some(stripped) = held.without_payload() else { return };
                self.objects.put(self.key.clone(), Arc::new(stripped));
                self.dropped = true;
            }
        }
        let mut strip = Strip { objects: self, key, dropped: false };
        visit_kind(kind, &mut strip);
        strip.dropped
    }

    /// How many objects of each kind, for logs.
    pub fn counts(&self) -> String {
        struct Counts<'a>(&'a Objects, Vec<String>);
        impl KindVisitor for Counts<'_> {
            fn visit<K: Kind>(&mut self) {
                self.1.push(format!("{} {}", K::map(self.0).len(), K::URL_PATH_SEGMENT));
            }
        }
        let mut counts = Counts(self, Vec::new());
        for_each_kind(&mut counts);
        counts.1.join(", ")
    }

    pub(crate) fn classes(&self) -> &ClassList {
        &self.classes
    }

    pub(crate) fn index_classes(&mut self) {
        self.classes = Arc::new(ClassList::new(&self.ingress_classes));
    }

    /// Moves a slice from the Service it belonged to to the one it belongs to now.
    pub(crate) fn index_slice(
        &mut self,
        key: &NamespacedName,
        old: Option<NamespacedName>,
        new: Option<NamespacedName>,
    ) {
        if old == new {
            return;
        }
        let index = Arc::make_mut(&mut self.slices_by_service);
        if let Some(old) = old
            && let Some(slices) = index.get_mut(&old)
        {
            slices.remove(key);
            if slices.is_empty() {
                index.remove(&old);
            }
        }
        if let Some(new) = new {
            index.entry(new).or_default().insert(key.clone());
        }
    }

    /// Adds an object of a known kind, normalized.
    fn insert_kind<K: Kind>(&mut self, mut object: K) {
        kind::normalize(&mut object);
        self.put(object.key(), Arc::new(object));
    }
}

/// Never prints Secret data.
impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.counts())
    }
}

// === impl ObjectMap ===

impl<K> ObjectMap<K> {
    /// `key` with its namespace as the map already holds it, so that the objects of a namespace
    /// share one copy of its name. A key whose namespace is shared already is taken as it is:
    /// it was made once and handed on (a snapshot's keys).
    pub fn with_shared_namespace(&self, key: NamespacedName) -> NamespacedName {
        if Arc::strong_count(&key.namespace) > 1 {
            return key;
        }
        // In key order, a namespace's objects are together: the key's neighbours hold its
        // namespace if any object does.
        let before = self.0.range(..&key).next_back().map(|(k, _)| k);
        let after = self.0.range(&key..).next().map(|(k, _)| k);
        match [before, after].into_iter().flatten().find(|k| k.namespace == key.namespace) {
            Some(held) => NamespacedName::new(held.namespace.clone(), key.name),
            None => key,
        }
    }
}

impl<K> Deref for ObjectMap<K> {
    type Target = BTreeMap<NamespacedName, Arc<K>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a, K> IntoIterator for &'a ObjectMap<K> {
    type Item = (&'a NamespacedName, &'a Arc<K>);
    type IntoIter = std::collections::btree_map::Iter<'a, NamespacedName, Arc<K>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<K> Default for ObjectMap<K> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<K> Clone for ObjectMap<K> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Never prints the objects (Secret data).
impl<K> fmt::Debug for ObjectMap<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} objects", self.0.len())
    }
}

// === impl Object ===

/// What an [`Object`] can do without its kind being known.
trait AnyObject: Send + Sync {
    fn kind(&self) -> ObjectKind;
    fn metadata(&self) -> &ObjectMeta;
    fn insert_into(self: Box<Self>, objects: &mut Objects);
    fn clone_box(&self) -> Box<dyn AnyObject>;
}

impl<K: Kind> AnyObject for K {
    fn kind(&self) -> ObjectKind {
        K::OBJECT_KIND
    }

    fn metadata(&self) -> &ObjectMeta {
        Metadata::metadata(self)
    }

    fn insert_into(self: Box<Self>, objects: &mut Objects) {
        objects.insert_kind(*self);
    }

    fn clone_box(&self) -> Box<dyn AnyObject> {
        Box::new(self.clone())
    }
}

impl Object {
    pub fn new<K: Kind>(object: K) -> Self {
        Self(Box::new(object))
    }

    /// One object from its JSON form (`apiVersion` and `kind` included), checked as
    /// [`parse_manifests`] checks a document.
    pub fn from_value(value: Value) -> Result<Self, DocumentError> {
        let mut out = Vec::new();
        let read = match value {
            // Metadata first, so that a malformed object is still named (a JSON object's keys
            // come in alphabetical order).
            Value::Object(fields) => {
                let mut fields: Vec<(String, Value)> = fields.into_iter().collect();
                fields.sort_by_key(|(key, _)| !["apiVersion", "kind", "metadata"].contains(&key.as_str()));
                let document = MapDeserializer::<_, serde_json::Error>::new(fields.into_iter());
                manifests::read_document(document, 1, &mut out)
            }
            other => manifests::read_document(other, 1, &mut out),
        };
        read.map_err(|e| e.error)?;
        match (out.pop(), out.is_empty()) {
            (Some(object), true) => Ok(object),
            _ => Err(DocumentError::NotOneObject),
        }
    }

    pub fn kind(&self) -> ObjectKind {
        self.0.kind()
    }
}

impl<K: Kind> From<K> for Object {
    fn from(object: K) -> Self {
        Self::new(object)
    }
}

impl Clone for Object {
    fn clone(&self) -> Self {
        Self(self.0.clone_box())
    }
}

/// Never prints Secret data.
impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meta = self.0.metadata();
        let (namespace, name) = (meta.namespace.as_deref(), meta.name.as_deref());
        write!(f, "{:?} {}/{}", self.kind(), namespace.unwrap_or(""), name.unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_objects_of_a_namespace_share_its_name() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: b, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: c, namespace: other}
"#;
        let mut objects = Objects::from_yaml(yaml).unwrap();
        let keys: Vec<_> = objects.services.keys().collect();
        let [c, a, b] = keys[..] else { panic!("three keys: {keys:?}") };
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace), "{a} and {b}");
        assert_eq!(&*c.namespace, "other");
        let shop = a.namespace.clone();
        let service = objects.services[a].clone();

        // A key made apart (as the cluster source makes them), between two namespaces.
        let key = objects.services.with_shared_namespace(NamespacedName::new("shop", "0"));
        assert!(Arc::ptr_eq(&key.namespace, &shop));
        objects.put(NamespacedName::new("shop", "0"), service);
        let keys: Vec<_> = objects.services.keys().collect();
        assert!(keys.iter().filter(|k| &*k.namespace == "shop").all(|k| Arc::ptr_eq(&k.namespace, &shop)));
    }

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
        assert!(err.error.to_string().contains("invalid YAML"), "{err}");
    }

    #[test]
    fn malformed_known_kind_names_document_and_object() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: broken}\nspec: {rules: [{http: {paths: \"not a list\"}}]}\n";
        let err = Objects::from_yaml(yaml).unwrap_err();
        assert_eq!(err.document, 2);
        assert!(
            err.error.to_string().contains("Ingress `broken`")
                && err.error.to_string().contains("invalid type"),
            "{err}"
        );
    }

    #[test]
    fn removed_api_versions_are_refused() {
        let yaml = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\n";
        let err = Objects::from_yaml(yaml).unwrap_err();
        assert!(err.error.to_string().contains("unsupported apiVersion"), "{err}");
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
        assert_eq!(err.error.to_string(), "v1 Secret `tls`: invalid type: string, expected a map");
    }

    #[test]
    fn secret_values_that_are_not_base64_are_not_quoted() {
        let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\ndata:\n  tls.key: \"-----BEGIN EC PRIVATE KEY----- SECRETMARKER\"\n";
        let err = Objects::from_yaml(yaml).unwrap_err();
        assert_redacted(&err);
        assert_eq!(err.error.to_string(), "v1 Secret `tls`: invalid value");
    }

    #[test]
    fn yaml_syntax_errors_never_quote_the_document() {
        for yaml in [
            "apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\nstringData: {tls.key: \"-----BEGIN EC PRIVATE KEY----- SECRETMARKER\"\n",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\nstringData:\n  tls.key: -----BEGIN EC PRIVATE KEY----- SECRETMARKER\n   bad: [indent\n",
            "apiVersion: v1\nkind: Secret\nstringData:\n  tls.key: \"SECRETMARKER\\q\"\n",
        ] {
            let err = Objects::from_yaml(yaml).unwrap_err();
            assert_redacted(&err);
            assert_eq!(err.document, 0, "{err}");
            assert!(err.error.to_string().starts_with("invalid YAML at line "), "{err}");
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
        assert!(!format!("{err} {err:?}").contains("SECRETMARKER"), "{err}");
        assert_eq!(err.to_string(), "v1 Secret `tls`: invalid type: sequence, expected a map");
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
