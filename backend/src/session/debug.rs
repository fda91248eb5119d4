//! Debug information in a session: a compile unit per source file, kept across updates.
//!
//! A source file's unit is copied from the previous build when nothing in it changed (its unit
//! was kept, or nothing was placed in it and nothing removed); the others are written again,
//! with the line rows of their functions that this build did not compile taken from the
//! previous line tables (see `crate::debug`). Unwind tables cover every function placed.

use std::collections::{HashMap, HashSet};

use super::place::FunctionDebug;
use super::*;
use crate::debug::{FunctionLines, SourceFile, UnitEntry, UnitSource, Unwind};

/// A source file registered with [`Session::add_source`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceId(pub(crate) u32);

impl SourceId {
    /// Position among the session's sources, in the order they were added.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Default)]
pub(super) struct DebugState {
    /// Source files, with the unit that is all of their contents (if there is one).
    sources: Vec<(PathBuf, Option<UnitId>)>,
    /// Line tables of the functions placed in this build.
    pub(super) lines: HashMap<SymbolId, FunctionLines>,
    /// Call-frame information of the functions placed, by address.
    pub(super) frames: Vec<(u64, Unwind)>,
    /// The sections were written (they are written once).
    written: bool,
}

impl DebugState {
    pub(super) fn written(&self) -> bool {
        self.written
    }
}

impl Session {
    /// Register a source file for debug information, as the debugger should find it (a
    /// relative path is taken from the current directory). With `unit`, the file is exactly
    /// that unit's contents, so its compile unit is copied whenever the unit is kept.
    pub fn add_source(&mut self, path: &Path, unit: Option<UnitId>) -> SourceId {
        self.debug.sources.push((path.to_path_buf(), unit));
        SourceId(self.debug.sources.len() as u32 - 1)
    }

    /// Say where function `id`, placed in this build, is in its source (for front ends that
    /// learn it after defining the function).
    pub fn set_function_debug(&mut self, id: SymbolId, d: FunctionDebug) {
        let Some(p) = self.image.symbols().get(id).placement() else {
            return;
        };
        let lines = FunctionLines {
            name: self.image.symbols().name(id),
            file: d.source.index(),
            line: d.line,
            addr: p.slot.addr,
            size: p.size,
            rows: d.rows,
        };
        self.debug.lines.insert(id, lines);
    }

    /// Write the debug sections and `.eh_frame` now, rather than in `finish`: for a front end
    /// that wants to fall back to a full build when the previous debug information cannot be
    /// built on (`BackendError::PreviousDebugInfo`); the session is still usable then.
    /// `functions_of` names the functions a rewritten source has now, with their first lines.
    pub fn write_debug_info(
        &mut self,
        functions_of: &mut dyn FnMut(SourceId) -> Vec<(String, u32)>,
    ) -> Result<()> {
        if !self.debug_info || self.debug.written {
            return Ok(());
        }
        let files: Vec<SourceFile> = self
            .debug
            .sources
            .iter()
            .map(|(p, _)| SourceFile::new(p).with_language(self.language))
            .collect();
        let (sections, index) = {
            let previous = match self.mode {
                Mode::Update => {
                    Some(previous_debug(&self.image).map_err(BackendError::PreviousDebugInfo)?)
                }
                Mode::Full { .. } => None,
            };
            let placed_in: HashSet<usize> = self.debug.lines.values().map(|l| l.file).collect();
            // A source's unit is copied if nothing in it can have changed.
            let copied: Vec<Option<&UnitEntry>> = self
                .debug
                .sources
                .iter()
                .zip(&files)
                .enumerate()
                .map(|(i, ((_, unit), sf))| {
                    let same = !placed_in.contains(&i)
                        && match unit {
                            Some(u) => self.units.status(*u) == UnitStatus::Unchanged,
                            None => !self.units.removed_any(),
                        };
                    previous.as_ref().filter(|_| same).and_then(|p| p.unit(sf))
                })
                .collect();
            let kept: Vec<&UnitEntry> = copied.iter().flatten().copied().collect();
            let old_rows = match &previous {
                Some(p) if kept.len() < files.len() => p
                    .rows_outside(&kept)
                    .map_err(BackendError::PreviousDebugInfo)?,
                _ => HashMap::new(),
            };
            // Functions of rewritten units that this build did not compile: placed as before,
            // rows from the previous line tables, moved to the function's line now.
            let mut carried: Vec<FunctionLines> = Vec::new();
            if previous.is_some() {
                for (i, _) in copied.iter().enumerate().filter(|(_, c)| c.is_none()) {
                    for (name, line) in functions_of(SourceId(i as u32)) {
                        let id = self.image.symbols().lookup(&name);
                        if id.is_some_and(|id| self.debug.lines.contains_key(&id)) {
                            continue;
                        }
                        let placement = id.and_then(|id| self.image.symbols().get(id).placement());
                        let (Some(p), Some(rows)) = (
                            placement,
                            placement.and_then(|p| old_rows.get(&p.slot.addr)),
                        ) else {
                            return Err(BackendError::PreviousDebugInfo(format!(
                                "no line table for `{name}`"
                            )));
                        };
                        carried.push(FunctionLines {
                            name,
                            file: i,
                            line,
                            addr: p.slot.addr,
                            size: p.size,
                            rows: rows
                                .iter()
                                .map(|&(off, delta)| (off, (i64::from(line) + delta) as u32))
                                .collect(),
                        });
                    }
                }
            }
            let mut by_file: Vec<Vec<&FunctionLines>> = vec![Vec::new(); files.len()];
            for l in self.debug.lines.values().chain(&carried) {
                if let Some(list) = by_file.get_mut(l.file) {
                    list.push(l);
                }
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
        self.debug.frames.sort_by_key(|(addr, _)| *addr);
        if let Some(frames) = crate::debug::eh_frame(&*self.isa, &self.debug.frames)? {
            self.image.set_eh_frame(frames);
        }
        self.debug.written = true;
        Ok(())
    }
}
