//! Linking precompiled code into a session, in three passes:
//! 1. *choose*: every object given is in; then, name by name, each reference that nothing
//!    defines extracts the archive member that offers it (the command line's archives first,
//!    then, for what no shared library exports, the toolchain's), until no reference is left
//!    that an archive can satisfy. Strong definitions beat weak ones, a COMDAT group is kept
//!    once, and two strong definitions are an error naming both places;
//! 2. *kind*: each name is a function or a data object, from the symbol type of whoever
//!    defines it (the program's declaration first);
//! 3. *place*: each chosen object's sections, its symbols as aliases into them, then the
//!    common symbols nothing defined and the linker's own names (`_GLOBAL_OFFSET_TABLE_`,
//!    `__dso_handle`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use object::elf as E;
use xxhash_rust::xxh3::xxh3_64;
use zerolink_image::x86_64::{FINI_ARRAY_END, FINI_ARRAY_START, INIT_ARRAY_END, INIT_ARRAY_START};
use zerolink_image::{Contents, RefKind, Reference, RegionKind};

use super::archive::{Aligned, Archive};
use super::elf::{self, Bind, Class, InSection, InSymbol, Object, SymDef};
use super::relocs::{self, Action};
use super::ObjectError;
use crate::error::{BackendError, Result};
use crate::inputs::FileStat;
use crate::session::{
    Binding, DataObject, FullReason, Section, Session, SymbolId, SymbolKind, UnitId,
};

/// Where a precompiled input comes from, which decides when it is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Given by the user (a file, `-l` finding an archive): before shared libraries.
    User,
    /// Added by the toolchain as `cc` does (`libc_nonshared.a`, libgcc): after them.
    System,
}

#[derive(Debug, Clone)]
pub struct PrecompiledInput {
    pub path: PathBuf,
    pub origin: Origin,
}

/// What linking precompiled code did, for reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    pub objects: usize,
    pub members: usize,
    pub sections: usize,
    /// `.init_array*`/`.fini_array*` parts the placed objects brought.
    pub array_parts: usize,
}

enum Content {
    Object(Aligned),
    Archive(Archive),
}

struct Loaded {
    input: PrecompiledInput,
    digest: u64,
    content: Content,
}

/// The precompiled inputs of a build, read when a build needs them.
pub struct Precompiled {
    inputs: Vec<PrecompiledInput>,
    /// Each input, read on first need (an update reads only what changed).
    loaded: Vec<std::cell::OnceCell<std::result::Result<Loaded, String>>>,
}

/// An object chosen for the link: a file given, or an extracted member.
struct Chosen {
    /// Index into the inputs.
    file: usize,
    /// Its unit: the object file's, or the archive member's own.
    unit: UnitId,
    display: String,
    obj: Object,
    /// Sections dropped as a COMDAT group kept elsewhere (ELF indices).
    discarded: HashSet<usize>,
}

/// Who defines a global name among the chosen objects.
#[derive(Clone, Copy)]
struct Def {
    chosen: usize,
    symbol: usize,
    weak: bool,
}

fn object_error(file: &str, reason: ObjectError) -> BackendError {
    BackendError::Object {
        file: file.to_string(),
        reason,
    }
}

impl Precompiled {
    pub fn new(inputs: Vec<PrecompiledInput>) -> Precompiled {
        Precompiled {
            loaded: inputs.iter().map(|_| std::cell::OnceCell::new()).collect(),
            inputs,
        }
    }

    pub fn inputs(&self) -> &[PrecompiledInput] {
        &self.inputs
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Input `i`, read once: an object whole, an archive with its symbol index.
    fn one(&self, i: usize) -> Result<&Loaded> {
        let loaded = self.loaded[i].get_or_init(|| {
            let input = &self.inputs[i];
            let file = input.path.display().to_string();
            let bytes = std::fs::read(&input.path)
                .map_err(|e| object_error(&file, ObjectError::Io(e)).to_string())?;
            let (digest, content) = if super::archive::is_archive(&bytes) {
                let a = Archive::parse(bytes).map_err(|e| object_error(&file, e).to_string())?;
                (a.digest(), Content::Archive(a))
            } else {
                (xxh3_64(&bytes), Content::Object(Aligned::new(&bytes)))
            };
            Ok(Loaded {
                input: input.clone(),
                digest,
                content,
            })
        });
        loaded
            .as_ref()
            .map_err(|e| BackendError::Library(e.clone()))
    }

    /// Every input, read.
    fn load(&self) -> Result<Vec<&Loaded>> {
        (0..self.inputs.len()).map(|i| self.one(i)).collect()
    }

    /// The digest of input `i`'s contents (for the unit record).
    pub fn digest(&self, i: usize) -> Result<u64> {
        Ok(self.one(i)?.digest)
    }

    /// Place the objects among `objects` (input indices) and the archive members that the
    /// references nothing defines need, into `session`.
    fn link(&self, session: &mut Session, claimed: &mut Claimed) -> Result<LinkStats> {
        let loaded = self.load()?;
        let mut chooser = Chooser {
            loaded: &loaded,
            claimed,
            session,
            chosen: Vec::new(),
            defs: HashMap::new(),
            extracted: HashSet::new(),
            groups: HashSet::new(),
            commons: Vec::new(),
            queue: VecDeque::new(),
        };
        chooser.choose()?;
        let Chooser {
            chosen,
            defs,
            commons,
            ..
        } = chooser;
        let mut stats = LinkStats::default();
        let mut placer = Placer {
            session,
            chosen: &chosen,
            defs: &defs,
            kinds: HashMap::new(),
            commons: commons
                .iter()
                .map(|&(c, i)| chosen[c].obj.symbols[i].name.clone())
                .collect(),
            arrays: [Vec::new(), Vec::new()],
            arrays_unit: claimed.arrays,
            weak_refs: chosen
                .iter()
                .flat_map(|c| &c.obj.symbols)
                .filter(|s| s.bind == Bind::Weak && s.def == SymDef::Undefined)
                .map(|s| s.name.clone())
                .collect(),
        };
        for (c, ch) in chosen.iter().enumerate() {
            stats.sections += placer.place(c)?;
            stats.array_parts = placer.arrays.iter().map(Vec::len).sum();
            match &loaded[ch.file].content {
                Content::Object(_) => stats.objects += 1,
                Content::Archive(_) => stats.members += 1,
            }
        }
        placer.commons(&commons)?;
        placer.arrays()?;
        placer.linker_names()?;
        Ok(stats)
    }
}

/// A build's precompiled inputs, claimed as units of its session (see [`Precompiled::claim`]).
pub struct Claimed {
    /// Each input's own unit (an archive's holds no definitions: its members' units do).
    units: Vec<UnitId>,
    stats: Vec<FileStat>,
    /// Plain objects to ingest in this build: all in a full build; in an update, the new or
    /// changed ones.
    changed: HashSet<usize>,
    /// Units of archive members claimed so far (kept, changed or new), by unit key: a
    /// member is one unit however often it is kept, dropped and placed again.
    members: HashMap<u64, UnitId>,
    /// Members whose bytes changed: ingested again if anything still refers to them.
    changed_members: usize,
    /// The unit of the constructor and destructor arrays: made of every object's parts, they
    /// belong to no object (an update that re-links one keeps them).
    arrays: UnitId,
}

/// The name of the arrays' unit (no file has it: it starts with a NUL).
const ARRAYS_UNIT: &[u8] = b"\0zerolink: constructor and destructor arrays";

/// The unit key of an archive member: the archive's path, the member's name and which of the
/// members of that name it is.
fn member_key(archive: &Path, m: &super::archive::Member) -> u64 {
    let mut key = archive.as_os_str().as_encoded_bytes().to_vec();
    key.extend_from_slice(format!("({})#{}", m.name, m.occurrence).as_bytes());
    xxh3_64(&key)
}

impl Precompiled {
    /// Name each input to `session` as a unit, and each archive member placed before as one
    /// of its own. In an update, an input whose stat data (or else contents) is as the table
    /// recorded is kept whole without being read, its members with it (found by the stat
    /// data they were recorded with); a changed archive keeps every member whose contents
    /// are as they were. Any other object or member is ingested again by
    /// [`Precompiled::finish`], its old definitions gone with the sweep. The reason for a full
    /// build instead: the image has constructor arrays, made of every object's parts.
    pub fn claim(&self, session: &mut Session) -> Result<std::result::Result<Claimed, FullReason>> {
        let paths: Vec<PathBuf> = self.inputs.iter().map(|i| i.path.clone()).collect();
        let stats = crate::inputs::stat_all(&paths)?;
        // Without a time, no file is clean: all are read, none is wrongly kept.
        let written = crate::inputs::written_ns(session.output()).unwrap_or(i64::MIN);
        let arrays = session.unit(ARRAYS_UNIT);
        if session.is_update() && session.previous_unit(arrays).is_some() {
            session.keep_unit(arrays, FileStat::default())?;
        } else {
            session.set_unit_contents(arrays, Some(0), FileStat::default())?;
        }
        let mut claimed = Claimed {
            units: Vec::with_capacity(paths.len()),
            stats: stats.clone(),
            changed: HashSet::new(),
            members: HashMap::new(),
            changed_members: 0,
            arrays,
        };
        for (i, p) in paths.iter().enumerate() {
            let u = session.unit(p.as_os_str().as_encoded_bytes());
            claimed.units.push(u);
            let previous = session
                .previous_unit(u)
                .copied()
                .filter(|_| session.is_update());
            if let Some(r) = previous {
                let clean = crate::inputs::clean(&r, &stats[i], written);
                if clean || self.digest(i)? == r.digest {
                    session.keep_unit(u, stats[i])?;
                    // Its members: found by the stat data recorded with them when the archive
                    // was not read, else by name (a racily clean record has no stat data).
                    let own = xxh3_64(p.as_os_str().as_encoded_bytes());
                    let keys: Vec<u64> = if clean {
                        session.previous_units_with_stat(&r.stat)
                    } else if let Content::Archive(a) = &self.one(i)?.content {
                        a.members.iter().map(|m| member_key(p, m)).collect()
                    } else {
                        Vec::new()
                    };
                    for key in keys {
                        if key != own
                            && session.previous_unit_by_key(key).is_some()
                            && !claimed.members.contains_key(&key)
                        {
                            let m = session.unit_by_key(key);
                            session.keep_unit(m, stats[i])?;
                            claimed.members.insert(key, m);
                        }
                    }
                    continue;
                }
            }
            session.set_unit_contents(u, Some(self.digest(i)?), stats[i])?;
            match &self.one(i)?.content {
                Content::Object(_) => {
                    claimed.changed.insert(i);
                }
                Content::Archive(a) if previous.is_some() => {
                    // Members placed before: kept if unchanged, else ingested again.
                    for member in &a.members {
                        let key = member_key(p, member);
                        let Some(old) = session.previous_unit_by_key(key).copied() else {
                            continue;
                        };
                        if claimed.members.contains_key(&key) {
                            continue;
                        }
                        let mu = session.unit_by_key(key);
                        let digest = member.digest;
                        if digest == old.digest {
                            session.keep_unit(mu, stats[i])?;
                        } else {
                            session.set_unit_contents(mu, Some(digest), stats[i])?;
                            claimed.changed_members += 1;
                        }
                        claimed.members.insert(key, mu);
                    }
                }
                Content::Archive(_) => {}
            }
        }
        Ok(Ok(claimed))
    }

    /// After the program's own code is placed: place the objects to ingest and the archive
    /// members that references nothing defines need (in an update, those of new references
    /// and of what the sweep took away with a changed input). In an update, the reason for
    /// a full build if a reference is left that a full build might resolve differently, or
    /// constructors arrived: a full build decides, or reports the name as undefined.
    pub fn finish(
        &self,
        session: &mut Session,
        claimed: &mut Claimed,
    ) -> Result<Option<FullReason>> {
        if self.is_empty() {
            return Ok(None);
        }
        if !session.is_update() {
            self.link(session, claimed)?;
            return Ok(None);
        }
        if claimed.changed.is_empty() && claimed.changed_members == 0 && session.wanted().is_empty()
        {
            return Ok(None);
        }
        // The old definitions of changed inputs go first (the CLI swept already; a module's
        // definitions are all in by now): what referred to them is then wanted.
        session.sweep();
        // The arrays are one definition made of every object's parts: they stay right while
        // what they point at stays. A re-linked object whose old version had parts took
        // their targets with the sweep; one whose new version has parts would need them
        // in the middle of the arrays.
        let had_arrays = session
            .lookup(INIT_ARRAY_START)
            .is_some_and(|id| session.is_defined(id));
        if had_arrays && arrays_lost_a_target(session) {
            return Ok(Some(FullReason::Precompiled(
                "a re-linked object had constructors or destructors".into(),
            )));
        }
        let stats = self.link(session, claimed)?;
        if stats.array_parts > 0 {
            return Ok(Some(FullReason::Precompiled(
                "precompiled code with constructors or destructors arrived".into(),
            )));
        }
        // Weak references that nothing satisfies are 0, as in a full build; the one that
        // made them so may have been an input this update re-linked (its definitions went
        // with the sweep), while the objects that refer to them were kept.
        let first = claimed.units.first().copied();
        for id in session.wanted() {
            let name = session.symbols().name(id);
            let weak = session.symbols().get(id).binding() == Binding::Weak;
            if let (true, Some(u)) = (weak, first) {
                if session.import(&name).is_none() && !crate::clif::is_builtin(&name) {
                    session.define_undefined_weak(u, id)?;
                }
            }
        }
        // A name still wanted now is offered by no archive (every archive's index was read,
        // and the choosing pass took each member offering a wanted name) and by no library.
        // Without objects of the user's (only the toolchain's archives), a full build would
        // not find it either: the image reports it as undefined, with what refers to it. With
        // them, an object's weak reference that the program satisfied before is decided by a
        // full build (it makes it 0, or reports it).
        if self.inputs.iter().all(|i| i.origin == Origin::System) {
            return Ok(None);
        }
        let left = session.wanted().into_iter().find(|&id| {
            let name = session.symbols().name(id);
            session.import(&name).is_none() && !crate::clif::is_builtin(&name)
        });
        Ok(left.map(|id| {
            FullReason::Precompiled(format!(
                "`{}` is defined by nothing after re-linking the objects in place; a full \
                 build decides what an object's reference to it becomes",
                session.symbols().name(id)
            ))
        }))
    }
}

struct Chooser<'a> {
    loaded: &'a [&'a Loaded],
    /// Units of the inputs and members; `changed`: the plain objects to take.
    claimed: &'a mut Claimed,
    session: &'a mut Session,
    chosen: Vec<Chosen>,
    defs: HashMap<String, Def>,
    extracted: HashSet<(usize, usize)>,
    /// COMDAT signatures kept so far.
    groups: HashSet<String>,
    /// (chosen, symbol) of each common symbol.
    commons: Vec<(usize, usize)>,
    queue: VecDeque<String>,
}

impl Chooser<'_> {
    fn choose(&mut self) -> Result<()> {
        // What the program refers to and does not define.
        for id in self.session.wanted() {
            self.queue.push_back(self.session.symbols().name(id));
        }
        for (i, l) in self.loaded.iter().enumerate() {
            if !self.claimed.changed.contains(&i) {
                continue;
            }
            if let Content::Object(bytes) = &l.content {
                let display = l.input.path.display().to_string();
                let obj = elf::parse(bytes.bytes()).map_err(|e| object_error(&display, e))?;
                self.add(i, self.claimed.units[i], display, obj)?;
            }
        }
        while let Some(name) = self.queue.pop_front() {
            if self.defs.contains_key(&name) || self.program_defines(&name) {
                continue;
            }
            let importable = self.session.import(&name).is_some();
            let found = self.offer(&name, Origin::User).or_else(|| {
                (!importable)
                    .then(|| self.offer(&name, Origin::System))
                    .flatten()
            });
            if let Some((file, member)) = found {
                if self.extracted.insert((file, member)) {
                    let Content::Archive(a) = &self.loaded[file].content else {
                        unreachable!("offers come from archives");
                    };
                    let display = format!(
                        "{}({})",
                        self.loaded[file].input.path.display(),
                        a.members[member].name
                    );
                    let bytes = a.member_bytes(member);
                    let obj = elf::parse(Aligned::new(bytes).bytes())
                        .map_err(|e| object_error(&display, e))?;
                    let key = member_key(&self.loaded[file].input.path, &a.members[member]);
                    let unit = match self.claimed.members.get(&key) {
                        // Claimed already: changed, or kept with nothing placed of it.
                        Some(&u) => u,
                        None => {
                            // A member placed for the first time: a unit of its own.
                            let u = self.session.unit_by_key(key);
                            let stat = self.claimed.stats[file];
                            let digest = a.members[member].digest;
                            self.session.set_unit_contents(u, Some(digest), stat)?;
                            self.claimed.members.insert(key, u);
                            u
                        }
                    };
                    self.add(file, unit, display, obj)?;
                }
            }
        }
        Ok(())
    }

    /// Who defines `name` in the image already: a precompiled input kept from the previous
    /// build, or the program.
    fn defined_where(&self, name: &str) -> String {
        let unit = self
            .session
            .lookup(name)
            .and_then(|id| self.session.symbols().get(id).unit_of());
        unit.and_then(|n| {
            let i = self
                .claimed
                .units
                .iter()
                .position(|&u| self.session.unit_number(u) == n)?;
            Some(self.loaded[i].input.path.display().to_string())
        })
        .unwrap_or_else(|| "the program".into())
    }

    fn program_defines(&self, name: &str) -> bool {
        self.session
            .lookup(name)
            .is_some_and(|id| self.session.is_defined(id))
    }

    /// The first archive of `origin` that offers `name`: (input, member).
    fn offer(&self, name: &str, origin: Origin) -> Option<(usize, usize)> {
        self.loaded
            .iter()
            .enumerate()
            .find_map(|(i, l)| match &l.content {
                Content::Archive(a) if l.input.origin == origin => {
                    a.offers.get(name).map(|&m| (i, m))
                }
                _ => None,
            })
    }

    /// Take an object into the link: its definitions, and its references to look for.
    fn add(&mut self, file: usize, unit: UnitId, display: String, obj: Object) -> Result<()> {
        if obj.exec_stack {
            return Err(object_error(&display, ObjectError::ExecStack));
        }
        let c = self.chosen.len();
        let mut discarded = HashSet::new();
        let mut kept_here: HashSet<&str> = HashSet::new();
        for s in &obj.sections {
            if let Some(g) = &s.group {
                if !kept_here.contains(g.as_str()) && self.groups.contains(g) {
                    discarded.insert(s.index);
                } else {
                    kept_here.insert(g);
                }
            }
            // `.init_array`/`.fini_array` are run (see `Placer::arrays`); the older forms not.
            let ctor = [".preinit_array", ".ctors", ".dtors"]
                .iter()
                .any(|p| s.name == *p || s.name.starts_with(&format!("{p}.")));
            if ctor && s.size > 0 {
                return Err(object_error(
                    &display,
                    ObjectError::Constructors(s.name.clone()),
                ));
            }
        }
        let kept: Vec<String> = kept_here.into_iter().map(str::to_string).collect();
        self.groups.extend(kept);
        for (i, s) in obj.symbols.iter().enumerate() {
            if !s.is_global() {
                continue;
            }
            match s.def {
                SymDef::Undefined => self.queue.push_back(s.name.clone()),
                SymDef::Common { .. } => {
                    self.commons.push((c, i));
                    self.queue.push_back(s.name.clone());
                }
                SymDef::Absolute => {}
                SymDef::Section(sec) => {
                    if discarded.contains(&sec) || obj.section(sec).is_none() {
                        continue;
                    }
                    let weak = s.bind == Bind::Weak;
                    if self.program_defines(&s.name) {
                        if weak {
                            continue;
                        }
                        return Err(object_error(
                            &display,
                            ObjectError::Duplicate {
                                name: s.name.clone(),
                                other: self.defined_where(&s.name),
                            },
                        ));
                    }
                    // A strong definition beats a weak one; two strong ones are an error.
                    let take = match self.defs.get(&s.name) {
                        None => true,
                        Some(d) if d.weak && !weak => true,
                        Some(d) if d.weak || weak => false,
                        Some(d) => {
                            return Err(object_error(
                                &display,
                                ObjectError::Duplicate {
                                    name: s.name.clone(),
                                    // (the object being added is not in `chosen` yet)
                                    other: self.chosen.get(d.chosen).map_or_else(
                                        || "the same object".into(),
                                        |c| c.display.clone(),
                                    ),
                                },
                            ));
                        }
                    };
                    if take {
                        let def = Def {
                            chosen: c,
                            symbol: i,
                            weak,
                        };
                        self.defs.insert(s.name.clone(), def);
                    }
                }
            }
        }
        self.chosen.push(Chosen {
            file,
            unit,
            display,
            obj,
            discarded,
        });
        Ok(())
    }
}

struct Placer<'a> {
    session: &'a mut Session,
    chosen: &'a [Chosen],
    defs: &'a HashMap<String, Def>,
    kinds: HashMap<String, SymbolKind>,
    /// Names some object declares as a common symbol (data).
    commons: HashSet<String>,
    /// The parts of the constructor (0) and destructor (1) arrays, as objects bring them.
    arrays: [Vec<ArrayPart>; 2],
    /// Names the chosen objects refer to only if something defines them (weak undefined).
    weak_refs: HashSet<String>,
    /// The arrays' own unit (see [`Claimed::arrays`]).
    arrays_unit: UnitId,
}

/// Whether a site of the constructor or destructor arrays points at something no longer
/// placed (its object was re-linked: its sections went with the sweep).
fn arrays_lost_a_target(session: &Session) -> bool {
    [".init_array", ".fini_array"].iter().any(|name| {
        session.lookup(name).is_some_and(|atom| {
            session
                .targets_of(atom)
                .into_iter()
                .any(|t| !session.is_defined(t))
        })
    })
}

/// One object's `.init_array*` or `.fini_array*` section, resolved.
struct ArrayPart {
    priority: u32,
    bytes: Vec<u8>,
    refs: Vec<Reference>,
}

/// Which array a section belongs to (0: constructors, 1: destructors) and its priority:
/// `.init_array.N` sorts by N, plain `.init_array` after all of them (as ld's
/// `SORT_BY_INIT_PRIORITY`).
fn array_of(name: &str) -> Option<(usize, u32)> {
    [".init_array", ".fini_array"]
        .iter()
        .enumerate()
        .find_map(|(table, base)| {
            let rest = name.strip_prefix(base)?;
            if rest.is_empty() {
                return Some((table, u32::MAX));
            }
            rest.strip_prefix('.')?.parse().ok().map(|p| (table, p))
        })
}

/// `_GLOBAL_OFFSET_TABLE_`: GOT-relative code counts from it.
const GOT_SYMBOL: &str = "_GLOBAL_OFFSET_TABLE_";
/// What `atexit` passes to `__cxa_atexit`: 0 in an executable (crtbegin.o defines it).
const DSO_HANDLE: &str = "__dso_handle";

fn class_kind(class: Class) -> SymbolKind {
    if class == Class::Text {
        SymbolKind::Function
    } else {
        SymbolKind::Data
    }
}

fn class_region(class: Class) -> RegionKind {
    match class {
        Class::Text => RegionKind::Text,
        Class::Rodata => RegionKind::Rodata,
        Class::Data => RegionKind::Data,
        Class::Bss => RegionKind::Bss,
        Class::Tls => RegionKind::Tls,
    }
}

impl Placer<'_> {
    /// Whether `name` is a function or a data object: as the program declared it, else as
    /// its definition says, else as a shared library exports it; a function otherwise.
    fn kind_of(&mut self, name: &str) -> SymbolKind {
        if let Some(&k) = self.kinds.get(name) {
            return k;
        }
        let kind = if let Some(id) = self.session.lookup(name) {
            self.session.symbols().get(id).kind()
        } else if let Some(d) = self.defs.get(name) {
            let ch = &self.chosen[d.chosen];
            let s = &ch.obj.symbols[d.symbol];
            symbol_kind(&ch.obj, s)
        } else if name == GOT_SYMBOL || name == DSO_HANDLE || self.commons.contains(name) {
            SymbolKind::Data
        } else {
            match self.session.import(name) {
                Some(true) => SymbolKind::Data,
                _ => SymbolKind::Function,
            }
        };
        self.kinds.insert(name.to_string(), kind);
        kind
    }

    /// Place chosen object `c`; returns how many sections it placed.
    fn place(&mut self, c: usize) -> Result<usize> {
        let ch = &self.chosen[c];
        let u = ch.unit;
        let obj = &ch.obj;
        // Every section's handle first: relocations refer across sections.
        let mut atoms: HashMap<usize, SymbolId> = HashMap::new();
        let mut seen_names: HashMap<&str, usize> = HashMap::new();
        for s in &obj.sections {
            if ch.discarded.contains(&s.index) || array_of(&s.name).is_some() {
                continue;
            }
            let n = seen_names.entry(&s.name).or_insert(0);
            *n += 1;
            let name = if *n == 1 {
                format!("{}:{}", ch.display, s.name)
            } else {
                format!("{}:{}#{}", ch.display, s.name, s.index)
            };
            let id = self
                .session
                .declare(&name, class_kind(s.class), Binding::Local)?;
            atoms.insert(s.index, id);
        }
        let mut placed = 0;
        for s in &obj.sections {
            if let Some((table, priority)) = array_of(&s.name) {
                if !ch.discarded.contains(&s.index) {
                    let (bytes, refs) = self.convert(ch, &atoms, s)?;
                    let bytes = bytes.unwrap_or_else(|| vec![0; s.size as usize]);
                    self.arrays[table].push(ArrayPart {
                        priority,
                        bytes,
                        refs,
                    });
                }
                continue;
            }
            let Some(&atom) = atoms.get(&s.index) else {
                continue;
            };
            let (bytes, refs) = self.convert(ch, &atoms, s)?;
            let contents = match &bytes {
                Some(b) => Contents::Bytes(b),
                None => Contents::Zeros(s.size),
            };
            let fingerprint = bytes.as_deref().map_or(s.size, xxh3_64);
            self.session.define_section(
                u,
                atom,
                Section {
                    kind: class_kind(s.class),
                    region: class_region(s.class),
                    contents,
                    align: s.align,
                    refs: &refs,
                    fingerprint,
                },
            )?;
            placed += 1;
        }
        // Its unwind tables, as a section of their own, without the FDEs of code not kept.
        if let Some(eh) = &obj.eh_frame {
            let mut keep = |r: &elf::InReloc| match obj.symbols[r.symbol].def {
                SymDef::Section(sec) => atoms.contains_key(&sec) && !ch.discarded.contains(&sec),
                _ => false,
            };
            let kept =
                super::unwind::kept(eh, &mut keep).map_err(|e| object_error(&ch.display, e))?;
            if let Some(kept) = kept {
                let name = format!("{}:{}", ch.display, kept.name);
                let atom = self
                    .session
                    .declare(&name, SymbolKind::Data, Binding::Local)?;
                let (bytes, refs) = self.convert(ch, &atoms, &kept)?;
                let bytes = bytes.unwrap_or_default();
                self.session.define_section(
                    u,
                    atom,
                    Section {
                        kind: SymbolKind::Data,
                        region: RegionKind::Rodata,
                        contents: Contents::Bytes(&bytes),
                        align: kept.align,
                        refs: &refs,
                        fingerprint: xxh3_64(&bytes),
                    },
                )?;
                self.session.mark_eh_frame(atom);
                placed += 1;
            }
        }
        // The symbols this object was chosen to define.
        for (i, sym) in obj.symbols.iter().enumerate() {
            let SymDef::Section(sec) = sym.def else {
                continue;
            };
            if !sym.is_global() {
                continue;
            }
            let Some(d) = self.defs.get(&sym.name) else {
                continue;
            };
            if d.chosen != c || d.symbol != i {
                continue;
            }
            let Some(&atom) = atoms.get(&sec) else {
                continue;
            };
            let kind = self.kind_of(&sym.name);
            if kind == SymbolKind::Function && symbol_kind(obj, sym) == SymbolKind::Data {
                // Calling data jumps into a non-executable segment: refused, as the program's
                // own data is.
                return Err(object_error(
                    &ch.display,
                    ObjectError::Refused(format!(
                        "it defines `{}` as a data object, but the program refers to it as a \
                         function (declare it as data, or call a function)",
                        sym.name
                    )),
                ));
            }
            let binding = match sym.bind {
                _ if sym.hidden => Binding::Local,
                Bind::Weak => Binding::Weak,
                _ => Binding::Global,
            };
            let id = self.session.declare(&sym.name, kind, binding)?;
            self.session.set_binding(id, binding);
            self.session
                .define_alias(u, id, kind, atom, sym.value, sym.size)
                .map_err(|e| match e {
                    BackendError::Image(zerolink_image::ImageError::KindMismatch { .. }) => {
                        object_error(&ch.display, ObjectError::Malformed(e.to_string()))
                    }
                    e => e,
                })?;
            if sym.typ == E::STT_GNU_IFUNC {
                self.session
                    .mark_ifunc(id)
                    .map_err(|e| object_error(&ch.display, ObjectError::Refused(e.to_string())))?;
            }
        }
        Ok(placed)
    }

    /// A section's bytes (`None`: zero-filled) and its relocations as reference sites.
    fn convert(
        &mut self,
        ch: &Chosen,
        atoms: &HashMap<usize, SymbolId>,
        s: &InSection,
    ) -> Result<(Option<Vec<u8>>, Vec<Reference>)> {
        let obj = &ch.obj;
        let err = |reason| object_error(&ch.display, reason);
        let mut bytes = s.data.clone();
        let mut refs = Vec::with_capacity(s.relocs.len());
        // A general- or local-dynamic sequence's `__tls_get_addr` call goes with its site.
        let tls_calls = s
            .relocs
            .iter()
            .any(|r| matches!(r.rtype, E::R_X86_64_TLSGD | E::R_X86_64_TLSLD));
        for r in &s.relocs {
            if tls_calls && obj.symbols[r.symbol].name == "__tls_get_addr" {
                continue;
            }
            let action = relocs::action(r.rtype).ok_or_else(|| {
                let rtype = relocs::name(r.rtype);
                if relocs::is_tls(r.rtype) {
                    err(ObjectError::ThreadLocal {
                        section: s.name.clone(),
                        offset: r.offset,
                        rtype,
                    })
                } else {
                    err(ObjectError::UnsupportedRelocation {
                        section: s.name.clone(),
                        offset: r.offset,
                        rtype,
                    })
                }
            })?;
            let width = match action {
                Action::Skip => continue,
                Action::Site(k) | Action::GotBase(k) => u64::from(k.width()),
                Action::Size(w) => w as u64,
            };
            if r.offset.checked_add(width).is_none_or(|end| end > s.size) {
                return Err(err(ObjectError::RelocationOutside {
                    section: s.name.clone(),
                    offset: r.offset,
                    size: s.size,
                }));
            }
            let sym = &obj.symbols[r.symbol];
            let site = |kind: RefKind, target: SymbolId, addend: i64| Reference {
                offset: r.offset as u32,
                kind,
                target,
                addend,
            };
            match action {
                Action::Skip => {}
                Action::GotBase(kind) => {
                    let got = self
                        .session
                        .declare(GOT_SYMBOL, SymbolKind::Data, Binding::Local)?;
                    refs.push(site(kind, got, r.addend));
                }
                Action::Size(w) => {
                    let size = self.size_of(sym).ok_or_else(|| {
                        err(ObjectError::UnknownSize {
                            section: s.name.clone(),
                            offset: r.offset,
                            target: sym.name.clone(),
                        })
                    })?;
                    let v = (size as i64).wrapping_add(r.addend) as u64;
                    let at = r.offset as usize;
                    if let Some(b) = bytes.as_mut() {
                        b[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
                    }
                }
                Action::Site(kind) => {
                    let (target, addend) = if sym.is_global() {
                        let k = self.kind_of(&sym.name);
                        let binding = if sym.bind == Bind::Weak {
                            Binding::Weak
                        } else {
                            Binding::Global
                        };
                        (self.session.declare(&sym.name, k, binding)?, r.addend)
                    } else if sym.typ == E::STT_GNU_IFUNC {
                        // Its references would need a stub of a name no one else can see.
                        return Err(err(ObjectError::Unsupported {
                            section: s.name.clone(),
                            offset: r.offset,
                            what: format!(
                                "a reference to local indirect function `{}` (STT_GNU_IFUNC)",
                                sym.name
                            ),
                        }));
                    } else {
                        match sym.def {
                            SymDef::Section(sec) => match atoms.get(&sec) {
                                Some(&a) => (a, r.addend.wrapping_add(sym.value as i64)),
                                None => {
                                    return Err(err(ObjectError::NotLoaded {
                                        section: s.name.clone(),
                                        offset: r.offset,
                                        target: target_name(obj, sym),
                                    }))
                                }
                            },
                            _ => {
                                return Err(err(ObjectError::AbsoluteTarget {
                                    section: s.name.clone(),
                                    offset: r.offset,
                                    target: target_name(obj, sym),
                                }))
                            }
                        }
                    };
                    refs.push(site(kind, target, addend));
                }
            }
        }
        Ok((bytes, refs))
    }

    fn size_of(&self, sym: &InSymbol) -> Option<u64> {
        if !sym.is_global() || sym.def != SymDef::Undefined {
            return Some(sym.size);
        }
        self.defs
            .get(&sym.name)
            .map(|d| self.chosen[d.chosen].obj.symbols[d.symbol].size)
    }

    /// Common symbols that nothing defined: zero-filled, the largest size and alignment any
    /// object asked for (as ld allocates them).
    fn commons(&mut self, commons: &[(usize, usize)]) -> Result<()> {
        let mut order: Vec<&str> = Vec::new();
        let mut want: HashMap<&str, (u64, u64, usize)> = HashMap::new();
        for &(c, i) in commons {
            let s = &self.chosen[c].obj.symbols[i];
            let SymDef::Common { align } = s.def else {
                continue;
            };
            if self.defs.contains_key(&s.name) {
                continue;
            }
            let e = want.entry(&s.name).or_insert_with(|| {
                order.push(&s.name);
                (0, 1, c)
            });
            e.0 = e.0.max(s.size);
            e.1 = e.1.max(align);
        }
        for name in order {
            let (size, align, c) = want[name];
            if let Some(id) = self.session.lookup(name) {
                if self.session.is_defined(id) {
                    continue;
                }
            }
            let id = self
                .session
                .declare(name, SymbolKind::Data, Binding::Global)?;
            self.session.define_data(
                self.chosen[c].unit,
                id,
                DataObject {
                    contents: Contents::Zeros(size),
                    align: align.min(zerolink_image::layout::PAGE),
                    writable: true,
                    tls: false,
                    refs: &[],
                    fingerprint: size,
                },
            )?;
        }
        Ok(())
    }

    /// The constructor and destructor arrays: every object's parts, by priority, as one
    /// definition each, between `__init_array_start`/`_end` (and `__fini_array_*`). glibc
    /// runs them through `DT_INIT_ARRAY`/`DT_FINI_ARRAY`; a freestanding `_start` itself.
    fn arrays(&mut self) -> Result<()> {
        if self.arrays.iter().all(Vec::is_empty) {
            return Ok(());
        }
        let u = self.arrays_unit;
        let names = [
            (".init_array", INIT_ARRAY_START, INIT_ARRAY_END),
            (".fini_array", FINI_ARRAY_START, FINI_ARRAY_END),
        ];
        for (table, (section, start, end)) in names.into_iter().enumerate() {
            let mut parts = std::mem::take(&mut self.arrays[table]);
            parts.sort_by_key(|p| p.priority);
            let mut bytes = Vec::new();
            let mut refs = Vec::new();
            for p in parts {
                bytes.resize(bytes.len().next_multiple_of(8), 0);
                let at = bytes.len() as u32;
                bytes.extend_from_slice(&p.bytes);
                refs.extend(p.refs.into_iter().map(|r| Reference {
                    offset: r.offset + at,
                    ..r
                }));
            }
            let atom = self
                .session
                .declare(section, SymbolKind::Data, Binding::Local)?;
            self.session.define_section(
                u,
                atom,
                Section {
                    kind: SymbolKind::Data,
                    region: RegionKind::Data,
                    contents: Contents::Bytes(&bytes),
                    align: 8,
                    refs: &refs,
                    fingerprint: xxh3_64(&bytes),
                },
            )?;
            for (name, offset) in [(start, 0), (end, bytes.len() as u64)] {
                let id = self
                    .session
                    .declare(name, SymbolKind::Data, Binding::Local)?;
                self.session
                    .define_alias(u, id, SymbolKind::Data, atom, offset, 0)?;
            }
        }
        Ok(())
    }

    /// The names a linker defines itself, where something refers to them.
    fn linker_names(&mut self) -> Result<()> {
        let Some(first) = self.chosen.first() else {
            return Ok(());
        };
        let u = first.unit;
        for id in self.session.wanted() {
            let name = self.session.symbols().name(id);
            if name == GOT_SYMBOL {
                self.session.define_got_base(u, id)?;
            } else if self.weak_refs.contains(&name)
                && self.session.import(&name).is_none()
                && !crate::clif::is_builtin(&name)
            {
                // An undefined weak reference that nothing satisfies is 0, as ld makes it.
                self.session.define_undefined_weak(u, id)?;
            } else if name == DSO_HANDLE && self.session.import(&name).is_none() {
                self.session.define_data(
                    u,
                    id,
                    DataObject {
                        contents: Contents::Bytes(&[0; 8]),
                        align: 8,
                        writable: false,
                        tls: false,
                        refs: &[],
                        fingerprint: 0,
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// A symbol's kind from its ELF type, or from the section it is in.
fn symbol_kind(obj: &Object, s: &InSymbol) -> SymbolKind {
    match s.typ {
        E::STT_FUNC | E::STT_GNU_IFUNC => SymbolKind::Function,
        E::STT_OBJECT | E::STT_COMMON | E::STT_TLS => SymbolKind::Data,
        _ => match s.def {
            SymDef::Section(sec) => obj
                .section(sec)
                .map_or(SymbolKind::Data, |x| class_kind(x.class)),
            SymDef::Common { .. } => SymbolKind::Data,
            _ => SymbolKind::Function,
        },
    }
}

fn target_name(obj: &Object, s: &InSymbol) -> String {
    if !s.name.is_empty() {
        return s.name.clone();
    }
    match s.def {
        SymDef::Section(sec) => obj
            .section_names
            .get(sec)
            .cloned()
            .unwrap_or_else(|| format!("section {sec}")),
        _ => "(unnamed)".into(),
    }
}
