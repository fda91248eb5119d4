//! Why a build could not update OUT in place: one enum for every front end, so a compiler can
//! match on the reason and the CLI prints the same line for each.

/// The reason a session rebuilt OUT in full although OUT exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FullReason {
    /// The caller asked for it (`--full`, [`crate::SessionOptions::force_full`]).
    Requested,
    /// OUT cannot be read as an executable zerolink wrote, or its table is damaged.
    Unreadable(String),
    /// OUT was built with other target settings, another zerolink version, other libraries,
    /// or with debug information on where it is off now (or the other way round).
    OtherSettings,
    /// Free space below the high-water mark is more than half of what a region uses.
    Fragmented {
        region: &'static str,
        free: u64,
        used: u64,
    },
    /// The previous debug information cannot be built on.
    DebugInfo(String),
    /// The table's record of the units (input files) does not decode.
    UnitRecord,
    /// A name changed from a function to a data object, or the other way round.
    KindChanged {
        name: String,
        was: &'static str,
        now: &'static str,
    },
    /// The callers of a function whose signature changed could not be found again.
    CallersMissing,
    /// A page of the table failed its checksum when the update read it.
    Damaged(&'static str),
    /// Verifying OUT before the update (`--verify`) found damage: the first place, and how
    /// many there are.
    Unsound { first: String, places: usize },
    /// Precompiled code (objects, archives) cannot be re-linked in place: why.
    Precompiled(String),
    /// The thread-local block changed size (a thread-local added or grown), and with it every
    /// thread-local's offset from the thread pointer.
    ThreadLocals { before: u64, now: u64 },
}

impl std::fmt::Display for FullReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FullReason::Requested => write!(f, "a full build was asked for"),
            FullReason::Unreadable(why) => write!(f, "{why}"),
            FullReason::OtherSettings => write!(
                f,
                "it was built with other target settings or another zerolink version"
            ),
            FullReason::Fragmented { region, free, used } => write!(
                f,
                "free space is too fragmented ({free} of the {used} bytes of {region} are free)"
            ),
            FullReason::DebugInfo(why) => {
                write!(f, "its debug information cannot be updated: {why}")
            }
            FullReason::UnitRecord => write!(f, "its record of the input files is unreadable"),
            FullReason::KindChanged { name, was, now } => {
                write!(f, "`{name}` changed from a {was} to a {now}")
            }
            FullReason::CallersMissing => {
                write!(f, "an update could not find the callers it needs")
            }
            FullReason::Damaged(what) => write!(f, "its table is damaged ({what})"),
            FullReason::Unsound { first, places } => write!(
                f,
                "it does not match its checksums in {places} place(s), the first: {first}"
            ),
            FullReason::Precompiled(why) => write!(f, "{why}"),
            FullReason::ThreadLocals { before, now } => write!(
                f,
                "the thread-local block changed from {before} to {now} bytes"
            ),
        }
    }
}
