//! Where objects come from.

pub(crate) mod cluster;
pub(crate) mod manifests;
