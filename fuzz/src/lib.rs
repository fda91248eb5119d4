//! What the fuzz targets share: building CLIF text with the driver as `zerolink build` does,
//! and a panic hook that lets through only the panics the driver catches itself (Cranelift
//! rejecting input its verifier accepted, reported as an error naming the function).

use std::path::{Path, PathBuf};
use std::sync::Once;

use zerolink_backend::driver::{self, BuildOptions, Report};
use zerolink_backend::{LinkOptions, TargetOptions};

/// Install the hook once: a panic the driver catches is not a finding; any other aborts.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            if driver::panics_are_caught() {
                return;
            }
            eprintln!("{info}");
            std::process::abort();
        }));
    });
}

/// Build `files` into `out`, freestanding, on one thread.
pub fn build(files: &[PathBuf], out: &Path) -> zerolink_backend::Result<Report> {
    let opts = BuildOptions {
        jobs: 1,
        ..BuildOptions::default()
    };
    let link = LinkOptions {
        freestanding: true,
        ..LinkOptions::default()
    };
    driver::build(files, &TargetOptions::default(), &link, out, &opts)
}

/// Run an executable: (exit status, stdout), or `None` if it could not be started.
pub fn run(exe: &Path) -> Option<(Option<i32>, Vec<u8>)> {
    let o = std::process::Command::new(exe)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    Some((o.status.code(), o.stdout))
}
