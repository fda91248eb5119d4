//! End to end: CLIF in, executable out, executable run. Every program is also built through the
//! separate-link path (cranelift-object + `cc`) and must behave identically.

mod support;

use support::*;

/// Build a corpus program both ways and compare with its `expected.stdout`/`expected.status`.
fn corpus(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let files = program_files(name);
    let got = build_both_and_run(&files, dir.path(), &[]);
    let expected_dir = programs().join(name);
    let stdout = std::fs::read(expected_dir.join("expected.stdout")).unwrap_or_default();
    let status: i32 = std::fs::read_to_string(expected_dir.join("expected.status"))
        .map(|s| s.trim().parse().expect("expected.status is a number"))
        .unwrap_or(0);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&stdout),
        "{name}: stdout"
    );
    assert_eq!(got.status, status, "{name}: exit status");
}

macro_rules! corpus_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { corpus(stringify!($name)); })*
    };
}

corpus_tests!(
    hello,
    exit_status,
    fib,
    mutual,
    fnptr,
    data_regions,
    data_pointers,
    floats_vectors,
    br_table,
    i128,
    builtins,
);

#[test]
fn optimisation_levels_and_baseline_cpu_give_the_same_behaviour() {
    let files = program_files("floats_vectors");
    let dir = tempfile::tempdir().unwrap();
    let reference = build_both_and_run(&files, dir.path(), &[]);
    for extra in [
        &["-O", "none"][..],
        &["-O", "speed_and_size"],
        &["--baseline"],
        &["--set", "has_avx=false"],
        &["--set", "preserve_frame_pointers=true"],
    ] {
        let got = build_both_and_run(&files, dir.path(), extra);
        assert_eq!(got.stdout, reference.stdout, "{extra:?}");
        assert_eq!(got.status, reference.status, "{extra:?}");
    }
}

/// `--freestanding`: the same programs as static executables with zerolink's own `_start`
/// and built-ins, no interpreter, no libc.
#[test]
fn freestanding_builds_are_static_and_behave_the_same() {
    for name in [
        "hello",
        "builtins",
        "fib",
        "data_pointers",
        "floats_vectors",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let files = program_files(name);
        let got = build_both_and_run(&files, dir.path(), &["--freestanding"]);
        let expected_dir = programs().join(name);
        let stdout = std::fs::read(expected_dir.join("expected.stdout")).unwrap_or_default();
        assert_eq!(got.stdout, stdout, "{name}");
        let headers = check_readelf(&dir.path().join("direct"));
        assert!(
            !headers.contains("INTERP"),
            "{name}: a freestanding build has an interpreter"
        );
        assert!(
            !headers.contains("DYNAMIC"),
            "{name}: a freestanding build is dynamic"
        );
    }
}
