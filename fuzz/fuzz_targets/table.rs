//! Damaged executables: bytes of a good executable's non-loaded part (the table, `.symtab`,
//! `.strtab`, the section headers) are changed as the input says, then the same program is
//! built into it again, and then an edited one. Each build must succeed (an update, or a full
//! build with the reason) and the result must behave like a fresh build.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const PROGRAM: &str = "; data: %msg = \"hello\\n\"
; data: %table = addr %f1, addr %f2
function %f1(i64) -> i64 {
block0(v0: i64):
    v1 = iconst.i64 1
    v2 = iadd v0, v1
    return v2
}

function %f2(i64) -> i64 {
    sig0 = (i64) -> i64
    fn0 = %f1 sig0
block0(v0: i64):
    v1 = call fn0(v0)
    v2 = imul v1, v1
    return v2
}
";

const MAIN: &str = "function %main() -> i32 {
    gv0 = symbol %msg
    sig0 = (i32, i64, i64) -> i64
    sig1 = (i64) -> i64
    fn0 = %zl_write sig0
    fn1 = %f2 sig1
block0:
    v0 = iconst.i32 1
    v1 = symbol_value.i64 gv0
    v2 = iconst.i64 6
    v3 = call fn0(v0, v1, v2)
    v4 = iconst.i64 SEED
    v5 = call fn1(v4)
    v6 = ireduce.i32 v5
    return v6
}
";

struct Good {
    _dir: tempfile::TempDir,
    files: Vec<PathBuf>,
    exe: Vec<u8>,
    /// Where the non-loaded part starts: the first byte past the last loaded segment.
    table_from: usize,
    fresh: [(Option<i32>, Vec<u8>); 2],
    main: PathBuf,
}

fn main_text(seed: u32) -> String {
    MAIN.replace("SEED", &seed.to_string())
}

fn good() -> &'static Good {
    static GOOD: OnceLock<Good> = OnceLock::new();
    GOOD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let lib = dir.path().join("lib.clif");
        let main = dir.path().join("main.clif");
        std::fs::write(&lib, PROGRAM).expect("written");
        let files = vec![lib, main.clone()];
        let mut fresh = Vec::new();
        for seed in [3, 4] {
            std::fs::write(&main, main_text(seed)).expect("written");
            let exe = dir.path().join(format!("fresh{seed}"));
            zerolink_fuzz::build(&files, &exe).expect("the good program builds");
            fresh.push(zerolink_fuzz::run(&exe).expect("it runs"));
        }
        std::fs::write(&main, main_text(3)).expect("written");
        let exe_path = dir.path().join("good");
        zerolink_fuzz::build(&files, &exe_path).expect("the good program builds");
        let exe = std::fs::read(&exe_path).expect("read");
        // The `.zerolink` table, `.symtab` and friends come after the loaded regions' extents;
        // the table's arrays start at the `.zerolink.symbols` section or earlier: take the end
        // of the text extent, read from the ELF program headers (largest p_offset+p_filesz).
        let phoff = u64::from_le_bytes(exe[32..40].try_into().expect("8 bytes")) as usize;
        let phnum = u16::from_le_bytes(exe[56..58].try_into().expect("2 bytes")) as usize;
        let mut table_from = 0;
        for i in 0..phnum {
            let ph = &exe[phoff + 56 * i..phoff + 56 * (i + 1)];
            if u32::from_le_bytes(ph[0..4].try_into().expect("4")) == 1 {
                let off = u64::from_le_bytes(ph[8..16].try_into().expect("8")) as usize;
                let size = u64::from_le_bytes(ph[32..40].try_into().expect("8")) as usize;
                table_from = table_from.max(off + size);
            }
        }
        Good {
            _dir: dir,
            files,
            exe,
            table_from,
            fresh: [fresh.remove(0), fresh.remove(0)],
            main,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    zerolink_fuzz::init();
    let g = good();
    let mut exe = g.exe.clone();
    let span = exe.len() - g.table_from;
    // The input is a list of (position, xor) pairs over the non-loaded part.
    for pair in data.chunks_exact(5) {
        let at = u32::from_le_bytes(pair[..4].try_into().expect("4")) as usize % span;
        exe[g.table_from + at] ^= pair[4].max(1);
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("out");
    std::fs::write(&out, &exe).expect("written");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // The same program (a no-op, or a repair), then an edited one: both must build and
    // behave like fresh builds. The sources are shared, so the inputs are restored after.
    for (k, seed) in [3u32, 4].into_iter().enumerate() {
        std::fs::write(&g.main, main_text(seed)).expect("written");
        match zerolink_fuzz::build(&g.files, &out) {
            Ok(_) => {}
            Err(e) => panic!("build {k} into a damaged executable failed: {e}"),
        }
        assert_eq!(
            zerolink_fuzz::run(&out).as_ref(),
            Some(&g.fresh[k]),
            "build {k}: the result behaves differently from a fresh build"
        );
    }
    std::fs::write(&g.main, main_text(3)).expect("written");
});
