//! The build session: the one way into an executable image for every front end (the CLIF
//! driver, [`crate::ZerolinkModule`], a compiler using the library directly).
//!
//! A session is a script of four steps:
//! 1. [`Session::open`] takes OUT's build lock and reopens the executable a previous build
//!    left there, or starts a new one; when it must start over although OUT exists, the
//!    reason is a [`FullReason`] the caller can match on.
//! 2. The front end names its **units** (a source file, a codegen unit) with a fingerprint of
//!    their contents ([`Session::unit`], `units.rs`). An unchanged unit is kept as it is with
//!    O(1) work; in a changed one, each definition's fingerprint is compared with the one the
//!    table keeps ([`Session::check`]) and only changed definitions are compiled. What a
//!    changed unit no longer defines is removed ([`Session::sweep`]).
//! 3. Compiled functions and data objects are placed ([`Session::define_function`],
//!    `place.rs`): names become symbols once, relocations become reference sites, and a new
//!    signature finds the callers that must follow it.
//! 4. [`Session::finish`] checks every call compiled against its callee's signature, writes
//!    debug information per source file (`debug.rs`), records the units for next time and
//!    commits with the image's crash-safe protocol. Until then nothing in OUT has changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cranelift_codegen::ir;
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use zerolink_image::live::LiveOptions;
use zerolink_image::lock::BuildLock;
use zerolink_image::symbols::SymbolTable;
pub use zerolink_image::{Binding, SymbolId, SymbolKind};
use zerolink_image::{Image, OpenError, Summary};

use crate::error::{BackendError, Result};
use crate::inputs::{self, Manifest};
use crate::libs::{Libraries, LinkOptions};

mod debug;
mod place;
mod precompiled;
mod reason;
mod target_path;
mod units;

pub use debug::SourceId;
pub use place::{CallSite, DataObject, FunctionCode, FunctionDebug};
pub use precompiled::Section;
pub use reason::FullReason;
pub use units::{Check, UnitId, UnitStatus};
/// The image's vocabulary a front end needs, so it does not depend on `zerolink-image`.
pub use zerolink_image::lock::LockWait;
pub use zerolink_image::{Contents, RefKind, Reference};

/// Maps Cranelift's libcalls to the names they are called by in the executable.
pub type LibcallNames = Box<dyn Fn(ir::LibCall) -> String + Send + Sync>;

/// How a build went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A full build; with the reason when an existing OUT could not be updated.
    Full { reason: Option<FullReason> },
    /// OUT is updated in place.
    Update,
}

/// What a finished session did.
#[derive(Debug)]
pub struct Report {
    pub mode: Mode,
    pub summary: Summary,
    /// Functions and data objects compiled (or encoded) and placed in this build.
    pub compiled: usize,
    /// Definitions left as they were.
    pub reused: usize,
    /// Named phases and how long they took; front ends add their own before the session's.
    pub phases: Vec<(&'static str, Duration)>,
    /// Parsing and code generation inside "compile and write" (the rest is writing).
    pub timings: crate::clif::Timings,
    /// Input files read (the others were unchanged, by their stat data), and all of them.
    pub read_files: usize,
    pub files: usize,
}

impl Report {
    /// How long the phase called `name` took (zero if it did not run).
    pub fn phase(&self, name: &str) -> Duration {
        self.phases
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, d)| *d)
            .sum()
    }

    /// Definitions that outgrew their slot and moved.
    pub fn moved(&self) -> usize {
        self.summary.moved
    }
}

/// How to open a session.
pub struct SessionOptions<'a> {
    /// Rebuild in full even if OUT could be updated.
    pub force_full: bool,
    /// DWARF line and function information and unwind tables.
    pub debug_info: bool,
    /// Libraries that resolve what the program does not define; `freestanding` for none.
    pub link: LinkOptions,
    /// When another build of the same OUT is running: wait for it, or fail at once.
    pub lock: LockWait,
    /// Called once if the session has to wait for another build.
    pub waiting: Option<&'a dyn Fn()>,
    /// What each compile unit's `DW_AT_language` says (a `DW_LANG_*` constant).
    pub language: gimli::DwLang,
    /// Threads for the work the session spreads itself (writing debug units).
    pub jobs: usize,
    /// Before updating, check all of OUT against the checksums in its table (as `zerolink
    /// verify`): any damage, even in code no build would read, means a full build.
    pub verify: bool,
    /// A running process is to be patched after the update (`backend/src/hot/`): what it
    /// is executing, so the update never writes over that code (see `zerolink_image::live`).
    pub live: Option<&'a LiveOptions>,
}

impl Default for SessionOptions<'_> {
    fn default() -> Self {
        SessionOptions {
            force_full: false,
            debug_info: false,
            link: LinkOptions::default(),
            lock: LockWait::Wait,
            waiting: None,
            language: gimli::DW_LANG_Mips_Assembler,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            verify: false,
            live: None,
        }
    }
}

/// The settings an executable records for its ISA: an update requires the very same.
pub fn settings_of(isa: &dyn TargetIsa) -> String {
    let mut flags: Vec<String> = isa
        .flags()
        .iter()
        .chain(isa.isa_flags())
        .map(|v| v.to_string())
        .collect();
    flags.sort();
    format!(
        "zerolink {}; {}; {}",
        env!("CARGO_PKG_VERSION"),
        isa.triple(),
        flags.join(" ")
    )
}

/// Everything an executable's code depends on besides its inputs: an update requires the same.
fn settings(
    isa: &dyn TargetIsa,
    libs: Option<&Libraries>,
    pie: bool,
    debug_info: bool,
    language: gimli::DwLang,
) -> String {
    format!(
        "{}; {}{}",
        settings_of(isa),
        match libs {
            None if pie => "freestanding, pie".to_string(),
            None => "freestanding".to_string(),
            Some(l) => format!("libraries: {}", l.describe()),
        },
        match (debug_info, language) {
            (false, _) => String::new(),
            (true, gimli::DW_LANG_Mips_Assembler) => "; debug info".to_string(),
            (true, lang) => format!("; debug info ({lang})"),
        }
    )
}

/// A build of one executable, from opening OUT to the commit.
pub struct Session {
    out: PathBuf,
    image: Image,
    isa: OwnedTargetIsa,
    libs: Option<Arc<Libraries>>,
    settings: String,
    mode: Mode,
    debug_info: bool,
    language: gimli::DwLang,
    jobs: usize,
    verify: bool,
    /// When the session started, on the clock files are stamped with (see `inputs.rs`).
    started_ns: i64,
    units: units::Units,
    placed: place::Placed,
    debug: debug::DebugState,
    /// What a running process executes, for a live update (see `go_live`).
    live: Option<LiveOptions>,
    /// A position-independent executable (`LinkOptions::pie`).
    pie: bool,
    /// Held from `open` until the session is finished or dropped: one build per OUT.
    /// What OUT is (a device is written into after the build).
    target: target_path::OutputPath,
    _lock: BuildLock,
}

impl Session {
    /// Open OUT for a build: an in-place update of the executable there if it can be updated
    /// with these settings, else a new executable (see [`Session::mode`] for which, and why).
    /// Waits for (or, with `LockWait::Fail`, refuses) another build of the same OUT.
    /// Take OUT's build lock (OUT resolved as [`Session::open`] resolves it), for a caller that
    /// must hold it across more than a session: a hot patch looks at the process only once
    /// no other build can change OUT, then builds with [`LockWait::Held`].
    pub fn lock(out: &Path, wait: LockWait, waiting: &dyn Fn()) -> Result<BuildLock> {
        let target = target_path::classify(out)?;
        Ok(BuildLock::acquire(&target.build_path(), wait, waiting)?)
    }

    pub fn open(out: &Path, isa: OwnedTargetIsa, opts: &SessionOptions<'_>) -> Result<Session> {
        // A target the image cannot write is refused before anything is done (an aarch64
        // ISA failed at its first relocation, a macOS one got a Linux ELF file).
        check_target(&*isa)?;
        // What OUT is decides how it is written, before any work.
        let target = target_path::classify(out)?;
        let out = &target.build_path();
        // One build per OUT at a time, from before it is opened until after the commit.
        let lock = BuildLock::acquire(out, opts.lock, opts.waiting.unwrap_or(&|| {}))?;
        // Before any input is examined: files stamped from now on are racily clean next time.
        let started_ns = inputs::coarse_now_ns();
        let libs = if opts.link.freestanding {
            None
        } else {
            Some(Arc::new(Libraries::load(&opts.link)?))
        };
        let settings = settings(
            &*isa,
            libs.as_deref(),
            opts.link.pie,
            opts.debug_info,
            opts.language,
        );
        let (image, mode, units) = if opts.force_full {
            fresh(out, &settings, Some(FullReason::Requested))?
        } else {
            reopen(
                out,
                &settings,
                opts.debug_info,
                opts.verify,
                opts.live.is_some(),
            )?
        };
        let mut session = Session {
            out: out.to_path_buf(),
            image,
            isa,
            libs,
            settings,
            mode,
            debug_info: opts.debug_info,
            language: opts.language,
            jobs: opts.jobs.max(1),
            verify: opts.verify,
            started_ns,
            units,
            placed: place::Placed::default(),
            debug: debug::DebugState::default(),
            live: opts.live.cloned(),
            pie: opts.link.pie,
            target,
            _lock: lock,
        };
        session.go_live();
        session.link();
        Ok(session)
    }

    /// Start a new executable at OUT for the given reason (a front end whose previous session
    /// failed with `BackendError::NeedsFullBuild`).
    pub fn open_full(
        out: &Path,
        isa: OwnedTargetIsa,
        opts: &SessionOptions<'_>,
        reason: FullReason,
    ) -> Result<Session> {
        let forced = SessionOptions {
            force_full: true,
            link: opts.link.clone(),
            waiting: opts.waiting,
            ..*opts
        };
        Session::open(out, isa, &forced)?.rebuild_in_full(reason)
    }

    /// Open OUT again, as `open` would, keeping the lock: for a front end that found it needs
    /// more of its inputs than it looked at. Nothing of this session's work is kept.
    pub fn reopen(mut self) -> Result<Session> {
        let (image, mode, units) = reopen(
            &self.out,
            &self.settings,
            self.debug_info,
            self.verify,
            self.live.is_some(),
        )?;
        self.restart(image, mode, units);
        Ok(self)
    }

    /// Give up on updating and start a new executable instead, keeping the lock. The front
    /// end then defines the whole program.
    pub fn rebuild_in_full(mut self, reason: FullReason) -> Result<Session> {
        let (image, mode, units) = fresh(&self.out, &self.settings, Some(reason))?;
        self.restart(image, mode, units);
        Ok(self)
    }

    fn restart(&mut self, image: Image, mode: Mode, units: units::Units) {
        self.image = image;
        self.mode = mode;
        self.units = units;
        self.placed = place::Placed::default();
        self.debug = debug::DebugState::default();
        self.go_live();
        self.link();
    }

    /// An update for a running process: the image in live mode (a full build cannot be
    /// applied to a process at all; the patcher refuses it).
    fn go_live(&mut self) {
        if let (Some(live), Mode::Update) = (&self.live, &self.mode) {
            self.image.set_live(live.clone());
        }
    }

    /// Change how names are resolved and whether debug information is written, before
    /// anything is defined: OUT is opened again with the new settings (which may make the
    /// build a full one). Units named so far are forgotten.
    pub fn reconfigure(
        &mut self,
        link: Option<&LinkOptions>,
        debug_info: Option<bool>,
    ) -> Result<()> {
        if self.placed.compiled > 0 || self.units.definitions() > 0 {
            return Err(BackendError::Module(
                "libraries and debug information must be set before anything is defined".into(),
            ));
        }
        if let Some(link) = link {
            self.pie = link.pie;
            self.libs = if link.freestanding {
                None
            } else {
                Some(Arc::new(Libraries::load(link)?))
            };
        }
        if let Some(d) = debug_info {
            self.debug_info = d;
        }
        self.settings = settings(
            &*self.isa,
            self.libs.as_deref(),
            self.pie,
            self.debug_info,
            self.language,
        );
        let (image, mode, units) = match &self.mode {
            Mode::Full { reason } => fresh(&self.out, &self.settings, reason.clone())?,
            Mode::Update => reopen(
                &self.out,
                &self.settings,
                self.debug_info,
                self.verify,
                self.live.is_some(),
            )?,
        };
        // The new image replaces the old one, whose temporary file goes with it.
        self.restart(image, mode, units);
        Ok(())
    }

    /// Hand the image the libraries and a resolver over them (nothing when freestanding).
    fn link(&mut self) {
        // A debugger's `step` into a call follows only jumps it knows (PLT entries): with
        // debug information, a moved function's callers are patched instead.
        self.image.set_entry_jumps(!self.debug_info);
        if let Some(libs) = &self.libs {
            let resolver = Arc::clone(libs);
            self.image
                .link_dynamically(libs.sonames(), Box::new(move |name| resolver.export(name)));
            self.image.set_runpath(libs.runpath.clone());
            self.image.set_pie(libs.pie);
        } else {
            // A freestanding PIE relocates itself in `_start`.
            self.image.set_pie(self.pie);
        }
    }

    /// Whether this is a full build or an update, and why.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn is_update(&self) -> bool {
        self.mode == Mode::Update
    }

    pub fn output(&self) -> &Path {
        &self.out
    }

    pub fn isa(&self) -> &OwnedTargetIsa {
        &self.isa
    }

    /// The settings recorded in the executable (an update requires the very same).
    pub fn settings(&self) -> &str {
        &self.settings
    }

    pub fn debug_info(&self) -> bool {
        self.debug_info
    }

    /// When the session started, on the coarse clock files are stamped with.
    pub fn started_ns(&self) -> i64 {
        self.started_ns
    }

    /// The shared libraries the program links against; `None` when freestanding.
    pub fn libraries(&self) -> Option<&Arc<Libraries>> {
        self.libs.as_ref()
    }

    /// Whether a shared library provides `name`, and if so whether it is data.
    pub fn import(&self, name: &str) -> Option<bool> {
        self.libs
            .as_ref()
            .and_then(|l| l.resolve(name))
            .map(|(_, data)| data)
    }

    /// A name the program does not define that the image provides itself (a built-in no
    /// shared library exports): reached directly, not through the GOT.
    pub fn builtin_in_image(&self, name: &str) -> bool {
        self.import(name).is_none() && crate::clif::is_builtin(name)
    }

    /// Declare a name (or find it): the handle every later use goes through.
    pub fn declare(&mut self, name: &str, kind: SymbolKind, binding: Binding) -> Result<SymbolId> {
        Ok(self.image.declare(name, kind, binding)?)
    }

    /// Set a symbol's binding to exactly `binding` (a definition's final linkage).
    pub fn set_binding(&mut self, id: SymbolId, binding: Binding) {
        self.image.set_binding(id, binding);
    }

    pub fn lookup(&self, name: &str) -> Option<SymbolId> {
        self.image.symbols().lookup(name)
    }

    pub fn symbols(&self) -> &SymbolTable {
        self.image.symbols()
    }

    /// Size the code region's file space for about this many bytes of machine code.
    pub fn expect_code_bytes(&mut self, bytes: u64) {
        self.image.expect_code_bytes(bytes);
    }

    /// Whether a page of the table this update read failed its checksum: then nothing decided
    /// from the table can be trusted, and the front end rebuilds in full (`finish` refuses).
    pub fn damage(&self) -> Option<FullReason> {
        match self.mode {
            Mode::Update => self.image.damaged().map(FullReason::Damaged),
            Mode::Full { .. } => None,
        }
    }

    /// Nothing was compiled, removed or recorded differently: OUT can be left alone, not even
    /// opened for writing.
    pub fn nothing_changed(&self) -> bool {
        self.is_update()
            && self.placed.compiled == 0
            && self.units.nothing_changed()
            && self.units.manifest(self.started_ns).encode() == self.image.manifest()
    }

    /// Resolve what is left, write debug information and the tables, and commit OUT.
    ///
    /// `functions_of` lists the functions (name, first line) a source file has now; it is
    /// asked only with debug information on, only for the files whose compile unit is written
    /// again, so that functions not compiled in this build keep their line tables.
    pub fn finish(
        mut self,
        functions_of: &mut dyn FnMut(SourceId) -> Vec<(String, u32)>,
    ) -> Result<Report> {
        if let Some(reason) = self.damage() {
            return Err(reason.into());
        }
        if let Some((before, now)) = self.image.tls_layout_change() {
            return Err(BackendError::NeedsFullBuild(FullReason::ThreadLocals {
                before,
                now,
            }));
        }
        let total = self.units.definitions();
        if self.nothing_changed() {
            return Ok(Report {
                mode: Mode::Update,
                summary: self.image.unchanged(),
                compiled: 0,
                reused: total,
                phases: vec![("finish", Duration::ZERO)],
                timings: Default::default(),
                read_files: 0,
                files: 0,
            });
        }
        self.sweep();
        let signatures = self.check_signatures();
        // What the sweep and the checks read may have been damaged: then that is the reason.
        if let Some(reason) = self.damage() {
            return Err(reason.into());
        }
        signatures?;
        let mut phases = Vec::new();
        if self.debug_info && !self.debug.written() {
            let t = std::time::Instant::now();
            self.write_debug_info(functions_of)?;
            phases.push(("debug info", t.elapsed()));
        }
        let t = std::time::Instant::now();
        self.image
            .set_manifest(self.units.manifest(self.started_ns).encode());
        let removed = std::mem::take(&mut self.units.removed_names);
        let summary = self.image.finish().map_err(|e| match e {
            // Found while finishing (writing a moved array reads all of it): too late to
            // start over here, so the front end is told to.
            zerolink_image::ImageError::TableDamaged(what) => {
                BackendError::NeedsFullBuild(FullReason::Damaged(what))
            }
            e => not_defined_again(e, &removed),
        })?;
        phases.push(("finish", t.elapsed()));
        self.target.deliver()?;
        let compiled = self.placed.compiled;
        let reused = match self.mode {
            Mode::Update => total.saturating_sub(compiled),
            Mode::Full { .. } => 0,
        };
        Ok(Report {
            mode: self.mode,
            summary,
            compiled,
            reused,
            phases,
            timings: Default::default(),
            read_files: 0,
            files: 0,
        })
    }
}

/// An undefined name (or a missing entry) that the previous build defined and this one's
/// sweep removed says so: the usual cause is a front end defining only what changed.
fn not_defined_again(e: zerolink_image::ImageError, removed: &[String]) -> BackendError {
    use zerolink_image::ImageError;
    let names: Vec<String> = match &e {
        ImageError::Undefined(list) => list
            .iter()
            .filter(|u| removed.contains(&u.name))
            .map(|u| format!("`{}`", u.name))
            .collect(),
        ImageError::NoEntry(name) if removed.contains(name) => vec![format!("`{name}`")],
        _ => Vec::new(),
    };
    if names.is_empty() {
        return e.into();
    }
    let names = match names.len() {
        1 => format!("{} was", names[0]),
        _ => format!("{} were", names.join(", ")),
    };
    BackendError::NotDefinedAgain {
        names,
        error: Box::new(e.into()),
    }
}

/// Whether the image can write executables for `isa`'s triple: x86-64, Linux (or no OS
/// named), ELF.
fn check_target(isa: &dyn TargetIsa) -> Result<()> {
    let t = isa.triple();
    let arch = t.architecture.to_string();
    let os = t.operating_system.to_string();
    let format = t.binary_format.to_string();
    let ok = arch == "x86_64"
        && matches!(os.as_str(), "linux" | "unknown")
        && matches!(format.as_str(), "elf" | "unknown");
    if ok {
        Ok(())
    } else {
        Err(BackendError::Target(t.to_string()))
    }
}

/// OUT reopened for an update, or a new image with the reason it could not be.
fn reopen(
    out: &Path,
    settings: &str,
    debug_info: bool,
    verify: bool,
    live: bool,
) -> Result<(Image, Mode, units::Units)> {
    let image = match Image::open(out, None) {
        Ok(image) => image,
        Err(OpenError::Missing) => return fresh(out, settings, None),
        Err(OpenError::Incompatible(why)) => {
            return fresh(out, settings, Some(FullReason::Unreadable(why)))
        }
    };
    let reason = if image.settings() != settings {
        Some(FullReason::OtherSettings)
    } else if let Some(r) = fragmented(&image).filter(|_| !live) {
        // (A live update never packs: a full build cannot be applied to the process.)
        Some(r)
    } else if let Some(Err(why)) = debug_info.then(|| previous_debug(&image).map(|_| ())) {
        Some(FullReason::DebugInfo(why))
    } else if verify {
        let problems = image.verify();
        problems.first().map(|p| FullReason::Unsound {
            first: p.to_string(),
            places: problems.len(),
        })
    } else {
        None
    };
    if let Some(reason) = reason {
        return fresh(out, settings, Some(reason));
    }
    let Some(manifest) = Manifest::decode(image.manifest()) else {
        return fresh(out, settings, Some(FullReason::UnitRecord));
    };
    Ok((image, Mode::Update, units::Units::previous(manifest)))
}

/// A new image that will replace OUT.
fn fresh(
    out: &Path,
    settings: &str,
    reason: Option<FullReason>,
) -> Result<(Image, Mode, units::Units)> {
    let mut image = Image::create(out)?;
    image.set_settings(settings);
    Ok((image, Mode::Full { reason }, units::Units::default()))
}

/// Free space below the high-water mark that a full build would reclaim: more than half of what
/// a region uses, and at least 1 MiB (small programs are not worth a rebuild). The floor can be
/// lowered for tests with `ZEROLINK_TEST_FRAGMENTATION_MIN`.
fn fragmented(image: &Image) -> Option<FullReason> {
    let floor = std::env::var("ZEROLINK_TEST_FRAGMENTATION_MIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1u64 << 20);
    image.regions().iter().find_map(|r| {
        let free = r.free_bytes();
        (free >= floor && free > r.used / 2).then(|| FullReason::Fragmented {
            region: r.kind.name(),
            free,
            used: r.used,
        })
    })
}

/// The previous build's debug information, which an update with debug info builds on.
fn previous_debug(image: &Image) -> std::result::Result<crate::debug::Previous<'_>, String> {
    crate::debug::Previous::read(image.extras_index(), |name| image.old_extra_section(name))
}

impl From<FullReason> for BackendError {
    fn from(r: FullReason) -> Self {
        BackendError::NeedsFullBuild(r)
    }
}
