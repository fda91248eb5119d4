//! Canonical PLT entries: a shared library's function whose address the executable's code
//! takes directly.
//!
//! Code built for a fixed-address executable takes a function's address as a constant
//! (`mov $puts, %edi`, `R_X86_64_32`) or PC-relatively (`lea puts(%rip)`), with no GOT
//! involved: the address must be one the executable itself knows, its PLT stub. For `&puts`
//! to be one address in the whole process (compared by the program, stored by libc), the
//! stub becomes the function's *canonical* address, as GNU ld makes it: the executable's
//! `.dynsym` gives `puts` (undefined) the stub's address as its value, which the loader binds
//! every other reference to, libc's own included. Only the stub's GOT entry must reach the
//! real function: it gets `R_X86_64_JUMP_SLOT`, whose lookup skips such a value. GOT loads of
//! the address (`mov puts@GOTPCREL(%rip)`, Cranelift's `func_addr`) become `lea` of the stub;
//! any other use of the GOT entry (a `call *`) reaches the real function, which is right.
//!
//! Whether a PC-relative field takes the address or is a call is told by the instruction:
//! `call`/`jmp rel32` (`e8`/`e9`) and `jcc rel32` (`0f 8x`) are calls, anything else takes the
//! address. The flag is sticky (until a full build), like `Symbol::direct_referred`.

use super::*;
use crate::symbols::RARE_CANONICAL;

impl Image {
    /// Whether import `id`'s PLT stub is its canonical address.
    pub(super) fn is_canonical(&self, id: SymbolId) -> bool {
        self.symbols.has_flag(id, RARE_CANONICAL)
    }

    /// Make import `id`'s PLT stub its canonical address (see the module's note); every
    /// GOT load of it is patched again to load the stub's address.
    pub(super) fn make_canonical(&mut self, id: SymbolId) -> Result<()> {
        if self.is_canonical(id) {
            return Ok(());
        }
        if self.live.is_some() {
            return Err(ImageError::ImportAddress {
                name: self.symbols.name(id),
                why: "a running process has bound its references to the library's own \
                      address (restart it)",
            });
        }
        self.symbols.set_flag(id, RARE_CANONICAL, true);
        self.touched.insert(id);
        self.canonical_late.push(id);
        Ok(())
    }

    /// Whether the PC-relative field at `p` (in code) is the operand of a call or jump, not
    /// an address taken.
    pub(super) fn is_branch_operand(&self, p: u64) -> bool {
        let before = self
            .store
            .read(self.file_offset(RegionKind::Text, p - 2), 2);
        matches!(before[..], [_, 0xe8 | 0xe9] | [0x0f, 0x80..=0x8f])
    }

    /// Patch again the referrers of imports that became canonical in this build: their GOT
    /// loads were written before anything knew.
    pub(super) fn patch_canonical_referrers(&mut self) -> Result<()> {
        let late = std::mem::take(&mut self.canonical_late);
        if late.is_empty() {
            return Ok(());
        }
        let mut sorted = late;
        sorted.sort_unstable();
        sorted.dedup();
        for site in self.sites.referring_to_any(&sorted) {
            self.patch(site)?;
        }
        Ok(())
    }

    /// A GOT load of canonical import `site.target`, if the instruction is a `mov`: `lea`
    /// of its stub instead. False if the site must use the GOT entry.
    pub(super) fn patch_canonical_got_load(&mut self, site: &Site, p: u64) -> Result<bool> {
        if !self.is_canonical(site.target) || !self.set_got_load_form(site, p, true) {
            return Ok(false);
        }
        let stub = self.ensure_plt_stub(site.target)?;
        let field = x86_64::encode(RefKind::PcRel32, stub, site.addend, p, None)
            .map_err(|value| self.overflow(site, value))?;
        let at = self.file_offset(region_of(p), p);
        self.store.write(at, field.bytes());
        self.stats.sites_patched += 1;
        Ok(true)
    }

    /// The canonical imports' stub addresses, for `.dynsym`.
    pub(super) fn canonical_value(&self, id: SymbolId) -> Option<u64> {
        if !self.is_canonical(id) {
            return None;
        }
        self.symbols.get(id).plt()
    }
}
