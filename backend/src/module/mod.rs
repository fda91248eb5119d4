//! [`ZerolinkModule`]: a `cranelift_module::Module` whose output is a finished executable.
//!
//! A compiler that builds an `ObjectModule` today builds a `ZerolinkModule` instead and calls
//! [`ZerolinkModule::finish`] where it used to emit an object file. Declarations follow
//! cranelift-module's own rules (`ModuleDeclarations` merges linkages and checks signatures);
//! each definition is compiled at once and written straight into its slot in the image, and its
//! relocations become reference sites that the image patches as addresses become known.
//!
//! [`ZerolinkModule::open`] updates the executable a previous build left: the compiler defines
//! its program again, and each definition whose fingerprint (its own, given with
//! [`ZerolinkModule::function_changed`], or a hash of the IR, `fingerprint.rs`) is the table's
//! is kept instead of compiled (`define.rs`); with [`ZerolinkModule::begin_unit`] a whole unit
//! is skipped. Underneath is a [`crate::Session`], as for `zerolink build`.
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

use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_module::{
    DataId, FuncId, Linkage, ModuleDeclarations, ModuleError, ModuleReloc, ModuleRelocTarget,
    ModuleResult,
};
use zerolink_image::lock::LockWait;
use zerolink_image::{Binding, Reference, SymbolId, SymbolKind};

use crate::error::BackendError;
use crate::libs::LinkOptions;
use crate::objects::{Origin, Precompiled, PrecompiledInput};
use crate::relocs::ref_kind;
use crate::session::{
    Check, FunctionDebug, LibcallNames, Report, Session, SessionOptions, SourceId, UnitId,
    UnitStatus,
};

mod define;
mod fingerprint;

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
    /// The update is for a running process too (`crate::hot::Attached::live`): hand
    /// `finish`'s report to `Attached::apply` afterwards.
    pub live: Option<zerolink_image::live::LiveOptions>,
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
            live: None,
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
    /// How the program is linked: for the toolchain's archives at `finish`.
    link: LinkOptions,
    /// Objects and archives added with [`ZerolinkModule::add_precompiled`], in order.
    precompiled: Vec<std::path::PathBuf>,
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
    /// Formerly the constructor; it builds a *freestanding* program (no libc), which its name
    /// did not say, so `puts` was undefined for those who took it for `ObjectModule::new`'s
    /// twin.
    #[deprecated(
        since = "0.1.0",
        note = "use `ZerolinkModule::freestanding` (what this was), or `ZerolinkModule::open` \
                with `ModuleOptions` for a program linked with libc"
    )]
    pub fn new(isa: OwnedTargetIsa, output: &Path) -> Result<Self, BackendError> {
        Self::freestanding(isa, output)
    }

    /// A module that writes a new, freestanding executable (no libc: the image's built-ins
    /// only) at `output` when finished: a full build, linked with libraries only if
    /// [`ZerolinkModule::link_libraries`] is called. `output` is replaced only if the build
    /// succeeds. If another build of `output` is running (a `zerolink build`, or another
    /// module for the same output, even in this process), this fails with
    /// `ImageError::Busy` rather than waiting. For a libc program and in-place updates, use
    /// [`ZerolinkModule::open`].
    pub fn freestanding(isa: OwnedTargetIsa, output: &Path) -> Result<Self, BackendError> {
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
        let link = opts.link.clone();
        let session = Session::open(
            output,
            isa,
            &SessionOptions {
                force_full: opts.force_full,
                debug_info: opts.debug_info,
                link: opts.link,
                lock: opts.lock,
                language: opts.language,
                live: opts.live.as_ref(),
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
            link,
            precompiled: Vec::new(),
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

    /// Whether debug information is being written.
    pub fn debug_info(&self) -> bool {
        self.session.debug_info()
    }

    pub(super) fn current_unit(&mut self) -> Result<UnitId, BackendError> {
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
        self.link = opts.clone();
        self.unit = None;
        Ok(())
    }

    /// Add precompiled code: an ELF relocatable object (`cc -c` output) or an `ar` archive of
    /// them (a static library). Objects are placed whole; archive members as the module's
    /// references need them, at `finish`. An update keeps them as they are if they did not
    /// change; if one did (or a new reference needs a member not yet placed), `finish`
    /// returns [`BackendError::NeedsFullBuild`].
    pub fn add_precompiled(&mut self, path: &Path) {
        self.precompiled.push(path.to_path_buf());
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
        // Precompiled code after the module's own: what it refers to decides the members.
        let mut inputs: Vec<PrecompiledInput> = self
            .precompiled
            .iter()
            .map(|p| PrecompiledInput {
                path: p.clone(),
                origin: Origin::User,
            })
            .collect();
        inputs.extend(crate::libs::archives(&self.link)?);
        let pre = Precompiled::new(inputs);
        let mut claimed = pre
            .claim(&mut self.session)?
            .map_err(BackendError::NeedsFullBuild)?;
        if let Some(reason) = pre.finish(&mut self.session, &mut claimed)? {
            return Err(BackendError::NeedsFullBuild(reason));
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

    pub(super) fn func_symbol(&mut self, id: FuncId) -> ModuleResult<SymbolId> {
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

    pub(super) fn data_symbol(&mut self, id: DataId) -> ModuleResult<SymbolId> {
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

    pub(super) fn references(
        &mut self,
        relocs: &[ModuleReloc],
        owner: &str,
    ) -> ModuleResult<Vec<Reference>> {
        relocs
            .iter()
            // The `__tls_get_addr` call of a general-dynamic sequence goes with its site.
            .filter(|r| {
                !(r.kind == cranelift_codegen::binemit::Reloc::X86CallPLTRel4
                    && matches!(
                        r.name,
                        cranelift_module::ModuleRelocTarget::LibCall(
                            cranelift_codegen::ir::LibCall::ElfTlsGetAddr
                        )
                    ))
            })
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

    pub(super) fn check_definable_function(&self, id: FuncId) -> ModuleResult<String> {
        let decl = self.declarations.get_function_decl(id);
        let name = decl.linkage_name(id).into_owned();
        if !decl.linkage.is_definable() {
            return Err(ModuleError::InvalidImportDefinition(name));
        }
        Ok(name)
    }

    /// Whether definition `name` must be compiled in this build (else it is kept as it is).
    pub(super) fn must_compile(
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
