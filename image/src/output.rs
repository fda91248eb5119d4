//! The output file: written through a memory map as it grows, under a temporary name beside
//! the destination, and renamed over it only once complete.
//!
//! Renaming gives three guarantees at once: a failed build leaves an earlier executable
//! byte-for-byte untouched; nobody ever sees a half-written file at the destination; and an
//! executable that is running right now (which Linux refuses to open for writing, `ETXTBSY`)
//! keeps its old inode and runs on undisturbed.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::error::{ImageError, Result};
use crate::layout::align_up;

pub struct Output {
    final_path: PathBuf,
    tmp_path: PathBuf,
    file: File,
    map: MmapMut,
    /// End of the content allocated so far; the file itself may be longer (room to grow).
    len: u64,
    /// How far the mapping has been faulted in ahead of writing (`MADV_POPULATE_WRITE`);
    /// `u64::MAX` once the kernel said it cannot.
    populated: u64,
    /// How far file space is reserved (`fallocate`): nothing is written through the map
    /// beyond it, so a full disk is an error here, never SIGBUS on a later store.
    reserved: u64,
    committed: bool,
}

/// Space is faulted in this much at a time: one system call instead of a page fault per 4 KiB
/// page, and a full disk reported as an error here rather than as SIGBUS on a later store.
const POPULATE_CHUNK: u64 = 2 << 20;

const INITIAL_FILE_LEN: u64 = 1 << 20;

impl Output {
    pub fn create(final_path: &Path) -> Result<Output> {
        // A name of this process's own, created exclusively: two outputs of one process
        // never share a temporary file, and a stale one is never written into.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let (tmp_path, file) = loop {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp_path = crate::lock::beside(final_path, |name| {
                format!(".{name}.zl-{}-{n}.tmp", std::process::id())
            });
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp_path)
            {
                Ok(file) => break (tmp_path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                // Name OUT, not the hidden file: that is what the user asked for.
                Err(error) => {
                    return Err(ImageError::Io {
                        path: final_path.to_path_buf(),
                        error,
                    })
                }
            }
        };
        file.set_len(INITIAL_FILE_LEN)
            .map_err(ImageError::io(&tmp_path))?;
        // SAFETY: the file was just created under a private name; nothing else maps or truncates
        // it while this mapping lives.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(ImageError::io(&tmp_path))?;
        Ok(Output {
            final_path: final_path.to_path_buf(),
            tmp_path,
            file,
            map,
            len: 0,
            populated: 0,
            reserved: 0,
            committed: false,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Allocate `size` bytes of file space at the end, aligned; returns the offset.
    pub fn allocate(&mut self, size: u64, align: u64) -> Result<u64> {
        let offset = align_up(self.len, align);
        self.ensure_mapped(offset + size)?;
        self.reserve(offset + size)?;
        self.len = offset + size;
        self.populate(self.len)?;
        Ok(offset)
    }

    /// Reserve file space up to `end` (rounded up to a chunk, within the file).
    fn reserve(&mut self, end: u64) -> Result<()> {
        if end <= self.reserved {
            return Ok(());
        }
        let to = align_up(end, POPULATE_CHUNK)
            .min(self.map.len() as u64)
            .max(end);
        crate::store::reserve_space(&self.file, self.reserved, to - self.reserved)
            .map_err(ImageError::io(&self.final_path))?;
        self.reserved = to;
        Ok(())
    }

    /// Fault the mapping in up to `end` (rounded up to a chunk), before anything is written
    /// there. A kernel without `MADV_POPULATE_WRITE` (before 5.14) faults page by page instead.
    fn populate(&mut self, end: u64) -> Result<()> {
        if self.populated == u64::MAX || end <= self.populated {
            return Ok(());
        }
        let to = align_up(end, POPULATE_CHUNK).min(self.map.len() as u64);
        let from = self.populated.min(to);
        match self.map.advise_range(
            memmap2::Advice::PopulateWrite,
            from as usize,
            (to - from) as usize,
        ) {
            Ok(()) => self.populated = to,
            // EFAULT: the pages cannot be backed (no space left on the file system).
            Err(e) if e.raw_os_error() == Some(libc_efault()) => {
                return Err(ImageError::io(&self.final_path)(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device for the output file",
                )));
            }
            Err(_) => self.populated = u64::MAX,
        }
        Ok(())
    }

    /// Give back the end of the file from `len` on (space allocated but not used).
    pub fn truncate(&mut self, len: u64) {
        debug_assert!(len <= self.len);
        self.len = len;
    }

    /// Make the mapping cover at least `end` bytes, growing the file geometrically.
    fn ensure_mapped(&mut self, end: u64) -> Result<()> {
        if end <= self.map.len() as u64 {
            return Ok(());
        }
        let new_len = end.max(2 * self.map.len() as u64);
        self.file
            .set_len(new_len)
            .map_err(ImageError::io(&self.final_path))?;
        // SAFETY: as in `create`; the old mapping is dropped when replaced.
        self.map =
            unsafe { MmapMut::map_mut(&self.file) }.map_err(ImageError::io(&self.tmp_path))?;
        Ok(())
    }

    pub fn bytes_mut(&mut self, offset: u64, len: u64) -> &mut [u8] {
        &mut self.map[offset as usize..(offset + len) as usize]
    }

    pub fn bytes(&self, offset: u64, len: u64) -> &[u8] {
        &self.map[offset as usize..(offset + len) as usize]
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        self.bytes_mut(offset, data.len() as u64)
            .copy_from_slice(data);
    }

    pub fn fill(&mut self, offset: u64, len: u64, byte: u8) {
        self.bytes_mut(offset, len).fill(byte);
    }

    pub fn copy_within(&mut self, from: u64, len: u64, to: u64) {
        self.map
            .copy_within(from as usize..(from + len) as usize, to as usize);
    }

    /// Trim the file to its content, make it executable and move it over the destination.
    pub fn commit(mut self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        // No msync: the page cache is coherent for every reader, and a build is not a
        // database commit. Truncating under a live mapping is fine: nothing past `len` is touched.
        self.file
            .set_len(self.len)
            .map_err(ImageError::io(&self.tmp_path))?;
        let mode = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(&self.tmp_path, mode).map_err(ImageError::io(&self.tmp_path))?;
        std::fs::rename(&self.tmp_path, &self.final_path)
            .map_err(ImageError::io(&self.final_path))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// EFAULT on Linux (all architectures).
const fn libc_efault() -> i32 {
    14
}
