//! Copy relocations: a shared library's data object that code reaches directly.
//!
//! Code compiled for an executable (GCC's default `-fPIE`, or `-fno-pic`) reads a data object
//! it does not define as if the executable defined it: `mov stdout(%rip), %rcx` with
//! `R_X86_64_PC32 stdout`, or `mov $optarg, %eax` with `R_X86_64_32`. No GOT is involved, so
//! the object must live in the executable. The psABI's answer, which GNU ld, gold, lld and mold
//! all give, is a *copy relocation*: the executable reserves the object's size in its `.bss`,
//! exports the name from `.dynsym` as defined there, and asks the loader with `R_X86_64_COPY`
//! to copy the library's initial value in. The loader's search order puts the executable
//! first, so the library's own references (through its GOT) bind to the copy too: there is
//! one `stdout`, and it is the executable's.
//!
//! Here a copy is a placed data symbol of the image (so every site, GOT entries included,
//! patches to it like to any other, and GOT loads relax to `lea`) with [`Rare::copy`] naming
//! the library. It is decided when the import is resolved: a data object with a direct site
//! (`Symbol::direct_referred`, sticky) is copied, one reached only through the GOT stays an
//! import. An update that adds the first direct reference to an existing import turns it into
//! a copy and re-patches its referrers; one that removes the last keeps the copy (still
//! right); one that removes every reference drops it; a definition of the name by the program
//! replaces it.
//!
//! The library's other names for the same bytes (`environ`, `__environ`, `_environ`) are
//! exported at the copy too, as lld and mold do: glibc reads `__environ`, and would otherwise
//! read its own original. Versions are not written (the executable has no `DT_VERNEED`): an
//! unversioned reference binds to the library's base version of the name, as for every other
//! import, and a library's versioned reference binds to an unversioned definition.
//!
//! [`Rare::copy`]: crate::symbols::Rare

use super::*;

impl Image {
    /// What a shared library says about `name`, if it exports it.
    pub(super) fn export_of(&self, name: &str) -> Option<Export> {
        self.resolver.as_ref().and_then(|r| r(name))
    }

    /// Whether the import `id` must become a copy: a library's data object that some site
    /// reaches directly.
    pub(super) fn wants_copy(&self, id: SymbolId, export: &Export) -> bool {
        export.object.is_some() && self.symbols.get(id).direct_referred()
    }

    /// Make `id` a copy of `library`'s data object: a zero-filled slot of its size and
    /// alignment in `.bss` that the loader fills (`R_X86_64_COPY`, written with the loader's
    /// tables). Every reference is patched against the copy at the end of the build.
    pub(super) fn make_copy(
        &mut self,
        id: SymbolId,
        library: u32,
        object: &ObjectExport,
    ) -> Result<()> {
        let name = self.symbols.name(id);
        if object.size == 0 {
            return Err(ImageError::Copy {
                name,
                why: "the library gives it no size",
            });
        }
        if self.live.is_some() {
            // The loader copied the library's value at start-up; nothing would copy it now.
            return Err(ImageError::Copy {
                name,
                why: "a running process cannot get a new copy of a library's data object \
                      (restart it)",
            });
        }
        let mut sym = self.symbols.get(id);
        if sym.import().is_some() {
            sym.set_import(None);
            self.imports.retain(|&i| i != id);
        }
        self.symbols.set(id, sym);
        let align = object.align.clamp(1, PAGE);
        self.place_new(
            id,
            RegionKind::Bss,
            Contents::Zeros(object.size),
            align,
            &[],
            true,
        )?;
        self.symbols.set_copy_of(id, Some(library));
        self.stats.copies += 1;
        self.patch_referrers(id);
        Ok(())
    }

    /// A copy stops being one: its slot is freed (the caller defines the name, or nothing
    /// refers to it any more).
    pub(super) fn drop_copy(&mut self, id: SymbolId) {
        if self.symbols.copy_of(id).is_some() {
            // (`unplace` forgets that it was a copy.)
            self.unplace(id);
        }
    }

    /// The `.dynsym` entries of the copies: each copy's name with `R_X86_64_COPY`, then the
    /// library's other names for it, all defined at the copy in `.bss`.
    pub(super) fn copy_exports(&self) -> Vec<CopyExport> {
        let mut out = Vec::new();
        for id in self.symbols.copies() {
            let sym = self.symbols.get(id);
            let (Some(p), Some(library)) = (sym.placement(), self.symbols.copy_of(id)) else {
                continue;
            };
            let name = self.symbols.name(id);
            let aliases = self
                .export_of(&name)
                .and_then(|e| e.object)
                .map(|o| o.aliases)
                .unwrap_or_default();
            out.push(CopyExport {
                name,
                addr: p.slot.addr,
                size: p.size,
                library,
                copy: true,
            });
            for alias in aliases {
                out.push(CopyExport {
                    name: alias,
                    addr: p.slot.addr,
                    size: p.size,
                    library,
                    copy: false,
                });
            }
        }
        out
    }
}

/// One name the executable exports for a copy (see [`Image::copy_exports`]).
pub(super) struct CopyExport {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    pub library: u32,
    /// The entry the `R_X86_64_COPY` names (aliases get none: one copy per object).
    pub copy: bool,
}
