//! The SPV core against real mainnet data (block 702,861, `tests/data/SOURCE.md`) and against
//! chains these tests mine at regtest difficulty: each forgery fails by name. rust-bitcoin's
//! own header hash, PoW check and Merkle root are the independent implementation the results
//! are compared with.

#![allow(clippy::unwrap_used)] // test code

use sovereign_ledger::bitcoin::block::{Header, Version};
use sovereign_ledger::bitcoin::consensus::Decodable as _;
use sovereign_ledger::bitcoin::hashes::Hash as _;
use sovereign_ledger::bitcoin::pow::{CompactTarget, Target};
use sovereign_ledger::bitcoin::{
    Amount, Block, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Witness, absolute,
    transaction,
};
use sovereign_ledger::chain::{ChainError, Checkpoint, verify_chain, verify_chain_with, verify_header_work};
use sovereign_ledger::licence::{LicenceError, Terms, check, commitment};
use sovereign_ledger::merkle::{BranchError, branch_of, verify_branch};
use sovereign_ledger::proof::{self, LicenceProof, ProofError};

fn mainnet_block() -> Block {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mainnet_block_702861.raw")).unwrap();
    Block::consensus_decode(&mut bytes.as_slice()).unwrap()
}

#[test]
fn a_real_mainnet_header_has_its_proof_of_work_and_a_changed_one_does_not() {
    let block = mainnet_block();
    let header = block.header;
    assert_eq!(header.block_hash().to_string(), "000000000000000000000c835b2adcaedc20fdf6ee440009c249452c726dafae");
    assert_eq!(verify_header_work(Network::Bitcoin, &header, 702_861), Ok(()));
    assert!(header.validate_pow(header.target()).is_ok(), "rust-bitcoin disagrees");
    let mut forged = header;
    forged.nonce ^= 1;
    assert_eq!(
        verify_header_work(Network::Bitcoin, &forged, 702_861),
        Err(ChainError::BadProofOfWork { height: 702_861 })
    );
    // An easier target than the header's: the hash no longer matters, the limit does.
    let mut easy = header;
    easy.bits = CompactTarget::from_consensus(0x2100ffff);
    assert_eq!(verify_header_work(Network::Bitcoin, &easy, 702_861), Err(ChainError::AboveLimit { height: 702_861 }));
    assert!(verify_header_work(Network::Testnet, &header, 702_861).is_err(), "testnet's rules are not modelled");
}

#[test]
fn every_op_return_transaction_of_the_real_block_has_a_branch_to_its_root_and_forgeries_fail() {
    let block = mainnet_block();
    let txids: Vec<_> = block.txdata.iter().map(Transaction::compute_txid).collect();
    assert_eq!(txids.len(), 2500);
    assert_eq!(block.compute_merkle_root(), Some(block.header.merkle_root), "rust-bitcoin's root");
    let with_op_return: Vec<usize> = block
        .txdata
        .iter()
        .enumerate()
        .filter(|(_, tx)| tx.output.iter().any(|o| o.script_pubkey.is_op_return()))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(with_op_return.len(), 23);
    for &i in &with_op_return {
        let branch = branch_of(&txids, i);
        assert_eq!(branch.len(), 12); // ceil(log2(2500))
        assert_eq!(verify_branch(txids[i], i as u32, &branch, block.header.merkle_root), Ok(()), "tx {i}");
        // The same branch at another position, for another transaction, or with one sibling
        // changed, leads elsewhere.
        assert_eq!(
            verify_branch(txids[i], (i as u32) ^ 1, &branch, block.header.merkle_root),
            Err(BranchError::WrongRoot)
        );
        assert_eq!(
            verify_branch(txids[(i + 1) % 2500], i as u32, &branch, block.header.merkle_root),
            Err(BranchError::WrongRoot)
        );
        let mut bent = branch.clone();
        let mut sibling = bent[5].to_byte_array();
        sibling[0] ^= 1;
        bent[5] = TxMerkleNode::from_byte_array(sibling);
        assert_eq!(verify_branch(txids[i], i as u32, &bent, block.header.merkle_root), Err(BranchError::WrongRoot));
    }
    // A position beyond the branch's depth is refused before hashing.
    let branch = branch_of(&txids, 7);
    assert!(matches!(
        verify_branch(txids[7], 1 << 12, &branch, block.header.merkle_root),
        Err(BranchError::Position { .. })
    ));
}

fn regtest_genesis() -> Header {
    sovereign_ledger::bitcoin::constants::genesis_block(Network::Regtest).header
}

/// Mines a header on `prev` with `bits` at `time` (regtest difficulty: a few tries).
fn mine(prev: &Header, bits: CompactTarget, time: u32) -> Header {
    let mut h = Header {
        version: Version::TWO,
        prev_blockhash: prev.block_hash(),
        merkle_root: TxMerkleNode::from_byte_array([7; 32]),
        time,
        bits,
        nonce: 0,
    };
    while h.validate_pow(Target::from_compact(bits)).is_err() {
        h.nonce += 1;
    }
    h
}

fn mine_chain(n: usize, spacing: u32) -> Vec<Header> {
    let mut chain: Vec<Header> = Vec::with_capacity(n);
    let mut prev = regtest_genesis();
    for i in 0..n {
        let h = mine(&prev, prev.bits, prev.time + spacing + (i as u32 % 2));
        chain.push(h);
        prev = h;
    }
    chain
}

#[test]
fn a_mined_chain_verifies_and_each_forgery_fails_by_name() {
    let checkpoint = Checkpoint { height: 0, header: regtest_genesis() };
    let chain = mine_chain(300, 600);
    let tip = verify_chain(Network::Regtest, &checkpoint, &chain).unwrap();
    assert_eq!((tip.height, tip.hash), (300, chain[299].block_hash()));
    assert!(tip.work > verify_chain(Network::Regtest, &checkpoint, &chain[..100]).unwrap().work);

    let mut unlinked = chain.clone();
    unlinked.remove(150);
    assert_eq!(verify_chain(Network::Regtest, &checkpoint, &unlinked), Err(ChainError::Unlinked { height: 151 }));
    let mut retargeted = chain.clone();
    retargeted[10] = mine(&chain[9], CompactTarget::from_consensus(0x1f7fffff), chain[9].time + 600);
    assert!(matches!(
        verify_chain(Network::Regtest, &checkpoint, &retargeted),
        Err(ChainError::WrongTarget { height: 11, got: 0x1f7fffff, expected: 0x207fffff })
    ));
    // A header whose hash misses its target (a nonce that fails), relinked after it.
    let mut weak = chain.clone();
    let mut bad = chain[20];
    while bad.validate_pow(bad.target()).is_ok() {
        bad.nonce += 1;
    }
    weak[20] = bad;
    assert_eq!(
        verify_chain(Network::Regtest, &checkpoint, &weak[..21]),
        Err(ChainError::BadProofOfWork { height: 21 })
    );
    // A checkpoint off an epoch boundary is refused (its epoch's first header is unknown).
    let off = Checkpoint { height: 5, header: chain[4] };
    assert!(matches!(verify_chain(Network::Regtest, &off, &chain[5..]), Err(ChainError::Checkpoint(5, _))));
    // Bytes that are not whole headers.
    assert!(matches!(sovereign_ledger::chain::decode_headers(&[0; 81]), Err(ChainError::Malformed { index: 1, .. })));
}

#[test]
fn the_difficulty_rules_retarget_at_the_epoch_boundary_and_nowhere_else() {
    // Regtest's parameters with retargeting on: blocks every 60 s instead of 600 s make the
    // next epoch's target a quarter (the factor-of-4 clamp), demanded at height 2016 exactly.
    let mut params = sovereign_ledger::bitcoin::params::Params::new(Network::Regtest);
    params.no_pow_retargeting = false;
    let checkpoint = Checkpoint { height: 0, header: regtest_genesis() };
    let fast = mine_chain(2015, 60);
    let last = fast[2014];
    let expected = CompactTarget::from_header_difficulty_adjustment(regtest_genesis(), last, &params);
    assert_ne!(expected, last.bits, "the test chain must retarget");
    let mut good = fast.clone();
    good.push(mine(&last, expected, last.time + 60));
    let tip = verify_chain_with(&params, &checkpoint, &good).unwrap();
    assert_eq!(tip.height, 2016);
    // The old target at the boundary is refused; the new one a block early is refused too.
    let mut stale = fast.clone();
    stale.push(mine(&last, last.bits, last.time + 60));
    assert!(matches!(
        verify_chain_with(&params, &checkpoint, &stale),
        Err(ChainError::WrongTarget { height: 2016, .. })
    ));
    let mut early = fast[..2014].to_vec();
    early.push(mine(&fast[2013], expected, fast[2013].time + 60));
    assert!(matches!(
        verify_chain_with(&params, &checkpoint, &early),
        Err(ChainError::WrongTarget { height: 2015, .. })
    ));
}

fn licence_tx(outputs: Vec<TxOut>) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: outputs,
    }
}

#[test]
fn the_licence_rule_needs_the_payment_and_this_machines_commitment() {
    let developer = ScriptBuf::new_p2wpkh(&sovereign_ledger::bitcoin::WPubkeyHash::from_byte_array([0x42; 20]));
    let terms = Terms { script: developer.clone(), amount: Amount::from_sat(50_000) };
    let machine = b"node identity key of this appliance";
    let op_return = |data: [u8; 32]| TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::new_op_return(data) };
    let pay = |sat| TxOut { value: Amount::from_sat(sat), script_pubkey: developer.clone() };
    assert_eq!(check(&licence_tx(vec![pay(50_000), op_return(commitment(machine))]), &terms, machine), Ok(()));
    assert_eq!(
        check(&licence_tx(vec![pay(49_999), op_return(commitment(machine))]), &terms, machine),
        Err(LicenceError::TooLittle { paid: Amount::from_sat(49_999), needed: Amount::from_sat(50_000) })
    );
    let elsewhere = TxOut { value: Amount::from_sat(90_000), script_pubkey: ScriptBuf::new_op_return([1; 4]) };
    assert_eq!(
        check(&licence_tx(vec![elsewhere, op_return(commitment(machine))]), &terms, machine),
        Err(LicenceError::NoPayment)
    );
    assert_eq!(
        check(&licence_tx(vec![pay(60_000), op_return(commitment(b"another machine"))]), &terms, machine),
        Err(LicenceError::NotThisMachine)
    );
    // The commitment must be the OP_RETURN's only push.
    let mut padded = ScriptBuf::new_op_return(commitment(machine));
    padded.push_slice([0u8; 1]);
    let extra = TxOut { value: Amount::ZERO, script_pubkey: padded };
    assert_eq!(check(&licence_tx(vec![pay(60_000), extra]), &terms, machine), Err(LicenceError::NotThisMachine));
    // The real block's OP_RETURN outputs commit to nobody's licence.
    let block = mainnet_block();
    assert!(block.txdata.iter().all(|tx| check(tx, &terms, machine).is_err()));
}

/// A regtest chain whose block 3 holds `licence` (between two other transactions), with
/// `on_top` blocks after it, and the proof file of it.
fn licence_proof(licence: &Transaction, on_top: usize) -> (Vec<Header>, LicenceProof) {
    use sovereign_ledger::bitcoin::consensus::encode::serialize;
    let other =
        |n: u8| licence_tx(vec![TxOut { value: Amount::from_sat(u64::from(n)), script_pubkey: ScriptBuf::new() }]);
    let txids = [other(1).compute_txid(), licence.compute_txid(), other(2).compute_txid()];
    let root = sovereign_ledger::merkle::root_of(txids[1], 1, &branch_of(&txids, 1)).unwrap();
    let mut chain = mine_chain(2, 600);
    let mut block = Header {
        version: Version::TWO,
        prev_blockhash: chain[1].block_hash(),
        merkle_root: root,
        time: chain[1].time + 600,
        bits: chain[1].bits,
        nonce: 0,
    };
    while block.validate_pow(block.target()).is_err() {
        block.nonce += 1;
    }
    chain.push(block);
    for _ in 0..on_top {
        let prev = *chain.last().unwrap();
        chain.push(mine(&prev, prev.bits, prev.time + 600));
    }
    let proof = LicenceProof {
        network: "regtest".into(),
        checkpoint_height: 0,
        headers: hex::encode(chain.iter().flat_map(serialize).collect::<Vec<u8>>()),
        block_height: 3,
        position: 1,
        branch: branch_of(&txids, 1).iter().map(|n| hex::encode(n.to_byte_array())).collect(),
        transaction: hex::encode(serialize(licence)),
    };
    (chain, proof)
}

#[test]
fn an_offline_licence_proof_verifies_and_each_forgery_fails_by_name() {
    let developer = ScriptBuf::new_p2wpkh(&sovereign_ledger::bitcoin::WPubkeyHash::from_byte_array([0x42; 20]));
    let terms = Terms { script: developer.clone(), amount: Amount::from_sat(50_000) };
    let machine = b"this appliance";
    let licence = licence_tx(vec![
        TxOut { value: Amount::from_sat(50_000), script_pubkey: developer },
        TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::new_op_return(commitment(machine)) },
    ]);
    let checkpoint = Checkpoint { height: 0, header: regtest_genesis() };
    let (_, proof) = licence_proof(&licence, 5);
    let file = |p: &LicenceProof| serde_json::to_vec(p).unwrap();
    let check =
        |p: &LicenceProof, needed: u32| proof::verify(&file(p), Network::Regtest, &checkpoint, &terms, machine, needed);

    let ok = check(&proof, 6).unwrap();
    assert_eq!((ok.txid, ok.height, ok.confirmations), (licence.compute_txid(), 3, 6));
    assert_eq!(check(&proof, 7), Err(ProofError::TooShallow { confirmations: 6, needed: 7 }));
    // Another machine's ID, network or checkpoint.
    assert_eq!(
        proof::verify(&file(&proof), Network::Regtest, &checkpoint, &terms, b"a copy elsewhere", 1),
        Err(ProofError::Rule(LicenceError::NotThisMachine))
    );
    assert!(matches!(
        proof::verify(&file(&proof), Network::Signet, &checkpoint, &terms, machine, 1),
        Err(ProofError::Network { .. })
    ));
    let mut later = proof.clone();
    later.checkpoint_height = 2016;
    assert_eq!(check(&later, 1), Err(ProofError::Checkpoint { proof: 2016, pinned: 0 }));
    // The branch at another position, the block claimed at another height, a header dropped.
    let mut moved = proof.clone();
    moved.position = 0;
    assert_eq!(check(&moved, 1), Err(ProofError::Branch(BranchError::WrongRoot)));
    let mut elsewhere = proof.clone();
    elsewhere.block_height = 4;
    assert_eq!(check(&elsewhere, 1), Err(ProofError::Branch(BranchError::WrongRoot)));
    elsewhere.block_height = 9;
    assert_eq!(check(&elsewhere, 1), Err(ProofError::NotInChain { block: 9, first: 1, tip: 8 }));
    let mut cut = proof.clone();
    cut.headers.replace_range(160 * 2..240 * 2, "");
    assert!(matches!(check(&cut, 1), Err(ProofError::Chain(ChainError::Unlinked { .. }))));
    // Another transaction in the licence's place (its own branch would not reach the root).
    let mut swapped = proof.clone();
    swapped.transaction = hex::encode(sovereign_ledger::bitcoin::consensus::encode::serialize(&licence_tx(vec![])));
    assert_eq!(check(&swapped, 1), Err(ProofError::Branch(BranchError::WrongRoot)));
    // Not a proof, or too large.
    assert!(matches!(
        proof::verify(b"{}", Network::Regtest, &checkpoint, &terms, machine, 1),
        Err(ProofError::Malformed(_))
    ));
    let huge = vec![b' '; proof::MAX_PROOF_BYTES + 1];
    assert!(matches!(
        proof::verify(&huge, Network::Regtest, &checkpoint, &terms, machine, 1),
        Err(ProofError::TooLarge(_))
    ));
}
