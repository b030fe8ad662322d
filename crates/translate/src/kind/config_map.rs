//! ConfigMaps: the global settings (`--configmap`) and the ConfigMaps its `proxy-set-headers`
//! and `add-headers` name, headers for external auth (`auth-proxy-set-headers`) and responses
//! (`custom-headers`). One counts while something
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

    /// The global settings' header ConfigMaps, named by the `--configmap` one.
    fn references(&self, key: &NamespacedName, options: &Options) -> Vec<Reference> {
        match options.configmap.as_ref() == Some(key) {
            true => header_config_maps(self),
            false => Vec::new(),
        }
    }

    /// Its metadata only.
    fn without_payload(&self) -> Option<Self> {
        Some(ConfigMap { metadata: self.metadata.clone(), ..ConfigMap::default() })
    }
}
