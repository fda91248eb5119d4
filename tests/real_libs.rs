//! Real libraries and programs nobody here wrote, built by Debian's gcc (or from their own
//! sources with `cc -c`), linked by `cc` and by zerolink (fixed-address and `--pie`) and
//! compared: Debian's `liblua5.4.a`, eight of Debian's static libraries with in-place edits
//! of their drivers, and the Lua interpreter built from its sources.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::twins::*;
use support::{c_object, settle_inputs, sh};

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
