//! Placing precompiled code (sections of ELF relocatable objects, see `crate::objects`): each
//! section as one definition of exactly its size, the object's symbols as aliases into it,
//! and the names the archives are asked for.

use zerolink_image::{Contents, Reference, RegionKind};

use super::*;

/// One section of a precompiled object, ready to place.
pub struct Section<'a> {
    pub kind: SymbolKind,
    pub region: RegionKind,
    pub contents: Contents<'a>,
    pub align: u64,
    pub refs: &'a [Reference],
    pub fingerprint: u64,
}

impl Session {
    /// Place section `id` of unit `u` (an object, an archive member).
    pub fn define_section(&mut self, u: UnitId, id: SymbolId, s: Section<'_>) -> Result<()> {
        self.claim_definition(u, id)?;
        if self.is_update() && self.image.symbols().get(id).placement().is_some() {
            self.image.remove(id);
        }
        self.image
            .define_section(id, s.kind, s.region, s.contents, s.align, s.refs)?;
        self.image.set_hashes(id, s.fingerprint, 0);
        self.image.set_unit(id, Some(self.units.number(u)));
        self.placed.compiled += 1;
        Ok(())
    }

    /// Define symbol `id` of unit `u` as `size` bytes at `offset` in section `base`.
    pub fn define_alias(
        &mut self,
        u: UnitId,
        id: SymbolId,
        kind: SymbolKind,
        base: SymbolId,
        offset: u64,
        size: u64,
    ) -> Result<()> {
        self.claim_definition(u, id)?;
        self.image.define_alias(id, kind, base, offset, size)?;
        self.image.set_unit(id, Some(self.units.number(u)));
        Ok(())
    }

    /// Mark `id`, defined just now, as an indirect function (`STT_GNU_IFUNC`): references
    /// reach it through a stub whose GOT entry its resolver fills.
    pub fn mark_ifunc(&mut self, id: SymbolId) -> Result<()> {
        Ok(self.image.mark_ifunc(id)?)
    }

    /// What the sites inside `owner` refer to.
    pub fn targets_of(&self, owner: SymbolId) -> Vec<SymbolId> {
        let sites = self.image.sites();
        sites
            .owned_by(self.image.symbols(), owner)
            .into_iter()
            .map(|s| sites.get(s).target)
            .collect()
    }

    /// Define `_GLOBAL_OFFSET_TABLE_` for the objects that refer to it.
    pub fn define_got_base(&mut self, u: UnitId, id: SymbolId) -> Result<()> {
        self.claim_definition(u, id)?;
        self.image.define_got_base(id)?;
        self.image.set_unit(id, Some(self.units.number(u)));
        Ok(())
    }

    /// Mark `id`, just placed, as an object's `.eh_frame`: `.eh_frame_hdr` indexes its FDEs.
    pub fn mark_eh_frame(&mut self, id: SymbolId) {
        self.image.mark_eh_frame(id);
    }

    /// Define `id`, which objects refer to weakly and nothing defines, as address 0.
    pub fn define_undefined_weak(&mut self, u: UnitId, id: SymbolId) -> Result<()> {
        self.claim_definition(u, id)?;
        self.image.define_absolute_zero(id)?;
        self.image.set_unit(id, Some(self.units.number(u)));
        Ok(())
    }

    /// What code refers to and nothing defines or imports yet, among the symbols this build
    /// touched: the names to look for in archives.
    pub fn wanted(&mut self) -> Vec<SymbolId> {
        self.image.wanted()
    }

    /// Whether `id` has a definition (placed) now.
    pub fn is_defined(&self, id: SymbolId) -> bool {
        self.image.symbols().get(id).placement().is_some()
    }

    /// Record that unit `u` defines `id` in this build: a second definition in one build is
    /// a duplicate.
    fn claim_definition(&mut self, u: UnitId, id: SymbolId) -> Result<()> {
        if self.is_update() {
            if !self.placed.defined.insert(id) {
                return Err(self.duplicate(id));
            }
            self.units.seen.insert(id);
        }
        // Precompiled units are defined whole, in an update too: the count is theirs.
        self.units.count(u);
        Ok(())
    }
}
