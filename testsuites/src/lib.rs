//! kiln's service contracts and the runner that certifies an image against them.
//!
//! - [`vm`]: booting an image under QEMU (UEFI, KVM or TCG) from a throwaway overlay, reading its serial
//!   console; the runtime checks of a contract run in such a VM.
//!
//! Contract parsing and the static and runtime checks land here with the certification work.

pub mod image;
pub mod vm;
