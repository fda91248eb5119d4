//! Reference sites: every place in the image whose bytes depend on some symbol's address.
//!
//! Sites are indexed twice: by *owner* (the function or data object that contains them, so that
//! moving the owner re-patches its outgoing PC-relative fields) and by *target* (so that moving
//! a symbol costs the number of places that refer to it, not a scan of the image). GOT entries
//! are sites too: an 8-byte absolute field in the GOT whose target is the symbol it holds.

use crate::symbols::SymbolId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SiteId(pub u32);

/// What a site computes, in the usual ELF notation (S: target, A: addend, P: the site's address,
/// G: the address of the target's GOT entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// `S + A - P` in 4 bytes (calls, RIP-relative addressing).
    PcRel32,
    /// `S + A` in 4 bytes, zero-extended.
    Abs32,
    /// `S + A` in 8 bytes.
    Abs64,
    /// `G + A - P` in 4 bytes; the GOT entry holds `S`.
    GotPcRel32,
}

impl RefKind {
    pub fn name(self) -> &'static str {
        match self {
            RefKind::PcRel32 => "PcRel32",
            RefKind::Abs32 => "Abs32",
            RefKind::Abs64 => "Abs64",
            RefKind::GotPcRel32 => "GotPcRel32",
        }
    }

    pub fn width(self) -> u32 {
        match self {
            RefKind::Abs64 => 8,
            _ => 4,
        }
    }
}

/// A relocation as the producer of a function or data object states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    /// Offset of the field inside the owner's bytes.
    pub offset: u32,
    pub kind: RefKind,
    pub target: SymbolId,
    pub addend: i64,
}

/// Where a site's field lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Inside a function or data object, at an offset from its start.
    In { owner: SymbolId, offset: u32 },
    /// A GOT entry at a fixed address.
    GotEntry { addr: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    pub place: Place,
    pub kind: RefKind,
    pub target: SymbolId,
    pub addend: i64,
}

#[derive(Debug, Default)]
pub struct Sites {
    /// `None` marks a removed site whose id waits in `free` for reuse.
    sites: Vec<Option<Site>>,
    free: Vec<SiteId>,
    by_target: Vec<Vec<SiteId>>,
    by_owner: Vec<Vec<SiteId>>,
}

impl Sites {
    fn grow_to(&mut self, n: usize) {
        if self.by_target.len() < n {
            self.by_target.resize_with(n, Vec::new);
            self.by_owner.resize_with(n, Vec::new);
        }
    }

    pub fn add(&mut self, site: Site) -> SiteId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.sites.push(None);
                SiteId(self.sites.len() as u32 - 1)
            }
        };
        let mut top = site.target.index();
        if let Place::In { owner, .. } = site.place {
            top = top.max(owner.index());
        }
        self.grow_to(top + 1);
        self.by_target[site.target.index()].push(id);
        if let Place::In { owner, .. } = site.place {
            self.by_owner[owner.index()].push(id);
        }
        self.sites[id.0 as usize] = Some(site);
        id
    }

    /// Remove every site inside `owner` (it is being redefined or removed). Costs the number
    /// of those sites times the length of their targets' lists.
    pub fn remove_owned_by(&mut self, owner: SymbolId) {
        let Some(owned) = self.by_owner.get_mut(owner.index()) else {
            return;
        };
        for id in std::mem::take(owned) {
            if let Some(site) = self.sites[id.0 as usize].take() {
                let list = &mut self.by_target[site.target.index()];
                if let Some(i) = list.iter().position(|&s| s == id) {
                    list.swap_remove(i);
                }
                self.free.push(id);
            }
        }
    }

    pub fn get(&self, id: SiteId) -> &Site {
        self.sites[id.0 as usize]
            .as_ref()
            .expect("site ids in the indexes are live")
    }

    /// Sites whose value depends on `target`'s address.
    pub fn referring_to(&self, target: SymbolId) -> &[SiteId] {
        self.by_target
            .get(target.index())
            .map_or(&[], |v| v.as_slice())
    }

    /// Sites inside `owner`'s bytes.
    pub fn owned_by(&self, owner: SymbolId) -> &[SiteId] {
        self.by_owner
            .get(owner.index())
            .map_or(&[], |v| v.as_slice())
    }

    /// Live sites.
    pub fn len(&self) -> usize {
        self.sites.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Site> {
        self.sites.iter().flatten()
    }
}
