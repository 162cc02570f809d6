//! The signed objects of seed 000, done right: every signature carries its domain, a nonce or
//! serial, an expiry, and the hash of the context it is valid in, so a captured signature cannot
//! be replayed in another context or after it expired. Encodings: [`crate::canonical`].
//!
//! Pure: callers pass the time. Every check returns a one-line [`Refusal`].

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::canonical::{Canonical, canonical_json, sha256};

/// Why something was refused: one line, naming what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{what}: {why}")]
pub struct Refusal {
    /// What was checked (e.g. `role signature`).
    pub what: String,
    /// Why it failed.
    pub why: String,
}

impl Refusal {
    /// A refusal of `what` because `why`.
    pub fn new(what: &str, why: impl Into<String>) -> Self {
        Refusal { what: what.into(), why: why.into() }
    }
}

fn verify_sig(what: &str, key: &[u8; 32], message: &[u8], signature: &[u8]) -> Result<VerifyingKey, Refusal> {
    let key = VerifyingKey::from_bytes(key).map_err(|_| Refusal::new(what, "signer is not an Ed25519 key"))?;
    let sig = Signature::from_slice(signature).map_err(|_| Refusal::new(what, "signature is not 64 bytes"))?;
    key.verify_strict(message, &sig).map_err(|_| Refusal::new(what, "signature does not verify"))?;
    Ok(key)
}

fn expired(what: &str, expiry_ms: u64, now_ms: u64) -> Result<(), Refusal> {
    if now_ms > expiry_ms {
        return Err(Refusal::new(what, format!("expired {} ms ago", now_ms - expiry_ms)));
    }
    Ok(())
}

/// Longest validity a role signature may claim (a longer one means clock skew or a signature
/// meant to be replayable for long).
pub const MAX_ROLE_SIGNATURE_VALIDITY_MS: u64 = 3_600_000;
/// Longest validity of a policy binding.
pub const MAX_BINDING_VALIDITY_MS: u64 = 600_000;

fn too_far(what: &str, expiry_ms: u64, now_ms: u64, max_ms: u64) -> Result<(), Refusal> {
    if expiry_ms > now_ms.saturating_add(max_ms) {
        return Err(Refusal::new(
            what,
            format!(
                "expires {} s from now, more than the {} s allowed (clock skew?)",
                (expiry_ms - now_ms) / 1000,
                max_ms / 1000
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Config snapshot

/// A signed snapshot of a configuration: `{config_hash, signature, public_key, timestamp}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSnapshot {
    /// SHA-256 of the canonical JSON of the configuration.
    pub config_hash: [u8; 32],
    /// The signer.
    pub public_key: [u8; 32],
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Ed25519 over [`ConfigSnapshot::signing_bytes`].
    pub signature: Vec<u8>,
}

impl ConfigSnapshot {
    fn signing_bytes(config_hash: &[u8; 32], public_key: &[u8; 32], timestamp_ms: u64) -> Vec<u8> {
        Canonical::new("sovereign-config-snapshot/v1")
            .fixed(config_hash)
            .fixed(public_key)
            .u64(timestamp_ms)
            .into_bytes()
    }

    /// Snapshots `config` (any JSON; hashed in canonical form).
    pub fn create(config: &serde_json::Value, key: &SigningKey, timestamp_ms: u64) -> Self {
        let config_hash = sha256(&canonical_json(config));
        let public_key = key.verifying_key().to_bytes();
        let signature = key.sign(&Self::signing_bytes(&config_hash, &public_key, timestamp_ms)).to_bytes().to_vec();
        ConfigSnapshot { config_hash, public_key, timestamp_ms, signature }
    }

    /// True only if `config` is exactly what was signed, by `trusted`.
    pub fn verify(&self, config: &serde_json::Value, trusted: &VerifyingKey) -> Result<(), Refusal> {
        const WHAT: &str = "config snapshot";
        if &self.public_key != trusted.as_bytes() {
            return Err(Refusal::new(WHAT, "signed by an untrusted key"));
        }
        verify_sig(
            WHAT,
            &self.public_key,
            &Self::signing_bytes(&self.config_hash, &self.public_key, self.timestamp_ms),
            &self.signature,
        )?;
        if sha256(&canonical_json(config)) != self.config_hash {
            return Err(Refusal::new(WHAT, "the configuration differs from the signed one"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Role certificates and revocation

/// The admin root key's statement that `operator` holds `roles` until `not_after_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleCertificate {
    /// The operator's Ed25519 public key.
    pub operator: [u8; 32],
    /// Roles granted (sorted, unique).
    pub roles: Vec<String>,
    /// Serial number (unique per issuer).
    pub serial: u64,
    /// Expiry, ms since the epoch.
    pub not_after_ms: u64,
    /// The issuer (the admin root key).
    pub issuer: [u8; 32],
    /// Ed25519 by the issuer.
    pub signature: Vec<u8>,
}

impl RoleCertificate {
    fn signing_bytes(&self) -> Vec<u8> {
        Canonical::new("sovereign-role-certificate/v1")
            .fixed(&self.operator)
            .texts(&self.roles)
            .u64(self.serial)
            .u64(self.not_after_ms)
            .fixed(&self.issuer)
            .into_bytes()
    }

    /// Issues a certificate.
    pub fn issue(operator: &VerifyingKey, roles: &[&str], serial: u64, not_after_ms: u64, admin: &SigningKey) -> Self {
        let mut roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        roles.sort();
        roles.dedup();
        let mut cert = RoleCertificate {
            operator: operator.to_bytes(),
            roles,
            serial,
            not_after_ms,
            issuer: admin.verifying_key().to_bytes(),
            signature: vec![],
        };
        cert.signature = admin.sign(&cert.signing_bytes()).to_bytes().to_vec();
        cert
    }

    /// Checks issuer, signature, expiry and revocation.
    pub fn verify(&self, admin: &VerifyingKey, revoked: &RevocationList, now_ms: u64) -> Result<(), Refusal> {
        const WHAT: &str = "role certificate";
        if &self.issuer != admin.as_bytes() {
            return Err(Refusal::new(WHAT, "not issued by the admin root key"));
        }
        verify_sig(WHAT, &self.issuer, &self.signing_bytes(), &self.signature)?;
        let mut sorted = self.roles.clone();
        sorted.sort();
        sorted.dedup();
        if sorted != self.roles {
            return Err(Refusal::new(WHAT, "roles are not sorted and unique (not canonical)"));
        }
        expired(WHAT, self.not_after_ms, now_ms)?;
        if revoked.is_revoked(&self.operator, self.serial) {
            return Err(Refusal::new(WHAT, format!("operator {} is revoked", hex::encode(self.operator))));
        }
        Ok(())
    }
}

/// The admin root key's list of revoked operator keys and certificate serials; a newer
/// version replaces an older one, never the reverse.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// Monotonic version.
    pub version: u64,
    /// Revoked operator keys.
    pub operators: Vec<[u8; 32]>,
    /// Revoked certificate serials.
    pub serials: Vec<u64>,
    /// The issuer.
    pub issuer: [u8; 32],
    /// Ed25519 by the issuer.
    pub signature: Vec<u8>,
}

impl RevocationList {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new("sovereign-revocation-list/v1").u64(self.version).fixed_list(&self.operators);
        c = c.u64(self.serials.len() as u64);
        for s in &self.serials {
            c = c.u64(*s);
        }
        c.fixed(&self.issuer).into_bytes()
    }

    /// Signs a list.
    pub fn issue(version: u64, operators: Vec<[u8; 32]>, serials: Vec<u64>, admin: &SigningKey) -> Self {
        let mut list =
            RevocationList { version, operators, serials, issuer: admin.verifying_key().to_bytes(), signature: vec![] };
        list.signature = admin.sign(&list.signing_bytes()).to_bytes().to_vec();
        list
    }

    /// Checks the signature; `current` is the version already installed (never go back).
    pub fn verify(&self, admin: &VerifyingKey, current: u64) -> Result<(), Refusal> {
        const WHAT: &str = "revocation list";
        if &self.issuer != admin.as_bytes() {
            return Err(Refusal::new(WHAT, "not issued by the admin root key"));
        }
        verify_sig(WHAT, &self.issuer, &self.signing_bytes(), &self.signature)?;
        if self.version < current {
            return Err(Refusal::new(WHAT, format!("version {} is older than the installed {current}", self.version)));
        }
        Ok(())
    }

    /// Whether the operator or the serial is revoked.
    pub fn is_revoked(&self, operator: &[u8; 32], serial: u64) -> bool {
        self.operators.contains(operator) || self.serials.contains(&serial)
    }
}

/// A revocation list as the node kept it: when it was installed, and the signed list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRevocations {
    /// When the node installed it (ms since the epoch).
    pub installed_ms: u64,
    /// The admin-signed list.
    pub list: RevocationList,
}

/// The compliance bundle's file name of a role certificate (`role-certificates/` section).
pub fn certificate_file(cert: &RoleCertificate) -> String {
    let bytes = serde_json::to_vec(cert).unwrap_or_default();
    format!("cert-{}.json", hex::encode(&sha256(&bytes)[..16]))
}

/// The compliance bundle's file name of an installed revocation list.
pub fn revocations_file(installed: &InstalledRevocations) -> String {
    let bytes = serde_json::to_vec(&installed.list).unwrap_or_default();
    format!("revocations-v{}-{}.json", installed.list.version, hex::encode(&sha256(&bytes)[..16]))
}

// ---------------------------------------------------------------------------------------------
// Role signatures

/// Where a role signature is valid: the action, the environment, a nonce (single use) and an
/// expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleContext {
    /// The action (e.g. `deploy`).
    pub action: String,
    /// The environment (e.g. `production`).
    pub environment: String,
    /// Random; the kernel accepts each nonce once.
    pub nonce: [u8; 16],
    /// Expiry, ms since the epoch.
    pub expiry_ms: u64,
}

/// An operator's signature that it acts in `role` for `context`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSignature {
    /// The role claimed.
    pub role: String,
    /// Where it is valid.
    pub context: RoleContext,
    /// The operator.
    pub operator: [u8; 32],
    /// Ed25519 over the canonical bytes.
    pub signature: Vec<u8>,
}

impl RoleSignature {
    fn signing_bytes(role: &str, c: &RoleContext, operator: &[u8; 32]) -> Vec<u8> {
        Canonical::new("sovereign-role-signature/v1")
            .text(role)
            .text(&c.action)
            .text(&c.environment)
            .fixed(&c.nonce)
            .u64(c.expiry_ms)
            .fixed(operator)
            .into_bytes()
    }

    /// Signs.
    pub fn create(role: &str, context: RoleContext, operator: &SigningKey) -> Self {
        let op = operator.verifying_key().to_bytes();
        let signature = operator.sign(&Self::signing_bytes(role, &context, &op)).to_bytes().to_vec();
        RoleSignature { role: role.into(), context, operator: op, signature }
    }

    /// Checks the signature, the context (action and environment as expected), the expiry, and
    /// that `certificate` (valid, unrevoked, for this operator) grants the role. The nonce's
    /// single use is the kernel's to enforce.
    pub fn verify(
        &self,
        action: &str,
        environment: &str,
        certificate: &RoleCertificate,
        admin: &VerifyingKey,
        revoked: &RevocationList,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        const WHAT: &str = "role signature";
        verify_sig(
            WHAT,
            &self.operator,
            &Self::signing_bytes(&self.role, &self.context, &self.operator),
            &self.signature,
        )?;
        if self.context.action != action || self.context.environment != environment {
            return Err(Refusal::new(
                WHAT,
                format!(
                    "signed for {}/{}, presented for {action}/{environment}",
                    self.context.action, self.context.environment
                ),
            ));
        }
        expired(WHAT, self.context.expiry_ms, now_ms)?;
        too_far(WHAT, self.context.expiry_ms, now_ms, MAX_ROLE_SIGNATURE_VALIDITY_MS)?;
        if certificate.operator != self.operator {
            return Err(Refusal::new(WHAT, "the certificate is for another operator"));
        }
        certificate.verify(admin, revoked, now_ms)?;
        if !certificate.roles.iter().any(|r| r == &self.role) {
            return Err(Refusal::new(WHAT, format!("operator does not hold role {:?}", self.role)));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Policy-state bindings

/// The node's signature binding a policy state (the decision that allowed an action) to one
/// execution context, once, until an expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyBinding {
    /// SHA-256 of the policy state (the decision record's canonical bytes).
    pub policy_state_hash: [u8; 32],
    /// SHA-256 of the execution context's canonical JSON.
    pub context_hash: [u8; 32],
    /// Random, single use.
    pub nonce: [u8; 16],
    /// Expiry, ms since the epoch.
    pub expiry_ms: u64,
    /// The signer (the node identity).
    pub signer: [u8; 32],
    /// Ed25519 over the canonical bytes.
    pub signature: Vec<u8>,
}

impl PolicyBinding {
    fn signing_bytes(&self) -> Vec<u8> {
        Canonical::new("sovereign-policy-binding/v1")
            .fixed(&self.policy_state_hash)
            .fixed(&self.context_hash)
            .fixed(&self.nonce)
            .u64(self.expiry_ms)
            .fixed(&self.signer)
            .into_bytes()
    }

    /// Binds `policy_state` to `context`. Crate-private: only the kernel signs bindings, and
    /// only inside the governed path.
    #[cfg(any(test, feature = "engine"))]
    pub(crate) fn create(
        policy_state_hash: [u8; 32],
        context: &serde_json::Value,
        nonce: [u8; 16],
        expiry_ms: u64,
        node: &SigningKey,
    ) -> Self {
        let mut b = PolicyBinding {
            policy_state_hash,
            context_hash: sha256(&canonical_json(context)),
            nonce,
            expiry_ms,
            signer: node.verifying_key().to_bytes(),
            signature: vec![],
        };
        b.signature = node.sign(&b.signing_bytes()).to_bytes().to_vec();
        b
    }

    /// Checks signer, signature, the policy state and context it binds, and expiry.
    pub fn verify(
        &self,
        policy_state_hash: &[u8; 32],
        context: &serde_json::Value,
        node: &VerifyingKey,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        const WHAT: &str = "policy binding";
        if &self.signer != node.as_bytes() {
            return Err(Refusal::new(WHAT, "not signed by this node"));
        }
        verify_sig(WHAT, &self.signer, &self.signing_bytes(), &self.signature)?;
        if &self.policy_state_hash != policy_state_hash {
            return Err(Refusal::new(WHAT, "binds another policy state"));
        }
        if self.context_hash != sha256(&canonical_json(context)) {
            return Err(Refusal::new(WHAT, "binds another execution context"));
        }
        expired(WHAT, self.expiry_ms, now_ms)?;
        too_far(WHAT, self.expiry_ms, now_ms, MAX_BINDING_VALIDITY_MS)
    }

    /// SHA-256 of the signed bytes and signature (what the audit log records).
    pub fn digest(&self) -> [u8; 32] {
        let mut b = self.signing_bytes();
        b.extend_from_slice(&self.signature);
        sha256(&b)
    }
}
