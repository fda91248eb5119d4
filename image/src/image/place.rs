//! Placing: slots for definitions, their bytes in the file, their sites, and patching (at once
//! in an update; in `finish`, once, in a fresh build). GOT entries and file extents grow here.

use std::collections::HashMap;

use super::*;
use crate::live::WriteRule;

impl Image {
    /// Free a symbol's slot and drop its own sites; true if it was placed.
    pub(super) fn unplace(&mut self, id: SymbolId) -> bool {
        self.live_before(id);
        self.replace_sites(id, &[]);
        let mut sym = self.symbols.get(id);
        let placement = sym.placement();
        sym.hash = 0;
        sym.sig_hash = 0;
        sym.unit = 0;
        sym.set_builtin(false);
        sym.set_placement(None);
        let alias = sym.alias();
        sym.set_alias(false);
        sym.set_section_atom(false);
        self.symbols.set(id, sym);
        if self.symbols.copy_of(id).is_some() {
            self.symbols.set_copy_of(id, None);
        }
        self.symbols.set_ifunc(id, false);
        self.symbols
            .set_flag(id, crate::symbols::RARE_EH_FRAME, false);
        let entry = self.symbols.entry(id);
        self.symbols.set_entry(id, None);
        self.touched.insert(id);
        if let Some(e) = entry {
            // Nothing refers to it any more (or `finish` reports what still does).
            self.regions[RegionKind::Text.index()].free(Slot {
                addr: e,
                capacity: x86_64::ENTRY_JUMP_SLOT,
            });
            self.unname_entry_jump(id);
        }
        match placement {
            // Its bytes belong to the definition it lies in.
            Some(_) if alias => true,
            Some(p) => {
                if p.region == RegionKind::Text {
                    self.replaced_code.insert(p.slot.addr);
                }
                self.regions[p.region.index()].free(p.slot);
                true
            }
            None => false,
        }
    }

    /// What the program may define: a symbol of this kind, and not one the runtime defines
    /// itself (`x86_64::RESERVED`; the runtime's own stubs are placed with `define`).
    pub(super) fn check_definable(&self, id: SymbolId, kind: SymbolKind) -> Result<()> {
        if self.symbols.name_is_one_of(id, x86_64::RESERVED) {
            return Err(ImageError::Reserved(self.symbols.name(id)));
        }
        let sym = self.symbols.get(id);
        if sym.kind() != kind {
            return Err(ImageError::KindMismatch {
                name: self.symbols.name(id),
                declared: sym.kind().describe(),
                used: kind.describe(),
            });
        }
        Ok(())
    }

    pub(super) fn check_definition(
        &self,
        id: SymbolId,
        size: u64,
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        if !align.is_power_of_two() || align > PAGE {
            return Err(ImageError::BadAlignment {
                name: self.symbols.name(id),
                align,
            });
        }
        for r in refs {
            if u64::from(r.offset) + u64::from(r.kind.width()) > size
                || r.offset > crate::sites::MAX_SITE_OFFSET
            {
                return Err(ImageError::SiteOutOfBounds {
                    function: self.symbols.name(id),
                    offset: r.offset,
                    size,
                });
            }
            // The table keeps addends in 32 bits (every address is below 4 GiB, so a wider
            // one could only produce an address outside the image).
            if i32::try_from(r.addend).is_err() {
                return Err(ImageError::AddendTooWide {
                    function: self.symbols.name(id),
                    offset: r.offset,
                    target: self.symbols.name(r.target),
                    addend: r.addend,
                });
            }
        }
        Ok(())
    }

    pub(super) fn define(
        &mut self,
        id: SymbolId,
        region: RegionKind,
        contents: Contents<'_>,
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        self.place_new(id, region, contents, align, refs, false)?;
        // Incoming references that were waiting for this symbol's address, or that pointed at
        // its old slot.
        self.patch_referrers(id);
        Ok(())
    }

    /// Place a definition in a new slot (with the region's slack, or `exact`: no room to
    /// grow, for what is placed once), its bytes and its own sites. Its referrers are the
    /// caller's business (`patch_referrers`, or an entry jump).
    pub(super) fn place_new(
        &mut self,
        id: SymbolId,
        region: RegionKind,
        contents: Contents<'_>,
        align: u64,
        refs: &[Reference],
        exact: bool,
    ) -> Result<()> {
        // The program now defines what a library's data object was copied for.
        self.drop_copy(id);
        if self.symbols.get(id).placement().is_some() {
            return Err(ImageError::DuplicateDefinition(self.symbols.name(id)));
        }
        self.live_before(id);
        let size = contents.len();
        self.check_definition(id, size, align, refs)?;
        let used_before = self.regions[region.index()].used;
        let r = &mut self.regions[region.index()];
        let slot = if exact {
            r.alloc_exact(size, align)
        } else {
            r.alloc(size, align)
        };
        let slot = slot.map_err(|e| match e {
            ImageError::RegionFull {
                region,
                needed,
                reserve,
                ..
            } => ImageError::RegionFull {
                region,
                name: self.symbols.name(id),
                needed,
                reserve,
            },
            e => e,
        })?;
        if region.in_file() {
            // Fill the alignment gap before a slot at the top, and the slot itself.
            let fill_from = slot.addr.min(region.vaddr() + used_before);
            self.write_slot(region, fill_from, slot, contents)?;
            self.live_slot(id, region, slot.addr, contents, false);
        }
        let mut sym = self.symbols.get(id);
        sym.set_placement(Some(Placement { region, slot, size }));
        if sym.import().is_some() {
            // The program now defines what a library used to provide.
            sym.set_import(None);
            self.imports.retain(|&i| i != id);
        }
        self.symbols.set(id, sym);
        self.touched.insert(id);
        self.add_sites(id, refs)
    }

    pub(super) fn redefine(
        &mut self,
        id: SymbolId,
        region: RegionKind,
        contents: Contents<'_>,
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        let Some(old) = self.symbols.get(id).placement() else {
            return self.define(id, region, contents, align, refs);
        };
        self.live_before(id);
        if self.symbols.get(id).alias() {
            // It lay in another definition's bytes: it gets a slot of its own now.
            self.unplace(id);
            self.stats.moved += 1;
            return self.define(id, region, contents, align, refs);
        }
        let size = contents.len();
        self.check_definition(id, size, align, refs)?;
        // Code a running process is in, or will return into, is never written over.
        let busy = region == RegionKind::Text && self.live_busy(old.slot);
        if old.region == RegionKind::Text && !busy {
            self.replaced_code.insert(old.slot.addr);
        }
        let align = align.max(region.min_slot_align());
        if old.region == region && size <= old.slot.capacity && old.slot.addr % align == 0 && !busy
        {
            if region.in_file() {
                self.write_slot(region, old.slot.addr, old.slot, contents)?;
                self.live_slot(id, region, old.slot.addr, contents, true);
            }
            let mut sym = self.symbols.get(id);
            sym.set_placement(Some(Placement {
                region,
                slot: old.slot,
                size,
            }));
            self.symbols.set(id, sym);
            self.touched.insert(id);
            self.stats.in_place += 1;
            // Same address: only the symbol's own fields need writing.
            return self.add_sites(id, refs);
        }
        self.replace_sites(id, &[]);
        let entry = self.entry_for_move(id, old, region);
        // A busy slot is kept, with its unwind entry, until a full build: a running frame's
        // code, which its thread's unwinder must still find (and no later build may reuse).
        if !busy {
            match entry {
                // The first move: the slot's head stays, as the entry jump.
                Some(e) if e == old.slot.addr => {
                    self.regions[old.region.index()].free(Slot {
                        addr: e + x86_64::ENTRY_JUMP_SLOT,
                        capacity: old.slot.capacity - x86_64::ENTRY_JUMP_SLOT,
                    });
                }
                _ => self.regions[old.region.index()].free(old.slot),
            }
        }
        let mut sym = self.symbols.get(id);
        sym.set_placement(None);
        self.symbols.set(id, sym);
        if entry.is_none() {
            if let Some(e) = self.symbols.entry(id) {
                // Referrers get the new address instead.
                self.regions[RegionKind::Text.index()].free(Slot {
                    addr: e,
                    capacity: x86_64::ENTRY_JUMP_SLOT,
                });
                self.unname_entry_jump(id);
            }
        }
        self.symbols.set_entry(id, entry);
        self.stats.moved += 1;
        let Some(e) = entry else {
            return self.define(id, region, contents, align, refs);
        };
        // References keep the entry's address, so none of them changes: the move costs the
        // function's own sites and the jump.
        self.place_new(id, region, contents, align, refs, false)?;
        let to = self.symbols.get(id).addr().unwrap_or(e);
        let jump = x86_64::entry_jump(e, to).ok_or_else(|| ImageError::Overflow {
            function: self.symbols.name(id),
            offset: 0,
            kind: "entry jump",
            target: self.symbols.name(id),
            value: i128::from(to) - i128::from(e + 5),
        })?;
        let at = self.file_offset(RegionKind::Text, e);
        self.store.write(at, &jump);
        // A running process gets the `jmp` alone: the old code after it stays as it was (no
        // thread is in it, see `entry_for_move`; its slot is never reused in a live session).
        self.live_write(RegionKind::Text, e, &jump[..5], WriteRule::Always);
        self.name_entry_jump(id, e)
    }

    /// The name of `id`'s entry jump in `.symtab`: `NAME.entry`, as GCC names a function's
    /// split parts `NAME.cold`, so objdump, perf and gdb name the address calls go to.
    fn entry_jump_name(&self, id: SymbolId) -> String {
        format!("{}.entry", self.symbols.name(id))
    }

    /// Whether `j` is an entry jump's name (the runtime's, owning no slot), not a program's
    /// symbol that happens to be called so.
    fn is_entry_jump_name(&self, j: SymbolId) -> bool {
        let s = self.symbols.get(j);
        s.alias() && s.builtin()
    }

    /// Give `id`'s entry jump at `entry` its name: a local function symbol of the jump's
    /// five bytes. A program symbol of that name keeps it, and the jump stays unnamed.
    fn name_entry_jump(&mut self, id: SymbolId, entry: u64) -> Result<()> {
        let name = self.entry_jump_name(id);
        if let Some(j) = self.symbols.lookup(&name) {
            let ours = self.is_entry_jump_name(j) || self.symbols.get(j).placement().is_none();
            if !ours || self.symbols.get(j).kind() != SymbolKind::Function {
                return Ok(());
            }
        }
        let j = self.declare(&name, SymbolKind::Function, Binding::Local)?;
        if self.symbols.get(j).addr() == Some(entry) {
            return Ok(());
        }
        self.place_alias(j, RegionKind::Text, entry, 5)?;
        self.mark_builtin(j);
        Ok(())
    }

    /// The entry jump of `id` is gone: so is its name.
    fn unname_entry_jump(&mut self, id: SymbolId) {
        let name = self.entry_jump_name(id);
        if let Some(j) = self.symbols.lookup(&name) {
            if self.is_entry_jump_name(j) {
                self.unplace(j);
            }
        }
    }

    /// Where references to `id`, moving out of `old` into `region`, point from now on: its
    /// entry jump (made now from the old slot's head on a first move), or `None` if they
    /// follow it to the new slot. `None` when:
    /// - a fresh build patches every reference anyway;
    /// - a debug build wants no jumps (`set_entry_jumps`);
    /// - data, a precompiled section with symbols inside it, or a slot too small for the
    ///   jump cannot have one;
    /// - in a live update, a thread may still reach the old code: an address of some
    ///   thread (an instruction pointer, a return address, any stack word) lies anywhere in
    ///   it. Not only the jump's own five bytes: a loop whose head lies inside them, run by a
    ///   thread elsewhere in the function, would branch into the middle of the `jmp`. Its
    ///   callers are re-patched instead, and the old code stays whole for the thread.
    fn entry_for_move(&self, id: SymbolId, old: Placement, region: RegionKind) -> Option<u64> {
        if self.lazy_patching
            || !self.entry_jumps
            || region != RegionKind::Text
            || old.region != RegionKind::Text
        {
            return None;
        }
        if let Some(e) = self.symbols.entry(id) {
            return Some(e);
        }
        let e = old.slot.addr;
        let fits =
            old.slot.capacity >= x86_64::ENTRY_JUMP_SLOT && !self.symbols.get(id).section_atom();
        let cut = self
            .live
            .as_ref()
            .is_some_and(|l| l.opts_busy_in(e, e + old.size.max(5)));
        (fits && !cut).then_some(e)
    }

    /// Write `contents` at the start of `slot` and fill from `fill_from` to the slot's end.
    pub(super) fn write_slot(
        &mut self,
        region: RegionKind,
        fill_from: u64,
        slot: Slot,
        contents: Contents<'_>,
    ) -> Result<()> {
        self.ensure_extent(region, slot.end() - region.vaddr())?;
        let offset = self.file_offset(region, fill_from);
        let at = slot.addr - fill_from;
        if let Store::Fresh(out) = &mut self.store {
            // Straight into the mapping, each byte once: the gap, the contents, the slack.
            let len = contents.len();
            out.fill(offset, at, region.fill_byte());
            match contents {
                Contents::Bytes(b) => out.write(offset + at, b),
                Contents::Zeros(n) => out.fill(offset + at, n, 0),
            }
            let tail = at + len;
            out.fill(
                offset + tail,
                slot.end() - fill_from - tail,
                region.fill_byte(),
            );
            return Ok(());
        }
        let mut bytes = vec![region.fill_byte(); (slot.end() - fill_from) as usize];
        let at = at as usize;
        match contents {
            Contents::Bytes(b) => bytes[at..at + b.len()].copy_from_slice(b),
            Contents::Zeros(n) => bytes[at..at + n as usize].fill(0),
        }
        self.store.write(offset, &bytes);
        Ok(())
    }

    /// Replace `id`'s own sites; the targets it stopped referring to are touched.
    pub(super) fn replace_sites(&mut self, id: SymbolId, refs: &[Reference]) -> Vec<SiteId> {
        let (ids, old_targets) = self.sites.set_owned(&mut self.symbols, id, refs);
        self.touched.extend(old_targets);
        self.touched.extend(refs.iter().map(|r| r.target));
        ids
    }

    pub(super) fn add_sites(&mut self, id: SymbolId, refs: &[Reference]) -> Result<()> {
        let sites = self.replace_sites(id, refs);
        if !self.lazy_patching {
            for &site in &sites {
                self.patch(site)?;
            }
            self.made.extend(sites);
        }
        Ok(())
    }

    /// With lazy patching (a fresh build), now that every address is known: patch every live
    /// site once, in site order. GOT entries made meanwhile are sites too, appended and
    /// patched in the same pass.
    pub(super) fn patch_all(&mut self) -> Result<()> {
        if !std::mem::replace(&mut self.lazy_patching, false) {
            return Ok(());
        }
        // Every symbol's address, read once in symbol order into 4 bytes each: the sites'
        // targets are all over the symbol array, and a dense copy stays in the cache (a
        // fresh build has no entry jumps, so where a symbol is, is what references use).
        const NONE: u32 = u32::MAX;
        let mut addr: Vec<u32> = (0..self.symbols.len() as u32)
            .map(|id| {
                let id = SymbolId(id);
                match (self.symbols.ref_addr(id), self.symbols.get(id).addr()) {
                    (Some(r), Some(a)) if r == a => r as u32,
                    _ => NONE,
                }
            })
            .collect();
        // Indirect functions are reached through their stubs (`ifunc.rs`).
        for id in self.symbols.ifuncs() {
            addr[id.index()] = NONE;
        }
        let mut i = 0;
        while i < self.sites.records().len() as u32 {
            let id = SiteId(i);
            i += 1;
            if !self.sites.is_live(id) {
                continue;
            }
            let site = self.sites.get(id);
            // The plain kinds between two placed symbols here; the rest (GOT loads, imports,
            // thread-locals, anything unplaced) as in an update.
            let (Place::In { owner, offset }, true) = (
                site.place,
                matches!(
                    site.kind,
                    RefKind::PcRel32
                        | RefKind::Abs32
                        | RefKind::Abs32S
                        | RefKind::Abs64
                        | RefKind::PcRel64
                ),
            ) else {
                self.patch(id)?;
                continue;
            };
            let (o, t) = (addr[owner.index()], addr[site.target.index()]);
            if o == NONE || t == NONE {
                self.patch(id)?;
                continue;
            }
            let p = u64::from(o) + u64::from(offset);
            let field = x86_64::encode(site.kind, u64::from(t), site.addend, p, None)
                .map_err(|value| self.overflow(&site, value))?;
            let at = self.file_offset(region_of(p), p);
            self.store.write(at, field.bytes());
            self.stats.sites_patched += 1;
        }
        self.patch_canonical_referrers()
    }

    /// Symbols `finish` must look at: every symbol in a fresh build, else those touched.
    pub(super) fn touched_ids(&self) -> Vec<SymbolId> {
        match &self.touched {
            Touched::All => (0..self.symbols.len() as u32).map(SymbolId).collect(),
            Touched::Some(set) => set.iter().copied().collect(),
        }
    }

    /// `id`'s address, as references use it, became known or changed: its referrers are
    /// patched at the end of the build (`patch_pending`), those of every such symbol at once.
    pub(super) fn patch_referrers(&mut self, id: SymbolId) {
        if !self.lazy_patching {
            self.repatch.push(id);
        }
    }

    /// The last patches, once every address is known: every site in a fresh build; in an
    /// update, the referrers of the symbols `patch_referrers` named. Those are found among
    /// the sites this build made when the count says that is all of them (a new function
    /// and its new callers), else by one scan for all of them together.
    pub(super) fn patch_pending(&mut self) -> Result<()> {
        if self.lazy_patching {
            return self.patch_all();
        }
        let mut targets = std::mem::take(&mut self.repatch);
        targets.sort_unstable();
        targets.dedup();
        if targets.is_empty() {
            return Ok(());
        }
        let mut made = std::mem::take(&mut self.made);
        made.sort_unstable_by_key(|s| s.0);
        made.dedup();
        made.retain(|&s| {
            self.sites.is_live(s) && targets.binary_search(&self.sites.get(s).target).is_ok()
        });
        let mut new_refs: HashMap<SymbolId, u32> = HashMap::new();
        for &s in &made {
            let site = self.sites.get(s);
            if matches!(site.place, Place::In { .. }) {
                *new_refs.entry(site.target).or_default() += 1;
            }
        }
        let older: Vec<SymbolId> = targets
            .iter()
            .copied()
            .filter(|t| self.symbols.get(*t).refs > new_refs.get(t).copied().unwrap_or(0))
            .collect();
        let mut sites = made;
        sites.extend(self.sites.referring_to_any(&older));
        // GOT entries are not counted: each target's own, whenever it was made.
        for &t in &targets {
            let g = self.symbols.got_site(t);
            if g != 0 {
                sites.push(SiteId(g - 1));
            }
        }
        sites.sort_unstable_by_key(|s| s.0);
        sites.dedup();
        // (A site patched already gets the same bytes again.)
        for site in sites {
            self.patch(site)?;
        }
        self.patch_canonical_referrers()
    }

    /// Give `target` a GOT entry if it has none; the entry is itself a site holding its address.
    pub(super) fn ensure_got_entry(&mut self, target: SymbolId) -> Result<()> {
        if self.got_of(target).is_some() {
            return Ok(());
        }
        let slot: Slot = self.regions[RegionKind::Got.index()].alloc(8, 8)?;
        self.live_new_got(slot.addr);
        self.ensure_extent(RegionKind::Got, slot.end() - RegionKind::Got.vaddr())?;
        let at = self.file_offset(RegionKind::Got, slot.addr);
        self.store.fill(at, 8, 0);
        let site = self
            .sites
            .add_got_entry(&mut self.symbols, target, slot.addr);
        if !self.lazy_patching {
            self.made.push(site);
        }
        self.patch(site)
    }

    /// A thread-local reached by the general-dynamic sequence: rewritten to local-exec with
    /// the variable's offset from the thread pointer (x86-64 variant II: the executable's
    /// block ends at the thread pointer, so offsets are negative).
    pub(super) fn patch_tls(&mut self, site: &Site, p: u64, s: u64) -> Result<()> {
        let Place::In { offset, .. } = site.place else {
            return Err(self.tls_error(site, "is not in code"));
        };
        let target = self.symbols.get(site.target).placement();
        if target.is_none_or(|t| t.region != RegionKind::Tls) {
            return Err(self.tls_error(site, "does not name a thread-local data object"));
        }
        let block = align_up(self.tls_size(), crate::layout::TLS_ALIGN);
        let tpoff = (s - RegionKind::Tls.vaddr()) as i64 - block as i64;
        // Where the rewritten bytes start, relative to the site, and what they become.
        let (back, bytes): (u64, Vec<u8>) = match site.kind {
            RefKind::TlsGdToLe if offset >= 4 => {
                let before = self.store.read(self.file_offset(region_of(p), p - 4), 16);
                let le = x86_64::tls_local_exec(&before, tpoff as i32);
                (4, le.map(|b| b.to_vec()).unwrap_or_default())
            }
            RefKind::TlsLdToLe if offset >= 3 => {
                let before = self.store.read(self.file_offset(region_of(p), p - 3), 13);
                (3, x86_64::tlsld_local_exec(&before).unwrap_or_default())
            }
            RefKind::GotTpOffToLe if offset >= 3 => {
                let before = self.store.read(self.file_offset(region_of(p), p - 3), 3);
                let before: [u8; 3] = before.try_into().unwrap_or([0; 3]);
                let insn = x86_64::gottpoff_local_exec(before);
                let mut b = insn.map(|i| i.to_vec()).unwrap_or_default();
                if !b.is_empty() {
                    b.extend_from_slice(&(tpoff as i32).to_le_bytes());
                }
                (3, b)
            }
            RefKind::TpOff32 => {
                let v = tpoff + site.addend;
                let v = i32::try_from(v).map_err(|_| self.overflow(site, i128::from(v)))?;
                (0, v.to_le_bytes().to_vec())
            }
            _ => (0, Vec::new()),
        };
        if bytes.is_empty() {
            return Err(self.tls_error(site, "is not a sequence zerolink can make local-exec"));
        }
        let at = self.file_offset(region_of(p), p - back);
        self.store.write(at, &bytes);
        self.live_write(region_of(p), p - back, &bytes, WriteRule::Always);
        self.stats.sites_patched += 1;
        Ok(())
    }

    fn tls_error(&self, site: &Site, why: &'static str) -> ImageError {
        let (function, offset) = match site.place {
            Place::In { owner, offset } => (self.symbols.name(owner), offset),
            Place::GotEntry { addr } => ("<GOT>".to_string(), (addr & 0xffff_ffff) as u32),
        };
        ImageError::ThreadLocal {
            function,
            offset,
            target: self.symbols.name(site.target),
            why,
        }
    }

    /// The PLT stub of imported function `target`, made on first use: `jmp *GOT(target)` in
    /// an 8-byte text slot of its own, a definition named `TARGET@plt` whose one site is that
    /// GOT reference, so whatever happens to the GOT entry re-patches it. The stub never moves.
    pub(super) fn ensure_plt_stub(&mut self, target: SymbolId) -> Result<u64> {
        if let Some(stub) = self.symbols.get(target).plt() {
            return Ok(stub);
        }
        // (Made for an earlier import of the same name, the stub may exist already: the
        // record forgets it while the symbol is defined by the program.)
        let stub = self.stub_of(target)?;
        let mut sym = self.symbols.get(target);
        sym.set_plt(Some(stub));
        self.symbols.set(target, sym);
        self.touched.insert(target);
        Ok(stub)
    }

    /// The stub `TARGET@plt`, `jmp *GOT(target)` in an exact text slot of its own, whose one
    /// site is that GOT reference (so whatever happens to the GOT entry re-patches it): its
    /// address, the stub placed on first use. It never moves, and no unit owns it (like
    /// `_start`, no sweep removes it).
    pub(super) fn stub_of(&mut self, target: SymbolId) -> Result<u64> {
        let name = format!("{}@plt", self.symbols.name(target));
        let id = self.declare(&name, SymbolKind::Function, Binding::Local)?;
        if let Some(addr) = self.symbols.get(id).addr() {
            return Ok(addr);
        }
        let refs = [Reference {
            offset: x86_64::PLT_GOT_AT,
            kind: RefKind::GotPcRel32,
            target,
            addend: -4,
        }];
        self.place_new(
            id,
            RegionKind::Text,
            Contents::Bytes(&x86_64::PLT_STUB),
            16,
            &refs,
            true,
        )?;
        self.mark_builtin(id);
        Ok(self.symbols.get(id).addr().expect("just placed"))
    }

    pub(super) fn site_addr(&self, site: &Site) -> Option<u64> {
        match site.place {
            Place::In { owner, offset } => self
                .symbols
                .get(owner)
                .addr()
                .map(|a| a + u64::from(offset)),
            Place::GotEntry { addr } => Some(addr),
        }
    }

    /// Write a site's field if everything it depends on has an address; otherwise leave it for
    /// when its target is defined.
    pub(super) fn patch(&mut self, id: SiteId) -> Result<()> {
        let site = self.sites.get(id);
        let Some(p) = self.site_addr(&site) else {
            return Ok(());
        };
        let target = self.symbols.get(site.target);
        let s = match (self.symbols.ref_addr(site.target), target.import()) {
            (Some(s), _) => s,
            (None, Some(_)) => return self.patch_import_site(&site, p),
            (None, None) => return Ok(()),
        };
        if self.symbols.is_ifunc(site.target) {
            return self.patch_ifunc_site(&site, p, s);
        }
        if matches!(
            site.kind,
            RefKind::TlsGdToLe | RefKind::TpOff32 | RefKind::GotTpOffToLe | RefKind::TlsLdToLe
        ) {
            return self.patch_tls(&site, p, s);
        }
        let mut kind = site.kind;
        if kind == RefKind::GotPcRel32 {
            // The target has an address in the image (checked above), so a GOT load can
            // become an address computation.
            if self.set_got_load_form(&site, p, true) {
                kind = RefKind::PcRel32;
            } else {
                self.ensure_got_entry(site.target)?;
            }
        }
        // (Only a GOT load still reads the GOT entry's address.)
        let got = (kind == RefKind::GotPcRel32)
            .then(|| self.got_of(site.target))
            .flatten();
        let field = x86_64::encode(kind, s, site.addend, p, got)
            .map_err(|value| self.overflow(&site, value))?;
        let at = self.file_offset(region_of(p), p);
        self.store.write(at, field.bytes());
        self.live_site(&site, p, field.bytes());
        self.stats.sites_patched += 1;
        Ok(())
    }

    /// A site whose target comes from a shared library: code reaches it through a GOT entry
    /// that the dynamic loader fills; data holding its address gets a dynamic relocation
    /// (written at `finish`); anything else cannot be encoded in an executable.
    pub(super) fn patch_import_site(&mut self, site: &Site, p: u64) -> Result<()> {
        let at = self.file_offset(region_of(p), p);
        match (site.kind, site.place) {
            (_, Place::GotEntry { .. }) => {
                self.store.write(at, &[0; 8]);
                self.live_import_site(site, p);
                Ok(())
            }
            (RefKind::GotPcRel32, _) if self.patch_canonical_got_load(site, p)? => Ok(()),
            (RefKind::GotPcRel32, _) => {
                self.set_got_load_form(site, p, false);
                self.ensure_got_entry(site.target)?;
                let got = self.got_of(site.target);
                let field = x86_64::encode(RefKind::GotPcRel32, 0, site.addend, p, got)
                    .map_err(|value| self.overflow(site, value))?;
                self.store.write(at, field.bytes());
                self.live_write(region_of(p), p, field.bytes(), WriteRule::Always);
                self.stats.sites_patched += 1;
                Ok(())
            }
            (RefKind::TlsGdToLe, Place::In { offset, .. }) if offset >= 4 => {
                // A shared library's thread-local: initial-exec, its offset from the thread
                // pointer read from a GOT entry the loader fills (`R_X86_64_TPOFF64`).
                self.ensure_got_entry(site.target)?;
                let got = self.got_of(site.target).unwrap_or(0);
                let start = p - 4;
                let before = self.store.read(self.file_offset(region_of(p), start), 16);
                let disp = got as i64 - (start as i64 + 16);
                let ie = i32::try_from(disp)
                    .ok()
                    .and_then(|d| x86_64::tls_initial_exec(&before, d))
                    .ok_or_else(|| {
                        self.tls_error(site, "is not a sequence zerolink can make initial-exec")
                    })?;
                let at = self.file_offset(region_of(p), start);
                self.store.write(at, &ie);
                self.live_write(region_of(p), start, &ie, WriteRule::Always);
                self.stats.sites_patched += 1;
                Ok(())
            }
            (RefKind::GotTpOffToLe, Place::In { offset, .. }) if offset >= 3 => {
                // Initial-exec already (`mov/add reg, [rip + x@gottpoff]`): it stays so,
                // pointed at the variable's GOT entry.
                self.ensure_got_entry(site.target)?;
                let got = self.got_of(site.target).unwrap_or(0);
                let insn_at = self.file_offset(region_of(p), p - 3);
                let before: [u8; 3] = self.store.read(insn_at, 3).try_into().unwrap_or([0; 3]);
                let insn = x86_64::gottpoff_initial_exec(before).ok_or_else(|| {
                    self.tls_error(site, "is not an instruction zerolink can make initial-exec")
                })?;
                let field = x86_64::encode(RefKind::GotPcRel32, 0, site.addend, p, Some(got))
                    .map_err(|value| self.overflow(site, value))?;
                let mut bytes = insn.to_vec();
                bytes.extend_from_slice(field.bytes());
                self.store.write(insn_at, &bytes);
                self.live_write(region_of(p), p - 3, &bytes, WriteRule::Always);
                self.stats.sites_patched += 1;
                Ok(())
            }
            (RefKind::PcRel32 | RefKind::Abs32 | RefKind::Abs32S | RefKind::PcRel64, _)
                if self
                    .export_of(&self.symbols.name(site.target))
                    .is_some_and(|e| e.object.is_some()) =>
            {
                // A library's data object reached directly: `finish` makes it a copy in the
                // executable (`copy.rs`) and patches this site against it.
                Ok(())
            }
            (RefKind::PcRel32 | RefKind::Abs32 | RefKind::Abs32S | RefKind::PcRel64, _)
                if self
                    .export_of(&self.symbols.name(site.target))
                    .is_some_and(|e| e.data) =>
            {
                Err(ImageError::Copy {
                    name: self.symbols.name(site.target),
                    why: "the library gives it no type and size to copy",
                })
            }
            (RefKind::PcRel32, Place::In { owner, .. })
                if self
                    .symbols
                    .get(owner)
                    .placement()
                    .is_some_and(|pl| pl.region == RegionKind::Text) =>
            {
                // A plain call to a library function (a C object's `call f@PLT`): through a
                // stub that jumps via the function's GOT entry, as ld's PLT does. An address
                // taken (`lea f(%rip)`) is the stub too, made the function's canonical one.
                if !self.is_branch_operand(p) {
                    self.make_canonical(site.target)?;
                }
                let stub = self.ensure_plt_stub(site.target)?;
                let field = x86_64::encode(RefKind::PcRel32, stub, site.addend, p, None)
                    .map_err(|value| self.overflow(site, value))?;
                self.store.write(at, field.bytes());
                self.live_write(region_of(p), p, field.bytes(), WriteRule::Always);
                self.stats.sites_patched += 1;
                Ok(())
            }
            (RefKind::Abs64, Place::In { owner, .. })
                if self
                    .symbols
                    .get(owner)
                    .placement()
                    .is_some_and(|pl| pl.region == RegionKind::Data) =>
            {
                self.store.write(at, &[0; 8]);
                self.live_import_site(site, p);
                Ok(())
            }
            (RefKind::Abs32 | RefKind::Abs32S | RefKind::PcRel32 | RefKind::PcRel64, _)
                if !(self.pie && matches!(site.kind, RefKind::Abs32 | RefKind::Abs32S)) =>
            {
                // The function's address as a constant, or PC-relative from data: its
                // canonical PLT stub.
                self.make_canonical(site.target)?;
                let stub = self.ensure_plt_stub(site.target)?;
                let field = x86_64::encode(site.kind, stub, site.addend, p, None)
                    .map_err(|value| self.overflow(site, value))?;
                self.store.write(at, field.bytes());
                self.live_write(region_of(p), p, field.bytes(), WriteRule::Always);
                self.stats.sites_patched += 1;
                Ok(())
            }
            (kind, place) => {
                let (function, offset) = match place {
                    Place::In { owner, offset } => (self.symbols.name(owner), offset),
                    Place::GotEntry { .. } => unreachable!("handled above"),
                };
                Err(ImageError::ImportReference {
                    function,
                    offset,
                    kind: kind.name(),
                    target: self.symbols.name(site.target),
                })
            }
        }
    }

    /// Whether a shared library's symbol is a thread-local: something refers to it the way
    /// code refers to thread-locals.
    pub(super) fn is_tls_import(&self, id: SymbolId) -> bool {
        self.symbols.get(id).tls_referred()
    }

    pub(super) fn overflow(&self, site: &Site, value: i128) -> ImageError {
        let (function, offset) = match site.place {
            Place::In { owner, offset } => (self.symbols.name(owner), offset),
            Place::GotEntry { addr } => ("<GOT>".to_string(), (addr & 0xffff_ffff) as u32),
        };
        ImageError::Overflow {
            function,
            offset,
            kind: site.kind.name(),
            target: self.symbols.name(site.target),
            value,
        }
    }

    /// Give a GOT-load site its relaxed (`lea`) or GOT (`mov`) form, if the instruction is one
    /// of the two; false if it is some other instruction, which must go through the GOT.
    pub(super) fn set_got_load_form(&mut self, site: &Site, p: u64, relaxed: bool) -> bool {
        let Place::In { owner, offset } = site.place else {
            return false;
        };
        let in_text = self
            .symbols
            .get(owner)
            .placement()
            .is_some_and(|pl| pl.region == RegionKind::Text);
        if offset < 3 || !in_text {
            return false;
        }
        let at = self.file_offset(RegionKind::Text, p - 3);
        let before: [u8; 3] = self.store.read(at, 3).try_into().expect("three bytes");
        match x86_64::got_load_opcode(before, relaxed) {
            Some(opcode) => {
                if opcode != before[1] {
                    self.store.write(at + 1, &[opcode]);
                    self.live_write(RegionKind::Text, p - 2, &[opcode], WriteRule::Always);
                }
                true
            }
            None => false,
        }
    }

    /// Make the region's file extent hold at least `len` bytes.
    pub(super) fn ensure_extent(&mut self, region: RegionKind, len: u64) -> Result<()> {
        let i = region.index();
        let used = self.regions[i].used;
        let initial = self.initial_extent[i];
        self.extents[i] = Some(grow_extent(
            &mut self.store,
            self.extents[i],
            len,
            used,
            initial,
        )?);
        Ok(())
    }

    pub(super) fn file_offset(&self, region: RegionKind, addr: u64) -> u64 {
        let e = self.extents[region.index()].expect("placed bytes have an extent");
        e.offset + (addr - region.vaddr())
    }

    /// Counts are complete only after `Sites::count_pending` (`finish` and `wanted` call it).
    pub(super) fn has_code_referrers(&self, id: SymbolId) -> bool {
        self.symbols.get(id).refs != 0
    }
}
