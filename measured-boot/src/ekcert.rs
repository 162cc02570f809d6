//! The endorsement-key certificate check: the EK certificate the TPM carries must chain, hop by
//! verified hop, to a self-signed root in the operator's trust store (the TPM manufacturer's CA;
//! in tests the swtpm local CA), every certificate on the way must be within its validity period
//! and every issuer a CA, and the certified public key must be exactly the EK whose name the
//! attestation key was proven under.
//!
//! Pure: no IO; the caller passes the time. Signature algorithms: RSA PKCS#1 v1.5 with SHA-256,
//! SHA-384 or SHA-512, and ECDSA P-256 with SHA-256. Anything else is refused by name.
//!
//! Must never: accept a chain it did not verify signature by signature, or a certificate with a
//! critical extension it does not understand.

use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::signature::Verifier as _;
use x509_cert::Certificate;
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::BasicConstraints;

use crate::structures::RsaStoragePublic;

const MAX_DEPTH: usize = 8;
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
/// Critical extensions this checker understands (basic constraints, key usage, subject
/// alternative name — critical in TCG EK certificates whose subject is empty — and extended
/// key usage).
const KNOWN_CRITICAL: [&str; 4] = [OID_BASIC_CONSTRAINTS, "2.5.29.15", "2.5.29.17", "2.5.29.37"];
const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const SHA384_WITH_RSA: &str = "1.2.840.113549.1.1.12";
const SHA512_WITH_RSA: &str = "1.2.840.113549.1.1.13";
const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// Reads every certificate in a PEM file (the operator's EK trust store). Text outside the
/// `CERTIFICATE` blocks is ignored; a block that does not decode is an error.
///
/// (Not `Certificate::load_pem_chain`: x509-cert 0.2.5 overflows an integer on some non-PEM
/// input, which the `attest_evidence` fuzz target found.)
pub fn trust_store_from_pem(pem: &[u8]) -> Result<Vec<Certificate>, String> {
    use x509_cert::der::DecodePem as _;
    let text = std::str::from_utf8(pem).map_err(|_| "EK trust store: not a PEM text file".to_string())?;
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(PEM_BEGIN) {
        let block = &rest[start..];
        let end = block
            .find(PEM_END)
            .ok_or_else(|| format!("EK trust store: certificate {} is not terminated", certs.len() + 1))?;
        let cert = Certificate::from_pem(&block[..end + PEM_END.len()])
            .map_err(|e| format!("EK trust store: certificate {}: {e}", certs.len() + 1))?;
        certs.push(cert);
        rest = &block[end + PEM_END.len()..];
    }
    if certs.is_empty() {
        return Err("EK trust store holds no PEM certificate".into());
    }
    Ok(certs)
}

fn subject_of(cert: &Certificate) -> String {
    cert.tbs_certificate.subject.to_string()
}

/// Verifies that `issuer`'s key signed `cert`.
fn signed_by(cert: &Certificate, issuer: &Certificate) -> Result<(), String> {
    let tbs = cert.tbs_certificate.to_der().map_err(|e| format!("re-encoding the signed part: {e}"))?;
    let signature = cert.signature.as_bytes().ok_or("signature is not a whole number of bytes")?;
    let spki = issuer.tbs_certificate.subject_public_key_info.to_der().map_err(|e| e.to_string())?;
    let alg = cert.signature_algorithm.oid.to_string();
    let rsa_key = || RsaPublicKey::from_public_key_der(&spki).map_err(|e| format!("issuer key is not RSA: {e}"));
    let bad = |_| "signature does not verify with the issuer's key".to_string();
    match alg.as_str() {
        SHA256_WITH_RSA => rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(rsa_key()?)
            .verify(&tbs, &rsa::pkcs1v15::Signature::try_from(signature).map_err(|e| e.to_string())?)
            .map_err(bad),
        SHA384_WITH_RSA => rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(rsa_key()?)
            .verify(&tbs, &rsa::pkcs1v15::Signature::try_from(signature).map_err(|e| e.to_string())?)
            .map_err(bad),
        SHA512_WITH_RSA => rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(rsa_key()?)
            .verify(&tbs, &rsa::pkcs1v15::Signature::try_from(signature).map_err(|e| e.to_string())?)
            .map_err(bad),
        ECDSA_WITH_SHA256 => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki)
                .map_err(|e| format!("issuer key is not P-256: {e}"))?;
            let sig = p256::ecdsa::Signature::from_der(signature).map_err(|e| e.to_string())?;
            key.verify(&tbs, &sig).map_err(bad)
        }
        other => Err(format!("signature algorithm {other} is not supported")),
    }
}

fn check_validity(cert: &Certificate, now_unix: u64) -> Result<(), String> {
    let v = &cert.tbs_certificate.validity;
    let (from, to) = (v.not_before.to_unix_duration().as_secs(), v.not_after.to_unix_duration().as_secs());
    if now_unix < from || now_unix > to {
        return Err(format!("\"{}\" is not valid now (valid {} to {})", subject_of(cert), v.not_before, v.not_after));
    }
    Ok(())
}

fn check_extensions(cert: &Certificate, must_be_ca: bool) -> Result<(), String> {
    let mut is_ca = false;
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        let oid = ext.extn_id.to_string();
        if ext.critical && !KNOWN_CRITICAL.contains(&oid.as_str()) {
            return Err(format!("\"{}\" has an unknown critical extension {oid}", subject_of(cert)));
        }
        if oid == OID_BASIC_CONSTRAINTS {
            is_ca = BasicConstraints::from_der(ext.extn_value.as_bytes())
                .map_err(|e| format!("\"{}\": basic constraints: {e}", subject_of(cert)))?
                .ca;
        }
    }
    if must_be_ca && !is_ca {
        return Err(format!("\"{}\" issues certificates but is not a CA", subject_of(cert)));
    }
    Ok(())
}

/// Checks `ek_certificate` (DER) against `trust_store` and the EK public area `ek`. On success,
/// describes the chain (subjects from the EK certificate to the root).
pub fn verify_ek_certificate(
    ek_certificate: &[u8],
    trust_store: &[Certificate],
    ek: &RsaStoragePublic,
    now_unix: u64,
) -> Result<String, String> {
    let leaf = Certificate::from_der(ek_certificate).map_err(|e| format!("EK certificate is not DER X.509: {e}"))?;
    // The certified key is the EK.
    let spki = leaf.tbs_certificate.subject_public_key_info.to_der().map_err(|e| e.to_string())?;
    let certified =
        RsaPublicKey::from_public_key_der(&spki).map_err(|e| format!("EK certificate key is not RSA: {e}"))?;
    let (n, e) = (rsa::traits::PublicKeyParts::n(&certified), rsa::traits::PublicKeyParts::e(&certified));
    if n.to_bytes_be() != ek.modulus || *e != rsa::BigUint::from(ek.exponent) {
        return Err("the EK certificate certifies a different key than the evidence's endorsement key".into());
    }
    check_validity(&leaf, now_unix)?;
    check_extensions(&leaf, false)?;
    let mut chain = vec![if subject_of(&leaf).is_empty() { "EK certificate".to_string() } else { subject_of(&leaf) }];
    let mut current = leaf;
    for _ in 0..MAX_DEPTH {
        let issuer = trust_store
            .iter()
            .filter(|c| c.tbs_certificate.subject == current.tbs_certificate.issuer)
            .find(|c| signed_by(&current, c).is_ok())
            .ok_or_else(|| {
                format!(
                    "no certificate in the trust store named \"{}\" signed \"{}\"",
                    current.tbs_certificate.issuer,
                    chain.last().map(String::as_str).unwrap_or("")
                )
            })?;
        check_validity(issuer, now_unix)?;
        check_extensions(issuer, true)?;
        chain.push(subject_of(issuer));
        let self_signed =
            issuer.tbs_certificate.subject == issuer.tbs_certificate.issuer && signed_by(issuer, issuer).is_ok();
        if self_signed {
            return Ok(chain.join(" <- "));
        }
        current = issuer.clone();
    }
    Err(format!("no self-signed root within {MAX_DEPTH} certificates"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_store_refuses_what_is_not_pem_certificates() {
        // DER bytes and text without blocks are refused, never a panic.
        assert!(trust_store_from_pem(&[0x30, 0x82, 0x01, 0x00, 0xff]).is_err());
        assert!(trust_store_from_pem(b"no certificates here").is_err());
        let unterminated = format!("{PEM_BEGIN}\nMIIB\n");
        assert!(trust_store_from_pem(unterminated.as_bytes()).unwrap_err().contains("not terminated"));
        let garbage = format!("{PEM_BEGIN}\n!!!!\n{PEM_END}\n");
        assert!(trust_store_from_pem(garbage.as_bytes()).unwrap_err().contains("certificate 1"));
    }
}
