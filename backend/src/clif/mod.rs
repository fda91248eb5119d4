//! CLIF programs: text files of Cranelift IR plus `; data:` directives, read into a
//! [`Program`] and defined into any `cranelift_module::Module`.
//!
//! All files share one namespace, as if linked: every function is a global symbol, a call to a
//! function of another file resolves to it, and a name nothing defines becomes an import that
//! the image resolves (built-ins) or reports as undefined. Defining into a `Module` rewrites the
//! parser's test-case names (`%foo`) into the module's own references, the same way a compiler
//! front end would build them with `declare_func_in_func`.

pub mod directives;

use std::collections::HashMap;
use std::path::PathBuf;

use cranelift_codegen::ir::{self, ExternalName, GlobalValueData, UserExternalName};
use cranelift_codegen::isa::CallConv;
use cranelift_codegen::CodegenError;
use cranelift_module::{
    DataDescription, FuncOrDataId, Linkage, Module, ModuleError, ModuleRelocTarget,
};
use cranelift_reader::{parse_test, ParseOptions};

pub use directives::{AddrItem, DataDirective, DataInit};

use crate::error::{BackendError, Result, SourcePos};

/// Names the image provides itself in a freestanding executable.
fn is_builtin(name: &str) -> bool {
    zerolink_image::x86_64::builtin(name).is_some()
}

pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

pub struct FunctionDef {
    pub name: String,
    pub file: usize,
    pub line: usize,
    pub func: ir::Function,
}

pub struct DataDef {
    pub file: usize,
    pub directive: DataDirective,
}

#[derive(Default)]
pub struct Program {
    pub files: Vec<SourceFile>,
    pub functions: Vec<FunctionDef>,
    pub data: Vec<DataDef>,
}

impl Program {
    /// Read and parse the given files.
    pub fn read(paths: &[PathBuf]) -> Result<Program> {
        let mut sources = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|error| BackendError::Read {
                path: path.clone(),
                error,
            })?;
            sources.push((path.clone(), text));
        }
        Program::parse(sources)
    }

    /// Parse in-memory sources (path, text).
    pub fn parse(sources: Vec<(PathBuf, String)>) -> Result<Program> {
        let mut program = Program::default();
        let mut seen: HashMap<String, SourcePos> = HashMap::new();
        for (path, text) in sources {
            let file = program.files.len();
            let parsed = parse_test(&text, parse_options()).map_err(|e| BackendError::Parse {
                pos: SourcePos {
                    file: path.clone(),
                    line: e.location.line_number,
                },
                message: e.message.clone(),
            })?;
            for (func, details) in parsed.functions {
                let pos = SourcePos {
                    file: path.clone(),
                    line: details.location.line_number,
                };
                let name = match &func.name {
                    ir::UserFuncName::Testcase(t) => String::from_utf8_lossy(t.raw()).into_owned(),
                    ir::UserFuncName::User(u) => {
                        return Err(BackendError::Unsupported {
                            pos,
                            message: format!(
                                "function named `{u}`: give functions names like `%name`"
                            ),
                        })
                    }
                };
                check_unique(&mut seen, &name, &pos)?;
                program.functions.push(FunctionDef {
                    name,
                    file,
                    line: pos.line,
                    func,
                });
            }
            for directive in directives::scan(&text, &path)? {
                let pos = SourcePos {
                    file: path.clone(),
                    line: directive.line,
                };
                check_unique(&mut seen, &directive.name, &pos)?;
                program.data.push(DataDef { file, directive });
            }
            program.files.push(SourceFile { path, text });
        }
        Ok(program)
    }

    fn pos(&self, file: usize, line: usize) -> SourcePos {
        SourcePos {
            file: self.files[file].path.clone(),
            line,
        }
    }

    /// A rough size of the machine code, to size the output once instead of growing it.
    pub fn code_size_estimate(&self) -> u64 {
        self.files.iter().map(|f| f.text.len() as u64).sum::<u64>() / 2
    }

    /// Declare and define everything in `module`.
    pub fn define_in<M: Module>(&self, module: &mut M) -> Result<()> {
        // Pass 1: declare every definition, so any function may refer to any other.
        let mut ids: HashMap<&str, FuncOrDataId> = HashMap::new();
        for d in &self.data {
            let linkage = if d.directive.export {
                Linkage::Export
            } else {
                Linkage::Hidden
            };
            let id =
                module.declare_data(&d.directive.name, linkage, d.directive.writable, false)?;
            ids.insert(&d.directive.name, FuncOrDataId::Data(id));
        }
        for f in &self.functions {
            let id = module.declare_function(&f.name, Linkage::Export, &f.func.signature)?;
            ids.insert(&f.name, FuncOrDataId::Func(id));
        }

        // Pass 2: data objects, then functions.
        for d in &self.data {
            self.define_data(module, &ids, d)?;
        }
        let mut ctx = module.make_context();
        for f in &self.functions {
            let FuncOrDataId::Func(id) = ids[f.name.as_str()] else {
                unreachable!("functions are declared as functions")
            };
            ctx.clear();
            ctx.func = f.func.clone();
            self.resolve_names(module, &ids, f, &mut ctx.func)?;
            module
                .define_function(id, &mut ctx)
                .map_err(|e| self.compile_error(f, e))?;
        }
        Ok(())
    }

    /// Turn the parser's `%name` references into the module's, declaring imports on the way.
    fn resolve_names<M: Module>(
        &self,
        module: &mut M,
        ids: &HashMap<&str, FuncOrDataId>,
        f: &FunctionDef,
        func: &mut ir::Function,
    ) -> Result<()> {
        let refs: Vec<ir::FuncRef> = func.dfg.ext_funcs.keys().collect();
        for fref in refs {
            let ext = &func.dfg.ext_funcs[fref];
            let name = match &ext.name {
                ExternalName::TestCase(t) => String::from_utf8_lossy(t.raw()).into_owned(),
                _ => continue,
            };
            let sig = func.dfg.signatures[ext.signature].clone();
            let (id, colocated) = match ids.get(name.as_str()) {
                Some(FuncOrDataId::Func(id)) => {
                    let defined = &module.declarations().get_function_decl(*id).signature;
                    if !same_signature(defined, &sig) {
                        return Err(BackendError::SignatureMismatch {
                            pos: self.pos(f.file, f.line),
                            function: f.name.clone(),
                            message: format!(
                                "calls `{name}` as `{sig}`, but `{name}` is defined as `{defined}`"
                            ),
                        });
                    }
                    (*id, true)
                }
                Some(FuncOrDataId::Data(_)) => {
                    return Err(BackendError::NotAFunction {
                        pos: self.pos(f.file, f.line),
                        function: f.name.clone(),
                        name,
                    })
                }
                None => {
                    let id = module.declare_function(&name, Linkage::Import, &sig)?;
                    (id, is_builtin(&name))
                }
            };
            let user = func.declare_imported_user_function(UserExternalName::new(0, id.as_u32()));
            let ext = &mut func.dfg.ext_funcs[fref];
            ext.name = ExternalName::user(user);
            ext.colocated = colocated;
        }

        let gvs: Vec<ir::GlobalValue> = func.global_values.keys().collect();
        for gv in gvs {
            let GlobalValueData::Symbol { name, .. } = &func.global_values[gv] else {
                continue;
            };
            let name = match name {
                ExternalName::TestCase(t) => String::from_utf8_lossy(t.raw()).into_owned(),
                _ => continue,
            };
            let (namespace, index, colocated) = match ids.get(name.as_str()) {
                Some(FuncOrDataId::Func(id)) => (0, id.as_u32(), true),
                Some(FuncOrDataId::Data(id)) => (1, id.as_u32(), true),
                None if is_builtin(&name) => {
                    let sig = ir::Signature::new(CallConv::SystemV);
                    let id = module.declare_function(&name, Linkage::Import, &sig)?;
                    (0, id.as_u32(), true)
                }
                None => {
                    let id = module.declare_data(&name, Linkage::Import, false, false)?;
                    (1, id.as_u32(), false)
                }
            };
            let user = func.declare_imported_user_function(UserExternalName::new(namespace, index));
            if let GlobalValueData::Symbol {
                name, colocated: c, ..
            } = &mut func.global_values[gv]
            {
                *name = ExternalName::user(user);
                *c = colocated;
            }
        }
        Ok(())
    }

    fn define_data<M: Module>(
        &self,
        module: &mut M,
        ids: &HashMap<&str, FuncOrDataId>,
        d: &DataDef,
    ) -> Result<()> {
        let dir = &d.directive;
        let FuncOrDataId::Data(id) = ids[dir.name.as_str()] else {
            unreachable!("data is declared as data")
        };
        let mut desc = DataDescription::new();
        desc.set_align(dir.align);
        match &dir.init {
            DataInit::Zeroed(n) => desc.define_zeroinit(*n as usize),
            DataInit::Bytes { bytes, addrs } => {
                desc.define(bytes.clone().into_boxed_slice());
                for a in addrs {
                    let target = match ids.get(a.target.as_str()) {
                        Some(FuncOrDataId::Func(f)) => ModuleRelocTarget::user(0, f.as_u32()),
                        Some(FuncOrDataId::Data(d)) => ModuleRelocTarget::user(1, d.as_u32()),
                        None if is_builtin(&a.target) => {
                            let sig = ir::Signature::new(CallConv::SystemV);
                            let f = module.declare_function(&a.target, Linkage::Import, &sig)?;
                            ModuleRelocTarget::user(0, f.as_u32())
                        }
                        None => {
                            let d =
                                module.declare_data(&a.target, Linkage::Import, false, false)?;
                            ModuleRelocTarget::user(1, d.as_u32())
                        }
                    };
                    if matches!(target, ModuleRelocTarget::User { namespace: 0, .. }) {
                        // Function addresses in data carry no addend in cranelift-module.
                        if a.addend != 0 {
                            return Err(BackendError::Directive {
                                pos: self.pos(d.file, dir.line),
                                message: format!(
                                    "`addr %{} + {}`: offsets are allowed into data objects only",
                                    a.target, a.addend
                                ),
                            });
                        }
                        let fref = desc.import_function(target);
                        desc.write_function_addr(a.offset, fref);
                    } else {
                        let gv = desc.import_global_value(target);
                        desc.write_data_addr(a.offset, gv, a.addend);
                    }
                }
            }
        }
        module
            .define_data(id, &desc)
            .map_err(|e| match BackendError::from(e) {
                BackendError::Module(m) => BackendError::Directive {
                    pos: self.pos(d.file, dir.line),
                    message: m,
                },
                other => other,
            })
    }

    /// Turn a compile failure into an error with file and line, finding the line of the
    /// offending instruction by parsing the function's file again (errors are rare; keeping
    /// every function's source map would cost memory on every build).
    fn compile_error(&self, f: &FunctionDef, e: ModuleError) -> BackendError {
        match e {
            ModuleError::Compilation(CodegenError::Verifier(errors)) => {
                let first = errors.0.first();
                let line = first
                    .and_then(|err| self.entity_line(f, err.location))
                    .unwrap_or(f.line);
                let message = match first {
                    Some(err) => match &err.context {
                        Some(ctx) => format!("{}: {} ({})", err.location, err.message, ctx),
                        None => format!("{}: {}", err.location, err.message),
                    },
                    None => "verifier error".into(),
                };
                BackendError::Verifier {
                    pos: self.pos(f.file, line),
                    function: f.name.clone(),
                    message,
                }
            }
            ModuleError::Compilation(other) => BackendError::Compile {
                function: format!("{} ({})", f.name, self.pos(f.file, f.line)),
                message: other.to_string(),
            },
            other => BackendError::from(other),
        }
    }

    fn entity_line(&self, f: &FunctionDef, entity: ir::entities::AnyEntity) -> Option<usize> {
        let parsed = parse_test(&self.files[f.file].text, parse_options()).ok()?;
        let (_, details) = parsed
            .functions
            .iter()
            .find(|(_, d)| d.location.line_number == f.line)?;
        details.map.location(entity).map(|l| l.line_number)
    }
}

fn parse_options() -> ParseOptions<'static> {
    ParseOptions {
        default_calling_convention: CallConv::SystemV,
        ..ParseOptions::default()
    }
}

fn check_unique(seen: &mut HashMap<String, SourcePos>, name: &str, pos: &SourcePos) -> Result<()> {
    if let Some(first) = seen.get(name) {
        return Err(BackendError::DuplicateDefinition {
            name: name.to_string(),
            first: first.clone(),
            second: pos.clone(),
        });
    }
    seen.insert(name.to_string(), pos.clone());
    Ok(())
}

fn same_signature(a: &ir::Signature, b: &ir::Signature) -> bool {
    a.params == b.params && a.returns == b.returns && a.call_conv == b.call_conv
}

impl Program {
    /// Where a symbol is defined, for messages about it.
    pub fn locate(&self, name: &str) -> Option<SourcePos> {
        if let Some(f) = self.functions.iter().find(|f| f.name == name) {
            return Some(self.pos(f.file, f.line));
        }
        self.data
            .iter()
            .find(|d| d.directive.name == name)
            .map(|d| self.pos(d.file, d.directive.line))
    }
}
