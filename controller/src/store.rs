//! The objects the source has reported, and what each change means for the table.
//!
//! Every change is judged as it arrives, cheaply, so that the rebuild loop knows whether it needs
//! a new table, only new endpoints for some Services, or nothing at all:
//! - an Ingress counts when its spec, annotations or age changed and it is (or was) ours; our own
//!   status writes change none of these;
//! - a Service or a Secret counts when some Ingress (or a flag) refers to it;
//! - an EndpointSlice or Endpoints object only moves its Service's endpoints;
//! - IngressClasses always count.
//!
//! Secrets no Ingress refers to are kept without their data, so memory does not grow with
//! unrelated Secrets' payloads. When one becomes referenced, its data must be fetched: the store
//! lists those in [`Store::take_secret_fetches`] and counts as not synced until they arrive.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ostium_model::NamespacedName;
use ostium_translate::{Object, ObjectKind, ObjectRef, Objects, Options, References, SERVICE_NAME_LABEL};

/// One change reported by a source.
#[derive(Debug)]
pub enum Update {
    /// An object added or changed.
    Apply(Box<Object>),
    /// An object removed.
    Delete(ObjectKind, NamespacedName),
    /// The complete list of one kind, from a watcher's (re)list: objects not in it are gone.
    Listed(ObjectKind, Vec<Object>),
    /// A Secret's data, fetched because an Ingress came to refer to it (`None`: it is gone).
    Fetched(NamespacedName, Option<Box<Secret>>),
    /// A complete snapshot of every kind (standalone manifests).
    Snapshot(Objects),
}

/// What the changes so far ask of the rebuild loop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub rebuild: bool,
    /// Services whose endpoints changed.
    pub endpoints: BTreeSet<NamespacedName>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        !self.rebuild && self.endpoints.is_empty()
    }
}

#[derive(Debug)]
pub struct Store {
    objects: Objects,
    options: Options,
    /// Kinds whose first complete list has not arrived yet.
    unlisted: BTreeSet<ObjectKind>,
    /// Drop the data of Secrets nobody refers to (cluster mode; manifests are small and local).
    strip_unreferenced_secrets: bool,
    /// What each Ingress refers to, and how many Ingresses refer to each object.
    references: HashMap<NamespacedName, References>,
    service_refs: HashMap<NamespacedName, u32>,
    secret_refs: HashMap<NamespacedName, u32>,
    /// Secrets held without their data.
    stripped: BTreeSet<NamespacedName>,
    /// Secrets whose data is wanted: to hand out, and handed out but not arrived.
    to_fetch: BTreeSet<NamespacedName>,
    fetching: BTreeSet<NamespacedName>,
    slices_by_service: HashMap<NamespacedName, BTreeSet<NamespacedName>>,
    /// The Ingresses the last table serves.
    served: BTreeSet<NamespacedName>,
    pending: Pending,
}

impl Store {
    /// A store that is synced once each of `kinds` has been listed (or a snapshot arrived).
    pub fn new(options: Options, kinds: &[ObjectKind], strip_unreferenced_secrets: bool) -> Self {
        let mut store = Self {
            objects: Objects::default(),
            unlisted: kinds.iter().copied().collect(),
            strip_unreferenced_secrets,
            references: HashMap::new(),
            service_refs: HashMap::new(),
            secret_refs: HashMap::new(),
            stripped: BTreeSet::new(),
            to_fetch: BTreeSet::new(),
            fetching: BTreeSet::new(),
            slices_by_service: HashMap::new(),
            served: BTreeSet::new(),
            // The first table is built as soon as the store is synced, whatever it holds.
            pending: Pending { rebuild: true, endpoints: BTreeSet::new() },
            options,
        };
        // The flags refer to objects too.
        let flags = References {
            services: store.options.default_backend_service.iter().cloned().collect(),
            secrets: store.options.default_ssl_certificate.iter().cloned().collect(),
        };
        store.count(&flags, 1);
        store
    }

    /// Every kind listed, every wanted Secret fetched: a table built now is complete.
    pub fn is_synced(&self) -> bool {
        self.unlisted.is_empty() && self.to_fetch.is_empty() && self.fetching.is_empty()
    }

    /// The work the changes so far ask for, once the store is synced.
    pub fn take_pending(&mut self) -> Option<Pending> {
        (self.is_synced() && !self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }

    /// Secrets whose data must be fetched (and reported back as [`Update::Fetched`]).
    pub fn take_secret_fetches(&mut self) -> Vec<NamespacedName> {
        let wanted = std::mem::take(&mut self.to_fetch);
        self.fetching.extend(wanted.iter().cloned());
        wanted.into_iter().collect()
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// A snapshot to translate: sharing every object, copying only the maps.
    pub fn snapshot(&self) -> Objects {
        self.objects.clone()
    }

    /// The EndpointSlices of a Service.
    pub fn slices_of<'a>(&'a self, service: &NamespacedName) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        let keys = self.slices_by_service.get(service).into_iter().flatten();
        keys.filter_map(|key| self.objects.endpoint_slices.get(key).map(|s| &**s))
    }

    /// The uid of an object, for Events about it.
    pub fn uid(&self, object: &ObjectRef) -> Option<String> {
        let key = NamespacedName::new(object.namespace.as_deref().unwrap_or(""), &object.name);
        let o = &self.objects;
        match object.kind {
            ObjectKind::Ingress => o.ingresses.get(&key)?.metadata.uid.clone(),
            ObjectKind::IngressClass => o.ingress_classes.get(&object.name)?.metadata.uid.clone(),
            ObjectKind::Service => o.services.get(&key)?.metadata.uid.clone(),
            ObjectKind::EndpointSlice => o.endpoint_slices.get(&key)?.metadata.uid.clone(),
            ObjectKind::Endpoints => o.endpoints.get(&key)?.metadata.uid.clone(),
            ObjectKind::Secret => o.secrets.get(&key)?.metadata.uid.clone(),
        }
    }

    /// The last table was built from the current objects and serves these Ingresses.
    pub fn built(&mut self, served: &[NamespacedName]) {
        self.served = served.iter().cloned().collect();
    }

    /// Asks for a rebuild (when moving endpoints in place was not enough).
    pub fn request_rebuild(&mut self) {
        self.pending.rebuild = true;
    }

    pub fn update(&mut self, update: Update) {
        match update {
            Update::Apply(object) => {
                let (key, entry) = entry(*object);
                self.put(key, entry);
            }
            Update::Delete(kind, key) => self.delete(kind, &key),
            Update::Listed(kind, objects) => {
                self.replace_kind(kind, objects);
                self.unlisted.remove(&kind);
            }
            Update::Fetched(key, secret) => {
                self.fetching.remove(&key);
                match secret {
                    Some(secret) if self.secret_refs.contains_key(&key) => {
                        self.stripped.remove(&key);
                        self.put_secret(key, Arc::new(*secret));
                    }
                    Some(_) => {}
                    None => self.delete(ObjectKind::Secret, &key),
                }
            }
            Update::Snapshot(objects) => {
                let Objects { ingresses, ingress_classes, services, endpoint_slices, endpoints, secrets } =
                    objects;
                // Classes and Services first, so Ingress relevance is judged against them.
                let classes = ingress_classes.into_iter().map(|(name, o)| (NamespacedName::new("", name), o));
                self.replace(ObjectKind::IngressClass, classes.map(|(k, o)| (k, Entry::IngressClass(o))));
                self.replace(ObjectKind::Service, services.into_iter().map(|(k, o)| (k, Entry::Service(o))));
                self.replace(ObjectKind::Secret, secrets.into_iter().map(|(k, o)| (k, Entry::Secret(o))));
                let slices = endpoint_slices.into_iter().map(|(k, o)| (k, Entry::EndpointSlice(o)));
                self.replace(ObjectKind::EndpointSlice, slices);
                self.replace(
                    ObjectKind::Endpoints,
                    endpoints.into_iter().map(|(k, o)| (k, Entry::Endpoints(o))),
                );
                self.replace(ObjectKind::Ingress, ingresses.into_iter().map(|(k, o)| (k, Entry::Ingress(o))));
                self.unlisted.clear();
            }
        }
    }

    fn replace_kind(&mut self, kind: ObjectKind, objects: Vec<Object>) {
        self.replace(kind, objects.into_iter().map(entry));
    }

    /// Makes the objects of `kind` exactly `entries`, judging each difference as a change.
    fn replace(&mut self, kind: ObjectKind, entries: impl Iterator<Item = (NamespacedName, Entry)>) {
        let mut gone = self.keys(kind);
        for (key, entry) in entries {
            if entry.kind() != kind {
                continue;
            }
            gone.remove(&key);
            self.put(key, entry);
        }
        for key in gone {
            self.delete(kind, &key);
        }
    }

    fn keys(&self, kind: ObjectKind) -> BTreeSet<NamespacedName> {
        let o = &self.objects;
        match kind {
            ObjectKind::Ingress => o.ingresses.keys().cloned().collect(),
            ObjectKind::IngressClass => {
                o.ingress_classes.keys().map(|n| NamespacedName::new("", n)).collect()
            }
            ObjectKind::Service => o.services.keys().cloned().collect(),
            ObjectKind::EndpointSlice => o.endpoint_slices.keys().cloned().collect(),
            ObjectKind::Endpoints => o.endpoints.keys().cloned().collect(),
            ObjectKind::Secret => o.secrets.keys().cloned().collect(),
        }
    }

    fn put(&mut self, key: NamespacedName, entry: Entry) {
        match entry {
            Entry::Ingress(new) => {
                let old = self.objects.ingresses.insert(key.clone(), new.clone());
                let changed = old.as_ref().is_none_or(|old| {
                    !Arc::ptr_eq(old, &new)
                        && (old.spec != new.spec
                            || old.metadata.annotations != new.metadata.annotations
                            || old.metadata.creation_timestamp != new.metadata.creation_timestamp)
                });
                if changed {
                    let refs = ostium_translate::references(&key, &new, &self.options);
                    self.set_references(&key, Some(refs));
                    if self.served.contains(&key)
                        || ostium_translate::is_ours(&self.objects, &self.options, &key, &new)
                    {
                        self.pending.rebuild = true;
                    }
                }
            }
            Entry::IngressClass(new) => {
                let name = key.name.clone();
                let old = self.objects.ingress_classes.insert(name, new.clone());
                if old.is_none_or(|old| {
                    !Arc::ptr_eq(&old, &new)
                        && (old.spec != new.spec || old.metadata.annotations != new.metadata.annotations)
                }) {
                    self.pending.rebuild = true;
                }
            }
            Entry::Service(new) => {
                let old = self.objects.services.insert(key.clone(), new.clone());
                if old.is_none_or(|old| !Arc::ptr_eq(&old, &new) && old.spec != new.spec)
                    && self.service_refs.contains_key(&key)
                {
                    self.pending.rebuild = true;
                }
            }
            Entry::EndpointSlice(new) => {
                let old = self.objects.endpoint_slices.insert(key.clone(), new.clone());
                if let Some(old) = &old {
                    self.unindex_slice(&key, old);
                }
                if let Some(service) = slice_service(&key, &new) {
                    self.slices_by_service.entry(service.clone()).or_default().insert(key.clone());
                    if old.as_ref().is_none_or(|old| {
                        !Arc::ptr_eq(old, &new)
                            && (old.endpoints != new.endpoints
                                || old.ports != new.ports
                                || old.address_type != new.address_type)
                    }) {
                        self.endpoints_changed(service);
                    }
                }
            }
            Entry::Endpoints(new) => {
                let old = self.objects.endpoints.insert(key.clone(), new.clone());
                if old.is_none_or(|old| !Arc::ptr_eq(&old, &new) && old.subsets != new.subsets) {
                    self.endpoints_changed(key);
                }
            }
            Entry::Secret(new) => {
                if self.strip_unreferenced_secrets && !self.secret_refs.contains_key(&key) {
                    self.stripped.insert(key.clone());
                    self.objects.secrets.insert(key, Arc::new(without_data(&new)));
                } else {
                    self.stripped.remove(&key);
                    self.put_secret(key, new);
                }
            }
        }
    }

    fn put_secret(&mut self, key: NamespacedName, new: Arc<Secret>) {
        let old = self.objects.secrets.insert(key.clone(), new.clone());
        if old.is_none_or(|old| !Arc::ptr_eq(&old, &new) && (old.data != new.data || old.type_ != new.type_))
            && self.secret_refs.contains_key(&key)
        {
            self.pending.rebuild = true;
        }
    }

    fn delete(&mut self, kind: ObjectKind, key: &NamespacedName) {
        match kind {
            ObjectKind::Ingress => {
                if self.objects.ingresses.remove(key).is_some() {
                    self.set_references(key, None);
                    if self.served.contains(key) {
                        self.pending.rebuild = true;
                    }
                }
            }
            ObjectKind::IngressClass => {
                if self.objects.ingress_classes.remove(&key.name).is_some() {
                    self.pending.rebuild = true;
                }
            }
            ObjectKind::Service => {
                if self.objects.services.remove(key).is_some() && self.service_refs.contains_key(key) {
                    self.pending.rebuild = true;
                }
            }
            ObjectKind::EndpointSlice => {
                if let Some(old) = self.objects.endpoint_slices.remove(key)
                    && let Some(service) = self.unindex_slice(key, &old)
                {
                    self.endpoints_changed(service);
                }
            }
            ObjectKind::Endpoints => {
                if self.objects.endpoints.remove(key).is_some() {
                    self.endpoints_changed(key.clone());
                }
            }
            ObjectKind::Secret => {
                self.stripped.remove(key);
                self.to_fetch.remove(key);
                if self.objects.secrets.remove(key).is_some() && self.secret_refs.contains_key(key) {
                    self.pending.rebuild = true;
                }
            }
        }
    }

    fn endpoints_changed(&mut self, service: NamespacedName) {
        if self.service_refs.contains_key(&service) {
            self.pending.endpoints.insert(service);
        }
    }

    fn unindex_slice(&mut self, key: &NamespacedName, slice: &EndpointSlice) -> Option<NamespacedName> {
        let service = slice_service(key, slice)?;
        if let Some(slices) = self.slices_by_service.get_mut(&service) {
            slices.remove(key);
            if slices.is_empty() {
                self.slices_by_service.remove(&service);
            }
        }
        Some(service)
    }

    /// Records what an Ingress refers to now (`None`: it is gone).
    fn set_references(&mut self, ingress: &NamespacedName, refs: Option<References>) {
        let old = match refs {
            Some(refs) => self.references.insert(ingress.clone(), refs),
            None => self.references.remove(ingress),
        };
        if let Some(old) = old {
            self.count(&old, -1);
        }
        if let Some(new) = self.references.get(ingress).cloned() {
            self.count(&new, 1);
        }
    }

    fn count(&mut self, refs: &References, delta: i32) {
        for service in &refs.services {
            adjust(&mut self.service_refs, service, delta);
        }
        for secret in &refs.secrets {
            let before = self.secret_refs.contains_key(secret);
            adjust(&mut self.secret_refs, secret, delta);
            let after = self.secret_refs.contains_key(secret);
            if !before && after && self.stripped.contains(secret) {
                self.to_fetch.insert(secret.clone());
            } else if before && !after && self.strip_unreferenced_secrets {
                self.to_fetch.remove(secret);
                if let Some(held) = self.objects.secrets.get(secret) {
                    let stripped = Arc::new(without_data(held));
                    self.objects.secrets.insert(secret.clone(), stripped);
                    self.stripped.insert(secret.clone());
                }
            }
        }
    }
}

fn adjust(counts: &mut HashMap<NamespacedName, u32>, key: &NamespacedName, delta: i32) {
    let count = counts.entry(key.clone()).or_default();
    *count = count.saturating_add_signed(delta);
    if *count == 0 {
        counts.remove(key);
    }
}

/// The Service an EndpointSlice belongs to, by its label.
fn slice_service(key: &NamespacedName, slice: &EndpointSlice) -> Option<NamespacedName> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(NamespacedName::new(&key.namespace, service))
}

/// A Secret with its metadata only.
fn without_data(secret: &Secret) -> Secret {
    Secret { metadata: secret.metadata.clone(), type_: secret.type_.clone(), ..Secret::default() }
}

/// An object, shared.
enum Entry {
    Ingress(Arc<k8s_openapi::api::networking::v1::Ingress>),
    IngressClass(Arc<k8s_openapi::api::networking::v1::IngressClass>),
    Service(Arc<k8s_openapi::api::core::v1::Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Endpoints(Arc<k8s_openapi::api::core::v1::Endpoints>),
    Secret(Arc<Secret>),
}

impl Entry {
    fn kind(&self) -> ObjectKind {
        match self {
            Self::Ingress(_) => ObjectKind::Ingress,
            Self::IngressClass(_) => ObjectKind::IngressClass,
            Self::Service(_) => ObjectKind::Service,
            Self::EndpointSlice(_) => ObjectKind::EndpointSlice,
            Self::Endpoints(_) => ObjectKind::Endpoints,
            Self::Secret(_) => ObjectKind::Secret,
        }
    }
}

/// An object from a source, shared, with its key (namespaced kinds by namespace and name;
/// IngressClasses by name, namespace empty).
fn entry(mut object: Object) -> (NamespacedName, Entry) {
    let key = object.normalize();
    let entry = match object {
        Object::Ingress(o) => Entry::Ingress(Arc::new(o)),
        Object::IngressClass(o) => Entry::IngressClass(Arc::new(o)),
        Object::Service(o) => Entry::Service(Arc::new(o)),
        Object::EndpointSlice(o) => Entry::EndpointSlice(Arc::new(o)),
        Object::Endpoints(o) => Entry::Endpoints(Arc::new(o)),
        Object::Secret(o) => Entry::Secret(Arc::new(o)),
    };
    (key, entry)
}

#[cfg(test)]
pub(crate) mod tests {
    use ostium_translate::parse_manifests;

    use super::*;

    pub(crate) const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ostium}\nspec: {controller: ostium.dev/ingress-controller}\n";

    pub(crate) fn ingress(name: &str, class: &str, service: &str, extra_metadata: &str) -> Object {
        one(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default{extra_metadata}}}\nspec:\n  ingressClassName: {class}\n  tls: [{{secretName: {name}-tls}}]\n  rules: [{{host: {name}.example.com, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}}}]\n"
        ))
    }

    pub(crate) fn service(name: &str) -> Object {
        one(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n"
        ))
    }

    pub(crate) fn slice(service: &str, ip: &str) -> Object {
        one(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"{ip}\"]}}]\n"
        ))
    }

    pub(crate) fn secret(name: &str, value: &str) -> Object {
        one(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\nstringData: {{tls.crt: {value}, tls.key: {value}}}\n"
        ))
    }

    pub(crate) fn one(yaml: &str) -> Object {
        parse_manifests(yaml).unwrap().pop().unwrap()
    }

    pub(crate) fn options() -> Options {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Options::new(crate::self_signed_certificate(&provider).unwrap(), provider)
    }

    /// A synced store that has built once, serving `served`.
    fn store(objects: Vec<Object>, served: &[&str]) -> Store {
        let mut store = Store::new(options(), &[ObjectKind::Ingress], true);
        for object in objects {
            store.update(Update::Apply(Box::new(object)));
        }
        store.update(Update::Listed(ObjectKind::Ingress, store.listed_ingresses()));
        assert!(store.take_pending().is_some(), "the first build is always pending");
        store.built(&served.iter().map(|n| NamespacedName::new("default", *n)).collect::<Vec<_>>());
        store
    }

    impl Store {
        fn listed_ingresses(&self) -> Vec<Object> {
            self.objects.ingresses.values().map(|i| Object::Ingress((**i).clone())).collect()
        }
    }

    #[test]
    fn not_synced_until_every_kind_is_listed() {
        let mut store = Store::new(options(), &[ObjectKind::Ingress, ObjectKind::Service], false);
        store.update(Update::Apply(Box::new(service("web"))));
        assert!(!store.is_synced());
        store.update(Update::Listed(ObjectKind::Ingress, vec![]));
        assert!(!store.is_synced());
        assert_eq!(store.take_pending(), None, "nothing is built before the lists are in");
        store.update(Update::Listed(ObjectKind::Service, vec![service("web")]));
        assert!(store.is_synced());
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
    }

    #[test]
    fn a_status_only_change_to_an_ingress_asks_for_nothing() {
        let mut store = store(vec![one(CLASS), ingress("a", "ostium", "web", "")], &["a"]);
        let Object::Ingress(mut with_status) = ingress("a", "ostium", "web", "") else { unreachable!() };
        with_status.status =
            serde_json::from_str(r#"{"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}"#).unwrap();
        with_status.metadata.resource_version = Some("2".into());
        store.update(Update::Apply(Box::new(Object::Ingress(with_status))));
        assert_eq!(store.take_pending(), None);

        store.update(Update::Apply(Box::new(ingress("a", "ostium", "web", ", annotations: {x: \"z\"}"))));
        assert!(store.take_pending().is_some_and(|p| p.rebuild), "annotations count");
    }

    #[test]
    fn ingresses_of_other_classes_ask_for_nothing_until_they_become_ours() {
        let mut store = store(vec![one(CLASS)], &[]);
        store.update(Update::Apply(Box::new(ingress("other", "nginx", "web", ""))));
        assert_eq!(store.take_pending(), None);
        store.update(Update::Apply(Box::new(ingress("other", "ostium", "web", ""))));
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
        store.built(&[NamespacedName::new("default", "other")]);
        // Leaving our class must drop its routes.
        store.update(Update::Apply(Box::new(ingress("other", "nginx", "web", ""))));
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
    }

    #[test]
    fn endpoints_of_referenced_services_move_without_a_rebuild() {
        let mut store = store(vec![one(CLASS), ingress("a", "ostium", "web", ""), service("web")], &["a"]);
        store.update(Update::Apply(Box::new(slice("web", "10.0.0.1"))));
        store.update(Update::Apply(Box::new(slice("unrelated", "10.0.0.2"))));
        let pending = store.take_pending().unwrap();
        assert!(!pending.rebuild);
        assert_eq!(pending.endpoints, BTreeSet::from([NamespacedName::new("default", "web")]));
        assert_eq!(store.slices_of(&NamespacedName::new("default", "web")).count(), 1);

        store.update(Update::Delete(ObjectKind::EndpointSlice, NamespacedName::new("default", "web-1")));
        assert!(store.take_pending().is_some_and(|p| p.endpoints.len() == 1));
        assert_eq!(store.slices_of(&NamespacedName::new("default", "web")).count(), 0);
    }

    #[test]
    fn services_and_secrets_count_only_when_referenced() {
        let mut store = store(vec![one(CLASS), ingress("a", "ostium", "web", "")], &["a"]);
        store.update(Update::Apply(Box::new(service("unrelated"))));
        store.update(Update::Apply(Box::new(secret("unrelated", "x"))));
        assert_eq!(store.take_pending(), None);
        store.update(Update::Apply(Box::new(service("web"))));
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
        store.update(Update::Apply(Box::new(secret("a-tls", "x"))));
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
    }

    #[test]
    fn unreferenced_secrets_are_held_without_data_and_fetched_once_referenced() {
        let mut store = store(vec![one(CLASS), secret("b-tls", "payload")], &[]);
        let key = NamespacedName::new("default", "b-tls");
        assert!(store.objects().secrets[&key].data.is_none(), "payload dropped");
        assert!(store.take_secret_fetches().is_empty());

        store.update(Update::Apply(Box::new(ingress("b", "ostium", "web", ""))));
        assert_eq!(store.take_secret_fetches(), vec![key.clone()]);
        assert!(!store.is_synced(), "no build without the Secret's data");
        assert_eq!(store.take_pending(), None);

        let mut full = secret("b-tls", "payload");
        full.normalize();
        let Object::Secret(full) = full else { unreachable!() };
        store.update(Update::Fetched(key.clone(), Some(Box::new(full))));
        assert!(store.is_synced());
        assert!(store.objects().secrets[&key].data.is_some());
        assert!(store.take_pending().is_some_and(|p| p.rebuild));

        // No longer referenced: the data goes again.
        store.update(Update::Delete(ObjectKind::Ingress, NamespacedName::new("default", "b")));
        assert!(store.objects().secrets[&key].data.is_none());
    }

    #[test]
    fn a_list_removes_what_it_no_longer_has() {
        let mut store = store(vec![one(CLASS), ingress("a", "ostium", "web", ""), service("web")], &["a"]);
        store.update(Update::Listed(ObjectKind::Ingress, vec![]));
        assert!(store.objects().ingresses.is_empty());
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
    }
}
