//! DWARF for `-g`: one compile unit per CLIF file, one subprogram per function with its address
//! range, and a line table mapping every instruction to its line in the `.clif` file, so `gdb`
//! can `break FILE.clif:LINE`, `list`, `step` and `next` through CLIF.
//!
//! Lines reach the machine code through Cranelift's source locations: the driver sets each
//! instruction's source location to its line in the file, and Cranelift reports, for every
//! range of emitted code, the location it came from.

use std::path::{Path, PathBuf};

use gimli::write::{
    Address, AttributeValue, Dwarf, EndianVec, LineProgram, LineString, Sections, Unit,
};
use gimli::{Encoding, Format, LineEncoding, LittleEndian};

use crate::error::{BackendError, Result};

/// What the line table needs to know about one placed function.
pub struct FunctionLines {
    pub name: String,
    pub file: usize,
    /// Line of the `function` keyword.
    pub line: u32,
    pub addr: u64,
    pub size: u64,
    /// (code offset, line), sorted by offset.
    pub rows: Vec<(u32, u32)>,
}

/// `.debug_*` sections (name, bytes) for `functions` of `files`.
pub fn sections(files: &[PathBuf], functions: &[FunctionLines]) -> Result<Vec<(String, Vec<u8>)>> {
    let encoding = Encoding {
        format: Format::Dwarf32,
        version: 5,
        address_size: 8,
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let bytes = |p: &Path| p.as_os_str().as_encoded_bytes().to_vec();
    let mut dwarf = Dwarf::new();
    for (index, path) in files.iter().enumerate() {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = match dir {
            Some(d) if d.is_absolute() => d.to_path_buf(),
            Some(d) => cwd.join(d),
            None => cwd.clone(),
        };
        let name = path
            .file_name()
            .map_or_else(Vec::new, |n| n.as_encoded_bytes().to_vec());
        let mut program = LineProgram::new(
            encoding,
            LineEncoding::default(),
            LineString::String(bytes(&cwd)),
            Some(LineString::String(bytes(&dir))),
            LineString::String(name.clone()),
            None,
        );
        // Directory 0 is the working directory (DWARF 5): the file gets its own entry.
        let dir_id = program.add_directory(LineString::String(bytes(&dir)));
        let file_id = program.add_file(LineString::String(name), dir_id, None);
        let mut unit = Unit::new(encoding, program);
        let root = unit.root();
        let cu = unit.get_mut(root);
        cu.set(gimli::DW_AT_name, AttributeValue::String(bytes(path)));
        cu.set(gimli::DW_AT_comp_dir, AttributeValue::String(bytes(&cwd)));
        cu.set(
            gimli::DW_AT_producer,
            AttributeValue::String(b"zerolink".to_vec()),
        );
        cu.set(
            gimli::DW_AT_language,
            AttributeValue::Language(gimli::DW_LANG_Mips_Assembler),
        );
        cu.set(
            gimli::DW_AT_low_pc,
            AttributeValue::Address(Address::Constant(0)),
        );
        for f in functions.iter().filter(|f| f.file == index) {
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
            // The prologue has no source location of its own: it belongs to the `function`
            // line, as a C compiler's belongs to the function's opening line.
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
        dwarf.units.add(unit);
    }
    let mut out = Sections::new(EndianVec::new(LittleEndian));
    dwarf.write(&mut out).map_err(|e| BackendError::Compile {
        function: "(debug info)".into(),
        message: e.to_string(),
    })?;
    let mut result = Vec::new();
    out.for_each(|id, data| {
        if !data.slice().is_empty() {
            result.push((id.name().to_string(), data.slice().to_vec()));
        }
        Ok::<(), gimli::write::Error>(())
    })
    .map_err(|e| BackendError::Compile {
        function: "(debug info)".into(),
        message: e.to_string(),
    })?;
    Ok(result)
}

/// `.eh_frame` for the placed functions: the ISA's common entry and one FDE per function,
/// with absolute addresses (the image adds `.eh_frame_hdr`).
pub fn eh_frame(
    isa: &dyn cranelift_codegen::isa::TargetIsa,
    frames: &[(u64, cranelift_codegen::isa::unwind::systemv::UnwindInfo)],
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
        .map_err(|e| BackendError::Compile {
            function: "(unwind tables)".into(),
            message: e.to_string(),
        })?;
    Ok(Some(out.0.into_vec()))
}
