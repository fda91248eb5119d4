//! `zerolink inspect`: the symbol-resolution table of an executable, as text or JSON.

use std::path::Path;

use anyhow::Result;
use serde_json::json;
use zerolink_image::sites::Place;
use zerolink_image::{Image, OpenError, RegionKind, SymbolId};

pub fn run(path: &Path, as_json: bool) -> Result<()> {
    let table = match Image::open(path, None) {
        Ok(image) => image,
        Err(OpenError::Missing) => anyhow::bail!("{}: no such file", path.display()),
        Err(OpenError::Incompatible(reason)) => anyhow::bail!("{}: {reason}", path.display()),
    };
    let hardening = crate::hardening::of(path)?;
    let mut text = if as_json {
        let mut v = to_json(&table);
        v["hardening"] = json!({
            "pie": hardening.pie,
            "relro": hardening.relro,
            "nx_stack": hardening.nx_stack,
            "writable_and_executable_segments": hardening.wx_segments,
            "text_relocations": hardening.text_relocations,
        });
        serde_json::to_string_pretty(&v)?
    } else {
        render_text(&table, &hardening)
    };
    text.push('\n');
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // `zerolink inspect OUT | head` closes the pipe early: that is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Incoming sites per symbol.
fn referrers(table: &Image) -> Vec<Vec<String>> {
    let mut by_target = vec![Vec::new(); table.symbols().len()];
    for site in table.sites().iter() {
        let from = match site.place {
            Place::In { owner, offset } => {
                format!("{}+{:#x}", table.symbols().name(owner), offset)
            }
            Place::GotEntry { addr } => format!("GOT@{addr:#x}"),
        };
        by_target[site.target.index()].push(format!("{from} ({})", site.kind.name()));
    }
    by_target
}

struct RegionInfo {
    kind: RegionKind,
    used: u64,
    free: u64,
    ranges: usize,
    largest: u64,
}

impl RegionInfo {
    /// 0 when free space is one piece (or none), towards 1 as it splinters.
    fn fragmentation(&self) -> f64 {
        if self.free == 0 {
            0.0
        } else {
            1.0 - self.largest as f64 / self.free as f64
        }
    }
}

fn regions(table: &Image) -> Vec<RegionInfo> {
    table
        .regions()
        .iter()
        .map(|r| RegionInfo {
            kind: r.kind,
            used: r.used,
            free: r.free_bytes(),
            ranges: r.free_ranges().len(),
            largest: r.free_ranges().iter().map(|&(_, l)| l).max().unwrap_or(0),
        })
        .collect()
}

/// The data objects of shared libraries copied into the executable: `NAME (LIBRARY)`.
fn copies(table: &Image) -> Vec<String> {
    table
        .symbols()
        .copies()
        .into_iter()
        .map(|id| {
            let lib = table
                .symbols()
                .copy_of(id)
                .and_then(|l| table.libraries().get(l as usize))
                .map_or("?", String::as_str);
            format!("{} ({lib})", table.symbols().name(id))
        })
        .collect()
}

fn render_text(table: &Image, hardening: &crate::hardening::Hardening) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "settings:   {}", table.settings());
    let _ = writeln!(out, "generation: {}", table.generation());
    let _ = writeln!(out, "hardening:  {hardening}");
    let copies = copies(table);
    if !copies.is_empty() {
        // As `readelf -r` shows them: R_X86_64_COPY, one per library data object.
        let _ = writeln!(out, "copies:     {}", copies.join(", "));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<8} {:>12} {:>12} {:>8} {:>12} {:>14}",
        "region", "used", "free", "ranges", "largest", "fragmentation"
    );
    for r in regions(table) {
        let _ = writeln!(
            out,
            "{:<8} {:>12} {:>12} {:>8} {:>12} {:>13.1}%",
            r.kind.name(),
            r.used,
            r.free,
            r.ranges,
            r.largest,
            100.0 * r.fragmentation()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<24} {:<8} {:>12} {:>8} {:>8} {:>16} {:>6}",
        "symbol", "kind", "address", "size", "capacity", "hash", "sites"
    );
    let refs = referrers(table);
    for (id, s) in table.symbols().iter() {
        let i = id.index();
        let name = table.symbols().name(id);
        let syms = table.symbols();
        let kind = match (s.kind(), s.builtin()) {
            _ if syms.copy_of(id).is_some() => "copy",
            _ if syms.is_ifunc(id) => "ifunc",
            (_, true) => "builtin",
            (zerolink_image::SymbolKind::Function, _) => "function",
            (zerolink_image::SymbolKind::Data, _) => "data",
        };
        match s.placement() {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "{:<24} {:<8} {:>#12x} {:>8} {:>8} {:>16x} {:>6}",
                    name,
                    kind,
                    p.slot.addr,
                    p.size,
                    p.slot.capacity,
                    s.hash,
                    refs[i].len()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{:<24} {:<8} {:>12} {:>8} {:>8} {:>16} {:>6}",
                    name,
                    kind,
                    "undefined",
                    "-",
                    "-",
                    "-",
                    refs[i].len()
                );
            }
        }
        for r in &refs[i] {
            let _ = writeln!(out, "    <- {r}");
        }
    }
    out.pop();
    out
}

fn to_json(table: &Image) -> serde_json::Value {
    let refs = referrers(table);
    let symbols: Vec<serde_json::Value> = table
        .symbols()
        .iter()
        .map(|(id, s): (SymbolId, _)| {
            let i = id.index();
            json!({
                "name": table.symbols().name(id),
                "kind": match s.kind() {
                    zerolink_image::SymbolKind::Function => "function",
                    zerolink_image::SymbolKind::Data => "data",
                },
                "builtin": s.builtin(),
                "defined": s.placement().is_some(),
                "region": s.placement().map(|p| p.region.name()),
                "address": s.placement().map(|p| p.slot.addr),
                "size": s.placement().map(|p| p.size),
                "capacity": s.placement().map(|p| p.slot.capacity),
                "hash": format!("{:016x}", s.hash),
                "got": table.got_of(id),
                "entry": table.symbols().entry(id),
                "copy_of": table
                    .symbols()
                    .copy_of(id)
                    .and_then(|l| table.libraries().get(l as usize)),
                "ifunc": table.symbols().is_ifunc(id),
                "canonical_plt": table
                    .symbols()
                    .has_flag(id, zerolink_image::symbols::RARE_CANONICAL),
                "sites": refs[i],
            })
        })
        .collect();
    let regions: Vec<serde_json::Value> = regions(table)
        .iter()
        .map(|r| {
            json!({
                "region": r.kind.name(),
                "used": r.used,
                "free": r.free,
                "free_ranges": r.ranges,
                "largest_free": r.largest,
                "fragmentation": r.fragmentation(),
            })
        })
        .collect();
    json!({
        "settings": table.settings(),
        "generation": table.generation(),
        "format_version": zerolink_image::persist::FORMAT_VERSION,
        "regions": regions,
        "symbols": symbols,
    })
}
