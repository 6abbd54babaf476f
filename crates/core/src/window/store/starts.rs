//! The store's index of open slots: by key, then by start.
//!
//! Keys are numbered densely from 0 by the key table, so the index is a
//! vector by key number: finding a key's slots is one read where a hash
//! map of 100k keys cost a probe and a cache miss per event.
//!
//! Most keys have one open slot (a tumbling window, a session) or a few
//! (sliding panes), so the index is a sorted vector that holds one entry
//! inline: no allocation per key for the common case, where a `BTreeMap`
//! took a 192-byte node for its first entry. Starts mostly arrive in order,
//! so an insertion is usually a push at the end.

use std::ops::{Bound, RangeBounds};

use smallvec::SmallVec;

use crate::decode::KeyId;

/// Each key's open slots, by key number.
#[derive(Debug, Default)]
pub(super) struct ByKey(Vec<Starts>);

impl ByKey {
    /// `key`'s slots, if it has any open.
    pub(super) fn get(&self, key: &KeyId) -> Option<&Starts> {
        self.0.get(*key as usize).filter(|s| !s.is_empty())
    }

    pub(super) fn get_mut(&mut self, key: &KeyId) -> Option<&mut Starts> {
        self.0.get_mut(*key as usize)
    }

    pub(super) fn contains_key(&self, key: &KeyId) -> bool {
        self.get(key).is_some()
    }

    /// `key`'s slots, made empty if the key has none yet.
    pub(super) fn entry(&mut self, key: KeyId) -> &mut Starts {
        let i = key as usize;
        if self.0.len() <= i {
            self.0.resize_with(i + 1, Starts::default);
        }
        &mut self.0[i]
    }

    /// Forgets `key`'s slots (and the memory a key with many held).
    pub(super) fn remove(&mut self, key: &KeyId) {
        if let Some(starts) = self.0.get_mut(*key as usize) {
            *starts = Starts::default();
        }
    }
}

/// Slot ids of one key by their start, ascending, each start once.
#[derive(Debug, Default)]
pub(super) struct Starts(SmallVec<[(i64, usize); 1]>);

impl Starts {
    fn position(&self, start: i64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&start, |&(s, _)| s)
    }

    /// The slot starting at `start`.
    pub(super) fn get(&self, start: &i64) -> Option<&usize> {
        self.position(*start).ok().map(|i| &self.0[i].1)
    }

    /// Indexes slot `id` under `start`, replacing (and returning) the slot
    /// indexed there before.
    pub(super) fn insert(&mut self, start: i64, id: usize) -> Option<usize> {
        match self.position(start) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, id)),
            Err(i) => {
                self.0.insert(i, (start, id));
                None
            }
        }
    }

    /// Drops the slot indexed under `start`, returning it.
    pub(super) fn remove(&mut self, start: &i64) -> Option<usize> {
        let i = self.position(*start).ok()?;
        Some(self.0.remove(i).1)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The slots whose start lies in `range`, in start order.
    pub(super) fn range(
        &self,
        range: impl RangeBounds<i64>,
    ) -> impl DoubleEndedIterator<Item = (&i64, &usize)> {
        let from = match range.start_bound() {
            Bound::Included(&s) => self.0.partition_point(|&(x, _)| x < s),
            Bound::Excluded(&s) => self.0.partition_point(|&(x, _)| x <= s),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&e) => self.0.partition_point(|&(x, _)| x <= e),
            Bound::Excluded(&e) => self.0.partition_point(|&(x, _)| x < e),
            Bound::Unbounded => self.0.len(),
        };
        self.0[from..to.max(from)].iter().map(|(s, id)| (s, id))
    }

    /// The slot ids, in start order.
    pub(super) fn values(&self) -> impl Iterator<Item = &usize> {
        self.0.iter().map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::Starts;

    proptest! {
        /// Every operation answers as a `BTreeMap` does, whatever the order
        /// of starts and however the ranges are bounded.
        #[test]
        fn answers_as_a_btree_map(
            ops in proptest::collection::vec((0u8..3, -20i64..20, 0usize..100), 0..200),
            bounds in proptest::collection::vec((-25i64..25, -25i64..25), 1..20),
        ) {
            let mut starts = Starts::default();
            let mut model = BTreeMap::new();
            for (op, start, id) in ops {
                match op {
                    0 => prop_assert_eq!(starts.insert(start, id), model.insert(start, id)),
                    1 => prop_assert_eq!(starts.remove(&start), model.remove(&start)),
                    _ => prop_assert_eq!(starts.get(&start), model.get(&start)),
                }
                prop_assert_eq!(starts.is_empty(), model.is_empty());
            }
            prop_assert!(starts.values().eq(model.values()));
            for (a, b) in bounds {
                prop_assert!(starts.range(a..b).eq(model.range(a..b.max(a))));
                prop_assert!(starts.range(..=a).rev().eq(model.range(..=a).rev()));
                prop_assert!(starts.range(a..).eq(model.range(a..)));
            }
        }
    }
}
