//! A node's licence rule as its signed configuration (or the operator's command line) states
//! it — network, pinned checkpoint, developer script, amount, confirmation depth — parsed into
//! the types the verifiers take. One parser for the CLI and the appliance, so both judge a proof
//! by the same rule.

use bitcoin::consensus::Decodable as _;
use bitcoin::{Amount, Network, ScriptBuf};

use crate::chain::Checkpoint;
use crate::licence::Terms;

/// A licence rule, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The network whose difficulty rules the headers follow.
    pub network: Network,
    /// The checkpoint the release pins (the proof's chain starts after it).
    pub checkpoint: Checkpoint,
    /// The developer's script and the least it must be paid.
    pub terms: Terms,
    /// Confirmations required.
    pub depth: u32,
}

/// The network called `name`: `bitcoin`, `signet` or `regtest`.
pub fn network(name: &str) -> Result<Network, String> {
    match name {
        "bitcoin" => Ok(Network::Bitcoin),
        "signet" => Ok(Network::Signet),
        "regtest" => Ok(Network::Regtest),
        other => Err(format!("network {other:?} is not bitcoin, signet or regtest")),
    }
}

/// The network called `network_name` and the checkpoint pinned on it: `checkpoint_header` is its
/// 80-byte header in hex (`None`: the network's genesis, only at height 0).
pub fn pinned(
    network_name: &str,
    checkpoint_height: u32,
    checkpoint_header: Option<&str>,
) -> Result<(Network, Checkpoint), String> {
    let network = network(network_name)?;
    let header = match checkpoint_header {
        Some(h) => {
            let bytes = hex::decode(h).map_err(|_| "the checkpoint header is not hex".to_string())?;
            if bytes.len() != 80 {
                return Err(format!("the checkpoint header is {} bytes, not 80", bytes.len()));
            }
            bitcoin::block::Header::consensus_decode(&mut bytes.as_slice())
                .map_err(|e| format!("the checkpoint header does not decode: {e}"))?
        }
        None if checkpoint_height == 0 => bitcoin::constants::genesis_block(network).header,
        None => return Err("a checkpoint above genesis needs its header".into()),
    };
    Ok((network, Checkpoint { height: checkpoint_height, header }))
}

/// Parses a rule: the network and pinned checkpoint as [`pinned`] reads them, `script_hex` the
/// developer's scriptPubKey.
pub fn parse(
    network_name: &str,
    checkpoint_height: u32,
    checkpoint_header: Option<&str>,
    script_hex: &str,
    amount_sat: u64,
    depth: u32,
) -> Result<Rule, String> {
    let (network, checkpoint) = pinned(network_name, checkpoint_height, checkpoint_header)?;
    let script = hex::decode(script_hex).map_err(|_| "the developer's script is not hex".to_string())?;
    if script.is_empty() {
        return Err("the developer's script is empty".into());
    }
    if depth == 0 {
        return Err("a licence needs at least one confirmation".into());
    }
    Ok(Rule {
        network,
        checkpoint,
        terms: Terms { script: ScriptBuf::from_bytes(script), amount: Amount::from_sat(amount_sat) },
        depth,
    })
}

impl Rule {
    /// Verifies a proof file against this rule for `machine_id` (see [`crate::proof::verify`]).
    pub fn verify(&self, proof: &[u8], machine_id: &[u8]) -> Result<crate::proof::Licence, crate::proof::ProofError> {
        crate::proof::verify(proof, self.network, &self.checkpoint, &self.terms, machine_id, self.depth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_parses_and_each_bad_part_is_named() {
        let rule = parse("regtest", 0, None, "0014d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3", 50_000, 3).unwrap();
        assert_eq!(rule.checkpoint.header, bitcoin::constants::genesis_block(Network::Regtest).header);
        assert_eq!(rule.terms.amount, Amount::from_sat(50_000));
        let bad = |n: &str, h: u32, header: Option<&str>, s: &str, d: u32| parse(n, h, header, s, 1, d).unwrap_err();
        assert!(bad("testnet", 0, None, "00", 1).contains("not bitcoin, signet or regtest"));
        assert!(bad("bitcoin", 2016, None, "00", 1).contains("needs its header"));
        assert!(bad("bitcoin", 2016, Some("00"), "00", 1).contains("1 bytes, not 80"));
        assert!(bad("bitcoin", 0, None, "zz", 1).contains("not hex"));
        assert!(bad("bitcoin", 0, None, "", 1).contains("empty"));
        assert!(bad("bitcoin", 0, None, "00", 0).contains("at least one confirmation"));
    }
}
