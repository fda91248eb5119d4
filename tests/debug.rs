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

    // `step` at a call moves into the callee, to its first line.
    let at = format!("break fib.clif:{}", call_line - 2);
    let out = gdb(exe, &[&at, "run", "step"]);
    let (before, after) = out
        .split_once(&format!("{}\t    v5 = call fn0(v4)", call_line - 2))
        .unwrap_or_else(|| panic!("no stop at the first call:\n{out}"));
    assert!(before.contains("Breakpoint 1, fib ("), "{out}");
    assert!(
        after.contains("fib () at") && after.contains("4\tfunction %fib(i64) -> i64 {"),
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
    gdb_checks(&[]);
}

/// The same checks on a position-independent executable, updated in place as above: gdb
/// relocates the DWARF by the load address; the unwind tables hold PC-relative addresses.
#[test]
fn a_pie_with_debug_info_passes_the_same_gdb_checks_and_updates() {
    gdb_checks(&["--pie"]);
}

fn gdb_checks(extra: &[&str]) {
    let with = |flags: &[&'static str]| -> Vec<&str> {
        let mut v: Vec<&str> = flags.to_vec();
        v.extend_from_slice(extra);
        v
    };
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
    build_ok(&files, &exe, &with(&["-g"]));
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
    let o = build(&files, &exe, &with(&["-g", "--stats"]));
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
    let o = build(&files, &exe, &with(&["-g", "--stats"]));
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
    // A PIE: the same walk, from wherever the loader put it.
    let pie = dir.path().join("pie");
    let mut pie_args = args.clone();
    pie_args.push("--pie");
    build_ok(&files, &pie, &pie_args);
    assert_eq!(run(&pie).status, frames, "the PIE's walk differs");
    // Its FDEs are PC-relative (`DW_EH_PE_pcrel | sdata4`, as GCC writes them): an absolute
    // address would be wrong wherever the loader put it (libgcc reads the address from
    // `.eh_frame_hdr` and would not notice; LLVM's libunwind and gdb would).
    let o = Command::new("readelf")
        .args(["--debug-dump=frames"])
        .arg(&pie)
        .output()
        .unwrap();
    let frames_text = String::from_utf8_lossy(&o.stdout);
    assert!(String::from_utf8_lossy(&o.stderr).trim().is_empty());
    assert!(
        frames_text.contains("Augmentation:          \"zR\"")
            && frames_text.contains("Augmentation data:     1b"),
        "{frames_text}"
    );
    let without = dir.path().join("without");
    build_ok(&files, &without, &libs);
    assert!(
        run(&without).status < 4,
        "without unwind tables the walk should stop early"
    );
    // `zerolink run` includes unwind tables unless told not to.
    let status = |extra: &[&str]| {
        zerolink()
            .arg("run")
            .args(libs)
            .args(extra)
            .args(&files)
            .status()
            .unwrap()
            .code()
    };
    assert!(status(&[]).is_some_and(|n| n >= 6), "{:?}", status(&[]));
    assert!(status(&["--no-debug-info"]).is_some_and(|n| n < 4));
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

const SPIN: &str = "\
function %spin(i64) -> i64 {
block0(v0: i64):
    v1 = iconst.i64 0
    jump block1(v0, v1)

block1(v2: i64, v3: i64):
    v4 = iconst.i64 0
    v5 = icmp eq v2, v4
    brif v5, block3, block2

block2:
    v6 = imul v3, v2
    v7 = iadd v6, v2
    v8 = iconst.i64 1
    v9 = isub v2, v8
    jump block1(v9, v7)

block3:
    return v3
}

function %main() -> i32 {
    fn0 = %spin(i64) -> i64
block0:
    v0 = iconst.i64 100000000
    v1 = call fn0(v0)
    v2 = ireduce.i32 v1
    return v2
}
";

/// `perf report` names zerolink functions and `perf annotate` shows the CLIF lines the samples
/// fall on. Skipped (with a note) where the kernel does not let this process sample itself.
#[test]
fn perf_report_names_functions_and_annotate_shows_clif_lines() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("spin.clif");
    std::fs::write(&src, SPIN).unwrap();
    let exe = dir.path().join("spin");
    build_ok(&[src], &exe, &["-g"]);
    let data = dir.path().join("perf.data");
    let record = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-o"])
        .arg(&data)
        .arg(&exe)
        .output();
    match record {
        Ok(o) if data.exists() && o.status.code() == Some(exit_of_spin()) => {}
        Ok(o) => {
            eprintln!(
                "perf cannot sample here, skipped: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return;
        }
        Err(e) => {
            eprintln!("perf is not installed (.ci/run installs it), skipped: {e}");
            return;
        }
    }
    let report = Command::new("perf")
        .args(["report", "--stdio", "-i"])
        .arg(&data)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(
        report
            .lines()
            .any(|l| l.contains("[.] spin") && !l.starts_with('#')),
        "{report}"
    );
    let annotate = Command::new("perf")
        .args(["annotate", "--stdio", "-l", "-i"])
        .arg(&data)
        .arg("spin")
        .output()
        .unwrap();
    let annotate = String::from_utf8_lossy(&annotate.stdout);
    // The hot loop is lines 6-16; its instructions are annotated with them.
    let hot: Vec<usize> = annotate
        .lines()
        .filter_map(|l| l.trim().split_once(" spin.clif:"))
        .filter_map(|(_, line)| line.trim().parse().ok())
        .collect();
    assert!(
        !hot.is_empty() && hot.iter().all(|l| (6..=16).contains(l)),
        "{annotate}"
    );
    assert!(annotate.contains("v6 = imul v3, v2"), "{annotate}");
}

/// The exit status of SPIN: the low byte of its sum.
fn exit_of_spin() -> i32 {
    let (mut n, mut acc) = (100_000_000u64, 0u64);
    while n != 0 {
        acc = acc.wrapping_mul(n).wrapping_add(n);
        n -= 1;
    }
    (acc as u32 & 0xff) as i32
}

/// `--frame-pointers`: Cranelift is told to keep them (it is in the settings the executable
/// records), and every function sets up `rbp`, leaf functions included.
#[test]
fn frame_pointers_are_kept_in_every_function() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("spin.clif");
    std::fs::write(&src, SPIN).unwrap();
    let exe = dir.path().join("spin");
    let settings = |exe: &Path| {
        let o = zerolink().arg("inspect").arg(exe).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    build_ok(std::slice::from_ref(&src), &exe, &[]);
    assert!(settings(&exe).contains("preserve_frame_pointers=0"));
    build_ok(&[src], &exe, &["--frame-pointers"]);
    assert!(settings(&exe).contains("preserve_frame_pointers=1"));
    let o = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(&exe)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    for f in ["spin", "main"] {
        let body: Vec<&str> = text
            .split(&format!("<{f}>:\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("{f} in:\n{text}"))
            .lines()
            .take(2)
            .collect();
        assert!(
            body[0].contains("push   %rbp") && body[1].contains("mov    %rsp,%rbp"),
            "{f}: {body:?}"
        );
    }
}

/// A damaged debug section is a reason for a full build (said on one line), never wrong debug
/// information or a crash; the rebuilt executable debugs as before.
#[test]
fn a_damaged_debug_section_gets_a_full_build_with_the_reason() {
    use object::{Object, ObjectSection};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("fib.clif");
    std::fs::copy(programs().join("fib/fib.clif"), &src).unwrap();
    let files = vec![programs().join("common/print.clif"), src];
    let exe = dir.path().join("fib");
    build_ok(&files, &exe, &["-g"]);
    let mut bytes = std::fs::read(&exe).unwrap();
    let (offset, _) = object::File::parse(&*bytes)
        .unwrap()
        .section_by_name(".debug_line")
        .and_then(|s| s.file_range())
        .expect(".debug_line is in the file");
    bytes[offset as usize + 40] ^= 0xff;
    std::fs::write(&exe, &bytes).unwrap();
    let o = build(&files, &exe, &["-g"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("full build")
            && stderr.contains(".debug_line section is missing or damaged"),
        "{stderr}"
    );
    check(&exe, FIB_CALL_LINE);
}
