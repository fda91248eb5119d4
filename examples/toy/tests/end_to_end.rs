//! The toy compiler end to end: build, run, edit one function, build again (an in-place
//! update that compiles that function only), and break in gdb at a line of the source.

use std::path::Path;
use std::process::Command;

fn toy(dir: &Path, extra: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_toy"))
        .current_dir(dir)
        .args(["prog.toy", "-o", "prog"])
        .args(extra)
        .output()
        .expect("toy runs");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "toy failed: {stderr}");
    stderr
}

fn run(dir: &Path) -> String {
    let o = Command::new(dir.join("prog")).output().expect("prog runs");
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn line_of(src: &str, needle: &str) -> usize {
    src.lines()
        .position(|l| l.contains(needle))
        .expect("line found")
        + 1
}

#[test]
fn build_edit_update_and_debug() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("prog.toy");
    let mut src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fib.toy")).unwrap();
    std::fs::write(&prog, &src).unwrap();
    assert!(toy(dir.path(), &["-g"]).contains("built prog"));
    assert_eq!(run(dir.path()), "0 1 1 2 3 5 8 13 21 34");

    // One function edited: an in-place update that compiles it alone.
    src = src.replace("fib(n - 1) + fib(n - 2)", "fib(n - 1) + fib(n - 2) + 1");
    std::fs::write(&prog, &src).unwrap();
    let said = toy(dir.path(), &["-g"]);
    assert!(
        said.contains("updated prog in place: compiled 1, kept 3"),
        "{said}"
    );
    assert_eq!(run(dir.path()), "0 1 2 4 7 12 20 33 54 88");

    // Lines above every function: nothing to compile, the line tables follow.
    src = format!("# moved down\n\n{src}");
    std::fs::write(&prog, &src).unwrap();
    let said = toy(dir.path(), &["-g"]);
    assert!(said.contains("compiled 0, kept 4"), "{said}");
    let line = line_of(&src, "fib(n - 1) + fib(n - 2) + 1");
    let o = Command::new("gdb")
        .current_dir(dir.path())
        .args(["-batch", "-nx", "-ex"])
        .arg(format!("break prog.toy:{line}"))
        .args(["-ex", "run", "-ex", "bt", "./prog"])
        .output()
        .expect("gdb runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("fib () at prog.toy:{line}"))
            && out.contains("in main () at prog.toy:"),
        "gdb did not stop at prog.toy:{line}:\n{out}"
    );
}

#[test]
fn errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("prog.toy"),
        "fn main() -> (r) {\n  r = 1 +\n}\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_toy"))
        .current_dir(dir.path())
        .args(["prog.toy", "-o", "prog"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("prog.toy:3: expected an expression"),
        "{stderr}"
    );
    assert!(!dir.path().join("prog").exists());
}
