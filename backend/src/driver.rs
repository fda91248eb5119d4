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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{self, ExternalName};
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::{Context, FinalizedRelocTarget};
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
}

impl Default for BuildOptions<'_> {
    fn default() -> Self {
        BuildOptions {
            force_full: false,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: None,
            debug_info: false,
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

/// What an update must do: the result of comparing every input with the table.
struct Diff<'p> {
    gone: Vec<SymbolId>,
    functions: Vec<usize>,
    data: Vec<&'p DataDef>,
    /// Unchanged definitions found in another file than last time: (symbol, its unit now).
    relabel: Vec<(SymbolId, u32)>,
}

enum DiffError {
    /// The update cannot be done; a full build can (the reason says why).
    Full(String),
    /// The input is wrong (a name defined twice, one of them in a file that was not read).
    Input(BackendError),
}

/// One pass over the files that were read: each of their names is looked up once. What the
/// files that were not read define is in the table, untouched.
///
/// Whether something is *gone* is decided from counts: the definitions the read files' units
/// had last time (from the manifest) against those found again. Only when they differ is the
/// table scanned to find what is gone.
fn diff<'p>(
    program: &'p Program,
    image: &Image,
    manifest: &Manifest,
) -> std::result::Result<Diff<'p>, DiffError> {
    let symbols = image.symbols();
    let unread: HashMap<u32, usize> = program
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.loaded)
        .map(|(i, f)| (f.unit, i))
        .collect();
    // Units whose previous definitions are looked at again: the files that were read, and
    // those that are no longer inputs.
    let revisited: HashSet<u32> = manifest
        .files
        .iter()
        .map(|r| r.unit)
        .filter(|u| !unread.contains_key(u))
        .collect();
    let expected: usize = manifest
        .files
        .iter()
        .filter(|r| revisited.contains(&r.unit))
        .map(|r| r.definitions as usize)
        .sum();
    let old = manifest.by_path();
    let mut found = 0usize;
    let mut diff = Diff {
        gone: Vec::new(),
        functions: Vec::new(),
        data: Vec::new(),
        relabel: Vec::new(),
    };
    for file in program.files.iter().filter(|f| f.loaded) {
        let same = old
            .get(&inputs::path_hash(&file.path))
            .is_some_and(|r| r.digest == file.digest && r.unit == file.unit);
        if same {
            // Touched, not changed: it defines exactly what it did last time.
            found += file.definitions;
            continue;
        }
        let mut look = |name: &str, kind: SymbolKind, hash: u64, line: usize| {
            let Some(id) = symbols.lookup(name) else {
                return Ok(true);
            };
            let s = symbols.get(id);
            if s.kind() != kind {
                return Err(DiffError::Full(format!(
                    "`{name}` changed from a {} to a {}",
                    s.kind().describe(),
                    kind.describe()
                )));
            }
            if s.placement().is_none() {
                return Ok(true);
            }
            if s.builtin() {
                // The program now defines what the image provided: its definition replaces it.
                diff.gone.push(id);
                return Ok(true);
            }
            match s.unit_of() {
                Some(u) if unread.contains_key(&u) => {
                    let other = &program.files[unread[&u]];
                    return Err(DiffError::Input(BackendError::DuplicateDefinition {
                        name: name.to_string(),
                        first: SourcePos {
                            file: other.path.clone(),
                            line: line_of_definition(&other.path, name).unwrap_or(1),
                        },
                        second: SourcePos {
                            file: file.path.clone(),
                            line,
                        },
                    }));
                }
                Some(u) if revisited.contains(&u) => {
                    found += 1;
                    if u != file.unit {
                        diff.relabel.push((id, file.unit));
                    }
                }
                _ => {}
            }
            Ok(s.hash != hash)
        };
        for i in file.functions.clone() {
            let f = &program.functions[i];
            if look(&f.name, SymbolKind::Function, f.hash, f.line)? {
                diff.functions.push(i);
            }
        }
        for d in &program.data[file.data.clone()] {
            if look(
                &d.directive.name,
                SymbolKind::Data,
                d.hash,
                d.directive.line,
            )? {
                diff.data.push(d);
            }
        }
    }
    if found != expected {
        diff.gone.extend(gone_symbols(program, image, &revisited));
    }
    Ok(diff)
}

/// The line of `name`'s definition in a file that was not read: only error messages pay
/// for reading it.
fn line_of_definition(path: &Path, name: &str) -> Option<usize> {
    let program = Program::read(&[path.to_path_buf()]).ok()?;
    program.locate(name).map(|p| p.line)
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

/// The record of the inputs kept in the table (see `inputs.rs`): per file, its stat data,
/// the digest of its definitions, its unit and how many definitions it has.
fn manifest(program: &Program, started_ns: i64) -> Manifest {
    Manifest {
        files: program
            .files
            .iter()
            .map(|f| FileRecord {
                path_hash: inputs::path_hash(&f.path),
                digest: f.digest,
                stat: inputs::to_record(f.stat, started_ns),
                unit: f.unit,
                definitions: f.definitions as u32,
            })
            .collect(),
    }
}

/// Definitions gone from the input: placed symbols of the revisited units that no file
/// defines now. Scans the table: called only when the counts say something is gone.
fn gone_symbols(program: &Program, image: &Image, revisited: &HashSet<u32>) -> Vec<SymbolId> {
    image
        .symbols()
        .iter()
        .filter(|(_, s)| s.placement().is_some() && !s.builtin())
        .filter(|(_, s)| s.unit_of().is_none_or(|u| revisited.contains(&u)))
        .filter(|(id, _)| !program.names.contains_key(&image.symbols().name(*id)))
        .map(|(id, _)| id)
        .collect()
}

/// A call to check once every signature is known: caller, callee and the hash of the
/// call-site signature (the signature itself is re-read from the text only for an error).
struct CallCheck {
    caller: usize,
    callee: SymbolId,
    sig_hash: u64,
}

struct Builder<'a> {
    program: &'a Program,
    env: &'a Env<'a>,
    jobs: usize,
    progress: Option<&'a dyn Fn(usize, usize)>,
    done: usize,
    total: usize,
    image: Image,
    calls: Vec<CallCheck>,
    compiled: usize,
    timings: crate::clif::Timings,
    /// Line tables of the functions placed by this build (by index), with `-g`.
    lines: HashMap<usize, crate::debug::FunctionLines>,
    /// Call-frame information of the placed functions, with `-g`.
    frames: Vec<(u64, crate::debug::Unwind)>,
    /// Units of files that were not read but hold callers that must be compiled again.
    unread_callers: BTreeSet<u32>,
}

impl<'a> Builder<'a> {
    fn new(program: &'a Program, env: &'a Env<'a>, image: Image, opts: &BuildOptions<'a>) -> Self {
        Builder {
            program,
            env,
            jobs: opts.jobs,
            progress: opts.progress,
            done: 0,
            total: 0,
            image,
            calls: Vec::new(),
            compiled: 0,
            timings: crate::clif::Timings::default(),
            lines: HashMap::new(),
            frames: Vec::new(),
            unread_callers: BTreeSet::new(),
        }
    }

    /// What `name` is in the program: in the files read, or else in the table (a placed
    /// symbol of the program's, from a file that was not read).
    fn definition(&self, name: &str) -> Option<SymbolKind> {
        defined(self.program, Some(self.image.symbols()), name)
    }

    fn symbol_for(&mut self, name: &str, as_call: bool) -> Result<SymbolId> {
        let kind = match (self.definition(name), self.env.import(name)) {
            (Some(kind), _) => kind,
            (None, _) if as_call => SymbolKind::Function,
            (None, Some(data)) => {
                if data {
                    SymbolKind::Data
                } else {
                    SymbolKind::Function
                }
            }
            (None, None) if is_builtin(name) => SymbolKind::Function,
            (None, None) => SymbolKind::Data,
        };
        Ok(self.image.declare(name, kind, Binding::Global)?)
    }

    /// Place one compiled function: map its names to symbols (in input order, so symbol
    /// numbering does not depend on scheduling), write it, record its calls. If it replaced a
    /// definition with another signature, returns the functions that refer to it.
    fn place(&mut self, c: Compiled) -> Result<Option<Vec<usize>>> {
        let f = &self.program.functions[c.index];
        let mut ids = Vec::with_capacity(c.names.len());
        for (name, as_call) in &c.names {
            ids.push(self.symbol_for(name, *as_call)?);
        }
        let mut refs = Vec::with_capacity(c.relocs.len());
        for r in &c.relocs {
            let target = match &r.target {
                Target::Name(k) => ids[*k],
                Target::LibCall(name) => {
                    self.image
                        .declare(name, SymbolKind::Function, Binding::Global)?
                }
            };
            refs.push(Reference {
                offset: r.offset,
                kind: r.kind,
                target,
                addend: r.addend,
            });
        }
        for &(k, sig_hash) in &c.calls {
            self.calls.push(CallCheck {
                caller: c.index,
                callee: ids[k],
                sig_hash,
            });
        }
        let id = self
            .image
            .declare(&f.name, SymbolKind::Function, Binding::Global)?;
        let old = self.image.symbols().get(id);
        let old_sig = old.placement().map(|_| old.sig_hash).filter(|&h| h != 0);
        self.image.redefine_function(id, &c.code, c.align, &refs)?;
        self.image.set_hashes(id, f.hash, c.sig_hash);
        self.image
            .set_unit(id, Some(self.program.files[f.file].unit));
        if self.env.debug_info {
            if let Some(p) = self.image.symbols().get(id).placement() {
                let lines = crate::debug::FunctionLines {
                    name: f.name.clone(),
                    file: f.file,
                    line: f.line as u32,
                    addr: p.slot.addr,
                    size: p.size,
                    rows: c.rows,
                };
                self.lines.insert(c.index, lines);
                if let Some(info) = c.unwind {
                    self.frames.push((p.slot.addr, info));
                }
            }
        }
        self.compiled += 1;
        self.timings.parse += c.timings.parse;
        self.timings.codegen += c.timings.codegen;
        if old_sig.is_some_and(|h| h != c.sig_hash) {
            return Ok(Some(self.callers_of(id)));
        }
        Ok(None)
    }

    /// Compile `indices` on `jobs` threads and place the results in the order given. Workers
    /// share nothing mutable; one batch at a time bounds the compiled code held in memory.
    /// The first error in input order is the one reported, whatever finished first.
    fn functions(&mut self, indices: &[usize]) -> Result<Vec<usize>> {
        let jobs = self.jobs.max(1);
        let mut callers = Vec::new();
        for batch in indices.chunks(BATCH_PER_JOB * jobs) {
            let results = compile_batch(
                self.program,
                self.env,
                Some(self.image.symbols()),
                batch,
                jobs,
            );
            let t = Instant::now();
            for r in results {
                if let Some(more) = self.place(r?)? {
                    callers.extend(more);
                }
            }
            self.timings.write += t.elapsed();
            self.done += batch.len();
            if let Some(progress) = self.progress {
                progress(self.done, self.total);
            }
        }
        Ok(callers)
    }

    /// Check the calls, record the inputs, and finish the image: the common end of full builds
    /// and updates. The report's phases hold "debug info" (with `-g`) and "finish"; the caller
    /// adds its own before them.
    fn finish(mut self, mode: Mode) -> Result<Report> {
        self.check_calls()?;
        let t = Instant::now();
        let mut phases = Vec::new();
        if self.env.debug_info {
            self.debug_info(&mode)?;
            phases.push(("debug info", t.elapsed()));
        }
        let t = Instant::now();
        self.image
            .set_manifest(manifest(self.program, self.env.started_ns).encode());
        let summary = self.image.finish()?;
        let finish = t.elapsed();
        let mut timings = self.timings;
        timings.write += phases.iter().map(|(_, d)| *d).sum::<Duration>() + finish;
        let total = self.program.definitions();
        let reused = match mode {
            Mode::Update => total.saturating_sub(self.compiled),
            Mode::Full { .. } => 0,
        };
        Ok(Report {
            mode,
            summary,
            compiled: self.compiled,
            reused,
            phases: {
                phases.push(("finish", finish));
                phases
            },
            timings,
            read_files: self.program.files.len(),
            files: self.program.files.len(),
        })
    }

    /// The debug sections: units of files that did not change are copied from the previous
    /// build, the others are written again (see `debug.rs`).
    fn debug_info(&mut self, mode: &Mode) -> Result<()> {
        use crate::debug::{FunctionLines, SourceFile, UnitSource};
        let files: Vec<SourceFile> = self
            .program
            .files
            .iter()
            .map(|f| SourceFile::new(&f.path))
            .collect();
        let (sections, index) = {
            let previous = match mode {
                Mode::Update => {
                    Some(previous_debug(&self.image).map_err(BackendError::PreviousDebugInfo)?)
                }
                Mode::Full { .. } => None,
            };
            let old_digests: HashMap<u64, u64> = Manifest::decode(self.image.manifest())
                .unwrap_or_default()
                .files
                .iter()
                .map(|r| (r.path_hash, r.digest))
                .collect();
            let mut compiled_files = HashSet::new();
            for l in self.lines.values() {
                compiled_files.insert(l.file);
            }
            // A file's unit is copied if the file is as it was and none of its functions was
            // compiled again (a callee's new signature recompiles callers in other files).
            let copied: Vec<Option<&crate::debug::UnitEntry>> = self
                .program
                .files
                .iter()
                .zip(&files)
                .enumerate()
                .map(|(i, (f, sf))| {
                    let same = old_digests.get(&inputs::path_hash(&f.path)) == Some(&f.digest);
                    let p = previous
                        .as_ref()
                        .filter(|_| same && !compiled_files.contains(&i));
                    p.and_then(|p| p.unit(sf))
                })
                .collect();
            let kept: Vec<&crate::debug::UnitEntry> = copied.iter().flatten().copied().collect();
            let old_rows = match &previous {
                Some(p) if kept.len() < files.len() => p
                    .rows_outside(&kept)
                    .map_err(BackendError::PreviousDebugInfo)?,
                _ => HashMap::new(),
            };
            // Functions of rewritten units that this build did not compile: placed as before,
            // rows from the previous line tables, moved to the function's line now.
            let mut carried: Vec<FunctionLines> = Vec::new();
            // Only the files whose units are rewritten are visited, not the whole program.
            let rewritten = self
                .program
                .files
                .iter()
                .zip(&copied)
                .filter(|(_, c)| c.is_none())
                .flat_map(|(file, _)| file.functions.clone());
            for i in rewritten {
                let f = &self.program.functions[i];
                if self.lines.contains_key(&i) {
                    continue;
                }
                let placement = self
                    .image
                    .symbols()
                    .lookup(&f.name)
                    .and_then(|id| self.image.symbols().get(id).placement());
                let (Some(p), Some(rows)) = (
                    placement,
                    placement.and_then(|p| old_rows.get(&p.slot.addr)),
                ) else {
                    return Err(BackendError::PreviousDebugInfo(format!(
                        "no line table for `{}`",
                        f.name
                    )));
                };
                carried.push(FunctionLines {
                    name: f.name.clone(),
                    file: f.file,
                    line: f.line as u32,
                    addr: p.slot.addr,
                    size: p.size,
                    rows: rows
                        .iter()
                        .map(|&(off, delta)| (off, (i64::from(f.line as u32) + delta) as u32))
                        .collect(),
                });
            }
            let mut by_file: Vec<Vec<&FunctionLines>> = vec![Vec::new(); files.len()];
            for l in self.lines.values().chain(&carried) {
                by_file[l.file].push(l);
            }
            let units: Vec<UnitSource<'_>> = files
                .iter()
                .zip(by_file)
                .zip(&copied)
                .map(|((file, mut functions), copied)| match copied {
                    Some(entry) => UnitSource::Copied(entry),
                    None => {
                        functions.sort_by_key(|l| l.addr);
                        UnitSource::Fresh { file, functions }
                    }
                })
                .collect();
            crate::debug::sections(&units, previous.as_ref(), self.jobs)?
        };
        self.image.set_extra_sections(sections, index);
        self.frames.sort_by_key(|(addr, _)| *addr);
        if let Some(frames) = crate::debug::eh_frame(self.env.isa, &self.frames)? {
            self.image.set_eh_frame(frames);
        }
        Ok(())
    }

    /// Program functions whose code refers to `id`. Those in files that were not read are
    /// noted by unit in `unread_callers`: the update must read them and start again.
    fn callers_of(&mut self, id: SymbolId) -> Vec<usize> {
        let mut callers = Vec::new();
        for s in self.image.referrers(id) {
            if let Place::In { owner, .. } = self.image.sites().get(s).place {
                let name = self.image.symbols().name(owner);
                match self.program.names.get(&name) {
                    Some(Definition::Function(i)) => callers.push(*i),
                    Some(Definition::Data(_)) => {}
                    None => {
                        if let Some(u) = self.image.symbols().get(owner).unit_of() {
                            self.unread_callers.insert(u);
                        }
                    }
                }
            }
        }
        callers
    }

    fn data(&mut self, d: &DataDef) -> Result<()> {
        let dir = &d.directive;
        let mut refs = Vec::new();
        let contents = match &dir.init {
            DataInit::Zeroed(n) => Contents::Zeros(*n),
            DataInit::Bytes { bytes, addrs } => {
                for a in addrs {
                    if self.definition(&a.target) == Some(SymbolKind::Function)
                        || is_builtin(&a.target)
                    {
                        self.program.check_function_addend(d, a)?;
                    }
                    refs.push(Reference {
                        offset: a.offset,
                        kind: RefKind::Abs64,
                        target: self.symbol_for(&a.target, false)?,
                        addend: a.addend,
                    });
                }
                Contents::Bytes(bytes)
            }
        };
        let id = self
            .image
            .declare(&dir.name, SymbolKind::Data, Binding::Global)?;
        self.image
            .redefine_data(id, contents, dir.align, dir.writable, &refs)?;
        self.image.set_hashes(id, d.hash, 0);
        self.image
            .set_unit(id, Some(self.program.files[d.file].unit));
        self.compiled += 1;
        Ok(())
    }

    /// Every call compiled in this build against its callee's signature.
    fn check_calls(&self) -> Result<()> {
        for c in &self.calls {
            let defined = self.image.symbols().get(c.callee).sig_hash;
            if defined != 0 && defined != c.sig_hash {
                return Err(self.mismatch(c));
            }
        }
        Ok(())
    }

    /// The error for a call whose signature differs from its callee's: both signatures are
    /// read again from the text, which only errors pay for.
    fn mismatch(&self, c: &CallCheck) -> BackendError {
        let caller = &self.program.functions[c.caller];
        let name = self.image.symbols().name(c.callee);
        let signature = |i: usize| {
            self.program
                .parse_function(&self.program.functions[i])
                .ok()
                .map(|p| p.func)
        };
        let used = signature(c.caller).and_then(|f| {
            f.dfg
                .ext_funcs
                .values()
                .find(
                    |e| matches!(&e.name, ExternalName::TestCase(t) if t.raw() == name.as_bytes()),
                )
                .map(|e| f.dfg.signatures[e.signature].clone())
        });
        let defined = match self.program.names.get(&name) {
            Some(Definition::Function(i)) => signature(*i).map(|f| f.signature.clone()),
            _ => None,
        };
        match used {
            Some(used) => signature_mismatch(self.program, caller, &name, &used, defined.as_ref()),
            None => BackendError::SignatureMismatch {
                pos: self.program.pos(caller.file, caller.line),
                function: caller.name.clone(),
                message: format!(
                    "calls `{name}` with a signature that differs from its definition"
                ),
            },
        }
    }
}

/// Functions compiled per job in one batch: enough to keep every worker busy, few enough that
/// the compiled code waiting to be placed stays small.
const BATCH_PER_JOB: usize = 64;

/// A compiled function that has not touched the image: names are indices into `names`.
struct Compiled {
    index: usize,
    code: Vec<u8>,
    align: u64,
    relocs: Vec<CompiledReloc>,
    /// (name, referred to by a call) in first-use order.
    names: Vec<(String, bool)>,
    /// Calls to program functions: (name index, hash of the call-site signature).
    calls: Vec<(usize, u64)>,
    sig_hash: u64,
    timings: crate::clif::Timings,
    /// (code offset, line in the file), with `-g`.
    rows: Vec<(u32, u32)>,
    /// Call-frame information, with `-g`.
    unwind: Option<crate::debug::Unwind>,
}

struct CompiledReloc {
    offset: u32,
    kind: RefKind,
    target: Target,
    addend: i64,
}

enum Target {
    Name(usize),
    LibCall(String),
}

/// Compile every function of `batch` on `jobs` threads; results in `batch` order.
fn compile_batch(
    program: &Program,
    env: &Env<'_>,
    table: Option<&SymbolTable>,
    batch: &[usize],
    jobs: usize,
) -> Vec<Result<Compiled>> {
    crate::parallel::map(batch, jobs, Context::new, |ctx, &i| {
        compile_one(program, env, table, i, ctx)
    })
}

/// Parse, resolve names (to a list of its own) and compile function `i`. Touches nothing
/// shared, so any thread may run it.
fn compile_one(
    program: &Program,
    env: &Env<'_>,
    table: Option<&SymbolTable>,
    i: usize,
    ctx: &mut Context,
) -> Result<Compiled> {
    let f = &program.functions[i];
    let mut timings = crate::clif::Timings::default();
    let t = Instant::now();
    let parsed = program.parse_function(f)?;
    let sig_hash = signature_hash(&parsed.func.signature);
    let mut func = parsed.func;
    let mut names = WorkerNames {
        env,
        table,
        names: Vec::new(),
        calls: Vec::new(),
    };
    rewrite_names(program, f, &mut func, &mut names)?;
    if env.debug_info {
        // Each instruction's source location is its line in the file.
        let insts: Vec<ir::Inst> = func
            .layout
            .blocks()
            .flat_map(|b| func.layout.block_insts(b))
            .collect();
        for inst in insts {
            if let Some(loc) = parsed.map.location(ir::entities::AnyEntity::Inst(inst)) {
                let line = f.line + loc.line_number - 1;
                func.set_srcloc(inst, ir::SourceLoc::new(line as u32));
            }
        }
    }
    ctx.clear();
    ctx.func = func;
    timings.parse = t.elapsed();
    let t = Instant::now();
    ctx.compile(env.isa, &mut ControlPlane::default())
        .map_err(|e| program.compile_error(f, &parsed.map, e.inner))?;
    timings.codegen = t.elapsed();
    let compiled = ctx.compiled_code().expect("compiled just above");
    let mut relocs = Vec::with_capacity(compiled.buffer.relocs().len());
    for r in compiled.buffer.relocs() {
        let target = match &r.target {
            FinalizedRelocTarget::ExternalName(ExternalName::User(u)) => {
                Target::Name(ctx.func.params.user_named_funcs()[*u].index as usize)
            }
            FinalizedRelocTarget::ExternalName(ExternalName::LibCall(lc)) => {
                Target::LibCall((env.libcall_names)(*lc))
            }
            other => {
                return Err(BackendError::Compile {
                    function: f.name.clone(),
                    message: format!("reference to {other:?} is not supported"),
                })
            }
        };
        relocs.push(CompiledReloc {
            offset: r.offset,
            kind: ref_kind(r.kind, &f.name, r.offset)?,
            target,
            addend: r.addend,
        });
    }
    let compiled = ctx.compiled_code().expect("compiled just above");
    let (rows, unwind) = if env.debug_info {
        crate::debug::of_compiled(compiled, env.isa)
    } else {
        (Vec::new(), None)
    };
    Ok(Compiled {
        unwind,
        rows,
        index: i,
        code: compiled.code_buffer().to_vec(),
        align: u64::from(compiled.buffer.alignment),
        relocs,
        names: names.names,
        calls: names.calls,
        sig_hash,
        timings,
    })
}

/// What `name` is in the program: a definition in the files that were read, or else a placed
/// symbol of the program's in `table` (from a file an update did not read: every definition
/// gone from the input was removed from the table before anything is compiled).
fn defined(program: &Program, table: Option<&SymbolTable>, name: &str) -> Option<SymbolKind> {
    match program.names.get(name) {
        Some(Definition::Function(_)) => Some(SymbolKind::Function),
        Some(Definition::Data(_)) => Some(SymbolKind::Data),
        None => {
            let table = table?;
            let s = table.get(table.lookup(name)?);
            (s.placement().is_some() && !s.builtin() && s.unit_of().is_some()).then(|| s.kind())
        }
    }
}

/// Name resolution inside a worker: every name gets an index into the function's own list;
/// the image learns the names when the function is placed.
struct WorkerNames<'e, 'a> {
    env: &'e Env<'a>,
    /// The image's table as it was before this batch (read only while workers run).
    table: Option<&'e SymbolTable>,
    names: Vec<(String, bool)>,
    calls: Vec<(usize, u64)>,
}

impl Names for WorkerNames<'_, '_> {
    fn function(
        &mut self,
        program: &Program,
        caller: &FunctionDef,
        name: &str,
        sig: &ir::Signature,
    ) -> Result<(u32, u32, bool)> {
        let k = self.names.len();
        let colocated = match defined(program, self.table, name) {
            Some(SymbolKind::Function) => {
                self.calls.push((k, signature_hash(sig)));
                true
            }
            Some(SymbolKind::Data) => return Err(program.not_a_function(caller, name)),
            None => self.env.builtin_in_image(name),
        };
        self.names.push((name.to_string(), true));
        Ok((0, k as u32, colocated))
    }

    fn symbol(&mut self, program: &Program, name: &str) -> Result<(u32, u32, bool)> {
        let colocated =
            defined(program, self.table, name).is_some() || self.env.builtin_in_image(name);
        let k = self.names.len();
        self.names.push((name.to_string(), false));
        Ok((0, k as u32, colocated))
    }
}
