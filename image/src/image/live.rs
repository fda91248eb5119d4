//! Live mode of an update (see `crate::live`): the busy check, the write log and, at the end,
//! what moved and what the running process cannot take.

use std::collections::{HashMap, HashSet};

use super::*;
use crate::live::{LiveLog, LiveOptions, LiveWrite, Moved, NewImport, Refusal, WriteRule};
use crate::symbols::Placement;

/// The live state of an update.
pub(super) struct Live {
    opts: LiveOptions,
    log: LiveLog,
    /// Each symbol's placement and signature before this build first changed it.
    before: HashMap<SymbolId, Before>,
    /// GOT entries this build created.
    pub(super) new_got: HashSet<u64>,
}

#[derive(Clone, Copy)]
struct Before {
    placement: Option<Placement>,
    sig_hash: u64,
}

impl Live {
    pub(super) fn opts_busy_in(&self, start: u64, end: u64) -> bool {
        self.opts.busy_in(start, end)
    }
}

/// Whether the program's own writes to a region are state to keep (data objects).
fn holds_state(region: RegionKind) -> bool {
    matches!(region, RegionKind::Data | RegionKind::Bss)
}

impl Image {
    /// Make this update a live one (see `crate::live`): the process is as the file is now.
    pub fn set_live(&mut self, mut opts: LiveOptions) {
        opts.busy.sort_unstable();
        opts.busy.dedup();
        for r in &mut self.regions {
            r.tail_only = true;
        }
        self.live = Some(Box::new(Live {
            opts,
            log: LiveLog::default(),
            before: HashMap::new(),
            new_got: HashSet::new(),
        }));
    }

    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Remember `id` as it was before this build changed it (the first call counts).
    pub(super) fn live_before(&mut self, id: SymbolId) {
        let Some(live) = &self.live else { return };
        if live.before.contains_key(&id) {
            return;
        }
        let sym = self.symbols.get(id);
        let b = Before {
            placement: sym.placement(),
            sig_hash: sym.sig_hash,
        };
        if let Some(live) = &mut self.live {
            live.before.insert(id, b);
        }
    }

    /// Whether the process may execute or return into `slot` (never true outside live mode).
    pub(super) fn live_busy(&self, slot: Slot) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| l.opts.busy_in(slot.addr, slot.end()))
    }

    pub(super) fn live_write(
        &mut self,
        region: RegionKind,
        addr: u64,
        bytes: &[u8],
        rule: WriteRule,
    ) {
        self.live_write_value(region, addr, bytes, rule, false);
    }

    fn live_write_value(
        &mut self,
        region: RegionKind,
        addr: u64,
        bytes: &[u8],
        rule: WriteRule,
        absolute: bool,
    ) {
        if let Some(live) = &mut self.live {
            live.log.writes.push(LiveWrite {
                addr,
                bytes: bytes.to_vec(),
                rule,
                region,
                absolute,
            });
        }
    }

    /// A definition's bytes were written at `slot` (new slot or in place).
    pub(super) fn live_slot(
        &mut self,
        id: SymbolId,
        region: RegionKind,
        addr: u64,
        contents: Contents<'_>,
        in_place: bool,
    ) {
        if self.live.is_none() || !region.in_file() {
            return;
        }
        // A data object the program already has keeps the values the program gave it.
        if in_place && holds_state(region) {
            return;
        }
        let bytes = match contents {
            Contents::Bytes(b) => b.to_vec(),
            Contents::Zeros(n) => vec![0; n as usize],
        };
        self.live_write(region, addr, &bytes, WriteRule::Always);
        if region == RegionKind::Text {
            let name = self.symbols.name(id);
            if let Some(live) = &mut self.live {
                if in_place {
                    live.log.in_place.push(name);
                } else {
                    live.log.placed.push(name);
                }
            }
        }
    }

    /// A site's field was written at `p`.
    pub(super) fn live_site(&mut self, site: &Site, p: u64, field: &[u8]) {
        if self.live.is_none() {
            return;
        }
        let region = region_of(p);
        let rule = match (holds_state(region), site.place) {
            (true, Place::In { owner, .. }) if !self.live_is_new(owner) => {
                // The field of an object the process already has: it changes only if its
                // target moved, and then only where the program left the old value.
                let Some(old) = self.live_old_addr(site.target) else {
                    return;
                };
                let got = self.got_of(site.target);
                match x86_64::encode(site.kind, old, site.addend, p, got) {
                    Ok(f) => WriteRule::IfUnchanged(f.bytes().to_vec()),
                    Err(_) => return,
                }
            }
            _ => WriteRule::Always,
        };
        // An address in memory (what a PIE's loader relocates) moves with the process.
        let absolute = field.len() == 8
            && (site.kind == RefKind::Abs64 || matches!(site.place, Place::GotEntry { .. }));
        self.live_write_value(region, p, field, rule, absolute);
    }

    /// A site whose target is a shared library's symbol was written at `p`.
    pub(super) fn live_import_site(&mut self, site: &Site, p: u64) {
        let Some(live) = &self.live else { return };
        match site.place {
            Place::GotEntry { .. } if self.is_tls_import(site.target) => {
                // (Its GOT entry would need the library's offset in every thread's block.)
                let r = Refusal::ThreadLocal {
                    name: self.symbols.name(site.target),
                };
                if let Some(live) = &mut self.live {
                    live.log.refusals.push(r);
                }
            }
            Place::GotEntry { addr } if live.new_got.contains(&addr) => {
                let name = self.symbols.name(site.target);
                let libraries = self.libraries.clone();
                if let Some(live) = &mut self.live {
                    live.log.new_imports.push(NewImport {
                        name,
                        got: addr,
                        libraries,
                    });
                }
            }
            Place::In { owner, .. } if holds_state(region_of(p)) && self.live_is_new(owner) => {
                let r = Refusal::ImportInData {
                    name: self.symbols.name(owner),
                    target: self.symbols.name(site.target),
                };
                if let Some(live) = &mut self.live {
                    live.log.refusals.push(r);
                }
            }
            _ => {}
        }
    }

    pub(super) fn live_new_got(&mut self, addr: u64) {
        if let Some(live) = &mut self.live {
            live.new_got.insert(addr);
        }
    }

    /// Whether `id` got a new slot in this build (brand new, or moved).
    fn live_is_new(&self, id: SymbolId) -> bool {
        let Some(b) = self.live.as_ref().and_then(|l| l.before.get(&id)) else {
            return false;
        };
        b.placement.map(|p| p.slot.addr) != self.symbols.get(id).addr()
    }

    /// The address `id` had before this build, if it has another one now.
    fn live_old_addr(&self, id: SymbolId) -> Option<u64> {
        let b = self.live.as_ref()?.before.get(&id)?;
        let old = b.placement?.slot.addr;
        (Some(old) != self.symbols.get(id).addr()).then_some(old)
    }

    /// The dynamic region's unwind tables were rebuilt (`new`, from `from` on; `old` is what
    /// the region held): the runs of bytes that changed go to the log, in 64-byte pieces.
    pub(super) fn live_eh(&mut self, base: u64, from: u64, old: &[u8], new: &[u8]) {
        let Some(live) = &mut self.live else { return };
        let from = from as usize;
        live.log.eh_frame_hdr = Some(base + from as u64);
        let mut i = from - from % 64;
        while i < new.len() {
            let end = (i + 64).min(new.len());
            if old.get(i..end) != Some(&new[i..end]) {
                let start = i.max(from);
                live.log.writes.push(LiveWrite {
                    addr: base + start as u64,
                    bytes: new[start..end].to_vec(),
                    rule: WriteRule::Always,
                    region: RegionKind::Dynamic,
                    absolute: false,
                });
            }
            i = end;
        }
    }

    /// At the end of the update: moves, refusals and the regions' ends, into the log.
    pub(super) fn live_conclude(&mut self) {
        let Some(live) = self.live.take() else { return };
        let Live {
            opts,
            mut log,
            before,
            ..
        } = *live;
        let mut ids: Vec<SymbolId> = before.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let b = before[&id];
            let sym = self.symbols.get(id);
            let now = sym.placement();
            let name = self.symbols.name(id);
            match (b.placement, now) {
                (Some(old), None) => {
                    if old.region == RegionKind::Text
                        && opts.busy_in(
                            old.slot.addr,
                            old.slot.addr + old.slot.capacity.max(old.size),
                        )
                    {
                        log.refusals.push(Refusal::RemovedBusy { name });
                    }
                    continue;
                }
                (Some(old), Some(new)) if old.slot.addr != new.slot.addr => match old.region {
                    RegionKind::Text if old.size > 0 => log.moved.push(Moved {
                        name: name.clone(),
                        from: old.slot.addr,
                        from_end: old.slot.addr + old.size,
                        to: new.slot.addr,
                    }),
                    RegionKind::Data | RegionKind::Bss => {
                        log.refusals.push(Refusal::DataMoved { name: name.clone() })
                    }
                    RegionKind::Tls => log
                        .refusals
                        .push(Refusal::ThreadLocal { name: name.clone() }),
                    _ => {}
                },
                (Some(old), Some(new)) => {
                    if holds_state(old.region) && old.size != new.size {
                        log.refusals.push(Refusal::DataResized {
                            name: name.clone(),
                            old: old.size,
                            new: new.size,
                        });
                    } else if old.region == RegionKind::Tls && old.size != new.size {
                        log.refusals
                            .push(Refusal::ThreadLocal { name: name.clone() });
                    }
                }
                (None, Some(new)) if new.region == RegionKind::Tls => log
                    .refusals
                    .push(Refusal::ThreadLocal { name: name.clone() }),
                _ => {}
            }
            // A new signature: callers running right now would call it the old way.
            if b.sig_hash != 0 && sym.sig_hash != 0 && b.sig_hash != sym.sig_hash {
                for site in self.referrers(id) {
                    let Place::In { owner, .. } = self.sites.get(site).place else {
                        continue;
                    };
                    let range = before
                        .get(&owner)
                        .and_then(|b| b.placement)
                        .or_else(|| self.symbols.get(owner).placement());
                    if owner != id && range.is_some_and(|p| opts.busy_in(p.slot.addr, p.slot.end()))
                    {
                        log.refusals.push(Refusal::SignatureBusy {
                            name: name.clone(),
                            caller: self.symbols.name(owner),
                        });
                        break;
                    }
                }
            }
        }
        log.region_end = RegionKind::ALL
            .iter()
            .map(|k| k.vaddr() + self.regions[k.index()].used)
            .collect();
        self.live_log = Some(Box::new(log));
    }

    /// The stamp every build writes at `live::STAMP_OFFSET`: the generation and a digest of
    /// every loaded region's contents (their page checksums), so the process built from this
    /// file can be told from any other.
    pub(super) fn stamp(&self) -> Vec<u8> {
        let mut sums = Vec::new();
        for s in &self.region_sums {
            for v in s {
                sums.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut stamp = crate::live::STAMP_MAGIC.to_vec();
        stamp.extend_from_slice(&self.generation.to_le_bytes());
        stamp.extend_from_slice(&xxh3_64(&sums).to_le_bytes());
        stamp
    }
}
