//! zerolink's executable image: the ELF file that codegen writes into directly.
//!
//! The image owns everything about the output file: the address plan ([`layout`]), slots with
//! spare capacity ([`slots`]), the symbol-resolution table ([`symbols`]) and the reference
//! sites that depend on each symbol ([`sites`]), the per-architecture encoding ([`x86_64`]),
//! the ELF structures ([`elf`]), the memory-mapped output file ([`output`]), the overlay that
//! lets an update fail without touching the old file ([`store`]) and the table persisted inside
//! the executable ([`persist`]). [`Image`] ties them together. Nothing outside this crate writes ELF bytes of the executable.

pub mod dynamic;
pub mod elf;
pub mod error;
pub mod frames;
mod image;
pub mod layout;
pub mod live;
pub mod lock;
pub mod output;
pub mod persist;
pub mod runtime;
pub mod sites;
pub mod slots;
pub mod store;
pub mod symbols;
pub mod symtab;
pub mod table;
pub mod versions;
pub mod x86_64;

pub use error::{ImageError, Result, Undefined};
pub use image::{
    find_table, Contents, Export, Image, ObjectExport, OpenError, Problem, Summary, ENTRY,
};
pub use layout::RegionKind;
pub use sites::{RefKind, Reference};
pub use symbols::{Binding, Symbol, SymbolId, SymbolKind};
