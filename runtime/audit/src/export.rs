//! Exporting a compliance bundle from an open log (the IO side of `bundle`).

use ed25519_dalek::SigningKey;

use crate::bundle::{BundleContents, ConsistencyProof, InclusionProof, NamedKey, Proofs, encode_hashes, write_bundle};
use crate::logfile::{self, DataKey};
use crate::note::{Checkpoint, SignedNote};
use crate::store::{AuditLog, StoreError};

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// `[start, end)`; the whole log when `None`.
    pub range: Option<(u64, u64)>,
    /// Witness keys to list in `keys.json`.
    pub witnesses: Vec<NamedKey>,
    /// Files for the attestation/reference-values/policies/decision-inputs/role-certificates
    /// sections: (section, name, bytes).
    pub section_files: Vec<(String, String, Vec<u8>)>,
    /// A checkpoint the node signed that its witnesses cosigned (`<log>.witnessed`): its
    /// cosignatures join the bundle's checkpoint when it is the same, or it goes into the
    /// bundle with a consistency proof to the bundle's checkpoint when it is older. One the log
    /// does not hold is refused.
    pub witnessed: Option<SignedNote>,
}

/// Builds a compliance bundle of `log`. Uses the stored checkpoint when it covers the whole
/// durable log (keeping its cosignatures); otherwise signs and stores a new one and includes a
/// consistency proof from the earlier one. A log shorter than, or inconsistent with, the
/// stored checkpoint is refused.
pub fn export_bundle(
    log: &AuditLog,
    key: &DataKey,
    node_key: &SigningKey,
    options: &ExportOptions,
) -> Result<Vec<u8>, StoreError> {
    let size = log.size();
    let stored = log.latest_checkpoint()?;
    let stored_cp = stored
        .as_ref()
        .map(|n| Checkpoint::parse_body(&n.body))
        .transpose()
        .map_err(|e| StoreError::Invalid(format!("the stored checkpoint does not parse: {e}")))?;
    // The last checkpoint the node signed is where every export proves consistency from: a
    // log that no longer holds it, or holds other entries under it, is refused.
    if let Some(cp) = &stored_cp {
        if cp.size > size {
            return Err(StoreError::Invalid(format!(
                "the audit log holds {size} entries, fewer than the {} of the last checkpoint the node signed (it was cut)",
                cp.size
            )));
        }
        if log.root_at(cp.size)? != cp.root {
            return Err(StoreError::Invalid(format!(
                "the audit log's first {} entries are not the ones the node's last checkpoint signed",
                cp.size
            )));
        }
    }
    let (mut note, earlier) = match (&stored, &stored_cp) {
        (Some(n), Some(cp)) if cp.size == size => (n.clone(), None),
        _ => (log.checkpoint(node_key)?, stored.clone().zip(stored_cp)),
    };
    let mut witnessed = None;
    if let Some(w) = &options.witnessed {
        let cp = Checkpoint::parse_body(&w.body)
            .map_err(|e| StoreError::Invalid(format!("the witnessed checkpoint does not parse: {e}")))?;
        if cp.origin != log.origin() || cp.size > size || log.root_at(cp.size)? != cp.root {
            return Err(StoreError::Invalid(format!(
                "the witnessed checkpoint (size {}) is not one of this log's (a log of {size} entries)",
                cp.size
            )));
        }
        if w.body == note.body {
            for line in &w.signatures {
                if !note.signatures.iter().any(|s| s.name == line.name && s.key_id == line.key_id) {
                    note.signatures.push(line.clone());
                }
            }
        } else if cp.size > 0 {
            witnessed = Some((w.clone(), cp));
        }
    }
    let (start, end) = options.range.unwrap_or((0, size));
    if start > end || end > size {
        return Err(StoreError::Invalid(format!("range {start}..{end} is outside the log's {size} entries")));
    }
    let bytes = std::fs::read(log.path()).map_err(|source| StoreError::Io {
        action: "reading",
        path: log.path().into(),
        source,
    })?;
    let decoded =
        logfile::decode(&bytes, key).map_err(|source| StoreError::Format { path: log.path().into(), source })?;
    let entries: Vec<Vec<u8>> = decoded
        .entries
        .get(start as usize..end as usize)
        .ok_or_else(|| {
            StoreError::Invalid(format!("the file holds {} entries, fewer than {end}", decoded.entries.len()))
        })?
        .to_vec();
    let mut proofs = Proofs::default();
    if (start, end) != (0, size) {
        for i in start..end {
            proofs.inclusion.push(InclusionProof { index: i, hashes: encode_hashes(&log.inclusion_proof(i, size)?) });
        }
    }
    for (old_note, old_cp) in earlier.into_iter().chain(witnessed) {
        if old_cp.size > 0
            && old_cp.size < size
            && !proofs.consistency.iter().any(|c| c.checkpoint == old_note.to_text())
        {
            proofs.consistency.push(ConsistencyProof {
                checkpoint: old_note.to_text(),
                hashes: encode_hashes(&log.consistency_proof(old_cp.size, size)?),
            });
        }
    }
    write_bundle(
        &BundleContents {
            origin: log.origin().to_string(),
            entries,
            range: [start, end],
            checkpoint: note,
            proofs,
            witnesses: options.witnesses.clone(),
            section_files: options.section_files.clone(),
        },
        node_key,
    )
    .map_err(StoreError::Invalid)
}
