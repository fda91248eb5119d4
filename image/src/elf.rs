//! ELF encoding: the file header, program headers, section headers and the symbol table.
//!
//! These are pure functions from the image's model to bytes; `image.rs` decides where the bytes
//! go. Everything is little-endian ELF64 (the only target so far is x86-64 Linux).

use object::elf;
use object::endian::{LittleEndian as LE, U16, U32, U64};
use object::pod::bytes_of;

use crate::layout::{HEADERS_VADDR, MAX_PHDRS};

pub const EHDR_SIZE: u64 = 64;
pub const PHDR_SIZE: u64 = 56;
pub const SHDR_SIZE: u64 = 64;
pub const SYM_SIZE: u64 = 24;
/// Bytes of one program header table: always `MAX_PHDRS` entries, the unused ones `PT_NULL`,
/// so `e_phnum` never changes.
pub const PHDRS_SIZE: u64 = PHDR_SIZE * MAX_PHDRS as u64;
/// Bytes of the headers page that the ELF header and the two program header tables use.
pub const HEADERS_SIZE: u64 = EHDR_SIZE + 2 * PHDRS_SIZE;

/// Where the checksum of the ELF header and the program header table in force lies: after
/// the build stamp, in the headers page (not loaded). Every build writes it, as the headers
/// will be once its commit is done; `Image::open` and `verify` check it, so a damaged header
/// (a `PT_INTERP` address, a segment's size) means a full build, never a file that looks
/// sound and will not start.
pub const HEADER_SUM_OFFSET: u64 = HEADERS_SIZE + crate::live::STAMP_SIZE;

/// Where the address of the hot patcher's trampoline (`x86_64::TRAMPOLINE_NAME`) lies, after
/// the header checksum: what the patcher reads from the file.
pub const TRAMPOLINE_ADDR_OFFSET: u64 = HEADER_SUM_OFFSET + 8;

/// The checksum of an ELF header and a program header table, as [`HEADER_SUM_OFFSET`] keeps it.
pub fn header_sum(header: &[u8], phdrs: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(header);
    h.update(phdrs);
    h.digest()
}

/// Whether `file`'s ELF header and the program header table it names match the checksum the
/// last build left at [`HEADER_SUM_OFFSET`].
pub fn headers_intact(file: &[u8]) -> bool {
    let word = |at: u64| -> Option<u64> {
        let b = file.get(at as usize..at as usize + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    let (Some(phoff), Some(stored)) = (word(E_PHOFF_OFFSET), word(HEADER_SUM_OFFSET)) else {
        return false;
    };
    let (Some(header), Some(phdrs)) = (
        file.get(..EHDR_SIZE as usize),
        phoff
            .checked_add(PHDRS_SIZE)
            .and_then(|end| file.get(phoff as usize..end as usize)),
    ) else {
        return false;
    };
    header_sum(header, phdrs) == stored
}

/// Where the program header tables are: an update writes the new one into the slot the
/// executable does not use, then switches `e_phoff` with one aligned store, so a kill at any
/// moment leaves one complete table in force (never a table half old, half new, which the
/// kernel refuses to start).
pub const PHDR_SLOTS: [u64; 2] = [EHDR_SIZE, EHDR_SIZE + PHDRS_SIZE];

/// Offset of `e_phoff` in the ELF header.
pub const E_PHOFF_OFFSET: u64 = 32;

#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

impl Segment {
    /// The read-only segment that maps the ELF header and program headers themselves.
    pub fn headers() -> Segment {
        Segment {
            p_type: elf::PT_LOAD,
            flags: elf::PF_R,
            offset: 0,
            vaddr: HEADERS_VADDR,
            // The stamp follows the program headers (see `live::STAMP_OFFSET`).
            filesz: HEADERS_SIZE + crate::live::STAMP_SIZE,
            memsz: HEADERS_SIZE + crate::live::STAMP_SIZE,
            align: crate::layout::PAGE,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub sh_type: u32,
    pub flags: u64,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
    pub info: u32,
    pub align: u64,
    pub entsize: u64,
}

/// The ELF header, naming the program header table at `phoff`.
pub fn file_header(
    e_type: u16,
    machine: u16,
    entry: u64,
    phoff: u64,
    shoff: u64,
    shnum: u16,
    shstrndx: u16,
) -> Vec<u8> {
    let header = elf::FileHeader64::<LE> {
        e_ident: elf::Ident {
            magic: elf::ELFMAG,
            class: elf::ELFCLASS64,
            data: elf::ELFDATA2LSB,
            version: elf::EV_CURRENT,
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            padding: [0; 7],
        },
        e_type: U16::new(LE, e_type),
        e_machine: U16::new(LE, machine),
        e_version: U32::new(LE, u32::from(elf::EV_CURRENT)),
        e_entry: U64::new(LE, entry),
        e_phoff: U64::new(LE, phoff),
        e_shoff: U64::new(LE, shoff),
        e_flags: U32::new(LE, 0),
        e_ehsize: U16::new(LE, EHDR_SIZE as u16),
        e_phentsize: U16::new(LE, PHDR_SIZE as u16),
        e_phnum: U16::new(LE, MAX_PHDRS as u16),
        e_shentsize: U16::new(LE, SHDR_SIZE as u16),
        e_shnum: U16::new(LE, shnum),
        e_shstrndx: U16::new(LE, shstrndx),
    };
    bytes_of(&header).to_vec()
}

/// A program header table of `MAX_PHDRS` entries: `segments`, then `PT_NULL` ones.
pub fn program_headers(segments: &[Segment]) -> Vec<u8> {
    assert!(
        segments.len() <= MAX_PHDRS,
        "program header slots exhausted"
    );
    let mut out = Vec::with_capacity(PHDRS_SIZE as usize);
    for s in segments {
        let ph = elf::ProgramHeader64::<LE> {
            p_type: U32::new(LE, s.p_type),
            p_flags: U32::new(LE, s.flags),
            p_offset: U64::new(LE, s.offset),
            p_vaddr: U64::new(LE, s.vaddr),
            p_paddr: U64::new(LE, s.vaddr),
            p_filesz: U64::new(LE, s.filesz),
            p_memsz: U64::new(LE, s.memsz),
            p_align: U64::new(LE, s.align),
        };
        out.extend_from_slice(bytes_of(&ph));
    }
    // Zeros are `PT_NULL` entries, which the kernel and the dynamic loader skip.
    out.resize(PHDRS_SIZE as usize, 0);
    out
}

/// A `.symtab` entry before encoding.
#[derive(Debug, Clone)]
pub struct SymbolEntry {
    pub name: String,
    pub value: u64,
    pub size: u64,
    pub bind: u8,
    pub typ: u8,
    pub shndx: u16,
}

/// `.symtab` and `.strtab` contents, plus the index of the first non-local symbol (`sh_info`).
/// Locals must come first: the caller passes them sorted that way.
pub fn symtab(entries: &[SymbolEntry]) -> (Vec<u8>, Vec<u8>, u32) {
    let mut strtab = vec![0u8];
    let mut symtab = vec![0u8; SYM_SIZE as usize];
    let mut first_global = None;
    for (i, e) in entries.iter().enumerate() {
        if e.bind != elf::STB_LOCAL && first_global.is_none() {
            first_global = Some(i as u32 + 1);
        }
        let name = strtab.len() as u32;
        strtab.extend_from_slice(e.name.as_bytes());
        strtab.push(0);
        let sym = elf::Sym64::<LE> {
            st_name: U32::new(LE, name),
            st_info: (e.bind << 4) | e.typ,
            st_other: elf::STV_DEFAULT,
            st_shndx: U16::new(LE, e.shndx),
            st_value: U64::new(LE, e.value),
            st_size: U64::new(LE, e.size),
        };
        symtab.extend_from_slice(bytes_of(&sym));
    }
    let info = first_global.unwrap_or(entries.len() as u32 + 1);
    (symtab, strtab, info)
}

/// Section name string table and the name offset of each section, in order.
pub fn shstrtab(sections: &[Section]) -> (Vec<u8>, Vec<u32>) {
    let mut table = vec![0u8];
    let mut offsets = Vec::with_capacity(sections.len());
    for s in sections {
        offsets.push(table.len() as u32);
        table.extend_from_slice(s.name.as_bytes());
        table.push(0);
    }
    (table, offsets)
}

/// The section header table, with the null section first.
pub fn section_headers(sections: &[Section], names: &[u32]) -> Vec<u8> {
    let mut out = vec![0u8; SHDR_SIZE as usize];
    for (s, &name) in sections.iter().zip(names) {
        let sh = elf::SectionHeader64::<LE> {
            sh_name: U32::new(LE, name),
            sh_type: U32::new(LE, s.sh_type),
            sh_flags: U64::new(LE, s.flags),
            sh_addr: U64::new(LE, s.addr),
            sh_offset: U64::new(LE, s.offset),
            sh_size: U64::new(LE, s.size),
            sh_link: U32::new(LE, s.link),
            sh_info: U32::new(LE, s.info),
            sh_addralign: U64::new(LE, s.align),
            sh_entsize: U64::new(LE, s.entsize),
        };
        out.extend_from_slice(bytes_of(&sh));
    }
    out
}
