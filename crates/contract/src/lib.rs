//! kiln's service contracts: the promises an image makes to its consumers (`contracts/*.toml`), as one
//! typed model that the test runner (`kiln-testsuites`) checks images against and the catalog selects
//! images by.
//!
//! - [`model`]: contracts, requirements and the kinds of check they ask for.
//! - [`parse`](mod@parse): one `contracts/*.toml` file into a [`Contract`], every problem located (`file:line:col`).
//! - [`set`]: the contracts of a folder: unique versions, `extends` resolved (highest matching version),
//!   effective requirements, which certified contract satisfies which request, runbook citations.

pub mod model;
pub mod parse;
pub mod set;

pub use model::{
    Check, ConfigFormat, Contract, ContractId, FileKind, Match, PackageState, Protocol, Requirement,
    ServiceState, Severity, Stage,
};
pub use parse::parse;
pub use set::{ContractSet, ContractSetError, MissingRunbook};
