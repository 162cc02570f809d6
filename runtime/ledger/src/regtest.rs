//! Licence proofs on a regtest chain mined here, in memory (regtest's minimum difficulty takes a
//! few hashes a header): what the appliance's host tests and benchmarks import, with the same
//! bytes a regtest node and Electrum server would give (`electrum::check` writes the same
//! format). Nothing in the appliance calls it: a node only verifies.

use bitcoin::block::{Header, Version};
use bitcoin::consensus::encode::serialize;
use bitcoin::hashes::Hash as _;
use bitcoin::{
    Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Witness, absolute,
    transaction,
};

use crate::licence::{Terms, commitment};
use crate::proof::LicenceProof;

/// A transaction paying `paid` to the terms' script with the OP_RETURN commitment to
/// `machine_id`.
pub fn licence_transaction(terms: &Terms, paid: Amount, machine_id: &[u8]) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: bitcoin::Txid::from_byte_array([0x11; 32]), vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![
            TxOut { value: paid, script_pubkey: terms.script.clone() },
            TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::new_op_return(commitment(machine_id)) },
        ],
    }
}

fn mine(prev: &Header, merkle_root: TxMerkleNode) -> Header {
    let mut header = Header {
        version: Version::TWO,
        prev_blockhash: prev.block_hash(),
        merkle_root,
        time: prev.time + 600,
        bits: prev.bits,
        nonce: 0,
    };
    while header.validate_pow(header.target()).is_err() {
        header.nonce += 1;
    }
    header
}

/// A regtest chain from genesis whose first block holds `transaction` alone (its Merkle root is
/// the txid, the branch empty), with `on_top` more blocks, and the proof file of it.
pub fn proof_of(transaction: &Transaction, on_top: u32) -> LicenceProof {
    let genesis = bitcoin::constants::genesis_block(Network::Regtest).header;
    let txid = transaction.compute_txid();
    let mut chain = vec![mine(&genesis, TxMerkleNode::from_byte_array(txid.to_byte_array()))];
    for i in 0..on_top {
        let prev = chain[chain.len() - 1];
        chain.push(mine(&prev, TxMerkleNode::from_byte_array([i as u8; 32])));
    }
    LicenceProof {
        network: "regtest".into(),
        checkpoint_height: 0,
        headers: hex::encode(chain.iter().flat_map(serialize).collect::<Vec<u8>>()),
        block_height: 1,
        position: 0,
        branch: Vec::new(),
        transaction: hex::encode(serialize(transaction)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mined_proof_verifies_for_its_machine_only() {
        let rule = crate::rule::parse("regtest", 0, None, "0014d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3", 50_000, 3)
            .unwrap_or_else(|e| panic!("{e}"));
        let tx = licence_transaction(&rule.terms, Amount::from_sat(50_000), b"machine");
        let bytes = serde_json::to_vec(&proof_of(&tx, 2)).unwrap_or_default();
        let licence = rule.verify(&bytes, b"machine").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((licence.height, licence.confirmations), (1, 3));
        assert!(rule.verify(&bytes, b"another machine").is_err());
        let shallow = serde_json::to_vec(&proof_of(&tx, 1)).unwrap_or_default();
        assert!(rule.verify(&shallow, b"machine").unwrap_err().to_string().contains("confirmations"));
    }
}
