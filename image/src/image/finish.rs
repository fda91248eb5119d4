//! The end of a build: the runtime pieces touched symbols need, undefined symbols, unused
//! built-ins, the last patches, the file's extents compacted, the loader's tables, and the
//! commit (see `tables.rs` for what is written).

use super::*;
use crate::symbols::RARE_EH_FRAME;

impl Image {
    /// `_start` and the interrupted-update stub if the image has none yet; then, for every
    /// touched symbol that code refers to and nothing defines: an import if a shared library
    /// provides it, else a built-in if there is one by that name.
    pub(super) fn add_runtime(&mut self) -> Result<()> {
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
            } else if self.self_relocating() {
                self.define_self_relocating_start(start)?;
            } else if self.is_defined(x86_64::INIT_ARRAY_START) || self.tls_size() > 0 {
                // Constructors (from precompiled objects) or thread-locals: `_start` sets up
                // the thread pointer and runs the constructors itself.
                self.define_start_init()?;
                for name in [
                    x86_64::INIT_ARRAY_START,
                    x86_64::INIT_ARRAY_END,
                    x86_64::FINI_ARRAY_START,
                    x86_64::FINI_ARRAY_END,
                ] {
                    if !self.is_defined(name) {
                        // No constructors: empty arrays.
                        let id = self.declare(name, SymbolKind::Data, Binding::Local)?;
                        self.define_absolute_zero(id)?;
                    }
                }
                let ctors = x86_64::START_CTORS;
                self.define_stub(start, ctors.code, ctors.calls)?;
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
        let trampoline = self.declare(
            x86_64::TRAMPOLINE_NAME,
            SymbolKind::Function,
            Binding::Local,
        )?;
        if self.symbols.get(trampoline).placement().is_none() {
            self.define_stub(trampoline, &x86_64::trampoline(), &[])?;
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
            if let Some(export) = self.export_of(&name) {
                if self.wants_copy(id, &export) {
                    if let Some(object) = &export.object {
                        self.make_copy(id, export.library, object)?;
                        continue;
                    }
                }
                let mut sym = self.symbols.get(id);
                sym.set_import(Some(export.library));
                self.symbols.set(id, sym);
                self.imports.push(id);
                self.patch_referrers(id);
            } else if let Some(stub) = x86_64::builtin(&name) {
                if self.symbols.get(id).kind() == SymbolKind::Function {
                    self.define_stub(id, stub.code, stub.calls)?;
                }
            }
        }
        if matches!(self.touched, Touched::Some(_)) {
            // Imports of earlier builds that this update's code reaches directly.
            let direct: Vec<SymbolId> = self
                .touched_ids()
                .into_iter()
                .filter(|&id| {
                    let s = self.symbols.get(id);
                    s.import().is_some() && s.direct_referred() && !s.tls_referred()
                })
                .collect();
            for id in direct {
                if let Some(export) = self.export_of(&self.symbols.name(id)) {
                    if let (true, Some(object)) = (self.wants_copy(id, &export), &export.object) {
                        self.make_copy(id, export.library, object)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `__zerolink_start_init` of a freestanding program: the main thread's TLS block and
    /// thread pointer (see `x86_64::tls_init`), or nothing.
    fn define_start_init(&mut self) -> Result<()> {
        let init = self.declare(x86_64::START_INIT, SymbolKind::Function, Binding::Local)?;
        let size = self.tls_size();
        let (code, refs) = if size == 0 {
            (vec![0xc3], Vec::new()) // ret
        } else {
            let aligned = align_up(size, crate::layout::TLS_ALIGN);
            let block = self.declare(x86_64::TLS_BLOCK, SymbolKind::Data, Binding::Local)?;
            self.define(
                block,
                RegionKind::Bss,
                Contents::Zeros(aligned + x86_64::TCB_BYTES),
                crate::layout::TLS_ALIGN,
                &[],
            )?;
            self.mark_builtin(block);
            let template = RegionKind::Tls.vaddr() as u32;
            let (code, at) = x86_64::tls_init(template, size as u32, aligned as u32);
            let refs = at
                .iter()
                .map(|&offset| Reference {
                    offset,
                    kind: RefKind::PcRel32,
                    target: block,
                    addend: -4,
                })
                .collect();
            (code, refs)
        };
        self.define(init, RegionKind::Text, Contents::Bytes(&code), 16, &refs)?;
        self.mark_builtin(init);
        Ok(())
    }

    pub(super) fn mark_builtin(&mut self, id: SymbolId) {
        let mut sym = self.symbols.get(id);
        sym.set_builtin(true);
        self.symbols.set(id, sym);
    }

    /// `_start` of a freestanding PIE: the self-relocation (`x86_64::self_relocation`), then
    /// the `_start` a fixed-address program has, constructors included.
    fn define_self_relocating_start(&mut self, start: SymbolId) -> Result<()> {
        if self.tls_size() > 0 {
            // The thread-local set-up reaches the TLS template by its 32-bit address.
            let name = (0..self.symbols.len() as u32)
                .map(SymbolId)
                .find(|&id| {
                    let s = self.symbols.get(id);
                    s.placement().is_some_and(|p| p.region == RegionKind::Tls) && !s.alias()
                })
                .map_or_else(String::new, |id| self.symbols.name(id));
            return Err(ImageError::FreestandingPieTls(name));
        }
        let relocs = self.declare(x86_64::RELOCS, SymbolKind::Data, Binding::Local)?;
        self.place_alias(relocs, RegionKind::Dynamic, RegionKind::Dynamic.vaddr(), 0)?;
        let (mut code, at) = x86_64::self_relocation();
        let shift = code.len() as u32;
        let ctors = self.is_defined(x86_64::INIT_ARRAY_START);
        let rest = if ctors {
            x86_64::START_CTORS
        } else {
            x86_64::START
        };
        if ctors {
            self.define_start_init()?;
        }
        code.extend_from_slice(rest.code);
        let mut calls: Vec<(u32, &str)> = vec![(at, x86_64::RELOCS)];
        calls.extend(rest.calls.iter().map(|&(o, name)| (o + shift, name)));
        self.define_stub(start, &code, &calls)
    }

    pub(super) fn define_stub(
        &mut self,
        id: SymbolId,
        code: &[u8],
        calls: &[(u32, &str)],
    ) -> Result<()> {
        let mut refs = Vec::new();
        for &(offset, target) in calls {
            // A name already declared keeps its kind (the constructor arrays are data).
            let target = match self.symbols.lookup(target) {
                Some(id) => id,
                None => self.declare(target, SymbolKind::Function, Binding::Global)?,
            };
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
    pub(super) fn drop_unused_builtins(&mut self) {
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
        let unused_copies: Vec<SymbolId> = self
            .touched_ids()
            .into_iter()
            .filter(|&id| self.symbols.copy_of(id).is_some() && !self.has_code_referrers(id))
            .collect();
        for id in unused_copies {
            self.drop_copy(id);
        }
    }

    pub(super) fn undefined(&self) -> Vec<Undefined> {
        let mut out = Vec::new();
        let missing: Vec<SymbolId> = self
            .touched_ids()
            .into_iter()
            .filter(|&id| {
                let sym = self.symbols.get(id);
                sym.placement().is_none() && sym.import().is_none() && sym.refs != 0
            })
            .collect();
        // Who refers to them: one scan for all (an error's path).
        let mut sorted = missing.clone();
        sorted.sort_unstable();
        let found = self.sites.referring_to_any(&sorted);
        for id in missing {
            let mut referenced_by: Vec<String> = Vec::new();
            for &site in &found {
                if self.sites.get(site).target != id {
                    continue;
                }
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

    /// A PIE's `R_X86_64_RELATIVE` relocations: every field that holds an address in the image
    /// (pointers in data, GOT entries of the image's own symbols), found from the sites (all
    /// of them, in every build: the list is rebuilt whole, like the rest of `.rela.dyn`). A
    /// 32-bit absolute field cannot hold a relocated address, and code must not be written at
    /// load time: both are errors naming the place.
    pub(super) fn relative_relocations(&self) -> Result<Vec<crate::dynamic::Relative>> {
        let mut out = Vec::new();
        if !self.pie {
            return Ok(out);
        }
        for (_, site) in self.sites.absolute() {
            let target = self.symbols.get(site.target);
            let Some(mut s) = self.symbols.ref_addr(site.target) else {
                continue; // an import: the loader's symbol relocations cover it
            };
            if self.symbols.is_ifunc(site.target) {
                // Its GOT entry gets `R_X86_64_IRELATIVE`; its address is its stub's.
                match (site.place, self.ifunc_stub_addr(site.target)) {
                    (Place::In { .. }, Some(stub)) => s = stub,
                    _ => continue,
                }
            }
            // An undefined weak reference is 0 wherever the program is loaded.
            if s == 0 && target.alias() {
                continue;
            }
            let Some(at) = self.site_addr(&site) else {
                continue;
            };
            match (site.kind, site.place) {
                (_, Place::GotEntry { .. }) => out.push(crate::dynamic::Relative { at, value: s }),
                (RefKind::Abs64, Place::In { owner, offset }) => {
                    let region = self.symbols.get(owner).placement().map(|p| p.region);
                    // The TLS template is relocated before glibc copies it into a thread's
                    // block, as ld's `.tdata` in its writable segment is.
                    let writable = matches!(
                        region,
                        Some(RegionKind::Data | RegionKind::Got | RegionKind::Tls)
                    );
                    if !writable {
                        return Err(ImageError::NotInPie {
                            function: self.symbols.name(owner),
                            offset,
                            kind: "an absolute address in memory the loader may not write",
                        });
                    }
                    let value = (s as i64 + site.addend) as u64;
                    out.push(crate::dynamic::Relative { at, value });
                }
                (RefKind::Abs32 | RefKind::Abs32S, Place::In { owner, offset }) => {
                    return Err(ImageError::NotInPie {
                        function: self.symbols.name(owner),
                        offset,
                        kind: "a 32-bit absolute address (Abs4, R_X86_64_32/32S)",
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    pub(super) fn is_defined(&self, name: &str) -> bool {
        self.symbols
            .lookup(name)
            .is_some_and(|id| self.symbols.get(id).placement().is_some())
    }

    /// `[start, end)` of the array between two defined symbols (the constructor arrays).
    pub(super) fn array_between(&self, start: &str, end: &str) -> Option<(u64, u64)> {
        let addr = |n: &str| {
            self.symbols
                .lookup(n)
                .and_then(|id| self.symbols.get(id).addr())
        };
        let (s, e) = (addr(start)?, addr(end)?);
        (e > s).then_some((s, e - s))
    }

    pub(super) fn addr_of(&self, name: &str) -> u64 {
        self.symbols
            .lookup(name)
            .and_then(|id| self.symbols.ref_addr(id))
            .unwrap_or(HEADERS_VADDR)
    }

    /// Which part of the table, if any, failed its checksum when it was read (pages are
    /// verified as they are first read). A caller that finds damage rebuilds in full: what it
    /// decided from the damaged pages cannot be trusted.
    pub fn damaged(&self) -> Option<&'static str> {
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

    /// `Err(TableDamaged)` if a page read so far failed its checksum.
    fn sound(&self) -> Result<()> {
        match self.damaged() {
            Some(what) => Err(ImageError::TableDamaged(what)),
            None => Ok(()),
        }
    }

    /// The error to report for `e`: the damage, if the table read so far is damaged.
    fn blame(&self, e: ImageError) -> ImageError {
        match self.damaged() {
            Some(what) => ImageError::TableDamaged(what),
            None => e,
        }
    }

    /// Complete the executable: a fresh one is renamed over OUT, an opened one is updated in
    /// place. On error, OUT is untouched.
    pub fn finish(mut self) -> Result<Summary> {
        // Everything from here on may read the referrer counts, and the runtime's pieces
        // added below must be in them at once.
        self.sites.count_from_now_on(&mut self.symbols);
        // Every check below reads the table, and one that read a damaged page would blame the
        // program for what damage did ("no entry point", undefined names): each error is
        // reported only once the pages it was decided from are known to be sound.
        // The entry must exist before `_start` refers to it, or the error would blame `_start`.
        let has_entry = self
            .symbols
            .lookup(ENTRY)
            .is_some_and(|id| self.symbols.get(id).placement().is_some());
        self.sound()?;
        if !has_entry {
            return Err(ImageError::NoEntry(ENTRY.to_string()));
        }
        self.add_runtime().map_err(|e| self.blame(e))?;
        let undefined = self.undefined();
        self.sound()?;
        if !undefined.is_empty() {
            return Err(ImageError::Undefined(undefined));
        }
        self.drop_unused_builtins();
        self.patch_pending().map_err(|e| self.blame(e))?;
        self.sound()?;
        // Before anything else is allocated: the last extent (text, in a fresh build) gives
        // back what it grew by doubling, so the GOT and the tables follow right after it.
        self.trim_last_extent();
        if self.dynamic()
            || self.eh_frame.is_some()
            || self.self_relocating()
            || !self.symbols.with_flag(RARE_EH_FRAME).is_empty()
        {
            self.write_dynamic()?;
        }
        // At this point every address is fixed and every site is patched.
        for id in self.touched_ids() {
            self.symtab.update(&mut self.symbols, id);
        }
        self.live_conclude();
        self.generation += 1;
        let updating = matches!(self.store, Store::Overlay(_));
        let entry = self.addr_of(x86_64::START.name);
        let interrupted = self.addr_of(x86_64::INTERRUPTED_NAME);
        self.write_arrays()?;
        // Writing a moved array reads all of it: damage found there is not written back.
        if let Some(what) = self.damaged() {
            return Err(ImageError::TableDamaged(what));
        }
        // Every byte of the loaded regions is final: their checksums for `verify`.
        self.update_region_sums()?;
        let new_table = self.write_tables(if updating { interrupted } else { entry }, updating)?;
        let mut summary = std::mem::take(&mut self.stats);
        self.summarise(&mut summary);
        summary.bytes_written = self.store.planned_bytes();
        summary.file_size = self.store.len();
        summary.live = self.live_log.take();
        match self.store {
            Store::Fresh(out) => out.commit()?,
            Store::Overlay(overlay) => overlay.commit(&CommitPlan {
                old_flags_at: self.old_table.map(|t| t + persist::FLAGS_OFFSET),
                in_progress_flags: persist::FLAG_IN_PROGRESS,
                interrupted_entry: interrupted,
                phoff: self.phdrs_at,
                entry,
                new_flags_at: new_table + persist::FLAGS_OFFSET,
                final_flags: 0,
            })?,
        }
        Ok(summary)
    }

    /// In a fresh file, extents grew by doubling while the build did not know its final
    /// sizes: give back all but a 64th of spare room per region (at least a page: at ~300
    /// bytes per moved function, a thousand moves per 20 MB of code before an extent must be
    /// copied, and then it gets a third), moving the extents that
    /// follow a trimmed one down (they are small next to text, and a move is a memmove in the
    /// mapping). Extents stay page-aligned, so file offset ≡ address (mod 4096) still holds.
    /// Nothing records file offsets of regions but `extents` until the tables are written.
    pub(super) fn trim_last_extent(&mut self) {
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
            let keep = align_up(used + used / 64 + PAGE, PAGE).min(e.capacity);
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
    pub(super) fn write_dynamic(&mut self) -> Result<()> {
        let names: Vec<String> = self.imports.iter().map(|&i| self.symbols.name(i)).collect();
        // Copies come after the imports, so an import's `.dynsym` index is its place in
        // `imports` plus one.
        let copies = self.copy_exports();
        // The version each entry asks for: the library's default definition's (copies and
        // their aliases: the copied object's, as ld writes them).
        let library_of = |id: SymbolId| self.symbols.get(id).import();
        let versions: Vec<Option<String>> = names
            .iter()
            .chain(copies.iter().map(|c| &c.name))
            .map(|n| self.export_of(n).and_then(|e| e.version))
            .collect();
        let files: Vec<Option<u32>> = self
            .imports
            .iter()
            .map(|&id| library_of(id))
            .chain(copies.iter().map(|c| Some(c.library)))
            .collect();
        let wanted = |k: usize| {
            let file = files[k].and_then(|l| self.libraries.get(l as usize))?;
            Some(crate::versions::Wanted {
                file,
                name: versions[k].as_deref()?,
            })
        };
        let imports: Vec<crate::dynamic::Import<'_>> = self
            .imports
            .iter()
            .zip(&names)
            .map(|(&id, name)| {
                let s = self.symbols.get(id);
                crate::dynamic::Import {
                    name,
                    kind: s.kind(),
                    got: self.got_of(id),
                    tls: self.is_tls_import(id),
                    defined: None,
                    canonical: self.canonical_value(id),
                    version: None,
                }
            })
            .chain(copies.iter().map(|c| crate::dynamic::Import {
                name: &c.name,
                kind: SymbolKind::Data,
                got: None,
                tls: false,
                canonical: None,
                version: None,
                defined: Some(crate::dynamic::Defined {
                    value: c.addr,
                    size: c.size,
                    shndx: RegionKind::Bss.shndx(),
                    copy: c.copy,
                }),
            }))
            .enumerate()
            .map(|(k, imp)| crate::dynamic::Import {
                version: wanted(k),
                ..imp
            })
            .collect();
        let mut data_relocs = Vec::new();
        // Imports whose address data holds: found by one scan, only if there are any.
        let mut held: Vec<SymbolId> = self
            .imports
            .iter()
            .copied()
            .filter(|&id| self.symbols.get(id).abs_referred())
            .collect();
        held.sort_unstable();
        let held_sites = self.sites.referring_to_any(&held);
        for (i, &id) in self.imports.iter().enumerate() {
            if held.binary_search(&id).is_err() {
                continue;
            }
            for &site in &held_sites {
                let site = self.sites.get(site);
                if site.target != id {
                    continue;
                }
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
            .chain(copies.iter().map(|c| c.library))
            .collect();
        used.sort_unstable();
        used.dedup();
        let needed: Vec<&str> = used
            .iter()
            .filter_map(|&l| self.libraries.get(l as usize).map(String::as_str))
            .collect();
        let relative = self.relative_relocations()?;
        let base = RegionKind::Dynamic.vaddr();
        let tables = self.dynamic().then(|| {
            crate::dynamic::tables(
                base,
                crate::dynamic::Wanted {
                    interp: x86_64::INTERPRETER,
                    imports: &imports,
                    data_relocs: &data_relocs,
                    needed: &needed,
                    runpath: self.runpath.as_deref(),
                    arrays: crate::dynamic::Arrays {
                        init: self.array_between(x86_64::INIT_ARRAY_START, x86_64::INIT_ARRAY_END),
                        fini: self.array_between(x86_64::FINI_ARRAY_START, x86_64::FINI_ARRAY_END),
                    },
                    relative: &relative,
                    irelative: &self.irelative_relocations(),
                    pie: self.pie,
                },
            )
        });
        let mut blob = tables.as_ref().map_or_else(Vec::new, |t| t.bytes.clone());
        if self.self_relocating() {
            // The table `_start` relocates itself from (see `x86_64::RELOCS`).
            let got = self.regions[RegionKind::Got.index()].used;
            let relro = if got > 0 {
                (RegionKind::Got.vaddr(), align_up(got, PAGE))
            } else {
                (0, 0)
            };
            for word in [base, relative.len() as u64, relro.0, relro.1] {
                blob.extend_from_slice(&word.to_le_bytes());
            }
            for r in &relative {
                blob.extend_from_slice(&r.at.to_le_bytes());
                blob.extend_from_slice(&u64::from(elf::R_X86_64_RELATIVE).to_le_bytes());
                blob.extend_from_slice(&r.value.to_le_bytes());
            }
            self.self_relocs = relative.len() as u64;
            // A `.dynamic` that only describes (no loader reads it): what makes `file` say
            // "static-pie" and checksec see the relocations, BIND_NOW and RELRO.
            let rela = base + x86_64::RELOCS_HEADER;
            let n = relative.len() as u64;
            for (tag, value) in [
                (elf::DT_RELA, rela),
                (elf::DT_RELASZ, n * 24),
                (elf::DT_RELAENT, 24),
                (elf::DT_RELACOUNT, n),
                (elf::DT_FLAGS, u64::from(elf::DF_BIND_NOW)),
                (elf::DT_FLAGS_1, u64::from(elf::DF_1_NOW | elf::DF_1_PIE)),
                (elf::DT_NULL, 0),
            ] {
                blob.extend_from_slice(&(tag as u64).to_le_bytes());
                blob.extend_from_slice(&value.to_le_bytes());
            }
        }
        let mut eh_from = None;
        let object_fdes = self.object_fdes()?;
        let own = self.eh_frame.take();
        if own.is_some() || !object_fdes.is_empty() {
            // `_start` gets an FDE where the program's own code has them (`-g`).
            let start = own.as_ref().and_then(|_| {
                self.symbols
                    .lookup(x86_64::START.name)
                    .and_then(|id| self.symbols.get(id).placement())
            });
            let fresh = own.unwrap_or_default();
            let old = self.old_eh_frame().map_or(&[][..], |(_, b)| b);
            // A PIE's file holds PC-relative FDE addresses; the merge works on absolute ones.
            let old_abs;
            let old = match (self.pie, self.old_eh_layout) {
                (true, Some((_, _, at, _))) if !old.is_empty() => {
                    old_abs = crate::dynamic::absolute_frames(old, at);
                    &old_abs[..]
                }
                _ => old,
            };
            let frames = crate::dynamic::merge_eh_frame(&fresh, old, start, |pc| {
                !self.replaced_code.contains(&pc)
            });
            let mut fdes = crate::dynamic::fde_locations(&frames);
            let (hdr_addr, frame_addr) = eh_place(
                base + blob.len() as u64,
                fdes.len() + object_fdes.len(),
                self.old_eh_layout,
            );
            let frames = if self.pie {
                let (pcrel, delta) = crate::dynamic::pcrel_frames(&frames, frame_addr);
                for f in &mut fdes {
                    f.1 += delta as u32;
                }
                pcrel
            } else {
                frames
            };
            // The header indexes the image's FDEs and those of every object's `.eh_frame`.
            let mut index: Vec<(u64, u64)> = fdes
                .iter()
                .map(|&(pc, offset)| (pc, frame_addr + u64::from(offset)))
                .chain(object_fdes)
                .collect();
            index.sort_unstable();
            blob.resize((hdr_addr - base) as usize, 0);
            blob.extend_from_slice(&crate::dynamic::eh_frame_hdr(hdr_addr, frame_addr, &index));
            let hdr_len = base + blob.len() as u64 - hdr_addr;
            blob.resize((frame_addr - base) as usize, 0);
            blob.extend_from_slice(&frames);
            blob.extend_from_slice(&[0; 4]); // the terminator
            self.eh_layout = Some((hdr_addr, hdr_len, frame_addr, frames.len() as u64 + 4));
            eh_from = Some(hdr_addr - base);
        }
        let len = blob.len() as u64;
        let old_used = self.regions[RegionKind::Dynamic.index()].used;
        self.ensure_extent(RegionKind::Dynamic, len)?;
        self.regions[RegionKind::Dynamic.index()].used = len;
        let at = self.file_offset(RegionKind::Dynamic, base);
        if let (Some(from), true) = (eh_from, self.is_live()) {
            // A running process's unwinder reads its unwind tables where the loader found
            // them: what changed there goes to the process too (see `Image::live_eh`).
            let old = self.store.read(at, old_used.min(len));
            self.live_eh(base, from, &old, &blob);
        }
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

    /// The summary of an image left exactly as it is: for a build that found nothing to do and
    /// therefore writes nothing (OUT is not even opened for writing).
    pub fn unchanged(&self) -> Summary {
        let mut summary = Summary::default();
        self.summarise(&mut summary);
        summary.file_size = self.store.len();
        summary.table_bytes += self.table.map_or(0, |e| e.capacity);
        summary
    }

    pub(super) fn summarise(&self, summary: &mut Summary) {
        let counts = self.symbols.counts();
        summary.functions = counts.functions as usize;
        summary.data_objects = counts.data_objects as usize;
        summary.got_entries = counts.got_entries as usize;
        summary.sites = self.sites.len();
        summary.generation = self.generation;
        summary.entry = self.addr_of(x86_64::START.name);
        summary.main = self.addr_of(ENTRY);
        for kind in RegionKind::ALL {
            summary.region_used[kind.index()] = self.regions[kind.index()].used;
        }
        summary.table_bytes += self.arrays.iter().map(|a| a.len).sum::<u64>();
    }

    /// An extent that holds `len` bytes: `current` if it fits, grown in place if it is last in
    /// the file, or a new one at the end. Contents are not carried over.
    pub(super) fn reserve(&mut self, current: Option<Extent>, len: u64) -> Result<Extent> {
        self.reserve_with(current, len, 3)
    }

    /// `reserve` with `1 / spare` of `len` as room to grow.
    pub(super) fn reserve_with(
        &mut self,
        current: Option<Extent>,
        len: u64,
        spare: u64,
    ) -> Result<Extent> {
        Ok(match current {
            Some(e) if len <= e.capacity => e,
            Some(e) if e.offset + e.capacity == self.store.len() => {
                let extra = align_up(len + len / spare, PAGE) - e.capacity;
                self.store.allocate(extra, 1)?;
                Extent {
                    offset: e.offset,
                    capacity: e.capacity + extra,
                }
            }
            _ => {
                let capacity = align_up(len + len / spare + 1, PAGE);
                let offset = self.store.allocate(capacity, PAGE)?;
                Extent { offset, capacity }
            }
        })
    }
}

/// Where `.eh_frame_hdr` and `.eh_frame` go in the dynamic region, after the loader's tables
/// (ending at `tables_end`): the header first, then the frames, each where it was in the
/// previous build while it fits (`old`: hdr, hdr len, frames, frames len), so an update
/// rewrites only the records that changed, and a running process, whose loader noted the
/// header's address when it started, keeps finding it. Fresh positions leave room: a
/// quarter of the tables for new imports, a third more FDEs for new functions.
fn eh_place(tables_end: u64, fdes: usize, old: Option<(u64, u64, u64, u64)>) -> (u64, u64) {
    let hdr_len = 12 + 8 * fdes as u64;
    match old {
        Some((hdr, _, frames, _)) if hdr >= tables_end && hdr + hdr_len <= frames => (hdr, frames),
        _ => {
            let base = RegionKind::Dynamic.vaddr();
            let hdr = align_up(tables_end + (tables_end - base) / 4, 64);
            let capacity = 12 + 8 * (fdes + fdes / 3 + 16) as u64;
            (hdr, align_up(hdr + capacity, 64))
        }
    }
}

impl Image {
    /// Mark `id`, a precompiled object's `.eh_frame` placed just now as a section, so that
    /// `.eh_frame_hdr` indexes its FDEs (see `crate::frames`).
    pub fn mark_eh_frame(&mut self, id: SymbolId) {
        self.symbols.set_flag(id, RARE_EH_FRAME, true);
        self.touched.insert(id);
    }

    /// (function address, FDE address) of every FDE in the objects' `.eh_frame` sections, as
    /// placed and patched.
    fn object_fdes(&self) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        for id in self.symbols.with_flag(RARE_EH_FRAME) {
            let Some(p) = self.symbols.get(id).placement() else {
                continue;
            };
            let bytes = self
                .store
                .read(self.file_offset(p.region, p.slot.addr), p.size);
            let fdes = crate::frames::fde_index(&bytes, p.slot.addr).map_err(|why| {
                ImageError::EhFrame {
                    name: self.symbols.name(id),
                    why,
                }
            })?;
            out.extend(fdes);
        }
        Ok(out)
    }
}
