//! Compiling one function on a worker thread: parse its chunk, resolve its names into a list
//! of its own, run Cranelift. Touches nothing shared that anyone writes meanwhile.

use super::*;

/// Functions compiled per job in one batch: enough to keep every worker busy, few enough that
/// the compiled code waiting to be placed stays small.
pub(super) const BATCH_PER_JOB: usize = 64;

/// How far, in functions per job, workers may compile ahead of placement.
pub(super) const WINDOW_PER_JOB: usize = 256;

/// A compiled function that has not touched the image: names are indices into `names`.
pub(super) struct Compiled {
    pub(super) index: usize,
    pub(super) code: Vec<u8>,
    pub(super) align: u64,
    pub(super) relocs: Vec<CompiledReloc>,
    /// (name, referred to by a call) in first-use order.
    pub(super) names: Vec<WorkerName>,
    /// Calls to program functions: (name index, hash of the call-site signature).
    pub(super) calls: Vec<(usize, u64)>,
    pub(super) sig_hash: u64,
    pub(super) timings: crate::clif::Timings,
    /// (code offset, line in the file), with `-g`.
    pub(super) rows: Vec<(u32, u32)>,
    /// Call-frame information, with `-g`.
    pub(super) unwind: Option<crate::debug::Unwind>,
}

pub(super) struct CompiledReloc {
    pub(super) offset: u32,
    pub(super) kind: RefKind,
    pub(super) target: Target,
    pub(super) addend: i64,
}

pub(super) enum Target {
    Name(usize),
    LibCall(String),
}

/// Functions a worker parses before it compiles them. Parsing one function and then running
/// ~100 µs of code generation evicts the parser's code and data every time; parsing a few in
/// a row (as the separate path does per file) costs some 9% less.
pub(super) const PARSE_AHEAD: usize = 8;

/// Compile every function of `batch` on `jobs` threads; results in `batch` order.
pub(super) fn compile_batch(
    program: &Program,
    env: &Env<'_>,
    table: Option<&SymbolTable>,
    batch: &[usize],
    jobs: usize,
) -> Vec<Result<Compiled>> {
    let groups: Vec<&[usize]> = batch.chunks(PARSE_AHEAD).collect();
    crate::parallel::map(&groups, jobs, Context::new, |ctx, group| {
        compile_group(program, env, table, group, ctx)
    })
    .into_iter()
    .flatten()
    .collect()
}

/// Parse every function of `group`, then compile each; results in `group` order.
pub(super) fn compile_group(
    program: &Program,
    env: &Env<'_>,
    table: Option<&SymbolTable>,
    group: &[usize],
    ctx: &mut Context,
) -> Vec<Result<Compiled>> {
    let prepared: Vec<Result<Prepared>> = group
        .iter()
        .map(|&i| guarded(program, i, || prepare(program, env, table, i)))
        .collect();
    group
        .iter()
        .zip(prepared)
        .map(|(&i, p)| {
            let p = p?;
            let r = guarded(program, i, || generate(program, env, p, ctx));
            if r.is_err() {
                // A context a panic left mid-compile is not trusted again.
                *ctx = Context::new();
            }
            r
        })
        .collect()
}

/// Run `f` for function `i`, turning a panic inside it (Cranelift rejecting what its verifier
/// let through, such as an `i128` argument on x86-64) into an error that names the function:
/// the last line of defence, so that a build never aborts with a backtrace and OUT stays as
/// it was.
fn guarded<T>(program: &Program, i: usize, f: impl FnOnce() -> Result<T>) -> Result<T> {
    GUARDED.set(true);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.set(false);
    r.unwrap_or_else(|payload| {
        let func = &program.functions[i];
        let function = format!("{} ({})", func.name, program.pos(func.file, func.line));
        Err(crate::error::cannot_compile(function, payload))
    })
}

thread_local! {
    /// Set while this thread runs a guarded compile: a panic hook can stay quiet then.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic on this thread now would be caught and reported as an error naming the
/// function being compiled (for a panic hook that would otherwise print it).
pub fn panics_are_caught() -> bool {
    GUARDED.get()
}

/// A name a function refers to, as the worker resolved it.
pub(super) enum WorkerName {
    /// Defined in a file that was read: placement maps it to its symbol without a lookup by
    /// name (once per definition, then from a cache).
    Defined(Definition),
    /// Anything else (a definition in the table, an import, a built-in): by name, and whether
    /// a call refers to it.
    Other { name: String, as_call: bool },
}

/// A function parsed and with its names resolved, ready for code generation.
pub(super) struct Prepared {
    index: usize,
    func: ir::Function,
    map: cranelift_reader::SourceMap,
    names: Vec<WorkerName>,
    calls: Vec<(usize, u64)>,
    sig_hash: u64,
    timings: crate::clif::Timings,
}

/// Parse function `i` and resolve its names (to a list of its own). Touches nothing shared,
/// so any thread may run it.
fn prepare(
    program: &Program,
    env: &Env<'_>,
    table: Option<&SymbolTable>,
    i: usize,
) -> Result<Prepared> {
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
    timings.parse = t.elapsed();
    Ok(Prepared {
        index: i,
        func,
        map: parsed.map,
        names: names.names,
        calls: names.calls,
        sig_hash,
        timings,
    })
}

/// Run Cranelift on a prepared function.
fn generate(program: &Program, env: &Env<'_>, p: Prepared, ctx: &mut Context) -> Result<Compiled> {
    let i = p.index;
    let f = &program.functions[i];
    let mut timings = p.timings;
    let parsed_map = p.map;
    ctx.clear();
    ctx.func = p.func;
    let t = Instant::now();
    ctx.compile(env.isa, &mut ControlPlane::default())
        .map_err(|e| program.compile_error(f, &parsed_map, e.inner))?;
    timings.codegen = t.elapsed();
    let compiled = ctx.compiled_code().expect("compiled just above");
    let mut relocs = Vec::with_capacity(compiled.buffer.relocs().len());
    for r in compiled.buffer.relocs() {
        if let FinalizedRelocTarget::ExternalName(name) = &r.target {
            if crate::relocs::is_tls_get_addr(r.kind, name) {
                continue;
            }
        }
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
        names: p.names,
        calls: p.calls,
        sig_hash: p.sig_hash,
        timings,
    })
}

/// What `name` is in the program: a definition in the files that were read, or else a placed
/// symbol of the program's in `table` (from a file an update did not read: every definition
/// gone from the input was removed from the table before anything is compiled).
pub(super) fn defined(
    program: &Program,
    table: Option<&SymbolTable>,
    name: &str,
) -> Option<SymbolKind> {
    match program.names.get(name) {
        Some(Definition::Function(_)) => Some(SymbolKind::Function),
        Some(Definition::Data(_)) => Some(SymbolKind::Data),
        None => {
            let table = table?;
            let s = table.get(table.lookup(name)?);
            // Precompiled code's symbols are externals to the program, in an update as in the
            // full build that placed them after the program was compiled: the same code.
            let precompiled = s.alias() || s.section_atom();
            (s.placement().is_some() && !s.builtin() && !precompiled && s.unit_of().is_some())
                .then(|| s.kind())
        }
    }
}

/// Name resolution inside a worker: every name gets an index into the function's own list;
/// the image learns the names when the function is placed.
pub(super) struct WorkerNames<'e, 'a> {
    pub(super) env: &'e Env<'a>,
    /// The image's table as it was before this batch (read only while workers run).
    pub(super) table: Option<&'e SymbolTable>,
    pub(super) names: Vec<WorkerName>,
    pub(super) calls: Vec<(usize, u64)>,
}

impl WorkerNames<'_, '_> {
    /// What `name` is (as `defined` says) and its entry in the name list: one lookup in the
    /// program's names, and the table only for names no file that was read defines.
    fn resolve(
        &self,
        program: &Program,
        name: &str,
        as_call: bool,
    ) -> (Option<SymbolKind>, WorkerName) {
        match program.names.get(name) {
            Some(d) => {
                let kind = match d {
                    Definition::Function(_) => SymbolKind::Function,
                    Definition::Data(_) => SymbolKind::Data,
                };
                (Some(kind), WorkerName::Defined(*d))
            }
            None => (
                self.table.and_then(|_| defined(program, self.table, name)),
                WorkerName::Other {
                    name: name.to_string(),
                    as_call,
                },
            ),
        }
    }
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
        let (kind, entry) = self.resolve(program, name, true);
        let colocated = match kind {
            Some(SymbolKind::Function) => {
                self.calls.push((k, signature_hash(sig)));
                true
            }
            Some(SymbolKind::Data) => return Err(program.not_a_function(caller, name)),
            None => self.env.builtin_in_image(name),
        };
        self.names.push(entry);
        Ok((0, k as u32, colocated))
    }

    fn symbol(&mut self, program: &Program, name: &str) -> Result<(u32, u32, bool)> {
        let (kind, entry) = self.resolve(program, name, false);
        let colocated = kind.is_some() || self.env.builtin_in_image(name);
        let k = self.names.len();
        self.names.push(entry);
        Ok((0, k as u32, colocated))
    }
}
