//! In-place updates. The differential property test applies random edits to random programs (CLIF
//! files and a static archive of C functions they may call) and requires, after every step, that the executable updated in place behaves exactly like a
//! fresh build of the same input and passes `readelf --wide -a` without a warning. The other
//! tests cover safety: failed builds, running executables, interrupted updates, foreign files.
//!
//! `ZEROLINK_DIFF_STEPS=N` runs more steps (default 300 across the seeds below), and
//! `ZEROLINK_DIFF_SEED=S` adds a seed of your own.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// xorshift64*: deterministic, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Debug)]
struct Func {
    file: usize,
    constant: i64,
    /// Non-foldable arithmetic steps: the knob that grows and shrinks the code.
    steps: usize,
    /// Callees, all at a lower depth, so every call graph terminates.
    callees: Vec<u32>,
    depth: u32,
    /// A data object whose first word the function adds in.
    reads: Option<u32>,
    /// A C function of the archive (`c{k}`) it calls last.
    c_call: Option<usize>,
}

#[derive(Clone, Debug)]
struct Data {
    file: usize,
    writable: bool,
    words: Vec<i64>,
    /// Functions whose addresses follow the words.
    pointers: Vec<u32>,
    /// Thread-local (`tls`): read through `tls_value`.
    tls: bool,
}

#[derive(Clone, Debug, Default)]
struct Model {
    funcs: BTreeMap<u32, Func>,
    data: BTreeMap<u32, Data>,
    next_id: u32,
    /// The constant of each C function in the program's static archive, one member each.
    c_consts: Vec<i64>,
}

const FILES: usize = 3;
/// C functions in the archive: `c1` calls `c0`, so members need members.
const C_FUNCS: u64 = 3;

impl Model {
    fn fresh_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn random_func(&mut self, rng: &mut Rng) -> Func {
        let mut callees = Vec::new();
        let mut depth = 0;
        let candidates: Vec<(u32, u32)> = self
            .funcs
            .iter()
            .filter(|(_, f)| f.depth < 3)
            .map(|(&id, f)| (id, f.depth))
            .collect();
        for _ in 0..rng.below(3) {
            if candidates.is_empty() {
                break;
            }
            let (id, d) = candidates[rng.below(candidates.len() as u64) as usize];
            if !callees.contains(&id) {
                callees.push(id);
                depth = depth.max(d + 1);
            }
        }
        let reads = if rng.chance(30) && !self.data.is_empty() {
            let keys: Vec<u32> = self.data.keys().copied().collect();
            Some(keys[rng.below(keys.len() as u64) as usize])
        } else {
            None
        };
        let c_call = if rng.chance(25) {
            Some(rng.below(C_FUNCS) as usize)
        } else {
            None
        };
        Func {
            file: rng.below(FILES as u64) as usize,
            constant: rng.below(1000) as i64 - 500,
            steps: 1 + rng.below(6) as usize,
            callees,
            depth,
            reads,
            c_call,
        }
    }

    fn random_data(&mut self, rng: &mut Rng) -> Data {
        let words = (0..1 + rng.below(4))
            .map(|_| rng.below(1 << 40) as i64)
            .collect();
        let mut pointers = Vec::new();
        if rng.chance(40) && !self.funcs.is_empty() {
            let keys: Vec<u32> = self.funcs.keys().copied().collect();
            pointers.push(keys[rng.below(keys.len() as u64) as usize]);
        }
        Data {
            file: rng.below(FILES as u64) as usize,
            writable: rng.chance(50),
            words,
            pointers,
            tls: rng.chance(20),
        }
    }

    fn generate(rng: &mut Rng) -> Model {
        let mut m = Model {
            c_consts: (0..C_FUNCS).map(|_| rng.below(100) as i64).collect(),
            ..Model::default()
        };
        for _ in 0..3 {
            let id = m.fresh_id();
            let d = m.random_data(rng);
            m.data.insert(id, d);
        }
        for _ in 0..8 + rng.below(8) {
            let id = m.fresh_id();
            let f = m.random_func(rng);
            m.funcs.insert(id, f);
        }
        m
    }

    /// Whether anything refers to function `id`.
    fn is_referenced(&self, id: u32) -> bool {
        self.funcs.values().any(|f| f.callees.contains(&id))
            || self.data.values().any(|d| d.pointers.contains(&id))
    }

    /// One random edit; returns what it was, for failure messages.
    fn edit(&mut self, rng: &mut Rng) -> String {
        // Long runs can remove everything of a kind: then the edit adds one.
        if self.funcs.is_empty() {
            let id = self.fresh_id();
            let f = self.random_func(rng);
            self.funcs.insert(id, f);
            return format!("add f{id}");
        }
        if self.data.is_empty() {
            let id = self.fresh_id();
            let d = self.random_data(rng);
            self.data.insert(id, d);
            return format!("add d{id}");
        }
        let fkeys: Vec<u32> = self.funcs.keys().copied().collect();
        let dkeys: Vec<u32> = self.data.keys().copied().collect();
        let pick = |rng: &mut Rng, keys: &[u32]| keys[rng.below(keys.len() as u64) as usize];
        match rng.below(12) {
            0 => {
                let id = pick(rng, &fkeys);
                self.funcs.get_mut(&id).unwrap().constant = rng.below(1000) as i64;
                format!("change the body of f{id}")
            }
            10 => {
                // A new version of one archive member.
                let k = rng.below(C_FUNCS) as usize;
                self.c_consts[k] = rng.below(100) as i64;
                format!("change archive member c{k}")
            }
            11 => {
                let id = pick(rng, &fkeys);
                let f = self.funcs.get_mut(&id).unwrap();
                f.c_call = match f.c_call {
                    Some(_) => None,
                    None => Some(rng.below(C_FUNCS) as usize),
                };
                format!("f{id} calls C: {:?}", f.c_call)
            }
            1 => {
                let id = pick(rng, &fkeys);
                self.funcs.get_mut(&id).unwrap().steps = 40 + rng.below(80) as usize;
                format!("grow f{id} far beyond its slot")
            }
            2 => {
                let id = pick(rng, &fkeys);
                self.funcs.get_mut(&id).unwrap().steps = 1;
                format!("shrink f{id}")
            }
            3 => {
                let id = self.fresh_id();
                let f = self.random_func(rng);
                self.funcs.insert(id, f);
                format!("add f{id}")
            }
            4 => {
                let unreferenced: Vec<u32> = fkeys
                    .iter()
                    .copied()
                    .filter(|&id| !self.is_referenced(id))
                    .collect();
                if unreferenced.len() < 2 {
                    return "nothing removable".into();
                }
                let id = pick(rng, &unreferenced);
                self.funcs.remove(&id);
                format!("remove f{id}")
            }
            5 => {
                let id = self.fresh_id();
                let d = self.random_data(rng);
                self.data.insert(id, d);
                format!("add d{id}")
            }
            6 => {
                let unread: Vec<u32> = dkeys
                    .iter()
                    .copied()
                    .filter(|&d| self.funcs.values().all(|f| f.reads != Some(d)))
                    .collect();
                if unread.is_empty() {
                    return "nothing removable".into();
                }
                let id = pick(rng, &unread);
                self.data.remove(&id);
                format!("remove d{id}")
            }
            7 => {
                let id = pick(rng, &dkeys);
                let d = self.data.get_mut(&id).unwrap();
                let n = 1 + rng.below(8) as usize;
                d.words = (0..n).map(|_| rng.below(1 << 40) as i64).collect();
                format!("change the contents of d{id} ({n} words)")
            }
            8 => {
                // Rewire: new callees for one function (depth rules kept by regenerating).
                let id = pick(rng, &fkeys);
                let old = self.funcs.remove(&id).unwrap();
                let mut f = self.random_func(rng);
                // Functions that call this one must stay deeper than it.
                let callers_depth = self
                    .funcs
                    .values()
                    .filter(|g| g.callees.contains(&id))
                    .map(|g| g.depth)
                    .min();
                if callers_depth.is_some_and(|d| f.depth >= d) {
                    f = old;
                } else {
                    f.file = old.file;
                }
                self.funcs.insert(id, f);
                format!("change what f{id} calls")
            }
            _ => {
                let id = pick(rng, &fkeys);
                let f = self.funcs.get_mut(&id).unwrap();
                f.file = (f.file + 1) % FILES;
                format!("move f{id} to another file")
            }
        }
    }

    fn function_text(&self, id: u32, f: &Func) -> String {
        let mut s = format!("function %f{id}(i64) -> i64 {{\n");
        for (k, c) in f.callees.iter().enumerate() {
            s += &format!("    fn{k} = %f{c}(i64) -> i64\n");
        }
        if let Some(d) = f.reads {
            let tls = if self.data.get(&d).is_some_and(|d| d.tls) {
                "tls "
            } else {
                ""
            };
            s += &format!("    gv0 = symbol {tls}%d{d}\n");
        }
        if let Some(k) = f.c_call {
            s += &format!("    fn{} = %c{k}(i64) -> i64 system_v\n", f.callees.len());
        }
        s += &format!(
            "block0(v0: i64):\n    v1 = iconst.i64 {}\n    v2 = iadd v0, v1\n",
            f.constant
        );
        let mut v = 2;
        for k in 0..f.steps {
            s += &format!(
                "    v{} = iconst.i64 {}\n    v{} = imul v{v}, v{}\n    v{} = iadd v{}, v0\n",
                v + 1,
                2 * k + 3,
                v + 2,
                v + 1,
                v + 3,
                v + 2
            );
            v += 3;
        }
        for k in 0..f.callees.len() {
            s += &format!(
                "    v{} = call fn{k}(v{v})\n    v{} = bxor v{v}, v{}\n",
                v + 1,
                v + 2,
                v + 1
            );
            v += 2;
        }
        if f.reads.is_some() {
            s += &format!(
                "    v{} = {}.i64 gv0\n    v{} = load.i64 v{}\n    v{} = iadd v{v}, v{}\n",
                v + 1,
                if f.reads
                    .and_then(|d| self.data.get(&d))
                    .is_some_and(|d| d.tls)
                {
                    "tls_value"
                } else {
                    "symbol_value"
                },
                v + 2,
                v + 1,
                v + 3,
                v + 2
            );
            v += 3;
        }
        if f.c_call.is_some() {
            s += &format!("    v{} = call fn{}(v{v})\n", v + 1, f.callees.len());
            v += 1;
        }
        s += &format!("    return v{v}\n}}\n\n");
        s
    }

    /// The C source of each archive member.
    fn c_sources(&self) -> Vec<String> {
        self.c_consts
            .iter()
            .enumerate()
            .map(|(k, c)| match k {
                1 => format!("long c0(long);\nlong c1(long x) {{ return c0(x) ^ {c}; }}\n"),
                _ => format!("long c{k}(long x) {{ return x * 3 + {c}; }}\n"),
            })
            .collect()
    }

    fn data_text(&self, id: u32, d: &Data) -> String {
        let mut items: Vec<String> = d.words.iter().map(|w| format!("i64 {w}")).collect();
        items.extend(d.pointers.iter().map(|p| format!("addr %f{p}")));
        format!(
            "; data: %d{id}{}{} = {}\n",
            if d.writable { " writable" } else { "" },
            if d.tls { " tls" } else { "" },
            items.join(", ")
        )
    }

    fn main_text(&self) -> String {
        let mut s = String::from(
            "function %main() -> i32 {\n    sig0 = (i64) -> i64\n    fn0 = %emit(i64)\n",
        );
        for id in self.funcs.keys() {
            s += &format!("    fn{id} = %f{id}(i64) -> i64\n");
        }
        for id in self.data.keys() {
            let tls = if self.data[id].tls { "tls " } else { "" };
            s += &format!("    gv{id} = symbol {tls}%d{id}\n");
        }
        s += "block0:\n";
        let mut v = 0;
        for id in self.funcs.keys() {
            s += &format!(
                "    v{} = iconst.i64 {}\n    v{} = call fn{id}(v{})\n    call fn0(v{})\n",
                v + 1,
                id * 7,
                v + 2,
                v + 1,
                v + 2
            );
            v += 2;
        }
        for (id, d) in &self.data {
            s += &format!(
                "    v{} = {}.i64 gv{id}\n    v{} = load.i64 v{}\n    call fn0(v{})\n",
                v + 1,
                if d.tls { "tls_value" } else { "symbol_value" },
                v + 2,
                v + 1,
                v + 2
            );
            let base = v + 1;
            v += 2;
            for (k, _) in d.pointers.iter().enumerate() {
                let off = 8 * (d.words.len() + k);
                s += &format!(
                    "    v{} = load.i64 v{base}+{off}\n    v{} = iconst.i64 3\n    v{} = call_indirect sig0, v{}(v{})\n    call fn0(v{})\n",
                    v + 1,
                    v + 2,
                    v + 3,
                    v + 1,
                    v + 2,
                    v + 3
                );
                v += 3;
            }
            if d.writable {
                s += &format!(
                    "    v{} = iconst.i64 77\n    store v{}, v{base}\n    v{} = load.i64 v{base}\n    call fn0(v{})\n",
                    v + 1,
                    v + 1,
                    v + 2,
                    v + 2
                );
                v += 2;
            }
        }
        s += &format!("    v{} = iconst.i32 0\n    return v{}\n}}\n", v + 1, v + 1);
        s
    }

    /// The text of each file.
    fn texts(&self) -> Vec<String> {
        let mut texts = vec![String::new(); FILES];
        texts[0] += EMIT;
        texts[0] += &self.main_text();
        for (id, d) in &self.data {
            texts[d.file] += &self.data_text(*id, d);
        }
        for (id, f) in &self.funcs {
            texts[f.file] += &self.function_text(*id, f);
        }
        texts
    }
}

/// The program's files on disk, changed the ways editors and build systems change files, so
/// that change detection by stat data is put to the test: only files whose text changed are
/// written, in one of several ways; unchanged ones are sometimes touched.
struct Disk {
    dir: PathBuf,
    paths: Vec<PathBuf>,
    moves: usize,
}

impl Disk {
    fn new(dir: &Path) -> Disk {
        Disk {
            dir: dir.to_path_buf(),
            paths: (0..FILES)
                .map(|i| dir.join(format!("part{i}.clif")))
                .collect(),
            moves: 0,
        }
    }

    /// Bring the files to `texts`; returns the paths (in file order) and what was done.
    fn write(&mut self, texts: &[String], rng: &mut Rng, log: &mut Vec<String>) -> Vec<PathBuf> {
        for (i, text) in texts.iter().enumerate() {
            let path = self.paths[i].clone();
            let now = std::fs::read_to_string(&path).ok();
            if now.as_deref() == Some(text.as_str()) {
                if rng.chance(15) {
                    // `touch`: new stat data, same bytes: nothing may be recompiled for it.
                    let f = std::fs::File::options().write(true).open(&path).unwrap();
                    f.set_modified(std::time::SystemTime::now()).unwrap();
                    log.push(format!("touch {i}"));
                }
                continue;
            }
            match if now.is_some() { rng.below(10) } else { 0 } {
                0..=4 => std::fs::write(&path, text).unwrap(),
                5 | 6 => {
                    // An editor's save: a new file renamed over the old one (new inode).
                    let tmp = self.dir.join(format!(".part{i}.swp"));
                    std::fs::write(&tmp, text).unwrap();
                    std::fs::rename(&tmp, &path).unwrap();
                    log.push(format!("rename-save {i}"));
                }
                7 => {
                    std::fs::remove_file(&path).unwrap();
                    std::fs::write(&path, text).unwrap();
                    log.push(format!("delete-recreate {i}"));
                }
                8 => {
                    // The file moves to another path (and is edited on the way).
                    self.moves += 1;
                    let to = self.dir.join(format!("moved{}-part{i}.clif", self.moves));
                    std::fs::remove_file(&path).unwrap();
                    std::fs::write(&to, text).unwrap();
                    self.paths[i] = to;
                    log.push(format!("move {i}"));
                }
                _ => {
                    // Same size and mtime as before, restored by hand: ctime still differs,
                    // and a file stamped in the previous build's first tick is hashed anyway.
                    let old = std::fs::metadata(&path).unwrap();
                    let mtime = old.modified().unwrap();
                    std::fs::write(&path, text).unwrap();
                    let f = std::fs::File::options().write(true).open(&path).unwrap();
                    f.set_modified(mtime).unwrap();
                    log.push(format!("restore-mtime {i}"));
                }
            }
        }
        self.paths.clone()
    }
}

impl Disk {
    /// Bring the archive `libmodel.a` (a member per C function) to `sources`: a changed
    /// source is compiled again and the archive rebuilt. Returns its path.
    fn write_archive(&self, sources: &[String], log: &mut Vec<String>) -> PathBuf {
        let lib = self.dir.join("libmodel.a");
        let mut changed = !lib.exists();
        for (k, text) in sources.iter().enumerate() {
            let src = self.dir.join(format!("c{k}.c"));
            if std::fs::read_to_string(&src).ok().as_deref() == Some(text.as_str()) {
                continue;
            }
            std::fs::write(&src, text).unwrap();
            let ok = Command::new("cc")
                .args(["-c", "-O2", "-fPIC"])
                .arg(&src)
                .arg("-o")
                .arg(self.dir.join(format!("c{k}.o")))
                .status()
                .unwrap();
            assert!(ok.success());
            changed = true;
        }
        if changed {
            let _ = std::fs::remove_file(&lib);
            let members: Vec<PathBuf> = (0..sources.len())
                .map(|k| self.dir.join(format!("c{k}.o")))
                .collect();
            let ok = Command::new("ar")
                .arg("rcs")
                .arg(&lib)
                .args(&members)
                .status()
                .unwrap();
            assert!(ok.success());
            log.push("archive rebuilt".into());
        }
        lib
    }
}

fn stats_build(files: &[PathBuf], out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["--stats"];
    args.extend_from_slice(extra);
    let o = build(files, out, &args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "build failed:\n{stderr}");
    stderr
}

/// `readelf ARGS` must not warn about anything.
fn check_readelf(exe: &Path, args: &[&str]) {
    let o = Command::new("readelf")
        .args(args)
        .arg(exe)
        .output()
        .expect("readelf runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.trim().is_empty(),
        "readelf {args:?} on {} complained: {stderr}",
        exe.display()
    );
}

/// Random edits, each applied in place to one executable and built fresh into another; with
/// `flags` on both builds. With `-g` the debug information must agree too: per function, the
/// same unit, lines and unwind instructions (addresses differ, positions relative to each
/// function do not).
fn differential(seed: u64, steps: usize, flags: &[&str]) {
    differential_via(seed, steps, flags, Via::Cli)
}

/// How the updated executable is built: `zerolink build`, or the library's `ZerolinkModule`
/// (each file a unit, as a compiler would hand its program over).
#[derive(Clone, Copy, PartialEq)]
enum Via {
    Cli,
    Library,
}

/// Build `files` into `out` through `ZerolinkModule::open`: the description of the build.
/// An update the session refuses (`NeedsFullBuild`) is done again in full, as a compiler
/// would, and the description says why.
fn library_build(files: &[PathBuf], out: &Path, debug: bool) -> String {
    use zerolink_backend::{
        clif::Program, BackendError, ModuleOptions, TargetOptions, ZerolinkModule,
    };
    let (clif, precompiled) = zerolink_backend::objects::classify(files).unwrap();
    let program = Program::read(&clif).unwrap();
    let mut why = String::new();
    for force_full in [false, true] {
        let opts = ModuleOptions {
            debug_info: debug,
            language: gimli::DW_LANG_Mips_Assembler,
            // A child another test thread forks holds this process's lock file until it execs.
            lock: zerolink_image::lock::LockWait::Wait,
            force_full,
            ..ModuleOptions::default()
        };
        let mut module = ZerolinkModule::open(TargetOptions::default().isa().unwrap(), out, opts)
            .unwrap_or_else(|e| panic!("open {}: {e}", out.display()));
        for p in &precompiled {
            module.add_precompiled(p);
        }
        let through = program.define_through(&mut module).unwrap();
        let report = match module.finish() {
            Err(BackendError::NeedsFullBuild(reason)) if !force_full => {
                why = format!(" (full build: {reason})");
                continue;
            }
            other => other.unwrap_or_else(|e| panic!("finish: {e}")),
        };
        return format!(
            "{}: compiled {}, skipped units {}{why}",
            match report.mode {
                zerolink_backend::Mode::Update => "in-place update".to_string(),
                other => format!("{other:?}"),
            },
            report.compiled,
            through.skipped_units
        );
    }
    unreachable!("a forced full build does not ask for a full build")
}

fn differential_via(seed: u64, steps: usize, flags: &[&str], via: Via) {
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::generate(&mut rng);
    let out = dir.path().join("updated");
    let fresh = dir.path().join("fresh");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut disk = Disk::new(&src);
    let mut files = disk.write(&model.texts(), &mut rng, &mut Vec::new());
    files.push(disk.write_archive(&model.c_sources(), &mut Vec::new()));
    let debug = flags.contains(&"-g");
    let update = |files: &[PathBuf]| match via {
        Via::Cli => stats_build(files, &out, flags),
        Via::Library => library_build(files, &out, debug),
    };
    update(&files);
    let mut history = Vec::new();
    let mut full = vec!["--full"];
    full.extend_from_slice(flags);
    for step in 0..steps {
        history.push(model.edit(&mut rng));
        let mut log = Vec::new();
        let mut files = disk.write(&model.texts(), &mut rng, &mut log);
        files.push(disk.write_archive(&model.c_sources(), &mut log));
        if !log.is_empty() {
            history.push(log.join(", "));
        }
        let stats = update(&files);
        // A thread-local added or grown re-lays the TLS block: the one full build allowed.
        assert!(
            stats.starts_with("in-place update") || stats.contains("thread-local block changed"),
            "seed {seed} step {step}: not updated in place:\n{stats}\nedits: {:?}",
            &history[history.len().saturating_sub(6)..]
        );
        build_ok(&files, &fresh, &full);
        let (a, b) = (run(&out), run(&fresh));
        assert!(
            a.status == b.status && a.stdout == b.stdout,
            "seed {seed} step {step}: the updated executable differs from a fresh build\n\
             edits: {history:?}\nupdated: {} {:?}\nfresh:   {} {:?}",
            a.status,
            a.stdout,
            b.status,
            b.stdout
        );
        check_readelf(&out, &["--wide", "-a"]);
        // The checksums the table keeps for code and data are right after every update.
        let v = zerolink().arg("verify").arg(&out).output().unwrap();
        assert!(
            v.status.success(),
            "seed {seed} step {step}: verify after the update:\n{}",
            String::from_utf8_lossy(&v.stderr)
        );
        if flags.contains(&"-g") {
            check_readelf(&out, &["--debug-dump=info,line,frames"]);
            let (a, b) = (debug_view::view(&out), debug_view::view(&fresh));
            if a != b {
                let differing: Vec<_> = a
                    .iter()
                    .filter(|(k, v)| b.get(*k) != Some(v))
                    .map(|(k, v)| (k, v, b.get(k)))
                    .take(3)
                    .collect();
                panic!(
                    "seed {seed} step {step}: debug information differs from a fresh build\n\
                     edits: {history:?}\n(function, updated, fresh): {differing:?}\n\
                     only in fresh: {:?}",
                    b.keys().filter(|k| !a.contains_key(*k)).collect::<Vec<_>>()
                );
            }
        }
    }
}

fn steps() -> usize {
    std::env::var("ZEROLINK_DIFF_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

#[test]
fn updated_executables_behave_like_fresh_builds_after_every_random_edit() {
    let mut seeds = vec![0x5eed_0001u64, 0xdead_beef, 0x1234_5678_9abc];
    if let Some(seed) = std::env::var("ZEROLINK_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        seeds.push(seed);
    }
    let per_seed = steps().div_ceil(seeds.len());
    std::thread::scope(|s| {
        for &seed in &seeds {
            s.spawn(move || differential(seed, per_seed, &[]));
        }
    });
}

/// The same as position-independent executables (`--pie`): pointers in data and GOT entries
/// of the image's own symbols become `R_X86_64_RELATIVE` relocations, kept current by updates.
#[test]
fn pie_updates_behave_like_fresh_builds_after_every_random_edit() {
    differential(0x091e_0001, steps().div_ceil(4), &["--pie"]);
}

/// The same through the library: each edit handed to `ZerolinkModule::open` as a compiler
/// would (files as units), with and without debug information, equals a fresh CLI build.
#[test]
fn library_updates_behave_like_fresh_builds_after_every_random_edit() {
    let per_seed = (steps() / 3).div_ceil(2);
    std::thread::scope(|s| {
        s.spawn(move || differential_via(0x11b_0001, per_seed, &[], Via::Library));
        s.spawn(move || differential_via(0x11b_0002, per_seed / 2, &["-g"], Via::Library));
    });
}

/// The same with `-g`: line tables, subprograms and unwind tables of updated executables
/// match fresh builds after every edit.
#[test]
fn updated_debug_information_matches_fresh_builds_after_every_random_edit() {
    let seeds = [0x9e_0001u64, 0xfeed_f00d];
    let per_seed = (steps() / 3).div_ceil(seeds.len());
    std::thread::scope(|s| {
        for &seed in &seeds {
            s.spawn(move || differential(seed, per_seed, &["-g"]));
        }
    });
}

const PROGRAM: &str = "; data: %msg = \"old\\n\"
function %main() -> i32 {
    gv0 = symbol %msg
    sig0 = (i32, i64, i64) -> i64
    fn0 = %zl_write sig0
    fn1 = %zl_read sig0
    ss0 = explicit_slot 8
block0:
    v0 = iconst.i32 1
    v1 = symbol_value.i64 gv0
    v2 = iconst.i64 4
    v3 = call fn0(v0, v1, v2)
    v4 = iconst.i32 0
    v5 = stack_addr.i64 ss0
    v6 = iconst.i64 1
    v7 = call fn1(v4, v5, v6)
    v8 = call fn0(v0, v1, v2)
    return v4
}
";

fn write_program(dir: &Path, text: &str) -> Vec<PathBuf> {
    let p = dir.join("p.clif");
    std::fs::write(&p, text).unwrap();
    vec![p]
}

fn run_with_stdin(exe: &Path, input: &[u8]) -> (Option<i32>, Vec<u8>, Vec<u8>) {
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A program that exits without reading (the interrupted-update stub) closes the pipe
    // first: that is its behaviour, not a test failure.
    let _ = child.stdin.take().unwrap().write_all(input);
    let o = child.wait_with_output().unwrap();
    (o.status.code(), o.stdout, o.stderr)
}

#[test]
fn a_failed_update_leaves_the_executable_byte_for_byte_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_program(dir.path(), PROGRAM);
    let out = dir.path().join("out");
    build_ok(&files, &out, &[]);
    let before = std::fs::read(&out).unwrap();
    for broken in [
        PROGRAM.replace("fn0 = %zl_write sig0", "fn0 = %zl_nowhere sig0"),
        PROGRAM.replace("v4 = iconst.i32 0", "v4 = iconst.i32"),
        PROGRAM.replace("return v4", "return v3"),
        PROGRAM.replace("\"old\\n\"", "i24 5"),
    ] {
        let files = write_program(dir.path(), &broken);
        let o = build(&files, &out, &[]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            std::fs::read(&out).unwrap(),
            before,
            "OUT changed after:\n{broken}"
        );
        assert_eq!(run_with_stdin(&out, b"x").1, b"old\nold\n");
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // Only OUT's lock file (empty, kept like Cargo's) may stay; no temporary file.
    assert!(
        names
            .iter()
            .all(|n| !n.contains(".zl-") || n.ends_with(".zl-lock")),
        "{names:?}"
    );
}

#[test]
fn updating_a_running_executable_succeeds_and_leaves_the_process_undisturbed() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_program(dir.path(), PROGRAM);
    let out = dir.path().join("out");
    build_ok(&files, &out, &[]);
    // The program waits for one byte on stdin between its two writes.
    let mut child = Command::new(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let new = write_program(dir.path(), &PROGRAM.replace("\"old\\n\"", "\"new\\n\""));
    let stats = stats_build(&new, &out, &[]);
    assert!(stats.starts_with("in-place update"), "{stats}");
    child.stdin.take().unwrap().write_all(b"x").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.stdout, b"old\nold\n", "the running process was disturbed");
    assert_eq!(run_with_stdin(&out, b"x").1, b"new\nnew\n");
}

#[test]
fn an_update_killed_at_any_point_never_runs_mixed_code_and_the_next_build_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let old = write_program(dir.path(), PROGRAM);
    let out = dir.path().join("out");
    // The edit moves `main` (it grows past its slot) and changes the message.
    let edited = PROGRAM
        .replace("\"old\\n\"", "\"new\\n\"")
        .replace("    return v4\n", "    v9 = call fn0(v0, v1, v2)\n    v10 = call fn0(v0, v1, v2)\n    v11 = call fn0(v0, v1, v2)\n    return v4\n");
    let new = write_program(dir.path(), &edited);
    let expected_new = b"new\nnew\nnew\nnew\nnew\n".to_vec();
    build_ok(&old, &out, &[]);
    let total: u64 = {
        // Find how many bytes a complete update writes, by running one.
        let probe = dir.path().join("probe");
        build_ok(&old, &probe, &[]);
        let s = stats_build(&new, &probe, &[]);
        let words: Vec<&str> = s.split_whitespace().collect();
        let i = words.iter().position(|w| *w == "written").unwrap();
        words[i + 1].trim_end_matches(',').parse::<u64>().unwrap() + 24
    };
    let mut points: Vec<u64> = vec![0, 1, 3, 4, 11, 12, 13, 100, 1000];
    points.extend((0..20).map(|k| total * k / 20));
    points.extend([total - 12, total - 8, total - 4, total]);
    for n in points {
        build_ok(&old, &out, &["--full"]);
        let o = Command::new(env!("CARGO_BIN_EXE_zerolink"))
            .arg("build")
            .args(&new)
            .arg("-o")
            .arg(&out)
            .env("ZEROLINK_TEST_ABORT_AFTER_BYTES", n.to_string())
            .output()
            .unwrap();
        let (status, stdout, stderr) = run_with_stdin(&out, b"x");
        let finished = o.status.success();
        let outcome_ok = stdout == b"old\nold\n" && status == Some(0)
            || stdout == expected_new && status == Some(0)
            || status == Some(126) && String::from_utf8_lossy(&stderr).contains("interrupted");
        assert!(
            outcome_ok,
            "killed after {n} bytes (finished: {finished}): status {status:?}, stdout {:?}",
            String::from_utf8_lossy(&stdout)
        );
        // The next normal build repairs or rebuilds, and the result is right.
        build_ok(&new, &out, &[]);
        let (status, stdout, _) = run_with_stdin(&out, b"x");
        assert_eq!(
            (status, stdout),
            (Some(0), expected_new.clone()),
            "after {n}"
        );
        check_readelf(&out, &["--wide", "-a"]);
    }
}

#[test]
fn foreign_and_damaged_files_at_out_get_a_full_build_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_program(dir.path(), PROGRAM);
    let out = dir.path().join("out");
    type Spoil = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "not an ELF",
            Box::new(|p: &Path| std::fs::write(p, b"just some text").unwrap()),
        ),
        (
            "not built by zerolink",
            Box::new(|p: &Path| {
                std::fs::copy("/bin/true", p).unwrap();
            }),
        ),
        (
            "damaged",
            Box::new(|p: &Path| {
                let mut bytes = std::fs::read(p).unwrap();
                // Flip a byte inside the .zerolink section's body.
                let o = Command::new("readelf")
                    .args(["--wide", "-S"])
                    .arg(p)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&o.stdout);
                let line = text.lines().find(|l| l.contains(".zerolink")).unwrap();
                let fields: Vec<&str> = line.split_whitespace().collect();
                let i = fields.iter().position(|f| *f == ".zerolink").unwrap();
                let off = usize::from_str_radix(fields[i + 3], 16).unwrap();
                bytes[off + 200] ^= 0x55;
                std::fs::write(p, bytes).unwrap();
            }),
        ),
        ("other settings", Box::new(|_: &Path| {})),
    ];
    for (what, spoil) in cases {
        build_ok(&files, &out, &[]);
        spoil(&out);
        let extra: &[&str] = if what == "other settings" {
            &["-O", "none"]
        } else {
            &[]
        };
        let o = build(&files, &out, extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert_eq!(
            stderr
                .lines()
                .filter(|l| l.starts_with("zerolink: full build"))
                .count(),
            1,
            "{what}: expected one line with the reason, got:\n{stderr}"
        );
        assert_eq!(run_with_stdin(&out, b"x").1, b"old\nold\n", "{what}");
    }
}

#[test]
fn an_edit_recompiles_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(EMIT);
    for i in 0..50 {
        text += &format!(
            "function %g{i}(i64) -> i64 {{\nblock0(v0: i64):\n    v1 = iconst.i64 {i}\n    v2 = iadd v0, v1\n    return v2\n}}\n"
        );
    }
    text += "function %main() -> i32 {\n    fn0 = %g7(i64) -> i64\n    fn1 = %emit(i64)\nblock0:\n    v0 = iconst.i64 1\n    v1 = call fn0(v0)\n    call fn1(v1)\n    v2 = iconst.i32 0\n    return v2\n}\n";
    let files = write_program(dir.path(), &text);
    let out = dir.path().join("out");
    build_ok(&files, &out, &[]);
    let files = write_program(
        dir.path(),
        &text.replace("v1 = iconst.i64 7\n", "v1 = iconst.i64 700\n"),
    );
    let stats = stats_build(&files, &out, &[]);
    assert!(stats.contains("compiled 1, reused 51"), "{stats}");
    assert_eq!(run(&out).stdout, 701u64.to_le_bytes());
}

#[test]
fn fragmented_free_space_gets_a_full_build_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let body = |i: usize| {
        format!(
            "function %g{i}(i64) -> i64 {{\nblock0(v0: i64):\n    v1 = iconst.i64 {i}\n    v2 = imul v0, v1\n    return v2\n}}\n"
        )
    };
    let main = "function %main() -> i32 {\n    fn0 = %g0(i64) -> i64\nblock0:\n    v0 = iconst.i64 1\n    v1 = call fn0(v0)\n    v2 = ireduce.i32 v1\n    return v2\n}\n";
    let all: String = (0..160).map(body).collect();
    let files = write_program(dir.path(), &format!("{main}{all}"));
    let out = dir.path().join("out");
    build_ok(&files, &out, &[]);
    // Remove most functions: their slots become free space below the high-water mark.
    let files = write_program(dir.path(), &format!("{main}{}", body(0)));
    let run_build = |files: &[PathBuf]| {
        Command::new(env!("CARGO_BIN_EXE_zerolink"))
            .arg("build")
            .args(files)
            .arg("-o")
            .arg(&out)
            .arg("--stats")
            .env("ZEROLINK_TEST_FRAGMENTATION_MIN", "256")
            .output()
            .unwrap()
    };
    let o = run_build(&files);
    assert!(String::from_utf8_lossy(&o.stderr).contains("in-place update"));
    let o = run_build(&files);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("zerolink: full build") && stderr.contains("too fragmented"),
        "{stderr}"
    );
    assert_eq!(run(&out).status, 0);
    // The full build compacted the text: the next build is an update again.
    let o = run_build(&files);
    assert!(String::from_utf8_lossy(&o.stderr).contains("in-place update"));
}

/// The number of input files an update read, from `--stats`.
fn files_read(stats: &str) -> usize {
    let line = stats
        .lines()
        .find(|l| l.trim_start().starts_with("input files read"))
        .unwrap_or_else(|| panic!("no input line in:\n{stats}"));
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

fn compiled(stats: &str) -> usize {
    let line = stats.lines().find(|l| l.contains("compiled")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(',')
        .parse()
        .unwrap()
}

#[test]
fn change_detection_reads_only_files_whose_stat_data_changed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let o = zerolink()
        .args(["gen", "--functions", "300", "--files", "6", "-o"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success());
    let files = clif_files(&src);
    settle_inputs();
    let out = dir.path().join("prog");
    let flags = ["--freestanding"];
    stats_build(&files, &out, &flags);
    let before = run(&out).stdout;

    // Nothing changed: nothing is read, nothing compiled, and OUT is not written at all.
    let before_noop = std::fs::read(&out).unwrap();
    let written = std::fs::metadata(&out).unwrap().modified().unwrap();
    let stats = stats_build(&files, &out, &flags);
    assert!(stats.starts_with("in-place update"), "{stats}");
    assert_eq!((files_read(&stats), compiled(&stats)), (0, 0), "{stats}");
    assert_eq!(
        std::fs::metadata(&out).unwrap().modified().unwrap(),
        written
    );
    assert_eq!(std::fs::read(&out).unwrap(), before_noop);

    // `touch`: the file is read and hashed, and nothing is recompiled.
    let f = std::fs::File::options()
        .write(true)
        .open(&files[2])
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    settle_inputs();
    let stats = stats_build(&files, &out, &flags);
    assert_eq!((files_read(&stats), compiled(&stats)), (1, 0), "{stats}");
    // ... and its new stat data is recorded: the next build reads nothing.
    let stats = stats_build(&files, &out, &flags);
    assert_eq!(files_read(&stats), 0, "{stats}");

    // An edit that keeps the size, with the mtime put back by hand: found all the same.
    let text = std::fs::read_to_string(&files[3]).unwrap();
    let mtime = std::fs::metadata(&files[3]).unwrap().modified().unwrap();
    let edited = text.replacen("iconst.i64 3\n", "iconst.i64 4\n", 1);
    assert_ne!(
        edited, text,
        "the generator's text changed: pick another edit"
    );
    std::fs::write(&files[3], &edited).unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(&files[3])
        .unwrap();
    f.set_modified(mtime).unwrap();
    let stats = stats_build(&files, &out, &flags);
    assert_eq!((files_read(&stats), compiled(&stats)), (1, 1), "{stats}");
    let after = run(&out).stdout;
    assert_ne!(after, before, "the edit must show in the output");
    let fresh = dir.path().join("fresh");
    build_ok(&files, &fresh, &["--freestanding", "--full"]);
    assert_eq!(run(&fresh).stdout, after);

    // A file stamped in the future is racily clean forever: hashed by every build.
    settle_inputs();
    stats_build(&files, &out, &flags);
    let f = std::fs::File::options()
        .write(true)
        .open(&files[4])
        .unwrap();
    let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    f.set_modified(future).unwrap();
    for _ in 0..2 {
        let stats = stats_build(&files, &out, &flags);
        assert_eq!((files_read(&stats), compiled(&stats)), (1, 0), "{stats}");
    }
}

#[test]
fn a_signature_change_recompiles_callers_in_files_that_were_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let callee = "function %callee(i64) -> i64 {\nblock0(v0: i64):\n    v1 = iconst.i64 1\n    v2 = iadd v0, v1\n    return v2\n}\n";
    let caller = "function %main() -> i32 {\n    fn0 = %callee(i64) -> i64\nblock0:\n    v0 = iconst.i64 41\n    v1 = call fn0(v0)\n    v2 = ireduce.i32 v1\n    return v2\n}\n";
    let a = dir.path().join("a.clif");
    let b = dir.path().join("b.clif");
    std::fs::write(&a, callee).unwrap();
    std::fs::write(&b, caller).unwrap();
    settle_inputs();
    let out = dir.path().join("prog");
    let files = vec![a.clone(), b.clone()];
    stats_build(&files, &out, &["--freestanding"]);
    assert_eq!(run(&out).status, 42);
    // The callee now takes an i32: the caller in the unread file must be checked again.
    std::fs::write(
        &a,
        callee
            .replace(
                "(i64) -> i64 {\nblock0(v0: i64)",
                "(i32) -> i64 {\nblock0(v0: i32)",
            )
            .replace("iadd v0, v1", "uextend.i64 v0"),
    )
    .unwrap();
    let o = build(&files, &out, &["--freestanding"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "a call with the old signature must be refused"
    );
    assert!(
        stderr.contains("b.clif") && stderr.contains("callee"),
        "{stderr}"
    );
    assert_eq!(run(&out).status, 42, "a failed build leaves OUT as it was");
}

#[test]
fn a_second_build_of_the_same_output_waits_for_the_first_or_fails_with_no_wait() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let files = write_program(dir.path(), PROGRAM);
    let out = dir.path().join("prog");
    // Hold the output's lock as a running build would.
    let lock = std::fs::File::create(dir.path().join(".prog.zl-lock")).unwrap();
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let o = build(&files, &out, &["--no-wait"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "--no-wait must not wait");
    assert!(stderr.contains("another build of"), "{stderr}");
    assert!(!out.exists(), "a refused build writes nothing");

    let mut waiting = zerolink()
        .arg("build")
        .args(&files)
        .arg("-o")
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "it must wait for the lock"
    );
    assert!(!out.exists());
    drop(lock);
    let o = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("waiting for another build"), "{stderr}");
    assert!(run_with_stdin(&out, b"").1.starts_with(b"old\n"));
}

#[test]
fn concurrent_builds_into_one_output_leave_one_of_the_two_programs() {
    let dir = tempfile::tempdir().unwrap();
    let base_src = dir.path().join("base");
    let o = zerolink()
        .args(["gen", "--functions", "2000", "--files", "4", "-o"])
        .arg(&base_src)
        .output()
        .unwrap();
    assert!(o.status.success());
    // Two edits of the same file, to different constants.
    let mut variants = Vec::new();
    for (name, to) in [("x", "iconst.i64 4\n"), ("y", "iconst.i64 5\n")] {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        for f in clif_files(&base_src) {
            let text = std::fs::read_to_string(&f).unwrap();
            let text = if f.ends_with("unit0002.clif") {
                text.replacen("iconst.i64 3\n", to, 1)
            } else {
                text
            };
            std::fs::write(d.join(f.file_name().unwrap()), text).unwrap();
        }
        let files = clif_files(&d);
        let fresh = dir.path().join(format!("fresh-{name}"));
        build_ok(&files, &fresh, &["--freestanding"]);
        variants.push((files, run(&fresh).stdout));
    }
    assert_ne!(variants[0].1, variants[1].1, "the two edits must differ");
    let base = dir.path().join("base-prog");
    build_ok(&clif_files(&base_src), &base, &["--freestanding"]);
    let out = dir.path().join("prog");
    for _ in 0..4 {
        std::fs::copy(&base, &out).unwrap();
        let spawn = |files: &[PathBuf]| {
            zerolink()
                .arg("build")
                .args(files)
                .args(["-o"])
                .arg(&out)
                .args(["--freestanding", "-q"])
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let (mut a, mut b) = (spawn(&variants[0].0), spawn(&variants[1].0));
        assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
        let got = run(&out).stdout;
        assert!(
            got == variants[0].1 || got == variants[1].1,
            "two concurrent builds left a program that is neither"
        );
    }
}

#[test]
fn temporary_files_of_killed_builds_are_removed_by_the_next_build() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_program(dir.path(), PROGRAM);
    let out = dir.path().join("prog");
    // What a full build and an update of a running OUT leave when killed, and a bystander.
    for name in [
        ".prog.zl-4242.tmp",
        ".prog.zl-4242-7.tmp",
        ".prog.zl-4343.update",
        ".prog.zl-notes.txt",
    ] {
        std::fs::write(dir.path().join(name), b"stale").unwrap();
    }
    build_ok(&files, &out, &[]);
    assert!(!dir.path().join(".prog.zl-4242.tmp").exists());
    assert!(!dir.path().join(".prog.zl-4242-7.tmp").exists());
    assert!(!dir.path().join(".prog.zl-4343.update").exists());
    assert!(
        dir.path().join(".prog.zl-notes.txt").exists(),
        "only zerolink's own names"
    );
    assert!(run_with_stdin(&out, b"").1.starts_with(b"old\n"));
}

/// Where section `name` is in `exe`: (file offset, size).
fn section(exe: &Path, name: &str) -> (usize, usize) {
    let o = Command::new("readelf")
        .args(["--wide", "-S"])
        .arg(exe)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().any(|f| f == name))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let i = fields.iter().position(|f| *f == name).unwrap();
    let hex = |s: &str| usize::from_str_radix(s, 16).unwrap();
    (hex(fields[i + 3]), hex(fields[i + 4]))
}

/// One flipped byte anywhere in the table (start, middle or end of every array, `.symtab`
/// and `.strtab` included) never makes a later build fail or keep a wrong program: an update
/// that reads the damaged page rebuilds in full with the reason, and every executable behaves
/// like a fresh build of the same input.
#[test]
fn damage_anywhere_in_the_table_means_a_full_build_never_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let gen = zerolink()
        .args(["gen", "--functions", "300", "--files", "3", "-o"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(gen.status.success());
    let files = clif_files(&src);
    let good = dir.path().join("good");
    build_ok(&files, &good, &[]);
    let extra = |k: usize| {
        format!("\nfunction %extra{k}(i64) -> i64 {{\nblock0(v0: i64):\n    return v0\n}}\n")
    };
    let original = std::fs::read_to_string(&files[1]).unwrap();
    let edit = |k: usize| {
        let text: String = original.clone() + &(1..=k).map(extra).collect::<String>();
        std::fs::write(&files[1], text).unwrap();
        settle_inputs();
    };
    let (out, fresh) = (dir.path().join("out"), dir.path().join("fresh"));
    let sections = [
        ".zerolink.symbols",
        ".zerolink.sites",
        ".zerolink.index",
        ".symtab",
        ".strtab",
    ];
    let mut full_builds = 0;
    for name in sections {
        let (offset, size) = section(&good, name);
        for at in [0x40.min(size - 1), size / 2, size - 1] {
            std::fs::write(&files[1], &original).unwrap();
            let mut bytes = std::fs::read(&good).unwrap();
            bytes[offset + at] ^= 0x55;
            std::fs::write(&out, bytes).unwrap();
            // 0: the same program with a file touched (its record changes, so the build
            // finishes instead of writing nothing); then two edits.
            for k in 0..=2 {
                edit(k);
                let o = build(&files, &out, &[]);
                let stderr = String::from_utf8_lossy(&o.stderr);
                assert!(
                    o.status.success() && !stderr.contains("panicked"),
                    "{name}+{at:#x}, edit {k}: {stderr}"
                );
                full_builds += usize::from(stderr.contains("its table is damaged"));
                build_ok(&files, &fresh, &["--full"]);
                let (a, b) = (run(&out), run(&fresh));
                assert!(
                    a.status == b.status && a.stdout == b.stdout,
                    "{name}+{at:#x}, edit {k}: differs from a fresh build"
                );
            }
        }
    }
    // Every array but the ones an edit never reads (sites of untouched functions) is read by
    // these edits.
    assert!(
        full_builds >= 9,
        "only {full_builds} full builds for damage"
    );
}

/// Whether a run (status, stdout, stderr) is an acceptable outcome.
type Judge<'a> = &'a dyn Fn(i32, &[u8], &[u8]) -> bool;

/// Replay every prefix of the commit `log` (see `image/src/store.rs`, `COMMIT_LOG_ENV`) onto
/// `old`, the executable before the update, at `work`, and run each distinct file that a kill
/// at that point would leave: `ok` judges each run. Returns how many files were run.
fn replay_every_prefix(old: &[u8], log: &[u8], work: &Path, ok: Judge<'_>) -> usize {
    use std::os::unix::fs::FileExt;
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(log[0], b'L');
    let len = word(log, 1) as usize;
    let mut file = old.to_vec();
    file.resize(len.max(old.len()), 0);
    std::fs::write(work, &file).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut runs = 0;
    let mut check = |what: &str| {
        use std::os::unix::process::ExitStatusExt;
        runs += 1;
        let mut tries = 0;
        let o = loop {
            match Command::new(work).stdin(Stdio::null()).output() {
                // Another test thread forked while this one had the file open for writing.
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => {
                    break other.unwrap_or_else(|e| {
                        panic!("killed {what}: the kernel cannot start it: {e}")
                    })
                }
            }
        };
        let status = o
            .status
            .code()
            .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0));
        assert!(
            ok(status, &o.stdout, &o.stderr),
            "killed {what}: status {status}, stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    check("before the first step");
    let mut at = 9;
    let mut step = 0;
    while at < log.len() {
        let (tag, offset, n) = (
            log[at],
            word(log, at + 1) as usize,
            word(log, at + 9) as usize,
        );
        let data = &log[at + 17..at + 17 + n];
        at += 17 + n;
        step += 1;
        let changes: Vec<(usize, &[u8])> = match tag {
            // A word store is atomic: it lands whole or not at all.
            b'W' => vec![(offset, data)],
            _ => (0..n).map(|i| (offset + i, &data[i..i + 1])).collect(),
        };
        for (o, bytes) in changes {
            if file[o..o + bytes.len()] == *bytes {
                continue; // the same file as the previous prefix: the same outcome
            }
            file[o..o + bytes.len()].copy_from_slice(bytes);
            let f = std::fs::OpenOptions::new().write(true).open(work).unwrap();
            f.write_all_at(bytes, o as u64).unwrap();
            drop(f);
            check(&format!("in step {step} at byte {o:#x}"));
        }
    }
    runs
}

/// An update killed after any byte of its commit leaves an executable that runs the old
/// program, the new one, or the "interrupted" stub: never one that the kernel cannot start.
/// Every prefix of the commit is run, for updates that grow a segment, add a data object
/// (a new segment), with `-g`, and with libc.
#[test]
fn every_prefix_of_a_commit_runs_the_old_program_the_new_one_or_the_refusal() {
    let scenarios: [(&str, &[&str], &[&str]); 4] = [
        ("new data object", &["--freestanding"], &[]),
        ("the text segment grows", &["--freestanding"], &[]),
        ("with -g", &["--freestanding", "-g"], &[]),
        ("with libc", &[], &["--libc"]),
    ];
    std::thread::scope(|s| {
        for (what, flags, gen_flags) in scenarios {
            s.spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                let src = dir.path().join("src");
                let gen = zerolink()
                    .args(["gen", "--functions", "200", "--files", "2", "-o"])
                    .arg(&src)
                    .args(gen_flags)
                    .output()
                    .unwrap();
                assert!(gen.status.success());
                let files = clif_files(&src);
                let out = dir.path().join("out");
                build_ok(&files, &out, flags);
                let old_run = run(&out);
                let old = std::fs::read(&out).unwrap();
                let text = std::fs::read_to_string(&files[1]).unwrap();
                let edited = match what {
                    "the text segment grows" => {
                        // A new function of some 40 instructions: the text segment grows.
                        let big: String = (0..20)
                            .map(|i| {
                                format!(
                                    "    v{} = iconst.i64 {i}\n    v{} = iadd v{}, v{}\n",
                                    2 * i + 1,
                                    2 * i + 2,
                                    2 * i,
                                    2 * i + 1
                                )
                            })
                            .collect();
                        format!(
                            "function %grown(i64) -> i64 {{\nblock0(v0: i64):\n{big}    return v40\n}}\n\n{text}"
                        )
                    }
                    _ => format!("; data: %extra_obj writable = i64 7\n{text}"),
                };
                std::fs::write(&files[1], edited).unwrap();
                settle_inputs();
                let log = dir.path().join("commit.log");
                let o = Command::new(env!("CARGO_BIN_EXE_zerolink"))
                    .arg("build")
                    .args(&files)
                    .args(flags)
                    .arg("-o")
                    .arg(&out)
                    .env("ZEROLINK_TEST_COMMIT_LOG", &log)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
                let new_run = run(&out);
                let log = std::fs::read(&log).expect("the update logged its commit");
                let work = dir.path().join("work");
                let ok = |status: i32, stdout: &[u8], stderr: &[u8]| {
                    (status == old_run.status && stdout == old_run.stdout)
                        || (status == new_run.status && stdout == new_run.stdout)
                        || (status == 126 && String::from_utf8_lossy(stderr).contains("interrupted"))
                };
                let runs = replay_every_prefix(&old, &log, &work, &ok);
                assert!(runs > 10, "{what}: only {runs} distinct prefixes");
            });
        }
    });
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("mount runs");
        assert!(
            o.status.success(),
            "this test mounts a tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        SmallDisk(at.to_path_buf())
    }

    /// Fill what is left with a file.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0xa5u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let mut small = vec![0xa5u8; 4096];
        while !small.is_empty() {
            if f.write_all(&small).is_err() {
                small.truncate(small.len() / 2);
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk is an ordinary error ("No space left on device", exit 1) for a full build and
/// for an in-place update, never SIGBUS, and OUT stays byte-for-byte as it was.
#[test]
fn a_full_disk_is_an_error_and_out_stays_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let gen = zerolink()
        .args(["gen", "--functions", "3000", "--files", "3", "-o"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(gen.status.success());
    let mut files = clif_files(&src);
    let disk = SmallDisk::mount(&dir.path().join("disk"), "4M");
    let out = disk.0.join("prog");
    build_ok(&files, &out, &["--freestanding"]);
    let before = std::fs::read(&out).unwrap();
    let expected = run(&out);
    disk.fill();
    // An update that needs more room: a 1.5 MB data object.
    let blob = src.join("blob.clif");
    std::fs::write(
        &blob,
        format!("; data: %blob = \"{}\"\n", "x".repeat(1_500_000)),
    )
    .unwrap();
    files.push(blob);
    settle_inputs();
    for extra in [&["--freestanding"][..], &["--freestanding", "--full"]] {
        let o = build(&files, &out, extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(
            stderr.contains("No space left on device") && stderr.contains(&*out.to_string_lossy()),
            "{extra:?}: {stderr}"
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            before,
            "{extra:?}: OUT changed"
        );
        let r = run(&out);
        assert!(r.status == expected.status && r.stdout == expected.stdout);
        let left: Vec<_> = std::fs::read_dir(&disk.0)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{extra:?}: a temporary file was left");
    }
    std::fs::remove_file(disk.0.join("filler")).unwrap();
    build_ok(&files, &out, &["--freestanding"]);
    assert_eq!(run(&out).status, expected.status);
}

/// A symbolic link at OUT is written through, as ld does: full builds, updates and updates
/// of a running target all leave the link a link, and the file it names the new program.
#[test]
fn a_symlinked_output_is_written_through_and_stays_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_program(dir.path(), PROGRAM);
    let target = dir.path().join("real");
    let link = dir.path().join("prog");
    std::os::unix::fs::symlink("real", &link).unwrap();
    let is_link = || {
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    };
    build_ok(&files, &link, &[]);
    assert!(is_link() && target.exists());
    assert!(run_with_stdin(&link, b"x").1.starts_with(b"old\n"));
    // An update while the target runs (it waits on its input): the copy path.
    let mut running = Command::new(&target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let edited = write_program(dir.path(), &PROGRAM.replace("\"old\\n\"", "\"new\\n\""));
    build_ok(&edited, &link, &[]);
    drop(running.stdin.take());
    let _ = running.wait();
    assert!(is_link(), "the update replaced the link by a file");
    assert!(run_with_stdin(&link, b"x").1.starts_with(b"new\n"));
    build_ok(&edited, &link, &["--full"]);
    assert!(is_link(), "the full build replaced the link by a file");
    assert!(run_with_stdin(&target, b"x").1.starts_with(b"new\n"));
}

/// Damage outside the table (code, read-only data) is invisible to an update, which reads
/// only what it changes; `zerolink verify` finds it with its place, and `build --verify`
/// rebuilds in full, after which the file verifies again.
#[test]
fn verify_finds_damage_in_code_and_data_and_build_verify_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_program(dir.path(), PROGRAM);
    let out = dir.path().join("out");
    build_ok(&files, &out, &["-g"]);
    let verify = || zerolink().arg("verify").arg(&out).output().unwrap();
    assert!(verify().status.success());
    for name in [".text", ".rodata", ".debug_info"] {
        build_ok(&files, &out, &["-g", "--full"]);
        let (offset, size) = section(&out, name);
        let mut bytes = std::fs::read(&out).unwrap();
        bytes[offset + size / 2] ^= 0x20;
        std::fs::write(&out, bytes).unwrap();
        let v = verify();
        let stderr = String::from_utf8_lossy(&v.stderr);
        assert_eq!(v.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains("file offset"),
            "{name}: {stderr}"
        );
        let o = build(&files, &out, &["-g", "--verify"]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        // (Damaged debug information is found before the whole file is checked: also a
        // full build, with that reason.)
        assert!(
            o.status.success() && stderr.contains("zerolink: full build"),
            "{name}: {stderr}"
        );
        assert!(verify().status.success(), "{name}: not repaired");
        assert!(run_with_stdin(&out, b"x").1.starts_with(b"old\n"));
    }
}

/// `f`, its steps growing the code: `f(x) = x + 3 + steps` at `x = 1`.
fn growing_f(steps: usize) -> String {
    let mut t = String::from(
        "function %f(i64) -> i64 {\nblock0(v0: i64):\n    v1 = iconst.i64 3\n    v2 = iadd v0, v1\n",
    );
    let mut last = 2;
    for _ in 0..steps {
        t += &format!(
            "    v{} = imul v{last}, v0\n    v{} = iadd v{}, v0\n",
            last + 1,
            last + 2,
            last + 1
        );
        last += 2;
    }
    t += &format!("    return v{last}\n}}\n");
    t
}

/// `name`'s value in `.symtab`.
fn symbol_address(exe: &Path, name: &str) -> u64 {
    let o = Command::new("nm").arg(exe).output().expect("nm runs");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            let (a, _, n) = (w.next()?, w.next()?, w.next()?);
            (n == name)
                .then(|| u64::from_str_radix(a, 16).ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no {name} in nm"))
}

/// The bytes of function `name` as objdump shows them (addresses included; the names objdump
/// gives targets are cut, as the old entry of a moved function has none).
fn disassembly(exe: &Path, name: &str) -> String {
    let o = Command::new("objdump")
        .arg(format!("--disassemble={name}"))
        .arg(exe)
        .output()
        .expect("objdump runs");
    let text = String::from_utf8_lossy(&o.stdout);
    let at = text
        .find(&format!("<{name}>:"))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    text[at..]
        .lines()
        .skip(1)
        .map(|l| l.split(" <").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_function_that_outgrows_its_slot_leaves_a_jump_and_no_caller_changes() {
    let dir = tempfile::tempdir().unwrap();
    let callers = format!(
        "{EMIT}
; data: %table = addr %f
function %g(i64) -> i64 {{
    fn0 = %f(i64) -> i64
block0(v0: i64):
    v1 = call fn0(v0)
    return v1
}}
function %main() -> i32 {{
    fn0 = %f(i64) -> i64
    fn1 = %g(i64) -> i64
    fn2 = %emit(i64)
    gv0 = symbol %table
    sig9 = (i64) -> i64
block0:
    v0 = iconst.i64 1
    v1 = call fn0(v0)
    call fn2(v1)
    v2 = call fn1(v0)
    call fn2(v2)
    v3 = symbol_value.i64 gv0
    v4 = load.i64 v3
    v5 = call_indirect sig9, v4(v0)
    call fn2(v5)
    v6 = func_addr.i64 fn0
    v7 = icmp eq v4, v6
    v8 = uextend.i64 v7
    call fn2(v8)
    v9 = iconst.i32 0
    return v9
}}
"
    );
    let q = dir.path().join("q.clif");
    std::fs::write(&q, &callers).unwrap();
    let p = dir.path().join("p.clif");
    let files = vec![p.clone(), q.clone()];
    let out = dir.path().join("out");
    let expect = |steps: u64| -> Vec<u8> {
        let v = 4 + steps;
        [v, v, v, 1].iter().flat_map(|x| x.to_le_bytes()).collect()
    };
    std::fs::write(&p, growing_f(0)).unwrap();
    build_ok(&files, &out, &[]);
    assert_eq!(run(&out).stdout, expect(0));
    let g_before = disassembly(&out, "g");
    let main_before = disassembly(&out, "main");
    // Twice past its slot, then smaller again (in place in the slot it has now).
    for steps in [4, 40, 30] {
        settle_inputs();
        std::fs::write(&p, growing_f(steps)).unwrap();
        let stats = stats_build(&files, &out, &[]);
        let moved = if steps == 30 { "moved 0" } else { "moved 1" };
        assert!(stats.contains(moved), "{steps} steps:\n{stats}");
        assert!(stats.contains("compiled 1,"), "{steps} steps:\n{stats}");
        // Called directly, through `g`, through the pointer in data; and `&f` is the same
        // address in code and in data.
        assert_eq!(run(&out).stdout, expect(steps as u64), "{steps} steps");
        // Nothing that refers to `f` was written: its callers are byte for byte as before.
        assert_eq!(disassembly(&out, "g"), g_before, "{steps} steps");
        assert_eq!(disassembly(&out, "main"), main_before, "{steps} steps");
        check_readelf(&out, &["--wide", "-a"]);
        let v = zerolink().arg("verify").arg(&out).output().unwrap();
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    }
    // `g` calls the old entry, which jumps to where `f` is now.
    let f = symbol_address(&out, "f");
    let g = disassembly(&out, "g");
    let call = g
        .lines()
        .find_map(|l| l.split("call").nth(1))
        .and_then(|rest| u64::from_str_radix(rest.split_whitespace().next()?, 16).ok())
        .unwrap_or_else(|| panic!("no call in:\n{g}"));
    assert_ne!(call, f, "{g}");
    let jump = Command::new("objdump")
        .args(["-d", &format!("--start-address={call:#x}")])
        .arg(format!("--stop-address={:#x}", call + 5))
        .arg(&out)
        .output()
        .unwrap();
    let jump = String::from_utf8_lossy(&jump.stdout);
    assert!(jump.contains(&format!("jmp    {f:x}")), "{jump}");
    // Named in `.symtab`, so objdump, perf and gdb say where calls go.
    assert_eq!(symbol_address(&out, "f.entry"), call);
    assert!(jump.contains("<f.entry>:"), "{jump}");
    // Gone, with its callers: the next build runs, and nothing is left of the jump.
    settle_inputs();
    std::fs::write(&p, "").unwrap();
    std::fs::write(
        &q,
        format!("{EMIT}\nfunction %main() -> i32 {{\n    fn0 = %emit(i64)\nblock0:\n    v0 = iconst.i64 9\n    call fn0(v0)\n    v1 = iconst.i32 0\n    return v1\n}}\n"),
    )
    .unwrap();
    build_ok(&files, &out, &[]);
    assert_eq!(run(&out).stdout, 9u64.to_le_bytes());
    let nm = Command::new("nm").arg(&out).output().unwrap();
    assert!(!String::from_utf8_lossy(&nm.stdout).contains("f.entry"));
    // With debug information, callers are patched instead (gdb's `step` follows no jump).
    std::fs::write(&q, &callers).unwrap();
    std::fs::write(&p, growing_f(0)).unwrap();
    build_ok(&files, &out, &["-g"]);
    let g_before = disassembly(&out, "g");
    settle_inputs();
    std::fs::write(&p, growing_f(40)).unwrap();
    let stats = stats_build(&files, &out, &["-g"]);
    assert!(stats.contains("moved 1"), "{stats}");
    assert_eq!(run(&out).stdout, expect(40));
    assert_ne!(disassembly(&out, "g"), g_before);
}

/// An update never launders damage: a flipped bit in code beside the function an edit
/// rewrites (in the same checksummed page) is found before the page's checksum is replaced,
/// and the build is a full one, with the reason; the program is right and `verify` sound.
#[test]
fn an_update_beside_damaged_code_rebuilds_in_full_instead_of_laundering_it() {
    let dir = tempfile::tempdir().unwrap();
    let program = |k: i64| {
        format!(
            "function %g(i64) -> i64 {{\nblock0(v0: i64):\n    v1 = iconst.i64 74565\n    \
             v2 = iadd v0, v1\n    return v2\n}}\n\n\
             function %f(i64) -> i64 {{\nblock0(v0: i64):\n    v1 = iconst.i64 {k}\n    \
             v2 = iadd v0, v1\n    return v2\n}}\n\n\
             function %main() -> i32 {{\n    fn0 = %f(i64) -> i64\n    fn1 = %g(i64) -> i64\n\
             block0:\n    v0 = iconst.i64 1\n    v1 = call fn0(v0)\n    v2 = call fn1(v0)\n    \
             v3 = iadd v1, v2\n    v4 = ireduce.i32 v3\n    return v4\n}}\n"
        )
    };
    let files = write_program(dir.path(), &program(3));
    let out = dir.path().join("out");
    build_ok(&files, &out, &[]);
    let status = || Command::new(&out).status().unwrap().code();
    assert_eq!(status(), Some((1 + 3 + 1 + 74565) & 0xff));
    // Flip a bit in g's constant (a 32-bit immediate): same page as f.
    let o = Command::new("readelf")
        .args(["-WS"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = text.lines().find(|l| l.contains(" .text ")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let i = fields.iter().position(|f| *f == ".text").unwrap();
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    let (addr, offset) = (hex(fields[i + 2]), hex(fields[i + 3]));
    let g = symbol_address(&out, "g");
    let f = symbol_address(&out, "f");
    assert_eq!(g / 4096, f / 4096, "f and g share a page");
    let mut bytes = std::fs::read(&out).unwrap();
    let at = (offset + (g - addr)) as usize;
    let code = &bytes[at..at + 32];
    let imm = code
        .windows(4)
        .position(|w| w == 74565u32.to_le_bytes())
        .expect("g's constant is in its code");
    bytes[at + imm] ^= 0x04;
    std::fs::write(&out, &bytes).unwrap();
    assert_ne!(
        status(),
        Some((1 + 3 + 1 + 74565) & 0xff),
        "the damage changes what g computes"
    );
    support::settle_inputs();
    std::fs::write(&files[0], program(5)).unwrap();
    let o = build(&files, &out, &["--stats"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("full build") && stderr.contains("damaged"),
        "the damage was laundered: {stderr}"
    );
    assert_eq!(status(), Some((1 + 5 + 1 + 74565) & 0xff));
    let v = zerolink().arg("verify").arg(&out).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

/// Every byte of the ELF header and of the program header table in force, flipped one at a
/// time (xor 0x08): `verify` never calls the file sound, and the next build (a no-op one,
/// inputs unchanged) rebuilds in full with the reason and leaves a program that runs.
#[test]
fn damage_to_the_elf_and_program_headers_is_found_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_program(dir.path(), PROGRAM);
    let out = dir.path().join("out");
    build_ok(&files, &out, &[]);
    let good = std::fs::read(&out).unwrap();
    let phoff = u64::from_le_bytes(good[0x20..0x28].try_into().unwrap()) as usize;
    let damaged = dir.path().join("damaged");
    let offsets: Vec<usize> = (0..64).chain(phoff..phoff + 16 * 56).collect();
    for (k, &at) in offsets.iter().enumerate() {
        let mut bytes = good.clone();
        bytes[at] ^= 0x08;
        std::fs::write(&damaged, &bytes).unwrap();
        let v = zerolink().arg("verify").arg(&damaged).output().unwrap();
        assert!(
            !v.status.success(),
            "offset {at:#x}: verify calls a damaged header sound"
        );
        if k % 32 == 0 {
            let o = build(&files, &damaged, &[]);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success() && stderr.contains("full build"),
                "offset {at:#x}: {stderr}"
            );
            assert!(
                run_with_stdin(&damaged, b"x").1.starts_with(b"old\n"),
                "offset {at:#x}: the rebuilt program does not run"
            );
        }
    }
}
