//! The unwind tables of precompiled objects, as entries of the image's own `.eh_frame`.
//!
//! The image keeps one CIE (Cranelift's: code alignment 1, data alignment -8, return address
//! in column 16, `DW_CFA_def_cfa rsp+8; DW_CFA_offset rip at cfa-8`, no augmentation) and FDEs
//! with absolute addresses, which an update keeps or drops by address. An object's FDE whose
//! CIE says the same (what GCC and Clang write for C: augmentation `zR`, PC-relative 4-byte
//! addresses) is rewritten in that form: its address resolved through its relocation, its
//! instructions as they are. FDEs whose CIE has a personality routine or an LSDA (C++
//! exceptions), or any other layout, are left out: unwinding stops at such a frame, as it did
//! before objects had unwind entries at all.

use std::collections::HashMap;

use object::elf;

use super::elf::{InReloc, InSection};
use super::ObjectError;

/// The CIE's initial instructions that the image's CIE has too.
const INITIAL: [u8; 5] = [0x0c, 0x07, 0x08, 0x90, 0x01];
/// `DW_EH_PE_pcrel | DW_EH_PE_sdata4`.
const PCREL_SDATA4: u8 = 0x1b;

fn bad(what: &str) -> ObjectError {
    ObjectError::Malformed(format!("`.eh_frame`: {what}"))
}

fn uleb(b: &[u8], at: &mut usize) -> Option<u64> {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

fn sleb(b: &[u8], at: &mut usize) -> Option<i64> {
    let (mut v, mut shift) = (0i64, 0);
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= i64::from(byte & 0x7f).checked_shl(shift)?;
        shift += 7;
        if byte & 0x80 == 0 {
            if shift < 64 && byte & 0x40 != 0 {
                v |= -1 << shift;
            }
            return Some(v);
        }
    }
}

/// Whether a CIE (its bytes after the CIE id) matches the image's, and if so whether its FDEs
/// carry augmentation data (`z`).
fn compatible(body: &[u8]) -> Option<bool> {
    let version = *body.first()?;
    let mut at = 1;
    let nul = body[at..].iter().position(|&c| c == 0)?;
    let aug = &body[at..at + nul];
    at += nul + 1;
    let code = uleb(body, &mut at)?;
    let data = sleb(body, &mut at)?;
    let ra = if version == 1 {
        let r = u64::from(*body.get(at)?);
        at += 1;
        r
    } else {
        uleb(body, &mut at)?
    };
    let has_z = match aug {
        b"" => false,
        b"zR" => {
            let len = uleb(body, &mut at)? as usize;
            if len != 1 || *body.get(at)? != PCREL_SDATA4 {
                return None;
            }
            at += len;
            true
        }
        _ => return None,
    };
    let initial = body.get(at..)?;
    let end = initial.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    (code == 1 && data == -8 && ra == 16 && initial[..end] == INITIAL).then_some(has_z)
}

/// The image-form FDEs of an object's `.eh_frame`. `resolve(reloc)` is the address `S + A`
/// of a relocation's target once placed (`None`: not placed, the FDE is left out).
pub fn fdes(
    eh: &InSection,
    resolve: &mut dyn FnMut(&InReloc) -> Option<u64>,
) -> Result<Vec<Vec<u8>>, ObjectError> {
    let Some(data) = eh.data.as_deref() else {
        return Ok(Vec::new());
    };
    let relocs: HashMap<u64, &InReloc> = eh.relocs.iter().map(|r| (r.offset, r)).collect();
    let word = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
    };
    let mut cies: HashMap<usize, Option<bool>> = HashMap::new();
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 4 <= data.len() {
        let len = word(at).ok_or_else(|| bad("a record is cut short"))? as usize;
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
        let id = word(at + 4).expect("len >= 4") as usize;
        if id == 0 {
            cies.insert(at, compatible(&data[at + 8..end]));
        } else {
            let cie = (at + 4)
                .checked_sub(id)
                .ok_or_else(|| bad("an FDE points before the section"))?;
            let Some(&cie) = cies.get(&cie) else {
                return Err(bad("an FDE points at no CIE"));
            };
            if let (Some(has_z), Some(r)) = (cie, relocs.get(&((at + 8) as u64))) {
                if r.rtype != elf::R_X86_64_PC32 || at + 16 > end {
                    at = end;
                    continue;
                }
                let range = u64::from(word(at + 12).expect("checked"));
                let mut pos = at + 16;
                if has_z {
                    let n = uleb(data, &mut pos).ok_or_else(|| bad("bad augmentation"))?;
                    pos = pos
                        .checked_add(n as usize)
                        .filter(|&p| p <= end)
                        .ok_or_else(|| bad("bad augmentation length"))?;
                }
                if let Some(pc) = resolve(r) {
                    // The instructions as they are, their `DW_CFA_nop` padding included (a
                    // trailing zero byte may be an operand).
                    let instructions = &data[pos..end];
                    out.push(zerolink_image::dynamic::absolute_fde(
                        pc,
                        range,
                        instructions,
                    ));
                }
            }
        }
        at = end;
    }
    Ok(out)
}
