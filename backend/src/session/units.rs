//! Units: what a front end groups its definitions into (a source file, a codegen unit), and
//! how a session decides, with as little work as the edit, what must be compiled.
//!
//! The table keeps, per unit, a record (see `inputs.rs`): a key (the hash of its name), the
//! fingerprint of its contents, stat data for units that are files, its unit *number* (which
//! every symbol it defines carries in the table) and how many definitions it has.
//!
//! - A unit whose fingerprint (or, for a file, stat data) is as recorded is **kept**: nothing
//!   of it is looked at, its record is copied. O(1).
//! - In a **changed** unit, each definition is looked up by name once ([`Session::check`]):
//!   its fingerprint against the symbol's, so only changed definitions are compiled.
//! - What is **gone** is decided from counts: the definitions the changed and dropped units had
//!   last time against those found again. Only when they differ is the table scanned, in
//!   [`Session::sweep`], for the definitions no unit named this time.
//!
//! Invariant: a definition belongs to exactly one unit; a name found in a kept unit and
//! defined again in another is a duplicate definition ([`Check::Elsewhere`]).

use std::collections::{HashMap, HashSet};

use super::*;
use crate::inputs::{FileRecord, FileStat};

/// A unit of this session, in the order the front end named them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnitId(pub(crate) u32);

impl UnitId {
    /// Position among the session's units, in the order they were named.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What the previous build knew of a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitStatus {
    /// Not in the previous build (or a full build): define everything in it.
    New,
    /// In the previous build with other contents: define everything in it; only what changed
    /// is compiled.
    Changed,
    /// As it was: define nothing in it, its definitions stay as they are.
    Unchanged,
}

/// What to do with one definition of a changed unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// New or changed: compile it and define it.
    Compile,
    /// Its fingerprint is the one in the table: it stays as it is (this is its symbol).
    Keep(SymbolId),
    /// A unit that is kept defines it too: a duplicate definition.
    Elsewhere(UnitId),
}

struct UnitState {
    key: u64,
    number: u32,
    digest: u64,
    stat: FileStat,
    definitions: u32,
    previous: Option<FileRecord>,
    status: UnitStatus,
}

#[derive(Default)]
pub(super) struct Units {
    /// The previous build's records, by key.
    old: HashMap<u64, FileRecord>,
    /// Old records in their order, to find the dropped ones.
    old_list: Vec<FileRecord>,
    list: Vec<UnitState>,
    claimed: HashSet<u64>,
    by_number: HashMap<u32, u32>,
    next_number: u32,
    /// Definitions found again, by the unit number they had.
    found: HashMap<u32, u32>,
    /// Definitions found in another unit than last time: (symbol, old unit number).
    moved: Vec<(SymbolId, u32)>,
    /// Symbols checked or defined in this build (updates only).
    pub(super) seen: HashSet<SymbolId>,
    swept: bool,
    /// The sweep removed something, or a built-in was replaced.
    removed: bool,
    /// What the sweep removed: definitions of the previous build this one did not repeat.
    pub(super) removed_names: Vec<String>,
}

impl Units {
    pub(super) fn previous(manifest: Manifest) -> Units {
        Units {
            old: manifest.files.iter().map(|r| (r.path_hash, *r)).collect(),
            next_number: manifest.next_unit(),
            old_list: manifest.files,
            ..Units::default()
        }
    }

    pub(super) fn nothing_changed(&self) -> bool {
        !self.removed && self.moved.is_empty()
    }

    pub(super) fn definitions(&self) -> usize {
        self.list.iter().map(|u| u.definitions as usize).sum()
    }

    pub(super) fn removed_any(&self) -> bool {
        self.removed
    }

    pub(super) fn status(&self, u: UnitId) -> UnitStatus {
        self.list[u.index()].status
    }

    /// The record of the units to keep in the table for the next build.
    pub(super) fn manifest(&self, started_ns: i64) -> Manifest {
        Manifest {
            files: self
                .list
                .iter()
                .map(|u| FileRecord {
                    path_hash: u.key,
                    digest: u.digest,
                    stat: inputs::to_record(u.stat, started_ns),
                    unit: u.number,
                    definitions: u.definitions,
                })
                .collect(),
        }
    }

    pub(super) fn number(&self, u: UnitId) -> u32 {
        self.list[u.index()].number
    }

    /// Count a definition of `u` (full builds count as they define; updates as they check).
    pub(super) fn count(&mut self, u: UnitId) {
        self.list[u.index()].definitions += 1;
    }
}

impl Session {
    /// The unit called `name` (a path, a module name): the one the previous build knew by
    /// that name, or a new one. Naming a unit twice gives two units.
    pub fn unit(&mut self, name: &[u8]) -> UnitId {
        self.unit_by_key(xxhash_rust::xxh3::xxh3_64(name))
    }

    /// The unit whose name hashes to `key` (see [`Session::unit`]).
    pub fn unit_by_key(&mut self, key: u64) -> UnitId {
        let u = &mut self.units;
        let previous = if u.claimed.insert(key) {
            u.old.get(&key).copied()
        } else {
            None
        };
        let number = match previous {
            Some(r) => r.unit,
            None => {
                u.next_number += 1;
                u.next_number - 1
            }
        };
        let id = UnitId(u.list.len() as u32);
        u.by_number.insert(number, id.0);
        u.list.push(UnitState {
            key,
            number,
            digest: 0,
            stat: FileStat::default(),
            definitions: 0,
            previous,
            status: if previous.is_some() {
                UnitStatus::Changed
            } else {
                UnitStatus::New
            },
        });
        id
    }

    /// Keys of the previous build's units recorded with exactly this stat data (the members
    /// of an archive carry the archive's; a file's device and inode make it unique). None
    /// for the empty stat data of a racily clean record.
    pub fn previous_units_with_stat(&self, stat: &FileStat) -> Vec<u64> {
        if *stat == FileStat::default() {
            return Vec::new();
        }
        self.units
            .old_list
            .iter()
            .filter(|r| r.stat == *stat)
            .map(|r| r.path_hash)
            .collect()
    }

    /// What the previous build recorded for the unit whose name hashes to `key`, without
    /// claiming it.
    pub fn previous_unit_by_key(&self, key: u64) -> Option<&FileRecord> {
        self.units.old.get(&key)
    }

    /// What the previous build recorded for `u` (none for a new unit).
    pub fn previous_unit(&self, u: UnitId) -> Option<&FileRecord> {
        self.units.list[u.index()].previous.as_ref()
    }

    /// The number the table's symbols carry for `u`.
    pub fn unit_number(&self, u: UnitId) -> u32 {
        self.units.number(u)
    }

    /// Keep `u` as the previous build left it, without looking at its contents (a file whose
    /// stat data did not change). `stat` is recorded for next time.
    pub fn keep_unit(&mut self, u: UnitId, stat: FileStat) -> Result<()> {
        let state = &mut self.units.list[u.index()];
        let Some(prev) = state.previous else {
            return Err(BackendError::Module(
                "a unit the previous build did not have cannot be kept".into(),
            ));
        };
        state.digest = prev.digest;
        state.definitions = prev.definitions;
        state.stat = stat;
        state.status = UnitStatus::Unchanged;
        self.check_not_moved_from(u)
    }

    /// Say what `u` contains now: its fingerprint (`None`: unknown, so it is always examined
    /// definition by definition) and, for a file, its stat data. An unchanged unit is kept;
    /// for any other, the front end defines all of it, checking each definition first.
    pub fn set_unit_contents(
        &mut self,
        u: UnitId,
        fingerprint: Option<u64>,
        stat: FileStat,
    ) -> Result<UnitStatus> {
        let update = self.is_update();
        let state = &mut self.units.list[u.index()];
        state.digest = fingerprint.unwrap_or(0);
        state.stat = stat;
        match state.previous {
            Some(prev) if update && fingerprint == Some(prev.digest) => {
                state.definitions = prev.definitions;
                state.status = UnitStatus::Unchanged;
                self.check_not_moved_from(u)?;
            }
            Some(_) => state.status = UnitStatus::Changed,
            None => state.status = UnitStatus::New,
        }
        Ok(self.units.list[u.index()].status)
    }

    /// A kept unit may not lose a definition to another unit of this build.
    fn check_not_moved_from(&self, u: UnitId) -> Result<()> {
        let number = self.units.number(u);
        match self.units.moved.iter().find(|(_, n)| *n == number) {
            Some((id, _)) => Err(BackendError::Image(
                zerolink_image::ImageError::DuplicateDefinition(self.image.symbols().name(*id)),
            )),
            None => Ok(()),
        }
    }

    /// Whether definition `name` of the changed unit `u` must be compiled: its fingerprint
    /// against the table's. Call it once for every definition of a changed unit, before
    /// defining any (a definition not checked counts as gone). `fingerprint` 0 means unknown:
    /// always compile.
    pub fn check(
        &mut self,
        u: UnitId,
        name: &str,
        kind: SymbolKind,
        fingerprint: u64,
    ) -> Result<Check> {
        if !self.is_update() {
            return Ok(Check::Compile);
        }
        if self.units.status(u) == UnitStatus::Unchanged {
            return Err(BackendError::Module(format!(
                "`{name}` is defined in a unit that is unchanged: define nothing in an \
                 unchanged unit, or give the unit a new fingerprint"
            )));
        }
        self.units.count(u);
        let Some(id) = self.image.symbols().lookup(name) else {
            return Ok(Check::Compile);
        };
        let s = self.image.symbols().get(id);
        if s.kind() != kind {
            return Err(FullReason::KindChanged {
                name: name.to_string(),
                was: s.kind().describe(),
                now: kind.describe(),
            }
            .into());
        }
        if !self.units.seen.insert(id) {
            // Checked twice in this build: whoever checked it first defines it.
            let owner = s
                .unit_of()
                .and_then(|n| self.units.by_number.get(&n).copied());
            return Ok(Check::Elsewhere(UnitId(owner.unwrap_or(u.0))));
        }
        if s.placement().is_none() {
            return Ok(Check::Compile);
        }
        if s.builtin() {
            // The program now defines what the image provided: its definition replaces it.
            self.image.remove(id);
            self.units.removed = true;
            return Ok(Check::Compile);
        }
        if let Some(n) = s.unit_of() {
            match self.units.by_number.get(&n).map(|&i| UnitId(i)) {
                Some(other) if self.units.status(other) == UnitStatus::Unchanged => {
                    return Ok(Check::Elsewhere(other));
                }
                _ => {
                    *self.units.found.entry(n).or_default() += 1;
                    let now = self.units.number(u);
                    if n != now {
                        self.image.set_unit(id, Some(now));
                        self.units.moved.push((id, n));
                    }
                }
            }
        }
        Ok(if fingerprint != 0 && s.hash == fingerprint {
            Check::Keep(id)
        } else {
            Check::Compile
        })
    }

    /// Remove every definition that a changed unit had last time and no unit defines now,
    /// and all of those of units the previous build had and this one did not name. Call it
    /// once every unit has been named and every changed unit checked; `finish` calls it too.
    pub fn sweep(&mut self) {
        let u = &mut self.units;
        if u.swept || self.mode != Mode::Update {
            return;
        }
        u.swept = true;
        let revisited: HashSet<u32> = u
            .list
            .iter()
            .filter(|s| s.status == UnitStatus::Changed)
            .map(|s| s.number)
            .chain(
                u.old_list
                    .iter()
                    .filter(|r| !u.claimed.contains(&r.path_hash))
                    .map(|r| r.unit),
            )
            .collect();
        let expected: u64 = u
            .old_list
            .iter()
            .filter(|r| revisited.contains(&r.unit))
            .map(|r| u64::from(r.definitions))
            .sum();
        let found: u64 = revisited
            .iter()
            .map(|n| u64::from(u.found.get(n).copied().unwrap_or(0)))
            .sum();
        if found == expected {
            return;
        }
        let gone: Vec<SymbolId> = self
            .image
            .symbols()
            .iter()
            .filter(|(_, s)| s.placement().is_some() && !s.builtin())
            .filter(|(_, s)| s.unit_of().is_none_or(|n| revisited.contains(&n)))
            .filter(|(id, _)| !u.seen.contains(id))
            .map(|(id, _)| id)
            .collect();
        u.removed |= !gone.is_empty();
        for id in gone {
            // (Named later if something still needs it: see `Session::finish`.)
            u.removed_names.push(self.image.symbols().name(id));
            self.image.remove(id);
        }
    }
}
