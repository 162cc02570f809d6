//! The signed image manifest: what PID 1 may use, byte for byte.
//!
//! Canonical bytes are the compact JSON serialization of [`Manifest`] (fields in declaration
//! order, no whitespace, files sorted by path); the detached signature is Ed25519 by the
//! release key over `"sovereign-manifest/v1\n" || canonical bytes`. A manifest is accepted only
//! if its bytes are exactly the canonical serialization of what they decode to.
//! Pure: no IO. Format documented in `docs/image-formats.md`.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// `format` field value.
pub const FORMAT: &str = "sovereign-manifest";
/// Domain separator for the signature.
const SIGNING_CONTEXT: &[u8] = b"sovereign-manifest/v1\n";
/// Largest accepted manifest.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// Files larger than this are also listed piece by piece ([`FileEntry::chunks`]), so PID 1 can
/// hash one large file (the runtime) on every CPU at once.
pub const CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// What kind of initramfs node an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A regular file (hashed).
    File,
    /// A directory.
    Directory,
    /// A character device node (`/dev/console`).
    CharDevice,
    /// A symbolic link (target in `link`).
    Symlink,
}

/// One node of the initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Absolute path inside the initramfs.
    pub path: String,
    /// Node kind.
    pub kind: NodeKind,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// SHA-256 (hex) of the content (files) or of the link target (symlinks); empty otherwise.
    pub sha256: String,
    /// For files larger than [`CHUNK_BYTES`]: the SHA-256 (hex) of each consecutive
    /// [`CHUNK_BYTES`] piece (the last one shorter), in order; empty for every other node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
    /// Device numbers for character devices.
    pub rdev: Option<(u32, u32)>,
    /// Symlink target.
    pub link: Option<String>,
}

impl FileEntry {
    /// A regular file holding `data`: its size, SHA-256 and, when it is large, its pieces'.
    pub fn regular(path: &str, mode: u32, data: &[u8]) -> Self {
        let hex_digest = |b: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b));
        let chunks = if data.len() as u64 > CHUNK_BYTES {
            data.chunks(CHUNK_BYTES as usize).map(hex_digest).collect()
        } else {
            Vec::new()
        };
        FileEntry {
            path: path.into(),
            kind: NodeKind::File,
            mode,
            size: data.len() as u64,
            sha256: hex_digest(data),
            chunks,
            rdev: None,
            link: None,
        }
    }

    /// What PID 1 hashes for this node: `(offset, length, expected SHA-256 hex)` of each piece
    /// of a file (one piece for a small file, [`FileEntry::chunks`] for a large one); nothing for
    /// other nodes. Meaningful once [`Manifest::check_consistency`] passed.
    pub fn pieces(&self) -> Vec<(u64, u64, &str)> {
        if self.kind != NodeKind::File {
            return Vec::new();
        }
        if self.chunks.is_empty() {
            return vec![(0, self.size, self.sha256.as_str())];
        }
        self.chunks
            .iter()
            .enumerate()
            .map(|(i, digest)| {
                let offset = (i as u64).saturating_mul(CHUNK_BYTES);
                // Saturating: an unchecked entry listing more pieces than its size holds gets
                // empty pieces, never a panic.
                (offset, CHUNK_BYTES.min(self.size.saturating_sub(offset)), digest.as_str())
            })
            .collect()
    }
}

/// A kernel module in load order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleEntry {
    /// Module name.
    pub name: String,
    /// Path inside the initramfs (also listed in `files`).
    pub path: String,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// Monotonic image version (anti-rollback).
    pub version: u64,
    /// Kernel release the modules belong to.
    pub kernel_release: String,
    /// The kernel command line this release boots with (the UKI's `.cmdline`). PID 1 refuses
    /// to unseal when `/proc/cmdline` differs: whatever supplied another one (boot-loader load
    /// options, firmware) is not the release.
    pub cmdline: String,
    /// The runtime binary PID 1 starts.
    pub runtime: String,
    /// Path of the runtime configuration inside the initramfs.
    pub runtime_config: String,
    /// SHA-256 (hex) of the runtime configuration.
    pub runtime_config_sha256: String,
    /// Kernel modules, in load order.
    pub modules: Vec<ModuleEntry>,
    /// Every node of the initramfs except the manifest and its signature, sorted by path.
    pub files: Vec<FileEntry>,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Too large.
    #[error("manifest is {0} bytes; the limit is {MAX_MANIFEST_BYTES}")]
    TooLarge(usize),
    /// Not valid JSON for the schema.
    #[error("manifest does not parse: {0}")]
    Malformed(String),
    /// Valid, but not the canonical encoding.
    #[error("manifest bytes are not canonical")]
    NotCanonical,
    /// Wrong format field.
    #[error("manifest format {0:?} is not {FORMAT:?}")]
    Format(String),
    /// Signature missing, malformed or wrong.
    #[error("manifest signature does not verify with the release key")]
    BadSignature,
    /// Internally inconsistent.
    #[error("manifest is inconsistent: {0}")]
    Inconsistent(String),
}

impl Manifest {
    /// Canonical bytes.
    pub fn to_canonical(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.files.sort_by(|a, b| a.path.cmp(&b.path));
        serde_json::to_vec(&m).expect("serializing a plain struct cannot fail")
    }

    /// Signs the canonical bytes with the release key.
    pub fn sign(&self, key: &SigningKey) -> (Vec<u8>, Vec<u8>) {
        let bytes = self.to_canonical();
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(&bytes);
        (bytes, key.sign(&msg).to_bytes().to_vec())
    }

    /// Parses canonical bytes and verifies the detached signature; also checks consistency.
    pub fn verify(bytes: &[u8], signature: &[u8], release_key: &VerifyingKey) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let sig = Signature::from_slice(signature).map_err(|_| ManifestError::BadSignature)?;
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(bytes);
        release_key.verify_strict(&msg, &sig).map_err(|_| ManifestError::BadSignature)?;
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if m.format != FORMAT {
            return Err(ManifestError::Format(m.format));
        }
        if m.to_canonical() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        m.check_consistency()?;
        Ok(m)
    }

    /// Paths are absolute and unique; modules, runtime and config are listed files.
    pub fn check_consistency(&self) -> Result<(), ManifestError> {
        let bad = |s: String| Err(ManifestError::Inconsistent(s));
        let mut prev: Option<&str> = None;
        for f in &self.files {
            if !f.path.starts_with('/') || f.path.contains("/../") || f.path.ends_with("/..") {
                return bad(format!("path {:?} is not a clean absolute path", f.path));
            }
            if prev.is_some_and(|p| p >= f.path.as_str()) {
                return bad(format!("files are not sorted and unique at {:?}", f.path));
            }
            prev = Some(&f.path);
            if f.kind == NodeKind::File && f.sha256.len() != 64 {
                return bad(format!("file {:?} has no SHA-256", f.path));
            }
            let expected_chunks =
                if f.kind == NodeKind::File && f.size > CHUNK_BYTES { f.size.div_ceil(CHUNK_BYTES) } else { 0 };
            if f.chunks.len() as u64 != expected_chunks {
                return bad(format!(
                    "{:?} lists {} piece digests; a {:?} of {} bytes has {expected_chunks}",
                    f.path,
                    f.chunks.len(),
                    f.kind,
                    f.size
                ));
            }
            if let Some(c) = f.chunks.iter().find(|c| c.len() != 64 || !c.bytes().all(|b| b.is_ascii_hexdigit())) {
                return bad(format!("{:?} has a malformed piece digest {c:?}", f.path));
            }
        }
        let is_file = |p: &str| self.files.iter().any(|f| f.path == p && f.kind == NodeKind::File);
        for m in &self.modules {
            if !is_file(&m.path) {
                return bad(format!("module {} ({}) is not a listed file", m.name, m.path));
            }
        }
        if !is_file(&self.runtime) {
            return bad(format!("runtime {:?} is not a listed file", self.runtime));
        }
        if !is_file(&self.runtime_config) {
            return bad(format!("runtime config {:?} is not a listed file", self.runtime_config));
        }
        Ok(())
    }

    /// The entry for `path`.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> FileEntry {
        FileEntry::regular(path, 0o755, data)
    }

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: 3,
            kernel_release: "6.1.0-56-amd64".into(),
            cmdline: "console=ttyS0".into(),
            runtime: "/usr/bin/sovereign-runtime".into(),
            runtime_config: "/etc/sovereign/runtime.json".into(),
            runtime_config_sha256: "00".repeat(32),
            modules: vec![ModuleEntry { name: "virtio_blk".into(), path: "/lib/modules/virtio_blk.ko".into() }],
            files: vec![
                file("/etc/sovereign/runtime.json", b"{}"),
                file("/init", b"pid1"),
                file("/lib/modules/virtio_blk.ko", b"ko"),
                file("/usr/bin/sovereign-runtime", b"rt"),
            ],
        }
    }

    #[test]
    fn signed_manifest_verifies_and_any_change_is_refused() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let (bytes, sig) = sample().sign(&key);
        assert_eq!(Manifest::verify(&bytes, &sig, &key.verifying_key()).unwrap(), sample());
        let other = SigningKey::from_bytes(&[6; 32]);
        assert_eq!(Manifest::verify(&bytes, &sig, &other.verifying_key()), Err(ManifestError::BadSignature));
        let mut changed = bytes.clone();
        let i = changed.iter().position(|b| *b == b'3').unwrap();
        changed[i] = b'4';
        assert_eq!(Manifest::verify(&changed, &sig, &key.verifying_key()), Err(ManifestError::BadSignature));
        // Re-signed but non-canonical (extra space) is refused too.
        let mut spaced = bytes.clone();
        spaced.insert(1, b' ');
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(&spaced);
        let sig2 = key.sign(&msg).to_bytes();
        assert_eq!(Manifest::verify(&spaced, &sig2, &key.verifying_key()), Err(ManifestError::NotCanonical));
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut m = sample();
        m.runtime = "/bin/sh".into();
        assert!(m.check_consistency().is_err());
        let mut m = sample();
        m.files.push(file("/init", b"again"));
        m.files.sort_by(|a, b| a.path.cmp(&b.path));
        assert!(m.check_consistency().is_err());
    }

    #[test]
    fn a_large_file_is_listed_piece_by_piece_and_its_pieces_are_checked() {
        let big: Vec<u8> = (0..(2 * CHUNK_BYTES + 5)).map(|i| (i % 251) as u8).collect();
        let entry = FileEntry::regular("/usr/bin/sovereign-runtime", 0o755, &big);
        assert_eq!(entry.chunks.len(), 3);
        let pieces = entry.pieces();
        assert_eq!(
            pieces.iter().map(|(offset, len, _)| (*offset, *len)).collect::<Vec<_>>(),
            vec![(0, CHUNK_BYTES), (CHUNK_BYTES, CHUNK_BYTES), (2 * CHUNK_BYTES, 5)]
        );
        // Each piece digest is SHA-256 of exactly those bytes (checked with an independent
        // slicing of the same data).
        for (offset, len, digest) in pieces {
            let bytes = &big[offset as usize..(offset + len) as usize];
            assert_eq!(digest, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)));
        }
        // A small file has no pieces besides itself.
        let small = FileEntry::regular("/init", 0o755, b"pid1");
        assert!(small.chunks.is_empty());
        assert_eq!(small.pieces(), vec![(0, 4, small.sha256.as_str())]);

        let mut m = sample();
        m.files.retain(|f| f.path != "/usr/bin/sovereign-runtime");
        m.files.push(entry.clone());
        m.files.sort_by(|a, b| a.path.cmp(&b.path));
        m.check_consistency().unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let (bytes, sig) = m.sign(&key);
        assert_eq!(Manifest::verify(&bytes, &sig, &key.verifying_key()).unwrap(), m);

        // One piece missing, one too many, a piece list on a small file, a malformed digest.
        let with_runtime = |f: &dyn Fn(&mut FileEntry)| {
            let mut m = m.clone();
            m.files.iter_mut().filter(|e| e.path == "/usr/bin/sovereign-runtime").for_each(f);
            m.check_consistency()
        };
        assert!(
            with_runtime(&|e| {
                e.chunks.pop();
            })
            .is_err()
        );
        assert!(with_runtime(&|e| e.chunks.push("00".repeat(32))).is_err());
        assert!(with_runtime(&|e| e.chunks[1] = "zz".repeat(32)).is_err());
        // An unchecked entry with more pieces than its size holds: pieces, never a panic.
        let mut short = entry.clone();
        short.size = 3;
        assert_eq!(short.pieces().iter().map(|(_, len, _)| *len).collect::<Vec<_>>(), vec![3, 0, 0]);
        let mut m = sample();
        m.files.iter_mut().filter(|e| e.path == "/init").for_each(|e| e.chunks = vec![e.sha256.clone()]);
        let err = m.check_consistency().unwrap_err().to_string();
        assert!(err.contains("\"/init\" lists 1 piece digests"), "{err}");
    }
}
