//! Library functions an update calls for the first time: in a new process the dynamic loader
//! fills their GOT entries at start-up; in the running one the patcher does, from the
//! libraries the process has loaded (found in `/proc/PID/maps`, their `.dynsym` read from
//! the file each was mapped from), in the executable's library order, as the loader would;
//! an indirect function (IFUNC, such as glibc's `memcpy`) by calling its resolver in the
//! process.

use object::elf;
use object::read::elf::ElfFile64;
use object::{Object, ObjectSection, ObjectSymbol};

use super::process::{Mapping, Stopped};
use zerolink_image::live::NewImport;

/// The address of `imp` in the process, or why it has none.
pub fn resolve(stopped: &Stopped, maps: &[Mapping], imp: &NewImport) -> Result<u64, String> {
    for soname in &imp.libraries {
        // The library's first mapping (file offset 0) is where its addresses start.
        let Some(m) = maps.iter().find(|m| {
            m.offset == 0
                && std::path::Path::new(&m.path)
                    .file_name()
                    .is_some_and(|f| f.to_str() == Some(soname.as_str()))
        }) else {
            continue;
        };
        let bytes = std::fs::read(&m.path).map_err(|e| format!("cannot read {}: {e}", m.path))?;
        let file = ElfFile64::<object::Endianness>::parse(&bytes[..])
            .map_err(|e| format!("cannot parse {}: {e}", m.path))?;
        let versions = file
            .section_by_name(".gnu.version")
            .and_then(|s| s.data().ok())
            .unwrap_or(&[]);
        for sym in file.dynamic_symbols() {
            // (By section index: `is_definition` does not count indirect functions.)
            if sym.name() != Ok(imp.name.as_str()) || sym.is_undefined() {
                continue;
            }
            // Of several versions, the default one (not marked hidden) is what a new link
            // binds to.
            let i = sym.index().0 * 2;
            let versym = versions
                .get(i..i + 2)
                .map_or(0, |v| u16::from_le_bytes([v[0], v[1]]));
            if versym & 0x8000 != 0 {
                continue;
            }
            let addr = m.start + sym.address();
            if sym.elf_symbol().st_type() == elf::STT_GNU_IFUNC {
                // What the loader does for an indirect function: ask its resolver.
                return match stopped.call(addr) {
                    Ok(0) => Err(format!(
                        "the resolver of this function of {soname} chose none"
                    )),
                    Ok(chosen) => Ok(chosen),
                    Err(e) => Err(format!("its resolver in {soname} failed: {e}")),
                };
            }
            return Ok(addr);
        }
    }
    Err(format!(
        "none of the libraries the process has loaded ({}) defines it",
        imp.libraries.join(", ")
    ))
}
