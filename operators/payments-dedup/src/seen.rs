//! When each compact key was last accepted: an open-addressing table
//! (linear probing, backward-shift deletion) swept incrementally.
//!
//! Why not `HashMap` plus an arrival queue: with an hour of keys (tens of
//! thousands) the table does not fit in the CPU caches, and a `HashMap`
//! costs about five cache misses per accepted payment: the control bytes and
//! the bucket to look the key up and insert it, then the control bytes and
//! the bucket of the key the queue evicts. Here a key and its time share a
//! 16-byte slot, so a lookup or insert touches one cache line (rarely two),
//! and expired keys are found by a cursor that walks the slots in order (a
//! few per accepted payment), which the hardware prefetches. The work per
//! record stays bounded: at most [`SWEEP_SLOTS`] slots, plus a rebuild when
//! the table doubles (amortized, as with any growing table).

/// Slot marker for "no key": compact keys are below 10^12.
const EMPTY: u64 = u64::MAX;

/// Slots the sweep examines per accepted key. With the load limit below,
/// the cursor passes every slot at least once per `capacity / 8` inserts,
/// so the expired keys still held are at most that many.
pub(crate) const SWEEP_SLOTS: usize = 8;

/// Fibonacci hashing: the top bits of `key * 2^64/φ`.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Debug, Clone)]
pub(crate) struct SeenTable {
    /// `(key, created_ms)`; `key == EMPTY` is a free slot.
    slots: Vec<(u64, i64)>,
    /// `64 - log2(slots.len())`.
    shift: u32,
    len: usize,
    /// Next slot the sweep examines.
    cursor: usize,
}

/// What [`SeenTable::accept`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The key was accepted at or after the cutoff: a duplicate.
    Duplicate,
    /// New, or only seen before the cutoff: now remembered with the new
    /// time.
    Accepted,
}

impl SeenTable {
    pub(crate) fn new() -> SeenTable {
        SeenTable::with_slots(16)
    }

    fn with_slots(n: usize) -> SeenTable {
        debug_assert!(n.is_power_of_two() && n >= 2);
        SeenTable {
            slots: vec![(EMPTY, 0); n],
            shift: 64 - n.trailing_zeros(),
            len: 0,
            cursor: 0,
        }
    }

    /// Keys held (some may have expired and not been swept yet).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(GOLDEN) >> self.shift) as usize
    }

    /// A duplicate if `key` is held with a time `>= cutoff`; otherwise
    /// remembers `created_ms` for it.
    pub(crate) fn accept(&mut self, key: u64, created_ms: i64, cutoff: i64) -> Seen {
        debug_assert_ne!(key, EMPTY);
        // Keep the load at most 5/8: probe sequences stay short.
        if (self.len + 1) * 8 > self.slots.len() * 5 {
            self.grow(cutoff);
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let slot = &mut self.slots[i];
            if slot.0 == key {
                if slot.1 >= cutoff {
                    return Seen::Duplicate;
                }
                slot.1 = created_ms;
                return Seen::Accepted;
            }
            if slot.0 == EMPTY {
                *slot = (key, created_ms);
                self.len += 1;
                return Seen::Accepted;
            }
            i = (i + 1) & mask;
        }
    }

    /// Examines the next [`SWEEP_SLOTS`] slots and forgets the keys whose
    /// time is below `cutoff`.
    pub(crate) fn sweep(&mut self, cutoff: i64) {
        let mask = self.mask();
        let mut i = self.cursor;
        for _ in 0..SWEEP_SLOTS {
            let (key, t) = self.slots[i];
            if key != EMPTY && t < cutoff {
                // Another key may move into slot i: look at it again.
                self.remove_at(i);
            } else {
                i = (i + 1) & mask;
            }
        }
        self.cursor = i;
    }

    /// Empties slot `i`, moving later keys of its probe run back so that
    /// every key stays reachable from its home slot (Knuth's Algorithm R).
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.mask();
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let key = self.slots[j].0;
            if key == EMPTY {
                break;
            }
            let h = self.home(key);
            // The key at j may fill the hole at i unless its home lies
            // cyclically in (i, j].
            let stays = if i <= j {
                i < h && h <= j
            } else {
                i < h || h <= j
            };
            if !stays {
                self.slots[i] = self.slots[j];
                i = j;
            }
        }
        self.slots[i] = (EMPTY, 0);
        self.len -= 1;
    }

    /// Rebuilds the table without its expired keys: with twice the slots,
    /// unless at most a quarter of them would be used (then another 3/8 of
    /// the slots are inserted before the next rebuild).
    fn grow(&mut self, cutoff: i64) {
        let live = self
            .slots
            .iter()
            .filter(|&&(key, t)| key != EMPTY && t >= cutoff)
            .count();
        let n = self.slots.len();
        let mut rebuilt = SeenTable::with_slots(if live * 4 <= n { n } else { n * 2 });
        for &(key, t) in &self.slots {
            if key != EMPTY && t >= cutoff {
                rebuilt.accept(key, t, i64::MIN);
            }
        }
        *self = rebuilt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Random accepts and sweeps agree with a plain map that never forgets,
    /// through growth, wrap-around probe runs and removals in the middle
    /// of runs (tiny tables and few distinct homes make all of them common).
    #[test]
    fn matches_a_map_that_never_forgets() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for keys in [3u64, 40, 1_000, 1_000_000] {
            let mut table = SeenTable::new();
            let mut reference: HashMap<u64, i64> = HashMap::new();
            let mut w = i64::MIN;
            let mut clock = 0i64;
            for _ in 0..60_000 {
                clock += rand(20) as i64;
                let created = clock - rand(300) as i64;
                w = w.max(created);
                let cutoff = w.saturating_sub(200);
                let key = rand(keys);
                let want = match reference.get(&key) {
                    Some(&t) if t >= cutoff => Seen::Duplicate,
                    _ => {
                        reference.insert(key, created);
                        Seen::Accepted
                    }
                };
                assert_eq!(table.accept(key, created, cutoff), want, "key {key}");
                if want == Seen::Accepted {
                    table.sweep(cutoff);
                }
                // Every live key is held, with its time.
                if rand(500) == 0 {
                    let held: HashMap<u64, i64> = table
                        .slots
                        .iter()
                        .filter(|s| s.0 != EMPTY)
                        .copied()
                        .collect();
                    assert_eq!(held.len(), table.len());
                    for (k, &t) in &reference {
                        if t >= cutoff {
                            assert_eq!(held.get(k), Some(&t), "key {k}");
                        }
                    }
                }
            }
            // Expired keys were forgotten and the table stayed small.
            let live = reference.values().filter(|&&t| t >= w - 200).count();
            assert!(
                table.len() <= live + table.slots.len() / 4,
                "{}",
                table.len()
            );
        }
    }
}
