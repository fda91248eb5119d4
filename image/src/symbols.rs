//! The symbol-resolution table: every symbol the program names, resolved once to a handle.
//!
//! A [`SymbolId`] is an index that stays valid for the life of the executable, across updates;
//! everything else (reference sites, the GOT, `.symtab`) refers to symbols through it, never by
//! name, so a name is looked up exactly once: when it is declared. Symbols are fixed-size
//! records ([`Symbol`]) kept in a [`Records`] array and found by name through an on-disk hash
//! index, so an update reads only the symbols it touches.

use crate::error::{ImageError, Result};
use crate::layout::RegionKind;
use crate::slots::Slot;
use crate::table::{name_hash, Blob, NameIndex, Records};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymbolId(pub u32);

impl SymbolId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    Function,
    Data,
}

impl SymbolKind {
    pub fn describe(self) -> &'static str {
        match self {
            SymbolKind::Function => "function",
            SymbolKind::Data => "data object",
        }
    }
}

/// Visibility in `.symtab`, following the module's linkage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Local,
    Global,
    Weak,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub region: RegionKind,
    pub slot: Slot,
    /// Bytes in use; at most `slot.capacity`.
    pub size: u64,
}

const PLACED: u8 = 1;
const BUILTIN: u8 = 2;
/// Provided by a shared library; `region` then holds the library's index.
const IMPORTED: u8 = 8;
/// Placed at an address inside someone else's bytes (a symbol of a precompiled object's
/// section, `_GLOBAL_OFFSET_TABLE_`): it owns no slot, so nothing is freed when it goes.
const ALIAS: u8 = 16;
/// A whole section of a precompiled object, placed as one definition: `.symtab` shows it as
/// a section symbol, so debuggers name addresses after the functions inside it.
const SECTION: u8 = 32;
/// Some site refers to it the way code refers to a thread-local (sticky until a full build):
/// what tells a shared library's thread-local from its other symbols without a scan.
const TLS_REFERRED: u8 = 64;
/// Some site holds its address in 8 bytes (sticky until a full build): an import so referred
/// to needs a dynamic relocation in data, found by a scan of the sites only then.
const ABS_REFERRED: u8 = 128;
/// Some site reaches it directly, not through the GOT (PC-relative or a 32-bit absolute;
/// sticky until a full build): a shared library's data object so referred to needs a copy
/// in the executable (`R_X86_64_COPY`), decided without a scan.
const DIRECT_REFERRED: u8 = 4;

/// One symbol, as stored in the table (56 bytes, no padding; what few symbols have is in
/// [`Rare`]). Addresses, capacities and
/// sizes are 32-bit: every region window lies below 4 GiB (layout invariant 3).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Symbol {
    /// The name's offset in `.strtab`, up to its NUL.
    name_off: u32,
    kind: u8,
    binding: u8,
    flags: u8,
    region: u8,
    /// Index of the symbol's `.symtab` entry; 0: none.
    pub symtab: u32,
    addr: u32,
    capacity: u32,
    size: u32,
    /// Hash of the input this symbol was built from (0: unknown, always rebuild).
    pub hash: u64,
    /// Hash of a function's signature, so callers can be rechecked when it changes.
    pub sig_hash: u64,
    /// The sites inside this symbol: a contiguous range of the site array with spare room,
    /// live records first (the rest are empty).
    pub sites_first: u32,
    pub sites_cap: u32,
    /// How many sites in functions and data objects refer to it (GOT entries not counted):
    /// whether anything still needs it, without finding what.
    pub refs: u32,
    /// The producer's unit (an input file, a codegen unit) that defines this symbol, plus one
    /// (0: none): what lets an update find out what a changed unit used to define, and who
    /// else defines a name, without reading the units that did not change.
    pub unit: u32,
}

// SAFETY: `repr(C)`, integers only, no padding (size checked).
unsafe impl object::pod::Pod for Symbol {}
const _: () = assert!(std::mem::size_of::<Symbol>() == 56);

impl Symbol {
    pub fn kind(&self) -> SymbolKind {
        if self.kind == 1 {
            SymbolKind::Data
        } else {
            SymbolKind::Function
        }
    }

    pub fn binding(&self) -> Binding {
        match self.binding {
            0 => Binding::Local,
            2 => Binding::Weak,
            _ => Binding::Global,
        }
    }

    pub fn set_binding(&mut self, b: Binding) {
        self.binding = match b {
            Binding::Local => 0,
            Binding::Global => 1,
            Binding::Weak => 2,
        };
    }

    pub fn placement(&self) -> Option<Placement> {
        (self.flags & PLACED != 0).then(|| Placement {
            region: RegionKind::ALL[(self.region as usize).min(crate::layout::REGIONS - 1)],
            slot: Slot {
                addr: u64::from(self.addr),
                capacity: u64::from(self.capacity),
            },
            size: u64::from(self.size),
        })
    }

    pub fn set_placement(&mut self, p: Option<Placement>) {
        match p {
            Some(p) => {
                self.flags |= PLACED;
                self.region = p.region.index() as u8;
                // Below 4 GiB by construction (layout.rs); a wider value is a bug.
                self.addr = u32::try_from(p.slot.addr).expect("addresses are below 4 GiB");
                self.capacity = u32::try_from(p.slot.capacity).expect("slots are below 4 GiB");
                self.size = u32::try_from(p.size).expect("sizes are below 4 GiB");
            }
            None => {
                self.flags &= !PLACED;
                self.addr = 0;
                self.capacity = 0;
                self.size = 0;
            }
        }
    }

    /// Where the symbol's bytes are.
    pub fn addr(&self) -> Option<u64> {
        self.placement().map(|p| p.slot.addr)
    }

    pub fn tls_referred(&self) -> bool {
        self.flags & TLS_REFERRED != 0
    }

    pub fn abs_referred(&self) -> bool {
        self.flags & ABS_REFERRED != 0
    }

    pub fn direct_referred(&self) -> bool {
        self.flags & DIRECT_REFERRED != 0
    }

    pub(crate) fn mark_referred(&mut self, marks: crate::sites::Marks) {
        if marks.tls {
            self.flags |= TLS_REFERRED;
        }
        if marks.abs {
            self.flags |= ABS_REFERRED;
        }
        if marks.direct {
            self.flags |= DIRECT_REFERRED;
        }
    }

    /// The shared library (index into the image's list) that provides this symbol, if any.
    pub fn import(&self) -> Option<u32> {
        (self.flags & IMPORTED != 0).then_some(u32::from(self.region))
    }

    pub fn set_import(&mut self, library: Option<u32>) {
        match library {
            Some(lib) => {
                self.flags |= IMPORTED;
                self.region = lib as u8;
            }
            None => self.flags &= !IMPORTED,
        }
    }

    /// Provided by the image's runtime rather than by the program.
    pub fn unit_of(&self) -> Option<u32> {
        self.unit.checked_sub(1)
    }

    /// Placed inside another definition's bytes, owning no slot (see `Image::define_alias`).
    pub fn alias(&self) -> bool {
        self.flags & ALIAS != 0
    }

    pub fn set_alias(&mut self, a: bool) {
        if a {
            self.flags |= ALIAS;
        } else {
            self.flags &= !ALIAS;
        }
    }

    pub fn section_atom(&self) -> bool {
        self.flags & SECTION != 0
    }

    pub fn set_section_atom(&mut self, a: bool) {
        if a {
            self.flags |= SECTION;
        } else {
            self.flags &= !SECTION;
        }
    }

    /// Address of this imported function's PLT stub (`jmp *GOT`), for code that calls it
    /// with a plain `call rel32` (C objects' `R_X86_64_PLT32`). Kept where a placed symbol
    /// keeps its capacity: an import has no slot.
    pub fn plt(&self) -> Option<u64> {
        (self.flags & IMPORTED != 0 && self.flags & PLACED == 0 && self.capacity != 0)
            .then_some(u64::from(self.capacity))
    }

    pub fn set_plt(&mut self, addr: Option<u64>) {
        if self.flags & PLACED == 0 {
            self.capacity = addr.map_or(0, |a| u32::try_from(a).expect("text is below 4 GiB"));
        }
    }

    pub fn builtin(&self) -> bool {
        self.flags & BUILTIN != 0
    }

    pub fn set_builtin(&mut self, b: bool) {
        if b {
            self.flags |= BUILTIN;
        } else {
            self.flags &= !BUILTIN;
        }
    }
}

/// Counts kept up to date on every change, so reports never scan the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub functions: u32,
    pub data_objects: u32,
    pub got_entries: u32,
}

/// What few symbols have, kept beside the records instead of in every one of them (persisted
/// in the table's body, in id order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rare {
    /// The site of the symbol's GOT entry, plus one (0: none); the site holds the entry's
    /// address (`Image::got_of`).
    pub got_site: u32,
    /// A function that outgrew its slot in an update: the address everything refers to, its
    /// first slot's start, which holds a `jmp` to where it is now (0: none).
    pub entry: u32,
    /// A shared library's data object copied into the executable's `.bss`
    /// (`R_X86_64_COPY`): the library's index plus one (0: not a copy).
    pub copy: u32,
    /// [`RARE_IFUNC`], [`RARE_EH_FRAME`].
    pub flags: u32,
}

/// An indirect function (`STT_GNU_IFUNC`): its address is its resolver's, and references go
/// to a stub that jumps through a GOT entry the resolver's result fills
/// (`R_X86_64_IRELATIVE`).
pub const RARE_IFUNC: u32 = 1;
/// A precompiled object's `.eh_frame`, placed as a section: `.eh_frame_hdr` indexes its FDEs.
pub const RARE_EH_FRAME: u32 = 2;
/// An imported function whose PLT stub is its canonical address (see `image/canonical.rs`).
pub const RARE_CANONICAL: u32 = 4;

#[derive(Default)]
pub struct SymbolTable {
    records: Records<Symbol>,
    names: Blob,
    index: NameIndex,
    counts: Counts,
    rare: std::collections::BTreeMap<u32, Rare>,
}

impl SymbolTable {
    /// A table over persisted arrays.
    pub fn restore(
        records: Records<Symbol>,
        names: Blob,
        index: NameIndex,
        counts: Counts,
        rare: Vec<(u32, Rare)>,
    ) -> Self {
        SymbolTable {
            records,
            names,
            index,
            counts,
            rare: rare.into_iter().collect(),
        }
    }

    /// Every [`Rare`] record, in id order: for the table's body.
    pub fn rare(&self) -> Vec<(u32, Rare)> {
        self.rare.iter().map(|(&id, &r)| (id, r)).collect()
    }

    fn rare_mut(&mut self, id: SymbolId, f: impl FnOnce(&mut Rare)) {
        let r = self.rare.entry(id.0).or_default();
        f(r);
        if *r == Rare::default() {
            self.rare.remove(&id.0);
        }
    }

    /// The site of `id`'s GOT entry, plus one (0: none).
    pub fn got_site(&self, id: SymbolId) -> u32 {
        self.rare.get(&id.0).map_or(0, |r| r.got_site)
    }

    pub fn set_got_site(&mut self, id: SymbolId, site_plus_one: u32) {
        if self.got_site(id) == 0 && site_plus_one != 0 {
            self.counts.got_entries += 1;
        }
        self.rare_mut(id, |r| r.got_site = site_plus_one);
    }

    /// The library (index) whose data object `id` is a copy of, if it is one.
    pub fn copy_of(&self, id: SymbolId) -> Option<u32> {
        if self.rare.is_empty() {
            return None;
        }
        let c = self.rare.get(&id.0)?.copy;
        c.checked_sub(1)
    }

    pub fn set_copy_of(&mut self, id: SymbolId, library: Option<u32>) {
        self.rare_mut(id, |r| r.copy = library.map_or(0, |l| l + 1));
    }

    /// Whether `id` has `RARE_*` flag `flag`.
    pub fn has_flag(&self, id: SymbolId, flag: u32) -> bool {
        !self.rare.is_empty() && self.rare.get(&id.0).is_some_and(|r| r.flags & flag != 0)
    }

    /// Set or clear one of the `RARE_*` flags.
    pub fn set_flag(&mut self, id: SymbolId, flag: u32, on: bool) {
        if on || self.has_flag(id, flag) {
            self.rare_mut(id, |r| {
                if on {
                    r.flags |= flag;
                } else {
                    r.flags &= !flag;
                }
            });
        }
    }

    /// Every symbol with `RARE_*` flag `flag`, in id order.
    pub fn with_flag(&self, flag: u32) -> Vec<SymbolId> {
        self.rare
            .iter()
            .filter(|(_, r)| r.flags & flag != 0)
            .map(|(&id, _)| SymbolId(id))
            .collect()
    }

    pub fn is_ifunc(&self, id: SymbolId) -> bool {
        self.has_flag(id, RARE_IFUNC)
    }

    pub fn set_ifunc(&mut self, id: SymbolId, ifunc: bool) {
        self.set_flag(id, RARE_IFUNC, ifunc);
    }

    /// Every indirect function, in id order.
    pub fn ifuncs(&self) -> Vec<SymbolId> {
        self.with_flag(RARE_IFUNC)
    }

    /// Every copied data object, in id order.
    pub fn copies(&self) -> Vec<SymbolId> {
        self.rare
            .iter()
            .filter(|(_, r)| r.copy != 0)
            .map(|(&id, _)| SymbolId(id))
            .collect()
    }

    /// The entry jump of a function that moved in an update.
    pub fn entry(&self, id: SymbolId) -> Option<u64> {
        if self.rare.is_empty() {
            return None;
        }
        let e = self.rare.get(&id.0)?.entry;
        (e != 0).then_some(u64::from(e))
    }

    pub fn set_entry(&mut self, id: SymbolId, entry: Option<u64>) {
        let e = entry.map_or(0, |e| u32::try_from(e).expect("addresses are below 4 GiB"));
        self.rare_mut(id, |r| r.entry = e);
    }

    /// The address references to `id` use: the entry of a function that moved, or where
    /// its bytes are.
    pub fn ref_addr(&self, id: SymbolId) -> Option<u64> {
        let a = self.get(id).addr()?;
        Some(self.entry(id).unwrap_or(a))
    }

    /// Declare a symbol, or return the existing handle if the name is already declared with the
    /// same kind. A stronger binding wins (a local declaration never demotes a global one).
    pub fn declare(&mut self, name: &str, kind: SymbolKind, binding: Binding) -> Result<SymbolId> {
        if let Some(id) = self.lookup(name) {
            let mut sym = self.get(id);
            if sym.kind() != kind {
                return Err(ImageError::KindMismatch {
                    name: name.to_string(),
                    declared: sym.kind().describe(),
                    used: kind.describe(),
                });
            }
            if sym.binding() == Binding::Local && binding != Binding::Local {
                sym.set_binding(binding);
                self.records.set(id.0, sym);
            }
            return Ok(id);
        }
        let hash = name_hash(name.as_bytes());
        if self.records.len() as u32 >= crate::table::MAX_SYMBOLS {
            return Err(ImageError::TooManySymbols(crate::table::MAX_SYMBOLS));
        }
        let mut sym = Symbol {
            name_off: self.names.push(name.as_bytes()),
            kind: u8::from(kind == SymbolKind::Data),
            ..Symbol::default()
        };
        sym.set_binding(binding);
        let id = self.records.push(sym);
        let records = &self.records;
        let names = &self.names;
        self.index.insert(hash, id, || {
            (0..records.len() as u32)
                .map(|i| {
                    let s = records.get(i);
                    (name_hash(names.get_name(s.name_off)), i)
                })
                .collect()
        });
        Ok(SymbolId(id))
    }

    pub fn lookup(&self, name: &str) -> Option<SymbolId> {
        self.index
            .lookup(name.as_bytes(), |id| {
                let s = self.records.get(id);
                self.names.get_name(s.name_off) == name.as_bytes()
            })
            .map(SymbolId)
    }

    /// The symbol whose name starts at `off` in `.strtab`.
    pub fn by_name_offset(&self, off: u32) -> Option<SymbolId> {
        let name = self.names.get_name(off);
        self.index
            .lookup(name, |id| self.records.get(id).name_off == off)
            .map(SymbolId)
    }

    pub fn get(&self, id: SymbolId) -> Symbol {
        self.records.get(id.0)
    }

    /// Store a changed symbol, keeping the counts right.
    pub fn set(&mut self, id: SymbolId, sym: Symbol) {
        let old = self.records.get(id.0);
        let count = |s: &Symbol, c: &mut Counts, d: i64| {
            if s.placement().is_some() {
                let n = match s.kind() {
                    SymbolKind::Function => &mut c.functions,
                    SymbolKind::Data => &mut c.data_objects,
                };
                *n = (i64::from(*n) + d) as u32;
            }
        };
        count(&old, &mut self.counts, -1);
        count(&sym, &mut self.counts, 1);
        self.records.set(id.0, sym);
    }

    pub fn name(&self, id: SymbolId) -> String {
        let s = self.records.get(id.0);
        String::from_utf8_lossy(self.names.get_name(s.name_off)).into_owned()
    }

    /// Whether the symbol's name is one of `names`, without copying it.
    pub fn name_is_one_of(&self, id: SymbolId, names: &[&str]) -> bool {
        let s = self.records.get(id.0);
        let name = self.names.get_name(s.name_off);
        names.iter().any(|n| n.as_bytes() == name)
    }

    /// Offset of the symbol's name in `.strtab`.
    pub fn name_offset(&self, id: SymbolId) -> u32 {
        self.records.get(id.0).name_off
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn damaged(&self) -> bool {
        self.records.damaged() || self.names.damaged() || self.index.slots.damaged()
    }

    /// Every symbol. Reads the whole table: for fresh builds and `inspect`, not for updates.
    pub fn iter(&self) -> impl Iterator<Item = (SymbolId, Symbol)> + '_ {
        (0..self.records.len() as u32).map(|i| (SymbolId(i), self.records.get(i)))
    }

    pub fn records(&self) -> &Records<Symbol> {
        &self.records
    }

    pub fn names(&self) -> &Blob {
        &self.names
    }

    pub fn index(&self) -> &NameIndex {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are found at every fill of the index (it grows past 80%), misses are misses,
    /// and a symbol is found again from its `.strtab` offset.
    #[test]
    fn every_name_is_found_and_no_other_at_every_fill() {
        let mut t = SymbolTable::default();
        let mut ids = Vec::new();
        for i in 0..20_000 {
            let kind = if i % 3 == 0 {
                SymbolKind::Data
            } else {
                SymbolKind::Function
            };
            ids.push(
                t.declare(&format!("name_{i}"), kind, Binding::Global)
                    .unwrap(),
            );
            if i % 997 == 0 || i == 19_999 {
                for (j, &id) in ids.iter().enumerate() {
                    assert_eq!(t.lookup(&format!("name_{j}")), Some(id), "after {i}");
                }
                assert_eq!(t.lookup(&format!("name_{}", i + 1)), None);
                assert_eq!(t.lookup("name_"), None);
            }
        }
        let load = t.index().count as f64 / t.index().slots.len() as f64;
        assert!(load > 0.4 && load <= 0.8, "{load}");
        for &id in ids.iter().step_by(101) {
            assert_eq!(t.by_name_offset(t.name_offset(id)), Some(id));
            assert_eq!(t.name(id), format!("name_{}", id.0));
        }
        // Declaring again returns the same symbol.
        assert_eq!(
            t.declare("name_7", SymbolKind::Function, Binding::Global)
                .unwrap(),
            ids[7]
        );
    }
}
