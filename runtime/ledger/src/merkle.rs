//! Merkle branches: a transaction's inclusion in a block, from its txid, its position and the
//! sibling hashes to the header's Merkle root (Bitcoin's double-SHA-256 tree, the last node of
//! an odd level paired with itself).

use bitcoin::hashes::{Hash as _, sha256d};
use bitcoin::{TxMerkleNode, Txid};

/// Why a branch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BranchError {
    /// The position has bits beyond the branch's depth.
    #[error("position {position} is beyond a branch of depth {depth}")]
    Position {
        /// The position given.
        position: u32,
        /// The branch's length.
        depth: usize,
    },
    /// The branch leads elsewhere.
    #[error("the branch does not lead to the header's Merkle root")]
    WrongRoot,
}

/// The root a branch leads to.
pub fn root_of(txid: Txid, position: u32, branch: &[TxMerkleNode]) -> Result<TxMerkleNode, BranchError> {
    if branch.len() < 32 && position >> branch.len() != 0 {
        return Err(BranchError::Position { position, depth: branch.len() });
    }
    let mut node = txid.to_byte_array();
    for (level, sibling) in branch.iter().enumerate() {
        let mut pair = [0u8; 64];
        if (position >> level) & 1 == 0 {
            pair[..32].copy_from_slice(&node);
            pair[32..].copy_from_slice(sibling.as_byte_array());
        } else {
            pair[..32].copy_from_slice(sibling.as_byte_array());
            pair[32..].copy_from_slice(&node);
        }
        node = sha256d::Hash::hash(&pair).to_byte_array();
    }
    Ok(TxMerkleNode::from_byte_array(node))
}

/// Checks that `txid` at `position` is in the block whose Merkle root is `root`.
pub fn verify_branch(
    txid: Txid,
    position: u32,
    branch: &[TxMerkleNode],
    root: TxMerkleNode,
) -> Result<(), BranchError> {
    if root_of(txid, position, branch)? == root { Ok(()) } else { Err(BranchError::WrongRoot) }
}

/// The branch of the transaction at `position` among `txids` (what a full node or Electrum
/// server hands out; here for tests and for building proof files from a block).
pub fn branch_of(txids: &[Txid], position: usize) -> Vec<TxMerkleNode> {
    let mut level: Vec<[u8; 32]> = txids.iter().map(|t| t.to_byte_array()).collect();
    let mut index = position;
    let mut branch = Vec::new();
    while level.len() > 1 {
        if level.len() % 2 == 1
            && let Some(last) = level.last().copied()
        {
            level.push(last);
        }
        if let Some(sibling) = level.get(index ^ 1) {
            branch.push(TxMerkleNode::from_byte_array(*sibling));
        }
        level = level
            .chunks_exact(2)
            .map(|pair| {
                let mut both = [0u8; 64];
                both[..32].copy_from_slice(&pair[0]);
                both[32..].copy_from_slice(&pair[1]);
                sha256d::Hash::hash(&both).to_byte_array()
            })
            .collect();
        index /= 2;
    }
    branch
}
