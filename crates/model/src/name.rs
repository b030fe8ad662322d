//! Kubernetes object identity.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A namespaced object's identity, written `namespace/name` (as in `--default-backend-service`).
///
/// The strings are shared: the store, the indexes and the table each key objects by their
/// identity, and a copy costs two reference counts, not two allocations.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// Why a `namespace/name` string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected `namespace/name`, got `{0}`")]
pub struct InvalidName(String);

impl NamespacedName {
    pub fn new(namespace: impl NamePart, name: impl NamePart) -> Self {
        Self { namespace: namespace.into_part(), name: name.into_part() }
    }
}

/// What a part of a [`NamespacedName`] is made from: a string, or a part already shared.
pub trait NamePart {
    fn into_part(self) -> Arc<str>;
}

impl NamePart for &str {
    fn into_part(self) -> Arc<str> {
        Arc::from(self)
    }
}

impl NamePart for String {
    fn into_part(self) -> Arc<str> {
        Arc::from(self)
    }
}

impl NamePart for &String {
    fn into_part(self) -> Arc<str> {
        Arc::from(self.as_str())
    }
}

impl NamePart for Arc<str> {
    fn into_part(self) -> Arc<str> {
        self
    }
}

impl NamePart for &Arc<str> {
    fn into_part(self) -> Arc<str> {
        self.clone()
    }
}

impl FromStr for NamespacedName {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::new(ns, name))
            }
            _ => Err(InvalidName(s.to_owned())),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_namespace_slash_name() {
        let n: NamespacedName = "default/web".parse().unwrap();
        assert_eq!(n, NamespacedName::new("default", "web"));
        assert_eq!(n.to_string(), "default/web");
    }

    #[test]
    fn rejects_missing_or_extra_parts() {
        for bad in ["web", "/web", "default/", "a/b/c", ""] {
            assert!(bad.parse::<NamespacedName>().is_err(), "{bad:?} should be rejected");
        }
    }
}
