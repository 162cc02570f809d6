//! The endorsement-key certificate check: the EK certificate the TPM carries must chain, hop by
//! verified hop, to a self-signed root in the operator's trust store (the TPM manufacturer's CA;
//! in tests the swtpm local CA), every certificate on the way must be within its validity period,
//! every issuer a CA whose key usage (if stated) allows certificate signing and whose path length
//! constraint admits the CAs below it, the EK certificate itself no CA, with key encipherment and
//! `tcg-kp-EKCertificate` among its uses when it states them, and the certified public key must
//! be exactly the EK whose name the attestation key was proven under.
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
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage};

use crate::structures::RsaStoragePublic;

const MAX_DEPTH: usize = 8;
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_EXTENDED_KEY_USAGE: &str = "2.5.29.37";
/// `tcg-kp-EKCertificate`: the extended key usage of an EK certificate (TCG EK Credential
/// Profile).
const TCG_KP_EK_CERTIFICATE: &str = "2.23.133.8.1";
/// Critical extensions this checker understands (basic constraints, key usage, subject
/// alternative name — critical in TCG EK certificates whose subject is empty — and extended
/// key usage).
const KNOWN_CRITICAL: [&str; 4] = [OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, "2.5.29.17", OID_EXTENDED_KEY_USAGE];
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

/// What a certificate's extensions say about its use.
struct Usage {
    is_ca: bool,
    path_len: Option<u8>,
    key_usage: Option<KeyUsage>,
    extended: Option<ExtendedKeyUsage>,
}

/// Reads the extensions that decide a certificate's use; refuses an unknown critical one.
fn usage(cert: &Certificate) -> Result<Usage, String> {
    let mut out = Usage { is_ca: false, path_len: None, key_usage: None, extended: None };
    let name = || subject_of(cert);
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        let oid = ext.extn_id.to_string();
        if ext.critical && !KNOWN_CRITICAL.contains(&oid.as_str()) {
            return Err(format!("\"{}\" has an unknown critical extension {oid}", name()));
        }
        let bytes = ext.extn_value.as_bytes();
        match oid.as_str() {
            OID_BASIC_CONSTRAINTS => {
                let bc =
                    BasicConstraints::from_der(bytes).map_err(|e| format!("\"{}\": basic constraints: {e}", name()))?;
                (out.is_ca, out.path_len) = (bc.ca, bc.path_len_constraint);
            }
            OID_KEY_USAGE => {
                out.key_usage = Some(KeyUsage::from_der(bytes).map_err(|e| format!("\"{}\": key usage: {e}", name()))?);
            }
            OID_EXTENDED_KEY_USAGE => {
                out.extended = Some(
                    ExtendedKeyUsage::from_der(bytes)
                        .map_err(|e| format!("\"{}\": extended key usage: {e}", name()))?,
                );
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The EK certificate itself: not a CA; if it limits its key's use, the use is key
/// encipherment (an RSA EK decrypts credentials) and the purpose is `tcg-kp-EKCertificate`.
fn check_leaf(cert: &Certificate) -> Result<(), String> {
    let u = usage(cert)?;
    if u.is_ca {
        return Err("the EK certificate is a CA certificate; an endorsement key certifies nothing".into());
    }
    if u.key_usage.as_ref().is_some_and(|k| !k.key_encipherment()) {
        return Err("the EK certificate's key usage does not include keyEncipherment".into());
    }
    if u.extended.as_ref().is_some_and(|e| !e.0.iter().any(|oid| oid.to_string() == TCG_KP_EK_CERTIFICATE)) {
        return Err(format!(
            "the EK certificate's extended key usage does not include tcg-kp-EKCertificate ({TCG_KP_EK_CERTIFICATE})"
        ));
    }
    Ok(())
}

/// An issuer `below` CA certificates above the EK certificate (0: its direct issuer): a CA
/// allowed to sign certificates, whose path length constraint admits that many CAs below it.
fn check_issuer(cert: &Certificate, below: usize) -> Result<(), String> {
    let u = usage(cert)?;
    if !u.is_ca {
        return Err(format!("\"{}\" issues certificates but is not a CA", subject_of(cert)));
    }
    if u.key_usage.as_ref().is_some_and(|k| !k.key_cert_sign()) {
        return Err(format!("\"{}\" issues certificates but its key usage lacks keyCertSign", subject_of(cert)));
    }
    if let Some(limit) = u.path_len
        && below > usize::from(limit)
    {
        return Err(format!(
            "\"{}\" allows {limit} CA certificates below it (pathLenConstraint), the chain has {below}",
            subject_of(cert)
        ));
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
    check_leaf(&leaf)?;
    let mut chain = vec![if subject_of(&leaf).is_empty() { "EK certificate".to_string() } else { subject_of(&leaf) }];
    let mut current = leaf;
    for below in 0..MAX_DEPTH {
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
        check_issuer(issuer, below)?;
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
