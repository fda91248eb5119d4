//! `zerolink gen`: a seeded generator of CLIF programs for benchmarks and tests.
//!
//! A program has N functions over M files, as a compiler splits a program into compilation
//! units. Sizes follow a skewed distribution (most functions small, a few large). Each function
//! takes `(x, fuel)`: with fuel left it calls up to three other functions (anywhere in the
//! program), sometimes itself, and sometimes a function through a per-file table of function
//! pointers, each with one fuel less; so any call graph, recursion included, terminates and
//! the total work stays linear in N. Each file has a driver, `%run_K`, that calls every function
//! of the file once; `%main` calls the drivers and prints the checksum in hex, so every build of
//! a program can be checked by running it.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub functions: usize,
    pub files: usize,
    pub seed: u64,
    /// Call into libc: the checksum is printed with `printf`, and some functions call `labs`.
    /// Otherwise the program is freestanding and prints through `zl_write`.
    pub libc: bool,
}

/// xorshift64*: seedable and dependency-free, so a seed means the same program everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The generated program: one text per file.
pub struct Generated {
    pub files: Vec<(String, String)>,
}

const TABLE_SIZE: usize = 4;

/// The arithmetic "work" knob of function `f`: a few large, most small.
fn steps_of(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=69 => 1 + rng.below(4) as usize,
        70..=94 => 5 + rng.below(25) as usize,
        _ => 30 + rng.below(170) as usize,
    }
}

/// The text of function `f`, with `salt` added to its constant (benchmarks edit via salt).
pub fn function_text(opts: &GenOptions, f: usize, file: usize, salt: i64) -> String {
    let mut rng = Rng::new(opts.seed ^ (f as u64).wrapping_mul(0x100_0000_01b3));
    let steps = steps_of(&mut rng);
    let n = opts.functions as u64;
    let callees: Vec<usize> = (0..rng.below(4)).map(|_| rng.below(n) as usize).collect();
    let recursive = rng.below(10) == 0;
    let indirect = rng.below(5) == 0;
    let calls_libc = opts.libc && rng.below(20) == 0;
    let constant = rng.below(1 << 20) as i64 + salt;

    let mut s = String::new();
    let _ = writeln!(s, "function %f{f}(i64, i64) -> i64 {{");
    let _ = writeln!(s, "    sig0 = (i64, i64) -> i64");
    for (k, c) in callees.iter().enumerate() {
        let _ = writeln!(s, "    fn{k} = %f{c}(i64, i64) -> i64");
    }
    if recursive {
        let _ = writeln!(s, "    fn9 = %f{f}(i64, i64) -> i64");
    }
    if indirect {
        let _ = writeln!(s, "    gv0 = symbol %table{file}");
    }
    if calls_libc {
        let _ = writeln!(s, "    fn8 = %labs(i64) -> i64");
    }
    let _ = writeln!(s, "block0(v0: i64, v1: i64):");
    let _ = writeln!(s, "    v2 = iconst.i64 {constant}");
    let _ = writeln!(s, "    v3 = iadd v0, v2");
    let mut v = 3;
    for k in 0..steps {
        let _ = writeln!(s, "    v{} = iconst.i64 {}", v + 1, 2 * k + 3);
        let _ = writeln!(s, "    v{} = imul v{v}, v{}", v + 2, v + 1);
        let _ = writeln!(s, "    v{} = bxor v{}, v0", v + 3, v + 2);
        v += 3;
    }
    let body = v;
    let _ = writeln!(s, "    v{} = iconst.i64 0", v + 1);
    let _ = writeln!(s, "    v{} = icmp eq v1, v{}", v + 2, v + 1);
    let _ = writeln!(s, "    brif v{}, block2(v{body}), block1", v + 2);
    v += 2;
    let _ = writeln!(s, "block1:");
    let _ = writeln!(s, "    v{} = iconst.i64 1", v + 1);
    let _ = writeln!(s, "    v{} = isub v1, v{}", v + 2, v + 1);
    let fuel = v + 2;
    v += 2;
    let mut acc = body;
    let mut call = |s: &mut String, v: &mut usize, callee: &str| {
        let _ = writeln!(s, "    v{} = call {callee}(v{acc}, v{fuel})", *v + 1);
        let _ = writeln!(s, "    v{} = iadd v{acc}, v{}", *v + 2, *v + 1);
        *v += 2;
        acc = *v;
    };
    for k in 0..callees.len() {
        call(&mut s, &mut v, &format!("fn{k}"));
    }
    if recursive {
        call(&mut s, &mut v, "fn9");
    }
    if calls_libc {
        let _ = writeln!(s, "    v{} = call fn8(v{acc})", v + 1);
        let _ = writeln!(s, "    v{} = bxor v{acc}, v{}", v + 2, v + 1);
        v += 2;
        acc = v;
    }
    if indirect {
        let slot = rng.below(TABLE_SIZE as u64) * 8;
        let _ = writeln!(s, "    v{} = symbol_value.i64 gv0", v + 1);
        let _ = writeln!(s, "    v{} = load.i64 v{}+{slot}", v + 2, v + 1);
        let _ = writeln!(
            s,
            "    v{} = call_indirect sig0, v{}(v{acc}, v{fuel})",
            v + 3,
            v + 2
        );
        let _ = writeln!(s, "    v{} = bxor v{acc}, v{}", v + 4, v + 3);
        v += 4;
        acc = v;
    }
    let _ = writeln!(s, "    jump block2(v{acc})");
    let _ = writeln!(s, "block2(v{}: i64):", v + 1);
    let _ = writeln!(s, "    return v{}", v + 1);
    let _ = writeln!(s, "}}\n");
    s
}

fn driver_text(file: usize, members: &[usize]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "function %run{file}(i64) -> i64 {{");
    for (k, f) in members.iter().enumerate() {
        let _ = writeln!(s, "    fn{k} = %f{f}(i64, i64) -> i64");
    }
    let _ = writeln!(s, "    gv0 = symbol %name{file}");
    let _ = writeln!(s, "block0(v0: i64):");
    let _ = writeln!(s, "    v1 = iconst.i64 1");
    let _ = writeln!(s, "    v2 = symbol_value.i64 gv0");
    let _ = writeln!(s, "    v3 = uload8.i64 v2");
    let _ = writeln!(s, "    v4 = iadd v0, v3");
    // Mixing: xor, rotate, odd multiply. A plain `acc + f(acc)` loses a bit of every
    // difference per call (the functions' derivative is odd), so after some 64 functions an
    // edit would no longer show in the checksum.
    let _ = writeln!(s, "    v5 = iconst.i64 29");
    let _ = writeln!(s, "    v6 = iconst.i64 {:#x}", 0x9e37_79b9_7f4a_7c15u64);
    let mut acc = 4;
    let mut v = 6;
    for k in 0..members.len() {
        let _ = writeln!(s, "    v{} = call fn{k}(v{acc}, v1)", v + 1);
        let _ = writeln!(s, "    v{} = bxor v{acc}, v{}", v + 2, v + 1);
        let _ = writeln!(s, "    v{} = rotl v{}, v5", v + 3, v + 2);
        let _ = writeln!(s, "    v{} = imul v{}, v6", v + 4, v + 3);
        v += 4;
        acc = v;
    }
    let _ = writeln!(s, "    return v{acc}\n}}\n");
    s
}

const MAIN_HEAD: &str = "; data: %hex = \"0123456789abcdef\"
function %print_hex(i64) {
    ss0 = explicit_slot 17
    gv0 = symbol %hex
    sig0 = (i32, i64, i64) -> i64
    fn0 = %zl_write sig0
block0(v0: i64):
    v1 = stack_addr.i64 ss0
    v2 = symbol_value.i64 gv0
    v3 = iconst.i64 16
    jump block1(v0, v3)
block1(v4: i64, v5: i64):
    v6 = iconst.i64 1
    v7 = isub v5, v6
    v8 = iconst.i64 15
    v9 = band v4, v8
    v10 = iadd v2, v9
    v11 = uload8.i64 v10
    v12 = iadd v1, v7
    istore8 v11, v12
    v13 = iconst.i64 4
    v14 = ushr v4, v13
    v15 = iconst.i64 0
    v16 = icmp eq v7, v15
    brif v16, block2, block1(v14, v7)
block2:
    v17 = iconst.i64 10
    v18 = iconst.i64 16
    v19 = iadd v1, v18
    istore8 v17, v19
    v20 = iconst.i32 1
    v21 = iconst.i64 17
    v22 = call fn0(v20, v1, v21)
    return
}

";

/// With libc, the checksum goes through `printf`.
const MAIN_HEAD_LIBC: &str = "; data: %fmt = \"%016lx\\n\\0\"
function %print_hex(i64) {
    gv0 = symbol %fmt
    fn0 = %printf(i64, i64) -> i32
block0(v0: i64):
    v1 = symbol_value.i64 gv0
    v2 = call fn0(v1, v0)
    return
}

";

fn main_text(opts: &GenOptions) -> String {
    let mut s = String::from(if opts.libc { MAIN_HEAD_LIBC } else { MAIN_HEAD });
    let _ = writeln!(s, "function %main() -> i32 {{");
    for k in 0..opts.files {
        let _ = writeln!(s, "    fn{k} = %run{k}(i64) -> i64");
    }
    let _ = writeln!(s, "    fn{} = %print_hex(i64)", opts.files);
    let _ = writeln!(s, "block0:");
    let _ = writeln!(s, "    v0 = iconst.i64 {}", opts.seed & 0xffff);
    let mut acc = 0;
    for k in 0..opts.files {
        let _ = writeln!(s, "    v{} = call fn{k}(v{acc})", acc + 1);
        acc += 1;
    }
    let _ = writeln!(s, "    call fn{}(v{acc})", opts.files);
    let _ = writeln!(s, "    v{} = iconst.i32 0", acc + 1);
    let _ = writeln!(s, "    return v{}\n}}\n", acc + 1);
    s
}

/// Generate the program in memory.
pub fn generate(opts: &GenOptions) -> Generated {
    let mut texts = vec![String::new(); opts.files];
    for (file, text) in texts.iter_mut().enumerate() {
        let members: Vec<usize> = members(opts, file).collect();
        let _ = writeln!(text, "; data: %name{file} = \"unit {file}\\n\"");
        let table: Vec<String> = (0..TABLE_SIZE)
            .map(|k| format!("addr %f{}", members.get(k).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(text, "; data: %table{file} = {}\n", table.join(", "));
        if file == 0 {
            text.push_str(&main_text(opts));
        }
        text.push_str(&driver_text(file, &members));
        for f in members {
            text.push_str(&function_text(opts, f, file, 0));
        }
    }
    Generated {
        files: texts
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("unit{i:04}.clif"), t))
            .collect(),
    }
}

impl Generated {
    /// Write the files into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut paths = Vec::new();
        for (name, text) in &self.files {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
            paths.push(p);
        }
        Ok(paths)
    }
}

/// Apply a one-function edit to a generated program on disk: function `f` gets `salt` added
/// to its constant. Returns the file that changed.
pub fn edit_function(dir: &Path, opts: &GenOptions, f: usize, salt: i64) -> Result<PathBuf> {
    let file = (0..opts.files)
        .find(|&k| members(opts, k).contains(&f))
        .context("no such function")?;
    let path = dir.join(format!("unit{file:04}.clif"));
    let text = std::fs::read_to_string(&path)?;
    let start = text
        .find(&format!("function %f{f}("))
        .context("function not found in its file")?;
    let end = text[start..]
        .find("\n}\n")
        .map(|e| start + e + 3)
        .context("function end not found")?;
    let new = function_text(opts, f, file, salt);
    let new = new.trim_end_matches('\n').to_string() + "\n";
    let text = format!("{}{}{}", &text[..start], new, &text[end..]);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The functions of file `file`: files get consecutive, nearly equal shares.
fn members(opts: &GenOptions, file: usize) -> std::ops::Range<usize> {
    let lo = (file * opts.functions).div_ceil(opts.files);
    let hi = ((file + 1) * opts.functions).div_ceil(opts.files);
    lo..hi
}
