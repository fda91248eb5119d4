//! CLIF programs: text files of Cranelift IR plus `; data:` directives.
//!
//! Reading a [`Program`] does not parse CLIF: it splits each file into one chunk per function
//! (from a line starting with `function` to the next one), takes the function's name from that
//! line, hashes the chunk, and scans the data directives. Each function is parsed only when it
//! is compiled, so an update that finds a chunk's hash unchanged never parses it. Text before a
//! file's first function may hold only comments and `test`/`set`/`target` lines; it is checked.
//!
//! All files share one namespace, as if linked: every function is a global symbol, a call to a
//! function of another file resolves to it, and a name nothing defines becomes an import that
//! the image resolves (built-ins) or reports as undefined. [`Program::define_in`] defines the
//! program into any `cranelift_module::Module` (ours, or cranelift-object's);
//! `crate::driver` defines it straight into an image, fresh or reopened.

pub mod directives;
mod library;

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use cranelift_codegen::ir::{self, ExternalName, GlobalValueData, UserExternalName};
use cranelift_codegen::isa::CallConv;
use cranelift_codegen::CodegenError;
use cranelift_module::{DataDescription, FuncOrDataId, Linkage, Module, ModuleRelocTarget};
use cranelift_reader::{parse_test, ParseOptions, SourceMap};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

pub use directives::{AddrItem, DataDirective, DataInit};

use crate::error::{BackendError, Result, SourcePos};
use crate::inputs::{FileRecord, FileStat};

/// Names the image provides itself in a freestanding executable.
/// The highest entity number (`v123`, `block7`, `ss2`, ...) accepted in a function's text:
/// cranelift-reader sizes its arrays by the highest number it sees, so `v4000000000` in a
/// two-line function would make it allocate gigabytes. Generous for any real text.
fn entity_limit(text: &str) -> u64 {
    (64 * text.len() as u64).max(1 << 20)
}

/// What cranelift-reader numbers densely: values, blocks, stack slots, global values,
/// functions and signatures referred to, jump tables, constants, memory and dynamic types.
const ENTITY_PREFIXES: &[&str] = &[
    "v", "block", "ss", "dss", "gv", "fn", "sig", "jt", "const", "mt", "dt", "exn",
];

/// The first entity reference numbered above `entity_limit`: (line in the text, name).
fn oversized_entity(text: &str) -> Option<(usize, String)> {
    let limit = entity_limit(text);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        // Only entity references (`v12`, `block3`): not numbers (`iconst.i64 12`), and not
        // names (`%f1500000`, `fn0 = %block9`).
        let name_start = text[..start]
            .rfind(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .map_or(0, |p| p + 1);
        let entity = ENTITY_PREFIXES.contains(&&text[name_start..start])
            && !text[..name_start].ends_with('%');
        let huge = text[start..i].parse::<u64>().map_or(true, |n| n > limit);
        if entity && huge {
            let line = 1 + bytes[..start].iter().filter(|&&b| b == b'\n').count();
            return Some((line, text[name_start..i].to_string()));
        }
    }
    None
}

/// A CLIF file's text; bytes that are not UTF-8 are an error naming the line they are on.
fn read_text(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|error| BackendError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        BackendError::Parse {
            pos: SourcePos {
                file: path.to_path_buf(),
                line,
            },
            message: format!(
                "invalid UTF-8 (byte {:#04x}): CLIF files are UTF-8 text",
                bytes[at]
            ),
        }
    })
}

pub fn is_builtin(name: &str) -> bool {
    zerolink_image::x86_64::builtin(name).is_some()
}

pub struct SourceFile {
    pub path: PathBuf,
    /// Empty when the file was not read.
    pub text: String,
    /// Hash of everything the file defines (its chunks' and directives' hashes, in order).
    pub digest: u64,
    /// The file's functions and data objects, as ranges of `Program::functions` and `data`
    /// (empty when the file was not read).
    pub functions: Range<usize>,
    pub data: Range<usize>,
    /// Its stat data before it was read (or found unchanged).
    pub stat: FileStat,
    /// The number its symbols carry in the image's table.
    pub unit: u32,
    /// Whether the file was read. An update leaves files unread that did not change since
    /// the previous build: their definitions are in the image, not here.
    pub loaded: bool,
    /// Functions and data objects it defines (also when not read).
    pub definitions: usize,
}

/// One function's text: where it is and what it hashes to.
pub struct FunctionDef {
    pub name: String,
    pub file: usize,
    /// Line of the `function` keyword, 1-based.
    pub line: usize,
    pub span: Range<usize>,
    pub hash: u64,
}

pub struct DataDef {
    pub file: usize,
    pub directive: DataDirective,
    pub hash: u64,
}

/// What a name in the program stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Definition {
    Function(usize),
    Data(usize),
}

/// A parsed function and its source map (for the lines of verifier errors).
pub struct Parsed {
    pub func: ir::Function,
    pub map: SourceMap,
}

#[derive(Default)]
pub struct Program {
    pub files: Vec<SourceFile>,
    pub functions: Vec<FunctionDef>,
    pub data: Vec<DataDef>,
    pub names: HashMap<String, Definition>,
}

impl Program {
    /// Read the given files, all of them.
    pub fn read(paths: &[PathBuf]) -> Result<Program> {
        let stats = crate::inputs::stat_all(paths)?;
        let units: Vec<u32> = (0..paths.len() as u32).collect();
        Program::read_some(paths, &stats, &units, &vec![None; paths.len()])
    }

    /// Read the files whose `kept` entry is `None`; the others are unchanged since the build
    /// that recorded them and stay unread (their definitions are in the image's table).
    /// `stats` were taken before anything was read; `units` number the files in the table.
    pub fn read_some(
        paths: &[PathBuf],
        stats: &[FileStat],
        units: &[u32],
        kept: &[Option<FileRecord>],
    ) -> Result<Program> {
        // Files are read on every core: a full build reads the whole program, and reading
        // (with its UTF-8 check) is otherwise a serial tenth of a second per 100 MB.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let items: Vec<(&PathBuf, bool)> = paths
            .iter()
            .zip(kept)
            .map(|(p, k)| (p, k.is_none()))
            .collect();
        let to_read = items.iter().filter(|(_, read)| *read).count();
        let threads = if to_read > 1 { threads } else { 1 };
        let texts = crate::parallel::map(
            &items,
            threads,
            || (),
            |_, &(path, read)| read.then(|| read_text(path)).transpose(),
        );
        let mut sources = Vec::with_capacity(paths.len());
        for (path, text) in paths.iter().zip(texts) {
            sources.push((path.clone(), text?));
        }
        let mut program = Program::parse_some(sources)?;
        for (i, f) in program.files.iter_mut().enumerate() {
            f.stat = stats[i];
            f.unit = units[i];
            if let Some(r) = &kept[i] {
                f.digest = r.digest;
                f.definitions = r.definitions as usize;
            }
        }
        Ok(program)
    }

    /// Split in-memory sources (path, text) into functions and data objects. Files are
    /// scanned and hashed in parallel; names are then checked for duplicates in input order.
    pub fn parse(sources: Vec<(PathBuf, String)>) -> Result<Program> {
        let mut program =
            Program::parse_some(sources.into_iter().map(|(p, t)| (p, Some(t))).collect())?;
        for (i, f) in program.files.iter_mut().enumerate() {
            f.unit = i as u32;
        }
        Ok(program)
    }

    /// As `parse`, with `None` for files that are not read.
    fn parse_some(sources: Vec<(PathBuf, Option<String>)>) -> Result<Program> {
        let scanned = scan_files(&sources);
        let mut program = Program::default();
        program.names.reserve(
            scanned
                .iter()
                .map(|s| s.as_ref().map_or(0, |s| s.0.len() + s.1.len()))
                .sum(),
        );
        for ((path, text), scanned) in sources.into_iter().zip(scanned) {
            let (functions, data) = scanned?;
            let file = program.files.len();
            let (first_function, first_data) = (program.functions.len(), program.data.len());
            let mut digest = Xxh3::new();
            for (name, line, span, hash) in functions {
                let def = Definition::Function(program.functions.len());
                program.define_name(&name, def, &path, line)?;
                digest.update(&hash.to_le_bytes());
                program.functions.push(FunctionDef {
                    name,
                    file,
                    line,
                    span,
                    hash,
                });
            }
            for directive in data {
                let def = Definition::Data(program.data.len());
                program.define_name(&directive.name, def, &path, directive.line)?;
                let hash = directive_hash(&directive);
                digest.update(&hash.to_le_bytes());
                program.data.push(DataDef {
                    file,
                    hash,
                    directive,
                });
            }
            let functions = first_function..program.functions.len();
            let data = first_data..program.data.len();
            program.files.push(SourceFile {
                path,
                loaded: text.is_some(),
                text: text.unwrap_or_default(),
                digest: digest.digest(),
                definitions: functions.len() + data.len(),
                functions,
                data,
                stat: FileStat::default(),
                unit: 0,
            });
        }
        Ok(program)
    }

    /// Functions and data objects of every file, read or not.
    pub fn definitions(&self) -> usize {
        self.files.iter().map(|f| f.definitions).sum()
    }

    /// Record a definition; a second one of the same name is an error naming both places.
    fn define_name(
        &mut self,
        name: &str,
        def: Definition,
        path: &std::path::Path,
        line: usize,
    ) -> Result<()> {
        if zerolink_image::x86_64::RESERVED.contains(&name) {
            return Err(BackendError::Parse {
                pos: SourcePos {
                    file: path.to_path_buf(),
                    line,
                },
                message: zerolink_image::ImageError::Reserved(name.to_string()).to_string(),
            });
        }
        if let Some(first) = self.names.get(name) {
            let first = match *first {
                Definition::Function(i) => {
                    let f = &self.functions[i];
                    (f.file, f.line)
                }
                Definition::Data(i) => {
                    let d = &self.data[i];
                    (d.file, d.directive.line)
                }
            };
            let first = match self.files.get(first.0) {
                Some(f) => SourcePos {
                    file: f.path.clone(),
                    line: first.1,
                },
                // Defined earlier in the file being added.
                None => SourcePos {
                    file: path.to_path_buf(),
                    line: first.1,
                },
            };
            return Err(BackendError::DuplicateDefinition {
                name: name.to_string(),
                first,
                second: SourcePos {
                    file: path.to_path_buf(),
                    line,
                },
            });
        }
        self.names.insert(name.to_string(), def);
        Ok(())
    }

    pub fn pos(&self, file: usize, line: usize) -> SourcePos {
        SourcePos {
            file: self.files[file].path.clone(),
            line,
        }
    }

    /// A rough, low size of the machine code: CLIF text is some seven times larger than the
    /// code it compiles to. Too low costs an in-place growth of the file; too high, file size.
    pub fn code_size_estimate(&self) -> u64 {
        self.files.iter().map(|f| f.text.len() as u64).sum::<u64>() / 8
    }

    /// Parse one function from its chunk, with file and line in any error.
    pub fn parse_function(&self, f: &FunctionDef) -> Result<Parsed> {
        let text = &self.files[f.file].text[f.span.clone()];
        let pos = |line: usize| self.pos(f.file, f.line + line - 1);
        if let Some((line, name)) = oversized_entity(text) {
            return Err(BackendError::Parse {
                pos: pos(line),
                message: format!(
                    "`{name}` is numbered too high: entities (values, blocks, slots, ...) are \
                     kept in arrays as long as their highest number, so keep numbers below \
                     {} in a function of this size",
                    entity_limit(text)
                ),
            });
        }
        let parsed = parse_test(text, parse_options()).map_err(|e| BackendError::Parse {
            pos: pos(e.location.line_number),
            message: e.message.clone(),
        })?;
        let mut functions = parsed.functions.into_iter();
        match (functions.next(), functions.next()) {
            (Some((func, details)), None) => Ok(Parsed {
                func,
                map: details.map,
            }),
            _ => Err(BackendError::Parse {
                pos: pos(1),
                message: "expected exactly one function here".into(),
            }),
        }
    }

    /// The error for `caller` calling `name`, which the program defines as data.
    pub fn not_a_function(&self, caller: &FunctionDef, name: &str) -> BackendError {
        BackendError::NotAFunction {
            pos: self.pos(caller.file, caller.line),
            function: caller.name.clone(),
            name: name.to_string(),
        }
    }

    /// Where a symbol is defined, for messages about it.
    pub fn locate(&self, name: &str) -> Option<SourcePos> {
        match self.names.get(name)? {
            Definition::Function(i) => {
                let f = &self.functions[*i];
                Some(self.pos(f.file, f.line))
            }
            Definition::Data(i) => {
                let d = &self.data[*i];
                Some(self.pos(d.file, d.directive.line))
            }
        }
    }

    /// Turn a compile failure into an error with file and line.
    pub fn compile_error(&self, f: &FunctionDef, map: &SourceMap, e: CodegenError) -> BackendError {
        match e {
            CodegenError::Verifier(errors) => {
                let first = errors.0.first();
                let line = first
                    .and_then(|err| map.location(err.location))
                    .map_or(f.line, |l| f.line + l.line_number - 1);
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
            other => BackendError::Compile {
                function: format!("{} ({})", f.name, self.pos(f.file, f.line)),
                message: other.to_string(),
            },
        }
    }

    /// Declare and define everything in `module`.
    pub fn define_in<M: Module>(&self, module: &mut M) -> Result<()> {
        self.define_files_in(module, |_| true, &mut Timings::default())
    }

    /// Declare and define the definitions of the files `keep` selects, as a compiler would for
    /// one compilation unit: names defined elsewhere become imports. Parsing, code generation
    /// and handing the code to the module are timed separately in `timings`.
    pub fn define_files_in<M: Module>(
        &self,
        module: &mut M,
        keep: impl Fn(usize) -> bool,
        timings: &mut Timings,
    ) -> Result<()> {
        // Pass 1: declare every definition, so any function may refer to any other. A
        // function's signature is known only from its text, so each is parsed here once.
        let t = std::time::Instant::now();
        let mut ids: HashMap<&str, FuncOrDataId> = HashMap::new();
        let data: Vec<&DataDef> = self.data.iter().filter(|d| keep(d.file)).collect();
        for d in &data {
            ids.insert(&d.directive.name, Self::declare_data(module, d)?);
        }
        let functions: Vec<&FunctionDef> = self.functions.iter().filter(|f| keep(f.file)).collect();
        let mut parsed = Vec::with_capacity(functions.len());
        for f in &functions {
            let p = self.parse_function(f)?;
            let id = module.declare_function(&f.name, Linkage::Export, &p.func.signature)?;
            ids.insert(&f.name, FuncOrDataId::Func(id));
            parsed.push(p);
        }
        timings.parse += t.elapsed();

        // Pass 2: data objects, then functions.
        let t = std::time::Instant::now();
        for d in data {
            self.define_data_in(module, &ids, d)?;
        }
        timings.write += t.elapsed();
        let mut ctx = module.make_context();
        for (f, p) in functions.into_iter().zip(parsed) {
            let t = std::time::Instant::now();
            let FuncOrDataId::Func(id) = ids[f.name.as_str()] else {
                unreachable!("functions are declared as functions")
            };
            ctx.clear();
            ctx.func = p.func;
            let mut names = ModuleNames {
                module: &mut *module,
                ids: &ids,
            };
            rewrite_names(self, f, &mut ctx.func, &mut names)?;
            timings.parse += t.elapsed();
            let t = std::time::Instant::now();
            ctx.compile(module.isa(), &mut Default::default())
                .map_err(|e| self.compile_error(f, &p.map, e.inner))?;
            timings.codegen += t.elapsed();
            let t = std::time::Instant::now();
            let compiled = ctx.compiled_code().expect("compiled just above");
            let relocs: Vec<cranelift_module::ModuleReloc> = compiled
                .buffer
                .relocs()
                .iter()
                .map(|r| cranelift_module::ModuleReloc::from_mach_reloc(r, &ctx.func, id))
                .collect();
            let align = u64::from(compiled.buffer.alignment);
            module
                .define_function_bytes(id, align, compiled.code_buffer(), &relocs)
                .map_err(BackendError::from)?;
            timings.write += t.elapsed();
        }
        Ok(())
    }

    /// Declare a data object as its directive says (exported or hidden).
    pub(crate) fn declare_data<M: Module>(module: &mut M, d: &DataDef) -> Result<FuncOrDataId> {
        let dir = &d.directive;
        let linkage = if dir.export {
            Linkage::Export
        } else {
            Linkage::Hidden
        };
        let id = module.declare_data(&dir.name, linkage, dir.writable, dir.tls)?;
        Ok(FuncOrDataId::Data(id))
    }

    pub(crate) fn define_data_in<M: Module>(
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
                        self.check_function_addend(d, a)?;
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

    /// cranelift-module stores function addresses in data without an addend; so do we.
    pub fn check_function_addend(&self, d: &DataDef, a: &AddrItem) -> Result<()> {
        if a.addend != 0 {
            return Err(BackendError::Directive {
                pos: self.pos(d.file, d.directive.line),
                message: format!(
                    "`addr %{} + {}`: offsets are allowed into data objects only",
                    a.target, a.addend
                ),
            });
        }
        Ok(())
    }
}

/// Where the time of defining a program went. With several threads, `parse` and `codegen`
/// are summed over them (CPU time); `write` is wall time of the writing thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Parsing CLIF and resolving names.
    pub parse: std::time::Duration,
    /// Cranelift's code generation.
    pub codegen: std::time::Duration,
    /// Handing code and data to the output (image or object file) and writing it.
    pub write: std::time::Duration,
}

/// How names in a function become references of whatever it is being defined into.
pub trait Names {
    /// A call to `name` with call-site signature `sig`: (namespace, index, colocated).
    fn function(
        &mut self,
        program: &Program,
        caller: &FunctionDef,
        name: &str,
        sig: &ir::Signature,
    ) -> Result<(u32, u32, bool)>;
    /// `symbol %name`: (namespace, index, colocated).
    fn symbol(&mut self, program: &Program, name: &str) -> Result<(u32, u32, bool)>;
}

/// Rewrite the parser's `%name` references in `func` into `names`' references.
pub fn rewrite_names(
    program: &Program,
    f: &FunctionDef,
    func: &mut ir::Function,
    names: &mut impl Names,
) -> Result<()> {
    let refs: Vec<ir::FuncRef> = func.dfg.ext_funcs.keys().collect();
    for fref in refs {
        let ext = &func.dfg.ext_funcs[fref];
        let name = match &ext.name {
            // The parser fills unused numbers (`fn0`, `fn5` without `fn1`..`fn4`) with
            // unnamed placeholders: nothing refers to them.
            ExternalName::TestCase(t) if t.raw().is_empty() => continue,
            ExternalName::TestCase(t) => String::from_utf8_lossy(t.raw()).into_owned(),
            _ => continue,
        };
        let sig = func.dfg.signatures[ext.signature].clone();
        let (namespace, index, colocated) = names.function(program, f, &name, &sig)?;
        let user = func.declare_imported_user_function(UserExternalName::new(namespace, index));
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
            ExternalName::TestCase(t) if t.raw().is_empty() => continue,
            ExternalName::TestCase(t) => String::from_utf8_lossy(t.raw()).into_owned(),
            _ => continue,
        };
        let (namespace, index, colocated) = names.symbol(program, &name)?;
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

pub(crate) struct ModuleNames<'a, M: Module> {
    pub(crate) module: &'a mut M,
    pub(crate) ids: &'a HashMap<&'a str, FuncOrDataId>,
}

impl<M: Module> Names for ModuleNames<'_, M> {
    fn function(
        &mut self,
        program: &Program,
        caller: &FunctionDef,
        name: &str,
        sig: &ir::Signature,
    ) -> Result<(u32, u32, bool)> {
        match self.ids.get(name) {
            Some(FuncOrDataId::Func(id)) => {
                let defined = &self.module.declarations().get_function_decl(*id).signature;
                if !same_signature(defined, sig) {
                    return Err(signature_mismatch(
                        program,
                        caller,
                        name,
                        sig,
                        Some(defined),
                    ));
                }
                Ok((0, id.as_u32(), true))
            }
            Some(FuncOrDataId::Data(_)) => Err(program.not_a_function(caller, name)),
            None => {
                // An import may be called with a different signature at each call site (a C
                // variadic function like `printf`): the first declaration names it, and each
                // call keeps its own signature.
                let id = match self.module.get_name(name) {
                    Some(FuncOrDataId::Func(id)) => id,
                    _ => self.module.declare_function(name, Linkage::Import, sig)?,
                };
                Ok((0, id.as_u32(), is_builtin(name)))
            }
        }
    }

    fn symbol(&mut self, _program: &Program, name: &str) -> Result<(u32, u32, bool)> {
        Ok(match self.ids.get(name) {
            Some(FuncOrDataId::Func(id)) => (0, id.as_u32(), true),
            Some(FuncOrDataId::Data(id)) => (1, id.as_u32(), true),
            None if is_builtin(name) => {
                let sig = ir::Signature::new(CallConv::SystemV);
                let id = self.module.declare_function(name, Linkage::Import, &sig)?;
                (0, id.as_u32(), true)
            }
            None => {
                let id = self
                    .module
                    .declare_data(name, Linkage::Import, false, false)?;
                (1, id.as_u32(), false)
            }
        })
    }
}

pub fn signature_mismatch(
    program: &Program,
    caller: &FunctionDef,
    callee: &str,
    used: &ir::Signature,
    defined: Option<&ir::Signature>,
) -> BackendError {
    let message = match defined {
        Some(d) => format!("calls `{callee}` as `{used}`, but `{callee}` is defined as `{d}`"),
        None => format!("calls `{callee}` as `{used}`, which differs from its definition"),
    };
    BackendError::SignatureMismatch {
        pos: program.pos(caller.file, caller.line),
        function: caller.name.clone(),
        message,
    }
}

pub fn same_signature(a: &ir::Signature, b: &ir::Signature) -> bool {
    a.params == b.params && a.returns == b.returns && a.call_conv == b.call_conv
}

/// A hash of a signature, to notice when a definition's signature changes: of exactly what
/// `same_signature` compares, through Cranelift's own `Hash` (no formatting: it runs for
/// every function and every call site). Stable for one zerolink binary, which is what an
/// update requires anyway (the settings record zerolink's version).
pub fn signature_hash(sig: &ir::Signature) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = Xxh3::new();
    sig.params.hash(&mut h);
    sig.returns.hash(&mut h);
    sig.call_conv.hash(&mut h);
    h.finish() | 1
}

fn directive_hash(d: &DataDirective) -> u64 {
    let mut h = Xxh3::new();
    h.update(d.name.as_bytes());
    h.update(&[u8::from(d.writable), u8::from(d.export), u8::from(d.tls)]);
    h.update(&d.align.to_le_bytes());
    match &d.init {
        DataInit::Zeroed(n) => {
            h.update(b"z");
            h.update(&n.to_le_bytes());
        }
        DataInit::Bytes { bytes, addrs } => {
            h.update(b"b");
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
            for a in addrs {
                h.update(&a.offset.to_le_bytes());
                h.update(a.target.as_bytes());
                h.update(&a.addend.to_le_bytes());
            }
        }
    }
    h.digest() | 1
}

/// A file's functions (name, line, span, hash) and data directives.
type Scanned = (Vec<(String, usize, Range<usize>, u64)>, Vec<DataDirective>);

/// Split and hash every file, on every core.
fn scan_files(sources: &[(PathBuf, Option<String>)]) -> Vec<Result<Scanned>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = sources.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = sources
            .chunks(per)
            .map(|group| {
                s.spawn(move || {
                    group
                        .iter()
                        .map(|(p, t)| match t {
                            Some(t) => scan_file(p, t),
                            None => Ok((Vec::new(), Vec::new())),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("scanning threads do not panic"))
            .collect()
    })
}

fn scan_file(path: &std::path::Path, text: &str) -> Result<Scanned> {
    let chunks = split(text);
    let preamble_end = chunks.first().map_or(text.len(), |c| c.span.start);
    check_preamble(&text[..preamble_end], path)?;
    let mut functions = Vec::with_capacity(chunks.len());
    for c in chunks {
        let name = c.name.ok_or_else(|| BackendError::Unsupported {
            pos: SourcePos {
                file: path.to_path_buf(),
                line: c.line,
            },
            message: "functions need a name like `%name` after `function`".into(),
        })?;
        functions.push((
            name,
            c.line,
            c.span.clone(),
            xxh3_64(text[c.span].as_bytes()),
        ));
    }
    Ok((functions, directives::scan(text, path)?))
}

struct Chunk {
    name: Option<String>,
    line: usize,
    span: Range<usize>,
}

/// One chunk per line that starts with `function`, up to the next such line. Candidates are
/// found by substring search, not by walking every line.
fn split(text: &str) -> Vec<Chunk> {
    let mut chunks: Vec<Chunk> = Vec::new();
    let (mut counted_to, mut line) = (0usize, 1usize);
    for (at, _) in text.match_indices("function") {
        let start = text[..at].rfind('\n').map_or(0, |n| n + 1);
        if !text[start..at].chars().all(char::is_whitespace) {
            continue;
        }
        let rest = &text[at + "function".len()..];
        if !rest.starts_with(|c: char| c.is_whitespace()) {
            continue;
        }
        line += text[counted_to..start]
            .bytes()
            .filter(|&b| b == b'\n')
            .count();
        counted_to = start;
        if let Some(last) = chunks.last_mut() {
            last.span.end = start;
        }
        let rest = rest.trim_start();
        let name = rest.strip_prefix('%').map(|n| {
            n.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "_.$".contains(*c))
                .collect::<String>()
        });
        chunks.push(Chunk {
            name: name.filter(|n| !n.is_empty()),
            line,
            span: start..text.len(),
        });
    }
    chunks
}

/// Text before the first function: only comments, blank lines and `test`/`set`/`target`.
fn check_preamble(text: &str, path: &std::path::Path) -> Result<()> {
    parse_test(text, parse_options())
        .map(|_| ())
        .map_err(|e| BackendError::Parse {
            pos: SourcePos {
                file: path.to_path_buf(),
                line: e.location.line_number,
            },
            message: e.message.clone(),
        })
}

fn parse_options() -> ParseOptions<'static> {
    ParseOptions {
        default_calling_convention: CallConv::SystemV,
        ..ParseOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_entity_references_count_as_oversized() {
        let ok = "function %f1500000() -> i64 {\n    fn0 = %block99999999 sig0\nblock0:\n    v0 = iconst.i64 99999999999\n    return v0\n}\n";
        assert_eq!(oversized_entity(ok), None);
        let bad =
            "function %f() -> i64 {\nblock0:\n    v0 = iconst.i64 1\n    jump block2000000\n}\n";
        assert_eq!(oversized_entity(bad), Some((4, "block2000000".to_string())));
    }

    #[test]
    fn files_split_into_one_chunk_per_function() {
        let text = "; data: %x = i8 1\nfunction %a() {\nblock0:\n    return\n}\n\n  function %b() {\nblock0:\n    return\n}\n";
        let chunks = split(text);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].name.as_deref(), Some("a"));
        assert_eq!(chunks[0].line, 2);
        assert!(text[chunks[0].span.clone()].ends_with("}\n\n"));
        assert_eq!(chunks[1].name.as_deref(), Some("b"));
        assert_eq!(chunks[1].span.end, text.len());
    }

    #[test]
    fn garbage_before_the_first_function_is_a_parse_error() {
        let p = Program::parse(vec![(
            "g.clif".into(),
            "garbage here\nfunction %main() -> i32 {\nblock0:\n    v0 = iconst.i32 0\n    return v0\n}\n".into(),
        )]);
        let e = p.err().expect("an error").to_string();
        assert!(e.starts_with("g.clif:1:"), "{e}");
    }
}
