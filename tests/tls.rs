//! Thread-local storage: `tls` data objects and `tls_value`, built both ways and run; the
//! general-dynamic sequence relaxed to local-exec; freestanding programs setting up their own
//! thread pointer; updates that keep thread-locals right or rebuild when the block changes.
//! Position-independent executables (`--pie`) and the hardening report.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn tls_program(name: &str) -> PathBuf {
    programs().join("tls").join(format!("{name}.clif"))
}

fn output(exe: &Path) -> (Option<i32>, String) {
    let o = Command::new(exe).output().expect("the program starts");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn stats(files: &[PathBuf], out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["--stats"];
    args.extend_from_slice(extra);
    let o = build(files, out, &args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "build failed: {stderr}");
    stderr
}

#[test]
fn four_threads_count_in_their_own_thread_locals() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![tls_program("threads")];
    let direct = dir.path().join("direct");
    let separate = dir.path().join("separate");
    build_ok(&files, &direct, &[]);
    build_ok(&files, &separate, &["--separate"]);
    let (status, out) = output(&direct);
    let want: String = (0..4)
        .map(|t| format!("thread {t} counted 1001000 (base 1000)\n"))
        .collect();
    assert_eq!((status, out.as_str()), (Some(0), want.as_str()));
    assert_eq!(output(&separate), (status, out));
    // The executable's own thread-locals need no `__tls_get_addr`: local-exec, and a PT_TLS.
    let dis = Command::new("objdump")
        .arg("-d")
        .arg(&direct)
        .output()
        .unwrap();
    let dis = String::from_utf8_lossy(&dis.stdout);
    assert!(dis.contains("%fs:0x0"), "no local-exec sequence");
    assert!(!dis.contains("__tls_get_addr"));
    let headers = Command::new("readelf")
        .args(["-lW"])
        .arg(&direct)
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&headers.stdout).into_owned();
    // `.tdata` up to the last initialised byte (`base`, 1000), the zeros after it `.tbss`,
    // which the loader zero-fills: `PT_TLS`'s file size below its memory size.
    let tls = headers
        .lines()
        .find(|l| l.trim_start().starts_with("TLS "))
        .unwrap_or_else(|| panic!("no PT_TLS:\n{headers}"));
    let f: Vec<&str> = tls.split_whitespace().collect();
    assert_eq!((f[4], f[5]), ("0x000018", "0x000020"), "{tls}");
    assert!(headers.contains(".tdata .tbss"), "{headers}");
    check_readelf(&direct);
    let syms = Command::new("readelf")
        .args(["-sW"])
        .arg(&direct)
        .output()
        .unwrap();
    let syms = String::from_utf8_lossy(&syms.stdout);
    assert!(
        syms.lines()
            .any(|l| l.contains(" TLS ") && l.ends_with(" counter")),
        "{syms}"
    );
}

#[test]
fn a_freestanding_program_sets_up_its_own_thread_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("prog");
    build_ok(&[tls_program("freestanding")], &exe, &["--freestanding"]);
    assert_eq!(output(&exe).0, Some(43));
    let ldd = Command::new("readelf")
        .args(["-lW"])
        .arg(&exe)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ldd.stdout).contains("INTERP"));
}

#[test]
fn updates_keep_thread_locals_and_a_new_block_layout_is_a_full_build() {
    let dir = tempfile::tempdir().unwrap();
    let clif = dir.path().join("threads.clif");
    let text = std::fs::read_to_string(tls_program("threads")).unwrap();
    std::fs::write(&clif, &text).unwrap();
    let exe = dir.path().join("prog");
    let files = vec![clif.clone()];
    stats(&files, &exe, &[]);
    // A new initial value: the same block, updated in place.
    settle_inputs();
    let text = text.replace(
        "%base tls writable = i64 1000",
        "%base tls writable = i64 2000",
    );
    std::fs::write(&clif, &text).unwrap();
    let s = stats(&files, &exe, &[]);
    assert!(s.contains("in-place update"), "{s}");
    assert!(output(&exe).1.starts_with("thread 0 counted 1002000"));
    // A new thread-local: the block grows, every offset changes: a full build, said why.
    settle_inputs();
    let text = text.replace(
        "; data: %fmt",
        "; data: %extra tls writable = zeroed 256\n; data: %fmt",
    );
    std::fs::write(&clif, &text).unwrap();
    let s = stats(&files, &exe, &[]);
    assert!(s.contains("the thread-local block changed from"), "{s}");
    assert!(output(&exe).1.starts_with("thread 0 counted 1002000"));
    // Removed again: gone from the executable (the full build counted it in its file's unit,
    // so the next update's sweep finds it missing).
    settle_inputs();
    let text = text.replace("; data: %extra tls writable = zeroed 256\n", "");
    std::fs::write(&clif, &text).unwrap();
    let s = stats(&files, &exe, &[]);
    assert!(
        s.contains("in-place update") && s.contains("removed 1"),
        "{s}"
    );
    let syms = Command::new("readelf")
        .args(["-sW"])
        .arg(&exe)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&syms.stdout).contains(" extra"));
}

/// A C object's thread-locals, compiled for each TLS model gcc picks (local-exec and
/// initial-exec without `-fPIC`; general- and local-dynamic with it, with and without the
/// PLT), all made local-exec, against the same program linked by `cc`.
#[test]
fn c_thread_locals_of_every_model_become_local_exec() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, flags) in [
        &["-O2", "-fno-pic"][..],
        &["-O2", "-fPIC"],
        &["-O0", "-fPIC"],
        &["-O2", "-fPIC", "-fno-plt"],
    ]
    .iter()
    .enumerate()
    {
        let mut files = vec![tls_program("ctls")];
        for c in ["ctls", "ctls2"] {
            let o = d.join(format!("{c}{i}.o"));
            let ok = Command::new("cc")
                .arg("-c")
                .args(*flags)
                .arg(programs().join("tls").join(format!("{c}.c")))
                .arg("-o")
                .arg(&o)
                .status()
                .unwrap();
            assert!(ok.success());
            files.push(o);
        }
        let direct = d.join(format!("direct{i}"));
        let separate = d.join(format!("separate{i}"));
        build_ok(&files, &direct, &[]);
        build_ok(&files, &separate, &["--separate"]);
        let out = output(&direct);
        assert_eq!(
            out,
            (Some(0), "main 236 threads 10904\n".to_string()),
            "{flags:?}"
        );
        assert_eq!(output(&separate), out, "{flags:?}");
        let dis = Command::new("objdump")
            .arg("-d")
            .arg(&direct)
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&dis.stdout).contains("tls_get_addr"));
    }
}

/// `zerolink inspect` says what checksec would: fixed-address (no PIE yet), full RELRO for a
/// libc program (none is needed in a static one, whose GOT is read-only from the start), a
/// non-executable stack, no writable-and-executable segment, no text relocations.
#[test]
fn inspect_reports_hardening() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra, relro) in [
        ("threads", &[][..], "RELRO full"),
        ("freestanding", &["--freestanding"][..], "RELRO not needed"),
    ] {
        let exe = dir.path().join(name);
        build_ok(&[tls_program(name)], &exe, extra);
        let o = zerolink().arg("inspect").arg(&exe).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("hardening:"))
            .unwrap_or_else(|| panic!("no hardening line:\n{text}"));
        assert_eq!(
            line,
            format!(
                "hardening:  PIE no, {relro}, NX stack yes, writable-and-executable segments 0, \
                 text relocations 0"
            ),
            "{name}"
        );
        let j = zerolink()
            .args(["inspect", "--json"])
            .arg(&exe)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
        assert_eq!(v["hardening"]["nx_stack"], true);
    }
}

/// `--pie`: an `ET_DYN` executable loaded at another address each run, whose pointers in data
/// are relocated by the loader, updated in place by a later build; thread-locals work in it.
#[test]
fn a_pie_moves_with_each_run_and_updates_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let clif = dir.path().join("pie.clif");
    let text = std::fs::read_to_string(tls_program("pie")).unwrap();
    std::fs::write(&clif, &text).unwrap();
    let exe = dir.path().join("prog");
    let files = vec![clif.clone()];
    stats(&files, &exe, &["--pie"]);
    let (a, b) = (output(&exe), output(&exe));
    assert_eq!(a.0, Some(0));
    assert!(a.1.ends_with("table says 15\n"), "{}", a.1);
    assert_ne!(a.1, b.1, "a PIE should load at another address each run");
    let o = zerolink().arg("inspect").arg(&exe).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("hardening:  PIE yes, RELRO full"));
    settle_inputs();
    std::fs::write(
        &clif,
        text.replace("v1 = iconst.i64 3", "v1 = iconst.i64 4"),
    )
    .unwrap();
    let s = stats(&files, &exe, &["--pie"]);
    assert!(s.contains("in-place update"), "{s}");
    assert!(output(&exe).1.ends_with("table says 20\n"));
    // Thread-locals in a PIE: local-exec does not depend on where the program is.
    let threads = dir.path().join("threads");
    build_ok(&[tls_program("threads")], &threads, &["--pie"]);
    assert!(output(&threads).1.starts_with("thread 0 counted 1001000"));
}

/// What cannot be relocated at load time is an error in a PIE, naming the place: a 32-bit
/// absolute address from a C object compiled without `-fPIC`, an absolute address in code.
#[test]
fn addresses_a_pie_cannot_relocate_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("abs.c");
    std::fs::write(
        &src,
        "int table[4] = {1, 2, 3, 4};\nint f(int i) { return table[i & 3]; }\n",
    )
    .unwrap();
    let obj = d.join("abs.o");
    let ok = Command::new("cc")
        .args(["-c", "-O2", "-fno-pic", "-mcmodel=small"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap();
    assert!(ok.success());
    let clif = d.join("main.clif");
    std::fs::write(
        &clif,
        "function %main() -> i32 system_v {\n    fn0 = %f(i32) -> i32 system_v\nblock0:\n    \
         v0 = iconst.i32 2\n    v1 = call fn0(v0)\n    return v1\n}\n",
    )
    .unwrap();
    let exe = d.join("prog");
    let o = build(&[clif.clone(), obj], &exe, &["--pie"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("abs.o:.text") && err.contains("32-bit absolute"),
        "{err}"
    );
    // Code compiled without is_pic holds absolute addresses (`movabs`): refused, asking for it.
    let o = build(
        &[tls_program("pie")],
        &exe,
        &["--pie", "--set", "is_pic=false"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("is_pic"), "{err}");
}

/// A freestanding `--pie` (static-pie, as `file` says): no loader, so `_start` relocates the
/// program itself (its pointers in data and GOT entries) from the table the image writes,
/// then makes the GOT read-only. It loads at another address each run and updates in place.
#[test]
fn a_freestanding_pie_relocates_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = program_files("data_pointers");
    let expected = std::fs::read(programs().join("data_pointers/expected.stdout")).unwrap();
    let exe = d.join("dp");
    build_ok(&files, &exe, &["--freestanding", "--pie"]);
    assert_eq!(
        run(&exe).stdout,
        expected,
        "pointers in data were not relocated"
    );
    let h = check_readelf(&exe);
    assert!(
        h.contains("DYN (Position-Independent Executable file)"),
        "{h}"
    );
    let o = Command::new("readelf")
        .arg("-r")
        .arg(&exe)
        .output()
        .unwrap();
    let relocs = String::from_utf8_lossy(&o.stdout);
    assert!(relocs.contains("R_X86_64_RELATIVE"), "{relocs}");
    let o = zerolink().arg("inspect").arg(&exe).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(
            "hardening:  PIE yes, RELRO not needed, NX stack yes, writable-and-executable \
             segments 0, text relocations 0"
        ),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Where it runs: the address of main, written as 8 bytes, differs from run to run.
    let whereami = d.join("where.clif");
    std::fs::write(
        &whereami,
        format!(
            "{EMIT}\nfunction %main() -> i32 {{\n    fn0 = %emit(i64)\n    fn1 = %main() -> i32\n\
             block0:\n    v0 = func_addr.i64 fn1\n    call fn0(v0)\n    v1 = iconst.i32 0\n    \
             return v1\n}}\n"
        ),
    )
    .unwrap();
    let w = d.join("where");
    build_ok(&[whereami], &w, &["--freestanding", "--pie"]);
    let (a, b) = (run(&w).stdout, run(&w).stdout);
    assert_eq!(a.len(), 8);
    assert_ne!(a, b, "a static PIE should load at another address each run");
    // A GOT entry the code cannot do without (`add x@GOTPCREL(%rip)`), relocated before
    // the GOT is made read-only: RELRO full.
    let c = d.join("got.c");
    std::fs::write(
        &c,
        "long x = 5;\nlong get(void) { long r = 0;\n  __asm__(\"addq x@GOTPCREL(%%rip), %0\" : \"+r\"(r));\n  return *(long *)r + 37; }\n",
    )
    .unwrap();
    let obj = d.join("got.o");
    assert!(Command::new("cc")
        .args(["-c", "-O2", "-fPIC", "-fno-asynchronous-unwind-tables"])
        .arg(&c)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap()
        .success());
    let m = d.join("m.clif");
    std::fs::write(
        &m,
        "function %main() -> i32 {\n    fn0 = %get() -> i64\nblock0:\n    v0 = call fn0()\n    \
         v1 = ireduce.i32 v0\n    return v1\n}\n",
    )
    .unwrap();
    let g = d.join("g");
    build_ok(&[m, obj], &g, &["--freestanding", "--pie"]);
    assert_eq!(run(&g).status, 42, "the GOT entry was not relocated");
    let o = zerolink().arg("inspect").arg(&g).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("PIE yes, RELRO full"));
    // An edit is an update in place, and the program still relocates itself.
    settle_inputs();
    let mut edited = files.clone();
    let main = d.join("main.clif");
    let text = std::fs::read_to_string(files.last().unwrap()).unwrap();
    std::fs::write(&main, text + "\n; an edit\nfunction %unused() -> i32 {\nblock0:\n    v0 = iconst.i32 1\n    return v0\n}\n").unwrap();
    *edited.last_mut().unwrap() = main;
    let s = stats(&edited, &exe, &["--freestanding", "--pie"]);
    assert!(s.contains("in-place update"), "{s}");
    assert_eq!(run(&exe).stdout, expected);
    // Not yet: thread-locals in a freestanding PIE, refused with the reason.
    let o = build(
        &[tls_program("freestanding")],
        &d.join("t"),
        &["--freestanding", "--pie"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("cannot have thread-locals yet (`counter` is one"),
        "{err}"
    );
}

/// A shared library's thread-local, read from CLIF (`tls_value`, general-dynamic) and from C
/// objects (general-dynamic with `-fPIC`, initial-exec `GOTTPOFF` without): each becomes
/// initial-exec, its offset from the thread pointer in a GOT entry the loader fills
/// (`R_X86_64_TPOFF64`, `STT_TLS` in `.dynsym`). The library's own writes are seen, and
/// another thread has its own copy. Also as a PIE.
#[test]
fn a_shared_librarys_thread_locals_are_reached_through_the_got() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cc = |args: &[&str]| {
        assert!(Command::new("cc")
            .current_dir(d)
            .args(args)
            .status()
            .unwrap()
            .success())
    };
    std::fs::write(
        d.join("lib.c"),
        "__thread long shared_tls = 42;\nlong bump_shared(void) { return ++shared_tls; }\n",
    )
    .unwrap();
    cc(&["-shared", "-fPIC", "-O2", "lib.c", "-o", "libstls.so"]);
    std::fs::write(
        d.join("gd.c"),
        "#include <pthread.h>\nextern __thread long shared_tls;\n\
         long read_gd(void) { return shared_tls; }\n\
         static void *rd(void *p) { *(long *)p = shared_tls; return 0; }\n\
         long other_thread(void) { pthread_t t; long v = 0;\n\
           pthread_create(&t, 0, rd, &v); pthread_join(t, 0); return v; }\n",
    )
    .unwrap();
    cc(&["-c", "-O2", "-fPIC", "gd.c", "-o", "gd.o"]);
    std::fs::write(
        d.join("ie.c"),
        "extern __thread long shared_tls;\nlong read_ie(void) { return shared_tls * 10; }\n",
    )
    .unwrap();
    cc(&["-c", "-O2", "-fno-pic", "ie.c", "-o", "ie.o"]);
    std::fs::write(
        d.join("main.clif"),
        r#"; data: %fmt = "clif %ld gd %ld ie %ld bumped %ld now %ld thread %ld\n\0"
function %main() -> i32 {
    gv0 = symbol tls %shared_tls
    gv1 = symbol %fmt
    fn0 = %printf(i64, i64, i64, i64, i64, i64, i64) -> i32
    fn1 = %read_gd() -> i64
    fn2 = %read_ie() -> i64
    fn3 = %bump_shared() -> i64
    fn4 = %other_thread() -> i64
block0:
    v0 = tls_value.i64 gv0
    v1 = load.i64 v0
    v2 = call fn1()
    v3 = call fn2()
    v4 = call fn3()
    v5 = load.i64 v0
    v9 = call fn4()
    v6 = symbol_value.i64 gv1
    v7 = call fn0(v6, v1, v2, v3, v4, v5, v9)
    v8 = iconst.i32 0
    return v8
}
"#,
    )
    .unwrap();
    let files = vec![d.join("main.clif"), d.join("gd.o"), d.join("ie.o")];
    let dir_arg = d.to_str().unwrap();
    for extra in [&[][..], &["--pie"][..]] {
        let exe = d.join("m");
        let mut args = vec!["-L", dir_arg, "-l", "stls", "--rpath", dir_arg, "--full"];
        args.extend_from_slice(extra);
        build_ok(&files, &exe, &args);
        let (status, out) = output(&exe);
        assert_eq!(status, Some(0), "{extra:?}");
        assert_eq!(
            out, "clif 42 gd 42 ie 420 bumped 43 now 43 thread 42\n",
            "{extra:?}"
        );
        let o = Command::new("readelf")
            .args(["-rW", "--dyn-syms"])
            .arg(&exe)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("R_X86_64_TPOFF64"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("shared_tls") && l.contains(" TLS ")),
            "{text}"
        );
        // No call of `__tls_get_addr` is left: every sequence is initial-exec.
        let o = Command::new("objdump")
            .arg("-d")
            .arg(&exe)
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&o.stdout).contains("__tls_get_addr"));
    }
}
