//! The objects the sources have reported, and what each change means for the table.
//!
//! Every change is judged as it arrives, cheaply, by its kind's [`Kind::differs`] and
//! [`Kind::relevance`], so that the rebuild loop knows whether it needs a new table, only new
//! endpoints for some Services, or nothing at all: an Ingress counts when what translation reads
//! changed and it is (or was) ours, so our own status writes never count; a Service or a Secret
//! counts while some Ingress (or a flag) names it; an EndpointSlice or Endpoints object only moves
//! its Service's endpoints; IngressClasses always count.
//!
//! Objects nothing names may be held without their payload (Secrets and ConfigMaps without their
//! data), so memory does not grow with unrelated Secrets' and ConfigMaps' payloads. When one comes to be named, its payload
//! must be fetched: the store lists those in [`Store::take_fetches`] and counts as not synced
//! until they arrive.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use ostium_model::{HashMap, NamespacedName};
use ostium_translate::{
    Kind, KindVisitor, ObjectKind, ObjectRef, Objects, Options, Reference, Relevance, for_each_kind,
};

/// One change reported by a source.
pub(crate) enum Update {
    /// A change to objects of one kind.
    Change(Box<dyn KindChange>),
    /// A complete snapshot of every kind (standalone manifests).
    Snapshot(Objects),
}

/// A change to objects of kind `K`.
pub(crate) enum Change<K> {
    /// An object added or changed (normalized: see [`Kind::from_value`]).
    Apply(Arc<K>),
    /// An object removed.
    Delete(NamespacedName),
    /// The complete list of the kind, from a watcher's (re)list: objects not in it are gone.
    Listed(Vec<Arc<K>>),
    /// An object whole, fetched because something came to name it (`None`: it is gone).
    Fetched(NamespacedName, Option<Arc<K>>),
}

/// A [`Change`], whatever its kind.
pub(crate) trait KindChange: Send + fmt::Debug {
    fn apply_to(self: Box<Self>, store: &mut Store);
}

/// What the changes so far ask of the rebuild loop.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) rebuild: bool,
    /// The objects whose changes ask for it.
    pub(crate) changed: BTreeSet<Reference>,
    /// Services whose endpoints changed.
    pub(crate) endpoints: BTreeSet<NamespacedName>,
}

#[derive(Debug)]
pub(crate) struct Store {
    objects: Objects,
    options: Options,
    /// Kinds whose first complete list has not arrived yet.
    unlisted: BTreeSet<ObjectKind>,
    /// Hold objects nothing names without their payload (cluster mode; manifests are small and
    /// local).
    strip_payloads: bool,
    /// What each object names, and how many objects (or flags) name each object.
    references: HashMap<Reference, Box<[Reference]>>,
    referenced: HashMap<Reference, u32>,
    /// Objects held without their payload.
    stripped: BTreeSet<Reference>,
    /// Objects wanted whole: to hand out, and handed out but not arrived.
    to_fetch: BTreeSet<Reference>,
    fetching: BTreeSet<Reference>,
    /// The Ingresses the last table serves.
    served: BTreeSet<NamespacedName>,
    pending: Pending,
}

impl Store {
    /// A store that is synced once each of `kinds` has been listed (or a snapshot arrived).
    pub(crate) fn new(options: Options, kinds: &[ObjectKind], strip_payloads: bool) -> Self {
        let mut store = Self {
            objects: Objects::default(),
            unlisted: kinds.iter().copied().collect(),
            strip_payloads,
            references: HashMap::default(),
            referenced: HashMap::default(),
            stripped: BTreeSet::new(),
            to_fetch: BTreeSet::new(),
            fetching: BTreeSet::new(),
            served: BTreeSet::new(),
            // The first table is built as soon as the store is synced, whatever it holds.
            pending: Pending { rebuild: true, changed: BTreeSet::new(), endpoints: BTreeSet::new() },
            options,
        };
        // The flags name objects too, for good.
        store.count(&store.options.references(), 1);
        store
    }

    /// Every kind listed, every wanted object fetched: a table built now is complete.
    pub(crate) fn is_synced(&self) -> bool {
        self.unlisted.is_empty() && self.to_fetch.is_empty() && self.fetching.is_empty()
    }

    /// The work the changes so far ask for, once the store is synced.
    pub(crate) fn take_pending(&mut self) -> Option<Pending> {
        (self.is_synced() && !self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }

    /// Objects that must be fetched whole (and reported back as [`Change::Fetched`]).
    pub(crate) fn take_fetches(&mut self) -> Vec<Reference> {
        let wanted = std::mem::take(&mut self.to_fetch);
        self.fetching.extend(wanted.iter().cloned());
        wanted.into_iter().collect()
    }

    pub(crate) fn objects(&self) -> &Objects {
        &self.objects
    }

    /// A Kubernetes reference to an object, for Events about it.
    pub(crate) fn reference(&self, object: &ObjectRef) -> ObjectReference {
        self.objects.object_reference(object)
    }

    /// The last table was built from the current objects: it serves `added` and no longer
    /// serves `removed`.
    pub(crate) fn built(&mut self, added: Vec<NamespacedName>, removed: &[NamespacedName]) {
        for ingress in removed {
            self.served.remove(ingress);
        }
        if self.served.is_empty() {
            // Built in bulk: the first build adds every Ingress.
            self.served = added.into_iter().collect();
        } else {
            self.served.extend(added);
        }
    }

    /// Asks for a rebuild of what these Services' routes (when moving their endpoints in place
    /// was not enough).
    pub(crate) fn request_rebuild(&mut self, services: &BTreeSet<NamespacedName>) {
        self.pending.rebuild = true;
        self.pending.changed.extend(services.iter().map(|s| Reference::new(ObjectKind::Service, s)));
    }

    pub(crate) fn update(&mut self, update: Update) {
        match update {
            Update::Change(change) => change.apply_to(self),
            Update::Snapshot(objects) => {
                // Sized once: Ingresses are most of what names other objects, and a map grown
                // one doubling at a time leaves each smaller table behind as freed memory.
                self.references.reserve(objects.ingresses.len());
                struct ReplaceAll<'a> {
                    store: &'a mut Store,
                    objects: &'a Objects,
                }
                impl KindVisitor for ReplaceAll<'_> {
                    fn visit<K: Kind>(&mut self) {
                        let objects = K::map(self.objects).iter().map(|(k, o)| (k.clone(), o.clone()));
                        self.store.replace(objects);
                    }
                }
                for_each_kind(&mut ReplaceAll { store: self, objects: &objects });
                self.unlisted.clear();
            }
        }
    }

    /// Makes the objects of kind `K` exactly `objects`, judging each difference as a change.
    fn replace<K: Kind>(&mut self, objects: impl Iterator<Item = (NamespacedName, Arc<K>)>) {
        let mut gone: BTreeSet<NamespacedName> = K::map(&self.objects).keys().cloned().collect();
        for (key, object) in objects {
            gone.remove(&key);
            self.put(key, object);
        }
        for key in gone {
            self.delete::<K>(&key);
        }
    }

    /// Takes a new version of an object, without its payload while nothing names it.
    fn put<K: Kind>(&mut self, key: NamespacedName, object: Arc<K>) {
        let key = K::map(&self.objects).with_shared_namespace(key);
        let me = Reference::new(K::OBJECT_KIND, &key);
        let unnamed = self.strip_payloads && !self.referenced.contains_key(&me);
        match if unnamed { object.without_payload() } else { None } {
            Some(stripped) => {
                self.stripped.insert(me.clone());
                self.hold(key, me, Arc::new(stripped));
            }
            None => {
                self.stripped.remove(&me);
                self.hold(key, me, object);
            }
        }
    }

    /// Holds a new version of an object, and judges the change.
    fn hold<K: Kind>(&mut self, key: NamespacedName, me: Reference, new: Arc<K>) {
        let old = self.objects.put(key.clone(), new.clone());
        if old.as_ref().is_some_and(|old| Arc::ptr_eq(old, &new) || !K::differs(old, &new)) {
            return;
        }
        self.set_references(&me, new.references(&key, &self.options));
        if let Some(old) = old {
            self.judge(&me, old.relevance(&key, &self.objects, &self.options));
        }
        self.judge(&me, new.relevance(&key, &self.objects, &self.options));
    }

    fn delete<K: Kind>(&mut self, key: &NamespacedName) {
        let me = Reference::new(K::OBJECT_KIND, key);
        self.stripped.remove(&me);
        self.to_fetch.remove(&me);
        let Some(old) = self.objects.remove::<K>(key) else { return };
        self.set_references(&me, Vec::new());
        self.judge(&me, old.relevance(key, &self.objects, &self.options));
    }

    fn listed<K: Kind>(&mut self, objects: Vec<Arc<K>>) {
        self.replace(objects.into_iter().map(|object| (object.key(), object)));
        self.unlisted.remove(&K::OBJECT_KIND);
    }

    fn fetched<K: Kind>(&mut self, key: NamespacedName, object: Option<Arc<K>>) {
        let me = Reference::new(K::OBJECT_KIND, &key);
        self.fetching.remove(&me);
        match object {
            Some(object) if self.referenced.contains_key(&me) => {
                self.stripped.remove(&me);
                self.hold(key, me, object);
            }
            Some(_) => {}
            None => self.delete::<K>(&key),
        }
    }

    /// Notes what a change to the object `me` asks for.
    fn judge(&mut self, me: &Reference, relevance: Relevance) {
        let rebuild = match relevance {
            Relevance::Table => true,
            Relevance::TableWhileReferenced => self.referenced.contains_key(me),
            Relevance::TableWhenServed { ours } => ours || self.served.contains(&me.key),
            Relevance::Endpoints(service) => {
                if self.referenced.contains_key(&Reference::new(ObjectKind::Service, &service)) {
                    self.pending.endpoints.insert(service);
                }
                false
            }
            Relevance::Nobody => false,
        };
        if rebuild {
            self.pending.rebuild = true;
            self.pending.changed.insert(me.clone());
        }
    }

    /// Records what an object names now (nothing, once it is gone).
    fn set_references(&mut self, from: &Reference, refs: Vec<Reference>) {
        let mut refs = refs.into_boxed_slice(); // held for the object's lifetime
        // New references first, so that an object named before and after is never let go of.
        self.count(&refs, 1);
        // Held as the counts hold them: many objects name the same few, and share their names.
        for reference in refs.iter_mut() {
            if let Some((counted, _)) = self.referenced.get_key_value(reference) {
                *reference = counted.clone();
            }
        }
        let old = match refs.is_empty() {
            true => self.references.remove(from),
            false => self.references.insert(from.clone(), refs),
        };
        if let Some(old) = old {
            self.count(&old, -1);
        }
    }

    fn count(&mut self, refs: &[Reference], delta: i32) {
        for reference in refs {
            let before = self.referenced.contains_key(reference);
            let count = self.referenced.entry(reference.clone()).or_default();
            *count = count.saturating_add_signed(delta);
            if *count == 0 {
                self.referenced.remove(reference);
            }
            let after = self.referenced.contains_key(reference);
            if !before && after && self.stripped.contains(reference) {
                self.to_fetch.insert(reference.clone());
            } else if before && !after && self.strip_payloads {
                self.to_fetch.remove(reference);
                if self.objects.drop_payload(reference.kind, &reference.key) {
                    self.stripped.insert(reference.clone());
                }
            }
        }
    }
}

// === impl Pending ===

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        !self.rebuild && self.endpoints.is_empty()
    }
}

// === impl Change ===

impl<K: Kind> KindChange for Change<K> {
    fn apply_to(self: Box<Self>, store: &mut Store) {
        match *self {
            Change::Apply(object) => store.put(object.key(), object),
            Change::Delete(key) => store.delete::<K>(&key),
            Change::Listed(objects) => store.listed(objects),
            Change::Fetched(key, object) => store.fetched(key, object),
        }
    }
}

impl<K: Kind> From<Change<K>> for Update {
    fn from(change: Change<K>) -> Self {
        Update::Change(Box::new(change))
    }
}

/// Names objects, never shows them (Secret data).
impl<K: Kind> fmt::Debug for Change<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = K::OBJECT_KIND.as_str();
        match self {
            Change::Apply(object) => write!(f, "apply {kind} {}", object.key()),
            Change::Delete(key) => write!(f, "delete {kind} {key}"),
            Change::Listed(objects) => write!(f, "list of {} {kind}", objects.len()),
            Change::Fetched(key, object) => {
                write!(f, "fetched {kind} {key} ({})", object.as_ref().map_or("gone", |_| "here"))
            }
        }
    }
}

impl fmt::Debug for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Update::Change(change) => change.fmt(f),
            Update::Snapshot(objects) => write!(f, "snapshot of {objects:?}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

    use super::*;

    pub(crate) const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ostium}\nspec: {controller: ostium.dev/ingress-controller}\n";

    pub(crate) fn class() -> Arc<IngressClass> {
        one(CLASS)
    }

    pub(crate) fn ingress(name: &str, class: &str, service: &str, extra_metadata: &str) -> Arc<Ingress> {
        one(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default{extra_metadata}}}\nspec:\n  ingressClassName: {class}\n  tls: [{{secretName: {name}-tls}}]\n  rules: [{{host: {name}.example.com, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}}}]\n"
        ))
    }

    pub(crate) fn service(name: &str) -> Arc<Service> {
        one(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n"
        ))
    }

    pub(crate) fn slice(service: &str, ip: &str) -> Arc<EndpointSlice> {
        one(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"{ip}\"]}}]\n"
        ))
    }

    pub(crate) fn secret(name: &str, value: &str) -> Arc<Secret> {
        one(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\nstringData: {{tls.crt: {value}, tls.key: {value}}}\n"
        ))
    }

    /// The one object of kind `K` in a manifest, normalized.
    pub(crate) fn one<K: Kind>(yaml: &str) -> Arc<K> {
        let objects = Objects::from_yaml(yaml).unwrap();
        K::map(&objects).values().next().expect("an object of that kind").clone()
    }

    pub(crate) fn apply<K: Kind>(object: Arc<K>) -> Update {
        Change::Apply(object).into()
    }

    pub(crate) fn listed<K: Kind>(objects: Vec<Arc<K>>) -> Update {
        Change::Listed(objects).into()
    }

    /// Options as the flags' defaults give them.
    pub(crate) fn options() -> Options {
        let args = <crate::Args as clap::Parser>::try_parse_from(["ostium"]).unwrap();
        crate::Config::try_from(args).unwrap().translate
    }

    /// A synced store that has built once, serving `served`.
    fn store(objects: Vec<Update>, served: &[&str]) -> Store {
        let mut store = Store::new(options(), &[ObjectKind::Ingress], true);
        for object in objects {
            store.update(object);
        }
        let ingresses = store.objects.ingresses.values().cloned().collect();
        store.update(listed::<Ingress>(ingresses));
        assert!(store.take_pending().is_some(), "the first build is always pending");
        store.built(served.iter().map(|n| NamespacedName::new("default", *n)).collect(), &[]);
        store
    }

    #[test]
    fn not_synced_until_every_kind_is_listed() {
        let mut store = Store::new(options(), &[ObjectKind::Ingress, ObjectKind::Service], false);
        store.update(apply(service("web")));
        assert!(!store.is_synced());
        store.update(listed::<Ingress>(vec![]));
        assert!(!store.is_synced());
        assert_eq!(store.take_pending(), None, "nothing is built before the lists are in");
        store.update(listed(vec![service("web")]));
        assert!(store.is_synced());
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
    }

    #[test]
    fn objects_applied_one_by_one_share_their_namespace() {
        let mut store = Store::new(options(), &[ObjectKind::Service], false);
        store.update(apply(service("web")));
        store.update(apply(service("api")));
        let keys: Vec<_> = store.objects.services.keys().collect();
        let [api, web] = keys[..] else { panic!("two keys: {keys:?}") };
        assert!(Arc::ptr_eq(&api.namespace, &web.namespace));
    }

    #[test]
    fn a_status_only_change_to_an_ingress_asks_for_nothing() {
        let mut store = store(vec![apply(class()), apply(ingress("a", "ostium", "web", ""))], &["a"]);
        let mut with_status = Ingress::clone(&ingress("a", "ostium", "web", ""));
        with_status.status =
            serde_json::from_str(r#"{"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}"#).unwrap();
        with_status.metadata.resource_version = Some("2".into());
        store.update(apply(Arc::new(with_status)));
        assert_eq!(store.take_pending(), None);

        store.update(apply(ingress("a", "ostium", "web", ", annotations: {x: \"z\"}")));
        assert!(store.take_pending().is_some_and(|p| p.rebuild), "annotations count");
    }

    /// Not served while no IngressClass `ostium` exists, but translation warns about it: its
    /// changes count, so the warning comes and goes with it.
    #[test]
    fn an_ingress_naming_our_class_that_does_not_exist_counts() {
        let mut store = store(vec![], &[]);
        store.update(apply(ingress("a", "ostium", "web", "")));
        let pending = store.take_pending().expect("a change to judge");
        let me = Reference::new(ObjectKind::Ingress, &NamespacedName::new("default", "a"));
        assert!(pending.rebuild && pending.changed.contains(&me));
        store.update(Change::<Ingress>::Delete(me.key.clone()).into());
        assert!(store.take_pending().is_some_and(|p| p.changed.contains(&me)), "and so does its deletion");
    }

    #[test]
    fn ingresses_of_other_classes_ask_for_nothing_until_they_become_ours() {
        let mut store = store(vec![apply(class())], &[]);
        store.update(apply(ingress("other", "nginx", "web", "")));
        assert_eq!(store.take_pending(), None);
        store.update(apply(ingress("other", "ostium", "web", "")));
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
        store.built(vec![NamespacedName::new("default", "other")], &[]);
        // Leaving our class must drop its routes.
        store.update(apply(ingress("other", "nginx", "web", "")));
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
    }

    #[test]
    fn endpoints_of_referenced_services_move_without_a_rebuild() {
        let objects = vec![apply(class()), apply(ingress("a", "ostium", "web", "")), apply(service("web"))];
        let mut store = store(objects, &["a"]);
        store.update(apply(slice("web", "10.0.0.1")));
        store.update(apply(slice("unrelated", "10.0.0.2")));
        let pending = store.take_pending().unwrap();
        assert!(!pending.rebuild);
        assert_eq!(pending.endpoints, BTreeSet::from([NamespacedName::new("default", "web")]));
        assert_eq!(store.objects().slices_of(&NamespacedName::new("default", "web")).count(), 1);

        store.update(Change::<EndpointSlice>::Delete(NamespacedName::new("default", "web-1")).into());
        assert!(store.take_pending().is_some_and(|p| p.endpoints.len() == 1));
        assert_eq!(store.objects().slices_of(&NamespacedName::new("default", "web")).count(), 0);
    }

    /// The `--tcp-services-configmap` ConfigMap counts, and names the Services of its entries:
    /// their changes rebuild, their endpoints move in place.
    #[test]
    fn the_tcp_services_configmap_and_the_services_it_names_count() {
        let options = Options {
            tcp_services_configmap: Some(NamespacedName::new("default", "tcp-services")),
            ..options()
        };
        let mut store = Store::new(options, &[ObjectKind::Ingress], true);
        store.update(listed::<Ingress>(vec![]));
        assert!(store.take_pending().is_some(), "the first build");
        let tcp_services = |data: &str| {
            one::<ConfigMap>(&format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: tcp-services, namespace: default}}\ndata: {{{data}}}\n"
            ))
        };
        store.update(apply(tcp_services("\"9000\": \"default/web:80\"")));
        assert!(store.take_pending().is_some_and(|p| p.rebuild), "a new entry");
        store.update(apply(service("web")));
        assert!(store.take_pending().is_some_and(|p| p.rebuild), "the Service named");
        store.update(apply(slice("web", "10.0.0.1")));
        let pending = store.take_pending().unwrap();
        assert!(!pending.rebuild);
        assert_eq!(pending.endpoints, BTreeSet::from([NamespacedName::new("default", "web")]));

        store.update(apply(tcp_services("\"9001\": \"default/api:80\"")));
        assert!(store.take_pending().is_some_and(|p| p.rebuild), "a changed entry");
        store.update(apply(slice("web", "10.0.0.2")));
        assert_eq!(store.take_pending(), None, "web is no longer named");
    }

    #[test]
    fn a_slice_moving_to_another_service_moves_the_endpoints_of_both() {
        let objects = vec![
            apply(class()),
            apply(ingress("a", "ostium", "web", "")),
            apply(ingress("b", "ostium", "api", "")),
            apply(slice("web", "10.0.0.1")),
        ];
        let mut store = store(objects, &["a", "b"]);
        let mut moved = EndpointSlice::clone(&slice("web", "10.0.0.1"));
        moved.metadata.labels = Some([("kubernetes.io/service-name".to_owned(), "api".to_owned())].into());
        store.update(apply(Arc::new(moved)));
        let pending = store.take_pending().unwrap();
        let services = ["api", "web"].map(|s| NamespacedName::new("default", s));
        assert_eq!(pending.endpoints, BTreeSet::from(services));
    }

    #[test]
    fn services_and_secrets_count_only_when_referenced() {
        let mut store = store(vec![apply(class()), apply(ingress("a", "ostium", "web", ""))], &["a"]);
        store.update(apply(service("unrelated")));
        store.update(apply(secret("unrelated", "x")));
        assert_eq!(store.take_pending(), None);
        store.update(apply(service("web")));
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
        store.update(apply(secret("a-tls", "x")));
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
    }

    #[test]
    fn unreferenced_secrets_are_held_without_data_and_fetched_once_referenced() {
        let mut store = store(vec![apply(class()), apply(secret("b-tls", "payload"))], &[]);
        let key = NamespacedName::new("default", "b-tls");
        assert!(store.objects().secrets[&key].data.is_none(), "payload dropped");
        assert!(store.take_fetches().is_empty());

        store.update(apply(ingress("b", "ostium", "web", "")));
        assert_eq!(store.take_fetches(), vec![Reference::new(ObjectKind::Secret, &key)]);
        assert!(!store.is_synced(), "no build without the Secret's data");
        assert_eq!(store.take_pending(), None);

        store.update(Change::Fetched(key.clone(), Some(secret("b-tls", "payload"))).into());
        assert!(store.is_synced());
        assert!(store.objects().secrets[&key].data.is_some());
        assert!(store.take_pending().is_some_and(|p| p.rebuild));

        // Still referenced after an edit of the Ingress: nothing to fetch again.
        store.update(apply(ingress("b", "ostium", "web", ", annotations: {x: \"z\"}")));
        assert!(store.take_fetches().is_empty() && store.is_synced());

        // No longer referenced: the data goes again.
        store.update(Change::<Ingress>::Delete(NamespacedName::new("default", "b")).into());
        assert!(store.objects().secrets[&key].data.is_none());
    }

    /// `auth-proxy-set-headers` names a ConfigMap as `auth-secret` names a Secret.
    #[test]
    fn unreferenced_config_maps_are_held_without_data_and_fetched_once_referenced() {
        let config_map = || {
            one::<ConfigMap>(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: auth-headers, namespace: default}\ndata: {X-Tenant: acme}\n",
            )
        };
        let mut store = store(vec![apply(class()), apply(config_map())], &[]);
        let key = NamespacedName::new("default", "auth-headers");
        assert!(store.objects().config_maps[&key].data.is_none(), "payload dropped");

        let annotations = ", annotations: {nginx.ingress.kubernetes.io/auth-url: \"http://auth/\", nginx.ingress.kubernetes.io/auth-proxy-set-headers: default/auth-headers}";
        store.update(apply(ingress("b", "ostium", "web", annotations)));
        let fetches = store.take_fetches();
        assert!(fetches.contains(&Reference::new(ObjectKind::ConfigMap, &key)), "{fetches:?}");
        assert!(!store.is_synced(), "no build without the ConfigMap's data");

        store.update(Change::Fetched(key.clone(), Some(config_map())).into());
        assert!(store.is_synced());
        assert!(store.objects().config_maps[&key].data.is_some());
        assert!(store.take_pending().is_some_and(|p| p.rebuild));

        store.update(Change::<Ingress>::Delete(NamespacedName::new("default", "b")).into());
        assert!(store.objects().config_maps[&key].data.is_none());
    }

    /// `--configmap` names its ConfigMap for as long as the process runs: it is held whole, and
    /// a change to its data is a rebuild; other ConfigMaps' changes are not.
    #[test]
    fn the_configmap_of_the_flag_is_held_whole_and_its_changes_rebuild() {
        let config_map = |name: &str, enabled: &str| {
            one::<ConfigMap>(&format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: ingress}}\ndata: {{enable-opentelemetry: \"{enabled}\"}}\n"
            ))
        };
        let options = Options { configmap: Some(NamespacedName::new("ingress", "ostium")), ..options() };
        let mut store = Store::new(options, &[ObjectKind::Ingress], true);
        store.update(apply(class()));
        store.update(apply(config_map("ostium", "false")));
        store.update(apply(config_map("other", "false")));
        store.update(listed::<Ingress>(Vec::new()));
        assert!(store.take_pending().is_some(), "the first build is always pending");
        store.built(Vec::new(), &[]);
        let key = NamespacedName::new("ingress", "ostium");
        assert!(store.objects().config_maps[&key].data.is_some(), "held whole");

        store.update(apply(config_map("other", "true")));
        assert_eq!(store.take_pending(), None);
        store.update(apply(config_map("ostium", "true")));
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
    }

    /// `proxy-set-headers` and `add-headers` of the `--configmap` ConfigMap name ConfigMaps in
    /// any namespace: those are held whole while named, and their changes rebuild.
    #[test]
    fn the_header_config_maps_of_the_configmap_count_while_it_names_them() {
        let config_map = |namespace: &str, name: &str, data: &str| {
            one::<ConfigMap>(&format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata: {{{data}}}\n"
            ))
        };
        let options = Options { configmap: Some(NamespacedName::new("ingress", "ostium")), ..options() };
        let mut store = Store::new(options, &[ObjectKind::Ingress], true);
        store.update(apply(class()));
        store.update(apply(config_map("headers", "to-backends", "X-Team: a")));
        store.update(apply(config_map("ingress", "ostium", "")));
        store.update(listed::<Ingress>(Vec::new()));
        assert!(store.take_pending().is_some(), "the first build is always pending");
        store.built(Vec::new(), &[]);
        let key = NamespacedName::new("headers", "to-backends");
        assert!(store.objects().config_maps[&key].data.is_none(), "not named yet");
        store.update(apply(config_map("headers", "to-backends", "X-Team: b")));
        assert_eq!(store.take_pending(), None);

        store.update(apply(config_map("ingress", "ostium", "proxy-set-headers: headers/to-backends")));
        assert_eq!(store.take_fetches(), vec![Reference::new(ObjectKind::ConfigMap, &key)]);
        store.update(
            Change::Fetched(key.clone(), Some(config_map("headers", "to-backends", "X-Team: b"))).into(),
        );
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
        store.update(apply(config_map("headers", "to-backends", "X-Team: c")));
        assert!(store.take_pending().is_some_and(|p| p.rebuild), "a change of a named one rebuilds");

        store.update(apply(config_map("ingress", "ostium", "add-headers: headers/other")));
        assert!(store.take_pending().is_some());
        assert!(store.objects().config_maps[&key].data.is_none(), "no longer named");
        store.update(apply(config_map("headers", "to-backends", "X-Team: d")));
        assert_eq!(store.take_pending(), None);
    }

    #[test]
    fn a_list_removes_what_it_no_longer_has() {
        let objects = vec![apply(class()), apply(ingress("a", "ostium", "web", "")), apply(service("web"))];
        let mut store = store(objects, &["a"]);
        store.update(listed::<Ingress>(vec![]));
        assert!(store.objects().ingresses.is_empty());
        assert!(store.take_pending().is_some_and(|p| p.rebuild));
    }

    #[test]
    fn changes_name_objects_without_showing_them() {
        let update = apply(secret("tls", "SECRETMARKER"));
        assert_eq!(format!("{update:?}"), "apply secret default/tls");
    }
}
