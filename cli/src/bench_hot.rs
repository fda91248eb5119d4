//! `zerolink bench hot`: from saving an edit to the running program executing the new code,
//! patched in place (`zerolink build --hot PID`) against rebuilt and restarted (an update,
//! then a new process that does its start-up work again), per program size.
//!
//! The program is the benchmarks' generated one (`bench::generated`), whose `main` becomes
//! the start-up work (`%startup`: every function once), plus a loop that writes `probe()` (8
//! bytes) every millisecond. An edit changes `probe`'s constant; the clock stops when that
//! value appears in the process's output. Each build is a `zerolink` process, as an editor
//! would run it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{generated, median, ms};

const LOOP: &str = r#"
function %main() -> i32 {
    ss0 = explicit_slot 16
    sig0 = (i32, i64, i64) -> i64
    sig1 = (i64, i64, i64, i64, i64, i64, i64) -> i64
    fn0 = %zl_write sig0
    fn1 = %zl_syscall sig1
    fn2 = %probe() -> i64
    fn3 = %startup() -> i32
block0:
    v0 = call fn3()
    v1 = stack_addr.i64 ss0
    v2 = iconst.i64 0
    jump block1
block1:
    v4 = call fn2()
    store v4, v1
    v5 = iconst.i32 1
    v6 = iconst.i64 8
    v7 = call fn0(v5, v1, v6)
    store v2, v1
    v8 = iconst.i64 1000000
    store v8, v1+8
    v9 = iconst.i64 35
    v10 = call fn1(v9, v1, v2, v2, v2, v2, v2)
    jump block1
}
"#;

fn probe(k: i64) -> String {
    format!("function %probe() -> i64 {{\nblock0:\n    v0 = iconst.i64 {k}\n    return v0\n}}\n")
}

/// A running copy of the program, writing to `out`; killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(exe: &Path, out: &Path) -> Result<Running> {
    let file = std::fs::File::create(out)?;
    let child = Command::new(exe)
        .stdout(file)
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    Ok(Running(child))
}

/// Wait until the last word `out` holds is `k` (up to 30 s).
fn wait_for(out: &Path, k: i64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let t = Instant::now();
    let f = std::fs::File::open(out)?;
    while t.elapsed() < Duration::from_secs(30) {
        let len = f.metadata()?.len();
        if len >= 8 {
            let mut w = [0; 8];
            f.read_exact_at(&mut w, len - 8)?;
            if i64::from_le_bytes(w) == k {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    bail!("the program never printed {k}")
}

fn zerolink(files: &[PathBuf], out: &Path, extra: &[&str]) -> Result<()> {
    let o = Command::new(std::env::current_exe()?)
        .arg("build")
        .args(files)
        .arg("-o")
        .arg(out)
        .args(["--freestanding", "-q"])
        .args(extra)
        .stderr(Stdio::piped())
        .output()?;
    if !o.status.success() {
        bail!(
            "zerolink build failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

pub fn hot(sizes: &[usize], edits: usize) -> Result<()> {
    let mut rows = Vec::new();
    for &n in sizes {
        let (_, dir, mut files) = generated(n)?;
        // The generated `main` becomes the start-up work; the loop is the new `main`.
        let first = &files[0];
        let text = std::fs::read_to_string(first)?;
        std::fs::write(
            first,
            text.replace("function %main() -> i32 {", "function %startup() -> i32 {"),
        )?;
        let lp = dir.path().join("loop.clif");
        std::fs::write(&lp, LOOP)?;
        let pr = dir.path().join("probe.clif");
        std::fs::write(&pr, probe(1))?;
        files.extend([lp, pr.clone()]);
        let hot_exe = dir.path().join("hot");
        let cold_exe = dir.path().join("cold");
        eprint!("{n} functions: full builds");
        zerolink(&files, &hot_exe, &[])?;
        zerolink(&files, &cold_exe, &[])?;
        let out = dir.path().join("out.bin");
        let running = start(&hot_exe, &out)?;
        wait_for(&out, 1)?;
        let (mut patched, mut restarted, mut startup) = (Vec::new(), Vec::new(), Vec::new());
        for e in 0..edits {
            eprint!(", edit {e}");
            let k = 1000 + e as i64;
            // Patched: the running process.
            std::fs::write(&pr, probe(k))?;
            let t = Instant::now();
            zerolink(&files, &hot_exe, &["--hot", &running.0.id().to_string()])?;
            wait_for(&out, k)?;
            patched.push(t.elapsed());
            // Restarted: an update, then a new process from the start.
            let k = -k;
            std::fs::write(&pr, probe(k))?;
            let t = Instant::now();
            zerolink(&files, &cold_exe, &[])?;
            let built = t.elapsed();
            let cold_out = dir.path().join("cold.bin");
            let _cold = start(&cold_exe, &cold_out)?;
            wait_for(&cold_out, k)?;
            restarted.push(t.elapsed());
            startup.push(t.elapsed() - built);
        }
        eprintln!();
        rows.push((n, median(patched), median(restarted), median(startup)));
    }
    println!("Edit to running new code: patched in place against rebuilt and restarted");
    println!("(milliseconds, medians of {edits} edits; each build a zerolink process)\n");
    println!(
        "{:>9} {:>12} {:>12} {:>10} {:>8}",
        "functions", "hot patch", "restart", "of which", "ratio"
    );
    println!(
        "{:>9} {:>12} {:>12} {:>10} {:>8}",
        "", "", "", "start-up", ""
    );
    for (n, p, r, s) in rows {
        println!(
            "{n:>9} {:>12.1} {:>12.1} {:>10.1} {:>7.1}x",
            ms(p),
            ms(r),
            ms(s),
            ms(r) / ms(p)
        );
    }
    println!(
        "\nhot patch: `zerolink build --hot PID` (stop every thread, update the file, patch the\n\
         process, resume) until the process writes the new value; restart: `zerolink build`\n\
         (an update), then a new process, its start-up work (every function once) and its first\n\
         write of the new value. The restarted process has lost its state; the patched one not."
    );
    Ok(())
}
