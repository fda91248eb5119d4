//! What OUT names, decided before any work, as ld treats its output: a regular file (or a
//! symbolic link to one, followed so the link stays a link) is written as zerolink writes
//! executables, by a temporary file and a rename or in place; a character device
//! (`-o /dev/null`, the "does it compile" idiom) is written into, as ld writes into it, from
//! a build in a private temporary directory; anything else that is not a regular file (a
//! FIFO, a socket, a block device, a directory, a symbolic link loop) is refused with what
//! it is. Nothing that is not a regular file is ever replaced.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::{BackendError, Result};

/// Where a build of OUT writes.
pub(super) enum OutputPath {
    /// A regular file, or where one will be.
    File(PathBuf),
    /// A character device: the build goes to `scratch/out`, whose bytes are then written
    /// into `device`.
    Device {
        device: PathBuf,
        scratch: tempfile::TempDir,
    },
}

impl OutputPath {
    /// The path the build itself writes.
    pub(super) fn build_path(&self) -> PathBuf {
        match self {
            OutputPath::File(p) => p.clone(),
            OutputPath::Device { scratch, .. } => scratch.path().join("out"),
        }
    }

    /// After a successful build: what a device gets.
    pub(super) fn deliver(&self) -> Result<()> {
        let OutputPath::Device { device, scratch } = self else {
            return Ok(());
        };
        let io = |error: std::io::Error| BackendError::Output {
            path: device.display().to_string(),
            why: format!("cannot write into it: {error}"),
        };
        let mut from = std::fs::File::open(scratch.path().join("out")).map_err(io)?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .open(device)
            .map_err(io)?;
        std::io::copy(&mut from, &mut to).map_err(io)?;
        Ok(())
    }
}

/// What OUT is, with symbolic links followed (a chain of more than 40 is a loop, as the
/// kernel says `ELOOP`).
pub(super) fn classify(out: &Path) -> Result<OutputPath> {
    let refuse = |why: &str| {
        Err(BackendError::Output {
            path: out.display().to_string(),
            why: why.to_string(),
        })
    };
    let mut path = out.to_path_buf();
    let mut resolved = false;
    for _ in 0..40 {
        match std::fs::read_link(&path) {
            Ok(target) if target.is_absolute() => path = target,
            Ok(target) => {
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                path = dir.join(target);
            }
            Err(_) => {
                resolved = true;
                break;
            }
        }
    }
    if !resolved {
        return refuse("is a loop of symbolic links: nothing can be written through it");
    }
    let Ok(meta) = std::fs::metadata(&path) else {
        // Nothing there yet: a new file.
        return Ok(OutputPath::File(path));
    };
    let t = meta.file_type();
    if t.is_file() {
        Ok(OutputPath::File(path))
    } else if t.is_char_device() {
        let scratch = tempfile::Builder::new()
            .prefix("zerolink-out-")
            .tempdir()
            .map_err(|e| BackendError::Output {
                path: out.display().to_string(),
                why: format!("no temporary directory to build in first: {e}"),
            })?;
        Ok(OutputPath::Device {
            device: path,
            scratch,
        })
    } else if t.is_dir() {
        refuse("is a directory: name the executable to write")
    } else if t.is_fifo() {
        refuse("is a FIFO: zerolink writes an executable to a regular file (or into a character device such as /dev/null)")
    } else if t.is_socket() {
        refuse("is a socket: zerolink writes an executable to a regular file (or into a character device such as /dev/null)")
    } else if t.is_block_device() {
        refuse("is a block device: zerolink does not write executables onto devices other than character devices such as /dev/null")
    } else {
        refuse("is not a regular file")
    }
}
