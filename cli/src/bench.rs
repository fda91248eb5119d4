//! `zerolink bench`: measurements, never pass/fail timing assertions.
//!
//! `bench edit` is the fast-debug-loop benchmark: for generated programs of several sizes, a
//! full build, then one-function edits applied and updated in place. Each update is split into
//! *read and hash inputs* (reading every file, splitting it into functions and hashing them:
//! allowed to grow with the program) and *everything else* (opening the table, diffing,
//! compiling, writing, patching, rewriting tables: should grow with the edit only). Every
//! updated executable is run and compared with a fresh build of the same input.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use zerolink_backend::clif::Program;
use zerolink_backend::driver::{self, Mode};
use zerolink_backend::TargetOptions;

use crate::gen::{edit_function, generate, GenOptions};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run_exe(path: &Path) -> Result<Vec<u8>> {
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
        let opts = GenOptions {
            functions: n,
            files: (n / 1000).max(1),
            seed: 1,
            libc: false,
        };
        let dir = tempfile::tempdir()?;
        let paths = generate(&opts).write(dir.path())?;
        let out = dir.path().join("prog");
        let fresh = dir.path().join("fresh");

        eprint!("{n} functions: full build ...");
        let t = Instant::now();
        let program = Program::read(&paths)?;
        driver::build(&program, target, &link, &out, &full_opts)?;
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
            let program = Program::read(&paths)?;
            let read = t.elapsed();
            let t = Instant::now();
            let report = driver::build(&program, target, &link, &out, &update_opts)?;
            let rest = t.elapsed();
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
        // The last update must behave exactly as a fresh build of the same input.
        let program = Program::read(&paths)?;
        driver::build(&program, target, &link, &fresh, &full_opts)?;
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
    println!(
        "\ntargets: 'everything else' flat across sizes and under 5 ms at 100,000 functions; \
         update at least 20x faster than a full build at 100,000."
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
    /// Threads for both paths (zerolink's workers; objects compiled in parallel as with
    /// `make -j`). 1 by default, so that the phase columns add up to the total.
    #[arg(short = 'j', long, default_value_t = 1)]
    pub jobs: usize,
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
            jobs: 1,
        }
    }
}

/// A linker, as the compiler driver selects it.
struct Linker {
    name: &'static str,
    flags: Vec<String>,
    version: String,
}

/// The linkers this machine has; a missing one is skipped with a note.
fn linkers() -> Vec<Linker> {
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

/// Wall time and peak memory of a child process and its children (`wait4`).
struct Measured {
    wall: Duration,
    peak_kib: u64,
}

fn measure(cmd: &mut std::process::Command) -> Result<Measured> {
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
}

/// One measured way of building, aggregated over runs.
#[derive(Default, Clone)]
struct PathResult {
    path: String,
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

struct SizeResult {
    label: String,
    functions: usize,
    full: Vec<PathResult>,
    edit: Vec<PathResult>,
}

/// The comparison: every path builds every program, every executable is run, and a size
/// counts only if all of them print the same checksum.
pub fn compare(args: &CompareArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the zerolink executable")?;
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
                (generate(&opts).write(&dir.path().join("src"))?, Some(opts))
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
            args.jobs,
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
    jobs: usize,
) -> Result<SizeResult> {
    let jobs = jobs.max(1).to_string();
    let direct_out = dir.join("direct");
    let objdir = dir.join("objects");
    let timings = dir.join("timings.json");
    let mut freestanding: Vec<&str> = if libc { vec![] } else { vec!["--freestanding"] };
    freestanding.extend(["-j", jobs.as_str()]);
    let freestanding = &freestanding[..];
    let mut full = vec![PathResult {
        path: "direct (zerolink)".into(),
        ..Default::default()
    }];
    for l in linkers {
        full.push(PathResult {
            path: format!("separate + {}", l.name),
            ..Default::default()
        });
    }
    let mut edit = full.clone();
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

    for run in 0..runs {
        eprint!("  run {}/{runs}: direct", run + 1);
        let m = measure(
            std::process::Command::new(exe)
                .arg("build")
                .args(files)
                .arg("-o")
                .arg(&direct_out)
                .args(freestanding)
                .arg("--full")
                .arg("--timings")
                .arg(&timings),
        )?;
        let t = read_timings(&timings)?;
        full[0].record(&t, m.wall, None, m.peak_kib, &direct_out)?;
        sums.check(&direct_out, "the direct build")?;

        eprint!(", objects");
        let _ = std::fs::remove_dir_all(&objdir);
        let m_obj = measure(
            std::process::Command::new(exe)
                .arg("bench-objects")
                .args(files)
                .arg("-o")
                .arg(&objdir)
                .args(freestanding)
                .arg("--timings")
                .arg(&timings),
        )?;
        let t = read_timings(&timings)?;
        for (i, l) in linkers.iter().enumerate() {
            eprint!(", {}", l.name);
            let out = dir.join(format!("separate{i}"));
            let m = measure(&mut link_cmd(l, &objects, &out))?;
            let peak = m_obj.peak_kib.max(m.peak_kib);
            full[i + 1].record(&t, m_obj.wall + m.wall, Some(m.wall), peak, &out)?;
            sums.check(&out, &format!("the build linked by {}", l.name))?;
        }

        // The edit loop: one function changes.
        if let Some(opts) = gen {
            eprint!("; edit: direct");
            let f = (opts.functions / 2 + run * 7919) % opts.functions;
            let changed = edit_function(&dir.join("src"), opts, f, run as i64 + 1)?;
            // The edited program prints something else: every path must agree on the new sum.
            sums.expected = None;
            let m = measure(
                std::process::Command::new(exe)
                    .arg("build")
                    .args(files)
                    .arg("-o")
                    .arg(&direct_out)
                    .args(freestanding)
                    .arg("--timings")
                    .arg(&timings),
            )?;
            let t = read_timings(&timings)?;
            edit[0].path = "direct: in-place update".into();
            edit[0].record(&t, m.wall, None, m.peak_kib, &direct_out)?;
            sums.check(&direct_out, "the updated executable")?;
            eprint!(", one object");
            let m_obj = measure(
                std::process::Command::new(exe)
                    .arg("bench-objects")
                    .args(files)
                    .arg("-o")
                    .arg(&objdir)
                    .args(freestanding)
                    .arg("--only")
                    .arg(&changed)
                    .arg("--timings")
                    .arg(&timings),
            )?;
            let t = read_timings(&timings)?;
            for (i, l) in linkers.iter().enumerate() {
                eprint!(", {}", l.name);
                let out = dir.join(format!("separate{i}"));
                let m = measure(&mut link_cmd(l, &objects, &out))?;
                let peak = m_obj.peak_kib.max(m.peak_kib);
                edit[i + 1].path = format!("separate: one .o + {}", l.name);
                edit[i + 1].record(&t, m_obj.wall + m.wall, Some(m.wall), peak, &out)?;
                sums.check(&out, &format!("the edit relinked by {}", l.name))?;
            }
            sums.expected = None;
        }
        eprintln!();
    }
    Ok(SizeResult {
        label: label.to_string(),
        functions,
        full,
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

fn row(r: &PathResult) -> String {
    let (lo, hi) = spread(&r.total);
    format!(
        "  {:<28} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>15} {:>9.0} {:>10}\n",
        r.path,
        med(&r.parse),
        med(&r.codegen),
        med(&r.write),
        med(&r.link),
        med(&r.total),
        format!("{lo:.0}-{hi:.0}"),
        med(&r.peak_kib) / 1024.0,
        r.size
    )
}

fn render_table(results: &[SizeResult], linkers: &[Linker], cores: usize, cpu: &str) -> String {
    let mut s = String::new();
    s += &format!("machine: {cores} cores, {cpu}\n");
    for l in linkers {
        s += &format!("{}: {}\n", l.name, l.version);
    }
    s += "times in ms (median of runs; spread = min-max of total); memory = peak RSS in MiB\n";
    for r in results {
        s += &format!("\n{} functions ({})\n", r.functions, r.label);
        s += &format!(
            "  {:<28} {:>9} {:>9} {:>9} {:>9} {:>10} {:>15} {:>9} {:>10}\n",
            "full build", "parse", "codegen", "write", "link", "total", "spread", "MiB", "bytes"
        );
        for p in &r.full {
            s += &row(p);
        }
        if !r.edit.is_empty() {
            s += "  edit one function\n";
            for p in &r.edit {
                s += &row(p);
            }
        }
        let direct = &r.full[0];
        if let Some(best) = r.full[1..]
            .iter()
            .min_by(|a, b| med(&a.total).partial_cmp(&med(&b.total)).expect("no NaN"))
        {
            let not_codegen = |p: &PathResult| med(&p.total) - med(&p.codegen) - med(&p.parse);
            s += &format!(
                "  direct total / fastest separate ({}): {:.2}; everything but parse and codegen: \
                 direct {:.1} ms ({:.1}% of codegen), separate {:.1} ms\n",
                best.path,
                med(&direct.total) / med(&best.total),
                not_codegen(direct),
                100.0 * not_codegen(direct) / med(&direct.codegen),
                not_codegen(best),
            );
        }
    }
    s
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
    serde_json::json!({
        "machine": { "cores": cores, "cpu": cpu },
        "linkers": linkers.iter().map(|l| serde_json::json!({"name": l.name, "version": l.version})).collect::<Vec<_>>(),
        "programs": results.iter().map(|r| serde_json::json!({
            "label": r.label,
            "functions": r.functions,
            "full_build": r.full.iter().map(path).collect::<Vec<_>>(),
            "edit_one_function": r.edit.iter().map(path).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Total time against program size, log-log, one line per path (edits dashed).
fn plot(results: &[SizeResult]) -> String {
    let (w, h, left, bottom, top, right) = (780.0, 480.0, 90.0, 50.0, 30.0, 230.0);
    let points: Vec<(f64, f64)> = results
        .iter()
        .flat_map(|r| {
            r.full
                .iter()
                .chain(&r.edit)
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
    let series = |edit: bool| -> Vec<(String, Vec<(f64, f64)>)> {
        let n = sized
            .first()
            .map_or(0, |r| if edit { r.edit.len() } else { r.full.len() });
        (0..n)
            .map(|i| {
                let name = sized[0]
                    .full
                    .get(i)
                    .map(|p| p.path.clone())
                    .unwrap_or_default();
                let name = if edit {
                    sized[0].edit.get(i).map(|p| p.path.clone()).unwrap_or(name)
                } else {
                    name
                };
                let pts = sized
                    .iter()
                    .filter_map(|r| {
                        let ps = if edit { &r.edit } else { &r.full };
                        ps.get(i).map(|p| (r.functions as f64, med(&p.total)))
                    })
                    .collect();
                (name, pts)
            })
            .collect()
    };
    let mut legend_y = top + 10.0;
    for (edit, dash) in [(false, ""), (true, " stroke-dasharray=\"6 4\"")] {
        for (i, (name, pts)) in series(edit).into_iter().enumerate() {
            let color = colors[i % colors.len()];
            let d: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            s += &format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n", d.join(" "));
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
        let files = generate(&opts).write(&dir.path().join("src"))?;
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
