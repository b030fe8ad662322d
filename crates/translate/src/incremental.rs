//! Translation that costs what a change touches.
//!
//! The table depends on an Ingress only through its hosts: conflicts (oldest wins), canaries,
//! aliases, `from-to-www-redirect`, certificates and passthrough are all decided per host. So
//! the Ingresses fall into groups that share hosts (the rules without a host and the default
//! route count as two more "hosts"), and a group's hosts are a function of that group alone.
//! [`Incremental`] remembers, for each Ingress of ours, its hosts and the objects it reads
//! (Services, Secrets, ConfigMaps). A change re-translates the groups of the Ingresses that
//! changed or read what changed, into a partial table, and splices that table's hosts into the
//! previous table, which shares every other host. A change to what every route reads (the
//! `--configmap` settings, the objects the flags name) translates everything.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use ostium_model::{HashMap, HostRule, NamespacedName, Replaced, Table};

use crate::kind::Kind;
use crate::{Diagnostic, ObjectKind, Objects, Options, Reference, Scope, class, run};

/// A name that groups Ingresses: a host, the rules without a host, or the default route.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum HostKey {
    Host(HostRule),
    AnyHost,
    DefaultRoute,
}

/// What is remembered of an Ingress of ours. Keys and dependencies are shared with the indexes
/// (most of them name one Ingress, so a `Vec` of one is the common case).
#[derive(Debug)]
struct Entry {
    keys: Box<[Arc<HostKey>]>,
    dependencies: Box<[Arc<Reference>]>,
}

/// The translation state kept between changes: see the module documentation.
#[derive(Debug, Default)]
pub struct Incremental {
    table: Option<Arc<Table>>,
    /// The Ingresses of ours.
    entries: HashMap<Arc<NamespacedName>, Entry>,
    by_key: HashMap<Arc<HostKey>, Vec<Arc<NamespacedName>>>,
    by_dependency: HashMap<Arc<Reference>, Vec<Arc<NamespacedName>>>,
    /// Diagnostics of the global settings and the flags, from the last full translation.
    global_diagnostics: Vec<Diagnostic>,
    /// Diagnostics of each Ingress (ours or not: an unknown class is reported too).
    diagnostics: HashMap<NamespacedName, Vec<Diagnostic>>,
    /// Whether Ingresses without a class are ours (a default IngressClass of ours, or the flag).
    serve_classless: bool,
    /// The Ingresses the last update found changed or reading a changed object, and the group
    /// it translated.
    #[cfg(test)]
    last_dirty: BTreeSet<NamespacedName>,
    #[cfg(test)]
    last_group: BTreeSet<NamespacedName>,
}

/// What a translation made.
#[derive(Debug)]
pub struct Built {
    /// The new table, or the previous one (the same `Arc`) when nothing changed.
    pub table: Arc<Table>,
    /// How many Ingresses were translated.
    pub translated: usize,
    /// Whether everything was translated.
    pub full: bool,
    /// How many endpoint sets of the previous table got other endpoints.
    pub endpoints_moved: usize,
    /// Ingresses served now that were not before, and the reverse.
    pub served_added: Vec<NamespacedName>,
    pub served_removed: Vec<NamespacedName>,
}

impl Incremental {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every current diagnostic: the global ones, then each Ingress's.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut ingresses: Vec<_> = self.diagnostics.iter().collect();
        ingresses.sort_by(|a, b| a.0.cmp(b.0));
        let per_ingress = ingresses.into_iter().flat_map(|(_, d)| d.iter().cloned());
        self.global_diagnostics.iter().cloned().chain(per_ingress).collect()
    }

    /// How many Ingresses are served.
    pub fn served_count(&self) -> usize {
        self.entries.len()
    }

    /// The Ingresses served, sorted.
    pub fn served(&self) -> Vec<NamespacedName> {
        let mut served: Vec<_> = self.entries.keys().map(|id| NamespacedName::clone(id)).collect();
        served.sort();
        served
    }

    /// Translates everything; the previous table lends its endpoint sets, and stays when the new
    /// one is equal.
    pub fn rebuild(&mut self, objects: &Objects, options: &Options) -> Built {
        let previous = self.table.take();
        let run = run(objects, options, Scope::All, previous.as_deref());
        let before: BTreeSet<NamespacedName> =
            self.entries.keys().map(|id| NamespacedName::clone(id)).collect();
        let translated = run.ingresses.len();
        self.entries.clear();
        self.by_key.clear();
        self.by_dependency.clear();
        self.global_diagnostics.clear();
        self.diagnostics.clear();
        self.serve_classless = class::Classes::new(objects, options).serves_classless();
        // Sized once: a map grown one doubling at a time leaves each smaller table behind as
        // freed memory the allocator keeps.
        self.entries.reserve(run.ingresses.len());
        self.by_key.reserve(run.ingresses.len());
        for id in &run.ingresses {
            let ingress = &objects.ingresses[&**id];
            self.remember(id.clone(), ingress, options);
        }
        for (owner, diagnostic) in run.diagnostics {
            match owner {
                Some(id) => self.diagnostics.entry(id).or_default().push(diagnostic),
                None => self.global_diagnostics.push(diagnostic),
            }
        }
        // The first time (or after losing all), every Ingress is new: moved, not compared.
        let (served_added, served_removed) = if before.is_empty() {
            (run.ingresses.iter().map(|id| NamespacedName::clone(id)).collect(), Vec::new())
        } else {
            let after: BTreeSet<NamespacedName> =
                run.ingresses.iter().map(|id| NamespacedName::clone(id)).collect();
            (after.difference(&before).cloned().collect(), before.difference(&after).cloned().collect())
        };
        let table = match previous {
            Some(previous) if *previous == run.table => previous,
            _ => Arc::new(run.table),
        };
        self.table = Some(table.clone());
        Built {
            table,
            translated,
            full: true,
            endpoints_moved: run.endpoints_moved,
            served_added,
            served_removed,
        }
    }

    /// Translates what the change of `changed` touches, or everything when one of them is read
    /// by every route (or nothing was translated yet).
    pub fn update(&mut self, objects: &Objects, options: &Options, changed: &BTreeSet<Reference>) -> Built {
        let Some(previous) = self.table.clone() else { return self.rebuild(objects, options) };
        let global = global_references(objects, options);
        if changed.iter().any(|r| global.contains(r)) {
            return self.rebuild(objects, options);
        }
        let dirty = self.dirty(objects, options, changed);

        // Forget the dirty Ingresses, keeping the hosts they had, then judge them again.
        let mut keys: BTreeSet<Arc<HostKey>> = BTreeSet::new();
        let (mut served_added, mut served_removed) = (Vec::new(), Vec::new());
        for id in &dirty {
            self.diagnostics.remove(id);
            let was_ours = match self.forget(id) {
                Some(entry) => {
                    keys.extend(entry.keys);
                    true
                }
                None => false,
            };
            let Some(ingress) = objects.ingresses.get(id) else {
                if was_ours {
                    served_removed.push(id.clone());
                }
                continue;
            };
            let mut found = Vec::new();
            let ours = options.watch_namespace.as_ref().is_none_or(|ns| **ns == *id.namespace)
                && class::Classes::new(objects, options).is_ours(id, ingress, &mut found);
            if !found.is_empty() {
                self.diagnostics.insert(id.clone(), found);
            }
            if ours {
                keys.extend(self.remember(Arc::new(id.clone()), ingress, options).iter().cloned());
                if !was_ours {
                    served_added.push(id.clone());
                }
            } else if was_ours {
                served_removed.push(id.clone());
            }
        }
        if keys.is_empty() {
            return Built {
                table: previous,
                translated: 0,
                full: false,
                endpoints_moved: 0,
                served_added,
                served_removed,
            };
        }

        // Every Ingress of those hosts, and of their other hosts, until no host is added.
        let mut group: BTreeSet<NamespacedName> = BTreeSet::new();
        let mut queue: Vec<Arc<HostKey>> = keys.iter().cloned().collect();
        while let Some(key) = queue.pop() {
            for id in self.by_key.get(&key).into_iter().flatten() {
                if group.insert(NamespacedName::clone(id)) {
                    for other in &self.entries[&**id].keys {
                        if keys.insert(other.clone()) {
                            queue.push(other.clone());
                        }
                    }
                }
            }
        }
        #[cfg(test)]
        {
            self.last_dirty = dirty;
            self.last_group = group.clone();
        }
        // Named as the entries name them, so that routes and indexes share one name.
        let mut ingresses: Vec<(&Arc<NamespacedName>, &Arc<Ingress>)> = group
            .iter()
            .map(|id| (self.entries.get_key_value(id).expect("grouped").0, &objects.ingresses[id]))
            .collect();
        ingresses.sort_by(|(a_id, a), (b_id, b)| crate::by_age(a_id, a, b_id, b));
        let default_route = keys.contains(&HostKey::DefaultRoute);
        let any_host = keys.contains(&HostKey::AnyHost);
        let run = run(objects, options, Scope::Part { ingresses, default_route }, Some(&previous));
        for id in &group {
            self.diagnostics.remove(id);
        }
        for (owner, diagnostic) in run.diagnostics {
            // The global ones are those of the last full translation.
            if let Some(id) = owner {
                self.diagnostics.entry(id).or_default().push(diagnostic);
            }
        }
        let replaced = Replaced {
            hosts: keys
                .iter()
                .filter_map(|k| match &**k {
                    HostKey::Host(host) => Some(host.clone()),
                    _ => None,
                })
                .collect(),
            any_host,
            default_route,
        };
        let table = Arc::new(previous.splice(run.table, &replaced));
        self.table = Some(table.clone());
        Built {
            table,
            translated: group.len(),
            full: false,
            endpoints_moved: run.endpoints_moved,
            served_added,
            served_removed,
        }
    }

    /// The Ingresses a change to `changed` may translate differently: those changed, those that
    /// read a changed object, and, for an IngressClass, those of that class (and those without
    /// a class when whether they are ours changed).
    fn dirty(
        &mut self,
        objects: &Objects,
        options: &Options,
        changed: &BTreeSet<Reference>,
    ) -> BTreeSet<NamespacedName> {
        let mut dirty = BTreeSet::new();
        let mut classes = Vec::new();
        for reference in changed {
            match reference.kind {
                ObjectKind::Ingress => {
                    dirty.insert(reference.key.clone());
                }
                ObjectKind::IngressClass => classes.push(&*reference.key.name),
                _ => dirty.extend(
                    self.by_dependency
                        .get(reference)
                        .into_iter()
                        .flatten()
                        .map(|id| NamespacedName::clone(id)),
                ),
            }
        }
        if !classes.is_empty() {
            let serve_classless = class::Classes::new(objects, options).serves_classless();
            let classless_changed =
                std::mem::replace(&mut self.serve_classless, serve_classless) != serve_classless;
            for (id, ingress) in &objects.ingresses {
                let named = class::class_name(ingress);
                if named.is_some_and(|name| classes.contains(&name)) || (named.is_none() && classless_changed)
                {
                    dirty.insert(id.clone());
                }
            }
        }
        dirty
    }

    /// Records an Ingress of ours; returns its keys.
    fn remember(&mut self, id: Arc<NamespacedName>, ingress: &Ingress, options: &Options) -> &[Arc<HostKey>] {
        let keys = host_keys(ingress, options).into_iter().map(|key| intern(&mut self.by_key, key, &id));
        let keys: Box<[Arc<HostKey>]> = keys.collect();
        let dependencies = ingress.references(&id, options).into_iter();
        let dependencies = dependencies.map(|reference| intern(&mut self.by_dependency, reference, &id));
        let dependencies = dependencies.collect();
        &self.entries.entry(id).insert_entry(Entry { keys, dependencies }).into_mut().keys
    }

    /// Forgets an Ingress; returns what was remembered of it.
    fn forget(&mut self, id: &NamespacedName) -> Option<Entry> {
        let (id, entry) = self.entries.remove_entry(id)?;
        for key in &entry.keys {
            release(&mut self.by_key, key, &id);
        }
        for dependency in &entry.dependencies {
            release(&mut self.by_dependency, dependency, &id);
        }
        Some(entry)
    }
}

/// Adds `id` under `key` in an index; returns the key as the index holds it.
fn intern<K: Eq + std::hash::Hash>(
    index: &mut HashMap<Arc<K>, Vec<Arc<NamespacedName>>>,
    key: K,
    id: &Arc<NamespacedName>,
) -> Arc<K> {
    if let Some(shared) = index.get_key_value(&key).map(|(shared, _)| shared.clone()) {
        // Present: found just above.
        index.get_mut(&shared).expect("indexed").push(id.clone());
        return shared;
    }
    let shared = Arc::new(key);
    index.insert(shared.clone(), vec![id.clone()]);
    shared
}

/// Takes `id` out from under `key` in an index.
fn release<K: Eq + std::hash::Hash>(
    index: &mut HashMap<Arc<K>, Vec<Arc<NamespacedName>>>,
    key: &K,
    id: &NamespacedName,
) {
    if let Some(ids) = index.get_mut(key) {
        ids.retain(|other| **other != *id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

/// What the global parts of the table read: the objects the flags name, and those the
/// ConfigMaps among them name (header ConfigMaps, the Services of TCP and UDP services).
fn global_references(objects: &Objects, options: &Options) -> BTreeSet<Reference> {
    let mut global: BTreeSet<Reference> = options.references().into_iter().collect();
    let config_maps: Vec<Reference> =
        global.iter().filter(|r| r.kind == ObjectKind::ConfigMap).cloned().collect();
    for reference in config_maps {
        if let Some(config_map) = objects.config_maps.get(&reference.key) {
            global.extend(config_map.references(&reference.key, options));
        }
    }
    global
}

/// Every name an Ingress may give the table: its rules' hosts (or the rules without a host),
/// its TLS hosts, its `server-alias` names and the other name `from-to-www-redirect` would give
/// each host, and the default route when it has no rules. Taking a name too many only makes a
/// group larger.
fn host_keys(ingress: &Ingress, options: &Options) -> Vec<HostKey> {
    let mut keys = Vec::new();
    // Without a name of its own, an Ingress joins the default route's group, to be reported.
    let Some(spec) = &ingress.spec else { return vec![HostKey::DefaultRoute] };
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() {
        keys.push(HostKey::DefaultRoute);
    }
    let annotation = |name: &str| {
        let key = format!("{}/{name}", options.annotations_prefix);
        ingress.metadata.annotations.as_ref().and_then(|a| a.get(&key))
    };
    let www_redirect = annotation("from-to-www-redirect").is_some();
    let canary = annotation("canary").is_some();
    let host = |name: &str| name.parse::<HostRule>().ok().map(HostKey::Host);
    for rule in rules {
        let Some(name) = rule.host.as_deref().filter(|h| !h.is_empty()) else {
            keys.push(HostKey::AnyHost);
            // A canary's `/` without a host joins the default route when that host has none.
            if canary {
                keys.push(HostKey::DefaultRoute);
            }
            continue;
        };
        let Ok(parsed) = name.parse::<HostRule>() else { continue };
        // The other name, as the translator derives it: from the parsed (lower-case) name.
        if www_redirect && let HostRule::Exact(name) = &parsed {
            let other = match name.strip_prefix("www.") {
                Some(bare) => bare.to_owned(),
                None => format!("www.{name}"),
            };
            keys.extend(host(&other));
        }
        keys.push(HostKey::Host(parsed));
    }
    for tls in spec.tls.iter().flatten() {
        keys.extend(tls.hosts.iter().flatten().filter_map(|name| host(name)));
    }
    if let Some(aliases) = annotation("server-alias") {
        // Split as the annotation's parser does.
        keys.extend(aliases.split(',').map(str::trim).filter(|a| !a.is_empty()).filter_map(host));
    }
    // A canary's defaultBackend joins the rules without a host and the default route.
    if spec.default_backend.is_some() && canary {
        keys.extend([HostKey::AnyHost, HostKey::DefaultRoute]);
    }
    if keys.is_empty() {
        keys.push(HostKey::DefaultRoute);
    }
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four Ingresses, each its own host: `a` and `b` on Service `shared`, `a` with TLS Secret
    /// `a-tls`; `c` on Service `own` with basic auth Secret `htpasswd`; `d` of class `other`
    /// (served too: both classes are ours). Plus the `--configmap` ConfigMap.
    const FLEET: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ostium}\nspec: {controller: ostium.dev/ingress-controller}\n---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: other}\nspec: {controller: ostium.dev/ingress-controller}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: ingress}\ndata: {hsts: \"false\"}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: shared}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: own}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: htpasswd}\nstringData: {auth: \"user:$apr1$salt$hash\"}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: a}\nspec:\n  ingressClassName: ostium\n  tls: [{hosts: [a.example.com], secretName: a-tls}]\n  rules: [{host: a.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: shared, port: {number: 80}}}}]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: b}\nspec:\n  ingressClassName: ostium\n  rules: [{host: b.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: shared, port: {number: 80}}}}]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: c\n  annotations: {nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: htpasswd}\nspec:\n  ingressClassName: ostium\n  rules: [{host: c.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: own, port: {number: 80}}}}]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: d}\nspec:\n  ingressClassName: other\n  rules: [{host: d.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: own, port: {number: 80}}}}]}}]\n";

    fn options() -> Options {
        let configmap = Some(NamespacedName::new("ingress", "settings"));
        Options { configmap, ..crate::tests::options() }
    }

    fn reference(kind: ObjectKind, namespace: &str, name: &str) -> BTreeSet<Reference> {
        BTreeSet::from([Reference::new(kind, &NamespacedName::new(namespace, name))])
    }

    fn names(ids: &BTreeSet<NamespacedName>) -> Vec<&str> {
        ids.iter().map(|id| &*id.name).collect()
    }

    /// The fleet translated once, and what an update after `changed` re-translated.
    fn after_change(changed: BTreeSet<Reference>) -> (Incremental, Built) {
        let objects = Objects::from_yaml(FLEET).unwrap();
        let mut incremental = Incremental::new();
        assert!(incremental.rebuild(&objects, &options()).full);
        let built = incremental.update(&objects, &options(), &changed);
        (incremental, built)
    }

    #[test]
    fn a_secret_change_translates_the_ingresses_that_read_it() {
        let (incremental, built) = after_change(reference(ObjectKind::Secret, "default", "a-tls"));
        assert!(!built.full);
        assert_eq!(names(&incremental.last_dirty), ["a"]);
        assert_eq!(built.translated, 1);
        let (incremental, _) = after_change(reference(ObjectKind::Secret, "default", "htpasswd"));
        assert_eq!(names(&incremental.last_dirty), ["c"]);
    }

    #[test]
    fn a_service_change_translates_the_ingresses_that_point_at_it() {
        let (incremental, built) = after_change(reference(ObjectKind::Service, "default", "shared"));
        assert_eq!(names(&incremental.last_dirty), ["a", "b"]);
        assert_eq!(names(&incremental.last_group), ["a", "b"]);
        assert_eq!(built.translated, 2);
        let (incremental, _) = after_change(reference(ObjectKind::Service, "default", "own"));
        assert_eq!(names(&incremental.last_dirty), ["c", "d"]);
    }

    #[test]
    fn an_ingress_class_change_translates_the_ingresses_of_that_class() {
        let (incremental, built) = after_change(reference(ObjectKind::IngressClass, "", "other"));
        assert_eq!(names(&incremental.last_dirty), ["d"]);
        assert_eq!(built.translated, 1);
    }

    #[test]
    fn a_global_config_change_translates_everything() {
        let (_, built) = after_change(reference(ObjectKind::ConfigMap, "ingress", "settings"));
        assert!(built.full);
        assert_eq!(built.translated, 4);
    }

    #[test]
    fn a_change_nothing_reads_translates_nothing_and_keeps_the_table() {
        let objects = Objects::from_yaml(FLEET).unwrap();
        let mut incremental = Incremental::new();
        let first = incremental.rebuild(&objects, &options()).table;
        let built =
            incremental.update(&objects, &options(), &reference(ObjectKind::Secret, "default", "unused"));
        assert_eq!(built.translated, 0);
        assert!(Arc::ptr_eq(&first, &built.table));
    }

    /// A canary's `/` without a host joins the default route of a catch-all Ingress: the two
    /// must fall in one group, whichever changes.
    #[test]
    fn a_host_less_canary_and_the_catch_all_it_joins_are_translated_together() {
        let base = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ostium}\nspec: {controller: ostium.dev/ingress-controller}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: app}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: app-canary}\nspec: {ports: [{port: 80}]}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: catch-all}\nspec: {ingressClassName: ostium, defaultBackend: {service: {name: app, port: {number: 80}}}}\n";
        let canary = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: canary\n  annotations: {nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"50\"}\nspec:\n  ingressClassName: ostium\n  rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app-canary, port: {number: 80}}}}]}}]\n";
        let without = Objects::from_yaml(base).unwrap();
        let with = Objects::from_yaml(&format!("{base}---\n{canary}")).unwrap();
        let changed = reference(ObjectKind::Ingress, "default", "canary");
        // One set of options: each call makes another fallback certificate.
        let options = options();
        let mut incremental = Incremental::new();
        incremental.rebuild(&without, &options);
        let added = incremental.update(&with, &options, &changed);
        let full = crate::translate(&with, &options);
        assert!(full.table.default_route_ref().unwrap().policy.canary.is_some(), "the canary joins");
        assert_eq!(*added.table, full.table);
        let removed = incremental.update(&without, &options, &changed);
        assert_eq!(*removed.table, crate::translate(&without, &options).table);
    }

    #[test]
    fn a_new_table_shares_every_host_the_change_did_not_touch() {
        let mut objects = Objects::from_yaml(FLEET).unwrap();
        let mut incremental = Incremental::new();
        let before = incremental.rebuild(&objects, &options()).table;
        let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: e}\nspec:\n  ingressClassName: ostium\n  rules: [{host: e.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: own, port: {number: 80}}}}]}}]\n";
        objects.extend(&Objects::from_yaml(ingress).unwrap());
        let built = incremental.update(&objects, &options(), &reference(ObjectKind::Ingress, "default", "e"));
        assert_eq!(built.translated, 1);
        assert_eq!(built.served_added, [NamespacedName::new("default", "e")]);
        let after = &built.table;
        assert!(after.route(Some("e.example.com"), "/").is_some());
        for host in ["a.example.com", "b.example.com", "c.example.com", "d.example.com"] {
            let (old, new) = (before.route(Some(host), "/").unwrap(), after.route(Some(host), "/").unwrap());
            assert!(std::ptr::eq(old.route, new.route), "{host} is shared");
        }
    }
}
