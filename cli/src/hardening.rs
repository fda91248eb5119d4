//! What `checksec` would say of an executable, from its ELF headers alone: PIE, RELRO, an
//! executable stack, writable-and-executable segments, text relocations.

use std::path::Path;

use anyhow::{Context, Result};
use object::elf;
use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader, Rela};
use object::{LittleEndian as LE, Object};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    pub pie: bool,
    /// "full", "partial", "none", or for a static executable that relocates nothing at run
    /// time, "not needed".
    pub relro: &'static str,
    pub nx_stack: bool,
    /// Segments both writable and executable.
    pub wx_segments: usize,
    /// Dynamic relocations that write into executable segments, or `DT_TEXTREL`.
    pub text_relocations: usize,
}

pub fn of(path: &Path) -> Result<Hardening> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = ElfFile64::<LE>::parse(&*data).context("not a 64-bit ELF file")?;
    let endian = LE;
    let header = file.elf_header();
    let segments = header.program_headers(endian, &*data)?;
    let pie = header.e_type.get(endian) == elf::ET_DYN;
    let mut nx_stack = false;
    let mut relro_segment = false;
    let mut wx_segments = 0;
    let mut exec_ranges = Vec::new();
    let mut dynamic = None;
    let mut interp = false;
    for p in segments {
        let flags = p.p_flags(endian);
        match p.p_type(endian) {
            elf::PT_GNU_STACK => nx_stack = flags & elf::PF_X == 0,
            elf::PT_GNU_RELRO => relro_segment = true,
            elf::PT_DYNAMIC => dynamic = Some(p),
            elf::PT_INTERP => interp = true,
            elf::PT_LOAD => {
                if flags & elf::PF_W != 0 && flags & elf::PF_X != 0 {
                    wx_segments += 1;
                }
                if flags & elf::PF_X != 0 {
                    let start = p.p_vaddr(endian);
                    exec_ranges.push(start..start + p.p_memsz(endian));
                }
            }
            _ => {}
        }
    }
    let mut bind_now = false;
    let mut text_relocations = 0;
    let mut rela = (0u64, 0u64);
    if let Some(d) = dynamic {
        let entries: &[elf::Dyn64<LE>] = d
            .data_as_array(endian, &*data)
            .map_err(|()| anyhow::anyhow!("`.dynamic` lies outside the file"))?;
        for e in entries {
            let (tag, val) = (e.d_tag(endian), e.d_val(endian));
            match tag {
                elf::DT_FLAGS => {
                    bind_now |= val & u64::from(elf::DF_BIND_NOW) != 0;
                    text_relocations += usize::from(val & u64::from(elf::DF_TEXTREL) != 0);
                }
                elf::DT_FLAGS_1 if val & u64::from(elf::DF_1_NOW) != 0 => bind_now = true,
                elf::DT_BIND_NOW => bind_now = true,
                elf::DT_TEXTREL => text_relocations += 1,
                elf::DT_RELA => rela.0 = val,
                elf::DT_RELASZ => rela.1 = val,
                _ => {}
            }
        }
    }
    // Dynamic relocations whose place is code.
    if rela.1 > 0 {
        if let Some(section) = file
            .sections()
            .find(|s| object::ObjectSection::address(s) == rela.0)
        {
            let bytes = object::ObjectSection::data(&section)?;
            let relas: &[elf::Rela64<LE>] = object::pod::slice_from_all_bytes(bytes)
                .map_err(|()| anyhow::anyhow!("bad .rela.dyn"))?;
            text_relocations += relas
                .iter()
                .filter(|r| exec_ranges.iter().any(|x| x.contains(&r.r_offset(endian))))
                .count();
        }
    }
    let relro = match (dynamic.is_some(), relro_segment, bind_now) {
        (false, _, _) => "not needed",
        // A static PIE (no loader) with nothing to make read-only after relocating: its
        // relocations all go to writable data.
        (true, false, _) if pie && !interp => "not needed",
        (true, true, true) => "full",
        (true, true, false) => "partial",
        (true, false, _) => "none",
    };
    Ok(Hardening {
        pie,
        relro,
        nx_stack,
        wx_segments,
        text_relocations,
    })
}

impl std::fmt::Display for Hardening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "PIE {}, RELRO {}, NX stack {}, writable-and-executable segments {}, text relocations {}",
            yes(self.pie),
            self.relro,
            yes(self.nx_stack),
            self.wx_segments,
            self.text_relocations
        )
    }
}
