//! The encrypted store on the data partition: content-addressed artifacts and named records
//! (runs, the deployment state), each file sealed with AES-256-GCM under a key derived from the
//! TPM-sealed data key.
//!
//! ```text
//! file = "SVSEAL01" | nonce (12, random) | AES-256-GCM(plaintext) (+16-byte tag)
//! key  = SHA-256("sovereign-store-key/v1\n" || data key)
//! aad  = "SVSEAL01" || kind ("artifact" | "record") || 0x00 || name
//! ```
//! An artifact's name is the SHA-256 of its plaintext, checked again on every read, so a file
//! swapped for another artifact, altered, or truncated is refused by name. Writes are
//! crash-safe: temporary file, `fsync`, rename, directory `fsync`; a write returns only once
//! durable. What is visible without the key: file names (artifact hashes, run IDs) and sizes.

use std::fs;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use sovereign_audit::logfile::DataKey;

use crate::error::StoreError;

const MAGIC: &[u8; 8] = b"SVSEAL01";
/// Largest artifact the store takes: the largest payload a request may carry (a dataset).
pub const MAX_ARTIFACT_BYTES: u64 = sovereign_protocol::MAX_MESSAGE_PAYLOAD;
/// Largest file the store reads back: the largest artifact with room for the seal's header and
/// tag.
pub const MAX_SEALED_BYTES: u64 = MAX_ARTIFACT_BYTES + (1 << 20);

/// The store.
pub struct Store {
    root: PathBuf,
    aead: Aes256Gcm,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish_non_exhaustive()
    }
}

pub use sovereign_canonical::sha256;

fn aad(kind: &str, name: &str) -> Vec<u8> {
    let mut a = MAGIC.to_vec();
    a.extend_from_slice(kind.as_bytes());
    a.push(0);
    a.extend_from_slice(name.as_bytes());
    a
}

/// A [`StoreError::Io`] for `action` on `path`.
fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { action, path, source }
}

fn nonce_of(sealed: &[u8]) -> [u8; 12] {
    let mut n = [0u8; 12];
    n.copy_from_slice(&sealed[8..20]);
    n
}

impl Store {
    /// Opens (creating the directories of) the store under `root`.
    pub fn open(root: &Path, key: &DataKey) -> Result<Self, StoreError> {
        for d in ["artifacts", "records"] {
            fs::create_dir_all(root.join(d)).map_err(io("creating", &root.join(d)))?;
        }
        let mut h = Sha256::new();
        h.update(b"sovereign-store-key/v1\n");
        h.update(key.0);
        let mut k: [u8; 32] = h.finalize().into();
        let aead = Aes256Gcm::new_from_slice(&k).map_err(|e| StoreError::Key(e.to_string()))?;
        k.fill(0);
        Ok(Store { root: root.into(), aead })
    }

    fn seal(&self, kind: &'static str, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let ct = self
            .aead
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: &aad(kind, name) })
            .map_err(|_| StoreError::Seal { kind, name: name.into() })?;
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unseal(&self, kind: &'static str, name: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < 8 + 12 + 16 || &sealed[..8] != MAGIC {
            return Err(StoreError::NotSealed { kind, name: name.into() });
        }
        self.aead
            .decrypt(&Nonce::from(nonce_of(sealed)), Payload { msg: &sealed[20..], aad: &aad(kind, name) })
            .map_err(|_| StoreError::Unauthentic { kind, name: name.into() })
    }

    fn write_durable(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        sovereign_audit::store::replace_durably(path, bytes).map_err(|e| match e {
            sovereign_audit::store::StoreError::Io { action, path, source } => StoreError::Io { action, path, source },
            other => StoreError::Io {
                action: "writing",
                path: path.into(),
                source: std::io::Error::other(other.to_string()),
            },
        })
    }

    fn read_limited(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("reading", path)(e)),
            Ok(m) if m.len() > MAX_SEALED_BYTES => {
                return Err(StoreError::FileTooLarge { path: path.into(), size: m.len() });
            }
            Ok(_) => {}
        }
        fs::read(path).map(Some).map_err(io("reading", path))
    }

    fn artifact_path(&self, hash: &[u8; 32]) -> PathBuf {
        self.root.join("artifacts").join(hex::encode(hash))
    }

    /// Stores an artifact (durably); returns its SHA-256. Storing the same bytes twice is a
    /// no-op.
    pub fn put(&self, bytes: &[u8]) -> Result<[u8; 32], StoreError> {
        let hash = sha256(bytes);
        if self.get(&hash).is_ok() {
            return Ok(hash);
        }
        // Refuse now, before sealing, what could never be read back.
        if bytes.len() as u64 > MAX_ARTIFACT_BYTES {
            return Err(StoreError::ArtifactTooLarge { size: bytes.len() as u64, limit: MAX_ARTIFACT_BYTES });
        }
        let sealed = self.seal("artifact", &hex::encode(hash), bytes)?;
        self.write_durable(&self.artifact_path(&hash), &sealed)?;
        Ok(hash)
    }

    /// Reads an artifact and proves it: decrypts, authenticates and re-hashes.
    pub fn get(&self, hash: &[u8; 32]) -> Result<Vec<u8>, StoreError> {
        let name = hex::encode(hash);
        let Some(sealed) = Self::read_limited(&self.artifact_path(hash))? else {
            return Err(StoreError::Missing(name));
        };
        let plain = self.unseal("artifact", &name, &sealed)?;
        if sha256(&plain) != *hash {
            return Err(StoreError::WrongContent { name, actual: hex::encode(sha256(&plain)) });
        }
        Ok(plain)
    }

    /// Writes a named record (replacing it atomically).
    pub fn put_record(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let sealed = self.seal("record", name, bytes)?;
        self.write_durable(&self.root.join("records").join(name), &sealed)
    }

    /// Reads a named record, `None` if it was never written.
    pub fn get_record(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match Self::read_limited(&self.root.join("records").join(name))? {
            None => Ok(None),
            Some(sealed) => self.unseal("record", name, &sealed).map(Some),
        }
    }

    /// Names of the stored records.
    pub fn record_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.join("records"))
            .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        names.retain(|n| !n.ends_with(".tmp"));
        names.sort();
        names
    }

    /// Where the store lives.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_round_trip_and_tampering_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &DataKey([7; 32])).unwrap();
        let h = store.put(b"model a=1").unwrap();
        assert_eq!(store.get(&h).unwrap(), b"model a=1");
        assert_eq!(store.put(b"model a=1").unwrap(), h);
        // Encrypted at rest.
        let raw = fs::read(dir.path().join("artifacts").join(hex::encode(h))).unwrap();
        assert!(!raw.windows(9).any(|w| w == b"model a=1"));
        // Flipped bit, swapped file, other key: each refused.
        let mut bad = raw.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        fs::write(dir.path().join("artifacts").join(hex::encode(h)), &bad).unwrap();
        assert!(matches!(store.get(&h).unwrap_err(), StoreError::Unauthentic { kind: "artifact", .. }));
        let other = store.put(b"other").unwrap();
        fs::copy(
            dir.path().join("artifacts").join(hex::encode(other)),
            dir.path().join("artifacts").join(hex::encode(h)),
        )
        .unwrap();
        assert!(matches!(store.get(&h).unwrap_err(), StoreError::Unauthentic { kind: "artifact", .. }));
        let foreign = Store::open(dir.path(), &DataKey([8; 32])).unwrap();
        assert!(foreign.get(&other).is_err());
        assert!(store.get(&[0; 32]).unwrap_err().to_string().ends_with(": not stored"));
        // Over the limit: refused before sealing, by kind.
        let big = vec![0u8; (MAX_ARTIFACT_BYTES + 1) as usize];
        assert!(matches!(store.put(&big).unwrap_err(), StoreError::ArtifactTooLarge { .. }));
    }

    #[test]
    fn records_are_sealed_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &DataKey([1; 32])).unwrap();
        assert_eq!(store.get_record("run-a").unwrap(), None);
        store.put_record("run-a", b"{\"a\":1}").unwrap();
        store.put_record("run-b", b"{\"b\":2}").unwrap();
        assert_eq!(store.get_record("run-a").unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(store.record_names(), ["run-a", "run-b"]);
        fs::copy(dir.path().join("records/run-b"), dir.path().join("records/run-a")).unwrap();
        assert!(matches!(store.get_record("run-a").unwrap_err(), StoreError::Unauthentic { kind: "record", .. }));
    }
}
