//! Building CLIF files through a [`Session`]: in full, or as an in-place update of the
//! executable a previous build left at OUT that reads only the files that changed.
//!
//! An update is a script of passes:
//! 1. open a session on OUT (any reason it cannot be updated means a full build, said in one
//!    line);
//! 2. keep every file whose stat data is as recorded, without opening it; read the others;
//! 3. name each file read to the session as a unit with its digest, and check each of its
//!    definitions' hashes (`diff.rs`); the session removes what is gone;
//! 4. compile what is new or changed on worker threads (`compile.rs`) and place it in input
//!    order (`place.rs`); if a function's signature changed, recompile its callers too, so the
//!    signature check of a full build happens here as well;
//! 5. `finish`: the session checks the calls, writes debug info and the tables, and commits.
//!
//! Everything up to the commit happens against an overlay: any error leaves OUT untouched.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{self, ExternalName};
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::{Context, FinalizedRelocTarget};
use zerolink_image::lock::LockWait;
use zerolink_image::symbols::SymbolTable;
use zerolink_image::{Binding, Contents, RefKind, Reference, SymbolId, SymbolKind};

use crate::clif::{
    is_builtin, rewrite_names, signature_hash, signature_mismatch, DataDef, DataInit, Definition,
    FunctionDef, Names, Program,
};
use crate::error::{BackendError, Result, SourcePos};
use crate::inputs::{self, FileRecord};
use crate::libs::{Libraries, LinkOptions};
use crate::objects::{Origin, Precompiled, PrecompiledInput};
use crate::relocs::ref_kind;
use crate::session::{FullReason, Session, SessionOptions, UnitId};
use crate::target::TargetOptions;

mod compile;
mod diff;
mod place;

pub use crate::session::{settings_of, Mode, Report};
pub use compile::panics_are_caught;
use compile::{compile_batch, BATCH_PER_JOB};
use diff::{diff, Diff};
use place::Builder;

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
    /// Check all of OUT against its checksums before updating it (`--verify`).
    pub verify: bool,
    /// A running process will be patched after the update (see `crate::hot`).
    pub live: Option<&'a zerolink_image::live::LiveOptions>,
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
            verify: false,
            live: None,
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
    let t = Instant::now();
    // Objects and archives are told from CLIF by content; the toolchain's archives follow.
    let (clif, objects) = crate::objects::classify(paths)?;
    let mut pre_inputs: Vec<PrecompiledInput> = objects
        .into_iter()
        .map(|path| PrecompiledInput {
            path,
            origin: Origin::User,
        })
        .collect();
    pre_inputs.extend(crate::libs::archives(link)?);
    let pre = Precompiled::new(pre_inputs);
    let paths = &clif[..];
    let session_opts = SessionOptions {
        force_full: opts.force_full,
        debug_info: opts.debug_info,
        link: link.clone(),
        lock: opts.lock,
        waiting: opts.waiting,
        jobs: opts.jobs,
        verify: opts.verify,
        live: opts.live,
        ..SessionOptions::default()
    };
    let mut session = Session::open(out, target.isa()?, &session_opts)?;
    // After the session started its clock: files stamped from now on are racily clean.
    let stats = inputs::stat_all(paths)?;
    let opened = t.elapsed();
    // Units whose files an update must read although they did not change: the callers of a
    // function whose signature changed.
    let mut also_read: HashSet<u32> = HashSet::new();
    loop {
        if !session.is_update() {
            return full_build(session, paths, &stats, &pre, opts);
        }
        let t = Instant::now();
        let units: Vec<UnitId> = paths
            .iter()
            .map(|p| session.unit(p.as_os_str().as_encoded_bytes()))
            .collect();
        // Without a time, no file is clean: all are read, none is wrongly kept.
        let written = inputs::written_ns(out).unwrap_or(i64::MIN);
        let mut kept: Vec<Option<FileRecord>> = Vec::with_capacity(paths.len());
        for (&u, stat) in units.iter().zip(&stats) {
            let record = session
                .previous_unit(u)
                .copied()
                .filter(|r| inputs::clean(r, stat, written) && !also_read.contains(&r.unit));
            if record.is_some() {
                session.keep_unit(u, *stat)?;
            }
            kept.push(record);
        }
        // Precompiled inputs are kept whole, or the build is a full one.
        let claimed = match pre.claim(&mut session)? {
            Ok(c) => c,
            Err(reason) => {
                session = session.rebuild_in_full(reason)?;
                continue;
            }
        };
        let numbers: Vec<u32> = units.iter().map(|&u| session.unit_number(u)).collect();
        let program = Program::read_some(paths, &stats, &numbers, &kept)?;
        let read = t.elapsed();
        let t = Instant::now();
        let d = diff(&program, &mut session, &units);
        // Whatever the comparison decided from a damaged page of the table is void.
        if let Some(reason) = session.damage() {
            session = session.rebuild_in_full(reason)?;
            continue;
        }
        let d = match d {
            Ok(d) => d,
            Err(BackendError::NeedsFullBuild(reason)) => {
                session = session.rebuild_in_full(reason)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        session.sweep();
        let diff_time = t.elapsed();
        // An update writes nothing before it commits, so one that cannot go on leaves OUT as
        // it was: for a full build, or for another try that reads more files.
        let pre = PreLink { pre: &pre, claimed };
        let updated = match update(&program, session, &units, pre, opts, d) {
            Err(BackendError::NeedsFullBuild(reason)) => {
                // The session is gone (it failed while finishing): start over in full.
                session = Session::open_full(out, target.isa()?, &session_opts, reason)?;
                continue;
            }
            other => other?,
        };
        match updated {
            Updated::Done(mut report) => {
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
            Updated::Read(more, s) => {
                let before = also_read.len();
                also_read.extend(more);
                session = if also_read.len() == before {
                    // Cannot happen: the units asked for were read. Never loop for it.
                    s.rebuild_in_full(FullReason::CallersMissing)?
                } else {
                    s.reopen()?
                };
            }
            Updated::Full(reason, s) => session = s.rebuild_in_full(reason)?,
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
        libs: if link.freestanding { None } else { Some(libs) },
        libcall_names: cranelift_module::default_libcall_names(),
        debug_info: false,
    };
    let all: Vec<usize> = (0..program.functions.len()).collect();
    for batch in all.chunks(BATCH_PER_JOB * jobs.max(1)) {
        for r in compile_batch(program, &env, None, batch, jobs.max(1)) {
            r?;
        }
    }
    Ok(())
}

/// What the compile workers need: nothing of the session, which placement owns meanwhile.
struct Env<'a> {
    isa: &'a dyn TargetIsa,
    /// Shared libraries; `None` when freestanding.
    libs: Option<Arc<Libraries>>,
    libcall_names: Box<dyn Fn(ir::LibCall) -> String + Send + Sync>,
    /// Carry CLIF line numbers through code generation for DWARF.
    debug_info: bool,
}

impl Env<'_> {
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

/// The precompiled inputs of a build, claimed as units.
pub(super) struct PreLink<'a> {
    pub(super) pre: &'a Precompiled,
    pub(super) claimed: crate::objects::Claimed,
}

fn full_build(
    mut session: Session,
    paths: &[PathBuf],
    stats: &[inputs::FileStat],
    pre: &Precompiled,
    opts: &BuildOptions<'_>,
) -> Result<Report> {
    let t = Instant::now();
    let units: Vec<UnitId> = paths
        .iter()
        .map(|p| session.unit(p.as_os_str().as_encoded_bytes()))
        .collect();
    let Ok(claimed) = pre.claim(&mut session)? else {
        unreachable!("a full build keeps nothing, so it has no reason to be one");
    };
    let pre = PreLink { pre, claimed };
    let numbers: Vec<u32> = units.iter().map(|&u| session.unit_number(u)).collect();
    let program = Program::read_some(paths, stats, &numbers, &vec![None; paths.len()])?;
    for (file, &u) in program.files.iter().zip(&units) {
        session.set_unit_contents(u, Some(file.digest), file.stat)?;
    }
    let read = t.elapsed();
    let t = Instant::now();
    session.expect_code_bytes(program.code_size_estimate());
    let isa = session.isa().clone();
    let env = Env::of(&session, &isa);
    let mut b = Builder::new(&program, &env, session, &units, pre, opts);
    b.declare_all()?;
    for d in &program.data {
        b.data(d)?;
    }
    let all: Vec<usize> = (0..program.functions.len()).collect();
    b.total = all.len();
    b.functions(&all)?;
    let compile_time = t.elapsed();
    let Updated::Done(mut report) = b.finish()? else {
        return Err(BackendError::Module(
            "a full build cannot fall back to a full build".into(),
        ));
    };
    report.phases.splice(
        0..0,
        [
            ("read and hash inputs", read),
            ("compile and write", compile_time),
        ],
    );
    Ok(*report)
}

impl<'a> Env<'a> {
    fn of(session: &Session, isa: &'a cranelift_codegen::isa::OwnedTargetIsa) -> Env<'a> {
        Env {
            isa: &**isa,
            libs: session.libraries().cloned(),
            libcall_names: cranelift_module::default_libcall_names(),
            debug_info: session.debug_info(),
        }
    }
}

/// How an update ended without an error.
enum Updated {
    Done(Box<Report>),
    /// The update needs files it did not read (by unit): the callers of a function whose
    /// signature changed. Nothing was written; the caller reads them and tries again.
    Read(Vec<u32>, Session),
    /// The update cannot be done; a full build can.
    Full(FullReason, Session),
}

fn update(
    program: &Program,
    session: Session,
    units: &[UnitId],
    pre: PreLink<'_>,
    opts: &BuildOptions<'_>,
    diff: Diff<'_>,
) -> Result<Updated> {
    let t = Instant::now();
    // Nothing changed, and every file's record is as it was: there is nothing to write, so
    // OUT is left alone (not even opened for writing).
    if diff.functions.is_empty() && diff.data.is_empty() && session.nothing_changed() {
        let mut report = session.finish(&mut |_| Vec::new())?;
        report
            .phases
            .insert(0, ("compile and write", Duration::ZERO));
        report.reused = program.definitions();
        report.files = program.files.len();
        return Ok(Updated::Done(Box::new(report)));
    }
    let isa = session.isa().clone();
    let env = Env::of(&session, &isa);
    let mut b = Builder::new(program, &env, session, units, pre, opts);
    let placed = (|| -> Result<bool> {
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
                return Ok(false);
            }
            round = callers.into_iter().filter(|c| !done.contains(c)).collect();
            b.total += round.len();
        }
        Ok(true)
    })();
    // An error decided from a damaged page of the table is not the program's fault.
    if let Some(reason) = b.session.damage() {
        return Ok(Updated::Full(reason, b.into_session()));
    }
    if !placed? {
        let more = b.unread_callers.iter().copied().collect();
        return Ok(Updated::Read(more, b.into_session()));
    }
    let compile_time = t.elapsed();
    let mut finished = b.finish()?;
    if let Updated::Done(report) = &mut finished {
        report.phases.insert(0, ("compile and write", compile_time));
    }
    Ok(finished)
}
