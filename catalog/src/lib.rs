//! kiln's catalog: where certified images are stored, given a lifecycle and resolved by contract.
//!
//! The store, publishing, lifecycle and the HTTP API land here; until then the crate only marks the
//! place in the workspace (see `runbook/ARCHITECTURE.md`).
