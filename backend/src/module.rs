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

use std::path::Path;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir;
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::Context;
use cranelift_module::{
    DataDescription, DataId, FuncId, Init, Linkage, Module, ModuleDeclarations, ModuleError,
    ModuleReloc, ModuleRelocTarget, ModuleResult,
};
use zerolink_image::{Binding, Contents, Image, Reference, Summary, SymbolId, SymbolKind};

use crate::error::BackendError;
use crate::relocs::ref_kind;

type LibcallNames = Box<dyn Fn(ir::LibCall) -> String + Send + Sync>;

/// A source file registered with [`ZerolinkModule::add_source_file`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceFileId(usize);

pub struct ZerolinkModule {
    isa: OwnedTargetIsa,
    declarations: ModuleDeclarations,
    image: Image,
    functions: Vec<Option<SymbolId>>,
    data_objects: Vec<Option<SymbolId>>,
    libcall_names: LibcallNames,
    debug: Option<DebugState>,
    /// Held from `new` until the module is finished or dropped: one build per output.
    _lock: zerolink_image::lock::BuildLock,
}

/// What debug information needs, gathered as functions are defined.
#[derive(Default)]
struct DebugState {
    files: Vec<std::path::PathBuf>,
    /// Where each function starts: (file, line).
    sources: std::collections::HashMap<FuncId, (SourceFileId, u32)>,
    /// Defined functions: symbol, line rows.
    defined: Vec<(FuncId, SymbolId, crate::debug::Rows)>,
    frames: Vec<(SymbolId, crate::debug::Unwind)>,
}

fn backend(e: impl Into<BackendError>) -> ModuleError {
    ModuleError::Backend(e.into().into())
}

/// Image errors that cranelift-module has a variant of are reported as that variant.
fn image_err(e: zerolink_image::ImageError) -> ModuleError {
    match e {
        zerolink_image::ImageError::DuplicateDefinition(n) => ModuleError::DuplicateDefinition(n),
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

impl ZerolinkModule {
    /// A module that will write the executable `output` when finished. `output` is replaced
    /// only if the build succeeds.
    /// If another build of `output` is running (a `zerolink build`, or another module for the
    /// same output, even in this process), this fails with `ImageError::Busy` rather than
    /// waiting: waiting for a module of one's own would never end.
    pub fn new(isa: OwnedTargetIsa, output: &Path) -> Result<Self, BackendError> {
        let lock = zerolink_image::lock::BuildLock::acquire(
            output,
            zerolink_image::lock::LockWait::Fail,
            &|| {},
        )?;
        Ok(ZerolinkModule {
            _lock: lock,
            isa,
            declarations: ModuleDeclarations::default(),
            image: Image::create(output)?,
            functions: Vec::new(),
            data_objects: Vec::new(),
            libcall_names: cranelift_module::default_libcall_names(),
            debug: None,
        })
    }

    /// Register a source file for debug information, as the debugger should find it (a
    /// relative path is taken from the current directory). The first call turns debug
    /// information and unwind tables on.
    pub fn add_source_file(&mut self, path: impl AsRef<Path>) -> SourceFileId {
        let debug = self.debug.get_or_insert_with(DebugState::default);
        debug.files.push(path.as_ref().to_path_buf());
        SourceFileId(debug.files.len() - 1)
    }

    /// Say that `func` starts at `line` of `file`. Its instructions' source locations are read
    /// as line numbers in the same file; instructions without one belong to the line before.
    pub fn set_function_source(
        &mut self,
        func: FuncId,
        file: SourceFileId,
        line: u32,
    ) -> Result<(), BackendError> {
        let debug = self.debug.get_or_insert_with(DebugState::default);
        if file.0 >= debug.files.len() {
            return Err(BackendError::Module(format!(
                "source file {} was not registered with add_source_file",
                file.0
            )));
        }
        debug.sources.insert(func, (file, line));
        Ok(())
    }

    /// Link against libc and the libraries in `opts` (as `cc` would): functions and data the
    /// module imports and does not define are resolved in them at `finish`, and the
    /// executable becomes a normal dynamically linked program. Without this call it is
    /// freestanding (zerolink's built-ins only).
    pub fn link_libraries(&mut self, opts: &crate::LinkOptions) -> Result<(), BackendError> {
        if opts.freestanding {
            return Ok(());
        }
        let libs = std::sync::Arc::new(crate::libs::Libraries::load(opts)?);
        let resolver = std::sync::Arc::clone(&libs);
        self.image.link_dynamically(
            libs.sonames(),
            Box::new(move |name| resolver.resolve(name).map(|(i, _)| i as u32)),
        );
        Ok(())
    }

    /// Size the code region's file space for about this many bytes of machine code.
    pub fn expect_code_bytes(&mut self, bytes: u64) {
        self.image.expect_code_bytes(bytes);
    }

    /// Resolve what is left, write the tables and move the executable into place.
    pub fn finish(mut self) -> Result<Summary, BackendError> {
        if let Some(debug) = self.debug.take() {
            self.debug_info(debug)?;
        }
        Ok(self.image.finish()?)
    }

    /// A compile unit per source file with the functions that start in it, and unwind tables
    /// for every function compiled here.
    fn debug_info(&mut self, debug: DebugState) -> Result<(), BackendError> {
        use crate::debug::{FunctionLines, SourceFile, UnitSource};
        let placed = |image: &Image, sym: SymbolId| image.symbols().get(sym).placement();
        let mut lines = Vec::new();
        for (func, sym, rows) in debug.defined {
            let (Some(&(file, line)), Some(p)) =
                (debug.sources.get(&func), placed(&self.image, sym))
            else {
                continue;
            };
            lines.push(FunctionLines {
                name: self.image.symbols().name(sym),
                file: file.0,
                line,
                addr: p.slot.addr,
                size: p.size,
                rows,
            });
        }
        lines.sort_by_key(|l| l.addr);
        let files: Vec<SourceFile> = debug.files.iter().map(|p| SourceFile::new(p)).collect();
        let units: Vec<UnitSource<'_>> = files
            .iter()
            .enumerate()
            .map(|(i, file)| UnitSource::Fresh {
                file,
                functions: lines.iter().filter(|l| l.file == i).collect(),
            })
            .collect();
        let (sections, index) = crate::debug::sections(
            &units,
            None,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )?;
        self.image.set_extra_sections(sections, index);
        let mut frames: Vec<(u64, crate::debug::Unwind)> = debug
            .frames
            .into_iter()
            .filter_map(|(sym, info)| Some((placed(&self.image, sym)?.slot.addr, info)))
            .collect();
        frames.sort_by_key(|(addr, _)| *addr);
        if let Some(eh) = crate::debug::eh_frame(&*self.isa, &frames)? {
            self.image.set_eh_frame(eh);
        }
        Ok(())
    }

    fn func_symbol(&mut self, id: FuncId) -> ModuleResult<SymbolId> {
        if let Some(Some(s)) = self.functions.get(id.as_u32() as usize) {
            return Ok(*s);
        }
        let decl = self.declarations.get_function_decl(id);
        let name = decl.linkage_name(id).into_owned();
        let sym = self
            .image
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
            .image
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
                self.image
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

    fn check_definable_function(&self, id: FuncId) -> ModuleResult<String> {
        let decl = self.declarations.get_function_decl(id);
        let name = decl.linkage_name(id).into_owned();
        if !decl.linkage.is_definable() {
            return Err(ModuleError::InvalidImportDefinition(name));
        }
        Ok(name)
    }
}

impl Module for ZerolinkModule {
    fn isa(&self) -> &dyn TargetIsa {
        &*self.isa
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
        // A later, stronger declaration (import, then export) upgrades the binding.
        self.image
            .declare(name, SymbolKind::Function, binding(linkage))
            .map_err(backend)?;
        debug_assert_eq!(
            Some(Some(sym)),
            self.functions.get(id.as_u32() as usize).copied()
        );
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
        self.data_symbol(id)?;
        self.image
            .declare(name, SymbolKind::Data, binding(linkage))
            .map_err(backend)?;
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
        let name = self.check_definable_function(func)?;
        // Cranelift panics on some input its verifier accepts (an `i128` argument on x86-64):
        // the compiler using this module gets an error naming the function instead.
        let isa = &*self.isa;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ctx.compile(isa, ctrl_plane)
                .map(|_| ())
                .map_err(cranelift_module::ModuleError::from)
        })) {
            Ok(r) => r?,
            Err(payload) => return Err(backend(crate::error::cannot_compile(name, payload))),
        }
        let compiled = ctx.compiled_code().expect("compiled just above");
        let align = u64::from(compiled.buffer.alignment);
        let relocs: Vec<ModuleReloc> = compiled
            .buffer
            .relocs()
            .iter()
            .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, func))
            .collect();
        let refs = self.references(&relocs, &name)?;
        let sym = self.func_symbol(func)?;
        let compiled = ctx.compiled_code().expect("compiled");
        self.image
            .define_function(sym, compiled.code_buffer(), align, &refs)
            .map_err(image_err)?;
        if let Some(debug) = &mut self.debug {
            let (rows, unwind) = crate::debug::of_compiled(compiled, &*self.isa);
            debug.defined.push((func, sym, rows));
            if let Some(info) = unwind {
                debug.frames.push((sym, info));
            }
        }
        Ok(())
    }

    fn define_function_bytes(
        &mut self,
        func: FuncId,
        alignment: u64,
        bytes: &[u8],
        relocs: &[ModuleReloc],
    ) -> ModuleResult<()> {
        let name = self.check_definable_function(func)?;
        let refs = self.references(relocs, &name)?;
        let sym = self.func_symbol(func)?;
        self.image
            .define_function(sym, bytes, alignment, &refs)
            .map_err(image_err)
    }

    fn define_data(&mut self, data: DataId, desc: &DataDescription) -> ModuleResult<()> {
        let decl = self.declarations.get_data_decl(data);
        let name = decl.linkage_name(data).into_owned();
        if !decl.linkage.is_definable() {
            return Err(ModuleError::InvalidImportDefinition(name));
        }
        let writable = decl.writable;
        let contents = match &desc.init {
            Init::Uninitialized => {
                return Err(backend(BackendError::Module(format!(
                    "data object `{name}` has no contents: call `define` or `define_zeroinit`"
                ))))
            }
            Init::Zeros { size } => Contents::Zeros(*size as u64),
            Init::Bytes { contents } => Contents::Bytes(contents),
        };
        let relocs: Vec<ModuleReloc> = desc
            .all_relocs(cranelift_codegen::binemit::Reloc::Abs8)
            .collect();
        let refs = self.references(&relocs, &name)?;
        let sym = self.data_symbol(data)?;
        self.image
            .define_data(sym, contents, desc.align.unwrap_or(1), writable, &refs)
            .map_err(image_err)
    }
}
