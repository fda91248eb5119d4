//! Precompiled code: ELF relocatable objects (`cc -c` output) and `ar` archives of them
//! (static libraries, libgcc, `libc_nonshared.a`), placed into the image beside the
//! program's own code.
//!
//! Each loaded section of an object (`.text.f`, `.rodata`, `.data`, `.bss`) is placed as one
//! definition in a slot of exactly its size, and the object's global symbols become aliases
//! at their offsets inside it; relocations become reference sites like Cranelift's, so
//! references between precompiled code and the program are patched through the table like
//! any other. Archives follow LLD's semantics: every symbol every archive offers is known
//! from its index, and a member is extracted as soon as a reference needs it, whatever the
//! order on the command line (`link.rs`). The archives the C toolchain itself adds
//! (`libc_nonshared.a` after libc, then libgcc) are searched after the shared libraries, as
//! `cc` links them.
//!
//! Each object's `.eh_frame` is placed as a section of its own, personality routines and
//! LSDAs included (`unwind.rs`), and `.eh_frame_hdr` indexes it, so C++ exceptions and
//! backtraces work across objects, and across CLIF frames with `-g`. Not loaded: notes and
//! anything without `SHF_ALLOC`. Constructors and destructors (`.init_array`, `.fini_array`)
//! are gathered into one array each and run at start-up and exit. Thread-locals (`.tdata`,
//! `.tbss`) join the TLS region, and every TLS sequence becomes local-exec. IFUNC symbols are
//! reached through stubs. Refused with the object's name and the place: old-style
//! `.ctors`/`.dtors` and `.preinit_array`, TLS descriptors, an executable stack, and every
//! relocation type, section type, symbol type or binding not handled.
//!
//! Kept across updates: an update whose precompiled files have the stat data (or, when
//! touched, the contents) the table recorded keeps every byte of them; any other change to
//! them, or a new reference that an archive would satisfy, is a full build, with the reason.

use std::path::{Path, PathBuf};

use thiserror::Error;

pub mod archive;
pub mod elf;
mod link;
pub mod relocs;
mod unwind;

pub use link::{Claimed, LinkStats, Origin, Precompiled, PrecompiledInput};

/// What is wrong with an object or archive (the file is named beside it).
#[derive(Debug, Error)]
pub enum ObjectError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("is {0}, not a relocatable object (`cc -c` output) or an archive of them")]
    NotRelocatable(&'static str),
    #[error("is an object for ELF machine {0}, not x86-64")]
    WrongMachine(u16),
    #[error("is a thin archive, whose members live in other files: make a normal one (`ar rcs`)")]
    ThinArchive,
    #[error("member `{0}`: {1}")]
    Member(String, Box<ObjectError>),
    #[error(
        "section `{section}` at offset {offset:#x}: relocation {rtype} is not supported \
         (supported: R_X86_64_64, PC32, PLT32, 32, 32S, PC64, GOTPCREL, GOTPCRELX, \
         REX_GOTPCRELX, GOTOFF64, GOTPC32, GOTPC64, SIZE32, SIZE64, TLSGD, TLSLD, DTPOFF32, \
         GOTTPOFF, TPOFF32)"
    )]
    UnsupportedRelocation {
        section: String,
        offset: u64,
        rtype: String,
    },
    #[error(
        "section `{section}` at offset {offset:#x}: {rtype} is a thread-local storage \
         relocation zerolink does not place (TLS descriptors, 64-bit offsets): compile with \
         the default `-mtls-dialect=gnu`"
    )]
    ThreadLocal {
        section: String,
        offset: u64,
        rtype: String,
    },
    #[error(
        "section `{section}`: a relocation at offset {offset:#x} lies outside its {size} bytes"
    )]
    RelocationOutside {
        section: String,
        offset: u64,
        size: u64,
    },
    #[error(
        "section `{section}` at offset {offset:#x} refers to `{target}`, which is in a section \
         that is not loaded"
    )]
    NotLoaded {
        section: String,
        offset: u64,
        target: String,
    },
    #[error("section `{section}` at offset {offset:#x} refers to absolute symbol `{target}`, which is not supported")]
    AbsoluteTarget {
        section: String,
        offset: u64,
        target: String,
    },
    #[error("section `{section}` at offset {offset:#x}: the size of `{target}` is not known")]
    UnknownSize {
        section: String,
        offset: u64,
        target: String,
    },
    #[error(
        "has old-style constructors or destructors (`{0}`), which are not supported: \
         compile it with a compiler that emits `.init_array`/`.fini_array` (any GCC or \
         Clang of the last decade)"
    )]
    Constructors(String),
    #[error(
        "asks for an executable stack (its `.note.GNU-stack` is executable); rebuild it \
         with `-Wa,--noexecstack` or fix the assembly"
    )]
    ExecStack,
    /// A construct the image refuses (its reason names the symbol).
    #[error("{0}")]
    Refused(String),
    #[error("section `{section}` at offset {offset:#x}: {what} is not supported")]
    Unsupported {
        section: String,
        offset: u64,
        what: String,
    },
    #[error("defines `{name}`, which {other} defines too")]
    Duplicate { name: String, other: String },
}

/// What kind of input a file is, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Clif,
    Object,
    Archive,
}

/// Recognise an input by content: an ELF file or an `ar` archive; anything else is CLIF.
/// Files named `*.clif` are taken as CLIF without opening them, so a build that finds them
/// unchanged reads nothing.
pub fn sniff(path: &Path) -> std::io::Result<InputKind> {
    if path.extension().is_some_and(|e| e == "clif") {
        return Ok(InputKind::Clif);
    }
    sniff_content(path)
}

/// [`sniff`] by the first bytes alone, whatever the name.
pub fn sniff_content(path: &Path) -> std::io::Result<InputKind> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    Ok(if elf::is_object(head) {
        InputKind::Object
    } else if archive::is_archive(head) {
        InputKind::Archive
    } else {
        InputKind::Clif
    })
}

/// Split inputs into CLIF files and precompiled ones (given on the command line: `User`).
pub fn classify(paths: &[PathBuf]) -> crate::error::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut clif = Vec::new();
    let mut pre = Vec::new();
    for p in paths {
        let kind = sniff(p).map_err(|e| crate::error::BackendError::Object {
            file: p.display().to_string(),
            reason: ObjectError::Io(e),
        })?;
        match kind {
            InputKind::Clif => clif.push(p.clone()),
            _ => pre.push(p.clone()),
        }
    }
    Ok((clif, pre))
}
