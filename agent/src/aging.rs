//! One aging map for every table that must stay bounded in time and in size: the cgroup index,
//! the process table, the workload table and the metrics registry.
//!
//! An entry is live, or *retired* (its cgroup was removed, its process exited): a retired entry
//! stays for a grace period, so late events still find it, then [`AgingMap::expire`] drops it.
//! Past `max_entries` an insert makes room: the oldest retired entry goes first, else the
//! oldest inserted. Both orders are queues validated lazily when popped (a generation per
//! entry tells a stale queue item from the entry now under the key), so expiry and eviction
//! cost O(1) amortised, even when the table is full. Entries also carry their last activity
//! ([`AgingMap::touch`]) for tables that forget idle entries ([`AgingMap::evict_idle`]).
//! Every entry removed by expiry or eviction is counted, and handed to the caller, which may
//! keep side indexes in step. Time comes from a [`Now`], injectable in tests. Keys hash with
//! foldhash (the event path looks entries up per event).

use foldhash::{HashMap, HashMapExt};
use std::{
    collections::VecDeque,
    hash::Hash,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Where an aging map reads the time.
pub trait Now {
    fn now(&self) -> Instant;
}

/// The monotonic clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct Monotonic;

impl Now for Monotonic {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told: for tests of expiry and eviction without sleeping.
#[derive(Clone, Debug)]
pub struct ManualNow(Arc<Mutex<Instant>>);

impl Default for ManualNow {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Instant::now())))
    }
}

impl ManualNow {
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Now for ManualNow {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    generation: u64,
    retired_at: Option<Instant>,
    touched: Instant,
}

/// A map bounded in size, whose retired entries expire after a grace period. See the module
/// documentation.
#[derive(Debug)]
pub struct AgingMap<K, V, C = Monotonic> {
    slots: HashMap<K, Slot<V>>,
    /// Retired entries in retirement order.
    retired: VecDeque<(K, u64, Instant)>,
    /// Every entry in insertion order.
    inserted: VecDeque<(K, u64)>,
    next_generation: u64,
    max_entries: usize,
    grace: Duration,
    evicted: u64,
    clock: C,
}

impl<K: Hash + Eq + Clone, V> AgingMap<K, V, Monotonic> {
    /// At most `max_entries` (at least 1); retired entries kept for `grace`.
    pub fn new(max_entries: usize, grace: Duration) -> Self {
        Self::with_clock(max_entries, grace, Monotonic)
    }
}

impl<K: Hash + Eq + Clone, V, C: Now> AgingMap<K, V, C> {
    pub fn with_clock(max_entries: usize, grace: Duration, clock: C) -> Self {
        Self {
            slots: HashMap::new(),
            retired: VecDeque::new(),
            inserted: VecDeque::new(),
            next_generation: 0,
            max_entries: max_entries.max(1),
            grace,
            evicted: 0,
            clock,
        }
    }

    /// The map's clock (to set one that is set, not read).
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The map's clock, read.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Entries removed by expiry, eviction and [`Self::evict_idle`] since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.slots.contains_key(key)
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.slots.get(key).map(|s| &s.value)
    }

    /// The entry, to change in place (its age and activity stay as they are).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.slots.get_mut(key).map(|s| &mut s.value)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots.iter().map(|(k, s)| (k, &s.value))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.values().map(|s| &s.value)
    }

    /// When the entry was retired, if it is.
    pub fn retired_at(&self, key: &K) -> Option<Instant> {
        self.slots.get(key)?.retired_at
    }

    /// Inserts a live entry. A key already there keeps its place and gets the new value (and
    /// is live again). A new key past `max_entries` first makes room (expired entries, else one
    /// eviction); every entry removed is passed to `removed`.
    pub fn insert(&mut self, key: K, value: V, removed: impl FnMut(K, V)) {
        let now = self.clock.now();
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.value = value;
            slot.retired_at = None;
            slot.touched = now;
            return;
        }
        let generation = self.make_room(&key, removed);
        self.slots.insert(
            key,
            Slot {
                value,
                generation,
                retired_at: None,
                touched: now,
            },
        );
    }

    /// The entry under `key`, touched; inserted with `make` when missing (making room as
    /// [`Self::insert`] does).
    pub fn get_or_insert_with(
        &mut self,
        key: &K,
        make: impl FnOnce() -> V,
        removed: impl FnMut(K, V),
    ) -> &mut V {
        let now = self.clock.now();
        let generation = if self.slots.contains_key(key) {
            0 // unused: the entry exists
        } else {
            self.make_room(key, removed)
        };
        let slot = self.slots.entry(key.clone()).or_insert_with(|| Slot {
            value: make(),
            generation,
            retired_at: None,
            touched: now,
        });
        slot.touched = now;
        &mut slot.value
    }

    /// Room for one more entry under the new `key`: its generation, queued in insertion order.
    fn make_room(&mut self, key: &K, mut removed: impl FnMut(K, V)) -> u64 {
        if self.slots.len() >= self.max_entries {
            self.expire(&mut removed);
            if self.slots.len() >= self.max_entries {
                self.evict_one(&mut removed);
            }
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.inserted.push_back((key.clone(), generation));
        if self.inserted.len() > 2 * self.slots.len() + 1024 {
            let slots = &self.slots;
            self.inserted
                .retain(|(k, g)| slots.get(k).is_some_and(|s| s.generation == *g));
        }
        generation
    }

    /// Retires the entry now (a second call keeps the first time); returns that time.
    pub fn retire(&mut self, key: &K) -> Option<Instant> {
        let now = self.clock.now();
        self.retire_at(key, now)
    }

    /// Retires the entry as of `at` (a second call keeps the first time).
    pub fn retire_at(&mut self, key: &K, at: Instant) -> Option<Instant> {
        let slot = self.slots.get_mut(key)?;
        if let Some(first) = slot.retired_at {
            return Some(first);
        }
        slot.retired_at = Some(at);
        self.retired.push_back((key.clone(), slot.generation, at));
        if self.retired.len() > 2 * self.slots.len() + 1024 {
            let slots = &self.slots;
            self.retired.retain(|(k, g, at)| {
                slots
                    .get(k)
                    .is_some_and(|s| s.generation == *g && s.retired_at == Some(*at))
            });
        }
        Some(at)
    }

    /// The entry, to change in place, recording activity on it (for [`Self::evict_idle`]).
    pub fn get_mut_touched(&mut self, key: &K) -> Option<&mut V> {
        let now = self.clock.now();
        let slot = self.slots.get_mut(key)?;
        slot.touched = now;
        Some(&mut slot.value)
    }

    /// Records activity on the entry (for [`Self::evict_idle`]).
    pub fn touch(&mut self, key: &K) {
        let now = self.clock.now();
        if let Some(slot) = self.slots.get_mut(key) {
            slot.touched = now;
        }
    }

    /// Drops retired entries past their grace period, passing each to `removed`.
    pub fn expire(&mut self, mut removed: impl FnMut(K, V)) {
        let now = self.clock.now();
        while let Some((_, _, at)) = self.retired.front() {
            if now.saturating_duration_since(*at) < self.grace {
                break;
            }
            let Some((key, generation, at)) = self.retired.pop_front() else {
                break;
            };
            self.remove_if(key, &mut removed, |s| {
                s.generation == generation && s.retired_at == Some(at)
            });
        }
    }

    /// Removes every entry idle (not touched) for `idle` or more that `evictable` allows,
    /// passing each to `removed`; returns how many. O(n): call it now and then, not per event.
    pub fn evict_idle(
        &mut self,
        idle: Duration,
        mut evictable: impl FnMut(&K, &V) -> bool,
        mut removed: impl FnMut(K, V),
    ) -> usize {
        let now = self.clock.now();
        let gone: Vec<K> = self
            .slots
            .iter()
            .filter(|(k, s)| {
                now.saturating_duration_since(s.touched) >= idle && evictable(k, &s.value)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            if let Some(slot) = self.slots.remove(key) {
                self.evicted += 1;
                removed(key.clone(), slot.value);
            }
        }
        gone.len()
    }

    /// Removes an entry (not counted as an eviction: the caller asked).
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.slots.remove(key).map(|s| s.value)
    }

    fn remove_if(
        &mut self,
        key: K,
        removed: &mut impl FnMut(K, V),
        check: impl FnOnce(&Slot<V>) -> bool,
    ) -> bool {
        if !self.slots.get(&key).is_some_and(check) {
            return false;
        }
        let Some(slot) = self.slots.remove(&key) else {
            return false;
        };
        self.evicted += 1;
        removed(key, slot.value);
        true
    }

    /// Makes room for one: the oldest retired entry, else the oldest inserted.
    fn evict_one(&mut self, removed: &mut impl FnMut(K, V)) {
        while let Some((key, generation, at)) = self.retired.pop_front() {
            if self.remove_if(key, removed, |s| {
                s.generation == generation && s.retired_at == Some(at)
            }) {
                return;
            }
        }
        while let Some((key, generation)) = self.inserted.pop_front() {
            if self.remove_if(key, removed, |s| s.generation == generation) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
