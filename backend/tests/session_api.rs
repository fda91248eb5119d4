//! The build session used directly, by a front end that is neither a `Module` nor the CLIF
//! driver: it hands over machine code it made itself, names its units, and gets typed reasons
//! when a build cannot be an update.

use std::path::Path;

use zerolink_backend::session::{Binding, Check, FunctionCode, LockWait, SymbolKind};
use zerolink_backend::{
    FullReason, LinkOptions, Mode, Session, SessionOptions, TargetOptions, UnitStatus,
};

fn options(debug_info: bool) -> SessionOptions<'static> {
    SessionOptions {
        link: LinkOptions {
            freestanding: true,
            ..LinkOptions::default()
        },
        debug_info,
        lock: LockWait::Fail,
        ..SessionOptions::default()
    }
}

/// `main` returning `status`: `mov eax, status; ret`, in unit "main" fingerprinted by the
/// status. Returns the session's report, or that the unit was kept.
fn build(out: &Path, status: u8, debug_info: bool) -> (Mode, usize, UnitStatus) {
    let isa = TargetOptions::default().isa().unwrap();
    let mut s = Session::open(out, isa, &options(debug_info)).unwrap();
    let mode = s.mode().clone();
    let u = s.unit(b"main");
    let unit = s
        .set_unit_contents(u, Some(u64::from(status) + 1), Default::default())
        .unwrap();
    if unit != UnitStatus::Unchanged {
        let code = [0xb8, status, 0, 0, 0, 0xc3];
        let fingerprint = u64::from(status) + 100;
        match s
            .check(u, "main", SymbolKind::Function, fingerprint)
            .unwrap()
        {
            Check::Keep(_) => {}
            Check::Compile => {
                let id = s
                    .declare("main", SymbolKind::Function, Binding::Global)
                    .unwrap();
                s.define_function(
                    u,
                    id,
                    FunctionCode {
                        code: &code,
                        align: 16,
                        refs: &[],
                        fingerprint,
                        signature: 1,
                        calls: &[],
                        debug: None,
                        unwind: None,
                    },
                )
                .unwrap();
            }
            Check::Elsewhere(other) => panic!("main is in unit {other:?} too"),
        }
    }
    let report = s.finish(&mut |_| Vec::new()).unwrap();
    (mode, report.compiled, unit)
}

fn status(exe: &Path) -> i32 {
    std::process::Command::new(exe)
        .status()
        .unwrap()
        .code()
        .unwrap()
}

#[test]
fn a_front_end_of_its_own_updates_through_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    assert_eq!(
        build(&out, 42, false),
        (Mode::Full { reason: None }, 1, UnitStatus::New)
    );
    assert_eq!(status(&out), 42);
    let before = std::fs::read(&out).unwrap();
    assert_eq!(
        build(&out, 42, false),
        (Mode::Update, 0, UnitStatus::Unchanged)
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "a kept unit writes nothing"
    );
    assert_eq!(
        build(&out, 43, false),
        (Mode::Update, 1, UnitStatus::Changed)
    );
    assert_eq!(status(&out), 43);
}

#[test]
fn why_a_build_is_not_an_update_is_a_reason_to_match() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prog");
    build(&out, 1, false);
    // Debug information on where it was off: other settings.
    let (mode, _, _) = build(&out, 1, true);
    assert_eq!(
        mode,
        Mode::Full {
            reason: Some(FullReason::OtherSettings)
        }
    );
    std::fs::write(&out, b"not an executable").unwrap();
    let (mode, _, _) = build(&out, 1, true);
    assert!(
        matches!(
            mode,
            Mode::Full {
                reason: Some(FullReason::Unreadable(_))
            }
        ),
        "{mode:?}"
    );
    assert_eq!(status(&out), 1);
    let isa = TargetOptions::default().isa().unwrap();
    let forced = SessionOptions {
        force_full: true,
        ..options(true)
    };
    let s = Session::open(&out, isa, &forced).unwrap();
    assert_eq!(
        s.mode(),
        &Mode::Full {
            reason: Some(FullReason::Requested)
        }
    );
}
