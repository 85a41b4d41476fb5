//! kiln's catalog: where certified images are stored, given a lifecycle and resolved by contract.
//!
//! Pure parts: the [`model`], the resolver ([`resolve`]), the lifecycle rules ([`lifecycle`]) and the
//! release notes ([`notes`]). See `runbook/ARCHITECTURE.md` for the map.

pub mod known_issues;
pub mod lifecycle;
pub mod model;
pub mod notes;
pub mod resolve;
