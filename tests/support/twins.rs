//! Real C code linked twice, by `cc` and by zerolink, and compared: what `tests/real_c.rs`
//! and `tests/real_libs.rs` share.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{sh, zerolink};

/// What a program did: exit status, stdout, stderr.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_with(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let o = Command::new(exe)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    Outcome {
        status: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `zerolink build -o OUT FILES EXTRA`; its stderr.
pub fn zl_ok(files: &[PathBuf], out: &Path, extra: &[&str]) -> String {
    let o = zerolink()
        .arg("build")
        .arg("-o")
        .arg(out)
        .args(files)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "zerolink failed: {stderr}");
    stderr
}

/// `cc FILES LIBS -o OUT`: the program as the system links it.
pub fn cc_link(files: &[PathBuf], libs: &[&str], out: &Path) {
    sh(Command::new("cc").args(files).args(libs).arg("-o").arg(out));
}

/// Link `files` with cc and with zerolink (fixed-address and `--pie`, `extra` given to
/// zerolink), run all three with `args`, and require the same outcome; returns it.
pub fn same_as_cc(
    dir: &Path,
    files: &[PathBuf],
    cc_libs: &[&str],
    extra: &[&str],
    args: &[&str],
) -> Outcome {
    let twin = dir.join("cc-linked");
    cc_link(files, cc_libs, &twin);
    let want = run_with(&twin, args, &[]);
    for pie in [false, true] {
        let exe = dir.join(if pie { "zl-pie" } else { "zl-fixed" });
        let mut flags = extra.to_vec();
        if pie {
            flags.push("--pie");
        }
        zl_ok(files, &exe, &flags);
        readelf_accepts(&exe);
        let got = run_with(&exe, args, &[]);
        assert_eq!(got, want, "zerolink ({flags:?}) and cc disagree");
    }
    want
}

/// Whether `word` of readelf's output names symbol `name`, with or without its version
/// (`stdout@GLIBC_2.2.5`).
pub fn named(word: &str, name: &str) -> bool {
    word == name
        || word
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('@'))
}

/// `readelf` reads every header and table without a complaint (Lua's own symbols are named
/// `*warning*`, so only stderr is looked at).
pub fn readelf_accepts(exe: &Path) {
    let o = Command::new("readelf")
        .args(["--wide", "-h", "-l", "-S", "-s", "-r", "-d", "--dyn-syms"])
        .arg(exe)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && stderr.is_empty(), "readelf: {stderr}");
}

pub fn readelf(args: &[&str], exe: &Path) -> String {
    let o = Command::new("readelf")
        .args(args)
        .arg(exe)
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).into_owned()
}
