//! Where objects come from.

pub mod cluster;
pub mod manifests;
