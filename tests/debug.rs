//! `-g`: gdb breaks on functions and on `FILE.clif:LINE`, steps through CLIF lines and shows
//! the real call chain; the DWARF passes readelf and llvm-dwarfdump.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

fn gdb(exe: &Path, commands: &[&str]) -> String {
    let mut cmd = Command::new("gdb");
    cmd.args(["-batch", "-nx"]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    let o = cmd
        .arg(exe)
        .output()
        .expect("gdb runs (.ci/run installs it)");
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

const FIB_CALL_LINE: usize = 20;

/// The checks of the issue, on one build whose `fib` makes its second call at `call_line`.
fn check(exe: &Path, call_line: usize) {
    // Break on a function by name inside deep recursion: the 31st call is fib(2), called by
    // fib(3), called by fib(5), called by main. The backtrace is that chain.
    let out = gdb(exe, &["break fib", "ignore 1 30", "run", "bt 8"]);
    assert!(out.contains("Breakpoint 1, fib ("), "{out}");
    let frames = out
        .lines()
        .filter(|l| l.starts_with('#') && l.contains("fib (") && l.contains("fib.clif:"))
        .count();
    assert_eq!(frames, 3, "expected three fib frames with lines:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with('#') && l.contains(" main (")),
        "{out}"
    );

    // Break at a CLIF line; `next` moves to the next CLIF line.
    let at = format!("break fib.clif:{call_line}");
    let out = gdb(exe, &[&at, "run", "next"]);
    assert!(out.contains(&format!("fib.clif:{call_line}")), "{out}");
    assert!(
        out.contains(&format!("{call_line}\t    v7 = call fn0(v6)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}\t    v8 = iadd v5, v7", call_line + 1)),
        "{out}"
    );

    let o = Command::new("readelf")
        .args(["--debug-dump=info,line"])
        .arg(exe)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.trim().is_empty(), "readelf: {stderr}");
    if let Ok(o) = Command::new("llvm-dwarfdump")
        .arg("--verify")
        .arg(exe)
        .output()
    {
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("No errors."),
            "llvm-dwarfdump --verify:\n{text}"
        );
    }
}

#[test]
fn gdb_breaks_on_functions_and_clif_lines_steps_and_shows_the_call_chain() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("fib.clif");
    let original = std::fs::read_to_string(programs().join("fib/fib.clif")).unwrap();
    assert!(original
        .lines()
        .nth(FIB_CALL_LINE - 1)
        .is_some_and(|l| l.contains("v7 = call fn0(v6)")));
    std::fs::write(&src, &original).unwrap();
    let files = vec![programs().join("common/print.clif"), src.clone()];
    let exe = dir.path().join("fib");
    build_ok(&files, &exe, &["-g"]);
    check(&exe, FIB_CALL_LINE);

    // Update in place after growing a function of the other file far beyond its slot, so it
    // moves (fib.clif's unit is copied as it was): the same checks hold.
    // 122 lines: a stack slot, and 60 stores to it that the optimiser cannot drop.
    let stores: String = (0..60)
        .map(|k| {
            format!(
                "    v{} = iconst.i64 {k}\n    store v{0}, v99+{}\n",
                100 + k,
                8 * k
            )
        })
        .collect();
    let grown = format!(
        "    ss9 = explicit_slot 480\nblock0(v0: i64):\n    v99 = stack_addr.i64 ss9\n{stores}"
    );
    let print = std::fs::read_to_string(programs().join("common/print.clif")).unwrap();
    let print = print.replacen("block0(v0: i64):\n", &grown, 1);
    let print_path = dir.path().join("print.clif");
    std::fs::write(&print_path, print).unwrap();
    let files = vec![print_path, src.clone()];
    let before = std::fs::read(&exe).unwrap();
    let o = build(&files, &exe, &["-g", "--stats"]);
    let stats = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stats}");
    assert!(
        stats.starts_with("in-place update") && stats.contains("moved 1"),
        "expected an update that moves a function:\n{stats}"
    );
    assert_ne!(before, std::fs::read(&exe).unwrap());
    check(&exe, FIB_CALL_LINE);

    // Then grow `fib` itself: it moves, its call is 122 lines further down, and the functions
    // after it in the file move down in lines without being compiled again.
    let fib = original.replacen("block0(v0: i64):\n", &grown, 1);
    std::fs::write(&src, fib).unwrap();
    let o = build(&files, &exe, &["-g", "--stats"]);
    let stats = String::from_utf8_lossy(&o.stderr);
    assert!(
        stats.starts_with("in-place update")
            && stats.contains("compiled 1,")
            && stats.contains("moved 1"),
        "expected an update that moves fib:\n{stats}"
    );
    check(&exe, FIB_CALL_LINE + 122);
    let out = gdb(&exe, &["break ack", "run", "bt 1"]);
    assert!(
        out.contains("fib.clif:147") && out.contains("147\tfunction %ack(i64, i64) -> i64 {"),
        "ack, not compiled again, follows the 122 lines added above it:\n{out}"
    );
}

/// `.eh_frame`: libgcc's `_Unwind_Backtrace`, called three calls deep, walks zerolink frames
/// (level3, level2, level1, main) and on into libc's startup frames; the program's exit status
/// is the number of frames it saw. Without unwind tables it cannot leave the first one.
#[test]
fn unwind_backtrace_walks_zerolink_frames_with_g() {
    let o = Command::new("cc")
        .arg("-print-file-name=libgcc_s.so")
        .output()
        .expect("cc runs");
    let libgcc = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let libdir = libgcc
        .parent()
        .expect("libgcc_s.so has a directory")
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let files = vec![programs().join("unwind.clif")];
    let libs = ["-L", libdir.to_str().unwrap(), "-l", "gcc_s"];
    let with = dir.path().join("with");
    let mut args = libs.to_vec();
    args.push("-g");
    build_ok(&files, &with, &args);
    let frames = run(&with).status;
    assert!(
        frames >= 6,
        "_Unwind_Backtrace saw only {frames} frames with -g"
    );
    let without = dir.path().join("without");
    build_ok(&files, &without, &libs);
    assert!(
        run(&without).status < 4,
        "without unwind tables the walk should stop early"
    );
    let o = Command::new("readelf")
        .args(["--debug-dump=frames"])
        .arg(&with)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).trim().is_empty());
    let o = Command::new("readelf")
        .args(["--wide", "-l"])
        .arg(&with)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("GNU_EH_FRAME"));
}
