//! The symbol-resolution table inside the executable: the `.zerolink` section.
//!
//! Everything a later build needs to continue is here: the settings the executable was built
//! with, each region's high-water mark, free ranges and file extent, the tail extents, every
//! symbol (slot, size, GOT entry, content and signature hashes) and every reference site. The
//! section is not loaded; it is found through the section headers.
//!
//! Layout: a fixed [`Header`], then a body of plain `repr(C)` records (settings, regions, tails,
//! free ranges, symbols, sites, names). The header carries the format version, an *in progress*
//! flag that an interrupted update leaves set, and an xxh3 checksum of the body. Anything that
//! does not check out is a reason for a full rebuild, never a crash.

use object::pod::{bytes_of, bytes_of_slice, from_bytes, slice_from_bytes, Pod};
use xxhash_rust::xxh3::xxh3_64;

use crate::layout::{Extent, RegionKind, Tail};
use crate::sites::{Place, RefKind, Site};
use crate::slots::{Region, Slot};
use crate::symbols::{Binding, Placement, Symbol, SymbolId, SymbolKind};

pub const SECTION_NAME: &str = ".zerolink";
pub const MAGIC: [u8; 8] = *b"ZLTABLE\0";
/// Bump on any change to the records below.
pub const FORMAT_VERSION: u32 = 1;
pub const FLAG_IN_PROGRESS: u32 = 1;
/// Offset of `Header::flags`, written on its own by the update protocol.
pub const FLAGS_OFFSET: u64 = 12;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Header {
    pub magic: [u8; 8],
    pub version: u32,
    pub flags: u32,
    pub body_len: u64,
    pub checksum: u64,
    /// Number of builds that produced this file: 1 for a full build, +1 per update.
    pub generation: u64,
    /// `_start`, and the stub that reports an interrupted update.
    pub entry: u64,
    pub interrupted: u64,
    pub n_symbols: u32,
    pub n_sites: u32,
    pub n_free: u32,
    pub settings_len: u32,
    pub names_len: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct RegionRec {
    used: u64,
    ext_offset: u64,
    /// 0: the region has no file extent.
    ext_capacity: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FreeRec {
    region: u64,
    offset: u64,
    len: u64,
}

const SYM_PLACED: u8 = 1;
const SYM_BUILTIN: u8 = 2;
const SYM_GOT: u8 = 4;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SymRec {
    name_off: u32,
    name_len: u32,
    kind: u8,
    binding: u8,
    flags: u8,
    region: u8,
    reserved: u32,
    addr: u64,
    capacity: u64,
    size: u64,
    got: u64,
    hash: u64,
    sig_hash: u64,
}

const PLACE_IN: u8 = 0;
const PLACE_GOT: u8 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SiteRec {
    owner: u32,
    offset: u32,
    target: u32,
    kind: u8,
    place: u8,
    reserved: u16,
    addend: i64,
    got_addr: u64,
}

// SAFETY: all are `repr(C)`, made of integers only, with no padding (sizes checked below).
unsafe impl Pod for Header {}
unsafe impl Pod for RegionRec {}
unsafe impl Pod for FreeRec {}
unsafe impl Pod for SymRec {}
unsafe impl Pod for SiteRec {}
const _: () = assert!(std::mem::size_of::<Header>() == 80);
const _: () = assert!(std::mem::size_of::<SymRec>() == 64);
const _: () = assert!(std::mem::size_of::<SiteRec>() == 32);

/// The persisted state of an image.
#[derive(Debug)]
pub struct Table {
    pub header: Header,
    pub settings: String,
    pub regions: Vec<Region>,
    pub extents: [Option<Extent>; 5],
    pub tails: [Option<Extent>; 4],
    pub symbols: Vec<Symbol>,
    pub sites: Vec<Site>,
}

fn kind_code(k: RefKind) -> u8 {
    match k {
        RefKind::PcRel32 => 0,
        RefKind::Abs32 => 1,
        RefKind::Abs64 => 2,
        RefKind::GotPcRel32 => 3,
    }
}

fn kind_from(c: u8) -> Option<RefKind> {
    Some(match c {
        0 => RefKind::PcRel32,
        1 => RefKind::Abs32,
        2 => RefKind::Abs64,
        3 => RefKind::GotPcRel32,
        _ => return None,
    })
}

/// The state to persist, borrowed from the image.
pub struct Snapshot<'a> {
    pub settings: &'a str,
    pub generation: u64,
    pub entry: u64,
    pub interrupted: u64,
    pub in_progress: bool,
    pub regions: &'a [Region],
    pub extents: &'a [Option<Extent>; 5],
    pub tails: &'a [Option<Extent>; 4],
    pub symbols: &'a [Symbol],
    pub sites: Vec<&'a Site>,
}

fn pad8(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(8) {
        v.push(0);
    }
}

pub fn encode(s: &Snapshot<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(s.settings.as_bytes());
    pad8(&mut body);
    let regions: Vec<RegionRec> = s
        .regions
        .iter()
        .zip(s.extents)
        .map(|(r, e)| RegionRec {
            used: r.used,
            ext_offset: e.map_or(0, |e| e.offset),
            ext_capacity: e.map_or(0, |e| e.capacity),
        })
        .collect();
    body.extend_from_slice(bytes_of_slice(&regions));
    let tails: Vec<RegionRec> = s
        .tails
        .iter()
        .map(|e| RegionRec {
            used: 0,
            ext_offset: e.map_or(0, |e| e.offset),
            ext_capacity: e.map_or(0, |e| e.capacity),
        })
        .collect();
    body.extend_from_slice(bytes_of_slice(&tails));
    let free: Vec<FreeRec> = s
        .regions
        .iter()
        .flat_map(|r| {
            r.free_ranges().iter().map(move |&(offset, len)| FreeRec {
                region: r.kind.index() as u64,
                offset,
                len,
            })
        })
        .collect();
    body.extend_from_slice(bytes_of_slice(&free));
    let mut names = Vec::new();
    let syms: Vec<SymRec> = s
        .symbols
        .iter()
        .map(|sym| {
            let name_off = names.len() as u32;
            names.extend_from_slice(sym.name.as_bytes());
            let p = sym.placement;
            SymRec {
                name_off,
                name_len: sym.name.len() as u32,
                kind: match sym.kind {
                    SymbolKind::Function => 0,
                    SymbolKind::Data => 1,
                },
                binding: match sym.binding {
                    Binding::Local => 0,
                    Binding::Global => 1,
                    Binding::Weak => 2,
                },
                flags: (if p.is_some() { SYM_PLACED } else { 0 })
                    | (if sym.builtin { SYM_BUILTIN } else { 0 })
                    | (if sym.got.is_some() { SYM_GOT } else { 0 }),
                region: p.map_or(0, |p| p.region.index() as u8),
                reserved: 0,
                addr: p.map_or(0, |p| p.slot.addr),
                capacity: p.map_or(0, |p| p.slot.capacity),
                size: p.map_or(0, |p| p.size),
                got: sym.got.unwrap_or(0),
                hash: sym.hash,
                sig_hash: sym.sig_hash,
            }
        })
        .collect();
    body.extend_from_slice(bytes_of_slice(&syms));
    let sites: Vec<SiteRec> = s
        .sites
        .iter()
        .map(|site| {
            let (place, owner, offset, got_addr) = match site.place {
                Place::In { owner, offset } => (PLACE_IN, owner.0, offset, 0),
                Place::GotEntry { addr } => (PLACE_GOT, 0, 0, addr),
            };
            SiteRec {
                owner,
                offset,
                target: site.target.0,
                kind: kind_code(site.kind),
                place,
                reserved: 0,
                addend: site.addend,
                got_addr,
            }
        })
        .collect();
    body.extend_from_slice(bytes_of_slice(&sites));
    body.extend_from_slice(&names);
    let header = Header {
        magic: MAGIC,
        version: FORMAT_VERSION,
        flags: if s.in_progress { FLAG_IN_PROGRESS } else { 0 },
        body_len: body.len() as u64,
        checksum: xxh3_64(&body),
        generation: s.generation,
        entry: s.entry,
        interrupted: s.interrupted,
        n_symbols: syms.len() as u32,
        n_sites: sites.len() as u32,
        n_free: free.len() as u32,
        settings_len: s.settings.len() as u32,
        names_len: names.len() as u32,
        reserved: 0,
    };
    let mut out = bytes_of(&header).to_vec();
    out.extend_from_slice(&body);
    out
}

/// Why a table cannot be used; the build falls back to a full one and prints this.
pub type Reject = String;

fn take<'a, T: Pod>(data: &mut &'a [u8], count: usize, what: &str) -> Result<&'a [T], Reject> {
    let (items, rest) =
        slice_from_bytes::<T>(data, count).map_err(|_| format!("table is truncated ({what})"))?;
    *data = rest;
    Ok(items)
}

/// Read a table from the bytes of the `.zerolink` section.
pub fn decode(bytes: &[u8]) -> Result<Table, Reject> {
    let (header, body) =
        from_bytes::<Header>(bytes).map_err(|_| "table is truncated (header)".to_string())?;
    let header = *header;
    if header.magic != MAGIC {
        return Err("the .zerolink section is not a zerolink table".into());
    }
    if header.version != FORMAT_VERSION {
        return Err(format!(
            "table format {} is not this zerolink's format {FORMAT_VERSION}",
            header.version
        ));
    }
    if header.flags & FLAG_IN_PROGRESS != 0 {
        return Err("the previous update was interrupted".into());
    }
    let body = body
        .get(..header.body_len as usize)
        .ok_or("table is truncated (body)")?;
    if xxh3_64(body) != header.checksum {
        return Err("table is damaged (checksum mismatch)".into());
    }
    let mut data = body;
    let settings_padded = (header.settings_len as usize).div_ceil(8) * 8;
    let settings = data
        .get(..header.settings_len as usize)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or("table settings are unreadable")?
        .to_string();
    data = data.get(settings_padded..).ok_or("table is truncated")?;
    let regions: &[RegionRec] = take(&mut data, 5, "regions")?;
    let tails: &[RegionRec] = take(&mut data, 4, "tails")?;
    let free: &[FreeRec] = take(&mut data, header.n_free as usize, "free ranges")?;
    let syms: &[SymRec] = take(&mut data, header.n_symbols as usize, "symbols")?;
    let sites: &[SiteRec] = take(&mut data, header.n_sites as usize, "sites")?;
    let names = data
        .get(..header.names_len as usize)
        .ok_or("table is truncated (names)")?;

    let extent = |r: &RegionRec| {
        (r.ext_capacity != 0).then_some(Extent {
            offset: r.ext_offset,
            capacity: r.ext_capacity,
        })
    };
    let mut free_by_region: Vec<Vec<(u64, u64)>> = vec![Vec::new(); 5];
    for f in free {
        free_by_region
            .get_mut(f.region as usize)
            .ok_or("bad free range")?
            .push((f.offset, f.len));
    }
    let regions_out: Vec<Region> = RegionKind::ALL
        .iter()
        .zip(free_by_region)
        .map(|(&k, free)| Region::restore(k, regions[k.index()].used, free))
        .collect();
    let mut extents = [None; 5];
    for (i, r) in regions.iter().enumerate() {
        extents[i] = extent(r);
    }
    let mut tails_out = [None; 4];
    for t in Tail::ALL {
        tails_out[t.index()] = extent(&tails[t.index()]);
    }

    let mut symbols = Vec::with_capacity(syms.len());
    for r in syms {
        let name = names
            .get(r.name_off as usize..(r.name_off + r.name_len) as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or("bad symbol name")?;
        let region = *RegionKind::ALL
            .get(r.region as usize)
            .ok_or("bad symbol region")?;
        symbols.push(Symbol {
            name: name.to_string(),
            kind: match r.kind {
                0 => SymbolKind::Function,
                1 => SymbolKind::Data,
                _ => return Err("bad symbol kind".into()),
            },
            binding: match r.binding {
                0 => Binding::Local,
                1 => Binding::Global,
                2 => Binding::Weak,
                _ => return Err("bad symbol binding".into()),
            },
            placement: (r.flags & SYM_PLACED != 0).then_some(Placement {
                region,
                slot: Slot {
                    addr: r.addr,
                    capacity: r.capacity,
                },
                size: r.size,
            }),
            got: (r.flags & SYM_GOT != 0).then_some(r.got),
            builtin: r.flags & SYM_BUILTIN != 0,
            hash: r.hash,
            sig_hash: r.sig_hash,
        });
    }
    let n = symbols.len() as u32;
    let mut sites_out = Vec::with_capacity(sites.len());
    for r in sites {
        if r.target >= n || (r.place == PLACE_IN && r.owner >= n) {
            return Err("a site refers to a symbol that does not exist".into());
        }
        sites_out.push(Site {
            place: match r.place {
                PLACE_IN => Place::In {
                    owner: SymbolId(r.owner),
                    offset: r.offset,
                },
                PLACE_GOT => Place::GotEntry { addr: r.got_addr },
                _ => return Err("bad site place".into()),
            },
            kind: kind_from(r.kind).ok_or("bad site kind")?,
            target: SymbolId(r.target),
            addend: r.addend,
        });
    }
    Ok(Table {
        header,
        settings,
        regions: regions_out,
        extents,
        tails: tails_out,
        symbols,
        sites: sites_out,
    })
}
