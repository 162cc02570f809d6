//! Header-chain verification rate (SPEC §9: ≥ 500,000 headers/s on one core), on a chain mined
//! here at regtest difficulty (every header's proof of work, link and target checked exactly as
//! on mainnet; only the target is easy), beside the naive baseline in the same run: the same
//! checks written the obvious way — decode each header from its bytes, hash it once to check its
//! proof of work and again when the next header links to it, add its work.
//!
//! Then a licence check end to end, as a node imports a proof (`Rule::verify`: JSON, hex, every
//! header of a chain of weeks, depth, Merkle branch, the rule), beside the least any check of
//! the file must do: parse its JSON and decode its hex.
//!
//! Run: `cargo bench -p sovereign-ledger --bench headers` (prints Markdown tables).

use std::time::Instant;

use sovereign_ledger::bitcoin::block::{Header, Version};
use sovereign_ledger::bitcoin::consensus::{Decodable as _, encode::serialize};
use sovereign_ledger::bitcoin::hashes::Hash as _;
use sovereign_ledger::bitcoin::pow::Target;
use sovereign_ledger::bitcoin::{Network, TxMerkleNode};
use sovereign_ledger::chain::{Checkpoint, decode_headers, verify_chain};

fn main() {
    let n = if sovereign_bench::measuring() { 200_000 } else { 2_000 };
    let genesis = sovereign_ledger::bitcoin::constants::genesis_block(Network::Regtest).header;
    let mut chain = Vec::with_capacity(n);
    let mut prev = genesis;
    for i in 0..n {
        let mut h = Header {
            version: Version::TWO,
            prev_blockhash: prev.block_hash(),
            merkle_root: TxMerkleNode::from_byte_array([(i % 251) as u8; 32]),
            time: prev.time + 600,
            bits: prev.bits,
            nonce: 0,
        };
        while h.validate_pow(Target::from_compact(h.bits)).is_err() {
            h.nonce += 1;
        }
        chain.push(h);
        prev = h;
    }
    let bytes: Vec<u8> = chain.iter().flat_map(serialize).collect();
    let checkpoint = Checkpoint { height: 0, header: genesis };

    let rounds = if sovereign_bench::measuring() { 5 } else { 1 };
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let t = Instant::now();
        let headers = decode_headers(&bytes).expect("decode");
        let tip = verify_chain(Network::Regtest, &checkpoint, &headers).expect("verify");
        assert_eq!(tip.height as usize, n);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mut naive_best = f64::INFINITY;
    for _ in 0..rounds {
        let t = Instant::now();
        let mut prev = genesis;
        let mut work = sovereign_ledger::bitcoin::pow::Work::from_be_bytes([0; 32]);
        for chunk in bytes.chunks_exact(80) {
            let h = Header::consensus_decode(&mut &chunk[..]).expect("decode");
            assert_eq!(h.prev_blockhash, prev.block_hash());
            assert_eq!(h.bits, prev.bits);
            h.validate_pow(Target::from_compact(h.bits)).expect("pow");
            work = work + h.work();
            prev = h;
        }
        assert!(work > sovereign_ledger::bitcoin::pow::Work::from_be_bytes([0; 32]));
        naive_best = naive_best.min(t.elapsed().as_secs_f64());
    }
    licence_end_to_end(rounds);
    println!("| benchmark | headers | best of {rounds} s | headers/s |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| decode + verify_chain (link, target, PoW, work) | {n} | {best:.3} | {:.0} |", n as f64 / best);
    println!(
        "| baseline: decode, hash twice, validate_pow, work | {n} | {naive_best:.3} | {:.0} |",
        n as f64 / naive_best
    );
}

/// A licence proof with `on_top` headers above the licence's block, verified end to end.
fn licence_end_to_end(rounds: usize) {
    use sovereign_ledger::bitcoin::Amount;
    let on_top = if sovereign_bench::measuring() { 10_079 } else { 200 };
    let rule = sovereign_ledger::rule::parse("regtest", 0, None, &format!("0014{}", "d3".repeat(20)), 50_000, 6)
        .expect("rule");
    let machine = [7u8; 32];
    let tx = sovereign_ledger::regtest::licence_transaction(&rule.terms, Amount::from_sat(50_000), &machine);
    let bytes = serde_json::to_vec(&sovereign_ledger::regtest::proof_of(&tx, on_top)).expect("proof");
    let (mut best, mut floor) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds.max(3) {
        let t = Instant::now();
        let licence = rule.verify(&bytes, &machine).expect("licence");
        assert_eq!(licence.confirmations, on_top + 1);
        best = best.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let proof: sovereign_ledger::proof::LicenceProof = serde_json::from_slice(&bytes).expect("json");
        let decoded = hex::decode(&proof.headers).expect("hex");
        assert_eq!(decoded.len(), (on_top as usize + 1) * 80);
        floor = floor.min(t.elapsed().as_secs_f64());
    }
    println!("| licence check end to end | proof bytes | headers | best ms |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| Rule::verify (JSON, hex, chain, depth, branch, rule) | {} | {} | {:.2} |",
        bytes.len(),
        on_top + 1,
        best * 1e3
    );
    println!(
        "| baseline: parse the JSON and decode the headers' hex | {} | {} | {:.2} |",
        bytes.len(),
        on_top + 1,
        floor * 1e3
    );
    println!();
}
