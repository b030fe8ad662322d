//! Secrets: TLS certificates and basic-auth users. One counts while something names it; one
//! nothing names may be held without its data.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use ostium_model::NamespacedName;

use crate::kind::{Kind, Relevance};
use crate::{ObjectKind, ObjectMap, Objects, Options};

impl Kind for Secret {
    const OBJECT_KIND: ObjectKind = ObjectKind::Secret;

    fn map(objects: &Objects) -> &ObjectMap<Self> {
        &objects.secrets
    }

    fn map_mut(objects: &mut Objects) -> &mut ObjectMap<Self> {
        &mut objects.secrets
    }

    fn differs(old: &Self, new: &Self) -> bool {
        old.data != new.data || old.type_ != new.type_
    }

    fn relevance(&self, _: &NamespacedName, _: &Objects, _: &Options) -> Relevance {
        Relevance::TableWhileReferenced
    }

    /// Its metadata and type only.
    fn without_payload(&self) -> Option<Self> {
        Some(Secret { metadata: self.metadata.clone(), type_: self.type_.clone(), ..Secret::default() })
    }

    fn normalize(&mut self) {
        let Some(string_data) = self.string_data.take() else { return };
        let data = self.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in string_data {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
}
