//! kiln's service contracts and the runner that certifies an image against them.
//!
//! Contract parsing, static checks over the artifact and runtime checks in a booted VM land here; until
//! then the crate only marks the place in the workspace (see `runbook/ARCHITECTURE.md`).
