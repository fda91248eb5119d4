//! Comparing the files that were read with the table, through the session: each file is a
//! unit whose digest says whether it changed at all, and each definition of a changed file
//! is checked by name and hash. What the files that were not read define stays untouched.

use super::*;
use crate::session::{Check, UnitStatus};

/// What an update must compile: the definitions of the files read that are new or changed.
pub(super) struct Diff<'p> {
    pub(super) functions: Vec<usize>,
    pub(super) data: Vec<&'p DataDef>,
}

/// One pass over the files that were read: each of their names is looked up once.
pub(super) fn diff<'p>(
    program: &'p Program,
    session: &mut Session,
    units: &[UnitId],
) -> Result<Diff<'p>> {
    let mut diff = Diff {
        functions: Vec::new(),
        data: Vec::new(),
    };
    for (i, file) in program.files.iter().enumerate().filter(|(_, f)| f.loaded) {
        let u = units[i];
        // Touched, not changed: it defines exactly what it did last time.
        if session.set_unit_contents(u, Some(file.digest), file.stat)? == UnitStatus::Unchanged {
            continue;
        }
        let duplicate = |other: UnitId, name: &str, line: usize| {
            // Defined by precompiled code (a weak definition the program now overrides, a weak
            // reference that was 0): a full build decides which definition stands.
            let Some(other) = program.files.get(other.index()) else {
                return BackendError::NeedsFullBuild(FullReason::Precompiled(format!(
                    "the program now defines `{name}`, which precompiled code defined"
                )));
            };
            BackendError::DuplicateDefinition {
                name: name.to_string(),
                first: SourcePos {
                    file: other.path.clone(),
                    line: line_of_definition(&other.path, name).unwrap_or(1),
                },
                second: SourcePos {
                    file: file.path.clone(),
                    line,
                },
            }
        };
        for i in file.functions.clone() {
            let f = &program.functions[i];
            match session.check(u, &f.name, SymbolKind::Function, f.hash)? {
                Check::Compile => diff.functions.push(i),
                Check::Keep(_) => {}
                Check::Elsewhere(other) => return Err(duplicate(other, &f.name, f.line)),
            }
        }
        for d in &program.data[file.data.clone()] {
            let dir = &d.directive;
            match session.check(u, &dir.name, SymbolKind::Data, d.hash)? {
                Check::Compile => diff.data.push(d),
                Check::Keep(_) => {}
                Check::Elsewhere(other) => return Err(duplicate(other, &dir.name, dir.line)),
            }
        }
    }
    Ok(diff)
}

/// The line of `name`'s definition in a file that was not read: only error messages pay
/// for reading it.
pub(super) fn line_of_definition(path: &Path, name: &str) -> Option<usize> {
    let program = Program::read(&[path.to_path_buf()]).ok()?;
    program.locate(name).map(|p| p.line)
}
