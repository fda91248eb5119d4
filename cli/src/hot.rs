//! `zerolink build --hot PID` and `zerolink run --watch`: an update applied to the running
//! program too (the work is `zerolink_backend::hot`'s; this is the command-line face).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use zerolink_backend::hot::{Attached, HotError, Patched};
use zerolink_backend::Session;
use zerolink_image::lock::LockWait;

use crate::InputArgs;

/// Update OUT, then apply the same change to process `pid`, which must run OUT as it was.
pub fn build_hot(input: &InputArgs, output: &Path, pid: i32, stats: bool) -> Result<()> {
    if input.separate {
        anyhow::bail!("--hot patches executables zerolink wrote: not with --separate");
    }
    let t = Instant::now();
    // The lock before the look: once no other build can change OUT, the process is stopped
    // and checked against OUT as it is, and patched against that same file. A wait for
    // another build happens while the process still runs.
    let wait = if input.no_wait {
        LockWait::Fail
    } else {
        LockWait::Wait
    };
    let waiting = || {
        eprintln!(
            "zerolink: waiting for another build of {} to finish (process {pid} runs on)",
            output.display()
        )
    };
    let lock = Session::lock(output, wait, &waiting)?;
    let attached = Attached::stop(pid, output)?;
    let report = crate::build_live(
        input,
        output,
        stats,
        false,
        None,
        Some(attached.live()),
        true,
    )?
    .context("the separate path reports nothing to patch with")?;
    let patched = attached.apply(&report, output)?;
    drop(lock);
    eprintln!("{}", describe(pid, &patched, t.elapsed()));
    Ok(())
}

/// Build into a temporary file, run it, and on every change of an input rebuild and patch
/// the running program; exit with the program's status when it exits. With `restart`, a
/// change that cannot be applied live restarts the program instead (its state is lost).
pub fn watch(input: &InputArgs, args: &[String], restart: bool) -> Result<ExitCode> {
    if input.separate {
        anyhow::bail!("--watch patches executables zerolink wrote: not with --separate");
    }
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let exe = dir.path().join(
        input.files[0]
            .file_stem()
            .unwrap_or(std::ffi::OsStr::new("a.out")),
    );
    crate::build(input, &exe, false, true, None)?;
    let mut pid = spawn(&exe, args)?;
    eprintln!(
        "zerolink: running {} as process {pid}; watching {} file(s) for changes \
         (to debug it as it is now: gdb {} -p {pid})",
        exe.display(),
        input.files.len(),
        exe.display()
    );
    let mut seen = stamps(&input.files);
    // SIGTERM, SIGINT or SIGHUP end the watch, and with it the child (which would otherwise
    // run on, unwatched) and the temporary directory.
    let stop = StopRequest::install();
    loop {
        if let Some(status) = exited(pid) {
            return Ok(status);
        }
        if let Some(sig) = stop.requested() {
            // SAFETY: signals and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
                let mut status = 0;
                for _ in 0..100 {
                    if libc::waitpid(pid, &mut status, libc::WNOHANG) == pid {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                if libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
            }
            drop(dir);
            return Ok(ExitCode::from(128 + sig as u8));
        }
        std::thread::sleep(Duration::from_millis(20));
        let now = stamps(&input.files);
        if now == seen {
            continue;
        }
        // An editor may write in several steps: wait until the files hold still.
        let mut settled = now;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let again = stamps(&input.files);
            if again == settled {
                break;
            }
            settled = again;
        }
        seen = settled;
        let t = Instant::now();
        // Whether the program now runs something else than the file holds.
        let behind = match Attached::stop(pid, &exe) {
            Ok(attached) => {
                match crate::build_live(
                    input,
                    &exe,
                    false,
                    false,
                    None,
                    Some(attached.live()),
                    false,
                ) {
                    Ok(Some(report)) => match attached.apply(&report, &exe) {
                        Ok(p) => {
                            eprintln!("{}", describe(pid, &p, t.elapsed()));
                            false
                        }
                        Err(e) => {
                            eprintln!("zerolink: {e}");
                            true
                        }
                    },
                    Ok(None) => false,
                    // The process runs on as it was; the next change tries again.
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        false
                    }
                }
            }
            Err(HotError::Exited { .. } | HotError::NoProcess { .. }) => continue,
            Err(e) => {
                // Still keep the file current, so a restart runs the new code.
                eprintln!("zerolink: {e}");
                match crate::build(input, &exe, false, false, None) {
                    Ok(()) => true,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        false
                    }
                }
            }
        };
        if behind && restart {
            // SAFETY: signals and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            pid = spawn(&exe, args)?;
            eprintln!("zerolink: restarted the program as process {pid}, with the new build");
        }
    }
}

fn spawn(exe: &Path, args: &[String]) -> Result<i32> {
    let child = std::process::Command::new(exe)
        .args(args)
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    Ok(child.id() as i32)
}

/// The exit status of child `pid` if it has exited (reaped here).
fn exited(pid: i32) -> Option<ExitCode> {
    let mut status = 0;
    // SAFETY: polls our own child without blocking.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r != pid {
        return None;
    }
    if libc::WIFEXITED(status) {
        Some(ExitCode::from(libc::WEXITSTATUS(status) as u8))
    } else if libc::WIFSIGNALED(status) {
        Some(ExitCode::from(
            128u8.wrapping_add(libc::WTERMSIG(status) as u8),
        ))
    } else {
        None
    }
}

/// What tells a changed input: size, modification time and inode.
fn stamps(files: &[std::path::PathBuf]) -> Vec<Option<(u64, i64, i64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.size(), m.mtime(), m.mtime_nsec(), m.ino()))
        })
        .collect()
}

fn describe(pid: i32, p: &Patched, took: Duration) -> String {
    let ms = took.as_secs_f64() * 1e3;
    if p.bytes == 0 {
        return format!("zerolink: process {pid}: nothing changed ({ms:.1} ms)");
    }
    let names = |v: &[String]| {
        let mut s: Vec<String> = v.iter().take(5).map(|n| format!("`{n}`")).collect();
        if v.len() > 5 {
            s.push(format!("and {} more", v.len() - 5));
        }
        s.join(", ")
    };
    let mut parts = Vec::new();
    if !p.in_place.is_empty() {
        parts.push(format!("{} in place", names(&p.in_place)));
    }
    if !p.placed.is_empty() {
        parts.push(format!("{} in new slots", names(&p.placed)));
    }
    if p.redirected > 0 {
        parts.push(format!(
            "{} old entries now jump to the new code",
            p.redirected
        ));
    }
    if p.imports > 0 {
        parts.push(format!("{} library functions resolved", p.imports));
    }
    if p.kept_fields > 0 {
        parts.push(format!(
            "{} data fields kept as the program set them",
            p.kept_fields
        ));
    }
    let mut line = format!(
        "zerolink: patched process {pid} in {ms:.1} ms ({} bytes): {}",
        p.bytes,
        parts.join("; ")
    );
    if p.unwind_stale {
        line.push_str(
            "\nzerolink: the new code's unwind tables moved where the running program does \
             not look: backtraces inside it stop at the new code until it restarts",
        );
    }
    if !p.not_redirected.is_empty() {
        line.push_str(&format!(
            "\nzerolink: the old entries of {} were left as they were (a thread was inside \
             them): calls through pointers taken before the patch run the old code",
            names(&p.not_redirected)
        ));
    }
    line
}

/// A termination signal the watch loop should act on: set by a handler that only stores the
/// signal's number (all a handler may safely do), read by the loop.
struct StopRequest;

static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn note_stop(sig: libc::c_int) {
    STOP_SIGNAL.store(sig, std::sync::atomic::Ordering::SeqCst);
}

impl StopRequest {
    fn install() -> StopRequest {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            // SAFETY: installs a handler that only stores to an atomic.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = note_stop as *const () as usize;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
        StopRequest
    }

    fn requested(&self) -> Option<i32> {
        match STOP_SIGNAL.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        }
    }
}
