//! Which input files changed since the previous build, decided without reading the others.
//!
//! An edit loop must cost what the edit costs, so an update may not read, let alone hash, the
//! files that did not change. As git's index does, the table keeps each input file's stat
//! data (size, mtime and ctime with nanoseconds, inode, device) beside the digest of what the
//! file defined; a file whose stat data is what was recorded is taken as unchanged and never
//! opened. A file whose stat data differs is read and hashed, and its digest is the judge:
//! `touch` without a change recompiles nothing (its new stat data is recorded), while an
//! editor's save by rename (a new inode) or a file deleted and recreated is read again.
//!
//! **Racily clean files.** Timestamps have a granularity (a kernel tick for most file
//! systems), so a file written again in the same tick as the build read it can keep the
//! recorded mtime and size. Two rules, both git's:
//! - a file whose mtime or ctime is not older than the table's own write time (OUT's mtime)
//!   is hashed whatever its stat data says;
//! - a file stamped at or after the moment the build started (on the coarse clock the kernel
//!   stamps files with, read before any input was examined) is recorded with empty stat data
//!   ("smudged", in git's words), so the next build hashes it. This closes the gap the first
//!   rule leaves when the table is written in a later tick than the file was read.
//!
//! No build time is recorded, only stat data: two builds of the same files write the same
//! bytes, unless one of them saw a file stamped in its own first tick.
//!
//! The manifest is opaque to the image: it is this module's encoding, checked by the table's
//! body checksum like the rest of the body; a manifest that does not decode means a full build.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{BackendError, Result};

/// What `stat` says about a file: enough to notice any ordinary change without reading it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl FileStat {
    pub fn of(path: &Path) -> Result<FileStat> {
        let m = std::fs::metadata(path).map_err(|error| BackendError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(FileStat {
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
        })
    }
}

/// Stat every input, in order; a missing file is an error naming it.
pub fn stat_all(paths: &[PathBuf]) -> Result<Vec<FileStat>> {
    paths.iter().map(|p| FileStat::of(p)).collect()
}

/// The time on the clock file systems stamp files with (the kernel's coarse real-time clock),
/// in nanoseconds since the epoch.
pub fn coarse_now_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; CLOCK_REALTIME_COARSE exists on Linux.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if r != 0 {
        // Cannot happen on Linux. The latest time smudges every file's record: the next
        // build hashes them all, which is slow but never wrong.
        return i64::MAX;
    }
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// One input file as the table remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRecord {
    /// xxh3 of the path as given on the command line.
    pub path_hash: u64,
    /// Digest of everything the file defines (see `clif::SourceFile::digest`).
    pub digest: u64,
    pub stat: FileStat,
    /// The unit number its symbols carry in the table (stable while the file stays an input).
    pub unit: u32,
    /// How many functions and data objects it defines.
    pub definitions: u32,
}

const RECORD_BYTES: usize = 8 * 7 + 4 * 2;
const MAGIC: &[u8; 8] = b"ZLINPUT1";

/// Every input file of the previous build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub files: Vec<FileRecord>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.files.len() * RECORD_BYTES);
        out.extend_from_slice(MAGIC);
        for f in &self.files {
            for v in [
                f.path_hash,
                f.digest,
                f.stat.size,
                f.stat.mtime_ns as u64,
                f.stat.ctime_ns as u64,
                f.stat.ino,
                f.stat.dev,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&f.unit.to_le_bytes());
            out.extend_from_slice(&f.definitions.to_le_bytes());
        }
        out
    }

    /// `None` if the bytes are not a manifest of this format.
    pub fn decode(bytes: &[u8]) -> Option<Manifest> {
        let rest = bytes.strip_prefix(MAGIC)?;
        if rest.len() % RECORD_BYTES != 0 {
            return None;
        }
        // `chunks_exact` hands out whole records, so every field below is in bounds.
        let word = |c: &[u8], i: usize| {
            u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        };
        let half =
            |c: &[u8], at: usize| u32::from_le_bytes(c[at..at + 4].try_into().expect("4 bytes"));
        let files = rest
            .chunks_exact(RECORD_BYTES)
            .map(|c| FileRecord {
                path_hash: word(c, 0),
                digest: word(c, 1),
                stat: FileStat {
                    size: word(c, 2),
                    mtime_ns: word(c, 3) as i64,
                    ctime_ns: word(c, 4) as i64,
                    ino: word(c, 5),
                    dev: word(c, 6),
                },
                unit: half(c, 56),
                definitions: half(c, 60),
            })
            .collect();
        Some(Manifest { files })
    }

    /// Records by path hash.
    pub fn by_path(&self) -> HashMap<u64, &FileRecord> {
        self.files.iter().map(|f| (f.path_hash, f)).collect()
    }

    /// The first unit number no file of this manifest uses.
    pub fn next_unit(&self) -> u32 {
        self.files.iter().map(|f| f.unit + 1).max().unwrap_or(0)
    }
}

pub fn path_hash(path: &Path) -> u64 {
    xxhash_rust::xxh3::xxh3_64(path.as_os_str().as_encoded_bytes())
}

/// Whether a file can be taken as unchanged without reading it: its stat data is the one
/// recorded, and it was not stamped at or after the table was written (racily clean).
pub fn clean(recorded: &FileRecord, now: &FileStat, table_written_ns: i64) -> bool {
    recorded.stat == *now && now.mtime_ns < table_written_ns && now.ctime_ns < table_written_ns
}

/// The stat data to record for a file examined by a build that started at `started_ns`:
/// empty (never equal to a file's) when the file was stamped in or after that tick.
pub fn to_record(stat: FileStat, started_ns: i64) -> FileStat {
    if stat.mtime_ns >= started_ns || stat.ctime_ns >= started_ns {
        FileStat::default()
    } else {
        stat
    }
}

/// When `path` was last written, in nanoseconds since the epoch.
pub fn written_ns(path: &Path) -> Option<i64> {
    let m = std::fs::metadata(path).ok()?;
    Some(m.mtime() * 1_000_000_000 + m.mtime_nsec())
}

/// What to do with each input of an update.
pub struct Plan {
    /// Per input: `Some(record)` when it is unchanged and is not read.
    pub kept: Vec<Option<FileRecord>>,
    /// The unit number of each input: its recorded one, or a new one.
    pub units: Vec<u32>,
}

/// Decide, for each input, whether it must be read: its stat data changed, it is racily
/// clean, it is new, or `also_read` asks for it (by unit). A path given twice is read both
/// times (reading reports the duplicate definitions).
pub fn plan(
    paths: &[PathBuf],
    stats: &[FileStat],
    manifest: &Manifest,
    table_written_ns: i64,
    also_read: &dyn Fn(u32) -> bool,
) -> Plan {
    let by_path = manifest.by_path();
    let mut next_unit = manifest.next_unit();
    let hashes: Vec<u64> = paths.iter().map(|p| path_hash(p)).collect();
    let mut seen: HashMap<u64, usize> = HashMap::with_capacity(paths.len());
    for h in &hashes {
        *seen.entry(*h).or_default() += 1;
    }
    let mut kept = Vec::with_capacity(paths.len());
    let mut units = Vec::with_capacity(paths.len());
    for (h, stat) in hashes.iter().zip(stats) {
        match by_path.get(h) {
            Some(r) if seen[h] == 1 => {
                units.push(r.unit);
                let keep = clean(r, stat, table_written_ns) && !also_read(r.unit);
                kept.push(keep.then_some(**r));
            }
            _ => {
                units.push(next_unit);
                next_unit += 1;
                kept.push(None);
            }
        }
    }
    Plan { kept, units }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FileStat {
        FileStat {
            size: 10,
            mtime_ns: 100,
            ctime_ns: 100,
            ino: 1,
            dev: 1,
        }
    }

    fn record(stat: FileStat) -> FileRecord {
        FileRecord {
            path_hash: 1,
            digest: 2,
            stat,
            unit: 0,
            definitions: 3,
        }
    }

    #[test]
    fn manifest_round_trips() {
        let m = Manifest {
            files: vec![record(FileStat {
                size: 10,
                mtime_ns: -5,
                ctime_ns: 7,
                ino: 8,
                dev: 9,
            })],
        };
        assert_eq!(Manifest::decode(&m.encode()), Some(m));
        assert_eq!(Manifest::decode(b"junk"), None);
    }

    #[test]
    fn same_stat_data_is_clean_unless_racy() {
        let stat = sample();
        let r = record(stat);
        assert!(clean(&r, &stat, 101));
        // Stamped in the tick the previous build started: it may have changed unseen.
        assert!(!clean(&r, &stat, 100));
        assert!(!clean(&r, &FileStat { ino: 2, ..stat }, 101));
        assert!(!clean(
            &r,
            &FileStat {
                ctime_ns: 99,
                ..stat
            },
            101
        ));
        assert!(!clean(&r, &FileStat { size: 11, ..stat }, 101));
    }

    #[test]
    fn files_stamped_in_the_first_tick_of_a_build_are_smudged() {
        let stat = sample();
        assert_eq!(to_record(stat, 101), stat);
        let smudged = to_record(stat, 100);
        assert!(!clean(&record(smudged), &stat, i64::MAX));
    }
}
