//! `zerolink bench archive`: precompiled code from a large static archive.
//!
//! For each size N: N C files, compiled by `cc -c -O2` and archived with `ar rcs`, each member
//! defining `mem{i}`, which calls `mem{i-1}`, so a CLIF `main` calling `mem{N-1}` pulls every
//! member in through a chain of on-demand extractions. Measured, each as a whole process:
//! - the direct full build (`zerolink build main.clif libbig.a`), and per member;
//! - the same program the separate way: `main.o` written once, then `cc` linking it with the
//!   archive, with each linker installed;
//! - one member changed (recompiled, `ar r`): zerolink's in-place update against each
//!   linker's relink.
//!
//! Every executable is run and must give the exit status computed here.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bench::{linkers, measure};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The constant of member `i` in version `v` of the archive.
fn constant(i: usize, v: u64) -> u64 {
    (i as u64 * 2_654_435_761 + v * 97) % 1000 + 1
}

fn member_source(i: usize, v: u64) -> String {
    let k = constant(i, v);
    let table: Vec<String> = (0..8).map(|j| ((k * (j + 3)) % 251).to_string()).collect();
    let call = if i == 0 {
        "x".to_string()
    } else {
        format!("mem{}(x + 1)", i - 1)
    };
    let decl = if i == 0 {
        String::new()
    } else {
        format!("int mem{}(int);\n", i - 1)
    };
    format!(
        "{decl}static const int t{i}[8] = {{{}}};\n\
         int mem{i}(int x) {{ return ((x * 3 + {k}) ^ {call}) + t{i}[x & 7]; }}\n",
        table.join(", ")
    )
}

/// What `mem{n-1}(7)` returns, as the C code computes it (in `int`, wrapping).
fn expected(versions: &[u64]) -> i32 {
    fn eval(i: usize, x: i32, versions: &[u64]) -> i32 {
        let k = constant(i, versions[i]) as i32;
        let t = ((k as i64 * ((x & 7) as i64 + 3)) % 251) as i32;
        let inner = if i == 0 {
            x
        } else {
            eval(i - 1, x.wrapping_add(1), versions)
        };
        (x.wrapping_mul(3).wrapping_add(k) ^ inner).wrapping_add(t)
    }
    eval(versions.len() - 1, 7, versions) & 0xff
}

fn sh(cmd: &mut Command) -> Result<()> {
    let o = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

fn status(exe: &Path) -> Result<i32> {
    let s = Command::new(exe).status()?;
    s.code().context("killed by a signal")
}

/// Compile members `which` of version `versions` into `dir/mem{i}.o`, on two processes.
fn compile(dir: &Path, which: &[usize], versions: &[u64]) -> Result<()> {
    for &i in which {
        std::fs::write(dir.join(format!("mem{i}.c")), member_source(i, versions[i]))?;
    }
    let chunks: Vec<&[usize]> = which.chunks(which.len().div_ceil(2).max(1)).collect();
    let children: Vec<_> = chunks
        .iter()
        .map(|chunk| {
            Command::new("cc")
                .current_dir(dir)
                .args(["-c", "-O2"])
                .args(chunk.iter().map(|i| format!("mem{i}.c")))
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    for mut c in children {
        if !c.wait()?.success() {
            bail!("cc -c failed");
        }
    }
    Ok(())
}

pub fn archive(sizes: &[usize]) -> Result<()> {
    let exe = std::env::current_exe()?;
    let linkers = linkers();
    let mut rows = Vec::new();
    for &n in sizes {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let mut versions = vec![0u64; n];
        let all: Vec<usize> = (0..n).collect();
        compile(d, &all, &versions)?;
        let lib = d.join("libbig.a");
        // `ar` takes many names at once; the archive's order is member order.
        sh(Command::new("ar")
            .current_dir(d)
            .arg("rcs")
            .arg(&lib)
            .args(all.iter().map(|i| format!("mem{i}.o"))))?;
        let clif = d.join("main.clif");
        std::fs::write(
            &clif,
            format!(
                "function %main() -> i32 system_v {{\n    fn0 = %mem{}(i32) -> i32 system_v\n\
                 block0:\n    v0 = iconst.i32 7\n    v1 = call fn0(v0)\n    return v1\n}}\n",
                n - 1
            ),
        )?;
        let direct = d.join("direct");
        let build = || {
            let mut c = Command::new(&exe);
            c.args(["build", "-q", "-o"])
                .arg(&direct)
                .arg(&clif)
                .arg(&lib);
            c
        };
        let full = measure(build().arg("--full"))?;
        if status(&direct)? != expected(&versions) {
            bail!("the direct build of {n} members computes the wrong result");
        }
        // The separate way: main.o once (not timed), then each linker with the archive.
        let program = zerolink_backend::clif::Program::read(std::slice::from_ref(&clif))?;
        let main_o = d.join("main.o");
        std::fs::write(
            &main_o,
            zerolink_backend::reference::object_bytes(
                &program,
                &zerolink_backend::TargetOptions::default(),
            )?,
        )?;
        let link_with = |flags: &[String], out: &Path| {
            let mut c = Command::new("cc");
            c.arg("-no-pie")
                .args(flags)
                .arg("-o")
                .arg(out)
                .arg(&main_o)
                .arg(&lib);
            c
        };
        let mut separate = Vec::new();
        for l in &linkers {
            let out = d.join(format!("sep-{}", l.name.replace(' ', "_")));
            let m = measure(&mut link_with(&l.flags, &out))?;
            if status(&out)? != expected(&versions) {
                bail!("{} linked a program that computes the wrong result", l.name);
            }
            separate.push((l.name, m.wall, out));
        }
        // One member changes: recompiled and replaced in the archive.
        let changed = n / 2;
        versions[changed] = 1;
        compile(d, &[changed], &versions)?;
        sh(Command::new("ar")
            .current_dir(d)
            .arg("r")
            .arg(&lib)
            .arg(format!("mem{changed}.o")))?;
        let update = measure(build().arg("--stats"))?;
        if status(&direct)? != expected(&versions) {
            bail!("the update of {n} members computes the wrong result");
        }
        let mut relinks = Vec::new();
        for (l, (name, _, out)) in linkers.iter().zip(&separate) {
            let m = measure(&mut link_with(&l.flags, out))?;
            if status(out)? != expected(&versions) {
                bail!("{name} relinked a program that computes the wrong result");
            }
            relinks.push((*name, m.wall));
        }
        rows.push((n, full.wall, separate, update.wall, relinks));
    }
    println!("precompiled code from one static archive (a chain of members; milliseconds)");
    for l in &linkers {
        println!("  {}: {}", l.name, l.version);
    }
    println!(
        "\n{:>8} {:>12} {:>11} {:>28} {:>14} {:>28}",
        "members",
        "direct full",
        "per member",
        "separate link (fastest)",
        "direct update",
        "separate relink (fastest)"
    );
    for (n, full, separate, update, relinks) in &rows {
        let best = separate.iter().min_by_key(|s| s.1);
        let best_relink = relinks.iter().min_by_key(|s| s.1);
        let fmt = |b: Option<(&str, Duration)>| {
            b.map_or("-".to_string(), |(name, t)| {
                format!("{:.1} ({name})", ms(t))
            })
        };
        println!(
            "{n:>8} {:>12.1} {:>11.4} {:>28} {:>14.1} {:>28}",
            ms(*full),
            ms(*full) / *n as f64,
            fmt(best.map(|s| (s.0, s.1))),
            ms(*update),
            fmt(best_relink.copied()),
        );
    }
    println!(
        "\ndirect full: the whole zerolink process (the CLIF main compiled, every member\n\
         extracted and placed); separate link: cc + the linker on a prebuilt main.o and the\n\
         archive; update: after one member is recompiled and replaced with `ar r`"
    );
    Ok(())
}
