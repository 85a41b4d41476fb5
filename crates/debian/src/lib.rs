//! Debian repository client: apt sources, signed indices, dependency resolution, verified downloads.
