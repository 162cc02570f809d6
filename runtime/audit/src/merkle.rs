//! RFC 9162 §2.1 Merkle trees: leaf and node hashing, tree heads for any size, inclusion and
//! consistency proofs, and their verification.
//!
//! Pure: no IO. Proof generation and verification are checked against the transparency-dev
//! reference vectors and against each other for random sizes.

use sha2::{Digest as _, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Why a proof was refused or could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Index or sizes outside the tree.
    #[error("{0}")]
    OutOfRange(String),
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has {got} hashes; sizes {sizes} need {want}")]
    WrongLength {
        /// Hashes given.
        got: usize,
        /// Hashes expected.
        want: usize,
        /// The sizes, for the message.
        sizes: String,
    },
    /// The proof does not lead to the expected root.
    #[error("proof does not reproduce the {which} root hash")]
    RootMismatch {
        /// Which root ("tree", "old", "new").
        which: &'static str,
    },
}

/// Largest power of two strictly smaller than `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// An in-memory tree over leaf hashes that keeps every complete aligned subtree, so any
/// subtree hash costs O(log n) and proofs O(log² n).
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let n = self.levels[level].len();
            let parent = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first()?.get(usize::try_from(index).ok()?).copied()
    }

    /// Hash of the leaves `[start, end)` as RFC 9162's MTH; `start < end <= len`.
    fn subtree(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            return self.levels[level][(start >> level) as usize];
        }
        let k = split_point(n);
        node_hash(&self.subtree(start, start + k), &self.subtree(start + k, end))
    }

    /// The tree head of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.len() {
            return Err(ProofError::OutOfRange(format!("tree size {size} exceeds the log's {}", self.len())));
        }
        Ok(if size == 0 { empty_root() } else { self.subtree(0, size) })
    }

    /// The tree head of all leaves.
    pub fn root(&self) -> Hash {
        self.root_at(self.len()).unwrap_or_else(|_| empty_root())
    }

    /// RFC 9162 `PATH(index, D[0:size])`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if size > self.len() || index >= size {
            return Err(ProofError::OutOfRange(format!(
                "no leaf {index} in a tree of size {size} (log has {})",
                self.len()
            )));
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split_point(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.subtree(start, start + k));
        }
    }

    /// RFC 9162 `PROOF(old, D[0:new])`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        if new > self.len() || old > new {
            return Err(ProofError::OutOfRange(format!(
                "no consistency proof from {old} to {new} (log has {})",
                self.len()
            )));
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(self.subtree(start, end));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, start, start + k, complete, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.subtree(start, start + k));
        }
    }
}

/// Computes a tree head from leaf hashes in one pass (what an offline verifier does).
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    let mut stack: Vec<(u32, Hash)> = Vec::with_capacity(64);
    for leaf in leaves {
        let mut node = (0u32, *leaf);
        while let Some(&(height, ref left)) = stack.last() {
            if height != node.0 {
                break;
            }
            node = (height + 1, node_hash(left, &node.1));
            stack.pop();
        }
        stack.push(node);
    }
    let Some(&(_, mut acc)) = stack.last() else { return empty_root() };
    for (_, left) in stack.iter().rev().skip(1) {
        acc = node_hash(left, &acc);
    }
    acc
}

/// RFC 9162 §2.1.3.2: verifies that `leaf` is at `index` in the tree of `size` with `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange(format!("leaf index {index} is not below tree size {size}")));
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: 0,
                sizes: format!("index {index}, size {size}"),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: proof.len() + 1,
            sizes: format!("index {index}, size {size}"),
        });
    }
    if &r != root {
        return Err(ProofError::RootMismatch { which: "tree" });
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: verifies that the tree `(old, old_root)` is a prefix of `(new, new_root)`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    let sizes = || format!("{old} → {new}");
    if old > new {
        return Err(ProofError::OutOfRange(format!("old size {old} is larger than new size {new}")));
    }
    if old == new || old == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { got: proof.len(), want: 0, sizes: sizes() });
        }
        if old == new && old_root != new_root {
            return Err(ProofError::RootMismatch { which: "new" });
        }
        if old == 0 && old_root != &empty_root() {
            return Err(ProofError::RootMismatch { which: "old" });
        }
        return Ok(());
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength { got: 0, want: 1, sizes: sizes() });
    };
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength { got: proof.len(), want: proof.len() - 1, sizes: sizes() });
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength { got: proof.len(), want: proof.len() + 1, sizes: sizes() });
    }
    if &f_r != old_root {
        return Err(ProofError::RootMismatch { which: "old" });
    }
    if &s_r != new_root {
        return Err(ProofError::RootMismatch { which: "new" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Reference vectors from transparency-dev/merkle `testonly` (RFC 6962 leaf inputs, roots
    // for every size 0..=8, and reference inclusion/consistency proofs).
    const LEAVES: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    const INCLUSION: [(u64, u64, &[&str]); 6] = [
        (0, 1, &[]),
        (0, 2, &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"]),
        (1, 2, &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"]),
        (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    const CONSISTENCY: [(u64, u64, &[&str]); 4] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    fn reference_tree() -> MerkleTree {
        let mut t = MerkleTree::new();
        for l in LEAVES {
            t.push(leaf_hash(&hex::decode(l).unwrap()));
        }
        t
    }

    #[test]
    fn roots_match_reference_vectors() {
        let t = reference_tree();
        for (size, root) in ROOTS.iter().enumerate() {
            assert_eq!(t.root_at(size as u64).unwrap(), h(root), "size {size}");
            let leaves: Vec<Hash> = (0..size as u64).map(|i| t.leaf(i).unwrap()).collect();
            assert_eq!(root_from_leaves(&leaves), h(root), "one-pass root, size {size}");
        }
    }

    #[test]
    fn inclusion_proofs_match_reference_vectors() {
        let t = reference_tree();
        for (index, size, want) in INCLUSION {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(t.inclusion_proof(index, size).unwrap(), want, "{index}:{size}");
            verify_inclusion(&t.leaf(index).unwrap(), index, size, &want, &h(ROOTS[size as usize])).unwrap();
        }
    }

    #[test]
    fn consistency_proofs_match_reference_vectors() {
        let t = reference_tree();
        for (old, new, want) in CONSISTENCY {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(t.consistency_proof(old, new).unwrap(), want, "{old}:{new}");
            verify_consistency(old, new, &h(ROOTS[old as usize]), &h(ROOTS[new as usize]), &want).unwrap();
        }
    }

    fn tree(n: u64) -> MerkleTree {
        let mut t = MerkleTree::new();
        for i in 0..n {
            t.push(leaf_hash(&i.to_be_bytes()));
        }
        t
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_inclusion_proof_verifies_and_tampering_fails(size in 1u64..300, seed in any::<u64>(), bit in 0usize..256) {
            let t = tree(size);
            let index = seed % size;
            let root = t.root();
            let proof = t.inclusion_proof(index, size).unwrap();
            let leaf = t.leaf(index).unwrap();
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_ok());
            // Another leaf, index, or a flipped bit in the proof fails.
            prop_assert!(verify_inclusion(&leaf_hash(b"other"), index, size, &proof, &root).is_err());
            if size > 1 {
                prop_assert!(verify_inclusion(&leaf, (index + 1) % size, size, &proof, &root).is_err());
            }
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let i = (seed as usize) % bad.len();
                bad[i][bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_tampering_fails(new in 1u64..300, seed in any::<u64>(), bit in 0usize..256) {
            let t = tree(new);
            let old = seed % (new + 1);
            let proof = t.consistency_proof(old, new).unwrap();
            let (old_root, new_root) = (t.root_at(old).unwrap(), t.root());
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &proof).is_ok());
            if old > 0 && old < new {
                let mut bad = proof.clone();
                let i = (seed as usize) % bad.len();
                bad[i][bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(old, new, &old_root, &new_root, &bad).is_err());
                prop_assert!(verify_consistency(old, new, &leaf_hash(b"x"), &new_root, &proof).is_err());
                let mut forked = tree(new);
                forked.push(leaf_hash(b"fork"));
                prop_assert!(verify_consistency(old, new, &old_root, &forked.root(), &proof).is_err());
            }
        }

        #[test]
        fn any_single_leaf_change_changes_the_root(size in 1u64..200, seed in any::<u64>()) {
            let t = tree(size);
            let index = seed % size;
            let mut leaves: Vec<Hash> = (0..size).map(|i| t.leaf(i).unwrap()).collect();
            leaves[index as usize] = leaf_hash(b"changed");
            prop_assert_ne!(root_from_leaves(&leaves), t.root());
        }
    }
}
