//! Reference sites: every place in the image whose bytes depend on some symbol's address.
//!
//! Sites are indexed by *owner*, in the persisted records themselves, so an update reaches
//! them without building anything: the sites inside a function or data object occupy one
//! contiguous range of the site array, with spare room like a slot, recorded in the owner's
//! symbol record; moving the owner re-patches exactly that range.
//!
//! They are *not* indexed by target. A function that outgrows its slot in an update leaves a
//! `jmp` to its new place at its old entry (`Image::redefine`), so no reference to it ever
//! changes, and what a move costs is its own sites, not its referrers. Each symbol only counts
//! its referrers (`Symbol::refs`: whether anything still needs it). Finding them is a scan of
//! the array, on the rare paths that need them (a data object or a precompiled section that
//! moved, an import resolved, a changed signature, an undefined name to report), once per
//! build for all such symbols together.
//!
//! GOT entries are sites too: an 8-byte absolute field in the GOT whose target is the symbol
//! whose address it holds.

use crate::symbols::{SymbolId, SymbolTable};
use crate::table::Records;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SiteId(pub u32);

/// What a site computes, in the usual ELF notation (S: target, A: addend, P: the site's address,
/// G: the address of the target's GOT entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// `S + A - P` in 4 bytes (calls, RIP-relative addressing).
    PcRel32,
    /// `S + A` in 4 bytes, zero-extended.
    Abs32,
    /// `S + A` in 8 bytes.
    Abs64,
    /// `G + A - P` in 4 bytes; the GOT entry holds `S`.
    GotPcRel32,
    /// `S + A` in 4 bytes, sign-extended by its instruction (`R_X86_64_32S`): below 2 GiB.
    Abs32S,
    /// `S + A - P` in 8 bytes (`R_X86_64_PC64`).
    PcRel64,
    /// `S + A - GOT` in 8 bytes, from the GOT's base (`_GLOBAL_OFFSET_TABLE_`,
    /// `R_X86_64_GOTOFF64`).
    GotOff64,
    /// A thread-local's address by the general-dynamic sequence (`lea rdi, [rip + x@tlsgd]`
    /// then `call __tls_get_addr`, 16 bytes; the site is the `lea`'s displacement), rewritten
    /// to local-exec as ld does for the executable's own thread-locals: `mov rax, fs:0;
    /// lea rax, [rax + tpoff(x)]`.
    TlsGdToLe,
    /// `tpoff(S) + A` in 4 bytes: the thread-local's offset from the thread pointer
    /// (`R_X86_64_TPOFF32`, and `DTPOFF32` after a local-dynamic sequence became local-exec).
    TpOff32,
    /// `mov reg, [rip + x@gottpoff]` (or `add`) rewritten to `mov reg, tpoff(x)` (or `add`),
    /// as ld relaxes initial-exec to local-exec (`R_X86_64_GOTTPOFF`; the site is the
    /// displacement, the three bytes before it the instruction).
    GotTpOffToLe,
    /// The local-dynamic sequence `lea rdi, [rip + x@tlsld]; call __tls_get_addr` (12 bytes
    /// from three before the site) rewritten to `mov rax, fs:0` (`R_X86_64_TLSLD`).
    TlsLdToLe,
}

impl RefKind {
    pub fn name(self) -> &'static str {
        match self {
            RefKind::PcRel32 => "PcRel32",
            RefKind::Abs32 => "Abs32",
            RefKind::Abs64 => "Abs64",
            RefKind::GotPcRel32 => "GotPcRel32",
            RefKind::Abs32S => "Abs32S",
            RefKind::PcRel64 => "PcRel64",
            RefKind::GotOff64 => "GotOff64",
            RefKind::TlsGdToLe => "TlsGdToLe",
            RefKind::TpOff32 => "TpOff32",
            RefKind::GotTpOffToLe => "GotTpOffToLe",
            RefKind::TlsLdToLe => "TlsLdToLe",
        }
    }

    pub fn width(self) -> u32 {
        match self {
            RefKind::Abs64 | RefKind::PcRel64 | RefKind::GotOff64 => 8,
            // The displacement and the call after it (the four bytes before are the site's
            // offset minus 4: checked when patching).
            RefKind::TlsGdToLe => 12,
            // The displacement and the call after it (three bytes before: checked).
            RefKind::TlsLdToLe => 9,
            _ => 4,
        }
    }

    fn code(self) -> u8 {
        match self {
            RefKind::PcRel32 => 0,
            RefKind::Abs32 => 1,
            RefKind::Abs64 => 2,
            RefKind::GotPcRel32 => 3,
            RefKind::Abs32S => 4,
            RefKind::PcRel64 => 5,
            RefKind::GotOff64 => 6,
            RefKind::TlsGdToLe => 7,
            RefKind::TpOff32 => 8,
            RefKind::GotTpOffToLe => 9,
            RefKind::TlsLdToLe => 10,
        }
    }

    fn from_code(c: u8) -> RefKind {
        match c {
            1 => RefKind::Abs32,
            2 => RefKind::Abs64,
            3 => RefKind::GotPcRel32,
            4 => RefKind::Abs32S,
            5 => RefKind::PcRel64,
            6 => RefKind::GotOff64,
            7 => RefKind::TlsGdToLe,
            8 => RefKind::TpOff32,
            9 => RefKind::GotTpOffToLe,
            10 => RefKind::TlsLdToLe,
            _ => RefKind::PcRel32,
        }
    }
}

/// A relocation as the producer of a function or data object states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    /// Offset of the field inside the owner's bytes.
    pub offset: u32,
    pub kind: RefKind,
    pub target: SymbolId,
    pub addend: i64,
}

/// Where a site's field lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Inside a function or data object, at an offset from its start.
    In { owner: SymbolId, offset: u32 },
    /// A GOT entry at a fixed address.
    GotEntry { addr: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    pub place: Place,
    pub kind: RefKind,
    pub target: SymbolId,
    pub addend: i64,
}

// Place codes; 0 marks a dead record.
const IN: u32 = 1;
const GOT: u32 = 2;
/// `offset_kind` holds the offset in its low 26 bits (a site lies in the first 64 MiB of its
/// owner: checked when a definition is placed), then the kind (4 bits) and the place (2 bits).
const OFFSET_BITS: u32 = 26;
const OFFSET_MASK: u32 = (1 << OFFSET_BITS) - 1;
const KIND_BITS: u32 = 4;
/// The highest offset a site may have inside its owner.
pub const MAX_SITE_OFFSET: u32 = OFFSET_MASK;

/// One site, as stored in the table (16 bytes, no padding). What each field buys: `owner`
/// (or the GOT entry's address) and the offset locate the field and name the symbol whose
/// code holds it (for re-checking callers); `target` and the addend say what to write there.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SiteRecord {
    /// The owning symbol, or for a GOT entry its address (below 4 GiB).
    owner: u32,
    offset_kind: u32,
    target: u32,
    /// Addends are 32-bit: every address is below 4 GiB (checked when a site is made).
    addend: i32,
}

// SAFETY: `repr(C)`, integers only, no padding (size checked).
unsafe impl object::pod::Pod for SiteRecord {}
const _: () = assert!(std::mem::size_of::<SiteRecord>() == 16);

impl SiteRecord {
    fn new(place: u32, owner: u32, offset: u32, kind: RefKind, target: u32, addend: i64) -> Self {
        debug_assert!(offset <= OFFSET_MASK);
        SiteRecord {
            owner,
            offset_kind: (offset & OFFSET_MASK)
                | (u32::from(kind.code()) << OFFSET_BITS)
                | (place << (OFFSET_BITS + KIND_BITS)),
            target,
            // Checked by the image before any site is made (`ImageError::AddendTooWide`).
            addend: addend as i32,
        }
    }

    fn place_code(&self) -> u32 {
        self.offset_kind >> (OFFSET_BITS + KIND_BITS)
    }

    fn kind(&self) -> RefKind {
        RefKind::from_code(((self.offset_kind >> OFFSET_BITS) & ((1 << KIND_BITS) - 1)) as u8)
    }

    fn site(&self) -> Option<Site> {
        let offset = self.offset_kind & OFFSET_MASK;
        let place = match self.place_code() {
            IN => Place::In {
                owner: SymbolId(self.owner),
                offset,
            },
            GOT => Place::GotEntry {
                addr: u64::from(self.owner),
            },
            _ => return None,
        };
        Some(Site {
            place,
            kind: self.kind(),
            target: SymbolId(self.target),
            addend: i64::from(self.addend),
        })
    }
}

/// How a site marks its target (`Symbol::mark_referred`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// A thread-local kind.
    pub tls: bool,
    /// An 8-byte absolute field.
    pub abs: bool,
    /// A field that holds the target's address itself, not a GOT entry's: PC-relative or
    /// 32-bit absolute.
    pub direct: bool,
}

fn marks(kind: RefKind) -> Marks {
    Marks {
        tls: matches!(
            kind,
            RefKind::TlsGdToLe | RefKind::GotTpOffToLe | RefKind::TpOff32 | RefKind::TlsLdToLe
        ),
        abs: kind == RefKind::Abs64,
        direct: matches!(
            kind,
            RefKind::PcRel32 | RefKind::Abs32 | RefKind::Abs32S | RefKind::PcRel64
        ),
    }
}

#[derive(Default)]
pub struct Sites {
    records: Records<SiteRecord>,
    live: u32,
    /// In a fresh build, new sites are counted at their targets in bulk (`count_pending`): the
    /// first record not counted yet. `None`: each site is counted as it is made.
    pending_from: Option<u32>,
}

impl Sites {
    pub fn restore(records: Records<SiteRecord>, live: u32) -> Self {
        Sites {
            records,
            live,
            pending_from: None,
        }
    }

    /// Sites for a fresh build: counted at their targets only when something asks (see
    /// `count_pending`).
    pub fn deferred() -> Self {
        Sites {
            pending_from: Some(0),
            ..Sites::default()
        }
    }

    /// Count what is pending, and every site made from now on as it is made.
    pub fn count_from_now_on(&mut self, syms: &mut SymbolTable) {
        self.count_pending(syms);
        self.pending_from = None;
    }

    /// Count every site made since the last call at its target, as counting each when it
    /// was made would have. Instead of a random read and write of the target's record per
    /// site, one pass over the new sites into an array of a `u32` per symbol that stays in
    /// the cache, and one pass over the symbols. Must run before anything reads a count.
    pub fn count_pending(&mut self, syms: &mut SymbolTable) {
        let Some(from) = self.pending_from else {
            return;
        };
        let to = self.records.len() as u32;
        self.pending_from = Some(to);
        if from >= to {
            return;
        }
        let n = syms.len();
        let mut counts = vec![0u32; n];
        let mut marked: Vec<(usize, Marks)> = Vec::new();
        let mut direct = vec![false; n];
        for id in from..to {
            let rec = self.records.get(id);
            let t = rec.target as usize;
            if rec.place_code() != IN || t >= n {
                continue;
            }
            counts[t] += 1;
            let m = marks(rec.kind());
            if m.tls || m.abs {
                marked.push((t, m));
            }
            // Most sites are direct (every call): a bit per symbol, not a list entry each.
            direct[t] |= m.direct;
        }
        for (t, &c) in counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let mut sym = syms.get(SymbolId(t as u32));
            sym.refs += c;
            sym.mark_referred(Marks {
                direct: direct[t],
                ..Marks::default()
            });
            syms.set(SymbolId(t as u32), sym);
        }
        for (t, m) in marked {
            let mut sym = syms.get(SymbolId(t as u32));
            sym.mark_referred(m);
            syms.set(SymbolId(t as u32), sym);
        }
    }

    /// Replace the sites inside `owner` by `refs`; returns the new sites' ids and the targets
    /// that lost a referrer. Reuses the owner's range when it is big enough.
    pub fn set_owned(
        &mut self,
        syms: &mut SymbolTable,
        owner: SymbolId,
        refs: &[Reference],
    ) -> (Vec<SiteId>, Vec<SymbolId>) {
        let before = syms.get(owner);
        if before.sites_cap > 0 {
            // Its old sites are uncounted, or its new ones go into its old range (below what
            // is pending): the counts must be complete first, and the owner's own record
            // read after, since counting may change its own count.
            self.count_pending(syms);
        }
        let sym = syms.get(owner);
        let mut old_targets = Vec::new();
        for i in sym.sites_first..sym.sites_first + sym.sites_cap {
            if let Some(site) = self.records.get(i).site() {
                old_targets.push(site.target);
                self.uncount(syms, i);
            }
        }
        // Uncounting may have changed the owner's own count (a recursive call).
        let mut sym = syms.get(owner);
        let n = refs.len() as u32;
        if n > sym.sites_cap {
            // A new range at the end, with an eighth spare; the old one stays dead. Edits
            // rarely add references, and a range that overflows only costs records at the end.
            let cap = n + n / 8;
            sym.sites_first = self.records.len() as u32;
            sym.sites_cap = cap;
            for _ in 0..cap {
                self.records.push(SiteRecord::default());
            }
        }
        syms.set(owner, sym);
        let mut ids = Vec::with_capacity(refs.len());
        for (k, r) in refs.iter().enumerate() {
            let id = sym.sites_first + k as u32;
            self.records.set(
                id,
                SiteRecord::new(IN, owner.0, r.offset, r.kind, r.target.0, r.addend),
            );
            self.live += 1;
            if self.pending_from.is_none_or(|from| id < from) {
                self.count(syms, id);
            }
            ids.push(SiteId(id));
        }
        (ids, old_targets)
    }

    /// The site of `target`'s GOT entry at `addr`.
    pub fn add_got_entry(&mut self, syms: &mut SymbolTable, target: SymbolId, addr: u64) -> SiteId {
        // GOT addresses are below 4 GiB like every address of the image.
        let addr = u32::try_from(addr).expect("GOT addresses are below 4 GiB");
        let id = self
            .records
            .push(SiteRecord::new(GOT, addr, 0, RefKind::Abs64, target.0, 0));
        // GOT entries are not counted (`count_pending` passes them by).
        self.live += 1;
        syms.set_got_site(target, id + 1);
        SiteId(id)
    }

    fn count(&mut self, syms: &mut SymbolTable, id: u32) {
        let rec = self.records.get(id);
        if rec.place_code() != IN {
            return;
        }
        let target = SymbolId(rec.target);
        let mut sym = syms.get(target);
        sym.refs += 1;
        sym.mark_referred(marks(rec.kind()));
        syms.set(target, sym);
    }

    fn uncount(&mut self, syms: &mut SymbolTable, id: u32) {
        let rec = self.records.get(id);
        if rec.place_code() == IN {
            let target = SymbolId(rec.target);
            let mut sym = syms.get(target);
            sym.refs = sym.refs.saturating_sub(1);
            syms.set(target, sym);
        }
        self.records.set(id, SiteRecord::default());
        self.live -= 1;
    }

    /// Whether `id` is a live site (not a dead record or a spare one of a range).
    pub fn is_live(&self, id: SiteId) -> bool {
        self.records.get(id.0).site().is_some()
    }

    pub fn get(&self, id: SiteId) -> Site {
        self.records.get(id.0).site().unwrap_or(Site {
            place: Place::GotEntry { addr: 0 },
            kind: RefKind::Abs64,
            target: SymbolId(0),
            addend: 0,
        })
    }

    /// The live sites whose target is one of `targets` (sorted), in site order: a scan of
    /// the whole array, for the rare paths that need referrers (see the module's comment).
    pub fn referring_to_any(&self, targets: &[SymbolId]) -> Vec<SiteId> {
        let mut out = Vec::new();
        if targets.is_empty() {
            return out;
        }
        for i in 0..self.records.len() as u32 {
            let r = self.records.get(i);
            if r.place_code() != 0 && targets.binary_search(&SymbolId(r.target)).is_ok() {
                out.push(SiteId(i));
            }
        }
        out
    }

    /// Sites inside `owner`'s bytes.
    pub fn owned_by(&self, syms: &SymbolTable, owner: SymbolId) -> Vec<SiteId> {
        let s = syms.get(owner);
        (s.sites_first..s.sites_first + s.sites_cap)
            .map(SiteId)
            .take_while(|&i| self.is_live(i))
            .collect()
    }

    /// Live sites.
    pub fn len(&self) -> usize {
        self.live as usize
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Every live site that holds an absolute address (a GOT entry, an `Abs*` field): what a
    /// PIE's loader relocates. Decodes each record's kind only, so the common PC-relative
    /// sites cost a load and a compare.
    pub fn absolute(&self) -> Vec<(SiteId, Site)> {
        let mut out = Vec::new();
        for i in 0..self.records.len() as u32 {
            let r = self.records.get(i);
            let place = r.place_code();
            let kind = r.kind();
            let absolute = matches!(kind, RefKind::Abs64 | RefKind::Abs32 | RefKind::Abs32S);
            if place == GOT || (place == IN && absolute) {
                if let Some(site) = r.site() {
                    out.push((SiteId(i), site));
                }
            }
        }
        out
    }

    pub fn records(&self) -> &Records<SiteRecord> {
        &self.records
    }

    pub fn damaged(&self) -> bool {
        self.records.damaged()
    }

    /// Every live site. Reads the whole array: for `inspect`, not for updates.
    pub fn iter(&self) -> impl Iterator<Item = Site> + '_ {
        (0..self.records.len() as u32).filter_map(|i| self.records.get(i).site())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::{Binding, SymbolKind};

    /// The counts `count_pending` makes in bulk are the ones counting each site as it is
    /// made gives: with owners defined again, GOT entries, a count in the middle and later
    /// rounds. And a scan finds exactly the live sites of a target.
    #[test]
    fn bulk_counting_gives_the_counts_of_counting_each_site() {
        let mut syms = [SymbolTable::default(), SymbolTable::default()];
        for t in &mut syms {
            for i in 0..40 {
                t.declare(&format!("s{i}"), SymbolKind::Function, Binding::Global)
                    .unwrap();
            }
        }
        let mut sites = [Sites::default(), Sites::deferred()];
        let mut seed = 0x1234_5678_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let kinds = [RefKind::PcRel32, RefKind::Abs64, RefKind::TpOff32];
        for round in 0..3 {
            for step in 0..200 {
                let owner = SymbolId((next() % 40) as u32);
                let refs: Vec<Reference> = (0..next() % 5)
                    .map(|k| Reference {
                        offset: k as u32 * 8,
                        kind: kinds[(next() % 3) as usize],
                        target: SymbolId((next() % 40) as u32),
                        addend: -4,
                    })
                    .collect();
                let got = (step % 17 == 0).then(|| SymbolId((next() % 40) as u32));
                for (s, t) in sites.iter_mut().zip(syms.iter_mut()) {
                    s.set_owned(t, owner, &refs);
                    if let Some(g) = got {
                        s.add_got_entry(t, g, 0x5000_0000 + 8 * step);
                    }
                }
            }
            let (b, sb) = (&mut sites[1], &mut syms[1]);
            b.count_pending(sb);
            for t in 0..40 {
                let id = SymbolId(t);
                let (x, y) = (syms[0].get(id), syms[1].get(id));
                assert_eq!(
                    (x.refs, x.tls_referred(), x.abs_referred()),
                    (y.refs, y.tls_referred(), y.abs_referred()),
                    "round {round}, symbol {t}"
                );
                let found = sites[0].referring_to_any(&[id]);
                let in_code = found
                    .iter()
                    .filter(|&&s| matches!(sites[0].get(s).place, Place::In { .. }))
                    .count();
                assert_eq!(in_code as u32, x.refs, "round {round}, symbol {t}");
                assert!(found.iter().all(|&s| sites[0].get(s).target == id));
            }
        }
        assert_eq!(sites[0].len(), sites[1].len());
    }
}
