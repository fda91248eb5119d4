//! Writing the table's arrays (only changed records in an update), the table body, section
//! and program headers, and the ELF header; and reading the table of an existing file.

use super::*;

impl Image {
    /// Write each table array back: only its changed records when it still fits its extent
    /// (rehashing only the pages they fall in), else whole into a bigger extent.
    pub(super) fn write_arrays(&mut self) -> Result<()> {
        let size = |a: Array| match a {
            Array::Symbols => std::mem::size_of::<crate::symbols::Symbol>(),
            Array::Sites => std::mem::size_of::<crate::sites::SiteRecord>(),
            Array::Index => 4,
            Array::Symtab => std::mem::size_of::<crate::symtab::Entry>(),
            Array::Names => 1,
        } as u64;
        for a in Array::ALL {
            let (len, has_base, dirty) = match a {
                Array::Symbols => dirty_records(self.symbols.records()),
                Array::Sites => dirty_records(self.sites.records()),
                Array::Index => dirty_records(&self.symbols.index().slots),
                Array::Symtab => dirty_records(&self.symtab.entries),
                Array::Names => {
                    let names = self.symbols.names();
                    let (at, bytes) = names.appended();
                    // A fresh blob is written whole, below: nothing to collect.
                    let appended = if names.has_base() {
                        vec![(u64::from(at), bytes.to_vec())]
                    } else {
                        Vec::new()
                    };
                    (names.len() as u64, names.has_base(), appended)
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
                let bytes_len = len;
                // Room to grow: a 64th in a new file (updates add a handful of records each,
                // 1,500 symbols' worth at 100,000; each byte of room is a byte of every
                // executable), a third when an update outgrew it (it is growing).
                let spare = if old.extent.is_some() { 3 } else { 64 };
                let e = self.reserve_with(old.extent, bytes_len, spare)?;
                let bytes = match a {
                    Array::Symbols => self.symbols.records().to_bytes(),
                    Array::Sites => self.sites.records().to_bytes(),
                    Array::Index => self.symbols.index().slots.to_bytes(),
                    Array::Symtab => self.symtab.entries.to_bytes(),
                    Array::Names => self.symbols.names().to_bytes(),
                };
                debug_assert_eq!(bytes.len() as u64, bytes_len);
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

    /// The table's header and body, section headers, and the ELF and program headers.
    /// Returns the offset of the new table. `in_progress` marks the table for the update
    /// protocol; `entry` is what `e_entry` says for now.
    pub(super) fn write_tables(&mut self, entry: u64, in_progress: bool) -> Result<u64> {
        // The new program headers go into the slot the file does not use.
        let [first, second] = crate::elf::PHDR_SLOTS;
        self.phdrs_at = match self.phdrs_in_force() {
            Some(p) if p == first => second,
            _ => first,
        };
        let dynamic = self.dynamic();
        // The TLS template's zeros at its end are `.tbss`: the loader zero-fills them.
        let tls_init = self.tls_initialized();
        let mut segments = vec![Segment::headers()];
        let mut sections: Vec<Section> = Vec::with_capacity(SECTIONS + 6);
        for kind in RegionKind::ALL {
            let used = self.regions[kind.index()].used;
            let offset = self.extents[kind.index()].map_or(0, |e| e.offset);
            // The dynamic loader writes the GOT, then makes it read-only (`PT_GNU_RELRO`).
            // (A freestanding PIE's `_start` does both itself.)
            let got_rw = (dynamic || self.self_relocating()) && kind == RegionKind::Got;
            if used > 0 {
                segments.push(Segment {
                    p_type: elf::PT_LOAD,
                    // The loader relocates a PIE's pointers in the TLS template too.
                    flags: if got_rw || (self.pie && kind == RegionKind::Tls) {
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
                size: if kind == RegionKind::Tls {
                    tls_init
                } else {
                    used
                },
                link: 0,
                info: 0,
                align: 16,
                entsize: if kind == RegionKind::Got { 8 } else { 0 },
            });
        }
        let tls = self.regions[RegionKind::Tls.index()].used;
        if tls > 0 {
            // Each thread's block is a copy of the TLS region (its initial contents).
            segments.push(Segment {
                p_type: elf::PT_TLS,
                flags: elf::PF_R,
                offset: self.extents[RegionKind::Tls.index()].map_or(0, |e| e.offset),
                vaddr: RegionKind::Tls.vaddr(),
                filesz: tls_init,
                memsz: tls,
                align: crate::layout::TLS_ALIGN,
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
        } else if self.self_relocating() {
            let at = self.self_dynamic();
            segments.push(Segment {
                p_type: elf::PT_DYNAMIC,
                flags: elf::PF_R,
                offset: self.file_offset(RegionKind::Dynamic, at),
                vaddr: at,
                filesz: SELF_DYNAMIC_BYTES,
                memsz: SELF_DYNAMIC_BYTES,
                align: 8,
            });
            if self.regions[RegionKind::Got.index()].used > 0 {
                segments.push(self.relro_segment());
            }
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
        // Fixed sections, six dynamic ones (or a freestanding PIE's two), two for unwinding,
        // and the extras.
        let meta_bytes_needed =
            SHDR_BYTES + (crate::elf::SHDR_SIZE + 32) * (self.extras.len() as u64 + 5);
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
        // `.strtab` follows `.symtab` (after the null section and those so far).
        let strtab_index = sections.len() as u32 + 2;
        sections.push(Section {
            name: ".symtab".into(),
            sh_type: elf::SHT_SYMTAB,
            flags: 0,
            addr: 0,
            offset: symtab.extent.map_or(0, |e| e.offset),
            size: symtab.len,
            link: strtab_index,
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
        for a in [Array::Symbols, Array::Sites, Array::Index] {
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
        if tls_init < tls {
            sections.push(Section {
                name: ".tbss".into(),
                sh_type: elf::SHT_NOBITS,
                flags: RegionKind::Tls.section_flags(),
                addr: RegionKind::Tls.vaddr() + tls_init,
                offset: self.file_offset(RegionKind::Tls, RegionKind::Tls.vaddr() + tls_init),
                size: tls - tls_init,
                link: 0,
                info: 0,
                align: 8,
                entsize: 0,
            });
        }
        if dynamic {
            self.dynamic_sections(&mut sections);
        } else if self.self_relocating() {
            // A freestanding PIE's own relocations, so `readelf -r` shows them.
            let at = RegionKind::Dynamic.vaddr() + x86_64::RELOCS_HEADER;
            sections.push(Section {
                name: ".rela.dyn".into(),
                sh_type: elf::SHT_RELA,
                flags: u64::from(elf::SHF_ALLOC),
                addr: at,
                offset: self.file_offset(RegionKind::Dynamic, at),
                size: self.self_relocs * 24,
                link: 0,
                info: 0,
                align: 8,
                entsize: 24,
            });
            let at = self.self_dynamic();
            sections.push(Section {
                name: ".dynamic".into(),
                sh_type: elf::SHT_DYNAMIC,
                flags: u64::from(elf::SHF_ALLOC),
                addr: at,
                offset: self.file_offset(RegionKind::Dynamic, at),
                size: SELF_DYNAMIC_BYTES,
                // (It names no strings; the link of a `.dynamic` must still be a string table.)
                link: strtab_index,
                info: 0,
                align: 8,
                entsize: 16,
            });
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
        let shstr = sections
            .iter()
            .position(|s| s.name == ".shstrtab")
            .expect("the fixed sections include .shstrtab");
        sections[shstr].size = shstrtab.len() as u64;
        sections[shstr].offset = meta.offset + crate::elf::SHDR_SIZE * (sections.len() as u64 + 1);
        let mut meta_bytes = crate::elf::section_headers(&sections, &names);
        meta_bytes.extend_from_slice(&shstrtab);
        assert!(
            meta_bytes.len() as u64 <= meta.capacity,
            "meta extent sized above"
        );
        self.store.write(meta.offset, &meta_bytes);

        // The ELF header keeps naming the table in force; the commit switches `e_phoff` to the
        // new one once it is complete (see `elf::PHDR_SLOTS`).
        let in_force = self.phdrs_in_force();
        let header = crate::elf::file_header(
            if self.pie { elf::ET_DYN } else { elf::ET_EXEC },
            x86_64::E_MACHINE,
            entry,
            in_force.unwrap_or(self.phdrs_at),
            meta.offset,
            sections.len() as u16 + 1,
            // After the null section.
            shstr as u16 + 1,
        );
        self.store.write(0, &header);
        let stamp = self.stamp();
        self.store.write(crate::live::STAMP_OFFSET, &stamp);
        if let Some(log) = &mut self.live_log {
            log.stamp = stamp;
        }
        let phdrs = crate::elf::program_headers(&segments);
        // The headers as they will be once the commit is done (the entry restored, the new
        // program headers in force), checksummed for the next open and for `verify`.
        let final_header = crate::elf::file_header(
            if self.pie { elf::ET_DYN } else { elf::ET_EXEC },
            x86_64::E_MACHINE,
            self.addr_of(x86_64::START.name),
            self.phdrs_at,
            meta.offset,
            sections.len() as u16 + 1,
            shstr as u16 + 1,
        );
        let sum = crate::elf::header_sum(&final_header, &phdrs);
        self.store
            .write(crate::elf::HEADER_SUM_OFFSET, &sum.to_le_bytes());
        let trampoline = self.addr_of(x86_64::TRAMPOLINE_NAME);
        self.store.write(
            crate::elf::TRAMPOLINE_ADDR_OFFSET,
            &trampoline.to_le_bytes(),
        );
        self.store.write(self.phdrs_at, &phdrs);
        Ok(table.offset)
    }

    /// The program header table the file on disk uses now: `None` for a fresh file.
    pub(super) fn phdrs_in_force(&self) -> Option<u64> {
        match &self.store {
            Store::Fresh(_) => None,
            Store::Overlay(_) => {
                let bytes = self.store.read(crate::elf::E_PHOFF_OFFSET, 8);
                Some(u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])))
            }
        }
    }

    /// Write the caller's new extra sections, each over its old extent where it fits.
    pub(super) fn place_extras(
        &mut self,
        new: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<ExtraSection>> {
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
    pub(super) fn dynamic_segments(&self, segments: &mut Vec<Segment>) {
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
                offset: self.phdrs_at,
                vaddr: HEADERS_VADDR + self.phdrs_at,
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
        segments.push(self.relro_segment());
    }

    /// Bytes of the TLS template up to its last non-zero one (8-aligned): `.tdata`, and
    /// `PT_TLS`'s file size; the zeros after it are `.tbss`.
    fn tls_initialized(&self) -> u64 {
        let used = self.regions[RegionKind::Tls.index()].used;
        let Some(e) = self.extents[RegionKind::Tls.index()].filter(|_| used > 0) else {
            return 0;
        };
        let bytes = self.store.read(e.offset, used);
        let last = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1) as u64;
        align_up(last, 8).min(used)
    }

    /// Where a freestanding PIE's descriptive `.dynamic` is: after its relocations.
    fn self_dynamic(&self) -> u64 {
        RegionKind::Dynamic.vaddr() + x86_64::RELOCS_HEADER + 24 * self.self_relocs
    }

    /// `PT_GNU_RELRO` over the GOT: read-only once relocated.
    fn relro_segment(&self) -> Segment {
        let got = RegionKind::Got;
        Segment {
            p_type: elf::PT_GNU_RELRO,
            flags: elf::PF_R,
            offset: self.file_offset(got, got.vaddr()),
            vaddr: got.vaddr(),
            filesz: self.regions[got.index()].used,
            memsz: align_up(self.regions[got.index()].used, PAGE),
            align: 1,
        }
    }

    /// Sections for the dynamic loader's tables, so `readelf -d`, `ldd` and debuggers see them.
    pub(super) fn dynamic_sections(&self, sections: &mut Vec<Section>) {
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
        if t.verneed_files > 0 {
            add(
                ".gnu.version",
                elf::SHT_GNU_VERSYM,
                t.versym.0,
                at(t.versym.0),
                t.versym.1,
                dynsym,
                0,
                2,
                2,
            );
            add(
                ".gnu.version_r",
                elf::SHT_GNU_VERNEED,
                t.verneed.0,
                at(t.verneed.0),
                t.verneed.1,
                dynstr,
                t.verneed_files as u32,
                8,
                0,
            );
        }
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

    pub(super) fn encode_table(&self, _entry: u64, in_progress: bool) -> Vec<u8> {
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
                rare: self.symbols.rare(),
                dynamic_slot: self.dynamic_slot.map_or((0, 0), |s| (s.addr, s.capacity)),
                eh_layout: self.eh_layout.map_or([0; 4], |(a, b, c, d)| [a, b, c, d]),
                extras: self.extras.clone(),
                extras_index: self.extras_index.clone(),
                region_sums: self.region_sums.clone(),
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
/// Bytes of a freestanding PIE's `.dynamic`: seven entries.
const SELF_DYNAMIC_BYTES: u64 = 7 * 16;

pub(super) const SHDR_BYTES: u64 = crate::elf::SHDR_SIZE * (SECTIONS as u64 + 6) + 512;

/// (records, has a base, [(record index, bytes)]) of the records that changed.
pub(super) fn dirty_records<T: object::pod::Pod + Default>(
    r: &Records<T>,
) -> (u64, bool, Vec<(u64, Vec<u8>)>) {
    if !r.has_base() {
        // A fresh array has nothing to compare with: it is written whole.
        return (r.len() as u64, false, Vec::new());
    }
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

pub(super) fn data_region(
    contents: Contents<'_>,
    writable: bool,
    refs: &[Reference],
) -> RegionKind {
    match (writable, contents) {
        // Zero-fill objects take no file space, unless something must be patched into them.
        (true, Contents::Zeros(_)) if refs.is_empty() => RegionKind::Bss,
        (true, _) => RegionKind::Data,
        (false, _) => RegionKind::Rodata,
    }
}

/// An extent holding at least `len` bytes: the same one, grown in place if it is last in the
/// file, or a copy at the end of the file.
pub(super) fn grow_extent(
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
pub(super) fn old_eh_frame(
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

pub(super) fn region_of(addr: u64) -> RegionKind {
    RegionKind::ALL
        .into_iter()
        .rev()
        .find(|k| addr >= k.vaddr())
        .unwrap_or(RegionKind::Text)
}
