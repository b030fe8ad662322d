//! Kubernetes object identity.

use std::fmt;
use std::str::FromStr;

/// A namespaced object's identity, written `namespace/name` (as in `--default-backend-service`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

/// Why a `namespace/name` string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected `namespace/name`, got `{0}`")]
pub struct InvalidName(String);

impl NamespacedName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
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
