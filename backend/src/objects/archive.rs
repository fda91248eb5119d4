//! `ar` archives: the members, and every symbol each member offers, read once from the
//! archive's symbol index (or, if it has none, from the members' own symbol tables). Members
//! are parsed only when a reference needs one (see `link.rs`).

use std::collections::HashMap;

use object::read::archive::ArchiveFile;

use super::elf;
use super::ObjectError;

/// Bytes at an 8-byte aligned address: the ELF reader reads headers in place, and archive
/// members start at any even offset.
pub struct Aligned {
    words: Vec<u64>,
    len: usize,
}

impl Aligned {
    pub fn new(bytes: &[u8]) -> Aligned {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `words` holds at least `bytes.len()` bytes, and u64 has no invalid values.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
        };
        dst[..bytes.len()].copy_from_slice(bytes);
        Aligned {
            words,
            len: bytes.len(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the words own at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// One member: its name and where its bytes are in the archive.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// xxh3 of its bytes: what says a member changed.
    pub digest: u64,
    /// How many members before it have the same name (`ar q` allows repeats).
    pub occurrence: usize,
    pub start: usize,
    pub len: usize,
}

pub struct Archive {
    pub bytes: Vec<u8>,
    pub members: Vec<Member>,
    /// Global name → the first member that defines it.
    pub offers: HashMap<String, usize>,
}

pub fn is_archive(bytes: &[u8]) -> bool {
    bytes.starts_with(b"!<arch>\n") || bytes.starts_with(b"!<thin>\n")
}

impl Archive {
    pub fn parse(bytes: Vec<u8>) -> Result<Archive, ObjectError> {
        let file =
            ArchiveFile::parse(&*bytes).map_err(|e| ObjectError::Malformed(e.to_string()))?;
        if file.is_thin() {
            return Err(ObjectError::ThinArchive);
        }
        let mut members = Vec::new();
        let mut by_start = HashMap::new();
        let mut seen_names: HashMap<String, usize> = HashMap::new();
        for m in file.members() {
            let m = m.map_err(|e| ObjectError::Malformed(e.to_string()))?;
            let (start, len) = m.file_range();
            let (start, len) = (start as usize, len as usize);
            if start.checked_add(len).is_none_or(|end| end > bytes.len()) {
                return Err(ObjectError::Malformed(format!(
                    "member `{}` lies outside the archive",
                    String::from_utf8_lossy(m.name())
                )));
            }
            by_start.insert(start as u64, members.len());
            let name = String::from_utf8_lossy(m.name()).into_owned();
            let seen = seen_names.entry(name.clone()).or_insert(0usize);
            let occurrence = *seen;
            *seen += 1;
            members.push(Member {
                digest: xxhash_rust::xxh3::xxh3_64(&bytes[start..start + len]),
                name,
                occurrence,
                start,
                len,
            });
        }
        let mut offers = HashMap::new();
        let index = file
            .symbols()
            .map_err(|e| ObjectError::Malformed(e.to_string()))?;
        match index {
            Some(symbols) => {
                // Symbols of one member share its header offset: each header is read once.
                let mut by_header: HashMap<u64, Option<usize>> = HashMap::new();
                for s in symbols {
                    let s = s.map_err(|e| ObjectError::Malformed(e.to_string()))?;
                    // The index points at a member's header: find whose data follows it.
                    let member = *by_header.entry(s.offset().0).or_insert_with(|| {
                        let start = file.member(s.offset()).ok().map(|m| m.file_range().0);
                        start.and_then(|st| by_start.get(&st).copied())
                    });
                    let Some(member) = member else {
                        return Err(ObjectError::Malformed(format!(
                            "the symbol index puts `{}` in a member that does not exist",
                            String::from_utf8_lossy(s.name())
                        )));
                    };
                    offers
                        .entry(String::from_utf8_lossy(s.name()).into_owned())
                        .or_insert(member);
                }
            }
            None => {
                // No index (`ar` without `s`): read each member's symbols, as `ld` would
                // after `ranlib`.
                for (i, m) in members.iter().enumerate() {
                    let data = &bytes[m.start..m.start + m.len];
                    if !elf::is_object(data) {
                        continue;
                    }
                    let obj = elf::parse(Aligned::new(data).bytes())
                        .map_err(|e| ObjectError::Member(m.name.clone(), Box::new(e)))?;
                    for s in obj.symbols.iter().filter(|s| s.is_global()) {
                        if matches!(s.def, elf::SymDef::Section(_) | elf::SymDef::Absolute) {
                            offers.entry(s.name.clone()).or_insert(i);
                        }
                    }
                }
            }
        }
        Ok(Archive {
            bytes,
            members,
            offers,
        })
    }

    /// A digest of the whole archive, from its members' (each byte is hashed once).
    pub fn digest(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for m in &self.members {
            h.update(m.name.as_bytes());
            h.update(&m.digest.to_le_bytes());
        }
        h.digest()
    }

    pub fn member_bytes(&self, i: usize) -> &[u8] {
        let m = &self.members[i];
        &self.bytes[m.start..m.start + m.len]
    }
}
