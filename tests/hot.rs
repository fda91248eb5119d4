//! Hot patching (`zerolink build --hot PID`, `zerolink run --watch`): programs that run while
//! they are edited. Each test starts a real process, changes its source, patches it and
//! reads what it prints: the new code runs, its state (a counter in data) goes on where it
//! was, and a change that cannot be applied leaves the process exactly as it was.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A process whose stdout goes to a file the test reads; killed when dropped. (Without a
/// child: only the file, which another process writes.)
struct Running {
    child: Option<Child>,
    out: PathBuf,
}

impl Running {
    fn start(exe: &Path, out: PathBuf) -> Running {
        let file = std::fs::File::create(&out).unwrap();
        let child = Command::new(exe)
            .stdout(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        Running {
            child: Some(child),
            out,
        }
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("a process").id().to_string()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    /// Bytes written so far: lines after this mark were written later.
    fn mark(&self) -> usize {
        std::fs::metadata(&self.out).map_or(0, |m| m.len() as usize)
    }

    /// The first complete line after `mark` that satisfies `want`, waiting up to 2 s.
    fn wait_line(&self, mark: usize, want: impl Fn(&str) -> bool) -> Option<String> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            let text = self.text();
            let after = text.get(mark..).unwrap_or("");
            let complete = &after[..after.rfind('\n').map_or(0, |i| i + 1)];
            if let Some(line) = complete.lines().find(|l| want(l)) {
                return Some(line.to_string());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    fn alive(&mut self) -> bool {
        let child = self.child.as_mut().expect("a process");
        child.try_wait().unwrap().is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `zerolink run --watch EXTRA... SRC`, the program's output going to `out`: the watcher,
/// its stderr after the first line, the program's process id (from that line), and the
/// output.
fn start_watch(
    src: &Path,
    out: &Path,
    extra: &[&str],
) -> (Child, BufReader<std::process::ChildStderr>, i32, Running) {
    let mut watch = Command::new(env!("CARGO_BIN_EXE_zerolink"))
        .args(["run", "--watch"])
        .args(extra)
        .arg(src)
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let pid: i32 = line
        .split("as process ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    let output = Running {
        child: None,
        out: out.to_path_buf(),
    };
    (watch, stderr, pid, output)
}

/// `count N f F p P`: the fields as numbers.
fn fields(line: &str) -> Vec<i64> {
    line.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Every line's count is one more than the line before's: the counter was never reset.
fn assert_counts_consecutive(text: &str) {
    let counts: Vec<i64> = text
        .lines()
        .filter(|l| l.starts_with("count "))
        .map(|l| fields(l)[0])
        .collect();
    assert!(counts.len() > 2, "too little output: {text}");
    for w in counts.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the count restarted or skipped:\n{text}");
    }
}

/// The counter program: every 10 ms it counts (in a data object) and prints the count,
/// `f(count)` called directly, and `f(count)` called through a pointer taken at start-up.
/// `f(x)` is `x + add` after `grow` calls of `g` (each adds one): more calls, more code.
fn counter(add: i64, grow: usize) -> String {
    let mut f =
        String::from("function %f(i64) -> i64 {\n    fn0 = %g(i64) -> i64\nblock0(v0: i64):\n");
    let mut last = 0;
    for i in 0..grow {
        f.push_str(&format!("    v{} = call fn0(v{})\n", 100 + i, last));
        last = 100 + i;
    }
    f.push_str(&format!(
        "    v1 = iconst.i64 {}\n    v2 = iadd v{last}, v1\n    return v2\n}}\n",
        add - grow as i64
    ));
    format!(
        r#"; data: %count writable = i64 0
; data: %fp writable = i64 0
; data: %fmt = "count %ld f %ld p %ld\n\0"

function %g(i64) -> i64 {{
block0(v0: i64):
    v1 = iconst.i64 1
    v2 = iadd v0, v1
    return v2
}}

{f}
function %main() -> i32 {{
    gv0 = symbol %count
    gv1 = symbol %fmt
    gv2 = symbol %fp
    sig0 = (i64) -> i64
    fn0 = %f sig0
    fn1 = %dprintf(i32, i64, i64, i64, i64) -> i32
    fn2 = %usleep(i32) -> i32
block0:
    v0 = symbol_value.i64 gv0
    v1 = symbol_value.i64 gv1
    v2 = symbol_value.i64 gv2
    v3 = func_addr.i64 fn0
    store v3, v2
    jump block1
block1:
    v10 = load.i64 v0
    v11 = iconst.i64 1
    v12 = iadd v10, v11
    store v12, v0
    v13 = call fn0(v12)
    v14 = load.i64 v2
    v15 = call_indirect sig0, v14(v12)
    v16 = iconst.i32 1
    v17 = call fn1(v16, v1, v12, v13, v15)
    v18 = iconst.i32 10000
    v19 = call fn2(v18)
    jump block1
}}
"#
    )
}

/// `zerolink build SRC -o EXE EXTRA... --hot PID`.
fn hot_with(src: &Path, exe: &Path, pid: &str, extra: &[&str]) -> std::process::Output {
    zerolink()
        .arg("build")
        .arg(src)
        .arg("-o")
        .arg(exe)
        .args(extra)
        .args(["--hot", pid])
        .output()
        .expect("zerolink starts")
}

fn hot(src: &Path, exe: &Path, pid: &str) -> std::process::Output {
    hot_with(src, exe, pid, &[])
}

fn hot_ok(src: &Path, exe: &Path, pid: &str) -> String {
    let o = hot(src, exe, pid);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "zerolink build --hot failed:\n{stderr}");
    stderr
}

/// Write `text` to `dir/NAME.clif`, build it into `dir/NAME` with `flags` and start it,
/// its output going to `dir/out`.
fn start_program(
    dir: &Path,
    name: &str,
    text: &str,
    flags: &[&str],
    out: &str,
) -> (PathBuf, PathBuf, Running) {
    let src = dir.join(format!("{name}.clif"));
    let exe = dir.join(name);
    std::fs::write(&src, text).unwrap();
    build_ok(std::slice::from_ref(&src), &exe, flags);
    let run = Running::start(&exe, dir.join(out));
    (src, exe, run)
}

/// Start the counter program with `f(x) = x + 1000`; returns once it has printed.
fn start_counter(dir: &Path) -> (PathBuf, PathBuf, Running) {
    let (src, exe, run) = start_program(dir, "counter", &counter(1000, 0), &[], "out.txt");
    run.wait_line(0, |l| l.starts_with("count 3 "))
        .expect("the program prints");
    (src, exe, run)
}

#[test]
fn an_edited_function_runs_at_once_and_the_count_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (src, exe, mut run) = start_counter(dir.path());
    // A new f, and a new initial value for the count: the running count is state and
    // stays as the program made it.
    let text = counter(2000, 0).replace("%count writable = i64 0", "%count writable = i64 500");
    std::fs::write(&src, text).unwrap();
    let mark = run.mark();
    let t = Instant::now();
    let stderr = hot_ok(&src, &exe, &run.pid());
    assert!(stderr.contains("`f` in place"), "{stderr}");
    let line = run
        .wait_line(mark, |l| {
            let v = fields(l);
            v.len() == 3 && v[1] == v[0] + 2000 && v[2] == v[0] + 2000
        })
        .unwrap_or_else(|| panic!("the new f never ran:\n{}", run.text()));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert!(fields(&line)[0] > 3, "the count started again: {line}");
    assert_counts_consecutive(&run.text());
    assert!(run.alive());
    // The file is the patched program: started anew, it runs the new f from the new count.
    let o = Command::new("timeout")
        .args(["0.05"])
        .arg(&exe)
        .output()
        .unwrap();
    let fresh = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(fresh.starts_with("count 501 f 2501 p 2501\n"), "{fresh}");
}

#[test]
fn a_function_that_outgrows_its_slot_moves_and_every_caller_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let (src, exe, mut run) = start_counter(dir.path());
    // Forty calls do not fit the slot of `x + 1000`: f moves. main's direct call is
    // patched; the pointer main stored at start-up reaches it through the old entry.
    std::fs::write(&src, counter(5000, 40)).unwrap();
    let mark = run.mark();
    let stderr = hot_ok(&src, &exe, &run.pid());
    assert!(stderr.contains("`f` in new slots"), "{stderr}");
    assert!(stderr.contains("1 old entries now jump"), "{stderr}");
    run.wait_line(mark, |l| {
        let v = fields(l);
        v.len() == 3 && v[1] == v[0] + 5000 && v[2] == v[0] + 5000
    })
    .unwrap_or_else(|| panic!("the moved f is not reached:\n{}", run.text()));
    // And back to a small f: in the new slot, in place.
    std::fs::write(&src, counter(7, 0)).unwrap();
    let mark = run.mark();
    hot_ok(&src, &exe, &run.pid());
    run.wait_line(mark, |l| {
        let v = fields(l);
        v.len() == 3 && v[1] == v[0] + 7 && v[2] == v[0] + 7
    })
    .unwrap_or_else(|| panic!("the second edit never ran:\n{}", run.text()));
    assert_counts_consecutive(&run.text());
    assert!(run.alive());
}

#[test]
fn the_function_a_thread_is_inside_moves_and_its_old_frame_finishes_on_old_code() {
    let dir = tempfile::tempdir().unwrap();
    let (src, exe, mut run) = start_counter(dir.path());
    // main never returns: it is always busy. Its new version (which prints f + 1) goes to
    // a new slot, while the running loop goes on in the old one, calling the new f.
    let text = counter(2000, 0).replace(
        "    v17 = call fn1(v16, v1, v12, v13, v15)",
        "    v30 = iconst.i64 1\n    v31 = iadd v13, v30\n    v17 = call fn1(v16, v1, v12, v31, v15)",
    );
    std::fs::write(&src, text).unwrap();
    let mark = run.mark();
    let stderr = hot_ok(&src, &exe, &run.pid());
    assert!(stderr.contains("`main` in new slots"), "{stderr}");
    assert!(stderr.contains("`f` in place"), "{stderr}");
    run.wait_line(mark, |l| {
        let v = fields(l);
        v.len() == 3 && v[1] == v[0] + 2000 && v[2] == v[0] + 2000
    })
    .unwrap_or_else(|| panic!("the old main does not call the new f:\n{}", run.text()));
    std::thread::sleep(Duration::from_millis(50));
    assert!(run.alive(), "the process died:\n{}", run.text());
    let text = run.text();
    for l in text.lines() {
        let v = fields(l);
        assert!(
            v[1] == v[2],
            "the running main changed under its frame: {l}"
        );
    }
    assert_counts_consecutive(&run.text());
}

/// The bytes of the process's text, as mapped.
fn process_text(pid: &str) -> Vec<u8> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with("10000000-"))
        .expect("text is mapped at 0x1000_0000");
    let end = u64::from_str_radix(&line[9..line.find(' ').unwrap()], 16).unwrap();
    let mut bytes = vec![0; (end - 0x1000_0000) as usize];
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    mem.read_exact_at(&mut bytes, 0x1000_0000).unwrap();
    bytes
}

/// Apply `edit` to the running counter program: it must be refused with `message`, and
/// the process must run on exactly as it was (its code unchanged, the old f printing).
fn assert_refused(dir: &Path, src_text: String, message: &str) {
    let (src, exe, mut run) = start_counter(dir);
    let before = process_text(&run.pid());
    std::fs::write(&src, src_text).unwrap();
    let o = hot(&src, &exe, &run.pid());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the change was applied:\n{stderr}");
    assert!(stderr.contains("runs on unchanged"), "{stderr}");
    assert!(stderr.contains(message), "expected {message:?}:\n{stderr}");
    assert_eq!(
        process_text(&run.pid()),
        before,
        "the refused patch changed the code"
    );
    let mark = run.mark();
    run.wait_line(mark, |l| fields(l).len() == 3)
        .expect("the process goes on");
    let text = run.text();
    for l in text.lines().filter(|l| l.starts_with("count ")) {
        let v = fields(l);
        assert_eq!(v[1], v[0] + 1000, "not the old f: {l}");
    }
    assert_counts_consecutive(&text);
    assert!(run.alive());
    // The file was updated all the same, and the process is now behind it: a later patch
    // says so instead of applying a log written for another program.
    let o = hot(&src, &exe, &run.pid());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("does not run"), "{stderr}");
}

#[test]
fn a_data_object_that_changes_size_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let text = counter(2000, 0).replace("%count writable = i64 0", "%count writable = i32 0");
    assert_refused(
        dir.path(),
        text,
        "data object `count` changed size (8 to 4 bytes)",
    );
}

#[test]
fn a_new_signature_with_its_caller_on_the_stack_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // f takes a second argument, and main (which never returns) passes it.
    let text = counter(1000, 0)
        .replace(
            "function %f(i64) -> i64 {",
            "function %f(i64, i64) -> i64 {",
        )
        .replace(
            "block0(v0: i64):\n    v1 = iconst.i64 1000",
            "block0(v0: i64, v9: i64):\n    v1 = iconst.i64 1000",
        )
        .replace("sig0 = (i64) -> i64", "sig0 = (i64, i64) -> i64")
        .replace("call fn0(v12)", "call fn0(v12, v12)")
        .replace("v14(v12)", "v14(v12, v12)");
    assert_refused(
        dir.path(),
        text,
        "the signature of `f` changed, but its caller `main` is on a thread's stack",
    );
}

#[test]
fn a_removed_function_that_a_thread_returns_into_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // main's loop moves into `spin`, which main calls; then `spin` is removed while the
    // process is inside it.
    let spin = counter(1000, 0)
        .replace("function %main() -> i32 {", "function %spin() -> i32 {")
        + "\nfunction %main() -> i32 {\n    fn0 = %spin() -> i32\nblock0:\n    v0 = call fn0()\n    return v0\n}\n";
    let src = dir.path().join("counter.clif");
    let exe = dir.path().join("counter");
    std::fs::write(&src, &spin).unwrap();
    build_ok(std::slice::from_ref(&src), &exe, &[]);
    let run = Running::start(&exe, dir.path().join("out.txt"));
    run.wait_line(0, |l| l.starts_with("count 3 ")).unwrap();
    let before = process_text(&run.pid());
    let without = counter(1000, 0)
        .split("function %main")
        .next()
        .unwrap()
        .to_string()
        + "function %main() -> i32 {\nblock0:\n    v0 = iconst.i32 0\n    return v0\n}\n";
    std::fs::write(&src, without).unwrap();
    let o = hot(&src, &exe, &run.pid());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("function `spin` was removed, but a thread is running it"),
        "{stderr}"
    );
    assert_eq!(process_text(&run.pid()), before);
    let mark = run.mark();
    run.wait_line(mark, |l| fields(l).len() == 3)
        .expect("the process goes on");
}

#[test]
fn processes_that_do_not_run_the_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (src, exe, run) = start_counter(dir.path());
    // Not a zerolink executable at all.
    let mut sleep = Command::new("sleep").arg("10").spawn().unwrap();
    let o = hot(&src, &exe, &sleep.id().to_string());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("is not a program zerolink built"),
        "{stderr}"
    );
    assert!(sleep.try_wait().unwrap().is_none(), "sleep was harmed");
    sleep.kill().unwrap();
    let _ = sleep.wait();
    // What can never be applied to a process is refused before anything is done.
    let o = hot_with(&src, &exe, &run.pid(), &["--full"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("cannot be used with") && stderr.contains("--full"),
        "{stderr}"
    );
    let o = zerolink()
        .args(["run", "--watch", "--separate"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("not with --separate"));
    // No such process.
    let o = hot(&src, &exe, "999999999");
    assert!(String::from_utf8_lossy(&o.stderr).contains("there is no process 999999999"));
    // The file moved on without the process: its log would describe another program.
    std::fs::write(&src, counter(3000, 0)).unwrap();
    build_ok(std::slice::from_ref(&src), &exe, &[]);
    std::fs::write(&src, counter(4000, 0)).unwrap();
    let o = hot(&src, &exe, &run.pid());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("does not run")
            && stderr.contains("it runs build 1 of it, the file is at build 2"),
        "{stderr}"
    );
}

#[test]
fn run_watch_patches_its_child_on_every_save() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("counter.clif");
    std::fs::write(&src, counter(1000, 0)).unwrap();
    let out = dir.path().join("out.txt");
    let (mut watch, mut stderr, pid, running) = start_watch(&src, &out, &[]);
    running.wait_line(0, |l| l.starts_with("count 3 ")).unwrap();
    for add in [2000, 3000] {
        let mark = running.mark();
        std::fs::write(&src, counter(add, 0)).unwrap();
        running
            .wait_line(mark, |l| {
                let v = fields(l);
                v.len() == 3 && v[1] == v[0] + add
            })
            .unwrap_or_else(|| panic!("run --watch did not patch f to + {add}"));
        let mut patched = String::new();
        stderr.read_line(&mut patched).unwrap();
        assert!(patched.contains("`f` in place"), "{patched}");
    }
    assert_counts_consecutive(&running.text());
    // The child's end is run --watch's end, with its status.
    // SAFETY: signals the child the watcher started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = watch.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

/// The freestanding counter: writes (count, f(count)) as two raw 8-byte words every 10 ms.
fn freestanding_counter(add: i64) -> String {
    format!(
        r#"; data: %count writable = i64 0

function %f(i64) -> i64 {{
block0(v0: i64):
    v1 = iconst.i64 {add}
    v2 = iadd v0, v1
    return v2
}}

function %emit2(i64, i64) {{
    ss0 = explicit_slot 16
    sig0 = (i32, i64, i64) -> i64
    fn0 = %zl_write sig0
block0(v0: i64, v1: i64):
    v2 = stack_addr.i64 ss0
    store v0, v2
    store v1, v2+8
    v3 = iconst.i32 1
    v4 = iconst.i64 16
    v5 = call fn0(v3, v2, v4)
    return
}}

function %nap() {{
    ss0 = explicit_slot 16
    sig0 = (i64, i64, i64, i64, i64, i64, i64) -> i64
    fn0 = %zl_syscall sig0
block0:
    v0 = stack_addr.i64 ss0
    v1 = iconst.i64 0
    store v1, v0
    v2 = iconst.i64 10000000
    store v2, v0+8
    v3 = iconst.i64 35
    v4 = call fn0(v3, v0, v1, v1, v1, v1, v1)
    return
}}

function %main() -> i32 {{
    gv0 = symbol %count
    fn0 = %f(i64) -> i64
    fn1 = %emit2(i64, i64)
    fn2 = %nap()
block0:
    v0 = symbol_value.i64 gv0
    jump block1
block1:
    v1 = load.i64 v0
    v2 = iconst.i64 1
    v3 = iadd v1, v2
    store v3, v0
    v4 = call fn0(v3)
    call fn1(v3, v4)
    call fn2()
    jump block1
}}
"#
    )
}

#[test]
fn freestanding_programs_are_patched_too() {
    let dir = tempfile::tempdir().unwrap();
    let (src, exe, run) = start_program(
        dir.path(),
        "counter",
        &freestanding_counter(1000),
        &["--freestanding"],
        "out.bin",
    );
    let out = dir.path().join("out.bin");
    let records = || -> Vec<(i64, i64)> {
        std::fs::read(&out)
            .unwrap_or_default()
            .chunks_exact(16)
            .map(|c| {
                (
                    i64::from_le_bytes(c[..8].try_into().unwrap()),
                    i64::from_le_bytes(c[8..].try_into().unwrap()),
                )
            })
            .collect()
    };
    let t = Instant::now();
    while records().len() < 3 && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(&src, freestanding_counter(-5)).unwrap();
    let o = hot_with(&src, &exe, &run.pid(), &["--freestanding"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = Instant::now();
    while !records().iter().any(|&(c, f)| f == c - 5) && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = records();
    assert!(
        r.iter().any(|&(c, f)| f == c - 5),
        "the new f never ran: {r:?}"
    );
    for w in r.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "the count restarted: {r:?}");
    }
}

/// The differential program: three threads, each printing `wID r R` every 5 ms, where R is
/// the sum of `h_i(i + 1)` over eight functions; `h_i(x) = ((x * a) ^ b) + c`, after `k`
/// calls of `g` (each adds one) for the larger versions.
#[derive(Clone, Copy)]
struct H {
    a: i64,
    b: i64,
    c: i64,
    k: usize,
}

impl H {
    fn eval(&self, x: i64) -> i64 {
        let x = x + self.k as i64;
        (x.wrapping_mul(self.a) ^ self.b).wrapping_add(self.c)
    }

    fn clif(&self, i: usize) -> String {
        let mut s =
            format!("function %h{i}(i64) -> i64 {{\n    fn0 = %g(i64) -> i64\nblock0(v0: i64):\n");
        let mut last = 0;
        for j in 0..self.k {
            s.push_str(&format!("    v{} = call fn0(v{last})\n", 100 + j));
            last = 100 + j;
        }
        s.push_str(&format!(
            "    v1 = iconst.i64 {}\n    v2 = imul v{last}, v1\n    v3 = iconst.i64 {}\n    v4 = bxor v2, v3\n    v5 = iconst.i64 {}\n    v6 = iadd v4, v5\n    return v6\n}}\n\n",
            self.a, self.b, self.c
        ));
        s
    }
}

fn differential_program(hs: &[H]) -> String {
    let mut s = String::from(
        "; data: %fmt = \"w%ld r %ld\\n\\0\"\n; data: %tids writable = zeroed 32\n\n\
         function %g(i64) -> i64 {\nblock0(v0: i64):\n    v1 = iconst.i64 1\n    v2 = iadd v0, v1\n    return v2\n}\n\n",
    );
    for (i, h) in hs.iter().enumerate() {
        s.push_str(&h.clif(i));
    }
    s.push_str("function %sum() -> i64 {\n");
    for i in 0..hs.len() {
        s.push_str(&format!("    fn{i} = %h{i}(i64) -> i64\n"));
    }
    s.push_str("block0:\n    v0 = iconst.i64 0\n");
    let mut acc = 0;
    for i in 0..hs.len() {
        s.push_str(&format!(
            "    v{} = iconst.i64 {}\n    v{} = call fn{i}(v{})\n    v{} = iadd v{acc}, v{}\n",
            10 + 3 * i,
            i + 1,
            11 + 3 * i,
            10 + 3 * i,
            12 + 3 * i,
            11 + 3 * i
        ));
        acc = 12 + 3 * i;
    }
    s.push_str(&format!("    return v{acc}\n}}\n\n"));
    s.push_str(
        r#"function %worker(i64) -> i64 system_v {
    gv0 = symbol %fmt
    fn0 = %sum() -> i64
    fn1 = %dprintf(i32, i64, i64, i64) -> i32
    fn2 = %usleep(i32) -> i32
block0(v0: i64):
    v1 = symbol_value.i64 gv0
    jump block1
block1:
    v2 = call fn0()
    v3 = iconst.i32 1
    v4 = call fn1(v3, v1, v0, v2)
    v5 = iconst.i32 5000
    v6 = call fn2(v5)
    jump block1
}

function %main() -> i32 system_v {
    gv0 = symbol %tids
    fn0 = %pthread_create(i64, i64, i64, i64) -> i32 system_v
    fn1 = %worker(i64) -> i64 system_v
block0:
    v0 = symbol_value.i64 gv0
    v1 = func_addr.i64 fn1
    v2 = iconst.i64 0
    v3 = iconst.i64 1
    v4 = call fn0(v0, v2, v1, v3)
    v5 = iconst.i64 8
    v6 = iadd v0, v5
    v7 = iconst.i64 2
    v8 = call fn0(v6, v2, v1, v7)
    v9 = call fn1(v2)
    v10 = ireduce.i32 v9
    return v10
}
"#,
    );
    s
}

/// A small deterministic generator (xorshift), so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn h(&mut self) -> H {
        H {
            a: (self.next() % 1000) as i64 + 1,
            b: (self.next() % 100_000) as i64,
            c: (self.next() % 1_000_000) as i64 - 500_000,
            // Mostly small; sometimes forty calls, which moves the function.
            k: if self.next().is_multiple_of(4) {
                40
            } else {
                (self.next() % 3) as usize
            },
        }
    }
}

fn expected(hs: &[H]) -> i64 {
    hs.iter()
        .enumerate()
        .fold(0i64, |acc, (i, h)| acc.wrapping_add(h.eval(i as i64 + 1)))
}

fn r_of(line: &str, worker: i64) -> Option<i64> {
    let v = fields(line.strip_prefix('w')?);
    (v.len() == 2 && v[0] == worker).then_some(v[1])
}

#[test]
fn a_hundred_random_swaps_into_one_running_process_equal_a_fresh_build() {
    let seed = std::env::var("ZEROLINK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut hs: Vec<H> = (0..8).map(|_| rng.h()).collect();
    let (src, exe, mut run) = start_program(
        dir.path(),
        "diff",
        &differential_program(&hs),
        &[],
        "out.txt",
    );
    let want = expected(&hs);
    run.wait_line(0, |l| r_of(l, 0) == Some(want))
        .unwrap_or_else(|| {
            panic!(
                "seed {seed}: the first build prints {want}:\n{}",
                run.text()
            )
        });
    for step in 0..100 {
        let i = (rng.next() % hs.len() as u64) as usize;
        hs[i] = rng.h();
        std::fs::write(&src, differential_program(&hs)).unwrap();
        let mark = run.mark();
        hot_ok(&src, &exe, &run.pid());
        let want = expected(&hs);
        // Every thread runs the new code (the workers and main, which is a worker too).
        let workers: &[i64] = if step % 10 == 9 { &[0, 1, 2] } else { &[0] };
        for &w in workers {
            run.wait_line(mark, |l| r_of(l, w) == Some(want))
                .unwrap_or_else(|| {
                    panic!("seed {seed}, step {step}: worker {w} never printed {want}")
                });
        }
    }
    assert!(run.alive());
    // A fresh build of the same source computes the same.
    let fresh = dir.path().join("fresh");
    build_ok(std::slice::from_ref(&src), &fresh, &[]);
    let fresh_run = Running::start(&fresh, dir.path().join("fresh.txt"));
    let line = fresh_run
        .wait_line(0, |l| r_of(l, 0).is_some())
        .expect("the fresh build prints");
    assert_eq!(r_of(&line, 0), Some(expected(&hs)), "seed {seed}");
    let patched = run.text();
    let last = patched
        .lines()
        .rev()
        .find_map(|l| r_of(l, 0))
        .expect("the patched process prints");
    assert_eq!(last, expected(&hs), "seed {seed}");
}

/// With -g, `f` asks glibc's `backtrace` how deep it is, every 10 ms: `f`, `main`,
/// `__libc_start_call_main`, `__libc_start_main`, `_start`.
fn backtracing(grow: usize) -> String {
    let mut calls = String::new();
    for i in 0..grow {
        calls.push_str(&format!("    v{} = call fn1(v0)\n", 100 + i));
    }
    format!(
        r#"; data: %count writable = i64 0
; data: %buf writable = zeroed 256
; data: %fmt = "count %ld frames %ld\n\0"

function %g(i64) -> i64 {{
block0(v0: i64):
    v1 = iconst.i64 1
    v2 = iadd v0, v1
    return v2
}}

function %f(i64) -> i64 {{
    gv0 = symbol %buf
    fn0 = %backtrace(i64, i32) -> i32
    fn1 = %g(i64) -> i64
block0(v0: i64):
{calls}    v1 = symbol_value.i64 gv0
    v2 = iconst.i32 32
    v3 = call fn0(v1, v2)
    v4 = sextend.i64 v3
    return v4
}}

function %main() -> i32 {{
    gv0 = symbol %count
    gv1 = symbol %fmt
    fn0 = %f(i64) -> i64
    fn1 = %dprintf(i32, i64, i64, i64) -> i32
    fn2 = %usleep(i32) -> i32
block0:
    v0 = symbol_value.i64 gv0
    v1 = symbol_value.i64 gv1
    jump block1
block1:
    v2 = load.i64 v0
    v3 = iconst.i64 1
    v4 = iadd v2, v3
    store v4, v0
    v5 = call fn0(v4)
    v6 = iconst.i32 1
    v7 = call fn1(v6, v1, v4, v5)
    v8 = iconst.i32 10000
    v9 = call fn2(v8)
    jump block1
}}
"#
    )
}

#[test]
fn with_debug_info_the_process_unwinds_through_moved_code() {
    let dir = tempfile::tempdir().unwrap();
    let (src, exe, mut run) = start_program(dir.path(), "bt", &backtracing(0), &["-g"], "out.txt");
    let first = run
        .wait_line(0, |l| l.starts_with("count 2 "))
        .expect("the program prints");
    let depth = fields(&first)[1];
    assert_eq!(depth, 5, "f, main and libc's three frames: {first}");
    // f moves past the text the process started with: its new unwind entry must be found
    // by the process's own unwinder.
    std::fs::write(&src, backtracing(40)).unwrap();
    let mark = run.mark();
    let o = hot_with(&src, &exe, &run.pid(), &["-g"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("`f` in new slots"), "{stderr}");
    assert!(!stderr.contains("unwind tables moved"), "{stderr}");
    std::thread::sleep(Duration::from_millis(50));
    let text = run.text();
    let after: Vec<&str> = text[mark..].lines().collect();
    assert!(after.len() > 2, "{text}");
    for l in &after[1..] {
        assert_eq!(
            fields(l).get(1),
            Some(&depth),
            "a backtrace stopped at new code: {l}"
        );
    }
    // Now main, which a thread is always inside, changes: it moves, and its old frame goes
    // on in the old code, whose unwind entry must stay for the walk from f to cross it.
    std::fs::write(
        &src,
        backtracing(40).replace("v8 = iconst.i32 10000", "v8 = iconst.i32 10001"),
    )
    .unwrap();
    let mark = run.mark();
    let o = hot_with(&src, &exe, &run.pid(), &["-g"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("`main` in new slots"), "{stderr}");
    std::thread::sleep(Duration::from_millis(50));
    let text = run.text();
    let after: Vec<&str> = text[mark..].lines().collect();
    assert!(after.len() > 2, "{text}");
    for l in &after[1..] {
        assert_eq!(
            fields(l).get(1),
            Some(&depth),
            "a backtrace stopped at old code: {l}"
        );
    }
    assert!(run.alive());
}

#[test]
fn a_new_library_call_is_resolved_in_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let (src, exe, mut run) = start_counter(dir.path());
    // f now calls strlen (an indirect function: glibc picks its implementation through a
    // resolver) and labs, neither of which the program imported when it started.
    let text = counter(1000, 0)
        .replace(
            "; data: %fmt",
            "; data: %word = \"hello\\0\"\n; data: %fmt",
        )
        .replace(
            "function %f(i64) -> i64 {\n    fn0 = %g(i64) -> i64\nblock0(v0: i64):\n",
            "function %f(i64) -> i64 {\n    gv0 = symbol %word\n    fn0 = %g(i64) -> i64\n    fn1 = %strlen(i64) -> i64\n    fn2 = %labs(i64) -> i64\nblock0(v0: i64):\n    v50 = symbol_value.i64 gv0\n    v51 = call fn1(v50)\n    v52 = iconst.i64 -3\n    v53 = call fn2(v52)\n    v54 = iadd v51, v53\n    v55 = iadd v0, v54\n",
        )
        .replace(
            "    v1 = iconst.i64 1000\n    v2 = iadd v0, v1",
            "    v1 = iconst.i64 1000\n    v2 = iadd v55, v1",
        );
    assert!(text.contains("v2 = iadd v55, v1"), "{text}");
    std::fs::write(&src, text).unwrap();
    let mark = run.mark();
    let stderr = hot_ok(&src, &exe, &run.pid());
    assert!(stderr.contains("2 library functions resolved"), "{stderr}");
    run.wait_line(mark, |l| {
        let v = fields(l);
        v.len() == 3 && v[1] == v[0] + 1008 && v[2] == v[0] + 1008
    })
    .unwrap_or_else(|| panic!("the new calls did not run:\n{}", run.text()));
    std::thread::sleep(Duration::from_millis(30));
    assert!(run.alive());
    assert_counts_consecutive(&run.text());
}

#[test]
fn a_compiler_patches_a_running_process_through_the_library() {
    use zerolink_backend::hot::Attached;
    use zerolink_backend::{clif::Program, ModuleOptions, TargetOptions, ZerolinkModule};
    let dir = tempfile::tempdir().unwrap();
    let (src, exe, mut run) = start_counter(dir.path());
    std::fs::write(&src, counter(3000, 0)).unwrap();
    let mark = run.mark();
    // As a compiler would: take OUT's lock, stop the process, hand the module what it is
    // busy with, build (the lock held), and give the report to the patcher.
    let pid: i32 = run.pid().parse().unwrap();
    let lock =
        zerolink_backend::Session::lock(&exe, zerolink_backend::LockWait::Wait, &|| {}).unwrap();
    let attached = Attached::stop(pid, &exe).unwrap();
    let opts = ModuleOptions {
        language: gimli::DW_LANG_Mips_Assembler,
        lock: zerolink_backend::LockWait::Held,
        live: Some(attached.live().clone()),
        ..ModuleOptions::default()
    };
    let mut module =
        ZerolinkModule::open(TargetOptions::default().isa().unwrap(), &exe, opts).unwrap();
    let program = Program::read(std::slice::from_ref(&src)).unwrap();
    program.define_through(&mut module).unwrap();
    let report = module.finish().unwrap();
    let patched = attached.apply(&report, &exe).unwrap();
    drop(lock);
    assert_eq!(patched.in_place, vec!["f".to_string()]);
    run.wait_line(mark, |l| {
        let v = fields(l);
        v.len() == 3 && v[1] == v[0] + 3000
    })
    .unwrap_or_else(|| {
        panic!(
            "the module's update did not reach the process:\n{}",
            run.text()
        )
    });
    assert_counts_consecutive(&run.text());
    assert!(run.alive());
}

#[test]
fn a_pie_process_is_patched_at_its_load_address() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("counter.clif");
    let exe = dir.path().join("counter");
    // Besides the counter's calls, one through a pointer in data (`%tab`, relocated by the
    // loader): when f moves, that pointer is re-patched with the process's load bias.
    let with_table = |text: String| {
        text.replace(
            "; data: %fp writable = i64 0",
            "; data: %fp writable = i64 0\n; data: %tab writable = addr %f",
        )
        .replace("    gv2 = symbol %fp\n", "    gv2 = symbol %tab\n")
        .replace("    v3 = func_addr.i64 fn0\n    store v3, v2\n", "")
    };
    std::fs::write(&src, with_table(counter(1000, 0))).unwrap();
    build_ok(std::slice::from_ref(&src), &exe, &["--pie"]);
    let mut run = Running::start(&exe, dir.path().join("out.txt"));
    run.wait_line(0, |l| l.starts_with("count 3 "))
        .expect("the program prints");
    for (add, grow, how) in [(2000, 0, "`f` in place"), (5000, 40, "`f` in new slots")] {
        std::fs::write(&src, with_table(counter(add, grow))).unwrap();
        let mark = run.mark();
        let o = hot_with(&src, &exe, &run.pid(), &["--pie"]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        assert!(stderr.contains(how), "{stderr}");
        // The pointer in `%tab` holds what the loader made of it: rewritten, not kept.
        assert!(!stderr.contains("kept as the program set them"), "{stderr}");
        run.wait_line(mark, |l| {
            let v = fields(l);
            v.len() == 3 && v[1] == v[0] + add && v[2] == v[0] + add
        })
        .unwrap_or_else(|| panic!("f + {add} never ran:\n{}", run.text()));
    }
    std::thread::sleep(Duration::from_millis(30));
    assert!(run.alive(), "{}", run.text());
    assert_counts_consecutive(&run.text());
}

#[test]
fn run_watch_restart_restarts_what_cannot_be_patched() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("counter.clif");
    std::fs::write(&src, counter(1000, 0)).unwrap();
    let out = dir.path().join("out.txt");
    let (mut watch, mut stderr, _, running) = start_watch(&src, &out, &["--restart"]);
    running.wait_line(0, |l| l.starts_with("count 3 ")).unwrap();
    // A data object that changes size cannot be applied live: the program restarts with
    // the new build, and counts from the start again.
    let mark = running.mark();
    std::fs::write(
        &src,
        counter(2000, 0).replace("%count writable = i64 0", "%count writable = i32 0"),
    )
    .unwrap();
    running
        .wait_line(mark, |l| l.starts_with("count 1 f 2001 p 2001"))
        .unwrap_or_else(|| panic!("no restart:\n{}", running.text()));
    let mut said = String::new();
    while !said.contains("restarted the program as process") {
        let mut l = String::new();
        if stderr.read_line(&mut l).unwrap() == 0 {
            break;
        }
        said.push_str(&l);
    }
    assert!(said.contains("changed size"), "{said}");
    let pid: i32 = said
        .split("as process ")
        .last()
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {said:?}"));
    // The new process is patched live like the first.
    let mark = running.mark();
    std::fs::write(
        &src,
        counter(3000, 0).replace("%count writable = i64 0", "%count writable = i32 0"),
    )
    .unwrap();
    running
        .wait_line(mark, |l| {
            let v = fields(l);
            v.len() == 3 && v[1] == v[0] + 3000 && v[0] > 1
        })
        .unwrap_or_else(|| panic!("the restarted program was not patched:\n{}", running.text()));
    // SAFETY: ends the child the watcher started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let _ = watch.wait();
}

/// A small function a thread will return into (`g` just calls `usleep`: the return address
/// is a few bytes past its entry) and a leaf a thread is spinning inside (`spin`: its loop's
/// head lies right after the prologue, inside the bytes an entry jump would take). Both
/// outgrow their slots in a patch, with the thread inside them, plain and PIE, with and
/// without `-g`. No byte a thread may reach is written over: the process lives on, the
/// threads finish on the old code, and the next calls run the new code.
#[test]
fn code_a_thread_will_return_into_or_loop_in_is_never_written_over() {
    let program = |g_extra: usize, spin_extra: bool| {
        let grow: String = (0..g_extra)
            .map(|i| {
                let prev = if i == 0 { 1 } else { 199 + i };
                format!(
                    "    v{} = iconst.i32 {}\n    v{} = iadd v{prev}, v{}\n",
                    100 + i,
                    i + 1,
                    200 + i,
                    100 + i
                )
            })
            .collect();
        let g_result = if g_extra == 0 {
            "v1".to_string()
        } else {
            format!("v{}", 199 + g_extra)
        };
        let spin_body = if spin_extra {
            "    v4 = iadd v3, v2\n    v40 = iconst.i64 7\n    v41 = imul v4, v40\n    \
             v42 = iconst.i64 11\n    v43 = band v41, v42\n    v44 = iadd v43, v4\n"
        } else {
            "    v4 = iadd v3, v2\n    v44 = iconst.i64 0\n"
        };
        let spin_next = if spin_extra { "v44" } else { "v4" };
        format!(
            r#"; data: %fmt = "g %d s %ld\n\0"

function %g(i32) -> i32 {{
    fn0 = %usleep(i32) -> i32
block0(v0: i32):
    v1 = call fn0(v0)
{grow}    return {g_result}
}}

function %spin(i64) -> i64 {{
block0(v0: i64):
    v1 = iconst.i64 0
    jump block1(v0, v1)
block1(v2: i64, v3: i64):
{spin_body}    v5 = iconst.i64 1
    v6 = isub v2, v5
    brif v6, block1(v6, {spin_next}), block2
block2:
    return {spin_next}
}}

function %main() -> i32 {{
    gv1 = symbol %fmt
    fn0 = %g(i32) -> i32
    fn1 = %dprintf(i32, i64, i32, i64) -> i32
    fn2 = %spin(i64) -> i64
block0:
    v1 = symbol_value.i64 gv1
    jump block1
block1:
    v10 = iconst.i32 3000
    v11 = call fn0(v10)
    v12 = iconst.i64 20000000
    v13 = call fn2(v12)
    v16 = iconst.i32 1
    v17 = call fn1(v16, v1, v11, v13)
    jump block1
}}
"#
        )
    };
    // Old: g returns usleep's 0 and spin sums 1..n; new: g adds 1 + 2 + ... + 12 = 78.
    let old_spin = 20_000_000i64 * 20_000_001 / 2;
    for flags in [&[][..], &["--pie"], &["-g"]] {
        let dir = tempfile::tempdir().unwrap();
        let (src, exe, mut run) =
            start_program(dir.path(), "busy", &program(0, false), flags, "out.txt");
        run.wait_line(0, |l| l == format!("g 0 s {old_spin}"))
            .unwrap_or_else(|| panic!("{flags:?}: the program does not print:\n{}", run.text()));
        // Patched twice: once (most likely) while the thread spins, once while it sleeps.
        for (g_extra, spin_extra) in [(12, false), (12, true)] {
            std::fs::write(&src, program(g_extra, spin_extra)).unwrap();
            let mark = run.mark();
            let o = hot_with(&src, &exe, &run.pid(), flags);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{flags:?}: {stderr}");
            // After the first patch the new g runs; after the second, the new spin too.
            let old_line = format!("g 78 s {old_spin}");
            let line = run
                .wait_line(mark, |l| {
                    l.starts_with("g 78 s ") && (spin_extra != (l == old_line))
                })
                .unwrap_or_else(|| panic!("{flags:?}: the new code never ran:\n{}", run.text()));
            let s: i64 = line["g 78 s ".len()..].parse().unwrap();
            assert!(spin_extra || s == old_spin, "{flags:?}: {line}");
            std::thread::sleep(Duration::from_millis(100));
            assert!(run.alive(), "{flags:?}: the process died:\n{}", run.text());
        }
        let last = run.text().lines().last().unwrap_or("").to_string();
        assert!(last.starts_with("g 78 s "), "{flags:?}: {last}");
    }
}

/// The lock before the look: a `--hot` build that must wait for another build of OUT leaves
/// the process running while it waits, and once it has the lock checks the process against
/// OUT as it is then. Here the other build (the test, holding OUT's lock) replaced OUT with
/// a different program: the patch is refused, never computed against that file, and the
/// process runs on as it was.
#[test]
fn a_hot_build_that_waited_for_another_build_checks_the_process_after_the_wait() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (src, exe, mut run) = start_counter(d);
    let lock_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(d.join(".counter.zl-lock"))
        .unwrap();
    // SAFETY: a valid descriptor, held for the test's life.
    assert_eq!(
        unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX) },
        0
    );
    std::fs::write(&src, counter(2000, 40)).unwrap();
    let hot = zerolink()
        .arg("build")
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .args(["--hot", &run.pid()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Waiting does not stop the process: it goes on counting.
    let mark = run.mark();
    run.wait_line(mark, |l| l.starts_with("count "))
        .unwrap_or_else(|| panic!("the process was held stopped while the build waited"));
    // "Another build" commits a different program to OUT while the --hot build waits.
    let other_src = d.join("other.clif");
    std::fs::write(&other_src, counter(7000, 3)).unwrap();
    let other = d.join("other");
    build_ok(std::slice::from_ref(&other_src), &other, &[]);
    std::fs::rename(&other, &exe).unwrap();
    // SAFETY: as above.
    unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_UN) };
    let o = hot.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "patched against another build's file:\n{stderr}"
    );
    assert!(stderr.contains("waiting for another build"), "{stderr}");
    assert!(stderr.contains("does not run"), "{stderr}");
    // The process still runs the program it was started with: f(x) = x + 1000.
    let mark = run.mark();
    run.wait_line(mark, |l| {
        let v = fields(l);
        v.len() == 3 && v[1] == v[0] + 1000
    })
    .unwrap_or_else(|| panic!("the process changed:\n{}", run.text()));
    assert!(run.alive());
}

/// `run --watch` stopped by SIGTERM (or SIGINT, SIGHUP) takes its child and its temporary
/// directory with it, and exits with 128 + the signal's number.
#[test]
fn run_watch_stopped_by_a_signal_leaves_nothing_behind() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("counter.clif");
        std::fs::write(&src, counter(1000, 0)).unwrap();
        let (mut watch, _stderr, pid, output) = start_watch(&src, &dir.path().join("out.txt"), &[]);
        output
            .wait_line(0, |l| l.starts_with("count 3 "))
            .expect("the program prints");
        let exe_dir = {
            // The child's executable lies in the watcher's temporary directory.
            let text = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
            PathBuf::from(text.split('\0').next().unwrap())
                .parent()
                .unwrap()
                .to_path_buf()
        };
        assert!(exe_dir.exists());
        // SAFETY: signals our own child, the watcher.
        unsafe { libc::kill(watch.id() as i32, sig) };
        let status = watch.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.code(), Some(128 + sig), "{status:?}");
        assert!(status.signal().is_none());
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "the child {pid} runs on"
        );
        assert!(!exe_dir.exists(), "{} is left behind", exe_dir.display());
    }
}

/// Ctrl-C (SIGINT) and SIGTERM at random moments of `--hot` builds, over and over: the patch
/// completes or does not happen, and the process lives on, running one program or the other
/// (its f adds one of the two constants), never a half-patched mix.
#[test]
fn interrupting_hot_builds_never_breaks_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let (src, exe, mut run) = start_counter(dir.path());
    let started = Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut tries = 0;
    while tries < 80 && started.elapsed() < Duration::from_secs(6) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (add, grow) = if tries % 2 == 0 {
            (2000, 30)
        } else {
            (1000, 0)
        };
        std::fs::write(&src, counter(add, grow)).unwrap();
        let hot = zerolink()
            .arg("build")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .args(["--hot", &run.pid()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(seed % 15_000));
        let sig = if seed.is_multiple_of(3) {
            libc::SIGTERM
        } else {
            libc::SIGINT
        };
        // SAFETY: signals our own child, the build.
        unsafe { libc::kill(hot.id() as i32, sig) };
        let _ = { hot }.wait_with_output();
        assert!(
            run.alive(),
            "try {tries}: the process died:\n{}",
            run.text()
        );
        tries += 1;
    }
    // It still counts, with one f or the other, and its two calls of f agree.
    let mark = run.mark();
    let line = run
        .wait_line(mark, |l| l.starts_with("count "))
        .unwrap_or_else(|| panic!("the process stopped counting:\n{}", run.text()));
    let v = fields(&line);
    assert!(
        v[1] == v[2] && (v[1] == v[0] + 1000 || v[1] == v[0] + 2000),
        "{line}"
    );
    assert!(run.alive());
}

/// The patcher killed at the worst moment, with a thread of the process pointed at code run
/// for the patch (here an IFUNC resolver's call, `strlen`'s: the test hook
/// `ZEROLINK_TEST_DIE_IN_TRAMPOLINE` aborts right then, as SIGKILL would): the thread puts
/// itself back from the trampoline's save area and the process runs on, unpatched, with no
/// trap of ours to die on (the file is updated; `run --watch --restart` restarts from it).
#[test]
fn a_patcher_killed_while_the_process_runs_its_code_leaves_the_process_running() {
    let dir = tempfile::tempdir().unwrap();
    let (src, exe, mut run) = start_counter(dir.path());
    let text = counter(1000, 0)
        .replace("; data: %fmt", "; data: %word = \"hello\\0\"\n; data: %fmt")
        .replace(
            "function %f(i64) -> i64 {\n    fn0 = %g(i64) -> i64\nblock0(v0: i64):\n",
            "function %f(i64) -> i64 {\n    gv0 = symbol %word\n    fn0 = %g(i64) -> i64\n    \
             fn1 = %strlen(i64) -> i64\nblock0(v0: i64):\n    v50 = symbol_value.i64 gv0\n    \
             v51 = call fn1(v50)\n    v55 = iadd v0, v51\n",
        )
        .replace(
            "    v1 = iconst.i64 1000\n    v2 = iadd v0, v1",
            "    v1 = iconst.i64 1000\n    v2 = iadd v55, v1",
        );
    assert!(text.contains("v2 = iadd v55, v1"), "{text}");
    std::fs::write(&src, &text).unwrap();
    let o = zerolink()
        .arg("build")
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .args(["--hot", &run.pid()])
        .env("ZEROLINK_TEST_DIE_IN_TRAMPOLINE", "1")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the hook did not fire");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        run.alive(),
        "the process died with its patcher:\n{}",
        run.text()
    );
    let mark = run.mark();
    run.wait_line(mark, |l| {
        let v = fields(l);
        v.len() == 3 && v[1] == v[0] + 1000 && v[2] == v[0] + 1000
    })
    .unwrap_or_else(|| panic!("the process does not run on as it was:\n{}", run.text()));
    assert_counts_consecutive(&run.text());
}
