//! C++ from `g++ -c`, linked by zerolink as `g++` links it: exceptions thrown and caught
//! across objects and across CLIF frames, iostream, containers, virtual calls, a static
//! constructor, `std::thread` and a thread-local, with the shared and the static libstdc++,
//! with and without `-g`, fixed-address and PIE; and `.eh_frame` well-formed for every mix,
//! a C program's `backtrace()` included.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::twins::{run_with, zl_ok};
use support::{programs, settle_inputs, sh};

fn cxx_dir() -> PathBuf {
    programs().join("cxx")
}

/// `COMPILER -c SRC -o DIR/NAME.o`.
fn compile(compiler: &str, src: &Path, dir: &Path, name: &str) -> PathBuf {
    let obj = dir.join(format!("{name}.o"));
    sh(Command::new(compiler)
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(&obj));
    obj
}

/// `readelf --debug-dump=frames` reads every record, and every FDE has its CIE.
fn frames_are_well_formed(exe: &Path) {
    let o = Command::new("readelf")
        .args(["-W", "--debug-dump=frames"])
        .arg(exe)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.is_empty(), "readelf: {err}");
    assert!(
        !out.contains("cie=invalid"),
        "an FDE without its CIE:\n{out}"
    );
}

#[test]
fn a_cxx_program_runs_as_gxx_links_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = vec![
        compile("g++", &cxx_dir().join("main.cpp"), d, "main"),
        compile("g++", &cxx_dir().join("thrower.cpp"), d, "thrower"),
    ];
    let twin = d.join("gxx-linked");
    sh(Command::new("g++").args(&files).arg("-o").arg(&twin));
    let want = run_with(&twin, &[], &[]);
    assert_eq!(want.status, Some(0));
    assert!(
        want.stdout.contains("caught bad value 5\ncaught int 17\n"),
        "{want:?}"
    );
    for extra in [
        &["-l", "stdc++"][..],
        &["-l", "stdc++", "--pie"],
        &["-l", "stdc++", "-g"],
        &["-l", "stdc++", "--static-libs"],
        &["-l", "stdc++", "--static-libs", "--pie", "-g"],
    ] {
        let exe = d.join("zl");
        let _ = std::fs::remove_file(&exe);
        zl_ok(&files, &exe, extra);
        assert_eq!(
            run_with(&exe, &[], &[]),
            want,
            "zerolink {extra:?} and g++ disagree"
        );
        frames_are_well_formed(&exe);
    }
    // An edit of the thrower: the program (with a static constructor) is right again.
    settle_inputs();
    let src = d.join("thrower.cpp");
    let text = std::fs::read_to_string(cxx_dir().join("thrower.cpp")).unwrap();
    std::fs::write(&src, text.replace("bad value ", "wrong value ")).unwrap();
    let thrower = compile("g++", &src, d, "thrower");
    let exe = d.join("zl");
    zl_ok(
        &[files[0].clone(), thrower],
        &exe,
        &["-l", "stdc++", "--static-libs", "--pie", "-g"],
    );
    let got = run_with(&exe, &[], &[]);
    assert!(got.stdout.contains("caught wrong value 5\n"), "{got:?}");
}

#[test]
fn an_exception_crosses_a_clif_frame() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let obj = compile(
        "g++",
        &cxx_dir().join("through_clif.cpp"),
        d,
        "through_clif",
    );
    let files = vec![cxx_dir().join("through_clif.clif"), obj];
    for extra in [
        &["-g", "-l", "stdc++"][..],
        &["-g", "-l", "stdc++", "--pie", "--static-libs"],
    ] {
        let exe = d.join("prog");
        let _ = std::fs::remove_file(&exe);
        zl_ok(&files, &exe, extra);
        // 11 from the call that returns, -1 from the one whose exception was caught.
        let got = run_with(&exe, &[], &[]);
        let (status, stdout) = (got.status, got.stdout);
        assert_eq!(
            (status, stdout.as_str()),
            (Some(10), "caught too big\n"),
            "{extra:?}"
        );
        frames_are_well_formed(&exe);
    }
}

#[test]
fn a_c_programs_backtrace_works_with_and_without_g() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("bt.c");
    std::fs::write(
        &src,
        r#"
#include <execinfo.h>
#include <stdio.h>
__attribute__((noinline)) int inner(int x) {
    void *b[32];
    int n = backtrace(b, 32);
    printf("frames %d\n", n);
    return n + x;
}
__attribute__((noinline)) int outer(int x) { return inner(x + 1) + 1; }
int main(void) { return outer(0) > 4 ? 0 : 1; }
"#,
    )
    .unwrap();
    let obj = compile("cc", &src, d, "bt");
    let twin = d.join("cc-linked");
    sh(Command::new("cc").arg(&obj).arg("-o").arg(&twin));
    let want = run_with(&twin, &[], &[]);
    assert_eq!(want.status, Some(0), "{want:?}");
    for extra in [&[][..], &["-g"], &["-g", "--pie"]] {
        let exe = d.join("prog");
        let _ = std::fs::remove_file(&exe);
        zl_ok(std::slice::from_ref(&obj), &exe, extra);
        assert_eq!(run_with(&exe, &[], &[]), want, "{extra:?}");
        frames_are_well_formed(&exe);
    }
}
