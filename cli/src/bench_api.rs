//! `zerolink bench edit --api`: the edit loop through the library, as a compiler drives it.
//!
//! The "compiler" is synthetic but does what a real one would: its program is `n` functions
//! in units of 1,000 (`f{i}(x) = (x ^ k[i]) * 3 + f{i/2}(x >> 1)`, so calls cross units), each
//! unit and each function with a fingerprint of its source (here: its constants). A build
//! opens a `ZerolinkModule` on the executable, skips every unit whose fingerprint is as before
//! (O(1) each), declares and checks the functions of the changed unit, builds IR only for the
//! changed function and hands it over with `define_functions`. An edit changes one constant
//! of one function on `main`'s call chain, so every edit shows in the exit status, which is
//! checked against the same arithmetic done here.
//!
//! Reported per size: the full build, the update (open to finish), the part of it spent
//! compiling and placing the changed function, and everything else.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{median, ms};
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, Signature};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use zerolink_backend::{
    LinkOptions, Mode, ModuleOptions, Report, TargetOptions, UnitStatus, ZerolinkModule,
};

const PER_UNIT: usize = 1000;
const ARGUMENT: i64 = 123_456_789;

struct Synthetic {
    k: Vec<i64>,
}

fn hash(values: impl IntoIterator<Item = i64>) -> u64 {
    values.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        (h ^ v as u64).wrapping_mul(0x100_0000_01b3)
    })
}

impl Synthetic {
    fn units(&self) -> usize {
        self.k.len().div_ceil(PER_UNIT)
    }

    /// What `f{i}(x)` computes.
    fn eval(&self, i: usize, x: i64) -> i64 {
        let base = match i {
            0 => x.wrapping_add(self.k[0]),
            _ => self.eval(i / 2, x >> 1),
        };
        (x ^ self.k[i]).wrapping_mul(3).wrapping_add(base)
    }

    fn expected_status(&self) -> i32 {
        (self.eval(self.k.len() - 1, ARGUMENT) & 0xff) as i32
    }

    fn sig(m: &ZerolinkModule) -> Signature {
        let mut s = m.make_signature();
        s.params.push(AbiParam::new(types::I64));
        s.returns.push(AbiParam::new(types::I64));
        s
    }

    fn declare(m: &mut ZerolinkModule, i: usize) -> Result<FuncId> {
        let s = Self::sig(m);
        Ok(m.declare_function(&format!("f{i}"), Linkage::Export, &s)?)
    }

    /// Build (or update) `out`; returns the report and the time spent in `define_functions`.
    fn build(
        &self,
        isa: &OwnedTargetIsa,
        out: &Path,
        full: bool,
        jobs: usize,
    ) -> Result<(Report, Duration)> {
        let opts = ModuleOptions {
            link: LinkOptions {
                freestanding: true,
                ..LinkOptions::default()
            },
            force_full: full,
            ..ModuleOptions::default()
        };
        let mut m = ZerolinkModule::open(isa.clone(), out, opts)?;
        let mut fctx = FunctionBuilderContext::new();
        let mut defining = Duration::ZERO;
        let n = self.k.len();
        for u in 0..self.units() {
            let range = u * PER_UNIT..((u + 1) * PER_UNIT).min(n);
            let fingerprint = hash(self.k[range.clone()].iter().copied());
            if m.begin_unit(&format!("unit{u}"), Some(fingerprint))? == UnitStatus::Unchanged {
                continue;
            }
            let mut batch = Vec::new();
            for i in range {
                let id = Self::declare(&mut m, i)?;
                if !m.function_changed(id, hash([i as i64, self.k[i]]))? {
                    continue;
                }
                let callee = if i > 0 {
                    Some(Self::declare(&mut m, i / 2)?)
                } else {
                    None
                };
                let mut ctx = m.make_context();
                ctx.func.signature = Self::sig(&m);
                let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
                let block = b.create_block();
                b.append_block_params_for_function_params(block);
                b.switch_to_block(block);
                let x = b.block_params(block)[0];
                let base = match callee {
                    Some(callee) => {
                        let f = m.declare_func_in_func(callee, b.func);
                        let half = b.ins().sshr_imm_s(x, 1);
                        let call = b.ins().call(f, &[half]);
                        b.inst_results(call)[0]
                    }
                    None => b.ins().iadd_imm_s(x, self.k[0]),
                };
                let k = b.ins().iconst(types::I64, self.k[i]);
                let mixed = b.ins().bxor(x, k);
                let tripled = b.ins().imul_imm_s(mixed, 3);
                let r = b.ins().iadd(tripled, base);
                b.ins().return_(&[r]);
                b.seal_all_blocks();
                b.finalize(m.target_config());
                batch.push((id, ctx));
            }
            let t = Instant::now();
            m.define_functions(&mut batch, jobs)?;
            defining += t.elapsed();
        }
        if m.begin_unit("main", Some(n as u64))? != UnitStatus::Unchanged {
            let mut s = m.make_signature();
            s.returns.push(AbiParam::new(types::I32));
            let main = m.declare_function("main", Linkage::Export, &s)?;
            let last = Self::declare(&mut m, n - 1)?;
            let mut ctx = m.make_context();
            ctx.func.signature = s;
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let block = b.create_block();
            b.switch_to_block(block);
            let f = m.declare_func_in_func(last, b.func);
            let x = b.ins().iconst(types::I64, ARGUMENT);
            let call = b.ins().call(f, &[x]);
            let r = b.inst_results(call)[0];
            let r = b.ins().ireduce(types::I32, r);
            b.ins().return_(&[r]);
            b.seal_all_blocks();
            b.finalize(m.target_config());
            let t = Instant::now();
            m.define_function(main, &mut ctx)?;
            defining += t.elapsed();
        }
        Ok((m.finish()?, defining))
    }
}

fn status(exe: &Path) -> Result<i32> {
    let s = std::process::Command::new(exe)
        .status()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    Ok(s.code().unwrap_or(-1))
}

/// The library edit loop over `sizes` (functions), `edits` updates each.
pub fn edit_loop(sizes: &[usize], edits: usize, target: &TargetOptions) -> Result<()> {
    let isa = target.isa()?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rows = Vec::new();
    for &n in sizes.iter().filter(|&&n| n > 0) {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("prog");
        let mut p = Synthetic {
            k: (0..n as i64)
                .map(|i| i * 2_654_435_761 % 1_000_003)
                .collect(),
        };
        eprint!("{n} functions in {} units: full build ...", p.units());
        let t = Instant::now();
        p.build(&isa, &out, true, jobs)?;
        let full = t.elapsed();
        if status(&out)? != p.expected_status() {
            bail!("{n} functions: the executable computes the wrong value");
        }
        eprint!(" {:.0} ms; edits:", ms(full));
        let (mut totals, mut defines) = (Vec::new(), Vec::new());
        for e in 0..edits {
            // A function on main's call chain: n-1, (n-1)/2, ...
            let f = (n - 1) >> (e % (usize::BITS - n.leading_zeros()) as usize);
            p.k[f] += 1 + e as i64;
            let t = Instant::now();
            let (report, defining) = p.build(&isa, &out, false, jobs)?;
            let total = t.elapsed();
            if report.mode != Mode::Update || report.compiled != 1 {
                bail!(
                    "edit {e} was not a one-function update: {:?}, {} compiled",
                    report.mode,
                    report.compiled
                );
            }
            if status(&out)? != p.expected_status() {
                bail!("edit {e} of f{f}: the updated executable computes the wrong value");
            }
            eprint!(
                " {:.1}+{:.1}",
                ms(defining),
                ms(total.saturating_sub(defining))
            );
            totals.push(total);
            defines.push(defining);
        }
        eprintln!(" ms; every result checked");
        let (total, defining) = (median(totals), median(defines));
        rows.push((n, p.units(), full, total, defining));
    }
    println!();
    println!(
        "{:>9} {:>6} {:>12} {:>12} {:>16} {:>14}",
        "functions", "units", "full build", "update", "compile+place", "everything"
    );
    println!(
        "{:>9} {:>6} {:>12} {:>12} {:>16} {:>14}",
        "", "", "ms", "ms", "the function ms", "else ms"
    );
    for (n, units, full, total, defining) in rows {
        println!(
            "{:>9} {:>6} {:>12.1} {:>12.2} {:>16.2} {:>14.2}",
            n,
            units,
            ms(full),
            ms(total),
            ms(defining),
            ms(total.saturating_sub(defining))
        );
    }
    println!(
        "\ntarget: at 100,000 functions in 100 units, an update that changes one function costs \
         at most 5 ms outside compiling it."
    );
    Ok(())
}
