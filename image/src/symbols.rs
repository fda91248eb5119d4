//! The symbol-resolution table: every symbol the program names, resolved once to a handle.
//!
//! A [`SymbolId`] is an index that stays valid for the life of the table; everything else
//! (reference sites, the GOT, `.symtab`) refers to symbols through it, never by name, so a name
//! is looked up exactly once: when it is declared.

use std::collections::HashMap;

use crate::error::{ImageError, Result};
use crate::layout::RegionKind;
use crate::slots::Slot;

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

#[derive(Debug, Clone)]
pub struct Symbol {
    pub name: String,
    pub kind: SymbolKind,
    pub binding: Binding,
    /// Where the symbol lives once defined.
    pub placement: Option<Placement>,
    /// Address of the symbol's GOT entry, once something has referred to it through the GOT.
    pub got: Option<u64>,
    /// Provided by the image's runtime rather than by the program.
    pub builtin: bool,
    /// Hash of the input this symbol was built from (0: unknown, always rebuild).
    pub hash: u64,
    /// Hash of a function's signature, so callers can be rechecked when it changes.
    pub sig_hash: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub region: RegionKind,
    pub slot: Slot,
    /// Bytes in use; at most `slot.capacity`.
    pub size: u64,
}

impl Symbol {
    pub fn addr(&self) -> Option<u64> {
        self.placement.map(|p| p.slot.addr)
    }
}

#[derive(Debug, Default)]
pub struct SymbolTable {
    symbols: Vec<Symbol>,
    by_name: HashMap<String, SymbolId>,
}

impl SymbolTable {
    /// Declare a symbol, or return the existing handle if the name is already declared with the
    /// same kind. A stronger binding wins (a local declaration never demotes a global one).
    pub fn declare(&mut self, name: &str, kind: SymbolKind, binding: Binding) -> Result<SymbolId> {
        if let Some(&id) = self.by_name.get(name) {
            let sym = &mut self.symbols[id.index()];
            if sym.kind != kind {
                return Err(ImageError::KindMismatch {
                    name: name.to_string(),
                    declared: sym.kind.describe(),
                    used: kind.describe(),
                });
            }
            if sym.binding == Binding::Local && binding != Binding::Local {
                sym.binding = binding;
            }
            return Ok(id);
        }
        let id = SymbolId(self.symbols.len() as u32);
        self.symbols.push(Symbol {
            name: name.to_string(),
            kind,
            binding,
            placement: None,
            got: None,
            builtin: false,
            hash: 0,
            sig_hash: 0,
        });
        self.by_name.insert(name.to_string(), id);
        Ok(id)
    }

    /// Re-create a table from its persisted symbols, keeping their ids.
    pub fn from_symbols(symbols: Vec<Symbol>) -> SymbolTable {
        let by_name = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), SymbolId(i as u32)))
            .collect();
        SymbolTable { symbols, by_name }
    }

    pub fn lookup(&self, name: &str) -> Option<SymbolId> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: SymbolId) -> &Symbol {
        &self.symbols[id.index()]
    }

    pub fn get_mut(&mut self, id: SymbolId) -> &mut Symbol {
        &mut self.symbols[id.index()]
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn as_slice(&self) -> &[Symbol] {
        &self.symbols
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (SymbolId, &Symbol)> {
        self.symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (SymbolId(i as u32), s))
    }
}
