//! Record arrays used in place: the building blocks of the persisted symbol-resolution table.
//!
//! An update must cost what the edit costs, not what the program costs, so the table is never
//! decoded whole. Each array ([`Records`]: symbols, sites, the name index, `.symtab`;
//! [`Blob`]: the names, which double as `.strtab`) reads its records straight from the
//! mapped old file, keeps the records it changes in an overlay, and writes back only those.
//! In a fresh build the same types simply hold everything in memory.
//!
//! Integrity: every array carries one xxh3 checksum per 4 KiB page. A page is verified the
//! first time it is read; a mismatch marks the array damaged and the read returns a default
//! record, so damaged bytes are never trusted and never cause a panic. The image refuses to
//! commit an update that read a damaged page (the caller then rebuilds in full).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use memmap2::Mmap;
use object::pod::Pod;
use xxhash_rust::xxh3::xxh3_64;

pub const PAGE_BYTES: usize = 4096;

/// Records of an array that lives in the old file.
#[derive(Clone)]
pub struct Base {
    pub map: Arc<Mmap>,
    pub offset: usize,
    /// Bytes of the array in the file (whole records for `Records`).
    pub len: usize,
    pub page_sums: Vec<u64>,
}

/// Which pages have been verified, and whether any failed. Atomic (relaxed: each bit only
/// ever goes from 0 to 1, and a page verified twice costs a hash, nothing else) so that
/// compiling threads can look names up in the old table while nothing writes to it.
struct Verifier {
    verified: Vec<AtomicU64>,
    damaged: AtomicBool,
}

impl Verifier {
    fn new(pages: usize) -> Verifier {
        Verifier {
            verified: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            damaged: AtomicBool::new(false),
        }
    }

    /// Whether byte `at` of `base` lies in a page whose checksum holds.
    fn check(&self, base: &Base, at: usize) -> bool {
        let page = at / PAGE_BYTES;
        let (word, bit) = (page / 64, 1u64 << (page % 64));
        let Some(cell) = self.verified.get(word) else {
            self.damaged.store(true, Relaxed);
            return false;
        };
        if cell.load(Relaxed) & bit != 0 {
            return true;
        }
        let start = page * PAGE_BYTES;
        let end = (start + PAGE_BYTES).min(base.len);
        let ok = base
            .map
            .get(base.offset + start..base.offset + end)
            .zip(base.page_sums.get(page))
            .is_some_and(|(bytes, &sum)| xxh3_64(bytes) == sum);
        if ok {
            cell.fetch_or(bit, Relaxed);
        } else {
            self.damaged.store(true, Relaxed);
        }
        ok
    }
}

/// Checksums of an array's bytes, one per page.
pub fn page_sums(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks(PAGE_BYTES).map(xxh3_64).collect()
}

/// A growable array of fixed-size records, read in place from an old file when there is one.
pub struct Records<T: Pod + Default> {
    base: Option<Base>,
    base_count: usize,
    verifier: Verifier,
    changed: BTreeMap<u32, T>,
    extra: Vec<T>,
}

impl<T: Pod + Default> Default for Records<T> {
    fn default() -> Self {
        Records {
            base: None,
            base_count: 0,
            verifier: Verifier::new(0),
            changed: BTreeMap::new(),
            extra: Vec::new(),
        }
    }
}

impl<T: Pod + Default> Records<T> {
    pub fn from_base(base: Base) -> Self {
        let size = std::mem::size_of::<T>();
        let pages = base.len.div_ceil(PAGE_BYTES);
        Records {
            base_count: base.len / size,
            verifier: Verifier::new(pages),
            base: Some(base),
            changed: BTreeMap::new(),
            extra: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.base_count + self.extra.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record `i`; a default record (and the damaged mark) if it is missing or unverifiable.
    pub fn get(&self, i: u32) -> T {
        let i = i as usize;
        if i >= self.base_count {
            return match self.extra.get(i - self.base_count) {
                Some(v) => *v,
                None => {
                    self.verifier.damaged.store(true, Relaxed);
                    T::default()
                }
            };
        }
        if let Some(v) = self.changed.get(&(i as u32)) {
            return *v;
        }
        let base = self.base.as_ref().expect("base records have a base");
        let size = std::mem::size_of::<T>();
        let at = i * size;
        if !self.verifier.check(base, at) || !self.verifier.check(base, at + size - 1) {
            return T::default();
        }
        let bytes = &base.map[base.offset + at..base.offset + at + size];
        // SAFETY: `T: Pod` accepts any bytes; the read is unaligned-safe.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
    }

    pub fn set(&mut self, i: u32, v: T) {
        let idx = i as usize;
        if idx >= self.base_count {
            self.extra[idx - self.base_count] = v;
        } else {
            // The page's checksum is recomputed from its new contents when it is written:
            // verify the old ones first, or damage elsewhere in the page would be laundered.
            self.verify_around(idx * std::mem::size_of::<T>());
            self.changed.insert(i, v);
        }
    }

    pub fn push(&mut self, v: T) -> u32 {
        if self.extra.is_empty() && self.base_count > 0 {
            // The last old page gets new records after its old ones.
            self.verify_around(self.base_count * std::mem::size_of::<T>() - 1);
        }
        self.extra.push(v);
        (self.len() - 1) as u32
    }

    /// Verify the old record bytes around byte `at` (the pages of the record there).
    fn verify_around(&self, at: usize) {
        if let Some(base) = &self.base {
            let size = std::mem::size_of::<T>();
            let start = at - at % size;
            self.verifier.check(base, start);
            self.verifier
                .check(base, (start + size - 1).min(base.len.saturating_sub(1)));
        }
    }

    /// Remove the last record (it must be one added in this session or a base record; the
    /// array length shrinks either way).
    pub fn truncate(&mut self, len: usize) {
        if len > 0 && len < self.base_count {
            // The page that now ends the array is written again.
            self.verify_around(len * std::mem::size_of::<T>() - 1);
        }
        if len >= self.base_count {
            self.extra.truncate(len - self.base_count);
        } else {
            self.extra.clear();
            self.base_count = len;
            self.changed.retain(|&k, _| (k as usize) < len);
        }
    }

    pub fn damaged(&self) -> bool {
        self.verifier.damaged.load(Relaxed)
    }

    /// Records that differ from the old file: (index, record), in index order.
    pub fn dirty(&self) -> impl Iterator<Item = (u32, T)> + '_ {
        self.changed.iter().map(|(&i, &v)| (i, v)).chain(
            self.extra
                .iter()
                .enumerate()
                .map(move |(k, &v)| ((self.base_count + k) as u32, v)),
        )
    }

    /// The whole array as bytes (for a fresh file or a moved extent).
    /// The whole array's bytes: borrowed when it is all in memory (a fresh build writes
    /// 14 MB of table at 100,000 functions: no copy of it first).
    pub fn to_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.base.is_none() {
            return std::borrow::Cow::Borrowed(object::pod::bytes_of_slice(&self.extra));
        }
        let mut out = Vec::with_capacity(self.len() * std::mem::size_of::<T>());
        for i in 0..self.len() as u32 {
            out.extend_from_slice(object::pod::bytes_of(&self.get(i)));
        }
        std::borrow::Cow::Owned(out)
    }

    pub fn has_base(&self) -> bool {
        self.base.is_some()
    }
}

/// An append-only byte array: the names, stored NUL-terminated so the array *is* `.strtab`.
pub struct Blob {
    base: Option<Base>,
    verifier: Verifier,
    extra: Vec<u8>,
}

impl Default for Blob {
    fn default() -> Self {
        Blob {
            base: None,
            verifier: Verifier::new(0),
            // `.strtab` starts with the empty name.
            extra: vec![0],
        }
    }
}

impl Blob {
    pub fn from_base(base: Base) -> Self {
        Blob {
            verifier: Verifier::new(base.len.div_ceil(PAGE_BYTES)),
            base: Some(base),
            extra: Vec::new(),
        }
    }

    fn base_len(&self) -> usize {
        self.base.as_ref().map_or(0, |b| b.len)
    }

    pub fn len(&self) -> usize {
        self.base_len() + self.extra.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append a name and its NUL; returns its offset.
    pub fn push(&mut self, name: &[u8]) -> u32 {
        if let (true, Some(base)) = (self.extra.is_empty(), &self.base) {
            // The last old page is written again with the new names after its old ones.
            if base.len > 0 {
                self.verifier.check(base, base.len - 1);
            }
        }
        let off = self.len() as u32;
        self.extra.extend_from_slice(name);
        self.extra.push(0);
        off
    }

    /// The name at `off`: the bytes up to its NUL (names double as `.strtab`, so the NUL is
    /// there anyway and no length needs keeping); empty (and the damaged mark) if
    /// unverifiable or unterminated.
    pub fn get_name(&self, off: u32) -> &[u8] {
        let off = off as usize;
        let base_len = self.base_len();
        let bytes: Option<&[u8]> = if off >= base_len {
            self.extra.get(off - base_len..)
        } else {
            let base = self.base.as_ref().expect("checked above");
            self.verifier
                .check(base, off)
                .then(|| &base.map[base.offset + off..base.offset + base_len])
        };
        let name = bytes.and_then(|b| {
            let n = b.iter().position(|&c| c == 0)?;
            // Every further page the name runs into, up to its NUL.
            let end = off + n;
            if end < base_len {
                let base = self.base.as_ref()?;
                for page in off / PAGE_BYTES + 1..=end / PAGE_BYTES {
                    if !self.verifier.check(base, page * PAGE_BYTES) {
                        return None;
                    }
                }
            }
            Some(&b[..n])
        });
        name.unwrap_or_else(|| {
            self.verifier.damaged.store(true, Relaxed);
            &[]
        })
    }

    pub fn damaged(&self) -> bool {
        self.verifier.damaged.load(Relaxed)
    }

    /// Bytes appended in this session, and the offset they start at.
    pub fn appended(&self) -> (u32, &[u8]) {
        (self.base_len() as u32, &self.extra)
    }

    /// The whole blob: borrowed when it is all in memory.
    pub fn to_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        let Some(b) = &self.base else {
            return std::borrow::Cow::Borrowed(&self.extra);
        };
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&b.map[b.offset..b.offset + b.len]);
        out.extend_from_slice(&self.extra);
        std::borrow::Cow::Owned(out)
    }

    pub fn has_base(&self) -> bool {
        self.base.is_some()
    }
}

/// Name → symbol id: an open-addressing hash table stored as records, so an update looks
/// names up in the old file without building anything. A slot is 0 (empty) or the id plus
/// one in its low 24 bits under the top 8 bits of the name's hash: a probe that meets
/// another name is told apart by those bits 255 times in 256, without reading the name, so
/// the table can be 80% full (4 bytes per slot, ~5 per symbol).
#[derive(Default)]
pub struct NameIndex {
    pub slots: Records<u32>,
    pub count: u32,
}

pub fn name_hash(name: &[u8]) -> u64 {
    xxh3_64(name)
}

/// Ids that fit a slot beside the hash bits.
pub const MAX_SYMBOLS: u32 = (1 << 24) - 1;
const ID_MASK: u32 = (1 << 24) - 1;

fn tag(hash: u64) -> u32 {
    ((hash >> 56) as u32) << 24
}

impl NameIndex {
    pub fn from_base(base: Base, count: u32) -> Self {
        NameIndex {
            slots: Records::from_base(base),
            count,
        }
    }

    fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The id stored for `name`, using `name_of` to compare candidates.
    pub fn lookup(&self, name: &[u8], name_of: impl Fn(u32) -> bool) -> Option<u32> {
        let cap = self.capacity();
        if cap == 0 {
            return None;
        }
        let hash = name_hash(name);
        let tag = tag(hash);
        let mut i = (hash as usize) & (cap - 1);
        for _ in 0..cap {
            match self.slots.get(i as u32) {
                0 => return None,
                v if v & !ID_MASK == tag && name_of((v & ID_MASK) - 1) => {
                    return Some((v & ID_MASK) - 1)
                }
                _ => i = (i + 1) & (cap - 1),
            }
        }
        None
    }

    /// Insert `id` (below [`MAX_SYMBOLS`]: the caller checks) under `hash`; `rehash` lists
    /// every (hash, id) when the table must grow (past 80% full, to 40–80%).
    pub fn insert(&mut self, hash: u64, id: u32, rehash: impl FnOnce() -> Vec<(u64, u32)>) {
        debug_assert!(id < MAX_SYMBOLS);
        if (self.count as usize + 1) * 5 > self.capacity() * 4 {
            let entries = rehash();
            let cap = ((entries.len() + 1) * 5 / 4 + 1)
                .next_power_of_two()
                .max(64);
            let mut slots = Records::default();
            for _ in 0..cap {
                slots.push(0u32);
            }
            self.slots = slots;
            self.count = 0;
            for (h, id) in entries {
                self.place(h, id);
            }
        }
        self.place(hash, id);
    }

    fn place(&mut self, hash: u64, id: u32) {
        let cap = self.capacity();
        let mut i = (hash as usize) & (cap - 1);
        while self.slots.get(i as u32) != 0 {
            i = (i + 1) & (cap - 1);
        }
        self.slots.set(i as u32, tag(hash) | (id + 1));
        self.count += 1;
    }
}
