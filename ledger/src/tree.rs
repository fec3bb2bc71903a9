//! Merkle tree math for an append-only log: RFC 6962 structure, RFC 9162
//! proof verification, and the layout of stored subtree hashes.
//!
//! Everything here is pure: storage is reached through [`HashReader`].
//!
//! **Stored hashes.** The log stores every leaf hash and the hash of every
//! *complete* subtree (2^level leaves starting at a multiple of 2^level). They
//! are numbered densely in the order they become known: appending leaf `i`
//! writes its leaf hash, then the hashes of the subtrees it completes,
//! smallest first. The node `(level, n)` covering leaves
//! `[n·2^level, (n+1)·2^level)` therefore lives at
//! `2·last − popcount(last) + level`, with `last = (n+1)·2^level − 1` its last
//! leaf, and a tree of `size` leaves has `2·size − popcount(size)` stored
//! hashes. Any range of leaves that occurs in a root or proof decomposes into
//! at most 64 complete subtrees, so roots and proofs cost O(log n) reads.

use crate::hash::{HASH_SIZE, Hash, empty_root, node_hash};
use crate::{Error, Result};

/// A complete subtree: `2^level` leaves starting at leaf `index << level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    /// Height above the leaves (0 = a leaf).
    pub level: u8,
    /// Position among the nodes of that level.
    pub index: u64,
}

impl Node {
    /// Where this node's hash is stored (see the module docs).
    pub fn stored_index(self) -> u64 {
        let last = ((self.index + 1) << self.level) - 1;
        stored_leaf_index(last) + u64::from(self.level)
    }

    /// Inverse of [`Node::stored_index`].
    pub fn from_stored_index(id: u64) -> Node {
        // stored_leaf_index is strictly increasing; find the last leaf whose
        // block of stored hashes contains `id`.
        let (mut lo, mut hi) = (id / 2, id.saturating_add(1).min(u64::MAX / 2));
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if stored_leaf_index(mid) <= id {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let level = (id - stored_leaf_index(lo)) as u8;
        Node {
            level,
            index: ((lo + 1) >> level) - 1,
        }
    }

    /// "leaf hash" or "hash of node (level L, index N)", for messages.
    pub fn describe(self) -> String {
        if self.level == 0 {
            "leaf hash".to_owned()
        } else {
            format!("hash of node (level {}, index {})", self.level, self.index)
        }
    }

    /// The first leaf covered.
    pub fn first_leaf(self) -> u64 {
        self.index << self.level
    }
}

fn stored_leaf_index(leaf: u64) -> u64 {
    2 * leaf - u64::from(leaf.count_ones())
}

/// Number of stored hashes in a tree of `size` leaves.
pub fn stored_hash_count(size: u64) -> u64 {
    2 * size - u64::from(size.count_ones())
}

/// Reads stored hashes by their stored index.
pub trait HashReader {
    /// Returns the hashes at `indexes`, in the same order.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>>;
}

/// Largest power of two strictly less than `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The complete subtrees that make up leaves `[lo, hi)`, left to right, as
/// they appear in RFC 6962's recursive split (largest first).
pub fn range_nodes(mut lo: u64, hi: u64) -> Vec<Node> {
    let mut nodes = Vec::new();
    while lo < hi {
        // Largest aligned power of two that starts at lo and fits.
        let fit = 63 - (hi - lo).leading_zeros();
        let align = if lo == 0 { 63 } else { lo.trailing_zeros() };
        let level = fit.min(align);
        nodes.push(Node {
            level: level as u8,
            index: lo >> level,
        });
        lo += 1 << level;
    }
    nodes
}

/// Hash of a leaf range given the hashes of its [`range_nodes`], in order.
fn fold_range(hashes: &[Hash]) -> Hash {
    let (last, rest) = hashes.split_last().expect("a non-empty range has nodes");
    rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc))
}

/// A proof is a list of leaf ranges whose hashes the verifier needs.
type Ranges = Vec<(u64, u64)>;

/// RFC 6962 §2.1.1 PATH(m, D[lo:hi]) as leaf ranges, leaf to root.
fn inclusion_ranges(m: u64, lo: u64, hi: u64, out: &mut Ranges) {
    if hi - lo <= 1 {
        return;
    }
    let k = split_point(hi - lo);
    if m < lo + k {
        inclusion_ranges(m, lo, lo + k, out);
        out.push((lo + k, hi));
    } else {
        inclusion_ranges(m, lo + k, hi, out);
        out.push((lo, lo + k));
    }
}

/// RFC 6962 §2.1.2 SUBPROOF(m, D[lo:hi], b) as leaf ranges.
fn consistency_ranges(m: u64, lo: u64, hi: u64, whole_old_tree: bool, out: &mut Ranges) {
    if m == hi {
        if !whole_old_tree {
            out.push((lo, hi));
        }
        return;
    }
    let k = split_point(hi - lo);
    if m <= lo + k {
        consistency_ranges(m, lo, lo + k, whole_old_tree, out);
        out.push((lo + k, hi));
    } else {
        consistency_ranges(m, lo + k, hi, false, out);
        out.push((lo, lo + k));
    }
}

/// Reads the hashes of several leaf ranges with one batched read.
fn range_hashes(ranges: &[(u64, u64)], reader: &impl HashReader) -> Result<Vec<Hash>> {
    let per_range: Vec<Vec<Node>> = ranges.iter().map(|&(lo, hi)| range_nodes(lo, hi)).collect();
    let indexes: Vec<u64> = per_range
        .iter()
        .flatten()
        .map(|n| n.stored_index())
        .collect();
    let hashes = reader.read_hashes(&indexes)?;
    let mut at = 0;
    Ok(per_range
        .iter()
        .map(|nodes| {
            let h = fold_range(&hashes[at..at + nodes.len()]);
            at += nodes.len();
            h
        })
        .collect())
}

/// Root hash of the first `size` leaves.
pub fn tree_root(size: u64, reader: &impl HashReader) -> Result<Hash> {
    if size == 0 {
        return Ok(empty_root());
    }
    Ok(range_hashes(&[(0, size)], reader)?[0])
}

/// Inclusion proof (audit path) for leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof(index: u64, size: u64, reader: &impl HashReader) -> Result<Vec<Hash>> {
    if index >= size {
        return Err(Error::IndexOutOfRange { index, size });
    }
    let mut ranges = Vec::new();
    inclusion_ranges(index, 0, size, &mut ranges);
    range_hashes(&ranges, reader)
}

/// Consistency proof from the tree of `old_size` leaves to the tree of `new_size`.
pub fn consistency_proof(
    old_size: u64,
    new_size: u64,
    reader: &impl HashReader,
) -> Result<Vec<Hash>> {
    if old_size == 0 || old_size > new_size {
        return Err(Error::InvalidProof(format!(
            "a consistency proof needs 0 < old size ≤ new size, got {old_size} and {new_size}"
        )));
    }
    if old_size == new_size {
        return Ok(Vec::new());
    }
    let mut ranges = Vec::new();
    consistency_ranges(old_size, 0, new_size, true, &mut ranges);
    range_hashes(&ranges, reader)
}

fn as_hash(bytes: &[u8], what: &str) -> Result<Hash> {
    Hash::from_slice(bytes).ok_or_else(|| {
        Error::InvalidProof(format!(
            "{what} has {} bytes, a SHA-256 hash has {HASH_SIZE}",
            bytes.len()
        ))
    })
}

fn proof_hashes<P: AsRef<[u8]>>(proof: &[P]) -> Result<Vec<Hash>> {
    proof
        .iter()
        .enumerate()
        .map(|(i, p)| as_hash(p.as_ref(), &format!("proof element {i}")))
        .collect()
}

/// Shifts `fnode` and `snode` right together until the low bit of `fnode`
/// is set or it reaches zero (the "right-shift equally" step of RFC 9162).
fn shift_to_set_bit(fnode: &mut u64, snode: &mut u64) {
    while *fnode & 1 == 0 && *fnode != 0 {
        *fnode >>= 1;
        *snode >>= 1;
    }
}

/// Root implied by an inclusion proof (RFC 9162 §2.1.3.2).
pub fn root_from_inclusion<P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[P],
) -> Result<Hash> {
    if index >= size {
        return Err(Error::ProofFailed(format!(
            "index {index} is not below tree size {size}"
        )));
    }
    let mut r = as_hash(leaf, "leaf hash")?;
    let proof = proof_hashes(proof)?;
    let (mut fnode, mut snode) = (index, size - 1);
    for p in &proof {
        if snode == 0 {
            return Err(Error::ProofFailed(format!(
                "proof has {} hashes, more than a tree of size {size} needs",
                proof.len()
            )));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            shift_to_set_bit(&mut fnode, &mut snode);
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(Error::ProofFailed(format!(
            "proof has {} hashes, fewer than a tree of size {size} needs",
            proof.len()
        )));
    }
    Ok(r)
}

/// Verifies an inclusion proof of `leaf` (a leaf hash) at `index` in the tree
/// of `size` leaves with root `root`.
pub fn verify_inclusion<P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[P],
    root: &[u8],
) -> Result<()> {
    let computed = root_from_inclusion(index, size, leaf, proof)?;
    if computed.0 != root {
        return Err(Error::ProofFailed(format!(
            "inclusion proof for index {index} leads to root {computed}, not the expected root"
        )));
    }
    Ok(())
}

/// Verifies a consistency proof between the tree of `old_size` leaves with
/// root `old_root` and the tree of `new_size` leaves with root `new_root`
/// (RFC 9162 §2.1.4.2). Requires `0 < old_size ≤ new_size`; callers that
/// hold an empty old tree need no proof.
pub fn verify_consistency<P: AsRef<[u8]>>(
    old_size: u64,
    new_size: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof: &[P],
) -> Result<()> {
    if new_size < old_size {
        return Err(Error::ProofFailed(format!(
            "new tree size {new_size} is smaller than old tree size {old_size}"
        )));
    }
    if old_size == 0 {
        return Err(Error::ProofFailed(
            "a consistency proof from the empty tree proves nothing; compare the old root with SHA-256(\"\") instead".into(),
        ));
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(Error::ProofFailed(
                "equal tree sizes need an empty proof".into(),
            ));
        }
        if old_root != new_root {
            return Err(Error::ProofFailed(format!(
                "two trees of size {old_size} have different roots"
            )));
        }
        return Ok(());
    }
    if proof.is_empty() {
        return Err(Error::ProofFailed(
            "empty consistency proof for different sizes".into(),
        ));
    }
    let old = as_hash(old_root, "old root")?;
    let mut path = proof_hashes(proof)?;
    if old_size.is_power_of_two() {
        path.insert(0, old);
    }
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(Error::ProofFailed(
                "consistency proof is longer than needed".into(),
            ));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            shift_to_set_bit(&mut fnode, &mut snode);
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(Error::ProofFailed(
            "consistency proof is shorter than needed".into(),
        ));
    }
    if fr.0 != old_root {
        return Err(Error::ProofFailed(format!(
            "consistency proof does not lead to the old root (got {fr})"
        )));
    }
    if sr.0 != new_root {
        return Err(Error::ProofFailed(format!(
            "consistency proof does not lead to the new root (got {sr})"
        )));
    }
    Ok(())
}

/// The right edge of a growing tree: the hashes of [`range_nodes`]`(0, size)`.
///
/// Appending a leaf needs only these hashes, so a writer keeps the frontier
/// in memory and never reads the tree back; a verifier replays a whole log
/// through it to recompute every stored hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Loads the frontier of a stored tree of `size` leaves.
    pub fn load(size: u64, reader: &impl HashReader) -> Result<Frontier> {
        let indexes: Vec<u64> = range_nodes(0, size)
            .iter()
            .map(|n| n.stored_index())
            .collect();
        Ok(Frontier {
            size,
            hashes: reader.read_hashes(&indexes)?,
        })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root hash of the current tree.
    pub fn root(&self) -> Hash {
        if self.hashes.is_empty() {
            empty_root()
        } else {
            fold_range(&self.hashes)
        }
    }

    /// Appends a leaf hash and returns the stored hashes it creates, in stored
    /// order: the leaf hash, then each subtree it completes. They go at stored
    /// indexes starting at `Node { level: 0, index: old size }.stored_index()`.
    pub fn push(&mut self, leaf: Hash) -> Vec<Hash> {
        let mut created = vec![leaf];
        let mut h = leaf;
        for _ in 0..self.size.trailing_ones() {
            let left = self
                .hashes
                .pop()
                .expect("frontier holds every completed left sibling");
            h = node_hash(&left, &h);
            created.push(h);
        }
        self.hashes.push(h);
        self.size += 1;
        created
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use proptest::prelude::*;

    /// Stored hashes in a Vec, built by the frontier.
    struct MemTree(Vec<Hash>);
    impl HashReader for MemTree {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>> {
            Ok(indexes.iter().map(|&i| self.0[i as usize]).collect())
        }
    }

    fn build(n: u64) -> (Vec<Hash>, MemTree, Frontier) {
        let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut f = Frontier::new();
        let mut stored = Vec::new();
        for l in &leaves {
            stored.extend(f.push(*l));
        }
        (leaves, MemTree(stored), f)
    }

    /// RFC 6962 MTH straight from the definition.
    fn naive_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn stored_index_layout() {
        // Leaves 0,1 then node(1,0); leaf 2; leaf 3, node(1,1), node(2,0).
        let order = [
            (0, 0),
            (0, 1),
            (1, 0),
            (0, 2),
            (0, 3),
            (1, 1),
            (2, 0),
            (0, 4),
        ];
        for (i, &(level, index)) in order.iter().enumerate() {
            let node = Node { level, index };
            assert_eq!(node.stored_index(), i as u64, "{node:?}");
            assert_eq!(Node::from_stored_index(i as u64), node);
        }
        assert_eq!(stored_hash_count(4), 7);
    }

    #[test]
    fn range_nodes_are_aligned() {
        assert_eq!(
            range_nodes(0, 7),
            vec![
                Node { level: 2, index: 0 },
                Node { level: 1, index: 2 },
                Node { level: 0, index: 6 }
            ]
        );
        assert_eq!(range_nodes(6, 8), vec![Node { level: 1, index: 3 }]);
    }

    proptest! {
        #[test]
        fn stored_index_round_trips(id in 0u64..(1 << 40)) {
            let node = Node::from_stored_index(id);
            prop_assert_eq!(node.stored_index(), id);
        }

        #[test]
        fn roots_and_proofs_match_the_definition(n in 1u64..300, seed in any::<u64>()) {
            let (leaves, tree, frontier) = build(n);
            prop_assert_eq!(tree.0.len() as u64, stored_hash_count(n));
            for size in [1, n / 2 + 1, n] {
                let root = naive_root(&leaves[..size as usize]);
                prop_assert_eq!(tree_root(size, &tree).unwrap(), root);
                let index = seed % size;
                let proof = inclusion_proof(index, size, &tree).unwrap();
                prop_assert!(verify_inclusion(index, size, &leaves[index as usize].0, &proof, &root.0).is_ok());
                let old = 1 + seed % size;
                let old_root = naive_root(&leaves[..old as usize]);
                let cproof = consistency_proof(old, size, &tree).unwrap();
                prop_assert!(verify_consistency(old, size, &old_root.0, &root.0, &cproof).is_ok());
                if size > 1 {
                    let wrong = (index + 1) % size;
                    prop_assert!(verify_inclusion(wrong, size, &leaves[index as usize].0, &proof, &root.0).is_err());
                }
            }
            prop_assert_eq!(frontier.root(), naive_root(&leaves));
        }
    }

    #[test]
    fn out_of_range_requests_are_errors() {
        let (_, tree, _) = build(5);
        assert!(matches!(
            inclusion_proof(5, 5, &tree),
            Err(Error::IndexOutOfRange { .. })
        ));
        assert!(consistency_proof(0, 5, &tree).is_err());
        assert!(consistency_proof(6, 5, &tree).is_err());
        assert_eq!(tree_root(0, &tree).unwrap(), empty_root());
    }
}
