//! Everything specific to x86-64: how each reference kind is computed and encoded, and the
//! machine code of the freestanding runtime.
//!
//! The runtime bytes were produced by GNU `as` from the assembly shown beside each stub
//! (`as rt.s && objdump -d -M intel`); the end-to-end tests run every stub.

use object::elf;

use crate::sites::RefKind;

pub const E_MACHINE: u16 = elf::EM_X86_64;

/// The value a site's field must hold, or `Err(value)` if the value does not fit the field.
/// `s`: target address, `p`: the field's address, `g`: target's GOT entry address.
pub fn encode(kind: RefKind, s: u64, a: i64, p: u64, g: Option<u64>) -> Result<Field, i128> {
    let (s, a, p) = (i128::from(s), i128::from(a), i128::from(p));
    match kind {
        RefKind::PcRel32 => rel32(s + a - p),
        RefKind::GotPcRel32 => match g {
            Some(g) => rel32(i128::from(g) + a - p),
            None => Err(s),
        },
        RefKind::Abs32 => {
            let v = s + a;
            u32::try_from(v)
                .map(|v| Field::Four(v.to_le_bytes()))
                .map_err(|_| v)
        }
        RefKind::Abs32S => {
            let v = s + a;
            i32::try_from(v)
                .map(|v| Field::Four(v.to_le_bytes()))
                .map_err(|_| v)
        }
        RefKind::Abs64 => {
            let v = s + a;
            u64::try_from(v)
                .map(|v| Field::Eight(v.to_le_bytes()))
                .map_err(|_| v)
        }
        RefKind::PcRel64 => rel64(s + a - p),
        // Sixteen bytes, not a field: see `tls_local_exec`.
        RefKind::TlsGdToLe | RefKind::TpOff32 | RefKind::GotTpOffToLe | RefKind::TlsLdToLe => {
            Err(s)
        }
        RefKind::GotOff64 => rel64(s + a - i128::from(GOT_BASE)),
    }
}

/// Bytes kept at the entry of a function that moved in an update (`Image::redefine`).
pub const ENTRY_JUMP_SLOT: u64 = 16;

/// The entry jump of a function that moved from `from` to `to`: `jmp rel32`, then `int3`
/// up to [`ENTRY_JUMP_SLOT`]; `None` if the distance does not fit (it always does inside
/// the text window).
pub fn entry_jump(from: u64, to: u64) -> Option<[u8; ENTRY_JUMP_SLOT as usize]> {
    let rel = i32::try_from(to as i64 - (from as i64 + 5)).ok()?;
    let mut b = [0xcc; ENTRY_JUMP_SLOT as usize];
    b[0] = 0xe9;
    b[1..5].copy_from_slice(&rel.to_le_bytes());
    Some(b)
}

/// A PLT stub: `jmp qword ptr [rip + GOT entry]` (`ff 25 disp32`), then `int3` padding. The
/// displacement is a `GotPcRel32` site at [`PLT_GOT_AT`] (never relaxed: not a `mov`).
pub const PLT_STUB: [u8; 8] = [0xff, 0x25, 0, 0, 0, 0, 0xcc, 0xcc];
pub const PLT_GOT_AT: u32 = 2;

/// The general-dynamic TLS sequence as compilers emit it (and ld requires), 16 bytes from four
/// before the `lea`'s displacement: `data16 lea rdi, [rip + x@tlsgd]; data16 data16 rex.W
/// call __tls_get_addr`. `None` bytes are the two displacements.
const TLS_GD: [Option<u8>; 16] = {
    let x = None;
    [
        Some(0x66),
        Some(0x48),
        Some(0x8d),
        Some(0x3d),
        x,
        x,
        x,
        x,
        Some(0x66),
        Some(0x66),
        Some(0x48),
        Some(0xe8),
        x,
        x,
        x,
        x,
    ]
};

/// `mov rax, fs:0; lea rax, [rax + disp32]`: the local-exec form, as long as `TLS_GD`.
const TLS_LE: [u8; 12] = [0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0, 0x48, 0x8d, 0x80];

/// `mov rax, fs:0; add rax, [rip + disp32]`: the initial-exec form (the offset from the
/// thread pointer read from a GOT entry the loader fills, `R_X86_64_TPOFF64`), as long as
/// `TLS_GD`: what a thread-local of a shared library becomes.
const TLS_IE: [u8; 12] = [0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0, 0x48, 0x03, 0x05];

/// Whether the 16 bytes `before` are the general-dynamic sequence, or its local-exec or
/// initial-exec replacement from an earlier build.
fn tls_sequence(before: &[u8]) -> bool {
    // The call is `data16 data16 rex.W call rel32`, or with `-fno-plt` `data16 rex.W call
    // [rip + GOT(__tls_get_addr)]`: the same length.
    let no_plt = before.get(8..12) == Some(&[0x66, 0x48, 0xff, 0x15][..]);
    let gd = before.len() == 16
        && before
            .iter()
            .zip(TLS_GD)
            .enumerate()
            .all(|(i, (&b, want))| (no_plt && (8..12).contains(&i)) || want.is_none_or(|w| w == b));
    gd || before.starts_with(&TLS_LE) || before.starts_with(&TLS_IE)
}

/// The local-exec replacement for the 16 bytes `before` (see `tls_sequence`), giving
/// `rax = fs:0 + tpoff`; `None` if `before` is none of those.
pub fn tls_local_exec(before: &[u8], tpoff: i32) -> Option<[u8; 16]> {
    if !tls_sequence(before) {
        return None;
    }
    let mut out = [0u8; 16];
    out[..12].copy_from_slice(&TLS_LE);
    out[12..].copy_from_slice(&tpoff.to_le_bytes());
    Some(out)
}

/// The initial-exec replacement for the 16 bytes `before` (see `tls_sequence`): `rax = fs:0
/// + [rip + disp]`, `disp` from the end of the sequence to the variable's GOT entry.
pub fn tls_initial_exec(before: &[u8], disp: i32) -> Option<[u8; 16]> {
    if !tls_sequence(before) {
        return None;
    }
    let mut out = [0u8; 16];
    out[..12].copy_from_slice(&TLS_IE);
    out[12..].copy_from_slice(&disp.to_le_bytes());
    Some(out)
}

/// `gottpoff_local_exec` undone: the `mov/add reg, [rip + disp32]` form again (for a
/// thread-local that a shared library now provides). Also recognises the original form.
pub fn gottpoff_initial_exec(before: [u8; 3]) -> Option<[u8; 3]> {
    let [rex, opcode, modrm] = before;
    if rex & 0xf8 != 0x48 {
        return None;
    }
    match opcode {
        0x8b | 0x03 if modrm & 0xc7 == 0x05 => Some(before),
        0xc7 | 0x81 if modrm & 0xf8 == 0xc0 => {
            let reg = modrm & 7;
            let rex = 0x48 | if rex & 1 != 0 { 4 } else { 0 };
            let opcode = if opcode == 0xc7 { 0x8b } else { 0x03 };
            Some([rex, opcode, 0x05 | (reg << 3)])
        }
        _ => None,
    }
}

/// The initial-exec load or add of a thread pointer offset from the GOT (`before`: REX, opcode,
/// ModRM of `mov/add reg, [rip + x@gottpoff]`) as local-exec: the same with an immediate
/// (`mov reg, imm32` is `c7 /0`, `add reg, imm32` is `81 /0`; the register moves from ModRM's
/// reg field to its r/m field, and REX.R to REX.B). Also recognises its own result.
pub fn gottpoff_local_exec(before: [u8; 3]) -> Option<[u8; 3]> {
    let [rex, opcode, modrm] = before;
    if rex & 0xf8 != 0x48 {
        return None;
    }
    match opcode {
        0x8b | 0x03 if modrm & 0xc7 == 0x05 => {
            let reg = (modrm >> 3) & 7;
            let rex = 0x48 | u8::from(rex & 4 != 0);
            let opcode = if opcode == 0x8b { 0xc7 } else { 0x81 };
            Some([rex, opcode, 0xc0 | reg])
        }
        0xc7 | 0x81 if modrm & 0xf8 == 0xc0 => Some(before),
        _ => None,
    }
}

/// The local-dynamic sequence (`lea rdi, [rip + x@tlsld]; call __tls_get_addr`, 12 bytes from
/// three before the `lea`'s displacement) as local-exec: `rax = fs:0`, padded with prefixes as
/// ld does. Also recognises its own result.
/// `before` is 13 bytes: the sequence is 12 with `call rel32`, 13 with `-fno-plt`'s `call
/// [rip + GOT]`; the result has the sequence's length.
pub fn tlsld_local_exec(before: &[u8]) -> Option<Vec<u8>> {
    const LE: [u8; 9] = [0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0];
    let len = match before.get(..9)? {
        [0x48, 0x8d, 0x3d, _, _, _, _, 0xe8, _] => 12,
        [0x48, 0x8d, 0x3d, _, _, _, _, 0xff, 0x15] => 13,
        _ => {
            // Our own result: prefixes, then the local-exec load.
            let p = before.iter().take_while(|&&b| b == 0x66).count();
            if before.get(p..p + 9)? != LE || !(3..=4).contains(&p) {
                return None;
            }
            p + 9
        }
    };
    let mut out = vec![0x66; len - LE.len()];
    out.extend_from_slice(&LE);
    Some(out)
}

/// The address `_GLOBAL_OFFSET_TABLE_` stands for: the start of the GOT region. `GotOff64`
/// sites count from it, and PC-relative references to the symbol reach it.
pub const GOT_BASE: u64 = crate::layout::RegionKind::Got.vaddr();

fn rel64(v: i128) -> Result<Field, i128> {
    i64::try_from(v)
        .map(|v| Field::Eight(v.to_le_bytes()))
        .map_err(|_| v)
}

fn rel32(v: i128) -> Result<Field, i128> {
    i32::try_from(v)
        .map(|v| Field::Four(v.to_le_bytes()))
        .map_err(|_| v)
}

/// GOT-load relaxation, as GNU ld does for `R_X86_64_REX_GOTPCRELX`: when the target lives in
/// the image, `mov reg, [rip + GOT(sym)]` becomes `lea reg, [rip + sym]`, one load fewer and no
/// GOT entry. `before` holds the three bytes in front of the 32-bit field (REX, opcode, ModRM).
/// Returns the opcode byte to store for the wanted form, or `None` if the instruction is not
/// such a load. Both forms are recognised, because a site is patched again whenever its
/// target moves, and may have to go back to the GOT form if its target leaves the image.
pub fn got_load_opcode(before: [u8; 3], relaxed: bool) -> Option<u8> {
    let [rex, opcode, modrm] = before;
    let rex_w = rex & 0xf8 == 0x48;
    let rip_relative = modrm & 0xc7 == 0x05;
    let is_load = opcode == MOV_LOAD || opcode == LEA;
    (rex_w && rip_relative && is_load).then_some(if relaxed { LEA } else { MOV_LOAD })
}

const MOV_LOAD: u8 = 0x8b;
const LEA: u8 = 0x8d;

/// The bytes to store at a site.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    Four([u8; 4]),
    Eight([u8; 8]),
}

impl Field {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Field::Four(b) => b,
            Field::Eight(b) => b,
        }
    }
}

/// One routine of the freestanding runtime: machine code plus the references it makes.
pub struct Stub {
    pub name: &'static str,
    pub code: &'static [u8],
    /// (offset, target name) of `call rel32` fields, addend -4.
    pub calls: &'static [(u32, &'static str)],
}

/// Call-frame instructions for `_start` (after the CIE's): `DW_CFA_undefined rip`, the mark of
/// the outermost frame, so unwinders stop there instead of reading `argc` as a return address.
pub const START_CFA: &[u8] = &[0x07, RETURN_ADDRESS_COLUMN];

/// The DWARF register number of the return address (`rip`).
pub const RETURN_ADDRESS_COLUMN: u8 = 16;

/// `_start`: the kernel enters with `rsp` 16-byte aligned and pointing at `argc`. Pass
/// (argc, argv) to `main` in case it wants them, call it, and exit with its result.
pub const START: Stub = Stub {
    name: "_start",
    code: &[
        0x31, 0xed, // xor ebp, ebp            ; outermost frame for unwinders
        0x48, 0x8b, 0x3c, 0x24, // mov rdi, [rsp]  ; argc
        0x48, 0x8d, 0x74, 0x24, 0x08, // lea rsi, [rsp+8] ; argv
        0x48, 0x83, 0xe4, 0xf0, // and rsp, -16
        0xe8, 0, 0, 0, 0, // call main
        0x89, 0xc7, // mov edi, eax
        0xb8, 0xe7, 0, 0, 0, // mov eax, 231  ; exit_group
        0x0f, 0x05, // syscall
        0xf4, // hlt
    ],
    calls: &[(16, "main")],
};

/// The bounds of the constructor and destructor arrays that precompiled objects bring
/// (`.init_array`, `.fini_array`), as ld names them.
pub const INIT_ARRAY_START: &str = "__init_array_start";
pub const INIT_ARRAY_END: &str = "__init_array_end";
pub const FINI_ARRAY_START: &str = "__fini_array_start";
pub const FINI_ARRAY_END: &str = "__fini_array_end";

/// `_start` of a freestanding program with constructors: each `.init_array` entry is called
/// with (argc, argv, envp), then `main`, then the `.fini_array` entries last to first, then
/// `exit_group` with `main`'s result. argc, argv and the cursor live in callee-saved
/// registers; `rsp` stays 16-byte aligned at every call.
pub const START_CTORS: Stub = Stub {
    name: "_start",
    code: &[
        0x31, 0xed, // xor ebp, ebp
        0x4c, 0x8b, 0x24, 0x24, // mov r12, [rsp]          ; argc
        0x4c, 0x8d, 0x6c, 0x24, 0x08, // lea r13, [rsp+8]  ; argv
        0x48, 0x83, 0xe4, 0xf0, // and rsp, -16
        0xe8, 0, 0, 0, 0, // call __zerolink_start_init  ; the thread pointer, if TLS
        0x48, 0x8d, 0x1d, 0, 0, 0, 0, // lea rbx, [rip+__init_array_start]
        0x48, 0x8d, 0x05, 0, 0, 0, 0, // 1: lea rax, [rip+__init_array_end]
        0x48, 0x39, 0xc3, // cmp rbx, rax
        0x73, 0x13, // jae 2f
        0x44, 0x89, 0xe7, // mov edi, r12d
        0x4c, 0x89, 0xee, // mov rsi, r13
        0x4b, 0x8d, 0x54, 0xe5, 0x08, // lea rdx, [r13+r12*8+8] ; envp
        0xff, 0x13, // call [rbx]
        0x48, 0x83, 0xc3, 0x08, // add rbx, 8
        0xeb, 0xe1, // jmp 1b
        0x44, 0x89, 0xe7, // 2: mov edi, r12d
        0x4c, 0x89, 0xee, // mov rsi, r13
        0xe8, 0, 0, 0, 0, // call main
        0x41, 0x89, 0xc4, // mov r12d, eax
        0x48, 0x8d, 0x1d, 0, 0, 0, 0, // lea rbx, [rip+__fini_array_end]
        0x48, 0x8d, 0x05, 0, 0, 0, 0, // 3: lea rax, [rip+__fini_array_start]
        0x48, 0x39, 0xc3, // cmp rbx, rax
        0x76, 0x08, // jbe 4f
        0x48, 0x83, 0xeb, 0x08, // sub rbx, 8
        0xff, 0x13, // call [rbx]
        0xeb, 0xec, // jmp 3b
        0x44, 0x89, 0xe7, // 4: mov edi, r12d
        0xb8, 0xe7, 0, 0, 0, // mov eax, 231  ; exit_group
        0x0f, 0x05, // syscall
        0xf4, // hlt
    ],
    calls: &[
        (0x10, START_INIT),
        (0x17, INIT_ARRAY_START),
        (0x1e, INIT_ARRAY_END),
        (0x41, "main"),
        (0x4b, FINI_ARRAY_END),
        (0x52, FINI_ARRAY_START),
    ],
};

/// The table a freestanding position-independent executable relocates itself from, at the
/// start of the dynamic region: four words (the table's own link-time address, the number of
/// entries, the start and length of what to make read-only afterwards), then `Elf64_Rela`
/// entries of type `R_X86_64_RELATIVE`.
pub const RELOCS: &str = "__zerolink_relocs";
/// Bytes of `RELOCS`'s header.
pub const RELOCS_HEADER: u64 = 32;

/// The start of a freestanding PIE's `_start`, before the usual one: find the load bias (the
/// table's address now less the link-time address it records), add it to every relative
/// relocation's place, then `mprotect` the GOT read-only (RELRO), as glibc's static-pie start
/// does. Touches neither `rsp` nor the kernel's stack. Returns the code and the offset of
/// its `rel32` to `RELOCS` (addend -4).
pub fn self_relocation() -> (Vec<u8>, u32) {
    let mut c: Vec<u8> = vec![0x4c, 0x8d, 0x05, 0, 0, 0, 0]; // lea r8, [rip+RELOCS]
    c.extend_from_slice(&[0x4c, 0x89, 0xc2]); // mov rdx, r8
    c.extend_from_slice(&[0x49, 0x2b, 0x10]); // sub rdx, [r8]      ; the bias
    c.extend_from_slice(&[0x49, 0x8b, 0x48, 0x08]); // mov rcx, [r8+8] ; entries
    c.extend_from_slice(&[0x49, 0x8d, 0x70, 0x20]); // lea rsi, [r8+32]
    c.extend_from_slice(&[0x48, 0x85, 0xc9, 0x74, 0]); // test rcx, rcx; jz done
    let jz = c.len() - 1;
    let top = c.len();
    c.extend_from_slice(&[0x48, 0x8b, 0x06]); // mov rax, [rsi]      ; r_offset
    c.extend_from_slice(&[0x48, 0x8b, 0x7e, 0x10]); // mov rdi, [rsi+16] ; r_addend
    c.extend_from_slice(&[0x48, 0x01, 0xd7]); // add rdi, rdx
    c.extend_from_slice(&[0x48, 0x89, 0x3c, 0x10]); // mov [rax+rdx], rdi
    c.extend_from_slice(&[0x48, 0x83, 0xc6, 0x18]); // add rsi, 24
    c.extend_from_slice(&[0x48, 0xff, 0xc9, 0x75, 0]); // dec rcx; jnz top
    let back = c.len();
    c[back - 1] = (top as i64 - back as i64) as i8 as u8;
    c[jz] = (c.len() - (jz + 1)) as u8;
    c.extend_from_slice(&[0x49, 0x8b, 0x70, 0x18]); // mov rsi, [r8+24] ; RELRO length
    c.extend_from_slice(&[0x48, 0x85, 0xf6, 0x74, 0]); // test rsi, rsi; jz skip
    let jz = c.len() - 1;
    c.extend_from_slice(&[0x49, 0x8b, 0x78, 0x10]); // mov rdi, [r8+16] ; RELRO start
    c.extend_from_slice(&[0x48, 0x01, 0xd7]); // add rdi, rdx
    c.extend_from_slice(&[0xba, 1, 0, 0, 0]); // mov edx, PROT_READ
    c.extend_from_slice(&[0xb8, 10, 0, 0, 0]); // mov eax, 10 (mprotect)
    c.extend_from_slice(&[0x0f, 0x05]); // syscall
    c[jz] = (c.len() - (jz + 1)) as u8;
    (c, 3)
}

/// What a freestanding `_start` with constructors or thread-locals calls first.
pub const START_INIT: &str = "__zerolink_start_init";
/// The main thread's TLS block in a freestanding program (zero-filled data).
pub const TLS_BLOCK: &str = "__zerolink_tls_block";
/// Bytes of the thread control block after the TLS block: its first word is the thread
/// pointer itself (what `mov rax, fs:0` reads).
pub const TCB_BYTES: u64 = 64;

/// `__zerolink_start_init` for a freestanding program with thread-locals: copy the TLS
/// template (`template`, `size` bytes) into the block, put the thread pointer after it
/// (`aligned`: the block size rounded to `TLS_ALIGN`), store it in its own first word, and
/// `arch_prctl(ARCH_SET_FS, tp)`. Returns the code and the offsets of its two `rel32`s to
/// the block (`TLS_BLOCK`, addend -4).
pub fn tls_init(template: u32, size: u32, aligned: u32) -> (Vec<u8>, [u32; 2]) {
    let mut c = vec![0x48, 0x8d, 0x3d, 0, 0, 0, 0]; // lea rdi, [rip+block]
    c.push(0xbe); // mov esi, template
    c.extend_from_slice(&template.to_le_bytes());
    c.push(0xb9); // mov ecx, size
    c.extend_from_slice(&size.to_le_bytes());
    c.extend_from_slice(&[0xf3, 0xa4]); // rep movsb
    c.extend_from_slice(&[0x48, 0x8d, 0x3d, 0, 0, 0, 0]); // lea rdi, [rip+block]
    c.extend_from_slice(&[0x48, 0x81, 0xc7]); // add rdi, aligned
    c.extend_from_slice(&aligned.to_le_bytes());
    c.extend_from_slice(&[0x48, 0x89, 0x3f]); // mov [rdi], rdi
    c.extend_from_slice(&[0x48, 0x89, 0xfe]); // mov rsi, rdi
    c.extend_from_slice(&[0xbf, 0x02, 0x10, 0, 0]); // mov edi, ARCH_SET_FS
    c.extend_from_slice(&[0xb8, 0x9e, 0, 0, 0]); // mov eax, 158 (arch_prctl)
    c.extend_from_slice(&[0x0f, 0x05, 0xc3]); // syscall; ret
    (c, [3, 0x16])
}

/// `_start` of a dynamically linked executable: hand `main` to glibc's `__libc_start_main`,
/// which runs initialisers, calls `main(argc, argv, envp)` and passes its result to `exit`, so
/// stdio buffers are flushed and `atexit` handlers run.
pub const START_LIBC: Stub = Stub {
    name: "_start",
    code: &[
        0x31, 0xed, // xor ebp, ebp
        0x49, 0x89, 0xd1, // mov r9, rdx          ; rtld_fini from the dynamic loader
        0x5e, // pop rsi                          ; argc
        0x48, 0x89, 0xe2, // mov rdx, rsp         ; argv
        0x48, 0x83, 0xe4, 0xf0, // and rsp, -16
        0x50, // push rax                         ; keep the stack 16-byte aligned
        0x54, // push rsp                         ; stack_end
        0x45, 0x31, 0xc0, // xor r8d, r8d         ; fini
        0x31, 0xc9, // xor ecx, ecx               ; init
        0x48, 0x8d, 0x3d, 0, 0, 0, 0, // lea rdi, [rip + main]
        0xff, 0x15, 0, 0, 0, 0,    // call [rip + GOT(__libc_start_main)]
        0xf4, // hlt
    ],
    calls: &[],
};

/// The references of [`START_LIBC`]: `main` (PC-relative) and `__libc_start_main` (GOT).
pub const START_LIBC_MAIN_AT: u32 = 0x17;
pub const START_LIBC_GOT_AT: u32 = 0x1d;
pub const LIBC_START_MAIN: &str = "__libc_start_main";

/// The dynamic loader of x86-64 Linux.
pub const INTERPRETER: &[u8] = b"/lib64/ld-linux-x86-64.so.2\0";

/// Message of the stub that `e_entry` names while an in-place update is under way.
pub const INTERRUPTED_MESSAGE: &[u8] =
    b"zerolink: this executable is being updated, or its update was interrupted; build it again\n";
pub const INTERRUPTED_NAME: &str = "__zerolink_interrupted";
/// Exit status of the stub, as the shell's "cannot execute".
pub const INTERRUPTED_STATUS: u8 = 126;

/// Names the runtime defines and a program may not: the entry point and the stub of an
/// interrupted update. (The built-ins may be replaced by the program's own definitions.)
pub const RESERVED: &[&str] = &["_start", INTERRUPTED_NAME, RELOCS, TRAMPOLINE_NAME];

/// The hot patcher's trampoline, in every executable (800 bytes of text): what the patcher
/// runs in a stopped thread of a running process (an `mmap` system call, an IFUNC resolver)
/// without writing over any of the process's own instructions, and what leaves the thread
/// as it was *by itself* if the patcher dies meanwhile (SIGKILL). The patcher writes the
/// thread's registers and FXSAVE image into the save area (the process's copy of this page:
/// `/proc/PID/mem` writes through read-only text), points the thread at `syscall` or at
/// `call *%r11` and steps it to [`TRAMPOLINE_RETURNED`] or past the `syscall`; then it
/// restores the thread itself. A thread released before that runs on into `restore`, which
/// loads everything back from the save area and jumps to where the thread was: no `int3`, no
/// borrowed byte, nothing the kernel could turn into the process's death. (GNU as, from:)
///
/// ```text
/// tramp:      syscall
/// restore:    fxrstor fx(%rip); pushq rflags(%rip); popfq
///             movq r_rax(%rip), %rax ... movq r_r15(%rip), %r15   (rax rbx rcx rdx rsi rdi
///             movq r_rsp(%rip), %rsp                               rbp r8 ... r15)
///             jmpq *r_rip(%rip)
/// call_entry: callq *%r11
/// returned:   jmp restore
///             .balign 16
/// fx: .skip 512; rflags, r_rax ... r_r15, r_rsp, r_rip: .quad 0
/// ```
pub const TRAMPOLINE_NAME: &str = "__zerolink_trampoline";
/// Offsets in the trampoline: the `syscall`, the restore path, the call, the instruction
/// after it, the FXSAVE area (16-aligned), rflags, then the 16 general registers (rax, rbx,
/// rcx, rdx, rsi, rdi, rbp, r8..r15), rsp and rip, 8 bytes each.
pub const TRAMPOLINE_SYSCALL: u64 = 0;
pub const TRAMPOLINE_RESTORE: u64 = 2;
pub const TRAMPOLINE_CALL: u64 = 0x86;
pub const TRAMPOLINE_RETURNED: u64 = 0x89;
pub const TRAMPOLINE_FX: u64 = 0x90;
pub const TRAMPOLINE_RFLAGS: u64 = 0x290;
pub const TRAMPOLINE_GPRS: u64 = 0x298;
pub const TRAMPOLINE_SIZE: usize = 0x320;

/// The trampoline's bytes (its save area zero).
pub fn trampoline() -> Vec<u8> {
    let code: [u8; 144] = [
        0x0f, 0x05, 0x0f, 0xae, 0x0d, 0x87, 0x00, 0x00, 0x00, 0xff, 0x35, 0x81, 0x02, 0x00, 0x00,
        0x9d, 0x48, 0x8b, 0x05, 0x81, 0x02, 0x00, 0x00, 0x48, 0x8b, 0x1d, 0x82, 0x02, 0x00, 0x00,
        0x48, 0x8b, 0x0d, 0x83, 0x02, 0x00, 0x00, 0x48, 0x8b, 0x15, 0x84, 0x02, 0x00, 0x00, 0x48,
        0x8b, 0x35, 0x85, 0x02, 0x00, 0x00, 0x48, 0x8b, 0x3d, 0x86, 0x02, 0x00, 0x00, 0x48, 0x8b,
        0x2d, 0x87, 0x02, 0x00, 0x00, 0x4c, 0x8b, 0x05, 0x88, 0x02, 0x00, 0x00, 0x4c, 0x8b, 0x0d,
        0x89, 0x02, 0x00, 0x00, 0x4c, 0x8b, 0x15, 0x8a, 0x02, 0x00, 0x00, 0x4c, 0x8b, 0x1d, 0x8b,
        0x02, 0x00, 0x00, 0x4c, 0x8b, 0x25, 0x8c, 0x02, 0x00, 0x00, 0x4c, 0x8b, 0x2d, 0x8d, 0x02,
        0x00, 0x00, 0x4c, 0x8b, 0x35, 0x8e, 0x02, 0x00, 0x00, 0x4c, 0x8b, 0x3d, 0x8f, 0x02, 0x00,
        0x00, 0x48, 0x8b, 0x25, 0x90, 0x02, 0x00, 0x00, 0xff, 0x25, 0x92, 0x02, 0x00, 0x00, 0x41,
        0xff, 0xd3, 0xe9, 0x74, 0xff, 0xff, 0xff, 0x66, 0x90,
    ];
    let mut t = code.to_vec();
    t.resize(TRAMPOLINE_SIZE, 0);
    t
}

/// The "interrupted update" stub: write the message to stderr, exit 126. Position-independent,
/// message included, so it can sit anywhere in text.
pub fn interrupted_stub() -> Vec<u8> {
    let len = INTERRUPTED_MESSAGE.len() as u32;
    let mut code = vec![0xbf, 2, 0, 0, 0]; // mov edi, 2
    code.extend_from_slice(&[0x48, 0x8d, 0x35]); // lea rsi, [rip + message]
    code.extend_from_slice(&25i32.to_le_bytes()); //   message is 25 bytes past this lea's end
    code.push(0xba); // mov edx, len
    code.extend_from_slice(&len.to_le_bytes());
    code.extend_from_slice(&[0xb8, 1, 0, 0, 0, 0x0f, 0x05]); // mov eax, 1 (write); syscall
    code.extend_from_slice(&[0xbf, INTERRUPTED_STATUS, 0, 0, 0]); // mov edi, 126
    code.extend_from_slice(&[0xb8, 0xe7, 0, 0, 0, 0x0f, 0x05, 0xf4]); // exit_group; hlt
    debug_assert_eq!(code.len(), 12 + 25);
    code.extend_from_slice(INTERRUPTED_MESSAGE);
    code
}

/// Built-in functions a freestanding program may import. Signatures are System V.
pub const BUILTINS: &[Stub] = &[
    // zl_write(fd: i32, buf: i64, len: i64) -> i64: write(2); negative errno on failure.
    Stub {
        name: "zl_write",
        code: &[0xb8, 0x01, 0, 0, 0, 0x0f, 0x05, 0xc3], // mov eax, 1; syscall; ret
        calls: &[],
    },
    // zl_read(fd: i32, buf: i64, len: i64) -> i64: read(2).
    Stub {
        name: "zl_read",
        code: &[0x31, 0xc0, 0x0f, 0x05, 0xc3], // xor eax, eax; syscall; ret
        calls: &[],
    },
    // zl_exit(status: i32): exit_group(2); never returns.
    Stub {
        name: "zl_exit",
        code: &[0xb8, 0xe7, 0, 0, 0, 0x0f, 0x05, 0xf4], // mov eax, 231; syscall; hlt
        calls: &[],
    },
    // zl_syscall(nr, a1, a2, a3, a4, a5, a6: i64) -> i64: any Linux system call.
    Stub {
        name: "zl_syscall",
        code: &[
            0x48, 0x89, 0xf8, // mov rax, rdi
            0x48, 0x89, 0xf7, // mov rdi, rsi
            0x48, 0x89, 0xd6, // mov rsi, rdx
            0x48, 0x89, 0xca, // mov rdx, rcx
            0x4d, 0x89, 0xc2, // mov r10, r8
            0x4d, 0x89, 0xc8, // mov r8, r9
            0x4c, 0x8b, 0x4c, 0x24, 0x08, // mov r9, [rsp+8]
            0x0f, 0x05, // syscall
            0xc3, // ret
        ],
        calls: &[],
    },
    // memcpy(dst, src, n) -> dst: Cranelift's `Memcpy` libcall.
    Stub {
        name: "memcpy",
        code: &[
            0x48, 0x89, 0xf8, // mov rax, rdi
            0x48, 0x89, 0xd1, // mov rcx, rdx
            0xf3, 0xa4, // rep movsb
            0xc3, // ret
        ],
        calls: &[],
    },
    // memset(dst, byte: i32, n) -> dst.
    Stub {
        name: "memset",
        code: &[
            0x49, 0x89, 0xf9, // mov r9, rdi
            0x89, 0xf0, // mov eax, esi
            0x48, 0x89, 0xd1, // mov rcx, rdx
            0xf3, 0xaa, // rep stosb
            0x4c, 0x89, 0xc8, // mov rax, r9
            0xc3, // ret
        ],
        calls: &[],
    },
    // memmove(dst, src, n) -> dst: copies backwards when dst overlaps the end of src.
    Stub {
        name: "memmove",
        code: &[
            0x48, 0x89, 0xf8, // mov rax, rdi
            0x48, 0x89, 0xd1, // mov rcx, rdx
            0x48, 0x39, 0xf7, // cmp rdi, rsi
            0x76, 0x18, // jbe forward
            0x4c, 0x8d, 0x04, 0x16, // lea r8, [rsi+rdx]
            0x4c, 0x39, 0xc7, // cmp rdi, r8
            0x73, 0x0f, // jae forward
            0x48, 0x8d, 0x74, 0x16, 0xff, // lea rsi, [rsi+rdx-1]
            0x48, 0x8d, 0x7c, 0x17, 0xff, // lea rdi, [rdi+rdx-1]
            0xfd, // std
            0xf3, 0xa4, // rep movsb
            0xfc, // cld
            0xc3, // ret
            0xf3, 0xa4, // forward: rep movsb
            0xc3, // ret
        ],
        calls: &[],
    },
    // memcmp(a, b, n) -> i32: difference of the first differing bytes, or 0.
    Stub {
        name: "memcmp",
        code: &[
            0x31, 0xc0, // xor eax, eax
            0x31, 0xc9, // xor ecx, ecx
            0x48, 0x39, 0xd1, // loop: cmp rcx, rdx
            0x74, 0x11, // je done
            0x0f, 0xb6, 0x04, 0x0f, // movzx eax, byte [rdi+rcx]
            0x44, 0x0f, 0xb6, 0x04, 0x0e, // movzx r8d, byte [rsi+rcx]
            0x48, 0xff, 0xc1, // inc rcx
            0x44, 0x29, 0xc0, // sub eax, r8d
            0x74, 0xea, // je loop
            0xc3, // done: ret
        ],
        calls: &[],
    },
];

pub fn builtin(name: &str) -> Option<&'static Stub> {
    BUILTINS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pc_relative_fields_are_target_plus_addend_minus_place() {
        let f = encode(RefKind::PcRel32, 0x1000, -4, 0x2000, None).unwrap();
        assert_eq!(f.bytes(), &(-0x1004i32).to_le_bytes());
    }

    #[test]
    fn only_rip_relative_64_bit_loads_are_relaxed_and_relaxation_is_reversible() {
        assert_eq!(got_load_opcode([0x48, 0x8b, 0x05], true), Some(0x8d)); // mov rax, [rip+x]
        assert_eq!(got_load_opcode([0x4c, 0x8b, 0x3d], true), Some(0x8d)); // mov r15, [rip+x]
        assert_eq!(got_load_opcode([0x48, 0x8d, 0x05], true), Some(0x8d)); // already relaxed
        assert_eq!(got_load_opcode([0x48, 0x8d, 0x05], false), Some(0x8b)); // back to the GOT
        assert_eq!(got_load_opcode([0x90, 0xff, 0x15], true), None); // call [rip+x]
        assert_eq!(got_load_opcode([0x48, 0x8b, 0x44], true), None); // not RIP-relative
    }

    #[test]
    fn out_of_range_values_are_reported() {
        assert!(encode(RefKind::PcRel32, 0, 0, 1 << 40, None).is_err());
        assert!(encode(RefKind::Abs32, 1 << 32, 0, 0, None).is_err());
        assert!(encode(RefKind::GotPcRel32, 0, 0, 0, None).is_err());
    }
}
