//! Consistent hashing (`upstream-hash-by`, `upstream-hash-by-subset`), as ingress-nginx's
//! `balancer/chash.lua` and `balancer/chashsubset.lua`, and the hash ring that session affinity
//! shares.
//!
//! The ring is ketama's, as ingress-nginx's `resty.chash`: every node is placed on a 64-bit
//! circle at [`POINTS_PER_NODE`] points, and a key belongs to the node of the first point at or
//! after the key's hash. Removing a node moves only the keys it held (to the nodes after its
//! points); adding one takes about its share from the others. The points depend only on the
//! nodes' names, so every replica places keys alike. A ring is built once per version of an
//! endpoint set ([`crate::Endpoints::ring`]), when a route first needs it.

use std::fmt;
use std::num::NonZeroU32;

use crate::Template;

/// Points per node on a [`HashRing`], as `resty.chash` (and nginx's ketama `hash … consistent`).
pub const POINTS_PER_NODE: u32 = 160;

/// ingress-nginx's default `upstream-hash-by-subset-size`.
pub const DEFAULT_SUBSET_SIZE: u32 = 3;

/// `upstream-hash-by` and its subset keys, for one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamHash {
    /// The key: text and nginx variables, filled per request and hashed.
    pub key: Template,
    /// `upstream-hash-by-subset`: keys map to a group of this many endpoints, one of which is
    /// picked at random per request; `None` maps keys to one endpoint.
    pub subset_size: Option<NonZeroU32>,
}

/// Nodes placed on a circle of 64-bit hashes.
#[derive(Clone, Debug, Default)]
pub struct HashRing {
    /// (point, node index), sorted.
    points: Box<[(u64, u32)]>,
}

/// A hash that is the same on every replica and in every version: FNV-1a over the bytes, then
/// a 64-bit finalizer (MurmurHash3's) so that similar inputs land far apart. Writing `"ab"` then
/// `"c"` hashes as writing `"abc"`, as nginx hashes the concatenated key.
#[derive(Clone, Copy, Debug)]
pub struct StableHasher(u64);

// === impl HashRing ===

impl HashRing {
    /// A ring of the nodes named, in order (a node's index is its position).
    pub fn new<N: AsRef<[u8]>>(names: impl IntoIterator<Item = N>) -> Self {
        let mut points = Vec::new();
        for (index, name) in names.into_iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            for point in 0..POINTS_PER_NODE {
                let mut hasher = StableHasher::new();
                hasher.write(name.as_ref());
                hasher.write(b"#");
                hasher.write(&point.to_le_bytes());
                points.push((hasher.finish(), index));
            }
        }
        points.sort_unstable();
        Self { points: points.into() }
    }

    /// The node a key's hash belongs to; `None` on an empty ring.
    pub fn find(&self, hash: u64) -> Option<usize> {
        let at = self.points.partition_point(|(point, _)| *point < hash);
        let (_, node) = self.points.get(at).or_else(|| self.points.first())?;
        Some(*node as usize)
    }
}

// === impl StableHasher ===

impl StableHasher {
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    /// The hash of one byte string.
    pub fn hash(bytes: &[u8]) -> u64 {
        let mut hasher = Self::new();
        hasher.write(bytes);
        hasher.finish()
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Filling a key writes its text straight into the hash.
impl fmt::Write for StableHasher {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    fn owners(ring: &HashRing, names: &[String]) -> Vec<String> {
        (0..1000)
            .map(|k| names[ring.find(StableHasher::hash(format!("/item/{k}").as_bytes())).unwrap()].clone())
            .collect()
    }

    #[test]
    fn removing_one_of_ten_nodes_moves_only_its_keys() {
        let all = names(10);
        let before = owners(&HashRing::new(&all), &all);
        let removed = &all[3];
        let rest: Vec<String> = all.iter().filter(|n| *n != removed).cloned().collect();
        let after = owners(&HashRing::new(&rest), &rest);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let held = before.iter().filter(|b| *b == removed).count();
        assert_eq!(moved, held, "only the removed node's keys move");
        assert!(moved <= 150, "{moved} of 1000 keys moved");
    }

    #[test]
    fn adding_a_node_takes_keys_only_for_itself() {
        let all = names(10);
        let before = owners(&HashRing::new(&all[..9]), &all[..9]);
        let after = owners(&HashRing::new(&all), &all);
        for (b, a) in before.iter().zip(&after) {
            assert!(a == b || *a == all[9], "{b} -> {a}");
        }
        let taken = after.iter().filter(|a| **a == all[9]).count();
        assert!((40..=200).contains(&taken), "the new node took {taken} of 1000 keys");
    }

    #[test]
    fn keys_spread_over_the_nodes() {
        let all = names(5);
        let owners = owners(&HashRing::new(&all), &all);
        for name in &all {
            let share = owners.iter().filter(|o| *o == name).count();
            assert!((100..=300).contains(&share), "{name} holds {share} of 1000 keys");
        }
    }

    #[test]
    fn hashing_is_streaming_and_fixed() {
        let mut hasher = StableHasher::new();
        hasher.write(b"/a");
        hasher.write(b"bc");
        assert_eq!(hasher.finish(), StableHasher::hash(b"/abc"));
        // Replicas and versions must agree: the value is part of the contract.
        assert_eq!(StableHasher::hash(b""), 0xefd0_1f60_ba99_2926);
        assert!(HashRing::default().find(1).is_none());
    }
}
