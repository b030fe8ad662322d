//! ConfigMaps: the global settings (`--configmap`) and the ConfigMaps its `proxy-set-headers`
//! and `add-headers` name, TCP and UDP services (`--tcp-services-configmap`,
//! `--udp-services-configmap`, which name Services), headers for external auth
//! (`auth-proxy-set-headers`) and responses (`custom-headers`). One counts while something
//! names it; one nothing names is held without its data, so a cluster's many ConfigMaps cost
//! only their metadata.

use k8s_openapi::api::core::v1::ConfigMap;
use ostium_model::NamespacedName;

use crate::global_config::header_config_maps;
use crate::kind::{Kind, Reference, Relevance};
use crate::{ObjectKind, ObjectMap, Objects, Options};

impl Kind for ConfigMap {
    const OBJECT_KIND: ObjectKind = ObjectKind::ConfigMap;

    fn map(objects: &Objects) -> &ObjectMap<Self> {
        &objects.config_maps
    }

    fn map_mut(objects: &mut Objects) -> &mut ObjectMap<Self> {
        &mut objects.config_maps
    }

    fn differs(old: &Self, new: &Self) -> bool {
        old.data != new.data || old.binary_data != new.binary_data
    }

    fn relevance(&self, _: &NamespacedName, _: &Objects, _: &Options) -> Relevance {
        Relevance::TableWhileReferenced
    }

    /// A TCP or UDP services ConfigMap names the Services of its entries; the `--configmap`
    /// one, the ConfigMaps of its header keys.
    fn references(&self, key: &NamespacedName, options: &Options) -> Vec<Reference> {
        if options.configmap.as_ref() == Some(key) {
            return header_config_maps(self);
        }
        let is_streams = [&options.tcp_services_configmap, &options.udp_services_configmap]
            .into_iter()
            .any(|flag| flag.as_ref() == Some(key));
        if !is_streams {
            return Vec::new();
        }
        let mut services: Vec<Reference> = crate::stream::referenced_services(self)
            .map(|service| Reference::new(ObjectKind::Service, &service))
            .collect();
        services.sort();
        services.dedup();
        services
    }

    /// Its metadata only.
    fn without_payload(&self) -> Option<Self> {
        Some(ConfigMap { metadata: self.metadata.clone(), ..ConfigMap::default() })
    }
}
