//! `zerolink verify`: the whole file checked against checksums the table keeps, as `git fsck`
//! checks objects. The table's arrays carry a checksum per 4 KiB page already (verified as an
//! update reads them); the loaded regions (code, read-only data, data, the GOT, the loader's
//! tables) get one per page of what they use, recomputed by every build for the pages it
//! wrote, so a byte changed behind zerolink's back anywhere is found with its place.

use super::*;

/// One place where the file is not what the table says it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The section (or table array) the damage is in.
    pub section: String,
    /// File offset of the 4 KiB piece (or of the section) that does not match.
    pub offset: u64,
    pub what: &'static str,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at file offset {:#x}: {}",
            self.section, self.offset, self.what
        )
    }
}

const PAGE_BYTES: u64 = 4096;

impl Image {
    /// Bring the regions' page checksums up to date with this build's writes (all pages of a
    /// fresh file; in an update only those it wrote, and any that appeared or moved).
    pub(super) fn update_region_sums(&mut self) -> Result<()> {
        let written: Option<Vec<(u64, u64)>> = self.store.written().map(|w| w.collect());
        for kind in RegionKind::ALL {
            let i = kind.index();
            let (Some(extent), true) = (self.extents[i], kind.in_file()) else {
                self.region_sums[i].clear();
                continue;
            };
            let used = self.regions[i].used;
            let pages = used.div_ceil(PAGE_BYTES) as usize;
            let old_pages = self.region_sums[i].len();
            self.region_sums[i].resize(pages, 0);
            // Which pages are stale: every one in a fresh file; in an update the pages the
            // writes fall in (found from the writes, not by asking every page), the last old
            // page (it may have grown or shrunk), and the new ones.
            let stale: Vec<usize> = match &written {
                None => (0..pages).collect(),
                Some(w) => {
                    let (from, to) = (extent.offset, extent.offset + used);
                    let mut stale: BTreeSet<usize> = w
                        .iter()
                        .filter(|&&(s, e)| s < to && e > from)
                        .flat_map(|&(s, e)| {
                            let first = (s.max(from) - from) / PAGE_BYTES;
                            let last = (e.min(to) - 1 - from) / PAGE_BYTES;
                            first as usize..=last as usize
                        })
                        .collect();
                    stale.extend(old_pages.saturating_sub(1)..pages);
                    stale.insert(pages.saturating_sub(1));
                    stale.into_iter().filter(|&p| p < pages).collect()
                }
            };
            // Damage is never laundered: a page whose checksum this build replaces must
            // have matched its old one, or the update would make damage beside its writes
            // look sound (a flipped bit in code next to an edited function).
            if let Some((old, old_used)) = self.opened_regions[i] {
                for &p in stale.iter().filter(|&&p| p < old_pages) {
                    let at = p as u64 * PAGE_BYTES;
                    if at >= old_used {
                        continue;
                    }
                    let len = (old_used - at).min(PAGE_BYTES);
                    let was = self.store.base_checksum(old.offset + at, len);
                    if was.is_some_and(|sum| sum != self.region_sums[i][p]) {
                        return Err(ImageError::TableDamaged(
                            "code or data beside this update's writes",
                        ));
                    }
                }
            }
            for p in stale {
                let start = extent.offset + p as u64 * PAGE_BYTES;
                let len = (used - p as u64 * PAGE_BYTES).min(PAGE_BYTES);
                self.region_sums[i][p] = self.store.checksum(start, len);
            }
        }
        Ok(())
    }

    /// Check every page of the table's arrays and of the loaded regions, and every extra
    /// section, against the checksums in the table. Empty: the file is as its last build
    /// left it.
    pub fn verify(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let check = |section: &str, offset: u64, len: u64, sum: u64| {
            (self.store.checksum(offset, len) != sum).then(|| Problem {
                section: section.to_string(),
                offset,
                what: "its contents do not match the checksum in the table",
            })
        };
        let file_len = self.store.len();
        let head = self.store.read(
            0,
            (crate::elf::HEADER_SUM_OFFSET + 8).max(crate::elf::HEADERS_SIZE),
        );
        if !crate::elf::headers_intact(&head) {
            problems.push(Problem {
                section: "ELF header and program headers".into(),
                offset: 0,
                what: "they do not match the checksum the last build left",
            });
        }
        for a in Array::ALL {
            let state = &self.arrays[a.index()];
            let Some(e) = state.extent else { continue };
            for (p, &sum) in state.page_sums.iter().enumerate() {
                let at = p as u64 * PAGE_BYTES;
                let len = (state.len - at).min(PAGE_BYTES);
                if e.offset + at + len <= file_len {
                    problems.extend(check(a.section_name(), e.offset + at, len, sum));
                }
            }
        }
        for kind in RegionKind::ALL {
            let (Some(e), sums) = (self.extents[kind.index()], &self.region_sums[kind.index()])
            else {
                continue;
            };
            let used = self.regions[kind.index()].used;
            if kind.in_file() && used > 0 && sums.len() != used.div_ceil(PAGE_BYTES) as usize {
                problems.push(Problem {
                    section: kind.section_name().to_string(),
                    offset: e.offset,
                    what: "the table has no checksums for it",
                });
                continue;
            }
            for (p, &sum) in sums.iter().enumerate() {
                let at = p as u64 * PAGE_BYTES;
                let len = (used - at).min(PAGE_BYTES);
                problems.extend(check(kind.section_name(), e.offset + at, len, sum));
            }
        }
        for x in &self.extras {
            if x.extent.offset + x.len <= file_len {
                problems.extend(check(&x.name, x.extent.offset, x.len, x.checksum));
            }
        }
        problems
    }

    /// How many 4 KiB pieces `verify` checks.
    pub fn verify_pages(&self) -> usize {
        let arrays: usize = self.arrays.iter().map(|a| a.page_sums.len()).sum();
        let regions: usize = self.region_sums.iter().map(Vec::len).sum();
        arrays + regions + self.extras.len()
    }
}
