//! Placing what the front end compiled: a function's code and references, a data object's
//! contents, into their slots (an old one if it fits, else a new one), with the fingerprints
//! the next build compares. Calls are recorded so that `finish` checks each against its
//! callee's signature, and a function whose signature changed names the callers that must be
//! compiled again.

use std::collections::HashSet;

use zerolink_image::sites::Place;
use zerolink_image::{Contents, Reference};

use super::*;
use crate::debug::{Rows, Unwind};

/// A call in compiled code to a function of the program: its callee and the hash of the
/// signature the call was compiled with (see `clif::signature_hash`).
#[derive(Clone, Copy, Debug)]
pub struct CallSite {
    pub callee: SymbolId,
    pub signature: u64,
}

/// Where a function is in its source, for debug information.
#[derive(Clone, Debug)]
pub struct FunctionDebug {
    pub source: SourceId,
    /// The line the function starts at.
    pub line: u32,
    /// (code offset, line), sorted by offset.
    pub rows: Rows,
}

/// A compiled function, ready to place.
pub struct FunctionCode<'a> {
    pub code: &'a [u8],
    pub align: u64,
    pub refs: &'a [Reference],
    /// What it was compiled from, for the next build to compare (0: unknown).
    pub fingerprint: u64,
    /// Hash of its own signature.
    pub signature: u64,
    /// Its calls to the program's functions.
    pub calls: &'a [CallSite],
    pub debug: Option<FunctionDebug>,
    pub unwind: Option<Unwind>,
}

/// A data object, ready to place.
pub struct DataObject<'a> {
    pub contents: Contents<'a>,
    pub align: u64,
    pub writable: bool,
    /// Thread-local (`PT_TLS`): the contents are each thread's initial copy.
    pub tls: bool,
    pub refs: &'a [Reference],
    pub fingerprint: u64,
}

#[derive(Default)]
pub(super) struct Placed {
    pub(super) compiled: usize,
    /// Calls compiled in this build: (caller, call).
    calls: Vec<(SymbolId, CallSite)>,
    /// Definitions placed by this update (a second one is a duplicate).
    pub(super) defined: HashSet<SymbolId>,
    /// Functions of this update whose signature is not the one the table had.
    new_signatures: Vec<SymbolId>,
}

impl Session {
    /// Place function `id` of unit `u`. If it had another signature before, returns the
    /// functions whose code refers to it: they must be compiled again (and defined in this
    /// build) or `finish` refuses the build.
    pub fn define_function(
        &mut self,
        u: UnitId,
        id: SymbolId,
        f: FunctionCode<'_>,
    ) -> Result<Option<Vec<SymbolId>>> {
        let old_sig = if self.is_update() {
            if !self.placed.defined.insert(id) {
                return Err(self.duplicate(id));
            }
            self.units.seen.insert(id);
            let old = self.image.symbols().get(id);
            let old_sig = old.placement().map(|_| old.sig_hash).filter(|&h| h != 0);
            self.image.redefine_function(id, f.code, f.align, f.refs)?;
            old_sig
        } else {
            self.image.define_function(id, f.code, f.align, f.refs)?;
            self.units.count(u);
            None
        };
        self.image.set_hashes(id, f.fingerprint, f.signature);
        self.image.set_unit(id, Some(self.units.number(u)));
        self.placed.calls.extend(f.calls.iter().map(|&c| (id, c)));
        if self.debug_info {
            if let Some(d) = f.debug {
                self.set_function_debug(id, d);
            }
            if let Some(p) = self.image.symbols().get(id).placement() {
                if let Some(info) = f.unwind {
                    self.debug.frames.push((p.slot.addr, info));
                }
            }
        }
        self.placed.compiled += 1;
        if old_sig.is_some_and(|h| h != f.signature) {
            self.placed.new_signatures.push(id);
            return Ok(Some(self.callers_of(id)));
        }
        Ok(None)
    }

    /// Place data object `id` of unit `u`.
    pub fn define_data(&mut self, u: UnitId, id: SymbolId, d: DataObject<'_>) -> Result<()> {
        let update = self.is_update();
        if update {
            if !self.placed.defined.insert(id) {
                return Err(self.duplicate(id));
            }
            self.units.seen.insert(id);
        }
        match (d.tls, update) {
            // In its slot if it fits, else in a new one (the TLS region is always "re"-defined).
            (true, _) => self
                .image
                .define_tls_data(id, d.contents, d.align, d.refs)?,
            (false, true) => self
                .image
                .redefine_data(id, d.contents, d.align, d.writable, d.refs)?,
            (false, false) => self
                .image
                .define_data(id, d.contents, d.align, d.writable, d.refs)?,
        }
        // Full builds count definitions as they define them (updates, as they check them).
        if !update {
            self.units.count(u);
        }
        self.image.set_hashes(id, d.fingerprint, 0);
        self.image.set_unit(id, Some(self.units.number(u)));
        self.placed.compiled += 1;
        Ok(())
    }

    pub(super) fn duplicate(&self, id: SymbolId) -> BackendError {
        BackendError::Image(zerolink_image::ImageError::DuplicateDefinition(
            self.image.symbols().name(id),
        ))
    }

    /// The functions whose code refers to `id`, each once.
    pub fn callers_of(&self, id: SymbolId) -> Vec<SymbolId> {
        let mut callers: Vec<SymbolId> = self
            .image
            .referrers(id)
            .into_iter()
            .filter_map(|s| match self.image.sites().get(s).place {
                Place::In { owner, .. } => Some(owner),
                _ => None,
            })
            .filter(|&owner| self.image.symbols().get(owner).kind() == SymbolKind::Function)
            .collect();
        callers.sort_unstable();
        callers.dedup();
        callers
    }

    /// The first call compiled in this build whose signature differs from its callee's:
    /// (caller, callee). A front end that can say more than `finish` would (the source line
    /// of both signatures) asks before finishing.
    pub fn mismatched_call(&self) -> Option<(SymbolId, SymbolId)> {
        self.placed.calls.iter().find_map(|(caller, c)| {
            let defined = self.image.symbols().get(c.callee).sig_hash;
            (defined != 0 && defined != c.signature).then_some((*caller, c.callee))
        })
    }

    /// Every call compiled against its callee's signature, and every caller of a function
    /// whose signature changed compiled again.
    pub(super) fn check_signatures(&self) -> Result<()> {
        let name = |id| self.image.symbols().name(id);
        if let Some((caller, callee)) = self.mismatched_call() {
            return Err(BackendError::CallSignature {
                caller: name(caller),
                callee: name(callee),
            });
        }
        for &callee in &self.placed.new_signatures {
            if let Some(caller) = self
                .callers_of(callee)
                .into_iter()
                .find(|c| !self.placed.defined.contains(c))
            {
                return Err(BackendError::StaleCaller {
                    caller: name(caller),
                    callee: name(callee),
                });
            }
        }
        Ok(())
    }
}
