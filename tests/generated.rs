//! Generated programs too large to keep in the repository: 10,000 functions that call each
//! other across ten files, and one function with more than 64 KiB of machine code. Expected
//! results are computed here in Rust, independently of both build paths.

mod support;

use std::path::PathBuf;

use support::*;

/// f_i(x) = f_{i+1}(x * (2i+1) + i) ^ i, the last one without the call.
fn chain(n: u64, i: u64, x: u64) -> u64 {
    let mut v = x;
    let mut mask = 0;
    for j in i..n {
        v = v.wrapping_mul(2 * j + 1).wrapping_add(j);
        mask ^= j;
    }
    v ^ mask
}

fn chain_function(n: u64, i: u64) -> String {
    let call = if i + 1 < n {
        format!(
            "    fn0 = %f{}(i64) -> i64\nblock0(v0: i64):\n    v1 = iconst.i64 {}\n    v2 = imul v0, v1\n    v3 = iconst.i64 {i}\n    v4 = iadd v2, v3\n    v5 = call fn0(v4)\n    v6 = bxor v5, v3\n    return v6\n",
            i + 1,
            2 * i + 1
        )
    } else {
        format!(
            "block0(v0: i64):\n    v1 = iconst.i64 {}\n    v2 = imul v0, v1\n    v3 = iconst.i64 {i}\n    v4 = iadd v2, v3\n    v6 = bxor v4, v3\n    return v6\n",
            2 * i + 1
        )
    };
    format!("function %f{i}(i64) -> i64 {{\n{call}}}\n\n")
}

#[test]
fn ten_thousand_functions_calling_each_other_across_ten_files() {
    let n = 10_000u64;
    let files = 10u64;
    let dir = tempfile::tempdir().unwrap();
    let mut paths: Vec<PathBuf> = Vec::new();
    for file in 0..files {
        let mut text = String::new();
        for i in (file * n / files)..((file + 1) * n / files) {
            text.push_str(&chain_function(n, i));
        }
        let path = dir.path().join(format!("part{file}.clif"));
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    // main: a direct call into the chain's start and an indirect one into its middle.
    let main = format!(
        "{EMIT}
function %main() -> i32 {{
    sig0 = (i64) -> i64
    fn0 = %f0(i64) -> i64
    fn1 = %f{mid}(i64) -> i64
    fn2 = %emit(i64)
block0:
    v0 = iconst.i64 1
    v1 = call fn0(v0)
    call fn2(v1)
    v2 = func_addr.i64 fn1
    v3 = iconst.i64 7
    v4 = call_indirect sig0, v2(v3)
    call fn2(v4)
    v5 = iconst.i32 0
    return v5
}}
",
        mid = n / 2
    );
    let main_path = dir.path().join("main.clif");
    std::fs::write(&main_path, main).unwrap();
    paths.push(main_path);

    let got = build_both_and_run(&paths, dir.path(), &[]);
    let mut expected = chain(n, 0, 1).to_le_bytes().to_vec();
    expected.extend_from_slice(&chain(n, n / 2, 7).to_le_bytes());
    assert_eq!(got.status, 0);
    assert_eq!(got.stdout, expected);
}

/// A deterministic stream of 64-bit constants.
fn constants(count: usize) -> Vec<(u64, u64)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count).map(|_| (next() | 1, next())).collect()
}

#[test]
fn one_function_with_more_than_64_kib_of_code() {
    let steps = constants(5_000);
    let mut body = String::from("function %big(i64) -> i64 {\nblock0(v0: i64):\n");
    let mut v = 0;
    for (k, (mul, add)) in steps.iter().enumerate() {
        let base = 1 + 4 * k;
        body.push_str(&format!(
            "    v{} = iconst.i64 {mul:#x}\n    v{} = imul v{v}, v{}\n    v{} = iconst.i64 {add:#x}\n    v{} = iadd v{}, v{}\n",
            base,
            base + 1,
            base,
            base + 2,
            base + 3,
            base + 1,
            base + 2
        ));
        v = base + 3;
    }
    body.push_str(&format!("    return v{v}\n}}\n"));
    let main = format!(
        "{EMIT}
function %main() -> i32 {{
    fn0 = %big(i64) -> i64
    fn1 = %emit(i64)
block0:
    v0 = iconst.i64 3
    v1 = call fn0(v0)
    call fn1(v1)
    v2 = iconst.i32 0
    return v2
}}
"
    );
    let dir = tempfile::tempdir().unwrap();
    let paths = vec![dir.path().join("big.clif"), dir.path().join("main.clif")];
    std::fs::write(&paths[0], body).unwrap();
    std::fs::write(&paths[1], main).unwrap();

    let got = build_both_and_run(&paths, dir.path(), &[]);
    let expected = steps
        .iter()
        .fold(3u64, |x, (m, a)| x.wrapping_mul(*m).wrapping_add(*a));
    assert_eq!(got.stdout, expected.to_le_bytes());

    let symbols = check_readelf(&dir.path().join("direct"));
    let size: u64 = symbols
        .lines()
        .find(|l| l.trim_end().ends_with(" big"))
        .and_then(|l| l.split_whitespace().nth(2))
        // readelf prints large sizes in hex.
        .and_then(|s| match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        })
        .expect("`big` is in .symtab with its size");
    assert!(size > 64 * 1024, "big is only {size} bytes");
}
