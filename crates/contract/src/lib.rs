//! kiln's service contracts: the promises an image makes to its consumers (`contracts/*.toml`), as one
//! typed model that the test runner (`kiln-testsuites`) checks images against and the catalog selects
//! images by.
//!
//! - [`model`]: contracts, requirements and the kinds of check they ask for.

pub mod model;

pub use model::{
    Check, ConfigFormat, Contract, ContractId, FileKind, Match, PackageState, Protocol, Requirement,
    ServiceState, Severity, Stage,
};
