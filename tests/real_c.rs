//! Real C code as Debian's gcc compiles it (`-fPIE` by default), each program linked twice
//! from the same objects, by `cc` and by zerolink (fixed-address and `--pie`), both run and
//! compared: copy relocations of libraries' data objects (`stdout`, `environ`, `optarg`),
//! Debian's own `liblua5.4.a`, and updates that change how data is reached.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{c_object, settle_inputs, sh, zerolink};

#[allow(unused_imports)]
use support::programs;

/// What a program did: exit status, stdout, stderr.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_with(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let o = Command::new(exe)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    Outcome {
        status: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `zerolink build -o OUT FILES EXTRA`; its stderr.
fn zl_ok(files: &[PathBuf], out: &Path, extra: &[&str]) -> String {
    let o = zerolink()
        .arg("build")
        .arg("-o")
        .arg(out)
        .args(files)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "zerolink failed: {stderr}");
    stderr
}

/// `cc FILES LIBS -o OUT`: the program as the system links it.
fn cc_link(files: &[PathBuf], libs: &[&str], out: &Path) {
    sh(Command::new("cc").args(files).args(libs).arg("-o").arg(out));
}

/// Link `files` with cc and with zerolink (fixed-address and `--pie`, `extra` given to
/// zerolink), run all three with `args`, and require the same outcome; returns it.
fn same_as_cc(
    dir: &Path,
    files: &[PathBuf],
    cc_libs: &[&str],
    extra: &[&str],
    args: &[&str],
) -> Outcome {
    let twin = dir.join("cc-linked");
    cc_link(files, cc_libs, &twin);
    let want = run_with(&twin, args, &[]);
    for pie in [false, true] {
        let exe = dir.join(if pie { "zl-pie" } else { "zl-fixed" });
        let mut flags = extra.to_vec();
        if pie {
            flags.push("--pie");
        }
        zl_ok(files, &exe, &flags);
        readelf_accepts(&exe);
        let got = run_with(&exe, args, &[]);
        assert_eq!(got, want, "zerolink ({flags:?}) and cc disagree");
    }
    want
}

/// Whether `word` of readelf's output names symbol `name`, with or without its version
/// (`stdout@GLIBC_2.2.5`).
fn named(word: &str, name: &str) -> bool {
    word == name
        || word
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('@'))
}

/// `readelf` reads every header and table without a complaint (Lua's own symbols are named
/// `*warning*`, so only stderr is looked at).
fn readelf_accepts(exe: &Path) {
    let o = Command::new("readelf")
        .args(["--wide", "-h", "-l", "-S", "-s", "-r", "-d", "--dyn-syms"])
        .arg(exe)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && stderr.is_empty(), "readelf: {stderr}");
}

fn readelf(args: &[&str], exe: &Path) -> String {
    let o = Command::new("readelf")
        .args(args)
        .arg(exe)
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Reaches libc's data objects the way `-fPIE` code does (`R_X86_64_PC32`, no GOT): the
/// streams, `environ` (assigned here, read by libc's `getenv` under its other name
/// `__environ`), `optarg`/`optind` set by libc's `getopt`.
const LIBC_DATA: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
extern char **environ;
static char *mine[] = { "ZL_PROBE=from-the-program", 0 };
int main(int argc, char **argv) {
    int c;
    while ((c = getopt(argc, argv, "n:v")) != -1) {
        if (c == 'n') fprintf(stdout, "n=%s\n", optarg);
        else fprintf(stdout, "flag %c\n", c);
    }
    fprintf(stdout, "optind=%d rest=%s\n", optind, optind < argc ? argv[optind] : "-");
    fprintf(stderr, "to stderr\n");
    char **saved = environ;
    environ = mine;
    fprintf(stdout, "getenv: %s\n", getenv("ZL_PROBE"));
    environ = saved;
    fprintf(stdout, "stdout is libc's: %d\n", fileno(stdout) == 1 && stdout != stderr);
    fflush(stdout);
    return 3;
}
"#;

#[test]
fn libraries_data_objects_reached_directly_get_copy_relocations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let obj = c_object(d, "libc_data", LIBC_DATA, &[]);
    let out = same_as_cc(d, &[obj], &[], &[], &["-n", "42", "-v", "tail"]);
    assert_eq!(out.status, Some(3));
    assert!(
        out.stdout.contains("n=42\nflag v\noptind=4 rest=tail\n"),
        "{out:?}"
    );
    assert!(out.stdout.contains("getenv: from-the-program"), "{out:?}");
    assert!(out.stdout.contains("stdout is libc's: 1"), "{out:?}");
    assert_eq!(out.stderr, "to stderr\n");
    // As ld writes them: a COPY per object, the name (and `environ`'s other names) defined
    // in `.bss` in `.dynsym`, so that libc binds its own references to the copy.
    let relocs = readelf(&["-W", "-r"], &d.join("zl-fixed"));
    for name in ["stdout", "stderr", "environ", "optarg", "optind"] {
        assert!(
            relocs.lines().any(
                |l| l.contains("R_X86_64_COPY") && l.split_whitespace().any(|w| named(w, name))
            ),
            "no copy relocation for `{name}`:\n{relocs}"
        );
    }
    let inspect = zerolink()
        .arg("inspect")
        .arg(d.join("zl-fixed"))
        .output()
        .unwrap();
    let inspect = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect
            .lines()
            .any(|l| l.starts_with("copies:") && l.contains("stdout (libc.so.6)")),
        "{inspect}"
    );
    let dynsym = readelf(&["-W", "--dyn-syms"], &d.join("zl-fixed"));
    for name in ["environ", "__environ", "_environ"] {
        assert!(
            dynsym
                .lines()
                .any(|l| l.split_whitespace().any(|w| named(w, name))
                    && l.contains("OBJECT")
                    && !l.contains("UND")),
            "`{name}` is not defined at the copy:\n{dynsym}"
        );
    }
}

#[test]
fn an_update_that_reaches_library_data_directly_makes_the_copy_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let exe = d.join("prog");
    // First only calls (`puts`), then `stdout` read directly, then neither.
    let versions = [
        "#include <stdio.h>\nint main(void) { puts(\"calls only\"); return 0; }\n",
        "#include <stdio.h>\nint main(void) { fputs(\"direct\\n\", stdout); return 0; }\n",
        "#include <stdio.h>\nint main(void) { return 7; }\n",
    ];
    let wants = [
        (Some(0), "calls only\n"),
        (Some(0), "direct\n"),
        (Some(7), ""),
    ];
    for (i, (text, (status, stdout))) in versions.iter().zip(wants).enumerate() {
        settle_inputs();
        let obj = c_object(d, "main", text, &[]);
        let stderr = zl_ok(&[obj], &exe, &["--stats"]);
        if i > 0 {
            assert!(stderr.contains("in-place update"), "step {i}: {stderr}");
        }
        let got = run_with(&exe, &[], &[]);
        assert_eq!(
            (got.status, got.stdout.as_str()),
            (status, stdout),
            "step {i}"
        );
    }
}

/// Debian's `liblua5.4.a` (built by Debian's gcc, `-fPIE` code that reads `stdout` and
/// `stderr` directly), driven by a small C program: Lua code printing to both streams.
#[test]
fn debians_liblua_runs_as_cc_links_it() {
    let lib = Path::new("/usr/lib/x86_64-linux-gnu/liblua5.4.a");
    assert!(
        lib.exists(),
        "{} is missing: install liblua5.4-dev (.ci/run does)",
        lib.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let driver = c_object(
        d,
        "lua_driver",
        r#"
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
int main(int argc, char **argv) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, argv[1])) {
        fprintf(stderr, "error: %s\n", lua_tostring(L, -1));
        return 1;
    }
    lua_close(L);
    return 0;
}
"#,
        &["-I/usr/include/lua5.4"],
    );
    let files = [driver, lib.to_path_buf()];
    let code = "local t = {} for i = 1, 20 do t[i] = i * i end \
                print('squares', table.concat(t, ',')) \
                io.stderr:write('to stderr ', string.format('%5.2f', math.pi), '\\n') \
                io.write(string.rep('ab', 3), '\\n') \
                local ok, e = pcall(error, 'caught') print(ok, e) \
                print(select('#', 1, 2, 3), tostring(nil), 7 // 2, 2^10)";
    let out = same_as_cc(d, &files, &["-lm"], &["-l", "m"], &[code]);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("squares\t1,4,9,16"), "{out:?}");
    assert!(out.stderr.contains("to stderr  3.14"), "{out:?}");
    let bad = same_as_cc(d, &files, &["-lm"], &["-l", "m"], &["error('boom')"]);
    assert_eq!(bad.status, Some(1));
    assert!(bad.stderr.contains("boom"), "{bad:?}");
}

/// An indirect function (`STT_GNU_IFUNC`, as glibc and GCC's `target_clones` make them) in an
/// archive member: calls reach what the resolver chose, and its address is one address in
/// code and data, fixed-address and PIE; an update that edits the caller keeps it so.
#[test]
fn indirect_functions_are_resolved_before_main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let add = c_object(
        d,
        "add",
        r#"
static int add_fast(int a, int b) { return a + b; }
static int add_slow(int a, int b) { return b + a; }
int use_slow;
static void *resolve_add(void) { return use_slow ? (void *)add_slow : (void *)add_fast; }
int add(int, int) __attribute__((ifunc("resolve_add")));
"#,
        &[],
    );
    let lib = d.join("libadd.a");
    sh(Command::new("ar").arg("rcs").arg(&lib).arg(&add));
    let main_text = |n: i32| {
        format!(
            r#"
#include <stdio.h>
int add(int, int);
int (*in_data)(int, int) = add;
int main(void) {{
    int (*in_code)(int, int) = add;
    printf("add=%d through data=%d same=%d\n", add(20, {n}), in_data(1, 2), in_code == in_data);
    return 0;
}}
"#
        )
    };
    let main = c_object(d, "main", &main_text(22), &[]);
    let files = [main, lib];
    let out = same_as_cc(d, &files, &[], &[], &[]);
    assert_eq!(out.stdout, "add=42 through data=3 same=1\n");
    let relocs = readelf(&["-W", "-r"], &d.join("zl-fixed"));
    assert!(relocs.contains("R_X86_64_IRELATIVE"), "{relocs}");
    // An edit of the caller, in place.
    settle_inputs();
    c_object(d, "main", &main_text(1), &[]);
    let exe = d.join("zl-pie");
    let stderr = zl_ok(&files, &exe, &["--pie", "--stats"]);
    assert!(stderr.contains("in-place update"), "{stderr}");
    let got = run_with(&exe, &[], &[]);
    assert_eq!(got.stdout, "add=21 through data=3 same=1\n");
    // A freestanding program has no loader to call the resolver: refused, with the name.
    let o = zerolink()
        .args(["build", "--freestanding", "-o"])
        .arg(d.join("free"))
        .args(&files)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("`add` is an indirect function"),
        "{err}"
    );
}

/// Every relocation type of the x86-64 psABI that zerolink does not place, each fed in an
/// object of its own (`.reloc` in GNU as), and a loaded section of a type it does not
/// know: each an error naming the object, the section, the offset and what it is, never a
/// build that guesses.
#[test]
fn every_unsupported_construct_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let main = c_object(
        d,
        "main",
        "int f(void);\nint main(void) { return f(); }\n",
        &[],
    );
    let assemble = |name: &str, asm: &str| {
        let s = d.join(format!("{name}.s"));
        std::fs::write(&s, asm).unwrap();
        let o = d.join(format!("{name}.o"));
        sh(Command::new("cc").arg("-c").arg(&s).arg("-o").arg(&o));
        o
    };
    let unsupported = [
        "R_X86_64_GOT32",
        "R_X86_64_COPY",
        "R_X86_64_GLOB_DAT",
        "R_X86_64_JUMP_SLOT",
        "R_X86_64_RELATIVE",
        "R_X86_64_16",
        "R_X86_64_PC16",
        "R_X86_64_8",
        "R_X86_64_PC8",
        "R_X86_64_GOT64",
        "R_X86_64_GOTPCREL64",
        "R_X86_64_GOTPLT64",
        "R_X86_64_PLTOFF64",
        "R_X86_64_IRELATIVE",
        "R_X86_64_DTPMOD64",
        "R_X86_64_DTPOFF64",
        "R_X86_64_TPOFF64",
        "R_X86_64_TLSDESC",
    ];
    let mut cases: Vec<(PathBuf, String)> = Vec::new();
    for (i, rtype) in unsupported.iter().enumerate() {
        let tls = ["DTPMOD64", "DTPOFF64", "TPOFF64", "TLSDESC"]
            .iter()
            .any(|t| rtype.ends_with(t));
        let name = format!("reloc{i}");
        let asm = format!(
            ".text\n.globl f\nf: mov $0, %eax\n ret\n.data\n.quad 0\n.quad 0\n\
             .reloc 8, {rtype}, f\n.section .note.GNU-stack,\"\",@progbits\n"
        );
        let obj = assemble(&name, &asm);
        let what = if tls {
            format!("{rtype} is a thread-local storage relocation zerolink does not place")
        } else {
            format!("relocation {rtype} is not supported")
        };
        cases.push((
            obj,
            format!("{name}.o: section `.data` at offset 0x8: {what}"),
        ));
    }
    cases.push((
        assemble(
            "oddtype",
            ".text\n.globl f\nf: mov $0, %eax\n ret\n\
             .section .odd,\"a\",@0x6ffffff0\n.quad 1\n.section .note.GNU-stack,\"\",@progbits\n",
        ),
        "oddtype.o: section `.odd` at offset 0x0: a section that is loaded, of section type 0x6ffffff0"
            .into(),
    ));
    for (obj, want) in cases {
        let o = zerolink()
            .arg("build")
            .arg("-o")
            .arg(d.join("prog"))
            .arg(&main)
            .arg(&obj)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{} built", obj.display());
        assert!(err.contains(&want), "want `{want}` in:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Small drivers (`tests/programs/static_libs/`) for Debian's static libraries, whose members
/// were built by Debian's gcc: each linked by `cc -Wl,-Bstatic -lNAME` and by `zerolink
/// --static-libs -l NAME`, fixed-address and PIE, with the same output; then the driver is
/// edited and the executable updated in place. gmp's `gmp_printf` reaches `stdout` by
/// PC32 (a copy relocation); OpenSSL's `libcrypto.a` brings IFUNC-free but large code.
#[test]
fn debians_static_libraries_run_as_cc_links_them() {
    let libs = [
        ("zstd", "zstd", "libzstd-dev"),
        ("lzma", "lzma", "liblzma-dev"),
        ("bz2", "bz2", "libbz2-dev"),
        ("expat", "expat", "libexpat1-dev"),
        ("pcre2", "pcre2-8", "libpcre2-dev"),
        ("gmp", "gmp", "libgmp-dev"),
        ("yaml", "yaml", "libyaml-dev"),
        ("crypto", "crypto", "libssl-dev"),
    ];
    let src_dir = support::programs().join("static_libs");
    for (driver, lib, package) in libs {
        let archive = PathBuf::from(format!("/usr/lib/x86_64-linux-gnu/lib{lib}.a"));
        assert!(
            archive.exists(),
            "{} is missing: install {package} (.ci/run does)",
            archive.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let text = std::fs::read_to_string(src_dir.join(format!("{driver}.c"))).unwrap();
        let obj = c_object(d, driver, &text, &[]);
        let twin = d.join("cc-linked");
        let static_lib = format!("-l{lib}");
        cc_link(
            std::slice::from_ref(&obj),
            &["-Wl,-Bstatic", &static_lib, "-Wl,-Bdynamic"],
            &twin,
        );
        let want = run_with(&twin, &[], &[]);
        assert_eq!(want.status, Some(0), "{driver}: {want:?}");
        for pie in [false, true] {
            let exe = d.join(if pie { "zl-pie" } else { "zl-fixed" });
            let mut flags = vec!["-l", lib, "--static-libs"];
            if pie {
                flags.push("--pie");
            }
            zl_ok(std::slice::from_ref(&obj), &exe, &flags);
            readelf_accepts(&exe);
            assert_eq!(run_with(&exe, &[], &[]), want, "{driver} {flags:?}");
            // An edit of the driver: one more line, in place.
            settle_inputs();
            let at = text.rfind("return 0;").expect("the driver returns 0 last");
            let edited = format!("{}puts(\"edited\");\n  {}", &text[..at], &text[at..]);
            let obj2 = c_object(d, driver, &edited, &[]);
            flags.push("--stats");
            let stderr = zl_ok(std::slice::from_ref(&obj2), &exe, &flags);
            assert!(stderr.contains("in-place update"), "{driver}: {stderr}");
            let got = run_with(&exe, &[], &[]);
            assert_eq!(
                got.stdout,
                format!("{}edited\n", want.stdout),
                "{driver} edited"
            );
            c_object(d, driver, &text, &[]);
        }
    }
}

/// `&puts` taken as a constant by `-fno-pie` code (`R_X86_64_32`, in code and in data), by
/// `-fPIE` code through the GOT, by CLIF's `func_addr` and by libc's `dlsym`: one address
/// everywhere, the executable's canonical PLT stub, as GNU ld makes it; a call through it
/// reaches `puts`.
#[test]
fn a_library_functions_address_is_one_address_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nopie = c_object(
        d,
        "nopie",
        "#include <stdio.h>\nint (*from_nopie(void))(const char *) { return puts; }\n\
         int (*stored_nopie)(const char *) = puts;\n",
        &["-fno-pie"],
    );
    let main = c_object(
        d,
        "main",
        r#"
#include <stdio.h>
#include <dlfcn.h>
int (*from_nopie(void))(const char *);
extern int (*stored_nopie)(const char *);
long clif_puts(void);
int main(void) {
    int (*pie)(const char *) = puts;
    printf("nopie %d stored %d dlsym %d clif %d\n", from_nopie() == pie, stored_nopie == pie,
           dlsym(RTLD_DEFAULT, "puts") == (void *)pie, clif_puts() == (long)pie);
    from_nopie()("called through the pointer");
    return 0;
}
"#,
        &[],
    );
    let clif = d.join("addr.clif");
    std::fs::write(
        &clif,
        "function %clif_puts() -> i64 system_v {\n    fn0 = %puts(i64) -> i32 system_v\n\
         block0:\n    v0 = func_addr.i64 fn0\n    return v0\n}\n",
    )
    .unwrap();
    let exe = d.join("prog");
    zl_ok(&[clif, nopie, main], &exe, &[]);
    readelf_accepts(&exe);
    let got = run_with(&exe, &[], &[]);
    assert_eq!(
        (got.status, got.stdout.as_str()),
        (
            Some(0),
            "nopie 1 stored 1 dlsym 1 clif 1\ncalled through the pointer\n"
        )
    );
    let relocs = readelf(&["-W", "-r"], &exe);
    assert!(relocs.contains("R_X86_64_JUMP_SLOT"), "{relocs}");
}

/// Imports ask for the version of the library's default definition, as ld writes them
/// (`.gnu.version_r`): without it the loader binds the oldest one, and glibc's
/// `realpath@GLIBC_2.2.5` returns NULL when given no buffer.
#[test]
fn imports_bind_to_the_default_version_of_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let obj = c_object(
        d,
        "real",
        r#"
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    char *r = realpath("/", NULL);
    printf("realpath %s\n", r ? r : "(null)");
    return r == NULL;
}
"#,
        &[],
    );
    let out = same_as_cc(d, &[obj], &[], &[], &[]);
    assert_eq!(out.stdout, "realpath /\n");
    let v = readelf(&["-W", "-V"], &d.join("zl-fixed"));
    assert!(
        v.contains("File: libc.so.6") && v.contains("Name: GLIBC_2.3 "),
        "{v}"
    );
    let dynsym = readelf(&["-W", "--dyn-syms"], &d.join("zl-pie"));
    assert!(dynsym.contains("realpath@GLIBC_2.3"), "{dynsym}");
}

/// An object's data object called as a function is refused, as the program's own data is;
/// a name both CLIF and an object define is refused naming the CLIF file and line.
#[test]
fn an_objects_data_called_as_a_function_and_a_duplicate_name_are_refused_with_places() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let obj = c_object(d, "d", "int x = 5;\nint g(void) { return x; }\n", &[]);
    let clif = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let calls_x = clif(
        "calls_x.clif",
        "function %main() -> i32 system_v {\n    fn0 = %x() -> i32 system_v\nblock0:\n    \
         v0 = call fn0()\n    return v0\n}\n",
    );
    let defines_g = clif(
        "defines_g.clif",
        "function %main() -> i32 system_v {\n    fn0 = %g() -> i32 system_v\nblock0:\n    \
         v0 = call fn0()\n    return v0\n}\n\nfunction %g() -> i32 system_v {\nblock0:\n    \
         v0 = iconst.i32 1\n    return v0\n}\n",
    );
    for (src, want) in [
        (
            calls_x,
            "d.o: it defines `x` as a data object, but the program refers to it as a function",
        ),
        (defines_g, "d.o: defines `g`, which the program (at "),
    ] {
        let o = zerolink()
            .arg("build")
            .arg(&src)
            .arg(&obj)
            .arg("-o")
            .arg(d.join("p"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{err}");
    }
    let o = zerolink()
        .arg("build")
        .arg(d.join("defines_g.clif"))
        .arg(&obj)
        .arg("-o")
        .arg(d.join("p"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("defines_g.clif:8"));
}

/// The Lua interpreter built from its own sources (Debian's source package, which `.ci/run`
/// fetches into `.ci/lua-src`) with `cc -c`, Debian's default `-fPIE` code, linked by `cc`
/// and by zerolink (fixed-address and PIE), running a Lua program that prints to stdout and
/// stderr, formats numbers, uses coroutines, closures, metatables, `pcall`, string patterns,
/// `table.sort`, `os.time` and a file of its own: the same output, the same exit status.
#[test]
fn the_lua_interpreter_built_from_its_sources_runs_as_cc_links_it() {
    let src = support::repo().join(".ci/lua-src/src");
    assert!(
        src.join("lua.c").exists(),
        "{} is missing: .ci/run fetches Lua's sources (Debian's lua5.4 source package)",
        src.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut objects = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_none_or(|e| e != "c") || name == "luac" {
            continue;
        }
        let obj = d.join(format!("{name}.o"));
        sh(Command::new("cc")
            .args(["-c", "-O2", "-DLUA_USE_LINUX"])
            .arg(&path)
            .arg("-o")
            .arg(&obj));
        objects.push(obj);
    }
    objects.sort();
    let script = d.join("t.lua");
    std::fs::write(
        &script,
        r#"
local t = {}
for i = 1, 50 do t[#t + 1] = (i * 7919) % 101 end
table.sort(t)
print("sorted", t[1], t[25], t[50], #t)
print(string.format("%5.2f %d %s %q", math.pi, 42, "x", "a\nb"))
local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
print("coroutine", co(1), co(10))
local mt = { __add = function(a, b) return a.v + b.v end, __tostring = function(s) return "V" .. s.v end }
local a, b = setmetatable({ v = 3 }, mt), setmetatable({ v = 4 }, mt)
print("meta", a + b, tostring(a))
print("pcall", pcall(error, { code = 7 }), select(2, pcall(error, "boom")))
print("gsub", ("hello world"):gsub("o", "0"), ("k=v, x=y"):match("(%w+)=(%w+)"))
local f = assert(io.open(arg[0] .. ".out", "w")) f:write("line1\nline2\n") f:close()
local n = 0 for l in io.lines(arg[0] .. ".out") do n = n + #l end
print("file", n, os.time{ year = 2000, month = 1, day = 1, hour = 12 } > 0)
local function fib(k) if k < 2 then return k end return fib(k - 1) + fib(k - 2) end
print("fib", fib(25), 2^53, 7 // 2, -7 % 3, math.maxinteger)
io.stderr:write("to stderr ", #arg, "\n")
os.exit(3)
"#,
    )
    .unwrap();
    let script = script.to_str().unwrap().to_string();
    let out = same_as_cc(d, &objects, &["-lm"], &["-l", "m"], &[&script]);
    assert_eq!(out.status, Some(3), "{out:?}");
    assert!(out.stdout.contains("coroutine\t2\t20"), "{out:?}");
    assert!(out.stdout.contains("fib\t75025"), "{out:?}");
    assert_eq!(out.stderr, "to stderr 0\n");
}
