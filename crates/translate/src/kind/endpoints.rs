//! Endpoints (core/v1): a Service's endpoints on API servers without EndpointSlices, and for
//! Services that have no slice. A change moves that Service's endpoints in place.

use k8s_openapi::api::core::v1::Endpoints;
use ostium_model::NamespacedName;

use crate::kind::{Kind, Relevance};
use crate::{ObjectKind, ObjectMap, Objects, Options};

impl Kind for Endpoints {
    const OBJECT_KIND: ObjectKind = ObjectKind::Endpoints;

    fn map(objects: &Objects) -> &ObjectMap<Self> {
        &objects.endpoints
    }

    fn map_mut(objects: &mut Objects) -> &mut ObjectMap<Self> {
        &mut objects.endpoints
    }

    fn differs(old: &Self, new: &Self) -> bool {
        old.subsets != new.subsets
    }

    /// An Endpoints object is named after its Service.
    fn relevance(&self, key: &NamespacedName, _: &Objects, _: &Options) -> Relevance {
        Relevance::Endpoints(key.clone())
    }
}
