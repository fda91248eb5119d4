//! DWARF for `-g`: one compile unit per source file, one subprogram per function with its
//! address range, and a line table mapping every instruction to its source line, so `gdb` can
//! `break FILE:LINE`, `list`, `step` and `next` through the source. Plus `.eh_frame` contents
//! from Cranelift's unwind information.
//!
//! Lines reach the machine code through Cranelift's source locations: the front end sets each
//! instruction's source location to its line in the file, and Cranelift reports, for every
//! range of emitted code, the location it came from.
//!
//! # Keeping it current across updates
//!
//! An update recompiles a handful of functions; regenerating the DWARF of a whole program for
//! them would cost more than the update itself (gimli writes about 200,000 functions a second).
//! So the sections are assembled from per-file *units*: each compile unit is written by gimli
//! on its own, as three pieces (its `.debug_abbrev` table, its `.debug_info` unit, its
//! `.debug_line` program) that refer to each other only through the section offsets gimli
//! reports as relocations. The index of the units (where each piece is, and those relocations)
//! is kept in the executable's table. An update then
//!
//! - copies the pieces of every file that did not change and whose functions were not
//!   recompiled, byte for byte, re-applying the relocations at their new offsets (their
//!   functions did not move: code that is not recompiled never moves);
//! - writes the units of the other files again, taking the line rows of their functions that
//!   were not recompiled from the previous line programs (lines relative to the function's
//!   first line, since an edit above a function moves its lines without changing its code).
//!
//! The cost of an update is thus a copy of the debug sections plus gimli's time for the files
//! that changed. `.eh_frame` is simpler: its records are self-contained, so the image carries
//! the previous build's FDEs over (see `zerolink_image::dynamic::merge_eh_frame`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gimli::write::{
    Address, AttributeValue, Dwarf, EndianVec, LineProgram, LineString, RelocateWriter, Relocation,
    RelocationTarget, Sections, Unit,
};
use gimli::{Encoding, Format, LineEncoding, LittleEndian, SectionId};

use crate::error::{BackendError, Result};

/// Line rows of a function: (code offset, line), sorted by offset.
pub type Rows = Vec<(u32, u32)>;

/// What the line table needs to know about one placed function.
#[derive(Clone)]
pub struct FunctionLines {
    pub name: String,
    /// Index of its file in the build's list of files.
    pub file: usize,
    /// Line of the function's first line (the `function` keyword in CLIF).
    pub line: u32,
    pub addr: u64,
    pub size: u64,
    pub rows: Rows,
}

/// The three pieces of a unit, in the order of [`Piece::ALL`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Piece {
    Abbrev = 0,
    Info = 1,
    Line = 2,
}

impl Piece {
    const ALL: [Piece; 3] = [Piece::Abbrev, Piece::Info, Piece::Line];
    const NAMES: [&'static str; 3] = [".debug_abbrev", ".debug_info", ".debug_line"];

    fn of(id: SectionId) -> Option<Piece> {
        match id {
            SectionId::DebugAbbrev => Some(Piece::Abbrev),
            SectionId::DebugInfo => Some(Piece::Info),
            SectionId::DebugLine => Some(Piece::Line),
            _ => None,
        }
    }

    fn of_target(t: RelocationTarget) -> Option<Piece> {
        match t {
            RelocationTarget::Section(id) => Piece::of(id),
            RelocationTarget::Symbol(_) => None,
        }
    }

    fn from_u8(v: u8) -> Option<Piece> {
        Piece::ALL.get(usize::from(v)).copied()
    }
}

/// A section offset inside a piece: `addend` into the unit's `target` piece.
#[derive(Clone, Copy, Debug)]
struct Reloc {
    piece: Piece,
    at: u32,
    target: Piece,
    size: u8,
    addend: u32,
}

/// Where one compile unit's pieces are in the sections, kept in the table between builds.
#[derive(Clone, Debug)]
pub struct UnitEntry {
    /// Hash of the file's directory and name: the unit's identity across builds.
    key: u64,
    at: [u32; 3],
    len: [u32; 3],
    relocs: Vec<Reloc>,
}

/// The index of all units, in section order.
#[derive(Default)]
struct Index(Vec<UnitEntry>);

impl Index {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let u32s = |out: &mut Vec<u8>, v: &[u32]| {
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        u32s(&mut out, &[self.0.len() as u32]);
        for e in &self.0 {
            out.extend_from_slice(&e.key.to_le_bytes());
            u32s(&mut out, &e.at);
            u32s(&mut out, &e.len);
            u32s(&mut out, &[e.relocs.len() as u32]);
            for r in &e.relocs {
                out.extend_from_slice(&[r.piece as u8, r.target as u8, r.size, 0]);
                u32s(&mut out, &[r.at, r.addend]);
            }
        }
        out
    }

    fn decode(mut b: &[u8]) -> Option<Index> {
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = b.split_at_checked(n)?;
            b = rest;
            Some(head)
        };
        let u32_of = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4 bytes"));
        let mut units = Vec::new();
        for _ in 0..u32_of(take(4)?) {
            let key = u64::from_le_bytes(take(8)?.try_into().ok()?);
            let mut at = [0; 3];
            let mut len = [0; 3];
            for v in at.iter_mut().chain(len.iter_mut()) {
                *v = u32_of(take(4)?);
            }
            let mut relocs = Vec::new();
            for _ in 0..u32_of(take(4)?) {
                let h = take(4)?;
                let r = Reloc {
                    piece: Piece::from_u8(h[0])?,
                    target: Piece::from_u8(h[1])?,
                    size: h[2],
                    at: u32_of(take(4)?),
                    addend: u32_of(take(4)?),
                };
                if r.size != 4 || r.at as u64 + 4 > u64::from(len[r.piece as usize]) {
                    return None;
                }
                relocs.push(r);
            }
            units.push(UnitEntry {
                key,
                at,
                len,
                relocs,
            });
        }
        Some(Index(units))
    }
}

/// A source file as the debugger will look for it: absolute directory and file name.
pub struct SourceFile {
    /// The path as given (the unit's name).
    pub path: PathBuf,
    dir: PathBuf,
    name: Vec<u8>,
    comp_dir: PathBuf,
    /// `DW_AT_language` of its compile unit.
    pub language: gimli::DwLang,
}

impl SourceFile {
    pub fn new(path: &Path) -> SourceFile {
        let comp_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) if d.is_absolute() => d.to_path_buf(),
            Some(d) => comp_dir.join(d),
            None => comp_dir.clone(),
        };
        let name = path
            .file_name()
            .map_or_else(Vec::new, |n| n.as_encoded_bytes().to_vec());
        SourceFile {
            path: path.to_path_buf(),
            dir,
            name,
            comp_dir,
            language: gimli::DW_LANG_Mips_Assembler,
        }
    }

    /// The same file, described as written in `language` (a `DW_LANG_*` constant).
    pub fn with_language(self, language: gimli::DwLang) -> SourceFile {
        SourceFile { language, ..self }
    }

    /// The unit's identity across builds: where the file is, as seen from where we build.
    pub fn key(&self) -> u64 {
        let mut key = bytes(&self.comp_dir);
        key.push(0);
        key.extend_from_slice(&bytes(&self.dir));
        key.push(0);
        key.extend_from_slice(&self.name);
        xxhash_rust::xxh3::xxh3_64(&key)
    }
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_encoded_bytes().to_vec()
}

/// How a unit of the new sections is made.
pub enum UnitSource<'a> {
    /// Written by gimli from these functions (all of the file's, in address order or not).
    Fresh {
        file: &'a SourceFile,
        functions: Vec<&'a FunctionLines>,
    },
    /// Copied from the previous build's sections.
    Copied(&'a UnitEntry),
}

/// The debug sections of the previous build, as an update finds them in the file.
pub struct Previous<'a> {
    pieces: [&'a [u8]; 3],
    index: Index,
    /// Unit key → position in `index`: one lookup per file, however many files there are.
    by_key: HashMap<u64, usize>,
}

/// Line rows of a function in a previous build: (code offset, line minus its first line).
pub type OldRows = Vec<(u32, i64)>;

impl<'a> Previous<'a> {
    /// Read the previous sections and their index. `Err` says why they cannot be used.
    pub fn read(
        index: &[u8],
        section: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> std::result::Result<Previous<'a>, String> {
        // A build with debug information but no source files (a front end that registered
        // none) writes no units, and then no index and no sections: nothing to build on, and
        // nothing wrong.
        let index = if index.is_empty() {
            Index(Vec::new())
        } else {
            Index::decode(index).ok_or("its debug information index is damaged")?
        };
        let mut pieces: [&[u8]; 3] = [&[]; 3];
        for (p, name) in pieces.iter_mut().zip(Piece::NAMES) {
            *p = match section(name) {
                Some(bytes) => bytes,
                None if index.0.is_empty() => &[],
                None => return Err(format!("its {name} section is missing or damaged")),
            };
        }
        for e in &index.0 {
            for p in Piece::ALL {
                let (at, len) = (e.at[p as usize] as usize, e.len[p as usize] as usize);
                if at + len > pieces[p as usize].len() {
                    return Err("its debug information index does not fit the sections".into());
                }
            }
        }
        let by_key = index
            .0
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key, i))
            .collect();
        Ok(Previous {
            pieces,
            index,
            by_key,
        })
    }

    /// The unit of `file`, if the previous build wrote one.
    pub fn unit(&self, file: &SourceFile) -> Option<&UnitEntry> {
        self.by_key.get(&file.key()).map(|&i| &self.index.0[i])
    }

    /// The rows of every function of the units not in `keep`, by start address.
    pub fn rows_outside(
        &self,
        keep: &[&UnitEntry],
    ) -> std::result::Result<HashMap<u64, OldRows>, String> {
        let mut out = HashMap::new();
        let keep: std::collections::HashSet<u64> = keep.iter().map(|k| k.key).collect();
        let debug_line =
            gimli::read::DebugLine::new(self.pieces[Piece::Line as usize], LittleEndian);
        for e in &self.index.0 {
            // A unit without functions (a file of data objects only) has no line program.
            if keep.contains(&e.key) || e.len[Piece::Line as usize] == 0 {
                continue;
            }
            let bad = |err: gimli::read::Error| format!("its line table cannot be read: {err}");
            let program = debug_line
                .program(
                    gimli::DebugLineOffset(e.at[Piece::Line as usize] as usize),
                    8,
                    None,
                    None,
                )
                .map_err(bad)?;
            let mut rows = program.rows();
            let mut current: Option<(u64, u64, OldRows)> = None;
            while let Some((_, row)) = rows.next_row().map_err(bad)? {
                if row.end_sequence() {
                    if let Some((start, _, r)) = current.take() {
                        out.insert(start, r);
                    }
                    continue;
                }
                let line = row.line().map_or(0, |l| l.get());
                match &mut current {
                    None => current = Some((row.address(), line, Vec::new())),
                    Some((start, first, r)) => {
                        r.push(((row.address() - *start) as u32, line as i64 - *first as i64))
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Sections by name, with their contents.
pub type NamedSections = Vec<(String, Vec<u8>)>;

/// The new debug sections and the index to keep for the next update.
pub fn sections(
    units: &[UnitSource<'_>],
    previous: Option<&Previous<'_>>,
    jobs: usize,
) -> Result<(NamedSections, Vec<u8>)> {
    // Fresh units do not depend on each other: gimli writes them on `jobs` threads.
    let fresh: Vec<(&SourceFile, &[&FunctionLines])> = units
        .iter()
        .filter_map(|u| match u {
            UnitSource::Fresh { file, functions } => Some((*file, functions.as_slice())),
            UnitSource::Copied(_) => None,
        })
        .collect();
    let mut written = crate::parallel::map(
        &fresh,
        jobs,
        || (),
        |_, (file, functions)| write_unit(file, functions),
    )
    .into_iter();
    let mut out: [Vec<u8>; 3] = Default::default();
    let mut index = Index::default();
    for unit in units {
        let at = Piece::ALL.map(|p| out[p as usize].len() as u32);
        let (relocs, key) = match unit {
            UnitSource::Fresh { file, .. } => {
                let (bytes, relocs) = written.next().expect("one result per fresh unit")?;
                for (o, b) in out.iter_mut().zip(bytes) {
                    o.extend_from_slice(&b);
                }
                (relocs, file.key())
            }
            UnitSource::Copied(e) => {
                let prev = previous.ok_or_else(|| internal("a copied unit without sections"))?;
                for p in Piece::ALL {
                    let (from, len) = (e.at[p as usize] as usize, e.len[p as usize] as usize);
                    out[p as usize].extend_from_slice(&prev.pieces[p as usize][from..from + len]);
                }
                (e.relocs.clone(), e.key)
            }
        };
        let len = Piece::ALL.map(|p| out[p as usize].len() as u32 - at[p as usize]);
        for r in &relocs {
            let value = at[r.target as usize] + r.addend;
            let pos = (at[r.piece as usize] + r.at) as usize;
            out[r.piece as usize][pos..pos + 4].copy_from_slice(&value.to_le_bytes());
        }
        index.0.push(UnitEntry {
            key,
            at,
            len,
            relocs,
        });
    }
    let sections = Piece::NAMES
        .iter()
        .zip(out)
        .filter(|(_, b)| !b.is_empty())
        .map(|(n, b)| (n.to_string(), b))
        .collect();
    Ok((sections, index.encode()))
}

/// A section being written that records the section offsets gimli writes into it.
#[derive(Clone)]
struct Recorder {
    data: EndianVec<LittleEndian>,
    relocs: Vec<Relocation>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            data: EndianVec::new(LittleEndian),
            relocs: Vec::new(),
        }
    }
}

impl RelocateWriter for Recorder {
    type Writer = EndianVec<LittleEndian>;
    fn writer(&self) -> &Self::Writer {
        &self.data
    }
    fn writer_mut(&mut self) -> &mut Self::Writer {
        &mut self.data
    }
    fn relocate(&mut self, relocation: Relocation) {
        self.relocs.push(relocation);
    }
}

pub(crate) fn internal(what: &str) -> BackendError {
    BackendError::Compile {
        function: "(debug info)".into(),
        message: what.to_string(),
    }
}

/// One compile unit, written by gimli on its own: its three pieces and their cross-references.
fn write_unit(
    file: &SourceFile,
    functions: &[&FunctionLines],
) -> Result<([Vec<u8>; 3], Vec<Reloc>)> {
    let encoding = Encoding {
        format: Format::Dwarf32,
        version: 5,
        address_size: 8,
    };
    let mut program = LineProgram::new(
        encoding,
        LineEncoding::default(),
        LineString::String(bytes(&file.comp_dir)),
        Some(LineString::String(bytes(&file.dir))),
        LineString::String(file.name.clone()),
        None,
    );
    // Directory 0 is the working directory (DWARF 5): the file gets its own entry.
    let dir_id = program.add_directory(LineString::String(bytes(&file.dir)));
    let file_id = program.add_file(LineString::String(file.name.clone()), dir_id, None);
    let mut unit = Unit::new(encoding, program);
    let root = unit.root();
    let cu = unit.get_mut(root);
    cu.set(gimli::DW_AT_name, AttributeValue::String(bytes(&file.path)));
    cu.set(
        gimli::DW_AT_comp_dir,
        AttributeValue::String(bytes(&file.comp_dir)),
    );
    cu.set(
        gimli::DW_AT_producer,
        AttributeValue::String(b"zerolink".to_vec()),
    );
    cu.set(
        gimli::DW_AT_language,
        AttributeValue::Language(file.language),
    );
    cu.set(
        gimli::DW_AT_low_pc,
        AttributeValue::Address(Address::Constant(0)),
    );
    for f in functions {
        let sub = unit.add(root, gimli::DW_TAG_subprogram);
        let die = unit.get_mut(sub);
        die.set(
            gimli::DW_AT_name,
            AttributeValue::String(f.name.as_bytes().to_vec()),
        );
        die.set(gimli::DW_AT_external, AttributeValue::Flag(true));
        die.set(
            gimli::DW_AT_decl_file,
            AttributeValue::FileIndex(Some(file_id)),
        );
        die.set(
            gimli::DW_AT_decl_line,
            AttributeValue::Udata(u64::from(f.line)),
        );
        die.set(
            gimli::DW_AT_low_pc,
            AttributeValue::Address(Address::Constant(f.addr)),
        );
        die.set(gimli::DW_AT_high_pc, AttributeValue::Udata(f.size));
        let lp = &mut unit.line_program;
        lp.begin_sequence(Some(Address::Constant(f.addr)));
        // The prologue has no source location of its own: it belongs to the function's first
        // line, as a C compiler's belongs to the function's opening line. An update relies on
        // this row coming first (it gives the line the others are relative to).
        let row = lp.row();
        row.address_offset = 0;
        row.line = u64::from(f.line);
        row.file = file_id;
        row.is_statement = true;
        lp.generate_row();
        let mut last = Some(f.line);
        for &(offset, line) in &f.rows {
            if line == 0 || offset == 0 || last == Some(line) || u64::from(offset) >= f.size {
                continue;
            }
            let row = lp.row();
            row.address_offset = u64::from(offset);
            row.line = u64::from(line);
            row.file = file_id;
            row.is_statement = true;
            lp.generate_row();
            last = Some(line);
        }
        lp.end_sequence(f.size);
    }
    let mut dwarf = Dwarf::new();
    dwarf.units.add(unit);
    let mut sections = Sections::new(Recorder::default());
    dwarf
        .write(&mut sections)
        .map_err(|e| internal(&e.to_string()))?;
    let mut pieces: [Vec<u8>; 3] = Default::default();
    let mut relocs = Vec::new();
    let mut unexpected = None;
    sections
        .for_each_mut(|id, w| {
            let data = std::mem::replace(&mut w.data, EndianVec::new(LittleEndian));
            let Some(piece) = Piece::of(id) else {
                if !data.slice().is_empty() {
                    unexpected = Some(id.name());
                }
                return Ok::<(), gimli::write::Error>(());
            };
            for r in w.relocs.drain(..) {
                match (r.target, Piece::of_target(r.target)) {
                    (_, Some(target)) if r.size == 4 => relocs.push(Reloc {
                        piece,
                        at: r.offset as u32,
                        target,
                        size: 4,
                        addend: r.addend as u32,
                    }),
                    _ => unexpected = Some(id.name()),
                }
            }
            pieces[piece as usize] = data.into_vec();
            Ok(())
        })
        .map_err(|e| internal(&e.to_string()))?;
    if let Some(name) = unexpected {
        return Err(internal(&format!("unexpected contents in {name}")));
    }
    Ok((pieces, relocs))
}

/// Call-frame information of a compiled function (System V ISAs only).
pub type Unwind = cranelift_codegen::isa::unwind::systemv::UnwindInfo;

/// What `-g` keeps of a compiled function: (code offset, source location) for every range of
/// code with a location, and its call-frame information.
pub fn of_compiled(
    compiled: &cranelift_codegen::CompiledCode,
    isa: &dyn cranelift_codegen::isa::TargetIsa,
) -> (Rows, Option<Unwind>) {
    let rows = compiled
        .buffer
        .get_srclocs_sorted()
        .iter()
        .filter(|s| !s.loc.is_default())
        .map(|s| (s.start, s.loc.bits()))
        .collect();
    let unwind = match compiled.create_unwind_info(isa) {
        Ok(Some(cranelift_codegen::isa::unwind::UnwindInfo::SystemV(info))) => Some(info),
        _ => None,
    };
    (rows, unwind)
}

/// `.eh_frame` for the given functions: the ISA's common entry, then one FDE per function,
/// with absolute addresses (the image adds `.eh_frame_hdr`, and in an update the FDEs of
/// functions this build did not compile).
pub fn eh_frame(
    isa: &dyn cranelift_codegen::isa::TargetIsa,
    frames: &[(u64, Unwind)],
) -> Result<Option<Vec<u8>>> {
    let Some(cie) = isa.create_systemv_cie() else {
        return Ok(None);
    };
    let mut table = gimli::write::FrameTable::default();
    let cie = table.add_cie(cie);
    for (addr, info) in frames {
        table.add_fde(cie, info.to_fde(Address::Constant(*addr)));
    }
    let mut out = gimli::write::EhFrame(EndianVec::new(LittleEndian));
    table
        .write_eh_frame(&mut out)
        .map_err(|e| internal(&e.to_string()))?;
    Ok(Some(out.0.into_vec()))
}
