//! Ingresses: the rules. One counts when it is of our class, or was served by the last table.

use k8s_openapi::api::networking::v1::Ingress;
use ostium_model::NamespacedName;

use crate::kind::{Kind, Reference, Relevance};
use crate::{ObjectKind, ObjectMap, Objects, Options, annotations, class};

impl Kind for Ingress {
    const OBJECT_KIND: ObjectKind = ObjectKind::Ingress;

    fn map(objects: &Objects) -> &ObjectMap<Self> {
        &objects.ingresses
    }

    fn map_mut(objects: &mut Objects) -> &mut ObjectMap<Self> {
        &mut objects.ingresses
    }

    /// Its status is the controller's own to write, read from the API server when it does.
    fn compact(&mut self) {
        self.status = None;
        let Some(spec) = &mut self.spec else { return };
        for rule in spec.rules.iter_mut().flatten() {
            if let Some(http) = &mut rule.http {
                http.paths.shrink_to_fit();
            }
        }
        if let Some(rules) = &mut spec.rules {
            rules.shrink_to_fit();
        }
        if let Some(tls) = &mut spec.tls {
            tls.shrink_to_fit();
        }
    }

    /// Annotations count: editing them does not bump the generation. The age counts too: it
    /// decides which of two conflicting Ingresses wins.
    fn differs(old: &Self, new: &Self) -> bool {
        old.spec != new.spec
            || old.metadata.annotations != new.metadata.annotations
            || old.metadata.creation_timestamp != new.metadata.creation_timestamp
    }

    /// Ours, or naming our `--ingress-class` as its `ingressClassName`: such an Ingress is not
    /// served while no IngressClass of that name exists, and translation reports it.
    fn relevance(&self, key: &NamespacedName, objects: &Objects, options: &Options) -> Relevance {
        let watched = options.watch_namespace.as_ref().is_none_or(|ns| **ns == *key.namespace);
        let names_our_class = self.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref())
            == Some(options.ingress_class.as_str());
        let ours = watched
            && (names_our_class || class::Classes::new(objects, options).is_ours(key, self, &mut Vec::new()));
        Relevance::TableWhenServed { ours }
    }

    /// Its backends' and `default-backend`'s Services, its TLS, auth, client certificate and
    /// backend TLS Secrets and its external auth and custom headers' ConfigMaps, read straight
    /// from the object, whatever its class: what its translation reads.
    fn references(&self, key: &NamespacedName, options: &Options) -> Vec<Reference> {
        // Whether the ConfigMap allows objects of other namespaces is decided at translation;
        // held here either way, so that they are at hand when it does.
        const CROSS: bool = true;
        let mut refs = Vec::new();
        let Some(spec) = &self.spec else { return refs };
        let service =
            |name: &str| Reference::new(ObjectKind::Service, &NamespacedName::new(&key.namespace, name));
        let secret =
            |name: &str| Reference::new(ObjectKind::Secret, &NamespacedName::new(&key.namespace, name));
        let backends = spec.rules.iter().flatten().flat_map(|r| r.http.iter().flat_map(|h| &h.paths));
        for backend in backends.map(|p| &p.backend).chain(&spec.default_backend) {
            if let Some(backend) = &backend.service {
                refs.push(service(&backend.name));
            }
        }
        for tls in spec.tls.iter().flatten() {
            if let Some(name) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) {
                refs.push(secret(name));
            }
        }
        let annotation = |name: &str| {
            self.metadata.annotations.as_ref()?.get(&format!("{}/{name}", options.annotations_prefix))
        };
        for secret in ["auth-secret", "auth-tls-secret"] {
            if let Some(name) =
                annotation(secret).and_then(|value| annotations::auth_secret(&key.namespace, value, CROSS))
            {
                refs.push(Reference { kind: ObjectKind::Secret, key: name });
            }
        }
        if let Some(name) =
            annotation("default-backend").map(|name| name.trim()).filter(|name| !name.is_empty())
        {
            refs.push(service(name));
        }
        let backend_tls_secret = annotation("proxy-ssl-secret")
            .and_then(|value| annotations::backend_tls_secret(&key.namespace, value, CROSS).ok());
        if let Some(name) = backend_tls_secret {
            refs.push(Reference { kind: ObjectKind::Secret, key: name });
        }
        let auth_headers = annotation("auth-proxy-set-headers")
            .and_then(|value| annotations::auth_headers_config_map(&key.namespace, value, CROSS).ok());
        if let Some(name) = auth_headers {
            refs.push(Reference { kind: ObjectKind::ConfigMap, key: name });
        }
        let custom_headers = annotation("custom-headers")
            .and_then(|value| annotations::auth_headers_config_map(&key.namespace, value, CROSS).ok());
        if let Some(name) = custom_headers {
            refs.push(Reference { kind: ObjectKind::ConfigMap, key: name });
        }
        refs.sort();
        refs.dedup();
        refs
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    /// A Secret a route reads must be held with its data, so `proxy-ssl-secret` names it like
    /// `auth-secret` does; one of another namespace too, which a ConfigMap with
    /// `allow-cross-namespace-resources` lets routes read.
    #[test]
    fn auth_and_backend_tls_secrets_are_referenced() {
        let options = Options::new(
            ostium_test_support::fallback_certificate(),
            Arc::new(rustls::crypto::ring::default_provider()),
        );
        let ingress = |backend_tls: &str| {
            let annotations = json!({
                "nginx.ingress.kubernetes.io/auth-secret": "htpasswd",
                "nginx.ingress.kubernetes.io/proxy-ssl-secret": backend_tls,
            });
            let value = json!({"metadata": {"name": "web", "namespace": "shop", "annotations": annotations}, "spec": {}});
            Ingress::from_value(value).unwrap()
        };
        let key = NamespacedName::new("shop", "web");
        let secrets = |ingress: Ingress| -> Vec<String> {
            ingress.references(&key, &options).iter().map(ToString::to_string).collect()
        };
        assert_eq!(secrets(ingress("shop/backend-ca")), ["secret shop/backend-ca", "secret shop/htpasswd"]);
        assert_eq!(secrets(ingress("other/backend-ca")), ["secret other/backend-ca", "secret shop/htpasswd"]);
        assert_eq!(secrets(ingress("not-a-reference")), ["secret shop/htpasswd"]);
    }

    /// The `custom-headers` ConfigMap is read whole and its edits rebuild; one of another
    /// namespace too (`allow-cross-namespace-resources` decides at translation).
    #[test]
    fn the_custom_headers_config_map_is_referenced() {
        let options = Options::new(
            ostium_test_support::fallback_certificate(),
            Arc::new(rustls::crypto::ring::default_provider()),
        );
        let key = NamespacedName::new("shop", "web");
        let references = |reference: &str| -> Vec<String> {
            let annotations = json!({"nginx.ingress.kubernetes.io/custom-headers": reference});
            let value = json!({"metadata": {"name": "web", "namespace": "shop", "annotations": annotations}, "spec": {}});
            let ingress = Ingress::from_value(value).unwrap();
            ingress.references(&key, &options).iter().map(ToString::to_string).collect()
        };
        assert_eq!(references("shop/headers"), ["configmap shop/headers"]);
        assert_eq!(references("headers"), ["configmap shop/headers"]);
        assert_eq!(references("other/headers"), ["configmap other/headers"]);
        assert!(references("a/b/c").is_empty());
    }
}
