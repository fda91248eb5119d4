//! The `zerolink` command itself: `run`, arguments, exit status, help.

mod support;

use support::*;

#[test]
fn run_passes_arguments_and_the_exit_status_through() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("argc.clif");
    // main(argc, argv) returns argc.
    std::fs::write(
        &p,
        "function %main(i32, i64) -> i32 {\nblock0(v0: i32, v1: i64):\n    return v0\n}\n",
    )
    .unwrap();
    let o = zerolink()
        .arg("run")
        .arg(&p)
        .args(["--", "a", "b", "c"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_bundled_example_runs_as_the_readme_says() {
    let o = zerolink()
        .arg("run")
        .arg(repo().join("examples/hello.clif"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello, world\n");
}

#[test]
fn the_multi_file_demo_runs() {
    let files = clif_files(&repo().join("examples/demo"));
    let o = zerolink().arg("run").args(&files).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("factorial(20) = 2432902008176640000"), "{out}");
}

#[test]
fn sparse_entity_numbers_are_accepted_both_ways() {
    // `fn3` and `gv5` without the numbers below them: the parser fills the gaps with
    // placeholders, which must be ignored.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sparse.clif");
    std::fs::write(
        &p,
        "; data: %seven = i64 7\n\
         function %one() -> i64 {\nblock0:\n    v0 = iconst.i64 1\n    return v0\n}\n\
         function %main() -> i32 {\n    gv5 = symbol %seven\n    fn3 = %one() -> i64\n\
         block0:\n    v0 = call fn3()\n    v1 = symbol_value.i64 gv5\n    v2 = load.i64 v1\n\
         v3 = iadd v0, v2\n    v4 = ireduce.i32 v3\n    return v4\n}\n",
    )
    .unwrap();
    let got = build_both_and_run(&[p], dir.path(), &[]);
    assert_eq!(got.status, 8);
}

#[test]
fn help_explains_the_commands() {
    let o = zerolink().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for word in ["build", "run", "Examples"] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    let o = zerolink().args(["build", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    for word in ["--opt-level", "--set", "--baseline", "--output"] {
        assert!(text.contains(word), "build --help lacks {word}:\n{text}");
    }
}

#[test]
fn generated_programs_build_both_ways_and_every_edit_shows_in_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let o = zerolink()
        .args([
            "gen",
            "--functions",
            "2000",
            "--files",
            "2",
            "--seed",
            "7",
            "-o",
        ])
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = clif_files(&src);
    let before = build_both_and_run(&files, dir.path(), &[]);
    assert_eq!(before.status, 0);
    assert_eq!(
        before.stdout.len(),
        17,
        "a 16-digit hex checksum and a newline"
    );
    // Change one constant in a function early in the first file, so that every function
    // after it mixes into the checksum: the change must still show.
    let last = files.first().unwrap();
    let text = std::fs::read_to_string(last).unwrap();
    let edited = text.replacen("iconst.i64 3\n", "iconst.i64 4\n", 1);
    assert_ne!(text, edited);
    std::fs::write(last, edited).unwrap();
    let after = build_both_and_run(&files, dir.path(), &[]);
    assert_ne!(
        before.stdout, after.stdout,
        "the edit did not show in the checksum"
    );
}

#[test]
fn bench_compare_produces_the_table_json_and_plot_with_every_path_checked() {
    let dir = tempfile::tempdir().unwrap();
    let o = zerolink()
        .args([
            "bench",
            "compare",
            "--sizes",
            "40,80",
            "--per-file",
            "20",
            "--runs",
            "1",
            "-o",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let table = std::fs::read_to_string(dir.path().join("bench.txt")).unwrap();
    assert!(
        table.contains("direct (zerolink)") && table.contains("separate + GNU ld"),
        "{table}"
    );
    assert!(table.contains("direct: in-place update"), "{table}");
    let json: String = std::fs::read_to_string(dir.path().join("bench.json")).unwrap();
    assert!(json.contains("\"edit_one_function\""), "{json}");
    let svg = std::fs::read_to_string(dir.path().join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
}

/// `-o` as ld treats it: a character device (`-o /dev/null`, here a private node made with
/// `mknod`) is written into and stays a device; a FIFO, a socket, a directory and a loop of
/// symbolic links are refused at once with what they are, and none is replaced; a symbolic
/// link to a file stays a link.
#[test]
fn output_paths_that_are_not_regular_files_are_written_into_or_refused() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("p.clif");
    std::fs::write(
        &src,
        "function %main() -> i32 {\nblock0:\n    v0 = iconst.i32 3\n    return v0\n}\n",
    )
    .unwrap();
    let build = |out: &std::path::Path| {
        let o = zerolink()
            .arg("build")
            .arg(&src)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let sh = |cmd: &str| {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(d)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{cmd}");
    };
    // A character device: /dev/null's numbers, on a node of our own.
    sh("mknod null c 1 3");
    let (ok, err) = build(&d.join("null"));
    assert!(ok, "{err}");
    assert!(std::fs::metadata(d.join("null"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(std::fs::read_dir(d).unwrap().all(|e| {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        !n.contains("zl-lock") && !n.contains(".tmp")
    }));
    sh("mkfifo fifo && ln -s loop1 loop2 && ln -s loop2 loop1 && mkdir adir");
    let socket = d.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    for (name, what) in [
        ("fifo", "is a FIFO"),
        ("sock", "is a socket"),
        ("loop1", "is a loop of symbolic links"),
        ("adir", "is a directory"),
    ] {
        let t = std::time::Instant::now();
        let (ok, err) = build(&d.join(name));
        assert!(!ok && err.contains(what), "{name}: {err}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{name} blocked"
        );
    }
    let kinds = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap().file_type();
    assert!(kinds("fifo").is_fifo() && kinds("sock").is_socket() && kinds("loop1").is_symlink());
    assert!(!d.join(".adir.zl-lock").exists() && !d.join(".fifo.zl-lock").exists());
    // A symbolic link to a file: the file is written, the link stays.
    sh("touch real && ln -s real link");
    let (ok, err) = build(&d.join("link"));
    assert!(ok, "{err}");
    assert!(kinds("link").is_symlink());
    let status = std::process::Command::new(d.join("link")).status().unwrap();
    assert_eq!(status.code(), Some(3));
}
