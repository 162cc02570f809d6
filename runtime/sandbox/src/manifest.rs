//! Signed module manifests: `Canonical("sovereign-module-manifest/v1") ‖ name ‖ version ‖
//! module SHA-256 ‖ capabilities (names, sorted) ‖ signer`, Ed25519 by the release key
//! (`docs/governance-formats.md` encoding).

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sovereign_canonical::{Canonical, sha256};

/// What a module may ask the host for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// `input_len`, `input_read`: the stage's input artifact.
    ReadInput,
    /// `output_write`: the stage's output artifact.
    WriteOutput,
    /// `log`: lines into the audit trail of the stage.
    Log,
    /// `random`: bytes from the host's CSPRNG (the stage is then not replayable).
    Random,
    /// `clock_ms`: wall-clock time (the stage is then not replayable).
    Clock,
    /// Not a WASM capability: the signed image is a governed GPU kernel (PTX or cubin), which
    /// only a `gpu_kernel` stage launches and the sandbox refuses to load.
    GpuKernel,
}

impl Capability {
    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Capability::ReadInput => "read_input",
            Capability::WriteOutput => "write_output",
            Capability::Log => "log",
            Capability::Random => "random",
            Capability::Clock => "clock",
            Capability::GpuKernel => "gpu_kernel",
        }
    }

    /// The capability of a stable name.
    pub fn of_name(name: &str) -> Option<Self> {
        [
            Capability::ReadInput,
            Capability::WriteOutput,
            Capability::Log,
            Capability::Random,
            Capability::Clock,
            Capability::GpuKernel,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }

    /// The capability a `sovereign.<import>` function belongs to.
    pub fn of_import(import: &str) -> Option<Self> {
        Some(match import {
            "input_len" | "input_read" => Capability::ReadInput,
            "output_write" => Capability::WriteOutput,
            "log" => Capability::Log,
            "random" => Capability::Random,
            "clock_ms" => Capability::Clock,
            _ => return None,
        })
    }
}

/// A module's signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleManifest {
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: u64,
    /// SHA-256 of the module bytes.
    pub module_sha256: [u8; 32],
    /// Capabilities the module may be granted (sorted, unique).
    pub capabilities: Vec<Capability>,
    /// The signer (the release key).
    pub signer: [u8; 32],
    /// Ed25519 over the canonical bytes.
    pub signature: Vec<u8>,
}

impl ModuleManifest {
    fn signing_bytes(&self) -> Vec<u8> {
        let caps: Vec<String> = self.capabilities.iter().map(|c| c.name().to_string()).collect();
        Canonical::new("sovereign-module-manifest/v1")
            .text(&self.name)
            .u64(self.version)
            .fixed(&self.module_sha256)
            .texts(&caps)
            .fixed(&self.signer)
            .into_bytes()
    }

    /// Signs a manifest for `module`.
    pub fn sign(name: &str, version: u64, module: &[u8], capabilities: &[Capability], release: &SigningKey) -> Self {
        let mut caps = capabilities.to_vec();
        caps.sort();
        caps.dedup();
        let mut m = ModuleManifest {
            name: name.into(),
            version,
            module_sha256: sha256(module),
            capabilities: caps,
            signer: release.verifying_key().to_bytes(),
            signature: vec![],
        };
        m.signature = release.sign(&m.signing_bytes()).to_bytes().to_vec();
        m
    }

    /// Checks the signer, the signature, canonical form, and that `module` is the signed bytes.
    pub fn verify(&self, module: &[u8], release: &VerifyingKey) -> Result<(), String> {
        if &self.signer != release.as_bytes() {
            return Err(format!("module {}: manifest not signed by the release key", self.name));
        }
        let sig =
            Signature::from_slice(&self.signature).map_err(|_| format!("module {}: malformed signature", self.name))?;
        release
            .verify_strict(&self.signing_bytes(), &sig)
            .map_err(|_| format!("module {}: manifest signature does not verify", self.name))?;
        let mut sorted = self.capabilities.clone();
        sorted.sort();
        sorted.dedup();
        if sorted != self.capabilities {
            return Err(format!("module {}: capabilities not sorted and unique", self.name));
        }
        let actual = sha256(module);
        if actual != self.module_sha256 {
            return Err(format!(
                "module {}: bytes hash to {}, the manifest pins {}",
                self.name,
                hex::encode(actual),
                hex::encode(self.module_sha256)
            ));
        }
        Ok(())
    }
}
