//! What the dynamic loader reads: `.interp`, `.dynsym`, `.dynstr`, `.hash`, `.rela.dyn` and
//! `.dynamic`, as pure functions from the imports to bytes.
//!
//! Imports are reached through GOT entries that the loader fills (`R_X86_64_GLOB_DAT`, eager
//! binding with `BIND_NOW`), plus `R_X86_64_64` for addresses of imports stored in writable
//! data. Cranelift's PIC code calls imports through a GOT load; only C objects' plain calls
//! go through PLT stubs (text definitions of the image). Copies of libraries' data objects
//! are defined here (`R_X86_64_COPY`), canonical PLT entries give their function's address
//! (`R_X86_64_JUMP_SLOT` for the stub's own GOT entry), indirect functions' GOT entries get
//! `R_X86_64_IRELATIVE`. All of this grows with the number of imports, not with the program,
//! so every build rewrites it whole.

use object::elf;
use object::endian::{LittleEndian as LE, U16, U32, U64};
use object::pod::bytes_of;

use crate::symbols::SymbolKind;

/// One imported symbol.
pub struct Import<'a> {
    pub name: &'a str,
    pub kind: SymbolKind,
    /// Address of its GOT entry, if code refers to it through the GOT.
    pub got: Option<u64>,
    /// A thread-local: its GOT entry holds its offset from the thread pointer
    /// (`R_X86_64_TPOFF64`), and its `.dynsym` entry is `STT_TLS`.
    pub tls: bool,
    /// Defined by the executable: a copy of a library's data object in `.bss`, exported so
    /// that the library uses it too.
    pub defined: Option<Defined>,
    /// A function whose canonical address is the executable's PLT stub here: `.dynsym`
    /// gives it as the (undefined) symbol's value, and its GOT entry, which the stub jumps
    /// through, gets `R_X86_64_JUMP_SLOT` (whose lookup skips that value).
    pub canonical: Option<u64>,
    /// The version it asks for (`.gnu.version_r`), as the library's default definition has.
    pub version: Option<crate::versions::Wanted<'a>>,
}

/// An exported definition of the executable (a copy relocation's target).
#[derive(Debug, Clone, Copy)]
pub struct Defined {
    pub value: u64,
    pub size: u64,
    /// Section index of `.bss`.
    pub shndx: u16,
    /// The loader copies the library's bytes here (`R_X86_64_COPY`); an alias of a copy
    /// only names the same place.
    pub copy: bool,
}

/// An address of an import stored in data: (where, index into the imports, addend).
pub struct DataReloc {
    pub at: u64,
    pub import: usize,
    pub addend: i64,
}

/// The blob placed in the dynamic region, and where each table is.
pub struct Tables {
    pub bytes: Vec<u8>,
    pub interp: (u64, u64),
    pub dynsym: (u64, u64),
    pub dynstr: (u64, u64),
    pub hash: (u64, u64),
    pub rela: (u64, u64),
    /// `.gnu.version` and `.gnu.version_r` (address, length; length 0: no versions) and the
    /// number of libraries the latter names.
    pub versym: (u64, u64),
    pub verneed: (u64, u64),
    pub verneed_files: usize,
    /// Offsets of the needed libraries' names in `.dynstr`.
    pub needed: Vec<u32>,
    /// Offset of the run-time search path (`DT_RUNPATH`) in `.dynstr`.
    pub runpath: Option<u32>,
    pub arrays: Arrays,
    /// A position-independent executable (`DF_1_PIE`).
    pub pie: bool,
    /// How many `R_X86_64_RELATIVE` relocations lead `.rela.dyn` (`DT_RELACOUNT`).
    pub relative: usize,
}

/// An absolute address in a PIE: the loader writes its base plus `value` at `at`.
#[derive(Debug, Clone, Copy)]
pub struct Relative {
    pub at: u64,
    pub value: u64,
}

/// The program's constructor and destructor arrays, (address, bytes): glibc's start-up code
/// calls `DT_INIT_ARRAY` before `main` and the loader's `_dl_fini` calls `DT_FINI_ARRAY` at
/// exit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Arrays {
    pub init: Option<(u64, u64)>,
    pub fini: Option<(u64, u64)>,
}

fn pad8(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(8) {
        v.push(0);
    }
}

/// The System V ELF hash of a symbol name (and of a version name, `vna_hash`).
pub(crate) fn sysv_hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
        }
        h &= !g;
    }
    h
}

/// What the loader's tables say.
pub struct Wanted<'a> {
    pub interp: &'a [u8],
    pub imports: &'a [Import<'a>],
    pub data_relocs: &'a [DataReloc],
    /// The sonames of the libraries actually used.
    pub needed: &'a [&'a str],
    pub runpath: Option<&'a str>,
    pub arrays: Arrays,
    /// A PIE's absolute addresses.
    pub relative: &'a [Relative],
    /// GOT entries of indirect functions: the loader calls the resolver at `value` (plus its
    /// base) and stores the result (`R_X86_64_IRELATIVE`, last, after every symbol is bound).
    pub irelative: &'a [Relative],
    pub pie: bool,
}

/// Lay out the tables at `base`.
pub fn tables(base: u64, w: Wanted<'_>) -> Tables {
    let Wanted {
        interp,
        imports,
        data_relocs,
        needed,
        runpath,
        arrays,
        relative,
        irelative,
        pie,
    } = w;
    let mut b = Vec::new();
    let interp_at = (base, interp.len() as u64);
    b.extend_from_slice(interp);
    pad8(&mut b);

    let mut dynstr = vec![0u8];
    let mut needed_offsets = Vec::new();
    let runpath = runpath.map(|path| {
        let at = dynstr.len() as u32;
        dynstr.extend_from_slice(path.as_bytes());
        dynstr.push(0);
        at
    });
    for lib in needed {
        needed_offsets.push(dynstr.len() as u32);
        dynstr.extend_from_slice(lib.as_bytes());
        dynstr.push(0);
    }
    let dynsym_at = base + b.len() as u64;
    b.extend_from_slice(bytes_of(&elf::Sym64::<LE>::default()));
    for imp in imports {
        let name = dynstr.len() as u32;
        dynstr.extend_from_slice(imp.name.as_bytes());
        dynstr.push(0);
        let typ = match imp.kind {
            _ if imp.tls => elf::STT_TLS,
            _ if imp.defined.is_some() => elf::STT_OBJECT,
            SymbolKind::Function => elf::STT_FUNC,
            SymbolKind::Data => elf::STT_OBJECT,
        };
        let d = imp.defined;
        let sym = elf::Sym64::<LE> {
            st_name: U32::new(LE, name),
            st_info: (elf::STB_GLOBAL << 4) | typ,
            st_other: elf::STV_DEFAULT,
            st_shndx: U16::new(LE, d.map_or(0, |d| d.shndx)),
            st_value: U64::new(LE, d.map_or(imp.canonical.unwrap_or(0), |d| d.value)),
            st_size: U64::new(LE, d.map_or(0, |d| d.size)),
        };
        b.extend_from_slice(bytes_of(&sym));
    }
    let dynsym_len = base + b.len() as u64 - dynsym_at;
    let wanted: Vec<Option<crate::versions::Wanted<'_>>> =
        imports.iter().map(|i| i.version).collect();
    let versions = crate::versions::tables(&wanted, &mut dynstr);
    let dynstr_at = base + b.len() as u64;
    b.extend_from_slice(&dynstr);
    pad8(&mut b);

    // DT_HASH: nbucket, nchain, buckets, chains (32-bit words).
    let hash_at = base + b.len() as u64;
    let nsyms = imports.len() as u32 + 1;
    let nbucket = (nsyms / 2).max(1);
    let mut buckets = vec![0u32; nbucket as usize];
    let mut chains = vec![0u32; nsyms as usize];
    for (i, imp) in imports.iter().enumerate() {
        let index = i as u32 + 1;
        let bucket = (sysv_hash(imp.name.as_bytes()) % nbucket) as usize;
        chains[index as usize] = buckets[bucket];
        buckets[bucket] = index;
    }
    for w in [nbucket, nsyms].iter().chain(&buckets).chain(&chains) {
        b.extend_from_slice(&w.to_le_bytes());
    }
    let hash_len = base + b.len() as u64 - hash_at;
    pad8(&mut b);
    let versym_at = base + b.len() as u64;
    b.extend_from_slice(&versions.versym);
    pad8(&mut b);
    let verneed_at = base + b.len() as u64;
    b.extend_from_slice(&versions.verneed);
    pad8(&mut b);

    let rela_at = base + b.len() as u64;
    // A PIE's absolute addresses first (the loader adds its base), then the imports.
    for r in relative {
        let e = elf::Rela64::<LE> {
            r_offset: U64::new(LE, r.at),
            r_info: U64::new(LE, u64::from(elf::R_X86_64_RELATIVE)),
            r_addend: object::endian::I64::new(LE, r.value as i64),
        };
        b.extend_from_slice(bytes_of(&e));
    }
    let mut rela = |offset: u64, sym: usize, typ: u32, addend: i64| {
        let r = elf::Rela64::<LE> {
            r_offset: U64::new(LE, offset),
            r_info: U64::new(LE, ((sym as u64 + 1) << 32) | u64::from(typ)),
            r_addend: object::endian::I64::new(LE, addend),
        };
        b.extend_from_slice(bytes_of(&r));
    };
    for (i, imp) in imports.iter().enumerate() {
        match (imp.got, imp.tls, imp.defined) {
            (_, _, Some(d)) if d.copy => rela(d.value, i, elf::R_X86_64_COPY, 0),
            (_, _, Some(_)) => {}
            (Some(got), true, _) => rela(got, i, elf::R_X86_64_TPOFF64, 0),
            (Some(got), false, _) if imp.canonical.is_some() => {
                rela(got, i, elf::R_X86_64_JUMP_SLOT, 0)
            }
            (Some(got), false, _) => rela(got, i, elf::R_X86_64_GLOB_DAT, 0),
            (None, ..) => {}
        }
    }
    for r in data_relocs {
        rela(r.at, r.import, elf::R_X86_64_64, r.addend);
    }
    for r in irelative {
        let e = elf::Rela64::<LE> {
            r_offset: U64::new(LE, r.at),
            r_info: U64::new(LE, u64::from(elf::R_X86_64_IRELATIVE)),
            r_addend: object::endian::I64::new(LE, r.value as i64),
        };
        b.extend_from_slice(bytes_of(&e));
    }
    let rela_len = base + b.len() as u64 - rela_at;
    Tables {
        bytes: b,
        interp: interp_at,
        dynsym: (dynsym_at, dynsym_len),
        dynstr: (dynstr_at, dynstr.len() as u64),
        hash: (hash_at, hash_len),
        rela: (rela_at, rela_len),
        versym: (versym_at, versions.versym.len() as u64),
        verneed: (verneed_at, versions.verneed.len() as u64),
        verneed_files: versions.files,
        needed: needed_offsets,
        runpath,
        arrays,
        pie,
        relative: relative.len(),
    }
}

/// `.dynamic`: the loader's table of contents.
pub fn dynamic_section(t: &Tables) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |tag: i64, val: u64| {
        let d = elf::Dyn64::<LE> {
            d_tag: object::endian::I64::new(LE, tag),
            d_val: U64::new(LE, val),
        };
        out.extend_from_slice(bytes_of(&d));
    };
    for &n in &t.needed {
        entry(elf::DT_NEEDED, u64::from(n));
    }
    if let Some(at) = t.runpath {
        entry(elf::DT_RUNPATH, u64::from(at));
    }
    entry(elf::DT_HASH, t.hash.0);
    entry(elf::DT_STRTAB, t.dynstr.0);
    entry(elf::DT_SYMTAB, t.dynsym.0);
    entry(elf::DT_STRSZ, t.dynstr.1);
    entry(elf::DT_SYMENT, 24);
    entry(elf::DT_RELA, t.rela.0);
    entry(elf::DT_RELASZ, t.rela.1);
    entry(elf::DT_RELAENT, 24);
    if t.verneed_files > 0 {
        entry(elf::DT_VERSYM, t.versym.0);
        entry(elf::DT_VERNEED, t.verneed.0);
        entry(elf::DT_VERNEEDNUM, t.verneed_files as u64);
    }
    if let Some((at, len)) = t.arrays.init {
        entry(elf::DT_INIT_ARRAY, at);
        entry(elf::DT_INIT_ARRAYSZ, len);
    }
    if let Some((at, len)) = t.arrays.fini {
        entry(elf::DT_FINI_ARRAY, at);
        entry(elf::DT_FINI_ARRAYSZ, len);
    }
    if t.relative > 0 {
        entry(elf::DT_RELACOUNT, t.relative as u64);
    }
    entry(elf::DT_FLAGS, u64::from(elf::DF_BIND_NOW));
    let pie = if t.pie { elf::DF_1_PIE } else { 0 };
    entry(elf::DT_FLAGS_1, u64::from(elf::DF_1_NOW | pie));
    // For debuggers: the loader stores the address of its `r_debug` here.
    entry(elf::DT_DEBUG, 0);
    entry(elf::DT_NULL, 0);
    out
}

/// The records of `.eh_frame` bytes, in order: (offset, total length, the function address for
/// an FDE whose address is absolute and 8 bytes (`DW_EH_PE_absptr`, gimli's default), `None`
/// for a CIE). Stops at the terminator or at anything that does not fit.
fn records(frames: &[u8]) -> impl Iterator<Item = (usize, usize, Option<u64>)> + '_ {
    let word = |i: usize| {
        frames
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
    };
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let len = word(at)? as usize;
        if len == 0 || len == u32::MAX as usize || at + 4 + len > frames.len() || len < 4 {
            return None;
        }
        let id = word(at + 4)?;
        let pc = frames
            .get(at + 8..at + 16)
            .filter(|_| id != 0)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8")));
        let record = (at, 4 + len, pc);
        at += 4 + len;
        Some(record)
    })
}

/// (function address, offset) of every FDE in `.eh_frame` bytes, sorted by address.
pub fn fde_locations(frames: &[u8]) -> Vec<(u64, u32)> {
    let mut out: Vec<(u64, u32)> = records(frames)
        .filter_map(|(at, _, pc)| Some((pc?, at as u32)))
        .collect();
    out.sort_unstable();
    out
}

/// `.eh_frame` for an image, from `old` (the previous build's records, whose first is the same
/// CIE as `fresh`'s; empty in a full build) and `fresh` (a CIE, then this build's FDEs).
///
/// Records of `old` stay where they are, so an update rewrites only what changed: an FDE whose
/// function address fails `keep` (code replaced or removed) becomes a CIE of the same length
/// that nothing refers to. This build's FDEs follow, then one for `_start` (placed at `start`)
/// unless a kept one covers it. Every appended FDE is pointed at the first CIE.
pub fn merge_eh_frame(
    fresh: &[u8],
    old: &[u8],
    start: Option<crate::symbols::Placement>,
    keep: impl Fn(u64) -> bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(fresh.len() + old.len() + 32);
    let mut has_start = false;
    let mut fresh_records = records(fresh);
    if old.is_empty() {
        out.extend_from_slice(fresh);
        fresh_records.by_ref().for_each(drop);
    } else {
        for (at, len, pc) in records(old) {
            let record = &old[at..at + len];
            match pc {
                Some(pc) if !keep(pc) => out.extend_from_slice(&padding_cie(len)),
                Some(pc) => {
                    has_start |= start.is_some_and(|s| s.slot.addr == pc);
                    out.extend_from_slice(record);
                }
                None => out.extend_from_slice(record),
            }
        }
        for (at, len, pc) in fresh_records {
            if pc.is_some() {
                append_fde(&mut out, &fresh[at..at + len]);
            }
        }
    }
    if let (Some(p), false) = (start, has_start) {
        if out.is_empty() {
            // No code of the program's own brought the CIE every appended FDE points at.
            out.extend_from_slice(&image_cie());
        }
        let fde = absolute_fde(p.slot.addr, p.size, crate::x86_64::START_CFA);
        append_fde(&mut out, &fde);
    }
    out
}

/// The image's CIE, as Cranelift's ISA writes it for x86-64: version 1, no augmentation,
/// code alignment 1, data alignment -8, return address in column 16, `DW_CFA_def_cfa rsp+8;
/// DW_CFA_offset rip at cfa-8`.
fn image_cie() -> Vec<u8> {
    let mut cie = vec![0x14, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0x78];
    cie.push(crate::x86_64::RETURN_ADDRESS_COLUMN);
    cie.extend_from_slice(&[0x0c, 0x07, 0x08, 0x90, 0x01]);
    cie.resize(0x18, 0);
    cie
}

/// An FDE in the image's form: the function's address and size as absolute 8-byte values
/// (the image's CIE says `DW_EH_PE_absptr` and has no augmentation), then its call-frame
/// instructions, padded with `DW_CFA_nop`. The CIE pointer is set when it is appended.
pub fn absolute_fde(pc: u64, size: u64, instructions: &[u8]) -> Vec<u8> {
    let len = (4 + 16 + instructions.len()).next_multiple_of(8);
    let mut fde = (len as u32).to_le_bytes().to_vec();
    fde.extend_from_slice(&[0; 4]);
    fde.extend_from_slice(&pc.to_le_bytes());
    fde.extend_from_slice(&size.to_le_bytes());
    fde.extend_from_slice(instructions);
    fde.resize(4 + len, 0); // DW_CFA_nop
    fde
}

/// Append an FDE, pointing it at the CIE at offset 0.
pub fn append_fde(out: &mut Vec<u8>, fde: &[u8]) {
    let at = out.len();
    out.extend_from_slice(fde);
    out[at + 4..at + 8].copy_from_slice(&(at as u32 + 4).to_le_bytes());
}

/// A CIE of `len` bytes in all that no FDE uses: what a dropped FDE becomes, so the records
/// after it keep their offsets. Version 1, no augmentation, the ISA's alignment factors, no
/// instructions (`DW_CFA_nop`s to the end).
fn padding_cie(len: usize) -> Vec<u8> {
    let mut cie = ((len - 4) as u32).to_le_bytes().to_vec();
    cie.extend_from_slice(&[
        0,
        0,
        0,
        0,
        1,
        0,
        1,
        0x78,
        crate::x86_64::RETURN_ADDRESS_COLUMN,
    ]);
    cie.resize(len, 0);
    cie
}

/// `.eh_frame` of a position-independent executable from the image's form (absolute FDE
/// addresses, which the loader would have to relocate in a read-only segment): the same
/// records, each of the same length and at the same place after the first CIE, whose FDE
/// addresses are PC-relative 4-byte values (`DW_EH_PE_pcrel | sdata4`, augmentation "zR",
/// as GCC writes them) for frames at `frame_addr`. Returns the bytes and how much longer the
/// first CIE became (every other record's offset grows by that much). The image's own form
/// stays the one everything else reads; `absolute_frames` turns the file's back into it.
pub fn pcrel_frames(abs: &[u8], frame_addr: u64) -> (Vec<u8>, usize) {
    let mut list = records(abs);
    let Some((_, cie_len, None)) = list.next() else {
        return (abs.to_vec(), 0);
    };
    let Some(cie) = convert_cie(&abs[..cie_len], true) else {
        return (abs.to_vec(), 0);
    };
    let delta = cie.len() - cie_len;
    let mut out = cie;
    for (at, len, pc) in list {
        let record = &abs[at..at + len];
        let (Some(pc), true) = (pc, len >= 24) else {
            out.extend_from_slice(record);
            continue;
        };
        let here = out.len();
        let range = u64::from_le_bytes(record[16..24].try_into().expect("8 bytes"));
        let field = frame_addr + here as u64 + 8;
        out.extend_from_slice(&record[..4]);
        out.extend_from_slice(&(here as u32 + 4).to_le_bytes());
        out.extend_from_slice(&(pc.wrapping_sub(field) as i32).to_le_bytes());
        out.extend_from_slice(&(range as u32).to_le_bytes());
        out.push(0); // augmentation data: none
        out.extend_from_slice(&record[24..]);
        out.resize(here + len, 0); // DW_CFA_nop
    }
    let end = records(abs)
        .map(|(at, len, _)| at + len)
        .last()
        .unwrap_or(0);
    out.extend_from_slice(&abs[end..]);
    (out, delta)
}

/// The image's form of `.eh_frame` bytes that `pcrel_frames` wrote at `frame_addr`.
pub fn absolute_frames(pcrel: &[u8], frame_addr: u64) -> Vec<u8> {
    let word = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let mut out = Vec::with_capacity(pcrel.len());
    let mut at = 0;
    let mut first = true;
    while at + 8 <= pcrel.len() {
        let len = word(pcrel, at) as usize;
        if len < 4 || at + 4 + len > pcrel.len() {
            break;
        }
        let record = &pcrel[at..at + 4 + len];
        if first {
            first = false;
            match convert_cie(record, false) {
                Some(cie) => out.extend_from_slice(&cie),
                None => return pcrel.to_vec(),
            }
        } else if word(record, 4) == 0 || len < 13 {
            out.extend_from_slice(record);
        } else {
            let here = out.len();
            let field = frame_addr + at as u64 + 8;
            let pc = field.wrapping_add(word(record, 8) as i32 as i64 as u64);
            let range = u64::from(word(record, 12));
            let aug = record[16] as usize;
            let instructions = record.get(17 + aug..).unwrap_or(&[]);
            // The record keeps its length: the nops the conversion added go first.
            let keep = instructions.len().saturating_sub(7);
            out.extend_from_slice(&record[..4]);
            out.extend_from_slice(&(here as u32 + 4).to_le_bytes());
            out.extend_from_slice(&pc.to_le_bytes());
            out.extend_from_slice(&range.to_le_bytes());
            out.extend_from_slice(&instructions[..keep]);
            out.resize(here + record.len(), 0);
        }
        at += 4 + len;
    }
    out.extend_from_slice(&pcrel[at..]);
    out
}

/// The image's CIE (version 1, no augmentation) with augmentation "zR" and PC-relative FDE
/// addresses (`to_pcrel`), or back. Lengths are kept a multiple of 8.
fn convert_cie(cie: &[u8], to_pcrel: bool) -> Option<Vec<u8>> {
    const PCREL_SDATA4: u8 = 0x1b;
    let version = *cie.get(8)?;
    let aug_end = 9 + cie.get(9..)?.iter().position(|&b| b == 0)?;
    let aug = &cie[9..aug_end];
    // code alignment (uleb), data alignment (sleb), return address register (a byte in
    // version 1, else uleb): each ends at a byte without the high bit.
    let mut i = aug_end + 1;
    for _ in 0..3 {
        i += cie.get(i..)?.iter().position(|&b| b & 0x80 == 0)? + 1;
    }
    let mut rest = &cie[i..];
    let mut out = vec![0; 8];
    out.push(version);
    match (to_pcrel, aug) {
        (true, b"") => {
            out.extend_from_slice(b"zR\0");
            out.extend_from_slice(&cie[aug_end + 1..i]);
            out.extend_from_slice(&[1, PCREL_SDATA4]);
        }
        (false, b"zR") => {
            out.push(0);
            out.extend_from_slice(&cie[aug_end + 1..i]);
            rest = rest.get(2..)?; // augmentation length 1, the encoding
        }
        _ => return None,
    }
    // Instructions without the trailing nops, then padding to a multiple of 8.
    let used = rest.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    out.extend_from_slice(&rest[..used]);
    out.resize(out.len().next_multiple_of(8), 0);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    Some(out)
}

/// `.eh_frame_hdr` at `hdr` for `.eh_frame` at `frames`: the unwinder's binary-search table
/// of `fdes`, (function address, FDE address) sorted by function address. The FDEs may lie
/// in other sections than `frames` (objects' own `.eh_frame`): the unwinder reads each one,
/// and its CIE, where the table points.
pub fn eh_frame_hdr(hdr: u64, frames: u64, fdes: &[(u64, u64)]) -> Vec<u8> {
    const PCREL_SDATA4: u8 = 0x1b;
    const UDATA4: u8 = 0x03;
    const DATAREL_SDATA4: u8 = 0x3b;
    let mut out = vec![1, PCREL_SDATA4, UDATA4, DATAREL_SDATA4];
    let rel = |to: u64, from: u64| (to.wrapping_sub(from) as i64 as i32).to_le_bytes();
    out.extend_from_slice(&rel(frames, hdr + 4));
    out.extend_from_slice(&(fdes.len() as u32).to_le_bytes());
    for &(pc, fde) in fdes {
        out.extend_from_slice(&rel(pc, hdr));
        out.extend_from_slice(&rel(fde, hdr));
    }
    out
}

/// Room reserved for `.dynamic` (entries): enough for dozens of libraries.
pub const DYNAMIC_CAPACITY: u64 = 64 * 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pie_frames_keep_every_record_in_place_and_convert_back() {
        // The image's CIE (as gimli writes it for x86-64), two FDEs, a padding CIE.
        let mut abs = vec![0x14, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0x78, 0x10];
        abs.extend_from_slice(&[0x0c, 0x07, 0x08, 0x90, 0x01]);
        abs.resize(0x18, 0);
        append_fde(
            &mut abs,
            &absolute_fde(0x1000_0000, 0x40, &[0x41, 0x0e, 0x10]),
        );
        abs.extend_from_slice(&padding_cie(32));
        append_fde(&mut abs, &absolute_fde(0x1000_0100, 0x20, &[]));
        let at = 0x8000_0200;
        let (pcrel, delta) = pcrel_frames(&abs, at);
        let starts = |b: &[u8]| records(b).map(|(o, l, _)| (o, l)).collect::<Vec<_>>();
        let shifted: Vec<(usize, usize)> = starts(&abs)
            .iter()
            .skip(1)
            .map(|&(o, l)| (o + delta, l))
            .collect();
        assert_eq!(starts(&pcrel)[1..], shifted[..]);
        // An FDE's address is relative to its own field.
        let fde = shifted[0].0;
        let rel = i32::from_le_bytes(pcrel[fde + 8..fde + 12].try_into().unwrap());
        assert_eq!(
            (at + fde as u64 + 8).wrapping_add(rel as i64 as u64),
            0x1000_0000
        );
        let back = absolute_frames(&pcrel, at);
        assert_eq!(fde_locations(&back), fde_locations(&abs));
        assert_eq!(
            pcrel_frames(&back, at).0,
            pcrel,
            "a round trip changes nothing"
        );
    }

    #[test]
    fn sysv_hash_matches_the_reference_values() {
        assert_eq!(sysv_hash(b""), 0);
        assert_eq!(sysv_hash(b"printf"), 0x077905a6);
        assert_eq!(sysv_hash(b"exit"), 0x0006cf04);
    }
}
