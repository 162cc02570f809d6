//! Header chains: each header links to the one before, carries the target the network's
//! difficulty rules demand at its height, and has a hash at or below that target (which is at
//! or below the network's limit); the chain's work is the sum of its headers' work.
//!
//! A chain is verified from a checkpoint the release pins: a header at a difficulty-epoch
//! boundary (height a multiple of 2016), so the first retarget after it has its epoch's first
//! header. Networks: mainnet and signet (retarget every 2016 blocks, factor-of-4 clamp, no
//! minimum-difficulty exception) and regtest (no retargeting). Testnet3's 20-minute rule is not
//! modelled: that network is refused.

use bitcoin::block::Header;
use bitcoin::consensus::Decodable as _;
use bitcoin::hashes::Hash as _;
use bitcoin::pow::{CompactTarget, Target, Work};
use bitcoin::{BlockHash, Network};

/// Blocks per difficulty epoch.
pub const EPOCH: u32 = 2016;

/// A pinned starting point: a header the release trusts, at an epoch boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its height (a multiple of [`EPOCH`]).
    pub height: u32,
    /// The header.
    pub header: Header,
}

/// The verified tip of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    /// Height of the last header.
    pub height: u32,
    /// Its hash.
    pub hash: BlockHash,
    /// Work of the headers after the checkpoint.
    pub work: Work,
}

/// Why a chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The network's rules are not modelled.
    #[error("network {0} is not supported (mainnet, signet, regtest)")]
    Network(Network),
    /// The checkpoint is not at an epoch boundary (or is itself invalid).
    #[error("checkpoint at height {0}: {1}")]
    Checkpoint(u32, String),
    /// Bytes that are not 80-byte headers.
    #[error("header {index}: {why}")]
    Malformed {
        /// Position in the chain (0: the first after the checkpoint).
        index: usize,
        /// The decoder's complaint.
        why: String,
    },
    /// A header does not name the one before it.
    #[error("header at height {height} does not link to the header before it")]
    Unlinked {
        /// Its height.
        height: u32,
    },
    /// A header's target is not the one the difficulty rules demand.
    #[error("header at height {height} has target bits {got:#010x}, the difficulty rules demand {expected:#010x}")]
    WrongTarget {
        /// Its height.
        height: u32,
        /// Its bits.
        got: u32,
        /// The rules' bits.
        expected: u32,
    },
    /// A target above the network's limit.
    #[error("header at height {height} has a target above the network's proof-of-work limit")]
    AboveLimit {
        /// Its height.
        height: u32,
    },
    /// Its hash is above its target.
    #[error("header at height {height} has too little proof of work (hash above its target)")]
    BadProofOfWork {
        /// Its height.
        height: u32,
    },
    /// Too many headers to count heights in 32 bits.
    #[error("the chain is longer than heights can count")]
    TooLong,
}

/// Decodes consecutive 80-byte headers.
pub fn decode_headers(bytes: &[u8]) -> Result<Vec<Header>, ChainError> {
    if !bytes.len().is_multiple_of(80) {
        return Err(ChainError::Malformed {
            index: bytes.len() / 80,
            why: format!("{} trailing bytes (headers are 80 bytes)", bytes.len() % 80),
        });
    }
    bytes
        .chunks_exact(80)
        .enumerate()
        .map(|(index, mut chunk)| {
            Header::consensus_decode(&mut chunk).map_err(|e| ChainError::Malformed { index, why: e.to_string() })
        })
        .collect()
}

fn params(network: Network) -> Result<bitcoin::params::Params, ChainError> {
    match network {
        Network::Bitcoin | Network::Signet | Network::Regtest => Ok(bitcoin::params::Params::new(network)),
        other => Err(ChainError::Network(other)),
    }
}

/// The proof of work of one header at `height`: its target within the limit, its hash within
/// its target.
fn check_work(header: &Header, hash: BlockHash, height: u32, limit: Target) -> Result<(), ChainError> {
    let target = Target::from_compact(header.bits);
    if target > limit {
        return Err(ChainError::AboveLimit { height });
    }
    if Target::from_le_bytes(hash.to_byte_array()) > target {
        return Err(ChainError::BadProofOfWork { height });
    }
    Ok(())
}

/// Checks one header's proof of work on `network` (a header proven on its own, e.g. a block
/// whose chain is verified elsewhere): its target within the network's limit, its hash within
/// its target.
pub fn verify_header_work(network: Network, header: &Header, height: u32) -> Result<(), ChainError> {
    check_work(header, header.block_hash(), height, params(network)?.max_attainable_target)
}

/// Verifies `headers` as the chain that follows `checkpoint` on `network`.
pub fn verify_chain(network: Network, checkpoint: &Checkpoint, headers: &[Header]) -> Result<Tip, ChainError> {
    verify_chain_with(&params(network)?, checkpoint, headers)
}

/// [`verify_chain`] under explicit consensus parameters (tests use regtest's with retargeting
/// switched on, to cross epochs at a difficulty a test can mine).
pub fn verify_chain_with(
    params: &bitcoin::params::Params,
    checkpoint: &Checkpoint,
    headers: &[Header],
) -> Result<Tip, ChainError> {
    let limit = params.max_attainable_target;
    if !checkpoint.height.is_multiple_of(EPOCH) {
        return Err(ChainError::Checkpoint(checkpoint.height, format!("not a multiple of {EPOCH}")));
    }
    check_work(&checkpoint.header, checkpoint.header.block_hash(), checkpoint.height, limit)
        .map_err(|e| ChainError::Checkpoint(checkpoint.height, e.to_string()))?;
    let mut previous = checkpoint.header;
    let mut previous_hash = previous.block_hash();
    let mut epoch_start = checkpoint.header;
    let mut work = Work::from_be_bytes([0; 32]);
    let mut height = checkpoint.height;
    for header in headers {
        height = height.checked_add(1).ok_or(ChainError::TooLong)?;
        if header.prev_blockhash != previous_hash {
            return Err(ChainError::Unlinked { height });
        }
        let expected = if params.no_pow_retargeting {
            previous.bits
        } else if height.is_multiple_of(EPOCH) {
            CompactTarget::from_header_difficulty_adjustment(epoch_start, previous, params)
        } else {
            previous.bits
        };
        if header.bits != expected {
            return Err(ChainError::WrongTarget {
                height,
                got: header.bits.to_consensus(),
                expected: expected.to_consensus(),
            });
        }
        // One hash per header: its proof of work now, the next header's link after.
        let hash = header.block_hash();
        check_work(header, hash, height, limit)?;
        if height.is_multiple_of(EPOCH) {
            epoch_start = *header;
        }
        work = work + header.work();
        previous = *header;
        previous_hash = hash;
    }
    Ok(Tip { height, hash: previous_hash, work })
}
