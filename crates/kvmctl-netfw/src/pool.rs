//! Port pools: named ranges of host ports that forwards are allocated from.
//!
//! Pure: the database does the allocation (one statement, so two requests never get the same
//! port); this module parses and checks the ranges and picks ports for tests and callers
//! that hold the taken set themselves.

use std::collections::HashSet;

/// A named range of host ports, inclusive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortPool {
    /// `ssh`, `vnc` or `general`.
    pub name: String,
    pub start: u16,
    pub end: u16,
}

impl PortPool {
    /// Parses `START-END` (both inclusive, `1024 <= START <= END`).
    pub fn parse(name: &str, range: &str) -> Result<PortPool, String> {
        let bad = || format!("{range:?} is not a port range; write it as START-END, e.g. 2200-2299");
        let (a, b) = range.split_once('-').ok_or_else(bad)?;
        let (start, end): (u16, u16) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        if start > end {
            return Err(format!("{range:?} ends before it starts"));
        }
        if start < 1024 {
            return Err(format!("{range:?} includes privileged ports (below 1024) that host services use; start at 1024 or above"));
        }
        Ok(PortPool { name: name.into(), start, end })
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    pub fn size(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    /// `2200-2299`.
    pub fn range(&self) -> String {
        format!("{}-{}", self.start, self.end)
    }

    pub fn overlaps(&self, other: &PortPool) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The lowest port of the pool that `taken` does not hold.
    pub fn pick(&self, taken: &HashSet<u16>) -> Option<u16> {
        (self.start..=self.end).find(|p| !taken.contains(p))
    }
}

/// Pools must not overlap: a port belongs to one pool.
pub fn pools_check(pools: &[PortPool]) -> Result<(), String> {
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            if a.overlaps(b) {
                return Err(format!(
                    "port pools {} ({}) and {} ({}) overlap; give them separate ranges",
                    a.name,
                    a.range(),
                    b.name,
                    b.range()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_parse_and_are_checked() {
        let p = PortPool::parse("ssh", "2200-2299").unwrap();
        assert_eq!((p.start, p.end, p.size()), (2200, 2299, 100));
        assert!(PortPool::parse("ssh", "2299-2200").unwrap_err().contains("ends before"));
        assert!(PortPool::parse("ssh", "22-80").unwrap_err().contains("privileged"));
        assert!(PortPool::parse("ssh", "abc").unwrap_err().contains("START-END"));
        let v = PortPool::parse("vnc", "2250-2260").unwrap();
        assert!(pools_check(&[p.clone(), v]).unwrap_err().contains("overlap"));
        assert!(pools_check(&[p, PortPool::parse("vnc", "5900-5999").unwrap()]).is_ok());
    }

    proptest! {
        /// Picking until the pool is exhausted hands out every port once and then nothing.
        #[test]
        fn picks_are_distinct_and_exhaust(start in 1024u16..60000, len in 1u16..64) {
            let pool = PortPool { name: "p".into(), start, end: start + len - 1 };
            let mut taken = HashSet::new();
            while let Some(p) = pool.pick(&taken) {
                prop_assert!(pool.contains(p));
                prop_assert!(taken.insert(p));
            }
            prop_assert_eq!(taken.len() as u32, pool.size());
        }
    }
}
