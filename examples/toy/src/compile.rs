//! From the syntax tree to Cranelift IR, and into a `ZerolinkModule`: every function is
//! declared, and only those whose text changed since the previous build are translated and
//! compiled (`function_changed`); the others stay in the executable as they are.

use std::collections::{HashMap, HashSet};

use cranelift_codegen::ir::{condcodes::IntCC, types, AbiParam, InstBuilder, SourceLoc, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module};
use zerolink_backend::{SourceFileId, ZerolinkModule};

use crate::parser::{Expr, Function, Op, Stmt};

/// How many functions were compiled, and how many kept.
pub struct Counts {
    pub compiled: usize,
    pub kept: usize,
}

/// Declare and define `functions` in `module`; `source`, with debug information, is the file
/// they come from.
pub fn compile(
    module: &mut ZerolinkModule,
    functions: &[Function],
    source: Option<SourceFileId>,
) -> Result<Counts, String> {
    let err = |e: cranelift_module::ModuleError| e.to_string();
    let mut ids = HashMap::new();
    for f in functions {
        let mut sig = module.make_signature();
        sig.params = vec![AbiParam::new(types::I64); f.params.len()];
        sig.returns.push(AbiParam::new(types::I64));
        let id = module
            .declare_function(&f.name, Linkage::Export, &sig)
            .map_err(err)?;
        if ids.insert(f.name.as_str(), id).is_some() {
            return Err(format!("line {}: `{}` is defined twice", f.line, f.name));
        }
    }
    let defined: HashSet<&str> = ids.keys().copied().collect();
    let (mut ctx, mut fctx) = (module.make_context(), FunctionBuilderContext::new());
    let mut counts = Counts {
        compiled: 0,
        kept: 0,
    };
    for f in functions {
        let id = ids[f.name.as_str()];
        if let Some(file) = source {
            module
                .set_function_source(id, file, f.line)
                .map_err(|e| e.to_string())?;
        }
        if !module
            .function_changed(id, fingerprint(f, &defined))
            .map_err(err)?
        {
            counts.kept += 1;
            continue;
        }
        ctx.func.signature = module
            .declarations()
            .get_function_decl(id)
            .signature
            .clone();
        let t = Translator {
            b: FunctionBuilder::new(&mut ctx.func, &mut fctx),
            module: &mut *module,
            vars: HashMap::new(),
        };
        t.function(f)?;
        module.define_function(id, &mut ctx).map_err(err)?;
        module.clear_context(&mut ctx);
        counts.compiled += 1;
    }
    Ok(counts)
}

/// What a function's code depends on: its text (not where it is: an edit above it moves it
/// without changing its code), and which of the names it calls the program defines.
fn fingerprint(f: &Function, defined: &HashSet<&str>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(f.text.as_bytes());
    let mut names: Vec<&str> = defined
        .iter()
        .copied()
        .filter(|n| f.text.contains(n))
        .collect();
    names.sort_unstable();
    for n in names {
        h.update(n.as_bytes());
        h.update(&[0]);
    }
    h.digest()
}

struct Translator<'a> {
    b: FunctionBuilder<'a>,
    module: &'a mut ZerolinkModule,
    vars: HashMap<String, Variable>,
}

impl Translator<'_> {
    fn function(mut self, f: &Function) -> Result<(), String> {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        self.b.set_srcloc(SourceLoc::new(f.line));
        let params = self.b.block_params(entry).to_vec();
        for (name, value) in f.params.iter().zip(params) {
            let var = self.var(name);
            self.b.def_var(var, value);
        }
        // The result and every assigned variable start at 0.
        let zero = self.b.ins().iconst(types::I64, 0);
        let mut assigned = vec![f.result.clone()];
        collect_assigned(&f.body, &mut assigned);
        for name in assigned {
            if !self.vars.contains_key(&name) {
                let var = self.var(&name);
                self.b.def_var(var, zero);
            }
        }
        self.stmts(&f.body)?;
        let result = self.b.use_var(self.vars[&f.result]);
        self.b.ins().return_(&[result]);
        self.b.seal_all_blocks();
        let config = self.module.target_config();
        self.b.finalize(config);
        Ok(())
    }

    fn var(&mut self, name: &str) -> Variable {
        let var = self.b.declare_var(types::I64);
        self.vars.insert(name.to_string(), var);
        var
    }

    fn stmts(&mut self, stmts: &[Stmt]) -> Result<(), String> {
        for s in stmts {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), String> {
        match s {
            Stmt::Assign { var, value, line } => {
                self.b.set_srcloc(SourceLoc::new(*line));
                let v = self.expr(value, *line)?;
                self.b.def_var(self.vars[var], v);
            }
            Stmt::Expr { value, line } => {
                self.b.set_srcloc(SourceLoc::new(*line));
                self.expr(value, *line)?;
            }
            Stmt::If {
                cond,
                then,
                otherwise,
                line,
            } => {
                self.b.set_srcloc(SourceLoc::new(*line));
                let c = self.expr(cond, *line)?;
                let (yes, no, done) = (
                    self.b.create_block(),
                    self.b.create_block(),
                    self.b.create_block(),
                );
                self.b.ins().brif(c, yes, &[], no, &[]);
                for (block, body) in [(yes, then), (no, otherwise)] {
                    self.b.switch_to_block(block);
                    self.stmts(body)?;
                    self.b.ins().jump(done, &[]);
                }
                self.b.switch_to_block(done);
            }
            Stmt::While { cond, body, line } => {
                let (head, inside, done) = (
                    self.b.create_block(),
                    self.b.create_block(),
                    self.b.create_block(),
                );
                self.b.ins().jump(head, &[]);
                self.b.switch_to_block(head);
                self.b.set_srcloc(SourceLoc::new(*line));
                let c = self.expr(cond, *line)?;
                self.b.ins().brif(c, inside, &[], done, &[]);
                self.b.switch_to_block(inside);
                self.stmts(body)?;
                self.b.ins().jump(head, &[]);
                self.b.switch_to_block(done);
            }
        }
        Ok(())
    }

    fn expr(&mut self, e: &Expr, line: u32) -> Result<Value, String> {
        Ok(match e {
            Expr::Int(v) => self.b.ins().iconst(types::I64, *v),
            Expr::Var(name) => match self.vars.get(name) {
                Some(var) => self.b.use_var(*var),
                None => return Err(format!("line {line}: `{name}` is not a variable")),
            },
            Expr::Neg(x) => {
                let x = self.expr(x, line)?;
                self.b.ins().ineg(x)
            }
            Expr::Binary(op, l, r) => {
                let (l, r) = (self.expr(l, line)?, self.expr(r, line)?);
                let cmp = |cc| Some(cc);
                let cc = match op {
                    Op::Eq => cmp(IntCC::Equal),
                    Op::Ne => cmp(IntCC::NotEqual),
                    Op::Lt => cmp(IntCC::SignedLessThan),
                    Op::Le => cmp(IntCC::SignedLessThanOrEqual),
                    Op::Gt => cmp(IntCC::SignedGreaterThan),
                    Op::Ge => cmp(IntCC::SignedGreaterThanOrEqual),
                    _ => None,
                };
                if let Some(cc) = cc {
                    let c = self.b.ins().icmp(cc, l, r);
                    return Ok(self.b.ins().uextend(types::I64, c));
                }
                match op {
                    Op::Add => self.b.ins().iadd(l, r),
                    Op::Sub => self.b.ins().isub(l, r),
                    Op::Mul => self.b.ins().imul(l, r),
                    Op::Div => self.b.ins().sdiv(l, r),
                    _ => self.b.ins().srem(l, r),
                }
            }
            Expr::Call(name, args) => {
                let callee = self.callee(name, args.len())?;
                let args = args
                    .iter()
                    .map(|a| self.expr(a, line))
                    .collect::<Result<Vec<_>, _>>()?;
                let fref = self.module.declare_func_in_func(callee, self.b.func);
                let call = self.b.ins().call(fref, &args);
                self.b.inst_results(call)[0]
            }
        })
    }

    /// A function of the program, or else one of libc's (declared as an import).
    fn callee(&mut self, name: &str, args: usize) -> Result<FuncId, String> {
        let mut sig = self.module.make_signature();
        sig.params = vec![AbiParam::new(types::I64); args];
        sig.returns.push(AbiParam::new(types::I64));
        self.module
            .declare_function(name, Linkage::Import, &sig)
            .map_err(|e| e.to_string())
    }
}

fn collect_assigned(stmts: &[Stmt], out: &mut Vec<String>) {
    for s in stmts {
        match s {
            Stmt::Assign { var, .. } => out.push(var.clone()),
            Stmt::If {
                then, otherwise, ..
            } => {
                collect_assigned(then, out);
                collect_assigned(otherwise, out);
            }
            Stmt::While { body, .. } => collect_assigned(body, out),
            Stmt::Expr { .. } => {}
        }
    }
}
