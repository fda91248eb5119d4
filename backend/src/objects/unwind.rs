//! An object's `.eh_frame`, as the section the image places for it.
//!
//! The records stay as the compiler wrote them (GCC's `zR` CIEs for C, `zPLR` with a
//! personality routine and LSDA pointers for C++), and their relocations become ordinary
//! sites: the image only indexes the FDEs in `.eh_frame_hdr` (`zerolink_image::frames`). What
//! a linker must do here is drop the FDEs of code it did not keep, as ld does: a COMDAT
//! group kept from another object (every inline function and template instance of C++
//! brings one) leaves FDEs whose function is not placed. Dropping records shifts the ones
//! after them, so the relocations move with them, and an FDE's pointer to its CIE is
//! rewritten.

use super::elf::{InReloc, InSection};
use super::ObjectError;

fn bad(what: &str) -> ObjectError {
    ObjectError::Malformed(format!("`.eh_frame`: {what}"))
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The `.eh_frame` to place: every CIE, and each FDE whose function relocation (at the FDE's
/// offset 8) `keep` accepts; `None` if no FDE is left. Records are checked as the image will
/// read them, so a layout it cannot index is an error naming the object now.
pub fn kept(
    eh: &InSection,
    keep: &mut dyn FnMut(&InReloc) -> bool,
) -> Result<Option<InSection>, ObjectError> {
    let Some(data) = eh.data.as_deref() else {
        return Ok(None);
    };
    let mut relocs: Vec<&InReloc> = eh.relocs.iter().collect();
    relocs.sort_by_key(|r| r.offset);
    let mut out = Vec::with_capacity(data.len());
    let mut out_relocs = Vec::with_capacity(relocs.len());
    // Offsets of the CIEs: (in the input, in the output).
    let mut cies: Vec<(usize, usize)> = Vec::new();
    let mut fdes = 0;
    let mut at = 0usize;
    while at + 4 <= data.len() {
        let len = word(data, at).ok_or_else(|| bad("a record is cut short"))? as usize;
        if len == 0 {
            break;
        }
        if len == u32::MAX as usize {
            return Err(bad("64-bit records are not supported"));
        }
        let end = at
            .checked_add(4 + len)
            .filter(|&e| e <= data.len() && len >= 4)
            .ok_or_else(|| bad("a record runs past the end of the section"))?;
        let id = word(data, at + 4).expect("len >= 4") as usize;
        let in_record = |r: &&InReloc| (at as u64..end as u64).contains(&r.offset);
        let mine: Vec<&InReloc> = relocs.iter().copied().filter(in_record).collect();
        let new_at = out.len();
        if id == 0 {
            cies.push((at, new_at));
        } else {
            let cie = (at + 4)
                .checked_sub(id)
                .ok_or_else(|| bad("an FDE points before the section"))?;
            let Some(&(_, new_cie)) = cies.iter().find(|c| c.0 == cie) else {
                return Err(bad("an FDE points at no CIE before it"));
            };
            let pc = mine.iter().find(|r| r.offset == (at + 8) as u64);
            if !pc.is_some_and(|r| keep(r)) {
                at = end;
                continue;
            }
            fdes += 1;
            out.extend_from_slice(&data[at..end]);
            let pointer = (new_at + 4 - new_cie) as u32;
            out[new_at + 4..new_at + 8].copy_from_slice(&pointer.to_le_bytes());
            out_relocs.extend(mine.iter().map(|r| InReloc {
                offset: r.offset - at as u64 + new_at as u64,
                ..**r
            }));
            at = end;
            continue;
        }
        out.extend_from_slice(&data[at..end]);
        out_relocs.extend(mine.iter().map(|r| InReloc {
            offset: r.offset - at as u64 + new_at as u64,
            ..**r
        }));
        at = end;
    }
    if fdes == 0 {
        return Ok(None);
    }
    // What the image will read once the relocations are applied (they only change values).
    zerolink_image::frames::fde_index(&out, 0).map_err(bad)?;
    Ok(Some(InSection {
        size: out.len() as u64,
        data: Some(out),
        relocs: out_relocs,
        align: eh.align.max(8),
        ..eh.clone()
    }))
}
