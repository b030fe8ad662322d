//! EndpointSlices: a Service's endpoints, found by the slice's `kubernetes.io/service-name`
//! label. A change moves that Service's endpoints in place.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use ostium_model::NamespacedName;

use crate::kind::{Kind, Relevance};
use crate::{ObjectKind, ObjectMap, Objects, Options, SERVICE_NAME_LABEL};

impl Kind for EndpointSlice {
    const OBJECT_KIND: ObjectKind = ObjectKind::EndpointSlice;

    fn map(objects: &Objects) -> &ObjectMap<Self> {
        &objects.endpoint_slices
    }

    fn map_mut(objects: &mut Objects) -> &mut ObjectMap<Self> {
        &mut objects.endpoint_slices
    }

    /// Moving to another Service counts too.
    fn differs(old: &Self, new: &Self) -> bool {
        old.endpoints != new.endpoints
            || old.ports != new.ports
            || old.address_type != new.address_type
            || service_label(old) != service_label(new)
    }

    fn relevance(&self, key: &NamespacedName, _: &Objects, _: &Options) -> Relevance {
        service(key, self).map_or(Relevance::Nobody, Relevance::Endpoints)
    }

    fn reindex(objects: &mut Objects, key: &NamespacedName, old: Option<&Self>, new: Option<&Self>) {
        let old = old.and_then(|slice| service(key, slice));
        let new = new.and_then(|slice| service(key, slice));
        objects.index_slice(key, old, new);
    }
}

/// The Service a slice belongs to, by its label.
fn service(key: &NamespacedName, slice: &EndpointSlice) -> Option<NamespacedName> {
    Some(NamespacedName::new(&key.namespace, service_label(slice)?))
}

fn service_label(slice: &EndpointSlice) -> Option<&String> {
    slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)
}
