//! The offline verifier of a compliance bundle: every check named, every failure placed, a
//! check that cannot run reported as not evaluated (never as passed).

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

use super::*; // the bundle's model
use crate::merkle::{Hash, root_from_leaves, verify_consistency, verify_inclusion};
use crate::note::{Checkpoint, NoteVerifier, SignedNote};
use crate::verify::{Failure, Report, check_checkpoint, check_entries, fail};

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
    // Every check from `from` on (in LATER's order) is reported as not evaluated, and the
    // sections too: nothing after a refusal passes by default.
    let abort = |report: &mut Report, from: &str, why: &str| {
        let start = LATER.iter().position(|n| *n == from).unwrap_or(0);
        for name in &LATER[start..] {
            report.not_evaluated(name, "bundle", why);
        }
        report.not_evaluated("sections", "bundle", why);
    };
    if bytes.len() > MAX_BUNDLE_BYTES {
        report.add("container", 1, vec![fail("bundle", "larger than 4 GiB")], "too large");
        abort(&mut report, "index", "container refused");
        return report;
    }
    let members = match read_tar(bytes) {
        Ok(m) => {
            report.add("container", m.len() as u64, vec![], format!("{} members, canonical ustar", m.len()));
            m
        }
        Err(f) => {
            report.add("container", 1, vec![f], "not a canonical bundle archive");
            abort(&mut report, "index", "container refused");
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
            abort(&mut report, "index.signature", "index unsupported");
            return report;
        }
        Some(Err(e)) => {
            report.add("index", 1, vec![fail("index.json", e.to_string())], "does not parse");
            abort(&mut report, "index.signature", "index does not parse");
            return report;
        }
        None => {
            report.add("index", 1, vec![fail("bundle", "no index.json")], "missing");
            abort(&mut report, "index.signature", "no index");
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
    for s in REQUIRED_SECTIONS {
        if !files.contains_key(format!("{s}/").as_str()) {
            section_failures.push(fail(format!("{s}/"), "section missing"));
        }
    }
    let present = SECTIONS.iter().filter(|s| files.contains_key(format!("{s}/").as_str())).count();
    report.add("sections", section_files, section_failures, format!("{present} sections present"));
    report.entries = hashes_for_later.len() as u64;
    report
}
