//! Live updates: what an in-place update must also do to a *running* copy of the executable.
//!
//! A hot patcher (`backend/src/hot/`) stops the process, tells the image which code addresses
//! the process is executing or will return into ([`LiveOptions::busy`]), and runs an ordinary
//! update in *live mode*. The file is updated as always; on top of that the image
//!
//! - never writes over code that is busy: a changed function whose slot holds a busy address
//!   moves instead of being rewritten in place, so old frames finish on old code;
//! - takes new slots from the end of each region only, never from the free list: a slot freed
//!   during a live session may still hold code the process runs (an old frame, a function
//!   pointer kept somewhere, the jump left at a moved function's old entry);
//! - records every byte it writes into loaded memory, with the rule for applying it to the
//!   process ([`LiveWrite`]): code, constants and the GOT always; data objects keep the
//!   values the program gave them, so a pointer in data is rewritten only where the process
//!   still holds the value the file held before;
//! - lists at the end what moved (the patcher leaves a jump at each old entry), the imports
//!   the process has not resolved, and every change that cannot be applied live
//!   ([`Refusal`]), so that the patcher refuses before it writes anything.
//!
//! The log describes the process as the file was before the update: the patcher checks that
//! it is (`STAMP`) before trusting any of it.

use crate::layout::RegionKind;

/// Where every build writes its stamp: in the headers page, after the two program header
/// tables, so a running process has it in memory at `HEADERS_VADDR + STAMP_OFFSET`.
pub const STAMP_OFFSET: u64 = crate::elf::HEADERS_SIZE;
/// Bytes of the stamp: a magic word, the generation and a digest of the loaded contents.
pub const STAMP_SIZE: u64 = 24;
/// The stamp's first eight bytes.
pub const STAMP_MAGIC: [u8; 8] = *b"ZLSTAMP1";

/// What the process is doing, as the hot patcher found it.
#[derive(Debug, Clone, Default)]
pub struct LiveOptions {
    /// Code addresses the process may execute next or return into: every thread's
    /// instruction pointer and registers, and every word on its stack that points into the
    /// text window (conservatively: any such word counts). Sorted.
    pub busy: Vec<u64>,
}

impl LiveOptions {
    /// Whether any busy address lies in `[start, end)`.
    pub fn busy_in(&self, start: u64, end: u64) -> bool {
        let i = self.busy.partition_point(|&a| a < start);
        self.busy.get(i).is_some_and(|&a| a < end)
    }
}

/// How one write reaches the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRule {
    /// Code, constants, GOT entries, new data objects: written as in the file.
    Always,
    /// A field of a data object the program already has: written only where the process
    /// still holds these bytes (the field's value before the update), so a value the
    /// program stored there itself is kept.
    IfUnchanged(Vec<u8>),
}

/// Bytes the update wrote into loaded memory at `addr`, in the order written.
#[derive(Debug, Clone)]
pub struct LiveWrite {
    pub addr: u64,
    pub bytes: Vec<u8>,
    pub rule: WriteRule,
    pub region: RegionKind,
    /// An 8-byte absolute address of the image (what a PIE's relative relocation holds):
    /// the process gets it plus its load bias, and so is the old value compared.
    pub absolute: bool,
}

/// A function whose entry moved: the process gets a jump from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub name: String,
    pub from: u64,
    /// The end of the old code: a thread with an address anywhere in `[from, from_end)` may
    /// still run there (a loop's head may lie inside the jump's five bytes), so no jump is
    /// written over it.
    pub from_end: u64,
    pub to: u64,
}

/// A GOT entry this update created for a shared library's symbol: in the file the dynamic
/// loader fills it at start-up, in the running process the patcher must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewImport {
    pub name: String,
    pub got: u64,
    /// The sonames that may provide it, in search order.
    pub libraries: Vec<String>,
}

/// A change the running process cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("data object `{name}` changed size ({old} to {new} bytes): its current value has no place in the new layout")]
    DataResized { name: String, old: u64, new: u64 },
    #[error("data object `{name}` moved: code already running holds its old address")]
    DataMoved { name: String },
    #[error("function `{name}` was removed, but a thread is running it or will return into it")]
    RemovedBusy { name: String },
    #[error("the signature of `{name}` changed, but its caller `{caller}` is on a thread's stack and would call it the old way")]
    SignatureBusy { name: String, caller: String },
    #[error("`{name}` now holds the address of `{target}` from a shared library in data, which only the dynamic loader fills in")]
    ImportInData { name: String, target: String },
    #[error(
        "thread-local `{name}` changed: every running thread has its own copy in the old layout"
    )]
    ThreadLocal { name: String },
}

/// Everything a live update adds to the file's update, for the patcher.
#[derive(Debug, Clone, Default)]
pub struct LiveLog {
    pub writes: Vec<LiveWrite>,
    pub moved: Vec<Moved>,
    pub new_imports: Vec<NewImport>,
    pub refusals: Vec<Refusal>,
    /// The stamp of the new file (see `STAMP_OFFSET`): the process gets it last.
    pub stamp: Vec<u8>,
    /// The end of each region in use after the update (`RegionKind::ALL` order): the
    /// process must have memory up to there.
    pub region_end: Vec<u64>,
    /// Where the update's `.eh_frame_hdr` is (with `-g`): its writes (region `Dynamic`) are
    /// for a process whose loader found the header there at start-up.
    pub eh_frame_hdr: Option<u64>,
    /// Changed functions written over their old slot, and functions placed in new slots.
    pub in_place: Vec<String>,
    pub placed: Vec<String>,
}

impl LiveLog {
    /// Bytes to write to the process, all rules together.
    pub fn bytes(&self) -> u64 {
        self.writes.iter().map(|w| w.bytes.len() as u64).sum()
    }
}
