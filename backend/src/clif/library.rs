//! CLIF files through the library, as a compiler would hand its program to a
//! [`ZerolinkModule`]: each file is a unit whose fingerprint is its digest, each definition's
//! fingerprint is the hash of its text. An unchanged file is skipped; in a changed one only
//! the definitions whose text changed are built and compiled. Tests compare what this path
//! builds with `zerolink build`; benchmarks measure the library's edit loop with it.

use std::collections::HashMap;

use cranelift_codegen::ir;
use cranelift_module::{FuncOrDataId, Linkage, Module};

use super::{rewrite_names, ModuleNames, Program};
use crate::error::Result;
use crate::session::UnitStatus;
use crate::ZerolinkModule;

/// What [`Program::define_through`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Through {
    /// Files skipped because their unit was unchanged.
    pub skipped_units: usize,
    /// Functions and data objects handed to the module to define.
    pub defined: usize,
}

impl Program {
    /// Declare everything in `module`, then define it unit by unit (see the module docs).
    /// With debug information on, each file is its unit's source and every instruction
    /// carries its line.
    pub fn define_through(&self, module: &mut ZerolinkModule) -> Result<Through> {
        let mut through = Through::default();
        // Every definition is declared, so any function may refer to any other; a function's
        // signature is known only from its text.
        let mut ids: HashMap<&str, FuncOrDataId> = HashMap::new();
        for d in &self.data {
            ids.insert(&d.directive.name, Self::declare_data(module, d)?);
        }
        let mut parsed = Vec::with_capacity(self.functions.len());
        for f in &self.functions {
            let p = self.parse_function(f)?;
            let id = module.declare_function(&f.name, Linkage::Export, &p.func.signature)?;
            ids.insert(&f.name, FuncOrDataId::Func(id));
            parsed.push(Some(p));
        }
        let debug = module.debug_info();
        let mut ctx = module.make_context();
        for file in &self.files {
            let status = module.begin_unit(&file.path.to_string_lossy(), Some(file.digest))?;
            let source = if debug {
                Some(module.add_source_file(&file.path)?)
            } else {
                None
            };
            if status == UnitStatus::Unchanged {
                through.skipped_units += 1;
                continue;
            }
            for d in &self.data[file.data.clone()] {
                let Some(FuncOrDataId::Data(id)) = ids.get(d.directive.name.as_str()) else {
                    continue;
                };
                if module.data_changed(*id, d.hash)? {
                    self.define_data_in(module, &ids, d)?;
                    through.defined += 1;
                }
            }
            for i in file.functions.clone() {
                let f = &self.functions[i];
                let Some(FuncOrDataId::Func(id)) = ids.get(f.name.as_str()).copied() else {
                    continue;
                };
                if let Some(source) = source {
                    module.set_function_source(id, source, f.line as u32)?;
                }
                if !module.function_changed(id, f.hash)? {
                    continue;
                }
                let Some(p) = parsed[i].take() else {
                    continue;
                };
                ctx.clear();
                ctx.func = p.func;
                if debug {
                    // Each instruction's source location is its line in the file.
                    let insts: Vec<ir::Inst> = ctx
                        .func
                        .layout
                        .blocks()
                        .flat_map(|b| ctx.func.layout.block_insts(b))
                        .collect();
                    for inst in insts {
                        if let Some(loc) = p.map.location(ir::entities::AnyEntity::Inst(inst)) {
                            let line = f.line + loc.line_number - 1;
                            ctx.func.set_srcloc(inst, ir::SourceLoc::new(line as u32));
                        }
                    }
                }
                let mut names = ModuleNames {
                    module: &mut *module,
                    ids: &ids,
                };
                rewrite_names(self, f, &mut ctx.func, &mut names)?;
                module.define_function(id, &mut ctx).map_err(
                    |e| match crate::BackendError::from(e) {
                        crate::BackendError::Module(message) => crate::BackendError::Compile {
                            function: format!("{} ({})", f.name, self.pos(f.file, f.line)),
                            message,
                        },
                        other => other,
                    },
                )?;
                through.defined += 1;
            }
        }
        Ok(through)
    }
}
