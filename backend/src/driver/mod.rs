//! Building a CLIF program straight into an executable: in full, or as an in-place update of
//! the executable a previous build left at OUT.
//!
//! An update is a script of passes:
//! 1. open OUT's table (any reason it cannot be used means a full build, said in one line);
//! 2. compare each input function's and data object's hash with the table, by name;
//! 3. remove what is gone, then compile and write what is new or changed (in its old slot if
//!    it fits, else in a new one, re-patching what refers to it);
//! 4. if a function's signature changed, recompile its callers too, so the signature check of
//!    a full build happens here as well;
//! 5. `finish`: built-ins, undefined symbols, tables, and the commit.
//!
//! Everything up to the commit happens against an overlay: any error leaves OUT untouched.
//! Names resolve straight to image symbols (no `ModuleDeclarations`), so an update never
//! touches the declarations of the functions it does not compile.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{self, ExternalName};
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::{Context, FinalizedRelocTarget};
use zerolink_image::lock::{BuildLock, LockWait};
use zerolink_image::sites::Place;
use zerolink_image::symbols::SymbolTable;
use zerolink_image::{
    Binding, Contents, Image, OpenError, RefKind, Reference, Summary, SymbolId, SymbolKind,
};

use crate::clif::{
    is_builtin, rewrite_names, signature_hash, signature_mismatch, DataDef, DataInit, Definition,
    FunctionDef, Names, Program,
};
use crate::error::{BackendError, Result, SourcePos};
use crate::inputs::{self, FileRecord, Manifest};
use crate::libs::{Libraries, LinkOptions};
use crate::relocs::ref_kind;
use crate::target::TargetOptions;

mod compile;
mod debug_units;
mod diff;
mod place;

pub use compile::panics_are_caught;
use compile::{compile_batch, BATCH_PER_JOB};
use diff::{diff, manifest, Diff, DiffError};
use place::Builder;

/// How a build went.
#[derive(Debug)]
pub enum Mode {
    /// A full build; with the reason when an existing OUT could not be updated.
    Full { reason: Option<String> },
    /// OUT was updated in place.
    Update,
}

#[derive(Debug)]
pub struct Report {
    pub mode: Mode,
    pub summary: Summary,
    /// Functions and data objects compiled or encoded in this build.
    pub compiled: usize,
    /// Functions and data objects left as they were.
    pub reused: usize,
    pub phases: Vec<(&'static str, Duration)>,
    /// Parsing and code generation inside "compile and write" (the rest is writing).
    pub timings: crate::clif::Timings,
    /// Input files read (the others were unchanged, by their stat data), and all of them.
    pub read_files: usize,
    pub files: usize,
}

impl Report {
    /// How long the phase called `name` took (zero if it did not run).
    pub fn phase(&self, name: &str) -> Duration {
        self.phases
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, d)| *d)
            .sum()
    }
}

/// The settings an executable records: an update requires the very same.
pub fn settings_of(isa: &dyn TargetIsa) -> String {
    let mut flags: Vec<String> = isa
        .flags()
        .iter()
        .chain(isa.isa_flags())
        .map(|v| v.to_string())
        .collect();
    flags.sort();
    format!(
        "zerolink {}; {}; {}",
        env!("CARGO_PKG_VERSION"),
        isa.triple(),
        flags.join(" ")
    )
}

/// How to run a build.
#[derive(Clone, Copy)]
pub struct BuildOptions<'a> {
    /// Rebuild in full even if OUT could be updated.
    pub force_full: bool,
    /// Threads compiling functions (the output is the same whatever the number).
    pub jobs: usize,
    /// Called with (functions done, functions to do) as the build goes.
    pub progress: Option<&'a dyn Fn(usize, usize)>,
    /// DWARF line and function information and unwind tables (`-g`).
    pub debug_info: bool,
    /// When another build of the same OUT is running: wait for it, or fail at once.
    pub lock: LockWait,
    /// Called once if the build has to wait for another one.
    pub waiting: Option<&'a dyn Fn()>,
}

impl Default for BuildOptions<'_> {
    fn default() -> Self {
        BuildOptions {
            force_full: false,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: None,
            debug_info: false,
            lock: LockWait::Wait,
            waiting: None,
        }
    }
}

/// Build the CLIF files `paths` into `out`: update it in place when possible (unless
/// `force_full`), reading only the files that changed since the build that left it there.
pub fn build(
    paths: &[PathBuf],
    target: &TargetOptions,
    link: &LinkOptions,
    out: &Path,
    opts: &BuildOptions<'_>,
) -> Result<Report> {
    // One build per OUT at a time, from before it is opened until after the commit.
    let _lock = BuildLock::acquire(out, opts.lock, opts.waiting.unwrap_or(&|| {}))?;
    // Before any input is examined: files stamped from now on are racily clean next time.
    let started_ns = inputs::coarse_now_ns();
    let stats = inputs::stat_all(paths)?;
    let isa = target.isa()?;
    let libs = Arc::new(Libraries::load(link)?);
    let settings = format!(
        "{}; {}{}",
        settings_of(&*isa),
        if link.freestanding {
            "freestanding".to_string()
        } else {
            format!("libraries: {}", libs.describe())
        },
        if opts.debug_info { "; debug info" } else { "" }
    );
    let env = Env {
        isa: &*isa,
        settings: &settings,
        libs: if link.freestanding { None } else { Some(libs) },
        libcall_names: cranelift_module::default_libcall_names(),
        debug_info: opts.debug_info,
        started_ns,
    };
    let full = |reason: Option<String>| {
        let t = Instant::now();
        let units: Vec<u32> = (0..paths.len() as u32).collect();
        let program = Program::read_some(paths, &stats, &units, &vec![None; paths.len()])?;
        let read = t.elapsed();
        let mut report = full_build(&program, &env, opts, out, reason)?;
        report.phases.insert(0, ("read and hash inputs", read));
        Ok(report)
    };
    if opts.force_full {
        return full(Some("--full was given".into()));
    }
    // Units whose files an update must read although they did not change: the callers of a
    // function whose signature changed.
    let mut also_read: HashSet<u32> = HashSet::new();
    loop {
        let t = Instant::now();
        let image = match Image::open(out, Some(&settings)) {
            Ok(image) => image,
            Err(OpenError::Missing) => return full(None),
            Err(OpenError::Incompatible(reason)) => return full(Some(reason)),
        };
        if let Some(reason) = fragmented(&image) {
            return full(Some(reason));
        }
        if opts.debug_info {
            if let Err(reason) = previous_debug(&image) {
                return full(Some(reason));
            }
        }
        let Some(manifest) = Manifest::decode(image.manifest()) else {
            return full(Some("its record of the input files is unreadable".into()));
        };
        let opened = t.elapsed();
        let t = Instant::now();
        // Without a time, no file is clean: all are read, none is wrongly kept.
        let written = inputs::written_ns(out).unwrap_or(i64::MIN);
        let plan = inputs::plan(paths, &stats, &manifest, written, &|u| {
            also_read.contains(&u)
        });
        let program = Program::read_some(paths, &stats, &plan.units, &plan.kept)?;
        let read = t.elapsed();
        let t = Instant::now();
        let d = match diff(&program, &image, &manifest) {
            Ok(d) => d,
            Err(DiffError::Full(reason)) => return full(Some(reason)),
            Err(DiffError::Input(e)) => return Err(e),
        };
        let diff_time = t.elapsed();
        // An update writes nothing before it commits, so one that cannot go on leaves OUT as
        // it was: for a full build, or for another try that reads more files.
        match update(&program, &env, opts, image, d) {
            Ok(Updated::Done(mut report)) => {
                report.phases.splice(
                    0..0,
                    [
                        ("read and hash inputs", read),
                        ("open table", opened),
                        ("diff", diff_time),
                    ],
                );
                report.read_files = program.files.iter().filter(|f| f.loaded).count();
                return Ok(*report);
            }
            Ok(Updated::Read(units)) => {
                let before = also_read.len();
                also_read.extend(units);
                if also_read.len() == before {
                    // Cannot happen: the units asked for were read. Never loop for it.
                    return full(Some("an update could not find the callers it needs".into()));
                }
            }
            Err(BackendError::PreviousDebugInfo(reason)) => return full(Some(reason)),
            Err(e) => return Err(e),
        }
    }
}

/// The floor of a build, for benchmarks: parse and compile every function on `jobs` threads,
/// exactly as a build does, and write nothing.
pub fn codegen_only(
    program: &Program,
    target: &TargetOptions,
    link: &LinkOptions,
    jobs: usize,
) -> Result<()> {
    let isa = target.isa()?;
    let libs = Arc::new(Libraries::load(link)?);
    let env = Env {
        isa: &*isa,
        settings: "",
        libs: if link.freestanding { None } else { Some(libs) },
        libcall_names: cranelift_module::default_libcall_names(),
        debug_info: false,
        started_ns: 0,
    };
    let all: Vec<usize> = (0..program.functions.len()).collect();
    for batch in all.chunks(BATCH_PER_JOB * jobs.max(1)) {
        for r in compile_batch(program, &env, None, batch, jobs.max(1)) {
            r?;
        }
    }
    Ok(())
}

/// What every pass of a build needs.
struct Env<'a> {
    isa: &'a dyn TargetIsa,
    settings: &'a str,
    /// Shared libraries; `None` when freestanding.
    libs: Option<Arc<Libraries>>,
    libcall_names: Box<dyn Fn(ir::LibCall) -> String + Send + Sync>,
    /// Carry CLIF line numbers through code generation for DWARF.
    debug_info: bool,
    /// When the build started, on the clock files are stamped with (see `inputs.rs`).
    started_ns: i64,
}

impl Env<'_> {
    /// Hand the image the libraries and a resolver over them (nothing when freestanding).
    fn link(&self, image: &mut Image) {
        if let Some(libs) = &self.libs {
            let resolver = Arc::clone(libs);
            image.link_dynamically(
                libs.sonames(),
                Box::new(move |name| resolver.resolve(name).map(|(i, _)| i as u32)),
            );
        }
    }

    /// A name the program does not define that the image provides itself (a built-in no
    /// shared library exports): reached directly, not through the GOT.
    fn builtin_in_image(&self, name: &str) -> bool {
        self.import(name).is_none() && is_builtin(name)
    }

    fn import(&self, name: &str) -> Option<bool> {
        self.libs
            .as_ref()
            .and_then(|l| l.resolve(name))
            .map(|(_, data)| data)
    }
}

fn full_build<'a>(
    program: &'a Program,
    env: &'a Env<'a>,
    opts: &BuildOptions<'a>,
    out: &Path,
    reason: Option<String>,
) -> Result<Report> {
    let t = Instant::now();
    let mut image = Image::create(out)?;
    image.set_settings(env.settings);
    image.expect_code_bytes(program.code_size_estimate());
    env.link(&mut image);
    let mut b = Builder::new(program, env, image, opts);
    for d in &program.data {
        b.data(d)?;
    }
    let all: Vec<usize> = (0..program.functions.len()).collect();
    b.total = all.len();
    b.functions(&all)?;
    let compile_time = t.elapsed();
    let mut report = b.finish(Mode::Full { reason })?;
    report.phases.insert(0, ("compile and write", compile_time));
    Ok(report)
}

/// Free space below the high-water mark that a full build would reclaim: more than half of what
/// a region uses, and at least 1 MiB (small programs are not worth a rebuild). The floor can be
/// lowered for tests with `ZEROLINK_TEST_FRAGMENTATION_MIN`.
fn fragmented(image: &Image) -> Option<String> {
    let floor = std::env::var("ZEROLINK_TEST_FRAGMENTATION_MIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1u64 << 20);
    image.regions().iter().find_map(|r| {
        let free = r.free_bytes();
        (free >= floor && free > r.used / 2).then(|| {
            format!(
                "free space is too fragmented ({} of the {} bytes of {} are free)",
                free,
                r.used,
                r.kind.name()
            )
        })
    })
}

/// The previous build's debug information, which an update with `-g` builds on.
fn previous_debug(image: &Image) -> std::result::Result<crate::debug::Previous<'_>, String> {
    crate::debug::Previous::read(image.extras_index(), |name| image.old_extra_section(name))
}

/// How an update ended without an error.
enum Updated {
    Done(Box<Report>),
    /// The update needs files it did not read (by unit): the callers of a function whose
    /// signature changed. Nothing was written; the caller reads them and tries again.
    Read(Vec<u32>),
}

fn update<'a>(
    program: &'a Program,
    env: &'a Env<'a>,
    opts: &BuildOptions<'a>,
    mut image: Image,
    diff: Diff<'_>,
) -> Result<Updated> {
    // Gone from the input: free the slot. Redefined by the program where a built-in was: the
    // program's definition replaces it.
    // Nothing changed, and every file's record is as it was: there is nothing to write, so
    // OUT is left alone (not even opened for writing).
    if diff.gone.is_empty()
        && diff.functions.is_empty()
        && diff.data.is_empty()
        && diff.relabel.is_empty()
        && manifest(program, env.started_ns).encode() == image.manifest()
    {
        return Ok(Updated::Done(Box::new(Report {
            mode: Mode::Update,
            summary: image.unchanged(),
            compiled: 0,
            reused: program.definitions(),
            phases: vec![
                ("compile and write", Duration::ZERO),
                ("finish", Duration::ZERO),
            ],
            timings: crate::clif::Timings::default(),
            read_files: 0,
            files: program.files.len(),
        })));
    }
    for id in diff.gone {
        image.remove(id);
    }
    for (id, unit) in diff.relabel {
        image.set_unit(id, Some(unit));
    }
    let t = Instant::now();
    env.link(&mut image);
    let mut b = Builder::new(program, env, image, opts);
    for d in diff.data {
        b.data(d)?;
    }
    // Rounds: the changed functions, then the callers of those whose signature changed.
    let mut round = diff.functions;
    let mut done: HashSet<usize> = HashSet::new();
    b.total = round.len();
    while !round.is_empty() {
        round.sort_unstable();
        round.dedup();
        round.retain(|i| done.insert(*i));
        let callers = b.functions(&round)?;
        if !b.unread_callers.is_empty() {
            return Ok(Updated::Read(b.unread_callers.into_iter().collect()));
        }
        round = callers.into_iter().filter(|c| !done.contains(c)).collect();
        b.total += round.len();
    }
    let compile_time = t.elapsed();
    let mut report = b.finish(Mode::Update)?;
    report.phases.insert(0, ("compile and write", compile_time));
    Ok(Updated::Done(Box::new(report)))
}
