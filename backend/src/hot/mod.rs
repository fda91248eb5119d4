//! Hot patching: apply an in-place update to a running process as well as to its file.
//!
//! The patcher is a front of the build, not a second linker: the update decides everything
//! (which functions move, which sites change) as it does for the file, in *live mode*
//! (`zerolink_image::live`), and the patcher replays the update's log into the process. The
//! steps, in order:
//!
//! 1. [`Attached::stop`]: stop every thread (`process.rs`) and check that the process runs OUT
//!    exactly as it is now: the stamp every build writes in the headers page must be the
//!    file's (a process started from an older build, or one a refused patch left behind, is
//!    refused: the log would describe another program);
//! 2. collect what the process is busy with: every thread's instruction pointer and
//!    registers, and every word on its stack that points into the text window (conservative:
//!    a stale word only makes a function move instead of being rewritten in place);
//! 3. the caller runs the update with [`Attached::live`] (the process stays stopped);
//! 4. [`Attached::apply`]: refuse, before writing anything, what cannot be applied (a full
//!    build, a refusal in the log, an import that cannot be resolved); map memory where the
//!    regions grew past what the process has; write the log's bytes (data objects keep the
//!    process's values); leave a jump at the old entry of every function that moved, so
//!    function pointers kept anywhere reach the new code while old frames finish on old
//!    code; write the new stamp; release the threads.
//!
//! A refusal leaves the process exactly as it was (the file is updated regardless).

use std::path::{Path, PathBuf};

use zerolink_image::layout::{align_up, RegionKind, HEADERS_VADDR, PAGE};
use zerolink_image::live::{
    LiveLog, LiveOptions, WriteRule, STAMP_MAGIC, STAMP_OFFSET, STAMP_SIZE,
};

use crate::session::{Mode, Report};

mod imports;
mod process;

pub use process::Stopped;

/// Why a process could not be patched.
#[derive(Debug, thiserror::Error)]
pub enum HotError {
    #[error("there is no process {pid}")]
    NoProcess { pid: i32 },
    #[error("not allowed to trace process {pid}: {why}")]
    Denied { pid: i32, why: String },
    #[error("process {pid}: cannot {what}: {error}")]
    Ptrace {
        pid: i32,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("process {pid} exited")]
    Exited { pid: i32 },
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("process {pid} does not run {} as it is now ({why}): restart it", out.display())]
    NotCurrent { pid: i32, out: PathBuf, why: String },
    #[error("process {pid} cannot take this change and runs on unchanged (restart it to run the new build):{}", list(refusals))]
    Refused { pid: i32, refusals: Vec<String> },
}

fn list(items: &[String]) -> String {
    items.iter().map(|r| format!("\n  - {r}")).collect()
}

/// A process stopped for patching, checked to run OUT as it is now.
pub struct Attached {
    stopped: Stopped,
    live: LiveOptions,
    /// The process's load address less the file's (a PIE's; 0 otherwise): every address
    /// in the log is the file's, and an absolute address written is moved by it too.
    bias: u64,
    /// Ctrl-C and the like held back while the process is stopped (dropped last, after the
    /// threads are released): see [`SignalsHeld`].
    _signals: SignalsHeld,
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT blocked in this process from the moment a process is
/// stopped until its threads are released. A patcher killed between borrowing a thread's
/// instruction bytes (for a system call or a resolver's call run in the process) and giving
/// them back, or halfway through the patch's writes, would leave the process to run a
/// `syscall` or an `int3` that is not its own, or a mix of old and new code: the everyday
/// ways to stop a build (Ctrl-C, `kill`, a closed terminal) now take effect once the patch is
/// complete, or rolled back by an error, and the threads run on. (SIGKILL cannot be held
/// back; see the note in RATIONALE.md.)
struct SignalsHeld {
    old: libc::sigset_t,
}

impl SignalsHeld {
    fn block() -> SignalsHeld {
        // SAFETY: plain signal-mask calls on sets owned here.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::sigaddset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SignalsHeld { old }
        }
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `block`; a signal that arrived meanwhile is
        // delivered now, with the process released.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// What [`Attached::apply`] did to the process.
#[derive(Debug, Clone, Default)]
pub struct Patched {
    /// Functions rewritten in their old place, and placed anew (new or moved).
    pub in_place: Vec<String>,
    pub placed: Vec<String>,
    /// Old entries that now jump to the new code.
    pub redirected: usize,
    /// Old entries left as they were, because a thread was inside the bytes the jump needs.
    pub not_redirected: Vec<String>,
    /// Bytes written, and data fields left alone because the program had changed them.
    pub bytes: u64,
    pub kept_fields: usize,
    /// Bytes of memory mapped for regions that grew.
    pub mapped: u64,
    /// Library functions resolved for the first time.
    pub imports: usize,
    /// Threads the process has.
    pub threads: usize,
    /// With -g: the new code's unwind tables are not where the process's unwinder looks
    /// (their header moved), so in-process backtraces stop at new code.
    pub unwind_stale: bool,
}

impl Attached {
    /// Stop `pid` and check it runs `out` as it is now. Take OUT's lock first
    /// (`Session::lock`) and build with `LockWait::Held`: otherwise another build may change
    /// OUT between this check and the patch.
    pub fn stop(pid: i32, out: &Path) -> Result<Attached, HotError> {
        let io = |error| HotError::Io {
            path: out.to_path_buf(),
            error,
        };
        let file_stamp = read_stamp(out).map_err(io)?;
        let signals = SignalsHeld::block();
        let mut stopped = Stopped::stop(pid)?;
        // Where the process was loaded: 0 unless it is a PIE.
        let bias = match file_stamp.e_type {
            object::elf::ET_DYN => load_bias(pid).unwrap_or(0),
            _ => 0,
        };
        stopped.set_trampoline(file_stamp.trampoline.map(|t| t + bias));
        let not_current = |why: &str| HotError::NotCurrent {
            pid,
            out: out.to_path_buf(),
            why: why.into(),
        };
        let theirs = stopped
            .read(bias + HEADERS_VADDR + STAMP_OFFSET, STAMP_SIZE as usize)
            .map_err(|_| not_current("it is not a program zerolink built"))?;
        if theirs[..8] != STAMP_MAGIC {
            return Err(not_current("it is not a program zerolink built"));
        }
        if theirs != file_stamp.stamp {
            let generation = |s: &[u8]| u64::from_le_bytes(s[8..16].try_into().unwrap_or([0; 8]));
            return Err(not_current(&format!(
                "it runs build {} of it, the file is at build {}",
                generation(&theirs),
                generation(&file_stamp.stamp)
            )));
        }
        let busy = busy_addresses(&stopped, bias)?;
        Ok(Attached {
            stopped,
            live: LiveOptions { busy },
            bias,
            _signals: signals,
        })
    }

    pub fn pid(&self) -> i32 {
        self.stopped.pid
    }

    /// What the update must know about the process.
    pub fn live(&self) -> &LiveOptions {
        &self.live
    }

    /// Apply the update `report` describes to the process, then release it.
    pub fn apply(self, report: &Report, out: &Path) -> Result<Patched, HotError> {
        let pid = self.stopped.pid;
        if let Mode::Full { reason } = &report.mode {
            let why = reason.as_ref().map_or_else(
                || "a full build".to_string(),
                |r| format!("a full build ({r})"),
            );
            return Err(HotError::Refused {
                pid,
                refusals: vec![format!(
                    "the build was {why}: every address may have changed"
                )],
            });
        }
        let mut patched = Patched {
            threads: self.stopped.tids().count(),
            ..Patched::default()
        };
        let Some(log) = &report.summary.live else {
            return Ok(patched); // nothing changed
        };
        if !log.refusals.is_empty() {
            return Err(HotError::Refused {
                pid,
                refusals: log.refusals.iter().map(|r| r.to_string()).collect(),
            });
        }
        // Everything that can refuse happens before the first write.
        let maps = self.stopped.maps()?;
        let mut writes: Vec<(u64, Vec<u8>)> = Vec::with_capacity(log.writes.len());
        let mut refusals = Vec::new();
        for imp in &log.new_imports {
            match imports::resolve(&self.stopped, &maps, imp) {
                Ok(addr) => writes.push((imp.got + self.bias, addr.to_le_bytes().to_vec())),
                Err(why) => refusals.push(format!(
                    "the new call to `{}` cannot be resolved in the process: {why}",
                    imp.name
                )),
            }
        }
        if !refusals.is_empty() {
            return Err(HotError::Refused { pid, refusals });
        }
        patched.imports = log.new_imports.len();
        // Unwind tables (with -g) are where the process's loader found them at start-up,
        // or nowhere the process looks.
        let eh_visible = match log.eh_frame_hdr {
            Some(hdr) => self.eh_frame_hdr()? == Some(hdr),
            None => false,
        };
        patched.unwind_stale = log.eh_frame_hdr.is_some() && !eh_visible;
        for w in &log.writes {
            if w.region == RegionKind::Dynamic && !eh_visible {
                continue;
            }
            let at = w.addr + self.bias;
            let bytes = self.moved(&w.bytes, w.absolute);
            match &w.rule {
                WriteRule::Always => writes.push((at, bytes)),
                WriteRule::IfUnchanged(old) => {
                    if self.stopped.read(at, old.len())? == self.moved(old, w.absolute) {
                        writes.push((at, bytes));
                    } else {
                        patched.kept_fields += 1;
                    }
                }
            }
        }
        for m in &log.moved {
            // No byte of code a thread may still reach is written over: not only an
            // instruction a thread is in, but a loop head inside the jump's five bytes that a
            // thread anywhere in the old code will branch back to. Callers were re-patched.
            if self.live.busy_in(m.from, m.from_end) {
                patched.not_redirected.push(m.name.clone());
                continue;
            }
            let rel = m.to as i64 - (m.from as i64 + 5);
            let Ok(rel) = i32::try_from(rel) else {
                patched.not_redirected.push(m.name.clone());
                continue;
            };
            let mut jump = vec![0xe9];
            jump.extend_from_slice(&rel.to_le_bytes());
            writes.push((m.from + self.bias, jump));
            patched.redirected += 1;
        }
        // Memory for what grew, then the bytes, then the stamp that says it is done.
        patched.mapped = self.map_growth(&maps, log, &writes)?;
        for (addr, bytes) in &writes {
            self.stopped.write(*addr, bytes)?;
            patched.bytes += bytes.len() as u64;
        }
        if eh_visible {
            self.write_program_headers(out)?;
            patched.unwind_stale |=
                !self.widen_find_object(&maps, log.eh_frame_hdr.unwrap_or(0))?;
        }
        self.stopped
            .write(self.bias + HEADERS_VADDR + STAMP_OFFSET, &log.stamp)?;
        patched.in_place = log.in_place.clone();
        patched.placed = log
            .placed
            .iter()
            .filter(|n| !n.ends_with("@plt"))
            .cloned()
            .collect();
        Ok(patched)
    }

    /// The new file's program headers, over the ones the process was started with: an
    /// unwinder that walks the loaded segments (`dl_iterate_phdr`) must find the text that
    /// grew in them.
    fn write_program_headers(&self, out: &Path) -> Result<(), HotError> {
        use std::os::unix::fs::FileExt;
        let io = |error| HotError::Io {
            path: out.to_path_buf(),
            error,
        };
        let f = std::fs::File::open(out).map_err(io)?;
        let mut ehdr = [0u8; 64];
        f.read_exact_at(&mut ehdr, 0).map_err(io)?;
        let phoff = u64::from_le_bytes(ehdr[32..40].try_into().unwrap_or([0; 8]));
        let phnum = u16::from_le_bytes([ehdr[56], ehdr[57]]) as usize;
        let mut phdrs = vec![0; phnum * 56];
        f.read_exact_at(&mut phdrs, phoff).map_err(io)?;
        let theirs = self.stopped.read(self.bias + HEADERS_VADDR, 64)?;
        let their_phoff = u64::from_le_bytes(theirs[32..40].try_into().unwrap_or([0; 8]));
        self.stopped
            .write(self.bias + HEADERS_VADDR + their_phoff, &phdrs)
    }

    /// glibc's `_dl_find_object`, which libgcc's unwinder asks first, answers for the main
    /// program from a record ld.so made at start-up (text start, text end, link map,
    /// `.eh_frame_hdr`: `struct dl_find_object_internal`, kept in memory ld.so allocated),
    /// so code placed past the text's end at start-up would have no unwind information. The
    /// record is found by its contents in ld.so's and anonymous memory (never the program's
    /// own regions or stacks) and its end moved to the text window's end. False if there is
    /// none (another libc: then only unwinders that walk the program headers see new code).
    fn widen_find_object(&self, maps: &[process::Mapping], hdr: u64) -> Result<bool, HotError> {
        let (text, hdr) = (self.bias + RegionKind::Text.vaddr(), self.bias + hdr);
        let window_end = text + RegionKind::Text.reserve();
        let image = self.bias + HEADERS_VADDR
            ..self.bias + RegionKind::Tls.vaddr() + RegionKind::Tls.reserve();
        let mut found = false;
        for m in maps.iter().filter(|m| {
            (m.path.is_empty() || m.path.contains("/ld-linux")) && !image.contains(&m.start)
        }) {
            let Ok(bytes) = self.stopped.read(m.start, (m.end - m.start) as usize) else {
                continue;
            };
            let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
            for i in (0..bytes.len().saturating_sub(31)).step_by(8) {
                let end = word(i + 8);
                if word(i) == text
                    && word(i + 24) == hdr
                    && word(i + 16) != 0
                    && end > text
                    && end <= window_end
                {
                    if end != window_end {
                        self.stopped
                            .write(m.start + i as u64 + 8, &window_end.to_le_bytes())?;
                    }
                    found = true;
                }
            }
        }
        Ok(found)
    }

    /// `bytes` as the process needs them: an absolute address (8 bytes) moved by the bias.
    fn moved(&self, bytes: &[u8], absolute: bool) -> Vec<u8> {
        match <[u8; 8]>::try_from(bytes) {
            Ok(b) if absolute => u64::from_le_bytes(b)
                .wrapping_add(self.bias)
                .to_le_bytes()
                .to_vec(),
            _ => bytes.to_vec(),
        }
    }

    /// The address of `.eh_frame_hdr` in the program headers the process was started with
    /// (the ones the loader read, in its headers page).
    fn eh_frame_hdr(&self) -> Result<Option<u64>, HotError> {
        let ehdr = self.stopped.read(self.bias + HEADERS_VADDR, 64)?;
        let phoff = u64::from_le_bytes(ehdr[32..40].try_into().unwrap_or([0; 8]));
        let phnum = u16::from_le_bytes([ehdr[56], ehdr[57]]) as usize;
        let phdrs = self
            .stopped
            .read(self.bias + HEADERS_VADDR + phoff, phnum * 56)?;
        Ok(phdrs.chunks_exact(56).find_map(|ph| {
            let p_type = u32::from_le_bytes(ph[..4].try_into().unwrap_or([0; 4]));
            (p_type == object::elf::PT_GNU_EH_FRAME)
                .then(|| u64::from_le_bytes(ph[16..24].try_into().unwrap_or([0; 8])))
        }))
    }

    /// Map anonymous memory past the end of each region the process has, up to what the
    /// update uses and writes (rounded up to 1 MiB, so an edit loop maps rarely).
    fn map_growth(
        &self,
        maps: &[process::Mapping],
        log: &LiveLog,
        writes: &[(u64, Vec<u8>)],
    ) -> Result<u64, HotError> {
        let mut mapped = 0;
        // (Never the TLS template: a change of it is refused.)
        for kind in RegionKind::ALL
            .into_iter()
            .filter(|&k| k != RegionKind::Tls)
        {
            // (In the process's addresses, as `writes` are.)
            let start_at = self.bias + kind.vaddr();
            let window = start_at..start_at + kind.reserve();
            // (The dynamic region only where unwind tables are written into it.)
            let mut need = match kind {
                RegionKind::Dynamic => 0,
                _ => log
                    .region_end
                    .get(kind.index())
                    .map_or(0, |e| e + self.bias),
            };
            for (addr, bytes) in writes {
                if window.contains(addr) {
                    need = need.max(addr + bytes.len() as u64);
                }
            }
            // What the process has of the window: mappings contiguous from its start.
            let mut have = start_at;
            while let Some(m) = maps.iter().find(|m| m.start <= have && have < m.end) {
                have = m.end;
            }
            if need <= have {
                continue;
            }
            let end = align_up(need, 1 << 20).min(window.end);
            let start = align_up(have, PAGE);
            let prot = match kind {
                RegionKind::Text => libc::PROT_READ | libc::PROT_EXEC,
                RegionKind::Data | RegionKind::Bss => libc::PROT_READ | libc::PROT_WRITE,
                _ => libc::PROT_READ,
            };
            self.stopped.map_anonymous(start, end - start, prot)?;
            mapped += end - start;
        }
        Ok(mapped)
    }
}

/// The stamp and ELF type of the file at `out`.
struct FileStamp {
    stamp: Vec<u8>,
    e_type: u16,
    /// Where the file's trampoline is (`x86_64::TRAMPOLINE_NAME`).
    trampoline: Option<u64>,
}

fn read_stamp(out: &Path) -> std::io::Result<FileStamp> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(out)?;
    let mut stamp = vec![0; STAMP_SIZE as usize];
    f.read_exact_at(&mut stamp, STAMP_OFFSET)?;
    let mut e_type = [0; 2];
    f.read_exact_at(&mut e_type, 16)?;
    let mut trampoline = [0; 8];
    f.read_exact_at(&mut trampoline, zerolink_image::elf::TRAMPOLINE_ADDR_OFFSET)?;
    let trampoline = u64::from_le_bytes(trampoline);
    Ok(FileStamp {
        stamp,
        e_type: u16::from_le_bytes(e_type),
        trampoline: (trampoline != 0 && trampoline != HEADERS_VADDR).then_some(trampoline),
    })
}

/// Where a PIE process was loaded, less where the file says: from the program headers'
/// address the kernel passed it (`AT_PHDR`), which lie in the headers page.
fn load_bias(pid: i32) -> Option<u64> {
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    let phdr = auxv.chunks_exact(16).find_map(|e| {
        let key = u64::from_le_bytes(e[..8].try_into().ok()?);
        (key == libc::AT_PHDR).then(|| u64::from_le_bytes(e[8..].try_into().unwrap_or([0; 8])))
    })?;
    (phdr & !(PAGE - 1)).checked_sub(HEADERS_VADDR)
}

/// Every address in the text window a thread may execute next or return into: instruction
/// pointers, registers, and every word of every thread's stack above its stack pointer; as
/// the file's addresses (less `bias`).
fn busy_addresses(stopped: &Stopped, bias: u64) -> Result<Vec<u64>, HotError> {
    let start = bias + RegionKind::Text.vaddr();
    let text = start..start + RegionKind::Text.reserve();
    let maps = stopped.maps()?;
    let mut busy = Vec::new();
    for tid in stopped.tids() {
        let r = stopped.regs(tid)?;
        let regs = [
            r.rip, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ];
        busy.extend(regs.into_iter().filter(|v| text.contains(v)));
        let sp = r.rsp & !7;
        if let Some(m) = maps.iter().find(|m| m.start <= sp && sp < m.end) {
            let stack = stopped.read(sp, (m.end - sp) as usize)?;
            busy.extend(
                stack
                    .chunks_exact(8)
                    .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
                    .filter(|v| text.contains(v)),
            );
        }
    }
    for a in &mut busy {
        *a -= bias;
    }
    busy.sort_unstable();
    busy.dedup();
    Ok(busy)
}
