//! x86-64 relocation types of `cc -c` output, as the image's reference kinds.

use object::elf;
use zerolink_image::RefKind;

/// What one relocation becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing (`R_X86_64_NONE`).
    Skip,
    /// A reference site of this kind to the relocation's symbol.
    Site(RefKind),
    /// A reference site to `_GLOBAL_OFFSET_TABLE_`, whatever the symbol: `GOTPC32`/`GOTPC64`
    /// compute `GOT + A - P`.
    GotBase(RefKind),
    /// The symbol's size plus the addend, in this many bytes: a constant, written once.
    Size(usize),
}

/// The action for relocation type `rtype`, or `None` if zerolink cannot place it.
pub fn action(rtype: u32) -> Option<Action> {
    Some(match rtype {
        elf::R_X86_64_NONE => Action::Skip,
        elf::R_X86_64_64 => Action::Site(RefKind::Abs64),
        elf::R_X86_64_PC32 | elf::R_X86_64_PLT32 => Action::Site(RefKind::PcRel32),
        elf::R_X86_64_32 => Action::Site(RefKind::Abs32),
        elf::R_X86_64_32S => Action::Site(RefKind::Abs32S),
        elf::R_X86_64_PC64 => Action::Site(RefKind::PcRel64),
        // The image relaxes GOT loads of symbols it defines (`mov` → `lea`), as ld does for
        // the `X` forms; the plain form is only ever a `mov` load in compiler output.
        elf::R_X86_64_GOTPCREL | elf::R_X86_64_GOTPCRELX | elf::R_X86_64_REX_GOTPCRELX => {
            Action::Site(RefKind::GotPcRel32)
        }
        elf::R_X86_64_GOTOFF64 => Action::Site(RefKind::GotOff64),
        elf::R_X86_64_GOTPC32 => Action::GotBase(RefKind::PcRel32),
        elf::R_X86_64_GOTPC64 => Action::GotBase(RefKind::PcRel64),
        // Thread-locals of the executable: every sequence becomes local-exec, as ld makes it.
        elf::R_X86_64_TLSGD => Action::Site(RefKind::TlsGdToLe),
        elf::R_X86_64_TLSLD => Action::Site(RefKind::TlsLdToLe),
        elf::R_X86_64_GOTTPOFF => Action::Site(RefKind::GotTpOffToLe),
        elf::R_X86_64_TPOFF32 | elf::R_X86_64_DTPOFF32 => Action::Site(RefKind::TpOff32),
        elf::R_X86_64_SIZE32 => Action::Size(4),
        elf::R_X86_64_SIZE64 => Action::Size(8),
        _ => return None,
    })
}

/// Whether `rtype` is one of the thread-local storage relocations zerolink cannot place
/// (those of dynamic TLS models across shared objects).
pub fn is_tls(rtype: u32) -> bool {
    matches!(
        rtype,
        elf::R_X86_64_DTPMOD64
            | elf::R_X86_64_DTPOFF64
            | elf::R_X86_64_TPOFF64
            | elf::R_X86_64_GOTPC32_TLSDESC
            | elf::R_X86_64_TLSDESC_CALL
            | elf::R_X86_64_TLSDESC
    )
}

/// The ELF name of relocation type `rtype`, for messages.
pub fn name(rtype: u32) -> String {
    let known = [
        (elf::R_X86_64_NONE, "R_X86_64_NONE"),
        (elf::R_X86_64_64, "R_X86_64_64"),
        (elf::R_X86_64_PC32, "R_X86_64_PC32"),
        (elf::R_X86_64_GOT32, "R_X86_64_GOT32"),
        (elf::R_X86_64_PLT32, "R_X86_64_PLT32"),
        (elf::R_X86_64_COPY, "R_X86_64_COPY"),
        (elf::R_X86_64_GLOB_DAT, "R_X86_64_GLOB_DAT"),
        (elf::R_X86_64_JUMP_SLOT, "R_X86_64_JUMP_SLOT"),
        (elf::R_X86_64_RELATIVE, "R_X86_64_RELATIVE"),
        (elf::R_X86_64_GOTPCREL, "R_X86_64_GOTPCREL"),
        (elf::R_X86_64_32, "R_X86_64_32"),
        (elf::R_X86_64_32S, "R_X86_64_32S"),
        (elf::R_X86_64_16, "R_X86_64_16"),
        (elf::R_X86_64_PC16, "R_X86_64_PC16"),
        (elf::R_X86_64_8, "R_X86_64_8"),
        (elf::R_X86_64_PC8, "R_X86_64_PC8"),
        (elf::R_X86_64_DTPMOD64, "R_X86_64_DTPMOD64"),
        (elf::R_X86_64_DTPOFF64, "R_X86_64_DTPOFF64"),
        (elf::R_X86_64_TPOFF64, "R_X86_64_TPOFF64"),
        (elf::R_X86_64_TLSGD, "R_X86_64_TLSGD"),
        (elf::R_X86_64_TLSLD, "R_X86_64_TLSLD"),
        (elf::R_X86_64_DTPOFF32, "R_X86_64_DTPOFF32"),
        (elf::R_X86_64_GOTTPOFF, "R_X86_64_GOTTPOFF"),
        (elf::R_X86_64_TPOFF32, "R_X86_64_TPOFF32"),
        (elf::R_X86_64_PC64, "R_X86_64_PC64"),
        (elf::R_X86_64_GOTOFF64, "R_X86_64_GOTOFF64"),
        (elf::R_X86_64_GOTPC32, "R_X86_64_GOTPC32"),
        (elf::R_X86_64_GOT64, "R_X86_64_GOT64"),
        (elf::R_X86_64_GOTPCREL64, "R_X86_64_GOTPCREL64"),
        (elf::R_X86_64_GOTPC64, "R_X86_64_GOTPC64"),
        (elf::R_X86_64_GOTPLT64, "R_X86_64_GOTPLT64"),
        (elf::R_X86_64_PLTOFF64, "R_X86_64_PLTOFF64"),
        (elf::R_X86_64_SIZE32, "R_X86_64_SIZE32"),
        (elf::R_X86_64_SIZE64, "R_X86_64_SIZE64"),
        (elf::R_X86_64_GOTPC32_TLSDESC, "R_X86_64_GOTPC32_TLSDESC"),
        (elf::R_X86_64_TLSDESC_CALL, "R_X86_64_TLSDESC_CALL"),
        (elf::R_X86_64_TLSDESC, "R_X86_64_TLSDESC"),
        (elf::R_X86_64_IRELATIVE, "R_X86_64_IRELATIVE"),
        (elf::R_X86_64_GOTPCRELX, "R_X86_64_GOTPCRELX"),
        (elf::R_X86_64_REX_GOTPCRELX, "R_X86_64_REX_GOTPCRELX"),
    ];
    known
        .iter()
        .find(|(t, _)| *t == rtype)
        .map_or_else(|| format!("type {rtype}"), |(_, n)| (*n).to_string())
}
