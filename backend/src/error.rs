//! Errors of the Cranelift side. Each carries what a user needs to act: file and line for input
//! problems, function and offset for code that cannot be placed.

use std::path::PathBuf;

use zerolink_image::ImageError;

/// A place in an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePos {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for SourcePos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A precompiled input (an object, an archive member) that cannot be used.
    #[error("{file}: {reason}")]
    Object {
        file: String,
        reason: crate::objects::ObjectError,
    },
    #[error("{pos}: {message}")]
    Parse { pos: SourcePos, message: String },
    #[error("{pos}: in function `{function}`: {message}")]
    Verifier {
        pos: SourcePos,
        function: String,
        message: String,
    },
    #[error("{pos}: bad data directive: {message}")]
    Directive { pos: SourcePos, message: String },
    #[error("`{name}` is defined twice: at {first} and at {second}")]
    DuplicateDefinition {
        name: String,
        first: SourcePos,
        second: SourcePos,
    },
    #[error("{pos}: `{function}` refers to `{name}` as a function, but it is a data object")]
    NotAFunction {
        pos: SourcePos,
        function: String,
        name: String,
    },
    /// A call whose signature differs from the callee's definition; `message` says how.
    #[error("{pos}: `{function}` {message}")]
    SignatureMismatch {
        pos: SourcePos,
        function: String,
        message: String,
    },
    /// A call compiled with another signature than its callee's definition.
    #[error("`{caller}` calls `{callee}` with a signature that differs from its definition")]
    CallSignature { caller: String, callee: String },
    /// A function's signature changed, and a caller that was not compiled again uses the old.
    #[error(
        "the signature of `{callee}` changed, but `{caller}` calls it and was not defined \
         again in this build: define `{caller}` again, or keep the old signature"
    )]
    StaleCaller { caller: String, callee: String },
    /// The update cannot go on; a full build can (a front end that can define the whole
    /// program again starts over with `Session::rebuild_in_full`).
    #[error("this change needs a full build: {0}")]
    NeedsFullBuild(crate::session::FullReason),
    #[error("{pos}: {message}")]
    Unsupported { pos: SourcePos, message: String },
    #[error("relocation {kind} in `{function}` at offset {offset:#x} is not supported")]
    UnsupportedReloc {
        function: String,
        offset: u32,
        kind: String,
    },
    #[error("in `{function}`: {message}")]
    Compile { function: String, message: String },
    /// The previous build's debug information cannot be built on; a full build can.
    #[error("its debug information cannot be updated: {0}")]
    PreviousDebugInfo(String),
    #[error("setting `{name}`: {message}")]
    Setting { name: String, message: String },
    #[error("this host is not supported: {0}")]
    Host(String),
    /// An ISA zerolink cannot write executables for, refused before any work.
    #[error(
        "zerolink cannot write executables for `{0}`: it writes x86-64 Linux ELF executables \
         (x86_64-unknown-linux-gnu)"
    )]
    Target(String),
    #[error("cannot read `{path}`: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{0}")]
    Module(String),
    #[error("separate link: {0}")]
    Link(String),
    /// A shared library that cannot be found or read.
    #[error("{0}")]
    Library(String),
    /// Names the program needs that the previous build defined and this one did not define
    /// again (a front end that defines only what changed, as with `JITModule`).
    #[error(
        "{error}\n  ({names} defined by the previous build of this executable but not by \
         this one: an update defines the whole program again, or keeps whole units with \
         `begin_unit`)"
    )]
    NotDefinedAgain {
        names: String,
        error: Box<BackendError>,
    },
    /// OUT is something an executable cannot be written to.
    #[error("{path}: {why}")]
    Output { path: String, why: String },
}

impl From<cranelift_module::ModuleError> for BackendError {
    fn from(e: cranelift_module::ModuleError) -> Self {
        use cranelift_module::ModuleError;
        match e {
            // Our own errors travel through cranelift-module as `Backend(anyhow)`: unwrap them
            // so callers get the typed error back.
            ModuleError::Backend(inner) => match inner.downcast::<BackendError>() {
                Ok(e) => e,
                Err(inner) => BackendError::Module(format!("{inner:#}")),
            },
            other => BackendError::Module(other.to_string()),
        }
    }
}

/// Our errors as cranelift-module's, for code written against `Module` (`?` in a function
/// returning `ModuleResult`): carried as `ModuleError::Backend`, which the conversion back
/// (above) unwraps again, so the typed error survives the round trip.
impl From<BackendError> for cranelift_module::ModuleError {
    fn from(e: BackendError) -> Self {
        cranelift_module::ModuleError::Backend(e.into())
    }
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// The error for a panic caught while Cranelift compiled `function` (it rejects some input its
/// verifier accepts, such as an `i128` argument on x86-64, by panicking).
pub(crate) fn cannot_compile(
    function: String,
    payload: Box<dyn std::any::Any + Send>,
) -> BackendError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    BackendError::Compile {
        function,
        message: format!("Cranelift cannot compile this function: {what}"),
    }
}
