//! Bad input: a clear message naming the file, line or symbol, exit status 1, never a panic,
//! and never a damaged output file.

mod support;

use std::path::PathBuf;

use support::*;

struct Failure {
    stderr: String,
}

/// Build the given (name, text) files; the build must fail. Returns stderr.
fn fails(files: &[(&str, &str)], extra: &[&str]) -> Failure {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|(name, text)| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect();
    let out = dir.path().join("out");
    let o = build(&paths, &out, extra);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1, stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "zerolink panicked:\n{stderr}");
    assert!(!out.exists(), "a failed build left a file at OUT");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    Failure { stderr }
}

const MAIN: &str = "function %main() -> i32 {\nblock0:\n    v0 = iconst.i32 0\n    return v0\n}\n";

#[test]
fn parse_errors_name_file_and_line() {
    let f = fails(
        &[(
            "bad.clif",
            "function %main() -> i32 {\nblock0:\n    v0 = iconst.i32 0\n    v1 = frobnicate v0\n    return v0\n}\n",
        )],
        &[],
    );
    assert!(f.stderr.contains("bad.clif:4:"), "{}", f.stderr);
}

#[test]
fn verifier_errors_name_file_line_and_function() {
    let f = fails(
        &[(
            "v.clif",
            "function %main() -> i32 {\nblock0:\n    v0 = iconst.i64 1\n    v1 = iconst.i32 2\n    v2 = iadd v0, v1\n    return v1\n}\n",
        )],
        &[],
    );
    assert!(
        f.stderr.contains("v.clif:5: in function `main`"),
        "{}",
        f.stderr
    );
}

#[test]
fn every_undefined_symbol_is_listed_once_with_its_referencing_functions() {
    let f = fails(
        &[(
            "u.clif",
            "function %helper() -> i32 {\n    fn0 = %nowhere() -> i32\nblock0:\n    v0 = call fn0()\n    return v0\n}\n\nfunction %main() -> i32 {\n    fn0 = %nowhere() -> i32\n    fn1 = %missing_too() -> i32\nblock0:\n    v0 = call fn0()\n    v1 = call fn1()\n    v2 = call fn0()\n    return v1\n}\n",
        )],
        &[],
    );
    assert_eq!(f.stderr.matches("undefined symbol `nowhere`").count(), 1);
    assert_eq!(
        f.stderr.matches("undefined symbol `missing_too`").count(),
        1
    );
    assert!(
        f.stderr.contains("referenced by `helper` at"),
        "{}",
        f.stderr
    );
    assert!(f.stderr.contains("referenced by `main` at"), "{}", f.stderr);
    assert_eq!(f.stderr.matches("referenced by `main`").count(), 2);
}

#[test]
fn duplicate_definitions_name_both_places() {
    let twice = "function %twice() -> i32 {\nblock0:\n    v0 = iconst.i32 2\n    return v0\n}\n";
    let f = fails(
        &[("a.clif", &format!("{MAIN}\n{twice}")), ("b.clif", twice)],
        &[],
    );
    assert!(
        f.stderr.contains("`twice` is defined twice"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("a.clif:7") && f.stderr.contains("b.clif:1"),
        "{}",
        f.stderr
    );
}

#[test]
fn a_data_object_and_a_function_may_not_share_a_name() {
    let f = fails(
        &[("a.clif", &format!("; data: %main = i32 1\n{MAIN}"))],
        &[],
    );
    assert!(f.stderr.contains("`main` is defined twice"), "{}", f.stderr);
}

#[test]
fn a_program_without_main_is_an_error() {
    let f = fails(
        &[(
            "n.clif",
            "function %f() -> i32 {\nblock0:\n    v0 = iconst.i32 0\n    return v0\n}\n",
        )],
        &[],
    );
    assert!(f.stderr.contains("must define `main`"), "{}", f.stderr);
}

#[test]
fn bad_data_directives_name_file_and_line() {
    let f = fails(
        &[("d.clif", &format!("{MAIN}\n; data: %x = i32 1, u7 3\n"))],
        &[],
    );
    assert!(
        f.stderr.contains("d.clif:7: bad data directive"),
        "{}",
        f.stderr
    );
}

#[test]
fn calling_a_function_with_the_wrong_signature_is_an_error() {
    let f = fails(
        &[(
            "s.clif",
            "function %f(i64) -> i64 {\nblock0(v0: i64):\n    return v0\n}\n\nfunction %main() -> i32 {\n    fn0 = %f(i32) -> i32\nblock0:\n    v0 = iconst.i32 1\n    v1 = call fn0(v0)\n    return v1\n}\n",
        )],
        &[],
    );
    assert!(f.stderr.contains("`main` calls `f`"), "{}", f.stderr);
}

#[test]
fn an_unencodable_relocation_names_function_and_offset() {
    // Without PIC, a colocated symbol address is a RIP-relative `lea`; an offset of 1 TiB
    // cannot be reached by its 32-bit displacement.
    let f = fails(
        &[(
            "r.clif",
            "; data: %msg = \"hi\"\nfunction %main() -> i32 {\n    gv0 = symbol colocated %msg+1099511627776\nblock0:\n    v1 = symbol_value.i64 gv0\n    v2 = ireduce.i32 v1\n    return v2\n}\n",
        )],
        &["--set", "is_pic=false"],
    );
    assert!(
        f.stderr.contains("in `main` at offset 0x") && f.stderr.contains("cannot reach `msg`"),
        "{}",
        f.stderr
    );
}

#[test]
fn unknown_settings_are_errors() {
    let f = fails(&[("m.clif", MAIN)], &["--set", "no_such_flag=1"]);
    assert!(f.stderr.contains("no_such_flag"), "{}", f.stderr);
}

#[test]
fn a_missing_input_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = build(
        &[dir.path().join("absent.clif")],
        &dir.path().join("out"),
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("absent.clif"));
}

#[test]
fn a_failed_build_leaves_the_previous_executable_untouched_and_runnable() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.clif");
    std::fs::write(&good, MAIN.replace("iconst.i32 0", "iconst.i32 9")).unwrap();
    let bad = dir.path().join("bad.clif");
    std::fs::write(
        &bad,
        "function %main() -> i32 {\nblock0:\n    return v9\n}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    build_ok(&[good], &out, &[]);
    let before = std::fs::read(&out).unwrap();
    let o = build(&[bad], &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert_eq!(run(&out).status, 9);
    // The sources, OUT, and OUT's (empty) lock file: no temporary file is left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".out.zl-lock", "bad.clif", "good.clif", "out"]);
}

#[test]
fn what_cranelift_cannot_compile_is_an_error_naming_the_function_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let wide = "function %wide(i128) -> i128 {\nblock0(v0: i128):\n    return v0\n}\n\n";
    // An `i128` result of a conversion, not in the signature: "entered unreachable code".
    let to_int = "function %to_int(f64) -> i64 {\nblock0(v0: f64):\n    v1 = fcvt_to_sint.i128 v0\n    v2 = ireduce.i64 v1\n    return v2\n}\n\n";
    for (name, text) in [("wide", wide), ("to_int", to_int)] {
        for jobs in ["1", "2"] {
            let src = dir.path().join(format!("{name}.clif"));
            std::fs::write(&src, format!("{text}{MAIN}")).unwrap();
            let out = dir.path().join(name);
            let o = build(&[src], &out, &["--freestanding", "-j", jobs]);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.contains(&format!("`{name} (")) && stderr.contains(".clif:1)"),
                "{stderr}"
            );
            assert!(!stderr.contains("panicked at"), "{stderr}");
            assert!(!out.exists(), "a failed build writes no OUT");
        }
    }
}

#[test]
fn the_runtime_names_are_reserved() {
    for name in ["_start", "__zerolink_interrupted"] {
        let text = MAIN.replace("%main", &format!("%{name}"));
        let f = fails(&[("main.clif", MAIN), ("start.clif", &text)], &[]);
        assert!(
            f.stderr.contains("start.clif:1:")
                && f.stderr.contains(&format!("`{name}` is reserved")),
            "{}",
            f.stderr
        );
    }
}

#[test]
fn an_undefined_name_is_reported_as_undefined_whatever_refers_to_it() {
    let f = fails(
        &[(
            "main.clif",
            "; data: %tbl = addr %g\nfunction %main() -> i32 {\n    sig0 = () -> i32\n    fn0 = %g sig0\nblock0:\n    v0 = call fn0()\n    return v0\n}\n",
        )],
        &["--freestanding"],
    );
    assert!(
        f.stderr.contains("undefined symbol `g`")
            && f.stderr.contains("`tbl` at ")
            && f.stderr.contains("main.clif:1")
            && f.stderr.contains("`main` at ")
            && f.stderr.contains("main.clif:2"),
        "{}",
        f.stderr
    );
}

#[test]
fn invalid_utf8_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.clif");
    let mut bytes = MAIN.replace("return v0", "return v0 ; caf?").into_bytes();
    let at = bytes.iter().position(|&b| b == b'?').unwrap();
    bytes[at] = 0xe9;
    std::fs::write(&p, bytes).unwrap();
    let o = build(&[p], &dir.path().join("out"), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr.contains("bad.clif:4: invalid UTF-8"), "{stderr}");
}

#[test]
fn a_full_region_names_the_object() {
    let f = fails(
        &[(
            "main.clif",
            &format!("; data: %huge writable = zeroed 2000000000\n{MAIN}"),
        )],
        &[],
    );
    assert!(
        f.stderr
            .contains("main.clif:1: the bss region is full: `huge`"),
        "{}",
        f.stderr
    );
}

/// Found by fuzzing: cranelift-reader sizes its arrays by the highest entity number, so one
/// `v1777777777` asked for 10 GiB. Such numbers are an error naming the line.
#[test]
fn an_entity_numbered_absurdly_high_is_an_error_not_gigabytes() {
    let f = fails(
        &[(
            "main.clif",
            "function %main() -> i32 {\nblock0:\n    v1777777777 = iconst.i32 0\n    return v1777777777\n}\n",
        )],
        &[],
    );
    assert!(
        f.stderr.contains("main.clif:3:")
            && f.stderr.contains("`v1777777777` is numbered too high"),
        "{}",
        f.stderr
    );
}

/// An undefined name that an update brings is reported as a full build reports it (the name,
/// who refers to it, where), not as "needs a full build" over libc's own archives.
#[test]
fn an_undefined_name_in_an_update_is_reported_as_undefined() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.clif");
    let out = dir.path().join("p");
    std::fs::write(
        &src,
        "function %main() -> i32 {\nblock0:\n    v0 = iconst.i32 0\n    return v0\n}\n",
    )
    .unwrap();
    build_ok(std::slice::from_ref(&src), &out, &[]);
    settle_inputs();
    std::fs::write(
        &src,
        "function %main() -> i32 {\n    fn0 = %nosuch() -> i32\nblock0:\n    v0 = call fn0()\n    \
         return v0\n}\n",
    )
    .unwrap();
    let o = build(std::slice::from_ref(&src), &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("undefined symbol `nosuch`") && err.contains("referenced by `main` at"),
        "{err}"
    );
    assert!(!err.contains("full build"), "{err}");
}
