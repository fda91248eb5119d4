//! `-g` in a build: the DWARF units of the program's files, copied from the previous build
//! where nothing changed and written again elsewhere (see `crate::debug`), and the unwind
//! tables of the functions placed.

use super::place::Builder;
use super::*;

impl Builder<'_> {
    /// The debug sections: units of files that did not change are copied from the previous
    /// build, the others are written again (see `debug.rs`).
    pub(super) fn debug_info(&mut self, mode: &Mode) -> Result<()> {
        use crate::debug::{FunctionLines, SourceFile, UnitSource};
        let files: Vec<SourceFile> = self
            .program
            .files
            .iter()
            .map(|f| SourceFile::new(&f.path))
            .collect();
        let (sections, index) = {
            let previous = match mode {
                Mode::Update => {
                    Some(previous_debug(&self.image).map_err(BackendError::PreviousDebugInfo)?)
                }
                Mode::Full { .. } => None,
            };
            let old_digests: HashMap<u64, u64> = Manifest::decode(self.image.manifest())
                .unwrap_or_default()
                .files
                .iter()
                .map(|r| (r.path_hash, r.digest))
                .collect();
            let mut compiled_files = HashSet::new();
            for l in self.lines.values() {
                compiled_files.insert(l.file);
            }
            // A file's unit is copied if the file is as it was and none of its functions was
            // compiled again (a callee's new signature recompiles callers in other files).
            let copied: Vec<Option<&crate::debug::UnitEntry>> = self
                .program
                .files
                .iter()
                .zip(&files)
                .enumerate()
                .map(|(i, (f, sf))| {
                    let same = old_digests.get(&inputs::path_hash(&f.path)) == Some(&f.digest);
                    let p = previous
                        .as_ref()
                        .filter(|_| same && !compiled_files.contains(&i));
                    p.and_then(|p| p.unit(sf))
                })
                .collect();
            let kept: Vec<&crate::debug::UnitEntry> = copied.iter().flatten().copied().collect();
            let old_rows = match &previous {
                Some(p) if kept.len() < files.len() => p
                    .rows_outside(&kept)
                    .map_err(BackendError::PreviousDebugInfo)?,
                _ => HashMap::new(),
            };
            // Functions of rewritten units that this build did not compile: placed as before,
            // rows from the previous line tables, moved to the function's line now.
            let mut carried: Vec<FunctionLines> = Vec::new();
            // Only the files whose units are rewritten are visited, not the whole program.
            let rewritten = self
                .program
                .files
                .iter()
                .zip(&copied)
                .filter(|(_, c)| c.is_none())
                .flat_map(|(file, _)| file.functions.clone());
            for i in rewritten {
                let f = &self.program.functions[i];
                if self.lines.contains_key(&i) {
                    continue;
                }
                let placement = self
                    .image
                    .symbols()
                    .lookup(&f.name)
                    .and_then(|id| self.image.symbols().get(id).placement());
                let (Some(p), Some(rows)) = (
                    placement,
                    placement.and_then(|p| old_rows.get(&p.slot.addr)),
                ) else {
                    return Err(BackendError::PreviousDebugInfo(format!(
                        "no line table for `{}`",
                        f.name
                    )));
                };
                carried.push(FunctionLines {
                    name: f.name.clone(),
                    file: f.file,
                    line: f.line as u32,
                    addr: p.slot.addr,
                    size: p.size,
                    rows: rows
                        .iter()
                        .map(|&(off, delta)| (off, (i64::from(f.line as u32) + delta) as u32))
                        .collect(),
                });
            }
            let mut by_file: Vec<Vec<&FunctionLines>> = vec![Vec::new(); files.len()];
            for l in self.lines.values().chain(&carried) {
                by_file[l.file].push(l);
            }
            let units: Vec<UnitSource<'_>> = files
                .iter()
                .zip(by_file)
                .zip(&copied)
                .map(|((file, mut functions), copied)| match copied {
                    Some(entry) => UnitSource::Copied(entry),
                    None => {
                        functions.sort_by_key(|l| l.addr);
                        UnitSource::Fresh { file, functions }
                    }
                })
                .collect();
            crate::debug::sections(&units, previous.as_ref(), self.jobs)?
        };
        self.image.set_extra_sections(sections, index);
        self.frames.sort_by_key(|(addr, _)| *addr);
        if let Some(frames) = crate::debug::eh_frame(self.env.isa, &self.frames)? {
            self.image.set_eh_frame(frames);
        }
        Ok(())
    }
}
