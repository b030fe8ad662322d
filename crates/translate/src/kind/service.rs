//! Services: ports, and where their endpoints are. One counts while something names it.

use k8s_openapi::api::core::v1::Service;
use ostium_model::NamespacedName;

use crate::kind::{Kind, Relevance};
use crate::{ObjectKind, ObjectMap, Objects, Options};

impl Kind for Service {
    const OBJECT_KIND: ObjectKind = ObjectKind::Service;

    fn map(objects: &Objects) -> &ObjectMap<Self> {
        &objects.services
    }

    fn map_mut(objects: &mut Objects) -> &mut ObjectMap<Self> {
        &mut objects.services
    }

    fn differs(old: &Self, new: &Self) -> bool {
        old.spec != new.spec
    }

    fn relevance(&self, _: &NamespacedName, _: &Objects, _: &Options) -> Relevance {
        Relevance::TableWhileReferenced
    }
}
