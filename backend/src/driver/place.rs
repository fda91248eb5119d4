//! The builder: places compiled functions and data objects in the image in input order
//! (names to symbols, slots, sites), checks calls against signatures, and finishes the image.
//! Compilation runs on worker threads (`compile.rs`), beside placement in full builds.

use super::compile::*;
use super::*;
use crate::session::{CallSite, DataObject, FunctionCode, FunctionDebug, SourceId};

pub(super) struct Builder<'a> {
    pub(super) program: &'a Program,
    pub(super) env: &'a Env<'a>,
    pub(super) jobs: usize,
    pub(super) progress: Option<&'a dyn Fn(usize, usize)>,
    pub(super) done: usize,
    pub(super) total: usize,
    pub(super) session: Session,
    /// The session's unit of each file.
    pub(super) units: &'a [UnitId],
    pub(super) timings: crate::clif::Timings,
    /// Units of files that were not read but hold callers that must be compiled again.
    pub(super) unread_callers: BTreeSet<u32>,
    /// Objects and archives, placed after the program's own code.
    pub(super) pre: PreLink<'a>,
    /// Symbols of the program's functions and data objects, by index, once declared.
    pub(super) function_ids: Vec<Option<SymbolId>>,
    pub(super) data_ids: Vec<Option<SymbolId>>,
    /// When `declare_all` gave function `i` the symbol `first + i` (every name new): then
    /// no cache is read, a read that misses the cache on a core busy compiling.
    pub(super) functions_from: Option<u32>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(
        program: &'a Program,
        env: &'a Env<'a>,
        mut session: Session,
        units: &'a [UnitId],
        pre: PreLink<'a>,
        opts: &BuildOptions<'a>,
    ) -> Self {
        if session.debug_info() {
            // One source per file, in file order: source `i` is file `i`.
            for (file, &u) in program.files.iter().zip(units) {
                session.add_source(&file.path, Some(u));
            }
        }
        Builder {
            program,
            env,
            jobs: opts.jobs,
            progress: opts.progress,
            done: 0,
            total: 0,
            session,
            units,
            timings: crate::clif::Timings::default(),
            unread_callers: BTreeSet::new(),
            pre,
            function_ids: vec![None; program.functions.len()],
            data_ids: vec![None; program.data.len()],
            functions_from: None,
        }
    }

    pub(super) fn into_session(self) -> Session {
        self.session
    }

    /// An object's definition clashing with "the program": named with the CLIF file and line
    /// that define the name, where the files read say.
    fn program_place(&self, e: BackendError) -> BackendError {
        let BackendError::Object {
            file,
            reason: crate::objects::ObjectError::Duplicate { name, other },
        } = e
        else {
            return e;
        };
        let at = match self.program.names.get(&name) {
            Some(crate::clif::Definition::Function(i)) => {
                let f = &self.program.functions[*i];
                Some(self.program.pos(f.file, f.line))
            }
            Some(crate::clif::Definition::Data(i)) => {
                let d = &self.program.data[*i];
                Some(self.program.pos(d.file, d.directive.line))
            }
            None => None,
        };
        let other = match at {
            Some(pos) if other == "the program" => format!("the program (at {pos})"),
            _ => other,
        };
        BackendError::Object {
            file,
            reason: crate::objects::ObjectError::Duplicate { name, other },
        }
    }

    /// What `name` is in the program: in the files read, or else in the table (a placed
    /// symbol of the program's, from a file that was not read).
    pub(super) fn definition(&self, name: &str) -> Option<SymbolKind> {
        defined(self.program, Some(self.session.symbols()), name)
    }

    /// Declare every definition of the program, data objects then functions, in input order:
    /// a full build's symbols, in one tight loop over the name index instead of one lookup
    /// on a cold cache between two compiles per function (120 against 870 ns a name at
    /// 100,000 functions). Symbol numbers follow the input, whatever the threads do.
    pub(super) fn declare_all(&mut self) -> Result<()> {
        let t = Instant::now();
        for i in 0..self.program.data.len() {
            self.symbol_of(Definition::Data(i))?;
        }
        let mut first = None;
        let mut contiguous = true;
        for i in 0..self.program.functions.len() {
            let id = self.symbol_of(Definition::Function(i))?.0;
            let base = *first.get_or_insert(id);
            contiguous &= id == base + i as u32;
        }
        if contiguous {
            self.functions_from = first;
        }
        self.timings.write += t.elapsed();
        Ok(())
    }

    /// The symbol of one of the program's definitions: declared on first use, then cached by
    /// definition, so a callee referred to by many functions is looked up by name once.
    pub(super) fn symbol_of(&mut self, d: Definition) -> Result<SymbolId> {
        if let (Definition::Function(i), Some(first)) = (d, self.functions_from) {
            return Ok(SymbolId(first + i as u32));
        }
        // The caches are sized to the program's definitions in `new`.
        let (cached, name, kind) = match d {
            Definition::Function(i) => (
                &mut self.function_ids[i],
                self.program.functions[i].name.as_str(),
                SymbolKind::Function,
            ),
            Definition::Data(i) => (
                &mut self.data_ids[i],
                self.program.data[i].directive.name.as_str(),
                SymbolKind::Data,
            ),
        };
        if let Some(id) = *cached {
            return Ok(id);
        }
        let id = self.session.declare(name, kind, Binding::Global)?;
        *cached = Some(id);
        Ok(id)
    }

    pub(super) fn symbol_for(&mut self, name: &str, as_call: bool) -> Result<SymbolId> {
        let (defined, import) = (self.definition(name), self.env.import(name));
        let kind = match (defined, import) {
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
        match self.session.declare(name, kind, Binding::Global) {
            // Nothing provides the name: whether a call or an address used it first, it is
            // undefined, and `finish` reports it so with every referrer.
            Err(BackendError::Image(zerolink_image::ImageError::KindMismatch { .. }))
                if defined.is_none() && import.is_none() && !is_builtin(name) =>
            {
                self.session.lookup(name).ok_or_else(|| {
                    BackendError::Module(format!("`{name}` was declared but cannot be found"))
                })
            }
            other => other,
        }
    }

    /// Place one compiled function: map its names to symbols (in input order, so symbol
    /// numbering does not depend on scheduling), write it, record its calls. If it replaced a
    /// definition with another signature, returns the functions that refer to it; and the
    /// spent result, for the thread that allocated it to free.
    pub(super) fn place(&mut self, mut c: Compiled) -> Result<(Option<Vec<usize>>, Compiled)> {
        let f = &self.program.functions[c.index];
        let mut ids = Vec::with_capacity(c.names.len());
        for n in &c.names {
            ids.push(match n {
                WorkerName::Defined(d) => self.symbol_of(*d)?,
                WorkerName::Other { name, as_call } => self.symbol_for(name, *as_call)?,
            });
        }
        let mut refs = Vec::with_capacity(c.relocs.len());
        for r in &c.relocs {
            let target = match &r.target {
                Target::Name(k) => ids[*k],
                Target::LibCall(name) => {
                    self.session
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
        let calls: Vec<CallSite> = c
            .calls
            .iter()
            .map(|&(k, signature)| CallSite {
                callee: ids[k],
                signature,
            })
            .collect();
        let id = self.symbol_of(Definition::Function(c.index))?;
        let debug = self.env.debug_info.then_some(FunctionDebug {
            source: SourceId(f.file as u32),
            line: f.line as u32,
            rows: std::mem::take(&mut c.rows),
        });
        let callers = self.session.define_function(
            self.units[f.file],
            id,
            FunctionCode {
                code: &c.code,
                align: c.align,
                refs: &refs,
                fingerprint: f.hash,
                signature: c.sig_hash,
                calls: &calls,
                debug,
                unwind: c.unwind.take(),
            },
        );
        let callers = callers.map_err(|e| self.at_source(e, f.file, f.line))?;
        self.timings.parse += c.timings.parse;
        self.timings.codegen += c.timings.codegen;
        Ok((callers.map(|callers| self.program_callers(&callers)), c))
    }

    /// Compile `indices` on `jobs` threads and place the results in the order given. Workers
    /// share nothing mutable; one batch at a time bounds the compiled code held in memory.
    /// The first error in input order is the one reported, whatever finished first.
    pub(super) fn functions(&mut self, indices: &[usize]) -> Result<Vec<usize>> {
        let jobs = self.jobs.max(1);
        // Workers that run beside placement may not read the table the main thread writes:
        // only when every file was read do they need nothing of it.
        let all_read = self.program.files.iter().all(|f| f.loaded);
        if jobs > 1 && indices.len() > BATCH_PER_JOB * jobs && all_read {
            return self.functions_pipelined(indices, jobs);
        }
        let mut callers = Vec::new();
        for batch in indices.chunks(BATCH_PER_JOB * jobs) {
            // The table is asked only for names of files that were not read.
            let table = (!all_read).then(|| self.session.symbols());
            let results = compile_batch(self.program, self.env, table, batch, jobs);
            let t = Instant::now();
            for r in results {
                if let (Some(more), _) = self.place(r?)? {
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

    /// Compile `indices` on `jobs` threads (this one included) while this thread places the
    /// results in the order given, as they arrive: placement, patching and table records overlap with code
    /// generation instead of stalling the workers between batches. Workers run at most
    /// `WINDOW_PER_JOB * jobs` functions ahead of placement, which bounds the compiled code
    /// held in memory. The output is the same as the batch path's (placement is in input
    /// order), and so is the error: the first in input order.
    pub(super) fn functions_pipelined(
        &mut self,
        indices: &[usize],
        jobs: usize,
    ) -> Result<Vec<usize>> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
        let (program, env) = (self.program, self.env);
        let window = WINDOW_PER_JOB * jobs;
        let next = AtomicUsize::new(0);
        let placed = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        // Results, by position, with the worker that made them (0: this thread).
        let (tx, rx) = std::sync::mpsc::channel::<(usize, usize, Result<Compiled>)>();
        // Spent results go back to the worker that allocated them, to be freed there: freed
        // here, every one is a free into another thread's arena, which cost the placing
        // thread (the serial part of the build) as much time again as placing.
        let mut spent = Vec::new();
        let mut callers = Vec::new();
        let mut outcome = Ok(());
        std::thread::scope(|s| {
            // `jobs - 1` workers; this thread is the last one, compiling whenever the next
            // function to place is not ready (placement is a few % of the work).
            for w in 1..jobs {
                let tx = tx.clone();
                let (back, returned) = std::sync::mpsc::channel::<Compiled>();
                spent.push(back);
                let (next, placed, stop) = (&next, &placed, &stop);
                s.spawn(move || {
                    let mut ctx = Context::new();
                    loop {
                        returned.try_iter().for_each(drop);
                        let k = next.fetch_add(PARSE_AHEAD, Relaxed);
                        if k >= indices.len() {
                            break;
                        }
                        while k >= placed.load(Relaxed) + window && !stop.load(Relaxed) {
                            std::thread::sleep(Duration::from_micros(50));
                        }
                        if stop.load(Relaxed) {
                            break;
                        }
                        let group = &indices[k..(k + PARSE_AHEAD).min(indices.len())];
                        let results = compile_group(program, env, None, group, &mut ctx);
                        for (j, r) in results.into_iter().enumerate() {
                            if tx.send((k + j, w, r)).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
            drop(tx);
            let mut ctx = Context::new();
            // Results that arrived before their turn, by position.
            let mut early: BTreeMap<usize, (usize, Result<Compiled>)> = BTreeMap::new();
            let mut want = 0;
            while want < indices.len() {
                while let Ok((k, w, r)) = rx.try_recv() {
                    early.insert(k, (w, r));
                }
                if !early.contains_key(&want) {
                    // Nothing to place yet: compile a group here, or wait for a worker.
                    if next.load(Relaxed) < (want + window).min(indices.len()) {
                        let k = next.fetch_add(PARSE_AHEAD, Relaxed);
                        if k < indices.len() {
                            let group = &indices[k..(k + PARSE_AHEAD).min(indices.len())];
                            let results = compile_group(program, env, None, group, &mut ctx);
                            early.extend(
                                results
                                    .into_iter()
                                    .enumerate()
                                    .map(|(j, r)| (k + j, (0, r))),
                            );
                            continue;
                        }
                    }
                    match rx.recv() {
                        Ok((k, w, r)) => {
                            early.insert(k, (w, r));
                        }
                        // Every worker is gone and every group was taken: nothing is missing
                        // unless a worker stopped early, which only an error makes it do.
                        Err(_) => break,
                    }
                    continue;
                }
                let t = Instant::now();
                while let Some((w, r)) = early.remove(&want) {
                    match r.and_then(|c| self.place(c)) {
                        Ok((more, c)) => {
                            callers.extend(more.into_iter().flatten());
                            // (A worker that is gone leaves it to be freed here.)
                            if let Some(back) = w.checked_sub(1).and_then(|i| spent.get(i)) {
                                let _ = back.send(c);
                            }
                        }
                        Err(e) => {
                            outcome = Err(e);
                            stop.store(true, Relaxed);
                            break;
                        }
                    }
                    want += 1;
                    placed.store(want, Relaxed);
                    self.done += 1;
                    if want % (BATCH_PER_JOB * jobs) == 0 {
                        if let Some(progress) = self.progress {
                            progress(self.done, self.total);
                        }
                    }
                }
                self.timings.write += t.elapsed();
                if outcome.is_err() {
                    break;
                }
            }
            if outcome.is_ok() && want < indices.len() {
                outcome = Err(BackendError::Compile {
                    function: "(placement)".into(),
                    message: "a compiled function went missing".into(),
                });
            }
            // Dropping the receiver makes every worker's next send fail: they stop.
            drop(rx);
        });
        outcome?;
        if let Some(progress) = self.progress {
            progress(self.done, self.total);
        }
        Ok(callers)
    }

    /// Check the calls, write debug information and finish the session: the common end of
    /// full builds and updates. The report's phases hold "debug info" (with `-g`) and
    /// "finish"; the caller adds its own before them.
    pub(super) fn finish(mut self) -> Result<Updated> {
        let t = Instant::now();
        let linked = self
            .pre
            .pre
            .finish(&mut self.session, &mut self.pre.claimed)
            .map_err(|e| self.program_place(e))?;
        if let Some(reason) = linked {
            return Ok(Updated::Full(reason, self.session));
        }
        self.timings.write += t.elapsed();
        // The check reads the table: only a sound one may blame the program.
        let mismatch = self.session.mismatched_call();
        if let Some(reason) = self.session.damage() {
            return Ok(Updated::Full(reason, self.session));
        }
        if let Some((caller, callee)) = mismatch {
            let caller = match self.program.names.get(&self.session.symbols().name(caller)) {
                Some(Definition::Function(i)) => Some(*i),
                _ => None,
            };
            if let Some(caller) = caller {
                return Err(self.mismatch(caller, callee));
            }
        }
        let program = self.program;
        let mut functions_of = |s: SourceId| -> Vec<(String, u32)> {
            program.files[s.index()]
                .functions
                .clone()
                .map(|i| {
                    (
                        program.functions[i].name.clone(),
                        program.functions[i].line as u32,
                    )
                })
                .collect()
        };
        let t = Instant::now();
        match self.session.write_debug_info(&mut functions_of) {
            Ok(()) => {}
            Err(BackendError::PreviousDebugInfo(reason)) if self.session.is_update() => {
                return Ok(Updated::Full(FullReason::DebugInfo(reason), self.session));
            }
            Err(e) => return Err(e),
        }
        let debug = t.elapsed();
        let mut report = self.session.finish(&mut functions_of)?;
        let mut timings = self.timings;
        timings.write += debug + report.phase("finish");
        report.timings = timings;
        if report.phase("debug info").is_zero() && !debug.is_zero() {
            report.phases.insert(0, ("debug info", debug));
        }
        report.read_files = program.files.len();
        report.files = program.files.len();
        Ok(Updated::Done(Box::new(report)))
    }

    /// Program functions whose code refers to a function, from the session's list of them.
    /// Those in files that were not read are noted by unit in `unread_callers`: the update
    /// must read them and start again.
    fn program_callers(&mut self, callers: &[SymbolId]) -> Vec<usize> {
        let mut out = Vec::new();
        for &owner in callers {
            let name = self.session.symbols().name(owner);
            match self.program.names.get(&name) {
                Some(Definition::Function(i)) => out.push(*i),
                Some(Definition::Data(_)) => {}
                None => {
                    if let Some(u) = self.session.symbols().get(owner).unit_of() {
                        self.unread_callers.insert(u);
                    }
                }
            }
        }
        out
    }

    pub(super) fn data(&mut self, d: &DataDef) -> Result<()> {
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
            .session
            .declare(&dir.name, SymbolKind::Data, Binding::Global)?;
        self.session
            .define_data(
                self.units[d.file],
                id,
                DataObject {
                    contents,
                    align: dir.align,
                    writable: dir.writable,
                    tls: dir.tls,
                    refs: &refs,
                    fingerprint: d.hash,
                },
            )
            .map_err(|e| self.at_source(e, d.file, dir.line))
    }

    /// An error about where a definition goes (its region is full, its name is reserved),
    /// told with the place of the definition in its file.
    fn at_source(&self, e: BackendError, file: usize, line: usize) -> BackendError {
        use zerolink_image::ImageError;
        match e {
            BackendError::Image(e @ (ImageError::RegionFull { .. } | ImageError::Reserved(_))) => {
                BackendError::Unsupported {
                    pos: self.program.pos(file, line),
                    message: e.to_string(),
                }
            }
            e => e,
        }
    }

    /// The error for a call whose signature differs from its callee's: both signatures are
    /// read again from the text, which only errors pay for.
    pub(super) fn mismatch(&self, caller: usize, callee: SymbolId) -> BackendError {
        let caller_index = caller;
        let caller = &self.program.functions[caller_index];
        let name = self.session.symbols().name(callee);
        let signature = |i: usize| {
            self.program
                .parse_function(&self.program.functions[i])
                .ok()
                .map(|p| p.func)
        };
        let used = signature(caller_index).and_then(|f| {
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
