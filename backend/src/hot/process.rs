//! A stopped process: every thread held in a ptrace stop, memory read and written through
//! `/proc/PID/mem` (which may write read-only text: the kernel copies the page for this
//! process only), and a system call run inside it.
//!
//! Threads are seized one by one (`PTRACE_SEIZE` + `PTRACE_INTERRUPT`) until a pass over
//! `/proc/PID/task` finds no thread that is not stopped: a thread created meanwhile is
//! found by the next pass, and a stopped thread creates none. A thread that was stopped
//! for a signal instead is let go on with the signal held back, and the signal is sent again
//! once the process is released, so nothing the program expects is lost.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use super::HotError;

/// A process whose threads are all stopped; released (resumed) when dropped.
pub struct Stopped {
    pub pid: i32,
    threads: Vec<Thread>,
    mem: File,
    /// Where the image's trampoline is in the process (see `set_trampoline`).
    trampoline: Option<u64>,
}

/// What a thread stopped by ptrace resumes with, as `rax` and `rip`: in a system call the
/// kernel would restart (`-ERESTART*`), the call again, as the kernel does on resuming it.
fn resumable(r: &Regs) -> (u64, u64) {
    const ERESTARTSYS: i64 = -512;
    const ERESTARTNOINTR: i64 = -513;
    const ERESTARTNOHAND: i64 = -514;
    const ERESTART_RESTARTBLOCK: i64 = -516;
    if (r.orig_rax as i64) < 0 {
        return (r.rax, r.rip);
    }
    match r.rax as i64 {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => (r.orig_rax, r.rip - 2),
        ERESTART_RESTARTBLOCK => (libc::SYS_restart_syscall as u64, r.rip - 2),
        _ => (r.rax, r.rip),
    }
}

struct Thread {
    tid: i32,
    /// A signal held back while stopped, sent again on release.
    held: Option<i32>,
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
}

pub type Regs = libc::user_regs_struct;

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

impl Stopped {
    /// Stop every thread of `pid`.
    pub fn stop(pid: i32) -> Result<Stopped, HotError> {
        if !std::path::Path::new(&format!("/proc/{pid}/task")).exists() {
            return Err(HotError::NoProcess { pid });
        }
        // Until the end, dropping `partial` releases what was seized if anything fails.
        let mut partial = Partial {
            pid,
            threads: Vec::new(),
        };
        loop {
            let mut new = 0;
            for tid in tasks(pid)? {
                if partial.threads.iter().any(|t| t.tid == tid) {
                    continue;
                }
                if let Some(t) = seize(pid, tid)? {
                    partial.threads.push(t);
                    new += 1;
                }
            }
            if new == 0 {
                break;
            }
        }
        if !partial.threads.iter().any(|t| t.tid == pid) {
            return Err(HotError::Exited { pid });
        }
        let mem = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|error| HotError::Ptrace {
                pid,
                what: "open its memory",
                error,
            })?;
        Ok(Stopped {
            pid,
            threads: std::mem::take(&mut partial.threads),
            mem,
            trampoline: None,
        })
    }

    pub fn tids(&self) -> impl Iterator<Item = i32> + '_ {
        self.threads.iter().map(|t| t.tid)
    }

    pub fn regs(&self, tid: i32) -> Result<Regs, HotError> {
        // SAFETY: `user_regs_struct` is plain data; PTRACE_GETREGS fills all of it.
        let mut regs: Regs = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_GETREGS,
                tid,
                std::ptr::null_mut::<libc::c_void>(),
                &mut regs as *mut Regs as *mut libc::c_void,
            )
        };
        if r == -1 {
            return Err(self.error("read its registers"));
        }
        Ok(regs)
    }

    fn set_regs(&self, tid: i32, regs: &Regs) -> Result<(), HotError> {
        // SAFETY: as above; the kernel only reads the struct.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_SETREGS,
                tid,
                std::ptr::null_mut::<libc::c_void>(),
                regs as *const Regs as *mut libc::c_void,
            )
        };
        if r == -1 {
            return Err(self.error("set its registers"));
        }
        Ok(())
    }

    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, HotError> {
        let mut buf = vec![0; len];
        self.mem
            .read_exact_at(&mut buf, addr)
            .map_err(|error| HotError::Ptrace {
                pid: self.pid,
                what: "read its memory",
                error,
            })?;
        Ok(buf)
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), HotError> {
        self.mem
            .write_all_at(bytes, addr)
            .map_err(|error| HotError::Ptrace {
                pid: self.pid,
                what: "write its memory",
                error,
            })
    }

    pub fn maps(&self) -> Result<Vec<Mapping>, HotError> {
        let text =
            std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).map_err(|error| {
                HotError::Ptrace {
                    pid: self.pid,
                    what: "read its memory map",
                    error,
                }
            })?;
        Ok(text.lines().filter_map(parse_map_line).collect())
    }

    /// Map `len` bytes of anonymous memory at `addr` in the process (`mmap` with
    /// `MAP_FIXED_NOREPLACE`), run by its first thread through the image's trampoline.
    pub fn map_anonymous(&self, addr: u64, len: u64, prot: i32) -> Result<(), HotError> {
        let got = self.through_trampoline(
            zerolink_image::x86_64::TRAMPOLINE_SYSCALL,
            zerolink_image::x86_64::TRAMPOLINE_RESTORE,
            |regs| {
                regs.rax = libc::SYS_mmap as u64;
                regs.rdi = addr;
                regs.rsi = len;
                regs.rdx = prot as u64;
                regs.r10 =
                    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
                regs.r8 = u64::MAX;
                regs.r9 = 0;
            },
        )?;
        if got != addr {
            return Err(HotError::Ptrace {
                pid: self.pid,
                what: "map memory for new code and data",
                error: std::io::Error::from_raw_os_error((got as i64).unsigned_abs() as i32),
            });
        }
        Ok(())
    }

    /// Call the function at `addr` (no arguments) in the process, on its first thread,
    /// through the image's trampoline, and return what it returns: for an IFUNC resolver,
    /// which picks a library function's implementation.
    pub fn call(&self, addr: u64) -> Result<u64, HotError> {
        self.through_trampoline(
            zerolink_image::x86_64::TRAMPOLINE_CALL,
            zerolink_image::x86_64::TRAMPOLINE_RETURNED,
            |regs| {
                regs.r11 = addr;
                regs.rax = 0;
                // Below the red zone, 16-byte aligned before the call, as the ABI wants.
                regs.rsp = (regs.rsp - 1024) & !15;
            },
        )
    }

    /// Tell the operations in the process where the image's trampoline is
    /// (`zerolink_image::x86_64::TRAMPOLINE_NAME`, at the process's address).
    pub fn set_trampoline(&mut self, addr: Option<u64>) {
        self.trampoline = addr;
    }

    /// Run the trampoline in the first thread from `entry` (an offset in it) until it
    /// reaches `until`, with its registers as `set` makes them; `rax` there. The thread's
    /// own state goes into the trampoline's save area first, so that a thread released
    /// before it is restored here (this process killed) restores itself, and is restored
    /// here on every path. No instruction of the process's is borrowed, no `int3` is run.
    fn through_trampoline(
        &self,
        entry: u64,
        until: u64,
        set: impl FnOnce(&mut Regs),
    ) -> Result<u64, HotError> {
        use zerolink_image::x86_64::{TRAMPOLINE_FX, TRAMPOLINE_GPRS, TRAMPOLINE_RFLAGS};
        let Some(t) = self.trampoline else {
            return Err(HotError::Ptrace {
                pid: self.pid,
                what: "run code in it (its executable has no trampoline: rebuild it)",
                error: std::io::Error::other("no trampoline"),
            });
        };
        let tid = self.pid;
        let saved = self.regs(tid)?;
        let fp = self.fpregs(tid)?;
        // The save area, as `restore` loads it: a thread interrupted in a system call that
        // the kernel would restart gets the call again (as the kernel restarts it).
        let (rax, rip) = resumable(&saved);
        let mut area = Vec::with_capacity(8 * 19);
        for v in [
            saved.eflags,
            rax,
            saved.rbx,
            saved.rcx,
            saved.rdx,
            saved.rsi,
            saved.rdi,
            saved.rbp,
            saved.r8,
            saved.r9,
            saved.r10,
            saved.r11,
            saved.r12,
            saved.r13,
            saved.r14,
            saved.r15,
            saved.rsp,
            rip,
        ] {
            area.extend_from_slice(&v.to_le_bytes());
        }
        // SAFETY: `user_fpregs_struct` is the 512-byte FXSAVE image, plain data.
        let fx = unsafe {
            std::slice::from_raw_parts(
                &fp as *const libc::user_fpregs_struct as *const u8,
                std::mem::size_of::<libc::user_fpregs_struct>(),
            )
        };
        self.write(t + TRAMPOLINE_FX, fx)?;
        debug_assert_eq!(TRAMPOLINE_GPRS, TRAMPOLINE_RFLAGS + 8);
        self.write(t + TRAMPOLINE_RFLAGS, &area)?;
        let mut regs = saved;
        set(&mut regs);
        regs.rip = t + entry;
        // Not inside a system call any more: no restart of the interrupted one on the way.
        regs.orig_rax = u64::MAX;
        let result = self.set_regs(tid, &regs).and_then(|()| {
            if std::env::var_os("ZEROLINK_TEST_DIE_IN_TRAMPOLINE").is_some() {
                // A test's stand-in for SIGKILL at the worst moment.
                std::process::abort();
            }
            let mut steps = 0u32;
            loop {
                self.single_step(tid)?;
                let now = self.regs(tid)?;
                if now.rip == t + until {
                    return Ok(now.rax);
                }
                steps += 1;
                if steps > 1_000_000 {
                    return Err(HotError::Ptrace {
                        pid: self.pid,
                        what: "run code in it (it did not come back)",
                        error: std::io::Error::other(format!("at {:#x}", now.rip)),
                    });
                }
            }
        });
        // The thread's state back, whatever happened.
        self.set_fpregs(tid, &fp)?;
        self.set_regs(tid, &saved)?;
        result
    }

    fn fpregs(&self, tid: i32) -> Result<libc::user_fpregs_struct, HotError> {
        // SAFETY: plain data; PTRACE_GETFPREGS fills all of it.
        let mut fp: libc::user_fpregs_struct = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_GETFPREGS,
                tid,
                std::ptr::null_mut::<libc::c_void>(),
                &mut fp as *mut libc::user_fpregs_struct as *mut libc::c_void,
            )
        };
        if r == -1 {
            return Err(self.error("read its floating-point registers"));
        }
        Ok(fp)
    }

    fn set_fpregs(&self, tid: i32, fp: &libc::user_fpregs_struct) -> Result<(), HotError> {
        // SAFETY: as above; the kernel only reads the struct.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_SETFPREGS,
                tid,
                std::ptr::null_mut::<libc::c_void>(),
                fp as *const libc::user_fpregs_struct as *mut libc::c_void,
            )
        };
        if r == -1 {
            return Err(self.error("set its floating-point registers"));
        }
        Ok(())
    }

    fn single_step(&self, tid: i32) -> Result<(), HotError> {
        // SAFETY: plain ptrace request on a thread we hold stopped.
        let r = unsafe { libc::ptrace(libc::PTRACE_SINGLESTEP, tid, 0usize, 0usize) };
        if r == -1 {
            return Err(self.error("step it"));
        }
        let mut status = 0;
        // SAFETY: waits for the thread we just stepped.
        let w = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if w == -1 || !libc::WIFSTOPPED(status) {
            return Err(HotError::Exited { pid: self.pid });
        }
        Ok(())
    }

    fn error(&self, what: &'static str) -> HotError {
        HotError::Ptrace {
            pid: self.pid,
            what,
            error: errno(),
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        release(self.pid, &self.threads);
    }
}

/// Threads seized before the process is complete: released if stopping fails halfway.
struct Partial {
    pid: i32,
    threads: Vec<Thread>,
}

impl Drop for Partial {
    fn drop(&mut self) {
        release(self.pid, &self.threads);
    }
}

fn release(pid: i32, threads: &[Thread]) {
    for t in threads {
        // SAFETY: detaching a thread we seized; it runs on from where it stopped.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, t.tid, 0usize, 0usize) };
    }
    for t in threads {
        if let Some(sig) = t.held {
            // SAFETY: sends the held-back signal to the same thread again.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, t.tid, sig) };
        }
    }
}

fn tasks(pid: i32) -> Result<Vec<i32>, HotError> {
    let dir =
        std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|_| HotError::NoProcess { pid })?;
    let mut tids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Seize and stop one thread; `None` if it exited first.
fn seize(pid: i32, tid: i32) -> Result<Option<Thread>, HotError> {
    // SAFETY: plain ptrace requests; no memory is passed.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, 0usize) } == -1 {
        let e = errno();
        return match e.raw_os_error() {
            Some(libc::ESRCH) if tid != pid => Ok(None),
            Some(libc::ESRCH) => Err(HotError::NoProcess { pid }),
            Some(libc::EPERM) => Err(HotError::Denied {
                pid,
                why: denied_reason(),
            }),
            _ => Err(HotError::Ptrace {
                pid,
                what: "attach to it",
                error: e,
            }),
        };
    }
    // SAFETY: as above.
    unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) };
    let mut held = None;
    loop {
        let mut status = 0;
        // SAFETY: waits for the thread just seized.
        let w = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if w == -1 || libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            if tid == pid {
                return Err(HotError::Exited { pid });
            }
            return Ok(None);
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        if status >> 16 == libc::PTRACE_EVENT_STOP {
            return Ok(Some(Thread { tid, held }));
        }
        // Stopped for a signal on its way: hold it back, let the thread reach the stop
        // asked for, and send the signal again on release.
        let sig = libc::WSTOPSIG(status);
        if sig != libc::SIGTRAP {
            held = Some(sig);
        }
        // SAFETY: resumes the thread without the signal; the interrupt stops it at once.
        unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0usize, 0usize) };
    }
}

/// Why ptrace said no, and what to do about it.
fn denied_reason() -> String {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match scope {
        Some(3) => "the kernel forbids tracing altogether (kernel.yama.ptrace_scope is 3, which \
                    only a reboot resets); start the program with `zerolink run --watch` is no \
                    way out either: hot patching needs ptrace"
            .into(),
        Some(n @ 1..=2) => format!(
            "kernel.yama.ptrace_scope is {n}, so only a parent may trace its children; start \
             the program with `zerolink run --watch FILE...` (its parent), or allow tracing \
             with `sudo sysctl kernel.yama.ptrace_scope=0`{}",
            if n == 1 {
                ", or run zerolink as root, or have the program call \
                 prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY)"
            } else {
                ", or run zerolink as root"
            }
        ),
        _ => "it belongs to another user, or a debugger is already tracing it".into(),
    }
}

fn parse_map_line(line: &str) -> Option<Mapping> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let _perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.collect::<Vec<_>>().join(" ");
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset,
        path,
    })
}
