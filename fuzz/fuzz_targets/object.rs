//! Malformed precompiled code: the input is an ELF relocatable object or an `ar` archive
//! (by its first bytes) given beside a CLIF `main` that calls `f` from it. The build must end
//! in an executable or an error, never a panic; an executable it writes must be runnable
//! without the build having crashed. Seed it with a few objects and an archive of `cc -c`
//! output in `fuzz/corpus/object/` (`cc -c -O2 f.c`, `cc -c -O0 -fno-pic f.c`, `ar rcs libf.a
//! f.o`, where f.c defines `int f(void)` and some data with pointers).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const MAIN: &str = "function %main() -> i32 system_v {
    fn0 = %f() -> i32 system_v
block0:
    v0 = call fn0()
    return v0
}
";

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(d.path().join("main.clif"), MAIN).expect("written");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    zerolink_fuzz::init();
    let d = dir().path();
    let input = d.join("input.o");
    std::fs::write(&input, data).expect("written");
    let files = vec![d.join("main.clif"), input];
    // Full builds: each input stands alone.
    let _ = std::fs::remove_file(d.join("out"));
    let _ = zerolink_fuzz::build(&files, &d.join("out"));
});
