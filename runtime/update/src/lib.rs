//! `sovereign-update`: the update bundle — one file that carries a release to a node (the UKI, its
//! signed manifest, its signed reference values and signed PCR policy), signed by **M of N
//! release keys** whose key set a root key signs; the root can be rotated by a bundle signed
//! under the old root and the new one (TUF's rule). Building (signing) and verification, pure.
//!
//! Verification ([`verify`]) runs on bytes in memory before anything is written: the container,
//! the root rotation, the key set, the threshold, the version against the node's floor, the
//! platform, every payload file's size and SHA-256 against the signed metadata, and the payload's
//! own signatures and versions against each other. The first failure is the refusal, one line.
//!
//! Must never: accept a bundle fewer than M distinct keys of the key set signed, a signature by a
//! key outside the set or revoked, a key set the (possibly rotated) root did not sign or older
//! than the node's, a release at or below the floor, another platform's bundle, a member the
//! signed metadata does not name, or any changed byte; do IO; panic on any input.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

pub mod fuzzing;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The metadata's `format`.
pub const FORMAT: &str = "sovereign-update-bundle";
/// The metadata's `format_version`.
pub const FORMAT_VERSION: u32 = 1;
/// The largest bundle a node takes (the UKI is ~22 MiB).
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;
/// The payload: the files a release consists of, each named in the signed metadata.
pub const PAYLOAD: [&str; 6] =
    ["uki.efi", "manifest.json", "manifest.sig", "reference-values.json", "reference-values.sig", "pcr-policy.json"];
/// The platform the project's images are built for (QEMU q35 + OVMF, x86-64).
pub const PLATFORM_QEMU_X86_64: &str = "x86_64-qemu-ovmf";

const METADATA: &str = "metadata.json";
const SIGNATURES: &str = "signatures.json";
const KEYSET: &str = "keyset.json";
const KEYSET_SIG: &str = "keyset.sig";
const ROOT: &str = "root.json";
const ROOT_SIG_OLD: &str = "root.sig-old";
const ROOT_SIG_NEW: &str = "root.sig-new";

/// Domain separation of what each key signs.
const METADATA_CONTEXT: &[u8] = b"sovereign-update/metadata/v1\n";
const KEYSET_CONTEXT: &[u8] = b"sovereign-update/keyset/v1\n";
const ROOT_CONTEXT: &[u8] = b"sovereign-update/root/v1\n";

/// The release keys and how many must sign a bundle, signed by the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySet {
    /// Increases with every new key set; a node refuses one older than it has seen.
    pub serial: u64,
    /// M: distinct keys of `keys` that must sign.
    pub threshold: u32,
    /// N release keys (Ed25519, hex).
    pub keys: Vec<String>,
    /// Keys that must no longer sign (hex): a signature by one refuses the bundle.
    #[serde(default)]
    pub revoked: Vec<String>,
}

/// A new root, signed by the old root and by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootRotation {
    /// Increases with every rotation.
    pub serial: u64,
    /// The new root key (Ed25519, hex).
    pub root: String,
}

/// One payload file as the metadata names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Member name.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 (hex).
    pub sha256: String,
}

/// What the release keys sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The release (image) version.
    pub release_version: u64,
    /// The platform it is built for.
    pub platform: String,
    /// The serial of the key set that signs it.
    pub keyset_serial: u64,
    /// Every payload file, in [`PAYLOAD`] order.
    pub files: Vec<FileEntry>,
}

/// One release key's signature over the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSignature {
    /// The key (hex).
    pub key: String,
    /// Ed25519 over the metadata's domain-separated bytes (hex).
    pub signature: String,
}

/// What the node trusts when it verifies a bundle.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The update root the node trusts now (the image carries it; a rotation replaces it).
    pub root: VerifyingKey,
    /// The serial of that root (0: the image's own).
    pub root_serial: u64,
    /// The newest key-set serial the node has accepted.
    pub keyset_serial: u64,
    /// The anti-rollback floor: only releases above it are taken.
    pub floor: u64,
    /// The node's platform.
    pub platform: String,
    /// The release key (manifests and reference values), compiled into the node.
    pub release_key: VerifyingKey,
}

/// A bundle that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The release version.
    pub release_version: u64,
    /// The payload files by name.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The key set that signed it.
    pub keyset: KeySet,
    /// The root after the bundle's rotation (if any).
    pub root: VerifyingKey,
    /// The root's serial after the rotation.
    pub root_serial: u64,
    /// The keys whose signatures counted (hex), sorted.
    pub signers: Vec<String>,
}

/// Why a bundle was refused: one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Larger than [`MAX_BUNDLE_BYTES`].
    #[error("the bundle is {0} bytes, more than the {MAX_BUNDLE_BYTES} a node takes")]
    TooLarge(usize),
    /// Not a canonical container.
    #[error("not an update bundle: {0}")]
    Container(String),
    /// A member is missing.
    #[error("the bundle has no {0}")]
    Missing(&'static str),
    /// A member nobody signed for.
    #[error("the bundle carries {0}, which the signed metadata does not name")]
    Unexpected(String),
    /// A JSON member does not decode.
    #[error("{0}: {1}")]
    Malformed(&'static str, String),
    /// The root rotation does not hold.
    #[error("root rotation: {0}")]
    Root(String),
    /// The key set does not hold.
    #[error("key set: {0}")]
    KeySet(String),
    /// A signature by a key outside the key set.
    #[error("the metadata is signed by {0}, which is not in key set {1}")]
    UnknownSigner(String, u64),
    /// A signature by a revoked key.
    #[error("the metadata is signed by revoked key {0}")]
    RevokedSigner(String),
    /// A signature that does not verify.
    #[error("the signature by {0} does not verify over the metadata")]
    BadSignature(String),
    /// Fewer than M valid signatures.
    #[error("{valid} valid release signatures; key set {serial} requires {needed}")]
    Threshold {
        /// Distinct valid signers.
        valid: usize,
        /// M.
        needed: u32,
        /// The key set's serial.
        serial: u64,
    },
    /// The metadata's format.
    #[error("metadata: format {0:?} version {1}, expected {FORMAT:?} version {FORMAT_VERSION}")]
    Format(String, u32),
    /// Not newer than the floor.
    #[error("release v{version} is not above the anti-rollback floor v{floor}")]
    NotNewer {
        /// The bundle's release.
        version: u64,
        /// The node's floor.
        floor: u64,
    },
    /// Built for another platform.
    #[error("built for platform {bundle:?}, this node is {node:?}")]
    Platform {
        /// The bundle's.
        bundle: String,
        /// The node's.
        node: String,
    },
    /// A payload file differs from the signed metadata.
    #[error("{0}: {1}")]
    File(String, String),
    /// The payload contradicts itself or its own signatures.
    #[error("payload: {0}")]
    Payload(String),
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn signed(context: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut m = context.to_vec();
    m.extend_from_slice(bytes);
    m
}

fn key_of_hex(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(text).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

fn check(key: &VerifyingKey, context: &[u8], bytes: &[u8], signature: &[u8]) -> bool {
    Signature::from_slice(signature).is_ok_and(|s| key.verify_strict(&signed(context, bytes), &s).is_ok())
}

/// Signs a key set with the root: (`keyset.json`, `keyset.sig`).
pub fn sign_keyset(keyset: &KeySet, root: &SigningKey) -> (Vec<u8>, Vec<u8>) {
    let bytes = serde_json::to_vec_pretty(keyset).unwrap_or_default();
    let sig = root.sign(&signed(KEYSET_CONTEXT, &bytes)).to_bytes().to_vec();
    (bytes, sig)
}

/// A root rotation to `new`, signed by the old root and the new one.
pub fn rotate_root(serial: u64, old: &SigningKey, new: &SigningKey) -> SignedRotation {
    let rotation = RootRotation { serial, root: hex::encode(new.verifying_key().as_bytes()) };
    let bytes = serde_json::to_vec_pretty(&rotation).unwrap_or_default();
    SignedRotation {
        old_signature: old.sign(&signed(ROOT_CONTEXT, &bytes)).to_bytes().to_vec(),
        new_signature: new.sign(&signed(ROOT_CONTEXT, &bytes)).to_bytes().to_vec(),
        bytes,
    }
}

/// A root rotation as the bundle carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRotation {
    /// `root.json`.
    pub bytes: Vec<u8>,
    /// `root.sig-old`: by the root being replaced.
    pub old_signature: Vec<u8>,
    /// `root.sig-new`: by the new root.
    pub new_signature: Vec<u8>,
}

/// What a bundle is built from.
#[derive(Debug, Clone)]
pub struct BundleInput<'a> {
    /// The release version.
    pub release_version: u64,
    /// The platform.
    pub platform: &'a str,
    /// Every [`PAYLOAD`] file by name.
    pub payload: &'a BTreeMap<String, Vec<u8>>,
    /// `keyset.json` and `keyset.sig` ([`sign_keyset`]).
    pub keyset: (&'a [u8], &'a [u8]),
    /// A root rotation to carry, if any.
    pub rotation: Option<&'a SignedRotation>,
}

/// Builds a bundle signed by `signers` (release keys). Refuses a payload that lacks a file or
/// has one too many, and a key set that does not decode.
pub fn build(input: &BundleInput<'_>, signers: &[SigningKey]) -> Result<Vec<u8>, Refusal> {
    let keyset: KeySet =
        serde_json::from_slice(input.keyset.0).map_err(|e| Refusal::Malformed("keyset.json", e.to_string()))?;
    if let Some(extra) = input.payload.keys().find(|k| !PAYLOAD.contains(&k.as_str())) {
        return Err(Refusal::Unexpected(extra.clone()));
    }
    let mut files = Vec::new();
    for name in PAYLOAD {
        let bytes = input.payload.get(name).ok_or(Refusal::Missing(name))?;
        files.push(FileEntry { path: name.into(), size: bytes.len() as u64, sha256: sha256_hex(bytes) });
    }
    let metadata = Metadata {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        release_version: input.release_version,
        platform: input.platform.into(),
        keyset_serial: keyset.serial,
        files,
    };
    let metadata =
        serde_json::to_vec_pretty(&metadata).map_err(|e| Refusal::Malformed("metadata.json", e.to_string()))?;
    let signatures: Vec<MetadataSignature> = signers
        .iter()
        .map(|k| MetadataSignature {
            key: hex::encode(k.verifying_key().as_bytes()),
            signature: hex::encode(k.sign(&signed(METADATA_CONTEXT, &metadata)).to_bytes()),
        })
        .collect();
    let signatures =
        serde_json::to_vec_pretty(&signatures).map_err(|e| Refusal::Malformed("signatures.json", e.to_string()))?;
    let mut members: Vec<(String, Vec<u8>)> = vec![
        (METADATA.into(), metadata),
        (SIGNATURES.into(), signatures),
        (KEYSET.into(), input.keyset.0.to_vec()),
        (KEYSET_SIG.into(), input.keyset.1.to_vec()),
    ];
    if let Some(r) = input.rotation {
        members.push((ROOT.into(), r.bytes.clone()));
        members.push((ROOT_SIG_OLD.into(), r.old_signature.clone()));
        members.push((ROOT_SIG_NEW.into(), r.new_signature.clone()));
    }
    for name in PAYLOAD {
        members.push((name.into(), input.payload.get(name).cloned().unwrap_or_default()));
    }
    Ok(sovereign_audit::bundle::write_tar(&members))
}

/// The root the bundle's key set must be signed by: the trusted one, or the bundle's rotation
/// of it (signed by the trusted root and by the new root, with a newer serial).
fn rotated_root(members: &BTreeMap<String, Vec<u8>>, trust: &Trust) -> Result<(VerifyingKey, u64), Refusal> {
    let (Some(bytes), old, new) = (members.get(ROOT), members.get(ROOT_SIG_OLD), members.get(ROOT_SIG_NEW)) else {
        if members.contains_key(ROOT_SIG_OLD) || members.contains_key(ROOT_SIG_NEW) {
            return Err(Refusal::Root("root signatures without root.json".into()));
        }
        return Ok((trust.root, trust.root_serial));
    };
    let (Some(old), Some(new)) = (old, new) else {
        return Err(Refusal::Root("root.json needs root.sig-old and root.sig-new".into()));
    };
    let rotation: RootRotation =
        serde_json::from_slice(bytes).map_err(|e| Refusal::Malformed("root.json", e.to_string()))?;
    let root = key_of_hex(&rotation.root).ok_or_else(|| Refusal::Root("the new root is not an Ed25519 key".into()))?;
    if !check(&trust.root, ROOT_CONTEXT, bytes, old) {
        return Err(Refusal::Root("not signed by the root this node trusts".into()));
    }
    if !check(&root, ROOT_CONTEXT, bytes, new) {
        return Err(Refusal::Root("not signed by the new root itself".into()));
    }
    if rotation.serial <= trust.root_serial {
        return Err(Refusal::Root(format!(
            "serial {} is not newer than the node's root serial {}",
            rotation.serial, trust.root_serial
        )));
    }
    Ok((root, rotation.serial))
}

fn json<T: for<'de> Deserialize<'de>>(members: &BTreeMap<String, Vec<u8>>, name: &'static str) -> Result<T, Refusal> {
    let bytes = members.get(name).ok_or(Refusal::Missing(name))?;
    serde_json::from_slice(bytes).map_err(|e| Refusal::Malformed(name, e.to_string()))
}

/// Verifies a bundle completely, in memory; nothing is written before this returns `Ok`.
pub fn verify(bytes: &[u8], trust: &Trust) -> Result<Verified, Refusal> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(Refusal::TooLarge(bytes.len()));
    }
    let list = sovereign_audit::bundle::read_tar(bytes)
        .map_err(|f| Refusal::Container(format!("{}: {}", f.place, f.reason)))?;
    // One order only (the one `build` writes): every member present once, nothing else.
    let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    let rotated = names.iter().any(|n| [ROOT, ROOT_SIG_OLD, ROOT_SIG_NEW].contains(n));
    let mut expected = vec![METADATA, SIGNATURES, KEYSET, KEYSET_SIG];
    if rotated {
        expected.extend([ROOT, ROOT_SIG_OLD, ROOT_SIG_NEW]);
    }
    expected.extend(PAYLOAD);
    if let Some(stray) = names.iter().find(|n| !expected.contains(n)) {
        return Err(Refusal::Unexpected((*stray).to_string()));
    }
    if let Some(missing) = expected.iter().find(|e| !names.contains(e)) {
        return Err(Refusal::Missing(missing));
    }
    if names != expected {
        return Err(Refusal::Container(format!("members out of order or repeated: {names:?}")));
    }
    let mut members: BTreeMap<String, Vec<u8>> = list.into_iter().collect();

    // The root, then the key set it signs.
    let (root, root_serial) = rotated_root(&members, trust)?;
    let keyset_bytes = members.get(KEYSET).ok_or(Refusal::Missing(KEYSET))?;
    let keyset_sig = members.get(KEYSET_SIG).ok_or(Refusal::Missing(KEYSET_SIG))?;
    if !check(&root, KEYSET_CONTEXT, keyset_bytes, keyset_sig) {
        return Err(Refusal::KeySet("not signed by the update root".into()));
    }
    let keyset: KeySet = json(&members, KEYSET)?;
    if keyset.serial < trust.keyset_serial {
        return Err(Refusal::KeySet(format!(
            "serial {} is older than the node's key set {}",
            keyset.serial, trust.keyset_serial
        )));
    }
    let listed: BTreeSet<String> = keyset.keys.iter().map(|k| k.to_ascii_lowercase()).collect();
    if keyset.threshold == 0 || keyset.threshold as usize > listed.len() {
        return Err(Refusal::KeySet(format!(
            "threshold {} of {} distinct keys cannot be met safely",
            keyset.threshold,
            listed.len()
        )));
    }

    // The metadata and its M-of-N signatures.
    let metadata_bytes = members.get(METADATA).ok_or(Refusal::Missing(METADATA))?;
    let signatures: Vec<MetadataSignature> = json(&members, SIGNATURES)?;
    let mut signers = BTreeSet::new();
    for s in &signatures {
        let key = s.key.to_ascii_lowercase();
        if keyset.revoked.iter().any(|r| r.eq_ignore_ascii_case(&key)) {
            return Err(Refusal::RevokedSigner(key));
        }
        if !listed.contains(&key) {
            return Err(Refusal::UnknownSigner(key, keyset.serial));
        }
        let valid = key_of_hex(&key).is_some_and(|k| {
            hex::decode(&s.signature).is_ok_and(|sig| check(&k, METADATA_CONTEXT, metadata_bytes, &sig))
        });
        if !valid {
            return Err(Refusal::BadSignature(key));
        }
        signers.insert(key);
    }
    if signers.len() < keyset.threshold as usize {
        return Err(Refusal::Threshold { valid: signers.len(), needed: keyset.threshold, serial: keyset.serial });
    }
    let metadata: Metadata = json(&members, METADATA)?;
    if metadata.format != FORMAT || metadata.format_version != FORMAT_VERSION {
        return Err(Refusal::Format(metadata.format, metadata.format_version));
    }
    if metadata.keyset_serial != keyset.serial {
        return Err(Refusal::KeySet(format!(
            "the metadata names key set {}, the bundle carries {}",
            metadata.keyset_serial, keyset.serial
        )));
    }
    if metadata.release_version <= trust.floor {
        return Err(Refusal::NotNewer { version: metadata.release_version, floor: trust.floor });
    }
    if metadata.platform != trust.platform {
        return Err(Refusal::Platform { bundle: metadata.platform, node: trust.platform.clone() });
    }

    // Every payload file, byte for byte as signed.
    let named: Vec<&str> = metadata.files.iter().map(|f| f.path.as_str()).collect();
    if named != PAYLOAD {
        return Err(Refusal::Payload(format!("the metadata names {named:?}, a release is {PAYLOAD:?}")));
    }
    let mut files = BTreeMap::new();
    for entry in &metadata.files {
        let name = PAYLOAD.iter().find(|p| **p == entry.path).copied().unwrap_or("payload file");
        let data = members.remove(&entry.path).ok_or(Refusal::Missing(name))?;
        if data.len() as u64 != entry.size {
            return Err(Refusal::File(
                entry.path.clone(),
                format!("{} bytes, the metadata says {}", data.len(), entry.size),
            ));
        }
        if sha256_hex(&data) != entry.sha256 {
            return Err(Refusal::File(entry.path.clone(), "its SHA-256 is not the one the metadata signs".into()));
        }
        files.insert(entry.path.clone(), data);
    }
    check_payload(&files, metadata.release_version, &trust.release_key)?;
    Ok(Verified {
        release_version: metadata.release_version,
        files,
        keyset,
        root,
        root_serial,
        signers: signers.into_iter().collect(),
    })
}

/// The payload agrees with itself: the manifest is the release key's and this version, the
/// reference values are the release key's and name this UKI and manifest, the PCR policy is for
/// this version.
fn check_payload(files: &BTreeMap<String, Vec<u8>>, version: u64, release_key: &VerifyingKey) -> Result<(), Refusal> {
    let get = |name: &str| files.get(name).map(Vec::as_slice).unwrap_or_default();
    let manifest =
        sovereign_boot_contract::manifest::Manifest::verify(get("manifest.json"), get("manifest.sig"), release_key)
            .map_err(|e| Refusal::Payload(format!("manifest: {e}")))?;
    if manifest.version != version {
        return Err(Refusal::Payload(format!("the manifest is v{}, the bundle v{version}", manifest.version)));
    }
    let reference = get("reference-values.json");
    let signature_ok = Signature::from_slice(get("reference-values.sig"))
        .is_ok_and(|s| release_key.verify_strict(reference, &s).is_ok());
    if !signature_ok {
        return Err(Refusal::Payload("reference values not signed by the release key".into()));
    }
    #[derive(Deserialize)]
    struct Reference {
        version: u64,
        uki_sha256: String,
        manifest_sha256: String,
    }
    let r: Reference =
        serde_json::from_slice(reference).map_err(|e| Refusal::Payload(format!("reference values: {e}")))?;
    if r.version != version
        || r.uki_sha256 != sha256_hex(get("uki.efi"))
        || r.manifest_sha256 != sha256_hex(get("manifest.json"))
    {
        return Err(Refusal::Payload(format!(
            "the reference values (v{}) do not name this release's UKI and manifest (v{version})",
            r.version
        )));
    }
    let policy = sovereign_measured_boot::SignedPcrPolicy::from_json(get("pcr-policy.json"))
        .map_err(|e| Refusal::Payload(format!("PCR policy: {e}")))?;
    if policy.release_version != version {
        return Err(Refusal::Payload(format!(
            "the PCR policy is for release v{}, the bundle v{version}",
            policy.release_version
        )));
    }
    Ok(())
}
