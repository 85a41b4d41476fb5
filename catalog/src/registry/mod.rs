//! The catalog as an OCI registry (distribution-spec 1.1) under `/v2/`.
//!
//! Every request is parsed into a typed [`action::Action`] first ([`action::parse`], pure); then the
//! credentials are checked against what it needs ([`action::Access`]); then it runs ([`serve`]).
//! Errors are the spec's error bodies ([`error::RegistryError`]).
//!
//! * Any repository name can be pushed and pulled (monolithic and chunked uploads, cross-repository
//!   mounts, manifests by tag and digest, tags with pagination, the referrers API, deletes), by sha256 or
//!   sha512. Manifests and blobs are content-addressed blobs of the catalog's [`crate::store::BlobStore`];
//!   what belongs to which repository, tags and referrers are in the [`crate::store::MetaStore`].
//! * A kiln family is the repository of its name: publishing a version records its OCI layout there
//!   ([`publish`]), pulled as `FAMILY:VERSION` (a `+` in the version is `_` in the tag), by digest, and as
//!   `FAMILY:CHANNEL`. A family's repository is the catalog's own: pushes and deletes there are refused
//!   (publish with `kiln publish`). Pulling a version follows its lifecycle ([`crate::retired`]).
//! * Credentials as registry clients send them: HTTP Basic with a catalog token as the password
//!   (`podman login -u anything -p TOKEN`), or the token flow: a 401 challenges
//!   `Bearer realm="BASE/v2/token",service="kiln",scope="repository:NAME:push,pull"`, and
//!   `GET /v2/token` with the Basic credentials answers `{"token": T, "access_token": T}`.
//!
//!   The bearer token handed out is the catalog token itself, not a derived one: the client already holds
//!   it (it is the Basic password it just sent), so handing it back discloses nothing; its scopes are
//!   checked on every request as for the JSON API, so revoking the catalog token ends every registry
//!   session at once, and there is no second kind of secret to sign, expire or store. Without
//!   credentials and with public reads, the token endpoint hands out the token `anonymous`, which is
//!   no credential at all (reads only): the clients that only authenticate after a challenge get one from
//!   `GET /v2/`, which answers 401 until they come back with credentials or that token.
//!
//!   Pulls follow the catalog's `public_reads` setting (otherwise they need the `read` scope, or
//!   `publish`: a pusher reads what is there before it pushes); pushes and deletes need `publish`.

pub mod action;
pub mod error;
pub mod manifest;
pub mod publish;
mod serve;

pub use action::ROUTES;
pub(crate) use serve::respond;
