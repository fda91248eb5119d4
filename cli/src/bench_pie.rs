//! `zerolink bench pie`: position-independent against fixed-address executables of the same
//! generated program (linked with libc): the full build, one-function updates (the relative
//! relocations rebuilt by each), and start-up plus run time of the executable (the loader
//! applying the relative relocations). One process per run for start-up; builds in process.

use std::time::Instant;

use anyhow::{bail, Result};
use zerolink_backend::driver::{self, Mode};
use zerolink_backend::TargetOptions;

use crate::bench::{generated, median, ms, run_exe};
use crate::gen::edit_function;

pub fn pie(sizes: &[usize], edits: usize, target: &TargetOptions) -> Result<()> {
    let mut rows = Vec::new();
    for &n in sizes {
        let (opts, dir, paths) = generated(n)?;
        let mut row = Vec::new();
        let mut outputs = Vec::new();
        for pie in [false, true] {
            let link = zerolink_backend::LinkOptions {
                pie,
                ..Default::default()
            };
            let out = dir.path().join(if pie { "pie" } else { "fixed" });
            eprint!(
                "{n} functions, {}: full build",
                if pie { "PIE" } else { "fixed" }
            );
            let t = Instant::now();
            let full_opts = driver::BuildOptions {
                force_full: true,
                ..Default::default()
            };
            driver::build(&paths, target, &link, &out, &full_opts)?;
            let full = t.elapsed();
            let mut updates = Vec::new();
            for e in 0..edits {
                eprint!(", edit {e}");
                edit_function(dir.path(), &opts, (n / 2 + e * 7919) % n, e as i64 + 1)?;
                let t = Instant::now();
                let r = driver::build(&paths, target, &link, &out, &Default::default())?;
                updates.push(t.elapsed());
                if !matches!(r.mode, Mode::Update) || r.compiled != 1 {
                    bail!("edit {e} was not a one-function update");
                }
            }
            // Back to the first version, so both executables compute the same thing.
            for e in (0..edits).rev() {
                edit_function(dir.path(), &opts, (n / 2 + e * 7919) % n, 0)?;
            }
            driver::build(&paths, target, &link, &out, &Default::default())?;
            eprintln!(", runs");
            let mut runs = Vec::new();
            let mut output = Vec::new();
            for _ in 0..11 {
                let t = Instant::now();
                output = run_exe(&out)?;
                runs.push(t.elapsed());
            }
            outputs.push(output);
            row.push((full, median(updates), median(runs)));
        }
        if outputs[0] != outputs[1] {
            bail!("the PIE and the fixed-address executable of {n} functions disagree");
        }
        rows.push((n, row));
    }
    println!(
        "PIE against fixed-address executables (libc; milliseconds; updates and runs: medians)"
    );
    println!(
        "\n{:>9} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "functions",
        "full: fixed",
        "full: PIE",
        "update: fixed",
        "update: PIE",
        "run: fixed",
        "run: PIE"
    );
    for (n, r) in rows {
        println!(
            "{n:>9} {:>14.1} {:>14.1} {:>14.2} {:>14.2} {:>14.2} {:>14.2}",
            ms(r[0].0),
            ms(r[1].0),
            ms(r[0].1),
            ms(r[1].1),
            ms(r[0].2),
            ms(r[1].2)
        );
    }
    println!(
        "\nrun: start-up and run of the executable, one process (a PIE's loader applies its\n\
         relative relocations first); update: a one-function edit, in place"
    );
    Ok(())
}
