//! The network edge (feature `electrum`): a licence proof fetched from an Electrum server through
//! bdk_electrum's client. Nothing the server says is trusted: the answers are assembled into the
//! same [`LicenceProof`] an air-gapped appliance imports, and [`check`] verifies it with
//! [`crate::proof::verify`] — the header chain from the pinned checkpoint with its proof of work
//! and difficulty rules, the block's place in it, the Merkle branch to its root, the confirmation
//! depth and the licence rule. A server that lies, stalls or floods is refused by name: every
//! call has a timeout, histories and header ranges are bounded, and a transaction whose ID is not
//! the one asked for is refused.

use bdk_electrum::electrum_client::{Client, ConfigBuilder, ElectrumApi};
use bitcoin::Network;

use crate::chain::EPOCH;
use crate::licence::{self, Terms};
use crate::proof::{self, Licence, LicenceProof, ProofError};

/// The most entries of the developer script's history looked at (a busy script is checked by
/// txid instead).
pub const MAX_HISTORY: usize = 1000;
/// The most headers fetched after the checkpoint (the release pins a recent one).
pub const MAX_HEADERS: u32 = 8 * EPOCH;

/// Why no proof came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The server could not be reached or did not answer in time.
    #[error("electrum server: {0}")]
    Server(String),
    /// The server answered something that cannot be right.
    #[error("electrum server lied or is broken: {0}")]
    Lied(String),
    /// More than the bounds allow.
    #[error("electrum server: {0}")]
    TooMuch(String),
    /// No confirmed transaction pays the developer's script with this machine's commitment.
    #[error("no confirmed licence for this machine ({0})")]
    NoLicence(String),
    /// The anchoring transaction is not in a block the server knows of.
    #[error("the anchoring transaction is not confirmed ({0})")]
    NotConfirmed(String),
    /// The fetched proof did not verify.
    #[error("the licence proof the server's answers make does not verify: {0}")]
    Proof(#[from] ProofError),
}

/// The client's error on one line (it lists retried attempts on several).
fn server(e: impl std::fmt::Display) -> FetchError {
    FetchError::Server(e.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Connects to `url` (`tcp://host:port`) with `timeout` on every call and no retries.
pub fn connect(url: &str, timeout: std::time::Duration) -> Result<Client, FetchError> {
    let config = ConfigBuilder::new().timeout(Some(timeout)).retry(0).build();
    Client::from_config(url, config).map_err(server)
}

fn network_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "bitcoin",
        Network::Signet => "signet",
        _ => "regtest",
    }
}

/// Assembles a licence proof from the server's answers: the developer script's confirmed
/// history above the checkpoint, the first transaction in it that satisfies the licence rule
/// for `machine_id`, its Merkle branch, and the headers from the checkpoint to the server's tip.
/// Unverified: [`check`] (or an appliance importing the file) verifies it.
pub fn fetch_licence_proof(
    client: &impl ElectrumApi,
    network: Network,
    checkpoint_height: u32,
    terms: &Terms,
    machine_id: &[u8],
) -> Result<LicenceProof, FetchError> {
    let tip = tip_above(client, checkpoint_height)?;
    let history = client.script_get_history(&terms.script).map_err(server)?;
    if history.len() > MAX_HISTORY {
        return Err(FetchError::TooMuch(format!("{} transactions pay the developer's script", history.len())));
    }
    let mut seen = Vec::new();
    for entry in history.iter().filter(|h| h.height > 0) {
        let height = entry.height as u32;
        if height <= checkpoint_height || height > tip {
            seen.push(format!("{} at height {height}: outside the checkpoint..tip range", entry.tx_hash));
            continue;
        }
        let tx = client.transaction_get(&entry.tx_hash).map_err(server)?;
        if tx.compute_txid() != entry.tx_hash {
            return Err(FetchError::Lied(format!("asked for {}, got {}", entry.tx_hash, tx.compute_txid())));
        }
        if let Err(why) = licence::check(&tx, terms, machine_id) {
            seen.push(format!("{}: {why}", entry.tx_hash));
            continue;
        }
        return assemble(client, network, checkpoint_height, tip, &tx, height);
    }
    let unconfirmed = history.iter().filter(|h| h.height <= 0).count();
    Err(FetchError::NoLicence(format!(
        "{} confirmed and {unconfirmed} unconfirmed transactions pay the developer's script{}{}",
        history.len() - unconfirmed,
        if seen.is_empty() { "" } else { ": " },
        seen.join("; ")
    )))
}

/// The proof of `tx`, mined at `height`: its Merkle branch and the headers from the checkpoint
/// to `tip`. Unverified.
fn assemble(
    client: &impl ElectrumApi,
    network: Network,
    checkpoint_height: u32,
    tip: u32,
    tx: &bitcoin::Transaction,
    height: u32,
) -> Result<LicenceProof, FetchError> {
    let txid = tx.compute_txid();
    let merkle = client.transaction_get_merkle(&txid, height as usize).map_err(server)?;
    if merkle.block_height != height as usize || merkle.merkle.len() > 32 {
        return Err(FetchError::Lied(format!(
            "a Merkle proof for height {} of {} hashes",
            merkle.block_height,
            merkle.merkle.len()
        )));
    }
    let headers = headers(client, checkpoint_height, tip)?;
    Ok(LicenceProof {
        network: network_name(network).into(),
        checkpoint_height,
        headers: hex::encode(headers),
        block_height: height,
        position: u32::try_from(merkle.pos).map_err(|_| FetchError::Lied("a position beyond u32".into()))?,
        // Electrum gives the branch's hashes in display order; the proof holds them in the
        // internal order the Merkle tree uses.
        branch: merkle.merkle.iter().map(|h| hex::encode(h.iter().rev().copied().collect::<Vec<u8>>())).collect(),
        transaction: hex::encode(bitcoin::consensus::serialize(tx)),
    })
}

/// The server's tip, checked to be above the checkpoint and within [`MAX_HEADERS`] of it.
fn tip_above(client: &impl ElectrumApi, checkpoint_height: u32) -> Result<u32, FetchError> {
    let tip = u32::try_from(client.block_headers_subscribe().map_err(server)?.height)
        .map_err(|_| FetchError::Lied("a tip height beyond u32".into()))?;
    if tip <= checkpoint_height {
        return Err(FetchError::Lied(format!("its tip {tip} is not above the checkpoint {checkpoint_height}")));
    }
    if tip - checkpoint_height > MAX_HEADERS {
        return Err(FetchError::TooMuch(format!(
            "{} headers after the checkpoint, more than {MAX_HEADERS}: pin a newer checkpoint",
            tip - checkpoint_height
        )));
    }
    Ok(tip)
}

/// Assembles the proof of an anchoring transaction, found by its ID. Electrum indexes
/// transactions by the scripts they pay, and an `OP_RETURN` output has none: the block it was
/// mined in is found through the history of the transaction's other outputs (the change a
/// funding wallet adds), unless `height` names it. Unverified: [`check_anchor`] verifies it.
pub fn fetch_anchor_proof(
    client: &impl ElectrumApi,
    network: Network,
    checkpoint_height: u32,
    txid: &bitcoin::Txid,
    height: Option<u32>,
) -> Result<LicenceProof, FetchError> {
    let tip = tip_above(client, checkpoint_height)?;
    let tx = client.transaction_get(txid).map_err(server)?;
    if tx.compute_txid() != *txid {
        return Err(FetchError::Lied(format!("asked for {txid}, got {}", tx.compute_txid())));
    }
    let height = match height {
        Some(h) => h,
        None => {
            let mut found = None;
            for output in tx.output.iter().filter(|o| !o.script_pubkey.is_op_return()).take(8) {
                let history = client.script_get_history(&output.script_pubkey).map_err(server)?;
                if history.len() > MAX_HISTORY {
                    return Err(FetchError::TooMuch(format!(
                        "{} transactions pay one of its outputs' scripts: give the height",
                        history.len()
                    )));
                }
                found = history.iter().find(|h| h.tx_hash == *txid).map(|h| h.height);
                if found.is_some() {
                    break;
                }
            }
            match found {
                Some(h) if h > 0 => u32::try_from(h).map_err(|_| FetchError::Lied("a height beyond u32".into()))?,
                Some(_) => {
                    return Err(FetchError::NotConfirmed(format!("{txid} is in the mempool, not in a block yet")));
                }
                None => {
                    return Err(FetchError::NotConfirmed(format!(
                        "{txid} is in no history of its outputs' scripts (no change output to find it by? give the height)"
                    )));
                }
            }
        }
    };
    if height <= checkpoint_height || height > tip {
        return Err(FetchError::NotConfirmed(format!(
            "{txid} at height {height}: outside the checkpoint {checkpoint_height} .. tip {tip}"
        )));
    }
    assemble(client, network, checkpoint_height, tip, &tx, height)
}

/// An anchor checked online: the proof of `txid` fetched from the server, then verified like
/// an imported one, for the checkpoint with this body. Returns the anchor and the anchor file
/// (to keep beside the bundle, for `sovereign verify --anchor`).
pub fn check_anchor(
    client: &impl ElectrumApi,
    network: Network,
    checkpoint: &crate::chain::Checkpoint,
    checkpoint_body: &str,
    txid: &bitcoin::Txid,
    height: Option<u32>,
    min_confirmations: u32,
) -> Result<(crate::anchor::Anchored, crate::anchor::AnchorFile), FetchError> {
    let proof = fetch_anchor_proof(client, network, checkpoint.height, txid, height)?;
    let file = crate::anchor::AnchorFile { checkpoint: checkpoint_body.to_string(), proof };
    let bytes = serde_json::to_vec(&file).map_err(|e| FetchError::Lied(e.to_string()))?;
    let (anchored, _) = crate::anchor::verify_file(&bytes, network, checkpoint, min_confirmations)?;
    Ok((anchored, file))
}

/// The headers after `checkpoint_height` up to `tip`, concatenated (80 bytes each), fetched in
/// epochs and counted.
fn headers(client: &impl ElectrumApi, checkpoint_height: u32, tip: u32) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::with_capacity(((tip - checkpoint_height) as usize) * 80);
    let mut start = checkpoint_height + 1;
    while start <= tip {
        let count = (tip - start + 1).min(EPOCH);
        let got = client.block_headers(start as usize, count as usize).map_err(server)?;
        if got.headers.len() != count as usize {
            return Err(FetchError::Lied(format!("asked for {count} headers from {start}, got {}", got.headers.len())));
        }
        for header in &got.headers {
            out.extend_from_slice(&bitcoin::consensus::serialize(header));
        }
        start += count;
    }
    Ok(out)
}

/// The licence check online: the proof fetched from the server, then verified like an imported
/// one. Returns the licence and the proof (to keep, or to carry to an air-gapped appliance).
pub fn check(
    client: &impl ElectrumApi,
    network: Network,
    checkpoint: &crate::chain::Checkpoint,
    terms: &Terms,
    machine_id: &[u8],
    min_confirmations: u32,
) -> Result<(Licence, LicenceProof), FetchError> {
    let fetched = fetch_licence_proof(client, network, checkpoint.height, terms, machine_id)?;
    let bytes = serde_json::to_vec(&fetched).map_err(|e| FetchError::Lied(e.to_string()))?;
    let licence = proof::verify(&bytes, network, checkpoint, terms, machine_id, min_confirmations)?;
    Ok((licence, fetched))
}
