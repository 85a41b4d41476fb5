//! Helpers of kiln-github's integration tests.

pub mod fake_github;
