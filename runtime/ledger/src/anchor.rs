//! Audit checkpoints anchored in Bitcoin (issue 17): an `OP_RETURN` output committing to a
//! checkpoint's body (origin, size, root: the C2SP checkpoint's first lines), so that an auditor
//! can check offline that a log head existed no later than the block that carries it.
//!
//! The appliance holds no coins: [`psbt`] is an unsigned, unfunded transaction (no inputs, one
//! zero-value `OP_RETURN` output) in BIP 174 form for an external wallet to fund, sign and
//! broadcast. Once mined, the proof of it — the same file format as a licence proof (header
//! chain from the pinned checkpoint, branch, transaction) — is checked by [`verify`]: the
//! transaction is in the chain, deep enough, and carries this checkpoint's commitment as an
//! `OP_RETURN`'s only push. An [`AnchorFile`] keeps the anchored checkpoint's body beside its
//! proof, so that a later log head can be shown consistent with the anchored one
//! (`sovereign verify --anchor`).

use bitcoin::psbt::Psbt;
use bitcoin::{Amount, Network, ScriptBuf, Transaction, TxOut, Txid, absolute, transaction};
use sha2::{Digest as _, Sha256};

use crate::chain::Checkpoint;
use crate::proof::{LicenceProof, MAX_PROOF_BYTES, ProofError, verify_inclusion};

/// An anchor as kept and carried: the body of the checkpoint anchored
/// (`origin\nsize\nbase64(root)\n`) and the proof that a transaction carrying its commitment
/// was mined (the licence proof's format). JSON, at most [`MAX_PROOF_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorFile {
    /// The anchored checkpoint's body.
    pub checkpoint: String,
    /// The proof of the anchoring transaction.
    pub proof: LicenceProof,
}

/// Verifies an [`AnchorFile`]: its proof shows a transaction carrying the commitment to its
/// checkpoint body, at least `min_confirmations` deep in a chain from the pinned checkpoint.
/// Returns the anchor and the anchored body (whose consistency with a log the caller checks).
pub fn verify_file(
    bytes: &[u8],
    network: Network,
    checkpoint: &Checkpoint,
    min_confirmations: u32,
) -> Result<(Anchored, String), ProofError> {
    if bytes.len() > MAX_PROOF_BYTES {
        return Err(ProofError::TooLarge(bytes.len()));
    }
    let file: AnchorFile = serde_json::from_slice(bytes).map_err(|e| ProofError::Malformed(e.to_string()))?;
    let proof = serde_json::to_vec(&file.proof).map_err(|e| ProofError::Malformed(e.to_string()))?;
    let anchored = verify(&proof, network, checkpoint, &commitment(&file.checkpoint), min_confirmations)?;
    Ok((anchored, file.checkpoint))
}

/// What the commitment hashes before the checkpoint's body (its domain).
pub const DOMAIN: &[u8] = b"sovereign-anchor/v1\n";

/// `SHA256(DOMAIN || body)`: what an anchor of the checkpoint with this body carries. `body` is
/// the checkpoint's text up to its blank line: `origin\nsize\nbase64(root)\n`.
pub fn commitment(checkpoint_body: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(checkpoint_body.as_bytes());
    h.finalize().into()
}

/// The anchoring transaction before a wallet funds it: version 2, no inputs, one zero-value
/// `OP_RETURN <commitment>` output.
pub fn transaction(commitment: &[u8; 32]) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: Vec::new(),
        output: vec![TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::new_op_return(commitment) }],
    }
}

/// [`transaction`] as a BIP 174 PSBT, base64.
pub fn psbt(commitment: &[u8; 32]) -> Result<String, String> {
    use base64::Engine as _;
    let psbt = Psbt::from_unsigned_tx(transaction(commitment)).map_err(|e| format!("PSBT: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(psbt.serialize()))
}

/// An anchor the proof established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchored {
    /// The anchoring transaction.
    pub txid: Txid,
    /// The block height it was mined at (the checkpoint existed no later than that block).
    pub height: u32,
    /// Blocks on top of it, its own included.
    pub confirmations: u32,
}

/// Verifies an anchor proof for `commitment`: the transaction in a chain from the pinned
/// checkpoint, at least `min_confirmations` deep, carrying the commitment.
pub fn verify(
    bytes: &[u8],
    network: Network,
    checkpoint: &Checkpoint,
    commitment: &[u8; 32],
    min_confirmations: u32,
) -> Result<Anchored, ProofError> {
    let included = verify_inclusion(bytes, network, checkpoint, min_confirmations)?;
    if !included.transaction.output.iter().any(|o| crate::licence::commits_to(&o.script_pubkey, commitment)) {
        return Err(ProofError::Anchor(format!(
            "transaction {} carries no OP_RETURN with this checkpoint's commitment {}",
            included.txid,
            hex::encode(commitment)
        )));
    }
    Ok(Anchored { txid: included.txid, height: included.height, confirmations: included.confirmations })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::{OutPoint, Sequence, TxIn, Witness};

    const BODY: &str = "sovereign-appliance/0123456789abcdef\n42\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n";

    #[test]
    fn the_psbt_is_the_unfunded_anchor_and_parses_back() {
        let c = commitment(BODY);
        assert_ne!(
            c,
            commitment("sovereign-appliance/0123456789abcdef\n43\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n")
        );
        let text = psbt(&c).unwrap();
        use base64::Engine as _;
        let parsed = Psbt::deserialize(&base64::engine::general_purpose::STANDARD.decode(&text).unwrap()).unwrap();
        assert_eq!(parsed.unsigned_tx, transaction(&c));
        assert!(parsed.unsigned_tx.input.is_empty());
        assert_eq!(parsed.unsigned_tx.output[0].script_pubkey, ScriptBuf::new_op_return(c));
    }

    #[test]
    fn an_anchor_proof_verifies_for_its_checkpoint_only() {
        let c = commitment(BODY);
        // What a wallet makes of the PSBT: an input and change added, the anchor output kept.
        let mut funded = transaction(&c);
        funded.input.push(TxIn {
            previous_output: OutPoint { txid: Txid::from_raw_hash(bitcoin::hashes::Hash::all_zeros()), vout: 1 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        });
        funded.output.push(TxOut { value: Amount::from_sat(90_000), script_pubkey: ScriptBuf::new() });
        let bytes = serde_json::to_vec(&crate::regtest::proof_of(&funded, 5)).unwrap();
        let genesis = Checkpoint { height: 0, header: bitcoin::constants::genesis_block(Network::Regtest).header };
        let anchored = verify(&bytes, Network::Regtest, &genesis, &c, 6).unwrap();
        assert_eq!((anchored.height, anchored.confirmations, anchored.txid), (1, 6, funded.compute_txid()));
        let other = commitment("another log\n1\nAAAA\n");
        let why = verify(&bytes, Network::Regtest, &genesis, &other, 6).unwrap_err().to_string();
        assert!(why.contains("carries no OP_RETURN with this checkpoint's commitment"), "{why}");
        let why = verify(&bytes, Network::Regtest, &genesis, &c, 7).unwrap_err().to_string();
        assert!(why.contains("6 confirmations, 7 needed"), "{why}");
    }
}
