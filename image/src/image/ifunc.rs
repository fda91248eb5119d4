//! Indirect functions (`STT_GNU_IFUNC`) defined by precompiled objects.
//!
//! An IFUNC symbol's address is its *resolver*'s: a function that returns the address of the
//! implementation to use (glibc picks `memcpy` for the CPU this way, and so do libraries that
//! use GCC's `target_clones`). Calling the resolver's address as the function computes
//! garbage, so every reference goes where GNU ld sends it in an executable:
//! - a call, or any other reference to the address itself (PC-relative, absolute, in code
//!   or data), goes to a stub `NAME@plt`, `jmp *GOT(NAME)`: the function's canonical address,
//!   so `&f` compares equal wherever it is taken;
//! - the GOT entry holds the resolver's address and gets `R_X86_64_IRELATIVE`, which the
//!   loader resolves by calling the resolver once, after every other relocation (the
//!   relocation comes last in `.rela.dyn`); a GOT load of the address (`mov`) becomes `lea`
//!   of the stub, so it too gives the canonical address; other GOT uses (`-fno-plt`'s
//!   `call *f@GOTPCREL(%rip)`) get the resolved implementation.
//!
//! A freestanding program has no loader to call resolvers, so an IFUNC there is refused (as
//! is a new one in a running process: nothing would call its resolver).

use super::*;

impl Image {
    /// Mark `id`, defined just now, as an indirect function: its references are patched
    /// through its stub from now on.
    pub fn mark_ifunc(&mut self, id: SymbolId) -> Result<()> {
        if !self.dynamic() {
            return Err(ImageError::Ifunc {
                name: self.symbols.name(id),
                why: "a freestanding program has no dynamic loader to call its resolver (link \
                      with libc)",
            });
        }
        if !self.symbols.is_ifunc(id) {
            self.symbols.set_ifunc(id, true);
            self.touched.insert(id);
            self.patch_referrers(id);
        }
        Ok(())
    }

    /// The stub every direct reference to indirect function `target` uses (`stub_of`), made
    /// on first use (nothing refers to the stub by name: each site is written with its
    /// address).
    pub(super) fn ifunc_stub(&mut self, target: SymbolId) -> Result<u64> {
        self.stub_of(target)
    }

    /// Where references to indirect function `target` go, if its stub exists.
    pub(super) fn ifunc_stub_addr(&self, target: SymbolId) -> Option<u64> {
        let name = format!("{}@plt", self.symbols.name(target));
        self.symbols
            .lookup(&name)
            .and_then(|id| self.symbols.get(id).addr())
    }

    /// Patch a site whose target is an indirect function whose resolver is at `resolver`.
    pub(super) fn patch_ifunc_site(&mut self, site: &Site, p: u64, resolver: u64) -> Result<()> {
        let at = self.file_offset(region_of(p), p);
        match (site.kind, site.place) {
            (_, Place::GotEntry { addr }) => {
                if self
                    .live
                    .as_ref()
                    .is_some_and(|l| l.new_got.contains(&addr))
                {
                    return Err(ImageError::Ifunc {
                        name: self.symbols.name(site.target),
                        why: "a running process cannot call its resolver for a new GOT entry \
                              (restart it)",
                    });
                }
                // What `R_X86_64_IRELATIVE` calls. A running process keeps the result its
                // loader stored: nothing is logged for it.
                self.store.write(at, &resolver.to_le_bytes());
                self.stats.sites_patched += 1;
            }
            (RefKind::GotPcRel32, Place::In { .. }) if self.set_got_load_form(site, p, true) => {
                // A load of its address (`mov f@GOTPCREL(%rip)`) becomes `lea` of the stub:
                // the same address a direct reference or a pointer in data gets.
                let stub = self.ifunc_stub(site.target)?;
                let field = x86_64::encode(RefKind::PcRel32, stub, site.addend, p, None)
                    .map_err(|value| self.overflow(site, value))?;
                self.store.write(at, field.bytes());
                self.live_site(site, p, field.bytes());
                self.stats.sites_patched += 1;
            }
            (RefKind::GotPcRel32, Place::In { .. }) => {
                // Any other instruction (`call *f@GOTPCREL(%rip)`) uses the resolved address.
                self.ensure_got_entry(site.target)?;
                let got = self.got_of(site.target);
                let field = x86_64::encode(RefKind::GotPcRel32, 0, site.addend, p, got)
                    .map_err(|value| self.overflow(site, value))?;
                self.store.write(at, field.bytes());
                self.live_site(site, p, field.bytes());
                self.stats.sites_patched += 1;
            }
            (kind, Place::In { .. }) => {
                let stub = self.ifunc_stub(site.target)?;
                let field = x86_64::encode(kind, stub, site.addend, p, None)
                    .map_err(|value| self.overflow(site, value))?;
                self.store.write(at, field.bytes());
                self.live_site(site, p, field.bytes());
                self.stats.sites_patched += 1;
            }
        }
        Ok(())
    }

    /// `R_X86_64_IRELATIVE` for every indirect function's GOT entry: the resolver's address
    /// as the addend (the loader adds its base in a PIE).
    pub(super) fn irelative_relocations(&self) -> Vec<crate::dynamic::Relative> {
        self.symbols
            .ifuncs()
            .into_iter()
            .filter_map(|id| {
                let got = self.got_of(id)?;
                let resolver = self.symbols.get(id).addr()?;
                Some(crate::dynamic::Relative {
                    at: got,
                    value: resolver,
                })
            })
            .collect()
    }
}
