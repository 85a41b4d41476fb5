//! kiln's service contracts and the runner that certifies an image against them.
//!
//! - [`vm`]: booting an image under QEMU (UEFI, KVM or TCG) from a throwaway overlay, reading its serial
//!   console; the runtime checks of a contract run in such a VM.
//! - [`runtime`]: runtime checks (boot target, unit active, port listening, command, kernel command line,
//!   no failed units) observed in the image booted in such a VM, without changing the image.
//!
//! - [`image`]: a built image's root file system read from the artifact itself (raw disk or OCI layout).
//! - [`statics`]: static checks of a contract's requirements against such an image; [`outcome`]: what a
//!   check gives (Pass, Skip with the reason, Fail with evidence, or an error of the checker).

pub mod certify;
pub mod image;
pub mod junit;
pub mod outcome;
pub mod runtime;
pub mod statics;
pub mod vm;
