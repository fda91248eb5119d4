//! One build at a time per output: an advisory lock on a file beside OUT.
//!
//! Two builds into the same OUT would each open the old table, plan against it, and commit in
//! turn: the second commit applies a plan made against a file the first one already changed,
//! and the result mixes both programs (silently: the table agrees with it). So every build
//! holds an exclusive `flock` on `.OUT.zl-lock` (beside OUT, in its directory) from before it
//! opens OUT until after it has committed; a second build waits for it, or with
//! `LockWait::Fail` gives up at once. The lock file stays (it is empty); the lock itself goes
//! with the process, so a killed build never leaves OUT locked. Whoever takes the lock also
//! removes the temporary files killed builds of OUT left behind: with the lock held, no
//! other build of OUT can be writing them.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{ImageError, Result};

/// What to do when another build holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Wait for it (after calling the `waiting` callback once).
    Wait,
    /// Fail at once with `ImageError::Busy`.
    Fail,
    /// The caller holds OUT's lock already and keeps it until after the build: a hot patch
    /// takes the lock *before* it stops the process and looks at what it runs, so that no
    /// other build can change OUT between the look and the patch, and no process is held
    /// stopped while another build runs. Nothing is locked again.
    Held,
}

/// The lock of one output, held until dropped.
#[derive(Debug)]
pub struct BuildLock {
    _file: File,
}

/// The lock file of `out`: `.NAME.zl-lock` in OUT's directory.
pub fn lock_path(out: &Path) -> PathBuf {
    beside(out, |name| format!(".{name}.zl-lock"))
}

/// A file in OUT's directory (`.` for a bare name) named from OUT's file name.
pub(crate) fn beside(out: &Path, name_of: impl FnOnce(&str) -> String) -> PathBuf {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "a.out".into());
    dir.join(name_of(&name))
}

impl BuildLock {
    /// Take the lock of `out`. `waiting` is called once if another build holds it and `wait`
    /// says to wait.
    pub fn acquire(out: &Path, wait: LockWait, waiting: &dyn Fn()) -> Result<BuildLock> {
        let path = lock_path(out);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            // Named by OUT: the lock file is ours, not something the user knows of.
            .map_err(ImageError::io(out))?;
        if wait != LockWait::Held && !try_flock(&file) {
            match wait {
                LockWait::Fail | LockWait::Held => return Err(ImageError::Busy(out.to_path_buf())),
                LockWait::Wait => {
                    waiting();
                    flock(&file, libc::LOCK_EX).map_err(ImageError::io(&path))?;
                }
            }
        }
        if wait != LockWait::Held {
            remove_stale(out);
        }
        Ok(BuildLock { _file: file })
    }
}

/// Remove temporary files that killed builds of `out` left behind (`.OUT.zl-PID-N.tmp`, the new
/// file of a full build; `.OUT.zl-PID.update`, the copy an update of a running OUT writes).
/// With the lock held no other build of `out` is running, so every such file is stale.
/// Best effort: a file that cannot be removed is left for the next build.
fn remove_stale(out: &Path) {
    let dir = beside(out, |_| String::new());
    let Some(name) = out.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.zl-");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest
            .strip_suffix(".tmp")
            .or_else(|| rest.strip_suffix(".update"));
        // `PID` (updates, older builds) or `PID-N` (full builds).
        let ours = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit() || b == b'-');
        if pid.is_some_and(ours) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Take the lock without waiting for another build, but through a child process that another
/// thread of ours forked and that has not yet run `exec` (it holds a copy of our lock file's
/// descriptor, and with it the lock, for those few microseconds): try for up to 50 ms.
fn try_flock(file: &File) -> bool {
    for _ in 0..50 {
        if flock(file, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

fn flock(file: &File, op: i32) -> std::io::Result<()> {
    loop {
        // SAFETY: a valid open descriptor; flock has no memory arguments.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
