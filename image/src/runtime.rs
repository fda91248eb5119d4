//! The freestanding runtime as a relocatable object, for the separate-link reference path.
//!
//! A zerolink executable gets `_start` and the built-in functions from [`crate::x86_64`]
//! directly. A program built the separate way (cranelift-object, then `cc`/`ld`) needs the very
//! same machine code, so this module packages those stubs into a `.o` file that the system
//! linker takes beside the program's own objects. One source of bytes, two ways to link them.

use object::write::{Object, Relocation, StandardSection, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationEncoding, RelocationFlags, RelocationKind,
    SymbolFlags, SymbolKind, SymbolScope,
};

use crate::x86_64::{Stub, BUILTINS, START};

/// Bytes of `runtime.o`. Freestanding: `_start` and every built-in. Linked with libc: only the
/// `zl_*` built-ins, since libc brings `_start` (through `cc`) and the `mem*` functions.
pub fn relocatable_object(freestanding: bool) -> Result<Vec<u8>, object::write::Error> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = obj.section_id(StandardSection::Text);
    let stubs: Vec<&Stub> = if freestanding {
        std::iter::once(&START).chain(BUILTINS.iter()).collect()
    } else {
        BUILTINS
            .iter()
            .filter(|s| s.name.starts_with("zl_"))
            .collect()
    };
    for stub in stubs {
        let offset = obj.append_section_data(text, stub.code, 16);
        obj.add_symbol(Symbol {
            name: stub.name.as_bytes().to_vec(),
            value: offset,
            size: stub.code.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        for &(at, target) in stub.calls {
            let symbol = obj.add_symbol(Symbol {
                name: target.as_bytes().to_vec(),
                value: 0,
                size: 0,
                kind: SymbolKind::Text,
                scope: SymbolScope::Unknown,
                weak: false,
                section: SymbolSection::Undefined,
                flags: SymbolFlags::None,
            });
            obj.add_relocation(
                text,
                Relocation {
                    offset: offset + u64::from(at),
                    symbol,
                    addend: -4,
                    flags: RelocationFlags::Generic {
                        kind: RelocationKind::Relative,
                        encoding: RelocationEncoding::X86Branch,
                        size: 32,
                    },
                },
            )?;
        }
    }
    obj.write()
}
