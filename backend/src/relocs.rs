//! Cranelift relocations to image references, for x86-64 ELF.
//!
//! The image speaks in arithmetic (`S + A - P`, `G + A - P`, ...); this is where Cranelift's
//! relocation names meet it. A relocation kind missing here is an error that names the
//! function and offset, never a silently wrong byte.

use cranelift_codegen::binemit::Reloc;
use zerolink_image::RefKind;

use crate::error::BackendError;

pub fn ref_kind(kind: Reloc, function: &str, offset: u32) -> Result<RefKind, BackendError> {
    Ok(match kind {
        Reloc::X86CallPCRel4 | Reloc::X86PCRel4 => RefKind::PcRel32,
        // No PLT: a call through "the PLT" to a symbol inside the executable is a direct call.
        Reloc::X86CallPLTRel4 => RefKind::PcRel32,
        Reloc::X86GOTPCRel4 => RefKind::GotPcRel32,
        Reloc::Abs4 => RefKind::Abs32,
        Reloc::Abs8 => RefKind::Abs64,
        // The general-dynamic sequence, made local-exec by the image (the executable's own
        // thread-locals); its `__tls_get_addr` call goes with it (see `is_tls_get_addr`).
        Reloc::ElfX86_64TlsGd => RefKind::TlsGdToLe,
        other => {
            return Err(BackendError::UnsupportedReloc {
                function: function.to_string(),
                offset,
                kind: format!("{other:?}"),
            })
        }
    })
}

/// Whether a relocation is the `__tls_get_addr` call of a general-dynamic sequence: no site of
/// its own, since the sequence's `TlsGdToLe` site rewrites it.
pub fn is_tls_get_addr(kind: Reloc, target: &cranelift_codegen::ir::ExternalName) -> bool {
    kind == Reloc::X86CallPLTRel4
        && matches!(
            target,
            cranelift_codegen::ir::ExternalName::LibCall(
                cranelift_codegen::ir::LibCall::ElfTlsGetAddr
            )
        )
}
