//! CLIF text with data directives through the driver: any input is built or refused with an
//! error; nothing panics, and a refused build leaves nothing at OUT.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zerolink_fuzz::init();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = dir.path().join("input.clif");
    std::fs::write(&src, data).expect("the input is written");
    let out = dir.path().join("out");
    if zerolink_fuzz::build(&[src], &out).is_err() {
        assert!(!out.exists(), "a failed build left a file at OUT");
    }
});
