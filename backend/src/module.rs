//! [`ZerolinkModule`]: a `cranelift_module::Module` whose output is a finished executable.
//!
//! A compiler that builds an `ObjectModule` today builds a `ZerolinkModule` instead and calls
//! [`ZerolinkModule::finish`] where it used to emit an object file. Declarations follow
//! cranelift-module's own rules (`ModuleDeclarations` merges linkages and checks signatures);
//! each definition is compiled at once and written straight into its slot in the image, and its
//! relocations become reference sites that the image patches as addresses become known.
//!
//! Debug information works as with `zerolink build -g`, for the compiler's own language: it
//! registers its source files ([`ZerolinkModule::add_source_file`]), says which file and line
//! each function starts at ([`ZerolinkModule::set_function_source`]), and sets every
//! instruction's source location to its line in that file (`ir::SourceLoc::new(line)`, e.g. with
//! `FunctionBuilder::set_srcloc`). `finish` then writes a compile unit per file, line tables and
//! unwind tables.

// `ModuleResult` is cranelift-module's own type, fixed by the `Module` trait; its error is large.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::Path;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir;
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::Context;
use cranelift_module::{
    DataDescription, DataId, FuncId, Init, Linkage, Module, ModuleDeclarations, ModuleError,
    ModuleReloc, ModuleRelocTarget, ModuleResult,
};
use zerolink_image::lock::LockWait;
use zerolink_image::{Binding, Contents, Reference, SymbolId, SymbolKind};

use crate::error::BackendError;
use crate::libs::LinkOptions;
use crate::relocs::ref_kind;
use crate::session::{
    Check, DataObject, FunctionCode, FunctionDebug, LibcallNames, Report, Session, SessionOptions,
    SourceId, UnitId, UnitStatus,
};

/// A source file registered with [`ZerolinkModule::add_source_file`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceFileId(usize);

/// How [`ZerolinkModule::open`] builds.
pub struct ModuleOptions {
    /// Libraries that resolve what the program does not define. The default links against
    /// libc, as `cc` does; `LinkOptions { freestanding: true, .. }` for none.
    pub link: LinkOptions,
    /// DWARF and unwind tables (also turned on by the first `add_source_file`).
    pub debug_info: bool,
    /// What the compile units say the source language is (`DW_LANG_*`).
    pub language: gimli::DwLang,
    /// Rebuild in full even if the executable could be updated.
    pub force_full: bool,
    /// The names libcalls are called by (cranelift-module's default names otherwise).
    pub libcall_names: Option<LibcallNames>,
    /// When another build of the same output is running: fail at once (the default: waiting
    /// for a module of one's own would never end), or wait.
    pub lock: LockWait,
}

impl Default for ModuleOptions {
    fn default() -> Self {
        ModuleOptions {
            link: LinkOptions::default(),
            debug_info: false,
            language: gimli::DW_LANG_C11,
            force_full: false,
            libcall_names: None,
            lock: LockWait::Fail,
        }
    }
}

pub struct ZerolinkModule {
    session: Session,
    declarations: ModuleDeclarations,
    functions: Vec<Option<SymbolId>>,
    data_objects: Vec<Option<SymbolId>>,
    libcall_names: LibcallNames,
    /// The unit definitions go into: the last `begin_unit`, or one unit for the whole module.
    unit: Option<UnitId>,
    /// Definitions checked with the compiler's own fingerprint, to be defined now.
    checked_functions: HashMap<FuncId, u64>,
    checked_data: HashMap<DataId, u64>,
    debug: DebugState,
}

/// What debug information needs, gathered as functions are defined.
#[derive(Default)]
struct DebugState {
    files: Vec<SourceId>,
    /// Where each function starts: (file, line).
    sources: HashMap<FuncId, (SourceFileId, u32)>,
    /// Functions compiled in this build: symbol, line rows.
    defined: Vec<(FuncId, SymbolId, crate::debug::Rows)>,
}

fn backend(e: impl Into<BackendError>) -> ModuleError {
    ModuleError::Backend(e.into().into())
}

/// Image errors that cranelift-module has a variant of are reported as that variant.
fn session_err(e: BackendError) -> ModuleError {
    match e {
        BackendError::Image(zerolink_image::ImageError::DuplicateDefinition(n)) => {
            ModuleError::DuplicateDefinition(n)
        }
        e => backend(e),
    }
}

/// A function to compile: its name, symbol and fingerprint.
struct Work {
    name: String,
    sym: SymbolId,
    fingerprint: u64,
}

/// Run Cranelift on `ctx`. Cranelift panics on some input its verifier accepts (an `i128`
/// argument on x86-64): the compiler using this module gets an error naming the function.
fn compile_in(
    isa: &dyn TargetIsa,
    name: &str,
    ctx: &mut Context,
    ctrl_plane: &mut ControlPlane,
) -> ModuleResult<()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ctx.compile(isa, ctrl_plane)
            .map(|_| ())
            .map_err(cranelift_module::ModuleError::from)
    })) {
        Ok(r) => r,
        Err(payload) => Err(backend(crate::error::cannot_compile(
            name.to_string(),
            payload,
        ))),
    }
}

fn binding(linkage: Linkage) -> Binding {
    match linkage {
        Linkage::Local => Binding::Local,
        Linkage::Preemptible => Binding::Weak,
        Linkage::Import | Linkage::Hidden | Linkage::Export => Binding::Global,
    }
}

fn slot<T: Copy>(v: &mut Vec<Option<T>>, i: usize) -> &mut Option<T> {
    if v.len() <= i {
        v.resize(i + 1, None);
    }
    &mut v[i]
}

/// Non-PIC code reaches imports through absolute relocations that an executable linked
/// against shared libraries cannot have: say so before anything is compiled.
fn check_pic(isa: &dyn TargetIsa, link: &LinkOptions) -> Result<(), BackendError> {
    if !link.freestanding && !isa.flags().is_pic() {
        return Err(BackendError::Setting {
            name: "is_pic".into(),
            message: "the ISA is not position-independent, so its code cannot call shared \
                      libraries: build it with `flag_builder.set(\"is_pic\", \"true\")`, or \
                      link freestanding"
                .into(),
        });
    }
    Ok(())
}

impl ZerolinkModule {
    /// A module that writes a new executable at `output` when finished: a full build,
    /// freestanding unless [`ZerolinkModule::link_libraries`] is called. `output` is replaced
    /// only if the build succeeds. If another build of `output` is running (a `zerolink
    /// build`, or another module for the same output, even in this process), this fails
    /// with `ImageError::Busy` rather than waiting.
    pub fn new(isa: OwnedTargetIsa, output: &Path) -> Result<Self, BackendError> {
        Self::open(
            isa,
            output,
            ModuleOptions {
                link: LinkOptions {
                    freestanding: true,
                    ..LinkOptions::default()
                },
                language: gimli::DW_LANG_C11,
                force_full: true,
                ..ModuleOptions::default()
            },
        )
    }

    /// A module that updates the executable at `output` in place if a previous build with
    /// the same settings left it there (see [`ZerolinkModule::mode`]), else writes a new one.
    /// Define the whole program as for a full build: definitions whose IR is as it was are
    /// kept, not compiled; those no longer defined are removed. With units
    /// ([`ZerolinkModule::begin_unit`]) a whole unchanged unit can be skipped.
    pub fn open(
        isa: OwnedTargetIsa,
        output: &Path,
        opts: ModuleOptions,
    ) -> Result<Self, BackendError> {
        check_pic(&*isa, &opts.link)?;
        let session = Session::open(
            output,
            isa,
            &SessionOptions {
                force_full: opts.force_full,
                debug_info: opts.debug_info,
                link: opts.link,
                lock: opts.lock,
                language: opts.language,
                ..SessionOptions::default()
            },
        )?;
        Ok(ZerolinkModule {
            session,
            declarations: ModuleDeclarations::default(),
            functions: Vec::new(),
            data_objects: Vec::new(),
            libcall_names: opts
                .libcall_names
                .unwrap_or_else(cranelift_module::default_libcall_names),
            unit: None,
            checked_functions: HashMap::new(),
            checked_data: HashMap::new(),
            debug: DebugState::default(),
        })
    }

    /// Whether this build updates the executable in place or writes it anew, and why.
    pub fn mode(&self) -> &crate::session::Mode {
        self.session.mode()
    }

    /// Put the definitions that follow into the unit `name` (a source file, a codegen unit),
    /// whose contents have this fingerprint (`None`: not known). If the unit is
    /// [`UnitStatus::Unchanged`], define nothing of it: its functions and data stay as they
    /// are (declaring them, to refer to them, is fine).
    pub fn begin_unit(
        &mut self,
        name: &str,
        fingerprint: Option<u64>,
    ) -> Result<UnitStatus, BackendError> {
        let u = self.session.unit(name.as_bytes());
        self.unit = Some(u);
        self.session
            .set_unit_contents(u, fingerprint, Default::default())
    }

    /// With the compiler's own fingerprint of a function (a hash of its source and of what
    /// its code depends on), whether it must be defined in this build. `false`: it is kept
    /// as it is; do not build its IR or define it. `true`: define it next, and this
    /// fingerprint is recorded for it (instead of a hash of its IR, which costs more).
    pub fn function_changed(&mut self, func: FuncId, fingerprint: u64) -> ModuleResult<bool> {
        let name = self.check_definable_function(func)?;
        let linkage = self.declarations.get_function_decl(func).linkage;
        let sym = self.func_symbol(func)?;
        let fingerprint = fingerprint.max(1);
        let changed = self.must_compile(sym, &name, SymbolKind::Function, linkage, fingerprint)?;
        if changed {
            self.checked_functions.insert(func, fingerprint);
        }
        Ok(changed)
    }

    /// The same for a data object.
    pub fn data_changed(&mut self, data: DataId, fingerprint: u64) -> ModuleResult<bool> {
        let decl = self.declarations.get_data_decl(data);
        let (name, linkage) = (decl.linkage_name(data).into_owned(), decl.linkage);
        if !linkage.is_definable() {
            return Err(ModuleError::InvalidImportDefinition(name));
        }
        let sym = self.data_symbol(data)?;
        let fingerprint = fingerprint.max(1);
        let changed = self.must_compile(sym, &name, SymbolKind::Data, linkage, fingerprint)?;
        if changed {
            self.checked_data.insert(data, fingerprint);
        }
        Ok(changed)
    }

    /// Define a batch of functions, compiled on `jobs` threads and placed in the order given:
    /// the executable is the same for any `jobs`, as with `zerolink build -j`. Each context
    /// holds its function's IR. Functions whose fingerprint is as before are kept, not
    /// compiled. On errors, the first in batch order is returned and nothing of the batch
    /// after it is placed.
    pub fn define_functions(
        &mut self,
        batch: &mut [(FuncId, Context)],
        jobs: usize,
    ) -> ModuleResult<()> {
        let mut work = Vec::new();
        for (i, (func, ctx)) in batch.iter().enumerate() {
            if let Some(w) = self.work_for(*func, ctx)? {
                work.push((i, w));
            }
        }
        let isa = self.session.isa().clone();
        let mut contexts: Vec<Option<&mut Context>> =
            batch.iter_mut().map(|(_, ctx)| Some(ctx)).collect();
        // Each worker locks only the context of the function it compiles: no contention.
        let items: Vec<(&str, std::sync::Mutex<&mut Context>)> = work
            .iter()
            .filter_map(|(i, w)| {
                Some((w.name.as_str(), std::sync::Mutex::new(contexts[*i].take()?)))
            })
            .collect();
        let results =
            crate::parallel::map(&items, jobs, ControlPlane::default, |cp, (name, ctx)| {
                let mut ctx = ctx.lock().unwrap_or_else(|e| e.into_inner());
                compile_in(&*isa, name, &mut ctx, cp).map_err(|e| e.to_string())
            });
        drop(items);
        for ((i, w), r) in work.iter().zip(results) {
            let func = batch[*i].0;
            if let Err(message) = r {
                return Err(backend(BackendError::Compile {
                    function: w.name.clone(),
                    message,
                }));
            }
            self.place_compiled(func, w, &batch[*i].1)?;
        }
        Ok(())
    }

    /// Whether debug information is being written.
    pub fn debug_info(&self) -> bool {
        self.session.debug_info()
    }

    fn current_unit(&mut self) -> Result<UnitId, BackendError> {
        if let Some(u) = self.unit {
            return Ok(u);
        }
        let u = self.session.unit(b"");
        self.session
            .set_unit_contents(u, None, Default::default())?;
        self.unit = Some(u);
        Ok(u)
    }

    /// Register a source file for debug information, as the debugger should find it (a
    /// relative path is taken from the current directory). The first call turns debug
    /// information and unwind tables on, unless [`ModuleOptions::debug_info`] did (then
    /// call it before defining anything). Registered right after [`Self::begin_unit`], the
    /// file is that unit's source: its debug information is kept whenever the unit is.
    pub fn add_source_file(
        &mut self,
        path: impl AsRef<Path>,
    ) -> Result<SourceFileId, BackendError> {
        if !self.session.debug_info() {
            self.session.reconfigure(None, Some(true))?;
            self.unit = None;
        }
        let id = self.session.add_source(path.as_ref(), self.unit);
        self.debug.files.push(id);
        Ok(SourceFileId(self.debug.files.len() - 1))
    }

    /// Say that `func` starts at `line` of `file`. Its instructions' source locations are read
    /// as line numbers in the same file; instructions without one belong to the line before.
    /// Say it for every function of a source file, also for those an update keeps.
    pub fn set_function_source(
        &mut self,
        func: FuncId,
        file: SourceFileId,
        line: u32,
    ) -> Result<(), BackendError> {
        if file.0 >= self.debug.files.len() {
            return Err(BackendError::Module(format!(
                "source file {} was not registered with add_source_file",
                file.0
            )));
        }
        self.debug.sources.insert(func, (file, line));
        Ok(())
    }

    /// Link against libc and the libraries in `opts` (as `cc` would): functions and data the
    /// module imports and does not define are resolved in them at `finish`, and the
    /// executable becomes a normal dynamically linked program. Call it before defining
    /// anything.
    pub fn link_libraries(&mut self, opts: &LinkOptions) -> Result<(), BackendError> {
        check_pic(&**self.session.isa(), opts)?;
        self.session.reconfigure(Some(opts), None)?;
        self.unit = None;
        Ok(())
    }

    /// The names libcalls (`memcpy`, `fmod`, ...) are called by.
    pub fn set_libcall_names(&mut self, names: LibcallNames) {
        self.libcall_names = names;
    }

    /// Size the code region's file space for about this many bytes of machine code.
    pub fn expect_code_bytes(&mut self, bytes: u64) {
        self.session.expect_code_bytes(bytes);
    }

    /// Resolve what is left, write the tables and move the executable into place (or commit
    /// the update). The report says how the build went and where `main` and the entry are.
    pub fn finish(mut self) -> Result<Report, BackendError> {
        if let Some(id) = self.session.lookup(zerolink_image::ENTRY) {
            let s = self.session.symbols().get(id);
            if s.kind() == SymbolKind::Function && s.binding() == Binding::Local {
                return Err(BackendError::Module(format!(
                    "`{}` is the entry point and cannot be declared `Linkage::Local`: declare \
                     it `Linkage::Export`",
                    zerolink_image::ENTRY
                )));
            }
        }
        let debug = std::mem::take(&mut self.debug);
        for (func, sym, rows) in debug.defined {
            if let Some(&(file, line)) = debug.sources.get(&func) {
                self.session.set_function_debug(
                    sym,
                    FunctionDebug {
                        source: debug.files[file.0],
                        line,
                        rows,
                    },
                );
            }
        }
        let declarations = &self.declarations;
        let files = &debug.files;
        let sources = &debug.sources;
        let mut functions_of = |s: SourceId| -> Vec<(String, u32)> {
            sources
                .iter()
                .filter(|(_, (file, _))| files[file.0] == s)
                .map(|(&func, &(_, line))| {
                    let decl = declarations.get_function_decl(func);
                    (decl.linkage_name(func).into_owned(), line)
                })
                .collect()
        };
        self.session.finish(&mut functions_of)
    }

    fn func_symbol(&mut self, id: FuncId) -> ModuleResult<SymbolId> {
        if let Some(Some(s)) = self.functions.get(id.as_u32() as usize) {
            return Ok(*s);
        }
        let decl = self.declarations.get_function_decl(id);
        let name = decl.linkage_name(id).into_owned();
        let sym = self
            .session
            .declare(&name, SymbolKind::Function, binding(decl.linkage))
            .map_err(backend)?;
        *slot(&mut self.functions, id.as_u32() as usize) = Some(sym);
        Ok(sym)
    }

    fn data_symbol(&mut self, id: DataId) -> ModuleResult<SymbolId> {
        if let Some(Some(s)) = self.data_objects.get(id.as_u32() as usize) {
            return Ok(*s);
        }
        let decl = self.declarations.get_data_decl(id);
        let name = decl.linkage_name(id).into_owned();
        let sym = self
            .session
            .declare(&name, SymbolKind::Data, binding(decl.linkage))
            .map_err(backend)?;
        *slot(&mut self.data_objects, id.as_u32() as usize) = Some(sym);
        Ok(sym)
    }

    fn target_symbol(&mut self, target: &ModuleRelocTarget, owner: &str) -> ModuleResult<SymbolId> {
        match *target {
            ModuleRelocTarget::User { .. } => {
                if ModuleDeclarations::is_function(target) {
                    self.func_symbol(FuncId::from_name(target))
                } else {
                    self.data_symbol(DataId::from_name(target))
                }
            }
            ModuleRelocTarget::LibCall(libcall) => {
                let name = (self.libcall_names)(libcall);
                self.session
                    .declare(&name, SymbolKind::Function, Binding::Global)
                    .map_err(backend)
            }
            ref other => Err(backend(BackendError::Compile {
                function: owner.to_string(),
                message: format!("reference to {other} is not supported"),
            })),
        }
    }

    fn references(&mut self, relocs: &[ModuleReloc], owner: &str) -> ModuleResult<Vec<Reference>> {
        relocs
            .iter()
            .map(|r| {
                Ok(Reference {
                    offset: r.offset,
                    kind: ref_kind(r.kind, owner, r.offset).map_err(backend)?,
                    target: self.target_symbol(&r.name, owner)?,
                    addend: r.addend,
                })
            })
            .collect()
    }

    /// The name a relocation target is known by, for fingerprints.
    fn target_name(&self, target: &ModuleRelocTarget) -> String {
        match *target {
            ModuleRelocTarget::User { .. } if ModuleDeclarations::is_function(target) => {
                let id = FuncId::from_name(target);
                self.declarations
                    .get_function_decl(id)
                    .linkage_name(id)
                    .into_owned()
            }
            ModuleRelocTarget::User { .. } => {
                let id = DataId::from_name(target);
                self.declarations
                    .get_data_decl(id)
                    .linkage_name(id)
                    .into_owned()
            }
            ModuleRelocTarget::LibCall(libcall) => (self.libcall_names)(libcall),
            ref other => other.to_string(),
        }
    }

    /// A stable hash of a function's IR and of the names it refers to (IR names functions and
    /// data by declaration number, which may differ between builds).
    fn function_fingerprint(&self, func: &ir::Function) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(func.display().to_string().as_bytes());
        for (_, name) in func.params.user_named_funcs().iter() {
            let target = ModuleRelocTarget::user(name.namespace, name.index);
            h.update(self.target_name(&target).as_bytes());
            h.update(&[0]);
        }
        h.digest().max(1)
    }

    fn bytes_fingerprint(&self, tag: &[u8], bytes: &[u8], relocs: &[ModuleReloc]) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(tag);
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
        for r in relocs {
            h.update(&r.offset.to_le_bytes());
            h.update(format!("{:?}", r.kind).as_bytes());
            h.update(&r.addend.to_le_bytes());
            h.update(self.target_name(&r.name).as_bytes());
            h.update(&[0]);
        }
        h.digest().max(1)
    }

    fn check_definable_function(&self, id: FuncId) -> ModuleResult<String> {
        let decl = self.declarations.get_function_decl(id);
        let name = decl.linkage_name(id).into_owned();
        if !decl.linkage.is_definable() {
            return Err(ModuleError::InvalidImportDefinition(name));
        }
        Ok(name)
    }

    /// What compiling `func` needs, or `None` if it is kept as it is (its fingerprint: the
    /// one `function_changed` recorded, or a hash of its IR).
    fn work_for(&mut self, func: FuncId, ctx: &Context) -> ModuleResult<Option<Work>> {
        let name = self.check_definable_function(func)?;
        let linkage = self.declarations.get_function_decl(func).linkage;
        let sym = self.func_symbol(func)?;
        let fingerprint = match self.checked_functions.remove(&func) {
            Some(fingerprint) => fingerprint,
            None => {
                let fingerprint = self.function_fingerprint(&ctx.func);
                if !self.must_compile(sym, &name, SymbolKind::Function, linkage, fingerprint)? {
                    return Ok(None);
                }
                fingerprint
            }
        };
        Ok(Some(Work {
            name,
            sym,
            fingerprint,
        }))
    }

    /// Place a function compiled in `ctx`.
    fn place_compiled(&mut self, func: FuncId, work: &Work, ctx: &Context) -> ModuleResult<()> {
        let compiled = ctx.compiled_code().ok_or_else(|| {
            backend(BackendError::Compile {
                function: work.name.clone(),
                message: "not compiled".into(),
            })
        })?;
        let relocs: Vec<ModuleReloc> = compiled
            .buffer
            .relocs()
            .iter()
            .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, func))
            .collect();
        let refs = self.references(&relocs, &work.name)?;
        let (rows, unwind) = if self.session.debug_info() {
            crate::debug::of_compiled(compiled, &**self.session.isa())
        } else {
            (Vec::new(), None)
        };
        let u = self.current_unit().map_err(backend)?;
        self.session
            .define_function(
                u,
                work.sym,
                FunctionCode {
                    code: compiled.code_buffer(),
                    align: u64::from(compiled.buffer.alignment),
                    refs: &refs,
                    fingerprint: work.fingerprint,
                    signature: crate::clif::signature_hash(&ctx.func.signature),
                    calls: &[],
                    debug: None,
                    unwind,
                },
            )
            .map_err(session_err)?;
        if self.session.debug_info() {
            self.debug.defined.push((func, work.sym, rows));
        }
        Ok(())
    }

    /// Whether definition `name` must be compiled in this build (else it is kept as it is).
    fn must_compile(
        &mut self,
        sym: SymbolId,
        name: &str,
        kind: SymbolKind,
        linkage: Linkage,
        fingerprint: u64,
    ) -> ModuleResult<bool> {
        // The definition's merged linkage, exactly: an import defined `Local` stays local.
        self.session.set_binding(sym, binding(linkage));
        let u = self.current_unit().map_err(backend)?;
        match self
            .session
            .check(u, name, kind, fingerprint)
            .map_err(session_err)?
        {
            Check::Compile => Ok(true),
            Check::Keep(_) => Ok(false),
            Check::Elsewhere(_) => Err(ModuleError::DuplicateDefinition(name.to_string())),
        }
    }
}

impl Module for ZerolinkModule {
    fn isa(&self) -> &dyn TargetIsa {
        &**self.session.isa()
    }

    fn declarations(&self) -> &ModuleDeclarations {
        &self.declarations
    }

    fn declare_function(
        &mut self,
        name: &str,
        linkage: Linkage,
        signature: &ir::Signature,
    ) -> ModuleResult<FuncId> {
        let (id, linkage) = self
            .declarations
            .declare_function(name, linkage, signature)?;
        let sym = self.func_symbol(id)?;
        // The merged linkage (import, then export: export) decides the binding.
        self.session.set_binding(sym, binding(linkage));
        Ok(id)
    }

    fn declare_anonymous_function(&mut self, signature: &ir::Signature) -> ModuleResult<FuncId> {
        let id = self.declarations.declare_anonymous_function(signature)?;
        self.func_symbol(id)?;
        Ok(id)
    }

    fn declare_data(
        &mut self,
        name: &str,
        linkage: Linkage,
        writable: bool,
        tls: bool,
    ) -> ModuleResult<DataId> {
        if tls {
            return Err(backend(BackendError::Module(format!(
                "thread-local data `{name}` is not supported yet"
            ))));
        }
        let (id, linkage) = self
            .declarations
            .declare_data(name, linkage, writable, tls)?;
        let sym = self.data_symbol(id)?;
        self.session.set_binding(sym, binding(linkage));
        Ok(id)
    }

    fn declare_anonymous_data(&mut self, writable: bool, tls: bool) -> ModuleResult<DataId> {
        if tls {
            return Err(backend(BackendError::Module(
                "thread-local data is not supported yet".into(),
            )));
        }
        let id = self.declarations.declare_anonymous_data(writable, tls)?;
        self.data_symbol(id)?;
        Ok(id)
    }

    fn define_function_with_control_plane(
        &mut self,
        func: FuncId,
        ctx: &mut Context,
        ctrl_plane: &mut ControlPlane,
    ) -> ModuleResult<()> {
        let Some(work) = self.work_for(func, ctx)? else {
            return Ok(());
        };
        compile_in(&**self.session.isa(), &work.name, ctx, ctrl_plane)?;
        self.place_compiled(func, &work, ctx)
    }

    fn define_function_bytes(
        &mut self,
        func: FuncId,
        alignment: u64,
        bytes: &[u8],
        relocs: &[ModuleReloc],
    ) -> ModuleResult<()> {
        let name = self.check_definable_function(func)?;
        let decl = self.declarations.get_function_decl(func);
        let (linkage, signature) = (decl.linkage, crate::clif::signature_hash(&decl.signature));
        let sym = self.func_symbol(func)?;
        let mut tag = b"function bytes".to_vec();
        tag.extend_from_slice(&alignment.to_le_bytes());
        tag.extend_from_slice(&signature.to_le_bytes());
        let fingerprint = match self.checked_functions.remove(&func) {
            Some(fingerprint) => fingerprint,
            None => {
                let fingerprint = self.bytes_fingerprint(&tag, bytes, relocs);
                if !self.must_compile(sym, &name, SymbolKind::Function, linkage, fingerprint)? {
                    return Ok(());
                }
                fingerprint
            }
        };
        let refs = self.references(relocs, &name)?;
        let u = self.current_unit().map_err(backend)?;
        self.session
            .define_function(
                u,
                sym,
                FunctionCode {
                    code: bytes,
                    align: alignment,
                    refs: &refs,
                    fingerprint,
                    signature,
                    calls: &[],
                    debug: None,
                    unwind: None,
                },
            )
            .map_err(session_err)?;
        Ok(())
    }

    fn define_data(&mut self, data: DataId, desc: &DataDescription) -> ModuleResult<()> {
        let decl = self.declarations.get_data_decl(data);
        let name = decl.linkage_name(data).into_owned();
        if !decl.linkage.is_definable() {
            return Err(ModuleError::InvalidImportDefinition(name));
        }
        let (writable, linkage) = (decl.writable, decl.linkage);
        let contents = match &desc.init {
            Init::Uninitialized => {
                return Err(backend(BackendError::Module(format!(
                    "data object `{name}` has no contents: call `define` or `define_zeroinit`"
                ))))
            }
            Init::Zeros { size } => Contents::Zeros(*size as u64),
            Init::Bytes { contents } => Contents::Bytes(contents),
        };
        let align = desc.align.unwrap_or(1);
        let relocs: Vec<ModuleReloc> = desc
            .all_relocs(cranelift_codegen::binemit::Reloc::Abs8)
            .collect();
        let mut tag = b"data".to_vec();
        tag.extend_from_slice(&align.to_le_bytes());
        tag.push(u8::from(writable));
        let sym = self.data_symbol(data)?;
        let fingerprint = match self.checked_data.remove(&data) {
            Some(fingerprint) => fingerprint,
            None => {
                let fingerprint = match contents {
                    Contents::Bytes(b) => self.bytes_fingerprint(&tag, b, &relocs),
                    Contents::Zeros(n) => {
                        tag.extend_from_slice(b"zeros");
                        self.bytes_fingerprint(&tag, &n.to_le_bytes(), &relocs)
                    }
                };
                if !self.must_compile(sym, &name, SymbolKind::Data, linkage, fingerprint)? {
                    return Ok(());
                }
                fingerprint
            }
        };
        let refs = self.references(&relocs, &name)?;
        let u = self.current_unit().map_err(backend)?;
        self.session
            .define_data(
                u,
                sym,
                DataObject {
                    contents,
                    align,
                    writable,
                    refs: &refs,
                    fingerprint,
                },
            )
            .map_err(session_err)
    }
}
