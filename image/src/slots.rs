//! Slots: the place of each function or data object inside its region, with spare capacity.
//!
//! A slot is `size` bytes of content followed by slack up to its `capacity`. The slack is what
//! lets a later, larger version of a function be written where the old one was (Inclink and
//! Zig both found about a third to be enough for almost every edit; see [`Slack`] for why a
//! fresh build gives an eighth). Freed slots go to a first-fit free list; new slots come from the free
//! list first and from the end of the region otherwise. Addresses never move unless a slot's
//! owner outgrows it.

use crate::error::{ImageError, Result};
use crate::layout::{align_up, RegionKind};

/// The smallest alignment gap kept on the free list.
const MIN_FREE: u64 = 16;

/// A placed slot: its first address and how many bytes it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub addr: u64,
    pub capacity: u64,
}

impl Slot {
    pub fn end(&self) -> u64 {
        self.addr + self.capacity
    }
}

/// How much spare room a new slot gets.
///
/// A fresh build places every function once and knows nothing of which ones will be edited,
/// so it gives an eighth: enough for the small edits that grow a function by a few bytes,
/// and it keeps the file close to a linked one's size. Whatever an update places (a function
/// that outgrew its slot, a new one) is where edits happen, and edits cluster: it gets the
/// third that Inclink and Zig found to keep nearly every later edit in place. A move is cheap
/// either way (the old entry jumps to the new code: `Image::redefine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slack {
    Eighth,
    Third,
}

/// The capacity given to a slot for content of `size` bytes, in 16-byte steps: an eighth
/// more to the nearest step (never less than the size rounded up: at 200 bytes a function,
/// rounding up would add half as much again), or a third more rounded up.
pub fn capacity_for(size: u64, slack: Slack) -> u64 {
    let c = match slack {
        Slack::Eighth => (size + size / 8 + 8) / 16 * 16,
        Slack::Third => align_up(size + size / 3, 16),
    };
    c.max(align_up(size, 16)).max(size)
}

/// Allocation state of one region's window of address space.
#[derive(Debug, Clone)]
pub struct Region {
    pub kind: RegionKind,
    /// End of the highest slot, relative to the region start: the region's extent in use.
    pub used: u64,
    /// Free ranges below `used`, sorted by address, as (offset, length).
    free: Vec<(u64, u64)>,
    /// Take new slots from the end only (a live update: a freed slot may still hold code a
    /// running process executes). Not persisted.
    pub tail_only: bool,
    /// The spare room of new slots: an eighth in a fresh build, a third in an update. Not
    /// persisted.
    pub slack: Slack,
}

impl Region {
    pub fn new(kind: RegionKind) -> Self {
        Region {
            kind,
            used: 0,
            free: Vec::new(),
            tail_only: false,
            slack: Slack::Third,
        }
    }

    /// A region as persisted: its high-water mark and free ranges (offset, length).
    pub fn restore(kind: RegionKind, used: u64, free: Vec<(u64, u64)>) -> Self {
        Region {
            kind,
            used,
            free,
            tail_only: false,
            slack: Slack::Third,
        }
    }

    pub fn base(&self) -> u64 {
        self.kind.vaddr()
    }

    /// Allocate a slot for `size` bytes at `align`, with the region's slack policy.
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<Slot> {
        let capacity = if self.kind == RegionKind::Got {
            size
        } else {
            capacity_for(size, self.slack)
        };
        self.alloc_capacity(capacity, align)
    }

    /// Allocate a slot of exactly `size` bytes: for what is placed once and never grows (a
    /// precompiled object's section, a PLT stub).
    pub fn alloc_exact(&mut self, size: u64, align: u64) -> Result<Slot> {
        self.alloc_capacity(size, align)
    }

    fn alloc_capacity(&mut self, capacity: u64, align: u64) -> Result<Slot> {
        let align = align.max(self.kind.min_slot_align());
        // First fit in the free list.
        let searched = if self.tail_only { 0 } else { self.free.len() };
        for i in 0..searched {
            let (off, len) = self.free[i];
            let start = align_up(off, align);
            if start + capacity <= off + len {
                self.free.remove(i);
                if start > off {
                    self.free.insert(i, (off, start - off));
                }
                let tail = off + len - (start + capacity);
                if tail > 0 {
                    let at = self.free.partition_point(|&(o, _)| o < start);
                    self.free.insert(at, (start + capacity, tail));
                }
                return Ok(Slot {
                    addr: self.base() + start,
                    capacity,
                });
            }
        }
        let start = align_up(self.used, align);
        let end = start + capacity;
        let reserve = self.kind.reserve();
        if end > reserve {
            return Err(ImageError::RegionFull {
                region: self.kind.name(),
                name: String::new(),
                needed: end - reserve,
                reserve,
            });
        }
        // An alignment gap goes to the free list, unless it is too small to be worth a
        // record: a list of thousands of slivers would make every first-fit search long
        // (slots of exact size, precompiled sections, leave one after nearly every slot).
        if start - self.used >= MIN_FREE {
            self.release_range(self.used, start - self.used);
        }
        self.used = end;
        Ok(Slot {
            addr: self.base() + start,
            capacity,
        })
    }

    /// Give a slot back for reuse.
    pub fn free(&mut self, slot: Slot) {
        self.release_range(slot.addr - self.base(), slot.capacity);
    }

    fn release_range(&mut self, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        let at = self.free.partition_point(|&(o, _)| o < off);
        self.free.insert(at, (off, len));
        // Coalesce with the neighbours so the list stays short.
        if at + 1 < self.free.len() && self.free[at].0 + self.free[at].1 == self.free[at + 1].0 {
            self.free[at].1 += self.free[at + 1].1;
            self.free.remove(at + 1);
        }
        if at > 0 && self.free[at - 1].0 + self.free[at - 1].1 == self.free[at].0 {
            self.free[at - 1].1 += self.free[at].1;
            self.free.remove(at);
        }
    }

    /// Free bytes below the high-water mark (alignment gaps and freed slots).
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|&(_, len)| len).sum()
    }

    pub fn free_ranges(&self) -> &[(u64, u64)] {
        &self.free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_have_a_third_spare_and_honour_alignment() {
        let mut r = Region::new(RegionKind::Data);
        let a = r.alloc(30, 8).unwrap();
        assert_eq!(a.addr, RegionKind::Data.vaddr());
        assert_eq!(a.capacity, 48);
        let b = r.alloc(3, 64).unwrap();
        assert_eq!(b.addr % 64, 0);
        assert!(b.addr >= a.end());
    }

    #[test]
    fn freed_slots_are_reused_first_fit_and_coalesced() {
        let mut r = Region::new(RegionKind::Text);
        let a = r.alloc(96, 16).unwrap();
        let b = r.alloc(96, 16).unwrap();
        let _c = r.alloc(96, 16).unwrap();
        r.free(a);
        r.free(b);
        assert_eq!(r.free_ranges().len(), 1);
        let d = r.alloc(180, 16).unwrap(); // capacity 240 fits the 256 freed bytes
        assert_eq!(d.addr, a.addr);
    }

    #[test]
    fn a_full_region_is_an_error_not_an_overlap() {
        let mut r = Region::new(RegionKind::Rodata);
        assert!(r.alloc(crate::layout::REGION_RESERVE, 1).is_err());
    }
}
