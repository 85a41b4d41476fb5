//! kiln's catalog: where certified images are stored, given a lifecycle and resolved by contract.
//!
//! Pure parts: the [`model`], the resolver ([`resolve`]), the lifecycle rules ([`lifecycle`]) and the
//! release notes ([`notes`]). See `runbook/ARCHITECTURE.md` for the map.

pub mod boot;
pub mod bundle;
pub mod client;
mod error;
pub mod http;
pub mod model;
pub mod registry;
pub mod service;
pub mod store;

pub use error::CatalogError;
pub use service::{Catalog, PublishOutcome, PublishRequest};
pub mod known_issues;
pub mod lifecycle;
pub mod notes;
pub mod resolve;
pub mod retired;
pub mod web;
