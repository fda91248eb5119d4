//! Defining through the `Module` trait: each function is checked against the table by its
//! fingerprint, compiled only if it changed (one at a time, or a batch on several threads),
//! and placed through the session.

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir;
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::Context;
use cranelift_module::{
    DataDescription, DataId, FuncId, Init, Linkage, Module, ModuleDeclarations, ModuleError,
    ModuleReloc, ModuleResult,
};
use zerolink_image::{Contents, SymbolKind};

use super::*;
use crate::session::{DataObject, FunctionCode};

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

impl ZerolinkModule {
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
        let (id, linkage) = self
            .declarations
            .declare_data(name, linkage, writable, tls)?;
        let sym = self.data_symbol(id)?;
        self.session.set_binding(sym, binding(linkage));
        Ok(id)
    }

    fn declare_anonymous_data(&mut self, writable: bool, tls: bool) -> ModuleResult<DataId> {
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
        let (writable, linkage, tls) = (decl.writable, decl.linkage, decl.tls);
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
        tag.push(u8::from(tls));
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
                    tls,
                    refs: &refs,
                    fingerprint,
                },
            )
            .map_err(session_err)
    }
}
