//! The attestation-key certificate: an attestation CA (a key the operator designates) states
//! that this AK — proven by credential activation to be resident in the TPM whose endorsement
//! key it names — belongs to this node identity, for a validity period. The appliance keeps it
//! beside its AK and every compliance bundle carries it, so an auditor checks offline that a
//! quote was made by a certified AK of a certified EK for that node, trusting only the CA key
//! it pins. Format in `docs/attestation.md`. Pure: no IO, no clock (callers pass the time).

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sovereign_governance::canonical::sha256;

/// The certificate's `format`.
pub const AK_CERTIFICATE_FORMAT: &str = "sovereign-ak-certificate/v1";

/// An AK certificate (hex byte strings, times in Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AkCertificate {
    /// [`AK_CERTIFICATE_FORMAT`].
    pub format: String,
    /// Random, chosen by the CA.
    pub serial: String,
    /// The AK's marshalled `TPMT_PUBLIC`.
    pub ak_public: String,
    /// SHA-256 of the EK's marshalled `TPMT_PUBLIC` (the AK's parent, resident beside it).
    pub ek_public_sha256: String,
    /// SHA-256 of the EK certificate (DER) that chained to the CA's pinned EK roots.
    pub ek_certificate_sha256: String,
    /// The node identity (Ed25519) the AK quotes for.
    pub node_identity: String,
    /// Valid from (inclusive).
    pub not_before: u64,
    /// Valid until (inclusive).
    pub not_after: u64,
    /// The attestation CA's Ed25519 key.
    pub issuer: String,
    /// Ed25519 signature by `issuer` over [`AkCertificate::signing_bytes`].
    pub signature: String,
}

/// What the CA certifies.
#[derive(Debug, Clone, Copy)]
pub struct AkFacts<'a> {
    /// The AK's marshalled `TPMT_PUBLIC`.
    pub ak_public: &'a [u8],
    /// The EK's marshalled `TPMT_PUBLIC`.
    pub ek_public: &'a [u8],
    /// The EK certificate (DER).
    pub ek_certificate: &'a [u8],
    /// The node identity.
    pub node_identity: &'a [u8; 32],
}

impl AkCertificate {
    /// `format ‖ 0 ‖ serial ‖ 0 ‖ …` — every field but the signature, NUL-separated, after the
    /// domain `sovereign-ak-certificate/v1\n`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = format!("{AK_CERTIFICATE_FORMAT}\n").into_bytes();
        let not_before = self.not_before.to_string();
        let not_after = self.not_after.to_string();
        for field in [
            self.format.as_str(),
            &self.serial,
            &self.ak_public,
            &self.ek_public_sha256,
            &self.ek_certificate_sha256,
            &self.node_identity,
            &not_before,
            &not_after,
            &self.issuer,
        ] {
            out.extend_from_slice(field.as_bytes());
            out.push(0);
        }
        out
    }

    /// Issues a certificate for `facts`, valid `[not_before, not_after]`.
    pub fn issue(ca: &SigningKey, facts: &AkFacts<'_>, serial: [u8; 16], not_before: u64, not_after: u64) -> Self {
        let mut cert = AkCertificate {
            format: AK_CERTIFICATE_FORMAT.into(),
            serial: hex::encode(serial),
            ak_public: hex::encode(facts.ak_public),
            ek_public_sha256: hex::encode(sha256(facts.ek_public)),
            ek_certificate_sha256: hex::encode(sha256(facts.ek_certificate)),
            node_identity: hex::encode(facts.node_identity),
            not_before,
            not_after,
            issuer: hex::encode(ca.verifying_key().as_bytes()),
            signature: String::new(),
        };
        cert.signature = hex::encode(ca.sign(&cert.signing_bytes()).to_bytes());
        cert
    }

    /// Checks that `ca` signed this certificate for exactly `facts`, valid at `at_unix`. Each
    /// refusal says which fact differs.
    pub fn verify(&self, ca: &VerifyingKey, facts: &AkFacts<'_>, at_unix: u64) -> Result<(), String> {
        if self.format != AK_CERTIFICATE_FORMAT {
            return Err(format!("format {:?} is not {AK_CERTIFICATE_FORMAT}", self.format));
        }
        if self.issuer != hex::encode(ca.as_bytes()) {
            return Err(format!("issued by {}, not the pinned attestation CA", self.issuer));
        }
        let signature = hex::decode(&self.signature)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or("the signature is not 64 hex-encoded bytes")?;
        ca.verify_strict(&self.signing_bytes(), &signature)
            .map_err(|_| "the signature does not verify with the pinned attestation CA key".to_string())?;
        if self.ak_public != hex::encode(facts.ak_public) {
            return Err("the quote was made by an AK this certificate does not certify".into());
        }
        if self.ek_public_sha256 != hex::encode(sha256(facts.ek_public)) {
            return Err("the certified AK's endorsement key is not the evidence's EK".into());
        }
        if self.ek_certificate_sha256 != hex::encode(sha256(facts.ek_certificate)) {
            return Err("the certificate was issued against another EK certificate".into());
        }
        if self.node_identity != hex::encode(facts.node_identity) {
            return Err(format!("the AK is certified for node {}, not this one", self.node_identity));
        }
        if at_unix < self.not_before || at_unix > self.not_after {
            return Err(format!(
                "not valid at {at_unix} (valid {} to {}, Unix seconds)",
                self.not_before, self.not_after
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_holds_only_for_its_facts_its_ca_and_its_validity() {
        let ca = SigningKey::from_bytes(&[1; 32]);
        let facts = AkFacts { ak_public: b"ak", ek_public: b"ek", ek_certificate: b"cert", node_identity: &[3; 32] };
        let cert = AkCertificate::issue(&ca, &facts, [9; 16], 100, 200);
        cert.verify(&ca.verifying_key(), &facts, 150).unwrap();
        let err = |c: &AkCertificate, f: &AkFacts<'_>, at: u64| c.verify(&ca.verifying_key(), f, at).unwrap_err();
        assert!(err(&cert, &AkFacts { ak_public: b"software key", ..facts }, 150).contains("does not certify"));
        assert!(err(&cert, &AkFacts { ek_public: b"other", ..facts }, 150).contains("endorsement key"));
        assert!(err(&cert, &AkFacts { ek_certificate: b"other", ..facts }, 150).contains("EK certificate"));
        assert!(err(&cert, &AkFacts { node_identity: &[4; 32], ..facts }, 150).contains("certified for node"));
        assert!(err(&cert, &facts, 201).contains("not valid at 201"));
        assert!(err(&cert, &facts, 99).contains("not valid at 99"));
        let other = SigningKey::from_bytes(&[2; 32]);
        assert!(cert.verify(&other.verifying_key(), &facts, 150).unwrap_err().contains("not the pinned"));
        // Every signed field is covered: changing one breaks the signature.
        let mut stretched = cert.clone();
        stretched.not_after = u64::MAX;
        assert!(err(&stretched, &facts, 150).contains("does not verify"));
        let mut moved = cert.clone();
        moved.node_identity = hex::encode([4; 32]);
        assert!(err(&moved, &AkFacts { node_identity: &[4; 32], ..facts }, 150).contains("does not verify"));
    }
}
