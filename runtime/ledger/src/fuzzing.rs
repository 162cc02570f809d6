//! The fuzz target's entry point (`fuzz/fuzz_targets/ledger_headers.rs`): any bytes as a header
//! chain after regtest's genesis, as a Merkle branch, and as a licence proof, an anchor proof and an anchor file. The property: no input panics; a chain
//! that verifies has exactly as many headers as the bytes hold.

use bitcoin::hashes::Hash as _;
use bitcoin::{Network, TxMerkleNode, Txid};

use crate::chain::{Checkpoint, decode_headers, verify_chain};

/// Decodes and verifies `data` as headers, and as a branch (32-byte siblings) for a fixed txid.
pub fn headers(data: &[u8]) {
    if let Ok(headers) = decode_headers(data) {
        let genesis = bitcoin::constants::genesis_block(Network::Regtest).header;
        if let Ok(tip) = verify_chain(Network::Regtest, &Checkpoint { height: 0, header: genesis }, &headers) {
            assert_eq!(tip.height as usize, headers.len());
        }
    }
    let branch: Vec<TxMerkleNode> =
        data.chunks_exact(32).filter_map(|c| c.try_into().ok().map(TxMerkleNode::from_byte_array)).collect();
    let position = data.first().map(|b| u32::from(*b)).unwrap_or(0);
    let _ = crate::merkle::root_of(Txid::all_zeros(), position, &branch);
    let genesis = bitcoin::constants::genesis_block(Network::Regtest).header;
    let terms = crate::licence::Terms { script: bitcoin::ScriptBuf::new(), amount: bitcoin::Amount::ONE_SAT };
    let pinned = Checkpoint { height: 0, header: genesis };
    let _ = crate::proof::verify(data, Network::Regtest, &pinned, &terms, b"fuzz", 1);
    let _ = crate::anchor::verify(data, Network::Regtest, &pinned, &[0x5a; 32], 1);
    let _ = crate::anchor::verify_file(data, Network::Regtest, &pinned, 1);
}
