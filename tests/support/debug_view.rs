//! A position-independent view of an executable's debug information, for comparing an updated
//! executable with a fresh build of the same input: per function (by name) its compile unit,
//! declaration line, size, line rows relative to its start, and unwind instructions. Checks on
//! the way that each function's subprogram, line sequence and FDE start at its address.

use std::collections::BTreeMap;
use std::path::Path;

use gimli::{EndianSlice, LittleEndian};
use object::{Object, ObjectSection, ObjectSymbol};

#[derive(Debug, PartialEq, Eq, Default, Clone)]
pub struct FunctionDebug {
    pub unit: String,
    pub decl_line: u64,
    pub size: u64,
    /// (offset from the function's start, file name, line).
    pub rows: Vec<(u64, String, u64)>,
    /// Call-frame instructions of its FDE, without trailing `DW_CFA_nop`s.
    pub cfa: Vec<u8>,
}

pub fn view(exe: &Path) -> BTreeMap<String, FunctionDebug> {
    let bytes = std::fs::read(exe).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let mut by_addr: BTreeMap<u64, String> = BTreeMap::new();
    for s in file.symbols() {
        if s.kind() == object::SymbolKind::Text && s.size() > 0 {
            by_addr.insert(s.address(), s.name().unwrap().to_string());
        }
    }
    let section = |name: &str| -> &[u8] {
        file.section_by_name(name)
            .map(|s| s.data().unwrap())
            .unwrap_or(&[])
    };
    let dwarf = gimli::Dwarf::load(|id| -> Result<_, gimli::Error> {
        Ok(EndianSlice::new(section(id.name()), LittleEndian))
    })
    .unwrap();
    let mut out: BTreeMap<String, FunctionDebug> = BTreeMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().unwrap() {
        let unit = dwarf.unit(header).unwrap();
        let unit_name = unit
            .name
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut entries = unit.entries();
        while let Some(die) = entries.next_dfs().unwrap() {
            if die.tag() != gimli::DW_TAG_subprogram {
                continue;
            }
            let name = match die.attr_value(gimli::DW_AT_name) {
                Some(v) => dwarf
                    .attr_string(&unit, v)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                None => panic!("subprogram without a name"),
            };
            let low = match die.attr_value(gimli::DW_AT_low_pc) {
                Some(gimli::AttributeValue::Addr(a)) => a,
                other => panic!("{name}: low_pc {other:?}"),
            };
            let size = match die.attr_value(gimli::DW_AT_high_pc) {
                Some(gimli::AttributeValue::Udata(s)) => s,
                other => panic!("{name}: high_pc {other:?}"),
            };
            let decl_line = match die.attr_value(gimli::DW_AT_decl_line) {
                Some(gimli::AttributeValue::Udata(l)) => l,
                other => panic!("{name}: decl_line {other:?}"),
            };
            assert_eq!(
                by_addr.get(&low),
                Some(&name),
                "subprogram {name} at {low:#x}"
            );
            let e = out.entry(name.clone()).or_default();
            assert!(e.unit.is_empty(), "two subprograms for {name}");
            e.unit = unit_name.clone();
            e.decl_line = decl_line;
            e.size = size;
        }
        let Some(program) = unit.line_program.clone() else {
            continue;
        };
        let mut rows = program.rows();
        let mut current: Option<(u64, String)> = None;
        while let Some((header, row)) = rows.next_row().unwrap() {
            if row.end_sequence() {
                current = None;
                continue;
            }
            let file = row
                .file(header)
                .map(|f| {
                    dwarf
                        .attr_string(&unit, f.path_name())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            let (start, name) = current.get_or_insert_with(|| {
                let name = by_addr
                    .get(&row.address())
                    .unwrap_or_else(|| panic!("line sequence at {:#x}", row.address()))
                    .clone();
                (row.address(), name)
            });
            let line = row.line().map_or(0, |l| l.get());
            out.entry(name.clone())
                .or_default()
                .rows
                .push((row.address() - *start, file, line));
        }
    }
    // `.eh_frame`: every FDE's instructions, by function.
    let eh = section(".eh_frame");
    let mut fdes: BTreeMap<u64, usize> = BTreeMap::new();
    let mut at = 0usize;
    let word = |i: usize| u32::from_le_bytes(eh[i..i + 4].try_into().unwrap());
    while at + 4 <= eh.len() && word(at) != 0 {
        let len = word(at) as usize;
        if word(at + 4) != 0 {
            let pc = u64::from_le_bytes(eh[at + 8..at + 16].try_into().unwrap());
            let range = u64::from_le_bytes(eh[at + 16..at + 24].try_into().unwrap());
            let mut cfa = eh[at + 24..at + 4 + len].to_vec();
            while cfa.last() == Some(&0) {
                cfa.pop();
            }
            let name = by_addr
                .get(&pc)
                .unwrap_or_else(|| panic!("FDE at {pc:#x} is for no function"))
                .clone();
            fdes.insert(pc, at);
            let e = out.entry(name.clone()).or_default();
            assert!(e.cfa.is_empty(), "two FDEs for {name}");
            // Functions with debug information (not `_start`, not precompiled code).
            if name != "_start" && e.size != 0 {
                assert_eq!(range, e.size, "FDE range of {name}");
            }
            e.cfa = cfa;
        }
        at += 4 + len;
    }
    check_eh_frame_hdr(&file, &fdes);
    // Compared: the functions with debug information, and `_start`. Precompiled code has none,
    // and an update may keep an archive member that nothing refers to any more.
    out.retain(|name, e| !e.unit.is_empty() || name == "_start");
    out
}

/// `.eh_frame_hdr`, what unwinders search: one entry per FDE, sorted by address, each pointing
/// at the FDE of that address: the image's own in `.eh_frame`, or one of a precompiled
/// object's `.eh_frame` placed as a section of its own (read from the loaded segments).
fn check_eh_frame_hdr(file: &object::File<'_>, fdes: &BTreeMap<u64, usize>) {
    let (Some(hdr), Some(eh)) = (
        file.section_by_name(".eh_frame_hdr"),
        file.section_by_name(".eh_frame"),
    ) else {
        assert!(fdes.is_empty(), "FDEs without .eh_frame_hdr");
        return;
    };
    let data = hdr.data().unwrap();
    let word = |i: usize| i32::from_le_bytes(data[i..i + 4].try_into().unwrap());
    assert_eq!(&data[..4], &[1, 0x1b, 0x03, 0x3b], "version and encodings");
    assert_eq!(
        hdr.address() as i64 + 4 + i64::from(word(4)),
        eh.address() as i64,
        "eh_frame_ptr"
    );
    let count = word(8) as usize;
    let in_eh = |a: u64| (eh.address()..eh.address() + eh.size()).contains(&a);
    let mut own = 0;
    let mut last = None;
    for k in 0..count {
        let pc = (hdr.address() as i64 + i64::from(word(12 + 8 * k))) as u64;
        let fde = (hdr.address() as i64 + i64::from(word(16 + 8 * k))) as u64;
        assert!(last <= Some(pc), "table sorted by address");
        last = Some(pc);
        if in_eh(fde) {
            own += 1;
            assert_eq!(
                fdes.get(&pc).map(|&at| eh.address() + at as u64),
                Some(fde),
                "table entry for {pc:#x}"
            );
        } else {
            // An object's FDE: a PC-relative 4-byte function address, as GCC writes them.
            let bytes = loaded(file, fde, 12).expect("the FDE is in a loaded segment");
            assert_ne!(
                &bytes[4..8],
                &[0; 4],
                "the entry for {pc:#x} points at a CIE"
            );
            let rel = i32::from_le_bytes(bytes[8..12].try_into().unwrap());
            assert_eq!(
                (fde + 8).wrapping_add(rel as i64 as u64),
                pc,
                "object FDE at {fde:#x}"
            );
        }
    }
    assert_eq!(own, fdes.len(), "one table entry per FDE of .eh_frame");
}

/// `len` bytes at address `addr` of the file's loaded segments.
fn loaded<'a>(file: &'a object::File<'_>, addr: u64, len: u64) -> Option<&'a [u8]> {
    use object::ObjectSegment;
    file.segments().find_map(|seg| {
        let start = seg.address();
        let data = seg.data().ok()?;
        (addr >= start && addr + len <= start + data.len() as u64)
            .then(|| &data[(addr - start) as usize..(addr - start + len) as usize])
    })
}
