//! Unwind tables that precompiled objects bring (`.eh_frame` as GCC and Clang write it), read
//! where they are placed, for `.eh_frame_hdr`.
//!
//! An object's `.eh_frame` is placed as a section of its own, its records as the compiler
//! wrote them (CIEs with personality routines and LSDA pointers for C++ exceptions included)
//! and its relocations as ordinary sites, so every construct GCC emits works as it does
//! after ld: PC-relative addresses stay right in a PIE, and an update that moves the
//! object's code re-patches them through the table. What the image adds is the
//! binary-search header the unwinder finds through `PT_GNU_EH_FRAME`: for that it needs each
//! FDE's function address, decoded here from the placed bytes with the encoding its CIE
//! gives.

/// `DW_EH_PE_*` pointer encodings an FDE's address may use (low nibble: format; high: how it
/// is applied).
const ABSPTR: u8 = 0x00;
const UDATA4: u8 = 0x03;
const UDATA8: u8 = 0x04;
const SDATA4: u8 = 0x0b;
const SDATA8: u8 = 0x0c;
const PCREL: u8 = 0x10;

fn word(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn uleb(b: &[u8], at: &mut usize) -> Option<u64> {
    let (mut v, mut shift) = (0u64, 0u32);
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
    let (mut v, mut shift) = (0i64, 0u32);
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

/// Size in bytes of a pointer of encoding `enc`, if it is one this reader knows.
fn encoded_size(enc: u8) -> Option<usize> {
    match enc & 0x0f {
        ABSPTR | UDATA8 | SDATA8 => Some(8),
        UDATA4 | SDATA4 => Some(4),
        _ => None,
    }
}

/// The FDE address encoding of the CIE whose body (after the CIE id) is `body`.
fn fde_encoding(body: &[u8]) -> Result<u8, &'static str> {
    let version = *body.first().ok_or("a CIE is empty")?;
    let mut at = 1;
    let nul = body[at..]
        .iter()
        .position(|&c| c == 0)
        .ok_or("a CIE's augmentation string has no end")?;
    let aug = &body[at..at + nul];
    at += nul + 1;
    let bad = "a CIE is cut short";
    uleb(body, &mut at).ok_or(bad)?; // code alignment
    sleb(body, &mut at).ok_or(bad)?; // data alignment
    if version == 1 {
        at += 1;
    } else {
        uleb(body, &mut at).ok_or(bad)?;
    }
    let Some(rest) = aug.strip_prefix(b"z") else {
        return if aug.is_empty() {
            Ok(ABSPTR)
        } else {
            Err("a CIE has an augmentation other than `z…`")
        };
    };
    uleb(body, &mut at).ok_or(bad)?; // augmentation data length
    let mut enc = ABSPTR;
    for &c in rest {
        match c {
            b'R' => enc = *body.get(at).ok_or(bad)?,
            b'L' => {}
            b'P' => {
                let p = *body.get(at).ok_or(bad)?;
                at += encoded_size(p).ok_or("a CIE's personality encoding is unknown")?;
            }
            b'S' | b'B' => continue, // signal frame, no data
            _ => return Err("a CIE has an unknown augmentation letter"),
        }
        // (the encoding byte of R, L and P)
        at += 1;
    }
    if encoded_size(enc).is_none() || enc & 0xf0 & !PCREL != 0 {
        return Err("a CIE asks for an FDE address encoding other than absolute or PC-relative");
    }
    Ok(enc)
}

/// Every FDE of `bytes` (an `.eh_frame` section placed at `addr`, relocated): (function
/// address, FDE address). `Err` names what is wrong with the records.
pub fn fde_index(bytes: &[u8], addr: u64) -> Result<Vec<(u64, u64)>, &'static str> {
    let mut cies: Vec<(usize, u8)> = Vec::new();
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 4 <= bytes.len() {
        let len = word(bytes, at).ok_or("a record is cut short")? as usize;
        if len == 0 {
            break;
        }
        if len == u32::MAX as usize {
            return Err("64-bit `.eh_frame` records are not supported");
        }
        let end = at
            .checked_add(4 + len)
            .filter(|&e| e <= bytes.len() && len >= 4)
            .ok_or("a record runs past the end of the section")?;
        let id = word(bytes, at + 4).ok_or("a record is cut short")? as usize;
        if id == 0 {
            cies.push((at, fde_encoding(&bytes[at + 8..end])?));
        } else {
            let cie = (at + 4)
                .checked_sub(id)
                .ok_or("an FDE points before the section")?;
            let enc = cies
                .iter()
                .find(|c| c.0 == cie)
                .map(|c| c.1)
                .ok_or("an FDE points at no CIE before it")?;
            let field = at + 8;
            let size = encoded_size(enc).ok_or("unknown encoding")?;
            let raw = bytes
                .get(field..field + size)
                .ok_or("an FDE is cut short")?;
            let value = match (enc & 0x0f, size) {
                (SDATA4, _) => i64::from(i32::from_le_bytes(raw.try_into().expect("4"))) as u64,
                (_, 4) => u64::from(u32::from_le_bytes(raw.try_into().expect("4"))),
                _ => u64::from_le_bytes(raw.try_into().expect("8")),
            };
            let pc = if enc & PCREL != 0 {
                (addr + field as u64).wrapping_add(value)
            } else {
                value
            };
            out.push((pc, addr + at as u64));
        }
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gcc_cie_with_personality_and_lsda_gives_pc_relative_fdes() {
        // CIE "zPLR": personality indirect|pcrel|sdata4, LSDA pcrel|sdata4, FDEs pcrel|sdata4.
        let mut b = vec![0u8; 0];
        let cie_body = [
            1, b'z', b'P', b'L', b'R', 0, 1, 0x78, 0x10, 7, 0x9b, 0, 0, 0, 0, 0x1b, 0x1b, 0x0c, 7,
            8, 0x90, 1, 0, 0,
        ];
        b.extend_from_slice(&((4 + cie_body.len()) as u32).to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&cie_body);
        let fde_at = b.len();
        b.extend_from_slice(&20u32.to_le_bytes());
        b.extend_from_slice(&((fde_at + 4) as u32).to_le_bytes());
        // pc = field address + 0x100
        b.extend_from_slice(&0x100i32.to_le_bytes());
        b.extend_from_slice(&0x40u32.to_le_bytes());
        b.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0]);
        let got = fde_index(&b, 0x4000_0000).unwrap();
        let field = 0x4000_0000 + fde_at as u64 + 8;
        assert_eq!(got, vec![(field + 0x100, 0x4000_0000 + fde_at as u64)]);
    }

    #[test]
    fn an_unknown_augmentation_is_an_error() {
        let mut b = 16u32.to_le_bytes().to_vec();
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&[1, b'x', 0, 1, 0x78, 0x10, 0, 0, 0, 0, 0, 0]);
        assert!(fde_index(&b, 0).is_err());
    }
}
