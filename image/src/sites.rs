//! Reference sites: every place in the image whose bytes depend on some symbol's address.
//!
//! Sites are indexed twice, both in the persisted records themselves, so an update reaches
//! them without building anything:
//! - by *owner*: the sites inside a function or data object occupy one contiguous range of the
//!   site array, with spare room like a slot, recorded in the owner's symbol record; moving the
//!   owner re-patches exactly that range;
//! - by *target*: every site is a node of a doubly linked list that starts at its target's
//!   symbol record; moving a symbol walks that list, so it costs the number of places that
//!   refer to it, not a scan of the image. Adding or removing a site is O(1).
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

/// One site, as stored in the table (24 bytes, no padding). What each field buys: `owner`
/// (or the GOT entry's address) and the offset locate the field and name the symbol whose
/// code holds it (for re-checking callers); `target` and the addend say what to write there;
/// `next`/`prev` make it a node of the target's referrer list, so a move costs its referrers
/// and a removal is O(1).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SiteRecord {
    /// The owning symbol, or for a GOT entry its address (below 4 GiB).
    owner: u32,
    offset_kind: u32,
    target: u32,
    /// Addends are 32-bit: every address is below 4 GiB (checked when a site is made).
    addend: i32,
    /// Neighbours in the target's list, plus one (0: none).
    next: u32,
    prev: u32,
}

// SAFETY: `repr(C)`, integers only, no padding (size checked).
unsafe impl object::pod::Pod for SiteRecord {}
const _: () = assert!(std::mem::size_of::<SiteRecord>() == 24);

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
            next: 0,
            prev: 0,
        }
    }

    fn site(&self) -> Option<Site> {
        let offset = self.offset_kind & OFFSET_MASK;
        let place = match self.offset_kind >> (OFFSET_BITS + KIND_BITS) {
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
            kind: RefKind::from_code(
                ((self.offset_kind >> OFFSET_BITS) & ((1 << KIND_BITS) - 1)) as u8,
            ),
            target: SymbolId(self.target),
            addend: i64::from(self.addend),
        })
    }
}

#[derive(Default)]
pub struct Sites {
    records: Records<SiteRecord>,
    live: u32,
    /// In a fresh build, new sites join their targets' lists in bulk (`link_pending`): the
    /// first record not linked yet. `None`: each site is linked as it is made.
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

    /// Sites for a fresh build: linked into their targets' lists only when something walks
    /// the lists (see `link_pending`).
    pub fn deferred() -> Self {
        Sites {
            pending_from: Some(0),
            ..Sites::default()
        }
    }

    /// Link what is pending, and every site made from now on as it is made.
    pub fn link_from_now_on(&mut self, syms: &mut SymbolTable) {
        self.link_pending(syms);
        self.pending_from = None;
    }

    /// Link every site made since the last call into its target's list, leaving exactly the
    /// lists that linking each as it was made would have (newest first). Instead of two
    /// random reads per site (the target's record, the old head), two passes over the new
    /// sites in order, through arrays of a `u32` per symbol that stay in the cache, and one
    /// pass over the symbols. Must run before anything walks or changes a list.
    pub fn link_pending(&mut self, syms: &mut SymbolTable) {
        let Some(from) = self.pending_from else {
            return;
        };
        let to = self.records.len() as u32;
        self.pending_from = Some(to);
        if from >= to {
            return;
        }
        let n = syms.len();
        // The lists' heads now, read once, in order.
        let heads: Vec<u32> = (0..n as u32)
            .map(|t| syms.get(SymbolId(t)).refs_head)
            .collect();
        // The new live sites and their targets, decoded once.
        let new: Vec<(u32, usize)> = (from..to)
            .filter_map(|id| {
                let rec = self.records.get(id);
                let t = rec.target as usize;
                (rec.site().is_some() && t < n).then_some((id, t))
            })
            .collect();
        // Forward: each site's `next` is the site before it with the same target (or the
        // old head); `newest[t]` ends as the new head. Backward: each site's `prev` is the
        // site after it; `oldest[t]` ends as the earliest new site, which the old head now
        // follows.
        let mut newest = vec![0u32; n];
        let mut next = Vec::with_capacity(new.len());
        for &(id, t) in &new {
            next.push(if newest[t] != 0 { newest[t] } else { heads[t] });
            newest[t] = id + 1;
        }
        let mut oldest = vec![0u32; n];
        for (k, &(id, t)) in new.iter().enumerate().rev() {
            let mut rec = self.records.get(id);
            rec.next = next[k];
            rec.prev = oldest[t];
            oldest[t] = id + 1;
            self.records.set(id, rec);
        }
        for t in 0..n {
            if newest[t] == 0 {
                continue;
            }
            let mut sym = syms.get(SymbolId(t as u32));
            sym.refs_head = newest[t];
            syms.set(SymbolId(t as u32), sym);
            if heads[t] != 0 {
                let mut old = self.records.get(heads[t] - 1);
                old.prev = oldest[t];
                self.records.set(heads[t] - 1, old);
            }
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
        if before.sites_len > 0 || (before.sites_cap > 0 && refs.len() as u32 <= before.sites_cap) {
            // Its old sites leave their lists, or its new ones go into its old range (below
            // what is pending): the lists must be complete first, and the owner's own record
            // read after, since linking may change its list head.
            self.link_pending(syms);
        }
        let mut sym = syms.get(owner);
        let mut old_targets = Vec::new();
        for i in sym.sites_first..sym.sites_first + sym.sites_len {
            if let Some(site) = self.records.get(i).site() {
                old_targets.push(site.target);
                self.unlink(syms, i);
            }
        }
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
        sym.sites_len = n;
        syms.set(owner, sym);
        let mut ids = Vec::with_capacity(refs.len());
        for (k, r) in refs.iter().enumerate() {
            let id = sym.sites_first + k as u32;
            self.records.set(
                id,
                SiteRecord::new(IN, owner.0, r.offset, r.kind, r.target.0, r.addend),
            );
            if self.pending_from.is_some_and(|from| id >= from) {
                self.live += 1;
            } else {
                self.link(syms, id);
            }
            ids.push(SiteId(id));
        }
        (ids, old_targets)
    }

    /// The site of `target`'s GOT entry at `addr`.
    pub fn add_got_entry(&mut self, syms: &mut SymbolTable, target: SymbolId, addr: u64) -> SiteId {
        // GOT addresses are below 4 GiB like every address of the image.
        let addr = u32::try_from(addr).expect("GOT addresses are below 4 GiB");
        self.link_pending(syms);
        let id = self
            .records
            .push(SiteRecord::new(GOT, addr, 0, RefKind::Abs64, target.0, 0));
        self.link(syms, id);
        // Linked already: not pending.
        if let Some(from) = &mut self.pending_from {
            *from = (*from).max(id + 1);
        }
        let mut sym = syms.get(target);
        sym.got_site = id + 1;
        syms.set(target, sym);
        SiteId(id)
    }

    fn link(&mut self, syms: &mut SymbolTable, id: u32) {
        let mut rec = self.records.get(id);
        let target = SymbolId(rec.target);
        let mut sym = syms.get(target);
        rec.prev = 0;
        rec.next = sym.refs_head;
        if sym.refs_head != 0 {
            let mut head = self.records.get(sym.refs_head - 1);
            head.prev = id + 1;
            self.records.set(sym.refs_head - 1, head);
        }
        sym.refs_head = id + 1;
        syms.set(target, sym);
        self.records.set(id, rec);
        self.live += 1;
    }

    fn unlink(&mut self, syms: &mut SymbolTable, id: u32) {
        let rec = self.records.get(id);
        if rec.prev != 0 {
            let mut p = self.records.get(rec.prev - 1);
            p.next = rec.next;
            self.records.set(rec.prev - 1, p);
        } else {
            let mut sym = syms.get(SymbolId(rec.target));
            sym.refs_head = rec.next;
            syms.set(SymbolId(rec.target), sym);
        }
        if rec.next != 0 {
            let mut n = self.records.get(rec.next - 1);
            n.prev = rec.prev;
            self.records.set(rec.next - 1, n);
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

    /// Sites whose value depends on `target`'s address.
    pub fn referring_to(&self, syms: &SymbolTable, target: SymbolId) -> Vec<SiteId> {
        let mut out = Vec::new();
        let mut next = syms.get(target).refs_head;
        // Bounded walk: a damaged list can never loop forever.
        while next != 0 && out.len() <= self.records.len() {
            out.push(SiteId(next - 1));
            next = self.records.get(next - 1).next;
        }
        out
    }

    /// Sites inside `owner`'s bytes.
    pub fn owned_by(&self, syms: &SymbolTable, owner: SymbolId) -> Vec<SiteId> {
        let s = syms.get(owner);
        (s.sites_first..s.sites_first + s.sites_len)
            .map(SiteId)
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
            let place = r.offset_kind >> (OFFSET_BITS + KIND_BITS);
            let kind =
                RefKind::from_code(((r.offset_kind >> OFFSET_BITS) & ((1 << KIND_BITS) - 1)) as u8);
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

    /// The lists `link_pending` builds in bulk are, record for record, the ones linking each
    /// site as it is made gives: with owners defined again, GOT entries and later rounds.
    #[test]
    fn bulk_linking_builds_the_same_lists_as_linking_each_site() {
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
        for round in 0..3 {
            for step in 0..200 {
                let owner = SymbolId((next() % 40) as u32);
                let refs: Vec<Reference> = (0..next() % 5)
                    .map(|k| Reference {
                        offset: k as u32 * 4,
                        kind: RefKind::PcRel32,
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
            // A list walk in the middle (as `wanted` does), then more definitions.
            let (a, b) = sites.split_at_mut(1);
            let (sa, sb) = syms.split_at_mut(1);
            b[0].link_pending(&mut sb[0]);
            for t in 0..40 {
                let t = SymbolId(t);
                assert_eq!(
                    a[0].referring_to(&sa[0], t),
                    b[0].referring_to(&sb[0], t),
                    "round {round}, symbol {t:?}"
                );
            }
        }
        assert_eq!(sites[0].records.len(), sites[1].records.len());
        for i in 0..sites[0].records.len() as u32 {
            let (x, y) = (sites[0].records.get(i), sites[1].records.get(i));
            assert_eq!(
                (x.next, x.prev, x.target),
                (y.next, y.prev, y.target),
                "record {i}"
            );
        }
        assert_eq!(sites[0].len(), sites[1].len());
    }
}
