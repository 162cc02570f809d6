//! The compliance bundle: one ustar file that a third party verifies offline, trusting only
//! published public keys. The format is documented in `docs/audit-log.md` ("Compliance bundle").
//!
//! Every byte of the file is accounted for: tar headers must be byte-identical to the
//! canonical header this module writes, padding and the end-of-archive blocks must be zero,
//! nothing may follow them, and every member's SHA-256 is listed in `index.json`, which the node
//! identity signs (`index.sig`). One flipped bit anywhere is therefore a named failure.
//! Pure: no IO.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::merkle::{Hash, root_from_leaves, verify_consistency, verify_inclusion};
use crate::note::{Checkpoint, NoteVerifier, SignedNote};
use crate::verify::{Failure, Report, check_checkpoint, check_entries, fail};

/// `index.json`'s `format`.
pub const FORMAT: &str = "sovereign-compliance-bundle";
/// The only bundle version.
pub const VERSION: u32 = 1;
/// Sections later parts of the system fill.
pub const SECTIONS: [&str; 5] = ["attestation", "reference-values", "policies", "decision-inputs", "role-certificates"];
/// Largest bundle accepted (members are held in memory).
pub const MAX_BUNDLE_BYTES: usize = 4 * 1024 * 1024 * 1024;
const BLOCK: usize = 512;

// ---------------------------------------------------------------- strict ustar

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

fn header(name: &str, size: u64, dir: bool) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], if dir { 0o755 } else { 0o644 });
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn valid_path(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 100
        && !name.starts_with('/')
        && name.split('/').all(|c| c != ".." && c != ".")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

/// Writes members (name → bytes; names ending in `/` are directories) as a canonical ustar.
pub fn write_tar(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members {
        let dir = name.ends_with('/');
        out.extend_from_slice(&header(name, data.len() as u64, dir));
        out.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
    out
}

/// Reads a canonical ustar strictly; errors name the byte offset.
pub fn read_tar(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Failure> {
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut names = BTreeSet::new();
    let mut off = 0usize;
    loop {
        let Some(h) = bytes.get(off..off + BLOCK) else {
            return Err(fail(format!("byte {off}"), "archive ends without the two zero end blocks"));
        };
        if h.iter().all(|b| *b == 0) {
            let rest = &bytes[off..];
            if rest.len() != 2 * BLOCK || !rest.iter().all(|b| *b == 0) {
                return Err(fail(
                    format!("byte {off}"),
                    "end of archive must be exactly two zero blocks and nothing after",
                ));
            }
            return Ok(members);
        }
        let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = std::str::from_utf8(&h[..name_end])
            .map_err(|_| fail(format!("tar header at byte {off}"), "member name is not UTF-8"))?;
        if !valid_path(name) {
            return Err(fail(
                format!("tar header at byte {off}"),
                format!("member name {name:?} is not an allowed relative path"),
            ));
        }
        let dir = h[156] == b'5';
        let size_text = std::str::from_utf8(&h[124..135]).unwrap_or("");
        let size = u64::from_str_radix(size_text, 8)
            .map_err(|_| fail(format!("tar header {name} at byte {off}"), "size field is not octal"))?;
        if header(name, size, dir) != h {
            return Err(fail(
                format!("tar header {name} at byte {off}"),
                "header is not byte-identical to the canonical header (altered)",
            ));
        }
        if dir && size != 0 {
            return Err(fail(format!("tar header {name} at byte {off}"), "directory with content"));
        }
        let size = usize::try_from(size).map_err(|_| fail(format!("tar header {name}"), "size too large"))?;
        let start = off + BLOCK;
        let end = start.checked_add(size).filter(|e| *e <= bytes.len()).ok_or_else(|| {
            fail(format!("member {name} at byte {start}"), "content extends past the end of the file")
        })?;
        let padded = end + (BLOCK - size % BLOCK) % BLOCK;
        let pad = bytes
            .get(end..padded)
            .ok_or_else(|| fail(format!("member {name}"), "padding extends past the end of the file"))?;
        if let Some(i) = pad.iter().position(|b| *b != 0) {
            return Err(fail(format!("padding of {name} at byte {}", end + i), "padding is not zero (altered)"));
        }
        if !names.insert(name.to_string()) {
            return Err(fail(format!("tar header {name} at byte {off}"), "duplicate member"));
        }
        members.push((name.to_string(), bytes[start..end].to_vec()));
        off = padded;
    }
}

// ---------------------------------------------------------------- the bundle model

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
    hex::encode(Sha256::digest(b))
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

// ---------------------------------------------------------------- verification

/// The keys an auditor trusts (published out of band).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    /// The node identity key.
    pub node: Option<VerifyingKey>,
    /// Witnesses: (key name, key). Each must have cosigned the checkpoint.
    pub witnesses: Vec<(String, VerifyingKey)>,
}

fn decode_hashes(place: &str, hashes: &[String]) -> Result<Vec<Hash>, Failure> {
    hashes
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out)
                .map(|()| out)
                .map_err(|e| fail(format!("{place} hash {i}"), e.to_string()))
        })
        .collect()
}

/// Checks the content of bundle sections this crate cannot interpret (e.g. `policies/`, whose
/// decisions only the governance kernel can re-evaluate). Supplied by a caller that can; a
/// section nobody checks must be empty, so nothing unchecked ever passes.
pub trait SectionChecker {
    /// The sections this checker is responsible for.
    fn sections(&self) -> Vec<&'static str>;
    /// Adds its checks to `report`. `entries` are the bundle's entries that decoded (place,
    /// entry); `files` the members of its sections (path → bytes).
    fn check(&self, report: &mut Report, entries: &[(String, crate::Entry)], files: &BTreeMap<String, Vec<u8>>);
}

/// Verifies a compliance bundle offline. Never panics; reports every check.
pub fn verify_bundle(bytes: &[u8], trust: &TrustedKeys) -> Report {
    verify_bundle_with(bytes, trust, None)
}

/// [`verify_bundle`], with `checker` checking the sections it is responsible for.
pub fn verify_bundle_with(bytes: &[u8], trust: &TrustedKeys, checker: Option<&dyn SectionChecker>) -> Report {
    let mut report = Report::default();
    const LATER: [&str; 10] = [
        "index",
        "index.signature",
        "members",
        "keys",
        "checkpoint.signature",
        "checkpoint.cosignatures",
        "entries.decode",
        "entries.signatures",
        "tree",
        "proofs.consistency",
    ];
    let abort = |report: &mut Report, from: usize, why: &str| {
        for name in &LATER[from..] {
            report.not_evaluated(name, "bundle", why);
        }
        report.not_evaluated("sections", "bundle", why);
    };
    if bytes.len() > MAX_BUNDLE_BYTES {
        report.add("container", 1, vec![fail("bundle", "larger than 4 GiB")], "too large");
        abort(&mut report, 0, "container refused");
        return report;
    }
    let members = match read_tar(bytes) {
        Ok(m) => {
            report.add("container", m.len() as u64, vec![], format!("{} members, canonical ustar", m.len()));
            m
        }
        Err(f) => {
            report.add("container", 1, vec![f], "not a canonical bundle archive");
            abort(&mut report, 0, "container refused");
            return report;
        }
    };
    let files: BTreeMap<&str, &[u8]> = members.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();

    // The index and its signature.
    let index: Index = match files.get("index.json").map(|b| serde_json::from_slice::<Index>(b)) {
        Some(Ok(i)) if i.format == FORMAT && i.version == VERSION => {
            report.add("index", 1, vec![], format!("format {} v{}", i.format, i.version));
            i
        }
        Some(Ok(i)) => {
            report.add(
                "index",
                1,
                vec![fail("index.json", format!("format {:?} v{} is not {FORMAT} v{VERSION}", i.format, i.version))],
                "unsupported",
            );
            abort(&mut report, 1, "index unsupported");
            return report;
        }
        Some(Err(e)) => {
            report.add("index", 1, vec![fail("index.json", e.to_string())], "does not parse");
            abort(&mut report, 1, "index does not parse");
            return report;
        }
        None => {
            report.add("index", 1, vec![fail("bundle", "no index.json")], "missing");
            abort(&mut report, 1, "no index");
            return report;
        }
    };
    let node_verifier = trust.node.map(|k| NoteVerifier::new(index.origin.clone(), k));
    match (&trust.node, files.get("index.sig")) {
        (None, _) => {
            report.not_evaluated("index.signature", "index.sig", "no node identity key is pinned (pass --node-key)")
        }
        (Some(_), None) => report.add("index.signature", 1, vec![fail("bundle", "no index.sig")], "missing"),
        (Some(key), Some(sig)) => {
            let ok = Signature::from_slice(sig).ok().is_some_and(|s| key.verify(files["index.json"], &s).is_ok());
            let failures = if ok {
                vec![]
            } else {
                vec![fail("index.sig", "signature over index.json does not verify with the pinned node key")]
            };
            report.add("index.signature", 1, failures, "index signed by the node identity");
        }
    }

    // Every member listed, with matching digest; nothing unlisted.
    let mut member_failures = Vec::new();
    let listed: BTreeMap<&str, &MemberDigest> = index.members.iter().map(|m| (m.path.as_str(), m)).collect();
    for (name, data) in &members {
        if name == "index.json" || name == "index.sig" || name.ends_with('/') {
            continue;
        }
        match listed.get(name.as_str()) {
            None => member_failures.push(fail(name.as_str(), "member is not listed in the index")),
            Some(m) if m.size != data.len() as u64 || m.sha256 != sha256_hex(data) => {
                member_failures.push(fail(name.as_str(), "content does not match its SHA-256 in the index (altered)"))
            }
            Some(_) => {}
        }
    }
    for m in &index.members {
        if !files.contains_key(m.path.as_str()) {
            member_failures.push(fail(m.path.as_str(), "listed in the index but missing"));
        }
    }
    report.add(
        "members",
        index.members.len() as u64,
        member_failures,
        "every member's SHA-256 matches the signed index",
    );

    // Keys: the bundle's node key must be the pinned one.
    let mut key_failures = Vec::new();
    match (&trust.node, files.get("keys.json").map(|b| serde_json::from_slice::<Keys>(b))) {
        (_, None) => key_failures.push(fail("bundle", "no keys.json")),
        (_, Some(Err(e))) => key_failures.push(fail("keys.json", e.to_string())),
        (Some(pinned), Some(Ok(k))) => {
            let pinned_hex = hex::encode(pinned.as_bytes());
            if k.node.key != pinned_hex || index.node_key != pinned_hex {
                key_failures.push(fail("keys.json", "the bundle's node key is not the pinned node key"));
            }
        }
        (None, Some(Ok(_))) => key_failures.push(fail("keys.json", "not evaluated: no node identity key is pinned")),
    }
    report.add("keys", 1, key_failures, "node key equals the pinned key");

    // Entries.
    let mut framed: Vec<(String, &[u8])> = Vec::new();
    let mut framing_failure = None;
    if let Some(bin) = files.get("entries.bin") {
        let mut off = 0usize;
        while off < bin.len() {
            let Some(len) = bin.get(off..off + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
                framing_failure = Some(fail(format!("entries.bin byte {off}"), "truncated length prefix"));
                break;
            };
            let Some(data) = bin.get(off + 4..off + 4 + len) else {
                framing_failure =
                    Some(fail(format!("entries.bin byte {off}"), format!("entry of {len} bytes runs past the end")));
                break;
            };
            framed.push((format!("entry {}", index.range[0] + framed.len() as u64), data));
            off += 4 + len;
        }
    } else {
        framing_failure = Some(fail("bundle", "no entries.bin"));
    }

    // Checkpoint and cosignatures.
    let note = files.get("checkpoint.txt").map(|b| {
        std::str::from_utf8(b).map_err(|e| e.to_string()).and_then(|t| SignedNote::parse(t).map_err(|e| e.to_string()))
    });
    let checkpoint = match note {
        Some(Ok(note)) => {
            // Signature check uses the pinned key; root check happens below (range-aware).
            let mut tmp = Report::default();
            let cp = check_checkpoint(&mut tmp, &note, node_verifier.as_ref(), &index.origin, &[], "checkpoint.txt");
            if let Some(c) = tmp.checks.into_iter().find(|c| c.name == "checkpoint.signature") {
                report.checks.push(c);
            }
            let mut cos_failures = Vec::new();
            for (name, key) in &trust.witnesses {
                if let Err(e) = NoteVerifier::new(name.clone(), *key).verify_cosignature(&note) {
                    cos_failures.push(fail(format!("checkpoint.txt cosignature {name}"), e.to_string()));
                }
            }
            let lines = note.signatures.len().saturating_sub(1);
            report.add(
                "checkpoint.cosignatures",
                trust.witnesses.len() as u64,
                cos_failures,
                format!(
                    "{} pinned witnesses cosigned ({lines} signature lines besides the node's)",
                    trust.witnesses.len()
                ),
            );
            cp.map(|cp| (note, cp))
        }
        other => {
            let reason = match other {
                Some(Err(e)) => e,
                _ => "no checkpoint.txt".into(),
            };
            report.add("checkpoint.signature", 1, vec![fail("checkpoint.txt", reason)], "checkpoint unreadable");
            report.not_evaluated("checkpoint.cosignatures", "checkpoint.txt", "checkpoint unreadable");
            None
        }
    };

    let leaf_hashes = check_entries(&mut report, framed.iter().map(|(p, d)| (p.clone(), *d)));
    if let Some(f) = framing_failure
        && let Some(c) = report.checks.iter_mut().find(|c| c.name == "entries.decode")
    {
        c.failures.push(f);
    }
    let hashes_for_later = leaf_hashes;

    // The tree: whole range → recompute the root; partial → inclusion proofs.
    let proofs: Result<Proofs, String> = files
        .get("proofs.json")
        .ok_or_else(|| "no proofs.json".to_string())
        .and_then(|b| serde_json::from_slice(b).map_err(|e| e.to_string()));
    match (&checkpoint, &proofs) {
        (Some((_, cp)), Ok(proofs)) => {
            let [start, end] = index.range;
            let mut failures = Vec::new();
            if end < start
                || end - start != hashes_for_later.len() as u64
                || end > cp.size
                || cp.size != index.tree_size
            {
                failures.push(fail(
                    "index.json range",
                    format!(
                        "range {start}..{end} does not match {} entries in a tree of {}",
                        hashes_for_later.len(),
                        cp.size
                    ),
                ));
                report.add("tree", 0, failures, "range inconsistent");
            } else if start == 0 && end == cp.size {
                if root_from_leaves(&hashes_for_later) != cp.root {
                    failures.push(fail(
                        "checkpoint.txt",
                        format!("tree head recomputed from the {end} entries differs from the checkpoint's root"),
                    ));
                }
                report.add(
                    "tree",
                    end,
                    failures,
                    format!("tree head of {end} entries recomputed and equal to the checkpoint"),
                );
            } else {
                let by_index: BTreeMap<u64, &InclusionProof> = proofs.inclusion.iter().map(|p| (p.index, p)).collect();
                for (i, leaf) in hashes_for_later.iter().enumerate() {
                    let idx = start + i as u64;
                    let result = by_index
                        .get(&idx)
                        .ok_or_else(|| fail(format!("entry {idx}"), "no inclusion proof"))
                        .and_then(|p| decode_hashes(&format!("proofs.json inclusion {idx}"), &p.hashes))
                        .and_then(|h| {
                            verify_inclusion(leaf, idx, cp.size, &h, &cp.root)
                                .map_err(|e| fail(format!("entry {idx}"), e.to_string()))
                        });
                    if let Err(f) = result {
                        failures.push(f);
                    }
                }
                report.add(
                    "tree",
                    hashes_for_later.len() as u64,
                    failures,
                    "every entry's inclusion proof leads to the checkpoint's root",
                );
            }
            let mut cons_failures = Vec::new();
            for (i, c) in proofs.consistency.iter().enumerate() {
                let place = format!("proofs.json consistency {i}");
                let result =
                    SignedNote::parse(&c.checkpoint).map_err(|e| fail(&place, e.to_string())).and_then(|old| {
                        let old_cp = Checkpoint::parse_body(&old.body).map_err(|e| fail(&place, e.to_string()))?;
                        match &node_verifier {
                            Some(v) => v
                                .verify_signature(&old)
                                .map_err(|e| fail(&place, format!("earlier checkpoint: {e}")))?,
                            None => return Err(fail(&place, "not evaluated: no node identity key is pinned")),
                        }
                        if old_cp.origin != cp.origin {
                            return Err(fail(&place, "earlier checkpoint is from another log"));
                        }
                        let h = decode_hashes(&place, &c.hashes)?;
                        verify_consistency(old_cp.size, cp.size, &old_cp.root, &cp.root, &h)
                            .map_err(|e| fail(&place, e.to_string()))
                    });
                if let Err(f) = result {
                    cons_failures.push(f);
                }
            }
            report.add(
                "proofs.consistency",
                proofs.consistency.len() as u64,
                cons_failures,
                "earlier signed checkpoints are prefixes of this one",
            );
        }
        (_, Err(e)) => {
            report.add("tree", 0, vec![fail("proofs.json", e.clone())], "proofs unreadable");
            report.not_evaluated("proofs.consistency", "proofs.json", "proofs unreadable");
        }
        (None, _) => {
            report.not_evaluated("tree", "checkpoint.txt", "no valid checkpoint");
            report.not_evaluated("proofs.consistency", "checkpoint.txt", "no valid checkpoint");
        }
    }

    // Sections nobody here can check must be empty: never PASS what was not checked.
    let checked_sections = checker.map(|c| c.sections()).unwrap_or_default();
    let mut section_failures = Vec::new();
    let mut section_files = 0u64;
    let mut handed_over: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (name, data) in &members {
        if let Some((section, rest)) = name.split_once('/')
            && SECTIONS.contains(&section)
            && !rest.is_empty()
        {
            section_files += 1;
            if checked_sections.contains(&section) {
                handed_over.insert(name.clone(), data.to_vec());
            } else {
                section_failures
                    .push(fail(name.as_str(), "this verifier version cannot check this section's content yet"));
            }
        }
    }
    // Checkers see the leaf hashes of the entries (e.g. to recompute an attested root).
    report.leaf_hashes = hashes_for_later.clone();
    if let Some(checker) = checker {
        let decoded: Vec<(String, crate::Entry)> =
            framed.iter().filter_map(|(place, d)| crate::Entry::decode(d).ok().map(|e| (place.clone(), e))).collect();
        checker.check(&mut report, &decoded, &handed_over);
    }
    for s in SECTIONS {
        if !files.contains_key(format!("{s}/").as_str()) {
            section_failures.push(fail(format!("{s}/"), "section missing"));
        }
    }
    report.add("sections", section_files, section_failures, format!("{} sections present", SECTIONS.len()));
    report.entries = hashes_for_later.len() as u64;
    report
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
