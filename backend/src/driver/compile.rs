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
    pub(super) names: Vec<(String, bool)>,
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

/// Compile every function of `batch` on `jobs` threads; results in `batch` order.
pub(super) fn compile_batch(
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
pub(super) fn compile_one(
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
            (s.placement().is_some() && !s.builtin() && s.unit_of().is_some()).then(|| s.kind())
        }
    }
}

/// Name resolution inside a worker: every name gets an index into the function's own list;
/// the image learns the names when the function is placed.
pub(super) struct WorkerNames<'e, 'a> {
    pub(super) env: &'e Env<'a>,
    /// The image's table as it was before this batch (read only while workers run).
    pub(super) table: Option<&'e SymbolTable>,
    pub(super) names: Vec<(String, bool)>,
    pub(super) calls: Vec<(usize, u64)>,
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
