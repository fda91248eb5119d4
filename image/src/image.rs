//! The image under construction or update: regions, slots, symbols and sites, and the file
//! they live in.
//!
//! Defining a function or data object places it in a slot, writes its bytes, records each
//! reference it makes as a site, and patches at once every site whose target already has an
//! address, including earlier sites that were waiting for this very symbol. Redefining one
//! writes it over its old slot if it fits (nothing that refers to it changes) and otherwise
//! moves it and re-patches exactly the sites that refer to it. Every symbol a build touches is
//! remembered, and `finish` looks only at those: it adds the runtime pieces they need, reports
//! the ones left undefined, brings their `.symtab` entries up to date, writes back the table
//! records that changed, and commits. A fresh build touches everything; an update, its edit.
//!
//! A *fresh* image is a new file renamed over OUT at the end. An *opened* image is an existing
//! executable whose table is read in place; its writes go to an overlay and reach the file only
//! at commit, so a failed update leaves OUT exactly as it was (see `store.rs`).
//!
//! File space: each region's bytes, and each table array, occupy one extent of the file
//! (page-aligned, with spare room). An extent that fills up grows in place when it is the last
//! thing in the file and is otherwise copied to the end; addresses never change, only offsets.

use std::collections::BTreeSet;
use std::path::Path;

use object::elf;
use xxhash_rust::xxh3::xxh3_64;

use crate::elf::{Section, Segment};
use crate::error::{ImageError, Result, Undefined};
use crate::layout::{align_up, Extent, RegionKind, HEADERS_VADDR, PAGE, REGIONS};
use crate::output::Output;
use crate::persist::{self, Array, ArrayState, Body, ExtraSection, Header, Reject};
use crate::sites::{Place, RefKind, Reference, Site, SiteId, Sites};
use crate::slots::{Region, Slot};
use crate::store::{CommitPlan, Overlay, Store};
use crate::symbols::{Binding, Counts, Placement, SymbolId, SymbolKind, SymbolTable};
use crate::symtab::Symtab;
use crate::table::{Base, Blob, NameIndex, Records, PAGE_BYTES};
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
    pub region_used: [u64; REGIONS],
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
    /// Bytes of the table (`.zerolink` and its arrays).
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

/// Fixed section layout, so `.symtab` entries never need their section index rewritten.
const SECTIONS: usize = 14;
const SHSTRTAB_INDEX: u16 = 13;

pub struct Image {
    store: Store,
    regions: [Region; REGIONS],
    extents: [Option<Extent>; REGIONS],
    meta: Option<Extent>,
    table: Option<Extent>,
    arrays: Vec<ArrayState>,
    symbols: SymbolTable,
    sites: Sites,
    symtab: Symtab,
    /// Symbols this build defined, removed, referred to or stopped referring to.
    touched: Touched,
    /// A fresh build patches every site once, in `finish`, instead of as both ends get
    /// addresses: no site is written twice and no referrer list is walked.
    lazy_patching: bool,
    /// Initial file capacity per region, from the caller's size hint.
    initial_extent: [u64; REGIONS],
    /// Target, flags and version the image is built with; an update requires the same.
    settings: String,
    generation: u64,
    /// For the update protocol: where the old table's header is.
    old_table: Option<u64>,
    /// The caller's record of its inputs, kept in the table (opaque here).
    manifest: Vec<u8>,
    /// Shared libraries (sonames) that may provide imports, in search order.
    libraries: Vec<String>,
    /// Imported symbols, in `.dynsym` order.
    imports: Vec<SymbolId>,
    /// Where `.dynamic` lives in the GOT region.
    dynamic_slot: Option<Slot>,
    /// Finds a name in the shared libraries: (library index, kind). `None`: freestanding.
    resolver: Option<Resolver>,
    /// Where the dynamic tables were put by this build.
    dynamic_layout: Option<crate::dynamic::Tables>,
    /// Non-loaded sections the caller replaced in this build (debug information).
    extra_sections: Option<Vec<(String, Vec<u8>)>>,
    /// The non-loaded sections in the file, kept across updates.
    extras: Vec<ExtraSection>,
    /// The caller's index of its extra sections (opaque here).
    extras_index: Vec<u8>,
    /// Whether each of the file's extra sections matches its checksum (an update's question).
    old_extras_intact: std::cell::OnceCell<Vec<bool>>,
    /// The previous build's `.eh_frame` (file offset, length without the terminator).
    old_eh_frame: Option<(u64, u64)>,
    /// Where code was that this build replaced or removed: the previous build's unwind
    /// entries for these addresses are stale.
    replaced_code: BTreeSet<u64>,
    /// `.eh_frame` contents (absolute FDE addresses), loaded after the loader's tables.
    eh_frame: Option<Vec<u8>>,
    /// Where `.eh_frame_hdr` and `.eh_frame` went: (hdr addr, hdr len, frame addr, frame len).
    eh_layout: Option<(u64, u64, u64, u64)>,
    stats: Summary,
}

/// The symbols a build changed something about (see invariant 9).
enum Touched {
    /// A fresh build: every symbol, without keeping a set of them.
    All,
    Some(BTreeSet<SymbolId>),
}

impl Touched {
    fn insert(&mut self, id: SymbolId) {
        if let Touched::Some(set) = self {
            set.insert(id);
        }
    }

    fn extend(&mut self, ids: impl IntoIterator<Item = SymbolId>) {
        if let Touched::Some(set) = self {
            set.extend(ids);
        }
    }
}

/// Looks a name up in the shared libraries: the index of the first library that exports it.
pub type Resolver = Box<dyn Fn(&str) -> Option<u32>>;

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
            extents: [None; REGIONS],
            meta: None,
            table: None,
            arrays: vec![ArrayState::default(); Array::ALL.len()],
            symbols: SymbolTable::default(),
            sites: Sites::default(),
            symtab: Symtab::default(),
            touched: Touched::All,
            lazy_patching: true,
            initial_extent: [PAGE, PAGE, PAGE, PAGE, 0, PAGE],
            settings: String::new(),
            generation: 0,
            old_table: None,
            manifest: Vec::new(),
            libraries: Vec::new(),
            imports: Vec::new(),
            dynamic_slot: None,
            resolver: None,
            dynamic_layout: None,
            extra_sections: None,
            extras: Vec::new(),
            extras_index: Vec::new(),
            old_extras_intact: std::cell::OnceCell::new(),
            old_eh_frame: None,
            replaced_code: BTreeSet::new(),
            eh_frame: None,
            eh_layout: None,
            stats: Summary::default(),
        })
    }

    /// Reopen an executable zerolink built, to update it in place. With `settings`, they must
    /// equal the ones it was built with. Reads only the table's header and small body.
    pub fn open(path: &Path, settings: Option<&str>) -> Result<Image, OpenError> {
        if !path.exists() {
            return Err(OpenError::Missing);
        }
        let overlay = Overlay::open(path)
            .map_err(|e| OpenError::Incompatible(format!("cannot read it: {e}")))?;
        let map = overlay.base().clone();
        let (offset, header, body) = find_table(&map).map_err(OpenError::Incompatible)?;
        if settings.is_some_and(|s| s != body.settings) {
            return Err(OpenError::Incompatible(
                "it was built with other target settings or another zerolink version".into(),
            ));
        }
        let base = |a: Array| -> Result<Base, OpenError> {
            let state = &body.arrays[a.index()];
            let e = state
                .extent
                .expect("decode checks every array has an extent");
            if e.offset + state.len > map.len() as u64 {
                return Err(OpenError::Incompatible(
                    "its table points outside the file".into(),
                ));
            }
            Ok(Base {
                map: map.clone(),
                offset: e.offset as usize,
                len: state.len as usize,
                page_sums: state.page_sums.clone(),
            })
        };
        let counts = Counts {
            functions: body.counts[0],
            data_objects: body.counts[1],
            got_entries: body.counts[2],
        };
        let symbols = SymbolTable::restore(
            Records::from_base(base(Array::Symbols)?),
            Blob::from_base(base(Array::Names)?),
            NameIndex::from_base(base(Array::Index)?, body.index_count),
            counts,
        );
        let sites = Sites::restore(Records::from_base(base(Array::Sites)?), body.live_sites);
        let symtab = Symtab {
            entries: Records::from_base(base(Array::Symtab)?),
            owners: Records::from_base(base(Array::Owners)?),
            first_global: body.first_global,
        };
        let regions: [Region; REGIONS] = body
            .regions
            .try_into()
            .map_err(|_| OpenError::Incompatible("bad region count".into()))?;
        Ok(Image {
            store: Store::Overlay(overlay),
            regions,
            extents: body.extents,
            meta: body.meta,
            table: body.table,
            arrays: body.arrays,
            symbols,
            sites,
            symtab,
            touched: Touched::Some(BTreeSet::new()),
            lazy_patching: false,
            initial_extent: [PAGE, PAGE, PAGE, PAGE, 0, PAGE],
            settings: body.settings,
            generation: header.generation,
            old_table: Some(offset),
            manifest: body.manifest,
            libraries: body.libraries,
            imports: body.imports.into_iter().map(SymbolId).collect(),
            dynamic_slot: (body.dynamic_slot.1 != 0).then_some(Slot {
                addr: body.dynamic_slot.0,
                capacity: body.dynamic_slot.1,
            }),
            resolver: None,
            dynamic_layout: None,
            extra_sections: None,
            old_eh_frame: old_eh_frame(&body.extents, body.eh_layout, map.len() as u64),
            extras: body.extras,
            extras_index: body.extras_index,
            old_extras_intact: std::cell::OnceCell::new(),
            replaced_code: BTreeSet::new(),
            eh_frame: None,
            eh_layout: None,
            stats: Summary::default(),
        })
    }

    /// Link against shared libraries: names nothing defines are looked up with `resolver`
    /// (which returns an index into `libraries`, sonames in search order) before the built-in
    /// functions; the executable gets an interpreter, `.dynamic`, and a GOT filled by the
    /// dynamic loader. Without this call the executable is static and freestanding.
    pub fn link_dynamically(&mut self, libraries: Vec<String>, resolver: Resolver) {
        self.libraries = libraries;
        self.resolver = Some(resolver);
    }

    fn dynamic(&self) -> bool {
        self.resolver.is_some()
    }

    /// Non-loaded sections to write as they are, such as `.debug_info` and `.debug_line`, and
    /// the caller's index of them, kept in the table for the next update. They replace the
    /// file's sections (in place where they fit); without this call an update keeps the old.
    pub fn set_extra_sections(&mut self, sections: Vec<(String, Vec<u8>)>, index: Vec<u8>) {
        self.extra_sections = Some(sections);
        self.extras_index = index;
    }

    /// The previous build's extra section `name`, if it is in the file and checks out against
    /// the checksum recorded with it. Only an opened image has one.
    pub fn old_extra_section(&self, name: &str) -> Option<&[u8]> {
        let Store::Overlay(o) = &self.store else {
            return None;
        };
        let bytes = |x: &ExtraSection| {
            o.base()
                .get(x.extent.offset as usize..(x.extent.offset + x.len) as usize)
        };
        // Checked once per build, however often the caller asks.
        let intact = self.old_extras_intact.get_or_init(|| {
            self.extras
                .iter()
                .map(|x| bytes(x).is_some_and(|b| xxh3_64(b) == x.checksum))
                .collect()
        });
        let k = self.extras.iter().position(|x| x.name == name)?;
        bytes(&self.extras[k]).filter(|_| intact[k])
    }

    /// The caller's index of the extra sections, as the previous build left it.
    pub fn extras_index(&self) -> &[u8] {
        &self.extras_index
    }

    /// The previous build's `.eh_frame` (its records, without the terminator), read from the
    /// file as it was opened.
    pub fn old_eh_frame(&self) -> Option<(u64, &[u8])> {
        let Store::Overlay(o) = &self.store else {
            return None;
        };
        let (offset, len) = self.old_eh_frame?;
        let bytes = o.base().get(offset as usize..(offset + len) as usize)?;
        Some((offset, bytes))
    }

    /// Unwind tables: `.eh_frame` contents whose FDEs use absolute addresses. The image loads
    /// them and adds `.eh_frame_hdr` with its sorted lookup table and `PT_GNU_EH_FRAME`.
    pub fn set_eh_frame(&mut self, eh_frame: Vec<u8>) {
        self.eh_frame = Some(eh_frame);
    }

    /// The libraries imports may come from (sonames).
    pub fn libraries(&self) -> &[String] {
        &self.libraries
    }

    /// Imported symbols.
    pub fn imports(&self) -> &[SymbolId] {
        &self.imports
    }

    /// What the caller recorded about its inputs in the previous build.
    pub fn manifest(&self) -> &[u8] {
        &self.manifest
    }

    /// Record something about the inputs for the next build (kept in the table as is).
    pub fn set_manifest(&mut self, manifest: Vec<u8>) {
        self.manifest = manifest;
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
        let before = self.symbols.len();
        let id = self.symbols.declare(name, kind, binding)?;
        if self.symbols.len() > before {
            self.touched.insert(id);
        }
        Ok(id)
    }

    pub fn symbols(&self) -> &SymbolTable {
        &self.symbols
    }

    pub fn sites(&self) -> &Sites {
        &self.sites
    }

    /// Sites whose value depends on `target`'s address.
    pub fn referrers(&self, target: SymbolId) -> Vec<SiteId> {
        self.sites.referring_to(&self.symbols, target)
    }

    pub fn regions(&self) -> &[Region; REGIONS] {
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
        let mut sym = self.symbols.get(id);
        sym.hash = content;
        sym.sig_hash = signature;
        self.symbols.set(id, sym);
    }

    /// Remember which of the producer's units (an input file, a codegen unit) defines `id`:
    /// a number of the producer's choosing, kept with the symbol across updates.
    pub fn set_unit(&mut self, id: SymbolId, unit: Option<u32>) {
        let mut sym = self.symbols.get(id);
        sym.unit = unit.map_or(0, |u| u + 1);
        self.symbols.set(id, sym);
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
        self.replace_sites(id, &[]);
        let mut sym = self.symbols.get(id);
        let placement = sym.placement();
        sym.hash = 0;
        sym.sig_hash = 0;
        sym.unit = 0;
        sym.set_builtin(false);
        sym.set_placement(None);
        self.symbols.set(id, sym);
        self.touched.insert(id);
        match placement {
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

    fn check_kind(&self, id: SymbolId, kind: SymbolKind) -> Result<()> {
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

    fn check_definition(
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
            if u64::from(r.offset) + u64::from(r.kind.width()) > size {
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

    fn define(
        &mut self,
        id: SymbolId,
        region: RegionKind,
        contents: Contents<'_>,
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        if self.symbols.get(id).placement().is_some() {
            return Err(ImageError::DuplicateDefinition(self.symbols.name(id)));
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
        let mut sym = self.symbols.get(id);
        sym.set_placement(Some(Placement { region, slot, size }));
        if sym.import().is_some() {
            // The program now defines what a library used to provide.
            sym.set_import(None);
            self.imports.retain(|&i| i != id);
        }
        self.symbols.set(id, sym);
        self.touched.insert(id);
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
        let Some(old) = self.symbols.get(id).placement() else {
            return self.define(id, region, contents, align, refs);
        };
        let size = contents.len();
        self.check_definition(id, size, align, refs)?;
        if old.region == RegionKind::Text {
            self.replaced_code.insert(old.slot.addr);
        }
        let align = align.max(region.min_slot_align());
        if old.region == region && size <= old.slot.capacity && old.slot.addr % align == 0 {
            if region.in_file() {
                self.write_slot(region, old.slot.addr, old.slot, contents)?;
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
        self.regions[old.region.index()].free(old.slot);
        let mut sym = self.symbols.get(id);
        sym.set_placement(None);
        self.symbols.set(id, sym);
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
    fn replace_sites(&mut self, id: SymbolId, refs: &[Reference]) -> Vec<SiteId> {
        let (ids, old_targets) = self.sites.set_owned(&mut self.symbols, id, refs);
        self.touched.extend(old_targets);
        self.touched.extend(refs.iter().map(|r| r.target));
        ids
    }

    fn add_sites(&mut self, id: SymbolId, refs: &[Reference]) -> Result<()> {
        let sites = self.replace_sites(id, refs);
        if !self.lazy_patching {
            for site in sites {
                self.patch(site)?;
            }
        }
        Ok(())
    }

    /// With lazy patching (a fresh build), now that every address is known: patch every live
    /// site once, in site order. GOT entries made meanwhile are sites too, appended and
    /// patched in the same pass.
    fn patch_all(&mut self) -> Result<()> {
        if !std::mem::replace(&mut self.lazy_patching, false) {
            return Ok(());
        }
        let mut i = 0;
        while i < self.sites.records().len() as u32 {
            if self.sites.is_live(SiteId(i)) {
                self.patch(SiteId(i))?;
            }
            i += 1;
        }
        Ok(())
    }

    /// Symbols `finish` must look at: every symbol in a fresh build, else those touched.
    fn touched_ids(&self) -> Vec<SymbolId> {
        match &self.touched {
            Touched::All => (0..self.symbols.len() as u32).map(SymbolId).collect(),
            Touched::Some(set) => set.iter().copied().collect(),
        }
    }

    fn patch_referrers(&mut self, id: SymbolId) -> Result<()> {
        if self.lazy_patching {
            return Ok(());
        }
        for site in self.referrers(id) {
            if !matches!(self.sites.get(site).place, Place::In { owner, .. } if owner == id) {
                self.patch(site)?;
            }
        }
        Ok(())
    }

    /// Give `target` a GOT entry if it has none; the entry is itself a site holding its address.
    fn ensure_got_entry(&mut self, target: SymbolId) -> Result<()> {
        if self.symbols.get(target).got().is_some() {
            return Ok(());
        }
        let slot: Slot = self.regions[RegionKind::Got.index()].alloc(8, 8)?;
        self.ensure_extent(RegionKind::Got, slot.end() - RegionKind::Got.vaddr())?;
        let at = self.file_offset(RegionKind::Got, slot.addr);
        self.store.fill(at, 8, 0);
        let mut sym = self.symbols.get(target);
        sym.set_got(slot.addr);
        self.symbols.set(target, sym);
        let site = self
            .sites
            .add_got_entry(&mut self.symbols, target, slot.addr);
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
        let site = self.sites.get(id);
        let Some(p) = self.site_addr(&site) else {
            return Ok(());
        };
        let target = self.symbols.get(site.target);
        let s = match (target.addr(), target.import()) {
            (Some(s), _) => s,
            (None, Some(_)) => return self.patch_import_site(&site, p),
            (None, None) => return Ok(()),
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
        let got = self.symbols.get(site.target).got();
        let field = x86_64::encode(kind, s, site.addend, p, got)
            .map_err(|value| self.overflow(&site, value))?;
        let at = self.file_offset(region_of(p), p);
        self.store.write(at, field.bytes());
        self.stats.sites_patched += 1;
        Ok(())
    }

    /// A site whose target comes from a shared library: code reaches it through a GOT entry
    /// that the dynamic loader fills; data holding its address gets a dynamic relocation
    /// (written at `finish`); anything else cannot be encoded in an executable.
    fn patch_import_site(&mut self, site: &Site, p: u64) -> Result<()> {
        let at = self.file_offset(region_of(p), p);
        match (site.kind, site.place) {
            (_, Place::GotEntry { .. }) => {
                self.store.write(at, &[0; 8]);
                Ok(())
            }
            (RefKind::GotPcRel32, _) => {
                self.set_got_load_form(site, p, false);
                self.ensure_got_entry(site.target)?;
                let got = self.symbols.get(site.target).got();
                let field = x86_64::encode(RefKind::GotPcRel32, 0, site.addend, p, got)
                    .map_err(|value| self.overflow(site, value))?;
                self.store.write(at, field.bytes());
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

    fn overflow(&self, site: &Site, value: i128) -> ImageError {
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
    fn set_got_load_form(&mut self, site: &Site, p: u64, relaxed: bool) -> bool {
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

    fn has_code_referrers(&self, id: SymbolId) -> bool {
        self.referrers(id)
            .iter()
            .any(|&s| matches!(self.sites.get(s).place, Place::In { .. }))
    }

    /// `_start` and the interrupted-update stub if the image has none yet; then, for every
    /// touched symbol that code refers to and nothing defines: an import if a shared library
    /// provides it, else a built-in if there is one by that name.
    fn add_runtime(&mut self) -> Result<()> {
        let start = self.declare(x86_64::START.name, SymbolKind::Function, Binding::Global)?;
        if self.symbols.get(start).placement().is_none() {
            if self.dynamic() {
                let main = self.declare(ENTRY, SymbolKind::Function, Binding::Global)?;
                let lsm = self.declare(
                    x86_64::LIBC_START_MAIN,
                    SymbolKind::Function,
                    Binding::Global,
                )?;
                let refs = [
                    Reference {
                        offset: x86_64::START_LIBC_MAIN_AT,
                        kind: RefKind::PcRel32,
                        target: main,
                        addend: -4,
                    },
                    Reference {
                        offset: x86_64::START_LIBC_GOT_AT,
                        kind: RefKind::GotPcRel32,
                        target: lsm,
                        addend: -4,
                    },
                ];
                self.define(
                    start,
                    RegionKind::Text,
                    Contents::Bytes(x86_64::START_LIBC.code),
                    16,
                    &refs,
                )?;
                self.mark_builtin(start);
            } else {
                self.define_stub(start, x86_64::START.code, x86_64::START.calls)?;
            }
        }
        let stub = self.declare(
            x86_64::INTERRUPTED_NAME,
            SymbolKind::Function,
            Binding::Local,
        )?;
        if self.symbols.get(stub).placement().is_none() {
            self.define_stub(stub, &x86_64::interrupted_stub(), &[])?;
        }
        let wanted: Vec<SymbolId> = self
            .touched_ids()
            .into_iter()
            .filter(|&id| {
                let s = self.symbols.get(id);
                s.placement().is_none() && s.import().is_none() && self.has_code_referrers(id)
            })
            .collect();
        for id in wanted {
            let name = self.symbols.name(id);
            if let Some(lib) = self.resolver.as_ref().and_then(|r| r(&name)) {
                let mut sym = self.symbols.get(id);
                sym.set_import(Some(lib));
                self.symbols.set(id, sym);
                self.imports.push(id);
                self.patch_referrers(id)?;
            } else if let Some(stub) = x86_64::builtin(&name) {
                if self.symbols.get(id).kind() == SymbolKind::Function {
                    self.define_stub(id, stub.code, stub.calls)?;
                }
            }
        }
        Ok(())
    }

    fn mark_builtin(&mut self, id: SymbolId) {
        let mut sym = self.symbols.get(id);
        sym.set_builtin(true);
        self.symbols.set(id, sym);
    }

    fn define_stub(&mut self, id: SymbolId, code: &[u8], calls: &[(u32, &str)]) -> Result<()> {
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
        self.define(id, RegionKind::Text, Contents::Bytes(code), 16, &refs)?;
        self.mark_builtin(id);
        Ok(())
    }

    /// Drop built-ins nothing refers to any more, so an update keeps the same set a full build
    /// of the same input would have.
    fn drop_unused_builtins(&mut self) {
        let unused: Vec<SymbolId> = self
            .touched_ids()
            .into_iter()
            .filter(|&id| {
                let s = self.symbols.get(id);
                s.builtin()
                    && s.placement().is_some()
                    && x86_64::builtin(&self.symbols.name(id)).is_some()
                    && !self.has_code_referrers(id)
            })
            .collect();
        for id in unused {
            self.unplace(id);
        }
        let unused_imports: Vec<SymbolId> = self
            .touched_ids()
            .into_iter()
            .filter(|&id| self.symbols.get(id).import().is_some() && !self.has_code_referrers(id))
            .collect();
        for id in unused_imports {
            let mut sym = self.symbols.get(id);
            sym.set_import(None);
            self.symbols.set(id, sym);
            self.imports.retain(|&i| i != id);
        }
    }

    fn undefined(&self) -> Vec<Undefined> {
        let mut out = Vec::new();
        for id in self.touched_ids() {
            let sym = self.symbols.get(id);
            if sym.placement().is_some() || sym.import().is_some() {
                continue;
            }
            let mut referenced_by: Vec<String> = Vec::new();
            let mut referrers = self.referrers(id);
            referrers.sort_by_key(|s| s.0);
            for site in referrers {
                if let Place::In { owner, .. } = self.sites.get(site).place {
                    let name = self.symbols.name(owner);
                    if !referenced_by.contains(&name) {
                        referenced_by.push(name);
                    }
                }
            }
            if !referenced_by.is_empty() {
                out.push(Undefined {
                    name: self.symbols.name(id),
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

    fn damaged(&self) -> Option<&'static str> {
        if self.symbols.damaged() {
            Some("symbols")
        } else if self.sites.damaged() {
            Some("reference sites")
        } else if self.symtab.damaged() {
            Some(".symtab")
        } else {
            None
        }
    }

    /// Complete the executable: a fresh one is renamed over OUT, an opened one is updated in
    /// place. On error, OUT is untouched.
    pub fn finish(mut self) -> Result<Summary> {
        // The entry must exist before `_start` refers to it, or the error would blame `_start`.
        let has_entry = self
            .symbols
            .lookup(ENTRY)
            .is_some_and(|id| self.symbols.get(id).placement().is_some());
        if !has_entry {
            return Err(ImageError::NoEntry(ENTRY.to_string()));
        }
        self.add_runtime()?;
        let undefined = self.undefined();
        if !undefined.is_empty() {
            return Err(ImageError::Undefined(undefined));
        }
        self.drop_unused_builtins();
        self.patch_all()?;
        if let Some(what) = self.damaged() {
            return Err(ImageError::TableDamaged(what));
        }
        // Before anything else is allocated: the last extent (text, in a fresh build) gives
        // back what it grew by doubling, so the GOT and the tables follow right after it.
        self.trim_last_extent();
        if self.dynamic() || self.eh_frame.is_some() {
            self.write_dynamic()?;
        }
        // At this point every address is fixed and every site is patched.
        for id in self.touched_ids() {
            self.symtab.update(&mut self.symbols, id);
        }
        self.generation += 1;
        let updating = matches!(self.store, Store::Overlay(_));
        let entry = self.addr_of(x86_64::START.name);
        let interrupted = self.addr_of(x86_64::INTERRUPTED_NAME);
        self.write_arrays()?;
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

    /// In a fresh file, extents grew by doubling while the build did not know its final
    /// sizes: give back all but a 32nd of spare room per region (at least a page: at ~300
    /// bytes per moved function, thousands of moves before an extent must be copied), moving the extents that
    /// follow a trimmed one down (they are small next to text, and a move is a memmove in the
    /// mapping). Extents stay page-aligned, so file offset ≡ address (mod 4096) still holds.
    /// Nothing records file offsets of regions but `extents` until the tables are written.
    fn trim_last_extent(&mut self) {
        let Store::Fresh(out) = &mut self.store else {
            return;
        };
        let mut order: Vec<usize> = (0..REGIONS)
            .filter(|&i| self.extents[i].is_some())
            .collect();
        order.sort_by_key(|&i| self.extents[i].map(|e| e.offset));
        let Some(first) = order.first().and_then(|&i| self.extents[i]) else {
            return;
        };
        let end = order
            .last()
            .and_then(|&i| self.extents[i])
            .map_or(0, |e| e.offset + e.capacity);
        if end != out.len() {
            // Something else follows the regions: leave the layout as it is.
            return;
        }
        let mut cursor = first.offset;
        for i in order {
            let Some(e) = self.extents[i] else { continue };
            let used = self.regions[i].used;
            let keep = align_up(used + used / 32 + PAGE, PAGE).min(e.capacity);
            if cursor != e.offset {
                out.copy_within(e.offset, used.min(e.capacity), cursor);
            }
            self.extents[i] = Some(Extent {
                offset: cursor,
                capacity: keep,
            });
            cursor += keep;
        }
        out.truncate(cursor);
    }

    /// The dynamic loader's tables (rewritten whole: they grow with imports, not with code),
    /// and `.dynamic` in its slot of the GOT region.
    fn write_dynamic(&mut self) -> Result<()> {
        let names: Vec<String> = self.imports.iter().map(|&i| self.symbols.name(i)).collect();
        let imports: Vec<crate::dynamic::Import<'_>> = self
            .imports
            .iter()
            .zip(&names)
            .map(|(&id, name)| {
                let s = self.symbols.get(id);
                crate::dynamic::Import {
                    name,
                    kind: s.kind(),
                    got: s.got(),
                }
            })
            .collect();
        let mut data_relocs = Vec::new();
        for (i, &id) in self.imports.iter().enumerate() {
            for site in self.referrers(id) {
                let site = self.sites.get(site);
                if let (RefKind::Abs64, Some(at)) = (site.kind, self.site_addr(&site)) {
                    if matches!(site.place, Place::In { .. }) {
                        data_relocs.push(crate::dynamic::DataReloc {
                            at,
                            import: i,
                            addend: site.addend,
                        });
                    }
                }
            }
        }
        let mut used: Vec<u32> = self
            .imports
            .iter()
            .filter_map(|&id| self.symbols.get(id).import())
            .collect();
        used.sort_unstable();
        used.dedup();
        let needed: Vec<&str> = used
            .iter()
            .filter_map(|&l| self.libraries.get(l as usize).map(String::as_str))
            .collect();
        let base = RegionKind::Dynamic.vaddr();
        let tables = self.dynamic().then(|| {
            crate::dynamic::tables(base, x86_64::INTERPRETER, &imports, &data_relocs, &needed)
        });
        let mut blob = tables.as_ref().map_or_else(Vec::new, |t| t.bytes.clone());
        if let Some(fresh) = self.eh_frame.take() {
            // `.eh_frame` first, so that in an update its records stay where they were (only
            // what changed is written), then `.eh_frame_hdr`, which grows with the FDEs.
            let start = self
                .symbols
                .lookup(x86_64::START.name)
                .and_then(|id| self.symbols.get(id).placement());
            let old = self.old_eh_frame().map_or(&[][..], |(_, b)| b);
            let frames = crate::dynamic::merge_eh_frame(&fresh, old, start, |pc| {
                !self.replaced_code.contains(&pc)
            });
            blob.resize(blob.len().next_multiple_of(8), 0);
            let frame_addr = base + blob.len() as u64;
            blob.extend_from_slice(&frames);
            blob.extend_from_slice(&[0; 4]); // the terminator
            let hdr_addr = base + blob.len() as u64;
            let fdes = crate::dynamic::fde_locations(&frames);
            blob.extend_from_slice(&crate::dynamic::eh_frame_hdr(hdr_addr, frame_addr, &fdes));
            let hdr_len = base + blob.len() as u64 - hdr_addr;
            self.eh_layout = Some((hdr_addr, hdr_len, frame_addr, frames.len() as u64 + 4));
        }
        let len = blob.len() as u64;
        self.ensure_extent(RegionKind::Dynamic, len)?;
        self.regions[RegionKind::Dynamic.index()].used = len;
        let at = self.file_offset(RegionKind::Dynamic, base);
        self.store.write_changed(at, &blob);
        let Some(tables) = tables else {
            return Ok(());
        };

        let slot = match self.dynamic_slot {
            Some(s) => s,
            None => {
                let s = self.regions[RegionKind::Got.index()]
                    .alloc(crate::dynamic::DYNAMIC_CAPACITY, 8)?;
                self.dynamic_slot = Some(s);
                s
            }
        };
        self.ensure_extent(RegionKind::Got, slot.end() - RegionKind::Got.vaddr())?;
        let mut section = crate::dynamic::dynamic_section(&tables);
        section.resize(slot.capacity as usize, 0);
        let at = self.file_offset(RegionKind::Got, slot.addr);
        self.store.write(at, &section);
        self.dynamic_layout = Some(tables);
        Ok(())
    }

    fn summarise(&self, summary: &mut Summary) {
        let counts = self.symbols.counts();
        summary.functions = counts.functions as usize;
        summary.data_objects = counts.data_objects as usize;
        summary.got_entries = counts.got_entries as usize;
        summary.sites = self.sites.len();
        summary.generation = self.generation;
        for kind in RegionKind::ALL {
            summary.region_used[kind.index()] = self.regions[kind.index()].used;
        }
        summary.table_bytes += self.arrays.iter().map(|a| a.len).sum::<u64>();
    }

    /// An extent that holds `len` bytes: `current` if it fits, grown in place if it is last in
    /// the file, or a new one at the end. Contents are not carried over.
    fn reserve(&mut self, current: Option<Extent>, len: u64) -> Result<Extent> {
        Ok(match current {
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
        })
    }

    /// Write each table array back: only its changed records when it still fits its extent
    /// (rehashing only the pages they fall in), else whole into a bigger extent.
    fn write_arrays(&mut self) -> Result<()> {
        let size = |a: Array| match a {
            Array::Symbols => std::mem::size_of::<crate::symbols::Symbol>(),
            Array::Sites => std::mem::size_of::<crate::sites::SiteRecord>(),
            Array::Index | Array::Owners => 4,
            Array::Symtab => std::mem::size_of::<crate::symtab::Entry>(),
            Array::Names => 1,
        } as u64;
        for a in Array::ALL {
            let has_base = match a {
                Array::Symbols => self.symbols.records().has_base(),
                Array::Sites => self.sites.records().has_base(),
                Array::Index => self.symbols.index().slots.has_base(),
                Array::Symtab => self.symtab.entries.has_base(),
                Array::Owners => self.symtab.owners.has_base(),
                Array::Names => self.symbols.names().has_base(),
            };
            // A fresh array has nothing to compare with: it is written whole, below.
            let (len, has_base, dirty) = match a {
                _ if !has_base => (self.array_len(a), false, Vec::new()),
                Array::Symbols => dirty_records(self.symbols.records()),
                Array::Sites => dirty_records(self.sites.records()),
                Array::Index => dirty_records(&self.symbols.index().slots),
                Array::Symtab => dirty_records(&self.symtab.entries),
                Array::Owners => dirty_records(&self.symtab.owners),
                Array::Names => {
                    let names = self.symbols.names();
                    let (at, bytes) = names.appended();
                    (
                        names.len() as u64,
                        names.has_base(),
                        vec![(u64::from(at), bytes.to_vec())],
                    )
                }
            };
            let len = len * if a == Array::Names { 1 } else { size(a) };
            let old = self.arrays[a.index()].clone();
            let fits = old.extent.is_some_and(|e| len <= e.capacity);
            let state = if has_base && fits {
                let e = old.extent.expect("checked");
                let mut pages = BTreeSet::new();
                for (at, bytes) in &dirty {
                    let at = at * if a == Array::Names { 1 } else { size(a) };
                    if bytes.is_empty() {
                        continue;
                    }
                    self.store.write(e.offset + at, bytes);
                    let first = at as usize / PAGE_BYTES;
                    let last = (at as usize + bytes.len() - 1) / PAGE_BYTES;
                    pages.extend(first..=last);
                }
                let n_pages = (len as usize).div_ceil(PAGE_BYTES);
                let mut sums = old.page_sums.clone();
                sums.resize(n_pages, 0);
                if len != old.len && n_pages > 0 {
                    // The last page's contents end somewhere else now.
                    pages.insert(n_pages - 1);
                    pages.extend(old.page_sums.len()..n_pages);
                }
                for p in pages.into_iter().filter(|&p| p < n_pages) {
                    let start = (p * PAGE_BYTES) as u64;
                    let bytes = self
                        .store
                        .read(e.offset + start, (len - start).min(PAGE_BYTES as u64));
                    sums[p] = xxh3_64(&bytes);
                }
                ArrayState {
                    extent: Some(e),
                    len,
                    page_sums: sums,
                }
            } else {
                let bytes = match a {
                    Array::Symbols => self.symbols.records().to_bytes(),
                    Array::Sites => self.sites.records().to_bytes(),
                    Array::Index => self.symbols.index().slots.to_bytes(),
                    Array::Symtab => self.symtab.entries.to_bytes(),
                    Array::Owners => self.symtab.owners.to_bytes(),
                    Array::Names => self.symbols.names().to_bytes(),
                };
                let e = self.reserve(old.extent, bytes.len() as u64)?;
                self.store.write(e.offset, &bytes);
                ArrayState {
                    extent: Some(e),
                    len,
                    page_sums: crate::table::page_sums(&bytes),
                }
            };
            self.arrays[a.index()] = state;
        }
        Ok(())
    }

    /// Records (bytes, for names) in array `a`.
    fn array_len(&self, a: Array) -> u64 {
        (match a {
            Array::Symbols => self.symbols.records().len(),
            Array::Sites => self.sites.records().len(),
            Array::Index => self.symbols.index().slots.len(),
            Array::Symtab => self.symtab.entries.len(),
            Array::Owners => self.symtab.owners.len(),
            Array::Names => self.symbols.names().len(),
        }) as u64
    }

    /// The table's header and body, section headers, and the ELF and program headers.
    /// Returns the offset of the new table. `in_progress` marks the table for the update
    /// protocol; `entry` is what `e_entry` says for now.
    fn write_tables(&mut self, entry: u64, in_progress: bool) -> Result<u64> {
        let dynamic = self.dynamic();
        let mut segments = vec![Segment::headers()];
        let mut sections: Vec<Section> = Vec::with_capacity(SECTIONS + 6);
        for kind in RegionKind::ALL {
            let used = self.regions[kind.index()].used;
            let offset = self.extents[kind.index()].map_or(0, |e| e.offset);
            // The dynamic loader writes the GOT, then makes it read-only (`PT_GNU_RELRO`).
            let got_rw = dynamic && kind == RegionKind::Got;
            if used > 0 {
                segments.push(Segment {
                    p_type: elf::PT_LOAD,
                    flags: if got_rw {
                        elf::PF_R | elf::PF_W
                    } else {
                        kind.segment_flags()
                    },
                    offset,
                    vaddr: kind.vaddr(),
                    filesz: if kind.in_file() { used } else { 0 },
                    memsz: if got_rw { align_up(used, PAGE) } else { used },
                    align: PAGE,
                });
            }
            // The dynamic region's pieces get sections of their own below.
            if kind == RegionKind::Dynamic {
                continue;
            }
            sections.push(Section {
                name: kind.section_name().into(),
                sh_type: kind.section_type(),
                flags: kind.section_flags() | if got_rw { u64::from(elf::SHF_WRITE) } else { 0 },
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
        if dynamic {
            self.dynamic_segments(&mut segments);
        }
        if let Some((hdr, hdr_len, _, _)) = self.eh_layout {
            segments.push(Segment {
                p_type: elf::PT_GNU_EH_FRAME,
                flags: elf::PF_R,
                offset: self.file_offset(RegionKind::Dynamic, hdr),
                vaddr: hdr,
                filesz: hdr_len,
                memsz: hdr_len,
                align: 4,
            });
        }

        // The table describes the file as it will be, its own extent included: reserve the
        // extents first (the encoded length does not depend on their values), then encode.
        if let Some(new) = self.extra_sections.take() {
            self.extras = self.place_extras(new)?;
        }
        // Fixed sections, six dynamic ones, two for unwinding, and the extras.
        let meta_bytes_needed =
            SHDR_BYTES + (crate::elf::SHDR_SIZE + 32) * (self.extras.len() as u64 + 2);
        let meta = self.reserve(self.meta, meta_bytes_needed)?;
        self.meta = Some(meta);
        let table_len = self.encode_table(entry, in_progress).len() as u64;
        let table = self.reserve(self.table, table_len)?;
        self.table = Some(table);
        let encoded = self.encode_table(entry, in_progress);
        debug_assert_eq!(encoded.len() as u64, table_len);
        self.store.write(table.offset, &encoded);
        self.stats.table_bytes = table_len;

        let array = |a: Array| self.arrays[a.index()].clone();
        let symtab = array(Array::Symtab);
        sections.push(Section {
            name: ".symtab".into(),
            sh_type: elf::SHT_SYMTAB,
            flags: 0,
            addr: 0,
            offset: symtab.extent.map_or(0, |e| e.offset),
            size: symtab.len,
            link: 7,
            info: self.symtab.first_global,
            align: 8,
            entsize: crate::elf::SYM_SIZE,
        });
        let names = array(Array::Names);
        sections.push(Section {
            name: ".strtab".into(),
            sh_type: elf::SHT_STRTAB,
            flags: 0,
            addr: 0,
            offset: names.extent.map_or(0, |e| e.offset),
            size: names.len,
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
            offset: table.offset,
            size: table_len,
            link: 0,
            info: 0,
            align: 8,
            entsize: 0,
        });
        for a in [Array::Symbols, Array::Sites, Array::Index, Array::Owners] {
            let s = array(a);
            sections.push(Section {
                name: a.section_name().into(),
                sh_type: elf::SHT_PROGBITS,
                flags: 0,
                addr: 0,
                offset: s.extent.map_or(0, |e| e.offset),
                size: s.len,
                link: 0,
                info: 0,
                align: 8,
                entsize: 0,
            });
        }
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
        debug_assert_eq!(sections.len() + 1, SECTIONS);
        if dynamic {
            self.dynamic_sections(&mut sections);
        }
        if let Some((hdr, hdr_len, frames, frames_len)) = self.eh_layout {
            for (name, addr, len) in [
                (".eh_frame_hdr", hdr, hdr_len),
                (".eh_frame", frames, frames_len),
            ] {
                sections.push(Section {
                    name: name.into(),
                    sh_type: elf::SHT_PROGBITS,
                    flags: u64::from(elf::SHF_ALLOC),
                    addr,
                    offset: self.file_offset(RegionKind::Dynamic, addr),
                    size: len,
                    link: 0,
                    info: 0,
                    align: if name == ".eh_frame" { 8 } else { 4 },
                    entsize: 0,
                });
            }
        }
        for x in &self.extras {
            sections.push(Section {
                name: x.name.clone(),
                sh_type: elf::SHT_PROGBITS,
                flags: 0,
                addr: 0,
                offset: x.extent.offset,
                size: x.len,
                link: 0,
                info: 0,
                align: 1,
                entsize: 0,
            });
        }
        let (shstrtab, names) = crate::elf::shstrtab(&sections);
        let shstr = SECTIONS - 2;
        sections[shstr].size = shstrtab.len() as u64;
        sections[shstr].offset = meta.offset + crate::elf::SHDR_SIZE * (sections.len() as u64 + 1);
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
            SHSTRTAB_INDEX,
        );
        self.store.write(0, &headers);
        Ok(table.offset)
    }

    /// Write the caller's new extra sections, each over its old extent where it fits.
    fn place_extras(&mut self, new: Vec<(String, Vec<u8>)>) -> Result<Vec<ExtraSection>> {
        let mut placed = Vec::with_capacity(new.len());
        for (name, bytes) in new {
            let old = self
                .extras
                .iter()
                .find(|x| x.name == name)
                .map(|x| x.extent);
            let len = bytes.len() as u64;
            let extent = self.reserve(old, len.max(1))?;
            self.store.write_changed(extent.offset, &bytes);
            placed.push(ExtraSection {
                name,
                extent,
                len,
                checksum: xxh3_64(&bytes),
            });
        }
        Ok(placed)
    }

    /// `PT_PHDR` and `PT_INTERP` first (the loader requires them before any `PT_LOAD`), then
    /// `PT_DYNAMIC` and `PT_GNU_RELRO` over the GOT at the end.
    fn dynamic_segments(&self, segments: &mut Vec<Segment>) {
        let t = self
            .dynamic_layout
            .as_ref()
            .expect("written before the tables");
        let slot = self.dynamic_slot.expect("written with the tables");
        let got = RegionKind::Got;
        let offset = |region: RegionKind, addr: u64| self.file_offset(region, addr);
        let count = segments.len() as u64 + 4;
        segments.insert(
            0,
            Segment {
                p_type: elf::PT_PHDR,
                flags: elf::PF_R,
                offset: crate::elf::EHDR_SIZE,
                vaddr: HEADERS_VADDR + crate::elf::EHDR_SIZE,
                filesz: crate::elf::PHDR_SIZE * count,
                memsz: crate::elf::PHDR_SIZE * count,
                align: 8,
            },
        );
        segments.insert(
            1,
            Segment {
                p_type: elf::PT_INTERP,
                flags: elf::PF_R,
                offset: offset(RegionKind::Dynamic, t.interp.0),
                vaddr: t.interp.0,
                filesz: t.interp.1,
                memsz: t.interp.1,
                align: 1,
            },
        );
        segments.push(Segment {
            p_type: elf::PT_DYNAMIC,
            flags: elf::PF_R | elf::PF_W,
            offset: offset(got, slot.addr),
            vaddr: slot.addr,
            filesz: slot.capacity,
            memsz: slot.capacity,
            align: 8,
        });
        let used = align_up(self.regions[got.index()].used, PAGE);
        segments.push(Segment {
            p_type: elf::PT_GNU_RELRO,
            flags: elf::PF_R,
            offset: offset(got, got.vaddr()),
            vaddr: got.vaddr(),
            filesz: self.regions[got.index()].used,
            memsz: used,
            align: 1,
        });
    }

    /// Sections for the dynamic loader's tables, so `readelf -d`, `ldd` and debuggers see them.
    fn dynamic_sections(&self, sections: &mut Vec<Section>) {
        let t = self
            .dynamic_layout
            .as_ref()
            .expect("written before the tables");
        let slot = self.dynamic_slot.expect("written with the tables");
        let dynsym = sections.len() as u32 + 2;
        let dynstr = dynsym + 1;
        let at = |addr: u64| self.file_offset(RegionKind::Dynamic, addr);
        let alloc = u64::from(elf::SHF_ALLOC);
        let mut add = |name: &str, sh_type, addr: u64, offset, size, link, info, align, entsize| {
            sections.push(Section {
                name: name.into(),
                sh_type,
                flags: alloc,
                addr,
                offset,
                size,
                link,
                info,
                align,
                entsize,
            })
        };
        add(
            ".interp",
            elf::SHT_PROGBITS,
            t.interp.0,
            at(t.interp.0),
            t.interp.1,
            0,
            0,
            1,
            0,
        );
        add(
            ".dynsym",
            elf::SHT_DYNSYM,
            t.dynsym.0,
            at(t.dynsym.0),
            t.dynsym.1,
            dynstr,
            1,
            8,
            24,
        );
        add(
            ".dynstr",
            elf::SHT_STRTAB,
            t.dynstr.0,
            at(t.dynstr.0),
            t.dynstr.1,
            0,
            0,
            1,
            0,
        );
        add(
            ".hash",
            elf::SHT_HASH,
            t.hash.0,
            at(t.hash.0),
            t.hash.1,
            dynsym,
            0,
            8,
            4,
        );
        add(
            ".rela.dyn",
            elf::SHT_RELA,
            t.rela.0,
            at(t.rela.0),
            t.rela.1,
            dynsym,
            0,
            8,
            24,
        );
        let size = crate::dynamic::dynamic_section(t).len() as u64;
        let offset = self.file_offset(RegionKind::Got, slot.addr);
        sections.push(Section {
            name: ".dynamic".into(),
            sh_type: elf::SHT_DYNAMIC,
            flags: alloc | u64::from(elf::SHF_WRITE),
            addr: slot.addr,
            offset,
            size,
            link: dynstr,
            info: 0,
            align: 8,
            entsize: 16,
        });
    }

    fn encode_table(&self, _entry: u64, in_progress: bool) -> Vec<u8> {
        let counts = self.symbols.counts();
        persist::encode(
            &Header {
                flags: if in_progress {
                    persist::FLAG_IN_PROGRESS
                } else {
                    0
                },
                generation: self.generation,
                entry: self.addr_of(x86_64::START.name),
                interrupted: self.addr_of(x86_64::INTERRUPTED_NAME),
                ..Header::default()
            },
            &Body {
                settings: self.settings.clone(),
                regions: self.regions.to_vec(),
                extents: self.extents,
                meta: self.meta,
                table: self.table,
                arrays: self.arrays.clone(),
                live_sites: self.sites.len() as u32,
                index_count: self.symbols.index().count,
                first_global: self.symtab.first_global,
                counts: [counts.functions, counts.data_objects, counts.got_entries],
                manifest: self.manifest.clone(),
                libraries: self.libraries.clone(),
                imports: self.imports.iter().map(|i| i.0).collect(),
                dynamic_slot: self.dynamic_slot.map_or((0, 0), |s| (s.addr, s.capacity)),
                eh_layout: self.eh_layout.map_or([0; 4], |(a, b, c, d)| [a, b, c, d]),
                extras: self.extras.clone(),
                extras_index: self.extras_index.clone(),
            },
        )
    }

    /// The symbol table, for `inspect`.
    pub fn symtab_len(&self) -> usize {
        self.symtab.len()
    }
}

/// Bytes reserved for the section headers (the fixed ones and six dynamic ones) and
/// `.shstrtab`.
const SHDR_BYTES: u64 = crate::elf::SHDR_SIZE * (SECTIONS as u64 + 6) + 512;

/// (records, has a base, [(record index, bytes)]) of the records that changed.
fn dirty_records<T: object::pod::Pod + Default>(
    r: &Records<T>,
) -> (u64, bool, Vec<(u64, Vec<u8>)>) {
    let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
    let size = std::mem::size_of::<T>() as u64;
    for (i, rec) in r.dirty() {
        let bytes = object::pod::bytes_of(&rec);
        // Consecutive records travel as one write.
        if let Some((start, buf)) = runs.last_mut() {
            if *start + buf.len() as u64 / size == u64::from(i) {
                buf.extend_from_slice(bytes);
                continue;
            }
        }
        runs.push((u64::from(i), bytes.to_vec()));
    }
    (r.len() as u64, r.has_base(), runs)
}

/// The table of a zerolink executable: its file offset, header and body.
pub fn find_table(file: &[u8]) -> Result<(u64, Header, Body), Reject> {
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
    let (header, body) = persist::decode(bytes)?;
    Ok((offset, header, body))
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
/// Where the `.eh_frame` of `eh_layout` is in a file with region `extents` of `file_len` bytes.
fn old_eh_frame(
    extents: &[Option<Extent>; REGIONS],
    eh_layout: [u64; 4],
    file_len: u64,
) -> Option<(u64, u64)> {
    let [_, _, frame, len] = eh_layout;
    let e = extents[RegionKind::Dynamic.index()]?;
    let offset = e.offset + frame.checked_sub(RegionKind::Dynamic.vaddr())?;
    let len = len.checked_sub(4)?;
    (offset + len <= file_len && offset + len <= e.offset + e.capacity).then_some((offset, len))
}

fn region_of(addr: u64) -> RegionKind {
    RegionKind::ALL
        .into_iter()
        .rev()
        .find(|k| addr >= k.vaddr())
        .unwrap_or(RegionKind::Text)
}
