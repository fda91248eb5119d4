//! The image under construction: regions, slots, symbols and sites, and the file they live in.
//!
//! Defining a function or data object places it in a slot, writes its bytes straight into the
//! memory-mapped output, records each reference it makes as a site, and patches at once every
//! site whose target already has an address, including earlier sites that were waiting for
//! this very symbol. `finish` then adds the runtime pieces that were asked for, checks that
//! nothing is left undefined, and writes the headers and tables. Each site is patched once.
//!
//! File space: each region's bytes occupy one *extent* of the file (page-aligned, with spare
//! room). An extent that fills up grows in place when it is the last thing in the file, and is
//! otherwise copied to the end of the file; its addresses never change, only its file offset.

use object::elf;

use crate::elf::{Section, Segment, SymbolEntry};
use crate::error::{ImageError, Result, Undefined};
use crate::layout::{align_up, RegionKind, HEADERS_VADDR, PAGE};
use crate::output::Output;
use crate::sites::{Place, RefKind, Reference, Site, SiteId, Sites};
use crate::slots::{Region, Slot};
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
}

#[derive(Debug, Clone, Copy)]
struct Extent {
    offset: u64,
    capacity: u64,
}

/// Name of the program's entry function, called by `_start`.
pub const ENTRY: &str = "main";

pub struct Image {
    out: Output,
    regions: [Region; 5],
    extents: [Option<Extent>; 5],
    symbols: SymbolTable,
    sites: Sites,
    /// Initial file capacity per region, from the caller's size hint.
    initial_extent: [u64; 5],
}

impl Image {
    /// Start a new executable that will replace `path` when finished.
    pub fn create(path: &std::path::Path) -> Result<Image> {
        let mut out = Output::create(path)?;
        // The headers page is always first in the file and the address space.
        let headers = out.allocate(PAGE, PAGE)?;
        debug_assert_eq!(headers, 0);
        Ok(Image {
            out,
            regions: RegionKind::ALL.map(Region::new),
            extents: [None; 5],
            symbols: SymbolTable::default(),
            sites: Sites::default(),
            initial_extent: [PAGE, PAGE, PAGE, PAGE, 0],
        })
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
        let region = match (writable, contents) {
            // Zero-fill objects take no file space, unless something must be patched into them.
            (true, Contents::Zeros(_)) if refs.is_empty() => RegionKind::Bss,
            (true, _) => RegionKind::Data,
            (false, _) => RegionKind::Rodata,
        };
        self.define(id, region, contents, align, refs)
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

    fn define(
        &mut self,
        id: SymbolId,
        region: RegionKind,
        contents: Contents<'_>,
        align: u64,
        refs: &[Reference],
    ) -> Result<()> {
        let name = &self.symbols.get(id).name;
        if self.symbols.get(id).placement.is_some() {
            return Err(ImageError::DuplicateDefinition(name.clone()));
        }
        if !align.is_power_of_two() || align > PAGE {
            return Err(ImageError::BadAlignment {
                name: name.clone(),
                align,
            });
        }
        let size = contents.len();
        for r in refs {
            if u64::from(r.offset) + u64::from(r.kind.width()) > size {
                return Err(ImageError::SiteOutOfBounds {
                    function: name.clone(),
                    offset: r.offset,
                    size,
                });
            }
        }

        let used_before = self.regions[region.index()].used;
        let slot = self.regions[region.index()].alloc(size, align)?;
        if region.in_file() {
            // Fill the alignment gap before a slot at the top, and the slot's own slack.
            let base = region.vaddr();
            let fill_from = slot.addr.min(base + used_before);
            self.ensure_extent(region, slot.end() - base)?;
            let at = self.file_offset(region, fill_from);
            self.out
                .fill(at, slot.end() - fill_from, region.fill_byte());
            if let Contents::Bytes(bytes) = contents {
                let at = self.file_offset(region, slot.addr);
                self.out.write(at, bytes);
            }
        }
        self.symbols.get_mut(id).placement = Some(Placement { region, slot, size });

        // Outgoing references: record, and patch those whose target is already placed.
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
        // Incoming references that were waiting for this symbol's address.
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
        let used_before = self.regions[RegionKind::Got.index()].used;
        let slot: Slot = self.regions[RegionKind::Got.index()].alloc(8, 8)?;
        debug_assert_eq!(slot.addr, RegionKind::Got.vaddr() + used_before);
        self.ensure_extent(RegionKind::Got, slot.end() - RegionKind::Got.vaddr())?;
        let at = self.file_offset(RegionKind::Got, slot.addr);
        self.out.fill(at, 8, 0);
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
            if self.relax_got_load(&site, p) {
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
        self.out.write(at, field.bytes());
        Ok(())
    }

    /// Turn a GOT load in code into an address computation, if the instruction allows it.
    fn relax_got_load(&mut self, site: &Site, p: u64) -> bool {
        let Place::In { owner, offset } = site.place else {
            return false;
        };
        let owner = self.symbols.get(owner);
        if offset < 3 || owner.placement.map(|pl| pl.region) != Some(RegionKind::Text) {
            return false;
        }
        let at = self.file_offset(RegionKind::Text, p - 3);
        let before: [u8; 3] = self.out.bytes(at, 3).try_into().expect("three bytes");
        match x86_64::relax_got_load(before) {
            Some(opcode) => {
                self.out.write(at + 1, &[opcode]);
                true
            }
            None => false,
        }
    }

    /// Make the region's file extent hold at least `len` bytes.
    fn ensure_extent(&mut self, region: RegionKind, len: u64) -> Result<()> {
        let i = region.index();
        match self.extents[i] {
            Some(e) if len <= e.capacity => Ok(()),
            Some(e) if e.offset + e.capacity == self.out.len() => {
                // Last extent in the file: grow in place.
                let extra = align_up(len.max(2 * e.capacity), PAGE) - e.capacity;
                self.out.allocate(extra, 1)?;
                self.extents[i] = Some(Extent {
                    offset: e.offset,
                    capacity: e.capacity + extra,
                });
                Ok(())
            }
            Some(e) => {
                let capacity = align_up(len.max(2 * e.capacity), PAGE);
                let offset = self.out.allocate(capacity, PAGE)?;
                let used = self.regions[i].used.min(e.capacity);
                self.out.copy_within(e.offset, used, offset);
                // The old bytes are dead: zero them so output does not depend on history.
                self.out.fill(e.offset, e.capacity, 0);
                self.extents[i] = Some(Extent { offset, capacity });
                Ok(())
            }
            None => {
                let capacity = align_up(len.max(self.initial_extent[i]), PAGE);
                let offset = self.out.allocate(capacity, PAGE)?;
                self.extents[i] = Some(Extent { offset, capacity });
                Ok(())
            }
        }
    }

    fn file_offset(&self, region: RegionKind, addr: u64) -> u64 {
        let e = self.extents[region.index()].expect("placed bytes have an extent");
        e.offset + (addr - region.vaddr())
    }

    /// Define every builtin that is referred to but not defined by the program, plus `_start`.
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
            self.define_stub(id, stub)?;
        }
        let start = self.declare(x86_64::START.name, SymbolKind::Function, Binding::Global)?;
        self.define_stub(start, &x86_64::START)
    }

    fn define_stub(&mut self, id: SymbolId, stub: &x86_64::Stub) -> Result<()> {
        self.symbols.get_mut(id).builtin = true;
        let mut refs = Vec::new();
        for &(offset, target) in stub.calls {
            let target = self.declare(target, SymbolKind::Function, Binding::Global)?;
            refs.push(Reference {
                offset,
                kind: RefKind::PcRel32,
                target,
                addend: -4,
            });
        }
        self.define(id, RegionKind::Text, Contents::Bytes(stub.code), 16, &refs)
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

    /// Complete the executable and move it into place.
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
        // At this point every address is fixed and every site is patched.
        let summary = self.write_tables()?;
        self.out.commit()?;
        Ok(summary)
    }

    /// Section headers, `.symtab`, `.strtab` and the ELF and program headers.
    fn write_tables(&mut self) -> Result<Summary> {
        let mut segments = vec![Segment::headers()];
        let mut sections: Vec<Section> = Vec::new();
        let mut shndx = [0u16; 5];
        for kind in RegionKind::ALL {
            let used = self.regions[kind.index()].used;
            if used == 0 {
                continue;
            }
            let offset = match self.extents[kind.index()] {
                Some(e) => e.offset,
                None => 0,
            };
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

        let mut summary = Summary {
            sites: self.sites.len(),
            ..Summary::default()
        };
        for kind in RegionKind::ALL {
            summary.region_used[kind.index()] = self.regions[kind.index()].used;
        }
        let mut locals = Vec::new();
        let mut globals = Vec::new();
        for (_, sym) in self.symbols.iter() {
            let Some(p) = sym.placement else { continue };
            match sym.kind {
                SymbolKind::Function => summary.functions += 1,
                SymbolKind::Data => summary.data_objects += 1,
            }
            if sym.got.is_some() {
                summary.got_entries += 1;
            }
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

        let symtab_index = sections.len() as u32 + 1;
        let symtab_off = self.out.allocate(symtab.len() as u64, 8)?;
        self.out.write(symtab_off, &symtab);
        let strtab_off = self.out.allocate(strtab.len() as u64, 1)?;
        self.out.write(strtab_off, &strtab);
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
        let shstrtab_off = self.out.allocate(shstrtab.len() as u64, 1)?;
        self.out.write(shstrtab_off, &shstrtab);
        let last = sections.len() - 1;
        sections[last].offset = shstrtab_off;
        sections[last].size = shstrtab.len() as u64;
        let shdrs = crate::elf::section_headers(&sections, &names);
        let shoff = self.out.allocate(shdrs.len() as u64, 8)?;
        self.out.write(shoff, &shdrs);

        let start = self
            .symbols
            .lookup(x86_64::START.name)
            .and_then(|id| self.symbols.get(id).addr())
            .unwrap_or(HEADERS_VADDR);
        let headers = crate::elf::headers(
            x86_64::E_MACHINE,
            start,
            &segments,
            shoff,
            sections.len() as u16 + 1,
            sections.len() as u16,
        );
        self.out.write(0, &headers);
        summary.file_size = self.out.len();
        Ok(summary)
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
