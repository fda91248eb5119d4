//! Calling libc and other shared libraries: programs built both ways (directly, and through
//! cranelift-object + `cc`), run with stdout piped, compared with output derived from
//! equivalent C programs; `ldd` and valgrind on the results; errors; in-place updates that
//! change what is imported.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn libc_dir(name: &str) -> PathBuf {
    programs().join("libc").join(name)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn run_with_args(exe: &Path, args: &[String]) -> (i32, Vec<u8>) {
    let o = Command::new(exe)
        .args(args)
        .output()
        .expect("the executable starts");
    (o.status.code().unwrap_or(-1), o.stdout)
}

fn lib_args(name: &str) -> Vec<String> {
    lines(&libc_dir(name).join("libs"))
        .into_iter()
        .flat_map(|l| ["-l".to_string(), l])
        .collect()
}

/// Build a libc program both ways, run both with its arguments, compare with the expected
/// output; returns the directly built executable.
fn check(name: &str, dir: &Path) -> PathBuf {
    let files = clif_files(&libc_dir(name));
    let libs = lib_args(name);
    let libs: Vec<&str> = libs.iter().map(String::as_str).collect();
    let direct = dir.join(name);
    let separate = dir.join(format!("{name}.sep"));
    build_ok(&files, &direct, &libs);
    let mut sep = libs.clone();
    sep.push("--separate");
    build_ok(&files, &separate, &sep);
    let args = lines(&libc_dir(name).join("args"));
    let expected_stdout = std::fs::read(libc_dir(name).join("expected.stdout")).unwrap();
    let expected_status: i32 = std::fs::read_to_string(libc_dir(name).join("expected.status"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for exe in [&direct, &separate] {
        let (status, stdout) = run_with_args(exe, &args);
        assert_eq!(
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&expected_stdout),
            "{name}: stdout of {}",
            exe.display()
        );
        assert_eq!(
            status,
            expected_status,
            "{name}: status of {}",
            exe.display()
        );
    }
    check_readelf(&direct);
    direct
}

macro_rules! libc_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() {
            let dir = tempfile::tempdir().unwrap();
            check(stringify!($name), dir.path());
        })*
    };
}

libc_tests!(
    printf_hello,
    printf_sigs,
    linked_list,
    qsort,
    argv,
    fileio,
    math,
    stdout_data,
    exit_flush,
);

/// The libraries `ldd` lists, without the vDSO and the loader.
fn ldd(exe: &Path) -> Vec<String> {
    let o = Command::new("ldd").arg(exe).output().expect("ldd runs");
    let mut libs: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|l| !l.starts_with("linux-vdso") && !l.contains("ld-linux"))
        .collect();
    libs.sort();
    libs
}

#[test]
fn ldd_lists_exactly_the_libraries_used() {
    let dir = tempfile::tempdir().unwrap();
    let hello = check("printf_hello", dir.path());
    assert_eq!(ldd(&hello), ["libc.so.6"]);
    let math = check("math", dir.path());
    assert_eq!(ldd(&math), ["libc.so.6", "libm.so.6"]);
    // Naming a library the program does not use adds nothing.
    let files = clif_files(&libc_dir("printf_hello"));
    let out = dir.path().join("hello_m");
    build_ok(&files, &out, &["-l", "m"]);
    assert_eq!(ldd(&out), ["libc.so.6"]);
}

#[test]
fn valgrind_reports_no_errors() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        panic!("valgrind is required (.ci/run installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["printf_hello", "linked_list"] {
        let exe = check(name, dir.path());
        let o = Command::new("valgrind")
            .args(["-q", "--error-exitcode=1", "--leak-check=full"])
            .arg(&exe)
            .output()
            .unwrap();
        assert!(
            o.status.code() != Some(1),
            "{name}: valgrind found errors:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn a_symbol_no_library_provides_is_an_undefined_symbol_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = build(&clif_files(&libc_dir("errors")), &out, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("undefined symbol `no_such_function_xyz`"),
        "{stderr}"
    );
    assert!(stderr.contains("referenced by `main`"), "{stderr}");
    assert!(!out.exists());
    // libm's functions are not found without `-l m`.
    let o = build(&clif_files(&libc_dir("math")), &out, &[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("undefined symbol `sin`"));
}

#[test]
fn a_missing_library_is_an_error_naming_the_search_path() {
    let dir = tempfile::tempdir().unwrap();
    let o = build(
        &clif_files(&libc_dir("printf_hello")),
        &dir.path().join("out"),
        &["-l", "doesnotexist", "-L", "/nowhere"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr.contains("`-l doesnotexist` not found"), "{stderr}");
    assert!(stderr.contains("/nowhere"), "{stderr}");
    assert!(!stderr.contains("separate link"), "{stderr}");
}

const USES_PUTS: &str = "; data: %msg = \"from puts\\0\"
function %main() -> i32 {
    gv0 = symbol %msg
    fn0 = %puts(i64) -> i32
block0:
    v0 = symbol_value.i64 gv0
    v1 = call fn0(v0)
    v2 = iconst.i32 0
    return v2
}
";

/// `USES_PUTS` plus `strlen` (libc) and `sqrt` (libm): returns sqrt(strlen(msg)) = 3.
const USES_STRLEN_AND_SQRT: &str = "; data: %msg = \"from puts\\0\"
function %main() -> i32 {
    gv0 = symbol %msg
    fn0 = %puts(i64) -> i32
    fn1 = %strlen(i64) -> i64
    fn2 = %sqrt(f64) -> f64
block0:
    v0 = symbol_value.i64 gv0
    v1 = call fn0(v0)
    v3 = call fn1(v0)
    v4 = fcvt_from_sint.f64 v3
    v5 = call fn2(v4)
    v6 = fcvt_to_sint.i32 v5
    return v6
}
";

#[test]
fn in_place_updates_add_and_drop_imports_and_libraries() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.clif");
    let out = dir.path().join("out");
    std::fs::write(&p, USES_PUTS).unwrap();
    build_ok(std::slice::from_ref(&p), &out, &["-l", "m"]);
    assert_eq!(run(&out).stdout, b"from puts\n");
    assert_eq!(ldd(&out), ["libc.so.6"]);

    // A new libc import (strlen) and a first use of libm (sqrt), updated in place.
    std::fs::write(&p, USES_STRLEN_AND_SQRT).unwrap();
    let more = USES_STRLEN_AND_SQRT;
    let o = build(std::slice::from_ref(&p), &out, &["-l", "m", "--stats"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}\n{more}");
    assert!(stderr.starts_with("in-place update"), "{stderr}");
    let r = run(&out);
    // strlen("from puts") = 9, sqrt(9) = 3.
    assert_eq!((r.status, r.stdout.as_slice()), (3, &b"from puts\n"[..]));
    assert_eq!(ldd(&out), ["libc.so.6", "libm.so.6"]);
    check_readelf(&out);

    // Dropping the last use of libm removes it from DT_NEEDED, still in place.
    std::fs::write(&p, USES_PUTS).unwrap();
    let o = build(std::slice::from_ref(&p), &out, &["-l", "m", "--stats"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.starts_with("in-place update"), "{stderr}");
    assert_eq!(run(&out).stdout, b"from puts\n");
    assert_eq!(ldd(&out), ["libc.so.6"]);
}

/// Without SSE4.1 Cranelift lowers `ceil`/`floor` to libcalls: they resolve to libm.
#[test]
fn cranelifts_own_libcalls_resolve_to_libm() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("round.clif");
    std::fs::write(
        &p,
        "function %main(i32, i64) -> i32 {
block0(v10: i32, v11: i64):
    v12 = fcvt_from_sint.f64 v10
    v13 = f64const 0x1.8000000000000p0
    v0 = fadd v12, v13
    v1 = ceil v0
    v2 = floor v0
    v3 = fadd v1, v2
    v4 = fcvt_to_sint.i32 v3
    return v4
}
",
    )
    .unwrap();
    let out = dir.path().join("round");
    let baseline = ["--baseline", "-l", "m"];
    build_ok(std::slice::from_ref(&p), &out, &baseline);
    // argc = 1: ceil(2.5) + floor(2.5) = 5
    assert_eq!(run(&out).status, 5);
    let imports = Command::new("readelf")
        .args(["--wide", "--dyn-syms"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&imports.stdout);
    assert!(text.contains(" ceil") && text.contains(" floor"), "{text}");
    // Freestanding there is no libm: a clear undefined-symbol error.
    let o = build(
        std::slice::from_ref(&p),
        &dir.path().join("x"),
        &["--baseline", "--freestanding"],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("undefined symbol `ceil`"));
}

/// fopen/fprintf a file named on the command line, then fopen/fgets it back to stdout.
const FOPEN: &str = "; data: %mode_w = \"w\\0\"
; data: %mode_r = \"r\\0\"
; data: %fmt = \"line %d: %s\\n\\0\"
; data: %word = \"zerolink\\0\"
function %main(i32, i64) -> i32 {
    ss0 = explicit_slot 128
    gv0 = symbol %mode_w
    gv1 = symbol %mode_r
    gv2 = symbol %fmt
    gv3 = symbol %word
    gv4 = symbol %stdout
    fn0 = %fopen(i64, i64) -> i64
    fn1 = %fprintf(i64, i64, i32, i64) -> i32
    fn2 = %fclose(i64) -> i32
    fn3 = %fgets(i64, i32, i64) -> i64
    fn4 = %fputs(i64, i64) -> i32
block0(v0: i32, v1: i64):
    v2 = load.i64 v1+8
    v3 = symbol_value.i64 gv0
    v4 = call fn0(v2, v3)
    v5 = symbol_value.i64 gv2
    v6 = symbol_value.i64 gv3
    v7 = iconst.i32 1
    v8 = call fn1(v4, v5, v7, v6)
    v9 = iconst.i32 2
    v10 = call fn1(v4, v5, v9, v6)
    v11 = call fn2(v4)
    v12 = symbol_value.i64 gv1
    v13 = call fn0(v2, v12)
    v14 = stack_addr.i64 ss0
    v15 = iconst.i32 128
    v16 = symbol_value.i64 gv4
    jump block1
block1:
    v17 = call fn3(v14, v15, v13)
    brif v17, block2, block3
block2:
    v18 = load.i64 v16
    v19 = call fn4(v14, v18)
    jump block1
block3:
    v20 = call fn2(v13)
    v21 = iconst.i32 0
    return v21
}
";

#[test]
fn a_file_written_with_fopen_and_fprintf_reads_back_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fopen.clif");
    std::fs::write(&p, FOPEN).unwrap();
    let direct = dir.path().join("direct");
    let separate = dir.path().join("separate");
    build_ok(std::slice::from_ref(&p), &direct, &[]);
    build_ok(std::slice::from_ref(&p), &separate, &["--separate"]);
    for (exe, file) in [(&direct, "a.txt"), (&separate, "b.txt")] {
        let path = dir.path().join(file);
        let (status, stdout) = run_with_args(exe, &[path.display().to_string()]);
        assert_eq!(status, 0);
        assert_eq!(stdout, b"line 1: zerolink\nline 2: zerolink\n");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            stdout,
            "the file holds what was printed"
        );
    }
}
