//! The compliance bundle: one ustar file that a third party verifies offline, trusting only
//! published public keys. The format is documented in `docs/audit-log.md` ("Compliance bundle").
//!
//! Every byte of the file is accounted for: tar headers must be byte-identical to the
//! canonical header this module writes, padding and the end-of-archive blocks must be zero,
//! nothing may follow them, and every member's SHA-256 is listed in `index.json`, which the node
//! identity signs (`index.sig`). One flipped bit anywhere is therefore a named failure.
//! Pure: no IO.
//!
//! Rooms: the container codec (`bundle/tar.rs`), the model and its writer (this file), the
//! verifier with its named checks (`bundle/verify.rs`).

mod tar;
mod verify;

#[cfg(test)]
use tar::valid_path;
pub use tar::{read_tar, write_tar};
pub use verify::{SectionChecker, TrustedKeys, verify_bundle, verify_bundle_with};

use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};

use crate::merkle::Hash;
use crate::note::{Checkpoint, SignedNote};

/// `index.json`'s `format`.
pub const FORMAT: &str = "sovereign-compliance-bundle";
/// The only bundle version.
pub const VERSION: u32 = 1;
/// Sections later parts of the system fill.
/// The sections every bundle has had since the format's first version: a bundle without one of
/// them fails (`sections`). The later ones ([`SECTIONS`] beyond these: `anchors`, `licences`)
/// may be absent from a bundle written before them, which still verifies.
pub const REQUIRED_SECTIONS: [&str; 5] =
    ["attestation", "reference-values", "policies", "decision-inputs", "role-certificates"];
/// Every section a bundle may carry (each written, empty or not, by [`write_bundle`]).
pub const SECTIONS: [&str; 7] =
    ["attestation", "reference-values", "policies", "decision-inputs", "role-certificates", "anchors", "licences"];
/// Largest bundle accepted (members are held in memory).
pub const MAX_BUNDLE_BYTES: usize = 4 * 1024 * 1024 * 1024;

/// One member's listing in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberDigest {
    /// Path inside the bundle.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The log's origin.
    pub origin: String,
    /// The node identity public key (hex) that signs checkpoints and this index.
    pub node_key: String,
    /// Tree size of the bundle's checkpoint.
    pub tree_size: u64,
    /// Entries included: `[start, end)`.
    pub range: [u64; 2],
    /// Every other member with its digest (sorted by path).
    pub members: Vec<MemberDigest>,
}

/// `keys.json`: the public keys the bundle was made with (informative; trust comes from the
/// verifier's own pins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// Node identity: key name (the origin) and hex key.
    pub node: NamedKey,
    /// Witnesses.
    pub witnesses: Vec<NamedKey>,
}

/// A named Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedKey {
    /// Key name.
    pub name: String,
    /// Hex public key.
    pub key: String,
}

/// `proofs.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proofs {
    /// Inclusion proofs of the included entries in the checkpoint's tree (present when the
    /// range is not the whole tree).
    pub inclusion: Vec<InclusionProof>,
    /// Consistency proofs from earlier signed checkpoints to the bundle's checkpoint.
    pub consistency: Vec<ConsistencyProof>,
}

/// One inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// Entry index.
    pub index: u64,
    /// Hex hashes.
    pub hashes: Vec<String>,
}

/// One consistency proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// The earlier checkpoint, as signed-note text.
    pub checkpoint: String,
    /// Hex hashes.
    pub hashes: Vec<String>,
}

/// Everything needed to write a bundle.
#[derive(Debug, Clone)]
pub struct BundleContents {
    /// The log's origin.
    pub origin: String,
    /// Canonical entry encodings for `range`.
    pub entries: Vec<Vec<u8>>,
    /// `[start, end)` of the entries.
    pub range: [u64; 2],
    /// The signed (and possibly cosigned) checkpoint.
    pub checkpoint: SignedNote,
    /// Proofs.
    pub proofs: Proofs,
    /// Witness keys, for `keys.json`.
    pub witnesses: Vec<NamedKey>,
    /// Section files: (section, file name, bytes).
    pub section_files: Vec<(String, String, Vec<u8>)>,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sovereign_canonical::sha256(b))
}

fn hex_hashes(h: &[Hash]) -> Vec<String> {
    h.iter().map(hex::encode).collect()
}

/// Hex-encodes proof hashes.
pub fn encode_hashes(h: &[Hash]) -> Vec<String> {
    hex_hashes(h)
}

/// Writes the bundle, signing its index with the node identity key.
pub fn write_bundle(contents: &BundleContents, node_key: &SigningKey) -> Result<Vec<u8>, String> {
    let cp = Checkpoint::parse_body(&contents.checkpoint.body).map_err(|e| e.to_string())?;
    let mut entries_bin = Vec::new();
    for e in &contents.entries {
        entries_bin.extend_from_slice(&u32::try_from(e.len()).map_err(|_| "entry too large")?.to_be_bytes());
        entries_bin.extend_from_slice(e);
    }
    let keys = Keys {
        node: NamedKey { name: contents.origin.clone(), key: hex::encode(node_key.verifying_key().as_bytes()) },
        witnesses: contents.witnesses.clone(),
    };
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("checkpoint.txt".into(), contents.checkpoint.to_text().into_bytes()),
        ("entries.bin".into(), entries_bin),
        ("keys.json".into(), serde_json::to_vec_pretty(&keys).map_err(|e| e.to_string())?),
        ("proofs.json".into(), serde_json::to_vec_pretty(&contents.proofs).map_err(|e| e.to_string())?),
    ];
    for (section, name, data) in &contents.section_files {
        if !SECTIONS.contains(&section.as_str()) {
            return Err(format!("unknown section {section}"));
        }
        files.push((format!("{section}/{name}"), data.clone()));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let index = Index {
        format: FORMAT.into(),
        version: VERSION,
        origin: contents.origin.clone(),
        node_key: hex::encode(node_key.verifying_key().as_bytes()),
        tree_size: cp.size,
        range: contents.range,
        members: files
            .iter()
            .map(|(p, d)| MemberDigest { path: p.clone(), size: d.len() as u64, sha256: sha256_hex(d) })
            .collect(),
    };
    let index_json = serde_json::to_vec_pretty(&index).map_err(|e| e.to_string())?;
    let sig = node_key.sign(&index_json).to_bytes().to_vec();
    let mut members: Vec<(String, Vec<u8>)> = vec![("index.json".into(), index_json), ("index.sig".into(), sig)];
    for s in SECTIONS {
        members.push((format!("{s}/"), Vec::new()));
    }
    members.extend(files);
    Ok(write_tar(&members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_round_trips_and_is_strict() {
        let members = vec![
            ("a/".to_string(), vec![]),
            ("a/x.json".to_string(), b"{}".to_vec()),
            ("b.bin".to_string(), vec![7; 700]),
        ];
        let tar = write_tar(&members);
        assert_eq!(read_tar(&tar).unwrap(), members);
        for i in [0usize, 100, 148, 300, 512 + 511, 1024 + 2, 1024 + 600, tar.len() - 1] {
            let mut t = tar.clone();
            t[i] ^= 0x01;
            assert_ne!(read_tar(&t).ok(), Some(members.clone()), "flip at byte {i} went unnoticed");
        }
        let mut longer = tar.clone();
        longer.push(0);
        assert!(read_tar(&longer).is_err());
        assert!(read_tar(&tar[..tar.len() - 512]).is_err());
    }

    #[test]
    fn refuses_unsafe_paths() {
        for bad in ["../x", "/etc/passwd", "a/../b", "a b", ""] {
            assert!(!valid_path(bad), "{bad}");
        }
    }
}
