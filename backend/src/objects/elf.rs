//! Reading one ELF relocatable object (`cc -c` output, an archive member) into owned,
//! checked parts: the sections that are loaded, every symbol, and each section's
//! relocations. Everything a later pass indexes by (section and symbol indices, relocation
//! offsets) is checked here, so placing never meets a malformed object.

use object::elf;
use object::read::elf::{FileHeader, Rela, SectionHeader, Sym};
use object::LittleEndian as LE;

use super::ObjectError;

/// Where a loaded section goes in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Text,
    Rodata,
    /// Writable, or read-only but holding addresses (`.data.rel.ro`): the loader may have
    /// to write there.
    Data,
    Bss,
    /// Thread-local (`SHF_TLS`): `.tdata` and `.tbss`, in the TLS region.
    Tls,
}

#[derive(Debug, Clone)]
pub struct InSection {
    pub index: usize,
    pub name: String,
    pub class: Class,
    pub align: u64,
    pub size: u64,
    /// Contents; `None` for `SHT_NOBITS`.
    pub data: Option<Vec<u8>>,
    pub relocs: Vec<InReloc>,
    /// The COMDAT group it belongs to (its signature), if any.
    pub group: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct InReloc {
    pub offset: u64,
    pub rtype: u32,
    /// Index into [`Object::symbols`].
    pub symbol: usize,
    pub addend: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymDef {
    Undefined,
    /// In the section with this ELF index (which may be one that is not loaded).
    Section(usize),
    Absolute,
    /// `SHN_COMMON`: zero-filled storage of `size` bytes at this alignment, unless a real
    /// definition exists elsewhere.
    Common {
        align: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    Local,
    Global,
    Weak,
}

#[derive(Debug, Clone)]
pub struct InSymbol {
    pub name: String,
    pub def: SymDef,
    pub value: u64,
    pub size: u64,
    pub bind: Bind,
    pub typ: u8,
    /// `STV_HIDDEN` or `STV_INTERNAL`: resolved between objects by name, local to the
    /// executable (`.symtab` shows it as such, as ld does).
    pub hidden: bool,
}

impl InSymbol {
    /// A symbol other objects and the program can refer to by name.
    pub fn is_global(&self) -> bool {
        self.bind != Bind::Local && !self.name.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Object {
    pub sections: Vec<InSection>,
    pub symbols: Vec<InSymbol>,
    /// ELF index of each section that is loaded → its position in `sections`.
    pub loaded: Vec<Option<usize>>,
    /// Names of the sections that are not loaded, by ELF index (for error messages).
    pub section_names: Vec<String>,
    /// `.note.GNU-stack` asks for an executable stack.
    pub exec_stack: bool,
    /// The unwind tables (`.eh_frame`), with their relocations: not placed as a section, but
    /// turned into the image's own unwind entries (`objects/unwind.rs`).
    pub eh_frame: Option<InSection>,
}

impl Object {
    /// The loaded section with this ELF index.
    pub fn section(&self, index: usize) -> Option<&InSection> {
        self.loaded
            .get(index)
            .copied()
            .flatten()
            .map(|i| &self.sections[i])
    }
}

fn bad(what: impl Into<String>) -> ObjectError {
    ObjectError::Malformed(what.into())
}

fn read_err(e: object::read::Error) -> ObjectError {
    ObjectError::Malformed(e.to_string())
}

/// Whether `bytes` start like an ELF relocatable object (any machine: [`parse`] says which
/// it is not).
pub fn is_object(bytes: &[u8]) -> bool {
    bytes.starts_with(&elf::ELFMAG)
}

/// Parse an x86-64 ELF relocatable object. `bytes` must be 8-byte aligned (see
/// `archive::Aligned`).
pub fn parse(bytes: &[u8]) -> Result<Object, ObjectError> {
    let header = elf::FileHeader64::<LE>::parse(bytes).map_err(read_err)?;
    let endian = header.endian().map_err(read_err)?;
    if header.e_type.get(endian) != elf::ET_REL {
        return Err(ObjectError::NotRelocatable(
            match header.e_type.get(endian) {
                elf::ET_EXEC => "an executable",
                elf::ET_DYN => "a shared object",
                elf::ET_CORE => "a core file",
                _ => "an ELF file of unknown type",
            },
        ));
    }
    if header.e_machine.get(endian) != elf::EM_X86_64 {
        return Err(ObjectError::WrongMachine(header.e_machine.get(endian)));
    }
    let sections = header.sections(endian, bytes).map_err(read_err)?;
    let symtab = sections
        .symbols(endian, bytes, elf::SHT_SYMTAB)
        .map_err(read_err)?;
    let mut obj = Object {
        loaded: vec![None; sections.len()],
        ..Object::default()
    };
    // Symbols first: relocations and groups refer to them.
    for (i, sym) in symtab.symbols().iter().enumerate() {
        let name = symtab.symbol_name(endian, sym).map_err(read_err)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let shndx = symtab.symbol_section(endian, sym, object::SymbolIndex(i));
        let def = match sym.st_shndx(endian) {
            elf::SHN_UNDEF => SymDef::Undefined,
            elf::SHN_ABS => SymDef::Absolute,
            elf::SHN_COMMON => SymDef::Common {
                align: sym.st_value(endian).max(1),
            },
            _ => match shndx.map_err(read_err)? {
                Some(s) if s.0 < sections.len() => SymDef::Section(s.0),
                _ => return Err(bad(format!("symbol `{name}` has a bad section index"))),
            },
        };
        let bind = match sym.st_bind() {
            elf::STB_LOCAL => Bind::Local,
            elf::STB_WEAK => Bind::Weak,
            // `STB_GNU_UNIQUE` (g++'s static data of inline functions and templates): one
            // definition in the process, which an executable's own is, as ld treats it.
            elf::STB_GLOBAL | elf::STB_GNU_UNIQUE => Bind::Global,
            b => {
                return Err(ObjectError::Unsupported {
                    section: ".symtab".into(),
                    offset: (i * 24) as u64,
                    what: format!("symbol `{name}` with binding {b}"),
                })
            }
        };
        match sym.st_type() {
            elf::STT_NOTYPE
            | elf::STT_OBJECT
            | elf::STT_FUNC
            | elf::STT_SECTION
            | elf::STT_FILE
            | elf::STT_COMMON
            | elf::STT_TLS
            | elf::STT_GNU_IFUNC => {}
            t => {
                return Err(ObjectError::Unsupported {
                    section: ".symtab".into(),
                    offset: (i * 24) as u64,
                    what: format!("symbol `{name}` of type {t}"),
                })
            }
        }
        // Hidden and internal symbols of an executable are its own: still resolved by name
        // between objects, which is all `bind` says here.
        obj.symbols.push(InSymbol {
            name,
            def,
            value: sym.st_value(endian),
            size: sym.st_size(endian),
            bind,
            typ: sym.st_type(),
            hidden: matches!(sym.st_visibility(), elf::STV_HIDDEN | elf::STV_INTERNAL),
        });
    }
    // COMDAT groups: member section → signature.
    let mut group_of: Vec<Option<String>> = vec![None; sections.len()];
    for section in sections.iter() {
        if section.sh_type(endian) != elf::SHT_GROUP {
            continue;
        }
        let words: &[object::U32<LE>] = section
            .data_as_array(endian, bytes)
            .map_err(|_| bad("a section group lies outside the file"))?;
        let Some((flags, members)) = words.split_first() else {
            continue;
        };
        if flags.get(endian) & elf::GRP_COMDAT == 0 {
            continue;
        }
        let signature = obj
            .symbols
            .get(section.sh_info(endian) as usize)
            .map(|s| s.name.clone())
            .ok_or_else(|| bad("a section group's signature symbol does not exist"))?;
        for m in members {
            let m = m.get(endian) as usize;
            let slot = group_of
                .get_mut(m)
                .ok_or_else(|| bad("a section group names a section that does not exist"))?;
            *slot = Some(signature.clone());
        }
    }
    for (index, section) in sections.iter().enumerate() {
        let name = sections.section_name(endian, section).map_err(read_err)?;
        let name = String::from_utf8_lossy(name).into_owned();
        obj.section_names.push(name.clone());
        let flags = section.sh_flags(endian);
        let sh_type = section.sh_type(endian);
        if name == ".note.GNU-stack" && flags & u64::from(elf::SHF_EXECINSTR) != 0 {
            obj.exec_stack = true;
        }
        let unwind = name == ".eh_frame" || sh_type == elf::SHT_X86_64_UNWIND;
        if unwind && sh_type != elf::SHT_NOBITS && obj.eh_frame.is_none() {
            let data = section
                .data(endian, bytes)
                .map_err(|_| bad("section `.eh_frame` lies outside the file"))?;
            obj.eh_frame = Some(InSection {
                index,
                name: name.clone(),
                class: Class::Rodata,
                align: 1,
                size: data.len() as u64,
                data: Some(data.to_vec()),
                relocs: Vec::new(),
                group: None,
            });
            continue;
        }
        check_section(&name, sh_type, flags)?;
        let Some(class) = classify(&name, sh_type, flags) else {
            continue;
        };
        let size = section.sh_size(endian);
        // Every region window is below 4 GiB: a larger section is malformed, not placed.
        if size >= 1 << 32 {
            return Err(bad(format!("section `{name}` claims {size} bytes")));
        }
        let data = if sh_type == elf::SHT_NOBITS {
            None
        } else {
            Some(
                section
                    .data(endian, bytes)
                    .map_err(|_| bad(format!("section `{name}` lies outside the file")))?
                    .to_vec(),
            )
        };
        let align = section.sh_addralign(endian).max(1);
        if !align.is_power_of_two() {
            return Err(bad(format!("section `{name}` has alignment {align}")));
        }
        obj.loaded[index] = Some(obj.sections.len());
        obj.sections.push(InSection {
            index,
            name,
            class,
            align,
            size,
            data,
            relocs: Vec::new(),
            group: group_of[index].take(),
        });
    }
    // Symbols lie inside their sections (the end counts, for end labels); commons are
    // placed, so they are below 4 GiB too.
    for sym in &obj.symbols {
        if matches!(sym.def, SymDef::Common { .. }) && (sym.size >= 1 << 32 || sym.value >= 1 << 32)
        {
            return Err(bad(format!(
                "common symbol `{}` claims {} bytes",
                sym.name, sym.size
            )));
        }
        let SymDef::Section(sec) = sym.def else {
            continue;
        };
        if let Some(section) = obj.section(sec) {
            let end = sym.value.checked_add(sym.size);
            if end.is_none_or(|e| e > section.size) {
                return Err(bad(format!(
                    "symbol `{}` ({} bytes at {:#x}) lies outside section `{}` ({} bytes)",
                    sym.name, sym.size, sym.value, section.name, section.size
                )));
            }
        }
    }
    // Relocations, each checked against its section and the symbol table.
    for section in sections.iter() {
        let Some((relas, _)) = section
            .rela(endian, bytes)
            .map_err(|_| bad("a relocation section lies outside the file"))?
        else {
            if section.sh_type(endian) == elf::SHT_REL {
                return Err(bad(
                    "SHT_REL relocations (without addends) are not x86-64's",
                ));
            }
            continue;
        };
        let target = section.sh_info(endian) as usize;
        let unwind = obj.eh_frame.as_ref().is_some_and(|e| e.index == target);
        let at = obj.loaded.get(target).copied().flatten();
        if at.is_none() && !unwind {
            // Relocations of a section that is not loaded (debug information): nothing to do.
            if target >= sections.len() {
                return Err(bad(
                    "a relocation section applies to a section that does not exist",
                ));
            }
            continue;
        }
        let n_symbols = obj.symbols.len();
        let sec = match at {
            Some(at) => &mut obj.sections[at],
            None => obj.eh_frame.as_mut().expect("checked above"),
        };
        for r in relas {
            let offset = r.r_offset(endian);
            let symbol = r.r_sym(endian, false) as usize;
            if symbol >= n_symbols {
                return Err(bad(format!(
                    "a relocation in `{}` at offset {offset:#x} names symbol {symbol}, of {n_symbols}",
                    sec.name,
                )));
            }
            if sec.data.is_none() {
                return Err(bad(format!(
                    "`{}` holds no bytes but has relocations",
                    sec.name
                )));
            }
            sec.relocs.push(InReloc {
                offset,
                rtype: r.r_type(endian, false),
                symbol,
                addend: r.r_addend(endian),
            });
        }
    }
    Ok(obj)
}

/// A loaded section zerolink cannot place as it is: an error naming it, rather than a guess.
/// Notes are left out as ld leaves out what describes only the object (`.note.gnu.property`
/// is merged by ld into a property the kernel and loader use for CET; an executable without
/// it runs without those checks, as one linked by gold or mold without `-z` options does).
fn check_section(name: &str, sh_type: u32, flags: u64) -> Result<(), ObjectError> {
    if flags & u64::from(elf::SHF_ALLOC) == 0 || flags & u64::from(elf::SHF_EXCLUDE) != 0 {
        return Ok(());
    }
    let what = if flags & u64::from(elf::SHF_COMPRESSED) != 0 {
        "compressed (SHF_COMPRESSED) and loaded".to_string()
    } else {
        match sh_type {
            elf::SHT_PROGBITS
            | elf::SHT_NOBITS
            | elf::SHT_NOTE
            | elf::SHT_INIT_ARRAY
            | elf::SHT_FINI_ARRAY
            | elf::SHT_PREINIT_ARRAY
            | elf::SHT_GROUP
            | elf::SHT_X86_64_UNWIND => return Ok(()),
            t => format!("loaded, of section type {t:#x}"),
        }
    };
    Err(ObjectError::Unsupported {
        section: name.to_string(),
        offset: 0,
        what: format!("a section that is {what}"),
    })
}

/// Which region a section goes to, or `None` if it is not loaded (or not yet: unwind
/// tables, see the note in `mod.rs`).
fn classify(name: &str, sh_type: u32, flags: u64) -> Option<Class> {
    if flags & u64::from(elf::SHF_ALLOC) == 0 || flags & u64::from(elf::SHF_EXCLUDE) != 0 {
        return None;
    }
    if flags & u64::from(elf::SHF_TLS) != 0 {
        return matches!(sh_type, elf::SHT_PROGBITS | elf::SHT_NOBITS).then_some(Class::Tls);
    }
    match sh_type {
        elf::SHT_PROGBITS | elf::SHT_INIT_ARRAY | elf::SHT_FINI_ARRAY | elf::SHT_PREINIT_ARRAY => {}
        elf::SHT_NOBITS => {
            return Some(Class::Bss);
        }
        _ => return None,
    }
    if name == ".eh_frame" || sh_type == elf::SHT_X86_64_UNWIND {
        return None;
    }
    if flags & u64::from(elf::SHF_EXECINSTR) != 0 {
        Some(Class::Text)
    } else if flags & u64::from(elf::SHF_WRITE) != 0 || name.starts_with(".data.rel.ro") {
        Some(Class::Data)
    } else {
        Some(Class::Rodata)
    }
}
