//! `.symtab` kept up to date entry by entry, so an update rewrites the entries of the symbols
//! it touched and nothing else.
//!
//! ELF wants local symbols before global ones (`sh_info` is the first global). Entries are kept
//! in two contiguous runs; adding a local moves the first global to the end, removing an entry
//! fills its hole with the last entry of its run. The symbol whose entry moves is found by the
//! entry's name (its `st_name` is the symbol's own name offset, and names are unique), so
//! every move can update that symbol's index without an array of owners.

use object::elf;
use object::endian::{LittleEndian as LE, U16, U32, U64};

use crate::layout::RegionKind;
use crate::symbols::{Binding, SymbolId, SymbolKind, SymbolTable};
use crate::table::Records;

pub type Entry = elf::Sym64<LE>;

pub struct Symtab {
    pub entries: Records<Entry>,
    pub first_global: u32,
}

impl Default for Symtab {
    fn default() -> Self {
        let mut entries = Records::default();
        entries.push(Entry::default());
        Symtab {
            entries,
            first_global: 1,
        }
    }
}

impl Symtab {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    fn entry(syms: &SymbolTable, id: SymbolId) -> Entry {
        let s = syms.get(id);
        let p = s.placement().expect("only placed symbols have entries");
        let bind = match s.binding() {
            Binding::Local => elf::STB_LOCAL,
            Binding::Global => elf::STB_GLOBAL,
            Binding::Weak => elf::STB_WEAK,
        };
        let tls = p.region == RegionKind::Tls;
        let typ = match s.kind() {
            _ if s.section_atom() => elf::STT_SECTION,
            _ if tls => elf::STT_TLS,
            SymbolKind::Function => elf::STT_FUNC,
            SymbolKind::Data => elf::STT_OBJECT,
        };
        Entry {
            st_name: U32::new(LE, syms.name_offset(id)),
            st_info: (bind << 4) | typ,
            st_other: elf::STV_DEFAULT,
            // Sections are laid out in region order, after the null section.
            st_shndx: U16::new(
                LE,
                if s.alias() && p.slot.addr == 0 {
                    elf::SHN_ABS
                } else {
                    p.region.shndx()
                },
            ),
            // A thread-local's value is its offset in the TLS template (as ld writes it).
            st_value: U64::new(
                LE,
                if tls {
                    p.slot.addr - RegionKind::Tls.vaddr()
                } else {
                    p.slot.addr
                },
            ),
            st_size: U64::new(LE, if s.section_atom() { 0 } else { p.size }),
        }
    }

    /// Bring `id`'s entry in line with the symbol: add, rewrite or remove it.
    pub fn update(&mut self, syms: &mut SymbolTable, id: SymbolId) {
        let sym = syms.get(id);
        match (sym.placement(), sym.symtab) {
            (Some(_), 0) => self.insert(syms, id),
            (Some(_), i) => self.entries.set(i, Self::entry(syms, id)),
            (None, 0) => {}
            (None, i) => self.remove(syms, id, i),
        }
    }

    fn set_index(syms: &mut SymbolTable, id: SymbolId, index: u32) {
        let mut s = syms.get(id);
        s.symtab = index;
        syms.set(id, s);
    }

    fn move_entry(&mut self, syms: &mut SymbolTable, from: u32, to: u32) {
        if from == to {
            return;
        }
        let entry = self.entries.get(from);
        self.entries.set(to, entry);
        // A damaged name finds nobody: the damage is reported before anything is written.
        if let Some(owner) = syms.by_name_offset(entry.st_name.get(LE)) {
            Self::set_index(syms, owner, to);
        }
    }

    fn insert(&mut self, syms: &mut SymbolTable, id: SymbolId) {
        let entry = Self::entry(syms, id);
        let end = self.entries.push(entry);
        if syms.get(id).binding() != Binding::Local {
            Self::set_index(syms, id, end);
            return;
        }
        // Make room at the end of the locals: the first global moves to the end.
        let at = self.first_global;
        self.move_entry(syms, at, end);
        self.entries.set(at, entry);
        Self::set_index(syms, id, at);
        self.first_global += 1;
    }

    fn remove(&mut self, syms: &mut SymbolTable, id: SymbolId, i: u32) {
        let last = self.entries.len() as u32 - 1;
        if i < self.first_global {
            let last_local = self.first_global - 1;
            self.move_entry(syms, last_local, i);
            self.move_entry(syms, last, last_local);
            self.first_global -= 1;
        } else {
            self.move_entry(syms, last, i);
        }
        self.entries.truncate(last as usize);
        Self::set_index(syms, id, 0);
    }

    pub fn damaged(&self) -> bool {
        self.entries.damaged()
    }
}
