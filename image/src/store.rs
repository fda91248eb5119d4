//! Where the image's bytes go: straight into a fresh file, or into an overlay over an existing
//! executable that is applied only when the whole update has been planned without error.
//!
//! The overlay is what makes a failed incremental build harmless: compiling, placing and
//! patching all happen against the overlay, reading through it to the old file, and nothing
//! touches the old file until `commit`. Commit then follows the crash protocol written in
//! RATIONALE.md: mark the old table *in progress* and point the entry at the
//! "interrupted update" stub, apply every write in order, restore the entry, clear the flag.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Mmap, MmapMut};

use crate::error::{ImageError, Result};
use crate::layout::align_up;
use crate::output::Output;

/// An existing executable and the writes planned for it.
pub struct Overlay {
    path: PathBuf,
    base: Arc<Mmap>,
    len: u64,
    writes: Vec<(u64, Vec<u8>)>,
}

/// The final steps of an in-place update, applied in this order by `commit`.
pub struct CommitPlan {
    /// Where the old table's flags word is, to mark it in progress first.
    pub old_flags_at: Option<u64>,
    pub in_progress_flags: u32,
    /// `e_entry` while the update is under way: the "interrupted update" stub.
    pub interrupted_entry: u64,
    /// `e_phoff` once the new program header table is written in full (it is written into
    /// the slot the old file does not use, see `elf::PHDR_SLOTS`).
    pub phoff: u64,
    /// `e_entry` once the update is complete.
    pub entry: u64,
    /// Where the new table's flags word is, and its final value.
    pub new_flags_at: u64,
    pub final_flags: u32,
}

const E_ENTRY_OFFSET: u64 = 24;

/// Environment variable of the crash tests: abort the process after this many bytes of an
/// in-place update have been written, as a SIGKILL at that moment would.
pub const ABORT_AFTER_ENV: &str = "ZEROLINK_TEST_ABORT_AFTER_BYTES";

/// Environment variable of the commit-sweep tests: write every step of an in-place update's
/// commit, in order, to this file (see `CommitLog`), so a test can replay every prefix.
pub const COMMIT_LOG_ENV: &str = "ZEROLINK_TEST_COMMIT_LOG";

/// The steps of a commit as the sweep tests read them: `L` and the new file length (u64),
/// then per step `W` (an atomic word store) or `B` (bytes), the offset (u64), the length
/// (u64) and the bytes. All little-endian.
#[derive(Default)]
struct CommitLog(Vec<u8>);

impl CommitLog {
    fn step(&mut self, tag: u8, at: u64, data: &[u8]) {
        self.0.push(tag);
        self.0.extend_from_slice(&at.to_le_bytes());
        self.0.extend_from_slice(&(data.len() as u64).to_le_bytes());
        self.0.extend_from_slice(data);
    }
}

impl Overlay {
    pub fn open(path: &Path) -> Result<Overlay> {
        let file = File::open(path).map_err(ImageError::io(path))?;
        // SAFETY: mapped read-only; a concurrent writer could change what we read, which at
        // worst makes this update's checks fail or the table's checksum mismatch.
        let base = unsafe { Mmap::map(&file) }.map_err(ImageError::io(path))?;
        Ok(Overlay {
            path: path.to_path_buf(),
            len: base.len() as u64,
            base: Arc::new(base),
            writes: Vec::new(),
        })
    }

    /// The old file, shared with the table arrays that read it in place.
    pub fn base(&self) -> &Arc<Mmap> {
        &self.base
    }

    /// Apply the planned writes to the file (or, if it is running, to a copy renamed over it).
    pub fn commit(self, plan: &CommitPlan) -> Result<()> {
        let path = self.path.clone();
        let (file, replace) = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => (f, None),
            // Linux refuses to open a running executable for writing: update a copy instead
            // and rename it over the original, whose inode the running process keeps.
            Err(e) if e.raw_os_error() == Some(26 /* ETXTBSY */) => {
                let tmp = temp_beside(&path);
                if let Err(e) = std::fs::copy(&path, &tmp) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(ImageError::io(&path)(e));
                }
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&tmp)
                    .map_err(ImageError::io(&tmp))?;
                (f, Some(tmp))
            }
            Err(e) => return Err(ImageError::io(&path)(e)),
        };
        let target = replace.clone().unwrap_or_else(|| path.clone());
        let result = apply(&file, &target, self.len, &self.writes, plan);
        match (result, replace) {
            (Ok(()), Some(tmp)) => std::fs::rename(&tmp, &path).map_err(ImageError::io(&path)),
            (Ok(()), None) => Ok(()),
            (Err(e), Some(tmp)) => {
                let _ = std::fs::remove_file(tmp);
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.zl-{}.update", std::process::id()))
}

struct Budget(Option<u64>, Option<CommitLog>);

impl Budget {
    /// Store an aligned word with one instruction: a kill can never leave half of it behind,
    /// which matters for `e_entry` (half an address would jump into the middle of the text).
    fn store_word(&mut self, map: &mut MmapMut, at: u64, value: u64, width: usize) {
        if let Some(log) = &mut self.1 {
            log.step(b'W', at, &value.to_le_bytes()[..width]);
        }
        if let Some(left) = self.0 {
            if (width as u64) > left {
                std::process::abort();
            }
            self.0 = Some(left - width as u64);
        }
        let ptr = map[at as usize..at as usize + width].as_mut_ptr();
        assert_eq!(ptr as usize % width, 0, "protocol words are aligned");
        // SAFETY: in bounds (sliced above) and aligned (asserted).
        unsafe {
            match width {
                8 => std::ptr::write_volatile(ptr.cast::<u64>(), value.to_le()),
                _ => std::ptr::write_volatile(ptr.cast::<u32>(), (value as u32).to_le()),
            }
        }
    }

    /// Write `data` at `at`, aborting the process midway if the test budget runs out.
    fn write(&mut self, map: &mut MmapMut, at: u64, data: &[u8]) {
        if let Some(log) = &mut self.1 {
            log.step(b'B', at, data);
        }
        let at = at as usize;
        if let Some(left) = self.0 {
            if (data.len() as u64) > left {
                let part = left as usize;
                map[at..at + part].copy_from_slice(&data[..part]);
                std::process::abort();
            }
            self.0 = Some(left - data.len() as u64);
        }
        map[at..at + data.len()].copy_from_slice(data);
    }
}

fn apply(
    file: &File,
    path: &Path,
    len: u64,
    writes: &[(u64, Vec<u8>)],
    plan: &CommitPlan,
) -> Result<()> {
    let current = file.metadata().map_err(ImageError::io(path))?.len();
    // 0. Space before bytes: every range written below gets its blocks now, so a full disk is
    // an ordinary error while the file is still as it was (a store through the map into a
    // hole that cannot be backed would be SIGBUS, halfway through the commit).
    let reserved = (|| {
        if len > current {
            reserve_space(file, current, len - current)?;
        }
        // One call per run of nearby writes (OUT is open for writing, and so refuses to start,
        // for as long as the commit takes): gaps of under 1 MiB are reserved too, which costs
        // nothing where the file already has its blocks.
        let mut spans: Vec<(u64, u64)> = writes
            .iter()
            .map(|(at, data)| (*at, *at + data.len() as u64))
            .collect();
        spans.sort_unstable();
        let mut run: Option<(u64, u64)> = None;
        for (start, end) in spans {
            run = match run {
                Some((s, e)) if start <= e + (1 << 20) => Some((s, e.max(end))),
                Some((s, e)) => {
                    reserve_space(file, s, e - s)?;
                    Some((start, end))
                }
                None => Some((start, end)),
            };
        }
        if let Some((s, e)) = run {
            reserve_space(file, s, e - s)?;
        }
        Ok(())
    })();
    if let Err(e) = reserved {
        // The file may have grown: give the length back, so OUT is byte-for-byte as it was.
        let _ = file.set_len(current);
        return Err(ImageError::io(path)(e));
    }
    if len > current {
        file.set_len(len).map_err(ImageError::io(path))?;
    }
    // SAFETY: the file is opened read-write by us; nothing else may map it while we update it
    // (a second zerolink on the same output is not supported).
    let mut map = unsafe { MmapMut::map_mut(file) }.map_err(ImageError::io(path))?;
    let log_path = std::env::var_os(COMMIT_LOG_ENV);
    let mut budget = Budget(
        std::env::var(ABORT_AFTER_ENV)
            .ok()
            .and_then(|v| v.parse().ok()),
        log_path.as_ref().map(|_| {
            let mut log = CommitLog::default();
            log.0.push(b'L');
            log.0.extend_from_slice(&len.max(current).to_le_bytes());
            log
        }),
    );
    // 1. From here until the last step the file refuses to run and the next build rebuilds it.
    if let Some(at) = plan.old_flags_at {
        budget.store_word(&mut map, at, u64::from(plan.in_progress_flags), 4);
    }
    budget.store_word(&mut map, E_ENTRY_OFFSET, plan.interrupted_entry, 8);
    // 2. Everything planned, in order (the new headers still name the stub as entry).
    for (at, data) in writes {
        budget.write(&mut map, *at, data);
    }
    // 3. The new program headers in force, still entering the stub; runnable again; 4. the
    // table is trusted again.
    budget.store_word(&mut map, crate::elf::E_PHOFF_OFFSET, plan.phoff, 8);
    budget.store_word(&mut map, E_ENTRY_OFFSET, plan.entry, 8);
    budget.store_word(&mut map, plan.new_flags_at, u64::from(plan.final_flags), 4);
    if let (Some(path), Some(log)) = (log_path, budget.1) {
        std::fs::write(&path, log.0).map_err(ImageError::io(PathBuf::from(&path)))?;
    }
    Ok(())
}

/// Give `file` blocks for `len` bytes at `offset` (growing it if they lie beyond its end), so
/// that stores through a mapping there cannot fail. A file system that cannot reserve space
/// (`EOPNOTSUPP`) is left to fail later, as before.
pub(crate) fn reserve_space(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(());
    }
    loop {
        // SAFETY: a valid descriptor; mode 0 allocates and never changes the file's contents.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset as i64, len as i64) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => return Ok(()),
            _ => return Err(e),
        }
    }
}

/// The image's bytes: a fresh file, or an overlay over an existing one.
pub enum Store {
    Fresh(Output),
    Overlay(Overlay),
}

impl Store {
    pub fn len(&self) -> u64 {
        match self {
            Store::Fresh(o) => o.len(),
            Store::Overlay(o) => o.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn allocate(&mut self, size: u64, align: u64) -> Result<u64> {
        match self {
            Store::Fresh(o) => o.allocate(size, align),
            Store::Overlay(o) => {
                let offset = align_up(o.len, align);
                o.len = offset + size;
                Ok(offset)
            }
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        match self {
            Store::Fresh(o) => o.write(offset, data),
            Store::Overlay(o) => {
                // Consecutive writes are merged so a function's code and its patches travel
                // as one piece.
                if let Some((at, last)) = o.writes.last_mut() {
                    if *at + last.len() as u64 == offset {
                        last.extend_from_slice(data);
                        return;
                    }
                }
                o.writes.push((offset, data.to_vec()));
            }
        }
    }

    /// Write `data` at `offset`, leaving out the 4 KiB pieces that the file already holds: an
    /// update that rewrites a large, mostly unchanged blob (unwind or debug tables) writes what
    /// changed. Only for a range nothing else writes in this build (it compares with the file
    /// as it was opened).
    pub fn write_changed(&mut self, offset: u64, data: &[u8]) {
        let Store::Overlay(o) = self else {
            return self.write(offset, data);
        };
        let base = o.base.clone();
        for (k, piece) in data.chunks(4096).enumerate() {
            let at = offset + 4096 * k as u64;
            let old = base.get(at as usize..at as usize + piece.len());
            if old != Some(piece) {
                self.write(at, piece);
            }
        }
    }

    pub fn fill(&mut self, offset: u64, len: u64, byte: u8) {
        match self {
            Store::Fresh(o) => o.fill(offset, len, byte),
            Store::Overlay(_) => self.write(offset, &vec![byte; len as usize]),
        }
    }

    /// Current contents (old file plus planned writes).
    /// The ranges this build wrote: `None` for a fresh file (all of it is new).
    pub fn written(&self) -> Option<impl Iterator<Item = (u64, u64)> + '_> {
        match self {
            Store::Fresh(_) => None,
            Store::Overlay(o) => Some(
                o.writes
                    .iter()
                    .map(|(at, data)| (*at, *at + data.len() as u64)),
            ),
        }
    }

    /// The xxh3 checksum of `len` bytes at `offset`, as they will be in the file.
    /// The checksum of `len` bytes at `offset` of the file as it was opened (before this
    /// build's writes); `None` for a fresh file or bytes past the old end.
    pub fn base_checksum(&self, offset: u64, len: u64) -> Option<u64> {
        match self {
            Store::Fresh(_) => None,
            Store::Overlay(o) => {
                let end = usize::try_from(offset.checked_add(len)?).ok()?;
                o.base
                    .get(offset as usize..end)
                    .map(xxhash_rust::xxh3::xxh3_64)
            }
        }
    }

    pub fn checksum(&self, offset: u64, len: u64) -> u64 {
        match self {
            Store::Fresh(o) => xxhash_rust::xxh3::xxh3_64(o.bytes(offset, len)),
            Store::Overlay(_) => xxhash_rust::xxh3::xxh3_64(&self.read(offset, len)),
        }
    }

    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        match self {
            Store::Fresh(o) => o.bytes(offset, len).to_vec(),
            Store::Overlay(o) => {
                let mut buf = vec![0u8; len as usize];
                let base_end = (o.base.len() as u64).min(offset + len);
                if offset < base_end {
                    buf[..(base_end - offset) as usize]
                        .copy_from_slice(&o.base[offset as usize..base_end as usize]);
                }
                for (at, data) in &o.writes {
                    let (s, e) = (*at, *at + data.len() as u64);
                    let (lo, hi) = (s.max(offset), e.min(offset + len));
                    if lo < hi {
                        buf[(lo - offset) as usize..(hi - offset) as usize]
                            .copy_from_slice(&data[(lo - s) as usize..(hi - s) as usize]);
                    }
                }
                buf
            }
        }
    }

    pub fn copy_within(&mut self, from: u64, len: u64, to: u64) {
        match self {
            Store::Fresh(o) => o.copy_within(from, len, to),
            Store::Overlay(_) => {
                let data = self.read(from, len);
                self.write(to, &data);
            }
        }
    }

    /// Bytes written to the store so far (an update's write volume).
    pub fn planned_bytes(&self) -> u64 {
        match self {
            Store::Fresh(o) => o.len(),
            Store::Overlay(o) => o.writes.iter().map(|(_, d)| d.len() as u64).sum(),
        }
    }
}
