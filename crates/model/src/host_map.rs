//! Maps keyed by host name that a new table copies by the shard.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, LazyLock};

use crate::HashMap;

/// Enough that a shard of a large fleet is small (1 600 hosts of 100 000), few enough that
/// copying the shard pointers is nothing.
pub(crate) const SHARDS: usize = 64;

/// Picks the shard of a name. Fixed per process, so two maps of a process shard alike (and
/// compare shard by shard); the shards themselves are hash maps with random seeds.
static SHARD_HASHER: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

type Shard<V> = HashMap<Arc<str>, V>;

/// The shard of a key, out of [`SHARDS`].
pub(crate) fn shard_index(key: &(impl Hash + ?Sized)) -> usize {
    // The top bits: the shards' own maps index by the low ones of a different hash.
    (SHARD_HASHER.hash_one(key) >> (64 - SHARDS.trailing_zeros())) as usize
}

/// A map from host names to `V`, in shards that tables share: a clone copies the shard pointers,
/// and a change copies only the shard it touches, so a table made from another by a change of a
/// few hosts costs what changed, whatever the number of hosts.
pub(crate) struct HostMap<V> {
    shards: Box<[Arc<Shard<V>>]>,
    len: usize,
}

impl<V> HostMap<V> {
    fn shard(name: &str) -> usize {
        shard_index(name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&V> {
        self.shards[Self::shard(name)].get(name)
    }

    pub(crate) fn get_key_value(&self, name: &str) -> Option<(&Arc<str>, &V)> {
        self.shards[Self::shard(name)].get_key_value(name)
    }

    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|shard| shard.values())
    }
}

impl<V: Clone> HostMap<V> {
    /// The value of `name`, to change: its shard is copied first if another map shares it.
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        let shard = &mut self.shards[Self::shard(name)];
        if !shard.contains_key(name) {
            return None;
        }
        Arc::make_mut(shard).get_mut(name)
    }

    pub(crate) fn insert(&mut self, name: Arc<str>, value: V) -> Option<V> {
        let old = Arc::make_mut(&mut self.shards[Self::shard(&name)]).insert(name, value);
        self.len += usize::from(old.is_none());
        old
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<V> {
        let shard = &mut self.shards[Self::shard(name)];
        if !shard.contains_key(name) {
            return None;
        }
        let old = Arc::make_mut(shard).remove(name);
        self.len -= usize::from(old.is_some());
        old
    }
}

impl<V> Default for HostMap<V> {
    fn default() -> Self {
        let shards = (0..SHARDS).map(|_| Arc::new(HashMap::default())).collect();
        Self { shards, len: 0 }
    }
}

impl<V> Clone for HostMap<V> {
    fn clone(&self) -> Self {
        Self { shards: self.shards.clone(), len: self.len }
    }
}

impl<V: PartialEq> PartialEq for HostMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self.shards.iter().zip(&other.shards).all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
    }
}

impl<V: fmt::Debug> fmt::Debug for HostMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_shares_every_shard_until_one_changes() {
        let mut map = HostMap::default();
        for i in 0..1000 {
            map.insert(format!("h{i}.example.com").into(), i);
        }
        let mut copy = map.clone();
        assert_eq!(copy, map);
        copy.insert("new.example.com".into(), 1000);
        copy.remove("h1.example.com");
        let shared = map.shards.iter().zip(&copy.shards).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
        assert!(shared >= SHARDS - 2, "only the touched shards are copied: {shared} shared");
        assert_eq!((map.len(), copy.len()), (1000, 1000));
        assert_eq!(map.get("h1.example.com"), Some(&1));
        assert_eq!(copy.get("h1.example.com"), None);
        assert_eq!(copy.get("new.example.com"), Some(&1000));
        assert_ne!(copy, map);
        *copy.get_mut("h2.example.com").unwrap() = 7;
        assert_eq!(map.get("h2.example.com"), Some(&2), "the original keeps its value");
        assert_eq!(copy.values().count(), 1000);
    }
}
