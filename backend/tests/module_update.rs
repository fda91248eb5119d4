//! In-place updates through the library, as a compiler author meets them: `ZerolinkModule::open`
//! on the executable the previous build left, the whole program defined again, and only what
//! changed compiled. Every executable built here is run.

use std::path::Path;

use cranelift_codegen::ir::{types, AbiParam, InstBuilder, Signature, Value};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use zerolink_backend::{
    BackendError, LinkOptions, Mode, ModuleOptions, Report, TargetOptions, UnitStatus,
    ZerolinkModule,
};

fn isa() -> OwnedTargetIsa {
    TargetOptions::default().isa().unwrap()
}

fn freestanding() -> ModuleOptions {
    ModuleOptions {
        link: LinkOptions {
            freestanding: true,
            ..LinkOptions::default()
        },
        ..ModuleOptions::default()
    }
}

fn open(out: &Path) -> ZerolinkModule {
    ZerolinkModule::open(isa(), out, freestanding()).unwrap()
}

fn run(path: &Path) -> i32 {
    let mut tries = 0;
    loop {
        match std::process::Command::new(path).status() {
            // Other test threads fork while this process holds a file open for writing.
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => {
                return other
                    .expect("the built executable starts")
                    .code()
                    .unwrap_or(-1)
            }
        }
    }
}

fn sig(module: &ZerolinkModule, params: usize) -> Signature {
    let mut s = module.make_signature();
    for _ in 0..params {
        s.params.push(AbiParam::new(types::I64));
    }
    s.returns.push(AbiParam::new(types::I64));
    s
}

/// Define `id` with signature `s`, one block: `body` gives the value returned, from the
/// block's parameters (the result is narrowed to `i32` when the signature says so).
fn define_simple(
    m: &mut ZerolinkModule,
    id: FuncId,
    s: Signature,
    body: impl FnOnce(&mut ZerolinkModule, &mut FunctionBuilder, &[Value]) -> Value,
) {
    let mut ctx = m.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let narrow = s.returns.first().map(|r| r.value_type) == Some(types::I32);
    ctx.func.signature = s;
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        let params = b.block_params(block).to_vec();
        let mut r = body(m, &mut b, &params);
        if narrow && b.func.dfg.value_type(r) != types::I32 {
            r = b.ins().ireduce(types::I32, r);
        }
        b.ins().return_(&[r]);
        b.seal_all_blocks();
        b.finalize(m.target_config());
    }
    m.define_function(id, &mut ctx).unwrap();
}

/// A call to `callee` with `args`: its first result.
fn call(m: &mut ZerolinkModule, b: &mut FunctionBuilder, callee: FuncId, args: &[Value]) -> Value {
    let f = m.declare_func_in_func(callee, b.func);
    let call = b.ins().call(f, args);
    b.inst_results(call)[0]
}

fn main_sig(m: &ZerolinkModule) -> Signature {
    let mut s = m.make_signature();
    s.returns.push(AbiParam::new(types::I32));
    s
}

/// The "compiler": `f{i}(x) = c[i] + f{i-1}(x)`, `f0(x) = x + c[0]`, and `main` returning
/// `f{n-1}(0)`; `f{i}` lives in unit `i / per_unit` (with `per_unit`, units are used and a
/// unit whose constants are as before is skipped). The exit status is the sum, mod 256.
struct Program {
    consts: Vec<i64>,
    per_unit: Option<usize>,
}

impl Program {
    fn expected(&self) -> i32 {
        (self.consts.iter().sum::<i64>() & 0xff) as i32
    }

    fn unit_fingerprint(&self, u: usize, per_unit: usize) -> u64 {
        let c = &self.consts[u * per_unit..((u + 1) * per_unit).min(self.consts.len())];
        c.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &v| {
            (h ^ v as u64).wrapping_mul(0x100_0000_01b3)
        })
    }

    fn define(&self, m: &mut ZerolinkModule) -> Vec<FuncId> {
        let n = self.consts.len();
        let ids: Vec<FuncId> = (0..n)
            .map(|i| {
                let s = sig(m, 1);
                m.declare_function(&format!("f{i}"), Linkage::Local, &s)
                    .unwrap()
            })
            .collect();
        if let Some(per) = self.per_unit {
            for u in 0..n.div_ceil(per) {
                let status = m
                    .begin_unit(&format!("unit{u}"), Some(self.unit_fingerprint(u, per)))
                    .unwrap();
                if status != UnitStatus::Unchanged {
                    for i in u * per..((u + 1) * per).min(n) {
                        self.define_one(m, &ids, i);
                    }
                }
            }
            if m.begin_unit("main", Some(n as u64)).unwrap() == UnitStatus::Unchanged {
                return ids;
            }
        } else {
            for i in 0..n {
                self.define_one(m, &ids, i);
            }
        }
        let s = main_sig(m);
        let main = m.declare_function("main", Linkage::Export, &s).unwrap();
        define_simple(m, main, s, |m, b, _| {
            let zero = b.ins().iconst(types::I64, 0);
            call(m, b, ids[n - 1], &[zero])
        });
        ids
    }

    fn define_one(&self, m: &mut ZerolinkModule, ids: &[FuncId], i: usize) {
        let s = sig(m, 1);
        define_simple(m, ids[i], s, |m, b, params| {
            let base = match i {
                0 => params[0],
                _ => call(m, b, ids[i - 1], params),
            };
            b.ins().iadd_imm_s(base, self.consts[i])
        });
    }

    fn build(&self, out: &Path) -> Report {
        let mut m = open(out);
        self.define(&mut m);
        m.finish().unwrap()
    }
}

#[test]
fn defining_the_same_functions_again_compiles_none_and_one_change_compiles_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    let mut p = Program {
        consts: (0..1000).map(|i| i % 7).collect(),
        per_unit: None,
    };
    let first = p.build(&out);
    assert_eq!(first.mode, Mode::Full { reason: None });
    assert_eq!(run(&out), p.expected());
    assert!(first.summary.entry != 0 && first.summary.main != 0);

    let before = std::fs::read(&out).unwrap();
    let again = p.build(&out);
    assert_eq!(again.mode, Mode::Update);
    assert_eq!((again.compiled, again.reused), (0, 1001), "{again:?}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "nothing changed: OUT stays as it was"
    );

    p.consts[500] += 3;
    let edit = p.build(&out);
    assert_eq!(edit.mode, Mode::Update);
    assert_eq!(edit.compiled, 1, "{edit:?}");
    assert_eq!(run(&out), p.expected());

    // A fresh build of the edited program behaves the same.
    let fresh = dir.path().join("fresh");
    let mut m = ZerolinkModule::freestanding(isa(), &fresh).unwrap();
    p.define(&mut m);
    m.finish().unwrap();
    assert_eq!(run(&fresh), run(&out));
}

#[test]
fn unchanged_units_are_skipped_and_a_changed_unit_compiles_only_its_changed_function() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    let mut p = Program {
        consts: (0..1000).map(|i| i % 5).collect(),
        per_unit: Some(100),
    };
    p.build(&out);
    assert_eq!(run(&out), p.expected());
    let again = p.build(&out);
    assert_eq!((again.mode.clone(), again.compiled), (Mode::Update, 0));
    p.consts[345] += 1;
    let edit = p.build(&out);
    assert_eq!((edit.mode.clone(), edit.compiled), (Mode::Update, 1));
    assert_eq!(run(&out), p.expected());
    // Removing a function nothing calls (the chain's last), in the last unit.
    p.consts.pop();
    let shorter = p.build(&out);
    assert_eq!(shorter.mode, Mode::Update);
    assert_eq!(shorter.summary.removed, 1, "{shorter:?}");
    assert_eq!(run(&out), p.expected());
}

/// A two-unit program: unit `a` holds `main`, which calls `g`; unit `b` holds `g`, with one
/// or two parameters.
fn two_units(out: &Path, a: bool, g: Option<usize>) -> Result<Report, BackendError> {
    let mut m = open(out);
    if m.begin_unit("a", Some(1))? != UnitStatus::Unchanged {
        assert!(a, "unit a is defined only when it is new");
        let s1 = sig(&m, 1);
        let g_for_a = m.declare_function("g", Linkage::Import, &s1).unwrap();
        let s = main_sig(&m);
        let main = m.declare_function("main", Linkage::Export, &s).unwrap();
        define_simple(&mut m, main, s, |m, b, _| {
            let x = b.ins().iconst(types::I64, 5);
            call(m, b, g_for_a, &[x])
        });
    }
    m.begin_unit("b", Some(g.unwrap_or(0) as u64 + 10))?;
    if let Some(params) = g {
        let s = sig(&m, params);
        let id = m.declare_function("g", Linkage::Export, &s).unwrap();
        define_simple(&mut m, id, s, |_, b, p| b.ins().imul_imm_s(p[0], 3));
    }
    m.finish()
}

#[test]
fn updates_that_must_fail_leave_the_executable_byte_for_byte_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    two_units(&out, true, Some(1)).unwrap();
    assert_eq!(run(&out), 15);
    let before = std::fs::read(&out).unwrap();

    // `g` gone while the kept `main` still calls it: the error names both.
    let e = two_units(&out, false, None).unwrap_err().to_string();
    assert!(
        e.contains("undefined symbol `g`") && e.contains("`main`"),
        "{e}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), before);

    // `g` with another signature while the kept `main` calls it with the old one.
    let e = two_units(&out, false, Some(2)).unwrap_err().to_string();
    assert!(
        e.contains("signature of `g` changed") && e.contains("`main`"),
        "{e}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert_eq!(run(&out), 15);
}

fn symtab_line(exe: &Path, name: &str) -> String {
    let o = std::process::Command::new("readelf")
        .args(["-sW"])
        .arg(exe)
        .output()
        .expect("readelf runs");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn bindings_follow_object_module_and_the_entry_must_be_exported() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    let build = |main_linkage: Linkage| -> Result<Report, BackendError> {
        let mut m = open(&out);
        let s = sig(&m, 1);
        // Declared as an import first, then defined locally: `ObjectModule` keeps it local.
        let h = m.declare_function("helper", Linkage::Import, &s).unwrap();
        let h2 = m.declare_function("helper", Linkage::Local, &s).unwrap();
        assert_eq!(h, h2);
        define_simple(&mut m, h, s, |_, _, p| p[0]);
        let s = main_sig(&m);
        let main = m.declare_function("main", main_linkage, &s).unwrap();
        define_simple(&mut m, main, s, |m, b, _| {
            let x = b.ins().iconst(types::I64, 9);
            call(m, b, h, &[x])
        });
        m.finish()
    };
    let e = build(Linkage::Local).unwrap_err().to_string();
    assert!(e.contains("`main` is the entry point"), "{e}");
    assert!(!out.exists(), "a refused first build leaves nothing at OUT");
    build(Linkage::Export).unwrap();
    assert_eq!(run(&out), 9);
    let helper = symtab_line(&out, "helper");
    assert!(helper.contains("LOCAL"), "{helper}");
    assert!(symtab_line(&out, "main").contains("GLOBAL"));
}

#[test]
fn a_non_pic_isa_is_refused_at_once_when_libraries_are_linked() {
    let dir = tempfile::tempdir().unwrap();
    let target = TargetOptions {
        settings: vec!["is_pic=false".into()],
        ..TargetOptions::default()
    };
    let e = ZerolinkModule::open(
        target.isa().unwrap(),
        &dir.path().join("p"),
        ModuleOptions::default(),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(e.contains("is_pic"), "{e}");
    let mut m = ZerolinkModule::freestanding(target.isa().unwrap(), &dir.path().join("q")).unwrap();
    let e = m
        .link_libraries(&LinkOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("is_pic"), "{e}");
}

#[test]
fn outputs_get_private_temporary_files_and_errors_name_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    // Two modules for the same output, one after the other in one process, each with its
    // own program: each result is its own.
    let p1 = Program {
        consts: vec![1, 2, 3],
        per_unit: None,
    };
    let p2 = Program {
        consts: vec![4, 5, 6],
        per_unit: None,
    };
    let mut a = ZerolinkModule::freestanding(isa(), &out).unwrap();
    p1.define(&mut a);
    a.finish().unwrap();
    assert_eq!(run(&out), p1.expected());
    let mut b = ZerolinkModule::freestanding(isa(), &out).unwrap();
    p2.define(&mut b);
    b.finish().unwrap();
    assert_eq!(run(&out), p2.expected());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".update"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let missing = dir.path().join("no-such-dir").join("prog");
    let e = ZerolinkModule::freestanding(isa(), &missing)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains(&missing.display().to_string()) && !e.contains(".zl-"),
        "{e}"
    );
}

#[test]
fn libcall_names_can_be_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    let mut opts = freestanding();
    opts.libcall_names = Some(Box::new(|lc| match lc {
        cranelift_codegen::ir::LibCall::Memcpy => "my_copy".into(),
        other => cranelift_module::default_libcall_names()(other),
    }));
    let mut m = ZerolinkModule::open(isa(), &out, opts).unwrap();
    let ptr = m.target_config().pointer_type();
    let mut s = m.make_signature();
    for _ in 0..3 {
        s.params.push(AbiParam::new(ptr));
    }
    s.returns.push(AbiParam::new(ptr));
    // `my_copy` returns 42 instead of copying: the exit status shows it was called.
    let copy = m.declare_function("my_copy", Linkage::Local, &s).unwrap();
    define_simple(&mut m, copy, s, |_, b, _| b.ins().iconst(ptr, 42));
    let s = main_sig(&m);
    let main = m.declare_function("main", Linkage::Export, &s).unwrap();
    define_simple(&mut m, main, s, |m, b, _| {
        let slot = b.create_sized_stack_slot(cranelift_codegen::ir::StackSlotData::new(
            cranelift_codegen::ir::StackSlotKind::ExplicitSlot,
            16,
            0,
        ));
        let buf = b.ins().stack_addr(ptr, slot, 0);
        let n = b.ins().iconst(ptr, 8);
        b.call_memcpy(m.target_config(), buf, buf, n);
        b.ins().iconst(types::I32, 42)
    });
    m.finish().unwrap();
    assert_eq!(run(&out), 42);
    let o = std::process::Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("<my_copy>"), "my_copy is called:\n{text}");
}

/// The chain program of `Program`, handed over as one batch compiled on `jobs` threads.
fn build_batch(out: &Path, consts: &[i64], jobs: usize) -> Report {
    let mut m = open(out);
    let n = consts.len();
    let ids: Vec<FuncId> = (0..n)
        .map(|i| {
            let s = sig(&m, 1);
            m.declare_function(&format!("f{i}"), Linkage::Local, &s)
                .unwrap()
        })
        .collect();
    let mut fctx = FunctionBuilderContext::new();
    let mut batch = Vec::new();
    for i in 0..n {
        let mut ctx = m.make_context();
        ctx.func.signature = sig(&m, 1);
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let block = b.create_block();
            b.append_block_params_for_function_params(block);
            b.switch_to_block(block);
            let x = b.block_params(block)[0];
            let base = match i {
                0 => x,
                _ => call(&mut m, &mut b, ids[i - 1], &[x]),
            };
            let r = b.ins().iadd_imm_s(base, consts[i]);
            b.ins().return_(&[r]);
            b.seal_all_blocks();
            b.finalize(m.target_config());
        }
        batch.push((ids[i], ctx));
    }
    m.define_functions(&mut batch, jobs).unwrap();
    let s = main_sig(&m);
    let main = m.declare_function("main", Linkage::Export, &s).unwrap();
    define_simple(&mut m, main, s, |m, b, _| {
        let zero = b.ins().iconst(types::I64, 0);
        call(m, b, ids[n - 1], &[zero])
    });
    m.finish().unwrap()
}

#[test]
fn a_batch_compiled_on_several_threads_gives_the_same_executable_and_updates_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut consts: Vec<i64> = (0..300).map(|i| i % 11).collect();
    let expected = |c: &[i64]| (c.iter().sum::<i64>() & 0xff) as i32;
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    build_batch(&one, &consts, 1);
    build_batch(&two, &consts, 2);
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
    assert_eq!(run(&one), expected(&consts));
    consts[100] += 2;
    let r = build_batch(&two, &consts, 2);
    assert_eq!((r.mode, r.compiled), (Mode::Update, 1));
    assert_eq!(run(&two), expected(&consts));
}

#[test]
fn a_runtime_library_is_found_through_the_rpath() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("rt.c");
    std::fs::write(&c, "long triple(long x) { return 3 * x; }\n").unwrap();
    let so = dir.path().join("libtoyrt.so");
    let cc = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .status()
        .expect("cc runs");
    assert!(cc.success());
    let out = dir.path().join("prog");
    let opts = ModuleOptions {
        link: LinkOptions {
            libraries: vec!["toyrt".into()],
            search_dirs: vec![dir.path().to_path_buf()],
            rpath: vec![dir.path().to_path_buf()],
            ..LinkOptions::default()
        },
        ..ModuleOptions::default()
    };
    let mut m = ZerolinkModule::open(isa(), &out, opts).unwrap();
    let s = sig(&m, 1);
    let triple = m.declare_function("triple", Linkage::Import, &s).unwrap();
    let s = main_sig(&m);
    let main = m.declare_function("main", Linkage::Export, &s).unwrap();
    define_simple(&mut m, main, s, |m, b, _| {
        let x = b.ins().iconst(types::I64, 7);
        call(m, b, triple, &[x])
    });
    m.finish().unwrap();
    let o = std::process::Command::new("readelf")
        .arg("-dW")
        .arg(&out)
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&o.stdout);
    assert!(
        dynamic.contains("(RUNPATH)") && dynamic.contains(&dir.path().display().to_string()),
        "{dynamic}"
    );
    // No LD_LIBRARY_PATH: the loader finds libtoyrt.so through the executable's RUNPATH.
    assert_eq!(run(&out), 21);
}

/// A function declared before all the others renumbers every declaration (`FuncId`s): only
/// it is compiled, since fingerprints see the names a function refers to, not the numbers.
/// And a constant changed in one function still recompiles exactly that one.
#[test]
fn a_new_declaration_at_the_top_recompiles_only_the_new_function() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    let p = Program {
        consts: (0..200).map(|i| i % 5).collect(),
        per_unit: None,
    };
    p.build(&out);
    assert_eq!(run(&out), p.expected());
    let mut m = open(&out);
    // The newcomer, declared first: every FuncId after it shifts by one.
    let s = sig(&m, 1);
    let extra = m.declare_function("extra", Linkage::Local, &s).unwrap();
    let ids = p.define(&mut m);
    define_simple(&mut m, extra, s, |m, b, params| call(m, b, ids[0], params));
    let report = m.finish().unwrap();
    assert_eq!(report.mode, Mode::Update);
    assert_eq!(report.compiled, 1, "{report:?}");
    assert_eq!(run(&out), p.expected());
}

/// Debug information asked for without any source file registered (unwind tables and no
/// units): the next build is an update, not a full build over sections that were never
/// written.
#[test]
fn debug_info_without_source_files_keeps_updates_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    let mut p = Program {
        consts: (0..20).collect(),
        per_unit: None,
    };
    let opts = || ModuleOptions {
        debug_info: true,
        ..freestanding()
    };
    for step in 0..3 {
        let mut m = ZerolinkModule::open(isa(), &out, opts()).unwrap();
        if step > 0 {
            assert_eq!(*m.mode(), Mode::Update, "step {step}");
        }
        p.define(&mut m);
        let report = m.finish().unwrap();
        assert_eq!(run(&out), p.expected(), "step {step}: {report:?}");
        p.consts[7] += 1;
    }
}

/// The JIT habit, defining only what changed: the names the previous build defined and this
/// one did not are gone, and the error says so, not only that they are undefined.
#[test]
fn a_name_the_previous_build_defined_and_this_one_did_not_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    let p = Program {
        consts: (0..5).collect(),
        per_unit: None,
    };
    p.build(&out);
    // Only main again: it calls f4, which this build declares but does not define.
    let mut m = open(&out);
    let ids: Vec<FuncId> = (0..5)
        .map(|i| {
            let s = sig(&m, 1);
            m.declare_function(&format!("f{i}"), Linkage::Local, &s)
                .unwrap()
        })
        .collect();
    let s = main_sig(&m);
    let main = m.declare_function("main", Linkage::Export, &s).unwrap();
    define_simple(&mut m, main, s, |m, b, _| {
        let zero = b.ins().iconst(types::I64, 0);
        call(m, b, ids[4], &[zero])
    });
    let e = m.finish().unwrap_err().to_string();
    assert!(e.contains("undefined symbol `f4`"), "{e}");
    assert!(
        e.contains("`f4` was defined by the previous build of this executable but not by this one"),
        "{e}"
    );
}
