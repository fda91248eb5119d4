//! The image under construction or update: regions, slots, symbols and sites, and the file
//! they live in.
//!
//! Defining a function or data object places it in a slot, writes its bytes, records each
//! reference it makes as a site, and patches at once every site whose target already has an
//! address, including earlier sites that were waiting for this very symbol. Redefining one
//! writes it over its old slot if it fits (nothing that refers to it changes) and otherwise
//! moves it and re-patches exactly the sites that refer to it. `finish` adds the runtime pieces
//! that were asked for, checks that nothing is left undefined, writes the tables, and commits.
//!
//! A *fresh* image is a new file renamed over OUT at the end. An *opened* image is an existing
//! executable read back from its `.zerolink` table; its writes go to an overlay and reach the
//! file only at commit, so a failed update leaves OUT exactly as it was (see `store.rs`).
//!
//! File space: each region's bytes, and each tail table, occupy one extent of the file
//! (page-aligned, with spare room). An extent that fills up grows in place when it is the last
//! thing in the file and is otherwise copied to the end; addresses never change, only offsets.

use std::path::Path;

use object::elf;

use crate::elf::{Section, Segment, SymbolEntry};
use crate::error::{ImageError, Result, Undefined};
use crate::layout::{align_up, Extent, RegionKind, Tail, HEADERS_VADDR, PAGE};
use crate::output::Output;
use crate::persist::{self, Reject, Snapshot};
use crate::sites::{Place, RefKind, Reference, Site, SiteId, Sites};
use crate::slots::{Region, Slot};
use crate::store::{CommitPlan, Overlay, Store};
use crate::symbols::{Binding, Placement, SymbolId, SymbolKind, SymbolTable};
use crate::x86_64;

/// Contents of a data object.
#[derive(Debug, Clone, Copy)]
pub enum Contents<'a> {
    Bytes(&'a [u8]),
    /// Zero-filled, with this size.
    Zeros(u64),
}

impl Contents<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Contents::Bytes(b) => b.len() as u64,
            Contents::Zeros(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a build produced, for reports and `--stats`.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub functions: usize,
    pub data_objects: usize,
    pub sites: usize,
    pub got_entries: usize,
    pub file_size: u64,
    /// Bytes in use per region, in `RegionKind::ALL` order.
    pub region_used: [u64; 5],
    /// Definitions written over their old slot.
    pub in_place: usize,
    /// Definitions that outgrew their slot and moved.
    pub moved: usize,
    /// Definitions removed.
    pub removed: usize,
    /// Site fields written.
    pub sites_patched: usize,
    /// Bytes written to the file by this build.
    pub bytes_written: u64,
    /// Bytes of the `.zerolink` table.
    pub table_bytes: u64,
    /// How many builds made this file (1 after a full build).
    pub generation: u64,
}

/// Name of the program's entry function, called by `_start`.
pub const ENTRY: &str = "main";

/// Why an existing file cannot be updated in place.
#[derive(Debug)]
pub enum OpenError {
    /// There is no file: a first build, nothing to say.
    Missing,
    /// A reason to print before rebuilding in full.
    Incompatible(Reject),
}

pub struct Image {
    store: Store,
    regions: [Region; 5],
    extents: [Option<Extent>; 5],
    tails: [Option<Extent>; 4],
    symbols: SymbolTable,
    sites: Sites,
    /// Initial file capacity per region, from the caller's size hint.
    initial_extent: [u64; 5],
    /// Target, flags and version the image is built with; an update requires the same.
    settings: String,
    generation: u64,
    /// For the update protocol: where the old table's flags are.
    old_table: Option<u64>,
    stats: Summary,
}

impl Image {
    /// Start a new executable that will replace `path` when finished.
    pub fn create(path: &Path) -> Result<Image> {
        let mut out = Output::create(path)?;
        // The headers page is always first in the file and the address space.
        let headers = out.allocate(PAGE, PAGE)?;
        debug_assert_eq!(headers, 0);
        Ok(Image {
            store: Store::Fresh(out),
            regions: RegionKind::ALL.map(Region::new),
            extents: [None; 5],
            tails: [None; 4],
            symbols: SymbolTable::default(),
            sites: Sites::default(),
            initial_extent: [PAGE, PAGE, PAGE, PAGE, 0],
            settings: String::new(),
            generation: 0,
            old_table: None,
            stats: Summary::default(),
        })
    }

    /// Reopen an executable zerolink built, to update it in place. `settings` must equal the
    /// ones it was built with.
    pub fn open(path: &Path, settings: &str) -> Result<Image, OpenError> {
        if !path.exists() {
            return Err(OpenError::Missing);
        }
        let overlay = Overlay::open(path)
            .map_err(|e| OpenError::Incompatible(format!("cannot read it: {e}")))?;
        let (offset, table) = find_table(overlay.base()).map_err(OpenError::Incompatible)?;
        if table.settings != settings {
            return Err(OpenError::Incompatible(
                "it was built with other target settings or another zerolink version".into(),
            ));
        }
        if table.tails.iter().any(|t| t.is_none()) {
            return Err(OpenError::Incompatible("its table is incomplete".into()));
        }
        let mut sites = Sites::default();
        for site in table.sites {
            sites.add(site);
        }
        let regions: [Region; 5] = table
            .regions
            .try_into()
            .map_err(|_| OpenError::Incompatible("bad region count".into()))?;
        Ok(Image {
            store: Store::Overlay(overlay),
            regions,
            extents: table.extents,
            tails: table.tails,
            symbols: SymbolTable::from_symbols(table.symbols),
            sites,
            initial_extent: [PAGE, PAGE, PAGE, PAGE, 0],
            settings: table.settings,
            generation: table.header.generation,
            old_table: Some(offset),
            stats: Summary::default(),
        })
    }

    /// Record the settings the executable is built with (compared on the next update).
    pub fn set_settings(&mut self, settings: &str) {
        self.settings = settings.to_string();
    }

    /// Tell the image how many bytes of code to expect, so the text extent is sized once.
    pub fn expect_code_bytes(&mut self, bytes: u64) {
        let cap = align_up(bytes + bytes / 2, PAGE);
        let slot = &mut self.initial_extent[RegionKind::Text.index()];
        *slot = (*slot).max(cap);
    }

    pub fn declare(&mut self, name: &str, kind: SymbolKind, binding: Binding) -> Result<SymbolId> {
        self.symbols.declare(name, kind, binding)
    }

    pub fn symbols(&self) -> &SymbolTable {
        &self.symbols
    }

    pub fn sites(&self) -> &Sites {
        &self.sites
    }

    pub fn regions(&self) -> &[Region; 5] {
        &self.regions
    }

    pub fn settings(&self) -> &str {
        &self.settings
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Remember what a symbol was built from, for the next update to compare.
    pub fn set_hashes(&mut self, id: SymbolId, content: u64, signature: u64) {
        let sym = self.symbols.get_mut(id);
        sym.hash = content;
        sym.sig_hash = signature;
    }

    pub fn define_function(
        &mut self,
        id: SymbolId,
        code: &[u8],
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        self.check_kind(id, SymbolKind::Function)?;
        self.define(id, RegionKind::Text, Contents::Bytes(code), align, refs)
    }

    pub fn define_data(
        &mut self,
        id: SymbolId,
        contents: Contents<'_>,
        align: u64,
        writable: bool,
        refs: &[Reference],
    ) -> Result<()> {
        self.check_kind(id, SymbolKind::Data)?;
        let region = data_region(contents, writable, refs);
        self.define(id, region, contents, align, refs)
    }

    /// Replace a function's code: in its slot if it fits, else in a new slot.
    pub fn redefine_function(
        &mut self,
        id: SymbolId,
        code: &[u8],
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        self.check_kind(id, SymbolKind::Function)?;
        self.redefine(id, RegionKind::Text, Contents::Bytes(code), align, refs)
    }

    /// Replace a data object's contents: in its slot if it fits and stays in the same region.
    pub fn redefine_data(
        &mut self,
        id: SymbolId,
        contents: Contents<'_>,
        align: u64,
        writable: bool,
        refs: &[Reference],
    ) -> Result<()> {
        self.check_kind(id, SymbolKind::Data)?;
        let region = data_region(contents, writable, refs);
        self.redefine(id, region, contents, align, refs)
    }

    /// Take a definition out: its slot is freed and its own references dropped. Anything that
    /// still refers to it is reported as undefined by `finish`.
    pub fn remove(&mut self, id: SymbolId) {
        if self.unplace(id) {
            self.stats.removed += 1;
        }
    }

    /// Free a symbol's slot and drop its own sites; true if it was placed.
    fn unplace(&mut self, id: SymbolId) -> bool {
        self.sites.remove_owned_by(id);
        let sym = self.symbols.get_mut(id);
        sym.hash = 0;
        sym.sig_hash = 0;
        sym.builtin = false;
        match sym.placement.take() {
            Some(p) => {
                self.regions[p.region.index()].free(p.slot);
                true
            }
            None => false,
        }
    }

    fn check_kind(&self, id: SymbolId, kind: SymbolKind) -> Result<()> {
        let sym = self.symbols.get(id);
        if sym.kind != kind {
            return Err(ImageError::KindMismatch {
                name: sym.name.clone(),
                declared: sym.kind.describe(),
                used: kind.describe(),
            });
        }
        Ok(())
    }

    fn check_definition(
        &self,
        id: SymbolId,
        size: u64,
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        let name = &self.symbols.get(id).name;
        if !align.is_power_of_two() || align > PAGE {
            return Err(ImageError::BadAlignment {
                name: name.clone(),
                align,
            });
        }
        for r in refs {
            if u64::from(r.offset) + u64::from(r.kind.width()) > size {
                return Err(ImageError::SiteOutOfBounds {
                    function: name.clone(),
                    offset: r.offset,
                    size,
                });
            }
        }
        Ok(())
    }

    fn define(
        &mut self,
        id: SymbolId,
        region: RegionKind,
        contents: Contents<'_>,
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        if self.symbols.get(id).placement.is_some() {
            return Err(ImageError::DuplicateDefinition(
                self.symbols.get(id).name.clone(),
            ));
        }
        let size = contents.len();
        self.check_definition(id, size, align, refs)?;
        let used_before = self.regions[region.index()].used;
        let slot = self.regions[region.index()].alloc(size, align)?;
        if region.in_file() {
            // Fill the alignment gap before a slot at the top, and the slot itself.
            let fill_from = slot.addr.min(region.vaddr() + used_before);
            self.write_slot(region, fill_from, slot, contents)?;
        }
        self.symbols.get_mut(id).placement = Some(Placement { region, slot, size });
        self.add_sites(id, refs)?;
        // Incoming references that were waiting for this symbol's address, or that pointed at
        // its old slot.
        self.patch_referrers(id)
    }

    fn redefine(
        &mut self,
        id: SymbolId,
        region: RegionKind,
        contents: Contents<'_>,
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        let Some(old) = self.symbols.get(id).placement else {
            return self.define(id, region, contents, align, refs);
        };
        let size = contents.len();
        self.check_definition(id, size, align, refs)?;
        self.sites.remove_owned_by(id);
        let align = align.max(region.min_slot_align());
        if old.region == region && size <= old.slot.capacity && old.slot.addr % align == 0 {
            if region.in_file() {
                self.write_slot(region, old.slot.addr, old.slot, contents)?;
            }
            self.symbols.get_mut(id).placement = Some(Placement {
                region,
                slot: old.slot,
                size,
            });
            self.stats.in_place += 1;
            // Same address: only the symbol's own fields need writing.
            return self.add_sites(id, refs);
        }
        self.regions[old.region.index()].free(old.slot);
        self.symbols.get_mut(id).placement = None;
        self.stats.moved += 1;
        self.define(id, region, contents, align, refs)
    }

    /// Write `contents` at the start of `slot` and fill from `fill_from` to the slot's end.
    fn write_slot(
        &mut self,
        region: RegionKind,
        fill_from: u64,
        slot: Slot,
        contents: Contents<'_>,
    ) -> Result<()> {
        self.ensure_extent(region, slot.end() - region.vaddr())?;
        let mut bytes = vec![region.fill_byte(); (slot.end() - fill_from) as usize];
        if let Contents::Bytes(b) = contents {
            let at = (slot.addr - fill_from) as usize;
            bytes[at..at + b.len()].copy_from_slice(b);
        } else if region.fill_byte() != 0 {
            let at = (slot.addr - fill_from) as usize;
            bytes[at..at + contents.len() as usize].fill(0);
        }
        let at = self.file_offset(region, fill_from);
        self.store.write(at, &bytes);
        Ok(())
    }

    fn add_sites(&mut self, id: SymbolId, refs: &[Reference]) -> Result<()> {
        for r in refs {
            let site = self.sites.add(Site {
                place: Place::In {
                    owner: id,
                    offset: r.offset,
                },
                kind: r.kind,
                target: r.target,
                addend: r.addend,
            });
            self.patch(site)?;
        }
        Ok(())
    }

    fn patch_referrers(&mut self, id: SymbolId) -> Result<()> {
        for i in 0..self.sites.referring_to(id).len() {
            let site = self.sites.referring_to(id)[i];
            if !matches!(self.sites.get(site).place, Place::In { owner, .. } if owner == id) {
                self.patch(site)?;
            }
        }
        Ok(())
    }

    /// Give `target` a GOT entry if it has none; the entry is itself a site holding its address.
    fn ensure_got_entry(&mut self, target: SymbolId) -> Result<()> {
        if self.symbols.get(target).got.is_some() {
            return Ok(());
        }
        let slot: Slot = self.regions[RegionKind::Got.index()].alloc(8, 8)?;
        self.ensure_extent(RegionKind::Got, slot.end() - RegionKind::Got.vaddr())?;
        let at = self.file_offset(RegionKind::Got, slot.addr);
        self.store.fill(at, 8, 0);
        self.symbols.get_mut(target).got = Some(slot.addr);
        let site = self.sites.add(Site {
            place: Place::GotEntry { addr: slot.addr },
            kind: RefKind::Abs64,
            target,
            addend: 0,
        });
        self.patch(site)
    }

    fn site_addr(&self, site: &Site) -> Option<u64> {
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
    fn patch(&mut self, id: SiteId) -> Result<()> {
        let site = *self.sites.get(id);
        let Some(p) = self.site_addr(&site) else {
            return Ok(());
        };
        let Some(s) = self.symbols.get(site.target).addr() else {
            return Ok(());
        };
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
        let target = self.symbols.get(site.target);
        let field = x86_64::encode(kind, s, site.addend, p, target.got).map_err(|value| {
            let (function, offset) = match site.place {
                Place::In { owner, offset } => (self.symbols.get(owner).name.clone(), offset),
                Place::GotEntry { addr } => ("<GOT>".to_string(), (addr & 0xffff_ffff) as u32),
            };
            ImageError::Overflow {
                function,
                offset,
                kind: site.kind.name(),
                target: target.name.clone(),
                value,
            }
        })?;
        let at = self.file_offset(region_of(p), p);
        self.store.write(at, field.bytes());
        self.stats.sites_patched += 1;
        Ok(())
    }

    /// Give a GOT-load site its relaxed (`lea`) or GOT (`mov`) form, if the instruction is one
    /// of the two; false if it is some other instruction, which must go through the GOT.
    fn set_got_load_form(&mut self, site: &Site, p: u64, relaxed: bool) -> bool {
        let Place::In { owner, offset } = site.place else {
            return false;
        };
        let owner = self.symbols.get(owner);
        if offset < 3 || owner.placement.map(|pl| pl.region) != Some(RegionKind::Text) {
            return false;
        }
        let at = self.file_offset(RegionKind::Text, p - 3);
        let before: [u8; 3] = self.store.read(at, 3).try_into().expect("three bytes");
        match x86_64::got_load_opcode(before, relaxed) {
            Some(opcode) => {
                if opcode != before[1] {
                    self.store.write(at + 1, &[opcode]);
                }
                true
            }
            None => false,
        }
    }

    /// Make the region's file extent hold at least `len` bytes.
    fn ensure_extent(&mut self, region: RegionKind, len: u64) -> Result<()> {
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

    fn file_offset(&self, region: RegionKind, addr: u64) -> u64 {
        let e = self.extents[region.index()].expect("placed bytes have an extent");
        e.offset + (addr - region.vaddr())
    }

    /// Define every builtin that is referred to but not defined by the program, plus `_start`
    /// and the interrupted-update stub on a fresh image.
    fn add_runtime(&mut self) -> Result<()> {
        let wanted: Vec<SymbolId> = self
            .symbols
            .iter()
            .filter(|(id, s)| {
                s.placement.is_none()
                    && s.kind == SymbolKind::Function
                    && !self.sites.referring_to(*id).is_empty()
                    && x86_64::builtin(&s.name).is_some()
            })
            .map(|(id, _)| id)
            .collect();
        for id in wanted {
            let stub = x86_64::builtin(&self.symbols.get(id).name).expect("filtered above");
            self.define_stub(id, stub.code, stub.calls)?;
        }
        let start = self.declare(x86_64::START.name, SymbolKind::Function, Binding::Global)?;
        if self.symbols.get(start).placement.is_none() {
            self.define_stub(start, x86_64::START.code, x86_64::START.calls)?;
        }
        let stub = self.declare(
            x86_64::INTERRUPTED_NAME,
            SymbolKind::Function,
            Binding::Local,
        )?;
        if self.symbols.get(stub).placement.is_none() {
            self.define_stub(stub, &x86_64::interrupted_stub(), &[])?;
        }
        Ok(())
    }

    fn define_stub(&mut self, id: SymbolId, code: &[u8], calls: &[(u32, &str)]) -> Result<()> {
        self.symbols.get_mut(id).builtin = true;
        let mut refs = Vec::new();
        for &(offset, target) in calls {
            let target = self.declare(target, SymbolKind::Function, Binding::Global)?;
            refs.push(Reference {
                offset,
                kind: RefKind::PcRel32,
                target,
                addend: -4,
            });
        }
        self.define(id, RegionKind::Text, Contents::Bytes(code), 16, &refs)
    }

    /// Drop built-ins nothing refers to any more, so an update keeps the same set a full build
    /// of the same input would have.
    fn drop_unused_builtins(&mut self) {
        let unused: Vec<SymbolId> =
            self.symbols
                .iter()
                .filter(|(id, s)| {
                    s.builtin
                        && s.placement.is_some()
                        && x86_64::builtin(&s.name).is_some()
                        && self.sites.referring_to(*id).iter().all(|&site| {
                            matches!(self.sites.get(site).place, Place::GotEntry { .. })
                        })
                })
                .map(|(id, _)| id)
                .collect();
        for id in unused {
            self.unplace(id);
        }
    }

    fn undefined(&self) -> Vec<Undefined> {
        let mut out = Vec::new();
        for (id, sym) in self.symbols.iter() {
            if sym.placement.is_some() {
                continue;
            }
            let mut referenced_by: Vec<String> = Vec::new();
            for &site in self.sites.referring_to(id) {
                if let Place::In { owner, .. } = self.sites.get(site).place {
                    let name = &self.symbols.get(owner).name;
                    if !referenced_by.contains(name) {
                        referenced_by.push(name.clone());
                    }
                }
            }
            if !referenced_by.is_empty() {
                out.push(Undefined {
                    name: sym.name.clone(),
                    referenced_by,
                });
            }
        }
        out
    }

    fn addr_of(&self, name: &str) -> u64 {
        self.symbols
            .lookup(name)
            .and_then(|id| self.symbols.get(id).addr())
            .unwrap_or(HEADERS_VADDR)
    }

    /// Complete the executable: a fresh one is renamed over OUT, an opened one is updated in
    /// place. On error, OUT is untouched.
    pub fn finish(mut self) -> Result<Summary> {
        // The entry must exist before `_start` refers to it, or the error would blame `_start`.
        let has_entry = self
            .symbols
            .lookup(ENTRY)
            .is_some_and(|id| self.symbols.get(id).placement.is_some());
        if !has_entry {
            return Err(ImageError::NoEntry(ENTRY.to_string()));
        }
        self.add_runtime()?;
        let undefined = self.undefined();
        if !undefined.is_empty() {
            return Err(ImageError::Undefined(undefined));
        }
        self.drop_unused_builtins();
        // At this point every address is fixed and every site is patched.
        self.generation += 1;
        let updating = matches!(self.store, Store::Overlay(_));
        let entry = self.addr_of(x86_64::START.name);
        let interrupted = self.addr_of(x86_64::INTERRUPTED_NAME);
        let new_table = self.write_tables(if updating { interrupted } else { entry }, updating)?;
        let mut summary = std::mem::take(&mut self.stats);
        self.summarise(&mut summary);
        summary.bytes_written = self.store.planned_bytes();
        summary.file_size = self.store.len();
        match self.store {
            Store::Fresh(out) => out.commit()?,
            Store::Overlay(overlay) => overlay.commit(&CommitPlan {
                old_flags_at: self.old_table.map(|t| t + persist::FLAGS_OFFSET),
                in_progress_flags: persist::FLAG_IN_PROGRESS,
                interrupted_entry: interrupted,
                entry,
                new_flags_at: new_table + persist::FLAGS_OFFSET,
                final_flags: 0,
            })?,
        }
        Ok(summary)
    }

    fn summarise(&self, summary: &mut Summary) {
        summary.sites = self.sites.len();
        summary.generation = self.generation;
        for kind in RegionKind::ALL {
            summary.region_used[kind.index()] = self.regions[kind.index()].used;
        }
        for (_, sym) in self.symbols.iter() {
            if sym.placement.is_none() {
                continue;
            }
            match sym.kind {
                SymbolKind::Function => summary.functions += 1,
                SymbolKind::Data => summary.data_objects += 1,
            }
            if sym.got.is_some() {
                summary.got_entries += 1;
            }
        }
    }

    /// Make a tail extent hold `len` bytes, growing it in place if it is last in the file or
    /// moving it to the end; its old contents are not kept (tails are rewritten whole).
    fn reserve_tail(&mut self, tail: Tail, len: u64) -> Result<Extent> {
        let e = match self.tails[tail.index()] {
            Some(e) if len <= e.capacity => e,
            Some(e) if e.offset + e.capacity == self.store.len() => {
                let extra = align_up(len + len / 3, PAGE) - e.capacity;
                self.store.allocate(extra, 1)?;
                Extent {
                    offset: e.offset,
                    capacity: e.capacity + extra,
                }
            }
            _ => {
                let capacity = align_up(len + len / 3 + 1, PAGE);
                let offset = self.store.allocate(capacity, PAGE)?;
                Extent { offset, capacity }
            }
        };
        self.tails[tail.index()] = Some(e);
        Ok(e)
    }

    fn write_tail(&mut self, tail: Tail, bytes: &[u8]) -> Result<u64> {
        let e = self.reserve_tail(tail, bytes.len() as u64)?;
        self.store.write(e.offset, bytes);
        Ok(e.offset)
    }

    /// `.symtab`, `.strtab`, the table, section headers and the ELF and program headers.
    /// Returns the offset of the new table. `in_progress` marks the table for the update
    /// protocol; `entry` is what `e_entry` says for now.
    fn write_tables(&mut self, entry: u64, in_progress: bool) -> Result<u64> {
        let mut segments = vec![Segment::headers()];
        let mut sections: Vec<Section> = Vec::new();
        let mut shndx = [0u16; 5];
        for kind in RegionKind::ALL {
            let used = self.regions[kind.index()].used;
            if used == 0 {
                continue;
            }
            let offset = self.extents[kind.index()].map_or(0, |e| e.offset);
            let filesz = if kind.in_file() { used } else { 0 };
            segments.push(Segment {
                p_type: elf::PT_LOAD,
                flags: kind.segment_flags(),
                offset,
                vaddr: kind.vaddr(),
                filesz,
                memsz: used,
                align: PAGE,
            });
            shndx[kind.index()] = sections.len() as u16 + 1;
            sections.push(Section {
                name: kind.section_name().into(),
                sh_type: kind.section_type(),
                flags: kind.section_flags(),
                addr: kind.vaddr(),
                offset,
                size: used,
                link: 0,
                info: 0,
                align: 16,
                entsize: if kind == RegionKind::Got { 8 } else { 0 },
            });
        }
        segments.push(Segment {
            p_type: elf::PT_GNU_STACK,
            flags: elf::PF_R | elf::PF_W,
            offset: 0,
            vaddr: 0,
            filesz: 0,
            memsz: 0,
            align: 16,
        });

        let mut locals = Vec::new();
        let mut globals = Vec::new();
        for (_, sym) in self.symbols.iter() {
            let Some(p) = sym.placement else { continue };
            let entry = SymbolEntry {
                name: sym.name.clone(),
                value: p.slot.addr,
                size: p.size,
                bind: match sym.binding {
                    Binding::Local => elf::STB_LOCAL,
                    Binding::Global => elf::STB_GLOBAL,
                    Binding::Weak => elf::STB_WEAK,
                },
                typ: match sym.kind {
                    SymbolKind::Function => elf::STT_FUNC,
                    SymbolKind::Data => elf::STT_OBJECT,
                },
                shndx: shndx[p.region.index()],
            };
            if sym.binding == Binding::Local {
                locals.push(entry);
            } else {
                globals.push(entry);
            }
        }
        locals.append(&mut globals);
        let (symtab, strtab, first_global) = crate::elf::symtab(&locals);
        let symtab_off = self.write_tail(Tail::Symtab, &symtab)?;
        let strtab_off = self.write_tail(Tail::Strtab, &strtab)?;

        // The table describes the file as it will be, its own extent included: reserve the
        // extents first (the encoded length does not depend on their values), then encode.
        let meta_len = crate::elf::SHDR_SIZE * (sections.len() as u64 + 5) + 64;
        self.reserve_tail(Tail::Meta, meta_len)?;
        let table_len = self.encode_table(in_progress).len() as u64;
        let table_off = self.reserve_tail(Tail::Table, table_len)?.offset;
        let table = self.encode_table(in_progress);
        debug_assert_eq!(table.len() as u64, table_len);
        self.store.write(table_off, &table);
        self.stats.table_bytes = table_len;

        let symtab_index = sections.len() as u32 + 1;
        sections.push(Section {
            name: ".symtab".into(),
            sh_type: elf::SHT_SYMTAB,
            flags: 0,
            addr: 0,
            offset: symtab_off,
            size: symtab.len() as u64,
            link: symtab_index + 1,
            info: first_global,
            align: 8,
            entsize: crate::elf::SYM_SIZE,
        });
        sections.push(Section {
            name: ".strtab".into(),
            sh_type: elf::SHT_STRTAB,
            flags: 0,
            addr: 0,
            offset: strtab_off,
            size: strtab.len() as u64,
            link: 0,
            info: 0,
            align: 1,
            entsize: 0,
        });
        sections.push(Section {
            name: persist::SECTION_NAME.into(),
            sh_type: elf::SHT_PROGBITS,
            flags: 0,
            addr: 0,
            offset: table_off,
            size: table.len() as u64,
            link: 0,
            info: 0,
            align: 8,
            entsize: 0,
        });
        sections.push(Section {
            name: ".shstrtab".into(),
            sh_type: elf::SHT_STRTAB,
            flags: 0,
            addr: 0,
            offset: 0,
            size: 0,
            link: 0,
            info: 0,
            align: 1,
            entsize: 0,
        });
        let (shstrtab, names) = crate::elf::shstrtab(&sections);
        let meta = self.tails[Tail::Meta.index()].expect("reserved above");
        let shdrs_len = crate::elf::SHDR_SIZE * (sections.len() as u64 + 1);
        let last = sections.len() - 1;
        sections[last].offset = meta.offset + shdrs_len;
        sections[last].size = shstrtab.len() as u64;
        let mut meta_bytes = crate::elf::section_headers(&sections, &names);
        meta_bytes.extend_from_slice(&shstrtab);
        assert!(
            meta_bytes.len() as u64 <= meta.capacity,
            "meta extent sized above"
        );
        self.store.write(meta.offset, &meta_bytes);

        let headers = crate::elf::headers(
            x86_64::E_MACHINE,
            entry,
            &segments,
            meta.offset,
            sections.len() as u16 + 1,
            sections.len() as u16,
        );
        self.store.write(0, &headers);
        Ok(table_off)
    }

    fn encode_table(&self, in_progress: bool) -> Vec<u8> {
        let sites: Vec<&Site> = self.sites.iter().collect();
        persist::encode(&Snapshot {
            settings: &self.settings,
            generation: self.generation,
            entry: self.addr_of(x86_64::START.name),
            interrupted: self.addr_of(x86_64::INTERRUPTED_NAME),
            in_progress,
            regions: &self.regions,
            extents: &self.extents,
            tails: &self.tails,
            symbols: self.symbols.as_slice(),
            sites,
        })
    }
}

/// The table of a zerolink executable, and its file offset.
pub fn find_table(file: &[u8]) -> Result<(u64, persist::Table), Reject> {
    use object::read::elf::{ElfFile64, FileHeader};
    use object::{Object, ObjectSection};
    let elf = ElfFile64::<object::Endianness>::parse(file)
        .map_err(|_| "it is not an ELF executable".to_string())?;
    if elf.elf_header().e_machine(elf.endian()) != x86_64::E_MACHINE {
        return Err("it is not an x86-64 executable".into());
    }
    let section = elf
        .section_by_name(persist::SECTION_NAME)
        .ok_or("it was not built by zerolink (no .zerolink section)")?;
    let (offset, _) = section
        .file_range()
        .ok_or("its .zerolink section is empty")?;
    let bytes = section
        .data()
        .map_err(|_| "its .zerolink section lies outside the file".to_string())?;
    Ok((offset, persist::decode(bytes)?))
}

fn data_region(contents: Contents<'_>, writable: bool, refs: &[Reference]) -> RegionKind {
    match (writable, contents) {
        // Zero-fill objects take no file space, unless something must be patched into them.
        (true, Contents::Zeros(_)) if refs.is_empty() => RegionKind::Bss,
        (true, _) => RegionKind::Data,
        (false, _) => RegionKind::Rodata,
    }
}

/// An extent holding at least `len` bytes: the same one, grown in place if it is last in the
/// file, or a copy at the end of the file.
fn grow_extent(
    store: &mut Store,
    current: Option<Extent>,
    len: u64,
    used: u64,
    initial: u64,
) -> Result<Extent> {
    match current {
        Some(e) if len <= e.capacity => Ok(e),
        Some(e) if e.offset + e.capacity == store.len() => {
            let extra = align_up(len.max(2 * e.capacity), PAGE) - e.capacity;
            store.allocate(extra, 1)?;
            Ok(Extent {
                offset: e.offset,
                capacity: e.capacity + extra,
            })
        }
        Some(e) => {
            let capacity = align_up(len.max(2 * e.capacity), PAGE);
            let offset = store.allocate(capacity, PAGE)?;
            store.copy_within(e.offset, used.min(e.capacity), offset);
            Ok(Extent { offset, capacity })
        }
        None => {
            let capacity = align_up(len.max(initial), PAGE);
            let offset = store.allocate(capacity, PAGE)?;
            Ok(Extent { offset, capacity })
        }
    }
}

/// The region whose address window contains `addr`.
fn region_of(addr: u64) -> RegionKind {
    RegionKind::ALL
        .into_iter()
        .rev()
        .find(|k| addr >= k.vaddr())
        .unwrap_or(RegionKind::Text)
}
