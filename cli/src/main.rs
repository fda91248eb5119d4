//! The `zerolink` command: a thin shell over `zerolink-backend` and `zerolink-image`.

mod bench;
mod bench_api;
mod bench_archive;
mod bench_hot;
mod bench_pie;
mod gen;
mod hardening;
mod hot;
mod inspect;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use zerolink_backend::clif::Program;
use zerolink_backend::driver::{self, Mode};
use zerolink_backend::{BackendError, TargetOptions};
use zerolink_image::ImageError;

#[derive(Parser)]
#[command(
    name = "zerolink",
    version,
    about = "Compile Cranelift IR (CLIF) straight into a runnable x86-64 Linux executable: \
             no object files, no link step.",
    after_help = "Examples:\n  zerolink run examples/hello.clif\n  \
                  zerolink build examples/demo/*.clif -o demo && ./demo\n  \
                  (edit a function, then build again: only what changed is recompiled)\n  \
                  zerolink build examples/demo/*.clif -o demo --stats\n  \
                  zerolink inspect demo\n\n\
                  The input format (CLIF plus `; data:` directives, built-in functions) is \
                  described in docs/input.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an executable from one or more CLIF files.
    Build {
        #[command(flatten)]
        input: InputArgs,
        /// Where to write the executable. Replaced only if the build succeeds.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Print what the build did: functions compiled, reused and moved, sites patched,
        /// bytes written, time per phase.
        #[arg(long)]
        stats: bool,
        /// Rebuild OUT in full instead of updating it in place.
        #[arg(long)]
        full: bool,
        /// Write where the time went (JSON, milliseconds) to this file (for `zerolink bench`).
        #[arg(long, hide = true, value_name = "FILE")]
        timings: Option<PathBuf>,
        /// Parse and compile every function, write nothing (the floor, for `zerolink bench`).
        #[arg(long, hide = true)]
        codegen_only: bool,
        /// After updating OUT, apply the same change to process PID, which runs OUT: it is
        /// stopped, patched and resumed, keeping its state (see `zerolink run --watch`).
        /// A full build cannot be applied to a running process, hence not with --full.
        #[arg(long, value_name = "PID", conflicts_with_all = ["full", "codegen_only"])]
        hot: Option<i32>,
    },
    /// Write one object file per input file through cranelift-object (for `zerolink bench`).
    #[command(hide = true)]
    BenchObjects {
        #[command(flatten)]
        input: InputArgs,
        /// Directory for the objects.
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// Only the objects of these input files (an edit).
        #[arg(long, value_name = "FILE")]
        only: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        timings: Option<PathBuf>,
    },
    /// Generate a CLIF program (N functions over M files) for benchmarks and tests.
    Gen {
        /// Number of functions.
        #[arg(long, default_value_t = 1000)]
        functions: usize,
        /// Number of files (compilation units).
        #[arg(long, default_value_t = 10)]
        files: usize,
        /// Seed: the same seed gives the same program.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Call into libc (printf, labs); build without --freestanding then.
        #[arg(long)]
        libc: bool,
        /// Directory to write the files into.
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
    },
    /// Benchmarks (measurements, not pass/fail). Without a subcommand: `compare` with its
    /// defaults (under two minutes on two cores).
    Bench {
        #[command(subcommand)]
        command: Option<BenchCommand>,
    },
    /// Check an executable zerolink built, all of it (its table, code, data and debug
    /// information), against the checksums its table keeps, as `git fsck` checks a
    /// repository. Damage is listed with its place; `zerolink build --full` repairs it.
    Verify {
        /// The executable.
        file: PathBuf,
    },
    /// Show the symbol-resolution table inside an executable zerolink built.
    Inspect {
        /// The executable.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Build into a temporary file, run it, and exit with its exit status.
    Run {
        #[command(flatten)]
        input: InputArgs,
        /// Leave out debug information and unwind tables, which `run` includes by default.
        #[arg(long)]
        no_debug_info: bool,
        /// Keep running: on every change of an input file, rebuild and patch the running
        /// program in place (it keeps its state and does not restart).
        #[arg(long)]
        watch: bool,
        /// With --watch: when a change cannot be applied to the running program (see the
        /// refusals in the README), restart it with the new build instead of letting it run
        /// on with the old code. Its state is lost then.
        #[arg(long, requires = "watch")]
        restart: bool,
        /// Arguments for the program, after `--`.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Direct writing against writing `.o` files and linking them with GNU ld, gold, lld and
    /// mold, on generated programs of several sizes; full builds and the edit loop. Writes a
    /// table, JSON and an SVG plot.
    Compare(bench::CompareArgs),
    /// Parallel codegen: the codegen-only floor against a full build, with -j 1 and -j 2.
    Parallel {
        /// Program sizes, in functions.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        sizes: Vec<usize>,
        /// Thread counts to compare.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        jobs: Vec<usize>,
        /// Runs per measurement; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Precompiled code: a CLIF program pulling every member of a large static archive (a
    /// chain of C functions), direct against each linker, and one member changed.
    Archive {
        /// Archive sizes, in members.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
        members: Vec<usize>,
    },
    /// Position-independent against fixed-address executables: full build, updates and
    /// start-up time, per program size.
    Pie {
        /// Program sizes, in functions.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        sizes: Vec<usize>,
        /// Edits (updates) per size; the median is reported.
        #[arg(long, default_value_t = 5)]
        edits: usize,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Hot patching: from saving an edit to the running program executing the new code,
    /// patched in place (`build --hot`) against rebuilt and restarted, per program size.
    Hot {
        /// Program sizes, in functions.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        sizes: Vec<usize>,
        /// Edits per size; the median is reported.
        #[arg(long, default_value_t = 5)]
        edits: usize,
    },
    /// The edit loop: full build, then one-function edits updated in place, per program size.
    Edit {
        /// Program sizes, in functions.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        sizes: Vec<usize>,
        /// Edits (updates) per size; the median is reported.
        #[arg(long, default_value_t = 7)]
        edits: usize,
        /// Build with debug information (`-g`): measures what keeping it costs.
        #[arg(short = 'g', long)]
        debug_info: bool,
        /// The same edit loop through the library (`ZerolinkModule`, units of 1,000
        /// functions), as a compiler drives it.
        #[arg(long)]
        api: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Args)]
struct TargetArgs {
    /// Cranelift optimisation level.
    #[arg(short = 'O', long, default_value = "speed", value_parser = ["none", "speed", "speed_and_size"])]
    opt_level: String,
    /// A Cranelift setting, shared or ISA-specific: `has_avx=false`, `has_sse41`,
    /// `preserve_frame_pointers=true`, ... Repeatable.
    #[arg(long = "set", value_name = "NAME[=VALUE]")]
    settings: Vec<String>,
    /// Compile for the baseline x86-64 CPU instead of detecting this machine's features.
    #[arg(long)]
    baseline: bool,
    /// Keep a frame pointer in every function, leaf functions included, so profilers and
    /// debuggers can walk the stack without unwind tables (`-fno-omit-frame-pointer`).
    #[arg(long)]
    frame_pointers: bool,
}

impl TargetArgs {
    fn target(&self) -> TargetOptions {
        let mut settings = self.settings.clone();
        if self.frame_pointers {
            settings.push("preserve_frame_pointers=true".into());
        }
        TargetOptions {
            opt_level: self.opt_level.clone(),
            native_features: !self.baseline,
            settings,
        }
    }
}

#[derive(Args)]
struct InputArgs {
    /// CLIF files, and precompiled code: ELF relocatable objects (`cc -c` output) and `ar`
    /// archives of them (static libraries), recognised by content. Together they form one
    /// program whose entry is `main`. Archive members are taken as references need them,
    /// whatever the order.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    target: TargetArgs,
    /// Link with the library NAME: libNAME.so, else the static archive libNAME.a (`-l m` for
    /// libm; `-l :FILE` for that exact file name). Repeatable; the first library on the
    /// command line that exports a name provides it. libc is always linked (last), unless
    /// --freestanding, then libc_nonshared.a and libgcc.a as `cc` links them.
    #[arg(short = 'l', long = "library", value_name = "NAME")]
    libraries: Vec<String>,
    /// Search DIR for -l libraries, before the system's directories. Repeatable.
    #[arg(short = 'L', long = "library-path", value_name = "DIR")]
    search_dirs: Vec<PathBuf>,
    /// Where the executable looks for its shared libraries at run time, before the system's
    /// directories (`DT_RUNPATH`, as `ld -rpath DIR`). Repeatable.
    #[arg(long = "rpath", value_name = "DIR")]
    rpath: Vec<PathBuf>,
    /// `-l NAME` takes libNAME.a even where libNAME.so exists (as `ld -Bstatic`).
    #[arg(long = "static-libs")]
    static_libs: bool,
    /// A position-independent executable (`ET_DYN`): loaded at a random address each run
    /// (ASLR), as Debian's `cc` makes by default. With --freestanding: a static-pie, which
    /// relocates itself at start-up.
    #[arg(long)]
    pie: bool,
    /// Threads compiling functions (default: $ZEROLINK_JOBS, else every core). The executable
    /// is the same, byte for byte, whatever the number.
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// No progress bar.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// If another build of the same output is running, fail at once instead of waiting for it.
    #[arg(long)]
    no_wait: bool,
    /// Before updating OUT, check all of it (code and data included) against the checksums
    /// its table keeps, as `zerolink verify` does: any damage means a full build.
    #[arg(long)]
    verify: bool,
    /// Debug information: DWARF lines and functions (gdb can break at FILE.clif:LINE and step
    /// through CLIF lines) and unwind tables. Updates keep it current in place. On by
    /// default for `run`.
    #[arg(short = 'g', long = "debug-info")]
    debug_info: bool,
    /// No libc, no shared libraries: a static executable whose only way to the OS is
    /// zerolink's built-in functions (zl_write, zl_exit, ...; see docs/input.md).
    #[arg(long)]
    freestanding: bool,
    /// Use the separate path instead: cranelift-object writes a `.o`, then `cc` links it.
    /// For comparison only.
    #[arg(long)]
    separate: bool,
}

impl InputArgs {
    fn target(&self) -> TargetOptions {
        self.target.target()
    }

    /// `-j`, else `$ZEROLINK_JOBS`, else every core.
    fn jobs(&self) -> usize {
        self.jobs
            .or_else(|| std::env::var("ZEROLINK_JOBS").ok()?.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    fn link(&self) -> zerolink_backend::LinkOptions {
        zerolink_backend::LinkOptions {
            freestanding: self.freestanding,
            libraries: self.libraries.clone(),
            search_dirs: self.search_dirs.clone(),
            rpath: self.rpath.clone(),
            prefer_static: self.static_libs,
            pie: self.pie,
        }
    }
}

fn main() -> ExitCode {
    // Panics inside code generation are caught and reported as errors naming the function;
    // the hook's message and backtrace would only repeat them. Anything else says where.
    std::panic::set_hook(Box::new(|info| {
        if !zerolink_backend::driver::panics_are_caught() {
            eprintln!("zerolink: internal error: {info}");
        }
    }));
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Build {
            input,
            output,
            stats,
            full,
            timings,
            codegen_only,
            hot,
        } => {
            if let Some(pid) = hot {
                hot::build_hot(&input, &output, pid, stats)?;
                return Ok(ExitCode::SUCCESS);
            }
            if codegen_only {
                let program = Program::read(&input.files)?;
                driver::codegen_only(&program, &input.target(), &input.link(), input.jobs())?;
                return Ok(ExitCode::SUCCESS);
            }
            build(&input, &output, stats, full, timings.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchObjects {
            input,
            output,
            only,
            timings,
        } => {
            let t = Instant::now();
            let program = Program::read(&input.files)?;
            let read = t.elapsed();
            std::fs::create_dir_all(&output)?;
            let only: Vec<usize> = only
                .iter()
                .filter_map(|o| input.files.iter().position(|f| f == o))
                .collect();
            let (_, times) = zerolink_backend::reference::objects(
                &program,
                &input.target(),
                &output,
                (!only.is_empty()).then_some(&only[..]),
                input.jobs(),
            )?;
            if let Some(path) = timings {
                write_timings(
                    &path,
                    read + times.parse,
                    times.codegen,
                    times.write,
                    t.elapsed(),
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gen {
            functions,
            files,
            seed,
            libc,
            output,
        } => {
            if functions == 0 || files == 0 || files > functions {
                anyhow::bail!("need at least one function per file (got {functions} over {files})");
            }
            let paths = gen::generate(&gen::GenOptions {
                functions,
                files,
                seed,
                libc,
            })
            .write(&output)?;
            eprintln!("wrote {} files to {}", paths.len(), output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            command:
                Some(BenchCommand::Edit {
                    sizes,
                    edits,
                    debug_info,
                    api,
                    target,
                }),
        } => {
            if api {
                bench_api::edit_loop(&sizes, edits.max(1), &target.target())?;
                return Ok(ExitCode::SUCCESS);
            }
            bench::edit_loop(&sizes, edits.max(1), debug_info, &target.target())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            command: Some(BenchCommand::Hot { sizes, edits }),
        } => {
            bench_hot::hot(&sizes, edits.max(1))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            command:
                Some(BenchCommand::Pie {
                    sizes,
                    edits,
                    target,
                }),
        } => {
            bench_pie::pie(&sizes, edits.max(1), &target.target())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            command: Some(BenchCommand::Archive { members }),
        } => {
            bench_archive::archive(&members)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            command: Some(BenchCommand::Parallel { sizes, jobs, runs }),
        } => {
            bench::parallel(&sizes, &jobs, runs.max(1))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            command: Some(BenchCommand::Compare(args)),
        } => {
            bench::compare(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { command: None } => {
            bench::compare(&bench::CompareArgs::default())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { file } => {
            let image = match zerolink_image::Image::open(&file, None) {
                Ok(image) => image,
                Err(zerolink_image::OpenError::Missing) => {
                    anyhow::bail!("{} does not exist", file.display())
                }
                Err(zerolink_image::OpenError::Incompatible(why)) => {
                    anyhow::bail!("{} cannot be verified: {why}", file.display())
                }
            };
            let problems = image.verify();
            if problems.is_empty() {
                println!(
                    "{}: sound ({} pieces of table, code, data and debug information checked)",
                    file.display(),
                    image.verify_pages()
                );
                return Ok(ExitCode::SUCCESS);
            }
            for p in &problems {
                eprintln!("{}: {p}", file.display());
            }
            eprintln!(
                "{}: damaged in {} place(s); `zerolink build --full` rebuilds it",
                file.display(),
                problems.len()
            );
            Ok(ExitCode::FAILURE)
        }
        Command::Inspect { file, json } => {
            inspect::run(&file, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            mut input,
            no_debug_info,
            watch,
            restart,
            args,
        } => {
            // Unwind tables let the program unwind through its own frames (libgcc backtraces,
            // exceptions thrown across it); they cost about 2% of a build.
            input.debug_info = !no_debug_info;
            if watch {
                return hot::watch(&input, &args, restart);
            }
            let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
            let exe = dir.path().join(
                input.files[0]
                    .file_stem()
                    .unwrap_or(std::ffi::OsStr::new("a.out")),
            );
            build(&input, &exe, false, true, None)?;
            let status = std::process::Command::new(&exe)
                .args(&args)
                .status()
                .with_context(|| format!("cannot run {}", exe.display()))?;
            Ok(exit_code(status))
        }
    }
}

fn build(
    input: &InputArgs,
    output: &Path,
    stats: bool,
    full: bool,
    timings: Option<&Path>,
) -> Result<()> {
    build_live(input, output, stats, full, timings, None, false).map(|_| ())
}

/// A build; with `live`, an update that a running process will take too (see `hot.rs`).
/// `None` for the separate path, which reports nothing.
fn build_live(
    input: &InputArgs,
    output: &Path,
    stats: bool,
    full: bool,
    timings: Option<&Path>,
    live: Option<&zerolink_image::live::LiveOptions>,
    lock_held: bool,
) -> Result<Option<driver::Report>> {
    let t0 = Instant::now();
    let target = input.target();
    if input.separate {
        let (clif, objects) = zerolink_backend::objects::classify(&input.files)?;
        let program = Program::read(&clif)?;
        zerolink_backend::reference::build(&program, &objects, &target, &input.link(), output)?;
        return Ok(None);
    }
    let progress = Progress::new(input.quiet);
    let report_progress = |done: usize, total: usize| progress.update(done, total);
    let waiting = || {
        eprintln!(
            "zerolink: waiting for another build of {} to finish",
            output.display()
        )
    };
    let opts = driver::BuildOptions {
        force_full: full,
        jobs: input.jobs(),
        progress: Some(&report_progress),
        debug_info: input.debug_info,
        lock: if lock_held {
            zerolink_image::lock::LockWait::Held
        } else if input.no_wait {
            zerolink_image::lock::LockWait::Fail
        } else {
            zerolink_image::lock::LockWait::Wait
        },
        waiting: Some(&waiting),
        verify: input.verify,
        live,
    };
    let result = driver::build(&input.files, &target, &input.link(), output, &opts);
    progress.finish();
    let report = match result {
        Ok(report) => report,
        Err(BackendError::Image(ImageError::Undefined(list))) => {
            // An update read only the files that changed; errors pay for reading them all,
            // to name the place of every referrer.
            let program = Program::read(&input.files).ok();
            return Err(anyhow::anyhow!(describe_undefined(program.as_ref(), &list)));
        }
        Err(e) => return Err(e.into()),
    };
    if let Mode::Full {
        reason: Some(reason),
    } = &report.mode
    {
        if !full {
            eprintln!("zerolink: full build of {}: {reason}", output.display());
        }
    }
    if stats {
        print_stats(&report);
    }
    if let Some(path) = timings {
        let t = &report.timings;
        let read = report.phase("read and hash inputs");
        write_timings(path, read + t.parse, t.codegen, t.write, t0.elapsed())?;
    }
    Ok(Some(report))
}

/// A progress bar on stderr for builds that take more than a second, on a terminal only.
struct Progress {
    enabled: bool,
    start: Instant,
    bar: std::cell::RefCell<Option<indicatif::ProgressBar>>,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        use std::io::IsTerminal;
        Progress {
            enabled: !quiet && std::io::stderr().is_terminal(),
            start: Instant::now(),
            bar: std::cell::RefCell::new(None),
        }
    }

    fn update(&self, done: usize, total: usize) {
        if !self.enabled || self.start.elapsed() < Duration::from_secs(1) {
            return;
        }
        let mut bar = self.bar.borrow_mut();
        let bar = bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} functions",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        });
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

/// Phase times for `zerolink bench`, in milliseconds.
fn write_timings(
    path: &Path,
    parse: Duration,
    codegen: Duration,
    write: Duration,
    total: Duration,
) -> Result<()> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let json = serde_json::json!({
        "parse": ms(parse),
        "codegen": ms(codegen),
        "write": ms(write),
        "total": ms(total),
    });
    std::fs::write(path, json.to_string())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn print_stats(report: &driver::Report) {
    let s = &report.summary;
    let mode = match &report.mode {
        Mode::Full { .. } => "full build",
        Mode::Update => "in-place update",
    };
    eprintln!("{mode}, generation {}", s.generation);
    eprintln!(
        "  compiled {}, reused {}, in place {}, moved {}, removed {}",
        report.compiled, report.reused, s.in_place, s.moved, s.removed
    );
    eprintln!(
        "  sites patched {}, bytes written {}, table {} bytes, file {} bytes",
        s.sites_patched, s.bytes_written, s.table_bytes, s.file_size
    );
    eprintln!(
        "  {} functions, {} data objects, {} sites, {} GOT entries",
        s.functions, s.data_objects, s.sites, s.got_entries
    );
    eprintln!(
        "  input files read {} of {} (the others unchanged by their stat data)",
        report.read_files, report.files
    );
    for &(name, d) in &report.phases {
        eprintln!("  {:<22} {:>9.3} ms", name, d.as_secs_f64() * 1e3);
    }
}

/// One paragraph per undefined symbol, with the place of every function that refers to it.
fn describe_undefined(program: Option<&Program>, list: &[zerolink_image::Undefined]) -> String {
    let mut out = String::new();
    for (i, u) in list.iter().enumerate() {
        if i > 0 {
            out.push_str("\nerror: ");
        }
        out.push_str(&format!("undefined symbol `{}`", u.name));
        for r in &u.referenced_by {
            match program.and_then(|p| p.locate(r)) {
                Some(pos) => out.push_str(&format!("\n  referenced by `{r}` at {pos}")),
                None => out.push_str(&format!("\n  referenced by `{r}`")),
            }
        }
    }
    out
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(sig)) => ExitCode::from(128u8.wrapping_add(sig as u8)),
        _ => ExitCode::from(1),
    }
}
