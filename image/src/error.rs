//! Errors the image can report. Each names what a user can act on: the symbol, the function and
//! offset of a reference, or the file that could not be written.

use std::path::PathBuf;

/// One symbol that nothing defines, with every symbol whose code or data refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undefined {
    pub name: String,
    pub referenced_by: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Another build of the same output holds its lock (and the caller asked not to wait).
    #[error("another build of `{}` is running (it holds the lock file beside it)", .0.display())]
    Busy(PathBuf),
    #[error("cannot write `{path}`: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}", format_undefined(.0))]
    Undefined(Vec<Undefined>),
    #[error(
        "the program has more than {0} symbols, the most one executable's table can name: \
         split it into shared libraries"
    )]
    TooManySymbols(u32),
    #[error("symbol `{0}` is defined more than once")]
    DuplicateDefinition(String),
    #[error("symbol `{name}` is declared as a {declared} but used as a {used}")]
    KindMismatch {
        name: String,
        declared: &'static str,
        used: &'static str,
    },
    #[error(
        "relocation {kind} in `{function}` at offset {offset:#x} cannot reach `{target}` \
         (value {value:#x} does not fit)"
    )]
    Overflow {
        function: String,
        offset: u32,
        kind: &'static str,
        target: String,
        value: i128,
    },
    #[error(
        "relocation in `{function}` at offset {offset:#x} cannot reach `{target}`: its addend \
         {addend} does not fit in 32 bits (every address of the image is below 4 GiB)"
    )]
    AddendTooWide {
        function: String,
        offset: u32,
        target: String,
        addend: i64,
    },
    #[error(
        "`{function}` at offset {offset:#x} holds {kind}, which a position-independent \
         executable cannot have: compile it position-independent (`is_pic`, `-fPIC`), or build \
         without --pie"
    )]
    NotInPie {
        function: String,
        offset: u32,
        kind: &'static str,
    },
    #[error(
        "a freestanding position-independent executable cannot have thread-locals yet (`{0}` \
         is one; its start-up code would reach their template by a 32-bit address): build \
         without --pie, or with libc"
    )]
    FreestandingPieTls(String),
    #[error("thread-local reference in `{function}` at offset {offset:#x} to `{target}` {why}")]
    ThreadLocal {
        function: String,
        offset: u32,
        target: String,
        why: &'static str,
    },
    #[error("`{name}` ({size} bytes at offset {offset:#x}) lies outside `{base}`")]
    AliasOutside {
        name: String,
        base: String,
        offset: u64,
        size: u64,
    },
    #[error("relocation in `{function}` at offset {offset:#x} lies outside its {size} bytes")]
    SiteOutOfBounds {
        function: String,
        offset: u32,
        size: u64,
    },
    #[error(
        "the {region} region is full: `{name}` needs {needed} bytes more than its \
         {reserve:#x}-byte reserve holds"
    )]
    RegionFull {
        region: &'static str,
        /// The definition that did not fit (empty for the image's own tables).
        name: String,
        needed: u64,
        reserve: u64,
    },
    /// The program defines a name that zerolink's runtime defines itself.
    #[error(
        "`{0}` is reserved: zerolink's runtime defines it (the entry point `_start` calls \
         `main`); rename the definition"
    )]
    Reserved(String),
    #[error("alignment {align} of `{name}` is not a power of two of at most 4096")]
    BadAlignment { name: String, align: u64 },
    #[error(
        "`{function}` at offset {offset:#x} refers to `{target}`, which comes from a shared \
         library, with a {kind} reference; such references need the GOT (compile with \
         is_pic) or, in data, a writable object"
    )]
    ImportReference {
        function: String,
        offset: u32,
        kind: &'static str,
        target: String,
    },
    #[error(
        "`{name}` is a shared library's data object that code reaches directly (not through \
         the GOT), so it needs a copy in the executable, but {why}"
    )]
    Copy { name: String, why: &'static str },
    #[error("the address of shared-library function `{name}` is taken directly, but {why}")]
    ImportAddress { name: String, why: &'static str },
    #[error("`{name}`: {why}")]
    EhFrame { name: String, why: &'static str },
    #[error("`{name}` is an indirect function (STT_GNU_IFUNC), but {why}")]
    Ifunc { name: String, why: &'static str },
    #[error("the table in the existing executable is damaged ({0})")]
    TableDamaged(&'static str),
    #[error("no entry point: the program must define `{0}`")]
    NoEntry(String),
}

fn format_undefined(list: &[Undefined]) -> String {
    let mut out = String::new();
    for (i, u) in list.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("undefined symbol `{}`", u.name));
        if !u.referenced_by.is_empty() {
            let refs: Vec<String> = u.referenced_by.iter().map(|r| format!("`{r}`")).collect();
            out.push_str(&format!(", referenced by {}", refs.join(", ")));
        }
    }
    out
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |error| ImageError::Io { path, error }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
