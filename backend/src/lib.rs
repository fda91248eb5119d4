//! zerolink's Cranelift side: compile functions for the host and hand them to the image.
//!
//! - [`ZerolinkModule`] implements `cranelift_module::Module` on top of `zerolink_image::Image`:
//!   the drop-in replacement for `ObjectModule` that writes a finished executable.
//! - [`clif`] reads CLIF text files with data directives into a [`clif::Program`] that can be
//!   defined into any `Module`: ours, or cranelift-object's.
//! - [`driver`] builds a program straight into an image: in full, or as an in-place update of
//!   the executable a previous build left behind.
//! - [`reference`] is the separate-link path (cranelift-object, then the system linker) that
//!   tests and benchmarks compare against.
//! - [`target`] builds the host ISA with caller-chosen settings; [`relocs`] maps Cranelift
//!   relocations to image references.
//! - [`debug`] writes DWARF and unwind tables for `-g`, and keeps them current in updates.

pub mod clif;
pub mod debug;
pub mod driver;
pub mod error;
pub mod inputs;
pub mod libs;
pub mod module;
mod parallel;
pub mod reference;
pub mod relocs;
pub mod target;

pub use error::{BackendError, Result, SourcePos};
pub use libs::LinkOptions;
pub use module::{SourceFileId, ZerolinkModule};
pub use target::TargetOptions;
