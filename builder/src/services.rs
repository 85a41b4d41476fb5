//! Service states of the build's `services` step: kiln-systemd's `systemctl --root` equivalent, re-exported
//! under the name the build uses.

pub use kiln_systemd::*;
