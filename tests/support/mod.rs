//! Shared helpers for the end-to-end tests: build with the real `zerolink` binary, run the
//! result, and check it with the system's binutils.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A CLIF function `%emit(i64)` that writes its argument's 8 bytes to stdout: the observable
/// output of generated test programs.
pub const EMIT: &str = "
function %emit(i64) {
    ss0 = explicit_slot 8
    sig0 = (i32, i64, i64) -> i64
    fn0 = %zl_write sig0
block0(v0: i64):
    v1 = stack_addr.i64 ss0
    store v0, v1
    v2 = iconst.i32 1
    v3 = iconst.i64 8
    v4 = call fn0(v2, v1, v3)
    return
}
";

pub fn zerolink() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zerolink"))
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

pub fn programs() -> PathBuf {
    repo().join("tests/programs")
}

/// The CLIF files of a corpus program, with `common/` files first if it `uses` them.
pub fn program_files(name: &str) -> Vec<PathBuf> {
    let dir = programs().join(name);
    let mut files = Vec::new();
    if let Ok(uses) = std::fs::read_to_string(dir.join("uses")) {
        for lib in uses.split_whitespace() {
            files.extend(clif_files(&programs().join(lib)));
        }
    }
    files.extend(clif_files(&dir));
    files
}

pub fn clif_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "clif"))
        .collect();
    files.sort();
    files
}

pub struct Run {
    pub status: i32,
    pub stdout: Vec<u8>,
}

pub fn build(files: &[PathBuf], out: &Path, extra: &[&str]) -> Output {
    zerolink()
        .arg("build")
        .args(files)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .expect("zerolink starts")
}

pub fn build_ok(files: &[PathBuf], out: &Path, extra: &[&str]) {
    let o = build(files, out, extra);
    assert!(
        o.status.success(),
        "zerolink build {:?} failed:\n{}",
        extra,
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn run(exe: &Path) -> Run {
    let o = Command::new(exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    use std::os::unix::process::ExitStatusExt;
    Run {
        status: o
            .status
            .code()
            .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
        stdout: o.stdout,
    }
}

/// `readelf --wide -h -l -S -s` must accept the file without a single warning or error.
pub fn check_readelf(exe: &Path) -> String {
    let o = Command::new("readelf")
        .args(["--wide", "-h", "-l", "-S", "-s"])
        .arg(exe)
        .output()
        .expect("readelf runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "readelf failed: {stderr}");
    assert!(stderr.trim().is_empty(), "readelf complained: {stderr}");
    assert!(
        !stdout.to_lowercase().contains("warning"),
        "readelf warned:\n{stdout}"
    );
    stdout
}

/// `objdump -d` must show every given function by name.
pub fn check_objdump(exe: &Path, functions: &[String]) {
    let o = Command::new("objdump")
        .arg("-d")
        .arg(exe)
        .output()
        .expect("objdump runs");
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for f in functions {
        assert!(
            text.contains(&format!("<{f}>:")),
            "objdump -d does not show `{f}`"
        );
    }
}

/// Names of the functions defined in CLIF files (`function %name`).
pub fn defined_functions(files: &[PathBuf]) -> Vec<String> {
    let mut names = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.trim_start().strip_prefix("function %") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        }
    }
    names
}

/// Build `files` both ways (direct, and through cranelift-object + `cc`), run both, check that
/// they behave the same and that the direct output is a well-formed ELF file. Returns the run.
pub fn build_both_and_run(files: &[PathBuf], dir: &Path, extra: &[&str]) -> Run {
    let direct = dir.join("direct");
    let separate = dir.join("separate");
    build_ok(files, &direct, extra);
    let mut sep_args = extra.to_vec();
    sep_args.push("--separate");
    build_ok(files, &separate, &sep_args);
    let a = run(&direct);
    let b = run(&separate);
    assert_eq!(
        (a.status, String::from_utf8_lossy(&a.stdout)),
        (b.status, String::from_utf8_lossy(&b.stdout)),
        "direct and separately linked executables disagree"
    );
    check_readelf(&direct);
    check_objdump(&direct, &defined_functions(files));
    a
}
pub mod debug_view;
pub mod twins;

/// Wait until inputs written just now are older than the clock tick a build starts in. A
/// build records a file stamped in its own first tick with empty stat data ("racily clean":
/// the next build hashes it), so comparing the bytes of two builds needs settled inputs.
#[allow(dead_code)]
pub fn settle_inputs() {
    std::thread::sleep(std::time::Duration::from_millis(30));
}

/// Run a tool; it must succeed (its stderr is the failure's message).
pub fn sh(cmd: &mut Command) {
    let o = cmd.output().expect("the tool runs");
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Write C source `text` to `dir/NAME.c` and compile it to `dir/NAME.o` with `cc -c FLAGS`.
pub fn c_object(dir: &Path, name: &str, text: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, text).unwrap();
    let obj = dir.join(format!("{name}.o"));
    sh(Command::new("cc")
        .arg("-c")
        .args(flags)
        .arg(&src)
        .arg("-o")
        .arg(&obj));
    obj
}
