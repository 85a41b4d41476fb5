//! Root trees from .deb files: unpack, dpkg database, configure in an isolated sandbox, normalize, digest.
