//! The address plan: where each region of the executable lives in memory, fixed before anything
//! is placed so that no address handed out is ever taken back.
//!
//! Every region gets its own window of virtual address space: 768 MiB for text (about 2.7
//! million functions of 200 bytes with their slack), 256 MiB for each of the others. A region
//! grows inside its window without disturbing any other; the windows together span 0x1000_0000
//! to 0x9000_0000 (2 GiB), so every code-to-data distance fits the ±2 GiB of an x86-64 `rel32`,
//! and every address fits an unsigned 32-bit absolute (`Abs4`). File offsets are decoupled from addresses (only congruence modulo the page
//! size is required), so a region's bytes can move inside the file while its addresses stay put.

use object::elf;

pub const PAGE: u64 = 0x1000;
/// Where the ELF header and program headers are mapped (read-only).
pub const HEADERS_VADDR: u64 = 0x40_0000;
/// Program-header slots kept in the first page, so later builds can add segments
/// (`PT_INTERP`, `PT_DYNAMIC`, `PT_GNU_EH_FRAME`, `PT_GNU_RELRO`) without moving anything.
pub const MAX_PHDRS: usize = 16;
/// Size of each region's window of virtual address space but text's.
pub const REGION_RESERVE: u64 = 0x1000_0000;
/// Size of the text window: three windows.
pub const TEXT_RESERVE: u64 = 3 * REGION_RESERVE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegionKind {
    /// Machine code: read + execute.
    Text,
    /// Constants and read-only data objects.
    Rodata,
    /// Global offset table, built by the image itself.
    Got,
    /// Writable data with initial contents.
    Data,
    /// Writable zero-fill data: takes memory, not file space.
    Bss,
    /// What the dynamic loader reads: `.interp`, `.dynsym`, `.dynstr`, `.hash`, `.rela.dyn`.
    /// Rebuilt whole by every build that has imports (it grows with imports, not with code).
    Dynamic,
    /// Thread-local data: the initial image of every thread's block (`.tdata`, `PT_TLS`).
    /// Code reaches it only through offsets from the thread pointer, never by address, so
    /// its window may lie past the others' 2 GiB.
    Tls,
}

/// Number of regions.
pub const REGIONS: usize = 7;

/// The alignment of the thread-local block (`PT_TLS`'s `p_align`): every slot in the TLS
/// region is aligned to at most this, so offsets from the thread pointer never depend on
/// what is placed.
pub const TLS_ALIGN: u64 = 64;

impl RegionKind {
    pub const ALL: [RegionKind; REGIONS] = [
        RegionKind::Text,
        RegionKind::Rodata,
        RegionKind::Got,
        RegionKind::Data,
        RegionKind::Bss,
        RegionKind::Dynamic,
        RegionKind::Tls,
    ];

    pub const fn index(self) -> usize {
        self as usize
    }

    /// First address of the region's window: text from 0x1000_0000, then each other region
    /// 256 MiB further, from 0x4000_0000.
    pub const fn vaddr(self) -> u64 {
        match self {
            RegionKind::Text => REGION_RESERVE,
            _ => TEXT_RESERVE + REGION_RESERVE * self.index() as u64,
        }
    }

    /// Size of the region's window.
    pub fn reserve(self) -> u64 {
        match self {
            RegionKind::Text => TEXT_RESERVE,
            _ => REGION_RESERVE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RegionKind::Text => "text",
            RegionKind::Rodata => "rodata",
            RegionKind::Got => "got",
            RegionKind::Data => "data",
            RegionKind::Bss => "bss",
            RegionKind::Dynamic => "dynamic",
            RegionKind::Tls => "tls",
        }
    }

    pub fn section_name(self) -> &'static str {
        match self {
            RegionKind::Text => ".text",
            RegionKind::Rodata => ".rodata",
            RegionKind::Got => ".got",
            RegionKind::Data => ".data",
            RegionKind::Bss => ".bss",
            RegionKind::Dynamic => ".zerolink.dynamic",
            RegionKind::Tls => ".tdata",
        }
    }

    /// The index of the region's section header (`st_shndx` of its symbols): regions in
    /// order after the null section, the dynamic region having none of its own.
    pub fn shndx(self) -> u16 {
        match self {
            RegionKind::Tls => RegionKind::Dynamic.index() as u16 + 1,
            _ => self.index() as u16 + 1,
        }
    }

    /// Segment permissions. No region is both writable and executable.
    pub fn segment_flags(self) -> u32 {
        match self {
            RegionKind::Text => elf::PF_R | elf::PF_X,
            // The GOT is filled at build time in a static executable: nothing writes it at run time.
            RegionKind::Rodata | RegionKind::Got | RegionKind::Dynamic | RegionKind::Tls => {
                elf::PF_R
            }
            RegionKind::Data | RegionKind::Bss => elf::PF_R | elf::PF_W,
        }
    }

    pub fn section_flags(self) -> u64 {
        u64::from(match self {
            RegionKind::Text => elf::SHF_ALLOC | elf::SHF_EXECINSTR,
            RegionKind::Rodata | RegionKind::Got | RegionKind::Dynamic => elf::SHF_ALLOC,
            RegionKind::Data | RegionKind::Bss => elf::SHF_ALLOC | elf::SHF_WRITE,
            RegionKind::Tls => elf::SHF_ALLOC | elf::SHF_WRITE | elf::SHF_TLS,
        })
    }

    pub fn section_type(self) -> u32 {
        match self {
            RegionKind::Bss => elf::SHT_NOBITS,
            _ => elf::SHT_PROGBITS,
        }
    }

    /// Whether the region's bytes are stored in the file.
    pub fn in_file(self) -> bool {
        self != RegionKind::Bss
    }

    /// Byte used for padding and slack: `int3` in code, so a jump into slack traps at once.
    pub fn fill_byte(self) -> u8 {
        match self {
            RegionKind::Text => 0xcc,
            _ => 0,
        }
    }

    /// The smallest alignment of a slot in this region.
    pub fn min_slot_align(self) -> u64 {
        match self {
            RegionKind::Text => 16,
            RegionKind::Got => 8,
            _ => 1,
        }
    }
}

/// A range of the file holding one region's bytes or one table, with room to grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub capacity: u64,
}

pub fn align_up(value: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    (value + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_do_not_overlap_and_stay_within_rel32_reach() {
        // The TLS window is reached through thread-pointer offsets only: it is past the rest.
        assert!(RegionKind::Tls.vaddr() + RegionKind::Tls.reserve() <= 1 << 32);
        let lo = RegionKind::Text.vaddr();
        let hi = RegionKind::Dynamic.vaddr() + RegionKind::Dynamic.reserve();
        // The farthest two bytes are `hi - 1 - lo` apart: within a signed 32-bit offset.
        assert!(hi - 1 - lo < 1 << 31);
        assert!(hi < 1 << 32);
        for pair in RegionKind::ALL.windows(2) {
            // (in address order: the TLS window follows the dynamic one)
            assert!(pair[0].vaddr() + pair[0].reserve() <= pair[1].vaddr());
        }
        assert!(HEADERS_VADDR + PAGE <= lo);
    }
}
