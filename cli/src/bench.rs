//! `zerolink bench`: measurements, never pass/fail timing assertions.
//!
//! `bench edit` is the fast-debug-loop benchmark: for generated programs of several sizes, a
//! full build, then one-function edits applied and updated in place. Each update is split into
//! *read and hash inputs* (a `stat` per input file, then reading and hashing only the files
//! whose stat data changed: the edited one) and *everything else* (opening the table,
//! diffing, compiling, writing, patching, rewriting tables). Both should grow with the edit
//! only. Every updated executable is run and compared with a fresh build of the same input.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use zerolink_backend::clif::Program;
use zerolink_backend::driver::{self, Mode};
use zerolink_backend::TargetOptions;

use crate::gen::{edit_function, generate, GenOptions};

/// The benchmarks' generated program of `n` functions, in files of 1,000, in a new directory:
/// (its options, for edits; the directory; the files).
pub(crate) fn generated(n: usize) -> Result<(GenOptions, tempfile::TempDir, Vec<PathBuf>)> {
    let opts = GenOptions {
        functions: n,
        files: (n / 1000).max(1),
        seed: 1,
        libc: false,
    };
    let dir = tempfile::tempdir()?;
    let paths = generate(&opts).write(dir.path())?;
    Ok((opts, dir, paths))
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median of some measurements (the upper one of an even count).
pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn run_exe(path: &Path) -> Result<Vec<u8>> {
    let o = std::process::Command::new(path)
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    if !o.status.success() {
        bail!("{} exited with {}", path.display(), o.status);
    }
    Ok(o.stdout)
}

struct Row {
    functions: usize,
    full: Duration,
    read: Duration,
    rest: Duration,
    phases: Vec<(&'static str, Duration)>,
    bytes_written: u64,
    /// Starts of OUT while it was being updated: (refused with `ETXTBSY`, all).
    busy_starts: (usize, usize),
}

/// Start OUT over and over on another thread while `updates` one-function edits are applied
/// to it, and count the starts the kernel refused with `ETXTBSY` ("text file busy": OUT is
/// open for writing during a commit, and only then). Returns (refused, all).
fn starts_during_updates(
    dir: &Path,
    opts: &GenOptions,
    out: &Path,
    build: &dyn Fn() -> Result<()>,
    updates: usize,
) -> Result<(usize, usize)> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let (stop, busy, all) = (
        AtomicBool::new(false),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    std::thread::scope(|s| -> Result<()> {
        s.spawn(|| {
            while !stop.load(Relaxed) {
                let r = std::process::Command::new(out)
                    .stdout(std::process::Stdio::null())
                    .status();
                all.fetch_add(1, Relaxed);
                if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy) {
                    busy.fetch_add(1, Relaxed);
                }
            }
        });
        let n = opts.functions;
        let result = (0..updates).try_for_each(|e| {
            edit_function(dir, opts, (n / 3 + e * 104_729) % n, 1000 + e as i64)?;
            build()
        });
        stop.store(true, Relaxed);
        result
    })?;
    Ok((busy.load(Relaxed), all.load(Relaxed)))
}

/// Edit-loop benchmark over `sizes` (functions), `edits` updates each; with `-g` when
/// `debug_info`.
pub fn edit_loop(
    sizes: &[usize],
    edits: usize,
    debug_info: bool,
    target: &TargetOptions,
) -> Result<()> {
    // Generated programs are freestanding: they reach the OS through zerolink's built-ins.
    let link = zerolink_backend::LinkOptions {
        freestanding: true,
        ..Default::default()
    };
    let full_opts = driver::BuildOptions {
        force_full: true,
        debug_info,
        ..Default::default()
    };
    let update_opts = driver::BuildOptions {
        debug_info,
        ..Default::default()
    };
    let mut rows = Vec::new();
    for &n in sizes {
        let (opts, dir, paths) = generated(n)?;
        let out = dir.path().join("prog");
        let fresh = dir.path().join("fresh");

        eprint!("{n} functions: full build ...");
        let t = Instant::now();
        driver::build(&paths, target, &link, &out, &full_opts)?;
        let full = t.elapsed();
        let mut output = run_exe(&out)?;
        eprint!(" {:.0} ms; edits:", ms(full));

        let mut reads = Vec::new();
        let mut rests = Vec::new();
        let mut phases: Vec<Vec<(&'static str, Duration)>> = Vec::new();
        let mut bytes = Vec::new();
        for e in 0..edits {
            let f = (n / 2 + e * 7919) % n;
            edit_function(dir.path(), &opts, f, e as i64 + 1)?;
            let t = Instant::now();
            let report = driver::build(&paths, target, &link, &out, &update_opts)?;
            let read = report.phase("read and hash inputs");
            let rest = t.elapsed().saturating_sub(read);
            if !matches!(report.mode, Mode::Update) || report.compiled != 1 {
                bail!(
                    "edit {e} was not a one-function update: {:?}, {} compiled",
                    report.mode,
                    report.compiled
                );
            }
            // Every edit must show in the program's output, or the check below proves nothing.
            let now = run_exe(&out)?;
            if now == output {
                bail!("edit {e} of f{f} did not change the program's output");
            }
            output = now;
            eprint!(" {:.1}+{:.1}", ms(read), ms(rest));
            reads.push(read);
            rests.push(rest);
            phases.push(report.phases.clone());
            bytes.push(report.summary.bytes_written);
        }
        let busy_starts = starts_during_updates(
            dir.path(),
            &opts,
            &out,
            &|| {
                driver::build(&paths, target, &link, &out, &update_opts)?;
                Ok(())
            },
            edits.max(10),
        )?;
        // The last update must behave exactly as a fresh build of the same input.
        driver::build(&paths, target, &link, &fresh, &full_opts)?;
        if run_exe(&out)? != run_exe(&fresh)? {
            bail!("{n} functions: the updated executable differs from a fresh build");
        }
        eprintln!(" ms; checked against a fresh build");
        let names: Vec<&'static str> = phases[0].iter().map(|(n, _)| *n).collect();
        let phase_medians = names
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, median(phases.iter().map(|p| p[i].1).collect())))
            .collect();
        bytes.sort();
        rows.push(Row {
            functions: n,
            full,
            read: median(reads),
            rest: median(rests),
            phases: phase_medians,
            bytes_written: bytes[bytes.len() / 2],
            busy_starts,
        });
    }

    println!();
    println!(
        "{:>9} {:>12} {:>12} {:>14} {:>12} {:>10} {:>12}",
        "functions", "full build", "update", "read+hash", "everything", "speed-up", "written"
    );
    println!(
        "{:>9} {:>12} {:>12} {:>14} {:>12} {:>10} {:>12}",
        "", "ms", "ms", "inputs ms", "else ms", "full/upd", "bytes"
    );
    for r in &rows {
        let update = r.read + r.rest;
        println!(
            "{:>9} {:>12.1} {:>12.2} {:>14.2} {:>12.2} {:>9.0}x {:>12}",
            r.functions,
            ms(r.full),
            ms(update),
            ms(r.read),
            ms(r.rest),
            r.full.as_secs_f64() / update.as_secs_f64(),
            r.bytes_written
        );
    }
    println!();
    println!("everything else, by phase (median ms):");
    for r in &rows {
        let parts: Vec<String> = r
            .phases
            .iter()
            .map(|(n, d)| format!("{n} {:.2}", ms(*d)))
            .collect();
        println!("{:>9}: {}", r.functions, parts.join(", "));
    }
    println!("\nstarts of OUT during updates refused with ETXTBSY (text file busy):");
    for r in &rows {
        let (busy, all) = r.busy_starts;
        println!(
            "{:>9}: {busy} of {all} ({:.2}%)",
            r.functions,
            100.0 * busy as f64 / all.max(1) as f64
        );
    }
    println!(
        "\ntargets: an update (edit to runnable, its compile included) under 10 ms at 100,000 \
         functions and under 20 ms at 1,000,000; flat across sizes."
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// `bench compare`: direct writing against `.o` files plus a separate link.

/// Options of `zerolink bench compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Program sizes, in functions (`--sizes 1000,10000,100000` for the large comparison).
    #[arg(long, value_delimiter = ',', default_value = "1000,4000,10000")]
    pub sizes: Vec<usize>,
    /// Functions per input file (files = functions / this, at least 1).
    #[arg(long, default_value_t = 1000)]
    pub per_file: usize,
    /// Runs per measurement; the median is reported, with the spread.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Directory for the table (`bench.txt`), the JSON (`bench.json`) and the plot
    /// (`bench.svg`).
    #[arg(short, long, default_value = "bench-results")]
    pub output: std::path::PathBuf,
    /// Also build the programs given as CLIF files (a "given" row in the table).
    #[arg(long, value_name = "FILE.clif")]
    pub program: Vec<std::path::PathBuf>,
    /// Generated programs call into libc and every path links dynamically against it;
    /// otherwise they are freestanding and static.
    #[arg(long)]
    pub libc: bool,
    /// Thread counts, comma-separated: the full builds and the codegen-only floor are
    /// measured at each (direct: zerolink's workers; separate: one object per input file and
    /// worker at a time, as with `make -j`). The no-op rebuild and the edit rows use the
    /// first.
    #[arg(
        short = 'j',
        long,
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "1,2"
    )]
    pub jobs: Vec<usize>,
}

impl Default for CompareArgs {
    fn default() -> Self {
        CompareArgs {
            sizes: vec![1000, 4000, 10000],
            per_file: 1000,
            runs: 3,
            output: "bench-results".into(),
            program: Vec::new(),
            libc: false,
            jobs: vec![1, 2],
        }
    }
}

/// A linker, as the compiler driver selects it.
pub(crate) struct Linker {
    pub(crate) name: &'static str,
    pub(crate) flags: Vec<String>,
    pub(crate) version: String,
}

/// The linkers this machine has; a missing one is skipped with a note.
pub(crate) fn linkers() -> Vec<Linker> {
    let lld = lld_flag().map(|b| {
        if b.starts_with("-B") {
            vec![b, "-fuse-ld=lld".to_string()]
        } else {
            vec![b]
        }
    });
    let candidates: [(&str, Option<Vec<String>>); 4] = [
        ("GNU ld", Some(vec!["-fuse-ld=bfd".into()])),
        ("gold", Some(vec!["-fuse-ld=gold".into()])),
        ("lld", lld),
        ("mold", Some(vec!["-fuse-ld=mold".into()])),
    ];
    let mut out = Vec::new();
    for (name, flags) in candidates {
        let Some(flags) = flags else {
            eprintln!("note: {name} not found, skipped");
            continue;
        };
        let o = std::process::Command::new("cc")
            .args(&flags)
            .arg("-Wl,--version")
            .arg("-nostdlib")
            .output();
        match o {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                let version = text.lines().next().unwrap_or("").trim().to_string();
                out.push(Linker {
                    name,
                    flags,
                    version,
                });
            }
            _ => eprintln!("note: {name} not found, skipped"),
        }
    }
    out
}

/// `-fuse-ld=lld` needs `ld.lld` where the compiler driver looks; Debian's lld-NN installs
/// `ld.lld-NN`. A directory with an `ld.lld` link to it, given with `-B`, does the job.
fn lld_flag() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        if dir.join("ld.lld").is_file() {
            return Some("-fuse-ld=lld".into());
        }
        for v in (11..=25).rev() {
            let p = dir.join(format!("ld.lld-{v}"));
            if p.is_file() {
                let shim =
                    std::env::temp_dir().join(format!("zerolink-lld-{}", std::process::id()));
                std::fs::create_dir_all(&shim).ok()?;
                let link = shim.join("ld.lld");
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&p, &link).ok()?;
                return Some(format!("-B{}", shim.display()));
            }
        }
    }
    None
}

/// Generate a program with `zerolink gen` in a child process. Generating in this process
/// would raise its peak memory to the program's size, and Linux charges that peak to every
/// child spawned afterwards (`ru_maxrss` survives `execve` of a vfork'd child), so every
/// measured peak would be at least the generator's.
fn generate_in_child(exe: &Path, opts: &GenOptions, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("gen")
        .args(["--functions", &opts.functions.to_string()])
        .args(["--files", &opts.files.to_string()])
        .args(["--seed", &opts.seed.to_string()])
        .arg("-o")
        .arg(dir);
    if opts.libc {
        cmd.arg("--libc");
    }
    let out = cmd.output().context("cannot run `zerolink gen`")?;
    if !out.status.success() {
        bail!(
            "zerolink gen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "clif"))
        .collect();
    files.sort();
    Ok(files)
}

/// Wall time and peak memory of a child process and its children (`wait4`).
pub(crate) struct Measured {
    pub(crate) wall: Duration,
    pub(crate) peak_kib: u64,
}

pub(crate) fn measure(cmd: &mut std::process::Command) -> Result<Measured> {
    let t = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot start a measured command")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI call with valid out-pointers; the child is ours and not yet waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed();
    if r != pid {
        bail!("waiting for a measured command failed");
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let mut err = String::new();
        if let Some(mut e) = child.stderr {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        bail!("{cmd:?} failed: {}", err.trim());
    }
    Ok(Measured {
        wall,
        peak_kib: usage.ru_maxrss as u64,
    })
}

fn read_timings(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)?;
    Ok(serde_json::from_str(&text)?)
}

impl PathResult {
    fn new(path: impl Into<String>, jobs: usize) -> PathResult {
        PathResult {
            path: path.into(),
            jobs,
            ..Default::default()
        }
    }

    /// One run: the phase times a zerolink process reported, the measured total and peak,
    /// the link step if there was one, and the size of what it produced.
    fn record(
        &mut self,
        t: &serde_json::Value,
        total: Duration,
        link: Option<Duration>,
        peak_kib: u64,
        output: &Path,
    ) -> Result<()> {
        let phase = |name: &str| t[name].as_f64().unwrap_or(0.0);
        self.parse.push(phase("parse"));
        self.codegen.push(phase("codegen"));
        self.write.push(phase("write"));
        if let Some(link) = link {
            self.link.push(ms(link));
        }
        self.total.push(ms(total));
        self.peak_kib.push(peak_kib as f64);
        self.size = std::fs::metadata(output)?.len();
        Ok(())
    }

    /// The name in legends: with its thread count when that varies.
    fn label(&self, with_jobs: bool) -> String {
        if with_jobs {
            format!("{} -j {}", self.path, self.jobs)
        } else {
            self.path.clone()
        }
    }
}

/// One measured way of building, aggregated over runs. `parse`, `codegen` and `write` are
/// what the zerolink process reported (`--timings`), `link` and `total` are wall times
/// measured here, one entry per run.
#[derive(Default, Clone)]
struct PathResult {
    path: String,
    /// `-j` of the zerolink process (the linkers are what they are).
    jobs: usize,
    parse: Vec<f64>,
    codegen: Vec<f64>,
    write: Vec<f64>,
    link: Vec<f64>,
    total: Vec<f64>,
    peak_kib: Vec<f64>,
    size: u64,
}

fn med(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    (lo, hi)
}

/// The full builds at one thread count, with the floor they are measured against.
struct JobsResult {
    jobs: usize,
    /// `zerolink build --codegen-only -j N`: parse and compile every function, write nothing
    /// (`driver::codegen_only`, the floor `zerolink bench parallel` uses). Wall time and peak
    /// memory only.
    floor: PathResult,
    /// Direct first, then the separate path with each linker.
    full: Vec<PathResult>,
}

struct SizeResult {
    label: String,
    functions: usize,
    by_jobs: Vec<JobsResult>,
    /// `zerolink build` again after the first direct full build, nothing changed.
    no_op: PathResult,
    edit: Vec<PathResult>,
}

/// The time a build spends outside parse and codegen, in wall time: the median over runs of
/// its total minus the codegen-only floor at the same `-j`, measured in the same run.
///
/// Why not total − parse − codegen, as before: with `-j N` the phase times a zerolink process
/// reports are summed over its worker threads (thread time, close to CPU time) while the
/// total is wall time, so the difference went negative as soon as two threads compiled. The
/// floor does the same parsing and compiling on the same number of threads, in the same
/// batches of 64 functions per thread, in a process of its own (start-up, reading the inputs,
/// loading libraries included) and writes nothing, so the difference is everything else, in
/// the same unit as the total. With `-j 1` it matches the old figure within the noise.
///
/// What it includes: for the direct path, placing, patching, the tables and writing the
/// executable (the placing thread's `write` phase, measured on its own, is shown beside it:
/// the workers wait while it runs, so it is wall time too); for the separate path, writing
/// the objects, the link, and the parallelism lost to compiling one whole file per worker
/// (with fewer files than threads, or files of unequal cost, threads sit idle). The floor is
/// the direct path's schedule, though: batches of 64 functions per thread, each waiting for
/// its slowest function, where the separate path's workers take whole files with no barrier;
/// so with `-j` > 1 the separate figure is "beyond what the direct path cannot avoid" and can
/// be below zero for that reason. And it is a difference of two noisy measurements (each
/// ±10–20% on a small VM), so a small one can come out below zero anyway; the spreads of
/// both are in the table.
fn outside_parse_codegen(p: &PathResult, floor: &PathResult) -> f64 {
    let diffs: Vec<f64> = p
        .total
        .iter()
        .zip(&floor.total)
        .map(|(t, f)| t - f)
        .collect();
    med(&diffs)
}

/// The comparison: every path builds every program, every executable is run, and a size
/// counts only if all of them print the same checksum. Full builds are measured at every
/// thread count of `args.jobs`, each against the codegen-only floor at that count (see
/// [`outside_parse_codegen`]); after the first direct full build, a no-op rebuild.
pub fn compare(args: &CompareArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the zerolink executable")?;
    let jobs: Vec<usize> = if args.jobs.is_empty() {
        vec![1]
    } else {
        args.jobs.iter().map(|&j| j.max(1)).collect()
    };
    let linkers = linkers();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("machine: {cores} cores, {cpu}");
    for l in &linkers {
        eprintln!("linker: {} ({})", l.name, l.version);
    }
    let mut programs: Vec<(String, usize, Option<Vec<PathBuf>>)> = args
        .sizes
        .iter()
        .map(|&n| (format!("{n}"), n, None))
        .collect();
    if !args.program.is_empty() {
        programs.push(("given".into(), 0, Some(args.program.clone())));
    }
    let mut results = Vec::new();
    for (label, n, given) in programs {
        let dir = tempfile::tempdir()?;
        let (files, opts) = match given {
            Some(files) => (files, None),
            None => {
                let opts = GenOptions {
                    functions: n,
                    files: (n / args.per_file.max(1)).max(1),
                    seed: 1,
                    libc: args.libc,
                };
                (
                    generate_in_child(&exe, &opts, &dir.path().join("src"))?,
                    Some(opts),
                )
            }
        };
        let functions = if n > 0 {
            n
        } else {
            Program::read(&files)?.functions.len()
        };
        eprintln!("{label}: {functions} functions in {} files", files.len());
        results.push(compare_one(
            &exe,
            &linkers,
            &files,
            opts.as_ref(),
            dir.path(),
            args.runs,
            &label,
            functions,
            args.libc,
            &jobs,
        )?);
    }
    std::fs::create_dir_all(&args.output)?;
    let table = render_table(&results, &linkers, cores, &cpu);
    print!("{table}");
    std::fs::write(args.output.join("bench.txt"), &table)?;
    let json = to_json(&results, &linkers, cores, &cpu);
    std::fs::write(
        args.output.join("bench.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(args.output.join("bench.svg"), plot(&results))?;
    eprintln!(
        "wrote {}/bench.txt, bench.json and bench.svg",
        args.output.display()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn compare_one(
    exe: &Path,
    linkers: &[Linker],
    files: &[PathBuf],
    gen: Option<&GenOptions>,
    dir: &Path,
    runs: usize,
    label: &str,
    functions: usize,
    libc: bool,
    jobs: &[usize],
) -> Result<SizeResult> {
    let direct_out = dir.join("direct");
    let objdir = dir.join("objects");
    let timings = dir.join("timings.json");
    // A zerolink subcommand on the inputs, for this kind of program, on `j` threads.
    let zerolink = |subcommand: &str, j: usize| {
        let mut c = std::process::Command::new(exe);
        c.arg(subcommand).args(files);
        if !libc {
            c.arg("--freestanding");
        }
        c.arg("-j").arg(j.to_string());
        c
    };
    let mut by_jobs: Vec<JobsResult> = jobs
        .iter()
        .map(|&j| JobsResult {
            jobs: j,
            floor: PathResult::new("codegen-only floor", j),
            full: std::iter::once(PathResult::new("direct (zerolink)", j))
                .chain(
                    linkers
                        .iter()
                        .map(|l| PathResult::new(format!("separate + {}", l.name), j)),
                )
                .collect(),
        })
        .collect();
    // One function compiles in an edit, and nothing in a no-op: their thread count hardly
    // matters, so they run once, with the first.
    let first_jobs = jobs[0];
    let mut no_op = PathResult::new("direct: no-op rebuild", first_jobs);
    let mut edit: Vec<PathResult> =
        std::iter::once(PathResult::new("direct: in-place update", first_jobs))
            .chain(
                linkers
                    .iter()
                    .map(|l| PathResult::new(format!("separate: one .o + {}", l.name), first_jobs)),
            )
            .collect();
    let mut sums = Checksums {
        label,
        expected: None,
    };
    let runtime = dir.join("zerolink-runtime.o");
    std::fs::write(
        &runtime,
        zerolink_image::runtime::relocatable_object(!libc)
            .map_err(|e| anyhow::anyhow!("runtime object: {e}"))?,
    )?;
    let link_cmd = |l: &Linker, objects: &[PathBuf], out: &Path| {
        let mut c = std::process::Command::new("cc");
        c.args(&l.flags);
        if !libc {
            c.args(["-nostdlib", "-static", "-no-pie"]);
        }
        c.args(["-Wl,-z,noexecstack", "-o"])
            .arg(out)
            .args(objects)
            .arg(&runtime);
        c
    };
    let objects: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            objdir.join(format!(
                "{}.o",
                f.file_stem()
                    .map(|s| s.to_string_lossy())
                    .unwrap_or_default()
            ))
        })
        .collect();
    // Link the objects with every linker, each into its row after the objects' own step
    // (`m_obj`); every executable must print the same checksum.
    let link_all = |rows: &mut [PathResult],
                    t: &serde_json::Value,
                    m_obj: &Measured,
                    sums: &mut Checksums<'_>,
                    what: &str|
     -> Result<()> {
        for (i, (l, row)) in linkers.iter().zip(rows).enumerate() {
            eprint!(", {}", l.name);
            let out = dir.join(format!("separate{i}"));
            let m = measure(&mut link_cmd(l, &objects, &out))?;
            let peak = m_obj.peak_kib.max(m.peak_kib);
            row.record(t, m_obj.wall + m.wall, Some(m.wall), peak, &out)?;
            sums.check(&out, &format!("{what} {}", l.name))?;
        }
        Ok(())
    };

    // The first process on freshly written inputs pays for cold caches; it would be the floor
    // of the first run, which all of that run's differences are taken against. Not measured.
    let warm_up = jobs.iter().copied().max().unwrap_or(1);
    measure(zerolink("build", warm_up).args(["-o", "/dev/null", "--codegen-only"]))?;

    for run in 0..runs {
        eprint!("  run {}/{runs}:", run + 1);
        for (k, group) in by_jobs.iter_mut().enumerate() {
            let j = group.jobs;
            eprint!("{} -j {j}: floor", if k == 0 { "" } else { ";" });
            let m = measure(zerolink("build", j).args(["-o", "/dev/null", "--codegen-only"]))?;
            group.floor.total.push(ms(m.wall));
            group.floor.peak_kib.push(m.peak_kib as f64);

            eprint!(", direct");
            let m = measure(
                zerolink("build", j)
                    .arg("-o")
                    .arg(&direct_out)
                    .arg("--full")
                    .arg("--timings")
                    .arg(&timings),
            )?;
            let t = read_timings(&timings)?;
            group.full[0].record(&t, m.wall, None, m.peak_kib, &direct_out)?;
            sums.check(&direct_out, "the direct build")?;

            if k == 0 {
                // The same build again, nothing changed: what `make` with nothing to do is to
                // the separate path, except that the inputs are hashed, not their times read.
                eprint!(", no-op");
                let m = measure(
                    zerolink("build", j)
                        .arg("-o")
                        .arg(&direct_out)
                        .arg("--timings")
                        .arg(&timings),
                )?;
                let t = read_timings(&timings)?;
                if t["codegen"].as_f64() != Some(0.0) {
                    bail!("{label}: the rebuild with nothing changed compiled functions");
                }
                no_op.record(&t, m.wall, None, m.peak_kib, &direct_out)?;
                sums.check(&direct_out, "the executable after a no-op rebuild")?;
            }

            eprint!(", objects");
            let _ = std::fs::remove_dir_all(&objdir);
            let m_obj = measure(
                zerolink("bench-objects", j)
                    .arg("-o")
                    .arg(&objdir)
                    .arg("--timings")
                    .arg(&timings),
            )?;
            let t = read_timings(&timings)?;
            link_all(
                &mut group.full[1..],
                &t,
                &m_obj,
                &mut sums,
                "the build linked by",
            )?;
        }

        // The edit loop: one function changes.
        if let Some(opts) = gen {
            eprint!("; edit: direct");
            let f = (opts.functions / 2 + run * 7919) % opts.functions;
            let changed = edit_function(&dir.join("src"), opts, f, run as i64 + 1)?;
            // The edited program prints something else: every path must agree on the new sum.
            sums.expected = None;
            let m = measure(
                zerolink("build", first_jobs)
                    .arg("-o")
                    .arg(&direct_out)
                    .arg("--timings")
                    .arg(&timings),
            )?;
            let t = read_timings(&timings)?;
            edit[0].record(&t, m.wall, None, m.peak_kib, &direct_out)?;
            sums.check(&direct_out, "the updated executable")?;
            eprint!(", one object");
            let m_obj = measure(
                zerolink("bench-objects", first_jobs)
                    .arg("-o")
                    .arg(&objdir)
                    .arg("--only")
                    .arg(&changed)
                    .arg("--timings")
                    .arg(&timings),
            )?;
            let t = read_timings(&timings)?;
            link_all(
                &mut edit[1..],
                &t,
                &m_obj,
                &mut sums,
                "the edit relinked by",
            )?;
            sums.expected = None;
        }
        eprintln!();
    }
    Ok(SizeResult {
        label: label.to_string(),
        functions,
        by_jobs,
        no_op,
        edit: if gen.is_some() { edit } else { Vec::new() },
    })
}

/// Every executable of one program must print the same checksum.
struct Checksums<'a> {
    label: &'a str,
    expected: Option<Vec<u8>>,
}

impl Checksums<'_> {
    fn check(&mut self, exe: &Path, what: &str) -> Result<()> {
        let out = run_exe(exe)?;
        match &self.expected {
            Some(c) if *c != out => bail!("{}: {what} printed a different checksum", self.label),
            Some(_) => Ok(()),
            None => {
                self.expected = Some(out);
                Ok(())
            }
        }
    }
}

/// One table row; a phase nobody reported (the floor's, a link the direct path does not
/// have) is a dash.
fn row(r: &PathResult) -> String {
    let (lo, hi) = spread(&r.total);
    let phase = |v: &[f64]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", med(v))
        }
    };
    format!(
        "  {:<28} {:>3} {:>9} {:>9} {:>9} {:>9} {:>10.1} {:>15} {:>9.0} {:>10}\n",
        r.path,
        r.jobs,
        phase(&r.parse),
        phase(&r.codegen),
        phase(&r.write),
        phase(&r.link),
        med(&r.total),
        format!("{lo:.0}-{hi:.0}"),
        med(&r.peak_kib) / 1024.0,
        if r.size > 0 {
            r.size.to_string()
        } else {
            "-".to_string()
        }
    )
}

/// The fastest separate build (by median total) of one thread count.
fn fastest_separate(g: &JobsResult) -> Option<&PathResult> {
    g.full[1..]
        .iter()
        .min_by(|a, b| med(&a.total).partial_cmp(&med(&b.total)).expect("no NaN"))
}

const LEGEND: &str = "\
times in ms (median of runs; spread = min-max of total); memory = peak RSS in MiB
  -j: threads of the zerolink process (direct: functions compiled in parallel; separate: one
      .o per input file and thread at a time, as with make -j; the link is the linker's own)
  parse, codegen: thread time summed over the workers, so with -j > 1 they exceed the wall
      time they took and the columns do not add up to the total
  write: direct: the placing thread (placing, patching, tables, writing; the workers wait
      for it, so it is wall time); separate: emitting and writing objects, summed over workers
  link, total: wall time of the child processes (total of separate = objects + link)
  codegen-only floor: zerolink build --codegen-only, the same parsing and compiling on the
      same threads, nothing written
  no-op rebuild: zerolink build again after the direct full build, nothing changed
  outside parse and codegen: total - floor at the same -j, median over runs of the
      difference, in wall time. A difference of two noisy figures: a small one can come out
      below zero. The floor compiles in the direct path's batches (64 functions per thread,
      each waiting for its slowest); separate workers take whole files with no such barrier,
      so with -j > 1 separate can also come in under the floor for real
";

fn render_table(results: &[SizeResult], linkers: &[Linker], cores: usize, cpu: &str) -> String {
    let mut s = String::new();
    s += &format!("machine: {cores} cores, {cpu}\n");
    for l in linkers {
        s += &format!("{}: {}\n", l.name, l.version);
    }
    s += LEGEND;
    for r in results {
        s += &format!("\n{} functions ({})\n", r.functions, r.label);
        s += &format!(
            "  {:<28} {:>3} {:>9} {:>9} {:>9} {:>9} {:>10} {:>15} {:>9} {:>10}\n",
            "full build",
            "-j",
            "parse",
            "codegen",
            "write",
            "link",
            "total",
            "spread",
            "MiB",
            "bytes"
        );
        for g in &r.by_jobs {
            s += &row(&g.floor);
            for p in &g.full {
                s += &row(p);
            }
        }
        s += "  nothing changed\n";
        s += &row(&r.no_op);
        if !r.edit.is_empty() {
            s += "  edit one function\n";
            for p in &r.edit {
                s += &row(p);
            }
        }
        s += "  outside parse and codegen (total - floor); direct total / fastest separate:\n";
        for g in &r.by_jobs {
            let direct = &g.full[0];
            let outside = outside_parse_codegen(direct, &g.floor);
            s += &format!(
                "    -j {}: direct {:.1} ms ({:.1}% of the floor {:.0} ms; write phase {:.1} ms)",
                g.jobs,
                outside,
                100.0 * outside / med(&g.floor.total),
                med(&g.floor.total),
                med(&direct.write),
            );
            if let Some(best) = fastest_separate(g) {
                s += &format!(
                    ", {} {:.1} ms; {:.2}",
                    best.path,
                    outside_parse_codegen(best, &g.floor),
                    med(&direct.total) / med(&best.total),
                );
            }
            s += "\n";
        }
        if let Some(line) = size_line(r) {
            s += &line;
        }
    }
    s
}

/// The direct output against the smallest separate one (every linker's output is checked to
/// run; sizes do not depend on `-j`).
fn size_line(r: &SizeResult) -> Option<String> {
    let g = r.by_jobs.first()?;
    let direct = g.full.first()?.size;
    let smallest = g.full[1..]
        .iter()
        .filter(|p| p.size > 0)
        .min_by_key(|p| p.size)?;
    Some(format!(
        "  output: direct {:.2} MB, smallest separate {:.2} MB ({}): {:.2}x\n",
        direct as f64 / 1e6,
        smallest.size as f64 / 1e6,
        smallest.path,
        direct as f64 / smallest.size as f64
    ))
}

fn to_json(
    results: &[SizeResult],
    linkers: &[Linker],
    cores: usize,
    cpu: &str,
) -> serde_json::Value {
    let path = |p: &PathResult| {
        serde_json::json!({
            "path": p.path,
            "jobs": p.jobs,
            "parse_ms": med(&p.parse),
            "codegen_ms": med(&p.codegen),
            "write_ms": med(&p.write),
            "link_ms": med(&p.link),
            "total_ms": med(&p.total),
            "total_runs_ms": p.total,
            "peak_rss_kib": med(&p.peak_kib),
            "output_bytes": p.size,
        })
    };
    let full = |g: &JobsResult, p: &PathResult| {
        let mut v = path(p);
        v["outside_parse_codegen_ms"] = outside_parse_codegen(p, &g.floor).into();
        v
    };
    serde_json::json!({
        "machine": { "cores": cores, "cpu": cpu },
        "linkers": linkers.iter().map(|l| serde_json::json!({"name": l.name, "version": l.version})).collect::<Vec<_>>(),
        "notes": {
            "parse_ms": "reading and parsing CLIF, resolving names; like codegen_ms, thread time summed over the workers (exceeds wall time with jobs > 1)",
            "codegen_ms": "Cranelift's compile, thread time summed over the workers",
            "write_ms": "direct: wall time of the placing thread; separate: summed over the object workers",
            "total_ms": "wall time of the child processes (separate: objects plus link)",
            "link_ms": "wall time of the linker (0 for the direct path)",
            "codegen_only_floor": "zerolink build --codegen-only: parse and compile every function on the same threads, write nothing",
            "outside_parse_codegen_ms": "median over runs of total minus the floor at the same jobs, measured in the same run",
        },
        "programs": results.iter().map(|r| serde_json::json!({
            "label": r.label,
            "functions": r.functions,
            "full_build": r.by_jobs.iter().flat_map(|g| g.full.iter().map(move |p| full(g, p))).collect::<Vec<_>>(),
            "codegen_only_floor": r.by_jobs.iter().map(|g| serde_json::json!({
                "jobs": g.jobs,
                "total_ms": med(&g.floor.total),
                "total_runs_ms": g.floor.total,
                "peak_rss_kib": med(&g.floor.peak_kib),
            })).collect::<Vec<_>>(),
            "no_op_rebuild": path(&r.no_op),
            "edit_one_function": r.edit.iter().map(path).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Total time against program size, log-log, one line per path: colour by path, solid for the
/// first thread count and dotted for the others, edits dashed, the no-op rebuild grey.
fn plot(results: &[SizeResult]) -> String {
    let (w, h, left, bottom, top, right) = (780.0, 480.0, 90.0, 50.0, 30.0, 230.0);
    let points: Vec<(f64, f64)> = results
        .iter()
        .flat_map(|r| {
            r.by_jobs
                .iter()
                .flat_map(|g| &g.full)
                .chain(&r.edit)
                .chain(std::iter::once(&r.no_op))
                .map(move |p| (r.functions as f64, med(&p.total)))
        })
        .filter(|&(x, y)| x > 0.0 && y > 0.0)
        .collect();
    if points.is_empty() {
        return String::from("<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n");
    }
    let lg = |v: f64| v.log10();
    let (xmin, xmax) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(lg(p.0)), b.max(lg(p.0)))
    });
    let (ymin, ymax) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(lg(p.1)), b.max(lg(p.1)))
    });
    let (xmin, xmax) = (xmin.floor(), xmax.ceil().max(xmin.floor() + 1.0));
    let (ymin, ymax) = (ymin.floor(), ymax.ceil().max(ymin.floor() + 1.0));
    let px = |x: f64| left + (lg(x) - xmin) / (xmax - xmin) * (w - left - right);
    let py = |y: f64| h - bottom - (lg(y) - ymin) / (ymax - ymin) * (h - bottom - top);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for e in (xmin as i32)..=(xmax as i32) {
        let x = px(10f64.powi(e));
        s += &format!("<line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/>\n<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", h - bottom, h - bottom + 18.0, 10u64.pow(e as u32));
    }
    for e in (ymin as i32)..=(ymax as i32) {
        let y = py(10f64.powi(e));
        s += &format!("<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} ms</text>\n", w - right, left - 6.0, y + 4.0, 10f64.powi(e));
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">functions</text>\n",
        (left + w - right) / 2.0,
        h - 10.0
    );
    s += &format!(
        "<text x=\"{}\" y=\"18\" text-anchor=\"middle\">total build time (log-log)</text>\n",
        (left + w - right) / 2.0
    );
    let colors = [
        "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let sized: Vec<&SizeResult> = results
        .iter()
        .filter(|r| r.functions > 0 && r.label != "given")
        .collect();
    let Some(first) = sized.first() else {
        return s + "</svg>\n";
    };
    /// Which row of a size a line follows.
    #[derive(Clone, Copy)]
    enum Pick {
        Full(usize, usize),
        NoOp,
        Edit(usize),
    }
    let pick = |r: &'_ SizeResult, p: Pick| -> Option<f64> {
        let row = match p {
            Pick::Full(g, i) => r.by_jobs.get(g)?.full.get(i)?,
            Pick::NoOp => &r.no_op,
            Pick::Edit(i) => r.edit.get(i)?,
        };
        Some(med(&row.total))
    };
    let with_jobs = first.by_jobs.len() > 1;
    // (legend, colour, dash pattern, row)
    let mut series: Vec<(String, &str, &str, Pick)> = Vec::new();
    for (g, group) in first.by_jobs.iter().enumerate() {
        let dash = if g == 0 {
            ""
        } else {
            " stroke-dasharray=\"2 3\""
        };
        for (i, p) in group.full.iter().enumerate() {
            series.push((
                p.label(with_jobs),
                colors[i % colors.len()],
                dash,
                Pick::Full(g, i),
            ));
        }
    }
    series.push((
        first.no_op.path.clone(),
        "#7f7f7f",
        " stroke-dasharray=\"6 2 2 2\"",
        Pick::NoOp,
    ));
    for (i, p) in first.edit.iter().enumerate() {
        series.push((
            p.path.clone(),
            colors[i % colors.len()],
            " stroke-dasharray=\"6 4\"",
            Pick::Edit(i),
        ));
    }
    let mut legend_y = top + 10.0;
    for (name, color, dash, which) in series {
        let pts: Vec<(f64, f64)> = sized
            .iter()
            .filter_map(|r| pick(r, which).map(|y| (r.functions as f64, y)))
            .filter(|&(_, y)| y > 0.0)
            .collect();
        let d: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
            d.join(" ")
        );
        for &(x, y) in &pts {
            s += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>\n",
                px(x),
                py(y)
            );
        }
        s += &format!("<line x1=\"{}\" y1=\"{legend_y}\" x2=\"{}\" y2=\"{legend_y}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\n<text x=\"{}\" y=\"{}\">{name}</text>\n", w - right + 10.0, w - right + 34.0, w - right + 40.0, legend_y + 4.0);
        legend_y += 18.0;
    }
    s += "</svg>\n";
    s
}

// ---------------------------------------------------------------------------------------------
// `bench parallel`: how close a full build comes to the codegen-only floor, per thread count.

/// For each size and thread count: the floor (parse and compile every function, write
/// nothing) and a full build, as child processes (wall time, peak memory).
pub fn parallel(sizes: &[usize], jobs: &[usize], runs: usize) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the zerolink executable")?;
    println!(
        "{:>9} {:>3} {:>12} {:>12} {:>9} {:>10} {:>10} {:>12}",
        "functions", "-j", "floor ms", "full ms", "over", "speed-up", "peak MiB", "output MiB"
    );
    for &n in sizes {
        let dir = tempfile::tempdir()?;
        let opts = GenOptions {
            functions: n,
            files: (n / 1000).max(1),
            seed: 1,
            libc: false,
        };
        let files = generate_in_child(&exe, &opts, &dir.path().join("src"))?;
        let input_bytes: u64 = files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let out = dir.path().join("prog");
        let mut first_full = None;
        for &j in jobs {
            let mut floor = Vec::new();
            let mut full = Vec::new();
            let mut peak = 0;
            for _ in 0..runs {
                let m = measure(
                    std::process::Command::new(&exe)
                        .arg("build")
                        .args(&files)
                        .args(["-o", "/dev/null", "--freestanding", "--codegen-only", "-j"])
                        .arg(j.to_string()),
                )?;
                floor.push(ms(m.wall));
                let m = measure(
                    std::process::Command::new(&exe)
                        .arg("build")
                        .args(&files)
                        .arg("-o")
                        .arg(&out)
                        .args(["--freestanding", "--full", "-q", "-j"])
                        .arg(j.to_string()),
                )?;
                full.push(ms(m.wall));
                peak = peak.max(m.peak_kib);
                run_exe(&out)?;
            }
            let (floor, full) = (med(&floor), med(&full));
            let speedup = first_full.map_or(1.0, |f: f64| f / full);
            first_full.get_or_insert(full);
            let output = std::fs::metadata(&out)?.len();
            println!(
                "{:>9} {:>3} {:>12.0} {:>12.0} {:>8.1}% {:>9.2}x {:>10.0} {:>12.1}",
                n,
                j,
                floor,
                full,
                100.0 * (full - floor) / floor,
                speedup,
                peak as f64 / 1024.0,
                output as f64 / (1 << 20) as f64
            );
        }
        println!(
            "{:>9}     (input: {:.1} MiB of CLIF, kept in memory to parse functions on demand)",
            "",
            input_bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
