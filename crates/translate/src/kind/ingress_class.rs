//! IngressClasses: which Ingresses are ours. Any change counts.

use k8s_openapi::api::networking::v1::IngressClass;
use ostium_model::NamespacedName;

use crate::kind::{Kind, Relevance};
use crate::{ObjectKind, ObjectMap, Objects, Options};

impl Kind for IngressClass {
    const OBJECT_KIND: ObjectKind = ObjectKind::IngressClass;

    fn map(objects: &Objects) -> &ObjectMap<Self> {
        &objects.ingress_classes
    }

    fn map_mut(objects: &mut Objects) -> &mut ObjectMap<Self> {
        &mut objects.ingress_classes
    }

    /// The default-class mark is an annotation.
    fn differs(old: &Self, new: &Self) -> bool {
        old.spec != new.spec || old.metadata.annotations != new.metadata.annotations
    }

    fn relevance(&self, _: &NamespacedName, _: &Objects, _: &Options) -> Relevance {
        Relevance::Table
    }

    fn reindex(objects: &mut Objects, _: &NamespacedName, _: Option<&Self>, _: Option<&Self>) {
        objects.index_classes();
    }
}
