//! zerolink's Cranelift side: compile functions for the host and hand them to the image.
//!
//! - [`session`] is the one way into an image for every front end: open OUT (or start it),
//!   name units, check and define what changed, finish. [`Session`], [`FullReason`].
//! - [`ZerolinkModule`] implements `cranelift_module::Module` on top of `zerolink_image::Image`:
//!   the drop-in replacement for `ObjectModule` that writes a finished executable.
//! - [`clif`] reads CLIF text files with data directives into a [`clif::Program`] that can be
//!   defined into any `Module`: ours, or cranelift-object's.
//! - [`driver`] builds CLIF files through a session: in full, or as an in-place update that
//!   reads only the files that changed.
//! - [`reference`] is the separate-link path (cranelift-object, then the system linker) that
//!   tests and benchmarks compare against.
//! - [`target`] builds the host ISA with caller-chosen settings; [`relocs`] maps Cranelift
//!   relocations to image references.
//! - [`debug`] writes DWARF and unwind tables for `-g`, and keeps them current in updates.

pub mod clif;
pub mod debug;
pub mod driver;
pub mod error;
pub mod hot;
pub mod inputs;
pub mod ldscript;
pub mod libs;
pub mod module;
pub mod objects;
mod parallel;
pub mod reference;
pub mod relocs;
pub mod session;
pub mod target;

pub use error::{BackendError, Result, SourcePos};
pub use libs::LinkOptions;
pub use module::{ModuleOptions, SourceFileId, ZerolinkModule};
pub use session::{
    FullReason, LockWait, Mode, Report, Session, SessionOptions, UnitId, UnitStatus,
};
pub use target::TargetOptions;
pub use zerolink_image::Summary;

/// The README's Rust snippets compile and run (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
