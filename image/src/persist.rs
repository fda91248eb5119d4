//! The symbol-resolution table inside the executable: the `.zerolink` section and the arrays it
//! describes.
//!
//! Everything a later build needs to continue is in the file: the settings it was built with,
//! each region's high-water mark, free ranges and file extent, every symbol (slot, size, GOT
//! entry, content and signature hashes, its sites, its `.symtab` entry) and every reference
//! site. The big arrays (symbols, sites, name index, `.symtab`; names are `.strtab`
//! itself) live in extents of their own and are read in place (see `table.rs`); `.zerolink`
//! holds a fixed [`Header`] and a small *body*: the settings, the extents, the free ranges,
//! counts, and one checksum per 4 KiB page of each array.
//!
//! The header carries the format version, an *in progress* flag that an interrupted update
//! leaves set, and an xxh3 checksum of the body. Anything that does not check out is a reason
//! for a full rebuild, never a crash.

use object::pod::{bytes_of, from_bytes, Pod};
use xxhash_rust::xxh3::xxh3_64;

use crate::layout::{Extent, RegionKind, REGIONS};
use crate::slots::Region;

pub const SECTION_NAME: &str = ".zerolink";
pub const MAGIC: [u8; 8] = *b"ZLTABLE\0";
/// Bump on any change to the layout of the header, the body or the records.
pub const FORMAT_VERSION: u32 = 20;
pub const FLAG_IN_PROGRESS: u32 = 1;
/// Offset of `Header::flags`, written on its own by the update protocol.
pub const FLAGS_OFFSET: u64 = 12;

/// The arrays of the table, each in an extent of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Array {
    Symbols,
    Sites,
    Index,
    Symtab,
    /// Symbol names: the contents of `.strtab`.
    Names,
}

impl Array {
    pub const ALL: [Array; 5] = [
        Array::Symbols,
        Array::Sites,
        Array::Index,
        Array::Symtab,
        Array::Names,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// Section name; `.symtab` and `.strtab` are the ELF ones.
    pub fn section_name(self) -> &'static str {
        match self {
            Array::Symbols => ".zerolink.symbols",
            Array::Sites => ".zerolink.sites",
            Array::Index => ".zerolink.index",
            Array::Symtab => ".symtab",
            Array::Names => ".strtab",
        }
    }
}

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
}

// SAFETY: `repr(C)`, integers only, no padding (size checked).
unsafe impl Pod for Header {}
const _: () = assert!(std::mem::size_of::<Header>() == 56);

/// Where an array is in the file, how long it is, and its page checksums.
#[derive(Debug, Clone, Default)]
pub struct ArrayState {
    pub extent: Option<Extent>,
    pub len: u64,
    pub page_sums: Vec<u64>,
}

/// Everything in the body of `.zerolink`.
#[derive(Debug, Clone, Default)]
pub struct Body {
    pub settings: String,
    pub regions: Vec<Region>,
    pub extents: [Option<Extent>; REGIONS],
    /// `Meta` (section headers and `.shstrtab`) and the table itself.
    pub meta: Option<Extent>,
    pub table: Option<Extent>,
    pub arrays: Vec<ArrayState>,
    pub live_sites: u32,
    pub index_count: u32,
    pub first_global: u32,
    pub counts: [u32; 3],
    /// What the producer of the inputs wants to remember about them (opaque to the image).
    pub manifest: Vec<u8>,
    /// Shared libraries (sonames) imports may come from; empty for a freestanding executable.
    pub libraries: Vec<String>,
    /// Imported symbols, in `.dynsym` order.
    pub imports: Vec<u32>,
    /// The symbols' `Rare` records (id, GOT entry's site + 1, entry jump), in id order.
    pub rare: Vec<(u32, crate::symbols::Rare)>,
    /// The slot of `.dynamic` in the GOT region (address, capacity); 0 when static.
    pub dynamic_slot: (u64, u64),
    /// `.eh_frame_hdr` and `.eh_frame`: (hdr address, hdr length, frame address, frame
    /// length); zeros without unwind tables.
    pub eh_layout: [u64; 4],
    /// Non-loaded sections the producer added (debug information), with checksums.
    pub extras: Vec<ExtraSection>,
    /// The producer's index of its extra sections (opaque to the image).
    pub extras_index: Vec<u8>,
    /// Per region (in `RegionKind::ALL` order), one xxh3 checksum per 4 KiB page of what it
    /// uses in the file: what `zerolink verify` checks code and data against.
    pub region_sums: Vec<Vec<u64>>,
}

/// A non-loaded section kept across updates: where it is and what it hashed to.
#[derive(Debug, Clone)]
pub struct ExtraSection {
    pub name: String,
    pub extent: Extent,
    pub len: u64,
    pub checksum: u64,
}

struct Writer(Vec<u8>);

impl Writer {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn extent(&mut self, e: Option<Extent>) {
        self.u64(e.map_or(0, |e| e.offset));
        self.u64(e.map_or(0, |e| e.capacity));
    }
    /// Length, bytes, padding to 8.
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        while !self.0.len().is_multiple_of(8) {
            self.0.push(0);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u64(&mut self) -> Result<u64, String> {
        let (word, rest) = self
            .0
            .split_first_chunk::<8>()
            .ok_or("table body is truncated")?;
        self.0 = rest;
        Ok(u64::from_le_bytes(*word))
    }
    fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.u64()?).map_err(|_| "table body has a bad count".to_string())
    }
    fn count(&mut self, limit: usize) -> Result<usize, String> {
        let n = self.u64()? as usize;
        if n > limit {
            return Err("table body has an impossible count".into());
        }
        Ok(n)
    }
    fn extent(&mut self) -> Result<Option<Extent>, String> {
        let (offset, capacity) = (self.u64()?, self.u64()?);
        Ok((capacity != 0).then_some(Extent { offset, capacity }))
    }
    /// What `Writer::bytes` wrote.
    fn bytes(&mut self, limit: usize) -> Result<&[u8], String> {
        let n = self.count(limit)?;
        let b = self.0.get(..n).ok_or("table body is truncated")?;
        self.0 = self
            .0
            .get(n.div_ceil(8) * 8..)
            .ok_or("table body is truncated")?;
        Ok(b)
    }
    fn string(&mut self, limit: usize) -> Result<String, String> {
        std::str::from_utf8(self.bytes(limit)?)
            .map(str::to_string)
            .map_err(|_| "table body has an unreadable name".to_string())
    }
}

/// Why a table cannot be used; the build falls back to a full one and prints this.
pub type Reject = String;

pub fn encode(header: &Header, body: &Body) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.bytes(body.settings.as_bytes());
    for (r, e) in body.regions.iter().zip(body.extents) {
        w.u64(r.used);
        w.extent(e);
        w.u64(r.free_ranges().len() as u64);
        for &(off, len) in r.free_ranges() {
            w.u64(off);
            w.u64(len);
        }
    }
    w.extent(body.meta);
    w.extent(body.table);
    for a in &body.arrays {
        w.extent(a.extent);
        w.u64(a.len);
        w.u64(a.page_sums.len() as u64);
        for &s in &a.page_sums {
            w.u64(s);
        }
    }
    for v in [
        body.live_sites,
        body.index_count,
        body.first_global,
        body.counts[0],
        body.counts[1],
        body.counts[2],
    ] {
        w.u64(u64::from(v));
    }
    w.bytes(&body.manifest);
    w.u64(body.libraries.len() as u64);
    for lib in &body.libraries {
        w.bytes(lib.as_bytes());
    }
    w.u64(body.imports.len() as u64);
    for &i in &body.imports {
        w.u64(u64::from(i));
    }
    w.u64(body.rare.len() as u64);
    for &(id, r) in &body.rare {
        for v in [id, r.got_site, r.entry, r.copy, r.flags] {
            w.u64(u64::from(v));
        }
    }
    w.u64(body.dynamic_slot.0);
    w.u64(body.dynamic_slot.1);
    for v in body.eh_layout {
        w.u64(v);
    }
    w.u64(body.extras.len() as u64);
    for x in &body.extras {
        w.bytes(x.name.as_bytes());
        w.extent(Some(x.extent));
        w.u64(x.len);
        w.u64(x.checksum);
    }
    w.bytes(&body.extras_index);
    for sums in &body.region_sums {
        w.u64(sums.len() as u64);
        for &s in sums {
            w.u64(s);
        }
    }
    let header = Header {
        magic: MAGIC,
        version: FORMAT_VERSION,
        body_len: w.0.len() as u64,
        checksum: xxh3_64(&w.0),
        ..*header
    };
    let mut out = bytes_of(&header).to_vec();
    out.extend_from_slice(&w.0);
    out
}

/// Read the header and body of a `.zerolink` section.
pub fn decode(bytes: &[u8]) -> Result<(Header, Body), Reject> {
    let (header, rest) =
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
    let body_bytes = rest
        .get(..header.body_len as usize)
        .ok_or("table is truncated (body)")?;
    if xxh3_64(body_bytes) != header.checksum {
        return Err("table is damaged (checksum mismatch)".into());
    }
    let mut r = Reader(body_bytes);
    let mut body = Body {
        settings: r.string(1 << 20)?,
        ..Body::default()
    };
    for kind in RegionKind::ALL {
        let used = r.u64()?;
        body.extents[kind.index()] = r.extent()?;
        let n = r.count(1 << 24)?;
        let mut free = Vec::with_capacity(n);
        for _ in 0..n {
            free.push((r.u64()?, r.u64()?));
        }
        body.regions.push(Region::restore(kind, used, free));
    }
    body.meta = r.extent()?;
    body.table = r.extent()?;
    for _ in Array::ALL {
        let extent = r.extent()?;
        let len = r.u64()?;
        let n = r.count(1 << 28)?;
        let mut page_sums = Vec::with_capacity(n);
        for _ in 0..n {
            page_sums.push(r.u64()?);
        }
        if extent.is_none_or(|e| len > e.capacity) || (len as usize).div_ceil(4096) != n {
            return Err("table describes an array that does not fit its extent".into());
        }
        body.arrays.push(ArrayState {
            extent,
            len,
            page_sums,
        });
    }
    body.live_sites = r.u32()?;
    body.index_count = r.u32()?;
    body.first_global = r.u32()?;
    body.counts = [r.u32()?, r.u32()?, r.u32()?];
    body.manifest = r.bytes(1 << 30)?.to_vec();
    for _ in 0..r.count(1 << 16)? {
        body.libraries.push(r.string(4096)?);
    }
    for _ in 0..r.count(1 << 24)? {
        body.imports.push(r.u32()?);
    }
    for _ in 0..r.count(1 << 28)? {
        let id = r.u32()?;
        let (got_site, entry, copy, flags) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
        body.rare.push((
            id,
            crate::symbols::Rare {
                got_site,
                entry,
                copy,
                flags,
            },
        ));
    }
    body.dynamic_slot = (r.u64()?, r.u64()?);
    for v in &mut body.eh_layout {
        *v = r.u64()?;
    }
    for _ in 0..r.count(1 << 10)? {
        let name = r.string(4096)?;
        let extent = r
            .extent()?
            .ok_or("table describes an empty extra section")?;
        let len = r.u64()?;
        if len > extent.capacity {
            return Err("table describes a section that does not fit its extent".into());
        }
        body.extras.push(ExtraSection {
            name,
            extent,
            len,
            checksum: r.u64()?,
        });
    }
    body.extras_index = r.bytes(1 << 30)?.to_vec();
    for _ in RegionKind::ALL {
        let n = r.count(1 << 28)?;
        let mut sums = Vec::with_capacity(n);
        for _ in 0..n {
            sums.push(r.u64()?);
        }
        body.region_sums.push(sums);
    }
    Ok((header, body))
}
