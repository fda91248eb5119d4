//! `toy`: a compiler for the toy language (see `parser.rs`) whose output is an executable,
//! written by zerolink with no object file and no link step. Run it again after an edit and
//! it updates the executable in place, compiling only the functions that changed.
//!
//! ```text
//! cargo run -p toy -- examples/toy/fib.toy -o fib [-g] [--full]
//! ```

mod compile;
mod parser;

use std::path::PathBuf;
use std::process::ExitCode;

use zerolink_backend::{LinkOptions, Mode, ModuleOptions, TargetOptions, ZerolinkModule};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let (mut input, mut output, mut debug_info, mut force_full) = (None, None, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-o" => output = args.next().map(PathBuf::from),
            "-g" => debug_info = true,
            "--full" => force_full = true,
            _ if input.is_none() => input = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument `{a}`")),
        }
    }
    let (Some(input), Some(output)) = (input, output) else {
        return Err("usage: toy FILE.toy -o OUT [-g] [--full]".into());
    };
    let src = std::fs::read_to_string(&input)
        .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let functions = parser::parse(&src)
        .map_err(|e| format!("{}:{}: {}", input.display(), e.line, e.message))?;

    // The one line that differs from an `ObjectModule` compiler: the module writes the
    // executable, and updates the one a previous build left at `output`.
    let isa = TargetOptions::default().isa().map_err(|e| e.to_string())?;
    let opts = ModuleOptions {
        debug_info,
        force_full,
        link: LinkOptions::default(),
        ..Default::default()
    };
    let mut module = ZerolinkModule::open(isa, &output, opts).map_err(|e| e.to_string())?;

    // The whole file is one unit: if its text is as it was, nothing needs defining.
    let fingerprint = xxhash_rust::xxh3::xxh3_64(src.as_bytes());
    let unit = module
        .begin_unit(&input.to_string_lossy(), Some(fingerprint))
        .map_err(|e| e.to_string())?;
    let source = if debug_info {
        Some(module.add_source_file(&input).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let counts = if unit == zerolink_backend::UnitStatus::Unchanged {
        compile::Counts {
            compiled: 0,
            kept: functions.len(),
        }
    } else {
        compile::compile(&mut module, &functions, source)?
    };
    let report = module.finish().map_err(|e| e.to_string())?;
    match report.mode {
        Mode::Update => eprintln!(
            "toy: updated {} in place: compiled {}, kept {}",
            output.display(),
            counts.compiled,
            counts.kept
        ),
        Mode::Full { reason } => eprintln!(
            "toy: built {}: {} functions{}",
            output.display(),
            counts.compiled,
            reason
                .map(|r| format!(" (full build: {r})"))
                .unwrap_or_default()
        ),
    }
    Ok(())
}
