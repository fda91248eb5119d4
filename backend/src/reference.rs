//! The separate-link reference path: the same program through cranelift-object into `.o`
//! files, then the system linker.
//!
//! This is what zerolink replaces, kept as a yardstick: tests build every program both ways and
//! require the same behaviour, and benchmarks time both. The freestanding runtime comes from
//! the image crate as `runtime.o`, so both executables run exactly the same `_start` and
//! built-ins.

use std::path::{Path, PathBuf};
use std::process::Command;

use cranelift_object::{ObjectBuilder, ObjectModule};

use crate::clif::Program;
use crate::error::{BackendError, Result};
use crate::libs::LinkOptions;
use crate::target::TargetOptions;

/// The program as one relocatable object file.
pub fn object_bytes(program: &Program, target: &TargetOptions) -> Result<Vec<u8>> {
    let isa = target.isa()?;
    let builder = ObjectBuilder::new(isa, "zerolink", cranelift_module::default_libcall_names())?;
    let mut module = ObjectModule::new(builder);
    program.define_in(&mut module)?;
    module
        .finish()
        .emit()
        .map_err(|e| BackendError::Link(format!("cannot write the object file: {e}")))
}

/// One object file per input file, as a compiler writes one per compilation unit; `only`
/// limits it to those files (an edit). Files are compiled on `jobs` threads, as `make -j`
/// would. Returns the objects' paths and where the time went (summed over threads).
pub fn objects(
    program: &Program,
    target: &TargetOptions,
    dir: &Path,
    only: Option<&[usize]>,
    jobs: usize,
) -> Result<(Vec<PathBuf>, crate::clif::Timings)> {
    let paths: Vec<PathBuf> = program
        .files
        .iter()
        .enumerate()
        .map(|(i, file)| {
            let stem = file
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("unit{i}"));
            dir.join(format!("{stem}.o"))
        })
        .collect();
    let todo: Vec<usize> = (0..program.files.len())
        .filter(|i| only.is_none_or(|o| o.contains(i)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<crate::clif::Timings>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.clamp(1, todo.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = todo.get(k) else { break out };
                        out.push(object(program, target, i, &paths[i]));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("object workers do not panic"))
            .collect()
    });
    let mut timings = crate::clif::Timings::default();
    for r in results {
        let t = r?;
        timings.parse += t.parse;
        timings.codegen += t.codegen;
        timings.write += t.write;
    }
    Ok((paths, timings))
}

/// The object file of input file `i`.
fn object(
    program: &Program,
    target: &TargetOptions,
    i: usize,
    path: &Path,
) -> Result<crate::clif::Timings> {
    let mut timings = crate::clif::Timings::default();
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let builder = ObjectBuilder::new(
        target.isa()?,
        stem,
        cranelift_module::default_libcall_names(),
    )?;
    let mut module = ObjectModule::new(builder);
    program.define_files_in(&mut module, |f| f == i, &mut timings)?;
    let t = std::time::Instant::now();
    let bytes = module
        .finish()
        .emit()
        .map_err(|e| BackendError::Link(format!("cannot write the object file: {e}")))?;
    std::fs::write(path, bytes)
        .map_err(|e| BackendError::Link(format!("{}: {e}", path.display())))?;
    timings.write += t.elapsed();
    Ok(timings)
}

/// Link `objects` plus zerolink's runtime into `output` with `linker` (`cc` by default, or any
/// compiler driver; `extra_args` may hold `-fuse-ld=...`). Freestanding: no libc, static;
/// otherwise a normal dynamically linked program with the `-l` libraries.
pub fn link(
    objects: &[PathBuf],
    output: &Path,
    work_dir: &Path,
    linker: &str,
    link: &LinkOptions,
    extra_args: &[String],
) -> Result<()> {
    let runtime = work_dir.join("zerolink-runtime.o");
    let bytes = zerolink_image::runtime::relocatable_object(link.freestanding)
        .map_err(|e| BackendError::Link(format!("cannot write the runtime object: {e}")))?;
    std::fs::write(&runtime, bytes)
        .map_err(|e| BackendError::Link(format!("{}: {e}", runtime.display())))?;
    let mut cmd = Command::new(linker);
    if link.freestanding {
        cmd.args(["-nostdlib", "-static", "-no-pie"]);
    } else {
        // zerolink writes a fixed-address executable: compare with the same kind (and take
        // objects compiled without -fPIC, as zerolink does).
        cmd.arg("-no-pie");
    }
    cmd.args(["-Wl,-z,noexecstack", "-o"])
        .arg(output)
        .args(objects)
        .arg(&runtime);
    for dir in &link.search_dirs {
        cmd.arg("-L").arg(dir);
    }
    if link.prefer_static {
        cmd.arg("-Wl,-Bstatic");
    }
    for lib in &link.libraries {
        cmd.arg(format!("-l{lib}"));
    }
    if link.prefer_static {
        cmd.arg("-Wl,-Bdynamic");
    }
    cmd.args(extra_args);
    let out = cmd
        .output()
        .map_err(|e| BackendError::Link(format!("cannot run `{linker}`: {e}")))?;
    if !out.status.success() {
        return Err(BackendError::Link(format!(
            "`{linker}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Build `program` the separate way into `output`: one object, then `cc` with it and the
/// precompiled `objects` (objects and archives, in order).
pub fn build(
    program: &Program,
    objects: &[PathBuf],
    target: &TargetOptions,
    link_options: &LinkOptions,
    output: &Path,
) -> Result<()> {
    let dir = tempfile::tempdir()
        .map_err(|e| BackendError::Link(format!("cannot make a temporary directory: {e}")))?;
    let object = dir.path().join("program.o");
    std::fs::write(&object, object_bytes(program, target)?)
        .map_err(|e| BackendError::Link(format!("{}: {e}", object.display())))?;
    let mut all = vec![object];
    all.extend(objects.iter().cloned());
    link(&all, output, dir.path(), "cc", link_options, &[])
}
