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

mod canonical;
mod copy;
mod finish;
mod ifunc;
mod live;
mod place;
mod tables;
mod verify;

pub use verify::Problem;

pub use tables::find_table;
use tables::{data_region, grow_extent, old_eh_frame, region_of};

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
    /// Shared libraries' data objects this build copied into the executable
    /// (`R_X86_64_COPY`).
    pub copies: usize,
    /// Bytes written to the file by this build.
    pub bytes_written: u64,
    /// Bytes of the table (`.zerolink` and its arrays).
    pub table_bytes: u64,
    /// How many builds made this file (1 after a full build).
    pub generation: u64,
    /// The entry point (`_start`, the ELF header's `e_entry`) and the address of `main`.
    pub entry: u64,
    pub main: u64,
    /// A live update's log (see `crate::live`): `None` unless the update was live.
    pub live: Option<Box<crate::live::LiveLog>>,
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
    /// addresses: no site is written twice.
    lazy_patching: bool,
    /// In an update: symbols whose address references use became known or changed (an
    /// import resolved, a data object moved), whose referrers `patch_pending` patches, all
    /// at once, at the end.
    repatch: Vec<SymbolId>,
    /// Imports that became canonical in this build (`canonical.rs`): their GOT loads are
    /// patched again at the end.
    canonical_late: Vec<SymbolId>,
    /// See `set_entry_jumps`.
    entry_jumps: bool,
    /// In an update: the sites this build made, which are all `patch_pending` needs to look
    /// at for a symbol whose referrers are all new (a function added and called).
    made: Vec<SiteId>,
    /// Initial file capacity per region, from the caller's size hint.
    initial_extent: [u64; REGIONS],
    /// Target, flags and version the image is built with; an update requires the same.
    settings: String,
    generation: u64,
    /// For the update protocol: where the old table's header is.
    old_table: Option<u64>,
    /// Where this build's program header table goes (one of `elf::PHDR_SLOTS`).
    phdrs_at: u64,
    /// Page checksums of each region's contents in the file (see `verify.rs`).
    region_sums: Vec<Vec<u64>>,
    /// Each region's extent and bytes in use when the file was opened: where the pages the
    /// old checksums describe are (`update_region_sums` checks them before replacing them).
    opened_regions: [Option<(Extent, u64)>; REGIONS],
    /// The caller's record of its inputs, kept in the table (opaque here).
    manifest: Vec<u8>,
    /// Shared libraries (sonames) that may provide imports, in search order.
    libraries: Vec<String>,
    /// Where the dynamic loader looks for them first (`DT_RUNPATH`), given by every build.
    runpath: Option<String>,
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
    /// The previous build's `eh_layout`: an update keeps the header where it was.
    old_eh_layout: Option<(u64, u64, u64, u64)>,
    /// Where code was that this build replaced or removed: the previous build's unwind
    /// entries for these addresses are stale.
    replaced_code: BTreeSet<u64>,
    /// `.eh_frame` contents (absolute FDE addresses), loaded after the loader's tables.
    eh_frame: Option<Vec<u8>>,
    /// Where `.eh_frame_hdr` and `.eh_frame` went: (hdr addr, hdr len, frame addr, frame len).
    eh_layout: Option<(u64, u64, u64, u64)>,
    stats: Summary,
    /// The thread-local block's size when an existing file was opened (`None`: a fresh one).
    tls_at_open: Option<u64>,
    /// A position-independent executable: absolute addresses get `R_X86_64_RELATIVE`.
    pie: bool,
    /// Relative relocations in a freestanding PIE's own table (`x86_64::RELOCS`).
    self_relocs: u64,
    /// An update of a running process's executable too (see `crate::live`).
    live: Option<Box<live::Live>>,
    /// What the live update found, for `finish` to hand over.
    live_log: Option<Box<crate::live::LiveLog>>,
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

/// Looks a name up in the shared libraries: what the first library that exports it says.
pub type Resolver = Box<dyn Fn(&str) -> Option<Export>>;

/// A name a shared library exports, as the image needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Index into the libraries given to [`Image::link_dynamically`].
    pub library: u32,
    /// Not a function (a data object, a thread-local, or untyped).
    pub data: bool,
    /// The version of the library's default definition (`name@@VERSION`), which the
    /// executable asks for (`.gnu.version`, `.gnu.version_r`) as ld does.
    pub version: Option<String>,
    /// A data object (not a function or a thread-local): what a copy relocation needs.
    pub object: Option<ObjectExport>,
}

/// A shared library's data object, for a copy relocation (see `copy.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectExport {
    pub size: u64,
    /// What the library's definition is aligned to (its section's alignment, at most what
    /// its address's low bits allow, as mold and lld compute it).
    pub align: u64,
    /// The library's other names for the same bytes (`environ`, `__environ`, `_environ`):
    /// the executable exports the copy under each, or the library's code that uses another
    /// name would read its own, stale original.
    pub aliases: Vec<String>,
}

impl Image {
    /// Start a new executable that will replace `path` when finished.
    pub fn create(path: &Path) -> Result<Image> {
        let mut out = Output::create(path)?;
        // The headers page is always first in the file and the address space.
        let headers = out.allocate(PAGE, PAGE)?;
        debug_assert_eq!(headers, 0);
        Ok(Image {
            pie: false,
            tls_at_open: None,
            store: Store::Fresh(out),
            // Nothing is known of which functions will be edited: an eighth of slack each.
            regions: RegionKind::ALL.map(|k| {
                let mut r = Region::new(k);
                r.slack = crate::slots::Slack::Eighth;
                r
            }),
            extents: [None; REGIONS],
            meta: None,
            table: None,
            arrays: vec![ArrayState::default(); Array::ALL.len()],
            symbols: SymbolTable::default(),
            // Lists are linked in bulk, when something first walks them.
            sites: Sites::deferred(),
            symtab: Symtab::default(),
            touched: Touched::All,
            lazy_patching: true,
            repatch: Vec::new(),
            canonical_late: Vec::new(),
            entry_jumps: true,
            made: Vec::new(),
            initial_extent: [PAGE, PAGE, PAGE, PAGE, 0, PAGE, PAGE],
            settings: String::new(),
            generation: 0,
            old_table: None,
            phdrs_at: crate::elf::PHDR_SLOTS[0],
            region_sums: vec![Vec::new(); REGIONS],
            opened_regions: [None; REGIONS],
            manifest: Vec::new(),
            libraries: Vec::new(),
            runpath: None,
            imports: Vec::new(),
            dynamic_slot: None,
            resolver: None,
            dynamic_layout: None,
            extra_sections: None,
            extras: Vec::new(),
            extras_index: Vec::new(),
            old_extras_intact: std::cell::OnceCell::new(),
            old_eh_frame: None,
            old_eh_layout: None,
            replaced_code: BTreeSet::new(),
            eh_frame: None,
            eh_layout: None,
            stats: Summary::default(),
            self_relocs: 0,
            live: None,
            live_log: None,
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
        if !crate::elf::headers_intact(&map) {
            return Err(OpenError::Incompatible(
                "its ELF header or program headers are damaged".into(),
            ));
        }
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
            body.rare.clone(),
        );
        let sites = Sites::restore(Records::from_base(base(Array::Sites)?), body.live_sites);
        let symtab = Symtab {
            entries: Records::from_base(base(Array::Symtab)?),
            first_global: body.first_global,
        };
        let regions: [Region; REGIONS] = body
            .regions
            .try_into()
            .map_err(|_| OpenError::Incompatible("bad region count".into()))?;
        let opened_regions: [Option<(Extent, u64)>; REGIONS] =
            std::array::from_fn(|i| body.extents[i].map(|e| (e, regions[i].used)));
        Ok(Image {
            pie: false,
            tls_at_open: Some(regions[RegionKind::Tls.index()].used),
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
            repatch: Vec::new(),
            canonical_late: Vec::new(),
            entry_jumps: true,
            made: Vec::new(),
            initial_extent: [PAGE, PAGE, PAGE, PAGE, 0, PAGE, PAGE],
            settings: body.settings,
            generation: header.generation,
            old_table: Some(offset),
            phdrs_at: crate::elf::PHDR_SLOTS[0],
            region_sums: body.region_sums,
            opened_regions,
            manifest: body.manifest,
            libraries: body.libraries,
            runpath: None,
            imports: body.imports.into_iter().map(SymbolId).collect(),
            dynamic_slot: (body.dynamic_slot.1 != 0).then_some(Slot {
                addr: body.dynamic_slot.0,
                capacity: body.dynamic_slot.1,
            }),
            resolver: None,
            dynamic_layout: None,
            extra_sections: None,
            old_eh_frame: old_eh_frame(&body.extents, body.eh_layout, map.len() as u64),
            old_eh_layout: (body.eh_layout != [0; 4]).then(|| {
                let [a, b, c, d] = body.eh_layout;
                (a, b, c, d)
            }),
            extras: body.extras,
            extras_index: body.extras_index,
            old_extras_intact: std::cell::OnceCell::new(),
            replaced_code: BTreeSet::new(),
            eh_frame: None,
            eh_layout: None,
            stats: Summary::default(),
            self_relocs: 0,
            live: None,
            live_log: None,
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

    /// Make a position-independent executable (given by every build, like the libraries).
    /// Whether a function that outgrows its slot in an update leaves a jump at its old entry
    /// (the default: its referrers stay as they are) or has every referrer patched (found
    /// by a scan of the sites), for debug builds: gdb's `step` into a call does not follow
    /// a jump it does not know as a PLT entry, and would step over the call.
    pub fn set_entry_jumps(&mut self, on: bool) {
        self.entry_jumps = on;
    }

    pub fn set_pie(&mut self, pie: bool) {
        self.pie = pie;
    }

    /// Directories the dynamic loader searches first for the libraries (`DT_RUNPATH`, as
    /// `ld -rpath` writes it; colon-separated).
    pub fn set_runpath(&mut self, runpath: Option<String>) {
        self.runpath = runpath;
    }

    fn dynamic(&self) -> bool {
        self.resolver.is_some()
    }

    /// A freestanding PIE: no loader relocates it, its `_start` does.
    fn self_relocating(&self) -> bool {
        self.pie && !self.dynamic()
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

    /// Address of `id`'s GOT entry, once something has referred to it through the GOT.
    pub fn got_of(&self, id: SymbolId) -> Option<u64> {
        let g = self.symbols.got_site(id).checked_sub(1)?;
        match self.sites.get(SiteId(g)).place {
            Place::GotEntry { addr } => Some(addr),
            Place::In { .. } => None,
        }
    }

    /// Sites whose value depends on `target`'s address: a scan of every site (see
    /// `sites.rs`), for rare paths only.
    pub fn referrers(&self, target: SymbolId) -> Vec<SiteId> {
        self.sites.referring_to_any(&[target])
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

    /// Give a symbol exactly this binding (a definition's final linkage, which may be weaker
    /// than a declaration's).
    pub fn set_binding(&mut self, id: SymbolId, binding: Binding) {
        let mut sym = self.symbols.get(id);
        if sym.binding() != binding {
            sym.set_binding(binding);
            self.symbols.set(id, sym);
            self.touched.insert(id);
        }
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
        self.check_definable(id, SymbolKind::Function)?;
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
        self.check_definable(id, SymbolKind::Data)?;
        let region = data_region(contents, writable || self.pie_needs_writing(refs), refs);
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
        self.check_definable(id, SymbolKind::Function)?;
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
        self.check_definable(id, SymbolKind::Data)?;
        let region = data_region(contents, writable || self.pie_needs_writing(refs), refs);
        self.redefine(id, region, contents, align, refs)
    }

    /// Define a thread-local data object: its initial contents in the TLS region (every
    /// thread's block starts as a copy of it). Alignment at most `layout::TLS_ALIGN`.
    pub fn define_tls_data(
        &mut self,
        id: SymbolId,
        contents: Contents<'_>,
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        self.check_definable(id, SymbolKind::Data)?;
        if align > crate::layout::TLS_ALIGN {
            return Err(ImageError::BadAlignment {
                name: self.symbols.name(id),
                align,
            });
        }
        self.redefine(id, RegionKind::Tls, contents, align, refs)
    }

    /// Bytes of the thread-local block (the TLS region in use): an update that changes it
    /// changes every thread-local's offset.
    pub fn tls_size(&self) -> u64 {
        self.regions[RegionKind::Tls.index()].used
    }

    /// In an update, the thread-local block's size before and now, if it changed: every
    /// thread-local's offset from the thread pointer changed with it.
    pub fn tls_layout_change(&self) -> Option<(u64, u64)> {
        self.tls_at_open
            .filter(|&before| before != self.tls_size())
            .map(|before| (before, self.tls_size()))
    }

    /// Place one section of a precompiled object (a C compiler's `.text.f`, `.rodata`, `.data`,
    /// `.bss`) as one definition in a slot of exactly its size: such sections are placed once
    /// and never grow in place (a changed object is ingested again). Its symbols are aliases
    /// into it (`define_alias`).
    pub fn define_section(
        &mut self,
        id: SymbolId,
        kind: SymbolKind,
        region: RegionKind,
        contents: Contents<'_>,
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        self.check_definable(id, kind)?;
        // Addresses in read-only data are written by the loader in a PIE: writable data.
        let region = if region == RegionKind::Rodata && self.pie_needs_writing(refs) {
            RegionKind::Data
        } else {
            region
        };
        if region == RegionKind::Tls && align > crate::layout::TLS_ALIGN {
            return Err(ImageError::BadAlignment {
                name: self.symbols.name(id),
                align,
            });
        }
        self.place_new(id, region, contents, align, refs, true)?;
        self.patch_referrers(id);
        let mut sym = self.symbols.get(id);
        sym.set_section_atom(true);
        self.symbols.set(id, sym);
        Ok(())
    }

    /// Whether data holding these references must be writable at load time: in a PIE, every
    /// absolute address is relocated by the loader.
    fn pie_needs_writing(&self, refs: &[Reference]) -> bool {
        self.pie && refs.iter().any(|r| r.kind == RefKind::Abs64)
    }

    /// Symbols this build touched that something refers to and nothing defines or imports
    /// yet: what a linker of archives looks for (a fresh build looks at every symbol).
    pub fn wanted(&mut self) -> Vec<SymbolId> {
        self.sites.count_pending(&mut self.symbols);
        self.touched_ids()
            .into_iter()
            .filter(|&id| {
                let s = self.symbols.get(id);
                s.placement().is_none() && s.import().is_none() && s.refs != 0
            })
            .collect()
    }

    /// Define `id` as `size` bytes at `offset` inside `base`'s bytes, owning no slot: a symbol
    /// of a precompiled object's section, whose section is placed as one definition. It moves
    /// only when it is defined again.
    pub fn define_alias(
        &mut self,
        id: SymbolId,
        kind: SymbolKind,
        base: SymbolId,
        offset: u64,
        size: u64,
    ) -> Result<()> {
        self.check_definable(id, kind)?;
        let Some(p) = self.symbols.get(base).placement() else {
            return Err(ImageError::Undefined(vec![Undefined {
                name: self.symbols.name(base),
                referenced_by: vec![self.symbols.name(id)],
            }]));
        };
        if offset.checked_add(size).is_none_or(|end| end > p.size) {
            return Err(ImageError::AliasOutside {
                name: self.symbols.name(id),
                base: self.symbols.name(base),
                offset,
                size,
            });
        }
        self.place_alias(id, p.region, p.slot.addr + offset, size)
    }

    /// Define `_GLOBAL_OFFSET_TABLE_` (declared as data): the base `GotOff64` sites count from.
    pub fn define_got_base(&mut self, id: SymbolId) -> Result<()> {
        self.place_alias(id, RegionKind::Got, x86_64::GOT_BASE, 0)
    }

    /// Define `id` at address 0, owning nothing: an undefined weak reference (`.symtab`
    /// shows it as absolute).
    pub fn define_absolute_zero(&mut self, id: SymbolId) -> Result<()> {
        self.place_alias(id, RegionKind::Text, 0, 0)
    }

    fn place_alias(
        &mut self,
        id: SymbolId,
        region: RegionKind,
        addr: u64,
        size: u64,
    ) -> Result<()> {
        self.live_before(id);
        self.drop_copy(id);
        let sym = self.symbols.get(id);
        if sym.placement().is_some() {
            if !sym.alias() {
                return Err(ImageError::DuplicateDefinition(self.symbols.name(id)));
            }
            self.unplace(id);
        }
        let mut sym = self.symbols.get(id);
        sym.set_placement(Some(Placement {
            region,
            slot: Slot { addr, capacity: 0 },
            size,
        }));
        sym.set_alias(true);
        if sym.import().is_some() {
            sym.set_import(None);
            self.imports.retain(|&i| i != id);
        }
        self.symbols.set(id, sym);
        self.touched.insert(id);
        self.patch_referrers(id);
        Ok(())
    }

    /// Take a definition out: its slot is freed and its own references dropped. Anything that
    /// still refers to it is reported as undefined by `finish`.
    pub fn remove(&mut self, id: SymbolId) {
        if self.unplace(id) {
            self.stats.removed += 1;
        }
    }
}
