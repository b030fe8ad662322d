//! Where objects come from.

pub mod manifests;
