//! Licence proofs for appliances with no network: everything needed to check a licence offline
//! in one file — the header chain from a checkpoint the release pins to a tip at least the
//! required depth above the licence's block, the Merkle branch of the licence transaction in
//! that block, and the transaction. Verified with [`verify`]: the chain ([`crate::chain`]), the
//! block's place in it, the branch to its Merkle root, the confirmation depth, the licence rule.
//!
//! The file is JSON (hex for bytes), at most [`MAX_PROOF_BYTES`].

use bitcoin::consensus::Decodable as _;
use bitcoin::hashes::Hash as _;
use bitcoin::{Network, Transaction, TxMerkleNode, Txid};
use serde::{Deserialize, Serialize};

use crate::chain::{ChainError, Checkpoint, decode_headers, verify_chain};
use crate::licence::{LicenceError, Terms, check};
use crate::merkle::{BranchError, verify_branch};

/// The largest proof file taken: a header chain of about 200,000 headers after the pinned
/// checkpoint (160 hex digits each: some four years of blocks, so a release's checkpoint stays
/// usable for that long) and a large transaction. Verified in well under a second.
pub const MAX_PROOF_BYTES: usize = 32 * 1024 * 1024;

/// The proof file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenceProof {
    /// `"bitcoin"`, `"signet"` or `"regtest"`.
    pub network: String,
    /// Height of the checkpoint the chain starts after (the release pins its header).
    pub checkpoint_height: u32,
    /// The headers after the checkpoint, concatenated (hex).
    pub headers: String,
    /// Height of the block that holds the transaction.
    pub block_height: u32,
    /// The transaction's position in that block.
    pub position: u32,
    /// Its Merkle branch, leaf to root (hex, internal byte order).
    pub branch: Vec<String>,
    /// The transaction (consensus encoding, hex).
    pub transaction: String,
}

/// A licence the proof established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Licence {
    /// The licence transaction.
    pub txid: Txid,
    /// The block height it was mined at.
    pub height: u32,
    /// Blocks on top of it, its own included.
    pub confirmations: u32,
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Too large.
    #[error("the proof is {0} bytes, more than {MAX_PROOF_BYTES}")]
    TooLarge(usize),
    /// Not a proof file.
    #[error("not a proof file: {0}")]
    Malformed(String),
    /// For another network than the node's.
    #[error("the proof is for {proof}, this node checks {node}")]
    Network {
        /// The proof's.
        proof: String,
        /// The node's.
        node: Network,
    },
    /// Starts after another checkpoint than the pinned one.
    #[error("the proof starts after height {proof}, the pinned checkpoint is at {pinned}")]
    Checkpoint {
        /// The proof's.
        proof: u32,
        /// The pinned one's.
        pinned: u32,
    },
    /// The header chain is refused.
    #[error("header chain: {0}")]
    Chain(#[from] ChainError),
    /// The block is not in the chain.
    #[error("block height {block} is not in the proof's chain ({first}..={tip})")]
    NotInChain {
        /// The claimed height.
        block: u32,
        /// The chain's first height.
        first: u32,
        /// Its tip.
        tip: u32,
    },
    /// Not buried deep enough.
    #[error("{confirmations} confirmations, {needed} needed")]
    TooShallow {
        /// Confirmations the chain shows.
        confirmations: u32,
        /// Required.
        needed: u32,
    },
    /// The branch does not lead to the block's root.
    #[error("merkle branch: {0}")]
    Branch(#[from] BranchError),
    /// The transaction is not a licence for this machine.
    #[error("licence rule: {0}")]
    Rule(#[from] LicenceError),
    /// The transaction does not carry the anchor's commitment.
    #[error("anchor: {0}")]
    Anchor(String),
}

/// A transaction the proof shows in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Included {
    /// The transaction.
    pub transaction: Transaction,
    /// Its ID.
    pub txid: Txid,
    /// The block height it was mined at.
    pub height: u32,
    /// Blocks on top of it, its own included.
    pub confirmations: u32,
}

fn hex_bytes(what: &str, text: &str) -> Result<Vec<u8>, ProofError> {
    hex::decode(text).map_err(|e| ProofError::Malformed(format!("{what}: {e}")))
}

fn network_of(name: &str) -> Option<Network> {
    match name {
        "bitcoin" => Some(Network::Bitcoin),
        "signet" => Some(Network::Signet),
        "regtest" => Some(Network::Regtest),
        _ => None,
    }
}

/// Verifies a proof file against the node's network, the checkpoint its release pins, the
/// licence terms, this machine's ID and the confirmation depth required.
pub fn verify(
    bytes: &[u8],
    network: Network,
    checkpoint: &Checkpoint,
    terms: &Terms,
    machine_id: &[u8],
    min_confirmations: u32,
) -> Result<Licence, ProofError> {
    let included = verify_inclusion(bytes, network, checkpoint, min_confirmations)?;
    check(&included.transaction, terms, machine_id)?;
    Ok(Licence { txid: included.txid, height: included.height, confirmations: included.confirmations })
}

/// Verifies that a proof file shows its transaction in a chain from the pinned checkpoint at
/// least `min_confirmations` deep: network, checkpoint, every header, the block's place, depth,
/// the Merkle branch. What the transaction must be is the caller's rule (a licence, an anchor).
pub fn verify_inclusion(
    bytes: &[u8],
    network: Network,
    checkpoint: &Checkpoint,
    min_confirmations: u32,
) -> Result<Included, ProofError> {
    if bytes.len() > MAX_PROOF_BYTES {
        return Err(ProofError::TooLarge(bytes.len()));
    }
    let proof: LicenceProof = serde_json::from_slice(bytes).map_err(|e| ProofError::Malformed(e.to_string()))?;
    if network_of(&proof.network) != Some(network) {
        return Err(ProofError::Network { proof: proof.network, node: network });
    }
    if proof.checkpoint_height != checkpoint.height {
        return Err(ProofError::Checkpoint { proof: proof.checkpoint_height, pinned: checkpoint.height });
    }
    let headers = decode_headers(&hex_bytes("headers", &proof.headers)?)?;
    let tip = verify_chain(network, checkpoint, &headers)?;
    let first = checkpoint.height.saturating_add(1);
    if proof.block_height < first || proof.block_height > tip.height {
        return Err(ProofError::NotInChain { block: proof.block_height, first, tip: tip.height });
    }
    let block = headers.get((proof.block_height - first) as usize).ok_or(ProofError::NotInChain {
        block: proof.block_height,
        first,
        tip: tip.height,
    })?;
    let confirmations = tip.height - proof.block_height + 1;
    if confirmations < min_confirmations {
        return Err(ProofError::TooShallow { confirmations, needed: min_confirmations });
    }
    let tx_bytes = hex_bytes("transaction", &proof.transaction)?;
    let tx = Transaction::consensus_decode(&mut tx_bytes.as_slice())
        .map_err(|e| ProofError::Malformed(format!("transaction: {e}")))?;
    let branch = proof
        .branch
        .iter()
        .map(|h| {
            let bytes: [u8; 32] = hex_bytes("branch", h)?
                .try_into()
                .map_err(|_| ProofError::Malformed("branch: a node is not 32 bytes".into()))?;
            Ok(TxMerkleNode::from_byte_array(bytes))
        })
        .collect::<Result<Vec<_>, ProofError>>()?;
    let txid = tx.compute_txid();
    verify_branch(txid, proof.position, &branch, block.merkle_root)?;
    Ok(Included { transaction: tx, txid, height: proof.block_height, confirmations })
}
