//! The update bundle of a built image (`sovereign-image bundle`): the image directory's UKI,
//! signed manifest, signed reference values and signed PCR policy, signed by release signers of
//! the key set in `keys/update/`, then verified as a node at the previous version would verify
//! it — so a bundle this writes is one a node takes, or the command says why not.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, anyhow};

use crate::keys::KeySet;

/// The payload file names in an image directory, by bundle member name.
const FROM_IMAGE: [(&str, &str); 6] = [
    ("uki.efi", "sovereign.efi"),
    ("manifest.json", "manifest.json"),
    ("manifest.sig", "manifest.sig"),
    ("reference-values.json", "reference-values.json"),
    ("reference-values.sig", "reference-values.sig"),
    ("pcr-policy.json", "pcr-policy.json"),
];

/// A written bundle, as its self-check saw it.
#[derive(Debug, serde::Serialize)]
pub struct Written {
    /// The release version.
    pub release_version: u64,
    /// Bytes.
    pub size: usize,
    /// How many release keys signed.
    pub signed_by: usize,
    /// The key set's threshold.
    pub threshold: u32,
    /// The key set's serial.
    pub keyset_serial: u64,
    /// The platform.
    pub platform: String,
    /// SHA-256 of the bundle (hex).
    pub sha256: String,
    /// The self-check: `None` when a node at the previous version takes it, else its refusal.
    pub refused: Option<String>,
}

/// Builds the bundle of the image in `image_dir`, signed by the first `signers` release
/// signers, and checks it as a node at the previous release would.
pub fn bundle(image_dir: &Path, keys: &KeySet, signers: usize, platform: &str) -> anyhow::Result<(Vec<u8>, Written)> {
    let mut payload = BTreeMap::new();
    for (member, file) in FROM_IMAGE {
        let path = image_dir.join(file);
        payload.insert(member.to_string(), fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    let manifest = sovereign_boot_contract::manifest::Manifest::verify(
        &payload["manifest.json"],
        &payload["manifest.sig"],
        &keys.release.verifying_key(),
    )
    .map_err(|e| anyhow!("{}: {e}", image_dir.join("manifest.json").display()))?;
    let chosen = keys
        .update
        .signers
        .get(..signers)
        .ok_or_else(|| anyhow!("{signers} signers asked for, the key set has {}", keys.update.signers.len()))?;
    let input = sovereign_update::BundleInput {
        release_version: manifest.version,
        platform,
        payload: &payload,
        keyset: (&keys.update.keyset, &keys.update.keyset_signature),
        rotation: None,
    };
    let bytes = sovereign_update::build(&input, chosen).map_err(|e| anyhow!("building the bundle: {e}"))?;
    let keyset: sovereign_update::KeySet = serde_json::from_slice(&keys.update.keyset)?;
    let trust = sovereign_update::Trust {
        root: keys.update.root.verifying_key(),
        root_serial: 0,
        keyset_serial: keyset.serial,
        floor: manifest.version.saturating_sub(1),
        platform: sovereign_update::PLATFORM_QEMU_X86_64.into(),
        release_key: keys.release.verifying_key(),
    };
    let refused = sovereign_update::verify(&bytes, &trust).err().map(|e| e.to_string());
    let written = Written {
        release_version: manifest.version,
        size: bytes.len(),
        signed_by: chosen.len(),
        threshold: keyset.threshold,
        keyset_serial: keyset.serial,
        platform: platform.into(),
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        refused,
    };
    Ok((bytes, written))
}
