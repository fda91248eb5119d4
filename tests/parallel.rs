//! Parallel code generation: the executable is the same, byte for byte, whatever the number of
//! threads and however they were scheduled; and so is an in-place update run twice.

mod support;

use std::path::{Path, PathBuf};

use support::*;

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn generate(dir: &Path, functions: usize, files: usize) -> Vec<PathBuf> {
    let src = dir.join("src");
    let o = zerolink()
        .args([
            "gen",
            "--functions",
            &functions.to_string(),
            "--files",
            &files.to_string(),
            "-o",
        ])
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    clif_files(&src)
}

#[test]
fn output_is_bit_identical_whatever_the_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let files = generate(dir.path(), 5000, 5);
    settle_inputs();
    let mut outputs = Vec::new();
    for (k, j) in ["1", "2", "8", "2"].into_iter().enumerate() {
        let out = dir.path().join(format!("out{k}"));
        build_ok(&files, &out, &["--freestanding", "--full", "-j", j]);
        outputs.push(sha(&out));
    }
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]),
        "outputs differ between -j values"
    );
    assert_eq!(run(&dir.path().join("out0")).status, 0);

    // Corpus programs, linked with libc.
    for name in ["fib", "data_pointers", "floats_vectors", "mutual"] {
        let files = program_files(name);
        let a = dir.path().join(format!("{name}-1"));
        let b = dir.path().join(format!("{name}-8"));
        build_ok(&files, &a, &["-j", "1"]);
        build_ok(&files, &b, &["-j", "8"]);
        assert_eq!(sha(&a), sha(&b), "{name}: -j 1 and -j 8 differ");
    }
}

#[test]
fn the_same_in_place_update_gives_the_same_bytes_when_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let files = generate(dir.path(), 2000, 4);
    settle_inputs();
    let base = dir.path().join("base");
    build_ok(&files, &base, &["--freestanding"]);
    // One edit: a constant in one function of the third file.
    let third = &files[2];
    let text = std::fs::read_to_string(third).unwrap();
    std::fs::write(third, text.replacen("iconst.i64 3\n", "iconst.i64 4\n", 1)).unwrap();
    settle_inputs();
    let mut results = Vec::new();
    for j in ["1", "2", "8"] {
        let out = dir.path().join(format!("updated-{j}"));
        std::fs::copy(&base, &out).unwrap();
        let o = build(&files, &out, &["--freestanding", "--stats", "-j", j]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.starts_with("in-place update"), "{stderr}");
        results.push(sha(&out));
    }
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "repeated updates differ"
    );
}
