//! Symbol versions the executable asks for: `.gnu.version` (one `u16` per `.dynsym` entry)
//! and `.gnu.version_r` (per library, the version names it must provide).
//!
//! Without them the loader binds an unversioned reference to the *oldest* definition of a
//! name (glibc's `check_match`: version index 2 is taken at once), and glibc keeps old
//! behaviours under old versions: `realpath@GLIBC_2.2.5` wants a buffer and returns NULL
//! without one, `pthread_cond_init@GLIBC_2.2.5` is the LinuxThreads-compatible condition
//! variable. ld writes for each import the version of the library's default definition
//! (`name@@VERSION`), and so does the image (the library's reading is in the backend's
//! `libs.rs`).

use object::elf;
use object::endian::{LittleEndian as LE, U16, U32};
use object::pod::bytes_of;

/// The version one `.dynsym` entry asks for: the library (its `DT_NEEDED` name) and the
/// version name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub file: &'a str,
    pub name: &'a str,
}

/// The tables, once laid out.
#[derive(Debug, Default)]
pub struct Tables {
    /// `.gnu.version`: an entry for the null symbol, then one per entry of `wanted`.
    pub versym: Vec<u8>,
    /// `.gnu.version_r`.
    pub verneed: Vec<u8>,
    /// Number of `Elf64_Verneed` records (`DT_VERNEEDNUM`).
    pub files: usize,
}

/// Lay out the tables for `.dynsym` entries asking for `wanted` (`None`: unversioned), adding
/// the names they need to `dynstr`. Empty tables when nothing is versioned.
pub fn tables(wanted: &[Option<Wanted<'_>>], dynstr: &mut Vec<u8>) -> Tables {
    if wanted.iter().all(Option::is_none) {
        return Tables::default();
    }
    let mut string = |s: &str| {
        let at = dynstr.len() as u32;
        dynstr.extend_from_slice(s.as_bytes());
        dynstr.push(0);
        at
    };
    // Files in order of first use, each with its version names in order of first use;
    // indices from 2 (0 and 1 are local and global).
    let mut files: Vec<(&str, Vec<&str>)> = Vec::new();
    for w in wanted.iter().flatten() {
        match files.iter_mut().find(|(f, _)| *f == w.file) {
            Some((_, names)) if !names.contains(&w.name) => names.push(w.name),
            Some(_) => {}
            None => files.push((w.file, vec![w.name])),
        }
    }
    let index_of = |w: &Wanted<'_>| {
        let mut i = 2u16;
        for (f, names) in &files {
            for n in names {
                if *f == w.file && *n == w.name {
                    return i;
                }
                i += 1;
            }
        }
        unreachable!("every wanted version was listed")
    };
    let mut versym = Vec::with_capacity(2 * (wanted.len() + 1));
    versym.extend_from_slice(&0u16.to_le_bytes());
    for w in wanted {
        let v = w.as_ref().map_or(elf::VER_NDX_GLOBAL, index_of);
        versym.extend_from_slice(&v.to_le_bytes());
    }
    let mut verneed = Vec::new();
    let mut index = 2u16;
    for (k, (file, names)) in files.iter().enumerate() {
        let aux_bytes = 16 * names.len() as u32;
        let need = elf::Verneed::<LE> {
            vn_version: U16::new(LE, elf::VER_NEED_CURRENT),
            vn_cnt: U16::new(LE, names.len() as u16),
            vn_file: U32::new(LE, string(file)),
            vn_aux: U32::new(LE, 16),
            vn_next: U32::new(
                LE,
                if k + 1 == files.len() {
                    0
                } else {
                    16 + aux_bytes
                },
            ),
        };
        verneed.extend_from_slice(bytes_of(&need));
        for (j, name) in names.iter().enumerate() {
            let aux = elf::Vernaux::<LE> {
                vna_hash: U32::new(LE, crate::dynamic::sysv_hash(name.as_bytes())),
                vna_flags: U16::new(LE, 0),
                vna_other: U16::new(LE, index),
                vna_name: U32::new(LE, string(name)),
                vna_next: U32::new(LE, if j + 1 == names.len() { 0 } else { 16 }),
            };
            verneed.extend_from_slice(bytes_of(&aux));
            index += 1;
        }
    }
    Tables {
        versym,
        verneed,
        files: files.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_grouped_by_library_and_numbered_from_two() {
        let libc = |name| {
            Some(Wanted {
                file: "libc.so.6",
                name,
            })
        };
        let wanted = [
            libc("GLIBC_2.3"),
            None,
            Some(Wanted {
                file: "libm.so.6",
                name: "GLIBC_2.29",
            }),
            libc("GLIBC_2.2.5"),
            libc("GLIBC_2.3"),
        ];
        let mut dynstr = vec![0];
        let t = tables(&wanted, &mut dynstr);
        let versym: Vec<u16> = t
            .versym
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(versym, vec![0, 2, 1, 4, 3, 2]);
        assert_eq!(t.files, 2);
        assert_eq!(t.verneed.len(), 16 + 2 * 16 + 16 + 16);
        assert_eq!(crate::dynamic::sysv_hash(b"GLIBC_2.2.5"), 0x09691a75);
    }
}
