//! A compiler author's view: the same code that drives an `ObjectModule` drives a
//! `ZerolinkModule`, and the executables behave the same.

use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use zerolink_backend::{TargetOptions, ZerolinkModule};

/// A tiny "compiler": data with function and data addresses inside, a writable zero-filled
/// counter, an imported built-in, a libcall, an anonymous function, and an indirect call.
fn compile<M: Module>(module: &mut M) {
    let ptr = module.target_config().pointer_type();
    let mut sig_ii = module.make_signature();
    sig_ii.params.push(AbiParam::new(types::I64));
    sig_ii.returns.push(AbiParam::new(types::I64));
    let double = module
        .declare_function("double", Linkage::Local, &sig_ii)
        .unwrap();
    let triple = module.declare_anonymous_function(&sig_ii).unwrap();

    let mut sig_write = module.make_signature();
    for t in [types::I32, types::I64, types::I64] {
        sig_write.params.push(AbiParam::new(t));
    }
    sig_write.returns.push(AbiParam::new(types::I64));
    let write = module
        .declare_function("zl_write", Linkage::Import, &sig_write)
        .unwrap();

    let greeting = module
        .declare_data("greeting", Linkage::Local, false, false)
        .unwrap();
    let mut d = DataDescription::new();
    d.define(b"hello from the module API\n".to_vec().into_boxed_slice());
    module.define_data(greeting, &d).unwrap();

    let counter = module
        .declare_data("counter", Linkage::Export, true, false)
        .unwrap();
    let mut d = DataDescription::new();
    d.define_zeroinit(8);
    d.set_align(8);
    module.define_data(counter, &d).unwrap();

    // table = { &double, &triple, &greeting + 11 }
    let table = module
        .declare_data("table", Linkage::Local, false, false)
        .unwrap();
    let mut d = DataDescription::new();
    d.define(vec![0u8; 24].into_boxed_slice());
    d.set_align(8);
    let f = module.declare_func_in_data(double, &mut d);
    d.write_function_addr(0, f);
    let f = module.declare_func_in_data(triple, &mut d);
    d.write_function_addr(8, f);
    let g = module.declare_data_in_data(greeting, &mut d);
    d.write_data_addr(16, g, 11);
    module.define_data(table, &d).unwrap();

    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    for (id, factor) in [(double, 2), (triple, 3)] {
        ctx.func.signature = sig_ii.clone();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        let x = b.block_params(block)[0];
        let r = b.ins().imul_imm_s(x, factor);
        b.ins().return_(&[r]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
        module.define_function(id, &mut ctx).unwrap();
        module.clear_context(&mut ctx);
    }

    let mut sig_main = module.make_signature();
    sig_main.returns.push(AbiParam::new(types::I32));
    let main = module
        .declare_function("main", Linkage::Export, &sig_main)
        .unwrap();
    ctx.func.signature = sig_main;
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.switch_to_block(block);
        let table_gv = module.declare_data_in_func(table, b.func);
        let counter_gv = module.declare_data_in_func(counter, b.func);
        let greeting_gv = module.declare_data_in_func(greeting, b.func);
        let write_ref = module.declare_func_in_func(write, b.func);
        let sig_ref = b.import_signature(sig_ii.clone());

        // counter = double(10) + triple(4) via the table: 32
        let t = b.ins().symbol_value(ptr, table_gv);
        let fd = b.ins().load(ptr, MemFlagsData::trusted(), t, 0);
        let ft = b.ins().load(ptr, MemFlagsData::trusted(), t, 8);
        let ten = b.ins().iconst(types::I64, 10);
        let four = b.ins().iconst(types::I64, 4);
        let c1 = b.ins().call_indirect(sig_ref, fd, &[ten]);
        let c2 = b.ins().call_indirect(sig_ref, ft, &[four]);
        let (a, c) = (b.inst_results(c1)[0], b.inst_results(c2)[0]);
        let sum = b.ins().iadd(a, c);
        let cnt = b.ins().symbol_value(ptr, counter_gv);
        b.ins().store(MemFlagsData::trusted(), sum, cnt, 0);

        // Copy the greeting to the stack with the memcpy libcall, then write it out.
        let slot = b.create_sized_stack_slot(cranelift_codegen::ir::StackSlotData::new(
            cranelift_codegen::ir::StackSlotKind::ExplicitSlot,
            64,
            0,
        ));
        let buf = b.ins().stack_addr(ptr, slot, 0);
        let src = b.ins().symbol_value(ptr, greeting_gv);
        let len = b.ins().iconst(types::I64, 26);
        b.call_memcpy(module.target_config(), buf, src, len);
        let one = b.ins().iconst(types::I32, 1);
        b.ins().call(write_ref, &[one, buf, len]);

        // Write "the module API\n" through the pointer stored in the table (greeting + 11).
        let p = b.ins().load(ptr, MemFlagsData::trusted(), t, 16);
        let len2 = b.ins().iconst(types::I64, 15);
        b.ins().call(write_ref, &[one, p, len2]);

        let v = b.ins().load(types::I64, MemFlagsData::trusted(), cnt, 0);
        let r = b.ins().ireduce(types::I32, v);
        b.ins().return_(&[r]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module.define_function(main, &mut ctx).unwrap();
}

fn run(path: &std::path::Path) -> (i32, String) {
    // The module writes the executable in this process while other test threads fork children
    // (gdb, cc), which briefly inherit the write descriptor until they exec: retry the "text
    // file busy" race.
    let mut tries = 0;
    let o = loop {
        match std::process::Command::new(path).output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other.expect("the built executable starts"),
        }
    };
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn zerolink_module_is_a_drop_in_for_object_module() {
    let dir = tempfile::tempdir().unwrap();
    let target = TargetOptions::default();

    let direct = dir.path().join("direct");
    let mut zl = ZerolinkModule::freestanding(target.isa().unwrap(), &direct).unwrap();
    compile(&mut zl);
    let summary = zl.finish().unwrap();
    assert!(summary.summary.functions >= 4, "{summary:?}");

    let builder = ObjectBuilder::new(
        target.isa().unwrap(),
        "t",
        cranelift_module::default_libcall_names(),
    )
    .unwrap();
    let mut obj = ObjectModule::new(builder);
    compile(&mut obj);
    let o = dir.path().join("t.o");
    std::fs::write(&o, obj.finish().emit().unwrap()).unwrap();
    let separate = dir.path().join("separate");
    let freestanding = zerolink_backend::LinkOptions {
        freestanding: true,
        ..Default::default()
    };
    zerolink_backend::reference::link(&[o], &separate, dir.path(), "cc", &freestanding, &[])
        .unwrap();

    let expected = (
        32,
        "hello from the module API\nthe module API\n".to_string(),
    );
    assert_eq!(run(&direct), expected);
    assert_eq!(run(&separate), expected);
}

#[test]
fn defining_a_function_twice_or_an_import_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut zl = ZerolinkModule::freestanding(
        TargetOptions::default().isa().unwrap(),
        &dir.path().join("x"),
    )
    .unwrap();
    let mut sig = zl.make_signature();
    sig.returns.push(AbiParam::new(types::I32));
    let f = zl.declare_function("f", Linkage::Export, &sig).unwrap();
    let imp = zl.declare_function("imp", Linkage::Import, &sig).unwrap();
    let config = zl.target_config();
    let body = |ctx: &mut Context| {
        ctx.func.signature = sig.clone();
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.switch_to_block(block);
        let v = b.ins().iconst(types::I32, 0);
        b.ins().return_(&[v]);
        b.seal_all_blocks();
        b.finalize(config);
    };
    let mut ctx = zl.make_context();
    body(&mut ctx);
    zl.define_function(f, &mut ctx).unwrap();
    let mut ctx = zl.make_context();
    body(&mut ctx);
    let err = zl.define_function(f, &mut ctx).unwrap_err();
    assert!(
        matches!(&err, cranelift_module::ModuleError::DuplicateDefinition(n) if n == "f"),
        "{err}"
    );
    let mut ctx = zl.make_context();
    body(&mut ctx);
    assert!(matches!(
        zl.define_function(imp, &mut ctx),
        Err(cranelift_module::ModuleError::InvalidImportDefinition(_))
    ));
}

#[test]
fn an_unknown_relocation_kind_names_function_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut zl = ZerolinkModule::freestanding(
        TargetOptions::default().isa().unwrap(),
        &dir.path().join("x"),
    )
    .unwrap();
    let sig = zl.make_signature();
    let f = zl.declare_function("odd", Linkage::Export, &sig).unwrap();
    let reloc = cranelift_module::ModuleReloc {
        offset: 2,
        kind: cranelift_codegen::binemit::Reloc::Arm64Call,
        name: cranelift_module::ModuleRelocTarget::user(0, f.as_u32()),
        addend: 0,
    };
    let err = zl
        .define_function_bytes(f, 16, &[0x90; 8], &[reloc])
        .unwrap_err();
    let err = zerolink_backend::BackendError::from(err).to_string();
    assert_eq!(
        err,
        "relocation Arm64Call in `odd` at offset 0x2 is not supported"
    );
}

#[test]
fn a_module_can_call_libc_when_linked_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("puts");
    let mut m =
        ZerolinkModule::freestanding(TargetOptions::default().isa().unwrap(), &out).unwrap();
    m.link_libraries(&zerolink_backend::LinkOptions::default())
        .unwrap();
    let msg = m.declare_data("msg", Linkage::Local, false, false).unwrap();
    let mut d = DataDescription::new();
    d.define(b"via libc puts\0".to_vec().into_boxed_slice());
    m.define_data(msg, &d).unwrap();
    let mut sig = m.make_signature();
    sig.params.push(AbiParam::new(types::I64));
    sig.returns.push(AbiParam::new(types::I32));
    let puts = m.declare_function("puts", Linkage::Import, &sig).unwrap();
    let mut sig_main = m.make_signature();
    sig_main.returns.push(AbiParam::new(types::I32));
    let main = m
        .declare_function("main", Linkage::Export, &sig_main)
        .unwrap();
    let mut ctx = m.make_context();
    ctx.func.signature = sig_main;
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.switch_to_block(block);
        let gv = m.declare_data_in_func(msg, b.func);
        let f = m.declare_func_in_func(puts, b.func);
        let p = b.ins().symbol_value(types::I64, gv);
        b.ins().call(f, &[p]);
        let zero = b.ins().iconst(types::I32, 0);
        b.ins().return_(&[zero]);
        b.seal_all_blocks();
        b.finalize(m.target_config());
    }
    m.define_function(main, &mut ctx).unwrap();
    m.finish().unwrap();
    assert_eq!(run(&out), (0, "via libc puts\n".to_string()));
}

/// A compiler for another language gives its own files and lines: gdb stops at a line of that
/// language's source file, shows it, steps to the next one and shows the real call chain.
#[test]
fn a_module_user_supplies_source_lines_that_gdb_follows() {
    const SOURCE: &str = "\
fn add(a, b) {
  let s = a + b
  return s * 2
}
fn main() {
  let x = add(19, 2)
  exit(x)
}
";
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("demo.toy");
    std::fs::write(&src, SOURCE).unwrap();
    let exe = dir.path().join("demo");
    let target = TargetOptions::default();
    let mut m = ZerolinkModule::freestanding(target.isa().unwrap(), &exe).unwrap();
    let file = m.add_source_file(&src).unwrap();

    let mut sig_add = m.make_signature();
    sig_add.params.push(AbiParam::new(types::I64));
    sig_add.params.push(AbiParam::new(types::I64));
    sig_add.returns.push(AbiParam::new(types::I64));
    let add = m.declare_function("add", Linkage::Local, &sig_add).unwrap();
    let mut sig_main = m.make_signature();
    sig_main.returns.push(AbiParam::new(types::I32));
    let main = m
        .declare_function("main", Linkage::Export, &sig_main)
        .unwrap();
    m.set_function_source(add, file, 1).unwrap();
    m.set_function_source(main, file, 5).unwrap();
    let line = cranelift_codegen::ir::SourceLoc::new;

    let mut ctx = m.make_context();
    let mut fctx = FunctionBuilderContext::new();
    ctx.func.signature = sig_add.clone();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        let (x, y) = (b.block_params(block)[0], b.block_params(block)[1]);
        b.set_srcloc(line(2));
        let s = b.ins().iadd(x, y);
        b.set_srcloc(line(3));
        let r = b.ins().imul_imm_s(s, 2);
        b.ins().return_(&[r]);
        b.seal_all_blocks();
        b.finalize(m.target_config());
    }
    m.define_function(add, &mut ctx).unwrap();
    m.clear_context(&mut ctx);
    ctx.func.signature = sig_main.clone();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.switch_to_block(block);
        let callee = m.declare_func_in_func(add, b.func);
        b.set_srcloc(line(6));
        let a = b.ins().iconst(types::I64, 19);
        let c = b.ins().iconst(types::I64, 2);
        let call = b.ins().call(callee, &[a, c]);
        let x = b.inst_results(call)[0];
        b.set_srcloc(line(7));
        let code = b.ins().ireduce(types::I32, x);
        b.ins().return_(&[code]);
        b.seal_all_blocks();
        b.finalize(m.target_config());
    }
    m.define_function(main, &mut ctx).unwrap();
    m.finish().unwrap();
    assert_eq!(run(&exe).0, 42);

    let o = std::process::Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "break demo.toy:3", "-ex", "run"])
        .args(["-ex", "bt", "-ex", "next"])
        .arg(&exe)
        .output()
        .expect("gdb runs (.ci/run installs it)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("Breakpoint 1, add ("), "{out}");
    assert!(out.contains("3\t  return s * 2"), "{out}");
    let frames: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert!(
        frames.len() >= 2
            && frames[0].contains("add (")
            && frames[0].contains("demo.toy:3")
            && frames[1].contains("main (")
            && frames[1].contains("demo.toy:6"),
        "{out}"
    );
    // `next` from the last line of `add` returns to the caller's next line.
    assert!(out.contains("7\t  exit(x)"), "{out}");
}

#[test]
fn a_second_module_for_the_same_output_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    let isa = || TargetOptions::default().isa().unwrap();
    let first = ZerolinkModule::freestanding(isa(), &out).unwrap();
    let second = ZerolinkModule::freestanding(isa(), &out);
    let err = second.err().expect("the output is busy").to_string();
    assert!(
        err.contains("another build of") && err.contains("prog"),
        "{err}"
    );
    drop(first);
    // The lock goes with the first module.
    assert!(ZerolinkModule::freestanding(isa(), &out).is_ok());
}

#[test]
fn a_function_cranelift_cannot_compile_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ZerolinkModule::freestanding(
        TargetOptions::default().isa().unwrap(),
        &dir.path().join("p"),
    )
    .unwrap();
    // Cranelift's x86-64 ABI panics on i128 arguments (without LLVM ABI extensions).
    let mut sig = m.make_signature();
    sig.params.push(AbiParam::new(types::I128));
    sig.returns.push(AbiParam::new(types::I128));
    let wide = m.declare_function("wide", Linkage::Export, &sig).unwrap();
    let mut ctx = m.make_context();
    ctx.func.signature = sig;
    let config = m.target_config();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
    let block = b.create_block();
    b.append_block_params_for_function_params(block);
    b.switch_to_block(block);
    b.seal_block(block);
    let v = b.block_params(block)[0];
    b.ins().return_(&[v]);
    b.finalize(config);
    let err = m.define_function(wide, &mut ctx).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("wide") && err.contains("cannot compile"),
        "{err}"
    );
}

/// A compiler's runtime shipped as a static library: the module calls into a C archive made
/// here (which calls libc and back into the module's code) and links it through
/// `add_precompiled`; an update of the module's code keeps the archive's member as it was.
#[test]
fn a_module_links_a_static_c_library_and_updates_around_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("rt.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nlong hook(long);\n\
         long rt_report(long x) { printf(\"rt sees %ld\\n\", hook(x)); return 3; }\n",
    )
    .unwrap();
    let obj = d.join("rt.o");
    let ok = std::process::Command::new("cc")
        .args(["-c", "-O2"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap();
    assert!(ok.success());
    let lib = d.join("librt.a");
    let ok = std::process::Command::new("ar")
        .arg("rcs")
        .arg(&lib)
        .arg(&obj)
        .status()
        .unwrap();
    assert!(ok.success());
    let out = d.join("prog");
    let build = |k: i64| {
        let mut m = ZerolinkModule::open(
            TargetOptions::default().isa().unwrap(),
            &out,
            zerolink_backend::ModuleOptions::default(),
        )
        .unwrap();
        m.add_precompiled(&lib);
        let mut sig = m.make_signature();
        sig.params.push(AbiParam::new(types::I64));
        sig.returns.push(AbiParam::new(types::I64));
        let hook = m.declare_function("hook", Linkage::Export, &sig).unwrap();
        let report = m
            .declare_function("rt_report", Linkage::Import, &sig)
            .unwrap();
        let mut ctx = m.make_context();
        ctx.func.signature = sig.clone();
        let mut fctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let block = b.create_block();
            b.append_block_params_for_function_params(block);
            b.switch_to_block(block);
            let x = b.block_params(block)[0];
            let y = b.ins().imul_imm_s(x, k);
            b.ins().return_(&[y]);
            b.seal_all_blocks();
            b.finalize(m.target_config());
        }
        m.define_function(hook, &mut ctx).unwrap();
        let mut sig_main = m.make_signature();
        sig_main.returns.push(AbiParam::new(types::I32));
        let main = m
            .declare_function("main", Linkage::Export, &sig_main)
            .unwrap();
        let mut ctx = m.make_context();
        ctx.func.signature = sig_main;
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let block = b.create_block();
            b.switch_to_block(block);
            let f = m.declare_func_in_func(report, b.func);
            let arg = b.ins().iconst(types::I64, 14);
            let call = b.ins().call(f, &[arg]);
            let r = b.inst_results(call)[0];
            let r = b.ins().ireduce(types::I32, r);
            b.ins().return_(&[r]);
            b.seal_all_blocks();
            b.finalize(m.target_config());
        }
        m.define_function(main, &mut ctx).unwrap();
        m.finish().unwrap()
    };
    build(3);
    assert_eq!(run(&out), (3, "rt sees 42\n".to_string()));
    let member = |exe: &std::path::Path| {
        let bytes = std::fs::read(exe).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        use object::{Object, ObjectSymbol};
        let s = file.symbol_by_name("rt_report").expect("rt_report");
        (s.address(), s.size())
    };
    let before = member(&out);
    let report = build(2);
    assert_eq!(report.mode, zerolink_backend::Mode::Update);
    assert_eq!(run(&out), (3, "rt sees 28\n".to_string()));
    assert_eq!(member(&out), before);
}

/// Thread-local data through the library: `declare_data(.., tls: true)` and `tls_value`, in a
/// libc program and a freestanding one.
#[test]
fn a_module_defines_and_reads_thread_locals() {
    let dir = tempfile::tempdir().unwrap();
    for freestanding in [false, true] {
        let out = dir.path().join(format!("tls{freestanding}"));
        let opts = zerolink_backend::ModuleOptions {
            link: zerolink_backend::LinkOptions {
                freestanding,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut m =
            ZerolinkModule::open(TargetOptions::default().isa().unwrap(), &out, opts).unwrap();
        let t = m.declare_data("slot", Linkage::Local, true, true).unwrap();
        let mut d = DataDescription::new();
        d.define(40i64.to_le_bytes().to_vec().into_boxed_slice());
        d.set_align(8);
        m.define_data(t, &d).unwrap();
        let mut sig_main = m.make_signature();
        sig_main.returns.push(AbiParam::new(types::I32));
        let main = m
            .declare_function("main", Linkage::Export, &sig_main)
            .unwrap();
        let mut ctx = m.make_context();
        ctx.func.signature = sig_main;
        let mut fctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let block = b.create_block();
            b.switch_to_block(block);
            let gv = m.declare_data_in_func(t, b.func);
            let p = b.ins().tls_value(types::I64, gv);
            let v = b.ins().load(types::I64, MemFlagsData::new(), p, 0);
            let v = b.ins().iadd_imm_s(v, 2);
            b.ins().store(MemFlagsData::new(), v, p, 0);
            let again = b.ins().tls_value(types::I64, gv);
            let w = b.ins().load(types::I64, MemFlagsData::new(), again, 0);
            let w = b.ins().ireduce(types::I32, w);
            b.ins().return_(&[w]);
            b.seal_all_blocks();
            b.finalize(m.target_config());
        }
        m.define_function(main, &mut ctx).unwrap();
        m.finish().unwrap();
        assert_eq!(run(&out).0, 42, "freestanding: {freestanding}");
    }
}

/// An ISA for a target zerolink cannot write is refused by `open`, before any work, with what
/// it writes; an aarch64 ISA (where Cranelift is built with it) is refused the same way.
#[test]
fn a_target_zerolink_cannot_write_is_refused_at_open() {
    use cranelift_codegen::settings::{self, Configurable};
    let dir = tempfile::tempdir().unwrap();
    for triple in [
        "x86_64-apple-darwin",
        "x86_64-pc-windows-msvc",
        "aarch64-unknown-linux-gnu",
    ] {
        let Ok(builder) = cranelift_codegen::isa::lookup_by_name(triple) else {
            continue; // not compiled into this Cranelift
        };
        let mut flags = settings::builder();
        flags.set("is_pic", "true").unwrap();
        let isa = builder.finish(settings::Flags::new(flags)).unwrap();
        let out = dir.path().join("prog");
        let e = ZerolinkModule::open(isa, &out, zerolink_backend::ModuleOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{triple} was accepted"));
        let text = e.to_string();
        assert!(
            text.contains(triple) && text.contains("x86_64-unknown-linux-gnu"),
            "{text}"
        );
        assert!(!out.exists() && !dir.path().join(".prog.zl-lock").exists());
    }
}

/// Errors convert both ways: a `BackendError` through `?` into cranelift-module's
/// `ModuleError` (what a `Module`-generic front end returns), and back, typed as it was.
#[test]
fn errors_convert_both_ways_and_keep_their_type() {
    // (cranelift-module's error type, as front ends return it.)
    #[allow(clippy::result_large_err)]
    fn generic_front_end() -> cranelift_module::ModuleResult<()> {
        Err(zerolink_backend::BackendError::Target(
            "riscv64gc-unknown-linux-gnu".into(),
        ))?;
        Ok(())
    }
    let e = generic_front_end().unwrap_err();
    assert!(e.to_string().contains("riscv64gc-unknown-linux-gnu"), "{e}");
    let back: zerolink_backend::BackendError = e.into();
    assert!(
        matches!(back, zerolink_backend::BackendError::Target(ref t) if t.starts_with("riscv64")),
        "{back:?}"
    );
}
