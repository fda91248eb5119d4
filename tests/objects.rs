//! Precompiled code in the image: C objects compiled by `cc -c` here, archives made by `ar`,
//! the system's static zlib and the toolchain's own archives, each program run and compared
//! with the same program linked by `cc`; updates that keep archive members byte for byte;
//! archive semantics (order, weak, common, COMDAT, duplicates); malformed inputs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSegment, ObjectSymbol};
use support::*;

fn objects_dir() -> PathBuf {
    programs().join("objects")
}

/// `cc -c SRC -o OUT` with `flags`.
fn cc(src: &Path, out: &Path, flags: &[&str]) {
    sh(Command::new("cc")
        .arg("-c")
        .args(flags)
        .arg(src)
        .arg("-o")
        .arg(out));
}

fn archive(dir: &Path, name: &str, members: &[PathBuf]) -> PathBuf {
    let a = dir.join(name);
    let _ = std::fs::remove_file(&a);
    sh(Command::new("ar").arg("rcs").arg(&a).args(members));
    a
}

fn stdout_of(exe: &Path) -> String {
    let o = Command::new(exe).output().expect("the program starts");
    assert!(
        o.status.success(),
        "{} exited with {}",
        exe.display(),
        o.status
    );
    String::from_utf8(o.stdout).unwrap()
}

fn args<'a>(files: &'a [PathBuf], out: &'a Path, extra: &[&'a str]) -> Vec<&'a std::ffi::OsStr> {
    let mut v: Vec<&std::ffi::OsStr> = vec!["build".as_ref(), "-q".as_ref(), "-o".as_ref()];
    v.push(out.as_os_str());
    v.extend(files.iter().map(|f| f.as_os_str()));
    v.extend(extra.iter().map(|e| std::ffi::OsStr::new(*e)));
    v
}

/// Build with zerolink; the process's output.
fn zl(files: &[PathBuf], out: &Path, extra: &[&str]) -> std::process::Output {
    zerolink().args(args(files, out, extra)).output().unwrap()
}

fn zl_ok(files: &[PathBuf], out: &Path, extra: &[&str]) -> String {
    let o = zl(files, out, extra);
    assert!(
        o.status.success(),
        "zerolink failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `d/main.clif`: a `main` that returns what `callee()` returns.
fn main_calling(d: &Path, callee: &str) -> PathBuf {
    let clif = d.join("main.clif");
    std::fs::write(
        &clif,
        format!(
            "function %main() -> i32 system_v {{\n    fn0 = %{callee}() -> i32 system_v\n\
             block0:\n    v0 = call fn0()\n    return v0\n}}\n"
        ),
    )
    .unwrap();
    clif
}

const I128: &str = "enable_llvm_abi_extensions=true";

#[test]
fn a_c_library_called_from_clif_and_back_runs_as_cc_links_it() {
    let dir = tempfile::tempdir().unwrap();
    let main = objects_dir().join("main.clif");
    for (i, flags) in [
        &["-O2", "-fPIC"][..],
        &["-O2", "-fno-pic"],
        &["-O0", "-fPIC"],
        &["-O2", "-fPIC", "-fno-plt"],
    ]
    .iter()
    .enumerate()
    {
        let obj = dir.path().join(format!("clib{i}.o"));
        cc(&objects_dir().join("clib.c"), &obj, flags);
        let files = vec![main.clone(), obj];
        let direct = dir.path().join(format!("direct{i}"));
        let separate = dir.path().join(format!("separate{i}"));
        zl_ok(&files, &direct, &["--set", I128]);
        zl_ok(&files, &separate, &["--set", I128, "--separate"]);
        let out = stdout_of(&direct);
        assert_eq!(out, stdout_of(&separate), "cc {flags:?}");
        // The callback, the static local, the atexit handler and libgcc's division ran.
        assert!(out.contains("acc=1320"), "{out}");
        assert!(out.contains("id=101 id=100"), "{out}");
        assert!(out.contains("i128 quotient -20408163265"), "{out}");
        assert!(out.ends_with("atexit handler ran\n"), "{out}");
    }
}

#[test]
fn the_system_zlib_archive_links_statically() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("z");
    let files = vec![objects_dir().join("zlib.clif")];
    zl_ok(&files, &exe, &["-l", "z", "--static-libs", "--set", I128]);
    let out = stdout_of(&exe);
    assert_eq!(
        out,
        "compressed 27 bytes\nround trip: hello hello hello hello zerolink zerolink zerolink\n\
         i128: -142857142857\n"
    );
    let ldd = Command::new("ldd").arg(&exe).output().unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    assert!(!ldd.contains("libz"), "{ldd}");
    assert!(ldd.contains("libc.so.6"), "{ldd}");
    // The same through `-l :libz.a`, without --static-libs.
    zl_ok(&files, &exe, &["-l", ":libz.a", "--set", I128]);
    assert_eq!(stdout_of(&exe), out);
}

/// Every symbol of `exe` whose name passes `keep`: (name, address, bytes in the file).
fn symbol_bytes(exe: &Path, keep: &dyn Fn(&str) -> bool) -> Vec<(String, u64, Vec<u8>)> {
    let data = std::fs::read(exe).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let mut out = Vec::new();
    for s in file.symbols() {
        let name = s.name().unwrap_or("").to_string();
        if !keep(&name) {
            continue;
        }
        let (addr, size) = (s.address(), s.size());
        let bytes = file
            .segments()
            .find_map(|seg| {
                let (off, len) = seg.file_range();
                let start = seg.address();
                (addr >= start && addr + size <= start + len)
                    .then(|| data[(off + addr - start) as usize..][..size as usize].to_vec())
            })
            .unwrap_or_default();
        out.push((name, addr, bytes));
    }
    out.sort();
    out
}

#[test]
fn an_update_after_a_clif_edit_leaves_every_archive_member_byte_alone() {
    let dir = tempfile::tempdir().unwrap();
    let clif = dir.path().join("z.clif");
    let text = std::fs::read_to_string(objects_dir().join("zlib.clif")).unwrap();
    std::fs::write(&clif, &text).unwrap();
    let exe = dir.path().join("z");
    let flags = ["-l", "z", "--static-libs", "--set", I128, "--stats"];
    zl_ok(std::slice::from_ref(&clif), &exe, &flags);
    // Every zlib symbol: the functions and data that came from libz.a's members.
    let zlib_names: Vec<String> = {
        let data = std::fs::read(&exe).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let mut names: Vec<String> = file
            .symbols()
            .filter(|s| s.name().is_ok_and(|n| n.contains("libz.a(")))
            .map(|s| s.name().unwrap().to_string())
            .collect();
        for f in [
            "deflate",
            "inflate",
            "compress",
            "uncompress",
            "crc32",
            "adler32",
        ] {
            names.push(f.to_string());
        }
        names
    };
    assert!(zlib_names.len() > 10, "{zlib_names:?}");
    let keep = |n: &str| zlib_names.iter().any(|z| z == n);
    let before = symbol_bytes(&exe, &keep);
    support::settle_inputs();
    std::fs::write(
        &clif,
        text.replace("round trip: %s", "round trip, again: %s"),
    )
    .unwrap();
    let stderr = zl_ok(std::slice::from_ref(&clif), &exe, &flags);
    assert!(stderr.contains("in-place update"), "{stderr}");
    assert!(stdout_of(&exe).contains("round trip, again: hello"));
    let after = symbol_bytes(&exe, &keep);
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "`{}` changed", b.0);
    }
    assert!(before
        .iter()
        .any(|(n, _, bytes)| n == "deflate" && bytes.len() > 1000));
}

#[test]
fn a_new_version_of_an_archive_is_taken_by_the_next_build() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clif = main_calling(d, "answer");
    let obj = c_object(d, "answer", "int answer(void) { return 41; }\n", &["-O2"]);
    let lib = archive(d, "libanswer.a", &[obj]);
    let exe = d.join("prog");
    let files = vec![clif.clone(), lib.clone()];
    zl_ok(&files, &exe, &[]);
    let status = |exe: &Path| Command::new(exe).status().unwrap().code();
    assert_eq!(status(&exe), Some(41));
    support::settle_inputs();
    let obj = c_object(d, "answer", "int answer(void) { return 42; }\n", &["-O2"]);
    archive(d, "libanswer.a", &[obj]);
    // Re-linked in place: the old member's definitions go, the new member's come in.
    let stderr = zl_ok(&files, &exe, &["--stats"]);
    assert!(stderr.contains("in-place update"), "{stderr}");
    assert_eq!(status(&exe), Some(42));
    // And through -L/-l.
    zl_ok(
        std::slice::from_ref(&clif),
        &exe,
        &["-L", d.to_str().unwrap(), "-l", "answer"],
    );
    assert_eq!(status(&exe), Some(42));
    // An archive stamped in the future is racily clean: recorded without stat data, so the
    // next build reads it, finds it unchanged and keeps its member (by name) where it is.
    let files = vec![clif.clone(), lib.clone()];
    sh(Command::new("touch").args(["-d", "+1 hour"]).arg(&lib));
    zl_ok(&files, &exe, &["--full"]);
    let answer = |exe: &Path| symbol_bytes(exe, &|n| n == "answer");
    let before = answer(&exe);
    support::settle_inputs();
    std::fs::write(
        &clif,
        std::fs::read_to_string(&clif)
            .unwrap()
            .replace("v0 = call fn0()", "v0 = call fn0()\n    v9 = iconst.i32 1"),
    )
    .unwrap();
    let stderr = zl_ok(&files, &exe, &["--stats"]);
    assert!(
        stderr.contains("in-place update") && stderr.contains("compiled 1,"),
        "{stderr}"
    );
    assert_eq!(answer(&exe), before);
    assert_eq!(status(&exe), Some(42));
}

#[test]
fn archive_semantics_order_weak_common_comdat_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clif = main_calling(d, "a_entry");
    // liba.a needs libb.a, which needs liba.a again: no --start-group, any order.
    let a1 = c_object(
        d,
        "a1",
        "int b_entry(void); int shared; int a_entry(void) { shared = 3; return b_entry() + dup(); }\n\
         __attribute__((weak)) int pick(void) { return 1000; }\n\
         int dup(void);\n",
        &["-O2", "-fcommon"],
    );
    let a2 = c_object(d, "a2", "int a_helper(void) { return 20; }\n", &["-O2"]);
    let b1 = c_object(
        d,
        "b1",
        "int a_helper(void); int pick(void); int shared;\n\
         int b_entry(void) { return a_helper() + pick() + shared; }\n",
        &["-O2", "-fcommon"],
    );
    let strong = c_object(d, "strong", "int pick(void) { return 7; }\n", &["-O2"]);
    // The same COMDAT group in two objects: kept once.
    let comdat = |name: &str| {
        let s = d.join(format!("{name}.s"));
        std::fs::write(
            &s,
            ".section .text.dup,\"axG\",@progbits,dup,comdat\n.globl dup\n.type dup,@function\n\
             dup:\n  mov $12, %eax\n  ret\n.section .note.GNU-stack,\"\",@progbits\n",
        )
        .unwrap();
        let o = d.join(format!("{name}.o"));
        sh(Command::new("cc").arg("-c").arg(&s).arg("-o").arg(&o));
        o
    };
    let (c1, c2) = (comdat("c1"), comdat("c2"));
    let liba = archive(d, "liba.a", &[a1, a2]);
    let libb = archive(d, "libb.a", &[b1]);
    let exe = d.join("prog");
    let status = |exe: &Path| Command::new(exe).status().unwrap().code();
    for order in [
        vec![
            clif.clone(),
            liba.clone(),
            libb.clone(),
            strong.clone(),
            c1.clone(),
            c2.clone(),
        ],
        vec![
            libb.clone(),
            c2.clone(),
            strong.clone(),
            clif.clone(),
            c1.clone(),
            liba.clone(),
        ],
    ] {
        zl_ok(&order, &exe, &["--full"]);
        // 20 (a_helper) + 7 (the strong pick beats the weak one) + 3 (one common `shared`)
        // + 12 (dup, once).
        assert_eq!(status(&exe), Some(42), "{order:?}");
    }
    // Two strong definitions: an error naming both places, and the old executable stays.
    // (a member is extracted only for what nothing defines yet, so this takes two objects)
    let again = c_object(d, "again", "int pick(void) { return 1; }\n", &["-O2"]);
    let before = std::fs::read(&exe).unwrap();
    let o = zl(
        &[
            clif.clone(),
            liba.clone(),
            libb.clone(),
            strong.clone(),
            c1.clone(),
            again,
        ],
        &exe,
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("`pick`") && err.contains("again.o") && err.contains("strong.o"),
        "{err}"
    );
    assert_eq!(std::fs::read(&exe).unwrap(), before);
    // A name the program defines, defined strongly by an object too.
    let clash = c_object(d, "clash", "int main(void) { return 0; }\n", &["-O2"]);
    let o = zl(&[clif, clash], &exe, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("clash.o") && err.contains("`main`"),
        "{err}"
    );
}

#[test]
fn constructors_and_destructors_run_in_priority_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clif = main_calling(d, "get_hits");
    // Priorities 101 and 200, then the default; two objects, so the arrays are merged.
    let ctors = "int hits;\n\
        __attribute__((constructor(200))) static void second(void) { hits = hits * 10 + 2; }\n\
        __attribute__((constructor(101))) static void first(void) { hits = hits * 10 + 1; }\n\
        int get_hits(void) { return hits; }\n";
    let more = "extern int hits; extern long zl_write(int, const void *, long);\n\
        __attribute__((constructor)) static void last(void) { hits = hits * 10 + 3; }\n\
        __attribute__((destructor)) static void bye(void) { zl_write(1, \"dtor ran\\n\", 9); }\n";
    let status = |exe: &Path| {
        let o = Command::new(exe).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    for (libc, flags) in [
        (true, &["-O2"][..]),
        (false, &["-O2", "-ffreestanding"][..]),
    ] {
        let a = c_object(d, "ctors_a", ctors, flags);
        let b = c_object(d, "ctors_b", more, flags);
        let exe = d.join(format!("prog{libc}"));
        let mut extra = vec!["--full"];
        if !libc {
            extra.push("--freestanding");
        }
        zl_ok(&[clif.clone(), b.clone(), a.clone()], &exe, &extra);
        assert_eq!(
            status(&exe),
            (Some(123), "dtor ran\n".to_string()),
            "libc: {libc}"
        );
        if libc {
            let sep = d.join("prog.sep");
            extra.push("--separate");
            zl_ok(&[clif.clone(), b, a], &sep, &extra);
            assert_eq!(status(&sep), status(&exe));
        }
    }
}

/// With `-g`, an object's unwind entries join the image's: libgcc's `_Unwind_Backtrace`, called
/// from CLIF code that a C function called, walks through the C frame into the CLIF frames
/// below it and on to libc's; an in-place update of the CLIF code keeps the C entry.
#[test]
fn unwinding_crosses_a_c_frame_with_g() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mid = c_object(
        d,
        "mid",
        "long level3(long);\nlong c_middle(long x) { long r = level3(x + 1); return r * 2 + x; }\n",
        &["-O2"],
    );
    let o = Command::new("cc")
        .arg("-print-file-name=libgcc_s.so")
        .output()
        .unwrap();
    let libgcc = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let libdir = libgcc.parent().unwrap().to_str().unwrap().to_string();
    let clif = d.join("unwind_c.clif");
    let text = std::fs::read_to_string(objects_dir().join("unwind_c.clif")).unwrap();
    std::fs::write(&clif, &text).unwrap();
    let exe = d.join("prog");
    let files = vec![clif.clone(), mid];
    let flags = ["-g", "-L", &libdir, "-l", "gcc_s", "--stats"];
    let frames = |exe: &Path| Command::new(exe).status().unwrap().code().unwrap();
    zl_ok(&files, &exe, &flags);
    // level3, c_middle, level2, level1, main, then libc's start-up frames and `_start`.
    assert!(frames(&exe) >= 7, "only {} frames", frames(&exe));
    support::settle_inputs();
    std::fs::write(&clif, text.replace("v2 = iadd v1, v0", "v2 = isub v1, v0")).unwrap();
    let stderr = zl_ok(&files, &exe, &flags);
    assert!(stderr.contains("in-place update"), "{stderr}");
    assert!(
        frames(&exe) >= 7,
        "after the update: only {} frames",
        frames(&exe)
    );
    // Without -g there are no unwind tables: the walk stops at once.
    let plain = d.join("plain");
    zl_ok(&files, &plain, &flags[1..5]);
    assert!(frames(&plain) < 3);
}

/// Precompiled code changes between builds, and each in-place update must give what a fresh
/// build of the same inputs gives: archive members rebuilt (one grows), a standalone object
/// rebuilt, a new CLIF call that needs a member not yet placed, a call removed again, CLIF
/// constants edited. The steps come from a fixed seed.
#[test]
fn precompiled_updates_match_fresh_builds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Member sources by constant; member 2 needs member 3, the object needs member 1.
    // Member 1 is an indirect function (IFUNC), member 2 and the object read libc's data
    // directly (copy relocations).
    let source = |i: usize, k: u64| match i {
        0 => format!(
            "static int m1_impl(void) {{ return {k}; }}\n\
             static void *m1_resolve(void) {{ return (void *)m1_impl; }}\n\
             int m1(void) __attribute__((ifunc(\"m1_resolve\")));\n"
        ),
        1 => format!(
            "extern int optind; int helper(void);\n\
             int m2(void) {{ return {k} + helper() + optind; }}\n"
        ),
        2 => {
            // Grows with k: a bigger member replaces a smaller one.
            let body: String = (0..k % 7).map(|j| format!("x = x * 3 + {j}; ")).collect();
            format!("int helper(void) {{ volatile int x = {k}; {body} return x & 15; }}\n")
        }
        _ => format!(
            "#include <stdio.h>\nint m1(void);\n\
             int o1(int x) {{ return x * {k} + m1() + (fileno(stdout) == 1); }}\n"
        ),
    };
    let mut k = [1u64, 2, 3, 4];
    let write_inputs = |k: &[u64; 4], which: Option<usize>| {
        for (i, &ki) in k.iter().enumerate() {
            if which.is_some_and(|w| w != i) {
                continue;
            }
            c_object(d, &format!("part{i}"), &source(i, ki), &["-O1"]);
        }
        if which.is_none_or(|w| w < 3) {
            archive(
                d,
                "libparts.a",
                &[d.join("part0.o"), d.join("part1.o"), d.join("part2.o")],
            );
        }
    };
    let clif = d.join("main.clif");
    let write_clif = |c: i64, call_m2: bool| {
        let (decl, call) = if call_m2 {
            (
                "    fn1 = %m2() -> i32 system_v\n",
                "    v2 = call fn1()\n    v3 = iadd v1, v2\n",
            )
        } else {
            ("", "    v3 = iadd v1, v0\n")
        };
        std::fs::write(
            &clif,
            format!(
                "function %main() -> i32 system_v {{\n    fn0 = %o1(i32) -> i32 system_v\n{decl}\
                 block0:\n    v0 = iconst.i32 {c}\n    v1 = call fn0(v0)\n{call}    return v3\n}}\n"
            ),
        )
        .unwrap();
    };
    write_inputs(&k, None);
    let (mut c, mut call_m2) = (5i64, false);
    write_clif(c, call_m2);
    let files = vec![clif.clone(), d.join("part3.o"), d.join("libparts.a")];
    let (exe, fresh) = (d.join("prog"), d.join("fresh"));
    let status = |exe: &Path| Command::new(exe).status().unwrap().code();
    zl_ok(&files, &exe, &[]);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut in_place = 0;
    for step in 0..16 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        support::settle_inputs();
        let what = match seed % 6 {
            w @ 0..=3 => {
                k[w as usize] = seed % 23 + 1;
                write_inputs(&k, Some(w as usize));
                format!("part{w} = {}", k[w as usize])
            }
            4 => {
                call_m2 = !call_m2;
                write_clif(c, call_m2);
                format!("call m2: {call_m2}")
            }
            _ => {
                c = (seed % 50) as i64;
                write_clif(c, call_m2);
                format!("c = {c}")
            }
        };
        let stderr = zl_ok(&files, &exe, &["--stats"]);
        in_place += usize::from(stderr.contains("in-place update"));
        zl_ok(&files, &fresh, &["--full"]);
        assert_eq!(
            status(&exe),
            status(&fresh),
            "step {step}: {what}\n{stderr}"
        );
    }
    assert!(
        in_place >= 12,
        "only {in_place} of 16 updates were in place"
    );
}

/// An undefined weak reference is 0 when nothing defines it (and the C code can test for
/// that), the program's definition when it gives one (a full build decides the switch), and
/// 0 again when that goes; a hidden symbol is local in `.symtab`.
#[test]
fn weak_references_and_hidden_symbols() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clif = main_calling(d, "call_maybe");
    let weak = c_object(
        d,
        "weak",
        "extern int maybe(void) __attribute__((weak));\n\
         __attribute__((visibility(\"hidden\"))) int secret = 7;\n\
         int call_maybe(void) { return maybe ? maybe() : 33 + secret; }\n",
        &["-O2", "-fPIC"],
    );
    let maybe = d.join("maybe.clif");
    std::fs::write(
        &maybe,
        "function %maybe() -> i32 system_v {\nblock0:\n    v0 = iconst.i32 2\n    return v0\n}\n",
    )
    .unwrap();
    let exe = d.join("prog");
    let status = |exe: &Path| Command::new(exe).status().unwrap().code();
    zl_ok(&[clif.clone(), weak.clone()], &exe, &[]);
    assert_eq!(status(&exe), Some(40));
    let symtab = Command::new("readelf")
        .arg("-sW")
        .arg(&exe)
        .output()
        .unwrap();
    let symtab = String::from_utf8_lossy(&symtab.stdout);
    let line = |name: &str| {
        symtab
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("no `{name}` in\n{symtab}"))
            .to_string()
    };
    assert!(
        line("maybe").contains("WEAK") && line("maybe").contains(" ABS "),
        "{}",
        line("maybe")
    );
    assert!(line("secret").contains("LOCAL"), "{}", line("secret"));
    support::settle_inputs();
    zl_ok(&[clif.clone(), maybe, weak.clone()], &exe, &[]);
    assert_eq!(status(&exe), Some(2));
    support::settle_inputs();
    zl_ok(&[clif, weak], &exe, &[]);
    assert_eq!(status(&exe), Some(40));
}

/// Rewrite the first relocation of `.rela.text` in an object: `f(r_offset, r_info)`.
fn patch_first_rela(obj: &Path, out: &Path, f: &dyn Fn(&mut [u8; 8], &mut [u8; 8])) {
    let mut data = std::fs::read(obj).unwrap();
    let (off, _) = {
        let file = object::File::parse(&*data).unwrap();
        let s = object::Object::section_by_name(&file, ".rela.text").expect(".rela.text");
        object::ObjectSection::file_range(&s).unwrap()
    };
    let at = off as usize;
    let mut r_offset: [u8; 8] = data[at..at + 8].try_into().unwrap();
    let mut r_info: [u8; 8] = data[at + 8..at + 16].try_into().unwrap();
    f(&mut r_offset, &mut r_info);
    data[at..at + 8].copy_from_slice(&r_offset);
    data[at + 8..at + 16].copy_from_slice(&r_info);
    std::fs::write(out, data).unwrap();
}

#[test]
fn malformed_or_unsupported_objects_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clif = main_calling(d, "f");
    let good = c_object(
        d,
        "good",
        "int g(void); int f(void) { return g() + 1; }\nint g(void) { return 2; }\n",
        &["-O0", "-fno-inline"],
    );
    let exe = d.join("prog");
    zl_ok(&[clif.clone(), good.clone()], &exe, &[]);
    assert_eq!(Command::new(&exe).status().unwrap().code(), Some(3));
    let before = std::fs::read(&exe).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let mut cases: Vec<(PathBuf, &str)> = Vec::new();
    let truncated = d.join("truncated.o");
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    cases.push((truncated, "truncated.o: malformed"));
    let bad_symbol = d.join("bad_symbol.o");
    patch_first_rela(&good, &bad_symbol, &|_, info| {
        info[4..8].copy_from_slice(&9999u32.to_le_bytes());
    });
    cases.push((bad_symbol, "bad_symbol.o: malformed"));
    let outside = d.join("outside.o");
    patch_first_rela(&good, &outside, &|off, _| {
        off.copy_from_slice(&0x7fff_0000u64.to_le_bytes());
    });
    cases.push((
        outside,
        "outside.o: section `.text`: a relocation at offset 0x7fff0000",
    ));
    // Found by fuzzing: a symbol far outside its section (it made an alias address overflow).
    let outside_symbol = d.join("outside_symbol.o");
    {
        let mut data = bytes.clone();
        let file = object::File::parse(&*bytes).unwrap();
        let symtab = object::Object::section_by_name(&file, ".symtab").unwrap();
        let (at, _) = object::ObjectSection::file_range(&symtab).unwrap();
        let f = object::Object::symbol_by_name(&file, "f").unwrap();
        let value_at = at as usize + f.index().0 * 24 + 8;
        data[value_at..value_at + 8].copy_from_slice(&0xffff_ffff_0000u64.to_le_bytes());
        std::fs::write(&outside_symbol, data).unwrap();
    }
    cases.push((outside_symbol, "outside_symbol.o: malformed: symbol `f`"));
    let as_object = |name: &str, asm: &str| {
        let s = d.join(format!("{name}.s"));
        std::fs::write(&s, asm).unwrap();
        let o = d.join(format!("{name}.o"));
        sh(Command::new("cc").arg("-c").arg(&s).arg("-o").arg(&o));
        o
    };
    cases.push((
        as_object(
            "execstack",
            ".text\n.globl f\nf: mov $1, %eax\n ret\n.section .note.GNU-stack,\"x\",@progbits\n",
        ),
        "execstack.o: asks for an executable stack",
    ));
    cases.push((
        as_object(
            "word",
            ".text\n.globl f\nf: ret\n.data\n.word f\n.section .note.GNU-stack,\"\",@progbits\n",
        ),
        "word.o: section `.data` at offset 0x0: relocation R_X86_64_16 is not supported",
    ));
    cases.push((
        c_object(
            d,
            "tls",
            "__thread int t; int f(void) { return t; }\n",
            &["-O2", "-fPIC", "-mtls-dialect=gnu2"],
        ),
        "thread-local",
    ));
    cases.push((
        as_object(
            "ctors",
            ".text\n.globl f\nf: ret\n.section .ctors,\"aw\"\n.quad f\n\
             .section .note.GNU-stack,\"\",@progbits\n",
        ),
        "ctors.o: has old-style constructors or destructors (`.ctors`)",
    ));
    // An archive whose member says it is larger than the archive.
    let lib = archive(d, "liblying.a", std::slice::from_ref(&good));
    let mut a = std::fs::read(&lib).unwrap();
    let text = String::from_utf8_lossy(&a).into_owned();
    let at = text.find("good.o/").expect("member header");
    a[at + 48..at + 58].copy_from_slice(b"9999999   ");
    let lying = d.join("liblying.a");
    std::fs::write(&lying, &a).unwrap();
    cases.push((lying, "liblying.a: malformed"));
    let thin = d.join("libthin.a");
    sh(Command::new("ar").arg("rcsT").arg(&thin).arg(&good));
    cases.push((thin, "libthin.a: is a thin archive"));
    // Found by fuzzing (kept as a file): a member defining one global twice.
    let twice = d.join("libtwice.a");
    std::fs::copy(objects_dir().join("malformed/libtwice.a"), &twice).unwrap();
    cases.push((
        twice,
        "libtwice.a(f.o): defines `data`, which the same object defines too",
    ));
    // A malformed member is named inside its archive.
    let bad_member_lib = archive(d, "libbadmember.a", &[d.join("bad_symbol.o")]);
    cases.push((bad_member_lib, "libbadmember.a(bad_symbol.o): malformed"));
    for (input, want) in cases {
        let o = zl(&[clif.clone(), input.clone()], &exe, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{}: accepted", input.display());
        assert!(err.contains(want), "{}: {err}", input.display());
        assert!(
            !err.contains("panicked") && !err.contains("internal error"),
            "{err}"
        );
        assert_eq!(std::fs::read(&exe).unwrap(), before, "{}", input.display());
    }
}
