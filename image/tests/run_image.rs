//! The image on its own, without Cranelift: hand-written machine code in, a running program out.

use std::process::Command;

use zerolink_image::{Binding, Contents, Image, RefKind, Reference, SymbolKind};

fn run(path: &std::path::Path) -> (i32, String) {
    // These tests write executables in-process while other test threads fork children, which
    // briefly inherit the write descriptor until they exec: retry the "text file busy" race.
    let mut tries = 0;
    let out = loop {
        match Command::new(path).output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other.expect("the built executable starts"),
        }
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn main_returning_a_constant_becomes_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("answer");
    let mut image = Image::create(&path).unwrap();
    let main = image
        .declare("main", SymbolKind::Function, Binding::Global)
        .unwrap();
    // mov eax, 42; ret
    image
        .define_function(main, &[0xb8, 42, 0, 0, 0, 0xc3], 16, &[])
        .unwrap();
    image.finish().unwrap();
    assert_eq!(run(&path).0, 42);
}

#[test]
fn a_reference_before_its_target_is_patched_when_the_target_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello");
    let mut image = Image::create(&path).unwrap();
    let main = image
        .declare("main", SymbolKind::Function, Binding::Global)
        .unwrap();
    let msg = image
        .declare("msg", SymbolKind::Data, Binding::Local)
        .unwrap();
    let write = image
        .declare("zl_write", SymbolKind::Function, Binding::Global)
        .unwrap();
    // sub rsp, 8; mov edi, 1; lea rsi, [rip+msg]; mov edx, 3; call zl_write (via GOT);
    // add rsp, 8; xor eax, eax; ret
    let code = [
        0x48, 0x83, 0xec, 0x08, // sub rsp, 8
        0xbf, 1, 0, 0, 0, // mov edi, 1
        0x48, 0x8d, 0x35, 0, 0, 0, 0, // lea rsi, [rip+msg]   (field at 12)
        0xba, 3, 0, 0, 0, // mov edx, 3
        0xff, 0x15, 0, 0, 0, 0, // call [rip+GOT(zl_write)] (field at 23)
        0x48, 0x83, 0xc4, 0x08, // add rsp, 8
        0x31, 0xc0, // xor eax, eax
        0xc3,
    ];
    let refs = [
        Reference {
            offset: 12,
            kind: RefKind::PcRel32,
            target: msg,
            addend: -4,
        },
        Reference {
            offset: 23,
            kind: RefKind::GotPcRel32,
            target: write,
            addend: -4,
        },
    ];
    image.define_function(main, &code, 16, &refs).unwrap();
    image
        .define_data(msg, Contents::Bytes(b"hi\n"), 1, false, &[])
        .unwrap();
    image.finish().unwrap();
    assert_eq!(run(&path), (0, "hi\n".to_string()));
}

#[test]
fn a_failed_build_leaves_the_previous_file_alone_and_no_temporary_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep");
    std::fs::write(&path, b"previous").unwrap();
    let mut image = Image::create(&path).unwrap();
    let main = image
        .declare("main", SymbolKind::Function, Binding::Global)
        .unwrap();
    let missing = image
        .declare("missing", SymbolKind::Function, Binding::Global)
        .unwrap();
    let refs = [Reference {
        offset: 1,
        kind: RefKind::PcRel32,
        target: missing,
        addend: -4,
    }];
    image
        .define_function(main, &[0xe8, 0, 0, 0, 0, 0xc3], 16, &refs)
        .unwrap();
    let err = image.finish().unwrap_err().to_string();
    assert_eq!(err, "undefined symbol `missing`, referenced by `main`");
    assert_eq!(std::fs::read(&path).unwrap(), b"previous");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn got_loads_of_symbols_in_the_image_are_relaxed_to_lea() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relaxed");
    let mut image = Image::create(&path).unwrap();
    let main = image
        .declare("main", SymbolKind::Function, Binding::Global)
        .unwrap();
    let byte = image
        .declare("byte", SymbolKind::Data, Binding::Local)
        .unwrap();
    // mov rax, [rip + GOT(byte)]; movzx eax, byte [rax]; ret
    let code = [0x48, 0x8b, 0x05, 0, 0, 0, 0, 0x0f, 0xb6, 0x00, 0xc3];
    let refs = [Reference {
        offset: 3,
        kind: RefKind::GotPcRel32,
        target: byte,
        addend: -4,
    }];
    image.define_function(main, &code, 16, &refs).unwrap();
    image
        .define_data(byte, Contents::Bytes(&[77]), 1, false, &[])
        .unwrap();
    let summary = image.finish().unwrap();
    assert_eq!(
        summary.got_entries, 0,
        "the load should not need a GOT entry"
    );
    assert_eq!(run(&path).0, 77);
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.windows(3).any(|w| w == [0x48, 0x8d, 0x05]),
        "no `lea rax, [rip+..]` in the output"
    );
}
