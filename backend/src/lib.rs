//! zerolink's Cranelift side: compile functions for the host and hand them to the image.
//!
//! - [`ZerolinkModule`] implements `cranelift_module::Module` on top of `zerolink_image::Image`:
//!   the drop-in replacement for `ObjectModule` that writes a finished executable.
//! - [`clif`] reads CLIF text files with data directives into a [`clif::Program`] that can be
//!   defined into any `Module`: ours, or cranelift-object's.
//! - [`reference`] is the separate-link path (cranelift-object, then the system linker) that
//!   tests and benchmarks compare against.
//! - [`target`] builds the host ISA with caller-chosen settings; [`relocs`] maps Cranelift
//!   relocations to image references.

pub mod clif;
pub mod error;
pub mod module;
pub mod reference;
pub mod relocs;
pub mod target;

pub use error::{BackendError, Result, SourcePos};
pub use module::ZerolinkModule;
pub use target::TargetOptions;

use std::path::Path;

/// Build `program` straight into the executable `output`: the direct path.
pub fn build(
    program: &clif::Program,
    target: &TargetOptions,
    output: &Path,
) -> Result<zerolink_image::Summary> {
    let mut module = ZerolinkModule::new(target.isa()?, output)?;
    module.expect_code_bytes(program.code_size_estimate());
    program.define_in(&mut module)?;
    module.finish()
}
