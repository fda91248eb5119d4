//! Real C code as Debian's gcc compiles it (`-fPIE` by default), each program linked twice
//! from the same objects, by `cc` and by zerolink (fixed-address and `--pie`), both run and
//! compared: copy relocations of libraries' data objects (`stdout`, `environ`, `optarg`) and
//! updates that change how data is reached, IFUNCs, canonical PLT addresses, symbol
//! versions, and every construct zerolink refuses, refused with its place. (Whole libraries
//! and programs: `tests/real_libs.rs`.)

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::twins::*;
use support::{c_object, settle_inputs, sh, zerolink};

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
