//! Shared libraries: finding them as `cc -l NAME` would, and reading what they export.
//!
//! Names a program calls but does not define are resolved here, at build time, so a missing
//! symbol is reported by `zerolink build` like any undefined symbol rather than by the dynamic
//! loader at run time. Libraries are searched in the `-L` directories, then the system's. On
//! glibc systems `libc.so` and `libm.so` are linker scripts (`GROUP ( /lib/.../libc.so.6 ... )`);
//! the shared objects they name are used (static archives in them are skipped).
//!
//! Order matters as with `ld`: libraries named with `-l`, in command-line order, then libc; the
//! first library that exports a name provides it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{Object, ObjectSymbol, SymbolKind as ObjKind};

use crate::error::{BackendError, Result};
use crate::objects::{Origin, PrecompiledInput};

/// How names not defined by the program are resolved.
#[derive(Debug, Clone, Default)]
pub struct LinkOptions {
    /// No libc, no shared libraries: a static executable with zerolink's built-ins.
    pub freestanding: bool,
    /// `-l NAME`, in order (libc is added after them unless freestanding).
    pub libraries: Vec<String>,
    /// `-L DIR`, searched before the system directories.
    pub search_dirs: Vec<PathBuf>,
    /// `-rpath DIR`: where the executable's dynamic loader looks for the libraries first
    /// (`DT_RUNPATH`), for a runtime library that is not installed system-wide.
    pub rpath: Vec<PathBuf>,
    /// `-l NAME` takes `libNAME.a` even where `libNAME.so` exists (as `ld -Bstatic`).
    pub prefer_static: bool,
    /// A position-independent executable (`ET_DYN`, loaded at a random address).
    pub pie: bool,
}

/// System library directories, after `-L` ones (Debian/Ubuntu multiarch first).
const SYSTEM_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

/// One shared object and the names it exports.
#[derive(Debug)]
pub struct SharedObject {
    /// What `DT_NEEDED` names it by: its `DT_SONAME`, or its file name.
    pub soname: String,
    pub path: PathBuf,
    pub functions: usize,
    exports: HashMap<String, Exported>,
    /// The version names its exports are defined with (`Exported::version` indexes this).
    versions: Vec<String>,
}

/// What a library's `.dynsym` says about one name.
#[derive(Debug, Clone, Copy)]
struct Exported {
    /// Not a function (a data object, a thread-local, or untyped).
    data: bool,
    /// A data object (`STT_OBJECT`, or untyped with a size) that a copy relocation can copy:
    /// its address, size and alignment in the library.
    object: Option<(u64, u64, u64)>,
    /// The version the name's default definition has (`name@@VERSION`), as an index into
    /// `SharedObject::versions`; `None`: unversioned.
    version: Option<u16>,
}

impl SharedObject {
    /// Whether it exports `name`, and if so whether as data.
    pub fn export(&self, name: &str) -> Option<bool> {
        self.exports.get(name).map(|e| e.data)
    }

    /// `name` as a data object a copy relocation can copy: its size, alignment and the
    /// library's other names for the same bytes (`environ`, `__environ`), which must be
    /// exported at the copy too.
    fn object(&self, name: &str) -> Option<zerolink_image::ObjectExport> {
        let (value, size, align) = self.exports.get(name)?.object?;
        let mut aliases: Vec<String> = self
            .exports
            .iter()
            .filter(|(n, e)| n.as_str() != name && e.object.is_some_and(|o| o.0 == value))
            .map(|(n, _)| n.clone())
            .collect();
        aliases.sort();
        Some(zerolink_image::ObjectExport {
            size,
            align,
            aliases,
        })
    }
}

/// The shared objects of a link, in resolution order.
#[derive(Debug, Default)]
pub struct Libraries {
    pub objects: Vec<SharedObject>,
    /// The run-time search path, colon-separated (none if empty).
    pub runpath: Option<String>,
    /// Position-independent (see [`LinkOptions::pie`]).
    pub pie: bool,
}

impl Libraries {
    /// Find and read every library `opts` asks for.
    pub fn load(opts: &LinkOptions) -> Result<Libraries> {
        let mut libs = Libraries::default();
        if opts.freestanding {
            return Ok(libs);
        }
        libs.pie = opts.pie;
        let rpath: Vec<String> = opts.rpath.iter().map(|p| p.display().to_string()).collect();
        libs.runpath = (!rpath.is_empty()).then(|| rpath.join(":"));
        let mut names = with_runtime(opts);
        if !names.iter().any(|n| n == "c") {
            names.push("c".into());
        }
        let dirs = search_path(opts);
        for name in &names {
            // libc itself is always the shared one: a static libc is another kind of program.
            let prefer_static = opts.prefer_static && name != "c";
            for found in find(name, &dirs, prefer_static)? {
                let Found::Shared(object) = found else {
                    continue;
                };
                if libs.objects.iter().any(|o| o.path == object) {
                    continue;
                }
                libs.objects.push(read(&object)?);
            }
        }
        Ok(libs)
    }

    /// The first library exporting `name`: (index, exported as data).
    pub fn resolve(&self, name: &str) -> Option<(usize, bool)> {
        self.objects
            .iter()
            .enumerate()
            .find_map(|(i, o)| o.export(name).map(|data| (i, data)))
    }

    /// What the image needs to know of `name`: the first library exporting it and, for a
    /// data object, what a copy relocation needs.
    pub fn export(&self, name: &str) -> Option<zerolink_image::Export> {
        let (i, data) = self.resolve(name)?;
        let version = self.objects[i]
            .exports
            .get(name)
            .and_then(|e| e.version)
            .and_then(|v| self.objects[i].versions.get(usize::from(v)).cloned());
        Some(zerolink_image::Export {
            library: i as u32,
            version,
            data,
            object: if data {
                self.objects[i].object(name)
            } else {
                None
            },
        })
    }

    pub fn sonames(&self) -> Vec<String> {
        self.objects.iter().map(|o| o.soname.clone()).collect()
    }

    /// A line for the settings recorded in the executable: a different set of libraries
    /// means a full build.
    pub fn describe(&self) -> String {
        let paths: Vec<String> = self
            .objects
            .iter()
            .map(|o| o.path.display().to_string())
            .collect();
        let pie = if self.pie { "; pie" } else { "" };
        match &self.runpath {
            Some(r) => format!("{}; runpath {r}{pie}", paths.join(" ")),
            None => format!("{}{pie}", paths.join(" ")),
        }
    }
}

/// Where `-l` looks, as `cc -print-search-dirs` lists it: the `-L` directories, GCC's own
/// (`libstdc++.so`, `libgcc_s.so`, `libgcc_eh.a` live there on Debian), then the system's.
fn search_path(opts: &LinkOptions) -> Vec<PathBuf> {
    opts.search_dirs
        .iter()
        .cloned()
        .chain(gcc_dir())
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .collect()
}

/// The `-l` names of a link with what `g++` adds when the C++ runtime is linked: libm, and
/// the unwinder (`libgcc_s`, or `libgcc_eh.a` when libraries are static), so that
/// `-l stdc++` links what `g++` links.
fn with_runtime(opts: &LinkOptions) -> Vec<String> {
    let mut names = opts.libraries.clone();
    if names.iter().any(|n| n == "stdc++") {
        let unwinder = if opts.prefer_static {
            "gcc_eh"
        } else {
            "gcc_s"
        };
        for extra in ["m", unwinder] {
            if !names.iter().any(|n| n == extra) {
                names.push(extra.into());
            }
        }
    }
    names
}

/// What `-l NAME` found.
enum Found {
    Shared(PathBuf),
    Archive(PathBuf),
}

/// `-l NAME` as ld finds it: in each directory in turn, `libNAME.so` then `libNAME.a`
/// (`libNAME.a` first with `prefer_static`); `-l :FILE` names the file exactly. A file that
/// is a linker script stands for what it names (see [`expand`]).
fn find(name: &str, dirs: &[PathBuf], prefer_static: bool) -> Result<Vec<Found>> {
    find_at(name, dirs, prefer_static, 0)
}

fn find_at(name: &str, dirs: &[PathBuf], prefer_static: bool, depth: u32) -> Result<Vec<Found>> {
    let files: Vec<String> = match name.strip_prefix(':') {
        Some(exact) => vec![exact.to_string()],
        None if prefer_static => vec![format!("lib{name}.a"), format!("lib{name}.so")],
        None => vec![format!("lib{name}.so"), format!("lib{name}.a")],
    };
    for d in dirs {
        for f in &files {
            let p = d.join(f);
            if p.is_file() {
                return expand(&p, dirs, prefer_static, depth);
            }
        }
    }
    Err(BackendError::Library(format!(
        "library `-l {name}` not found: no {} in {}",
        files.join(" or "),
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The static archives a link takes, in order: those `-l` found (searched before the shared
/// libraries), then the ones `cc` adds itself (searched after them): `libc_nonshared.a`,
/// which glibc's `libc.so` script names beside `libc.so.6` (`atexit` lives there), and GCC's
/// `libgcc.a` (compiler helpers such as `__divti3`). A freestanding program gets libgcc only.
pub fn archives(opts: &LinkOptions) -> Result<Vec<PrecompiledInput>> {
    let dirs = search_path(opts);
    let mut out = Vec::new();
    for name in with_runtime(opts)
        .iter()
        .filter(|n| !opts.freestanding || (*n != "c" && *n != "gcc_s"))
    {
        let prefer_static = (opts.prefer_static && name != "c") || opts.freestanding;
        for found in find(name, &dirs, prefer_static)? {
            if let Found::Archive(path) = found {
                push_archive(&mut out, path, Origin::User);
            }
        }
    }
    if !opts.freestanding {
        if let Some(p) = SYSTEM_DIRS
            .iter()
            .map(|d| Path::new(d).join("libc_nonshared.a"))
            .find(|p| p.is_file())
        {
            push_archive(&mut out, p, Origin::System);
        }
    }
    if let Some(p) = gcc_dir()
        .map(|d| d.join("libgcc.a"))
        .filter(|p| p.is_file())
    {
        push_archive(&mut out, p, Origin::System);
    }
    Ok(out)
}

/// Add an archive once (a script and the toolchain may both name `libgcc.a`).
fn push_archive(out: &mut Vec<PrecompiledInput>, path: PathBuf, origin: Origin) {
    if !out.iter().any(|i| i.path == path) {
        out.push(PrecompiledInput { path, origin });
    }
}

/// GCC's library directory, where `gcc -print-libgcc-file-name` would point: the newest
/// GCC's (`/usr/lib/gcc/x86_64-linux-gnu/N`).
fn gcc_dir() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/gcc/x86_64-linux-gnu");
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: Option<Vec<u32>> = e
                .file_name()
                .to_str()?
                .split('.')
                .map(|p| p.parse().ok())
                .collect();
            let dir = e.path();
            dir.join("libgcc.a").is_file().then_some((v?, dir))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

/// What a library file stands for: itself (a shared object or an archive, by its first
/// bytes), or what the GNU ld script it is names (`crate::ldscript`), in order. A relative
/// name in a script is looked for beside the script, then in the search path, as `ld` does
/// (GCC's `libgcc_s.so` names `libgcc_s.so.1` that way); `-lNAME` in a script is found like
/// `-l NAME`.
fn expand(path: &Path, dirs: &[PathBuf], prefer_static: bool, depth: u32) -> Result<Vec<Found>> {
    let bad = |what: String| BackendError::Library(format!("{}: {what}", path.display()));
    if depth > 8 {
        return Err(bad("linker scripts name each other too deeply".into()));
    }
    match crate::objects::sniff_content(path) {
        Ok(crate::objects::InputKind::Archive) => return Ok(vec![Found::Archive(path.into())]),
        Ok(crate::objects::InputKind::Object) => {
            // A shared object (an ELF relocatable object is not a library).
            return Ok(vec![Found::Shared(path.into())]);
        }
        Ok(crate::objects::InputKind::Clif) => {}
        Err(e) => return Err(bad(format!("cannot read it: {e}"))),
    }
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| bad("neither a library nor a GNU ld script".into()))?;
    let script =
        crate::ldscript::parse(text).map_err(|e| bad(format!("as a GNU ld script: {e}")))?;
    let mut dirs = dirs.to_vec();
    dirs.extend(script.search_dirs.iter().map(PathBuf::from));
    let mut out = Vec::new();
    for input in &script.inputs {
        match input {
            crate::ldscript::ScriptInput::Library(name) => {
                out.extend(find_at(name, &dirs, prefer_static, depth + 1)?);
            }
            crate::ldscript::ScriptInput::File(name) => {
                let p = Path::new(name);
                let found = if p.is_absolute() {
                    Some(p.to_path_buf()).filter(|p| p.is_file())
                } else {
                    std::iter::once(path.with_file_name(name))
                        .chain(dirs.iter().map(|d| d.join(name)))
                        .find(|p| p.is_file())
                };
                let found = found.ok_or_else(|| {
                    bad(format!("the script names `{name}`, which does not exist"))
                })?;
                out.extend(expand(&found, &dirs, prefer_static, depth + 1)?);
            }
        }
    }
    if out.is_empty() {
        return Err(bad("a GNU ld script that names no library".into()));
    }
    Ok(out)
}

fn read(path: &Path) -> Result<SharedObject> {
    let bad = |what: &str| BackendError::Library(format!("{}: {what}", path.display()));
    // Mapped, not read: every build of a program that links libc looks at its exports, and
    // a 2 MB copy (500 fresh pages) cost about as much as the rest of a small update.
    let file = std::fs::File::open(path).map_err(|e| bad(&e.to_string()))?;
    // SAFETY: read-only, and dropped before this function returns. Package managers replace
    // a library by renaming a new file over it, which leaves the mapped inode as it was;
    // only a library truncated in place during these few milliseconds could fault, as it
    // would for the dynamic loader of every program using it.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(&e.to_string()))?;
    let elf = ElfFile64::<object::Endianness>::parse(&*bytes)
        .map_err(|_| bad("not a 64-bit ELF shared object"))?;
    let mut exports = HashMap::new();
    let mut functions = 0;
    // Symbol versions, as ld binds a new reference: to the name's default definition
    // (`name@@V`), never to a compatibility one (`name@V`, hidden), whose old behaviour only
    // binaries linked long ago ask for (`realpath@GLIBC_2.2.5` wants a buffer).
    let endian = elf.endian();
    let table = elf
        .elf_section_table()
        .versions(endian, elf.data())
        .map_err(|_| bad("its symbol versions are malformed"))?;
    let mut versions: Vec<String> = Vec::new();
    let mut version_of = |index: object::SymbolIndex| -> Result<(bool, Option<u16>)> {
        let Some(table) = &table else {
            return Ok((false, None));
        };
        let vi = table.version_index(endian, index);
        let name = table
            .version(vi)
            .map_err(|_| bad("a symbol has a bad version index"))?
            .map(|v| String::from_utf8_lossy(v.name()).into_owned());
        let at = name.map(|n| match versions.iter().position(|v| *v == n) {
            Some(i) => i as u16,
            None => {
                versions.push(n);
                (versions.len() - 1) as u16
            }
        });
        Ok((vi.is_hidden(), at))
    };
    for sym in elf.dynamic_symbols() {
        if sym.is_undefined() || !(sym.is_global() || sym.is_weak()) {
            continue;
        }
        let (hidden, version) = version_of(sym.index())?;
        if hidden {
            continue;
        }
        let data = match sym.kind() {
            ObjKind::Text => false,
            // Thread-locals too: code reaches them through a GOT entry of their offset from
            // the thread pointer (initial-exec, see the image's `patch_import_site`).
            ObjKind::Data | ObjKind::Unknown | ObjKind::Tls => true,
            _ => continue,
        };
        let copyable = match sym.kind() {
            ObjKind::Data => true,
            ObjKind::Unknown => sym.size() > 0,
            _ => false,
        };
        let object = copyable.then(|| {
            // As mold and lld align a copy: the definition's section alignment, at most what
            // the address's low bits allow.
            let section = match sym.section() {
                object::SymbolSection::Section(i) => elf.section_by_index(i).ok(),
                _ => None,
            };
            let section_align = section.map_or(1, |s| object::ObjectSection::align(&s).max(1));
            let value_align = 1u64 << sym.address().trailing_zeros().min(12);
            (sym.address(), sym.size(), section_align.min(value_align))
        });
        if let Ok(name) = sym.name() {
            if !name.is_empty() {
                functions += usize::from(!data);
                exports.entry(name.to_string()).or_insert(Exported {
                    data,
                    object,
                    version,
                });
            }
        }
    }
    let mut soname = None;
    if let Ok(table) = elf.elf_dynamic_table() {
        for d in table.iter() {
            if d.tag == object::elf::DT_SONAME {
                soname = table
                    .string(d)
                    .ok()
                    .map(|s| String::from_utf8_lossy(s).into_owned());
            }
        }
    }
    let soname = soname.unwrap_or_else(|| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(SharedObject {
        soname,
        path: path.to_path_buf(),
        functions,
        exports,
        versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_is_found_through_its_linker_script_and_exports_printf_and_stdout() {
        let libs = Libraries::load(&LinkOptions::default()).expect("libc is installed");
        let (i, data) = libs.resolve("printf").expect("printf");
        assert!(!data);
        assert_eq!(libs.objects[i].soname, "libc.so.6");
        assert_eq!(libs.resolve("stdout").map(|r| r.1), Some(true));
        assert!(libs.resolve("zl_write").is_none());
    }

    #[test]
    fn relative_names_in_a_linker_script_are_searched_like_ld_does() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("libfoo.so"),
            "/* GNU ld script */\nGROUP ( libc.so.6 )\n",
        )
        .unwrap();
        let opts = LinkOptions {
            libraries: vec!["foo".into()],
            search_dirs: vec![dir.path().to_path_buf()],
            ..LinkOptions::default()
        };
        let libs = Libraries::load(&opts).expect("libc.so.6 is found in the system directories");
        assert_eq!(libs.objects[0].soname, "libc.so.6");
    }

    #[test]
    fn a_missing_library_names_the_search_path() {
        let opts = LinkOptions {
            libraries: vec!["doesnotexist".into()],
            ..LinkOptions::default()
        };
        let e = Libraries::load(&opts).unwrap_err().to_string();
        assert!(e.contains("`-l doesnotexist` not found"), "{e}");
        assert!(e.contains("/usr/lib/x86_64-linux-gnu"), "{e}");
    }
}
