//! Comparing the inputs with the table: which definitions are new, changed or gone, without
//! looking at the files that were not read; and the record of the inputs kept for next time.

use super::*;

/// What an update must do: the result of comparing every input with the table.
pub(super) struct Diff<'p> {
    pub(super) gone: Vec<SymbolId>,
    pub(super) functions: Vec<usize>,
    pub(super) data: Vec<&'p DataDef>,
    /// Unchanged definitions found in another file than last time: (symbol, its unit now).
    pub(super) relabel: Vec<(SymbolId, u32)>,
}

pub(super) enum DiffError {
    /// The update cannot be done; a full build can (the reason says why).
    Full(String),
    /// The input is wrong (a name defined twice, one of them in a file that was not read).
    Input(BackendError),
}

/// One pass over the files that were read: each of their names is looked up once. What the
/// files that were not read define is in the table, untouched.
///
/// Whether something is *gone* is decided from counts: the definitions the read files' units
/// had last time (from the manifest) against those found again. Only when they differ is the
/// table scanned to find what is gone.
pub(super) fn diff<'p>(
    program: &'p Program,
    image: &Image,
    manifest: &Manifest,
) -> std::result::Result<Diff<'p>, DiffError> {
    let symbols = image.symbols();
    let unread: HashMap<u32, usize> = program
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.loaded)
        .map(|(i, f)| (f.unit, i))
        .collect();
    // Units whose previous definitions are looked at again: the files that were read, and
    // those that are no longer inputs.
    let revisited: HashSet<u32> = manifest
        .files
        .iter()
        .map(|r| r.unit)
        .filter(|u| !unread.contains_key(u))
        .collect();
    let expected: usize = manifest
        .files
        .iter()
        .filter(|r| revisited.contains(&r.unit))
        .map(|r| r.definitions as usize)
        .sum();
    let old = manifest.by_path();
    let mut found = 0usize;
    let mut diff = Diff {
        gone: Vec::new(),
        functions: Vec::new(),
        data: Vec::new(),
        relabel: Vec::new(),
    };
    for file in program.files.iter().filter(|f| f.loaded) {
        let same = old
            .get(&inputs::path_hash(&file.path))
            .is_some_and(|r| r.digest == file.digest && r.unit == file.unit);
        if same {
            // Touched, not changed: it defines exactly what it did last time.
            found += file.definitions;
            continue;
        }
        let mut look = |name: &str, kind: SymbolKind, hash: u64, line: usize| {
            let Some(id) = symbols.lookup(name) else {
                return Ok(true);
            };
            let s = symbols.get(id);
            if s.kind() != kind {
                return Err(DiffError::Full(format!(
                    "`{name}` changed from a {} to a {}",
                    s.kind().describe(),
                    kind.describe()
                )));
            }
            if s.placement().is_none() {
                return Ok(true);
            }
            if s.builtin() {
                // The program now defines what the image provided: its definition replaces it.
                diff.gone.push(id);
                return Ok(true);
            }
            match s.unit_of() {
                Some(u) if unread.contains_key(&u) => {
                    let other = &program.files[unread[&u]];
                    return Err(DiffError::Input(BackendError::DuplicateDefinition {
                        name: name.to_string(),
                        first: SourcePos {
                            file: other.path.clone(),
                            line: line_of_definition(&other.path, name).unwrap_or(1),
                        },
                        second: SourcePos {
                            file: file.path.clone(),
                            line,
                        },
                    }));
                }
                Some(u) if revisited.contains(&u) => {
                    found += 1;
                    if u != file.unit {
                        diff.relabel.push((id, file.unit));
                    }
                }
                _ => {}
            }
            Ok(s.hash != hash)
        };
        for i in file.functions.clone() {
            let f = &program.functions[i];
            if look(&f.name, SymbolKind::Function, f.hash, f.line)? {
                diff.functions.push(i);
            }
        }
        for d in &program.data[file.data.clone()] {
            if look(
                &d.directive.name,
                SymbolKind::Data,
                d.hash,
                d.directive.line,
            )? {
                diff.data.push(d);
            }
        }
    }
    if found != expected {
        diff.gone.extend(gone_symbols(program, image, &revisited));
    }
    Ok(diff)
}

/// The line of `name`'s definition in a file that was not read: only error messages pay
/// for reading it.
pub(super) fn line_of_definition(path: &Path, name: &str) -> Option<usize> {
    let program = Program::read(&[path.to_path_buf()]).ok()?;
    program.locate(name).map(|p| p.line)
}

/// The record of the inputs kept in the table (see `inputs.rs`): per file, its stat data,
/// the digest of its definitions, its unit and how many definitions it has.
pub(super) fn manifest(program: &Program, started_ns: i64) -> Manifest {
    Manifest {
        files: program
            .files
            .iter()
            .map(|f| FileRecord {
                path_hash: inputs::path_hash(&f.path),
                digest: f.digest,
                stat: inputs::to_record(f.stat, started_ns),
                unit: f.unit,
                definitions: f.definitions as u32,
            })
            .collect(),
    }
}

/// Definitions gone from the input: placed symbols of the revisited units that no file
/// defines now. Scans the table: called only when the counts say something is gone.
pub(super) fn gone_symbols(
    program: &Program,
    image: &Image,
    revisited: &HashSet<u32>,
) -> Vec<SymbolId> {
    image
        .symbols()
        .iter()
        .filter(|(_, s)| s.placement().is_some() && !s.builtin())
        .filter(|(_, s)| s.unit_of().is_none_or(|u| revisited.contains(&u)))
        .filter(|(id, _)| !program.names.contains_key(&image.symbols().name(*id)))
        .map(|(id, _)| id)
        .collect()
}
